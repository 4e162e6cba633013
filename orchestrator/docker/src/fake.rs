//! `FakeRuntime`: an in-memory container engine for tests of the code that
//! drives containers (the daemon's reconcile loop, adoption, health checks).
//!
//! It records every call in order, keeps containers and networks with
//! Docker's rules (unique names, state transitions, no removing a running
//! container without force, a network must exist before a container joins
//! it), emits Docker's event sequences on its event streams, and lets a
//! test inject failures: the next call of some operation fails, the engine
//! becomes unreachable (open streams fail and end), a container dies with a
//! given exit code or is OOM-killed.
//!
//! Specs go through the same translation as the real engine, so a spec the
//! real engine would refuse (`InvalidSpec`) is refused here too.
//!
//! The fake keeps its own clock: it starts at a fixed instant and moves one
//! millisecond per state change (and by `advance_clock`), so event times and
//! start/finish times are ordered and repeatable.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use orch_core::container::ContainerSpec;
use tokio::sync::mpsc;

use crate::error::{DockerError, ObjectKind, Removal};
use crate::mapping;
use crate::runtime::{
    ContainerEvent, ContainerInfo, ContainerRuntime, ContainerState, ContainerSummary,
    DockerEventKind, EngineInfo, EventStream, ExecOutcome, LabelFilter, LogChunk, LogStream,
    LogsAsk, OutputStream,
};

/// The endpoint the fake reports in `Unreachable` errors.
pub const FAKE_ENDPOINT: &str = "fake://engine";

/// The fake clock's starting point, Unix milliseconds (2023-11-14).
pub const FAKE_EPOCH_MS: i64 = 1_700_000_000_000;

/// Networks every Docker engine has; they cannot be removed.
const PREDEFINED_NETWORKS: [&str; 3] = ["bridge", "host", "none"];

/// Signals the fake's main process handles and survives; any other signal
/// ends it with exit code 128 + signal number, as an unhandled one would.
const SURVIVABLE_SIGNALS: [i64; 6] = [1, 10, 12, 18, 19, 28];

/// One recorded call, with its arguments.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    Ping,
    Version,
    EnsureNetwork {
        name: String,
        labels: BTreeMap<String, String>,
    },
    RemoveNetwork {
        name: String,
    },
    Create(Box<ContainerSpec>),
    Start {
        id: String,
    },
    Stop {
        id: String,
        timeout: Duration,
    },
    Kill {
        id: String,
        signal: String,
    },
    Rename {
        id: String,
        new_name: String,
    },
    Remove {
        id: String,
        force: bool,
    },
    Inspect {
        id: String,
    },
    List {
        filter: LabelFilter,
    },
    Events {
        filter: LabelFilter,
    },
    Logs {
        id: String,
        ask: LogsAsk,
    },
    Exec {
        id: String,
        cmd: Vec<String>,
        timeout: Duration,
    },
    ImageExists {
        image: String,
    },
    CpuUsage {
        id: String,
    },
    BuildImage {
        tag: String,
        context_len: usize,
    },
}

impl Call {
    pub fn op(&self) -> Op {
        match self {
            Call::Ping => Op::Ping,
            Call::Version => Op::Version,
            Call::EnsureNetwork { .. } => Op::EnsureNetwork,
            Call::RemoveNetwork { .. } => Op::RemoveNetwork,
            Call::Create(_) => Op::Create,
            Call::Start { .. } => Op::Start,
            Call::Stop { .. } => Op::Stop,
            Call::Kill { .. } => Op::Kill,
            Call::Rename { .. } => Op::Rename,
            Call::Remove { .. } => Op::Remove,
            Call::Inspect { .. } => Op::Inspect,
            Call::List { .. } => Op::List,
            Call::Events { .. } => Op::Events,
            Call::Logs { .. } => Op::Logs,
            Call::Exec { .. } => Op::Exec,
            Call::ImageExists { .. } => Op::ImageExists,
            Call::CpuUsage { .. } => Op::CpuUsage,
            Call::BuildImage { .. } => Op::BuildImage,
        }
    }
}

/// The operations of [`ContainerRuntime`], to aim injected failures at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Ping,
    Version,
    EnsureNetwork,
    RemoveNetwork,
    Create,
    Start,
    Stop,
    Kill,
    Rename,
    Remove,
    Inspect,
    List,
    Events,
    Logs,
    Exec,
    ImageExists,
    CpuUsage,
    BuildImage,
}

/// Decides the outcome of an exec: `(container id, command)`.
pub type ExecHandler =
    Arc<dyn Fn(&str, &[String]) -> Result<ExecOutcome, DockerError> + Send + Sync>;

/// The recording fake engine. Clones share one engine.
#[derive(Clone, Default)]
pub struct FakeRuntime {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for FakeRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        f.debug_struct("FakeRuntime")
            .field("containers", &s.containers.len())
            .field("networks", &s.networks.keys().collect::<Vec<_>>())
            .field("calls", &s.calls.len())
            .field("unreachable", &s.unreachable)
            .finish()
    }
}

struct FakeContainer {
    id: String,
    spec: ContainerSpec,
    state: ContainerState,
    exit_code: Option<i64>,
    started_at_ms: Option<i64>,
    finished_at_ms: Option<i64>,
    oom_killed: bool,
    ip: Option<String>,
    created_ms: i64,
    /// The exit code a graceful stop produces.
    stop_exit_code: i64,
    logs: Vec<LogChunk>,
    /// CPU time used: what was counted until `since`, and the cores busy
    /// from then on (real time, as the daemon measures it).
    cpu: FakeCpu,
}

#[derive(Debug, Clone, Copy)]
struct FakeCpu {
    used_ns: u64,
    /// Tokio's clock: a test with paused time sees virtual CPU time.
    since: tokio::time::Instant,
    cores: f64,
}

impl Default for FakeCpu {
    fn default() -> Self {
        FakeCpu {
            used_ns: 0,
            since: tokio::time::Instant::now(),
            cores: 0.0,
        }
    }
}

impl FakeCpu {
    fn used_now(&self) -> u64 {
        let busy = self.since.elapsed().as_nanos() as f64 * self.cores;
        self.used_ns.saturating_add(busy as u64)
    }
}

struct FakeNetwork {
    id: String,
    labels: BTreeMap<String, String>,
    /// Second octet of the network's 172.x.0.0/16.
    subnet: u8,
    next_host: u32,
}

struct Subscriber {
    filter: LabelFilter,
    tx: mpsc::UnboundedSender<Result<ContainerEvent, DockerError>>,
}

struct LogFollower {
    container: String,
    tx: mpsc::UnboundedSender<Result<LogChunk, DockerError>>,
}

struct State {
    calls: Vec<Call>,
    /// By id, in creation order of ids (ids grow).
    containers: BTreeMap<String, FakeContainer>,
    networks: BTreeMap<String, FakeNetwork>,
    /// `None`: every image exists.
    images: Option<BTreeSet<String>>,
    failures: HashMap<Op, VecDeque<DockerError>>,
    unreachable: bool,
    exec_results: VecDeque<Result<ExecOutcome, DockerError>>,
    exec_handler: Option<ExecHandler>,
    subscribers: Vec<Subscriber>,
    log_followers: Vec<LogFollower>,
    clock_ms: i64,
    next_id: u64,
    next_subnet: u8,
    engine: EngineInfo,
}

impl Default for State {
    fn default() -> Self {
        let mut s = State {
            calls: Vec::new(),
            containers: BTreeMap::new(),
            networks: BTreeMap::new(),
            images: None,
            failures: HashMap::new(),
            unreachable: false,
            exec_results: VecDeque::new(),
            exec_handler: None,
            subscribers: Vec::new(),
            log_followers: Vec::new(),
            clock_ms: FAKE_EPOCH_MS,
            next_id: 0,
            next_subnet: 17,
            engine: EngineInfo {
                api_version: "1.41".into(),
                engine_api_version: "1.41".into(),
                engine_version: "20.10.24-fake".into(),
                os: "linux".into(),
                arch: "amd64".into(),
                runtimes: vec!["runc".into()],
                nvidia_runtime: false,
                cdi_enabled: false,
            },
        };
        for name in PREDEFINED_NETWORKS {
            s.add_network(name, BTreeMap::new());
        }
        s
    }
}

impl State {
    fn tick(&mut self) -> i64 {
        self.clock_ms += 1;
        self.clock_ms
    }

    /// A 64-hex-digit id, distinct and repeatable (splitmix64 of a counter).
    fn new_id(&mut self) -> String {
        self.next_id += 1;
        let mut x = self.next_id;
        let mut out = String::with_capacity(64);
        for _ in 0..4 {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            out.push_str(&format!("{z:016x}"));
        }
        out
    }

    fn add_network(&mut self, name: &str, labels: BTreeMap<String, String>) -> String {
        let id = self.new_id();
        let subnet = self.next_subnet;
        // Like Docker: `bridge` is 172.17/16, user networks count up from
        // 172.18; `host` and `none` have no addresses of their own.
        if name != "host" && name != "none" {
            self.next_subnet = self.next_subnet.saturating_add(1);
        }
        self.networks.insert(
            name.to_string(),
            FakeNetwork {
                id: id.clone(),
                labels,
                subnet,
                next_host: 2,
            },
        );
        id
    }

    fn unreachable_error() -> DockerError {
        DockerError::Unreachable {
            endpoint: FAKE_ENDPOINT.into(),
            reason: "the fake engine was made unreachable".into(),
        }
    }

    /// Records the call and applies any injected failure.
    fn enter(&mut self, call: Call) -> Result<(), DockerError> {
        let op = call.op();
        self.calls.push(call);
        if self.unreachable {
            return Err(Self::unreachable_error());
        }
        match self.failures.get_mut(&op).and_then(VecDeque::pop_front) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Docker's lookup order: full id, exact name, then a unique id prefix.
    fn resolve(&self, key: &str) -> Result<String, DockerError> {
        if self.containers.contains_key(key) {
            return Ok(key.to_string());
        }
        let key_name = key.trim_start_matches('/');
        if let Some(c) = self.containers.values().find(|c| c.spec.name == key_name) {
            return Ok(c.id.clone());
        }
        let mut prefixed = self.containers.keys().filter(|id| id.starts_with(key));
        match (key.is_empty(), prefixed.next(), prefixed.next()) {
            (false, Some(id), None) => Ok(id.clone()),
            (false, Some(_), Some(_)) => Err(DockerError::Api {
                status: 400,
                message: format!("multiple IDs found with provided prefix: {key}"),
            }),
            _ => Err(DockerError::not_found(ObjectKind::Container, key)),
        }
    }

    fn container_mut(&mut self, key: &str) -> Result<&mut FakeContainer, DockerError> {
        let id = self.resolve(key)?;
        self.containers
            .get_mut(&id)
            .ok_or_else(|| DockerError::not_found(ObjectKind::Container, key))
    }

    fn emit(&mut self, id: &str, kind: DockerEventKind) {
        let time_ns = self.tick().saturating_mul(1_000_000);
        let Some(c) = self.containers.get(id) else {
            return;
        };
        let event = ContainerEvent {
            id: id.to_string(),
            kind,
            name: Some(c.spec.name.clone()),
            image: Some(c.spec.image.clone()),
            labels: c.spec.labels.clone(),
            time_ns,
        };
        self.subscribers
            .retain(|s| !s.filter.matches(&event.labels) || s.tx.send(Ok(event.clone())).is_ok());
    }

    /// The main process ended: state, times, address, events, log streams.
    fn die(&mut self, id: &str, exit_code: i64, oom: bool) {
        let now = self.tick();
        if let Some(c) = self.containers.get_mut(id) {
            c.state = ContainerState::Exited;
            c.exit_code = Some(exit_code);
            c.finished_at_ms = Some(now);
            c.oom_killed = oom;
            c.ip = None;
        }
        if oom {
            self.emit(id, DockerEventKind::Oom);
        }
        self.emit(
            id,
            DockerEventKind::Die {
                exit_code: Some(exit_code),
            },
        );
        // Docker ends followed logs when the container stops.
        self.log_followers.retain(|f| f.container != id);
    }

    fn alive(&self, id: &str) -> bool {
        self.containers.get(id).is_some_and(|c| c.state.is_alive())
    }

    fn info(&self, c: &FakeContainer) -> ContainerInfo {
        ContainerInfo {
            id: c.id.clone(),
            name: c.spec.name.clone(),
            image: c.spec.image.clone(),
            image_id: image_id(&c.spec.image),
            labels: c.spec.labels.clone(),
            state: c.state,
            exit_code: c.exit_code,
            started_at_ms: c.started_at_ms,
            finished_at_ms: c.finished_at_ms,
            oom_killed: c.oom_killed,
            error: None,
            networks: BTreeMap::from([(c.spec.network.clone(), c.ip.clone())]),
        }
    }

    fn image_present(&self, image: &str) -> bool {
        self.images.as_ref().is_none_or(|set| set.contains(image))
    }
}

/// A repeatable `sha256:` id for an image name (FNV-1a, widened).
fn image_id(image: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in image.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("sha256:{h:016x}{h:016x}{h:016x}{h:016x}")
}

/// `"SIGKILL"`, `"kill"`, `"9"` → 9.
fn signal_number(signal: &str) -> Option<i64> {
    let s = signal.trim();
    if let Ok(n) = s.parse::<i64>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let n = match name {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "ABRT" => 6,
        "KILL" => 9,
        "USR1" => 10,
        "USR2" => 12,
        "PIPE" => 13,
        "ALRM" => 14,
        "TERM" => 15,
        "CONT" => 18,
        "STOP" => 19,
        "WINCH" => 28,
        _ => return None,
    };
    Some(n)
}

/// Docker's container name rule.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn channel_stream<T: Send + 'static>(
    rx: mpsc::UnboundedReceiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

impl FakeRuntime {
    pub fn new() -> Self {
        FakeRuntime::default()
    }

    /// A short-held lock; never held across an `.await`. A test that
    /// panicked while holding it leaves the state usable.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    // ---- inspecting what happened ----

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The operations called so far, in order.
    pub fn ops(&self) -> Vec<Op> {
        self.lock().calls.iter().map(Call::op).collect()
    }

    /// Returns the calls so far and forgets them.
    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut self.lock().calls)
    }

    /// Every container, in id order.
    pub fn containers(&self) -> Vec<ContainerInfo> {
        let s = self.lock();
        s.containers.values().map(|c| s.info(c)).collect()
    }

    /// The spec a container was created from.
    pub fn spec_of(&self, id: &str) -> Option<ContainerSpec> {
        let s = self.lock();
        let id = s.resolve(id).ok()?;
        s.containers.get(&id).map(|c| c.spec.clone())
    }

    /// Network names with their labels (including the predefined ones).
    pub fn networks(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        self.lock()
            .networks
            .iter()
            .map(|(k, n)| (k.clone(), n.labels.clone()))
            .collect()
    }

    /// The fake clock, Unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        self.lock().clock_ms
    }

    // ---- shaping the engine ----

    /// From now on only images added with `add_image` or built exist;
    /// by default every image exists.
    pub fn strict_images(&self) {
        let mut s = self.lock();
        if s.images.is_none() {
            s.images = Some(BTreeSet::new());
        }
    }

    pub fn add_image(&self, image: &str) {
        let mut s = self.lock();
        s.images
            .get_or_insert_with(BTreeSet::new)
            .insert(image.to_string());
    }

    /// From now on the container keeps `cores` CPUs busy (1.5: one and a
    /// half), as `cpu_usage` reports it.
    pub fn set_cpu_load(&self, key: &str, cores: f64) -> Result<(), DockerError> {
        let mut s = self.lock();
        let c = s.container_mut(key)?;
        c.cpu = FakeCpu {
            used_ns: c.cpu.used_now(),
            since: tokio::time::Instant::now(),
            cores: cores.max(0.0),
        };
        Ok(())
    }

    pub fn advance_clock(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        let mut s = self.lock();
        s.clock_ms = s.clock_ms.saturating_add(ms);
    }

    /// The exit code a later `stop` of this container produces (default 0).
    pub fn set_stop_exit_code(&self, id: &str, code: i64) -> Result<(), DockerError> {
        self.lock().container_mut(id)?.stop_exit_code = code;
        Ok(())
    }

    // ---- injecting failures ----

    /// The next call of `op` fails with `error` (after being recorded).
    /// Several calls queue up.
    pub fn fail_next(&self, op: Op, error: DockerError) {
        self.lock().failures.entry(op).or_default().push_back(error);
    }

    /// While unreachable every call fails with `Unreachable`; making the
    /// engine unreachable also fails and ends every open stream, as a lost
    /// connection does.
    pub fn set_unreachable(&self, unreachable: bool) {
        let mut s = self.lock();
        s.unreachable = unreachable;
        if unreachable {
            for sub in s.subscribers.drain(..) {
                let _ = sub.tx.send(Err(State::unreachable_error()));
            }
            for f in s.log_followers.drain(..) {
                let _ = f.tx.send(Err(State::unreachable_error()));
            }
        }
    }

    /// Ends every open event stream without an error, as when the engine
    /// closes the connection on shutdown.
    pub fn close_event_streams(&self) {
        self.lock().subscribers.clear();
    }

    /// The container's main process exits with `code`.
    pub fn exit(&self, id: &str, code: i64) -> Result<(), DockerError> {
        let mut s = self.lock();
        let id = s.resolve(id)?;
        if !s.alive(&id) {
            return Err(DockerError::NotRunning { id });
        }
        s.die(&id, code, false);
        Ok(())
    }

    /// The kernel OOM-kills the container: `oom`, then `die` with 137.
    pub fn oom_kill(&self, id: &str) -> Result<(), DockerError> {
        let mut s = self.lock();
        let id = s.resolve(id)?;
        if !s.alive(&id) {
            return Err(DockerError::NotRunning { id });
        }
        s.die(&id, 137, true);
        Ok(())
    }

    /// The container writes `bytes` to one of its outputs.
    pub fn push_log(
        &self,
        id: &str,
        stream: OutputStream,
        bytes: impl Into<Bytes>,
    ) -> Result<(), DockerError> {
        let mut s = self.lock();
        let id = s.resolve(id)?;
        let chunk = LogChunk {
            stream,
            bytes: bytes.into(),
        };
        s.log_followers
            .retain(|f| f.container != id || f.tx.send(Ok(chunk.clone())).is_ok());
        if let Some(c) = s.containers.get_mut(&id) {
            c.logs.push(chunk);
        }
        Ok(())
    }

    /// The next exec returns this (queued, before the handler).
    pub fn push_exec_result(&self, result: Result<ExecOutcome, DockerError>) {
        self.lock().exec_results.push_back(result);
    }

    /// Decides execs not covered by queued results; without one an exec
    /// succeeds with no output.
    pub fn set_exec_handler(&self, handler: ExecHandler) {
        self.lock().exec_handler = Some(handler);
    }
}

#[async_trait]
impl ContainerRuntime for FakeRuntime {
    async fn ping(&self) -> Result<(), DockerError> {
        self.lock().enter(Call::Ping)
    }

    async fn version(&self) -> Result<EngineInfo, DockerError> {
        let mut s = self.lock();
        s.enter(Call::Version)?;
        Ok(s.engine.clone())
    }

    async fn ensure_network(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<String, DockerError> {
        let mut s = self.lock();
        s.enter(Call::EnsureNetwork {
            name: name.to_string(),
            labels: labels.clone(),
        })?;
        if let Some(n) = s.networks.get(name) {
            return Ok(n.id.clone());
        }
        Ok(s.add_network(name, labels.clone()))
    }

    async fn remove_network(&self, name: &str) -> Result<(), DockerError> {
        let mut s = self.lock();
        s.enter(Call::RemoveNetwork {
            name: name.to_string(),
        })?;
        let Some(network) = s.networks.get(name) else {
            return Err(DockerError::not_found(ObjectKind::Network, name));
        };
        if PREDEFINED_NETWORKS.contains(&name) {
            return Err(DockerError::Api {
                status: 403,
                message: format!("{name} is a pre-defined network and cannot be removed"),
            });
        }
        let in_use = s
            .containers
            .values()
            .any(|c| c.spec.network == name && c.state.is_alive());
        if in_use {
            return Err(DockerError::Api {
                status: 403,
                message: format!(
                    "error while removing network: network {name} id {} has active endpoints",
                    network.id
                ),
            });
        }
        s.networks.remove(name);
        Ok(())
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, DockerError> {
        let mut s = self.lock();
        s.enter(Call::Create(Box::new(spec.clone())))?;
        mapping::create_body(spec)?;
        if !valid_name(&spec.name) {
            return Err(DockerError::Api {
                status: 400,
                message: format!(
                    "Invalid container name ({}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed",
                    spec.name
                ),
            });
        }
        if let Some(existing) = s.containers.values().find(|c| c.spec.name == spec.name) {
            return Err(DockerError::NameConflict {
                name: spec.name.clone(),
                existing_id: existing.id.clone(),
            });
        }
        if !s.image_present(&spec.image) {
            return Err(DockerError::ImageMissing {
                image: spec.image.clone(),
            });
        }
        if !s.networks.contains_key(&spec.network) {
            return Err(DockerError::not_found(ObjectKind::Network, &spec.network));
        }
        let id = s.new_id();
        let created_ms = s.tick();
        s.containers.insert(
            id.clone(),
            FakeContainer {
                id: id.clone(),
                spec: spec.clone(),
                state: ContainerState::Created,
                exit_code: None,
                started_at_ms: None,
                finished_at_ms: None,
                oom_killed: false,
                ip: None,
                created_ms,
                stop_exit_code: 0,
                logs: Vec::new(),
                cpu: FakeCpu::default(),
            },
        );
        s.emit(&id, DockerEventKind::Create);
        Ok(id)
    }

    async fn start(&self, id: &str) -> Result<(), DockerError> {
        let mut s = self.lock();
        s.enter(Call::Start { id: id.to_string() })?;
        let id = s.resolve(id)?;
        let (state, network) = match s.containers.get(&id) {
            Some(c) => (c.state, c.spec.network.clone()),
            None => return Err(DockerError::not_found(ObjectKind::Container, &id)),
        };
        match state {
            ContainerState::Running | ContainerState::Restarting => return Ok(()),
            ContainerState::Paused => {
                return Err(DockerError::Api {
                    status: 500,
                    message: "cannot start a paused container, try unpause instead".into(),
                });
            }
            ContainerState::Removing | ContainerState::Dead => {
                return Err(DockerError::Api {
                    status: 409,
                    message: format!("container {id} is marked for removal and cannot be started"),
                });
            }
            ContainerState::Created | ContainerState::Exited => {}
        }
        let Some(net) = s.networks.get_mut(&network) else {
            return Err(DockerError::not_found(ObjectKind::Network, &network));
        };
        let ip = (network != "host" && network != "none")
            .then(|| format!("172.{}.0.{}", net.subnet, net.next_host));
        net.next_host += 1;
        let now = s.tick();
        if let Some(c) = s.containers.get_mut(&id) {
            c.state = ContainerState::Running;
            c.started_at_ms = Some(now);
            c.oom_killed = false;
            c.ip = ip;
        }
        s.emit(&id, DockerEventKind::Start);
        Ok(())
    }

    async fn stop(&self, id: &str, timeout: Duration) -> Result<(), DockerError> {
        let mut s = self.lock();
        s.enter(Call::Stop {
            id: id.to_string(),
            timeout,
        })?;
        let id = s.resolve(id)?;
        if !s.alive(&id) {
            // Docker answers 304 Not Modified: nothing to do.
            return Ok(());
        }
        let code = s.containers.get(&id).map_or(0, |c| c.stop_exit_code);
        s.emit(
            &id,
            DockerEventKind::Kill {
                signal: Some("15".into()),
            },
        );
        s.die(&id, code, false);
        s.emit(&id, DockerEventKind::Stop);
        Ok(())
    }

    async fn kill(&self, id: &str, signal: &str) -> Result<(), DockerError> {
        let mut s = self.lock();
        s.enter(Call::Kill {
            id: id.to_string(),
            signal: signal.to_string(),
        })?;
        let id = s.resolve(id)?;
        let Some(n) = signal_number(signal) else {
            return Err(DockerError::Api {
                status: 400,
                message: format!("Invalid signal: {signal}"),
            });
        };
        if !s.alive(&id) {
            return Err(DockerError::NotRunning { id });
        }
        s.emit(
            &id,
            DockerEventKind::Kill {
                signal: Some(n.to_string()),
            },
        );
        if !SURVIVABLE_SIGNALS.contains(&n) {
            s.die(&id, 128 + n, false);
        }
        Ok(())
    }

    async fn rename(&self, id: &str, new_name: &str) -> Result<(), DockerError> {
        let mut s = self.lock();
        s.enter(Call::Rename {
            id: id.to_string(),
            new_name: new_name.to_string(),
        })?;
        let id = s.resolve(id)?;
        if !valid_name(new_name) {
            return Err(DockerError::Api {
                status: 400,
                message: format!(
                    "Invalid container name ({new_name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
                ),
            });
        }
        if let Some(holder) = s
            .containers
            .values()
            .find(|c| c.spec.name == new_name && c.id != id)
        {
            return Err(DockerError::NameConflict {
                name: new_name.to_string(),
                existing_id: holder.id.clone(),
            });
        }
        if let Some(c) = s.containers.get_mut(&id) {
            c.spec.name = new_name.to_string();
        }
        s.emit(&id, DockerEventKind::Other("rename".into()));
        Ok(())
    }

    async fn remove(&self, id: &str, force: bool) -> Result<Removal, DockerError> {
        let mut s = self.lock();
        s.enter(Call::Remove {
            id: id.to_string(),
            force,
        })?;
        let id = match s.resolve(id) {
            Ok(id) => id,
            Err(DockerError::NotFound { .. }) => return Ok(Removal::AlreadyGone),
            Err(e) => return Err(e),
        };
        if s.alive(&id) {
            if !force {
                return Err(DockerError::Api {
                    status: 409,
                    message: format!(
                        "You cannot remove a running container {id}. Stop the container before attempting removal or force remove"
                    ),
                });
            }
            s.emit(
                &id,
                DockerEventKind::Kill {
                    signal: Some("9".into()),
                },
            );
            s.die(&id, 137, false);
        }
        s.emit(&id, DockerEventKind::Destroy);
        s.containers.remove(&id);
        s.log_followers.retain(|f| f.container != id);
        Ok(Removal::Removed)
    }

    async fn inspect(&self, id: &str) -> Result<ContainerInfo, DockerError> {
        let mut s = self.lock();
        s.enter(Call::Inspect { id: id.to_string() })?;
        let id = s.resolve(id)?;
        s.containers
            .get(&id)
            .map(|c| s.info(c))
            .ok_or_else(|| DockerError::not_found(ObjectKind::Container, &id))
    }

    async fn list(&self, filter: &LabelFilter) -> Result<Vec<ContainerSummary>, DockerError> {
        let mut s = self.lock();
        s.enter(Call::List {
            filter: filter.clone(),
        })?;
        Ok(s.containers
            .values()
            .filter(|c| filter.matches(&c.spec.labels))
            .map(|c| ContainerSummary {
                id: c.id.clone(),
                name: c.spec.name.clone(),
                image: c.spec.image.clone(),
                labels: c.spec.labels.clone(),
                state: c.state,
                status: match (c.state, c.exit_code) {
                    (ContainerState::Exited, Some(code)) => format!("Exited ({code})"),
                    (state, _) => state.to_string(),
                },
                created: c.created_ms / 1000,
            })
            .collect())
    }

    async fn events(&self, filter: &LabelFilter) -> Result<EventStream, DockerError> {
        let mut s = self.lock();
        s.enter(Call::Events {
            filter: filter.clone(),
        })?;
        let (tx, rx) = mpsc::unbounded_channel();
        s.subscribers.push(Subscriber {
            filter: filter.clone(),
            tx,
        });
        Ok(channel_stream(rx).boxed())
    }

    /// `since` and `timestamps` are recorded, not acted on: the fake's
    /// output has no times.
    async fn logs(&self, id: &str, ask: LogsAsk) -> Result<LogStream, DockerError> {
        let LogsAsk { follow, tail, .. } = ask;
        let mut s = self.lock();
        s.enter(Call::Logs {
            id: id.to_string(),
            ask,
        })?;
        let id = s.resolve(id)?;
        let (tx, rx) = mpsc::unbounded_channel();
        if let Some(c) = s.containers.get(&id) {
            // The fake counts each chunk as one line.
            let skip = tail.map_or(0, |t| {
                c.logs
                    .len()
                    .saturating_sub(usize::try_from(t).unwrap_or(usize::MAX))
            });
            for chunk in c.logs.iter().skip(skip) {
                let _ = tx.send(Ok(chunk.clone()));
            }
        }
        if follow && s.alive(&id) {
            s.log_followers.push(LogFollower { container: id, tx });
        }
        Ok(channel_stream(rx).boxed())
    }

    async fn exec(
        &self,
        id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecOutcome, DockerError> {
        let (resolved, handler, queued) = {
            let mut s = self.lock();
            s.enter(Call::Exec {
                id: id.to_string(),
                cmd: cmd.to_vec(),
                timeout,
            })?;
            let resolved = s.resolve(id)?;
            if !s.alive(&resolved) {
                return Err(DockerError::NotRunning { id: resolved });
            }
            let queued = s.exec_results.pop_front();
            (resolved, s.exec_handler.clone(), queued)
        };
        // The handler runs without the lock so it may use the fake itself.
        match (queued, handler) {
            (Some(result), _) => result,
            (None, Some(handler)) => handler(&resolved, cmd),
            (None, None) => Ok(ExecOutcome {
                exit_code: 0,
                output: Bytes::new(),
                truncated: false,
            }),
        }
    }

    async fn image_exists(&self, image: &str) -> Result<bool, DockerError> {
        let mut s = self.lock();
        s.enter(Call::ImageExists {
            image: image.to_string(),
        })?;
        Ok(s.image_present(image))
    }

    async fn cpu_usage(&self, id: &str) -> Result<u64, DockerError> {
        let mut s = self.lock();
        s.enter(Call::CpuUsage { id: id.to_string() })?;
        let c = s.container_mut(id)?;
        Ok(c.cpu.used_now())
    }

    async fn build_image(&self, context: Bytes, tag: &str) -> Result<String, DockerError> {
        let mut s = self.lock();
        s.enter(Call::BuildImage {
            tag: tag.to_string(),
            context_len: context.len(),
        })?;
        if context.is_empty() {
            return Err(DockerError::Build {
                tag: tag.to_string(),
                message: "the build context is empty".into(),
            });
        }
        if let Some(images) = s.images.as_mut() {
            images.insert(tag.to_string());
        }
        Ok(image_id(tag))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn following(tail: Option<u64>) -> LogsAsk {
        LogsAsk {
            follow: true,
            tail,
            ..LogsAsk::default()
        }
    }
    use orch_core::container::GpuDevices;
    use orch_core::units::Duration as CoreDuration;

    fn spec(name: &str) -> ContainerSpec {
        ContainerSpec {
            name: name.into(),
            image: "orchestrator-agent:latest".into(),
            command: None,
            env: BTreeMap::new(),
            labels: BTreeMap::from([
                ("io.orchestrator.host".into(), "main".into()),
                ("io.orchestrator.agent".into(), name.into()),
            ]),
            network: "orch-main".into(),
            aliases: vec![],
            hostname: None,
            ports: vec![],
            mounts: vec![],
            cpus: None,
            memory: None,
            pids: None,
            cap_add: vec![],
            read_only_rootfs: false,
            gpu: GpuDevices::None,
            ipc_host: false,
            stop_timeout: CoreDuration::from_secs(10),
        }
    }

    async fn ready() -> FakeRuntime {
        let fake = FakeRuntime::new();
        fake.ensure_network("orch-main", &BTreeMap::new())
            .await
            .expect("network");
        fake
    }

    async fn next_kinds(events: &mut EventStream, n: usize) -> Vec<DockerEventKind> {
        let mut kinds = Vec::new();
        for _ in 0..n {
            let ev = tokio::time::timeout(Duration::from_secs(5), events.next())
                .await
                .expect("event in time")
                .expect("stream open")
                .expect("event ok");
            kinds.push(ev.kind);
        }
        kinds
    }

    #[tokio::test]
    async fn it_is_usable_as_a_shared_trait_object() {
        let runtime: Arc<dyn ContainerRuntime> = Arc::new(FakeRuntime::new());
        runtime.ping().await.expect("ping");
        assert_eq!(
            runtime.version().await.expect("version").api_version,
            "1.41"
        );
    }

    #[tokio::test]
    async fn a_lifecycle_is_recorded_and_emits_docker_events() {
        let fake = ready().await;
        let mut events = fake
            .events(&LabelFilter::any().label("io.orchestrator.host", "main"))
            .await
            .expect("events");
        let id = fake.create(&spec("a")).await.expect("create");
        fake.start(&id).await.expect("start");
        let info = fake.inspect(&id).await.expect("inspect");
        assert_eq!(info.state, ContainerState::Running);
        assert_eq!(info.ip_on("orch-main"), Some("172.18.0.2"));
        assert!(info.started_at_ms.is_some_and(|t| t > FAKE_EPOCH_MS));
        fake.stop(&id, Duration::from_secs(3)).await.expect("stop");
        let info = fake.inspect(&id).await.expect("inspect");
        assert_eq!(
            (info.state, info.exit_code, info.ip_on("orch-main")),
            (ContainerState::Exited, Some(0), None)
        );
        assert!(info.finished_at_ms > info.started_at_ms);
        assert_eq!(fake.remove(&id, false).await, Ok(Removal::Removed));
        assert_eq!(fake.remove(&id, false).await, Ok(Removal::AlreadyGone));

        assert_eq!(
            next_kinds(&mut events, 6).await,
            vec![
                DockerEventKind::Create,
                DockerEventKind::Start,
                DockerEventKind::Kill {
                    signal: Some("15".into())
                },
                DockerEventKind::Die { exit_code: Some(0) },
                DockerEventKind::Stop,
                DockerEventKind::Destroy,
            ]
        );
        assert_eq!(
            fake.ops(),
            vec![
                Op::EnsureNetwork,
                Op::Events,
                Op::Create,
                Op::Start,
                Op::Inspect,
                Op::Stop,
                Op::Inspect,
                Op::Remove,
                Op::Remove
            ]
        );
        match &fake.calls()[5] {
            Call::Stop {
                id: stopped,
                timeout,
            } => {
                assert_eq!((stopped, *timeout), (&id, Duration::from_secs(3)));
            }
            other => panic!("expected a stop, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn names_are_unique_and_a_conflict_names_the_holder() {
        let fake = ready().await;
        let id = fake.create(&spec("a")).await.expect("create");
        assert_eq!(
            fake.create(&spec("a")).await,
            Err(DockerError::NameConflict {
                name: "a".into(),
                existing_id: id.clone()
            })
        );
        assert_eq!(fake.containers().len(), 1);
        // Names resolve like ids, as in Docker.
        assert_eq!(fake.inspect("a").await.map(|i| i.id), Ok(id.clone()));
        assert_eq!(fake.inspect(&id[..12]).await.map(|i| i.id), Ok(id));
        let mut bad = spec("a");
        bad.name = "-bad name".into();
        assert!(matches!(
            fake.create(&bad).await,
            Err(DockerError::Api { status: 400, .. })
        ));
    }

    #[tokio::test]
    async fn a_rename_keeps_the_id_and_refuses_a_name_in_use() {
        let fake = ready().await;
        let a = fake.create(&spec("first")).await.expect("create a");
        let b = fake.create(&spec("second")).await.expect("create b");
        assert_eq!(
            fake.rename(&b, "first").await,
            Err(DockerError::NameConflict {
                name: "first".into(),
                existing_id: a.clone()
            })
        );
        assert_eq!(fake.rename(&b, "third").await, Ok(()));
        assert_eq!(fake.inspect("third").await.map(|i| i.id), Ok(b.clone()));
        // The old name is free again.
        assert!(matches!(
            fake.inspect("second").await,
            Err(DockerError::NotFound { .. })
        ));
        assert!(matches!(
            fake.rename("nothing", "fourth").await,
            Err(DockerError::NotFound { .. })
        ));
        assert_eq!(
            fake.calls().last(),
            Some(&Call::Rename {
                id: "nothing".into(),
                new_name: "fourth".into()
            })
        );
    }

    #[tokio::test]
    async fn creating_needs_the_image_and_the_network() {
        let fake = FakeRuntime::new();
        assert_eq!(
            fake.create(&spec("a")).await,
            Err(DockerError::not_found(ObjectKind::Network, "orch-main"))
        );
        fake.ensure_network("orch-main", &BTreeMap::new())
            .await
            .expect("network");
        fake.strict_images();
        assert_eq!(
            fake.create(&spec("a")).await,
            Err(DockerError::ImageMissing {
                image: "orchestrator-agent:latest".into()
            })
        );
        assert_eq!(
            fake.image_exists("orchestrator-agent:latest").await,
            Ok(false)
        );
        let built = fake
            .build_image(Bytes::from_static(b"tar"), "orchestrator-agent:latest")
            .await
            .expect("build");
        assert!(built.starts_with("sha256:"));
        assert_eq!(
            fake.image_exists("orchestrator-agent:latest").await,
            Ok(true)
        );
        assert!(fake.create(&spec("a")).await.is_ok());
        assert!(matches!(
            fake.build_image(Bytes::new(), "x").await,
            Err(DockerError::Build { .. })
        ));
    }

    #[tokio::test]
    async fn specs_the_real_engine_refuses_are_refused_too() {
        let fake = ready().await;
        let mut s = spec("a");
        s.cpus = Some(-1.0);
        assert!(matches!(
            fake.create(&s).await,
            Err(DockerError::InvalidSpec { .. })
        ));
    }

    #[tokio::test]
    async fn injected_failures_hit_the_next_call_only() {
        let fake = ready().await;
        fake.fail_next(
            Op::Create,
            DockerError::Api {
                status: 500,
                message: "boom".into(),
            },
        );
        assert!(matches!(
            fake.create(&spec("a")).await,
            Err(DockerError::Api { status: 500, .. })
        ));
        assert!(fake.containers().is_empty());
        let id = fake.create(&spec("a")).await.expect("second create works");
        assert!(!id.is_empty());
        assert_eq!(
            fake.ops().iter().filter(|o| **o == Op::Create).count(),
            2,
            "failed calls are recorded too"
        );
    }

    #[tokio::test]
    async fn an_unreachable_engine_fails_calls_and_breaks_streams() {
        let fake = ready().await;
        let id = fake.create(&spec("a")).await.expect("create");
        fake.start(&id).await.expect("start");
        let mut events = fake.events(&LabelFilter::any()).await.expect("events");
        let mut logs = fake.logs(&id, following(None)).await.expect("logs");
        fake.set_unreachable(true);
        assert!(fake.ping().await.is_err_and(|e| e.is_unreachable()));
        assert!(fake.inspect(&id).await.is_err_and(|e| e.is_unreachable()));
        let ev = events.next().await.expect("an error item");
        assert!(ev.is_err_and(|e| e.is_unreachable()));
        assert!(events.next().await.is_none(), "the stream ends");
        assert!(logs.next().await.expect("an error item").is_err());
        assert!(logs.next().await.is_none());

        fake.set_unreachable(false);
        assert_eq!(
            fake.inspect(&id).await.map(|i| i.state),
            Ok(ContainerState::Running),
            "containers survive an engine outage"
        );
    }

    #[tokio::test]
    async fn a_container_can_be_made_to_die_or_be_oom_killed() {
        let fake = ready().await;
        let mut events = fake.events(&LabelFilter::any()).await.expect("events");
        let a = fake.create(&spec("a")).await.expect("create");
        let b = fake.create(&spec("b")).await.expect("create");
        fake.start(&a).await.expect("start");
        fake.start(&b).await.expect("start");
        fake.exit(&a, 3).expect("exit");
        fake.oom_kill(&b).expect("oom");
        let a_info = fake.inspect(&a).await.expect("inspect");
        assert_eq!((a_info.exit_code, a_info.oom_killed), (Some(3), false));
        let b_info = fake.inspect(&b).await.expect("inspect");
        assert_eq!(
            (b_info.state, b_info.exit_code, b_info.oom_killed),
            (ContainerState::Exited, Some(137), true)
        );
        let kinds = next_kinds(&mut events, 7).await;
        assert_eq!(
            kinds[4..],
            [
                DockerEventKind::Die { exit_code: Some(3) },
                DockerEventKind::Oom,
                DockerEventKind::Die {
                    exit_code: Some(137)
                }
            ]
        );
        assert_eq!(fake.exit(&a, 1), Err(DockerError::NotRunning { id: a }));
        assert!(fake.exit("nope", 1).is_err_and(|e| e.is_not_found()));
    }

    #[tokio::test]
    async fn signals_follow_docker_and_unix_rules() {
        let fake = ready().await;
        let id = fake.create(&spec("a")).await.expect("create");
        assert_eq!(
            fake.kill(&id, "SIGKILL").await,
            Err(DockerError::NotRunning { id: id.clone() })
        );
        fake.start(&id).await.expect("start");
        assert!(matches!(
            fake.kill(&id, "SIGNOPE").await,
            Err(DockerError::Api { status: 400, .. })
        ));
        fake.kill(&id, "HUP").await.expect("hup");
        assert_eq!(
            fake.inspect(&id).await.map(|i| i.state),
            Ok(ContainerState::Running),
            "HUP is handled"
        );
        fake.kill(&id, "9").await.expect("kill");
        assert_eq!(
            fake.inspect(&id).await.map(|i| (i.state, i.exit_code)),
            Ok((ContainerState::Exited, Some(137)))
        );
    }

    #[tokio::test]
    async fn a_running_container_needs_force_to_be_removed() {
        let fake = ready().await;
        let id = fake.create(&spec("a")).await.expect("create");
        fake.start(&id).await.expect("start");
        assert!(matches!(
            fake.remove(&id, false).await,
            Err(DockerError::Api { status: 409, .. })
        ));
        assert!(matches!(
            fake.remove_network("orch-main").await,
            Err(DockerError::Api { status: 403, .. })
        ));
        assert_eq!(fake.remove(&id, true).await, Ok(Removal::Removed));
        assert!(fake.inspect(&id).await.is_err_and(|e| e.is_not_found()));
        fake.remove_network("orch-main").await.expect("now free");
        assert!(
            fake.remove_network("orch-main")
                .await
                .is_err_and(|e| e.is_not_found())
        );
        assert!(fake.remove_network("bridge").await.is_err());
    }

    #[tokio::test]
    async fn networks_are_idempotent_and_labelled() {
        let fake = FakeRuntime::new();
        let labels = BTreeMap::from([("io.orchestrator.network".to_string(), "main".to_string())]);
        let a = fake
            .ensure_network("orch-main", &labels)
            .await
            .expect("net");
        let b = fake
            .ensure_network("orch-main", &labels)
            .await
            .expect("net");
        assert_eq!(a, b);
        assert_eq!(fake.networks().get("orch-main"), Some(&labels));
    }

    #[tokio::test]
    async fn list_filters_by_label_and_shows_stopped_containers() {
        let fake = ready().await;
        let a = fake.create(&spec("a")).await.expect("create");
        let mut other = spec("b");
        other
            .labels
            .insert("io.orchestrator.host".into(), "other".into());
        fake.create(&other).await.expect("create");
        fake.start(&a).await.expect("start");
        fake.exit(&a, 2).expect("exit");
        let mine = fake
            .list(&LabelFilter::any().label("io.orchestrator.host", "main"))
            .await
            .expect("list");
        assert_eq!(mine.len(), 1);
        assert_eq!(
            (mine[0].id.as_str(), mine[0].state, mine[0].status.as_str()),
            (a.as_str(), ContainerState::Exited, "Exited (2)")
        );
        let all = fake
            .list(&LabelFilter::any().has_label("io.orchestrator.agent"))
            .await
            .expect("list");
        assert_eq!(all.len(), 2);
    }

    #[tokio::test]
    async fn event_filters_select_by_label() {
        let fake = ready().await;
        let mut only_b = fake
            .events(&LabelFilter::any().label("io.orchestrator.agent", "b"))
            .await
            .expect("events");
        fake.create(&spec("a")).await.expect("create");
        let b = fake.create(&spec("b")).await.expect("create");
        let ev = only_b.next().await.expect("open").expect("ok");
        assert_eq!(
            (ev.id.as_str(), ev.kind),
            (b.as_str(), DockerEventKind::Create)
        );
        assert_eq!(ev.name.as_deref(), Some("b"));
        fake.close_event_streams();
        assert!(only_b.next().await.is_none());
    }

    #[tokio::test]
    async fn logs_replay_tail_and_follow_until_the_container_stops() {
        let fake = ready().await;
        let id = fake.create(&spec("a")).await.expect("create");
        fake.start(&id).await.expect("start");
        for line in ["one\n", "two\n", "three\n"] {
            fake.push_log(&id, OutputStream::Stdout, line).expect("log");
        }
        let tail: Vec<_> = fake
            .logs(
                &id,
                LogsAsk {
                    tail: Some(2),
                    ..LogsAsk::default()
                },
            )
            .await
            .expect("logs")
            .map(|c| c.map(|c| c.bytes))
            .collect()
            .await;
        assert_eq!(
            tail,
            vec![Ok(Bytes::from("two\n")), Ok(Bytes::from("three\n"))]
        );
        let mut follow = fake.logs(&id, following(Some(0))).await.expect("logs");
        fake.push_log(&id, OutputStream::Stderr, "late\n")
            .expect("log");
        assert_eq!(
            follow.next().await,
            Some(Ok(LogChunk {
                stream: OutputStream::Stderr,
                bytes: Bytes::from("late\n")
            }))
        );
        fake.stop(&id, Duration::from_secs(1)).await.expect("stop");
        assert!(follow.next().await.is_none());
    }

    #[tokio::test]
    async fn exec_results_come_from_the_queue_then_the_handler() {
        let fake = ready().await;
        let id = fake.create(&spec("a")).await.expect("create");
        let cmd = vec!["probe".to_string()];
        assert_eq!(
            fake.exec(&id, &cmd, Duration::from_secs(1)).await,
            Err(DockerError::NotRunning { id: id.clone() })
        );
        fake.start(&id).await.expect("start");
        assert_eq!(
            fake.exec(&id, &cmd, Duration::from_secs(1))
                .await
                .map(|o| o.exit_code),
            Ok(0)
        );
        fake.push_exec_result(Err(DockerError::Timeout {
            operation: "exec".into(),
            after: Duration::from_secs(1),
        }));
        fake.set_exec_handler(Arc::new(|_, cmd| {
            Ok(ExecOutcome {
                exit_code: i64::try_from(cmd.len()).unwrap_or(-1),
                output: Bytes::from("handled"),
                truncated: false,
            })
        }));
        assert!(matches!(
            fake.exec(&id, &cmd, Duration::from_secs(1)).await,
            Err(DockerError::Timeout { .. })
        ));
        let handled = fake
            .exec(&id, &cmd, Duration::from_secs(1))
            .await
            .expect("exec");
        assert_eq!(
            (handled.exit_code, &handled.output[..]),
            (1, &b"handled"[..])
        );
    }

    #[tokio::test]
    async fn restarting_a_stopped_container_reuses_it() {
        let fake = ready().await;
        let id = fake.create(&spec("a")).await.expect("create");
        fake.start(&id).await.expect("start");
        fake.set_stop_exit_code(&id, 143).expect("known");
        fake.stop(&id, Duration::from_secs(1)).await.expect("stop");
        fake.stop(&id, Duration::from_secs(1))
            .await
            .expect("stopping again is a no-op");
        assert_eq!(fake.inspect(&id).await.map(|i| i.exit_code), Ok(Some(143)));
        fake.advance_clock(Duration::from_secs(60));
        fake.start(&id).await.expect("start again");
        let info = fake.inspect(&id).await.expect("inspect");
        assert_eq!(info.state, ContainerState::Running);
        assert!(info.started_at_ms > info.finished_at_ms.map(|f| f + 59_000));
        assert_eq!(fake.spec_of(&id).map(|s| s.name), Some("a".to_string()));
    }

    #[test]
    fn signal_names_and_numbers_are_understood() {
        for (text, n) in [
            ("SIGKILL", 9),
            ("kill", 9),
            ("9", 9),
            ("TERM", 15),
            ("sigusr1", 10),
        ] {
            assert_eq!(signal_number(text), Some(n), "{text}");
        }
        for bad in ["", "SIGFOO", "0", "99"] {
            assert_eq!(signal_number(bad), None, "{bad}");
        }
    }
}
