"""Kubernetes manifests: schema-valid for a pinned Kubernetes, and consistent with the agent's config."""

from __future__ import annotations

import copy
import os
import posixpath
import re
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hostmond.agent import config as agent_config
from packaging_testutil import in_ci

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "packaging" / "kubernetes"
# Pinned: the oldest Kubernetes release still in common support when this was
# written; kubernetes-validate ships its OpenAPI schemas offline.
K8S_VERSION = "1.30.0"
# Custom resources have no schema in kubernetes-validate; they are checked by
# test_podmonitors_select_the_pods_and_ports instead.
CRD_KINDS = {("monitoring.coreos.com/v1", "PodMonitor")}
VALIDATE_HINT = "pip install kubernetes-validate"


def kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def resources() -> Iterator[tuple[str, dict[str, Any]]]:
    for name in kustomization()["resources"]:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            if doc:
                yield name, doc


def generated_configmaps() -> list[dict[str, Any]]:
    """The ConfigMaps kustomize's configMapGenerator makes (without the hash suffix)."""
    out = []
    for gen in kustomization().get("configMapGenerator", []):
        data: dict[str, str] = {}
        for lit in gen.get("literals", []):
            k, _, v = lit.partition("=")
            data[k] = v
        for f in gen.get("files", []):
            k, _, src = f.partition("=")
            data[k] = (K8S / (src or k)).read_text()
        out.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]}, "data": data})
    return out


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for _, d in resources() if d["kind"] == kind]


def agent_daemonset() -> dict[str, Any]:
    (ds,) = by_kind("DaemonSet")
    return ds


@pytest.fixture(scope="module")
def kv(require_module: Callable[[str, str], object]) -> Any:
    return require_module("kubernetes_validate", VALIDATE_HINT)


def test_kustomization_lists_every_manifest() -> None:
    listed = set(kustomization()["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    for gen in kustomization()["configMapGenerator"]:
        for f in gen.get("files", []):
            assert (K8S / f.partition("=")[2]).is_file(), f


@pytest.mark.parametrize("name", sorted(kustomization()["resources"]))
def test_manifest_is_valid_for_pinned_kubernetes(name: str, kv: Any) -> None:
    docs = [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    assert docs
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
            continue
        # strict: unknown fields (typos) are errors too
        kv.validate(doc, K8S_VERSION, strict=True)


def test_generated_configmaps_are_valid(kv: Any) -> None:
    for cm in generated_configmaps():
        kv.validate(cm, K8S_VERSION, strict=True)


def test_validation_catches_a_typo(kv: Any) -> None:
    ds = copy.deepcopy(agent_daemonset())
    ds["spec"]["template"]["spec"]["hostPid"] = True  # should be hostPID
    with pytest.raises(kv.ValidationError):
        kv.validate(ds, K8S_VERSION, strict=True)
    ds = copy.deepcopy(agent_daemonset())
    ds["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["periodSeconds"] = "often"
    with pytest.raises(kv.ValidationError):
        kv.validate(ds, K8S_VERSION, strict=True)


def agent_container(ds: dict[str, Any]) -> dict[str, Any]:
    (c,) = [c for c in ds["spec"]["template"]["spec"]["containers"] if c["name"] == "agent"]
    return c


def agent_env(c: dict[str, Any], pod_ip: str = "10.1.2.3") -> dict[str, str]:
    """Literal env values, with the downward-API ones filled as the kubelet would."""
    env: dict[str, str] = {}
    for e in c["env"]:
        if "value" in e:
            v = e["value"]
            for k, val in env.items():
                v = v.replace(f"$({k})", val)
            env[e["name"]] = v
        elif e["valueFrom"].get("fieldRef", {}).get("fieldPath") == "status.podIP":
            env[e["name"]] = pod_ip
        elif e["valueFrom"].get("fieldRef", {}).get("fieldPath") == "spec.nodeName":
            env[e["name"]] = "worker-7"
        elif "configMapKeyRef" in e["valueFrom"]:
            ref = e["valueFrom"]["configMapKeyRef"]
            (cm,) = [m for m in generated_configmaps() if m["metadata"]["name"] == ref["name"]]
            env[e["name"]] = cm["data"][ref["key"]]
    return env


def host_path_of(ds: dict[str, Any], container_path: str) -> tuple[str, dict[str, Any]]:
    """Which volume serves container_path, and the path inside that volume."""
    c = agent_container(ds)
    best = None
    for m in c["volumeMounts"]:
        mp = m["mountPath"].rstrip("/") or "/"
        on_mount = container_path == mp or container_path.startswith(mp + "/")
        if on_mount and (best is None or len(mp) > len(best["mountPath"])):
            best = m
    assert best is not None, f"{container_path} is not on any volume mount"
    (vol,) = [v for v in ds["spec"]["template"]["spec"]["volumes"] if v["name"] == best["name"]]
    rel = posixpath.relpath(container_path, best["mountPath"])
    return rel, {"mount": best, "volume": vol}


def test_daemonset_env_loads_as_agent_config_pointing_at_the_host(tmp_path: Path) -> None:
    """The DaemonSet's config file plus env, loaded by the agent's own loader, point at the host."""
    ds = agent_daemonset()
    c = agent_container(ds)
    env = agent_env(c)
    (cm,) = [m for m in generated_configmaps() if m["metadata"]["name"] == "hostmon-agent-config"]
    cfg_file = tmp_path / "hostmon.toml"
    cfg_file.write_text(cm["data"]["hostmon.toml"])
    cfg = agent_config.load(str(cfg_file), environ=env)

    # the config file the container is told to read is the ConfigMap's
    args = c["args"]
    cfg_path = args[args.index("--config") + 1]
    rel, where = host_path_of(ds, cfg_path)
    assert where["volume"].get("configMap", {}).get("name") == "hostmon-agent-config"
    assert where["mount"].get("subPath") == "hostmon.toml"

    assert cfg.tenant_id == "default"
    assert cfg.tags["node"] == "worker-7"
    # /proc, /sys and / of the host, read-only, through the host-root mount
    for value, host in ((cfg.paths.proc_root, "/proc"), (cfg.paths.sys_root, "/sys"), (cfg.paths.rootfs, "/")):
        rel, where = host_path_of(ds, value)
        assert where["volume"]["hostPath"]["path"] == "/", value
        assert posixpath.normpath(posixpath.join("/", rel)) == host
        assert where["mount"]["readOnly"] is True
    # writable state on the host (cursors and spool survive pod replacement)
    rel, where = host_path_of(ds, cfg.resolved_state_dir())
    assert where["volume"]["hostPath"]["path"] == "/var/lib/hostmon" and rel == "."
    assert not where["mount"].get("readOnly", False)
    # keys from the Secret (copied by the prepare init container) under /etc/hostmon/keys
    for key in (cfg.shipping.agent_key, cfg.shipping.ingest_public_key):
        rel, where = host_path_of(ds, key)
        assert where["mount"]["name"] == "keys"
    # listens on the pod (= node) IP at the port the probes and the Service use
    host, port = agent_config.parse_listen(cfg.http.listen)
    assert host == "10.1.2.3"
    (p,) = c["ports"]
    assert p["containerPort"] == port and p["name"] == "metrics"
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}


def test_typo_in_a_daemonset_env_key_is_a_config_error() -> None:
    """The check above can fail: the loader rejects an env key that is not a config key."""
    env = agent_env(agent_container(agent_daemonset()))
    env["HOSTMON_PATHS__PROCROOT"] = "/host/proc"
    with pytest.raises(Exception, match="(?i)procroot"):
        agent_config.load(None, environ=env)


def test_host_logs_and_journals_are_mounted_read_only() -> None:
    ds = agent_daemonset()
    # /etc/machine-id too: journalctl reads the journal of the machine it names (the node's)
    for path in ("/var/log", "/var/log/journal", "/run/log/journal", "/etc/machine-id"):
        rel, where = host_path_of(ds, path)
        assert rel == "."
        assert where["volume"]["hostPath"]["path"] == path
        assert where["mount"]["readOnly"] is True


def test_daemonset_security_and_scheduling() -> None:
    ds = agent_daemonset()
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostPID"] is True and pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert {"operator": "Exists"} in pod["tolerations"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    c = agent_container(ds)
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert set(c["resources"]) == {"requests", "limits"}
    # the init container: root, but only CHOWN
    (init,) = pod["initContainers"]
    assert init["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
    assert init["securityContext"]["readOnlyRootFilesystem"] is True
    # every volume but the state directory and memory/tmp scratch is read-only in the agent
    writable = {m["name"] for m in c["volumeMounts"] if not m.get("readOnly")}
    assert writable == {"state", "tmp"}


def test_podmonitors_select_the_pods_and_ports() -> None:
    """PodMonitor is a CRD kubernetes-validate has no schema for: check its shape and wiring here."""
    workloads = by_kind("DaemonSet") + by_kind("Deployment")
    monitors = by_kind("PodMonitor")
    assert {m["metadata"]["name"] for m in monitors} == {"hostmon-agent", "hostmon-ingest"}
    jobs = set()
    for m in monitors:
        assert m["apiVersion"] == "monitoring.coreos.com/v1"
        assert set(m["spec"]) <= {"jobLabel", "selector", "podMetricsEndpoints", "namespaceSelector"}
        sel = m["spec"]["selector"]["matchLabels"]
        matched = [w for w in workloads if sel.items() <= w["spec"]["template"]["metadata"]["labels"].items()]
        assert len(matched) == 1, m["metadata"]["name"]
        w = matched[0]
        labels = w["spec"]["template"]["metadata"]["labels"]
        jobs.add(labels[m["spec"]["jobLabel"]])
        port_names = {p["name"] for c in w["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
        for ep in m["spec"]["podMetricsEndpoints"]:
            assert set(ep) <= {"port", "path", "interval", "scrapeTimeout", "relabelings", "metricRelabelings", "scheme"}
            assert ep["port"] in port_names
            assert ep["path"] == "/metrics"
    # the job names the alert rules select on
    assert jobs == {"hostmon", "hostmon-ingest"}


def test_services_select_the_workloads() -> None:
    workloads = by_kind("DaemonSet") + by_kind("Deployment")
    for svc in by_kind("Service"):
        sel = svc["spec"]["selector"]
        (w,) = [w for w in workloads if sel.items() <= w["spec"]["template"]["metadata"]["labels"].items()]
        port_names = {p["name"] for c in w["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] in port_names


def test_agent_ships_to_the_ingest_service() -> None:
    (cm,) = [m for m in generated_configmaps() if m["metadata"]["name"] == "hostmon-agent-config"]
    import tomllib

    url = tomllib.loads(cm["data"]["hostmon.toml"])["shipping"]["ingest_url"]
    ns = kustomization()["namespace"]
    (svc,) = [s for s in by_kind("Service") if s["metadata"]["name"] == "hostmon-ingest"]
    assert url == f"http://hostmon-ingest.{ns}.svc:{svc['spec']['ports'][0]['port']}"


def hostmon(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess (the installed console script's entry point)."""
    import os
    import sys

    return subprocess.run(
        [sys.executable, "-c", "import sys; from hostmond.cli import main; sys.exit(main(sys.argv[1:]))", *argv],
        check=False, capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_shipped_configs_pass_check_config_with_real_keys(tmp_path: Path) -> None:
    """agent-hostmon.toml and ingest.toml, with the key paths pointed at fresh keys, pass check-config."""
    keys = tmp_path / "keys"
    for kind in ("agent", "ingest"):
        proc = hostmon("keys", kind, "--dir", str(keys))
        assert proc.returncode == 0, proc.stderr
    agent_toml = tmp_path / "hostmon.toml"
    agent_toml.write_text((K8S / "agent-hostmon.toml").read_text().replace("/etc/hostmon/keys", str(keys)))
    ds_env = agent_env(agent_container(agent_daemonset()))
    ds_env["HOSTMON_STATE_DIR"] = str(tmp_path / "state")  # the hostPath, here
    proc = hostmon("check-config", str(agent_toml), env=ds_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ingest_toml = tmp_path / "ingest.toml"
    ingest_toml.write_text(
        (K8S / "ingest.toml")
        .read_text()
        .replace("/etc/hostmon/keys", str(keys))
        .replace("/var/lib/hostmon-ingest", str(tmp_path))
    )
    proc = hostmon("ingest", "check-config", str(ingest_toml))
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --------------------------------------------------------------------------- TLS files (issue 7)
# Which shipped config names which workload, and the optional TLS Secret that feeds it.
TLS_WIRING = {
    "agent": ("agent-hostmon.toml", "DaemonSet", "agent", "hostmon-agent-tls"),
    "ingest": ("ingest.toml", "Deployment", "ingest", "hostmon-ingest-tls"),
}
TLS_KEYS = {
    "web.tls_server_config": ("cert_file", "key_file", "client_ca_file"),
    "shipping": ("ca_file", "client_cert", "client_key"),
}
SECRET_KEYS = {"web.tls_server_config.key_file", "shipping.client_key"}


def tls_paths(cfg: dict[str, Any]) -> dict[str, str]:
    """``section.key`` -> path for every TLS file a config names."""
    out = {}
    for section, keys in TLS_KEYS.items():
        table: dict[str, Any] = cfg
        for part in section.split("."):
            table = table.get(part, {})
        for key in keys:
            if table.get(key):
                out[f"{section}.{key}"] = table[key]
    return out


def workload(kind: str) -> dict[str, Any]:
    (w,) = by_kind(kind)
    return w


def container_named(pod: dict[str, Any], name: str) -> dict[str, Any]:
    (c,) = [c for c in pod["containers"] + pod.get("initContainers", []) if c["name"] == name]
    return c


def volume_at(pod: dict[str, Any], container: dict[str, Any], path: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(path inside the volume, the mount, the volume) that serve ``path`` in ``container``."""
    best = None
    for m in container["volumeMounts"]:
        mp = m["mountPath"].rstrip("/") or "/"
        if (path == mp or path.startswith(mp + "/")) and (best is None or len(mp) > len(best["mountPath"])):
            best = m
    assert best is not None, f"{path} is on no volume mount of container {container['name']}"
    (vol,) = [v for v in pod["volumes"] if v["name"] == best["name"]]
    return posixpath.relpath(path, best["mountPath"]), best, vol


@pytest.mark.parametrize("server", sorted(TLS_WIRING))
def test_commented_tls_paths_agree_with_the_secret_mounts(server: str) -> None:
    """The commented TLS settings name files on a read-only volume that the init container fills from the optional Secret."""
    toml_name, kind, container_name, secret_name = TLS_WIRING[server]
    import tomllib

    from packaging_testutil import commented_settings, uncomment

    text = (K8S / toml_name).read_text()
    shipped = tls_paths(tomllib.loads(text))
    assert shipped == {}, f"{toml_name} turns TLS on by default; the Secret is optional"
    paths = tls_paths(tomllib.loads(uncomment(text)))
    assert {"web.tls_server_config.cert_file", "web.tls_server_config.key_file"} <= set(paths), commented_settings(text)

    pod = workload(kind)["spec"]["template"]["spec"]
    main = container_named(pod, container_name)
    (init,) = pod["initContainers"]
    # the optional Secret, read-only in the init container only
    (secret_vol,) = [v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == secret_name]
    assert secret_vol["secret"]["optional"] is True
    assert secret_vol["secret"]["defaultMode"] & 0o007 == 0, "Secret files readable by others"
    (secret_mount,) = [m for m in init["volumeMounts"] if m["name"] == secret_vol["name"]]
    assert secret_mount["readOnly"] is True
    assert all(m["name"] != secret_vol["name"] for m in main["volumeMounts"])

    script = init["command"][-1]
    for key, path in paths.items():
        rel, mount, vol = volume_at(pod, main, path)
        assert mount.get("readOnly") is True, f"{key}: {path} is writable in the {container_name} container"
        assert vol.get("emptyDir", {}).get("medium") == "Memory", f"{key}: {path} is not on a memory volume"
        # the init container writes that same volume at the same path, from the Secret file of the same name
        (init_mount,) = [m for m in init["volumeMounts"] if m["name"] == vol["name"]]
        assert init_mount["mountPath"] == mount["mountPath"]
        name = posixpath.basename(rel)
        m = re.search(rf"^\s*tls {re.escape(name)} (0[0-7]{{3}})$", script, re.MULTILINE)
        assert m, f"{key}: the init container does not copy {name}"
        mode = int(m.group(1), 8)
        if key in SECRET_KEYS:
            assert mode == 0o600, f"{key}: {name} copied with mode {mode:04o}"
        else:
            assert mode & 0o044 == 0o044, f"{key}: {name} copied with mode {mode:04o}"
    # tls() copies from the Secret's mount to the volume the config reads
    (func,) = re.findall(r'^\s*tls\(\) \{.*(?:install|give) .*"([^"]+)/\$1" "([^"]+)/\$1".*\}$', script, re.MULTILINE)
    src_dir, dst_dir = func
    assert src_dir == secret_mount["mountPath"]
    assert {posixpath.dirname(p) for p in paths.values()} == {dst_dir}


def need_root_for_init_scripts() -> None:
    if os.geteuid() != 0:
        msg = "running the init containers' scripts (chown to uid 10001) needs root"
        if in_ci():
            pytest.fail(msg)
        pytest.skip(msg)


def init_container_argv(init: dict[str, Any], script: str) -> list[str]:
    """The script under the init container's uid and capabilities: setpriv, as root with only the added ones.

    Full root (every capability) would hide what the container may not do:
    chmod a file it gave away needs CAP_FOWNER, which the container lacks.
    """
    sc = init.get("securityContext", {})
    argv = ["/bin/sh", "-ec", script]
    if sc.get("runAsUser", 0) != 0 or sc.get("capabilities", {}).get("drop") != ["ALL"]:
        return argv
    caps = ",".join(["-all", *("+" + c.lower() for c in sc["capabilities"].get("add", []))])
    return ["setpriv", "--bounding-set", caps, "--inh-caps", "-all", "--", *argv]


def run_init_container(pod: dict[str, Any], root: Path, secrets: dict[str, dict[str, bytes]]) -> dict[str, Path]:
    """Run the pod's init container script with /bin/sh, each of its volume mounts replaced by ``root/VOLUME``.

    ``secrets`` maps a Secret name to its files; they are written with the
    volume's defaultMode (and root's ownership) as the kubelet writes them.
    The script runs with the container's capabilities (init_container_argv),
    and twice: the second time as the next pod on the same node, whose
    hostPath state directory the first one gave to the agent.
    Returns volume name -> directory.
    """
    (init,) = pod["initContainers"]
    assert init["command"][:2] == ["/bin/sh", "-ec"]
    dirs: dict[str, Path] = {}
    for m in init["volumeMounts"]:
        d = root / m["name"]
        d.mkdir(parents=True)
        dirs[m["name"]] = d
        (vol,) = [v for v in pod["volumes"] if v["name"] == m["name"]]
        if "secret" in vol:
            for fname, data in secrets.get(vol["secret"]["secretName"], {}).items():
                (d / fname).write_bytes(data)
                (d / fname).chmod(vol["secret"]["defaultMode"])
        elif "emptyDir" in vol:
            d.chmod(0o777)
    mounts = sorted(init["volumeMounts"], key=lambda m: len(m["mountPath"]), reverse=True)
    pattern = re.compile("|".join(re.escape(m["mountPath"]) for m in mounts))
    by_path = {m["mountPath"]: str(dirs[m["name"]]) for m in mounts}
    script = pattern.sub(lambda mo: by_path[mo.group(0)], init["command"][-1])
    for start in ("first", "next"):
        proc = subprocess.run(init_container_argv(init, script), check=False, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"{start} pod start: {proc.stderr}"
    return dirs


def secret_files(tmp_path: Path) -> dict[str, dict[str, bytes]]:
    """Real key pairs and certificates, as the Secrets the docs tell the operator to create."""
    from packaging_testutil import write_tls_files

    keys = tmp_path / "made-keys"
    for kind in ("agent", "ingest"):
        proc = hostmon("keys", kind, "--dir", str(keys))
        assert proc.returncode == 0, proc.stderr
    tls = {name: p.read_bytes() for name, p in write_tls_files(tmp_path / "made-tls").items()}
    return {
        "hostmon-agent-keys": {n: (keys / n).read_bytes() for n in ("agent.key", "ingest.pub")},
        "hostmon-ingest-keys": {"ingest.key": (keys / "ingest.key").read_bytes()},
        "hostmon-agent-tls": tls,
        "hostmon-ingest-tls": tls,
    }


def mapped_config(text: str, pod: dict[str, Any], container: dict[str, Any], dirs: dict[str, Path]) -> str:
    """The config text with each /etc/hostmon/... path pointed at the directory that stands for its volume here."""

    def repl(mo: re.Match[str]) -> str:
        rel, _, vol = volume_at(pod, container, mo.group(1))
        return '"' + str(dirs[vol["name"]] / rel) + '"'

    return re.sub(r'"(/etc/hostmon/(?:keys|tls)/[^"]+)"', repl, text)


@pytest.mark.parametrize("server", sorted(TLS_WIRING))
def test_init_container_copies_the_tls_secret_and_the_server_config_loads(server: str, tmp_path: Path) -> None:
    """The real init script, run on a Secret with real certificates, leaves files the uncommented config accepts.

    And with the optional Secret absent, the script still succeeds and the shipped (commented) config loads.
    """
    need_root_for_init_scripts()
    toml_name, kind, container_name, secret_name = TLS_WIRING[server]
    pod = workload(kind)["spec"]["template"]["spec"]
    main = container_named(pod, container_name)
    text = (K8S / toml_name).read_text()
    from packaging_testutil import uncomment

    secrets = secret_files(tmp_path)
    for with_tls in (True, False):
        root = tmp_path / ("with" if with_tls else "without")
        given = secrets if with_tls else {k: v for k, v in secrets.items() if k != secret_name}
        dirs = run_init_container(pod, root, given)
        copied = sorted(p.name for p in dirs["tls"].iterdir())
        assert copied == (sorted(secrets[secret_name]) if with_tls else []), copied
        for p in dirs["tls"].iterdir():
            st = p.stat()
            assert p.read_bytes() == secrets[secret_name][p.name]
            if p.name.endswith(".key"):
                assert stat.S_IMODE(st.st_mode) == 0o600
            if server == "agent":  # written for the agent's uid by the root init container
                assert (st.st_uid, st.st_gid) == (10001, 10001)
        cfg_text = mapped_config(uncomment(text) if with_tls else text, pod, main, dirs)
        cfg = root / toml_name
        env = dict(os.environ)
        if server == "agent":
            cfg.write_text(cfg_text)
            env.update(agent_env(main), HOSTMON_STATE_DIR=str(dirs["state"]))
            proc = hostmon("check-config", str(cfg), env=env)
        else:
            cfg.write_text(cfg_text.replace("/var/lib/hostmon-ingest", str(root)))
            proc = hostmon("ingest", "check-config", str(cfg))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        if with_tls:
            # the check above read the copied files: a key others may read is refused
            (dirs["tls"] / "tls.key").chmod(0o644)
            again = subprocess.run(proc.args, check=False, capture_output=True, text=True, timeout=60, env=env)
            assert again.returncode != 0 and "tls.key" in again.stderr, again.stdout + again.stderr
