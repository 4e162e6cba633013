#!/usr/bin/env bash
# Benchmarks; their figures go to docs/BENCHMARKS.md with this command.
#   scripts/bench.sh            planner and fleet benchmarks
# Environment: BENCH_ROUNDS (group starts per side, default 5),
# BENCH_CRASHES (crashes measured, default 20).
# The machine is shared and noisy: compare the side-by-side figures of one
# run (medians and ratios), not absolute times across runs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
echo "==> build (release)"
cargo build --release -q -p orchestratord -p orchestratorctl
scripts/build-agent-image.sh >/dev/null
echo "==> GPU planner (cargo bench -p orch-core)"
cargo bench -q -p orch-core 2>/dev/null | grep -E 'median'
echo "==> fleet (scripts/bench_fleet.py)"
python3 scripts/bench_fleet.py
