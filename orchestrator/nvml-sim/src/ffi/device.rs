//! Device enumeration and per-device queries: identity, PCI, memory,
//! utilisation, temperature, power, fans, clocks, modes, processes and
//! per-process utilisation.
//!
//! MIG device handles answer identity and memory queries (their GPU
//! instance's memory) and, like real MIG handles, return
//! `NVML_ERROR_NOT_SUPPORTED` for utilisation, temperature, power, fan and
//! clock queries.

use std::ffi::{c_char, c_int, c_uint, c_ulonglong};
use std::time::SystemTime;

use super::support::*;
use super::types::*;
use crate::config::PciAddress;
use crate::process::{self, ListedProcess, ProcessList};
use crate::sim::{MemoryInfo, gpu_memory, micros, mig_device_uuid, mig_memory};
use crate::telemetry::{self, Sample};

/// Runs a device query and writes its value to `out`.
///
/// # Safety
/// `out` is null or writable for a `T`.
unsafe fn query<T>(
    device: DeviceHandle,
    out: *mut T,
    f: impl FnOnce(&DeviceView<'_>) -> Outcome<T>,
) -> NvmlReturn {
    guard(|| {
        let value = with_device(device, f)?;
        // SAFETY: forwarded contract on `out`.
        unsafe { write_out(out, value) }
    })
}

/// Runs a device query returning a string and copies it into `buffer`.
///
/// # Safety
/// `buffer` is null or valid for `length` bytes.
unsafe fn query_string(
    device: DeviceHandle,
    buffer: *mut c_char,
    length: c_uint,
    f: impl FnOnce(&DeviceView<'_>) -> Outcome<String>,
) -> NvmlReturn {
    guard(|| {
        let text = with_device(device, f)?;
        // SAFETY: forwarded contract on `buffer`.
        unsafe { write_c_string(buffer, length, &text) }
    })
}

fn sample(d: &DeviceView<'_>) -> Sample {
    telemetry::sample_state(d.cfg, d.state, SystemTime::now())
}

fn memory(d: &DeviceView<'_>) -> MemoryInfo {
    match &d.mig {
        Some(m) => mig_memory(m.gi_profile, d.state, m.gi.id),
        None => gpu_memory(d.cfg, &sample(d)),
    }
}

// ---- enumeration ----------------------------------------------------------

/// # Safety
/// `count` is null or writable.
unsafe fn device_count(count: *mut c_uint) -> NvmlReturn {
    guard(|| {
        let n = with_sim(|sim| Ok(sim.config().gpus.len() as c_uint))?;
        // SAFETY: forwarded contract on `count`.
        unsafe { write_out(count, n) }
    })
}

/// `nvmlDeviceGetCount_v2`: every configured GPU, lost ones included.
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetCount_v2(device_count_out: *mut c_uint) -> NvmlReturn {
    // SAFETY: NVML contract on the out-parameter.
    unsafe { device_count(device_count_out) }
}

/// `nvmlDeviceGetCount`.
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetCount(device_count_out: *mut c_uint) -> NvmlReturn {
    // SAFETY: NVML contract on the out-parameter.
    unsafe { device_count(device_count_out) }
}

/// # Safety
/// `device` is null or writable.
unsafe fn handle_by_index(index: c_uint, device: *mut DeviceHandle) -> NvmlReturn {
    guard(|| {
        let handle = with_sim(|sim| {
            let (config, state) = sim.snapshot().map_err(sim_code)?;
            if index as usize >= config.gpus.len() {
                return Err(ERROR_INVALID_ARGUMENT);
            }
            if state.gpus[index as usize].lost {
                return Err(ERROR_GPU_IS_LOST);
            }
            Ok(gpu_handle(index))
        })?;
        // SAFETY: forwarded contract on `device`.
        unsafe { write_out(device, handle) }
    })
}

/// `nvmlDeviceGetHandleByIndex_v2`.
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetHandleByIndex_v2(
    index: c_uint,
    device: *mut DeviceHandle,
) -> NvmlReturn {
    // SAFETY: NVML contract on `device`.
    unsafe { handle_by_index(index, device) }
}

/// `nvmlDeviceGetHandleByIndex`.
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetHandleByIndex(
    index: c_uint,
    device: *mut DeviceHandle,
) -> NvmlReturn {
    // SAFETY: NVML contract on `device`.
    unsafe { handle_by_index(index, device) }
}

/// Finds a device by a predicate on each GPU (and, for UUIDs, MIG devices).
fn find_device(
    matches_gpu: impl Fn(&crate::config::GpuConfig) -> bool,
    mig_uuid: Option<&str>,
) -> Outcome<DeviceHandle> {
    with_sim(|sim| {
        let (config, state) = sim.snapshot().map_err(sim_code)?;
        for (cfg, gpu) in config.gpus.iter().zip(&state.gpus) {
            if matches_gpu(cfg) {
                return if gpu.lost {
                    Err(ERROR_GPU_IS_LOST)
                } else {
                    Ok(gpu_handle(cfg.index))
                };
            }
            let Some(wanted) = mig_uuid else { continue };
            if !gpu.mig_current || gpu.lost {
                continue;
            }
            for gi in &gpu.gpu_instances {
                for ci in &gi.compute_instances {
                    if mig_device_uuid(&cfg.uuid, gi, ci) == wanted {
                        return Ok(mig_handle(cfg.index, gi.id, ci.id));
                    }
                }
            }
        }
        Err(ERROR_NOT_FOUND)
    })
}

/// `nvmlDeviceGetHandleByUUID`: `GPU-…` for GPUs, `MIG-…` for MIG devices.
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetHandleByUUID(
    uuid: *const c_char,
    device: *mut DeviceHandle,
) -> NvmlReturn {
    guard(|| {
        // SAFETY: NVML contract: `uuid` is a NUL-terminated string.
        let wanted = unsafe { read_c_string(uuid) }?;
        let handle = find_device(|cfg| cfg.uuid == wanted, Some(wanted))?;
        // SAFETY: NVML contract on `device`.
        unsafe { write_out(device, handle) }
    })
}

/// # Safety
/// `bus_id` is null or NUL-terminated; `device` is null or writable.
unsafe fn handle_by_pci(bus_id: *const c_char, device: *mut DeviceHandle) -> NvmlReturn {
    guard(|| {
        // SAFETY: forwarded contract on `bus_id`.
        let text = unsafe { read_c_string(bus_id) }?;
        let wanted = PciAddress::parse(text).ok_or(ERROR_INVALID_ARGUMENT)?;
        let handle = find_device(|cfg| cfg.pci == wanted, None)?;
        // SAFETY: forwarded contract on `device`.
        unsafe { write_out(device, handle) }
    })
}

/// `nvmlDeviceGetHandleByPciBusId_v2`: accepts `00000000:01:00.0` and the
/// legacy `0000:01:00.0`.
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetHandleByPciBusId_v2(
    pci_bus_id: *const c_char,
    device: *mut DeviceHandle,
) -> NvmlReturn {
    // SAFETY: NVML contract on both pointers.
    unsafe { handle_by_pci(pci_bus_id, device) }
}

/// `nvmlDeviceGetHandleByPciBusId`.
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetHandleByPciBusId(
    pci_bus_id: *const c_char,
    device: *mut DeviceHandle,
) -> NvmlReturn {
    // SAFETY: NVML contract on both pointers.
    unsafe { handle_by_pci(pci_bus_id, device) }
}

/// `nvmlDeviceGetHandleBySerial`.
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetHandleBySerial(
    serial: *const c_char,
    device: *mut DeviceHandle,
) -> NvmlReturn {
    guard(|| {
        // SAFETY: NVML contract: `serial` is a NUL-terminated string.
        let wanted = unsafe { read_c_string(serial) }?;
        let handle = find_device(|cfg| cfg.serial.as_deref() == Some(wanted), None)?;
        // SAFETY: NVML contract on `device`.
        unsafe { write_out(device, handle) }
    })
}

// ---- identity -------------------------------------------------------------

/// `nvmlDeviceGetIndex` (MIG devices have no NVML index: NOT_SUPPORTED).
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetIndex(
    device: DeviceHandle,
    index: *mut c_uint,
) -> NvmlReturn {
    // SAFETY: NVML contract on `index`.
    unsafe {
        query(device, index, |d| {
            d.physical_only()?;
            Ok(d.cfg.index)
        })
    }
}

/// `nvmlDeviceGetName`: the product name; for a MIG device
/// `<product> MIG <profile>`.
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetName(
    device: DeviceHandle,
    name: *mut c_char,
    length: c_uint,
) -> NvmlReturn {
    // SAFETY: NVML contract on `name`.
    unsafe {
        query_string(device, name, length, |d| {
            Ok(match &d.mig {
                Some(m) => format!("{} MIG {}", d.cfg.card.name, m.ci_profile.name),
                None => d.cfg.card.name.clone(),
            })
        })
    }
}

/// `nvmlDeviceGetUUID`: `GPU-…`, or `MIG-…` for a MIG device.
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetUUID(
    device: DeviceHandle,
    uuid: *mut c_char,
    length: c_uint,
) -> NvmlReturn {
    // SAFETY: NVML contract on `uuid`.
    unsafe {
        query_string(device, uuid, length, |d| {
            Ok(match &d.mig {
                Some(m) => mig_device_uuid(&d.cfg.uuid, m.gi, m.ci),
                None => d.cfg.uuid.clone(),
            })
        })
    }
}

/// `nvmlDeviceGetSerial`: NOT_SUPPORTED on boards without a serial (GeForce).
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetSerial(
    device: DeviceHandle,
    serial: *mut c_char,
    length: c_uint,
) -> NvmlReturn {
    // SAFETY: NVML contract on `serial`.
    unsafe {
        query_string(device, serial, length, |d| {
            d.cfg.serial.clone().ok_or(ERROR_NOT_SUPPORTED)
        })
    }
}

fn pci_info(d: &DeviceView<'_>) -> PciInfo {
    let pci = d.cfg.pci;
    PciInfo {
        bus_id_legacy: c_array(&pci.legacy_bus_id()),
        domain: pci.domain,
        bus: pci.bus,
        device: pci.device,
        pci_device_id: d.cfg.card.pci.device_id.0,
        pci_sub_system_id: d.cfg.card.pci.subsystem_id.0,
        bus_id: c_array(&pci.bus_id()),
    }
}

/// `nvmlDeviceGetPciInfo_v3` (a MIG device reports its parent's).
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetPciInfo_v3(
    device: DeviceHandle,
    pci: *mut PciInfo,
) -> NvmlReturn {
    // SAFETY: NVML contract on `pci`.
    unsafe { query(device, pci, |d| Ok(pci_info(d))) }
}

/// `nvmlDeviceGetPciInfo_v2` (same layout as v3).
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetPciInfo_v2(
    device: DeviceHandle,
    pci: *mut PciInfo,
) -> NvmlReturn {
    // SAFETY: NVML contract on `pci`.
    unsafe { query(device, pci, |d| Ok(pci_info(d))) }
}

/// `nvmlDeviceGetPciInfo` (the first layout, legacy bus id).
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetPciInfo(
    device: DeviceHandle,
    pci: *mut PciInfoV1,
) -> NvmlReturn {
    // SAFETY: NVML contract on `pci`.
    unsafe {
        query(device, pci, |d| {
            let v3 = pci_info(d);
            Ok(PciInfoV1 {
                bus_id: v3.bus_id_legacy,
                domain: v3.domain,
                bus: v3.bus,
                device: v3.device,
                pci_device_id: v3.pci_device_id,
                pci_sub_system_id: v3.pci_sub_system_id,
                reserved: [0; 4],
            })
        })
    }
}

/// `nvmlDeviceGetBrand`.
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetBrand(
    device: DeviceHandle,
    brand: *mut c_uint,
) -> NvmlReturn {
    // SAFETY: NVML contract on `brand`.
    unsafe { query(device, brand, |d| Ok(d.cfg.card.brand.nvml_code())) }
}

/// `nvmlDeviceGetArchitecture`.
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetArchitecture(
    device: DeviceHandle,
    arch: *mut c_uint,
) -> NvmlReturn {
    // SAFETY: NVML contract on `arch`.
    unsafe { query(device, arch, |d| Ok(d.cfg.card.architecture.nvml_code())) }
}

/// `nvmlDeviceGetCudaComputeCapability`.
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetCudaComputeCapability(
    device: DeviceHandle,
    major: *mut c_int,
    minor: *mut c_int,
) -> NvmlReturn {
    guard(|| {
        let cc = with_device(device, |d| Ok(d.cfg.card.compute_capability))?;
        // SAFETY: NVML contract on `major` and `minor`.
        unsafe {
            write_out(major, cc.major as c_int)?;
            write_out(minor, cc.minor as c_int)
        }
    })
}

/// `nvmlDeviceGetMinorNumber`: the GPU index (`/dev/nvidia<N>`).
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMinorNumber(
    device: DeviceHandle,
    minor_number: *mut c_uint,
) -> NvmlReturn {
    // SAFETY: NVML contract on `minor_number`.
    unsafe {
        query(device, minor_number, |d| {
            d.physical_only()?;
            Ok(d.cfg.index)
        })
    }
}

/// `nvmlDeviceGetMultiGpuBoard`.
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMultiGpuBoard(
    device: DeviceHandle,
    multi_gpu_bool: *mut c_uint,
) -> NvmlReturn {
    // SAFETY: NVML contract on `multi_gpu_bool`.
    unsafe {
        query(device, multi_gpu_bool, |d| {
            Ok(c_uint::from(d.cfg.card.multi_gpu_board))
        })
    }
}

/// `nvmlDeviceGetVirtualizationMode`: always `NVML_GPU_VIRTUALIZATION_MODE_NONE`.
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetVirtualizationMode(
    device: DeviceHandle,
    mode: *mut c_uint,
) -> NvmlReturn {
    // SAFETY: NVML contract on `mode`.
    unsafe { query(device, mode, |_| Ok(0)) }
}

/// `nvmlDeviceGetAttributes_v2`: engine and slice counts of a MIG device
/// (NOT_SUPPORTED for physical GPUs, as documented for the real call).
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetAttributes_v2(
    device: DeviceHandle,
    attributes: *mut DeviceAttributes,
) -> NvmlReturn {
    // SAFETY: NVML contract on `attributes`.
    unsafe {
        query(device, attributes, |d| {
            let m = d.mig.as_ref().ok_or(ERROR_NOT_SUPPORTED)?;
            let p = m.gi_profile;
            Ok(DeviceAttributes {
                multiprocessor_count: m.ci_profile.sm_count,
                shared_copy_engine_count: p.copy_engines,
                shared_decoder_count: p.decoders,
                shared_encoder_count: p.encoders,
                shared_jpeg_count: p.jpeg,
                shared_ofa_count: p.ofa,
                gpu_instance_slice_count: p.slices,
                compute_instance_slice_count: m.ci_profile.slices,
                memory_size_mb: crate::sim::profile_memory_mib(p),
            })
        })
    }
}

// ---- memory and telemetry -------------------------------------------------

/// `nvmlDeviceGetMemoryInfo`: `used` includes the driver's reserve, as in
/// the first memory struct.
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo(
    device: DeviceHandle,
    memory_out: *mut Memory,
) -> NvmlReturn {
    // SAFETY: NVML contract on `memory_out`.
    unsafe {
        query(device, memory_out, |d| {
            let m = memory(d);
            Ok(Memory {
                total: m.total,
                free: m.free,
                used: m.total - m.free,
            })
        })
    }
}

/// `nvmlDeviceGetMemoryInfo_v2`: checks `version == nvmlMemory_v2`.
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo_v2(
    device: DeviceHandle,
    memory_out: *mut MemoryV2,
) -> NvmlReturn {
    guard(|| {
        let m = with_device(device, |d| Ok(memory(d)))?;
        // SAFETY: NVML contract: `memory_out` is null or a readable, writable struct.
        let version = unsafe { read_version(memory_out) }?;
        if version != MEMORY_V2 {
            return Err(ERROR_ARGUMENT_VERSION_MISMATCH);
        }
        let value = MemoryV2 {
            version,
            total: m.total,
            reserved: m.reserved,
            free: m.free,
            used: m.used,
        };
        // SAFETY: as above.
        unsafe { write_out(memory_out, value) }
    })
}

/// `nvmlDeviceGetUtilizationRates`.
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetUtilizationRates(
    device: DeviceHandle,
    utilization: *mut Utilization,
) -> NvmlReturn {
    // SAFETY: NVML contract on `utilization`.
    unsafe {
        query(device, utilization, |d| {
            d.physical_only()?;
            let s = sample(d);
            Ok(Utilization {
                gpu: s.gpu_util,
                memory: s.memory_util,
            })
        })
    }
}

/// # Safety
/// `utilization` and `sampling_period_us` are null or writable.
unsafe fn codec_utilization(
    device: DeviceHandle,
    utilization: *mut c_uint,
    sampling_period_us: *mut c_uint,
    has_engine: impl FnOnce(&DeviceView<'_>) -> bool,
) -> NvmlReturn {
    guard(|| {
        with_device(device, |d| {
            d.physical_only()?;
            if has_engine(d) {
                Ok(())
            } else {
                Err(ERROR_NOT_SUPPORTED)
            }
        })?;
        // SAFETY: forwarded contract on both pointers.
        unsafe {
            write_out(utilization, 0)?;
            write_out(sampling_period_us, 167_000)
        }
    })
}

/// `nvmlDeviceGetEncoderUtilization`: 0 %; NOT_SUPPORTED without NVENC.
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetEncoderUtilization(
    device: DeviceHandle,
    utilization: *mut c_uint,
    sampling_period_us: *mut c_uint,
) -> NvmlReturn {
    // SAFETY: NVML contract on both pointers.
    unsafe {
        codec_utilization(device, utilization, sampling_period_us, |d| {
            d.cfg.card.engines.encoders > 0
        })
    }
}

/// `nvmlDeviceGetDecoderUtilization`: 0 %; NOT_SUPPORTED without NVDEC.
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetDecoderUtilization(
    device: DeviceHandle,
    utilization: *mut c_uint,
    sampling_period_us: *mut c_uint,
) -> NvmlReturn {
    // SAFETY: NVML contract on both pointers.
    unsafe {
        codec_utilization(device, utilization, sampling_period_us, |d| {
            d.cfg.card.engines.decoders > 0
        })
    }
}

/// `nvmlDeviceGetTemperature`: only `NVML_TEMPERATURE_GPU` (0) exists.
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetTemperature(
    device: DeviceHandle,
    sensor_type: c_uint,
    temp: *mut c_uint,
) -> NvmlReturn {
    // SAFETY: NVML contract on `temp`.
    unsafe {
        query(device, temp, |d| {
            d.physical_only()?;
            if sensor_type != 0 {
                return Err(ERROR_INVALID_ARGUMENT);
            }
            Ok(sample(d).temperature_c)
        })
    }
}

/// `nvmlDeviceGetTemperatureThreshold`: shutdown (0), slowdown (1), GPU max (3).
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetTemperatureThreshold(
    device: DeviceHandle,
    threshold_type: c_uint,
    temp: *mut c_uint,
) -> NvmlReturn {
    // SAFETY: NVML contract on `temp`.
    unsafe {
        query(device, temp, |d| {
            d.physical_only()?;
            let t = &d.cfg.card.temperature;
            match threshold_type {
                0 => Ok(t.shutdown_c),
                1 => Ok(t.slowdown_c),
                3 => Ok(t.gpu_max_c),
                2 | 4..=7 => Err(ERROR_NOT_SUPPORTED),
                _ => Err(ERROR_INVALID_ARGUMENT),
            }
        })
    }
}

/// `nvmlDeviceGetPowerUsage`, milliwatts.
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetPowerUsage(
    device: DeviceHandle,
    power: *mut c_uint,
) -> NvmlReturn {
    // SAFETY: NVML contract on `power`.
    unsafe {
        query(device, power, |d| {
            d.physical_only()?;
            Ok(sample(d).power_mw)
        })
    }
}

/// # Safety
/// `limit` is null or writable.
unsafe fn default_limit_mw(device: DeviceHandle, limit: *mut c_uint) -> NvmlReturn {
    // SAFETY: forwarded contract on `limit`.
    unsafe {
        query(device, limit, |d| {
            d.physical_only()?;
            Ok(d.cfg.card.power.default_limit_w * 1000)
        })
    }
}

/// `nvmlDeviceGetEnforcedPowerLimit`, milliwatts.
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetEnforcedPowerLimit(
    device: DeviceHandle,
    limit: *mut c_uint,
) -> NvmlReturn {
    // SAFETY: NVML contract on `limit`.
    unsafe { default_limit_mw(device, limit) }
}

/// `nvmlDeviceGetPowerManagementLimit`, milliwatts.
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetPowerManagementLimit(
    device: DeviceHandle,
    limit: *mut c_uint,
) -> NvmlReturn {
    // SAFETY: NVML contract on `limit`.
    unsafe { default_limit_mw(device, limit) }
}

/// `nvmlDeviceGetPowerManagementDefaultLimit`, milliwatts.
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetPowerManagementDefaultLimit(
    device: DeviceHandle,
    limit: *mut c_uint,
) -> NvmlReturn {
    // SAFETY: NVML contract on `limit`.
    unsafe { default_limit_mw(device, limit) }
}

/// `nvmlDeviceGetPowerManagementLimitConstraints`, milliwatts.
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetPowerManagementLimitConstraints(
    device: DeviceHandle,
    min_limit: *mut c_uint,
    max_limit: *mut c_uint,
) -> NvmlReturn {
    guard(|| {
        let (min, max) = with_device(device, |d| {
            d.physical_only()?;
            let p = &d.cfg.card.power;
            Ok((p.min_limit_w * 1000, p.max_limit_w * 1000))
        })?;
        // SAFETY: NVML contract on both pointers.
        unsafe {
            write_out(min_limit, min)?;
            write_out(max_limit, max)
        }
    })
}

/// `nvmlDeviceGetPowerManagementMode`: always enabled.
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetPowerManagementMode(
    device: DeviceHandle,
    mode: *mut c_uint,
) -> NvmlReturn {
    // SAFETY: NVML contract on `mode`.
    unsafe {
        query(device, mode, |d| {
            d.physical_only()?;
            Ok(1)
        })
    }
}

/// `nvmlDeviceGetPerformanceState`: P0 while busy, P8 when idle.
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetPerformanceState(
    device: DeviceHandle,
    p_state: *mut c_uint,
) -> NvmlReturn {
    // SAFETY: NVML contract on `p_state`.
    unsafe {
        query(device, p_state, |d| {
            d.physical_only()?;
            Ok(if sample(d).gpu_util > 0 { 0 } else { 8 })
        })
    }
}

/// # Safety
/// `reasons` is null or writable.
unsafe fn clock_reasons(device: DeviceHandle, reasons: *mut c_ulonglong) -> NvmlReturn {
    // SAFETY: forwarded contract on `reasons`.
    unsafe {
        query(device, reasons, |d| {
            d.physical_only()?;
            // nvmlClocksEventReasonGpuIdle while idle, nothing while busy.
            Ok(if sample(d).gpu_util > 0 { 0 } else { 1 })
        })
    }
}

/// `nvmlDeviceGetCurrentClocksEventReasons`.
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetCurrentClocksEventReasons(
    device: DeviceHandle,
    reasons: *mut c_ulonglong,
) -> NvmlReturn {
    // SAFETY: NVML contract on `reasons`.
    unsafe { clock_reasons(device, reasons) }
}

/// `nvmlDeviceGetCurrentClocksThrottleReasons` (the older name).
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetCurrentClocksThrottleReasons(
    device: DeviceHandle,
    reasons: *mut c_ulonglong,
) -> NvmlReturn {
    // SAFETY: NVML contract on `reasons`.
    unsafe { clock_reasons(device, reasons) }
}

// ---- fans -----------------------------------------------------------------

/// `nvmlDeviceGetNumFans`.
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetNumFans(
    device: DeviceHandle,
    num_fans: *mut c_uint,
) -> NvmlReturn {
    // SAFETY: NVML contract on `num_fans`.
    unsafe {
        query(device, num_fans, |d| {
            d.physical_only()?;
            Ok(d.cfg.card.fans)
        })
    }
}

fn fan_speed(d: &DeviceView<'_>, fan: c_uint) -> Outcome<c_uint> {
    d.physical_only()?;
    if d.cfg.card.fans == 0 {
        return Err(ERROR_NOT_SUPPORTED);
    }
    if fan >= d.cfg.card.fans {
        return Err(ERROR_INVALID_ARGUMENT);
    }
    Ok(sample(d).fan_percent)
}

/// `nvmlDeviceGetFanSpeed`: NOT_SUPPORTED on passively cooled boards.
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetFanSpeed(
    device: DeviceHandle,
    speed: *mut c_uint,
) -> NvmlReturn {
    // SAFETY: NVML contract on `speed`.
    unsafe { query(device, speed, |d| fan_speed(d, 0)) }
}

/// `nvmlDeviceGetFanSpeed_v2`.
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetFanSpeed_v2(
    device: DeviceHandle,
    fan: c_uint,
    speed: *mut c_uint,
) -> NvmlReturn {
    // SAFETY: NVML contract on `speed`.
    unsafe { query(device, speed, |d| fan_speed(d, fan)) }
}

// ---- clocks ---------------------------------------------------------------

fn max_clock(d: &DeviceView<'_>, clock_type: c_uint) -> Outcome<c_uint> {
    d.physical_only()?;
    let c = &d.cfg.card.max_clocks_mhz;
    match clock_type {
        0 => Ok(c.graphics),
        1 => Ok(c.sm),
        2 => Ok(c.memory),
        3 => Ok(c.video),
        _ => Err(ERROR_INVALID_ARGUMENT),
    }
}

fn current_clock(d: &DeviceView<'_>, clock_type: c_uint) -> Outcome<c_uint> {
    let max = max_clock(d, clock_type)?;
    // The memory clock stays at its maximum; the others follow the load.
    if clock_type == 2 {
        Ok(max)
    } else {
        Ok(telemetry::current_clock(max, sample(d).gpu_util))
    }
}

/// `nvmlDeviceGetClockInfo`, MHz.
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetClockInfo(
    device: DeviceHandle,
    clock_type: c_uint,
    clock: *mut c_uint,
) -> NvmlReturn {
    // SAFETY: NVML contract on `clock`.
    unsafe { query(device, clock, |d| current_clock(d, clock_type)) }
}

/// `nvmlDeviceGetMaxClockInfo`, MHz.
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMaxClockInfo(
    device: DeviceHandle,
    clock_type: c_uint,
    clock: *mut c_uint,
) -> NvmlReturn {
    // SAFETY: NVML contract on `clock`.
    unsafe { query(device, clock, |d| max_clock(d, clock_type)) }
}

/// `nvmlDeviceGetClock`: current for `NVML_CLOCK_ID_CURRENT`, the maximum for
/// the application-clock and boost ids.
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetClock(
    device: DeviceHandle,
    clock_type: c_uint,
    clock_id: c_uint,
    clock_mhz: *mut c_uint,
) -> NvmlReturn {
    // SAFETY: NVML contract on `clock_mhz`.
    unsafe {
        query(device, clock_mhz, |d| match clock_id {
            0 => current_clock(d, clock_type),
            1..=3 => max_clock(d, clock_type),
            _ => Err(ERROR_INVALID_ARGUMENT),
        })
    }
}

// ---- PCIe -----------------------------------------------------------------

/// # Safety
/// `out` is null or writable.
unsafe fn link(device: DeviceHandle, out: *mut c_uint, generation: bool) -> NvmlReturn {
    // SAFETY: forwarded contract on `out`.
    unsafe {
        query(device, out, |d| {
            d.physical_only()?;
            let pci = &d.cfg.card.pci;
            Ok(if generation {
                pci.max_link_gen
            } else {
                pci.max_link_width
            })
        })
    }
}

/// `nvmlDeviceGetCurrPcieLinkGeneration` (the link runs at its maximum).
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetCurrPcieLinkGeneration(
    device: DeviceHandle,
    link_gen: *mut c_uint,
) -> NvmlReturn {
    // SAFETY: NVML contract on `link_gen`.
    unsafe { link(device, link_gen, true) }
}

/// `nvmlDeviceGetMaxPcieLinkGeneration`.
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMaxPcieLinkGeneration(
    device: DeviceHandle,
    link_gen: *mut c_uint,
) -> NvmlReturn {
    // SAFETY: NVML contract on `link_gen`.
    unsafe { link(device, link_gen, true) }
}

/// `nvmlDeviceGetCurrPcieLinkWidth`.
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetCurrPcieLinkWidth(
    device: DeviceHandle,
    width: *mut c_uint,
) -> NvmlReturn {
    // SAFETY: NVML contract on `width`.
    unsafe { link(device, width, false) }
}

/// `nvmlDeviceGetMaxPcieLinkWidth`.
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMaxPcieLinkWidth(
    device: DeviceHandle,
    width: *mut c_uint,
) -> NvmlReturn {
    // SAFETY: NVML contract on `width`.
    unsafe { link(device, width, false) }
}

// ---- modes ----------------------------------------------------------------

/// `nvmlDeviceGetComputeMode` (a MIG device reports its parent's).
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetComputeMode(
    device: DeviceHandle,
    mode: *mut c_uint,
) -> NvmlReturn {
    // SAFETY: NVML contract on `mode`.
    unsafe { query(device, mode, |d| Ok(d.cfg.compute_mode.nvml_code())) }
}

/// `nvmlDeviceGetPersistenceMode`.
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetPersistenceMode(
    device: DeviceHandle,
    mode: *mut c_uint,
) -> NvmlReturn {
    // SAFETY: NVML contract on `mode`.
    unsafe { query(device, mode, |d| Ok(c_uint::from(d.cfg.persistence))) }
}

// ---- processes ------------------------------------------------------------

/// The processes a list shows for a device (a MIG handle: only its own).
fn listed_processes(d: &DeviceView<'_>, list: ProcessList) -> Vec<ListedProcess> {
    let instance = d.mig.as_ref().map(|m| (m.gi.id, m.ci.id));
    process::listed(d.state, list, instance, d.privileged)
}

/// Answers a process-list call the way NVML does: `*info_count` is the
/// caller's array size; a list longer than that is
/// `NVML_ERROR_INSUFFICIENT_SIZE` with `*info_count` set to the length
/// needed (so `*info_count == 0` with a null array asks for the count);
/// otherwise the entries are written and `*info_count` is their number.
///
/// # Safety
/// `info_count` is null or readable and writable; `infos` is null or valid
/// for writing `*info_count` entries.
unsafe fn process_list<T: Copy>(
    device: DeviceHandle,
    info_count: *mut c_uint,
    infos: *mut T,
    list: ProcessList,
    entry: fn(&ListedProcess) -> T,
) -> NvmlReturn {
    guard(|| {
        // SAFETY: forwarded contract on `info_count`.
        let capacity = unsafe { read_in(info_count)? } as usize;
        let entries: Vec<T> = with_device(device, |d| {
            Ok(listed_processes(d, list).iter().map(entry).collect())
        })?;
        let needed = c_uint::try_from(entries.len()).map_err(|_| ERROR_UNKNOWN)?;
        if entries.len() > capacity {
            // SAFETY: forwarded contract on `info_count`.
            unsafe { write_out(info_count, needed)? };
            return Err(ERROR_INSUFFICIENT_SIZE);
        }
        if !entries.is_empty() {
            // SAFETY: the caller declared room for `capacity >= len` entries.
            unsafe { write_array(infos, &entries)? };
        }
        // SAFETY: forwarded contract on `info_count`.
        unsafe { write_out(info_count, needed) }
    })
}

/// `usedGpuMemory`: bytes, or `NVML_VALUE_NOT_AVAILABLE`.
fn used_memory(p: &ListedProcess) -> c_ulonglong {
    p.used.unwrap_or(VALUE_NOT_AVAILABLE)
}

/// The first process struct: pid and memory only.
fn entry_v1(p: &ListedProcess) -> ProcessInfoV1 {
    ProcessInfoV1 {
        pid: p.pid,
        used_gpu_memory: used_memory(p),
    }
}

/// The v2 struct (also what the `_v3` calls fill): MIG ids, or
/// `0xFFFFFFFF` where MIG is off.
fn entry_v2(p: &ListedProcess) -> ProcessInfoV2 {
    ProcessInfoV2 {
        pid: p.pid,
        used_gpu_memory: used_memory(p),
        gpu_instance_id: p.gpu_instance.unwrap_or(NO_INSTANCE),
        compute_instance_id: p.compute_instance.unwrap_or(NO_INSTANCE),
    }
}

macro_rules! process_lists {
    ($($name:ident: $list:ident, $ty:ty, $entry:ident;)*) => {$(
        #[doc = concat!("`", stringify!($name), "`.")]
        ///
        /// # Safety
        /// See the module contract.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(
            device: DeviceHandle,
            info_count: *mut c_uint,
            infos: *mut $ty,
        ) -> NvmlReturn {
            // SAFETY: NVML contract: `info_count` is readable and writable,
            // `infos` has room for `*info_count` entries.
            unsafe { process_list(device, info_count, infos, ProcessList::$list, $entry) }
        }
    )*};
}

process_lists! {
    nvmlDeviceGetComputeRunningProcesses: Compute, ProcessInfoV1, entry_v1;
    nvmlDeviceGetComputeRunningProcesses_v2: Compute, ProcessInfoV2, entry_v2;
    nvmlDeviceGetComputeRunningProcesses_v3: Compute, ProcessInfoV2, entry_v2;
    nvmlDeviceGetGraphicsRunningProcesses: Graphics, ProcessInfoV1, entry_v1;
    nvmlDeviceGetGraphicsRunningProcesses_v2: Graphics, ProcessInfoV2, entry_v2;
    nvmlDeviceGetGraphicsRunningProcesses_v3: Graphics, ProcessInfoV2, entry_v2;
    nvmlDeviceGetMPSComputeRunningProcesses: Mps, ProcessInfoV1, entry_v1;
    nvmlDeviceGetMPSComputeRunningProcesses_v2: Mps, ProcessInfoV2, entry_v2;
    nvmlDeviceGetMPSComputeRunningProcesses_v3: Mps, ProcessInfoV2, entry_v2;
}

/// `nvmlDeviceGetProcessUtilization`: the samples newer than
/// `last_seen_time_stamp` (microseconds; 0 for the whole buffer). A null
/// array, or one smaller than the samples, is `NVML_ERROR_INSUFFICIENT_SIZE`
/// with the count needed; no newer sample is `NVML_ERROR_NOT_FOUND`; MIG
/// (parent or MIG device) is NOT_SUPPORTED, as NVIDIA documents.
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetProcessUtilization(
    device: DeviceHandle,
    utilization: *mut ProcessUtilizationSample,
    process_samples_count: *mut c_uint,
    last_seen_time_stamp: c_ulonglong,
) -> NvmlReturn {
    guard(|| {
        // SAFETY: NVML contract on `process_samples_count`.
        let capacity = unsafe { read_in(process_samples_count)? } as usize;
        let samples = with_device(device, |d| {
            if d.mig.is_some() || d.state.mig_current {
                return Err(ERROR_NOT_SUPPORTED);
            }
            let now = micros(SystemTime::now());
            Ok(process::util_samples(d.state, last_seen_time_stamp, now))
        })?;
        if samples.is_empty() {
            return Err(ERROR_NOT_FOUND);
        }
        let needed = c_uint::try_from(samples.len()).map_err(|_| ERROR_UNKNOWN)?;
        if utilization.is_null() || samples.len() > capacity {
            // SAFETY: NVML contract on `process_samples_count`.
            unsafe { write_out(process_samples_count, needed)? };
            return Err(ERROR_INSUFFICIENT_SIZE);
        }
        let out: Vec<ProcessUtilizationSample> = samples
            .iter()
            .map(|s| ProcessUtilizationSample {
                pid: s.pid,
                time_stamp: s.timestamp_us,
                sm_util: s.sm,
                mem_util: s.mem,
                enc_util: 0,
                dec_util: 0,
            })
            .collect();
        // SAFETY: the caller declared room for `capacity >= len` samples.
        unsafe {
            write_array(utilization, &out)?;
            write_out(process_samples_count, needed)
        }
    })
}
