//! The agent contract, for authors of agents run by the orchestrator.
//!
//! An agent learns who it is from the environment ([`Identity`],
//! [`GpuEnv`], [`ListenConfig`]), keeps its health in a [`HealthState`],
//! records [`metrics`] in a [`Registry`], and hands all of it to
//! [`serve`] (or [`Server::bind`] then [`Server::run`]), which listens on
//! every `ORCH_LISTEN_PORTS` port and answers `/health`, `/ready`, `/info`
//! and `/metrics` next to the author's own [`Routes`]. [`probe`] gives an
//! agent binary a health-check mode for images with no shell or curl.
//!
//! ```no_run
//! use agent_sdk::{HealthState, Registry, Routes, ServeConfig, StatusCode, text};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ServeConfig::from_env(env!("CARGO_PKG_VERSION"))?;
//! let health = HealthState::new();
//! let registry = Registry::new();
//! let routes = Routes::new().route("/infer", |_req| async { text(StatusCode::OK, "done\n") })?;
//! health.set_ready(true);
//! agent_sdk::serve(config, health, registry, routes, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await?;
//! # Ok(())
//! # }
//! ```
//!
//! Architecture invariant: the SDK never resolves a host name, so agents
//! linked statically against glibc (which cannot load NSS modules) are safe.

pub mod duration;
pub mod env;
pub mod health;
pub mod metrics;
pub mod probe;
pub mod server;

pub use duration::{DurationError, format_duration, parse_duration};
pub use env::{EnvError, GpuEnv, Identity, ListenConfig};
pub use health::{Health, HealthState};
pub use metrics::{Counter, CounterVec, Gauge, Histogram, MetricsError, Registry};
pub use probe::{ProbeError, ProbeTarget};
pub use server::{
    Body, Routes, ServeConfig, ServeError, Server, StartTime, Stopped, json, serve, text,
};

// The types a route handler names, so authors need no direct hyper
// dependency of a matching version.
pub use bytes::Bytes;
pub use http_body_util::{BodyExt, Full, Limited};
pub use hyper::body::Incoming;
pub use hyper::{Method, Request, Response, StatusCode, header};
