//! Group readiness with `min_healthy`: a group is ready only once every
//! replica of its required agents has stayed healthy that long.

use super::tests::{Harness, Spec, config, hashes, k};
use super::*;
use crate::model::HostConfig;
use crate::units::Duration;

const ONE: Spec = &[("g", &[], &[("A", &[], 1, true), ("Opt", &[], 1, false)])];

fn with_min_healthy(spec: Spec, secs: u64) -> HostConfig {
    let mut c = config(spec);
    for g in &mut c.groups {
        g.min_healthy = Duration::from_secs(secs);
    }
    c
}

fn ready_events(out: &Outcome) -> Vec<String> {
    out.events
        .iter()
        .filter_map(|e| match e {
            SupervisorEvent::GroupReady { group } => Some(group.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_group_is_ready_only_after_its_replicas_stay_healthy_for_min_healthy() {
    let mut h = Harness::of(with_min_healthy(ONE, 5));
    h.cmd(|s| s.start_group(0, "g").unwrap());
    h.finish_ops();
    h.now = 1_000;
    let out = h.healthy(k("A"));
    assert!(ready_events(&out).is_empty(), "ready at once: {out:?}");
    assert!(!h.s.group_ready("g"));
    assert_eq!(h.s.group_phase("g"), GroupPhase::Starting);
    // Healthy, and only the time is missing.
    assert_eq!(h.s.group_ready_at("g"), Some(6_000));
    assert_eq!(h.s.next_deadline(), Some(6_000));

    let out = h.at(5_999);
    assert!(ready_events(&out).is_empty());
    let out = h.at(6_000);
    assert_eq!(ready_events(&out), vec!["g".to_string()]);
    assert!(h.s.group_ready("g"));
    assert_eq!(h.s.group_phase("g"), GroupPhase::Ready);
    // Said once: later ticks do not repeat it.
    assert!(ready_events(&h.at(60_000)).is_empty());
}

#[test]
fn an_optional_agent_does_not_delay_readiness() {
    let mut h = Harness::of(with_min_healthy(ONE, 5));
    h.cmd(|s| s.start_group(0, "g").unwrap());
    h.finish_ops();
    h.healthy(k("A"));
    // The optional agent becomes healthy later; readiness is dated from A.
    h.now = 4_000;
    h.healthy(k("Opt"));
    assert_eq!(ready_events(&h.at(5_000)), vec!["g".to_string()]);
}

#[test]
fn a_crash_within_min_healthy_starts_the_clock_over() {
    let mut h = Harness::of(with_min_healthy(ONE, 5));
    h.cmd(|s| s.start_group(0, "g").unwrap());
    h.finish_ops();
    h.healthy(k("A"));
    h.now = 2_000;
    let out = h.die(k("A"), 1);
    assert!(ready_events(&out).is_empty());
    // No readiness deadline while A is down.
    assert_eq!(h.s.group_ready_at("g"), None);
    // Restarted after its backoff, healthy again at 3 s.
    h.at(2_200);
    h.finish_ops();
    h.now = 3_000;
    h.healthy(k("A"));
    assert!(
        ready_events(&h.at(7_999)).is_empty(),
        "dated from the first health"
    );
    assert_eq!(ready_events(&h.at(8_000)), vec!["g".to_string()]);
}

#[test]
fn once_ready_a_group_stays_ready_while_healthy_and_waits_again_after_a_failure() {
    let mut h = Harness::of(with_min_healthy(ONE, 5));
    h.cmd(|s| s.start_group(0, "g").unwrap());
    h.finish_ops();
    h.healthy(k("A"));
    h.at(5_000);
    assert!(h.s.group_ready("g"));
    // Another healthy probe changes nothing.
    h.now = 6_000;
    h.healthy(k("A"));
    assert!(h.s.group_ready("g"));
    // Unhealthy (3 failures): degraded, not ready.
    h.now = 40_000;
    for _ in 0..3 {
        h.unhealthy(k("A"));
    }
    assert!(!h.s.group_ready("g"));
    assert_eq!(h.s.group_phase("g"), GroupPhase::Degraded);
    // Healthy again: still degraded until min_healthy has passed again.
    h.now = 41_000;
    h.healthy(k("A"));
    assert_eq!(h.s.group_phase("g"), GroupPhase::Degraded);
    assert_eq!(ready_events(&h.at(46_000)), vec!["g".to_string()]);
}

#[test]
fn a_dependent_group_waits_for_its_dependency_to_be_ready() {
    const TWO: Spec = &[
        ("base", &[], &[("A", &[], 1, true)]),
        ("top", &["base"], &[("B", &[], 1, true)]),
    ];
    let mut h = Harness::of(with_min_healthy(TWO, 5));
    h.cmd(|s| s.start_group(0, "top").unwrap());
    h.finish_ops();
    h.healthy(k("A"));
    h.take_log();
    // Healthy but not yet ready: the dependent group does not start.
    h.at(4_999);
    h.finish_ops();
    assert!(
        h.s.replica(&k("B")).is_none_or(|r| !r.is_running()),
        "B started before base was ready"
    );
    let out = h.at(5_000);
    assert_eq!(ready_events(&out), vec!["base".to_string()]);
    h.finish_ops();
    assert!(
        h.s.replica(&k("B")).is_some_and(|r| r.is_running()),
        "B starts once base is ready: {:?}",
        h.take_log()
    );
}

/// A supervisor that resumes a started group `g` whose container of A
/// Docker says started at `started_at_ms` (Unix ms); the wall clock says
/// `wall_at_zero` at the supervisor's time zero (0: not told).
fn resumed(started_at_ms: u64, wall_at_zero: u64) -> Supervisor {
    let c = with_min_healthy(&[("g", &[], &[("A", &[], 1, true)])], 5);
    let h = hashes(&c, "v1");
    let persisted = Persisted {
        started_groups: ["g".to_string()].into(),
        ..Persisted::default()
    };
    let mut s = Supervisor::new(c, h, persisted);
    if wall_at_zero > 0 {
        s.set_wall_origin(wall_at_zero);
    }
    let facts = ContainerFacts {
        id: "c-A".into(),
        config_hash: "A-v1".into(),
        status: ContainerStatus::Running,
        started_at_ms,
        gpu_slice: None,
    };
    s.handle(
        0,
        Input::Resync {
            containers: vec![(k("A"), "g".into(), facts)],
        },
    );
    s
}

/// A's first probe passes at `now`.
fn passes_at(s: &mut Supervisor, now: Millis) -> Outcome {
    s.handle(
        now,
        Input::Health {
            key: k("A"),
            id: "c-A".into(),
            ok: true,
        },
    )
}

#[test]
fn a_container_adopted_at_a_restart_is_dated_from_its_start() {
    // Running for a minute when the daemon came back: ready at its first
    // passing probe, with no second wait (no `group_ready 0` after a
    // daemon restart).
    let wall = 1_700_000_000_000;
    let mut s = resumed(wall - 60_000, wall);
    let out = passes_at(&mut s, 300);
    assert_eq!(ready_events(&out), vec!["g".to_string()]);

    // Started two seconds before the daemon came back: three more to go.
    let mut s = resumed(wall - 2_000, wall);
    let out = passes_at(&mut s, 300);
    assert!(ready_events(&out).is_empty());
    assert_eq!(s.next_deadline(), Some(3_000));
    assert_eq!(ready_events(&s.tick(3_000)), vec!["g".to_string()]);
}

#[test]
fn without_a_wall_clock_or_a_start_time_an_adopted_container_waits_min_healthy() {
    let wall = 1_700_000_000_000;
    for mut s in [resumed(wall - 60_000, 0), resumed(0, wall)] {
        let out = passes_at(&mut s, 300);
        assert!(ready_events(&out).is_empty());
        assert_eq!(s.next_deadline(), Some(5_300));
    }
    // A start time after the wall clock's now (clocks apart): not trusted.
    let mut s = resumed(wall + 10_000, wall);
    let out = passes_at(&mut s, 300);
    assert!(ready_events(&out).is_empty());
}
