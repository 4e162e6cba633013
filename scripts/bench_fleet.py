#!/usr/bin/env python3
"""Fleet benchmarks against the local Docker Engine, side by side in one run.

1. Start a 40-agent group (one root, three middle agents needing it, 36
   leaves needing a middle one: dependency depth 3, health-gated) to
   all-healthy, alternating between `orchestratorctl group start --wait`
   and `docker-compose up -d` of the exported Compose file of the same
   group (polled until every container is healthy).
2. Agent crash to running again: `docker kill` an agent; the time from
   Docker's `die` event to its next `start` event (both Docker's clock).
3. The daemon's resident memory, idle and supervising the group.

Prints medians, p95/p99 and ratios; used by scripts/bench.sh.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
CRASHES = int(os.environ.get("BENCH_CRASHES", "20"))


def config(host):
    lines = [
        "version: 1",
        f"host: {{name: {host}}}",
        "defaults:",
        "  image: orchestrator-agent:latest",
        "  health: {http: {port: 8080}, interval: 1s, timeout: 1s, retries: 3, start_period: 30s}",
        "  stop_timeout: 2s",
        "groups:",
        "  bench:",
        "    agents:",
        "      Root: {}",
    ]
    for m in range(3):
        lines.append(f"      Mid{m}: {{depends_on: [Root]}}")
    for leaf in range(36):
        lines.append(f"      Leaf{leaf:02d}: {{depends_on: [Mid{leaf % 3}]}}")
    return "\n".join(lines) + "\n"


def run(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw)


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def containers(label):
    out = run("docker", "ps", "-aq", "--filter", f"label={label}").stdout.split()
    return out


def all_healthy(ids, want):
    if len(ids) != want:
        return False
    out = run("docker", "inspect", "--format", "{{.State.Health.Status}}", *ids).stdout.split()
    return len(out) == want and all(s == "healthy" for s in out)


def main():
    work = tempfile.mkdtemp(prefix="orch-bench-")
    host = "bench"
    cfg = os.path.join(work, "startup_config.yaml")
    with open(cfg, "w") as f:
        f.write(config(host))
    sock = os.path.join(work, "orchestrator.sock")
    ctl = [os.path.join(BIN, "orchestratorctl"), "--socket", sock]
    daemon = subprocess.Popen(
        [os.path.join(BIN, "orchestratord"), "run", "--config", cfg, "--state-dir", os.path.join(work, "state"), "--socket", sock],
        stderr=open(os.path.join(work, "daemon.log"), "w"),
    )
    compose_file = os.path.join(work, "compose.yaml")
    with open(compose_file, "w") as f:
        f.write(run(*ctl[:1], "export", "compose", cfg, "--group", "bench").stdout)
    try:
        for _ in range(100):
            if os.path.exists(sock):
                break
            time.sleep(0.1)
        time.sleep(0.5)
        idle_rss = rss_kib(daemon.pid)

        ours, theirs = [], []
        for r in range(ROUNDS):
            # orchestratord
            t0 = time.monotonic()
            run(*ctl, "group", "start", "bench", "--wait", "--timeout", "300")
            ours.append(time.monotonic() - t0)
            busy_rss = rss_kib(daemon.pid)
            run(*ctl, "group", "stop", "bench", "--wait", "--timeout", "300")
            # docker-compose, same group, same image and health checks
            project = f"orchbench{r}"
            t0 = time.monotonic()
            run("docker-compose", "-p", project, "-f", compose_file, "up", "-d")
            label = f"com.docker.compose.project={project}"
            while not all_healthy(containers(label), 40):
                time.sleep(0.1)
            theirs.append(time.monotonic() - t0)
            run("docker-compose", "-p", project, "-f", compose_file, "down", "-t", "2")

        # Crash to running again, from Docker's own event times.
        run(*ctl, "group", "start", "bench", "--wait", "--timeout", "300")
        target = f"{host}-Leaf00-0"
        events = subprocess.Popen(
            ["docker", "events", "--filter", f"container={target}", "--filter", "event=die", "--filter", "event=start", "--format", "{{json .}}"],
            stdout=subprocess.PIPE, text=True,
        )
        seen = []
        reader = threading.Thread(target=lambda: [seen.append(json.loads(l)) for l in events.stdout], daemon=True)
        reader.start()
        time.sleep(0.5)
        gaps = []
        for _ in range(CRASHES):
            n = len(seen)
            run("docker", "kill", target)
            deadline = time.time() + 30
            while time.time() < deadline:
                new = seen[n:]
                die = next((e for e in new if e["Action"] == "die"), None)
                start = next((e for e in new if e["Action"] == "start" and die and e["timeNano"] > die["timeNano"]), None)
                if start:
                    gaps.append((start["timeNano"] - die["timeNano"]) / 1e6)
                    break
                time.sleep(0.02)
            # Wait until healthy again, and let its failure count reset, so
            # every crash is measured at the first backoff step.
            run(*ctl, "group", "start", "bench", "--wait", "--timeout", "60")
            time.sleep(10.5)
        events.kill()
        run(*ctl, "group", "stop", "bench", "--wait", "--timeout", "300")

        print(f"group start to all-healthy, 40 agents, depth 3, {ROUNDS} rounds each, alternating:")
        print(f"  orchestratord:  median {statistics.median(ours):.2f}s  min {min(ours):.2f}s  max {max(ours):.2f}s")
        print(f"  docker-compose: median {statistics.median(theirs):.2f}s  min {min(theirs):.2f}s  max {max(theirs):.2f}s")
        print(f"  ratio (compose / orchestratord, medians): {statistics.median(theirs) / statistics.median(ours):.2f}x")
        print(f"agent crash to running again (docker die -> start), {len(gaps)} crashes:")
        print(f"  median {statistics.median(gaps):.0f}ms  p95 {pct(gaps, 95):.0f}ms  p99 {pct(gaps, 99):.0f}ms  max {max(gaps):.0f}ms")
        print(f"daemon RSS: idle {idle_rss / 1024:.1f} MiB, supervising 40 agents {busy_rss / 1024:.1f} MiB")
    finally:
        daemon.terminate()
        daemon.wait()
        for r in range(ROUNDS):
            subprocess.run(["docker-compose", "-p", f"orchbench{r}", "-f", compose_file, "down", "-t", "1"], capture_output=True)
        ids = containers(f"io.orchestrator.host={host}")
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)


if __name__ == "__main__":
    sys.exit(main())
