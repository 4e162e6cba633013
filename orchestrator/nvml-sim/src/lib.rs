//! An NVML simulator: a shared library (`libnvml_sim.so`) exporting the NVML
//! C ABI, so real NVML clients (`nvml-wrapper`, `nvidia-ml-py`, `gpustat`)
//! see the GPUs a YAML host description lists, on a machine without GPUs.
//!
//! - [`config`] loads card files (model facts, MIG profile tables) and host
//!   files (which boards, identities, initial modes, telemetry).
//! - [`mig`] holds the MIG rules: placements, capacity, ids.
//! - [`state`] is the state shared by every process through a locked file:
//!   MIG modes, instances, lost GPUs, telemetry overrides, processes.
//! - [`process`] holds the process and MPS-server rules and what NVML's
//!   process lists and utilisation samples show.
//! - [`telemetry`] turns the YAML's base-plus-swing values into readings.
//! - [`sim`] ties them together for the C ABI and `nvml-simctl`.
//! - [`mps`] is the recording stand-in for `nvidia-cuda-mps-control`.
//! - `ffi` (private) is the exported C ABI itself.
//!
//! Environment: `NVML_SIM_CONFIG` names the host description; `NVML_SIM_STATE`
//! the state file (default: one per host description under the temporary
//! directory).

pub mod config;
mod ffi;
pub mod mig;
pub mod mps;
pub mod process;
pub mod sim;
pub mod state;
pub mod telemetry;
pub mod units;

pub use sim::{ENV_CALLER, ENV_CONFIG, ENV_STATE, SimError, Simulator};
