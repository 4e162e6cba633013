//! Fleet placement advice (`plan --all-hosts`): where a config's GPU
//! requests, or one agent's, would fit on each host of the fleet, with the
//! slice each replica would get there, or the planner's reasons why not.
//!
//! Every daemon holds each peer's latest snapshot, and in it the peer's
//! GPU report: its GPUs and their MIG layout, the slices its replicas hold,
//! the policy of each GPU. [`host_gpus`] reads a report back into the
//! planner's input (`convert::*_back`); [`place`] plans requests on it
//! with `orch_core::planner` (no second placement algorithm), in one of
//! two ways ([`Placing`]):
//!
//! - **added** to what runs there, on every host but the config's own:
//!   each held slice stays where it is and the requests are placed around
//!   them (`planner::advise`);
//! - **replacing** what runs there, on the config's own host, as `apply`
//!   would: under the config's GPU policies, a running replica keeps its
//!   slice while the slice answers its request in the new config;
//!   everything else is planned afresh.
//!
//! [`fleet_plan`] puts one answer per host together. A host that cannot be
//! planned on (nothing heard from it, its daemon down, no inventory yet,
//! GPUs unusable) is listed with that reason ([`NotPlanned`]). Nothing
//! here moves an agent: moving one stays an operator's `apply --host`.

use std::collections::BTreeSet;

use orch_core::gpu::{Assignment, GpuInfo, GpuRequest, ReplicaKey};
use orch_core::model::{GpuPolicy, HostConfig};
use orch_core::planner::{self, PlanInput, PlannerSettings, ReplicaAdvice};

use crate::convert;
use crate::reply::{
    FleetPlan, GpuReport, HostPlacement, HostView, NotPlanned, PeerState, PlacementRequest,
    ReplicaFit, ReplicaPlacement,
};

/// One host's GPUs as the planner takes them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostGpus {
    pub gpus: Vec<GpuInfo>,
    /// The policies of its GPUs; empty plans with the planner's defaults.
    pub policies: Vec<GpuPolicy>,
    /// The slices its replicas hold now.
    pub held: Vec<Assignment>,
}

/// A host's GPU report read back into planner input, or why it cannot
/// be planned on. A held slice the report's own GPUs do not explain (a
/// GPU or MIG profile it does not list) is left out.
pub fn host_gpus(report: &GpuReport) -> Result<HostGpus, NotPlanned> {
    if !report.available {
        return Err(match &report.reason {
            Some(reason) => NotPlanned::GpusUnavailable {
                reason: reason.clone(),
            },
            None => NotPlanned::NoInventory,
        });
    }
    let gpus: Vec<GpuInfo> = report
        .gpus
        .iter()
        .map(|g| convert::gpu_info_back(&g.info))
        .collect();
    let policies = report
        .gpus
        .iter()
        .filter_map(|g| convert::gpu_policy_back(&g.info.uuid, g.policy.as_ref(), &g.free.sharing))
        .collect();
    let held = report
        .gpus
        .iter()
        .flat_map(|g| &g.slices)
        .filter_map(|o| {
            convert::slice_back(&o.slice, &gpus).map(|slice| Assignment {
                replica: ReplicaKey::new(&o.replica.agent, o.replica.replica),
                slice,
                fallback_depth: 0,
            })
        })
        .collect();
    Ok(HostGpus {
        gpus,
        policies,
        held,
    })
}

/// A peer as this host sees it: its latest snapshot's GPUs, unless its
/// daemon is down or nothing was heard from it.
pub fn peer_gpus(view: &HostView) -> Result<HostGpus, NotPlanned> {
    match (view.state, &view.snapshot) {
        (PeerState::Down, _) => Err(NotPlanned::HostDown),
        (_, None) => Err(NotPlanned::NoSnapshot),
        (_, Some(s)) => host_gpus(&s.gpu),
    }
}

/// How requests meet what runs on a host.
#[derive(Debug, Clone, Copy)]
pub enum Placing<'a> {
    /// Added to what runs there: every held slice stays.
    Added,
    /// Replacing what runs there with a config of the host's own, as
    /// `apply` would: `config` is every GPU request of that config (the
    /// ones asked about among them). A held slice that still answers its
    /// replica's request there is kept; the rest are planned afresh.
    Replacing {
        config: &'a [(ReplicaKey, GpuRequest)],
    },
}

/// Places `asked` on `host`: one answer per replica asked about, in order.
pub fn place(
    host: &str,
    gpus: &HostGpus,
    asked: &[(ReplicaKey, GpuRequest)],
    placing: Placing<'_>,
) -> Vec<ReplicaPlacement> {
    let settings = PlannerSettings::default();
    let fits =
        |key: &ReplicaKey, slice: &orch_core::gpu::Slice, depth: u8, kept: bool| ReplicaPlacement {
            replica: convert::replica(key),
            fit: ReplicaFit::Fits {
                slice: convert::slice(slice, Some(&gpus.gpus)),
                fallback_depth: depth,
                kept,
            },
        };
    let fails = |key: &ReplicaKey, e: &planner::PlanError| ReplicaPlacement {
        replica: convert::replica(key),
        fit: ReplicaFit::DoesNotFit {
            error: convert::plan_error(e),
        },
    };
    match placing {
        Placing::Added => {
            // Another host's agent of the same name is not the one asked
            // about: it keeps its slice under its host's name.
            let names: BTreeSet<&str> = asked.iter().map(|(k, _)| k.agent.as_str()).collect();
            let held: Vec<Assignment> = gpus
                .held
                .iter()
                .map(|a| {
                    let mut a = a.clone();
                    if names.contains(a.replica.agent.as_str()) {
                        a.replica.agent = format!("{host}/{}", a.replica.agent);
                    }
                    a
                })
                .collect();
            let advice = planner::advise(
                asked,
                &[planner::HostGpus {
                    host,
                    gpus: &gpus.gpus,
                    policies: &gpus.policies,
                    held: &held,
                    settings,
                }],
            );
            let answers = advice.into_iter().flat_map(|h| h.replicas);
            answers
                .map(|r| match r {
                    ReplicaAdvice::Fits {
                        replica,
                        slice,
                        fallback_depth,
                    } => fits(&replica, &slice, fallback_depth, false),
                    ReplicaAdvice::DoesNotFit(e) => fails(&e.replica, &e),
                })
                .collect()
        }
        Placing::Replacing { config } => {
            let current: Vec<Assignment> = gpus
                .held
                .iter()
                .filter_map(|a| {
                    let (_, request) = config.iter().find(|(k, _)| *k == a.replica)?;
                    let depth = planner::answering_depth(request, &a.slice)?;
                    Some(Assignment {
                        fallback_depth: depth,
                        ..a.clone()
                    })
                })
                .collect();
            let plan = planner::plan(&PlanInput {
                gpus: &gpus.gpus,
                policies: &gpus.policies,
                requests: config,
                current: &current,
                settings,
            });
            asked
                .iter()
                .filter_map(|(key, _)| {
                    if let Some(a) = plan.assignment(key) {
                        let kept = current
                            .iter()
                            .any(|c| c.replica == *key && c.slice == a.slice);
                        return Some(fits(key, &a.slice, a.fallback_depth, kept));
                    }
                    plan.error(key).map(|e| fails(key, e))
                })
                .collect()
        }
    }
}

/// One host of the fleet, as the plan starts from it.
#[derive(Debug, Clone)]
pub struct HostIn {
    pub host: String,
    pub state: PeerState,
    /// How old its GPU report is.
    pub snapshot_age_ms: Option<u64>,
    pub gpus: Result<HostGpus, NotPlanned>,
}

/// What is asked: a config (by its file name), and maybe one agent of it.
#[derive(Debug, Clone, Copy)]
pub struct FleetAsk<'a> {
    /// The host that plans.
    pub planned_by: &'a str,
    pub file_name: &'a str,
    pub config: &'a HostConfig,
    /// Only this agent's replicas (its name); `None`: every GPU request
    /// of the config.
    pub agent: Option<&'a str>,
}

/// Where the requests asked about fit on each of `hosts` (in the order
/// given): the config's own host replaced, every other added to.
pub fn fleet_plan(ask: &FleetAsk<'_>, hosts: &[HostIn]) -> FleetPlan {
    let config = ask.config;
    let all = planner::config_requests(config);
    let asked: Vec<(ReplicaKey, GpuRequest)> = all
        .iter()
        .filter(|(k, _)| ask.agent.is_none_or(|a| k.agent == a))
        .cloned()
        .collect();
    let group_of = |agent: &str| {
        config
            .agent(agent)
            .map(|a| a.group.clone())
            .unwrap_or_default()
    };
    let hosts = hosts
        .iter()
        .map(|h| {
            let own_host = h.host == config.host.name;
            let (replicas, not_planned) = match &h.gpus {
                // There the config's own GPU policies apply, as after an
                // `apply`.
                Ok(gpus) if own_host => {
                    let gpus = HostGpus {
                        policies: config.gpus.clone(),
                        ..gpus.clone()
                    };
                    let placing = Placing::Replacing { config: &all };
                    (place(&h.host, &gpus, &asked, placing), None)
                }
                Ok(gpus) => (place(&h.host, gpus, &asked, Placing::Added), None),
                Err(why) => (Vec::new(), Some(why.clone())),
            };
            let fits = not_planned.is_none()
                && replicas.len() == asked.len()
                && replicas
                    .iter()
                    .all(|r| matches!(r.fit, ReplicaFit::Fits { .. }));
            HostPlacement {
                host: h.host.clone(),
                state: h.state,
                snapshot_age_ms: h.snapshot_age_ms,
                own_host,
                fits,
                not_planned,
                replicas,
            }
        })
        .collect();
    FleetPlan {
        planned_by: ask.planned_by.to_string(),
        file_name: ask.file_name.to_string(),
        config_host: config.host.name.clone(),
        agent: ask.agent.map(|a| format!("{}/{a}", group_of(a))),
        requests: asked
            .iter()
            .map(|(k, r)| PlacementRequest {
                replica: convert::replica(k),
                group: group_of(&k.agent),
                request: convert::gpu_request(r),
            })
            .collect(),
        hosts,
    }
}

/// The peers on whose GPUs every one of `asked` would fit, added to what
/// runs there (a scale-up refused here names them).
pub fn peers_with_room(asked: &[(ReplicaKey, GpuRequest)], peers: &[HostView]) -> Vec<String> {
    peers
        .iter()
        .filter(|view| {
            peer_gpus(view).is_ok_and(|gpus| {
                let placed = place(&view.host, &gpus, asked, Placing::Added);
                placed.len() == asked.len()
                    && placed
                        .iter()
                        .all(|r| matches!(r.fit, ReplicaFit::Fits { .. }))
            })
        })
        .map(|view| view.host.clone())
        .collect()
}

#[cfg(test)]
mod tests;
