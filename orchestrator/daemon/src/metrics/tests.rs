#![allow(clippy::unwrap_used)]

use std::time::Duration;

use super::*;

fn replica(group: &str, agent: &str, replica: u32, state: &'static str) -> ReplicaRow {
    ReplicaRow {
        group: group.into(),
        agent: agent.into(),
        replica,
        up: state == "running",
        state,
        crashlooping: false,
        restarts: 0,
    }
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.starts_with('#')).collect()
}

#[test]
fn histograms_count_into_the_first_bucket_that_holds_the_value() {
    let mut h = Histogram::new(HEALTH_BUCKETS);
    h.observe(Duration::from_micros(500));
    h.observe(Duration::from_millis(1));
    h.observe(Duration::from_millis(30));
    h.observe(Duration::from_secs(60));
    assert_eq!(h.count(), 4);
    let c: Vec<(f64, u64)> = h.cumulative().collect();
    // 0.5 ms and 1 ms are both at or under 0.001; 30 ms under 0.05.
    assert_eq!(c[0], (0.001, 2));
    assert_eq!(c[2], (0.01, 2));
    assert_eq!(c[3], (0.05, 3));
    // 60 s is above the last bound: only in +Inf.
    assert_eq!(c.last().copied(), Some((10.0, 3)));
    assert!((h.sum() - 60.0315).abs() < 1e-9);
}

#[test]
fn failures_are_counted_by_reason_from_the_supervisor_events() {
    use orch_core::gpu::ReplicaKey;
    use orch_core::supervise::{FailReason, LaunchError, SupervisorEvent as EventKind};
    let key = ReplicaKey::new("A", 0);
    let g = "g".to_string();
    let mut c = Counters::default();
    c.record_events(&[
        EventKind::AgentExited {
            replica: key.clone(),
            group: g.clone(),
            code: 1,
            oom: false,
        },
        EventKind::AgentExited {
            replica: key.clone(),
            group: g.clone(),
            code: 137,
            oom: true,
        },
        EventKind::AgentUnhealthy {
            replica: key.clone(),
            group: g.clone(),
        },
        EventKind::AgentFailed {
            replica: key.clone(),
            group: g.clone(),
            reason: FailReason::Launch(LaunchError::NoGpuAccess),
        },
        EventKind::AgentHealthy {
            replica: key.clone(),
            group: g.clone(),
        },
    ]);
    let got: Vec<(&str, u64)> = c.failures.iter().map(|((_, _, r), n)| (*r, *n)).collect();
    assert_eq!(
        got,
        [
            ("exited", 1),
            ("gpu_unavailable", 1),
            ("oom_killed", 1),
            ("unhealthy", 1)
        ]
    );
}

#[test]
fn autoscaler_decisions_are_counted_and_agents_replicas_written() {
    use orch_core::autoscale::{Cause, Signal};
    use orch_core::supervise::SupervisorEvent as EventKind;
    let mut c = Counters::default();
    let scaled = |from, to, cause| EventKind::AgentAutoscaled {
        agent: "W".into(),
        group: "g".into(),
        from,
        to,
        cause,
    };
    let cpu = Cause::Signal {
        signal: Signal::Cpu,
        value: 140.0,
        target: 70.0,
        recommended: 2,
        bounded: false,
    };
    c.record_events(&[
        scaled(1, 2, cpu),
        scaled(2, 3, cpu),
        scaled(3, 2, Cause::AboveMax { max: 2 }),
    ]);
    let mut s = MetricsSnapshot::empty("h", "1");
    s.autoscale = c.autoscale.clone().into_iter().collect();
    s.agents = vec![AgentRow {
        group: "g".into(),
        agent: "W".into(),
        wanted: 2,
        running: 3,
        file: 1,
    }];
    let text = render(&s);
    for l in [
        r#"orchestrator_autoscale_decisions_total{host="h",group="g",agent="W",direction="up",signal="cpu"} 2"#,
        r#"orchestrator_autoscale_decisions_total{host="h",group="g",agent="W",direction="down",signal="bounds"} 1"#,
        r#"orchestrator_agent_replicas{host="h",group="g",agent="W",state="wanted"} 2"#,
        r#"orchestrator_agent_replicas{host="h",group="g",agent="W",state="running"} 3"#,
        r#"orchestrator_agent_replicas{host="h",group="g",agent="W",state="file"} 1"#,
    ] {
        assert!(text.lines().any(|x| x == l), "{l} missing from\n{text}");
    }
}

#[test]
fn mps_profiles_read_memory_and_compute_share() {
    assert_eq!(mps_profile(4 << 30, 2_500), "4g/25%");
    assert_eq!(mps_profile(1536 << 20, 1_250), "1536m/12.5%");
}

#[test]
fn the_text_has_one_header_per_family_every_sample_labelled_with_the_host() {
    let mut s = MetricsSnapshot::empty("pc\"2", "1.2.3");
    s.replicas = vec![
        replica("g", "A", 0, "running"),
        replica("g", "A", 1, "backing_off"),
    ];
    s.failures = vec![("g".into(), "A".into(), "exited", 4)];
    s.groups = vec![GroupRow {
        group: "g".into(),
        started: true,
        ready: false,
        wanted: 2,
        running: 1,
        healthy: 1,
    }];
    let text = render(&s);

    // The host's quote is escaped on every line.
    for l in lines(&text) {
        assert!(l.contains("{host=\"pc\\\"2\""), "{l}");
    }
    let mut families = std::collections::BTreeSet::new();
    for l in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = l.split_whitespace().nth(2).unwrap();
        assert!(families.insert(name.to_string()), "{name} declared twice");
        assert!(name.starts_with("orchestrator_"), "{name}");
    }
    let has = |l: &str| text.lines().any(|x| x == l);
    assert!(has(
        r#"orchestrator_build_info{host="pc\"2",version="1.2.3"} 1"#
    ));
    assert!(has(
        r#"orchestrator_agent_up{host="pc\"2",group="g",agent="A",replica="1"} 0"#
    ));
    assert!(has(
        r#"orchestrator_agent_state{host="pc\"2",group="g",agent="A",replica="1",state="backing_off"} 1"#
    ));
    assert!(has(
        r#"orchestrator_agent_state{host="pc\"2",group="g",agent="A",replica="1",state="running"} 0"#
    ));
    assert!(has(
        r#"orchestrator_agent_failures_total{host="pc\"2",group="g",agent="A",reason="exited"} 4"#
    ));
    assert!(has(
        r#"orchestrator_group_agents{host="pc\"2",group="g",state="wanted"} 2"#
    ));
    assert!(has(
        r#"orchestrator_reconcile_duration_seconds_bucket{host="pc\"2",le="+Inf"} 0"#
    ));
    // Eight states per replica, one of them 1.
    let states: Vec<&str> = lines(&text)
        .into_iter()
        .filter(|l| l.starts_with("orchestrator_agent_state{") && l.contains("replica=\"0\""))
        .collect();
    assert_eq!(states.len(), 8);
    assert_eq!(states.iter().filter(|l| l.ends_with(" 1")).count(), 1);
    // No peers yet: no peer families at all.
    assert!(!text.contains("orchestrator_peer_"));
}

#[test]
/// Infinite values are written as the `prometheus` crate's encoder writes
/// them (`inf`, `-inf`), which Prometheus' text parser reads as infinities
/// (Go's `strconv.ParseFloat`; `promtool check metrics` accepts them).
fn slo_series_carry_window_labels_and_infinite_burns() {
    let mut s = MetricsSnapshot::empty("h", "v");
    s.slos = vec![SloRow {
        group: "g".into(),
        slo: Sli::ErrorRate,
        objective: 1.0,
        events: 10,
        errors: 1,
        windows: vec![("5m".into(), 0.1, f64::INFINITY)],
        budget_remaining: Some(f64::NEG_INFINITY),
    }];
    s.peers = vec![PeerRow {
        peer: "pc2".into(),
        state: "suspect",
        heartbeat_age_seconds: Some(1.5),
        messages_in: 3,
        messages_out: 4,
        decode_errors: 0,
        refused: vec![("impostor", 2), ("command", 0)],
    }];
    s.strangers = vec![("unknown_key", 5)];
    let text = render(&s);
    let has = |l: &str| text.lines().any(|x| x == l);
    assert!(has(
        r#"orchestrator_slo_burn_rate{host="h",group="g",slo="error_rate",window="5m"} inf"#
    ));
    assert!(has(
        r#"orchestrator_slo_error_budget_remaining_ratio{host="h",group="g",slo="error_rate"} -inf"#
    ));
    assert!(has(
        r#"orchestrator_slo_sli_error_ratio{host="h",group="g",slo="error_rate",window="5m"} 0.1"#
    ));
    assert!(has(r#"orchestrator_peer_up{host="h",peer="pc2"} 0"#));
    assert!(has(
        r#"orchestrator_peer_state{host="h",peer="pc2",state="suspect"} 1"#
    ));
    assert!(has(
        r#"orchestrator_federation_messages_total{host="h",peer="pc2",direction="out"} 4"#
    ));
    // What the `OrchestratorPeerRefused` alert reads: by peer and reason,
    // strangers with an empty peer.
    assert!(has(
        r#"orchestrator_federation_refused_total{host="h",peer="pc2",reason="impostor"} 2"#
    ));
    assert!(has(
        r#"orchestrator_federation_refused_total{host="h",peer="pc2",reason="command"} 0"#
    ));
    assert!(has(
        r#"orchestrator_federation_refused_total{host="h",peer="",reason="unknown_key"} 5"#
    ));
}
