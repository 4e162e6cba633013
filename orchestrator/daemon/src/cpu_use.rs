//! Every replica's CPU use, from the kernel's cgroup counters: cheap
//! enough to read for every container each round, where Docker's stats
//! API (`crate::cpu_stats`, for the `cpu` autoscale signal) is not.
//!
//! A small task of its own, at the GPU process interval (5 s by default),
//! lists the container cgroups of Docker's two drivers under the cgroup
//! root (`--cgroup-root`, `/sys/fs/cgroup`), on a blocking thread:
//!
//! - cgroup v2: `system.slice/docker-<id>.scope/cpu.stat` (systemd driver)
//!   and `docker/<id>/cpu.stat` (cgroupfs driver), its `usage_usec`;
//! - cgroup v1: the same directories under `cpuacct/` (or `cpu,cpuacct/`),
//!   their `cpuacct.usage` (nanoseconds).
//!
//! A directory is a container's when `orch_docker::cgroup::parse` (the
//! parser of `/proc/<pid>/cgroup` paths) names exactly one container on
//! its path. At most [`MAX_CONTAINERS`] are read per round, each file
//! with a size cap ([`MAX_FILE`]). A container under another cgroup
//! parent (`--cgroup-parent`) is not found: it shows no CPU figure.
//!
//! The owner keeps the last two rounds in a [`CpuUse`] (pure): a replica's
//! figure is its container's CPU time over the wall time between them, as a
//! share of one core (100 = one core busy) and, where the agent sets
//! `resources.cpus`, as a share of that. A container seen once, or whose
//! counter went back (a new container under the same id), has no figure.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::event::{self, CpuUseRead};

/// The most containers read in one round.
pub const MAX_CONTAINERS: usize = 1024;

/// The most of a counter file that is read: `cpu.stat` is a few hundred
/// bytes, `cpuacct.usage` one number.
pub const MAX_FILE: u64 = 4096;

/// The most directory entries looked at per layout (a `system.slice`
/// holds every service of the host besides the containers).
const MAX_ENTRIES: usize = 8192;

/// Where each layout keeps its containers, relative to the cgroup root,
/// and the counter file in a container's directory.
const LAYOUTS: [(&str, Counter); 6] = [
    ("system.slice", Counter::V2),
    ("docker", Counter::V2),
    ("cpuacct/system.slice", Counter::V1),
    ("cpuacct/docker", Counter::V1),
    ("cpu,cpuacct/system.slice", Counter::V1),
    ("cpu,cpuacct/docker", Counter::V1),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counter {
    /// `cpu.stat`, `usage_usec`.
    V2,
    /// `cpuacct.usage`, nanoseconds.
    V1,
}

impl Counter {
    fn file(self) -> &'static str {
        match self {
            Counter::V2 => "cpu.stat",
            Counter::V1 => "cpuacct.usage",
        }
    }

    fn parse(self, text: &str) -> Option<u64> {
        match self {
            Counter::V2 => parse_cpu_stat(text),
            Counter::V1 => parse_cpuacct_usage(text),
        }
    }
}

/// A cgroup v2 `cpu.stat`'s `usage_usec`, in nanoseconds.
pub fn parse_cpu_stat(text: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == "usage_usec")
            .then(|| v.trim().parse::<u64>().ok())
            .flatten()
            .and_then(|us| us.checked_mul(1000))
    })
}

/// A cgroup v1 `cpuacct.usage` (nanoseconds).
pub fn parse_cpuacct_usage(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

fn read_capped(path: &Path) -> Option<String> {
    let mut bytes = Vec::new();
    File::open(path)
        .ok()?
        .take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .ok()?;
    if bytes.len() as u64 > MAX_FILE {
        return None;
    }
    String::from_utf8(bytes).ok()
}

/// The container a cgroup directory (relative to the root) belongs to,
/// when it is one container's own (not nested in another's).
fn container_of(rel: &str) -> Option<String> {
    let c = orch_docker::cgroup::parse(&format!("0::/{rel}\n"))?;
    c.outer.is_empty().then_some(c.id)
}

/// Reads the CPU time of every container cgroup under `root` (at most
/// `limit`), by container id, in nanoseconds.
pub fn read(root: &Path, limit: usize) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (dir, counter) in LAYOUTS {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries.take(MAX_ENTRIES).flatten() {
            if out.len() >= limit {
                return out;
            }
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(id) = container_of(&format!("{dir}/{name}")) else {
                continue;
            };
            if out.contains_key(&id) {
                // v1's `cpuacct` and `cpu,cpuacct` are the same hierarchy.
                continue;
            }
            if let Some(ns) =
                read_capped(&entry.path().join(counter.file())).and_then(|t| counter.parse(&t))
            {
                out.insert(id, ns);
            }
        }
    }
    out
}

/// Reads a round every `interval` until shutdown, off the owner.
pub async fn poll(
    root: PathBuf,
    interval: Duration,
    news: event::Sender<CpuUseRead>,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let r = root.clone();
        let Ok(used) = tokio::task::spawn_blocking(move || read(&r, MAX_CONTAINERS)).await else {
            continue;
        };
        let at = tokio::time::Instant::now();
        if news.send(CpuUseRead { at, used }).await.is_err() {
            return;
        }
    }
}

/// One container's last reading and the figure made of the two before.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuPoint {
    /// CPU time used since the container started, nanoseconds.
    pub used_ns: u64,
    /// When it was read (milliseconds on the owner's clock).
    pub at_ms: u64,
    /// Share of one core between the last two readings (100 = one core).
    pub percent: Option<f64>,
}

/// The last readings of every container (pure).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CpuUse {
    points: BTreeMap<String, CpuPoint>,
}

impl CpuUse {
    /// A round read at `at_ms`: a container not in it is gone.
    pub fn update(&mut self, at_ms: u64, used: BTreeMap<String, u64>) {
        let mut next = BTreeMap::new();
        for (id, used_ns) in used {
            let percent = match self.points.get(&id) {
                Some(p) if used_ns >= p.used_ns && at_ms > p.at_ms => {
                    Some((used_ns - p.used_ns) as f64 / ((at_ms - p.at_ms) as f64 * 1e6) * 100.0)
                }
                _ => None,
            };
            next.insert(
                id,
                CpuPoint {
                    used_ns,
                    at_ms,
                    percent,
                },
            );
        }
        self.points = next;
    }

    /// A container's last reading.
    pub fn get(&self, container: &str) -> Option<&CpuPoint> {
        self.points.get(container)
    }
}

/// `percent` of one core as a share of `cpus` cores (`None` without a
/// positive limit).
pub fn of_limit(percent: f64, cpus: Option<f64>) -> Option<f64> {
    cpus.filter(|c| *c > 0.0).map(|c| percent / c)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "ae2b1bcb4551b04e809eafe7449a3ac7ce2c8ca80fa7209a473a5ee65c23eddb";
    const B: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn fixture() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cgroup")
    }

    #[test]
    fn counters_of_both_versions_are_parsed() {
        let stat = "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n";
        assert_eq!(parse_cpu_stat(stat), Some(2_500_000_000));
        assert_eq!(parse_cpu_stat("user_usec 5\n"), None);
        assert_eq!(parse_cpu_stat("usage_usec x\n"), None);
        assert_eq!(parse_cpu_stat("usage_usec 99999999999999999\n"), None);
        assert_eq!(parse_cpuacct_usage("123456789\n"), Some(123_456_789));
        assert_eq!(parse_cpuacct_usage("-1\n"), None);
    }

    #[test]
    fn container_directories_of_both_drivers_are_recognised() {
        assert_eq!(
            container_of(&format!("system.slice/docker-{A}.scope")),
            Some(A.into())
        );
        assert_eq!(container_of(&format!("docker/{A}")), Some(A.into()));
        assert_eq!(container_of(&format!("cpuacct/docker/{A}")), Some(A.into()));
        assert_eq!(container_of("system.slice/docker.service"), None);
        assert_eq!(container_of("docker/abc"), None);
        assert_eq!(container_of(&format!("docker/{A}/docker/{B}")), None);
    }

    #[test]
    fn v2_trees_of_both_drivers_are_read() {
        let got = read(&fixture().join("v2-systemd"), MAX_CONTAINERS);
        assert_eq!(got, BTreeMap::from([(A.to_string(), 2_500_000_000)]));
        let got = read(&fixture().join("v2-cgroupfs"), MAX_CONTAINERS);
        assert_eq!(got, BTreeMap::from([(B.to_string(), 7_000_000)]));
    }

    #[test]
    fn v1_trees_of_both_drivers_are_read() {
        let got = read(&fixture().join("v1-systemd"), MAX_CONTAINERS);
        assert_eq!(got, BTreeMap::from([(A.to_string(), 123_456_789)]));
        let got = read(&fixture().join("v1-cgroupfs"), MAX_CONTAINERS);
        assert_eq!(
            got,
            BTreeMap::from([(A.to_string(), 1_000), (B.to_string(), 2_000)])
        );
    }

    #[test]
    fn at_most_the_limit_is_read_and_oversized_files_are_refused() {
        assert_eq!(read(&fixture().join("v1-cgroupfs"), 1).len(), 1);
        let dir = std::env::temp_dir().join(format!("cpu-use-big-{}", std::process::id()));
        let c = dir.join(format!("docker/{A}"));
        std::fs::create_dir_all(&c).unwrap();
        let mut big = "usage_usec 5\n".to_string();
        big.push_str(&"x".repeat(MAX_FILE as usize));
        std::fs::write(c.join("cpu.stat"), &big).unwrap();
        assert!(read(&dir, MAX_CONTAINERS).is_empty());
        std::fs::write(c.join("cpu.stat"), "usage_usec 5\n").unwrap();
        assert_eq!(read(&dir, MAX_CONTAINERS).len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn round(id: &str, ns: u64) -> BTreeMap<String, u64> {
        BTreeMap::from([(id.to_string(), ns)])
    }

    #[test]
    fn two_readings_make_a_share_of_one_core() {
        let mut u = CpuUse::default();
        u.update(1_000, round(A, 10_000_000_000));
        assert_eq!(u.get(A).unwrap().percent, None);
        // 2.5 s of CPU in 5 s of wall time: half a core.
        u.update(6_000, round(A, 12_500_000_000));
        assert_eq!(u.get(A).unwrap().percent, Some(50.0));
        // Two cores busy.
        u.update(11_000, round(A, 22_500_000_000));
        assert_eq!(u.get(A).unwrap().percent, Some(200.0));
        assert_eq!(of_limit(200.0, Some(4.0)), Some(50.0));
        assert_eq!(of_limit(200.0, None), None);
        assert_eq!(of_limit(200.0, Some(0.0)), None);
    }

    #[test]
    fn a_counter_that_goes_back_or_a_gone_container_gives_no_figure() {
        let mut u = CpuUse::default();
        u.update(1_000, round(A, 10_000_000_000));
        u.update(6_000, round(A, 1_000_000));
        assert_eq!(u.get(A).unwrap().percent, None);
        u.update(11_000, round(B, 5));
        assert!(u.get(A).is_none());
        // Back after a round away: a first reading again.
        u.update(16_000, round(A, 2_000_000));
        assert_eq!(u.get(A).unwrap().percent, None);
        // No time passed: no figure.
        u.update(16_000, round(A, 3_000_000));
        assert_eq!(u.get(A).unwrap().percent, None);
    }
}
