"""The end-to-end suite: a real server, a real channel and real HTTP (the REST gateway, the
health port), driven as a client would. Its fixtures are shared with the other suites, so
they are defined once in tests/conftest.py: the server, its channel and stub, `http`,
`rest_url` (a gateway in front of the server) and `ledger_key`."""
