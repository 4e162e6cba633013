//! The Docker Engine adapter.
//!
//! The daemon builds a [`ContainerSpec`](orch_core::container::ContainerSpec)
//! (pure data) and hands it to a [`ContainerRuntime`]; this crate turns it
//! into Docker Engine API calls and adds nothing of its own.
//!
//! - [`runtime`]: the narrow trait and the plain data it returns.
//! - [`error`]: [`DockerError`], one variant per thing an operator can fix.
//! - `mapping`: spec to request body and engine answers to our types (pure).
//! - [`engine`]: [`DockerEngine`], the real implementation over bollard.
//! - [`reconnect`]: [`Reconnecting`], a [`DockerEngine`] that connects on
//!   first use and again after the engine went away (what the daemon
//!   runs on).
//! - `fake` (feature `fake`): `FakeRuntime`, a
//!   recording in-memory engine for other crates' tests.
//!
//! Architecture invariant: only this crate knows bollard. Nothing public
//! here mentions a bollard type.

pub mod cgroup;
pub mod engine;
pub mod error;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
mod mapping;
pub mod reconnect;
pub mod runtime;

pub use engine::{DockerEngine, Endpoint, MIN_API_VERSION};
pub use error::{DockerError, ObjectKind, Removal};
pub use reconnect::Reconnecting;
pub use runtime::{
    ContainerEvent, ContainerInfo, ContainerRuntime, ContainerState, ContainerSummary,
    DockerEventKind, EXEC_OUTPUT_LIMIT, EngineInfo, EventStream, ExecOutcome, LabelFilter,
    LogChunk, LogStream, LogsAsk, OutputStream,
};
