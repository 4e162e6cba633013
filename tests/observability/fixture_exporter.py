#!/usr/bin/env python3
"""A stand-in for one orchestratord's /metrics, following the metrics
contract (docs/observability.md), so the rules and dashboards can be run
against a real Prometheus before, or without, real daemons.

It describes a small host in every state the dashboards and alerts care
about: a healthy group, a started group that is not ready because one agent
crash-loops, a stopped group, GPU slices (MPS shares on a GeForce card, or
MIG instances on an A100 plus a whole GPU), a GPU over 90% memory, a peer,
and per-group SLO counters that advance with wall time. One SLO
(vision_gpu/availability) burns at a 10% error ratio until told otherwise:

  POST /control?group=vision_gpu&slo=availability&error_ratio=0

Usage: fixture_exporter.py --host NAME [--listen ADDR:PORT] [--gpus mps|mig]
                           [--peer NAME ...] [--port-file FILE]
With port 0 the chosen port is written to --port-file (and printed).
Only the standard library is used.
"""

import argparse
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

GIB = 1024**3

# (group, started, ready, agents); each agent is (name, replicas, up,
# crash-looping, state).
GROUPS = [
    ("infra_core", 1, 1, [("ServiceRegistry", 1, 1, 0, "running"), ("SystemDigitalTwin", 1, 1, 0, "running")]),
    ("vision_gpu", 1, 1, [("FaceRecognitionAgent", 2, 1, 0, "running")]),
    ("emotion_system", 1, 0, [("EmotionEngine", 1, 0, 1, "backing_off"), ("MoodTracker", 1, 0, 0, "held")]),
    ("utility_cpu", 0, 0, []),
]
AGENT_STATES = ["pending", "held", "starting", "running", "backing_off", "exited", "failed", "stopping"]
FAILURE_REASONS = ["exited", "oom_killed", "unhealthy"]

# SLO (group, slo) -> (objective, events per second, starting error ratio).
SLOS = {
    ("vision_gpu", "availability"): (0.995, 20.0, 0.10),
    ("vision_gpu", "latency"): (0.99, 20.0, 0.001),
    ("infra_core", "availability"): (0.999, 50.0, 0.0),
    ("infra_core", "error_rate"): (0.998, 50.0, 0.0005),
}
SLO_WINDOWS = ["5m", "30m", "1h", "6h", "1d", "3d", "30d"]

HEALTH_BUCKETS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10]
RECONCILE_BUCKETS = [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1]


def gpu_layout(kind, host):
    """GPUs as (index, uuid, name, mig, total bytes, used bytes) and slices
    as (gpu index, kind, profile, group, agent, replica, memory bytes)."""
    if kind == "mig":
        gpus = [
            (0, f"GPU-{host}-a100", "NVIDIA A100-SXM4-40GB", "enabled", 40 * GIB, 21 * GIB),
            (1, f"GPU-{host}-3060", "NVIDIA GeForce RTX 3060", "unsupported", 12 * GIB, 11 * GIB),
        ]
        slices = [
            (0, "mig", "1g.10gb", "vision_gpu", "FaceRecognitionAgent", 0, 10 * GIB),
            (0, "mig", "1g.10gb", "vision_gpu", "FaceRecognitionAgent", 1, 10 * GIB),
            (1, "exclusive", "whole", "emotion_system", "EmotionEngine", 0, 12 * GIB),
        ]
    else:
        gpus = [(0, f"GPU-{host}-4090", "NVIDIA GeForce RTX 4090", "unsupported", 24 * GIB, 23 * GIB)]
        slices = [
            (0, "mps", "10g/25%", "vision_gpu", "FaceRecognitionAgent", 0, 10 * GIB),
            (0, "mps", "10g/25%", "vision_gpu", "FaceRecognitionAgent", 1, 10 * GIB),
            (0, "mps", "2g/10%", "emotion_system", "EmotionEngine", 0, 2 * GIB),
        ]
    return gpus, slices


class Fleet:
    """The host's counters, advanced by wall time at every scrape."""

    def __init__(self, host, gpus, peers):
        self.host = host
        self.gpu_kind = gpus
        self.peers = peers
        self.lock = threading.Lock()
        self.started = time.monotonic()
        self.last = self.started
        self.error_ratio = {key: spec[2] for key, spec in SLOS.items()}
        self.events = {key: 0.0 for key in SLOS}
        self.errors = {key: 0.0 for key in SLOS}

    def set_error_ratio(self, group, slo, ratio):
        with self.lock:
            key = (group, slo)
            if key not in self.error_ratio:
                raise KeyError(f"no SLO {slo} for group {group}")
            self._advance()
            self.error_ratio[key] = ratio

    def _advance(self):
        now = time.monotonic()
        dt = now - self.last
        self.last = now
        for key, (_, per_second, _) in SLOS.items():
            self.events[key] += per_second * dt
            self.errors[key] += per_second * dt * self.error_ratio[key]
        return now - self.started

    def render(self):
        with self.lock:
            uptime = self._advance()
            events = dict(self.events)
            errors = dict(self.errors)
            ratios = dict(self.error_ratio)
        out = Exposition(self.host)
        self._daemon(out, uptime)
        self._agents(out, uptime)
        self._gpus(out)
        self._peers(out, uptime)
        self._slos(out, events, errors, ratios)
        return out.text()

    def _daemon(self, out, uptime):
        out.family("orchestrator_build_info", "gauge", "Build of the running daemon.")
        out.sample("orchestrator_build_info", {"version": "0.0.0-fixture"}, 1)
        out.histogram(
            "orchestrator_reconcile_duration_seconds",
            "Time the owner task spends handling one input.",
            {},
            RECONCILE_BUCKETS,
            count=int(uptime * 5),
            mean=0.0008,
        )
        out.family("orchestrator_state_write_failures_total", "counter", "Failed writes of the state file.")
        out.sample("orchestrator_state_write_failures_total", {}, 0)

    def _agents(self, out, uptime):
        rows = []
        for group, started, _, agents in GROUPS:
            for agent, replicas, up, looping, state in agents:
                for replica in range(replicas):
                    rows.append((group, started, agent, replica, up, looping, state))
        out.family("orchestrator_agent_up", "gauge", "1 when the replica runs and is healthy.")
        for group, _, agent, replica, up, _, _ in rows:
            out.sample("orchestrator_agent_up", _agent(group, agent, replica), up)
        out.family("orchestrator_agent_state", "gauge", "1 for the replica's current state.")
        for group, _, agent, replica, _, _, state in rows:
            for s in AGENT_STATES:
                out.sample("orchestrator_agent_state", {**_agent(group, agent, replica), "state": s}, int(s == state))
        out.family("orchestrator_agent_crashlooping", "gauge", "1 while the replica is crash-looping.")
        for group, _, agent, replica, _, looping, _ in rows:
            out.sample("orchestrator_agent_crashlooping", _agent(group, agent, replica), looping)
        out.family("orchestrator_agent_restarts_total", "counter", "Restarts of the replica.")
        for group, _, agent, replica, _, looping, _ in rows:
            restarts = 3 + int(uptime / 2) if looping else 0
            out.sample("orchestrator_agent_restarts_total", _agent(group, agent, replica), restarts)
        out.family("orchestrator_agent_failures_total", "counter", "Failures of the agent, by reason.")
        for group, _, _, agents in GROUPS:
            for agent, _, _, looping, _ in agents:
                for reason in FAILURE_REASONS:
                    n = 3 + int(uptime / 2) if looping and reason == "exited" else 0
                    out.sample("orchestrator_agent_failures_total", {"group": group, "agent": agent, "reason": reason}, n)
        first = True
        for group, started, _, agents in GROUPS:
            for agent, _, up, _, _ in agents:
                if not (started and up):
                    continue
                out.histogram(
                    "orchestrator_agent_health_check_duration_seconds",
                    "Duration of the agent's health checks.",
                    {"group": group, "agent": agent},
                    HEALTH_BUCKETS,
                    count=int(uptime),
                    mean=0.004,
                    header=first,
                )
                first = False

        out.family("orchestrator_group_started", "gauge", "1 when the group is started (desired).")
        for group, started, _, _ in GROUPS:
            out.sample("orchestrator_group_started", {"group": group}, started)
        out.family("orchestrator_group_ready", "gauge", "1 when every agent of the group is healthy.")
        for group, _, ready, _ in GROUPS:
            out.sample("orchestrator_group_ready", {"group": group}, ready)
        out.family("orchestrator_group_agents", "gauge", "Replicas of the group by state.")
        for group, started, _, agents in GROUPS:
            wanted = sum(r for _, r, _, _, _ in agents) if started else 0
            running = sum(r for _, r, up, _, st in agents if started and st == "running")
            healthy = sum(r for _, r, up, _, _ in agents if started and up)
            for state, n in (("wanted", wanted), ("running", running), ("healthy", healthy)):
                out.sample("orchestrator_group_agents", {"group": group, "state": state}, n)
        out.family("orchestrator_agent_replicas", "gauge", "Replicas of the agent by state.")
        for group, started, _, agents in GROUPS:
            for agent, replicas, _, _, state in agents:
                wanted = replicas if started else 0
                running = replicas if started and state == "running" else 0
                for kind, n in (("wanted", wanted), ("running", running), ("file", 1)):
                    out.sample("orchestrator_agent_replicas", {"group": group, "agent": agent, "state": kind}, n)
        # FaceRecognitionAgent runs two replicas where its file says one: its
        # autoscaler scaled it up on CPU, once a minute of fixture time.
        out.family("orchestrator_autoscale_decisions_total", "counter", "Autoscaler decisions.")
        out.sample(
            "orchestrator_autoscale_decisions_total",
            {"group": "vision_gpu", "agent": "FaceRecognitionAgent", "direction": "up", "signal": "cpu"},
            1 + int(uptime / 60),
        )

    def _gpus(self, out):
        gpus, slices = gpu_layout(self.gpu_kind, self.host)
        uuids = {index: uuid for index, uuid, *_ in gpus}
        out.family("orchestrator_gpu_info", "gauge", "One series per GPU.")
        for index, uuid, name, mig, _, _ in gpus:
            out.sample("orchestrator_gpu_info", {"gpu": str(index), "uuid": uuid, "name": name, "mig": mig}, 1)
        per_gpu = [
            ("orchestrator_gpu_memory_total_bytes", "GPU memory.", lambda g: g[4]),
            ("orchestrator_gpu_memory_used_bytes", "GPU memory in use.", lambda g: g[5]),
            ("orchestrator_gpu_utilization_ratio", "GPU utilisation (0..1).", lambda g: 0.35 + 0.1 * g[0]),
            ("orchestrator_gpu_temperature_celsius", "GPU temperature.", lambda g: 55 + 5 * g[0]),
            ("orchestrator_gpu_power_watts", "GPU power draw.", lambda g: 180.5 + 20 * g[0]),
        ]
        for name, help_text, value in per_gpu:
            out.family(name, "gauge", help_text)
            for g in gpus:
                out.sample(name, {"gpu": str(g[0]), "uuid": g[1]}, value(g))
        out.family("orchestrator_gpu_slice_info", "gauge", "One series per GPU slice held.")
        for index, kind, profile, group, agent, replica, _ in slices:
            labels = {"gpu": str(index), "uuid": uuids[index], "kind": kind, "profile": profile}
            out.sample("orchestrator_gpu_slice_info", {**labels, **_agent(group, agent, replica)}, 1)
        out.family("orchestrator_gpu_slice_memory_bytes", "gauge", "Memory of each GPU slice held.")
        for index, kind, _, group, agent, replica, memory in slices:
            labels = {"gpu": str(index), "uuid": uuids[index], "kind": kind}
            out.sample("orchestrator_gpu_slice_memory_bytes", {**labels, **_agent(group, agent, replica)}, memory)
        mps = [g for g in gpus if any(s[0] == g[0] and s[1] == "mps" for s in slices)]
        mig = [g for g in gpus if g[3] == "enabled"]
        out.family("orchestrator_gpu_mps_free_memory_bytes", "gauge", "MPS memory not yet promised.")
        for g in mps:
            used = sum(s[6] for s in slices if s[0] == g[0])
            out.sample("orchestrator_gpu_mps_free_memory_bytes", {"gpu": str(g[0]), "uuid": g[1]}, g[4] - used)
        out.family("orchestrator_gpu_mps_free_compute_ratio", "gauge", "MPS compute share not yet promised.")
        for g in mps:
            out.sample("orchestrator_gpu_mps_free_compute_ratio", {"gpu": str(g[0]), "uuid": g[1]}, 0.4)
        out.family("orchestrator_gpu_mig_free_memory_slices", "gauge", "Free MIG memory slices.")
        for g in mig:
            out.sample("orchestrator_gpu_mig_free_memory_slices", {"gpu": str(g[0]), "uuid": g[1]}, 6)
        # Each slice's holder uses 60% of it; a desktop session holds 300 MiB of every GPU.
        out.family("orchestrator_gpu_unowned_memory_bytes", "gauge", "GPU memory of processes that are no agent's.")
        for g in gpus:
            out.sample("orchestrator_gpu_unowned_memory_bytes", {"gpu": str(g[0]), "uuid": g[1]}, 300 << 20)
        per_agent = [
            ("orchestrator_agent_gpu_memory_used_bytes", "GPU memory the replica holds.", lambda m: int(m * 0.6)),
            ("orchestrator_agent_gpu_memory_limit_bytes", "GPU memory its slice holds.", lambda m: m),
            ("orchestrator_agent_gpu_utilization_ratio", "Share of the GPU it kept busy.", lambda m: 0.2),
        ]
        for name, help_text, value in per_agent:
            out.family(name, "gauge", help_text)
            for index, _, _, group, agent, replica, memory in slices:
                out.sample(name, {**_agent(group, agent, replica), "gpu": str(index)}, value(memory))

    def _peers(self, out, uptime):
        out.family("orchestrator_peer_up", "gauge", "1 while the peer is alive.")
        for peer in self.peers:
            out.sample("orchestrator_peer_up", {"peer": peer}, 1)
        out.family("orchestrator_peer_state", "gauge", "1 for the peer's current state.")
        for peer in self.peers:
            for state in ("unknown", "alive", "suspect", "down"):
                out.sample("orchestrator_peer_state", {"peer": peer, "state": state}, int(state == "alive"))
        out.family("orchestrator_peer_heartbeat_age_seconds", "gauge", "Age of the peer's last heartbeat.")
        for peer in self.peers:
            out.sample("orchestrator_peer_heartbeat_age_seconds", {"peer": peer}, round(uptime % 1, 3))
        out.family("orchestrator_federation_messages_total", "counter", "Federation messages.")
        for peer in self.peers:
            for direction in ("in", "out"):
                out.sample("orchestrator_federation_messages_total", {"peer": peer, "direction": direction}, int(uptime * 4))
        out.family("orchestrator_federation_decode_errors_total", "counter", "Undecodable federation messages.")
        for peer in self.peers:
            out.sample("orchestrator_federation_decode_errors_total", {"peer": peer}, 0)

    def _slos(self, out, events, errors, ratios):
        out.family("orchestrator_slo_objective_ratio", "gauge", "SLO objective.")
        for (group, slo), (objective, _, _) in SLOS.items():
            out.sample("orchestrator_slo_objective_ratio", {"group": group, "slo": slo}, objective)
        out.family("orchestrator_slo_events_total", "counter", "All SLI events.")
        for (group, slo), n in events.items():
            out.sample("orchestrator_slo_events_total", {"group": group, "slo": slo}, int(n))
        out.family("orchestrator_slo_errors_total", "counter", "Bad SLI events.")
        for (group, slo), n in errors.items():
            out.sample("orchestrator_slo_errors_total", {"group": group, "slo": slo}, int(n))
        out.family("orchestrator_slo_sli_error_ratio", "gauge", "Error ratio per window, as the daemon sees it.")
        for (group, slo), ratio in ratios.items():
            for window in SLO_WINDOWS:
                out.sample("orchestrator_slo_sli_error_ratio", {"group": group, "slo": slo, "window": window}, ratio)
        out.family("orchestrator_slo_burn_rate", "gauge", "Burn rate per window, as the daemon sees it.")
        for (group, slo), ratio in ratios.items():
            budget = 1 - SLOS[(group, slo)][0]
            for window in SLO_WINDOWS:
                out.sample("orchestrator_slo_burn_rate", {"group": group, "slo": slo, "window": window}, ratio / budget)
        out.family("orchestrator_slo_error_budget_remaining_ratio", "gauge", "Error budget left in the period.")
        for (group, slo), ratio in ratios.items():
            budget = 1 - SLOS[(group, slo)][0]
            out.sample("orchestrator_slo_error_budget_remaining_ratio", {"group": group, "slo": slo}, 1 - ratio / budget)


def _agent(group, agent, replica):
    return {"group": group, "agent": agent, "replica": str(replica)}


class Exposition:
    """Prometheus text format 0.0.4; every sample gets the host label."""

    def __init__(self, host):
        self.host = host
        self.lines = []

    def family(self, name, kind, help_text):
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name, labels, value):
        labels = {"host": self.host, **labels}
        body = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
        self.lines.append(f"{name}{{{body}}} {_number(value)}")

    def histogram(self, name, help_text, labels, buckets, count, mean, header=True):
        """A histogram whose observations all sit at `mean`, in the first
        bucket that holds it."""
        if header:
            self.family(name, "histogram", help_text)
        for le in buckets:
            self.sample(f"{name}_bucket", {**labels, "le": _number(le)}, count if mean <= le else 0)
        self.sample(f"{name}_bucket", {**labels, "le": "+Inf"}, count)
        self.sample(f"{name}_sum", labels, count * mean)
        self.sample(f"{name}_count", labels, count)

    def text(self):
        return "\n".join(self.lines) + "\n"


def _escape(value):
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value):
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def make_handler(fleet):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if urlsplit(self.path).path != "/metrics":
                self.send_error(404)
                return
            body = fleet.render().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            if url.path != "/control":
                self.send_error(404)
                return
            try:
                fleet.set_error_ratio(query["group"], query["slo"], float(query["error_ratio"]))
            except (KeyError, ValueError) as err:
                self.send_error(400, str(err))
                return
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", required=True, help="the daemon host name every series carries")
    parser.add_argument("--listen", default="127.0.0.1:0", help="ADDR:PORT (port 0: any free port)")
    parser.add_argument("--gpus", choices=["mps", "mig"], default="mps", help="GPU layout to describe")
    parser.add_argument("--peer", action="append", default=[], help="a federation peer (repeatable)")
    parser.add_argument("--port-file", help="write the port listened on to this file")
    args = parser.parse_args()
    addr, _, port = args.listen.rpartition(":")
    server = ThreadingHTTPServer((addr, int(port)), make_handler(Fleet(args.host, args.gpus, args.peer)))
    bound = server.server_address[1]
    if args.port_file:
        with open(args.port_file + ".tmp", "w") as f:
            f.write(f"{bound}\n")
        # Renamed into place so a reader never sees a half-written port.
        os.replace(args.port_file + ".tmp", args.port_file)
    print(f"fixture exporter for {args.host} on {addr}:{bound}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
