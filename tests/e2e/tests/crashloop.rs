//! A crash loop that looks healthy between crashes: the reference agent
//! crashes one second after it starts listening, for over a minute. It is
//! marked crash-looping once and stays marked (being healthy for a moment
//! does not end it), its dependents stay held the whole time, and its
//! restarts never come faster than its backoff.

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use e2e::{Daemon, Host, IMAGE, agent_events};
use orch_api::EventKind;

#[test]
fn an_agent_crashing_every_second_is_marked_once_and_holds_its_dependents() {
    let host = Host::new("flap");
    let config = format!(
        r#"version: 1
host: {{name: {host}}}
defaults:
  image: {IMAGE}
  restart: {{policy: on-failure, backoff: {{initial: 200ms, max: 4s}}, crashloop: {{restarts: 3, window: 1m}}}}
  health: {{http: {{port: 8080}}, interval: 300ms, timeout: 1s, retries: 2, start_period: 5s}}
  stop_timeout: 2s
groups:
  base:
    agents:
      Flaky: {{env: {{AGENT_CRASH_AFTER: 1s, AGENT_EXIT_CODE: "3"}}}}
      Mid: {{depends_on: [Flaky]}}
      Top: {{depends_on: [Mid]}}
"#,
        host = host.name
    );
    let daemon = Daemon::start(&host, &config, &[]);
    daemon.ctl(&["group", "start", "base"]);
    let began = Instant::now();
    // Let it flap for over a minute, watching that the dependents stay down.
    let mut saw_marked = false;
    while began.elapsed() < Duration::from_secs(65) {
        let agents: Vec<orch_api::AgentStatus> =
            serde_json::from_str(&daemon.ctl_ok(&["-o", "json", "agents"])).unwrap();
        let flaky = agents.iter().find(|a| a.agent == "Flaky").unwrap();
        if flaky.crashloop {
            saw_marked = true;
        } else {
            assert!(
                !saw_marked,
                "Flaky lost its crash-loop mark while it kept crashing"
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(saw_marked);
    let events = daemon.events();
    let flaky = agent_events(&events, "Flaky");
    let count = |f: &dyn Fn(&EventKind) -> bool| flaky.iter().filter(|e| f(&e.kind)).count();
    assert_eq!(
        count(&|k| matches!(k, EventKind::AgentCrashLoop { .. })),
        1,
        "marked once"
    );
    assert_eq!(count(&|k| matches!(k, EventKind::AgentRecovered { .. })), 0);
    let healthy = count(&|k| matches!(k, EventKind::AgentHealthy { .. }));
    let exits = count(&|k| matches!(k, EventKind::AgentExited { code: 3, .. }));
    assert!(exits >= 10, "it crashed only {exits} times");
    assert!(
        healthy >= 3,
        "it was healthy between crashes only {healthy} times"
    );
    // Mid started before the loop was marked, then went down and stayed down.
    let marked_at = flaky
        .iter()
        .find(|e| matches!(e.kind, EventKind::AgentCrashLoop { .. }))
        .unwrap()
        .seq;
    for held in ["Mid", "Top"] {
        let late_start = agent_events(&events, held)
            .iter()
            .any(|e| e.seq > marked_at && matches!(e.kind, EventKind::AgentStarting { .. }));
        assert!(!late_start, "{held} started while Flaky was crash-looping");
    }
    let status = daemon.status();
    assert!(
        status.agents.running <= 1,
        "only Flaky may run: {:?}",
        status.agents
    );
    // Never faster than the backoff.
    let mut checked = 0;
    for pair in flaky.windows(2) {
        if let (EventKind::AgentRestarting { in_ms, .. }, EventKind::AgentStarting { .. }) =
            (&pair[0].kind, &pair[1].kind)
        {
            let gap = pair[1].time_ms - pair[0].time_ms;
            assert!(
                gap + 2 >= *in_ms,
                "restarted after {gap}ms, backoff said {in_ms}ms"
            );
            checked += 1;
        }
    }
    assert!(checked >= 10, "saw {checked} backoffs");
}
