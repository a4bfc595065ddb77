"""A throwaway certificate authority and the certificates it signs (openssl CLI), for mTLS."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from testkit.tools import require_tool

_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]


def _openssl(*args: str) -> None:
    subprocess.run([require_tool("openssl"), *args], check=True, capture_output=True)


@dataclass(frozen=True)
class Authority:
    key: Path
    cert: Path

    def issue(
        self, directory: Path, common_name: str, *, dns: tuple[str, ...] = ()
    ) -> tuple[Path, Path]:
        """(key.pem, cert.pem) for `common_name`, with its DNS names (and 127.0.0.1) as SANs,
        usable by a server and by a client."""
        stem = directory / common_name
        key, csr, cert, ext = (stem.with_suffix(s) for s in (".key", ".csr", ".pem", ".ext"))
        sans = ",".join([*(f"DNS:{d}" for d in (common_name, *dns)), "IP:127.0.0.1"])
        ext.write_text(
            f"subjectAltName={sans}\nextendedKeyUsage=serverAuth,clientAuth\n"
            "basicConstraints=CA:FALSE\n"
        )
        _openssl(
            "req",
            "-new",
            *_EC,
            "-subj",
            f"/CN={common_name}",
            "-keyout",
            str(key),
            "-out",
            str(csr),
        )
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key),
            "-CAcreateserial", "-days", "1", "-extfile", str(ext), "-out", str(cert),
        )  # fmt: skip
        return key, cert


def authority(directory: Path, name: str = "Jackpot Test CA") -> Authority:
    directory.mkdir(parents=True, exist_ok=True)
    key, cert = directory / "ca.key", directory / "ca.pem"
    _openssl(
        "req", "-x509", *_EC, "-days", "1", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout", str(key), "-out", str(cert),
    )  # fmt: skip
    return Authority(key, cert)
