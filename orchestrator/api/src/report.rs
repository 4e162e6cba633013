//! Turning a plan into the report `orchestratorctl plan` shows, the same
//! whether the daemon planned with its live state or the CLI planned alone.

use orch_core::gpu::{Assignment, GpuInfo, GpuRequest, MigState, ReplicaKey, Slice};
use orch_core::model::HostConfig;
use orch_core::planner::Plan;

use crate::convert;
use crate::reply::{FreeCapacity, MigCreate, MigDestroy, PlanReport, PlannedSlice};

pub fn plan_report(
    config: &HostConfig,
    plan: &Plan,
    requests: &[(ReplicaKey, GpuRequest)],
    current: &[Assignment],
    inventory: &[GpuInfo],
    inventory_source: &str,
) -> PlanReport {
    let group_of = |key: &ReplicaKey| {
        config
            .agent(&key.agent)
            .map(|a| a.group.clone())
            .unwrap_or_default()
    };
    let request_of = |key: &ReplicaKey| {
        requests
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, r)| convert::gpu_request(r))
            .unwrap_or_default()
    };
    PlanReport {
        host: config.host.name.clone(),
        inventory_source: inventory_source.to_string(),
        assignments: plan
            .assignments
            .iter()
            .map(|a| PlannedSlice {
                replica: convert::replica(&a.replica),
                group: group_of(&a.replica),
                request: request_of(&a.replica),
                slice: convert::slice(&a.slice, Some(inventory)),
                fallback_depth: a.fallback_depth,
                kept: current
                    .iter()
                    .any(|c| c.replica == a.replica && c.slice == a.slice),
            })
            .collect(),
        mig_create: plan
            .create
            .iter()
            .map(|c| MigCreate {
                gpu_index: c.gpu_index,
                gpu_uuid: c.gpu_uuid.clone(),
                profile: c.profile.clone(),
                placement_start: c.placement_start,
                replica: convert::replica(&c.replica),
            })
            .collect(),
        mig_destroy: plan
            .destroy
            .iter()
            .map(|d| MigDestroy {
                gpu_index: d.gpu_index,
                gpu_uuid: d.gpu_uuid.clone(),
                gi_id: d.gi_id,
                placement_start: d.placement_start,
            })
            .collect(),
        errors: plan.errors.iter().map(convert::plan_error).collect(),
        notes: plan.notes.iter().map(convert::plan_note).collect(),
        changes: None,
        diff: None,
        remote: remote_dependencies(config, |_| crate::reply::RemoteReadiness::Unknown),
        missing_images: Vec::new(),
    }
}

/// What is left on a GPU for new slices, given the slices held on it.
pub fn free_capacity(
    info: &GpuInfo,
    slices: &[&Slice],
    policies: &[orch_core::model::GpuPolicy],
) -> FreeCapacity {
    let policy = policies
        .iter()
        .find(|p| p.select.matches(info.index, &info.uuid, &info.name));
    let reserve = policy.map_or(orch_core::planner::DEFAULT_RESERVE, |p| p.reserve);
    let sharing = match (policy.and_then(|p| p.sharing), &info.mig) {
        (Some(s), _) => s.as_str().to_string(),
        (None, MigState::Enabled { .. }) => "mig".into(),
        (None, _) => "mps or exclusive".into(),
    };
    let mut free = FreeCapacity {
        sharing,
        mps_memory_bytes: None,
        mps_compute_basis_points: None,
        mps_clients: None,
        mig_memory_slices: None,
        mig_compute_slices: None,
        whole_gpu_free: slices.is_empty(),
    };
    match &info.mig {
        MigState::Enabled {
            memory_slices,
            compute_slices,
            profiles,
            instances,
            ..
        } => {
            let used_mem: u32 = instances.iter().map(|i| u32::from(i.placement_size)).sum();
            let used_compute: u32 = instances
                .iter()
                .filter_map(|i| {
                    profiles
                        .iter()
                        .find(|p| p.id == i.profile_id)
                        .map(|p| u32::from(p.compute_slices))
                })
                .sum();
            free.mig_memory_slices =
                u8::try_from(u32::from(*memory_slices).saturating_sub(used_mem)).ok();
            free.mig_compute_slices =
                u8::try_from(u32::from(*compute_slices).saturating_sub(used_compute)).ok();
            free.whole_gpu_free = instances.is_empty();
        }
        _ => {
            let (mut mem, mut bp, mut n) = (0u64, 0u32, 0u32);
            for s in slices {
                if let Slice::Mps {
                    memory, compute, ..
                } = s
                {
                    mem += memory.bytes();
                    bp += compute.basis_points();
                    n += 1;
                }
            }
            free.mps_memory_bytes = Some(
                info.memory_total
                    .bytes()
                    .saturating_sub(reserve.bytes())
                    .saturating_sub(mem),
            );
            free.mps_compute_basis_points = Some(10_000u32.saturating_sub(bp));
            free.mps_clients = Some(orch_core::planner::DEFAULT_MAX_MPS_CLIENTS.saturating_sub(n));
        }
    }
    free
}

/// Every cross-host dependency of a config (an agent's own and its
/// group's), with its state as `state_of` tells it.
pub fn remote_dependencies(
    config: &HostConfig,
    state_of: impl Fn(&crate::wire::Wait) -> crate::reply::RemoteReadiness,
) -> Vec<crate::reply::RemoteDependency> {
    use orch_core::model::Dep;
    let mut out = Vec::new();
    for a in config.agents() {
        let group_deps = config
            .group(&a.group)
            .map(|g| g.depends_on.as_slice())
            .unwrap_or_default();
        for d in a.depends_on.iter().chain(group_deps) {
            let on = match Dep::parse(d) {
                Ok(Dep::RemoteAgent { host, agent }) => crate::wire::Wait::RemoteAgent {
                    host: host.to_string(),
                    agent: agent.to_string(),
                },
                Ok(Dep::RemoteGroup { host, group }) => crate::wire::Wait::RemoteGroup {
                    host: host.to_string(),
                    group: group.to_string(),
                },
                _ => continue,
            };
            out.push(crate::reply::RemoteDependency {
                agent: a.name.clone(),
                state: state_of(&on),
                on,
            });
        }
    }
    out
}
