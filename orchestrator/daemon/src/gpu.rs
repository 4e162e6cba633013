//! The daemon's GPU side: one worker thread that makes every NVML and MPS
//! call, in the order asked (so a MIG instance is destroyed before a launch
//! that needs its space creates another), and a poller that feeds the owner
//! fresh inventory and telemetry.
//!
//! NVML calls block; keeping them on one thread keeps them off the async
//! runtime and makes their order the order of the queue.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use orch_api::GpuTelemetry;
use orch_core::gpu::GpuInfo;
use orch_gpu::{
    CreatedInstance, GpuBackend, GpuError, MigModeChange, MpsControl, MpsError, MpsGpu,
};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::event::{self, GpuNews};

/// How often inventory and telemetry are read.
pub const POLL: Duration = Duration::from_secs(5);

/// One inventory with the telemetry of each GPU still present.
pub type Reading = (Vec<GpuInfo>, BTreeMap<u32, GpuTelemetry>);

/// One call for the worker thread.
enum WorkerCall {
    Inventory(oneshot::Sender<Result<Reading, GpuError>>),
    Create {
        gpu: u32,
        profile_id: u32,
        placement: u8,
        reply: oneshot::Sender<Result<CreatedInstance, GpuError>>,
    },
    Destroy {
        gpu: u32,
        gi_id: u32,
    },
    MigMode {
        gpu: u32,
        enable: bool,
        reply: oneshot::Sender<Result<MigModeChange, GpuError>>,
    },
    MpsEnsure {
        gpu: MpsGpu,
        reply: oneshot::Sender<Result<(), MpsError>>,
    },
    MpsStop {
        gpu: MpsGpu,
    },
}

/// A handle to the GPU worker; cheap to clone.
#[derive(Clone)]
pub struct GpuWorker {
    tx: std::sync::mpsc::Sender<WorkerCall>,
    /// Wakes the poller early: the layout just changed.
    refresh: Arc<tokio::sync::Notify>,
    pub library: PathBuf,
    pub driver_version: Option<String>,
}

impl std::fmt::Debug for GpuWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuWorker")
            .field("library", &self.library)
            .finish()
    }
}

fn gone() -> GpuError {
    GpuError::Init {
        path: PathBuf::new(),
        reason: "the GPU worker has stopped".into(),
    }
}

impl GpuWorker {
    /// Starts the worker thread over `backend`.
    pub fn start(backend: Arc<dyn GpuBackend>, mps: Arc<dyn MpsControl>) -> GpuWorker {
        let (tx, rx) = std::sync::mpsc::channel::<WorkerCall>();
        let library = backend.library_path().to_path_buf();
        let driver_version = backend.driver_version().ok();
        let spawned = std::thread::Builder::new().name("gpu-worker".into()).spawn(move || {
            while let Ok(job) = rx.recv() {
                match job {
                    WorkerCall::Inventory(reply) => {
                        let r = backend.inventory().map(|gpus| {
                            let telemetry = gpus
                                .iter()
                                .filter(|g| !g.lost)
                                .filter_map(|g| {
                                    let t = backend.telemetry(g.index).ok()?;
                                    Some((g.index, orch_api::convert::gpu_telemetry(&t)))
                                })
                                .collect();
                            (gpus, telemetry)
                        });
                        let _ = reply.send(r);
                    }
                    WorkerCall::Create {
                        gpu,
                        profile_id,
                        placement,
                        reply,
                    } => {
                        let _ = reply.send(backend.create_instance(gpu, profile_id, placement));
                    }
                    WorkerCall::Destroy { gpu, gi_id } => match backend.destroy_instance(gpu, gi_id) {
                        Ok(()) => tracing::info!(gpu, gi_id, "destroyed our unused MIG instance"),
                        Err(e) => tracing::warn!(gpu, gi_id, "cannot destroy MIG instance: {e}"),
                    },
                    WorkerCall::MigMode { gpu, enable, reply } => {
                        let _ = reply.send(backend.set_mig_mode(gpu, enable));
                    }
                    WorkerCall::MpsEnsure { gpu, reply } => {
                        let _ = reply.send(mps.ensure_running(&gpu));
                    }
                    WorkerCall::MpsStop { gpu } => {
                        if let Err(e) = mps.stop(&gpu) {
                            tracing::warn!(gpu = %gpu.uuid, "cannot stop the MPS control daemon: {e}");
                        }
                    }
                }
            }
        });
        if let Err(e) = spawned {
            tracing::error!("cannot start the GPU worker thread: {e}");
        }
        GpuWorker {
            tx,
            refresh: Arc::new(tokio::sync::Notify::new()),
            library,
            driver_version,
        }
    }

    pub async fn inventory(&self) -> Result<Reading, GpuError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(WorkerCall::Inventory(reply))
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    pub async fn create(
        &self,
        gpu: u32,
        profile_id: u32,
        placement: u8,
    ) -> Result<CreatedInstance, GpuError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(WorkerCall::Create {
                gpu,
                profile_id,
                placement,
                reply,
            })
            .map_err(|_| gone())?;
        let made = rx.await.map_err(|_| gone())?;
        self.refresh_soon();
        made
    }

    /// Queued behind everything asked before it; never waits.
    pub fn destroy(&self, gpu: u32, gi_id: u32) {
        let _ = self.tx.send(WorkerCall::Destroy { gpu, gi_id });
        self.refresh_soon();
    }

    /// Asks the poller for a fresh inventory now (queued behind any MIG
    /// change already asked for, so it sees the change).
    pub fn refresh_soon(&self) {
        self.refresh.notify_one();
    }

    pub async fn set_mig_mode(&self, gpu: u32, enable: bool) -> Result<MigModeChange, GpuError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(WorkerCall::MigMode { gpu, enable, reply })
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    pub async fn mps_ensure(&self, gpu: MpsGpu) -> Result<(), MpsPrepareError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(WorkerCall::MpsEnsure { gpu, reply })
            .map_err(|_| MpsPrepareError::WorkerGone)?;
        rx.await
            .map_err(|_| MpsPrepareError::WorkerGone)?
            .map_err(MpsPrepareError::Mps)
    }

    pub fn mps_stop(&self, gpu: MpsGpu) {
        let _ = self.tx.send(WorkerCall::MpsStop { gpu });
    }
}

/// Why an MPS control daemon could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum MpsPrepareError {
    #[error(transparent)]
    Mps(MpsError),
    #[error("the GPU worker has stopped")]
    WorkerGone,
}

/// Reads inventory and telemetry every [`POLL`] until shutdown.
pub async fn poll(gpu: GpuWorker, news: event::Sender<GpuNews>, shutdown: CancellationToken) {
    loop {
        let reading = match gpu.inventory().await {
            Ok((gpus, telemetry)) => GpuNews::Reading { gpus, telemetry },
            Err(e) => GpuNews::Unavailable {
                reason: e.to_string(),
            },
        };
        if news.send(reading).await.is_err() {
            return;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(POLL) => {}
            () = gpu.refresh.notified() => {}
        }
    }
}

/// The MPS directories of one GPU under `base`.
pub fn mps_gpu(base: &std::path::Path, uuid: &str) -> MpsGpu {
    MpsGpu {
        uuid: uuid.to_string(),
        pipe_dir: base.join(uuid).join("pipe"),
        log_dir: base.join(uuid).join("log"),
    }
}
