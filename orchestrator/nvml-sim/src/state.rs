//! The simulator's mutable state (MIG modes, GPU and compute instances, lost
//! GPUs, telemetry overrides, the processes using each GPU and its MPS server)
//! and the state file that shares it between every process using the same
//! host description.
//!
//! Writers take an exclusive `flock` on a sibling lock file, re-read the state,
//! change it and replace the state file atomically (write to a temporary file,
//! then rename). Readers take a shared lock and re-read only when the state
//! file's identity (inode, size, modification time) changed. Because every
//! write is a rename, a changed state always has a new inode, so the cheap
//! identity check cannot miss an update.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::config::{SimConfig, digest128};

/// Version of the state file's layout; a file with another version is
/// replaced by the initial state rather than misread.
pub const STATE_FORMAT: u32 = 1;

/// A compute instance inside a GPU instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CiState {
    /// Compute-instance id, unique within its GPU instance.
    pub id: u32,
    /// Compute-instance profile id.
    pub profile_id: u32,
    /// First compute slice (relative to the GPU instance).
    pub start: u32,
    /// Compute slices.
    pub size: u32,
}

/// A GPU instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GiState {
    /// GPU-instance id, unique within the GPU.
    pub id: u32,
    /// GPU-instance profile id.
    pub profile_id: u32,
    /// First memory slice.
    pub start: u32,
    /// Memory slices.
    pub size: u32,
    /// Compute instances, in creation order.
    pub compute_instances: Vec<CiState>,
}

/// Telemetry values pinned by `nvml-simctl set`; they replace the YAML's
/// base-plus-swing value exactly until cleared.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Overrides {
    /// Memory used by processes, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_used: Option<u64>,
    /// GPU utilisation, percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_util: Option<u32>,
    /// Memory utilisation, percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_util: Option<u32>,
    /// Temperature, °C.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature_c: Option<u32>,
    /// Power draw, milliwatts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_mw: Option<u32>,
    /// Fan speed, percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fan_percent: Option<u32>,
}

/// What kind of context a simulated process holds on a GPU, which decides
/// the NVML lists it appears in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessKind {
    /// A CUDA context: `nvmlDeviceGetComputeRunningProcesses`.
    Compute,
    /// A graphics context: `nvmlDeviceGetGraphicsRunningProcesses`.
    Graphics,
    /// An MPS client: listed by `nvmlDeviceGetMPSComputeRunningProcesses` and
    /// by the compute list too (nvidia-smi's `M+C`).
    Mps,
}

impl ProcessKind {
    /// The name `nvml-simctl` takes and prints.
    pub fn name(self) -> &'static str {
        match self {
            ProcessKind::Compute => "compute",
            ProcessKind::Graphics => "graphics",
            ProcessKind::Mps => "mps",
        }
    }
}

/// A process using a GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessState {
    /// Process id (as the host sees it).
    pub pid: u32,
    /// Kind of context.
    pub kind: ProcessKind,
    /// GPU instance it runs in (MIG only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_instance: Option<u32>,
    /// Compute instance it runs in (MIG only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute_instance: Option<u32>,
    /// Device memory it holds, bytes.
    pub used: u64,
    /// SM utilisation it causes, percent.
    pub util: u32,
    /// When it started using the GPU, microseconds since the Unix epoch.
    pub started_us: u64,
}

/// The MPS server of a GPU (`nvidia-cuda-mps-server`), started with its
/// first client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MpsServerState {
    /// Process id of the server.
    pub pid: u32,
    /// When it started, microseconds since the Unix epoch.
    pub started_us: u64,
    /// Clients that were connected when a fatal fault hit the server; while
    /// any of them is still there the server is in FAULT and refuses new
    /// clients.
    #[serde(default)]
    pub faulted_clients: Vec<u32>,
    /// Clients ended by `terminate_client`, oldest first (the last 64).
    #[serde(default)]
    pub terminated: Vec<u32>,
}

/// Mutable state of one GPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuState {
    /// UUID of the GPU this entry belongs to; an entry whose UUID no longer
    /// matches the configuration is discarded.
    pub uuid: String,
    /// Current MIG mode.
    pub mig_current: bool,
    /// Pending MIG mode (applied by the next reset).
    pub mig_pending: bool,
    /// Whether the GPU has fallen off the bus.
    pub lost: bool,
    /// Pinned telemetry values.
    #[serde(default)]
    pub overrides: Overrides,
    /// GPU instances, in creation order.
    #[serde(default)]
    pub gpu_instances: Vec<GiState>,
    /// Processes using the GPU, in the order they started.
    #[serde(default)]
    pub processes: Vec<ProcessState>,
    /// The MPS server, once an MPS client has started one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mps_server: Option<MpsServerState>,
}

impl GpuState {
    /// The GPU instance with this id.
    pub fn gi(&self, id: u32) -> Option<&GiState> {
        self.gpu_instances.iter().find(|g| g.id == id)
    }
}

/// The whole shared state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimState {
    /// [`STATE_FORMAT`].
    pub format: u32,
    /// One entry per configured GPU, in index order.
    pub gpus: Vec<GpuState>,
}

impl SimState {
    /// The state of a freshly booted host.
    pub fn initial(config: &SimConfig) -> Self {
        Self {
            format: STATE_FORMAT,
            gpus: config
                .gpus
                .iter()
                .map(|g| GpuState {
                    uuid: g.uuid.clone(),
                    mig_current: g.initial_mig,
                    mig_pending: g.initial_mig,
                    lost: g.initially_lost,
                    overrides: Overrides::default(),
                    gpu_instances: Vec::new(),
                    processes: Vec::new(),
                    mps_server: None,
                })
                .collect(),
        }
    }

    /// Makes a state read from disk fit the configuration: entries for GPUs
    /// that are gone or were replaced (different UUID) start afresh.
    pub fn reconcile(mut self, config: &SimConfig) -> Self {
        if self.format != STATE_FORMAT {
            return Self::initial(config);
        }
        let fresh = Self::initial(config);
        let mut gpus = Vec::with_capacity(config.gpus.len());
        for (i, initial) in fresh.gpus.into_iter().enumerate() {
            match self.gpus.get_mut(i) {
                Some(existing) if existing.uuid == initial.uuid => {
                    let mut kept = existing.clone();
                    if config.gpus[i].mig().is_none() {
                        // A card file that lost its MIG table cannot keep instances.
                        kept.mig_current = false;
                        kept.mig_pending = false;
                        kept.gpu_instances.clear();
                        kept.processes.retain(|p| p.gpu_instance.is_none());
                    }
                    gpus.push(kept);
                }
                _ => gpus.push(initial),
            }
        }
        self.gpus = gpus;
        self
    }
}

/// A state-file problem.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// An I/O call on the state or lock file failed.
    #[error("{path}: {action}: {source}")]
    Io {
        /// File involved.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// Underlying error.
        source: std::io::Error,
    },
    /// Locking failed.
    #[error("{path}: cannot lock: {errno}")]
    Lock {
        /// Lock file.
        path: PathBuf,
        /// Error number.
        errno: nix::errno::Errno,
    },
}

/// The default state-file path for a host file: one per absolute config path
/// under the temporary directory, so two host descriptions never share state.
pub fn default_state_path(config_path: &Path) -> PathBuf {
    let absolute = std::path::absolute(config_path).unwrap_or_else(|_| config_path.to_owned());
    let digest = digest128(&[&absolute.to_string_lossy()]);
    let tag: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let stem = absolute
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "host".to_owned());
    std::env::temp_dir()
        .join("nvml-sim")
        .join(format!("{stem}-{tag}.state.json"))
}

/// Identity of the state file as last read; a different identity means
/// another process replaced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileIdentity {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl FileIdentity {
    fn of(meta: &fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }
    }
}

/// Reads and writes the shared state file.
#[derive(Debug)]
pub struct StateStore {
    path: PathBuf,
    lock_path: PathBuf,
    cached: Option<(Option<FileIdentity>, SimState)>,
}

impl StateStore {
    /// A store for the state file at `path` (created on first write).
    pub fn new(path: PathBuf) -> Self {
        let mut lock_name = path
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        lock_name.push(".lock");
        let lock_path = path.with_file_name(lock_name);
        Self {
            path,
            lock_path,
            cached: None,
        }
    }

    /// Path of the state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, action: &'static str) -> impl FnOnce(std::io::Error) -> StateError + '_ {
        move |source| StateError::Io {
            path: self.path.clone(),
            action,
            source,
        }
    }

    fn lock(&self, exclusive: bool) -> Result<Flock<File>, StateError> {
        if let Some(dir) = self.lock_path.parent() {
            fs::create_dir_all(dir).map_err(|source| StateError::Io {
                path: dir.to_owned(),
                action: "create directory",
                source,
            })?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.lock_path)
            .map_err(|source| StateError::Io {
                path: self.lock_path.clone(),
                action: "open lock file",
                source,
            })?;
        let arg = if exclusive {
            FlockArg::LockExclusive
        } else {
            FlockArg::LockShared
        };
        Flock::lock(file, arg).map_err(|(_, errno)| StateError::Lock {
            path: self.lock_path.clone(),
            errno,
        })
    }

    /// Reads the state file if it changed since the last read. Must be called
    /// with the lock held.
    fn refresh_locked(&mut self, config: &SimConfig) -> Result<(), StateError> {
        let identity = match fs::metadata(&self.path) {
            Ok(meta) => Some(FileIdentity::of(&meta)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(self.io("stat")(e)),
        };
        if let Some((cached_identity, _)) = &self.cached {
            if *cached_identity == identity {
                return Ok(());
            }
        }
        let state = match identity {
            None => SimState::initial(config),
            Some(_) => {
                let text = fs::read_to_string(&self.path).map_err(self.io("read"))?;
                // A damaged state file (e.g. hand-edited) is replaced by the
                // initial state instead of making every NVML call fail.
                serde_json::from_str::<SimState>(&text)
                    .map(|s| s.reconcile(config))
                    .unwrap_or_else(|_| SimState::initial(config))
            }
        };
        self.cached = Some((identity, state));
        Ok(())
    }

    /// The current state (re-read only if another process changed it).
    pub fn read(&mut self, config: &SimConfig) -> Result<&SimState, StateError> {
        let guard = self.lock(false)?;
        self.refresh_locked(config)?;
        drop(guard);
        match &self.cached {
            Some((_, state)) => Ok(state),
            None => unreachable!("refresh_locked always fills the cache"),
        }
    }

    /// Applies `change` to the freshest state under the exclusive lock and
    /// writes the result; nothing is written when `change` fails.
    pub fn update<T, E: From<StateError>>(
        &mut self,
        config: &SimConfig,
        change: impl FnOnce(&mut SimState) -> Result<T, E>,
    ) -> Result<T, E> {
        let guard = self.lock(true)?;
        self.refresh_locked(config)?;
        let mut state = match &self.cached {
            Some((_, state)) => state.clone(),
            None => unreachable!("refresh_locked always fills the cache"),
        };
        let value = change(&mut state)?;
        let identity = self.write_locked(&state)?;
        self.cached = Some((Some(identity), state));
        drop(guard);
        Ok(value)
    }

    fn write_locked(&self, state: &SimState) -> Result<FileIdentity, StateError> {
        let mut tmp_name = self
            .path
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        tmp_name.push(format!(".tmp{}", std::process::id()));
        let tmp = self.path.with_file_name(tmp_name);
        let mut text = serde_json::to_string_pretty(state).map_err(|e| StateError::Io {
            path: self.path.clone(),
            action: "serialize",
            source: std::io::Error::other(e),
        })?;
        text.push('\n');
        let mut file = File::create(&tmp).map_err(self.io("create temporary file"))?;
        file.write_all(text.as_bytes()).map_err(self.io("write"))?;
        file.sync_all().map_err(self.io("sync"))?;
        drop(file);
        fs::rename(&tmp, &self.path).map_err(self.io("rename"))?;
        let meta = fs::metadata(&self.path).map_err(self.io("stat"))?;
        Ok(FileIdentity::of(&meta))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_state_paths_are_per_config_and_stable() {
        let a = default_state_path(Path::new("/srv/hosts/lab-a100.yaml"));
        let b = default_state_path(Path::new("/srv/other/lab-a100.yaml"));
        assert_ne!(a, b, "same file name, different host descriptions");
        assert_eq!(a, default_state_path(Path::new("/srv/hosts/lab-a100.yaml")));
        assert!(a.starts_with(std::env::temp_dir()));
        let name = a.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        assert!(
            name.starts_with("lab-a100-") && name.ends_with(".state.json"),
            "{name}"
        );
    }
}
