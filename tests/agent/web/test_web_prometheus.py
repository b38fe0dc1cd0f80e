"""A real Prometheus (Debian package) scrapes over TLS with basic auth from its own scrape config.

Missing prometheus skips locally and FAILS under CI=true (helpers.require_tool).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bcrypt
import pytest
from helpers import free_port, hostmon_process, prometheus_server, promql, wait_until

from hostmond.web.config import TLSServerConfig, WebConfig

from .conftest import PKI, SERVER_KINDS, client_ctx, server_in_thread

PASSWORD = "scrape-secret"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(8)).decode()


def job(name: str, port: int, tls: dict[str, str], password: str | None) -> dict[str, Any]:
    j: dict[str, Any] = {
        "job_name": name,
        "scheme": "https",
        "tls_config": tls,
        "static_configs": [{"targets": [f"127.0.0.1:{port}"]}],
    }
    if password is not None:
        j["basic_auth"] = {"username": "prometheus", "password": password}
    return j


def up_by_job(prom: str) -> dict[str, str]:
    return {r["metric"]["job"]: r["value"][1] for r in promql(prom, "up")}


@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_prometheus_scrapes_over_mutual_tls_with_basic_auth_and_refusals_are_counted(tmp_path: Path, pki: PKI, kind: str) -> None:
    cfg = WebConfig(
        tls_server_config=TLSServerConfig(
            cert_file=str(pki.server.cert),
            key_file=str(pki.server.key),
            client_ca_file=str(pki.ca.cert),
            client_auth_type="RequireAndVerifyClientCert",
        ),
        basic_auth_users={"prometheus": HASH},
    )
    good_tls = {"ca_file": str(pki.ca.cert), "cert_file": str(pki.client.cert), "key_file": str(pki.client.key)}
    with server_in_thread(cfg, kind) as srv:
        jobs = [
            job("good", srv.port, good_tls, PASSWORD),
            job("wrong_password", srv.port, good_tls, "guess"),
            job("no_client_cert", srv.port, {"ca_file": str(pki.ca.cert)}, PASSWORD),
        ]
        with prometheus_server(tmp_path, jobs) as prom:
            want = {"good": "1", "wrong_password": "0", "no_client_cert": "0"}
            wait_until(lambda: up_by_job(prom) == want, timeout=30, what=f"up by job == {want}")
            # Prometheus reads our own refusal counters through the good job
            def refused(reason: str) -> float:
                r = promql(prom, f'hostmon_web_requests_refused_total{{job="good",reason="{reason}"}}')
                return float(r[0]["value"][1]) if r else 0.0

            wait_until(lambda: refused("auth_failed") >= 1 and refused("tls_client_cert_missing") >= 1,
                       timeout=30, what="refusals visible in Prometheus")
        assert srv.refused("auth_missing") == 0  # Prometheus always sent its credentials


def test_prometheus_scrapes_the_real_agent_over_tls_with_basic_auth(tmp_path: Path, pki: PKI) -> None:
    port = free_port()
    conf = tmp_path / "hostmon.toml"
    conf.write_text(
        f"""
tenant_id = "acme"
[http]
listen = "127.0.0.1:{port}"
[shipping]
enabled = false
[web]
basic_auth_users = {{ prometheus = "{HASH}" }}
[web.tls_server_config]
cert_file = "{pki.server.cert}"
key_file = "{pki.server.key}"
"""
    )
    env = {"HOSTMON_STATE_DIR": str(tmp_path / "state")}
    ctx = client_ctx(pki.ca.cert)
    with hostmon_process(["run", "--config", str(conf)], env=env) as agent:
        url = f"https://127.0.0.1:{port}"

        def healthz() -> bool:
            if agent.poll() is not None:
                raise AssertionError(f"agent exited: {agent.stderr.read().decode() if agent.stderr else ''}")
            return https_status(url + "/healthz", ctx) == 200

        wait_until(healthz, timeout=30, what="agent /healthz over TLS without credentials")
        assert https_status(url + "/metrics", ctx) == 401
        tls = {"ca_file": str(pki.ca.cert)}
        with prometheus_server(tmp_path, [job("agent", port, tls, PASSWORD), job("agent_bad", port, tls, "nope")]) as prom:
            wait_until(lambda: up_by_job(prom) == {"agent": "1", "agent_bad": "0"}, timeout=30, what="up agent=1, agent_bad=0")
            assert promql(prom, 'hostmon_build_info{job="agent", tenant_id="acme"}')


def https_status(url: str, ctx: Any) -> int:
    import urllib.request

    try:
        with urllib.request.urlopen(url, context=ctx, timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except OSError:
        return 0


