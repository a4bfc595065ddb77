"""The one error class operator commands raise on purpose: printed as one line, exit 1."""

from __future__ import annotations


class OpsError(Exception):
    pass
