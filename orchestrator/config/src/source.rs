//! Where the parts of a decoded config were written, for the semantic
//! checks that run after decoding (references, cycles, port collisions).

use orch_core::model::PortMapping;

use crate::yaml::Span;

#[derive(Debug, Clone, Default)]
pub struct SourceIndex {
    pub groups: Vec<GroupSource>,
    pub agents: Vec<AgentSource>,
    pub secrets: Vec<SecretSource>,
}

/// An entry of the host's `secrets:` map.
#[derive(Debug, Clone)]
pub struct SecretSource {
    pub name: String,
    pub key: Span,
    /// The file's path as written.
    pub path: Span,
}

#[derive(Debug, Clone)]
pub struct GroupSource {
    pub name: String,
    pub span: Span,
    pub depends_on: Vec<(String, Span)>,
}

#[derive(Debug, Clone)]
pub struct AgentSource {
    pub name: String,
    pub group: String,
    pub span: Span,
    pub depends_on: Vec<(String, Span)>,
    pub ports: Vec<(PortMapping, Span)>,
    pub replicas: (u32, Span),
    /// `autoscale.max` and where it is written, for an autoscaled agent.
    pub autoscale_max: Option<(u32, Span)>,
    /// The secrets the agent names.
    pub secrets: Vec<(String, Span)>,
}

impl SourceIndex {
    pub fn agent(&self, name: &str) -> Option<&AgentSource> {
        self.agents.iter().find(|a| a.name == name)
    }

    pub fn group(&self, name: &str) -> Option<&GroupSource> {
        self.groups.iter().find(|g| g.name == name)
    }
}

/// Names of hosts, groups and agents become container names, labels and
/// DNS aliases: keep them to what all three accept.
pub fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && s.len() <= 63
}
