//! One module per verb: each turns parsed arguments into calls on the
//! libraries and prints the result.

pub mod agent;
pub mod agents;
pub mod apply;
pub mod completion;
pub mod config;
pub mod daemon;
pub mod events;
pub mod export;
pub mod gpu;
pub mod group;
pub mod groups;
pub mod logs;
pub mod man;
pub mod plan;
pub mod status;
pub mod wait;

use std::path::Path;

/// Writes `text` to `path` atomically: a reader never sees half a file.
pub fn write_atomic(path: &Path, text: &str) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().context("the output path names no file")?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
