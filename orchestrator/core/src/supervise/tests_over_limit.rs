//! `gpu.over_limit`: measured GPU memory over a replica's limit, as the
//! supervisor acts on it (the episodes themselves: `over_limit`'s tests).

use super::tests::{self, Harness, k};
use super::*;
use crate::model::{OverLimit, RestartMode};
use crate::over_limit::{GpuMemory, MemoryUse};

const G: u64 = 1 << 30;

const ONE: tests::Spec = &[("g", &[], &[("A", &[], 1, true), ("B", &[], 1, true)])];

fn harness(action: OverLimit) -> Harness {
    let mut c = tests::config(ONE);
    for g in &mut c.groups {
        for a in &mut g.agents {
            a.gpu_over_limit = action;
        }
    }
    let mut h = Harness::of(c);
    h.cmd(|s| s.start_group(0, "g").unwrap());
    h.settle_healthy();
    h.take_log();
    h
}

/// GPU 0's reading: A uses `used` of a 4g limit, B 1g of 4g.
fn reading(used: u64) -> Input {
    Input::GpuMemory {
        gpus: vec![GpuMemory {
            gpu_index: 0,
            gpu_uuid: "GPU-0".into(),
            replicas: vec![
                MemoryUse {
                    replica: k("A"),
                    used_bytes: used,
                    limit_bytes: Some(4 * G),
                },
                MemoryUse {
                    replica: k("B"),
                    used_bytes: G,
                    limit_bytes: Some(4 * G),
                },
            ],
        }],
    }
}

fn over_event(action: OverLimit) -> SupervisorEvent {
    SupervisorEvent::AgentGpuOverLimit {
        replica: k("A"),
        group: "g".into(),
        gpu_index: 0,
        gpu_uuid: "GPU-0".into(),
        used_bytes: 5 * G,
        limit_bytes: 4 * G,
        action,
    }
}

fn restart_reasons(out: &Outcome) -> Vec<RestartReason> {
    out.events
        .iter()
        .filter_map(|e| match e {
            SupervisorEvent::AgentRestarting { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect()
}

#[test]
fn warn_says_it_once_per_episode_and_restarts_nothing() {
    let mut h = harness(OverLimit::Warn);
    let out = h.apply(reading(5 * G));
    assert_eq!(out.events, vec![over_event(OverLimit::Warn)]);
    assert!(h.take_log().is_empty());
    // Still over: the same episode.
    assert!(h.apply(reading(5 * G)).events.is_empty());
    // Back under, then over again: a new one.
    assert!(h.apply(reading(3 * G)).events.is_empty());
    let out = h.apply(reading(5 * G));
    assert_eq!(out.events, vec![over_event(OverLimit::Warn)]);
    assert!(h.take_log().is_empty());
    assert_eq!(h.s.replica(&k("A")).unwrap().restarts_total, 0);
}

#[test]
fn restart_restarts_the_replica_with_its_reason() {
    let mut h = harness(OverLimit::Restart);
    let out = h.apply(reading(5 * G));
    assert_eq!(out.events[0], over_event(OverLimit::Restart));
    assert_eq!(restart_reasons(&out), [RestartReason::GpuMemoryExceeded]);
    assert_eq!(h.take_log(), ["restart A"]);
    assert!(out.persist, "restart counts are state");
    let a = h.s.replica(&k("A")).unwrap();
    assert_eq!((a.failures, a.restarts_total), (1, 1));
    // B, under its limit, is left alone.
    assert_eq!(h.s.replica(&k("B")).unwrap().restarts_total, 0);
    // A reading taken while the restart is in flight decides nothing.
    assert!(h.apply(reading(5 * G)).events.is_empty());
    h.finish_ops();
    assert!(h.take_log().is_empty());
}

#[test]
fn repeated_overs_reach_a_crash_loop_as_crashes_do() {
    let mut h = harness(OverLimit::Restart);
    let limit = h.s.agents["A"].restart.crashloop.restarts;
    let mut crash_loops = 0;
    for i in 0..limit {
        h.now += 1_000;
        let out = h.apply(reading(5 * G));
        assert_eq!(
            restart_reasons(&out),
            [RestartReason::GpuMemoryExceeded],
            "over #{i}"
        );
        crash_loops += out
            .events
            .iter()
            .filter(|e| matches!(e, SupervisorEvent::AgentCrashLoop { .. }))
            .count();
        h.finish_ops();
        h.healthy(k("A"));
    }
    assert_eq!(crash_loops, 1);
    assert!(h.s.replica(&k("A")).unwrap().crashloop);
    assert_eq!(
        h.take_log(),
        vec!["restart A"; usize::try_from(limit).unwrap()]
    );
}

#[test]
fn a_restart_policy_of_never_only_warns() {
    let mut c = tests::config(ONE);
    for g in &mut c.groups {
        for a in &mut g.agents {
            a.gpu_over_limit = OverLimit::Restart;
            a.restart.policy = RestartMode::Never;
        }
    }
    let mut h = Harness::of(c);
    h.cmd(|s| s.start_group(0, "g").unwrap());
    h.settle_healthy();
    h.take_log();
    let out = h.apply(reading(5 * G));
    assert_eq!(out.events, vec![over_event(OverLimit::Restart)]);
    assert!(h.take_log().is_empty());
}

#[test]
fn no_reading_of_the_gpu_decides_nothing() {
    let mut h = harness(OverLimit::Restart);
    let out = h.apply(Input::GpuMemory { gpus: vec![] });
    assert_eq!(out, Outcome::default());
    assert!(h.take_log().is_empty());
}

#[test]
fn a_replica_that_is_not_running_is_not_judged() {
    let mut h = harness(OverLimit::Restart);
    h.cmd(|s| s.restart_agent(0, "g", "A").unwrap());
    assert_eq!(h.take_log(), ["restart A"]);
    let out = h.apply(reading(5 * G));
    assert!(out.events.is_empty());
    h.finish_ops();
    // Running again: judged again.
    let out = h.apply(reading(5 * G));
    assert_eq!(restart_reasons(&out), [RestartReason::GpuMemoryExceeded]);
}
