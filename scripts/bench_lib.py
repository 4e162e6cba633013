"""Shared pieces of the fleet and scale benchmarks (scripts/bench_*.py)."""
import json
import os
import subprocess
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# BENCH_BIN: other binaries than target/release (to compare two builds).
BIN = os.environ.get("BENCH_BIN", os.path.join(ROOT, "target", "release"))
OUT = os.environ.get("BENCH_OUT", os.path.join(ROOT, "target", "bench"))


def run(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw)


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def median(values):
    s = sorted(values)
    n = len(s)
    return (s[n // 2] + s[(n - 1) // 2]) / 2 if n else float("nan")


def proc_status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def rss_kib(pid):
    return proc_status(pid, "VmRSS")


def cpu_ticks(pid):
    """User + system CPU time of a process, in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def cpu_share(pid, seconds):
    """The process's CPU use over `seconds`, as a fraction of one core."""
    hz = os.sysconf("SC_CLK_TCK")
    t0, c0 = time.monotonic(), cpu_ticks(pid)
    time.sleep(seconds)
    t1, c1 = time.monotonic(), cpu_ticks(pid)
    return (c1 - c0) / hz / (t1 - t0)


def containers(label):
    return run("docker", "ps", "-aq", "--filter", f"label={label}").stdout.split()


def remove_labelled(label):
    ids = containers(label)
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)


def remove_network(name):
    """Removes a network, retrying while Docker still detaches removed containers."""
    for _ in range(10):
        if subprocess.run(["docker", "network", "rm", name], capture_output=True).returncode == 0:
            return
        if subprocess.run(["docker", "network", "inspect", name], capture_output=True).returncode != 0:
            return
        time.sleep(0.5)


class StartEvents:
    """Docker's `start` events (its own clock), collected in the background."""

    def __init__(self):
        self.events = []
        self.lock = threading.Lock()
        self.proc = subprocess.Popen(
            ["docker", "events", "--filter", "type=container", "--filter", "event=start",
             "--filter", "event=die", "--format", "{{json .}}"],
            stdout=subprocess.PIPE, text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        time.sleep(0.3)

    def _read(self):
        for line in self.proc.stdout:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                self.events.append(e)

    def starts_since(self, t0, label, value):
        """Start times (Unix seconds) after `t0` of containers labelled `label=value`."""
        with self.lock:
            evs = list(self.events)
        return sorted(
            e["timeNano"] / 1e9 for e in evs
            if e.get("Action") == "start" and e["timeNano"] / 1e9 >= t0
            and e.get("Actor", {}).get("Attributes", {}).get(label) == value
        )

    def all_running(self, t0, label, value, want, timeout=120):
        """Seconds from `t0` to the `want`-th start, waiting for it if needed."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            s = self.starts_since(t0, label, value)
            if len(s) >= want:
                return s[want - 1] - t0
            time.sleep(0.05)
        raise RuntimeError(f"only {len(self.starts_since(t0, label, value))} of {want} started ({label}={value})")

    def close(self):
        self.proc.kill()
        self.proc.wait()


def stop_daemon(ctl_args, group, proc, label, network):
    """Stops a benchmark's group (and waits for it), then its daemon, then
    removes whatever containers and network it left."""
    try:
        subprocess.run([*ctl_args, "group", "stop", group, "--wait", "--timeout", "120"],
                       capture_output=True)
    finally:
        proc.terminate()
        proc.wait()
        remove_labelled(label)
        remove_network(network)


def cpu_model():
    """The CPU's model name, from /proc/cpuinfo ("" when it gives none)."""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return ""


def save(name, data):
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, name)
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
    return path
