#!/usr/bin/env python3
"""A busy host: 200 agents on the local Docker Engine, the daemon on the
NVML simulator (two A100-SXM4-40GB with MIG, config/sim/lab-2xa100.yaml).

The host: 10 groups of 20 agents. In each group a dependency chain of
depth 4 (1 root, 3, 6 and 10 agents, each needing one of the level
above); g1..g8 need g0, g9 needs g1..g8, so `group start g9` starts the
whole host. Eight agents (one leaf in each of g1..g8) ask for a MIG
1g.5gb slice. Health checks over HTTP every 10 s.

1. From nothing to all healthy (`group start g9 --wait`), and to all
   running (the 200th `start` event on Docker's clock).
2. Daemon RSS and CPU: idle before any start, and supervising 200 agents.
3. Stop of the whole host (`group stop g0 --with-dependents --wait`).
4. Start again, `kill -9` of the daemon when about half the containers
   have started, a new daemon, to all healthy: containers per replica
   (duplicates), starts per container (restarts caused by the kill).
5. Adoption: the daemon is stopped (agents keep running) and started
   again; time from its exec to all 200 adopted as running, and healthy.

Writes target/bench/scale.json; prints a summary. Knobs: BENCH_SCALE_CPU_SECS
(seconds of each CPU sample, default 30), BENCH_SCALE_GROUPS (10).
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_lib import (BIN, ROOT, StartEvents, cpu_share, remove_labelled, remove_network, rss_kib,  # noqa: E402
                       run, save)

HOST = "benchscale"
LABEL = "io.orchestrator.host"
GROUPS = int(os.environ.get("BENCH_SCALE_GROUPS", "10"))
CPU_SECS = float(os.environ.get("BENCH_SCALE_CPU_SECS", "30"))
LEVELS = [1, 3, 6, 10]


def config():
    lines = [
        "version: 1",
        f"host: {{name: {HOST}}}",
        "defaults:",
        "  image: orchestrator-agent:latest",
        "  health: {http: {port: 8080}, interval: 10s, timeout: 2s, retries: 3, start_period: 60s}",
        "  stop_timeout: 2s",
        "groups:",
    ]
    gpu_agents = 0
    for g in range(GROUPS):
        lines.append(f"  g{g}:")
        if g == GROUPS - 1 and GROUPS > 2:
            lines.append(f"    depends_on: [{', '.join(f'g{i}' for i in range(1, GROUPS - 1))}]")
        elif g > 0:
            lines.append("    depends_on: [g0]")
        lines.append("    agents:")
        prev = []
        for depth, width in enumerate(LEVELS):
            this = []
            for i in range(width):
                name = f"G{g}L{depth}N{i}"
                fields = []
                if prev:
                    fields.append(f"depends_on: [{prev[i % len(prev)]}]")
                if depth == 3 and i == 0 and 0 < g < GROUPS - 1 and gpu_agents < 8:
                    fields.append("gpu: {slice: mig, profile: 1g.5gb}")
                    gpu_agents += 1
                lines.append(f"      {name}: {{{', '.join(fields)}}}")
                this.append(name)
            prev = this
    return "\n".join(lines) + "\n", gpu_agents


class Daemon:
    def __init__(self, work, cfg, sock, env):
        self.args = [os.path.join(BIN, "orchestratord"), "run", "--config", cfg, "--state-dir",
                     os.path.join(work, "state"), "--socket", sock, "--metrics-listen", "off"]
        self.log = os.path.join(work, "daemon.log")
        self.env = env
        self.sock = sock
        self.proc = None

    def start(self):
        if os.path.exists(self.sock):
            os.unlink(self.sock)
        self.proc = subprocess.Popen(self.args, env=self.env, stderr=open(self.log, "a"))
        for _ in range(200):
            if os.path.exists(self.sock):
                return
            time.sleep(0.05)
        raise RuntimeError("the daemon did not open its socket")

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait()


def main():
    work = tempfile.mkdtemp(prefix="orch-scale-")
    cfg = os.path.join(work, "startup_config.yaml")
    text, gpu_agents = config()
    with open(cfg, "w") as f:
        f.write(text)
    agents = GROUPS * sum(LEVELS)
    sock = os.path.join(work, "orchestrator.sock")
    ctl = [os.path.join(BIN, "orchestratorctl"), "--socket", sock]
    env = dict(os.environ,
               ORCH_NVML_LIBRARY=os.path.join(BIN, "libnvml_sim.so"),
               NVML_SIM_CONFIG=os.path.join(ROOT, "config/sim/lab-2xa100.yaml"),
               NVML_SIM_STATE=os.path.join(work, "nvml-state.json"),
               ORCH_MPS_CONTROL=os.path.join(BIN, "nvidia-cuda-mps-control-sim"))
    d = Daemon(work, cfg, sock, env)
    events = StartEvents()
    top, bottom = f"g{GROUPS - 1}", "g0"
    res = {"agents": agents, "groups": GROUPS, "gpu_agents": gpu_agents, "depth": len(LEVELS),
           "health_interval_s": 10, "cpu_sample_s": CPU_SECS}

    def status():
        return json.loads(run(*ctl, "-o", "json", "status").stdout)

    def counts():
        a = status()["agents"]
        return a["running"], a["healthy"]

    def starts_by_name(t0):
        with events.lock:
            evs = [e for e in events.events if e["timeNano"] / 1e9 >= t0 and e["Action"] == "start"
                   and e.get("Actor", {}).get("Attributes", {}).get(LABEL) == HOST]
        by = {}
        for e in evs:
            n = e["Actor"]["Attributes"]["name"]
            by[n] = by.get(n, 0) + 1
        return by

    try:
        d.start()
        time.sleep(2)
        res["rss_idle_kib"] = rss_kib(d.proc.pid)
        res["cpu_idle"] = cpu_share(d.proc.pid, min(CPU_SECS, 10))

        # 1. From nothing to all healthy.
        t0 = time.time()
        run(*ctl, "group", "start", top, "--wait", "--timeout", "600")
        res["start_healthy_s"] = time.time() - t0
        res["start_running_s"] = events.all_running(t0, LABEL, HOST, agents)
        gpu = json.loads(run(*ctl, "-o", "json", "gpu").stdout)
        res["mig_slices"] = sum(len(g.get("slices", [])) for g in gpu.get("gpus", []))
        print(f"  start: running {res['start_running_s']:.1f}s healthy {res['start_healthy_s']:.1f}s, "
              f"{res['mig_slices']} GPU slices", flush=True)

        # 2. Footprint under supervision (probes every 10 s).
        time.sleep(5)
        res["cpu_busy"] = cpu_share(d.proc.pid, CPU_SECS)
        res["rss_busy_kib"] = rss_kib(d.proc.pid)
        print(f"  supervising: cpu {res['cpu_busy'] * 100:.2f}% of a core, rss {res['rss_busy_kib'] / 1024:.1f} MiB",
              flush=True)

        # 3. Stop the whole host.
        t0 = time.time()
        run(*ctl, "group", "stop", bottom, "--with-dependents", "--wait", "--timeout", "600")
        res["stop_s"] = time.time() - t0
        print(f"  stop: {res['stop_s']:.1f}s", flush=True)

        # 4. kill -9 mid-start.
        t0 = time.time()
        run(*ctl, "group", "start", top)
        while len(starts_by_name(t0)) < agents // 2:
            time.sleep(0.05)
        d.stop(signal.SIGKILL)
        killed_at = time.time() - t0
        started_at_kill = len(starts_by_name(t0))
        t1 = time.time()
        d.start()
        run(*ctl, "group", "start", top, "--wait", "--timeout", "600")
        res["kill9"] = {
            "killed_after_s": killed_at,
            "started_at_kill": started_at_kill,
            "restart_to_healthy_s": time.time() - t1,
            "containers": len(run("docker", "ps", "-aq", "--filter", f"label={LABEL}={HOST}").stdout.split()),
            "started_twice": sum(1 for n in starts_by_name(t0).values() if n > 1),
        }
        print(f"  kill -9 after {killed_at:.1f}s ({started_at_kill} started): all healthy "
              f"{res['kill9']['restart_to_healthy_s']:.1f}s after the new daemon's exec, "
              f"{res['kill9']['containers']} containers, {res['kill9']['started_twice']} started twice", flush=True)

        # 5. Adoption of 200 running containers.
        time.sleep(2)
        d.stop(signal.SIGTERM)  # shutdown: leave (the default): agents keep running
        t0 = time.time()
        d.start()
        running_at = None
        while True:
            r, h = counts()
            if running_at is None and r >= agents:
                running_at = time.time() - t0
            if h >= agents:
                break
            if time.time() - t0 > 300:
                raise RuntimeError(f"adoption: {r} running, {h} healthy after 300 s")
            time.sleep(0.05)
        res["adopt_running_s"] = running_at
        res["adopt_healthy_s"] = time.time() - t0
        res["adopt_restarts"] = sum(starts_by_name(t0).values())
        print(f"  adoption: {agents} running in {running_at:.2f}s, healthy in {res['adopt_healthy_s']:.2f}s, "
              f"{res['adopt_restarts']} containers started by it", flush=True)

        run(*ctl, "group", "stop", bottom, "--with-dependents", "--wait", "--timeout", "600")
    finally:
        events.close()
        d.stop()
        remove_labelled(f"{LABEL}={HOST}")
        remove_network(f"orch-{HOST}")
    print(f"written: {save('scale.json', res)}")


if __name__ == "__main__":
    sys.exit(main())
