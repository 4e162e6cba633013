//! The desired state on disk: which groups are started, at which config
//! generation, and the GPU slices given out. Behind [`StateStore`], so the
//! daemon can be run on a [`MemStore`] in tests (which can also be made to
//! fail, as a full or read-only disk does).
//!
//! Invariant: the file is replaced atomically (`orch_config::fsutil`), so
//! a crash at any instant leaves either the old state or the new one.

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use orch_core::supervise::Persisted;
use serde::{Deserialize, Serialize};

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
    #[error("{path} is damaged ({reason}); move it away to start from no started groups")]
    Corrupt { path: PathBuf, reason: String },
}

/// Where desired state is kept.
pub trait StateStore: Send + Sync + Debug {
    /// The saved state; `None` when nothing was ever saved.
    fn load(&self) -> Result<Option<Persisted>, StoreError>;
    /// Replaces the saved state, whole.
    fn save(&self, state: &Persisted) -> Result<(), StoreError>;
    /// Where it is, for people.
    fn location(&self) -> String;
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
    /// Opens (creating if needed) the state directory of `host`.
    pub fn open(dir: &Path, host: &str) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(FileStore {
            dir: dir.to_path_buf(),
            host: host.to_string(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(format!("{}.state.json", self.host))
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
        orch_config::fsutil::write_atomic(&path, &bytes)
            .map_err(|source| StoreError::Write { path, source })
    }

    fn location(&self) -> String {
        self.path().display().to_string()
    }
}

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
}

impl StateStore for MemStore {
    fn load(&self) -> Result<Option<Persisted>, StoreError> {
        Ok(self.lock().state.clone())
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
