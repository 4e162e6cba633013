//! The history part: the config generations kept on disk
//! (`crate::generations`), recorded as the supervisor takes each config,
//! and the newest one's outcome while its replicas are recreated. A store
//! that could not be opened (or a write that fails) costs the history,
//! never supervision: it is logged and `history` says it is unavailable.

use orch_api::{GenerationChanges, GenerationOutcome, GenerationSource, GenerationView, Rejection};
use orch_core::supervise::{RolloutKind, Supervisor, SupervisorEvent};

use crate::generations::{self, GenerationMeta, GenerationStore, NewGeneration};

/// A config taken, to record.
#[derive(Debug)]
pub(super) struct Taken {
    pub generation: u64,
    pub unix_ms: u64,
    pub applied_by: String,
    pub source: GenerationSource,
    pub changes: GenerationChanges,
    /// The config text; `None` when it could not be read (nothing is
    /// recorded).
    pub text: Option<String>,
}

#[derive(Debug)]
pub(super) struct History {
    store: Option<GenerationStore>,
    /// The newest generation and the agents it recreates, until they run
    /// its config with nothing in flight.
    rolling: Option<(u64, Vec<String>)>,
}

impl History {
    pub(super) fn new(store: Option<GenerationStore>) -> History {
        History {
            store,
            rolling: None,
        }
    }

    /// The config the daemon started with, unless the newest generation
    /// kept is that one (same number, same text): then a rollout the last
    /// daemon left in progress is watched on.
    pub(super) fn startup(&mut self, taken: Taken) {
        let Some(store) = &self.store else { return };
        let latest = store.latest().filter(|g| {
            g.meta.generation == taken.generation && Some(&g.text) == taken.text.as_ref()
        });
        match latest {
            Some(g) => {
                if g.meta.outcome == GenerationOutcome::InProgress {
                    self.rolling = Some((g.meta.generation, g.meta.changes.recreated));
                }
            }
            None => self.took(taken),
        }
    }

    /// A config taken by the supervisor.
    pub(super) fn took(&mut self, taken: Taken) {
        let Some(store) = &mut self.store else { return };
        let Some(text) = taken.text else {
            tracing::warn!(
                generation = taken.generation,
                "config text not read; generation not kept"
            );
            return;
        };
        let outcome = generations::default_outcome(&taken.changes);
        // While this daemon runs, the rollout's events give the outcome
        // (`saw`); a newer config ends the watch of an older one.
        self.rolling = None;
        let entry = NewGeneration {
            meta: GenerationMeta {
                generation: taken.generation,
                unix_ms: taken.unix_ms,
                applied_by: taken.applied_by,
                source: taken.source,
                changes: taken.changes,
                outcome,
            },
            text,
        };
        if let Err(e) = store.record(entry) {
            tracing::error!("config generation not kept: {e}");
        }
    }

    /// Marks the newest generation completed once every agent it
    /// recreates runs its config with nothing in flight.
    pub(super) fn settle(&mut self, sup: &Supervisor) {
        let Some((generation, agents)) = &self.rolling else {
            return;
        };
        if *generation != sup.generation() {
            self.rolling = None;
            return;
        }
        let busy = sup.replicas().any(|r| {
            agents.contains(&r.key.agent)
                && (r.op.is_some()
                    || r.restart_requested
                    || r.container.as_ref().is_some_and(|c| {
                        sup.config_hash(&r.key.agent)
                            .is_some_and(|h| h != c.config_hash)
                    }))
        });
        if busy {
            return;
        }
        let generation = *generation;
        self.rolling = None;
        if let Some(store) = &mut self.store
            && let Err(e) = store.set_outcome(generation, GenerationOutcome::Completed)
        {
            tracing::warn!("outcome of generation {generation} not kept: {e}");
        }
    }

    /// The outcome of each generation whose rollout ended in `events`.
    pub(super) fn saw(&mut self, events: &[SupervisorEvent]) {
        let Some(store) = &mut self.store else { return };
        for e in events {
            let (generation, outcome) = match e {
                SupervisorEvent::RolloutCompleted { generation, .. } => {
                    (*generation, GenerationOutcome::Completed)
                }
                SupervisorEvent::RolloutFailed {
                    generation,
                    rollback_to,
                    ..
                } => (
                    *generation,
                    match rollback_to {
                        Some(_) => GenerationOutcome::RolledBack,
                        None => GenerationOutcome::Paused,
                    },
                ),
                SupervisorEvent::RolloutPaused { generation } => {
                    (*generation, GenerationOutcome::Paused)
                }
                SupervisorEvent::RolloutResumed { generation } => {
                    (*generation, GenerationOutcome::InProgress)
                }
                _ => continue,
            };
            if let Err(e) = store.set_outcome(generation, outcome) {
                tracing::warn!("outcome of generation {generation} not kept: {e}");
            }
        }
    }

    /// Whether generations are kept at all.
    pub(super) fn available(&self) -> bool {
        self.store.is_some()
    }

    /// A kept generation's config text.
    pub(super) fn text(&self, generation: u64) -> Option<String> {
        Some(self.store.as_ref()?.get(generation)?.text)
    }

    /// The generations kept, newest first.
    pub(super) fn kept(&self) -> Vec<u64> {
        self.store
            .as_ref()
            .map(|s| s.list().iter().map(|m| m.generation).collect())
            .unwrap_or_default()
    }

    /// What `rollout undo` goes back to: the newest generation before
    /// `running` whose rollout completed and whose config differs from the
    /// running one (a rollback's config is the one it went back to).
    pub(super) fn last_good_before(&self, running: u64) -> Option<u64> {
        let store = self.store.as_ref()?;
        let current = store.get(running).map(|g| g.text);
        store
            .list()
            .iter()
            .filter(|m| m.generation < running && m.outcome == GenerationOutcome::Completed)
            .map(|m| m.generation)
            .find(|g| store.get(*g).map(|x| x.text) != current)
    }

    /// `history`: the generations kept, newest first.
    pub(super) fn views(&self) -> Result<Vec<GenerationView>, Rejection> {
        let store = self.store.as_ref().ok_or(Rejection::NoHistory)?;
        Ok(store.list().iter().map(GenerationMeta::view).collect())
    }
}

/// A config the supervisor took by `apply` (`text`, its text) or
/// `reload` (`None`: the config file, read again now).
pub(super) fn taken(
    done: &orch_core::supervise::Reloaded,
    text: Option<&str>,
    config_path: &std::path::Path,
    applied_by: &str,
    unix_ms: u64,
    kind: RolloutKind,
) -> Taken {
    Taken {
        generation: done.generation,
        unix_ms,
        applied_by: applied_by.to_string(),
        source: match (kind, text) {
            (RolloutKind::Rollback { from, to }, _) => GenerationSource::Rollback { from, to },
            (RolloutKind::Undo { to }, _) => GenerationSource::Undo {
                from: done.generation.saturating_sub(1),
                to,
            },
            (RolloutKind::Apply, Some(_)) => GenerationSource::Apply,
            (RolloutKind::Apply, None) => GenerationSource::Reload,
        },
        changes: GenerationChanges {
            changed: done.changed.clone(),
            recreated: done.recreated.clone(),
            rescaled: done
                .rescaled
                .iter()
                .map(|(agent, from, to)| orch_api::Rescaled {
                    agent: agent.clone(),
                    from: *from,
                    to: *to,
                })
                .collect(),
        },
        text: match text {
            Some(t) => Some(t.to_string()),
            None => generations::read_config_text(config_path),
        },
    }
}

/// Who applied a config: the operator's user name (or uid) when the
/// request carried one, else `fallback`.
pub(super) fn applied_by(operator: Option<&orch_api::Operator>, fallback: &str) -> String {
    match operator {
        Some(op) => op.user.clone().unwrap_or_else(|| format!("uid {}", op.uid)),
        None => fallback.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_applier_is_the_operator_by_name_else_by_uid_else_the_fallback() {
        let op = |user: Option<&str>| orch_api::Operator {
            uid: 1000,
            gid: 1000,
            groups: Vec::new(),
            user: user.map(str::to_string),
            group: None,
        };
        for (operator, want) in [
            (Some(op(Some("alice"))), "alice"),
            (Some(op(None)), "uid 1000"),
            (None, "sighup"),
        ] {
            assert_eq!(applied_by(operator.as_ref(), "sighup"), want);
        }
    }

    #[test]
    fn without_a_store_history_is_unavailable() {
        let h = History::new(None);
        assert!(matches!(h.views(), Err(Rejection::NoHistory)));
    }
}
