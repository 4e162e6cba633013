//! The persister: desired state on disk, and the state file's health.
//!
//! A failed write (a full or read-only disk) stops nothing: the state
//! stays in memory, supervision goes on, the failure is an event and a
//! `status` field, and the write is tried again every [`PERSIST_RETRY`]
//! until it succeeds. The file is a few kilobytes and written only when
//! desired state changes (an operator command, a slice given), not per
//! event; its cost is measured in the benchmarks.

use std::sync::Arc;
use std::time::Duration;

use orch_api::StateFileStatus;
use orch_core::supervise::{Persisted, StateOrigin, SupervisorEvent};
use tokio::time::Instant;

use crate::store::{self, StateStore, StoreError};

/// How long after a failed state write it is tried again.
pub(super) const PERSIST_RETRY: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub(super) struct Persister {
    store: Arc<dyn StateStore>,
    status: StateFileStatus,
    /// When to try again after a failed write.
    retry_at: Option<Instant>,
}

/// What a write did, for the journal and the counters.
#[derive(Debug, PartialEq)]
pub(super) enum Written {
    Saved,
    /// Saved after failed writes: an event says so.
    SavedAgain(SupervisorEvent),
    /// Failed; the event is there the first time a failure reads so.
    Failed(Option<SupervisorEvent>),
}

impl Persister {
    /// Opens the store: the desired state to start from and where it came
    /// from. A damaged file is kept aside, never refused: the running
    /// containers say what was wanted. `fresh` starts from nothing started,
    /// keeping only the record of which MIG instances are ours (a fact,
    /// not an intent).
    pub(super) fn open(
        store: Arc<dyn StateStore>,
        now_unix_ms: u64,
        fresh: bool,
    ) -> Result<(Persister, Persisted, StateOrigin), StoreError> {
        use store::Loaded;
        let loaded = store::load_or_keep_aside(&*store, now_unix_ms / 1000)?;
        if let Loaded::Damaged { reason, kept_as } = &loaded {
            tracing::warn!(
                kept_as = %kept_as,
                "the state file was damaged ({reason}); kept aside as {kept_as}; inferring started groups from the running agents"
            );
        }
        let (persisted, origin) = match (loaded, fresh) {
            (Loaded::Saved(p), true) => (
                Persisted {
                    owned_mig: p.owned_mig,
                    ..Persisted::default()
                },
                StateOrigin::Fresh,
            ),
            (_, true) => (Persisted::default(), StateOrigin::Fresh),
            (Loaded::Saved(p), false) => (p, StateOrigin::Saved),
            (Loaded::Missing, false) => {
                tracing::info!(state = %store.location(), "no saved state; inferring started groups from the running agents");
                (Persisted::default(), StateOrigin::Missing)
            }
            (Loaded::Damaged { .. }, false) => (Persisted::default(), StateOrigin::Damaged),
        };
        let status = StateFileStatus {
            location: store.location(),
            origin: origin.label().to_string(),
            write_error: None,
            failed_writes: 0,
        };
        let persister = Persister {
            store,
            status,
            retry_at: None,
        };
        Ok((persister, persisted, origin))
    }

    /// Writes the desired state.
    pub(super) fn write(&mut self, state: &Persisted) -> Written {
        match self.store.save(state) {
            Ok(()) => {
                self.retry_at = None;
                if self.status.write_error.take().is_some() {
                    tracing::info!("state saved again");
                    Written::SavedAgain(SupervisorEvent::StateWritten)
                } else {
                    Written::Saved
                }
            }
            Err(e) => {
                let detail = e.to_string();
                self.status.failed_writes += 1;
                self.retry_at = Some(Instant::now() + PERSIST_RETRY);
                if self.status.write_error.as_deref() == Some(detail.as_str()) {
                    return Written::Failed(None);
                }
                tracing::error!("{detail}; agents are still supervised, retrying");
                self.status.write_error = Some(detail.clone());
                Written::Failed(Some(SupervisorEvent::StateWriteFailed { detail }))
            }
        }
    }

    /// When a failed write is to be tried again.
    pub(super) fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// Whether the retry is due now.
    pub(super) fn retry_due(&self) -> bool {
        self.retry_at.is_some_and(|t| Instant::now() >= t)
    }

    /// The state file's health, for `status`.
    pub(super) fn status(&self) -> &StateFileStatus {
        &self.status
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::store::MemStore;

    #[tokio::test(start_paused = true)]
    async fn a_failed_write_is_one_event_and_retried_until_it_succeeds() {
        let disk = MemStore::new();
        let (mut p, _, origin) = Persister::open(Arc::new(disk.clone()), 0, false).unwrap();
        assert_eq!(origin, StateOrigin::Missing);
        let state = Persisted::default();
        disk.fail_writes(true);
        assert!(matches!(
            p.write(&state),
            Written::Failed(Some(SupervisorEvent::StateWriteFailed { .. }))
        ));
        assert_eq!(p.write(&state), Written::Failed(None), "said once");
        assert_eq!(p.status().failed_writes, 2);
        assert!(p.status().write_error.is_some());
        assert!(!p.retry_due());
        tokio::time::advance(PERSIST_RETRY).await;
        assert!(p.retry_due());
        disk.fail_writes(false);
        assert_eq!(
            p.write(&state),
            Written::SavedAgain(SupervisorEvent::StateWritten)
        );
        assert_eq!(p.write(&state), Written::Saved);
        assert_eq!(
            (p.retry_at(), p.status().write_error.as_deref()),
            (None, None)
        );
    }

    #[test]
    fn a_fresh_start_keeps_only_the_record_of_our_mig_instances() {
        let saved = Persisted {
            started_groups: ["g".to_string()].into(),
            generation: 4,
            owned_mig: vec![orch_core::supervise::OwnedMig {
                gpu_uuid: "GPU-a".into(),
                gi_id: 1,
                profile_id: 19,
                placement_start: 0,
            }],
            ..Persisted::default()
        };
        let disk = Arc::new(MemStore::with(saved.clone()));
        let (_, kept, origin) = Persister::open(disk.clone(), 0, false).unwrap();
        assert_eq!((kept, origin), (saved.clone(), StateOrigin::Saved));
        let (_, fresh, origin) = Persister::open(disk, 0, true).unwrap();
        assert_eq!(origin, StateOrigin::Fresh);
        assert_eq!(
            fresh,
            Persisted {
                owned_mig: saved.owned_mig,
                ..Persisted::default()
            }
        );
    }
}
