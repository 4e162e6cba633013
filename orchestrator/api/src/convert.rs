//! From the core's types to the API's wire types. The only place that
//! knows both: a change in the core shows up here, not on the wire.

use orch_core::gpu as core_gpu;
use orch_core::planner as core_plan;
use orch_core::supervise as core;
use orch_core::supervise::Millis;

use crate::wire::*;

pub fn replica(k: &core_gpu::ReplicaKey) -> ReplicaRef {
    ReplicaRef {
        agent: k.agent.clone(),
        replica: k.replica,
    }
}

pub fn group_state(p: core::GroupPhase) -> crate::reply::GroupState {
    use crate::reply::GroupState;
    match p {
        core::GroupPhase::Stopped => GroupState::Stopped,
        core::GroupPhase::Starting => GroupState::Starting,
        core::GroupPhase::Ready => GroupState::Ready,
        core::GroupPhase::Degraded => GroupState::Degraded,
        core::GroupPhase::Stopping => GroupState::Stopping,
    }
}

/// How GPUs are given to containers, as `status` names it.
pub fn injection(i: orch_core::container::Injection) -> &'static str {
    use orch_core::container::Injection;
    match i {
        Injection::Nvidia => "nvidia",
        Injection::Cdi => "cdi",
        Injection::Env => "env",
    }
}

pub fn health(h: core::Health) -> Health {
    match h {
        core::Health::Unknown => Health::Unknown,
        core::Health::Healthy => Health::Healthy,
        core::Health::Unhealthy => Health::Unhealthy,
    }
}

pub fn wait(w: &core::Wait) -> Wait {
    match w {
        core::Wait::Agent(a) => Wait::Agent { agent: a.clone() },
        core::Wait::Group(g) => Wait::Group { group: g.clone() },
        core::Wait::GpuInventory => Wait::GpuInventory,
        core::Wait::CrashLoop(a) => Wait::CrashLooping { agent: a.clone() },
        core::Wait::RemoteAgent { host, agent } => Wait::RemoteAgent {
            host: host.clone(),
            agent: agent.clone(),
        },
        core::Wait::RemoteGroup { host, group } => Wait::RemoteGroup {
            host: host.clone(),
            group: group.clone(),
        },
    }
}

/// A phase as seen at `now` (the supervisor's clock): deadlines become
/// "in so many milliseconds".
pub fn phase(p: &core::Phase, now: Millis) -> Phase {
    match p {
        core::Phase::Pending => Phase::Pending,
        core::Phase::Held { waiting_for } => Phase::Held {
            waiting_for: waiting_for.iter().map(wait).collect(),
        },
        core::Phase::Starting => Phase::Starting,
        core::Phase::Running => Phase::Running,
        core::Phase::BackingOff { until, exit_code } => Phase::BackingOff {
            retry_in_ms: until.saturating_sub(now),
            exit_code: *exit_code,
        },
        core::Phase::Exited { code } => Phase::Exited { code: *code },
        core::Phase::Failed { reason, retry_at } => Phase::Failed {
            reason: fail_reason(reason),
            retry_in_ms: retry_at.saturating_sub(now),
        },
        core::Phase::Stopping => Phase::Stopping,
        core::Phase::Stopped => Phase::Stopped,
    }
}

pub fn fail_reason(r: &core::FailReason) -> FailReason {
    match r {
        core::FailReason::Launch(e) => match e {
            core::LaunchError::ImageMissing { image } => FailReason::ImageMissing {
                image: image.clone(),
            },
            core::LaunchError::DockerUnreachable { detail } => FailReason::DockerUnreachable {
                detail: detail.clone(),
            },
            core::LaunchError::DockerRefused { detail } => FailReason::DockerRefused {
                detail: detail.clone(),
            },
            core::LaunchError::GpuDriverMissing { driver, detail } => {
                FailReason::GpuDriverMissing {
                    driver: driver.clone(),
                    detail: detail.clone(),
                }
            }
            core::LaunchError::InvalidSpec { detail } => FailReason::InvalidSpec {
                detail: detail.clone(),
            },
            core::LaunchError::GpuPrepare { gpu_index, detail } => FailReason::GpuPrepare {
                gpu_index: *gpu_index,
                detail: detail.clone(),
            },
            core::LaunchError::NoGpuAccess => FailReason::GpuUnavailable {
                detail: "this host has no usable NVML".into(),
            },
            core::LaunchError::NotConfigured { agent } => FailReason::NotConfigured {
                agent: agent.clone(),
            },
            core::LaunchError::ContainerGone { id } => FailReason::ContainerGone { id: id.clone() },
        },
        core::FailReason::NoSlice(e) => FailReason::NoGpuCapacity {
            error: Box::new(plan_error(e)),
        },
        core::FailReason::GpuUnavailable { detail } => FailReason::GpuUnavailable {
            detail: detail.clone(),
        },
    }
}

/// A slice; MIG slices get their memory from the inventory when it is known.
pub fn slice(s: &core_gpu::Slice, inventory: Option<&[core_gpu::GpuInfo]>) -> Slice {
    match s {
        core_gpu::Slice::Mig {
            gpu_index,
            gpu_uuid,
            profile,
            profile_id,
            placement_start,
            device_uuid,
            ..
        } => Slice::Mig {
            gpu_index: *gpu_index,
            gpu_uuid: gpu_uuid.clone(),
            profile: profile.clone(),
            placement_start: *placement_start,
            device_uuid: device_uuid.clone(),
            memory_bytes: inventory.and_then(|gpus| {
                gpus.iter()
                    .find(|g| g.uuid == *gpu_uuid)
                    .and_then(|g| match &g.mig {
                        core_gpu::MigState::Enabled { profiles, .. } => profiles
                            .iter()
                            .find(|p| p.id == *profile_id)
                            .map(|p| p.memory.bytes()),
                        _ => None,
                    })
            }),
        },
        core_gpu::Slice::Mps {
            gpu_index,
            gpu_uuid,
            memory,
            compute,
        } => Slice::Mps {
            gpu_index: *gpu_index,
            gpu_uuid: gpu_uuid.clone(),
            memory_bytes: memory.bytes(),
            compute_basis_points: compute.basis_points(),
        },
        core_gpu::Slice::Exclusive {
            gpu_index,
            gpu_uuid,
        } => Slice::Exclusive {
            gpu_index: *gpu_index,
            gpu_uuid: gpu_uuid.clone(),
        },
        core_gpu::Slice::TimeSlice {
            gpu_index,
            gpu_uuid,
        } => Slice::TimeSlice {
            gpu_index: *gpu_index,
            gpu_uuid: gpu_uuid.clone(),
        },
    }
}

/// Why the supervisor refused a command.
pub fn command_error(e: &core::CommandError) -> crate::Rejection {
    use crate::Rejection;
    match e {
        core::CommandError::UnknownGroup(group) => Rejection::UnknownGroup {
            group: group.clone(),
            host: None,
            known: Vec::new(),
        },
        core::CommandError::UnknownAgent { group, agent } => Rejection::UnknownAgent {
            group: group.clone(),
            agent: agent.clone(),
            elsewhere: None,
        },
        core::CommandError::NeededBy {
            group,
            needed_by,
            restart,
        } => Rejection::NeededBy {
            group: group.clone(),
            needed_by: needed_by.clone(),
            restart: *restart,
        },
        core::CommandError::WrongHost { current, new } => Rejection::WrongHost {
            current: current.clone(),
            new: new.clone(),
        },
        core::CommandError::UnknownGroups(groups) => Rejection::UnknownGroups {
            groups: groups.clone(),
        },
        core::CommandError::Scale {
            group,
            agent,
            asked,
            why,
        } => Rejection::Scale {
            group: group.clone(),
            agent: agent.clone(),
            asked: *asked,
            why: match why {
                core::ScaleRefusal::OutOfBounds { min, max } => {
                    crate::error::ScaleRefusal::OutOfBounds {
                        min: *min,
                        max: *max,
                    }
                }
                core::ScaleRefusal::TooMany { max } => {
                    crate::error::ScaleRefusal::TooMany { max: *max }
                }
                core::ScaleRefusal::FixedHostPort { port } => {
                    crate::error::ScaleRefusal::FixedHostPort { port: *port }
                }
                core::ScaleRefusal::PortRangeTooSmall { first, last } => {
                    crate::error::ScaleRefusal::PortRangeTooSmall {
                        first: *first,
                        last: *last,
                    }
                }
            },
        },
    }
}

pub fn gpu_want(r: &core_gpu::SliceRequest) -> GpuWant {
    match r {
        core_gpu::SliceRequest::Mig { profile } => GpuWant::Mig {
            profile: profile.to_string(),
        },
        core_gpu::SliceRequest::Mps { memory, compute } => GpuWant::Mps {
            memory_bytes: memory.bytes(),
            compute_basis_points: compute.basis_points(),
        },
        core_gpu::SliceRequest::Exclusive => GpuWant::Exclusive,
        core_gpu::SliceRequest::TimeSlice => GpuWant::TimeSlice,
    }
}

/// A request and its fallbacks, in order.
pub fn gpu_request(r: &core_gpu::GpuRequest) -> Vec<GpuWant> {
    r.chain().map(|x| gpu_want(&x.kind)).collect()
}

/// A GPU's readings; a reading the GPU does not offer is 0.
pub fn gpu_telemetry(t: &orch_core::gpu::Telemetry) -> crate::reply::GpuTelemetry {
    crate::reply::GpuTelemetry {
        memory_used_bytes: t.memory_used.map(|m| m.bytes()).unwrap_or(0),
        // NVML reads whole percents.
        utilization_gpu_basis_points: t.gpu_utilization.unwrap_or(0).saturating_mul(100),
        utilization_memory_basis_points: t.memory_utilization.unwrap_or(0).saturating_mul(100),
        temperature_celsius: t.temperature_c.unwrap_or(0),
        power_mw: t.power_mw.unwrap_or(0),
    }
}

pub fn gpu_info(g: &core_gpu::GpuInfo) -> GpuInfo {
    GpuInfo {
        index: g.index,
        uuid: g.uuid.clone(),
        name: g.name.clone(),
        memory_total_bytes: g.memory_total.bytes(),
        mig: match &g.mig {
            core_gpu::MigState::Unsupported => Mig::Unsupported,
            core_gpu::MigState::Disabled { pending_enable } => Mig::Disabled {
                pending_enable: *pending_enable,
            },
            core_gpu::MigState::Enabled {
                pending_disable,
                memory_slices,
                compute_slices,
                profiles,
                instances,
            } => Mig::Enabled {
                pending_disable: *pending_disable,
                memory_slices: *memory_slices,
                compute_slices: *compute_slices,
                profiles: profiles
                    .iter()
                    .map(|p| MigProfile {
                        id: p.id,
                        name: p.name.clone(),
                        compute_slices: p.compute_slices,
                        memory_slices: p.memory_slices,
                        memory_bytes: p.memory.bytes(),
                        max_instances: p.max_instances,
                        placements: p.placements.clone(),
                    })
                    .collect(),
                instances: instances
                    .iter()
                    .map(|i| MigInstance {
                        gi_id: i.gi_id,
                        profile_id: i.profile_id,
                        profile: profiles
                            .iter()
                            .find(|p| p.id == i.profile_id)
                            .map(|p| p.name.clone()),
                        placement_start: i.placement_start,
                        placement_size: i.placement_size,
                        ci_id: i.ci_id,
                        device_uuid: i.device_uuid.clone(),
                        owned: i.owned,
                    })
                    .collect(),
            },
        },
        lost: g.lost,
        reserved_bytes: g.reserved.map(|r| r.bytes()),
    }
}

/// The policy of the `gpus:` list that applies to `g` (the first whose
/// selector matches), if any.
pub fn gpu_policy(
    g: &core_gpu::GpuInfo,
    policies: &[orch_core::model::GpuPolicy],
) -> Option<GpuPolicy> {
    policies
        .iter()
        .find(|p| p.select.matches(g.index, &g.uuid, &g.name))
        .map(|p| GpuPolicy {
            sharing: p.sharing.map(|s| s.as_str().to_string()),
            reserve_bytes: p.reserve.bytes(),
            oversubscribe: p.oversubscribe,
        })
}

// ---------------------------------------------------------------------------
// Back: a peer's GPU report as the planner takes it.
// ---------------------------------------------------------------------------

/// A GPU of a peer's report as the planner takes it (the way back of
/// [`gpu_info`]). The MIG placements a daemon too old to send them left
/// out come from the catalog, for a GPU class it knows; a profile without
/// placements has no room for a new instance.
pub fn gpu_info_back(g: &GpuInfo) -> core_gpu::GpuInfo {
    let catalog = core_gpu::class_by_name(&g.name).and_then(|c| c.mig);
    let placements = |p: &MigProfile| {
        if !p.placements.is_empty() {
            return p.placements.clone();
        }
        catalog
            .and_then(|m| m.profiles.iter().find(|c| c.id == p.id))
            .map(|c| c.placements.to_vec())
            .unwrap_or_default()
    };
    core_gpu::GpuInfo {
        index: g.index,
        uuid: g.uuid.clone(),
        name: g.name.clone(),
        memory_total: orch_core::units::ByteSize(g.memory_total_bytes),
        mig: match &g.mig {
            Mig::Unsupported => core_gpu::MigState::Unsupported,
            Mig::Disabled { pending_enable } => core_gpu::MigState::Disabled {
                pending_enable: *pending_enable,
            },
            Mig::Enabled {
                pending_disable,
                memory_slices,
                compute_slices,
                profiles,
                instances,
            } => core_gpu::MigState::Enabled {
                pending_disable: *pending_disable,
                memory_slices: *memory_slices,
                compute_slices: *compute_slices,
                profiles: profiles
                    .iter()
                    .map(|p| core_gpu::GiProfile {
                        id: p.id,
                        name: p.name.clone(),
                        compute_slices: p.compute_slices,
                        memory_slices: p.memory_slices,
                        memory: orch_core::units::ByteSize(p.memory_bytes),
                        max_instances: p.max_instances,
                        placements: placements(p),
                    })
                    .collect(),
                instances: instances
                    .iter()
                    .map(|i| core_gpu::MigInstance {
                        gi_id: i.gi_id,
                        profile_id: i.profile_id,
                        placement_start: i.placement_start,
                        placement_size: i.placement_size,
                        ci_id: i.ci_id,
                        device_uuid: i.device_uuid.clone(),
                        owned: i.owned,
                    })
                    .collect(),
            },
        },
        lost: g.lost,
        reserved: g.reserved_bytes.map(orch_core::units::ByteSize),
    }
}

/// A slice of a peer's report against its GPUs (as [`gpu_info_back`] read
/// them): a MIG slice finds its profile and its instance (by MIG device,
/// else by profile and placement). `None` for a GPU or profile the report
/// does not have.
pub fn slice_back(s: &Slice, gpus: &[core_gpu::GpuInfo]) -> Option<core_gpu::Slice> {
    let gpu = gpus.iter().find(|g| g.uuid == s.gpu_uuid())?;
    Some(match s {
        Slice::Mig {
            gpu_index,
            gpu_uuid,
            profile,
            placement_start,
            device_uuid,
            ..
        } => {
            let core_gpu::MigState::Enabled {
                profiles,
                instances,
                ..
            } = &gpu.mig
            else {
                return None;
            };
            let p = profiles.iter().find(|p| p.name == *profile)?;
            let instance = instances.iter().find(|i| match device_uuid {
                Some(d) => i.device_uuid.as_ref() == Some(d),
                None => i.profile_id == p.id && i.placement_start == *placement_start,
            });
            core_gpu::Slice::Mig {
                gpu_index: *gpu_index,
                gpu_uuid: gpu_uuid.clone(),
                profile: profile.clone(),
                profile_id: p.id,
                placement_start: *placement_start,
                gi_id: instance.map(|i| i.gi_id),
                ci_id: instance.and_then(|i| i.ci_id),
                device_uuid: device_uuid.clone(),
            }
        }
        Slice::Mps {
            gpu_index,
            gpu_uuid,
            memory_bytes,
            compute_basis_points,
        } => core_gpu::Slice::Mps {
            gpu_index: *gpu_index,
            gpu_uuid: gpu_uuid.clone(),
            memory: orch_core::units::ByteSize(*memory_bytes),
            compute: orch_core::units::Percent::from_basis_points(*compute_basis_points),
        },
        Slice::Exclusive {
            gpu_index,
            gpu_uuid,
        } => core_gpu::Slice::Exclusive {
            gpu_index: *gpu_index,
            gpu_uuid: gpu_uuid.clone(),
        },
        Slice::TimeSlice {
            gpu_index,
            gpu_uuid,
        } => core_gpu::Slice::TimeSlice {
            gpu_index: *gpu_index,
            gpu_uuid: gpu_uuid.clone(),
        },
    })
}

/// A sharing mode by its name (`mig`, `mps`, `exclusive`, `time-slice`).
fn sharing_back(name: &str) -> Option<orch_core::model::Sharing> {
    use orch_core::model::Sharing;
    [
        Sharing::Mig,
        Sharing::Mps,
        Sharing::Exclusive,
        Sharing::TimeSlice,
    ]
    .into_iter()
    .find(|s| s.as_str() == name)
}

/// The policy a peer's GPU is planned with: the one its report names
/// (the way back of [`gpu_policy`]); from a daemon too old to name it,
/// the sharing mode its free capacity says, with the default reserve.
/// `None`: the planner's defaults.
pub fn gpu_policy_back(
    uuid: &str,
    policy: Option<&GpuPolicy>,
    free_sharing: &str,
) -> Option<orch_core::model::GpuPolicy> {
    let select = orch_core::model::GpuSelector::Uuid(uuid.to_string());
    match policy {
        Some(p) => Some(orch_core::model::GpuPolicy {
            select,
            sharing: p.sharing.as_deref().and_then(sharing_back),
            reserve: orch_core::units::ByteSize(p.reserve_bytes),
            oversubscribe: p.oversubscribe,
        }),
        None => sharing_back(free_sharing).map(|s| orch_core::model::GpuPolicy {
            select,
            sharing: Some(s),
            reserve: core_plan::DEFAULT_RESERVE,
            oversubscribe: false,
        }),
    }
}

pub fn plan_error(e: &core_plan::PlanError) -> PlanError {
    PlanError {
        replica: replica(&e.replica),
        attempts: e
            .attempts
            .iter()
            .map(|a| PlanAttempt {
                wanted: gpu_want(&a.wanted),
                refusals: a
                    .refusals
                    .iter()
                    .map(|r| Refusal {
                        gpu_index: r.gpu_index,
                        gpu_name: r.gpu_name.clone(),
                        why: refusal(&r.reason),
                    })
                    .collect(),
            })
            .collect(),
    }
}

pub fn refusal(r: &core_plan::RefusalReason) -> RefusalReason {
    use core_plan::RefusalReason as C;
    match r {
        C::Lost => RefusalReason::Lost,
        C::NoMig => RefusalReason::NoMig,
        C::MigOff { pending_enable } => RefusalReason::MigOff {
            pending_enable: *pending_enable,
        },
        C::MigOn => RefusalReason::MigOn,
        C::NoSuchProfile { profile, offered } => RefusalReason::NoSuchProfile {
            profile: profile.clone(),
            offered: offered.clone(),
        },
        C::UnsupportedGeometry { memory_slices } => RefusalReason::UnsupportedGeometry {
            memory_slices: *memory_slices,
        },
        C::Policy { sharing } => RefusalReason::Policy {
            sharing: sharing.as_str().to_string(),
        },
        C::TimeSliceNeedsPolicy => RefusalReason::TimeSliceNeedsPolicy,
        C::MigMaxInstances { profile, max } => RefusalReason::MigMaxInstances {
            profile: profile.clone(),
            max: *max,
        },
        C::MigComputeFull {
            profile,
            used,
            total,
            needed,
        } => RefusalReason::MigComputeFull {
            profile: profile.clone(),
            used: *used,
            total: *total,
            needed: *needed,
        },
        C::MigNoPlacement { profile, occupants } => RefusalReason::MigNoPlacement {
            profile: profile.clone(),
            occupants: occupants
                .iter()
                .map(|o| Occupant {
                    profile: o.profile.clone(),
                    placement_start: o.placement_start,
                    holder: o.holder.as_ref().map(replica),
                    gi_id: o.gi_id,
                })
                .collect(),
        },
        C::MpsClients { clients, max } => RefusalReason::MpsClients {
            clients: *clients,
            max: *max,
        },
        C::MpsMemory {
            used,
            capacity,
            reserve,
            clients,
            wanted,
        } => RefusalReason::MpsMemory {
            used_bytes: used.bytes(),
            capacity_bytes: capacity.bytes(),
            reserve_bytes: reserve.bytes(),
            clients: *clients,
            wanted_bytes: wanted.bytes(),
        },
        C::MpsCompute {
            used_basis_points,
            clients,
            wanted,
        } => RefusalReason::MpsCompute {
            used_basis_points: *used_basis_points,
            clients: *clients,
            wanted_basis_points: wanted.basis_points(),
        },
        C::HeldExclusive { holder } => RefusalReason::HeldExclusive {
            holder: replica(holder),
        },
        C::InUse {
            mps_clients,
            time_slice_clients,
        } => RefusalReason::InUse {
            mps_clients: *mps_clients,
            time_slice_clients: *time_slice_clients,
        },
    }
}

pub fn plan_note(n: &core_plan::PlanNote) -> PlanNote {
    use core_plan::PlanNote as C;
    match n {
        C::GpuLost {
            gpu_index,
            gpu_uuid,
            name,
        } => PlanNote::GpuLost {
            gpu_index: *gpu_index,
            gpu_uuid: gpu_uuid.clone(),
            name: name.clone(),
        },
        C::MigModePending {
            gpu_index,
            name,
            enable,
        } => PlanNote::MigModePending {
            gpu_index: *gpu_index,
            name: name.clone(),
            enable: *enable,
        },
        C::PolicyUnusable {
            gpu_index,
            name,
            sharing,
            mig_on,
            mig_capable,
        } => PlanNote::PolicyUnusable {
            gpu_index: *gpu_index,
            name: name.clone(),
            sharing: sharing.as_str().to_string(),
            mig_on: *mig_on,
            mig_capable: *mig_capable,
        },
        C::Dropped {
            replica: r,
            slice: s,
            reason,
        } => PlanNote::Dropped {
            replica: replica(r),
            slice: slice(s, None),
            why: match reason {
                core_plan::DropReason::RequestChanged => DropReason::RequestChanged,
                core_plan::DropReason::GpuGone => DropReason::GpuGone,
                core_plan::DropReason::InstanceGone => DropReason::InstanceGone,
                core_plan::DropReason::Refused(r) => DropReason::Refused {
                    refusal: refusal(r),
                },
            },
        },
        C::Reapplied {
            replica: r,
            gpu_index,
            profile,
            placement_start,
        } => PlanNote::Reapplied {
            replica: replica(r),
            gpu_index: *gpu_index,
            profile: profile.clone(),
            placement_start: *placement_start,
        },
        C::SearchCutShort { replica: r } => PlanNote::SearchCutShort {
            replica: replica(r),
        },
    }
}

pub fn restart_cause(reason: &core::RestartCause) -> RestartCause {
    match reason {
        core::RestartCause::MpsServerFault { gpu_uuid } => RestartCause::MpsServerFault {
            gpu_uuid: gpu_uuid.clone(),
        },
    }
}

pub fn restart_reason(r: core::RestartReason) -> RestartReason {
    match r {
        core::RestartReason::Exited => RestartReason::Exited,
        core::RestartReason::Unhealthy => RestartReason::Unhealthy,
        core::RestartReason::GpuMemoryExceeded => RestartReason::GpuMemoryExceeded,
    }
}

pub fn event_kind(e: &core::SupervisorEvent, inventory: Option<&[core_gpu::GpuInfo]>) -> EventKind {
    use core::SupervisorEvent as C;
    let r = replica;
    match e {
        C::GroupStarting { group } => EventKind::GroupStarting {
            group: group.clone(),
        },
        C::GroupReady { group } => EventKind::GroupReady {
            group: group.clone(),
        },
        C::GroupStopping { group } => EventKind::GroupStopping {
            group: group.clone(),
        },
        C::GroupStopped { group } => EventKind::GroupStopped {
            group: group.clone(),
        },
        C::AgentStarting { replica, group } => EventKind::AgentStarting {
            replica: r(replica),
            group: group.clone(),
        },
        C::AgentRunning { replica, group } => EventKind::AgentRunning {
            replica: r(replica),
            group: group.clone(),
        },
        C::AgentHealthy { replica, group } => EventKind::AgentHealthy {
            replica: r(replica),
            group: group.clone(),
        },
        C::AgentUnhealthy { replica, group } => EventKind::AgentUnhealthy {
            replica: r(replica),
            group: group.clone(),
        },
        C::AgentExited {
            replica,
            group,
            code,
            oom,
        } => EventKind::AgentExited {
            replica: r(replica),
            group: group.clone(),
            code: *code,
            oom: *oom,
        },
        C::AgentRestarting {
            replica,
            group,
            in_ms,
            attempt,
            reason,
        } => EventKind::AgentRestarting {
            replica: r(replica),
            group: group.clone(),
            in_ms: *in_ms,
            attempt: *attempt,
            reason: Some(restart_reason(*reason)),
        },
        C::AgentGpuOverLimit {
            replica,
            group,
            gpu_index,
            gpu_uuid,
            used_bytes,
            limit_bytes,
            action,
        } => EventKind::AgentGpuOverLimit {
            replica: r(replica),
            group: group.clone(),
            gpu_index: *gpu_index,
            gpu_uuid: gpu_uuid.clone(),
            used_bytes: *used_bytes,
            limit_bytes: *limit_bytes,
            action: match action {
                orch_core::model::OverLimit::Warn => OverLimitAction::Warn,
                orch_core::model::OverLimit::Restart => OverLimitAction::Restart,
            },
        },
        C::AgentRestartRequested { replica, group } => EventKind::AgentRestartRequested {
            replica: r(replica),
            group: group.clone(),
        },
        C::AgentRestarted {
            replica,
            group,
            reason,
        } => EventKind::AgentRestarted {
            replica: r(replica),
            group: group.clone(),
            reason: restart_cause(reason),
        },
        C::MpsServerFault {
            gpu_index,
            gpu_uuid,
            client,
            clients_listed,
            restarting,
        } => EventKind::MpsServerFault {
            gpu_index: *gpu_index,
            gpu_uuid: gpu_uuid.clone(),
            client: client.as_ref().map(|c| MpsFaultClient {
                pid: c.pid,
                replica: c.replica.as_ref().map(r),
            }),
            clients_listed: *clients_listed,
            restarting: restarting.iter().map(r).collect(),
        },
        C::AgentCrashLoop {
            replica,
            group,
            restarts,
            window_ms,
        } => EventKind::AgentCrashLoop {
            replica: r(replica),
            group: group.clone(),
            restarts: *restarts,
            window_ms: *window_ms,
        },
        C::AgentRecovered { replica, group } => EventKind::AgentRecovered {
            replica: r(replica),
            group: group.clone(),
        },
        C::AgentHeld {
            replica,
            group,
            waiting_for,
        } => EventKind::AgentHeld {
            replica: r(replica),
            group: group.clone(),
            waiting_for: waiting_for.iter().map(wait).collect(),
        },
        C::AgentFailed {
            replica,
            group,
            reason,
        } => EventKind::AgentFailed {
            replica: r(replica),
            group: group.clone(),
            reason: fail_reason(reason),
        },
        C::AgentStopped { replica, group } => EventKind::AgentStopped {
            replica: r(replica),
            group: group.clone(),
        },
        C::AgentAdopted {
            replica,
            group,
            container,
        } => EventKind::AgentAdopted {
            replica: r(replica),
            group: group.clone(),
            container: container.clone(),
        },
        C::DuplicateRemoved { replica, container } => EventKind::DuplicateRemoved {
            replica: r(replica),
            container: container.clone(),
        },
        C::ConfigApplied {
            generation,
            changed,
        } => EventKind::ConfigApplied {
            generation: *generation,
            changed: changed.clone(),
        },
        C::RolloutStarted {
            generation,
            kind,
            previous,
            agents,
        } => EventKind::RolloutStarted {
            generation: *generation,
            rollout: rollout_kind(*kind),
            previous: *previous,
            agents: agents.clone(),
        },
        C::RolloutStepDone {
            generation,
            replica: k,
        } => EventKind::RolloutStepDone {
            generation: *generation,
            replica: r(k),
        },
        C::RolloutFailed {
            generation,
            failure,
            rollback_to,
        } => EventKind::RolloutFailed {
            generation: *generation,
            failure: step_failure(failure),
            rollback_to: *rollback_to,
        },
        C::RolloutPaused { generation } => EventKind::RolloutPaused {
            generation: *generation,
        },
        C::RolloutResumed { generation } => EventKind::RolloutResumed {
            generation: *generation,
        },
        C::RolloutCompleted { generation, kind } => EventKind::RolloutCompleted {
            generation: *generation,
            rollout: rollout_kind(*kind),
        },
        C::DockerDown => EventKind::DockerDown,
        C::DockerUp => EventKind::DockerUp,
        C::SliceAssigned {
            replica,
            group,
            slice: s,
            fallback_depth,
        } => EventKind::SliceAssigned {
            replica: r(replica),
            group: group.clone(),
            slice: slice(s, inventory),
            fallback_depth: *fallback_depth,
        },
        C::MigDestroyed { gpu_index, gi_id } => EventKind::MigDestroyed {
            gpu_index: *gpu_index,
            gi_id: *gi_id,
        },
        C::GpuNote { note } => EventKind::GpuNote {
            note: plan_note(note),
        },
        C::GpuUnavailable { reason } => EventKind::GpuUnavailable {
            reason: reason.clone(),
        },
        C::StateInferred {
            origin,
            adopted,
            groups,
            unconfigured,
        } => EventKind::StateInferred {
            origin: origin.label().to_string(),
            adopted: *adopted,
            groups: groups.clone(),
            unconfigured: *unconfigured,
        },
        C::FreshStart { stopping } => EventKind::FreshStart {
            stopping: *stopping,
        },
        C::StateWriteFailed { detail } => EventKind::StateWriteFailed {
            detail: detail.clone(),
        },
        C::StateWritten => EventKind::StateWritten,
        C::AgentScaled {
            agent,
            group,
            from,
            to,
            reset,
        } => EventKind::AgentScaled {
            group: group.clone(),
            agent: agent.clone(),
            from: *from,
            to: *to,
            reset: *reset,
        },
        C::AgentAutoscaled {
            agent,
            group,
            from,
            to,
            cause,
        } => EventKind::AgentAutoscaled {
            group: group.clone(),
            agent: agent.clone(),
            from: *from,
            to: *to,
            cause: autoscale_cause(cause),
        },
        C::AgentStaysDown {
            replica,
            group,
            code,
        } => EventKind::AgentStaysDown {
            replica: r(replica),
            group: group.clone(),
            code: *code,
        },
    }
}

/// The desired state as `state export` writes it.
pub fn state_document(host: &str, p: &core::Persisted) -> StateDocument {
    StateDocument {
        kind: StateDocument::KIND.into(),
        format: StateDocument::FORMAT,
        host: host.to_string(),
        generation: p.generation,
        started_groups: p.started_groups.iter().cloned().collect(),
        stopped_groups: p.stopped_groups.iter().cloned().collect(),
        scale: p.scale.clone(),
        owned_mig: p
            .owned_mig
            .iter()
            .map(|m| OwnedMigInstance {
                gpu_uuid: m.gpu_uuid.clone(),
                gi_id: m.gi_id,
                profile_id: m.profile_id,
                placement_start: m.placement_start,
            })
            .collect(),
    }
}

/// An imported document as the supervisor's desired state (no slices:
/// those are planned on the host, never carried between hosts).
pub fn persisted_of(d: &StateDocument) -> core::Persisted {
    core::Persisted {
        started_groups: d.started_groups.iter().cloned().collect(),
        stopped_groups: d.stopped_groups.iter().cloned().collect(),
        generation: d.generation,
        slices: Default::default(),
        restarts: Default::default(),
        scale: d.scale.clone(),
        autoscaled: Default::default(),
        owned_mig: d
            .owned_mig
            .iter()
            .map(|m| core::OwnedMig {
                gpu_uuid: m.gpu_uuid.clone(),
                gi_id: m.gi_id,
                profile_id: m.profile_id,
                placement_start: m.placement_start,
            })
            .collect(),
    }
}

/// The SLO engine's figures as the API gives them.
/// What is ready on a host, from its snapshot: an agent whose every
/// replica runs healthy and is not crash-looping, a group that is ready.
/// (The other way: what a peer said, as cross-host dependencies read it.)
pub fn remote_view(s: &crate::reply::HostSnapshot) -> core::RemoteView {
    let mut ready = std::collections::BTreeMap::<&str, bool>::new();
    // Running, none unhealthy or crash-looping, some not probed yet.
    let mut pending = std::collections::BTreeMap::<&str, (bool, bool)>::new();
    for a in &s.agents {
        let ok = a.phase == Phase::Running && a.health == Health::Healthy && !a.crashloop;
        *ready.entry(a.agent.as_str()).or_insert(true) &= ok;
        let (fine, unprobed) = pending.entry(a.agent.as_str()).or_insert((true, false));
        *fine &= a.phase == Phase::Running && a.health != Health::Unhealthy && !a.crashloop;
        *unprobed |= a.health == Health::Unknown;
    }
    core::RemoteView {
        pending_agents: pending
            .into_iter()
            .filter(|(_, (fine, unprobed))| *fine && *unprobed)
            .map(|(a, _)| a.to_string())
            .collect(),
        ready_agents: ready
            .into_iter()
            .filter(|(_, ok)| *ok)
            .map(|(a, _)| a.to_string())
            .collect(),
        ready_groups: s
            .status
            .groups
            .iter()
            .filter(|g| g.state == crate::reply::GroupState::Ready)
            .map(|g| g.name.clone())
            .collect(),
    }
}

pub fn slo_report(host: &str, reports: &[orch_core::slo::GroupReport]) -> crate::reply::SloReport {
    use crate::reply::{SloGroup, SloReport, SloSli, SloWindow};
    SloReport {
        host: host.to_string(),
        groups: reports
            .iter()
            .map(|g| SloGroup {
                group: g.group.clone(),
                slis: g
                    .slis
                    .iter()
                    .map(|s| SloSli {
                        slo: s.objective.sli.as_str().to_string(),
                        objective: s.objective.target,
                        budget: s.objective.budget,
                        latency_threshold_ms: s
                            .objective
                            .threshold
                            .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
                        slo_window: s.slo_window.to_string(),
                        events: s.totals.total(),
                        errors: s.totals.bad,
                        budget_remaining: s.budget_remaining,
                        windows: s
                            .windows
                            .iter()
                            .map(|w| SloWindow {
                                window: w.window.to_string(),
                                events: w.events.total(),
                                errors: w.events.bad,
                                error_ratio: w.error_ratio,
                                burn_rate: w.burn_rate,
                            })
                            .collect(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// An autoscaler's reason, on the wire.
pub fn autoscale_cause(c: &orch_core::autoscale::Cause) -> AutoscaleCause {
    use orch_core::autoscale::{Cause, Signal};
    match *c {
        Cause::Signal {
            signal,
            value,
            target,
            recommended,
            bounded,
        } => AutoscaleCause::Signal {
            signal: match signal {
                Signal::Cpu => "cpu",
                Signal::GpuUtil => "gpu-util",
                Signal::Metric => "metric",
                Signal::LatencySlo => "latency-slo",
            }
            .to_string(),
            value,
            target,
            recommended,
            bounded,
        },
        Cause::BelowMin { min } => AutoscaleCause::BelowMin { min },
        Cause::AboveMax { max } => AutoscaleCause::AboveMax { max },
    }
}

/// The groups and agents of a core diff, values as text (see
/// [`crate::diff`]: an `env` entry's value is never carried).
pub fn config_diff(
    d: &orch_core::diff::ConfigDiff,
) -> (Vec<crate::diff::GroupDiff>, Vec<crate::diff::AgentDiff>) {
    use crate::diff::{AgentDiff, GroupDiff};
    use orch_core::diff as core_diff;
    let groups = d
        .groups
        .iter()
        .map(|g| match g {
            core_diff::GroupDiff::Added { group } => GroupDiff::Added {
                group: group.clone(),
            },
            core_diff::GroupDiff::Removed { group } => GroupDiff::Removed {
                group: group.clone(),
            },
            core_diff::GroupDiff::Changed { group, changes } => GroupDiff::Changed {
                group: group.clone(),
                changes: changes.iter().map(group_change).collect(),
            },
        })
        .collect();
    let agents = d
        .agents
        .iter()
        .map(|a| match a {
            core_diff::AgentDiff::Added {
                agent,
                group,
                replicas,
            } => AgentDiff::Added {
                agent: agent.clone(),
                group: group.clone(),
                replicas: *replicas,
            },
            core_diff::AgentDiff::Removed {
                agent,
                group,
                replicas,
            } => AgentDiff::Removed {
                agent: agent.clone(),
                group: group.clone(),
                replicas: *replicas,
            },
            core_diff::AgentDiff::Changed {
                agent,
                group,
                changes,
                effect,
            } => AgentDiff::Changed {
                agent: agent.clone(),
                group: group.clone(),
                changes: changes.iter().flat_map(agent_change).collect(),
                effect: diff_effect(*effect),
            },
        })
        .collect();
    (groups, agents)
}

/// What applying `new` (the file `to`) over `old` (the file `from`) would
/// change, two files compared with no daemon: no counts set at run time.
pub fn file_diff(
    from: &str,
    old: &orch_core::model::HostConfig,
    to: &str,
    new: &orch_core::model::HostConfig,
) -> crate::diff::DiffReport {
    let (groups, agents) = config_diff(&orch_core::diff::diff(old, new));
    crate::diff::DiffReport {
        host: new.host.name.clone(),
        from: from.to_string(),
        to: to.to_string(),
        groups,
        agents,
        run_time_counts: vec![],
    }
}

pub fn diff_effect(e: orch_core::diff::Effect) -> crate::diff::Effect {
    use crate::diff::Effect;
    match e {
        orch_core::diff::Effect::Recreate {
            old_replicas,
            new_replicas,
        } => Effect::Recreate {
            old_replicas,
            new_replicas,
        },
        orch_core::diff::Effect::Scale { old, new } => Effect::Scale { old, new },
        orch_core::diff::Effect::InPlace => Effect::InPlace,
    }
}

/// A setting's value as compact JSON, for the structured ones that have
/// no form of their own in a config file's one line.
fn json_text<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// A list as the config's one-line form: `a, b` (`None` when empty, so an
/// empty list reads as "not set").
fn list_text<T: std::fmt::Display>(v: &[T]) -> Option<String> {
    (!v.is_empty()).then(|| {
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    })
}

/// A GPU request and its fallbacks: `mig 1g.10gb -> exclusive`.
pub fn gpu_request_text(r: &core_gpu::GpuRequest) -> String {
    gpu_request(r)
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" -> ")
}

fn value_change(
    field: crate::diff::Field,
    old: Option<String>,
    new: Option<String>,
) -> crate::diff::FieldChange {
    crate::diff::FieldChange {
        field,
        key: None,
        entry: None,
        old,
        new,
    }
}

fn group_change(c: &orch_core::diff::GroupChange) -> crate::diff::FieldChange {
    use crate::diff::Field;
    use orch_core::diff::GroupChange as G;
    match c {
        G::Description { old, new } => value_change(Field::Description, old.clone(), new.clone()),
        G::DependsOn { old, new } => value_change(Field::DependsOn, list_text(old), list_text(new)),
        G::Slo { old, new } => value_change(
            Field::Slo,
            old.as_ref().map(json_text),
            new.as_ref().map(json_text),
        ),
        G::Rollout { old, new } => {
            value_change(Field::Rollout, Some(json_text(old)), Some(json_text(new)))
        }
        G::MinHealthy { old, new } => value_change(
            Field::MinHealthy,
            Some(old.to_string()),
            Some(new.to_string()),
        ),
    }
}

/// The entries of a map setting; `values`: whether their values travel.
fn map_changes(
    field: crate::diff::Field,
    changes: &[orch_core::diff::MapChange],
    values: bool,
) -> Vec<crate::diff::FieldChange> {
    use crate::diff::EntryChange;
    changes
        .iter()
        .map(|m| crate::diff::FieldChange {
            field,
            key: Some(m.key.clone()),
            entry: Some(match (&m.old, &m.new) {
                (None, _) => EntryChange::Added,
                (_, None) => EntryChange::Removed,
                _ => EntryChange::Changed,
            }),
            old: m.old.clone().filter(|_| values),
            new: m.new.clone().filter(|_| values),
        })
        .collect()
}

/// One core change as wire changes: one, or one per entry of a map.
fn agent_change(c: &orch_core::diff::AgentChange) -> Vec<crate::diff::FieldChange> {
    use crate::diff::Field;
    use orch_core::diff::AgentChange as A;
    let one = |field, old, new| vec![value_change(field, old, new)];
    match c {
        A::Group { old, new } => one(Field::Group, Some(old.clone()), Some(new.clone())),
        A::Image { old, new } => one(Field::Image, Some(old.clone()), Some(new.clone())),
        A::Command { old, new } => one(
            Field::Command,
            old.as_ref().map(|v| v.join(" ")),
            new.as_ref().map(|v| v.join(" ")),
        ),
        A::Env(entries) => map_changes(Field::Env, entries, false),
        A::Labels(entries) => map_changes(Field::Labels, entries, true),
        A::Ports { old, new } => one(Field::Ports, list_text(old), list_text(new)),
        A::Volumes { old, new } => one(Field::Volumes, list_text(old), list_text(new)),
        A::DependsOn { old, new } => one(Field::DependsOn, list_text(old), list_text(new)),
        A::Gpu { old, new } => one(
            Field::Gpu,
            old.as_ref().map(gpu_request_text),
            new.as_ref().map(gpu_request_text),
        ),
        A::GpuOverLimit { old, new } => one(
            Field::GpuOverLimit,
            Some(json_text(old).trim_matches('"').to_string()),
            Some(json_text(new).trim_matches('"').to_string()),
        ),
        A::Restart { old, new } => one(Field::Restart, Some(json_text(old)), Some(json_text(new))),
        A::Health { old, new } => one(Field::Health, Some(json_text(old)), Some(json_text(new))),
        A::Resources { old, new } => {
            one(Field::Resources, Some(json_text(old)), Some(json_text(new)))
        }
        A::Security { old, new } => {
            one(Field::Security, Some(json_text(old)), Some(json_text(new)))
        }
        A::Replicas { old, new } => one(
            Field::Replicas,
            Some(old.to_string()),
            Some(new.to_string()),
        ),
        A::Required { old, new } => one(
            Field::Required,
            Some(old.to_string()),
            Some(new.to_string()),
        ),
        A::StopTimeout { old, new } => one(
            Field::StopTimeout,
            Some(old.to_string()),
            Some(new.to_string()),
        ),
        A::Config { old, new } => one(
            Field::Config,
            old.as_ref().map(json_text),
            new.as_ref().map(json_text),
        ),
        A::ScriptPath { old, new } => one(Field::ScriptPath, old.clone(), new.clone()),
        // Names and host files only: a secret's value is never in the model.
        A::Secrets { old, new } => {
            let names = |v: &[orch_core::model::SecretMount]| {
                list_text(
                    &v.iter()
                        .map(|s| format!("{} ({})", s.name, s.source))
                        .collect::<Vec<_>>(),
                )
            };
            one(Field::Secrets, names(old), names(new))
        }
        A::Autoscale { old, new } => one(
            Field::Autoscale,
            old.as_ref().map(json_text),
            new.as_ref().map(json_text),
        ),
    }
}

pub fn rollout_kind(k: core::RolloutKind) -> RolloutKind {
    use crate::rollout::RolloutKind as W;
    match k {
        core::RolloutKind::Apply => W::Apply,
        core::RolloutKind::Rollback { from, to } => W::Rollback { from, to },
        core::RolloutKind::Undo { to } => W::Undo { to },
    }
}

pub fn step_failure(f: &core::StepFailure) -> StepFailure {
    use crate::rollout::RolloutSignal as W;
    let signal = match &f.signal {
        core::Signal::NotLaunched(e) => W::NotLaunched {
            reason: fail_reason(&core::FailReason::Launch(e.clone())),
        },
        core::Signal::NotHealthyInTime { deadline_ms } => W::NotHealthyInTime {
            deadline_ms: *deadline_ms,
        },
        core::Signal::Exited { code } => W::Exited { code: *code },
        core::Signal::Unhealthy => W::Unhealthy,
        core::Signal::CrashLoop {
            restarts,
            window_ms,
        } => W::CrashLoop {
            restarts: *restarts,
            window_ms: *window_ms,
        },
        core::Signal::SloBurn {
            sli,
            burn,
            threshold,
            requests,
            bad,
        } => W::SloBurn {
            sli: sli.as_str().to_string(),
            burn: *burn,
            threshold: *threshold,
            requests: *requests,
            bad: *bad,
        },
    };
    StepFailure {
        replica: replica(&f.replica),
        group: f.group.clone(),
        signal,
    }
}

/// A rollout command the supervisor refused.
pub fn rollout_refusal(r: core::RolloutRefusal) -> crate::RolloutRefusal {
    use crate::RolloutRefusal as W;
    match r {
        core::RolloutRefusal::NoRollout => W::NoRollout,
        core::RolloutRefusal::Ended { generation, phase } => W::Ended {
            generation,
            phase: phase.to_string(),
        },
        core::RolloutRefusal::AlreadyPaused { generation } => W::AlreadyPaused { generation },
        core::RolloutRefusal::NotPaused { generation } => W::NotPaused { generation },
    }
}

pub fn rollout_phase(p: &core::RolloutPhase) -> crate::rollout::RolloutPhase {
    use crate::rollout::RolloutPhase as W;
    match p {
        core::RolloutPhase::Progressing => W::Progressing,
        core::RolloutPhase::Paused { .. } => W::Paused,
        core::RolloutPhase::RollingBack { .. } => W::RollingBack,
        core::RolloutPhase::Completed => W::Completed,
        core::RolloutPhase::Superseded { .. } => W::Superseded,
    }
}

/// `rollout status`: the supervisor's last rollout, with each agent's
/// progress.
pub fn rollout_status(
    sup: &core::Supervisor,
    now: Millis,
    events_from: u64,
) -> crate::rollout::RolloutStatus {
    use crate::rollout::{RolloutAgent, RolloutView};
    let rollout = sup.rollout().map(|ro| {
        let (failure, by_operator) = match &ro.phase {
            core::RolloutPhase::Paused { cause } => match cause {
                core::PauseCause::Operator => (None, true),
                core::PauseCause::Failed(f) => (Some(step_failure(f)), false),
            },
            core::RolloutPhase::RollingBack { failure } => (Some(step_failure(failure)), false),
            _ => (None, false),
        };
        let phase = rollout_phase(&ro.phase);
        RolloutView {
            generation: ro.generation,
            kind: rollout_kind(ro.kind),
            previous: ro.previous,
            phase,
            paused_by_operator: by_operator,
            failure,
            age_ms: ro.ended_at.unwrap_or(now).saturating_sub(ro.started_at),
            agents: ro
                .agents
                .iter()
                .map(|a| {
                    let p = sup.rollout_progress(a);
                    RolloutAgent {
                        agent: a.clone(),
                        group: sup
                            .config()
                            .agent(a)
                            .map(|x| x.group.clone())
                            .unwrap_or_default(),
                        replicas: p.replicas,
                        done: p.done,
                        in_step: p.in_step,
                    }
                })
                .collect(),
        }
    });
    crate::rollout::RolloutStatus {
        generation: sup.generation(),
        rollout,
        events_from,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One core change in, the wire changes out: values as the config's
    /// text, an `env` entry by name only.
    #[test]
    fn diff_changes_travel_as_text_and_env_values_stay_home() {
        use crate::diff::{EntryChange, Field, FieldChange};
        use orch_core::diff::{AgentChange as A, MapChange};
        let v = |field, old: Option<&str>, new: Option<&str>| FieldChange {
            field,
            key: None,
            entry: None,
            old: old.map(str::to_string),
            new: new.map(str::to_string),
        };
        let port = |host: u16| orch_core::model::PortMapping {
            host_ip: None,
            host_port: Some(host),
            host_port_end: None,
            container_port: 80,
            protocol: orch_core::model::Protocol::Tcp,
        };
        let exclusive = core_gpu::GpuRequest::new(core_gpu::SliceRequest::Exclusive);
        let table = vec![
            (
                A::Image {
                    old: "a:1".into(),
                    new: "a:2".into(),
                },
                vec![v(Field::Image, Some("a:1"), Some("a:2"))],
            ),
            (
                A::Replicas { old: 3, new: 2 },
                vec![v(Field::Replicas, Some("3"), Some("2"))],
            ),
            (
                A::Ports {
                    old: vec![port(8080)],
                    new: vec![port(8081)],
                },
                vec![v(Field::Ports, Some("8080:80"), Some("8081:80"))],
            ),
            (
                A::Gpu {
                    old: None,
                    new: Some(exclusive),
                },
                vec![v(Field::Gpu, None, Some("exclusive"))],
            ),
            (
                A::Env(vec![
                    MapChange {
                        key: "TOKEN".into(),
                        old: Some("s3cret".into()),
                        new: Some("other".into()),
                    },
                    MapChange {
                        key: "FOO".into(),
                        old: None,
                        new: Some("1".into()),
                    },
                ]),
                vec![
                    FieldChange {
                        key: Some("TOKEN".into()),
                        entry: Some(EntryChange::Changed),
                        ..v(Field::Env, None, None)
                    },
                    FieldChange {
                        key: Some("FOO".into()),
                        entry: Some(EntryChange::Added),
                        ..v(Field::Env, None, None)
                    },
                ],
            ),
            (
                A::Labels(vec![MapChange {
                    key: "team".into(),
                    old: Some("a".into()),
                    new: None,
                }]),
                vec![FieldChange {
                    key: Some("team".into()),
                    entry: Some(EntryChange::Removed),
                    ..v(Field::Labels, Some("a"), None)
                }],
            ),
            (
                A::Secrets {
                    old: vec![],
                    new: vec![orch_core::model::SecretMount {
                        name: "hf_token".into(),
                        source: "/etc/orch/hf".into(),
                    }],
                },
                vec![v(Field::Secrets, None, Some("hf_token (/etc/orch/hf)"))],
            ),
            (
                A::GpuOverLimit {
                    old: orch_core::model::OverLimit::Warn,
                    new: orch_core::model::OverLimit::Restart,
                },
                vec![v(Field::GpuOverLimit, Some("warn"), Some("restart"))],
            ),
        ];
        for (core_change, want) in table {
            let (_, agents) = config_diff(&orch_core::diff::ConfigDiff {
                groups: vec![],
                agents: vec![orch_core::diff::AgentDiff::Changed {
                    agent: "Worker".into(),
                    group: "g".into(),
                    changes: vec![core_change.clone()],
                    effect: orch_core::diff::Effect::InPlace,
                }],
            });
            let crate::diff::AgentDiff::Changed { changes, .. } = &agents[0] else {
                panic!("{core_change:?}: not a change");
            };
            assert_eq!(changes, &want, "{core_change:?}");
        }
    }

    #[test]
    fn a_replica_held_by_a_crash_loop_says_which_agent_loops() {
        let w = wait(&core::Wait::CrashLoop("Registry".into()));
        assert_eq!(
            w,
            Wait::CrashLooping {
                agent: "Registry".into()
            }
        );
        assert_eq!(
            serde_json::to_value(&w).unwrap(),
            serde_json::json!({"on": "crash-looping", "agent": "Registry"})
        );
        assert_eq!(
            format!("held (waiting for {})", crate::text::waits(&[w])),
            "held (waiting for Registry: crash-looping)"
        );
    }

    #[test]
    fn a_replica_that_stays_down_is_said_so_on_the_wire() {
        let e = event_kind(
            &core::SupervisorEvent::AgentStaysDown {
                replica: core_gpu::ReplicaKey::new("Batch", 0),
                group: "jobs".into(),
                code: 0,
            },
            None,
        );
        assert_eq!(
            e,
            EventKind::AgentStaysDown {
                replica: ReplicaRef {
                    agent: "Batch".into(),
                    replica: 0
                },
                group: "jobs".into(),
                code: 0,
            }
        );
        assert_eq!(
            e.to_string(),
            "jobs/Batch: exited with code 0 and stays down (its restart policy does not restart it; `restart: always` would, `agent restart` starts it now)"
        );
    }
}
