"""sd_notify client tested against a real unix datagram socket set as NOTIFY_SOCKET."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator

import pytest
from hostmond.agent.sdnotify import Notifier, run_watchdog


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


# ---------------------------------------------------------------------------
# end to end: the real `hostmon run` as a child process, systemd's side played
# by a bound datagram socket


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _http_get(port: int, path: str) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""


@pytest.mark.slow
def test_hostmon_run_notifies_ready_watchdog_status_and_stopping(receiver: Receiver, tmp_path: object) -> None:
    import signal
    import subprocess
    import sys
    from pathlib import Path

    state = Path(str(tmp_path)) / "state"
    port = _free_port()
    env = {
        **os.environ,
        "NOTIFY_SOCKET": receiver.env_value,
        "WATCHDOG_USEC": "1000000",  # a ping every 0.5 s
        "HOSTMON_STATE_DIR": str(state),
        "HOSTMON_SHIPPING__ENABLED": "false",
        "HOSTMON_RUNTIME__INTERVAL": "1",
    }
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from hostmond.cli import main; sys.exit(main(sys.argv[1:]))",
         "run", "--listen", f"127.0.0.1:{port}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        messages: list[str] = []
        deadline = time.monotonic() + 60
        while "READY=1" not in messages:
            assert time.monotonic() < deadline, f"no READY=1; got {messages}"
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                messages.extend(receiver.recv(timeout=1).split("\n"))
            except TimeoutError:
                continue
        # READY=1 comes after the first full collection: the agent says it is ready
        status, body = _http_get(port, "/readyz")
        assert status == 200
        # /metrics serves a snapshot re-rendered just after the first collection
        deadline = time.monotonic() + 5
        while True:
            _, metrics = _http_get(port, "/metrics")
            if re.search(r"^hostmon_ready\{[^}]*\} 1(\.0)?$", metrics, re.M) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert re.search(r"^hostmon_ready\{[^}]*\} 1(\.0)?$", metrics, re.M), "hostmon_ready stays 0 after READY=1"
        assert re.search(r"^hostmon_collector_success\{collector=\"cpu\"", metrics, re.M)
        # a STATUS= summary and watchdog pings keep coming while it runs
        seen_ping = 0
        deadline = time.monotonic() + 20
        while seen_ping < 2 or not any(m.startswith("STATUS=") for m in messages):
            # No pings while running means Agent.healthy() said "unhealthy": under
            # the unit's WatchdogSec=30 systemd would kill the agent every 30 s.
            assert time.monotonic() < deadline, f"WATCHDOG=1 stopped (Agent.healthy() false?); got {messages}"
            msg = receiver.recv(timeout=5)
            messages.extend(msg.split("\n"))
            seen_ping += msg.split("\n").count("WATCHDOG=1")
        assert any(re.fullmatch(r"STATUS=\d+ collectors, \d+ failing.*", m) for m in messages), messages
        # SIGTERM: STOPPING=1, then a clean exit
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        while "STOPPING=1" not in messages:
            assert time.monotonic() < deadline, f"no STOPPING=1; got {messages}"
            try:
                messages.extend(receiver.recv(timeout=1).split("\n"))
            except TimeoutError:
                continue
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
