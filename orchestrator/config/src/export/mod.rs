//! Exports of a host config to other tools: a Docker Compose file for one
//! host ([`compose`]) and Kubernetes manifests for a fleet that outgrew
//! federation ([`k8s`]). Both are pure functions from a validated
//! `HostConfig` to text; nothing here reads files or talks to a tool.
//!
//! This module owns what the two exports share: which groups an export
//! covers (a group filter plus the groups they depend on), the names agents
//! get in the target (DNS labels, stable and collision-free), the agent
//! contract's environment as far as it is known before a start, and a YAML
//! writer whose output means the same to YAML 1.1 readers (docker-compose
//! 1.x, kubectl's and most Python tools' PyYAML) as to YAML 1.2 ones.
//!
//! What no export can carry, whatever the format: the supervisor's restart
//! backoff and crash-loop detection, dependents held while a dependency is
//! down (both formats order only the first start), GPU slice planning (a
//! config names no GPU UUIDs, so a share is a request for "one GPU" and the
//! target picks it), and the per-replica number of a scaled agent.

pub mod compose;
pub mod k8s;

use std::collections::{BTreeMap, BTreeSet};

use orch_core::gpu::{GpuRequest, SliceRequest};
use orch_core::graph::group_graph;
use orch_core::model::{Agent, Group, HostConfig, Probe};
use orch_core::units::Duration;
use serde_yaml::Value;

/// Why an export could not be made. Each says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    #[error("host `{host}` has no group `{group}`; its groups are: {}", known.join(", "))]
    UnknownGroup {
        host: String,
        group: String,
        known: Vec<String>,
    },
    #[error(
        "agents `{first}` and `{second}` both export as `{name}`; rename one of them so that their lowercase names differ"
    )]
    NameCollision {
        first: String,
        second: String,
        name: String,
    },
    #[error("`{name}` cannot be a {what}: {reason}")]
    InvalidName {
        what: &'static str,
        name: String,
        reason: String,
    },
    #[error("agent `{agent}` cannot be exported: {reason}")]
    Unsupported { agent: String, reason: String },
    #[error(
        "the probe command is empty; give the program that checks a URL, e.g. `/reference-agent --probe`"
    )]
    EmptyProbeCommand,
}

/// The groups an export covers, in declaration order: all of them when
/// `wanted` is empty, else the named ones and every group they depend on,
/// transitively (group `depends_on` and the groups of the agents their
/// agents depend on), so that no exported dependency names a missing
/// service.
pub fn select_groups<'a>(
    config: &'a HostConfig,
    wanted: &[String],
) -> Result<Vec<&'a Group>, ExportError> {
    if wanted.is_empty() {
        return Ok(config.groups.iter().collect());
    }
    for name in wanted {
        if config.group(name).is_none() {
            return Err(ExportError::UnknownGroup {
                host: config.host.name.clone(),
                group: name.clone(),
                known: config.groups.iter().map(|g| g.name.clone()).collect(),
            });
        }
    }
    let roots: Vec<&str> = wanted.iter().map(String::as_str).collect();
    let closure = group_graph(config).closure(&roots);
    Ok(config
        .groups
        .iter()
        .filter(|g| closure.contains(&g.name))
        .collect())
}

/// The longest DNS label (RFC 1123), and so the longest name either
/// target accepts for a service.
const MAX_LABEL: usize = 63;

/// A DNS-1035 label for `name`: lowercase ASCII letters, digits and `-`,
/// starting with a letter, at most 63 characters. CamelCase becomes
/// kebab-case (`STTService` -> `stt-service`) so names stay readable; a
/// name that would start with a digit gets an `agent-` prefix; a name too
/// long is cut and ends in a hash of the whole name, so that two long
/// names with one prefix stay apart.
///
/// Both targets accept such a label: a Compose service name, a Kubernetes
/// Deployment, Service or Namespace name (Services need DNS-1035, the
/// strictest of these).
pub fn dns_label(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev = i.checked_sub(1).map(|p| chars[p]);
            let next = chars.get(i + 1).copied();
            // A word starts at an uppercase letter after a lowercase one or
            // a digit (`faceRecognition`), and at the last capital of an
            // acronym followed by lowercase (`STTService` -> `stt-service`).
            let starts_word = match prev {
                Some(p) if p.is_ascii_lowercase() || p.is_ascii_digit() => true,
                Some(p) if p.is_ascii_uppercase() => next.is_some_and(|n| n.is_ascii_lowercase()),
                _ => false,
            };
            if starts_word {
                out.push('-');
            }
            out.push(c.to_ascii_lowercase());
        } else if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else {
            out.push('-');
        }
    }
    let mut label = String::with_capacity(out.len());
    for c in out.chars() {
        if c == '-' && (label.is_empty() || label.ends_with('-')) {
            continue;
        }
        label.push(c);
    }
    while label.ends_with('-') {
        label.pop();
    }
    if label.is_empty() {
        label.push_str("agent");
    }
    if !label.starts_with(|c: char| c.is_ascii_lowercase()) {
        label.insert_str(0, "agent-");
    }
    if label.len() > MAX_LABEL {
        label = with_hash_suffix(&label, name);
    }
    label
}

/// `label` cut so that `-<hash of original>` fits in a DNS label.
fn with_hash_suffix(label: &str, original: &str) -> String {
    let suffix = format!("-{:08x}", fnv1a(original));
    let keep = MAX_LABEL - suffix.len();
    let mut cut: String = label.chars().take(keep).collect();
    while cut.ends_with('-') {
        cut.pop();
    }
    cut.push_str(&suffix);
    cut
}

/// FNV-1a, 32 bits: a hash that is the same on every platform and in every
/// release, which `std`'s hashers do not promise.
fn fnv1a(text: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in text.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The exported name of every agent of a host.
///
/// Stable: an agent's name depends only on its own name, unless two agents
/// map to one label; then each of them gets a hash of its own name as a
/// suffix, whatever their order in the file. Computed over all agents of
/// the host, not the exported ones, so that a group filter never renames.
#[derive(Debug, Clone)]
pub struct Names {
    by_agent: BTreeMap<String, String>,
}

impl Names {
    pub fn for_config(config: &HostConfig) -> Result<Names, ExportError> {
        let mut wanted: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for agent in config.agents() {
            wanted
                .entry(dns_label(&agent.name))
                .or_default()
                .push(&agent.name);
        }
        let mut by_agent = BTreeMap::new();
        for (label, agents) in &wanted {
            for agent in agents {
                let name = if agents.len() == 1 {
                    label.clone()
                } else {
                    with_hash_suffix(label, agent)
                };
                by_agent.insert((*agent).to_string(), name);
            }
        }
        let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
        for (agent, name) in &by_agent {
            if let Some(first) = seen.insert(name, agent) {
                return Err(ExportError::NameCollision {
                    first: first.to_string(),
                    second: agent.clone(),
                    name: name.clone(),
                });
            }
        }
        Ok(Names { by_agent })
    }

    /// The exported name of `agent`. Every agent of the config the names
    /// were made for has one.
    pub fn of<'a>(&'a self, agent: &'a str) -> &'a str {
        // INVARIANT: `for_config` named every agent, and callers only ask
        // for agents of that config; the fallback is never used.
        self.by_agent
            .get(agent)
            .map(String::as_str)
            .unwrap_or(agent)
    }
}

/// Checks a name given as an option (a namespace, a project) against what
/// the target accepts: lowercase letters, digits and `-` (plus `extra`),
/// starting with a letter or digit, at most 63 characters.
fn check_name(what: &'static str, name: &str, extra: &[char]) -> Result<(), ExportError> {
    let invalid = |reason: &str| ExportError::InvalidName {
        what,
        name: name.to_string(),
        reason: reason.to_string(),
    };
    if name.is_empty() || name.len() > MAX_LABEL {
        return Err(invalid("it must have 1 to 63 characters"));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        return Err(invalid("it must start with a lowercase letter or a digit"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || extra.contains(&c))
    {
        return Err(invalid(
            "it may hold only lowercase letters, digits and `-`",
        ));
    }
    if name.ends_with('-') {
        return Err(invalid("it must not end with `-`"));
    }
    Ok(())
}

/// The GPU request as the agent sees it in `ORCH_GPU_SLICE` before any
/// slice is assigned: the form of `Slice::describe` without the device
/// UUIDs a config cannot know (`mig:1g.10gb`, `mps:memory=4g,compute=20%`,
/// `exclusive`, `time-slice`).
pub fn describe_request(kind: &SliceRequest) -> String {
    match kind {
        SliceRequest::Mig { profile } => format!("mig:{profile}"),
        SliceRequest::Mps { memory, compute } => format!("mps:memory={memory},compute={compute}"),
        SliceRequest::Exclusive => "exclusive".into(),
        SliceRequest::TimeSlice => "time-slice".into(),
    }
}

/// The whole fallback chain, first choice first: `mig:1g.10gb -> mps:...`.
pub fn describe_chain(request: &GpuRequest) -> String {
    request
        .chain()
        .map(|r| describe_request(&r.kind))
        .collect::<Vec<_>>()
        .join(" -> ")
}

pub use orch_core::container::listen_ports;

/// The agent contract's environment as known before a start (no slice is
/// given yet: `ORCH_GPU_SLICE` describes the request). `ORCH_REPLICA` is
/// set only for a single replica, since copies of one definition share it.
pub fn contract_env(config: &HostConfig, agent: &Agent) -> BTreeMap<String, String> {
    let slice = match &agent.gpu {
        Some(gpu) => describe_request(&gpu.kind),
        None => "none".into(),
    };
    let replica = (agent.replicas == 1).then_some(0);
    orch_core::container::contract_env(config, agent, replica, slice)
}

/// The URL the in-container probe checks for an HTTP or TCP health check.
pub fn probe_url(probe: &Probe) -> Option<String> {
    match probe {
        Probe::Http { port, path } => {
            let slash = if path.starts_with('/') { "" } else { "/" };
            Some(format!("http://127.0.0.1:{port}{slash}{path}"))
        }
        Probe::Tcp { port } => Some(format!("tcp://127.0.0.1:{port}")),
        Probe::None | Probe::Exec { .. } => None,
    }
}

/// Whole seconds, rounded up, at least 1: Kubernetes probes and grace
/// periods count in seconds, and rounding down could make a timeout 0.
pub fn ceil_secs(d: Duration) -> u64 {
    let nanos = d.as_nanos();
    let secs = nanos.div_ceil(1_000_000_000);
    u64::try_from(secs).unwrap_or(u64::MAX).max(1)
}

/// Agents of `groups`, in order, each with its group.
fn agents_of<'a>(groups: &[&'a Group]) -> impl Iterator<Item = &'a Agent> {
    groups.iter().flat_map(|g| g.agents.iter())
}

/// Names of the exported groups, for metadata.
fn group_names(groups: &[&Group]) -> Vec<String> {
    groups.iter().map(|g| g.name.clone()).collect()
}

/// Agents a given agent waits for: its own `depends_on`, and, when none of
/// those is in its own group (it is where its group starts), every agent
/// of the groups its group depends on. Agents later in a group wait through
/// the ones they depend on, so the group's order holds with shorter lists.
fn start_after<'a>(config: &'a HostConfig, agent: &'a Agent) -> Vec<&'a str> {
    // Another host's agents are not in this host's export.
    let mut deps: Vec<&str> = agent
        .depends_on
        .iter()
        .filter_map(|d| orch_core::model::Dep::local(d))
        .collect();
    let group = config.group(&agent.group);
    let in_own_group = |dep: &str| group.is_some_and(|g| g.agents.iter().any(|a| a.name == dep));
    let starts_group = !agent.depends_on.iter().any(|d| in_own_group(d));
    if starts_group && let Some(group) = group {
        for dep_group in &group.depends_on {
            if let Some(dg) = config.group(dep_group) {
                deps.extend(dg.agents.iter().map(|a| a.name.as_str()));
            }
        }
    }
    let mut seen = BTreeSet::new();
    deps.retain(|d| *d != agent.name && seen.insert(*d));
    deps
}

// ---------------------------------------------------------------------------
// YAML output

/// Writes `docs` as a YAML stream, one document each, after `header`
/// comment lines.
///
/// Not `serde_yaml::to_string`: it writes by YAML 1.2 rules, so `no`,
/// `on` or `22:22` come out as plain scalars, which YAML 1.1 readers take
/// for a boolean or a base-60 number. Here a string is plain only when it
/// cannot be read as anything else under either version, and double-quoted
/// otherwise.
fn write_yaml(header: &[String], docs: &[Value]) -> String {
    let mut out = String::new();
    for line in header {
        out.push_str("# ");
        out.push_str(line);
        out.push('\n');
    }
    for doc in docs {
        if docs.len() > 1 {
            out.push_str("---\n");
        }
        match doc {
            Value::Mapping(m) if !m.is_empty() => write_mapping(&mut out, m, 0, false),
            Value::Sequence(s) if !s.is_empty() => write_sequence(&mut out, s, 0),
            other => {
                out.push_str(&scalar(other));
                out.push('\n');
            }
        }
    }
    out
}

fn indent(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

/// Block mapping entries at column `at`; the first starts on the current
/// line when `inline_first` (after a sequence's `- `).
fn write_mapping(out: &mut String, m: &serde_yaml::Mapping, at: usize, inline_first: bool) {
    for (i, (k, v)) in m.iter().enumerate() {
        if i > 0 || !inline_first {
            indent(out, at);
        }
        out.push_str(&scalar(k));
        out.push(':');
        match v {
            Value::Mapping(inner) if !inner.is_empty() => {
                out.push('\n');
                write_mapping(out, inner, at + 2, false);
            }
            Value::Sequence(items) if !items.is_empty() => {
                out.push('\n');
                write_sequence(out, items, at + 2);
            }
            other => {
                out.push(' ');
                out.push_str(&scalar(other));
                out.push('\n');
            }
        }
    }
}

fn write_sequence(out: &mut String, items: &[Value], at: usize) {
    for item in items {
        indent(out, at);
        match item {
            Value::Mapping(m) if !m.is_empty() => {
                out.push_str("- ");
                write_mapping(out, m, at + 2, true);
            }
            Value::Sequence(inner) if !inner.is_empty() => {
                out.push_str("-\n");
                write_sequence(out, inner, at + 2);
            }
            other => {
                out.push_str("- ");
                out.push_str(&scalar(other));
                out.push('\n');
            }
        }
    }
}

/// One scalar (or an empty collection) in flow form.
fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|_| n.is_f64()) {
                if !f.is_finite() {
                    // Never produced by the exports (limits are validated
                    // finite); written as text rather than as invalid YAML.
                    return quote(&f.to_string());
                }
                // `{:?}` keeps a decimal point (`1.0`), so the number reads
                // back as a float in both YAML versions.
                format!("{f:?}")
            } else {
                n.to_string()
            }
        }
        Value::String(s) => string(s),
        Value::Sequence(s) if s.is_empty() => "[]".into(),
        Value::Mapping(m) if m.is_empty() => "{}".into(),
        Value::Sequence(_) | Value::Mapping(_) => {
            // Only empty collections reach here; a non-empty one is written
            // in block form by the callers.
            "null".into()
        }
        Value::Tagged(t) => scalar(&t.value),
    }
}

/// Words YAML 1.1 reads as booleans or null.
const YAML11_WORDS: &[&str] = &[
    "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true", "True", "TRUE", "false",
    "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF", "null", "Null", "NULL",
];

/// A string plain when that is unambiguous, double-quoted otherwise.
fn string(s: &str) -> String {
    let plain = s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '/' || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-'))
        && !YAML11_WORDS.contains(&s);
    if plain { s.to_string() } else { quote(s) }
}

fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            // Control characters, and the characters YAML 1.1 counts as
            // line breaks (NEL, LS, PS) or that a reader may drop (BOM).
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}') => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Small constructors for building documents, as in `convert`.
fn s(v: impl ToString) -> Value {
    Value::String(v.to_string())
}

fn put(m: &mut serde_yaml::Mapping, k: &str, v: Value) {
    m.insert(s(k), v);
}

fn strings<I, T>(items: I) -> Value
where
    I: IntoIterator<Item = T>,
    T: ToString,
{
    Value::Sequence(items.into_iter().map(s).collect())
}

fn string_map<'a>(m: impl IntoIterator<Item = (&'a String, &'a String)>) -> Value {
    let mut out = serde_yaml::Mapping::new();
    for (k, v) in m {
        put(&mut out, k, s(v));
    }
    Value::Mapping(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        let cases = [
            ("FaceRecognitionAgent", "face-recognition-agent"),
            ("STTService", "stt-service"),
            ("NLUAgent", "nlu-agent"),
            ("VRAMOptimizerAgent", "vram-optimizer-agent"),
            ("GoTToTAgent", "go-t-to-t-agent"),
            ("IntentionValidatorAgent", "intention-validator-agent"),
            ("service_registry", "service-registry"),
            ("a..b--c__", "a-b-c"),
            ("Agent2Go", "agent2-go"),
            ("7up", "agent-7up"),
            ("already-fine", "already-fine"),
            ("mainpc", "mainpc"),
        ];
        for (name, want) in cases {
            assert_eq!(dns_label(name), want, "{name}");
        }
        let long = "A".repeat(40) + &"b".repeat(40);
        let label = dns_label(&long);
        assert_eq!(label.len(), 63, "{label}");
        assert!(
            label.ends_with(&format!("-{:08x}", fnv1a(&long))),
            "{label}"
        );
        assert_ne!(dns_label(&(long.clone() + "x")), label);
    }

    #[test]
    fn names_that_collide_get_hash_suffixes_in_any_order() {
        let yaml = |order: &str| {
            format!("version: 1\nhost: {{name: h}}\ngroups:\n  g:\n    agents:\n{order}")
        };
        let a = "      FooBar: {image: x}\n";
        let b = "      foo_bar: {image: x}\n";
        let c = "      Other: {image: x}\n";
        let load = |text: String| {
            crate::load_str("t.yaml", &text, &crate::LoadOptions::default())
                .unwrap()
                .config
        };
        let one = Names::for_config(&load(yaml(&format!("{a}{b}{c}")))).unwrap();
        let two = Names::for_config(&load(yaml(&format!("{c}{b}{a}")))).unwrap();
        for agent in ["FooBar", "foo_bar", "Other"] {
            assert_eq!(one.of(agent), two.of(agent), "{agent}");
        }
        assert_eq!(one.of("Other"), "other");
        assert_eq!(one.of("FooBar"), format!("foo-bar-{:08x}", fnv1a("FooBar")));
        assert_ne!(one.of("FooBar"), one.of("foo_bar"));
    }

    #[test]
    fn strings_are_plain_only_when_unambiguous() {
        let cases = [
            ("orchestrator-agent", "orchestrator-agent"),
            ("/reference-agent", "/reference-agent"),
            ("io.orchestrator.host", "io.orchestrator.host"),
            ("no", "\"no\""),
            ("On", "\"On\""),
            ("y", "\"y\""),
            ("22:22", "\"22:22\""),
            ("7200", "\"7200\""),
            ("0.85", "\"0.85\""),
            ("--probe", "\"--probe\""),
            ("orchestrator-agent:latest", "\"orchestrator-agent:latest\""),
            ("", "\"\""),
            ("a \"b\"\\", "\"a \\\"b\\\"\\\\\""),
            ("x\ny\u{85}", "\"x\\ny\\u0085\""),
        ];
        for (text, want) in cases {
            assert_eq!(string(text), want, "{text:?}");
        }
    }

    #[test]
    fn written_yaml_reads_back_the_same() {
        let doc: Value = serde_yaml::from_str(
            r#"
services:
  a:
    environment: {X: "no", Y: "22:22", Z: "{\"k\": [1, 2]}", E: ""}
    cpus: 0.8
    whole: 1.0
    count: 3
    flag: true
    nothing: null
    empty_list: []
    empty_map: {}
    test: ["CMD", "/reference-agent", "--probe", "http://127.0.0.1:8200/health"]
    nested:
      - {driver: nvidia, count: 1, capabilities: [gpu]}
      - [1, [2, 3]]
      - plain
"#,
        )
        .unwrap();
        let text = write_yaml(&["a comment".into()], &[doc.clone(), doc.clone()]);
        assert!(text.starts_with("# a comment\n---\n"), "{text}");
        let back: Vec<Value> = text
            .split("---\n")
            .skip(1)
            .map(|d| serde_yaml::from_str(d).unwrap())
            .collect();
        assert_eq!(back, [doc.clone(), doc], "{text}");
        assert!(text.contains("    cpus: 0.8\n"), "{text}");
        assert!(text.contains("    whole: 1.0\n"), "{text}");
    }

    #[test]
    fn ceil_secs_never_rounds_to_zero() {
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::ZERO), 1);
        assert_eq!(ceil_secs(Duration::from_millis(2500)), 3);
        assert_eq!(ceil_secs(Duration::from_secs(60)), 60);
    }
}
