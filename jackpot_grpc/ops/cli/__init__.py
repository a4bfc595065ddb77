"""The operator's commands of `jackpot`, one module per command group.

`register(subparsers)` adds them all (cli.py calls it); each group's module holds its
handlers and its own argparse registration, and `shared`/`options` what they have in common.
Heavy modules are imported inside the handlers, so `jackpot serve` pays nothing for them.
"""

from __future__ import annotations

from jackpot_grpc.ops.cli import (
    audit,
    backup,
    clients,
    config,
    db,
    diagnostics,
    health,
    ledger,
    loadtest,
    migrate,
    pool,
    report,
    smoke,
)
from jackpot_grpc.ops.cli.options import Subparsers

# In the order `jackpot --help` lists them.
GROUPS = (
    migrate,
    audit,
    ledger,
    health,
    smoke,
    loadtest,
    db,
    backup,
    diagnostics,
    report,
    config,
    pool,
    clients,
)


def register(subparsers: Subparsers) -> None:
    for group in GROUPS:
        group.register(subparsers)


__all__ = ["register"]
