"""The image and the kustomize base's pods, run for real with podman on this machine (try-local.sh).

What a user's first `kubectl apply` does, checked against the real host: the
agent pod's /metrics reports the host (agreeing with node_exporter run on the
host), the init container's key copies, the agent's uid, capabilities and
read-only root, the host journal read through --root, the probes, and
shipping to the ingest pod, read back with `hostmon ingest query` inside it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from podman_testutil import image_size_bytes, podman, podman_env

REPO = Path(__file__).resolve().parents[2]
TRY_LOCAL = REPO / "packaging/kubernetes/try-local.sh"
JOURNAL_REMOTE = next(
    (p for p in ("/lib/systemd/systemd-journal-remote", "/usr/lib/systemd/systemd-journal-remote") if os.access(p, os.X_OK)),
    None,
)
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str, timeout: float = 5) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    out = []
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if m and not line.startswith("#"):
            out.append((m.group(1), dict(LABEL.findall(m.group(2) or "")), float(m.group(3))))
    return out


def values(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [(labels, v) for n, labels, v in samples(text) if n == name]


def wait_for(what: str, check: Any, timeout: float = 90, every: float = 1) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (OSError, AssertionError) as e:
            last = e
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:.0f}s (last: {last!r})")


class Pods:
    def __init__(self, name: str, directory: Path, agent_port: int, ingest_port: int) -> None:
        self.name, self.dir = name, directory
        self.agent_url = f"http://127.0.0.1:{agent_port}"
        self.ingest_url = f"http://127.0.0.1:{ingest_port}"
        self.agent = f"{name}-agent-agent"
        self.ingest = f"{name}-ingest-ingest"

    def try_local(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        env = {**podman_env(), "HOSTMON_TRY_DIR": str(self.dir), "HOSTMON_TRY_WAIT": "120"}
        return subprocess.run(
            ["bash", str(TRY_LOCAL), "--name", self.name, *args],
            env=env, capture_output=True, text=True, timeout=timeout, check=False,
        )

    def agent_pid(self) -> int:
        return int(podman("inspect", "--format", "{{.State.Pid}}", self.agent).stdout.strip())


@pytest.fixture(scope="module")
def pods(hostmon_image: str) -> Iterator[Pods]:
    name = f"hostmon-t{os.getpid()}"
    p = Pods(name, Path(f"/var/tmp/{name}-try-local"), free_port(), free_port())
    agent_port, ingest_port = p.agent_url.rsplit(":", 1)[1], p.ingest_url.rsplit(":", 1)[1]
    proc = p.try_local("--image", hostmon_image, "--agent-port", agent_port, "--ingest-port", ingest_port)
    try:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        # it says where /metrics and the ingest answer
        assert f"{p.agent_url}/metrics" in proc.stdout and p.ingest_url in proc.stdout, proc.stdout
        yield p
    finally:
        p.try_local("--down", timeout=120)


@contextlib.contextmanager
def node_exporter() -> Iterator[Callable[[], str]]:
    """Debian's node_exporter run on the host (processes collector on); yields a scrape function."""
    exe = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
    if exe is None:
        msg = "prometheus-node-exporter not found (apt-get install prometheus-node-exporter)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    port = free_port()
    proc = subprocess.Popen(
        [exe, f"--web.listen-address=127.0.0.1:{port}", "--collector.processes"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for("node_exporter", lambda: get(f"http://127.0.0.1:{port}/metrics"), timeout=30, every=0.3)
        yield lambda: get(f"http://127.0.0.1:{port}/metrics")
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_image_size_is_reported(hostmon_image: str) -> None:
    """The figure for the report (node_exporter's official image is about 20-25 MB): printed, and sane."""
    size = image_size_bytes(hostmon_image)
    print(f"\nimage {hostmon_image}: {size / 1e6:.0f} MB", file=sys.stderr)
    assert 50e6 < size < 600e6, size


def test_pod_metrics_are_the_hosts_and_agree_with_node_exporter(pods: Pods) -> None:
    wait_for("agent metrics with processes", lambda: "node_processes_pids" in get(f"{pods.agent_url}/metrics"))

    def pids_of(text: str) -> float:
        ((_, v),) = values(text, "node_processes_pids")
        return v

    # The agent's figures are from its last collection, up to an interval before node_exporter's
    # scrape, and other work on this machine starts and ends processes by the hundred: take a pair
    # of scrapes whose process counts agree (bounded); the pod's own table (2 or 3) never would.
    with node_exporter() as scrape:
        def agreeing() -> tuple[str, str] | None:
            agent, ne = get(f"{pods.agent_url}/metrics"), scrape()
            a, n = pids_of(agent), pids_of(ne)
            return (agent, ne) if abs(a - n) <= max(20, 0.1 * n) else None

        agent, ne = wait_for("agent and node_exporter agreeing on the process count", agreeing, timeout=90, every=2)

    # memory: the host's, exactly
    ((_, mem),) = values(agent, "node_memory_MemTotal_bytes")
    ((_, ne_mem),) = values(ne, "node_memory_MemTotal_bytes")
    assert mem == ne_mem

    # filesystems: every real file system node_exporter sees on the host, with its size; the
    # container's own overlay root and the /host mount are not reported
    def fs(text: str) -> dict[str, tuple[str, float]]:
        return {lab["mountpoint"]: (lab["fstype"], v) for lab, v in values(text, "node_filesystem_size_bytes")}

    ours, theirs = fs(agent), fs(ne)
    real = {mp: fv for mp, fv in theirs.items() if fv[0] in ("ext4", "xfs", "btrfs", "vfat", "zfs")}
    assert real, theirs
    for mp, (fstype, size) in real.items():
        assert mp in ours, f"host file system {mp} ({fstype}) missing from the pod's metrics: {sorted(ours)}"
        assert ours[mp] == (fstype, size), (mp, ours[mp], (fstype, size))
    assert ours["/"][0] != "overlay", ours["/"]
    assert not [mp for mp in ours if mp == "/host" or mp.startswith("/host/")], sorted(ours)

    # network devices: the host's (veth pairs come and go with other containers; node_exporter
    # leaves out lo)
    def devices(text: str) -> set[str]:
        return {lab["device"] for lab, _ in values(text, "node_network_receive_bytes_total")
                if not lab["device"].startswith("veth") and lab["device"] != "lo"}

    assert devices(agent) == devices(ne)
    assert devices(agent) == {d for d in os.listdir("/sys/class/net") if not d.startswith("veth") and d != "lo"}

    # processes: the host's table (hostPID), not the pod's two or three (and they agreed, above)
    assert pids_of(agent) > 20, pids_of(agent)


def test_init_container_copied_the_keys_0600_for_the_agent(pods: Pods) -> None:
    listing = podman("exec", pods.agent, "stat", "-c", "%n %u %g %a", "/etc/hostmon/keys/agent.key",
                     "/etc/hostmon/keys/ingest.pub").stdout.split("\n")
    assert listing[0].split() == ["/etc/hostmon/keys/agent.key", "10001", "10001", "600"], listing
    assert listing[1].split() == ["/etc/hostmon/keys/ingest.pub", "10001", "10001", "644"], listing
    # and the agent's state directory on the host (hostPath) is the agent's, 0700
    st = (pods.dir / "host-state").stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (10001, 0o700)


def test_agent_runs_as_10001_without_capabilities_on_a_read_only_root(pods: Pods) -> None:
    status = Path(f"/proc/{pods.agent_pid()}/status").read_text()
    field = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert field["Uid"].split() == ["10001"] * 4
    assert field["Gid"].split() == ["10001"] * 4
    assert set(field["Groups"].split()) == {"4", "43", "10001"}  # supplementalGroups: adm, utmp
    assert int(field["CapEff"], 16) == 0 and int(field["CapPrm"], 16) == 0
    assert field["NoNewPrivs"].strip() == "1"
    (root,) = [line for line in Path(f"/proc/{pods.agent_pid()}/mountinfo").read_text().splitlines() if line.split()[4] == "/"]
    assert "ro" in root.split()[5].split(","), root
    touch = podman("exec", pods.agent, "touch", "/opt/hostmon/x", check=False)
    assert touch.returncode != 0 and "Read-only file system" in touch.stderr, touch.stderr


def test_failed_login_in_the_host_journal_shows_up_in_the_pod(pods: Pods) -> None:
    """A journal file with an sshd failure, written into the host's /var/log/journal/MACHINE-ID, counted by the pod."""
    if JOURNAL_REMOTE is None:
        msg = "systemd-journal-remote not found (apt-get install systemd-journal-remote)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)

    def failures(text: str) -> float:
        return sum(v for lab, v in values(text, "hostmon_auth_failures_total") if lab.get("service") == "sshd")

    # the journal source is up (it read the host's journal through --root) before the line is written
    up = wait_for("journal source up", lambda: [v for lab, v in values(get(f"{pods.agent_url}/metrics"), "hostmon_auth_source_up")
                                                  if lab["source"] == "journal"] == [1])
    assert up
    before = failures(get(f"{pods.agent_url}/metrics"))
    machine_id = Path("/etc/machine-id").read_text().strip()
    jdir = Path("/var/log/journal") / machine_id
    made_dir = not jdir.exists()
    jfile = jdir / f"hostmon-test-{os.getpid()}.journal"
    t = int(time.time() * 1e6)
    entry = (
        f"__REALTIME_TIMESTAMP={t}\n__MONOTONIC_TIMESTAMP={t}\n_BOOT_ID=0123456789abcdef0123456789abcdef\n"
        f"_MACHINE_ID={machine_id}\nSYSLOG_IDENTIFIER=sshd\n_COMM=sshd\n_PID=4242\n_HOSTNAME={socket.gethostname()}\n"
        "MESSAGE=Failed password for root from 198.51.100.77 port 2222 ssh2\n\n"
    )
    try:
        jdir.mkdir(parents=True, exist_ok=True)
        w = subprocess.run([JOURNAL_REMOTE, f"--output={jfile}", "-"], input=entry.encode(), capture_output=True, timeout=30, check=False)
        assert w.returncode == 0, w.stderr
        wait_for("the failed login in the pod's metrics", lambda: failures(get(f"{pods.agent_url}/metrics")) >= before + 1)
    finally:
        jfile.unlink(missing_ok=True)
        if made_dir:
            shutil.rmtree(jdir, ignore_errors=True)


def test_probes_answer(pods: Pods) -> None:
    assert get(f"{pods.agent_url}/healthz").strip() == "ok"
    assert get(f"{pods.agent_url}/readyz").strip() == "ready"
    assert "ok" in get(f"{pods.ingest_url}/healthz")
    wait_for("ingest ready", lambda: get(f"{pods.ingest_url}/readyz"))


def test_agent_ships_to_the_ingest_pod_and_query_reads_it_back(pods: Pods) -> None:
    host_mem = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0]) * 1024

    def query() -> list[dict[str, Any]]:
        out = podman("exec", pods.ingest, "hostmon", "ingest", "query", "--db", "/var/lib/hostmon-ingest/ingest.db",
                     "--tenant", "default", "--name", "node_memory_MemTotal_bytes", "--format", "json", check=False)
        return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]

    rows = wait_for("batches in the ingest", query, timeout=120, every=2)
    assert all(r["value"] == host_mem for r in rows), rows
    assert {r["labels"]["tenant_id"] for r in rows} == {"default"}


def test_down_removes_everything(pods: Pods) -> None:
    """Last in the module: --down leaves no pod, volume or directory (the fixture's own --down then finds nothing)."""
    proc = pods.try_local("--down", timeout=120)
    assert proc.returncode == 0, proc.stderr
    names = podman("pod", "ps", "--format", "{{.Name}}").stdout.split()
    assert not [n for n in names if n.startswith(pods.name)], names
    assert podman("volume", "exists", f"{pods.name}-ingest-data", check=False).returncode != 0
    assert not pods.dir.exists()


def test_try_local_without_podman_says_so(tmp_path: Path) -> None:
    """Where podman is missing the script stops at once with what to install."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("dirname", "bash", "id", "python3"):  # what runs before the podman check
        if (src := shutil.which(tool)) is not None:
            (bindir / tool).symlink_to(src)
    proc = subprocess.run(["bash", str(TRY_LOCAL)], env={"PATH": str(bindir)}, capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 1
    assert "podman not found" in proc.stderr and "apt-get install podman" in proc.stderr, proc.stderr
