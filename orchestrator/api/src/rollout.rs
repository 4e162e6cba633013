//! Rollouts as the API carries them: the request's actions, the status
//! view, the events' parts, and the decision of an `apply --wait` or
//! `rollout status --wait` from the events it follows.

use serde::{Deserialize, Serialize};

use crate::wire::{Event, EventKind};
/// The parts of the rollout events (defined with the events).
pub use crate::wire::{RolloutKind, RolloutSignal, StepFailure};

/// What a `rollout` request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum RolloutAction {
    /// The current (or last) rollout. Reply: [`RolloutStatus`].
    Status,
    /// No further step starts. Reply: [`RolloutStatus`].
    Pause,
    /// A paused rollout goes on. Reply: [`RolloutStatus`].
    Resume,
    /// Roll out an earlier generation's config (`to`; `None`: the last
    /// good one before the running generation). Reply: [`crate::Applied`].
    Undo {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<u64>,
    },
}

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutPhase {
    Progressing,
    Paused,
    RollingBack,
    Completed,
    Superseded,
}

impl RolloutPhase {
    pub const ALL: [RolloutPhase; 5] = [
        RolloutPhase::Progressing,
        RolloutPhase::Paused,
        RolloutPhase::RollingBack,
        RolloutPhase::Completed,
        RolloutPhase::Superseded,
    ];

    pub fn label(self) -> &'static str {
        match self {
            RolloutPhase::Progressing => "progressing",
            RolloutPhase::Paused => "paused",
            RolloutPhase::RollingBack => "rolling_back",
            RolloutPhase::Completed => "completed",
            RolloutPhase::Superseded => "superseded",
        }
    }
}

/// One agent's progress in a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutAgent {
    pub agent: String,
    pub group: String,
    pub replicas: u32,
    /// Running the new config, through their watch.
    pub done: u32,
    /// Replaced and starting or being watched.
    pub in_step: u32,
}

/// A rollout as `rollout status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutView {
    pub generation: u64,
    pub kind: RolloutKind,
    /// The generation a failed step goes back to.
    pub previous: u64,
    pub phase: RolloutPhase,
    /// Paused by an operator (not by a failed step).
    #[serde(default)]
    pub paused_by_operator: bool,
    /// The failed step, when one failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<StepFailure>,
    /// Milliseconds since the rollout began (at the time of the answer).
    pub age_ms: u64,
    pub agents: Vec<RolloutAgent>,
}

/// The answer to `rollout status|pause|resume`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutStatus {
    /// The running config's generation.
    pub generation: u64,
    /// The last rollout since the daemon started; `None`: none.
    pub rollout: Option<RolloutView>,
    /// The first event that may concern this answer (to follow).
    pub events_from: u64,
}

/// How a rollout ended, as a wait sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum RolloutEnd {
    /// Every step done.
    Completed,
    /// A step failed and the previous generation was put back (`to` is
    /// the generation of the rollback).
    RolledBack { failure: StepFailure, to: u64 },
    /// A step failed and the rollout is paused.
    Paused { failure: StepFailure },
    /// A newer config took over.
    Superseded { by: u64 },
}

/// Follows the events of generation `generation`'s rollout to its end.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutWait {
    generation: u64,
    failure: Option<StepFailure>,
    /// The rollback's generation, once it started.
    rollback: Option<u64>,
}

impl RolloutWait {
    pub fn new(generation: u64) -> Self {
        RolloutWait {
            generation,
            failure: None,
            rollback: None,
        }
    }

    /// Takes one event; `Some` when the rollout has ended.
    pub fn see(&mut self, event: &Event) -> Option<RolloutEnd> {
        match &event.kind {
            EventKind::RolloutCompleted { generation, .. } if *generation == self.generation => {
                Some(RolloutEnd::Completed)
            }
            EventKind::RolloutFailed {
                generation,
                failure,
                rollback_to,
            } if *generation == self.generation => {
                self.failure = Some(failure.clone());
                match rollback_to {
                    Some(_) => None,
                    None => Some(RolloutEnd::Paused {
                        failure: failure.clone(),
                    }),
                }
            }
            EventKind::RolloutStarted {
                generation,
                rollout,
                ..
            } => match rollout {
                RolloutKind::Rollback { from, .. } if *from == self.generation => {
                    self.rollback = Some(*generation);
                    None
                }
                _ if *generation > self.generation
                    && self.rollback.is_none()
                    && self.failure.is_none() =>
                {
                    Some(RolloutEnd::Superseded { by: *generation })
                }
                _ => None,
            },
            EventKind::RolloutCompleted { generation, .. }
                if Some(*generation) == self.rollback =>
            {
                self.failure.clone().map(|failure| RolloutEnd::RolledBack {
                    failure,
                    to: *generation,
                })
            }
            // A rollback's own config comes first; once a failure has
            // asked for one, only its rollout's events count.
            EventKind::ConfigApplied { generation, .. }
                if *generation > self.generation
                    && self.rollback.is_none()
                    && self.failure.is_none() =>
            {
                // A newer config with nothing to roll out.
                Some(RolloutEnd::Superseded { by: *generation })
            }
            _ => None,
        }
    }

    /// The end a status shows, when the rollout has ended already.
    pub fn from_status(&self, s: &RolloutStatus) -> Option<RolloutEnd> {
        let ro = s.rollout.as_ref()?;
        if ro.generation == self.generation {
            return match (ro.phase, &ro.failure) {
                (RolloutPhase::Completed, _) => Some(RolloutEnd::Completed),
                (RolloutPhase::Paused, Some(f)) => Some(RolloutEnd::Paused { failure: f.clone() }),
                (RolloutPhase::Superseded, _) => Some(RolloutEnd::Superseded { by: s.generation }),
                _ => None,
            };
        }
        match ro.kind {
            RolloutKind::Rollback { from, .. } if from == self.generation => {
                match (ro.phase, &self.failure) {
                    (RolloutPhase::Completed, Some(f)) => Some(RolloutEnd::RolledBack {
                        failure: f.clone(),
                        to: ro.generation,
                    }),
                    _ => None,
                }
            }
            _ if ro.generation > self.generation => {
                Some(RolloutEnd::Superseded { by: ro.generation })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ReplicaRef;

    fn ev(seq: u64, kind: EventKind) -> Event {
        Event {
            host: "h".into(),
            seq,
            time_ms: 0,
            kind,
        }
    }

    fn failure() -> StepFailure {
        StepFailure {
            replica: ReplicaRef {
                agent: "Pool".into(),
                replica: 0,
            },
            group: "web".into(),
            signal: RolloutSignal::Exited { code: 1 },
        }
    }

    fn run(generation: u64, kinds: Vec<EventKind>) -> Vec<Option<RolloutEnd>> {
        let mut w = RolloutWait::new(generation);
        kinds
            .into_iter()
            .enumerate()
            .map(|(i, k)| w.see(&ev(i as u64 + 1, k)))
            .collect()
    }

    #[test]
    fn a_rollout_ends_completed_rolled_back_paused_or_superseded() {
        let started = |generation, rollout| EventKind::RolloutStarted {
            generation,
            rollout,
            previous: 1,
            agents: vec!["Pool".into()],
        };
        let applied = |generation| EventKind::ConfigApplied {
            generation,
            changed: vec!["Pool".into()],
        };
        let done = |generation, rollout| EventKind::RolloutCompleted {
            generation,
            rollout,
        };
        // Completed.
        let ends = run(
            2,
            vec![started(2, RolloutKind::Apply), done(2, RolloutKind::Apply)],
        );
        assert_eq!(ends, [None, Some(RolloutEnd::Completed)]);
        // Rolled back: the rollback's config and rollout come after the
        // failure, and it ends when the rollback completes.
        let back = RolloutKind::Rollback { from: 2, to: 1 };
        let ends = run(
            2,
            vec![
                EventKind::RolloutFailed {
                    generation: 2,
                    failure: failure(),
                    rollback_to: Some(1),
                },
                applied(3),
                started(3, back),
                done(3, back),
            ],
        );
        assert_eq!(
            ends,
            [
                None,
                None,
                None,
                Some(RolloutEnd::RolledBack {
                    failure: failure(),
                    to: 3
                })
            ]
        );
        // Paused.
        let ends = run(
            2,
            vec![EventKind::RolloutFailed {
                generation: 2,
                failure: failure(),
                rollback_to: None,
            }],
        );
        assert_eq!(ends, [Some(RolloutEnd::Paused { failure: failure() })]);
        // Another apply took over.
        let ends = run(2, vec![applied(3)]);
        assert_eq!(ends, [Some(RolloutEnd::Superseded { by: 3 })]);
        // Others' events change nothing.
        let ends = run(
            2,
            vec![done(1, RolloutKind::Apply), started(1, RolloutKind::Apply)],
        );
        assert_eq!(ends, [None, None]);
    }
}
