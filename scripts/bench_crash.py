#!/usr/bin/env python3
"""Crash to running again, side by side with Docker's own restart policy.

Two containers of the reference agent run at the same time, each exiting by
itself (`AGENT_CRASH_AFTER`, exit code 1) a while after it starts:
- ours: one agent supervised by orchestratord (`restart: {policy: always}`,
  the default backoff: 100 ms first delay, doubling, 10% jitter);
- docker: the same agent exported with `orchestratorctl export compose`
  (same image, environment, limits, security options, health check, its
  own bridge network) and run by docker-compose with `restart: always`,
  restarted by Docker's restart manager (100 ms first delay, doubling).
Each side's time is Docker's own: a `die` event to that container's next
`start` event (the engine's clock, the same for both).

Like with like: Docker forgets its backoff once a container has run 10 s;
the daemon once a replica has been healthy for its stability period, here
`crashloop: {stable: 10s}` with an HTTP probe every second. The agent exits
CRASH_AFTER (15 s) after it starts, so every crash on both sides is a first
crash, restarted after the first backoff step.

Writes target/bench/crash.json; prints a summary. Used by scripts/bench.sh.
Knobs: BENCH_CRASHES (crashes per side, default 10), BENCH_CRASH_AFTER
(default 15s).
"""
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_lib import BIN, StartEvents, median, pct, remove_labelled, remove_network, run, save  # noqa: E402

CRASHES = int(os.environ.get("BENCH_CRASHES", "10"))
CRASH_AFTER = os.environ.get("BENCH_CRASH_AFTER", "15s")
HOST = "benchcrash"
DOCKER_HOST = "benchcrashdocker"
HOST_LABEL = "io.orchestrator.host"
PROJECT_LABEL = "com.docker.compose.project"
IMAGE = "orchestrator-agent:latest"
OURS_NAME = f"{HOST}-Crasher-0"


def config(host):
    return "\n".join([
        "version: 1",
        f"host: {{name: {host}}}",
        "defaults:",
        f"  image: {IMAGE}",
        "  stop_timeout: 2s",
        "groups:",
        "  crash:",
        "    agents:",
        "      Crasher:",
        f"        env: {{AGENT_CRASH_AFTER: \"{CRASH_AFTER}\"}}",
        "        health: {http: {port: 8080}, interval: 1s, timeout: 1s, retries: 3, start_period: 30s}",
        "        restart: {policy: always, crashloop: {stable: 10s, restarts: 1000}}",
        "",
    ])


def gaps_of(events, name, since_ns):
    """die -> next start gaps (ms) of container `name` after `since_ns`."""
    with events.lock:
        evs = sorted((e for e in events.events
                      if e.get("Actor", {}).get("Attributes", {}).get("name") == name
                      and e["timeNano"] >= since_ns), key=lambda e: e["timeNano"])
    gaps, die = [], None
    for e in evs:
        if e["Action"] == "die":
            die = e["timeNano"]
        elif e["Action"] == "start" and die is not None:
            gaps.append((e["timeNano"] - die) / 1e6)
            die = None
    return gaps


def summary(gaps):
    return {"n": len(gaps), "median": median(gaps), "p95": pct(gaps, 95) if gaps else None,
            "min": min(gaps) if gaps else None, "max": max(gaps) if gaps else None}


def main():
    work = tempfile.mkdtemp(prefix="orch-bench-crash-")
    cfg = os.path.join(work, "startup_config.yaml")
    with open(cfg, "w") as f:
        f.write(config(HOST))
    docker_cfg = os.path.join(work, "docker_config.yaml")
    with open(docker_cfg, "w") as f:
        f.write(config(DOCKER_HOST))
    compose_file = os.path.join(work, "compose.yaml")
    with open(compose_file, "w") as f:
        f.write(run(os.path.join(BIN, "orchestratorctl"), "export", "compose", docker_cfg).stdout)
    compose = ["docker-compose", "-p", DOCKER_HOST, "-f", compose_file]
    sock = os.path.join(work, "orchestrator.sock")
    ctl = [os.path.join(BIN, "orchestratorctl"), "--socket", sock]
    log = open(os.path.join(work, "daemon.log"), "w")
    daemon = subprocess.Popen(
        [os.path.join(BIN, "orchestratord"), "run", "--config", cfg, "--state-dir",
         os.path.join(work, "state"), "--socket", sock, "--metrics-listen", "off"],
        stderr=log,
    )
    subprocess.run([*compose, "down", "-t", "1"], capture_output=True)
    events = StartEvents()
    results = {"crashes": CRASHES, "crash_after": CRASH_AFTER, "ours_ms": [], "docker_ms": []}
    try:
        for _ in range(100):
            if subprocess.run([*ctl, "status"], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        t0 = time.time_ns()
        run(*ctl, "group", "start", "crash", "--wait", "--timeout", "120")
        run(*compose, "up", "-d")
        docker_name = run("docker", "ps", "-a", "--filter", f"label={PROJECT_LABEL}={DOCKER_HOST}",
                          "--format", "{{.Names}}").stdout.split()[0]
        results["docker_restart_policy"] = run(
            "docker", "inspect", "--format", "{{.HostConfig.RestartPolicy.Name}}", docker_name).stdout.strip()
        deadline = time.time() + 60 + CRASHES * 40
        while time.time() < deadline:
            ours = gaps_of(events, OURS_NAME, t0)
            theirs = gaps_of(events, docker_name, t0)
            if len(ours) >= CRASHES and len(theirs) >= CRASHES:
                break
            time.sleep(1)
        results["ours_ms"] = gaps_of(events, OURS_NAME, t0)[:CRASHES]
        results["docker_ms"] = gaps_of(events, docker_name, t0)[:CRASHES]
        restarts = run("docker", "inspect", "--format", "{{.RestartCount}}", docker_name).stdout.strip()
        results["docker_restart_count"] = int(restarts or 0)
        subprocess.run([*ctl, "group", "stop", "crash", "--wait", "--timeout", "60"], capture_output=True)
    finally:
        events.close()
        subprocess.run([*compose, "down", "-t", "1"], capture_output=True)
        daemon.terminate()
        daemon.wait()
        remove_labelled(f"{HOST_LABEL}={HOST}")
        remove_labelled(f"{HOST_LABEL}={DOCKER_HOST}")
        remove_network(f"orch-{HOST}")

    ours, theirs = results["ours_ms"], results["docker_ms"]
    results["ours"] = summary(ours)
    results["docker"] = summary(theirs)
    results["ratio"] = median(ours) / median(theirs) if ours and theirs else None
    path = save("crash.json", results)
    print(f"crash to running again, die -> start, {CRASH_AFTER} runs between crashes:")
    for side, gaps in (("orchestratord", ours), ("docker restart: always", theirs)):
        if gaps:
            print(f"  {side}: median {median(gaps):.0f} ms, p95 {pct(gaps, 95):.0f} ms, "
                  f"min {min(gaps):.0f}, max {max(gaps):.0f} ({len(gaps)} crashes)")
        else:
            print(f"  {side}: no crash measured")
    if results["ratio"] is not None:
        print(f"  ours / docker: {results['ratio']:.2f}x")
    print(f"written: {path}")
    return 0 if len(ours) >= CRASHES and len(theirs) >= CRASHES else 1


if __name__ == "__main__":
    sys.exit(main())
