//! The mapping directory on disk: each file written whole (a temporary
//! file renamed over it, `orch_config::fsutil::write_atomic`), only when
//! its content changes, and removed when its GPU has no replica left.
//!
//! The daemon touches only files it wrote. It names them in
//! [`MANIFEST`], a file dcgm-exporter skips (its name is not a GPU's),
//! written before a new file is made and after an old one is removed, so
//! the manifest always names at least the files the daemon wrote, and a
//! daemon started after a crash removes the ones no agent needs. A file
//! another program wrote under a GPU's name is left alone (and said once):
//! that GPU gets no mapping from the daemon while it is there.

use std::collections::BTreeSet;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use orch_config::fsutil::write_atomic;

use super::{JobFiles, content, is_mapping_name};

/// The daemon's list of the files it wrote, one name a line.
pub const MANIFEST: &str = ".orchestratord-files";

/// The most of the manifest read: more is not a list the daemon wrote
/// (a few thousand GPU and instance names take well under this).
pub const MANIFEST_MAX_BYTES: u64 = 64 * 1024;

/// The most of a mapping file compared with what it should hold; a
/// longer one is rewritten.
pub const FILE_MAX_BYTES: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    #[error("cannot use the dcgm-exporter job mapping directory {path}: {source}")]
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
    #[error("cannot remove {path}: {source}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What one [`MappingDir::sync`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Synced {
    pub written: Vec<String>,
    pub removed: Vec<String>,
    /// Files another program wrote, left alone (said once each).
    pub foreign: Vec<String>,
}

#[derive(Debug)]
pub struct MappingDir {
    dir: PathBuf,
    /// The files the daemon wrote (the manifest's names).
    owned: BTreeSet<String>,
    /// Foreign files already said.
    said: BTreeSet<String>,
}

impl MappingDir {
    /// Opens `dir` (made if missing) and reads which files the daemon
    /// wrote there before. A manifest over [`MANIFEST_MAX_BYTES`] or not
    /// text is not the daemon's: it is read as naming no file.
    pub fn open(dir: &Path) -> Result<Self, MappingError> {
        let at = |source| MappingError::Dir {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(at)?;
        let mut owned = BTreeSet::new();
        match std::fs::File::open(dir.join(MANIFEST)) {
            Ok(f) => {
                let mut text = String::new();
                let read = f.take(MANIFEST_MAX_BYTES + 1).read_to_string(&mut text);
                match read {
                    Ok(n) if n as u64 <= MANIFEST_MAX_BYTES => {
                        owned.extend(
                            text.lines()
                                .filter(|l| is_mapping_name(l))
                                .map(str::to_string),
                        );
                    }
                    Ok(_) => tracing::warn!(
                        path = %dir.join(MANIFEST).display(),
                        "over {MANIFEST_MAX_BYTES} bytes; not read: the files it names are left alone"
                    ),
                    Err(e) => tracing::warn!(
                        path = %dir.join(MANIFEST).display(),
                        "not read ({e}): the files it names are left alone"
                    ),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(at(e)),
        }
        Ok(MappingDir {
            dir: dir.to_path_buf(),
            owned,
            said: BTreeSet::new(),
        })
    }

    /// The files the daemon wrote, as it knows them.
    pub fn owned(&self) -> &BTreeSet<String> {
        &self.owned
    }

    /// Makes the directory hold `want`: writes the files whose content
    /// differs, removes the daemon's files `want` does not name. Stops at
    /// the first failure; calling it again goes on from there.
    pub fn sync(&mut self, want: &JobFiles) -> Result<Synced, MappingError> {
        let mut done = Synced::default();
        // New names: the daemon's only if no other program's file is there.
        let mut adding = BTreeSet::new();
        for name in want.keys().filter(|n| !self.owned.contains(*n)) {
            match std::fs::symlink_metadata(self.dir.join(name)) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    adding.insert(name.clone());
                }
                _ => {
                    if self.said.insert(name.clone()) {
                        done.foreign.push(name.clone());
                    }
                }
            }
        }
        if !adding.is_empty() {
            let mut names = self.owned.clone();
            names.extend(adding);
            self.write_manifest(&names)?;
            self.owned = names;
        }
        for (name, lines) in want.iter().filter(|(n, _)| self.owned.contains(*n)) {
            let path = self.dir.join(name);
            let text = content(lines);
            if read_bounded(&path).as_deref() != Some(text.as_bytes()) {
                write_atomic(&path, text.as_bytes())
                    .map_err(|source| MappingError::Write { path, source })?;
                done.written.push(name.clone());
            }
        }
        let stale: Vec<String> = self
            .owned
            .iter()
            .filter(|n| !want.contains_key(*n))
            .cloned()
            .collect();
        for name in &stale {
            let path = self.dir.join(name);
            match std::fs::remove_file(&path) {
                Ok(()) => done.removed.push(name.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(MappingError::Remove { path, source }),
            }
        }
        if !stale.is_empty() {
            let names: BTreeSet<String> = self
                .owned
                .iter()
                .filter(|n| want.contains_key(*n))
                .cloned()
                .collect();
            self.write_manifest(&names)?;
            self.owned = names;
        }
        // A foreign file gone: said again if it comes back.
        self.said.retain(|n| self.dir.join(n).exists());
        Ok(done)
    }

    fn write_manifest(&self, names: &BTreeSet<String>) -> Result<(), MappingError> {
        let path = self.dir.join(MANIFEST);
        let text: String = names.iter().map(|n| format!("{n}\n")).collect();
        write_atomic(&path, text.as_bytes()).map_err(|source| MappingError::Write { path, source })
    }
}

/// A file's bytes, if it is there and no longer than [`FILE_MAX_BYTES`].
fn read_bounded(path: &Path) -> Option<Vec<u8>> {
    let f = std::fs::File::open(path).ok()?;
    let mut bytes = Vec::new();
    f.take(FILE_MAX_BYTES + 1).read_to_end(&mut bytes).ok()?;
    (bytes.len() as u64 <= FILE_MAX_BYTES).then_some(bytes)
}
