//! Writing a model back as v1 YAML (`config convert`, `config show -o yaml`).
//!
//! The writer emits `defaults` once and, per agent, only what differs from
//! them, so a converted legacy file reads like one written by hand.
//! Invariant (tested): loading the output gives back the same model.

use orch_core::gpu::{GpuRequest, SliceRequest};
use orch_core::model::{
    Agent, AgentDefaults, Amount, Autoscale, Backoff, CrashLoop, Federation, GpuInjection,
    GpuSelector, HealthCheck, HostConfig, OverLimit, PeerRole, Probe, RemoteCommands, Resources,
    RestartMode, RestartPolicy, Rollout, RuntimeSettings, Security, ShutdownMode,
};
use serde_yaml::{Mapping, Value};

fn s(v: impl ToString) -> Value {
    Value::String(v.to_string())
}

fn map() -> Mapping {
    Mapping::new()
}

fn put(m: &mut Mapping, k: &str, v: Value) {
    m.insert(s(k), v);
}

fn strings(items: &[String]) -> Value {
    Value::Sequence(items.iter().map(s).collect())
}

fn string_map(m: &std::collections::BTreeMap<String, String>) -> Value {
    let mut out = map();
    for (k, v) in m {
        out.insert(s(k), s(v));
    }
    Value::Mapping(out)
}

/// Entries of `m` that `base` lacks or holds with another value.
fn map_diff(
    m: &std::collections::BTreeMap<String, String>,
    base: &std::collections::BTreeMap<String, String>,
) -> std::collections::BTreeMap<String, String> {
    m.iter()
        .filter(|(k, v)| base.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The whole config as v1 YAML text.
pub fn to_v1_yaml(config: &HostConfig) -> String {
    let value = Value::Mapping(to_v1(config));
    let body = serde_yaml::to_string(&value).unwrap_or_default();
    format!(
        "# startup_config for host {}, version 1.\n{body}",
        config.host.name
    )
}

pub fn to_v1(c: &HostConfig) -> Mapping {
    let mut root = map();
    put(&mut root, "version", Value::from(1));
    let mut host = map();
    put(&mut host, "name", s(&c.host.name));
    if !c.host.labels.is_empty() {
        put(&mut host, "labels", string_map(&c.host.labels));
    }
    put(&mut root, "host", Value::Mapping(host));

    let builtin = AgentDefaults::default();
    let defaults = defaults_diff(&c.defaults, &builtin);
    if !defaults.is_empty() {
        put(&mut root, "defaults", Value::Mapping(defaults));
    }
    if !c.gpus.is_empty() {
        let items = c
            .gpus
            .iter()
            .map(|p| {
                let mut m = map();
                let sel = match &p.select {
                    GpuSelector::All => s("all"),
                    GpuSelector::Index(i) => one("index", Value::from(*i)),
                    GpuSelector::Uuid(u) => one("uuid", s(u)),
                    GpuSelector::Name(n) => one("name", s(n)),
                };
                put(&mut m, "select", sel);
                if let Some(sh) = p.sharing {
                    put(&mut m, "sharing", s(sh.as_str()));
                }
                if p.reserve != orch_core::units::ByteSize::mib(512) {
                    put(&mut m, "reserve", s(p.reserve));
                }
                if p.oversubscribe {
                    put(&mut m, "oversubscribe", Value::Bool(true));
                }
                Value::Mapping(m)
            })
            .collect();
        put(&mut root, "gpus", Value::Sequence(items));
    }
    let runtime = runtime_diff(&c.runtime, &RuntimeSettings::defaults_for(&c.host.name));
    if !runtime.is_empty() {
        put(&mut root, "runtime", Value::Mapping(runtime));
    }
    if !c.secrets.is_empty() {
        // Paths only: the model never holds a secret's value.
        put(&mut root, "secrets", string_map(&c.secrets));
    }

    let mut groups = map();
    for g in &c.groups {
        let mut gm = map();
        if let Some(d) = &g.description {
            put(&mut gm, "description", s(d));
        }
        if !g.depends_on.is_empty() {
            put(&mut gm, "depends_on", strings(&g.depends_on));
        }
        if let Some(slo) = &g.slo {
            let mut sm = map();
            if let Some(a) = slo.availability {
                put(&mut sm, "availability", s(a));
            }
            if let Some(l) = slo.latency_p99 {
                put(&mut sm, "latency_p99", s(l));
            }
            if let Some(e) = slo.error_rate {
                put(&mut sm, "error_rate", s(e));
            }
            if slo.window != orch_core::units::Duration::from_secs(30 * 86400) {
                put(&mut sm, "window", s(slo.window));
            }
            put(&mut gm, "slo", Value::Mapping(sm));
        }
        let r = rollout_diff(&g.rollout, &c.defaults.rollout);
        if !r.is_empty() {
            put(&mut gm, "rollout", Value::Mapping(r));
        }
        if g.min_healthy != c.defaults.min_healthy {
            put(&mut gm, "min_healthy", s(g.min_healthy));
        }
        let mut agents = map();
        for a in &g.agents {
            agents.insert(s(&a.name), Value::Mapping(agent_diff(a, &c.defaults)));
        }
        put(&mut gm, "agents", Value::Mapping(agents));
        groups.insert(s(&g.name), Value::Mapping(gm));
    }
    put(&mut root, "groups", Value::Mapping(groups));

    if let Some(f) = &c.federation {
        let mut fm = map();
        put(&mut fm, "listen", s(&f.listen));
        if !f.peers.is_empty() {
            let peers = f
                .peers
                .iter()
                .map(|p| {
                    let mut pm = map();
                    put(&mut pm, "name", s(&p.name));
                    if !p.endpoint.is_empty() {
                        put(&mut pm, "endpoint", s(&p.endpoint));
                    }
                    match &p.next_public_key {
                        None => put(&mut pm, "public_key", s(&p.public_key)),
                        Some(next) => put(
                            &mut pm,
                            "public_keys",
                            Value::Sequence(vec![s(&p.public_key), s(next)]),
                        ),
                    }
                    if p.role == PeerRole::Monitor {
                        put(&mut pm, "role", s("monitor"));
                    }
                    if let Some(a) = &p.probe_address {
                        put(&mut pm, "probe_address", s(a));
                    }
                    Value::Mapping(pm)
                })
                .collect();
            put(&mut fm, "peers", Value::Sequence(peers));
        }
        if let Some(k) = &f.secret_key_file {
            put(&mut fm, "keys", one("secret_key_file", s(k)));
        }
        if f.heartbeat != Federation::DEFAULT_HEARTBEAT {
            put(&mut fm, "heartbeat", s(f.heartbeat));
        }
        if f.suspect_after != Federation::DEFAULT_SUSPECT_AFTER {
            put(&mut fm, "suspect_after", Value::from(f.suspect_after));
        }
        if f.down_after != Federation::DEFAULT_DOWN_AFTER {
            put(&mut fm, "down_after", Value::from(f.down_after));
        }
        if f.peer_grace != Federation::DEFAULT_PEER_GRACE {
            put(&mut fm, "peer_grace", s(f.peer_grace));
        }
        let remote = match f.remote_commands {
            RemoteCommands::None => Some("none"),
            RemoteCommands::Operate => None,
            RemoteCommands::Admin => Some("admin"),
        };
        if let Some(r) = remote {
            put(&mut fm, "remote_commands", s(r));
        }
        put(&mut root, "federation", Value::Mapping(fm));
    }
    if c.metrics != Default::default() {
        let listen = match &c.metrics.listen {
            Some(l) => s(l),
            None => s("none"),
        };
        let mut mm = map();
        put(&mut mm, "listen", listen);
        if let Some(dir) = &c.metrics.dcgm_job_mapping_dir {
            put(&mut mm, "dcgm_job_mapping_dir", s(dir));
        }
        put(&mut root, "metrics", Value::Mapping(mm));
    }
    if c.control != Default::default() {
        let mut cm = map();
        put(&mut cm, "socket", s(&c.control.socket));
        if let Some(g) = &c.control.group {
            put(&mut cm, "group", s(g));
        }
        put(&mut root, "control", Value::Mapping(cm));
    }
    root
}

fn one(k: &str, v: Value) -> Value {
    let mut m = map();
    put(&mut m, k, v);
    Value::Mapping(m)
}

fn defaults_diff(d: &AgentDefaults, base: &AgentDefaults) -> Mapping {
    let mut m = map();
    if let Some(i) = &d.image
        && d.image != base.image
    {
        put(&mut m, "image", s(i));
    }
    let env = map_diff(&d.env, &base.env);
    if !env.is_empty() {
        put(&mut m, "env", string_map(&env));
    }
    let labels = map_diff(&d.labels, &base.labels);
    if !labels.is_empty() {
        put(&mut m, "labels", string_map(&labels));
    }
    common_diff(
        &mut m,
        (&d.restart, &base.restart),
        (&d.health, &base.health),
        (&d.resources, &base.resources),
        (&d.security, &base.security),
    );
    if d.stop_timeout != base.stop_timeout {
        put(&mut m, "stop_timeout", s(d.stop_timeout));
    }
    let r = rollout_diff(&d.rollout, &base.rollout);
    if !r.is_empty() {
        put(&mut m, "rollout", Value::Mapping(r));
    }
    if d.min_healthy != base.min_healthy {
        put(&mut m, "min_healthy", s(d.min_healthy));
    }
    if d.gpu_over_limit != base.gpu_over_limit {
        let mut gm = map();
        put(&mut gm, "over_limit", s(over_limit(d.gpu_over_limit)));
        put(&mut m, "gpu", Value::Mapping(gm));
    }
    m
}

fn over_limit(o: OverLimit) -> &'static str {
    match o {
        OverLimit::Warn => "warn",
        OverLimit::Restart => "restart",
    }
}

fn amount(a: Amount) -> Value {
    match a {
        Amount::Count(n) => Value::from(n),
        Amount::Share(p) => s(p),
    }
}

fn rollout_diff(r: &Rollout, base: &Rollout) -> Mapping {
    let mut m = map();
    if r.watch != base.watch {
        put(&mut m, "watch", s(r.watch));
    }
    if r.auto_rollback != base.auto_rollback {
        put(&mut m, "auto_rollback", Value::Bool(r.auto_rollback));
    }
    if r.max_unavailable != base.max_unavailable {
        put(&mut m, "max_unavailable", amount(r.max_unavailable));
    }
    if r.max_surge != base.max_surge {
        put(&mut m, "max_surge", amount(r.max_surge));
    }
    if r.healthy_deadline != base.healthy_deadline {
        put(&mut m, "healthy_deadline", s(r.healthy_deadline));
    }
    m
}

fn autoscale(a: &Autoscale) -> Value {
    let mut m = map();
    if a.min != 1 {
        put(&mut m, "min", Value::from(a.min));
    }
    put(&mut m, "max", Value::from(a.max));
    if let Some(c) = a.cpu {
        put(&mut m, "cpu", s(c));
    }
    if let Some(g) = a.gpu_util {
        put(&mut m, "gpu_util", s(g));
    }
    if let Some(t) = &a.metric {
        let mut mm = map();
        put(&mut mm, "name", s(&t.name));
        put(&mut mm, "per_replica", Value::from(t.per_replica));
        if t.shared {
            put(&mut mm, "shared", Value::Bool(true));
        }
        put(&mut m, "metric", Value::Mapping(mm));
    }
    if a.latency_slo {
        put(&mut m, "latency_slo", Value::Bool(true));
    }
    if a.up_after != Autoscale::DEFAULT_UP_AFTER {
        put(&mut m, "up_after", s(a.up_after));
    }
    if a.down_after != Autoscale::DEFAULT_DOWN_AFTER {
        put(&mut m, "down_after", s(a.down_after));
    }
    if a.reverse_after != Autoscale::DEFAULT_REVERSE_AFTER {
        put(&mut m, "reverse_after", s(a.reverse_after));
    }
    Value::Mapping(m)
}

fn common_diff(
    m: &mut Mapping,
    restart: (&RestartPolicy, &RestartPolicy),
    health: (&HealthCheck, &HealthCheck),
    resources: (&Resources, &Resources),
    security: (&Security, &Security),
) {
    let r = restart_diff(restart.0, restart.1);
    if !r.is_empty() {
        put(m, "restart", Value::Mapping(r));
    }
    let h = health_diff(health.0, health.1);
    if let Some(h) = h {
        put(m, "health", h);
    }
    let mut rm = map();
    let (res, base) = resources;
    if res.cpus != base.cpus
        && let Some(c) = res.cpus
    {
        put(&mut rm, "cpus", Value::from(c));
    }
    if res.memory != base.memory
        && let Some(mem) = res.memory
    {
        put(&mut rm, "memory", s(mem));
    }
    if res.pids != base.pids
        && let Some(p) = res.pids
    {
        put(&mut rm, "pids", Value::from(p));
    }
    if !rm.is_empty() {
        put(m, "resources", Value::Mapping(rm));
    }
    let (sec, base) = security;
    let mut sm = map();
    if sec.cap_add != base.cap_add {
        put(&mut sm, "cap_add", strings(&sec.cap_add));
    }
    if sec.read_only != base.read_only {
        put(&mut sm, "read_only", Value::Bool(sec.read_only));
    }
    if !sm.is_empty() {
        put(m, "security", Value::Mapping(sm));
    }
}

fn restart_diff(r: &RestartPolicy, base: &RestartPolicy) -> Mapping {
    let mut m = map();
    if r.policy != base.policy {
        let p = match r.policy {
            RestartMode::Always => "always",
            RestartMode::OnFailure => "on-failure",
            RestartMode::Never => "never",
        };
        put(&mut m, "policy", s(p));
    }
    let b = backoff_diff(&r.backoff, &base.backoff);
    if !b.is_empty() {
        put(&mut m, "backoff", Value::Mapping(b));
    }
    let c = crashloop_diff(&r.crashloop, &base.crashloop);
    if !c.is_empty() {
        put(&mut m, "crashloop", Value::Mapping(c));
    }
    m
}

fn backoff_diff(b: &Backoff, base: &Backoff) -> Mapping {
    let mut m = map();
    if b.initial != base.initial {
        put(&mut m, "initial", s(b.initial));
    }
    if b.max != base.max {
        put(&mut m, "max", s(b.max));
    }
    if b.multiplier != base.multiplier {
        put(&mut m, "multiplier", Value::from(b.multiplier));
    }
    if b.jitter != base.jitter {
        put(&mut m, "jitter", s(b.jitter));
    }
    m
}

fn crashloop_diff(c: &CrashLoop, base: &CrashLoop) -> Mapping {
    let mut m = map();
    if c.restarts != base.restarts {
        put(&mut m, "restarts", Value::from(c.restarts));
    }
    if c.window != base.window {
        put(&mut m, "window", s(c.window));
    }
    if c.stable != base.stable
        && let Some(stable) = c.stable
    {
        put(&mut m, "stable", s(stable));
    }
    m
}

fn health_diff(h: &HealthCheck, base: &HealthCheck) -> Option<Value> {
    let mut m = map();
    if h.probe != base.probe {
        match &h.probe {
            Probe::None => put(&mut m, "none", Value::Bool(true)),
            Probe::Http { port, path } => {
                let mut p = map();
                put(&mut p, "port", Value::from(*port));
                if path != "/health" {
                    put(&mut p, "path", s(path));
                }
                put(&mut m, "http", Value::Mapping(p));
            }
            Probe::Tcp { port } => put(&mut m, "tcp", one("port", Value::from(*port))),
            Probe::Exec { command } => put(&mut m, "exec", strings(command)),
        }
    }
    if h.interval != base.interval {
        put(&mut m, "interval", s(h.interval));
    }
    if h.timeout != base.timeout {
        put(&mut m, "timeout", s(h.timeout));
    }
    if h.retries != base.retries {
        put(&mut m, "retries", Value::from(h.retries));
    }
    if h.start_period != base.start_period {
        put(&mut m, "start_period", s(h.start_period));
    }
    (!m.is_empty()).then_some(Value::Mapping(m))
}

fn runtime_diff(r: &RuntimeSettings, base: &RuntimeSettings) -> Mapping {
    let mut m = map();
    if r.gpu_injection != base.gpu_injection {
        let v = match r.gpu_injection {
            GpuInjection::Auto => "auto",
            GpuInjection::Nvidia => "nvidia",
            GpuInjection::Cdi => "cdi",
            GpuInjection::Env => "env",
        };
        put(&mut m, "gpu_injection", s(v));
    }
    if r.network != base.network {
        put(&mut m, "network", s(&r.network));
    }
    if r.shutdown != base.shutdown {
        let v = match r.shutdown {
            ShutdownMode::Leave => "leave",
            ShutdownMode::Stop => "stop",
        };
        put(&mut m, "shutdown", s(v));
    }
    if r.state_dir != base.state_dir {
        put(&mut m, "state_dir", s(&r.state_dir));
    }
    if let Some(l) = &r.nvml_library {
        put(&mut m, "nvml_library", s(l));
    }
    if let Some(l) = &r.docker_host {
        put(&mut m, "docker_host", s(l));
    }
    if r.mps != base.mps {
        let mut mm = map();
        if r.mps.control_binary != base.mps.control_binary {
            put(&mut mm, "control_binary", s(&r.mps.control_binary));
        }
        if let Some(dir) = &r.mps.directory {
            put(&mut mm, "directory", s(dir));
        }
        put(&mut m, "mps", Value::Mapping(mm));
    }
    m
}

pub fn gpu_request(r: &GpuRequest) -> Value {
    let mut m = map();
    match &r.kind {
        SliceRequest::Mig { profile } => {
            put(&mut m, "slice", s("mig"));
            put(&mut m, "profile", s(profile));
        }
        SliceRequest::Mps { memory, compute } => {
            put(&mut m, "slice", s("mps"));
            put(&mut m, "memory", s(memory));
            put(&mut m, "compute", s(compute));
        }
        SliceRequest::Exclusive => put(&mut m, "slice", s("exclusive")),
        SliceRequest::TimeSlice => put(&mut m, "slice", s("time-slice")),
    }
    if let Some(f) = &r.fallback {
        put(&mut m, "fallback", gpu_request(f));
    }
    Value::Mapping(m)
}

fn agent_diff(a: &Agent, d: &AgentDefaults) -> Mapping {
    let mut m = map();
    if Some(&a.image) != d.image.as_ref() {
        put(&mut m, "image", s(&a.image));
    }
    if let Some(c) = &a.command {
        put(&mut m, "command", strings(c));
    }
    if let Some(sp) = &a.script_path {
        put(&mut m, "script_path", s(sp));
    }
    if !a.secrets.is_empty() {
        let names: Vec<String> = a.secrets.iter().map(|x| x.name.clone()).collect();
        put(&mut m, "secrets", strings(&names));
    }
    let env = map_diff(&a.env, &d.env);
    if !env.is_empty() {
        put(&mut m, "env", string_map(&env));
    }
    if !a.ports.is_empty() {
        put(
            &mut m,
            "ports",
            Value::Sequence(a.ports.iter().map(s).collect()),
        );
    }
    if !a.volumes.is_empty() {
        put(
            &mut m,
            "volumes",
            Value::Sequence(a.volumes.iter().map(s).collect()),
        );
    }
    if !a.depends_on.is_empty() {
        put(&mut m, "depends_on", strings(&a.depends_on));
    }
    if let Some(g) = &a.gpu {
        let mut value = gpu_request(g);
        if a.gpu_over_limit != d.gpu_over_limit {
            if let Value::Mapping(gm) = &mut value {
                put(gm, "over_limit", s(over_limit(a.gpu_over_limit)));
            }
        }
        put(&mut m, "gpu", value);
    }
    common_diff(
        &mut m,
        (&a.restart, &d.restart),
        (&a.health, &d.health),
        (&a.resources, &d.resources),
        (&a.security, &d.security),
    );
    // An autoscaled agent starts at `min` unless `replicas` says otherwise.
    let start = a.autoscale.as_ref().map_or(1, |x| x.min);
    if a.replicas != start {
        put(&mut m, "replicas", Value::from(a.replicas));
    }
    if let Some(x) = &a.autoscale {
        put(&mut m, "autoscale", autoscale(x));
    }
    if !a.required {
        put(&mut m, "required", Value::Bool(false));
    }
    let labels = map_diff(&a.labels, &d.labels);
    if !labels.is_empty() {
        put(&mut m, "labels", string_map(&labels));
    }
    if a.stop_timeout != d.stop_timeout {
        put(&mut m, "stop_timeout", s(a.stop_timeout));
    }
    if let Some(c) = &a.config {
        put(
            &mut m,
            "config",
            serde_yaml::to_value(c).unwrap_or(Value::Null),
        );
    }
    m
}
