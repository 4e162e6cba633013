//! The daemon's GPU side: one worker thread that makes every NVML and MPS
//! call, in the order asked (so a MIG instance is destroyed before a launch
//! that needs its space creates another), and a poller that feeds the owner
//! fresh inventory and telemetry, and, at its own interval, the processes
//! on each GPU: their memory and utilisation, and the container each runs
//! in (read from `/proc/<pid>/cgroup` on the same thread, so neither the
//! owner nor a `/metrics` scrape ever waits on it), and with them the
//! MPS servers of the GPUs whose control daemon this daemon started (a
//! fault is noticed there, `crate::mps`).
//!
//! NVML calls block; keeping them on one thread keeps them off the async
//! runtime and makes their order the order of the queue.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use orch_api::GpuTelemetry;
use orch_core::gpu::GpuInfo;
use orch_docker::cgroup::ProcCgroups;
use orch_gpu::{
    CreatedInstance, GpuBackend, GpuError, MigModeChange, MpsControl, MpsError, MpsGpu,
};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::event::{self, GpuNews, GpuProcesses, MpsSeen, SeenProcess};
use crate::mps::Released;

/// How often inventory and telemetry are read.
pub const POLL: Duration = Duration::from_secs(5);

/// How often the processes on the GPUs are read, unless set otherwise.
pub const PROCESS_INTERVAL: Duration = Duration::from_secs(5);

/// The most processes taken of one GPU per sample; the rest are counted
/// as dropped. A GPU runs at most a few dozen contexts (MPS: 48 clients);
/// more is a runaway, not something to hold.
pub const MAX_PROCESSES_PER_GPU: usize = 1024;

/// One inventory with the telemetry of each GPU still present.
pub type Reading = (Vec<GpuInfo>, BTreeMap<u32, GpuTelemetry>);

/// One call for the worker thread.
enum WorkerCall {
    Inventory(oneshot::Sender<Result<Reading, GpuError>>),
    Processes(oneshot::Sender<BTreeMap<u32, GpuProcesses>>),
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
    /// The GPUs whose MPS servers [`WorkerCall::MpsServers`] reads.
    MpsWatch(Vec<MpsGpu>),
    MpsServers(oneshot::Sender<BTreeMap<String, MpsSeen>>),
    /// Terminates a container's MPS clients (`crate::mps::release`).
    MpsRelease {
        gpu: MpsGpu,
        container: String,
        /// The caller waits no longer: nothing is done after it.
        deadline: Instant,
        reply: std::sync::mpsc::Sender<Result<Released, MpsError>>,
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
    /// Starts the worker thread over `backend`; `cgroups` tells which
    /// container a GPU process runs in.
    pub fn start(
        backend: Arc<dyn GpuBackend>,
        mps: Arc<dyn MpsControl>,
        cgroups: Arc<dyn ProcCgroups>,
    ) -> GpuWorker {
        let (tx, rx) = std::sync::mpsc::channel::<WorkerCall>();
        let library = backend.library_path().to_path_buf();
        let driver_version = backend.driver_version().ok();
        let spawned = std::thread::Builder::new().name("gpu-worker".into()).spawn(move || {
            let mut sampler = ProcessSampler::default();
            let mut mps_watched: Vec<MpsGpu> = Vec::new();
            while let Ok(job) = rx.recv() {
                match job {
                    WorkerCall::Processes(reply) => {
                        let _ = reply.send(sampler.sample(backend.as_ref(), cgroups.as_ref()));
                    }
                    WorkerCall::Inventory(reply) => {
                        let r = backend.inventory().map(|gpus| {
                            sampler.gpus = gpus.iter().filter(|g| !g.lost).map(|g| g.index).collect();
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
                        if r.is_err() {
                            // No GPUs to read until an inventory names them again.
                            sampler.gpus.clear();
                        }
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
                    WorkerCall::MpsWatch(gpus) => mps_watched = gpus,
                    WorkerCall::MpsServers(reply) => {
                        let seen = mps_watched
                            .iter()
                            .map(|g| (g.uuid.clone(), crate::mps::read(mps.as_ref(), cgroups.as_ref(), g)))
                            .collect();
                        let _ = reply.send(seen);
                    }
                    WorkerCall::MpsRelease {
                        gpu,
                        container,
                        deadline,
                        reply,
                    } => {
                        // Too late: the container is being stopped without it.
                        if Instant::now() < deadline {
                            let _ = reply.send(crate::mps::release(
                                mps.as_ref(),
                                cgroups.as_ref(),
                                &gpu,
                                &container,
                            ));
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

    /// The processes on every GPU of the last inventory.
    pub async fn processes(&self) -> Result<BTreeMap<u32, GpuProcesses>, GpuError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(WorkerCall::Processes(reply))
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())
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

    /// From now on, the MPS servers of `gpus` are the ones
    /// [`GpuWorker::mps_servers`] reads.
    pub fn mps_watch(&self, gpus: Vec<MpsGpu>) {
        let _ = self.tx.send(WorkerCall::MpsWatch(gpus));
    }

    /// The MPS servers of each watched GPU.
    pub async fn mps_servers(&self) -> Result<BTreeMap<String, MpsSeen>, GpuError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(WorkerCall::MpsServers(reply))
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())
    }

    /// Terminates the MPS clients of `gpu` that run in `container`,
    /// waiting at most `limit` (wall time: the worker may be busy with
    /// other calls, or the control program slow); past it the worker skips
    /// the call if it has not begun.
    pub async fn mps_release(
        &self,
        gpu: MpsGpu,
        container: &str,
        limit: Duration,
    ) -> Result<Released, MpsReleaseError> {
        let (reply, rx) = std::sync::mpsc::channel();
        let deadline = Instant::now() + limit;
        self.tx
            .send(WorkerCall::MpsRelease {
                gpu,
                container: container.to_string(),
                deadline,
                reply,
            })
            .map_err(|_| MpsReleaseError::WorkerGone)?;
        // A blocking wait on the worker's answer, bounded in wall time (a
        // paused test clock does not run ahead of it).
        let waited = tokio::task::spawn_blocking(move || rx.recv_timeout(limit))
            .await
            .map_err(|_| MpsReleaseError::WorkerGone)?;
        match waited {
            Ok(done) => done.map_err(MpsReleaseError::Mps),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                Err(MpsReleaseError::TimedOut { limit })
            }
            // The worker came to it too late and skipped it.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) if Instant::now() >= deadline => {
                Err(MpsReleaseError::TimedOut { limit })
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                Err(MpsReleaseError::WorkerGone)
            }
        }
    }
}

/// Why a container's MPS clients could not be terminated before its stop.
#[derive(Debug, thiserror::Error)]
pub enum MpsReleaseError {
    #[error(transparent)]
    Mps(MpsError),
    #[error("no answer within {limit:?}")]
    TimedOut { limit: Duration },
    #[error("the GPU worker has stopped")]
    WorkerGone,
}

/// Why an MPS control daemon could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum MpsPrepareError {
    #[error(transparent)]
    Mps(MpsError),
    #[error("the GPU worker has stopped")]
    WorkerGone,
}

/// The worker thread's side of process sampling: the GPUs to read and,
/// per GPU, where the driver's utilisation samples were last read.
#[derive(Debug, Default)]
struct ProcessSampler {
    /// The GPUs of the last inventory (lost ones left out).
    gpus: Vec<u32>,
    /// Per GPU: the newest utilisation sample read, and each pid's SM
    /// percent from it (kept while the driver has nothing newer).
    utilization: BTreeMap<u32, (u64, BTreeMap<u32, u32>)>,
}

impl ProcessSampler {
    fn sample(
        &mut self,
        backend: &dyn GpuBackend,
        cgroups: &dyn ProcCgroups,
    ) -> BTreeMap<u32, GpuProcesses> {
        let mut out = BTreeMap::new();
        for &gpu in &self.gpus {
            let began = Instant::now();
            let listed = match backend.processes(gpu) {
                Ok(p) => p,
                Err(e) => {
                    tracing::debug!(gpu, "cannot list the GPU's processes: {e}");
                    continue;
                }
            };
            let (since, last) = self.utilization.entry(gpu).or_default();
            let per_process = match backend.process_utilization(gpu, *since) {
                Ok(u) => {
                    if let Some(newest) = u.newest_us {
                        *since = newest;
                        *last = u.processes.iter().map(|p| (p.pid, p.sm_percent)).collect();
                    }
                    true
                }
                Err(_) => false,
            };
            let dropped = listed.len().saturating_sub(MAX_PROCESSES_PER_GPU);
            let processes = listed
                .into_iter()
                .take(MAX_PROCESSES_PER_GPU)
                .map(|p| SeenProcess {
                    pid: p.pid,
                    memory_bytes: p.used_memory.map(|m| m.bytes()),
                    gpu_instance_id: p.gpu_instance_id,
                    container: match cgroups.docker_cgroup(p.pid) {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::debug!(
                                gpu,
                                pid = p.pid,
                                "cannot tell the process's container: {e}"
                            );
                            None
                        }
                    },
                    // A process the samples do not name was idle.
                    sm_percent: per_process.then(|| last.get(&p.pid).copied().unwrap_or(0)),
                })
                .collect::<Vec<_>>();
            tracing::debug!(
                gpu,
                processes = processes.len(),
                elapsed_us = began.elapsed().as_micros() as u64,
                "sampled a GPU's processes"
            );
            out.insert(
                gpu,
                GpuProcesses {
                    processes,
                    dropped,
                    per_process,
                },
            );
        }
        self.utilization.retain(|gpu, _| self.gpus.contains(gpu));
        out
    }
}

/// Reads inventory and telemetry every [`POLL`], and the processes on the
/// GPUs every `process_interval`, until shutdown.
pub async fn poll(
    gpu: GpuWorker,
    news: event::Sender<GpuNews>,
    process_interval: Duration,
    shutdown: CancellationToken,
) {
    let mut inventory_due = tokio::time::Instant::now();
    let mut processes_due = inventory_due;
    loop {
        let now = tokio::time::Instant::now();
        if now >= inventory_due {
            let reading = match gpu.inventory().await {
                Ok((gpus, telemetry)) => GpuNews::Reading { gpus, telemetry },
                Err(e) => GpuNews::Unavailable {
                    reason: e.to_string(),
                },
            };
            if news.send(reading).await.is_err() {
                return;
            }
            inventory_due = now + POLL;
        }
        if now >= processes_due {
            if let Ok(gpus) = gpu.processes().await
                && news.send(GpuNews::Processes { gpus }).await.is_err()
            {
                return;
            }
            if let Ok(gpus) = gpu.mps_servers().await
                && news.send(GpuNews::MpsServers { gpus }).await.is_err()
            {
                return;
            }
            processes_due = now + process_interval;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep_until(inventory_due.min(processes_due)) => {}
            () = gpu.refresh.notified() => inventory_due = tokio::time::Instant::now(),
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use orch_core::units::ByteSize;
    use orch_docker::cgroup::FakeProcCgroups;
    use orch_gpu::{FakeGpu, GpuProcess, ProcessKind, ProcessSample};

    use super::*;

    fn process(pid: u32) -> GpuProcess {
        GpuProcess {
            pid,
            used_memory: Some(ByteSize(1 << 20)),
            gpu_instance_id: None,
            compute_instance_id: None,
            kind: ProcessKind::Compute,
        }
    }

    fn fake() -> FakeGpu {
        let class = orch_core::gpu::class_by_name("NVIDIA GeForce RTX 4090").unwrap();
        FakeGpu::new().with_gpu(class, false)
    }

    #[test]
    fn at_most_max_processes_per_gpu_are_taken_and_the_rest_counted() {
        let gpu = fake();
        let over = MAX_PROCESSES_PER_GPU + 6;
        gpu.set_processes(0, (1..=over as u32).map(process).collect());
        let cgroups = FakeProcCgroups::new();
        let mut sampler = ProcessSampler {
            gpus: vec![0],
            ..Default::default()
        };
        let read = sampler.sample(&gpu, &cgroups);
        assert_eq!(read[&0].processes.len(), MAX_PROCESSES_PER_GPU);
        assert_eq!(read[&0].dropped, 6);
        // The cgroup files of the dropped ones are not read either.
        assert_eq!(cgroups.reads().len(), MAX_PROCESSES_PER_GPU);
    }

    #[test]
    fn a_process_is_named_with_its_container_and_its_utilisation() {
        let gpu = fake();
        gpu.set_processes(0, vec![process(10), process(11), process(12)]);
        gpu.set_process_utilization(
            0,
            vec![ProcessSample {
                pid: 10,
                sm_percent: 40,
                memory_percent: 5,
                encoder_percent: 0,
                decoder_percent: 0,
                samples: 3,
                newest_us: 1_000,
            }],
        );
        let id = "a".repeat(64);
        let cgroups = FakeProcCgroups::new();
        cgroups.set(10, &format!("0::/system.slice/docker-{id}.scope\n"));
        cgroups.set(11, "0::/user.slice/user-1000.slice/session-2.scope\n");
        let mut sampler = ProcessSampler {
            gpus: vec![0],
            ..Default::default()
        };
        for _ in 0..2 {
            // The second read has no newer sample: the last one holds.
            let read = sampler.sample(&gpu, &cgroups);
            let seen = &read[&0];
            assert!(seen.per_process);
            let p: Vec<_> = seen
                .processes
                .iter()
                .map(|p| {
                    (
                        p.pid,
                        p.container.as_ref().map(|c| c.id.clone()),
                        p.sm_percent,
                    )
                })
                .collect();
            assert_eq!(
                p,
                [
                    (10, Some(id.clone()), Some(40)),
                    (11, None, Some(0)),
                    // Gone before its cgroup file was read.
                    (12, None, Some(0)),
                ]
            );
        }
    }
}
