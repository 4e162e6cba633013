//! The CLI against a daemon running in this process on fakes
//! (`orch_daemon::testing`): waits, exit codes and output forms, as an
//! operator sees them, in real time but without Docker.

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

use orch_daemon::testing::{CHAIN, Harness};

struct Host {
    // Runs the daemon's tasks for as long as the host lives.
    _rt: tokio::runtime::Runtime,
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
        Host { _rt: rt, h }
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
    let out = host.ctl(&["logs", "Top"]);
    code(&out, 2);
    assert!(
        text(&out.stderr).contains("did you mean `base/Top`?"),
        "{}",
        text(&out.stderr)
    );
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
}

fn fed_config(name: &str, peers: &[&str]) -> String {
    CHAIN.replace("host: {name: testhost}", &format!("host: {{name: {name}}}"))
        + &orch_daemon::testing::federation_section(peers)
}

#[test]
fn commands_reach_another_host_and_the_fleet_is_shown_host_by_host() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let net = orch_federation::MemNetwork::new();
    let (a, b) = rt.block_on(async {
        let a = Harness::start_in(
            orch_daemon::testing::World::new().on(&net),
            &fed_config("alpha", &["beta"]),
        )
        .await;
        let b = Harness::start_in(
            orch_daemon::testing::World::new().on(&net),
            &fed_config("beta", &["alpha"]),
        )
        .await;
        (a, b)
    });
    let ctl = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_orchestratorctl"))
            .args(args)
            .env("NO_COLOR", "1")
            .env("ORCHESTRATOR_SOCKET", a.socket())
            .output()
            .unwrap()
    };
    // Wait for the peers to see each other.
    for _ in 0..100 {
        if text(&ctl(&["peers"]).stdout).contains("alive") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let peers = ctl(&["peers"]);
    code(&peers, 0);
    let table = text(&peers.stdout);
    assert!(table.contains("beta") && table.contains("alive"), "{table}");

    // A wait on another host follows that host's events.
    let out = ctl(&[
        "--host",
        "beta",
        "group",
        "start",
        "base",
        "--wait",
        "--timeout",
        "30s",
    ]);
    code(&out, 0);
    let err = text(&out.stderr);
    assert!(err.contains("base/Flaky: healthy"), "{err}");
    assert!(err.contains("base ready: 3/3 agents healthy"), "{err}");
    assert!(a.world.rt.containers().is_empty());
    assert_eq!(b.world.rt.containers().len(), 3);
    // Replies read as that host's own, exit codes too.
    let out = ctl(&["--host", "beta", "status"]);
    code(&out, 0);
    assert!(
        text(&out.stdout).starts_with("host beta"),
        "{}",
        text(&out.stdout)
    );
    code(&ctl(&["--host", "beta", "agents", "--group", "nosuch"]), 5);
    let out = ctl(&["--host", "gamma", "status"]);
    code(&out, 4);
    assert!(text(&out.stderr).contains("gamma"), "{}", text(&out.stderr));

    // Every host, one section each, once beta's snapshot shows the group
    // it started.
    let beta_agents = |out: &Output| -> usize {
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()[1]["data"]
            .as_array()
            .map_or(0, Vec::len)
    };
    for _ in 0..100 {
        if beta_agents(&ctl(&["-o", "json", "agents", "--all-hosts"])) == 3 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = ctl(&["status", "--all-hosts"]);
    code(&out, 0);
    let all = text(&out.stdout);
    assert!(all.contains("== alpha (this host"), "{all}");
    assert!(all.contains("== beta (alive"), "{all}");
    assert!(all.contains("host beta"), "{all}");
    let out = ctl(&["-o", "json", "agents", "--all-hosts"]);
    code(&out, 0);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["host"], "alpha");
    assert_eq!(v[1]["host"], "beta");
    assert_eq!(v[1]["data"].as_array().unwrap().len(), 3);
    drop((a, b));
    drop(rt);
}
