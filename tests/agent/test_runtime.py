"""Runtime: isolation, timeouts, overruns, tagging, hand-off, readiness, signals."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import threading
import time
from pathlib import Path

from helpers import (
    free_port,
    hostmon_process,
    http_get,
    metric_value,
    scrape,
    wait_until,
)
from hostmond.agent import config as config_mod
from hostmond.agent.handoff import Collection
from hostmond.agent.runtime import Agent

from hostmond.api import (
    COUNTER,
    GAUGE,
    Collector,
    CollectorUnavailable,
    Event,
    MetricSpec,
    Sample,
)

RELEASE = threading.Event()


class Good(Collector):
    name = "good"
    metrics = (MetricSpec("t_good", GAUGE, "good", ("k",)), MetricSpec("t_owned", GAUGE, "owned by another tenant"))

    def collect(self):
        yield self.sample("t_good", 1, {"k": "v"})
        yield self.sample("t_owned", 2, {"tenant_id": "other"})
        yield Event("thing", time.time(), {"n": 1})


class Boom(Collector):
    name = "boom"
    metrics = (MetricSpec("t_boom_total", COUNTER, "never"),)

    def collect(self):
        raise RuntimeError("broken collector")


class Hang(Collector):
    name = "hang"
    metrics = (MetricSpec("t_hang", GAUGE, "hang"),)

    def collect(self):
        RELEASE.wait(10)
        yield self.sample("t_hang", 1)


class Absent(Collector):
    name = "absent"

    def start(self):
        raise CollectorUnavailable("no such device here")

    def collect(self):
        raise AssertionError("must not be called")


class Keep:
    def __init__(self) -> None:
        self.got: list[Collection] = []

    def submit(self, c: Collection) -> None:
        self.got.append(c)

    def self_metrics(self):
        return []


def make_agent(classes, env=None, consumers=None) -> Agent:
    cfg = config_mod.load(None, {"HOSTMON_LISTEN": "127.0.0.1:0", "HOSTMON_TENANT_ID": "acme", "HOSTMON_TAGS__HOST": "h1", **(env or {})})
    cfg.state_dir = "/nonexistent-not-used"
    return Agent(cfg, None, consumers or [], classes={c.name: c for c in classes}, plugin_errors=[])


def runner(agent: Agent, name: str):
    return next(r for r in agent.runners if r.name == name)


async def test_a_failing_or_hanging_collector_never_stops_the_others() -> None:
    RELEASE.clear()
    keep = Keep()
    agent = make_agent(
        [Good, Boom, Hang, Absent],
        {"HOSTMON_RUNTIME__INTERVAL": "0.2", "HOSTMON_RUNTIME__JITTER": "0", "HOSTMON_COLLECTORS__HANG__TIMEOUT": "0.3"},
        [keep],
    )
    await agent.start()
    try:
        await asyncio.sleep(1.6)
        good, boom, hang = runner(agent, "good"), runner(agent, "boom"), runner(agent, "hang")
        assert good.runs >= 5 and good.success == 1
        assert boom.errors == boom.runs >= 5 and boom.success == 0
        assert hang.timeouts == 1, "one run abandoned"
        assert hang.overruns >= 3, "ticks while the hung run is pending are skipped, not piled up"
        assert hang.runs == 1
        assert runner(agent, "absent").unavailable
        assert agent.ready, "ready once every collector finished (or gave up on) its first run"
        RELEASE.set()
        await asyncio.sleep(0.8)
        assert hang.success == 1 and hang.runs >= 2, "recovers once the blocked call returns"
    finally:
        RELEASE.set()
        await agent.stop()
    text = agent.store.body(False, False).decode()
    assert 'hostmon_collector_errors_total{collector="boom",tenant_id="acme"}' in text
    assert "absent" not in text, "a collector with no data here is not reported as failing"


class Slow(Collector):
    """Slower than its interval but well within its timeout; named to run first in its batch."""

    name = "aaa_slow"
    metrics = (MetricSpec("t_slow", GAUGE, "slow"),)

    def collect(self):
        time.sleep(0.35)
        yield self.sample("t_slow", 1)


class Thread(Collector):
    name = "thread_a"
    metrics = (MetricSpec("t_thread", GAUGE, "thread ident of the last collection", ("c", "ident")),)

    def collect(self):
        time.sleep(0.05)  # long enough that collectors run one per thread would overlap and need two threads
        yield self.sample("t_thread", 1, {"c": self.name, "ident": str(threading.get_ident())})


class ThreadB(Thread):
    name = "thread_b"


async def test_collectors_of_one_interval_run_in_one_worker_thread_per_tick() -> None:
    keep = Keep()
    agent = make_agent([Thread, ThreadB], {"HOSTMON_RUNTIME__INTERVAL": "60"}, [keep])
    await agent.start()
    try:
        await asyncio.wait_for(agent.ready_event.wait(), 5)
    finally:
        await agent.stop()
    idents = {s.labels["c"]: s.labels["ident"] for col in keep.got for s in col.samples}
    assert set(idents) == {"thread_a", "thread_b"}
    assert idents["thread_a"] == idents["thread_b"], "one batch, one thread hand-off"
    assert int(idents["thread_a"]) != threading.get_ident(), "not on the event loop"


async def test_a_slow_collection_is_detached_so_the_others_of_its_batch_keep_their_schedule() -> None:
    agent = make_agent([Slow, Good], {"HOSTMON_RUNTIME__INTERVAL": "0.2", "HOSTMON_RUNTIME__JITTER": "0"})
    await agent.start()
    try:
        await asyncio.sleep(1.7)
        slow, good = runner(agent, "aaa_slow"), runner(agent, "good")
        assert good.runs >= 6, f"good ran {good.runs} times in 1.7 s at 0.2 s: held back by the slow one"
        assert slow.timeouts == 0 and slow.success == 1, "slow is not a timeout: its results count"
        assert 2 <= slow.runs <= 5 and slow.overruns >= 2, "its ticks while it runs are skipped, not piled up"
        text = agent.store.body(False, False).decode()
        assert "t_slow{" in text and "t_good{" in text
    finally:
        await agent.stop()


class Where(Collector):
    name = "where"
    metrics = (MetricSpec("t_where", GAUGE, "thread of the last collection", ("thread",)),)

    def collect(self):
        yield self.sample("t_where", 1, {"thread": "main" if threading.current_thread() is threading.main_thread() else "worker"})


class WhereInline(Where):
    name = "where_inline"
    inline = True


async def test_inline_collectors_run_on_the_loop_others_in_a_worker_and_both_report_node_scrape_metrics() -> None:
    agent = make_agent([Where, WhereInline], {"HOSTMON_RUNTIME__INTERVAL": "60"})
    await agent.start()
    try:
        await asyncio.wait_for(agent.ready_event.wait(), 5)
        agent.store.render()
        text = agent.store.body(False, False).decode()
    finally:
        await agent.stop()
    assert 't_where{thread="worker"' in text and 't_where{thread="main"' in text
    for name in ("where", "where_inline"):
        assert re.search(rf'^node_scrape_collector_success{{collector="{name}"[^}}]*}} 1$', text, re.M), name
        assert f'node_scrape_collector_duration_seconds{{collector="{name}"' in text


async def test_samples_and_events_are_tagged_and_handed_off() -> None:
    keep = Keep()
    agent = make_agent([Good], {"HOSTMON_RUNTIME__INTERVAL": "60"}, [keep])
    await agent.start()
    try:
        await asyncio.wait_for(agent.ready_event.wait(), 5)
    finally:
        await agent.stop()
    (col,) = keep.got
    assert col.collector == "good"
    by_name = {s.name: s for s in col.samples}
    assert by_name["t_good"].labels == {"k": "v", "host": "h1", "tenant_id": "acme"}
    assert by_name["t_owned"].labels["tenant_id"] == "other", "a sample's own tenant wins"
    assert by_name["t_owned"].labels["host"] == "h1"
    (ev,) = col.events
    assert ev.kind == "thing" and ev.labels == {"host": "h1", "tenant_id": "acme"}


async def test_metrics_leave_out_host_unless_asked_while_handed_off_samples_keep_it() -> None:
    for env, want_host in (({}, False), ({"HOSTMON_HTTP__HOST_LABEL": "true"}, True)):
        keep = Keep()
        agent = make_agent([Good], {"HOSTMON_RUNTIME__INTERVAL": "60", "HOSTMON_TAGS__RACK": "r7", **env}, [keep])
        await agent.start()
        try:
            await asyncio.wait_for(agent.ready_event.wait(), 5)
            agent.store.render()
            text = agent.store.body(False, False).decode()
            om = agent.store.body(True, False).decode()
        finally:
            await agent.stop()
        shown = 't_good{k="v",host="h1",rack="r7",tenant_id="acme"} 1' if want_host else 't_good{k="v",rack="r7",tenant_id="acme"} 1'
        assert shown in text and shown in om
        assert ('host="h1"' in text) is want_host
        assert keep.got[0].samples[0].labels["host"] == "h1", "shipped batches keep host"


async def test_readyz_waits_for_the_first_collection() -> None:
    RELEASE.clear()
    agent = make_agent([Hang], {"HOSTMON_RUNTIME__INTERVAL": "60", "HOSTMON_RUNTIME__TIMEOUT": "5"})
    await agent.start()
    try:
        port = agent.server.port
        loop = asyncio.get_running_loop()
        status, _, _ = await loop.run_in_executor(None, http_get, f"http://127.0.0.1:{port}/readyz")
        assert status == 503
        status, _, _ = await loop.run_in_executor(None, http_get, f"http://127.0.0.1:{port}/healthz")
        assert status == 200
        RELEASE.set()
        await asyncio.wait_for(agent.ready_event.wait(), 5)
        status, _, _ = await loop.run_in_executor(None, http_get, f"http://127.0.0.1:{port}/readyz")
        assert status == 200
    finally:
        RELEASE.set()
        await agent.stop()


def test_sigterm_stops_within_5s_and_sighup_reloads(tmp_path: Path) -> None:
    port = free_port()
    conf = tmp_path / "hostmon.toml"
    conf.write_text("tenant_id = 'first'\n[shipping]\nenabled = false\n")
    env = {"HOSTMON_STATE_DIR": str(tmp_path / "state")}
    with hostmon_process(["run", "--config", str(conf), "--listen", f"127.0.0.1:{port}"], env=env) as p:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_get(url + "/readyz")[0] == 200, what="agent ready")
        assert 'tenant_id="first"' in http_get(url + "/metrics")[2].decode()
        # a bad new config is rejected; the old one keeps running
        conf.write_text("tenant_id = 'second'\n[runtime]\ninterval = -5\n")
        p.send_signal(signal.SIGHUP)
        wait_until(
            lambda: metric_value(scrape(url + "/metrics"), "hostmon_config_reloads_total", {"result": "failure"}) == 1,
            what="the rejected reload counted",
        )
        assert 'tenant_id="first"' in http_get(url + "/metrics")[2].decode()
        # a good one is applied, keeping the --listen override
        conf.write_text("tenant_id = 'second'\n[shipping]\nenabled = false\n")
        p.send_signal(signal.SIGHUP)
        wait_until(lambda: 'tenant_id="second"' in http_get(url + "/metrics")[2].decode(), what="reloaded tenant")
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=10)
        took = time.monotonic() - t0
        err = p.stderr.read().decode()
    assert rc == 0, err
    assert took < 5.0, f"stop took {took:.2f}s"
    lines = [json.loads(x) for x in err.splitlines() if x.startswith("{")]
    msgs = [x["msg"] for x in lines]
    assert "config reload rejected; the running config stays in force" in msgs
    rejected = next(x for x in lines if x["msg"].startswith("config reload rejected"))
    assert "runtime.interval" in rejected["error"] and str(conf) in rejected["error"]
    assert "stopped" in msgs
    assert all(x["level"] in ("debug", "info", "warning", "error") for x in lines)


class Dyn(Collector):
    """Families learned at run time: a histogram, an untyped family, and one that clashes with Good's."""

    name = "dyn"
    dynamic_families = True

    def collect(self):
        self.family("rt_latency_seconds", "histogram", "Latency learned at run time.")
        self.family("rt_loose", "untyped", "Untyped value.")
        self.family("t_good", "gauge", "Steals a declared family.")
        yield Sample("rt_latency_seconds_bucket", COUNTER, 1, {"le": "0.5"})
        yield Sample("rt_latency_seconds_bucket", COUNTER, 2, {"le": "+Inf"})
        yield Sample("rt_latency_seconds_sum", COUNTER, 0.7)
        yield Sample("rt_latency_seconds_count", COUNTER, 2)
        yield Sample("rt_loose", GAUGE, 3)
        yield Sample("t_good", GAUGE, 99, {"k": "stolen"})
        yield Sample("rt_not_described", GAUGE, 1)


class Dyn2(Dyn):
    name = "dyn2"

    def collect(self):
        self.family("rt_loose", "gauge", "Another collector's run-time family.")
        yield Sample("rt_loose", GAUGE, 4, {"from": "dyn2"})


async def test_run_time_families_are_rendered_with_their_help_and_type_and_clashes_are_refused(tmp_path: Path) -> None:
    from helpers import require_tool

    agent = make_agent([Good, Dyn], {"HOSTMON_RUNTIME__INTERVAL": "60"})
    await agent.start()
    try:
        await asyncio.wait_for(agent.ready_event.wait(), 5)
        # a second dynamic collector claiming rt_loose is refused while dyn has it
        agent.classes["dyn2"] = Dyn2
        from hostmond.agent.runtime import CollectorRunner

        r2 = CollectorRunner(Dyn2, Dyn2(Dyn2.config_class(), agent.runners[0].c.ctx), 60, 5)
        agent.runners.append(r2)
        await agent.run_once(r2)
        agent.store.render()
        text = agent.store.body(False, False).decode()
        om = agent.store.body(True, False).decode()
        dyn = runner(agent, "dyn")
    finally:
        await agent.stop()
    assert "# HELP rt_latency_seconds Latency learned at run time.\n# TYPE rt_latency_seconds histogram\n" in text
    block = text.split("# TYPE rt_latency_seconds histogram\n")[1].split("# HELP")[0]
    assert [ln.split("{")[0] for ln in block.splitlines()] == ["rt_latency_seconds_bucket"] * 2 + ["rt_latency_seconds_sum", "rt_latency_seconds_count"]
    assert "# TYPE rt_loose untyped\n" in text and "# TYPE rt_loose unknown\n" in om
    assert 'k="stolen"' not in text and "rt_not_described" not in text
    assert dyn.partial == {"family_clash": 1, "family_undescribed": 1}
    assert r2.partial == {"family_clash": 1} and 'from="dyn2"' not in text
    assert text.count("# TYPE rt_loose") == 1
    promtool = require_tool("promtool")
    import subprocess

    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert r.returncode in (0, 3), r.stdout + r.stderr  # 3: lint advice only (names, help), no parse error


def test_the_youngest_gc_generation_does_not_run_every_cycle(tmp_path: Path) -> None:
    """Once running, the agent's cycles leave the garbage collector alone (agent.runtime._settle_gc).

    A cycle's samples and label dicts live until the cycle is done; with Python's threshold of 700
    the youngest generation ran about twice a cycle over them. The count comes from the agent's own
    ``python_gc_collections_total`` on /metrics, the family client_python exposes.
    """
    port = free_port()
    conf = tmp_path / "hostmon.toml"
    conf.write_text("[shipping]\nenabled = false\n[runtime]\ninterval = 0.1\njitter = 0.0\n")
    env = {"HOSTMON_STATE_DIR": str(tmp_path / "state")}
    with hostmon_process(["run", "--config", str(conf), "--listen", f"127.0.0.1:{port}"], env=env):
        url = f"http://127.0.0.1:{port}/metrics"
        wait_until(lambda: http_get(url.replace("/metrics", "/readyz"))[0] == 200, what="agent ready")

        def counts() -> tuple[float, float]:
            text = scrape(url)
            gen0 = metric_value(text, "python_gc_collections_total", {"generation": "0"})
            runs = metric_value(text, "hostmon_collector_runs_total", {"collector": "cpu"})
            assert gen0 is not None and runs is not None, "python_gc_collections_total or the cpu runs missing"
            return gen0, runs

        gen0_a, runs_a = counts()
        wait_until(lambda: counts()[1] >= runs_a + 40, timeout=30, what="40 more cycles")
        gen0_b, runs_b = counts()
    cycles = runs_b - runs_a
    assert cycles >= 40
    # ~0.01 a cycle with the agent's threshold; 1-2 a cycle with Python's default
    assert gen0_b - gen0_a <= cycles / 10, f"{gen0_b - gen0_a:.0f} young collections in {cycles:.0f} cycles"


class Partial(Collector):
    name = "partial"
    metrics = (MetricSpec("t_partial", GAUGE, "partial"),)

    def collect(self):
        self.partial_error("some_file_unreadable")
        yield self.sample("t_partial", 1)


async def test_collector_self_metrics_rendered_from_counters_match_the_samples_byte_for_byte() -> None:
    from hostmond.agent.exposition import Renderer
    from hostmond.agent.runtime import RUNNER_FAMILIES

    for env in ({}, {"HOSTMON_HTTP__HOST_LABEL": "true"}):
        agent = make_agent([Good, Boom, Absent, Partial], {"HOSTMON_RUNTIME__INTERVAL": "60", **env})
        await agent.start()
        try:
            await asyncio.wait_for(agent.ready_event.wait(), 5)
            for tags in (None, {"rack": "r\"7\\", "tenant_id": "acme"}):
                if tags is not None:  # as a reload changes them: the kept prefixes must follow
                    agent.tags = tags
                samples = agent._runner_samples()
                assert {s.labels["collector"] for s in samples} == {"good", "boom", "partial"}, "none for a collector with no data here"
                for om in (False, True):
                    fresh = Renderer(agent.store.renderer.specs, agent.store.renderer.hidden_labels)
                    want = fresh.render(samples, openmetrics=om)
                    fast = agent._runner_text(agent.store.renderer, om)
                    assert fresh.render([], openmetrics=om, tail=[fast]) == want
            agent.store.render()
            text = agent.store.body(False, False).decode()
            om_text = agent.store.body(True, False).decode()
        finally:
            await agent.stop()
        for body in (text, om_text):
            for name, _, _ in RUNNER_FAMILIES:
                fam = name[:-6] if body is om_text and name.endswith("_total") else name
                assert len(re.findall(rf"^# TYPE {fam} ", body, re.MULTILINE)) == 1, (fam, "one family block")
        assert metric_value(text, "hostmon_collector_errors_total", {"collector": "boom"}) == 1
        assert metric_value(text, "hostmon_collector_success", {"collector": "boom"}) == 0
        assert metric_value(text, "node_scrape_collector_success", {"collector": "good"}) == 1
        assert metric_value(text, "hostmon_collector_partial_errors_total", {"collector": "partial", "reason": "some_file_unreadable"}) == 1
        assert 'collector="absent"' not in text
        assert ('host="h1"' in text) is bool(env)
