"""The source checkout, for tests, testkit and bench (bench imports testkit too). Nothing the
service runs reads it: an installed wheel has no checkout (and no testkit), so the service's
run-time paths come from its settings (jackpot_grpc.config)."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
