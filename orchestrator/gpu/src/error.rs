//! The errors of the GPU adapter, one variant per situation an operator can
//! act on. Every variant names the GPU (by NVML index) when there is one.

use std::path::PathBuf;

/// NVML return codes the adapter tells apart (from `nvml.h`).
pub(crate) mod code {
    pub const SUCCESS: u32 = 0;
    pub const INVALID_ARGUMENT: u32 = 2;
    pub const NOT_SUPPORTED: u32 = 3;
    pub const NO_PERMISSION: u32 = 4;
    pub const NOT_FOUND: u32 = 6;
    pub const FUNCTION_NOT_FOUND: u32 = 13;
    pub const GPU_IS_LOST: u32 = 15;
    pub const IN_USE: u32 = 19;
    pub const INSUFFICIENT_RESOURCES: u32 = 23;
    pub const ARGUMENT_VERSION_MISMATCH: u32 = 25;
    pub const UNKNOWN: u32 = 999;
}

/// What went wrong talking to the GPUs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GpuError {
    /// The NVML library could not be loaded: the host has no NVIDIA driver
    /// (or the configured path is wrong).
    #[error(
        "cannot load the NVML library {path}: {reason}. GPU groups cannot start on this host; \
         CPU-only groups can. Install the NVIDIA driver or point ORCH_NVML_LIBRARY at libnvidia-ml.so.1"
    )]
    NoLibrary { path: PathBuf, reason: String },

    /// The library loaded but `nvmlInit` failed (driver not loaded, no
    /// permission, driver/library version mismatch).
    #[error(
        "NVML ({path}) failed to initialise: {reason}. GPU groups cannot start on this host; \
         CPU-only groups can"
    )]
    Init { path: PathBuf, reason: String },

    /// The GPU (or the driver) does not offer this.
    #[error("GPU {gpu}: {what} is not supported")]
    NotSupported { gpu: u32, what: String },

    /// No GPU has this index.
    #[error("no GPU with index {index}: this host has {count} GPU(s)")]
    NoSuchGpu { index: u32, count: u32 },

    /// No GPU instance has this id on the GPU.
    #[error("GPU {gpu}: there is no MIG GPU instance with id {gi_id}")]
    NoSuchInstance { gpu: u32, gi_id: u32 },

    /// The placement is taken (its memory slices overlap an instance), too
    /// few compute slices are free, or the profile's instance count is used up.
    #[error(
        "GPU {gpu}: no room for a {profile} MIG instance at placement {placement} \
         (its slices overlap an existing instance, or the profile's instances are used up)"
    )]
    InsufficientResources {
        gpu: u32,
        profile: String,
        placement: u8,
    },

    /// Something still uses the GPU or instance (CUDA processes, or compute
    /// instances inside a GPU instance).
    #[error("GPU {gpu}: {what} is in use; stop the processes using it and retry")]
    InUse { gpu: u32, what: String },

    /// The GPU fell off the bus or is otherwise inaccessible.
    #[error(
        "GPU {gpu} is lost (fell off the bus or became inaccessible); nothing runs on it \
         until it is reset or the host reboots"
    )]
    GpuLost { gpu: u32 },

    /// The caller lacks the privileges (MIG changes need root or CAP_SYS_ADMIN).
    #[error("GPU {gpu}: {call} was refused for lack of permission (MIG changes need root)")]
    NoPermission { gpu: u32, call: &'static str },

    /// Any other NVML failure, with the call and NVML's own text.
    #[error("{}{call} failed: {message} (NVML error {code})", gpu_prefix(*.gpu))]
    Nvml {
        gpu: Option<u32>,
        call: &'static str,
        code: u32,
        message: String,
    },
}

fn gpu_prefix(gpu: Option<u32>) -> String {
    gpu.map(|g| format!("GPU {g}: ")).unwrap_or_default()
}

impl GpuError {
    /// True when GPU work cannot happen on this host at all (no NVML).
    pub fn is_no_nvml(&self) -> bool {
        matches!(self, GpuError::NoLibrary { .. } | GpuError::Init { .. })
    }
}

/// Errors both backends give in the same words.
impl GpuError {
    pub(crate) fn mig_unsupported(gpu: u32) -> Self {
        GpuError::NotSupported {
            gpu,
            what: "MIG".to_owned(),
        }
    }

    pub(crate) fn mig_not_current(gpu: u32, pending_enable: bool) -> Self {
        GpuError::NotSupported {
            gpu,
            what: if pending_enable {
                "MIG instances before the GPU reset that turns MIG mode on".to_owned()
            } else {
                "MIG instances while MIG mode is disabled".to_owned()
            },
        }
    }

    pub(crate) fn unknown_profile(gpu: u32, profile_id: u32) -> Self {
        GpuError::NotSupported {
            gpu,
            what: format!("GPU-instance profile id {profile_id}"),
        }
    }

    pub(crate) fn bad_placement(gpu: u32, profile: &str, start: u8, starts: &[u32]) -> Self {
        let starts: Vec<String> = starts.iter().map(u32::to_string).collect();
        GpuError::NotSupported {
            gpu,
            what: format!(
                "placement {start} for {profile} (possible starts: {})",
                starts.join(", ")
            ),
        }
    }
}
