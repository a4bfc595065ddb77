"""Metrics history: per-minute request rollups and system samples kept in PostgreSQL.

sampler: the server's background task (write, buffer, prune) and /metrics' long windows.
store: all SQL of the history tables (migration 0002).
trend: the per-day trend for `jackpot report --period 30d`, as data and as text.
"""
