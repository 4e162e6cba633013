//! What a container for one agent replica must look like, as plain data:
//! the agent contract's labels and environment, the GPU share, limits and
//! hardening. The Docker adapter turns a `ContainerSpec` into API calls; it
//! adds nothing of its own.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{PortMapping, VolumeMount};
use crate::units::{ByteSize, Duration};

/// Label keys of the agent contract. Ownership and adoption are decided
/// from these labels, never from container names.
pub mod labels {
    pub const HOST: &str = "io.orchestrator.host";
    pub const GROUP: &str = "io.orchestrator.group";
    pub const AGENT: &str = "io.orchestrator.agent";
    pub const REPLICA: &str = "io.orchestrator.replica";
    pub const CONFIG_HASH: &str = "io.orchestrator.config-hash";
    pub const GENERATION: &str = "io.orchestrator.generation";
    /// The GPU slice the container was given (`Slice::describe`), so that a
    /// restarted daemon can rebuild its assignments from Docker alone.
    pub const GPU_SLICE: &str = "io.orchestrator.gpu-slice";
    /// Marks networks made by the orchestrator.
    pub const NETWORK: &str = "io.orchestrator.network";
}

/// How the GPU share reaches the container.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "mode")]
pub enum GpuDevices {
    /// No devices (CPU agent, or a host injecting by environment only).
    #[default]
    None,
    /// Docker DeviceRequests with the nvidia driver (`GPU-…` / `MIG-…` ids).
    Nvidia { device_ids: Vec<String> },
    /// CDI device names, e.g. `nvidia.com/gpu=GPU-…`.
    Cdi { devices: Vec<String> },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// Docker container name (unique per Docker engine).
    pub name: String,
    pub image: String,
    pub command: Option<Vec<String>>,
    pub env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    /// The bridge network to attach to, and the names others reach it by.
    pub network: String,
    pub aliases: Vec<String>,
    pub hostname: Option<String>,
    pub ports: Vec<PortMapping>,
    pub mounts: Vec<VolumeMount>,
    pub cpus: Option<f64>,
    pub memory: Option<ByteSize>,
    pub pids: Option<u32>,
    /// Capabilities added back after dropping all of them.
    pub cap_add: Vec<String>,
    pub read_only_rootfs: bool,
    pub gpu: GpuDevices,
    /// MPS clients share the IPC namespace of the MPS server on the host.
    pub ipc_host: bool,
    pub stop_timeout: Duration,
}

use crate::gpu::Slice;
use crate::model::{Agent, HostConfig};

/// How the host hands GPUs to containers, once `auto` is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Injection {
    Nvidia,
    Cdi,
    Env,
}

/// The name of a replica's container: `<host>-<agent>-<replica>`. Docker
/// refuses a second container of the same name, which makes a duplicate
/// launch impossible even when two launches race.
pub fn container_name(host: &str, agent: &str, replica: u32) -> String {
    format!("{host}-{agent}-{replica}")
}

/// [`config_hash`] of every agent of a host, by agent name: what the
/// supervisor compares running containers against.
pub fn config_hashes(config: &HostConfig) -> BTreeMap<String, String> {
    config
        .agents()
        .map(|a| (a.name.clone(), config_hash(a)))
        .collect()
}

/// A stable hash of everything in an agent that shapes its container.
/// Health checks, restart policy, dependencies and replica count are left
/// out: changing them must not restart the agent.
pub fn config_hash(agent: &Agent) -> String {
    #[derive(Serialize)]
    struct Shape<'a> {
        image: &'a str,
        command: &'a Option<Vec<String>>,
        env: &'a BTreeMap<String, String>,
        ports: &'a [PortMapping],
        volumes: &'a [VolumeMount],
        gpu: &'a Option<crate::gpu::GpuRequest>,
        resources: &'a crate::model::Resources,
        security: &'a crate::model::Security,
        labels: &'a BTreeMap<String, String>,
        stop_timeout: Duration,
        config: &'a Option<serde_json::Value>,
        script_path: &'a Option<String>,
        listen: Vec<u16>,
        /// Names and host paths only: a secret's value is never read here,
        /// so rotating it in place restarts nothing.
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        secrets: &'a [crate::model::SecretMount],
    }
    let shape = Shape {
        image: &agent.image,
        command: &agent.command,
        env: &agent.env,
        ports: &agent.ports,
        volumes: &agent.volumes,
        gpu: &agent.gpu,
        resources: &agent.resources,
        security: &agent.security,
        labels: &agent.labels,
        stop_timeout: agent.stop_timeout,
        config: &agent.config,
        script_path: &agent.script_path,
        listen: listen_ports(agent),
        secrets: &agent.secrets,
    };
    let bytes = serde_json::to_vec(&shape).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Container ports the agent should listen on: its published TCP ports and
/// its health probe's port, in that order, without repeats.
pub fn listen_ports(agent: &Agent) -> Vec<u16> {
    let mut ports: Vec<u16> = Vec::new();
    let tcp = agent
        .ports
        .iter()
        .filter(|p| p.protocol == crate::model::Protocol::Tcp)
        .map(|p| p.container_port);
    for port in tcp.chain(agent.health.probe.port()) {
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    ports
}

/// Whether an environment variable is the agent contract's (`ORCH_*`):
/// the orchestrator sets these, a config may not.
pub fn is_reserved_env(name: &str) -> bool {
    name.starts_with("ORCH_")
}

/// The agent contract's environment over the agent's own `env` (the
/// contract's values win): identity, listen ports, free-form config.
/// `replica` is omitted when unknown (an export running several copies of
/// one definition); `gpu_slice` is the `ORCH_GPU_SLICE` value.
pub fn contract_env(
    host: &HostConfig,
    agent: &Agent,
    replica: Option<u32>,
    gpu_slice: String,
) -> BTreeMap<String, String> {
    let mut env = agent.env.clone();
    env.insert("ORCH_HOST".into(), host.host.name.clone());
    env.insert("ORCH_GROUP".into(), agent.group.clone());
    env.insert("ORCH_AGENT".into(), agent.name.clone());
    if let Some(r) = replica {
        env.insert("ORCH_REPLICA".into(), r.to_string());
    }
    env.insert("ORCH_GPU_SLICE".into(), gpu_slice);
    let listen = listen_ports(agent);
    if !listen.is_empty() {
        env.insert(
            "ORCH_LISTEN_PORTS".into(),
            listen
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(","),
        );
    }
    if let Some(c) = &agent.config {
        env.insert("ORCH_AGENT_CONFIG".into(), c.to_string());
    }
    if let Some(s) = &agent.script_path {
        env.insert("ORCH_SCRIPT_PATH".into(), s.clone());
    }
    for secret in &agent.secrets {
        env.insert(secret.env_name(), secret.target());
    }
    env
}

/// What the GPU side of the host contributes to a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuContext<'a> {
    pub injection: Injection,
    /// The MPS pipe directory of the slice's GPU (MPS slices only).
    pub mps_pipe_dir: Option<&'a str>,
}

/// Everything the container of one replica needs.
pub fn build_spec(
    host: &HostConfig,
    agent: &Agent,
    replica: u32,
    config_hash: &str,
    generation: u64,
    slice: Option<&Slice>,
    gpu: &GpuContext<'_>,
) -> ContainerSpec {
    let mut env = contract_env(
        host,
        agent,
        Some(replica),
        slice.map(Slice::describe).unwrap_or_else(|| "none".into()),
    );

    let mut labels = agent.labels.clone();
    labels.insert(labels::HOST.into(), host.host.name.clone());
    labels.insert(labels::GROUP.into(), agent.group.clone());
    labels.insert(labels::AGENT.into(), agent.name.clone());
    labels.insert(labels::REPLICA.into(), replica.to_string());
    labels.insert(labels::CONFIG_HASH.into(), config_hash.to_string());
    labels.insert(labels::GENERATION.into(), generation.to_string());
    if let Some(s) = slice {
        labels.insert(labels::GPU_SLICE.into(), s.describe());
    }

    let mut mounts = agent.volumes.clone();
    mounts.extend(agent.secrets.iter().map(|s| VolumeMount {
        source: s.source.clone(),
        target: s.target(),
        read_only: true,
    }));
    let mut ipc_host = false;
    let mut devices = GpuDevices::None;
    if let Some(s) = slice {
        let device = match s {
            Slice::Mig {
                device_uuid: Some(u),
                ..
            } => u.clone(),
            other => other.gpu_uuid().to_string(),
        };
        env.insert("NVIDIA_VISIBLE_DEVICES".into(), device.clone());
        env.insert(
            "NVIDIA_DRIVER_CAPABILITIES".into(),
            "compute,utility".into(),
        );
        devices = match gpu.injection {
            Injection::Nvidia => GpuDevices::Nvidia {
                device_ids: vec![device.clone()],
            },
            Injection::Cdi => GpuDevices::Cdi {
                devices: vec![format!("nvidia.com/gpu={device}")],
            },
            Injection::Env => GpuDevices::None,
        };
        if let Slice::Mps {
            memory, compute, ..
        } = s
        {
            ipc_host = true;
            env.insert(
                "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE".into(),
                compute.ceil_whole().to_string(),
            );
            // Only the slice's GPU is visible in the container, as device 0.
            env.insert(
                "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT".into(),
                format!("0={}M", memory.as_mib()),
            );
            if let Some(dir) = gpu.mps_pipe_dir {
                env.insert("CUDA_MPS_PIPE_DIRECTORY".into(), dir.to_string());
                mounts.push(VolumeMount {
                    source: dir.to_string(),
                    target: dir.to_string(),
                    read_only: false,
                });
            }
        }
    }

    let name = container_name(&host.host.name, &agent.name, replica);
    // The agent's name reaches any replica (as Compose's service name
    // does); `NAME-i` reaches replica i, however many there are (a count
    // set at run time included).
    let aliases = vec![agent.name.clone(), format!("{}-{replica}", agent.name)];
    ContainerSpec {
        name,
        image: agent.image.clone(),
        command: agent.command.clone(),
        env,
        labels,
        network: host.runtime.network.clone(),
        aliases,
        hostname: Some(format!("{}-{replica}", agent.name.to_lowercase())),
        // Each replica publishes its own port of a host port range.
        ports: agent
            .ports
            .iter()
            .filter_map(|p| p.for_replica(replica))
            .collect(),
        mounts,
        cpus: agent.resources.cpus,
        memory: agent.resources.memory,
        pids: agent.resources.pids,
        cap_add: agent.security.cap_add.clone(),
        read_only_rootfs: agent.security.read_only,
        gpu: devices,
        ipc_host,
        stop_timeout: agent.stop_timeout,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{GpuRequest, SliceRequest};
    use crate::model::*;
    use crate::units::{ByteSize, Percent};

    fn host_and_agent() -> (HostConfig, Agent) {
        let agent = Agent {
            name: "STTService".into(),
            group: "speech_gpu".into(),
            image: "orchestrator-agent:latest".into(),
            command: None,
            env: [("LOG_LEVEL".to_string(), "INFO".to_string())].into(),
            ports: vec![PortMapping::parse("5800:5800").unwrap()],
            volumes: vec![],
            depends_on: vec![],
            gpu: Some(GpuRequest::new(SliceRequest::Mps {
                memory: ByteSize::gib(4),
                compute: Percent::parse("12.5%").unwrap(),
            })),
            restart: RestartPolicy::default(),
            health: HealthCheck {
                probe: Probe::Http {
                    port: 6800,
                    path: "/health".into(),
                },
                ..HealthCheck::default()
            },
            resources: Resources {
                cpus: Some(0.5),
                memory: Some(ByteSize::gib(2)),
                pids: None,
            },
            security: Security::default(),
            replicas: 1,
            required: true,
            labels: BTreeMap::new(),
            stop_timeout: Duration::from_secs(10),
            config: Some(serde_json::json!({"model": "whisper"})),
            script_path: Some("stt.py".into()),
            secrets: vec![],
            autoscale: None,
            gpu_over_limit: OverLimit::Warn,
        };
        let host = HostConfig {
            host: HostInfo {
                name: "mainpc".into(),
                labels: BTreeMap::new(),
            },
            defaults: AgentDefaults::default(),
            gpus: vec![],
            groups: vec![],
            runtime: RuntimeSettings::defaults_for("mainpc"),
            federation: None,
            metrics: MetricsSettings::default(),
            control: ControlSettings::default(),
            secrets: BTreeMap::new(),
        };
        (host, agent)
    }

    #[test]
    fn an_mps_replica_gets_the_contract_env_labels_and_pipe_mount() {
        let (host, agent) = host_and_agent();
        let slice = Slice::Mps {
            gpu_index: 0,
            gpu_uuid: "GPU-1234".into(),
            memory: ByteSize::gib(4),
            compute: Percent::parse("12.5%").unwrap(),
        };
        let spec = build_spec(
            &host,
            &agent,
            0,
            "abc",
            7,
            Some(&slice),
            &GpuContext {
                injection: Injection::Env,
                mps_pipe_dir: Some("/var/lib/orchestrator/mps/GPU-1234/pipe"),
            },
        );
        assert_eq!(spec.name, "mainpc-STTService-0");
        let env = |k: &str| spec.env.get(k).map(String::as_str);
        assert_eq!(env("ORCH_HOST"), Some("mainpc"));
        assert_eq!(env("ORCH_GROUP"), Some("speech_gpu"));
        assert_eq!(env("ORCH_AGENT"), Some("STTService"));
        assert_eq!(env("ORCH_REPLICA"), Some("0"));
        assert_eq!(
            env("ORCH_GPU_SLICE"),
            Some("mps:GPU-1234:memory=4g,compute=12.5%")
        );
        assert_eq!(env("ORCH_LISTEN_PORTS"), Some("5800,6800"));
        assert_eq!(env("ORCH_AGENT_CONFIG"), Some(r#"{"model":"whisper"}"#));
        assert_eq!(env("ORCH_SCRIPT_PATH"), Some("stt.py"));
        assert_eq!(env("NVIDIA_VISIBLE_DEVICES"), Some("GPU-1234"));
        assert_eq!(env("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"), Some("13"));
        assert_eq!(env("CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"), Some("0=4096M"));
        assert_eq!(
            env("CUDA_MPS_PIPE_DIRECTORY"),
            Some("/var/lib/orchestrator/mps/GPU-1234/pipe")
        );
        assert_eq!(env("LOG_LEVEL"), Some("INFO"));
        assert!(spec.ipc_host);
        assert_eq!(
            spec.mounts[0].target,
            "/var/lib/orchestrator/mps/GPU-1234/pipe"
        );
        assert_eq!(spec.gpu, GpuDevices::None);
        assert_eq!(spec.labels[labels::CONFIG_HASH], "abc");
        assert_eq!(spec.labels[labels::GENERATION], "7");
        assert_eq!(
            spec.labels[labels::GPU_SLICE],
            "mps:GPU-1234:memory=4g,compute=12.5%"
        );
        assert_eq!(spec.aliases, ["STTService", "STTService-0"]);
        assert_eq!(spec.network, "orch-mainpc");
    }

    #[test]
    fn each_replica_publishes_its_own_port_of_a_range() {
        let (host, mut agent) = host_and_agent();
        agent.replicas = 3;
        agent.ports = vec![
            PortMapping::parse("127.0.0.1:8000-8002:8080").unwrap(),
            PortMapping::parse("9100").unwrap(),
        ];
        let gpu = GpuContext {
            injection: Injection::Env,
            mps_pipe_dir: None,
        };
        let published: Vec<Vec<String>> = (0..3)
            .map(|i| {
                build_spec(&host, &agent, i, "h", 1, None, &gpu)
                    .ports
                    .iter()
                    .map(ToString::to_string)
                    .collect()
            })
            .collect();
        assert_eq!(
            published,
            [
                ["127.0.0.1:8000:8080", "9100"],
                ["127.0.0.1:8001:8080", "9100"],
                ["127.0.0.1:8002:8080", "9100"],
            ]
        );
        // The agent listens on the container port whatever its host port.
        let spec = build_spec(&host, &agent, 2, "h", 1, None, &gpu);
        assert_eq!(spec.env["ORCH_LISTEN_PORTS"], "8080,9100,6800");
    }

    #[test]
    fn mig_and_exclusive_slices_by_injection_mode() {
        let (host, agent) = host_and_agent();
        let mig = Slice::Mig {
            gpu_index: 1,
            gpu_uuid: "GPU-a100".into(),
            profile: "1g.10gb".into(),
            profile_id: 15,
            placement_start: 2,
            gi_id: Some(3),
            ci_id: Some(0),
            device_uuid: Some("MIG-5678".into()),
        };
        let nvidia = build_spec(
            &host,
            &agent,
            0,
            "h",
            1,
            Some(&mig),
            &GpuContext {
                injection: Injection::Nvidia,
                mps_pipe_dir: None,
            },
        );
        assert_eq!(
            nvidia.gpu,
            GpuDevices::Nvidia {
                device_ids: vec!["MIG-5678".into()]
            }
        );
        assert_eq!(nvidia.env["NVIDIA_VISIBLE_DEVICES"], "MIG-5678");
        assert!(!nvidia.ipc_host);
        let excl = Slice::Exclusive {
            gpu_index: 0,
            gpu_uuid: "GPU-x".into(),
        };
        let cdi = build_spec(
            &host,
            &agent,
            0,
            "h",
            1,
            Some(&excl),
            &GpuContext {
                injection: Injection::Cdi,
                mps_pipe_dir: None,
            },
        );
        assert_eq!(
            cdi.gpu,
            GpuDevices::Cdi {
                devices: vec!["nvidia.com/gpu=GPU-x".into()]
            }
        );
        let none = build_spec(
            &host,
            &agent,
            0,
            "h",
            1,
            None,
            &GpuContext {
                injection: Injection::Nvidia,
                mps_pipe_dir: None,
            },
        );
        assert_eq!(none.env["ORCH_GPU_SLICE"], "none");
        assert!(!none.env.contains_key("NVIDIA_VISIBLE_DEVICES"));
        assert_eq!(none.gpu, GpuDevices::None);
    }

    #[test]
    fn the_hash_changes_with_the_container_and_not_with_supervision_settings() {
        let (_, agent) = host_and_agent();
        let base = config_hash(&agent);
        assert_eq!(base, config_hash(&agent.clone()));
        let mut a = agent.clone();
        a.env.insert("X".into(), "1".into());
        assert_ne!(config_hash(&a), base);
        let mut a = agent.clone();
        a.image = "other:1".into();
        assert_ne!(config_hash(&a), base);
        let mut a = agent.clone();
        a.health.interval = Duration::from_secs(99);
        a.restart.policy = RestartMode::Always;
        a.depends_on = vec!["X".into()];
        a.replicas = 3;
        assert_eq!(config_hash(&a), base);
        let mut a = agent;
        a.health.probe = Probe::Http {
            port: 7000,
            path: "/health".into(),
        };
        assert_ne!(config_hash(&a), base, "the probe port is a listen port");
    }

    #[test]
    fn a_secret_is_a_read_only_mount_and_a_file_variable_never_a_value() {
        let (host, mut agent) = host_and_agent();
        let without = config_hash(&agent);
        agent.secrets = vec![SecretMount {
            name: "HF_TOKEN".into(),
            source: "/etc/orchestrator/secrets/hf".into(),
        }];
        let spec = build_spec(
            &host,
            &agent,
            0,
            "abc",
            1,
            None,
            &GpuContext {
                injection: Injection::Env,
                mps_pipe_dir: None,
            },
        );
        assert_eq!(
            spec.env.get("HF_TOKEN_FILE").map(String::as_str),
            Some("/run/secrets/HF_TOKEN")
        );
        assert!(spec.mounts.contains(&VolumeMount {
            source: "/etc/orchestrator/secrets/hf".into(),
            target: "/run/secrets/HF_TOKEN".into(),
            read_only: true,
        }));
        // The secret list shapes the container; a path change does too.
        let with = config_hash(&agent);
        assert_ne!(with, without);
        agent.secrets[0].source = "/etc/orchestrator/secrets/hf2".into();
        assert_ne!(config_hash(&agent), with);
    }

    #[test]
    fn secret_names_are_variable_names_outside_the_contract() {
        for ok in ["HF_TOKEN", "db_password", "_X1"] {
            assert!(valid_secret_name(ok), "{ok}");
        }
        for bad in ["", "1KEY", "HF-TOKEN", "a.b", "ORCH_KEY", "KEY/../x"] {
            assert!(!valid_secret_name(bad), "{bad}");
        }
    }
}
