//! The real [`ContainerRuntime`]: the Docker Engine API over bollard.
//!
//! Owns the connection (endpoint parsing, API version negotiation) and the
//! translation of the engine's HTTP errors into [`DockerError`] variants.
//! What the requests contain is decided in `mapping`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::NetworkCreateRequest;
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateContainerOptionsBuilder, EventsOptionsBuilder,
    InspectNetworkOptions, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
    ListNetworksOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    RenameContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt, TryStreamExt};
use orch_core::container::ContainerSpec;

use crate::error::{DockerError, ObjectKind, Removal};
use crate::mapping;
use crate::runtime::{
    ContainerInfo, ContainerRuntime, ContainerSummary, EXEC_OUTPUT_LIMIT, EngineInfo, EventStream,
    ExecOutcome, LabelFilter, LogChunk, LogStream, LogsAsk, OutputStream,
};

/// The oldest API this adapter works with: DeviceRequests came in 1.40
/// (Docker 19.03).
pub const MIN_API_VERSION: (u32, u32) = (1, 40);

/// Where the Docker Engine listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A unix socket.
    Unix(PathBuf),
    /// Plain HTTP on `host:port` (`tcp://` / `http://`).
    Tcp(String),
}

impl Endpoint {
    /// The usual local socket.
    pub const DEFAULT_SOCKET: &'static str = "/var/run/docker.sock";

    /// Reads `unix:///path`, a bare socket path, `tcp://host:port` or
    /// `http://host:port` (the forms `DOCKER_HOST` takes, without TLS).
    pub fn parse(text: &str) -> Result<Endpoint, DockerError> {
        let invalid = |reason: &str| DockerError::InvalidEndpoint {
            endpoint: text.to_string(),
            reason: reason.to_string(),
        };
        let t = text.trim();
        if let Some(path) = t.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(invalid("the socket path must be absolute"));
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        if t.starts_with('/') {
            return Ok(Endpoint::Unix(PathBuf::from(t)));
        }
        for scheme in ["tcp://", "http://"] {
            if let Some(addr) = t.strip_prefix(scheme) {
                let addr = addr.trim_end_matches('/');
                let port_ok = addr
                    .rsplit_once(':')
                    .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
                if !port_ok {
                    return Err(invalid("write the address as HOST:PORT"));
                }
                return Ok(Endpoint::Tcp(addr.to_string()));
            }
        }
        if t.starts_with("https://") || t.starts_with("ssh://") || t.starts_with("npipe://") {
            return Err(invalid("only unix sockets and plain tcp are supported"));
        }
        Err(invalid("unknown scheme"))
    }

    /// `DOCKER_HOST` if set, else the default socket.
    pub fn from_env() -> Result<Endpoint, DockerError> {
        match std::env::var("DOCKER_HOST") {
            Ok(v) if !v.trim().is_empty() => Endpoint::parse(&v),
            _ => Ok(Endpoint::default()),
        }
    }
}

impl Default for Endpoint {
    fn default() -> Self {
        Endpoint::Unix(PathBuf::from(Endpoint::DEFAULT_SOCKET))
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix://{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

/// A connection to one Docker Engine.
#[derive(Debug, Clone)]
pub struct DockerEngine {
    docker: Docker,
    endpoint: Endpoint,
    api_version: String,
    request_timeout: Duration,
    /// Serialises `ensure_network` among this process's callers: engines
    /// before API 1.44 let two networks share a name, and a find-then-create
    /// from two tasks at once would make two.
    network_lock: Arc<tokio::sync::Mutex<()>>,
}

impl DockerEngine {
    /// Time allowed for the engine to answer a request (not for a stream to end).
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

    /// Connects and negotiates the API version. Fails with `Unreachable` if
    /// the engine does not answer, so a caller can retry at boot.
    pub async fn connect(endpoint: &Endpoint) -> Result<DockerEngine, DockerError> {
        Self::connect_with_timeout(endpoint, Self::DEFAULT_REQUEST_TIMEOUT).await
    }

    pub async fn connect_with_timeout(
        endpoint: &Endpoint,
        request_timeout: Duration,
    ) -> Result<DockerEngine, DockerError> {
        let unreachable = |reason: String| DockerError::Unreachable {
            endpoint: endpoint.to_string(),
            reason,
        };
        let secs = request_timeout.as_secs().max(1);
        let client = match endpoint {
            Endpoint::Unix(path) => {
                if !path.exists() {
                    return Err(unreachable(format!(
                        "the socket {} does not exist",
                        path.display()
                    )));
                }
                Docker::connect_with_unix(
                    &path.to_string_lossy(),
                    secs,
                    bollard::API_DEFAULT_VERSION,
                )
            }
            Endpoint::Tcp(addr) => {
                Docker::connect_with_http(addr, secs, bollard::API_DEFAULT_VERSION)
            }
        }
        .map_err(|e| unreachable(error_chain(&e)))?;
        // bollard starts at the newest API it knows, which older engines
        // refuse; negotiation lowers it to what the engine speaks.
        let docker = client
            .negotiate_version()
            .await
            .map_err(|e| unreachable(error_chain(&e)))?;
        let api_version = docker.client_version().to_string();
        let supported =
            mapping::parse_api_version(&api_version).is_some_and(|v| v >= MIN_API_VERSION);
        if !supported {
            return Err(DockerError::UnsupportedEngine {
                endpoint: endpoint.to_string(),
                api_version,
                minimum: format!("{}.{}", MIN_API_VERSION.0, MIN_API_VERSION.1),
            });
        }
        tracing::debug!(%endpoint, %api_version, "connected to the Docker Engine");
        Ok(DockerEngine {
            docker,
            endpoint: endpoint.clone(),
            api_version,
            request_timeout,
            network_lock: Arc::default(),
        })
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The negotiated API version.
    pub fn api_version(&self) -> &str {
        &self.api_version
    }

    /// Translates a bollard error; `on_status` turns the status codes that
    /// mean something for this operation into their own variant.
    fn map_err(
        &self,
        e: BollardError,
        operation: &str,
        on_status: impl FnOnce(u16, &str) -> Option<DockerError>,
    ) -> DockerError {
        match e {
            BollardError::DockerResponseServerError {
                status_code,
                message,
            } => on_status(status_code, &message).unwrap_or(DockerError::Api {
                status: status_code,
                message,
            }),
            BollardError::RequestTimeoutError => DockerError::Timeout {
                operation: operation.to_string(),
                after: self.request_timeout,
            },
            other => map_transport_err(&self.endpoint, self.request_timeout, other),
        }
    }

    fn container_err(&self, e: BollardError, operation: &str, id: &str) -> DockerError {
        self.map_err(e, operation, |status, message| match status {
            404 => Some(DockerError::not_found(ObjectKind::Container, id)),
            409 if message.contains("is not running") => {
                Some(DockerError::NotRunning { id: id.to_string() })
            }
            _ => None,
        })
    }

    /// Exactly the network called `name`: Docker also resolves id prefixes.
    async fn find_network(&self, name: &str) -> Result<Option<String>, DockerError> {
        match self
            .docker
            .inspect_network(name, None::<InspectNetworkOptions>)
            .await
        {
            Ok(n) if n.name.as_deref() == Some(name) => Ok(n.id),
            Ok(_) => Ok(None),
            Err(e) => match self.map_err(e, "inspecting a network", |s, _| {
                (s == 404).then(|| DockerError::not_found(ObjectKind::Network, name))
            }) {
                DockerError::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn exec_inner(&self, id: &str, cmd: &[String]) -> Result<ExecOutcome, DockerError> {
        let created = self
            .docker
            .create_exec(
                id,
                CreateExecOptions {
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    cmd: Some(cmd.to_vec()),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| self.container_err(e, "creating an exec", id))?;
        let exec_err = |e| {
            self.map_err(e, "running an exec", |s, _| {
                (s == 404).then(|| DockerError::not_found(ObjectKind::Exec, &created.id))
            })
        };
        let mut output = BytesMut::new();
        let mut truncated = false;
        if let StartExecResults::Attached {
            output: mut stream, ..
        } = self
            .docker
            .start_exec(&created.id, None)
            .await
            .map_err(exec_err)?
        {
            while let Some(item) = stream.next().await {
                let chunk = item.map_err(exec_err)?;
                let bytes: &[u8] = chunk.as_ref();
                let room = EXEC_OUTPUT_LIMIT.saturating_sub(output.len());
                truncated |= bytes.len() > room;
                output.extend_from_slice(&bytes[..bytes.len().min(room)]);
            }
        }
        // The output closes when the process exits, but the engine may
        // record the exit a moment later.
        let mut pause = Duration::from_millis(5);
        loop {
            let state = self
                .docker
                .inspect_exec(&created.id)
                .await
                .map_err(exec_err)?;
            if state.running != Some(true) {
                let exit_code = state.exit_code.ok_or_else(|| DockerError::Protocol {
                    message: format!("exec {} ended without an exit code", created.id),
                })?;
                return Ok(ExecOutcome {
                    exit_code,
                    output: output.freeze(),
                    truncated,
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }
}

/// Errors of the connection itself (not HTTP statuses). `timeout` is the
/// request timeout in force, for the message.
fn map_transport_err(endpoint: &Endpoint, timeout: Duration, e: BollardError) -> DockerError {
    match e {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => DockerError::Api {
            status: status_code,
            message,
        },
        BollardError::JsonDataError { message, .. } => DockerError::Protocol { message },
        BollardError::JsonSerdeError { err } => DockerError::Protocol {
            message: err.to_string(),
        },
        BollardError::StrParseError { err } => DockerError::Protocol {
            message: err.to_string(),
        },
        BollardError::DockerStreamError { error } => DockerError::Api {
            status: 500,
            message: error,
        },
        BollardError::RequestTimeoutError => DockerError::Timeout {
            operation: "a Docker request".into(),
            after: timeout,
        },
        other => DockerError::Unreachable {
            endpoint: endpoint.to_string(),
            reason: error_chain(&other),
        },
    }
}

/// An error with its causes: hyper's own messages ("client error
/// (Connect)") say little without the io error underneath.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// `nvidia` in `could not select device driver "nvidia" with capabilities: …`.
fn missing_device_driver(message: &str) -> Option<String> {
    let (_, rest) = message.split_once("could not select device driver")?;
    let driver = rest.split('"').nth(1).unwrap_or_default();
    Some(driver.to_string())
}

/// `net` in `network net not found`.
fn missing_network(message: &str) -> Option<String> {
    let name = message
        .strip_prefix("network ")?
        .strip_suffix(" not found")?;
    (!name.is_empty()).then(|| name.to_string())
}

fn label_filters(filter: &LabelFilter) -> HashMap<String, Vec<String>> {
    let mut filters = HashMap::new();
    let labels = filter.to_docker();
    if !labels.is_empty() {
        filters.insert("label".to_string(), labels);
    }
    filters
}

/// `since` as the Engine API takes it: 32-bit Unix seconds, 0 for all
/// (a time before 1970 is all; one past 2038 is the latest it can say).
fn since_param(since: Option<i64>) -> i32 {
    since.map_or(0, |s| i32::try_from(s.max(0)).unwrap_or(i32::MAX))
}

#[async_trait]
impl ContainerRuntime for DockerEngine {
    async fn ping(&self) -> Result<(), DockerError> {
        self.docker
            .ping()
            .await
            .map(|_| ())
            .map_err(|e| self.map_err(e, "ping", |_, _| None))
    }

    async fn version(&self) -> Result<EngineInfo, DockerError> {
        let version = self
            .docker
            .version()
            .await
            .map_err(|e| self.map_err(e, "reading the engine version", |_, _| None))?;
        let info = self
            .docker
            .info()
            .await
            .map_err(|e| self.map_err(e, "reading engine info", |_, _| None))?;
        Ok(mapping::engine_info(
            self.api_version.clone(),
            version,
            info,
        ))
    }

    async fn ensure_network(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<String, DockerError> {
        let _serial = self.network_lock.lock().await;
        if let Some(id) = self.find_network(name).await? {
            return Ok(id);
        }
        let created = self
            .docker
            .create_network(NetworkCreateRequest {
                name: name.to_string(),
                driver: Some("bridge".into()),
                labels: Some(labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
                ..Default::default()
            })
            .await
            .map_err(|e| self.map_err(e, "creating a network", |_, _| None))?;
        // Engines before API 1.44 let two networks share a name; if another
        // process raced us, keep the oldest and drop ours so names stay unique.
        let mut filters = HashMap::new();
        filters.insert("name".to_string(), vec![name.to_string()]);
        let same_name: Vec<_> = self
            .docker
            .list_networks(Some(
                ListNetworksOptionsBuilder::new().filters(&filters).build(),
            ))
            .await
            .map_err(|e| self.map_err(e, "listing networks", |_, _| None))?
            .into_iter()
            .filter(|n| n.name.as_deref() == Some(name))
            .collect();
        if same_name.len() > 1 {
            let keep = same_name
                .iter()
                .filter_map(|n| Some((n.created.clone().unwrap_or_default(), n.id.clone()?)))
                .min()
                .map(|(_, id)| id);
            if let Some(keep) = keep.filter(|k| *k != created.id) {
                tracing::debug!(network = name, "dropping a duplicate network");
                if let Err(e) = self.docker.remove_network(&created.id).await {
                    tracing::warn!(network = name, error = %e, "could not drop a duplicate network");
                }
                return Ok(keep);
            }
        }
        Ok(created.id)
    }

    async fn remove_network(&self, name: &str) -> Result<(), DockerError> {
        // Resolve the exact name first so an id prefix never removes
        // someone else's network.
        let id = self
            .find_network(name)
            .await?
            .ok_or_else(|| DockerError::not_found(ObjectKind::Network, name))?;
        self.docker.remove_network(&id).await.map_err(|e| {
            self.map_err(e, "removing a network", |s, _| {
                (s == 404).then(|| DockerError::not_found(ObjectKind::Network, name))
            })
        })
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, DockerError> {
        let body = mapping::create_body(spec)?;
        let options = CreateContainerOptionsBuilder::new()
            .name(&spec.name)
            .build();
        let result = self.docker.create_container(Some(options), body).await;
        let e = match result {
            Ok(r) => {
                for w in r.warnings.iter().filter(|w| !w.is_empty()) {
                    tracing::warn!(container = %spec.name, warning = %w, "Docker warning on create");
                }
                return Ok(r.id);
            }
            Err(e) => e,
        };
        let mut conflict = false;
        let err = self.map_err(e, "creating a container", |status, message| {
            let lower = message.to_ascii_lowercase();
            match status {
                404 if lower.contains("image") => Some(DockerError::ImageMissing {
                    image: spec.image.clone(),
                }),
                404 if lower.contains("network") => {
                    Some(DockerError::not_found(ObjectKind::Network, &spec.network))
                }
                409 => {
                    conflict = true;
                    mapping::conflict_id(message).map(|existing_id| DockerError::NameConflict {
                        name: spec.name.clone(),
                        existing_id,
                    })
                }
                _ => None,
            }
        });
        if conflict && !matches!(err, DockerError::NameConflict { .. }) {
            // The message did not name the holder; ask for it by name.
            if let Ok(existing) = self.inspect(&spec.name).await {
                if existing.name == spec.name {
                    return Err(DockerError::NameConflict {
                        name: spec.name.clone(),
                        existing_id: existing.id,
                    });
                }
            }
        }
        Err(err)
    }

    async fn start(&self, id: &str) -> Result<(), DockerError> {
        self.docker.start_container(id, None).await.map_err(|e| {
            self.map_err(e, "starting a container", |status, message| match status {
                // Engines before 25 accept a missing network at create
                // and only refuse it here.
                404 => Some(match missing_network(message) {
                    Some(network) => DockerError::not_found(ObjectKind::Network, &network),
                    None => DockerError::not_found(ObjectKind::Container, id),
                }),
                _ => missing_device_driver(message).map(|driver| DockerError::GpuDriverMissing {
                    driver,
                    message: message.to_string(),
                }),
            })
        })
    }

    async fn stop(&self, id: &str, timeout: Duration) -> Result<(), DockerError> {
        let secs = mapping::ceil_secs(timeout);
        let options = StopContainerOptionsBuilder::new()
            .t(i32::try_from(secs).unwrap_or(i32::MAX))
            .build();
        // The engine answers only once the container is down, which may take
        // the whole grace period: allow for it on top of the usual timeout.
        let docker = self
            .docker
            .clone()
            .with_timeout(self.request_timeout + Duration::from_secs(secs.unsigned_abs()));
        docker
            .stop_container(id, Some(options))
            .await
            .map_err(|e| self.container_err(e, "stopping a container", id))
    }

    async fn kill(&self, id: &str, signal: &str) -> Result<(), DockerError> {
        let options = KillContainerOptionsBuilder::new().signal(signal).build();
        self.docker
            .kill_container(id, Some(options))
            .await
            .map_err(|e| self.container_err(e, "killing a container", id))
    }

    async fn rename(&self, id: &str, new_name: &str) -> Result<(), DockerError> {
        let options = RenameContainerOptionsBuilder::new().name(new_name).build();
        self.docker
            .rename_container(id, options)
            .await
            .map_err(|e| {
                self.map_err(e, "renaming a container", |status, message| match status {
                    404 => Some(DockerError::not_found(ObjectKind::Container, id)),
                    409 => Some(DockerError::NameConflict {
                        name: new_name.to_string(),
                        existing_id: mapping::conflict_id(message).unwrap_or_default(),
                    }),
                    _ => None,
                })
            })
    }

    async fn remove(&self, id: &str, force: bool) -> Result<Removal, DockerError> {
        // `v`: anonymous volumes die with the container; named ones stay.
        let options = RemoveContainerOptionsBuilder::new()
            .force(force)
            .v(true)
            .build();
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(Removal::Removed),
            Err(e) => {
                match self.map_err(e, "removing a container", |status, message| match status {
                    404 => Some(DockerError::not_found(ObjectKind::Container, id)),
                    409 if message.contains("already in progress") => {
                        Some(DockerError::not_found(ObjectKind::Container, id))
                    }
                    _ => None,
                }) {
                    DockerError::NotFound { .. } => Ok(Removal::AlreadyGone),
                    other => Err(other),
                }
            }
        }
    }

    async fn inspect(&self, id: &str) -> Result<ContainerInfo, DockerError> {
        let r = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(|e| self.container_err(e, "inspecting a container", id))?;
        mapping::container_info(r)
    }

    async fn list(&self, filter: &LabelFilter) -> Result<Vec<ContainerSummary>, DockerError> {
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&label_filters(filter))
            .build();
        let list = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| self.map_err(e, "listing containers", |_, _| None))?;
        Ok(list.into_iter().filter_map(mapping::summary).collect())
    }

    async fn events(&self, filter: &LabelFilter) -> Result<EventStream, DockerError> {
        let mut filters = label_filters(filter);
        filters.insert("type".into(), vec!["container".into()]);
        // The request goes out when the stream is first polled; `since`
        // makes the engine replay what happened in between, so nothing
        // after this call is missed.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let since = format!("{}.{:09}", now.as_secs(), now.subsec_nanos());
        let options = EventsOptionsBuilder::new()
            .since(&since)
            .filters(&filters)
            .build();
        let (endpoint, timeout) = (self.endpoint.clone(), self.request_timeout);
        let stream = self.docker.events(Some(options)).filter_map(move |item| {
            let mapped = match item {
                Ok(message) => mapping::event(message).map(Ok),
                Err(e) => Some(Err(map_transport_err(&endpoint, timeout, e))),
            };
            futures_util::future::ready(mapped)
        });
        Ok(Box::pin(stream))
    }

    async fn logs(&self, id: &str, ask: LogsAsk) -> Result<LogStream, DockerError> {
        let tail = ask
            .tail
            .map_or_else(|| "all".to_string(), |n| n.to_string());
        let since = since_param(ask.since);
        let options = LogsOptionsBuilder::new()
            .follow(ask.follow)
            .stdout(true)
            .stderr(true)
            .tail(&tail)
            .since(since)
            .timestamps(ask.timestamps)
            .build();
        let (endpoint, timeout) = (self.endpoint.clone(), self.request_timeout);
        let id_owned = id.to_string();
        let stream = self
            .docker
            .logs(id, Some(options))
            .map_err(move |e| match e {
                BollardError::DockerResponseServerError {
                    status_code: 404, ..
                } => DockerError::not_found(ObjectKind::Container, &id_owned),
                other => map_transport_err(&endpoint, timeout, other),
            })
            .try_filter_map(|out| {
                let chunk = match out {
                    LogOutput::StdOut { message } | LogOutput::Console { message } => {
                        Some(LogChunk {
                            stream: OutputStream::Stdout,
                            bytes: message,
                        })
                    }
                    LogOutput::StdErr { message } => Some(LogChunk {
                        stream: OutputStream::Stderr,
                        bytes: message,
                    }),
                    LogOutput::StdIn { .. } => None,
                };
                futures_util::future::ready(Ok(chunk))
            });
        Ok(Box::pin(stream))
    }

    async fn exec(
        &self,
        id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecOutcome, DockerError> {
        match tokio::time::timeout(timeout, self.exec_inner(id, cmd)).await {
            Ok(result) => result,
            Err(_) => Err(DockerError::Timeout {
                operation: format!("exec {cmd:?} in container {id}"),
                after: timeout,
            }),
        }
    }

    async fn image_exists(&self, image: &str) -> Result<bool, DockerError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(e) => match self.map_err(e, "inspecting an image", |s, _| {
                (s == 404).then(|| DockerError::not_found(ObjectKind::Image, image))
            }) {
                DockerError::NotFound { .. } => Ok(false),
                other => Err(other),
            },
        }
    }

    async fn cpu_usage(&self, id: &str) -> Result<u64, DockerError> {
        let options = bollard::query_parameters::StatsOptionsBuilder::new()
            .stream(false)
            .one_shot(true)
            .build();
        let stats = self
            .docker
            .stats(id, Some(options))
            .next()
            .await
            .ok_or_else(|| DockerError::Api {
                status: 500,
                message: format!("no stats for container {id}"),
            })?
            .map_err(|e| self.container_err(e, "reading a container's stats", id))?;
        stats
            .cpu_stats
            .and_then(|c| c.cpu_usage)
            .and_then(|u| u.total_usage)
            .ok_or_else(|| DockerError::Api {
                status: 500,
                message: format!("the stats of container {id} carry no CPU usage"),
            })
    }

    async fn build_image(&self, context: Bytes, tag: &str) -> Result<String, DockerError> {
        let options = BuildImageOptionsBuilder::new()
            .dockerfile("Dockerfile")
            .t(tag)
            .rm(true)
            .forcerm(true)
            .build();
        let build_err = |message: String| DockerError::Build {
            tag: tag.to_string(),
            message,
        };
        {
            let mut progress =
                self.docker
                    .build_image(options, None, Some(bollard::body_full(context)));
            while let Some(item) = progress.next().await {
                let info = item.map_err(|e| match e {
                    BollardError::DockerResponseServerError {
                        status_code,
                        message,
                    } => build_err(format!("HTTP {status_code}: {message}")),
                    BollardError::DockerStreamError { error } => build_err(error),
                    other => map_transport_err(&self.endpoint, self.request_timeout, other),
                })?;
                if let Some(detail) = info.error_detail {
                    return Err(build_err(detail.message.unwrap_or_else(|| {
                        "the builder reported an error without a message".into()
                    })));
                }
                if let Some(line) = info.stream.as_deref().map(str::trim_end) {
                    if !line.is_empty() {
                        tracing::debug!(tag, "{line}");
                    }
                }
            }
        }
        let image = self.docker.inspect_image(tag).await.map_err(|e| {
            self.map_err(e, "inspecting the built image", |s, _| {
                (s == 404).then(|| build_err("the build produced no image".into()))
            })
        })?;
        image.id.ok_or_else(|| DockerError::Protocol {
            message: format!("image {tag} has no id"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_since_the_engine_cannot_say_is_clamped() {
        assert_eq!(since_param(None), 0);
        assert_eq!(since_param(Some(1_796_193_774)), 1_796_193_774);
        assert_eq!(since_param(Some(-5)), 0);
        assert_eq!(since_param(Some(i64::MAX)), i32::MAX);
        assert_eq!(since_param(Some(i64::from(i32::MAX) + 1)), i32::MAX);
    }

    #[test]
    fn endpoints_parse_like_docker_host() {
        let ok = [
            (
                "unix:///var/run/docker.sock",
                Endpoint::Unix("/var/run/docker.sock".into()),
            ),
            (
                "/run/docker.sock",
                Endpoint::Unix("/run/docker.sock".into()),
            ),
            (
                "tcp://127.0.0.1:2375",
                Endpoint::Tcp("127.0.0.1:2375".into()),
            ),
            (
                "http://localhost:2375/",
                Endpoint::Tcp("localhost:2375".into()),
            ),
        ];
        for (text, want) in ok {
            assert_eq!(Endpoint::parse(text).as_ref(), Ok(&want), "{text}");
        }
        for bad in [
            "unix://relative.sock",
            "tcp://host",
            "tcp://:2375",
            "https://host:2376",
            "ssh://me@host",
            "docker.sock",
        ] {
            assert!(
                matches!(
                    Endpoint::parse(bad),
                    Err(DockerError::InvalidEndpoint { .. })
                ),
                "{bad} accepted"
            );
        }
        assert_eq!(
            Endpoint::default().to_string(),
            "unix:///var/run/docker.sock"
        );
        assert_eq!(
            Endpoint::Tcp("h:1".into()).to_string(),
            "tcp://h:1",
            "display round-trips"
        );
    }

    #[test]
    fn device_driver_errors_name_the_driver() {
        let msg = "could not select device driver \"nvidia\" with capabilities: [[gpu]]";
        assert_eq!(missing_device_driver(msg).as_deref(), Some("nvidia"));
        assert_eq!(missing_device_driver("port is already allocated"), None);
    }

    #[test]
    fn missing_network_errors_name_the_network() {
        assert_eq!(
            missing_network("network orch-main not found").as_deref(),
            Some("orch-main")
        );
        assert_eq!(missing_network("No such container: abc"), None);
        assert_eq!(missing_network("network  not found"), None);
    }

    #[test]
    fn label_filters_use_docker_syntax() {
        let f = LabelFilter::any()
            .label("io.orchestrator.host", "main")
            .has_label("io.orchestrator.agent");
        assert_eq!(
            label_filters(&f).get("label"),
            Some(&vec![
                "io.orchestrator.host=main".to_string(),
                "io.orchestrator.agent".to_string()
            ])
        );
        assert!(label_filters(&LabelFilter::any()).is_empty());
    }

    #[tokio::test]
    async fn a_missing_socket_is_unreachable_and_names_the_endpoint() {
        let endpoint = Endpoint::Unix("/nonexistent/docker.sock".into());
        match DockerEngine::connect(&endpoint).await {
            Err(DockerError::Unreachable { endpoint, reason }) => {
                assert_eq!(endpoint, "unix:///nonexistent/docker.sock");
                assert!(reason.contains("does not exist"), "{reason}");
            }
            other => panic!("expected Unreachable, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_closed_tcp_port_is_unreachable() {
        // Bind then drop to get a local port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let endpoint = Endpoint::Tcp(format!("127.0.0.1:{port}"));
        let err = DockerEngine::connect(&endpoint)
            .await
            .expect_err("nobody listens");
        assert!(err.is_unreachable(), "{err:?}");
        assert!(err.to_string().contains(&format!("127.0.0.1:{port}")));
    }
}
