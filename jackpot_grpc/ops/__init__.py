"""Operator tooling: the runbook's procedures as `jackpot` subcommands (see ops/cli/).

Each module does one procedure and returns plain values; `output` renders them as tables
for people or JSON for scripts. Nothing here runs at import time.
"""
