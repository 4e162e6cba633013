//! Who uses the GPUs: the GPU worker's latest readings (telemetry, and the
//! processes on each GPU with their containers) and, as a pure function of
//! them and the supervisor's state, each replica's memory and utilisation
//! per GPU and the processes that belong to no agent of this host.
//!
//! A process is a replica's when the container it runs in (or one
//! enclosing it: a daemon that talks to the host's engine sees the outer
//! container) is the replica's container. Its limit is what its slice
//! holds on that GPU (`planner::slice_memory`); its utilisation is its
//! processes' SM percent where NVML gives it per process, else its GPU's.
//! The same attribution, as the supervisor's input, is what
//! `gpu.over_limit` judges (`memory`).

use std::collections::BTreeMap;

use orch_api::{AgentGpuUse, GpuTelemetry, GpuUse, UnownedProcess, convert};
use orch_core::gpu::{GpuInfo, ReplicaKey};
use orch_core::over_limit::{GpuMemory, MemoryUse};
use orch_core::supervise::Supervisor;

use crate::event::GpuProcesses;

/// What the GPU worker last read.
#[derive(Debug, Clone, Default)]
pub struct GpuReadings {
    /// Per GPU index.
    pub telemetry: BTreeMap<u32, GpuTelemetry>,
    /// Per GPU index; empty until the first sample.
    pub processes: BTreeMap<u32, GpuProcesses>,
}

/// The use of one GPU.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GpuUsage {
    /// By replica, in replica order.
    pub replicas: Vec<GpuUse>,
    pub unowned: Vec<UnownedProcess>,
}

/// Every GPU's use (by GPU index) and each replica's, summed over GPUs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub gpus: BTreeMap<u32, GpuUsage>,
    pub replicas: BTreeMap<ReplicaKey, AgentGpuUse>,
}

/// `used` over `limit` in basis points (`None` for no limit).
fn share(used: u64, limit: u64) -> Option<u32> {
    (limit > 0)
        .then(|| u32::try_from(u128::from(used) * 10_000 / u128::from(limit)).unwrap_or(u32::MAX))
}

#[derive(Default)]
struct Sum {
    memory: u64,
    sm_percent: u32,
    processes: u32,
}

/// Attributes the processes of `readings` to the replicas of `sup`.
pub fn usage(sup: &Supervisor, readings: &GpuReadings) -> Usage {
    let by_container: BTreeMap<&str, (&ReplicaKey, &str)> = sup
        .replicas()
        .filter_map(|r| {
            Some((
                r.container.as_ref()?.id.as_str(),
                (&r.key, r.group.as_str()),
            ))
        })
        .collect();
    let inventory: &[GpuInfo] = sup.inventory().unwrap_or_default();
    let mut out = Usage::default();
    for (&index, seen) in &readings.processes {
        let info = inventory.iter().find(|g| g.index == index);
        let gpu_util = readings
            .telemetry
            .get(&index)
            .map(|t| t.utilization_gpu_basis_points);
        let mut sums: BTreeMap<(&ReplicaKey, &str), Sum> = BTreeMap::new();
        let mut unowned = Vec::new();
        for p in &seen.processes {
            let owner = p.container.as_ref().and_then(|c| {
                std::iter::once(&c.id)
                    .chain(c.outer.iter().rev())
                    .find_map(|id| by_container.get(id.as_str()))
            });
            match owner {
                Some(&(key, group)) => {
                    let s = sums.entry((key, group)).or_default();
                    s.memory += p.memory_bytes.unwrap_or(0);
                    s.sm_percent += p.sm_percent.unwrap_or(0);
                    s.processes += 1;
                }
                None => unowned.push(UnownedProcess {
                    pid: p.pid,
                    memory_used_bytes: p.memory_bytes,
                    container: p
                        .container
                        .as_ref()
                        .map(|c| c.id.chars().take(12).collect()),
                }),
            }
        }
        let replicas = sums
            .into_iter()
            .map(|((key, group), s)| {
                let limit = info.and_then(|info| {
                    let slice = sup.replica(key)?.slice.as_ref()?;
                    (slice.gpu_uuid() == info.uuid)
                        .then(|| orch_core::planner::slice_memory(slice, info))
                        .flatten()
                });
                GpuUse {
                    replica: convert::replica(key),
                    group: group.to_string(),
                    memory_used_bytes: s.memory,
                    memory_limit_bytes: limit.map(|l| l.bytes()),
                    share_basis_points: limit.and_then(|l| share(s.memory, l.bytes())),
                    utilization_basis_points: if seen.per_process {
                        Some(s.sm_percent.min(100) * 100)
                    } else {
                        gpu_util
                    },
                    per_process: seen.per_process,
                    processes: s.processes,
                }
            })
            .collect::<Vec<_>>();
        for u in &replicas {
            let key = ReplicaKey::new(&u.replica.agent, u.replica.replica);
            let total = out.replicas.entry(key).or_insert(AgentGpuUse {
                memory_used_bytes: 0,
                memory_limit_bytes: None,
                share_basis_points: None,
                utilization_basis_points: None,
                per_process: true,
            });
            total.memory_used_bytes += u.memory_used_bytes;
            total.memory_limit_bytes = match (total.memory_limit_bytes, u.memory_limit_bytes) {
                (Some(a), Some(b)) => Some(a + b),
                (a, b) => a.or(b),
            };
            total.share_basis_points = total
                .memory_limit_bytes
                .and_then(|l| share(total.memory_used_bytes, l));
            // A replica on several GPUs: the busiest.
            total.utilization_basis_points = total
                .utilization_basis_points
                .max(u.utilization_basis_points);
            total.per_process &= u.per_process;
        }
        out.gpus.insert(index, GpuUsage { replicas, unowned });
    }
    out
}

/// The replicas' measured memory on each GPU whose processes were read,
/// for the supervisor to hold against their limits (`gpu.over_limit`). A
/// GPU NVML gave no process list for is absent, so nothing is decided on
/// it; a process whose memory NVML does not tell adds nothing.
pub fn memory(sup: &Supervisor, readings: &GpuReadings) -> Vec<GpuMemory> {
    let inventory: &[GpuInfo] = sup.inventory().unwrap_or_default();
    usage(sup, readings)
        .gpus
        .into_iter()
        .filter_map(|(index, used)| {
            let uuid = inventory.iter().find(|g| g.index == index)?.uuid.clone();
            Some(GpuMemory {
                gpu_index: index,
                gpu_uuid: uuid,
                replicas: used
                    .replicas
                    .into_iter()
                    .map(|u| MemoryUse {
                        replica: ReplicaKey::new(&u.replica.agent, u.replica.replica),
                        used_bytes: u.memory_used_bytes,
                        limit_bytes: u.memory_limit_bytes,
                    })
                    .collect(),
            })
        })
        .collect()
}
