//! Groups of a legacy file: docker groups wherever they were written, and
//! a place for every agent that no docker group lists.

use std::collections::BTreeMap;

use crate::diag::Diagnostics;
use crate::source::valid_name;
use crate::yaml::{Node, Span, Value};

use super::find::{self, has_agents, is_agent};
use super::unmapped;

/// A docker group as the importer builds it.
#[derive(Debug, Clone)]
pub struct DockerGroup {
    pub name: String,
    pub span: Span,
    pub description: Option<String>,
    pub members: Vec<String>,
}

/// An agent to be grouped: its name, its section, where it is defined.
#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    pub section: String,
    pub span: Span,
}

/// Where a docker group definition was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Under the top-level `docker_groups`, where it belongs.
    TopLevel,
    /// Under a `docker_groups` written inside `agent_groups`.
    Nested,
    /// Directly under `agent_groups`, shaped as a docker group.
    InAgentGroups,
}

struct Def<'a> {
    key: &'a Node,
    node: &'a Node,
    place: Place,
}

/// Whether an `agent_groups` entry is a docker group written there: a
/// mapping with an `agents` list and no agent in it.
pub fn is_docker_group_shape(node: &Node) -> bool {
    !is_agent(node)
        && !has_agents(node)
        && matches!(node.get("agents"), Some(n) if n.as_seq().is_some())
}

/// Whether an `agent_groups` entry is a whole `docker_groups` mapping
/// written there by an indentation slip.
pub fn is_nested_docker_groups(key: &Node, node: &Node) -> bool {
    key.as_str() == Some("docker_groups")
        && node.as_map().is_some()
        && !is_agent(node)
        && !has_agents(node)
}

/// Every docker group definition of the file, in file order, with a
/// warning for each one written inside `agent_groups`.
fn definitions<'a>(root: &'a Node, d: &mut Diagnostics) -> Vec<Def<'a>> {
    let mut defs = Vec::new();
    if let Some((key, dg)) = root.entry("docker_groups") {
        match &dg.value {
            Value::Map(m) => {
                for (gk, gv) in m {
                    // The launcher would have started an agent written here; it is imported as one.
                    if !is_agent(gv) {
                        defs.push(Def {
                            key: gk,
                            node: gv,
                            place: Place::TopLevel,
                        });
                    }
                }
            }
            Value::Null => {}
            _ => d.warning_help(
                "legacy-unmapped",
                key.span,
                format!(
                    "`docker_groups` must map group names to `description` and `agents`, found {}; ignored",
                    dg.kind()
                ),
                "write `docker_groups: {NAME: {description: ..., agents: [...]}}`",
            ),
        }
    }
    if let Some(groups) = root.get("agent_groups").and_then(Node::as_map) {
        for (gk, gv) in groups {
            if is_nested_docker_groups(gk, gv) {
                d.warning_help(
                    "legacy-misplaced",
                    gk.span,
                    "`docker_groups` is written inside `agent_groups`; its groups are read as docker groups",
                    "move `docker_groups` to the top level (no indentation)",
                );
                for (k, v) in find::entries(gv)
                    .iter()
                    .filter_map(|e| Some((e.key?, e.value)))
                {
                    defs.push(Def {
                        key: k,
                        node: v,
                        place: Place::Nested,
                    });
                }
            } else if is_docker_group_shape(gv) {
                let name = gk.as_str().unwrap_or("~");
                d.warning_help(
                    "legacy-misplaced",
                    gk.span,
                    format!(
                        "`{name}` under `agent_groups` is a docker group (`description`, `agents`), not an agent group; read as docker group `{name}`"
                    ),
                    "move it under the top-level `docker_groups`",
                );
                defs.push(Def {
                    key: gk,
                    node: gv,
                    place: Place::InAgentGroups,
                });
            }
        }
    }
    defs.sort_by_key(|def| def.key.span.start);
    defs
}

/// Reads the docker groups and assigns the agents they list. Returns the
/// groups (merged by name, in file order) and where each agent went.
pub fn docker_groups(
    root: &Node,
    agents: &[Member],
    d: &mut Diagnostics,
) -> (Vec<DockerGroup>, BTreeMap<String, String>) {
    let mut groups: Vec<DockerGroup> = Vec::new();
    let mut placed: BTreeMap<String, String> = BTreeMap::new();
    for def in definitions(root, d) {
        let gname = def.key.as_str().unwrap_or("~").to_string();
        let path = match def.place {
            Place::TopLevel => format!("docker_groups.{gname}"),
            Place::Nested => format!("agent_groups.docker_groups.{gname}"),
            Place::InAgentGroups => format!("agent_groups.{gname}"),
        };
        let Some(entries) = def.node.as_map() else {
            d.warning_help(
                "legacy-unmapped",
                def.key.span,
                format!(
                    "docker group `{gname}` must be a mapping with `description` and `agents`, found {}; ignored",
                    def.node.kind()
                ),
                "write `NAME: {description: ..., agents: [...]}`",
            );
            continue;
        };
        if !valid_name(&gname) {
            d.error(
                "name",
                def.key.span,
                format!("`{gname}` is not a valid group name"),
            );
        }
        let index = match groups.iter().position(|g| g.name == gname) {
            Some(i) => {
                d.warning_help(
                    "legacy-duplicate-group",
                    def.key.span,
                    format!(
                        "docker group `{gname}` is defined again (first on line {}); its agents join the first definition",
                        groups[i].span.start.line
                    ),
                    "keep one definition of each docker group",
                );
                i
            }
            None => {
                groups.push(DockerGroup {
                    name: gname.clone(),
                    span: def.key.span,
                    description: None,
                    members: Vec::new(),
                });
                groups.len() - 1
            }
        };
        for (k, v) in entries {
            match k.as_str() {
                Some("description") => match v.as_str() {
                    Some(text) => {
                        groups[index]
                            .description
                            .get_or_insert_with(|| text.to_string());
                    }
                    None if v.is_null() => {}
                    None => unmapped(k, &format!("{path}.description"), d),
                },
                Some("agents") => {
                    let items: &[Node] = match &v.value {
                        Value::Seq(items) => items,
                        Value::Null => &[],
                        _ => {
                            unmapped(k, &format!("{path}.agents"), d);
                            continue;
                        }
                    };
                    for item in items {
                        let Some(aname) = item.as_str() else {
                            unmapped(item, &format!("an entry of {path}.agents"), d);
                            continue;
                        };
                        if !agents.iter().any(|a| a.name == aname) {
                            d.warning_help(
                                "legacy-unknown-agent",
                                item.span,
                                format!("docker group `{gname}` lists `{aname}`, which no agent definition declares; skipped"),
                                "define the agent or remove it from the group",
                            );
                            continue;
                        }
                        if let Some(first) = placed.get(aname) {
                            d.warning(
                                "legacy-regrouped",
                                item.span,
                                format!(
                                    "`{aname}` is already in docker group `{first}`; it stays there"
                                ),
                            );
                            continue;
                        }
                        placed.insert(aname.to_string(), gname.clone());
                        groups[index].members.push(aname.to_string());
                    }
                }
                _ => unmapped(k, &format!("{path}.{}", k.as_str().unwrap_or("~")), d),
            }
        }
    }
    (groups, placed)
}

/// Gives every agent that no docker group lists a group: the docker group
/// holding the most agents of its section (the first in file order on a
/// tie), else a group named after its section. With no docker group in
/// the file at all, sections are the groups, and nothing is said.
pub fn place_ungrouped(
    groups: &mut Vec<DockerGroup>,
    placed: &mut BTreeMap<String, String>,
    agents: &[Member],
    d: &mut Diagnostics,
) {
    let no_docker_groups = groups.is_empty();
    // Counts are taken before any placement, so the order of agents does not matter.
    let section_of: BTreeMap<&str, &str> = agents
        .iter()
        .map(|a| (a.name.as_str(), a.section.as_str()))
        .collect();
    let mut majority: BTreeMap<&str, Option<usize>> = BTreeMap::new();
    for a in agents {
        majority.entry(a.section.as_str()).or_insert_with(|| {
            let mut best: Option<(usize, usize)> = None; // (count, group index)
            for (gi, g) in groups.iter().enumerate() {
                let n = g
                    .members
                    .iter()
                    .filter(|m| section_of.get(m.as_str()) == Some(&a.section.as_str()))
                    .count();
                if n > 0 && best.is_none_or(|(bn, _)| n > bn) {
                    best = Some((n, gi));
                }
            }
            best.map(|(_, gi)| gi)
        });
    }
    for a in agents {
        if placed.contains_key(&a.name) {
            continue;
        }
        let target = majority.get(a.section.as_str()).copied().flatten();
        let gi = match target {
            Some(gi) => {
                d.warning_help(
                    "legacy-ungrouped",
                    a.span,
                    format!(
                        "agent `{}` is in no docker group; placed in `{}` with the other agents of `{}`",
                        a.name, groups[gi].name, a.section
                    ),
                    format!("list `{}` under a docker group to choose its group", a.name),
                );
                gi
            }
            None => {
                if !no_docker_groups {
                    d.warning(
                        "legacy-ungrouped",
                        a.span,
                        format!(
                            "agent `{}` is in no docker group; placed in a group `{}` of its own",
                            a.name, a.section
                        ),
                    );
                }
                match groups.iter().position(|g| g.name == a.section) {
                    Some(gi) => gi,
                    None => {
                        if !valid_name(&a.section) {
                            d.error(
                                "name",
                                a.span,
                                format!(
                                    "agent `{}` would be grouped by its section `{}`, which is not a valid group name",
                                    a.name, a.section
                                ),
                            );
                        }
                        groups.push(DockerGroup {
                            name: a.section.clone(),
                            span: a.span,
                            description: None,
                            members: Vec::new(),
                        });
                        groups.len() - 1
                    }
                }
            }
        };
        groups[gi].members.push(a.name.clone());
        placed.insert(a.name.clone(), groups[gi].name.clone());
    }
}
