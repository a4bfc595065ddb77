"""The gRPC service config with the jackpot service's retry policy (service_config.json).

Retried: UNAVAILABLE (the server is restarting, the database is briefly away, a lock wait
timed out) and RESOURCE_EXHAUSTED (the server shed load), at most 4 attempts with
exponential backoff from 100 ms to 2 s. Nothing else is retried: every other code says the
request itself is at fault or its outcome is known.

Reads (GetPools, GetStatistics, GetConfig, health checks) are safe to repeat. Writes
(Contribute, ContributeBatch, Win) are safe only when they carry an idempotency key: a
retry of a keyed write is answered from the first one (`replayed: true`), an unkeyed one
would be applied twice. A service config cannot look inside a request, so the second
methodConfig entry (the writes) belongs only on a channel whose writes all carry a key:
`service_config(keyed_writes=False)` leaves it out. UpdateConfig is never retried (it has
`expected_version` for that).
"""

from __future__ import annotations

import copy
import functools
import importlib.resources
import json
from typing import Any

RESOURCE = "service_config.json"
WRITES = frozenset({"Contribute", "ContributeBatch", "Win"})


@functools.cache
def _shipped() -> dict[str, Any]:
    text = importlib.resources.files(__package__ or "jackpot_grpc.client").joinpath(RESOURCE)
    document: dict[str, Any] = json.loads(text.read_text())
    return document


def _is_write_entry(entry: dict[str, Any]) -> bool:
    return any(name.get("method") in WRITES for name in entry["name"])


def service_config(*, keyed_writes: bool) -> dict[str, Any]:
    """The shipped config; without `keyed_writes`, only the reads are retried."""
    document = copy.deepcopy(_shipped())
    if not keyed_writes:
        document["methodConfig"] = [e for e in document["methodConfig"] if not _is_write_entry(e)]
    return document


def channel_options(*, keyed_writes: bool) -> list[tuple[str, Any]]:
    """grpc channel options that turn the retry policy on."""
    return [
        ("grpc.enable_retries", 1),
        ("grpc.service_config", json.dumps(service_config(keyed_writes=keyed_writes))),
    ]
