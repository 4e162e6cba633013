//! What survives a daemon restart and what operators are told about it:
//! restart counts restored from the state, GPU slice notes only when a
//! slice really changes, dependents held by a crash loop saying so, and
//! a replica that will not be restarted saying that it stays down.

use std::collections::BTreeMap;

use super::*;
use crate::gpu::{GpuInfo, GpuRequest, ReplicaKey, SliceRequest};
use crate::model::*;
use crate::units::{ByteSize, Duration, Percent};

/// One group `g` with these `(agent, depends_on)`, one replica each, all required.
fn config(agents: &[(&str, &[&str])]) -> HostConfig {
    let mut defaults = AgentDefaults {
        image: Some("img".into()),
        ..AgentDefaults::default()
    };
    defaults.restart.backoff.jitter = Percent::whole(0);
    let agents = agents
        .iter()
        .map(|(a, deps)| Agent {
            name: a.to_string(),
            group: "g".into(),
            image: "img".into(),
            command: None,
            env: BTreeMap::new(),
            ports: vec![],
            volumes: vec![],
            depends_on: deps.iter().map(|s| s.to_string()).collect(),
            gpu: None,
            restart: defaults.restart.clone(),
            health: defaults.health.clone(),
            resources: Resources::default(),
            security: Security::default(),
            replicas: 1,
            required: true,
            labels: BTreeMap::new(),
            stop_timeout: Duration::from_secs(10),
            config: None,
            script_path: None,
            secrets: vec![],
            autoscale: None,
            gpu_over_limit: Default::default(),
        })
        .collect();
    HostConfig {
        host: HostInfo {
            name: "h".into(),
            labels: BTreeMap::new(),
        },
        defaults,
        gpus: vec![],
        groups: vec![Group {
            name: "g".into(),
            description: None,
            depends_on: vec![],
            slo: None,
            rollout: Default::default(),
            // Readiness at once: `min_healthy` has tests of its own.
            min_healthy: Duration::ZERO,
            agents,
        }],
        runtime: RuntimeSettings::defaults_for("h"),
        federation: None,
        metrics: MetricsSettings::default(),
        control: ControlSettings::default(),
        secrets: BTreeMap::new(),
    }
}

fn hashes(c: &HostConfig) -> BTreeMap<String, String> {
    c.agents()
        .map(|a| (a.name.clone(), format!("{}-v1", a.name)))
        .collect()
}

fn k(agent: &str) -> ReplicaKey {
    ReplicaKey::new(agent, 0)
}

fn running(id: &str, agent: &str) -> ContainerFacts {
    ContainerFacts {
        id: id.into(),
        config_hash: format!("{agent}-v1"),
        status: ContainerStatus::Running,
        started_at_ms: 1_000_000,
        gpu_slice: None,
    }
}

/// Completes every operation in flight with a running container `c-<agent>-<now>`.
fn finish_ops(s: &mut Supervisor, now: Millis) -> Vec<Outcome> {
    let busy: Vec<(ReplicaKey, OpKind)> = s
        .replicas()
        .filter_map(|r| r.op.map(|op| (r.key.clone(), op)))
        .collect();
    busy.into_iter()
        .map(|(key, op)| {
            let container = match op {
                OpKind::Stop | OpKind::Remove => None,
                OpKind::Start | OpKind::Restart => s.replica(&key).and_then(|r| {
                    r.container.clone().map(|mut c| {
                        c.status = ContainerStatus::Running;
                        c
                    })
                }),
                _ => Some(running(&format!("c-{}-{now}", key.agent), &key.agent)),
            };
            s.handle(
                now,
                Input::OpFinished {
                    key,
                    op,
                    result: Ok(OpSuccess {
                        container,
                        slice: None,
                    }),
                },
            )
        })
        .collect()
}

fn die(s: &mut Supervisor, now: Millis, agent: &str, code: i64) -> Outcome {
    let id = s
        .replica(&k(agent))
        .and_then(|r| r.container.as_ref())
        .map(|c| c.id.clone())
        .unwrap_or_default();
    s.handle(
        now,
        Input::ContainerDied {
            key: k(agent),
            id,
            code,
            oom: false,
            at_ms: 1_000_000 + now,
            seen_late_ms: 0,
        },
    )
}

fn started(c: HostConfig, persisted: Persisted) -> Supervisor {
    let h = hashes(&c);
    let mut s = Supervisor::new(c, h, persisted);
    s.handle(0, Input::Resync { containers: vec![] });
    s
}

// ---- restart counts ----

/// Crashes `agent` `n` times, restarting it after each backoff.
fn crash(s: &mut Supervisor, now: &mut Millis, agent: &str, n: u32) {
    for _ in 0..n {
        die(s, *now, agent, 1);
        *now += 3_600_000;
        s.tick(*now);
        finish_ops(s, *now);
    }
}

#[test]
fn restart_counts_are_written_when_they_change_and_come_back_at_a_restart() {
    let mut s = started(config(&[("A", &[])]), Persisted::default());
    s.start_group(0, "g").unwrap();
    finish_ops(&mut s, 0);
    let mut now = 0;
    die(&mut s, now, "A", 1);
    now += 3_600_000;
    let out = s.tick(now);
    assert!(out.persist, "a counted restart is state to write");
    finish_ops(&mut s, now);
    crash(&mut s, &mut now, "A", 2);
    assert_eq!(s.replica(&k("A")).unwrap().restarts_total, 3);
    let saved = s.persisted();
    assert_eq!(saved.restarts, BTreeMap::from([("A#0".to_string(), 3)]));

    // A new daemon: the count is back before Docker is even listed, and
    // adopting the running container does not count it again.
    let mut again = Supervisor::new(config(&[("A", &[])]), hashes(&config(&[("A", &[])])), saved);
    assert_eq!(again.replica(&k("A")).unwrap().restarts_total, 3);
    again.handle(
        0,
        Input::Resync {
            containers: vec![(k("A"), "g".into(), running("c-A", "A"))],
        },
    );
    assert_eq!(again.replica(&k("A")).unwrap().restarts_total, 3);
    die(&mut again, 0, "A", 1);
    again.tick(3_600_000);
    assert_eq!(again.replica(&k("A")).unwrap().restarts_total, 4);
    assert_eq!(again.persisted().restarts["A#0"], 4);
}

#[test]
fn restart_counts_restore_as_a_table() {
    // (saved entries, replica, expected count after start)
    type Case<'a> = (&'a [(&'a str, u64)], &'a str, u64);
    let cases: &[Case] = &[
        (&[], "A", 0),
        (&[("A#0", 17)], "A", 17),
        (&[("B#0", 5)], "A", 0),
        (&[("A#0", 17), ("B#0", 5)], "B", 5),
        // A key that names no replica (a removed agent, a bad number) is dropped.
        (&[("Gone#0", 9), ("A#x", 4)], "A", 0),
    ];
    for (saved, replica, want) in cases {
        let persisted = Persisted {
            started_groups: ["g".to_string()].into(),
            restarts: saved.iter().map(|(k, n)| (k.to_string(), *n)).collect(),
            ..Persisted::default()
        };
        let c = config(&[("A", &[]), ("B", &[])]);
        let s = Supervisor::new(c.clone(), hashes(&c), persisted);
        assert_eq!(
            s.replica(&k(replica)).unwrap().restarts_total,
            *want,
            "{saved:?} -> {replica}"
        );
        assert!(
            !s.persisted().restarts.contains_key("Gone#0"),
            "unknown agents are not carried on"
        );
    }
}

#[test]
fn a_stopped_group_keeps_its_restart_counts_until_it_starts_again() {
    let persisted = Persisted {
        restarts: BTreeMap::from([("A#0".to_string(), 7)]),
        ..Persisted::default()
    };
    let mut s = started(config(&[("A", &[])]), persisted);
    assert!(
        s.replica(&k("A")).is_none(),
        "not started, not in the table"
    );
    assert_eq!(s.persisted().restarts["A#0"], 7);
    s.start_group(0, "g").unwrap();
    assert_eq!(s.replica(&k("A")).unwrap().restarts_total, 7);
    finish_ops(&mut s, 0);
    s.stop_group(0, "g", false).unwrap();
    finish_ops(&mut s, 0);
    s.tick(0);
    assert!(s.replica(&k("A")).is_none());
    assert_eq!(s.persisted().restarts["A#0"], 7, "a stop forgets no count");
}

#[test]
fn state_files_without_restart_counts_still_load() {
    let old = r#"{"started_groups":["g"],"generation":3,"slices":{}}"#;
    let p: Persisted = serde_json::from_str(old).unwrap();
    assert!(p.restarts.is_empty());
    let text = serde_json::to_string(&Persisted::default()).unwrap();
    assert!(
        !text.contains("restarts"),
        "nothing written when none: {text}"
    );
}

// ---- GPU slice notes ----

fn mps(mem: u64, pct: u32) -> GpuRequest {
    GpuRequest::new(SliceRequest::Mps {
        memory: ByteSize::gib(mem),
        compute: Percent::whole(pct),
    })
}

fn rtx4090() -> Vec<GpuInfo> {
    vec![GpuInfo::from_class(
        0,
        "GPU-4090",
        crate::gpu::class_by_name("NVIDIA GeForce RTX 4090").unwrap(),
        false,
    )]
}

/// `A` asks for MIG (the 4090 has none) and falls back to MPS; `B` asks for MPS.
fn gpu_config() -> HostConfig {
    let mut c = config(&[("A", &[]), ("B", &[])]);
    let mig = GpuRequest::new(SliceRequest::Mig {
        profile: crate::gpu::MigProfileName::parse("3g.20gb").unwrap(),
    });
    c.groups[0].agents[0].gpu = Some(mig.with_fallback(mps(4, 20)));
    c.groups[0].agents[1].gpu = Some(mps(4, 20));
    c
}

fn slice_notes(out: &Outcome) -> Vec<String> {
    out.events
        .iter()
        .filter_map(|e| match e {
            SupervisorEvent::GpuNote {
                note: crate::planner::PlanNote::Dropped { replica, .. },
            } => Some(replica.to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_fallback_slice_kept_across_a_restart_is_not_reported_lost() {
    let mut s = started(gpu_config(), Persisted::default());
    s.handle(0, Input::Inventory { gpus: rtx4090() });
    let out = s.start_group(0, "g").unwrap().outcome;
    assert!(slice_notes(&out).is_empty());
    finish_ops(&mut s, 0);
    let a = s.replica(&k("A")).unwrap().slice.clone().unwrap();
    assert_eq!(s.replica(&k("A")).unwrap().slice_depth, 1);
    let saved = s.persisted();

    // The daemon restarts: A runs on its fallback, B's container is gone
    // and is planned again. A's slice is unchanged: nobody hears it is lost.
    let c = gpu_config();
    let mut s = Supervisor::new(c.clone(), hashes(&c), saved);
    assert_eq!(s.replica(&k("A")).unwrap().slice_depth, 1, "depth restored");
    let mut facts = running("c-A", "A");
    facts.gpu_slice = Some(a.describe());
    let mut events = Vec::new();
    events.extend(slice_notes(&s.handle(
        0,
        Input::Resync {
            containers: vec![(k("A"), "g".into(), facts)],
        },
    )));
    events.extend(slice_notes(
        &s.handle(0, Input::Inventory { gpus: rtx4090() }),
    ));
    events.extend(slice_notes(&s.start_group(0, "g").unwrap().outcome));
    for out in finish_ops(&mut s, 0) {
        events.extend(slice_notes(&out));
    }
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(s.replica(&k("A")).unwrap().slice.as_ref(), Some(&a));
}

#[test]
fn a_slice_planned_again_from_a_stale_depth_is_not_reported_lost() {
    // Even with a depth that does not match (a state from before depths
    // were restored), a plan that gives the same slice back says nothing
    // and corrects the depth.
    let mut s = started(gpu_config(), Persisted::default());
    s.handle(0, Input::Inventory { gpus: rtx4090() });
    s.start_group(0, "g").unwrap();
    finish_ops(&mut s, 0);
    let a = s.replica(&k("A")).unwrap().slice.clone().unwrap();
    if let Some(r) = s.replicas.get_mut(&k("A")) {
        r.slice_depth = 0;
        // Its container is gone: it is launched again.
        r.container = None;
        r.phase = Phase::Pending;
    }
    let out = s.tick(1);
    assert!(slice_notes(&out).is_empty(), "{:?}", out.events);
    assert_eq!(s.replica(&k("A")).unwrap().slice.as_ref(), Some(&a));
    assert_eq!(s.replica(&k("A")).unwrap().slice_depth, 1);
}

// ---- replicas that stay down ----

fn stays_down(out: &Outcome) -> Vec<(String, i64)> {
    out.events
        .iter()
        .filter_map(|e| match e {
            SupervisorEvent::AgentStaysDown { replica, code, .. } => {
                Some((replica.to_string(), *code))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn an_exit_the_policy_does_not_restart_says_the_replica_stays_down() {
    // (policy, exit code, stays down)
    let cases = [
        (RestartMode::OnFailure, 0, true),
        (RestartMode::OnFailure, 1, false),
        (RestartMode::Always, 0, false),
        (RestartMode::Never, 3, true),
    ];
    for (policy, code, down) in cases {
        let mut c = config(&[("A", &[])]);
        c.groups[0].agents[0].restart.policy = policy;
        let mut s = started(c, Persisted::default());
        s.start_group(0, "g").unwrap();
        finish_ops(&mut s, 0);
        let out = die(&mut s, 5, "A", code);
        let want = if down {
            vec![(k("A").to_string(), code)]
        } else {
            vec![]
        };
        assert_eq!(stays_down(&out), want, "{policy:?} exit {code}");
        assert_eq!(
            matches!(s.replica(&k("A")).unwrap().phase, Phase::Exited { .. }),
            down
        );
    }
}

#[test]
fn a_group_start_starts_a_replica_that_stayed_down_again() {
    // A clean exit under `on-failure` stays down until someone asks: a
    // `group start` (of the group, already started) brings it back, as
    // `docker compose up` starts an exited service.
    let mut c = config(&[("A", &[])]);
    c.groups[0].agents[0].restart.policy = RestartMode::OnFailure;
    let mut s = started(c, Persisted::default());
    s.start_group(0, "g").unwrap();
    finish_ops(&mut s, 0);
    die(&mut s, 5, "A", 0);
    assert!(matches!(
        s.replica(&k("A")).unwrap().phase,
        Phase::Exited { .. }
    ));
    // Time alone does nothing.
    s.tick(60_000);
    assert!(s.replica(&k("A")).unwrap().op.is_none());
    let out = s.start_group(60_000, "g").unwrap().outcome;
    assert!(
        out.actions
            .iter()
            .any(|a| matches!(a, Action::Start { key, .. } if key == &k("A"))),
        "{out:?}"
    );
    finish_ops(&mut s, 60_100);
    assert!(s.replica(&k("A")).unwrap().is_running());
}

#[test]
fn an_exit_before_the_start_was_reported_also_says_it_stays_down() {
    let mut c = config(&[("A", &[])]);
    c.groups[0].agents[0].restart.policy = RestartMode::OnFailure;
    let mut s = started(c, Persisted::default());
    s.start_group(0, "g").unwrap();
    let mut facts = running("c-A", "A");
    facts.status = ContainerStatus::Exited {
        code: 0,
        oom: false,
    };
    let out = s.handle(
        0,
        Input::OpFinished {
            key: k("A"),
            op: OpKind::Launch,
            result: Ok(OpSuccess {
                container: Some(facts),
                slice: None,
            }),
        },
    );
    assert_eq!(stays_down(&out), vec![(k("A").to_string(), 0)]);
}

#[test]
fn a_replica_stopped_on_purpose_does_not_say_it_stays_down() {
    let mut c = config(&[("A", &[])]);
    c.groups[0].agents[0].restart.policy = RestartMode::Never;
    let mut s = started(c, Persisted::default());
    s.start_group(0, "g").unwrap();
    finish_ops(&mut s, 0);
    let mut events = s.stop_group(0, "g", false).unwrap().outcome.events;
    events.extend(die(&mut s, 1, "A", 0).events);
    for out in finish_ops(&mut s, 1) {
        events.extend(out.events);
    }
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, SupervisorEvent::AgentStaysDown { .. })),
        "{events:?}"
    );
}

// ---- dependents held by a crash loop ----

#[test]
fn dependents_stopped_by_a_crash_loop_are_held_waiting_for_it() {
    // A <- B <- C: A crash-loops (5 restarts in its window).
    let mut s = started(
        config(&[("A", &[]), ("B", &["A"]), ("C", &["B"])]),
        Persisted::default(),
    );
    s.start_group(0, "g").unwrap();
    let mut now = 0;
    for key in ["A", "B", "C"] {
        finish_ops(&mut s, now);
        let id = s.replica(&k(key)).unwrap().container.clone().unwrap().id;
        s.handle(
            now,
            Input::Health {
                key: k(key),
                id,
                ok: true,
            },
        );
    }
    let mut held = Vec::new();
    for _ in 0..5 {
        let out = die(&mut s, now, "A", 1);
        held.extend(out.events);
        // Dependents stop, dependents of dependents first.
        for _ in 0..3 {
            for out in finish_ops(&mut s, now) {
                held.extend(out.events);
            }
        }
        now = s.next_deadline().unwrap_or(now);
        held.extend(s.tick(now).events);
        finish_ops(&mut s, now);
    }
    assert!(s.replica(&k("A")).unwrap().crashloop);
    let waiting = Phase::Held {
        waiting_for: vec![Wait::CrashLoop("A".into())],
    };
    assert_eq!(s.replica(&k("B")).unwrap().phase, waiting);
    assert_eq!(s.replica(&k("C")).unwrap().phase, waiting, "transitively");
    let said: Vec<String> = held
        .iter()
        .filter_map(|e| match e {
            SupervisorEvent::AgentHeld {
                replica,
                waiting_for,
                ..
            } if waiting_for == &[Wait::CrashLoop("A".into())] => Some(replica.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(said, ["C", "B"], "each says so once");
}

#[test]
fn a_reload_that_removes_an_agent_forgets_its_kept_restart_count() {
    let persisted = Persisted {
        restarts: BTreeMap::from([("A#0".to_string(), 7), ("B#0".to_string(), 2)]),
        ..Persisted::default()
    };
    let mut s = started(config(&[("A", &[]), ("B", &[])]), persisted);
    let c = config(&[("A", &[])]);
    s.reload(0, c.clone(), hashes(&c)).unwrap();
    assert_eq!(
        s.persisted().restarts,
        BTreeMap::from([("A#0".to_string(), 7)])
    );
}
