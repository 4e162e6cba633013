//! Decoding of `version: 1` configs.
//!
//! Every field an agent can carry is decoded against a base: the builtin
//! defaults for the `defaults:` section, and that section for each agent.
//! So a default is merged field by field (an agent setting `health.http`
//! keeps the default `interval`), and a mistake inside `defaults:` is
//! reported once, at its own line.

use std::collections::BTreeMap;

use orch_core::gpu::{self, GpuRequest, MigProfileName, SliceRequest};
use orch_core::model::{
    Agent, AgentDefaults, Amount, Autoscale, Backoff, ControlSettings, CrashLoop, Federation,
    GpuInjection, GpuPolicy, GpuSelector, Group, HealthCheck, HostConfig, HostInfo, MAX_REPLICAS,
    MetricTarget, MetricsSettings, MpsSettings, OverLimit, Peer, PeerRole, PortMapping, Probe,
    RemoteCommands, Resources, RestartMode, RestartPolicy, Rollout, RuntimeSettings, Security,
    Sharing, ShutdownMode, Slo, VolumeMount, valid_metric_name,
};
use orch_core::units::{ByteSize, Duration, Percent};

use crate::decode::{self as de, MapReader};
use crate::diag::{Diagnostics, closest};
use crate::source::{AgentSource, GroupSource, SourceIndex, valid_name};
use crate::yaml::{Node, Value};

pub const AGENT_KEYS: &[&str] = &[
    "image",
    "command",
    "env",
    "ports",
    "volumes",
    "depends_on",
    "gpu",
    "restart",
    "health",
    "resources",
    "security",
    "replicas",
    "required",
    "labels",
    "stop_timeout",
    "config",
    "script_path",
    "secrets",
    "autoscale",
];

/// Keys of a group that `defaults:` also takes, as the default of every group.
const GROUP_DEFAULT_KEYS: &[&str] = &["rollout", "min_healthy"];

/// Decodes a v1 document. Returns what could be decoded; the caller checks
/// `d.has_errors()`.
pub fn decode(root: &Node, d: &mut Diagnostics) -> Option<(HostConfig, SourceIndex)> {
    let mut top = MapReader::new(root, "the config", d)?;
    match top.take("version") {
        Some(v) => {
            if let Some(n) = de::uint(v, "version", 0, u64::from(u32::MAX), d)
                && n != 1
            {
                d.error_help(
                    "version",
                    v.span,
                    format!("unsupported config version {n}"),
                    "this orchestrator reads `version: 1`",
                );
            }
        }
        None => d.error_help(
            "version",
            root.span,
            "missing `version`",
            "start the file with `version: 1`",
        ),
    }

    let host = match top.take("host") {
        Some(n) => host_info(n, d),
        None => {
            d.error_help(
                "missing",
                root.span,
                "missing `host`",
                "add `host: {name: <hostname>}`",
            );
            None
        }
    };
    let host_name = host.as_ref().map(|h| h.name.clone()).unwrap_or_default();

    let builtin = AgentDefaults::default();
    let defaults = match top.take("defaults") {
        Some(n) => agent_defaults(n, &builtin, d),
        None => builtin,
    };
    let gpus = top
        .take("gpus")
        .map(|n| gpu_policies(n, d))
        .unwrap_or_default();
    let runtime = match top.take("runtime") {
        Some(n) => runtime_settings(n, &host_name, d),
        None => RuntimeSettings::defaults_for(&host_name),
    };
    let mut index = SourceIndex::default();
    let secrets = top
        .take("secrets")
        .map(|n| crate::secrets::decode_host(n, &mut index, d))
        .unwrap_or_default();
    let groups = match top.take("groups") {
        Some(n) => groups(n, &defaults, &mut index, d),
        None => {
            d.error_help(
                "missing",
                root.span,
                "missing `groups`",
                "declare at least one group of agents under `groups:`",
            );
            Vec::new()
        }
    };
    let federation = top
        .take("federation")
        .and_then(|n| federation(n, &host_name, d));
    let metrics = top
        .take("metrics")
        .map(|n| metrics(n, d))
        .unwrap_or_default();
    let control = top
        .take("control")
        .map(|n| control(n, d))
        .unwrap_or_default();
    top.finish(d);

    let mut config = HostConfig {
        host: host?,
        defaults,
        gpus,
        groups,
        runtime,
        federation,
        metrics,
        control,
        secrets,
    };
    crate::secrets::resolve(&mut config, &index, d);
    Some((config, index))
}

fn host_info(node: &Node, d: &mut Diagnostics) -> Option<HostInfo> {
    let mut m = MapReader::new(node, "`host`", d)?;
    let name = match m.take("name") {
        Some(n) => {
            let s = de::name(n, "the host name", d);
            if let Some(s) = &s
                && !valid_name(s)
            {
                d.error_help(
                    "name",
                    n.span,
                    format!("`{s}` is not a valid host name"),
                    "use letters, digits, `_`, `-` and `.`, starting with a letter or digit",
                );
            }
            s
        }
        None => {
            d.error("missing", node.span, "`host` needs a `name`");
            None
        }
    };
    let labels = m
        .take("labels")
        .and_then(|n| de::string_map(n, "host labels", d))
        .unwrap_or_default();
    m.finish(d);
    Some(HostInfo {
        name: name?,
        labels,
    })
}

/// The `defaults:` section. Keys that only make sense per agent get a
/// message saying so instead of "unknown key".
fn agent_defaults(node: &Node, base: &AgentDefaults, d: &mut Diagnostics) -> AgentDefaults {
    let Some(mut m) = MapReader::new(node, "`defaults`", d) else {
        return base.clone();
    };
    let mut out = base.clone();
    if let Some(n) = m.take("image") {
        out.image = de::name(n, "the default image", d);
    }
    if let Some(n) = m.take("env") {
        reserved_env(n, d);
        out.env = merge_map(&base.env, de::string_map(n, "`env`", d));
    }
    if let Some(n) = m.take("labels") {
        out.labels = merge_map(&base.labels, de::string_map(n, "`labels`", d));
    }
    if let Some(n) = m.take("restart") {
        out.restart = restart(n, &base.restart, d);
    }
    if let Some(n) = m.take("health") {
        out.health = health(n, &base.health, d);
    }
    if let Some(n) = m.take("resources") {
        out.resources = resources(n, &base.resources, d);
    }
    if let Some(n) = m.take("security") {
        out.security = security(n, &base.security, d);
    }
    if let Some(n) = m.take("stop_timeout") {
        out.stop_timeout = de::duration(n, "`stop_timeout`", d).unwrap_or(base.stop_timeout);
    }
    if let Some(n) = m.take("rollout") {
        out.rollout = rollout(n, &base.rollout, d);
    }
    if let Some(n) = m.take("min_healthy") {
        out.min_healthy = min_healthy(n, d).unwrap_or(base.min_healthy);
    }
    if let Some(n) = m.take("gpu") {
        out.gpu_over_limit = defaults_gpu(n, d).unwrap_or(base.gpu_over_limit);
    }
    for (k, _) in m.rest() {
        let key = k.as_str().unwrap_or("~");
        if AGENT_KEYS.contains(&key) {
            d.error_help(
                "not-a-default",
                k.span,
                format!("`{key}` cannot be set in `defaults`"),
                format!("set `{key}` on each agent that needs it"),
            );
        } else {
            let known = [
                "image",
                "env",
                "labels",
                "restart",
                "health",
                "resources",
                "security",
                "stop_timeout",
                GROUP_DEFAULT_KEYS[0],
                GROUP_DEFAULT_KEYS[1],
            ];
            match closest(key, known) {
                Some(s) => d.error_help(
                    "unknown-key",
                    k.span,
                    format!("unknown key `{key}` in `defaults`"),
                    format!("did you mean `{s}`?"),
                ),
                None => d.error_help(
                    "unknown-key",
                    k.span,
                    format!("unknown key `{key}` in `defaults`"),
                    format!("known keys here: {}", known.join(", ")),
                ),
            }
        }
    }
    out
}

/// `defaults: {gpu: {over_limit: restart}}`: of an agent's `gpu:`, only
/// what happens over its limit has a default; the request is the agent's.
fn defaults_gpu(node: &Node, d: &mut Diagnostics) -> Option<OverLimit> {
    let mut m = MapReader::new(node, "`defaults.gpu`", d)?;
    let out = m.take("over_limit").and_then(|n| over_limit_mode(n, d));
    for (k, _) in m.rest() {
        let key = k.as_str().unwrap_or("~");
        d.error_help(
            "not-a-default",
            k.span,
            format!("`gpu.{key}` cannot be set in `defaults`"),
            "only `gpu.over_limit` has a default; set the GPU request on each agent that needs one",
        );
    }
    out
}

/// `ORCH_*` variables are the agent contract's; a config cannot set them.
/// (The one check, for both formats.)
pub(crate) fn reserved_env(node: &Node, d: &mut Diagnostics) {
    for (k, _) in node.as_map().unwrap_or(&[]) {
        if let Some(name) = k.as_str()
            && orch_core::container::is_reserved_env(name)
        {
            d.error_help(
                "reserved",
                k.span,
                format!("`{name}` is set by the orchestrator and cannot be given in `env`"),
                "rename the variable",
            );
        }
    }
}

fn merge_map(
    base: &BTreeMap<String, String>,
    over: Option<BTreeMap<String, String>>,
) -> BTreeMap<String, String> {
    let mut out = base.clone();
    out.extend(over.unwrap_or_default());
    out
}

pub(crate) fn restart(node: &Node, base: &RestartPolicy, d: &mut Diagnostics) -> RestartPolicy {
    // `restart: always` is short for `restart: {policy: always}`.
    if let Value::Scalar { .. } = node.value {
        let mut out = base.clone();
        if let Some(p) = restart_mode(node, d) {
            out.policy = p;
        }
        return out;
    }
    let Some(mut m) = MapReader::new(node, "`restart`", d) else {
        return base.clone();
    };
    let mut out = base.clone();
    if let Some(n) = m.take("policy") {
        out.policy = restart_mode(n, d).unwrap_or(base.policy);
    }
    if let Some(n) = m.take("backoff") {
        out.backoff = backoff(n, &base.backoff, d);
    }
    if let Some(n) = m.take("crashloop") {
        out.crashloop = crashloop(n, &base.crashloop, d);
    }
    m.finish(d);
    out
}

fn restart_mode(node: &Node, d: &mut Diagnostics) -> Option<RestartMode> {
    let s = de::string(node, "the restart policy", d)?;
    match s.as_str() {
        "always" => Some(RestartMode::Always),
        "on-failure" => Some(RestartMode::OnFailure),
        "never" | "no" => Some(RestartMode::Never),
        other => {
            let hint = closest(other, ["always", "on-failure", "never"])
                .map(|c| format!("did you mean `{c}`?"))
                .unwrap_or_else(|| "use `always`, `on-failure` or `never`".into());
            d.error_help(
                "enum",
                node.span,
                format!("unknown restart policy `{other}`"),
                hint,
            );
            None
        }
    }
}

fn backoff(node: &Node, base: &Backoff, d: &mut Diagnostics) -> Backoff {
    let Some(mut m) = MapReader::new(node, "`backoff`", d) else {
        return base.clone();
    };
    let mut out = base.clone();
    let initial = m.take("initial");
    if let Some(n) = initial {
        out.initial = de::duration(n, "`backoff.initial`", d).unwrap_or(base.initial);
    }
    if let Some(n) = m.take("max") {
        out.max = de::duration(n, "`backoff.max`", d).unwrap_or(base.max);
    }
    if let Some(n) = m.take("multiplier") {
        out.multiplier =
            de::float(n, "`backoff.multiplier`", 1.0, 10.0, d).unwrap_or(base.multiplier);
    }
    if let Some(n) = m.take("jitter") {
        out.jitter = de::percent(n, "`backoff.jitter`", d).unwrap_or(base.jitter);
    }
    if out.initial > out.max {
        d.error_help(
            "backoff",
            initial.map(|n| n.span).unwrap_or(node.span),
            format!(
                "`backoff.initial` ({}) is longer than `backoff.max` ({})",
                out.initial, out.max
            ),
            "make `initial` at most `max`",
        );
    }
    if out.initial == Duration::ZERO {
        d.error_help(
            "backoff",
            initial.map(|n| n.span).unwrap_or(node.span),
            "`backoff.initial` must be longer than zero",
            "a zero backoff restarts a crashing agent in a tight loop; use e.g. `100ms`",
        );
    }
    m.finish(d);
    out
}

fn crashloop(node: &Node, base: &CrashLoop, d: &mut Diagnostics) -> CrashLoop {
    let Some(mut m) = MapReader::new(node, "`crashloop`", d) else {
        return base.clone();
    };
    let mut out = base.clone();
    if let Some(n) = m.take("restarts") {
        out.restarts = de::uint(n, "`crashloop.restarts`", 1, 1000, d)
            .map(|v| v as u32)
            .unwrap_or(base.restarts);
    }
    if let Some(n) = m.take("window") {
        out.window = de::duration(n, "`crashloop.window`", d).unwrap_or(base.window);
    }
    if let Some(n) = m.take("stable") {
        out.stable = de::duration(n, "`crashloop.stable`", d).or(base.stable);
    }
    m.finish(d);
    out
}

pub(crate) fn health(node: &Node, base: &HealthCheck, d: &mut Diagnostics) -> HealthCheck {
    // `health: none` turns probing off.
    if let Value::Scalar { text, .. } = &node.value {
        if text == "none" {
            return HealthCheck {
                probe: Probe::None,
                ..base.clone()
            };
        }
        d.error_help(
            "type",
            node.span,
            format!("`health` must be a mapping or `none`, found `{text}`"),
            "e.g. `health: {http: {port: 8080, path: /health}}`",
        );
        return base.clone();
    }
    let Some(mut m) = MapReader::new(node, "`health`", d) else {
        return base.clone();
    };
    let mut out = base.clone();
    let mut probes = Vec::new();
    if let Some((k, n)) = m.take_entry("http") {
        probes.push(k.span);
        if let Some(p) = http_probe(n, d) {
            out.probe = p;
        }
    }
    if let Some((k, n)) = m.take_entry("tcp") {
        probes.push(k.span);
        if let Some(mut t) = MapReader::new(n, "`health.tcp`", d) {
            match t.take("port") {
                Some(p) => {
                    if let Some(port) = port_number(p, "`health.tcp.port`", d) {
                        out.probe = Probe::Tcp { port };
                    }
                }
                None => d.error("missing", n.span, "`health.tcp` needs a `port`"),
            }
            t.finish(d);
        }
    }
    if let Some((k, n)) = m.take_entry("none") {
        probes.push(k.span);
        if de::boolean(n, "`health.none`", d) == Some(true) {
            out.probe = Probe::None;
        } else {
            d.error_help(
                "health",
                n.span,
                "`health.none` can only be `true`",
                "remove it to keep a probe",
            );
        }
    }
    if let Some((k, n)) = m.take_entry("exec") {
        probes.push(k.span);
        if let Some(cmd) = de::strings(n, "`health.exec`", d) {
            if cmd.is_empty() {
                d.error("empty", n.span, "`health.exec` needs a command");
            } else {
                out.probe = Probe::Exec {
                    command: cmd.into_iter().map(|(s, _)| s).collect(),
                };
            }
        }
    }
    if probes.len() > 1 {
        d.error_help(
            "health",
            probes[1],
            "a health check has one probe; found more than one of `http`, `tcp`, `exec`, `none`",
            "keep one of them",
        );
    }
    if let Some(n) = m.take("interval") {
        out.interval = de::duration(n, "`health.interval`", d).unwrap_or(base.interval);
    }
    if let Some(n) = m.take("timeout") {
        out.timeout = de::duration(n, "`health.timeout`", d).unwrap_or(base.timeout);
    }
    if let Some(n) = m.take("retries") {
        out.retries = de::uint(n, "`health.retries`", 1, 100, d)
            .map(|v| v as u32)
            .unwrap_or(base.retries);
    }
    if let Some(n) = m.take("start_period") {
        out.start_period = de::duration(n, "`health.start_period`", d).unwrap_or(base.start_period);
    }
    if out.interval == Duration::ZERO {
        d.error(
            "health",
            m.span(),
            "`health.interval` must be longer than zero",
        );
    }
    m.finish(d);
    out
}

fn http_probe(node: &Node, d: &mut Diagnostics) -> Option<Probe> {
    let mut m = MapReader::new(node, "`health.http`", d)?;
    let port = match m.take("port") {
        Some(p) => port_number(p, "`health.http.port`", d),
        None => {
            d.error("missing", node.span, "`health.http` needs a `port`");
            None
        }
    };
    let path = match m.take("path") {
        Some(p) => {
            let s = de::string(p, "`health.http.path`", d);
            if let Some(s) = &s
                && !s.starts_with('/')
            {
                d.error_help(
                    "path",
                    p.span,
                    format!("the health path `{s}` must start with `/`"),
                    format!("write `/{s}`"),
                );
            }
            s
        }
        None => Some("/health".to_string()),
    };
    m.finish(d);
    Some(Probe::Http {
        port: port?,
        path: path?,
    })
}

pub(crate) fn port_number(node: &Node, what: &str, d: &mut Diagnostics) -> Option<u16> {
    de::uint(node, what, 1, 65535, d).map(|p| p as u16)
}

fn resources(node: &Node, base: &Resources, d: &mut Diagnostics) -> Resources {
    let Some(mut m) = MapReader::new(node, "`resources`", d) else {
        return base.clone();
    };
    let mut out = base.clone();
    if let Some(n) = m.take("cpus") {
        out.cpus = de::float(n, "`resources.cpus`", 0.01, 1024.0, d).or(base.cpus);
    }
    if let Some(n) = m.take("memory") {
        let v = de::size(n, "`resources.memory`", d);
        if let Some(v) = v
            && v.bytes() < 6 * ByteSize::MIB
        {
            d.error_help(
                "range",
                n.span,
                format!("`resources.memory` of {v} is below Docker's minimum of 6m"),
                "give the agent at least `6m`",
            );
        }
        out.memory = v.or(base.memory);
    }
    if let Some(n) = m.take("pids") {
        out.pids = de::uint(n, "`resources.pids`", 1, 4_194_304, d)
            .map(|v| v as u32)
            .or(base.pids);
    }
    m.finish(d);
    out
}

fn security(node: &Node, base: &Security, d: &mut Diagnostics) -> Security {
    let Some(mut m) = MapReader::new(node, "`security`", d) else {
        return base.clone();
    };
    let mut out = base.clone();
    if let Some(n) = m.take("cap_add") {
        if let Some(caps) = de::strings(n, "`security.cap_add`", d) {
            out.cap_add = Vec::new();
            for (c, span) in caps {
                let c = c.to_ascii_uppercase();
                let c = c.strip_prefix("CAP_").unwrap_or(&c).to_string();
                if !c.chars().all(|ch| ch.is_ascii_uppercase() || ch == '_') || c.is_empty() {
                    d.error(
                        "capability",
                        span,
                        format!("`{c}` is not a capability name"),
                    );
                } else {
                    out.cap_add.push(c);
                }
            }
        }
    }
    if let Some(n) = m.take("read_only") {
        out.read_only = de::boolean(n, "`security.read_only`", d).unwrap_or(base.read_only);
    }
    m.finish(d);
    out
}

fn gpu_policies(node: &Node, d: &mut Diagnostics) -> Vec<GpuPolicy> {
    let Some(items) = de::seq(node, "`gpus`", d) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for item in items {
        let Some(mut m) = MapReader::new(item, "a `gpus` entry", d) else {
            continue;
        };
        let select = match m.take("select") {
            Some(n) => gpu_selector(n, d),
            None => {
                d.error_help(
                    "missing",
                    item.span,
                    "a `gpus` entry needs `select`",
                    "e.g. `select: {index: 0}`, `select: {name: \"*A100*\"}` or `select: all`",
                );
                None
            }
        };
        let sharing = m.take("sharing").and_then(|n| sharing(n, d));
        let reserve = m
            .take("reserve")
            .and_then(|n| de::size(n, "`reserve`", d))
            .unwrap_or(ByteSize::mib(512));
        let oversubscribe = m
            .take("oversubscribe")
            .and_then(|n| de::boolean(n, "`oversubscribe`", d))
            .unwrap_or(false);
        m.finish(d);
        if let Some(select) = select {
            out.push(GpuPolicy {
                select,
                sharing,
                reserve,
                oversubscribe,
            });
        }
    }
    out
}

fn gpu_selector(node: &Node, d: &mut Diagnostics) -> Option<GpuSelector> {
    if node.as_str() == Some("all") {
        return Some(GpuSelector::All);
    }
    let mut m = MapReader::new(node, "`select`", d)?;
    let mut found = Vec::new();
    if let Some(n) = m.take("index") {
        found.push(de::uint(n, "`select.index`", 0, 63, d).map(|i| GpuSelector::Index(i as u32)));
    }
    if let Some(n) = m.take("uuid") {
        found.push(de::name(n, "`select.uuid`", d).map(GpuSelector::Uuid));
    }
    if let Some(n) = m.take("name") {
        found.push(de::name(n, "`select.name`", d).map(GpuSelector::Name));
    }
    let span = m.span();
    m.finish(d);
    match found.len() {
        1 => found.pop().flatten(),
        0 => {
            d.error_help(
                "missing",
                span,
                "`select` needs one of `index`, `uuid`, `name`",
                "e.g. `select: {index: 0}`",
            );
            None
        }
        _ => {
            d.error(
                "select",
                span,
                "`select` takes one of `index`, `uuid`, `name`, not several",
            );
            None
        }
    }
}

fn sharing(node: &Node, d: &mut Diagnostics) -> Option<Sharing> {
    let s = de::string(node, "`sharing`", d)?;
    let opts = ["mig", "mps", "exclusive", "time-slice"];
    match s.as_str() {
        "mig" => Some(Sharing::Mig),
        "mps" => Some(Sharing::Mps),
        "exclusive" => Some(Sharing::Exclusive),
        "time-slice" => Some(Sharing::TimeSlice),
        other => {
            let hint = closest(other, opts)
                .map(|c| format!("did you mean `{c}`?"))
                .unwrap_or_else(|| "use `mig`, `mps`, `exclusive` or `time-slice`".into());
            d.error_help(
                "enum",
                node.span,
                format!("unknown sharing mode `{other}`"),
                hint,
            );
            None
        }
    }
}

fn runtime_settings(node: &Node, host: &str, d: &mut Diagnostics) -> RuntimeSettings {
    let mut out = RuntimeSettings::defaults_for(host);
    let Some(mut m) = MapReader::new(node, "`runtime`", d) else {
        return out;
    };
    if let Some(n) = m.take("gpu_injection")
        && let Some(s) = de::string(n, "`gpu_injection`", d)
    {
        out.gpu_injection = match s.as_str() {
            "auto" => GpuInjection::Auto,
            "nvidia" => GpuInjection::Nvidia,
            "cdi" => GpuInjection::Cdi,
            "env" => GpuInjection::Env,
            other => {
                d.error_help(
                    "enum",
                    n.span,
                    format!("unknown GPU injection mode `{other}`"),
                    "use `auto`, `nvidia` (nvidia-container-toolkit), `cdi` or `env`",
                );
                out.gpu_injection
            }
        };
    }
    if let Some(n) = m.take("network")
        && let Some(s) = de::name(n, "`network`", d)
    {
        if valid_name(&s) {
            out.network = s;
        } else {
            d.error("name", n.span, format!("`{s}` is not a valid network name"));
        }
    }
    if let Some(n) = m.take("shutdown")
        && let Some(s) = de::string(n, "`shutdown`", d)
    {
        out.shutdown = match s.as_str() {
            "leave" => ShutdownMode::Leave,
            "stop" => ShutdownMode::Stop,
            other => {
                d.error_help(
                    "enum",
                    n.span,
                    format!("unknown shutdown mode `{other}`"),
                    "use `leave` (agents keep running) or `stop`",
                );
                out.shutdown
            }
        };
    }
    if let Some(n) = m.take("state_dir")
        && let Some(s) = absolute_path(n, "`state_dir`", d)
    {
        out.state_dir = s;
    }
    if let Some(n) = m.take("nvml_library") {
        out.nvml_library = de::name(n, "`nvml_library`", d);
    }
    if let Some(n) = m.take("docker_host") {
        out.docker_host = de::name(n, "`docker_host`", d);
    }
    if let Some(n) = m.take("mps")
        && let Some(mut mm) = MapReader::new(n, "`runtime.mps`", d)
    {
        let mut mps = MpsSettings::default();
        if let Some(b) = mm.take("control_binary")
            && let Some(s) = de::name(b, "`control_binary`", d)
        {
            mps.control_binary = s;
        }
        if let Some(b) = mm.take("directory") {
            mps.directory = absolute_path(b, "`mps.directory`", d);
        }
        mm.finish(d);
        out.mps = mps;
    }
    m.finish(d);
    out
}

fn absolute_path(node: &Node, what: &str, d: &mut Diagnostics) -> Option<String> {
    let s = de::name(node, what, d)?;
    if !s.starts_with('/') {
        d.error_help(
            "path",
            node.span,
            format!("{what} must be an absolute path, found `{s}`"),
            "start it with `/`",
        );
        return None;
    }
    Some(s)
}

fn federation(node: &Node, host_name: &str, d: &mut Diagnostics) -> Option<Federation> {
    let mut m = MapReader::new(node, "`federation`", d)?;
    let listen = match m.take("listen") {
        Some(n) => zmq_endpoint(n, "`federation.listen`", d),
        None => {
            d.error("missing", node.span, "`federation` needs `listen`");
            None
        }
    };
    let peers = m
        .take("peers")
        .map(|n| peers(n, host_name, d))
        .unwrap_or_default();
    let mut secret_key_file = None;
    if let Some(n) = m.take("keys")
        && let Some(mut k) = MapReader::new(n, "`federation.keys`", d)
    {
        secret_key_file = k
            .take("secret_key_file")
            .and_then(|n| absolute_path(n, "`secret_key_file`", d));
        k.finish(d);
    }
    let heartbeat = match m.take("heartbeat") {
        Some(n) => heartbeat(n, d),
        None => Some(Federation::DEFAULT_HEARTBEAT),
    };
    let suspect_node = m.take("suspect_after");
    let suspect_after = match suspect_node {
        Some(n) => missed_beats(n, "`federation.suspect_after`", 1, d),
        None => Some(Federation::DEFAULT_SUSPECT_AFTER),
    };
    let down_node = m.take("down_after");
    let down_after = match down_node {
        Some(n) => missed_beats(n, "`federation.down_after`", 2, d),
        None => Some(Federation::DEFAULT_DOWN_AFTER),
    };
    if let (Some(suspect), Some(down)) = (suspect_after, down_after)
        && down <= suspect
    {
        // Point at whichever of the two was written (the other is a default).
        let span = down_node.or(suspect_node).map_or(node.span, |n| n.span);
        d.error_help(
            "federation",
            span,
            format!(
                "`federation.down_after` ({down}) must be more than `suspect_after` ({suspect})"
            ),
            "a peer is suspect first and down later; e.g. `suspect_after: 2`, `down_after: 4`",
        );
    }
    let remote_commands = match m.take("remote_commands") {
        Some(n) => remote_commands(n, d),
        None => Some(RemoteCommands::default()),
    };
    let peer_grace = match m.take("peer_grace") {
        Some(n) => peer_grace(n, d),
        None => Some(Federation::DEFAULT_PEER_GRACE),
    };
    m.finish(d);
    Some(Federation {
        peer_grace: peer_grace?,
        listen: listen?,
        peers,
        secret_key_file,
        heartbeat: heartbeat?,
        suspect_after: suspect_after?,
        down_after: down_after?,
        remote_commands: remote_commands?,
    })
}

fn remote_commands(node: &Node, d: &mut Diagnostics) -> Option<RemoteCommands> {
    let s = de::string(node, "`federation.remote_commands`", d)?;
    match s.as_str() {
        "none" => Some(RemoteCommands::None),
        "operate" => Some(RemoteCommands::Operate),
        "admin" => Some(RemoteCommands::Admin),
        other => {
            d.error_help(
                "enum",
                node.span,
                format!("unknown `federation.remote_commands` value `{other}`"),
                "use `none` (peers only read), `operate` (the default: start, stop, restart) or `admin` (everything, config included)",
            );
            None
        }
    }
}

fn peer_role(node: &Node, d: &mut Diagnostics) -> Option<PeerRole> {
    let s = de::string(node, "the peer role", d)?;
    match s.as_str() {
        "peer" => Some(PeerRole::Peer),
        "monitor" => Some(PeerRole::Monitor),
        other => {
            d.error_help(
                "enum",
                node.span,
                format!("unknown peer role `{other}`"),
                "use `peer` (a federated daemon, the default) or `monitor` (subscribes and reads only)",
            );
            None
        }
    }
}

/// `public_keys: [old, new]`: one or two keys.
fn curve_keys(node: &Node, d: &mut Diagnostics) -> Option<Vec<String>> {
    let items = de::seq(node, "`public_keys`", d)?;
    if items.is_empty() || items.len() > 2 {
        d.error_help(
            "federation",
            node.span,
            format!("`public_keys` lists {} keys", items.len()),
            "list one key, or two while the peer changes keys: `public_keys: [OLD, NEW]`",
        );
        return None;
    }
    let keys: Vec<String> = items.iter().filter_map(|n| curve_key(n, d)).collect();
    if keys.len() == 2 && keys[0] == keys[1] {
        d.error(
            "duplicate",
            node.span,
            "`public_keys` lists the same key twice",
        );
        return None;
    }
    (keys.len() == items.len()).then_some(keys)
}

fn peers(node: &Node, host_name: &str, d: &mut Diagnostics) -> Vec<Peer> {
    let mut out: Vec<Peer> = Vec::new();
    let Some(items) = de::seq(node, "`federation.peers`", d) else {
        return out;
    };
    for item in items {
        let Some(mut p) = MapReader::new(item, "a peer", d) else {
            continue;
        };
        let name_node = p.take("name");
        let name = name_node.and_then(|n| de::name(n, "the peer name", d));
        let role_node = p.take("role");
        let role = match role_node {
            Some(n) => peer_role(n, d),
            None => Some(PeerRole::Peer),
        };
        let endpoint_node = p.take("endpoint");
        let endpoint = endpoint_node.and_then(|n| zmq_endpoint(n, "the peer endpoint", d));
        let probe_address_node = p.take("probe_address");
        let probe_address = probe_address_node.and_then(|n| probe_address(n, d));
        let key_node = p.take("public_key");
        let keys_node = p.take("public_keys");
        let keys = match (key_node, keys_node) {
            (Some(n), None) => curve_key(n, d).map(|k| vec![k]),
            (None, Some(n)) => curve_keys(n, d),
            (Some(_), Some(n)) => {
                d.error_help(
                    "federation",
                    n.span,
                    "a peer has `public_key` or `public_keys`, not both",
                    "while a peer changes keys write `public_keys: [OLD, NEW]`; afterwards `public_key: NEW`",
                );
                None
            }
            (None, None) => None,
        };
        p.finish(d);
        // A monitor is never dialled, so it needs no endpoint.
        let needs_endpoint = role != Some(PeerRole::Monitor);
        if name_node.is_none() || (endpoint_node.is_none() && needs_endpoint) {
            d.error_help(
                "missing",
                item.span,
                "a peer needs `name`, `endpoint` and `public_key` (a `role: monitor` needs no `endpoint`)",
                "e.g. `{name: pc2, endpoint: tcp://pc2.lan:7100, public_key: \"<40 Z85 characters>\"}`",
            );
        }
        // Malformed values were reported where they are written.
        let (Some(name), Some(role)) = (name, role) else {
            continue;
        };
        if probe_address_node.is_some() && probe_address.is_none() {
            continue;
        }
        let endpoint = match endpoint {
            Some(e) => e,
            None if !needs_endpoint && endpoint_node.is_none() => String::new(),
            None => continue,
        };
        if key_node.is_none() && keys_node.is_none() {
            d.error_help(
                "missing",
                item.span,
                format!("peer `{name}` has no `public_key`"),
                "copy the peer's `<host>.pub` file (written by `orchestratorctl keys generate`) into `public_key`",
            );
        }
        let name_span = name_node.map_or(item.span, |n| n.span);
        if name == host_name {
            d.error_help(
                "federation",
                name_span,
                format!("peer `{name}` is this host's own name"),
                "a host does not list itself; remove it from `federation.peers`",
            );
        }
        if out.iter().any(|q| q.name == name) {
            d.error(
                "duplicate",
                item.span,
                format!("peer `{name}` is listed twice"),
            );
        }
        let Some(mut keys) = keys else {
            continue;
        };
        if let Some(q) = out
            .iter()
            .find(|q| q.public_keys().any(|k| keys.iter().any(|m| m == k)))
        {
            d.error_help(
                "duplicate",
                key_node.or(keys_node).map_or(item.span, |n| n.span),
                format!("peer `{name}` has the same public key as peer `{}`", q.name),
                "a key identifies one host; give each peer its own key pair",
            );
        }
        let next_public_key = (keys.len() > 1).then(|| keys.remove(1));
        out.push(Peer {
            name,
            endpoint,
            public_key: keys.remove(0),
            next_public_key,
            role,
            probe_address,
        });
    }
    out
}

/// Where this host reaches a peer's published ports: an IP address or a
/// host name, without a port or a scheme.
fn probe_address(node: &Node, d: &mut Diagnostics) -> Option<String> {
    let s = de::name(node, "the peer probe address", d)?;
    let host_name = s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if s.parse::<std::net::IpAddr>().is_err() && !host_name {
        d.error_help(
            "federation",
            node.span,
            format!("the peer probe address `{s}` is not an IP address or a host name"),
            "write where this host reaches the peer's published ports, without a port: e.g. `probe_address: 192.168.1.12` or `probe_address: pc2-lan.local`",
        );
        return None;
    }
    Some(s)
}

fn heartbeat(node: &Node, d: &mut Diagnostics) -> Option<Duration> {
    let beat = de::duration(node, "`federation.heartbeat`", d)?;
    // Below 10ms the heartbeats alone would keep a core busy; above a minute
    // a lost host goes unnoticed for minutes.
    if beat < Duration::from_millis(10) || beat > Duration::from_secs(60) {
        d.error_help(
            "federation",
            node.span,
            format!("`federation.heartbeat` ({beat}) must be between 10ms and 1m"),
            "the default is `500ms`",
        );
        return None;
    }
    Some(beat)
}

fn peer_grace(node: &Node, d: &mut Diagnostics) -> Option<Duration> {
    let grace = de::duration(node, "`federation.peer_grace`", d)?;
    // Beyond an hour a lost host's agents would be trusted long after
    // anyone could vouch for them.
    if grace > Federation::MAX_PEER_GRACE {
        d.error_help(
            "federation",
            node.span,
            format!("`federation.peer_grace` ({grace}) must be at most 1h"),
            "the default is `2m`; `0s` stops dependents as soon as their peer is down",
        );
        return None;
    }
    Some(grace)
}

fn missed_beats(node: &Node, what: &str, min: u64, d: &mut Diagnostics) -> Option<u32> {
    de::uint(node, what, min, 1000, d).and_then(|n| u32::try_from(n).ok())
}

fn zmq_endpoint(node: &Node, what: &str, d: &mut Diagnostics) -> Option<String> {
    let s = de::name(node, what, d)?;
    let ok = s
        .strip_prefix("tcp://")
        .and_then(|rest| rest.rsplit_once(':'))
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
    if !ok {
        d.error_help(
            "endpoint",
            node.span,
            format!("{what} `{s}` is not a ZeroMQ TCP endpoint"),
            "write `tcp://HOST:PORT`",
        );
        return None;
    }
    Some(s)
}

fn curve_key(node: &Node, d: &mut Diagnostics) -> Option<String> {
    let s = de::name(node, "the peer public key", d)?;
    // A CURVE key in Z85 is 40 characters of the Z85 alphabet.
    const Z85: &str =
        "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";
    // Five characters encode four bytes, and not every group does: a value
    // above u32::MAX is no key, whatever its alphabet.
    let group_fits = |g: &[u8]| {
        g.iter()
            .try_fold(0u64, |acc, &c| {
                Z85.bytes()
                    .position(|z| z == c)
                    .map(|v| acc * 85 + v as u64)
            })
            .is_some_and(|v| v <= u64::from(u32::MAX))
    };
    if s.len() != 40 || !s.as_bytes().chunks(5).all(group_fits) {
        d.error_help(
            "key",
            node.span,
            "the peer public key is not a 40-character Z85 CURVE key",
            "copy the peer's public key file content",
        );
        return None;
    }
    Some(s)
}

fn metrics(node: &Node, d: &mut Diagnostics) -> MetricsSettings {
    let Some(mut m) = MapReader::new(node, "`metrics`", d) else {
        return MetricsSettings::default();
    };
    let mut out = MetricsSettings::default();
    if let Some(n) = m.take("listen") {
        if n.is_null() || n.as_str() == Some("none") {
            out.listen = None;
        } else if let Some(s) = de::name(n, "`metrics.listen`", d) {
            if s.parse::<std::net::SocketAddr>().is_ok() {
                out.listen = Some(s);
            } else {
                d.error_help(
                    "address",
                    n.span,
                    format!("`metrics.listen` `{s}` is not an address"),
                    "write `IP:PORT`, e.g. `127.0.0.1:9464`, or `none`",
                );
            }
        }
    }
    if let Some(n) = m.take("dcgm_job_mapping_dir")
        && let Some(s) = de::string(n, "`metrics.dcgm_job_mapping_dir`", d)
    {
        if s.starts_with('/') {
            out.dcgm_job_mapping_dir = Some(s);
        } else {
            d.error_help(
                "path",
                n.span,
                format!("`metrics.dcgm_job_mapping_dir` `{s}` is not an absolute path"),
                "write the directory dcgm-exporter's `--hpc-job-mapping-dir` reads, e.g. `/run/orchestrator/dcgm-jobs`",
            );
        }
    }
    m.finish(d);
    out
}

fn control(node: &Node, d: &mut Diagnostics) -> ControlSettings {
    let Some(mut m) = MapReader::new(node, "`control`", d) else {
        return ControlSettings::default();
    };
    let mut out = ControlSettings::default();
    if let Some(n) = m.take("socket")
        && let Some(s) = absolute_path(n, "`control.socket`", d)
    {
        out.socket = s;
    }
    if let Some(n) = m.take("group") {
        out.group = de::name(n, "`control.group`", d);
    }
    m.finish(d);
    out
}

fn groups(
    node: &Node,
    defaults: &AgentDefaults,
    index: &mut SourceIndex,
    d: &mut Diagnostics,
) -> Vec<Group> {
    let Some(mut m) = MapReader::new(node, "`groups`", d) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (k, v) in m.rest() {
        let name = k.as_str().unwrap_or("~").to_string();
        if !valid_name(&name) {
            d.error_help(
                "name",
                k.span,
                format!("`{name}` is not a valid group name"),
                "use letters, digits, `_`, `-` and `.`, starting with a letter or digit",
            );
        }
        if let Some(g) = group(&name, k, v, defaults, index, d) {
            out.push(g);
        }
    }
    m.finish(d);
    out
}

fn group(
    name: &str,
    key: &Node,
    node: &Node,
    defaults: &AgentDefaults,
    index: &mut SourceIndex,
    d: &mut Diagnostics,
) -> Option<Group> {
    let mut m = MapReader::new(node, format!("group `{name}`"), d)?;
    let description = m
        .take("description")
        .and_then(|n| de::string(n, "`description`", d));
    let depends_on: Vec<(String, _)> = m
        .take("depends_on")
        .and_then(|n| de::strings(n, "`depends_on`", d))
        .unwrap_or_default();
    let slo = m.take("slo").and_then(|n| slo(n, d));
    let rollout = m
        .take("rollout")
        .map(|n| rollout(n, &defaults.rollout, d))
        .unwrap_or(defaults.rollout);
    let min_healthy = m
        .take("min_healthy")
        .and_then(|n| min_healthy(n, d))
        .unwrap_or(defaults.min_healthy);
    let mut agents = Vec::new();
    let in_group = InGroup {
        name,
        defaults,
        slo: slo.as_ref(),
    };
    match m.take("agents") {
        Some(n) => {
            if let Some(mut am) = MapReader::new(n, format!("the agents of `{name}`"), d) {
                for (ak, av) in am.rest() {
                    let aname = ak.as_str().unwrap_or("~").to_string();
                    if !valid_name(&aname) {
                        d.error_help(
                            "name",
                            ak.span,
                            format!("`{aname}` is not a valid agent name"),
                            "use letters, digits, `_`, `-` and `.`, starting with a letter or digit",
                        );
                    }
                    if let Some(a) = agent(&aname, ak, av, &in_group, index, d) {
                        agents.push(a);
                    }
                }
                am.finish(d);
            }
        }
        None => d.warning(
            "empty-group",
            key.span,
            format!("group `{name}` has no `agents`"),
        ),
    }
    m.finish(d);
    index.groups.push(GroupSource {
        name: name.to_string(),
        span: key.span,
        depends_on: depends_on.clone(),
    });
    Some(Group {
        name: name.to_string(),
        description,
        depends_on: depends_on.into_iter().map(|(s, _)| s).collect(),
        slo,
        rollout,
        min_healthy,
        agents,
    })
}

fn slo(node: &Node, d: &mut Diagnostics) -> Option<Slo> {
    let mut m = MapReader::new(node, "`slo`", d)?;
    let availability = m
        .take("availability")
        .and_then(|n| de::percent(n, "`slo.availability`", d));
    let latency_p99 = m
        .take("latency_p99")
        .and_then(|n| de::duration(n, "`slo.latency_p99`", d));
    let error_rate = m
        .take("error_rate")
        .and_then(|n| de::percent(n, "`slo.error_rate`", d));
    let window = m
        .take("window")
        .and_then(|n| de::duration(n, "`slo.window`", d))
        .unwrap_or(Duration::from_secs(30 * 86400));
    if let (Some(a), Some(n)) = (availability, node.get("availability"))
        && a == Percent::HUNDRED
    {
        d.error_help(
            "slo",
            n.span,
            "an availability objective of 100% leaves no error budget",
            "use a figure below 100%, e.g. `99.9%`",
        );
    }
    m.finish(d);
    Some(Slo {
        availability,
        latency_p99,
        error_rate,
        window,
    })
}

/// What an agent's decoding needs of its group.
struct InGroup<'a> {
    name: &'a str,
    defaults: &'a AgentDefaults,
    slo: Option<&'a Slo>,
}

fn agent(
    name: &str,
    key: &Node,
    node: &Node,
    in_group: &InGroup<'_>,
    index: &mut SourceIndex,
    d: &mut Diagnostics,
) -> Option<Agent> {
    let InGroup {
        name: group,
        defaults,
        slo: group_slo,
    } = *in_group;
    let mut m = MapReader::new(node, format!("agent `{name}`"), d)?;
    let image = match m.take("image") {
        Some(n) => de::name(n, "`image`", d),
        None => match &defaults.image {
            Some(i) => Some(i.clone()),
            None => {
                d.error_help(
                    "missing",
                    key.span,
                    format!("agent `{name}` has no image"),
                    "set `image:` on the agent or in `defaults`",
                );
                None
            }
        },
    };
    let command = m.take("command").and_then(|n| {
        de::strings(n, "`command`", d).map(|v| v.into_iter().map(|(s, _)| s).collect())
    });
    let env = merge_map(
        &defaults.env,
        m.take("env").and_then(|n| de::string_map(n, "`env`", d)),
    );
    let labels = merge_map(
        &defaults.labels,
        m.take("labels")
            .and_then(|n| de::string_map(n, "`labels`", d)),
    );
    if let Some(n) = node.get("env") {
        reserved_env(n, d);
    }
    let mut ports = Vec::new();
    let mut port_sources = Vec::new();
    if let Some(n) = m.take("ports")
        && let Some(items) = de::seq(n, "`ports`", d)
    {
        for item in items {
            let Some(text) = de::string(item, "a port", d) else {
                continue;
            };
            match PortMapping::parse(&text) {
                Ok(p) => {
                    port_sources.push((p.clone(), item.span));
                    ports.push(p);
                }
                Err(e) => d.error("port", item.span, de::port_error(&e)),
            }
        }
    }
    let mut volumes = Vec::new();
    if let Some(n) = m.take("volumes")
        && let Some(items) = de::seq(n, "`volumes`", d)
    {
        for item in items {
            let Some(text) = de::string(item, "a volume", d) else {
                continue;
            };
            match VolumeMount::parse(&text) {
                Ok(v) => volumes.push(v),
                Err(e) => d.error("volume", item.span, de::mount_error(&e)),
            }
        }
    }
    let depends_on = m
        .take("depends_on")
        .and_then(|n| de::strings(n, "`depends_on`", d))
        .unwrap_or_default();
    let mut gpu_over_limit = defaults.gpu_over_limit;
    let gpu = m
        .take("gpu")
        .and_then(|n| gpu_request(n, Some(&mut gpu_over_limit), d));
    let restart = m
        .take("restart")
        .map(|n| restart(n, &defaults.restart, d))
        .unwrap_or_else(|| defaults.restart.clone());
    let health = m
        .take("health")
        .map(|n| health(n, &defaults.health, d))
        .unwrap_or_else(|| defaults.health.clone());
    let resources = m
        .take("resources")
        .map(|n| resources(n, &defaults.resources, d))
        .unwrap_or_else(|| defaults.resources.clone());
    let security = m
        .take("security")
        .map(|n| security(n, &defaults.security, d))
        .unwrap_or_else(|| defaults.security.clone());
    let autoscale_node = m.take("autoscale");
    let autoscale = autoscale_node.and_then(|n| autoscale(n, d));
    let replicas_node = m.take("replicas");
    let (replicas, replicas_span) = match replicas_node {
        Some(n) => (
            de::uint(n, "`replicas`", 1, u64::from(MAX_REPLICAS), d)
                .map(|v| v as u32)
                .unwrap_or(1),
            n.span,
        ),
        // An autoscaled agent starts at its minimum.
        None => (autoscale.as_ref().map_or(1, |a| a.min), key.span),
    };
    if let (Some(a), Some(n)) = (&autoscale, replicas_node)
        && !(a.min..=a.max).contains(&replicas)
    {
        d.error_help(
            "autoscale",
            n.span,
            format!(
                "`replicas: {replicas}` is outside the autoscale range {}..={}",
                a.min, a.max
            ),
            "set `replicas` between `autoscale.min` and `autoscale.max`, or leave it out to start at `min`",
        );
    }
    if let (Some(a), Some(n)) = (&autoscale, autoscale_node) {
        autoscale_needs(name, a, n, gpu.is_some(), group_slo, d);
    }
    let required = m
        .take("required")
        .and_then(|n| de::boolean(n, "`required`", d))
        .unwrap_or(true);
    let stop_timeout = m
        .take("stop_timeout")
        .and_then(|n| de::duration(n, "`stop_timeout`", d))
        .unwrap_or(defaults.stop_timeout);
    let config = m.take("config").map(de::to_json);
    let script_path = m
        .take("script_path")
        .and_then(|n| de::name(n, "`script_path`", d));
    // Names only: `secrets::resolve` gives them their files.
    let secrets = m
        .take("secrets")
        .and_then(|n| de::strings(n, "`secrets`", d))
        .unwrap_or_default();
    m.finish(d);
    index.agents.push(AgentSource {
        name: name.to_string(),
        group: group.to_string(),
        span: key.span,
        depends_on: depends_on.clone(),
        ports: port_sources,
        replicas: (replicas, replicas_span),
        autoscale_max: autoscale
            .as_ref()
            .zip(autoscale_node)
            .map(|(a, n)| (a.max, n.get("max").map_or(n.span, |m| m.span))),
        secrets: secrets.clone(),
    });
    Some(Agent {
        name: name.to_string(),
        group: group.to_string(),
        image: image?,
        command,
        env,
        ports,
        volumes,
        depends_on: depends_on.into_iter().map(|(s, _)| s).collect(),
        gpu,
        restart,
        health,
        resources,
        security,
        replicas,
        required,
        labels,
        stop_timeout,
        config,
        script_path,
        secrets: Vec::new(),
        autoscale,
        gpu_over_limit,
    })
}

/// `gpu: {slice: mig, profile: 1g.10gb, fallback: {slice: mps, memory: 10g, compute: 25%}}`,
/// or the shorthands `gpu: exclusive`, `gpu: time-slice`, `gpu: none`.
/// `over_limit` is read into `over_limit` on the outer request; a fallback
/// (given `None`) refuses it, as it applies whichever slice is given.
pub(crate) fn gpu_request(
    node: &Node,
    over_limit: Option<&mut OverLimit>,
    d: &mut Diagnostics,
) -> Option<GpuRequest> {
    if let Value::Scalar { text, .. } = &node.value {
        return match text.as_str() {
            "none" => None,
            "exclusive" => Some(GpuRequest::new(SliceRequest::Exclusive)),
            "time-slice" => Some(GpuRequest::new(SliceRequest::TimeSlice)),
            other => {
                d.error_help(
                    "gpu",
                    node.span,
                    format!("`gpu: {other}` is not a GPU request"),
                    "write `gpu: {slice: mig, profile: 1g.10gb}`, `gpu: {slice: mps, memory: 4g, compute: 25%}`, `gpu: exclusive` or `gpu: none`",
                );
                None
            }
        };
    }
    let mut m = MapReader::new(node, "`gpu`", d)?;
    if let Some(n) = m.take("over_limit") {
        match over_limit {
            Some(out) => {
                if let Some(v) = over_limit_mode(n, d) {
                    *out = v;
                }
            }
            None => d.error_help(
                "gpu",
                n.span,
                "`over_limit` cannot be set on a fallback",
                "set it once on the agent's `gpu:`; it applies whichever slice the agent gets",
            ),
        }
    }
    let slice_node = m.take("slice");
    let kind = match slice_node {
        None => {
            d.error_help(
                "missing",
                node.span,
                "a GPU request needs `slice`",
                "use `slice: mig`, `mps`, `exclusive` or `time-slice`",
            );
            None
        }
        Some(n) => de::string(n, "`slice`", d),
    };
    let request = match kind.as_deref() {
        Some("mig") => {
            let profile = match m.take("profile") {
                Some(p) => mig_profile(p, d),
                None => {
                    d.error_help(
                        "missing",
                        node.span,
                        "a `mig` request needs a `profile`",
                        "e.g. `profile: 1g.10gb`",
                    );
                    None
                }
            };
            profile.map(|profile| SliceRequest::Mig { profile })
        }
        Some("mps") => {
            let memory = match m.take("memory") {
                Some(n) => mps_memory(n, d),
                None => {
                    d.error_help(
                        "missing",
                        node.span,
                        "an `mps` request needs `memory`",
                        "e.g. `memory: 4g`",
                    );
                    None
                }
            };
            let compute = match m.take("compute") {
                Some(n) => {
                    let c = de::percent(n, "`compute`", d);
                    if c == Some(Percent::default()) {
                        d.error("gpu", n.span, "an MPS compute share of 0% can run nothing");
                        None
                    } else {
                        c
                    }
                }
                None => {
                    d.error_help(
                        "missing",
                        node.span,
                        "an `mps` request needs `compute`",
                        "e.g. `compute: 25%` (the share of the GPU's threads)",
                    );
                    None
                }
            };
            match (memory, compute) {
                (Some(memory), Some(compute)) => Some(SliceRequest::Mps { memory, compute }),
                _ => None,
            }
        }
        Some("exclusive") => Some(SliceRequest::Exclusive),
        Some("time-slice") => Some(SliceRequest::TimeSlice),
        Some(other) => {
            // The fields of the intended kind are not the problem; say only what is.
            for key in ["profile", "memory", "compute"] {
                m.allow(key);
            }
            let hint = closest(other, ["mig", "mps", "exclusive", "time-slice"])
                .map(|c| format!("did you mean `{c}`?"))
                .unwrap_or_else(|| "use `mig`, `mps`, `exclusive` or `time-slice`".into());
            d.error_help(
                "gpu",
                slice_node.map(|n| n.span).unwrap_or(node.span),
                format!("unknown slice kind `{other}`"),
                hint,
            );
            None
        }
        None => None,
    };
    let fallback = m.take("fallback").and_then(|n| gpu_request(n, None, d));
    m.finish(d);
    Some(GpuRequest {
        kind: request?,
        fallback: fallback.map(Box::new),
    })
}

fn over_limit_mode(node: &Node, d: &mut Diagnostics) -> Option<OverLimit> {
    let s = de::string(node, "`gpu.over_limit`", d)?;
    match s.as_str() {
        "warn" => Some(OverLimit::Warn),
        "restart" => Some(OverLimit::Restart),
        other => {
            let hint = closest(other, ["warn", "restart"])
                .map(|c| format!("did you mean `{c}`?"))
                .unwrap_or_else(|| {
                    "use `warn` (an event and a metric) or `restart` (also restart the replica)"
                        .into()
                });
            d.error_help(
                "enum",
                node.span,
                format!("unknown `over_limit` action `{other}`"),
                hint,
            );
            None
        }
    }
}

/// `rollout:`, merged field by field over `base` (the builtin rollout for
/// `defaults:`, the default rollout for a group).
fn rollout(node: &Node, base: &Rollout, d: &mut Diagnostics) -> Rollout {
    let Some(mut m) = MapReader::new(node, "`rollout`", d) else {
        return *base;
    };
    let mut out = *base;
    if let Some(n) = m.take("watch") {
        out.watch = de::duration(n, "`rollout.watch`", d).unwrap_or(base.watch);
    }
    if let Some(n) = m.take("auto_rollback") {
        out.auto_rollback =
            de::boolean(n, "`rollout.auto_rollback`", d).unwrap_or(base.auto_rollback);
    }
    // A written amount that cannot be read was reported; the zero check
    // then says nothing more.
    let mut unreadable = false;
    let unavailable_node = m.take("max_unavailable");
    if let Some(n) = unavailable_node {
        match amount(n, "`rollout.max_unavailable`", d) {
            Some(v) => out.max_unavailable = v,
            None => unreadable = true,
        }
    }
    let surge_node = m.take("max_surge");
    if let Some(n) = surge_node {
        match amount(n, "`rollout.max_surge`", d) {
            Some(v) => out.max_surge = v,
            None => unreadable = true,
        }
    }
    if let Some(n) = m.take("healthy_deadline") {
        match de::duration(n, "`rollout.healthy_deadline`", d) {
            Some(v) if v == Duration::ZERO => d.error_help(
                "rollout",
                n.span,
                "`rollout.healthy_deadline` must be longer than zero",
                "a new replica needs time to become healthy; the default is `5m`",
            ),
            Some(v) => out.healthy_deadline = v,
            None => {}
        }
    }
    renamed(
        &mut m,
        &[
            (
                "max_parallel",
                "Nomad's `max_parallel` is `max_unavailable` here (with `max_surge: 0`)",
            ),
            (
                "auto_revert",
                "Nomad's `auto_revert` is `auto_rollback` here",
            ),
            ("maxSurge", "write `max_surge`"),
            ("maxUnavailable", "write `max_unavailable`"),
            ("progress_deadline", "write `healthy_deadline`"),
            (
                "min_healthy_time",
                "set `min_healthy` on the group (or in `defaults`); it decides readiness, not only rollouts",
            ),
            (
                "min_healthy",
                "`min_healthy` is a key of the group (or of `defaults`), beside `rollout`",
            ),
        ],
        d,
    );
    if out.max_unavailable.is_zero() && out.max_surge.is_zero() && !unreadable {
        let span = surge_node
            .or(unavailable_node)
            .map_or(node.span, |n| n.span);
        d.error_help(
            "rollout",
            span,
            "`rollout.max_surge` and `rollout.max_unavailable` are both zero, so a rollout could never replace a replica",
            "let a new replica start before an old one stops (`max_surge: 1`), or an old one stop first (`max_unavailable: 1`)",
        );
    }
    m.finish(d);
    out
}

/// Keys users of other tools write, each with where it belongs here.
fn renamed(m: &mut MapReader<'_>, keys: &[(&'static str, &str)], d: &mut Diagnostics) {
    for (key, help) in keys {
        if let Some((k, _)) = m.take_entry(key) {
            d.error_help(
                "unknown-key",
                k.span,
                format!("unknown key `{key}` in {}", m.what()),
                *help,
            );
        }
    }
}

/// A replica count (`1`) or a share of the replicas (`25%`).
fn amount(node: &Node, what: &str, d: &mut Diagnostics) -> Option<Amount> {
    let text = de::string(node, what, d)?;
    if text.trim_end().ends_with('%') {
        return de::percent(node, what, d).map(Amount::Share);
    }
    de::uint(node, what, 0, u64::from(MAX_REPLICAS), d).map(|n| Amount::Count(n as u32))
}

fn min_healthy(node: &Node, d: &mut Diagnostics) -> Option<Duration> {
    let v = de::duration(node, "`min_healthy`", d)?;
    if v > Duration::from_secs(3600) {
        d.error_help(
            "range",
            node.span,
            format!("`min_healthy` of {v} is longer than an hour"),
            "a group counts as ready only after this long; a few seconds is usual (default `5s`)",
        );
        return None;
    }
    Some(v)
}

/// `autoscale:` of one agent; checks that need only the section itself.
fn autoscale(node: &Node, d: &mut Diagnostics) -> Option<Autoscale> {
    let mut m = MapReader::new(node, "`autoscale`", d)?;
    let cap = u64::from(MAX_REPLICAS);
    let min_node = m.take("min");
    let min = match min_node {
        Some(n) => de::uint(n, "`autoscale.min`", 1, cap, d).map(|v| v as u32),
        None => Some(1),
    };
    let max = match m.take("max") {
        Some(n) => de::uint(n, "`autoscale.max`", 1, cap, d).map(|v| v as u32),
        None => {
            d.error_help(
                "missing",
                node.span,
                "`autoscale` needs `max`",
                format!(
                    "the most replicas the agent may have, e.g. `max: 10` (at most {MAX_REPLICAS})"
                ),
            );
            None
        }
    };
    let target = |n: &Node, what: &str, d: &mut Diagnostics| {
        let p = de::percent(n, what, d)?;
        if p.basis_points() == 0 {
            d.error_help(
                "autoscale",
                n.span,
                format!("{what} of 0% can never be met"),
                "set the utilisation to hold, e.g. `70%`",
            );
            return None;
        }
        Some(p)
    };
    let cpu_node = m.take("cpu");
    let cpu = cpu_node.and_then(|n| target(n, "`autoscale.cpu`", d));
    let gpu_node = m.take("gpu_util");
    let gpu_util = gpu_node.and_then(|n| target(n, "`autoscale.gpu_util`", d));
    let metric_node = m.take("metric");
    let metric = metric_node.and_then(|n| metric_target(n, d));
    let latency_slo = m
        .take("latency_slo")
        .and_then(|n| de::boolean(n, "`autoscale.latency_slo`", d))
        .unwrap_or(false);
    let up_after = m
        .take("up_after")
        .and_then(|n| de::duration(n, "`autoscale.up_after`", d))
        .unwrap_or(Autoscale::DEFAULT_UP_AFTER);
    let down_after = m
        .take("down_after")
        .and_then(|n| de::duration(n, "`autoscale.down_after`", d))
        .unwrap_or(Autoscale::DEFAULT_DOWN_AFTER);
    let reverse_after = m
        .take("reverse_after")
        .and_then(|n| de::duration(n, "`autoscale.reverse_after`", d))
        .unwrap_or(Autoscale::DEFAULT_REVERSE_AFTER);
    renamed(
        &mut m,
        &[
            ("minReplicas", "write `min`"),
            ("maxReplicas", "write `max`"),
            ("min_replicas", "write `min`"),
            ("max_replicas", "write `max`"),
            (
                "replicas",
                "`replicas` is a key of the agent, beside `autoscale`: the count to start with",
            ),
        ],
        d,
    );
    m.finish(d);
    let (min, max) = (min?, max?);
    if min > max {
        d.error_help(
            "autoscale",
            min_node.map_or(node.span, |n| n.span),
            format!("`autoscale.min` ({min}) is more than `autoscale.max` ({max})"),
            "make `min` at most `max`",
        );
        return None;
    }
    let out = Autoscale {
        min,
        max,
        cpu,
        gpu_util,
        metric,
        latency_slo,
        up_after,
        down_after,
        reverse_after,
    };
    // A signal written with a bad value was reported where it is written.
    let written = cpu_node.is_some() || gpu_node.is_some() || metric_node.is_some();
    if !out.has_signal() && !written {
        d.error_help(
            "autoscale",
            node.span,
            "`autoscale` has no signal to scale on",
            "add at least one of `cpu: 70%`, `gpu_util: 80%`, `metric: {name: ..., per_replica: ...}`, `latency_slo: true`",
        );
        return None;
    }
    Some(out)
}

/// `metric: {name: agent_queue_depth, per_replica: 10, shared: false}`.
fn metric_target(node: &Node, d: &mut Diagnostics) -> Option<MetricTarget> {
    let mut m = MapReader::new(node, "`autoscale.metric`", d)?;
    let name = match m.take("name") {
        Some(n) => {
            let s = de::name(n, "`autoscale.metric.name`", d);
            match s {
                Some(s) if !valid_metric_name(&s) => {
                    d.error_help(
                        "metric",
                        n.span,
                        format!("`{s}` is not a Prometheus metric name"),
                        "use letters, digits, `_` and `:`, not starting with a digit, as the agent's `/metrics` names it",
                    );
                    None
                }
                s => s,
            }
        }
        None => {
            d.error_help(
                "missing",
                node.span,
                "`autoscale.metric` needs `name`",
                "the gauge of the agent's `/metrics` to scale on, e.g. `name: agent_queue_depth`",
            );
            None
        }
    };
    let per_replica = match m.take("per_replica") {
        Some(n) => match de::float(n, "`autoscale.metric.per_replica`", 0.0, 1e15, d) {
            Some(v) if v > 0.0 => Some(v),
            Some(_) => {
                d.error_help(
                    "metric",
                    n.span,
                    "`autoscale.metric.per_replica` must be more than zero",
                    "the value one replica should carry, e.g. `per_replica: 10`",
                );
                None
            }
            None => None,
        },
        None => {
            d.error_help(
                "missing",
                node.span,
                "`autoscale.metric` needs `per_replica`",
                "the value one replica should carry, e.g. `per_replica: 10`: replicas = ceil(sum of the replicas' readings / per_replica)",
            );
            None
        }
    };
    let shared = m
        .take("shared")
        .and_then(|n| de::boolean(n, "`autoscale.metric.shared`", d))
        .unwrap_or(false);
    m.finish(d);
    Some(MetricTarget {
        name: name?,
        per_replica: per_replica?,
        shared,
    })
}

/// Checks of `autoscale:` against the rest of the agent and its group.
fn autoscale_needs(
    agent: &str,
    a: &Autoscale,
    node: &Node,
    has_gpu: bool,
    group_slo: Option<&Slo>,
    d: &mut Diagnostics,
) {
    let span_of = |key: &str| node.get(key).map_or(node.span, |n| n.span);
    if a.gpu_util.is_some() && !has_gpu {
        d.error_help(
            "autoscale",
            span_of("gpu_util"),
            format!("agent `{agent}` scales on `gpu_util` but has no `gpu`"),
            "give the agent a GPU request, or scale on `cpu` or a `metric`",
        );
    }
    if a.latency_slo && group_slo.and_then(|s| s.latency_p99).is_none() {
        d.error_help(
            "autoscale",
            span_of("latency_slo"),
            format!(
                "agent `{agent}` scales on `latency_slo` but its group has no latency objective"
            ),
            "add `slo: {latency_p99: ...}` to the group, or remove `latency_slo`",
        );
    }
    if a.latency_slo && a.cpu.is_none() && a.gpu_util.is_none() && a.metric.is_none() {
        d.warning_help(
            "autoscale",
            span_of("latency_slo"),
            format!("agent `{agent}` scales on `latency_slo` alone, which only ever scales up"),
            "add `cpu`, `gpu_util` or a `metric` so that it can also scale back down",
        );
    }
}

fn mig_profile(node: &Node, d: &mut Diagnostics) -> Option<MigProfileName> {
    let text = de::string(node, "`profile`", d)?;
    let known = gpu::known_profile_names();
    match MigProfileName::parse(&text) {
        Ok(p) => {
            if gpu::classes_with_profile(&p).is_empty() {
                let hint = match closest(&text, known.iter().copied()) {
                    Some(c) => format!("did you mean `{c}`? known profiles: {}", known.join(", ")),
                    None => format!("known profiles: {}", known.join(", ")),
                };
                d.error_help(
                    "mig-profile",
                    node.span,
                    format!("no GPU offers the MIG profile `{p}`"),
                    hint,
                );
                return None;
            }
            Some(p)
        }
        Err(e) => {
            d.error_help(
                "mig-profile",
                node.span,
                de::profile_error(&e),
                format!("known profiles: {}", known.join(", ")),
            );
            None
        }
    }
}

fn mps_memory(node: &Node, d: &mut Diagnostics) -> Option<ByteSize> {
    let m = de::size(node, "`memory`", d)?;
    let largest = gpu::largest_memory();
    if m.bytes() == 0 {
        d.error(
            "gpu",
            node.span,
            "an MPS memory share of 0 can hold nothing",
        );
        return None;
    }
    if m > largest {
        let biggest = gpu::CATALOG
            .iter()
            .max_by_key(|c| c.memory_mib)
            .map(|c| c.name)
            .unwrap_or("?");
        d.error_help(
            "impossible",
            node.span,
            format!("an MPS memory share of {m} is larger than any GPU holds"),
            format!("the largest known GPU, {biggest}, has {largest}"),
        );
        return None;
    }
    Some(m)
}

#[cfg(test)]
mod federation_tests {
    use orch_core::model::{Federation, PeerRole, RemoteCommands};
    use orch_core::units::Duration;

    use crate::{LoadOptions, convert, load_str};

    const KEY: &str = "rq+TC5Kj0ZvUq=FX5d*[bYUKsMWnj7dGo![k3-Ne";

    fn load(federation: &str) -> Federation {
        let text = format!(
            "version: 1\nhost: {{name: h1}}\ndefaults: {{image: img}}\ngroups:\n  g:\n    agents:\n      A: {{}}\nfederation:\n{federation}"
        );
        let loaded = load_str("f.yaml", &text, &LoadOptions::default()).expect("loads");
        loaded.config.federation.expect("federation")
    }

    #[test]
    fn timing_defaults_apply_when_unwritten() {
        let f = load("  listen: tcp://0.0.0.0:7100\n");
        assert_eq!(f.heartbeat, Duration::from_millis(500));
        assert_eq!((f.suspect_after, f.down_after), (2, 3));
        assert_eq!(f.peer_grace, Duration::from_secs(120));
        assert!(f.peers.is_empty());
        assert_eq!(f.secret_key_path("h1"), "/etc/orchestrator/h1.key");
    }

    #[test]
    fn written_timing_and_peers_are_kept_and_survive_conversion() {
        let f = load(&format!(
            "  listen: tcp://0.0.0.0:7100\n  heartbeat: 250ms\n  suspect_after: 3\n  down_after: 9\n  keys: {{secret_key_file: /k/h1.key}}\n  peers:\n    - {{name: pc2, endpoint: tcp://pc2.lan:7100, public_key: \"{KEY}\"}}\n"
        ));
        assert_eq!(f.heartbeat, Duration::from_millis(250));
        assert_eq!((f.suspect_after, f.down_after), (3, 9));
        assert_eq!(f.peers[0].public_key, KEY);
        assert_eq!(f.secret_key_path("h1"), "/k/h1.key");

        let config = load_str(
            "f.yaml",
            &format!(
                "version: 1\nhost: {{name: h1}}\ndefaults: {{image: img}}\ngroups:\n  g:\n    agents:\n      A: {{}}\nfederation: {{listen: tcp://0.0.0.0:7100, heartbeat: 250ms, suspect_after: 3, down_after: 9, peer_grace: 45s, peers: [{{name: pc2, endpoint: tcp://pc2.lan:7100, public_key: \"{KEY}\"}}]}}\n"
            ),
            &LoadOptions::default(),
        )
        .expect("loads")
        .config;
        let again = convert::to_v1_yaml(&config);
        let reread = load_str("again.yaml", &again, &LoadOptions::default())
            .expect("the converted config loads")
            .config;
        assert_eq!(reread.federation, config.federation);
        assert_eq!(
            reread.federation.map(|f| f.peer_grace),
            Some(Duration::from_secs(45))
        );
    }

    #[test]
    fn a_peers_probe_address_is_an_address_or_a_host_name_and_survives_conversion() {
        let with = |address: &str| {
            format!(
                "version: 1\nhost: {{name: h1}}\ndefaults: {{image: img}}\ngroups:\n  g:\n    agents:\n      A: {{}}\nfederation:\n  listen: tcp://0.0.0.0:7100\n  peers:\n    - {{name: pc2, endpoint: tcp://pc2.lan:7100, public_key: \"{KEY}\", probe_address: \"{address}\"}}\n"
            )
        };
        for good in ["192.168.1.12", "fd00::2", "pc2-lan.local", "pc2"] {
            let config = load_str("f.yaml", &with(good), &LoadOptions::default())
                .unwrap_or_else(|e| panic!("{good} is refused: {e:?}"))
                .config;
            let peer = &config.federation.as_ref().expect("federation").peers[0];
            assert_eq!(peer.probe_address.as_deref(), Some(good));
            assert_eq!(peer.probe_host(), Some(good));
            let again = convert::to_v1_yaml(&config);
            let reread = load_str("again.yaml", &again, &LoadOptions::default())
                .expect("the converted config loads")
                .config;
            assert_eq!(reread.federation, config.federation, "{again}");
        }
        for bad in [
            "tcp://10.0.0.2:7100",
            "10.0.0.2:8080",
            "pc2 lan",
            "-pc2",
            "a..b",
            "",
        ] {
            let err = load_str("f.yaml", &with(bad), &LoadOptions::default())
                .err()
                .unwrap_or_else(|| panic!("{bad:?} is accepted"));
            assert!(
                format!("{err:?}").contains("probe address"),
                "{bad:?}: {err:?}"
            );
        }
        let unset = load(&format!(
            "  listen: tcp://0.0.0.0:7100\n  peers:\n    - {{name: pc2, endpoint: tcp://pc2.lan:7100, public_key: \"{KEY}\"}}\n"
        ));
        assert_eq!(unset.peers[0].probe_address, None);
        assert_eq!(unset.peers[0].probe_host(), Some("pc2.lan"));
    }

    #[test]
    fn peer_grace_is_bounded_and_zero_is_allowed() {
        assert_eq!(
            load(
                "  listen: tcp://0.0.0.0:7100
  peer_grace: 0s
"
            )
            .peer_grace,
            Duration::ZERO
        );
        assert_eq!(
            load(
                "  listen: tcp://0.0.0.0:7100
  peer_grace: 1h
"
            )
            .peer_grace,
            Duration::from_secs(3600)
        );
        for bad in ["61m", "2h", "soon"] {
            let text = format!(
                "version: 1\nhost: {{name: h1}}\ndefaults: {{image: img}}\ngroups:\n  g:\n    agents:\n      A: {{}}\nfederation:\n  listen: tcp://0.0.0.0:7100\n  peer_grace: {bad}\n"
            );
            let err = load_str("f.yaml", &text, &LoadOptions::default())
                .err()
                .unwrap_or_else(|| panic!("peer_grace {bad} is refused"));
            assert!(format!("{err:?}").contains("peer_grace"), "{bad}: {err:?}");
        }
    }

    #[test]
    fn roles_rotation_keys_and_remote_commands_are_read_and_survive_conversion() {
        const NEW: &str = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID";
        const MONITOR: &str = "D:)Q[IlAW!ahhC2ac:9*A}h:p?([4%wOTJ%JR%cs";
        let text = format!(
            "version: 1\nhost: {{name: h1}}\ndefaults: {{image: img}}\ngroups:\n  g:\n    agents:\n      A: {{}}\nfederation:\n  listen: tcp://0.0.0.0:7300\n  remote_commands: none\n  peers:\n    - {{name: pc2, endpoint: tcp://pc2.lan:7300, public_keys: [\"{KEY}\", \"{NEW}\"]}}\n    - {{name: grafana, role: monitor, public_key: \"{MONITOR}\"}}\n"
        );
        let config = load_str("f.yaml", &text, &LoadOptions::default())
            .expect("loads")
            .config;
        let f = config.federation.as_ref().expect("federation");
        assert_eq!(f.remote_commands, RemoteCommands::None);
        assert_eq!(f.peers[0].public_keys().collect::<Vec<_>>(), [KEY, NEW]);
        assert_eq!(f.peers[0].role, PeerRole::Peer);
        assert_eq!(f.peers[1].role, PeerRole::Monitor);
        assert_eq!(f.peers[1].endpoint, "");
        assert_eq!(
            load("  listen: tcp://0.0.0.0:7300\n").remote_commands,
            RemoteCommands::Operate,
            "the default"
        );
        let again = convert::to_v1_yaml(&config);
        let reread = load_str("again.yaml", &again, &LoadOptions::default())
            .expect("the converted config loads")
            .config;
        assert_eq!(reread.federation, config.federation);
    }
}

#[cfg(test)]
mod next_layer_tests {
    use orch_core::model::{Amount, DEFAULT_MIN_HEALTHY, OverLimit, PortMapping, Rollout};
    use orch_core::units::{Duration, Percent};

    use crate::{LoadOptions, convert, load_str};

    const FULL: &str = r#"version: 1
host: {name: h1}
defaults:
  image: img
  rollout: {watch: 1m, max_surge: 25%}
  min_healthy: 10s
groups:
  core:
    agents:
      Registry: {}
  web:
    slo: {latency_p99: 2s}
    rollout: {auto_rollback: false, max_unavailable: 1, healthy_deadline: 2m}
    min_healthy: 3s
    agents:
      Front:
        ports: ["127.0.0.1:8000-8009:8080", "9100"]
        gpu: {slice: mps, memory: 2g, compute: 10%, over_limit: restart}
        replicas: 2
        autoscale:
          min: 1
          max: 10
          cpu: 70%
          gpu_util: 80%
          metric: {name: agent_queue_depth, per_replica: 10, shared: true}
          latency_slo: true
          up_after: 30s
          down_after: 10m
          reverse_after: 15m
      Back:
        autoscale: {min: 2, max: 4, cpu: 60%}
"#;

    #[test]
    fn every_new_key_is_read_and_merged_over_its_default() {
        let c = load_str("f.yaml", FULL, &LoadOptions::default())
            .expect("loads")
            .config;
        let core = c.group("core").expect("core");
        assert_eq!(
            core.rollout,
            Rollout {
                watch: Duration::from_secs(60),
                max_surge: Amount::Share(Percent::whole(25)),
                ..Rollout::default()
            }
        );
        assert_eq!(core.min_healthy, Duration::from_secs(10));
        let web = c.group("web").expect("web");
        assert_eq!(
            web.rollout,
            Rollout {
                watch: Duration::from_secs(60),
                auto_rollback: false,
                max_unavailable: Amount::Count(1),
                max_surge: Amount::Share(Percent::whole(25)),
                healthy_deadline: Duration::from_secs(120),
            }
        );
        assert_eq!(web.min_healthy, Duration::from_secs(3));

        let front = c.agent("Front").expect("Front");
        assert_eq!(front.replicas, 2);
        assert_eq!(front.gpu_over_limit, OverLimit::Restart);
        assert_eq!(
            front.ports[0],
            PortMapping::parse("127.0.0.1:8000-8009:8080").expect("port")
        );
        let a = front.autoscale.as_ref().expect("autoscale");
        assert_eq!((a.min, a.max), (1, 10));
        assert_eq!(a.cpu, Some(Percent::whole(70)));
        assert_eq!(a.gpu_util, Some(Percent::whole(80)));
        let m = a.metric.as_ref().expect("metric");
        assert_eq!(
            (m.name.as_str(), m.per_replica, m.shared),
            ("agent_queue_depth", 10.0, true)
        );
        assert!(a.latency_slo);
        assert_eq!(
            (a.up_after, a.down_after, a.reverse_after),
            (
                Duration::from_secs(30),
                Duration::from_secs(600),
                Duration::from_secs(900)
            )
        );
        // Without `replicas`, an autoscaled agent starts at `min`.
        let back = c.agent("Back").expect("Back");
        assert_eq!(back.replicas, 2);
        assert_eq!(
            back.autoscale.as_ref().map(|a| a.reverse_after),
            Some(orch_core::model::Autoscale::DEFAULT_REVERSE_AFTER)
        );
        assert_eq!(c.agent("Registry").expect("Registry").autoscale, None);
    }

    #[test]
    fn builtin_defaults_apply_when_nothing_is_written() {
        let c = load_str(
            "f.yaml",
            "version: 1\nhost: {name: h1}\ndefaults: {image: img}\ngroups:\n  g:\n    agents:\n      A: {gpu: {slice: mps, memory: 1g, compute: 5%}}\n",
            &LoadOptions::default(),
        )
        .expect("loads")
        .config;
        let g = c.group("g").expect("g");
        assert_eq!(g.rollout, Rollout::default());
        assert_eq!(
            (g.rollout.max_surge, g.rollout.max_unavailable),
            (Amount::Count(1), Amount::Count(0))
        );
        assert_eq!(g.min_healthy, DEFAULT_MIN_HEALTHY);
        assert_eq!(c.agent("A").expect("A").gpu_over_limit, OverLimit::Warn);
    }

    #[test]
    fn the_new_keys_survive_conversion() {
        let c = load_str("f.yaml", FULL, &LoadOptions::default())
            .expect("loads")
            .config;
        let text = convert::to_v1_yaml(&c);
        let again = load_str("again.yaml", &text, &LoadOptions::default())
            .unwrap_or_else(|e| panic!("{e}: {:#?}\n{text}", e.diagnostics()))
            .config;
        assert_eq!(again, c, "{text}");
        // What is a default is not written back.
        assert!(!text.contains("healthy_deadline: 5m"), "{text}");
    }

    #[test]
    fn nomad_and_kubernetes_names_point_to_ours() {
        let err = load_str(
            "f.yaml",
            "version: 1\nhost: {name: h1}\ndefaults: {image: img}\ngroups:\n  g:\n    rollout: {max_parallel: 1, auto_revert: true}\n    agents:\n      A: {autoscale: {maxReplicas: 3, cpu: 50%}}\n",
            &LoadOptions::default(),
        )
        .expect_err("refused");
        let helps: Vec<&str> = err
            .diagnostics()
            .iter()
            .filter_map(|d| d.help.as_deref())
            .collect();
        assert!(
            helps.iter().any(|h| h.contains("`max_unavailable`")),
            "{helps:?}"
        );
        assert!(
            helps.iter().any(|h| h.contains("`auto_rollback`")),
            "{helps:?}"
        );
        assert!(helps.contains(&"write `max`"), "{helps:?}");
    }

    fn over_limit_of(text: &str) -> Result<orch_core::model::HostConfig, crate::ConfigError> {
        load_str("f.yaml", text, &LoadOptions::default()).map(|l| l.config)
    }

    const GPU_AGENTS: &str = "groups:\n  g:\n    agents:\n      A: {gpu: {slice: mps, memory: 1g, compute: 5%}}\n      B: {gpu: {slice: mps, memory: 1g, compute: 5%, over_limit: warn}}\n      C: {}\n";

    #[test]
    fn over_limit_takes_its_default_from_defaults_and_an_agent_overrides_it() {
        let c = over_limit_of(&format!(
            "version: 1\nhost: {{name: h1}}\ndefaults: {{image: img, gpu: {{over_limit: restart}}}}\n{GPU_AGENTS}"
        ))
        .expect("loads");
        assert_eq!(c.defaults.gpu_over_limit, OverLimit::Restart);
        let of = |a: &str| c.agent(a).expect(a).gpu_over_limit;
        assert_eq!(
            (of("A"), of("B"), of("C")),
            (OverLimit::Restart, OverLimit::Warn, OverLimit::Restart)
        );
        // Written back as it was meant: the default once, the exception
        // on its agent.
        let text = convert::to_v1_yaml(&c);
        let again = over_limit_of(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(again, c, "{text}");
        assert_eq!(text.matches("over_limit: restart").count(), 1, "{text}");
        assert_eq!(text.matches("over_limit: warn").count(), 1, "{text}");
    }

    #[test]
    fn a_bad_over_limit_is_refused_with_the_nearest_action() {
        let err = over_limit_of(
            "version: 1\nhost: {name: h1}\ndefaults: {image: img}\ngroups:\n  g:\n    agents:\n      A: {gpu: {slice: exclusive, over_limit: restrat}}\n",
        )
        .expect_err("refused");
        let d = &err.diagnostics()[0];
        assert_eq!(d.message, "unknown `over_limit` action `restrat`");
        assert_eq!(d.help.as_deref(), Some("did you mean `restart`?"));
        let err = over_limit_of(
            "version: 1\nhost: {name: h1}\ndefaults: {image: img, gpu: {over_limit: kill}}\ngroups:\n  g:\n    agents:\n      A: {}\n",
        )
        .expect_err("refused");
        let d = &err.diagnostics()[0];
        assert_eq!(d.message, "unknown `over_limit` action `kill`");
        assert!(
            d.help.as_deref().is_some_and(|h| h.contains("`warn`")),
            "{d:?}"
        );
    }

    #[test]
    fn defaults_refuse_a_gpu_request_and_fallbacks_refuse_over_limit() {
        let err = over_limit_of(
            "version: 1\nhost: {name: h1}\ndefaults: {image: img, gpu: {slice: exclusive, over_limit: warn}}\ngroups:\n  g:\n    agents:\n      A: {}\n",
        )
        .expect_err("refused");
        let messages: Vec<&str> = err
            .diagnostics()
            .iter()
            .map(|d| d.message.as_str())
            .collect();
        assert_eq!(messages, ["`gpu.slice` cannot be set in `defaults`"]);
        let err = over_limit_of(
            "version: 1\nhost: {name: h1}\ndefaults: {image: img}\ngroups:\n  g:\n    agents:\n      A: {gpu: {slice: exclusive, fallback: {slice: time-slice, over_limit: warn}}}\n",
        )
        .expect_err("refused");
        let messages: Vec<&str> = err
            .diagnostics()
            .iter()
            .map(|d| d.message.as_str())
            .collect();
        assert_eq!(messages, ["`over_limit` cannot be set on a fallback"]);
    }
}
