//! `plan --all-hosts`: where a config's GPU requests, or one agent's,
//! would fit in the fleet. This host is planned on its live inventory (as
//! `plan` is), every peer on its latest snapshot; the placing itself is
//! `orch_api::fleet_plan`'s.

use orch_api::fleet_plan::{self, FleetAsk, HostGpus, HostIn};
use orch_api::{FleetPlan, HostView, NotPlanned, PeerState, Rejection};
use orch_core::gpu::Assignment;
use orch_core::model::HostConfig;
use orch_core::supervise::Supervisor;

/// What `plan --all-hosts` calls this host's running config.
pub const RUNNING_CONFIG: &str = "the running config";

/// This host's running config, each agent at the replica count it runs
/// with now (a count set by `scale` included).
pub fn running_config(sup: &Supervisor) -> HostConfig {
    let mut c = sup.config().clone();
    for g in &mut c.groups {
        for a in &mut g.agents {
            a.replicas = sup.replica_count(&a.name);
        }
    }
    c
}

/// This host's GPUs as the fleet plan takes them: the live inventory,
/// the slices its replicas hold, its GPU policies.
pub fn this_host(sup: &Supervisor) -> HostIn {
    let gpus = match sup.inventory_with_ownership() {
        Some(gpus) => Ok(HostGpus {
            gpus,
            policies: sup.config().gpus.clone(),
            held: sup
                .replicas()
                .filter_map(|r| {
                    r.slice.clone().map(|slice| Assignment {
                        replica: r.key.clone(),
                        slice,
                        fallback_depth: r.slice_depth,
                    })
                })
                .collect(),
        }),
        None => Err(match sup.gpu_unavailable() {
            Some(reason) => NotPlanned::GpusUnavailable {
                reason: reason.to_string(),
            },
            None => NotPlanned::NoInventory,
        }),
    };
    HostIn {
        host: sup.config().host.name.clone(),
        state: PeerState::Local,
        snapshot_age_ms: Some(0),
        gpus,
    }
}

/// Where `config` (the text of `file_name`; `None`: this host's running
/// config) would fit on this host and on each of `peers`; with `agent`
/// (`GROUP/AGENT` or `AGENT`), only that agent's replicas.
pub fn plan_fleet(
    sup: &Supervisor,
    config: Option<(&str, &HostConfig)>,
    agent: Option<&str>,
    peers: &[HostView],
) -> Result<FleetPlan, Rejection> {
    let running;
    let (file_name, config) = match config {
        Some(c) => c,
        None => {
            running = running_config(sup);
            (RUNNING_CONFIG, &running)
        }
    };
    let agent = agent
        .map(|target| asked_agent(config, file_name, target))
        .transpose()?;
    let mut hosts = vec![this_host(sup)];
    hosts.extend(peers.iter().map(|view| HostIn {
        host: view.host.clone(),
        state: view.state,
        snapshot_age_ms: view.snapshot_age_ms,
        gpus: fleet_plan::peer_gpus(view),
    }));
    Ok(fleet_plan::fleet_plan(
        &FleetAsk {
            planned_by: &sup.config().host.name,
            file_name,
            config,
            agent,
        },
        &hosts,
    ))
}

/// The agent a target names in `config`: `GROUP/AGENT`, or a bare
/// `AGENT` (agent names are unique in a config).
fn asked_agent<'c>(
    config: &'c HostConfig,
    file_name: &str,
    target: &str,
) -> Result<&'c str, Rejection> {
    let (group, name) = match target.split_once('/') {
        Some((g, a)) => (Some(g), a),
        None => (None, target),
    };
    match config.agent(name) {
        Some(a) if group.is_none_or(|g| a.group == g) => Ok(&a.name),
        _ => Err(Rejection::NotInConfig {
            target: target.to_string(),
            file_name: file_name.to_string(),
            known: config
                .agents()
                .map(|a| format!("{}/{}", a.group, a.name))
                .collect(),
        }),
    }
}
