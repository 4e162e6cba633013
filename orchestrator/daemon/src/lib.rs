//! The host supervisor behind `orchestratord`.
//!
//! [`run`] wires the parts together and returns when `shutdown` fires:
//! the owner task (all host state, see [`owner`]) and the workers that
//! report to it, each through a sender of its own news ([`event`]): the
//! Docker watcher, the GPU poller, the observability ticker, the
//! federation bridge, the health probes and Docker operations it spawns;
//! and the control API ([`service`] behind the HTTP [`server`]),
//! `/metrics`, and the systemd watchdog.
//! Every outside system comes in through [`Deps`] as a trait object, so
//! the same `run` is driven by the real Docker Engine and NVML in
//! production and by fakes in the in-process tests. Shutdown order: stop
//! accepting API requests, stop watching Docker, let the owner finish
//! (leaving agents running, or stopping them with `shutdown: stop`), then
//! return.

pub mod accept;
pub mod clock;
pub mod cpu_stats;
pub mod cpu_use;
pub mod dcgm;
pub mod event;
pub mod events;
pub mod fleet;
pub mod generations;
pub mod gpu;
pub mod gpu_use;
pub mod images;
pub mod metrics;
pub mod mps;
pub mod notify;
pub mod observe;
pub mod ops;
pub mod owner;
pub mod peer;
pub mod probe;
pub mod server;
pub mod service;
pub mod slo_scrape;
pub mod slo_store;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod trace;
pub mod views;
pub mod watch;

use std::path::PathBuf;
use std::sync::Arc;

use orch_config::{LoadOptions, Loaded};
use orch_docker::ContainerRuntime;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::event::{GpuNews, OwnerEvent, Reload};
use crate::owner::{Owner, OwnerDeps, OwnerSettings};

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
    pub socket: PathBuf,
    pub socket_group: Option<String>,
    pub docker_endpoint: String,
    pub max_parallel_ops: usize,
    /// Per-GPU MPS pipe and log directories are made under this one.
    pub mps_base: PathBuf,
    /// Where `/metrics` is served (`host:port`, port 0 for any free one);
    /// `None` serves no metrics.
    pub metrics_listen: Option<String>,
    pub observe: observe::ObserveSettings,
    /// Start from no started group and stop what runs (`run --fresh`).
    pub fresh: bool,
    /// How often the processes on the GPUs are read
    /// (`gpu::PROCESS_INTERVAL` by default).
    pub gpu_process_interval: std::time::Duration,
    /// Where dcgm-exporter's HPC job mapping files are kept equal to the
    /// running agents (`crate::dcgm`); `None` keeps none.
    pub dcgm_job_mapping_dir: Option<PathBuf>,
    /// The cgroup root the replicas' CPU time is read under (at the GPU
    /// process interval); `None` reads none.
    pub cgroup_root: Option<PathBuf>,
    /// Where the config generations are kept (`<state_dir>/generations`);
    /// `None` keeps none.
    pub generations_dir: Option<PathBuf>,
    /// How many generations are kept (`generations::KEEP` by default).
    pub generations_kept: usize,
}

/// The GPU side: NVML (or why there is none) and MPS control.
#[derive(Debug)]
pub struct GpuDeps {
    pub backend: Result<Arc<dyn orch_gpu::GpuBackend>, orch_gpu::GpuError>,
    pub mps: Arc<dyn orch_gpu::MpsControl>,
    /// Which container a GPU process runs in (the host's `/proc`).
    pub cgroups: Arc<dyn orch_docker::cgroup::ProcCgroups>,
}

/// The outside systems, each behind its trait.
#[derive(Debug)]
pub struct Deps {
    pub runtime: Arc<dyn ContainerRuntime>,
    pub gpu: GpuDeps,
    pub prober: Arc<dyn probe::Prober>,
    pub store: Arc<dyn store::StateStore>,
    pub clock: Arc<dyn clock::Clock>,
    /// The federation bus, for a host with peers.
    pub federation: Option<fleet::FederationDeps>,
    /// The SLO history between runs.
    pub slo_store: Arc<dyn slo_store::SloStore>,
    /// Reads the agents' own metrics.
    pub fetcher: Arc<dyn slo_scrape::MetricsFetcher>,
    /// Probes other hosts' agents while their daemon is down.
    pub remote_prober: Arc<dyn fleet::probes::RemoteProber>,
}

impl Deps {
    /// The real ones around a Docker runtime: network probes, the state
    /// file in `state_dir`, the system clock.
    pub fn standard(
        runtime: Arc<dyn ContainerRuntime>,
        gpu: GpuDeps,
        state_dir: &std::path::Path,
        host: &str,
    ) -> Result<Self, DaemonError> {
        Ok(Deps {
            prober: Arc::new(probe::NetProber::new(runtime.clone())),
            fetcher: Arc::new(slo_scrape::HttpFetcher::new(runtime.clone())),
            runtime,
            gpu,
            store: Arc::new(store::FileStore::open(state_dir, host)?),
            slo_store: Arc::new(slo_store::FileSloStore::new(state_dir, host)),
            clock: Arc::new(clock::SystemClock),
            federation: None,
            remote_prober: Arc::new(fleet::probes::HttpRemoteProber),
        })
    }
}

/// A handle to the running daemon, given to `on_ready`.
#[derive(Debug, Clone)]
pub struct Control {
    reload: event::Sender<Reload>,
    service: service::Service,
    metrics_addr: Option<std::net::SocketAddr>,
}

impl Control {
    /// Re-reads the config file (SIGHUP).
    pub async fn reload(&self) {
        let _ = self.reload.send(Reload).await;
    }

    /// The control API, as transports use it.
    pub fn service(&self) -> &service::Service {
        &self.service
    }

    /// Where `/metrics` is served, if it is.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics_addr
    }
}

/// Starts the daemon. `on_ready` runs once the control socket listens.
pub async fn run(
    loaded: Loaded,
    settings: Settings,
    deps: Deps,
    shutdown: CancellationToken,
    on_ready: impl FnOnce(Control),
) -> Result<(), DaemonError> {
    let host = loaded.config.host.name.clone();
    let network = loaded.config.runtime.network.clone();
    let rt = deps.runtime.clone();
    let (tx, rx) = mpsc::channel::<OwnerEvent>(1024);
    let (bus, inbox) = match deps.federation {
        Some(f) => (Some(f.bus), Some(f.inbox)),
        None => (None, None),
    };
    let (gpu_handle, gpu_reason) = match deps.gpu.backend {
        Ok(backend) => (
            Some(gpu::GpuWorker::start(
                backend,
                deps.gpu.mps,
                deps.gpu.cgroups,
            )),
            None,
        ),
        Err(reason) => (None, Some(reason.to_string())),
    };
    // No history is no reason not to supervise: `history` says so.
    let generations = settings.generations_dir.as_deref().and_then(|dir| {
        generations::GenerationStore::open(dir, settings.generations_kept)
            .map_err(|e| tracing::error!("{e}; no config history is kept"))
            .ok()
    });
    let owner = Owner::new(
        loaded,
        OwnerSettings {
            config_path: settings.config_path.clone(),
            load_options: settings.load_options.clone(),
            docker_endpoint: settings.docker_endpoint.clone(),
            max_parallel_ops: settings.max_parallel_ops,
            mps_base: settings.mps_base.clone(),
            observe: settings.observe.clone(),
            fresh: settings.fresh,
            dcgm_job_mapping_dir: settings.dcgm_job_mapping_dir.clone(),
        },
        OwnerDeps {
            rt: rt.clone(),
            prober: deps.prober,
            store: deps.store,
            clock: deps.clock,
            gpu: gpu_handle.clone(),
            bus: bus.clone(),
            remote_prober: deps.remote_prober,
            slo_store: deps.slo_store,
            fetcher: deps.fetcher,
            generations,
        },
        tx.clone(),
    )?;
    let snapshots = owner.metrics();
    let (listener, policy) =
        server::bind(&settings.socket, settings.socket_group.as_deref()).await?;
    let api_stop_for_bridge = CancellationToken::new();
    let remote: Option<Arc<dyn service::Remote>> = bus.clone().map(|b| {
        Arc::new(fleet::BusRemote::new(b, event::Sender::new(tx.clone())))
            as Arc<dyn service::Remote>
    });
    let service = service::Service::new(
        tx.clone(),
        rt.clone(),
        host.clone(),
        remote,
        settings.load_options.clone(),
    );
    let remote_commands = owner.remote_commands();
    let bridge_task = inbox.map(|inbox| {
        tokio::spawn(fleet::bridge(
            inbox,
            event::Sender::new(tx.clone()),
            service.clone(),
            remote_commands,
            policy,
            api_stop_for_bridge.clone(),
        ))
    });

    let api_stop = api_stop_for_bridge;
    let watch_stop = CancellationToken::new();
    let owner_stop = CancellationToken::new();
    let server_task = tokio::spawn(server::serve(
        listener,
        server::Server {
            service: service.clone(),
            policy,
        },
        api_stop.clone(),
    ));
    let watch_task = tokio::spawn(watch::run(
        rt.clone(),
        host.clone(),
        network,
        event::Sender::new(tx.clone()),
        watch_stop.clone(),
    ));
    let dog_task = tokio::spawn(notify::watchdog(
        event::Sender::new(tx.clone()),
        service.clone(),
        api_stop.clone(),
    ));
    // A metrics port in use does not stop supervision: it is reported,
    // and the daemon runs without `/metrics`.
    let mut metrics_addr = None;
    let metrics_task = match &settings.metrics_listen {
        Some(addr) => match metrics::serve::bind(addr).await {
            Ok(listener) => {
                metrics_addr = metrics::serve::local_addr(&listener);
                tracing::info!(addr = ?metrics_addr, "serving /metrics");
                Some(tokio::spawn(metrics::serve::serve(
                    listener,
                    snapshots,
                    api_stop.clone(),
                )))
            }
            Err(e) => {
                tracing::error!("{e}; no metrics are served");
                None
            }
        },
        None => None,
    };
    let tick_task = tokio::spawn(observe::ticker(
        settings.observe.clone(),
        event::Sender::new(tx.clone()),
        watch_stop.clone(),
    ));
    let gpu_news = event::Sender::<GpuNews>::new(tx.clone());
    let gpu_task = match (gpu_handle, gpu_reason) {
        (Some(g), _) => tokio::spawn(gpu::poll(
            g,
            gpu_news,
            settings.gpu_process_interval,
            watch_stop.clone(),
        )),
        (None, reason) => {
            let reason = reason.unwrap_or_default();
            tracing::warn!("no GPUs: {reason}");
            tokio::spawn(async move {
                let _ = gpu_news.send(GpuNews::Unavailable { reason }).await;
            })
        }
    };
    let cpu_task = settings.cgroup_root.clone().map(|root| {
        tokio::spawn(cpu_use::poll(
            root,
            settings.gpu_process_interval,
            event::Sender::new(tx.clone()),
            watch_stop.clone(),
        ))
    });
    let owner_task = tokio::spawn(owner.run(rx, owner_stop.clone()));
    tracing::info!(host = %host, socket = %settings.socket.display(), "orchestratord ready");
    on_ready(Control {
        reload: event::Sender::new(tx.clone()),
        service,
        metrics_addr,
    });
    drop(tx);

    shutdown.cancelled().await;
    notify::stopping();
    api_stop.cancel();
    let _ = server_task.await;
    if let Some(t) = bridge_task {
        let _ = t.await;
    }
    let _ = dog_task.await;
    if let Some(t) = metrics_task {
        let _ = t.await;
    }
    // With `shutdown: stop` the owner needs Docker news until the end.
    owner_stop.cancel();
    let _ = owner_task.await;
    watch_stop.cancel();
    let _ = watch_task.await;
    let _ = gpu_task.await;
    if let Some(t) = cpu_task {
        let _ = t.await;
    }
    let _ = tick_task.await;
    let _ = std::fs::remove_file(&settings.socket);
    Ok(())
}
