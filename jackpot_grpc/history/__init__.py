"""Metrics history: per-minute request rollups and system samples kept in PostgreSQL.

sampler: the server's background task (write, buffer, prune) and /metrics' long windows.
records: the values stored and read (the SQL is jackpot_grpc.adapters.history_store).
trend: the per-day trend for `jackpot report --period 30d`, as data and as text.
"""
