//! The command line: one clap struct per verb. Behaviour lives in
//! `commands/<verb>.rs` and the libraries they call.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::output::{ColorChoice, Format};

/// Operate the GPU-aware agent orchestrator.
///
/// Talks to the local `orchestratord` over its control socket, or works on
/// config files directly (`config`, `export`, `plan`).
#[derive(Debug, Parser)]
#[command(name = "orchestratorctl", version, propagate_version = true)]
#[command(
    after_help = "Exit codes: 0 ok (also when standard output is closed early, \
as by `| head`), 1 failed (a --wait: a required agent crash-loops), 2 usage, \
3 invalid config, 4 daemon unreachable (or a followed stream cut), 5 not found, \
6 --wait timed out, 7 a GPU request cannot be placed (plan, or a --wait), \
8 config diff: applying would change something."
)]
pub struct Cli {
    /// Output format: tables for people, JSON or YAML for scripts.
    #[arg(
        short = 'o',
        long = "output",
        global = true,
        value_enum,
        default_value = "table"
    )]
    pub output: Format,
    /// When to use colour (`auto`: on a terminal, unless NO_COLOR is set).
    #[arg(long, global = true, value_enum, default_value = "auto")]
    pub color: ColorChoice,
    /// The daemon's control socket (default: the config's `control.socket`).
    #[arg(long, global = true, env = "ORCHESTRATOR_SOCKET")]
    pub socket: Option<PathBuf>,
    /// A host config whose `control.socket` names the socket.
    #[arg(
        long = "config",
        global = true,
        env = "ORCH_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,
    /// Send the command to this host, through the local daemon and the
    /// federation (default: the local daemon's own host).
    #[arg(long, global = true, value_name = "NAME")]
    pub host: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The daemon, Docker, GPUs and every group at a glance.
    Status {
        #[command(flatten)]
        fleet: FleetArgs,
    },
    /// Every group with its state.
    Groups {
        #[command(flatten)]
        fleet: FleetArgs,
    },
    /// Start, stop or restart a group (and, for start, what it depends on).
    #[command(subcommand)]
    Group(GroupCmd),
    /// Every agent replica: phase, health, restarts, GPU slice.
    Agents {
        /// Only this group's agents.
        #[arg(long)]
        group: Option<String>,
        #[command(flatten)]
        fleet: FleetArgs,
    },
    /// A live view of the agents' CPU, GPU memory, GPU utilisation and
    /// health, grouped per GPU (keys: q quit, m memory, g GPU util, c CPU,
    /// n name, h health, r reverse). Without a terminal, a plain table
    /// every interval.
    Top {
        /// Every host of the federation, each peer from its latest snapshot.
        #[arg(long)]
        all_hosts: bool,
        /// What the rows are ordered by.
        #[arg(long, value_enum, default_value = "mem")]
        sort: crate::top::model::SortKey,
        /// Seconds between two reads when no event comes (also the
        /// plain table's period).
        #[arg(long, value_name = "SECS", default_value = "2", value_parser = interval_secs)]
        interval: std::time::Duration,
        /// Print the table once and exit (for scripts).
        #[arg(long)]
        once: bool,
    },
    /// Act on one agent.
    #[command(subcommand)]
    Agent(AgentCmd),
    /// Set an agent's replica count at run time, kept across daemon
    /// restarts until `--reset` or an apply that changes its `replicas`.
    Scale {
        /// GROUP/AGENT, or AGENT when no other group has an agent of that name.
        target: String,
        /// The replica count (within the agent's autoscale bounds).
        #[arg(required_unless_present = "reset", conflicts_with = "reset")]
        replicas: Option<u32>,
        /// Back to the config file's count.
        #[arg(long)]
        reset: bool,
    },
    /// An agent's container output.
    Logs {
        /// GROUP/AGENT, or AGENT when no other group has an agent of that name.
        target: String,
        /// Keep following new output.
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<u64>,
        /// Which replica.
        #[arg(long, default_value_t = 0)]
        replica: u32,
        /// Only output since this long ago (`10m`, `1h30m`) or this time
        /// (RFC 3339, `2026-12-02T06:42:54Z`, or Unix seconds).
        #[arg(long, value_name = "DURATION|TIME")]
        since: Option<String>,
        /// Start each line with its time (RFC 3339, as Docker gives it).
        #[arg(short = 't', long)]
        timestamps: bool,
    },
    /// What the daemon did, oldest first.
    Events {
        /// Keep following new events.
        #[arg(short, long)]
        follow: bool,
        /// Start from this event number (of each host, with --all-hosts).
        #[arg(long, default_value_t = 0)]
        since: u64,
        /// Every host of the federation; each line names its host.
        #[arg(long)]
        all_hosts: bool,
        /// Only events about this group.
        #[arg(long)]
        group: Option<String>,
        /// Only events about this agent (AGENT or GROUP/AGENT).
        #[arg(long)]
        agent: Option<String>,
        /// Only events of these kinds (`agent-crash-loop`, `agent-*`), comma-separated or repeated.
        #[arg(long, value_delimiter = ',')]
        kind: Vec<String>,
    },
    /// Install a config on the daemon and apply it: only changed agents restart.
    Apply {
        /// The config file; with --all-hosts, a directory holding
        /// HOST/startup_config.yaml for each host.
        file: PathBuf,
        #[command(flatten)]
        load: LoadArgs,
        /// Apply even if a GPU request cannot be placed on the host's GPUs
        /// (without it such a config is refused with exit code 7).
        #[arg(long)]
        force: bool,
        /// Wait until the rollout ends: exit 0 when it completed, 9 when it
        /// was rolled back, 10 when it is paused, 6 when time ran out.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this long (exit code 6): `90`, `30s`, `5m`.
        /// Implies --wait.
        #[arg(long, value_name = "DURATION", value_parser = parse_timeout)]
        timeout: Option<std::time::Duration>,
        /// Roll out host by host (this one, then its peers by name), each
        /// waited for; stop at the first host whose rollout does not
        /// complete.
        #[arg(long)]
        all_hosts: bool,
    },
    /// The rollout of a changed config: status, pause, resume, undo.
    #[command(subcommand)]
    Rollout(RolloutCmd),
    /// Make the daemon re-read its config file (like SIGHUP).
    Reload,
    /// GPUs: inventory, slices and their owners, free capacity.
    Gpu {
        #[command(subcommand)]
        command: Option<GpuCmd>,
        #[command(flatten)]
        fleet: FleetArgs,
        /// NVML library to read when no daemon runs (default: ORCH_NVML_LIBRARY, then the system's).
        #[arg(long, global = true, value_name = "PATH")]
        nvml: Option<PathBuf>,
    },
    /// Which agent would get which GPU slice for a config, and which MIG
    /// instances would be made (exit code 7 when something cannot be placed).
    ///
    /// With --all-hosts: which hosts of the federation the config, or one
    /// agent of it, would fit on and with which slice, each host planned
    /// on its latest GPU report (exit code 7 when it fits on none). Advice
    /// only: `apply --host HOST` moves agents.
    Plan {
        /// The config to plan; with --all-hosts it may be left out: the
        /// daemon's running config.
        #[arg(required_unless_present = "all_hosts")]
        file: Option<PathBuf>,
        /// Plan on this host's GPUs even when a daemon runs.
        #[arg(long, conflicts_with = "all_hosts")]
        offline: bool,
        /// Where in the federation it would fit: this host from its live
        /// inventory, each peer from its latest snapshot.
        #[arg(long)]
        all_hosts: bool,
        /// With --all-hosts, only this agent's replicas (GROUP/AGENT, or
        /// AGENT when no other group has an agent of that name).
        #[arg(long, requires = "all_hosts", value_name = "GROUP/AGENT")]
        agent: Option<String>,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Service-level objectives: burn rate per window and error budget
    /// left, per group with an `slo:`.
    Slo {
        /// Only this group.
        group: Option<String>,
        #[command(flatten)]
        fleet: FleetArgs,
    },
    /// Validate, show, diff or convert a startup_config.yaml.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Write a config as a Docker Compose file or Kubernetes manifests.
    #[command(subcommand)]
    Export(ExportCmd),
    /// The federation's peers: state, incarnation, heartbeat and snapshot
    /// ages, messages in and out, decode errors.
    Peers,
    /// Federation keys.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// The config generations the daemon keeps, newest first: when and by
    /// whom each was applied, how (startup, apply, reload, rollback,
    /// undo), what it changed and how its rollout ended.
    History,
    /// Back up, move or restore the daemon's desired state (which groups
    /// are started, the config generation, the MIG instances that are ours).
    #[command(subcommand)]
    State(StateCmd),
    /// Print a shell completion script.
    Completion(CompletionArgs),
    /// Man pages: the program's on standard output, or every verb's into --dir.
    Man(ManArgs),
}

/// Every host of the federation, from the latest snapshots.
#[derive(Debug, Clone, Copy, Args)]
pub struct FleetArgs {
    /// Every host of the federation, each with its state and the age of
    /// what is shown (a host that is down shows its last known state).
    #[arg(long)]
    pub all_hosts: bool,
}

#[derive(Debug, Subcommand)]
pub enum KeysCmd {
    /// Make a CURVE key pair for a host: `<HOST>.key` (secret, mode 0600)
    /// and `<HOST>.pub` (its public key, for the peers' configs).
    Generate {
        /// The host the keys are for.
        host: String,
        /// Where to write them.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Make a host's next key pair beside its current one
    /// (`<HOST>.next.key`, `<HOST>.next.pub`) and print how to change
    /// keys without downtime.
    Rotate {
        /// The host whose keys change.
        host: String,
        /// Where its current pair is (`<HOST>.key`).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Debug, Clone, Args)]
pub struct GroupArgs {
    pub name: String,
    /// Wait until the group is ready (or stopped), showing progress.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this long (exit code 6): `90`, `30s`, `5m`.
    /// Implies --wait.
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout)]
    pub timeout: Option<std::time::Duration>,
}

/// A timeout: a duration as the config writes them (`30s`, `1m30s`,
/// `500ms`), or a bare number of seconds.
fn parse_timeout(text: &str) -> Result<std::time::Duration, String> {
    if let Ok(secs) = text.trim().parse::<u64>() {
        return Ok(std::time::Duration::from_secs(secs));
    }
    orch_core::units::Duration::parse(text)
        .map(|d| d.std())
        .map_err(|e| format!("{e} (write e.g. `90`, `30s`, `5m`)"))
}

#[derive(Debug, Subcommand)]
pub enum GroupCmd {
    /// Start a group and the groups it depends on, in dependency order.
    Start(GroupArgs),
    /// Stop a group's agents in reverse dependency order.
    Stop {
        #[command(flatten)]
        args: GroupArgs,
        /// Also stop started groups that depend on this one.
        #[arg(long)]
        with_dependents: bool,
    },
    /// Stop a group and start it again (and, if asked, the started groups
    /// that depend on it, which go down first and come back after it).
    Restart {
        #[command(flatten)]
        args: GroupArgs,
        /// Also restart started groups that depend on this one.
        #[arg(long)]
        with_dependents: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum RolloutCmd {
    /// The current (or last) rollout: its generation, phase, the failed
    /// step if one failed, and each agent's replicas done.
    Status {
        /// Wait until it ends (exit codes as `apply --wait`).
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this long (exit code 6). Implies --wait.
        #[arg(long, value_name = "DURATION", value_parser = parse_timeout)]
        timeout: Option<std::time::Duration>,
    },
    /// No further step starts (the steps under way finish).
    Pause,
    /// A paused rollout goes on (a failed step's replica is watched again).
    Resume,
    /// Roll out an earlier generation's config: by default the last one
    /// that completed before the running one (`orchestratorctl history`).
    Undo {
        #[arg(long, value_name = "GENERATION")]
        to: Option<u64>,
        /// Wait until its rollout ends.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this long (exit code 6). Implies --wait.
        #[arg(long, value_name = "DURATION", value_parser = parse_timeout)]
        timeout: Option<std::time::Duration>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AgentCmd {
    /// Restart an agent's replicas one at a time.
    Restart {
        /// GROUP/AGENT
        target: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum GpuCmd {
    /// Change a GPU's MIG mode (pending until the GPU is reset).
    Mig {
        #[command(subcommand)]
        action: MigAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum MigAction {
    /// Turn MIG on.
    Enable(MigArgs),
    /// Turn MIG off.
    Disable(MigArgs),
}

#[derive(Debug, Args)]
pub struct MigArgs {
    /// The GPU index.
    #[arg(long)]
    pub gpu: u32,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
}

/// How a legacy file is read (it names no host and uses `${PORT_OFFSET}`).
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Host name for a legacy file (default: the directory holding it).
    #[arg(long = "host-name", value_name = "NAME")]
    pub host_name: Option<String>,
    /// Value of `${PORT_OFFSET}` in legacy port expressions.
    #[arg(
        long,
        env = "PORT_OFFSET",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub port_offset: i64,
    /// Image for legacy agents that only name a script. Placeholders:
    /// {agent}, {agent_lower}, {group}, {script_stem}.
    #[arg(long, value_name = "TEMPLATE", default_value = orch_config::DEFAULT_IMAGE_TEMPLATE)]
    pub image_template: String,
}

impl LoadArgs {
    pub fn options(&self) -> orch_config::LoadOptions {
        orch_config::LoadOptions {
            host_name: self.host_name.clone(),
            port_offset: self.port_offset,
            image_template: self.image_template.clone(),
            ..orch_config::LoadOptions::default()
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Check config files; print every problem with file, line and column.
    ///
    /// A legacy file (agent_groups / pc2_services) is recognised by its
    /// shape and checked as its import would read it.
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        load: LoadArgs,
        /// Treat warnings as errors.
        #[arg(long)]
        strict: bool,
    },
    /// Show what a config means: groups, agents, images, ports, GPU requests.
    Show {
        file: PathBuf,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// What an apply would change, agent by agent and field by field
    /// (image, env, replicas, GPU request, ports, ...), and the replica
    /// counts set at run time it keeps or replaces.
    ///
    /// No FILE: the daemon's config file on disk against what runs (what
    /// `reload` would apply). FILE: that file against what runs. OLD NEW,
    /// or with --offline: two files, no daemon. Exit code 0: no changes;
    /// 8: changes.
    Diff {
        #[arg(num_args = 0..=2, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Compare two files here, without asking a daemon.
        #[arg(long)]
        offline: bool,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Write a config (legacy or v1) as version 1.
    Convert {
        file: PathBuf,
        /// Write to this file instead of standard output.
        #[arg(long, value_name = "PATH")]
        write: Option<PathBuf>,
        #[command(flatten)]
        load: LoadArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum StateCmd {
    /// Print the desired state as a versioned JSON document
    /// (`orchestratorctl state export > FILE`).
    Export,
    /// Replace the desired state with FILE's, whole, on the running daemon:
    /// groups it names start, started groups it does not name stop.
    Import { file: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum ExportCmd {
    /// A Docker Compose file for one host.
    Compose(ExportArgs),
    /// Kubernetes Deployments and Services.
    K8s(ExportArgs),
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    pub file: PathBuf,
    /// Export only these groups (and the groups they depend on).
    #[arg(long = "group", value_name = "GROUP")]
    pub groups: Vec<String>,
    /// Write to this file instead of standard output.
    #[arg(long, value_name = "PATH")]
    pub write: Option<PathBuf>,
    #[command(flatten)]
    pub load: LoadArgs,
}

#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// bash, zsh, fish, elvish or powershell.
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write every page (the program's and one per verb) into this
    /// directory; without it, the program's page goes to standard output.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// `top --interval`: seconds, from 0.25 (four reads a second) to an hour.
fn interval_secs(s: &str) -> Result<std::time::Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !(0.25..=3600.0).contains(&secs) {
        return Err(format!("{s}s is outside 0.25 to 3600 seconds"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}
