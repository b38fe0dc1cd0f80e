from __future__ import annotations

import importlib.util
import shutil
import socket
from pathlib import Path

import pytest

from agent.api import CollectorContext, Sample
from collectors import _procfs
from collectors.network import NetworkCollector, NetworkConfig
from helpers import free_port, require_tool

FIX = Path(__file__).parent / "fixtures"
_spec = importlib.util.spec_from_file_location("hostmon_nodeexp", FIX / "nodeexp.py")
nodeexp = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(nodeexp)  # type: ignore[union-attr]


def run(proc: str = str(FIX / "proc"), sys_: str = str(FIX / "sys"), **cfg: object) -> tuple[list[Sample], NetworkCollector]:
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
    assert by(out, "node_network_receive_bytes_total") == {"lo": 3293, "eth0": 54225769, "ifb0": 0, "veth1a2b": 100}
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
    assert c.take_partial_errors() == {}


def test_device_exclude() -> None:
    out, _ = run(device_exclude="^(veth|lo$)")
    assert sorted(by(out, "node_network_receive_bytes_total")) == ["eth0", "ifb0"]
    assert sorted(by(out, "node_network_up")) == ["eth0", "ifb0"]


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
    assert "lo" in by(out, "node_network_receive_bytes_total")
    assert all(s.value >= 0 for s in out)
    assert c.take_partial_errors() == {}


def test_same_series_as_node_exporter_on_the_fixture_tree() -> None:
    binary = require_tool("prometheus-node-exporter")
    theirs = nodeexp.scrape(binary, str(FIX / "proc"), str(FIX / "sys"), ["netdev", "netclass"], free_port())
    out, _ = run()
    assert len([k for k in theirs if k[0] == "node_network_receive_bytes_total"]) == 4
    names = {s.name for s in out} - {"node_tcp_connection_states"}  # node_exporter 1.5's tcpstat uses netlink only
    assert nodeexp.compare(nodeexp.ours(out), theirs, names) == []
