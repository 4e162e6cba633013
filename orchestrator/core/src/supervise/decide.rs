//! Transitions on inputs and commands, and the decision pass that turns
//! the resulting state into actions.

use std::collections::{BTreeMap, BTreeSet};

use super::rollout::{RolloutGate, RolloutKind};
use super::state::*;
use crate::gpu::ReplicaKey;
use crate::graph::{agent_graph, group_graph};
use crate::model::{HostConfig, RestartMode};

/// A container's death, as [`Input::ContainerDied`] reports it.
struct Died {
    id: String,
    code: i64,
    oom: bool,
    at_ms: u64,
    seen_late_ms: u64,
}

impl Supervisor {
    /// Applies something that happened and decides what to do next.
    pub fn handle(&mut self, now: Millis, input: Input) -> Outcome {
        let mut out = Outcome::default();
        match input {
            Input::Resync { containers } => self.resync(now, containers, &mut out),
            Input::ContainerStarted { key, id } => {
                if let Some(r) = self.replicas.get_mut(&key)
                    && r.container.as_ref().is_some_and(|c| c.id == id)
                    && r.op.is_none()
                    && !r.is_running()
                {
                    if let Some(c) = r.container.as_mut() {
                        c.status = ContainerStatus::Running;
                    }
                    mark_started(r, now, &mut out);
                }
            }
            Input::ContainerDied {
                key,
                id,
                code,
                oom,
                at_ms,
                seen_late_ms,
            } => self.died(
                now,
                key,
                Died {
                    id,
                    code,
                    oom,
                    at_ms,
                    seen_late_ms,
                },
                &mut out,
            ),
            Input::ContainerRemoved { key, id } => {
                if let Some(r) = self.replicas.get_mut(&key)
                    && r.container.as_ref().is_some_and(|c| c.id == id)
                    && r.op.is_none()
                {
                    r.container = None;
                    r.health = Health::Unknown;
                    r.phase = Phase::Pending;
                    out.actions.push(Action::UnwatchHealth { key: key.clone() });
                }
            }
            Input::Health { key, id, ok } => {
                if !self.health(now, key, id, ok, &mut out) {
                    // Nothing the passes look at changed (the steady state:
                    // a healthy replica passed its probe), so the last pass
                    // still holds; what time alone changes is the tick's
                    // (`next_deadline`). Probes are most of the inputs of a
                    // running host: this keeps each one O(1).
                    return out;
                }
            }
            Input::OpFinished { key, op, result } => {
                self.op_finished(now, key, op, result, &mut out)
            }
            Input::ReplacementNotMade { key, error } => {
                self.replacement_not_made(now, key, error, &mut out)
            }
            Input::DockerDown => {
                if self.docker_up {
                    self.docker_up = false;
                    out.events.push(SupervisorEvent::DockerDown);
                }
            }
            Input::GpuMemory { gpus } => {
                if !self.gpu_memory(gpus, &mut out) {
                    // No episode started: nothing a pass looks at changed.
                    return out;
                }
            }
            Input::Inventory { gpus } => {
                // Instances that are gone (a reboot, a reset) are no longer ours to track.
                let before = self.owned_mig.len();
                self.owned_mig.retain(|o| {
                    gpus.iter().any(|g| {
                        g.uuid == o.gpu_uuid
                            && matches!(&g.mig, crate::gpu::MigState::Enabled { instances, .. }
                                if instances.iter().any(|i| i.gi_id == o.gi_id && i.placement_start == o.placement_start))
                    })
                });
                if self.owned_mig.len() != before {
                    out.persist();
                }
                self.inventory = Some(gpus);
                self.gpu_unavailable = None;
            }
            Input::GpuUnavailable { reason } => {
                if self.gpu_unavailable.as_deref() != Some(reason.as_str()) {
                    out.events.push(SupervisorEvent::GpuUnavailable {
                        reason: reason.clone(),
                    });
                }
                self.inventory = None;
                self.gpu_unavailable = Some(reason);
            }
            Input::Remote { host, state } => self.take_remote(now, host, state),
            Input::RemoteProbe {
                host,
                agent,
                healthy,
            } => self.take_remote_probe(host, agent, healthy),
            Input::MpsServerFault(fault) => self.mps_server_fault(fault, &mut out),
            Input::SliceReady { key, slice } => {
                if let crate::gpu::Slice::Mig {
                    gpu_uuid,
                    gi_id: Some(gi_id),
                    profile_id,
                    placement_start,
                    ..
                } = &slice
                {
                    let owned = OwnedMig {
                        gpu_uuid: gpu_uuid.clone(),
                        gi_id: *gi_id,
                        profile_id: *profile_id,
                        placement_start: *placement_start,
                    };
                    if !self.owned_mig.contains(&owned) {
                        self.owned_mig.push(owned);
                    }
                }
                if let Some(r) = self.replicas.get_mut(&key) {
                    r.slice = Some(slice);
                }
                out.persist();
            }
        }
        self.settle(now, &mut out);
        out
    }

    /// Re-evaluates timers (backoffs, retries, stability).
    pub fn tick(&mut self, now: Millis) -> Outcome {
        let mut out = Outcome::default();
        self.settle(now, &mut out);
        out
    }

    /// The next moment `tick` has something to do, if any.
    pub fn next_deadline(&self) -> Option<Millis> {
        self.replicas
            .values()
            .filter_map(|r| match &r.phase {
                Phase::BackingOff { until, .. } => Some(*until),
                Phase::Failed { retry_at, .. } => Some(*retry_at),
                _ if (r.failures > 0 || r.crashloop) && !replacing(&self.hashes, r) => {
                    r.healthy_since.map(|t| t + self.stable_after(&r.key.agent))
                }
                _ => None,
            })
            .chain(self.next_remote_deadline())
            .chain(self.next_ready_deadline())
            .chain(self.next_rollout_deadline())
            .chain(
                self.replicas
                    .values()
                    .filter(|r| r.op.is_none() && replacing(&self.hashes, r))
                    .map(|r| r.replace_after),
            )
            .min()
    }

    /// The earliest moment a healthy group that is not ready yet has been
    /// healthy for its `min_healthy`.
    fn next_ready_deadline(&self) -> Option<Millis> {
        self.started
            .iter()
            .filter(|g| self.group_wanted(g) && !self.ready_groups.contains(*g))
            .filter_map(|g| self.group_ready_at(g))
            .min()
    }

    /// Starts a group and what it depends on, in order. Changed: the
    /// groups it started (the group itself when all were started).
    pub fn start_group(
        &mut self,
        now: Millis,
        group: &str,
    ) -> Result<Commanded<Vec<String>>, CommandError> {
        if self.config.group(group).is_none() {
            return Err(CommandError::UnknownGroup(group.to_string()));
        }
        let mut out = Outcome::default();
        let mut touched = Vec::new();
        // Starting a group starts what it depends on, in order.
        for g in self.start_order(&self.group_graph.closure(&[group])) {
            self.stopped.remove(&g);
            if self.started.insert(g.clone()) {
                self.ready_groups.remove(&g);
                self.ever_ready.remove(&g);
                touched.push(g.clone());
                out.events
                    .push(SupervisorEvent::GroupStarting { group: g.clone() });
            }
            // A replica that stayed down (its policy did not restart it,
            // or it exited while its group was being stopped) is started
            // again: a start means running, as `docker compose up` does.
            for r in self.replicas.values_mut().filter(|r| r.group == g) {
                if matches!(r.phase, Phase::Exited { .. }) && r.op.is_none() {
                    r.restart_requested = true;
                }
            }
        }
        out.persist();
        self.settle(now, &mut out);
        Ok(commanded(out, touched, group))
    }

    pub fn stop_group(
        &mut self,
        now: Millis,
        group: &str,
        with_dependents: bool,
    ) -> Result<Commanded<Vec<String>>, CommandError> {
        if self.config.group(group).is_none() {
            return Err(CommandError::UnknownGroup(group.to_string()));
        }
        let dependents: Vec<String> = self
            .group_graph
            .reverse_closure(&[group])
            .into_iter()
            .filter(|g| g != group && self.started.contains(g))
            .collect();
        if !dependents.is_empty() && !with_dependents {
            return Err(CommandError::NeededBy {
                group: group.to_string(),
                needed_by: dependents,
                restart: false,
            });
        }
        let mut out = Outcome::default();
        let mut touched = Vec::new();
        for g in std::iter::once(group.to_string()).chain(dependents) {
            if self.started.remove(&g) {
                self.ready_groups.remove(&g);
                self.ever_ready.remove(&g);
                self.stopped.insert(g.clone());
                touched.push(g.clone());
                out.events.push(SupervisorEvent::GroupStopping { group: g });
            }
        }
        out.persist();
        self.settle(now, &mut out);
        Ok(commanded(out, touched, group))
    }

    /// Stops every group (daemon shutdown with `shutdown: stop`).
    pub fn stop_all(&mut self, now: Millis) -> Outcome {
        let mut out = Outcome::default();
        for g in std::mem::take(&mut self.started) {
            out.events.push(SupervisorEvent::GroupStopping { group: g });
        }
        self.ready_groups.clear();
        self.ever_ready.clear();
        self.settle(now, &mut out);
        out
    }

    /// Stops the group's agents (reverse order) and starts them again. A
    /// group that started groups depend on is refused, as a stop is, unless
    /// `with_dependents`: then they go down first and come back after it,
    /// in dependency order.
    pub fn restart_group(
        &mut self,
        now: Millis,
        group: &str,
        with_dependents: bool,
    ) -> Result<Commanded<Vec<String>>, CommandError> {
        if self.config.group(group).is_none() {
            return Err(CommandError::UnknownGroup(group.to_string()));
        }
        if !self.started.contains(group) {
            return self.start_group(now, group);
        }
        let dependents: Vec<String> = self
            .group_graph
            .reverse_closure(&[group])
            .into_iter()
            .filter(|g| g != group && self.started.contains(g))
            .collect();
        if !dependents.is_empty() && !with_dependents {
            return Err(CommandError::NeededBy {
                group: group.to_string(),
                needed_by: dependents,
                restart: true,
            });
        }
        let mut out = Outcome::default();
        let mut touched = Vec::new();
        for g in std::iter::once(group.to_string()).chain(dependents) {
            if self.restarting.insert(g.clone()) {
                self.ready_groups.remove(&g);
                self.ever_ready.remove(&g);
                touched.push(g.clone());
                out.events.push(SupervisorEvent::GroupStopping { group: g });
            }
        }
        self.settle(now, &mut out);
        Ok(commanded(out, touched, group))
    }

    /// Agents with a replica that still has a container or an operation
    /// in flight, in one pass over the table.
    fn active_agents(&self) -> BTreeSet<&str> {
        self.scan()
            .filter(|r| r.container.is_some() || r.op.is_some())
            .map(|r| r.key.agent.as_str())
            .collect()
    }

    /// Sets an agent's replica count at run time (`None`: back to the
    /// file's). New replicas start as any other (after their
    /// dependencies, through the GPU planner); replicas beyond the count
    /// stop, highest first. Changed: the count before and after.
    pub fn scale_agent(
        &mut self,
        now: Millis,
        group: &str,
        agent: &str,
        replicas: Option<u32>,
    ) -> Result<Commanded<(u32, u32)>, CommandError> {
        self.set_count(now, group, agent, replicas, None)
    }

    /// Sets an agent's replica count by its autoscaler's decision: as
    /// `scale`, with the decision kept (`autoscaled`) to say why the agent
    /// has the replicas it has.
    pub fn autoscale_agent(
        &mut self,
        now: Millis,
        group: &str,
        agent: &str,
        decision: crate::autoscale::Decision,
    ) -> Result<Commanded<(u32, u32)>, CommandError> {
        self.set_count(now, group, agent, Some(decision.to), Some(decision))
    }

    fn set_count(
        &mut self,
        now: Millis,
        group: &str,
        agent: &str,
        replicas: Option<u32>,
        decision: Option<crate::autoscale::Decision>,
    ) -> Result<Commanded<(u32, u32)>, CommandError> {
        let file = self
            .config
            .agent(agent)
            .filter(|a| a.group == group)
            .ok_or_else(|| CommandError::UnknownAgent {
                group: group.to_string(),
                agent: agent.to_string(),
            })?;
        let to = replicas.unwrap_or(file.replicas);
        let refuse = |why| CommandError::Scale {
            group: group.to_string(),
            agent: agent.to_string(),
            asked: to,
            why,
        };
        if let Some(a) = &file.autoscale
            && !(a.min..=a.max).contains(&to)
        {
            return Err(refuse(ScaleRefusal::OutOfBounds {
                min: a.min,
                max: a.max,
            }));
        }
        if to > crate::model::MAX_REPLICAS {
            return Err(refuse(ScaleRefusal::TooMany {
                max: crate::model::MAX_REPLICAS,
            }));
        }
        for p in &file.ports {
            match (p.host_port, p.host_port_end) {
                (Some(port), None) if to > 1 => {
                    return Err(refuse(ScaleRefusal::FixedHostPort { port }));
                }
                (Some(first), Some(last)) if u32::from(last - first) + 1 < to => {
                    return Err(refuse(ScaleRefusal::PortRangeTooSmall { first, last }));
                }
                _ => {}
            }
        }
        let from = self.replica_count(agent);
        match replicas {
            Some(n) => self.scale.insert(agent.to_string(), n),
            None => self.scale.remove(agent),
        };
        if let Some(a) = self.agents.get_mut(agent) {
            a.replicas = to;
        }
        let mut out = Outcome::default();
        match decision {
            Some(d) => {
                self.autoscaled.insert(agent.to_string(), Some(d));
                out.events.push(SupervisorEvent::AgentAutoscaled {
                    agent: agent.to_string(),
                    group: group.to_string(),
                    from,
                    to,
                    cause: d.cause,
                });
            }
            None => {
                self.autoscaled.remove(agent);
                out.events.push(SupervisorEvent::AgentScaled {
                    agent: agent.to_string(),
                    group: group.to_string(),
                    from,
                    to,
                    reset: replicas.is_none(),
                });
            }
        }
        out.persist();
        self.settle(now, &mut out);
        Ok(Commanded {
            outcome: out,
            changed: (from, to),
        })
    }

    /// Restarts an agent's replicas one at a time.
    pub fn restart_agent(
        &mut self,
        now: Millis,
        group: &str,
        agent: &str,
    ) -> Result<Outcome, CommandError> {
        let a = self
            .agents
            .get(agent)
            .filter(|a| a.group == group)
            .ok_or_else(|| CommandError::UnknownAgent {
                group: group.to_string(),
                agent: agent.to_string(),
            })?;
        let n = a.replicas;
        let mut out = Outcome::default();
        for i in 0..n {
            if let Some(r) = self.replicas.get_mut(&ReplicaKey::new(agent, i)) {
                r.restart_requested = true;
                out.events.push(SupervisorEvent::AgentRestartRequested {
                    replica: r.key.clone(),
                    group: r.group.clone(),
                });
            }
        }
        self.settle(now, &mut out);
        Ok(out)
    }

    /// Takes a new config. Agents whose hash changed are recreated, one
    /// replica at a time; removed agents and groups are stopped.
    pub fn reload(
        &mut self,
        now: Millis,
        config: HostConfig,
        hashes: BTreeMap<String, String>,
    ) -> Result<Commanded<Reloaded>, CommandError> {
        self.reload_as(now, config, hashes, RolloutKind::Apply)
    }

    /// [`Supervisor::reload`], saying why (a rollback, an undo): the
    /// changed agents roll out as `kind` does.
    pub fn reload_as(
        &mut self,
        now: Millis,
        config: HostConfig,
        hashes: BTreeMap<String, String>,
        kind: RolloutKind,
    ) -> Result<Commanded<Reloaded>, CommandError> {
        if config.host.name != self.config.host.name {
            return Err(CommandError::WrongHost {
                current: self.config.host.name.clone(),
                new: config.host.name,
            });
        }
        let counts_before: BTreeMap<String, u32> = self
            .agents
            .iter()
            .map(|(name, a)| (name.clone(), a.replicas))
            .collect();
        let mut changed: Vec<String> = hashes
            .iter()
            .filter(|(a, h)| self.hashes.get(*a) != Some(*h))
            .map(|(a, _)| a.clone())
            .collect();
        changed.extend(
            self.hashes
                .keys()
                .filter(|a| !hashes.contains_key(*a))
                .cloned(),
        );
        changed.sort();
        let gpu_changed: Vec<String> = config
            .agents()
            .filter(|a| self.agents.get(&a.name).is_none_or(|old| old.gpu != a.gpu))
            .map(|a| a.name.clone())
            .collect();
        self.agent_graph = agent_graph(&config);
        self.group_graph = group_graph(&config);
        self.agent_order = self.agent_graph.waves().into_iter().flatten().collect();
        // A count set at run time holds while the file's count for that
        // agent stays what it was; an apply that changes it takes over.
        let old_counts: BTreeMap<String, u32> = self
            .config
            .agents()
            .map(|a| (a.name.clone(), a.replicas))
            .collect();
        self.agents = config
            .agents()
            .map(|a| (a.name.clone(), a.clone()))
            .collect();
        let agents = &mut self.agents;
        self.scale.retain(|agent, n| match agents.get_mut(agent) {
            Some(a) if old_counts.get(agent) == Some(&a.replicas) => {
                a.replicas = *n;
                true
            }
            _ => false,
        });
        let scale = &self.scale;
        self.autoscaled.retain(|agent, _| scale.contains_key(agent));
        self.hashes = hashes;
        self.started.retain(|g| config.group(g).is_some());
        self.stopped.retain(|g| config.group(g).is_some());
        self.restarting.retain(|g| config.group(g).is_some());
        // The counts of agents no longer configured are no one's.
        let agents = &self.agents;
        self.restart_counts
            .retain(|k, _| agents.contains_key(&k.agent));
        self.config = std::sync::Arc::new(config);
        self.generation += 1;
        // A changed GPU request invalidates the slice.
        for r in self.replicas.values_mut() {
            if gpu_changed.contains(&r.key.agent) {
                r.slice = None;
                r.plan_error = None;
            }
        }
        let mut out = Outcome::default();
        out.events.push(SupervisorEvent::ConfigApplied {
            generation: self.generation,
            changed: changed.clone(),
        });
        out.persist();
        let active = self.active_agents();
        let recreated: Vec<String> = changed
            .iter()
            .filter(|agent| {
                active.contains(agent.as_str())
                    || self
                        .agents
                        .get(agent.as_str())
                        .is_some_and(|a| self.group_wanted(&a.group))
            })
            .cloned()
            .collect();
        // Only agents that are still configured have replicas to replace.
        let replaced = recreated
            .iter()
            .filter(|a| self.agents.contains_key(a.as_str()))
            .cloned()
            .collect();
        self.begin_rollout(now, kind, replaced, &mut out);
        self.settle(now, &mut out);
        // Counts that change with nothing recreated: replicas start or stop.
        let rescaled = self
            .agents
            .iter()
            .filter(|(name, _)| !changed.contains(name))
            .filter_map(|(name, a)| {
                let before = *counts_before.get(name)?;
                (before != a.replicas).then(|| (name.clone(), before, a.replicas))
            })
            .collect();
        Ok(Commanded {
            outcome: out,
            changed: Reloaded {
                generation: self.generation,
                changed,
                recreated,
                rescaled,
            },
        })
    }

    // ---- transitions ----

    fn resync(
        &mut self,
        now: Millis,
        containers: Vec<(ReplicaKey, String, ContainerFacts)>,
        out: &mut Outcome,
    ) {
        if !self.docker_up {
            self.docker_up = true;
            out.events.push(SupervisorEvent::DockerUp);
        }
        self.apply_inference(&containers, out);
        let mut by_key: BTreeMap<ReplicaKey, Vec<(String, ContainerFacts)>> = BTreeMap::new();
        for (key, group, facts) in containers {
            by_key.entry(key).or_default().push((group, facts));
        }
        // Containers that vanished while we were not looking.
        for r in self.replicas.values_mut() {
            if r.op.is_some() {
                continue;
            }
            if let Some(c) = &r.container
                && !by_key
                    .get(&r.key)
                    .is_some_and(|v| v.iter().any(|(_, f)| f.id == c.id))
            {
                r.container = None;
                r.health = Health::Unknown;
                r.phase = Phase::Pending;
                out.actions
                    .push(Action::UnwatchHealth { key: r.key.clone() });
            }
        }
        for (key, mut found) in by_key {
            let current = self
                .replicas
                .get(&key)
                .and_then(|r| r.container.as_ref().map(|c| c.id.clone()));
            // Keep the container we already track, else a running one, else the first.
            let keep = found
                .iter()
                .position(|(_, f)| Some(&f.id) == current.as_ref())
                .or_else(|| {
                    found
                        .iter()
                        .position(|(_, f)| f.status == ContainerStatus::Running)
                })
                .unwrap_or(0);
            let (group, facts) = found.swap_remove(keep);
            for (_, dup) in found {
                out.events.push(SupervisorEvent::DuplicateRemoved {
                    replica: key.clone(),
                    container: dup.id.clone(),
                });
                out.actions.push(if dup.status == ContainerStatus::Running {
                    Action::Stop {
                        key: key.clone(),
                        id: dup.id,
                    }
                } else {
                    Action::Remove {
                        key: key.clone(),
                        id: dup.id,
                    }
                });
            }
            let group = self
                .agents
                .get(&key.agent)
                .map(|a| a.group.clone())
                .unwrap_or(group);
            let r = self
                .replicas
                .entry(key.clone())
                .or_insert_with(|| Replica::new(key.clone(), &group));
            if r.op.is_some() {
                continue;
            }
            let first_sight = r.container.as_ref().map(|c| &c.id) != Some(&facts.id);
            let was_running = r.is_running();
            let status = facts.status;
            r.container = Some(facts.clone());
            if first_sight {
                out.events.push(SupervisorEvent::AgentAdopted {
                    replica: key.clone(),
                    group: r.group.clone(),
                    container: facts.id.clone(),
                });
            }
            match status {
                ContainerStatus::Running => {
                    if first_sight || !was_running {
                        r.started_at = Some(now);
                        // How long it has run, from Docker's `StartedAt`.
                        let wall_now = self.wall_origin.saturating_add(now);
                        r.up_before_adoption = (self.wall_origin > 0
                            && facts.started_at_ms > 0
                            && facts.started_at_ms <= wall_now)
                            .then(|| wall_now - facts.started_at_ms);
                        r.health = Health::Unknown;
                        r.probe_failures = 0;
                        r.phase = Phase::Running;
                        out.actions.push(Action::WatchHealth {
                            key: key.clone(),
                            id: facts.id.clone(),
                        });
                    }
                }
                ContainerStatus::Created => r.phase = Phase::Pending,
                ContainerStatus::Exited { code, oom } => {
                    if was_running {
                        out.actions.push(Action::UnwatchHealth { key: key.clone() });
                    }
                    if !matches!(r.phase, Phase::BackingOff { .. } | Phase::Exited { .. }) {
                        // Found stopped (it died while nobody watched): bring
                        // it back now if its policy says so.
                        let restart = self
                            .agents
                            .get(&key.agent)
                            .is_some_and(|a| restart_wanted(a.restart.policy, code, oom));
                        r.phase = if restart {
                            Phase::BackingOff {
                                until: now,
                                exit_code: Some(code),
                            }
                        } else {
                            Phase::Exited { code }
                        };
                    }
                }
            }
        }
        self.sync_replica_table();
    }

    fn died(&mut self, now: Millis, key: ReplicaKey, died: Died, out: &mut Outcome) {
        let Died {
            id,
            code,
            oom,
            at_ms,
            seen_late_ms,
        } = died;
        let wanted = self.wanted(&key);
        let restart = self.should_restart(&key, code, oom);
        let Some(r) = self.replicas.get_mut(&key) else {
            return;
        };
        if matches!(
            r.op,
            Some(OpKind::Launch | OpKind::Recreate | OpKind::Start | OpKind::Restart)
        ) {
            // Settled when the operation reports which container it started
            // and when: the event can overtake the operation's own report.
            // Whatever it settles to, the container that passed its probe
            // is not running now.
            if r.container.as_ref().is_some_and(|c| c.id == id) {
                r.health = Health::Unknown;
                r.healthy_since = None;
                r.up_before_adoption = None;
                r.healthy_credit = 0;
            }
            r.early_exit = Some(EarlyExit {
                id,
                code,
                oom,
                at_ms,
            });
            return;
        }
        let Some(c) = r.container.as_mut().filter(|c| c.id == id) else {
            return;
        };
        if !matches!(c.status, ContainerStatus::Running) {
            return;
        }
        c.status = ContainerStatus::Exited { code, oom };
        let was_healthy = r.health == Health::Healthy;
        r.health = Health::Unknown;
        r.healthy_since = None;
        r.up_before_adoption = None;
        r.healthy_credit = 0;
        out.actions.push(Action::UnwatchHealth { key: key.clone() });
        // A stop or restart we asked for: the operation reports its own end.
        if r.op.is_some() || !wanted || r.held_by_crashloop {
            return;
        }
        out.events.push(SupervisorEvent::AgentExited {
            replica: key.clone(),
            group: r.group.clone(),
            code,
            oom,
        });
        if restart {
            let first = was_healthy && self.replicas.get(&key).is_some_and(|r| r.failures == 0);
            let late_ms = if first { None } else { Some(seen_late_ms) };
            self.schedule_restart(now, &key, Some(code), late_ms, RestartReason::Exited, out);
        } else if let Some(r) = self.replicas.get_mut(&key) {
            stays_down(r, code, out);
        }
    }

    /// Measured GPU memory: an event for each episode over a limit that
    /// starts, and a restart asked for where the agent says so and its
    /// restart policy restarts anything. Only running replicas with no
    /// operation in flight are judged; the others' episodes end, and an
    /// episode belongs to one run of a container, so a restarted one
    /// starts afresh. Returns whether any started.
    fn gpu_memory(&mut self, gpus: Vec<crate::over_limit::GpuMemory>, out: &mut Outcome) -> bool {
        use crate::over_limit::{GpuMemory, MemoryUse};
        let replicas = &self.replicas;
        let runs: Vec<GpuMemory<(ReplicaKey, Millis)>> = gpus
            .into_iter()
            .map(|g| GpuMemory {
                gpu_index: g.gpu_index,
                gpu_uuid: g.gpu_uuid,
                replicas: g
                    .replicas
                    .into_iter()
                    .filter_map(|u| {
                        let r = replicas.get(&u.replica)?;
                        let run = r.started_at.filter(|_| r.is_running() && r.op.is_none())?;
                        Some(MemoryUse {
                            replica: (u.replica, run),
                            used_bytes: u.used_bytes,
                            limit_bytes: u.limit_bytes,
                        })
                    })
                    .collect(),
            })
            .collect();
        self.over_limits
            .retain(|(k, run)| replicas.get(k).is_some_and(|r| r.started_at == Some(*run)));
        let started = self.over_limits.observe(&runs);
        for o in &started {
            let key = &o.replica.0;
            let Some(agent) = self.agents.get(&key.agent) else {
                continue;
            };
            let action = agent.gpu_over_limit;
            let restart = action == crate::model::OverLimit::Restart
                && agent.restart.policy != RestartMode::Never;
            let Some(r) = self.replicas.get_mut(key) else {
                continue;
            };
            out.events.push(SupervisorEvent::AgentGpuOverLimit {
                replica: key.clone(),
                group: r.group.clone(),
                gpu_index: o.gpu_index,
                gpu_uuid: o.gpu_uuid.clone(),
                used_bytes: o.used_bytes,
                limit_bytes: o.limit_bytes,
                action,
            });
            if restart {
                r.over_limit_restart = true;
            }
        }
        !started.is_empty()
    }

    /// Counts a failure and sets the backoff; marks a crash loop. The wait
    /// counts from the exit: `late_ms` (how long ago it happened) is taken
    /// off it, but never more than half of it, so a clock that disagrees
    /// with Docker's cannot make a restart immediate. `late_ms: None`: no
    /// wait at all (a healthy replica's first exit since it was stable:
    /// it comes back at once, and its backoff grows from the next one).
    fn schedule_restart(
        &mut self,
        now: Millis,
        key: &ReplicaKey,
        exit_code: Option<i64>,
        late_ms: Option<u64>,
        reason: RestartReason,
        out: &mut Outcome,
    ) {
        if !self.agents.contains_key(&key.agent) {
            return;
        }
        let failures = self.replicas.get(key).map(|r| r.failures + 1).unwrap_or(1);
        let delay = match late_ms {
            Some(late_ms) => {
                let delay = self.backoff_delay(key, failures);
                delay - late_ms.min(delay / 2)
            }
            None => 0,
        };
        let Some(r) = self.replicas.get_mut(key) else {
            return;
        };
        r.phase = Phase::BackingOff {
            until: now + delay,
            exit_code,
        };
        out.events.push(SupervisorEvent::AgentRestarting {
            replica: key.clone(),
            group: r.group.clone(),
            in_ms: delay,
            attempt: failures,
            reason,
        });
        self.note_failure(now, key, out);
    }

    /// One more failure of the replica (an exit to restart from, or a
    /// failed launch): its backoff grows, and enough of them within the
    /// agent's window mark a crash loop, which holds its dependents.
    /// Returns the delay before the next try.
    fn note_failure(&mut self, now: Millis, key: &ReplicaKey, out: &mut Outcome) -> Millis {
        let (restarts_limit, window) = match self.agents.get(&key.agent) {
            Some(a) => (
                a.restart.crashloop.restarts,
                a.restart.crashloop.window.as_millis() as u64,
            ),
            None => return 0,
        };
        let failures = self.replicas.get(key).map(|r| r.failures + 1).unwrap_or(1);
        let delay = self.backoff_delay(key, failures);
        let Some(r) = self.replicas.get_mut(key) else {
            return delay;
        };
        r.failures = failures;
        r.restart_times.push_back(now);
        while r
            .restart_times
            .front()
            .is_some_and(|t| now.saturating_sub(*t) > window)
        {
            r.restart_times.pop_front();
        }
        if !r.crashloop && r.restart_times.len() as u32 >= restarts_limit {
            r.crashloop = true;
            out.events.push(SupervisorEvent::AgentCrashLoop {
                replica: key.clone(),
                group: r.group.clone(),
                restarts: r.restart_times.len() as u32,
                window_ms: window,
            });
            self.hold_dependents(&key.agent);
        }
        delay
    }

    /// Marks every replica that (transitively, through required
    /// dependencies) needs `agent` as held.
    fn hold_dependents(&mut self, agent: &str) {
        for dependent in self.required_dependents(agent) {
            let keys = self.keys_of(&dependent);
            for key in keys {
                if let Some(r) = self.replicas.get_mut(&key) {
                    r.held_by_crashloop = true;
                }
            }
        }
    }

    /// Agents that need `agent`, transitively, through required edges.
    fn required_dependents(&self, agent: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut todo = vec![agent.to_string()];
        while let Some(a) = todo.pop() {
            let required = self.agents.get(&a).is_some_and(|x| x.required);
            if !required {
                continue;
            }
            for d in self.agent_graph.dependents_of(&a) {
                if out.insert(d.to_string()) {
                    todo.push(d.to_string());
                }
            }
        }
        out.remove(agent);
        out
    }

    /// Whether anything `agent` needs (transitively, required) is crash-looping.
    fn upstream_crashloop(&self, agent: &str) -> bool {
        let closure = self.agent_graph.closure(&[agent]);
        closure.iter().filter(|a| a.as_str() != agent).any(|a| {
            self.agents.get(a).is_some_and(|x| x.required)
                && self.replicas_of(a).any(|r| r.crashloop)
        })
    }

    /// The required agents `agent` needs (transitively) that are
    /// crash-looping, as what it waits for.
    fn crashlooping_upstream(&self, agent: &str) -> Vec<Wait> {
        let closure = self.agent_graph.closure(&[agent]);
        closure
            .iter()
            .filter(|a| a.as_str() != agent)
            .filter(|a| {
                self.agents.get(*a).is_some_and(|x| x.required)
                    && self.replicas_of(a).any(|r| r.crashloop)
            })
            .map(|a| Wait::CrashLoop(a.clone()))
            .collect()
    }

    /// Applies a probe result; whether the replica's health changed.
    fn health(
        &mut self,
        now: Millis,
        key: ReplicaKey,
        id: String,
        ok: bool,
        out: &mut Outcome,
    ) -> bool {
        let (retries, start_period) = match self.agents.get(&key.agent) {
            Some(a) => (a.health.retries, a.health.start_period.as_millis() as u64),
            None => return false,
        };
        let Some(r) = self.replicas.get_mut(&key) else {
            return false;
        };
        if !r.is_running() || r.container.as_ref().is_none_or(|c| c.id != id) {
            return false;
        }
        let before = r.health;
        if ok {
            r.probe_failures = 0;
            if r.health != Health::Healthy {
                r.health = Health::Healthy;
                // A container adopted running, healthy at its first probe,
                // is dated from its start: it ran before the daemon saw it.
                r.healthy_since = Some(now);
                r.healthy_credit = r
                    .up_before_adoption
                    .take()
                    .map_or(0, |up| up + now.saturating_sub(r.started_at.unwrap_or(now)));
                out.events.push(SupervisorEvent::AgentHealthy {
                    replica: key.clone(),
                    group: r.group.clone(),
                });
                // A crash-looping replica is recovered only once it has
                // stayed healthy for its stability period (see `settle`).
            }
        } else {
            // As with Docker: failures in the start period do not count,
            // unless the replica has already been healthy since it started.
            let in_start_period =
                r.healthy_since.is_none() && r.started_at.is_some_and(|t| now < t + start_period);
            if in_start_period {
                return false;
            }
            r.probe_failures += 1;
            if r.probe_failures >= retries && r.health != Health::Unhealthy {
                r.health = Health::Unhealthy;
                r.healthy_since = None;
                r.up_before_adoption = None;
                r.healthy_credit = 0;
                out.events.push(SupervisorEvent::AgentUnhealthy {
                    replica: key.clone(),
                    group: r.group.clone(),
                });
            }
        }
        r.health != before
    }

    fn op_finished(
        &mut self,
        now: Millis,
        key: ReplicaKey,
        op: OpKind,
        result: Result<OpSuccess, LaunchError>,
        out: &mut Outcome,
    ) {
        let wanted = self.wanted(&key);
        let Some(r) = self.replicas.get_mut(&key) else {
            return;
        };
        if r.op != Some(op) {
            return;
        }
        r.op = None;
        if matches!(op, OpKind::Stop | OpKind::Remove) {
            r.early_exit = None;
        }
        match (op, result) {
            (OpKind::Stop | OpKind::Remove, Ok(_)) => {
                r.container = None;
                r.health = Health::Unknown;
                r.started_at = None;
                r.healthy_since = None;
                r.up_before_adoption = None;
                r.healthy_credit = 0;
                r.phase = if wanted {
                    Phase::Pending
                } else {
                    Phase::Stopped
                };
                out.events.push(SupervisorEvent::AgentStopped {
                    replica: key.clone(),
                    group: r.group.clone(),
                });
            }
            (_, Ok(success)) => {
                if let Some(s) = success.slice {
                    r.slice = Some(s);
                    out.persist();
                }
                r.container = success.container;
                let early = r.early_exit.take();
                let crashed = match (&r.container, early) {
                    // Exited before the operation could look at it.
                    (
                        Some(ContainerFacts {
                            status: ContainerStatus::Exited { code, oom },
                            ..
                        }),
                        _,
                    ) => Some((*code, *oom)),
                    // Died after this start; the news overtook the report.
                    (Some(c), Some(e)) if e.id == c.id && e.at_ms >= c.started_at_ms => {
                        Some((e.code, e.oom))
                    }
                    _ => None,
                };
                match crashed {
                    Some((code, oom)) => {
                        if let Some(c) = r.container.as_mut() {
                            c.status = ContainerStatus::Exited { code, oom };
                        }
                        out.events.push(SupervisorEvent::AgentExited {
                            replica: key.clone(),
                            group: r.group.clone(),
                            code,
                            oom,
                        });
                        if wanted && self.should_restart(&key, code, oom) {
                            self.schedule_restart(
                                now,
                                &key,
                                Some(code),
                                Some(0),
                                RestartReason::Exited,
                                out,
                            );
                        } else if let Some(r) = self.replicas.get_mut(&key) {
                            if wanted {
                                stays_down(r, code, out);
                            } else {
                                r.phase = Phase::Exited { code };
                            }
                        }
                    }
                    None if r.is_running() => mark_started(r, now, out),
                    // Created ahead of its dependencies: still held, and
                    // nothing changed that is worth an event.
                    None if matches!(r.phase, Phase::Held { .. }) => {}
                    None => r.phase = Phase::Pending,
                }
            }
            (_, Err(error)) => {
                // What a failed operation leaves: a replacement removes the
                // old container before it creates the new one, and a
                // container Docker no longer knows is gone. Either way no
                // container of this replica runs, so none is reported (or
                // probed, or counted healthy), and the retry creates one
                // afresh instead of starting an id that is no more.
                let gone =
                    op == OpKind::Recreate || matches!(error, LaunchError::ContainerGone { .. });
                if gone && r.container.take().is_some() {
                    r.health = Health::Unknown;
                    r.healthy_since = None;
                    r.up_before_adoption = None;
                    r.healthy_credit = 0;
                    r.started_at = None;
                    r.probe_failures = 0;
                    out.actions.push(Action::UnwatchHealth { key: key.clone() });
                }
                let reason = FailReason::Launch(error);
                r.early_exit = None;
                r.phase = Phase::Failed {
                    reason: reason.clone(),
                    retry_at: now,
                };
                out.events.push(SupervisorEvent::AgentFailed {
                    replica: key.clone(),
                    group: r.group.clone(),
                    reason,
                });
                // Backed off and counted towards a crash loop like an exit.
                let delay = self.note_failure(now, &key, out);
                if let Some(r) = self.replicas.get_mut(&key)
                    && let Phase::Failed { retry_at, .. } = &mut r.phase
                {
                    *retry_at = now + delay;
                }
            }
        }
    }

    /// A replacement that could not create its new container: the old
    /// one was never touched, so the replica is as it was (probed again,
    /// running if it ran); the replacement is tried again after a backoff.
    /// Not a crash: the running replica does not move towards a crash loop.
    fn replacement_not_made(
        &mut self,
        now: Millis,
        key: ReplicaKey,
        error: LaunchError,
        out: &mut Outcome,
    ) {
        let Some(r) = self.replicas.get(&key) else {
            return;
        };
        if r.op != Some(OpKind::Recreate) {
            return;
        }
        let failures = r.failures + 1;
        let delay = self.backoff_delay(&key, failures);
        let Some(r) = self.replicas.get_mut(&key) else {
            return;
        };
        r.op = None;
        r.failures = failures;
        r.replace_after = now + delay;
        let reason = FailReason::Launch(error);
        out.events.push(SupervisorEvent::AgentFailed {
            replica: key.clone(),
            group: r.group.clone(),
            reason,
        });
        match &r.container {
            Some(c) if r.is_running() => {
                r.phase = Phase::Running;
                out.actions.push(Action::WatchHealth {
                    key: key.clone(),
                    id: c.id.clone(),
                });
            }
            Some(_) => r.phase = Phase::Pending,
            None => {}
        }
    }

    // ---- the decision pass ----

    /// Group transitions, then stops (reverse order), then starts (order).
    pub(crate) fn settle(&mut self, now: Millis, out: &mut Outcome) {
        self.expire_remote(now);
        // Steps through their watch free the next ones in this pass; what
        // the pass itself causes is looked at after it.
        self.check_rollout(now, out);
        // A group being restarted comes back once all of it is down.
        let done: Vec<String> = if self.restarting.is_empty() {
            Vec::new()
        } else {
            let active = self.active_groups();
            self.restarting
                .iter()
                .filter(|g| !active.contains(g.as_str()))
                .cloned()
                .collect()
        };
        for g in done {
            self.restarting.remove(&g);
            out.events.push(SupervisorEvent::GroupStarting { group: g });
        }
        self.sync_replica_table();
        // Healthy for the stability period: past failures are forgotten and
        // a crash loop is over (its dependents start again below).
        let stable: BTreeMap<String, Millis> = self
            .agents
            .keys()
            .map(|a| (a.clone(), self.stable_after(a)))
            .collect();
        self.visited(self.replicas.len());
        let hashes = &self.hashes;
        for r in self.replicas.values_mut() {
            let period = stable.get(&r.key.agent).copied().unwrap_or(10_000);
            // A replacement that could not be made keeps its count (and
            // its growing backoff) while the old container runs on.
            if (r.failures > 0 || r.crashloop)
                && !replacing(hashes, r)
                && r.health == Health::Healthy
                && r.healthy_since.is_some_and(|t| now >= t + period)
            {
                r.failures = 0;
                if r.crashloop {
                    r.crashloop = false;
                    r.restart_times.clear();
                    out.events.push(SupervisorEvent::AgentRecovered {
                        replica: r.key.clone(),
                        group: r.group.clone(),
                    });
                }
            }
        }
        if self.docker_up {
            let order = std::mem::take(&mut self.agent_order);
            self.stop_pass(&order, out);
            self.assign_slices(now, out);
            // A group that just became ready says so before what it releases starts.
            self.group_events(now, out);
            self.start_pass(now, &order, out);
            self.agent_order = order;
        }
        self.group_events(now, out);
        self.check_rollout(now, out);
        self.visited(self.replicas.len());
        let counts = &mut self.restart_counts;
        self.replicas.retain(|k, r| {
            let keep = !(r.phase == Phase::Stopped && r.container.is_none() && r.op.is_none());
            if !keep && r.restarts_total > 0 {
                counts.insert(k.clone(), r.restarts_total);
            }
            keep
        });
    }

    /// Gives GPU slices to the wanted replicas that need one, planning
    /// the whole host at once so that running replicas keep theirs.
    fn assign_slices(&mut self, now: Millis, out: &mut Outcome) {
        self.adopt_observed_slices(out);
        // Every GPU replica about to get a new container is planned, even
        // with a slice on record: the planner checks that slice against
        // the inventory (after a reboot its MIG instance is gone and is
        // re-made at the same placement).
        let needs: Vec<ReplicaKey> = self
            .replicas
            .values()
            .filter(|r| {
                let Some(agent) = self.agents.get(&r.key.agent) else {
                    return false;
                };
                let launching = r.slice.is_none()
                    || r.container.as_ref().is_none_or(|c| {
                        Some(c.config_hash.as_str())
                            != self.hashes.get(&r.key.agent).map(String::as_str)
                    });
                agent.gpu.is_some()
                    && launching
                    && r.op.is_none()
                    && self.wanted(&r.key)
                    && !matches!(r.phase, Phase::Failed { retry_at, .. } if now < retry_at)
            })
            .map(|r| r.key.clone())
            .collect();
        if needs.is_empty() {
            return;
        }
        let Some(gpus) = self.inventory_with_ownership() else {
            for key in needs {
                let Some(r) = self.replicas.get_mut(&key) else {
                    continue;
                };
                match &self.gpu_unavailable {
                    Some(detail) => {
                        let reason = FailReason::GpuUnavailable {
                            detail: detail.clone(),
                        };
                        if r.plan_error.as_ref() != Some(&reason) {
                            out.events.push(SupervisorEvent::AgentFailed {
                                replica: key.clone(),
                                group: r.group.clone(),
                                reason: reason.clone(),
                            });
                            r.plan_error = Some(reason.clone());
                        }
                        r.phase = Phase::Failed {
                            reason,
                            retry_at: now + GPU_RETRY,
                        };
                    }
                    None => hold(r, &[Wait::GpuInventory], out),
                }
            }
            return;
        };
        let mut requests = Vec::new();
        let mut current = Vec::new();
        for a in self.config.agents() {
            let Some(req) = &a.gpu else { continue };
            for i in 0..self.replica_count(&a.name).max(1) {
                let key = ReplicaKey::new(&a.name, i);
                let Some(r) = self.replicas.get(&key) else {
                    continue;
                };
                // Replicas still holding a container keep their capacity until gone.
                if !(self.wanted(&key) || r.container.is_some() || r.op.is_some()) {
                    continue;
                }
                requests.push((key.clone(), req.clone()));
                if let Some(slice) = &r.slice {
                    current.push(crate::gpu::Assignment {
                        replica: key,
                        slice: slice.clone(),
                        fallback_depth: r.slice_depth,
                    });
                }
            }
        }
        let plan = crate::planner::plan(&crate::planner::PlanInput {
            gpus: &gpus,
            policies: &self.config.gpus,
            requests: &requests,
            current: &current,
            settings: crate::planner::PlannerSettings::default(),
        });
        for note in &plan.notes {
            // A replica "loses" its slice only when it really ends up with
            // another one (or none): a running replica keeps what it runs
            // with, and a plan that gives back the same slice (at another
            // fallback depth) changes nothing anyone should hear about.
            if let crate::planner::PlanNote::Dropped { replica, slice, .. } = note {
                let replanned = plan
                    .assignments
                    .iter()
                    .find(|a| &a.replica == replica)
                    .map(|a| &a.slice);
                if !needs.contains(replica) || replanned == Some(slice) {
                    continue;
                }
            }
            out.events
                .push(SupervisorEvent::GpuNote { note: note.clone() });
        }
        for d in &plan.destroy {
            self.owned_mig
                .retain(|o| !(o.gpu_uuid == d.gpu_uuid && o.gi_id == d.gi_id));
            out.actions.push(Action::DestroyMig {
                gpu_index: d.gpu_index,
                gpu_uuid: d.gpu_uuid.clone(),
                gi_id: d.gi_id,
            });
            out.events.push(SupervisorEvent::MigDestroyed {
                gpu_index: d.gpu_index,
                gi_id: d.gi_id,
            });
            out.persist();
        }
        for a in &plan.assignments {
            // Running replicas keep what they run with.
            if !needs.contains(&a.replica) {
                continue;
            }
            let Some(r) = self.replicas.get_mut(&a.replica) else {
                continue;
            };
            r.slice_depth = a.fallback_depth;
            if r.slice.as_ref() != Some(&a.slice) {
                if r.slice.is_none() {
                    out.events.push(SupervisorEvent::SliceAssigned {
                        replica: a.replica.clone(),
                        group: r.group.clone(),
                        slice: a.slice.clone(),
                        fallback_depth: a.fallback_depth,
                    });
                }
                // We were making this instance when we last stopped: the
                // one found at exactly that placement is the one we made.
                if let (
                    Some(crate::gpu::Slice::Mig {
                        gi_id: None,
                        placement_start: was,
                        ..
                    }),
                    crate::gpu::Slice::Mig {
                        gpu_uuid,
                        gi_id: Some(gi_id),
                        profile_id,
                        placement_start,
                        ..
                    },
                ) = (&r.slice, &a.slice)
                    && was == placement_start
                {
                    let owned = OwnedMig {
                        gpu_uuid: gpu_uuid.clone(),
                        gi_id: *gi_id,
                        profile_id: *profile_id,
                        placement_start: *placement_start,
                    };
                    if !self.owned_mig.contains(&owned) {
                        self.owned_mig.push(owned);
                    }
                }
                r.slice = Some(a.slice.clone());
                r.slice_depth = a.fallback_depth;
                r.plan_error = None;
                out.persist();
            }
        }
        for e in &plan.errors {
            if !needs.contains(&e.replica) {
                continue;
            }
            let Some(r) = self.replicas.get_mut(&e.replica) else {
                continue;
            };
            let reason = FailReason::NoSlice(Box::new(e.clone()));
            if r.plan_error.as_ref() != Some(&reason) {
                out.events.push(SupervisorEvent::AgentFailed {
                    replica: e.replica.clone(),
                    group: r.group.clone(),
                    reason: reason.clone(),
                });
                r.plan_error = Some(reason.clone());
            }
            r.phase = Phase::Failed {
                reason,
                retry_at: now + GPU_RETRY,
            };
        }
    }

    pub(crate) fn start_order(&self, groups: &BTreeSet<String>) -> Vec<String> {
        self.group_graph
            .waves()
            .into_iter()
            .flatten()
            .filter(|g| groups.contains(g))
            .collect()
    }

    fn keys_of(&self, agent: &str) -> Vec<ReplicaKey> {
        self.replicas_of(agent).map(|r| r.key.clone()).collect()
    }

    /// Whether the replica is due to go down: unwanted, held by a crash
    /// loop, or something it needs on another host has failed.
    fn going_down(&self, r: &Replica) -> bool {
        !self.wanted(&r.key)
            || (r.held_by_crashloop && self.upstream_crashloop(&r.key.agent))
            // A container made ahead and not started holds nothing: kept.
            || (r.is_running() && self.remote_failed(&r.key.agent))
    }

    fn stop_pass(&mut self, order: &[String], out: &mut Outcome) {
        // Unknown agents (removed from the config) go first: nothing we know depends on them.
        let mut agents: Vec<String> = self
            .scan()
            .map(|r| &r.key.agent)
            .filter(|a| !self.agents.contains_key(*a))
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        agents.extend(order.iter().rev().cloned());
        let blockers = self.stop_blockers();
        for agent in agents {
            for key in self.keys_of(&agent) {
                let Some(r) = self.replicas.get(&key) else {
                    continue;
                };
                if r.op.is_some() || r.container.is_none() || !self.going_down(r) {
                    continue;
                }
                // Dependents that are also going down stop first.
                if blockers.block(self, &agent) {
                    continue;
                }
                let Some(r) = self.replicas.get_mut(&key) else {
                    continue;
                };
                let Some(c) = r.container.clone() else {
                    continue;
                };
                if c.status == ContainerStatus::Running {
                    r.op = Some(OpKind::Stop);
                    r.phase = Phase::Stopping;
                    out.actions.push(Action::UnwatchHealth { key: key.clone() });
                    out.actions.push(Action::Stop {
                        key: key.clone(),
                        id: c.id,
                    });
                } else {
                    r.op = Some(OpKind::Remove);
                    r.phase = Phase::Stopping;
                    out.actions.push(Action::Remove {
                        key: key.clone(),
                        id: c.id,
                    });
                }
            }
        }
    }

    /// Required dependencies of `agent` that are not ready.
    fn waiting_for(&self, agent: &str, groups_ready: &mut BTreeMap<String, bool>) -> Vec<Wait> {
        let Some(a) = self.agents.get(agent) else {
            return Vec::new();
        };
        let mut waiting: Vec<Wait> = a
            .depends_on
            .iter()
            .filter(|d| self.agents.get(*d).is_some_and(|x| x.required))
            .filter(|d| !self.agent_ready(d))
            .map(|d| Wait::Agent(d.clone()))
            .collect();
        // A group's `depends_on` holds every agent of the group until each
        // named group is ready.
        if let Some(g) = self.config.group(&a.group) {
            for dep in g
                .depends_on
                .iter()
                .filter_map(|d| crate::model::Dep::local(d))
            {
                let ready = match groups_ready.get(dep) {
                    Some(r) => *r,
                    None => {
                        let r = self.group_wanted(dep) && self.group_ready(dep);
                        groups_ready.insert(dep.to_string(), r);
                        r
                    }
                };
                if !ready {
                    waiting.push(Wait::Group(dep.to_string()));
                }
            }
        }
        // And so do agents and groups of other hosts.
        waiting.extend(
            self.remote_dependencies(agent)
                .into_iter()
                .filter(|(_, met)| !met)
                .map(|(w, _)| w),
        );
        waiting
    }

    /// What is going down with a container or an operation in flight,
    /// taken once per stop pass (issuing a stop keeps a replica in it), so
    /// that each replica's check is a lookup rather than a scan.
    fn stop_blockers(&self) -> StopBlockers {
        let mut b = StopBlockers::default();
        for x in self.scan() {
            if !(x.container.is_some() || x.op.is_some()) || !self.going_down(x) {
                continue;
            }
            b.needed_agents
                .extend(self.agent_graph.deps_of(&x.key.agent).iter().cloned());
            if let Some(g) = self.config.group(&x.group) {
                for d in &g.depends_on {
                    if *d != x.group {
                        b.needed_groups.insert(d.clone());
                    }
                }
            }
        }
        b
    }

    fn start_pass(&mut self, now: Millis, order: &[String], out: &mut Outcome) {
        // Readiness of the groups named in `depends_on`, worked out once
        // per group rather than once per agent; forgotten when this pass
        // takes a running replica down (a restart, a recreate).
        let mut groups_ready = BTreeMap::new();
        let mut stepped: Vec<ReplicaKey> = Vec::new();
        let looping = self.scan().any(|r| r.crashloop);
        for agent in order {
            let Some(spec) = self.agents.get(agent).cloned() else {
                continue;
            };
            let hash = self.hashes.get(agent).cloned().unwrap_or_default();
            let waiting = self.waiting_for(agent, &mut groups_ready);
            let looping_upstream = if looping {
                self.crashlooping_upstream(agent)
            } else {
                Vec::new()
            };
            let upstream_loop = !looping_upstream.is_empty() || self.remote_failed(agent);
            for key in self.keys_of(agent) {
                if !self.wanted(&key) {
                    continue;
                }
                // One replica of an agent changes at a time, or as many as
                // a rollout's step takes.
                let gate = self.rollout_allows(&key);
                let surge_held = self.surge_held(&key);
                let sibling_busy = match gate {
                    RolloutGate::Held => true,
                    RolloutGate::Stepped => false,
                    RolloutGate::Free => self.replicas_of(agent).any(|x| {
                        x.key != key
                            && (x.op.is_some() || (x.is_running() && !self.replica_healthy(x)))
                    }),
                };
                let Some(r) = self.replicas.get_mut(&key) else {
                    continue;
                };
                if r.op.is_some() {
                    continue;
                }
                if r.held_by_crashloop {
                    if upstream_loop {
                        // Down, and says why (not "about to start").
                        if !looping_upstream.is_empty() && !r.is_running() {
                            hold(r, &looping_upstream, out);
                        }
                        continue;
                    }
                    r.held_by_crashloop = false;
                }
                let group = r.group.clone();
                let container = r.container.clone();
                let needs_slice = spec.gpu.is_some() && r.slice.is_none();
                match container {
                    None => {
                        if let Phase::Failed { retry_at, .. } = r.phase
                            && now < retry_at
                        {
                            continue;
                        }
                        if surge_held {
                            continue;
                        }
                        if needs_slice {
                            continue;
                        }
                        if !waiting.is_empty() {
                            hold(r, &waiting, out);
                            // Create it now, start it when they are ready:
                            // most of a start's cost is off the critical path.
                            if self.docker_up && !upstream_loop {
                                r.op = Some(OpKind::Create);
                                out.actions.push(Action::Launch {
                                    key: key.clone(),
                                    group,
                                    replace: None,
                                    slice: r.slice.clone(),
                                    generation: self.generation,
                                    start: false,
                                });
                            }
                            continue;
                        }
                        r.op = Some(OpKind::Launch);
                        r.phase = Phase::Starting;
                        // A rollout's surge replica is a step of its own.
                        if key.replica >= spec.replicas {
                            stepped.push(key.clone());
                        }
                        out.events.push(SupervisorEvent::AgentStarting {
                            replica: key.clone(),
                            group: group.clone(),
                        });
                        out.actions.push(Action::Launch {
                            key: key.clone(),
                            group,
                            replace: None,
                            slice: r.slice.clone(),
                            generation: self.generation,
                            start: true,
                        });
                    }
                    Some(c) if c.config_hash != hash => {
                        if sibling_busy || needs_slice || now < r.replace_after {
                            continue;
                        }
                        if let Phase::Failed { retry_at, .. } = r.phase
                            && now < retry_at
                        {
                            continue;
                        }
                        if !waiting.is_empty() {
                            hold(r, &waiting, out);
                            continue;
                        }
                        r.op = Some(OpKind::Recreate);
                        r.replace_after = 0;
                        r.phase = Phase::Starting;
                        stepped.push(key.clone());
                        groups_ready.clear();
                        out.actions.push(Action::UnwatchHealth { key: key.clone() });
                        out.events.push(SupervisorEvent::AgentStarting {
                            replica: key.clone(),
                            group: group.clone(),
                        });
                        out.actions.push(Action::Launch {
                            key: key.clone(),
                            group,
                            replace: Some(c.id),
                            slice: r.slice.clone(),
                            generation: self.generation,
                            start: true,
                        });
                    }
                    Some(c) => match c.status {
                        ContainerStatus::Created => {
                            if let Phase::Failed { retry_at, .. } = r.phase
                                && now < retry_at
                            {
                                continue;
                            }
                            if !waiting.is_empty() {
                                hold(r, &waiting, out);
                                continue;
                            }
                            r.op = Some(OpKind::Start);
                            r.phase = Phase::Starting;
                            out.events.push(SupervisorEvent::AgentStarting {
                                replica: key.clone(),
                                group,
                            });
                            out.actions.push(Action::Start {
                                key: key.clone(),
                                id: c.id,
                            });
                        }
                        ContainerStatus::Running => {
                            let unhealthy = r.health == Health::Unhealthy
                                && spec.restart.policy != RestartMode::Never;
                            let over_limit = r.over_limit_restart;
                            let requested = r.restart_requested && !sibling_busy;
                            if !(unhealthy || over_limit || requested) {
                                continue;
                            }
                            r.restart_requested = false;
                            r.over_limit_restart = false;
                            r.op = Some(OpKind::Restart);
                            r.phase = Phase::Starting;
                            groups_ready.clear();
                            // Its health is not known again until it is probed.
                            r.health = Health::Unknown;
                            out.actions.push(Action::UnwatchHealth { key: key.clone() });
                            out.actions.push(Action::Restart {
                                key: key.clone(),
                                id: c.id.clone(),
                            });
                            // A failed health check, or GPU memory over its
                            // limit, counts like a crash.
                            if over_limit {
                                self.count_failure(
                                    now,
                                    &key,
                                    RestartReason::GpuMemoryExceeded,
                                    out,
                                );
                            } else if unhealthy {
                                self.count_failure(now, &key, RestartReason::Unhealthy, out);
                            }
                            if let Some(r) = self.replicas.get_mut(&key) {
                                r.restarts_total += 1;
                            }
                            // Restart counts are state: written when they change.
                            out.persist();
                        }
                        ContainerStatus::Exited { code, oom } => {
                            let due = match r.phase {
                                Phase::BackingOff { until, .. } => now >= until,
                                Phase::Failed { retry_at, .. } => now >= retry_at,
                                Phase::Exited { .. } => r.restart_requested,
                                _ => restart_wanted(spec.restart.policy, code, oom),
                            };
                            if !due {
                                continue;
                            }
                            if !waiting.is_empty() {
                                hold(r, &waiting, out);
                                continue;
                            }
                            r.restart_requested = false;
                            r.op = Some(OpKind::Start);
                            r.phase = Phase::Starting;
                            r.restarts_total += 1;
                            out.persist();
                            out.events.push(SupervisorEvent::AgentStarting {
                                replica: key.clone(),
                                group,
                            });
                            out.actions.push(Action::Start {
                                key: key.clone(),
                                id: c.id,
                            });
                        }
                    },
                }
            }
        }
        for key in stepped {
            self.step_launched(now, &key);
        }
    }

    /// Failure accounting for a restart of a running container (failed
    /// health checks, GPU memory over its limit): no backoff wait, the
    /// container is restarted at once, but the crash-loop count grows.
    fn count_failure(
        &mut self,
        now: Millis,
        key: &ReplicaKey,
        reason: RestartReason,
        out: &mut Outcome,
    ) {
        let phase_before = self.replicas.get(key).map(|r| r.phase.clone());
        self.schedule_restart(now, key, None, Some(0), reason, out);
        if let (Some(r), Some(p)) = (self.replicas.get_mut(key), phase_before) {
            r.phase = p;
        }
    }

    /// Says which groups became ready (healthy for their `min_healthy`)
    /// and which finished stopping.
    fn group_events(&mut self, now: Millis, out: &mut Outcome) {
        let groups: Vec<String> = self.config.groups.iter().map(|g| g.name.clone()).collect();
        // One pass over the table and the outcome's events, not one per group.
        let active: BTreeSet<String> = self
            .active_groups()
            .into_iter()
            .map(str::to_string)
            .collect();
        let mut stopping = BTreeSet::new();
        let mut said = BTreeSet::new();
        for e in &out.events {
            match e {
                SupervisorEvent::AgentStopped { group, .. }
                | SupervisorEvent::GroupStopping { group } => {
                    stopping.insert(group.clone());
                }
                SupervisorEvent::GroupStopped { group } => {
                    said.insert(group.clone());
                }
                _ => {}
            }
        }
        for g in groups {
            if self.group_wanted(&g) {
                let ready = self.group_ready_at(&g).is_some_and(|at| now >= at);
                if ready && self.ready_groups.insert(g.clone()) {
                    self.ever_ready.insert(g.clone());
                    out.events.push(SupervisorEvent::GroupReady { group: g });
                } else if !ready && !self.group_healthy(&g) {
                    // Once ready, a group stays ready while it is healthy.
                    self.ready_groups.remove(&g);
                }
            } else if !self.restarting.contains(&g)
                && !active.contains(&g)
                && stopping.contains(&g)
                && !said.contains(&g)
            {
                out.events.push(SupervisorEvent::GroupStopped { group: g });
            }
        }
    }
}

/// What replicas going down still need (see `Supervisor::stop_blockers`).
#[derive(Debug, Default)]
struct StopBlockers {
    /// Agents a replica going down depends on.
    needed_agents: BTreeSet<String>,
    /// Groups named in the `depends_on` of a group with a replica going down.
    needed_groups: BTreeSet<String>,
}

impl StopBlockers {
    /// Whether something that must stop before `agent` is still up: a
    /// dependent agent, or an agent of a group that names `agent`'s group
    /// in its `depends_on`, that is itself going down.
    fn block(&self, sup: &Supervisor, agent: &str) -> bool {
        let group = sup
            .agents
            .get(agent)
            .map(|a| a.group.as_str())
            .unwrap_or("");
        self.needed_agents.contains(agent) || self.needed_groups.contains(group)
    }
}

fn hold(r: &mut Replica, waiting: &[Wait], out: &mut Outcome) {
    let phase = Phase::Held {
        waiting_for: waiting.to_vec(),
    };
    if r.phase != phase {
        out.events.push(SupervisorEvent::AgentHeld {
            replica: r.key.clone(),
            group: r.group.clone(),
            waiting_for: waiting.to_vec(),
        });
        r.phase = phase;
    }
}

/// A wanted replica exited and its policy does not restart it: it stays
/// down, and operators hear so (an exit alone does not say whether a
/// restart follows).
fn stays_down(r: &mut Replica, code: i64, out: &mut Outcome) {
    r.phase = Phase::Exited { code };
    out.events.push(SupervisorEvent::AgentStaysDown {
        replica: r.key.clone(),
        group: r.group.clone(),
        code,
    });
}

fn mark_started(r: &mut Replica, now: Millis, out: &mut Outcome) {
    r.phase = Phase::Running;
    // A new run of the container: what the last one held is no reason.
    r.over_limit_restart = false;
    r.started_at = Some(now);
    r.health = Health::Unknown;
    r.healthy_since = None;
    r.up_before_adoption = None;
    r.healthy_credit = 0;
    r.probe_failures = 0;
    out.events.push(SupervisorEvent::AgentRunning {
        replica: r.key.clone(),
        group: r.group.clone(),
    });
    if let Some(c) = &r.container {
        out.actions.push(Action::WatchHealth {
            key: r.key.clone(),
            id: c.id.clone(),
        });
    }
}

/// A group command's outcome: the groups it changed, or the group it was
/// asked about when it changed none (already started, already stopped).
fn commanded(outcome: Outcome, mut touched: Vec<String>, group: &str) -> Commanded<Vec<String>> {
    if touched.is_empty() {
        touched.push(group.to_string());
    }
    Commanded {
        outcome,
        changed: touched,
    }
}

/// A replica whose replacement could not be made: its old container runs
/// a config hash that is not the agent's, and a retry is due.
fn replacing(hashes: &BTreeMap<String, String>, r: &Replica) -> bool {
    r.replace_after > 0
        && r.container
            .as_ref()
            .is_some_and(|c| hashes.get(&r.key.agent) != Some(&c.config_hash))
}
