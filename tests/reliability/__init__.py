"""Reliability: load, faults and fuzzing against a real server and a real PostgreSQL.

The promise under test: an acknowledged contribution or win is never lost, never applied
twice, and the books always balance. See docs/RELIABILITY.md.
"""
