//! The host configuration model: what one `startup_config.yaml` means once
//! parsed, defaults merged and references checked.
//!
//! Architecture invariant: a `HostConfig` that exists has passed validation.
//! Agent names are unique on a host, every `depends_on` names something that
//! exists, the dependency graph is acyclic. Code that consumes the model may
//! rely on that and does not re-check it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::gpu::GpuRequest;
use crate::units::{ByteSize, Duration, Percent};

/// Everything one daemon needs to know about its host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostConfig {
    pub host: HostInfo,
    /// The defaults as written; agents already have them merged in. Kept so
    /// that a writer can emit the same defaults back.
    pub defaults: AgentDefaults,
    pub gpus: Vec<GpuPolicy>,
    /// Groups in declaration order.
    pub groups: Vec<Group>,
    pub runtime: RuntimeSettings,
    pub federation: Option<Federation>,
    pub metrics: MetricsSettings,
    pub control: ControlSettings,
    /// Secret files of the host by name (`secrets:`): the path, never the value.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
}

/// One `depends_on` entry: an agent or group of this host (a bare name),
/// or of another host of the federation (`HOST/AGENT`, `HOST/group:NAME`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dep<'a> {
    Local(&'a str),
    RemoteAgent { host: &'a str, agent: &'a str },
    RemoteGroup { host: &'a str, group: &'a str },
}

/// Why a `depends_on` entry does not read (its words are the config
/// diagnostics').
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DepError {
    /// Not `HOST/AGENT` or `HOST/group:NAME`.
    Malformed { entry: String },
    /// `HOST/group:` with no name.
    NoGroup { entry: String },
}

impl<'a> Dep<'a> {
    /// Reads an entry; `Err` says why a remote one is malformed.
    pub fn parse(entry: &'a str) -> Result<Dep<'a>, DepError> {
        let Some((host, rest)) = entry.split_once('/') else {
            return Ok(Dep::Local(entry));
        };
        if host.is_empty() || rest.is_empty() || rest.contains('/') {
            return Err(DepError::Malformed {
                entry: entry.to_string(),
            });
        }
        Ok(match rest.strip_prefix("group:") {
            Some("") => {
                return Err(DepError::NoGroup {
                    entry: entry.to_string(),
                });
            }
            Some(group) => Dep::RemoteGroup { host, group },
            None => Dep::RemoteAgent { host, agent: rest },
        })
    }

    /// The local name, for a local entry.
    pub fn local(entry: &'a str) -> Option<&'a str> {
        match Dep::parse(entry) {
            Ok(Dep::Local(n)) => Some(n),
            _ => None,
        }
    }
}

impl HostConfig {
    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }

    pub fn agents(&self) -> impl Iterator<Item = &Agent> {
        self.groups.iter().flat_map(|g| g.agents.iter())
    }

    pub fn agent(&self, name: &str) -> Option<&Agent> {
        self.agents().find(|a| a.name == name)
    }

    pub fn agent_count(&self) -> usize {
        self.groups.iter().map(|g| g.agents.len()).sum()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// A set of agents started and stopped together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub name: String,
    pub description: Option<String>,
    /// Groups that must be running (and healthy) before this one starts.
    pub depends_on: Vec<String>,
    pub slo: Option<Slo>,
    /// How a changed config reaches the group's agents.
    #[serde(default)]
    pub rollout: Rollout,
    /// How long every required replica must have been healthy before the
    /// group counts as ready (for its dependents, a `--wait`, a rollout's
    /// next step).
    #[serde(default = "default_min_healthy")]
    pub min_healthy: Duration,
    /// Agents in declaration order.
    pub agents: Vec<Agent>,
}

/// The builtin `min_healthy`.
pub const DEFAULT_MIN_HEALTHY: Duration = Duration::from_secs(5);

fn default_min_healthy() -> Duration {
    DEFAULT_MIN_HEALTHY
}

/// Service-level objectives of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slo {
    pub availability: Option<Percent>,
    pub latency_p99: Option<Duration>,
    pub error_rate: Option<Percent>,
    /// The rolling window the objectives are measured over.
    pub window: Duration,
}

/// One agent service: a container image plus how to run and watch it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    pub name: String,
    pub group: String,
    pub image: String,
    /// Overrides the image's command when set.
    pub command: Option<Vec<String>>,
    pub env: BTreeMap<String, String>,
    pub ports: Vec<PortMapping>,
    pub volumes: Vec<VolumeMount>,
    /// Agents (by name, on this host) that must be healthy before this one starts.
    pub depends_on: Vec<String>,
    pub gpu: Option<GpuRequest>,
    pub restart: RestartPolicy,
    pub health: HealthCheck,
    pub resources: Resources,
    pub security: Security,
    pub replicas: u32,
    /// An optional agent (`required: false`) never holds its dependents: if
    /// it cannot run, they start without it.
    pub required: bool,
    pub labels: BTreeMap<String, String>,
    pub stop_timeout: Duration,
    /// Free-form agent configuration, delivered as JSON in `ORCH_AGENT_CONFIG`.
    pub config: Option<serde_json::Value>,
    /// The script a generic runner image executes, delivered in `ORCH_SCRIPT_PATH`.
    pub script_path: Option<String>,
    /// Host secrets given to the agent, in the order written.
    #[serde(default)]
    pub secrets: Vec<SecretMount>,
    /// Elastic replica count; `replicas` is then the count to start with.
    #[serde(default)]
    pub autoscale: Option<Autoscale>,
    /// What happens when the agent's measured GPU memory exceeds its share
    /// (`gpu.over_limit`). A supervision setting: not in the config hash.
    #[serde(default)]
    pub gpu_over_limit: OverLimit,
}

impl Agent {
    /// The most replicas the agent can have: `autoscale.max`, else `replicas`.
    pub fn max_replicas(&self) -> u32 {
        self.autoscale
            .as_ref()
            .map_or(self.replicas, |a| a.max.max(self.replicas))
    }
}

/// A secret file of the host given to an agent: mounted read-only at
/// `/run/secrets/<name>` and announced as `<name>_FILE`. Only the path is
/// known here; the value is read by the agent alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretMount {
    pub name: String,
    /// The file on the host.
    pub source: String,
}

/// Where secrets are mounted in a container, as Docker secrets are.
pub const SECRETS_DIR: &str = "/run/secrets";

impl SecretMount {
    /// The path of the secret inside the container.
    pub fn target(&self) -> String {
        format!("{SECRETS_DIR}/{}", self.name)
    }

    /// The variable that names the file (`<NAME>_FILE`).
    pub fn env_name(&self) -> String {
        format!("{}_FILE", self.name)
    }
}

/// A secret name becomes an environment variable name (`<NAME>_FILE`) and
/// a file name: letters, digits and `_`, not starting with a digit, and not
/// in the orchestrator's `ORCH_` namespace.
pub fn valid_secret_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("ORCH_")
        && name.len() <= 64
}

/// The `defaults:` section, merged under every agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentDefaults {
    pub image: Option<String>,
    pub env: BTreeMap<String, String>,
    pub restart: RestartPolicy,
    pub health: HealthCheck,
    pub resources: Resources,
    pub security: Security,
    pub labels: BTreeMap<String, String>,
    pub stop_timeout: Duration,
    /// The rollout of every group that sets none of its own (merged field
    /// by field under a group's `rollout:`).
    #[serde(default)]
    pub rollout: Rollout,
    /// The `min_healthy` of every group that sets none.
    #[serde(default = "default_min_healthy")]
    pub min_healthy: Duration,
    /// The `gpu.over_limit` of every agent that sets none
    /// (`defaults: {gpu: {over_limit: ...}}`).
    #[serde(default)]
    pub gpu_over_limit: OverLimit,
}

impl Default for AgentDefaults {
    fn default() -> Self {
        AgentDefaults {
            image: None,
            env: BTreeMap::new(),
            restart: RestartPolicy::default(),
            health: HealthCheck::default(),
            resources: Resources::default(),
            security: Security::default(),
            labels: BTreeMap::new(),
            stop_timeout: Duration::from_secs(10),
            rollout: Rollout::default(),
            min_healthy: DEFAULT_MIN_HEALTHY,
            gpu_over_limit: OverLimit::Warn,
        }
    }
}

/// A number of replicas, written as a count (`1`) or a share of the
/// agent's replicas (`25%`), as Kubernetes' `maxSurge` / `maxUnavailable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Amount {
    Count(u32),
    Share(Percent),
}

impl Amount {
    /// The count for `replicas`, a share rounded up (a surge).
    pub fn rounded_up(self, replicas: u32) -> u32 {
        match self {
            Amount::Count(n) => n,
            Amount::Share(p) => {
                (u64::from(replicas) * u64::from(p.basis_points())).div_ceil(10_000) as u32
            }
        }
    }

    /// The count for `replicas`, a share rounded down (unavailability).
    pub fn rounded_down(self, replicas: u32) -> u32 {
        match self {
            Amount::Count(n) => n,
            Amount::Share(p) => (u64::from(replicas) * u64::from(p.basis_points()) / 10_000) as u32,
        }
    }

    pub fn is_zero(self) -> bool {
        match self {
            Amount::Count(n) => n == 0,
            Amount::Share(p) => p.basis_points() == 0,
        }
    }
}

impl std::fmt::Display for Amount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Amount::Count(n) => write!(f, "{n}"),
            Amount::Share(p) => write!(f, "{p}"),
        }
    }
}

/// How a changed agent is replaced, replica by replica (`rollout:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rollout {
    /// After a step, how long its new replicas are watched (health, crash
    /// loops, SLO burn) before the next step.
    pub watch: Duration,
    /// Go back to the last good generation by itself when a step fails.
    pub auto_rollback: bool,
    /// Replicas that may be missing during a step (below `replicas`).
    pub max_unavailable: Amount,
    /// Replicas that may run beyond `replicas` during a step.
    pub max_surge: Amount,
    /// A new replica that is not healthy within this long fails its step.
    pub healthy_deadline: Duration,
}

impl Default for Rollout {
    fn default() -> Self {
        Rollout {
            watch: Duration::from_secs(30),
            auto_rollback: true,
            max_unavailable: Amount::Count(0),
            max_surge: Amount::Count(1),
            healthy_deadline: Duration::from_secs(300),
        }
    }
}

/// How many replicas one rollout step may add and take away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RolloutBudget {
    /// New replicas started beyond the wanted count before old ones stop.
    pub surge: u32,
    /// Old replicas stopped before their replacements are healthy.
    pub unavailable: u32,
    /// The surge is smaller than `max_surge` says because the agent's host
    /// ports have no spare port for an extra replica.
    pub limited_by_host_ports: bool,
}

impl Rollout {
    /// The budget of one step for an agent running `replicas` replicas.
    ///
    /// Shares round as Kubernetes rounds them: a surge up, unavailability
    /// down. An extra replica needs a host port of its own, so an agent
    /// publishing host ports surges at most by the spare ports of its
    /// ranges (none for a fixed port). When nothing may be added or taken
    /// away, one replica is taken away at a time, or no step could ever be
    /// made.
    pub fn budget(&self, agent: &Agent, replicas: u32) -> RolloutBudget {
        let wanted = self.max_surge.rounded_up(replicas);
        let spare = agent
            .ports
            .iter()
            .filter(|p| p.host_port.is_some())
            .map(|p| p.host_port_count().saturating_sub(replicas))
            .min();
        let surge = spare.map_or(wanted, |s| wanted.min(s));
        let mut unavailable = self.max_unavailable.rounded_down(replicas).min(replicas);
        if surge == 0 && unavailable == 0 {
            unavailable = 1;
        }
        RolloutBudget {
            surge,
            unavailable,
            limited_by_host_ports: surge < wanted,
        }
    }
}

/// What happens when an agent's measured GPU memory exceeds its share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OverLimit {
    /// An event and a metric; the agent keeps running.
    #[default]
    Warn,
    /// As `warn`, then the replica is restarted (its restart policy and
    /// backoff apply).
    Restart,
}

/// The replica cap of one agent.
pub const MAX_REPLICAS: u32 = 64;

/// Elastic replicas (`autoscale:`): HPA-like arithmetic over the signals
/// configured, between `min` and `max`. See `orch_core::autoscale`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Autoscale {
    pub min: u32,
    pub max: u32,
    /// Target mean CPU of the replicas, as a share of their CPU limit (of
    /// one core without a limit).
    pub cpu: Option<Percent>,
    /// Target mean GPU utilisation of the replicas' GPUs or slices.
    pub gpu_util: Option<Percent>,
    /// A gauge of the agent's own `/metrics`.
    pub metric: Option<MetricTarget>,
    /// Scale up while the group's latency SLO burns faster than the ticket
    /// threshold.
    pub latency_slo: bool,
    /// How long a signal must hold before a scale-up.
    pub up_after: Duration,
    /// How long a signal must hold before a scale-down.
    pub down_after: Duration,
    /// How long after a change a change in the other direction waits (the
    /// count changes direction at most once in this time).
    pub reverse_after: Duration,
}

impl Autoscale {
    pub const DEFAULT_UP_AFTER: Duration = Duration::from_secs(15);
    pub const DEFAULT_DOWN_AFTER: Duration = Duration::from_secs(300);
    pub const DEFAULT_REVERSE_AFTER: Duration = Duration::from_secs(300);

    /// Whether any signal is configured.
    pub fn has_signal(&self) -> bool {
        self.cpu.is_some() || self.gpu_util.is_some() || self.metric.is_some() || self.latency_slo
    }
}

/// A gauge target, as HPA's `AverageValue`: the agent is sized so that each
/// replica carries `per_replica`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricTarget {
    /// The Prometheus name of the gauge.
    pub name: String,
    pub per_replica: f64,
    /// Every replica reports the same figure (one shared queue): it is read
    /// once (the largest reading) instead of summed over the replicas.
    pub shared: bool,
}

/// Whether `name` is a valid Prometheus metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
pub fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    Tcp,
    Udp,
}

/// `[host_ip:]host_port:container_port[/proto]` or just `container_port`;
/// the host port may be a range (`8000-8009:8080`), one port per replica.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_ip: Option<String>,
    /// The host port, or the first of a range.
    pub host_port: Option<u16>,
    /// The last port of a host port range (inclusive): replica `i` publishes
    /// `host_port + i`. `None` for a single port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port_end: Option<u16>,
    pub container_port: u16,
    pub protocol: Protocol,
}

/// The longest host port range: the replica cap, and as many again for
/// rollouts that surge.
pub const MAX_HOST_PORT_RANGE: u32 = 2 * MAX_REPLICAS;

impl std::fmt::Display for PortMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(ip) = &self.host_ip {
            if ip.contains(':') {
                write!(f, "[{ip}]:")?;
            } else {
                write!(f, "{ip}:")?;
            }
        }
        if let Some(hp) = self.host_port {
            write!(f, "{hp}")?;
            if let Some(end) = self.host_port_end {
                write!(f, "-{end}")?;
            }
            f.write_str(":")?;
        }
        write!(f, "{}", self.container_port)?;
        if self.protocol == Protocol::Udp {
            f.write_str("/udp")?;
        }
        Ok(())
    }
}

/// Why a port mapping does not read (its words are the config
/// diagnostics').
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortError {
    Protocol {
        protocol: String,
    },
    Port {
        text: String,
    },
    Ip {
        text: String,
    },
    Shape {
        text: String,
    },
    /// `[v6-address` with no `]:` after it.
    UnclosedBracket {
        text: String,
    },
    /// A host port range whose end comes before its start.
    RangeBackwards {
        text: String,
        start: u16,
        end: u16,
    },
    /// A host port range longer than [`MAX_HOST_PORT_RANGE`].
    RangeTooLong {
        text: String,
        len: u32,
    },
    /// A range on the container side.
    ContainerRange {
        text: String,
    },
}

impl PortMapping {
    /// Parses the compose-style short form.
    pub fn parse(text: &str) -> Result<PortMapping, PortError> {
        let (body, protocol) = match text.rsplit_once('/') {
            Some((b, "tcp")) => (b, Protocol::Tcp),
            Some((b, "udp")) => (b, Protocol::Udp),
            Some((_, p)) => {
                return Err(PortError::Protocol {
                    protocol: p.to_string(),
                });
            }
            None => (text, Protocol::Tcp),
        };
        // An IPv6 address is written in brackets, as Compose writes it.
        let (bracketed_ip, body) = match body.strip_prefix('[') {
            Some(rest) => match rest.split_once("]:") {
                Some((ip, rest)) => (Some(ip), rest),
                None => {
                    return Err(PortError::UnclosedBracket {
                        text: text.to_string(),
                    });
                }
            },
            None => (None, body),
        };
        let mut parts: Vec<&str> = body.split(':').collect();
        if let Some(ip) = bracketed_ip {
            parts.insert(0, ip);
        }
        let port = |s: &str| -> Result<u16, PortError> {
            match s.parse::<u16>() {
                Ok(0) | Err(_) => Err(PortError::Port {
                    text: s.to_string(),
                }),
                Ok(p) => Ok(p),
            }
        };
        let host = |s: &str| -> Result<(u16, Option<u16>), PortError> {
            let Some((a, b)) = s.split_once('-') else {
                return Ok((port(s)?, None));
            };
            let (start, end) = (port(a)?, port(b)?);
            if end < start {
                return Err(PortError::RangeBackwards {
                    text: s.to_string(),
                    start,
                    end,
                });
            }
            let len = u32::from(end - start) + 1;
            if len > MAX_HOST_PORT_RANGE {
                return Err(PortError::RangeTooLong {
                    text: s.to_string(),
                    len,
                });
            }
            Ok((start, (end > start).then_some(end)))
        };
        let container = |s: &str| -> Result<u16, PortError> {
            if s.contains('-') {
                return Err(PortError::ContainerRange {
                    text: s.to_string(),
                });
            }
            port(s)
        };
        let (host_ip, (host_port, host_port_end), container_port) = match parts.as_slice() {
            [c] => (None, (None, None), container(c)?),
            [h, c] => {
                let (start, end) = host(h)?;
                (None, (Some(start), end), container(c)?)
            }
            [ip, h, c] => {
                if ip.parse::<std::net::IpAddr>().is_err() {
                    return Err(PortError::Ip {
                        text: (*ip).to_string(),
                    });
                }
                let (start, end) = host(h)?;
                (Some((*ip).to_string()), (Some(start), end), container(c)?)
            }
            _ => {
                return Err(PortError::Shape {
                    text: text.to_string(),
                });
            }
        };
        Ok(PortMapping {
            host_ip,
            host_port,
            host_port_end,
            container_port,
            protocol,
        })
    }

    /// How many host ports the mapping publishes: the range's length, 1
    /// for a single port, 0 for none.
    pub fn host_port_count(&self) -> u32 {
        match (self.host_port, self.host_port_end) {
            (None, _) => 0,
            (Some(_), None) => 1,
            (Some(start), Some(end)) => u32::from(end.saturating_sub(start)) + 1,
        }
    }

    /// The last host port (the port itself for a single one).
    pub fn last_host_port(&self) -> Option<u16> {
        self.host_port
            .map(|start| self.host_port_end.unwrap_or(start))
    }

    /// What replica `replica` publishes: its own port of a range, the port
    /// itself otherwise. `None` when the range has no port for it.
    pub fn for_replica(&self, replica: u32) -> Option<PortMapping> {
        let (Some(start), Some(_)) = (self.host_port, self.host_port_end) else {
            return Some(self.clone());
        };
        if replica >= self.host_port_count() {
            return None;
        }
        let port = u16::try_from(u32::from(start) + replica).ok()?;
        Some(PortMapping {
            host_port: Some(port),
            host_port_end: None,
            ..self.clone()
        })
    }
}

/// Why a volume does not read (its words are the config diagnostics').
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountError {
    Mode { mode: String },
    Shape { text: String },
    EmptySource,
    RelativeTarget { target: String },
}

/// `source:target[:ro]`; a source starting with `/` or `.` is a bind mount,
/// anything else a named volume.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VolumeMount {
    pub source: String,
    pub target: String,
    pub read_only: bool,
}

impl VolumeMount {
    pub fn is_bind(&self) -> bool {
        self.source.starts_with('/') || self.source.starts_with('.')
    }

    pub fn parse(text: &str) -> Result<VolumeMount, MountError> {
        let parts: Vec<&str> = text.split(':').collect();
        let (source, target, read_only) = match parts.as_slice() {
            [s, t] => (*s, *t, false),
            [s, t, "ro"] => (*s, *t, true),
            [s, t, "rw"] => (*s, *t, false),
            [_, _, m] => {
                return Err(MountError::Mode {
                    mode: (*m).to_string(),
                });
            }
            _ => {
                return Err(MountError::Shape {
                    text: text.to_string(),
                });
            }
        };
        if source.is_empty() {
            return Err(MountError::EmptySource);
        }
        if !target.starts_with('/') {
            return Err(MountError::RelativeTarget {
                target: target.to_string(),
            });
        }
        Ok(VolumeMount {
            source: source.to_string(),
            target: target.to_string(),
            read_only,
        })
    }
}

impl std::fmt::Display for VolumeMount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.source, self.target)?;
        if self.read_only {
            f.write_str(":ro")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartMode {
    /// Restart whenever the container stops, whatever its exit code.
    Always,
    /// Restart on a non-zero exit or when health checks fail.
    OnFailure,
    /// Never restart; a stopped agent stays stopped.
    Never,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestartPolicy {
    pub policy: RestartMode,
    pub backoff: Backoff,
    pub crashloop: CrashLoop,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            policy: RestartMode::OnFailure,
            backoff: Backoff::default(),
            crashloop: CrashLoop::default(),
        }
    }
}

/// Exponential backoff between restarts: `initial * multiplier^n`, capped
/// at `max`, each delay spread by up to `jitter` either way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub multiplier: f64,
    pub jitter: Percent,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(60),
            multiplier: 2.0,
            jitter: Percent::whole(10),
        }
    }
}

/// An agent that restarts `restarts` times within `window` is crash-looping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrashLoop {
    pub restarts: u32,
    pub window: Duration,
    /// How long a replica must stay healthy to count as stable again: its
    /// backoff resets and a crash loop ends. `None`: the backoff's cap.
    pub stable: Option<Duration>,
}

impl Default for CrashLoop {
    fn default() -> Self {
        CrashLoop {
            restarts: 5,
            window: Duration::from_secs(600),
            stable: None,
        }
    }
}

impl RestartPolicy {
    /// The stability period: `crashloop.stable`, else the backoff's cap.
    pub fn stable_after(&self) -> Duration {
        self.crashloop.stable.unwrap_or(self.backoff.max)
    }
}

/// How the daemon decides an agent is healthy. The daemon runs the probe
/// itself (scratch images have no shell for Docker's own health checks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive failures before the agent counts as unhealthy.
    pub retries: u32,
    /// Failures during this period after a start do not count.
    pub start_period: Duration,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            probe: Probe::None,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            retries: 3,
            start_period: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Probe {
    /// No probe: running counts as healthy.
    None,
    Http {
        port: u16,
        path: String,
    },
    Tcp {
        port: u16,
    },
    Exec {
        command: Vec<String>,
    },
}

impl Probe {
    pub fn port(&self) -> Option<u16> {
        match self {
            Probe::Http { port, .. } | Probe::Tcp { port } => Some(*port),
            Probe::None | Probe::Exec { .. } => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Resources {
    pub cpus: Option<f64>,
    pub memory: Option<ByteSize>,
    pub pids: Option<u32>,
}

/// Container hardening. All capabilities are dropped and no-new-privileges
/// is set unconditionally; `cap_add` brings back only what is listed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Security {
    pub cap_add: Vec<String>,
    pub read_only: bool,
}

/// How a GPU may be shared, per GPU (`gpus:` section).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sharing {
    Mig,
    Mps,
    Exclusive,
    TimeSlice,
}

impl Sharing {
    pub fn as_str(self) -> &'static str {
        match self {
            Sharing::Mig => "mig",
            Sharing::Mps => "mps",
            Sharing::Exclusive => "exclusive",
            Sharing::TimeSlice => "time-slice",
        }
    }
}

/// Which GPUs a policy applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GpuSelector {
    All,
    Index(u32),
    Uuid(String),
    /// A glob over the product name (`*A100*`).
    Name(String),
}

impl GpuSelector {
    pub fn matches(&self, index: u32, uuid: &str, name: &str) -> bool {
        match self {
            GpuSelector::All => true,
            GpuSelector::Index(i) => *i == index,
            GpuSelector::Uuid(u) => u.eq_ignore_ascii_case(uuid),
            GpuSelector::Name(glob) => crate::glob::matches(glob, name),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuPolicy {
    pub select: GpuSelector,
    /// Sharing modes allowed on the GPU; `None` means the planner picks
    /// (MIG where the GPU has it on, MPS otherwise; time-slice never).
    pub sharing: Option<Sharing>,
    /// Memory kept free of MPS shares.
    pub reserve: ByteSize,
    /// Allow MPS memory shares to exceed memory minus reserve.
    pub oversubscribe: bool,
}

/// How a container receives its GPU share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GpuInjection {
    /// Decide at start: the nvidia runtime if Docker has it, else CDI if
    /// configured, else environment only.
    Auto,
    /// Docker DeviceRequests through nvidia-container-toolkit.
    Nvidia,
    /// CDI device names (`nvidia.com/gpu=<uuid>`).
    Cdi,
    /// Environment variables only (hosts without the toolkit).
    Env,
}

/// What happens to agents when the daemon stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ShutdownMode {
    /// Leave agents running; the next daemon adopts them.
    Leave,
    /// Stop every agent, in reverse dependency order.
    Stop,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MpsSettings {
    /// `nvidia-cuda-mps-control` (or a stand-in with the same interface).
    pub control_binary: String,
    /// Pipe and log directories are made per GPU under this directory;
    /// `None` means `<state_dir>/mps`.
    pub directory: Option<String>,
}

impl Default for MpsSettings {
    fn default() -> Self {
        MpsSettings {
            control_binary: "nvidia-cuda-mps-control".into(),
            directory: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeSettings {
    pub gpu_injection: GpuInjection,
    /// The per-host bridge network; agents reach each other by name on it.
    pub network: String,
    pub shutdown: ShutdownMode,
    pub state_dir: String,
    /// Path of the NVML library; `None` means the system's `libnvidia-ml.so.1`.
    pub nvml_library: Option<String>,
    pub mps: MpsSettings,
    /// Docker Engine endpoint (`unix:///var/run/docker.sock` by default).
    pub docker_host: Option<String>,
}

impl RuntimeSettings {
    pub fn defaults_for(host: &str) -> Self {
        RuntimeSettings {
            gpu_injection: GpuInjection::Auto,
            network: format!("orch-{host}"),
            shutdown: ShutdownMode::Leave,
            state_dir: "/var/lib/orchestrator".into(),
            nvml_library: None,
            mps: MpsSettings::default(),
            docker_host: None,
        }
    }
}

/// Another host this one federates with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub name: String,
    /// Where its daemon listens: `tcp://HOST:PORT`.
    pub endpoint: String,
    /// Its CURVE public key, Z85 (40 characters). Required: a peer whose
    /// key is not known cannot be authenticated, so it is never admitted.
    pub public_key: String,
    /// A second key admitted for it while it changes keys (config
    /// `public_keys: [old, new]`): `public_key` is the old one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_public_key: Option<String>,
    /// What its key may do here.
    #[serde(default)]
    pub role: PeerRole,
    /// Where this host reaches the ports the peer publishes for its
    /// agents (their health endpoints), when that is not the host of
    /// `endpoint`: a host name or an IP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_address: Option<String>,
}

impl Peer {
    /// Where the peer's published ports are reached: `probe_address`, or
    /// else the host of `endpoint` (`tcp://HOST:PORT`, an IPv6 address
    /// without its brackets). `None` for a peer with neither (a monitor).
    pub fn probe_host(&self) -> Option<&str> {
        if let Some(a) = &self.probe_address {
            return Some(a);
        }
        let (host, _port) = self.endpoint.strip_prefix("tcp://")?.rsplit_once(':')?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        (!host.is_empty()).then_some(host)
    }

    /// Every key admitted for it: `public_key`, then `next_public_key`.
    pub fn public_keys(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.public_key.as_str()).chain(self.next_public_key.as_deref())
    }
}

/// What a peer's key may do on this host's bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerRole {
    /// A federated daemon: dialled, counted as a member, may send commands
    /// as `federation.remote_commands` allows.
    #[default]
    Peer,
    /// Subscribes and reads only; never dialled, never counted as a
    /// member, never reported down.
    Monitor,
}

/// Which commands this host accepts from its peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemoteCommands {
    /// Reading only (status, views, events).
    None,
    /// Reading, and operating groups and agents (start, stop, restart).
    #[default]
    Operate,
    /// Everything the local control socket accepts, config changes included.
    Admin,
}

/// How this host reaches its peers and decides that one is lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Federation {
    /// Where this daemon listens for its peers: `tcp://HOST:PORT`.
    pub listen: String,
    pub peers: Vec<Peer>,
    /// This host's CURVE secret key file; `None` means
    /// [`Federation::DEFAULT_SECRET_KEY_DIR`]`/<host>.key`.
    pub secret_key_file: Option<String>,
    /// How often a heartbeat is sent to every peer.
    pub heartbeat: Duration,
    /// A peer is suspect after this many heartbeat intervals without one.
    pub suspect_after: u32,
    /// A peer is down after this many; always more than `suspect_after`.
    pub down_after: u32,
    /// Which commands peers may send this host (monitors only read).
    #[serde(default)]
    pub remote_commands: RemoteCommands,
    /// How long a peer that is down keeps its last known agent states for
    /// this host's cross-host dependents (longer than a daemon restart, so
    /// that a restarted supervisor stops nothing that depends on its agents).
    #[serde(default = "default_peer_grace")]
    pub peer_grace: Duration,
}

fn default_peer_grace() -> Duration {
    Federation::DEFAULT_PEER_GRACE
}

impl Federation {
    pub const DEFAULT_HEARTBEAT: Duration = Duration::from_millis(500);
    pub const DEFAULT_SUSPECT_AFTER: u32 = 2;
    pub const DEFAULT_DOWN_AFTER: u32 = 3;
    pub const DEFAULT_SECRET_KEY_DIR: &'static str = "/etc/orchestrator";
    pub const DEFAULT_PEER_GRACE: Duration = Duration::from_secs(120);
    /// The longest `peer_grace` accepted.
    pub const MAX_PEER_GRACE: Duration = Duration::from_secs(3600);

    /// The secret key file this host uses: the configured one, or
    /// `/etc/orchestrator/<host>.key`.
    pub fn secret_key_path(&self, host: &str) -> String {
        match &self.secret_key_file {
            Some(path) => path.clone(),
            None => format!("{}/{host}.key", Self::DEFAULT_SECRET_KEY_DIR),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricsSettings {
    /// `None` disables the metrics listener.
    pub listen: Option<String>,
    /// Where dcgm-exporter's HPC job mapping files are kept (an absolute
    /// path); `None` keeps none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dcgm_job_mapping_dir: Option<String>,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        MetricsSettings {
            listen: Some("127.0.0.1:9464".into()),
            dcgm_job_mapping_dir: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlSettings {
    pub socket: String,
    /// The group owning the socket; its members may use the API.
    pub group: Option<String>,
}

impl Default for ControlSettings {
    fn default() -> Self {
        ControlSettings {
            socket: "/run/orchestrator/orchestrator.sock".into(),
            group: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_mappings_parse_the_short_forms() {
        let p = PortMapping::parse("7200:7200").unwrap();
        assert_eq!((p.host_port, p.container_port), (Some(7200), 7200));
        let p = PortMapping::parse("127.0.0.1:9000:8080/udp").unwrap();
        assert_eq!(p.host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(p.protocol, Protocol::Udp);
        assert_eq!(p.to_string(), "127.0.0.1:9000:8080/udp");
        assert_eq!(PortMapping::parse("8080").unwrap().host_port, None);
        for bad in [
            "", "0:80", "70000:80", "a:b", "1:2:3:4", "80/sctp", "x.y:1:2",
        ] {
            assert!(PortMapping::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn host_port_ranges_give_each_replica_its_own_port() {
        let p = PortMapping::parse("8000-8009:8080").unwrap();
        assert_eq!((p.host_port, p.host_port_end), (Some(8000), Some(8009)));
        assert_eq!(p.host_port_count(), 10);
        assert_eq!(p.last_host_port(), Some(8009));
        assert_eq!(p.to_string(), "8000-8009:8080");
        let third = p.for_replica(3).unwrap();
        assert_eq!((third.host_port, third.host_port_end), (Some(8003), None));
        assert_eq!(third.container_port, 8080);
        assert_eq!(p.for_replica(10), None, "past the range");

        let p = PortMapping::parse("127.0.0.1:9000-9001:80/udp").unwrap();
        assert_eq!(p.to_string(), "127.0.0.1:9000-9001:80/udp");
        assert_eq!(
            p.for_replica(1).unwrap().to_string(),
            "127.0.0.1:9001:80/udp"
        );
        let p = PortMapping::parse("[::1]:9000-9003:80").unwrap();
        assert_eq!(p.host_ip.as_deref(), Some("::1"));
        assert_eq!(p.to_string(), "[::1]:9000-9003:80");
        assert_eq!(PortMapping::parse(&p.to_string()).unwrap(), p);

        // A one-port range is a single port; a single port serves any replica.
        let p = PortMapping::parse("7000-7000:70").unwrap();
        assert_eq!((p.host_port_end, p.host_port_count()), (None, 1));
        assert_eq!(p.for_replica(0).unwrap(), p);
        assert_eq!(PortMapping::parse("8080").unwrap().host_port_count(), 0);

        for bad in [
            "8009-8000:80",
            "8000-:80",
            "-8000:80",
            "8000-8009:80-89",
            "1-200:80",
            "[::1:80",
        ] {
            assert!(PortMapping::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn shares_round_as_kubernetes_rounds_them() {
        let quarter = Amount::Share(Percent::whole(25));
        assert_eq!(quarter.rounded_up(3), 1);
        assert_eq!(quarter.rounded_down(3), 0);
        assert_eq!(quarter.rounded_up(8), 2);
        assert_eq!(quarter.rounded_down(8), 2);
        assert_eq!(Amount::Count(2).rounded_down(8), 2);
        assert!(Amount::Share(Percent::whole(0)).is_zero());
        assert!(!Amount::Count(1).is_zero());
    }

    fn agent_with(ports: &[&str], replicas: u32) -> Agent {
        Agent {
            name: "A".into(),
            group: "g".into(),
            image: "img".into(),
            command: None,
            env: BTreeMap::new(),
            ports: ports
                .iter()
                .map(|p| PortMapping::parse(p).unwrap())
                .collect(),
            volumes: vec![],
            depends_on: vec![],
            gpu: None,
            restart: RestartPolicy::default(),
            health: HealthCheck::default(),
            resources: Resources::default(),
            security: Security::default(),
            replicas,
            required: true,
            labels: BTreeMap::new(),
            stop_timeout: Duration::from_secs(10),
            config: None,
            script_path: None,
            secrets: vec![],
            autoscale: None,
            gpu_over_limit: OverLimit::Warn,
        }
    }

    #[test]
    fn a_rollout_step_surges_only_into_spare_host_ports() {
        let r = Rollout::default();
        // (ports, replicas, rollout, (surge, unavailable, limited by ports))
        type Case<'a> = (&'a [&'a str], u32, Rollout, (u32, u32, bool));
        let cases: &[Case] = &[
            // No host port: the default adds one before taking one away.
            (&["8080"], 3, r, (1, 0, false)),
            // A fixed port has no room for a second replica.
            (&["7200:7200"], 1, r, (0, 1, true)),
            // Two spare ports in the range, one surge wanted.
            (&["8000-8004:80"], 3, r, (1, 0, false)),
            // The range is full: replace in place.
            (&["8000-8002:80"], 3, r, (0, 1, true)),
            (
                &["8080"],
                8,
                Rollout {
                    max_surge: Amount::Share(Percent::whole(25)),
                    max_unavailable: Amount::Share(Percent::whole(25)),
                    ..r
                },
                (2, 2, false),
            ),
            // Shares that round to nothing still make progress.
            (
                &["8080"],
                2,
                Rollout {
                    max_surge: Amount::Share(Percent::whole(0)),
                    max_unavailable: Amount::Share(Percent::whole(10)),
                    ..r
                },
                (0, 1, false),
            ),
        ];
        for (ports, replicas, rollout, (surge, unavailable, limited)) in cases {
            let b = rollout.budget(&agent_with(ports, *replicas), *replicas);
            assert_eq!(
                (b.surge, b.unavailable, b.limited_by_host_ports),
                (*surge, *unavailable, *limited),
                "{ports:?} x{replicas}"
            );
        }
    }

    #[test]
    fn metric_names_follow_prometheus() {
        for ok in ["agent_queue_depth", "a:b", "_x", "X1"] {
            assert!(valid_metric_name(ok), "{ok}");
        }
        for bad in ["", "1x", "a-b", "a b", "é"] {
            assert!(!valid_metric_name(bad), "{bad}");
        }
    }

    #[test]
    fn volumes_parse_and_tell_binds_from_named() {
        let v = VolumeMount::parse("/data:/data:ro").unwrap();
        assert!(v.read_only && v.is_bind());
        let v = VolumeMount::parse("models:/models").unwrap();
        assert!(!v.read_only && !v.is_bind());
        assert_eq!(v.to_string(), "models:/models");
        for bad in ["x", "a:relative", ":/x", "a:/b:rx", "a:/b:ro:x"] {
            assert!(VolumeMount::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_peers_ports_are_reached_at_its_probe_address_or_its_endpoints_host() {
        let peer = |endpoint: &str, probe_address: Option<&str>| Peer {
            name: "pc2".into(),
            endpoint: endpoint.into(),
            public_key: "k".into(),
            next_public_key: None,
            role: PeerRole::Peer,
            probe_address: probe_address.map(str::to_string),
        };
        for (endpoint, probe_address, host) in [
            ("tcp://pc2.lan:7100", None, Some("pc2.lan")),
            ("tcp://10.0.0.2:7100", None, Some("10.0.0.2")),
            ("tcp://[fd00::2]:7100", None, Some("fd00::2")),
            (
                "tcp://pc2.lan:7100",
                Some("192.168.1.12"),
                Some("192.168.1.12"),
            ),
            ("", None, None),
            ("", Some("pc2-lan"), Some("pc2-lan")),
        ] {
            assert_eq!(
                peer(endpoint, probe_address).probe_host(),
                host,
                "{endpoint} {probe_address:?}"
            );
        }
    }
}
