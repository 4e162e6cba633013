//! The SLO history on disk, apart from the desired state: it is larger
//! (up to about a megabyte of JSON), written every few minutes and at
//! shutdown rather than on every change, and losing it loses figures, not
//! intent. Behind [`SloStore`], with a file and a memory implementation.
//! Writes are atomic (`orch_config::fsutil::write_atomic`).

use std::fmt::Debug;
use std::path::{Path, PathBuf};

use orch_core::slo::SloState;

#[derive(Debug, thiserror::Error)]
pub enum SloStoreError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not an SLO history this build reads ({reason}); the SLOs start over")]
    Unreadable { path: PathBuf, reason: String },
}

/// Where the SLO history is kept between daemon runs.
pub trait SloStore: Send + Sync + Debug {
    /// The saved history; `None` when nothing was ever saved.
    fn load(&self) -> Result<Option<SloState>, SloStoreError>;
    /// Replaces the saved history, whole.
    fn save(&self, state: &SloState) -> Result<(), SloStoreError>;
}

/// `<state dir>/<host>.slo.json`.
#[derive(Debug, Clone)]
pub struct FileSloStore {
    path: PathBuf,
}

impl FileSloStore {
    pub fn new(dir: &Path, host: &str) -> FileSloStore {
        FileSloStore {
            path: dir.join(format!("{host}.slo.json")),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl SloStore for FileSloStore {
    fn load(&self) -> Result<Option<SloState>, SloStoreError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(SloStoreError::Read {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        SloState::from_json(&text)
            .map(Some)
            .map_err(|e| SloStoreError::Unreadable {
                path: self.path.clone(),
                reason: e.to_string(),
            })
    }

    fn save(&self, state: &SloState) -> Result<(), SloStoreError> {
        orch_config::fsutil::write_atomic(&self.path, state.to_json().as_bytes()).map_err(
            |source| SloStoreError::Write {
                path: self.path.clone(),
                source,
            },
        )
    }
}

/// The fake, compiled for tests and the `testing` feature.
#[cfg(any(test, feature = "testing"))]
pub use mem::MemSloStore;

#[cfg(any(test, feature = "testing"))]
mod mem {
    use std::sync::{Arc, Mutex};

    use orch_core::slo::SloState;

    use super::{SloStore, SloStoreError};

    /// The history in memory, shared by clones (a restarted daemon in a test
    /// finds what the last one saved).
    #[derive(Debug, Clone, Default)]
    pub struct MemSloStore {
        inner: Arc<Mutex<Option<SloState>>>,
    }

    impl MemSloStore {
        pub fn new() -> MemSloStore {
            MemSloStore::default()
        }

        /// What was saved last.
        pub fn saved(&self) -> Option<SloState> {
            self.inner.lock().ok().and_then(|s| s.clone())
        }
    }

    impl SloStore for MemSloStore {
        fn load(&self) -> Result<Option<SloState>, SloStoreError> {
            Ok(self.saved())
        }

        fn save(&self, state: &SloState) -> Result<(), SloStoreError> {
            if let Ok(mut s) = self.inner.lock() {
                *s = Some(state.clone());
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use orch_core::slo::SloEngine;

    #[test]
    fn a_saved_history_loads_back_and_a_damaged_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileSloStore::new(dir.path(), "h1");
        assert!(store.load().unwrap().is_none());
        let slo = orch_core::model::Slo {
            availability: Some(orch_core::units::Percent::from_basis_points(9_950)),
            latency_p99: None,
            error_rate: None,
            window: orch_core::units::Duration::from_secs(30 * 86_400),
        };
        let mut engine = SloEngine::new([("g", &slo)]);
        engine
            .record_availability(
                1_800_000_000_000,
                "g",
                orch_core::slo::AvailabilitySample {
                    wanted: 4,
                    healthy: 3,
                    excused: 0,
                },
            )
            .unwrap();
        store.save(&engine.snapshot()).unwrap();
        let back = SloEngine::restore(store.load().unwrap().unwrap()).unwrap();
        assert_eq!(back.snapshot(), engine.snapshot());

        std::fs::write(store.path(), "{not json").unwrap();
        let err = store.load().unwrap_err().to_string();
        assert!(err.contains("h1.slo.json"), "{err}");
    }
}
