//! Legacy documents built from a stream of bytes, for the property test
//! (`tests/legacy_properties.rs`) and the fuzz target (`fuzz/`, which
//! includes this file). Every shape is drawn: top-level sections as lists
//! (flow with stray spaces, or block) or maps, `agent_groups` with agent
//! groups, docker-group-shaped entries and a nested `docker_groups`,
//! top-level `docker_groups`, non-agent sections, commented-out entries,
//! repeated keys, agents defined twice, colliding ports, unknown and
//! cyclic dependencies.
//!
//! The generator keeps a model of what it wrote and applies the legacy
//! launcher's rule to that model (a repeated key keeping its last value),
//! so the expected agents come from the model, not from the YAML reader
//! under test.

use orch_config::{Format, LoadOptions, Severity, load_str};

/// Reads choices from the bytes; zeros once they run out.
struct Choices<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Choices<'_> {
    fn pick(&mut self, n: usize) -> usize {
        let b = self.bytes.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        usize::from(b) % n.max(1)
    }

    fn one_in(&mut self, n: usize) -> bool {
        self.pick(n) == 0
    }

    fn from<'s>(&mut self, pool: &[&'s str]) -> &'s str {
        pool[self.pick(pool.len())]
    }
}

const AGENTS: &[&str] = &[
    "ServiceRegistry",
    "SystemDigitalTwin",
    "ModelManagerAgent",
    "EmotionEngine",
    "ToneDetector",
    "NLUAgent",
    "TTSService",
    "MemoryClient",
];
const SECTIONS: &[&str] = &[
    "core_services",
    "gpu_services",
    "emotion_system",
    "pc2_services",
    "agent_groups",
    "docker_groups",
    "environment",
    "volumes",
];
const GROUPS: &[&str] = &[
    "foundation",
    "memory",
    "speech",
    "infra_core",
    "docker_groups",
];

struct Agent {
    name: String,
    port: Option<u16>,
    deps: Vec<String>,
    flow: bool,
}

enum Item {
    Agent(Agent),
    /// A mapping without `script_path`: never started.
    NotAgent(String),
    Comment,
}

enum Group {
    Agents(Vec<(String, Agent)>),
    Docker(Vec<String>),
    Nested(Vec<(String, Vec<String>)>),
    Empty,
}

enum Section {
    List(Vec<Item>),
    Map(Vec<(String, Agent)>),
    AgentGroups(Vec<(String, Group)>),
    DockerGroups(Vec<(String, Vec<String>)>),
    Settings,
}

/// A generated document and what the launcher's rule finds in it.
pub struct Built {
    pub text: String,
    /// Agent names the launcher found, sorted, repeats kept.
    pub launcher_agents: Vec<String>,
    /// Whether the importer should take it as legacy: an agent, or a
    /// section only legacy files have.
    pub legacy: bool,
}

/// An agent; its dependencies mostly name agents defined before it
/// (`defined`), sometimes any name, so unknown names and cycles occur too.
fn agent(c: &mut Choices, name: &str, so_far: &mut Gen) -> Agent {
    so_far.next_port += 1;
    let port = match c.pick(8) {
        0 => None,
        1 => Some(7000), // may collide
        _ => Some(so_far.next_port),
    };
    let mut deps = Vec::new();
    for _ in 0..[0, 0, 1, 2][c.pick(4)] {
        let dep = match c.pick(10) {
            0 => "GhostAgent".to_string(),
            1 => c.from(AGENTS).to_string(),
            _ if !so_far.defined.is_empty() => so_far.defined[c.pick(so_far.defined.len())].clone(),
            _ => continue,
        };
        if dep != name && !deps.contains(&dep) {
            deps.push(dep);
        }
    }
    so_far.defined.push(name.to_string());
    Agent {
        name: name.to_string(),
        port,
        deps,
        flow: c.one_in(2),
    }
}

/// What the model so far holds, for the next agent.
struct Gen {
    next_port: u16,
    defined: Vec<String>,
}

/// Between one and `most` agent names.
fn names(c: &mut Choices, most: usize) -> Vec<String> {
    let n = 1 + c.pick(most);
    (0..n).map(|_| c.from(AGENTS).to_string()).collect()
}

fn model(c: &mut Choices) -> Vec<(String, Section)> {
    let mut so_far = Gen {
        next_port: 7000,
        defined: Vec::new(),
    };
    let mut doc = Vec::new();
    for _ in 0..1 + c.pick(5) {
        let key = c.from(SECTIONS).to_string();
        let section = match key.as_str() {
            "agent_groups" => {
                let mut groups = Vec::new();
                for _ in 0..1 + c.pick(3) {
                    let g = c.from(GROUPS).to_string();
                    let body = match (g.as_str(), c.pick(5)) {
                        ("docker_groups", _) => Group::Nested(
                            (0..1 + c.pick(2))
                                .map(|_| (c.from(&GROUPS[..4]).to_string(), names(c, 2)))
                                .collect(),
                        ),
                        (_, 0) => Group::Docker(names(c, 3)),
                        (_, 1) => Group::Empty,
                        _ => Group::Agents(
                            (0..1 + c.pick(3))
                                .map(|_| {
                                    let n = c.from(AGENTS);
                                    (n.to_string(), agent(c, n, &mut so_far))
                                })
                                .collect(),
                        ),
                    };
                    groups.push((g, body));
                }
                Section::AgentGroups(groups)
            }
            "docker_groups" => Section::DockerGroups(
                (0..1 + c.pick(3))
                    .map(|_| (c.from(&GROUPS[..4]).to_string(), names(c, 3)))
                    .collect(),
            ),
            "environment" | "volumes" => Section::Settings,
            _ if c.one_in(3) => Section::Map(
                (0..1 + c.pick(3))
                    .map(|_| {
                        let n = c.from(AGENTS);
                        (n.to_string(), agent(c, n, &mut so_far))
                    })
                    .collect(),
            ),
            _ => Section::List(
                (0..1 + c.pick(4))
                    .map(|_| match c.pick(6) {
                        0 => Item::NotAgent(c.from(AGENTS).to_string()),
                        1 => Item::Comment,
                        _ => {
                            let n = c.from(AGENTS);
                            Item::Agent(agent(c, n, &mut so_far))
                        }
                    })
                    .collect(),
            ),
        };
        doc.push((key, section));
    }
    doc
}

/// A mapping as the legacy loader built it: a repeated key keeps its last
/// value, in the place of its first.
fn last_wins<T>(entries: &[(String, T)]) -> Vec<&(String, T)> {
    let mut out: Vec<&(String, T)> = Vec::new();
    for e in entries {
        match out.iter().position(|x| x.0 == e.0) {
            Some(i) => out[i] = e,
            None => out.push(e),
        }
    }
    out
}

fn launcher_agents(doc: &[(String, Section)]) -> Vec<String> {
    let mut found = Vec::new();
    for (_, section) in last_wins(doc) {
        match section {
            Section::List(items) => found.extend(items.iter().filter_map(|i| match i {
                Item::Agent(a) => Some(a.name.clone()),
                _ => None,
            })),
            Section::Map(agents) => found.extend(last_wins(agents).iter().map(|e| e.0.clone())),
            Section::AgentGroups(groups) => {
                for (_, g) in last_wins(groups) {
                    if let Group::Agents(agents) = g {
                        found.extend(last_wins(agents).iter().map(|e| e.0.clone()));
                    }
                }
            }
            Section::DockerGroups(_) | Section::Settings => {}
        }
    }
    found.sort();
    found
}

fn port_text(c: &mut Choices, p: u16) -> String {
    if c.one_in(2) {
        format!("\"${{PORT_OFFSET}}+{p}\"")
    } else {
        p.to_string()
    }
}

fn flow_agent(c: &mut Choices, a: &Agent, with_name: bool) -> String {
    let pad = |c: &mut Choices| if c.one_in(3) { "  " } else { "" };
    let mut fields = Vec::new();
    if with_name {
        fields.push(format!("name: {}{}", a.name, pad(c)));
    }
    fields.push(format!(
        "script_path: agents/{}.py{}",
        a.name.to_lowercase(),
        pad(c)
    ));
    if let Some(p) = a.port {
        fields.push(format!("port: {}", port_text(c, p)));
    }
    if !a.deps.is_empty() || c.one_in(2) {
        fields.push(format!("dependencies: [{}]", a.deps.join(", ")));
    }
    let sep = if c.one_in(2) { " , " } else { ", " };
    format!("{{ {} }}", fields.join(sep))
}

fn block_agent(c: &mut Choices, a: &Agent, indent: &str, with_name: bool) -> String {
    let mut lines = Vec::new();
    if with_name {
        lines.push(format!("name: {}", a.name));
    }
    lines.push(format!("script_path: agents/{}.py", a.name.to_lowercase()));
    if let Some(p) = a.port {
        lines.push(format!("port: {}", port_text(c, p)));
    }
    if !a.deps.is_empty() {
        lines.push("dependencies:".to_string());
        for d in &a.deps {
            lines.push(format!("- {d}"));
        }
    }
    if c.one_in(4) {
        lines.push("required: false".to_string());
    }
    lines
        .iter()
        .map(|l| format!("{indent}{l}\n"))
        .collect::<String>()
}

fn docker_group(out: &mut String, indent: &str, name: &str, members: &[String]) {
    out.push_str(&format!("{indent}{name}:\n"));
    out.push_str(&format!("{indent}  description: Agents of {name}\n"));
    out.push_str(&format!("{indent}  agents:\n"));
    for m in members {
        out.push_str(&format!("{indent}    - {m}\n"));
    }
}

fn render(c: &mut Choices, doc: &[(String, Section)]) -> String {
    let mut out = String::new();
    for (key, section) in doc {
        match section {
            Section::Settings if key == "environment" => {
                out.push_str("environment:\n  LOG_LEVEL: INFO\n");
            }
            Section::Settings => out.push_str(&format!("{key}:\n  - /srv/data:/data\n")),
            Section::List(items) => {
                out.push_str(&format!("{key}:\n"));
                for item in items {
                    match item {
                        Item::Agent(a) if a.flow => {
                            out.push_str(&format!("  - {}\n", flow_agent(c, a, true)));
                        }
                        Item::Agent(a) => {
                            let body = block_agent(c, a, "    ", true);
                            out.push_str("  - ");
                            out.push_str(body.trim_start());
                        }
                        Item::NotAgent(n) => {
                            out.push_str(&format!("  - {{ name: {n}, port: 5999 }}\n"));
                        }
                        Item::Comment => {
                            out.push_str(
                                "  # - { name: Retired, script_path: agents/retired.py }\n",
                            );
                        }
                    }
                }
            }
            Section::Map(agents) => {
                out.push_str(&format!("{key}:\n"));
                map_agents(c, &mut out, "  ", agents);
            }
            Section::AgentGroups(groups) => {
                out.push_str("agent_groups:\n");
                for (g, body) in groups {
                    match body {
                        Group::Agents(agents) => {
                            out.push_str(&format!("  {g}:\n"));
                            map_agents(c, &mut out, "    ", agents);
                        }
                        Group::Docker(members) => docker_group(&mut out, "  ", g, members),
                        Group::Nested(defs) => {
                            out.push_str("  docker_groups:\n");
                            for (name, members) in defs {
                                docker_group(&mut out, "    ", name, members);
                                if c.one_in(3) {
                                    out.push_str("  # retired_group:\n  #   agents: [Old]\n");
                                }
                            }
                        }
                        Group::Empty => {
                            out.push_str(&format!("  {g}:\n    # everything moved elsewhere\n"));
                        }
                    }
                }
            }
            Section::DockerGroups(defs) => {
                out.push_str("docker_groups:\n");
                for (name, members) in defs {
                    docker_group(&mut out, "  ", name, members);
                }
            }
        }
    }
    out
}

fn map_agents(c: &mut Choices, out: &mut String, indent: &str, agents: &[(String, Agent)]) {
    for (name, a) in agents {
        if a.flow {
            out.push_str(&format!("{indent}{name}: {}\n", flow_agent(c, a, false)));
        } else {
            out.push_str(&format!("{indent}{name}:\n"));
            out.push_str(&block_agent(c, a, &format!("{indent}  "), false));
        }
    }
}

/// Builds a legacy document from the bytes.
pub fn build(bytes: &[u8]) -> Built {
    let mut c = Choices { bytes, at: 0 };
    let doc = model(&mut c);
    let text = render(&mut c, &doc);
    let launcher_agents = launcher_agents(&doc);
    let legacy = !launcher_agents.is_empty()
        || doc
            .iter()
            .any(|(k, _)| ["agent_groups", "docker_groups", "pc2_services"].contains(&k.as_str()));
    Built {
        text,
        launcher_agents,
        legacy,
    }
}

/// Faults of a legacy file's own that may refuse it.
const REAL_FAULTS: &[&str] = &[
    "duplicate-agent",
    "unknown-dependency",
    "cycle",
    "port-collision",
];

/// Loads the document built from `bytes` and checks the importer against
/// the launcher's rule: the same agents when it loads, and otherwise only
/// real faults, an agent the launcher read twice among them.
pub fn check(bytes: &[u8]) {
    let built = build(bytes);
    let loaded = load_str("gen.yaml", &built.text, &LoadOptions::default());
    if !built.legacy {
        // Read as version 1, which it is not: refused, whatever for.
        assert!(loaded.is_err(), "{}", built.text);
        return;
    }
    let opts = LoadOptions {
        host_name: Some("gen".into()),
        ..LoadOptions::default()
    };
    let mut twice: Vec<&String> = built
        .launcher_agents
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| &w[0])
        .collect();
    twice.dedup();
    match load_str("gen.yaml", &built.text, &opts) {
        Ok(l) => {
            assert_eq!(l.format, Format::Legacy, "{}", built.text);
            let mut imported: Vec<String> = l.config.agents().map(|a| a.name.clone()).collect();
            imported.sort();
            assert_eq!(imported, built.launcher_agents, "{}", built.text);
            let v1 = orch_config::convert::to_v1_yaml(&l.config);
            let again = load_str("again.yaml", &v1, &LoadOptions::default())
                .unwrap_or_else(|e| panic!("{}\n{v1}\n{:?}", built.text, e.diagnostics()));
            assert_eq!(again.config, l.config, "{}", built.text);
        }
        Err(e) => {
            let errors: Vec<_> = e
                .diagnostics()
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .collect();
            assert!(!errors.is_empty(), "{}", built.text);
            for d in &errors {
                assert!(
                    REAL_FAULTS.contains(&d.code),
                    "refused for `{}` ({}) at {}:{}:\n{}",
                    d.code,
                    d.message,
                    d.line,
                    d.column,
                    built.text
                );
            }
            for name in twice {
                assert!(
                    errors
                        .iter()
                        .any(|d| d.code == "duplicate-agent"
                            && d.message.contains(&format!("`{name}`"))),
                    "`{name}` read twice, not reported:\n{}",
                    built.text
                );
            }
        }
    }
}
