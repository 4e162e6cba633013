//! `orchestratord`: the per-host supervisor daemon.
//!
//! Every way it can fail is a [`MainError`], mapped to the exit codes of
//! `docs/operations.md` in one place ([`MainError::code`]): 0 clean stop;
//! 1 runtime failure; 2 bad command line; 3 invalid config (the config
//! file, a `control.group` that does not exist, the federation's keys);
//! 4 the control socket cannot be bound (e.g. another daemon holds it);
//! 5 the state directory cannot be used. A code is changed only with that
//! table, and the unit file's `RestartPreventExitStatus=`.

mod telemetry;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use orch_config::{ConfigError, LoadOptions};
use orch_daemon::{DaemonError, Settings};
use orch_docker::Endpoint;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

const EXIT_FAILED: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_CONFIG: u8 = 3;
const EXIT_SOCKET: u8 = 4;
const EXIT_STATE: u8 = 5;

/// Why `orchestratord` stopped other than cleanly.
#[derive(Debug, thiserror::Error)]
enum MainError {
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    #[error("{0}")]
    DockerEndpoint(#[source] orch_docker::DockerError),
    #[error(transparent)]
    Config(ConfigError),
    #[error(
        "{config}: control.group `{group}` does not exist on this host; create it (groupadd {group}) or change the config"
    )]
    NoControlGroup { config: String, group: String },
    #[error("{config}: federation: {error}")]
    FederationKey {
        config: String,
        #[source]
        error: orch_federation::KeyError,
    },
    #[error("federation: {0}")]
    Federation(#[source] FederationError),
    #[error(transparent)]
    Daemon(#[from] DaemonError),
}

/// Why the federation bus did not start.
#[derive(Debug, thiserror::Error)]
enum FederationError {
    #[error(transparent)]
    Key(#[from] orch_federation::KeyError),
    #[error(transparent)]
    Config(#[from] orch_federation::ConfigError),
    #[error(transparent)]
    Start(#[from] orch_federation::StartError),
}

impl MainError {
    /// The documented exit code.
    fn code(&self) -> u8 {
        match self {
            MainError::Runtime(_) | MainError::Signals(_) => EXIT_FAILED,
            MainError::DockerEndpoint(_) => EXIT_USAGE,
            MainError::Config(_)
            | MainError::NoControlGroup { .. }
            | MainError::FederationKey { .. }
            | MainError::Federation(_) => EXIT_CONFIG,
            // A socket group that does not exist is a config mistake.
            MainError::Daemon(DaemonError::Bind(orch_daemon::server::BindError::NoGroup(_))) => {
                EXIT_CONFIG
            }
            MainError::Daemon(DaemonError::Bind(_)) => EXIT_SOCKET,
            MainError::Daemon(DaemonError::Store(_)) => EXIT_STATE,
        }
    }

    /// Says why on stderr: config errors as their diagnostics, the checks
    /// of `check` as they are, the rest after the program's name.
    fn report(&self) {
        match self {
            MainError::Config(ConfigError::Invalid {
                diagnostics,
                source_text,
                ..
            }) => eprint!(
                "{}",
                orch_config::diag::render(diagnostics, source_text, false)
            ),
            MainError::NoControlGroup { .. } | MainError::FederationKey { .. } => {
                eprintln!("{self}")
            }
            other => eprintln!("orchestratord: {other}"),
        }
    }
}

/// The GPU-aware agent supervisor of one host.
#[derive(Debug, Parser)]
#[command(name = "orchestratord", version)]
struct Cli {
    /// How log lines are written to stderr.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: telemetry::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon in the foreground (as systemd does).
    Run(RunArgs),
    /// Validate the config and print what it holds, then exit.
    Check(CheckArgs),
}

#[derive(Debug, clap::Args)]
struct CheckArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Do not check the federation's secret key file (for a config being
    /// staged on a machine that does not have the key yet).
    #[arg(long)]
    without_keys: bool,
}

#[derive(Debug, clap::Args)]
struct ConfigArgs {
    /// The host's startup_config.yaml.
    #[arg(long, env = "ORCH_CONFIG")]
    config: PathBuf,
    /// Host name for a legacy config (default: its directory's name).
    #[arg(long = "host-name")]
    host_name: Option<String>,
    /// Value of `${PORT_OFFSET}` in legacy configs.
    #[arg(
        long,
        env = "PORT_OFFSET",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    port_offset: i64,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Where desired state is kept (default: the config's `runtime.state_dir`).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// The control socket (default: the config's `control.socket`).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// The Docker Engine (default: `runtime.docker_host`, then DOCKER_HOST,
    /// then unix:///var/run/docker.sock).
    #[arg(long)]
    docker_host: Option<String>,
    /// Docker operations run at most this many at once.
    #[arg(long, default_value_t = 16)]
    parallel: usize,
    /// Where `/metrics` is served, `HOST:PORT` (default: the config's
    /// `metrics.listen`); `off` serves none.
    #[arg(long)]
    metrics_listen: Option<String>,
    /// Start from no started group, whatever the state file says, and stop
    /// every running agent of this host. Without it, a missing or damaged
    /// state file is inferred from the running agents, which keep running.
    #[arg(long)]
    fresh: bool,
    /// The host's `/proc`, read to tell which container a GPU process runs
    /// in (mount the host's elsewhere when the daemon runs in a container).
    #[arg(long, default_value = "/proc")]
    proc_root: PathBuf,
    /// The host's cgroup file system, where each replica's CPU time is
    /// read (at the GPU process interval); `off` reads none.
    #[arg(long, default_value = "/sys/fs/cgroup")]
    cgroup_root: PathBuf,
    /// How often the processes on the GPUs are read, in seconds.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    gpu_process_interval: u64,
    /// Keep dcgm-exporter's HPC job mapping files in this directory: one
    /// per GPU and MIG instance, listing the agents running there
    /// (`HOST/GROUP/AGENT`), for dcgm-exporter's
    /// `--hpc-job-mapping-dir` to label their GPU's metrics `hpc_job`
    /// (default: the config's `metrics.dcgm_job_mapping_dir`; none).
    #[arg(long)]
    dcgm_job_mapping_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    // The config is read first: its host name is in every span's resource.
    let loaded = match &cli.command {
        Command::Run(args) => Some(load(&args.config)),
        Command::Check(_) => None,
    };
    let host = loaded
        .as_ref()
        .and_then(|l| l.as_ref().ok())
        .map(|l| l.config.host.name.clone());
    // Flushes the traces when main returns.
    let _telemetry = telemetry::init(cli.log_format, host.as_deref());
    let result = match (cli.command, loaded) {
        (Command::Check(args), _) => check(&args),
        (Command::Run(_), Some(Err(e))) => Err(e),
        (Command::Run(args), loaded) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(MainError::Runtime)
            .and_then(|rt| rt.block_on(run(args, loaded.and_then(Result::ok)))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            e.report();
            ExitCode::from(e.code())
        }
    }
}

fn load(args: &ConfigArgs) -> Result<orch_config::Loaded, MainError> {
    let opts = LoadOptions {
        host_name: args.host_name.clone(),
        port_offset: args.port_offset,
        ..LoadOptions::default()
    };
    orch_config::load_file(&args.config, &opts).map_err(MainError::Config)
}

/// NVML from the config's `runtime.nvml_library`, else `ORCH_NVML_LIBRARY`,
/// else the system's library; MPS control from `ORCH_MPS_CONTROL`, else the
/// config's `runtime.mps.control_binary`. A host without NVML still runs:
/// its CPU agents start and its GPU agents say why they cannot.
fn gpu_deps(
    cfg: &orch_core::model::HostConfig,
    proc_root: &std::path::Path,
) -> orch_daemon::GpuDeps {
    let explicit = cfg.runtime.nvml_library.as_ref().map(PathBuf::from);
    let backend = orch_gpu::NvmlBackend::open(explicit.as_deref())
        .map(|b| Arc::new(b) as Arc<dyn orch_gpu::GpuBackend>);
    let binary = std::env::var("ORCH_MPS_CONTROL")
        .unwrap_or_else(|_| cfg.runtime.mps.control_binary.clone());
    orch_daemon::GpuDeps {
        backend,
        mps: Arc::new(orch_gpu::MpsControlDaemon::new(binary)),
        cgroups: Arc::new(orch_docker::cgroup::ProcFs::new(proc_root)),
    }
}

fn check(check_args: &CheckArgs) -> Result<(), MainError> {
    let args = &check_args.config;
    let l = load(args)?;
    for w in &l.warnings {
        eprintln!("{}", w.headline());
    }
    // The host must have what the config names outside itself.
    if let Some(group) = &l.config.control.group
        && !matches!(nix::unistd::Group::from_name(group), Ok(Some(_)))
    {
        return Err(MainError::NoControlGroup {
            config: args.config.display().to_string(),
            group: group.clone(),
        });
    }
    if let Some(fed) = l
        .config
        .federation
        .as_ref()
        .filter(|_| !check_args.without_keys)
    {
        let key = fed.secret_key_path(&l.config.host.name);
        orch_federation::keys::load_secret(std::path::Path::new(&key)).map_err(|error| {
            MainError::FederationKey {
                config: args.config.display().to_string(),
                error,
            }
        })?;
    }
    println!(
        "{}: valid; host {}, {} groups, {} agents",
        args.config.display(),
        l.config.host.name,
        l.config.groups.len(),
        l.config.agent_count()
    );
    Ok(())
}

/// The federation bus of a host with peers: its secret key (which must be
/// readable by this user only), then a ZeroMQ bus with CURVE that admits
/// only the configured peers' keys.
fn start_federation(
    host: &str,
    fed: &orch_core::model::Federation,
) -> Result<orch_daemon::fleet::FederationDeps, FederationError> {
    let key_path = fed.secret_key_path(host);
    let secret = orch_federation::keys::load_secret(std::path::Path::new(&key_path))?;
    let config =
        orch_federation::BusConfig::from_model(host, fed, orch_federation::incarnation_now())?;
    let (bus, inbox) = orch_federation::ZmqBus::start(config, &secret)?;
    tracing::info!(listen = %fed.listen, peers = fed.peers.len(), "federation bus up");
    Ok(orch_daemon::fleet::FederationDeps {
        bus: Arc::new(bus),
        inbox,
    })
}

/// Runs the daemon on `loaded` (read again if not given).
async fn run(args: RunArgs, loaded: Option<orch_config::Loaded>) -> Result<(), MainError> {
    let loaded = match loaded {
        Some(l) => l,
        None => load(&args.config)?,
    };
    for w in &loaded.warnings {
        tracing::warn!("{}", w.headline());
    }
    let cfg = &loaded.config;
    let docker = args
        .docker_host
        .clone()
        .or_else(|| cfg.runtime.docker_host.clone())
        .or_else(|| std::env::var("DOCKER_HOST").ok())
        .unwrap_or_else(|| format!("unix://{}", Endpoint::DEFAULT_SOCKET));
    let endpoint = Endpoint::parse(&docker).map_err(MainError::DockerEndpoint)?;
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&cfg.runtime.state_dir));
    let mps_base = cfg
        .runtime
        .mps
        .directory
        .as_ref()
        .map(PathBuf::from)
        .unwrap_or_else(|| state_dir.join("mps"));
    let gpu = gpu_deps(cfg, &args.proc_root);
    let settings = Settings {
        config_path: args.config.config.clone(),
        load_options: LoadOptions {
            host_name: args.config.host_name.clone(),
            port_offset: args.config.port_offset,
            ..LoadOptions::default()
        },
        socket: args
            .socket
            .clone()
            .unwrap_or_else(|| PathBuf::from(&cfg.control.socket)),
        socket_group: cfg.control.group.clone(),
        docker_endpoint: endpoint.to_string(),
        max_parallel_ops: args.parallel,
        mps_base,
        metrics_listen: match args.metrics_listen.as_deref() {
            Some("off") => None,
            Some(addr) => Some(addr.to_string()),
            None => cfg.metrics.listen.clone(),
        },
        observe: Default::default(),
        gpu_process_interval: std::time::Duration::from_secs(args.gpu_process_interval),
        dcgm_job_mapping_dir: args
            .dcgm_job_mapping_dir
            .clone()
            .or_else(|| cfg.metrics.dcgm_job_mapping_dir.as_ref().map(PathBuf::from)),
        cgroup_root: (args.cgroup_root.as_os_str() != "off").then(|| args.cgroup_root.clone()),
        fresh: args.fresh,
        generations_dir: Some(state_dir.join("generations")),
        generations_kept: orch_daemon::generations::KEEP,
    };
    let runtime: Arc<dyn orch_docker::ContainerRuntime> =
        Arc::new(orch_docker::Reconnecting::new(endpoint));
    let mut deps = orch_daemon::Deps::standard(runtime, gpu, &state_dir, &cfg.host.name)?;
    if let Some(fed) = &cfg.federation {
        deps.federation =
            Some(start_federation(&cfg.host.name, fed).map_err(MainError::Federation)?);
    }
    let shutdown = CancellationToken::new();
    let handler = |kind| signal(kind).map_err(MainError::Signals);
    let mut term = handler(SignalKind::terminate())?;
    let mut int = handler(SignalKind::interrupt())?;
    let mut hup = handler(SignalKind::hangup())?;
    let stop = shutdown.clone();
    let (control_tx, mut control_rx) = tokio::sync::oneshot::channel();
    let signals = tokio::spawn(async move {
        let mut control: Option<orch_daemon::Control> = None;
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => {
                    if control.is_none() {
                        control = control_rx.try_recv().ok();
                    }
                    match &control {
                        Some(c) => {
                            tracing::info!("SIGHUP: reloading the config");
                            c.reload().await;
                        }
                        None => tracing::warn!("SIGHUP before the daemon was ready; ignored"),
                    }
                }
            }
        }
        tracing::info!("stop signal received");
        stop.cancel();
    });
    let result = orch_daemon::run(loaded, settings, deps, shutdown.clone(), |control| {
        let _ = control_tx.send(control);
        orch_daemon::notify::ready("ready");
    })
    .await;
    signals.abort();
    Ok(result?)
}
