//! One truth for health, as a property: the supervisor is driven through
//! random sequences of operator commands, applies (good and bad), Docker
//! events, probe results and operation results against a model of the
//! Docker host, and at every step no replica is called healthy without a
//! running container of its own on that host. After any such sequence, an
//! apply of a good config converges: every wanted replica runs healthy and
//! every started group is ready (no wedge).

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::tests::{Spec, config};
use super::*;
use crate::gpu::ReplicaKey;
use crate::model::HostConfig;

const SPEC: Spec = &[
    ("base", &[], &[("A", &[], 1, true), ("B", &["A"], 2, true)]),
    (
        "top",
        &["base"],
        &[("C", &[], 1, true), ("D", &["C"], 1, false)],
    ),
];
const GROUPS: [&str; 2] = ["base", "top"];
const AGENTS: [(&str, &str); 4] = [("A", "base"), ("B", "base"), ("C", "top"), ("D", "top")];

/// The Docker host as the supervisor cannot see it: containers by id.
#[derive(Debug, Default)]
struct World {
    /// id -> (replica, config hash, running)
    containers: BTreeMap<String, (ReplicaKey, String, bool)>,
    next: u64,
    /// Config hashes whose image is not on the host.
    missing: BTreeSet<String>,
    /// The last time Docker stamped (Unix ms): each start and death is
    /// later than the one before, as on a real host, so a death is never
    /// taken for one after a start that followed it.
    stamped: u64,
}

impl World {
    fn running(&self, id: &str) -> bool {
        self.containers.get(id).is_some_and(|c| c.2)
    }

    /// Docker's clock at `now`: strictly later than its last stamp.
    fn stamp(&mut self, now: Millis) -> u64 {
        self.stamped = (1_000_000 + now).max(self.stamped + 1);
        self.stamped
    }

    fn facts(&mut self, id: &str, now: Millis) -> ContainerFacts {
        let started_at_ms = self.stamp(now);
        let (_, hash, running) = &self.containers[id];
        ContainerFacts {
            id: id.to_string(),
            config_hash: hash.clone(),
            status: if *running {
                ContainerStatus::Running
            } else {
                ContainerStatus::Created
            },
            started_at_ms,
            gpu_slice: None,
        }
    }

    fn remove_of(&mut self, key: &ReplicaKey) {
        self.containers.retain(|_, c| &c.0 != key);
    }

    fn create(&mut self, key: &ReplicaKey, hash: &str, start: bool) -> String {
        self.next += 1;
        let id = format!("c{}", self.next);
        self.containers
            .insert(id.clone(), (key.clone(), hash.to_string(), start));
        id
    }
}

#[derive(Debug, Clone)]
enum Step {
    Start(usize),
    Stop(usize),
    RestartAgent(usize),
    /// An apply whose new image for this agent is not on the host.
    ApplyBad(usize),
    ApplyGood,
    /// Finish the n-th operation in flight; `fate` 0-3 succeed, 4 is a
    /// refusal by Docker, 5 Docker unreachable.
    Finish(usize, u8),
    Die(usize, i64),
    /// A container removed behind the supervisor's back.
    Vanish(usize),
    Probe(usize, bool),
    Tick(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        1 => (0..2usize).prop_map(Step::Start),
        1 => (0..2usize).prop_map(Step::Stop),
        1 => (0..4usize).prop_map(Step::RestartAgent),
        1 => (0..4usize).prop_map(Step::ApplyBad),
        1 => Just(Step::ApplyGood),
        8 => (0..8usize, 0..6u8).prop_map(|(i, f)| Step::Finish(i, f)),
        2 => (0..8usize, 0..2i64).prop_map(|(i, c)| Step::Die(i, c)),
        1 => (0..8usize).prop_map(Step::Vanish),
        6 => (0..8usize, proptest::bool::weighted(0.8)).prop_map(|(i, ok)| Step::Probe(i, ok)),
        3 => (1..30_000u64).prop_map(Step::Tick),
    ]
}

struct Model {
    sup: Supervisor,
    world: World,
    now: Millis,
    /// Operations in flight, as the supervisor asked for them.
    ops: Vec<Action>,
    generation: u32,
}

/// The host's config: every agent restarts whatever its exit code, so
/// that "converges" means running (under `on-failure` a clean exit stays
/// down by design, which a later apply does not undo).
fn host_config() -> HostConfig {
    let mut c = config(SPEC);
    for g in &mut c.groups {
        // Readiness waits: the steps' ticks (up to 61 s) cross it.
        g.min_healthy = crate::units::Duration::from_secs(5);
        for a in &mut g.agents {
            a.restart.policy = crate::model::RestartMode::Always;
        }
    }
    c
}

fn hashes(c: &HostConfig, tag: &str) -> BTreeMap<String, String> {
    c.agents()
        .map(|a| (a.name.clone(), format!("{}-{tag}", a.name)))
        .collect()
}

fn op_of(a: &Action) -> Option<(ReplicaKey, OpKind)> {
    Some(match a {
        Action::Launch {
            key,
            replace: Some(_),
            ..
        } => (key.clone(), OpKind::Recreate),
        Action::Launch {
            key, start: true, ..
        } => (key.clone(), OpKind::Launch),
        Action::Launch { key, .. } => (key.clone(), OpKind::Create),
        Action::Start { key, .. } => (key.clone(), OpKind::Start),
        Action::Restart { key, .. } => (key.clone(), OpKind::Restart),
        Action::Stop { key, .. } => (key.clone(), OpKind::Stop),
        Action::Remove { key, .. } => (key.clone(), OpKind::Remove),
        _ => return None,
    })
}

impl Model {
    fn new() -> Model {
        let c = host_config();
        let h = hashes(&c, "v0");
        let mut sup = Supervisor::new(c, h, Persisted::default());
        sup.handle(0, Input::Resync { containers: vec![] });
        Model {
            sup,
            world: World::default(),
            now: 0,
            ops: Vec::new(),
            generation: 0,
        }
    }

    fn take(&mut self, out: Outcome) {
        for a in out.actions {
            if op_of(&a).is_some() {
                self.ops.push(a);
            }
        }
    }

    fn input(&mut self, input: Input) {
        let out = self.sup.handle(self.now, input);
        self.take(out);
    }

    fn apply(&mut self, missing_agent: Option<&str>) {
        self.generation += 1;
        let c = host_config();
        let mut h = hashes(&c, "v0");
        if let Some(agent) = missing_agent {
            let bad = format!("{agent}-bad{}", self.generation);
            self.world.missing.insert(bad.clone());
            h.insert(agent.to_string(), bad);
        }
        if let Ok(c) = self.sup.reload(self.now, c, h) {
            self.take(c.into());
        }
    }

    /// Runs one operation on the world, as the daemon's executor does.
    fn finish(&mut self, i: usize, fate: u8) {
        if self.ops.is_empty() {
            return;
        }
        let action = self.ops.remove(i % self.ops.len());
        let Some((key, op)) = op_of(&action) else {
            return;
        };
        // A stale report (the supervisor moved on) is dropped by it.
        let refused = match fate {
            4 => Some(LaunchError::DockerRefused {
                detail: "refused".into(),
            }),
            5 => Some(LaunchError::DockerUnreachable {
                detail: "gone".into(),
            }),
            _ => None,
        };
        let now = self.now;
        let result = match action {
            Action::Launch { replace, start, .. } => {
                // Removing what stands in the way comes first (the old
                // container of a replacement, or one holding the name).
                if let Some(old) = &replace {
                    self.world.containers.remove(old);
                }
                self.world.remove_of(&key);
                let hash = self
                    .sup
                    .config_hash(&key.agent)
                    .unwrap_or_default()
                    .to_string();
                if let Some(e) = refused {
                    Err(e)
                } else if self.world.missing.contains(&hash) {
                    Err(LaunchError::ImageMissing {
                        image: hash.clone(),
                    })
                } else {
                    let id = self.world.create(&key, &hash, start);
                    Ok(OpSuccess {
                        container: Some(self.world.facts(&id, now)),
                        slice: None,
                    })
                }
            }
            Action::Start { id, .. } | Action::Restart { id, .. } => {
                if !self.world.containers.contains_key(&id) {
                    Err(LaunchError::ContainerGone { id })
                } else if let Some(e) = refused {
                    Err(e)
                } else {
                    if let Some(c) = self.world.containers.get_mut(&id) {
                        c.2 = true;
                    }
                    Ok(OpSuccess {
                        container: Some(self.world.facts(&id, now)),
                        slice: None,
                    })
                }
            }
            Action::Stop { id, .. } | Action::Remove { id, .. } => {
                if let Some(e) = refused.filter(|_| self.world.containers.contains_key(&id)) {
                    Err(e)
                } else {
                    self.world.containers.remove(&id);
                    Ok(OpSuccess {
                        container: None,
                        slice: None,
                    })
                }
            }
            _ => return,
        };
        self.input(Input::OpFinished { key, op, result });
    }

    fn run(&mut self, s: &Step) {
        match *s {
            Step::Start(g) => {
                if let Ok(c) = self.sup.start_group(self.now, GROUPS[g]) {
                    self.take(c.into());
                }
            }
            Step::Stop(g) => {
                if let Ok(c) = self.sup.stop_group(self.now, GROUPS[g], true) {
                    self.take(c.into());
                }
            }
            Step::RestartAgent(a) => {
                let (agent, group) = AGENTS[a];
                if let Ok(out) = self.sup.restart_agent(self.now, group, agent) {
                    self.take(out);
                }
            }
            Step::ApplyBad(a) => self.apply(Some(AGENTS[a].0)),
            Step::ApplyGood => self.apply(None),
            Step::Finish(i, fate) => self.finish(i, fate),
            Step::Die(i, code) => {
                let running: Vec<(String, ReplicaKey)> = self
                    .world
                    .containers
                    .iter()
                    .filter(|(_, c)| c.2)
                    .map(|(id, c)| (id.clone(), c.0.clone()))
                    .collect();
                if running.is_empty() {
                    return;
                }
                let (id, key) = running[i % running.len()].clone();
                if let Some(c) = self.world.containers.get_mut(&id) {
                    c.2 = false;
                }
                let at_ms = self.world.stamp(self.now);
                self.input(Input::ContainerDied {
                    key,
                    id,
                    code,
                    oom: false,
                    at_ms,
                    seen_late_ms: 0,
                });
            }
            Step::Vanish(i) => {
                let all: Vec<(String, ReplicaKey)> = self
                    .world
                    .containers
                    .iter()
                    .map(|(id, c)| (id.clone(), c.0.clone()))
                    .collect();
                if all.is_empty() {
                    return;
                }
                let (id, key) = all[i % all.len()].clone();
                let was_running = self.world.running(&id);
                self.world.containers.remove(&id);
                if was_running {
                    let at_ms = self.world.stamp(self.now);
                    self.input(Input::ContainerDied {
                        key: key.clone(),
                        id: id.clone(),
                        code: 137,
                        oom: false,
                        at_ms,
                        seen_late_ms: 0,
                    });
                }
                self.input(Input::ContainerRemoved { key, id });
            }
            Step::Probe(i, ok) => {
                let probed: Vec<(ReplicaKey, String)> = self
                    .sup
                    .replicas()
                    .filter_map(|r| r.container.as_ref().map(|c| (r.key.clone(), c.id.clone())))
                    .collect();
                if probed.is_empty() {
                    return;
                }
                let (key, id) = probed[i % probed.len()].clone();
                // A probe can only pass against a container that runs.
                let ok = ok && self.world.running(&id);
                self.input(Input::Health { key, id, ok });
            }
            Step::Tick(ms) => {
                self.now += ms;
                let out = self.sup.tick(self.now);
                self.take(out);
            }
        }
    }

    /// No replica is healthy without a running container of its own.
    fn check(&self, after: &Step) -> Result<(), TestCaseError> {
        for r in self.sup.replicas() {
            if self.sup.replica_healthy(r) {
                let id = r
                    .container
                    .as_ref()
                    .map(|c| c.id.clone())
                    .unwrap_or_default();
                prop_assert!(
                    self.world.running(&id)
                        && self.world.containers.get(&id).is_some_and(|c| c.0 == r.key),
                    "after {after:?}: {} called healthy on {id}, which does not run",
                    r.key
                );
            }
        }
        for g in GROUPS {
            let (_, running, healthy) = self.sup.group_counts(g);
            prop_assert!(healthy <= running);
            // Ready only while every required replica is healthy.
            if self.sup.group_ready(g) {
                prop_assert!(
                    self.sup.group_healthy(g),
                    "after {after:?}: {g} called ready with a required replica not healthy"
                );
            }
        }
        Ok(())
    }

    /// A good apply, every group started, the world well behaved: every
    /// wanted replica ends healthy and every group ready.
    fn converge(&mut self) -> Result<(), TestCaseError> {
        self.world.missing.clear();
        self.apply(None);
        for g in 0..GROUPS.len() {
            self.run(&Step::Start(g));
        }
        for _ in 0..60 {
            while !self.ops.is_empty() {
                self.finish(0, 0);
            }
            let probed: Vec<(ReplicaKey, String)> = self
                .sup
                .replicas()
                .filter_map(|r| r.container.as_ref().map(|c| (r.key.clone(), c.id.clone())))
                .collect();
            for (key, id) in probed {
                let ok = self.world.running(&id);
                self.input(Input::Health { key, id, ok });
            }
            if GROUPS.iter().all(|g| self.sup.group_ready(g)) && self.ops.is_empty() {
                return Ok(());
            }
            self.run(&Step::Tick(61_000));
        }
        let phases: Vec<String> = self
            .sup
            .replicas()
            .map(|r| format!("{} {:?} {:?} op={:?}", r.key, r.phase, r.health, r.op))
            .collect();
        prop_assert!(false, "no convergence: {phases:#?}");
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn no_replica_is_healthy_without_a_running_container_and_a_good_apply_converges(
        steps in proptest::collection::vec(step(), 1..60)
    ) {
        let mut m = Model::new();
        for s in &steps {
            m.run(s);
            m.check(s)?;
        }
        m.converge()?;
        m.check(&Step::ApplyGood)?;
    }
}
