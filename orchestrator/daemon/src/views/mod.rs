//! Read models: what the API answers, `/metrics` and the snapshots peers
//! get start from, as pure functions of the supervisor's state and a few
//! facts the daemon knows about its surroundings ([`Facts`]). No I/O, no
//! waiting: a status request never touches Docker or NVML. Each is tested
//! as a table (`tests.rs`: a request in, the answer out).

use std::collections::BTreeMap;

use orch_api::convert;
use orch_api::{
    AgentCounts, AgentStatus, ConfigChanges, DockerStatus, GpuReport, GpuStatus, GpuSummary,
    GroupStatus, HostSnapshot, NoContainer, PlanReport, Rejection, RemoteReadiness, Request,
    Response, SliceOwner, SloReport, StateFileStatus, Status,
};
use orch_core::gpu::{GpuInfo, MigState, ReplicaKey, Slice};
use orch_core::model::HostConfig;

use crate::gpu_use::{self, GpuReadings, Usage};
use orch_core::supervise::{CommandError, Millis, Phase, RemoteHost, Replica, Supervisor};

mod diff;
mod fleet_plan;
pub use diff::config_diff;
pub use fleet_plan::{RUNNING_CONFIG, plan_fleet, running_config};

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
    /// The GPU worker's latest readings: telemetry and the processes on
    /// each GPU.
    pub telemetry: Option<&'a GpuReadings>,
    /// Every container's CPU time, from its cgroup.
    pub cpu: Option<&'a crate::cpu_use::CpuUse>,
    pub gpu_library: Option<&'a str>,
    pub driver_version: Option<&'a str>,
    /// The number of the last event logged.
    pub last_event_seq: u64,
    /// The state file's health.
    pub state_file: Option<&'a StateFileStatus>,
}

/// The answer to a request that only reads the supervisor's state and
/// the facts; `None` for every other request.
pub fn query(
    sup: &Supervisor,
    f: &Facts<'_>,
    request: &Request,
) -> Option<Result<Response, Rejection>> {
    Some(match request {
        Request::Status => Ok(Response::Status(status(sup, f))),
        Request::Groups => Ok(Response::Groups(groups(sup))),
        Request::Agents { group } => agents(sup, f, group.as_deref()).map(Response::Agents),
        Request::Gpu => Ok(Response::Gpu(gpu(sup, f))),
        Request::StateExport => Ok(Response::State(convert::state_document(
            &sup.config().host.name,
            &sup.persisted(),
        ))),
        _ => return None,
    })
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
                            sup.replica(&ReplicaKey::new(&a.name, i))
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
                state: convert::group_state(sup.group_phase(&g.name)),
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

fn agent_status(
    sup: &Supervisor,
    r: &Replica,
    now: Millis,
    usage: &Usage,
    cpu: Option<&crate::cpu_use::CpuUse>,
) -> AgentStatus {
    let agent = sup.config().agent(&r.key.agent);
    let cpu_percent = r
        .container
        .as_ref()
        .zip(cpu)
        .and_then(|(c, cpu)| cpu.get(&c.id)?.percent);
    AgentStatus {
        group: r.group.clone(),
        agent: r.key.agent.clone(),
        replica: r.key.replica,
        phase: convert::phase(&r.phase, now),
        pending: (r.phase == Phase::Pending).then(|| {
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
        scaled: sup.scaled(&r.key.agent).map(|replicas| {
            let auto = sup.autoscaled(&r.key.agent);
            orch_api::Scaled {
                replicas,
                file_replicas: agent.map_or(0, |a| a.replicas),
                by_autoscaler: auto.is_some(),
                cause: auto.flatten().map(|d| convert::autoscale_cause(&d.cause)),
            }
        }),
        autoscale: agent
            .and_then(|a| a.autoscale.as_ref())
            .map(|a| orch_api::AutoscaleRange {
                min: a.min,
                max: a.max,
            }),
        remote: sup
            .remote_dependencies(&r.key.agent)
            .into_iter()
            .map(|(w, _)| {
                let on = convert::wait(&w);
                orch_api::RemoteDependency {
                    agent: r.key.agent.clone(),
                    state: remote_state(sup, &on),
                    on,
                }
            })
            .collect(),
        gpu_use: usage.replicas.get(&r.key).copied(),
        cpu_percent: cpu_percent.map(tenth),
        cpu_limit_percent: cpu_percent
            .and_then(|p| crate::cpu_use::of_limit(p, agent.and_then(|a| a.resources.cpus)))
            .map(tenth),
    }
}

/// A percentage to a tenth.
fn tenth(p: f64) -> f64 {
    (p * 10.0).round() / 10.0
}

/// Who uses the GPUs, from the readings in `f`.
fn usage(sup: &Supervisor, f: &Facts<'_>) -> Usage {
    f.telemetry
        .map(|r| gpu_use::usage(sup, r))
        .unwrap_or_default()
}

/// Every replica (or one group's), in config order, with its GPU use.
pub fn agents(
    sup: &Supervisor,
    f: &Facts<'_>,
    group: Option<&str>,
) -> Result<Vec<AgentStatus>, Rejection> {
    let usage = usage(sup, f);
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
        .map(|r| agent_status(sup, r, f.now, &usage, f.cpu))
        .collect();
    out.sort_by_key(|a| {
        (
            order.get(a.agent.as_str()).copied().unwrap_or(usize::MAX),
            a.replica,
        )
    });
    Ok(out)
}

/// `no group X on this host`, with the names it has.
pub fn unknown_group(sup: &Supervisor, name: &str) -> Rejection {
    Rejection::UnknownGroup {
        group: name.to_string(),
        host: Some(sup.config().host.name.clone()),
        known: sup.config().groups.iter().map(|g| g.name.clone()).collect(),
    }
}

/// A refused command, with the group an unknown agent is really in when
/// its name exists elsewhere on this host (agent names are unique per
/// host).
pub fn command_error(sup: &Supervisor, e: &CommandError) -> Rejection {
    if let CommandError::UnknownAgent { group, agent } = e {
        if sup.config().group(group).is_none() {
            return unknown_group(sup, group);
        }
        if let Some(a) = sup.config().agent(agent) {
            return Rejection::UnknownAgent {
                group: group.clone(),
                agent: agent.clone(),
                elsewhere: Some(a.group.clone()),
            };
        }
    }
    convert::command_error(e)
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
        state: f.state_file.cloned().unwrap_or_default(),
        scaled: sup
            .config()
            .agents()
            .filter_map(|a| {
                Some(orch_api::ScaledAgent {
                    group: a.group.clone(),
                    agent: a.name.clone(),
                    replicas: sup.scaled(&a.name)?,
                    file_replicas: a.replicas,
                    by_autoscaler: sup.autoscaled(&a.name).is_some(),
                })
            })
            .collect(),
    }
}

pub fn gpu(sup: &Supervisor, f: &Facts<'_>) -> GpuReport {
    let gpus = sup.inventory_with_ownership().unwrap_or_default();
    let mut usage = usage(sup, f).gpus;
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
                let used = usage.remove(&info.index).unwrap_or_default();
                GpuStatus {
                    free: orch_api::report::free_capacity(info, &slices, &sup.config().gpus),
                    policy: convert::gpu_policy(info, &sup.config().gpus),
                    telemetry: f
                        .telemetry
                        .and_then(|t| t.telemetry.get(&info.index).copied()),
                    info: convert::gpu_info(info),
                    slices: mine
                        .iter()
                        .map(|(r, s)| SliceOwner {
                            replica: convert::replica(&r.key),
                            group: r.group.clone(),
                            slice: convert::slice(s, Some(&gpus)),
                        })
                        .collect(),
                    usage: used.replicas,
                    unowned: used.unowned,
                }
            })
            .collect(),
    }
}

/// The container of a replica whose output can be read, or why there is
/// none.
pub fn container_of(
    sup: &Supervisor,
    group: &str,
    agent: &str,
    replica: u32,
) -> Result<String, Rejection> {
    let key = ReplicaKey::new(agent, replica);
    match sup.config().agent(agent) {
        Some(a) if a.group == group => {
            let r = sup.replica(&key);
            // A container made ahead and never started has no output.
            if let Some(c) = r.and_then(|r| r.container.as_ref())
                && c.status != orch_core::supervise::ContainerStatus::Created
            {
                return Ok(c.id.clone());
            }
            let why = match r.map(|r| &r.phase) {
                _ if !sup.group_wanted(group) => NoContainer::GroupNotStarted,
                Some(Phase::Held { waiting_for }) => NoContainer::Held {
                    waiting_for: waiting_for.iter().map(convert::wait).collect(),
                },
                Some(Phase::Failed { reason, .. }) => NoContainer::Failed {
                    reason: convert::fail_reason(reason),
                },
                _ => NoContainer::AboutToStart,
            };
            Err(Rejection::NoContainer {
                group: group.to_string(),
                replica: convert::replica(&key),
                why,
            })
        }
        _ => Err(command_error(
            sup,
            &CommandError::UnknownAgent {
                group: group.to_string(),
                agent: agent.to_string(),
            },
        )),
    }
}

/// This host as peers see it (`slo`: its groups' SLO figures).
pub fn snapshot(sup: &Supervisor, f: &Facts<'_>, slo: Option<SloReport>) -> HostSnapshot {
    HostSnapshot {
        status: status(sup, f),
        agents: agents(sup, f, None).unwrap_or_default(),
        gpu: gpu(sup, f),
        slo,
        probes: crate::fleet::probes::published(sup.config()),
    }
}

/// Plans `new` (the text of `file_name`) on the live inventory, keeping
/// the slices of running replicas whose request it leaves unchanged, and
/// says what applying it would change.
pub fn plan(sup: &Supervisor, file_name: &str, new: &HostConfig) -> Result<PlanReport, Rejection> {
    if new.host.name != sup.config().host.name {
        return Err(Rejection::PlanOfOtherHost {
            file_name: file_name.to_string(),
            config_host: new.host.name.clone(),
            daemon_host: sup.config().host.name.clone(),
        });
    }
    let gpus = sup
        .inventory_with_ownership()
        .ok_or_else(|| Rejection::NoInventory {
            reason: sup.gpu_unavailable().map(str::to_string),
        })?;
    let requests = orch_core::planner::config_requests(new);
    let current: Vec<orch_core::gpu::Assignment> = sup
        .replicas()
        .filter(|r| {
            r.container.is_some()
                && new.agent(&r.key.agent).map(|a| &a.gpu)
                    == sup.config().agent(&r.key.agent).map(|a| &a.gpu)
        })
        .filter_map(|r| {
            r.slice.clone().map(|slice| orch_core::gpu::Assignment {
                replica: r.key.clone(),
                slice,
                fallback_depth: r.slice_depth,
            })
        })
        .collect();
    let plan = orch_core::planner::plan(&orch_core::planner::PlanInput {
        gpus: &gpus,
        policies: &new.gpus,
        requests: &requests,
        current: &current,
        settings: Default::default(),
    });
    let mut report =
        orch_api::report::plan_report(new, &plan, &requests, &current, &gpus, "daemon");
    report.changes = Some(changes(sup, new));
    report.diff = Some(config_diff(sup, file_name, new)?);
    report.remote = orch_api::report::remote_dependencies(new, |on| remote_state(sup, on));
    Ok(report)
}

/// What applying `new` would do to each agent: added, removed,
/// recreated, or scaled (only its count changes, as the file says it or
/// as a count set at run time that the file's replaces).
pub fn changes(sup: &Supervisor, new: &HostConfig) -> ConfigChanges {
    let new_hashes: BTreeMap<String, String> = new
        .agents()
        .map(|a| (a.name.clone(), orch_core::container::config_hash(a)))
        .collect();
    let new_counts: BTreeMap<&str, u32> = new
        .agents()
        .map(|a| (a.name.as_str(), a.replicas))
        .collect();
    let old_counts: BTreeMap<&str, u32> = sup
        .config()
        .agents()
        .map(|a| (a.name.as_str(), a.replicas))
        .collect();
    let mut changes = ConfigChanges::default();
    for (agent, h) in &new_hashes {
        match sup.config_hash(agent) {
            None => changes.added.push(agent.clone()),
            Some(old) if old != h => changes.recreated.push(agent.clone()),
            Some(_) if new_counts.get(agent.as_str()) != old_counts.get(agent.as_str()) => {
                changes.scaled.push(agent.clone());
            }
            Some(_) => changes.unchanged += 1,
        }
    }
    for a in sup.config().agents() {
        if !new_hashes.contains_key(&a.name) {
            changes.removed.push(a.name.clone());
        }
    }
    changes
}

/// A cross-host dependency's state, for `plan`.
fn remote_state(sup: &Supervisor, on: &orch_api::wire::Wait) -> RemoteReadiness {
    use orch_api::wire::Wait;
    let (host, ready) = match on {
        Wait::RemoteAgent { host, agent } => (
            host,
            matches!(sup.remote(host), RemoteHost::Up(v) if v.ready_agents.contains(agent)),
        ),
        Wait::RemoteGroup { host, group } => (
            host,
            matches!(sup.remote(host), RemoteHost::Up(v) if v.ready_groups.contains(group)),
        ),
        _ => return RemoteReadiness::Unknown,
    };
    // A host that is down may still be vouched for: its agent answering
    // a direct probe, or its last word held for the grace.
    let answers =
        matches!(on, Wait::RemoteAgent { host, agent } if sup.remote_answers_probe(host, agent));
    match sup.remote(host) {
        RemoteHost::Unknown => RemoteReadiness::NotHeardFrom,
        RemoteHost::Down => RemoteReadiness::HostDown,
        RemoteHost::Up(_) if ready && answers => RemoteReadiness::AnswersProbe,
        RemoteHost::Up(_) if ready && sup.remote_held_until(host).is_some() => {
            RemoteReadiness::HeldForGrace
        }
        RemoteHost::Up(_) if ready => RemoteReadiness::Ready,
        RemoteHost::Up(_) if sup.remote_vouched(host) => RemoteReadiness::HostDown,
        RemoteHost::Up(_) => RemoteReadiness::NotReady,
    }
}

/// The GPU whose MIG mode may change now: it must exist, have MIG, and
/// hold no slice. (Whether NVML is there at all is the caller's.)
pub fn mig_target(sup: &Supervisor, index: u32) -> Result<GpuInfo, Rejection> {
    let Some(info) = sup
        .inventory()
        .and_then(|g| g.iter().find(|g| g.index == index))
        .cloned()
    else {
        return Err(Rejection::NoSuchGpu { index });
    };
    if info.mig == MigState::Unsupported {
        return Err(Rejection::NoMig {
            index,
            name: info.name,
        });
    }
    let holders: Vec<_> = sup
        .replicas()
        .filter(|r| r.slice.as_ref().is_some_and(|s| s.gpu_uuid() == info.uuid))
        .map(|r| convert::replica(&r.key))
        .collect();
    if !holders.is_empty() {
        return Err(Rejection::GpuHeld { index, holders });
    }
    Ok(info)
}

/// The settings of `new` that differ from `old` and that the running daemon
/// cannot take over: it opened its sockets, its bus, its Docker connection,
/// its state directory and NVML with the old ones.
pub fn restart_only_changes(old: &HostConfig, new: &HostConfig) -> Vec<&'static str> {
    let (o, n) = (&old.runtime, &new.runtime);
    [
        ("control", old.control != new.control),
        ("metrics", old.metrics != new.metrics),
        (
            "federation",
            crate::fleet::restart_only(old.federation.as_ref(), new.federation.as_ref()),
        ),
        ("runtime.state_dir", o.state_dir != n.state_dir),
        ("runtime.docker_host", o.docker_host != n.docker_host),
        ("runtime.nvml_library", o.nvml_library != n.nvml_library),
    ]
    .into_iter()
    .filter_map(|(name, changed)| changed.then_some(name))
    .collect()
}

#[cfg(test)]
mod tests;
