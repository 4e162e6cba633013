//! Detection of a lost peer, and its return.
//!
//! Link cuts: two buses talk only through a TCP proxy each way; stopping
//! both proxies cuts the link (open connections closed, reconnections
//! refused). Each cut is timed on both sides, from just before the proxies
//! stop to each bus's `down` verdict; then the proxies start again and the
//! time to `alive` is taken, with the same buses (no restart). A fresh pair
//! of buses serves each cut, so the cut falls at a new phase of both
//! heartbeat schedules every time.
//!
//! Process kills: the peer runs in a process of its own; `SIGKILL` is the
//! cut, then a new process (a restarted daemon, new incarnation) is started
//! and the time until it is seen `alive` is taken.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use orch_federation::PeerState;
use serde_json::{Value, json};

use crate::net::{Host, Proxy, Tap};
use crate::procs::{self, Children};
use crate::stats::json_of;

/// How long any awaited verdict may take before the run is called broken;
/// far above anything the detector should need.
const PATIENCE: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
pub struct Cuts {
    pub suspect_ms: Vec<f64>,
    pub down_ms: Vec<f64>,
    pub alive_again_ms: Vec<f64>,
}

#[derive(Debug, Default)]
pub struct Kills {
    pub suspect_ms: Vec<f64>,
    pub down_ms: Vec<f64>,
    pub restarted_alive_ms: Vec<f64>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A pause of 1 s plus a spread share of one heartbeat interval, so cuts
/// fall at different points between two heartbeats.
fn settle(i: usize, heartbeat_ms: u64) -> Duration {
    let spread = (i as u64 * 389) % heartbeat_ms;
    Duration::from_millis(1000 + spread)
}

pub async fn link_cuts(dir: &std::path::Path, cuts: usize) -> Result<Cuts> {
    let heartbeat_ms = crate::net::timing().heartbeat_ms;
    let mut out = Cuts::default();
    for i in 0..cuts {
        let a = Host::new(dir, &format!("cut{i}-a"))?;
        let b = Host::new(dir, &format!("cut{i}-b"))?;
        let to_a = Proxy::new(a.port)?;
        let to_b = Proxy::new(b.port)?;
        to_a.start().await?;
        to_b.start().await?;
        let base = Instant::now();
        let (bus_a, in_a) = a.start(1, vec![b.as_peer_at(to_b.port)])?;
        let (bus_b, in_b) = b.start(2, vec![a.as_peer_at(to_a.port)])?;
        let (mut tap_a, mut tap_b) = (Tap::spawn(in_a, base), Tap::spawn(in_b, base));
        tap_a
            .wait_for(&b.name, PeerState::Alive, PATIENCE)
            .await
            .context("a never saw b alive")?;
        tap_b
            .wait_for(&a.name, PeerState::Alive, PATIENCE)
            .await
            .context("b never saw a alive")?;
        tokio::time::sleep(settle(i, heartbeat_ms)).await;

        let cut = Instant::now();
        to_a.stop();
        to_b.stop();
        for (tap, peer) in [(&mut tap_a, &b.name), (&mut tap_b, &a.name)] {
            let suspect = tap.wait_for(peer, PeerState::Suspect, PATIENCE).await;
            let down = tap.wait_for(peer, PeerState::Down, PATIENCE).await;
            let (Some(suspect), Some(down)) = (suspect, down) else {
                bail!("cut {i}: {peer} was not seen suspect then down within {PATIENCE:?}");
            };
            out.suspect_ms.push(ms(suspect - cut));
            out.down_ms.push(ms(down - cut));
        }

        // Restored at a spread point of the heartbeat schedule too, not
        // right on the tick that brought the verdict.
        tokio::time::sleep(Duration::from_millis((i as u64 * 211) % heartbeat_ms)).await;
        let healed = Instant::now();
        to_a.start().await?;
        to_b.start().await?;
        for (tap, peer) in [(&mut tap_a, &b.name), (&mut tap_b, &a.name)] {
            let alive = tap
                .wait_for(peer, PeerState::Alive, PATIENCE)
                .await
                .with_context(|| format!("cut {i}: {peer} not seen alive after the link healed"))?;
            out.alive_again_ms.push(ms(alive - healed));
        }
        eprintln!(
            "  cut {:>2}: down after {:.0} / {:.0} ms, alive again after {:.0} / {:.0} ms",
            i + 1,
            out.down_ms[2 * i],
            out.down_ms[2 * i + 1],
            out.alive_again_ms[2 * i],
            out.alive_again_ms[2 * i + 1]
        );
        drop((tap_a, tap_b, bus_a, bus_b));
    }
    Ok(out)
}

/// Must run on the main thread (children die with the thread that started
/// them).
pub async fn process_kills(dir: &std::path::Path, kills: usize) -> Result<Kills> {
    let heartbeat_ms = crate::net::timing().heartbeat_ms;
    let mut out = Kills::default();
    let a = Host::new(dir, "kill-a")?;
    let b = Host::new(dir, "kill-b")?;
    let base = Instant::now();
    let (_bus_a, in_a) = a.start(1, vec![b.as_peer()])?;
    let mut tap_a = Tap::spawn(in_a, base);
    let mut children = Children::default();
    let mut incarnation = 100;
    let first = procs::spawn_bus(&b.name, &b.secret_file, b.port, incarnation, &[a.as_peer()])?;
    let mut slot = children.push(first.child);
    tap_a
        .wait_for(&b.name, PeerState::Alive, PATIENCE)
        .await
        .context("a never saw the b process alive")?;
    for i in 0..kills {
        tokio::time::sleep(settle(i, heartbeat_ms)).await;
        let cut = Instant::now();
        let child = children.get_mut(slot);
        child.kill().context("kill the bus process")?;
        let _ = child.wait();
        let suspect = tap_a.wait_for(&b.name, PeerState::Suspect, PATIENCE).await;
        let down = tap_a.wait_for(&b.name, PeerState::Down, PATIENCE).await;
        let (Some(suspect), Some(down)) = (suspect, down) else {
            bail!("kill {i}: b was not seen suspect then down within {PATIENCE:?}");
        };
        out.suspect_ms.push(ms(suspect - cut));
        out.down_ms.push(ms(down - cut));

        incarnation += 1;
        let restart = Instant::now();
        let next = procs::spawn_bus(&b.name, &b.secret_file, b.port, incarnation, &[a.as_peer()])?;
        slot = children.push(next.child);
        tap_a
            .wait_for(&b.name, PeerState::Alive, PATIENCE)
            .await
            .with_context(|| format!("kill {i}: the restarted b never seen alive"))?;
        out.restarted_alive_ms.push(ms(restart.elapsed()));
        eprintln!(
            "  kill {:>2}: down after {:.0} ms, restarted process alive after {:.0} ms",
            i + 1,
            out.down_ms[i],
            out.restarted_alive_ms[i]
        );
    }
    children.kill_all();
    Ok(out)
}

pub fn cuts_json(c: &Cuts) -> Value {
    json!({
        "suspect_ms": json_of(&c.suspect_ms),
        "down_ms": json_of(&c.down_ms),
        "alive_again_ms": json_of(&c.alive_again_ms),
        "raw": {
            "suspect_ms": c.suspect_ms,
            "down_ms": c.down_ms,
            "alive_again_ms": c.alive_again_ms,
        }
    })
}

pub fn kills_json(k: &Kills) -> Value {
    json!({
        "suspect_ms": json_of(&k.suspect_ms),
        "down_ms": json_of(&k.down_ms),
        "restarted_alive_ms": json_of(&k.restarted_alive_ms),
        "raw": {
            "suspect_ms": k.suspect_ms,
            "down_ms": k.down_ms,
            "restarted_alive_ms": k.restarted_alive_ms,
        }
    })
}
