//! Rollouts: how a changed config reaches the replicas of its changed
//! agents, step by step, and what undoes it.
//!
//! A `reload` that recreates agents starts a [`Rollout`] of the new
//! generation. Each step replaces up to the group's step size of an
//! agent's replicas (`rollout.max_surge`/`max_unavailable`, one at
//! least); a step is done once its new replicas have been healthy for the
//! group's `min_healthy` and then watched for `rollout.watch`. A step fails
//! when a new replica
//! - could not be created (its image is missing: the old one runs on),
//! - is not healthy within `rollout.healthy_deadline`,
//! - exits, fails its health checks or crash-loops while watched,
//! - or burns its group's error-rate or latency objective faster than the
//!   page threshold ([`PAGE_BURN`]) over the requests it answered while
//!   watched (at least [`MIN_REQUESTS`] of them).
//!
//! A failed step stops the rollout. With `rollout.auto_rollback` (the
//! failing group's) the outcome asks the caller to go back to the last good
//! generation ([`Outcome::rollback`]); otherwise the rollout is paused
//! until an operator resumes it or undoes it. A rollback is itself a
//! rollout of an older config: one replica at a time, not watched, never
//! rolled back. An operator's pause holds the next steps (the ones under
//! way finish).

use std::collections::{BTreeMap, BTreeSet};

use super::state::{FailReason, LaunchError, Millis, OpKind, Outcome, Supervisor, SupervisorEvent};
use crate::gpu::ReplicaKey;
use crate::slo::{Objective, RequestDelta, Sli};

/// The burn rate of a fast-burn page (Google SRE workbook): 2% of a
/// 30-day budget in an hour. A watched replica burning faster fails its
/// step.
pub const PAGE_BURN: f64 = 14.4;

/// A watched replica's requests are judged once it has answered this
/// many: fewer say nothing about a rate.
pub const MIN_REQUESTS: u64 = 20;

/// Why a generation is rolling out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutKind {
    /// A new config (`apply`, `reload`).
    Apply,
    /// Back to generation `to`'s config after generation `from` failed.
    Rollback { from: u64, to: u64 },
    /// An operator's `rollout undo` to an earlier generation's config.
    Undo { to: u64 },
}

impl RolloutKind {
    /// Steps are watched (and may fail) for every kind but a rollback.
    fn watched(self) -> bool {
        !matches!(self, RolloutKind::Rollback { .. })
    }
}

/// Where a rollout is.
#[derive(Debug, Clone, PartialEq)]
pub enum RolloutPhase {
    Progressing,
    /// No further step starts until it is resumed (or undone).
    Paused {
        cause: PauseCause,
    },
    /// A step failed and the previous generation is being put back.
    RollingBack {
        failure: StepFailure,
    },
    Completed,
    /// A newer config took over before it ended.
    Superseded {
        by: u64,
    },
}

impl RolloutPhase {
    /// A stable name (a metric label, the wire form).
    pub fn label(&self) -> &'static str {
        match self {
            RolloutPhase::Progressing => "progressing",
            RolloutPhase::Paused { .. } => "paused",
            RolloutPhase::RollingBack { .. } => "rolling_back",
            RolloutPhase::Completed => "completed",
            RolloutPhase::Superseded { .. } => "superseded",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum PauseCause {
    Operator,
    Failed(StepFailure),
}

/// A failed step: the replica and the signal that failed it.
#[derive(Debug, Clone, PartialEq)]
pub struct StepFailure {
    pub replica: ReplicaKey,
    pub group: String,
    pub signal: Signal,
}

/// What failed a step, with the figure and the threshold it crossed.
#[derive(Debug, Clone, PartialEq)]
pub enum Signal {
    /// The new container could not be made (or started).
    NotLaunched(LaunchError),
    /// Not healthy within `healthy_deadline`.
    NotHealthyInTime {
        deadline_ms: u64,
    },
    /// Exited while watched.
    Exited {
        code: i64,
    },
    /// Failed its health checks while watched.
    Unhealthy,
    CrashLoop {
        restarts: u32,
        window_ms: u64,
    },
    /// Its answers burned an objective faster than `threshold`.
    SloBurn {
        sli: Sli,
        burn: f64,
        threshold: f64,
        requests: u64,
        bad: u64,
    },
}

/// One replica's step.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Step {
    pub launched_at: Millis,
    /// When the new replica was first seen healthy.
    pub healthy_at: Option<Millis>,
    pub done: bool,
    /// Requests answered while watched: (total, errors, slow).
    pub requests: u64,
    pub errors: u64,
    pub slow: u64,
    /// Requests with a duration (the latency objective's total).
    pub timed: u64,
}

/// The rollout of one generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    pub generation: u64,
    pub kind: RolloutKind,
    /// The last good generation before it: where a failed step goes back.
    pub previous: u64,
    /// The agents it replaces.
    pub agents: BTreeSet<String>,
    pub phase: RolloutPhase,
    pub started_at: Millis,
    pub ended_at: Option<Millis>,
    pub steps: BTreeMap<ReplicaKey, Step>,
}

impl Rollout {
    /// Still changing replicas (or waiting to be resumed).
    pub fn active(&self) -> bool {
        matches!(
            self.phase,
            RolloutPhase::Progressing | RolloutPhase::Paused { .. }
        )
    }
}

/// Asked of the caller when a failed step rolls back: install generation
/// `to`'s config (a rollout of kind `Rollback { from }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollbackAsk {
    pub from: u64,
    pub to: u64,
}

/// Why an operator's rollout command was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutRefusal {
    /// No rollout has run since the daemon started.
    NoRollout,
    /// The rollout has ended (`phase`).
    Ended {
        generation: u64,
        phase: &'static str,
    },
    AlreadyPaused {
        generation: u64,
    },
    NotPaused {
        generation: u64,
    },
}

/// A replica's progress counts (for status views).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AgentProgress {
    pub replicas: u32,
    /// Running the new generation's config and through their watch.
    pub done: u32,
    /// Replaced and being watched (or starting).
    pub in_step: u32,
}

impl Supervisor {
    /// The last rollout since the daemon started, if any.
    pub fn rollout(&self) -> Option<&Rollout> {
        self.rollout.as_ref()
    }

    /// A rollout's per-agent progress.
    pub fn rollout_progress(&self, agent: &str) -> AgentProgress {
        let Some(ro) = &self.rollout else {
            return AgentProgress::default();
        };
        let replicas = self.agents.get(agent).map_or(0, |a| a.replicas);
        let hash = self.hashes.get(agent);
        let mut p = AgentProgress {
            replicas,
            ..AgentProgress::default()
        };
        for r in self.replicas_of(agent) {
            let current = r
                .container
                .as_ref()
                .is_some_and(|c| Some(&c.config_hash) == hash);
            match ro.steps.get(&r.key) {
                Some(s) if s.done => p.done += 1,
                Some(_) => p.in_step += 1,
                None if current => p.done += 1,
                None => {}
            }
        }
        p
    }

    /// Starts the rollout of the generation just installed, replacing
    /// `agents` (none: nothing to roll out, and nothing to watch).
    pub(crate) fn begin_rollout(
        &mut self,
        now: Millis,
        kind: RolloutKind,
        agents: BTreeSet<String>,
        out: &mut Outcome,
    ) {
        let before = self.generation.saturating_sub(1);
        let previous = match &self.rollout {
            // A rollout that did not complete was never good: go back to
            // what was good before it.
            Some(ro) if ro.phase != RolloutPhase::Completed => ro.previous,
            _ => before,
        };
        if let Some(ro) = self.rollout.as_mut()
            && ro.active()
        {
            ro.phase = RolloutPhase::Superseded {
                by: self.generation,
            };
            ro.ended_at = Some(now);
        }
        if agents.is_empty() {
            return;
        }
        out.events.push(SupervisorEvent::RolloutStarted {
            generation: self.generation,
            kind,
            previous,
            agents: agents.iter().cloned().collect(),
        });
        self.rollout = Some(Rollout {
            generation: self.generation,
            kind,
            previous,
            agents,
            phase: RolloutPhase::Progressing,
            started_at: now,
            ended_at: None,
            steps: BTreeMap::new(),
        });
    }

    /// Whether the decision pass may start replacing `key` now.
    pub(crate) fn rollout_allows(&self, key: &ReplicaKey) -> RolloutGate {
        let Some(ro) = self.rollout.as_ref() else {
            return RolloutGate::Free;
        };
        if !ro.agents.contains(&key.agent) {
            return RolloutGate::Free;
        }
        match ro.phase {
            RolloutPhase::Progressing => {}
            // Nothing more of a failed generation goes out while the last
            // good one is put back.
            RolloutPhase::Paused { .. } | RolloutPhase::RollingBack { .. } => {
                return RolloutGate::Held;
            }
            RolloutPhase::Completed | RolloutPhase::Superseded { .. } => {
                return RolloutGate::Free;
            }
        }
        if !ro.kind.watched() {
            return RolloutGate::Free;
        }
        // Steps under way: launched in an earlier pass and not through
        // their watch, or launched in this one.
        let in_flight = self
            .replicas_of(&key.agent)
            .filter(|x| {
                x.key != *key
                    && (x.op == Some(OpKind::Recreate)
                        || ro.steps.get(&x.key).is_some_and(|s| !s.done))
            })
            .count() as u32;
        // A surge replica still to be made and watched is a step under
        // way too (one that cannot be placed is not waited for).
        let replicas = self.agents.get(&key.agent).map_or(0, |a| a.replicas);
        let surging = (replicas..replicas + self.surge_of(&key.agent))
            .map(|i| ReplicaKey::new(&key.agent, i))
            .filter(|k| k != key && !ro.steps.get(k).is_some_and(|s| s.done))
            .filter(|k| {
                self.replicas.get(k).is_none_or(|r| {
                    r.op.is_none() && r.container.is_none() && r.plan_error.is_none()
                })
            })
            .count() as u32;
        if in_flight + surging >= self.step_size(&key.agent) {
            RolloutGate::Held
        } else {
            RolloutGate::Stepped
        }
    }

    /// Extra replicas an agent runs during its rollout: the step's surge
    /// (`rollout.max_surge`, within the spare ports of its host port
    /// ranges), started with the new config beyond `replicas` while any
    /// of its replicas still runs the old one, so that the one replaced in
    /// place is never missing from the count. Stopped once every replica
    /// runs the new config (or the rollout is rolled back).
    pub(crate) fn surge_of(&self, agent: &str) -> u32 {
        let Some(ro) = &self.rollout else {
            return 0;
        };
        if !ro.kind.watched()
            || !matches!(
                ro.phase,
                RolloutPhase::Progressing | RolloutPhase::Paused { .. }
            )
            || !ro.agents.contains(agent)
        {
            return 0;
        }
        let (Some(a), Some(hash)) = (self.agents.get(agent), self.hashes.get(agent)) else {
            return 0;
        };
        let Some(g) = self.config.group(&a.group) else {
            return 0;
        };
        let surge = g.rollout.budget(a, a.replicas).surge;
        let old_left = self.replicas_of(agent).any(|r| {
            r.key.replica < a.replicas
                && (r.op == Some(OpKind::Recreate)
                    || r.container.as_ref().is_some_and(|c| &c.config_hash != hash))
        });
        if old_left { surge } else { 0 }
    }

    /// A surge replica is not started (or tried again) while its rollout
    /// is paused or rolling back.
    pub(crate) fn surge_held(&self, key: &ReplicaKey) -> bool {
        let Some(ro) = &self.rollout else {
            return false;
        };
        let beyond = self
            .agents
            .get(&key.agent)
            .is_some_and(|a| key.replica >= a.replicas);
        beyond
            && ro.agents.contains(&key.agent)
            && matches!(
                ro.phase,
                RolloutPhase::Paused { .. } | RolloutPhase::RollingBack { .. }
            )
    }

    /// How many replicas of an agent one step replaces.
    fn step_size(&self, agent: &str) -> u32 {
        let Some(a) = self.agents.get(agent) else {
            return 1;
        };
        let Some(g) = self.config.group(&a.group) else {
            return 1;
        };
        let b = g.rollout.budget(a, a.replicas);
        b.surge.max(b.unavailable).max(1)
    }

    /// A step of the rollout began: `key`'s replacement was launched.
    pub(crate) fn step_launched(&mut self, now: Millis, key: &ReplicaKey) {
        if let Some(ro) = self.rollout.as_mut()
            && ro.active()
            && ro.kind.watched()
            && ro.agents.contains(&key.agent)
        {
            ro.steps.insert(
                key.clone(),
                Step {
                    launched_at: now,
                    ..Step::default()
                },
            );
        }
    }

    fn watched_step(&self, key: &ReplicaKey) -> Option<&Step> {
        let ro = self.rollout.as_ref()?;
        if ro.phase != RolloutPhase::Progressing && !matches!(ro.phase, RolloutPhase::Paused { .. })
        {
            return None;
        }
        if !ro.kind.watched() {
            return None;
        }
        ro.steps.get(key).filter(|s| !s.done)
    }

    /// Requests a watched replica answered since its last scrape: judged
    /// against its group's error-rate and latency objectives.
    pub fn rollout_requests(
        &mut self,
        now: Millis,
        key: &ReplicaKey,
        delta: &RequestDelta,
    ) -> Outcome {
        let mut out = Outcome::default();
        let Some(step) = self.watched_step(key) else {
            return out;
        };
        if step.healthy_at.is_none() {
            return out;
        }
        let Some(slo) = self
            .agents
            .get(&key.agent)
            .and_then(|a| self.config.group(&a.group))
            .and_then(|g| g.slo.clone())
        else {
            return out;
        };
        let objectives = Objective::of(&slo);
        let Some(step) = self.rollout.as_mut().and_then(|ro| ro.steps.get_mut(key)) else {
            return out;
        };
        if let (Some(requests), Some(errors)) = (delta.requests, delta.errors) {
            step.requests += requests;
            step.errors += errors.min(requests);
        }
        if let Some(d) = &delta.durations {
            let threshold = objectives
                .iter()
                .find(|o| o.sli == Sli::Latency)
                .and_then(|o| o.threshold);
            if let Some(t) = threshold {
                let total = d.count();
                let good = (d.at_or_below(t.std().as_secs_f64()).floor() as u64).min(total);
                step.timed += total;
                step.slow += total - good;
            }
        }
        let step = step.clone();
        if let Some(signal) = burn_signal(&objectives, &step) {
            self.fail_step(now, key, signal, &mut out);
        }
        out
    }

    /// Looks at the watched steps after a decision pass: this turn's
    /// events of their replicas, their health and their clocks.
    pub(crate) fn check_rollout(&mut self, now: Millis, out: &mut Outcome) {
        let Some(ro) = self.rollout.as_ref() else {
            return;
        };
        if !matches!(
            ro.phase,
            RolloutPhase::Progressing
                | RolloutPhase::Paused {
                    cause: PauseCause::Operator
                }
        ) {
            return;
        }
        let generation = ro.generation;
        // Failures seen in this turn's events.
        if ro.kind.watched() {
            let failed = out.events.iter().find_map(|e| {
                let (key, signal) = match e {
                    SupervisorEvent::AgentExited { replica, code, .. } => {
                        (replica, Signal::Exited { code: *code })
                    }
                    SupervisorEvent::AgentUnhealthy { replica, .. } => (replica, Signal::Unhealthy),
                    SupervisorEvent::AgentCrashLoop {
                        replica,
                        restarts,
                        window_ms,
                        ..
                    } => (
                        replica,
                        Signal::CrashLoop {
                            restarts: *restarts,
                            window_ms: *window_ms,
                        },
                    ),
                    SupervisorEvent::AgentFailed {
                        replica,
                        reason: FailReason::Launch(e),
                        ..
                    } => (replica, Signal::NotLaunched(e.clone())),
                    _ => return None,
                };
                ro.steps
                    .get(key)
                    .filter(|s| !s.done)
                    .map(|_| (key.clone(), signal))
            });
            if let Some((key, signal)) = failed {
                self.fail_step(now, &key, signal, out);
                return;
            }
        }
        let Some(ro) = self.rollout.as_ref() else {
            return;
        };
        // Clocks: healthy in time, watched long enough.
        let mut updates: Vec<(ReplicaKey, Option<Millis>, bool)> = Vec::new();
        let mut late: Option<(ReplicaKey, u64)> = None;
        for (key, step) in ro.steps.iter().filter(|(_, s)| !s.done) {
            let Some(r) = self.replicas.get(key) else {
                // Scaled away: nothing left to watch.
                updates.push((key.clone(), step.healthy_at, true));
                continue;
            };
            let Some(g) = self.config.group(&r.group) else {
                continue;
            };
            let current = r
                .container
                .as_ref()
                .is_some_and(|c| self.hashes.get(&key.agent) == Some(&c.config_hash));
            let healthy = current && r.op.is_none() && self.replica_healthy(r);
            let healthy_at = step.healthy_at.or(healthy.then_some(now));
            match healthy_at {
                None => {
                    let deadline_ms = g.rollout.healthy_deadline.as_millis() as u64;
                    if now >= step.launched_at + deadline_ms && late.is_none() {
                        late = Some((key.clone(), deadline_ms));
                    }
                }
                Some(t) => {
                    let watch = (g.min_healthy.as_millis() + g.rollout.watch.as_millis()) as u64;
                    updates.push((key.clone(), Some(t), healthy && now >= t + watch));
                }
            }
        }
        if let Some((key, deadline_ms)) = late {
            self.fail_step(now, &key, Signal::NotHealthyInTime { deadline_ms }, out);
            return;
        }
        if let Some(ro) = self.rollout.as_mut() {
            for (key, healthy_at, done) in updates {
                if let Some(s) = ro.steps.get_mut(&key) {
                    s.healthy_at = healthy_at;
                    if done && !s.done {
                        s.done = true;
                        out.events.push(SupervisorEvent::RolloutStepDone {
                            generation,
                            replica: key.clone(),
                        });
                    }
                }
            }
        }
        if self.rollout_finished() {
            let Some(ro) = self.rollout.as_mut() else {
                return;
            };
            if ro.phase == RolloutPhase::Progressing {
                ro.phase = RolloutPhase::Completed;
                ro.ended_at = Some(now);
                out.events.push(SupervisorEvent::RolloutCompleted {
                    generation,
                    kind: ro.kind,
                });
            }
        }
    }

    /// Every wanted replica of the rollout's agents runs the new config,
    /// and every step is done.
    fn rollout_finished(&self) -> bool {
        let Some(ro) = &self.rollout else {
            return false;
        };
        if ro.steps.values().any(|s| !s.done) {
            return false;
        }
        ro.agents.iter().all(|agent| {
            let hash = self.hashes.get(agent);
            self.replicas_of(agent)
                .filter(|r| self.wanted(&r.key))
                .all(|r| {
                    r.op.is_none()
                        && r.container
                            .as_ref()
                            .is_none_or(|c| Some(&c.config_hash) == hash)
                        && (r.container.is_none() || self.replica_healthy(r))
                })
        })
    }

    /// A step failed: the rollout rolls back (the failing group's
    /// `auto_rollback`, for a watched rollout of a new config) or pauses.
    fn fail_step(&mut self, now: Millis, key: &ReplicaKey, signal: Signal, out: &mut Outcome) {
        let group = self
            .agents
            .get(&key.agent)
            .map(|a| a.group.clone())
            .unwrap_or_default();
        let auto = self
            .config
            .group(&group)
            .is_some_and(|g| g.rollout.auto_rollback);
        let Some(ro) = self.rollout.as_mut() else {
            return;
        };
        let failure = StepFailure {
            replica: key.clone(),
            group,
            signal,
        };
        let rollback_to = (auto && ro.kind == RolloutKind::Apply).then_some(ro.previous);
        ro.phase = match rollback_to {
            Some(_) => RolloutPhase::RollingBack {
                failure: failure.clone(),
            },
            None => RolloutPhase::Paused {
                cause: PauseCause::Failed(failure.clone()),
            },
        };
        if rollback_to.is_some() {
            ro.ended_at = Some(now);
        }
        out.events.push(SupervisorEvent::RolloutFailed {
            generation: ro.generation,
            failure,
            rollback_to,
        });
        out.rollback = rollback_to.map(|to| RollbackAsk {
            from: ro.generation,
            to,
        });
    }

    /// The rollback a failed step asked for could not be made (its
    /// generation's config is not kept): the rollout stays paused instead.
    pub fn rollback_not_made(&mut self) -> Outcome {
        let mut out = Outcome::default();
        if let Some(ro) = self.rollout.as_mut()
            && let RolloutPhase::RollingBack { failure } = &ro.phase
        {
            ro.phase = RolloutPhase::Paused {
                cause: PauseCause::Failed(failure.clone()),
            };
            ro.ended_at = None;
            out.events.push(SupervisorEvent::RolloutPaused {
                generation: ro.generation,
            });
        }
        out
    }

    /// `rollout pause`: no further step starts.
    pub fn pause_rollout(&mut self) -> Result<Outcome, RolloutRefusal> {
        let ro = self.rollout.as_mut().ok_or(RolloutRefusal::NoRollout)?;
        match ro.phase {
            RolloutPhase::Progressing => {}
            RolloutPhase::Paused { .. } => {
                return Err(RolloutRefusal::AlreadyPaused {
                    generation: ro.generation,
                });
            }
            ref p => {
                return Err(RolloutRefusal::Ended {
                    generation: ro.generation,
                    phase: p.label(),
                });
            }
        }
        ro.phase = RolloutPhase::Paused {
            cause: PauseCause::Operator,
        };
        let mut out = Outcome::default();
        out.events.push(SupervisorEvent::RolloutPaused {
            generation: ro.generation,
        });
        Ok(out)
    }

    /// `rollout resume`: a paused rollout (by an operator or by a failed
    /// step) goes on; a failed step's replica is watched afresh.
    pub fn resume_rollout(&mut self, now: Millis) -> Result<Outcome, RolloutRefusal> {
        let ro = self.rollout.as_mut().ok_or(RolloutRefusal::NoRollout)?;
        match &ro.phase {
            RolloutPhase::Paused { cause } => {
                // The failed step's replica is watched afresh.
                if let PauseCause::Failed(f) = cause
                    && let Some(step) = ro.steps.get_mut(&f.replica)
                {
                    *step = Step {
                        launched_at: now,
                        ..Step::default()
                    };
                }
            }
            RolloutPhase::Progressing => {
                return Err(RolloutRefusal::NotPaused {
                    generation: ro.generation,
                });
            }
            p => {
                return Err(RolloutRefusal::Ended {
                    generation: ro.generation,
                    phase: p.label(),
                });
            }
        }
        ro.phase = RolloutPhase::Progressing;
        let mut out = Outcome::default();
        out.events.push(SupervisorEvent::RolloutResumed {
            generation: ro.generation,
        });
        self.settle(now, &mut out);
        Ok(out)
    }

    /// The rollout's next moment that time alone changes (a step's
    /// healthy deadline, the end of its watch).
    pub(crate) fn next_rollout_deadline(&self) -> Option<Millis> {
        let ro = self.rollout.as_ref().filter(|ro| ro.active())?;
        ro.steps
            .iter()
            .filter(|(_, s)| !s.done)
            .filter_map(|(key, s)| {
                let g = self
                    .agents
                    .get(&key.agent)
                    .and_then(|a| self.config.group(&a.group))?;
                Some(match s.healthy_at {
                    None => s.launched_at + g.rollout.healthy_deadline.as_millis() as u64,
                    Some(t) => t + (g.min_healthy.as_millis() + g.rollout.watch.as_millis()) as u64,
                })
            })
            .min()
    }
}

/// What the decision pass may do with a replica to replace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RolloutGate {
    /// Not part of a watched rollout: replaced one at a time as ever.
    Free,
    /// A step of the rollout may replace it now.
    Stepped,
    /// Not now (paused, or the step is full).
    Held,
}

/// The objective a watched replica's answers burn faster than a page.
fn burn_signal(objectives: &[Objective], step: &Step) -> Option<Signal> {
    objectives.iter().find_map(|o| {
        let (total, bad) = match o.sli {
            Sli::ErrorRate => (step.requests, step.errors),
            Sli::Latency => (step.timed, step.slow),
            Sli::Availability => return None,
        };
        if total < MIN_REQUESTS {
            return None;
        }
        let burn = o.burn_rate(bad as f64 / total as f64);
        (burn > PAGE_BURN).then_some(Signal::SloBurn {
            sli: o.sli,
            burn,
            threshold: PAGE_BURN,
            requests: total,
            bad,
        })
    })
}
