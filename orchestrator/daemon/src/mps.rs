//! MPS clients and faults, as the GPU worker sees them.
//!
//! NVIDIA's MPS documentation asks that a client with work in flight be
//! ended through the control daemon (`terminate_client`) before it is
//! killed, or the server and its other clients may be left in an undefined
//! state. [`release`] does that for a container about to be stopped: a
//! fresh read of the GPU's servers and their clients, each client mapped to its container
//! through `/proc/<pid>/cgroup` (as the GPU process sample does), and a
//! `terminate_client` for each of the container's. It runs on the GPU
//! worker's thread; the operation that stops the container waits for it
//! at most [`RELEASE_LIMIT`] (`GpuWorker::mps_release`), then stops the
//! container whatever happened.
//!
//! [`read`] reads a GPU's servers at the process interval, and
//! [`FaultEpisodes`] turns the readings into one [`MpsFault`] per fault
//! episode: from the first reading that shows a server in `FAULT` to the
//! first that shows none (or no daemon). A reading that failed changes
//! nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use orch_core::supervise::{MpsFault, MpsFaultClient};
use orch_docker::cgroup::ProcCgroups;
use orch_gpu::{MpsControl, MpsError, MpsGpu, MpsServerStatus};

use crate::event::{MpsSeen, SeenMpsServer};

/// How long a stop waits for its container's MPS clients to be
/// terminated before it goes on without.
pub const RELEASE_LIMIT: Duration = Duration::from_secs(2);

/// The most clients of one server looked at (their cgroup files read). MPS
/// serves at most 48 clients per GPU: more is a runaway reply, not clients
/// to hold.
pub const MAX_CLIENTS_PER_SERVER: usize = 1024;

/// What [`release`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Released {
    /// `(server pid, client pid)` of each client terminated.
    pub terminated: Vec<(u32, u32)>,
    /// `(server pid, client pid, why)` of each that could not be.
    pub failed: Vec<(u32, u32, String)>,
}

/// Terminates every client of `gpu`'s MPS servers that runs in
/// `container` (see the module doc). No control daemon: nothing to do.
pub fn release(
    mps: &dyn MpsControl,
    cgroups: &dyn ProcCgroups,
    gpu: &MpsGpu,
    container: &str,
) -> Result<Released, MpsError> {
    // Lists only: a server's status does not matter here (a faulted
    // server's hit clients are terminated too), and each run of the
    // control program counts against the stop's time limit.
    let servers = match mps.server_pids(gpu) {
        Ok(s) => s,
        Err(MpsError::NotRunning { .. }) => return Ok(Released::default()),
        Err(e) => return Err(e),
    };
    let mut done = Released::default();
    for server in servers {
        for client in mps
            .client_pids(gpu, server)?
            .into_iter()
            .take(MAX_CLIENTS_PER_SERVER)
        {
            if container_of(cgroups, client).as_deref() != Some(container) {
                continue;
            }
            match mps.terminate_client(gpu, server, client) {
                Ok(()) => done.terminated.push((server, client)),
                Err(e) => done.failed.push((server, client, e.to_string())),
            }
        }
    }
    Ok(done)
}

/// `gpu`'s MPS servers now: each one's status, and for a faulted one its
/// clients with their containers.
pub fn read(mps: &dyn MpsControl, cgroups: &dyn ProcCgroups, gpu: &MpsGpu) -> MpsSeen {
    let servers = match mps.servers(gpu) {
        Ok(s) => s,
        Err(MpsError::NotRunning { .. }) => return MpsSeen::NoDaemon,
        Err(e) => return MpsSeen::Unreadable(e.to_string()),
    };
    MpsSeen::Servers(
        servers
            .into_iter()
            .map(|s| {
                let fault = s.status == MpsServerStatus::Fault;
                let clients = s
                    .clients
                    .into_iter()
                    .take(MAX_CLIENTS_PER_SERVER)
                    .map(|pid| MpsFaultClient {
                        pid,
                        // Only a fault needs to know whose they are.
                        container: if fault {
                            container_of(cgroups, pid)
                        } else {
                            None
                        },
                    })
                    .collect();
                SeenMpsServer {
                    pid: s.pid,
                    fault,
                    clients,
                }
            })
            .collect(),
    )
}

fn container_of(cgroups: &dyn ProcCgroups, pid: u32) -> Option<String> {
    match cgroups.docker_cgroup(pid) {
        Ok(c) => c.map(|c| c.id),
        Err(e) => {
            tracing::debug!(pid, "cannot tell the MPS client's container: {e}");
            None
        }
    }
}

/// The GPUs in a fault episode, by UUID (see the module doc).
#[derive(Debug, Default)]
pub struct FaultEpisodes {
    faulted: BTreeSet<String>,
}

impl FaultEpisodes {
    /// The faults that begin an episode in `seen`; the GPUs `seen` shows
    /// without one, or leaves out (their daemon was stopped), end theirs.
    pub fn take(&mut self, seen: &BTreeMap<String, MpsSeen>) -> Vec<MpsFault> {
        self.faulted.retain(|uuid| seen.contains_key(uuid));
        let mut begun = Vec::new();
        for (uuid, reading) in seen {
            match reading {
                MpsSeen::Servers(servers) if servers.iter().any(|s| s.fault) => {
                    if self.faulted.insert(uuid.clone()) {
                        begun.push(MpsFault {
                            gpu_uuid: uuid.clone(),
                            clients: servers
                                .iter()
                                .filter(|s| s.fault)
                                .flat_map(|s| s.clients.iter().cloned())
                                .collect(),
                        });
                    }
                }
                MpsSeen::Servers(_) | MpsSeen::NoDaemon => {
                    self.faulted.remove(uuid);
                }
                MpsSeen::Unreadable(_) => {}
            }
        }
        begun
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use orch_docker::cgroup::FakeProcCgroups;
    use orch_gpu::{FakeMps, MpsCall};

    use super::*;

    fn gpu(uuid: &str) -> MpsGpu {
        crate::gpu::mps_gpu(std::path::Path::new("/run/test-mps"), uuid)
    }

    fn id(c: char) -> String {
        c.to_string().repeat(64)
    }

    fn in_container(cg: &FakeProcCgroups, pid: u32, id: &str) {
        cg.set(pid, &format!("0::/system.slice/docker-{id}.scope\n"));
    }

    #[test]
    fn release_terminates_the_containers_clients_and_no_others() {
        let mps = FakeMps::new();
        let cg = FakeProcCgroups::new();
        let g = gpu("GPU-0");
        mps.ensure_running(&g).unwrap();
        mps.add_server(&g, 900, &[10, 11, 20]);
        in_container(&cg, 10, &id('a'));
        in_container(&cg, 11, &id('a'));
        in_container(&cg, 20, &id('b'));
        let done = release(&mps, &cg, &g, &id('a')).unwrap();
        assert_eq!(done.terminated, [(900, 10), (900, 11)]);
        assert!(done.failed.is_empty());
        assert_eq!(
            mps.terminated(),
            [("GPU-0".into(), 900, 10), ("GPU-0".into(), 900, 11)]
        );
    }

    #[test]
    fn release_without_a_daemon_does_nothing_and_a_failed_terminate_is_reported() {
        let mps = FakeMps::new();
        let cg = FakeProcCgroups::new();
        let g = gpu("GPU-0");
        assert_eq!(
            release(&mps, &cg, &g, &id('a')).unwrap(),
            Released::default()
        );
        mps.ensure_running(&g).unwrap();
        mps.add_server(&g, 900, &[10]);
        in_container(&cg, 10, &id('a'));
        mps.fail_next(
            orch_gpu::MpsOp::TerminateClient,
            MpsError::NotRunning {
                gpu: "GPU-0".into(),
            },
        );
        let done = release(&mps, &cg, &g, &id('a')).unwrap();
        assert!(done.terminated.is_empty());
        assert_eq!(done.failed.len(), 1);
        assert_eq!(done.failed[0].0, 900);
    }

    #[test]
    fn at_most_max_clients_per_server_are_looked_at() {
        let mps = FakeMps::new();
        let cg = FakeProcCgroups::new();
        let g = gpu("GPU-0");
        mps.ensure_running(&g).unwrap();
        let over = MAX_CLIENTS_PER_SERVER + 5;
        let clients: Vec<u32> = (1..=over as u32).collect();
        mps.add_server(&g, 900, &clients);
        mps.set_server_status(&g, 900, MpsServerStatus::Fault);
        let MpsSeen::Servers(seen) = read(&mps, &cg, &g) else {
            panic!("servers expected");
        };
        assert_eq!(seen[0].clients.len(), MAX_CLIENTS_PER_SERVER);
        assert_eq!(cg.reads().len(), MAX_CLIENTS_PER_SERVER);
        release(&mps, &cg, &g, &id('a')).unwrap();
        assert_eq!(cg.reads().len(), 2 * MAX_CLIENTS_PER_SERVER);
    }

    #[test]
    fn a_read_names_the_containers_of_a_faulted_servers_clients_only() {
        let mps = FakeMps::new();
        let cg = FakeProcCgroups::new();
        let g = gpu("GPU-0");
        assert_eq!(read(&mps, &cg, &g), MpsSeen::NoDaemon);
        mps.ensure_running(&g).unwrap();
        mps.add_server(&g, 900, &[10]);
        in_container(&cg, 10, &id('a'));
        let active = read(&mps, &cg, &g);
        assert_eq!(
            active,
            MpsSeen::Servers(vec![SeenMpsServer {
                pid: 900,
                fault: false,
                clients: vec![MpsFaultClient {
                    pid: 10,
                    container: None
                }],
            }])
        );
        assert!(cg.reads().is_empty(), "no fault, no cgroup read");
        mps.set_server_status(&g, 900, MpsServerStatus::Fault);
        let MpsSeen::Servers(seen) = read(&mps, &cg, &g) else {
            panic!("servers expected");
        };
        assert!(seen[0].fault);
        assert_eq!(seen[0].clients[0].container, Some(id('a')));
        assert!(
            mps.calls()
                .iter()
                .all(|c| !matches!(c, MpsCall::TerminateClient { .. })),
            "reading terminates nobody"
        );
    }

    fn servers(fault: bool, clients: &[u32]) -> MpsSeen {
        MpsSeen::Servers(vec![SeenMpsServer {
            pid: 900,
            fault,
            clients: clients
                .iter()
                .map(|&pid| MpsFaultClient {
                    pid,
                    container: None,
                })
                .collect(),
        }])
    }

    #[test]
    fn a_fault_is_reported_once_per_episode_and_per_gpu() {
        let mut ep = FaultEpisodes::default();
        let reading = |r: &[(&str, MpsSeen)]| -> BTreeMap<String, MpsSeen> {
            r.iter().map(|(u, s)| (u.to_string(), s.clone())).collect()
        };
        let gpus = |faults: Vec<MpsFault>| -> Vec<String> {
            faults.into_iter().map(|f| f.gpu_uuid).collect()
        };
        let quiet = reading(&[
            ("GPU-0", servers(false, &[10])),
            ("GPU-1", servers(false, &[])),
        ]);
        assert!(ep.take(&quiet).is_empty());
        let f0 = reading(&[
            ("GPU-0", servers(true, &[10])),
            ("GPU-1", servers(false, &[])),
        ]);
        let begun = ep.take(&f0);
        assert_eq!(begun.len(), 1);
        assert_eq!(begun[0].gpu_uuid, "GPU-0");
        assert_eq!(begun[0].clients.len(), 1);
        // Still in FAULT, or unreadable for a while: the same episode.
        assert!(ep.take(&f0).is_empty());
        let unreadable = reading(&[("GPU-0", MpsSeen::Unreadable("timed out".into()))]);
        assert!(ep.take(&unreadable).is_empty());
        assert!(ep.take(&f0).is_empty());
        // ACTIVE again ends it; the next fault is a new one.
        assert!(ep.take(&quiet).is_empty());
        assert_eq!(gpus(ep.take(&f0)), ["GPU-0"]);
        // No daemon ends it too.
        assert!(
            ep.take(&reading(&[("GPU-0", MpsSeen::NoDaemon)]))
                .is_empty()
        );
        assert_eq!(gpus(ep.take(&f0)), ["GPU-0"]);
        // A GPU no longer watched ends it.
        assert!(ep.take(&BTreeMap::new()).is_empty());
        assert_eq!(gpus(ep.take(&f0)), ["GPU-0"]);
    }
}
