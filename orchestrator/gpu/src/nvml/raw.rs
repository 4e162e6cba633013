//! The NVML calls `nvml-wrapper` does not wrap (GPU- and compute-instance
//! create, list, info, destroy; profile info by version; placements), made
//! through the crate's loaded symbol table, each behind a small safe method.
//!
//! Symbols are reached with `.as_ref()` so a library without one (an older
//! driver) gives a [`Failure`] instead of the panic the generated helper
//! methods would raise. Handles are opaque pointers the library hands out;
//! they are only ever passed back to it, never dereferenced here.

use std::ffi::{CStr, c_uint};
use std::mem;
use std::ptr;

use nvml_wrapper::error::NvmlError;
use nvml_wrapper_sys::bindings::{
    NvmlLib, nvmlComputeInstance_t, nvmlComputeInstanceInfo_t, nvmlComputeInstancePlacement_t,
    nvmlComputeInstanceProfileInfo_t, nvmlDevice_t, nvmlGpuInstance_t, nvmlGpuInstanceInfo_t,
    nvmlGpuInstancePlacement_t, nvmlGpuInstanceProfileInfo_t, nvmlGpuInstanceProfileInfo_v2_t,
    nvmlGpuInstanceProfileInfo_v3_t, nvmlReturn_t,
};

use crate::error::code;
use crate::naming;

/// `NVML_STRUCT_VERSION(GpuInstanceProfileInfo, 3)` from `nvml.h`.
const GI_PROFILE_INFO_V3: u32 = struct_version::<nvmlGpuInstanceProfileInfo_v3_t>(3);
/// `NVML_STRUCT_VERSION(GpuInstanceProfileInfo, 2)`.
const GI_PROFILE_INFO_V2: u32 = struct_version::<nvmlGpuInstanceProfileInfo_v2_t>(2);
/// `NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED`: the only engine profile.
const ENGINE_PROFILE_SHARED: u32 = 0;

const fn struct_version<T>(version: u32) -> u32 {
    // Structs here are a few hundred bytes: the size fits the low 24 bits.
    (size_of::<T>() as u32) | (version << 24)
}

/// One failed NVML call: which call, NVML's code (none when the library
/// lacks the symbol) and NVML's text for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub call: &'static str,
    pub code: Option<u32>,
    pub message: String,
}

impl Failure {
    pub fn is(&self, code: u32) -> bool {
        self.code == Some(code)
    }

    /// Whether the call is absent or the device does not offer it.
    pub fn is_unsupported(&self) -> bool {
        self.code.is_none() || self.is(code::NOT_SUPPORTED) || self.is(code::FUNCTION_NOT_FOUND)
    }

    fn missing(call: &'static str, error: &libloading::Error) -> Self {
        Failure {
            call,
            code: None,
            message: format!(
                "the NVML library does not export {call} ({error}); the driver is older than this call"
            ),
        }
    }

    /// From an error of a call `nvml-wrapper` made.
    pub fn wrapped(call: &'static str, error: NvmlError) -> Self {
        let message = error.to_string();
        let code = match error {
            NvmlError::FailedToLoadSymbol(_) | NvmlError::LibloadingError(_) => None,
            NvmlError::Utf8Error(_)
            | NvmlError::NulError(_)
            | NvmlError::StringTooLong { .. }
            | NvmlError::IncorrectBits(_)
            | NvmlError::SetReleaseFailed
            | NvmlError::GetPciInfoFailed
            | NvmlError::PciInfoToCFailed => Some(code::UNKNOWN),
            other => Some(nvmlReturn_t::from(other)),
        };
        Failure {
            call,
            code,
            message,
        }
    }
}

/// A GPU-instance profile as the library describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GiProfileRaw {
    pub id: u32,
    pub slices: u32,
    pub instances: u32,
    pub memory_mib: u64,
    /// From the v2/v3 struct; `None` when only the v1 call answered.
    pub name: Option<String>,
}

impl GiProfileRaw {
    /// NVIDIA's name for the profile.
    pub fn name(&self, index: u32, board_memory_bytes: u64) -> String {
        self.name.clone().unwrap_or_else(|| {
            naming::derive(index, self.slices, self.memory_mib, board_memory_bytes)
        })
    }
}

/// A compute-instance profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CiProfileRaw {
    pub id: u32,
    pub slices: u32,
    pub instances: u32,
}

/// What `nvmlGpuInstanceGetInfo` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GiInfoRaw {
    pub id: u32,
    pub profile_id: u32,
    pub start: u32,
    pub size: u32,
}

/// A placement: start and size in memory slices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Placement {
    pub start: u32,
    pub size: u32,
}

/// The raw calls, on the library `nvml-wrapper` loaded.
pub(crate) struct Raw<'a> {
    lib: &'a NvmlLib,
}

/// Looks a symbol up without panicking when it is missing.
macro_rules! sym {
    ($self:ident . $name:ident) => {
        $self
            .lib
            .$name
            .as_ref()
            .map_err(|e| Failure::missing(stringify!($name), e))?
    };
}

impl<'a> Raw<'a> {
    pub fn new(lib: &'a NvmlLib) -> Self {
        Raw { lib }
    }

    /// NVML's text for a return code, or a generic one when the library
    /// cannot say.
    pub fn error_string(&self, code: u32) -> String {
        if let Ok(f) = self.lib.nvmlErrorString.as_ref() {
            // SAFETY: nvmlErrorString takes any code and returns a pointer to
            // a static NUL-terminated string (or NULL, checked below).
            let text = unsafe { f(code) };
            if !text.is_null() {
                // SAFETY: non-null, NUL-terminated and static per NVML's contract.
                return unsafe { CStr::from_ptr(text) }
                    .to_string_lossy()
                    .into_owned();
            }
        }
        NvmlError::from(code).to_string()
    }

    fn check(&self, call: &'static str, code: nvmlReturn_t) -> Result<(), Failure> {
        if code == code::SUCCESS {
            Ok(())
        } else {
            Err(Failure {
                call,
                code: Some(code),
                message: self.error_string(code),
            })
        }
    }

    /// GPU-instance profile facts by profile *index*
    /// (`NVML_GPU_INSTANCE_PROFILE_*`): the v3 struct, else v2, else v1.
    pub fn gi_profile(&self, dev: nvmlDevice_t, index: u32) -> Result<GiProfileRaw, Failure> {
        match self.gi_profile_v3(dev, index) {
            Err(f) if f.code.is_none() || f.is(code::ARGUMENT_VERSION_MISMATCH) => {}
            other => return other,
        }
        match self.gi_profile_v2(dev, index) {
            Err(f) if f.code.is_none() || f.is(code::ARGUMENT_VERSION_MISMATCH) => {}
            other => return other,
        }
        self.gi_profile_v1(dev, index)
    }

    fn gi_profile_v3(&self, dev: nvmlDevice_t, index: u32) -> Result<GiProfileRaw, Failure> {
        let f = sym!(self.nvmlDeviceGetGpuInstanceProfileInfoV);
        // SAFETY: a plain C struct of integers and a char array: all zeroes is valid.
        let mut info: nvmlGpuInstanceProfileInfo_v3_t = unsafe { mem::zeroed() };
        info.version = GI_PROFILE_INFO_V3;
        // SAFETY: the V call takes any versioned profile-info struct through
        // a v2 pointer and writes the layout its `version` names; `info` is
        // a v3 struct with the v3 version, so the write stays inside it.
        let code = unsafe { f(dev, index, (&raw mut info).cast()) };
        self.check("nvmlDeviceGetGpuInstanceProfileInfoV", code)?;
        Ok(GiProfileRaw {
            id: info.id,
            slices: info.sliceCount,
            instances: info.instanceCount,
            memory_mib: info.memorySizeMB,
            name: naming::from_struct_name(&info.name),
        })
    }

    fn gi_profile_v2(&self, dev: nvmlDevice_t, index: u32) -> Result<GiProfileRaw, Failure> {
        let f = sym!(self.nvmlDeviceGetGpuInstanceProfileInfoV);
        // SAFETY: plain C struct; all zeroes is valid.
        let mut info: nvmlGpuInstanceProfileInfo_v2_t = unsafe { mem::zeroed() };
        info.version = GI_PROFILE_INFO_V2;
        // SAFETY: a v2 struct with the v2 version through the v2 pointer type.
        let code = unsafe { f(dev, index, &mut info) };
        self.check("nvmlDeviceGetGpuInstanceProfileInfoV", code)?;
        Ok(GiProfileRaw {
            id: info.id,
            slices: info.sliceCount,
            instances: info.instanceCount,
            memory_mib: info.memorySizeMB,
            name: naming::from_struct_name(&info.name),
        })
    }

    fn gi_profile_v1(&self, dev: nvmlDevice_t, index: u32) -> Result<GiProfileRaw, Failure> {
        let f = sym!(self.nvmlDeviceGetGpuInstanceProfileInfo);
        // SAFETY: plain C struct; all zeroes is valid.
        let mut info: nvmlGpuInstanceProfileInfo_t = unsafe { mem::zeroed() };
        // SAFETY: valid handle from this library and an out-pointer to the v1 struct.
        let code = unsafe { f(dev, index, &mut info) };
        self.check("nvmlDeviceGetGpuInstanceProfileInfo", code)?;
        Ok(GiProfileRaw {
            id: info.id,
            slices: info.sliceCount,
            instances: info.instanceCount,
            memory_mib: info.memorySizeMB,
            name: None,
        })
    }

    /// Possible placements of a profile (by id). `nvml-wrapper`'s own
    /// `possible_placements()` never fills its vector, hence the raw call.
    pub fn placements(
        &self,
        dev: nvmlDevice_t,
        profile_id: u32,
    ) -> Result<Vec<Placement>, Failure> {
        const CALL: &str = "nvmlDeviceGetGpuInstancePossiblePlacements_v2";
        let f = sym!(self.nvmlDeviceGetGpuInstancePossiblePlacements_v2);
        let mut count: c_uint = 0;
        // SAFETY: a null array asks for the number of placements only.
        let code = unsafe { f(dev, profile_id, ptr::null_mut(), &mut count) };
        self.check(CALL, code)?;
        // Room for a placement appearing between the two calls.
        let mut buf = vec![nvmlGpuInstancePlacement_t { start: 0, size: 0 }; count as usize + 1];
        let mut count = c_uint::try_from(buf.len()).unwrap_or(c_uint::MAX);
        // SAFETY: `buf` holds `count` placements.
        let code = unsafe { f(dev, profile_id, buf.as_mut_ptr(), &mut count) };
        self.check(CALL, code)?;
        buf.truncate(count as usize);
        Ok(buf
            .iter()
            .map(|p| Placement {
                start: p.start,
                size: p.size,
            })
            .collect())
    }

    /// The GPU instances of one profile (by id).
    pub fn gpu_instances(
        &self,
        dev: nvmlDevice_t,
        profile_id: u32,
        capacity: u32,
    ) -> Result<Vec<nvmlGpuInstance_t>, Failure> {
        let f = sym!(self.nvmlDeviceGetGpuInstances);
        // One spare slot so a library that counts differently cannot overrun.
        let mut buf: Vec<nvmlGpuInstance_t> = vec![ptr::null_mut(); capacity as usize + 1];
        let mut count: c_uint = 0;
        // SAFETY: `buf` holds more handles than the profile's instance count,
        // which is what NVML requires of the array.
        let code = unsafe { f(dev, profile_id, buf.as_mut_ptr(), &mut count) };
        self.check("nvmlDeviceGetGpuInstances", code)?;
        buf.truncate((count as usize).min(buf.len()));
        Ok(buf)
    }

    pub fn gi_info(&self, gi: nvmlGpuInstance_t) -> Result<GiInfoRaw, Failure> {
        let f = sym!(self.nvmlGpuInstanceGetInfo);
        let mut info = nvmlGpuInstanceInfo_t {
            device: ptr::null_mut(),
            id: 0,
            profileId: 0,
            placement: nvmlGpuInstancePlacement_t { start: 0, size: 0 },
        };
        // SAFETY: handle from this library and an out-pointer to the struct.
        let code = unsafe { f(gi, &mut info) };
        self.check("nvmlGpuInstanceGetInfo", code)?;
        Ok(GiInfoRaw {
            id: info.id,
            profile_id: info.profileId,
            start: info.placement.start,
            size: info.placement.size,
        })
    }

    pub fn gi_by_id(&self, dev: nvmlDevice_t, id: u32) -> Result<nvmlGpuInstance_t, Failure> {
        let f = sym!(self.nvmlDeviceGetGpuInstanceById);
        let mut gi: nvmlGpuInstance_t = ptr::null_mut();
        // SAFETY: handle from this library and an out-pointer.
        let code = unsafe { f(dev, id, &mut gi) };
        self.check("nvmlDeviceGetGpuInstanceById", code)?;
        Ok(gi)
    }

    pub fn create_gi(
        &self,
        dev: nvmlDevice_t,
        profile_id: u32,
        placement: Placement,
    ) -> Result<nvmlGpuInstance_t, Failure> {
        let f = sym!(self.nvmlDeviceCreateGpuInstanceWithPlacement);
        let placement = nvmlGpuInstancePlacement_t {
            start: placement.start,
            size: placement.size,
        };
        let mut gi: nvmlGpuInstance_t = ptr::null_mut();
        // SAFETY: handle from this library, a placement that outlives the
        // call, and an out-pointer.
        let code = unsafe { f(dev, profile_id, &placement, &mut gi) };
        self.check("nvmlDeviceCreateGpuInstanceWithPlacement", code)?;
        Ok(gi)
    }

    pub fn destroy_gi(&self, gi: nvmlGpuInstance_t) -> Result<(), Failure> {
        let f = sym!(self.nvmlGpuInstanceDestroy);
        // SAFETY: handle from this library.
        let code = unsafe { f(gi) };
        self.check("nvmlGpuInstanceDestroy", code)
    }

    /// Compute-instance profile facts by *index* inside a GPU instance.
    pub fn ci_profile(&self, gi: nvmlGpuInstance_t, index: u32) -> Result<CiProfileRaw, Failure> {
        let f = sym!(self.nvmlGpuInstanceGetComputeInstanceProfileInfo);
        // SAFETY: plain C struct; all zeroes is valid.
        let mut info: nvmlComputeInstanceProfileInfo_t = unsafe { mem::zeroed() };
        // SAFETY: handle from this library and an out-pointer to the v1
        // struct, which every MIG-capable driver answers.
        let code = unsafe { f(gi, index, ENGINE_PROFILE_SHARED, &mut info) };
        self.check("nvmlGpuInstanceGetComputeInstanceProfileInfo", code)?;
        Ok(CiProfileRaw {
            id: info.id,
            slices: info.sliceCount,
            instances: info.instanceCount,
        })
    }

    pub fn compute_instances(
        &self,
        gi: nvmlGpuInstance_t,
        profile_id: u32,
        capacity: u32,
    ) -> Result<Vec<nvmlComputeInstance_t>, Failure> {
        let f = sym!(self.nvmlGpuInstanceGetComputeInstances);
        let mut buf: Vec<nvmlComputeInstance_t> = vec![ptr::null_mut(); capacity as usize + 1];
        let mut count: c_uint = 0;
        // SAFETY: `buf` holds more handles than the profile's instance count.
        let code = unsafe { f(gi, profile_id, buf.as_mut_ptr(), &mut count) };
        self.check("nvmlGpuInstanceGetComputeInstances", code)?;
        buf.truncate((count as usize).min(buf.len()));
        Ok(buf)
    }

    /// Compute-instance id.
    pub fn ci_id(&self, ci: nvmlComputeInstance_t) -> Result<u32, Failure> {
        let f = sym!(self.nvmlComputeInstanceGetInfo_v2);
        let mut info = nvmlComputeInstanceInfo_t {
            device: ptr::null_mut(),
            gpuInstance: ptr::null_mut(),
            id: 0,
            profileId: 0,
            placement: nvmlComputeInstancePlacement_t { start: 0, size: 0 },
        };
        // SAFETY: handle from this library and an out-pointer to the struct.
        let code = unsafe { f(ci, &mut info) };
        self.check("nvmlComputeInstanceGetInfo_v2", code)?;
        Ok(info.id)
    }

    pub fn create_ci(
        &self,
        gi: nvmlGpuInstance_t,
        profile_id: u32,
    ) -> Result<nvmlComputeInstance_t, Failure> {
        let f = sym!(self.nvmlGpuInstanceCreateComputeInstance);
        let mut ci: nvmlComputeInstance_t = ptr::null_mut();
        // SAFETY: handle from this library and an out-pointer.
        let code = unsafe { f(gi, profile_id, &mut ci) };
        self.check("nvmlGpuInstanceCreateComputeInstance", code)?;
        Ok(ci)
    }

    pub fn destroy_ci(&self, ci: nvmlComputeInstance_t) -> Result<(), Failure> {
        let f = sym!(self.nvmlComputeInstanceDestroy);
        // SAFETY: handle from this library.
        let code = unsafe { f(ci) };
        self.check("nvmlComputeInstanceDestroy", code)
    }

    /// GPU- and compute-instance ids of a MIG device handle.
    pub fn mig_ids(&self, mig: nvmlDevice_t) -> Result<(u32, u32), Failure> {
        let gi_fn = sym!(self.nvmlDeviceGetGpuInstanceId);
        let ci_fn = sym!(self.nvmlDeviceGetComputeInstanceId);
        let (mut gi, mut ci): (c_uint, c_uint) = (0, 0);
        // SAFETY: handle from this library and an out-pointer.
        let code = unsafe { gi_fn(mig, &mut gi) };
        self.check("nvmlDeviceGetGpuInstanceId", code)?;
        // SAFETY: as above.
        let code = unsafe { ci_fn(mig, &mut ci) };
        self.check("nvmlDeviceGetComputeInstanceId", code)?;
        Ok((gi, ci))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_versions_follow_nvml_h() {
        // The values nvml.h's NVML_STRUCT_VERSION macro gives on x86_64.
        assert_eq!(GI_PROFILE_INFO_V3, 0x0300_0098);
        assert_eq!(GI_PROFILE_INFO_V2, 0x0200_0098);
    }

    #[test]
    fn wrapper_errors_keep_their_codes() {
        let f = Failure::wrapped("x", NvmlError::GpuLost);
        assert!(f.is(code::GPU_IS_LOST));
        let f = Failure::wrapped("x", NvmlError::FailedToLoadSymbol("gone".into()));
        assert_eq!(f.code, None);
        assert!(f.is_unsupported());
        let f = Failure::wrapped("x", NvmlError::UnexpectedVariant(23));
        assert!(f.is(code::INSUFFICIENT_RESOURCES));
    }
}
