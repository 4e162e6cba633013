//! The supervision rules, checked as data: feed inputs, compare the exact
//! actions and events that come out.

use std::collections::BTreeMap;

use super::*;
use crate::gpu::ReplicaKey;
use crate::model::*;
use crate::units::{Duration, Percent};

/// `(group, group deps, [(agent, agent deps, replicas, required)])`
pub(super) type Spec<'a> = &'a [(
    &'a str,
    &'a [&'a str],
    &'a [(&'a str, &'a [&'a str], u32, bool)],
)];

pub(super) fn config(spec: Spec) -> HostConfig {
    let mut defaults = AgentDefaults {
        image: Some("img".into()),
        ..AgentDefaults::default()
    };
    defaults.health.probe = Probe::Http {
        port: 8080,
        path: "/health".into(),
    };
    defaults.health.start_period = Duration::from_secs(30);
    defaults.restart.backoff.jitter = Percent::whole(0);
    let groups = spec
        .iter()
        .map(|(g, gdeps, agents)| Group {
            name: g.to_string(),
            description: None,
            depends_on: gdeps.iter().map(|s| s.to_string()).collect(),
            slo: None,
            rollout: Default::default(),
            // Readiness at once: `min_healthy` has tests of its own.
            min_healthy: Duration::ZERO,
            agents: agents
                .iter()
                .map(|(a, deps, replicas, required)| Agent {
                    name: a.to_string(),
                    group: g.to_string(),
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
                    replicas: *replicas,
                    required: *required,
                    labels: BTreeMap::new(),
                    stop_timeout: Duration::from_secs(10),
                    config: None,
                    script_path: None,
                    secrets: vec![],
                    autoscale: None,
                    gpu_over_limit: Default::default(),
                })
                .collect(),
        })
        .collect();
    HostConfig {
        host: HostInfo {
            name: "h".into(),
            labels: BTreeMap::new(),
        },
        defaults,
        gpus: vec![],
        groups,
        runtime: RuntimeSettings::defaults_for("h"),
        federation: None,
        metrics: MetricsSettings::default(),
        control: ControlSettings::default(),
        secrets: BTreeMap::new(),
    }
}

pub(super) fn hashes(c: &HostConfig, tag: &str) -> BTreeMap<String, String> {
    c.agents()
        .map(|a| (a.name.clone(), format!("{}-{tag}", a.name)))
        .collect()
}

pub(super) fn k(agent: &str) -> ReplicaKey {
    ReplicaKey::new(agent, 0)
}

fn kr(agent: &str, r: u32) -> ReplicaKey {
    ReplicaKey::new(agent, r)
}

/// Plays the daemon's executor: containers get ids `c-<agent>-<replica>-<n>`.
pub(super) struct Harness {
    pub(super) s: Supervisor,
    pub(super) now: Millis,
    next_id: u32,
    log: Vec<String>,
}

impl Harness {
    pub(super) fn new(spec: Spec) -> Self {
        Self::of(config(spec))
    }

    pub(super) fn of(c: HostConfig) -> Self {
        let h = hashes(&c, "v1");
        let mut s = Supervisor::new(c, h, Persisted::default());
        let out = s.handle(0, Input::Resync { containers: vec![] });
        assert_eq!(out.events, vec![SupervisorEvent::DockerUp]);
        Harness {
            s,
            now: 0,
            next_id: 0,
            log: vec![],
        }
    }

    fn hash(&self, agent: &str) -> String {
        self.s.config_hash(agent).unwrap().to_string()
    }

    fn record(&mut self, out: &Outcome) {
        for a in &out.actions {
            let line = match a {
                Action::Launch {
                    key,
                    replace: None,
                    start: false,
                    ..
                } => format!("create {key}"),
                Action::Launch {
                    key, replace: None, ..
                } => format!("launch {key}"),
                Action::Launch {
                    key,
                    replace: Some(_),
                    ..
                } => format!("recreate {key}"),
                Action::Start { key, .. } => format!("start {key}"),
                Action::Restart { key, .. } => format!("restart {key}"),
                Action::Stop { key, .. } => format!("stop {key}"),
                Action::Remove { key, .. } => format!("remove {key}"),
                Action::DestroyMig {
                    gpu_index, gi_id, ..
                } => {
                    format!("destroy mig {gpu_index}/{gi_id}")
                }
                Action::WatchHealth { .. } | Action::UnwatchHealth { .. } => {
                    continue;
                }
            };
            self.log.push(line);
        }
    }

    pub(super) fn take_log(&mut self) -> Vec<String> {
        std::mem::take(&mut self.log)
    }

    pub(super) fn apply(&mut self, input: Input) -> Outcome {
        let out = self.s.handle(self.now, input);
        self.record(&out);
        out
    }

    pub(super) fn cmd<O: Into<Outcome>>(
        &mut self,
        f: impl FnOnce(&mut Supervisor) -> O,
    ) -> Outcome {
        let out = f(&mut self.s).into();
        self.record(&out);
        out
    }

    fn container(&mut self, agent: &str, replica: u32) -> ContainerFacts {
        self.next_id += 1;
        ContainerFacts {
            id: format!("c-{agent}-{replica}-{}", self.next_id),
            config_hash: self.hash(agent),
            status: ContainerStatus::Running,
            started_at_ms: 1_000_000 + self.now,
            gpu_slice: None,
        }
    }

    /// Completes every operation in flight successfully.
    pub(super) fn finish_ops(&mut self) {
        let busy: Vec<(ReplicaKey, OpKind)> = self
            .s
            .replicas()
            .filter_map(|r| r.op.map(|op| (r.key.clone(), op)))
            .collect();
        for (key, op) in busy {
            let container = match op {
                OpKind::Stop | OpKind::Remove => None,
                OpKind::Start | OpKind::Restart => {
                    let mut c = self.s.replica(&key).unwrap().container.clone().unwrap();
                    c.status = ContainerStatus::Running;
                    Some(c)
                }
                OpKind::Launch | OpKind::Recreate => Some(self.container(&key.agent, key.replica)),
                OpKind::Create => {
                    let mut c = self.container(&key.agent, key.replica);
                    c.status = ContainerStatus::Created;
                    Some(c)
                }
            };
            self.apply(Input::OpFinished {
                key,
                op,
                result: Ok(OpSuccess {
                    container,
                    slice: None,
                }),
            });
        }
    }

    fn id(&self, key: &ReplicaKey) -> String {
        self.s
            .replica(key)
            .unwrap()
            .container
            .as_ref()
            .unwrap()
            .id
            .clone()
    }

    pub(super) fn healthy(&mut self, key: ReplicaKey) -> Outcome {
        let id = self.id(&key);
        self.apply(Input::Health { key, id, ok: true })
    }

    pub(super) fn unhealthy(&mut self, key: ReplicaKey) -> Outcome {
        let id = self.id(&key);
        self.apply(Input::Health { key, id, ok: false })
    }

    pub(super) fn die(&mut self, key: ReplicaKey, code: i64) -> Outcome {
        let id = self.id(&key);
        let at_ms = 1_000_000 + self.now;
        self.apply(Input::ContainerDied {
            key,
            id,
            code,
            oom: false,
            at_ms,
            seen_late_ms: 0,
        })
    }

    pub(super) fn at(&mut self, now: Millis) -> Outcome {
        self.now = now;
        let out = self.s.tick(now);
        self.record(&out);
        out
    }

    pub(super) fn phase(&self, key: &ReplicaKey) -> Phase {
        self.s.replica(key).unwrap().phase.clone()
    }

    /// Finishes ops and reports every running replica healthy, until quiet.
    pub(super) fn settle_healthy(&mut self) {
        for _ in 0..20 {
            self.finish_ops();
            let unhealthy: Vec<ReplicaKey> = self
                .s
                .replicas()
                .filter(|r| r.is_running() && r.health != Health::Healthy && r.op.is_none())
                .map(|r| r.key.clone())
                .collect();
            if unhealthy.is_empty() && self.s.replicas().all(|r| r.op.is_none()) {
                return;
            }
            for key in unhealthy {
                self.healthy(key);
            }
        }
        panic!("did not settle");
    }
}

const CHAIN: Spec = &[(
    "core",
    &[],
    &[
        ("Registry", &[], 1, true),
        ("Twin", &["Registry"], 1, true),
        ("Api", &["Twin"], 1, true),
    ],
)];

#[test]
fn a_group_starts_in_dependency_order_gated_on_health() {
    let mut h = Harness::new(CHAIN);
    let out = h.cmd(|s| s.start_group(0, "core").unwrap());
    // The held ones are created at once and started when ready.
    assert_eq!(
        h.take_log(),
        ["launch Registry", "create Twin", "create Api"]
    );
    assert!(out.persist);
    assert_eq!(
        h.phase(&k("Twin")),
        Phase::Held {
            waiting_for: vec![Wait::Agent("Registry".into())]
        }
    );
    h.finish_ops();
    assert!(
        h.take_log().is_empty(),
        "Twin must wait for Registry to be healthy"
    );
    h.healthy(k("Registry"));
    assert_eq!(h.take_log(), ["start Twin"]);
    h.finish_ops();
    h.healthy(k("Twin"));
    assert_eq!(h.take_log(), ["start Api"]);
    h.finish_ops();
    let out = h.healthy(k("Api"));
    assert!(out.events.contains(&SupervisorEvent::GroupReady {
        group: "core".into()
    }));
}

#[test]
fn independent_agents_start_together() {
    let mut h = Harness::new(&[(
        "g",
        &[],
        &[
            ("A", &[], 1, true),
            ("B", &[], 1, true),
            ("C", &["A", "B"], 1, true),
        ],
    )]);
    h.cmd(|s| s.start_group(0, "g").unwrap());
    assert_eq!(h.take_log(), ["launch A", "launch B", "create C"]);
}

#[test]
fn starting_a_group_starts_the_groups_it_needs_first() {
    let mut h = Harness::new(&[
        ("infra", &[], &[("Registry", &[], 1, true)]),
        ("apps", &[], &[("Web", &["Registry"], 1, true)]),
    ]);
    let out = h.cmd(|s| s.start_group(0, "apps").unwrap());
    assert_eq!(
        out.events[..2],
        [
            SupervisorEvent::GroupStarting {
                group: "infra".into()
            },
            SupervisorEvent::GroupStarting {
                group: "apps".into()
            }
        ]
    );
    assert_eq!(h.take_log(), ["launch Registry", "create Web"]);
    assert_eq!(
        h.s.started_groups().iter().collect::<Vec<_>>(),
        ["apps", "infra"]
    );
}

#[test]
fn replicas_of_one_agent_start_together_and_each_counts_for_readiness() {
    let mut h = Harness::new(&[(
        "g",
        &[],
        &[("Pool", &[], 3, true), ("User", &["Pool"], 1, true)],
    )]);
    h.cmd(|s| s.start_group(0, "g").unwrap());
    assert_eq!(
        h.take_log(),
        [
            "launch Pool",
            "launch Pool#1",
            "launch Pool#2",
            "create User"
        ]
    );
    h.finish_ops();
    h.healthy(kr("Pool", 0));
    h.healthy(kr("Pool", 1));
    assert!(h.take_log().is_empty());
    h.healthy(kr("Pool", 2));
    assert_eq!(h.take_log(), ["start User"]);
}

#[test]
fn an_optional_dependency_never_holds() {
    let mut h = Harness::new(&[(
        "g",
        &[],
        &[("Cache", &[], 1, false), ("Api", &["Cache"], 1, true)],
    )]);
    h.cmd(|s| s.start_group(0, "g").unwrap());
    assert_eq!(h.take_log(), ["launch Cache", "launch Api"]);
}

#[test]
fn a_crash_restarts_after_an_exponential_backoff() {
    let mut h = Harness::new(&[("g", &[], &[("A", &[], 1, true)])]);
    h.cmd(|s| s.start_group(0, "g").unwrap());
    h.settle_healthy();
    h.take_log();
    // Backoff: none for the first exit of a healthy replica, then 100ms
    // doubling from the second failure on (the restarted replica is not
    // healthy again in between), capped at 60s (builtin defaults, jitter
    // off here).
    let mut expected_delays = vec![];
    let mut delays = vec![];
    for attempt in 1..=12u32 {
        let out = h.die(k("A"), 3);
        let ev = out
            .events
            .iter()
            .find_map(|e| match e {
                SupervisorEvent::AgentRestarting {
                    in_ms, attempt: a, ..
                } => Some((*in_ms, *a)),
                _ => None,
            })
            .unwrap();
        assert_eq!(ev.1, attempt);
        delays.push(ev.0);
        if attempt == 1 {
            expected_delays.push(0);
            assert_eq!(h.take_log(), ["start A"], "restarted at once");
            h.finish_ops();
            continue;
        }
        expected_delays.push((100u64 << (attempt - 1)).min(60_000));
        let until = h.now + ev.0;
        h.at(until - 1);
        assert!(h.take_log().is_empty(), "restarted before its backoff");
        h.at(until);
        assert_eq!(h.take_log(), ["start A"]);
        h.finish_ops();
    }
    assert_eq!(delays, expected_delays);
}

#[test]
fn a_stable_replica_forgets_its_failures() {
    let mut h = Harness::new(&[("g", &[], &[("A", &[], 1, true)])]);
    h.cmd(|s| s.start_group(0, "g").unwrap());
    h.settle_healthy();
    for _ in 0..3 {
        h.die(k("A"), 1);
        let until = h.s.next_deadline().unwrap_or(h.now);
        h.at(until);
        h.finish_ops();
    }
    assert_eq!(h.s.replica(&k("A")).unwrap().failures, 3);
    let t = h.now;
    h.healthy(k("A"));
    // The stability period defaults to the backoff's cap.
    let stable = h.s.stable_after("A");
    assert_eq!(stable, 60_000);
    assert_eq!(h.s.next_deadline(), Some(t + stable));
    h.at(t + stable - 1);
    assert_eq!(h.s.replica(&k("A")).unwrap().failures, 3);
    h.at(t + stable);
    assert_eq!(h.s.replica(&k("A")).unwrap().failures, 0);
    // Stable again: its next exit restarts at once, and the one after
    // that (before it was healthy again) waits the backoff's second step.
    let out = h.die(k("A"), 1);
    assert!(out.events.iter().any(|e| matches!(
        e,
        SupervisorEvent::AgentRestarting {
            in_ms: 0,
            attempt: 1,
            ..
        }
    )));
    h.finish_ops();
    let out = h.die(k("A"), 1);
    assert!(out.events.iter().any(|e| matches!(
        e,
        SupervisorEvent::AgentRestarting {
            in_ms: 200,
            attempt: 2,
            ..
        }
    )));
}

#[test]
fn restart_policies() {
    for (policy, code, restarts) in [
        (RestartMode::Always, 0, true),
        (RestartMode::Always, 1, true),
        (RestartMode::OnFailure, 0, false),
        (RestartMode::OnFailure, 137, true),
        (RestartMode::Never, 1, false),
    ] {
        let mut c = config(&[("g", &[], &[("A", &[], 1, true)])]);
        c.groups[0].agents[0].restart.policy = policy;
        let hs = hashes(&c, "v1");
        let mut h = Harness::new(&[("g", &[], &[("A", &[], 1, true)])]);
        h.s = Supervisor::new(c, hs, Persisted::default());
        h.s.handle(0, Input::Resync { containers: vec![] });
        h.cmd(|s| s.start_group(0, "g").unwrap());
        h.settle_healthy();
        h.take_log();
        h.die(k("A"), code);
        let phase = h.phase(&k("A"));
        // A healthy replica's first exit restarts at once.
        assert_eq!(
            h.take_log() == ["start A"],
            restarts,
            "{policy:?} exit {code}: {phase:?}"
        );
        if !restarts {
            assert_eq!(phase, Phase::Exited { code });
            assert_eq!(h.s.next_deadline(), None);
        }
    }
}

#[test]
fn crash_loop_marks_holds_dependents_and_resequences_them_on_recovery() {
    let mut h = Harness::new(CHAIN);
    h.cmd(|s| s.start_group(0, "core").unwrap());
    h.settle_healthy();
    h.take_log();
    // Default crash-loop: 5 restarts within 10 minutes.
    let mut marked = None;
    for i in 1..=5 {
        let out = h.die(k("Registry"), 1);
        if out
            .events
            .iter()
            .any(|e| matches!(e, SupervisorEvent::AgentCrashLoop { .. }))
        {
            marked = Some(i);
            // Its dependents go down, dependents of dependents first.
            assert_eq!(h.take_log(), ["stop Api"]);
            h.finish_ops();
            assert_eq!(h.take_log(), ["stop Twin"]);
            h.finish_ops();
            break;
        }
        // The first exit of a healthy replica restarts at once.
        let until = h.s.next_deadline().unwrap_or(h.now);
        h.at(until);
        h.finish_ops();
        h.take_log();
    }
    assert_eq!(marked, Some(5));
    assert!(h.s.replica(&k("Registry")).unwrap().crashloop);
    // It keeps backing off while marked.
    let until = h.s.next_deadline().unwrap();
    h.at(until);
    assert_eq!(h.take_log(), ["start Registry"]);
    h.finish_ops();
    assert!(
        h.take_log().is_empty(),
        "dependents stay held while it is not healthy"
    );
    // Healthy is not recovered: it must stay healthy for its stability
    // period (the backoff's cap, 60 s here) first.
    let t = h.now;
    let out = h.healthy(k("Registry"));
    assert!(
        !out.events
            .iter()
            .any(|e| matches!(e, SupervisorEvent::AgentRecovered { .. })),
        "{:?}",
        out.events
    );
    assert!(h.s.replica(&k("Registry")).unwrap().crashloop);
    assert_eq!(h.s.next_deadline(), Some(t + 60_000));
    h.at(t + 59_999);
    assert!(h.take_log().is_empty(), "dependents stay held meanwhile");
    let out = h.at(t + 60_000);
    assert!(out.events.contains(&SupervisorEvent::AgentRecovered {
        replica: k("Registry"),
        group: "core".into()
    }));
    assert_eq!(h.take_log(), ["launch Twin", "create Api"]);
    h.finish_ops();
    h.healthy(k("Twin"));
    assert_eq!(h.take_log(), ["start Api"]);
}

#[test]
fn a_crash_loop_that_is_healthy_between_crashes_stays_marked_and_keeps_its_backoff() {
    let mut h = Harness::new(CHAIN);
    h.cmd(|s| s.start_group(0, "core").unwrap());
    h.settle_healthy();
    h.take_log();
    let mut loops = 0;
    let mut recovered = 0;
    let mut delays = Vec::new();
    // It crashes a second after every start, healthy in between, for 40
    // rounds: far more than the 5 restarts that mark it.
    for _ in 0..40 {
        let out = h.die(k("Registry"), 1);
        for e in &out.events {
            match e {
                SupervisorEvent::AgentCrashLoop { .. } => loops += 1,
                SupervisorEvent::AgentRestarting { in_ms, .. } => delays.push(*in_ms),
                _ => {}
            }
        }
        // Only its first exit (it was stable then) restarts at once.
        let until = h.s.next_deadline().unwrap_or(h.now);
        let out = h.at(until);
        recovered += out
            .events
            .iter()
            .filter(|e| matches!(e, SupervisorEvent::AgentRecovered { .. }))
            .count();
        h.finish_ops();
        let out = h.healthy(k("Registry"));
        recovered += out
            .events
            .iter()
            .filter(|e| matches!(e, SupervisorEvent::AgentRecovered { .. }))
            .count();
        let t = h.now + 1_000;
        let out = h.at(t);
        recovered += out
            .events
            .iter()
            .filter(|e| matches!(e, SupervisorEvent::AgentRecovered { .. }))
            .count();
    }
    assert_eq!(loops, 1, "marked once");
    assert_eq!(recovered, 0, "never recovered while it keeps crashing");
    assert!(h.s.replica(&k("Registry")).unwrap().crashloop);
    // Its dependents stayed down the whole time.
    assert!(
        h.take_log()
            .iter()
            .all(|l| l == "start Registry" || l == "stop Api" || l == "stop Twin"),
    );
    // The backoff grew to its cap and stayed there: no restart came early.
    assert_eq!(*delays.last().unwrap(), 60_000);
    assert!(delays.windows(2).all(|w| w[1] >= w[0]), "{delays:?}");
}

#[test]
fn unhealthy_after_retries_restarts_but_not_during_the_start_period() {
    let mut h = Harness::new(&[("g", &[], &[("A", &[], 1, true)])]);
    h.cmd(|s| s.start_group(0, "g").unwrap());
    h.finish_ops();
    h.take_log();
    for _ in 0..5 {
        h.unhealthy(k("A"));
    }
    assert!(
        h.take_log().is_empty(),
        "failures in the start period do not count"
    );
    h.now = 30_000;
    h.unhealthy(k("A"));
    h.unhealthy(k("A"));
    assert!(h.take_log().is_empty());
    let out = h.unhealthy(k("A"));
    assert!(out.events.contains(&SupervisorEvent::AgentUnhealthy {
        replica: k("A"),
        group: "g".into()
    }));
    assert_eq!(h.take_log(), ["restart A"]);
    assert_eq!(h.s.replica(&k("A")).unwrap().failures, 1);
}

#[test]
fn a_healthy_replica_that_fails_probes_counts_at_once() {
    let mut h = Harness::new(&[("g", &[], &[("A", &[], 1, true)])]);
    h.cmd(|s| s.start_group(0, "g").unwrap());
    h.settle_healthy();
    h.take_log();
    for _ in 0..3 {
        h.unhealthy(k("A"));
    }
    assert_eq!(h.take_log(), ["restart A"]);
}

#[test]
fn stopping_goes_in_reverse_dependency_order() {
    let mut h = Harness::new(CHAIN);
    h.cmd(|s| s.start_group(0, "core").unwrap());
    h.settle_healthy();
    h.take_log();
    h.cmd(|s| s.stop_group(0, "core", false).unwrap());
    assert_eq!(h.take_log(), ["stop Api"]);
    h.finish_ops();
    assert_eq!(h.take_log(), ["stop Twin"]);
    h.finish_ops();
    assert_eq!(h.take_log(), ["stop Registry"]);
    h.finish_ops();
    assert_eq!(h.s.replicas().count(), 0);
}

#[test]
fn a_group_others_need_is_not_stopped_unless_asked() {
    let mut h = Harness::new(&[
        ("infra", &[], &[("Registry", &[], 1, true)]),
        ("apps", &["infra"], &[("Web", &[], 1, true)]),
    ]);
    h.cmd(|s| s.start_group(0, "apps").unwrap());
    h.settle_healthy();
    h.take_log();
    let err = h.s.stop_group(0, "infra", false).unwrap_err();
    assert_eq!(
        err,
        CommandError::NeededBy {
            group: "infra".into(),
            needed_by: vec!["apps".into()],
            restart: false
        }
    );
    assert_eq!(
        h.s.started_groups().len(),
        2,
        "a refused command changes nothing"
    );
    h.cmd(|s| s.stop_group(0, "infra", true).unwrap());
    assert_eq!(
        h.take_log(),
        ["stop Web"],
        "apps names infra in depends_on: it stops first"
    );
    h.finish_ops();
    assert_eq!(h.take_log(), ["stop Registry"]);
}

#[test]
fn restarting_an_agent_goes_one_replica_at_a_time() {
    let mut h = Harness::new(&[("g", &[], &[("Pool", &[], 2, true)])]);
    h.cmd(|s| s.start_group(0, "g").unwrap());
    h.settle_healthy();
    h.take_log();
    h.cmd(|s| s.restart_agent(0, "g", "Pool").unwrap());
    assert_eq!(h.take_log(), ["restart Pool"]);
    h.finish_ops();
    assert!(
        h.take_log().is_empty(),
        "the second waits for the first to be healthy"
    );
    h.healthy(kr("Pool", 0));
    assert_eq!(h.take_log(), ["restart Pool#1"]);
    assert_eq!(
        h.s.restart_agent(0, "other", "Pool").unwrap_err(),
        CommandError::UnknownAgent {
            group: "other".into(),
            agent: "Pool".into()
        }
    );
}

#[test]
fn a_reload_recreates_only_changed_agents_one_replica_at_a_time() {
    let spec: Spec = &[("g", &[], &[("A", &[], 1, true), ("Pool", &["A"], 2, true)])];
    let mut h = Harness::new(spec);
    h.cmd(|s| s.start_group(0, "g").unwrap());
    h.settle_healthy();
    h.take_log();
    let mut c = config(spec);
    // In place, one at a time (no surge replica: `tests_rollout`).
    for g in &mut c.groups {
        g.rollout.max_surge = Amount::Count(0);
        g.rollout.max_unavailable = Amount::Count(1);
    }
    let mut hs = hashes(&c, "v1");
    hs.insert("Pool".into(), "Pool-v2".into());
    let out = h.cmd(|s| s.reload(0, c, hs).unwrap());
    assert!(out.events.contains(&SupervisorEvent::ConfigApplied {
        generation: 1,
        changed: vec!["Pool".into()]
    }));
    assert_eq!(h.take_log(), ["recreate Pool"]);
    h.finish_ops();
    assert!(h.take_log().is_empty());
    h.healthy(kr("Pool", 0));
    // Healthy, then watched for the rollout's `watch` (30 s by default).
    assert!(h.take_log().is_empty());
    h.at(29_999);
    assert!(h.take_log().is_empty());
    h.at(30_000);
    assert_eq!(h.take_log(), ["recreate Pool#1"]);
}

#[test]
fn a_reload_stops_removed_agents_and_starts_new_ones() {
    let mut h = Harness::new(&[("g", &[], &[("A", &[], 1, true), ("Old", &[], 1, true)])]);
    h.cmd(|s| s.start_group(0, "g").unwrap());
    h.settle_healthy();
    h.take_log();
    let c = config(&[("g", &[], &[("A", &[], 1, true), ("New", &["A"], 1, true)])]);
    let hs = hashes(&c, "v1");
    h.cmd(|s| s.reload(0, c, hs).unwrap());
    assert_eq!(h.take_log(), ["stop Old", "launch New"]);
    let other = config(&[("g", &[], &[])]);
    let mut wrong = other.clone();
    wrong.host.name = "elsewhere".into();
    assert!(matches!(
        h.s.reload(0, wrong, BTreeMap::new()),
        Err(CommandError::WrongHost { .. })
    ));
}

#[test]
fn adoption_keeps_running_containers_and_removes_duplicates() {
    let c = config(CHAIN);
    let hs = hashes(&c, "v1");
    let persisted = Persisted {
        started_groups: ["core".to_string()].into(),
        generation: 4,
        ..Persisted::default()
    };
    let mut s = Supervisor::new(c, hs, persisted);
    let facts = |id: &str, agent: &str, status| {
        (
            k(agent),
            "core".to_string(),
            ContainerFacts {
                id: id.into(),
                config_hash: format!("{agent}-v1"),
                status,
                started_at_ms: 0,
                gpu_slice: None,
            },
        )
    };
    let out = s.handle(
        1000,
        Input::Resync {
            containers: vec![
                facts("r1", "Registry", ContainerStatus::Running),
                facts(
                    "t-old",
                    "Twin",
                    ContainerStatus::Exited {
                        code: 137,
                        oom: false,
                    },
                ),
                facts("t1", "Twin", ContainerStatus::Running),
                facts("a1", "Api", ContainerStatus::Created),
            ],
        },
    );
    assert_eq!(
        out.actions,
        vec![
            Action::WatchHealth {
                key: k("Registry"),
                id: "r1".into()
            },
            Action::Remove {
                key: k("Twin"),
                id: "t-old".into()
            },
            Action::WatchHealth {
                key: k("Twin"),
                id: "t1".into()
            },
        ]
    );
    assert!(out.events.contains(&SupervisorEvent::DuplicateRemoved {
        replica: k("Twin"),
        container: "t-old".into()
    }));
    // Nothing is launched or restarted: the created Api waits for Twin to be healthy.
    assert_eq!(
        s.replica(&k("Api")).unwrap().phase,
        Phase::Held {
            waiting_for: vec![Wait::Agent("Twin".into())]
        }
    );
    assert_eq!(s.generation(), 4);
}

#[test]
fn adoption_restarts_what_died_unwatched_and_launches_what_is_missing() {
    let c = config(&[(
        "g",
        &[],
        &[
            ("A", &[], 1, true),
            ("B", &[], 1, true),
            ("C", &[], 1, true),
        ],
    )]);
    let hs = hashes(&c, "v1");
    let persisted = Persisted {
        started_groups: ["g".to_string()].into(),
        ..Persisted::default()
    };
    let mut s = Supervisor::new(c, hs, persisted);
    let out = s.handle(
        0,
        Input::Resync {
            containers: vec![(
                k("A"),
                "g".into(),
                ContainerFacts {
                    id: "a".into(),
                    config_hash: "A-v1".into(),
                    status: ContainerStatus::Exited {
                        code: 2,
                        oom: false,
                    },
                    started_at_ms: 0,
                    gpu_slice: None,
                },
            )],
        },
    );
    let ops: Vec<_> = out
        .actions
        .iter()
        .filter(|a| !matches!(a, Action::WatchHealth { .. } | Action::UnwatchHealth { .. }))
        .cloned()
        .collect();
    assert_eq!(
        ops,
        vec![
            Action::Start {
                key: k("A"),
                id: "a".into()
            },
            Action::Launch {
                key: k("B"),
                group: "g".into(),
                replace: None,
                slice: None,
                generation: 0,
                start: true,
            },
            Action::Launch {
                key: k("C"),
                group: "g".into(),
                replace: None,
                slice: None,
                generation: 0,
                start: true,
            },
        ]
    );
}

#[test]
fn containers_of_agents_no_longer_configured_are_removed() {
    let c = config(&[("g", &[], &[("A", &[], 1, true)])]);
    let hs = hashes(&c, "v1");
    let mut s = Supervisor::new(
        c,
        hs,
        Persisted {
            started_groups: ["g".to_string()].into(),
            ..Persisted::default()
        },
    );
    let out = s.handle(
        0,
        Input::Resync {
            containers: vec![
                (
                    k("A"),
                    "g".into(),
                    ContainerFacts {
                        id: "a".into(),
                        config_hash: "A-v1".into(),
                        status: ContainerStatus::Running,
                        started_at_ms: 0,
                        gpu_slice: None,
                    },
                ),
                (
                    k("Gone"),
                    "g".into(),
                    ContainerFacts {
                        id: "x".into(),
                        config_hash: "?".into(),
                        status: ContainerStatus::Running,
                        started_at_ms: 0,
                        gpu_slice: None,
                    },
                ),
            ],
        },
    );
    assert!(out.actions.contains(&Action::Stop {
        key: k("Gone"),
        id: "x".into()
    }));
    assert!(
        !out.actions
            .iter()
            .any(|a| matches!(a, Action::Launch { .. } | Action::Restart { .. }))
    );
}

#[test]
fn nothing_is_attempted_while_docker_is_down() {
    let mut h = Harness::new(&[("g", &[], &[("A", &[], 1, true), ("B", &[], 1, true)])]);
    h.cmd(|s| s.start_group(0, "g").unwrap());
    h.take_log();
    let out = h.apply(Input::DockerDown);
    assert_eq!(out.events, vec![SupervisorEvent::DockerDown]);
    // The launches in flight fail while Docker is down.
    for agent in ["A", "B"] {
        h.apply(Input::OpFinished {
            key: k(agent),
            op: OpKind::Launch,
            result: Err(LaunchError::DockerUnreachable {
                detail: "connection refused".into(),
            }),
        });
    }
    h.at(60_000);
    assert!(h.take_log().is_empty());
    assert_eq!(h.s.next_deadline().map(|d| d <= 60_000), Some(true));
    // A's launch had in fact created its container before the cut.
    let out = h.apply(Input::Resync {
        containers: vec![(
            k("A"),
            "g".into(),
            ContainerFacts {
                id: "a".into(),
                config_hash: "A-v1".into(),
                status: ContainerStatus::Running,
                started_at_ms: 0,
                gpu_slice: None,
            },
        )],
    });
    assert!(out.events.contains(&SupervisorEvent::DockerUp));
    assert_eq!(
        h.take_log(),
        ["launch B"],
        "A is adopted, not launched twice"
    );
}

fn missing() -> LaunchError {
    LaunchError::ImageMissing {
        image: "img".into(),
    }
}

#[test]
fn a_failed_launch_is_retried_after_its_backoff() {
    let mut h = Harness::new(&[("g", &[], &[("A", &[], 1, true)])]);
    h.cmd(|s| s.start_group(0, "g").unwrap());
    h.take_log();
    let out = h.apply(Input::OpFinished {
        key: k("A"),
        op: OpKind::Launch,
        result: Err(missing()),
    });
    assert!(out.events.contains(&SupervisorEvent::AgentFailed {
        replica: k("A"),
        group: "g".into(),
        reason: FailReason::Launch(missing())
    }));
    assert_eq!(
        h.phase(&k("A")),
        Phase::Failed {
            reason: FailReason::Launch(missing()),
            retry_at: 100
        }
    );
    h.at(99);
    assert!(h.take_log().is_empty());
    h.at(100);
    assert_eq!(h.take_log(), ["launch A"]);
}

#[test]
fn a_replacement_not_made_keeps_the_old_container_running_and_tries_again_later() {
    let spec: Spec = &[("g", &[], &[("A", &[], 1, true)])];
    let mut h = Harness::new(spec);
    h.cmd(|s| s.start_group(0, "g").unwrap());
    h.settle_healthy();
    h.take_log();
    let old = h.id(&k("A"));
    let good = config(spec);
    let mut bad = hashes(&good, "v1");
    bad.insert("A".into(), "A-v2".into());
    // A rollout that is not watched (a rollback's) tries again by itself;
    // a watched one fails its step (`tests_rollout`).
    h.cmd(|s| {
        s.reload_as(
            0,
            good.clone(),
            bad,
            RolloutKind::Rollback { from: 0, to: 0 },
        )
        .unwrap()
    });
    assert_eq!(h.take_log(), ["recreate A"]);
    let out = h.apply(Input::ReplacementNotMade {
        key: k("A"),
        error: missing(),
    });
    assert!(out.actions.contains(&Action::WatchHealth {
        key: k("A"),
        id: old.clone()
    }));
    assert!(matches!(
        out.events.as_slice(),
        [SupervisorEvent::AgentFailed { .. }, ..]
    ));
    let r = h.s.replica(&k("A")).unwrap();
    assert_eq!(
        r.container.as_ref().map(|c| c.id.as_str()),
        Some(old.as_str())
    );
    assert_eq!(r.phase, Phase::Running);
    assert!(!r.crashloop);
    assert!(h.s.group_ready("g"), "the old replica still serves");
    // Not again at once; again at the backoff's end, each wait longer
    // than the one before, however long the old one has been healthy.
    let mut waits = Vec::new();
    for _ in 0..3 {
        let retry = h.s.next_deadline().unwrap();
        assert!(retry > h.now);
        waits.push(retry - h.now);
        h.at(retry - 1);
        assert!(h.take_log().is_empty());
        h.at(retry);
        assert_eq!(h.take_log(), ["recreate A"]);
        h.apply(Input::ReplacementNotMade {
            key: k("A"),
            error: missing(),
        });
    }
    assert!(waits.windows(2).all(|w| w[1] > w[0]), "{waits:?}");
    // Long past the stability period, the old one healthy all along: the
    // count (and the backoff) still grows.
    let later = h.now + 2 * h.s.stable_after("A");
    h.at(later);
    assert_eq!(h.take_log(), ["recreate A"]);
    h.apply(Input::ReplacementNotMade {
        key: k("A"),
        error: missing(),
    });
    let wait = h.s.next_deadline().unwrap() - h.now;
    assert!(wait > *waits.last().unwrap(), "{wait} after {waits:?}");
    // Back to the old config: nothing to replace, nothing scheduled.
    let hs = hashes(&good, "v1");
    let now = h.now;
    h.cmd(|s| s.reload(now, good, hs).unwrap());
    assert!(h.take_log().is_empty());
    // Healthy all along, and nothing to replace: its count is forgotten.
    assert_eq!(h.s.replica(&k("A")).unwrap().failures, 0);
    assert_eq!(h.s.next_deadline(), None);
}

#[test]
fn a_failed_replacement_leaves_the_replica_down_backing_off_and_a_good_reload_recovers_it() {
    let spec: Spec = &[("g", &[], &[("A", &[], 1, true)])];
    let mut h = Harness::new(spec);
    h.cmd(|s| s.start_group(0, "g").unwrap());
    h.settle_healthy();
    h.take_log();
    let mut good = config(spec);
    for g in &mut good.groups {
        g.rollout.max_surge = Amount::Count(0);
        g.rollout.max_unavailable = Amount::Count(1);
    }
    let mut bad = hashes(&good, "v1");
    bad.insert("A".into(), "A-v2".into());
    h.cmd(|s| s.reload(0, good.clone(), bad).unwrap());
    assert_eq!(h.take_log(), ["recreate A"]);
    // The replacement removed the old container, then could not create one.
    let out = h.apply(Input::OpFinished {
        key: k("A"),
        op: OpKind::Recreate,
        result: Err(missing()),
    });
    assert!(out.actions.contains(&Action::UnwatchHealth { key: k("A") }));
    let r = h.s.replica(&k("A")).unwrap();
    assert!(
        r.container.is_none(),
        "no container is reported after a failed replacement"
    );
    assert!(!h.s.replica_healthy(r));
    assert!(!h.s.group_ready("g"));
    assert_eq!(h.s.group_counts("g"), (1, 0, 0));
    // Every further failure backs off longer and counts towards a crash loop.
    let mut delays = vec![];
    for _ in 0..4 {
        let Phase::Failed { retry_at, .. } = h.phase(&k("A")) else {
            panic!("not failed: {:?}", h.phase(&k("A")));
        };
        delays.push(retry_at - h.now);
        h.at(retry_at);
        assert_eq!(
            h.take_log(),
            ["launch A"],
            "a new container, not a start of the old id"
        );
        h.apply(Input::OpFinished {
            key: k("A"),
            op: OpKind::Launch,
            result: Err(missing()),
        });
    }
    assert_eq!(delays, [100, 200, 400, 800]);
    assert!(h.s.replica(&k("A")).unwrap().crashloop);
    // The previous good file again: the replica comes back.
    let Phase::Failed { retry_at, .. } = h.phase(&k("A")) else {
        panic!()
    };
    let now = h.now;
    h.cmd(|s| s.reload(now, good.clone(), hashes(&good, "v1")).unwrap());
    h.at(retry_at);
    h.settle_healthy();
    assert!(h.s.group_ready("g") || h.s.replica(&k("A")).unwrap().crashloop);
    let r = h.s.replica(&k("A")).unwrap();
    assert!(h.s.replica_healthy(r));
    assert_eq!(r.container.as_ref().unwrap().config_hash, "A-v1");
}

#[test]
fn a_start_of_a_container_docker_no_longer_has_creates_a_new_one() {
    let mut h = Harness::new(&[("g", &[], &[("A", &[], 1, true)])]);
    h.cmd(|s| s.start_group(0, "g").unwrap());
    h.settle_healthy();
    h.take_log();
    let id = h.id(&k("A"));
    let out = h.die(k("A"), 1);
    let delay = out
        .events
        .iter()
        .find_map(|e| match e {
            SupervisorEvent::AgentRestarting { in_ms, .. } => Some(*in_ms),
            _ => None,
        })
        .unwrap();
    h.at(delay);
    assert_eq!(h.take_log(), ["start A"]);
    // Removed behind the supervisor's back in the meantime.
    h.apply(Input::OpFinished {
        key: k("A"),
        op: OpKind::Start,
        result: Err(LaunchError::ContainerGone { id }),
    });
    assert!(h.s.replica(&k("A")).unwrap().container.is_none());
    let Phase::Failed { retry_at, .. } = h.phase(&k("A")) else {
        panic!("not failed: {:?}", h.phase(&k("A")));
    };
    h.at(retry_at);
    assert_eq!(h.take_log(), ["launch A"]);
    h.settle_healthy();
    assert!(h.s.group_ready("g"));
}

#[test]
fn restarting_a_group_stops_it_then_starts_it_in_order() {
    let mut h = Harness::new(CHAIN);
    h.cmd(|s| s.start_group(0, "core").unwrap());
    h.settle_healthy();
    h.take_log();
    h.cmd(|s| s.restart_group(0, "core", false).unwrap());
    assert_eq!(h.take_log(), ["stop Api"]);
    h.finish_ops();
    h.finish_ops();
    h.finish_ops();
    assert_eq!(
        h.take_log(),
        [
            "stop Twin",
            "stop Registry",
            "launch Registry",
            "create Twin",
            "create Api"
        ]
    );
    assert!(h.s.group_wanted("core"));
}

#[test]
fn events_and_late_reports_for_old_containers_are_ignored() {
    let mut h = Harness::new(&[("g", &[], &[("A", &[], 1, true)])]);
    h.cmd(|s| s.start_group(0, "g").unwrap());
    h.settle_healthy();
    h.take_log();
    let out = h.apply(Input::ContainerDied {
        key: k("A"),
        id: "someone-else".into(),
        code: 1,
        oom: false,
        at_ms: 0,
        seen_late_ms: 0,
    });
    assert!(out.events.is_empty() && h.take_log().is_empty());
    let out = h.apply(Input::Health {
        key: k("A"),
        id: "someone-else".into(),
        ok: false,
    });
    assert!(out.events.is_empty());
    let out = h.apply(Input::OpFinished {
        key: k("A"),
        op: OpKind::Stop,
        result: Ok(OpSuccess {
            container: None,
            slice: None,
        }),
    });
    assert!(out.events.is_empty(), "no Stop was in flight");
    assert!(h.s.replica(&k("A")).unwrap().is_running());
}

#[test]
fn persisted_state_round_trips() {
    let mut h = Harness::new(CHAIN);
    h.cmd(|s| s.start_group(0, "core").unwrap());
    let p = h.s.persisted();
    assert_eq!(p.started_groups.iter().collect::<Vec<_>>(), ["core"]);
    let c = config(CHAIN);
    let hs = hashes(&c, "v1");
    let s = Supervisor::new(c, hs, p.clone());
    assert_eq!(s.persisted(), p);
}

#[test]
fn backoff_jitter_spreads_delays_within_bounds() {
    let mut c = config(&[("g", &[], &[("A", &[], 8, true)])]);
    c.groups[0].agents[0].restart.backoff.jitter = Percent::whole(20);
    let hs = hashes(&c, "v1");
    let s = Supervisor::new(c, hs, Persisted::default());
    let delays: Vec<u64> = (0..8).map(|i| s.backoff_delay(&kr("A", i), 4)).collect();
    assert!(delays.iter().all(|d| (640..=960).contains(d)), "{delays:?}");
    let distinct: std::collections::BTreeSet<_> = delays.iter().collect();
    assert!(
        distinct.len() > 4,
        "jitter should spread replicas: {delays:?}"
    );
    assert_eq!(
        s.backoff_delay(&kr("A", 3), 4),
        s.backoff_delay(&kr("A", 3), 4)
    );
}

#[test]
fn an_exit_that_overtakes_the_launch_report_still_counts() {
    let mut h = Harness::new(&[("g", &[], &[("A", &[], 1, true)])]);
    h.cmd(|s| s.start_group(0, "g").unwrap());
    h.take_log();
    // Docker reports the death before the executor reports the launch.
    h.now = 50;
    let out = h.apply(Input::ContainerDied {
        key: k("A"),
        id: "c9".into(),
        code: 3,
        oom: false,
        at_ms: 1_000_060,
        seen_late_ms: 0,
    });
    assert!(out.events.is_empty());
    let c = ContainerFacts {
        id: "c9".into(),
        config_hash: h.hash("A"),
        status: ContainerStatus::Running,
        started_at_ms: 1_000_050,
        gpu_slice: None,
    };
    let out = h.apply(Input::OpFinished {
        key: k("A"),
        op: OpKind::Launch,
        result: Ok(OpSuccess {
            container: Some(c),
            slice: None,
        }),
    });
    assert!(out.events.contains(&SupervisorEvent::AgentExited {
        replica: k("A"),
        group: "g".into(),
        code: 3,
        oom: false
    }));
    assert!(matches!(
        h.phase(&k("A")),
        Phase::BackingOff { until: 150, .. }
    ));
    assert!(!h.s.replica(&k("A")).unwrap().is_running());
}

#[test]
fn a_stop_exit_during_a_restart_is_not_a_crash() {
    let mut h = Harness::new(&[("g", &[], &[("A", &[], 1, true)])]);
    h.cmd(|s| s.start_group(0, "g").unwrap());
    h.settle_healthy();
    h.cmd(|s| s.restart_agent(0, "g", "A").unwrap());
    let id = h.id(&k("A"));
    // The stop half of the restart: an exit older than the new start.
    h.apply(Input::ContainerDied {
        key: k("A"),
        id: id.clone(),
        code: 143,
        oom: false,
        at_ms: 1_000_010,
        seen_late_ms: 0,
    });
    let c = ContainerFacts {
        id,
        config_hash: h.hash("A"),
        status: ContainerStatus::Running,
        started_at_ms: 1_000_020,
        gpu_slice: None,
    };
    let out = h.apply(Input::OpFinished {
        key: k("A"),
        op: OpKind::Restart,
        result: Ok(OpSuccess {
            container: Some(c),
            slice: None,
        }),
    });
    assert!(
        !out.events
            .iter()
            .any(|e| matches!(e, SupervisorEvent::AgentExited { .. }))
    );
    assert_eq!(h.phase(&k("A")), Phase::Running);
}

#[test]
fn a_container_found_dead_by_the_launch_is_a_crash_with_backoff() {
    let mut h = Harness::new(&[("g", &[], &[("A", &[], 1, true)])]);
    h.cmd(|s| s.start_group(0, "g").unwrap());
    let c = ContainerFacts {
        id: "x".into(),
        config_hash: h.hash("A"),
        status: ContainerStatus::Exited {
            code: 1,
            oom: false,
        },
        started_at_ms: 1,
        gpu_slice: None,
    };
    h.apply(Input::OpFinished {
        key: k("A"),
        op: OpKind::Launch,
        result: Ok(OpSuccess {
            container: Some(c),
            slice: None,
        }),
    });
    assert!(matches!(h.phase(&k("A")), Phase::BackingOff { .. }));
    h.take_log();
    h.at(1);
    assert!(h.take_log().is_empty(), "no immediate restart");
}

#[test]
fn a_group_dependency_holds_every_agent_of_the_group_and_stops_after_it() {
    let mut h = Harness::new(&[
        (
            "infra",
            &[],
            &[("Registry", &[], 1, true), ("Slow", &[], 1, true)],
        ),
        ("apps", &["infra"], &[("Web", &[], 1, true)]),
    ]);
    h.cmd(|s| s.start_group(0, "apps").unwrap());
    assert_eq!(
        h.take_log(),
        ["launch Registry", "launch Slow", "create Web"]
    );
    assert_eq!(
        h.phase(&k("Web")),
        Phase::Held {
            waiting_for: vec![Wait::Group("infra".into())]
        }
    );
    h.finish_ops();
    h.healthy(k("Registry"));
    assert!(
        h.take_log().is_empty(),
        "Web waits for all of infra, not just one agent"
    );
    h.healthy(k("Slow"));
    assert_eq!(h.take_log(), ["start Web"]);
    h.settle_healthy();
    h.cmd(|s| s.stop_group(0, "infra", true).unwrap());
    assert_eq!(h.take_log(), ["stop Web"]);
    h.finish_ops();
    assert_eq!(h.take_log(), ["stop Slow", "stop Registry"]);
}

// ---- GPU slices ----

pub(super) fn gpu_harness(requests: &[(&str, crate::gpu::GpuRequest)]) -> Harness {
    let spec: Spec = &[(
        "g",
        &[],
        &[
            ("Cpu", &[], 1, true),
            ("A", &[], 1, true),
            ("B", &[], 1, true),
        ],
    )];
    let mut c = config(spec);
    for (agent, req) in requests {
        let a = c.groups[0]
            .agents
            .iter_mut()
            .find(|a| a.name == *agent)
            .unwrap();
        a.gpu = Some(req.clone());
    }
    let hs = hashes(&c, "v1");
    let mut h = Harness::new(spec);
    h.s = Supervisor::new(c, hs, Persisted::default());
    h.s.handle(0, Input::Resync { containers: vec![] });
    h
}

pub(super) fn mps(mem: u64, pct: u32) -> crate::gpu::GpuRequest {
    crate::gpu::GpuRequest::new(crate::gpu::SliceRequest::Mps {
        memory: crate::units::ByteSize::gib(mem),
        compute: Percent::whole(pct),
    })
}

fn mig(profile: &str) -> crate::gpu::GpuRequest {
    crate::gpu::GpuRequest::new(crate::gpu::SliceRequest::Mig {
        profile: crate::gpu::MigProfileName::parse(profile).unwrap(),
    })
}

pub(super) fn class(name: &str) -> &'static crate::gpu::GpuClass {
    crate::gpu::class_by_name(name).unwrap()
}

fn launched_slice(out: &Outcome, agent: &str) -> Option<crate::gpu::Slice> {
    out.actions.iter().find_map(|a| match a {
        Action::Launch { key, slice, .. } if key.agent == agent => slice.clone(),
        _ => None,
    })
}

#[test]
fn gpu_agents_wait_for_the_inventory_and_cpu_agents_do_not() {
    let mut h = gpu_harness(&[("A", mps(4, 20))]);
    h.cmd(|s| s.start_group(0, "g").unwrap());
    assert_eq!(h.take_log(), ["launch Cpu", "launch B"]);
    assert_eq!(
        h.phase(&k("A")),
        Phase::Held {
            waiting_for: vec![Wait::GpuInventory]
        }
    );
    let gpus = vec![crate::gpu::GpuInfo::from_class(
        0,
        "GPU-4090",
        class("NVIDIA GeForce RTX 4090"),
        false,
    )];
    let out = h.apply(Input::Inventory { gpus });
    assert_eq!(h.take_log(), ["launch A"]);
    let slice = launched_slice(&out, "A").unwrap();
    assert_eq!(slice.to_string(), "GPU 0 mps 4g 20%");
    assert!(out.events.iter().any(|e| matches!(
        e,
        SupervisorEvent::SliceAssigned {
            fallback_depth: 0,
            ..
        }
    )));
    assert_eq!(h.s.persisted().slices["A#0"], slice);
}

#[test]
fn without_nvml_gpu_agents_fail_with_the_reason_and_the_rest_runs() {
    let mut h = gpu_harness(&[("A", mps(4, 20))]);
    h.apply(Input::GpuUnavailable {
        reason: "no NVML library at /usr/lib/libnvidia-ml.so.1".into(),
    });
    let out = h.cmd(|s| s.start_group(0, "g").unwrap());
    assert_eq!(h.take_log(), ["launch Cpu", "launch B"]);
    let failed = out.events.iter().find_map(|e| match e {
        SupervisorEvent::AgentFailed {
            replica, reason, ..
        } if replica.agent == "A" => Some(reason.clone()),
        _ => None,
    });
    assert_eq!(
        failed,
        Some(FailReason::GpuUnavailable {
            detail: "no NVML library at /usr/lib/libnvidia-ml.so.1".into()
        })
    );
}

#[test]
fn an_unsatisfiable_request_fails_with_the_planner_reason_and_is_retried_later() {
    let mut h = gpu_harness(&[("A", mig("1g.10gb"))]);
    let gpus = vec![crate::gpu::GpuInfo::from_class(
        0,
        "GPU-4090",
        class("NVIDIA GeForce RTX 4090"),
        false,
    )];
    h.apply(Input::Inventory { gpus });
    h.cmd(|s| s.start_group(0, "g").unwrap());
    assert_eq!(h.take_log(), ["launch Cpu", "launch B"]);
    let Phase::Failed { reason, retry_at } = h.phase(&k("A")) else {
        panic!("{:?}", h.phase(&k("A")))
    };
    let FailReason::NoSlice(error) = reason else {
        panic!("{reason:?}")
    };
    assert_eq!(error.replica, k("A"));
    let reasons: Vec<_> = error
        .attempts
        .iter()
        .flat_map(|a| a.refusals.iter().map(|r| (r.gpu_index, r.reason.clone())))
        .collect();
    assert_eq!(
        reasons,
        [(0, crate::planner::RefusalReason::NoMig)],
        "the one GPU has no MIG, and there is no fallback"
    );
    assert_eq!(retry_at, GPU_RETRY);
    assert_eq!(h.s.next_deadline(), Some(GPU_RETRY));
}

#[test]
fn mig_instances_are_created_by_the_launch_recorded_as_ours_and_forgotten_after_a_reboot() {
    let mut h = gpu_harness(&[("A", mig("3g.20gb")), ("B", mig("3g.20gb"))]);
    let a100 = crate::gpu::GpuInfo::from_class(0, "GPU-a100", class("NVIDIA A100-SXM4-40GB"), true);
    h.apply(Input::Inventory {
        gpus: vec![a100.clone()],
    });
    let out = h.cmd(|s| s.start_group(0, "g").unwrap());
    let a = launched_slice(&out, "A").unwrap();
    let b = launched_slice(&out, "B").unwrap();
    let starts = |s: &crate::gpu::Slice| match s {
        crate::gpu::Slice::Mig {
            placement_start,
            gi_id: None,
            ..
        } => *placement_start,
        other => panic!("{other:?}"),
    };
    let mut placements = [starts(&a), starts(&b)];
    placements.sort();
    assert_eq!(placements, [0, 4], "two 3g.20gb fit only at 0 and 4");
    let made = match a.clone() {
        crate::gpu::Slice::Mig {
            gpu_index,
            gpu_uuid,
            profile,
            profile_id,
            placement_start,
            ..
        } => crate::gpu::Slice::Mig {
            gpu_index,
            gpu_uuid,
            profile,
            profile_id,
            placement_start,
            gi_id: Some(2),
            ci_id: Some(0),
            device_uuid: Some("MIG-a".into()),
        },
        _ => unreachable!(),
    };
    h.apply(Input::SliceReady {
        key: k("A"),
        slice: made.clone(),
    });
    assert_eq!(h.s.owned_mig().len(), 1);
    assert_eq!(h.s.persisted().owned_mig, h.s.owned_mig());
    assert_eq!(h.s.replica(&k("A")).unwrap().slice.as_ref(), Some(&made));
    // A reboot loses the layout: the record of ours goes with it.
    h.apply(Input::Inventory { gpus: vec![a100] });
    assert!(h.s.owned_mig().is_empty());
}

#[test]
fn owned_idle_instances_are_destroyed_and_foreign_ones_never() {
    let mut a100 =
        crate::gpu::GpuInfo::from_class(0, "GPU-a100", class("NVIDIA A100-SXM4-40GB"), true);
    if let crate::gpu::MigState::Enabled { instances, .. } = &mut a100.mig {
        instances.push(crate::gpu::MigInstance {
            gi_id: 9,
            profile_id: 19,
            placement_start: 0,
            placement_size: 1,
            ci_id: Some(0),
            device_uuid: Some("MIG-x".into()),
            owned: false,
        });
    }
    let record = crate::gpu::Slice::Mig {
        gpu_index: 0,
        gpu_uuid: "GPU-a100".into(),
        profile: "1g.5gb".into(),
        profile_id: 19,
        placement_start: 0,
        gi_id: Some(9),
        ci_id: Some(0),
        device_uuid: Some("MIG-x".into()),
    };
    // Ours (we made it for Cpu, which no longer asks for a GPU): destroyed to make room.
    let mut h = gpu_harness(&[("A", mig("7g.40gb"))]);
    h.apply(Input::Inventory {
        gpus: vec![a100.clone()],
    });
    h.apply(Input::SliceReady {
        key: k("Cpu"),
        slice: record,
    });
    assert_eq!(h.s.owned_mig().len(), 1);
    let out = h.cmd(|s| s.start_group(0, "g").unwrap());
    assert!(out.actions.contains(&Action::DestroyMig {
        gpu_index: 0,
        gpu_uuid: "GPU-a100".into(),
        gi_id: 9
    }));
    assert!(h.s.owned_mig().is_empty());
    // Not ours: never destroyed, so the 7g.40gb cannot be placed.
    let mut h = gpu_harness(&[("A", mig("7g.40gb"))]);
    h.apply(Input::Inventory { gpus: vec![a100] });
    let out = h.cmd(|s| s.start_group(0, "g").unwrap());
    assert!(
        !out.actions
            .iter()
            .any(|a| matches!(a, Action::DestroyMig { .. }))
    );
    assert!(matches!(h.phase(&k("A")), Phase::Failed { .. }));
}

#[test]
fn a_reload_keeps_the_slice_unless_the_gpu_request_changed() {
    let mut h = gpu_harness(&[("A", mps(4, 20))]);
    let gpus = vec![crate::gpu::GpuInfo::from_class(
        0,
        "GPU-4090",
        class("NVIDIA GeForce RTX 4090"),
        false,
    )];
    h.apply(Input::Inventory { gpus });
    h.cmd(|s| s.start_group(0, "g").unwrap());
    h.settle_healthy();
    let before = h.s.replica(&k("A")).unwrap().slice.clone();
    let mut c = h.s.config().clone();
    c.groups[0].agents[1].env.insert("X".into(), "1".into());
    let mut hs = hashes(&c, "v1");
    hs.insert("A".into(), "A-v2".into());
    h.cmd(|s| s.reload(0, c.clone(), hs.clone()).unwrap());
    assert_eq!(h.s.replica(&k("A")).unwrap().slice, before);
    h.settle_healthy();
    assert_eq!(
        h.s.replica(&k("A")).unwrap().slice,
        before,
        "the recreated container keeps the slice"
    );
    c.groups[0].agents[1].gpu = Some(mps(6, 20));
    hs.insert("A".into(), "A-v3".into());
    h.cmd(|s| s.reload(0, c, hs).unwrap());
    assert_eq!(
        h.s.replica(&k("A"))
            .unwrap()
            .slice
            .as_ref()
            .unwrap()
            .to_string(),
        "GPU 0 mps 6g 20%"
    );
}

#[test]
fn after_a_reboot_a_recorded_mig_slice_is_made_again_at_its_placement() {
    let spec: Spec = &[(
        "g",
        &[],
        &[
            ("Cpu", &[], 1, true),
            ("A", &[], 1, true),
            ("B", &[], 1, true),
        ],
    )];
    let mut c = config(spec);
    c.groups[0].agents[1].gpu = Some(mig("3g.20gb"));
    let hs = hashes(&c, "v1");
    let recorded = crate::gpu::Slice::Mig {
        gpu_index: 0,
        gpu_uuid: "GPU-a100".into(),
        profile: "3g.20gb".into(),
        profile_id: 9,
        placement_start: 4,
        gi_id: Some(2),
        ci_id: Some(0),
        device_uuid: Some("MIG-old".into()),
    };
    let persisted = Persisted {
        started_groups: ["g".to_string()].into(),
        slices: [("A#0".to_string(), recorded)].into(),
        owned_mig: vec![OwnedMig {
            gpu_uuid: "GPU-a100".into(),
            gi_id: 2,
            profile_id: 9,
            placement_start: 4,
        }],
        ..Persisted::default()
    };
    let mut s = Supervisor::new(c, hs, persisted);
    // The reboot took the containers and the layout.
    let a100 = crate::gpu::GpuInfo::from_class(0, "GPU-a100", class("NVIDIA A100-SXM4-40GB"), true);
    s.handle(0, Input::Inventory { gpus: vec![a100] });
    assert!(s.owned_mig().is_empty());
    let out = s.handle(0, Input::Resync { containers: vec![] });
    let slice = launched_slice(&out, "A").unwrap();
    assert_eq!(
        slice,
        crate::gpu::Slice::Mig {
            gpu_index: 0,
            gpu_uuid: "GPU-a100".into(),
            profile: "3g.20gb".into(),
            profile_id: 9,
            placement_start: 4,
            gi_id: None,
            ci_id: None,
            device_uuid: None,
        },
        "the same placement, to be made again by the launch"
    );
}

const TWO_GROUPS: Spec = &[
    ("infra", &[], &[("Reg", &[], 1, true)]),
    ("apps", &["infra"], &[("App", &[], 1, true)]),
];

#[test]
fn restarting_a_group_others_need_is_refused_or_takes_them_along() {
    let mut h = Harness::new(TWO_GROUPS);
    h.cmd(|s| s.start_group(0, "apps").unwrap());
    h.settle_healthy();
    h.take_log();
    let err = h.s.restart_group(0, "infra", false).unwrap_err();
    assert_eq!(
        err,
        CommandError::NeededBy {
            group: "infra".into(),
            needed_by: vec!["apps".into()],
            restart: true
        }
    );
    assert_eq!(
        h.s.group_phase("infra"),
        GroupPhase::Ready,
        "nothing changed"
    );
    let out = h.cmd(|s| s.restart_group(0, "infra", true).unwrap());
    assert_eq!(
        out.events,
        vec![
            SupervisorEvent::GroupStopping {
                group: "infra".into()
            },
            SupervisorEvent::GroupStopping {
                group: "apps".into()
            }
        ]
    );
    // The dependent goes down first, then what it needs; both come back,
    // in order (the dependent's container is made ahead, and started
    // only once the group it needs is ready).
    assert_eq!(h.take_log(), ["stop App"]);
    h.finish_ops();
    assert_eq!(h.take_log(), ["stop Reg", "create App"]);
    assert!(matches!(h.phase(&k("App")), Phase::Held { .. }));
    h.finish_ops();
    assert_eq!(h.take_log(), ["launch Reg"]);
    h.settle_healthy();
    assert_eq!(h.take_log(), ["start App"]);
    assert_eq!(h.s.group_phase("infra"), GroupPhase::Ready);
    assert_eq!(h.s.group_phase("apps"), GroupPhase::Ready);
}

#[test]
fn a_held_replica_created_ahead_is_reported_held_once() {
    let mut h = Harness::new(CHAIN);
    let mut events = h.cmd(|s| s.start_group(0, "core").unwrap()).events;
    // Every creation finishes; the held ones stay held, with no news.
    let busy: Vec<ReplicaKey> =
        h.s.replicas()
            .filter(|r| r.op.is_some())
            .map(|r| r.key.clone())
            .collect();
    for key in busy {
        let op = h.s.replica(&key).unwrap().op.unwrap();
        let mut c = h.container(&key.agent, key.replica);
        if op == OpKind::Create {
            c.status = ContainerStatus::Created;
        }
        events.extend(
            h.apply(Input::OpFinished {
                key,
                op,
                result: Ok(OpSuccess {
                    container: Some(c),
                    slice: None,
                }),
            })
            .events,
        );
    }
    let held: Vec<&SupervisorEvent> = events
        .iter()
        .filter(|e| matches!(e, SupervisorEvent::AgentHeld { .. }))
        .collect();
    assert_eq!(held.len(), 2, "{held:?}");
    assert_eq!(
        h.phase(&k("Api")),
        Phase::Held {
            waiting_for: vec![Wait::Agent("Twin".into())]
        }
    );
}

pub(super) fn remote_up(agents: &[&str], groups: &[&str]) -> RemoteHost {
    RemoteHost::Up(RemoteView {
        ready_agents: agents.iter().map(|a| a.to_string()).collect(),
        ready_groups: groups.iter().map(|g| g.to_string()).collect(),
        ..RemoteView::default()
    })
}

#[test]
fn a_cross_host_dependency_holds_releases_and_holds_again() {
    let mut h = Harness::new(&[(
        "g",
        &["pc2/group:vision"],
        &[("Local", &[], 1, true), ("Needy", &["pc2/Eyes"], 1, true)],
    )]);
    h.cmd(|s| s.start_group(0, "g").unwrap());
    // pc2 not heard from: nothing of the group starts (its group waits
    // too); their containers are made ahead, as for any held replica.
    assert_eq!(h.take_log(), ["create Local", "create Needy"]);
    h.finish_ops();
    assert_eq!(
        h.phase(&k("Needy")),
        Phase::Held {
            waiting_for: vec![
                Wait::RemoteAgent {
                    host: "pc2".into(),
                    agent: "Eyes".into()
                },
                Wait::RemoteGroup {
                    host: "pc2".into(),
                    group: "vision".into()
                },
            ]
        }
    );
    // pc2's group is ready, its agent not yet: Local goes, Needy waits.
    h.apply(Input::Remote {
        host: "pc2".into(),
        state: remote_up(&[], &["vision"]),
    });
    assert_eq!(h.take_log(), ["start Local"]);
    h.apply(Input::Remote {
        host: "pc2".into(),
        state: remote_up(&["Eyes"], &["vision"]),
    });
    assert_eq!(h.take_log(), ["start Needy"]);
    h.settle_healthy();
    h.take_log();
    // Eyes turns unhealthy over there: Needy is stopped and held again.
    h.apply(Input::Remote {
        host: "pc2".into(),
        state: remote_up(&[], &["vision"]),
    });
    assert_eq!(h.take_log(), ["stop Needy"]);
    h.finish_ops();
    assert!(h.take_log().is_empty(), "held, not re-created meanwhile");
    assert!(matches!(h.phase(&k("Needy")), Phase::Held { .. }));
    // pc2 goes down: the whole group, which needs pc2's group, goes down.
    h.apply(Input::Remote {
        host: "pc2".into(),
        state: RemoteHost::Down,
    });
    assert_eq!(h.take_log(), ["stop Local"]);
    h.finish_ops();
    // Back, and everything ready: both start again.
    h.apply(Input::Remote {
        host: "pc2".into(),
        state: remote_up(&["Eyes"], &["vision"]),
    });
    let mut log = h.take_log();
    log.sort();
    assert_eq!(log, ["launch Local", "launch Needy"]);
}

#[test]
fn a_restarted_host_does_not_stop_what_waits_on_a_host_it_has_not_heard_yet() {
    let mut h = Harness::new(&[("g", &[], &[("Needy", &["pc2/Eyes"], 1, true)])]);
    let c = h.container("Needy", 0);
    let s = &mut h.s;
    s.started.insert("g".into());
    h.apply(Input::Resync {
        containers: vec![(k("Needy"), "g".into(), c)],
    });
    assert!(
        !h.take_log().iter().any(|l| l.starts_with("stop")),
        "a running dependent is left alone until pc2 is heard from"
    );
    assert_eq!(h.s.replica(&k("Needy")).unwrap().phase, Phase::Running);
    // Heard: Eyes is not ready there. Now it is held.
    h.apply(Input::Remote {
        host: "pc2".into(),
        state: remote_up(&[], &[]),
    });
    assert_eq!(h.take_log(), ["stop Needy"]);
}

// ---- intent inferred from running containers ----

const FOUR_GROUPS: Spec = &[
    (
        "infra",
        &[],
        &[("Reg", &[], 1, true), ("Twin", &[], 1, true)],
    ),
    ("coord", &["infra"], &[("Coord", &[], 1, true)]),
    ("vision", &["coord"], &[("Face", &[], 2, true)]),
    ("util", &[], &[("Tool", &[], 1, true)]),
];

fn seen(
    agent: &str,
    replica: u32,
    group: &str,
    status: ContainerStatus,
) -> (ReplicaKey, String, ContainerFacts) {
    (
        kr(agent, replica),
        group.to_string(),
        ContainerFacts {
            id: format!("c-{agent}-{replica}"),
            config_hash: format!("{agent}-v1"),
            status,
            started_at_ms: 0,
            gpu_slice: None,
        },
    )
}

const RUNNING: ContainerStatus = ContainerStatus::Running;
const EXITED: ContainerStatus = ContainerStatus::Exited {
    code: 1,
    oom: false,
};

#[test]
fn which_groups_running_containers_mark_started() {
    let c = config(FOUR_GROUPS);
    let graph = crate::graph::group_graph(&c);
    struct Case {
        name: &'static str,
        known: &'static [&'static str],
        seen: Vec<(ReplicaKey, String, ContainerFacts)>,
        groups: &'static [&'static str],
        adopted: u32,
        unconfigured: u32,
    }
    let cases = [
        Case {
            name: "nothing runs",
            known: &[],
            seen: vec![],
            groups: &[],
            adopted: 0,
            unconfigured: 0,
        },
        Case {
            name: "a group with its dependencies, in start order",
            known: &[],
            seen: vec![seen("Face", 1, "vision", RUNNING)],
            groups: &["infra", "coord", "vision"],
            adopted: 1,
            unconfigured: 0,
        },
        Case {
            name: "every running container of a marked group is counted",
            known: &[],
            seen: vec![
                seen("Reg", 0, "infra", RUNNING),
                seen("Twin", 0, "infra", RUNNING),
                seen("Tool", 0, "util", RUNNING),
            ],
            groups: &["infra", "util"],
            adopted: 3,
            unconfigured: 0,
        },
        Case {
            name: "exited and created containers are no evidence",
            known: &[],
            seen: vec![
                seen("Tool", 0, "util", EXITED),
                seen("Reg", 0, "infra", ContainerStatus::Created),
            ],
            groups: &[],
            adopted: 0,
            unconfigured: 0,
        },
        Case {
            name: "agents not in the config are counted, not followed",
            known: &[],
            seen: vec![seen("Gone", 0, "util", RUNNING)],
            groups: &[],
            adopted: 0,
            unconfigured: 1,
        },
        Case {
            name: "the config's group wins over the label",
            known: &[],
            seen: vec![seen("Tool", 0, "infra", RUNNING)],
            groups: &["util"],
            adopted: 1,
            unconfigured: 0,
        },
        Case {
            name: "groups the state accounts for are left alone",
            known: &["infra", "util"],
            seen: vec![
                seen("Coord", 0, "coord", RUNNING),
                seen("Tool", 0, "util", RUNNING),
            ],
            groups: &["coord"],
            adopted: 1,
            unconfigured: 0,
        },
    ];
    for case in cases {
        let known = case.known.iter().map(|s| s.to_string()).collect();
        let got = infer_started(&c, &graph, &known, &case.seen);
        assert_eq!(
            got,
            Inference {
                groups: case.groups.iter().map(|s| s.to_string()).collect(),
                adopted: case.adopted,
                unconfigured: case.unconfigured,
            },
            "{}",
            case.name
        );
    }
}

/// A supervisor resuming `persisted`, armed with `origin`, after its
/// first listing of `seen`: the ops it ordered and the events.
fn first_listing(
    persisted: Persisted,
    origin: StateOrigin,
    seen: Vec<(ReplicaKey, String, ContainerFacts)>,
) -> (Supervisor, Vec<String>, Outcome) {
    let c = config(FOUR_GROUPS);
    let hs = hashes(&c, "v1");
    let mut s = Supervisor::new(c, hs, persisted);
    s.infer_intent(origin);
    let out = s.handle(0, Input::Resync { containers: seen });
    let ops = out
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Launch { key, .. } => Some(format!("launch {key}")),
            Action::Stop { key, .. } => Some(format!("stop {key}")),
            Action::Remove { key, .. } => Some(format!("remove {key}")),
            Action::Start { key, .. } => Some(format!("start {key}")),
            Action::Restart { key, .. } => Some(format!("restart {key}")),
            _ => None,
        })
        .collect();
    (s, ops, out)
}

#[test]
fn a_lost_state_adopts_what_runs_and_stops_nothing() {
    let (s, ops, out) = first_listing(
        Persisted::default(),
        StateOrigin::Missing,
        vec![
            seen("Reg", 0, "infra", RUNNING),
            seen("Twin", 0, "infra", RUNNING),
            seen("Coord", 0, "coord", RUNNING),
            seen("Face", 0, "vision", RUNNING),
            seen("Gone", 0, "util", RUNNING),
        ],
    );
    let started: Vec<&str> = s.started_groups().iter().map(String::as_str).collect();
    assert_eq!(started, ["coord", "infra", "vision"]);
    // The missing second replica of a partially running group is launched;
    // only the container of an agent no longer configured is stopped.
    assert_eq!(ops, ["stop Gone", "launch Face#1"]);
    assert!(out.persist);
    assert!(out.events.contains(&SupervisorEvent::StateInferred {
        origin: StateOrigin::Missing,
        adopted: 4,
        groups: vec!["infra".into(), "coord".into(), "vision".into()],
        unconfigured: 1,
    }));
    assert_eq!(s.persisted().started_groups, s.started_groups().clone());
}

#[test]
fn a_new_host_with_nothing_running_says_nothing() {
    let (s, ops, out) = first_listing(Persisted::default(), StateOrigin::Missing, vec![]);
    assert!(s.started_groups().is_empty());
    assert!(ops.is_empty());
    assert!(
        !out.events
            .iter()
            .any(|e| matches!(e, SupervisorEvent::StateInferred { .. }))
    );
}

#[test]
fn a_damaged_state_is_always_reported() {
    let (_, ops, out) = first_listing(Persisted::default(), StateOrigin::Damaged, vec![]);
    assert!(ops.is_empty());
    assert!(out.events.contains(&SupervisorEvent::StateInferred {
        origin: StateOrigin::Damaged,
        adopted: 0,
        groups: vec![],
        unconfigured: 0,
    }));
}

#[test]
fn a_saved_state_only_gains_the_groups_it_does_not_mention() {
    let persisted = Persisted {
        started_groups: ["infra".to_string()].into(),
        stopped_groups: ["util".to_string()].into(),
        ..Persisted::default()
    };
    let (s, ops, out) = first_listing(
        persisted,
        StateOrigin::Saved,
        vec![
            seen("Reg", 0, "infra", RUNNING),
            seen("Twin", 0, "infra", RUNNING),
            seen("Coord", 0, "coord", RUNNING),
            // The rest of a stop a crash cut short.
            seen("Tool", 0, "util", RUNNING),
        ],
    );
    let started: Vec<&str> = s.started_groups().iter().map(String::as_str).collect();
    assert_eq!(started, ["coord", "infra"]);
    assert_eq!(ops, ["stop Tool"]);
    assert!(out.events.contains(&SupervisorEvent::StateInferred {
        origin: StateOrigin::Saved,
        adopted: 1,
        groups: vec!["coord".into()],
        unconfigured: 0,
    }));
}

#[test]
fn a_saved_state_that_accounts_for_everything_infers_nothing() {
    let persisted = Persisted {
        started_groups: ["infra".to_string()].into(),
        ..Persisted::default()
    };
    let (_, ops, out) = first_listing(
        persisted,
        StateOrigin::Saved,
        vec![
            seen("Reg", 0, "infra", RUNNING),
            seen("Twin", 0, "infra", RUNNING),
        ],
    );
    assert!(ops.is_empty());
    assert!(
        !out.events
            .iter()
            .any(|e| matches!(e, SupervisorEvent::StateInferred { .. }))
    );
}

#[test]
fn fresh_stops_every_running_container_and_says_so() {
    let (s, ops, out) = first_listing(
        Persisted::default(),
        StateOrigin::Fresh,
        vec![
            seen("Reg", 0, "infra", RUNNING),
            seen("Tool", 0, "util", RUNNING),
            seen("Face", 1, "vision", EXITED),
        ],
    );
    assert!(s.started_groups().is_empty());
    // Reverse dependency order: what depends on infra goes first.
    assert_eq!(ops, ["stop Tool", "remove Face#1", "stop Reg"]);
    assert!(
        out.events
            .contains(&SupervisorEvent::FreshStart { stopping: 2 })
    );
    assert!(out.persist);
}

#[test]
fn inference_happens_on_the_first_listing_only() {
    let (mut s, _, _) = first_listing(Persisted::default(), StateOrigin::Missing, vec![]);
    s.handle(1, Input::DockerDown);
    let out = s.handle(
        2,
        Input::Resync {
            containers: vec![seen("Tool", 0, "util", RUNNING)],
        },
    );
    assert!(s.started_groups().is_empty());
    assert!(out.actions.contains(&Action::Stop {
        key: k("Tool"),
        id: "c-Tool-0".into()
    }));
}

#[test]
fn stopped_groups_are_remembered_until_started_again() {
    let mut h = Harness::new(FOUR_GROUPS);
    h.cmd(|s| s.start_group(0, "util").unwrap());
    h.cmd(|s| s.stop_group(0, "util", false).unwrap());
    let stopped: Vec<String> = h.s.persisted().stopped_groups.into_iter().collect();
    assert_eq!(stopped, ["util"]);
    h.cmd(|s| s.start_group(0, "util").unwrap());
    assert!(h.s.persisted().stopped_groups.is_empty());
    assert!(h.s.persisted().started_groups.contains("util"));
}

#[test]
fn an_imported_state_replaces_the_desired_one_whole() {
    let mut h = Harness::new(FOUR_GROUPS);
    h.cmd(|s| s.start_group(0, "util").unwrap());
    h.finish_ops();
    h.take_log();
    let imported = Persisted {
        started_groups: ["vision".to_string()].into(),
        stopped_groups: ["util".to_string()].into(),
        generation: 9,
        owned_mig: vec![OwnedMig {
            gpu_uuid: "GPU-a".into(),
            gi_id: 3,
            profile_id: 19,
            placement_start: 0,
        }],
        ..Persisted::default()
    };
    let out = h.cmd(|s| s.restore(0, imported).unwrap());
    let started: Vec<&str> = h.s.started_groups().iter().map(String::as_str).collect();
    // The dependencies of an imported group come with it; util goes.
    assert_eq!(started, ["coord", "infra", "vision"]);
    assert_eq!(h.s.generation(), 9);
    assert_eq!(h.s.owned_mig().len(), 1);
    assert!(out.persist);
    assert!(out.events.contains(&SupervisorEvent::GroupStopping {
        group: "util".into()
    }));
    // Held replicas are created ahead, as after any start.
    assert_eq!(
        h.take_log(),
        [
            "stop Tool",
            "launch Reg",
            "launch Twin",
            "create Coord",
            "create Face",
            "create Face#1"
        ]
    );
    assert_eq!(
        h.s.persisted()
            .stopped_groups
            .into_iter()
            .collect::<Vec<_>>(),
        ["util"]
    );
}

#[test]
fn an_import_naming_an_unknown_group_changes_nothing() {
    let mut h = Harness::new(FOUR_GROUPS);
    h.cmd(|s| s.start_group(0, "util").unwrap());
    let before = h.s.persisted();
    let err =
        h.s.restore(
            0,
            Persisted {
                started_groups: ["util".to_string(), "speech".to_string()].into(),
                generation: 4,
                ..Persisted::default()
            },
        )
        .unwrap_err();
    assert_eq!(err, CommandError::UnknownGroups(vec!["speech".into()]));
    assert_eq!(h.s.persisted(), before);
}

#[test]
fn a_lost_state_reads_running_agents_slices_back_from_their_labels() {
    let spec: Spec = &[(
        "g",
        &[],
        &[
            ("Cpu", &[], 1, true),
            ("A", &[], 1, true),
            ("B", &[], 1, true),
        ],
    )];
    let mut c = config(spec);
    c.groups[0].agents[1].gpu = Some(mig("1g.5gb"));
    c.groups[0].agents[2].gpu = Some(mps(4, 25));
    let hs = hashes(&c, "v1");
    let mut s = Supervisor::new(c, hs, Persisted::default());
    s.infer_intent(StateOrigin::Missing);
    let labelled = |agent: &str, label: Option<&str>| {
        let mut seen = seen(agent, 0, "g", RUNNING);
        seen.2.gpu_slice = label.map(str::to_string);
        seen
    };
    s.handle(
        0,
        Input::Resync {
            containers: vec![
                labelled("Cpu", None),
                labelled("A", Some("mig:MIG-dev-5:1g.5gb")),
                labelled("B", Some("mps:GPU-4090b:memory=4g,compute=25%")),
            ],
        },
    );
    let a100 = class("NVIDIA A100-SXM4-40GB");
    let profile = a100
        .profile(&crate::gpu::MigProfileName::parse("1g.5gb").unwrap())
        .unwrap();
    let mut mig_gpu = crate::gpu::GpuInfo::from_class(0, "GPU-a100", a100, true);
    if let crate::gpu::MigState::Enabled { instances, .. } = &mut mig_gpu.mig {
        // Another free instance of the same profile, which planning from
        // scratch would pick first.
        instances.push(crate::gpu::MigInstance {
            gi_id: 3,
            profile_id: profile.id,
            placement_start: profile.placements[0],
            placement_size: profile.memory_slices,
            ci_id: Some(0),
            device_uuid: Some("MIG-dev-3".into()),
            owned: false,
        });
        instances.push(crate::gpu::MigInstance {
            gi_id: 5,
            profile_id: profile.id,
            placement_start: profile.placements[1],
            placement_size: profile.memory_slices,
            ci_id: Some(0),
            device_uuid: Some("MIG-dev-5".into()),
            owned: false,
        });
    }
    let gpus = vec![
        mig_gpu,
        crate::gpu::GpuInfo::from_class(1, "GPU-4090", class("NVIDIA GeForce RTX 4090"), false),
        crate::gpu::GpuInfo::from_class(2, "GPU-4090b", class("NVIDIA GeForce RTX 4090"), false),
    ];
    let out = s.handle(1, Input::Inventory { gpus });
    assert!(
        !out.actions.iter().any(|a| matches!(
            a,
            Action::Launch { .. } | Action::Stop { .. } | Action::DestroyMig { .. }
        )),
        "{:?}",
        out.actions
    );
    let a = s.replica(&k("A")).unwrap().slice.clone().unwrap();
    assert!(
        matches!(&a, crate::gpu::Slice::Mig { gi_id: Some(5), device_uuid: Some(d), .. } if d == "MIG-dev-5"),
        "{a:?}"
    );
    let b = s.replica(&k("B")).unwrap().slice.clone().unwrap();
    assert_eq!(b.describe(), "mps:GPU-4090b:memory=4g,compute=25%");
    // Used, but not claimed: only instances recorded as made here are ours.
    assert!(s.owned_mig().is_empty());
    assert_eq!(s.persisted().slices.len(), 2);
}

#[test]
fn a_group_removed_from_the_config_is_forgotten_as_stopped_too() {
    let mut h = Harness::new(FOUR_GROUPS);
    h.cmd(|s| s.start_group(0, "util").unwrap());
    h.cmd(|s| s.stop_group(0, "util", false).unwrap());
    let c = config(&FOUR_GROUPS[..3]);
    let hs = hashes(&c, "v1");
    h.cmd(|s| s.reload(0, c, hs).unwrap());
    // An export of this state imports on this config.
    assert!(h.s.persisted().stopped_groups.is_empty());
}

// ---- growth with the host's size ----
//
// Every input runs one decision pass over the host, so the work of a pass
// must grow linearly with replicas. These count the replicas a pass visits
// (`Supervisor::visits`) at two sizes, four times apart: a linear pass
// visits about four times as many, one that scans the table once per
// agent or per replica (as `keys_of`, the sibling check, the crash-loop
// check, the stop order and the replica table's clean-up once did) about
// sixteen times as many.

/// `groups` groups of 20 agents; in each a dependency chain of depth 4
/// (1 root, 3, 6, 10 agents), and each group needs the one before it.
fn scaled_spec(groups: usize) -> Spec<'static> {
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let mut spec = Vec::new();
    for g in 0..groups {
        let name = leak(format!("g{g}"));
        let gdeps: &'static [&'static str] = if g == 0 {
            &[]
        } else {
            Box::leak(vec![leak(format!("g{}", g - 1))].into_boxed_slice())
        };
        let mut agents = Vec::new();
        let levels = [1usize, 3, 6, 10];
        let mut prev: Vec<&'static str> = Vec::new();
        for (depth, width) in levels.iter().enumerate() {
            let mut this = Vec::new();
            for i in 0..*width {
                let a = leak(format!("g{g}a{depth}x{i}"));
                let deps: &'static [&'static str] = match prev.get(i % prev.len().max(1)) {
                    Some(d) => Box::leak(vec![*d].into_boxed_slice()),
                    None => &[],
                };
                agents.push((a, deps, 1u32, true));
                this.push(a);
            }
            prev = this;
        }
        spec.push((name, gdeps, &*Box::leak(agents.into_boxed_slice())));
    }
    Box::leak(spec.into_boxed_slice())
}

/// A harness with every group of `scaled_spec(groups)` started and healthy.
fn scaled_running(groups: usize) -> Harness {
    let mut h = Harness::new(scaled_spec(groups));
    let last = format!("g{}", groups - 1);
    h.cmd(|s| s.start_group(0, &last).unwrap());
    // Wave by wave: each level of each group is released by the last.
    for _ in 0..groups * 4 + 4 {
        h.finish_ops();
        let starting: Vec<ReplicaKey> =
            h.s.replicas()
                .filter(|r| r.is_running() && r.health != Health::Healthy && r.op.is_none())
                .map(|r| r.key.clone())
                .collect();
        for key in starting {
            h.healthy(key);
        }
    }
    assert!(
        h.s.replicas().all(|r| r.health == Health::Healthy),
        "the scaled host did not come up"
    );
    h
}

/// Visits made by `f`.
fn visits(h: &mut Harness, f: impl FnOnce(&mut Harness)) -> u64 {
    h.s.visits.set(0);
    f(h);
    h.s.visits.get()
}

/// Linear growth: four times the replicas, at most five times the visits.
fn assert_linear(what: &str, small: u64, large: u64) {
    assert!(small > 0, "{what}: nothing counted");
    assert!(
        large <= small * 5,
        "{what}: {small} replica visits at 40 agents, {large} at 160 (linear would be about {})",
        small * 4
    );
}

#[test]
fn a_decision_pass_on_a_running_host_grows_linearly() {
    let mut counts = Vec::new();
    for groups in [2, 8] {
        let mut h = scaled_running(groups);
        let key = k("g0a3x0");
        let tick = visits(&mut h, |h| {
            h.at(h.now + 1000);
        });
        // A healthy replica passing its probe changes nothing: no pass.
        let passing = visits(&mut h, |h| {
            h.healthy(key.clone());
        });
        assert_eq!(passing, 0, "a passing probe of a healthy replica");
        // Failing ones change nothing until the last retry makes it unhealthy.
        let failing = visits(&mut h, |h| {
            for _ in 0..3 {
                h.unhealthy(key.clone());
            }
        });
        counts.push((tick, failing));
    }
    assert_linear("a tick", counts[0].0, counts[1].0);
    assert_linear("a health change", counts[0].1, counts[1].1);
}

#[test]
fn stopping_a_host_grows_linearly() {
    let mut counts = Vec::new();
    for groups in [2, 8] {
        let mut h = scaled_running(groups);
        // Every agent but the leaves waits for its dependents to stop.
        counts.push((
            visits(&mut h, |h| {
                h.cmd(|s| s.stop_group(0, "g0", true).unwrap());
            }),
            visits(&mut h, |h| h.finish_ops()) / (groups as u64 * 10),
        ));
    }
    assert_linear("the stop command", counts[0].0, counts[1].0);
    assert_linear("each stop reported", counts[0].1, counts[1].1);
}

#[test]
fn adopting_a_running_host_grows_linearly() {
    let mut counts = Vec::new();
    for groups in [2, 8] {
        let c = config(scaled_spec(groups));
        let hs = hashes(&c, "v1");
        let persisted = Persisted {
            started_groups: c.groups.iter().map(|g| g.name.clone()).collect(),
            ..Persisted::default()
        };
        let containers: Vec<_> = c
            .agents()
            .map(|a| {
                (
                    k(&a.name),
                    a.group.clone(),
                    ContainerFacts {
                        id: format!("c-{}", a.name),
                        config_hash: format!("{}-v1", a.name),
                        status: ContainerStatus::Running,
                        started_at_ms: 0,
                        gpu_slice: None,
                    },
                )
            })
            .collect();
        let n = containers.len();
        let mut s = Supervisor::new(c, hs, persisted);
        s.visits.set(0);
        let out = s.handle(1000, Input::Resync { containers });
        let adopted = out
            .events
            .iter()
            .filter(|e| matches!(e, SupervisorEvent::AgentAdopted { .. }))
            .count();
        assert_eq!(adopted, n);
        assert!(
            !out.actions.iter().any(|a| matches!(
                a,
                Action::Launch { .. } | Action::Start { .. } | Action::Stop { .. }
            )),
            "adoption starts or stops nothing"
        );
        counts.push(s.visits.get());
    }
    assert_linear("adoption", counts[0], counts[1]);
}

#[test]
fn group_commands_say_which_groups_they_changed() {
    type Command = fn(&mut Supervisor) -> Result<Commanded<Vec<String>>, CommandError>;
    let cases: &[(&str, Command, &[&str])] = &[
        (
            "start with its dependencies",
            |s| s.start_group(0, "vision"),
            &["infra", "coord", "vision"],
        ),
        (
            "start of a started group",
            |s| {
                s.start_group(0, "coord")?;
                s.start_group(0, "coord")
            },
            &["coord"],
        ),
        (
            "stop with dependents",
            |s| {
                s.start_group(0, "vision")?;
                s.stop_group(0, "infra", true)
            },
            &["infra", "coord", "vision"],
        ),
        (
            "stop of a stopped group",
            |s| s.stop_group(0, "util", false),
            &["util"],
        ),
        (
            "restart of a stopped group starts it",
            |s| s.restart_group(0, "util", false),
            &["util"],
        ),
        (
            "restart with dependents",
            |s| {
                s.start_group(0, "vision")?;
                s.restart_group(0, "coord", true)
            },
            &["coord", "vision"],
        ),
    ];
    for (what, command, want) in cases {
        let mut h = Harness::new(FOUR_GROUPS);
        let done = command(&mut h.s).unwrap();
        assert_eq!(done.changed, *want, "{what}");
    }
}

#[test]
fn a_reload_says_which_agents_changed_and_which_are_recreated_now() {
    let spec: Spec = &[
        ("a", &[], &[("Up", &[], 1, true)]),
        ("b", &[], &[("Down", &[], 1, true)]),
    ];
    let mut h = Harness::new(spec);
    h.cmd(|s| s.start_group(0, "a").unwrap());
    h.settle_healthy();
    let mut hs = hashes(&config(spec), "v2");
    hs.insert("Gone".into(), "x".into());
    let done = h.s.reload(0, config(spec), hs).unwrap();
    assert_eq!(done.changed.generation, h.s.generation());
    assert_eq!(done.changed.changed, ["Down", "Gone", "Up"]);
    assert_eq!(
        done.changed.recreated,
        ["Up"],
        "only the agent of a started group is acted on now"
    );
    assert!(
        done.outcome.persist,
        "a reload is written before it is acted on"
    );
}

#[test]
fn the_backoff_counts_from_the_death_not_from_the_news_of_it() {
    for late in [0, 30, 10_000] {
        let mut h = Harness::new(&[("g", &[], &[("A", &[], 1, true)])]);
        h.cmd(|s| s.start_group(0, "g").unwrap());
        h.settle_healthy();
        // A healthy replica's first exit restarts at once; the second
        // (before it was healthy again) waits.
        h.die(k("A"), 1);
        h.finish_ops();
        h.now += 1_000;
        let id = h.id(&k("A"));
        let delay = h.s.backoff_delay(&k("A"), 2);
        assert!(delay >= 90, "{delay}");
        let at_ms = 1_000_000 + h.now - late;
        h.apply(Input::ContainerDied {
            key: k("A"),
            id,
            code: 1,
            oom: false,
            at_ms,
            seen_late_ms: late,
        });
        // Never more than half the step is taken off (clocks may disagree).
        let taken_off = late.min(delay / 2);
        let until = h.now + delay - taken_off;
        assert!(
            matches!(h.phase(&k("A")), Phase::BackingOff { until: u, .. } if u == until),
            "late {late}: {:?}, want until {until}",
            h.phase(&k("A"))
        );
        // Nothing starts before then, and it starts then.
        let out = h.at(until - 1);
        assert!(
            !out.actions
                .iter()
                .any(|a| matches!(a, Action::Start { .. }))
        );
        let out = h.at(until);
        assert!(
            out.actions
                .iter()
                .any(|a| matches!(a, Action::Start { .. }))
        );
    }
}
