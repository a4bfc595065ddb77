"""What gRPC core saw of the server's calls, against what the application took (channelz).

A call reaches the application only when grpc.aio takes it from gRPC core's queue, one at
a time. Calls that core turns away first never reach an interceptor, so no metric of ours
sees them: under a flood, core cancels calls at random once more than
`grpc.server.max_pending_requests` (1,000) wait untaken (CANCELLED, at once), and a call
whose client gives up while queued is gone too. Core counts every call it starts in
channelz, so `started - taken` is the number of calls core received that the application
never took: the ones queued right now plus every one dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from grpc_channelz.v1 import channelz_pb2
from grpc_channelz.v1.channelz import ChannelzServicer
from prometheus_client.metrics_core import CounterMetricFamily, Metric

_PAGE_LIMIT = 100  # pages of servers to read (a process runs a handful; tests, more)


def _servers() -> Iterator[channelz_pb2.Server]:
    """Every gRPC server of this process, as channelz lists them (in pages)."""
    start = 0
    for _ in range(_PAGE_LIMIT):
        request = channelz_pb2.GetServersRequest(start_server_id=start)
        # The servicer's method is the library's reading of core's channelz into the proto;
        # called in-process, its context is only used on failure.
        page: channelz_pb2.GetServersResponse = ChannelzServicer.GetServers(  # type: ignore[no-untyped-call]
            request, None
        )
        yield from page.server
        if page.end or not page.server:
            return
        start = page.server[-1].ref.server_id + 1


def listening_servers() -> set[int]:
    """The channelz ids of this process's servers that have a listening socket (empty when
    channelz cannot be read). Taken just before and just after a server binds (with no
    await between), the difference is that server: channelz names a listener by the
    address it was asked for (":0"), so the port alone cannot tell servers apart."""
    try:
        return {server.ref.server_id for server in _servers() if server.listen_socket}
    except Exception:  # channelz is an experimental API of gRPC core: never fail a start
        return set()


def calls_started(server_id: int) -> int | None:
    """The calls gRPC core started on one server of this process (None when unknown)."""
    request = channelz_pb2.GetServerRequest(server_id=server_id)
    try:
        found: channelz_pb2.GetServerResponse = ChannelzServicer.GetServer(  # type: ignore[no-untyped-call]
            request, None
        )
    except Exception:  # unknown id (context None fails) or channelz unavailable
        return None
    return int(found.server.data.calls_started)


class CallIntake:
    """Every call the application takes from gRPC core (counted first by the call
    interceptor, entrypoints/interceptors.py), to set against the calls core started on
    the server's port."""

    def __init__(self) -> None:
        self.taken = 0
        self.server_id: int | None = None  # channelz's, set once the server is bound

    def started(self) -> int | None:
        return None if self.server_id is None else calls_started(self.server_id)

    def not_taken(self) -> int | None:
        """Calls core received that the application never took: dropped, or queued now."""
        started = self.started()
        return None if started is None else max(0, started - self.taken)

    def collect(self) -> Iterable[Metric]:
        """For /metrics/prometheus: rate(started) - rate(taken) is the rate core drops at."""
        started = self.started()
        if started is not None:
            yield CounterMetricFamily(
                "jackpot_grpc_core_calls_started",
                "Calls gRPC core received on the jackpot gRPC port (channelz).",
                value=started,
            )
        yield CounterMetricFamily(
            "jackpot_grpc_calls_taken",
            "Calls the application took from gRPC core; the rest were dropped or are queued.",
            value=self.taken,
        )
