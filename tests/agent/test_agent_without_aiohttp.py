"""`hostmon run` never imports aiohttp (issue 14: ~15 MB of RSS): the agent's server and shipper use their own.

Two real agents: one with shipping off, one shipping to a real ingest in another
process (which does use aiohttp). In each, a thread of the agent's own process
waits until it is ready (and, shipping on, until the ingest stored a batch from
it), prints ``sys.modules`` and stops the agent with SIGTERM; the test also reads
``/proc/PID/maps`` of a ``hostmon run`` started the plain way for aiohttp's
shared objects (which the ingest's process does map: the control).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from helpers import free_port, hostmon_process, http_get, wait_until

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ingest"))
from ingest_helpers import IngestProcess, db_counts, make_keys, write_config  # noqa: E402

# Runs the real CLI in the main thread; a thread reports the modules once the agent has done its work.
PROBE = r"""
import os, signal, sys, threading, time, urllib.request
url, marker = sys.argv[1], sys.argv[2]
def probe():
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(url + "/readyz", timeout=2).status == 200 and (marker == "-" or os.path.exists(marker)):
                break
        except OSError:
            pass
        time.sleep(0.1)
    time.sleep(1.0)
    print("MODULES " + " ".join(sorted(sys.modules)), flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
threading.Thread(target=probe, daemon=True).start()
from hostmond.cli import main
sys.exit(main(sys.argv[3:]))
"""

AIOHTTP_FAMILY = ("aiohttp", "aiosignal", "multidict", "yarl", "frozenlist", "aiohappyeyeballs")


def _modules_of_agent(conf: Path, url: str, marker: str, tmp_path: Path) -> set[str]:
    env = {**os.environ, "HOSTMON_STATE_DIR": str(tmp_path / "state")}
    r = subprocess.run(
        [sys.executable, "-c", PROBE, url, marker, "run", "--config", str(conf)],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path, check=False,
    )
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("MODULES ")), None)
    assert line is not None, (r.returncode, r.stdout[-2000:], r.stderr[-4000:])
    assert r.returncode == 0, r.stderr[-4000:]
    return set(line.split()[1:])


def _loaded_from(mods: set[str], families: tuple[str, ...]) -> list[str]:
    return sorted(m for m in mods if m.split(".", 1)[0] in families)


def test_agent_with_shipping_off_never_imports_aiohttp(tmp_path: Path) -> None:
    port = free_port()
    conf = tmp_path / "hostmon.toml"
    conf.write_text(f'tenant_id = "acme"\n[http]\nlisten = "127.0.0.1:{port}"\n[runtime]\ninterval = 1\n'
                    "[shipping]\nenabled = false\n")
    mods = _modules_of_agent(conf, f"http://127.0.0.1:{port}", "-", tmp_path)
    assert "hostmond.agent.exposition" in mods and "hostmond.web.httpserver" in mods  # it did run the server
    assert _loaded_from(mods, AIOHTTP_FAMILY) == []


def test_agent_shipping_to_a_real_ingest_never_imports_aiohttp(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "keys")
    ingest = IngestProcess(write_config(tmp_path, keys))
    ingest_url = ingest.start()
    try:
        # the control for the /proc check below: the ingest (aiohttp) maps aiohttp's shared objects
        import aiohttp

        assert ingest.proc is not None
        assert os.path.dirname(aiohttp.__file__) in Path(f"/proc/{ingest.proc.pid}/maps").read_text()
        port = free_port()
        conf = tmp_path / "hostmon.toml"
        conf.write_text(
            f'tenant_id = "acme"\n[http]\nlisten = "127.0.0.1:{port}"\n[runtime]\ninterval = 1\n'
            f'[shipping]\ningest_url = "{ingest_url}"\ningest_public_key = "{keys.ingest_pub_path}"\n'
            f'agent_key = "{keys.dir / "agent.key"}"\nbatch_max_age = 0.5\nbatch_jitter = 0\n'
        )
        # the marker appears once the ingest has stored something from this agent
        marker = tmp_path / "stored"
        db = tmp_path / "ingest.db"

        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                with contextlib.suppress(sqlite3.Error):  # the database may be being created
                    if db_counts(db).get("samples", 0) > 0:
                        marker.touch()
                        return
                time.sleep(0.2)

        t = threading.Thread(target=watch, daemon=True)
        t.start()
        mods = _modules_of_agent(conf, f"http://127.0.0.1:{port}", str(marker), tmp_path)
        stop.set()
        assert marker.exists(), "the agent never delivered a batch to the ingest"
        assert "hostmond.agent.shipping.sender" in mods and "http.client" in mods
        assert _loaded_from(mods, AIOHTTP_FAMILY) == []
    finally:
        ingest.stop()


def test_the_default_agent_with_its_embedded_ingest_never_imports_aiohttp(tmp_path: Path) -> None:
    """The newcomer default (no ingest_url): batches reach the embedded ingest in-process, and the
    agent still loads no HTTP framework, no remote-write client and no snappy."""
    port = free_port()
    conf = tmp_path / "hostmon.toml"
    conf.write_text(f'tenant_id = "acme"\n[http]\nlisten = "127.0.0.1:{port}"\n[runtime]\ninterval = 1\n'
                    "[shipping]\nbatch_max_age = 0.5\nbatch_jitter = 0\n")
    marker = tmp_path / "stored"
    db = tmp_path / "state" / "ingest" / "ingest.db"
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            with contextlib.suppress(sqlite3.Error):
                if db.exists() and db_counts(db).get("samples", 0) > 0:
                    marker.touch()
                    return
            time.sleep(0.2)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    mods = _modules_of_agent(conf, f"http://127.0.0.1:{port}", str(marker), tmp_path)
    stop.set()
    assert marker.exists(), "the agent never stored a batch in its embedded ingest"
    assert "hostmond.ingest.core" in mods and "hostmond.ingest.server" not in mods
    assert _loaded_from(mods, (*AIOHTTP_FAMILY, "cramjam")) == []


def test_a_running_hostmon_run_maps_no_aiohttp_shared_object(tmp_path: Path) -> None:
    import aiohttp

    aiohttp_dir = os.path.dirname(aiohttp.__file__)
    port = free_port()
    conf = tmp_path / "hostmon.toml"
    conf.write_text(f'tenant_id = "acme"\n[http]\nlisten = "127.0.0.1:{port}"\n[shipping]\nenabled = false\n')
    env = {**os.environ, "HOSTMON_STATE_DIR": str(tmp_path / "state")}
    with hostmon_process(["run", "--config", str(conf)], env=env) as proc:
        wait_until(lambda: http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200, timeout=30, what="agent ready")
        assert http_get(f"http://127.0.0.1:{port}/metrics")[0] == 200
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        assert aiohttp_dir not in maps
        proc.send_signal(signal.SIGTERM)
