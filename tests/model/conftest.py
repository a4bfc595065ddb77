"""The model suite: the service checked against models written apart from its code. A
Hypothesis state machine drives random call sequences over real gRPC and compares every
answer and the final pools with a small in-memory model of the rules
(test_service_model.py); many concurrent clients check the totals that do not depend on
order (test_concurrent_totals.py). Each ends with the ledger audit.

Not slow, so it owns no marker (it runs with `-m "not slow"` too); the server and database
fixtures are tests/conftest.py's."""
