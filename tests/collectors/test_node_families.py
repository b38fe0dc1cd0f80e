"""The small node_exporter-named collectors: parsers on strings, the fixture tree, and the real node_exporter.

One section per module (filefd, entropy, arp, softnet, udp_queues, sockstat,
netstat, conntrack, selinux, os, uname, time). The last tests run the real
``prometheus-node-exporter`` on the same fixture ``/proc`` and require the same
series with the same values.
"""

from __future__ import annotations

import importlib.util
import os
import re
import time
from pathlib import Path

import pytest
from helpers import free_port, require_tool

from hostmond.api import Collector, CollectorContext, Sample
from hostmond.collectors import (
    arp,
    conntrack,
    entropy,
    filefd,
    netstat,
    selinux,
    sockstat,
    softnet,
    udp_queues,
    uname,
)
from hostmond.collectors import os as os_collector
from hostmond.collectors import time as time_collector

FIX = Path(__file__).parent / "fixtures"
_spec = importlib.util.spec_from_file_location("hostmon_nodeexp", FIX / "nodeexp.py")
nodeexp = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(nodeexp)  # type: ignore[union-attr]


def run(cls: type[Collector], proc: str = str(FIX / "proc"), sys_: str = str(FIX / "sys"), rootfs: str = "/", **cfg: object) -> tuple[list[Sample], Collector]:
    c = cls(cls.config_class(**cfg), CollectorContext(proc_root=proc, sys_root=sys_, rootfs=rootfs))
    out = list(c.collect())
    specs = {m.name: m for m in cls.metrics}
    for s in out:
        if s.name in specs:
            assert set(s.labels) == set(specs[s.name].labels), (s.name, s.labels)
            assert s.type == specs[s.name].type
    return out, c


def values(out: list[Sample]) -> dict[str, float]:
    return {s.name: s.value for s in out if not s.labels}


# --------------------------------------------------------------------------- filefd, entropy


def test_parse_file_nr_takes_allocated_and_maximum() -> None:
    assert filefd.parse_file_nr("1039\t0\t2466177\n") == (1039, 2466177)
    with pytest.raises(ValueError):
        filefd.parse_file_nr("1039 0\n")


def test_filefd_and_entropy_on_the_fixture_tree() -> None:
    out, _ = run(filefd.FileFDCollector)
    assert values(out) == {"node_filefd_allocated": 1039, "node_filefd_maximum": 2466177}
    out, _ = run(entropy.EntropyCollector)
    assert values(out) == {"node_entropy_available_bits": 256, "node_entropy_pool_size_bits": 4096}


# --------------------------------------------------------------------------- arp, softnet, udp_queues


def test_count_arp_counts_entries_per_device() -> None:
    assert arp.count_arp((FIX / "proc" / "net" / "arp").read_text()) == {"eth0": 2, "veth1a2b": 1}
    assert arp.count_arp("IP address HW type Flags HW address Mask Device\n") == {}


def test_arp_device_filters() -> None:
    out, _ = run(arp.ARPCollector, device_exclude="^veth")
    assert {s.labels["device"]: s.value for s in out} == {"eth0": 2}


def test_parse_softnet_reads_hex_columns_per_cpu() -> None:
    rows = softnet.parse_softnet((FIX / "proc" / "net" / "softnet_stat").read_text())
    assert rows == [(0x178B, 2, 3), (0x2109, 0, 10)]
    with pytest.raises(ValueError):
        softnet.parse_softnet("0000178b 00000002\n")


def test_sum_udp_queues_adds_tx_and_rx_of_every_socket() -> None:
    assert udp_queues.sum_udp_queues((FIX / "proc" / "net" / "udp").read_text()) == (0x10, 0x300)
    out, _ = run(udp_queues.UDPQueuesCollector)
    got = {(s.labels["ip"], s.labels["queue"]): s.value for s in out}
    assert got == {("v4", "tx"): 16, ("v4", "rx"): 768, ("v6", "tx"): 0, ("v6", "rx"): 512}


def test_udp_queues_without_ipv6_reports_v4_only(tmp_path: Path) -> None:
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "udp").write_text((FIX / "proc" / "net" / "udp").read_text())
    out, _ = run(udp_queues.UDPQueuesCollector, proc=str(tmp_path))
    assert {s.labels["ip"] for s in out} == {"v4"}


# --------------------------------------------------------------------------- sockstat, netstat


def test_parse_sockstat_names_and_mem_bytes() -> None:
    v = sockstat.parse_sockstat((FIX / "proc" / "net" / "sockstat").read_text(), page_size=4096)
    assert v["node_sockstat_sockets_used"] == 29
    assert v["node_sockstat_TCP_tw"] == 298 and v["node_sockstat_TCP_alloc"] == 9
    assert v["node_sockstat_TCP_mem"] == 130 and v["node_sockstat_TCP_mem_bytes"] == 130 * 4096
    assert v["node_sockstat_UDP_mem_bytes"] == 3 * 4096 and v["node_sockstat_FRAG_memory"] == 0
    with pytest.raises(ValueError):
        sockstat.parse_sockstat("TCP: inuse 8 orphan\n")


def test_sockstat_every_emitted_name_is_declared() -> None:
    out, c = run(sockstat.SockstatCollector)
    assert len(out) == 20 and c.take_partial_errors() == {}


def test_parse_netstat_pairs_header_and_value_lines() -> None:
    v = netstat.parse_netstat("Tcp: RtoAlgorithm MaxConn ActiveOpens\nTcp: 1 -1 5\nUdp: InDatagrams\nUdp: 7\n")
    assert v == {"Tcp_RtoAlgorithm": 1, "Tcp_MaxConn": -1, "Tcp_ActiveOpens": 5, "Udp_InDatagrams": 7}
    with pytest.raises(ValueError):
        netstat.parse_netstat("Tcp: A B\nUdp: 1 2\n")
    with pytest.raises(ValueError):
        netstat.parse_netstat("Tcp: A B\nTcp: 1\n")


def test_parse_snmp6_splits_after_the_first_six() -> None:
    assert netstat.parse_snmp6("Ip6InOctets 10\nUdpLite6InErrors 2\nIcmp6OutMsgs 3\n") == {
        "Ip6_InOctets": 10, "UdpLite6_InErrors": 2, "Icmp6_OutMsgs": 3}


def test_netstat_default_fields_select_node_exporters_set() -> None:
    out, _ = run(netstat.NetstatCollector)
    assert {s.name.removeprefix("node_netstat_") for s in out} == set(netstat.KNOWN)
    out, _ = run(netstat.NetstatCollector, fields="^Tcp_CurrEstab$")
    assert [s.name for s in out] == ["node_netstat_Tcp_CurrEstab"]


# --------------------------------------------------------------------------- conntrack


def test_parse_conntrack_stat_sums_cpus() -> None:
    st = conntrack.parse_conntrack_stat((FIX / "proc" / "net" / "stat" / "nf_conntrack").read_text())
    assert (st["found"], st["invalid"], st["ignore"], st["insert"], st["insert_failed"], st["drop"], st["search_restart"]) == (
        3, 6, 26, 3, 1, 4, 3)
    with pytest.raises(ValueError):
        conntrack.parse_conntrack_stat("entries found\n00000001\n")


def test_conntrack_on_the_fixture_and_without_the_module(tmp_path: Path) -> None:
    out, _ = run(conntrack.ConntrackCollector)
    v = values(out)
    assert v["node_nf_conntrack_entries"] == 33 and v["node_nf_conntrack_entries_limit"] == 262144
    assert v["node_nf_conntrack_stat_ignore"] == 26
    from hostmond.api import CollectorUnavailable

    with pytest.raises(CollectorUnavailable):
        run(conntrack.ConntrackCollector, proc=str(tmp_path))


# --------------------------------------------------------------------------- selinux, os, uname, time


def test_selinux_off_and_on(tmp_path: Path) -> None:
    out, _ = run(selinux.SELinuxCollector, sys_=str(tmp_path / "sys"), rootfs=str(tmp_path))
    assert values(out) == {"node_selinux_enabled": 0}
    (tmp_path / "sys" / "fs" / "selinux").mkdir(parents=True)
    (tmp_path / "sys" / "fs" / "selinux" / "enforce").write_text("0")
    (tmp_path / "etc" / "selinux").mkdir(parents=True)
    (tmp_path / "etc" / "selinux" / "config").write_text("# comment\nSELINUX=enforcing\nSELINUXTYPE=targeted\n")
    out, _ = run(selinux.SELinuxCollector, sys_=str(tmp_path / "sys"), rootfs=str(tmp_path))
    assert values(out) == {"node_selinux_enabled": 1, "node_selinux_current_mode": 0, "node_selinux_config_mode": 1}
    assert selinux.parse_selinux_config("SELINUX=disabled\n") == -1


OS_RELEASE = """PRETTY_NAME="Ubuntu 22.04.4 LTS"
NAME="Ubuntu"
VERSION_ID="22.04"
VERSION="22.04.4 LTS (Jammy Jellyfish)"
ID=ubuntu
ID_LIKE=debian
# a comment
"""


def test_parse_os_release_and_version() -> None:
    f = os_collector.parse_os_release(OS_RELEASE + "BROKEN LINE\nBAD='unterminated\n")  # skipped, the rest kept
    assert f["pretty_name"] == "Ubuntu 22.04.4 LTS" and f["id_like"] == "debian" and f["version_id"] == "22.04"
    assert os_collector.os_version("22.04") == 22.04 and os_collector.os_version("12") == 12
    assert os_collector.os_version("rolling") is None


def test_os_reads_rootfs_and_rereads_a_changed_file(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    p = tmp_path / "etc" / "os-release"
    p.write_text(OS_RELEASE)
    c = os_collector.OSCollector(os_collector.OSCollector.config_class(), CollectorContext(rootfs=str(tmp_path)))
    out = list(c.collect())
    info = next(s.labels for s in out if s.name == "node_os_info")
    assert info["id"] == "ubuntu" and info["build_id"] == "" and len(info) == 12
    assert next(s for s in out if s.name == "node_os_version").value == 22.04
    p.write_text('ID=debian\nVERSION_ID="12"\nNAME="Debian GNU/Linux"\n')
    os.utime(p, (time.time() + 5, time.time() + 5))
    out = list(c.collect())
    assert next(s.labels for s in out if s.name == "node_os_info")["id"] == "debian"


def test_uname_labels_match_the_kernel() -> None:
    out, _ = run(uname.UnameCollector, proc="/proc")
    (s,) = out
    u = os.uname()
    assert s.labels["nodename"] == u.nodename and s.labels["release"] == u.release and s.labels["machine"] == u.machine
    assert s.labels["domainname"] == (Path("/proc/sys/kernel/domainname").read_text().strip() or "(none)")


def test_timex_conversion_is_node_exporters() -> None:
    tx = time_collector.Timex()
    tx.offset, tx.freq, tx.maxerror, tx.esterror, tx.status, tx.tick = 1500, 65536 * 2, 16_000_000, 250, 0x2000 | 64, 10000
    v = time_collector.timex_values(tx, 5)
    assert v["node_timex_offset_seconds"] == 1500 / 1e9  # STA_NANO: nanoseconds
    assert v["node_timex_frequency_adjustment_ratio"] == pytest.approx(1 + 2 / 1e6)
    assert v["node_timex_maxerror_seconds"] == 16 and v["node_timex_tick_seconds"] == 0.01
    assert v["node_timex_sync_status"] == 0  # TIME_ERROR
    tx.status = 0
    assert time_collector.timex_values(tx, 0)["node_timex_offset_seconds"] == 1500 / 1e6


def test_time_on_this_host(tmp_path: Path) -> None:
    out, c = run(time_collector.TimeCollector, sys_="/sys")
    v = values(out)
    assert abs(v["node_time_seconds"] - time.time()) < 5
    assert v["node_timex_tick_seconds"] > 0 and v["node_timex_sync_status"] in (0, 1)
    assert c.take_partial_errors() == {}
    cs = tmp_path / "devices" / "system" / "clocksource" / "clocksource0"
    cs.mkdir(parents=True)
    (cs / "available_clocksource").write_text("tsc hpet acpi_pm \n")
    (cs / "current_clocksource").write_text("tsc\n")
    out, _ = run(time_collector.TimeCollector, sys_=str(tmp_path), timex=False)
    assert sorted(s.labels["clocksource"] for s in out if s.name == "node_time_clocksource_available_info") == ["acpi_pm", "hpet", "tsc"]
    assert [s.labels for s in out if s.name == "node_time_clocksource_current_info"] == [{"device": "0", "clocksource": "tsc"}]
    assert not any(s.name.startswith("node_timex") for s in out)


# --------------------------------------------------------------------------- against the real node_exporter

FIXTURE_COLLECTORS = {
    "filefd": filefd.FileFDCollector,
    "entropy": entropy.EntropyCollector,
    "arp": arp.ARPCollector,
    "softnet": softnet.SoftnetCollector,
    "udp_queues": udp_queues.UDPQueuesCollector,
    "sockstat": sockstat.SockstatCollector,
    "netstat": netstat.NetstatCollector,
    "conntrack": conntrack.ConntrackCollector,
}


def test_same_series_and_values_as_node_exporter_on_the_fixture_tree() -> None:
    binary = require_tool("prometheus-node-exporter")
    theirs = nodeexp.scrape(binary, str(FIX / "proc"), str(FIX / "sys"), list(FIXTURE_COLLECTORS), free_port())
    mine: list[Sample] = []
    for cls in FIXTURE_COLLECTORS.values():
        out, c = run(cls)
        assert c.take_partial_errors() == {}, cls.name
        mine.extend(out)
    names = {k[0] for k in theirs if k[0].startswith(("node_filefd", "node_entropy", "node_arp", "node_softnet", "node_udp",
                                                      "node_sockstat", "node_netstat", "node_nf_conntrack"))}
    assert len(names) > 70
    assert nodeexp.compare(nodeexp.ours(mine), theirs, names | {s.name for s in mine}) == []


def test_same_os_info_as_node_exporter(tmp_path: Path) -> None:
    binary = require_tool("prometheus-node-exporter")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "os-release").write_text(OS_RELEASE)
    theirs = nodeexp.scrape(binary, str(FIX / "proc"), str(FIX / "sys"), ["os"], free_port(), [f"--path.rootfs={tmp_path}"])
    out, _ = run(os_collector.OSCollector, rootfs=str(tmp_path))
    assert nodeexp.compare(nodeexp.ours(out), theirs, {"node_os_info", "node_os_version"}) == []


# --------------------------------------------------------------------------- hwmon


def test_hwmon_chip_name_prefers_the_device_link_then_the_name_file() -> None:
    from hostmond.collectors.hwmon import chip_name, clean_name

    assert clean_name("Platform_AppleSMC.768") == "platform_applesmc_768"
    assert chip_name("/sys/devices/platform/coretemp.0", "coretemp\n", "hwmon3") == "platform_coretemp_0"
    assert chip_name(None, "nvme\n", "hwmon1") == "nvme"
    assert chip_name(None, None, "hwmon2") == "hwmon2"


def test_hwmon_same_series_and_values_as_node_exporter_on_the_fixture_tree() -> None:
    from hostmond.collectors.hwmon import HwmonCollector

    binary = require_tool("prometheus-node-exporter")
    theirs = nodeexp.scrape(binary, str(FIX / "proc"), str(FIX / "sys"), ["hwmon"], free_port())
    out, _ = run(HwmonCollector)
    got = {(s.name, s.labels["chip"], s.labels["sensor"]): s.value for s in out if "sensor" in s.labels and s.name != "node_hwmon_sensor_label"}
    assert got[("node_hwmon_temp_celsius", "coretemp", "temp1")] == 45.0
    assert got[("node_hwmon_temp_crit_celsius", "coretemp", "temp1")] == 100.0
    assert got[("node_hwmon_temp_celsius", "hwmon2", "temp1")] == 52.0  # no name file: the directory's name
    names = {k[0] for k in theirs if k[0].startswith("node_hwmon")}
    assert len(names) >= 7
    assert nodeexp.compare(nodeexp.ours(out), theirs, names | {s.name for s in out}) == []


def test_hwmon_without_sysfs_class_has_nothing_to_report(tmp_path: Path) -> None:
    from hostmond.api import CollectorUnavailable
    from hostmond.collectors.hwmon import HwmonCollector

    with pytest.raises(CollectorUnavailable):
        run(HwmonCollector, sys_=str(tmp_path))


# --------------------------------------------------------------------------- interrupts


def test_parse_interrupts_numbered_named_and_single_value_lines() -> None:
    from hostmond.collectors.interrupts import parse_interrupts

    it = parse_interrupts((FIX / "proc" / "interrupts").read_text())
    assert it["24"].info == "PCI-MSI" and it["24"].devices == "49152-edge virtio0-config, virtio0-input.0"
    assert it["24"].values == ["12345", "6789"]
    assert it["LOC"].info == "Local timer interrupts" and it["LOC"].devices == ""
    assert "ERR" not in it and "MIS" not in it


def test_interrupts_is_opt_in_and_matches_node_exporter_on_the_fixture() -> None:
    from hostmond.collectors.interrupts import InterruptsCollector

    assert InterruptsCollector.default_enabled is False
    binary = require_tool("prometheus-node-exporter")
    theirs = nodeexp.scrape(binary, str(FIX / "proc"), str(FIX / "sys"), ["interrupts"], free_port())
    out, _ = run(InterruptsCollector)
    assert len(out) == 14
    assert nodeexp.compare(nodeexp.ours(out), theirs, {"node_interrupts_total"}) == []


@pytest.mark.parametrize("proc", [str(FIX / "proc"), "/proc"])
@pytest.mark.parametrize("fields", [netstat.DEFAULT_FIELDS, ".*", "^Tcp_"])
def test_netstat_reads_only_the_wanted_fields_with_the_same_result_as_parsing_all(proc: str, fields: str, tmp_path: Path) -> None:
    """The collector converts only the fields it reports (selection worked out once per header
    line); the series are those of parsing everything and filtering, in the same order."""
    net = tmp_path / "net"
    net.mkdir()
    for f in ("netstat", "snmp", "snmp6"):
        if os.path.exists(f"{proc}/net/{f}"):
            (net / f).write_bytes(Path(f"{proc}/net/{f}").read_bytes())  # one snapshot for both sides
    c = netstat.NetstatCollector(netstat.NetstatConfig(fields=fields), CollectorContext(proc_root=str(tmp_path)))
    stats: dict[str, float] = {}
    stats.update(netstat.parse_netstat((net / "netstat").read_text()))
    stats.update(netstat.parse_netstat((net / "snmp").read_text()))
    if (net / "snmp6").exists():
        stats.update(netstat.parse_snmp6((net / "snmp6").read_text()))
    want = [(f"node_netstat_{k}", v) for k, v in stats.items() if re.search(fields, k)]
    for _ in range(2):  # the second time from the remembered selections
        assert [(s.name, s.value) for s in c.collect()] == want
    assert len(want) > 5
    (net / "snmp").write_text("Tcp: A B\nTcp: 1\n")
    with pytest.raises(ValueError):
        list(c.collect())


def test_udp_queues_by_netlink_equal_the_proc_files_with_data_queued() -> None:
    """On the real /proc: a UDP socket with unread datagrams; the sock_diag dump gives the same
    tx/rx sums as /proc/net/udp and udp6 (what node_exporter reads)."""
    import socket

    rx4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) if socket.has_ipv6 and os.path.exists("/proc/net/udp6") else None
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx4.bind(("127.0.0.1", 0))
        for _ in range(3):
            tx.sendto(b"x" * 500, rx4.getsockname())
        if rx6 is not None:
            rx6.bind(("::1", 0))
            with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as tx6:
                tx6.sendto(b"y" * 300, rx6.getsockname())
        c = udp_queues.UDPQueuesCollector(udp_queues.UDPQueuesCollector.config_class(), CollectorContext())
        assert c._netlink
        for _ in range(5):  # other sockets of the host may move in between: equal in one of a few tries
            by_netlink = {(s.labels["ip"], s.labels["queue"]): s.value for s in c.collect()}
            files = {}
            for ip, fname in (("v4", "udp"), ("v6", "udp6")):
                if os.path.exists(f"/proc/net/{fname}"):
                    t, r = udp_queues.sum_udp_queues(Path(f"/proc/net/{fname}").read_text())
                    files[(ip, "tx")], files[(ip, "rx")] = float(t), float(r)
            if by_netlink == files:
                break
        assert by_netlink == files
        assert by_netlink[("v4", "rx")] >= 1500  # the queued datagrams are seen
        if rx6 is not None:
            assert by_netlink[("v6", "rx")] >= 300
        assert c.take_partial_errors() == {}
    finally:
        for s in (rx4, rx6, tx):
            if s is not None:
                s.close()


def test_udp_queues_netlink_failure_falls_back_to_the_files(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(family: int, timeout: float = 2.0) -> tuple[int, int]:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(udp_queues, "udp_queues_netlink", refuse)
    c = udp_queues.UDPQueuesCollector(udp_queues.UDPQueuesCollector.config_class(), CollectorContext())
    out = list(c.collect())
    assert {(s.labels["ip"], s.labels["queue"]) for s in out} >= {("v4", "tx"), ("v4", "rx")}
    assert c.take_partial_errors() == {"udp_netlink_failed": 1} and not c._netlink
    assert len(list(c.collect())) == len(out) and c.take_partial_errors() == {}
