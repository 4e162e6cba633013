#!/usr/bin/env bash
# The demo fleet on this machine: two hosts, `mainpc` (a simulated RTX 4090,
# 54 agents in 11 groups) and `pc2` (a simulated RTX 3060, 23 agents in 7
# groups), each run by its own orchestratord against the local Docker
# Engine, with real containers of the reference agent, federated over
# ZeroMQ with CURVE keys made for the demo. GPUs come from the NVML
# simulator, MPS control daemons from its stand-in.
#
# Usage: scripts/demo.sh [up|status|down]
#   up      build everything, start both daemons (each one answering a
#           request before any group is waited on), start the groups and
#           show the fleet from mainpc (default). The first run starts
#           every group; a later one those that ran at `down`, or else
#           those the daemon's saved state has started.
#   status  show the fleet again
#   down    stop every group and both daemons, remove their networks (or
#           say why one could not be removed)
#
# Each daemon runs on a copy of config/<host>/startup_config.yaml under
# target/demo/<host>/, made on the first run and kept afterwards (so
# `apply` in the tour rewrites the copy, not the repository's file, and a
# later `up` keeps what was applied; remove the copy to start from the
# shipped file again), with its federation pointed at the other on loopback
# (mainpc tcp://127.0.0.1:7301, pc2 tcp://127.0.0.1:7302; no agent of either
# host publishes those ports, and both hosts share this machine's), keys under
# target/demo/keys/, and metrics on 127.0.0.1:9464 (mainpc) and :9465 (pc2).
# Agents publish their ports on 127.0.0.1 only (the shipped configs say so).
# State, sockets and logs (appended to, never truncated) are under
# target/demo/<host>/. To drive a host:
#   export ORCHESTRATOR_SOCKET=target/demo/mainpc/orchestrator.sock
#   target/release/orchestratorctl status --all-hosts   # groups, agents, gpu, peers, plan, logs, events...
# DEMO_DIR puts all of it elsewhere (scripts/bench_idle.py uses its own);
# DEMO_BIN runs the binaries of that directory instead, without building.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$(pwd)"
demo="${DEMO_DIR:-$root/target/demo}"
shown="${demo#"$root"/}" # for messages
bin="${DEMO_BIN:-$root/target/release}"
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

# Whether the host's daemon answers a request (a socket file alone may be
# one a killed daemon left behind).
answers() { ctl "$1" -o json status >/dev/null 2>&1; }

# Group names of a host, every one or only those its daemon has started.
groups_of() {
    local host=$1 which=$2
    ctl "$host" -o json groups | python3 -c '
import json, sys
only_started = sys.argv[1] == "started"
print(" ".join(g["name"] for g in json.load(sys.stdin) if g["started"] or not only_started))' "$which"
}

up() {
    if [ -z "${DEMO_BIN:-}" ]; then
        echo "==> building (release)"
        tests/e2e/setup-apt.sh /usr/include/zmq.h=libzmq3-dev >/dev/null
        cargo build --release -q -p orchestratord -p orchestratorctl -p nvml-sim
        scripts/build-agent-image.sh >/dev/null
    fi
    mkdir -p "$demo/keys"
    for host in "${hosts[@]}"; do
        [ -f "$demo/keys/$host.key" ] || "$bin/orchestratorctl" keys generate "$host" --out "$demo/keys" >/dev/null
    done
    local -A fresh
    for host in "${hosts[@]}"; do
        mkdir -p "$demo/$host"
        # A config installed before (and maybe changed with `apply`) is kept.
        if [ -f "$demo/$host/startup_config.yaml" ]; then
            echo "==> $host: keeping the installed config $shown/$host/startup_config.yaml (remove it to start from config/$host again)"
        else
            case $host in
                mainpc) demo_config mainpc 7301 pc2 7302 9464 ;;
                pc2) demo_config pc2 7302 mainpc 7301 9465 ;;
            esac >"$demo/$host/startup_config.yaml"
        fi
        # No state yet: the first run, which starts every group.
        fresh[$host]=false
        [ -f "$demo/$host/state/$host.state.json" ] || fresh[$host]=true
    done
    # Every daemon first: a group may need one of the other host's.
    for host in "${hosts[@]}"; do
        local sock="$demo/$host/orchestrator.sock" pidfile="$demo/$host/orchestratord.pid"
        local log="$demo/$host/orchestratord.log"
        if answers "$host"; then
            echo "==> $host: orchestratord already running"
            continue
        fi
        if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
            echo "==> $host: orchestratord (pid $(cat "$pidfile")) does not answer yet; waiting for it"
            continue
        fi
        echo "==> $host: starting orchestratord (log: $shown/$host/orchestratord.log)"
        echo "==== scripts/demo.sh up, $(date -u '+%F %T') UTC" >>"$log"
        ORCH_NVML_LIBRARY="$bin/libnvml_sim.so" \
        NVML_SIM_CONFIG="$root/config/$host/gpus.sim.yaml" \
        NVML_SIM_STATE="$demo/$host/nvml-state.json" \
        ORCH_MPS_CONTROL="$bin/nvidia-cuda-mps-control-sim" \
            nohup "$bin/orchestratord" run \
                --config "$demo/$host/startup_config.yaml" \
                --state-dir "$demo/$host/state" \
                --socket "$sock" \
                >>"$log" 2>&1 &
        echo $! >"$pidfile"
    done
    for host in "${hosts[@]}"; do
        local ok=false
        for _ in $(seq 1 150); do
            if answers "$host"; then ok=true; break; fi
            sleep 0.2
        done
        if ! $ok; then
            echo "demo: $host's orchestratord does not answer after 30 s; the end of its log:" >&2
            tail -n 20 "$demo/$host/orchestratord.log" >&2
            exit 1
        fi
    done
    # Which groups: on the first run every one; after `down`, those it
    # stopped; otherwise those the daemon's state says are started.
    local -A chosen
    for host in "${hosts[@]}"; do
        local saved="$demo/$host/started-at-down"
        if ${fresh[$host]}; then
            chosen[$host]="$(groups_of "$host" all)"
            echo "==> $host: first run: starting every group"
        elif [ -f "$saved" ]; then
            chosen[$host]="$(cat "$saved")"
            echo "==> $host: starting the groups that ran before \`down\`: ${chosen[$host]:-none}"
        else
            chosen[$host]="$(groups_of "$host" started)"
            echo "==> $host: the daemon's state has these groups started: ${chosen[$host]:-none}"
        fi
        for group in ${chosen[$host]}; do
            ctl "$host" group start "$group" >/dev/null
        done
        rm -f "$saved"
    done
    for host in "${hosts[@]}"; do
        for group in ${chosen[$host]}; do
            ctl "$host" group start "$group" --wait --timeout 600
        done
    done
    status
    echo
    echo "Drive a host with: export ORCHESTRATOR_SOCKET=$demo/mainpc/orchestrator.sock; $bin/orchestratorctl --help"
    echo "Stop the fleet with: ${DEMO_DIR:+DEMO_DIR=$DEMO_DIR }scripts/demo.sh down"
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
        if answers "$host"; then
            local started
            started="$(groups_of "$host" started)"
            # What ran, for the next `up` (stopping changes the daemon's state).
            echo "$started" >"$demo/$host/started-at-down"
            echo "==> $host: stopping every group"
            for group in $started; do
                ctl "$host" group stop "$group" --with-dependents --wait --timeout 300 || true
            done
        else
            echo "==> $host: orchestratord does not answer; its agents are left as they are"
        fi
        if [ -f "$pidfile" ]; then
            local pid
            pid="$(cat "$pidfile")"
            if kill -0 "$pid" 2>/dev/null; then
                echo "==> $host: stopping orchestratord"
                kill "$pid" 2>/dev/null || true
                for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            fi
            rm -f "$pidfile"
        fi
        local net="orch-$host" err
        if docker network inspect "$net" >/dev/null 2>&1; then
            if err="$(docker network rm "$net" 2>&1 >/dev/null)"; then
                echo "==> $host: removed network $net"
            else
                echo "==> $host: network $net not removed: $err" >&2
                local users
                users="$(docker network inspect "$net" --format '{{range .Containers}}{{.Name}} {{end}}' 2>/dev/null || true)"
                [ -z "$users" ] || echo "    containers still attached: $users" >&2
            fi
        fi
    done
}

case "${1:-up}" in
    up) up ;;
    status) status ;;
    down) down ;;
    *) echo "usage: scripts/demo.sh [up|status|down]" >&2; exit 2 ;;
esac
