//! Every operation the daemon offers, as one closed enum, and the reply
//! each one gets. Transports (HTTP on the control socket, the federation
//! bus) only move these; what they mean is decided in one place.

use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ErrorCode};
use crate::reply::{
    Accepted, AgentStatus, Applied, Fleet, GpuReport, GroupStatus, LogText, PeerStatus, PlanReport,
    SloReport, Status,
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
}

impl Request {
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
            Request::Logs { .. } => "logs",
            Request::Events { .. } => "events",
            Request::Apply { .. } => "apply",
            Request::Reload => "reload",
            Request::Gpu => "gpu",
            Request::Plan { .. } => "plan",
            Request::MigMode { .. } => "mig_mode",
            Request::Peers => "peers",
            Request::Fleet => "fleet",
            Request::Slo { .. } => "slo",
            Request::StateExport => "state_export",
            Request::StateImport { .. } => "state_import",
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
}

impl Envelope {
    pub fn new(host: Option<String>, request: Request) -> Self {
        Envelope {
            v: VERSION,
            host,
            request,
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
    Events(Vec<Event>),
    Logs(LogText),
    Peers(Vec<PeerStatus>),
    Fleet(Fleet),
    Slo(SloReport),
    State(StateDocument),
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
            Response::Events(_) => "events",
            Response::Logs(_) => "logs",
            Response::Peers(_) => "peers",
            Response::Fleet(_) => "fleet",
            Response::Slo(_) => "slo",
            Response::State(_) => "state",
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
