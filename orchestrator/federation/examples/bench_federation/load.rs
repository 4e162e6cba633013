//! Snapshot streams at a fixed rate, and what they measure: publish to
//! receipt on the peer (latency), and the detector's verdicts while the
//! stream flows and both cores are busy (false verdicts).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use orch_federation::{Bus, PeerState, ZmqBus};
use serde_json::{Value, json};

use crate::body::{self, Bodies, Kind};
use crate::net::{Host, Tap, oldest_heartbeat};
use crate::procs::{self, Children};
use crate::stats::{json_of, round3};

const PATIENCE: Duration = Duration::from_secs(30);

/// What a paced publisher did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Published {
    pub messages: u64,
    pub refused: u64,
    /// How far the publisher fell behind its schedule at worst, in ms.
    pub worst_lag_ms: f64,
    pub seconds: f64,
}

/// Publishes snapshots on a thread of its own at `rate` per second, on an
/// absolute schedule (a late message does not push the later ones back),
/// until `stop` is set or `duration` has passed.
pub fn spawn_publisher(
    bus: Arc<ZmqBus>,
    bodies: Bodies,
    rate: u32,
    duration: Duration,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Published> {
    std::thread::spawn(move || {
        let period = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
        let start = Instant::now();
        let mut p = Published::default();
        let mut seq: u64 = 0;
        while !stop.load(Ordering::Relaxed) {
            let due = start + period.mul_f64(seq as f64);
            if due - start >= duration {
                break;
            }
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            } else {
                p.worst_lag_ms = p.worst_lag_ms.max((now - due).as_secs_f64() * 1000.0);
            }
            seq += 1;
            match bus.publish_snapshot(bodies.next(seq), None) {
                Ok(()) => p.messages += 1,
                Err(_) => p.refused += 1,
            }
        }
        p.seconds = start.elapsed().as_secs_f64();
        p
    })
}

/// One latency scenario's result.
#[derive(Debug)]
pub struct Latency {
    pub kind: Kind,
    pub body_bytes: usize,
    pub rate: u32,
    pub published: Published,
    pub received: u64,
    pub latencies_ms: Vec<f64>,
    /// CPU time per message of both bus threads, of ZeroMQ's I/O threads
    /// (CURVE, TCP), and of the whole process (with the publisher's
    /// building of bodies and the receiver's reading of them).
    pub cpu_ms_per_message: [f64; 3],
    /// Of the time the bus threads were runnable, the share they spent
    /// waiting for a CPU (the machine's other load) rather than running.
    pub bus_wait_share: f64,
    /// Messages a's socket took for b (heartbeats included).
    pub out_of_a: u64,
    /// Messages b decoded from a (heartbeats included).
    pub into_b: u64,
    /// What b refused from a, by kind.
    pub dropped_by_b: BTreeMap<String, u64>,
}

/// `a` publishes to `b` at `rate` for `duration`; latency taken on `b`.
pub async fn latency(
    dir: &std::path::Path,
    kind: Kind,
    rate: u32,
    duration: Duration,
) -> Result<Latency> {
    let a = Host::new(dir, &format!("lat-{}-a", kind.label()))?;
    let b = Host::new(dir, &format!("lat-{}-b", kind.label()))?;
    let base = Instant::now();
    let (bus_a, in_a) = a.start(1, vec![b.as_peer()])?;
    let (bus_b, in_b) = b.start(2, vec![a.as_peer()])?;
    let (_tap_a, mut tap_b) = (Tap::spawn(in_a, base), Tap::spawn(in_b, base));
    tap_b
        .wait_for(&a.name, PeerState::Alive, PATIENCE)
        .await
        .context("b never saw a alive")?;
    // b must hold a live subscription at a before the stream starts, or the
    // first messages go nowhere: a has seen b alive, and one more heartbeat
    // interval has passed for b's own heartbeat to reach a's listener.
    wait_subscribed(&bus_a, &b.name).await?;
    tokio::time::sleep(Duration::from_millis(2 * crate::net::timing().heartbeat_ms)).await;
    let bus_a = Arc::new(bus_a);
    let stop = Arc::new(AtomicBool::new(false));
    let before = procs::time_split()?;
    let publisher = spawn_publisher(
        Arc::clone(&bus_a),
        Bodies::new(kind, &a.name, base),
        rate,
        duration,
        stop,
    );
    let published = tokio::task::spawn_blocking(move || publisher.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the publisher panicked"))?;
    // Let the tail arrive.
    let deadline = Instant::now() + Duration::from_secs(5);
    while tap_b.counts.snapshots.load(Ordering::Relaxed) < published.messages
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let received = tap_b.counts.snapshots.load(Ordering::Relaxed);
    let after = procs::time_split()?;
    let latencies_ms = tap_b.counts.take_latencies();
    // Where messages went missing, if any did: refused by a's socket (its
    // queue to b full), or dropped by b (its inbox full).
    let out_of_a = bus_a
        .peers()
        .iter()
        .find(|p| p.name == b.name)
        .map_or(0, |p| p.messages_out);
    let b_view = bus_b.peers().into_iter().find(|p| p.name == a.name);
    let into_b = b_view.as_ref().map_or(0, |p| p.messages_in);
    let dropped_by_b: BTreeMap<String, u64> = b_view
        .map(|p| p.dropped.iter().map(|(k, n)| (k.to_string(), *n)).collect())
        .unwrap_or_default();
    drop(bus_b);
    let per_message = |s: f64| 1000.0 * s / published.messages.max(1) as f64;
    let bus_run = after.0.run_s - before.0.run_s;
    let bus_wait = after.0.wait_s - before.0.wait_s;
    Ok(Latency {
        kind,
        body_bytes: body::size_of(kind),
        rate,
        published,
        received,
        latencies_ms,
        cpu_ms_per_message: [
            per_message(bus_run),
            per_message(after.1.run_s - before.1.run_s),
            per_message(after.2 - before.2),
        ],
        bus_wait_share: if bus_run + bus_wait > 0.0 {
            bus_wait / (bus_run + bus_wait)
        } else {
            0.0
        },
        out_of_a,
        into_b,
        dropped_by_b,
    })
}

/// Until `bus` has seen `peer` alive: its heartbeats reach `bus`, so its
/// subscription there is live.
async fn wait_subscribed(bus: &ZmqBus, peer: &str) -> Result<()> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let alive = bus
            .peers()
            .iter()
            .any(|p| p.name == peer && p.state == PeerState::Alive);
        if alive {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("{peer} never subscribed");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn latency_json(l: &Latency) -> Value {
    json!({
        "body": l.kind.label(),
        "body_bytes": l.body_bytes,
        "rate_per_s": l.rate,
        "published": l.published.messages,
        "publish_refused": l.published.refused,
        "publisher_worst_lag_ms": round3(l.published.worst_lag_ms),
        "seconds": round3(l.published.seconds),
        "received": l.received,
        "latency_ms": json_of(&l.latencies_ms),
        "messages_out_of_a": l.out_of_a,
        "messages_into_b": l.into_b,
        "dropped_by_b": l.dropped_by_b,
        "bus_threads_waiting_for_cpu_percent": round3(100.0 * l.bus_wait_share),
        "cpu_ms_per_message": {
            "bus_threads": round3(l.cpu_ms_per_message[0]),
            "zeromq_io_threads": round3(l.cpu_ms_per_message[1]),
            "whole_process": round3(l.cpu_ms_per_message[2]),
        },
    })
}

/// The false-verdict run's result.
#[derive(Debug)]
pub struct Soak {
    pub seconds: f64,
    pub rate_each_way: u32,
    pub burners: usize,
    pub machine_busy_percent: f64,
    pub suspect: usize,
    pub down: usize,
    pub alive_again: usize,
    /// The oldest heartbeat either bus had, sampled every 25 ms.
    pub worst_heartbeat_age_ms: f64,
    pub published: [Published; 2],
    pub received: [u64; 2],
    pub latencies_ms: Vec<f64>,
    /// Burners still running at the end (they were not starved or killed).
    pub burners_at_end: usize,
}

/// Two buses streaming to each other at `rate` per second each way, with a
/// CPU burner on every core, for `duration`. Must run on the main thread
/// (the burners die with the thread that started them).
pub async fn soak(
    dir: &std::path::Path,
    rate: u32,
    duration: Duration,
    burners: usize,
) -> Result<Soak> {
    let a = Host::new(dir, "soak-a")?;
    let b = Host::new(dir, "soak-b")?;
    let base = Instant::now();
    let (bus_a, in_a) = a.start(1, vec![b.as_peer()])?;
    let (bus_b, in_b) = b.start(2, vec![a.as_peer()])?;
    let (mut tap_a, mut tap_b) = (Tap::spawn(in_a, base), Tap::spawn(in_b, base));
    tap_a
        .wait_for(&b.name, PeerState::Alive, PATIENCE)
        .await
        .context("a never saw b alive")?;
    tap_b
        .wait_for(&a.name, PeerState::Alive, PATIENCE)
        .await
        .context("b never saw a alive")?;

    let mut children = Children::default();
    for _ in 0..burners {
        children.push(procs::spawn_burner()?);
    }
    let (bus_a, bus_b) = (Arc::new(bus_a), Arc::new(bus_b));
    let stop = Arc::new(AtomicBool::new(false));
    let cpu_before = procs::machine_cpu()?;
    let since = Instant::now();
    let pubs = [
        spawn_publisher(
            Arc::clone(&bus_a),
            Bodies::new(Kind::Mixed, &a.name, base),
            rate,
            duration,
            Arc::clone(&stop),
        ),
        spawn_publisher(
            Arc::clone(&bus_b),
            Bodies::new(Kind::Mixed, &b.name, base),
            rate,
            duration,
            Arc::clone(&stop),
        ),
    ];
    let mut worst = Duration::ZERO;
    let mut last_report = Instant::now();
    while since.elapsed() < duration {
        tokio::time::sleep(Duration::from_millis(25)).await;
        worst = worst
            .max(oldest_heartbeat(&bus_a))
            .max(oldest_heartbeat(&bus_b));
        if last_report.elapsed() >= Duration::from_secs(60) {
            last_report = Instant::now();
            tap_a.drain();
            tap_b.drain();
            eprintln!(
                "  {:>4.0} s: suspect {} down {}, oldest heartbeat {} ms",
                since.elapsed().as_secs_f64(),
                tap_a.count_since(since, PeerState::Suspect)
                    + tap_b.count_since(since, PeerState::Suspect),
                tap_a.count_since(since, PeerState::Down)
                    + tap_b.count_since(since, PeerState::Down),
                worst.as_millis()
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    let cpu_after = procs::machine_cpu()?;
    let mut burners_at_end = 0;
    for i in 0..burners {
        if matches!(children.get_mut(i).try_wait(), Ok(None)) {
            burners_at_end += 1;
        }
    }
    children.kill_all();
    let mut published = [Published::default(); 2];
    for (slot, p) in published.iter_mut().zip(pubs) {
        *slot = tokio::task::spawn_blocking(move || p.join())
            .await?
            .map_err(|_| anyhow::anyhow!("a publisher panicked"))?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    tap_a.drain();
    tap_b.drain();
    let count = |state| tap_a.count_since(since, state) + tap_b.count_since(since, state);
    let mut latencies_ms = tap_a.counts.take_latencies();
    latencies_ms.extend(tap_b.counts.take_latencies());
    Ok(Soak {
        seconds: since.elapsed().as_secs_f64(),
        rate_each_way: rate,
        burners,
        machine_busy_percent: procs::busy_percent(cpu_before, cpu_after),
        suspect: count(PeerState::Suspect),
        down: count(PeerState::Down),
        alive_again: count(PeerState::Alive),
        worst_heartbeat_age_ms: worst.as_secs_f64() * 1000.0,
        published,
        received: [
            tap_b.counts.snapshots.load(Ordering::Relaxed),
            tap_a.counts.snapshots.load(Ordering::Relaxed),
        ],
        latencies_ms,
        burners_at_end,
    })
}

pub fn soak_json(s: &Soak) -> Value {
    json!({
        "seconds": round3(s.seconds),
        "rate_each_way_per_s": s.rate_each_way,
        "body": "mixed",
        "burners": s.burners,
        "burners_running_at_end": s.burners_at_end,
        "machine_cpu_busy_percent": round3(s.machine_busy_percent),
        "verdicts": {"suspect": s.suspect, "down": s.down, "alive_again": s.alive_again},
        "worst_heartbeat_age_ms": round3(s.worst_heartbeat_age_ms),
        "published": [s.published[0].messages, s.published[1].messages],
        "publisher_worst_lag_ms": [round3(s.published[0].worst_lag_ms), round3(s.published[1].worst_lag_ms)],
        "received": s.received,
        "latency_ms": json_of(&s.latencies_ms),
    })
}
