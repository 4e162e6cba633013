//! `scale`: a replica count set at run time, kept in the state, bounded by
//! the agent's autoscale limits and host ports, and given up to an apply
//! that changes the agent's count.

use super::tests::{Harness, Spec, config, hashes};
use super::*;
use crate::gpu::ReplicaKey;
use crate::model::{Autoscale, HostConfig, PortMapping, Protocol};
use crate::units::Duration;

const ONE: Spec = &[("g", &[], &[("A", &[], 1, true)])];

fn running(h: &Harness, agent: &str) -> Vec<u32> {
    h.s.replicas()
        .filter(|r| r.key.agent == agent && r.is_running())
        .map(|r| r.key.replica)
        .collect()
}

fn started() -> Harness {
    let mut h = Harness::new(ONE);
    h.cmd(|s| s.start_group(0, "g").unwrap());
    h.settle_healthy();
    h.take_log();
    h
}

#[test]
fn scaling_up_starts_new_replicas_and_down_stops_the_highest() {
    let mut h = started();
    let out = h.cmd(|s| s.scale_agent(0, "g", "A", Some(3)).unwrap());
    assert!(out.events.contains(&SupervisorEvent::AgentScaled {
        agent: "A".into(),
        group: "g".into(),
        from: 1,
        to: 3,
        reset: false,
    }));
    assert!(out.persist, "the count is state");
    assert_eq!(h.take_log(), ["launch A#1", "launch A#2"]);
    h.settle_healthy();
    assert_eq!(running(&h, "A"), [0, 1, 2]);
    assert_eq!(h.s.replica_count("A"), 3);
    assert_eq!(h.s.scaled("A"), Some(3));
    assert_eq!(h.s.persisted().scale.get("A"), Some(&3));

    h.cmd(|s| s.scale_agent(0, "g", "A", Some(1)).unwrap());
    let log = h.take_log();
    assert!(log.contains(&"stop A#2".to_string()), "{log:?}");
    assert!(log.contains(&"stop A#1".to_string()), "{log:?}");
    h.settle_healthy();
    assert_eq!(running(&h, "A"), [0]);
}

#[test]
fn a_reset_goes_back_to_the_files_count_and_forgets_the_override() {
    let mut h = started();
    h.cmd(|s| s.scale_agent(0, "g", "A", Some(2)).unwrap());
    h.settle_healthy();
    let out = h.cmd(|s| s.scale_agent(0, "g", "A", None).unwrap());
    assert!(out.events.contains(&SupervisorEvent::AgentScaled {
        agent: "A".into(),
        group: "g".into(),
        from: 2,
        to: 1,
        reset: true,
    }));
    h.settle_healthy();
    assert_eq!(running(&h, "A"), [0]);
    assert_eq!(h.s.scaled("A"), None);
    assert!(h.s.persisted().scale.is_empty());
}

#[test]
fn the_count_survives_a_restart_of_the_daemon() {
    let c = config(ONE);
    let persisted = Persisted {
        started_groups: ["g".to_string()].into(),
        scale: [("A".to_string(), 3)].into(),
        ..Persisted::default()
    };
    let mut s = Supervisor::new(c.clone(), hashes(&c, "v1"), persisted);
    let out = s.handle(0, Input::Resync { containers: vec![] });
    let launched: Vec<&ReplicaKey> = out
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Launch { key, .. } => Some(key),
            _ => None,
        })
        .collect();
    assert_eq!(launched.len(), 3, "{:?}", out.actions);
    assert_eq!(s.scaled("A"), Some(3));
    // An agent the file no longer has is forgotten.
    let gone = Persisted {
        scale: [("Gone".to_string(), 2)].into(),
        ..Persisted::default()
    };
    let s = Supervisor::new(c.clone(), hashes(&c, "v1"), gone);
    assert!(s.persisted().scale.is_empty());
}

#[test]
fn an_apply_that_changes_the_agents_count_takes_over_and_one_that_does_not_keeps_it() {
    let mut h = started();
    h.cmd(|s| s.scale_agent(0, "g", "A", Some(3)).unwrap());
    h.settle_healthy();
    // Same file again (a change elsewhere, or none): the override holds.
    let c = config(ONE);
    h.cmd(|s| s.reload(0, c.clone(), hashes(&c, "v1")).unwrap());
    h.settle_healthy();
    assert_eq!(running(&h, "A"), [0, 1, 2]);
    assert_eq!(h.s.scaled("A"), Some(3));
    // The file now says 2: the file wins and the override is gone.
    let c = config(&[("g", &[], &[("A", &[], 2, true)])]);
    let mut rescaled = Vec::new();
    h.cmd(|s| {
        let done = s.reload(0, c.clone(), hashes(&c, "v1")).unwrap();
        rescaled = done.changed.rescaled.clone();
        done
    });
    assert_eq!(
        rescaled,
        [("A".to_string(), 3, 2)],
        "a count change is said"
    );
    h.settle_healthy();
    assert_eq!(running(&h, "A"), [0, 1]);
    assert_eq!(h.s.scaled("A"), None);
}

#[test]
fn counts_the_agent_cannot_run_with_are_refused_and_change_nothing() {
    let mut c = config(ONE);
    let a = &mut c.groups[0].agents[0];
    a.autoscale = Some(Autoscale {
        min: 1,
        max: 4,
        cpu: None,
        gpu_util: None,
        metric: None,
        latency_slo: false,
        up_after: Duration::from_secs(15),
        down_after: Duration::from_secs(300),
        reverse_after: Duration::from_secs(300),
    });
    a.ports = vec![PortMapping {
        host_ip: None,
        host_port: Some(9000),
        host_port_end: Some(9002),
        container_port: 8080,
        protocol: Protocol::Tcp,
    }];
    let mut fixed = config(ONE);
    fixed.groups[0].agents[0].ports = vec![PortMapping {
        host_ip: None,
        host_port: Some(9000),
        host_port_end: None,
        container_port: 8080,
        protocol: Protocol::Tcp,
    }];
    let refusal = |c: &HostConfig, n: u32| {
        let mut s = Supervisor::new(c.clone(), hashes(c, "v1"), Persisted::default());
        let before = s.persisted();
        let e = s.scale_agent(0, "g", "A", Some(n)).unwrap_err();
        assert_eq!(s.persisted(), before, "nothing changed");
        assert_eq!(s.replica_count("A"), 1);
        match e {
            CommandError::Scale { why, asked, .. } => {
                assert_eq!(asked, n);
                why
            }
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(refusal(&c, 5), ScaleRefusal::OutOfBounds { min: 1, max: 4 });
    assert_eq!(refusal(&c, 0), ScaleRefusal::OutOfBounds { min: 1, max: 4 });
    assert_eq!(
        refusal(&c, 4),
        ScaleRefusal::PortRangeTooSmall {
            first: 9000,
            last: 9002
        }
    );
    assert_eq!(
        refusal(&fixed, 2),
        ScaleRefusal::FixedHostPort { port: 9000 }
    );
    assert_eq!(
        refusal(&config(ONE), crate::model::MAX_REPLICAS + 1),
        ScaleRefusal::TooMany {
            max: crate::model::MAX_REPLICAS
        }
    );
    // Within every bound: accepted.
    let mut s = Supervisor::new(c.clone(), hashes(&c, "v1"), Persisted::default());
    assert_eq!(s.scale_agent(0, "g", "A", Some(3)).unwrap().changed, (1, 3));
    // Names that are not there.
    assert!(matches!(
        s.scale_agent(0, "g", "Nope", Some(2)),
        Err(CommandError::UnknownAgent { .. })
    ));
    assert!(matches!(
        s.scale_agent(0, "other", "A", Some(2)),
        Err(CommandError::UnknownAgent { .. })
    ));
}

#[test]
fn an_autoscalers_count_keeps_its_decision_until_an_operator_sets_one() {
    use crate::autoscale::{Cause, Decision, Signal};
    let mut h = started();
    let cause = Cause::Signal {
        signal: Signal::Cpu,
        value: 150.0,
        target: 50.0,
        recommended: 3,
        bounded: false,
    };
    let decision = Decision {
        from: 1,
        to: 3,
        cause,
    };
    let out = h.cmd(|s| s.autoscale_agent(0, "g", "A", decision).unwrap());
    assert!(out.events.contains(&SupervisorEvent::AgentAutoscaled {
        agent: "A".into(),
        group: "g".into(),
        from: 1,
        to: 3,
        cause,
    }));
    assert!(out.persist, "the count is state");
    assert_eq!(h.take_log(), ["launch A#1", "launch A#2"]);
    assert_eq!(h.s.autoscaled("A"), Some(Some(&decision)));
    let saved = h.s.persisted();
    assert_eq!(saved.scale.get("A"), Some(&3));
    assert!(saved.autoscaled.contains("A"));

    // A new daemon knows the count is the autoscaler's, not why.
    let c = config(ONE);
    let s = Supervisor::new(c.clone(), hashes(&c, "v1"), saved);
    assert_eq!((s.scaled("A"), s.autoscaled("A")), (Some(3), Some(None)));

    // An operator's count is the operator's.
    h.settle_healthy();
    h.cmd(|s| s.scale_agent(0, "g", "A", Some(2)).unwrap());
    assert_eq!(h.s.autoscaled("A"), None);
    assert!(h.s.persisted().autoscaled.is_empty());
}
