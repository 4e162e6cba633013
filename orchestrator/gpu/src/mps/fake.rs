//! [`FakeMps`]: an in-memory, recording [`MpsControl`] for tests of the
//! crates above this one. It keeps one daemon per pipe directory, as the
//! real program does, holds the MPS servers and clients a test sets up,
//! records every call in order, and fails the next call of a kind on
//! demand.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use super::{MpsControl, MpsError, MpsGpu, MpsServerStatus};

/// One call made on a [`FakeMps`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MpsCall {
    EnsureRunning {
        uuid: String,
    },
    Stop {
        uuid: String,
    },
    IsRunning {
        uuid: String,
    },
    ServerPids {
        uuid: String,
    },
    ClientPids {
        uuid: String,
        server_pid: u32,
    },
    ServerStatus {
        uuid: String,
        server_pid: u32,
    },
    TerminateClient {
        uuid: String,
        server_pid: u32,
        client_pid: u32,
    },
}

/// Which kind of call an injected failure applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MpsOp {
    EnsureRunning,
    Stop,
    IsRunning,
    ServerPids,
    ClientPids,
    ServerStatus,
    TerminateClient,
}

/// A server a test set up.
#[derive(Debug, Clone)]
struct FakeServer {
    pid: u32,
    status: MpsServerStatus,
    clients: Vec<u32>,
}

#[derive(Debug, Default)]
struct FakeMpsState {
    /// Running daemons by pipe directory (one daemon per directory, as the
    /// real program enforces), with the GPU they serve.
    running: BTreeMap<PathBuf, String>,
    /// MPS servers by pipe directory.
    servers: BTreeMap<PathBuf, Vec<FakeServer>>,
    /// `(gpu uuid, server pid, client pid)` of every terminated client.
    terminated: Vec<(String, u32, u32)>,
    calls: Vec<MpsCall>,
    started: Vec<String>,
    stopped: Vec<String>,
    failures: Vec<(MpsOp, MpsError)>,
}

/// Called with each call as it is made; see [`FakeMps::on_call`].
type Hook = std::sync::Arc<dyn Fn(&MpsCall) + Send + Sync>;

/// An in-memory, recording [`MpsControl`].
#[derive(Default)]
pub struct FakeMps {
    // Held for the length of one call only.
    state: Mutex<FakeMpsState>,
    hook: Mutex<Option<Hook>>,
}

impl std::fmt::Debug for FakeMps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeMps")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl FakeMps {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, FakeMpsState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<MpsCall> {
        self.lock().calls.clone()
    }

    /// GPUs whose daemon was actually started, in order (an
    /// `ensure_running` on a running daemon starts nothing).
    pub fn started(&self) -> Vec<String> {
        self.lock().started.clone()
    }

    /// GPUs whose daemon was actually stopped, in order.
    pub fn stopped(&self) -> Vec<String> {
        self.lock().stopped.clone()
    }

    /// GPUs with a running daemon.
    pub fn running(&self) -> Vec<String> {
        self.lock().running.values().cloned().collect()
    }

    /// The daemon of `gpu` dies (as after a fatal client fault); its
    /// servers go with it.
    pub fn crash(&self, gpu: &MpsGpu) {
        let mut state = self.lock();
        state.running.remove(&gpu.pipe_dir);
        state.servers.remove(&gpu.pipe_dir);
    }

    /// An MPS server of `gpu`'s daemon with these clients, ACTIVE (as the
    /// daemon starts one for the first client).
    pub fn add_server(&self, gpu: &MpsGpu, pid: u32, clients: &[u32]) {
        self.lock()
            .servers
            .entry(gpu.pipe_dir.clone())
            .or_default()
            .push(FakeServer {
                pid,
                status: MpsServerStatus::Active,
                clients: clients.to_vec(),
            });
    }

    /// What `server_status` answers for a server (`Fault` after a fatal
    /// fault in one of its clients).
    pub fn set_server_status(&self, gpu: &MpsGpu, pid: u32, status: MpsServerStatus) {
        let mut state = self.lock();
        let servers = state.servers.entry(gpu.pipe_dir.clone()).or_default();
        if let Some(server) = servers.iter_mut().find(|s| s.pid == pid) {
            server.status = status;
        }
    }

    /// `(gpu uuid, server pid, client pid)` of every client terminated so far.
    pub fn terminated(&self) -> Vec<(String, u32, u32)> {
        self.lock().terminated.clone()
    }

    /// `hook` sees each call as it is made, before the fake acts on it and
    /// without the fake's lock held: a test can look at the world (another
    /// fake's record) at that moment, to check what came first.
    pub fn on_call(&self, hook: impl Fn(&MpsCall) + Send + Sync + 'static) {
        *self.hook.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::sync::Arc::new(hook));
    }

    /// The next call of kind `op` fails with `error`.
    pub fn fail_next(&self, op: MpsOp, error: MpsError) {
        self.lock().failures.push((op, error));
    }

    fn begin(&self, call: MpsCall, op: MpsOp) -> Result<MutexGuard<'_, FakeMpsState>, MpsError> {
        let hook = self.hook.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(hook) = hook {
            hook(&call);
        }
        let mut state = self.lock();
        state.calls.push(call);
        if let Some(at) = state.failures.iter().position(|(o, _)| *o == op) {
            let (_, error) = state.failures.remove(at);
            return Err(error);
        }
        Ok(state)
    }
}

impl MpsControl for FakeMps {
    fn ensure_running(&self, gpu: &MpsGpu) -> Result<(), MpsError> {
        let call = MpsCall::EnsureRunning {
            uuid: gpu.uuid.clone(),
        };
        let mut state = self.begin(call, MpsOp::EnsureRunning)?;
        if !state.running.contains_key(&gpu.pipe_dir) {
            state.running.insert(gpu.pipe_dir.clone(), gpu.uuid.clone());
            state.started.push(gpu.uuid.clone());
        }
        Ok(())
    }

    fn stop(&self, gpu: &MpsGpu) -> Result<(), MpsError> {
        let call = MpsCall::Stop {
            uuid: gpu.uuid.clone(),
        };
        let mut state = self.begin(call, MpsOp::Stop)?;
        if state.running.remove(&gpu.pipe_dir).is_some() {
            state.stopped.push(gpu.uuid.clone());
            // `quit` ends the daemon's servers.
            state.servers.remove(&gpu.pipe_dir);
        }
        Ok(())
    }

    fn is_running(&self, gpu: &MpsGpu) -> Result<bool, MpsError> {
        let call = MpsCall::IsRunning {
            uuid: gpu.uuid.clone(),
        };
        let state = self.begin(call, MpsOp::IsRunning)?;
        Ok(state.running.contains_key(&gpu.pipe_dir))
    }

    fn server_pids(&self, gpu: &MpsGpu) -> Result<Vec<u32>, MpsError> {
        let call = MpsCall::ServerPids {
            uuid: gpu.uuid.clone(),
        };
        let mut state = self.begin(call, MpsOp::ServerPids)?;
        Ok(state.servers_of(gpu)?.iter().map(|s| s.pid).collect())
    }

    fn client_pids(&self, gpu: &MpsGpu, server_pid: u32) -> Result<Vec<u32>, MpsError> {
        let call = MpsCall::ClientPids {
            uuid: gpu.uuid.clone(),
            server_pid,
        };
        let mut state = self.begin(call, MpsOp::ClientPids)?;
        Ok(state.server(gpu, server_pid)?.clients.clone())
    }

    fn server_status(&self, gpu: &MpsGpu, server_pid: u32) -> Result<MpsServerStatus, MpsError> {
        let call = MpsCall::ServerStatus {
            uuid: gpu.uuid.clone(),
            server_pid,
        };
        let mut state = self.begin(call, MpsOp::ServerStatus)?;
        Ok(state.server(gpu, server_pid)?.status.clone())
    }

    fn terminate_client(
        &self,
        gpu: &MpsGpu,
        server_pid: u32,
        client_pid: u32,
    ) -> Result<(), MpsError> {
        let call = MpsCall::TerminateClient {
            uuid: gpu.uuid.clone(),
            server_pid,
            client_pid,
        };
        let mut state = self.begin(call, MpsOp::TerminateClient)?;
        let server = state.server(gpu, server_pid)?;
        let at = server
            .clients
            .iter()
            .position(|c| *c == client_pid)
            .ok_or_else(|| MpsError::NoSuchClient {
                gpu: gpu.uuid.clone(),
                server_pid,
                client_pid,
            })?;
        server.clients.remove(at);
        state
            .terminated
            .push((gpu.uuid.clone(), server_pid, client_pid));
        Ok(())
    }
}

impl FakeMpsState {
    /// The servers of a running daemon; `NotRunning` without one.
    fn servers_of(&mut self, gpu: &MpsGpu) -> Result<&mut Vec<FakeServer>, MpsError> {
        if !self.running.contains_key(&gpu.pipe_dir) {
            return Err(MpsError::NotRunning {
                gpu: gpu.uuid.clone(),
            });
        }
        Ok(self.servers.entry(gpu.pipe_dir.clone()).or_default())
    }

    fn server(&mut self, gpu: &MpsGpu, pid: u32) -> Result<&mut FakeServer, MpsError> {
        self.servers_of(gpu)?
            .iter_mut()
            .find(|s| s.pid == pid)
            .ok_or_else(|| MpsError::NoSuchServer {
                gpu: gpu.uuid.clone(),
                server_pid: pid,
            })
    }
}
