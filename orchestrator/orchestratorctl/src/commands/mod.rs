//! One module per verb: each turns parsed arguments into calls on the
//! libraries and prints the result.

pub mod agent;
pub mod agents;
pub mod apply;
pub mod completion;
pub mod config;
pub mod config_diff;
pub mod daemon;
pub mod events;
pub mod export;
pub mod fleet;
pub mod gpu;
pub mod group;
pub mod groups;
pub mod history;
pub mod keys;
pub mod load;
pub mod logs;
pub mod man;
pub mod peers;
pub mod plan;
pub mod rollout;
pub mod scale;
pub mod slo;
pub mod state;
pub mod status;
pub mod top;
pub mod wait;

use std::path::Path;

/// Writes `text` to `path` atomically: a reader never sees half a file.
pub fn write_atomic(path: &Path, text: &str) -> anyhow::Result<()> {
    orch_config::fsutil::write_atomic(path, text.as_bytes())
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}
