//! `reference-agent`: the agent that runs inside orchestrator containers.
//!
//! It speaks the agent contract through `agent-sdk` (`/health`, `/ready`,
//! `/info`, `/metrics` on every `ORCH_LISTEN_PORTS` port), adds a simulated
//! inference endpoint `/work`, and misbehaves on request through the
//! `AGENT_*` knobs so the supervisor's restart, health and crash-loop
//! handling can be tested against a real process.
//!
//! Exit codes: 0 after SIGTERM or SIGINT; 2 for a bad setting (knob,
//! `ORCH_*` value or argument); `AGENT_EXIT_CODE` (default 1) for a
//! simulated failure; 1 when the agent cannot run at all (a port taken).
//!
//! `reference-agent --probe URL` is a health-check mode instead: one check
//! of `http://IP:PORT/PATH` or `tcp://IP:PORT`, exit 0 healthy, 1 not, 2 a
//! bad URL (`agent_sdk::probe`). It is the health-check command of the
//! `FROM scratch` image, which has no shell and no curl.

use std::fmt;
use std::io::Write as _;
use std::process::ExitCode;

/// Writes one lifecycle line to stdout. A closed stdout must not take the
/// agent down (println! would panic), so write errors are ignored.
macro_rules! log_line {
    ($($arg:tt)*) => {
        $crate::write_log_line(format_args!($($arg)*))
    };
}

mod knobs;
mod lifecycle;
mod work;

use agent_sdk::{ServeConfig, StartTime, probe};
use knobs::Knobs;
use lifecycle::Outcome;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Exit code for a setting the agent cannot use.
const EXIT_BAD_SETTING: u8 = 2;
/// Exit code when the agent cannot run at all.
const EXIT_CANNOT_RUN: u8 = 1;

fn write_log_line(args: fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{args}");
    let _ = out.flush();
}

const USAGE: &str = "\
usage: reference-agent [--version | --help | --probe URL]

  --probe URL  check a health endpoint once and exit: 0 healthy, 1 not,
               2 a bad URL. URL is http://127.0.0.1:PORT/PATH (healthy on
               a 2xx answer) or tcp://127.0.0.1:PORT (healthy when a
               connection opens); it gives up after 3s. For health checks
               in images with no shell and no curl.

Serves /health, /ready, /info, /metrics and /work on every port in
ORCH_LISTEN_PORTS (default 8080). Behaviour is set by environment:
  AGENT_START_DELAY          do not listen until this has passed (e.g. 5s)
  AGENT_CRASH_AFTER          exit with AGENT_EXIT_CODE this long after listening
  AGENT_EXIT_CODE            exit code of simulated failures (default 1)
  AGENT_UNHEALTHY_AFTER      /health turns 503 this long after listening
  AGENT_FAIL_IF_EXISTS       exit with AGENT_EXIT_CODE at start if this path exists
  AGENT_UNHEALTHY_IF_EXISTS  /health is 503 while this path exists
  AGENT_WORK_LATENCY         time one /work request takes (default 20ms)
  AGENT_WORK_JITTER          /work latency varies by up to this much (default 0)
  AGENT_WORK_ERROR_RATE      share of /work requests failing with 500 (default 0)
  AGENT_WORK_CPU             CPU time each /work request burns (default 0, at most 10s)
  AGENT_LISTEN_HOST          IP address to listen on (default 0.0.0.0)
Durations: 500ms, 2s, 1m, 1h, 1m30s.";

/// `--probe URL`: one health check, before and without any of the
/// agent's own settings, so a probe never fails on a knob meant for the
/// serving process it checks.
fn probe_mode(args: Vec<std::ffi::OsString>) -> ExitCode {
    let url = match args.as_slice() {
        [url] => match url.to_str() {
            Some(url) => url.to_owned(),
            None => {
                eprintln!("reference-agent: --probe: the URL is not UTF-8");
                return ExitCode::from(probe::EXIT_BAD_URL);
            }
        },
        [] => {
            eprintln!(
                "reference-agent: --probe needs a URL: http://127.0.0.1:PORT/PATH or tcp://127.0.0.1:PORT"
            );
            return ExitCode::from(probe::EXIT_BAD_URL);
        }
        [_, extra, ..] => {
            eprintln!("reference-agent: --probe takes one URL; unexpected {extra:?}");
            return ExitCode::from(probe::EXIT_BAD_URL);
        }
    };
    match probe::probe(&url, probe::DEFAULT_TIMEOUT) {
        Ok(healthy) => {
            // Docker keeps the output of health checks (`docker inspect`),
            // so a short line says what was seen.
            match healthy.status {
                Some(status) => write_log_line(format_args!("healthy: {url} answered {status}")),
                None => write_log_line(format_args!("healthy: {url} accepted a connection")),
            }
            ExitCode::from(probe::EXIT_HEALTHY)
        }
        Err(err) => {
            let code = err.exit_code();
            if code == probe::EXIT_BAD_URL {
                eprintln!("reference-agent: --probe: {err}");
            } else {
                eprintln!("unhealthy: {err}");
            }
            ExitCode::from(code)
        }
    }
}

fn main() -> ExitCode {
    // Before anything slow, so uptime and agent_start_time_seconds cover
    // the whole process.
    let started = StartTime::now();

    if let Some(arg) = std::env::args_os().nth(1) {
        return match arg.to_str() {
            Some("--version" | "-V") => {
                write_log_line(format_args!("reference-agent {VERSION}"));
                ExitCode::SUCCESS
            }
            Some("--help" | "-h") => {
                write_log_line(format_args!("{USAGE}"));
                ExitCode::SUCCESS
            }
            Some("--probe") => probe_mode(std::env::args_os().skip(2).collect()),
            _ => {
                eprintln!(
                    "reference-agent: unexpected argument {arg:?}: settings come from the environment; see --help"
                );
                ExitCode::from(EXIT_BAD_SETTING)
            }
        };
    }

    let mut config = match ServeConfig::from_env(VERSION) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("reference-agent: {err}");
            return ExitCode::from(EXIT_BAD_SETTING);
        }
    };
    config.started = started;
    let knobs = match Knobs::from_env(std::env::vars_os().map(|(name, _)| name), |name| {
        std::env::var_os(name)
    }) {
        Ok(knobs) => knobs,
        Err(err) => {
            eprintln!("reference-agent: {err:#}");
            return ExitCode::from(EXIT_BAD_SETTING);
        }
    };

    // One thread is plenty for probes and simulated work, and keeps the
    // agent's footprint small next to real agents on the same host.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("reference-agent: cannot start the async runtime: {err}");
            return ExitCode::from(EXIT_CANNOT_RUN);
        }
    };
    match runtime.block_on(lifecycle::run(knobs, config)) {
        Ok(Outcome::Stopped) => ExitCode::SUCCESS,
        Ok(Outcome::Failed(code)) => ExitCode::from(code),
        Err(err) => {
            eprintln!("reference-agent: {err:#}");
            ExitCode::from(EXIT_CANNOT_RUN)
        }
    }
}
