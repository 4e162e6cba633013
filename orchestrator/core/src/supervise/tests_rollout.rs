//! Rollouts: a changed agent replaced step by step, each step watched,
//! a failed step rolled back (or paused), an operator's pause and resume,
//! and the requests of a watched replica judged against the group's SLO.

use super::tests::{Harness, Spec, config, hashes};
use super::*;
use crate::gpu::ReplicaKey;
use crate::model::{Amount, HostConfig, Slo};
use crate::slo::RequestDelta;
use crate::units::{Duration, Percent};

const POOL: Spec = &[("g", &[], &[("Pool", &[], 2, true)])];
const WATCH: Millis = 30_000;

fn kr(agent: &str, r: u32) -> ReplicaKey {
    ReplicaKey::new(agent, r)
}

/// POOL replaced in place, one replica at a time (no surge replica).
fn in_place() -> HostConfig {
    let mut c = config(POOL);
    c.groups[0].rollout.max_surge = Amount::Count(0);
    c.groups[0].rollout.max_unavailable = Amount::Count(1);
    c
}

fn started(c: HostConfig) -> Harness {
    let mut h = Harness::of(c);
    h.cmd(|s| s.start_group(0, "g").unwrap());
    h.settle_healthy();
    h.take_log();
    h
}

/// Applies `c` with every agent's hash at `tag`.
fn apply(h: &mut Harness, c: HostConfig, tag: &str) -> Outcome {
    let hs = hashes(&c, tag);
    let now = h.now;
    h.cmd(|s| s.reload(now, c, hs).unwrap())
}

fn failed(out: &Outcome) -> Option<(StepFailure, Option<u64>)> {
    out.events.iter().find_map(|e| match e {
        SupervisorEvent::RolloutFailed {
            failure,
            rollback_to,
            ..
        } => Some((failure.clone(), *rollback_to)),
        _ => None,
    })
}

fn completed(out: &Outcome) -> bool {
    out.events
        .iter()
        .any(|e| matches!(e, SupervisorEvent::RolloutCompleted { .. }))
}

#[test]
fn a_good_version_is_replaced_one_watched_step_at_a_time_and_completes() {
    let mut h = started(in_place());
    let out = apply(&mut h, in_place(), "v2");
    assert!(out.events.contains(&SupervisorEvent::RolloutStarted {
        generation: 1,
        kind: RolloutKind::Apply,
        previous: 0,
        agents: vec!["Pool".into()],
    }));
    assert_eq!(h.take_log(), ["recreate Pool"]);
    h.finish_ops();
    h.healthy(kr("Pool", 0));
    assert!(h.take_log().is_empty(), "watched before the next step");
    assert_eq!(h.s.rollout_progress("Pool").in_step, 1);
    assert_eq!(h.s.next_deadline(), Some(WATCH));
    let out = h.at(WATCH);
    assert!(out.events.contains(&SupervisorEvent::RolloutStepDone {
        generation: 1,
        replica: kr("Pool", 0),
    }));
    assert_eq!(h.take_log(), ["recreate Pool#1"]);
    h.finish_ops();
    h.healthy(kr("Pool", 1));
    assert!(!completed(&h.at(2 * WATCH - 1)));
    let out = h.at(2 * WATCH);
    assert!(completed(&out));
    assert_eq!(out.rollback, None);
    let ro = h.s.rollout().unwrap();
    assert_eq!(ro.phase, RolloutPhase::Completed);
    assert_eq!(h.s.rollout_progress("Pool").done, 2);
    // Nothing more to wait for.
    assert_eq!(h.s.next_deadline(), None);
}

#[test]
fn a_new_replica_that_exits_while_watched_rolls_back_to_the_last_good_generation() {
    let mut h = started(in_place());
    apply(&mut h, in_place(), "v2");
    h.finish_ops();
    h.healthy(kr("Pool", 0));
    h.take_log();
    h.at(10_000);
    let out = h.die(kr("Pool", 0), 3);
    let (failure, to) = failed(&out).expect("the step fails");
    assert_eq!(failure.replica, kr("Pool", 0));
    assert_eq!(failure.group, "g");
    assert_eq!(failure.signal, Signal::Exited { code: 3 });
    assert_eq!(to, Some(0));
    assert_eq!(out.rollback, Some(RollbackAsk { from: 1, to: 0 }));
    assert!(matches!(
        h.s.rollout().unwrap().phase,
        RolloutPhase::RollingBack { .. }
    ));
    // The rollback: generation 0's config again, as a rollout of its own
    // that is not watched.
    let c = in_place();
    let hs = hashes(&c, "v1");
    let out = h.cmd(|s| {
        s.reload_as(10_000, c, hs, RolloutKind::Rollback { from: 1, to: 0 })
            .unwrap()
    });
    assert!(out.events.iter().any(|e| matches!(
        e,
        SupervisorEvent::RolloutStarted {
            generation: 2,
            kind: RolloutKind::Rollback { from: 1, to: 0 },
            agents,
            ..
        } if agents == &["Pool".to_string()]
    )));
    h.settle_healthy();
    let log = h.take_log();
    assert!(log.contains(&"recreate Pool".to_string()), "{log:?}");
    assert!(!log.contains(&"recreate Pool#1".to_string()), "{log:?}");
    let out = h.at(10_001);
    assert!(completed(&out) || h.s.rollout().unwrap().phase == RolloutPhase::Completed);
    for i in 0..2 {
        let c =
            h.s.replica(&kr("Pool", i))
                .unwrap()
                .container
                .clone()
                .unwrap();
        assert_eq!(c.config_hash, "Pool-v1");
    }
}

#[test]
fn without_auto_rollback_a_failed_step_pauses_until_resumed() {
    let mut c = in_place();
    c.groups[0].rollout.auto_rollback = false;
    let mut h = started(c.clone());
    apply(&mut h, c, "v2");
    h.finish_ops();
    h.healthy(kr("Pool", 0));
    h.take_log();
    let out = h.die(kr("Pool", 0), 1);
    assert_eq!(failed(&out).map(|f| f.1), Some(None));
    assert_eq!(out.rollback, None);
    assert_eq!(
        h.s.rollout().unwrap().phase.label(),
        "paused",
        "paused, not rolled back"
    );
    // The failed replica restarts as its policy says; no step goes on.
    h.at(WATCH * 3);
    h.settle_healthy();
    let log = h.take_log();
    assert!(!log.contains(&"recreate Pool#1".to_string()), "{log:?}");
    assert_eq!(
        h.s.pause_rollout(),
        Err(RolloutRefusal::AlreadyPaused { generation: 1 })
    );
    let now = h.now;
    let out = h.cmd(|s| s.resume_rollout(now).unwrap());
    assert!(
        out.events
            .contains(&SupervisorEvent::RolloutResumed { generation: 1 })
    );
    // The failed step's replica is watched afresh, then the next goes.
    h.at(now + WATCH);
    assert_eq!(h.take_log(), ["recreate Pool#1"]);
}

#[test]
fn an_operators_pause_holds_the_next_step_and_resume_lets_it_go() {
    let mut h = started(in_place());
    assert_eq!(h.s.pause_rollout(), Err(RolloutRefusal::NoRollout));
    apply(&mut h, in_place(), "v2");
    h.cmd(|s| s.pause_rollout().unwrap());
    assert_eq!(
        h.take_log(),
        ["recreate Pool"],
        "the step under way goes on"
    );
    h.finish_ops();
    h.healthy(kr("Pool", 0));
    h.at(WATCH * 2);
    assert!(h.take_log().is_empty(), "paused: no next step");
    let now = h.now;
    h.cmd(|s| s.resume_rollout(now).unwrap());
    assert_eq!(h.take_log(), ["recreate Pool#1"]);
    assert_eq!(
        h.s.resume_rollout(now),
        Err(RolloutRefusal::NotPaused { generation: 1 })
    );
}

#[test]
fn a_missing_image_fails_the_first_step_with_the_old_replicas_untouched() {
    let mut h = started(in_place());
    let old: Vec<String> = (0..2)
        .map(|i| {
            h.s.replica(&kr("Pool", i))
                .unwrap()
                .container
                .clone()
                .unwrap()
                .id
        })
        .collect();
    apply(&mut h, in_place(), "v2");
    assert_eq!(h.take_log(), ["recreate Pool"]);
    let out = h.apply(Input::ReplacementNotMade {
        key: kr("Pool", 0),
        error: LaunchError::ImageMissing {
            image: "img:v2".into(),
        },
    });
    let (failure, to) = failed(&out).unwrap();
    assert_eq!(
        failure.signal,
        Signal::NotLaunched(LaunchError::ImageMissing {
            image: "img:v2".into()
        })
    );
    assert_eq!(to, Some(0));
    for (i, id) in old.iter().enumerate() {
        let r = h.s.replica(&kr("Pool", i as u32)).unwrap();
        assert_eq!(r.container.as_ref().map(|c| &c.id), Some(id));
        assert!(r.is_running());
    }
    assert!(h.take_log().is_empty(), "nothing more of it goes out");
    // Without the old config to go back to, it stays paused.
    let out = h.s.rollback_not_made();
    assert!(
        out.events
            .contains(&SupervisorEvent::RolloutPaused { generation: 1 })
    );
    h.at(WATCH * 3);
    assert!(
        h.take_log().is_empty(),
        "paused: nothing more of it goes out"
    );
}

#[test]
fn a_new_replica_not_healthy_by_its_deadline_fails_its_step() {
    let mut c = in_place();
    c.groups[0].rollout.healthy_deadline = Duration::from_secs(60);
    let mut h = started(c.clone());
    apply(&mut h, c, "v2");
    h.finish_ops();
    assert_eq!(h.s.next_deadline(), Some(60_000));
    assert_eq!(failed(&h.at(59_999)), None);
    let (failure, _) = failed(&h.at(60_000)).unwrap();
    assert_eq!(
        failure.signal,
        Signal::NotHealthyInTime {
            deadline_ms: 60_000
        }
    );
}

fn with_error_slo() -> HostConfig {
    let mut c = in_place();
    c.groups[0].slo = Some(Slo {
        availability: None,
        latency_p99: None,
        error_rate: Some(Percent::from_basis_points(20)),
        window: Duration::from_secs(30 * 86_400),
    });
    c
}

fn requests(total: u64, errors: u64) -> RequestDelta {
    RequestDelta {
        requests: Some(total),
        errors: Some(errors),
        durations: None,
    }
}

#[test]
fn a_watched_replica_burning_its_error_budget_fails_its_step() {
    let mut h = started(with_error_slo());
    apply(&mut h, with_error_slo(), "v2");
    h.finish_ops();
    // Before it is healthy its answers are not judged.
    let out =
        h.s.rollout_requests(1_000, &kr("Pool", 0), &requests(100, 50));
    assert_eq!(failed(&out), None);
    h.healthy(kr("Pool", 0));
    // Too few to say anything.
    let out =
        h.s.rollout_requests(2_000, &kr("Pool", 0), &requests(10, 1));
    assert_eq!(failed(&out), None);
    // 10% errors against a 0.2% allowance: a burn of 50.
    let out =
        h.s.rollout_requests(3_000, &kr("Pool", 0), &requests(90, 9));
    let (failure, to) = failed(&out).unwrap();
    assert_eq!(to, Some(0));
    let Signal::SloBurn {
        sli,
        burn,
        threshold,
        requests,
        bad,
    } = failure.signal
    else {
        panic!("{failure:?}");
    };
    assert_eq!((sli, requests, bad), (crate::slo::Sli::ErrorRate, 100, 10));
    assert!((burn - 50.0).abs() < 1e-9, "{burn}");
    assert_eq!(threshold, PAGE_BURN);
}

#[test]
fn a_good_version_answering_well_is_not_paused() {
    let mut h = started(with_error_slo());
    apply(&mut h, with_error_slo(), "v2");
    h.finish_ops();
    h.healthy(kr("Pool", 0));
    h.take_log();
    // 1 error in 1000 is a burn of 0.5: well under a page.
    for t in 1..=10 {
        let out =
            h.s.rollout_requests(t * 1_000, &kr("Pool", 0), &requests(100, u64::from(t == 5)));
        assert_eq!(failed(&out), None);
    }
    h.at(WATCH);
    assert_eq!(h.take_log(), ["recreate Pool#1"]);
}

#[test]
fn a_newer_apply_supersedes_a_rollout_and_goes_back_to_what_was_good_before_it() {
    let mut h = started(in_place());
    apply(&mut h, in_place(), "v2");
    h.finish_ops();
    let out = apply(&mut h, in_place(), "v3");
    assert!(out.events.iter().any(|e| matches!(
        e,
        SupervisorEvent::RolloutStarted {
            generation: 2,
            previous: 0,
            ..
        }
    )));
    assert_eq!(
        h.s.rollout().unwrap().generation,
        2,
        "the new rollout is the one shown"
    );
}

#[test]
fn with_a_surge_a_new_replica_serves_before_any_old_one_goes_and_leaves_at_the_end() {
    // The defaults: max_surge 1, max_unavailable 0.
    let mut h = started(config(POOL));
    apply(&mut h, config(POOL), "v2");
    // First the surge replica, with the new config; no old one touched.
    assert_eq!(h.take_log(), ["launch Pool#2"]);
    h.finish_ops();
    h.healthy(kr("Pool", 2));
    assert!(h.take_log().is_empty(), "watched before any old one goes");
    let serving = |h: &Harness| {
        h.s.replicas()
            .filter(|r| r.is_running() && r.op.is_none() && h.s.replica_healthy(r))
            .count()
    };
    h.at(WATCH);
    assert_eq!(h.take_log(), ["recreate Pool"]);
    // While Pool is replaced, two others serve.
    assert_eq!(serving(&h), 2);
    h.finish_ops();
    h.healthy(kr("Pool", 0));
    h.at(2 * WATCH);
    assert_eq!(h.take_log(), ["recreate Pool#1"]);
    assert_eq!(serving(&h), 2);
    h.finish_ops();
    h.healthy(kr("Pool", 1));
    // Every replica runs the new config: the surge replica goes.
    let out = h.at(3 * WATCH);
    assert_eq!(h.take_log(), ["stop Pool#2"]);
    assert!(completed(&out) || h.s.rollout().unwrap().phase == RolloutPhase::Completed);
    h.finish_ops();
    assert_eq!(h.s.replicas().filter(|r| r.container.is_some()).count(), 2);
}

#[test]
fn a_surge_replica_that_fails_rolls_back_and_is_stopped() {
    let mut h = started(config(POOL));
    apply(&mut h, config(POOL), "v2");
    assert_eq!(h.take_log(), ["launch Pool#2"]);
    h.finish_ops();
    h.healthy(kr("Pool", 2));
    let out = h.die(kr("Pool", 2), 1);
    let (failure, to) = failed(&out).unwrap();
    assert_eq!((failure.replica, to), (kr("Pool", 2), Some(0)));
    // The old replicas were never touched.
    let c = config(POOL);
    let hs = hashes(&c, "v1");
    h.cmd(|s| {
        s.reload_as(10, c, hs, RolloutKind::Rollback { from: 1, to: 0 })
            .unwrap()
    });
    let log = h.take_log();
    assert!(
        log.contains(&"remove Pool#2".to_string()) || log.contains(&"stop Pool#2".to_string()),
        "{log:?}"
    );
    assert!(!log.iter().any(|l| l.starts_with("recreate")), "{log:?}");
}

#[test]
fn a_paused_rollout_does_not_try_its_surge_replica_again() {
    let mut c = config(POOL);
    c.groups[0].rollout.auto_rollback = false;
    let mut h = started(c.clone());
    apply(&mut h, c, "v2");
    assert_eq!(h.take_log(), ["launch Pool#2"]);
    let out = h.apply(Input::OpFinished {
        key: kr("Pool", 2),
        op: OpKind::Launch,
        result: Err(LaunchError::ImageMissing {
            image: "img:v2".into(),
        }),
    });
    let (failure, to) = failed(&out).unwrap();
    assert_eq!((failure.replica, to), (kr("Pool", 2), None));
    // Long past any backoff: nothing is launched while it is paused.
    h.at(10 * WATCH);
    assert!(h.take_log().is_empty());
    // Resumed, the surge replica is tried again.
    let now = h.now;
    h.cmd(|s| s.resume_rollout(now).unwrap());
    assert_eq!(h.take_log(), ["launch Pool#2"]);
}
