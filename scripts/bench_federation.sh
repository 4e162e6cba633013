#!/usr/bin/env bash
# Benchmarks of the federation bus (orch-federation) with real ZmqBuses on
# loopback, CURVE on, default detector settings:
#   1. lost-peer detection (link cut, process kill) and return to alive;
#   2. false down/suspect verdicts with every core busy and 1000 msg/s;
#   3. snapshot latency, publish to receipt, small and 54-agent bodies;
#   4. CPU and memory of one bus with two peers at idle.
# Writes target/bench/federation.md (a section for docs/BENCHMARKS.md) and
# target/bench/federation.json (every figure and the raw samples).
#
#   scripts/bench_federation.sh                 full run, about 20 minutes
#   FED_QUICK=1 scripts/bench_federation.sh     about 2 minutes
#   FED_SOAK_SECS=120 scripts/bench_federation.sh
#
# Knobs (environment): FED_CUTS (30 link cuts), FED_KILLS (20 process
# kills), FED_SOAK_SECS (600), FED_LATENCY_SECS (30 per body size),
# FED_IDLE_SECS (60), FED_RATE (1000 msg/s), FED_ONLY (comma list of
# idle,latency,detect,kill,soak), BENCH_OUT (target/bench). Arguments are
# passed on to the benchmark binary (see its --help).
# Every process it starts is stopped when it ends, fails or is interrupted.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ -n "${FED_QUICK:-}" ]]; then
    : "${FED_CUTS:=5}" "${FED_KILLS:=3}" "${FED_SOAK_SECS:=30}"
    : "${FED_LATENCY_SECS:=5}" "${FED_IDLE_SECS:=10}"
fi
out="${BENCH_OUT:-target/bench}"
args=(--out "$out")
[[ -n "${FED_CUTS:-}" ]] && args+=(--cuts "$FED_CUTS")
[[ -n "${FED_KILLS:-}" ]] && args+=(--kills "$FED_KILLS")
[[ -n "${FED_SOAK_SECS:-}" ]] && args+=(--soak-secs "$FED_SOAK_SECS")
[[ -n "${FED_LATENCY_SECS:-}" ]] && args+=(--latency-secs "$FED_LATENCY_SECS")
[[ -n "${FED_IDLE_SECS:-}" ]] && args+=(--idle-secs "$FED_IDLE_SECS")
[[ -n "${FED_RATE:-}" ]] && args+=(--rate "$FED_RATE")
[[ -n "${FED_ONLY:-}" ]] && args+=(--only "$FED_ONLY")
args+=("$@")

# The command as it was given, knobs included, for the report.
command="scripts/bench_federation.sh"
for knob in FED_QUICK FED_CUTS FED_KILLS FED_SOAK_SECS FED_LATENCY_SECS \
            FED_IDLE_SECS FED_RATE FED_ONLY BENCH_OUT; do
    if [[ -n "${!knob:-}" ]] && env | grep -q "^$knob="; then
        command="$knob=${!knob} $command"
    fi
done
[[ $# -gt 0 ]] && command+=" $*"

echo "==> build (release)"
cargo build --release -q -p orch-federation --example bench_federation
bin="${CARGO_TARGET_DIR:-target}/release/examples/bench_federation"

pid=""
cleanup() {
    # The benchmark's children (CPU burners, bus processes) are killed by
    # the kernel when it ends (PR_SET_PDEATHSIG); ending it is enough.
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if ! git diff --quiet HEAD 2>/dev/null; then commit+="-dirty"; fi
FEDBENCH_COMMAND="$command" FEDBENCH_DATE="$(date -u +%F)" FEDBENCH_COMMIT="$commit" \
    "$bin" "${args[@]}" &
pid=$!
wait "$pid"
pid=""
echo
cat "$out/federation.md"
