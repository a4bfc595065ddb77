"""The gateway's own limit on failed authentications, per HTTP caller.

The server throttles each caller too, but only as far as it believes the gateway about who
the caller is; stopping a caller here also keeps a flood of bad tokens off the server.
After JACKPOT_AUTH_FAILURE_LIMIT answers of 401 or 403 to one caller address within
JACKPOT_AUTH_FAILURE_WINDOW seconds, the gateway answers that address 429 itself, without
calling the server, for JACKPOT_AUTH_BLOCK_SECONDS (counted as refusals
{layer="http", reason="auth_throttled"} in GET /metrics/gateway).
"""

from __future__ import annotations

import logging

import grpc
from aiohttp import web

from jackpot_grpc.gateway.http_errors import rate_limited_response
from jackpot_grpc.observability.refusals import Refusals
from jackpot_grpc.security.failure_throttle import FailureThrottle
from jackpot_grpc.transport.peer_address import Caller

log = logging.getLogger(__name__)

AUTH_REFUSED = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})
REFUSAL_REASON = "auth_throttled"


class CallerFailureLimit:
    def __init__(self, throttle: FailureThrottle, refusals: Refusals) -> None:
        self._throttle = throttle
        self._refusals = refusals
        refusals.declare("http", (REFUSAL_REASON,))

    def refusal(self, caller: Caller) -> web.Response | None:
        """The 429 for a caller blocked now, else None."""
        if not self._throttle.blocked(caller.address):
            return None
        self._refusals.count("http", REFUSAL_REASON)
        return rate_limited_response(
            "too many failed authentications from this address; retry later",
            self._throttle.block_seconds,
        )

    def answered(self, caller: Caller, code: grpc.StatusCode) -> None:
        """Note the server's answer to the caller: 401 and 403 count against it."""
        if code in AUTH_REFUSED and self._throttle.failed(caller.address):
            log.warning(
                "caller %s refused for %.0f s after %d failed authentications in %.0f s",
                caller,
                self._throttle.block_seconds,
                self._throttle.limit,
                self._throttle.window,
            )
