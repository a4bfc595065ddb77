"""A throwaway self-signed certificate for localhost, made with the openssl CLI."""

from __future__ import annotations

import subprocess
from pathlib import Path

from testkit.tools import require_tool


def self_signed(directory: Path) -> tuple[Path, Path]:
    """(key.pem, cert.pem) valid for localhost and 127.0.0.1."""
    key, cert = directory / "key.pem", directory / "cert.pem"
    command = [
        require_tool("openssl"), "req", "-x509",
        "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-days", "1", "-subj", "/CN=localhost",
        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
    ]  # fmt: skip
    subprocess.run(
        [*command, "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True
    )
    return key, cert
