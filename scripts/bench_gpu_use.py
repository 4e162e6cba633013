#!/usr/bin/env python3
"""GPU use per agent: accuracy, latency and cost of the process sampling.

The daemon reads each GPU's processes from NVML every
`--gpu-process-interval` seconds (default 5), maps each pid to its
container through `/proc/PID/cgroup` and shows each agent's GPU memory.
Here NVML is the simulator (`libnvml_sim.so` through the daemon's real
NVML path); a process is a real container's pid registered with
`nvml-simctl process add`.

1. Accuracy and latency: 4 agents sharing one simulated RTX 4090 over MPS
   (config/mainpc/gpus.sim.yaml, its memory baseline pinned to 0 so that
   every used byte is a listed process's). Each agent's container pid is
   registered with its own size, plus one pid of no container (this
   script's). Checked: each agent's figure is its size, the unowned list
   is that pid, and the agents' sum is the device's used memory (its
   telemetry) less the unowned processes', exactly. Latency: from
   `process add` to the agent's figure in `agents -o json` (polled every
   50 ms), and from `process remove` to its disappearance, BENCH_GPU_REPS
   times (default 10) each, each change made at a phase of the sampling
   interval, the phases spread evenly over it; target: within one
   sampling interval.
2. Cost: 200 CPU agents (10 groups of 20, HTTP health checks every 10 s)
   on config/sim/lab-mixed.yaml (4 GPUs: two A100s and an H100 with MIG
   on the first and the third, a GeForce RTX 4090), each container's pid a
   process on one GPU (50 per GPU; on a MIG GPU inside a full-size GPU
   instance made beforehand, which the daemon uses and leaves alone). The
   same running containers under two daemons in turn, each started afresh
   (SIGTERM stops one, the agents keep running, the next adopts them) and
   left BENCH_GPU_SETTLE seconds (default 60) before its CPU (utime +
   stime from /proc) is read over BENCH_GPU_CPU_SECS (default 60): the
   default interval (5 s), then sampling effectively off
   (`--gpu-process-interval 3600`, the flag's maximum: its one sample is
   at start, before the window). Target: sampling under 0.2% of a core.
   Per GPU, the time of one sample (list + utilisation + cgroup reads)
   from the daemon's debug line `sampled a GPU's processes ... elapsed_us`.

Every container and network it made is removed (by label) on every exit
path. Writes target/bench/gpu_use.json (or under BENCH_OUT); prints a
summary. Knobs: BENCH_GPU_SKIP_COST=1 (part 1 only), BENCH_GPU_REPS,
BENCH_GPU_SETTLE, BENCH_GPU_CPU_SECS, BENCH_GPU_GROUPS and
BENCH_GPU_PER_GROUP (10 and 20: a smaller host for a trial).
"""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_lib import BIN, ROOT, cpu_ticks, median, remove_labelled, remove_network, run, save  # noqa: E402

LABEL = "io.orchestrator.host"
ACC_HOST = "benchgpuacc"
COST_HOST = "benchgpucost"
REPS = int(os.environ.get("BENCH_GPU_REPS", "10"))
SETTLE = float(os.environ.get("BENCH_GPU_SETTLE", "60"))
CPU_SECS = float(os.environ.get("BENCH_GPU_CPU_SECS", "60"))
GROUPS = int(os.environ.get("BENCH_GPU_GROUPS", "10"))
PER_GROUP = int(os.environ.get("BENCH_GPU_PER_GROUP", "20"))
DEFAULT_INTERVAL_S = 5
OFF_INTERVAL_S = 3600
POLL_S = 0.05
MIB = 1 << 20
# A full-size GPU instance on each MIG GPU of lab-mixed.yaml.
MIG_PROFILES = {0: "7g.40gb", 2: "7g.80gb"}
CARDS = {0: "A100-SXM4-40GB, MIG", 1: "A100-SXM4-40GB", 2: "H100 80GB HBM3, MIG", 3: "RTX 4090"}
LOG_FILTER = "info,orch_daemon::gpu=debug"
SAMPLED = re.compile(r"sampled a GPU's processes.*?gpu=(\d+).*?processes=(\d+).*?elapsed_us=(\d+)")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def sim_env(work, sim_host):
    return dict(os.environ,
                RUST_LOG=LOG_FILTER,
                ORCH_NVML_LIBRARY=os.path.join(BIN, "libnvml_sim.so"),
                NVML_SIM_CONFIG=os.path.join(ROOT, sim_host),
                NVML_SIM_STATE=os.path.join(work, "nvml-state.json"),
                ORCH_MPS_CONTROL=os.path.join(BIN, "nvidia-cuda-mps-control-sim"))


def simctl(env, *args):
    return subprocess.run([os.path.join(BIN, "nvml-simctl"), *args], env=env, check=True,
                          capture_output=True, text=True).stdout


class Daemon:
    def __init__(self, work, cfg, env):
        self.work, self.cfg, self.env = work, cfg, env
        self.sock = os.path.join(work, "orchestrator.sock")
        self.ctl = [os.path.join(BIN, "orchestratorctl"), "--socket", self.sock]
        self.proc = None
        self.log = None

    def start(self, log_name, *flags):
        if os.path.exists(self.sock):
            os.unlink(self.sock)
        self.log = os.path.join(self.work, log_name)
        self.proc = subprocess.Popen(
            [os.path.join(BIN, "orchestratord"), "run", "--config", self.cfg, "--state-dir",
             os.path.join(self.work, "state"), "--socket", self.sock, "--metrics-listen", "off", *flags],
            env=self.env, stderr=open(self.log, "a"))
        for _ in range(400):
            if subprocess.run([*self.ctl, "status"], capture_output=True).returncode == 0:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"the daemon did not answer (log: {self.log})")

    def stop(self):
        """SIGTERM: the daemon leaves, its agents keep running."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait()

    def json(self, *args):
        return json.loads(run(*self.ctl, "-o", "json", *args).stdout)


def container_pids(ids):
    out = run("docker", "inspect", "-f", "{{.State.Pid}}", *ids).stdout.split()
    return [int(p) for p in out]


def cleanup(host):
    remove_labelled(f"{LABEL}={host}")
    # Docker may take a while to detach 200 removed containers from it.
    net = f"orch-{host}"
    for _ in range(12):
        remove_network(net)
        if subprocess.run(["docker", "network", "inspect", net], capture_output=True).returncode != 0:
            return
    print(f"  the network {net} is still there", file=sys.stderr)


def accuracy_config():
    agents = "\n".join(
        f"      Agent{i}: {{gpu: {{slice: mps, memory: 4g, compute: 25%}}}}" for i in range(4))
    return f"""version: 1
host: {{name: {ACC_HOST}}}
defaults:
  image: orchestrator-agent:latest
  health: {{http: {{port: 8080}}, interval: 1s, timeout: 2s, retries: 3, start_period: 5s}}
  stop_timeout: 2s
gpus:
  - select: {{index: 0}}
    sharing: mps
groups:
  vision:
    agents:
{agents}
"""


def agent_used(d):
    """Each agent's `gpu_use.memory_used_bytes` (absent: no figure)."""
    return {a["agent"]: (a.get("gpu_use") or {}).get("memory_used_bytes") for a in d.json("agents")}


def wait_for(d, agent, want, timeout, t0=None):
    """Seconds from `t0` (default: now) until `agent`'s figure is `want`
    (None: gone), polled every 50 ms."""
    t0 = time.monotonic() if t0 is None else t0
    while True:
        if agent_used(d).get(agent) == want:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"{agent}: no figure {want} after {timeout} s")
        time.sleep(POLL_S)


def part1():
    work = tempfile.mkdtemp(prefix="orch-gpuacc-")
    cfg = os.path.join(work, "startup_config.yaml")
    with open(cfg, "w") as f:
        f.write(accuracy_config())
    env = sim_env(work, "config/mainpc/gpus.sim.yaml")
    d = Daemon(work, cfg, env)
    res = {"sim_host": "config/mainpc/gpus.sim.yaml", "agents": 4, "interval_s": DEFAULT_INTERVAL_S,
           "poll_s": POLL_S, "repetitions": REPS}
    try:
        # Memory no listed process accounts for: none.
        simctl(env, "set", "--gpu", "0", "--memory-used", "0")
        d.start("daemon-accuracy.log")
        run(*d.ctl, "group", "start", "vision", "--wait", "--timeout", "300")
        agents = sorted(d.json("agents"), key=lambda a: a["agent"])
        names = [a["agent"] for a in agents]
        pids = dict(zip(names, container_pids([a["container"] for a in agents])))
        sizes = {n: (256 * (i + 2) + 16 * i) * MIB for i, n in enumerate(names)}
        stray, stray_size = os.getpid(), 300 * MIB
        for n in names:
            simctl(env, "process", "add", "--gpu", "0", "--pid", str(pids[n]), "--used",
                   f"{sizes[n] // MIB}m", "--util", "10")
        simctl(env, "process", "add", "--gpu", "0", "--pid", str(stray), "--used", f"{stray_size // MIB}m")

        # Accuracy: once every figure and the device's telemetry show them.
        want_total = sum(sizes.values()) + stray_size
        deadline = time.monotonic() + 60
        while True:
            used = agent_used(d)
            gpu = d.json("gpu")["gpus"][0]
            device = (gpu.get("telemetry") or {}).get("memory_used_bytes")
            if all(used.get(n) == sizes[n] for n in names) and device == want_total:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"figures not shown: agents {used}, device {device}, want {sizes}")
            time.sleep(0.5)
        unowned = gpu.get("unowned", [])
        unowned_sum = sum(u.get("memory_used_bytes") or 0 for u in unowned)
        agents_sum = sum(used[n] for n in names)
        usage_sum = sum(u["memory_used_bytes"] for u in gpu.get("usage", []))
        res["accuracy"] = {
            "registered_bytes": {n: sizes[n] for n in names},
            "shown_bytes": {n: used[n] for n in names},
            "unowned": [{"pid": u["pid"], "bytes": u.get("memory_used_bytes"), "container": u.get("container")}
                        for u in unowned],
            "unowned_pid_is_ours": [u["pid"] for u in unowned] == [stray],
            "device_used_bytes": device,
            "unowned_bytes": unowned_sum,
            "agents_sum_bytes": agents_sum,
            "gpu_usage_sum_bytes": usage_sum,
            "exact": agents_sum == device - unowned_sum and usage_sum == agents_sum
            and all(used[n] == sizes[n] for n in names),
        }
        a = res["accuracy"]
        print(f"  accuracy: agents sum {agents_sum / MIB:.0f} MiB = device {device / MIB:.0f} MiB "
              f"- unowned {unowned_sum / MIB:.0f} MiB: {'exact' if a['exact'] else 'NOT EQUAL'}", flush=True)

        # Latency: add, shown; remove, gone; one agent at a time, the others
        # stay. A figure changes just after a sample; each change is made a
        # phase later, the phases spread evenly over the interval (as the
        # arrival of a real process is uniform over it).
        phases = [(k + 0.5) / REPS * DEFAULT_INTERVAL_S for k in range(REPS)]
        appear, disappear = [], []
        for rep in range(REPS):
            n = names[rep % len(names)]
            simctl(env, "process", "remove", "--pid", str(pids[n]))
            wait_for(d, n, None, 60)
            time.sleep(phases[rep])
            t0 = time.monotonic()
            simctl(env, "process", "add", "--gpu", "0", "--pid", str(pids[n]), "--used",
                   f"{sizes[n] // MIB}m", "--util", "10")
            appear.append(wait_for(d, n, sizes[n], 60, t0))
            time.sleep(phases[(rep * 3 + 1) % REPS])
            t0 = time.monotonic()
            simctl(env, "process", "remove", "--pid", str(pids[n]))
            disappear.append(wait_for(d, n, None, 60, t0))
            simctl(env, "process", "add", "--gpu", "0", "--pid", str(pids[n]), "--used",
                   f"{sizes[n] // MIB}m", "--util", "10")
        res["latency"] = {"appear_s": appear, "disappear_s": disappear,
                          "appear_median_s": median(appear), "appear_max_s": max(appear),
                          "disappear_median_s": median(disappear), "disappear_max_s": max(disappear)}
        lat = res["latency"]
        print(f"  latency ({REPS} each): shown median {lat['appear_median_s']:.2f} s max {lat['appear_max_s']:.2f} s; "
              f"gone median {lat['disappear_median_s']:.2f} s max {lat['disappear_max_s']:.2f} s "
              f"(target: within {DEFAULT_INTERVAL_S} s)", flush=True)
        for n in names:
            simctl(env, "process", "remove", "--pid", str(pids[n]))
        simctl(env, "process", "remove", "--pid", str(stray))
        # The last MPS agent's stop ends the GPU's MPS control daemon.
        run(*d.ctl, "group", "stop", "vision", "--wait", "--timeout", "120")
    finally:
        d.stop()
        cleanup(ACC_HOST)
    return res


def cost_config():
    lines = [
        "version: 1",
        f"host: {{name: {COST_HOST}}}",
        "defaults:",
        "  image: orchestrator-agent:latest",
        "  health: {http: {port: 8080}, interval: 10s, timeout: 2s, retries: 3, start_period: 60s}",
        "  stop_timeout: 2s",
        "groups:",
    ]
    for g in range(GROUPS):
        lines.append(f"  g{g}:")
        if g == GROUPS - 1 and GROUPS > 1:
            lines.append(f"    depends_on: [{', '.join(f'g{i}' for i in range(GROUPS - 1))}]")
        lines.append("    agents:")
        for i in range(PER_GROUP):
            lines.append(f"      G{g}N{i}: {{}}")
    return "\n".join(lines) + "\n"


def samples(log):
    """Per GPU: the `elapsed_us` of each sample in a daemon log, and the process counts seen."""
    out = {}
    with open(log, errors="replace") as f:
        for line in f:
            m = SAMPLED.search(ANSI.sub("", line))
            if m:
                gpu, procs, us = (int(x) for x in m.groups())
                out.setdefault(gpu, {"elapsed_us": [], "processes": []})
                out[gpu]["elapsed_us"].append(us)
                out[gpu]["processes"].append(procs)
    return out


def measure(d, name, *flags):
    """A fresh daemon adopting the running agents; its CPU after it settled."""
    hz = os.sysconf("SC_CLK_TCK")
    d.start(f"daemon-{name}.log", *flags)
    time.sleep(SETTLE)
    status = d.json("status")["agents"]
    t0, c0 = time.monotonic(), cpu_ticks(d.proc.pid)
    time.sleep(CPU_SECS)
    t1, c1 = time.monotonic(), cpu_ticks(d.proc.pid)
    d.stop()
    return {"flags": list(flags), "running": status["running"], "healthy": status["healthy"],
            "cpu_pct": (c1 - c0) / hz / (t1 - t0) * 100, "cpu_s": (c1 - c0) / hz, "window_s": t1 - t0,
            "log": d.log}


def part2():
    work = tempfile.mkdtemp(prefix="orch-gpucost-")
    cfg = os.path.join(work, "startup_config.yaml")
    with open(cfg, "w") as f:
        f.write(cost_config())
    env = sim_env(work, "config/sim/lab-mixed.yaml")
    d = Daemon(work, cfg, env)
    agents = GROUPS * PER_GROUP
    res = {"sim_host": "config/sim/lab-mixed.yaml", "agents": agents, "groups": GROUPS,
           "per_group": PER_GROUP, "gpus": 4,
           "health_interval_s": 10, "settle_s": SETTLE, "cpu_sample_s": CPU_SECS,
           "default_interval_s": DEFAULT_INTERVAL_S, "off_interval_s": OFF_INTERVAL_S}
    try:
        gis = {gpu: json.loads(simctl(env, "create-gi", "--gpu", str(gpu), "--profile", prof))["gpu_instance"]
               for gpu, prof in MIG_PROFILES.items()}
        d.start("daemon-start.log")
        t0 = time.monotonic()
        run(*d.ctl, "group", "start", f"g{GROUPS - 1}", "--wait", "--timeout", "900")
        res["start_healthy_s"] = time.monotonic() - t0
        listed = sorted(d.json("agents"), key=lambda a: a["agent"])
        pids = container_pids([a["container"] for a in listed])
        per_gpu = {}
        for i, pid in enumerate(pids):
            gpu = i % 4
            extra = ["--gi", str(gis[gpu])] if gpu in gis else []
            simctl(env, "process", "add", "--gpu", str(gpu), *extra, "--pid", str(pid),
                   "--used", f"{32 + i % 7}m", "--util", "1")
            per_gpu[gpu] = per_gpu.get(gpu, 0) + 1
        res["processes_per_gpu"] = per_gpu
        print(f"  {agents} agents healthy in {res['start_healthy_s']:.1f} s, processes per GPU {per_gpu}",
              flush=True)
        d.stop()

        on = measure(d, "sampling", "--gpu-process-interval", str(DEFAULT_INTERVAL_S))
        off = measure(d, "off", "--gpu-process-interval", str(OFF_INTERVAL_S))
        per = samples(on["log"])
        res["sampling_on"], res["sampling_off"] = on, off
        res["added_pct"] = on["cpu_pct"] - off["cpu_pct"]
        res["per_gpu_sample"] = {
            str(g): {"card": CARDS.get(g, "?"), "samples": len(v["elapsed_us"]), "processes_max": max(v["processes"]),
                     "median_us": median(v["elapsed_us"]), "max_us": max(v["elapsed_us"])}
            for g, v in sorted(per.items())}
        print(f"  daemon CPU over {CPU_SECS:.0f} s: sampling every {DEFAULT_INTERVAL_S} s "
              f"{on['cpu_pct']:.2f}% ({on['cpu_s']:.2f} s), effectively off {off['cpu_pct']:.2f}% "
              f"({off['cpu_s']:.2f} s): {res['added_pct']:+.2f}% of a core (target under 0.2%)", flush=True)
        if not per:
            print(f"  no `sampled a GPU's processes` line in {on['log']} (binaries without it?)", flush=True)
        for g, v in res["per_gpu_sample"].items():
            print(f"  GPU {g}: {v['processes_max']} processes, one sample median {v['median_us'] / 1000:.2f} ms, "
                  f"max {v['max_us'] / 1000:.2f} ms ({v['samples']} samples)", flush=True)
    finally:
        d.stop()
        cleanup(COST_HOST)
    return res


def commit():
    def git(*a):
        return subprocess.run(["git", "-C", ROOT, *a], capture_output=True, text=True).stdout.strip()
    return git("rev-parse", "--short", "HEAD") + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def main():
    # A SIGTERM unwinds like Ctrl-C, through every cleanup.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    res = {"date": time.strftime("%Y-%m-%d", time.gmtime()),
           "load_at_start": open("/proc/loadavg").read().split()[:3],
           "command": "python3 scripts/bench_gpu_use.py",
           "commit": commit(), "binaries": BIN}
    print("GPU use per agent, 4 agents on one simulated RTX 4090 (MPS):", flush=True)
    res["accuracy_latency"] = part1()
    if os.environ.get("BENCH_GPU_SKIP_COST") != "1":
        print("GPU process sampling, 200 agents on 4 simulated GPUs (lab-mixed):", flush=True)
        res["cost"] = part2()
    print(f"written: {save('gpu_use.json', res)}")
    return 0 if res["accuracy_latency"]["accuracy"]["exact"] else 1


if __name__ == "__main__":
    sys.exit(main())
