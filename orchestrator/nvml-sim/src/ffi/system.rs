//! Library lifetime and system-wide queries: `nvmlInit*`, `nvmlShutdown`,
//! `nvmlErrorString`, driver / NVML / CUDA versions.

use std::ffi::{c_char, c_int, c_uint};

use super::support::{guard, init, shutdown, with_sim, write_c_string, write_out};
use super::types::*;

/// `nvmlInit_v2`: loads the host description named by `NVML_SIM_CONFIG`
/// on the first call; every call must be matched by `nvmlShutdown`.
#[unsafe(no_mangle)]
pub extern "C" fn nvmlInit_v2() -> NvmlReturn {
    guard(init)
}

/// `nvmlInit`: the pre-v2 entry point, same behaviour.
#[unsafe(no_mangle)]
pub extern "C" fn nvmlInit() -> NvmlReturn {
    guard(init)
}

/// `nvmlInitWithFlags`: flags (`NVML_INIT_FLAG_NO_GPUS`, `…_NO_ATTACH`)
/// change nothing for a simulator that always has its GPUs attached.
#[unsafe(no_mangle)]
pub extern "C" fn nvmlInitWithFlags(_flags: c_uint) -> NvmlReturn {
    guard(init)
}

/// `nvmlShutdown`.
#[unsafe(no_mangle)]
pub extern "C" fn nvmlShutdown() -> NvmlReturn {
    guard(shutdown)
}

/// `nvmlErrorString`: a static string; works without `nvmlInit`.
#[unsafe(no_mangle)]
pub extern "C" fn nvmlErrorString(result: NvmlReturn) -> *const c_char {
    error_string(result).as_ptr().cast()
}

/// `nvmlSystemGetDriverVersion`.
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlSystemGetDriverVersion(
    version: *mut c_char,
    length: c_uint,
) -> NvmlReturn {
    guard(|| {
        let text = with_sim(|sim| Ok(sim.config().driver_version.clone()))?;
        // SAFETY: NVML contract: `version` holds `length` bytes.
        unsafe { write_c_string(version, length, &text) }
    })
}

/// `nvmlSystemGetNVMLVersion`.
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlSystemGetNVMLVersion(
    version: *mut c_char,
    length: c_uint,
) -> NvmlReturn {
    guard(|| {
        let text = with_sim(|sim| Ok(sim.config().nvml_version.clone()))?;
        // SAFETY: NVML contract: `version` holds `length` bytes.
        unsafe { write_c_string(version, length, &text) }
    })
}

/// # Safety
/// `out` is null or writable.
unsafe fn cuda_version(out: *mut c_int) -> NvmlReturn {
    guard(|| {
        let value = with_sim(|sim| Ok(sim.config().cuda_driver_version))?;
        // SAFETY: forwarded contract: `out` is null or writable.
        unsafe { write_out(out, value) }
    })
}

/// `nvmlSystemGetCudaDriverVersion`, e.g. 12080 for CUDA 12.8.
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlSystemGetCudaDriverVersion(
    cuda_driver_version: *mut c_int,
) -> NvmlReturn {
    // SAFETY: NVML contract on `cuda_driver_version`.
    unsafe { cuda_version(cuda_driver_version) }
}

/// `nvmlSystemGetCudaDriverVersion_v2`.
///
/// # Safety
/// See the module contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlSystemGetCudaDriverVersion_v2(
    cuda_driver_version: *mut c_int,
) -> NvmlReturn {
    // SAFETY: NVML contract on `cuda_driver_version`.
    unsafe { cuda_version(cuda_driver_version) }
}
