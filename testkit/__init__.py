"""What the tests and the benchmark share: ports, child processes, scratch databases,
ledger checks. Not part of the installed package; importable from the repository root."""
