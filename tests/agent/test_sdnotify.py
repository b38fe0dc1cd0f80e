"""sd_notify client tested against a real unix datagram socket set as NOTIFY_SOCKET."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator

import pytest

from agent.sdnotify import Notifier, run_watchdog


class Receiver:
    """A bound AF_UNIX/SOCK_DGRAM socket standing in for systemd's notify socket."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env_value = env_value

    def recv(self, timeout: float = 2.0) -> str:
        self.sock.settimeout(timeout)
        return self.sock.recv(4096).decode()

    def drain(self) -> list[str]:
        """Everything queued right now, without waiting."""
        out: list[str] = []
        self.sock.setblocking(False)
        try:
            while True:
                out.append(self.sock.recv(4096).decode())
        except BlockingIOError:
            pass
        return out


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    # A short directory: unix socket paths are limited to 108 bytes.
    d = tempfile.mkdtemp(prefix="sdn", dir="/tmp")
    path = os.path.join(d, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    try:
        yield Receiver(sock, path)
    finally:
        sock.close()
        shutil.rmtree(d, ignore_errors=True)


def test_unset_notify_socket_makes_every_call_a_noop() -> None:
    n = Notifier.from_env({})
    assert not n.enabled
    assert n.ready() is False
    assert n.status("x") is False
    assert n.stopping() is False
    assert n.watchdog() is False
    assert n.watchdog_interval() is None


def test_ready_status_stopping_arrive_on_the_socket(receiver: Receiver) -> None:
    n = Notifier.from_env({"NOTIFY_SOCKET": receiver.env_value})
    assert n.enabled
    assert n.ready() is True
    assert receiver.recv() == "READY=1"
    assert n.status("7 collectors ok, spool 0 B")
    assert receiver.recv() == "STATUS=7 collectors ok, spool 0 B"
    assert n.stopping()
    assert receiver.recv() == "STOPPING=1"
    assert n.watchdog()
    assert receiver.recv() == "WATCHDOG=1"
    n.close()


def test_status_is_folded_to_one_line_so_it_cannot_inject_assignments(receiver: Receiver) -> None:
    n = Notifier.from_env({"NOTIFY_SOCKET": receiver.env_value})
    n.status("bad\nREADY=1\n  tail")
    assert receiver.recv() == "STATUS=bad READY=1 tail"
    n.close()


def test_abstract_socket_with_at_prefix() -> None:
    name = f"hostmon-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    try:
        n = Notifier.from_env({"NOTIFY_SOCKET": "@" + name})
        assert n.ready()
        sock.settimeout(2)
        assert sock.recv(100) == b"READY=1"
        n.close()
    finally:
        sock.close()


def test_missing_socket_is_reported_not_raised(tmp_path: object) -> None:
    n = Notifier("/tmp/does-not-exist-hostmon/notify")
    assert n.ready() is False
    assert n.watchdog() is False


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    env = {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "30000000"}
    assert Notifier.from_env(env).watchdog_interval() == 15.0
    env["WATCHDOG_PID"] = str(os.getpid())
    assert Notifier.from_env(env).watchdog_interval() == 15.0


@pytest.mark.parametrize(
    "extra",
    [
        {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"},  # meant for another process
        {"WATCHDOG_USEC": "0"},
        {"WATCHDOG_USEC": "abc"},
        {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "nope"},
        {},
    ],
)
def test_watchdog_disabled_when_not_meant_for_us(extra: dict[str, str]) -> None:
    env = {"NOTIFY_SOCKET": "/x", **extra}
    assert Notifier.from_env(env).watchdog_interval() is None


async def test_run_watchdog_returns_at_once_without_watchdog(receiver: Receiver) -> None:
    n = Notifier.from_env({"NOTIFY_SOCKET": receiver.env_value})
    await asyncio.wait_for(run_watchdog(n, lambda: True), timeout=1)
    assert receiver.drain() == []


async def test_watchdog_pings_at_half_interval(receiver: Receiver) -> None:
    # WATCHDOG_USEC 0.2 s -> a ping every 0.1 s.
    n = Notifier.from_env({"NOTIFY_SOCKET": receiver.env_value, "WATCHDOG_USEC": "200000"})
    stamps: list[float] = []
    loop = asyncio.get_running_loop()
    receiver.sock.setblocking(False)

    def on_readable() -> None:
        while True:
            try:
                msg = receiver.sock.recv(100).decode()
            except BlockingIOError:
                return
            assert msg == "WATCHDOG=1"
            stamps.append(time.monotonic())

    loop.add_reader(receiver.sock.fileno(), on_readable)
    task = asyncio.create_task(run_watchdog(n, lambda: True))
    try:
        while len(stamps) < 5:
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        loop.remove_reader(receiver.sock.fileno())
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    # asyncio.sleep never wakes early (allow for clock granularity), so pings are
    # never closer than the half-interval: systemd is not flooded.
    assert min(gaps) >= 0.09, gaps
    n.close()


async def test_unhealthy_withholds_pings_and_recovery_resumes_them(receiver: Receiver) -> None:
    n = Notifier.from_env({"NOTIFY_SOCKET": receiver.env_value, "WATCHDOG_USEC": "100000"})
    state = {"ok": False}
    calls = {"n": 0}

    def healthy() -> bool:
        calls["n"] += 1
        return state["ok"]

    task = asyncio.create_task(run_watchdog(n, healthy))
    try:
        while calls["n"] < 5:
            await asyncio.sleep(0.02)
        assert receiver.drain() == []  # asked 5 times, never pinged
        state["ok"] = True
        seen = calls["n"]
        while calls["n"] < seen + 3:
            await asyncio.sleep(0.02)
        assert receiver.drain().count("WATCHDOG=1") >= 2
    finally:
        task.cancel()
    n.close()


async def test_health_check_that_raises_counts_as_unhealthy(receiver: Receiver) -> None:
    n = Notifier.from_env({"NOTIFY_SOCKET": receiver.env_value, "WATCHDOG_USEC": "100000"})
    calls = {"n": 0}

    def healthy() -> bool:
        calls["n"] += 1
        raise RuntimeError("collector table corrupt")

    task = asyncio.create_task(run_watchdog(n, healthy))
    try:
        while calls["n"] < 4:
            await asyncio.sleep(0.02)
        assert not task.done()  # the watchdog task survives a broken check
        assert receiver.drain() == []
    finally:
        task.cancel()
    n.close()


async def test_stalled_event_loop_stops_the_pings(receiver: Receiver) -> None:
    n = Notifier.from_env({"NOTIFY_SOCKET": receiver.env_value, "WATCHDOG_USEC": "100000"})
    task = asyncio.create_task(run_watchdog(n, lambda: True))  # pings every 0.05 s
    try:
        await asyncio.sleep(0.3)
        assert receiver.drain().count("WATCHDOG=1") >= 2  # pinging while the loop runs
        # Block the event loop with synchronous work for 8 ping intervals. A
        # unix datagram is queued at the receiver when sendto returns, so
        # anything the loop sent is already drainable: nothing may be there.
        time.sleep(0.4)
        assert receiver.drain() == []
        # Once the loop runs again the pings come back.
        await asyncio.sleep(0.3)
        assert receiver.drain().count("WATCHDOG=1") >= 2
    finally:
        task.cancel()
    n.close()
