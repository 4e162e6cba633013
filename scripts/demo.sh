#!/usr/bin/env bash
# The demo fleet on this machine: two hosts, `mainpc` (a simulated RTX 4090,
# 54 agents in 11 groups) and `pc2` (a simulated RTX 3060, 23 agents in 7
# groups), each run by its own orchestratord against the local Docker
# Engine, with real containers of the reference agent, federated over
# ZeroMQ with CURVE keys made for the demo. GPUs come from the NVML
# simulator, MPS control daemons from its stand-in.
#
# Usage: scripts/demo.sh [up|status|down]
#   up      build everything, start both daemons, start every group, show
#           the fleet from mainpc (default)
#   status  show the fleet again
#   down    stop every group and both daemons, remove their networks
#
# Each daemon runs on a copy of config/<host>/startup_config.yaml under
# target/demo/<host>/ (so `apply` in the tour rewrites the copy, not the
# repository's file), with its federation pointed at the other on loopback
# (mainpc tcp://127.0.0.1:7301, pc2 tcp://127.0.0.1:7302; no agent of either
# host publishes those ports, and both hosts share this machine's), keys under
# target/demo/keys/, and metrics on 127.0.0.1:9464 (mainpc) and :9465 (pc2).
# State, sockets and logs are under target/demo/<host>/. To drive a host:
#   export ORCHESTRATOR_SOCKET=target/demo/mainpc/orchestrator.sock
#   target/release/orchestratorctl status --all-hosts   # groups, agents, gpu, peers, plan, logs, events...
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$(pwd)"
demo="$root/target/demo"
bin="$root/target/release"
hosts=(mainpc pc2)
ctl() { local host=$1; shift; "$bin/orchestratorctl" --socket "$demo/$host/orchestrator.sock" "$@"; }

# The demo copy of a host's config: the shipped file without its example
# federation section, with one for this machine instead.
demo_config() {
    local host=$1 port=$2 peer=$3 peer_port=$4 metrics=$5
    python3 - "$root/config/$host/startup_config.yaml" <<PY
import sys
out, skip = [], False
for line in open(sys.argv[1]):
    if line[:1] not in ("", " ", "\t", "#", "\n"):
        skip = line.startswith("federation:")
    if not skip:
        out.append(line)
print("".join(out).rstrip("\n"))
print("""
# Demo: both hosts on this machine.
federation:
  listen: "tcp://127.0.0.1:$port"
  peers:
    - {name: $peer, endpoint: "tcp://127.0.0.1:$peer_port", public_key: "$(cat "$demo/keys/$peer.pub")"}
  keys: {secret_key_file: "$demo/keys/$host.key"}
metrics: {listen: "127.0.0.1:$metrics"}""")
PY
}

up() {
    echo "==> building (release)"
    tests/e2e/setup-apt.sh /usr/include/zmq.h=libzmq3-dev >/dev/null
    cargo build --release -q -p orchestratord -p orchestratorctl -p nvml-sim
    scripts/build-agent-image.sh >/dev/null
    mkdir -p "$demo/keys"
    for host in "${hosts[@]}"; do
        [ -f "$demo/keys/$host.key" ] || "$bin/orchestratorctl" keys generate "$host" --out "$demo/keys" >/dev/null
    done
    mkdir -p "$demo/mainpc" "$demo/pc2"
    demo_config mainpc 7301 pc2 7302 9464 >"$demo/mainpc/startup_config.yaml"
    demo_config pc2 7302 mainpc 7301 9465 >"$demo/pc2/startup_config.yaml"
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
                    --config "$demo/$host/startup_config.yaml" \
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

# The fleet as mainpc sees it: both hosts, each with its state.
status() {
    # Until pc2's first snapshot reaches mainpc (a heartbeat or two).
    for _ in $(seq 1 50); do
        ctl mainpc -o json peers | python3 -c 'import json,sys; sys.exit(0 if all(p["state"] == "alive" and p["snapshot_age_ms"] is not None for p in json.load(sys.stdin)) else 1)' && break
        sleep 0.2
    done
    echo
    ctl mainpc peers
    echo
    ctl mainpc status --all-hosts
    echo
    ctl mainpc gpu --all-hosts
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
            local pid
            pid="$(cat "$pidfile")"
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            rm -f "$pidfile"
        fi
        if docker network inspect "orch-$host" >/dev/null 2>&1; then
            docker network rm "orch-$host" >/dev/null && echo "==> $host: removed network orch-$host"
        fi
    done
}

case "${1:-up}" in
    up) up ;;
    status) status ;;
    down) down ;;
    *) echo "usage: scripts/demo.sh [up|status|down]" >&2; exit 2 ;;
esac
