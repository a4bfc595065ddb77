"""`make grpcjs-probe`: the independent grpc-js probe (bench/grpcjs/probe.js) against a
server started here, on a fresh database, with a game client of its own.

    .venv/bin/python -m bench.grpcjs_probe [--seconds 10] [--in-flight 64] [--database system]

It prints the probe's JSON: the health Check's and Contribute's calls/s, closed loop at
64 in flight on one channel, and Contribute / Check (issue 30's goal: >= 0.8). Node.js and
npm are needed; the probe's packages are installed once with `npm ci` (package-lock.json,
integrity hashes) into bench/grpcjs/node_modules, which is not committed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import google.api

from bench import orchestrate
from bench.console import log
from testkit.paths import PROJECT_ROOT

PROBE = Path(__file__).resolve().parent / "grpcjs"
# The googleapis-common-protos wheel ships google/api/*.proto and google/type/*.proto.
GOOGLE_PROTOS = Path(next(iter(google.api.__path__))).parent.parent


def node_available() -> bool:
    return shutil.which("node") is not None and shutil.which("npm") is not None


def install() -> None:
    """`npm ci` once: exactly the locked packages, checked against their integrity hashes."""
    if (PROBE / "node_modules" / "@grpc" / "grpc-js").is_dir():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm not found: the grpc-js probe needs Node.js and npm")
    log("grpc-js probe: npm ci")
    subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"], cwd=PROBE, check=True, capture_output=True
    )


def run_probe(target: str, token: str, seconds: float, in_flight: int) -> dict[str, Any]:
    """probe.js against a running server (target host:port; token: a game client's)."""
    install()
    done = subprocess.run(
        [
            "node",
            str(PROBE / "probe.js"),
            target,
            str(PROJECT_ROOT / "protos"),
            str(GOOGLE_PROTOS),
            token,
            str(seconds),
            str(in_flight),
        ],
        capture_output=True,
        text=True,
        timeout=2 * seconds + 60,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"grpc-js probe failed: {done.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def measure(
    admin: str, workdir: Path, token: str, seconds: float, in_flight: int
) -> dict[str, Any]:
    """The probe against `jackpot serve` (batching on) on a fresh database of its own, so
    its writes stay out of the other scenarios' audits. `token`: a game client's, in
    workdir's clients file (orchestrate.bench_client)."""
    server_args = argparse.Namespace(server_workers=1)
    with (
        orchestrate.bench_database(admin, "grpcjs") as url,
        orchestrate.server(server_args, url, workdir, batching=True) as srv,
    ):
        log(f"grpc-js probe: {in_flight} in flight, {seconds:g}s each")
        result = run_probe(srv.target, token, seconds, in_flight)
    log(
        f"  Check {result['check_calls_per_s']:,} calls/s, Contribute "
        f"{result['contribute_calls_per_s']:,} calls/s: {result['contribute_over_check']}"
    )
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.grpcjs_probe", description=__doc__)
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per call kind")
    p.add_argument("--in-flight", type=int, default=64, help="calls in flight (default 64)")
    p.add_argument("--database", default="auto", help="as bench.run's --database")
    args = p.parse_args(argv)
    if not node_available():
        print("the grpc-js probe needs Node.js and npm (node 20 or later)", file=sys.stderr)
        return 2
    install()
    with (
        tempfile.TemporaryDirectory(prefix="jackpot-grpcjs-") as tmp,
        orchestrate.admin_database(args.database) as (admin, _kind),
    ):
        workdir = Path(tmp)
        token = orchestrate.bench_client(workdir)  # a game client: Contribute writes
        result = measure(admin, workdir, token, args.seconds, args.in_flight)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
