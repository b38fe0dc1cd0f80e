#!/usr/bin/env bash
# Try the Kubernetes manifests on one machine with podman, without a cluster:
# the agent DaemonSet's pod (host PID and network, the host's / read-only at
# /host, every capability dropped) and the ingest Deployment's pod, rendered
# from this kustomize base by render-podman.py (which says what it changes),
# with new test keys in the Secrets and the agent enrolled in the ingest.
#
#   bash packaging/kubernetes/try-local.sh [--image IMAGE] [--agent-port N] [--ingest-port N] [--name NAME]
#   bash packaging/kubernetes/try-local.sh [--name NAME] --down
#
# The pods are NAME-agent and NAME-ingest (default NAME: hostmon), the
# ingest's volume NAME-ingest-data.
# Without --image it builds packaging/docker/Dockerfile as localhost/hostmon:try-local
# (extra `podman build` arguments in $HOSTMON_BUILD_ARGS, for instance
# "--build-arg BASE_IMAGE=..."). Files (keys, rendered pods, the agent's
# state directory) go to $HOSTMON_TRY_DIR (default /var/tmp/NAME-try-local);
# --down removes the pods, the ingest's volume and that directory.
# Needs podman (Debian: apt-get install podman; where crun cannot run
# containers, also runc and `runtime = "runc"` in containers.conf), python3
# with PyYAML, and root (hostPID, hostNetwork and a uid-0 init container).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
NAME=hostmon
IMAGE=""
AGENT_PORT=19435
INGEST_PORT=19436
DOWN=0
WAIT=${HOSTMON_TRY_WAIT:-120}

die() { echo "try-local.sh: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
    case "$1" in
        --image) IMAGE=$2; shift 2 ;;
        --agent-port) AGENT_PORT=$2; shift 2 ;;
        --ingest-port) INGEST_PORT=$2; shift 2 ;;
        --name) NAME=$2; shift 2 ;;
        --down) DOWN=1; shift ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done

DIR=${HOSTMON_TRY_DIR:-/var/tmp/$NAME-try-local}

command -v podman >/dev/null \
    || die "podman not found: install it (Debian/Ubuntu: apt-get install podman runc) or use a real cluster (README, 'Run in Kubernetes')"
python3 -c 'import yaml' 2>/dev/null || die "python3 with PyYAML is needed to render the manifests (apt-get install python3-yaml)"
[ "$(id -u)" = 0 ] || die "run as root: the agent pod uses hostPID, hostNetwork and hostPath volumes"

down() {
    for f in agent-pod.yaml ingest.yaml; do
        if [ -f "$DIR/$f" ]; then podman kube down "$DIR/$f" >/dev/null 2>&1 || true; fi
    done
    # kube down leaves the pods' volumes; the PVC's volume is named after the claim.
    podman pod rm -f -t 5 "$NAME-agent" "$NAME-ingest" >/dev/null 2>&1 || true
    podman volume rm -f "$NAME-ingest-data" >/dev/null 2>&1 || true
    rm -rf "$DIR"
}

if [ "$DOWN" = 1 ]; then
    down
    echo "try-local.sh: removed the pods $NAME-agent and $NAME-ingest, the volume $NAME-ingest-data and $DIR"
    exit 0
fi

if [ -z "$IMAGE" ]; then
    IMAGE=localhost/hostmon:try-local
    # shellcheck disable=SC2086  # HOSTMON_BUILD_ARGS is a list of arguments
    podman build ${HOSTMON_BUILD_ARGS:-} -f "$REPO/packaging/docker/Dockerfile" -t "$IMAGE" "$REPO"
fi
podman image exists "$IMAGE" || die "image $IMAGE not found"

down
mkdir -p "$DIR/keys"
chmod 0700 "$DIR"
# Test keys, made by the image's own hostmon (the host needs no install).
podman run --rm --network none --user 0 -v "$DIR/keys:/keys" "$IMAGE" keys agent --dir /keys >/dev/null
podman run --rm --network none --user 0 -v "$DIR/keys:/keys" "$IMAGE" keys ingest --dir /keys >/dev/null
python3 "$HERE/render-podman.py" --image "$IMAGE" --keys "$DIR/keys" --out "$DIR" \
    --agent-port "$AGENT_PORT" --ingest-port "$INGEST_PORT" --name "$NAME"

podman kube play "$DIR/ingest.yaml" >/dev/null
podman kube play "$DIR/agent-pod.yaml" >/dev/null

# Bounded wait for both to answer.
probe() { python3 - "$1" <<'EOF'
import sys, urllib.request
try:
    urllib.request.urlopen(sys.argv[1], timeout=2).read()
except Exception:
    sys.exit(1)
EOF
}
deadline=$((SECONDS + WAIT))
until probe "http://127.0.0.1:$AGENT_PORT/readyz" && probe "http://127.0.0.1:$INGEST_PORT/healthz"; do
    if [ $SECONDS -ge $deadline ]; then
        podman pod ps --filter "name=$NAME" >&2 || true
        podman logs --tail 20 "$NAME-agent-agent" >&2 || true
        podman logs --tail 20 "$NAME-ingest-ingest" >&2 || true
        die "the pods did not answer within ${WAIT}s (logs above; podman pod ps; --down removes them)"
    fi
    sleep 1
done

cat <<EOF
try-local.sh: running
  agent  /metrics: http://127.0.0.1:$AGENT_PORT/metrics   (pod $NAME-agent, container $NAME-agent-agent)
  ingest:          http://127.0.0.1:$INGEST_PORT/metrics   (pod $NAME-ingest, container $NAME-ingest-ingest)
  batches:         podman exec $NAME-ingest-ingest hostmon ingest query --db /var/lib/hostmon-ingest/ingest.db --tenant default
  files:           $DIR (keys, rendered pods, the agent's state)
  remove:          bash $0 --name $NAME --down
EOF
