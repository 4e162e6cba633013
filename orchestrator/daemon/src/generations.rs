//! The last configs the daemon ran, kept on disk: one numbered
//! generation per config taken (at startup, by `apply`, by `reload`, by a
//! rollback or an undo), each its config text and a small JSON meta (who,
//! when, how, what changed, how its rollout ended), under
//! `<state_dir>/generations/`:
//!
//! - `gen-<N>.config`: the text, as the config file held it;
//! - `gen-<N>.json`: the meta ([`GenerationMeta`]).
//!
//! Invariant: a generation exists when its meta does. The text is written
//! first and the meta last, each atomically (`orch_config::fsutil`), so a
//! crash between the two leaves a text no meta names (removed by the next
//! `open`), never a meta without its text.
//!
//! Writes are synchronous, as the state file's are (`crate::store`):
//! config texts are small. Reads are bounded: a meta over
//! [`MAX_META_BYTES`], a text over [`MAX_TEXT_BYTES`], an unreadable meta
//! and every entry past [`MAX_ENTRIES`] are left out with a warning.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use orch_api::{GenerationChanges, GenerationOutcome, GenerationSource, GenerationView};
use serde::{Deserialize, Serialize};

/// How many generations are kept by default.
pub const KEEP: usize = 10;
/// The largest config text kept or read back.
pub const MAX_TEXT_BYTES: u64 = 4 * 1024 * 1024;
/// The largest meta read back.
pub const MAX_META_BYTES: u64 = 64 * 1024;
/// The most entries read from the directory.
pub const MAX_ENTRIES: usize = 1000;
/// The meta's format.
const FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum GenerationError {
    #[error("cannot use the generations directory {path}: {source}")]
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
    #[error("the config text of generation {generation} is {bytes} bytes, over {MAX_TEXT_BYTES}")]
    TooLarge { generation: u64, bytes: usize },
    #[error("generation {0} is not kept")]
    NotKept(u64),
}

/// What is kept of a generation besides its text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationMeta {
    pub generation: u64,
    /// When it was taken (Unix milliseconds).
    pub unix_ms: u64,
    pub applied_by: String,
    pub source: GenerationSource,
    #[serde(default)]
    pub changes: GenerationChanges,
    pub outcome: GenerationOutcome,
}

impl GenerationMeta {
    /// As the API shows it.
    pub fn view(&self) -> GenerationView {
        GenerationView {
            generation: self.generation,
            unix_ms: self.unix_ms,
            applied_by: self.applied_by.clone(),
            source: self.source,
            changes: self.changes.clone(),
            outcome: self.outcome,
        }
    }
}

/// A generation kept: its meta and its config text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    pub meta: GenerationMeta,
    pub text: String,
}

/// A generation to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewGeneration {
    pub meta: GenerationMeta,
    pub text: String,
}

/// A new generation's outcome when nothing else is known: completed when
/// it recreated nothing, in progress while it does.
pub fn default_outcome(changes: &GenerationChanges) -> GenerationOutcome {
    if changes.recreated.is_empty() {
        GenerationOutcome::Completed
    } else {
        GenerationOutcome::InProgress
    }
}

/// The meta on disk.
#[derive(Debug, Serialize, Deserialize)]
struct MetaOnDisk {
    format: u32,
    #[serde(flatten)]
    meta: GenerationMeta,
}

/// The meta's bytes.
pub fn encode_meta(meta: &GenerationMeta) -> Vec<u8> {
    let on_disk = MetaOnDisk {
        format: FORMAT,
        meta: meta.clone(),
    };
    let mut bytes = serde_json::to_vec_pretty(&on_disk).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// Why a meta's bytes were not read.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error("format {0} (this daemon reads {FORMAT})")]
    Format(u32),
}

/// A meta from its bytes, or why not.
pub fn decode_meta(bytes: &[u8]) -> Result<GenerationMeta, MetaError> {
    let on_disk: MetaOnDisk = serde_json::from_slice(bytes)?;
    if on_disk.format != FORMAT {
        return Err(MetaError::Format(on_disk.format));
    }
    Ok(on_disk.meta)
}

/// The generations to remove so that the newest `keep` (at least one)
/// are left.
pub fn to_prune(kept: impl IntoIterator<Item = u64>, keep: usize) -> Vec<u64> {
    let mut all: Vec<u64> = kept.into_iter().collect();
    all.sort_unstable();
    all.dedup();
    let drop = all.len().saturating_sub(keep.max(1));
    all.truncate(drop);
    all
}

/// The generation a file of the directory is of: `gen-<N>.json` is a
/// meta, `gen-<N>.config` a text.
fn parse_name(name: &str) -> Option<(u64, bool)> {
    let rest = name.strip_prefix("gen-")?;
    if let Some(n) = rest.strip_suffix(".json") {
        return n.parse().ok().map(|n| (n, true));
    }
    rest.strip_suffix(".config")?
        .parse()
        .ok()
        .map(|n| (n, false))
}

/// The generations kept in a directory.
#[derive(Debug, Clone)]
pub struct GenerationStore {
    dir: PathBuf,
    keep: usize,
    metas: BTreeMap<u64, GenerationMeta>,
}

/// Reads at most `max` bytes of `path`; `None` (and a warning) for a
/// larger or unreadable file.
fn read_bounded(path: &Path, max: u64) -> Option<Vec<u8>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(path = %path.display(), "generation file not read: {e}");
            return None;
        }
    };
    let mut bytes = Vec::new();
    if let Err(e) = file.take(max + 1).read_to_end(&mut bytes) {
        tracing::warn!(path = %path.display(), "generation file not read: {e}");
        return None;
    }
    if bytes.len() as u64 > max {
        tracing::warn!(path = %path.display(), max, "generation file over its bound; left out");
        return None;
    }
    Some(bytes)
}

impl GenerationStore {
    /// Opens (creating if needed) `dir` and reads the generations in it,
    /// keeping the newest `keep` from now on.
    pub fn open(dir: &Path, keep: usize) -> Result<GenerationStore, GenerationError> {
        let io = |source| GenerationError::Dir {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut metas = BTreeMap::new();
        let mut seen = 0usize;
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let Ok(entry) = entry else { continue };
            let name = entry.file_name();
            let generation = match name.to_str().and_then(parse_name) {
                Some((generation, true)) => generation,
                Some((generation, false)) => {
                    remove_orphan(dir, generation);
                    continue;
                }
                None => continue,
            };
            seen += 1;
            if seen > MAX_ENTRIES {
                tracing::warn!(dir = %dir.display(), max = MAX_ENTRIES, "more generations than read; the rest are left out");
                break;
            }
            let path = entry.path();
            let Some(bytes) = read_bounded(&path, MAX_META_BYTES) else {
                continue;
            };
            let meta = match decode_meta(&bytes) {
                Ok(m) if m.generation == generation => m,
                Ok(m) => {
                    tracing::warn!(path = %path.display(), names = m.generation, "generation meta names another generation; left out");
                    continue;
                }
                Err(reason) => {
                    tracing::warn!(path = %path.display(), "generation meta damaged ({reason}); left out");
                    continue;
                }
            };
            match std::fs::metadata(text_path(dir, generation)) {
                Ok(m) if m.len() <= MAX_TEXT_BYTES => {
                    metas.insert(generation, meta);
                }
                Ok(_) => tracing::warn!(
                    generation,
                    max = MAX_TEXT_BYTES,
                    "generation text over its bound; left out"
                ),
                Err(e) => tracing::warn!(generation, "generation text not read ({e}); left out"),
            }
        }
        Ok(GenerationStore {
            dir: dir.to_path_buf(),
            keep: keep.max(1),
            metas,
        })
    }

    /// Keeps a generation (replacing one of the same number), then
    /// removes the oldest beyond `keep`.
    pub fn record(&mut self, entry: NewGeneration) -> Result<(), GenerationError> {
        let generation = entry.meta.generation;
        if entry.text.len() as u64 > MAX_TEXT_BYTES {
            return Err(GenerationError::TooLarge {
                generation,
                bytes: entry.text.len(),
            });
        }
        // A directory removed under the daemon comes back.
        std::fs::create_dir_all(&self.dir).map_err(|source| GenerationError::Dir {
            path: self.dir.clone(),
            source,
        })?;
        write(&text_path(&self.dir, generation), entry.text.as_bytes())?;
        self.write_meta(&entry.meta)?;
        self.metas.insert(generation, entry.meta);
        for old in to_prune(self.metas.keys().copied(), self.keep) {
            self.metas.remove(&old);
            for path in [meta_path(&self.dir, old), text_path(&self.dir, old)] {
                if let Err(e) = std::fs::remove_file(&path)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::warn!(path = %path.display(), "old generation not removed: {e}");
                }
            }
        }
        Ok(())
    }

    /// Sets how a kept generation's rollout ended (or stands).
    pub fn set_outcome(
        &mut self,
        generation: u64,
        outcome: GenerationOutcome,
    ) -> Result<(), GenerationError> {
        let mut meta = self
            .metas
            .get(&generation)
            .cloned()
            .ok_or(GenerationError::NotKept(generation))?;
        if meta.outcome == outcome {
            return Ok(());
        }
        meta.outcome = outcome;
        self.write_meta(&meta)?;
        self.metas.insert(generation, meta);
        Ok(())
    }

    /// A kept generation with its text; `None` when it is not kept or its
    /// text cannot be read within its bound.
    pub fn get(&self, generation: u64) -> Option<Generation> {
        let meta = self.metas.get(&generation)?.clone();
        let bytes = read_bounded(&text_path(&self.dir, generation), MAX_TEXT_BYTES)?;
        let text = String::from_utf8(bytes).ok()?;
        Some(Generation { meta, text })
    }

    /// Every kept generation, newest first.
    pub fn list(&self) -> Vec<GenerationMeta> {
        self.metas.values().rev().cloned().collect()
    }

    /// The newest kept generation.
    pub fn latest(&self) -> Option<Generation> {
        let newest = *self.metas.keys().next_back()?;
        self.get(newest)
    }

    fn write_meta(&self, meta: &GenerationMeta) -> Result<(), GenerationError> {
        write(&meta_path(&self.dir, meta.generation), &encode_meta(meta))
    }
}

/// A text whose meta was never written (a crash between the two) is no
/// generation: it is removed. A meta that exists, however damaged, keeps
/// its text.
fn remove_orphan(dir: &Path, generation: u64) {
    if meta_path(dir, generation).exists() {
        return;
    }
    let path = text_path(dir, generation);
    if let Err(e) = std::fs::remove_file(&path) {
        tracing::warn!(path = %path.display(), "text of no generation not removed: {e}");
    }
}

fn text_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("gen-{generation}.config"))
}

fn meta_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("gen-{generation}.json"))
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), GenerationError> {
    orch_config::fsutil::write_atomic(path, bytes).map_err(|source| GenerationError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// The config file's text as it is now, for a generation taken from it
/// (startup, `reload`); `None` (and a warning) when it cannot be read
/// within [`MAX_TEXT_BYTES`].
pub fn read_config_text(path: &Path) -> Option<String> {
    let bytes = read_bounded(path, MAX_TEXT_BYTES)?;
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use orch_api::Rescaled;

    fn meta(generation: u64, source: GenerationSource) -> GenerationMeta {
        GenerationMeta {
            generation,
            unix_ms: 1_796_000_000_000 + generation,
            applied_by: "local".into(),
            source,
            changes: GenerationChanges::default(),
            outcome: GenerationOutcome::Completed,
        }
    }

    fn new(generation: u64, text: &str) -> NewGeneration {
        NewGeneration {
            meta: meta(generation, GenerationSource::Apply),
            text: text.into(),
        }
    }

    #[test]
    fn pruning_keeps_the_newest() {
        for (kept, keep, want) in [
            (vec![], 10, vec![]),
            (vec![1, 2, 3], 10, vec![]),
            (vec![1, 2, 3], 3, vec![]),
            (vec![3, 1, 2, 4], 2, vec![1, 2]),
            (vec![5, 6], 0, vec![5]),
            (vec![7, 7, 8], 1, vec![7]),
        ] {
            assert_eq!(to_prune(kept.clone(), keep), want, "{kept:?} keep {keep}");
        }
    }

    #[test]
    fn the_meta_codec_round_trips_and_refuses_what_it_cannot_read() {
        let mut rich = meta(4, GenerationSource::Rollback { from: 4, to: 2 });
        rich.changes = GenerationChanges {
            changed: vec!["A".into(), "B".into()],
            recreated: vec!["A".into()],
            rescaled: vec![Rescaled {
                agent: "W".into(),
                from: 1,
                to: 3,
            }],
        };
        rich.outcome = GenerationOutcome::RolledBack;
        for m in [meta(1, GenerationSource::Startup), rich] {
            assert_eq!(decode_meta(&encode_meta(&m)).unwrap(), m);
        }
        let v: serde_json::Value = serde_json::from_slice(&encode_meta(&meta(
            2,
            GenerationSource::Undo { from: 3, to: 1 },
        )))
        .unwrap();
        assert_eq!(v["format"], 1);
        assert_eq!(
            v["source"],
            serde_json::json!({"kind": "undo", "from": 3, "to": 1})
        );
        assert_eq!(v["outcome"], "completed");
        let later = String::from_utf8(encode_meta(&meta(1, GenerationSource::Apply)))
            .unwrap()
            .replace("\"format\": 1", "\"format\": 2");
        for (bytes, why) in [
            ("{", "EOF"),
            (later.as_str(), "format 2"),
            ("[]", "invalid type"),
            ("{\"format\": 1, \"generation\": 1}", "missing field"),
        ] {
            let e = decode_meta(bytes.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn the_default_outcome_is_completed_unless_something_is_recreated() {
        let mut c = GenerationChanges::default();
        assert_eq!(default_outcome(&c), GenerationOutcome::Completed);
        c.changed = vec!["A".into()];
        assert_eq!(default_outcome(&c), GenerationOutcome::Completed);
        c.recreated = vec!["A".into()];
        assert_eq!(default_outcome(&c), GenerationOutcome::InProgress);
    }

    #[test]
    fn records_are_read_back_newest_first_and_pruned_to_keep() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("generations");
        let mut s = GenerationStore::open(&path, 3).unwrap();
        assert!(s.list().is_empty());
        assert!(s.latest().is_none());
        for g in 1..=5 {
            s.record(new(g, &format!("text {g}"))).unwrap();
        }
        let numbers =
            |s: &GenerationStore| -> Vec<u64> { s.list().iter().map(|m| m.generation).collect() };
        assert_eq!(numbers(&s), [5, 4, 3]);
        assert_eq!(s.latest().unwrap().text, "text 5");
        assert!(s.get(2).is_none());
        let mut files: Vec<String> = std::fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        assert_eq!(
            files,
            [
                "gen-3.config",
                "gen-3.json",
                "gen-4.config",
                "gen-4.json",
                "gen-5.config",
                "gen-5.json"
            ]
        );
        s.set_outcome(4, GenerationOutcome::Paused).unwrap();
        assert!(matches!(
            s.set_outcome(1, GenerationOutcome::Paused),
            Err(GenerationError::NotKept(1))
        ));
        // A new store on the same directory reads the same.
        let again = GenerationStore::open(&path, 3).unwrap();
        assert_eq!(again.list(), s.list());
        assert_eq!(
            again.get(4).unwrap().meta.outcome,
            GenerationOutcome::Paused
        );
        assert_eq!(again.get(3).unwrap().text, "text 3");
    }

    #[test]
    fn a_damaged_or_oversized_entry_is_left_out_and_the_rest_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path();
        let mut s = GenerationStore::open(path, 10).unwrap();
        for g in 1..=4 {
            s.record(new(g, "version: 1\n")).unwrap();
        }
        std::fs::write(path.join("gen-1.json"), b"{ not json").unwrap();
        let big_meta = vec![b' '; MAX_META_BYTES as usize + 1];
        std::fs::write(path.join("gen-2.json"), big_meta).unwrap();
        let big_text = vec![b'#'; MAX_TEXT_BYTES as usize + 1];
        std::fs::write(path.join("gen-3.config"), big_text).unwrap();
        std::fs::write(path.join("unrelated.txt"), b"x").unwrap();
        // A crash between a text and its meta.
        std::fs::write(path.join("gen-9.config"), b"half done").unwrap();
        let again = GenerationStore::open(path, 10).unwrap();
        let numbers: Vec<u64> = again.list().iter().map(|m| m.generation).collect();
        assert_eq!(numbers, [4]);
        // The text of no generation is gone; what was left out is not.
        assert!(!path.join("gen-9.config").exists());
        for kept in [
            "gen-1.json",
            "gen-1.config",
            "gen-2.json",
            "gen-3.config",
            "unrelated.txt",
        ] {
            assert!(path.join(kept).exists(), "{kept}");
        }
    }

    #[test]
    fn a_text_over_the_bound_is_refused_and_nothing_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = GenerationStore::open(dir.path(), 10).unwrap();
        let text = "#".repeat(MAX_TEXT_BYTES as usize + 1);
        assert!(matches!(
            s.record(new(1, &text)),
            Err(GenerationError::TooLarge { generation: 1, .. })
        ));
        assert!(s.list().is_empty());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn entries_past_the_bound_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        for g in 0..(MAX_ENTRIES as u64 + 5) {
            let m = meta(g, GenerationSource::Apply);
            std::fs::write(meta_path(dir.path(), g), encode_meta(&m)).unwrap();
            std::fs::write(text_path(dir.path(), g), b"t").unwrap();
        }
        let s = GenerationStore::open(dir.path(), 10).unwrap();
        assert_eq!(s.list().len(), MAX_ENTRIES);
    }

    #[test]
    fn a_directory_removed_under_the_store_comes_back_with_the_next_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join("generations");
        let mut s = GenerationStore::open(&path, 10).unwrap();
        std::fs::remove_dir_all(dir.path().join("state")).unwrap();
        s.record(new(1, "one")).unwrap();
        assert_eq!(s.get(1).unwrap().text, "one");
        assert!(path.join("gen-1.json").exists());
    }

    #[test]
    fn a_config_file_over_the_bound_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "version: 1\n").unwrap();
        assert_eq!(read_config_text(&path).unwrap(), "version: 1\n");
        std::fs::write(&path, vec![b'#'; MAX_TEXT_BYTES as usize + 1]).unwrap();
        assert!(read_config_text(&path).is_none());
        assert!(read_config_text(&dir.path().join("missing.yaml")).is_none());
    }

    #[test]
    fn file_names_name_their_generation() {
        for (name, want) in [
            ("gen-12.json", Some((12, true))),
            ("gen-12.config", Some((12, false))),
            ("gen-x.json", None),
            (".gen-1.json.tmp-7", None),
            ("gen-1.yaml", None),
        ] {
            assert_eq!(parse_name(name), want, "{name}");
        }
    }
}
