//! Restarts against real containers: a killed agent comes back; a
//! crash-looping agent backs off, is marked, holds its dependents, and they
//! come back in order once it recovers.

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use e2e::{Daemon, Host, agent_events, chain_config, docker_ok, kind_name};
use orch_api::EventKind;

#[test]
fn a_killed_agent_container_is_restarted() {
    let host = Host::new("kill");
    std::fs::create_dir_all(host.path("ctl")).unwrap();
    let daemon = Daemon::start(&host, &chain_config(&host.name, &host.path("ctl")), &[]);
    daemon.ctl_ok(&["group", "start", "base", "--wait", "--timeout", "60"]);
    let before = host.container_of("Top").unwrap();
    docker_ok(&["kill", &before.id]);
    daemon.wait_until("Top runs again, healthy", Duration::from_secs(30), |d| {
        let s = d.status();
        s.agents.healthy == 3
            && host
                .container_of("Top")
                .is_some_and(|c| c.running && c.started_at != before.started_at)
    });
    let after = host.container_of("Top").unwrap();
    assert_eq!(after.id, before.id, "restarted in place, not duplicated");
    host.assert_no_duplicates();
    let events = daemon.events();
    let top: Vec<String> = agent_events(&events, "Top")
        .iter()
        .map(|e| kind_name(e))
        .collect();
    let tail: Vec<&str> = top.iter().rev().take(5).rev().map(String::as_str).collect();
    assert_eq!(
        tail,
        [
            "agent-exited",
            "agent-restarting",
            "agent-starting",
            "agent-running",
            "agent-healthy"
        ]
    );
    assert!(events.iter().any(|e| matches!(&e.kind, EventKind::AgentExited { replica, code: 137, .. } if replica.agent == "Top")));
    let agents: Vec<orch_api::AgentStatus> =
        serde_json::from_str(&daemon.ctl_ok(&["-o", "json", "agents"])).unwrap();
    assert_eq!(
        agents.iter().find(|a| a.agent == "Top").unwrap().restarts,
        1
    );
}

#[test]
fn a_crash_loop_backs_off_holds_dependents_and_they_return_after_recovery() {
    let host = Host::new("crashloop");
    let ctl = host.path("ctl");
    std::fs::create_dir_all(&ctl).unwrap();
    let fail = ctl.join("fail");
    std::fs::write(&fail, b"").unwrap();
    let daemon = Daemon::start(&host, &chain_config(&host.name, &ctl), &[]);

    // Phase 1: Flaky fails from the start; its dependents never start.
    let out = daemon.ctl(&["group", "start", "base", "--wait", "--timeout", "60"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "--wait reports the crash loop: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("base/Flaky is crash-looping"));
    let events = daemon.events();
    let flaky = agent_events(&events, "Flaky");
    assert!(
        flaky
            .iter()
            .any(|e| matches!(e.kind, EventKind::AgentCrashLoop { restarts: 3, .. }))
    );
    for held in ["Mid", "Top"] {
        let ev = agent_events(&events, held);
        assert!(
            !ev.iter()
                .any(|e| matches!(e.kind, EventKind::AgentStarting { .. })),
            "{held} started while Flaky was down"
        );
        assert!(
            ev.iter()
                .any(|e| matches!(e.kind, EventKind::AgentHeld { .. }))
        );
    }
    // Never faster than the backoff: each start follows its scheduled delay.
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
    assert!(checked >= 2, "saw {checked} backoffs");
    let delays: Vec<u64> = flaky
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::AgentRestarting { in_ms, .. } => Some(in_ms),
            _ => None,
        })
        .collect();
    assert!(
        delays.windows(2).all(|w| w[1] >= w[0]),
        "backoff never shrinks: {delays:?}"
    );

    // Recovery: remove the switch; Flaky comes up, then Mid, then Top.
    std::fs::remove_file(&fail).unwrap();
    daemon.ctl_ok(&["group", "start", "base", "--wait", "--timeout", "60"]);
    let events = daemon.events();
    let seq = |agent: &str, pred: &dyn Fn(&EventKind) -> bool| {
        agent_events(&events, agent)
            .iter()
            .rev()
            .find(|e| pred(&e.kind))
            .map(|e| e.seq)
            .unwrap()
    };
    let recovered = seq("Flaky", &|k| matches!(k, EventKind::AgentRecovered { .. }));
    let mid_start = seq("Mid", &|k| matches!(k, EventKind::AgentStarting { .. }));
    let mid_healthy = seq("Mid", &|k| matches!(k, EventKind::AgentHealthy { .. }));
    let top_start = seq("Top", &|k| matches!(k, EventKind::AgentStarting { .. }));
    assert!(recovered < mid_start && mid_healthy < top_start);

    // Phase 2: a running chain whose base starts crash-looping: the
    // dependents are stopped (Top first) and come back after recovery.
    std::fs::write(&fail, b"").unwrap();
    let flaky_id = host.container_of("Flaky").unwrap().id;
    docker_ok(&["kill", &flaky_id]);
    daemon.wait_until("Mid and Top are stopped", Duration::from_secs(60), |_| {
        host.container_of("Mid").is_none() && host.container_of("Top").is_none()
    });
    let events = daemon.events();
    let top_stop = seq_after(&events, "Top", recovered);
    let mid_stop = seq_after(&events, "Mid", recovered);
    assert!(top_stop < mid_stop, "Top stops before Mid");
    let status = daemon.status();
    assert_eq!(status.agents.crashlooping, 1);
    std::fs::remove_file(&fail).unwrap();
    daemon.wait_until("the chain is back", Duration::from_secs(60), |d| {
        d.status().agents.healthy == 3
    });
    host.assert_no_duplicates();
}

fn seq_after(events: &[orch_api::Event], agent: &str, after: u64) -> u64 {
    agent_events(events, agent)
        .iter()
        .find(|e| e.seq > after && matches!(e.kind, EventKind::AgentStopped { .. }))
        .map(|e| e.seq)
        .unwrap_or_else(|| panic!("{agent} was not stopped"))
}
