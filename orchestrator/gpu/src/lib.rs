//! The GPU adapter: the only crate that knows NVML.
//!
//! It owns
//! - [`GpuBackend`], the narrow interface the daemon uses for GPU inventory,
//!   telemetry, the processes on each GPU and MIG instance with their memory
//!   and utilisation, and MIG changes, with [`NvmlBackend`] (NVML loaded at
//!   run time) and the recording fake `FakeGpu` behind it;
//! - [`MpsControl`], starting and stopping one CUDA MPS control daemon per
//!   GPU and talking to its servers (list servers and clients, a server's
//!   status, terminate a client), with [`MpsControlDaemon`] (spawns
//!   `nvidia-cuda-mps-control`) and the recording fake `FakeMps`.
//!
//! The fakes are compiled for this crate's tests and, for other crates'
//! tests, with the feature `fake`.
//!
//! What it reports is plain data of the core (`orch_core::gpu::GpuInfo`);
//! deciding what to create is the planner's job, not this crate's.

mod backend;
mod error;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
pub mod mps;
mod naming;
mod nvml;

pub use backend::{
    CreatedInstance, GpuBackend, GpuProcess, MigModeChange, ProcessKind, ProcessSample,
    ProcessUtilization, Telemetry,
};
pub use error::GpuError;
#[cfg(any(test, feature = "fake"))]
pub use fake::{FakeGpu, GpuCall, GpuOp};
#[cfg(any(test, feature = "fake"))]
pub use mps::{FakeMps, MpsCall, MpsOp};
pub use mps::{MpsControl, MpsControlDaemon, MpsError, MpsGpu, MpsServer, MpsServerStatus};
pub use nvml::{LIBRARY_ENV, LibrarySource, NvmlBackend, SYSTEM_LIBRARY, resolve_library};
