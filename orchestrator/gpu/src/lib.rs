//! The GPU adapter: the only crate that knows NVML.
//!
//! It owns
//! - [`GpuBackend`], the narrow interface the daemon uses for GPU inventory,
//!   telemetry and MIG changes, with [`NvmlBackend`] (NVML loaded at run
//!   time) and the recording fake [`FakeGpu`] behind it;
//! - [`MpsControl`], starting and stopping one CUDA MPS control daemon per
//!   GPU, with [`MpsControlDaemon`] (spawns `nvidia-cuda-mps-control`) and
//!   the recording fake [`FakeMps`].
//!
//! What it reports is plain data of the core (`orch_core::gpu::GpuInfo`);
//! deciding what to create is the planner's job, not this crate's.

mod backend;
mod error;
pub mod fake;
pub mod mps;
mod naming;
mod nvml;

pub use backend::{CreatedInstance, GpuBackend, MigModeChange, Telemetry};
pub use error::GpuError;
pub use fake::{FakeGpu, GpuCall, GpuOp};
pub use mps::{FakeMps, MpsCall, MpsControl, MpsControlDaemon, MpsError, MpsGpu, MpsOp};
pub use nvml::{LIBRARY_ENV, LibrarySource, NvmlBackend, SYSTEM_LIBRARY, resolve_library};
