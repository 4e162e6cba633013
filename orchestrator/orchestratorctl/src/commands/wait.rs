//! Waiting for groups to reach a state, following the daemon's events from
//! the moment the command was accepted (so nothing is missed), with a
//! progress line on a terminal and one line per event otherwise.
//!
//! A wait ends in one of three ways, and always says which: the goal is
//! reached (every event of its groups up to that moment is printed, then a
//! summary; a ready group with optional agents still coming names them),
//! an agent crash-loops (exit 1), or time runs out (exit 6, naming what it
//! was still waiting for).

use std::io::{IsTerminal, Write as _};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use orch_api::wire::{EventKind, Health};
use orch_api::{Client, Event, GroupState, GroupStatus};

use super::agents::phase_text;
use super::daemon::fail;
use crate::exit::{self, Exit};
use crate::output::Out;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    Ready,
    Stopped,
}

impl Goal {
    fn word(self) -> &'static str {
        match self {
            Goal::Ready => "ready",
            Goal::Stopped => "stopped",
        }
    }

    fn reached(self, g: &GroupStatus) -> bool {
        match self {
            Goal::Ready => g.state == GroupState::Ready,
            Goal::Stopped => g.state == GroupState::Stopped,
        }
    }
}

struct Printer<'a> {
    groups: &'a [String],
    tty: bool,
    /// The last event handled; the next one wanted is `last + 1`.
    last: u64,
}

impl Printer<'_> {
    fn ours(&self, e: &Event) -> bool {
        e.kind
            .group()
            .is_some_and(|g| self.groups.iter().any(|x| x == g))
    }

    /// Prints an event of ours (all of them when not on a terminal, the
    /// notable ones when on one). A crash loop that keeps a group from
    /// becoming ready ends the wait.
    fn handle(&mut self, e: &Event, goal: Goal) -> anyhow::Result<()> {
        if e.seq <= self.last {
            return Ok(());
        }
        self.last = e.seq;
        if !self.ours(e) {
            return Ok(());
        }
        let notable = matches!(
            e.kind,
            EventKind::AgentCrashLoop { .. }
                | EventKind::AgentFailed { .. }
                | EventKind::AgentExited { .. }
        );
        if !self.tty || notable {
            if self.tty {
                eprint!("\r\x1b[2K");
            }
            eprintln!("{}", e.kind);
        }
        if goal == Goal::Ready
            && let EventKind::AgentCrashLoop { replica, group, .. } = &e.kind
        {
            return Err(Exit::with(
                exit::FAILED,
                format!(
                    "{group}/{replica} is crash-looping, so {group} cannot become ready; see `orchestratorctl logs {group}/{}`",
                    replica.agent
                ),
            )
            .into());
        }
        Ok(())
    }
}

/// Prints every event of ours after the last one handled, up to `until`.
async fn catch_up(
    client: &Client,
    p: &mut Printer<'_>,
    goal: Goal,
    until: u64,
) -> anyhow::Result<()> {
    let mut rest = Box::pin(client.events(p.last + 1, false).await.map_err(fail)?);
    while let Some(e) = rest.next().await {
        let e = e.map_err(fail)?;
        if e.seq > until {
            break;
        }
        p.handle(&e, goal)?;
    }
    Ok(())
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
    let mut p = Printer {
        groups,
        tty,
        last: since.saturating_sub(1),
    };
    let mut stream_open = true;
    loop {
        let status = client.status().await.map_err(fail)?;
        let all: Vec<GroupStatus> = status.groups;
        let mine: Vec<&GroupStatus> = all.iter().filter(|g| groups.contains(&g.name)).collect();
        let done = mine.iter().all(|g| goal.reached(g));
        let (healthy, wanted, running) = mine.iter().fold((0, 0, 0), |a, g| {
            (a.0 + g.healthy, a.1 + g.wanted, a.2 + g.running)
        });
        if done {
            // The state is reached; show everything that led to it, and
            // nothing after (the summary is this state's). The events may
            // still be on their way from another host.
            let until = status.last_event_seq;
            while p.last < until && stream_open {
                tokio::select! {
                    ev = events.next() => match ev {
                        Some(Ok(e)) if e.seq <= until => p.handle(&e, goal)?,
                        Some(Ok(_)) => break,
                        Some(Err(e)) => return Err(fail(e)),
                        None => stream_open = false,
                    },
                    () = tokio::time::sleep_until(deadline) => break,
                }
            }
            if p.last < until {
                catch_up(client, &mut p, goal, until).await?;
            }
            if tty {
                eprint!("\r\x1b[2K");
            }
            let optional: Vec<&str> = mine
                .iter()
                .flat_map(|g| g.optional_not_ready.iter().map(String::as_str))
                .collect();
            let took = started.elapsed().as_secs_f64();
            let line = match goal {
                Goal::Ready if optional.is_empty() => format!(
                    "{} ready: {healthy}/{wanted} agents healthy ({took:.1}s)",
                    groups.join(", ")
                ),
                Goal::Ready => format!(
                    "{} ready: {healthy}/{wanted} agents healthy; optional agents still starting: {} ({took:.1}s)",
                    groups.join(", "),
                    optional.join(", ")
                ),
                Goal::Stopped => format!("{} stopped ({took:.1}s)", groups.join(", ")),
            };
            eprintln!("{}", if tty { out.green(&line) } else { line });
            return Ok(());
        }
        if tty {
            let line = match goal {
                Goal::Ready => format!(
                    "waiting: {healthy}/{wanted} agents healthy, {} of {} groups ready ({:.1}s)",
                    mine.iter().filter(|g| g.state == GroupState::Ready).count(),
                    mine.len(),
                    started.elapsed().as_secs_f64()
                ),
                Goal::Stopped => format!(
                    "stopping: {running} agents still running ({:.1}s)",
                    started.elapsed().as_secs_f64()
                ),
            };
            eprint!("\r\x1b[2K{line}");
            let _ = std::io::stderr().flush();
        }
        tokio::select! {
            ev = events.next(), if stream_open => match ev {
                Some(Ok(e)) => p.handle(&e, goal)?,
                Some(Err(e)) => return Err(fail(e)),
                None => stream_open = false,
            },
            () = tokio::time::sleep_until(deadline) => {
                catch_up(client, &mut p, goal, u64::MAX).await?;
                if tty {
                    eprint!("\r\x1b[2K");
                }
                let pending = still_waiting(client, &mine, goal, out).await?;
                return Err(Exit::with(
                    exit::TIMEOUT,
                    format!(
                        "{} did not become {} within {:.1}s; still waiting for: {}",
                        groups.join(", "),
                        goal.word(),
                        timeout.as_secs_f64(),
                        pending
                    ),
                )
                .into());
            }
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

/// What a wait that ran out of time was still waiting for, per group.
async fn still_waiting(
    client: &Client,
    mine: &[&GroupStatus],
    goal: Goal,
    out: &Out,
) -> anyhow::Result<String> {
    let mut parts = Vec::new();
    for g in mine.iter().filter(|g| !goal.reached(g)) {
        let agents = client.agents(Some(&g.name)).await.map_err(fail)?;
        let open: Vec<String> = agents
            .iter()
            .filter(|a| match goal {
                Goal::Ready => a.required && a.health != Health::Healthy,
                Goal::Stopped => true,
            })
            .map(|a| {
                let name = if a.replica == 0 {
                    a.agent.clone()
                } else {
                    format!("{}#{}", a.agent, a.replica)
                };
                format!("{name} {}", phase_text(&a.phase, a.crashloop, &plain(out)))
            })
            .collect();
        parts.push(if open.is_empty() {
            format!("group {} ({})", g.name, state_word(g.state))
        } else {
            format!(
                "group {} ({}): {}",
                g.name,
                state_word(g.state),
                open.join("; ")
            )
        });
    }
    Ok(parts.join("; "))
}

fn plain(out: &Out) -> Out {
    Out {
        color: false,
        ..*out
    }
}

fn state_word(s: GroupState) -> &'static str {
    match s {
        GroupState::Stopped => "stopped",
        GroupState::Starting => "starting",
        GroupState::Ready => "ready",
        GroupState::Degraded => "degraded",
        GroupState::Stopping => "stopping",
    }
}
