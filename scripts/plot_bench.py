#!/usr/bin/env python3
"""Draws the benchmark figures from target/bench/*.json into docs/:

- docs/bench-start-vs-size.png: time to all healthy (solid) and to all
  running (dashed) against group size, for orchestratord, docker-compose
  and the raw Docker baseline (medians, bars from min to max);
- docs/bench-crash-latency.png: crash to running again, the distribution
  of Docker `die` to `start`, with the median, the p99 and the targets;
- docs/bench-autoscale-step.png (from autoscale.json): replicas wanted and
  healthy against time through a load step, constant load and idleness.

Run with matplotlib (scripts/bench.sh makes a venv for it under target/).
Usage: plot_bench.py [BENCH_DIR] [DOCS_DIR]
"""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIDES = [("ours", "orchestratord", "tab:blue"), ("compose", "docker-compose", "tab:orange"),
         ("raw", "raw Docker calls", "tab:green")]


def median(v):
    s = sorted(v)
    n = len(s)
    return (s[n // 2] + s[(n - 1) // 2]) / 2


def pct(v, p):
    s = sorted(v)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def start_vs_size(fleet, path):
    sizes = fleet["sizes"]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for side, label, colour in SIDES:
        for metric, style, suffix in (("healthy", "-", "all healthy"), ("running", "--", "all running")):
            vals = [[r[metric] for r in fleet["start"][str(n)][side]] for n in sizes]
            med = [median(v) for v in vals]
            lo = [m - min(v) for m, v in zip(med, vals)]
            hi = [max(v) - m for m, v in zip(med, vals)]
            ax.errorbar(sizes, med, yerr=[lo, hi], fmt="o" + style, color=colour, capsize=3,
                        alpha=1.0 if metric == "healthy" else 0.6, label=f"{label}: {suffix}")
    ax.set_xlabel("agents in the group (dependency depth 3)")
    ax.set_ylabel("seconds from the command (median, min–max)")
    ax.set_title(f"Group start, {fleet['rounds']} rounds per point, same run")
    ax.set_xticks(sizes)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def crash_latency(fleet, path):
    gaps = fleet.get("crash_ms") or []
    if not gaps:
        return False
    fig, ax = plt.subplots(figsize=(7, 3.8), dpi=110)
    ax.hist(gaps, bins=min(30, max(5, len(gaps) // 2)), color="tab:blue", alpha=0.8)
    for value, label, style in ((median(gaps), f"median {median(gaps):.0f} ms", "-"),
                                (pct(gaps, 99), f"p99 {pct(gaps, 99):.0f} ms", "--")):
        ax.axvline(value, color="black", linestyle=style, label=label)
    ax.axvline(500, color="tab:red", linestyle=":", label="target median 500 ms")
    ax.axvline(1500, color="tab:red", linestyle="-.", label="target p99 1.5 s")
    ax.set_xlabel("Docker die → start (ms), first backoff step (100 ms)")
    ax.set_ylabel("crashes")
    ax.set_title(f"Agent crash to running again, {len(gaps)} crashes")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def autoscale_step(step, path):
    series = step.get("series") or []
    if not series:
        return False
    t = [p[0] for p in series]
    fig, ax = plt.subplots(figsize=(7, 3.8), dpi=110)
    ax.step(t, [p[1] for p in series], where="post", label="replicas wanted", color="tab:blue")
    ax.step(t, [p[2] for p in series], where="post", label="replicas healthy", color="tab:green",
            linestyle="--")
    ax.axvline(0, color="black", linestyle=":", label=f"load step ({step['rps']:.0f} req/s)")
    ax.axvline(step["decision_s"], color="tab:red", linestyle="-.",
               label=f"scale-up decision ({step['decision_s']:.1f} s)")
    ax.set_xlabel("seconds from the load step")
    ax.set_ylabel("replicas")
    ax.set_title(f"Autoscaling on CPU ({step['target_pct']}% of {step['cpu_limit']} core), step then "
                 f"{step['constant_s'] / 60:.0f} min constant, then idle")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def main():
    bench = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "bench")
    docs = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "docs")
    fleet_path = os.path.join(bench, "fleet.json")
    if os.path.exists(fleet_path):
        with open(fleet_path) as f:
            fleet = json.load(f)
        start_vs_size(fleet, os.path.join(docs, "bench-start-vs-size.png"))
        print(f"wrote {os.path.join(docs, 'bench-start-vs-size.png')}")
        if crash_latency(fleet, os.path.join(docs, "bench-crash-latency.png")):
            print(f"wrote {os.path.join(docs, 'bench-crash-latency.png')}")
    auto_path = os.path.join(bench, "autoscale.json")
    if os.path.exists(auto_path):
        with open(auto_path) as f:
            step = json.load(f).get("step") or {}
        if autoscale_step(step, os.path.join(docs, "bench-autoscale-step.png")):
            print(f"wrote {os.path.join(docs, 'bench-autoscale-step.png')}")


if __name__ == "__main__":
    main()
