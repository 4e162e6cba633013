//! The difference between two host configs, field by field, as data.
//!
//! It owns one question: what changed from `old` to `new`, agent by agent
//! and group by group, and what each agent's change does to its containers
//! ([`Effect`]). It holds old and new values as the model has them and no
//! words: `config diff`, `plan` and the rollout's events render it at the
//! edge.
//!
//! Agents are matched by name (unique on a host), so an agent that moves to
//! another group is one change ([`AgentChange::Group`]), not a removal and
//! an addition. Defaults are already merged into agents, so a changed
//! `defaults:` shows as the change it makes to each agent. Whether a change
//! recreates containers is decided by the config hash
//! ([`crate::container::config_hash`]), the same rule the supervisor
//! applies; a change of the replica count alone recreates nothing.
//!
//! Architecture invariant: an agent that is in both configs and equal in
//! both has no entry, and every field of [`Agent`] is compared (a test
//! changes each one).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::container::config_hash;
use crate::gpu::GpuRequest;
use crate::model::{
    Agent, Autoscale, Group, HealthCheck, HostConfig, OverLimit, PortMapping, Resources,
    RestartPolicy, Rollout, SecretMount, Security, Slo, VolumeMount,
};
use crate::units::Duration;

/// What changed between two configs of one host.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ConfigDiff {
    /// In the new config's group order, then removed groups in the old order.
    pub groups: Vec<GroupDiff>,
    /// In the new config's agent order, then removed agents in the old order.
    pub agents: Vec<AgentDiff>,
}

impl ConfigDiff {
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.agents.is_empty()
    }

    /// The entry of one agent, if it changed.
    pub fn agent(&self, name: &str) -> Option<&AgentDiff> {
        self.agents.iter().find(|a| a.agent() == name)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "diff")]
pub enum GroupDiff {
    Added {
        group: String,
    },
    Removed {
        group: String,
    },
    Changed {
        group: String,
        changes: Vec<GroupChange>,
    },
}

/// One changed setting of a group (its agents are diffed on their own).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "field")]
pub enum GroupChange {
    Description {
        old: Option<String>,
        new: Option<String>,
    },
    DependsOn {
        old: Vec<String>,
        new: Vec<String>,
    },
    Slo {
        old: Option<Slo>,
        new: Option<Slo>,
    },
    Rollout {
        old: Rollout,
        new: Rollout,
    },
    MinHealthy {
        old: Duration,
        new: Duration,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "diff")]
pub enum AgentDiff {
    Added {
        agent: String,
        group: String,
        replicas: u32,
    },
    Removed {
        agent: String,
        group: String,
        replicas: u32,
    },
    Changed {
        agent: String,
        /// The group in the new config.
        group: String,
        changes: Vec<AgentChange>,
        effect: Effect,
    },
}

impl AgentDiff {
    pub fn agent(&self) -> &str {
        match self {
            AgentDiff::Added { agent, .. }
            | AgentDiff::Removed { agent, .. }
            | AgentDiff::Changed { agent, .. } => agent,
        }
    }
}

/// What a changed agent's change does to its containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "effect")]
pub enum Effect {
    /// The config hash changed: every replica is recreated (a rollout),
    /// and a changed count is reached as well.
    Recreate {
        old_replicas: u32,
        new_replicas: u32,
    },
    /// Only the replica count changed: replicas are started or stopped,
    /// none is recreated.
    Scale { old: u32, new: u32 },
    /// Only supervision settings changed (health, restart, dependencies,
    /// autoscale, ...): they apply to the running replicas as they are.
    InPlace,
}

/// One entry of a map (`env`, `labels`): added (`old` none), removed
/// (`new` none) or changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapChange {
    pub key: String,
    pub old: Option<String>,
    pub new: Option<String>,
}

/// One changed field of an agent, with its old and new values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "field")]
pub enum AgentChange {
    /// The agent moved to another group.
    Group {
        old: String,
        new: String,
    },
    Image {
        old: String,
        new: String,
    },
    Command {
        old: Option<Vec<String>>,
        new: Option<Vec<String>>,
    },
    /// Variables by name. Secrets are never here: the model holds only
    /// their names and files ([`AgentChange::Secrets`]).
    Env(Vec<MapChange>),
    Ports {
        old: Vec<PortMapping>,
        new: Vec<PortMapping>,
    },
    Volumes {
        old: Vec<VolumeMount>,
        new: Vec<VolumeMount>,
    },
    DependsOn {
        old: Vec<String>,
        new: Vec<String>,
    },
    Gpu {
        old: Option<GpuRequest>,
        new: Option<GpuRequest>,
    },
    GpuOverLimit {
        old: OverLimit,
        new: OverLimit,
    },
    Restart {
        old: RestartPolicy,
        new: RestartPolicy,
    },
    Health {
        old: HealthCheck,
        new: HealthCheck,
    },
    Resources {
        old: Resources,
        new: Resources,
    },
    Security {
        old: Security,
        new: Security,
    },
    Replicas {
        old: u32,
        new: u32,
    },
    Required {
        old: bool,
        new: bool,
    },
    Labels(Vec<MapChange>),
    StopTimeout {
        old: Duration,
        new: Duration,
    },
    Config {
        old: Option<serde_json::Value>,
        new: Option<serde_json::Value>,
    },
    ScriptPath {
        old: Option<String>,
        new: Option<String>,
    },
    Secrets {
        old: Vec<SecretMount>,
        new: Vec<SecretMount>,
    },
    Autoscale {
        old: Option<Autoscale>,
        new: Option<Autoscale>,
    },
}

/// The difference from `old` to `new`.
pub fn diff(old: &HostConfig, new: &HostConfig) -> ConfigDiff {
    ConfigDiff {
        groups: group_diffs(old, new),
        agents: agent_diffs(old, new),
    }
}

fn group_diffs(old: &HostConfig, new: &HostConfig) -> Vec<GroupDiff> {
    let mut out = Vec::new();
    for g in &new.groups {
        match old.group(&g.name) {
            None => out.push(GroupDiff::Added {
                group: g.name.clone(),
            }),
            Some(o) => {
                let changes = group_changes(o, g);
                if !changes.is_empty() {
                    out.push(GroupDiff::Changed {
                        group: g.name.clone(),
                        changes,
                    });
                }
            }
        }
    }
    for g in &old.groups {
        if new.group(&g.name).is_none() {
            out.push(GroupDiff::Removed {
                group: g.name.clone(),
            });
        }
    }
    out
}

/// Pushes `make(old, new)` when the two differ.
fn field<T: PartialEq + Clone, C>(
    out: &mut Vec<C>,
    old: &T,
    new: &T,
    make: impl FnOnce(T, T) -> C,
) {
    if old != new {
        out.push(make(old.clone(), new.clone()));
    }
}

fn group_changes(old: &Group, new: &Group) -> Vec<GroupChange> {
    let mut out = Vec::new();
    field(&mut out, &old.description, &new.description, |old, new| {
        GroupChange::Description { old, new }
    });
    field(&mut out, &old.depends_on, &new.depends_on, |old, new| {
        GroupChange::DependsOn { old, new }
    });
    field(&mut out, &old.slo, &new.slo, |old, new| GroupChange::Slo {
        old,
        new,
    });
    field(&mut out, &old.rollout, &new.rollout, |old, new| {
        GroupChange::Rollout { old, new }
    });
    field(&mut out, &old.min_healthy, &new.min_healthy, |old, new| {
        GroupChange::MinHealthy { old, new }
    });
    out
}

fn agent_diffs(old: &HostConfig, new: &HostConfig) -> Vec<AgentDiff> {
    let old_agents: BTreeMap<&str, &Agent> = old.agents().map(|a| (a.name.as_str(), a)).collect();
    let new_agents: BTreeMap<&str, &Agent> = new.agents().map(|a| (a.name.as_str(), a)).collect();
    let mut out = Vec::new();
    for a in new.agents() {
        match old_agents.get(a.name.as_str()) {
            None => out.push(AgentDiff::Added {
                agent: a.name.clone(),
                group: a.group.clone(),
                replicas: a.replicas,
            }),
            Some(o) => {
                let changes = agent_changes(o, a);
                if !changes.is_empty() {
                    out.push(AgentDiff::Changed {
                        agent: a.name.clone(),
                        group: a.group.clone(),
                        changes,
                        effect: effect(o, a),
                    });
                }
            }
        }
    }
    for a in old.agents() {
        if !new_agents.contains_key(a.name.as_str()) {
            out.push(AgentDiff::Removed {
                agent: a.name.clone(),
                group: a.group.clone(),
                replicas: a.replicas,
            });
        }
    }
    out
}

/// What a change does to the agent's containers (see [`Effect`]).
pub fn effect(old: &Agent, new: &Agent) -> Effect {
    if config_hash(old) != config_hash(new) {
        Effect::Recreate {
            old_replicas: old.replicas,
            new_replicas: new.replicas,
        }
    } else if old.replicas != new.replicas {
        Effect::Scale {
            old: old.replicas,
            new: new.replicas,
        }
    } else {
        Effect::InPlace
    }
}

fn map_changes(old: &BTreeMap<String, String>, new: &BTreeMap<String, String>) -> Vec<MapChange> {
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .map(|k| MapChange {
            key: k.clone(),
            old: old.get(k).cloned(),
            new: new.get(k).cloned(),
        })
        .collect()
}

fn agent_changes(old: &Agent, new: &Agent) -> Vec<AgentChange> {
    use AgentChange as C;
    // Destructured so that a field added to `Agent` cannot be forgotten here.
    let Agent {
        name: _,
        group,
        image,
        command,
        env,
        ports,
        volumes,
        depends_on,
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
        secrets,
        autoscale,
        gpu_over_limit,
    } = new;
    let mut out = Vec::new();
    field(&mut out, &old.group, group, |old, new| C::Group {
        old,
        new,
    });
    field(&mut out, &old.image, image, |old, new| C::Image {
        old,
        new,
    });
    field(&mut out, &old.command, command, |old, new| C::Command {
        old,
        new,
    });
    let env = map_changes(&old.env, env);
    if !env.is_empty() {
        out.push(C::Env(env));
    }
    field(&mut out, &old.ports, ports, |old, new| C::Ports {
        old,
        new,
    });
    field(&mut out, &old.volumes, volumes, |old, new| C::Volumes {
        old,
        new,
    });
    field(&mut out, &old.depends_on, depends_on, |old, new| {
        C::DependsOn { old, new }
    });
    field(&mut out, &old.gpu, gpu, |old, new| C::Gpu { old, new });
    field(&mut out, &old.gpu_over_limit, gpu_over_limit, |old, new| {
        C::GpuOverLimit { old, new }
    });
    field(&mut out, &old.restart, restart, |old, new| C::Restart {
        old,
        new,
    });
    field(&mut out, &old.health, health, |old, new| C::Health {
        old,
        new,
    });
    field(&mut out, &old.resources, resources, |old, new| {
        C::Resources { old, new }
    });
    field(&mut out, &old.security, security, |old, new| C::Security {
        old,
        new,
    });
    field(&mut out, &old.replicas, replicas, |old, new| C::Replicas {
        old,
        new,
    });
    field(&mut out, &old.required, required, |old, new| C::Required {
        old,
        new,
    });
    let labels = map_changes(&old.labels, labels);
    if !labels.is_empty() {
        out.push(C::Labels(labels));
    }
    field(&mut out, &old.stop_timeout, stop_timeout, |old, new| {
        C::StopTimeout { old, new }
    });
    field(&mut out, &old.config, config, |old, new| C::Config {
        old,
        new,
    });
    field(&mut out, &old.script_path, script_path, |old, new| {
        C::ScriptPath { old, new }
    });
    field(&mut out, &old.secrets, secrets, |old, new| C::Secrets {
        old,
        new,
    });
    field(&mut out, &old.autoscale, autoscale, |old, new| {
        C::Autoscale { old, new }
    });
    out
}

#[cfg(test)]
mod tests;
