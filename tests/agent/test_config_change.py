"""``config_change`` events: a SIGHUP reload names the keys that changed (never their values) and the
event is shipped like every other event."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import free_port, wait_until
from hostmond.agent import config as config_mod
from hostmond.agent.handoff import Collection
from hostmond.agent.runtime import Agent


class Keep:
    def __init__(self) -> None:
        self.got: list[Collection] = []

    def submit(self, c: Collection) -> None:
        self.got.append(c)

    def self_metrics(self) -> list[Any]:
        return []


def test_changed_keys_names_keys_not_values() -> None:
    a = config_mod.Config()
    b = config_mod.Config()
    assert config_mod.changed_keys(a, b) == []
    b.tenant_id = "globex"
    b.http.listen = "127.0.0.1:9999"
    b.collectors = {"auth": {"hash_key_file": "/etc/secret.key"}, "cpu": {"guest": False}}
    b.web.basic_auth_users = {"alice": "$2y$10$" + "x" * 53}
    b.shipping.enabled = False
    got = config_mod.changed_keys(a, b)
    assert got == ["collectors.auth.hash_key_file", "collectors.cpu.guest", "http.listen", "shipping.enabled", "tenant_id", "web.basic_auth_users"]
    # a user name is data, not a key: the whole table shows as one key
    assert not any("alice" in k for k in got)
    b2 = config_mod.Config()
    b2.collectors = {"cpu": {"guest": False}}
    assert config_mod.changed_keys(b, b2)[:2] == ["collectors.auth.hash_key_file", "http.listen"]


async def test_reload_hands_a_config_change_event_to_the_consumers(tmp_path: Path) -> None:
    conf = tmp_path / "hostmon.toml"
    conf.write_text("tenant_id = 'acme'\n[runtime]\ninterval = 30\n[web]\nbasic_auth_users = {}\n")
    env = {"HOSTMON_LISTEN": "127.0.0.1:0", "HOSTMON_TAGS__HOST": "h1", "HOSTMON_STATE_DIR": str(tmp_path / "state")}
    cfg = config_mod.load(str(conf), env)
    keep = Keep()
    agent = Agent(cfg, str(conf), [keep], classes={}, plugin_errors=[], environ=env)
    await agent.start()
    try:
        secret_hash = "$2y$10$" + "a" * 53
        conf.write_text(f"tenant_id = 'acme'\n[runtime]\ninterval = 45\n[web]\nbasic_auth_users = {{ bob = '{secret_hash}' }}\n")
        assert await agent.reload()
        conf.write_text("tenant_id = 'acme'\n[runtime]\ninterval = -1\n")
        assert not await agent.reload()
    finally:
        await agent.stop()
    events = [e for c in keep.got if c.collector == "_config" for e in c.events]
    assert [e.kind for e in events] == ["config_change", "config_change"]
    ok, bad = events
    assert ok.fields == {"result": "applied", "file": str(conf), "changed": ["runtime.interval", "web.basic_auth_users"], "changed_count": 2}
    assert ok.labels["tenant_id"] == "acme" and ok.labels["host"] == "h1"
    assert bad.fields["result"] == "rejected" and bad.fields["key"] == "runtime.interval" and bad.fields["changed"] == []
    text = json.dumps([e.to_dict() for e in events])
    assert secret_hash not in text and "bob" not in text
    # no value of a changed key in what the events say (their timestamps may hold any digits)
    content = json.dumps([[e.kind, e.fields, e.labels] for e in events])
    assert "45" not in content.replace(str(conf), "")  # the file path is named; it may hold any digits


@pytest.mark.slow
def test_sighup_config_change_is_shipped_to_the_ingest(tmp_path: Path) -> None:
    port = free_port()
    state = tmp_path / "state"
    conf = tmp_path / "hostmon.toml"
    base = (f'tenant_id = "acme"\nstate_dir = "{state}"\n[http]\nlisten = "127.0.0.1:{port}"\n'
            "[shipping]\nbatch_max_age = 0.3\nbatch_jitter = 0.0\n")
    conf.write_text(base + "[runtime]\ninterval = 1.0\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOSTMON_")}
    env.pop("NOTIFY_SOCKET", None)
    db = state / "ingest" / "ingest.db"

    def events() -> list[dict[str, Any]]:
        r = subprocess.run([sys.executable, "-m", "hostmond.cli", "ingest", "query", "--db", str(db), "--tenant", "acme",
                            "--events", "--kind", "config_change", "--format", "json"],
                           capture_output=True, text=True, timeout=60, check=False)
        return [json.loads(x) for x in r.stdout.splitlines() if x.strip()] if r.returncode == 0 else []

    with open(tmp_path / "agent.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "hostmond.cli", "run", "--config", str(conf)], env=env, stdout=subprocess.DEVNULL, stderr=log)
        try:
            wait_until(lambda: db.exists(), timeout=60, what="the embedded ingest's database")
            time.sleep(1.0)
            conf.write_text(base + "[runtime]\ninterval = 2.0\n[collectors.cpu]\nguest = false\n")
            proc.send_signal(signal.SIGHUP)
            rows = wait_until(events, timeout=60, interval=0.5, what="the config_change event stored by the ingest")
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    (row,) = rows
    assert row["kind"] == "config_change"
    fields = row["fields"]
    assert fields["result"] == "applied" and fields["changed"] == ["collectors.cpu.guest", "runtime.interval"]
