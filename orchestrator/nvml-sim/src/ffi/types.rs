//! The NVML C types and constants the exported functions read and write,
//! laid out exactly as nvml.h declares them (checked against the bindgen
//! output of `nvml-wrapper-sys` in this module's tests).

use std::ffi::{c_char, c_uint, c_ulonglong};

/// `nvmlReturn_t`.
pub type NvmlReturn = c_uint;

/// `NVML_SUCCESS`.
pub const SUCCESS: NvmlReturn = 0;
/// `NVML_ERROR_UNINITIALIZED`.
pub const ERROR_UNINITIALIZED: NvmlReturn = 1;
/// `NVML_ERROR_INVALID_ARGUMENT`.
pub const ERROR_INVALID_ARGUMENT: NvmlReturn = 2;
/// `NVML_ERROR_NOT_SUPPORTED`.
pub const ERROR_NOT_SUPPORTED: NvmlReturn = 3;
/// `NVML_ERROR_NOT_FOUND`.
pub const ERROR_NOT_FOUND: NvmlReturn = 6;
/// `NVML_ERROR_INSUFFICIENT_SIZE`.
pub const ERROR_INSUFFICIENT_SIZE: NvmlReturn = 7;
/// `NVML_ERROR_DRIVER_NOT_LOADED`.
pub const ERROR_DRIVER_NOT_LOADED: NvmlReturn = 9;
/// `NVML_ERROR_GPU_IS_LOST`.
pub const ERROR_GPU_IS_LOST: NvmlReturn = 15;
/// `NVML_ERROR_RESET_REQUIRED`.
pub const ERROR_RESET_REQUIRED: NvmlReturn = 16;
/// `NVML_ERROR_IN_USE`.
pub const ERROR_IN_USE: NvmlReturn = 19;
/// `NVML_ERROR_INSUFFICIENT_RESOURCES`.
pub const ERROR_INSUFFICIENT_RESOURCES: NvmlReturn = 23;
/// `NVML_ERROR_ARGUMENT_VERSION_MISMATCH`.
pub const ERROR_ARGUMENT_VERSION_MISMATCH: NvmlReturn = 25;
/// `NVML_ERROR_UNKNOWN`.
pub const ERROR_UNKNOWN: NvmlReturn = 999;

/// `nvmlErrorString` texts, as the NVIDIA library returns them.
pub fn error_string(code: NvmlReturn) -> &'static [u8] {
    match code {
        0 => b"Success\0",
        1 => b"Uninitialized\0",
        2 => b"Invalid Argument\0",
        3 => b"Not Supported\0",
        4 => b"Insufficient Permissions\0",
        5 => b"Already Initialized\0",
        6 => b"Not Found\0",
        7 => b"Insufficient Size\0",
        8 => b"Insufficient External Power\0",
        9 => b"Driver Not Loaded\0",
        10 => b"Timeout\0",
        11 => b"Interrupt request issue\0",
        12 => b"NVML Shared Library Not Found\0",
        13 => b"Function Not Found\0",
        14 => b"Corrupted infoROM\0",
        15 => b"GPU is lost\0",
        16 => b"GPU requires restart\0",
        17 => b"The operating system has blocked the request.\0",
        18 => b"RM has detected an NVML/RM version mismatch.\0",
        19 => b"In use by another client\0",
        20 => b"Insufficient Memory\0",
        21 => b"No data\0",
        22 => b"The requested vgpu operation is not available on target device, becasue ECC is enabled\0",
        23 => b"Insufficient resources for request\0",
        24 => b"Frequency not supported\0",
        25 => b"Argument version mismatch\0",
        26 => b"Deprecated\0",
        27 => b"Not Ready\0",
        28 => b"GPU not found\0",
        29 => b"Invalid state\0",
        _ => b"Unknown Error\0",
    }
}

/// `NVML_STRUCT_VERSION(name, ver)`: the struct size in the low bits, the
/// version in the top byte.
pub const fn struct_version<T>(version: u32) -> u32 {
    size_of::<T>() as u32 | (version << 24)
}

/// `NVML_DEVICE_MIG_ENABLE`.
pub const MIG_ENABLE: c_uint = 1;
/// `NVML_DEVICE_MIG_DISABLE`.
pub const MIG_DISABLE: c_uint = 0;
/// `NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED`: the only engine profile.
pub const CI_ENGINE_PROFILE_SHARED: c_uint = 0;

/// Opaque target of `nvmlDevice_t`.
#[repr(C)]
#[derive(Debug)]
pub struct DeviceSt {
    _opaque: [u8; 0],
}
/// `nvmlDevice_t`.
pub type DeviceHandle = *mut DeviceSt;

/// Opaque target of `nvmlGpuInstance_t`.
#[repr(C)]
#[derive(Debug)]
pub struct GpuInstanceSt {
    _opaque: [u8; 0],
}
/// `nvmlGpuInstance_t`.
pub type GpuInstanceHandle = *mut GpuInstanceSt;

/// Opaque target of `nvmlComputeInstance_t`.
#[repr(C)]
#[derive(Debug)]
pub struct ComputeInstanceSt {
    _opaque: [u8; 0],
}
/// `nvmlComputeInstance_t`.
pub type ComputeInstanceHandle = *mut ComputeInstanceSt;

/// `nvmlMemory_t`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub total: c_ulonglong,
    pub free: c_ulonglong,
    pub used: c_ulonglong,
}

/// `nvmlMemory_v2_t`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryV2 {
    pub version: c_uint,
    pub total: c_ulonglong,
    pub reserved: c_ulonglong,
    pub free: c_ulonglong,
    pub used: c_ulonglong,
}

/// `nvmlMemory_v2`.
pub const MEMORY_V2: u32 = struct_version::<MemoryV2>(2);

/// `nvmlUtilization_t`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Utilization {
    pub gpu: c_uint,
    pub memory: c_uint,
}

/// `nvmlPciInfo_t` (the v2/v3 layout).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct PciInfo {
    pub bus_id_legacy: [c_char; 16],
    pub domain: c_uint,
    pub bus: c_uint,
    pub device: c_uint,
    pub pci_device_id: c_uint,
    pub pci_sub_system_id: c_uint,
    pub bus_id: [c_char; 32],
}

/// The first `nvmlPciInfo_t` layout, still what `nvmlDeviceGetPciInfo` fills.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct PciInfoV1 {
    pub bus_id: [c_char; 16],
    pub domain: c_uint,
    pub bus: c_uint,
    pub device: c_uint,
    pub pci_device_id: c_uint,
    pub pci_sub_system_id: c_uint,
    pub reserved: [c_uint; 4],
}

/// `nvmlGpuInstancePlacement_t`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GpuInstancePlacement {
    pub start: c_uint,
    pub size: c_uint,
}

/// `nvmlComputeInstancePlacement_t`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ComputeInstancePlacement {
    pub start: c_uint,
    pub size: c_uint,
}

/// `nvmlGpuInstanceProfileInfo_t`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct GpuInstanceProfileInfo {
    pub id: c_uint,
    pub is_p2p_supported: c_uint,
    pub slice_count: c_uint,
    pub instance_count: c_uint,
    pub multiprocessor_count: c_uint,
    pub copy_engine_count: c_uint,
    pub decoder_count: c_uint,
    pub encoder_count: c_uint,
    pub jpeg_count: c_uint,
    pub ofa_count: c_uint,
    pub memory_size_mb: c_ulonglong,
}

/// `nvmlGpuInstanceProfileInfo_v2_t`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct GpuInstanceProfileInfoV2 {
    pub version: c_uint,
    pub id: c_uint,
    pub is_p2p_supported: c_uint,
    pub slice_count: c_uint,
    pub instance_count: c_uint,
    pub multiprocessor_count: c_uint,
    pub copy_engine_count: c_uint,
    pub decoder_count: c_uint,
    pub encoder_count: c_uint,
    pub jpeg_count: c_uint,
    pub ofa_count: c_uint,
    pub memory_size_mb: c_ulonglong,
    pub name: [c_char; 96],
}

/// `nvmlGpuInstanceProfileInfo_v3_t`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct GpuInstanceProfileInfoV3 {
    pub version: c_uint,
    pub id: c_uint,
    pub slice_count: c_uint,
    pub instance_count: c_uint,
    pub multiprocessor_count: c_uint,
    pub copy_engine_count: c_uint,
    pub decoder_count: c_uint,
    pub encoder_count: c_uint,
    pub jpeg_count: c_uint,
    pub ofa_count: c_uint,
    pub memory_size_mb: c_ulonglong,
    pub name: [c_char; 96],
    pub capabilities: c_uint,
}

/// `nvmlGpuInstanceProfileInfo_v2`.
pub const GPU_INSTANCE_PROFILE_INFO_V2: u32 = struct_version::<GpuInstanceProfileInfoV2>(2);
/// `nvmlGpuInstanceProfileInfo_v3`.
pub const GPU_INSTANCE_PROFILE_INFO_V3: u32 = struct_version::<GpuInstanceProfileInfoV3>(3);

/// `nvmlGpuInstanceInfo_t`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct GpuInstanceInfo {
    pub device: DeviceHandle,
    pub id: c_uint,
    pub profile_id: c_uint,
    pub placement: GpuInstancePlacement,
}

/// `nvmlComputeInstanceProfileInfo_t`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ComputeInstanceProfileInfo {
    pub id: c_uint,
    pub slice_count: c_uint,
    pub instance_count: c_uint,
    pub multiprocessor_count: c_uint,
    pub shared_copy_engine_count: c_uint,
    pub shared_decoder_count: c_uint,
    pub shared_encoder_count: c_uint,
    pub shared_jpeg_count: c_uint,
    pub shared_ofa_count: c_uint,
}

/// `nvmlComputeInstanceProfileInfo_v2_t`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ComputeInstanceProfileInfoV2 {
    pub version: c_uint,
    pub id: c_uint,
    pub slice_count: c_uint,
    pub instance_count: c_uint,
    pub multiprocessor_count: c_uint,
    pub shared_copy_engine_count: c_uint,
    pub shared_decoder_count: c_uint,
    pub shared_encoder_count: c_uint,
    pub shared_jpeg_count: c_uint,
    pub shared_ofa_count: c_uint,
    pub name: [c_char; 96],
}

/// `nvmlComputeInstanceProfileInfo_v3_t`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ComputeInstanceProfileInfoV3 {
    pub version: c_uint,
    pub id: c_uint,
    pub slice_count: c_uint,
    pub instance_count: c_uint,
    pub multiprocessor_count: c_uint,
    pub shared_copy_engine_count: c_uint,
    pub shared_decoder_count: c_uint,
    pub shared_encoder_count: c_uint,
    pub shared_jpeg_count: c_uint,
    pub shared_ofa_count: c_uint,
    pub name: [c_char; 96],
    pub capabilities: c_uint,
}

/// `nvmlComputeInstanceProfileInfo_v2`.
pub const COMPUTE_INSTANCE_PROFILE_INFO_V2: u32 = struct_version::<ComputeInstanceProfileInfoV2>(2);
/// `nvmlComputeInstanceProfileInfo_v3`.
pub const COMPUTE_INSTANCE_PROFILE_INFO_V3: u32 = struct_version::<ComputeInstanceProfileInfoV3>(3);

/// `nvmlComputeInstanceInfo_t` (what `nvmlComputeInstanceGetInfo_v2` fills).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ComputeInstanceInfo {
    pub device: DeviceHandle,
    pub gpu_instance: GpuInstanceHandle,
    pub id: c_uint,
    pub profile_id: c_uint,
    pub placement: ComputeInstancePlacement,
}

/// The first `nvmlComputeInstanceInfo_t`, without the placement, still what
/// the unversioned `nvmlComputeInstanceGetInfo` fills.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ComputeInstanceInfoV1 {
    pub device: DeviceHandle,
    pub gpu_instance: GpuInstanceHandle,
    pub id: c_uint,
    pub profile_id: c_uint,
}

/// `nvmlDeviceAttributes_t`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct DeviceAttributes {
    pub multiprocessor_count: c_uint,
    pub shared_copy_engine_count: c_uint,
    pub shared_decoder_count: c_uint,
    pub shared_encoder_count: c_uint,
    pub shared_jpeg_count: c_uint,
    pub shared_ofa_count: c_uint,
    pub gpu_instance_slice_count: c_uint,
    pub compute_instance_slice_count: c_uint,
    pub memory_size_mb: c_ulonglong,
}

/// `NVML_VALUE_NOT_AVAILABLE` as an unsigned long long (`(unsigned long long)-1`).
pub const VALUE_NOT_AVAILABLE: c_ulonglong = c_ulonglong::MAX;

/// What `gpuInstanceId` / `computeInstanceId` hold when MIG is off.
pub const NO_INSTANCE: c_uint = 0xFFFF_FFFF;

/// `nvmlProcessInfo_v1_t`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessInfoV1 {
    pub pid: c_uint,
    pub used_gpu_memory: c_ulonglong,
}

/// `nvmlProcessInfo_v2_t`, which is also `nvmlProcessInfo_t` (the `_v3` calls).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessInfoV2 {
    pub pid: c_uint,
    pub used_gpu_memory: c_ulonglong,
    pub gpu_instance_id: c_uint,
    pub compute_instance_id: c_uint,
}

/// `nvmlProcessUtilizationSample_t`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessUtilizationSample {
    pub pid: c_uint,
    pub time_stamp: c_ulonglong,
    pub sm_util: c_uint,
    pub mem_util: c_uint,
    pub enc_util: c_uint,
    pub dec_util: c_uint,
}

/// Copies `text` into a fixed C char array, NUL-terminated and truncated to fit.
pub fn c_array<const N: usize>(text: &str) -> [c_char; N] {
    let mut out = [0 as c_char; N];
    for (slot, byte) in out.iter_mut().zip(text.bytes().take(N.saturating_sub(1))) {
        *slot = byte as c_char;
    }
    out
}

#[cfg(test)]
mod layout_tests {
    use std::mem::{align_of, offset_of, size_of};

    use nvml_wrapper_sys::bindings as b;

    use super::*;

    macro_rules! same_layout {
        ($ours:ty, $theirs:ty, [$($ours_field:ident = $theirs_field:ident),* $(,)?]) => {{
            assert_eq!(size_of::<$ours>(), size_of::<$theirs>(), "size of {}", stringify!($ours));
            assert_eq!(align_of::<$ours>(), align_of::<$theirs>(), "align of {}", stringify!($ours));
            $(
                assert_eq!(
                    offset_of!($ours, $ours_field),
                    offset_of!($theirs, $theirs_field),
                    "offset of {}.{}", stringify!($ours), stringify!($ours_field)
                );
            )*
        }};
    }

    #[test]
    fn structs_match_nvml_h() {
        same_layout!(
            Memory,
            b::nvmlMemory_t,
            [total = total, free = free, used = used]
        );
        same_layout!(
            MemoryV2,
            b::nvmlMemory_v2_t,
            [
                version = version,
                total = total,
                reserved = reserved,
                free = free,
                used = used
            ]
        );
        same_layout!(
            Utilization,
            b::nvmlUtilization_t,
            [gpu = gpu, memory = memory]
        );
        same_layout!(
            PciInfo,
            b::nvmlPciInfo_t,
            [
                bus_id_legacy = busIdLegacy,
                domain = domain,
                bus = bus,
                device = device,
                pci_device_id = pciDeviceId,
                pci_sub_system_id = pciSubSystemId,
                bus_id = busId,
            ]
        );
        same_layout!(
            GpuInstancePlacement,
            b::nvmlGpuInstancePlacement_t,
            [start = start, size = size]
        );
        same_layout!(
            ComputeInstancePlacement,
            b::nvmlComputeInstancePlacement_t,
            [start = start, size = size]
        );
        same_layout!(
            GpuInstanceProfileInfo,
            b::nvmlGpuInstanceProfileInfo_t,
            [
                id = id,
                is_p2p_supported = isP2pSupported,
                slice_count = sliceCount,
                instance_count = instanceCount,
                multiprocessor_count = multiprocessorCount,
                copy_engine_count = copyEngineCount,
                decoder_count = decoderCount,
                encoder_count = encoderCount,
                jpeg_count = jpegCount,
                ofa_count = ofaCount,
                memory_size_mb = memorySizeMB,
            ]
        );
        same_layout!(
            GpuInstanceProfileInfoV2,
            b::nvmlGpuInstanceProfileInfo_v2_t,
            [
                version = version,
                id = id,
                is_p2p_supported = isP2pSupported,
                slice_count = sliceCount,
                instance_count = instanceCount,
                multiprocessor_count = multiprocessorCount,
                copy_engine_count = copyEngineCount,
                decoder_count = decoderCount,
                encoder_count = encoderCount,
                jpeg_count = jpegCount,
                ofa_count = ofaCount,
                memory_size_mb = memorySizeMB,
                name = name,
            ]
        );
        same_layout!(
            GpuInstanceProfileInfoV3,
            b::nvmlGpuInstanceProfileInfo_v3_t,
            [
                version = version,
                id = id,
                slice_count = sliceCount,
                instance_count = instanceCount,
                multiprocessor_count = multiprocessorCount,
                copy_engine_count = copyEngineCount,
                decoder_count = decoderCount,
                encoder_count = encoderCount,
                jpeg_count = jpegCount,
                ofa_count = ofaCount,
                memory_size_mb = memorySizeMB,
                name = name,
                capabilities = capabilities,
            ]
        );
        same_layout!(
            GpuInstanceInfo,
            b::nvmlGpuInstanceInfo_t,
            [
                device = device,
                id = id,
                profile_id = profileId,
                placement = placement,
            ]
        );
        same_layout!(
            ComputeInstanceProfileInfo,
            b::nvmlComputeInstanceProfileInfo_t,
            [
                id = id,
                slice_count = sliceCount,
                instance_count = instanceCount,
                multiprocessor_count = multiprocessorCount,
                shared_copy_engine_count = sharedCopyEngineCount,
                shared_decoder_count = sharedDecoderCount,
                shared_encoder_count = sharedEncoderCount,
                shared_jpeg_count = sharedJpegCount,
                shared_ofa_count = sharedOfaCount,
            ]
        );
        same_layout!(
            ComputeInstanceProfileInfoV2,
            b::nvmlComputeInstanceProfileInfo_v2_t,
            [
                version = version,
                id = id,
                slice_count = sliceCount,
                instance_count = instanceCount,
                multiprocessor_count = multiprocessorCount,
                shared_copy_engine_count = sharedCopyEngineCount,
                shared_decoder_count = sharedDecoderCount,
                shared_encoder_count = sharedEncoderCount,
                shared_jpeg_count = sharedJpegCount,
                shared_ofa_count = sharedOfaCount,
                name = name,
            ]
        );
        same_layout!(
            ComputeInstanceProfileInfoV3,
            b::nvmlComputeInstanceProfileInfo_v3_t,
            [
                version = version,
                id = id,
                slice_count = sliceCount,
                instance_count = instanceCount,
                multiprocessor_count = multiprocessorCount,
                shared_copy_engine_count = sharedCopyEngineCount,
                shared_decoder_count = sharedDecoderCount,
                shared_encoder_count = sharedEncoderCount,
                shared_jpeg_count = sharedJpegCount,
                shared_ofa_count = sharedOfaCount,
                name = name,
                capabilities = capabilities,
            ]
        );
        same_layout!(
            ComputeInstanceInfo,
            b::nvmlComputeInstanceInfo_t,
            [
                device = device,
                gpu_instance = gpuInstance,
                id = id,
                profile_id = profileId,
                placement = placement,
            ]
        );
        same_layout!(
            DeviceAttributes,
            b::nvmlDeviceAttributes_t,
            [
                multiprocessor_count = multiprocessorCount,
                shared_copy_engine_count = sharedCopyEngineCount,
                shared_decoder_count = sharedDecoderCount,
                shared_encoder_count = sharedEncoderCount,
                shared_jpeg_count = sharedJpegCount,
                shared_ofa_count = sharedOfaCount,
                gpu_instance_slice_count = gpuInstanceSliceCount,
                compute_instance_slice_count = computeInstanceSliceCount,
                memory_size_mb = memorySizeMB,
            ]
        );
    }

    #[test]
    fn process_structs_match_nvml_h() {
        same_layout!(
            ProcessInfoV1,
            b::nvmlProcessInfo_v1_t,
            [pid = pid, used_gpu_memory = usedGpuMemory]
        );
        same_layout!(
            ProcessInfoV2,
            b::nvmlProcessInfo_v2_t,
            [
                pid = pid,
                used_gpu_memory = usedGpuMemory,
                gpu_instance_id = gpuInstanceId,
                compute_instance_id = computeInstanceId,
            ]
        );
        same_layout!(
            ProcessInfoV2,
            b::nvmlProcessInfo_t,
            [pid = pid, used_gpu_memory = usedGpuMemory]
        );
        same_layout!(
            ProcessUtilizationSample,
            b::nvmlProcessUtilizationSample_t,
            [
                pid = pid,
                time_stamp = timeStamp,
                sm_util = smUtil,
                mem_util = memUtil,
                enc_util = encUtil,
                dec_util = decUtil,
            ]
        );
        assert_eq!(
            VALUE_NOT_AVAILABLE,
            b::NVML_VALUE_NOT_AVAILABLE as c_ulonglong,
            "(unsigned long long)NVML_VALUE_NOT_AVAILABLE"
        );
    }

    #[test]
    fn struct_versions_match_what_clients_send() {
        // The values pynvml hard-codes and nvml-wrapper computes.
        assert_eq!(MEMORY_V2, 0x0200_0028);
        assert_eq!(GPU_INSTANCE_PROFILE_INFO_V2, 0x0200_0098);
        assert_eq!(GPU_INSTANCE_PROFILE_INFO_V3, 0x0300_0098);
        assert_eq!(COMPUTE_INSTANCE_PROFILE_INFO_V2, 0x0200_0088);
        assert_eq!(COMPUTE_INSTANCE_PROFILE_INFO_V3, 0x0300_008C);
    }

    #[test]
    fn return_codes_match_nvml_h() {
        assert_eq!(SUCCESS, b::nvmlReturn_enum_NVML_SUCCESS);
        assert_eq!(
            ERROR_UNINITIALIZED,
            b::nvmlReturn_enum_NVML_ERROR_UNINITIALIZED
        );
        assert_eq!(
            ERROR_INVALID_ARGUMENT,
            b::nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT
        );
        assert_eq!(
            ERROR_NOT_SUPPORTED,
            b::nvmlReturn_enum_NVML_ERROR_NOT_SUPPORTED
        );
        assert_eq!(ERROR_NOT_FOUND, b::nvmlReturn_enum_NVML_ERROR_NOT_FOUND);
        assert_eq!(
            ERROR_INSUFFICIENT_SIZE,
            b::nvmlReturn_enum_NVML_ERROR_INSUFFICIENT_SIZE
        );
        assert_eq!(
            ERROR_DRIVER_NOT_LOADED,
            b::nvmlReturn_enum_NVML_ERROR_DRIVER_NOT_LOADED
        );
        assert_eq!(ERROR_GPU_IS_LOST, b::nvmlReturn_enum_NVML_ERROR_GPU_IS_LOST);
        assert_eq!(
            ERROR_RESET_REQUIRED,
            b::nvmlReturn_enum_NVML_ERROR_RESET_REQUIRED
        );
        assert_eq!(ERROR_IN_USE, b::nvmlReturn_enum_NVML_ERROR_IN_USE);
        assert_eq!(
            ERROR_INSUFFICIENT_RESOURCES,
            b::nvmlReturn_enum_NVML_ERROR_INSUFFICIENT_RESOURCES
        );
        assert_eq!(
            ERROR_ARGUMENT_VERSION_MISMATCH,
            b::nvmlReturn_enum_NVML_ERROR_ARGUMENT_VERSION_MISMATCH
        );
        assert_eq!(ERROR_UNKNOWN, b::nvmlReturn_enum_NVML_ERROR_UNKNOWN);
    }

    #[test]
    fn c_arrays_are_terminated_and_truncated() {
        let a: [c_char; 4] = c_array("abcdef");
        assert_eq!(a, [b'a' as c_char, b'b' as c_char, b'c' as c_char, 0]);
        let b: [c_char; 8] = c_array("ab");
        assert_eq!(&b[..3], &[b'a' as c_char, b'b' as c_char, 0]);
    }
}
