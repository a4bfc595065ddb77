"""Every gRPC server channel option in one place: keepalive, connection age, stream bound.

- Keepalive: the server pings an idle connection every GRPC_KEEPALIVE_TIME seconds and
  drops it when no answer comes within GRPC_KEEPALIVE_TIMEOUT, so dead peers behind a
  balancer do not hold streams. Clients may ping as often as GRPC_MIN_PING_INTERVAL, also
  without calls in flight; a client pinging faster is sent GOAWAY (gRPC core's ping strikes).
- Connection age: after GRPC_MAX_CONNECTION_AGE seconds (±10 % jitter, gRPC core) the
  server sends GOAWAY, so clients reconnect and an L4 balancer spreads them over replicas;
  calls in flight get GRPC_MAX_CONNECTION_AGE_GRACE seconds to finish.
- Streams per connection: HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS. A client cannot open
  more concurrent calls than this on one connection; its library queues the rest.
- Calls waiting in core: grpc.aio takes calls from gRPC core one at a time; those not yet
  taken wait in core's queue. Past `grpc.server.max_pending_requests` waiting calls core
  cancels new ones at random, and all of them past the hard limit (CANCELLED at once; no
  interceptor sees them: entrypoints.core_calls counts them). GRPC_MAX_PENDING_CALLS sets
  both limits to one bound, so every call past it is dropped; unset keeps core's 1,000
  and 3,000.

grpc.aio's own `maximum_concurrent_rpcs` is deliberately not used: in grpc.aio it does not
answer RESOURCE_EXHAUSTED, it stops taking calls from gRPC core until one finishes (health
checks included), so excess calls wait unseen and end CANCELLED or DEADLINE_EXCEEDED.
The bound on concurrent calls lives in admission (entrypoints.admission), which answers
RESOURCE_EXHAUSTED with RetryInfo at once and is counted.
"""

from __future__ import annotations

from jackpot_grpc.config import Settings

Options = list[tuple[str, int]]


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def server_options(settings: Settings, *, reuse_port: bool) -> Options:
    pending = settings.grpc.max_pending_calls
    return [
        *(
            []
            if pending is None
            else [
                ("grpc.server.max_pending_requests", pending),
                ("grpc.server.max_pending_requests_hard_limit", pending),
            ]
        ),
        ("grpc.so_reuseport", 1 if reuse_port else 0),
        ("grpc.max_concurrent_streams", settings.grpc.max_streams_per_connection),
        ("grpc.keepalive_time_ms", _ms(settings.grpc.keepalive_time)),
        ("grpc.keepalive_timeout_ms", _ms(settings.grpc.keepalive_timeout)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", _ms(settings.grpc.min_ping_interval)),
        ("grpc.max_connection_age_ms", _ms(settings.grpc.max_connection_age)),
        ("grpc.max_connection_age_grace_ms", _ms(settings.grpc.max_connection_age_grace)),
    ]
