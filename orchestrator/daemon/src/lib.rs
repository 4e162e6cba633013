//! The host supervisor behind `orchestratord`.
//!
//! [`run`] wires the parts together and returns when `shutdown` fires:
//! the owner task (all host state, see [`owner`]), the Docker watcher, the
//! health probes and Docker operations it spawns, the control API server,
//! and the systemd watchdog. Shutdown order: stop accepting API requests,
//! stop watching Docker, let the owner finish (leaving agents running, or
//! stopping them with `shutdown: stop`), then return.

pub mod docker;
pub mod events;
pub mod gpu;
pub mod notify;
pub mod ops;
pub mod owner;
pub mod peer;
pub mod probe;
pub mod server;
pub mod store;
pub mod watch;

use std::path::PathBuf;
use std::sync::Arc;

use orch_config::{LoadOptions, Loaded};
use orch_docker::ContainerRuntime;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::owner::{Event, Owner, OwnerSettings};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Bind(#[from] server::BindError),
}

/// Everything `run` needs besides the outside systems.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config_path: PathBuf,
    pub load_options: LoadOptions,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub socket_group: Option<String>,
    pub docker_endpoint: String,
    pub max_parallel_ops: usize,
    /// Per-GPU MPS pipe and log directories are made under this one.
    pub mps_base: PathBuf,
}

/// The GPU side: NVML (or why there is none) and MPS control.
#[derive(Debug)]
pub struct GpuDeps {
    pub backend: Result<Arc<dyn orch_gpu::GpuBackend>, String>,
    pub mps: Arc<dyn orch_gpu::MpsControl>,
}

/// A handle to ask the running daemon for a reload (SIGHUP).
#[derive(Debug, Clone)]
pub struct Control {
    tx: mpsc::Sender<Event>,
}

impl Control {
    pub async fn reload(&self) {
        let _ = self
            .tx
            .send(Event::Reload {
                text: None,
                reply: None,
            })
            .await;
    }
}

/// Starts the daemon. `on_ready` runs once the control socket listens.
pub async fn run(
    loaded: Loaded,
    settings: Settings,
    rt: Arc<dyn ContainerRuntime>,
    gpu: GpuDeps,
    shutdown: CancellationToken,
    on_ready: impl FnOnce(Control),
) -> Result<(), DaemonError> {
    let host = loaded.config.host.name.clone();
    let network = loaded.config.runtime.network.clone();
    let store = store::StateStore::open(&settings.state_dir, &host)?;
    let (tx, rx) = mpsc::channel(1024);
    let (gpu_handle, gpu_reason) = match gpu.backend {
        Ok(backend) => (Some(gpu::Gpu::start(backend, gpu.mps)), None),
        Err(reason) => (None, Some(reason)),
    };
    let owner = Owner::new(
        loaded,
        OwnerSettings {
            config_path: settings.config_path.clone(),
            load_options: settings.load_options.clone(),
            docker_endpoint: settings.docker_endpoint.clone(),
            max_parallel_ops: settings.max_parallel_ops,
            mps_base: settings.mps_base.clone(),
        },
        rt.clone(),
        store,
        tx.clone(),
        gpu_handle.clone(),
    )?;
    let (listener, policy) =
        server::bind(&settings.socket, settings.socket_group.as_deref()).await?;

    let api_stop = CancellationToken::new();
    let watch_stop = CancellationToken::new();
    let owner_stop = CancellationToken::new();
    let server_task = tokio::spawn(server::serve(
        listener,
        server::Server {
            tx: tx.clone(),
            rt: rt.clone(),
            policy,
        },
        api_stop.clone(),
    ));
    let watch_task = tokio::spawn(watch::run(
        rt.clone(),
        host.clone(),
        network,
        tx.clone(),
        watch_stop.clone(),
    ));
    let dog_task = tokio::spawn(notify::watchdog(tx.clone(), api_stop.clone()));
    let gpu_task = match (gpu_handle, gpu_reason) {
        (Some(g), _) => tokio::spawn(gpu::poll(g, tx.clone(), watch_stop.clone())),
        (None, reason) => {
            let reason = reason.unwrap_or_default();
            tracing::warn!("no GPUs: {reason}");
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = tx
                    .send(Event::Gpu(gpu::GpuNews::Unavailable { reason }))
                    .await;
            })
        }
    };
    let owner_task = tokio::spawn(owner.run(rx, owner_stop.clone()));
    tracing::info!(host = %host, socket = %settings.socket.display(), "orchestratord ready");
    on_ready(Control { tx: tx.clone() });
    drop(tx);

    shutdown.cancelled().await;
    notify::stopping();
    api_stop.cancel();
    let _ = server_task.await;
    let _ = dog_task.await;
    // With `shutdown: stop` the owner needs Docker news until the end.
    owner_stop.cancel();
    let _ = owner_task.await;
    watch_stop.cancel();
    let _ = watch_task.await;
    let _ = gpu_task.await;
    let _ = std::fs::remove_file(&settings.socket);
    Ok(())
}
