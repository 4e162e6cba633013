//! Checks that need the whole config: references between agents and
//! groups, dependency cycles, duplicate names, host port collisions
//! (between agents, and with the daemon's own listeners).
//! Shared by the v1 decoder and the legacy importer.

use std::collections::BTreeMap;

use orch_core::graph::{Graph, group_graph};
use orch_core::model::{Dep, HostConfig, Protocol};

use crate::diag::{Diagnostics, closest};
use crate::source::SourceIndex;

pub fn check(config: &HostConfig, index: &SourceIndex, d: &mut Diagnostics) {
    duplicate_agents(index, d);
    agent_references(config, index, d);
    group_references(config, index, d);
    remote_references(config, index, d);
    cycles(config, index, d);
    port_collisions(index, d);
    listener_collisions(config, index, d);
}

fn duplicate_agents(index: &SourceIndex, d: &mut Diagnostics) {
    let mut first: BTreeMap<&str, &crate::source::AgentSource> = BTreeMap::new();
    for a in &index.agents {
        match first.get(a.name.as_str()) {
            Some(f) => d.error_help(
                "duplicate-agent",
                a.span,
                format!(
                    "agent `{}` is defined twice (first in group `{}` on line {})",
                    a.name, f.group, f.span.start.line
                ),
                "agent names are unique on a host; rename or remove one",
            ),
            None => {
                first.insert(&a.name, a);
            }
        }
    }
}

/// What a `depends_on` entry may name, for the shared reference check.
struct RefKind<'a> {
    what: &'static str,
    names: Vec<&'a str>,
    /// The other kind of name, and where to write it instead.
    other: Vec<&'a str>,
    other_hint: &'static str,
}

fn agent_references(config: &HostConfig, index: &SourceIndex, d: &mut Diagnostics) {
    let kind = RefKind {
        what: "agent",
        names: config.agents().map(|a| a.name.as_str()).collect(),
        other: config.groups.iter().map(|g| g.name.as_str()).collect(),
        other_hint: "is a group; name it in the group's `depends_on` instead",
    };
    for a in &index.agents {
        check_references("agent", &a.name, &a.depends_on, &kind, d);
    }
}

fn group_references(config: &HostConfig, index: &SourceIndex, d: &mut Diagnostics) {
    let kind = RefKind {
        what: "group",
        names: config.groups.iter().map(|g| g.name.as_str()).collect(),
        other: config.agents().map(|a| a.name.as_str()).collect(),
        other_hint: "is an agent; name it in an agent's `depends_on` instead",
    };
    for g in &index.groups {
        check_references("group", &g.name, &g.depends_on, &kind, d);
    }
}

/// Every dependency must name something of `kind`; a name of the other
/// kind gets a pointer to where it belongs, anything else the closest name.
fn check_references(
    owner_kind: &str,
    owner: &str,
    deps: &[(String, crate::yaml::Span)],
    kind: &RefKind,
    d: &mut Diagnostics,
) {
    for (dep, span) in deps {
        // Another host's names are checked by `remote_references`.
        if kind.names.contains(&dep.as_str()) || dep.contains('/') {
            continue;
        }
        let msg = format!(
            "{owner_kind} `{owner}` depends on `{dep}`, which is not {} {} of this host",
            if kind.what == "agent" { "an" } else { "a" },
            kind.what
        );
        if kind.other.contains(&dep.as_str()) {
            d.error_help(
                "unknown-dependency",
                *span,
                msg,
                format!("`{dep}` {}", kind.other_hint),
            );
        } else {
            match closest(dep, kind.names.iter().copied()) {
                Some(c) => d.error_help(
                    "unknown-dependency",
                    *span,
                    msg,
                    format!("did you mean `{c}`?"),
                ),
                None => d.error("unknown-dependency", *span, msg),
            }
        }
    }
}

/// `HOST/AGENT` and `HOST/group:NAME` entries: well formed, and naming a
/// peer of the federation (not this host itself). What exists on that host
/// is its own config's business, checked when it answers.
fn remote_references(config: &HostConfig, index: &SourceIndex, d: &mut Diagnostics) {
    let peers: Vec<&str> = config
        .federation
        .iter()
        .flat_map(|f| f.peers.iter().map(|p| p.name.as_str()))
        .collect();
    let entries = index
        .agents
        .iter()
        .flat_map(|a| a.depends_on.iter())
        .chain(index.groups.iter().flat_map(|g| g.depends_on.iter()));
    for (dep, span) in entries.filter(|(dep, _)| dep.contains('/')) {
        let host = match Dep::parse(dep) {
            Ok(Dep::RemoteAgent { host, .. } | Dep::RemoteGroup { host, .. }) => host,
            Ok(Dep::Local(_)) => continue,
            Err(e) => {
                d.error_help(
                    "unknown-dependency",
                    *span,
                    crate::decode::dep_error(&e),
                    "write HOST/AGENT for an agent of another host, HOST/group:NAME for its group",
                );
                continue;
            }
        };
        if host == config.host.name {
            d.error_help(
                "unknown-dependency",
                *span,
                format!("`{dep}` names this host itself"),
                "name this host's agents and groups without the host",
            );
        } else if !peers.contains(&host) {
            let help = if peers.is_empty() {
                "this host has no `federation` section: add one with that host in `peers`"
                    .to_string()
            } else {
                match closest(host, peers.iter().copied()) {
                    Some(c) => format!("did you mean `{c}`? (peers: {})", peers.join(", ")),
                    None => format!("the peers are: {}", peers.join(", ")),
                }
            };
            d.error_help(
                "unknown-host",
                *span,
                format!("`{dep}` names host `{host}`, which is not a peer of this host"),
                help,
            );
        }
    }
}

fn cycles(config: &HostConfig, index: &SourceIndex, d: &mut Diagnostics) {
    // Only edges to things that exist: unknown names were reported above.
    let mut agents = Graph::new();
    for a in config.agents() {
        agents.add_node(&a.name);
    }
    for a in config.agents() {
        for dep in &a.depends_on {
            if config.agent(dep).is_some() {
                agents.add_edge(&a.name, dep);
            }
        }
    }
    if let Some(cycle) = agents.find_cycle() {
        // Point at the dependency entry that closes the cycle.
        let from = &cycle[cycle.len() - 2];
        let to = &cycle[cycle.len() - 1];
        let span = index
            .agent(from)
            .and_then(|a| a.depends_on.iter().find(|(n, _)| n == to).map(|(_, s)| *s))
            .or_else(|| index.agent(from).map(|a| a.span))
            .unwrap_or_default();
        d.error_help(
            "cycle",
            span,
            format!("dependency cycle: {}", cycle.join(" -> ")),
            "remove one of these dependencies",
        );
        return;
    }
    let mut known = config.clone();
    for g in &mut known.groups {
        g.depends_on.retain(|dep| config.group(dep).is_some());
    }
    let groups = group_graph(&known);
    if let Some(cycle) = groups.find_cycle() {
        let from = &cycle[cycle.len() - 2];
        let to = &cycle[cycle.len() - 1];
        let explicit = index
            .group(from)
            .and_then(|g| g.depends_on.iter().find(|(n, _)| n == to).map(|(_, s)| *s));
        // An implied edge comes from an agent of `from` that depends on an agent of `to`.
        let implied = || {
            config.group(from).and_then(|g| {
                g.agents.iter().find_map(|a| {
                    let src = index.agent(&a.name)?;
                    src.depends_on
                        .iter()
                        .find(|(dep, _)| config.agent(dep).is_some_and(|x| x.group == *to))
                        .map(|(dep, s)| (a.name.clone(), dep.clone(), *s))
                })
            })
        };
        match (explicit, implied()) {
            (Some(span), _) => d.error_help(
                "cycle",
                span,
                format!("group dependency cycle: {}", cycle.join(" -> ")),
                "remove one of these dependencies",
            ),
            (None, Some((agent, dep, span))) => d.error_help(
                "cycle",
                span,
                format!(
                    "group dependency cycle: {} (group `{from}` depends on `{to}` because `{agent}` depends on `{dep}`)",
                    cycle.join(" -> ")
                ),
                "groups start as units, so agents of two groups cannot depend on each other both ways; move an agent or drop a dependency",
            ),
            (None, None) => d.error(
                "cycle",
                index.group(from).map(|g| g.span).unwrap_or_default(),
                format!("group dependency cycle: {}", cycle.join(" -> ")),
            ),
        }
    }
}

/// Host ports: each replica of an agent needs a port of its own (a range,
/// one port per replica), and no two agents publish the same port.
fn port_collisions(index: &SourceIndex, d: &mut Diagnostics) {
    struct Seen<'a> {
        agent: &'a str,
        line: u32,
        ip: Option<&'a str>,
        ports: (u16, u16),
        protocol: Protocol,
    }
    let mut seen: Vec<Seen> = Vec::new();
    for a in &index.agents {
        let (replicas, _) = a.replicas;
        // The most replicas the agent can have, and what set it.
        let (most, by_autoscale) = match a.autoscale_max {
            Some((max, _)) if max > replicas => (max, true),
            _ => (replicas, false),
        };
        for (p, span) in &a.ports {
            let (Some(first), Some(last)) = (p.host_port, p.last_host_port()) else {
                continue;
            };
            let count = p.host_port_count();
            let needs = if by_autoscale {
                format!("can have {most} replicas (`autoscale.max`)")
            } else {
                format!("has {most} replicas")
            };
            if count == 1 && most > 1 {
                d.error_help(
                    "port-collision",
                    *span,
                    format!(
                        "agent `{}` {needs} but publishes the fixed host port {first}",
                        a.name
                    ),
                    format!(
                        "give each replica its own port with a host port range (e.g. `{first}-{}:{}`), or publish only the container port (`{}`)",
                        u32::from(first) + most - 1,
                        p.container_port,
                        p.container_port
                    ),
                );
            } else if count > 1 && count < most {
                d.error_help(
                    "port-collision",
                    *span,
                    format!(
                        "agent `{}` {needs} but its host port range {first}-{last} has only {count} ports",
                        a.name
                    ),
                    format!(
                        "widen the range to `{first}-{}` (replica i publishes {first} + i)",
                        u32::from(first) + most - 1
                    ),
                );
            }
            let ip = p
                .host_ip
                .as_deref()
                .filter(|ip| *ip != "0.0.0.0" && *ip != "::");
            // Two bindings clash when their ports overlap and either is on
            // all addresses or both on the same one.
            if let Some(other) = seen.iter().find(|s| {
                s.protocol == p.protocol
                    && s.ports.0 <= last
                    && first <= s.ports.1
                    && (s.ip.is_none() || ip.is_none() || s.ip == ip)
            }) {
                let port = first.max(other.ports.0);
                d.error_help(
                    "port-collision",
                    *span,
                    format!(
                        "host port {port} is already published by agent `{}` (line {})",
                        other.agent, other.line
                    ),
                    "each host port can be published once; pick another host port",
                );
            }
            seen.push(Seen {
                agent: &a.name,
                line: span.start.line,
                ip,
                ports: (first, last),
                protocol: p.protocol,
            });
        }
    }
}

/// A TCP port the daemon itself listens on: what it is for, as the config
/// says it, the address (`None`: every address) and the port.
struct Listener {
    what: &'static str,
    written: String,
    ip: Option<String>,
    port: u16,
}

/// `HOST:PORT` (an IPv6 host in brackets) as a listener; `None` for text
/// that is not one (its own check reports it).
fn listener(what: &'static str, written: &str, address: &str) -> Option<Listener> {
    let (host, port) = address.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let every = matches!(host, "" | "*" | "0.0.0.0" | "::");
    Some(Listener {
        what,
        written: written.to_string(),
        ip: (!every).then(|| host.to_string()),
        port,
    })
}

fn daemon_listeners(config: &HostConfig) -> Vec<Listener> {
    let mut out = Vec::new();
    if let Some(f) = &config.federation
        && let Some(l) = listener(
            "federation.listen",
            &f.listen,
            f.listen.strip_prefix("tcp://").unwrap_or(&f.listen),
        )
    {
        out.push(l);
    }
    if let Some(m) = &config.metrics.listen
        && let Some(l) = listener("metrics.listen", m, m)
    {
        out.push(l);
    }
    out
}

/// An agent that publishes a host port the daemon listens on would fail to
/// start, or take the daemon's port before it binds it.
fn listener_collisions(config: &HostConfig, index: &SourceIndex, d: &mut Diagnostics) {
    let listeners = daemon_listeners(config);
    for a in &index.agents {
        for (p, span) in &a.ports {
            let (Some(first), Some(last)) = (p.host_port, p.last_host_port()) else {
                continue;
            };
            if p.protocol != Protocol::Tcp {
                continue;
            }
            let ip = p
                .host_ip
                .as_deref()
                .filter(|ip| *ip != "0.0.0.0" && *ip != "::");
            let clash = listeners.iter().find(|l| {
                (first..=last).contains(&l.port)
                    && (l.ip.is_none() || ip.is_none() || l.ip.as_deref() == ip)
            });
            if let Some(l) = clash {
                d.error_help(
                    "port-collision",
                    *span,
                    format!(
                        "host port {} of agent `{}` is where orchestratord listens (`{}: {}`)",
                        l.port, a.name, l.what, l.written
                    ),
                    format!(
                        "pick another host port for the agent, or another port for `{}`",
                        l.what
                    ),
                );
            }
        }
    }
}
