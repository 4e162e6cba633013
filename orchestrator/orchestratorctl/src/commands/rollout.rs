//! `rollout status|pause|resume|undo`, and the wait of `apply --wait`:
//! a rollout followed from the events of its daemon
//! ([`orch_api::rollout::RolloutWait`] decides; this only prints), with its
//! status asked once at the start (a rollout that has ended already).
//!
//! Exit codes of a wait: 0 the rollout completed, 9 it was rolled back,
//! 10 it is paused (or a newer config took over), 6 time ran out.

use std::time::Duration;

use anyhow::Result;
use futures_util::StreamExt;
use orch_api::rollout::{RolloutAction, RolloutEnd, RolloutStatus, RolloutWait};
use orch_api::{Applied, Client, text};

use super::daemon::{block_on, fail};
use crate::exit::{self, Exit};
use crate::output::{Format, Out, print_data};

/// How long a wait lasts without `--timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

pub fn status(client: &Client, wait: Option<Duration>, out: &Out) -> Result<()> {
    let s: RolloutStatus = block_on(client.rollout(RolloutAction::Status))?.map_err(fail)?;
    show(&s, out)?;
    match (wait, &s.rollout) {
        (Some(timeout), Some(ro)) => {
            let end = block_on(follow(client, ro.generation, s.events_from, timeout))??;
            ended(ro.generation, &end)
        }
        _ => Ok(()),
    }
}

pub fn pause(client: &Client, out: &Out) -> Result<()> {
    let s = block_on(client.rollout(RolloutAction::Pause))?.map_err(fail)?;
    show(&s, out)
}

pub fn resume(client: &Client, out: &Out) -> Result<()> {
    let s = block_on(client.rollout(RolloutAction::Resume))?.map_err(fail)?;
    show(&s, out)
}

pub fn undo(client: &Client, to: Option<u64>, wait: Option<Duration>, out: &Out) -> Result<()> {
    let a: Applied = block_on(client.rollout_undo(to))?.map_err(fail)?;
    show_applied(&a, out)?;
    match wait {
        Some(timeout) => wait_applied(client, &a, timeout),
        None => Ok(()),
    }
}

/// After an apply (or undo): waits for its rollout when it recreates
/// anything.
pub fn wait_applied(client: &Client, a: &Applied, timeout: Duration) -> Result<()> {
    if a.recreated.is_empty() {
        eprintln!("generation {}: nothing to roll out", a.generation);
        return Ok(());
    }
    let end = block_on(follow(client, a.generation, a.events_from, timeout))??;
    ended(a.generation, &end)
}

/// The end of a rollout as the command's exit.
fn ended(generation: u64, end: &RolloutEnd) -> Result<()> {
    let message = text::rollout_end(generation, end);
    match exit_code(end) {
        exit::OK => {
            println!("{message}");
            Ok(())
        }
        code => Err(Exit::with(code, message).into()),
    }
}

/// The documented exit code of a rollout's end.
pub fn exit_code(end: &RolloutEnd) -> u8 {
    match end {
        RolloutEnd::Completed => exit::OK,
        RolloutEnd::RolledBack { .. } => exit::ROLLED_BACK,
        RolloutEnd::Paused { .. } | RolloutEnd::Superseded { .. } => exit::PAUSED,
    }
}

/// Follows the daemon's events from `since` until generation
/// `generation`'s rollout ends, printing each rollout event.
pub async fn follow(
    client: &Client,
    generation: u64,
    since: u64,
    timeout: Duration,
) -> Result<RolloutEnd> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut events = Box::pin(client.events(since, true).await.map_err(fail)?);
    let mut w = RolloutWait::new(generation);
    loop {
        let next = tokio::time::timeout_at(deadline, events.next()).await;
        let event = match next {
            Err(_) => {
                return Err(Exit::with(
                    exit::TIMEOUT,
                    format!("generation {generation}: the rollout did not end in time"),
                )
                .into());
            }
            Ok(None) => {
                // The stream ended (the daemon restarted): what its
                // status says is the last word.
                let s = client.rollout(RolloutAction::Status).await.map_err(fail)?;
                return match w.from_status(&s) {
                    Some(end) => Ok(end),
                    None => Err(Exit::with(
                        exit::UNREACHABLE,
                        format!("generation {generation}: the daemon's events stopped before the rollout ended"),
                    )
                    .into()),
                };
            }
            Ok(Some(e)) => e.map_err(fail)?,
        };
        if event.kind.name().starts_with("rollout-") || event.kind.name() == "agent-failed" {
            eprintln!("{}", event.kind);
        }
        if let Some(end) = w.see(&event) {
            return Ok(end);
        }
    }
}

fn show(s: &RolloutStatus, out: &Out) -> Result<()> {
    if out.format != Format::Table {
        return print_data(out.format, s);
    }
    print!("{}", text::rollout_status(s));
    Ok(())
}

/// What an apply, a reload or an undo took, for people (or as data).
pub(super) fn show_applied(a: &Applied, out: &Out) -> Result<()> {
    if out.format != Format::Table {
        return print_data(out.format, a);
    }
    for w in &a.warnings {
        eprintln!("{}", out.yellow(w));
    }
    let idle: Vec<&str> = a
        .changed
        .iter()
        .filter(|c| !a.recreated.contains(c))
        .map(String::as_str)
        .collect();
    match (a.recreated.is_empty(), idle.is_empty()) {
        // Not "no changes": a count the file changes is reached without
        // recreating anything (`config diff` shows it beforehand).
        (true, true) => println!(
            "generation {} applied; no container recreated",
            a.generation
        ),
        (false, _) => println!(
            "generation {} applied; rolling out step by step to: {}",
            a.generation,
            a.recreated.join(", ")
        ),
        (true, false) => println!("generation {} applied", a.generation),
    }
    if !idle.is_empty() {
        println!(
            "changed, applied when their group starts: {}",
            idle.join(", ")
        );
    }
    for r in &a.rescaled {
        println!("{}: {} -> {} replica(s)", r.agent, r.from, r.to);
    }
    Ok(())
}
