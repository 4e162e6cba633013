//! Turning a plan into the report `orchestratorctl plan` shows, the same
//! whether the daemon planned with its live state or the CLI planned alone.

use orch_core::gpu::{Assignment, GpuRequest, ReplicaKey};
use orch_core::model::HostConfig;
use orch_core::planner::Plan;

use crate::types::{PlanReport, PlannedSlice};

pub fn plan_report(
    config: &HostConfig,
    plan: &Plan,
    requests: &[(ReplicaKey, GpuRequest)],
    current: &[Assignment],
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
            .map(|(_, r)| {
                r.chain()
                    .map(|x| x.kind.to_string())
                    .collect::<Vec<_>>()
                    .join(" -> ")
            })
            .unwrap_or_default()
    };
    PlanReport {
        host: config.host.name.clone(),
        inventory_source: inventory_source.to_string(),
        assignments: plan
            .assignments
            .iter()
            .map(|a| PlannedSlice {
                replica: a.replica.to_string(),
                group: group_of(&a.replica),
                request: request_of(&a.replica),
                slice: a.slice.clone(),
                fallback_depth: a.fallback_depth,
                kept: current
                    .iter()
                    .any(|c| c.replica == a.replica && c.slice == a.slice),
            })
            .collect(),
        mig_create: plan
            .create
            .iter()
            .map(|c| {
                format!(
                    "GPU {} ({}): {} at placement {} for {}",
                    c.gpu_index, c.gpu_uuid, c.profile, c.placement_start, c.replica
                )
            })
            .collect(),
        mig_destroy: plan
            .destroy
            .iter()
            .map(|d| {
                format!(
                    "GPU {} ({}): GPU instance {} at placement {}",
                    d.gpu_index, d.gpu_uuid, d.gi_id, d.placement_start
                )
            })
            .collect(),
        errors: plan.errors.iter().map(ToString::to_string).collect(),
        notes: plan.notes.iter().map(ToString::to_string).collect(),
        changes: None,
    }
}
