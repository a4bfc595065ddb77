"""GET /metrics on the gateway port, proxied to the gRPC process's health/metrics HTTP.

The runbook reads `curl -s http://localhost:3000/metrics | jq '.total_requests'`; the numbers
live in the server process (HEALTH_PORT), so the gateway forwards rather than counts.
The REST port is public: it asks for the server's in-memory view only (`source=memory`),
never a database-backed period, so no caller there can make the server query its database.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import aiohttp
import grpc
from aiohttp import web

from jackpot_grpc.config import Settings
from jackpot_grpc.gateway.errors import GatewayError

METRICS_URL_ENV = "JACKPOT_METRICS_URL"
HTTP_SESSION = web.AppKey("http_session", aiohttp.ClientSession)
METRICS_URL = web.AppKey("metrics_url", str)
_FORWARDED_REQUEST_HEADERS = ("Accept", "traceparent", "tracestate")
_FORWARDED_RESPONSE_HEADERS = ("Content-Type", "Cache-Control")
_WILDCARD_HOSTS = ("", "0.0.0.0", "::", "[::]")


def metrics_url_from_env(settings: Settings, environ: Mapping[str, str] | None = None) -> str:
    """JACKPOT_METRICS_URL, else the health port of a server on this host."""
    env = os.environ if environ is None else environ
    explicit = env.get(METRICS_URL_ENV, "").strip()
    if explicit:
        return explicit
    host = "127.0.0.1" if settings.health_host in _WILDCARD_HOSTS else settings.health_host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{settings.health_port}/metrics"


async def metrics(request: web.Request) -> web.Response:
    session = request.app[HTTP_SESSION]
    headers = {h: request.headers[h] for h in _FORWARDED_REQUEST_HEADERS if h in request.headers}
    try:
        async with session.get(
            request.app[METRICS_URL], params={**request.query, "source": "memory"}, headers=headers
        ) as upstream:
            body = await upstream.read()
            out_headers = {
                h: upstream.headers[h] for h in _FORWARDED_RESPONSE_HEADERS if h in upstream.headers
            }
            return web.Response(status=upstream.status, body=body, headers=out_headers)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise GatewayError(
            grpc.StatusCode.UNAVAILABLE, f"metrics upstream is unreachable: {exc}"
        ) from None
