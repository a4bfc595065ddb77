"""Benchmark harness: a closed-loop load generator and the `make bench` orchestration."""
