#!/usr/bin/env bash
# The demo fleet on this machine: two hosts, `mainpc` (a simulated RTX 4090,
# 54 agents in 11 groups) and `pc2` (a simulated RTX 3060, 23 agents in 7
# groups), each run by its own orchestratord against the local Docker
# Engine, with real containers of the reference agent. GPUs come from the
# NVML simulator, MPS control daemons from its stand-in.
#
# Usage: scripts/demo.sh [up|status|down]
#   up      build everything, start both daemons, start every group, show status (default)
#   status  show both hosts
#   down    stop every group and both daemons
#
# State, sockets and logs are under target/demo/<host>/. To drive a host:
#   export ORCHESTRATOR_SOCKET=target/demo/mainpc/orchestrator.sock
#   target/release/orchestratorctl status   # groups, agents, gpu, plan, logs, events...
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$(pwd)"
demo="$root/target/demo"
bin="$root/target/release"
hosts=(mainpc pc2)
ctl() { local host=$1; shift; "$bin/orchestratorctl" --socket "$demo/$host/orchestrator.sock" "$@"; }

up() {
    echo "==> building (release)"
    cargo build --release -q -p orchestratord -p orchestratorctl -p nvml-sim
    scripts/build-agent-image.sh >/dev/null
    for host in "${hosts[@]}"; do
        mkdir -p "$demo/$host"
        local sock="$demo/$host/orchestrator.sock" pidfile="$demo/$host/orchestratord.pid"
        if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
            echo "==> $host: orchestratord already running (pid $(cat "$pidfile"))"
        else
            echo "==> $host: starting orchestratord (log: target/demo/$host/orchestratord.log)"
            ORCH_NVML_LIBRARY="$bin/libnvml_sim.so" \
            NVML_SIM_CONFIG="$root/config/$host/gpus.sim.yaml" \
            NVML_SIM_STATE="$demo/$host/nvml-state.json" \
            ORCH_MPS_CONTROL="$bin/nvidia-cuda-mps-control-sim" \
                nohup "$bin/orchestratord" run \
                    --config "$root/config/$host/startup_config.yaml" \
                    --state-dir "$demo/$host/state" \
                    --socket "$sock" \
                    >"$demo/$host/orchestratord.log" 2>&1 &
            echo $! >"$pidfile"
            for _ in $(seq 1 100); do [ -S "$sock" ] && break; sleep 0.1; done
        fi
        echo "==> $host: starting every group"
        for group in $(ctl "$host" -o json groups | python3 -c 'import json,sys; print(" ".join(g["name"] for g in json.load(sys.stdin)))'); do
            ctl "$host" group start "$group" --wait --timeout 600
        done
    done
    status
    echo
    echo "Drive a host with: export ORCHESTRATOR_SOCKET=target/demo/mainpc/orchestrator.sock; target/release/orchestratorctl --help"
    echo "Stop the fleet with: scripts/demo.sh down"
}

status() {
    for host in "${hosts[@]}"; do
        echo
        echo "==================== $host ===================="
        ctl "$host" status
        echo
        ctl "$host" gpu
    done
}

down() {
    for host in "${hosts[@]}"; do
        local pidfile="$demo/$host/orchestratord.pid"
        if [ -S "$demo/$host/orchestrator.sock" ]; then
            echo "==> $host: stopping every group"
            for group in $(ctl "$host" -o json groups | python3 -c 'import json,sys; print(" ".join(g["name"] for g in json.load(sys.stdin) if g["started"]))'); do
                ctl "$host" group stop "$group" --with-dependents --wait --timeout 300 || true
            done
        fi
        if [ -f "$pidfile" ]; then
            echo "==> $host: stopping orchestratord"
            kill "$(cat "$pidfile")" 2>/dev/null || true
            rm -f "$pidfile"
        fi
    done
}

case "${1:-up}" in
    up) up ;;
    status) status ;;
    down) down ;;
    *) echo "usage: scripts/demo.sh [up|status|down]" >&2; exit 2 ;;
esac
