"""HAProxy's config for the edge, generated from the settings and the clients file.

Pure: `render(settings, clients)` gives every file the config needs (haproxy.cfg, the limit
maps, the gRPC refusals) by name; `write` puts them in the config directory.

How a call is keyed, limited and refused (docs/DEPLOY.md, "The edge"):
- The key is the SHA-256 (hex) of the bearer token, which is what the clients file stores;
  a token no active client has, or none, is keyed `anonymous`: all of those share one
  small budget. The raw token is never stored or logged (no header is captured).
- A stick table counts *admitted* calls (gpc0, incremented only when a call is let
  through) over a 100 ms window, and `sc_trackers` is the client's calls in flight.
- Over a limit: gRPC gets a trailers-only 200 with grpc-status 8 (RESOURCE_EXHAUSTED) and a
  grpc-message naming the limit, served from an errorfile (`http-request return` drops the
  content-type of an empty response); REST gets 429 with Retry-After. Each kind of refusal
  goes through a backend of its own, so HAProxy's Prometheus exporter counts it
  (`haproxy_backend_http_requests_total{proxy="edge_refused_..."}`).
- The servers take at most `server_max_in_flight` calls each; more wait in the edge's
  queue up to `queue_timeout_ms`, then get RESOURCE_EXHAUSTED too (the 503 errorfile).
- Each server is checked on its health port's /health, so one that turns NOT_SERVING
  (draining, database down) is taken out of the rotation.
- `option forwardfor` sends the caller's address as X-Forwarded-For (any the caller sent is
  dropped first); the server and gateway believe it from a JACKPOT_TRUSTED_PROXIES address.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from jackpot_grpc.adapters.clients_file import ClientRecord
from jackpot_grpc.edge.settings import EdgeSettings, Limit

ANONYMOUS = "anonymous"
WINDOW_MS = 100  # the admitted-rate window; a limit per second is counted per window
RETRY_AFTER_SECONDS = 1
RESOURCE_EXHAUSTED = 8
UNAVAILABLE = 14

CONFIG = "haproxy.cfg"
RATE_MAP = "rate.map"
IN_FLIGHT_MAP = "in_flight.map"
MASTER_SOCKET = "master.sock"

# Refusal kind -> the grpc-message naming the limit.
REFUSALS = {
    "rate": "edge limit: admitted calls a second for this client",
    "in_flight": "edge limit: calls in flight for this client",
    "queue": "edge limit: every server is at its calls in flight (queue timeout)",
}


def per_window(rate: int) -> int:
    """A per-second rate as calls per WINDOW_MS window (at least one)."""
    return max(1, math.ceil(rate * WINDOW_MS / 1000))


def client_limit(record: ClientRecord, role_limits: Mapping[str, Limit]) -> Limit:
    """The client's own limits where the clients file sets them, else its roles' (the most
    generous of its roles)."""
    roles = [role_limits[r] for r in record.roles if r in role_limits]
    rate = max((limit.rate for limit in roles), default=1)
    in_flight = max((limit.in_flight for limit in roles), default=1)
    return Limit(record.edge_rate or rate, record.edge_in_flight or in_flight)


def limits_by_key(settings: EdgeSettings, clients: Iterable[ClientRecord]) -> dict[str, Limit]:
    """Every key the edge tracks (active clients' token digests, and `anonymous`)."""
    keyed = {
        c.token_sha256: client_limit(c, settings.role_limits)
        for c in clients
        if c.active and c.token_sha256 is not None
    }
    return {ANONYMOUS: settings.anonymous, **keyed}


def grpc_errorfile(status: int, message: str) -> str:
    """A raw HTTP response HAProxy serves as a gRPC trailers-only answer (HTTP/2 on the
    wire: the status line and Content-Length become a HEADERS frame ending the stream)."""
    return (
        "HTTP/1.1 200 OK\r\n"
        "content-type: application/grpc\r\n"
        f"grpc-status: {status}\r\n"
        f"grpc-message: {message}\r\n"
        "content-length: 0\r\n"
        "\r\n"
    )


def rest_refusal(message: str) -> str:
    """The gateway's JSON error shape (jackpot_grpc.gateway.http_errors), as one line."""
    return json.dumps({"code": RESOURCE_EXHAUSTED, "message": message, "details": []})


def _map(entries: Mapping[str, int]) -> str:
    return "".join(f"{key} {value}\n" for key, value in sorted(entries.items()))


def render(settings: EdgeSettings, clients: Iterable[ClientRecord]) -> dict[str, str]:
    """Every file of the edge's config, by name (relative to settings.config_dir)."""
    limits = limits_by_key(settings, clients)
    files = {
        RATE_MAP: _map({key: per_window(limit.rate) for key, limit in limits.items()}),
        IN_FLIGHT_MAP: _map({key: limit.in_flight for key, limit in limits.items()}),
        "grpc-unavailable.http": grpc_errorfile(UNAVAILABLE, "edge: no server is serving"),
        **{
            f"grpc-{kind}.http": grpc_errorfile(RESOURCE_EXHAUSTED, message)
            for kind, message in REFUSALS.items()
        },
    }
    files[CONFIG] = _config(settings)
    return files


def _config(settings: EdgeSettings) -> str:
    d = settings.config_dir
    servers = "\n".join(
        f"    server s{i} {s.host}:{s.grpc_port} proto h2 check-proto h1 port {s.health_port}"
        for i, s in enumerate(settings.servers, 1)
    )
    gateways = "\n".join(f"    server g{i} {g}" for i, g in enumerate(settings.gateways, 1))
    refusal_backends = "\n".join(
        f"backend edge_refused_grpc_{kind}\n"
        f"    http-request return errorfile {d}/grpc-{kind}.http\n"
        for kind in ("rate", "in_flight")
    ) + "\n".join(
        f"backend edge_refused_rest_{kind}\n"
        f"    http-request return status 429 content-type application/json"
        f" hdr retry-after {RETRY_AFTER_SECONDS} string '{rest_refusal(REFUSALS[kind])}'\n"
        for kind in ("rate", "in_flight")
    )
    return f"""\
# Generated by jackpot_grpc.edge.haproxy from the settings and the clients file: do not
# edit: `jackpot edge` (and `jackpot run --edge`) writes it again on every change.
global
    # Connections (each side counts), within a default 20,000-descriptor limit.
    maxconn 4000
    # Server state changes and errors only: no request is logged, so no header is.
    log stderr format raw local0 notice
    stats socket {d}/admin.sock mode 600 level admin
    # After a reload, the old workers finish the connections they hold, for at most this.
    hard-stop-after 30s

defaults
    mode http
    log global
    option dontlognull
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    # Idle and half-sent HTTP requests: as long as the service's own HTTP listeners allow.
    timeout http-request 5s
    timeout http-keep-alive 5s
    timeout queue {settings.queue_timeout_ms}ms
    # The caller's address for the server and gateway; whatever the caller claimed is
    # dropped first, so the edge's word is the only one.
    option forwardfor

# Per key (token digest or `anonymous`): admitted calls per {WINDOW_MS} ms window (gpc0).
backend edge_clients
    stick-table type string len 64 size 100k expire 60s store gpc0,gpc0_rate({WINDOW_MS}ms)

frontend edge_grpc
    bind {settings.grpc_bind} proto h2
    # A connection with no call open (one that never sent its HTTP/2 preface too) is
    # closed after this; a gRPC client reconnects on its next call.
    timeout client 30s
{_keying(d)}
    http-request return errorfile {d}/grpc-unavailable.http if {{ nbsrv(jackpot_grpc) eq 0 }}
    use_backend edge_refused_grpc_rate if {{ var(txn.refused) -m str rate }}
    use_backend edge_refused_grpc_in_flight if {{ var(txn.refused) -m str in_flight }}
    default_backend jackpot_grpc

frontend edge_rest
    bind {settings.rest_bind}
{_keying(d)}
    use_backend edge_refused_rest_rate if {{ var(txn.refused) -m str rate }}
    use_backend edge_refused_rest_in_flight if {{ var(txn.refused) -m str in_flight }}
    default_backend jackpot_rest

frontend edge_stats
    bind {settings.stats_bind}
    http-request use-service prometheus-exporter if {{ path /metrics }}
    stats enable
    stats uri /stats
    stats refresh 10s

backend jackpot_grpc
    balance leastconn
    option httpchk
    http-check send meth GET uri /health ver HTTP/1.1 hdr host edge
    http-check expect status 200
    default-server check inter 500ms fall 2 rise 2 maxconn {settings.server_max_in_flight}
    # A queue timeout (every server at its maxconn) is RESOURCE_EXHAUSTED; a server that
    # fails mid-call is UNAVAILABLE, both as gRPC answers.
    errorfile 503 {d}/grpc-queue.http
    errorfile 502 {d}/grpc-unavailable.http
    errorfile 504 {d}/grpc-unavailable.http
{servers}

backend jackpot_rest
    balance leastconn
    option httpchk
    http-check send meth GET uri /metrics/gateway ver HTTP/1.1 hdr host edge
    http-check expect status 200
    default-server check inter 1s fall 2 rise 2
{gateways}

{refusal_backends}"""


def _keying(d: Path) -> str:
    """The rules both public frontends share: key, track, decide, count admitted calls."""
    return f"""\
    http-request del-header x-forwarded-for
    http-request set-var(txn.key) req.hdr(authorization),word(2,' '),sha2(256),hex,lower
    http-request set-var(txn.key) str({ANONYMOUS}) unless {{ var(txn.key),map_str_int({d}/{RATE_MAP}) -m found }}
    http-request track-sc0 var(txn.key) table edge_clients
    http-request set-var(txn.rate_limit) var(txn.key),map_str_int({d}/{RATE_MAP})
    http-request set-var(txn.in_flight_limit) var(txn.key),map_str_int({d}/{IN_FLIGHT_MAP})
    http-request set-var(txn.refused) str(rate) if {{ sc0_gpc0_rate,sub(txn.rate_limit) ge 0 }}
    http-request set-var(txn.refused) str(in_flight) if !{{ var(txn.refused) -m found }} {{ sc0_trackers,sub(txn.in_flight_limit) gt 0 }}
    http-request sc-inc-gpc0(0) unless {{ var(txn.refused) -m found }}"""  # noqa: E501


def write(settings: EdgeSettings, clients: Iterable[ClientRecord]) -> Path:
    """Write every file atomically into settings.config_dir; the config's path."""
    directory = settings.config_dir
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in render(settings, clients).items():
        fd, temporary = tempfile.mkstemp(prefix=f".{name}.", dir=directory)
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(temporary, directory / name)
    return directory / CONFIG
