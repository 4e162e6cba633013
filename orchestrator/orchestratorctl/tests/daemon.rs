//! The CLI against a daemon running in this process on fakes
//! (`orch_daemon::testing`): waits, exit codes and output forms, as an
//! operator sees them, in real time but without Docker.

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

use orch_daemon::testing::{CHAIN, Harness};

struct Host {
    // Runs the daemon's tasks for as long as the host lives.
    rt: tokio::runtime::Runtime,
    h: Harness,
}

impl Host {
    fn start(config: &str) -> Host {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let h = rt.block_on(Harness::start(config));
        Host { rt, h }
    }

    fn ctl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_orchestratorctl"))
            .args(args)
            .env("NO_COLOR", "1")
            .env("ORCHESTRATOR_SOCKET", self.h.socket())
            .output()
            .unwrap()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[track_caller]
fn code(out: &Output, expected: i32) {
    assert_eq!(
        out.status.code(),
        Some(expected),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// A group with an optional agent that never gets healthy, and another
/// that needs an agent of another group (which starting it starts too).
const OPTIONAL: &str = r#"version: 1
host: {name: clihost}
defaults:
  image: orchestrator-agent:latest
  health: {http: {port: 8080}, interval: 200ms, timeout: 1s, retries: 1, start_period: 1s}
  stop_timeout: 1s
groups:
  memory:
    agents:
      Memory: {}
  reasoning:
    agents:
      Core: {}
      Sick: {required: false}
      Waiter: {required: false, depends_on: [Memory]}
"#;

#[test]
fn a_ready_wait_names_the_optional_agents_still_coming() {
    let host = Host::start(OPTIONAL);
    host.h.world.prober.set_healthy("Sick", false);
    let out = host.ctl(&["group", "start", "reasoning", "--wait", "--timeout", "30s"]);
    code(&out, 0);
    let err = text(&out.stderr);
    // Sick never gets healthy; Waiter may or may not be by then.
    let summary = err.lines().last().unwrap();
    assert!(summary.starts_with("memory, reasoning ready: "), "{err}");
    assert!(
        summary.contains("agents healthy; optional agents still starting: Sick"),
        "{err}"
    );
    // The summary is the state the printed events lead to.
    assert_eq!(
        summary.contains("Waiter"),
        !err.contains("reasoning/Waiter: healthy"),
        "{err}"
    );
    let out = host.ctl(&["agents"]);
    code(&out, 0);
    let table = text(&out.stdout);
    assert!(table.contains("Sick (optional)"), "{table}");
    assert!(!table.contains("Core (optional)"), "{table}");
}

#[test]
fn a_wait_that_times_out_says_what_it_was_waiting_for() {
    let host = Host::start(CHAIN);
    host.h.world.prober.set_healthy("Mid", false);
    // A timeout alone means waiting.
    let out = host.ctl(&["group", "start", "base", "--timeout", "2s"]);
    code(&out, 6);
    let err = text(&out.stderr);
    assert!(
        err.contains("base did not become ready within 2.0s"),
        "{err}"
    );
    assert!(
        err.contains("still waiting for: group base (starting): Mid"),
        "{err}"
    );
    assert!(err.contains("Top held (waiting for Mid)"), "{err}");
    assert!(
        err.contains("base/Flaky: healthy"),
        "every event up to the end: {err}"
    );
}

/// The summary of a wait for `base, extra`: every agent healthy, or all
/// but the optional Extra, which a wait does not wait for.
fn base_and_extra_ready(err: &str) -> bool {
    err.contains("base, extra ready: 5/5 agents healthy")
        || err.contains(
            "base, extra ready: 4/5 agents healthy; optional agents still starting: Extra",
        )
}

#[test]
fn stop_and_restart_waits_print_every_line_and_a_summary() {
    let host = Host::start(CHAIN);
    let out = host.ctl(&["group", "start", "extra", "--wait"]);
    code(&out, 0);
    assert!(
        base_and_extra_ready(&text(&out.stderr)),
        "{}",
        text(&out.stderr)
    );

    let out = host.ctl(&["group", "restart", "base"]);
    code(&out, 1);
    assert!(
        text(&out.stderr).contains("needed by started group(s) extra; pass --with-dependents"),
        "{}",
        text(&out.stderr)
    );
    let out = host.ctl(&["group", "restart", "base", "--with-dependents", "--wait"]);
    code(&out, 0);
    let err = text(&out.stderr);
    assert!(err.contains("restarting base, extra"), "{err}");
    assert!(
        err.contains("group base: ready") && err.contains("group extra: ready"),
        "{err}"
    );
    assert!(base_and_extra_ready(&err), "{err}");

    let out = host.ctl(&["group", "stop", "base", "--with-dependents", "--wait"]);
    code(&out, 0);
    let err = text(&out.stderr);
    for line in [
        "group base: stopping",
        "group extra: stopping",
        "extra/Side: stopped",
        "base/Flaky: stopped",
        "group extra: stopped",
        "group base: stopped",
        "base, extra stopped",
    ] {
        assert!(err.contains(line), "no `{line}` in:\n{err}");
    }
}

#[test]
fn unknown_names_exit_5_with_a_suggestion() {
    let host = Host::start(CHAIN);
    let out = host.ctl(&["agents", "--group", "nosuch"]);
    code(&out, 5);
    assert!(text(&out.stderr).contains("known: base, extra"));
    let out = host.ctl(&["group", "start", "bas"]);
    code(&out, 5);
    assert!(text(&out.stderr).contains("did you mean `base`?"));
    // A bare agent name is taken when one group has it; a close one is
    // suggested as GROUP/AGENT.
    let out = host.ctl(&["logs", "Tpo"]);
    code(&out, 5);
    assert!(
        text(&out.stderr).contains("no agent `Tpo` on this host; did you mean `base/Top`?"),
        "{}",
        text(&out.stderr)
    );
    let out = host.ctl(&["logs", "base/Tpo"]);
    code(&out, 5);
    assert!(
        text(&out.stderr).contains("no agent `Tpo` in group `base`; did you mean `Top`?"),
        "{}",
        text(&out.stderr)
    );
    let out = host.ctl(&["agent", "restart", "Top/"]);
    code(&out, 2);
    let out = host.ctl(&["group", "start", "base", "--timeout", "soon"]);
    code(&out, 2);
}

#[test]
fn events_come_as_a_table_with_dates_ndjson_or_a_yaml_stream() {
    let host = Host::start(CHAIN);
    code(&host.ctl(&["group", "start", "base", "--wait"]), 0);
    let table = text(&host.ctl(&["events"]).stdout);
    let first = table.lines().next().unwrap();
    // The harness's wall clock starts in 2026.
    assert!(first.contains("  2026-"), "{first}");
    let json = text(&host.ctl(&["-o", "json", "events"]).stdout);
    let parsed: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(parsed.len(), table.lines().count());
    assert!(parsed.iter().all(|e| e["host"] == "testhost"));
    let yaml = text(&host.ctl(&["-o", "yaml", "events"]).stdout);
    assert_eq!(yaml.matches("---\n").count(), parsed.len());
    assert!(yaml.contains("kind: group-ready"), "{yaml}");

    // Filters: by group, agent and kind (a prefix with `*`).
    let lines = |args: &[&str]| -> Vec<serde_json::Value> {
        let mut all = vec!["-o", "json", "events"];
        all.extend_from_slice(args);
        let out = host.ctl(&all);
        code(&out, 0);
        text(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let healthy = lines(&["--kind", "agent-healthy"]);
    assert_eq!(healthy.len(), 3, "{healthy:?}");
    let top = lines(&["--agent", "Top", "--kind", "agent-*"]);
    assert!(!top.is_empty());
    assert!(
        top.iter().all(|e| e["replica"]["agent"] == "Top"),
        "{top:?}"
    );
    let groups = lines(&["--group", "base", "--kind", "group-starting,group-ready"]);
    assert_eq!(groups.len(), 2, "{groups:?}");
    let out = host.ctl(&["events", "--kind", "agent-crashloop"]);
    code(&out, 2);
    assert!(
        text(&out.stderr).contains("did you mean `agent-crash-loop`?"),
        "{}",
        text(&out.stderr)
    );
}

/// Kills every live container of `agent`, again and again, while the host lives.
fn keep_killing(host: &Host, agent: &'static str) {
    let rt = host.h.world.rt.clone();
    host.rt.spawn(async move {
        loop {
            for c in rt.containers() {
                if c.labels.get("io.orchestrator.agent").map(String::as_str) == Some(agent)
                    && c.state.is_alive()
                {
                    let _ = rt.exit(&c.id, 3);
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    });
}

#[test]
fn a_wait_ends_at_once_on_a_crash_loop_with_exit_1() {
    let host = Host::start(CHAIN);
    // Never healthy, so the group cannot be ready before the loop shows.
    host.h.world.prober.set_healthy("Flaky", false);
    keep_killing(&host, "Flaky");
    let out = host.ctl(&["group", "start", "base", "--wait", "--timeout", "120s"]);
    code(&out, 1);
    let err = text(&out.stderr);
    assert!(
        err.contains("base/Flaky is crash-looping, so base cannot become ready"),
        "{err}"
    );
    assert!(
        err.contains("base/Flaky: crash-looping"),
        "the event is shown: {err}"
    );
}

#[test]
fn a_wait_on_a_gpu_request_that_cannot_be_placed_exits_7() {
    let class = orch_core::gpu::class_by_name("NVIDIA GeForce RTX 4090").unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let config = format!(
        "{CHAIN}  vision:\n    agents:\n      Eyes: {{gpu: {{slice: mps, memory: 100g, compute: 25%}}}}\n"
    );
    let world = orch_daemon::testing::World::new()
        .with_gpu(orch_gpu::FakeGpu::new().with_gpu(class, false));
    let h = rt.block_on(Harness::start_in(world, &config));
    let host = Host { rt, h };
    let out = host.ctl(&["group", "start", "vision", "--wait", "--timeout", "120s"]);
    code(&out, 7);
    let err = text(&out.stderr);
    assert!(
        err.contains(
            "vision/Eyes cannot be placed on a GPU of this host, so vision cannot become ready"
        ),
        "{err}"
    );
}

#[test]
fn a_closed_pipe_ends_a_followed_stream_quietly() {
    use std::io::BufRead as _;
    let host = Host::start(CHAIN);
    code(&host.ctl(&["group", "start", "base", "--wait"]), 0);
    let mut child = Command::new(env!("CARGO_BIN_EXE_orchestratorctl"))
        .args(["events", "-f"])
        .env("NO_COLOR", "1")
        .env("ORCHESTRATOR_SOCKET", host.h.socket())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read one line, as `| head -1` does, then go away.
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(!first.is_empty());
    // New events are written into the closed pipe.
    code(&host.ctl(&["group", "stop", "base", "--wait"]), 0);
    let out = child.wait_with_output().unwrap();
    code(&out, 0);
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}

#[test]
fn a_followed_stream_cut_by_the_daemon_exits_4() {
    use std::io::BufRead as _;
    let mut host = Host::start(CHAIN);
    code(&host.ctl(&["group", "start", "base", "--wait"]), 0);
    let mut child = Command::new(env!("CARGO_BIN_EXE_orchestratorctl"))
        .args(["events", "-f"])
        .env("NO_COLOR", "1")
        .env("ORCHESTRATOR_SOCKET", host.h.socket())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The stream is open once a line came; then the daemon goes away.
    let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    host.rt.block_on(host.h.stop());
    let out = child.wait_with_output().unwrap();
    code(&out, 4);
    assert!(
        text(&out.stderr).contains("the daemon's event stream ended"),
        "{}",
        text(&out.stderr)
    );
    drop(reader);
}
