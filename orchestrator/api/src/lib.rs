//! The control API of `orchestratord`: HTTP/JSON over a unix socket.
//!
//! One set of types for both ends: the daemon serialises them, the CLI
//! deserialises them, and nothing else crosses the socket. Paths are
//! versioned (`/v1/...`); an incompatible change gets a new prefix.
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | GET | /v1/status | | [`Status`] |
//! | GET | /v1/groups | | `Vec<GroupStatus>` |
//! | POST | /v1/groups/{group}/{start,stop,restart} | [`GroupAction`] | [`Accepted`] |
//! | GET | /v1/agents | | `Vec<AgentStatus>` |
//! | POST | /v1/agents/{group}/{agent}/restart | | [`Accepted`] |
//! | GET | /v1/agents/{group}/{agent}/logs?follow&tail&replica | | raw log bytes, streamed |
//! | GET | /v1/events?follow&since | | [`Event`] per line (NDJSON), streamed |
//! | POST | /v1/reload | | [`Applied`] |
//! | POST | /v1/apply | [`ApplyRequest`] | [`Applied`] |
//! | GET | /v1/gpu | | [`GpuReport`] |
//! | POST | /v1/plan | [`ApplyRequest`] | [`PlanReport`] |
//! | POST | /v1/gpu/{index}/mig | [`MigModeRequest`] | [`Accepted`] |
//!
//! Every failure is an [`ApiError`] with an HTTP status that matches its code.

mod client;
pub mod report;
mod types;

pub use client::{Client, ClientError};
pub use types::*;

/// The path prefix of this API version.
pub const PREFIX: &str = "/v1";
