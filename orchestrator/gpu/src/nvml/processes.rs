//! Reading who uses a GPU: NVML's compute, graphics and MPS process lists
//! (the `_v3` calls, which `nvml-wrapper` wraps), merged per pid, with the
//! memory a MIG-enabled parent device withholds read from the MIG devices;
//! and per-process utilisation from `nvmlDeviceGetProcessUtilization`.
//!
//! The list calls read a count first and the entries second; a process that
//! starts in between makes the second call INSUFFICIENT_SIZE, so each read
//! is retried once.

use std::collections::BTreeMap;

use nvml_wrapper::Device;
use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::struct_wrappers::device::ProcessInfo;
use orch_core::units::ByteSize;

use super::raw::Failure;
use super::{NvmlBackend, into_error};
use crate::backend::{GpuProcess, ProcessKind, ProcessUtilization, RawSample, aggregate_samples};
use crate::error::GpuError;

const COMPUTE: &str = "nvmlDeviceGetComputeRunningProcesses_v3";
const GRAPHICS: &str = "nvmlDeviceGetGraphicsRunningProcesses_v3";
const MPS: &str = "nvmlDeviceGetMPSComputeRunningProcesses_v3";
const UTILIZATION: &str = "nvmlDeviceGetProcessUtilization";

/// A MIG device with its (GPU-instance, compute-instance) ids.
type MigDevice<'a> = ((u32, u32), Device<'a>);

/// Runs a count-then-read call, once more if the list grew in between.
fn retried<T>(call: impl Fn() -> Result<T, NvmlError>) -> Result<T, NvmlError> {
    match call() {
        Err(NvmlError::InsufficientSize(_)) => call(),
        other => other,
    }
}

/// A list the device may not offer (no MPS, no graphics): empty then.
fn optional(
    name: &'static str,
    result: Result<Vec<ProcessInfo>, NvmlError>,
) -> Result<Vec<ProcessInfo>, Failure> {
    match result {
        Ok(list) => Ok(list),
        Err(e) => {
            let f = Failure::wrapped(name, e);
            if f.is_unsupported() {
                Ok(Vec::new())
            } else {
                Err(f)
            }
        }
    }
}

fn entry(p: &ProcessInfo, kind: ProcessKind) -> GpuProcess {
    GpuProcess {
        pid: p.pid,
        used_memory: match p.used_gpu_memory {
            UsedGpuMemory::Used(bytes) => Some(ByteSize(bytes)),
            UsedGpuMemory::Unavailable => None,
        },
        gpu_instance_id: p.gpu_instance_id,
        compute_instance_id: p.compute_instance_id,
        kind,
    }
}

/// One entry per pid, in the order NVML first lists them: a pid in the
/// compute and graphics lists is `ComputeGraphics`, one in the MPS list an
/// `MpsClient` (NVML lists MPS clients among the compute processes too).
pub(crate) fn merge(
    compute: &[ProcessInfo],
    graphics: &[ProcessInfo],
    mps: &[ProcessInfo],
) -> Vec<GpuProcess> {
    let mut out: Vec<GpuProcess> = compute
        .iter()
        .map(|p| entry(p, ProcessKind::Compute))
        .collect();
    for p in graphics {
        match out.iter_mut().find(|e| e.pid == p.pid) {
            Some(e) => e.kind = ProcessKind::ComputeGraphics,
            None => out.push(entry(p, ProcessKind::Graphics)),
        }
    }
    for p in mps {
        match out.iter_mut().find(|e| e.pid == p.pid) {
            Some(e) => e.kind = ProcessKind::MpsClient,
            None => out.push(entry(p, ProcessKind::MpsClient)),
        }
    }
    out
}

/// The three lists of one device handle (a GPU or a MIG device), merged.
fn device_processes(dev: &Device<'_>) -> Result<Vec<GpuProcess>, Failure> {
    let compute =
        retried(|| dev.running_compute_processes()).map_err(|e| Failure::wrapped(COMPUTE, e))?;
    let graphics = optional(GRAPHICS, retried(|| dev.running_graphics_processes()))?;
    let mps = optional(MPS, retried(|| dev.mps_running_compute_processes()))?;
    Ok(merge(&compute, &graphics, &mps))
}

impl NvmlBackend {
    /// Every MIG device of a GPU with its (GPU-instance, compute-instance)
    /// ids; none when the GPU has no MIG devices to offer.
    fn mig_device_handles<'a>(&self, dev: &Device<'a>) -> Result<Vec<MigDevice<'a>>, Failure> {
        let max = match dev.mig_device_count() {
            Ok(max) => max,
            Err(e) => {
                let f = Failure::wrapped("nvmlDeviceGetMaxMigDeviceCount", e);
                return if f.is_unsupported() {
                    Ok(Vec::new())
                } else {
                    Err(f)
                };
            }
        };
        let raw = self.raw();
        let mut out = Vec::new();
        for index in 0..max {
            let mig = match dev.mig_device_by_index(index) {
                Ok(mig) => mig,
                Err(NvmlError::NotFound) => continue,
                Err(NvmlError::InvalidArg) => break,
                Err(e) => return Err(Failure::wrapped("nvmlDeviceGetMigDeviceHandleByIndex", e)),
            };
            // SAFETY: the handle goes back to the library it came from,
            // which `self.nvml` keeps loaded.
            let ids = raw.mig_ids(unsafe { mig.handle() })?;
            out.push((ids, mig));
        }
        Ok(out)
    }

    pub(super) fn read_processes(&self, gpu: u32) -> Result<Vec<GpuProcess>, GpuError> {
        let dev = self.device(gpu)?;
        let fail = |f: Failure| into_error(Some(gpu), f);
        let mut processes = device_processes(&dev).map_err(fail)?;
        let withheld = processes
            .iter()
            .any(|p| p.used_memory.is_none() && p.gpu_instance_id.is_some());
        if withheld {
            // A MIG parent answers per-process memory only to privileged
            // callers; each MIG device answers for its own processes.
            let mut per_instance: BTreeMap<(u32, u32, u32), ByteSize> = BTreeMap::new();
            for ((gi, ci), mig) in self.mig_device_handles(&dev).map_err(fail)? {
                for p in device_processes(&mig).map_err(fail)? {
                    if let Some(used) = p.used_memory {
                        per_instance.insert((p.pid, gi, ci), used);
                    }
                }
            }
            for p in processes.iter_mut().filter(|p| p.used_memory.is_none()) {
                if let (Some(gi), Some(ci)) = (p.gpu_instance_id, p.compute_instance_id) {
                    p.used_memory = per_instance.get(&(p.pid, gi, ci)).copied();
                }
            }
        }
        Ok(processes)
    }

    pub(super) fn read_instance_processes(
        &self,
        gpu: u32,
        gi_id: u32,
        ci_id: u32,
    ) -> Result<Vec<GpuProcess>, GpuError> {
        let dev = self.device(gpu)?;
        self.require_mig(gpu, &dev)?;
        let fail = |f: Failure| into_error(Some(gpu), f);
        let mig = self
            .mig_device_handles(&dev)
            .map_err(fail)?
            .into_iter()
            .find(|(ids, _)| *ids == (gi_id, ci_id))
            .map(|(_, mig)| mig)
            .ok_or(GpuError::NoSuchInstance { gpu, gi_id })?;
        device_processes(&mig).map_err(fail)
    }

    pub(super) fn read_process_utilization(
        &self,
        gpu: u32,
        since_us: u64,
    ) -> Result<ProcessUtilization, GpuError> {
        let dev = self.device(gpu)?;
        let samples = match retried(|| dev.process_utilization_stats(since_us)) {
            Ok(samples) => samples,
            // NVML's answer when no sample is newer than `since_us`.
            Err(NvmlError::NotFound) => return Ok(ProcessUtilization::default()),
            Err(e) => {
                let f = Failure::wrapped(UTILIZATION, e);
                return Err(if f.is_unsupported() {
                    GpuError::NotSupported {
                        gpu,
                        what: "per-process utilisation".to_owned(),
                    }
                } else {
                    into_error(Some(gpu), f)
                });
            }
        };
        let raw: Vec<RawSample> = samples
            .iter()
            .map(|s| RawSample {
                pid: s.pid,
                timestamp_us: s.timestamp,
                sm: s.sm_util,
                mem: s.mem_util,
                enc: s.enc_util,
                dec: s.dec_util,
            })
            .collect();
        Ok(aggregate_samples(&raw, since_us))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(pid: u32, used: Option<u64>) -> ProcessInfo {
        ProcessInfo {
            pid,
            used_gpu_memory: used.map_or(UsedGpuMemory::Unavailable, UsedGpuMemory::Used),
            gpu_instance_id: None,
            compute_instance_id: None,
        }
    }

    #[test]
    fn lists_merge_into_one_entry_per_pid() {
        let merged = merge(
            &[info(1, Some(10)), info(2, Some(20)), info(3, None)],
            &[info(2, Some(20)), info(4, Some(40))],
            &[info(3, None)],
        );
        let got: Vec<(u32, ProcessKind, Option<ByteSize>)> = merged
            .iter()
            .map(|p| (p.pid, p.kind, p.used_memory))
            .collect();
        assert_eq!(
            got,
            [
                (1, ProcessKind::Compute, Some(ByteSize(10))),
                (2, ProcessKind::ComputeGraphics, Some(ByteSize(20))),
                (3, ProcessKind::MpsClient, None),
                (4, ProcessKind::Graphics, Some(ByteSize(40))),
            ]
        );
    }

    #[test]
    fn a_grown_list_is_read_once_more() {
        let calls = std::cell::Cell::new(0);
        let got = retried(|| {
            calls.set(calls.get() + 1);
            if calls.get() == 1 {
                Err(NvmlError::InsufficientSize(Some(3)))
            } else {
                Ok(7)
            }
        });
        assert_eq!((got.ok(), calls.get()), (Some(7), 2));
        let calls = std::cell::Cell::new(0);
        let got: Result<u32, NvmlError> = retried(|| {
            calls.set(calls.get() + 1);
            Err(NvmlError::InsufficientSize(None))
        });
        assert!(got.is_err(), "only once more");
        assert_eq!(calls.get(), 2);
    }
}
