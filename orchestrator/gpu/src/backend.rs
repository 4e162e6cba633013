//! The one narrow interface through which the rest of the orchestrator sees
//! GPUs: inventory, telemetry, the processes using each GPU (and each MIG
//! instance) with their memory and utilisation, and the MIG operations.
//! NVML is behind it in production ([`crate::NvmlBackend`]), a recording
//! fake in tests (`FakeGpu`, feature `fake`).
//!
//! Every method is synchronous: NVML calls are blocking FFI, and the daemon
//! makes them all on one worker thread of its own, in the order it queues
//! them.

use std::fmt::Debug;
use std::path::Path;

use orch_core::gpu::GpuInfo;
/// Readings of one GPU, a core type so that the API can show them without
/// depending on this adapter.
pub use orch_core::gpu::Telemetry;
use orch_core::units::ByteSize;
use serde::{Deserialize, Serialize};

use crate::GpuError;

/// The GPU adapter.
pub trait GpuBackend: Send + Sync + Debug {
    /// Every GPU of the host in NVML index order. A lost GPU is listed with
    /// `lost: true` instead of failing the whole inventory.
    fn inventory(&self) -> Result<Vec<GpuInfo>, GpuError>;

    /// Current readings of one GPU; readings the GPU does not offer are `None`.
    fn telemetry(&self, index: u32) -> Result<Telemetry, GpuError>;

    /// The driver version NVML reports (`570.133.20`).
    fn driver_version(&self) -> Result<String, GpuError>;

    /// The NVML library file in use.
    fn library_path(&self) -> &Path;

    /// Creates a MIG GPU instance of `profile_id` at `placement_start`
    /// (memory-slice units) and one compute instance spanning it. Either
    /// both exist afterwards or neither does.
    fn create_instance(
        &self,
        gpu_index: u32,
        profile_id: u32,
        placement_start: u8,
    ) -> Result<CreatedInstance, GpuError>;

    /// Destroys the compute instances of GPU instance `gi_id`, then the GPU
    /// instance itself.
    fn destroy_instance(&self, gpu_index: u32, gi_id: u32) -> Result<(), GpuError>;

    /// Requests MIG mode on or off. The change is pending until the GPU is
    /// reset; the answer says whether one is needed.
    fn set_mig_mode(&self, gpu_index: u32, enable: bool) -> Result<MigModeChange, GpuError>;

    /// Every process with a context on the GPU, one entry per pid (a
    /// process in several of NVML's lists is merged, see [`ProcessKind`]).
    /// On a MIG GPU each entry names its GPU and compute instance, and
    /// memory NVML does not give on the parent device is read from the
    /// process's MIG device; `used_memory` is `None` only where no handle
    /// tells.
    fn processes(&self, gpu_index: u32) -> Result<Vec<GpuProcess>, GpuError>;

    /// The processes of one MIG device (GPU instance `gi_id`, compute
    /// instance `ci_id`). An instance that does not exist is
    /// `NoSuchInstance`.
    fn instance_processes(
        &self,
        gpu_index: u32,
        gi_id: u32,
        ci_id: u32,
    ) -> Result<Vec<GpuProcess>, GpuError>;

    /// Per-process utilisation from the driver's samples newer than
    /// `since_us` (microseconds since the Unix epoch; 0 for every sample the
    /// driver still holds): one entry per process that was busy, averaged
    /// over its samples. Pass the answer's `newest_us` next time to read
    /// only what is new. No newer sample is an empty answer, not an error;
    /// a GPU that does not offer it (MIG mode, pre-Maxwell) is
    /// `NotSupported`.
    fn process_utilization(
        &self,
        gpu_index: u32,
        since_us: u64,
    ) -> Result<ProcessUtilization, GpuError>;
}

/// Which of NVML's process lists a process is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessKind {
    /// A CUDA context (nvidia-smi's `C`); an MPS server is one of these.
    Compute,
    /// A graphics context (`G`).
    Graphics,
    /// Both (`C+G`).
    ComputeGraphics,
    /// An MPS client (`M+C`: in the MPS list, and the compute list too).
    MpsClient,
}

/// A process using a GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuProcess {
    /// Process id, in the host's pid namespace.
    pub pid: u32,
    /// Device memory it holds; `None` where NVML reports
    /// `NVML_VALUE_NOT_AVAILABLE` (Windows WDDM, or a MIG-enabled parent
    /// device read without privileges when no MIG handle tells either).
    pub used_memory: Option<ByteSize>,
    /// The MIG GPU instance it runs in.
    pub gpu_instance_id: Option<u32>,
    /// The MIG compute instance it runs in.
    pub compute_instance_id: Option<u32>,
    /// Which lists it is in.
    pub kind: ProcessKind,
}

/// One process's utilisation over the samples read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSample {
    /// Process id.
    pub pid: u32,
    /// SM (3D/compute) utilisation, percent, mean of the samples.
    pub sm_percent: u32,
    /// Frame-buffer memory utilisation, percent, mean of the samples.
    pub memory_percent: u32,
    /// Encoder utilisation, percent, mean of the samples.
    pub encoder_percent: u32,
    /// Decoder utilisation, percent, mean of the samples.
    pub decoder_percent: u32,
    /// How many of the driver's samples this is made of.
    pub samples: u32,
    /// The newest sample's timestamp, microseconds since the Unix epoch.
    pub newest_us: u64,
}

/// What [`GpuBackend::process_utilization`] read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessUtilization {
    /// One entry per process that was busy, by pid.
    pub processes: Vec<ProcessSample>,
    /// The newest sample's timestamp: the `since_us` of the next read.
    /// `None` when there was no newer sample (keep the previous one).
    pub newest_us: Option<u64>,
}

/// One raw driver sample, before [`aggregate_samples`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RawSample {
    pub pid: u32,
    pub timestamp_us: u64,
    pub sm: u32,
    pub mem: u32,
    pub enc: u32,
    pub dec: u32,
}

/// Folds the driver's samples (several per process, one per sample period)
/// into one mean per process, by pid. Samples not newer than `since_us` are
/// dropped, whatever the driver returned.
pub(crate) fn aggregate_samples(raw: &[RawSample], since_us: u64) -> ProcessUtilization {
    let mut by_pid: std::collections::BTreeMap<u32, (u64, u64, u64, u64, u32, u64)> =
        std::collections::BTreeMap::new();
    for s in raw.iter().filter(|s| s.timestamp_us > since_us) {
        let e = by_pid.entry(s.pid).or_default();
        e.0 += u64::from(s.sm);
        e.1 += u64::from(s.mem);
        e.2 += u64::from(s.enc);
        e.3 += u64::from(s.dec);
        e.4 += 1;
        e.5 = e.5.max(s.timestamp_us);
    }
    let mean = |sum: u64, n: u32| u32::try_from(sum / u64::from(n.max(1))).unwrap_or(u32::MAX);
    let processes: Vec<ProcessSample> = by_pid
        .into_iter()
        .map(|(pid, (sm, mem, enc, dec, n, newest))| ProcessSample {
            pid,
            sm_percent: mean(sm, n),
            memory_percent: mean(mem, n),
            encoder_percent: mean(enc, n),
            decoder_percent: mean(dec, n),
            samples: n,
            newest_us: newest,
        })
        .collect();
    let newest_us = processes.iter().map(|p| p.newest_us).max();
    ProcessUtilization {
        processes,
        newest_us,
    }
}

/// A MIG instance as created: the ids NVML assigned and the MIG device's
/// UUID, which is what a container gets as `NVIDIA_VISIBLE_DEVICES`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedInstance {
    pub gi_id: u32,
    pub ci_id: u32,
    /// `MIG-<uuid>`.
    pub device_uuid: String,
}

/// MIG mode after a change request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigModeChange {
    /// Mode in force now.
    pub current: bool,
    /// Mode after the next GPU reset.
    pub pending: bool,
    /// True while `current != pending`: the GPU must be reset (or the host
    /// rebooted) before the change takes effect.
    pub reset_required: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(pid: u32, timestamp_us: u64, sm: u32) -> RawSample {
        RawSample {
            pid,
            timestamp_us,
            sm,
            mem: sm / 2,
            enc: 0,
            dec: 0,
        }
    }

    #[test]
    fn samples_fold_into_one_mean_per_process_newer_than_since() {
        let got = aggregate_samples(
            &[
                raw(7, 1_000, 10),
                raw(7, 2_000, 30),
                raw(3, 2_000, 50),
                raw(7, 500, 99),
            ],
            900,
        );
        assert_eq!(
            got.processes,
            [
                ProcessSample {
                    pid: 3,
                    sm_percent: 50,
                    memory_percent: 25,
                    encoder_percent: 0,
                    decoder_percent: 0,
                    samples: 1,
                    newest_us: 2_000
                },
                ProcessSample {
                    pid: 7,
                    sm_percent: 20,
                    memory_percent: 10,
                    encoder_percent: 0,
                    decoder_percent: 0,
                    samples: 2,
                    newest_us: 2_000
                },
            ],
            "the sample at 500 is older than since"
        );
        assert_eq!(got.newest_us, Some(2_000));
        assert_eq!(aggregate_samples(&[], 0), ProcessUtilization::default());
    }
}
