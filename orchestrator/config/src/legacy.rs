//! Import of the legacy startup_config format (`agent_groups` or
//! `pc2_services` define agents, `docker_groups` define groups).
//!
//! Mapping rules:
//! - `docker_groups.<g>` becomes group `g` (with its description); its
//!   `agents` list assigns agents to it.
//! - An agent in no docker group is placed in the docker group holding the
//!   most agents of its legacy `agent_groups` section (first such group in
//!   file order on a tie), with a warning. Nothing is dropped.
//! - `port` becomes a published port `P:P` (bound to `host` when that is a
//!   specific address); `health_check_port` becomes an HTTP health check on
//!   `/health` (a TCP check on `port` when there is none).
//! - `"${PORT_OFFSET}+7200"` is evaluated (`PORT_OFFSET` given by the
//!   caller, 0 by default); so are such values inside `config`.
//! - `dependencies` become `depends_on`; `required: false` marks the agent
//!   optional; `config` is kept as the agent's free-form config;
//!   `script_path` is kept and the image comes from a template.
//! - `global_settings.environment`, `.resource_limits` (`memory_mb`,
//!   `cpu_percent` as a share of one CPU) and `.health_checks`, and the
//!   top-level `health_checks.start_period_seconds`, become defaults.
//! - Everything else is reported as a warning at its line.

use std::collections::BTreeMap;

use orch_core::model::{
    Agent, AgentDefaults, ControlSettings, Group, HealthCheck, HostConfig, HostInfo,
    MetricsSettings, PortMapping, Probe, Protocol, RuntimeSettings,
};
use orch_core::units::{ByteSize, Duration};

use crate::decode::{self as de, MapReader};
use crate::diag::Diagnostics;
use crate::source::{AgentSource, GroupSource, SourceIndex, valid_name};
use crate::yaml::{Node, Span, Value};

/// What the importer needs that the legacy file does not say.
#[derive(Debug, Clone)]
pub struct LegacyOptions {
    pub host_name: String,
    pub port_offset: i64,
    /// Image for agents given only a `script_path`. Placeholders: `{agent}`,
    /// `{agent_lower}`, `{group}`, `{script_stem}`.
    pub image_template: String,
}

impl LegacyOptions {
    pub fn new(host_name: impl Into<String>) -> Self {
        LegacyOptions {
            host_name: host_name.into(),
            port_offset: 0,
            image_template: DEFAULT_IMAGE_TEMPLATE.into(),
        }
    }
}

pub const DEFAULT_IMAGE_TEMPLATE: &str = "orchestrator-agent:latest";

const PLACEHOLDERS: &[&str] = &["{agent}", "{agent_lower}", "{group}", "{script_stem}"];

/// Checks an image template: only known placeholders, balanced braces.
pub fn check_image_template(t: &str) -> Result<(), String> {
    let mut rest = t;
    while let Some(i) = rest.find('{') {
        let Some(j) = rest[i..].find('}') else {
            return Err(format!("image template `{t}` has an unclosed `{{`"));
        };
        let ph = &rest[i..i + j + 1];
        if !PLACEHOLDERS.contains(&ph) {
            return Err(format!(
                "image template `{t}` uses unknown placeholder `{ph}`; known: {}",
                PLACEHOLDERS.join(", ")
            ));
        }
        rest = &rest[i + j + 1..];
    }
    if t.trim().is_empty() {
        return Err("the image template is empty".into());
    }
    Ok(())
}

fn render_image(t: &str, agent: &str, group: &str, script: Option<&str>) -> String {
    let stem = script
        .and_then(|s| s.rsplit('/').next())
        .map(|f| f.strip_suffix(".py").unwrap_or(f))
        .unwrap_or(agent);
    t.replace("{agent_lower}", &agent.to_lowercase())
        .replace("{agent}", agent)
        .replace("{group}", group)
        .replace("{script_stem}", &stem.to_lowercase())
}

/// True when the document looks like a legacy config.
pub fn is_legacy(root: &Node) -> bool {
    root.get("version").is_none()
        && (root.get("agent_groups").is_some()
            || root.get("pc2_services").is_some()
            || root.get("docker_groups").is_some())
}

struct LegacyAgent<'a> {
    name: String,
    key_span: Span,
    /// The `agent_groups` section it was defined in (mainpc shape only).
    section: Option<String>,
    node: &'a Node,
}

pub fn import(
    root: &Node,
    opts: &LegacyOptions,
    d: &mut Diagnostics,
) -> Option<(HostConfig, SourceIndex)> {
    let mut top = MapReader::new(root, "the legacy config", d)?;
    let mut defaults = AgentDefaults::default();
    if let Some(n) = top.take("global_settings") {
        global_settings(n, &mut defaults, d);
    }
    if let Some(n) = top.take("health_checks")
        && let Some(mut m) = MapReader::new(n, "`health_checks`", d)
    {
        if let Some(v) = m.take("start_period_seconds")
            && let Some(s) = de::uint(v, "`start_period_seconds`", 0, 86_400, d)
        {
            defaults.health.start_period = Duration::from_secs(s);
        }
        for (k, _) in m.rest() {
            unmapped(k, "health_checks", d);
        }
    }
    let template_is_fixed = !opts.image_template.contains('{');
    if template_is_fixed {
        defaults.image = Some(opts.image_template.clone());
    }

    // Agents, from either shape.
    let mut agents: Vec<LegacyAgent> = Vec::new();
    if let Some(n) = top.take("agent_groups")
        && let Some(mut sections) = MapReader::new(n, "`agent_groups`", d)
    {
        for (sk, sv) in sections.rest() {
            let section = sk.as_str().unwrap_or("~").to_string();
            if sv.is_null() || sv.as_map().is_some_and(<[_]>::is_empty) {
                d.warning(
                    "legacy-empty",
                    sk.span,
                    format!("agent group `{section}` defines no agents"),
                );
                continue;
            }
            let Some(mut am) = MapReader::new(sv, format!("agent group `{section}`"), d) else {
                continue;
            };
            for (ak, av) in am.rest() {
                agents.push(LegacyAgent {
                    name: ak.as_str().unwrap_or("~").to_string(),
                    key_span: ak.span,
                    section: Some(section.clone()),
                    node: av,
                });
            }
        }
    }
    if let Some(n) = top.take("pc2_services")
        && let Some(items) = de::seq(n, "`pc2_services`", d)
    {
        for item in items {
            match item.entry("name") {
                Some((_, nv)) => {
                    if let Some(name) = de::name(nv, "the service name", d) {
                        agents.push(LegacyAgent {
                            name,
                            key_span: nv.span,
                            section: None,
                            node: item,
                        });
                    }
                }
                None => d.error(
                    "missing",
                    item.span,
                    "a service in `pc2_services` needs a `name`",
                ),
            }
        }
    }

    // Groups.
    struct DockerGroup {
        name: String,
        span: Span,
        description: Option<String>,
        members: Vec<String>,
    }
    let mut docker_groups: Vec<DockerGroup> = Vec::new();
    let mut placed: BTreeMap<String, String> = BTreeMap::new();
    if let Some(n) = top.take("docker_groups")
        && let Some(mut gm) = MapReader::new(n, "`docker_groups`", d)
    {
        for (gk, gv) in gm.rest() {
            let gname = gk.as_str().unwrap_or("~").to_string();
            if !valid_name(&gname) {
                d.error(
                    "name",
                    gk.span,
                    format!("`{gname}` is not a valid group name"),
                );
            }
            let Some(mut g) = MapReader::new(gv, format!("docker group `{gname}`"), d) else {
                continue;
            };
            let description = g
                .take("description")
                .and_then(|v| de::string(v, "`description`", d));
            let mut members = Vec::new();
            if let Some(list) = g.take("agents").and_then(|v| de::strings(v, "`agents`", d)) {
                for (aname, span) in list {
                    if !agents.iter().any(|a| a.name == aname) {
                        d.warning_help(
                            "legacy-unknown-agent",
                            span,
                            format!("docker group `{gname}` lists `{aname}`, which no agent definition declares; skipped"),
                            "define the agent or remove it from the group",
                        );
                        continue;
                    }
                    if let Some(first) = placed.get(&aname) {
                        d.warning(
                            "legacy-regrouped",
                            span,
                            format!(
                                "`{aname}` is already in docker group `{first}`; it stays there"
                            ),
                        );
                        continue;
                    }
                    placed.insert(aname.clone(), gname.clone());
                    members.push(aname);
                }
            }
            for (k, _) in g.rest() {
                unmapped(
                    k,
                    &format!("docker_groups.{gname}.{}", k.as_str().unwrap_or("~")),
                    d,
                );
            }
            docker_groups.push(DockerGroup {
                name: gname,
                span: gk.span,
                description,
                members,
            });
        }
    } else {
        d.error_help(
            "legacy-no-groups",
            root.span,
            "the legacy config has no `docker_groups`, so its agents belong to no group",
            "add `docker_groups` or convert by hand to version 1",
        );
    }

    // Agents in no docker group go where most of their section went.
    for a in &agents {
        if placed.contains_key(&a.name) {
            continue;
        }
        let target = a.section.as_ref().and_then(|section| {
            let mut counts: Vec<(usize, usize)> = Vec::new(); // (count, group position)
            for (gi, g) in docker_groups.iter().enumerate() {
                let n = agents
                    .iter()
                    .filter(|x| {
                        x.section.as_ref() == Some(section) && placed.get(&x.name) == Some(&g.name)
                    })
                    .count();
                if n > 0 {
                    counts.push((n, gi));
                }
            }
            counts.sort_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(&y.1)));
            counts.first().map(|(_, gi)| *gi)
        });
        match target {
            Some(gi) => {
                let g = &mut docker_groups[gi];
                d.warning_help(
                    "legacy-ungrouped",
                    a.key_span,
                    format!(
                        "agent `{}` is in no docker group; placed in `{}` with the other agents of `{}`",
                        a.name,
                        g.name,
                        a.section.as_deref().unwrap_or("?")
                    ),
                    format!("list `{}` under a docker group to choose its group", a.name),
                );
                g.members.push(a.name.clone());
                placed.insert(a.name.clone(), g.name.clone());
            }
            None => {
                let gname = a.section.clone().unwrap_or_else(|| "ungrouped".to_string());
                d.warning(
                    "legacy-ungrouped",
                    a.key_span,
                    format!(
                        "agent `{}` is in no docker group; placed in a group `{gname}` of its own",
                        a.name
                    ),
                );
                match docker_groups.iter_mut().find(|g| g.name == gname) {
                    Some(g) => g.members.push(a.name.clone()),
                    None => docker_groups.push(DockerGroup {
                        name: gname.clone(),
                        span: a.key_span,
                        description: None,
                        members: vec![a.name.clone()],
                    }),
                }
                placed.insert(a.name.clone(), gname);
            }
        }
    }

    for (k, _) in top.rest() {
        let key = k.as_str().unwrap_or("~");
        unmapped(k, key, d);
    }

    let mut index = SourceIndex::default();
    let mut groups = Vec::new();
    for g in &docker_groups {
        let mut members = Vec::new();
        for name in &g.members {
            // Definitions in file order decide among duplicates; validation reports them.
            for a in agents.iter().filter(|a| &a.name == name) {
                if let Some(agent) = agent(a, &g.name, &defaults, opts, &mut index, d) {
                    members.push(agent);
                }
            }
        }
        index.groups.push(GroupSource {
            name: g.name.clone(),
            span: g.span,
            depends_on: Vec::new(),
        });
        groups.push(Group {
            name: g.name.clone(),
            description: g.description.clone(),
            depends_on: Vec::new(),
            slo: None,
            agents: members,
        });
    }

    let host = opts.host_name.clone();
    Some((
        HostConfig {
            host: HostInfo {
                name: host.clone(),
                labels: BTreeMap::new(),
            },
            defaults,
            gpus: Vec::new(),
            groups,
            runtime: RuntimeSettings::defaults_for(&host),
            federation: None,
            metrics: MetricsSettings::default(),
            control: ControlSettings::default(),
        },
        index,
    ))
}

fn unmapped(key: &Node, path: &str, d: &mut Diagnostics) {
    d.warning_help(
        "legacy-unmapped",
        key.span,
        format!("`{path}` has no meaning here; ignored"),
        "the orchestrator has no equivalent; remove it or express it in the agent's own config",
    );
}

fn global_settings(node: &Node, defaults: &mut AgentDefaults, d: &mut Diagnostics) {
    let Some(mut m) = MapReader::new(node, "`global_settings`", d) else {
        return;
    };
    if let Some(n) = m.take("environment")
        && let Some(env) = de::string_map(n, "`environment`", d)
    {
        for (k, v) in &env {
            if k.starts_with("ORCH_")
                && let Some((kn, _)) = n.entry(k)
            {
                d.error_help(
                    "reserved",
                    kn.span,
                    format!("`{k}` is set by the orchestrator and cannot be given in `env`"),
                    "rename the variable",
                );
            }
            if v.contains("${")
                && let Some(vn) = n.get(k)
            {
                d.warning_help(
                    "legacy-shell",
                    vn.span,
                    format!("`{k}` uses shell expansion (`{v}`), which containers do not perform; kept as written"),
                    "write the value the agent should see",
                );
            }
        }
        defaults.env = env;
    }
    if let Some(n) = m.take("resource_limits")
        && let Some(mut r) = MapReader::new(n, "`resource_limits`", d)
    {
        if let Some(v) = r.take("memory_mb")
            && let Some(mb) = de::uint(v, "`memory_mb`", 6, 1 << 30, d)
        {
            defaults.resources.memory = Some(ByteSize::mib(mb));
        }
        if let Some(v) = r.take("cpu_percent")
            && let Some(p) = de::uint(v, "`cpu_percent`", 1, 100_000, d)
        {
            let cpus = p as f64 / 100.0;
            defaults.resources.cpus = Some(cpus);
            d.warning(
                "legacy-interpreted",
                v.span,
                format!("`cpu_percent: {p}` read as a limit of {cpus} CPUs ({p}% of one CPU)"),
            );
        }
        for (k, _) in r.rest() {
            unmapped(
                k,
                &format!(
                    "global_settings.resource_limits.{}",
                    k.as_str().unwrap_or("~")
                ),
                d,
            );
        }
    }
    if let Some(n) = m.take("health_checks")
        && let Some(mut h) = MapReader::new(n, "`health_checks`", d)
    {
        if let Some(v) = h.take("interval_seconds")
            && let Some(s) = de::uint(v, "`interval_seconds`", 1, 86_400, d)
        {
            defaults.health.interval = Duration::from_secs(s);
        }
        if let Some(v) = h.take("timeout_seconds")
            && let Some(s) = de::uint(v, "`timeout_seconds`", 1, 86_400, d)
        {
            defaults.health.timeout = Duration::from_secs(s);
        }
        if let Some(v) = h.take("retries")
            && let Some(s) = de::uint(v, "`retries`", 1, 100, d)
        {
            defaults.health.retries = s as u32;
        }
        for (k, _) in h.rest() {
            unmapped(
                k,
                &format!(
                    "global_settings.health_checks.{}",
                    k.as_str().unwrap_or("~")
                ),
                d,
            );
        }
    }
    for (k, _) in m.rest() {
        unmapped(
            k,
            &format!("global_settings.{}", k.as_str().unwrap_or("~")),
            d,
        );
    }
}

/// Evaluates a legacy port: an integer, or `${PORT_OFFSET}+N` style sums.
pub fn port_expr(node: &Node, what: &str, offset: i64, d: &mut Diagnostics) -> Option<u16> {
    let text = match &node.value {
        Value::Scalar { text, .. } => text.trim().to_string(),
        _ => {
            d.error(
                "type",
                node.span,
                format!("{what} must be a port number, found {}", node.kind()),
            );
            return None;
        }
    };
    match eval_sum(&text, offset) {
        Ok(v) if (1..=65535).contains(&v) => Some(v as u16),
        Ok(v) => {
            d.error(
                "port",
                node.span,
                format!("{what} `{text}` evaluates to {v}, which is not a port (1-65535)"),
            );
            None
        }
        Err(e) => {
            d.error_help(
                "port",
                node.span,
                format!("{what} `{text}`: {e}"),
                "write a number or `${PORT_OFFSET}+N`",
            );
            None
        }
    }
}

/// `a+b-c` over integers and `${PORT_OFFSET}`.
pub fn eval_sum(text: &str, offset: i64) -> Result<i64, String> {
    let mut total: i64 = 0;
    let mut sign: i64 = 1;
    let mut rest = text.trim();
    let mut expect_term = true;
    while !rest.is_empty() {
        if expect_term {
            let (value, len) = if let Some(r) = rest.strip_prefix("${") {
                let end = r.find('}').ok_or("unclosed `${`")?;
                let var = &r[..end];
                if var != "PORT_OFFSET" {
                    return Err(format!(
                        "unknown variable `{var}`; only `PORT_OFFSET` is known"
                    ));
                }
                (offset, end + 3)
            } else {
                let len = rest
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(rest.len());
                if len == 0 {
                    return Err(format!("expected a number at `{rest}`"));
                }
                (rest[..len].parse::<i64>().map_err(|e| e.to_string())?, len)
            };
            total = total
                .checked_add(sign.checked_mul(value).ok_or("number too large")?)
                .ok_or("number too large")?;
            rest = rest[len..].trim_start();
            expect_term = false;
        } else {
            sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return Err(format!("expected `+` or `-` at `{rest}`")),
            };
            rest = rest[1..].trim_start();
            expect_term = true;
        }
    }
    if expect_term {
        return Err("incomplete expression".into());
    }
    Ok(total)
}

/// `config` values written as port expressions are evaluated like ports.
fn config_json(node: &Node, offset: i64, d: &mut Diagnostics) -> serde_json::Value {
    match &node.value {
        Value::Scalar { text, .. } if text.contains("${") => {
            if text.contains("${PORT_OFFSET}")
                && let Ok(v) = eval_sum(text, offset)
            {
                return serde_json::Value::from(v);
            }
            d.warning_help(
                "legacy-shell",
                node.span,
                format!("`{text}` refers to a variable the orchestrator does not expand; kept as written"),
                "write the value the agent should see",
            );
            serde_json::Value::String(text.clone())
        }
        Value::Seq(items) => {
            serde_json::Value::Array(items.iter().map(|i| config_json(i, offset, d)).collect())
        }
        Value::Map(entries) => serde_json::Value::Object(
            entries
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().unwrap_or("~").to_string(),
                        config_json(v, offset, d),
                    )
                })
                .collect(),
        ),
        _ => de::to_json(node),
    }
}

fn agent(
    a: &LegacyAgent,
    group: &str,
    defaults: &AgentDefaults,
    opts: &LegacyOptions,
    index: &mut SourceIndex,
    d: &mut Diagnostics,
) -> Option<Agent> {
    if !valid_name(&a.name) {
        d.error(
            "name",
            a.key_span,
            format!("`{}` is not a valid agent name", a.name),
        );
    }
    let mut m = MapReader::new(a.node, format!("agent `{}`", a.name), d)?;
    m.allow("name");
    let script_path = m
        .take("script_path")
        .and_then(|n| de::name(n, "`script_path`", d));
    let bind = m.take("host").and_then(|n| {
        let s = de::string(n, "`host`", d)?;
        match s.parse::<std::net::IpAddr>() {
            Ok(ip) if ip.is_unspecified() => None,
            Ok(_) => Some(s),
            Err(_) => {
                d.error(
                    "address",
                    n.span,
                    format!("`host: {s}` is not an IP address"),
                );
                None
            }
        }
    });
    let mut ports = Vec::new();
    let mut port_sources = Vec::new();
    let port_node = m.take("port");
    let port = port_node.and_then(|n| port_expr(n, "`port`", opts.port_offset, d));
    if let (Some(p), Some(n)) = (port, port_node) {
        let pm = PortMapping {
            host_ip: bind,
            host_port: Some(p),
            container_port: p,
            protocol: Protocol::Tcp,
        };
        port_sources.push((pm.clone(), n.span));
        ports.push(pm);
    }
    let health_port = m
        .take("health_check_port")
        .and_then(|n| port_expr(n, "`health_check_port`", opts.port_offset, d));
    let probe = match (health_port, port) {
        (Some(hp), _) => Probe::Http {
            port: hp,
            path: "/health".into(),
        },
        (None, Some(p)) => Probe::Tcp { port: p },
        (None, None) => Probe::None,
    };
    let required = m
        .take("required")
        .and_then(|n| de::boolean(n, "`required`", d))
        .unwrap_or(true);
    let depends_on = m
        .take("dependencies")
        .and_then(|n| de::strings(n, "`dependencies`", d))
        .unwrap_or_default();
    let config = m
        .take("config")
        .map(|n| config_json(n, opts.port_offset, d));
    for (k, _) in m.rest() {
        let key = k.as_str().unwrap_or("~");
        d.warning_help(
            "legacy-unmapped",
            k.span,
            format!("`{key}` of agent `{}` has no meaning here; ignored", a.name),
            "move it into the agent's `config` if the agent reads it",
        );
    }
    index.agents.push(AgentSource {
        name: a.name.clone(),
        group: group.to_string(),
        span: a.key_span,
        depends_on: depends_on.clone(),
        ports: port_sources,
        replicas: (1, a.key_span),
    });
    Some(Agent {
        name: a.name.clone(),
        group: group.to_string(),
        image: render_image(&opts.image_template, &a.name, group, script_path.as_deref()),
        command: None,
        env: defaults.env.clone(),
        ports,
        volumes: Vec::new(),
        depends_on: depends_on.into_iter().map(|(s, _)| s).collect(),
        gpu: None,
        restart: defaults.restart.clone(),
        health: HealthCheck {
            probe,
            ..defaults.health.clone()
        },
        resources: defaults.resources.clone(),
        security: defaults.security.clone(),
        replicas: 1,
        required,
        labels: defaults.labels.clone(),
        stop_timeout: defaults.stop_timeout,
        config,
        script_path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_sums() {
        assert_eq!(eval_sum("${PORT_OFFSET}+7200", 0), Ok(7200));
        assert_eq!(eval_sum("${PORT_OFFSET}+7200", 100), Ok(7300));
        assert_eq!(eval_sum("26002", 5), Ok(26002));
        assert_eq!(eval_sum(" 7000 + ${PORT_OFFSET} - 1 ", 2), Ok(7001));
        assert!(
            eval_sum("${HOME}+1", 0)
                .unwrap_err()
                .contains("unknown variable")
        );
        assert!(eval_sum("${PORT_OFFSET}+", 0).is_err());
        assert!(eval_sum("+5", 0).is_err());
        assert!(eval_sum("5 5", 0).is_err());
        assert!(eval_sum("99999999999999999999", 0).is_err());
    }

    #[test]
    fn image_templates() {
        assert!(check_image_template("orchestrator-agent:latest").is_ok());
        assert!(check_image_template("reg/{agent_lower}:{group}").is_ok());
        assert!(check_image_template("x/{nope}").is_err());
        assert!(check_image_template("x/{agent").is_err());
        assert_eq!(
            render_image(
                "r/{script_stem}:1",
                "A",
                "g",
                Some("pc2_code/agents/Tutor_Agent.py")
            ),
            "r/tutor_agent:1"
        );
    }
}
