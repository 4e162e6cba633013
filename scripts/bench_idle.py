#!/usr/bin/env python3
"""Idle cost of the demo fleet's daemons, with everything on.

`scripts/demo.sh up` (in a directory of its own, DEMO_DIR) brings up both
demo hosts: mainpc (54 agents) and pc2 (23 agents), federated over ZeroMQ
with CURVE, each with its SLO engine scraping its agents' metrics and
health checks at the shipped intervals. Once every group is ready and the
start has settled, each daemon's CPU is measured as utime + stime from
/proc/PID/stat over BENCH_IDLE_SECS (default 60) while its /metrics is
scraped every 15 s, as a Prometheus would. CPU time is what the process
used, whatever else the machine runs, so other load does not inflate it.

Also per daemon: wakeups (the scheduler's timeslices, /proc/PID/task/*/schedstat,
and voluntary context switches), per thread; and with BENCH_IDLE_PERF=1 a
`perf record` profile over the same window (target/bench/idle-perf-HOST.txt);
BENCH_IDLE_PERF=dwarf records call graphs from the debug info (the release
build keeps no frame pointers) and adds, per thread, the daemon's own
innermost functions the samples fell under (idle-perf-HOST-callers.txt).

Then the same for the 200-agent host of scripts/bench_scale.py (one host,
no peer) with `/metrics` on and scraped every 15 s and an SLO on every
group (BENCH_IDLE_SKIP_200=1 leaves it out; BENCH_IDLE_ONLY_200=1 measures
it alone).

Writes target/bench/idle.json; prints a summary; brings the fleet down.
"""
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_lib import BIN, OUT, ROOT, cpu_ticks, rss_kib, save  # noqa: E402

SECS = float(os.environ.get("BENCH_IDLE_SECS", "60"))
SETTLE = float(os.environ.get("BENCH_IDLE_SETTLE", "90"))
PERF = os.environ.get("BENCH_IDLE_PERF") in ("1", "dwarf")
DWARF = os.environ.get("BENCH_IDLE_PERF") == "dwarf"
DEMO = os.path.join(ROOT, "target", "bench-demo")
HOSTS = {"mainpc": 9464, "pc2": 9465}


def threads(pid):
    """Per thread: name, timeslices run, voluntary and involuntary switches."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                slices = int(f.read().split()[2])
            vol = invol = 0
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        vol = int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches:"):
                        invol = int(line.split()[1])
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[tid] = {"name": name, "slices": slices, "vol": vol, "invol": invol,
                        "ticks": int(fields[11]) + int(fields[12])}
        except OSError:
            continue
    return out


def scrape_loop(port, stop, counts):
    while not stop.is_set():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                r.read()
            counts[port] = counts.get(port, 0) + 1
        except OSError:
            pass
        stop.wait(15)


class SkipFleet(Exception):
    """BENCH_IDLE_ONLY_200=1: the 200-agent host alone."""


def perf_record(pid, data):
    graph = ["--call-graph", "dwarf,16384"] if DWARF else ["-g"]
    return subprocess.Popen(
        ["perf", "record", "-F", "999", *graph, "-p", str(pid), "-o", data, "--", "sleep", str(SECS)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def perf_report(data, out):
    report = subprocess.run(
        ["perf", "report", "-i", data, "--no-children", "--stdio", "--percent-limit", "1",
         "--sort", "dso,symbol", "-g", "none"], capture_output=True, text=True).stdout
    with open(out, "w") as f:
        f.write(report)
    if DWARF:
        script = subprocess.run(["perf", "script", "-i", data], capture_output=True, text=True).stdout
        with open(out.replace(".txt", "-callers.txt"), "w") as f:
            f.write(callers(script))


def callers(script):
    """Per thread, the samples under each of the daemon's own innermost
    functions (the crates `orch_*`), from `perf script` call graphs."""
    import collections
    import re
    total = 0
    by_thread = collections.Counter()
    under = collections.Counter()
    for sample in script.split("\n\n"):
        lines = sample.strip().split("\n")
        if len(lines) < 2:
            continue
        total += 1
        thread = lines[0].split()[0]
        by_thread[thread] += 1
        frames = []
        for line in lines[1:]:
            parts = line.strip().split(" ", 1)
            if len(parts) == 2:
                frames.append(re.sub(r"\+0x[0-9a-f]+ \(.*\)$| \(.*\)$", "", parts[1]))
        ours = next((f for f in frames if f.startswith("orch_") or f.startswith("<orch_")), "(none of ours)")
        under[(thread, ours[:160])] += 1
    out = [f"{total} samples"]
    out += [f"{n:6} {n / total:6.1%}  {t}" for t, n in by_thread.most_common()]
    out.append("innermost function of the daemon's own crates on the stack, per thread:")
    out += [f"{n:6} {n / total:6.1%}  {t}: {f}" for (t, f), n in under.most_common(60)]
    return "\n".join(out) + "\n"


def main():
    env = dict(os.environ, DEMO_DIR=DEMO, DEMO_BIN=BIN)
    if os.path.exists(DEMO):
        subprocess.run([os.path.join(ROOT, "scripts", "demo.sh"), "down"], env=env,
                       capture_output=True)
        shutil.rmtree(DEMO)
    hz = os.sysconf("SC_CLK_TCK")
    results = {"seconds": SECS, "settle_s": SETTLE, "scrape_interval_s": 15, "hosts": {}}
    try:
        if os.environ.get("BENCH_IDLE_ONLY_200") == "1":
            raise SkipFleet
        subprocess.run([os.path.join(ROOT, "scripts", "demo.sh"), "up"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        pids = {}
        for host in HOSTS:
            with open(os.path.join(DEMO, host, "orchestratord.pid")) as f:
                pids[host] = int(f.read().strip())
        # Start periods and the first SLO windows pass; then it is idle.
        time.sleep(SETTLE)
        stop = threading.Event()
        counts = {}
        scrapers = [threading.Thread(target=scrape_loop, args=(port, stop, counts), daemon=True)
                    for port in HOSTS.values()]
        perfs = {}
        before = {h: (time.monotonic(), cpu_ticks(p), threads(p)) for h, p in pids.items()}
        for t in scrapers:
            t.start()
        if PERF:
            os.makedirs(OUT, exist_ok=True)
            for host, pid in pids.items():
                perfs[host] = perf_record(pid, os.path.join(OUT, f"idle-perf-{host}.data"))
        time.sleep(SECS)
        after = {h: (time.monotonic(), cpu_ticks(p), threads(p)) for h, p in pids.items()}
        stop.set()
        for host, pid in pids.items():
            (t0, c0, th0), (t1, c1, th1) = before[host], after[host]
            secs = t1 - t0
            per_thread = {}
            for tid, b in th1.items():
                a = th0.get(tid, {"slices": 0, "vol": 0, "invol": 0, "ticks": 0})
                name = b["name"]
                d = per_thread.setdefault(name, {"threads": 0, "wakeups_per_s": 0.0, "cpu_pct": 0.0})
                d["threads"] += 1
                d["wakeups_per_s"] += (b["slices"] - a["slices"]) / secs
                d["cpu_pct"] += (b["ticks"] - a["ticks"]) / hz / secs * 100
            results["hosts"][host] = {
                "cpu_pct": (c1 - c0) / hz / secs * 100,
                "cpu_s": (c1 - c0) / hz,
                "window_s": secs,
                "rss_kib": rss_kib(pid),
                "wakeups_per_s": sum(d["wakeups_per_s"] for d in per_thread.values()),
                "threads": per_thread,
                "scrapes": counts.get(HOSTS[host], 0),
            }
        for host, p in perfs.items():
            p.wait()
            data = os.path.join(OUT, f"idle-perf-{host}.data")
            perf_report(data, os.path.join(OUT, f"idle-perf-{host}.txt"))
    except SkipFleet:
        pass
    finally:
        subprocess.run([os.path.join(ROOT, "scripts", "demo.sh"), "down"], env=env,
                       stdout=subprocess.DEVNULL)

    if os.environ.get("BENCH_IDLE_SKIP_200") != "1":
        results["host200"] = host200(hz)
    path = save("idle.json", results)
    print(f"idle daemons of the demo fleet, {SECS:.0f} s, /metrics scraped every 15 s:")
    for host, r in results["hosts"].items():
        top = sorted(r["threads"].items(), key=lambda kv: -kv[1]["wakeups_per_s"])[:4]
        print(f"  {host}: {r['cpu_pct']:.2f}% of one core ({r['cpu_s']:.2f} s CPU), "
              f"{r['wakeups_per_s']:.0f} wakeups/s, rss {r['rss_kib'] / 1024:.1f} MiB; "
              + ", ".join(f"{n} {d['wakeups_per_s']:.0f}/s {d['cpu_pct']:.2f}%" for n, d in top))
    h = results.get("host200")
    if h:
        print(f"  {h['agents']}-agent host (no federation): {h['cpu_pct']:.2f}% of one core "
              f"({h['cpu_s']:.2f} s CPU), {h['wakeups_per_s']:.0f} wakeups/s, rss {h['rss_kib'] / 1024:.1f} MiB")
    print(f"written: {path}")
    return 0


def host200(hz):
    """The 200-agent host of scripts/bench_scale.py with `/metrics` on and
    scraped every 15 s and an SLO on every group (its agents scraped), health
    checks every 10 s; no peer (one host)."""
    import bench_scale
    import tempfile
    work = tempfile.mkdtemp(prefix="orch-idle200-")
    text, _ = bench_scale.config()
    slo = '    slo: {availability: "99.5%", latency_p99: 1s, error_rate: "0.5%"}'
    lines = []
    for line in text.splitlines():
        lines.append(line)
        if line.startswith("  g") and line.endswith(":"):
            lines.append(slo)
    lines.insert(2, 'metrics: {listen: "127.0.0.1:9466"}')
    cfg = os.path.join(work, "startup_config.yaml")
    with open(cfg, "w") as f:
        f.write("\n".join(lines) + "\n")
    sock = os.path.join(work, "orchestrator.sock")
    ctl = [os.path.join(BIN, "orchestratorctl"), "--socket", sock]
    env = dict(os.environ,
               ORCH_NVML_LIBRARY=os.path.join(BIN, "libnvml_sim.so"),
               NVML_SIM_CONFIG=os.path.join(ROOT, "config/sim/lab-2xa100.yaml"),
               NVML_SIM_STATE=os.path.join(work, "nvml-state.json"),
               ORCH_MPS_CONTROL=os.path.join(BIN, "nvidia-cuda-mps-control-sim"))
    proc = subprocess.Popen([os.path.join(BIN, "orchestratord"), "run", "--config", cfg, "--state-dir",
                             os.path.join(work, "state"), "--socket", sock],
                            env=env, stderr=open(os.path.join(work, "daemon.log"), "w"))
    try:
        for _ in range(100):
            if subprocess.run([*ctl, "status"], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        subprocess.run([*ctl, "group", "start", f"g{bench_scale.GROUPS - 1}", "--wait", "--timeout", "600"],
                       check=True, capture_output=True)
        agents = json.loads(subprocess.run([*ctl, "-o", "json", "status"], check=True,
                                           capture_output=True, text=True).stdout)["agents"]
        time.sleep(SETTLE)
        stop = threading.Event()
        counts = {}
        t = threading.Thread(target=scrape_loop, args=(9466, stop, counts), daemon=True)
        t0, c0, th0 = time.monotonic(), cpu_ticks(proc.pid), threads(proc.pid)
        t.start()
        perf = None
        if PERF:
            os.makedirs(OUT, exist_ok=True)
            data = os.path.join(OUT, "idle-perf-host200.data")
            perf = perf_record(proc.pid, data)
        time.sleep(SECS)
        t1, c1, th1 = time.monotonic(), cpu_ticks(proc.pid), threads(proc.pid)
        if perf:
            perf.wait()
            perf_report(data, os.path.join(OUT, "idle-perf-host200.txt"))
        stop.set()
        secs = t1 - t0
        wakeups = sum(b["slices"] - th0.get(tid, {"slices": 0})["slices"] for tid, b in th1.items()) / secs
        out = {"agents": agents.get("wanted", agents.get("running")), "healthy": agents.get("healthy"),
               "cpu_pct": (c1 - c0) / hz / secs * 100, "cpu_s": (c1 - c0) / hz, "window_s": secs,
               "wakeups_per_s": wakeups, "rss_kib": rss_kib(proc.pid), "scrapes": counts.get(9466, 0)}
        subprocess.run([*ctl, "group", "stop", "g0", "--with-dependents", "--wait", "--timeout", "600"],
                       capture_output=True)
        return out
    finally:
        proc.terminate()
        proc.wait()
        bench_scale.remove_labelled(f"{bench_scale.LABEL}={bench_scale.HOST}")
        bench_scale.remove_network(f"orch-{bench_scale.HOST}")


if __name__ == "__main__":
    sys.exit(main())
