//! `nvml-simctl`: inspects and drives the NVML simulator's shared state from
//! outside any NVML client — status, GPU resets and reboots, telemetry
//! overrides, lost GPUs, MIG layout changes (like `nvidia-smi mig`), the
//! processes using each GPU and faults of its MPS server.
//!
//! Exit codes: 0 success, 1 the simulator refused or failed, 2 bad usage.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand, ValueEnum};
use nvml_sim::mig::{self, Placement};
use nvml_sim::process::NewProcess;
use nvml_sim::sim::TelemetryUpdate;
use nvml_sim::state::ProcessKind;
use nvml_sim::units::parse_size;
use nvml_sim::{ENV_CONFIG, ENV_STATE, Simulator};

#[derive(Debug, Parser)]
#[command(
    name = "nvml-simctl",
    about = "Inspect and drive the simulated GPUs of an NVML simulator host"
)]
struct Cli {
    /// Host description (YAML).
    #[arg(long, env = ENV_CONFIG, global = true)]
    config: Option<PathBuf>,
    /// Shared state file (default: derived from the absolute config path).
    #[arg(long, env = ENV_STATE, global = true)]
    state: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    Enable,
    Disable,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Kind {
    Compute,
    Graphics,
    Mps,
}

#[derive(Debug, Subcommand)]
enum ProcessCommand {
    /// Start a process's context on a GPU (on a MIG GPU: in a compute instance).
    Add {
        /// GPU index.
        #[arg(long)]
        gpu: u32,
        /// GPU-instance id (MIG).
        #[arg(long)]
        gi: Option<u32>,
        /// Compute-instance id (MIG; may be left out when the GPU instance
        /// has exactly one).
        #[arg(long, requires = "gi")]
        ci: Option<u32>,
        /// Process id.
        #[arg(long)]
        pid: u32,
        /// Device memory it holds, e.g. 3GiB.
        #[arg(long)]
        used: String,
        /// SM utilisation it causes, percent.
        #[arg(long, default_value_t = 0)]
        util: u32,
        /// Kind of context (mps: an MPS client).
        #[arg(long, value_enum, default_value = "compute")]
        kind: Kind,
        /// The MPS server's pid, for the first MPS client of the GPU.
        #[arg(long)]
        server_pid: Option<u32>,
    },
    /// End a process's contexts (every GPU, or one); an MPS server takes its clients.
    Remove {
        /// Process id.
        #[arg(long)]
        pid: u32,
        /// Only on this GPU.
        #[arg(long)]
        gpu: Option<u32>,
    },
    /// Print the processes as JSON (every GPU, or one).
    List {
        /// GPU index.
        #[arg(long)]
        gpu: Option<u32>,
    },
}

#[derive(Debug, Subcommand)]
enum MpsCommand {
    /// A fatal fault in the GPU's MPS server: its clients are hit and it
    /// refuses new ones until they have all exited.
    Fault {
        /// GPU index.
        #[arg(long)]
        gpu: u32,
    },
    /// Print the GPU's MPS server as JSON (null when none runs).
    Status {
        /// GPU index.
        #[arg(long)]
        gpu: u32,
    },
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Processes using the GPUs.
    #[command(subcommand)]
    Process(ProcessCommand),
    /// The GPUs' MPS servers.
    #[command(subcommand)]
    Mps(MpsCommand),
    /// Print every GPU's state as JSON.
    Status,
    /// Reset GPUs (all, or one): pending MIG modes apply, MIG instances are gone.
    Reset {
        /// GPU index.
        #[arg(long)]
        gpu: Option<u32>,
    },
    /// Reboot the host: every GPU reset and back on the bus; on Hopper and
    /// later the MIG mode itself is lost.
    Reboot,
    /// Pin telemetry values (until `--clear`).
    Set {
        /// GPU index.
        #[arg(long)]
        gpu: u32,
        /// Memory used by processes, e.g. 6GiB.
        #[arg(long)]
        memory_used: Option<String>,
        /// GPU utilisation, percent.
        #[arg(long)]
        util: Option<u32>,
        /// Memory utilisation, percent.
        #[arg(long)]
        memory_util: Option<u32>,
        /// Temperature, °C.
        #[arg(long)]
        temperature: Option<u32>,
        /// Power draw, watts.
        #[arg(long)]
        power: Option<f64>,
        /// Fan speed, percent.
        #[arg(long)]
        fan: Option<u32>,
        /// Drop every pinned value first (back to the YAML values).
        #[arg(long)]
        clear: bool,
    },
    /// Make a GPU fall off the bus (calls on it return GPU_IS_LOST).
    Lose {
        /// GPU index.
        #[arg(long)]
        gpu: u32,
    },
    /// Bring a lost GPU back (it comes back reset, unless --keep-layout).
    Restore {
        /// GPU index.
        #[arg(long)]
        gpu: u32,
        /// Keep the MIG layout instead of resetting the GPU.
        #[arg(long)]
        keep_layout: bool,
    },
    /// Set the pending MIG mode (applied by the next reset).
    MigMode {
        /// GPU index.
        #[arg(long)]
        gpu: u32,
        /// Mode.
        mode: Mode,
    },
    /// Create a GPU instance (and a compute instance spanning it, unless --no-ci).
    CreateGi {
        /// GPU index.
        #[arg(long)]
        gpu: u32,
        /// Profile name (3g.20gb) or id (9).
        #[arg(long)]
        profile: String,
        /// First memory slice (default: the driver's choice).
        #[arg(long)]
        placement: Option<u32>,
        /// Do not create the compute instance.
        #[arg(long)]
        no_ci: bool,
    },
    /// Create a compute instance in a GPU instance.
    CreateCi {
        /// GPU index.
        #[arg(long)]
        gpu: u32,
        /// GPU-instance id.
        #[arg(long)]
        gi: u32,
        /// Compute-instance profile name (1c.3g.20gb, 3g.20gb) or id.
        #[arg(long)]
        profile: String,
    },
    /// Destroy a GPU instance.
    DestroyGi {
        /// GPU index.
        #[arg(long)]
        gpu: u32,
        /// GPU-instance id.
        #[arg(long)]
        gi: u32,
        /// Destroy its compute instances first.
        #[arg(long)]
        with_cis: bool,
    },
    /// Destroy a compute instance.
    DestroyCi {
        /// GPU index.
        #[arg(long)]
        gpu: u32,
        /// GPU-instance id.
        #[arg(long)]
        gi: u32,
        /// Compute-instance id.
        #[arg(long)]
        ci: u32,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nvml-simctl: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn open(cli: &Cli) -> Result<Simulator> {
    let config = cli
        .config
        .as_ref()
        .ok_or_else(|| anyhow!("no host description: pass --config or set {ENV_CONFIG}"))?;
    Simulator::open(config, cli.state.clone()).map_err(Into::into)
}

fn mig_spec(sim: &Simulator, gpu: u32) -> Result<&nvml_sim::config::MigSpec> {
    let cfg = sim
        .config()
        .gpus
        .get(gpu as usize)
        .ok_or_else(|| anyhow!("GPU {gpu} does not exist"))?;
    cfg.mig()
        .ok_or_else(|| anyhow!("GPU {gpu} ({}) has no MIG", cfg.card.name))
}

fn run(cli: Cli) -> Result<()> {
    let mut sim = open(&cli)?;
    match cli.command {
        Command::Status => {
            let status = sim.status(SystemTime::now())?;
            println!("{}", serde_json::to_string_pretty(&status)?);
        }
        Command::Reset { gpu: Some(gpu) } => sim.reset_gpu(gpu)?,
        Command::Reset { gpu: None } => {
            for gpu in 0..sim.config().gpus.len() as u32 {
                sim.reset_gpu(gpu)?;
            }
        }
        Command::Reboot => sim.reboot()?,
        Command::Set {
            gpu,
            memory_used,
            util,
            memory_util,
            temperature,
            power,
            fan,
            clear,
        } => {
            let memory_used = memory_used
                .map(|s| parse_size(&s).map_err(|e| anyhow!("--memory-used: {e}")))
                .transpose()?;
            let power_mw = match power {
                Some(w) if w.is_finite() && w >= 0.0 => Some((w * 1000.0).round() as u32),
                Some(w) => bail!("--power {w}: watts must be a non-negative number"),
                None => None,
            };
            sim.set_telemetry(
                gpu,
                &TelemetryUpdate {
                    clear,
                    memory_used,
                    gpu_util: util,
                    memory_util,
                    temperature_c: temperature,
                    power_mw,
                    fan_percent: fan,
                },
            )?;
        }
        Command::Lose { gpu } => sim.lose(gpu)?,
        Command::Restore { gpu, keep_layout } => sim.restore(gpu, keep_layout)?,
        Command::MigMode { gpu, mode } => {
            sim.set_mig_mode(gpu, matches!(mode, Mode::Enable))?;
        }
        Command::CreateGi {
            gpu,
            profile,
            placement,
            no_ci,
        } => {
            let spec = mig_spec(&sim, gpu)?;
            let p = match profile.parse::<u32>() {
                Ok(id) => spec.gi_profile_by_id(id),
                Err(_) => spec.gi_profile_by_name(&profile),
            }
            .ok_or_else(|| anyhow!("GPU {gpu} has no GPU-instance profile `{profile}`"))?;
            let (profile_id, size) = (p.id, p.placements.size);
            let placement = placement.map(|start| Placement { start, size });
            let gi = sim
                .create_gpu_instance(gpu, profile_id, placement, !no_ci)
                .with_context(|| format!("creating a {profile} GPU instance"))?;
            println!("{}", serde_json::json!({ "gpu": gpu, "gpu_instance": gi }));
        }
        Command::CreateCi { gpu, gi, profile } => {
            let ci_profile_id = {
                let spec = mig_spec(&sim, gpu)?.clone();
                let spec = &spec;
                match profile.parse::<u32>() {
                    Ok(id) => id,
                    Err(_) => {
                        let (_, state) = sim.snapshot()?;
                        let gi_state = state.gpus[gpu as usize]
                            .gi(gi)
                            .ok_or_else(|| anyhow!("GPU {gpu} has no GPU instance {gi}"))?;
                        let gi_profile = spec
                            .gi_profile_by_id(gi_state.profile_id)
                            .ok_or_else(|| anyhow!("GPU instance {gi} has an unknown profile"))?;
                        let wanted = profile.strip_prefix("MIG ").unwrap_or(&profile);
                        spec.compute_instance_profiles
                            .iter()
                            .filter_map(|c| mig::ci_profile_by_id(spec, gi_profile, c.id))
                            .find(|v| v.name == wanted)
                            .map(|v| v.id)
                            .ok_or_else(|| {
                                anyhow!("GPU instance {gi} offers no compute profile `{profile}`")
                            })?
                    }
                }
            };
            let ci = sim.create_compute_instance(gpu, gi, ci_profile_id)?;
            println!(
                "{}",
                serde_json::json!({ "gpu": gpu, "gpu_instance": gi, "compute_instance": ci })
            );
        }
        Command::Process(ProcessCommand::Add {
            gpu,
            gi,
            ci,
            pid,
            used,
            util,
            kind,
            server_pid,
        }) => {
            let used = parse_size(&used).map_err(|e| anyhow!("--used: {e}"))?;
            let kind = match kind {
                Kind::Compute => ProcessKind::Compute,
                Kind::Graphics => ProcessKind::Graphics,
                Kind::Mps => ProcessKind::Mps,
            };
            if server_pid.is_some() && kind != ProcessKind::Mps {
                bail!("--server-pid is for MPS clients (--kind mps)");
            }
            let instance = match (gi, ci) {
                (Some(gi), Some(ci)) => Some((gi, ci)),
                (Some(gi), None) => {
                    let (config, state) = sim.snapshot()?;
                    let gpu_state = state.gpus.get(gpu as usize).ok_or_else(|| {
                        anyhow!(
                            "GPU {gpu} does not exist: the host has {} GPU(s)",
                            config.gpus.len()
                        )
                    })?;
                    let cis: Vec<u32> = gpu_state
                        .gi(gi)
                        .map(|g| g.compute_instances.iter().map(|c| c.id).collect())
                        .unwrap_or_default();
                    match cis.as_slice() {
                        [only] => Some((gi, *only)),
                        [] => bail!("GPU {gpu} has no GPU instance {gi} with a compute instance"),
                        _ => bail!(
                            "GPU instance {gi} has {} compute instances: give --ci",
                            cis.len()
                        ),
                    }
                }
                _ => None,
            };
            sim.add_process(
                gpu,
                &NewProcess {
                    pid,
                    kind,
                    instance,
                    used,
                    util,
                    server_pid,
                },
            )?;
        }
        Command::Process(ProcessCommand::Remove { pid, gpu }) => {
            let left = sim.remove_process(pid, gpu)?;
            println!("{}", serde_json::json!({ "pid": pid, "gpus": left }));
        }
        Command::Process(ProcessCommand::List { gpu }) => {
            let count = sim.config().gpus.len() as u32;
            let mut all = Vec::new();
            for index in (0..count).filter(|i| gpu.is_none_or(|g| g == *i)) {
                all.push(serde_json::json!({ "gpu": index, "processes": sim.processes(index)? }));
            }
            if let Some(g) = gpu.filter(|g| *g >= count) {
                bail!("GPU {g} does not exist: the host has {count} GPU(s)");
            }
            println!("{}", serde_json::to_string_pretty(&all)?);
        }
        Command::Mps(MpsCommand::Fault { gpu }) => sim.mps_fault(gpu)?,
        Command::Mps(MpsCommand::Status { gpu }) => {
            println!("{}", serde_json::to_string_pretty(&sim.mps_status(gpu)?)?);
        }
        Command::DestroyGi { gpu, gi, with_cis } => sim.destroy_gpu_instance(gpu, gi, with_cis)?,
        Command::DestroyCi { gpu, gi, ci } => sim.destroy_compute_instance(gpu, gi, ci)?,
    }
    Ok(())
}
