"""GET /metrics on the gateway port, proxied to the gRPC process's health/metrics HTTP.

The runbook reads `curl -s http://localhost:3000/metrics | jq '.total_requests'` and, once
a month, `curl -s http://localhost:3000/metrics?period=30d`; the numbers live in the server
process (HEALTH_PORT), so the gateway forwards rather than counts.

The REST port is public (no credentials are asked here), so what it forwards is narrow:

- the request figures as JSON only, whatever the caller's Accept: never the Prometheus
  text, which carries pool amounts and the books' verdict (that is the health port's);
- only the keys of the runbook's summary (`PUBLIC_KEYS`): no refusal counts, no history
  status, and no database error text (a failed history read says only that it failed);
- only `?period=` (checked here: a bad one never leaves), answered as the health port
  answers it: a period longer than the server's uptime from the stored history, whose
  reads the server shares and runs at most once per JACKPOT_ON_DEMAND_INTERVAL per period,
  so no caller can make it read more;
- one request to the health port per period at a time, whose answer every caller of that
  period waiting meanwhile shares: the health port paces requests for everyone (its
  Prometheus scrape and operators' checks too), so a flood here must not queue there.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import Any

import aiohttp
import grpc
from aiohttp import web

from jackpot_grpc.config import Settings
from jackpot_grpc.gateway.http_errors import GatewayError, bad_request
from jackpot_grpc.observability.metrics import PERIODS, Stats, UnknownPeriod, describe

log = logging.getLogger(__name__)

HTTP_SESSION = web.AppKey("http_session", aiohttp.ClientSession)
METRICS_URL = web.AppKey("metrics_url", str)
# The request to the health port in flight for each period ("" for since start).
IN_FLIGHT = web.AppKey("metrics_in_flight", dict)
_FORWARDED_REQUEST_HEADERS = ("traceparent", "tracestate")
_WILDCARD_HOSTS = ("", "0.0.0.0", "::", "[::]")
QUERY_PARAMETERS = ("period",)
# The summary's own keys (jackpot_grpc.observability.metrics.summarize) and each figure's
# (describe).
PUBLIC_KEYS = frozenset(
    {"period", "source", "window_seconds", "uptime_seconds", "methods", "units"}
    | set(describe(Stats(), 1.0))
)
HISTORY_ERROR = "the metrics history could not be read; these are one process's figures"


def metrics_url(settings: Settings) -> str:
    """JACKPOT_METRICS_URL, else the health port of a server on this host."""
    if settings.gateway.metrics_url is not None:
        return settings.gateway.metrics_url
    host = "127.0.0.1" if settings.health.host in _WILDCARD_HOSTS else settings.health.host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{settings.health.port}/metrics"


def public_summary(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The runbook's figures of a health-port summary, and nothing an operator alone reads."""
    public = {k: v for k, v in summary.items() if k in PUBLIC_KEYS}
    if "history_error" in summary:
        public["history_error"] = HISTORY_ERROR
    return public


def _period(request: web.Request) -> str:
    """The asked period ("" for since start); 400 for any other parameter or period."""
    for name in request.query:
        if name not in QUERY_PARAMETERS:
            raise bad_request(
                f"unknown query parameter {name!r}: /metrics takes only period",
                [(name, "unknown field")],
            )
    period = request.query.get("period", "")
    if period and period not in PERIODS:
        raise bad_request(str(UnknownPeriod(period)), [("period", "unknown period")])
    return period


async def metrics(request: web.Request) -> web.Response:
    period = _period(request)
    in_flight: dict[str, asyncio.Task[tuple[int, bool, bytes]]] = request.app[IN_FLIGHT]
    fetch = in_flight.get(period)
    if fetch is None:
        fetch = in_flight[period] = asyncio.create_task(_fetch(request, period))
        fetch.add_done_callback(lambda _: in_flight.pop(period, None))
        # Its failure is for its callers; none left is no "exception never retrieved".
        fetch.add_done_callback(lambda done: done.cancelled() or done.exception())
    # A caller that goes away never cancels the others' request.
    status, json_body, body = await asyncio.shield(fetch)
    if not json_body:  # the health port's pacer (503) or anything but its JSON
        raise GatewayError(grpc.StatusCode.UNAVAILABLE, f"metrics upstream answered {status}")
    try:
        data = json.loads(body)
    except ValueError:
        raise GatewayError(grpc.StatusCode.UNAVAILABLE, "metrics upstream sent bad JSON") from None
    if status == 200 and isinstance(data, dict):
        return web.json_response(public_summary(data))
    if status == 400:  # a period this gateway knows and the server does not (versions apart)
        return web.json_response(data, status=400)
    raise GatewayError(grpc.StatusCode.UNAVAILABLE, f"metrics upstream answered {status}")


async def _fetch(request: web.Request, period: str) -> tuple[int, bool, bytes]:
    """(status, whether JSON, body) of the health port's /metrics for `period`."""
    session = request.app[HTTP_SESSION]
    headers = {h: request.headers[h] for h in _FORWARDED_REQUEST_HEADERS if h in request.headers}
    headers["Accept"] = "application/json"
    params = {"period": period} if period else {}
    try:
        async with session.get(
            request.app[METRICS_URL], params=params, headers=headers
        ) as upstream:
            body = await upstream.read()
            return upstream.status, upstream.content_type == "application/json", body
    except (aiohttp.ClientError, TimeoutError) as exc:
        # Its text names the health port's address: for the log, not for a public caller.
        log.warning("metrics upstream %s is unreachable: %r", request.app[METRICS_URL], exc)
        raise GatewayError(grpc.StatusCode.UNAVAILABLE, "metrics upstream is unreachable") from None
