//! Reads the CPU time of autoscaled replicas from Docker's stats API, a
//! few containers at a time, each read bounded in time, off the owner. The
//! owner starts a round on its autoscale tick (unless one still runs) and
//! gets the whole round back as one [`CpuRead`]; it turns two readings of
//! a container into a utilisation.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use orch_core::gpu::ReplicaKey;
use orch_docker::ContainerRuntime;

use crate::event::{self, CpuRead, CpuReading};

/// How many containers are read at once.
const PARALLEL: usize = 8;

/// A read that takes longer gives nothing.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Reads every `(replica, container)` once and reports the round.
pub async fn round(
    targets: Vec<(ReplicaKey, String)>,
    rt: Arc<dyn ContainerRuntime>,
    news: event::Sender<CpuRead>,
) {
    let readings: Vec<CpuReading> = futures_util::stream::iter(targets)
        .map(|(key, container)| {
            let rt = rt.clone();
            async move {
                let used_ns = tokio::time::timeout(READ_TIMEOUT, rt.cpu_usage(&container))
                    .await
                    .ok()
                    .and_then(|r| {
                        r.map_err(|e| tracing::debug!(replica = %key, "CPU not read: {e}"))
                            .ok()
                    });
                CpuReading {
                    key,
                    container,
                    used_ns,
                    at: tokio::time::Instant::now(),
                }
            }
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    let _ = news.send(CpuRead(readings)).await;
}
