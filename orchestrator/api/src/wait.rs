//! Waiting for groups to reach a state, decided from events alone: a pure
//! state machine ([`Waiter`]) that starts from the groups and agents as
//! they were once asked ([`Start`]), is fed the events that follow, and
//! says whether the wait is done, has failed for good (a crash loop, a
//! GPU request that cannot be placed), or what it still waits for. No I/O:
//! the CLI's `--wait` drives it and prints (`orchestratorctl`'s `wait`).
//!
//! Events up to the start's `seq` are already in the start's figures;
//! they are recognised (so they can be printed) but change nothing. A
//! verdict other than [`Verdict::Waiting`] is final: later events change
//! nothing either.

use std::collections::{BTreeMap, BTreeSet};

use crate::reply::{AgentStatus, GroupState, GroupStatus, PeerState, PeerStatus};
use crate::wire::{Event, EventKind, FailReason, Health, Phase, PlanError, ReplicaRef, Wait};

/// What a wait waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    Ready,
    Stopped,
}

impl Goal {
    fn reached(self, s: GroupState) -> bool {
        match self {
            Goal::Ready => s == GroupState::Ready,
            Goal::Stopped => s == GroupState::Stopped,
        }
    }
}

/// Where a wait starts: the host's groups, agents and peers, asked once,
/// and the number of the last event they account for.
#[derive(Debug, Clone, Copy)]
pub struct Start<'a> {
    /// `Status::last_event_seq` of the answer the groups come from.
    pub seq: u64,
    pub groups: &'a [GroupStatus],
    pub agents: &'a [AgentStatus],
    pub peers: &'a [PeerStatus],
}

/// How the wait stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not decided yet.
    Waiting,
    /// Every group reached the goal, as of event `at`.
    Done { at: u64 },
    /// A required agent of a group that should become ready crash-loops.
    CrashLoop { group: String, replica: ReplicaRef },
    /// A required agent's GPU request cannot be placed on this host.
    Unplaceable {
        group: String,
        replica: ReplicaRef,
        error: Box<PlanError>,
    },
}

/// What [`Waiter::take`] made of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Already taken (a number at or below the last one).
    Again,
    /// About none of the waited-for groups nor a host they may need.
    Other,
    /// About one of the waited-for groups, or a peer host's state.
    Ours,
}

/// One replica as the wait knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Track {
    pub phase: Phase,
    pub health: Health,
    /// False for an optional agent: the group is ready without it.
    pub required: bool,
    /// Marked crash-looping (until it recovers).
    pub crashloop: bool,
}

/// A group that has not reached the goal, and the replicas it waits on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupPending {
    pub group: String,
    pub state: GroupState,
    pub replicas: Vec<ReplicaPending>,
}

/// A replica a group waits on, with the peer hosts it needs that are down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaPending {
    pub replica: ReplicaRef,
    pub phase: Phase,
    pub health: Health,
    pub hosts_down: Vec<String>,
}

/// Counts for a progress line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    pub groups: usize,
    pub at_goal: usize,
    pub replicas: usize,
    pub healthy: usize,
    /// Replicas not stopped or exited.
    pub running: usize,
}

#[derive(Debug, Clone)]
struct GroupTrack {
    state: GroupState,
    replicas: BTreeMap<ReplicaRef, Track>,
}

/// The wait's state machine.
#[derive(Debug, Clone)]
pub struct Waiter {
    goal: Goal,
    /// The waited-for groups, in the order asked.
    order: Vec<String>,
    groups: BTreeMap<String, GroupTrack>,
    hosts_down: BTreeSet<String>,
    start_seq: u64,
    last: u64,
    verdict: Verdict,
}

impl Waiter {
    /// A wait for `groups` to reach `goal`, from `start`. A group the
    /// start does not show counts as stopped.
    pub fn new(goal: Goal, groups: &[String], start: Start<'_>) -> Self {
        let mut tracks: BTreeMap<String, GroupTrack> = groups
            .iter()
            .map(|g| {
                let state = start
                    .groups
                    .iter()
                    .find(|s| &s.name == g)
                    .map_or(GroupState::Stopped, |s| s.state);
                (
                    g.clone(),
                    GroupTrack {
                        state,
                        replicas: BTreeMap::new(),
                    },
                )
            })
            .collect();
        for a in start.agents {
            if let Some(t) = tracks.get_mut(&a.group) {
                t.replicas.insert(
                    ReplicaRef {
                        agent: a.agent.clone(),
                        replica: a.replica,
                    },
                    Track {
                        phase: a.phase.clone(),
                        health: a.health,
                        required: a.required,
                        crashloop: a.crashloop,
                    },
                );
            }
        }
        let mut w = Waiter {
            goal,
            order: groups.to_vec(),
            groups: tracks,
            hosts_down: start
                .peers
                .iter()
                .filter(|p| p.state == PeerState::Down)
                .map(|p| p.name.clone())
                .collect(),
            start_seq: start.seq,
            last: 0,
            verdict: Verdict::Waiting,
        };
        w.judge_start(start.agents);
        w.check_done(start.seq);
        w
    }

    /// An unplaceable request already in the start's figures decides the
    /// wait too (the daemon says so once, so no event may follow). A
    /// crash-loop mark in them does not, by itself: the operator may have
    /// removed the cause and be waiting for the recovery. It decides at the
    /// replica's next exit during the wait (see `apply`), as the mark is
    /// given once and no new crash-loop event follows.
    fn judge_start(&mut self, agents: &[AgentStatus]) {
        if self.goal != Goal::Ready || self.all_at_goal() {
            return;
        }
        for a in agents.iter().filter(|a| a.required) {
            if !self.groups.contains_key(&a.group) {
                continue;
            }
            let replica = ReplicaRef {
                agent: a.agent.clone(),
                replica: a.replica,
            };
            if let Phase::Failed {
                reason: FailReason::NoGpuCapacity { error },
                ..
            } = &a.phase
            {
                self.verdict = Verdict::Unplaceable {
                    group: a.group.clone(),
                    replica,
                    error: error.clone(),
                };
                return;
            }
        }
    }

    fn all_at_goal(&self) -> bool {
        self.groups.values().all(|g| self.goal.reached(g.state))
    }

    fn check_done(&mut self, at: u64) {
        if self.verdict == Verdict::Waiting && self.all_at_goal() {
            self.verdict = Verdict::Done { at };
        }
    }

    pub fn goal(&self) -> Goal {
        self.goal
    }

    pub fn verdict(&self) -> &Verdict {
        &self.verdict
    }

    /// The number of the last event taken (0: none yet).
    pub fn last(&self) -> u64 {
        self.last
    }

    /// The waited-for groups, in the order asked.
    pub fn groups(&self) -> &[String] {
        &self.order
    }

    /// Peer hosts known to be down.
    pub fn hosts_down(&self) -> impl Iterator<Item = &str> {
        self.hosts_down.iter().map(String::as_str)
    }

    /// The events the wait follows begin after `since` (the stream was
    /// opened there): those up to it will not come, and are not waited
    /// for. Without this, a wait whose goal the start already shows would
    /// wait for an event that is never sent.
    pub fn following_since(mut self, since: u64) -> Self {
        self.last = self.last.max(since);
        self
    }

    /// True when the wait is done and every event up to the moment it
    /// was done has been taken.
    pub fn finished(&self) -> bool {
        match self.verdict {
            Verdict::Done { at } => self.last >= at,
            Verdict::Waiting => false,
            _ => true,
        }
    }

    /// Takes the next event of the host's stream.
    pub fn take(&mut self, e: &Event) -> Seen {
        if e.seq <= self.last {
            return Seen::Again;
        }
        self.last = e.seq;
        if let EventKind::PeerChanged { peer, state, .. } = &e.kind {
            if e.seq > self.start_seq && self.verdict == Verdict::Waiting {
                if *state == PeerState::Down {
                    self.hosts_down.insert(peer.clone());
                } else {
                    self.hosts_down.remove(peer);
                }
            }
            return Seen::Ours;
        }
        let Some(group) = e.kind.group() else {
            return Seen::Other;
        };
        if !self.groups.contains_key(group) {
            return Seen::Other;
        }
        if self.verdict != Verdict::Waiting {
            return Seen::Ours;
        }
        if e.seq > self.start_seq {
            self.apply(&e.kind);
            self.check_done(e.seq);
        } else if let EventKind::AgentCrashLoop { replica, .. } = &e.kind
            && self.goal == Goal::Ready
            && self
                .groups
                .get(group)
                .and_then(|g| g.replicas.get(replica))
                .is_some_and(|t| t.required && t.crashloop)
        {
            // Since the command, and still so at the start.
            self.verdict = Verdict::CrashLoop {
                group: group.to_string(),
                replica: replica.clone(),
            };
        }
        Seen::Ours
    }

    fn apply(&mut self, kind: &EventKind) {
        use EventKind as K;
        let goal = self.goal;
        let Some(group) = kind.group() else { return };
        let Some(g) = self.groups.get_mut(group) else {
            return;
        };
        let state = match kind {
            K::GroupStarting { .. } => Some(GroupState::Starting),
            K::GroupReady { .. } => Some(GroupState::Ready),
            K::GroupStopping { .. } => Some(GroupState::Stopping),
            K::GroupStopped { .. } => Some(GroupState::Stopped),
            _ => None,
        };
        if let Some(s) = state {
            g.state = s;
            return;
        }
        let Some(replica) = kind.replica() else {
            return;
        };
        let t = g.replicas.entry(replica.clone()).or_insert(Track {
            phase: Phase::Pending,
            health: Health::Unknown,
            required: true,
            crashloop: false,
        });
        match kind {
            K::AgentStarting { .. }
            | K::AgentRestartRequested { .. }
            | K::AgentRestarted { .. } => {
                t.phase = Phase::Starting;
                t.health = Health::Unknown;
            }
            K::AgentRunning { .. } | K::AgentAdopted { .. } => t.phase = Phase::Running,
            K::AgentHealthy { .. } => t.health = Health::Healthy,
            K::AgentUnhealthy { .. } => t.health = Health::Unhealthy,
            K::AgentExited { code, .. } | K::AgentStaysDown { code, .. } => {
                t.phase = Phase::Exited { code: *code };
                t.health = Health::Unknown;
                // Still marked, and down again: the crash loop goes on.
                if t.crashloop && t.required && goal == Goal::Ready {
                    self.verdict = Verdict::CrashLoop {
                        group: group.to_string(),
                        replica: replica.clone(),
                    };
                }
            }
            K::AgentRestarting { in_ms, .. } => {
                let exit_code = match t.phase {
                    Phase::Exited { code } => Some(code),
                    _ => None,
                };
                t.phase = Phase::BackingOff {
                    retry_in_ms: *in_ms,
                    exit_code,
                };
            }
            K::AgentHeld { waiting_for, .. } => {
                t.phase = Phase::Held {
                    waiting_for: waiting_for.clone(),
                };
            }
            K::AgentFailed { reason, .. } => {
                t.phase = Phase::Failed {
                    reason: reason.clone(),
                    retry_in_ms: 0,
                };
                if let FailReason::NoGpuCapacity { error } = reason
                    && t.required
                    && goal == Goal::Ready
                {
                    self.verdict = Verdict::Unplaceable {
                        group: group.to_string(),
                        replica: replica.clone(),
                        error: error.clone(),
                    };
                }
            }
            K::AgentStopped { .. } => {
                t.phase = Phase::Stopped;
                t.health = Health::Unknown;
            }
            K::AgentCrashLoop { .. } => {
                t.crashloop = true;
                if t.required && goal == Goal::Ready {
                    self.verdict = Verdict::CrashLoop {
                        group: group.to_string(),
                        replica: replica.clone(),
                    };
                }
            }
            K::AgentRecovered { .. } => t.crashloop = false,
            _ => {}
        }
    }

    /// What the wait still waits for, group by group (the groups not at
    /// the goal, in the order asked).
    pub fn pending(&self) -> Vec<GroupPending> {
        self.order
            .iter()
            .filter_map(|name| {
                let g = self.groups.get(name)?;
                if self.goal.reached(g.state) {
                    return None;
                }
                let replicas = g
                    .replicas
                    .iter()
                    .filter(|(_, t)| match self.goal {
                        Goal::Ready => t.required && t.health != Health::Healthy,
                        Goal::Stopped => is_up(&t.phase),
                    })
                    .map(|(r, t)| ReplicaPending {
                        replica: r.clone(),
                        phase: t.phase.clone(),
                        health: t.health,
                        hosts_down: self.down_hosts_of(&t.phase),
                    })
                    .collect();
                Some(GroupPending {
                    group: name.clone(),
                    state: g.state,
                    replicas,
                })
            })
            .collect()
    }

    fn down_hosts_of(&self, phase: &Phase) -> Vec<String> {
        let Phase::Held { waiting_for } = phase else {
            return Vec::new();
        };
        let mut hosts: Vec<String> = waiting_for
            .iter()
            .filter_map(|w| match w {
                Wait::RemoteAgent { host, .. } | Wait::RemoteGroup { host, .. } => Some(host),
                _ => None,
            })
            .filter(|h| self.hosts_down.contains(*h))
            .cloned()
            .collect();
        hosts.dedup();
        hosts
    }

    /// Counts for a progress line.
    pub fn progress(&self) -> Progress {
        let mut p = Progress {
            groups: self.groups.len(),
            ..Progress::default()
        };
        for g in self.groups.values() {
            if self.goal.reached(g.state) {
                p.at_goal += 1;
            }
            for t in g.replicas.values() {
                p.replicas += 1;
                if t.health == Health::Healthy {
                    p.healthy += 1;
                }
                if is_up(&t.phase) {
                    p.running += 1;
                }
            }
        }
        p
    }
}

/// Not stopped, exited or never started.
fn is_up(p: &Phase) -> bool {
    !matches!(p, Phase::Stopped | Phase::Exited { .. } | Phase::Pending)
}

#[cfg(test)]
mod tests;
