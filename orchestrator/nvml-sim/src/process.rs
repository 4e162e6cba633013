//! Processes on the simulated GPUs and each GPU's MPS server: the rules for
//! adding and removing them (`nvml-simctl process …`, `terminate_client`,
//! an MPS fault), what each NVML process list shows for a device, and the
//! per-process utilisation samples of `nvmlDeviceGetProcessUtilization`.
//!
//! Everything here is a pure function of a GPU's configuration and state, so
//! the C ABI, `nvml-simctl` and the MPS control stand-in apply one set of
//! rules.

use serde::Serialize;

use crate::config::GpuConfig;
use crate::state::{GpuState, MpsServerState, ProcessKind, ProcessState};
use crate::units::MIB;

/// Device memory the MPS server itself holds, about what nvidia-smi shows
/// for `nvidia-cuda-mps-server`.
pub const MPS_SERVER_MEMORY: u64 = 32 * MIB;

/// How far apart the driver's per-process utilisation samples are.
pub const SAMPLE_PERIOD_US: u64 = 1_000_000;

/// How many sample periods the driver's sample buffer keeps.
pub const SAMPLE_BUFFER: u64 = 10;

/// How many terminated clients a server remembers (for `mps status`).
const TERMINATED_KEPT: usize = 64;

/// What a CUDA application sees when it connects to an MPS server that is
/// recovering from a fatal fault.
pub const SERVER_NOT_READY: &str = "CUDA_ERROR_MPS_SERVER_NOT_READY";

/// What a client ended by `terminate_client` sees on its next CUDA call.
pub const CLIENT_TERMINATED: &str = "CUDA_ERROR_MPS_CLIENT_TERMINATED";

/// What a client connected during a fatal fault sees until it exits.
pub const CLIENT_FAULTED: &str = "CUDA_ERROR_LAUNCH_FAILED";

/// A refused process change, in the words an operator of real hardware
/// would see.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProcessError {
    /// PID 0 is not a process.
    #[error("pid 0 is not a process")]
    ZeroPid,
    /// The pid already has a context on this GPU.
    #[error("pid {0} already uses this GPU")]
    Duplicate(u32),
    /// No such process on the GPU (or the host).
    #[error("pid {0} uses no simulated GPU here")]
    NotFound(u32),
    /// A utilisation above 100 %.
    #[error("utilisation {0} is not a percentage (0-100)")]
    BadUtil(u32),
    /// A MIG GPU's processes run inside a compute instance.
    #[error("MIG mode is on: give the GPU instance and compute instance (--gi, --ci)")]
    NeedsInstance,
    /// `--gi`/`--ci` on a GPU without MIG mode.
    #[error("MIG mode is off: a process uses the whole GPU (no --gi/--ci)")]
    NotMig,
    /// No such compute instance.
    #[error("there is no compute instance {ci} in GPU instance {gi}")]
    NoInstance {
        /// GPU-instance id.
        gi: u32,
        /// Compute-instance id.
        ci: u32,
    },
    /// The allocation does not fit.
    #[error("out of memory: {wanted} bytes asked, {free} bytes free (CUDA_ERROR_OUT_OF_MEMORY)")]
    OutOfMemory {
        /// Bytes asked for.
        wanted: u64,
        /// Bytes free.
        free: u64,
    },
    /// Graphics contexts cannot run in MIG instances.
    #[error("graphics contexts cannot run on a GPU in MIG mode")]
    GraphicsOnMig,
    /// MPS is modelled on whole GPUs only.
    #[error("the simulator models MPS on whole GPUs only, and MIG mode is on")]
    MpsOnMig,
    /// The first MPS client must say which pid its server gets.
    #[error("the GPU has no MPS server yet: give the server's pid (--server-pid)")]
    NeedsServer,
    /// The GPU's server has another pid.
    #[error("the GPU's MPS server is pid {running}, not {given}")]
    OtherServer {
        /// Pid of the running server.
        running: u32,
        /// Pid given.
        given: u32,
    },
    /// The server pid is in use by a client or another process.
    #[error("pid {0} already uses this GPU and cannot be its MPS server")]
    ServerPidTaken(u32),
    /// The server is recovering from a fatal fault.
    #[error("the MPS server is in FAULT and refuses new clients ({SERVER_NOT_READY})")]
    ServerNotReady,
    /// No MPS server runs on the GPU.
    #[error("no MPS server runs on this GPU")]
    NoServer,
    /// The pid is not a client of the server.
    #[error("pid {client} is not a client of MPS server {server}")]
    NotClient {
        /// Server pid.
        server: u32,
        /// Client pid.
        client: u32,
    },
}

/// A process to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewProcess {
    /// Process id.
    pub pid: u32,
    /// Kind of context.
    pub kind: ProcessKind,
    /// MIG GPU instance and compute instance.
    pub instance: Option<(u32, u32)>,
    /// Memory, bytes.
    pub used: u64,
    /// SM utilisation, percent.
    pub util: u32,
    /// For the first MPS client: the server's pid.
    pub server_pid: Option<u32>,
}

/// Memory of the GPU instance `gi` (MIG), or of the whole GPU.
fn capacity(cfg: &GpuConfig, gpu: &GpuState, gi: Option<u32>) -> u64 {
    let whole = cfg.card.memory.total.bytes() - cfg.card.memory.reserved.bytes();
    match (gi, cfg.mig()) {
        (Some(id), Some(spec)) => gpu
            .gi(id)
            .and_then(|g| spec.gi_profile_by_id(g.profile_id))
            .map_or(0, |p| p.memory.bytes()),
        _ => whole,
    }
}

/// Memory held by the GPU's processes (and its MPS server), in GPU
/// instance `gi` or on the whole GPU.
pub fn process_memory(gpu: &GpuState, gi: Option<u32>) -> u64 {
    let in_scope = |p: &&ProcessState| gi.is_none() || p.gpu_instance == gi;
    let processes: u64 = gpu.processes.iter().filter(in_scope).map(|p| p.used).sum();
    let server = match (&gpu.mps_server, gi) {
        (Some(_), None) => MPS_SERVER_MEMORY,
        _ => 0,
    };
    processes.saturating_add(server)
}

/// SM utilisation the GPU's processes cause together, capped at 100 %.
pub fn process_util(gpu: &GpuState) -> u32 {
    gpu.processes.iter().map(|p| p.util).sum::<u32>().min(100)
}

/// Adds a process to a GPU, starting its MPS server for the first MPS client.
pub fn add(
    cfg: &GpuConfig,
    gpu: &mut GpuState,
    new: &NewProcess,
    now_us: u64,
) -> Result<(), ProcessError> {
    if new.pid == 0 || new.server_pid == Some(0) {
        return Err(ProcessError::ZeroPid);
    }
    if new.util > 100 {
        return Err(ProcessError::BadUtil(new.util));
    }
    if uses(gpu, new.pid) {
        return Err(ProcessError::Duplicate(new.pid));
    }
    let mig = gpu.mig_current && cfg.mig().is_some();
    match (mig, new.instance, new.kind) {
        (true, _, ProcessKind::Graphics) => return Err(ProcessError::GraphicsOnMig),
        (true, _, ProcessKind::Mps) => return Err(ProcessError::MpsOnMig),
        (true, None, _) => return Err(ProcessError::NeedsInstance),
        (false, Some(_), _) => return Err(ProcessError::NotMig),
        (true, Some((gi, ci)), _) => {
            let exists = gpu
                .gi(gi)
                .is_some_and(|g| g.compute_instances.iter().any(|c| c.id == ci));
            if !exists {
                return Err(ProcessError::NoInstance { gi, ci });
            }
        }
        (false, None, _) => {}
    }
    let gi = new.instance.map(|(gi, _)| gi);
    let mut needed = new.used;
    if new.kind == ProcessKind::Mps {
        match (&gpu.mps_server, new.server_pid) {
            (Some(server), Some(given)) if server.pid != given => {
                return Err(ProcessError::OtherServer {
                    running: server.pid,
                    given,
                });
            }
            (Some(server), _) if !server.faulted_clients.is_empty() => {
                return Err(ProcessError::ServerNotReady);
            }
            (Some(_), _) => {}
            (None, None) => return Err(ProcessError::NeedsServer),
            (None, Some(server)) if server == new.pid || uses(gpu, server) => {
                return Err(ProcessError::ServerPidTaken(server));
            }
            (None, Some(_)) => needed = needed.saturating_add(MPS_SERVER_MEMORY),
        }
    }
    let free = capacity(cfg, gpu, gi).saturating_sub(process_memory(gpu, gi));
    if needed > free {
        return Err(ProcessError::OutOfMemory {
            wanted: needed,
            free,
        });
    }
    if let (ProcessKind::Mps, None, Some(pid)) = (new.kind, &gpu.mps_server, new.server_pid) {
        gpu.mps_server = Some(MpsServerState {
            pid,
            started_us: now_us,
            faulted_clients: Vec::new(),
            terminated: Vec::new(),
        });
    }
    gpu.processes.push(ProcessState {
        pid: new.pid,
        kind: new.kind,
        gpu_instance: gi,
        compute_instance: new.instance.map(|(_, ci)| ci),
        used: new.used,
        util: new.util,
        started_us: now_us,
    });
    Ok(())
}

/// Whether `pid` has a context on the GPU (its MPS server included).
pub fn uses(gpu: &GpuState, pid: u32) -> bool {
    gpu.processes.iter().any(|p| p.pid == pid)
        || gpu.mps_server.as_ref().is_some_and(|s| s.pid == pid)
}

/// Removes `pid` from the GPU, as when the process exits. The MPS server's
/// exit takes its clients with it. Returns whether anything was removed.
pub fn remove(gpu: &mut GpuState, pid: u32) -> bool {
    if gpu.mps_server.as_ref().is_some_and(|s| s.pid == pid) {
        gpu.mps_server = None;
        gpu.processes.retain(|p| p.kind != ProcessKind::Mps);
        return true;
    }
    let before = gpu.processes.len();
    gpu.processes.retain(|p| p.pid != pid);
    let removed = gpu.processes.len() != before;
    settle_fault(gpu);
    removed
}

/// A server whose faulted clients have all gone is ACTIVE again.
fn settle_fault(gpu: &mut GpuState) {
    let GpuState {
        processes,
        mps_server,
        ..
    } = gpu;
    if let Some(server) = mps_server {
        server
            .faulted_clients
            .retain(|pid| processes.iter().any(|p| p.pid == *pid));
    }
}

/// The MPS clients of the GPU's server, in the order they connected.
pub fn mps_clients(gpu: &GpuState) -> Vec<u32> {
    gpu.processes
        .iter()
        .filter(|p| p.kind == ProcessKind::Mps)
        .map(|p| p.pid)
        .collect()
}

/// `terminate_client <server> <client>`: the client's work is ended and its
/// context is gone from the GPU; it is remembered as terminated.
pub fn terminate_client(gpu: &mut GpuState, server: u32, client: u32) -> Result<(), ProcessError> {
    let running = gpu.mps_server.as_ref().ok_or(ProcessError::NoServer)?.pid;
    if running != server {
        return Err(ProcessError::NoServer);
    }
    if !mps_clients(gpu).contains(&client) {
        return Err(ProcessError::NotClient { server, client });
    }
    gpu.processes.retain(|p| p.pid != client);
    settle_fault(gpu);
    if let Some(s) = gpu.mps_server.as_mut() {
        s.terminated.push(client);
        let excess = s.terminated.len().saturating_sub(TERMINATED_KEPT);
        s.terminated.drain(..excess);
    }
    Ok(())
}

/// A fatal fault in one client: every client connected now is hit, and the
/// server stays in FAULT until all of them have exited.
pub fn fault(gpu: &mut GpuState) -> Result<(), ProcessError> {
    let clients = mps_clients(gpu);
    let server = gpu.mps_server.as_mut().ok_or(ProcessError::NoServer)?;
    server.faulted_clients = clients;
    Ok(())
}

/// `ACTIVE` or `FAULT`, as `get_server_status` prints it. A fault with no
/// client left to exit is over at once, as on real hardware.
pub fn server_status(server: &MpsServerState) -> &'static str {
    if server.faulted_clients.is_empty() {
        "ACTIVE"
    } else {
        "FAULT"
    }
}

/// One entry of an NVML process list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedProcess {
    /// Process id.
    pub pid: u32,
    /// Memory, bytes; `None` where NVML reports `NVML_VALUE_NOT_AVAILABLE`.
    pub used: Option<u64>,
    /// GPU-instance id (MIG).
    pub gpu_instance: Option<u32>,
    /// Compute-instance id (MIG).
    pub compute_instance: Option<u32>,
}

/// Which NVML list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessList {
    /// `nvmlDeviceGetComputeRunningProcesses*`: CUDA contexts, MPS clients
    /// and the MPS server.
    Compute,
    /// `nvmlDeviceGetGraphicsRunningProcesses*`.
    Graphics,
    /// `nvmlDeviceGetMPSComputeRunningProcesses*`: MPS clients.
    Mps,
}

/// What a process list shows for a device: the whole GPU (`instance: None`)
/// or one MIG device. On a MIG-enabled GPU the parent's list carries every
/// instance's processes with their ids, and their memory only for a
/// privileged caller (NVIDIA: per-instance figures come from MIG handles).
pub fn listed(
    gpu: &GpuState,
    list: ProcessList,
    instance: Option<(u32, u32)>,
    privileged: bool,
) -> Vec<ListedProcess> {
    let wanted = |kind: ProcessKind| match list {
        ProcessList::Compute => kind != ProcessKind::Graphics,
        ProcessList::Graphics => kind == ProcessKind::Graphics,
        ProcessList::Mps => kind == ProcessKind::Mps,
    };
    let mut out = Vec::new();
    if let (ProcessList::Compute, Some(server), None) = (list, &gpu.mps_server, instance) {
        out.push(ListedProcess {
            pid: server.pid,
            used: Some(MPS_SERVER_MEMORY),
            gpu_instance: None,
            compute_instance: None,
        });
    }
    for p in gpu.processes.iter().filter(|p| wanted(p.kind)) {
        let on_mig = p.gpu_instance.is_some();
        if let Some((gi, ci)) = instance {
            if p.gpu_instance != Some(gi) || p.compute_instance != Some(ci) {
                continue;
            }
        }
        let hidden = on_mig && instance.is_none() && !privileged;
        out.push(ListedProcess {
            pid: p.pid,
            used: (!hidden).then_some(p.used),
            gpu_instance: p.gpu_instance,
            compute_instance: p.compute_instance,
        });
    }
    out
}

/// One per-process utilisation sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct UtilSample {
    /// Process id.
    pub pid: u32,
    /// When the sample was taken, microseconds since the Unix epoch.
    pub timestamp_us: u64,
    /// SM utilisation, percent.
    pub sm: u32,
    /// Memory-controller utilisation, percent (half the SM figure here).
    pub mem: u32,
}

/// The samples newer than `last_seen_us` still in the driver's buffer at
/// `now_us`: one per sample period per process with a non-zero utilisation
/// that had started before the period ended,
/// taken on whole periods of the wall clock, oldest first.
pub fn util_samples(gpu: &GpuState, last_seen_us: u64, now_us: u64) -> Vec<UtilSample> {
    let newest = now_us - now_us % SAMPLE_PERIOD_US;
    let oldest = newest.saturating_sub((SAMPLE_BUFFER - 1) * SAMPLE_PERIOD_US);
    let mut out = Vec::new();
    let mut tick = oldest;
    while tick <= newest {
        if tick > last_seen_us {
            for p in gpu
                .processes
                .iter()
                .filter(|p| p.util > 0 && p.started_us < tick)
            {
                out.push(UtilSample {
                    pid: p.pid,
                    timestamp_us: tick,
                    sm: p.util,
                    mem: p.util / 2,
                });
            }
        }
        tick += SAMPLE_PERIOD_US;
    }
    out
}

/// A process as `nvml-simctl process list` and `status` print it.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessStatus {
    /// Process id.
    pub pid: u32,
    /// `compute`, `graphics`, `mps` (a client) or `mps-server`.
    pub kind: &'static str,
    /// GPU-instance id (MIG).
    pub gpu_instance: Option<u32>,
    /// Compute-instance id (MIG).
    pub compute_instance: Option<u32>,
    /// Memory, bytes.
    pub used: u64,
    /// SM utilisation, percent.
    pub util: u32,
}

/// Every process of the GPU, its MPS server first.
pub fn statuses(gpu: &GpuState) -> Vec<ProcessStatus> {
    let server = gpu.mps_server.iter().map(|s| ProcessStatus {
        pid: s.pid,
        kind: "mps-server",
        gpu_instance: None,
        compute_instance: None,
        used: MPS_SERVER_MEMORY,
        util: 0,
    });
    server
        .chain(gpu.processes.iter().map(|p| ProcessStatus {
            pid: p.pid,
            kind: p.kind.name(),
            gpu_instance: p.gpu_instance,
            compute_instance: p.compute_instance,
            used: p.used,
            util: p.util,
        }))
        .collect()
}

/// A client as `nvml-simctl mps status` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct MpsClientStatus {
    /// Process id.
    pub pid: u32,
    /// The CUDA error its next call returns, if any.
    pub error: Option<&'static str>,
}

/// The MPS server of a GPU as `nvml-simctl mps status` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct MpsStatus {
    /// Server pid.
    pub server_pid: u32,
    /// `ACTIVE` or `FAULT`.
    pub status: &'static str,
    /// Connected clients and what they see.
    pub clients: Vec<MpsClientStatus>,
    /// What a new client gets when it connects (`None`: it connects).
    pub new_client_error: Option<&'static str>,
    /// Clients ended by `terminate_client`, oldest first, and what they saw.
    pub terminated: Vec<MpsClientStatus>,
}

/// The GPU's MPS server, if one runs.
pub fn mps_status(gpu: &GpuState) -> Option<MpsStatus> {
    let server = gpu.mps_server.as_ref()?;
    let faulted = !server.faulted_clients.is_empty();
    Some(MpsStatus {
        server_pid: server.pid,
        status: server_status(server),
        clients: mps_clients(gpu)
            .into_iter()
            .map(|pid| MpsClientStatus {
                pid,
                error: server
                    .faulted_clients
                    .contains(&pid)
                    .then_some(CLIENT_FAULTED),
            })
            .collect(),
        new_client_error: faulted.then_some(SERVER_NOT_READY),
        terminated: server
            .terminated
            .iter()
            .map(|&pid| MpsClientStatus {
                pid,
                error: Some(CLIENT_TERMINATED),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SimConfig;
    use crate::state::SimState;

    fn host(relative: &str) -> (SimConfig, SimState) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(relative);
        let config = SimConfig::load(&path).expect("shipped host loads");
        let state = SimState::initial(&config);
        (config, state)
    }

    fn proc(pid: u32, kind: ProcessKind, used: u64, util: u32) -> NewProcess {
        NewProcess {
            pid,
            kind,
            instance: None,
            used,
            util,
            server_pid: None,
        }
    }

    #[test]
    fn memory_and_utilisation_add_up_and_the_gpu_cannot_be_overfilled() {
        let (config, mut state) = host("config/mainpc/gpus.sim.yaml");
        let (cfg, gpu) = (&config.gpus[0], &mut state.gpus[0]);
        add(
            cfg,
            gpu,
            &proc(10, ProcessKind::Compute, 4 * 1024 * MIB, 70),
            1,
        )
        .expect("fits");
        add(cfg, gpu, &proc(11, ProcessKind::Graphics, 512 * MIB, 50), 1).expect("fits");
        assert_eq!(process_memory(gpu, None), 4608 * MIB);
        assert_eq!(process_util(gpu), 100, "capped");
        assert_eq!(
            add(cfg, gpu, &proc(10, ProcessKind::Compute, 1, 0), 1),
            Err(ProcessError::Duplicate(10))
        );
        assert_eq!(
            add(cfg, gpu, &proc(12, ProcessKind::Compute, 1, 101), 1),
            Err(ProcessError::BadUtil(101))
        );
        let too_much = add(
            cfg,
            gpu,
            &proc(12, ProcessKind::Compute, 64 * 1024 * MIB, 0),
            1,
        );
        assert!(
            matches!(too_much, Err(ProcessError::OutOfMemory { .. })),
            "{too_much:?}"
        );
        assert!(remove(gpu, 10));
        assert!(!remove(gpu, 10));
        assert_eq!(process_memory(gpu, None), 512 * MIB);
    }

    #[test]
    fn lists_show_each_kind_where_nvml_does() {
        let (config, mut state) = host("config/mainpc/gpus.sim.yaml");
        let (cfg, gpu) = (&config.gpus[0], &mut state.gpus[0]);
        add(cfg, gpu, &proc(10, ProcessKind::Compute, MIB, 0), 1).expect("compute");
        add(cfg, gpu, &proc(11, ProcessKind::Graphics, MIB, 0), 1).expect("graphics");
        let mut client = proc(12, ProcessKind::Mps, MIB, 0);
        assert_eq!(add(cfg, gpu, &client, 1), Err(ProcessError::NeedsServer));
        client.server_pid = Some(12);
        assert_eq!(
            add(cfg, gpu, &client, 1),
            Err(ProcessError::ServerPidTaken(12))
        );
        client.server_pid = Some(99);
        add(cfg, gpu, &client, 1).expect("first client starts the server");
        let pids = |list| -> Vec<u32> {
            listed(gpu, list, None, true)
                .iter()
                .map(|p| p.pid)
                .collect()
        };
        assert_eq!(pids(ProcessList::Compute), [99, 10, 12]);
        assert_eq!(pids(ProcessList::Graphics), [11]);
        assert_eq!(pids(ProcessList::Mps), [12]);
        assert!(
            listed(gpu, ProcessList::Compute, None, true)
                .iter()
                .all(|p| p.gpu_instance.is_none() && p.used.is_some())
        );
    }

    #[test]
    fn a_fault_holds_until_every_hit_client_has_gone() {
        let (config, mut state) = host("config/mainpc/gpus.sim.yaml");
        let (cfg, gpu) = (&config.gpus[0], &mut state.gpus[0]);
        assert_eq!(fault(gpu), Err(ProcessError::NoServer));
        let mut a = proc(20, ProcessKind::Mps, MIB, 10);
        a.server_pid = Some(9);
        add(cfg, gpu, &a, 1).expect("a");
        add(cfg, gpu, &proc(21, ProcessKind::Mps, MIB, 10), 1).expect("b");
        fault(gpu).expect("fault");
        let status = mps_status(gpu).expect("server");
        assert_eq!(status.status, "FAULT");
        assert_eq!(status.new_client_error, Some(SERVER_NOT_READY));
        assert_eq!(
            add(cfg, gpu, &proc(22, ProcessKind::Mps, MIB, 0), 1),
            Err(ProcessError::ServerNotReady)
        );
        terminate_client(gpu, 9, 20).expect("terminate a");
        assert_eq!(
            mps_status(gpu).map(|s| s.status),
            Some("FAULT"),
            "b is still there"
        );
        assert_eq!(
            terminate_client(gpu, 9, 20),
            Err(ProcessError::NotClient {
                server: 9,
                client: 20
            })
        );
        assert_eq!(terminate_client(gpu, 8, 21), Err(ProcessError::NoServer));
        assert!(remove(gpu, 21));
        let status = mps_status(gpu).expect("server");
        assert_eq!((status.status, status.new_client_error), ("ACTIVE", None));
        assert_eq!(status.terminated.len(), 1);
        add(cfg, gpu, &proc(22, ProcessKind::Mps, MIB, 0), 1).expect("accepted again");
        assert!(remove(gpu, 9), "the server");
        assert!(gpu.processes.is_empty(), "its clients went with it");
    }

    #[test]
    fn samples_come_on_whole_periods_after_the_last_seen_one() {
        let (config, mut state) = host("config/mainpc/gpus.sim.yaml");
        let (cfg, gpu) = (&config.gpus[0], &mut state.gpus[0]);
        let start = 1_700_000_000_000_000;
        add(cfg, gpu, &proc(1, ProcessKind::Compute, MIB, 40), start).expect("busy");
        add(cfg, gpu, &proc(2, ProcessKind::Compute, MIB, 0), start).expect("idle");
        let now = start + 3 * SAMPLE_PERIOD_US + 10;
        let all = util_samples(gpu, 0, now);
        assert_eq!(all.len(), 3, "{all:?}");
        assert!(all.iter().all(|s| s.pid == 1 && s.sm == 40 && s.mem == 20));
        let last = all.last().map(|s| s.timestamp_us).unwrap_or_default();
        assert_eq!(last % SAMPLE_PERIOD_US, 0);
        assert!(util_samples(gpu, last, now).is_empty(), "nothing newer");
        let later = now + 20 * SAMPLE_PERIOD_US;
        assert_eq!(
            util_samples(gpu, 0, later).len() as u64,
            SAMPLE_BUFFER,
            "the buffer keeps {SAMPLE_BUFFER} periods"
        );
    }
}
