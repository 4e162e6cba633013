#!/usr/bin/env bash
# Every benchmark in one command; rewrites docs/BENCHMARKS.md with the
# figures, this command and the machine, and draws docs/bench-*.png.
#
#   scripts/bench.sh            about 55 minutes on 2 cores
#
# Steps: the GPU planner and SLO benches (`cargo bench -p orch-core`), the
# `/metrics` render bench (`cargo bench -p orch-daemon --bench metrics`),
# the federation bus (scripts/bench_federation.sh, FED_QUICK unless
# BENCH_FED_FULL=1), the group start side by side with docker-compose and
# the raw Docker baseline plus crash-to-running (scripts/bench_fleet.py),
# crash to running side by side with Docker's own restart policy
# (scripts/bench_crash.py), the 200-agent host (scripts/bench_scale.py),
# autoscaling (scripts/bench_autoscale.py: a load step, 10 minutes of
# constant load, the cost of 20 autoscaled agents), the idle demo fleet with everything on (scripts/bench_idle.py),
# GPU use per agent (scripts/bench_gpu_use.py: accuracy and latency of the
# per-agent figures, the cost of sampling 200 agents' GPU processes),
# rollouts under a steady load (scripts/bench_rollout.py: a bad version
# rolled back, BENCH_ROLLOUTS good ones in a row, a missing image), the plots
# (scripts/plot_bench.py, matplotlib in a venv under target/) and the
# report (scripts/bench_report.py).
#
# Knobs (environment): BENCH_ROUNDS (group starts per side and size,
# default 5), BENCH_SIZES (group sizes, default 10,20,40), BENCH_CRASHES
# (default 20), BENCH_PARALLEL (Docker operations at once, default 16),
# BENCH_SCALE_CPU_SECS (CPU sample length, default 30), BENCH_IDLE_SECS
# (idle CPU sample, default 60), BENCH_IDLE_PERF=1 (a perf profile of it;
# =dwarf with call graphs),
# BENCH_FED_FULL=1 (the 20-minute federation run), BENCH_AUTOSCALE_RPS,
# BENCH_AUTOSCALE_CONSTANT_SECS (default 600), BENCH_ROLLOUTS (good
# rollouts in a row, default 20), BENCH_ROLLOUT_RPS (default 20),
# BENCH_SKIP (comma list of planner, metrics, federation, fleet, crash,
# scale, autoscale, idle, gpu_use, rollout: reuse that step's last output
# from target/bench), BENCH_NO_REPORT=1 (leave docs/ alone).
# The machine is shared and noisy: compare the side-by-side figures of one
# run (medians and ratios), not absolute times across runs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="target/bench"
mkdir -p "$out"

# The command as given, knobs included, for the report.
command="scripts/bench.sh"
for knob in BENCH_ROUNDS BENCH_SIZES BENCH_CRASHES BENCH_PARALLEL BENCH_SCALE_CPU_SECS \
            BENCH_IDLE_SECS BENCH_IDLE_PERF BENCH_FED_FULL BENCH_ROLLOUTS BENCH_ROLLOUT_RPS BENCH_SKIP; do
    if [[ -n "${!knob:-}" ]]; then command="$knob=${!knob} $command"; fi
done
skip() { [[ ",${BENCH_SKIP:-}," == *",$1,"* ]]; }

containers_before="$(docker ps -aq | sort)"
started="$(date -u +%s)"
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"

echo "==> build (release)"
cargo build --release -q -p orchestratord -p orchestratorctl -p orch-bench -p nvml-sim
scripts/build-agent-image.sh >/dev/null

if ! skip planner; then
    echo "==> GPU planner and SLO engine (cargo bench -p orch-core)"
    cargo bench -q -p orch-core 2>/dev/null | tee "$out/core.txt" | grep -E 'median|p99' || true
fi
if ! skip metrics; then
    echo "==> /metrics render (cargo bench -p orch-daemon --bench metrics)"
    cargo bench -q -p orch-daemon --bench metrics 2>/dev/null | tee "$out/metrics.txt"
fi
if ! skip federation; then
    echo "==> federation bus (scripts/bench_federation.sh)"
    if [[ -n "${BENCH_FED_FULL:-}" ]]; then
        BENCH_OUT="$out" scripts/bench_federation.sh >/dev/null
    else
        FED_QUICK=1 BENCH_OUT="$out" scripts/bench_federation.sh >/dev/null
    fi
    tail -n +1 "$out/federation.md" | head -40
fi
if ! skip fleet; then
    echo "==> group start side by side, crash to running (scripts/bench_fleet.py)"
    python3 scripts/bench_fleet.py
fi
if ! skip crash; then
    echo "==> crash to running, side by side with Docker's restart policy (scripts/bench_crash.py)"
    python3 scripts/bench_crash.py
fi
if ! skip scale; then
    echo "==> 200 agents (scripts/bench_scale.py)"
    python3 scripts/bench_scale.py
fi
if ! skip autoscale; then
    echo "==> autoscaling: step load, constant load, cost (scripts/bench_autoscale.py)"
    python3 scripts/bench_autoscale.py
fi
if ! skip idle; then
    echo "==> idle demo fleet, everything on (scripts/bench_idle.py)"
    python3 scripts/bench_idle.py
fi
if ! skip gpu_use; then
    echo "==> GPU use per agent: accuracy, latency, sampling cost (scripts/bench_gpu_use.py)"
    python3 scripts/bench_gpu_use.py
fi
if ! skip rollout; then
    echo "==> rollouts under load: bad version, good versions, missing image (scripts/bench_rollout.py)"
    python3 scripts/bench_rollout.py
fi

load_after="$(cut -d' ' -f1-3 /proc/loadavg)"
if [[ "$(docker ps -aq | sort)" != "$containers_before" ]]; then
    echo "bench: containers left behind:" >&2
    docker ps -a >&2
fi

python3 - "$out/machine.json" <<PY
import json, os, subprocess, sys
def sh(*a):
    try:
        return subprocess.run(a, capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""
mem = 0
with open("/proc/meminfo") as f:
    for line in f:
        if line.startswith("MemTotal:"):
            mem = int(line.split()[1])
model = ""
with open("/proc/cpuinfo") as f:
    for line in f:
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
json.dump({
    "command": """$command""",
    "date": sh("date", "-u", "+%F"),
    "commit": sh("git", "rev-parse", "--short", "HEAD") + ("-dirty" if sh("git", "status", "--porcelain", "--untracked-files=no") else ""),
    "cpus": os.cpu_count(),
    "cpu_model": model,
    "mem_gib": round(mem / 1024 / 1024, 1),
    "docker": sh("docker", "version", "--format", "{{.Server.Version}}"),
    "storage_driver": sh("docker", "info", "--format", "{{.Driver}}"),
    "kernel": sh("uname", "-r"),
    "load_before": "$load_before",
    "load_after": "$load_after",
    "minutes": round(($(date -u +%s) - $started) / 60, 1),
}, open(sys.argv[1], "w"), indent=1)
PY

echo "==> plots"
# shellcheck source=../tests/py-venv.sh
. tests/py-venv.sh
ensure_venv target/bench-venv "matplotlib==3.11.2"
if [[ -z "${BENCH_NO_REPORT:-}" ]]; then
    target/bench-venv/bin/python scripts/plot_bench.py "$out" docs
    echo "==> report"
    python3 scripts/bench_report.py "$out" docs/BENCHMARKS.md
else
    target/bench-venv/bin/python scripts/plot_bench.py "$out" "$out"
fi
