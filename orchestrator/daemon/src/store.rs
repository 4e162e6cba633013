//! The desired state on disk: which groups are started, at which config
//! generation, and the GPU slices given out. Behind [`StateStore`], so the
//! daemon can be run on a `MemStore` in tests (which can also be made to
//! fail, as a full or read-only disk does).
//!
//! Invariant: the file is replaced atomically (`orch_config::fsutil`), so
//! a crash at any instant leaves either the old state or the new one.
//!
//! The file is a cache of intent, not the only copy of it: a missing file
//! is a fresh start, and a damaged one is kept aside ([`StateStore::keep_aside`],
//! `<host>.state.json.damaged-<unix seconds>`), never overwritten, while the
//! daemon infers intent from the running containers
//! (`orch_core::supervise::infer`).

use std::fmt::Debug;
use std::path::{Path, PathBuf};

use orch_core::supervise::Persisted;
use serde::{Deserialize, Serialize};

use crate::events::Kept;

const FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot use the state directory {path}: {source}")]
    Dir {
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
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is damaged ({reason})")]
    Corrupt { path: PathBuf, reason: String },
}

/// The state as loaded at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loaded {
    Saved(Persisted),
    /// No state was ever saved here (or it was deleted).
    Missing,
    /// The saved state could not be read; it was moved to `kept_as`.
    Damaged {
        reason: String,
        kept_as: String,
    },
}

/// Loads the state; a damaged one is kept aside under `stamp` (Unix
/// seconds) rather than refused, so the daemon can start by inference.
pub fn load_or_keep_aside(store: &dyn StateStore, stamp: u64) -> Result<Loaded, StoreError> {
    match store.load() {
        Ok(Some(p)) => Ok(Loaded::Saved(p)),
        Ok(None) => Ok(Loaded::Missing),
        Err(StoreError::Corrupt { reason, .. }) => {
            let kept_as = store.keep_aside(stamp)?;
            Ok(Loaded::Damaged { reason, kept_as })
        }
        Err(e) => Err(e),
    }
}

/// Where desired state is kept.
pub trait StateStore: Send + Sync + Debug {
    /// The saved state; `None` when nothing was ever saved.
    fn load(&self) -> Result<Option<Persisted>, StoreError>;
    /// Replaces the saved state, whole.
    fn save(&self, state: &Persisted) -> Result<(), StoreError>;
    /// Where it is, for people.
    fn location(&self) -> String;
    /// Moves a damaged state out of the way, keeping it whole, and says
    /// where it went. `stamp` (Unix seconds) makes the name unique.
    fn keep_aside(&self, stamp: u64) -> Result<String, StoreError>;
    /// The recent events the last daemon kept (oldest first); none when
    /// there are none. A store that keeps none has nothing to give.
    fn load_events(&self) -> Result<Kept, StoreError> {
        Ok(Kept::default())
    }
    /// Replaces the kept events, whole.
    fn save_events(&self, _kept: &Kept) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The most bytes of an events file read back: a larger one is not read
/// (the daemon starts with no history, numbering on from nothing lost of
/// its state). [`crate::events::KEEP_ON_DISK`] events are far below it.
pub const EVENTS_MAX_BYTES: u64 = 4 * 1024 * 1024;

#[derive(Debug, Serialize, Deserialize)]
struct EventsOnDisk {
    format: u32,
    host: String,
    #[serde(flatten)]
    kept: Kept,
}

#[derive(Debug, Serialize, Deserialize)]
struct OnDisk {
    format: u32,
    host: String,
    #[serde(flatten)]
    state: Persisted,
}

/// The state as one JSON file per host in a directory.
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
    host: String,
}

impl FileStore {
    /// Opens (creating if needed) the state directory of `host`. A disk
    /// that is read-only or full is no reason not to start: the directory
    /// is made by the first write that can, and failed writes are reported
    /// by the daemon while it supervises.
    pub fn open(dir: &Path, host: &str) -> Result<Self, StoreError> {
        match std::fs::create_dir_all(dir) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::StorageFull
                ) => {}
            Err(source) => {
                return Err(StoreError::Dir {
                    path: dir.to_path_buf(),
                    source,
                });
            }
        }
        Ok(FileStore {
            dir: dir.to_path_buf(),
            host: host.to_string(),
        })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(format!("{}.state.json", self.host))
    }

    /// The recent events (`events` after a restart).
    pub fn events_path(&self) -> PathBuf {
        self.dir.join(format!("{}.events.json", self.host))
    }
}

impl StateStore for FileStore {
    fn load(&self) -> Result<Option<Persisted>, StoreError> {
        let path = self.path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StoreError::Read { path, source }),
        };
        let disk: OnDisk = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if disk.format != FORMAT {
            return Err(StoreError::Corrupt {
                path,
                reason: format!("format {} is not {FORMAT}", disk.format),
            });
        }
        Ok(Some(disk.state))
    }

    fn save(&self, state: &Persisted) -> Result<(), StoreError> {
        let path = self.path();
        let disk = OnDisk {
            format: FORMAT,
            host: self.host.clone(),
            state: state.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&disk).map_err(|e| StoreError::Write {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        // A state directory deleted under a running daemon comes back with
        // the next write; if it cannot, the write below says why.
        let _ = std::fs::create_dir_all(&self.dir);
        orch_config::fsutil::write_atomic(&path, &bytes)
            .map_err(|source| StoreError::Write { path, source })
    }

    fn location(&self) -> String {
        self.path().display().to_string()
    }

    fn keep_aside(&self, stamp: u64) -> Result<String, StoreError> {
        let path = self.path();
        let mut aside = path.with_extension(format!("json.damaged-{stamp}"));
        // INVARIANT: a damaged file is never overwritten, not even by an
        // older damaged copy kept in the same second.
        let mut n = 1;
        while aside.exists() {
            aside = path.with_extension(format!("json.damaged-{stamp}.{n}"));
            n += 1;
        }
        std::fs::rename(&path, &aside).map_err(|source| StoreError::Write {
            path: aside.clone(),
            source,
        })?;
        Ok(aside.display().to_string())
    }

    fn load_events(&self) -> Result<Kept, StoreError> {
        use std::io::Read;
        let path = self.events_path();
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Kept::default()),
            Err(source) => return Err(StoreError::Read { path, source }),
        };
        // Never more than the bound, whatever the file says its size is.
        let mut bytes = Vec::new();
        file.take(EVENTS_MAX_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| StoreError::Read {
                path: path.clone(),
                source,
            })?;
        if bytes.len() as u64 > EVENTS_MAX_BYTES {
            return Err(StoreError::Corrupt {
                path,
                reason: format!("larger than {EVENTS_MAX_BYTES} bytes"),
            });
        }
        let disk: EventsOnDisk =
            serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        if disk.format != FORMAT || disk.host != self.host {
            return Err(StoreError::Corrupt {
                path,
                reason: format!("format {} of host {}", disk.format, disk.host),
            });
        }
        Ok(Kept {
            next_seq: disk.kept.next_seq,
            events: crate::events::bounded(disk.kept.events),
        })
    }

    fn save_events(&self, kept: &Kept) -> Result<(), StoreError> {
        let path = self.events_path();
        let disk = EventsOnDisk {
            format: FORMAT,
            host: self.host.clone(),
            kept: Kept {
                next_seq: kept.next_seq,
                events: crate::events::bounded(kept.events.clone()),
            },
        };
        let bytes = serde_json::to_vec(&disk).map_err(|e| StoreError::Write {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        let _ = std::fs::create_dir_all(&self.dir);
        orch_config::fsutil::write_atomic(&path, &bytes)
            .map_err(|source| StoreError::Write { path, source })
    }
}

/// The fake, compiled for tests and the `testing` feature.
#[cfg(any(test, feature = "testing"))]
pub use mem::MemStore;

#[cfg(any(test, feature = "testing"))]
mod mem {
    use std::path::PathBuf;
    use std::sync::{Arc, Mutex};

    use orch_core::supervise::Persisted;

    use super::{StateStore, StoreError};

    /// The state in memory, shared by clones (a restarted daemon in a test
    /// sees what the last one saved). `fail_writes` makes saves fail as a
    /// full disk would.
    #[derive(Debug, Clone, Default)]
    pub struct MemStore {
        inner: Arc<Mutex<MemInner>>,
    }

    #[derive(Debug, Default)]
    struct MemInner {
        state: Option<Persisted>,
        fail_writes: bool,
        saves: u64,
        /// The next load finds the state damaged.
        damaged: bool,
        kept_aside: Vec<Persisted>,
        events: crate::events::Kept,
    }

    impl MemStore {
        pub fn new() -> Self {
            MemStore::default()
        }

        pub fn with(state: Persisted) -> Self {
            let s = MemStore::default();
            s.lock().state = Some(state);
            s
        }

        fn lock(&self) -> std::sync::MutexGuard<'_, MemInner> {
            // Held only to copy a value in or out; a panic elsewhere cannot
            // leave it half written.
            self.inner
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        }

        /// What was saved last.
        pub fn state(&self) -> Option<Persisted> {
            self.lock().state.clone()
        }

        /// How many saves succeeded.
        pub fn saves(&self) -> u64 {
            self.lock().saves
        }

        pub fn fail_writes(&self, fail: bool) {
            self.lock().fail_writes = fail;
        }

        /// Forgets the saved state, as a deleted state directory does.
        pub fn lose(&self) {
            self.lock().state = None;
        }

        /// Makes the saved state unreadable, as a truncated file is.
        pub fn damage(&self) {
            self.lock().damaged = true;
        }

        /// The states moved aside as damaged, oldest first.
        pub fn kept_aside(&self) -> Vec<Persisted> {
            self.lock().kept_aside.clone()
        }

        /// The events kept last.
        pub fn events(&self) -> crate::events::Kept {
            self.lock().events.clone()
        }
    }

    impl StateStore for MemStore {
        fn load(&self) -> Result<Option<Persisted>, StoreError> {
            let g = self.lock();
            if g.damaged {
                return Err(StoreError::Corrupt {
                    path: PathBuf::from("memory"),
                    reason: "made unreadable by the test".into(),
                });
            }
            Ok(g.state.clone())
        }

        fn save(&self, state: &Persisted) -> Result<(), StoreError> {
            let mut g = self.lock();
            if g.fail_writes {
                return Err(StoreError::Write {
                    path: PathBuf::from("memory"),
                    source: std::io::Error::from_raw_os_error(28), // ENOSPC
                });
            }
            g.state = Some(state.clone());
            g.saves += 1;
            Ok(())
        }

        fn location(&self) -> String {
            "memory".into()
        }

        fn keep_aside(&self, _stamp: u64) -> Result<String, StoreError> {
            let mut g = self.lock();
            g.damaged = false;
            let old = g.state.take().unwrap_or_default();
            g.kept_aside.push(old);
            Ok(format!("memory (damaged copy {})", g.kept_aside.len()))
        }

        fn load_events(&self) -> Result<crate::events::Kept, StoreError> {
            Ok(self.lock().events.clone())
        }

        fn save_events(&self, kept: &crate::events::Kept) -> Result<(), StoreError> {
            let mut g = self.lock();
            if g.fail_writes {
                return Err(StoreError::Write {
                    path: PathBuf::from("memory"),
                    source: std::io::Error::from_raw_os_error(28), // ENOSPC
                });
            }
            g.events = crate::events::Kept {
                next_seq: kept.next_seq,
                events: crate::events::bounded(kept.events.clone()),
            };
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64) -> orch_api::Event {
        orch_api::Event {
            host: "mainpc".into(),
            seq,
            time_ms: seq,
            kind: orch_api::EventKind::DockerUp,
        }
    }

    #[test]
    fn events_are_kept_beside_the_state_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path(), "mainpc").unwrap();
        assert_eq!(store.load_events().unwrap(), Kept::default());
        let kept = Kept {
            next_seq: 4,
            events: (1..=3).map(event).collect(),
        };
        store.save_events(&kept).unwrap();
        assert_eq!(store.load_events().unwrap(), kept);
        assert!(store.events_path().ends_with("mainpc.events.json"));
        // Another host's file is not this host's history.
        let other = FileStore::open(dir.path(), "other").unwrap();
        std::fs::copy(store.events_path(), other.events_path()).unwrap();
        assert!(matches!(
            other.load_events(),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn an_events_file_past_its_bound_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path(), "mainpc").unwrap();
        let huge = vec![b' '; usize::try_from(EVENTS_MAX_BYTES).unwrap() + 1];
        std::fs::write(store.events_path(), huge).unwrap();
        let err = store.load_events().unwrap_err();
        assert!(err.to_string().contains("larger than"), "{err}");
    }

    #[test]
    fn saves_and_loads_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path(), "mainpc").unwrap();
        assert_eq!(store.load().unwrap(), None);
        let state = Persisted {
            started_groups: ["infra_core".to_string(), "vision_gpu".to_string()].into(),
            generation: 3,
            ..Persisted::default()
        };
        store.save(&state).unwrap();
        assert_eq!(store.load().unwrap(), Some(state));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(
            names,
            ["mainpc.state.json"],
            "no temporary file left behind"
        );
    }

    #[test]
    fn a_damaged_file_is_reported_not_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path(), "h").unwrap();
        std::fs::write(store.path(), b"{\"format\": 1, \"host\": ").unwrap();
        let err = store.load().unwrap_err();
        assert!(err.to_string().contains("is damaged"), "{err}");
    }

    #[test]
    fn a_damaged_file_is_kept_aside_whole_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path(), "h").unwrap();
        let damaged = b"{\"format\": 1, \"host\": ".to_vec();
        std::fs::write(store.path(), &damaged).unwrap();
        let Loaded::Damaged { kept_as, reason } = load_or_keep_aside(&store, 1700).unwrap() else {
            panic!("not seen as damaged");
        };
        assert!(!reason.is_empty());
        assert!(kept_as.ends_with("h.state.json.damaged-1700"), "{kept_as}");
        assert_eq!(std::fs::read(&kept_as).unwrap(), damaged);
        assert_eq!(load_or_keep_aside(&store, 1700).unwrap(), Loaded::Missing);
        // A second damaged file in the same second keeps the first.
        std::fs::write(store.path(), b"garbage").unwrap();
        let Loaded::Damaged {
            kept_as: second, ..
        } = load_or_keep_aside(&store, 1700).unwrap()
        else {
            panic!("not seen as damaged");
        };
        assert_ne!(second, kept_as);
        assert_eq!(std::fs::read(&kept_as).unwrap(), damaged);
        assert_eq!(std::fs::read(&second).unwrap(), b"garbage");
    }

    #[test]
    fn an_unreadable_directory_is_an_error_not_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path(), "h").unwrap();
        // A directory where the file should be cannot be read as one.
        std::fs::create_dir(store.path()).unwrap();
        assert!(matches!(
            load_or_keep_aside(&store, 1),
            Err(StoreError::Read { .. })
        ));
    }

    #[test]
    fn a_state_directory_deleted_under_the_daemon_comes_back_with_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        let store = FileStore::open(&state_dir, "h").unwrap();
        std::fs::remove_dir_all(&state_dir).unwrap();
        let state = Persisted {
            generation: 2,
            ..Persisted::default()
        };
        store.save(&state).unwrap();
        assert_eq!(store.load().unwrap(), Some(state));
    }

    #[test]
    fn a_write_that_cannot_be_made_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        // A file where the directory should be: nothing can be written under it.
        let blocked = dir.path().join("blocked");
        std::fs::write(&blocked, b"").unwrap();
        let store = FileStore {
            dir: blocked.clone(),
            host: "h".into(),
        };
        let err = store.save(&Persisted::default()).unwrap_err();
        assert!(matches!(err, StoreError::Write { .. }), "{err}");
    }

    #[test]
    fn the_memory_store_fails_on_demand() {
        let s = MemStore::new();
        s.fail_writes(true);
        assert!(s.save(&Persisted::default()).is_err());
        s.fail_writes(false);
        s.save(&Persisted::default()).unwrap();
        assert_eq!(s.saves(), 1);
        assert_eq!(s.clone().load().unwrap(), Some(Persisted::default()));
    }
}
