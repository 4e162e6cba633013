//! Waiting for groups to reach a state, following the daemon's events from
//! the moment the command was accepted (so nothing is missed), with a
//! progress line on a terminal and one line per event otherwise.

use std::io::{IsTerminal, Write as _};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use orch_api::{Client, Event, GroupState, GroupStatus};
use orch_core::supervise::EventKind;

use super::daemon::fail;
use crate::exit::{self, Exit};
use crate::output::Out;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    Ready,
    Stopped,
}

fn group_of(kind: &EventKind) -> Option<&str> {
    use EventKind::*;
    match kind {
        GroupStarting { group }
        | GroupReady { group }
        | GroupStopping { group }
        | GroupStopped { group } => Some(group),
        AgentStarting { group, .. }
        | AgentRunning { group, .. }
        | AgentHealthy { group, .. }
        | AgentUnhealthy { group, .. }
        | AgentExited { group, .. }
        | AgentRestarting { group, .. }
        | AgentCrashLoop { group, .. }
        | AgentRecovered { group, .. }
        | AgentHeld { group, .. }
        | AgentFailed { group, .. }
        | AgentStopped { group, .. }
        | AgentAdopted { group, .. }
        | SliceAssigned { group, .. } => Some(group),
        _ => None,
    }
}

pub fn describe(e: &Event) -> String {
    use EventKind::*;
    match &e.kind {
        GroupStarting { group } => format!("group {group}: starting"),
        GroupReady { group } => format!("group {group}: ready"),
        GroupStopping { group } => format!("group {group}: stopping"),
        GroupStopped { group } => format!("group {group}: stopped"),
        AgentStarting { replica, group } => format!("{group}/{replica}: starting"),
        AgentRunning { replica, group } => format!("{group}/{replica}: running"),
        AgentHealthy { replica, group } => format!("{group}/{replica}: healthy"),
        AgentUnhealthy { replica, group } => format!("{group}/{replica}: unhealthy"),
        AgentExited {
            replica,
            group,
            code,
            oom,
        } => {
            format!(
                "{group}/{replica}: exited with code {code}{}",
                if *oom { " (out of memory)" } else { "" }
            )
        }
        AgentRestarting {
            replica,
            group,
            in_ms,
            attempt,
        } => {
            format!("{group}/{replica}: restart #{attempt} in {in_ms}ms")
        }
        AgentCrashLoop {
            replica,
            group,
            restarts,
            window_ms,
        } => format!(
            "{group}/{replica}: crash-looping ({restarts} restarts within {}s); dependents held",
            window_ms / 1000
        ),
        AgentRecovered { replica, group } => format!("{group}/{replica}: recovered"),
        AgentHeld {
            replica,
            group,
            waiting_for,
        } => {
            format!(
                "{group}/{replica}: held, waiting for {}",
                waiting_for.join(", ")
            )
        }
        AgentFailed {
            replica,
            group,
            reason,
        } => format!("{group}/{replica}: failed: {reason}"),
        AgentStopped { replica, group } => format!("{group}/{replica}: stopped"),
        AgentAdopted {
            replica,
            group,
            container,
        } => {
            format!(
                "{group}/{replica}: adopted container {}",
                &container[..container.len().min(12)]
            )
        }
        DuplicateRemoved { replica, container } => {
            format!(
                "{replica}: removed duplicate container {}",
                &container[..container.len().min(12)]
            )
        }
        ConfigApplied {
            generation,
            changed,
        } => {
            format!(
                "config generation {generation} applied; changed: {}",
                if changed.is_empty() {
                    "none".into()
                } else {
                    changed.join(", ")
                }
            )
        }
        DockerDown => "docker engine unreachable".into(),
        DockerUp => "docker engine connected".into(),
        SliceAssigned {
            replica,
            group,
            slice,
            fallback_depth,
        } => format!(
            "{group}/{replica}: GPU slice {slice}{}",
            if *fallback_depth > 0 {
                format!(" (fallback #{fallback_depth})")
            } else {
                String::new()
            }
        ),
        MigDestroyed { gpu_index, gi_id } => {
            format!("GPU {gpu_index}: destroyed our unused MIG instance {gi_id}")
        }
        GpuNote { text } => format!("gpu: {text}"),
        GpuUnavailable { reason } => format!("GPUs unavailable: {reason}"),
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
    let mut events = Box::pin(
        client
            .lines::<Event>(&format!("/v1/events?follow=1&since={since}"))
            .await
            .map_err(fail)?,
    );
    let mut stream_open = true;
    loop {
        let all: Vec<GroupStatus> = client.get("/v1/groups").await.map_err(fail)?;
        let mine: Vec<&GroupStatus> = all.iter().filter(|g| groups.contains(&g.name)).collect();
        let done = match goal {
            Goal::Ready => mine.iter().all(|g| g.state == GroupState::Ready),
            Goal::Stopped => mine.iter().all(|g| g.state == GroupState::Stopped),
        };
        let (healthy, wanted, running): (usize, usize, usize) =
            mine.iter().fold((0, 0, 0), |a, g| {
                (a.0 + g.healthy, a.1 + g.wanted, a.2 + g.running)
            });
        if tty {
            let line = match goal {
                Goal::Ready => format!(
                    "{} {healthy}/{wanted} agents healthy, {} of {} groups ready ({:.1}s)",
                    if done {
                        out.green("done")
                    } else {
                        "waiting:".into()
                    },
                    mine.iter().filter(|g| g.state == GroupState::Ready).count(),
                    mine.len(),
                    started.elapsed().as_secs_f64()
                ),
                Goal::Stopped => format!(
                    "{} {running} agents still running ({:.1}s)",
                    if done {
                        out.green("done")
                    } else {
                        "stopping:".into()
                    },
                    started.elapsed().as_secs_f64()
                ),
            };
            eprint!("\r\x1b[2K{line}");
            let _ = std::io::stderr().flush();
        }
        if done {
            if tty {
                eprintln!();
            } else {
                eprintln!(
                    "{} in {:.1}s",
                    match goal {
                        Goal::Ready => format!(
                            "{} ready: {healthy}/{wanted} agents healthy",
                            groups.join(", ")
                        ),
                        Goal::Stopped => format!("{} stopped", groups.join(", ")),
                    },
                    started.elapsed().as_secs_f64()
                );
            }
            return Ok(());
        }
        tokio::select! {
            ev = events.next(), if stream_open => match ev {
                Some(Ok(e)) => {
                    let ours = group_of(&e.kind).is_some_and(|g| groups.iter().any(|x| x == g));
                    if ours {
                        let notable = matches!(e.kind, EventKind::AgentCrashLoop { .. } | EventKind::AgentFailed { .. } | EventKind::AgentExited { .. });
                        if !tty || notable {
                            if tty {
                                eprint!("\r\x1b[2K");
                            }
                            eprintln!("{}", describe(&e));
                        }
                        if goal == Goal::Ready && let EventKind::AgentCrashLoop { replica, group, .. } = &e.kind {
                            if tty {
                                eprintln!();
                            }
                            return Err(Exit::with(
                                exit::FAILED,
                                format!("{group}/{replica} is crash-looping, so {group} cannot become ready; see `orchestratorctl logs {group}/{}`", replica.agent),
                            )
                            .into());
                        }
                    }
                }
                Some(Err(e)) => return Err(fail(e)),
                None => stream_open = false,
            },
            () = tokio::time::sleep_until(deadline) => {
                if tty {
                    eprintln!();
                }
                return Err(Exit::with(
                    exit::TIMEOUT,
                    format!("{} did not become {} within {}s", groups.join(", "), match goal { Goal::Ready => "ready", Goal::Stopped => "stopped" }, timeout.as_secs()),
                ).into());
            }
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}
