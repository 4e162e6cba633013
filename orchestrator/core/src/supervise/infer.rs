//! Intent inferred from the running containers, for a daemon whose state
//! file was lost, damaged, or does not mention a group.
//!
//! The state file is a cache of intent; the running containers, with their
//! labels, are the evidence. On the first listing of Docker after start,
//! the supervisor marks started every group that the state does not
//! account for and of which a container runs. Rules:
//!
//! - A group counts as running when at least one container of one of its
//!   configured agents runs. A partially running group is marked started
//!   whole: its missing replicas are launched, as after a normal restart.
//!   Created or exited containers are no evidence (a stopped group leaves
//!   none behind, but a crashed agent with `restart: never` does).
//! - The groups a marked group depends on are marked with it, as
//!   `group start` does: a started group never runs without its
//!   dependencies.
//! - A container is placed in the group its agent has in the config (not
//!   the one in its label): the config decides where an agent belongs.
//! - Containers of agents no longer in the config are no evidence; they
//!   are stopped and removed, as after a reload that dropped the agent.
//! - A group the state file records as stopped by an operator is never
//!   inferred: its containers are the rest of a stop that a crash cut
//!   short, and they are stopped.
//! - With [`StateOrigin::Fresh`] nothing is inferred: every container of
//!   ours is unwanted and stopped, and the event says how many.
//! - What was inferred is written down at once, so the next start reads it.
//!
//! Slices follow the same idea: a running replica with no slice on record
//! gets the one its container's `io.orchestrator.gpu-slice` label
//! describes, read against the inventory, before anything is planned
//! (`adopt_observed_slices`). A MIG instance found this way is used but
//! not claimed as ours: only instances recorded as made here are destroyed.
//!
//! `state import` ([`Supervisor::restore`]) lives here too: the other way
//! desired state comes back after a loss.

use std::collections::BTreeSet;

use super::state::{
    CommandError, Commanded, ContainerFacts, ContainerStatus, Millis, Outcome, Persisted,
    StateOrigin, Supervisor, SupervisorEvent,
};
use crate::gpu::ReplicaKey;
use crate::graph::Graph;
use crate::model::HostConfig;

/// What the running containers say was wanted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inference {
    /// Groups to mark started, in start order (dependencies first).
    pub groups: Vec<String>,
    /// Running containers of configured agents in those groups.
    pub adopted: u32,
    /// Running containers of agents that are not in the config.
    pub unconfigured: u32,
}

/// Which groups to mark started, given the groups the state accounts for
/// (`known`: started or stopped by an operator) and the listed containers
/// `(replica, group label, facts)`. Pure: the rules are in the module doc.
pub fn infer_started(
    config: &HostConfig,
    group_graph: &Graph,
    known: &BTreeSet<String>,
    containers: &[(ReplicaKey, String, ContainerFacts)],
) -> Inference {
    let mut evidence: BTreeSet<String> = BTreeSet::new();
    let mut unconfigured = 0;
    for (key, _, facts) in containers {
        if facts.status != ContainerStatus::Running {
            continue;
        }
        match config.agent(&key.agent) {
            Some(agent) if !known.contains(&agent.group) => {
                evidence.insert(agent.group.clone());
            }
            Some(_) => {}
            None => unconfigured += 1,
        }
    }
    let roots: Vec<&str> = evidence.iter().map(String::as_str).collect();
    let closure = group_graph.closure(&roots);
    let groups: Vec<String> = group_graph
        .waves()
        .into_iter()
        .flatten()
        .filter(|g| closure.contains(g) && !known.contains(g))
        .collect();
    let adopted = containers
        .iter()
        .filter(|(key, _, f)| {
            f.status == ContainerStatus::Running
                && config
                    .agent(&key.agent)
                    .is_some_and(|a| groups.contains(&a.group))
        })
        .count();
    Inference {
        groups,
        adopted: u32::try_from(adopted).unwrap_or(u32::MAX),
        unconfigured,
    }
}

impl Supervisor {
    /// Arms the inference for the first listing of Docker. Without this
    /// call (tests, a supervisor built for planning) nothing is inferred.
    pub fn infer_intent(&mut self, origin: StateOrigin) {
        self.inference = Some(origin);
    }

    /// Runs the armed inference against the first listing, before the
    /// containers are adopted.
    pub(crate) fn apply_inference(
        &mut self,
        containers: &[(ReplicaKey, String, ContainerFacts)],
        out: &mut Outcome,
    ) {
        let Some(origin) = self.inference.take() else {
            return;
        };
        if origin == StateOrigin::Fresh {
            let stopping = containers
                .iter()
                .filter(|(_, _, f)| f.status == ContainerStatus::Running)
                .count();
            out.events.push(SupervisorEvent::FreshStart {
                stopping: u32::try_from(stopping).unwrap_or(u32::MAX),
            });
            // The old state is replaced now, so that a restart without
            // `--fresh` does not bring back what was just stopped.
            out.persist();
            return;
        }
        let known: BTreeSet<String> = self.started.union(&self.stopped).cloned().collect();
        let found = infer_started(&self.config, &self.group_graph, &known, containers);
        let report = match origin {
            StateOrigin::Damaged => true,
            StateOrigin::Missing => !containers.is_empty(),
            StateOrigin::Saved | StateOrigin::Fresh => !found.groups.is_empty(),
        };
        for g in &found.groups {
            self.started.insert(g.clone());
        }
        if !found.groups.is_empty() {
            out.persist();
        }
        if report {
            out.events.push(SupervisorEvent::StateInferred {
                origin,
                adopted: found.adopted,
                groups: found.groups,
                unconfigured: found.unconfigured,
            });
        }
    }
}

impl Supervisor {
    /// Replaces the desired state with an imported one (`state import`),
    /// whole or not at all: every group it names must be in the config.
    /// Started groups bring the groups they depend on, as `group start`
    /// does; groups started now and not in the import are stopped. The
    /// generation is the imported one; MIG instances recorded as ours are
    /// added to the ones already recorded (an instance is only ever
    /// destroyed if it exists, is ours and nothing uses it). Slices are
    /// not imported: running replicas keep theirs, new ones are planned.
    pub fn restore(
        &mut self,
        now: Millis,
        state: Persisted,
    ) -> Result<Commanded<Vec<String>>, CommandError> {
        let unknown: Vec<String> = state
            .started_groups
            .iter()
            .chain(&state.stopped_groups)
            .filter(|g| self.config.group(g).is_none())
            .cloned()
            .collect();
        if !unknown.is_empty() {
            return Err(CommandError::UnknownGroups(unknown));
        }
        let roots: Vec<&str> = state.started_groups.iter().map(String::as_str).collect();
        let wanted = self.group_graph.closure(&roots);
        let mut out = Outcome::default();
        for g in self.start_order(&self.started.clone()).into_iter().rev() {
            if !wanted.contains(&g) {
                self.started.remove(&g);
                self.ready_groups.remove(&g);
                self.ever_ready.remove(&g);
                out.events.push(SupervisorEvent::GroupStopping { group: g });
            }
        }
        for g in self.start_order(&wanted) {
            if self.started.insert(g.clone()) {
                self.ready_groups.remove(&g);
                self.ever_ready.remove(&g);
                out.events.push(SupervisorEvent::GroupStarting { group: g });
            }
        }
        self.stopped = state
            .stopped_groups
            .into_iter()
            .filter(|g| !self.started.contains(g))
            .collect();
        self.generation = state.generation;
        for m in state.owned_mig {
            if !self.owned_mig.contains(&m) {
                self.owned_mig.push(m);
            }
        }
        out.persist();
        self.settle(now, &mut out);
        Ok(Commanded {
            outcome: out,
            changed: self.started.iter().cloned().collect(),
        })
    }
}

impl Supervisor {
    /// Gives running replicas with no slice on record the slice their
    /// container's label describes, read against the inventory, so that
    /// planning counts what they really hold instead of placing them anew.
    /// A slice another replica already holds is not taken twice; a label
    /// that does not match the inventory leaves the replica to the planner.
    pub(crate) fn adopt_observed_slices(&mut self, out: &mut Outcome) {
        let Some(gpus) = self.inventory.clone() else {
            return;
        };
        let keys: Vec<ReplicaKey> = self
            .replicas
            .values()
            .filter(|r| r.slice.is_none() && r.is_running())
            .filter(|r| r.container.as_ref().is_some_and(|c| c.gpu_slice.is_some()))
            .map(|r| r.key.clone())
            .collect();
        for key in keys {
            let Some(text) = self
                .replicas
                .get(&key)
                .and_then(|r| r.container.as_ref())
                .and_then(|c| c.gpu_slice.clone())
            else {
                continue;
            };
            let Some(slice) = crate::gpu::Slice::from_description(&text, &gpus) else {
                continue;
            };
            let shared = matches!(
                slice,
                crate::gpu::Slice::Mps { .. } | crate::gpu::Slice::TimeSlice { .. }
            );
            if !shared
                && self
                    .replicas
                    .values()
                    .any(|r| r.slice.as_ref() == Some(&slice))
            {
                continue;
            }
            let depth = self
                .agents
                .get(&key.agent)
                .and_then(|a| a.gpu.as_ref())
                .and_then(|g| {
                    g.chain()
                        .position(|q| q.kind.kind_name() == slice.kind_name())
                })
                .unwrap_or(0);
            let Some(r) = self.replicas.get_mut(&key) else {
                continue;
            };
            out.events.push(SupervisorEvent::SliceAssigned {
                replica: key.clone(),
                group: r.group.clone(),
                slice: slice.clone(),
                fallback_depth: u8::try_from(depth).unwrap_or(u8::MAX),
            });
            r.slice = Some(slice);
            r.slice_depth = u8::try_from(depth).unwrap_or(u8::MAX);
            out.persist();
        }
    }
}
