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
fn apply_of_a_gpu_request_that_cannot_be_placed_exits_7_unless_forced() {
    let class = orch_core::gpu::class_by_name("NVIDIA GeForce RTX 4090").unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let config = format!(
        "{CHAIN}  vision:\n    agents:\n      Eyes: {{gpu: {{slice: mps, memory: 4g, compute: 25%}}}}\n"
    );
    let world = orch_daemon::testing::World::new()
        .with_gpu(orch_gpu::FakeGpu::new().with_gpu(class, false));
    let h = rt.block_on(Harness::start_in(world, &config));
    let host = Host { rt, h };
    // The first inventory is taken as the daemon starts.
    for _ in 0..100 {
        if host.rt.block_on(host.h.client.gpu()).unwrap().available {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.yaml");
    std::fs::write(&file, config.replace("memory: 4g", "memory: 30g")).unwrap();
    let file = file.to_str().unwrap();
    let out = host.ctl(&["apply", file]);
    code(&out, 7);
    let err = text(&out.stderr);
    assert!(
        err.contains("was not applied") && err.contains("--force"),
        "{err}"
    );
    assert!(err.contains("Eyes"), "{err}");
    let out = host.ctl(&["apply", "--force", file]);
    code(&out, 0);
    let err = text(&out.stderr);
    assert!(err.contains("applied with --force"), "{err}");
    assert!(
        text(&out.stdout).contains("generation 1 applied"),
        "{}",
        text(&out.stdout)
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

#[test]
fn logs_by_a_bare_name_with_options_and_as_json_lines() {
    use orch_docker::fake::Call;
    use orch_docker::{LogsAsk, OutputStream};
    let host = Host::start(CHAIN);
    code(&host.ctl(&["group", "start", "base", "--wait"]), 0);
    let id = host.rt.block_on(host.h.container_of("Top")).unwrap();
    let rt = &host.h.world.rt;
    rt.push_log(&id, OutputStream::Stdout, "hello\n").unwrap();
    rt.push_log(&id, OutputStream::Stderr, "oops\n").unwrap();

    let out = host.ctl(&["-o", "json", "logs", "Top"]);
    code(&out, 0);
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines,
        [
            serde_json::json!({"replica": 0, "stream": "stdout", "line": "hello"}),
            serde_json::json!({"replica": 0, "stream": "stderr", "line": "oops"}),
        ]
    );

    rt.take_calls();
    let out = host.ctl(&[
        "logs",
        "Top",
        "--since",
        "10m",
        "--timestamps",
        "--tail",
        "5",
    ]);
    code(&out, 0);
    assert_eq!(text(&out.stdout), "hello\noops\n");
    let asked: Vec<LogsAsk> = rt
        .take_calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::Logs { ask, .. } => Some(ask),
            _ => None,
        })
        .collect();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert!(asked[0].timestamps && !asked[0].follow, "{asked:?}");
    assert_eq!(asked[0].tail, Some(5));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let since = asked[0].since.unwrap();
    assert!((now - 700..=now - 500).contains(&since), "{since} vs {now}");

    let out = host.ctl(&["logs", "Top", "--since", "yesterday"]);
    code(&out, 2);
    assert!(text(&out.stderr).contains("`--since yesterday` is neither"));
}

#[test]
fn status_says_how_the_daemon_started_from_its_state() {
    let mut host = Host::start(CHAIN);
    let state_line = |host: &Host| {
        let out = host.ctl(&["status"]);
        code(&out, 0);
        let status = text(&out.stdout);
        status
            .lines()
            .find(|l| l.starts_with("state "))
            .unwrap()
            .to_string()
    };
    let first = state_line(&host);
    assert!(first.contains("(started without one;"), "{first}");
    code(&host.ctl(&["group", "start", "base", "--wait"]), 0);
    host.rt.block_on(host.h.restart());
    let again = state_line(&host);
    assert!(again.ends_with("(started from it)"), "{again}");
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

    // A peer's change of state is an event of this host.
    let out = ctl(&["events", "--kind", "peer-changed"]);
    code(&out, 0);
    assert!(
        text(&out.stdout).contains("host beta: alive"),
        "{}",
        text(&out.stdout)
    );
    // Every host's events, each line naming its host.
    let out = ctl(&["events", "--all-hosts"]);
    code(&out, 0);
    let all = text(&out.stdout);
    assert!(all.lines().any(|l| l.starts_with("alpha ")), "{all}");
    assert!(
        all.lines()
            .any(|l| l.starts_with("beta ") && l.ends_with("group base: ready")),
        "{all}"
    );
    assert!(
        all.lines()
            .all(|l| l.starts_with("alpha ") || l.starts_with("beta ")),
        "{all}"
    );
    let out = ctl(&["-o", "json", "events", "--all-hosts", "--group", "base"]);
    code(&out, 0);
    let hosts: std::collections::BTreeSet<String> = text(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["host"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(hosts.into_iter().collect::<Vec<_>>(), ["beta"]);
    code(&ctl(&["--host", "beta", "events", "--all-hosts"]), 2);
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

#[test]
fn a_closed_pipe_ends_a_table_or_a_document_quietly() {
    let host = Host::start(CHAIN);
    code(&host.ctl(&["group", "start", "base", "--wait"]), 0);
    for verb in [
        "agents",
        "-o json agents",
        "events",
        "completion bash",
        "man",
    ] {
        // The reader is gone before the command writes.
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{{ sleep 0.3; \"$BIN\" {verb}; echo \"exit $?\" >&2; }} | true"
            ))
            .env("BIN", env!("CARGO_BIN_EXE_orchestratorctl"))
            .env("NO_COLOR", "1")
            .env("ORCHESTRATOR_SOCKET", host.h.socket())
            .output()
            .unwrap();
        assert_eq!(text(&out.stderr), "exit 0\n", "{verb}");
    }
}

#[test]
fn a_wait_for_a_host_that_goes_down_says_so() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let net = orch_federation::MemNetwork::new();
    let front = "  front:\n    agents:\n      Web: {depends_on: [\"beta/group:base\"]}\n";
    let alpha_config =
        fed_config("alpha", &["beta"]).replacen("federation:", &format!("{front}federation:"), 1);
    let (a, b) = rt.block_on(async {
        let a = Harness::start_in(orch_daemon::testing::World::new().on(&net), &alpha_config).await;
        let b = Harness::start_in(
            orch_daemon::testing::World::new().on(&net),
            &fed_config("beta", &["alpha"]),
        )
        .await;
        (a, b)
    });
    let ctl = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_orchestratorctl"));
        c.args(args)
            .env("NO_COLOR", "1")
            .env("ORCHESTRATOR_SOCKET", a.socket())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c
    };
    for _ in 0..100 {
        if text(&ctl(&["peers"]).output().unwrap().stdout).contains("alive") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Web waits for beta's base, which never starts; then beta goes away.
    let wait = ctl(&["group", "start", "front", "--timeout", "10s"])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    net.cut("alpha", "beta");
    let out = wait.wait_with_output().unwrap();
    code(&out, 6);
    let err = text(&out.stderr);
    assert!(err.contains("host beta: down"), "the event is shown: {err}");
    assert!(
        err.contains("still waiting for: group front (starting): Web held (waiting for group base on beta); host beta is down"),
        "{err}"
    );
    drop((a, b));
    drop(rt);
}

#[test]
fn plan_all_hosts_says_where_an_agent_fits_and_exits_7_when_nowhere() {
    let class = orch_core::gpu::class_by_name("NVIDIA GeForce RTX 4090").unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let config = format!(
        "{CHAIN}  vision:\n    agents:\n      Eyes: {{gpu: {{slice: mps, memory: 4g, compute: 25%}}}}\n"
    );
    let world = orch_daemon::testing::World::new()
        .with_gpu(orch_gpu::FakeGpu::new().with_gpu(class, false));
    let h = rt.block_on(Harness::start_in(world, &config));
    let host = Host { rt, h };
    for _ in 0..100 {
        if host.rt.block_on(host.h.client.gpu()).unwrap().available {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    code(&host.ctl(&["group", "start", "vision", "--wait"]), 0);

    // The running config: Eyes runs here.
    let out = host.ctl(&["plan", "--all-hosts", "--agent", "Eyes"]);
    code(&out, 0);
    let table = text(&out.stdout);
    assert!(
        table.contains("placement of vision/Eyes of the running config (config of host testhost)"),
        "{table}"
    );
    assert!(table.contains("HOST"), "{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with("testhost"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        row.contains("yes") && row.contains("GPU 0 mps 4g 25% (runs there)"),
        "{row}"
    );
    assert!(table.contains("advice: it fits on testhost"), "{table}");

    // A file asking more than the card has: nowhere, with the reason.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.yaml");
    std::fs::write(&file, config.replace("memory: 4g", "memory: 30g")).unwrap();
    let file = file.to_str().unwrap();
    let out = host.ctl(&["plan", "--all-hosts", file, "--agent", "vision/Eyes"]);
    code(&out, 7);
    let table = text(&out.stdout);
    assert!(
        table.contains("Eyes wants mps memory=30g compute=25%; GPU 0 (NVIDIA GeForce RTX 4090)"),
        "{table}"
    );
    assert!(table.contains("advice: it fits on no host"), "{table}");
    // The whole file, as JSON.
    let out = host.ctl(&["-o", "json", "plan", "--all-hosts", file]);
    code(&out, 7);
    let plan: orch_api::FleetPlan = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan.hosts.len(), 1);
    assert!(!plan.hosts[0].fits && plan.hosts[0].own_host);
    // An agent the file does not have; and flags that need --all-hosts.
    code(
        &host.ctl(&["plan", "--all-hosts", file, "--agent", "vision/Nope"]),
        5,
    );
    code(&host.ctl(&["plan"]), 2);
    code(&host.ctl(&["plan", file, "--agent", "Eyes"]), 2);
    code(&host.ctl(&["plan", "--all-hosts", "--offline"]), 2);
}

const DIFFED: &str = r#"version: 1
host: {name: testhost}
defaults:
  image: orchestrator-agent:latest
  health: {http: {port: 8080}, interval: 500ms, timeout: 1s, retries: 2, start_period: 5s}
  stop_timeout: 2s
groups:
  g:
    agents:
      Api: {replicas: 3, env: {LOG: info}}
      Eyes: {gpu: {slice: mps, memory: 4g, compute: 25%}}
"#;

#[test]
fn config_diff_says_what_an_apply_would_change_and_exits_8_when_something() {
    let class = orch_core::gpu::class_by_name("NVIDIA GeForce RTX 4090").unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let world = orch_daemon::testing::World::new()
        .with_gpu(orch_gpu::FakeGpu::new().with_gpu(class, false));
    let h = rt.block_on(Harness::start_in(world, DIFFED));
    let host = Host { rt, h };
    let out = host.ctl(&["config", "diff"]);
    code(&out, 0);
    assert!(
        text(&out.stdout).contains("no changes"),
        "{}",
        text(&out.stdout)
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("new.yaml");
    let new = DIFFED
        .replace("replicas: 3", "replicas: 2")
        .replace("{LOG: info}", "{LOG: info, FOO: bar}");
    std::fs::write(&file, &new).unwrap();
    let file = file.to_str().unwrap();
    let out = host.ctl(&["config", "diff", file]);
    code(&out, 8);
    let shown = text(&out.stdout);
    for line in [
        "Api: replicas 3 -> 2",
        "Api: env FOO added",
        "Api: recreated, one replica at a time; 1 replica stopped",
    ] {
        assert!(shown.contains(line), "{line}: {shown}");
    }
    assert!(!shown.contains("bar"), "env values stay home: {shown}");
    let out = host.ctl(&["-o", "json", "config", "diff", file]);
    code(&out, 8);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["agents"][0]["agent"], "Api");
    assert_eq!(v["agents"][0]["effect"]["effect"], "recreate");
    assert_eq!(v["agents"][0]["changes"][0]["field"], "env");

    // Two files, no daemon asked.
    let old = dir.path().join("old.yaml");
    std::fs::write(&old, DIFFED).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_orchestratorctl"))
        .args(["config", "diff", old.to_str().unwrap(), file])
        .env("NO_COLOR", "1")
        .env("ORCHESTRATOR_SOCKET", dir.path().join("none.sock"))
        .output()
        .unwrap();
    code(&out, 8);
    assert!(text(&out.stdout).contains("Api: replicas 3 -> 2"));
    let out = host.ctl(&["config", "diff", "--offline", file]);
    code(&out, 2);

    // `plan` says the same: a count going 3 -> 2 is a change.
    for _ in 0..100 {
        if host.rt.block_on(host.h.client.gpu()).unwrap().available {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let only_count = dir.path().join("count.yaml");
    std::fs::write(&only_count, DIFFED.replace("replicas: 3", "replicas: 2")).unwrap();
    let out = host.ctl(&["plan", only_count.to_str().unwrap()]);
    code(&out, 0);
    let shown = text(&out.stdout);
    assert!(shown.contains("change: Api: replicas 3 -> 2"), "{shown}");
    assert!(shown.contains("change: Api: 1 replica stopped"), "{shown}");
    assert!(shown.contains("scale: Api;"), "{shown}");
    // ... and `apply` does not call it no change.
    let out = host.ctl(&["apply", only_count.to_str().unwrap()]);
    code(&out, 0);
    let shown = text(&out.stdout);
    assert!(shown.contains("applied; no container recreated"), "{shown}");
    let out = host.ctl(&["config", "diff"]);
    code(&out, 0);
}

/// One agent on the image the fake engine has.
const ONE_IMAGE: &str = r#"version: 1
host: {name: imagehost}
defaults:
  image: orchestrator-agent:latest
  health: {http: {port: 8080}, interval: 200ms, timeout: 1s, retries: 1, start_period: 1s}
  stop_timeout: 1s
groups:
  memory:
    rollout: {auto_rollback: false, watch: 1s}
    agents:
      Memory: {}
"#;

#[test]
fn plan_and_apply_say_when_an_image_is_missing_and_the_old_container_runs_on() {
    let class = orch_core::gpu::class_by_name("NVIDIA GeForce RTX 4090").unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let world = orch_daemon::testing::World::new()
        .with_gpu(orch_gpu::FakeGpu::new().with_gpu(class, false));
    let h = rt.block_on(Harness::start_in(world, ONE_IMAGE));
    let host = Host { rt, h };
    for _ in 0..100 {
        if host.rt.block_on(host.h.client.gpu()).unwrap().available {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let fake = host.h.world.rt.clone();
    fake.strict_images();
    fake.add_image("orchestrator-agent:latest");
    code(&host.ctl(&["group", "start", "memory", "--wait"]), 0);
    let running = || {
        fake.containers()
            .into_iter()
            .filter(|c| c.state.is_alive())
            .map(|c| (c.id, c.name))
            .collect::<Vec<_>>()
    };
    let before = running();
    assert_eq!(before.len(), 1, "{before:?}");
    let generation = || host.rt.block_on(host.h.client.status()).unwrap().generation;
    let first = generation();

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("new.yaml");
    std::fs::write(
        &file,
        ONE_IMAGE.replace("orchestrator-agent:latest", "orchestrator-agent:missing"),
    )
    .unwrap();
    let file = file.to_str().unwrap();

    // `plan` lists the image, as an error, and exits 7.
    let out = host.ctl(&["plan", file]);
    code(&out, 7);
    let shown = text(&out.stdout);
    assert!(
        shown.contains("error: image `orchestrator-agent:missing` is not on this host"),
        "{shown}"
    );
    let out = host.ctl(&["-o", "json", "plan", file]);
    code(&out, 7);
    let report: orch_api::PlanReport = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report.missing_images, ["orchestrator-agent:missing"]);

    // `apply` refuses it, exit 7, and nothing changes.
    let out = host.ctl(&["apply", file]);
    code(&out, 7);
    let err = text(&out.stderr);
    assert!(
        err.contains("was not applied: 1 image(s) its agents use are not on this host")
            && err.contains("orchestrator-agent:missing"),
        "{err}"
    );
    assert_eq!(generation(), first);

    // `--force` applies it with a warning; the replacement cannot be made,
    // and the old container runs on, with the same id, the whole time.
    let out = host.ctl(&["apply", "--force", file]);
    code(&out, 0);
    let err = text(&out.stderr);
    assert!(
        err.contains("applied with --force although 1 image(s) are not on this host"),
        "{err}"
    );
    let failed = |events: &[orch_api::Event]| {
        events.iter().any(|e| {
            matches!(
                &e.kind,
                orch_api::wire::EventKind::AgentFailed {
                    reason: orch_api::wire::FailReason::ImageMissing { .. },
                    ..
                }
            )
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        assert_eq!(running(), before);
        let events = host.rt.block_on(host.h.events());
        if failed(&events) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{events:?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for _ in 0..20 {
        assert_eq!(running(), before);
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let agents = host.rt.block_on(host.h.client.agents(None)).unwrap();
    assert_eq!(
        agents[0].phase,
        orch_api::wire::Phase::Running,
        "{agents:?}"
    );

    // The failed step paused the rollout; once the image is here,
    // resuming it replaces the old container.
    let status = host.ctl(&["rollout", "status"]);
    code(&status, 0);
    assert!(
        text(&status.stdout).contains("paused"),
        "{}",
        text(&status.stdout)
    );
    fake.add_image("orchestrator-agent:missing");
    code(&host.ctl(&["rollout", "resume"]), 0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let now = running();
        if now.len() == 1 && now != before {
            assert_eq!(now[0].1, before[0].1, "the new one has the replica's name");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{now:?}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
