//! The narrow interface the daemon uses to run containers, and the plain
//! data it returns. Nothing here mentions bollard: the real engine
//! (`DockerEngine`) and the recording fake (`FakeRuntime`) both implement
//! [`ContainerRuntime`], and the daemon holds an `Arc<dyn ContainerRuntime>`.

use std::collections::BTreeMap;
use std::fmt;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;
use orch_core::container::ContainerSpec;

use crate::error::{DockerError, Removal};

/// Container events, in the order the engine reports them. The stream ends
/// (or yields [`DockerError::Unreachable`]) when the connection is lost;
/// the caller re-opens it and re-lists to catch up.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<ContainerEvent, DockerError>> + Send>>;

/// Output of a container, chunk by chunk, in the order it was written.
pub type LogStream = Pin<Box<dyn Stream<Item = Result<LogChunk, DockerError>> + Send>>;

/// A container engine, as the daemon needs it.
///
/// Identifiers (`id`) may be a full id, a unique id prefix or a container
/// name, as with the Docker CLI; the daemon uses full ids.
#[async_trait]
pub trait ContainerRuntime: Send + Sync + fmt::Debug {
    /// Checks that the engine answers.
    async fn ping(&self) -> Result<(), DockerError>;

    /// The negotiated API version, the engine's version and its GPU support.
    async fn version(&self) -> Result<EngineInfo, DockerError>;

    /// Creates a bridge network with these labels unless one with this
    /// name exists; returns the network id. Idempotent.
    async fn ensure_network(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<String, DockerError>;

    /// Removes a network; [`DockerError::NotFound`] if there is none.
    async fn remove_network(&self, name: &str) -> Result<(), DockerError>;

    /// Creates (does not start) a container; returns its id.
    /// [`DockerError::NameConflict`] carries the id of an existing
    /// container with the same name.
    async fn create(&self, spec: &ContainerSpec) -> Result<String, DockerError>;

    /// Starts a created or stopped container. Starting a running one is a no-op.
    async fn start(&self, id: &str) -> Result<(), DockerError>;

    /// Sends the stop signal, waits up to `timeout` (rounded up to whole
    /// seconds), then kills. Stopping a stopped container is a no-op.
    async fn stop(&self, id: &str, timeout: Duration) -> Result<(), DockerError>;

    /// Sends a signal (`"SIGKILL"`, `"TERM"`, `"9"`) to the main process.
    async fn kill(&self, id: &str, signal: &str) -> Result<(), DockerError>;

    /// Gives a container a new name (Docker's `POST /containers/{id}/rename`).
    /// [`DockerError::NameConflict`] if another container holds it.
    async fn rename(&self, id: &str, new_name: &str) -> Result<(), DockerError>;

    /// Removes a container (with `force`, also a running one).
    async fn remove(&self, id: &str, force: bool) -> Result<Removal, DockerError>;

    async fn inspect(&self, id: &str) -> Result<ContainerInfo, DockerError>;

    /// Containers in every state (including stopped) matching the filter.
    async fn list(&self, filter: &LabelFilter) -> Result<Vec<ContainerSummary>, DockerError>;

    /// Container events matching the filter, from the moment of this call on.
    async fn events(&self, filter: &LabelFilter) -> Result<EventStream, DockerError>;

    /// Output of a container, as `ask` says (see [`LogsAsk`]).
    async fn logs(&self, id: &str, ask: LogsAsk) -> Result<LogStream, DockerError>;

    /// Runs a command in a running container and waits for it, up to
    /// `timeout`. On timeout the command may still be running: the Docker
    /// API cannot kill an exec'ed process.
    async fn exec(
        &self,
        id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecOutcome, DockerError>;

    async fn image_exists(&self, image: &str) -> Result<bool, DockerError>;

    /// The CPU time the container has used since it started, in
    /// nanoseconds (the stats API's `cpu_stats.cpu_usage.total_usage`, read
    /// once, without waiting for a second sample).
    async fn cpu_usage(&self, id: &str) -> Result<u64, DockerError>;

    /// Builds an image from a tar build context (a `Dockerfile` at its root)
    /// and tags it; returns the image id. Base images are never pulled.
    async fn build_image(&self, context: Bytes, tag: &str) -> Result<String, DockerError>;
}

/// What the engine is and what it can do for GPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineInfo {
    /// The API version this client speaks to the engine (negotiated).
    pub api_version: String,
    /// The newest API version the engine speaks.
    pub engine_api_version: String,
    pub engine_version: String,
    pub os: String,
    pub arch: String,
    /// Names of the OCI runtimes the engine knows.
    pub runtimes: Vec<String>,
    /// The `nvidia` runtime is registered (nvidia-container-toolkit).
    pub nvidia_runtime: bool,
    /// CDI device injection is on (Docker 25 or later, with spec dirs).
    pub cdi_enabled: bool,
}

/// Docker's container states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContainerState {
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
}

impl ContainerState {
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Paused => "paused",
            ContainerState::Restarting => "restarting",
            ContainerState::Removing => "removing",
            ContainerState::Exited => "exited",
            ContainerState::Dead => "dead",
        }
    }

    /// The main process exists (running, paused or being restarted).
    pub fn is_alive(self) -> bool {
        matches!(
            self,
            ContainerState::Running | ContainerState::Paused | ContainerState::Restarting
        )
    }
}

impl fmt::Display for ContainerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One container as `inspect` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    /// The name without Docker's leading `/`.
    pub name: String,
    /// The image as it was asked for (`orchestrator-agent:latest`).
    pub image: String,
    /// The image's content id (`sha256:…`).
    pub image_id: String,
    pub labels: BTreeMap<String, String>,
    pub state: ContainerState,
    /// The last exit code; `None` if the container never ran.
    pub exit_code: Option<i64>,
    /// Unix milliseconds; `None` if never started / never finished.
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    pub oom_killed: bool,
    /// The engine's last error for this container (e.g. why start failed).
    pub error: Option<String>,
    /// Network name to the container's IPv4 address on it (while running).
    pub networks: BTreeMap<String, Option<String>>,
}

impl ContainerInfo {
    /// The container's IP address on `network`, if attached and running.
    pub fn ip_on(&self, network: &str) -> Option<&str> {
        self.networks.get(network)?.as_deref()
    }
}

/// One container as `list` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSummary {
    pub id: String,
    pub name: String,
    pub image: String,
    pub labels: BTreeMap<String, String>,
    pub state: ContainerState,
    /// Docker's human status (`Up 3 minutes`, `Exited (1) 2 seconds ago`).
    pub status: String,
    /// Creation time, Unix seconds.
    pub created: i64,
}

/// Containers whose labels satisfy every condition (Docker's `label` filter).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelFilter {
    conditions: Vec<(String, Option<String>)>,
}

impl LabelFilter {
    /// Matches every container.
    pub fn any() -> Self {
        LabelFilter::default()
    }

    /// Requires label `key` to equal `value`.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.conditions.push((key.into(), Some(value.into())));
        self
    }

    /// Requires label `key` to be present, whatever its value.
    pub fn has_label(mut self, key: impl Into<String>) -> Self {
        self.conditions.push((key.into(), None));
        self
    }

    pub fn conditions(&self) -> &[(String, Option<String>)] {
        &self.conditions
    }

    /// The conditions in Docker's filter syntax (`key` or `key=value`).
    pub fn to_docker(&self) -> Vec<String> {
        self.conditions
            .iter()
            .map(|(k, v)| match v {
                Some(v) => format!("{k}={v}"),
                None => k.clone(),
            })
            .collect()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.conditions.iter().all(|(k, v)| match v {
            Some(v) => labels.get(k) == Some(v),
            None => labels.contains_key(k),
        })
    }
}

/// What happened to a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerEventKind {
    Create,
    Start,
    /// The main process ended. `exit_code` is absent only if the engine
    /// left it out.
    Die {
        exit_code: Option<i64>,
    },
    Stop,
    Kill {
        signal: Option<String>,
    },
    Oom,
    Destroy,
    /// Any other action, as Docker names it (`pause`, `health_status: healthy`…).
    Other(String),
}

/// A container event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEvent {
    pub id: String,
    pub kind: DockerEventKind,
    /// Container name, when the engine gave it.
    pub name: Option<String>,
    pub image: Option<String>,
    /// The container's labels. Docker mixes labels with other attributes;
    /// `name`, `image`, `exitCode`, `signal` and `execID` are taken out.
    pub labels: BTreeMap<String, String>,
    /// Unix nanoseconds.
    pub time_ns: i64,
}

/// Which output of a container a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// Which output of a container `logs` gives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogsAsk {
    /// Keep the stream open until the container stops.
    pub follow: bool,
    /// Only the last N lines of the backlog.
    pub tail: Option<u64>,
    /// Only output from this Unix time (seconds) on.
    pub since: Option<i64>,
    /// Each line starts with its time (RFC 3339, as the engine writes it).
    pub timestamps: bool,
}

/// A piece of a container's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    pub stream: OutputStream,
    pub bytes: Bytes,
}

/// The result of an exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    pub exit_code: i64,
    /// Stdout and stderr interleaved as they arrived, at most
    /// [`EXEC_OUTPUT_LIMIT`] bytes.
    pub output: Bytes,
    /// More output was produced than kept.
    pub truncated: bool,
}

/// Exec output kept per call; health-check output beyond this is noise.
pub const EXEC_OUTPUT_LIMIT: usize = 64 * 1024;
