#!/usr/bin/env bash
# Check the gpu collector against nvidia-smi on a machine with an NVIDIA GPU, and print its cost per cycle.
#
#   bench/gpu_check.sh              on a GPU host: install hostmon[gpu], compare, time
#   bench/gpu_check.sh --self-test  anywhere: the same script against a fake NVML and a fake nvidia-smi
#                                   (checks the script itself; its figures are not GPU figures)
#
# 1. Installs the extra: pip install -e "ROOT[gpu]"; when PyPI cannot be reached it installs
#    from a wheel folder instead ($GPU_CHECK_WHEELS, default bench/out/wheels, made on a
#    connected machine with: pip download nvidia-ml-py -d bench/out/wheels).
# 2. Runs `hostmon collect --once --format json --collector gpu` and, started at the same
#    moment, nvidia-smi --query-gpu=uuid,memory.total,memory.used,temperature.gpu,power.draw,utilization.gpu
#    (and once more right after hostmon finishes: moving figures are compared with the
#    nearer of the two readings). Pairs GPUs by UUID, prints each pair, and fails past:
#      memory total  1 MiB        memory used  16 MiB       temperature  2 C
#      power         10% or 5 W (the larger)                utilization  15 points
#    A figure that one side reports and the other does not ([N/A]) is a failure too.
# 3. Times the collector in-process: median and p90 of N collect() calls (wall and thread
#    CPU), per GPU, with the default config and with pcie_throughput on, next to the bare
#    NVML calls for the same figures and nvidia-smi's own query, measured in the same run.
#    Target: median under 5 ms per GPU with the default config; over it fails.
#
# Exit: 0 all within tolerance and target, 1 a disagreement or over target, 2 setup failed,
# 77 no NVIDIA GPU on this machine. Work files are kept in $GPU_CHECK_OUT when set (else a temp
# dir removed at exit). GPU_CHECK_RUNS sets N (default 200).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
N=${GPU_CHECK_RUNS:-200}
if [ -n "${GPU_CHECK_OUT:-}" ]; then
    OUT=$GPU_CHECK_OUT
    mkdir -p "$OUT"
else
    OUT=$(mktemp -d -t hostmon-gpu-check.XXXXXX)
    trap 'rm -rf "$OUT"' EXIT
fi
SELF_TEST=0
[ "${1:-}" = "--self-test" ] && SELF_TEST=1
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
QUERY=uuid,memory.total,memory.used,temperature.gpu,power.draw,utilization.gpu

say() { printf '%s\n' "$*"; }

if [ "$SELF_TEST" = 1 ]; then
    say "== SELF-TEST: fake NVML (tests/collectors/fake_nvml.py) and a fake nvidia-smi; no GPU figure below is real"
    mkdir -p "$OUT/bin"
    # what the fake GPU of fake_nvml.one_gpu() reports, as nvidia-smi would print it;
    # GPU_CHECK_SKEW=temperature|memory|power|utilization|na moves one figure out of tolerance
    skew=${GPU_CHECK_SKEW:-}
    temp=41 used=1024 power=71.23 util=37
    case "$skew" in
        temperature) temp=45 ;;
        memory) used=1100 ;;
        power) power=90.00 ;;
        utilization) util=60 ;;
        na) power="[N/A]" ;;
    esac
    cat > "$OUT/bin/nvidia-smi" <<EOF
#!/bin/sh
case "\$*" in
  *-L*) echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-00000000-1111-2222-3333-444444444444)" ;;
  *) echo "GPU-00000000-1111-2222-3333-444444444444, 81559, $used, $temp, $power, $util" ;;
esac
EOF
    chmod +x "$OUT/bin/nvidia-smi"
    export PATH="$OUT/bin:$PATH"
    cat > "$OUT/fake_hostmon.py" <<'EOF'
import importlib.util, os, sys
root = os.environ["GPU_CHECK_ROOT"]
spec = importlib.util.spec_from_file_location("hostmon_fake_nvml", os.path.join(root, "tests/collectors/fake_nvml.py"))
fake = importlib.util.module_from_spec(spec); sys.modules[spec.name] = fake; spec.loader.exec_module(fake)
from hostmond.collectors.gpu import GpuCollector
GpuCollector.nvml_loader = staticmethod(fake.one_gpu)
if len(sys.argv) > 1 and sys.argv[1] == "--loader-only":
    sys.argv.pop(1)
    exec(compile(open(sys.argv[1]).read(), sys.argv[1], "exec"), {"__name__": "__main__"})
else:
    from hostmond.cli import main
    sys.exit(main(sys.argv[1:]))
EOF
    export GPU_CHECK_ROOT="$ROOT"
    HOSTMON=("$PY" "$OUT/fake_hostmon.py")
    TIMER=("$PY" "$OUT/fake_hostmon.py" --loader-only)
else
    if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
        say "no NVIDIA GPU on this machine (nvidia-smi missing or failing): nothing to check"
        exit 77
    fi
    say "== GPUs"
    nvidia-smi -L
    nvidia-smi --query-gpu=driver_version --format=csv,noheader | sed -n '1s/^/driver: /p'
    say "== installing hostmon[gpu]"
    WHEELS=${GPU_CHECK_WHEELS:-$ROOT/bench/out/wheels}
    if ! "$PY" -m pip install -q -e "$ROOT[gpu]" >"$OUT/pip.log" 2>&1; then
        say "pip install -e '.[gpu]' failed (no network?); trying wheels in $WHEELS"
        if [ ! -d "$WHEELS" ] || ! "$PY" -m pip install -q --no-index --find-links "$WHEELS" nvidia-ml-py >>"$OUT/pip.log" 2>&1; then
            tail -5 "$OUT/pip.log"
            say "setup failed: cannot install nvidia-ml-py"
            exit 2
        fi
    fi
    "$PY" -c 'import pynvml, importlib.metadata as m; print("nvidia-ml-py", m.version("nvidia-ml-py"))' || { say "setup failed: pynvml does not import"; exit 2; }
    "$PY" -c 'import hostmond.cli, hostmond.collectors.gpu' || { say "setup failed: hostmon does not import (missing dependencies?)"; exit 2; }
    HOSTMON=("$PY" -m hostmond.cli)
    TIMER=("$PY")
fi

say "== collecting: hostmon and nvidia-smi started together"
now() { "$PY" -c 'import time; print(f"{time.time():.3f}")'; }
t0=$(now)
( set +e; "${HOSTMON[@]}" collect --once --format json --collector gpu >"$OUT/hostmon.json" 2>"$OUT/hostmon.err"; echo $? >"$OUT/hostmon.rc" ) &
hm=$!
nvidia-smi --query-gpu=$QUERY --format=csv,noheader,nounits >"$OUT/smi_before.csv"
t1=$(now)
wait $hm || true
t2=$(now)
nvidia-smi --query-gpu=$QUERY --format=csv,noheader,nounits >"$OUT/smi_after.csv"
t3=$(now)
say "hostmon ran $t0 .. $t2, nvidia-smi read at $t0 .. $t1 and $t2 .. $t3"
if [ "$(cat "$OUT/hostmon.rc" 2>/dev/null)" != 0 ]; then
    cat "$OUT/hostmon.err"
    say "setup failed: hostmon collect exited $(cat "$OUT/hostmon.rc")"
    exit 2
fi

rc=0
"$PY" - "$OUT" <<'EOF' || rc=1
import json, sys

out = sys.argv[1]
MiB = 1024 * 1024
doc = json.load(open(f"{out}/hostmon.json"))
gpus: dict[str, dict[str, float]] = {}
for s in doc["samples"]:
    if s["name"].startswith("hostmon_gpu_") and "uuid" in s["labels"]:
        gpus.setdefault(s["labels"]["uuid"], {"index": s["labels"]["gpu"]})[s["name"]] = float(s["value"])

def smi(path):
    rows = {}
    for line in open(path):
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != 6:
            continue
        vals = [None if c.startswith("[") or c in ("N/A", "") else float(c) for c in cells[1:]]
        rows[cells[0]] = dict(zip(("memory_total", "memory_used", "temperature", "power", "utilization"), vals))
    return rows

before, after = smi(f"{out}/smi_before.csv"), smi(f"{out}/smi_after.csv")
# figure: (hostmon metric, scale to nvidia-smi's unit, tolerance function(smi value) -> allowed diff)
checks = {
    "memory_total": ("hostmon_gpu_memory_total_bytes", 1 / MiB, lambda v: 1.0, "MiB"),
    "memory_used": ("hostmon_gpu_memory_used_bytes", 1 / MiB, lambda v: 16.0, "MiB"),
    "temperature": ("hostmon_gpu_temperature_celsius", 1.0, lambda v: 2.0, "C"),
    "power": ("hostmon_gpu_power_watts", 1.0, lambda v: max(5.0, 0.10 * v), "W"),
    "utilization": ("hostmon_gpu_utilization_ratio", 100.0, lambda v: 15.0, "%"),
}
failures = 0
if not before:
    print("FAIL: nvidia-smi printed no GPU"); sys.exit(1)
for uuid in sorted(before, key=lambda u: gpus.get(u, {}).get("index", "?")):
    mine = gpus.get(uuid)
    print(f"GPU {mine['index'] if mine else '?'} {uuid}")
    if mine is None:
        print("  FAIL: hostmon reported nothing for this GPU"); failures += 1; continue
    if mine.get("hostmon_gpu_up") != 1.0:
        print(f"  FAIL: hostmon_gpu_up = {mine.get('hostmon_gpu_up')}"); failures += 1
    for fig, (metric, scale, tol, unit) in checks.items():
        ours = mine.get(metric)
        ours = None if ours is None else ours * scale
        theirs = [r.get(uuid, {}).get(fig) for r in (before, after)]
        known = [t for t in theirs if t is not None]
        if ours is None and not known:
            print(f"  {fig:13} hostmon n/a        nvidia-smi n/a        ok (neither reports it)"); continue
        if ours is None or not known:
            print(f"  {fig:13} hostmon {ours}  nvidia-smi {theirs}  FAIL: only one side reports it"); failures += 1; continue
        ref = min(known, key=lambda t: abs(t - ours))
        diff, allowed = abs(ours - ref), tol(ref)
        verdict = "ok" if diff <= allowed else "FAIL"
        failures += verdict == "FAIL"
        smi_txt = " / ".join("n/a" if t is None else f"{t:g}" for t in theirs)
        print(f"  {fig:13} hostmon {ours:10.2f} {unit:3}  nvidia-smi {smi_txt:>17} {unit:3}  diff {diff:7.2f} (max {allowed:.2f})  {verdict}")
extra = set(gpus) - set(before)
if extra:
    print(f"FAIL: hostmon reports GPUs nvidia-smi does not list: {sorted(extra)}"); failures += 1
print(f"comparison: {'PASS' if not failures else f'FAIL ({failures} disagreements)'}")
sys.exit(1 if failures else 0)
EOF

say "== cost per cycle (in-process, $N collections)"
cat >"$OUT/timer.py" <<'EOF'
import os, statistics, subprocess, sys, time
from hostmond.api import CollectorContext
from hostmond.collectors.gpu import GpuCollector, GpuConfig

N = int(os.environ.get("GPU_CHECK_RUNS", "200"))
TARGET_MS = 5.0

def measure(fn, n):
    wall, cpu = [], []
    for _ in range(n):
        w0, c0 = time.perf_counter(), time.thread_time()
        fn()
        cpu.append(time.thread_time() - c0); wall.append(time.perf_counter() - w0)
    wall.sort(); cpu.sort()
    return statistics.median(wall) * 1e3, wall[int(0.9 * (len(wall) - 1))] * 1e3, statistics.median(cpu) * 1e3

def run(cfg, n):
    c = GpuCollector(cfg, CollectorContext())
    c.start()
    try:
        for _ in range(5):
            samples = list(c.collect())
        ngpu = len(c._gpus)
        return measure(lambda: list(c.collect()), n) + (ngpu, len(samples))
    finally:
        c.stop()

med, p90, cpu, ngpu, nsamples = run(GpuConfig(), N)
print(f"collector, default config : median {med:.3f} ms  p90 {p90:.3f} ms  thread CPU {cpu:.3f} ms  "
      f"({ngpu} GPU, {nsamples} samples) -> {med / ngpu:.3f} ms per GPU")

nvml = GpuCollector.nvml_loader()
nvml.nvmlInit()
try:
    handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
    def bare():
        # the same NVML calls with no sample building: the floor for this set of figures
        for h in handles:
            for f in (
                lambda: nvml.nvmlDeviceGetUtilizationRates(h),
                lambda: nvml.nvmlDeviceGetMemoryInfo(h, version=nvml.nvmlMemory_v2),
                lambda: nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU),
                lambda: nvml.nvmlDeviceGetPowerUsage(h),
                lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(h),
                lambda: nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM),
                lambda: nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_MEM),
                lambda: nvml.nvmlDeviceGetTotalEccErrors(h, nvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, nvml.NVML_VOLATILE_ECC),
                lambda: nvml.nvmlDeviceGetTotalEccErrors(h, nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nvml.NVML_VOLATILE_ECC),
                lambda: nvml.nvmlDeviceGetCurrentClocksEventReasons(h),
                lambda: nvml.nvmlDeviceGetComputeRunningProcesses(h),
                lambda: nvml.nvmlDeviceGetGraphicsRunningProcesses(h),
            ):
                try:
                    f()
                except nvml.NVMLError:
                    pass
    bmed, bp90, bcpu = measure(bare, N)
finally:
    nvml.nvmlShutdown()
print(f"bare NVML calls (peer)    : median {bmed:.3f} ms  p90 {bp90:.3f} ms  thread CPU {bcpu:.3f} ms  "
      f"-> collector / bare = {med / bmed:.2f}x" if bmed > 0 else "bare NVML calls: too fast to time")

pmed, pp90, pcpu, _, _ = run(GpuConfig(pcie_throughput=True), max(5, N // 20))
print(f"collector, pcie_throughput: median {pmed:.3f} ms  p90 {pp90:.3f} ms  thread CPU {pcpu:.3f} ms  "
      f"(NVML samples PCIe over 20 ms per direction; off by default)")

smi = []
for _ in range(5):
    t = time.perf_counter()
    subprocess.run(["nvidia-smi", "--query-gpu=uuid,memory.total,memory.used,temperature.gpu,power.draw,utilization.gpu",
                    "--format=csv,noheader,nounits"], check=True, capture_output=True)
    smi.append(time.perf_counter() - t)
print(f"nvidia-smi query (peer)   : median {statistics.median(smi) * 1e3:.1f} ms wall (a process start included)")

verdict = "PASS" if med / ngpu < TARGET_MS else "FAIL"
print(f"cost target: median {med / ngpu:.3f} ms per GPU < {TARGET_MS} ms: {verdict}")
sys.exit(0 if verdict == "PASS" else 1)
EOF
"${TIMER[@]}" "$OUT/timer.py" || rc=1

[ "$SELF_TEST" = 1 ] && say "(self-test: the figures above come from a fake NVML, not from a GPU)"
say "result: $([ $rc = 0 ] && echo PASS || echo FAIL)"
exit $rc
