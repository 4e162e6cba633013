//! The bus at idle: one process running one bus with two peers (the peers
//! run in the benchmark's process), heartbeating and nothing else; its CPU
//! time and resident memory over the window, from `/proc`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use orch_federation::PeerState;
use serde_json::{Value, json};

use crate::net::{Host, Tap};
use crate::procs::{self, Children, ProcSample};
use crate::stats::round3;

const PATIENCE: Duration = Duration::from_secs(30);
/// Time for the process to reach its steady state before sampling.
const WARMUP: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct Idle {
    pub seconds: f64,
    pub cpu_percent: f64,
    pub first: ProcSample,
    pub last: ProcSample,
    pub max_rss_kib: u64,
    /// State changes the idle bus reported after both peers were alive.
    pub changes_after_alive: usize,
}

/// Must run on the main thread (the bus process dies with the thread that
/// started it).
pub async fn idle(dir: &std::path::Path, window: Duration) -> Result<Idle> {
    let a = Host::new(dir, "idle-a")?;
    let b = Host::new(dir, "idle-b")?;
    let c = Host::new(dir, "idle-c")?;
    let base = Instant::now();
    let (_bus_b, in_b) = b.start(2, vec![a.as_peer()])?;
    let (_bus_c, in_c) = c.start(3, vec![a.as_peer()])?;
    let (mut tap_b, mut tap_c) = (Tap::spawn(in_b, base), Tap::spawn(in_c, base));
    let mut children = Children::default();
    let proc_a = procs::spawn_bus(
        &a.name,
        &a.secret_file,
        a.port,
        1,
        &[b.as_peer(), c.as_peer()],
    )?;
    let pid = proc_a.child.id();
    children.push(proc_a.child);
    let lines = proc_a.lines;
    let mut unseen = vec![
        format!("changed {} alive ", b.name),
        format!("changed {} alive ", c.name),
    ];
    let deadline = Instant::now() + PATIENCE;
    while !unseen.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = procs::wait_line(&lines, |l| l.starts_with("changed "), left)
            .context("the idle bus never saw both peers alive")?;
        unseen.retain(|want| !line.starts_with(want.as_str()));
    }
    tap_b
        .wait_for(&a.name, PeerState::Alive, PATIENCE)
        .await
        .context("b never saw the idle bus")?;
    tap_c
        .wait_for(&a.name, PeerState::Alive, PATIENCE)
        .await
        .context("c never saw the idle bus")?;
    tokio::time::sleep(WARMUP).await;

    let start = Instant::now();
    let first = procs::sample(pid)?;
    let mut max_rss_kib = first.rss_kib;
    let mut last = first;
    while start.elapsed() < window {
        tokio::time::sleep(Duration::from_secs(1)).await;
        last = procs::sample(pid).context("the idle bus process is gone")?;
        max_rss_kib = max_rss_kib.max(last.rss_kib);
    }
    let seconds = start.elapsed().as_secs_f64();
    let changes_after_alive = lines
        .try_iter()
        .filter(|l| l.starts_with("changed"))
        .count();
    if !matches!(children.get_mut(0).try_wait(), Ok(None)) {
        bail!("the idle bus process exited during the window");
    }
    children.kill_all();
    Ok(Idle {
        seconds,
        cpu_percent: 100.0 * (last.cpu_s - first.cpu_s) / seconds,
        first,
        last,
        max_rss_kib,
        changes_after_alive,
    })
}

pub fn idle_json(i: &Idle) -> Value {
    let sample = |s: &ProcSample| {
        json!({
            "cpu_s": round3(s.cpu_s),
            "rss_kib": s.rss_kib,
            "rss_anon_kib": s.rss_anon_kib,
            "rss_file_kib": s.rss_file_kib,
            "threads": s.threads,
        })
    };
    json!({
        "seconds": round3(i.seconds),
        "peers": 2,
        "cpu_percent_of_one_core": round3(i.cpu_percent),
        "first": sample(&i.first),
        "last": sample(&i.last),
        "max_rss_kib": i.max_rss_kib,
        "state_changes_after_alive": i.changes_after_alive,
    })
}
