//! Every operation the daemon offers, as one closed enum, and the reply
//! each one gets. Transports (HTTP on the control socket, the federation
//! bus) only move these; what they mean is decided in one place.

use serde::{Deserialize, Serialize};

use crate::diff::DiffReport;
use crate::error::{ApiError, ErrorCode};
use crate::reply::{
    Accepted, AgentStatus, Applied, Fleet, FleetPlan, GenerationView, GpuReport, GroupStatus,
    LogText, PeerStatus, PlanReport, SloReport, Status,
};
use crate::wire::{Event, StateDocument};

/// The version of the request and reply types. A peer or client that
/// speaks another one is refused with [`ErrorCode::Version`].
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum Request {
    /// The daemon, Docker, GPUs and every group. Reply: [`Status`].
    Status,
    /// Every group. Reply: `Vec<GroupStatus>`.
    Groups,
    /// Every agent replica, or one group's. Reply: `Vec<AgentStatus>`.
    Agents {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group: Option<String>,
    },
    /// Start a group and the groups it depends on. Reply: [`Accepted`].
    GroupStart { group: String },
    /// Stop a group (and, if asked, the started groups that need it).
    GroupStop {
        group: String,
        #[serde(default)]
        with_dependents: bool,
    },
    /// Stop a group and start it again (and, if asked, its dependents).
    GroupRestart {
        group: String,
        #[serde(default)]
        with_dependents: bool,
    },
    /// Restart an agent's replicas one at a time. Reply: [`Accepted`].
    AgentRestart { group: String, agent: String },
    /// Set an agent's replica count at run time; `None`: back to the
    /// file's. Reply: [`Accepted`].
    Scale {
        group: String,
        agent: String,
        replicas: Option<u32>,
    },
    /// A replica's container output. A stream over HTTP; over a transport
    /// that cannot stream, the last lines as one [`LogText`] (no `follow`).
    Logs {
        group: String,
        agent: String,
        #[serde(default)]
        replica: u32,
        #[serde(default)]
        follow: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tail: Option<u64>,
        /// Only output from this Unix time (seconds) on.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<i64>,
        /// Each line starts with its time.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        timestamps: bool,
        /// One [`LogLine`](crate::LogLine) per line (NDJSON), not raw bytes.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        json: bool,
    },
    /// Events from `since` on. A stream of [`Event`]s over HTTP; over a
    /// transport that cannot stream, the events so far (no `follow`).
    Events {
        #[serde(default)]
        since: u64,
        #[serde(default)]
        follow: bool,
    },
    /// Install a new config text over the daemon's config file and apply
    /// it. Reply: [`Applied`].
    Apply {
        file_name: String,
        config_text: String,
        /// Apply even when a GPU request cannot be placed on this host
        /// (refused with [`crate::Rejection::Unplaceable`] otherwise).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        force: bool,
    },
    /// Re-read the config file. Reply: [`Applied`].
    Reload,
    /// GPUs, slices, owners, free capacity. Reply: [`GpuReport`].
    Gpu,
    /// Plan a config on the live inventory. Reply: [`PlanReport`].
    Plan {
        file_name: String,
        config_text: String,
    },
    /// Where a config's GPU requests (or one agent's replicas) would fit
    /// on each host of the fleet, from this host's live inventory and its
    /// peers' latest snapshots. Reply: [`FleetPlan`].
    PlanFleet {
        /// The config to place; `None`: this host's running config.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        config: Option<ConfigFile>,
        /// `GROUP/AGENT` (or an `AGENT` no other group has): only its
        /// replicas are placed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent: Option<String>,
    },
    /// What applying a config would change, field by field, and the
    /// replica counts set at run time it keeps or replaces. Reply:
    /// [`DiffReport`].
    ConfigDiff {
        /// The config to compare with the running one; `None`: the
        /// config file on disk (what `reload` would apply).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        config: Option<ConfigFile>,
    },
    /// Change a GPU's MIG mode (pending until a reset). Reply: [`Accepted`].
    MigMode { gpu: u32, enable: bool },
    /// The configured peers and how they are seen. Reply: `Vec<PeerStatus>`.
    Peers,
    /// Every host's latest state, this one's live. Reply: [`Fleet`].
    Fleet,
    /// SLO figures of every group with an `slo:`, or of one. Reply:
    /// [`SloReport`].
    Slo {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group: Option<String>,
    },
    /// The desired state, to back up or move. Reply: [`StateDocument`].
    StateExport,
    /// Replace the desired state, whole, and act on it (as `apply` does
    /// for a config). Reply: [`Accepted`].
    StateImport { state: StateDocument },
    /// The config generations kept on disk, newest first. Reply:
    /// `Vec<GenerationView>`.
    History,
    /// The rollout of a changed config: its status, pause, resume, undo.
    /// Reply: [`crate::rollout::RolloutStatus`] (undo: [`Applied`]).
    Rollout {
        action: crate::rollout::RolloutAction,
    },
}

/// A config text and the name of the file it came from (for its
/// diagnostics).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigFile {
    pub file_name: String,
    pub config_text: String,
}

/// What a request may change: the rules of who may send it go by this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestClass {
    /// Reads only (views, logs, events, `plan`, `state export`).
    ReadOnly,
    /// Operates groups and agents: start, stop, restart.
    Operate,
    /// Changes what the host is: `apply`, `reload`, `state import`, MIG mode.
    Admin,
}

impl RequestClass {
    pub fn label(self) -> &'static str {
        match self {
            RequestClass::ReadOnly => "read_only",
            RequestClass::Operate => "operate",
            RequestClass::Admin => "admin",
        }
    }
}

impl Request {
    /// What the request may change. One exhaustive match: a new request
    /// cannot be added without saying which class it is in.
    pub fn class(&self) -> RequestClass {
        match self {
            Request::Status
            | Request::Groups
            | Request::Agents { .. }
            | Request::Logs { .. }
            | Request::Events { .. }
            | Request::Gpu
            | Request::Plan { .. }
            | Request::PlanFleet { .. }
            | Request::ConfigDiff { .. }
            | Request::Peers
            | Request::Fleet
            | Request::Slo { .. }
            | Request::StateExport
            | Request::History
            | Request::Rollout {
                action: crate::rollout::RolloutAction::Status,
            } => RequestClass::ReadOnly,
            Request::GroupStart { .. }
            | Request::GroupStop { .. }
            | Request::GroupRestart { .. }
            | Request::AgentRestart { .. }
            | Request::Scale { .. }
            | Request::Rollout {
                action: crate::rollout::RolloutAction::Pause | crate::rollout::RolloutAction::Resume,
            } => RequestClass::Operate,
            Request::Apply { .. }
            | Request::Reload
            | Request::MigMode { .. }
            | Request::StateImport { .. }
            | Request::Rollout {
                action: crate::rollout::RolloutAction::Undo { .. },
            } => RequestClass::Admin,
        }
    }

    /// The operation's name, as in the `op` field.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Status => "status",
            Request::Groups => "groups",
            Request::Agents { .. } => "agents",
            Request::GroupStart { .. } => "group_start",
            Request::GroupStop { .. } => "group_stop",
            Request::GroupRestart { .. } => "group_restart",
            Request::AgentRestart { .. } => "agent_restart",
            Request::Scale { .. } => "scale",
            Request::Logs { .. } => "logs",
            Request::Events { .. } => "events",
            Request::Apply { .. } => "apply",
            Request::Reload => "reload",
            Request::Gpu => "gpu",
            Request::Plan { .. } => "plan",
            Request::PlanFleet { .. } => "plan_fleet",
            Request::ConfigDiff { .. } => "config_diff",
            Request::MigMode { .. } => "mig_mode",
            Request::Peers => "peers",
            Request::Fleet => "fleet",
            Request::Slo { .. } => "slo",
            Request::StateExport => "state_export",
            Request::StateImport { .. } => "state_import",
            Request::History => "history",
            Request::Rollout { .. } => "rollout",
        }
    }
}

/// A request with its version and the host it is for. `host: None` (or
/// the daemon's own name) is the daemon that receives it; another name is
/// carried to that host over the federation bus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub v: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(flatten)]
    pub request: Request,
    /// Who asked, as the daemon that took the request on its control
    /// socket saw them; set by that daemon when it carries the request to
    /// another host, never taken from a client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<Operator>,
}

/// An operator as a control socket sees them: the peer credentials of
/// the connection (`SO_PEERCRED`) and the names they have on that host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operator {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

impl Operator {
    /// Bounds on what a peer may send: a supplementary group list longer
    /// than Linux's `NGROUPS_MAX`, or names longer than a login name, are
    /// refused.
    pub const MAX_GROUPS: usize = 65_536;
    pub const MAX_NAME: usize = 256;

    /// Whether the identity is within [`Operator::MAX_GROUPS`] and
    /// [`Operator::MAX_NAME`].
    pub fn within_bounds(&self) -> bool {
        self.groups.len() <= Self::MAX_GROUPS
            && self.user.as_ref().is_none_or(|u| u.len() <= Self::MAX_NAME)
            && self
                .group
                .as_ref()
                .is_none_or(|g| g.len() <= Self::MAX_NAME)
    }
}

impl std::fmt::Display for Operator {
    /// `uid 1000 (alice), gid 1000 (alice)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "uid {}", self.uid)?;
        if let Some(u) = &self.user {
            write!(f, " ({u})")?;
        }
        write!(f, ", gid {}", self.gid)?;
        if let Some(g) = &self.group {
            write!(f, " ({g})")?;
        }
        Ok(())
    }
}

impl Envelope {
    pub fn new(host: Option<String>, request: Request) -> Self {
        Envelope {
            v: VERSION,
            host,
            request,
            operator: None,
        }
    }

    /// Refuses an envelope of another API version.
    pub fn check_version(&self) -> Result<(), ApiError> {
        if self.v == VERSION {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::Version,
                format!(
                    "the request speaks API version {}, this daemon speaks {VERSION}",
                    self.v
                ),
            ))
        }
    }
}

/// The answer to a [`Request`], tagged with its kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reply", content = "data")]
pub enum Response {
    Status(Status),
    Groups(Vec<GroupStatus>),
    Agents(Vec<AgentStatus>),
    Accepted(Accepted),
    Applied(Applied),
    Gpu(GpuReport),
    Plan(PlanReport),
    FleetPlan(FleetPlan),
    ConfigDiff(DiffReport),
    Events(Vec<Event>),
    Logs(LogText),
    Peers(Vec<PeerStatus>),
    Fleet(Fleet),
    Slo(SloReport),
    State(StateDocument),
    History(Vec<GenerationView>),
    Rollout(crate::rollout::RolloutStatus),
}

impl Response {
    /// The kind of reply, as in the `reply` field.
    pub fn name(&self) -> &'static str {
        match self {
            Response::Status(_) => "status",
            Response::Groups(_) => "groups",
            Response::Agents(_) => "agents",
            Response::Accepted(_) => "accepted",
            Response::Applied(_) => "applied",
            Response::Gpu(_) => "gpu",
            Response::Plan(_) => "plan",
            Response::FleetPlan(_) => "fleet_plan",
            Response::ConfigDiff(_) => "config_diff",
            Response::Events(_) => "events",
            Response::Logs(_) => "logs",
            Response::Peers(_) => "peers",
            Response::Fleet(_) => "fleet",
            Response::Slo(_) => "slo",
            Response::State(_) => "state",
            Response::History(_) => "history",
            Response::Rollout(_) => "rollout",
        }
    }
}

/// A reply as it travels: the answer or why there is none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Ok(Box<Response>),
    Err(ApiError),
}

impl From<Result<Response, ApiError>> for Reply {
    fn from(r: Result<Response, ApiError>) -> Self {
        match r {
            Ok(x) => Reply::Ok(Box::new(x)),
            Err(e) => Reply::Err(e),
        }
    }
}

impl From<Reply> for Result<Response, ApiError> {
    fn from(r: Reply) -> Self {
        match r {
            Reply::Ok(x) => Ok(*x),
            Reply::Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_their_version_and_host_flat() {
        let e = Envelope::new(
            Some("pc2".into()),
            Request::GroupStop {
                group: "vision_gpu".into(),
                with_dependents: true,
            },
        );
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"v": 1, "host": "pc2", "op": "group_stop", "group": "vision_gpu", "with_dependents": true})
        );
        let back: Envelope = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
        // Defaults keep old and minimal writers working.
        let min: Envelope = serde_json::from_str(r#"{"v":1,"op":"events"}"#).unwrap();
        assert_eq!(
            min.request,
            Request::Events {
                since: 0,
                follow: false
            }
        );
    }

    /// One of every request, and the class each must be in.
    fn every_request() -> Vec<(Request, RequestClass)> {
        use RequestClass::*;
        let g = || "g".to_string();
        let text = || ("c.yaml".to_string(), "version: 1".to_string());
        vec![
            (Request::Status, ReadOnly),
            (Request::Groups, ReadOnly),
            (Request::Agents { group: None }, ReadOnly),
            (Request::GroupStart { group: g() }, Operate),
            (
                Request::GroupStop {
                    group: g(),
                    with_dependents: false,
                },
                Operate,
            ),
            (
                Request::GroupRestart {
                    group: g(),
                    with_dependents: true,
                },
                Operate,
            ),
            (
                Request::AgentRestart {
                    group: g(),
                    agent: "A".into(),
                },
                Operate,
            ),
            (
                Request::Logs {
                    group: g(),
                    agent: "A".into(),
                    replica: 0,
                    follow: false,
                    tail: None,
                    since: None,
                    timestamps: false,
                    json: false,
                },
                ReadOnly,
            ),
            (
                Request::Events {
                    since: 0,
                    follow: false,
                },
                ReadOnly,
            ),
            (
                Request::Apply {
                    file_name: text().0,
                    config_text: text().1,
                    force: false,
                },
                Admin,
            ),
            (Request::Reload, Admin),
            (Request::Gpu, ReadOnly),
            (
                Request::Plan {
                    file_name: text().0,
                    config_text: text().1,
                },
                ReadOnly,
            ),
            (
                Request::MigMode {
                    gpu: 0,
                    enable: true,
                },
                Admin,
            ),
            (Request::Peers, ReadOnly),
            (Request::Fleet, ReadOnly),
            (Request::Slo { group: None }, ReadOnly),
            (Request::StateExport, ReadOnly),
            (
                Request::StateImport {
                    state: serde_json::from_value(serde_json::json!({
                        "kind": "orchestrator-state", "format": 1, "host": "h",
                        "generation": 1, "started_groups": []
                    }))
                    .unwrap(),
                },
                Admin,
            ),
            (
                Request::Scale {
                    group: g(),
                    agent: "A".into(),
                    replicas: Some(2),
                },
                Operate,
            ),
            (
                Request::PlanFleet {
                    config: None,
                    agent: Some("g/A".into()),
                },
                ReadOnly,
            ),
            (
                Request::ConfigDiff {
                    config: Some(ConfigFile {
                        file_name: text().0,
                        config_text: text().1,
                    }),
                },
                ReadOnly,
            ),
            (Request::History, ReadOnly),
            (
                Request::Rollout {
                    action: crate::rollout::RolloutAction::Status,
                },
                ReadOnly,
            ),
        ]
    }

    #[test]
    fn a_rollout_request_is_read_operate_or_admin_by_its_action() {
        use crate::rollout::RolloutAction as A;
        let class = |action| Request::Rollout { action }.class();
        assert_eq!(class(A::Status), RequestClass::ReadOnly);
        assert_eq!(class(A::Pause), RequestClass::Operate);
        assert_eq!(class(A::Resume), RequestClass::Operate);
        assert_eq!(class(A::Undo { to: Some(3) }), RequestClass::Admin);
    }

    #[test]
    fn every_request_has_its_class() {
        let table = every_request();
        // The table names every request once. A request added to the enum
        // does not compile here until it is given a row: this match has
        // no wildcard, and each arm names its row.
        let row = |r: &Request| -> usize {
            match r {
                Request::Status => 0,
                Request::Groups => 1,
                Request::Agents { .. } => 2,
                Request::GroupStart { .. } => 3,
                Request::GroupStop { .. } => 4,
                Request::GroupRestart { .. } => 5,
                Request::AgentRestart { .. } => 6,
                Request::Logs { .. } => 7,
                Request::Events { .. } => 8,
                Request::Apply { .. } => 9,
                Request::Reload => 10,
                Request::Gpu => 11,
                Request::Plan { .. } => 12,
                Request::MigMode { .. } => 13,
                Request::Peers => 14,
                Request::Fleet => 15,
                Request::Slo { .. } => 16,
                Request::StateExport => 17,
                Request::StateImport { .. } => 18,
                Request::Scale { .. } => 19,
                Request::PlanFleet { .. } => 20,
                Request::ConfigDiff { .. } => 21,
                Request::History => 22,
                Request::Rollout { .. } => 23,
            }
        };
        let rows: Vec<usize> = table.iter().map(|(r, _)| row(r)).collect();
        assert_eq!(
            rows,
            (0..24).collect::<Vec<_>>(),
            "one row per request, in order"
        );
        for (request, class) in &table {
            assert_eq!(request.class(), *class, "{}", request.name());
        }
    }

    #[test]
    fn the_operator_travels_with_the_envelope_and_is_bounded() {
        let mut e = Envelope::new(None, Request::GroupStart { group: "g".into() });
        e.operator = Some(Operator {
            uid: 1000,
            gid: 1000,
            groups: vec![995],
            user: Some("alice".into()),
            group: None,
        });
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["operator"]["user"], "alice");
        let back: Envelope = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
        assert_eq!(
            e.operator.as_ref().unwrap().to_string(),
            "uid 1000 (alice), gid 1000"
        );
        let mut op = e.operator.clone().unwrap();
        assert!(op.within_bounds());
        op.groups = vec![1; Operator::MAX_GROUPS + 1];
        assert!(!op.within_bounds());
        op.groups.clear();
        op.user = Some("x".repeat(Operator::MAX_NAME + 1));
        assert!(!op.within_bounds());
    }

    #[test]
    fn another_version_is_refused_by_name() {
        let e: Envelope = serde_json::from_str(r#"{"v":2,"op":"status"}"#).unwrap();
        let err = e.check_version().unwrap_err();
        assert_eq!(err.code, ErrorCode::Version);
        assert!(err.message.contains("version 2"), "{}", err.message);
        let unknown = serde_json::from_str::<Envelope>(r#"{"v":1,"op":"launch_missiles"}"#);
        assert!(unknown.is_err());
    }
}
