//! The task that writes the mapping files, off the owner: it is handed
//! the latest files wanted (a watch channel: the newest only, if several
//! wait) and makes the directory hold them on a blocking thread. A
//! failure is said once while it lasts and tried again every
//! [`RETRY_EVERY`], or at once when newer files come; it never stops the
//! daemon.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::JobFiles;
use super::dir::{MappingDir, MappingError};

/// How long after a failed write it is tried again.
pub const RETRY_EVERY: Duration = Duration::from_secs(5);

/// The latest files wanted; `None` until the first.
pub type Wanted = Option<Arc<JobFiles>>;

/// Starts the writer for `dir`. It ends once the sender is dropped and
/// the last files it was given are written (or failed once more).
pub fn spawn(dir: PathBuf) -> (watch::Sender<Wanted>, JoinHandle<()>) {
    let (tx, mut rx) = watch::channel::<Wanted>(None);
    let task = tokio::spawn(async move {
        let mut opened: Option<MappingDir> = None;
        let mut failing = false;
        let mut pending: Option<Arc<JobFiles>> = None;
        let mut open = true;
        loop {
            if pending.is_none() {
                if !open || rx.changed().await.is_err() {
                    break;
                }
                pending = rx.borrow_and_update().clone();
                continue;
            }
            let Some(want) = pending.clone() else {
                continue;
            };
            let path = dir.clone();
            let taken = opened.take();
            let result = tokio::task::spawn_blocking(move || sync(taken, &path, &want)).await;
            match result {
                Ok((dir_state, Ok(synced))) => {
                    opened = dir_state;
                    pending = None;
                    if failing {
                        tracing::info!(dir = %dir.display(), "dcgm-exporter job mapping files written again");
                    }
                    failing = false;
                    for name in synced.foreign {
                        tracing::warn!(
                            dir = %dir.display(),
                            file = %name,
                            "not the daemon's file: left alone, GPU {name} gets no job mapping from it"
                        );
                    }
                    if !synced.written.is_empty() || !synced.removed.is_empty() {
                        tracing::debug!(written = ?synced.written, removed = ?synced.removed, "dcgm-exporter job mapping files");
                    }
                }
                Ok((dir_state, Err(e))) => {
                    opened = dir_state;
                    if !failing {
                        tracing::warn!("{e}; tried again every {}s", RETRY_EVERY.as_secs());
                    }
                    failing = true;
                    if !open {
                        break;
                    }
                    // Newer files, or the same ones again after a while.
                    tokio::select! {
                        changed = rx.changed() => match changed {
                            Ok(()) => pending = rx.borrow_and_update().clone().or(pending),
                            Err(_) => open = false,
                        },
                        () = tokio::time::sleep(RETRY_EVERY) => {}
                    }
                }
                Err(_) => break,
            }
        }
    });
    (tx, task)
}

/// Opens the directory if it is not yet, then syncs it.
fn sync(
    opened: Option<MappingDir>,
    path: &std::path::Path,
    want: &JobFiles,
) -> (Option<MappingDir>, Result<super::dir::Synced, MappingError>) {
    let mut dir = match opened {
        Some(d) => d,
        None => match MappingDir::open(path) {
            Ok(d) => d,
            Err(e) => return (None, Err(e)),
        },
    };
    let result = dir.sync(want);
    (Some(dir), result)
}
