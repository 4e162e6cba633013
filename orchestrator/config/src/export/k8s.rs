//! `export k8s`: a host's agents as Kubernetes manifests, for a fleet that
//! outgrew federation of a few hosts. One YAML stream: a Namespace (by
//! default the host name), then per agent a Deployment and, when the agent
//! has ports, a ClusterIP Service with named ports.
//!
//! Every object is named by [`dns_label`](super::dns_label) (`ServiceRegistry`
//! -> `service-registry`), so peers reach an agent at that name, not at the
//! agent's own; the agent's name is in the `io.orchestrator.agent`
//! annotation. Health checks become `httpGet` / `tcpSocket` / `exec`
//! liveness and readiness probes, with a startup probe covering the
//! `start_period`. CPU and memory limits become requests and limits alike
//! (the config has one figure, and the scheduler needs a request).
//!
//! What Kubernetes manifests cannot express, and what is written instead:
//! - Start order. Kubernetes has no dependencies between Deployments; the
//!   agents an agent waits for are in the `io.orchestrator.depends-on`
//!   annotation (their object names). No init container waits for them:
//!   the only image at hand is the agent image, whose probe checks loopback
//!   addresses and never resolves names, so it cannot wait on a Service.
//!   Agents must tolerate peers that are not up yet.
//! - GPU sharing. A MIG request asks for `nvidia.com/mig-<profile>: 1`
//!   (the NVIDIA device plugin's mixed strategy; `+me` becomes `.me`, since
//!   `+` is not allowed in a resource name). Exclusive, MPS and time-slice
//!   requests all ask for `nvidia.com/gpu: 1`: whether that GPU is shared,
//!   by MPS or time slicing, is the device plugin's cluster-side setting.
//!   The annotations `io.orchestrator.gpu-sharing`, `...mps-memory` and
//!   `...mps-compute` say what the agent asked for. A fallback chain
//!   exports its first choice and is named in `io.orchestrator.gpu-fallback`.
//! - Restart policies. A Deployment always restarts; `never` and
//!   `on-failure` are in `io.orchestrator.restart`, backoff and crash-loop
//!   settings are Kubernetes' own.
//! - The pids limit (a node setting in Kubernetes), published host ports,
//!   host port ranges and their host IPs (a Service is cluster-internal:
//!   every replica is reached through the Service's one port, so a range
//!   has no counterpart), and the per-replica number (`ORCH_REPLICA` is set
//!   only for one replica).
//! - Autoscaling and rollouts: `replicas` is the count the agent starts
//!   with; `autoscale:` is not turned into a HorizontalPodAutoscaler (its
//!   GPU and agent-metric signals need adapters a cluster may not have),
//!   and `rollout:` keeps Kubernetes' own rolling update.
//! - Named volumes become PersistentVolumeClaims of that name, which the
//!   export does not create (it knows no size or storage class); bind
//!   mounts become `hostPath` volumes, and relative ones are refused.
//!
//! - Secrets. Each secret an agent names is a reference to a Kubernetes
//!   Secret named by its [`dns_label`] (`HF_TOKEN` -> `hf-token`), with the
//!   value under the key `NAME`, mounted read-only (mode 0400) at
//!   `/run/secrets/NAME` as on the host, with `NAME_FILE` set. The export
//!   never reads the file: create the Secret from it on the cluster,
//!   `kubectl create secret generic hf-token -n NAMESPACE
//!   --from-file=HF_TOKEN=/etc/orchestrator/secrets/hf_token`.
//!
//! Every `$` in environment values and arguments is written as `$$`,
//! because Kubernetes expands `$(VAR)` there and the supervisor does not.

use std::collections::BTreeMap;

use orch_core::gpu::SliceRequest;
use orch_core::model::{Agent, HealthCheck, HostConfig, Probe, Protocol, RestartMode};
use serde_yaml::{Mapping, Value};

use super::{
    ExportError, Names, agents_of, ceil_secs, check_name, contract_env, describe_chain,
    describe_request, dns_label, group_names, put, s, select_groups, start_after, string_map,
    strings, write_yaml,
};

/// The device plugin's resource for a whole (possibly shared) GPU.
pub const RESOURCE_GPU: &str = "nvidia.com/gpu";

const MANAGED_BY: &str = "orchestratorctl";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct K8sOptions {
    /// Groups to export; empty for all. The groups they depend on come too.
    pub groups: Vec<String>,
    /// Namespace of every object; by default the host name as a DNS label.
    pub namespace: Option<String>,
    /// The config file the export was made from, for an annotation.
    pub source: Option<String>,
}

/// The manifests for `config`'s groups selected by `opts`.
pub fn render(config: &HostConfig, opts: &K8sOptions) -> Result<String, ExportError> {
    let namespace = match &opts.namespace {
        Some(ns) => {
            check_name("Kubernetes namespace", ns, &[])?;
            ns.clone()
        }
        None => dns_label(&config.host.name),
    };
    let groups = select_groups(config, &opts.groups)?;
    let names = Names::for_config(config)?;

    let mut docs = vec![namespace_doc(
        config,
        &namespace,
        opts,
        &group_names(&groups),
    )];
    for agent in agents_of(&groups) {
        let name = names.of(&agent.name);
        docs.push(deployment(config, agent, &names, &namespace)?);
        if !agent.ports.is_empty() {
            docs.push(service(agent, name, &namespace));
        }
    }
    let header = vec![format!(
        "Kubernetes manifests for host {}, made by `orchestratorctl export k8s`.",
        config.host.name
    )];
    Ok(write_yaml(&header, &docs))
}

fn namespace_doc(
    config: &HostConfig,
    namespace: &str,
    opts: &K8sOptions,
    groups: &[String],
) -> Value {
    let mut annotations = Mapping::new();
    put(
        &mut annotations,
        orch_core::container::labels::HOST,
        s(&config.host.name),
    );
    put(
        &mut annotations,
        "io.orchestrator.groups",
        s(groups.join(",")),
    );
    if let Some(source) = &opts.source {
        put(&mut annotations, "io.orchestrator.source", s(source));
    }
    let mut labels = Mapping::new();
    put(&mut labels, "app.kubernetes.io/managed-by", s(MANAGED_BY));
    let mut meta = Mapping::new();
    put(&mut meta, "name", s(namespace));
    put(&mut meta, "labels", Value::Mapping(labels));
    put(&mut meta, "annotations", Value::Mapping(annotations));
    object("v1", "Namespace", meta, None)
}

fn object(api_version: &str, kind: &str, metadata: Mapping, spec: Option<Mapping>) -> Value {
    let mut m = Mapping::new();
    put(&mut m, "apiVersion", s(api_version));
    put(&mut m, "kind", s(kind));
    put(&mut m, "metadata", Value::Mapping(metadata));
    if let Some(spec) = spec {
        put(&mut m, "spec", Value::Mapping(spec));
    }
    Value::Mapping(m)
}

/// A label value: at most 63 characters of `[A-Za-z0-9_.-]`, beginning and
/// ending with a letter or digit.
fn label_value(text: &str) -> String {
    let mapped: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    mapped
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

fn labels(agent: &Agent, name: &str) -> Mapping {
    let mut m = Mapping::new();
    put(&mut m, "app.kubernetes.io/name", s(name));
    put(
        &mut m,
        "app.kubernetes.io/part-of",
        s(label_value(&agent.group)),
    );
    put(&mut m, "app.kubernetes.io/managed-by", s(MANAGED_BY));
    m
}

fn annotations(config: &HostConfig, agent: &Agent, names: &Names) -> Mapping {
    use orch_core::container::labels::{AGENT, GROUP, HOST};
    let mut m = Mapping::new();
    put(&mut m, HOST, s(&config.host.name));
    put(&mut m, GROUP, s(&agent.group));
    put(&mut m, AGENT, s(&agent.name));
    let deps: Vec<&str> = start_after(config, agent)
        .into_iter()
        .map(|d| names.of(d))
        .collect();
    if !deps.is_empty() {
        put(&mut m, "io.orchestrator.depends-on", s(deps.join(",")));
    }
    if !agent.required {
        put(&mut m, "io.orchestrator.required", s("false"));
    }
    let restart = match agent.restart.policy {
        RestartMode::Always => "always",
        RestartMode::OnFailure => "on-failure",
        RestartMode::Never => "never",
    };
    put(&mut m, "io.orchestrator.restart", s(restart));
    if let Some(gpu) = &agent.gpu {
        put(
            &mut m,
            "io.orchestrator.gpu-request",
            s(describe_request(&gpu.kind)),
        );
        put(
            &mut m,
            "io.orchestrator.gpu-sharing",
            s(gpu.kind.kind_name()),
        );
        match &gpu.kind {
            SliceRequest::Mig { profile } => {
                put(&mut m, "io.orchestrator.mig-profile", s(profile));
            }
            SliceRequest::Mps { memory, compute } => {
                put(&mut m, "io.orchestrator.mps-memory", s(memory));
                put(&mut m, "io.orchestrator.mps-compute", s(compute));
            }
            SliceRequest::Exclusive | SliceRequest::TimeSlice => {}
        }
        if gpu.fallback.is_some() {
            put(
                &mut m,
                "io.orchestrator.gpu-fallback",
                s(describe_chain(gpu)),
            );
        }
    }
    m
}

fn deployment(
    config: &HostConfig,
    agent: &Agent,
    names: &Names,
    namespace: &str,
) -> Result<Value, ExportError> {
    let name = names.of(&agent.name);
    let labels = labels(agent, name);
    let annotations = annotations(config, agent, names);

    let (volumes, mounts) = volumes(agent)?;
    let mut container = Mapping::new();
    put(&mut container, "name", s(name));
    put(&mut container, "image", s(&agent.image));
    // The agent image is built locally and never pushed; `Always` (the
    // default for `:latest`) would fail to pull it.
    put(&mut container, "imagePullPolicy", s("IfNotPresent"));
    if let Some(command) = &agent.command {
        put(
            &mut container,
            "args",
            strings(command.iter().map(|a| escape(a))),
        );
    }
    let env: Vec<Value> = contract_env(config, agent)
        .iter()
        .map(|(k, v)| {
            let mut e = Mapping::new();
            put(&mut e, "name", s(k));
            put(&mut e, "value", s(escape(v)));
            Value::Mapping(e)
        })
        .collect();
    put(&mut container, "env", Value::Sequence(env));
    let ports = container_ports(agent);
    if !ports.is_empty() {
        put(&mut container, "ports", Value::Sequence(ports));
    }
    if let Some(handler) = probe_handler(&agent.health.probe) {
        let h = &agent.health;
        put(
            &mut container,
            "livenessProbe",
            probe(&handler, h, h.retries.max(1)),
        );
        put(
            &mut container,
            "readinessProbe",
            probe(&handler, h, h.retries.max(1)),
        );
        if !h.start_period.std().is_zero() {
            // Failures within the start period do not count, then `retries`
            // more are allowed: the same budget Docker gives.
            let period = ceil_secs(h.interval);
            let start = ceil_secs(h.start_period).div_ceil(period);
            let threshold = u32::try_from(start)
                .unwrap_or(u32::MAX)
                .saturating_add(h.retries.max(1));
            put(
                &mut container,
                "startupProbe",
                probe(&handler, h, threshold),
            );
        }
    }
    if let Some(resources) = resources(agent) {
        put(&mut container, "resources", Value::Mapping(resources));
    }
    let mut caps = Mapping::new();
    put(&mut caps, "drop", strings(["ALL"]));
    if !agent.security.cap_add.is_empty() {
        put(&mut caps, "add", strings(&agent.security.cap_add));
    }
    let mut security = Mapping::new();
    put(
        &mut security,
        "allowPrivilegeEscalation",
        Value::Bool(false),
    );
    put(&mut security, "capabilities", Value::Mapping(caps));
    put(
        &mut security,
        "readOnlyRootFilesystem",
        Value::Bool(agent.security.read_only),
    );
    put(&mut container, "securityContext", Value::Mapping(security));
    if !mounts.is_empty() {
        put(&mut container, "volumeMounts", Value::Sequence(mounts));
    }

    let mut pod_spec = Mapping::new();
    // Agents find peers by Service name; the legacy `<NAME>_SERVICE_*`
    // variables for every Service in the namespace would only be noise.
    put(&mut pod_spec, "enableServiceLinks", Value::Bool(false));
    // Agents do not talk to the Kubernetes API.
    put(
        &mut pod_spec,
        "automountServiceAccountToken",
        Value::Bool(false),
    );
    put(
        &mut pod_spec,
        "terminationGracePeriodSeconds",
        Value::from(ceil_secs(agent.stop_timeout)),
    );
    put(
        &mut pod_spec,
        "containers",
        Value::Sequence(vec![Value::Mapping(container)]),
    );
    if !volumes.is_empty() {
        put(&mut pod_spec, "volumes", Value::Sequence(volumes));
    }

    let mut template_meta = Mapping::new();
    put(&mut template_meta, "labels", Value::Mapping(labels.clone()));
    put(
        &mut template_meta,
        "annotations",
        Value::Mapping(annotations.clone()),
    );
    let mut template = Mapping::new();
    put(&mut template, "metadata", Value::Mapping(template_meta));
    put(&mut template, "spec", Value::Mapping(pod_spec));

    let mut selector_labels = Mapping::new();
    put(&mut selector_labels, "app.kubernetes.io/name", s(name));
    let mut selector = Mapping::new();
    put(
        &mut selector,
        "matchLabels",
        Value::Mapping(selector_labels),
    );

    let mut spec = Mapping::new();
    put(&mut spec, "replicas", Value::from(agent.replicas));
    put(&mut spec, "selector", Value::Mapping(selector));
    if agent.gpu.is_some() {
        // A rolling update starts the new pod before the old one stops, and
        // would wait for a second GPU (slice) that is usually not there.
        let mut strategy = Mapping::new();
        put(&mut strategy, "type", s("Recreate"));
        put(&mut spec, "strategy", Value::Mapping(strategy));
    }
    put(&mut spec, "template", Value::Mapping(template));

    let mut meta = Mapping::new();
    put(&mut meta, "name", s(name));
    put(&mut meta, "namespace", s(namespace));
    put(&mut meta, "labels", Value::Mapping(labels));
    put(&mut meta, "annotations", Value::Mapping(annotations));
    Ok(object("apps/v1", "Deployment", meta, Some(spec)))
}

/// Kubernetes expands `$(VAR)` in `args` and `env` values, and `$$` is its
/// escape for a `$`.
fn escape(text: &str) -> String {
    text.replace('$', "$$")
}

fn protocol(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
    }
}

/// Port names are IANA service names: at most 15 characters, lowercase
/// letters, digits and `-`, with a letter. `tcp-65535` fits.
fn port_name(port: u16, proto: Protocol) -> String {
    match proto {
        Protocol::Tcp => format!("tcp-{port}"),
        Protocol::Udp => format!("udp-{port}"),
    }
}

/// The agent's container ports, each once, then the health probe's port
/// when it is not among them.
fn container_ports(agent: &Agent) -> Vec<Value> {
    let mut seen: Vec<(u16, Protocol)> = Vec::new();
    for p in &agent.ports {
        if !seen.contains(&(p.container_port, p.protocol)) {
            seen.push((p.container_port, p.protocol));
        }
    }
    let mut out: Vec<Value> = seen
        .iter()
        .map(|&(port, proto)| {
            let mut m = Mapping::new();
            put(&mut m, "name", s(port_name(port, proto)));
            put(&mut m, "containerPort", Value::from(port));
            put(&mut m, "protocol", s(protocol(proto)));
            Value::Mapping(m)
        })
        .collect();
    if let Some(port) = agent.health.probe.port()
        && !seen.contains(&(port, Protocol::Tcp))
    {
        let mut m = Mapping::new();
        put(&mut m, "name", s("health"));
        put(&mut m, "containerPort", Value::from(port));
        put(&mut m, "protocol", s("TCP"));
        out.push(Value::Mapping(m));
    }
    out
}

fn probe_handler(p: &Probe) -> Option<(&'static str, Mapping)> {
    let mut m = Mapping::new();
    match p {
        Probe::None => None,
        Probe::Http { port, path } => {
            let path = if path.starts_with('/') {
                path.clone()
            } else {
                format!("/{path}")
            };
            put(&mut m, "path", s(path));
            put(&mut m, "port", Value::from(*port));
            Some(("httpGet", m))
        }
        Probe::Tcp { port } => {
            put(&mut m, "port", Value::from(*port));
            Some(("tcpSocket", m))
        }
        Probe::Exec { command } => {
            put(&mut m, "command", strings(command));
            Some(("exec", m))
        }
    }
}

fn probe(handler: &(&'static str, Mapping), h: &HealthCheck, failure_threshold: u32) -> Value {
    let mut m = Mapping::new();
    put(&mut m, handler.0, Value::Mapping(handler.1.clone()));
    put(&mut m, "periodSeconds", Value::from(ceil_secs(h.interval)));
    put(&mut m, "timeoutSeconds", Value::from(ceil_secs(h.timeout)));
    put(&mut m, "failureThreshold", Value::from(failure_threshold));
    Value::Mapping(m)
}

/// CPU in millicores (`800m`, or whole cores as `2`).
fn cpu_quantity(cpus: f64) -> Option<String> {
    let milli = (cpus * 1000.0).round();
    if !(1.0..=1e12).contains(&milli) {
        return None;
    }
    let milli = milli as u64;
    Some(if milli % 1000 == 0 {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    })
}

/// Memory in binary units (`2Gi`, `1536Mi`), or bytes.
fn memory_quantity(bytes: u64) -> String {
    for (unit, per) in [("Gi", 1u64 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
        if bytes >= per && bytes % per == 0 {
            return format!("{}{unit}", bytes / per);
        }
    }
    bytes.to_string()
}

/// The device plugin's resource name for a GPU request.
pub fn gpu_resource(kind: &SliceRequest) -> String {
    match kind {
        SliceRequest::Mig { profile } => {
            format!("nvidia.com/mig-{}", profile.to_string().replace('+', "."))
        }
        SliceRequest::Mps { .. } | SliceRequest::Exclusive | SliceRequest::TimeSlice => {
            RESOURCE_GPU.to_string()
        }
    }
}

fn resources(agent: &Agent) -> Option<Mapping> {
    let mut figures: BTreeMap<String, String> = BTreeMap::new();
    if let Some(cpu) = agent.resources.cpus.and_then(cpu_quantity) {
        figures.insert("cpu".into(), cpu);
    }
    if let Some(memory) = agent.resources.memory.filter(|m| m.bytes() > 0) {
        figures.insert("memory".into(), memory_quantity(memory.bytes()));
    }
    if figures.is_empty() && agent.gpu.is_none() {
        return None;
    }
    let mut limits = Mapping::new();
    for (k, v) in &figures {
        put(&mut limits, k, s(v));
    }
    // Extended resources need only a limit; the request defaults to it.
    if let Some(gpu) = &agent.gpu {
        put(&mut limits, &gpu_resource(&gpu.kind), Value::from(1));
    }
    let mut m = Mapping::new();
    if !figures.is_empty() {
        put(&mut m, "requests", string_map(&figures));
    }
    put(&mut m, "limits", Value::Mapping(limits));
    Some(m)
}

/// Pod volumes and the container's mounts of them.
fn volumes(agent: &Agent) -> Result<(Vec<Value>, Vec<Value>), ExportError> {
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    for (i, v) in agent.volumes.iter().enumerate() {
        let name = format!("volume-{i}");
        let mut vol = Mapping::new();
        put(&mut vol, "name", s(&name));
        if v.is_bind() {
            if !v.source.starts_with('/') {
                return Err(ExportError::Unsupported {
                    agent: agent.name.clone(),
                    reason: format!(
                        "the volume `{v}` is relative to the config file; a Kubernetes hostPath must be absolute"
                    ),
                });
            }
            let mut host_path = Mapping::new();
            put(&mut host_path, "path", s(&v.source));
            put(&mut vol, "hostPath", Value::Mapping(host_path));
        } else {
            let mut claim = Mapping::new();
            put(&mut claim, "claimName", s(dns_label(&v.source)));
            if v.read_only {
                put(&mut claim, "readOnly", Value::Bool(true));
            }
            put(&mut vol, "persistentVolumeClaim", Value::Mapping(claim));
        }
        volumes.push(Value::Mapping(vol));
        let mut mount = Mapping::new();
        put(&mut mount, "name", s(&name));
        put(&mut mount, "mountPath", s(&v.target));
        if v.read_only {
            put(&mut mount, "readOnly", Value::Bool(true));
        }
        mounts.push(Value::Mapping(mount));
    }
    for (i, secret) in agent.secrets.iter().enumerate() {
        let name = format!("secret-{i}");
        let mut item = Mapping::new();
        put(&mut item, "key", s(&secret.name));
        put(&mut item, "path", s(&secret.name));
        let mut source = Mapping::new();
        put(&mut source, "secretName", s(dns_label(&secret.name)));
        put(
            &mut source,
            "items",
            Value::Sequence(vec![Value::Mapping(item)]),
        );
        put(&mut source, "defaultMode", Value::from(0o400));
        let mut vol = Mapping::new();
        put(&mut vol, "name", s(&name));
        put(&mut vol, "secret", Value::Mapping(source));
        volumes.push(Value::Mapping(vol));
        let mut mount = Mapping::new();
        put(&mut mount, "name", s(&name));
        put(&mut mount, "mountPath", s(secret.target()));
        put(&mut mount, "subPath", s(&secret.name));
        put(&mut mount, "readOnly", Value::Bool(true));
        mounts.push(Value::Mapping(mount));
    }
    Ok((volumes, mounts))
}

fn service(agent: &Agent, name: &str, namespace: &str) -> Value {
    let mut seen: Vec<(u16, Protocol)> = Vec::new();
    for p in &agent.ports {
        if !seen.contains(&(p.container_port, p.protocol)) {
            seen.push((p.container_port, p.protocol));
        }
    }
    let ports: Vec<Value> = seen
        .iter()
        .map(|&(port, proto)| {
            let mut m = Mapping::new();
            put(&mut m, "name", s(port_name(port, proto)));
            put(&mut m, "protocol", s(protocol(proto)));
            put(&mut m, "port", Value::from(port));
            put(&mut m, "targetPort", s(port_name(port, proto)));
            Value::Mapping(m)
        })
        .collect();
    let mut selector = Mapping::new();
    put(&mut selector, "app.kubernetes.io/name", s(name));
    let mut spec = Mapping::new();
    put(&mut spec, "type", s("ClusterIP"));
    put(&mut spec, "selector", Value::Mapping(selector));
    put(&mut spec, "ports", Value::Sequence(ports));

    let mut annotations = Mapping::new();
    put(
        &mut annotations,
        orch_core::container::labels::AGENT,
        s(&agent.name),
    );
    let mut meta = Mapping::new();
    put(&mut meta, "name", s(name));
    put(&mut meta, "namespace", s(namespace));
    put(&mut meta, "labels", Value::Mapping(labels(agent, name)));
    put(&mut meta, "annotations", Value::Mapping(annotations));
    object("v1", "Service", meta, Some(spec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(cpu_quantity(0.8).as_deref(), Some("800m"));
        assert_eq!(cpu_quantity(2.0).as_deref(), Some("2"));
        assert_eq!(cpu_quantity(0.0001), None);
        assert_eq!(memory_quantity(2 << 30), "2Gi");
        assert_eq!(memory_quantity(1536 << 20), "1536Mi");
        assert_eq!(memory_quantity(1000), "1000");
    }

    #[test]
    fn label_values() {
        assert_eq!(label_value("vision_gpu"), "vision_gpu");
        assert_eq!(label_value("_x y."), "x-y");
        assert_eq!(label_value(&"a".repeat(70)).len(), 63);
    }

    #[test]
    fn mig_resource_names() {
        let mig = |p: &str| SliceRequest::Mig {
            profile: orch_core::gpu::MigProfileName::parse(p).unwrap(),
        };
        assert_eq!(gpu_resource(&mig("1g.10gb")), "nvidia.com/mig-1g.10gb");
        assert_eq!(gpu_resource(&mig("1g.5gb+me")), "nvidia.com/mig-1g.5gb.me");
        assert_eq!(gpu_resource(&SliceRequest::Exclusive), RESOURCE_GPU);
    }
}
