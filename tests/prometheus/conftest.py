"""The Prometheus suite: the alert and recording rules and the dashboard's queries against a
real Prometheus scraping a running server (test_prometheus.py), and every promtool command
the docs give, run verbatim (test_documented_commands.py).

Needs Debian's `prometheus` and `promtool` (`make prometheus-tools`): skipped, saying why,
where they are missing, failed under CI=true (testkit/tools.py). Each module asks for the
tools it runs, so the requirement stays with them, not here. Not slow: it owns no marker;
its database fixtures are tests/conftest.py's."""
