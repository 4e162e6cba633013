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
`perf record` profile over the same window (target/bench/idle-perf-HOST.txt).

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
PERF = os.environ.get("BENCH_IDLE_PERF") == "1"
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


def main():
    env = dict(os.environ, DEMO_DIR=DEMO, DEMO_BIN=BIN)
    if os.path.exists(DEMO):
        subprocess.run([os.path.join(ROOT, "scripts", "demo.sh"), "down"], env=env,
                       capture_output=True)
        shutil.rmtree(DEMO)
    hz = os.sysconf("SC_CLK_TCK")
    results = {"seconds": SECS, "settle_s": SETTLE, "scrape_interval_s": 15, "hosts": {}}
    try:
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
            for host, pid in pids.items():
                data = os.path.join(OUT, f"idle-perf-{host}.data")
                perfs[host] = subprocess.Popen(
                    ["perf", "record", "-F", "999", "-g", "-p", str(pid), "-o", data, "--",
                     "sleep", str(SECS)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
            report = subprocess.run(
                ["perf", "report", "-i", data, "--no-children", "--stdio", "--percent-limit", "1",
                 "--sort", "dso,symbol", "-g", "none"], capture_output=True, text=True).stdout
            with open(os.path.join(OUT, f"idle-perf-{host}.txt"), "w") as f:
                f.write(report)
    finally:
        subprocess.run([os.path.join(ROOT, "scripts", "demo.sh"), "down"], env=env,
                       stdout=subprocess.DEVNULL)

    path = save("idle.json", results)
    print(f"idle daemons of the demo fleet, {SECS:.0f} s, /metrics scraped every 15 s:")
    for host, r in results["hosts"].items():
        top = sorted(r["threads"].items(), key=lambda kv: -kv[1]["wakeups_per_s"])[:4]
        print(f"  {host}: {r['cpu_pct']:.2f}% of one core ({r['cpu_s']:.2f} s CPU), "
              f"{r['wakeups_per_s']:.0f} wakeups/s, rss {r['rss_kib'] / 1024:.1f} MiB; "
              + ", ".join(f"{n} {d['wakeups_per_s']:.0f}/s {d['cpu_pct']:.2f}%" for n, d in top))
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
