//! What an apply would change, as the API carries it (`config diff`, and
//! `plan`'s [`crate::PlanReport::diff`]): groups and agents field by field,
//! what each agent's change does to its containers, and the replica counts
//! set at run time that the apply keeps or replaces.
//!
//! Values are carried as the text the config file would hold (`a:2`,
//! `8080:80`, `mps memory=4GiB compute=25%`), so a client needs no
//! model of the config to show them. An `env` entry carries its name and
//! whether it was added, removed or changed, never its value: values may
//! be credentials passed in the file, and a read-only caller is not meant
//! to read them. Secrets are named by their files; their values are never
//! in the model at all. [`crate::convert::config_diff`] makes these from
//! the core's `orch_core::diff`; [`crate::text::diff_lines`] words them.

use serde::{Deserialize, Serialize};

/// What applying a config would change on its host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffReport {
    pub host: String,
    /// The config compared against: `running config`, or a file name.
    pub from: String,
    /// The config that would be applied: a file name.
    pub to: String,
    /// In the new config's group order, then removed groups.
    pub groups: Vec<GroupDiff>,
    /// In the new config's agent order, then removed agents.
    pub agents: Vec<AgentDiff>,
    /// Agents whose replica count was set at run time (`scale`, an
    /// autoscaler), with what the apply does to it. Empty when two files
    /// are compared.
    #[serde(default)]
    pub run_time_counts: Vec<RunTimeCount>,
}

impl DiffReport {
    /// Whether applying would change anything: a group or an agent of the
    /// file, or a count set at run time that the file's would replace.
    pub fn has_changes(&self) -> bool {
        !self.groups.is_empty()
            || !self.agents.is_empty()
            || self
                .run_time_counts
                .iter()
                .any(|c| c.after_apply != CountAfterApply::Kept)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "diff")]
pub enum GroupDiff {
    Added {
        group: String,
    },
    Removed {
        group: String,
    },
    Changed {
        group: String,
        changes: Vec<FieldChange>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "diff")]
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
        changes: Vec<FieldChange>,
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

/// What a changed agent's change does to its containers. The counts are
/// the running ones: a count set at run time that the apply replaces is
/// the `old` one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "effect")]
pub enum Effect {
    /// Every replica is made anew, one at a time (a rollout), and a
    /// changed count is reached as well.
    Recreate {
        old_replicas: u32,
        new_replicas: u32,
    },
    /// Only the count changes: replicas are started or stopped.
    Scale { old: u32, new: u32 },
    /// Supervision settings only: the running replicas keep running.
    InPlace,
}

/// A setting of a group or an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    // Groups'.
    Description,
    Slo,
    Rollout,
    MinHealthy,
    // Agents' (and `depends_on`, both).
    Group,
    Image,
    Command,
    Env,
    Ports,
    Volumes,
    DependsOn,
    Gpu,
    GpuOverLimit,
    Restart,
    Health,
    Resources,
    Security,
    Replicas,
    Required,
    Labels,
    StopTimeout,
    Config,
    ScriptPath,
    Secrets,
    Autoscale,
}

/// An entry of a map setting (`env`, `labels`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryChange {
    Added,
    Removed,
    Changed,
}

/// One changed setting, with its old and new values as text (`None`: not
/// set; for an `env` entry, never carried).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    pub field: Field,
    /// The entry's name, for `env` and `labels`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// What happened to the entry, for `env` and `labels`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<EntryChange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new: Option<String>,
}

/// An agent whose replica count was set at run time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunTimeCount {
    pub agent: String,
    pub group: String,
    /// The count it runs with.
    pub running: u32,
    /// The running config's count.
    pub file_replicas: u32,
    pub set_by: CountSetBy,
    pub after_apply: CountAfterApply,
}

/// Who set a count at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CountSetBy {
    /// An operator's `scale`.
    Scale,
    /// The agent's autoscaler.
    Autoscaler,
}

/// What an apply does to a count set at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "count")]
pub enum CountAfterApply {
    /// The file's `replicas` is unchanged: the count set at run time holds.
    Kept,
    /// The file's `replicas` changes: its count replaces the one set at
    /// run time.
    Replaced { replicas: u32 },
    /// The agent is not in the new config: its replicas stop.
    Removed,
}
