//! Why a request failed, in a form scripts can act on: [`ApiError`] on
//! the wire, made from a typed [`Rejection`] in one place.

use serde::{Deserialize, Serialize};

use crate::wire::{FailReason, ReplicaRef, StateDocumentError, Wait};

/// Why a request failed; `code` tells a script what kind of failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// `file:line:column: message` lines for config errors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            details: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    Forbidden,
    NotFound,
    /// The request conflicts with the current state (e.g. a group others need).
    Conflict,
    InvalidConfig,
    /// A dependency of the daemon (Docker, NVML) cannot do it right now.
    Unavailable,
    /// The request names another host that cannot be reached (unknown,
    /// down, or no federation).
    HostUnreachable,
    /// The request or the daemon speaks another version of this API.
    Version,
    Internal,
}

impl ErrorCode {
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest | ErrorCode::InvalidConfig => 400,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict => 409,
            ErrorCode::Unavailable => 503,
            ErrorCode::HostUnreachable => 502,
            ErrorCode::Version => 400,
            ErrorCode::Internal => 500,
        }
    }
}

/// Every refusal the daemon makes, as data. Its words are in
/// [`crate::text`]; `From<Rejection> for ApiError` gives it its code and
/// words, the one place a refusal becomes an [`ApiError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// No group `group` (on `host`, whose groups are `known`; `None`: this host).
    UnknownGroup {
        group: String,
        host: Option<String>,
        known: Vec<String>,
    },
    /// No agent `agent` in `group`; `elsewhere` is the group it is in.
    UnknownAgent {
        group: String,
        agent: String,
        elsewhere: Option<String>,
    },
    /// A state names groups this host does not have; nothing was changed.
    UnknownGroups {
        groups: Vec<String>,
    },
    /// A stop or restart of a group that started groups depend on.
    NeededBy {
        group: String,
        needed_by: Vec<String>,
        restart: bool,
    },
    /// A config (applied or reloaded) for another host.
    WrongHost {
        current: String,
        new: String,
    },
    /// A config that does not load; `details` are its diagnostics.
    InvalidConfig {
        message: String,
        details: Vec<String>,
        /// The file itself could not be read.
        missing: bool,
    },
    /// `apply` could not install the new text; nothing was applied.
    ConfigNotWritten {
        path: String,
        error: String,
    },
    /// `apply` (without `force`) of a config with GPU requests the planner
    /// cannot place on this host's GPUs; nothing was applied. `errors`: the
    /// planner's reasons, one line per replica.
    Unplaceable {
        file_name: String,
        errors: Vec<String>,
    },
    /// A rollout command that does not fit the rollout's state.
    Rollout(RolloutRefusal),
    /// `apply` (without `force`) of a config whose agents use images the
    /// Docker Engine does not have (their containers could not be made);
    /// nothing was applied.
    ImagesMissing {
        file_name: String,
        images: Vec<String>,
    },
    /// A replica count `agent` cannot run with; nothing was changed.
    Scale {
        group: String,
        agent: String,
        asked: u32,
        why: ScaleRefusal,
    },
    /// `plan --all-hosts --agent` of an agent the config does not have
    /// (or not in that group); `known`: its agents, as `GROUP/AGENT`.
    NotInConfig {
        target: String,
        file_name: String,
        known: Vec<String>,
    },
    /// `plan` of another host's config.
    PlanOfOtherHost {
        file_name: String,
        config_host: String,
        daemon_host: String,
    },
    /// `config diff` of another host's config.
    DiffOfOtherHost {
        file_name: String,
        config_host: String,
        daemon_host: String,
    },
    /// A replica has no container to read logs from.
    NoContainer {
        group: String,
        replica: ReplicaRef,
        why: NoContainer,
    },
    /// `plan` without a GPU inventory (`None`: not taken yet).
    NoInventory {
        reason: Option<String>,
    },
    /// A GPU request on a host without usable GPUs (`None`: NVML is not loaded).
    NoGpus {
        reason: Option<String>,
    },
    NoSuchGpu {
        index: u32,
    },
    /// A MIG mode change on a GPU without MIG.
    NoMig {
        index: u32,
        name: String,
    },
    /// A MIG mode change on a GPU whose slices are held.
    GpuHeld {
        index: u32,
        holders: Vec<ReplicaRef>,
    },
    /// The GPU adapter refused or failed (its own words in `detail`).
    Gpu {
        refusal: GpuRefusal,
        detail: String,
    },
    /// `slo GROUP` of a group without an `slo:`.
    NoSlo {
        group: String,
    },
    /// A state document that may not be imported here.
    BadState(StateDocumentError),
    /// A request that only a transport answers reached the owner.
    TransportOnly,
    /// The daemon is stopping.
    ShuttingDown,
    /// `history` of a daemon that could not open its generations directory.
    NoHistory,
    /// A request for another host on a daemon without federation.
    NoFederation {
        host: String,
        this_host: String,
    },
    /// `logs -f` of another host.
    FollowRemoteLogs {
        host: String,
    },
    /// A logs stream asked with another request.
    NotLogs,
    /// A request from a peer that does not read as one.
    NotARequest {
        error: String,
    },
    /// A peer's request for a third host: requests are never passed on.
    NotPassedOn {
        this_host: String,
        host: String,
    },
    /// `host` is not in `federation.peers`.
    NotAPeer {
        host: String,
    },
    /// `host` could not be reached (`why`: the bus's own words).
    Unreachable {
        host: String,
        why: String,
    },
    /// A follow of the events of a host that is not a peer.
    NotFollowable {
        host: String,
    },
    /// `host` answered with bytes that do not read as a reply.
    UnreadableReply {
        host: String,
        error: String,
    },
    /// `host` answered `asked` with another kind of reply.
    WrongReply {
        host: String,
        asked: Asked,
        got: String,
    },
    /// A request could not be encoded for the bus.
    NotEncoded {
        error: String,
    },
    /// Docker could not give a container's logs.
    LogsUnavailable {
        error: String,
    },
    /// A request the HTTP server could not read.
    Unreadable {
        error: String,
    },
    /// A connection whose peer may not use the control socket.
    Forbidden(Forbidden),
    /// `host` refuses request `op` sent through its peer `peer` (the name
    /// of the sender's key).
    RemoteRefused {
        host: String,
        peer: String,
        /// The request's name ([`crate::Request::name`]).
        op: &'static str,
        why: RemoteRefusal,
    },
    /// A request body over the bound for its kind, refused before it was
    /// read in full.
    TooLarge {
        /// What kind of request: `config` (apply, plan, state import) or
        /// `request` (every other).
        kind: &'static str,
        limit: u64,
    },
}

/// Why a host refuses a request from a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteRefusal {
    /// The sender's key has role `monitor`: it reads only.
    Monitor,
    /// The host takes no more than `allowed` from peers
    /// (`federation.remote_commands`).
    Limited { allowed: RemoteLevel },
    /// A state-changing request without the identity of the operator who
    /// sent it.
    NoOperator,
    /// The operator would be refused this host's own control socket.
    Stranger {
        operator: String,
        group: Option<String>,
        gid: u32,
    },
    /// The operator identity is over its bounds.
    BadOperator,
}

/// `federation.remote_commands` as the API words it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteLevel {
    None,
    Operate,
    Admin,
}

impl RemoteLevel {
    pub fn label(self) -> &'static str {
        match self {
            RemoteLevel::None => "none",
            RemoteLevel::Operate => "operate",
            RemoteLevel::Admin => "admin",
        }
    }
}

/// Why a replica has no container whose output could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoContainer {
    GroupNotStarted,
    Held { waiting_for: Vec<Wait> },
    Failed { reason: FailReason },
    AboutToStart,
}

/// How the GPU adapter turned a request down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuRefusal {
    NotSupported,
    NoSuchGpu,
    Failed,
}

/// Which remote answer was not of the kind asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    Logs,
    Events,
}

/// Why a rollout command was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolloutRefusal {
    /// No rollout has run since the daemon started.
    NoRollout,
    /// The rollout has ended.
    Ended {
        generation: u64,
        phase: String,
    },
    AlreadyPaused {
        generation: u64,
    },
    NotPaused {
        generation: u64,
    },
    /// `undo`: the generation asked for (or, `None`, any earlier good
    /// one) is not kept; `kept`: the generations that are.
    NotKept {
        generation: Option<u64>,
        kept: Vec<u64>,
    },
    /// `undo` to the generation that runs.
    AlreadyRunning {
        generation: u64,
    },
}

/// Why a replica count was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScaleRefusal {
    /// Outside the agent's `autoscale` bounds.
    OutOfBounds { min: u32, max: u32 },
    /// Above the most replicas any agent may have.
    TooMany { max: u32 },
    /// A fixed host port can be published by one replica only.
    FixedHostPort { port: u16 },
    /// The host port range has fewer ports than replicas.
    PortRangeTooSmall { first: u16, last: u16 },
    /// The new replicas' GPU requests cannot be placed on this host's
    /// GPUs: the planner's reasons, one line per replica. `fits_on`: the
    /// peers on whose GPUs (as their latest snapshots show them) those
    /// replicas would all fit.
    Unplaceable {
        errors: Vec<String>,
        fits_on: Vec<String>,
    },
}

/// Who was refused the control socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forbidden {
    /// The connection's credentials could not be read.
    NoCredentials,
    /// `uid` is neither root, the daemon's user, nor in the socket's group.
    Stranger {
        uid: u32,
        group: Option<String>,
        gid: u32,
    },
}

impl Rejection {
    /// The code scripts act on.
    pub fn code(&self) -> ErrorCode {
        use Rejection::*;
        match self {
            UnknownGroup { .. }
            | UnknownAgent { .. }
            | NoContainer { .. }
            | NoSuchGpu { .. }
            | NotInConfig { .. }
            | NoSlo { .. } => ErrorCode::NotFound,
            InvalidConfig { missing: true, .. } => ErrorCode::NotFound,
            UnknownGroups { .. }
            | BadState(_)
            | NotLogs
            | FollowRemoteLogs { .. }
            | NotARequest { .. }
            | Unreadable { .. }
            | TooLarge { .. } => ErrorCode::BadRequest,
            NeededBy { .. }
            | PlanOfOtherHost { .. }
            | DiffOfOtherHost { .. }
            | NoMig { .. }
            | GpuHeld { .. }
            | Scale { .. }
            | Rollout(_)
            | Unplaceable { .. }
            | ImagesMissing { .. } => ErrorCode::Conflict,
            WrongHost { .. } | InvalidConfig { .. } => ErrorCode::InvalidConfig,
            Gpu {
                refusal: GpuRefusal::NotSupported,
                ..
            } => ErrorCode::Conflict,
            Gpu {
                refusal: GpuRefusal::NoSuchGpu,
                ..
            } => ErrorCode::NotFound,
            NoInventory { .. }
            | NoGpus { .. }
            | Gpu { .. }
            | ShuttingDown
            | NoHistory
            | LogsUnavailable { .. } => ErrorCode::Unavailable,
            NoFederation { .. }
            | NotPassedOn { .. }
            | NotAPeer { .. }
            | Unreachable { .. }
            | NotFollowable { .. } => ErrorCode::HostUnreachable,
            ConfigNotWritten { .. }
            | TransportOnly
            | UnreadableReply { .. }
            | WrongReply { .. }
            | NotEncoded { .. } => ErrorCode::Internal,
            Forbidden(_) | RemoteRefused { .. } => ErrorCode::Forbidden,
        }
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> ApiError {
        let code = r.code();
        let message = r.to_string();
        let details = match r {
            Rejection::InvalidConfig { details, .. } => details,
            Rejection::Unplaceable { errors, .. }
            | Rejection::ImagesMissing { images: errors, .. }
            | Rejection::Scale {
                why: ScaleRefusal::Unplaceable { errors, .. },
                ..
            } => errors,
            _ => Vec::new(),
        };
        ApiError {
            code,
            message,
            details,
        }
    }
}
