"""The gateway's access log never records a query string: callers put tokens there
(`?access_token=…`) however often they are told not to, and the log outlives them.

`jackpot serve` and `jackpot gateway` run as child processes; the test reads what the
gateway wrote (its output and JACKPOT_LOG_DIR/application.log).
"""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

from testkit.processes import base_url, serving, start_gateway

SECRET = "jpk_NeverLogThisToken0123456789abcdefABCDEF"
# (method, path and query, the status the gateway answers): refused and accepted alike.
REQUESTS = [
    ("GET", f"/api/jackpot/pools?access_token={SECRET}", 400),  # an unknown query parameter
    ("GET", f"/api/jackpot/pools?{SECRET}", 400),  # a bare token: its name is the secret
    ("GET", f"/metrics?access_token={SECRET}", 400),
    ("GET", f"/no/such/route?access_token={SECRET}", 404),
    ("POST", f"/api/jackpot/contribute?token={SECRET}", 400),
    ("GET", f"/openapi.json?token={SECRET}", 200),
    ("GET", f"/api/jackpot/pools?group=minor&x={SECRET}", 400),
]


def _status(method: str, url: str) -> int:
    data = b'{"gameId": "log", "wagerAmount": 1}' if method == "POST" else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as refused:
        return int(refused.code)


def _written(log_dir: Path) -> str:
    return "\n".join(
        path.read_text(errors="replace") for path in sorted(log_dir.rglob("*")) if path.is_file()
    )


def test_the_access_log_records_paths_without_their_query_strings(
    database_url: str, tmp_path: Path
) -> None:
    with serving(database_url, tmp_path) as serve:
        gateway = start_gateway(serve, tmp_path)
        try:
            base = base_url(gateway)
            answered = [_status(method, base + target) for method, target, _ in REQUESTS]
        finally:
            gateway.stop()
    assert answered == [status for _, _, status in REQUESTS]
    written = _written(tmp_path)  # both processes' output and application.log
    assert SECRET not in written and "NeverLogThis" not in written
    # Each request is logged, by path and status, with a marker where its query was.
    for method, target, status in REQUESTS:
        path = target.split("?", 1)[0]
        line = f'"{method} {path}?[query redacted] HTTP/1.1" {status} '
        assert line in written, (line, written[-3000:])
