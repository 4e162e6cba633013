#!/usr/bin/env python3
"""Autoscaling on the real engine with the reference agent.

Phases (each can be left out: BENCH_AUTOSCALE_SKIP=step,cost):

- step: one agent (`resources.cpus: 0.5`, `AGENT_WORK_CPU=20ms`,
  `autoscale: {min: 1, max: 5, cpu: 70%, up_after: 15s, down_after: 60s}`)
  is started idle; then a load generator on loopback sends `/work` at a
  fixed rate (BENCH_AUTOSCALE_RPS, default 40 requests per second, 0.8 of a
  core of CPU work), round-robin over the running replicas' addresses on
  the host's Docker network, as a load balancer in front of them would.
  Measured: the time from the load step to the first scale-up decision
  (the `agent-autoscaled` event's time), to every replica it asked for
  healthy, the replica count every second (plotted by plot_bench.py as
  docs/bench-autoscale-step.png); then the same load held constant for
  BENCH_AUTOSCALE_CONSTANT_SECS (default 600): changes of direction (the
  target is none, at most one); then the load stops: the time to the
  scale-down back to one.
- cost: the daemon's CPU (utime + stime from /proc) over BENCH_AUTOSCALE_COST_SECS
  (default 60) with 20 agents, idle, each autoscaled on `cpu`
  (one Docker stats read per replica every 5 s) against the same 20
  agents without `autoscale`, side by side, each after a settle of 30 s.

Writes target/bench/autoscale.json; prints a summary.
"""
import itertools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_lib import BIN, cpu_ticks, median, save, stop_daemon  # noqa: E402

RPS = float(os.environ.get("BENCH_AUTOSCALE_RPS", "40"))
CONSTANT = float(os.environ.get("BENCH_AUTOSCALE_CONSTANT_SECS", "600"))
COST_SECS = float(os.environ.get("BENCH_AUTOSCALE_COST_SECS", "60"))
SKIP = set(filter(None, os.environ.get("BENCH_AUTOSCALE_SKIP", "").split(",")))
IMAGE = "orchestrator-agent:latest"
LABEL = "io.orchestrator.host"


class Daemon:
    def __init__(self, host, text):
        self.host = host
        self.work = tempfile.mkdtemp(prefix=f"orch-{host}-")
        self.cfg = os.path.join(self.work, "startup_config.yaml")
        with open(self.cfg, "w") as f:
            f.write(text)
        sock = os.path.join(self.work, "orchestrator.sock")
        self.ctl_args = [os.path.join(BIN, "orchestratorctl"), "--socket", sock]
        self.proc = subprocess.Popen(
            [os.path.join(BIN, "orchestratord"), "run", "--config", self.cfg,
             "--state-dir", os.path.join(self.work, "state"), "--socket", sock],
            stderr=open(os.path.join(self.work, "daemon.log"), "w"))
        for _ in range(100):
            if subprocess.run([*self.ctl_args, "status"], capture_output=True).returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"{host}: the daemon did not answer")

    def ctl(self, *args):
        return subprocess.run([*self.ctl_args, *args], check=True, capture_output=True,
                              text=True).stdout

    def json(self, *args):
        return json.loads(self.ctl("-o", "json", *args))

    def events(self):
        return [json.loads(line) for line in self.ctl("-o", "json", "events").splitlines() if line]

    def close(self):
        stop_daemon(self.ctl_args, "g", self.proc, f"{LABEL}={self.host}", f"orch-{self.host}")


def addresses(host, agent):
    """The running replicas' addresses on the host's network."""
    ids = subprocess.run(["docker", "ps", "-q", "--filter", f"label={LABEL}={host}",
                          "--filter", f"label=io.orchestrator.agent={agent}"],
                         capture_output=True, text=True).stdout.split()
    if not ids:
        return []
    out = subprocess.run(["docker", "inspect", "--format",
                          f'{{{{(index .NetworkSettings.Networks "orch-{host}").IPAddress}}}}', *ids],
                         capture_output=True, text=True).stdout.split()
    return [a for a in out if a]


class Load:
    """`rps` requests per second of `GET /work`, spread over the replicas."""

    def __init__(self, host, agent, rps, workers=16):
        self.host, self.agent = host, agent
        self.interval = workers / rps
        self.stop = threading.Event()
        self.targets = addresses(host, agent)
        self.done = 0
        self.failed = 0
        self.lock = threading.Lock()
        self.rr = itertools.count()
        threading.Thread(target=self._refresh, daemon=True).start()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(workers)]
        for i, t in enumerate(self.threads):
            t.start()

    def _refresh(self):
        while not self.stop.wait(1.0):
            found = addresses(self.host, self.agent)
            if found:
                self.targets = found

    def _run(self, i):
        import socket
        next_at = time.monotonic() + i * self.interval / len(self.threads)
        while not self.stop.is_set():
            now = time.monotonic()
            if now < next_at:
                time.sleep(next_at - now)
            next_at += self.interval
            targets = self.targets
            if not targets:
                continue
            ip = targets[next(self.rr) % len(targets)]
            ok = False
            try:
                with socket.create_connection((ip, 8080), timeout=10) as s:
                    s.settimeout(30)
                    s.sendall(b"GET /work HTTP/1.0\r\nHost: agent\r\n\r\n")
                    head = s.recv(64)
                    ok = head.split(b" ")[1:2] == [b"200"]
                    while s.recv(4096):
                        pass
            except OSError:
                pass
            with self.lock:
                if ok:
                    self.done += 1
                else:
                    self.failed += 1

    def close(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=35)


def config(host, agents, autoscale):
    lines = [
        "version: 1",
        f"host: {{name: {host}}}",
        "defaults:",
        f"  image: {IMAGE}",
        "  health: {http: {port: 8080}, interval: 2s, timeout: 2s, retries: 3, start_period: 5s}",
        "  stop_timeout: 2s",
        "groups:",
        "  g:",
        "    agents:",
    ]
    for name in agents:
        lines += [
            f"      {name}:",
            "        env: {AGENT_WORK_CPU: 20ms, AGENT_WORK_LATENCY: 0ms}",
            "        resources: {cpus: 0.5}",
        ]
        if autoscale:
            lines.append(f"        autoscale: {autoscale}")
    return "\n".join(lines) + "\n"


def autoscaled(events, since_ms=0):
    return [e for e in events if e.get("kind") == "agent-autoscaled" and e["time_ms"] >= since_ms]


def step():
    host = "bench-autoscale"
    spec = "{min: 1, max: 5, cpu: 70%, up_after: 15s, down_after: 60s}"
    d = Daemon(host, config(host, ["Worker"], spec))
    series = []
    try:
        d.ctl("group", "start", "g", "--wait", "--timeout", "120")
        time.sleep(10)
        load = Load(host, "Worker", RPS)
        t0 = time.time()
        decision_s = healthy_s = None
        wanted = None
        sampler_stop = threading.Event()

        def sample():
            while not sampler_stop.wait(1.0):
                try:
                    s = d.json("status")
                    series.append((round(time.time() - t0, 1), s["agents"]["wanted"],
                                   s["agents"]["healthy"]))
                except (subprocess.CalledProcessError, ValueError):
                    pass

        threading.Thread(target=sample, daemon=True).start()
        deadline = time.time() + 180
        while time.time() < deadline and decision_s is None:
            ups = autoscaled(d.events())
            if ups:
                decision_s = ups[0]["time_ms"] / 1000 - t0
                wanted = ups[0]["to"]
                first = ups[0]
            time.sleep(0.5)
        if decision_s is None:
            raise RuntimeError("no scale-up within 180 s")
        while time.time() < deadline:
            if d.json("status")["agents"]["healthy"] >= wanted:
                healthy_s = time.time() - t0
                break
            time.sleep(0.5)
        # Let it settle at its count, then hold the load constant.
        time.sleep(60)
        c0 = int(time.time() * 1000)
        time.sleep(CONSTANT)
        held = autoscaled(d.events(), c0)
        directions = []
        for e in held:
            directions.append("up" if e["to"] > e["from"] else "down")
        changes_of_direction = sum(1 for a, b in zip(directions, directions[1:]) if a != b)
        before_stop = d.json("status")["agents"]["wanted"]
        load.close()
        t_stop = time.time()
        down_s = None
        while time.time() < t_stop + 600:
            downs = [e for e in autoscaled(d.events(), int(t_stop * 1000)) if e["to"] == 1]
            if downs:
                down_s = downs[0]["time_ms"] / 1000 - t_stop
                break
            time.sleep(1)
        # The plot shows the replicas going too.
        time.sleep(15)
        sampler_stop.set()
        return {
            "rps": RPS,
            "cpu_work_ms": 20,
            "cpu_limit": 0.5,
            "target_pct": 70,
            "up_after_s": 15,
            "down_after_s": 60,
            "tick_s": 5,
            "decision_s": decision_s,
            "first_decision": {k: first.get(k) for k in ("from", "to", "signal", "value", "target")},
            "all_healthy_s": healthy_s,
            "constant_s": CONSTANT,
            "changes_in_constant": len(held),
            "changes_of_direction": changes_of_direction,
            "replicas_under_constant_load": before_stop,
            "scale_down_s": down_s,
            "requests_done": load.done,
            "requests_failed": load.failed,
            "series": series,
        }
    finally:
        d.close()


def cost_of(autoscale):
    host = "bench-autoscale-cost" + ("-on" if autoscale else "-off")
    spec = "{min: 1, max: 2, cpu: 70%}" if autoscale else None
    d = Daemon(host, config(host, [f"W{i}" for i in range(20)], spec))
    try:
        d.ctl("group", "start", "g", "--wait", "--timeout", "300")
        time.sleep(30)
        hz = os.sysconf("SC_CLK_TCK")
        t0, c0 = time.monotonic(), cpu_ticks(d.proc.pid)
        time.sleep(COST_SECS)
        t1, c1 = time.monotonic(), cpu_ticks(d.proc.pid)
        return (c1 - c0) / hz / (t1 - t0) * 100
    finally:
        d.close()


def main():
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    out = {"commit": commit, "date": time.strftime("%Y-%m-%d", time.gmtime()),
           "command": "python3 scripts/bench_autoscale.py"}
    if "step" not in SKIP:
        out["step"] = step()
    if "cost" not in SKIP:
        rounds = int(os.environ.get("BENCH_AUTOSCALE_COST_ROUNDS", "2"))
        off, on = [], []
        for _ in range(rounds):
            off.append(cost_of(False))
            on.append(cost_of(True))
        out["cost"] = {"agents": 20, "seconds": COST_SECS, "off_pct": off, "on_pct": on,
                       "median_off_pct": median(off), "median_on_pct": median(on),
                       "added_pct": median(on) - median(off)}
    path = save("autoscale.json", out)
    s = out.get("step")
    if s:
        print(f"step load ({s['rps']:.0f} req/s of {s['cpu_work_ms']} ms CPU): decision after "
              f"{s['decision_s']:.1f} s ({s['first_decision']}), all healthy after "
              f"{s['all_healthy_s']:.1f} s; {s['constant_s']:.0f} s constant: "
              f"{s['changes_in_constant']} change(s), {s['changes_of_direction']} change(s) of direction "
              f"at {s['replicas_under_constant_load']} replicas; scale-down {s['scale_down_s']} s after the load stopped")
    c = out.get("cost")
    if c:
        print(f"cost, 20 agents: {c['median_off_pct']:.2f}% without autoscale, "
              f"{c['median_on_pct']:.2f}% with (+{c['added_pct']:.2f}% of a core)")
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
