"""The edge suite: the HAProxy edge (jackpot_grpc/edge/, `jackpot run --edge`) generated,
checked by HAProxy itself and run in front of real `jackpot serve` processes and a real
gateway: per-client limits, balancing and draining, reloads, its systemd units.

The tests that run HAProxy (or promtool) need it from the machine (`make edge-tools`,
`make prometheus-tools`): skipped where it is missing, failed under CI=true
(testkit/tools.py). The rest check the generated files alone. Not slow: the suite runs
with `-m "not slow"` too, and owns no marker; its databases and processes come from
tests/conftest.py and testkit/ (testkit/edge.py, testkit/processes.py)."""
