#!/usr/bin/env python3
"""Render the kustomize base in this directory into pods that ``podman kube play`` runs on one machine.

Used by try-local.sh (read it first). Reads the same files ``kubectl apply -k``
applies (kustomization.yaml's resources, its configMapGenerator and images),
and changes only what a single machine without a cluster needs, each change
named here:

- The DaemonSet's and the Deployment's pod templates become Pods (podman
  4.3 plays Pods, Deployments and PVCs, not DaemonSets), restartPolicy
  OnFailure (podman 4.3 restarts a finished init container under Always).
- ``image: hostmon`` becomes ``--image`` (kustomize's ``images:`` does that).
- Secret and ConfigMap volumes become hostPath directories under ``--out``
  holding the same files with the volume's defaultMode, owned as the kubelet
  makes them (root; group fsGroup where the pod sets one); environment
  variables taken from a ConfigMap get its value. The Secrets are made from the
  keys in ``--keys``; the ingest's config gets ``[[agents]]`` enrolling
  ``agent.pub`` for the tenant.
- ``$(VAR)`` references in env values are expanded (the kubelet does that).
- The downward API: ``status.podIP`` is 127.0.0.1 (the agent listens on the
  machine's loopback only), ``spec.nodeName`` the machine's host name.
- Ports: the agent's becomes ``--agent-port`` (its default may be taken on a
  shared machine), and its ``ports:`` list goes (podman refuses port mappings on the
  host's network); the ingest's is published on 127.0.0.1:``--ingest-port`` and the
  agent ships there (no cluster DNS for hostmon-ingest.hostmon.svc).
- emptyDir volumes become hostPath directories under ``--out`` with the
  kubelet's emptyDir mode, 0777: podman makes them anonymous volumes and
  chowns them to the first container's user, so the root init container
  (no CAP_DAC_OVERRIDE) could not write the agent's keys there. The
  ``medium: Memory`` of the keys volumes is not kept (test keys only).
- A ``subPath`` mount of a ConfigMap becomes a mount of that one file
  (podman ignores subPath on hostPath volumes).
- ``--name`` (default hostmon) names the pods NAME-agent and NAME-ingest and
  the ingest's claim NAME-ingest-data, so two tries can share a machine.
- The agent's state directory (hostPath /var/lib/hostmon) is ``--out``/host-state,
  so trying it leaves the machine's /var/lib alone.

Needs PyYAML. Writes agent-pod.yaml and ingest.yaml into ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
AGENT_STATE_HOST_PATH = "/var/lib/hostmon"


def kustomization() -> dict[str, Any]:
    return yaml.safe_load((HERE / "kustomization.yaml").read_text())


def resources() -> list[dict[str, Any]]:
    out = []
    for name in kustomization()["resources"]:
        out += [d for d in yaml.safe_load_all((HERE / name).read_text()) if d]
    return out


def configmaps() -> dict[str, dict[str, str]]:
    """name -> data, as the configMapGenerator makes them."""
    out: dict[str, dict[str, str]] = {}
    for gen in kustomization().get("configMapGenerator", []):
        data: dict[str, str] = {}
        for lit in gen.get("literals", []):
            k, _, v = lit.partition("=")
            data[k] = v
        for f in gen.get("files", []):
            k, _, src = f.partition("=")
            data[k] = (HERE / (src or k)).read_text()
        out[gen["name"]] = data
    return out


def materialize(directory: Path, files: dict[str, bytes], mode: int, gid: int = 0) -> None:
    """A Secret/ConfigMap volume as the kubelet writes it: one file per key, ``mode``, owner root."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    directory.chmod(0o755)
    for key, data in files.items():
        path = directory / key
        path.write_bytes(data)
        path.chmod(mode)
        if os.geteuid() == 0:
            os.chown(path, 0, gid)


def render(args: argparse.Namespace) -> None:
    out: Path = args.out.resolve()
    keys: Path = args.keys.resolve()
    out.mkdir(parents=True, exist_ok=True)
    docs = resources()
    cms = configmaps()
    cms["hostmon-tenant"]["tenant-id"] = args.tenant
    agent_pub = (keys / "agent.pub").read_text().strip()
    cms["hostmon-ingest-config"]["ingest.toml"] += (
        f'\n[[agents]]\nname = "try-local"\npublic_key = "{agent_pub}"\ntenants = ["{args.tenant}"]\n'
    )
    secrets = {
        "hostmon-agent-keys": {k: (keys / k).read_bytes() for k in ("agent.key", "ingest.pub")},
        "hostmon-ingest-keys": {"ingest.key": (keys / "ingest.key").read_bytes()},
    }
    downward = {"status.podIP": "127.0.0.1", "spec.nodeName": socket.gethostname()}

    def fix_pod_spec(spec: dict[str, Any], prefix: str) -> None:
        fs_group = spec.get("securityContext", {}).get("fsGroup", 0)
        for vol in spec["volumes"]:
            if "secret" in vol:
                src = vol.pop("secret")
                name = src["secretName"]
                path = out / "volumes" / prefix / vol["name"]
                if name in secrets:
                    materialize(path, secrets[name], src.get("defaultMode", 0o644), fs_group)
                elif src.get("optional"):
                    materialize(path, {}, 0o644)  # an optional Secret that does not exist: empty
                else:
                    sys.exit(f"render-podman: Secret {name} is not made here")
                vol["hostPath"] = {"path": str(path), "type": "Directory"}
            elif "configMap" in vol:
                src = vol.pop("configMap")
                path = out / "volumes" / prefix / vol["name"]
                data = {k: v.encode() for k, v in cms[src["name"]].items()}
                materialize(path, data, src.get("defaultMode", 0o644), fs_group)
                vol["hostPath"] = {"path": str(path), "type": "Directory"}
            elif "emptyDir" in vol:
                vol.pop("emptyDir")
                path = out / "volumes" / prefix / vol["name"]
                if path.exists():
                    shutil.rmtree(path)
                path.mkdir(parents=True)
                path.chmod(0o777)  # the kubelet's emptyDir mode
                vol["hostPath"] = {"path": str(path), "type": "Directory"}
            elif vol.get("hostPath", {}).get("path") == AGENT_STATE_HOST_PATH:
                vol["hostPath"]["path"] = str(out / "host-state")
        # podman (4.3) ignores subPath on a hostPath volume: mount the file itself.
        vols = {v["name"]: v for v in spec["volumes"]}
        for c in spec.get("initContainers", []) + spec["containers"]:
            for m in c.get("volumeMounts", []):
                sub = m.pop("subPath", None)
                if sub is None:
                    continue
                name = f"{m['name']}-{sub.replace('.', '-').replace('/', '-')}"
                path = f"{vols[m['name']]['hostPath']['path']}/{sub}"
                if name not in vols:
                    vols[name] = {"name": name, "hostPath": {"path": path, "type": "File"}}
                    spec["volumes"].append(vols[name])
                m["name"] = name
        for c in spec.get("initContainers", []) + spec["containers"]:
            c["image"] = args.image
            for e in c.get("env", []):
                ref = e.get("valueFrom")
                if not ref:
                    continue
                if "configMapKeyRef" in ref:
                    cm = ref["configMapKeyRef"]
                    e["value"] = cms[cm["name"]][cm["key"]]
                elif "fieldRef" in ref:
                    e["value"] = downward[ref["fieldRef"]["fieldPath"]]
                del e["valueFrom"]
            # The kubelet expands $(NAME) from the variables defined before;
            # podman (4.3) does not.
            seen: dict[str, str] = {}
            for e in c.get("env", []):
                for k, v in seen.items():
                    e["value"] = e["value"].replace(f"$({k})", v)
                seen[e["name"]] = e["value"]

    def pod_of(template: dict[str, Any], name: str) -> dict[str, Any]:
        meta = copy.deepcopy(template["metadata"])
        meta["name"] = name
        spec = copy.deepcopy(template["spec"])
        # podman 4.3 gives init containers the pod's restart policy: with
        # Always, the finished init container is restarted and removing it
        # fails ("cannot remove container ... as it is running"; podman
        # issues 16343, 18477). OnFailure still restarts a crashed server.
        spec["restartPolicy"] = "OnFailure"
        return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}

    # The agent: the DaemonSet's pod template as a Pod.
    (ds,) = [d for d in docs if d["kind"] == "DaemonSet"]
    agent = pod_of(ds["spec"]["template"], f"{args.name}-agent")
    fix_pod_spec(agent["spec"], "agent")
    (ac,) = [c for c in agent["spec"]["containers"] if c["name"] == "agent"]
    (metrics_port,) = [p["containerPort"] for p in ac["ports"] if p["name"] == "metrics"]
    for e in ac["env"]:
        if e["name"] == "HOSTMON_LISTEN":
            e["value"] = e["value"].replace(f":{metrics_port}", f":{args.agent_port}")
    ac["env"].append({"name": "HOSTMON_SHIPPING__INGEST_URL", "value": f"http://127.0.0.1:{args.ingest_port}"})
    # hostNetwork: podman (4.3) refuses port mappings with the host's network
    # (the kubelet takes them as documentation); probes name the port by number.
    ports = {p["name"]: p["containerPort"] for p in ac.pop("ports")}
    for probe in ("livenessProbe", "readinessProbe"):
        get = ac[probe]["httpGet"]
        if ports.get(get["port"]) == metrics_port or get["port"] == metrics_port:
            get["port"] = args.agent_port
    (out / "host-state").mkdir(exist_ok=True)
    (out / "agent-pod.yaml").write_text(yaml.safe_dump(agent, sort_keys=False))

    # The ingest: its PVC and the Deployment's pod, the port published on loopback.
    (pvc,) = [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    pvc = copy.deepcopy(pvc)
    pvc["metadata"].pop("namespace", None)
    claim = pvc["metadata"]["name"]
    pvc["metadata"]["name"] = claim.replace("hostmon", args.name, 1)
    ingest = pod_of(dep["spec"]["template"], f"{args.name}-ingest")
    fix_pod_spec(ingest["spec"], "ingest")
    (ic,) = ingest["spec"]["containers"]
    for vol in ingest["spec"]["volumes"]:
        if vol.get("persistentVolumeClaim", {}).get("claimName") == claim:
            vol["persistentVolumeClaim"]["claimName"] = pvc["metadata"]["name"]
    for p in ic["ports"]:
        if p["name"] == "ingest":
            p["hostPort"] = args.ingest_port
            p["hostIP"] = "127.0.0.1"
    (out / "ingest.yaml").write_text(yaml.safe_dump_all([pvc, ingest], sort_keys=False))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image", required=True)
    ap.add_argument("--keys", type=Path, required=True, help="directory with agent.key, agent.pub, ingest.key, ingest.pub")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tenant", default="default")
    ap.add_argument("--name", default="hostmon", help="pods NAME-agent, NAME-ingest; volume NAME-ingest-data")
    ap.add_argument("--agent-port", type=int, default=19435)
    ap.add_argument("--ingest-port", type=int, default=19436)
    render(ap.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
