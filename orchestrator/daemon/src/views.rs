//! Read models: what the API answers (and, later, `/metrics` and the
//! snapshots peers get), as pure functions of the supervisor's state and a
//! few facts the daemon knows about its surroundings. No I/O, no waiting:
//! a status request never touches Docker or NVML.

use std::collections::BTreeMap;

use orch_api::convert;
use orch_api::{
    AgentCounts, AgentStatus, ApiError, DockerStatus, ErrorCode, GpuReport, GpuStatus, GpuSummary,
    GroupState, GroupStatus, SliceOwner, Status, Telemetry,
};
use orch_core::gpu::Slice;
use orch_core::supervise::{GroupPhase, Millis, Replica, Supervisor};

/// What the daemon knows besides the supervisor's state.
#[derive(Debug, Clone, Default)]
pub struct Facts<'a> {
    pub version: &'a str,
    pub pid: u32,
    pub uptime_ms: u64,
    pub config_path: &'a str,
    pub docker_endpoint: &'a str,
    pub engine_version: Option<&'a str>,
    pub api_version: Option<&'a str>,
    /// How GPUs are given to containers (`nvidia`, `cdi`, `env`).
    pub gpu_injection: &'a str,
    /// The supervisor's clock now (for "retry in").
    pub now: Millis,
    pub telemetry: Option<&'a BTreeMap<u32, Telemetry>>,
    pub gpu_library: Option<&'a str>,
    pub driver_version: Option<&'a str>,
    /// The number of the last event logged.
    pub last_event_seq: u64,
}

pub fn group_state(p: GroupPhase) -> GroupState {
    match p {
        GroupPhase::Stopped => GroupState::Stopped,
        GroupPhase::Starting => GroupState::Starting,
        GroupPhase::Ready => GroupState::Ready,
        GroupPhase::Degraded => GroupState::Degraded,
        GroupPhase::Stopping => GroupState::Stopping,
    }
}

pub fn groups(sup: &Supervisor) -> Vec<GroupStatus> {
    let graph = orch_core::graph::group_graph(sup.config());
    sup.config()
        .groups
        .iter()
        .map(|g| {
            let (wanted, running, healthy) = sup.group_counts(&g.name);
            let optional_not_ready = if sup.group_wanted(&g.name) {
                g.agents
                    .iter()
                    .filter(|a| !a.required)
                    .filter(|a| {
                        (0..a.replicas).any(|i| {
                            sup.replica(&orch_core::gpu::ReplicaKey::new(&a.name, i))
                                .is_none_or(|r| !sup.replica_healthy(r))
                        })
                    })
                    .map(|a| a.name.clone())
                    .collect()
            } else {
                Vec::new()
            };
            GroupStatus {
                name: g.name.clone(),
                description: g.description.clone(),
                started: sup.started_groups().contains(&g.name),
                state: group_state(sup.group_phase(&g.name)),
                wanted,
                running,
                healthy,
                depends_on: graph.deps_of(&g.name).to_vec(),
                agents: g.agents.iter().map(|a| a.name.clone()).collect(),
                optional_not_ready,
            }
        })
        .collect()
}

fn agent_status(sup: &Supervisor, r: &Replica, now: Millis) -> AgentStatus {
    let agent = sup.config().agent(&r.key.agent);
    AgentStatus {
        group: r.group.clone(),
        agent: r.key.agent.clone(),
        replica: r.key.replica,
        phase: convert::phase(&r.phase, now),
        pending: (r.phase == orch_core::supervise::Phase::Pending).then(|| {
            use orch_api::wire::PendingReason;
            if !sup.docker_up() {
                PendingReason::DockerDown
            } else if !sup.group_wanted(&r.group) {
                PendingReason::GroupStopped
            } else if agent.is_some_and(|a| a.gpu.is_some()) && r.slice.is_none() {
                PendingReason::GpuSlice
            } else {
                PendingReason::Starting
            }
        }),
        health: convert::health(r.health),
        container: r
            .container
            .as_ref()
            .map(|c| c.id.chars().take(12).collect()),
        image: agent.map(|a| a.image.clone()).unwrap_or_default(),
        restarts: r.restarts_total,
        crashloop: r.crashloop,
        required: agent.is_none_or(|a| a.required),
        slice: r.slice.as_ref().map(|s| convert::slice(s, sup.inventory())),
        ports: agent
            .map(|a| a.ports.iter().map(ToString::to_string).collect())
            .unwrap_or_default(),
        config_hash: r.container.as_ref().map(|c| c.config_hash.clone()),
    }
}

/// Every replica (or one group's), in config order.
pub fn agents(
    sup: &Supervisor,
    now: Millis,
    group: Option<&str>,
) -> Result<Vec<AgentStatus>, ApiError> {
    if let Some(g) = group
        && sup.config().group(g).is_none()
    {
        return Err(unknown_group(sup, g));
    }
    let config = sup.config();
    let order: BTreeMap<&str, usize> = config
        .agents()
        .enumerate()
        .map(|(i, a)| (a.name.as_str(), i))
        .collect();
    let mut out: Vec<AgentStatus> = sup
        .replicas()
        .filter(|r| group.is_none_or(|g| r.group == g))
        .map(|r| agent_status(sup, r, now))
        .collect();
    out.sort_by_key(|a| {
        (
            order.get(a.agent.as_str()).copied().unwrap_or(usize::MAX),
            a.replica,
        )
    });
    Ok(out)
}

/// `no group X on this host` with the nearest names suggested.
pub fn unknown_group(sup: &Supervisor, name: &str) -> ApiError {
    let names: Vec<&str> = sup
        .config()
        .groups
        .iter()
        .map(|g| g.name.as_str())
        .collect();
    ApiError::new(
        ErrorCode::NotFound,
        format!(
            "no group `{name}` on host {}{}",
            sup.config().host.name,
            suggest(name, &names)
        ),
    )
}

/// `; did you mean X?` for a close name, else the list of names.
pub fn suggest(name: &str, names: &[&str]) -> String {
    let lower = name.to_ascii_lowercase();
    let mut close: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| {
            let nl = n.to_ascii_lowercase();
            strsim::levenshtein(&lower, &nl) <= 2 || nl.starts_with(&lower) || nl.contains(&lower)
        })
        .collect();
    close.sort_unstable();
    match close.as_slice() {
        [] if names.is_empty() => String::new(),
        [] => format!("; known: {}", names.join(", ")),
        [one] => format!("; did you mean `{one}`?"),
        many => format!(
            "; did you mean one of {}?",
            many.iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

pub fn status(sup: &Supervisor, f: &Facts<'_>) -> Status {
    let mut counts = AgentCounts::default();
    for r in sup.replicas() {
        if sup.group_wanted(&r.group) {
            counts.wanted += 1;
        }
        if r.is_running() {
            counts.running += 1;
        }
        if sup.replica_healthy(r) {
            counts.healthy += 1;
        }
        if r.crashloop {
            counts.crashlooping += 1;
        }
    }
    Status {
        host: sup.config().host.name.clone(),
        last_event_seq: f.last_event_seq,
        version: f.version.to_string(),
        pid: f.pid,
        uptime_ms: f.uptime_ms,
        config_path: f.config_path.to_string(),
        generation: sup.generation(),
        docker: DockerStatus {
            connected: sup.docker_up(),
            endpoint: f.docker_endpoint.to_string(),
            engine_version: f.engine_version.map(str::to_string),
            api_version: f.api_version.map(str::to_string),
            gpu_injection: f.gpu_injection.to_string(),
        },
        gpu: GpuSummary {
            available: sup.inventory().is_some(),
            reason: sup.gpu_unavailable().map(str::to_string),
            gpus: sup.inventory().map(<[_]>::len).unwrap_or(0),
            slices: sup.replicas().filter(|r| r.slice.is_some()).count(),
        },
        groups: groups(sup),
        agents: counts,
        // The owner fills this in: the state file's health is not the supervisor's.
        state: Default::default(),
    }
}

pub fn gpu(sup: &Supervisor, f: &Facts<'_>) -> GpuReport {
    let gpus = sup.inventory_with_ownership().unwrap_or_default();
    let held: Vec<(&Replica, &Slice)> = sup
        .replicas()
        .filter_map(|r| r.slice.as_ref().map(|s| (r, s)))
        .collect();
    GpuReport {
        available: sup.inventory().is_some(),
        reason: sup.gpu_unavailable().map(str::to_string),
        library: f.gpu_library.map(str::to_string),
        driver_version: f.driver_version.map(str::to_string),
        gpus: gpus
            .iter()
            .map(|info| {
                let mine: Vec<&(&Replica, &Slice)> = held
                    .iter()
                    .filter(|(_, s)| s.gpu_uuid() == info.uuid)
                    .collect();
                let slices: Vec<&Slice> = mine.iter().map(|(_, s)| *s).collect();
                GpuStatus {
                    free: orch_api::report::free_capacity(info, &slices, &sup.config().gpus),
                    telemetry: f.telemetry.and_then(|t| t.get(&info.index).copied()),
                    info: convert::gpu_info(info),
                    slices: mine
                        .iter()
                        .map(|(r, s)| SliceOwner {
                            replica: convert::replica(&r.key),
                            group: r.group.clone(),
                            slice: convert::slice(s, Some(&gpus)),
                        })
                        .collect(),
                }
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_name_the_close_ones_or_list_all() {
        let names = ["speech_gpu", "vision_gpu", "infra_core"];
        assert_eq!(suggest("speech", &names), "; did you mean `speech_gpu`?");
        assert_eq!(
            suggest("vision_gpuu", &names),
            "; did you mean `vision_gpu`?"
        );
        assert_eq!(
            suggest("nosuch", &names),
            "; known: speech_gpu, vision_gpu, infra_core"
        );
        assert_eq!(
            suggest("gpu", &names),
            "; did you mean one of `speech_gpu`, `vision_gpu`?"
        );
    }
}
