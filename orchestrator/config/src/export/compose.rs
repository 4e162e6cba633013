//! `export compose`: a host's agents as a Docker Compose file (the Compose
//! Specification, without a `version` key), for running one host's groups
//! without the supervisor. It reads the same with docker-compose 1.29 and
//! with Compose v2.
//!
//! One service per agent, `deploy.replicas` copies of it (docker-compose
//! 1.29 and v2 both scale by it; `scale` is the older spelling), named by
//! [`dns_label`](super::dns_label) and reachable on one bridge network by
//! that name and, as an alias, by the agent's own name. No
//! `container_name`, so a service can scale. Health checks run the agent
//! image's own probe (`/reference-agent --probe URL` by default), because
//! the image has no shell and no curl. Start order is `depends_on`: a
//! dependency with a health check must be healthy first, one without must
//! have started.
//!
//! What a Compose file cannot express, and what is written instead:
//! - GPU slices. A config names no GPU UUIDs, so a GPU request reserves
//!   `count: 1` of the `nvidia` driver; Docker does not keep two services
//!   off one GPU, which the supervisor guarantees. MIG has no Compose
//!   field: the profile is in the label `io.orchestrator.gpu-mig-profile`
//!   and the container gets a whole GPU. MPS gets its environment
//!   (`CUDA_MPS_*`), the pipe directory mounted and `ipc: host`, but the
//!   MPS control daemon must already run on the host. A fallback chain
//!   exports its first choice; the label `io.orchestrator.gpu-fallback`
//!   names the whole chain, which nothing in Compose will try.
//! - Restart backoff, crash-loop detection, and restarting an unhealthy
//!   agent: Docker restarts on exit only (`restart: on-failure`), at its
//!   own pace. `never` becomes `"no"`.
//! - Optional agents (`required: false`): a dependency on one waits only
//!   for it to start (`service_started`), never for its health; if it
//!   cannot start at all, Compose still holds its dependents.
//! - A project name: docker-compose 1.29 refuses the top-level `name` key,
//!   so the name is in `x-orchestrator.project` and in the header comment,
//!   to be given with `-p`. Named volumes and the network are prefixed
//!   with the project name by Compose, so they are not the supervisor's.
//! - The per-replica number (`ORCH_REPLICA` is set only for one replica).
//! - Which port of a host port range a replica gets: the range is written
//!   as it is (`8000-8009:8080`, which Compose accepts), and Docker gives
//!   each container a free port of it, not necessarily `start + i` as the
//!   supervisor does.
//! - Autoscaling: `deploy.replicas` is the count the agent starts with.
//!
//! - Secrets are Compose secrets: a top-level `secrets:` entry per secret
//!   used, with the host file (`file:`), and `secrets: [NAME]` on each
//!   service, which Compose mounts read-only at `/run/secrets/NAME` as the
//!   supervisor does; `NAME_FILE` is in the environment. The value is never
//!   read.
//!
//! Every `$` of the config is written as `$$`, because Compose interpolates
//! `${VAR}` in every value and the supervisor passes them on verbatim.

use orch_core::gpu::SliceRequest;
use orch_core::model::{Agent, GpuInjection, HostConfig, Probe, RestartMode};
use orch_core::units::Duration;
use serde_yaml::{Mapping, Value};

use super::{
    ExportError, Names, agents_of, check_name, contract_env, describe_chain, describe_request,
    group_names, probe_url, put, s, select_groups, start_after, string_map, strings, write_yaml,
};

/// Label with the first GPU request of an agent, as in `ORCH_GPU_SLICE`.
pub const LABEL_GPU_REQUEST: &str = "io.orchestrator.gpu-request";
/// Label with the MIG profile of a MIG request, which Compose cannot ask for.
pub const LABEL_GPU_MIG_PROFILE: &str = "io.orchestrator.gpu-mig-profile";
/// Label naming a whole GPU fallback chain (`mig:1g.10gb -> mps:...`).
pub const LABEL_GPU_FALLBACK: &str = "io.orchestrator.gpu-fallback";

/// The pipe directory a hand-started `nvidia-cuda-mps-control -d` uses.
pub const DEFAULT_MPS_PIPE_DIRECTORY: &str = "/tmp/nvidia-mps";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposeOptions {
    /// Groups to export; empty for all. The groups they depend on come too.
    pub groups: Vec<String>,
    /// The command that checks a health URL inside the container; the URL
    /// is appended.
    pub probe_command: Vec<String>,
    /// Compose project name, for `docker compose -p`; by default the host
    /// name as a DNS label.
    pub project_name: Option<String>,
    /// The config file the export was made from, for `x-orchestrator`.
    pub source: Option<String>,
    /// Publish host ports as the config says. Off, only container ports are
    /// declared (`expose`), so that an export can run next to the host's
    /// own agents.
    pub publish_ports: bool,
    /// Reserve GPUs through Docker's `nvidia` device requests. Off (and on
    /// hosts whose `runtime.gpu_injection` is `env`), GPU requests show only
    /// in labels and environment: for Docker hosts without
    /// nvidia-container-toolkit.
    pub reserve_gpus: bool,
    /// The host's MPS pipe directory, mounted into MPS clients.
    pub mps_pipe_directory: String,
}

impl Default for ComposeOptions {
    fn default() -> Self {
        ComposeOptions {
            groups: Vec::new(),
            probe_command: vec!["/reference-agent".into(), "--probe".into()],
            project_name: None,
            source: None,
            publish_ports: true,
            reserve_gpus: true,
            mps_pipe_directory: DEFAULT_MPS_PIPE_DIRECTORY.into(),
        }
    }
}

/// The Compose file for `config`'s groups selected by `opts`.
pub fn render(config: &HostConfig, opts: &ComposeOptions) -> Result<String, ExportError> {
    if opts.probe_command.is_empty() || opts.probe_command.iter().all(|a| a.is_empty()) {
        return Err(ExportError::EmptyProbeCommand);
    }
    let project = match &opts.project_name {
        Some(p) => {
            check_name("Compose project name", p, &['_'])?;
            p.clone()
        }
        None => super::dns_label(&config.host.name),
    };
    let groups = select_groups(config, &opts.groups)?;
    let names = Names::for_config(config)?;
    let network = config.runtime.network.clone();
    let reserve_gpus = opts.reserve_gpus && config.runtime.gpu_injection != GpuInjection::Env;

    let mut services = Mapping::new();
    let mut volumes = Mapping::new();
    let mut secrets = Mapping::new();
    for agent in agents_of(&groups) {
        let service = service(config, agent, &names, &network, reserve_gpus, opts);
        for secret in &agent.secrets {
            let mut entry = Mapping::new();
            put(&mut entry, "file", s(&secret.source));
            put(&mut secrets, &secret.name, Value::Mapping(entry));
        }
        for v in agent.volumes.iter().filter(|v| !v.is_bind()) {
            put(&mut volumes, &v.source, Value::Mapping(Mapping::new()));
        }
        put(
            &mut services,
            names.of(&agent.name),
            Value::Mapping(service),
        );
    }

    let mut meta = Mapping::new();
    put(&mut meta, "host", s(&config.host.name));
    put(&mut meta, "project", s(&project));
    if let Some(source) = &opts.source {
        put(&mut meta, "source", s(source));
    }
    put(&mut meta, "groups", strings(group_names(&groups)));
    put(&mut meta, "generator", s("orchestratorctl export compose"));

    let mut net = Mapping::new();
    put(&mut net, "driver", s("bridge"));
    let mut networks = Mapping::new();
    put(&mut networks, &network, Value::Mapping(net));

    let mut root = Mapping::new();
    put(&mut root, "x-orchestrator", Value::Mapping(meta));
    put(&mut root, "services", Value::Mapping(services));
    put(&mut root, "networks", Value::Mapping(networks));
    if !volumes.is_empty() {
        put(&mut root, "volumes", Value::Mapping(volumes));
    }
    if !secrets.is_empty() {
        put(&mut root, "secrets", Value::Mapping(secrets));
    }
    let mut root = Value::Mapping(root);
    escape_dollars(&mut root);

    let header = vec![
        format!(
            "Compose file for host {}, made by `orchestratorctl export compose`.",
            config.host.name
        ),
        format!(
            "Run: docker compose -p {project} -f FILE up -d (or docker-compose, same arguments)"
        ),
    ];
    Ok(write_yaml(&header, &[root]))
}

fn service(
    config: &HostConfig,
    agent: &Agent,
    names: &Names,
    network: &str,
    reserve_gpus: bool,
    opts: &ComposeOptions,
) -> Mapping {
    let mut svc = Mapping::new();
    put(&mut svc, "image", s(&agent.image));
    if let Some(command) = &agent.command {
        put(&mut svc, "command", strings(command));
    }

    let mut env = contract_env(config, agent);
    let mut mounts: Vec<String> = agent.volumes.iter().map(ToString::to_string).collect();
    let mut ipc_host = false;
    if let Some(SliceRequest::Mps { memory, compute }) = agent.gpu.as_ref().map(|g| &g.kind) {
        let dir = &opts.mps_pipe_directory;
        env.insert("CUDA_MPS_PIPE_DIRECTORY".into(), dir.clone());
        env.insert(
            "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE".into(),
            compute.ceil_whole().to_string(),
        );
        // Device 0 is the one GPU the container sees.
        env.insert(
            "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT".into(),
            format!("0={}", mps_memory(memory.bytes())),
        );
        mounts.push(format!("{dir}:{dir}"));
        ipc_host = true;
    }
    put(&mut svc, "environment", string_map(&env));

    let mut labels = agent.labels.clone();
    labels.insert(
        orch_core::container::labels::HOST.into(),
        config.host.name.clone(),
    );
    labels.insert(
        orch_core::container::labels::GROUP.into(),
        agent.group.clone(),
    );
    labels.insert(
        orch_core::container::labels::AGENT.into(),
        agent.name.clone(),
    );
    if let Some(gpu) = &agent.gpu {
        labels.insert(LABEL_GPU_REQUEST.into(), describe_request(&gpu.kind));
        if let SliceRequest::Mig { profile } = &gpu.kind {
            labels.insert(LABEL_GPU_MIG_PROFILE.into(), profile.to_string());
        }
        if gpu.fallback.is_some() {
            labels.insert(LABEL_GPU_FALLBACK.into(), describe_chain(gpu));
        }
    }
    put(&mut svc, "labels", string_map(&labels));

    let name = names.of(&agent.name);
    let mut endpoint = Mapping::new();
    if name != agent.name {
        put(&mut endpoint, "aliases", strings([&agent.name]));
    }
    let mut nets = Mapping::new();
    put(&mut nets, network, Value::Mapping(endpoint));
    put(&mut svc, "networks", Value::Mapping(nets));

    if opts.publish_ports {
        if !agent.ports.is_empty() {
            put(&mut svc, "ports", strings(&agent.ports));
        }
    } else {
        let mut exposed: Vec<String> = Vec::new();
        for p in &agent.ports {
            let e = match p.protocol {
                orch_core::model::Protocol::Tcp => p.container_port.to_string(),
                orch_core::model::Protocol::Udp => format!("{}/udp", p.container_port),
            };
            if !exposed.contains(&e) {
                exposed.push(e);
            }
        }
        if !exposed.is_empty() {
            put(&mut svc, "expose", strings(exposed));
        }
    }
    if !mounts.is_empty() {
        put(&mut svc, "volumes", strings(mounts));
    }
    if !agent.secrets.is_empty() {
        put(
            &mut svc,
            "secrets",
            strings(agent.secrets.iter().map(|x| x.name.as_str())),
        );
    }

    let deps = start_after(config, agent);
    if !deps.is_empty() {
        let mut depends = Mapping::new();
        for dep in deps {
            let Some(dep_agent) = config.agent(dep) else {
                continue;
            };
            let healthy = dep_agent.required && dep_agent.health.probe != Probe::None;
            let condition = if healthy {
                "service_healthy"
            } else {
                "service_started"
            };
            let mut m = Mapping::new();
            put(&mut m, "condition", s(condition));
            put(&mut depends, names.of(dep), Value::Mapping(m));
        }
        put(&mut svc, "depends_on", Value::Mapping(depends));
    }

    if let Some(test) = health_test(&agent.health.probe, &opts.probe_command) {
        let h = &agent.health;
        let mut hc = Mapping::new();
        put(&mut hc, "test", strings(test));
        put(&mut hc, "interval", s(duration(h.interval)));
        put(&mut hc, "timeout", s(duration(h.timeout)));
        put(&mut hc, "retries", Value::from(h.retries));
        put(&mut hc, "start_period", s(duration(h.start_period)));
        put(&mut svc, "healthcheck", Value::Mapping(hc));
    }

    let restart = match agent.restart.policy {
        RestartMode::Always => "always",
        RestartMode::OnFailure => "on-failure",
        RestartMode::Never => "no",
    };
    put(&mut svc, "restart", s(restart));
    put(
        &mut svc,
        "stop_grace_period",
        s(duration(agent.stop_timeout)),
    );

    // Top-level service keys rather than `deploy.resources.limits`: both
    // docker-compose 1.29 and v2 apply these without `--compatibility`.
    if let Some(cpus) = agent.resources.cpus {
        put(&mut svc, "cpus", Value::from(cpus));
    }
    if let Some(memory) = agent.resources.memory {
        put(&mut svc, "mem_limit", Value::from(memory.bytes()));
    }
    if let Some(pids) = agent.resources.pids {
        put(&mut svc, "pids_limit", Value::from(pids));
    }
    put(&mut svc, "cap_drop", strings(["ALL"]));
    if !agent.security.cap_add.is_empty() {
        put(&mut svc, "cap_add", strings(&agent.security.cap_add));
    }
    put(
        &mut svc,
        "security_opt",
        strings(["no-new-privileges:true"]),
    );
    if agent.security.read_only {
        put(&mut svc, "read_only", Value::Bool(true));
    }
    if ipc_host {
        put(&mut svc, "ipc", s("host"));
    }

    let mut deploy = Mapping::new();
    put(&mut deploy, "replicas", Value::from(agent.replicas));
    if reserve_gpus && agent.gpu.is_some() {
        let mut device = Mapping::new();
        put(&mut device, "driver", s("nvidia"));
        put(&mut device, "count", Value::from(1));
        put(&mut device, "capabilities", strings(["gpu"]));
        let mut reservations = Mapping::new();
        put(
            &mut reservations,
            "devices",
            Value::Sequence(vec![Value::Mapping(device)]),
        );
        let mut resources = Mapping::new();
        put(&mut resources, "reservations", Value::Mapping(reservations));
        put(&mut deploy, "resources", Value::Mapping(resources));
    }
    put(&mut svc, "deploy", Value::Mapping(deploy));
    svc
}

/// The health check's `test`: HTTP and TCP probes through the probe
/// command, exec probes as they are, none without a probe.
fn health_test(probe: &Probe, probe_command: &[String]) -> Option<Vec<String>> {
    let mut test = vec!["CMD".to_string()];
    match probe {
        Probe::None => return None,
        Probe::Exec { command } => test.extend(command.iter().cloned()),
        Probe::Http { .. } | Probe::Tcp { .. } => {
            test.extend(probe_command.iter().cloned());
            test.extend(probe_url(probe));
        }
    }
    Some(test)
}

/// A duration as Compose reads it (Go's syntax: `90s`, `500ms`, `250us`);
/// `Duration`'s own form may use days, which Go's parser lacks.
fn duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos % 1_000_000_000 == 0 {
        format!("{}s", nanos / 1_000_000_000)
    } else if nanos % 1_000_000 == 0 {
        format!("{}ms", nanos / 1_000_000)
    } else {
        format!("{}us", nanos.div_ceil(1_000))
    }
}

/// MPS memory limits take a unit of `M` or `G`; rounding up never gives a
/// client less than it asked for.
fn mps_memory(bytes: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    const GIB: u64 = 1024 * MIB;
    if bytes % GIB == 0 {
        format!("{}G", bytes / GIB)
    } else {
        format!("{}M", bytes.div_ceil(MIB))
    }
}

/// `$` -> `$$` in every string value (not in keys, which Compose does not
/// interpolate).
fn escape_dollars(v: &mut Value) {
    match v {
        Value::String(text) if text.contains('$') => *text = text.replace('$', "$$"),
        Value::Sequence(items) => items.iter_mut().for_each(escape_dollars),
        Value::Mapping(m) => m.values_mut().for_each(escape_dollars),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_go_syntax() {
        assert_eq!(duration(Duration::from_secs(90)), "90s");
        assert_eq!(duration(Duration::from_secs(30 * 86400)), "2592000s");
        assert_eq!(duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(duration(Duration::ZERO), "0s");
    }

    #[test]
    fn mps_memory_units() {
        assert_eq!(mps_memory(4 << 30), "4G");
        assert_eq!(mps_memory(1536 << 20), "1536M");
        assert_eq!(mps_memory(1), "1M");
    }
}
