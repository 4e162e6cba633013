//! MPS server faults.
//!
//! A fatal fault in one client of an MPS server hits every client of that
//! server, and the server refuses new clients
//! (`CUDA_ERROR_MPS_SERVER_NOT_READY`) until all the hit ones have exited
//! (NVIDIA's MPS documentation, error containment). So when the daemon
//! sees a GPU's server in `FAULT`, once per fault episode, the running MPS
//! replicas of that GPU (its co-tenants) are restarted together, now, with
//! the reason [`RestartCause::MpsServerFault`]; nobody on another GPU is
//! touched.
//!
//! Such a restart is not the replica's own failure: it grows neither its
//! backoff nor its crash-loop count (a fault of a neighbour must not hold
//! a healthy agent's dependents). It does count in `restarts_total`, as an
//! operator's restart does. A co-tenant with an operation in flight (it is
//! starting or stopping already) is left to it.
//!
//! MPS does not say which client faulted. The daemon passes the clients
//! the server listed when the fault was seen: with one listed, it can only
//! have been that one, and the event names it (with its replica when it
//! runs in one of ours); with more, the faulting client is unknown and the
//! event says so.

use super::state::*;
use crate::gpu::{ReplicaKey, Slice};

/// A GPU's MPS server seen in `FAULT`, at the start of a fault episode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpsFault {
    pub gpu_uuid: String,
    /// The server's clients when the fault was seen.
    pub clients: Vec<MpsFaultClient>,
}

/// A client of a faulted MPS server: its pid and the Docker container it
/// runs in, where that could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpsFaultClient {
    pub pid: u32,
    pub container: Option<String>,
}

/// The faulting client, as far as it can be told: its pid, and its
/// replica when it runs in one of ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultingClient {
    pub pid: u32,
    pub replica: Option<ReplicaKey>,
}

/// Why the supervisor restarted a running replica on its own, other than
/// its exit or its failed health (those are `AgentRestarting`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestartCause {
    /// Its GPU's MPS server faulted.
    MpsServerFault { gpu_uuid: String },
}

impl RestartCause {
    /// The reason as a label (metrics, logs).
    pub fn label(&self) -> &'static str {
        match self {
            RestartCause::MpsServerFault { .. } => "mps_server_fault",
        }
    }
}

impl Supervisor {
    /// Restarts the running MPS replicas of the faulted GPU (see the
    /// module doc).
    pub(super) fn mps_server_fault(&mut self, fault: MpsFault, out: &mut Outcome) {
        let on_gpu = |r: &Replica| matches!(&r.slice, Some(Slice::Mps { gpu_uuid, .. }) if *gpu_uuid == fault.gpu_uuid);
        let gpu_index = self
            .inventory
            .iter()
            .flatten()
            .find(|g| g.uuid == fault.gpu_uuid)
            .map(|g| g.index)
            .or_else(|| {
                self.replicas
                    .values()
                    .find(|r| on_gpu(r))
                    .and_then(|r| r.slice.as_ref().map(Slice::gpu_index))
            });
        let client = match fault.clients.as_slice() {
            [only] => Some(FaultingClient {
                pid: only.pid,
                replica: only.container.as_ref().and_then(|id| {
                    self.replicas
                        .values()
                        .find(|r| r.container.as_ref().is_some_and(|c| c.id == *id))
                        .map(|r| r.key.clone())
                }),
            }),
            _ => None,
        };
        let restarting: Vec<ReplicaKey> = self
            .replicas
            .values()
            .filter(|r| on_gpu(r) && r.is_running() && r.op.is_none())
            .map(|r| r.key.clone())
            .collect();
        out.events.push(SupervisorEvent::MpsServerFault {
            gpu_index,
            gpu_uuid: fault.gpu_uuid.clone(),
            client,
            clients_listed: u32::try_from(fault.clients.len()).unwrap_or(u32::MAX),
            restarting: restarting.clone(),
        });
        let reason = RestartCause::MpsServerFault {
            gpu_uuid: fault.gpu_uuid,
        };
        for key in restarting {
            self.restart_for(&key, reason.clone(), out);
        }
    }

    /// Restarts a running replica now for `reason`: not a failure of its
    /// own, so neither its backoff nor its crash-loop count grows.
    fn restart_for(&mut self, key: &ReplicaKey, reason: RestartCause, out: &mut Outcome) {
        let Some(r) = self.replicas.get_mut(key) else {
            return;
        };
        let Some(id) = r.container.as_ref().map(|c| c.id.clone()) else {
            return;
        };
        r.op = Some(OpKind::Restart);
        r.phase = Phase::Starting;
        // Its health is not known again until it is probed.
        r.health = Health::Unknown;
        r.restart_requested = false;
        r.restarts_total += 1;
        out.actions.push(Action::UnwatchHealth { key: key.clone() });
        out.actions.push(Action::Restart {
            key: key.clone(),
            id,
        });
        out.events.push(SupervisorEvent::AgentRestarted {
            replica: key.clone(),
            group: r.group.clone(),
            reason,
        });
        // Restart counts are state: written when they change.
        out.persist();
    }
}
