//! Import of the legacy startup_config format, in every shape it took.
//!
//! Which agents: exactly those the legacy launcher started (see `find`):
//! every mapping with a `script_path` that is an entry of a value of
//! `agent_groups`, or of any top-level value (a list of entries named by
//! `name`, or a mapping of name to entry). A file is legacy when it has no
//! `version` and has `agent_groups`, `pc2_services`, `docker_groups` or
//! such an agent. The shapes seen over the format's life:
//! 1. top-level sections as lists (`core_services:`, `pc2_services:`, ...),
//!    block or flow style, next to non-agent sections;
//! 2. `agent_groups` and no `docker_groups`;
//! 3. `agent_groups` plus `docker_groups`;
//! 4. `docker_groups` written inside `agent_groups`, followed by more
//!    docker-group-shaped entries (`description`, an `agents` list) there;
//! 5. repeated keys.
//!
//! Mapping rules:
//! - The file is read as the launcher's loader read it: a repeated key keeps
//!   its last value (in the place of the first), with a warning naming both
//!   lines and any agent that only the hidden value defined.
//! - Groups are the docker groups, wherever they were written (a warning
//!   for each one inside `agent_groups`); `docker_groups.<g>` becomes group
//!   `g` with its description, and its `agents` list assigns agents to it
//!   (the first group listing an agent keeps it). A docker group defined
//!   twice is merged into the first.
//! - An agent in no docker group is placed in the docker group holding the
//!   most agents of its section (agent group or top-level section; first
//!   such group in file order on a tie), else in a group named after its
//!   section, with a warning. In a file with no docker group at all, the
//!   sections are the groups, silently.
//! - Faults that refuse the file: a name the launcher read twice (two
//!   entries it started both, in one section or two; not a repeated key,
//!   where only the last was read), an unknown dependency, a dependency
//!   cycle, a host port published twice, and values that cannot be mapped
//!   (a port that is no port, an invalid name).
//! - `port` becomes a published port `P:P` (bound to `host` when that is a
//!   specific address; `localhost` is 127.0.0.1, a host name is a warning);
//!   `health_check_port` becomes an HTTP health check on `/health` (a TCP
//!   check on `port` when there is none).
//! - `"${PORT_OFFSET}+7200"` is evaluated (`PORT_OFFSET` given by the
//!   caller, 0 by default); so are such values inside `config`.
//! - `dependencies` become `depends_on`; `required: false` (or YAML 1.1
//!   `no`/`off`) marks the agent optional; `config` (or `params`, its older
//!   name) is kept as the agent's free-form config; `script_path` is kept
//!   and the image comes from a template. A map entry is named by its key
//!   (a differing `name` is a warning).
//! - `environment`, `resource_limits` (`memory_mb`, `cpu_percent` as a
//!   share of one CPU) and `health_checks` (`interval_seconds`,
//!   `timeout_seconds`, `retries`, `start_period_seconds`), under
//!   `global_settings` or at the top level, become defaults.
//! - Everything else is reported as a warning at its line: an entry of an
//!   agent section without `script_path` (the launcher never started it),
//!   an empty agent group, an unknown key.

use std::collections::BTreeMap;

use orch_core::model::{
    Agent, AgentDefaults, ControlSettings, Group, HealthCheck, HostConfig, HostInfo,
    MetricsSettings, OverLimit, PortMapping, Probe, Protocol, RuntimeSettings,
};
use orch_core::units::{ByteSize, Duration};

mod find;
mod groups;

use crate::decode::{self as de, MapReader};
use crate::diag::Diagnostics;
use crate::source::{AgentSource, GroupSource, SourceIndex, valid_name};
use crate::yaml::{Document, Node, Span, Value};

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

/// True when the document is a legacy config: a mapping with no `version`
/// that has a legacy section or an agent by the launcher's rule.
pub fn is_legacy(root: &Node) -> bool {
    root.as_map().is_some()
        && root.get("version").is_none()
        && (LEGACY_SECTIONS.iter().any(|k| root.get(k).is_some())
            || !find::launcher_agents(root).is_empty())
}

const LEGACY_SECTIONS: &[&str] = &["agent_groups", "pc2_services", "docker_groups"];

/// An agent the launcher found, with its checked name.
struct LegacyAgent<'a> {
    name: String,
    /// Where the name is written (the key, or the `name` value).
    name_span: Span,
    found: find::Found<'a>,
}

/// Imports a legacy document: every agent the launcher found, grouped, with
/// everything that cannot be mapped reported at its line.
pub fn import(
    doc: &Document,
    opts: &LegacyOptions,
    d: &mut Diagnostics,
) -> Option<(HostConfig, SourceIndex)> {
    let root = &doc.root;
    let Some(top) = root.as_map() else {
        d.error(
            "not-a-config",
            root.span,
            format!("a startup config is a mapping, found {}", root.kind()),
        );
        return None;
    };

    let mut defaults = AgentDefaults::default();
    for (k, v) in top {
        let key = k.as_str().unwrap_or("~");
        match key {
            "agent_groups" => report_agent_groups(k, v, d),
            "docker_groups" => {} // read by `groups`
            "global_settings" if v.as_map().is_some() => {
                global_settings(&without_agents(v), &mut defaults, d)
            }
            "environment" | "resource_limits" | "health_checks" if v.as_map().is_some() => {
                let settings = without_agents(v);
                match key {
                    "environment" => environment(&settings, key, &mut defaults, d),
                    "resource_limits" => resource_limits(&settings, key, &mut defaults, d),
                    _ => health_checks(&settings, key, &mut defaults, d),
                }
            }
            _ if find::has_agents(v) => report_non_agents(key, v, d),
            _ => unmapped(k, key, d),
        }
    }
    let template_is_fixed = !opts.image_template.contains('{');
    if template_is_fixed {
        defaults.image = Some(opts.image_template.clone());
    }

    // Agents, by the launcher's rule; a name read twice is a fault.
    let mut agents: Vec<LegacyAgent> = Vec::new();
    for f in find::launcher_agents(root) {
        let named = match (f.keyed, f.node.get("name")) {
            (true, _) => {
                if f.name.is_none() {
                    d.error("name", f.at, "an agent's key must be its name");
                }
                f.name.clone()
            }
            (false, Some(nv)) => de::name(nv, "the agent's `name`", d).map(|n| (n, nv.span)),
            (false, None) => {
                d.error_help(
                    "missing",
                    f.at,
                    format!("an agent entry of `{}` has no `name`", f.section),
                    "add `name: AgentName`",
                );
                None
            }
        };
        let Some((name, name_span)) = named else {
            continue;
        };
        if f.keyed
            && let Some(nv) = f.node.get("name")
            && let Some(other) = nv.as_str()
            && other != name
        {
            d.warning_help(
                "legacy-name",
                nv.span,
                format!(
                    "agent `{name}` also says `name: {other}`; it is imported as `{name}`, its key"
                ),
                "remove the `name` or make it match the key",
            );
        }
        if let Some(first) = agents.iter().find(|a| a.name == name) {
            d.error_help(
                "duplicate-agent",
                name_span,
                format!(
                    "agent `{name}` is defined twice: on line {} (in `{}`) and here (in `{}`); the legacy launcher read both",
                    first.name_span.start.line, first.found.section, f.section
                ),
                "agent names are unique on a host; remove or rename one of them",
            );
            continue;
        }
        agents.push(LegacyAgent {
            name,
            name_span,
            found: f,
        });
    }
    duplicate_keys(doc, &agents, d);

    // Groups: docker groups wherever written, then a place for the rest.
    let members: Vec<groups::Member> = agents
        .iter()
        .map(|a| groups::Member {
            name: a.name.clone(),
            section: a.found.section.clone(),
            span: a.name_span,
        })
        .collect();
    let (mut docker_groups, mut placed) = groups::docker_groups(root, &members, d);
    groups::place_ungrouped(&mut docker_groups, &mut placed, &members, d);

    let mut index = SourceIndex::default();
    let mut groups = Vec::new();
    for g in &docker_groups {
        let mut members = Vec::new();
        for name in &g.members {
            if let Some(a) = agents.iter().find(|a| &a.name == name)
                && let Some(agent) = agent(a, &g.name, &defaults, opts, &mut index, d)
            {
                members.push(agent);
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
            rollout: defaults.rollout,
            min_healthy: defaults.min_healthy,
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
            secrets: Default::default(),
        },
        index,
    ))
}

/// A warning for each repeated key, naming both lines and any agent the
/// replaced value held that is therefore not imported.
fn duplicate_keys(doc: &Document, agents: &[LegacyAgent], d: &mut Diagnostics) {
    for dup in &doc.duplicates {
        let mut lost: Vec<String> = find::agents_in_replaced(&dup.path, &dup.key, &dup.replaced)
            .into_iter()
            .filter(|n| !agents.iter().any(|a| &a.name == n))
            .collect();
        lost.dedup();
        let mut message = format!(
            "duplicate key `{}` (lines {} and {}): the last one is used, as the legacy launcher read it",
            dup.key, dup.previous.start.line, dup.again.start.line
        );
        if !lost.is_empty() {
            message.push_str(&format!(
                "; not imported, as only the earlier one defines them: {}",
                lost.join(", ")
            ));
        }
        d.warning_help(
            "legacy-duplicate-key",
            dup.again,
            message,
            "keep one of the two, or merge them",
        );
    }
}

/// Warnings for what `agent_groups` holds besides agent groups and agents.
fn report_agent_groups(key: &Node, node: &Node, d: &mut Diagnostics) {
    let Some(entries) = node.as_map() else {
        match node.value {
            Value::Null => {}
            _ if find::has_agents(node) => report_non_agents("agent_groups", node, d),
            _ => unmapped(key, "agent_groups", d),
        }
        return;
    };
    for (gk, gv) in entries {
        let g = gk.as_str().unwrap_or("~");
        if find::is_agent(gv) {
            d.warning_help(
                "legacy-misplaced",
                gk.span,
                format!(
                    "agent `{g}` is written directly under `agent_groups`, not in an agent group; imported from section `agent_groups`"
                ),
                format!("move `{g}` into one of the agent groups"),
            );
        } else if groups::is_nested_docker_groups(gk, gv) || groups::is_docker_group_shape(gv) {
            // Read, and warned about, as docker groups.
        } else if find::entries(gv).is_empty() && !matches!(gv.value, Value::Scalar { .. }) {
            d.warning(
                "legacy-empty",
                gk.span,
                format!("agent group `{g}` defines no agents"),
            );
        } else if matches!(gv.value, Value::Scalar { .. }) {
            unmapped(gk, &format!("agent_groups.{g}"), d);
        } else {
            report_non_agents(&format!("agent_groups.{g}"), gv, d);
        }
    }
}

/// Warnings for the entries of an agent section that are not agents.
fn report_non_agents(path: &str, section: &Node, d: &mut Diagnostics) {
    for e in find::entries(section) {
        if find::is_agent(e.value) {
            continue;
        }
        let name = match e.key {
            Some(k) => k.as_str().map(str::to_string),
            None => e
                .value
                .get("name")
                .and_then(Node::as_str)
                .map(str::to_string),
        };
        if e.value.as_map().is_some() {
            d.warning_help(
                "legacy-not-agent",
                e.span(),
                format!(
                    "{} in `{path}` has no `script_path`, so the legacy launcher never started it; ignored",
                    name.map_or("an entry".to_string(), |n| format!("`{n}`"))
                ),
                "add a `script_path` if it is an agent, or remove it",
            );
        } else {
            let what = match name {
                Some(n) => format!("{path}.{n}"),
                None => format!("an entry of {path}"),
            };
            unmapped_at(e.span(), &what, d);
        }
    }
}

/// A copy of a settings section without the agents the launcher found in
/// it, so that settings readers do not report them as unknown keys.
fn without_agents(node: &Node) -> Node {
    match &node.value {
        Value::Map(m) if m.iter().any(|(_, v)| find::is_agent(v)) => Node {
            value: Value::Map(
                m.iter()
                    .filter(|(_, v)| !find::is_agent(v))
                    .cloned()
                    .collect(),
            ),
            span: node.span,
        },
        _ => node.clone(),
    }
}

fn unmapped(key: &Node, path: &str, d: &mut Diagnostics) {
    unmapped_at(key.span, path, d);
}

fn unmapped_at(span: Span, path: &str, d: &mut Diagnostics) {
    d.warning_help(
        "legacy-unmapped",
        span,
        format!("`{path}` has no meaning here; ignored"),
        "the orchestrator has no equivalent; remove it or express it in the agent's own config",
    );
}

fn global_settings(node: &Node, defaults: &mut AgentDefaults, d: &mut Diagnostics) {
    let Some(mut m) = MapReader::new(node, "`global_settings`", d) else {
        return;
    };
    if let Some(n) = m.take("environment") {
        environment(n, "global_settings.environment", defaults, d);
    }
    if let Some(n) = m.take("resource_limits") {
        resource_limits(n, "global_settings.resource_limits", defaults, d);
    }
    if let Some(n) = m.take("health_checks") {
        health_checks(n, "global_settings.health_checks", defaults, d);
    }
    for (k, _) in m.rest() {
        unmapped(
            k,
            &format!("global_settings.{}", k.as_str().unwrap_or("~")),
            d,
        );
    }
}

/// Environment for every agent. Written both in `global_settings` and at
/// the top level, it is merged, the later value of a name winning.
fn environment(n: &Node, path: &str, defaults: &mut AgentDefaults, d: &mut Diagnostics) {
    let Some(env) = de::string_map(n, &format!("`{path}`"), d) else {
        return;
    };
    crate::v1::reserved_env(n, d);
    for (k, v) in &env {
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
    defaults.env.extend(env);
}

fn resource_limits(n: &Node, path: &str, defaults: &mut AgentDefaults, d: &mut Diagnostics) {
    let Some(mut r) = MapReader::new(n, format!("`{path}`"), d) else {
        return;
    };
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
        unmapped(k, &format!("{path}.{}", k.as_str().unwrap_or("~")), d);
    }
}

fn health_checks(n: &Node, path: &str, defaults: &mut AgentDefaults, d: &mut Diagnostics) {
    let Some(mut h) = MapReader::new(n, format!("`{path}`"), d) else {
        return;
    };
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
    if let Some(v) = h.take("start_period_seconds")
        && let Some(s) = de::uint(v, "`start_period_seconds`", 0, 86_400, d)
    {
        defaults.health.start_period = Duration::from_secs(s);
    }
    for (k, _) in h.rest() {
        unmapped(k, &format!("{path}.{}", k.as_str().unwrap_or("~")), d);
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
            a.name_span,
            format!("`{}` is not a valid agent name", a.name),
        );
    }
    let mut m = MapReader::new(a.found.node, format!("agent `{}`", a.name), d)?;
    m.allow("name");
    let script_path = m
        .take("script_path")
        .and_then(|n| de::name(n, "`script_path`", d));
    let bind = m.take("host").and_then(|n| {
        let s = de::string(n, "`host`", d)?;
        match s.parse::<std::net::IpAddr>() {
            Ok(ip) if ip.is_unspecified() => None,
            Ok(_) => Some(s),
            Err(_) if s == "localhost" => Some("127.0.0.1".to_string()),
            Err(_) => {
                // The launcher passed it to the agent, which bound where it
                // resolved; a container port has no such choice.
                d.warning_help(
                    "legacy-interpreted",
                    n.span,
                    format!(
                        "`host: {s}` is not an IP address; the port is published on all addresses"
                    ),
                    "write an IP address to publish on one address only",
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
            host_port_end: None,
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
        .and_then(|n| yaml11_bool(n, "`required`", d))
        .unwrap_or(true);
    let depends_on = m
        .take("dependencies")
        .and_then(|n| de::strings(n, "`dependencies`", d))
        .unwrap_or_default();
    // Older files called the agent's own settings `params`.
    let config = match (m.take("config"), m.take_entry("params")) {
        (Some(c), params) => {
            if let Some((pk, _)) = params {
                d.warning_help(
                    "legacy-unmapped",
                    pk.span,
                    format!(
                        "`params` of agent `{}` is ignored: its `config` is used",
                        a.name
                    ),
                    "merge `params` into `config`",
                );
            }
            Some(config_json(c, opts.port_offset, d))
        }
        (None, Some((_, p))) => Some(config_json(p, opts.port_offset, d)),
        (None, None) => None,
    };
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
        span: a.name_span,
        depends_on: depends_on.clone(),
        ports: port_sources,
        replicas: (1, a.name_span),
        autoscale_max: None,
        secrets: Vec::new(),
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
        secrets: Vec::new(),
        autoscale: None,
        gpu_over_limit: OverLimit::Warn,
    })
}

/// A boolean as the legacy launcher read one: YAML 1.1 words (`yes`/`no`,
/// `on`/`off`, `true`/`false`) as booleans, and anything else with Python's
/// truthiness (`bool(value)`), as the launcher tested it: a number is true
/// unless zero, a string (a quoted word, a `${VAR:-default}` it never
/// expanded) true unless empty, null false. Whatever is not a plain
/// boolean is taken that way with a warning, never refused.
fn yaml11_bool(node: &Node, what: &str, d: &mut Diagnostics) -> Option<bool> {
    let (taken, why) = match &node.value {
        Value::Scalar {
            text,
            quoted: false,
        } => match text.as_str() {
            "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "true" | "True" | "TRUE" => {
                return Some(true);
            }
            "no" | "No" | "NO" | "off" | "Off" | "OFF" | "false" | "False" | "FALSE" => {
                return Some(false);
            }
            t => match t.parse::<f64>() {
                Ok(n) => (n != 0.0, format!("the number `{t}`")),
                Err(_) => (!t.is_empty(), format!("`{t}`")),
            },
        },
        Value::Scalar { text, quoted: true } => {
            (!text.is_empty(), format!("the string \"{text}\""))
        }
        Value::Null => (false, "empty".to_string()),
        Value::Seq(items) => (!items.is_empty(), "a list".to_string()),
        Value::Map(entries) => (!entries.is_empty(), "a mapping".to_string()),
    };
    d.warning_help(
        "legacy-interpreted",
        node.span,
        format!(
            "{what} is {why}, not true or false; read as {taken}, as the legacy launcher did (Python truthiness)"
        ),
        format!("write `{what}: {taken}`", what = what.trim_matches('`')),
    );
    Some(taken)
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
