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

use orch_api::Telemetry;
use orch_core::gpu::GpuInfo;
use orch_gpu::{CreatedInstance, GpuBackend, GpuError, MigModeChange, MpsControl, MpsGpu};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::owner::Event;

/// How often inventory and telemetry are read.
pub const POLL: Duration = Duration::from_secs(5);

/// One inventory with the telemetry of each GPU still present.
pub type Reading = (Vec<GpuInfo>, BTreeMap<u32, Telemetry>);

enum Job {
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
        reply: oneshot::Sender<Result<(), String>>,
    },
    MpsStop {
        gpu: MpsGpu,
    },
}

/// A handle to the GPU worker; cheap to clone.
#[derive(Clone)]
pub struct Gpu {
    tx: std::sync::mpsc::Sender<Job>,
    /// Wakes the poller early: the layout just changed.
    refresh: Arc<tokio::sync::Notify>,
    pub library: PathBuf,
    pub driver_version: Option<String>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
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

impl Gpu {
    /// Starts the worker thread over `backend`.
    pub fn start(backend: Arc<dyn GpuBackend>, mps: Arc<dyn MpsControl>) -> Gpu {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let library = backend.library_path().to_path_buf();
        let driver_version = backend.driver_version().ok();
        let spawned = std::thread::Builder::new().name("gpu-worker".into()).spawn(move || {
            while let Ok(job) = rx.recv() {
                match job {
                    Job::Inventory(reply) => {
                        let r = backend.inventory().map(|gpus| {
                            let telemetry = gpus
                                .iter()
                                .filter(|g| !g.lost)
                                .filter_map(|g| {
                                    let t = backend.telemetry(g.index).ok()?;
                                    Some((
                                        g.index,
                                        Telemetry {
                                            memory_used_bytes: t.memory_used.map(|m| m.bytes()).unwrap_or(0),
                                            utilization_gpu: t.gpu_utilization.unwrap_or(0),
                                            utilization_memory: t.memory_utilization.unwrap_or(0),
                                            temperature_c: t.temperature_c.unwrap_or(0),
                                            power_mw: t.power_mw.unwrap_or(0),
                                        },
                                    ))
                                })
                                .collect();
                            (gpus, telemetry)
                        });
                        let _ = reply.send(r);
                    }
                    Job::Create {
                        gpu,
                        profile_id,
                        placement,
                        reply,
                    } => {
                        let _ = reply.send(backend.create_instance(gpu, profile_id, placement));
                    }
                    Job::Destroy { gpu, gi_id } => match backend.destroy_instance(gpu, gi_id) {
                        Ok(()) => tracing::info!(gpu, gi_id, "destroyed our unused MIG instance"),
                        Err(e) => tracing::warn!(gpu, gi_id, "cannot destroy MIG instance: {e}"),
                    },
                    Job::MigMode { gpu, enable, reply } => {
                        let _ = reply.send(backend.set_mig_mode(gpu, enable));
                    }
                    Job::MpsEnsure { gpu, reply } => {
                        let _ = reply.send(mps.ensure_running(&gpu).map_err(|e| e.to_string()));
                    }
                    Job::MpsStop { gpu } => {
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
        Gpu {
            tx,
            refresh: Arc::new(tokio::sync::Notify::new()),
            library,
            driver_version,
        }
    }

    pub async fn inventory(&self) -> Result<Reading, GpuError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Job::Inventory(reply)).map_err(|_| gone())?;
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
            .send(Job::Create {
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
        let _ = self.tx.send(Job::Destroy { gpu, gi_id });
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
            .send(Job::MigMode { gpu, enable, reply })
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    pub async fn mps_ensure(&self, gpu: MpsGpu) -> Result<(), String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job::MpsEnsure { gpu, reply })
            .map_err(|_| "the GPU worker has stopped".to_string())?;
        rx.await
            .map_err(|_| "the GPU worker has stopped".to_string())?
    }

    pub fn mps_stop(&self, gpu: MpsGpu) {
        let _ = self.tx.send(Job::MpsStop { gpu });
    }
}

/// What the poller reports.
#[derive(Debug)]
pub enum GpuNews {
    Reading {
        gpus: Vec<GpuInfo>,
        telemetry: BTreeMap<u32, Telemetry>,
    },
    Unavailable {
        reason: String,
    },
}

/// Reads inventory and telemetry every [`POLL`] until shutdown.
pub async fn poll(gpu: Gpu, tx: mpsc::Sender<Event>, shutdown: CancellationToken) {
    loop {
        let news = match gpu.inventory().await {
            Ok((gpus, telemetry)) => GpuNews::Reading { gpus, telemetry },
            Err(e) => GpuNews::Unavailable {
                reason: e.to_string(),
            },
        };
        if tx.send(Event::Gpu(news)).await.is_err() {
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
