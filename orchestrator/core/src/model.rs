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

impl<'a> Dep<'a> {
    /// Reads an entry; `Err` says why a remote one is malformed.
    pub fn parse(entry: &'a str) -> Result<Dep<'a>, String> {
        let Some((host, rest)) = entry.split_once('/') else {
            return Ok(Dep::Local(entry));
        };
        if host.is_empty() || rest.is_empty() || rest.contains('/') {
            return Err(format!("`{entry}` is not HOST/AGENT or HOST/group:NAME"));
        }
        Ok(match rest.strip_prefix("group:") {
            Some("") => return Err(format!("`{entry}` names no group after `group:`")),
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

    pub fn is_remote(&self) -> bool {
        !matches!(self, Dep::Local(_))
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
    /// Agents in declaration order.
    pub agents: Vec<Agent>,
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
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    Tcp,
    Udp,
}

/// `[host_ip:]host_port:container_port[/proto]` or just `container_port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_ip: Option<String>,
    pub host_port: Option<u16>,
    pub container_port: u16,
    pub protocol: Protocol,
}

impl std::fmt::Display for PortMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(ip) = &self.host_ip {
            write!(f, "{ip}:")?;
        }
        if let Some(hp) = self.host_port {
            write!(f, "{hp}:")?;
        }
        write!(f, "{}", self.container_port)?;
        if self.protocol == Protocol::Udp {
            f.write_str("/udp")?;
        }
        Ok(())
    }
}

impl PortMapping {
    /// Parses the compose-style short form.
    pub fn parse(text: &str) -> Result<PortMapping, String> {
        let (body, protocol) = match text.rsplit_once('/') {
            Some((b, "tcp")) => (b, Protocol::Tcp),
            Some((b, "udp")) => (b, Protocol::Udp),
            Some((_, p)) => {
                return Err(format!("unknown protocol `{p}`; use `/tcp` or `/udp`"));
            }
            None => (text, Protocol::Tcp),
        };
        let parts: Vec<&str> = body.split(':').collect();
        let port = |s: &str| -> Result<u16, String> {
            match s.parse::<u16>() {
                Ok(0) | Err(_) => Err(format!("`{s}` is not a port number (1-65535)")),
                Ok(p) => Ok(p),
            }
        };
        let (host_ip, host_port, container_port) = match parts.as_slice() {
            [c] => (None, None, port(c)?),
            [h, c] => (None, Some(port(h)?), port(c)?),
            [ip, h, c] => {
                if ip.parse::<std::net::IpAddr>().is_err() {
                    return Err(format!("`{ip}` is not an IP address"));
                }
                (Some((*ip).to_string()), Some(port(h)?), port(c)?)
            }
            _ => {
                return Err(format!(
                    "`{text}` is not a port mapping; write `HOST:CONTAINER`, `IP:HOST:CONTAINER` or `CONTAINER`"
                ));
            }
        };
        Ok(PortMapping {
            host_ip,
            host_port,
            container_port,
            protocol,
        })
    }
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

    pub fn parse(text: &str) -> Result<VolumeMount, String> {
        let parts: Vec<&str> = text.split(':').collect();
        let (source, target, read_only) = match parts.as_slice() {
            [s, t] => (*s, *t, false),
            [s, t, "ro"] => (*s, *t, true),
            [s, t, "rw"] => (*s, *t, false),
            [_, _, m] => return Err(format!("unknown mount mode `{m}`; use `ro` or `rw`")),
            _ => {
                return Err(format!(
                    "`{text}` is not a volume; write `SOURCE:TARGET` or `SOURCE:TARGET:ro`"
                ));
            }
        };
        if source.is_empty() {
            return Err("the volume source is empty".into());
        }
        if !target.starts_with('/') {
            return Err(format!(
                "the mount target `{target}` must be an absolute path"
            ));
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
}

impl Peer {
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
}

impl Federation {
    pub const DEFAULT_HEARTBEAT: Duration = Duration::from_millis(500);
    pub const DEFAULT_SUSPECT_AFTER: u32 = 2;
    pub const DEFAULT_DOWN_AFTER: u32 = 3;
    pub const DEFAULT_SECRET_KEY_DIR: &'static str = "/etc/orchestrator";

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
}

impl Default for MetricsSettings {
    fn default() -> Self {
        MetricsSettings {
            listen: Some("127.0.0.1:9464".into()),
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
}
