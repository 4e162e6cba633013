#!/usr/bin/env python3
"""Fleet benchmarks against the local Docker Engine, side by side in one run.

1. Group start, three ways, alternating round by round, at each group size
   of BENCH_SIZES (one root, three middle agents needing it, the rest
   leaves needing a middle one: dependency depth 3, HTTP health checks at
   a 1 s interval):
   - orchestratord: `orchestratorctl group start --wait`;
   - docker-compose: `up -d` of the group's exported Compose file (the
     same image, health checks and dependencies), polled until every
     container is healthy;
   - raw: `raw-start` (orchestrator/bench), the same container specs
     created and started through the same Docker adapter at the same
     concurrency, with no supervision and no gating, then probed until
     each first passes.
   For each: time to all running (the last `start` event on Docker's
   clock) and to all healthy.
2. Agent crash to running again: `docker kill` an agent; the time from
   Docker's `die` event to its next `start` event (both Docker's clock).
3. The daemon's resident memory, idle and supervising the largest group.

Writes target/bench/fleet.json; prints a summary. Used by scripts/bench.sh.
Knobs: BENCH_ROUNDS (5), BENCH_SIZES (10,20,40), BENCH_CRASHES (20),
BENCH_PARALLEL (16, the daemon's default --parallel).
"""
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_lib import (BIN, StartEvents, cpu_ticks, median, pct, remove_labelled,  # noqa: E402
                       remove_network, rss_kib, run, save)

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
SIZES = [int(s) for s in os.environ.get("BENCH_SIZES", "10,20,40").split(",")]
CRASHES = int(os.environ.get("BENCH_CRASHES", "20"))
PARALLEL = int(os.environ.get("BENCH_PARALLEL", "16"))
HOST = "bench"
RAW_HOST = "benchraw"
HOST_LABEL = "io.orchestrator.host"
PROJECT_LABEL = "com.docker.compose.project"


def config(host):
    lines = [
        "version: 1",
        f"host: {{name: {host}}}",
        "defaults:",
        "  image: orchestrator-agent:latest",
        "  health: {http: {port: 8080}, interval: 1s, timeout: 1s, retries: 3, start_period: 30s}",
        "  stop_timeout: 2s",
        # Stable again after 5 s healthy, so that each crash below is
        # measured at the first backoff step (the default is the backoff cap).
        "  restart: {crashloop: {stable: 5s}}",
        "groups:",
    ]
    for n in SIZES:
        p = f"S{n}"
        lines += [f"  g{n}:", "    agents:", f"      {p}Root: {{}}"]
        for m in range(3):
            lines.append(f"      {p}Mid{m}: {{depends_on: [{p}Root]}}")
        for leaf in range(n - 4):
            lines.append(f"      {p}Leaf{leaf:03d}: {{depends_on: [{p}Mid{leaf % 3}]}}")
    return "\n".join(lines) + "\n"


def all_healthy(label, want):
    ids = run("docker", "ps", "-aq", "--filter", f"label={label}").stdout.split()
    if len(ids) != want:
        return False
    out = run("docker", "inspect", "--format", "{{.State.Health.Status}}", *ids).stdout.split()
    return len(out) == want and all(s == "healthy" for s in out)


def main():
    work = tempfile.mkdtemp(prefix="orch-bench-")
    cfg = os.path.join(work, "startup_config.yaml")
    raw_cfg = os.path.join(work, "raw_config.yaml")
    with open(cfg, "w") as f:
        f.write(config(HOST))
    with open(raw_cfg, "w") as f:
        f.write(config(RAW_HOST))
    sock = os.path.join(work, "orchestrator.sock")
    ctl = [os.path.join(BIN, "orchestratorctl"), "--socket", sock]
    compose_version = run("docker-compose", "version", "--short").stdout.strip()
    up_help = run("docker-compose", "up", "--help").stdout
    compose_wait = "--wait" in up_help
    compose_files = {}
    for n in SIZES:
        compose_files[n] = os.path.join(work, f"compose-{n}.yaml")
        with open(compose_files[n], "w") as f:
            f.write(run(ctl[0], "export", "compose", cfg, "--group", f"g{n}").stdout)
    daemon = subprocess.Popen(
        [os.path.join(BIN, "orchestratord"), "run", "--config", cfg, "--state-dir",
         os.path.join(work, "state"), "--socket", sock, "--parallel", str(PARALLEL),
         "--metrics-listen", "off"],
        stderr=open(os.path.join(work, "daemon.log"), "w"),
    )
    events = StartEvents()
    projects = []
    results = {"sizes": SIZES, "rounds": ROUNDS, "parallel": PARALLEL,
               "compose_version": compose_version, "compose_wait": compose_wait,
               "start": {str(n): {"ours": [], "compose": [], "raw": []} for n in SIZES}}
    try:
        for _ in range(100):
            if os.path.exists(sock):
                break
            time.sleep(0.1)
        time.sleep(1.0)
        results["rss_idle_kib"] = rss_kib(daemon.pid)

        hz = os.sysconf("SC_CLK_TCK")

        def ours(n, r):
            c0 = cpu_ticks(daemon.pid)
            t0 = time.time()
            run(*ctl, "group", "start", f"g{n}", "--wait", "--timeout", "300")
            healthy = time.time() - t0
            results.setdefault("daemon_cpu_s", {}).setdefault(str(n), []).append(
                (cpu_ticks(daemon.pid) - c0) / hz)
            running = events.all_running(t0, HOST_LABEL, HOST, n)
            if n == max(SIZES):
                results["rss_busy_kib"] = rss_kib(daemon.pid)
            run(*ctl, "group", "stop", f"g{n}", "--wait", "--timeout", "300")
            return running, healthy

        def compose(n, r):
            project = f"orchbench{n}x{r}"
            projects.append((project, compose_files[n]))
            t0 = time.time()
            cmd = ["docker-compose", "-p", project, "-f", compose_files[n], "up", "-d"]
            if compose_wait:
                run(*cmd, "--wait")
            else:
                run(*cmd)
                while not all_healthy(f"{PROJECT_LABEL}={project}", n):
                    time.sleep(0.1)
            healthy = time.time() - t0
            running = events.all_running(t0, PROJECT_LABEL, project, n)
            run("docker-compose", "-p", project, "-f", compose_files[n], "down", "-t", "2")
            return running, healthy

        def raw(n, r):
            t0 = time.time()
            out = run(os.path.join(BIN, "raw-start"), "--config", raw_cfg, "--group", f"g{n}",
                      "--parallel", str(PARALLEL), "--probe").stdout
            healthy = time.time() - t0
            running = events.all_running(t0, HOST_LABEL, RAW_HOST, n)
            remove_labelled(f"{HOST_LABEL}={RAW_HOST}")
            json.loads(out)
            return running, healthy

        sides = [("ours", ours), ("compose", compose), ("raw", raw)]
        for r in range(ROUNDS):
            for n in SIZES:
                # Each round starts with a different side.
                for name, side in sides[r % 3:] + sides[:r % 3]:
                    running, healthy = side(n, r)
                    results["start"][str(n)][name].append({"running": running, "healthy": healthy})
                    print(f"  round {r + 1} size {n} {name}: running {running:.2f}s healthy {healthy:.2f}s",
                          flush=True)

        # Crash to running again, from Docker's own event times.
        n = max(SIZES)
        run(*ctl, "group", "start", f"g{n}", "--wait", "--timeout", "300")
        target = f"{HOST}-S{n}Leaf000-0"
        gaps = []
        for _ in range(CRASHES):
            t0 = time.time()
            run("docker", "kill", target)
            deadline = time.time() + 30
            while time.time() < deadline:
                with events.lock:
                    evs = [e for e in events.events if e["timeNano"] / 1e9 >= t0 - 1
                           and e.get("Actor", {}).get("Attributes", {}).get("name") == target]
                die = next((e for e in evs if e["Action"] == "die"), None)
                start = next((e for e in evs if e["Action"] == "start" and die
                              and e["timeNano"] > die["timeNano"]), None)
                if start:
                    gaps.append((start["timeNano"] - die["timeNano"]) / 1e6)
                    break
                time.sleep(0.02)
            # Healthy again, and its failure count reset (stable after 5 s),
            # so every crash is measured at the first backoff step.
            run(*ctl, "group", "start", f"g{n}", "--wait", "--timeout", "60")
            time.sleep(6)
        results["crash_ms"] = gaps
        run(*ctl, "group", "stop", f"g{n}", "--wait", "--timeout", "300")
    finally:
        events.close()
        daemon.terminate()
        daemon.wait()
        for project, f in projects:
            subprocess.run(["docker-compose", "-p", project, "-f", f, "down", "-t", "1"],
                           capture_output=True)
        remove_labelled(f"{HOST_LABEL}={HOST}")
        remove_labelled(f"{HOST_LABEL}={RAW_HOST}")
        for net in (f"orch-{HOST}", f"orch-{RAW_HOST}"):
            remove_network(net)

    path = save("fleet.json", results)
    print(f"group start, depth 3, {ROUNDS} rounds per side and size, alternating (compose {compose_version}"
          f"{', up --wait' if compose_wait else ', no up --wait: polled'}):")
    for n in SIZES:
        s = results["start"][str(n)]
        line = "  ".join(
            f"{side} running {median([x['running'] for x in s[side]]):.2f}s healthy {median([x['healthy'] for x in s[side]]):.2f}s"
            for side in ("ours", "compose", "raw"))
        print(f"  {n:3d} agents: {line}")
    if gaps:
        print(f"crash to running again: median {median(gaps):.0f}ms p95 {pct(gaps, 95):.0f}ms "
              f"p99 {pct(gaps, 99):.0f}ms ({len(gaps)} crashes)")
    print(f"daemon RSS idle {results['rss_idle_kib'] / 1024:.1f} MiB, at {max(SIZES)} agents "
          f"{results.get('rss_busy_kib', 0) / 1024:.1f} MiB")
    print(f"written: {path}")


if __name__ == "__main__":
    sys.exit(main())
