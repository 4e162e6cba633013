//! The pure core of the orchestrator.
//!
//! Architecture invariant: nothing in this crate does I/O, spawns a thread,
//! reads a clock or the environment, or depends on tokio. Every function is
//! a computation over data, tested with data tables. Time, when a decision
//! needs it, is passed in.

pub mod autoscale;
pub mod container;
pub mod diff;
pub mod glob;
pub mod gpu;
pub mod graph;
pub mod model;
pub mod over_limit;
pub mod planner;
pub mod slo;
pub mod supervise;
pub mod units;
