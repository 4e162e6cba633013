//! The control API of `orchestratord`.
//!
//! Every operation is a variant of [`Request`], versioned ([`VERSION`])
//! and wrapped in an [`Envelope`] that names the host it is for; each has
//! one typed reply (a variant of [`Response`]) or an [`ApiError`]. The data
//! in them are the API's own types ([`wire`]), not the core's, so either
//! side can change its internals without breaking the other. Transports
//! only move envelopes and replies:
//!
//! - HTTP/1.1 on the daemon's unix socket ([`http`]: one route per
//!   request, the [`Client`] on the CLI side);
//! - the federation bus between daemons, which carries the same envelopes
//!   to another host and brings its reply back.
//!
//! | request | HTTP route | reply | class |
//! |---|---|---|---|
//! | `status` | GET /v1/status | [`Status`] | read only |
//! | `groups` | GET /v1/groups | `Vec<GroupStatus>` | read only |
//! | `agents` | GET /v1/agents?group | `Vec<AgentStatus>` | read only |
//! | `group_start` | POST /v1/groups/{group}/start | [`Accepted`] | operate |
//! | `group_stop` | POST /v1/groups/{group}/stop `{with_dependents}` | [`Accepted`] | operate |
//! | `group_restart` | POST /v1/groups/{group}/restart `{with_dependents}` | [`Accepted`] | operate |
//! | `agent_restart` | POST /v1/agents/{group}/{agent}/restart | [`Accepted`] | operate |
//! | `logs` | GET /v1/agents/{group}/{agent}/logs?replica&follow&tail&since&timestamps&json | raw bytes (with `json`, one [`LogLine`] per line), streamed | read only |
//! | `events` | GET /v1/events?since&follow | one [`Event`] per line (NDJSON), streamed | read only |
//! | `apply` | POST /v1/apply `{file_name, config_text}` | [`Applied`] | admin |
//! | `reload` | POST /v1/reload | [`Applied`] | admin |
//! | `gpu` | GET /v1/gpu | [`GpuReport`] | read only |
//! | `plan` | POST /v1/plan `{file_name, config_text}` | [`PlanReport`] | read only |
//! | `plan_fleet` | POST /v1/plan/fleet `{config?: {file_name, config_text}, agent?}` | [`FleetPlan`] | read only |
//! | `config_diff` | POST /v1/config/diff `{config?: {file_name, config_text}}` | [`DiffReport`] | read only |
//! | `mig_mode` | POST /v1/gpu/{index}/mig `{enable}` | [`Accepted`] | admin |
//! | `peers` | GET /v1/peers | `Vec<PeerStatus>` | read only |
//! | `fleet` | GET /v1/fleet | [`Fleet`] | read only |
//! | `slo` | GET /v1/slo?group | [`SloReport`] | read only |
//! | `state_export` | GET /v1/state | [`wire::StateDocument`] | read only |
//! | `state_import` | POST /v1/state [`wire::StateDocument`] | [`Accepted`] | admin |
//! | `history` | GET /v1/history | `Vec<GenerationView>` | read only |
//! | `rollout` status | GET /v1/rollout | [`rollout::RolloutStatus`] | read only |
//! | `rollout` pause, resume | POST /v1/rollout/{pause,resume} | [`rollout::RolloutStatus`] | operate |
//! | `rollout` undo | POST /v1/rollout/undo?to | [`Applied`] | admin |
//!
//! Any route takes `host=NAME` to reach another host. Every failure is an
//! [`ApiError`] with an HTTP status that matches its code. The class
//! ([`Request::class`], [`RequestClass`]) is what another host's
//! `federation.remote_commands` and its peers' roles are checked against.
//!
//! Behaviour shared by clients lives here too, without I/O: [`wait`]
//! decides a `--wait` from the events it follows.

mod client;
pub mod convert;
pub mod diff;
mod error;
pub mod fleet_plan;
pub mod http;
mod reply;
pub mod report;
mod request;
pub mod rollout;
pub mod text;
pub mod wait;
pub mod wire;

pub use client::{Client, ClientError, LogsWanted, SinceError, logs_since, ndjson};
pub use diff::DiffReport;
pub use error::{
    ApiError, Asked, ErrorCode, Forbidden, GpuRefusal, NoContainer, Rejection, RemoteLevel,
    RemoteRefusal, RolloutRefusal, ScaleRefusal,
};
pub use reply::*;
pub use request::{
    ConfigFile, Envelope, Operator, Reply, Request, RequestClass, Response, VERSION,
};
pub use wire::{AutoscaleCause, Event, EventKind};
