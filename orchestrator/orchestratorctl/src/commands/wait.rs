//! Waiting for groups to reach a state: drives [`orch_api::wait::Waiter`]
//! with the daemon's events, followed from the moment the command was
//! accepted (so nothing is missed), and prints — a progress line on a
//! terminal, one line per event otherwise. The groups, agents and peers
//! are asked once at the start (the waiter's starting point), the status
//! once at the end (the summary); everything in between is events.
//!
//! A wait ends in one of these ways, and always says which: the goal is
//! reached (every event of its groups up to that moment is printed, then a
//! summary; a ready group with optional agents still coming names them),
//! a required agent crash-loops (exit 1), a required agent's GPU request
//! cannot be placed (exit 7), the event stream is cut (exit 4), or time
//! runs out (exit 6, naming what it was still waiting for, such as a host
//! that is down).

use std::io::{IsTerminal, Write as _};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use orch_api::wait::{Seen, Start, Verdict, Waiter};
use orch_api::{Client, Event, GroupStatus, text};

pub use orch_api::wait::Goal;

use super::daemon::fail;
use crate::exit::{self, Exit};
use crate::output::Out;

/// Prints an event of the wait: all of them when not on a terminal, the
/// notable ones when on one.
fn show(e: &Event, tty: bool) {
    use orch_api::EventKind as K;
    let notable = matches!(
        e.kind,
        K::AgentCrashLoop { .. }
            | K::AgentFailed { .. }
            | K::AgentExited { .. }
            | K::AgentStaysDown { .. }
            | K::PeerChanged { .. }
    );
    if tty && notable {
        eprint!("\r\x1b[2K");
    }
    if !tty || notable {
        eprintln!("{}", e.kind);
    }
}

pub async fn wait(
    client: &Client,
    groups: &[String],
    goal: Goal,
    since: u64,
    timeout: Duration,
    out: &Out,
) -> anyhow::Result<()> {
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut events = Box::pin(client.events(since, true).await.map_err(fail)?);
    // The starting point, asked once.
    let status = client.status().await.map_err(fail)?;
    let agents = client.agents(None).await.map_err(fail)?;
    // A host without peers (or one that cannot say) has none down.
    let peers = client.peers().await.unwrap_or_default();
    let mut w = Waiter::new(
        goal,
        groups,
        Start {
            seq: status.last_event_seq,
            groups: &status.groups,
            agents: &agents,
            peers: &peers,
        },
    )
    .following_since(since.saturating_sub(1));
    loop {
        if let Some(message) = text::wait_failed(w.verdict()) {
            if tty {
                eprint!("\r\x1b[2K");
            }
            let code = match w.verdict() {
                Verdict::Unplaceable { .. } => exit::UNSATISFIABLE,
                _ => exit::FAILED,
            };
            return Err(Exit::with(code, message).into());
        }
        if w.finished() {
            return summary(client, &mut events, &mut w, tty, started, deadline, out).await;
        }
        if tty && *w.verdict() == Verdict::Waiting {
            let down: Vec<&str> = w.hosts_down().collect();
            let line =
                text::wait_progress(goal, w.progress(), &down, started.elapsed().as_secs_f64());
            eprint!("\r\x1b[2K{line}");
            let _ = std::io::stderr().flush();
        }
        tokio::select! {
            ev = events.next() => match ev {
                Some(Ok(e)) => {
                    if w.take(&e) == Seen::Ours {
                        show(&e, tty);
                    }
                }
                Some(Err(e)) => return Err(fail(e)),
                None => {
                    if tty {
                        eprint!("\r\x1b[2K");
                    }
                    return Err(Exit::with(exit::UNREACHABLE, text::WAIT_STREAM_ENDED).into());
                }
            },
            // Once done, a slow stream only delays the lines before the
            // summary, never the summary itself.
            () = tokio::time::sleep_until(deadline) => {
                if matches!(w.verdict(), Verdict::Done { .. }) {
                    return summary(client, &mut events, &mut w, tty, started, deadline, out).await;
                }
                if tty {
                    eprint!("\r\x1b[2K");
                }
                return Err(Exit::with(
                    exit::TIMEOUT,
                    text::wait_timed_out(groups, goal, timeout.as_secs_f64(), &w.pending()),
                )
                .into());
            }
        }
    }
}

/// The summary of a wait that reached its goal: the status, asked once,
/// after every event of ours up to it is printed (so the summary is the
/// state the printed events lead to).
async fn summary<S>(
    client: &Client,
    events: &mut std::pin::Pin<Box<S>>,
    w: &mut Waiter,
    tty: bool,
    started: Instant,
    deadline: tokio::time::Instant,
    out: &Out,
) -> anyhow::Result<()>
where
    S: futures_util::Stream<Item = Result<Event, orch_api::ClientError>>,
{
    let status = client.status().await.map_err(fail)?;
    let until = status.last_event_seq;
    let grace = deadline.max(tokio::time::Instant::now() + Duration::from_secs(5));
    while w.last() < until {
        tokio::select! {
            ev = events.next() => match ev {
                Some(Ok(e)) => {
                    if e.seq > until {
                        break;
                    }
                    if w.take(&e) == Seen::Ours {
                        show(&e, tty);
                    }
                }
                Some(Err(e)) => return Err(fail(e)),
                None => break,
            },
            () = tokio::time::sleep_until(grace) => break,
        }
    }
    if tty {
        eprint!("\r\x1b[2K");
    }
    let groups = w.groups();
    let mine: Vec<&GroupStatus> = status
        .groups
        .iter()
        .filter(|g| groups.contains(&g.name))
        .collect();
    let (healthy, wanted) = mine
        .iter()
        .fold((0, 0), |a, g| (a.0 + g.healthy, a.1 + g.wanted));
    let optional: Vec<&str> = mine
        .iter()
        .flat_map(|g| g.optional_not_ready.iter().map(String::as_str))
        .collect();
    let line = text::wait_done(
        groups,
        w.goal(),
        (healthy, wanted),
        &optional,
        started.elapsed().as_secs_f64(),
    );
    eprintln!("{}", if tty { out.green(&line) } else { line });
    Ok(())
}
