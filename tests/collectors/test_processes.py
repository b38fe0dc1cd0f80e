from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import free_port, require_tool
from hostmond.agent.tenancy import Tenancy, TenantRule
from hostmond.collectors import _procfs
from hostmond.collectors.processes import (
    ProcessesCollector,
    ProcessesConfig,
    select_top,
)

from hostmond.api import CollectorContext, Sample

FIX = Path(__file__).parent / "fixtures"
_spec = importlib.util.spec_from_file_location("hostmon_nodeexp", FIX / "nodeexp.py")
nodeexp = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(nodeexp)  # type: ignore[union-attr]

PAGE = _procfs.PAGE_SIZE
HZ = _procfs.USER_HZ
DOCKER_ID = "ab" * 32


def make(proc: str = str(FIX / "proc"), tenancy: Tenancy | None = None, **cfg: object) -> ProcessesCollector:
    ctx = CollectorContext(proc_root=proc, sys_root=str(FIX / "sys"), rootfs="/", tags={"tenant_id": "host-t"}, tenancy=tenancy)
    return ProcessesCollector(ProcessesConfig(**cfg), ctx)


def assert_declared(samples: list[Sample]) -> None:
    specs = {m.name: m for m in ProcessesCollector.metrics}
    for s in samples:
        assert s.name in specs, f"{s.name} not declared"
        assert tuple(s.labels) == specs[s.name].labels, (s.name, s.labels)
        assert s.type == specs[s.name].type


def groups(samples: list[Sample], name: str) -> dict[tuple[str, str], float]:
    return {(s.labels["groupname"], s.labels["tenant_id"]): s.value for s in samples if s.name == name}


def plain(samples: list[Sample]) -> dict[str, float]:
    return {s.name: s.value for s in samples if not s.labels}


def copy_fixture(tmp_path: Path) -> Path:
    dst = tmp_path / "proc"
    shutil.copytree(FIX / "proc", dst)
    return dst


def set_stat(proc: Path, pid: int, comm: str, state: str, utime: int, stime: int, start: int, rss: int = 100) -> None:
    (proc / str(pid)).mkdir(exist_ok=True)
    (proc / str(pid) / "stat").write_text(
        f"{pid} ({comm}) {state} 0 {pid} {pid} 0 -1 4194560 100 0 0 0 {utime} {stime} 0 0 20 0 1 0 {start} 40767488 {rss} 0 0\n"
    )


# --------------------------------------------------------------------------- parser


def test_parse_pid_stat_comm_with_spaces_and_parentheses() -> None:
    data = b"4242 (evil) S (x) R 1 4242 4242 0 -1 4194560 100 0 0 0 1234 567 0 0 20 0 7 0 99999 40767488 321 184467\n"
    comm, state, utime, stime, threads, start, rss = _procfs.parse_pid_stat(data)
    assert comm == b"evil) S (x" and state == b"R"
    assert (utime, stime, threads, start, rss) == (1234, 567, 7, 99999, 321)
    with pytest.raises(ValueError):
        _procfs.parse_pid_stat(b"12 no comm here")
    with pytest.raises(ValueError):
        _procfs.parse_pid_stat(b"12 (x) S 1 2 3\n")


def test_parse_pid_stat_of_this_process() -> None:
    comm, state, *_rest = _procfs.parse_pid_stat(Path(f"/proc/{os.getpid()}/stat").read_bytes())
    assert comm == Path(f"/proc/{os.getpid()}/comm").read_bytes().strip()
    assert state == b"R"


# --------------------------------------------------------------------------- fixture tree


def test_fixture_tree_exact_values_without_tenant_rules() -> None:
    c = make()
    out = list(c.collect())
    assert_declared(out)
    assert {s.labels["state"]: s.value for s in out if s.name == "node_processes_state"} == {
        "S": 5, "R": 1, "D": 1, "I": 1, "Z": 1}
    p = plain(out)
    assert p["node_processes_threads"] == 11 and p["node_processes_pids"] == 9
    assert p["node_processes_max_processes"] == 32768 and p["node_processes_max_threads"] == 192729
    assert p["hostmon_process_groups"] == 7 and p["hostmon_process_permission_errors_total"] == 0
    cpu = groups(out, "hostmon_process_group_cpu_seconds_total")
    assert cpu[("nginx", "host-t")] == pytest.approx((1000 + 500 + 300 + 200) / HZ)
    assert cpu[("tmux: server", "host-t")] == pytest.approx(10 / HZ)
    assert cpu[("(sd-pam)", "host-t")] == 0
    assert groups(out, "hostmon_process_group_resident_memory_bytes")[("postgres", "host-t")] == 25000 * PAGE
    fds = groups(out, "hostmon_process_group_open_fds")
    assert fds[("nginx", "host-t")] == 10 and fds[("systemd", "host-t")] == 3 and fds[("zombie", "host-t")] == 0
    assert groups(out, "hostmon_process_group_processes") == {
        ("systemd", "host-t"): 1, ("nginx", "host-t"): 2, ("postgres", "host-t"): 2, ("tmux: server", "host-t"): 1,
        ("(sd-pam)", "host-t"): 1, ("kworker/0:1-events", "host-t"): 1, ("zombie", "host-t"): 1,
    }  # nothing folded: no "other" series yet
    assert c.take_partial_errors() == {}


def test_only_top_n_by_cpu_and_by_memory_get_series_the_rest_fold_into_other() -> None:
    out = list(make(top_n=1).collect())
    count = groups(out, "hostmon_process_group_processes")
    # top 1 by CPU: nginx (20 s); top 1 by RSS: postgres (25000 pages); everything else is "other"
    assert count == {("nginx", "host-t"): 2, ("postgres", "host-t"): 2, ("other", "host-t"): 5}
    assert groups(out, "hostmon_process_group_resident_memory_bytes")[("other", "host-t")] == (3081 + 800 + 300) * PAGE
    assert groups(out, "hostmon_process_group_open_fds")[("other", "host-t")] == 3 + 2 + 1
    assert groups(out, "hostmon_process_group_cpu_seconds_total")[("other", "host-t")] == pytest.approx((382 + 10 + 2 + 2) / HZ)


def test_select_top_is_a_union_and_never_picks_a_group_named_other() -> None:
    g = {("a", "t"): [1, 10, 0, 5], ("b", "t"): [1, 99, 0, 0], ("other", "t"): [1, 1000, 0, 1000], ("c", "t"): [1, 1, 0, 0]}
    assert select_top(g, 1) == {("a", "t"), ("b", "t")}
    assert select_top(g, 0) == set()
    assert select_top(g, 5) == {("a", "t"), ("b", "t"), ("c", "t")}


def test_names_that_decode_alike_are_one_group_not_duplicate_series(tmp_path: Path) -> None:
    proc = copy_fixture(tmp_path)
    (proc / "50").mkdir()
    (proc / "50" / "stat").write_bytes(b"50 (x\xff) S 0 50 50 0 -1 4194560 100 0 0 0 7 0 0 0 20 0 1 0 6000 4 10 0 0\n")
    (proc / "51").mkdir()
    (proc / "51" / "stat").write_bytes(b"51 (x\xfe) S 0 51 51 0 -1 4194560 100 0 0 0 3 0 0 0 20 0 1 0 6001 4 10 0 0\n")
    out = list(make(str(proc), top_n=100).collect())
    keys = [(s.labels["groupname"], s.labels["tenant_id"]) for s in out if s.name == "hostmon_process_group_processes"]
    assert len(keys) == len(set(keys))
    assert groups(out, "hostmon_process_group_processes")[("x\ufffd", "host-t")] == 2
    assert groups(out, "hostmon_process_group_cpu_seconds_total")[("x\ufffd", "host-t")] == pytest.approx(10 / HZ)


def test_tenant_rules_put_each_group_under_its_owner() -> None:
    uid = os.stat(FIX / "proc" / "1").st_uid
    ten = Tenancy(
        [
            TenantRule(tenant_id="web", container_id_regex="^ab"),
            TenantRule(tenant_id="db", cgroup_regex=r"^/kubepods\.slice/"),
            TenantRule(tenant_id="users", cgroup_regex=r"^/user\.slice/", users=[str(uid)]),
        ],
        "host-t",
    )
    out = list(make(tenancy=ten).collect())
    assert_declared(out)
    count = groups(out, "hostmon_process_group_processes")
    assert count[("nginx", "web")] == 2
    assert count[("postgres", "db")] == 2
    assert count[("tmux: server", "users")] == 1 and count[("(sd-pam)", "users")] == 1
    assert count[("systemd", "host-t")] == 1
    assert not [k for k in count if k[0] == "nginx" and k[1] != "web"]


def test_cpu_counter_stays_monotonic_when_processes_exit_and_pids_are_reused(tmp_path: Path) -> None:
    proc = copy_fixture(tmp_path)
    c = make(str(proc))
    first = groups(list(c.collect()), "hostmon_process_group_cpu_seconds_total")
    assert first[("nginx", "host-t")] == pytest.approx(2000 / HZ)
    # pid 12 used 100 more ticks; pid 13 exited (its 500 ticks must not be taken back)
    set_stat(proc, 12, "nginx", "S", 1100, 500, 2000)
    shutil.rmtree(proc / "13")
    # pid 20 was reused by a new postgres (different start time) that used 30 ticks so far
    set_stat(proc, 20, "postgres", "S", 20, 10, 9999, rss=10)
    second = groups(list(c.collect()), "hostmon_process_group_cpu_seconds_total")
    assert second[("nginx", "host-t")] == pytest.approx(2100 / HZ)
    assert second[("postgres", "host-t")] == pytest.approx((110 + 30) / HZ)
    # a group with no live process is forgotten (its series stops; no one series per PID ever)
    shutil.rmtree(proc / "12")
    third = groups(list(c.collect()), "hostmon_process_group_cpu_seconds_total")
    assert ("nginx", "host-t") not in third


def test_other_counter_never_goes_down_when_groups_move_in_and_out(tmp_path: Path) -> None:
    proc = copy_fixture(tmp_path)
    c = make(str(proc), top_n=1)
    o1 = groups(list(c.collect()), "hostmon_process_group_cpu_seconds_total")[("other", "host-t")]
    # systemd (in "other") becomes the top CPU user: it leaves "other", which must not drop
    set_stat(proc, 1, "systemd", "S", 140 + 5000, 242, 14, rss=3081)
    out = list(c.collect())
    cpu = groups(out, "hostmon_process_group_cpu_seconds_total")
    assert ("systemd", "host-t") in cpu
    assert cpu[("systemd", "host-t")] == pytest.approx((382 + 5000) / HZ)
    assert cpu[("other", "host-t")] >= o1


def test_vanished_process_is_not_an_error_and_malformed_stat_is(tmp_path: Path) -> None:
    proc = copy_fixture(tmp_path)
    (proc / "777").mkdir()  # listed, but gone before its stat could be read
    (proc / "778").mkdir()
    (proc / "778" / "stat").write_text("garbage\n")
    c = make(str(proc))
    out = list(c.collect())
    assert plain(out)["node_processes_pids"] == 9
    assert c.take_partial_errors() == {"pid_stat_malformed": 1}


def test_open_fds_can_be_switched_off() -> None:
    out = list(make(open_fds=False).collect())
    assert not [s for s in out if s.name == "hostmon_process_group_open_fds"]


# --------------------------------------------------------------------------- real /proc


def test_real_proc_smoke_groups_spawned_children() -> None:
    kids = [subprocess.Popen(["sleep", "600"]) for _ in range(5)]
    try:
        c = ProcessesCollector(ProcessesConfig(top_n=1000), CollectorContext(tags={"tenant_id": "me"}))
        out = list(c.collect())
        assert_declared(out)
        count = groups(out, "hostmon_process_group_processes")
        assert count[("sleep", "me")] >= 5
        me = Path(f"/proc/{os.getpid()}/comm").read_text().strip()
        assert count[(me, "me")] >= 1
        assert groups(out, "hostmon_process_group_open_fds")[(me, "me")] >= 3
        assert groups(out, "hostmon_process_group_resident_memory_bytes")[(me, "me")] > 1e6
        p = plain(out)
        assert p["node_processes_pids"] >= 6 and p["node_processes_threads"] >= p["node_processes_pids"]
        assert c.take_partial_errors() == {}
        # With the default top 20, the number of group series is bounded whatever the process count.
        out = list(ProcessesCollector(ProcessesConfig(), CollectorContext()).collect())
        assert len(groups(out, "hostmon_process_group_processes")) <= 2 * 20 + 1
    finally:
        for k in kids:
            k.send_signal(signal.SIGKILL)
            k.wait()


def test_real_proc_kept_files_follow_processes_and_are_bounded(tmp_path: Path) -> None:
    """On the real /proc the collector keeps each process's stat file and fd directory open between
    collections. What it reports must equal what a collector that opens everything afresh reports;
    a process that exits gives its files back; stop() closes them all; the count stays under the limit."""
    import resource

    sleeper = tmp_path / "hmkeptsleep"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", sleeper)
    mine = lambda: len(os.listdir(f"/proc/{os.getpid()}/fd"))
    before = mine()
    c = ProcessesCollector(ProcessesConfig(top_n=1000), CollectorContext(tags={"tenant_id": "me"}))
    c.start()
    assert c._max_kept > 0
    kids = [subprocess.Popen([str(sleeper), "600"]) for _ in range(3)]
    try:
        list(c.collect())  # opens and keeps
        assert all(k.pid in c._kept for k in kids)
        kept_out = list(c.collect())  # reads through the kept files
        fresh_out = list(ProcessesCollector(ProcessesConfig(top_n=1000), CollectorContext(tags={"tenant_id": "me"})).collect())
        for name in ("hostmon_process_group_processes", "hostmon_process_group_open_fds"):
            assert groups(kept_out, name)[("hmkeptsleep", "me")] == groups(fresh_out, name)[("hmkeptsleep", "me")]
        assert groups(kept_out, "hostmon_process_group_processes")[("hmkeptsleep", "me")] == 3
        assert groups(kept_out, "hostmon_process_group_open_fds")[("hmkeptsleep", "me")] >= 3 * 3
        assert c._nkept == sum(1 for fds in c._kept.values() for fd in fds if fd >= 0) <= c._max_kept

        for k in kids:
            k.send_signal(signal.SIGKILL)
            k.wait()
        gone = [k.pid for k in kids]
        kids = [subprocess.Popen([str(sleeper), "600"]) for _ in range(2)]
        out = list(c.collect())
        assert groups(out, "hostmon_process_group_processes")[("hmkeptsleep", "me")] == 2
        assert not any(pid in c._kept for pid in gone)
        assert c.take_partial_errors() == {}
    finally:
        for k in kids:
            k.send_signal(signal.SIGKILL)
            k.wait()
    c.stop()
    assert c._kept == {} and c._nkept == 0
    assert mine() == before

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = max(256, before + 64)  # room for what this test process has open already
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
    try:
        small = ProcessesCollector(ProcessesConfig(), CollectorContext())
        small.start()
        assert small._max_kept == low // 8
        list(small.collect())
        list(small.collect())
        assert 0 < small._nkept <= low // 8
        # a kept process that is gone (not in /proc any more) gives its file back, even when
        # most processes are not kept (the clean-up once compared counts and missed this case)
        dead = os.open(f"/proc/{os.getpid()}/stat", os.O_RDONLY)
        small._kept[2**31 + 7] = [dead, -1]
        small._nkept += 1
        list(small.collect())
        assert 2**31 + 7 not in small._kept
        with pytest.raises(OSError):
            os.fstat(dead)  # closed
        assert small._nkept == sum(1 for fds in small._kept.values() for fd in fds if fd >= 0)
        small.stop()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert mine() == before


def test_real_proc_tenant_by_uid_of_another_user() -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to start a process as another user")

    def as_nobody() -> None:
        os.setgid(65534)
        os.setuid(65534)

    kids = [subprocess.Popen(["sleep", "600"], preexec_fn=as_nobody) for _ in range(3)]  # noqa: PLW1509
    try:
        ten = Tenancy([TenantRule(tenant_id="nobody-t", users=["65534"])], "me")
        c = ProcessesCollector(ProcessesConfig(top_n=1000), CollectorContext(tags={"tenant_id": "me"}, tenancy=ten))
        for _ in range(2):  # the second run takes the tenant from the per-PID cache
            count = groups(list(c.collect()), "hostmon_process_group_processes")
            assert count[("sleep", "nobody-t")] >= 3
            me = Path(f"/proc/{os.getpid()}/comm").read_text().strip()
            assert count[(me, "me")] >= 1
    finally:
        for k in kids:
            k.send_signal(signal.SIGKILL)
            k.wait()


_PERM_CHILD = textwrap.dedent(
    """
    import json, logging, os, sys
    from hostmond.api import CollectorContext
    from hostmond.collectors.processes import ProcessesCollector, ProcessesConfig
    if os.getuid() == 0:  # after the imports: the interpreter's files may not be readable by nobody
        os.setgid(65534); os.setuid(65534)
    records = []
    class H(logging.Handler):
        def emit(self, r): records.append(r.getMessage())
    logging.getLogger().addHandler(H()); logging.getLogger().setLevel(logging.DEBUG)
    c = ProcessesCollector(ProcessesConfig(), CollectorContext())
    # Linux >= 6.2 lets anyone count another user's fds with stat(); listing them needs permission.
    # Take the listing path (as on older kernels) so the kernel's own EACCES is exercised.
    c._fd_size_ok = False
    out = list(c.collect())
    perm = [s.value for s in out if s.name == "hostmon_process_permission_errors_total"][0]
    print(json.dumps({"uid": os.getuid(), "perm": perm, "log_lines": len(records), "partial": c.take_partial_errors()}))
    """
)


def test_permission_errors_on_other_users_processes_are_counted_not_logged() -> None:
    # Run as "nobody" (or as the current non-root user) against the real /proc, where
    # pid 1 and the processes of other users cannot have their fd directory listed.
    if os.getuid() != 0:
        owners = set()
        for e in os.listdir("/proc"):
            if e.isdigit():
                try:
                    owners.add(os.stat(f"/proc/{e}").st_uid)
                except OSError:
                    pass
        if owners <= {os.getuid()}:
            pytest.skip("not root and every process here is our own: no other user's process to be refused")
    r = subprocess.run([sys.executable, "-c", _PERM_CHILD], capture_output=True, text=True, timeout=60, cwd="/", check=False)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["uid"] != 0
    assert res["perm"] >= 1
    assert res["log_lines"] == 0
    assert res["partial"] == {}


def test_same_series_as_node_exporter_on_the_fixture_tree() -> None:
    binary = require_tool("prometheus-node-exporter")
    theirs = nodeexp.scrape(binary, str(FIX / "proc"), str(FIX / "sys"), ["processes"], free_port())
    out = list(make().collect())
    assert len([k for k in theirs if k[0] == "node_processes_state"]) == 5
    names = {s.name for s in out if s.name.startswith("node_")}
    assert nodeexp.compare(nodeexp.ours(out), theirs, names) == []


def test_thread_states_are_opt_in_and_count_every_thread(tmp_path: Path) -> None:
    from hostmond.collectors.processes import (
        ProcessesConfig,
        thread_state_of,
        thread_states,
    )

    assert ProcessesConfig().thread_states is False
    assert thread_state_of(b"42 (a) b) S 1 2") == "S" and thread_state_of(b"garbage") is None
    for pid, tids in (("1", {"1": "S", "7": "R"}), ("2", {"2": "D"})):
        for tid, st in tids.items():
            d = tmp_path / pid / "task" / tid
            d.mkdir(parents=True)
            (d / "stat").write_bytes(f"{tid} (w (x)) {st} 1 1 1".encode())
    (tmp_path / "3").mkdir()  # exited meanwhile: no task directory
    assert thread_states(str(tmp_path)) == {"S": 1, "R": 1, "D": 1}
    live = thread_states("/proc")
    assert sum(live.values()) >= 1 and set(live) <= set("RSDZTtWXxKPI")


def _kernel_threads() -> set[int]:
    out = set()
    for e in os.listdir("/proc"):
        if e.isdigit():
            try:
                data = Path(f"/proc/{e}/stat").read_bytes()
            except OSError:
                continue
            if int(data[data.rfind(b")") + 2 :].split()[6]) & 0x00200000:
                out.add(int(e))
    return out


_KTHREAD_CHILD = textwrap.dedent(
    """
    import json, os
    from hostmond.collectors.processes import ProcessesCollector, ProcessesConfig
    from hostmond.api import CollectorContext
    if os.getuid() == 0:
        os.setgroups([]); os.setgid(65534); os.setuid(65534)
    listed = []
    real = os.listdir
    def counting(path="."):
        if str(path).endswith("/fd"):
            listed.append(int(str(path).split("/")[-2]))
        return real(path)
    os.listdir = counting
    c = ProcessesCollector(ProcessesConfig(), CollectorContext())
    def perm(samples):
        return next(s.value for s in samples if s.name == "hostmon_process_permission_errors_total")
    for attempt in range(5):  # other processes of the host come and go: equal in one of a few tries
        p = [perm(list(c.collect())) for _ in range(3)]  # probe, then fill the kernel-thread memo
        del listed[:]
        p.append(perm(list(c.collect())))  # from the memo
        with_memo = list(listed)
        c._kthreads = {}
        p.append(perm(list(c.collect())))  # listed again, as before the memo
        if p[3] - p[2] == p[4] - p[3]:
            break
    print(json.dumps({"uid": os.getuid(), "perm": p, "listed_with_memo": with_memo, "memo": sorted(c._kthreads)}))
    """
)


@pytest.mark.parametrize("as_nobody", [False, True])
def test_kernel_threads_fd_directories_are_listed_once_with_the_same_counts(as_nobody: bool) -> None:
    """Kernel threads have no fd table for life: the result of listing their fd directory
    (0 fds; permission denied for a non-root agent) is remembered per PID and start time,
    and the permission counter moves exactly as when it is listed every cycle."""
    kthreads = _kernel_threads()
    if len(kthreads) < 2:
        pytest.skip("no kernel threads visible here (a PID namespace)")
    if as_nobody and os.getuid() != 0:
        pytest.skip("needs root to become nobody")
    code = _KTHREAD_CHILD if as_nobody else _KTHREAD_CHILD.replace("if os.getuid() == 0:", "if False:")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd="/", check=False)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    memo = {int(p) for p in res["memo"]}
    assert len(memo & kthreads) >= 2 and memo <= _kernel_threads() | (memo - kthreads)
    assert not set(res["listed_with_memo"]) & memo  # remembered kernel threads were not listed again
    p = res["perm"]
    if res["uid"] == 0:
        assert p == [0, 0, 0, 0, 0]
    else:
        # each cycle counts the refused kernel threads, with the memo as without it
        assert p[3] - p[2] == p[4] - p[3] >= len(memo & kthreads) - 2 > 0
