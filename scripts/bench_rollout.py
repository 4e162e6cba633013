#!/usr/bin/env python3
"""Rollouts under a steady load, on the real engine with the reference agent.

One group `web` (`slo: {error_rate: 0.5%, availability: 99%, window: 30d}`,
`min_healthy: 2s`) with an agent `Pool` of 2 replicas, each publishing
port 8080 on its own host port (a range of exactly 2 ports, so a replica
is replaced in place: its old container stops before the new one starts).
Each version carries a distinct `VERSION` env. A load generator on
loopback sends `GET /work` at BENCH_ROLLOUT_RPS (default 20 requests per
second in total), round-robin over the two host ports, and records for
each request its time, port, replica and outcome (200, an HTTP error, or
a connection failure). The version that answered is the one of the
container that last started under that replica's name before the request
was sent (Docker's `start` events, each container's `VERSION` read by
`docker inspect` as it starts).

Phases:
- bad: `apply --wait` of a version with `AGENT_WORK_ERROR_RATE=0.1`
  (`rollout: {watch: 30s}`). Measured: apply to `rollout-failed`, the
  failed replica healthy (its `agent-healthy` event) to `rollout-failed`,
  apply and first step to the rollback's `rollout-completed`, the exit
  code, the requests the bad version answered and their errors, the share
  of the 30-day error budget those errors used (errors / (the measured
  rate x 30 days x 0.005)), and the daemon's own `slo` figures before and
  after.
- good: BENCH_ROLLOUTS (default 20) `apply --wait` in a row of a good
  version (VERSION alternating a/b, `rollout: {watch: 10s}`). Measured:
  exit codes (false rollbacks or pauses), each rollout's duration, the
  requests that failed during each.
- missing: `apply` of a version whose image is not on the host (refused
  without `--force`), then `apply --force --wait`. Measured: the failing
  replica and signal (events), the exit code, the containers' ids before
  and after, the requests lost meanwhile.

Writes target/bench/rollout.json; prints a summary. Used by scripts/bench.sh.
Knobs: BENCH_ROLLOUT_RPS, BENCH_ROLLOUTS, BENCH_ROLLOUT_SKIP (comma list
of bad, good, missing).
"""
import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

# `orchestratorctl apply --wait`: the rollout was rolled back (docs/cli.md).
ROLLED_BACK = 9

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_lib import BIN, cpu_model, median, remove_labelled, save, stop_daemon  # noqa: E402

RPS = float(os.environ.get("BENCH_ROLLOUT_RPS", "20"))
ROLLOUTS = int(os.environ.get("BENCH_ROLLOUTS", "20"))
SKIP = set(filter(None, os.environ.get("BENCH_ROLLOUT_SKIP", "").split(",")))
HOST = "benchroll"
IMAGE = "orchestrator-agent:latest"
MISSING_IMAGE = "orchestrator-agent:not-built-here"
LABEL = "io.orchestrator.host"
ERROR_OBJECTIVE = 0.005  # the group's error_rate objective (0.5%)
WINDOW_S = 30 * 86400  # its window (30d)
BAD_ERROR_RATE = 0.1
MIN_HEALTHY = "2s"
# The most requests kept (20 req/s for about 40 minutes): a bound on memory.
MAX_REQUESTS = 50_000


def free_port_pair():
    """Two consecutive free TCP ports on all addresses."""
    for start in range(18400, 19400, 2):
        socks = []
        try:
            for p in (start, start + 1):
                s = socket.socket()
                s.bind(("0.0.0.0", p))
                socks.append(s)
            return start
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no two consecutive free ports")


def config(port, version, watch, extra_env="", image=IMAGE):
    return "\n".join([
        "version: 1",
        f"host: {{name: {HOST}}}",
        "defaults:",
        f"  image: {IMAGE}",
        "  stop_timeout: 2s",
        "  health: {http: {port: 8080}, interval: 1s, timeout: 1s, retries: 3, start_period: 10s}",
        "groups:",
        "  web:",
        "    slo: {error_rate: 0.5%, availability: 99%, window: 30d}",
        f"    min_healthy: {MIN_HEALTHY}",
        f"    rollout: {{watch: {watch}}}",
        "    agents:",
        "      Pool:",
        f"        image: {image}",
        "        replicas: 2",
        f"        ports: [\"{port}-{port + 1}:8080\"]",
        f"        env: {{VERSION: \"{version}\"{extra_env}}}",
        "",
    ])


class Daemon:
    def __init__(self, text):
        self.work = tempfile.mkdtemp(prefix=f"orch-{HOST}-")
        self.cfg = os.path.join(self.work, "startup_config.yaml")
        with open(self.cfg, "w") as f:
            f.write(text)
        sock = os.path.join(self.work, "orchestrator.sock")
        self.ctl_args = [os.path.join(BIN, "orchestratorctl"), "--socket", sock]
        self.log = os.path.join(self.work, "daemon.log")
        self.proc = subprocess.Popen(
            [os.path.join(BIN, "orchestratord"), "run", "--config", self.cfg,
             "--state-dir", os.path.join(self.work, "state"), "--socket", sock,
             "--metrics-listen", "off"],
            stderr=open(self.log, "w"))
        for _ in range(100):
            if subprocess.run([*self.ctl_args, "status"], capture_output=True).returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError("the daemon did not answer")

    def ctl(self, *args):
        return subprocess.run([*self.ctl_args, *args], check=True, capture_output=True,
                              text=True).stdout

    def json(self, *args):
        return json.loads(self.ctl("-o", "json", *args))

    def events(self, since_ms=0):
        evs = [json.loads(line) for line in self.ctl("-o", "json", "events").splitlines() if line]
        return [e for e in evs if e["time_ms"] >= since_ms]

    def apply(self, name, text, *args, timeout="600"):
        path = os.path.join(self.work, name)
        with open(path, "w") as f:
            f.write(text)
        t0 = time.time()
        out = subprocess.run([*self.ctl_args, "apply", *args, "--timeout", timeout, path],
                             capture_output=True, text=True)
        return {"t0": t0, "t1": time.time(), "code": out.returncode,
                "said": (out.stdout + out.stderr).strip()[-2000:]}

    def close(self):
        stop_daemon(self.ctl_args, "web", self.proc, f"{LABEL}={HOST}", f"orch-{HOST}")


class Versions:
    """Which container (and VERSION) served each replica name, over time,
    from Docker's `start` events (its own clock)."""

    def __init__(self):
        self.starts = {}  # name -> [(unix s, id, version)]
        self.lock = threading.Lock()
        self.proc = subprocess.Popen(
            ["docker", "events", "--filter", "type=container", "--filter", "event=start",
             "--filter", f"label={LABEL}={HOST}", "--format", "{{json .}}"],
            stdout=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()
        time.sleep(0.3)

    def _read(self):
        for line in self.proc.stdout:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            cid = e.get("id", "")
            name = e.get("Actor", {}).get("Attributes", {}).get("name", "")
            env = subprocess.run(["docker", "inspect", "--format", "{{json .Config.Env}}", cid],
                                 capture_output=True, text=True).stdout.strip()
            version = "?"
            try:
                for kv in json.loads(env or "[]"):
                    if kv.startswith("VERSION="):
                        version = kv.split("=", 1)[1]
            except ValueError:
                pass
            with self.lock:
                self.starts.setdefault(name, []).append((e["timeNano"] / 1e9, cid, version))

    def at(self, name, t):
        """(container id, version) serving `name` at Unix time `t`."""
        with self.lock:
            s = [x for x in self.starts.get(name, []) if x[0] <= t]
        return (s[-1][1], s[-1][2]) if s else ("", "?")

    def close(self):
        self.proc.kill()
        self.proc.wait()


class Load:
    """`rps` requests per second of `GET /work`, round-robin over `ports`."""

    def __init__(self, ports, rps, workers=8):
        self.ports = ports
        self.interval = workers / rps
        self.stop = threading.Event()
        self.records = []  # (sent unix s, took s, port, outcome, http code, replica)
        self.lock = threading.Lock()
        self.rr = itertools.count()
        self.t0 = time.time()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(workers)]
        for t in self.threads:
            t.start()

    def _one(self, port):
        sent = time.time()
        code, replica, outcome = 0, None, "conn"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.settimeout(10)
                s.sendall(b"GET /work HTTP/1.0\r\nHost: agent\r\n\r\n")
                data = b""
                while len(data) < 65536:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            parts = head.split(b" ")
            if len(parts) >= 2 and parts[1].isdigit():
                code = int(parts[1])
                outcome = "ok" if code == 200 else "http"
                try:
                    replica = json.loads(body).get("replica")
                except ValueError:
                    pass
        except OSError:
            pass
        with self.lock:
            if len(self.records) < MAX_REQUESTS:
                self.records.append((sent, time.time() - sent, port, outcome, code, replica))

    def _run(self, i):
        next_at = time.monotonic() + i * self.interval / len(self.threads)
        while not self.stop.is_set():
            now = time.monotonic()
            if now < next_at:
                time.sleep(next_at - now)
            next_at += self.interval
            self._one(self.ports[next(self.rr) % len(self.ports)])

    def between(self, t0, t1):
        with self.lock:
            return [r for r in self.records if t0 <= r[0] < t1]

    def close(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=20)


def tally(records):
    out = {"requests": len(records), "ok": 0, "http": 0, "conn": 0}
    for r in records:
        out[r[3]] += 1
    return out


def by_version(records, versions, port0):
    """Request counts per version that answered (or would have: connection
    failures are put on the container last started for that port)."""
    out = {}
    for r in records:
        _, version = versions.at(f"{HOST}-Pool-{r[2] - port0}", r[0])
        t = out.setdefault(version, {"requests": 0, "ok": 0, "http": 0, "conn": 0})
        t["requests"] += 1
        t[r[3]] += 1
    return out


def first(events, kind, pred=lambda e: True):
    return next((e for e in events if e["kind"] == kind and pred(e)), None)


def wait_for(pred, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.5)
    raise RuntimeError(f"timed out waiting for {what}")


def pool_ids():
    out = subprocess.run(["docker", "ps", "-a", "--filter", f"label={LABEL}={HOST}",
                          "--filter", "label=io.orchestrator.agent=Pool",
                          "--format", "{{.Names}} {{.ID}} {{.State}}"],
                         capture_output=True, text=True).stdout.split("\n")
    return sorted(line for line in out if line)


def slo_figures(d):
    try:
        return d.json("slo")
    except (subprocess.CalledProcessError, ValueError) as e:
        return {"error": str(e)}


def bad_phase(d, load, versions, port0):
    res = {"watch": "30s", "error_rate": BAD_ERROR_RATE}
    res["slo_before"] = slo_figures(d)
    r = d.apply("bad.yaml", config(port0, "bad", "30s", f", AGENT_WORK_ERROR_RATE: \"{BAD_ERROR_RATE}\""),
                "--wait")
    res.update(code=r["code"], said=r["said"], apply_s=r["t1"] - r["t0"])
    t_apply_ms = r["t0"] * 1000
    # The rollback's replacements keep going a moment after --wait returns
    # on rare paths; give the events time to land.
    time.sleep(2)
    evs = d.events(t_apply_ms)
    res["events"] = [e for e in evs if e["kind"].startswith("rollout-")
                     or (e["kind"] in ("agent-healthy", "agent-started", "agent-failed")
                         and "Pool" in json.dumps(e))]
    started = first(evs, "rollout-started", lambda e: e["rollout"]["type"] == "apply")
    failed = first(evs, "rollout-failed")
    done = first(evs, "rollout-completed", lambda e: e["rollout"]["type"] == "rollback")
    if started:
        res["generation"] = started["generation"]
    if failed:
        res["failure"] = failed["failure"]
        res["apply_to_failed_s"] = (failed["time_ms"] - t_apply_ms) / 1000
        rep = failed["failure"].get("replica", {})
        healthy = [e for e in evs if e["kind"] == "agent-healthy" and e["time_ms"] <= failed["time_ms"]
                   and e.get("replica", {}).get("agent") == rep.get("agent")
                   and e.get("replica", {}).get("index", e.get("replica", {}).get("replica"))
                   == rep.get("index", rep.get("replica"))]
        if healthy:
            res["healthy_to_failed_s"] = (failed["time_ms"] - healthy[-1]["time_ms"]) / 1000
    if done:
        res["apply_to_rolled_back_s"] = (done["time_ms"] - t_apply_ms) / 1000
        if started:
            res["first_step_to_rolled_back_s"] = (done["time_ms"] - started["time_ms"]) / 1000
    # Wait for every replica back at the good version, then count.
    wait_for(lambda: all(versions.at(f"{HOST}-Pool-{i}", time.time())[1] == "a" for i in range(2)),
             120, "both replicas back at version a")
    t_end = time.time() + 2
    time.sleep(2.5)
    reqs = load.between(r["t0"], t_end)
    res["during"] = tally(reqs)
    res["by_version"] = by_version(reqs, versions, port0)
    bad = res["by_version"].get("bad", {"requests": 0, "ok": 0, "http": 0, "conn": 0})
    res["bad_requests"] = bad["requests"]
    res["bad_errors"] = bad["http"]
    # The error budget the bad version's errors used: the 30-day window's
    # allowance at the measured rate.
    all_reqs = load.between(load.t0, time.time())
    rate = len(all_reqs) / max(1e-9, time.time() - load.t0)
    res["measured_rps"] = rate
    budget = rate * WINDOW_S * ERROR_OBJECTIVE
    res["budget_requests"] = budget
    res["budget_used_share"] = bad["http"] / budget if budget else None
    res["budget_used_share_all_failed"] = (res["during"]["http"] + res["during"]["conn"]) / budget if budget else None
    # The SLO engine scrapes every 10 s: wait for it to see the last errors.
    time.sleep(12)
    res["slo_after"] = slo_figures(d)
    return res


def good_phase(d, load, versions, port0):
    res = {"watch": "10s", "min_healthy": MIN_HEALTHY, "rollouts": []}
    for i in range(ROLLOUTS):
        version = "b" if i % 2 == 0 else "a"
        r = d.apply(f"good-{i}.yaml", config(port0, version, "10s"), "--wait")
        time.sleep(1)
        evs = d.events(r["t0"] * 1000)
        reqs = load.between(r["t0"], r["t1"] + 1)
        row = {"version": version, "code": r["code"], "seconds": r["t1"] - r["t0"],
               "failed_events": sum(1 for e in evs if e["kind"] == "rollout-failed"),
               "paused_events": sum(1 for e in evs if e["kind"] == "rollout-paused"),
               **tally(reqs)}
        if r["code"] != 0:
            row["said"] = r["said"]
        res["rollouts"].append(row)
        print(f"  good {i + 1}/{ROLLOUTS}: exit {r['code']}, {row['seconds']:.1f} s, "
              f"{row['http']} HTTP errors, {row['conn']} connection failures of {row['requests']}",
              flush=True)
    rows = res["rollouts"]
    res["false_rollbacks"] = sum(1 for x in rows if x["code"] == ROLLED_BACK)
    res["false_pauses"] = sum(1 for x in rows if x["code"] not in (0, ROLLED_BACK))
    res["median_s"] = median([x["seconds"] for x in rows]) if rows else None
    res["max_s"] = max(x["seconds"] for x in rows) if rows else None
    res["requests"] = sum(x["requests"] for x in rows)
    res["http"] = sum(x["http"] for x in rows)
    res["conn"] = sum(x["conn"] for x in rows)
    return res


def missing_phase(d, load, versions, port0, current):
    res = {"image": MISSING_IMAGE}
    text = config(port0, "missing", "10s", image=MISSING_IMAGE)
    refused = d.apply("missing.yaml", text)
    res["refused_code"] = refused["code"]
    res["refused_said"] = refused["said"]
    before = pool_ids()
    r = d.apply("missing.yaml", text, "--force", "--wait")
    res.update(code=r["code"], said=r["said"], apply_s=r["t1"] - r["t0"])
    time.sleep(2)
    evs = d.events(r["t0"] * 1000)
    res["events"] = [e for e in evs if e["kind"].startswith("rollout-")
                     or (e["kind"] == "agent-failed" and "Pool" in json.dumps(e))]
    failed = first(evs, "rollout-failed")
    if failed:
        res["failure"] = failed["failure"]
        res["apply_to_failed_s"] = (failed["time_ms"] - r["t0"] * 1000) / 1000
    done = first(evs, "rollout-completed", lambda e: e["rollout"]["type"] == "rollback")
    if done:
        res["apply_to_rolled_back_s"] = (done["time_ms"] - r["t0"] * 1000) / 1000
    res["steps_done"] = sum(1 for e in evs if e["kind"] == "rollout-step-done")
    # Watch a few seconds more: the old containers stay.
    time.sleep(5)
    after = pool_ids()
    res["ids_before"], res["ids_after"] = before, after
    res["same_containers"] = before == after
    reqs = load.between(r["t0"], time.time())
    res["during"] = tally(reqs)
    res["by_version"] = by_version(reqs, versions, port0)
    res["versions_now"] = [versions.at(f"{HOST}-Pool-{i}", time.time())[1] for i in range(2)]
    res["expected_version"] = current
    return res


def main():
    port0 = free_port_pair()
    load_before = open("/proc/loadavg").read().split()[:3]
    remove_labelled(f"{LABEL}={HOST}")
    versions = Versions()
    d = Daemon(config(port0, "a", "30s"))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    knobs = " ".join(f"{k}={os.environ[k]}" for k in ("BENCH_ROLLOUT_RPS", "BENCH_ROLLOUTS",
                                                      "BENCH_ROLLOUT_SKIP") if os.environ.get(k))
    model = cpu_model()
    results = {"rps": RPS, "ports": [port0, port0 + 1], "load_before": " ".join(load_before),
               "min_healthy": MIN_HEALTHY, "health_interval": "1s", "commit": commit,
               "date": time.strftime("%Y-%m-%d", time.gmtime()),
               "command": (knobs + " " if knobs else "") + "python3 scripts/bench_rollout.py",
               "build": os.path.basename(os.path.normpath(BIN)), "cpus": os.cpu_count(),
               "cpu_model": model}
    load = None
    try:
        d.ctl("group", "start", "web", "--wait", "--timeout", "120")
        load = Load([port0, port0 + 1], RPS)
        # A steady state first: the SLO engine's first scrapes, some traffic.
        time.sleep(20)
        results["warmup"] = tally(load.between(load.t0, time.time()))
        current = "a"
        if "bad" not in SKIP:
            print("bad version (AGENT_WORK_ERROR_RATE=0.1, watch 30s):", flush=True)
            results["bad"] = bad_phase(d, load, versions, port0)
            b = results["bad"]
            print(f"  exit {b['code']}; apply -> rollout-failed {b.get('apply_to_failed_s', float('nan')):.1f} s, "
                  f"healthy -> failed {b.get('healthy_to_failed_s', float('nan')):.1f} s, "
                  f"apply -> rolled back {b.get('apply_to_rolled_back_s', float('nan')):.1f} s; "
                  f"bad version answered {b['bad_requests']} ({b['bad_errors']} errors), "
                  f"{b['budget_used_share'] * 100:.3f}% of the 30-day budget", flush=True)
        if "good" not in SKIP:
            print(f"{ROLLOUTS} good rollouts (watch 10s):", flush=True)
            results["good"] = good_phase(d, load, versions, port0)
            g = results["good"]
            current = g["rollouts"][-1]["version"] if g["rollouts"] else current
            print(f"  false rollbacks {g['false_rollbacks']}, false pauses {g['false_pauses']}; "
                  f"median {g['median_s']:.1f} s, max {g['max_s']:.1f} s; failed requests "
                  f"{g['http']} HTTP + {g['conn']} connection of {g['requests']}", flush=True)
        if "missing" not in SKIP:
            print("missing image:", flush=True)
            results["missing"] = missing_phase(d, load, versions, port0, current)
            m = results["missing"]
            print(f"  refused without --force: exit {m['refused_code']}; --force: exit {m['code']}, "
                  f"same containers {m['same_containers']}, requests lost "
                  f"{m['during']['http'] + m['during']['conn']} of {m['during']['requests']}", flush=True)
        load.close()
        results["total"] = tally(load.records)
        results["measured_rps"] = len(load.records) / max(1e-9, time.time() - load.t0)
    finally:
        if load:
            load.close()
        versions.close()
        results["daemon_log_tail"] = open(d.log).read()[-3000:]
        d.close()
    results["load_after"] = " ".join(open("/proc/loadavg").read().split()[:3])
    path = save("rollout.json", results)
    print(f"written: {path}")
    ok = (results.get("bad", {}).get("code") == ROLLED_BACK
          and results.get("good", {}).get("false_rollbacks", 0) == 0
          and results.get("good", {}).get("false_pauses", 0) == 0
          and results.get("missing", {}).get("code") == ROLLED_BACK)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
