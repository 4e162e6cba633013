//! The agent's life from start to exit: model-loading delay, the
//! fail-if-exists check, serving, the timed failures, and the stop on a
//! signal. Each step logs one line to stdout, which operators read with
//! `docker logs`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use agent_sdk::{HealthState, Registry, Routes, ServeConfig, Server, format_duration};
use anyhow::Context;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::time::Instant;

use crate::knobs::{self, Knobs};
use crate::work::Work;

/// How the agent ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stopped by SIGTERM or SIGINT: exit 0.
    Stopped,
    /// A simulated failure: exit with this code.
    Failed(u8),
}

/// SIGTERM and SIGINT, as one stream.
struct StopSignals {
    term: Signal,
    int: Signal,
}

impl StopSignals {
    /// Installs the handlers. As PID 1 in a container the process has no
    /// default signal dispositions: without a handler `docker stop` would
    /// wait out its timeout and SIGKILL. So this runs before anything else.
    fn install() -> anyhow::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// Whether `path` exists; `None` (with a log line) when that cannot be told.
fn exists(path: &Path, knob: &str) -> Option<bool> {
    match path.try_exists() {
        Ok(found) => Some(found),
        Err(err) => {
            log_line!("cannot check {} ({knob}): {err}", path.display());
            None
        }
    }
}

/// `/health` is 503 while `path` exists; transitions are logged once each.
fn unhealthy_while_exists(health: &HealthState, path: PathBuf) {
    let was_unhealthy = Arc::new(AtomicBool::new(false));
    health.add_check(move || {
        let verdict = match path.try_exists() {
            Ok(false) => Ok(()),
            Ok(true) => Err(format!(
                "{} exists ({})",
                path.display(),
                knobs::UNHEALTHY_IF_EXISTS
            )),
            // Cannot tell: report unhealthy so a broken mount is noticed.
            Err(err) => Err(format!(
                "cannot check {} ({}): {err}",
                path.display(),
                knobs::UNHEALTHY_IF_EXISTS
            )),
        };
        let unhealthy = verdict.is_err();
        if was_unhealthy.swap(unhealthy, Ordering::Relaxed) != unhealthy {
            match &verdict {
                Err(reason) => log_line!("unhealthy: {reason}"),
                Ok(()) => log_line!("healthy again: {} is gone", path.display()),
            }
        }
        verdict
    });
}

/// Sleeps until `deadline`, or forever when there is none.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Runs the agent to its end.
pub async fn run(knobs: Knobs, config: ServeConfig) -> anyhow::Result<Outcome> {
    let mut signals = StopSignals::install()?;
    let id = &config.identity;
    let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    log_line!(
        "starting reference-agent {} pid={} host={} group={} agent={} replica={} gpu_slice={} {}",
        config.version,
        std::process::id(),
        show(&id.host),
        show(&id.group),
        show(&id.agent),
        id.replica.map_or_else(|| "-".into(), |r| r.to_string()),
        show(&id.gpu_slice),
        knobs.summary(),
    );

    if let Some(delay) = knobs.start_delay {
        log_line!(
            "loading: not listening for {} ({})",
            format_duration(delay),
            knobs::START_DELAY
        );
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            name = signals.recv() => {
                log_line!("signal received: {name} while loading; exiting");
                return Ok(Outcome::Stopped);
            }
        }
    }

    if let Some(path) = &knobs.fail_if_exists {
        if exists(path, knobs::FAIL_IF_EXISTS) == Some(true) {
            log_line!(
                "failing with exit code {}: {} exists ({})",
                knobs.exit_code,
                path.display(),
                knobs::FAIL_IF_EXISTS
            );
            return Ok(Outcome::Failed(knobs.exit_code));
        }
    }

    let health = HealthState::new();
    if let Some(path) = knobs.unhealthy_if_exists.clone() {
        unhealthy_while_exists(&health, path);
    }
    let registry = Registry::new();
    let work = Work::new(knobs.work, &registry, &config.identity)?;
    let routes = Routes::new().route("/work", move |req| work.clone().handle(req))?;
    let server = Server::bind(config, health.clone(), registry, routes).await?;
    let addrs: Vec<String> = server
        .local_addrs()
        .iter()
        .map(ToString::to_string)
        .collect();
    health.set_ready(true);
    log_line!("listening on {}", addrs.join(" "));

    // The timed failures count from here: they simulate a running service
    // going bad, not a slow load.
    let started = Instant::now();
    let crash_at = knobs.crash_after.map(|d| started + d);
    let mut unhealthy_at = knobs.unhealthy_after.map(|d| started + d);
    let serving = server.run(async {
        let name = signals.recv().await;
        log_line!("signal received: {name}; stopping");
    });
    tokio::pin!(serving);
    loop {
        tokio::select! {
            stopped = &mut serving => {
                if stopped.cut_connections > 0 {
                    log_line!(
                        "stopped: {} connection(s) cut after the grace period",
                        stopped.cut_connections
                    );
                } else {
                    log_line!("stopped");
                }
                return Ok(Outcome::Stopped);
            }
            () = until(crash_at) => {
                log_line!(
                    "crashing with exit code {} ({}={})",
                    knobs.exit_code,
                    knobs::CRASH_AFTER,
                    format_duration(knobs.crash_after.unwrap_or(Duration::ZERO)),
                );
                return Ok(Outcome::Failed(knobs.exit_code));
            }
            () = until(unhealthy_at) => {
                unhealthy_at = None;
                let reason = format!(
                    "{}={} has passed",
                    knobs::UNHEALTHY_AFTER,
                    format_duration(knobs.unhealthy_after.unwrap_or(Duration::ZERO)),
                );
                log_line!("unhealthy: {reason}");
                health.set_unhealthy(reason);
            }
        }
    }
}
