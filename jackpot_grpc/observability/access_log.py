"""The HTTP access log: aiohttp's usual line, with every query string left out.

Callers put credentials in query strings (`?access_token=…`, or a bare `?jpk_…`) however
often they are told not to, and a log outlives the token's revocation and reaches people
the token was never meant for. A query's parameter names are no safer than its values (a
bare token is a name), so the whole query is replaced by a marker saying one was sent;
the path and status stay, which is what reading an access log needs. The Referer's query
is dropped the same way. Nothing else of the request is logged (no extra fields).
"""

from __future__ import annotations

import datetime

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

QUERY_REDACTED = "?[query redacted]"


def without_query(target: str) -> str:
    """`/path?a=b` → `/path?[query redacted]`; a target without a query as it is."""
    path, separator, _ = target.partition("?")
    return path + QUERY_REDACTED if separator else path


class RedactingAccessLogger(AbstractAccessLogger):
    """`remote [time] "METHOD /path HTTP/1.1" status bytes "referer" "user-agent"`, as
    aiohttp's default format, but for the query strings."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        try:
            started = datetime.datetime.now().astimezone() - datetime.timedelta(seconds=time)
            version = request.version
            self.logger.info(
                '%s %s "%s %s HTTP/%d.%d" %d %d "%s" "%s"',
                request.remote or "-",
                started.strftime("[%d/%b/%Y:%H:%M:%S %z]"),
                request.method,
                without_query(request.raw_path),
                version.major,
                version.minor,
                response.status,
                response.body_length,
                without_query(request.headers.get("Referer", "-")),
                request.headers.get("User-Agent", "-"),
            )
        except Exception:  # a log line must never fail a request
            self.logger.exception("could not write an access log line")
