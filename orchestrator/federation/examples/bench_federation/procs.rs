//! Child processes of the benchmark (CPU burners, a bus in a process of its
//! own) and what `/proc` says about processes and the machine.
//!
//! Every child is started from the main thread and asks the kernel to kill
//! it when that thread ends (`PR_SET_PDEATHSIG`), so nothing outlives the
//! benchmark even if it is killed; [`Children`] kills them on every normal
//! or failing return.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::sys::signal::Signal;
use nix::unistd::{Pid, SysconfVar, getppid, sysconf};
use orch_federation::{PeerConfig, PublicKey, Timing};

/// The environment variable that names the parent a child must die with.
const PARENT: &str = "FEDBENCH_PARENT";

/// Children that are killed and reaped when this is dropped.
#[derive(Debug, Default)]
pub struct Children(Vec<Child>);

impl Children {
    pub fn push(&mut self, child: Child) -> usize {
        self.0.push(child);
        self.0.len() - 1
    }

    pub fn get_mut(&mut self, i: usize) -> &mut Child {
        &mut self.0[i]
    }

    pub fn kill_all(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.0.clear();
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.kill_all();
    }
}

fn self_command(mode: &str) -> Result<Command> {
    let exe = std::env::current_exe().context("find the benchmark's own binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg(mode)
        .env(PARENT, std::process::id().to_string())
        .stdin(Stdio::null());
    Ok(cmd)
}

/// Called first in every child: die with the parent.
pub fn bind_to_parent() -> Result<()> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).context("PR_SET_PDEATHSIG")?;
    let expected: i32 = std::env::var(PARENT)
        .context("a child mode runs only under the benchmark")?
        .parse()
        .context("parent pid")?;
    // The parent may have gone before the request above took effect.
    if getppid() != Pid::from_raw(expected) {
        bail!("the benchmark that started this child is gone");
    }
    Ok(())
}

/// A process that keeps one core busy until killed.
pub fn spawn_burner() -> Result<Child> {
    self_command("burn")?
        .stdout(Stdio::null())
        .spawn()
        .context("start a CPU burner")
}

/// The `burn` mode: spin forever.
pub fn burn() -> ! {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    loop {
        for _ in 0..1_000_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        std::hint::black_box(x);
    }
}

/// A bus in a process of its own; it prints `changed PEER STATE INCARNATION`
/// for every state change it sees.
pub struct BusProcess {
    pub child: Child,
    pub lines: std::sync::mpsc::Receiver<String>,
}

pub fn spawn_bus(
    name: &str,
    secret_file: &Path,
    port: u16,
    incarnation: u64,
    peers: &[PeerConfig],
) -> Result<BusProcess> {
    let peers: Vec<String> = peers
        .iter()
        .map(|p| {
            let key = p
                .public_keys
                .first()
                .map(|k| k.to_z85())
                .unwrap_or_default();
            format!("{}={}={}", p.name, p.endpoint, key)
        })
        .collect();
    let mut child = self_command("peer")?
        .env("FEDBENCH_NAME", name)
        .env("FEDBENCH_KEY", secret_file)
        .env("FEDBENCH_LISTEN", format!("tcp://127.0.0.1:{port}"))
        .env("FEDBENCH_INCARNATION", incarnation.to_string())
        .env("FEDBENCH_TIMING", {
            let t = crate::net::timing();
            format!("{},{},{}", t.heartbeat_ms, t.suspect_after, t.down_after)
        })
        .env("FEDBENCH_PEERS", peers.join(","))
        .stdout(Stdio::piped())
        .spawn()
        .context("start a bus process")?;
    let stdout: ChildStdout = child.stdout.take().context("the child's stdout")?;
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok(BusProcess { child, lines })
}

/// What the `peer` mode reads from its environment.
pub struct PeerArgs {
    pub name: String,
    pub key: PathBuf,
    pub listen: String,
    pub incarnation: u64,
    pub peers: Vec<PeerConfig>,
    pub timing: Timing,
}

impl PeerArgs {
    pub fn from_env() -> Result<Self> {
        let var = |k: &str| std::env::var(k).with_context(|| format!("${k}"));
        let peers = var("FEDBENCH_PEERS")?
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|spec| {
                let mut parts = spec.splitn(3, '=');
                let (Some(name), Some(endpoint), Some(key)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    bail!("peer spec `{spec}` is not NAME=ENDPOINT=KEY");
                };
                Ok(PeerConfig::new(
                    name,
                    endpoint,
                    key.parse::<PublicKey>()
                        .map_err(|e| anyhow::anyhow!("{e}"))?,
                ))
            })
            .collect::<Result<_>>()?;
        let timing = var("FEDBENCH_TIMING")?;
        let t: Vec<u64> = timing
            .split(',')
            .map(str::parse)
            .collect::<Result<_, _>>()
            .with_context(|| format!("$FEDBENCH_TIMING `{timing}`"))?;
        let [heartbeat_ms, suspect_after, down_after] = t[..] else {
            bail!("$FEDBENCH_TIMING `{timing}` is not HEARTBEAT_MS,SUSPECT,DOWN");
        };
        Ok(PeerArgs {
            timing: Timing {
                heartbeat_ms,
                suspect_after: u32::try_from(suspect_after)?,
                down_after: u32::try_from(down_after)?,
            },
            name: var("FEDBENCH_NAME")?,
            key: var("FEDBENCH_KEY")?.into(),
            listen: var("FEDBENCH_LISTEN")?,
            incarnation: var("FEDBENCH_INCARNATION")?.parse()?,
            peers,
        })
    }
}

/// Resource use of one process at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcSample {
    /// User plus system CPU time since it started, in seconds.
    pub cpu_s: f64,
    pub rss_kib: u64,
    pub rss_anon_kib: u64,
    pub rss_file_kib: u64,
    pub threads: u64,
}

pub fn sample(pid: u32) -> Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_sample(&stat, &status, clock_ticks())
}

fn clock_ticks() -> f64 {
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as f64,
        // USER_HZ is 100 on every Linux architecture in use.
        _ => 100.0,
    }
}

/// `/proc/PID/stat` and `/proc/PID/status` to a sample.
pub fn parse_sample(stat: &str, status: &str, ticks_per_s: f64) -> Result<ProcSample> {
    // The command name (field 2) may hold spaces; fields are counted after
    // its closing parenthesis, where field 3 (state) comes first.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("/proc stat without a command name")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15, so 11 and 12 after the name.
    let ticks = |i: usize| -> Result<f64> {
        Ok(fields
            .get(i)
            .context("/proc stat too short")?
            .parse::<u64>()? as f64)
    };
    let cpu_s = (ticks(11)? + ticks(12)?) / ticks_per_s;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    Ok(ProcSample {
        cpu_s,
        rss_kib: kib("VmRSS:"),
        rss_anon_kib: kib("RssAnon:"),
        rss_file_kib: kib("RssFile:"),
        threads: kib("Threads:"),
    })
}

/// One thread's time so far, from `/proc/PID/task/TID/schedstat`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ThreadTime {
    /// On a CPU, in seconds.
    pub run_s: f64,
    /// Runnable but waiting for a CPU, in seconds.
    pub wait_s: f64,
}

/// `schedstat`: nanoseconds on a CPU, nanoseconds waiting on a run queue,
/// timeslices.
pub fn parse_schedstat(text: &str) -> Option<ThreadTime> {
    let mut it = text.split_whitespace().map(str::parse::<u64>);
    let run = it.next()?.ok()?;
    let wait = it.next()?.ok()?;
    Some(ThreadTime {
        run_s: run as f64 / 1e9,
        wait_s: wait as f64 / 1e9,
    })
}

/// Time of each living thread of `pid`, by thread name.
pub fn threads_time(pid: u32) -> Result<Vec<(String, ThreadTime)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = entry?.path();
        // A thread may end between the listing and the reads.
        let (Ok(name), Ok(sched)) = (
            std::fs::read_to_string(path.join("comm")),
            std::fs::read_to_string(path.join("schedstat")),
        ) else {
            continue;
        };
        if let Some(t) = parse_schedstat(&sched) {
            out.push((name.trim_end().to_owned(), t));
        }
    }
    Ok(out)
}

/// Time so far of the bus threads (`federation-*`), of ZeroMQ's I/O
/// threads (`ZMQbg/*`), and the CPU seconds of the whole process (threads
/// that ended included).
pub fn time_split() -> Result<(ThreadTime, ThreadTime, f64)> {
    let pid = std::process::id();
    let threads = threads_time(pid)?;
    let sum = |prefix: &str| {
        threads.iter().filter(|(n, _)| n.starts_with(prefix)).fold(
            ThreadTime::default(),
            |acc, (_, t)| ThreadTime {
                run_s: acc.run_s + t.run_s,
                wait_s: acc.wait_s + t.wait_s,
            },
        )
    };
    Ok((sum("federation-"), sum("ZMQbg/"), sample(pid)?.cpu_s))
}

/// Busy and total jiffies of the whole machine (`/proc/stat`, first line).
pub fn machine_cpu() -> Result<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat")?;
    parse_machine_cpu(&text)
}

pub fn parse_machine_cpu(text: &str) -> Result<(u64, u64)> {
    let line = text
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("/proc/stat without a cpu line")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let total: u64 = v.iter().take(8).sum();
    // idle and iowait are the 4th and 5th values.
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Ok((total - idle, total))
}

/// Fraction of the machine's CPU that was busy between two readings, in
/// percent of all cores.
pub fn busy_percent(before: (u64, u64), after: (u64, u64)) -> f64 {
    let busy = after.0.saturating_sub(before.0) as f64;
    let total = after.1.saturating_sub(before.1) as f64;
    if total == 0.0 {
        0.0
    } else {
        100.0 * busy / total
    }
}

/// Waits for a line from a bus process that satisfies `want`.
pub fn wait_line(
    lines: &std::sync::mpsc::Receiver<String>,
    want: impl Fn(&str) -> bool,
    patience: Duration,
) -> Option<String> {
    let deadline = std::time::Instant::now() + patience;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = lines.recv_timeout(left).ok()?;
        if want(&line) {
            return Some(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proc_stat_line_gives_cpu_seconds_even_with_spaces_in_the_name() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt
        // majflt cmajflt utime stime ...
        let stat = "4242 (bench fed) S 1 4242 4242 0 -1 4194560 500 0 0 0 150 50 0 0 20 0 3 0";
        let status = "Name:\tbench\nThreads:\t3\nVmRSS:\t   6144 kB\nRssAnon:\t    2048 kB\nRssFile:\t    4096 kB\n";
        let s = parse_sample(stat, status, 100.0).expect("parse");
        assert_eq!(
            s,
            ProcSample {
                cpu_s: 2.0,
                rss_kib: 6144,
                rss_anon_kib: 2048,
                rss_file_kib: 4096,
                threads: 3,
            }
        );
    }

    #[test]
    fn schedstat_gives_run_and_wait_seconds() {
        assert_eq!(
            parse_schedstat("1500000000 250000000 42\n"),
            Some(ThreadTime {
                run_s: 1.5,
                wait_s: 0.25
            })
        );
        assert_eq!(parse_schedstat("garbage"), None);
    }

    #[test]
    fn machine_cpu_counts_idle_and_iowait_as_not_busy() {
        let text = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4 5 6 7 8 9 0\n";
        assert_eq!(parse_machine_cpu(text).expect("parse"), (150, 1000));
        assert_eq!(busy_percent((150, 1000), (300, 1200)), 75.0);
        assert_eq!(busy_percent((1, 1), (1, 1)), 0.0);
    }
}
