//! What the daemon says is true across time: a wait does not call a group
//! ready before it has stayed healthy for `min_healthy`, and ends with the
//! crash loop when the agent keeps dying; a daemon restart keeps restart
//! counts and the event history, and `/metrics`, polled all through the
//! restart, never says a ready group is not ready.

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use e2e::{Daemon, Host, IMAGE, agent_events, docker_ok, free_port, http_get};
use orch_api::EventKind;

#[test]
fn a_wait_on_an_agent_that_crashes_after_two_seconds_exits_1() {
    let host = Host::new("brief");
    let text = format!(
        r#"version: 1
host: {{name: {host}}}
defaults:
  image: {IMAGE}
  restart: {{policy: on-failure, backoff: {{initial: 200ms, max: 1s}}, crashloop: {{restarts: 3, window: 1m}}}}
  health: {{http: {{port: 8080}}, interval: 250ms, timeout: 1s, retries: 2, start_period: 5s}}
  stop_timeout: 2s
groups:
  g:
    # The default min_healthy (5s), written out: longer than the agent lives.
    min_healthy: 5s
    agents:
      Brief:
        env: {{AGENT_CRASH_AFTER: 2s, AGENT_EXIT_CODE: "1"}}
"#,
        host = host.name
    );
    let daemon = Daemon::start(&host, &text, &[]);
    let out = daemon.ctl(&["group", "start", "g", "--wait", "--timeout", "120"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the crash loop ends the wait with exit 1\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert!(stderr.contains("g/Brief is crash-looping"), "{stderr}");
    assert!(!stdout.contains("ready"), "said ready: {stdout}");
    let events = daemon.events();
    let brief = agent_events(&events, "Brief");
    assert!(
        brief
            .iter()
            .any(|e| matches!(e.kind, EventKind::AgentHealthy { .. })),
        "it was healthy before each crash"
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(&e.kind, EventKind::GroupReady { group } if group == "g")),
        "the group was never ready"
    );
}

#[test]
fn a_daemon_restart_keeps_restart_counts_and_events_and_never_exports_a_ready_group_as_not_ready() {
    let host = Host::new("remember");
    let port = free_port();
    let text = format!(
        r#"version: 1
host: {{name: {host}}}
defaults:
  image: {IMAGE}
  restart: {{policy: on-failure, backoff: {{initial: 200ms, max: 2s}}}}
  health: {{http: {{port: 8080}}, interval: 500ms, timeout: 1s, retries: 2, start_period: 5s}}
  stop_timeout: 2s
  min_healthy: 2s
groups:
  g:
    agents:
      A: {{}}
      B: {{depends_on: [A]}}
metrics: {{listen: "127.0.0.1:{port}"}}
"#,
        host = host.name
    );
    let mut daemon = Daemon::start(&host, &text, &[]);
    daemon.ctl_ok(&["group", "start", "g", "--wait", "--timeout", "60"]);
    // One restart of A, counted by the daemon.
    let killed = host.container_of("A").unwrap();
    docker_ok(&["kill", &killed.id]);
    daemon.wait_until("A restarted and g ready", Duration::from_secs(30), |d| {
        d.groups()
            .iter()
            .any(|g| g.name == "g" && g.state == orch_api::GroupState::Ready)
            && host
                .container_of("A")
                .is_some_and(|c| c.running && c.started_at != killed.started_at)
    });
    let restarts = |d: &Daemon| -> u64 {
        let agents: Vec<orch_api::AgentStatus> =
            serde_json::from_str(&d.ctl_ok(&["-o", "json", "agents"])).unwrap();
        agents.iter().find(|a| a.agent == "A").unwrap().restarts
    };
    assert_eq!(restarts(&daemon), 1);
    let before = daemon.events();
    let last_seq = before.last().unwrap().seq;
    daemon.wait_until("/metrics says g is ready", Duration::from_secs(10), |_| {
        ready_line(port).as_deref() == Some("1")
    });
    // The restarted container has run longer than min_healthy by now, so
    // the next daemon may call the group ready at its first probes.
    std::thread::sleep(Duration::from_secs(3));

    // Poll /metrics all through a SIGTERM restart and a kill -9 restart.
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut seen: Vec<String> = Vec::new();
            let mut answers = 0;
            while !stop.load(Ordering::SeqCst) {
                if let Some(v) = ready_line(port) {
                    answers += 1;
                    if v != "1" {
                        seen.push(v);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (answers, seen)
        })
    };
    for how in ["SIGTERM", "kill -9"] {
        if how == "SIGTERM" {
            assert!(daemon.terminate().success());
        } else {
            daemon.kill9();
        }
        daemon.spawn();
        daemon.wait_until(
            &format!("/metrics answers after {how}"),
            Duration::from_secs(30),
            |_| ready_line(port).is_some(),
        );
        // A while of steady state after each restart, polled too.
        std::thread::sleep(Duration::from_secs(2));
    }
    stop.store(true, Ordering::SeqCst);
    let (answers, not_ready) = poller.join().unwrap();
    assert!(answers > 20, "polled {answers} answers");
    assert!(
        not_ready.is_empty(),
        "a ready group exported as {not_ready:?} during the restarts"
    );

    // The count and the history survived both restarts.
    assert_eq!(restarts(&daemon), 1);
    let after = daemon.events();
    for e in &before {
        assert!(
            after.iter().any(|a| a.seq == e.seq && a.kind == e.kind),
            "event {} lost: {:?}",
            e.seq,
            e.kind
        );
    }
    assert!(
        after.iter().any(|e| e.seq > last_seq),
        "numbering continues after {last_seq}"
    );
    assert!(
        after
            .iter()
            .all(|e| e.seq <= last_seq || !matches!(&e.kind, EventKind::AgentStarting { .. })),
        "nothing was started again: {:?}",
        after
            .iter()
            .filter(|e| e.seq > last_seq)
            .map(|e| &e.kind)
            .collect::<Vec<_>>()
    );
    assert_eq!(host.container_of("A").unwrap().id, killed.id);
}

/// The value of `orchestrator_group_ready` for group `g`, when `/metrics`
/// answers and has it.
fn ready_line(port: u16) -> Option<String> {
    let text = http_get(port, "/metrics")?;
    text.lines()
        .find(|l| l.starts_with("orchestrator_group_ready{") && l.contains("group=\"g\""))
        .and_then(|l| l.rsplit(' ').next())
        .map(str::to_string)
}
