from __future__ import annotations

import importlib.util
import shutil
import socket
from pathlib import Path

import pytest
from helpers import free_port, require_tool
from hostmond.collectors import _procfs
from hostmond.collectors.network import NetworkCollector, NetworkConfig

from hostmond.api import CollectorContext, Sample

FIX = Path(__file__).parent / "fixtures"
_spec = importlib.util.spec_from_file_location("hostmon_nodeexp", FIX / "nodeexp.py")
nodeexp = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(nodeexp)  # type: ignore[union-attr]


def run(proc: str = str(FIX / "proc"), sys_: str = str(FIX / "sys"), **cfg: object) -> tuple[list[Sample], NetworkCollector]:
    cfg.setdefault("tcp_states", True)  # opt-in (node_exporter's tcpstat); most tests here read them
    c = NetworkCollector(NetworkConfig(**cfg), CollectorContext(proc_root=proc, sys_root=sys_, rootfs="/"))
    return list(c.collect()), c


def assert_declared(samples: list[Sample]) -> None:
    specs = {m.name: m for m in NetworkCollector.metrics}
    for s in samples:
        assert s.name in specs, f"{s.name} not declared"
        assert tuple(s.labels) == specs[s.name].labels, (s.name, s.labels)
        assert s.type == specs[s.name].type


def by(samples: list[Sample], name: str, key: str = "device") -> dict[str, float]:
    return {s.labels[key]: s.value for s in samples if s.name == name}


NET_DEV = """Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    3293      31    0    0    0     0          0         0     3293      31    0    0    0     0       0          0
  eth0: 54225769    1765    2    3    4     5          6         7   102364    1168    8    9   10    11      12         13
"""


def test_parse_net_dev() -> None:
    d = _procfs.parse_net_dev(NET_DEV)
    assert sorted(d) == ["eth0", "lo"]
    assert d["eth0"]["receive_bytes"] == 54225769 and d["eth0"]["receive_multicast"] == 7
    assert d["eth0"]["transmit_bytes"] == 102364 and d["eth0"]["transmit_compressed"] == 13
    with pytest.raises(ValueError):
        _procfs.parse_net_dev(NET_DEV + "  bad0: 1 2 3\n")


def test_count_tcp_states_reads_the_hex_state_column() -> None:
    text = (FIX / "proc" / "net" / "tcp").read_text()
    c = _procfs.count_tcp_states(text)
    assert c["listen"] == 2 and c["established"] == 2 and c["time_wait"] == 1 and c["close_wait"] == 1
    assert c["syn_sent"] == 0 and len(c) == 11
    # NEW_SYN_RECV (0C) is a kernel-internal state: not counted
    c6 = _procfs.count_tcp_states((FIX / "proc" / "net" / "tcp6").read_text(), dict(c))
    assert c6["listen"] == 3 and c6["established"] == 3 and sum(c6.values()) == sum(c.values()) + 2


def test_fixture_tree_exact_values() -> None:
    out, c = run()
    assert_declared(out)
    # lo is left out of the traffic counters (Debian node_exporter's default), not out of the attributes
    assert by(out, "node_network_receive_bytes_total") == {"eth0": 54225769, "ifb0": 0, "veth1a2b": 100}
    assert by(out, "node_network_transmit_bytes_total")["eth0"] == 102364
    assert by(out, "node_network_receive_packets_total")["eth0"] == 1765
    assert by(out, "node_network_transmit_packets_total")["eth0"] == 1168
    assert by(out, "node_network_receive_errs_total")["eth0"] == 2
    assert by(out, "node_network_receive_drop_total")["eth0"] == 3
    assert by(out, "node_network_transmit_errs_total")["eth0"] == 8
    assert by(out, "node_network_transmit_drop_total")["eth0"] == 9
    assert by(out, "node_network_transmit_colls_total")["eth0"] == 11
    assert by(out, "node_network_up") == {"lo": 0, "eth0": 1, "ifb0": 0, "veth1a2b": 0}
    # ifb0 is down: its carrier read fails (EINVAL on a real kernel) -> no carrier series, no error
    assert by(out, "node_network_carrier") == {"lo": 1, "eth0": 1, "veth1a2b": 0}
    tcp = by(out, "node_tcp_connection_states", "state")
    assert tcp["listen"] == 3 and tcp["established"] == 3 and tcp["time_wait"] == 1 and tcp["close_wait"] == 1
    assert tcp["closing"] == 0 and len(tcp) == 11
    # netclass: every interface's sysfs attributes, node_exporter's conversions
    assert by(out, "node_network_mtu_bytes") == {"eth0": 1400, "lo": 65536, "veth1a2b": 1500}
    assert by(out, "node_network_flags") == {"eth0": 0x1003, "lo": 9}  # hexadecimal in sysfs
    assert by(out, "node_network_speed_bytes") == {"eth0": 1_250_000_000, "veth1a2b": -125000}  # Mb/s -> bytes/s
    assert by(out, "node_network_receive_nohandler_total") == {"eth0": 7}
    info = {s.labels["device"]: s.labels for s in out if s.name == "node_network_info"}
    assert info["eth0"] == {"device": "eth0", "address": "02:fc:00:00:00:01", "broadcast": "ff:ff:ff:ff:ff:ff",
                            "duplex": "full", "operstate": "up", "ifalias": "uplink to rack 4"}
    assert info["ifb0"]["duplex"] == "" and info["ifb0"]["operstate"] == "down"
    assert c.take_partial_errors() == {}


def test_netclass_values_converts_like_node_exporter() -> None:
    from hostmond.collectors.network import netclass_values, parse_sysfs_int

    assert parse_sysfs_int("0x1003\n") == 4099 and parse_sysfs_int("-1") == -1 and parse_sysfs_int("010") == 10
    info, vals = netclass_values({"operstate": "up\n", "speed": "100\n", "carrier": "1\n", "mtu": "bogus"})
    assert info == {"address": "", "broadcast": "", "duplex": "", "operstate": "up", "ifalias": ""}
    assert vals == {"node_network_up": 1.0, "node_network_speed_bytes": 12_500_000.0, "node_network_carrier": 1.0}


def test_device_exclude() -> None:
    out, _ = run(device_exclude="^(veth|lo$)")
    assert sorted(by(out, "node_network_receive_bytes_total")) == ["eth0", "ifb0"]
    # the sysfs attributes have their own filter, as node_exporter's netclass
    assert sorted(by(out, "node_network_up")) == ["eth0", "ifb0", "lo", "veth1a2b"]
    out, _ = run(device_exclude="", netclass_ignored_devices="^veth")
    assert sorted(by(out, "node_network_receive_bytes_total")) == ["eth0", "ifb0", "lo", "veth1a2b"]
    assert sorted(by(out, "node_network_up")) == ["eth0", "ifb0", "lo"]


def test_tcp_states_are_off_by_default() -> None:
    c = NetworkCollector(NetworkConfig(), CollectorContext(proc_root=str(FIX / "proc"), sys_root=str(FIX / "sys"), rootfs="/"))
    out = list(c.collect())
    assert not [s for s in out if s.name == "node_tcp_connection_states"]
    assert by(out, "node_network_receive_bytes_total")["eth0"] == 54225769


def test_no_sysfs_and_no_ipv6_still_reports_counters(tmp_path: Path) -> None:
    (tmp_path / "proc" / "net").mkdir(parents=True)
    shutil.copy(FIX / "proc" / "net" / "dev", tmp_path / "proc" / "net" / "dev")
    shutil.copy(FIX / "proc" / "net" / "tcp", tmp_path / "proc" / "net" / "tcp")
    out, c = run(str(tmp_path / "proc"), str(tmp_path / "sys"))
    assert by(out, "node_network_receive_bytes_total")["eth0"] == 54225769
    assert by(out, "node_network_up") == {}
    assert by(out, "node_tcp_connection_states", "state")["listen"] == 2
    assert c.take_partial_errors() == {}


def test_real_proc_smoke_sees_a_listening_socket_it_opened() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        out, c = run("/proc", "/sys")
    assert_declared(out)
    assert by(out, "node_tcp_connection_states", "state")["listen"] >= 1
    assert "lo" not in by(out, "node_network_receive_bytes_total")
    assert by(out, "node_network_mtu_bytes")["lo"] >= 1500
    # node_exporter's netclass reports an unknown speed (-1 Mb/s) as is: -125000 bytes/s
    assert all(s.value >= 0 or s.name == "node_network_speed_bytes" for s in out)
    assert c.take_partial_errors() == {}


def test_same_series_as_node_exporter_on_the_fixture_tree() -> None:
    binary = require_tool("prometheus-node-exporter")
    theirs = nodeexp.scrape(binary, str(FIX / "proc"), str(FIX / "sys"), ["netdev", "netclass"], free_port())
    out, _ = run(device_exclude="")  # nodeexp.FLAGS gives node_exporter upstream's "^$"
    assert len([k for k in theirs if k[0] == "node_network_receive_bytes_total"]) == 4
    # node_exporter 1.5's tcpstat uses netlink only; rx_nohandler it reads over netlink only (not from a fixture)
    names = {s.name for s in out} - {"node_tcp_connection_states", "node_network_receive_nohandler_total"}
    assert {"node_network_info", "node_network_mtu_bytes", "node_network_speed_bytes", "node_network_flags"} <= names
    assert nodeexp.compare(nodeexp.ours(out), theirs, names) == []


# --------------------------------------------------------------------------- sock_diag netlink


def _nlmsg(typ: int, payload: bytes) -> bytes:
    import struct

    msg = struct.pack("=IHHII", 16 + len(payload), typ, 2, 1, 0) + payload
    return msg + b"\0" * (-len(msg) % 4)


def _diag_msg(family: int, state: int) -> bytes:
    import struct

    # struct inet_diag_msg: family, state, timer, retrans, sockid (48 bytes), expires, rqueue, wqueue, uid, inode
    return struct.pack("=BBBB", family, state, 0, 0) + b"\0" * 48 + struct.pack("=IIIII", 0, 0, 0, 1000, 4242)


def test_count_inet_diag_states_parses_a_dump() -> None:
    counts: dict[str, int] = {}
    part1 = _nlmsg(20, _diag_msg(2, 10)) + _nlmsg(20, _diag_msg(10, 1)) + _nlmsg(20, _diag_msg(2, 6))
    assert _procfs.count_inet_diag_states(part1, counts) is False
    assert counts == {"listen": 1, "established": 1, "time_wait": 1}
    assert _procfs.count_inet_diag_states(_nlmsg(20, _diag_msg(2, 1)) + _nlmsg(3, b"\0\0\0\0"), counts) is True
    assert counts["established"] == 2


def test_count_inet_diag_states_counts_runs_of_records_like_one_by_one() -> None:
    """Runs of same-sized records are counted from one strided slice; mixed sizes, a record with
    extensions in the middle, states outside the table and NLMSG_DONE at the end give the same
    counts as reading the records one by one."""
    import random
    import struct

    def one_by_one(data: bytes) -> tuple[dict[str, int], bool]:
        counts: dict[str, int] = {}
        off = 0
        while off + 16 <= len(data):
            length, typ = struct.unpack_from("=IH", data, off)
            if typ == 3:
                return counts, True
            name = _procfs.TCP_STATES.get(data[off + 17])
            if name is not None:
                counts[name] = counts.get(name, 0) + 1
            off += (length + 3) & ~3
        return counts, False

    r = random.Random(7)
    for trial in range(200):
        parts = []
        for _ in range(r.randint(0, 80)):
            extra = b"\0" * r.choice((0, 0, 0, 0, 8, 5)) if trial % 2 else b""
            parts.append(_nlmsg(20, _diag_msg(r.choice((2, 10)), r.randint(0, 13)) + extra))
        if r.random() < 0.5:
            parts.append(_nlmsg(3, b"\0\0\0\0"))
        data = b"".join(parts)
        counts: dict[str, int] = {}
        done = _procfs.count_inet_diag_states(data, counts)
        assert (counts, done) == one_by_one(data), trial


def test_count_inet_diag_states_raises_the_kernel_error() -> None:
    import errno
    import struct

    with pytest.raises(OSError) as e:
        _procfs.count_inet_diag_states(_nlmsg(2, struct.pack("=i", -errno.EPERM) + b"\0" * 16), {})
    assert e.value.errno == errno.EPERM


def test_request_is_a_v1_dump_of_every_state() -> None:
    import struct

    req = _procfs.inet_diag_tcp_request()
    length, typ, flags = struct.unpack_from("=IHH", req)
    assert length == len(req) == 16 + 60 and typ == 18 and flags == 0x301
    assert struct.unpack_from("=I", req, 16 + 52)[0] == 0xFFF


def test_auto_source_uses_netlink_only_on_a_real_procfs() -> None:
    from hostmond.collectors.network import is_procfs

    assert is_procfs("/proc")
    assert not is_procfs(str(FIX / "proc"))
    mounts = "proc /host/proc proc rw,nosuid 0 0\n/dev/vda / ext4 rw 0 0\n"
    assert is_procfs("/host/proc", mounts) and not is_procfs("/host", mounts)


def test_netlink_and_proc_files_agree_on_real_listening_sockets() -> None:
    from hostmond.collectors.network import tcp_states_netlink

    socks = []
    try:
        for fam, addr in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            s = socket.socket(fam)
            s.bind((addr, 0))
            s.listen()
            socks.append(s)
        nl = tcp_states_netlink()
        files = _procfs.count_tcp_states((Path("/proc/net/tcp")).read_text())
        files = _procfs.count_tcp_states((Path("/proc/net/tcp6")).read_text(), files)
        assert nl["listen"] >= 2
        assert nl["listen"] == files["listen"]  # listening sockets do not come and go during the test
        out, c = run("/proc", "/sys")
        assert c._netlink
        assert by(out, "node_tcp_connection_states", "state")["listen"] == nl["listen"]
    finally:
        for s in socks:
            s.close()


def test_netlink_failure_falls_back_to_the_files(monkeypatch: pytest.MonkeyPatch) -> None:
    # A seccomp profile that forbids AF_NETLINK cannot be set up from a test: the failure is injected.
    from hostmond.collectors import network

    def denied() -> dict[str, int]:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(network, "tcp_states_netlink", denied)
    out, c = run(str(FIX / "proc"), tcp_source="netlink")
    assert by(out, "node_tcp_connection_states", "state")["listen"] == 3  # the fixture files
    assert c.take_partial_errors() == {"tcp_netlink_failed": 1}
    assert not c._netlink


def test_config_rejects_unknown_tcp_source_and_bad_regex() -> None:
    from hostmond.agent.config import load_dataclass

    from hostmond.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"collectors.network.tcp_source: must be one of auto, netlink, proc"):
        load_dataclass({"tcp_source": "ss"}, NetworkConfig, "f.toml", "collectors.network")
    with pytest.raises(ConfigError, match=r"collectors.network.device_exclude: .* not a valid regular expression"):
        load_dataclass({"device_exclude": "("}, NetworkConfig, "f.toml", "collectors.network")


def _samples(samples: list[Sample]) -> list[tuple[str, tuple[tuple[str, str], ...], float]]:
    return sorted((s.name, tuple(sorted(s.labels.items())), s.value) for s in samples if s.name != "node_tcp_connection_states")


def _open_fds() -> int:
    return len(list(Path("/proc/self/fd").iterdir()))


def test_kept_attribute_files_show_new_values_and_follow_a_recreated_interface(tmp_path: Path) -> None:
    """Attribute files stay open and are re-read from offset 0: a changed value is seen; an
    interface re-created under the same name (new ifindex) is read from its new files; a
    removed interface's files are closed, and stop() closes the rest."""
    shutil.copytree(FIX / "sys", tmp_path / "sys")
    eth0 = tmp_path / "sys" / "class" / "net" / "eth0"
    base_fds = _open_fds()
    c = NetworkCollector(NetworkConfig(), CollectorContext(proc_root=str(FIX / "proc"), sys_root=str(tmp_path / "sys"), rootfs="/"))
    out = list(c.collect())
    assert by(out, "node_network_mtu_bytes")["eth0"] == 1400
    assert c._nkept > 0 and _open_fds() == base_fds + c._nkept
    (eth0 / "mtu").write_text("9000\n")  # same file, new content
    (eth0 / "statistics" / "rx_nohandler").write_text("77\n")
    out = list(c.collect())
    assert by(out, "node_network_mtu_bytes")["eth0"] == 9000
    assert by(out, "node_network_receive_nohandler_total")["eth0"] == 77
    # re-created: new files (new inodes) and a new ifindex; the kept ones would still show 9000
    shutil.rmtree(eth0)
    shutil.copytree(FIX / "sys" / "class" / "net" / "eth0", eth0)
    (eth0 / "ifindex").write_text("42\n")
    out = list(c.collect())
    assert by(out, "node_network_mtu_bytes")["eth0"] == 1400 and by(out, "node_network_iface_id")["eth0"] == 42
    shutil.rmtree(eth0)
    before = c._nkept
    out = list(c.collect())
    assert "eth0" not in by(out, "node_network_mtu_bytes") and c._nkept < before
    assert _open_fds() == base_fds + c._nkept
    c.stop()
    assert c._nkept == 0 and _open_fds() == base_fds
    assert c.take_partial_errors() == {}


def test_kept_files_are_bounded_and_give_the_same_series_as_reading_by_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """On the real /sys: with no file kept, a few kept, or all kept, the same series and values
    (counters excepted, they move)."""
    from hostmond.collectors import network

    def series(limit: int) -> tuple[list[tuple[str, tuple[tuple[str, str], ...], float]], int]:
        monkeypatch.setattr(network, "MAX_KEPT_FDS", limit)
        c = NetworkCollector(NetworkConfig(tcp_states=False), CollectorContext())
        list(c.collect())
        out = [x for x in _samples(list(c.collect())) if not x[0].endswith("_total")]
        n = c._nkept
        c.stop()
        return out, n

    by_path, n0 = series(0)
    some, n5 = series(5)
    kept, n_all = series(256)
    assert n0 == 0 and n5 == 5 and n_all > 5
    assert by_path == some == kept
    assert any(name == "node_network_mtu_bytes" for name, _, _ in kept)


def test_files_kept_open_fit_in_what_the_listeners_leave_under_a_low_descriptor_limit() -> None:
    """The HTTP listeners take 3/4 of RLIMIT_NOFILE for connections; the kept attribute files must
    fit in the rest: at most 1/16 of the soft limit (with 256: 16, not 256)."""
    import resource

    from hostmond.collectors import network

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        assert network.kept_fds_limit() == 16
        c = NetworkCollector(NetworkConfig(tcp_states=False), CollectorContext())
        list(c.collect())
        assert 0 < c._nkept <= 16
        c.stop()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert network.kept_fds_limit() == min(network.MAX_KEPT_FDS, soft // 16)
