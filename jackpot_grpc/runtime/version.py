"""The installed package's version: /health reports it, OpenTelemetry's service.version."""

from __future__ import annotations

import importlib.metadata

DISTRIBUTION = "jackpot-grpc"


def package_version() -> str:
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
