//! The desired state on disk: which groups are started, at which config
//! generation, and the GPU slices given out.
//!
//! Invariant: the file is replaced atomically (write a temporary file,
//! fsync it, rename it over the old one, fsync the directory), so a crash
//! at any instant leaves either the old state or the new one, never a mix.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

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

#[derive(Debug, Serialize, Deserialize)]
struct OnDisk {
    format: u32,
    host: String,
    #[serde(flatten)]
    state: Persisted,
}

#[derive(Debug, Clone)]
pub struct StateStore {
    dir: PathBuf,
    host: String,
}

impl StateStore {
    /// Opens (creating if needed) the state directory of `host`.
    pub fn open(dir: &Path, host: &str) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(StateStore {
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

    /// The saved state, or the empty state when there is none yet.
    pub fn load(&self) -> Result<Persisted, StoreError> {
        let path = self.path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Persisted::default()),
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
        Ok(disk.state)
    }

    pub fn save(&self, state: &Persisted) -> Result<(), StoreError> {
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
        let tmp = self.dir.join(format!(".{}.state.json.tmp", self.host));
        let write = |p: &Path| -> std::io::Result<()> {
            let mut f = File::create(p)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(p, &path)?;
            File::open(&self.dir)?.sync_all()
        };
        write(&tmp).map_err(|source| StoreError::Write { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_loads_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path(), "mainpc").unwrap();
        assert_eq!(store.load().unwrap(), Persisted::default());
        let state = Persisted {
            started_groups: ["infra_core".to_string(), "vision_gpu".to_string()].into(),
            generation: 3,
            ..Persisted::default()
        };
        store.save(&state).unwrap();
        assert_eq!(store.load().unwrap(), state);
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
        let store = StateStore::open(dir.path(), "h").unwrap();
        std::fs::write(store.path(), b"{\"format\": 1, \"host\": ").unwrap();
        let err = store.load().unwrap_err();
        assert!(err.to_string().contains("is damaged"), "{err}");
    }
}
