"""The batch thread's commit bound (adapters.commit_bound.CommitWatchdog) on a real socket:
it shuts the socket when an armed deadline passes, never when disarmed in time, and
arming does not wake its thread once per batch."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from jackpot_grpc.adapters.commit_bound import CommitWatchdog


@pytest.fixture
def watchdog() -> Iterator[CommitWatchdog]:
    dog = CommitWatchdog()
    yield dog
    dog.close()


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    yield ours, theirs
    ours.close()
    theirs.close()


def shut_within(sock: socket.socket, seconds: float) -> bool:
    """Whether `sock` reads end-of-file within `seconds` (the watchdog shut it)."""
    sock.settimeout(seconds)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False


def test_a_deadline_that_passes_shuts_the_socket(
    watchdog: CommitWatchdog, pair: tuple[socket.socket, socket.socket]
) -> None:
    ours, _ = pair
    watchdog.arm(ours.fileno(), 0.1)
    assert shut_within(ours, 5.0)
    assert watchdog.disarm() is True


def test_disarmed_in_time_the_socket_stays_open(
    watchdog: CommitWatchdog, pair: tuple[socket.socket, socket.socket]
) -> None:
    ours, theirs = pair
    watchdog.arm(ours.fileno(), 0.2)
    assert watchdog.disarm() is False
    assert not shut_within(ours, 0.4)
    theirs.sendall(b"x")
    assert ours.recv(1) == b"x"


def test_an_earlier_deadline_wakes_a_thread_waiting_for_a_later_one(
    watchdog: CommitWatchdog, pair: tuple[socket.socket, socket.socket]
) -> None:
    ours, _ = pair
    watchdog.arm(ours.fileno(), 60.0)
    time.sleep(0.05)  # the thread now waits for the 60 s deadline
    watchdog.arm(ours.fileno(), 0.1)
    assert shut_within(ours, 5.0)


def test_arming_batch_after_batch_does_not_wake_the_thread_each_time(
    watchdog: CommitWatchdog, pair: tuple[socket.socket, socket.socket]
) -> None:
    ours, _ = pair
    watchdog.arm(ours.fileno(), 30.0)
    assert watchdog.disarm() is False
    time.sleep(0.05)  # the thread waits for that first deadline
    woken = watchdog.wakes
    for _ in range(200):
        watchdog.arm(ours.fileno(), 30.0)
        time.sleep(0.001)  # a batch's round trip: time for a woken thread to run
        assert watchdog.disarm() is False
    time.sleep(0.05)
    assert watchdog.wakes - woken <= 1
    assert not shut_within(ours, 0.1)
