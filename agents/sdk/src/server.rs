//! The HTTP side of the agent contract: binding every `ORCH_LISTEN_PORTS`
//! port, serving `/health`, `/ready`, `/info` and `/metrics` on each, handing
//! the author's routes their requests, and stopping gracefully.
//!
//! The server owns the contract metrics (`agent_requests_total`,
//! `agent_errors_total`, `agent_up`, `agent_healthy`,
//! `agent_start_time_seconds`) so every agent built on it exposes the same
//! series; the author adds their own to the same [`Registry`].

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::env::{EnvError, GpuEnv, Identity, ListenConfig};
use crate::health::{Health, HealthState};
use crate::metrics::{self, Counter, Gauge, MetricsError, Registry};

/// The body type of every response.
pub type Body = Full<Bytes>;

/// What a route handler returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

type Handler = Arc<dyn Fn(Request<Incoming>) -> HandlerFuture + Send + Sync>;

/// How long in-flight requests may run after shutdown is asked for. Short,
/// because `docker stop` should see the agent gone well within a second.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// Paths the server answers itself.
pub const BUILTIN_PATHS: [&str; 4] = ["/health", "/ready", "/info", "/metrics"];

/// The `endpoint` label of requests no route matched: one value, so a
/// scanner cannot blow up the series count.
pub const UNMATCHED_ENDPOINT: &str = "unmatched";

/// The server could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why the kernel refused.
        source: std::io::Error,
    },
    /// A route path does not start with `/`.
    #[error("route {path:?} must start with /")]
    BadPath {
        /// The path given.
        path: String,
    },
    /// A route path is one the server answers itself.
    #[error("route {path:?} is served by the agent contract itself")]
    ReservedPath {
        /// The path given.
        path: String,
    },
    /// Two routes for one path.
    #[error("route {path:?} is registered twice")]
    DuplicatePath {
        /// The path given.
        path: String,
    },
    /// The contract metrics clash with metrics already in the registry.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
}

/// The author's own endpoints, matched by exact path. Methods are the
/// handler's business: it answers 405 itself if it wants to.
#[derive(Clone, Default)]
pub struct Routes {
    handlers: BTreeMap<String, Handler>,
}

impl Routes {
    /// No routes: the server answers only the contract endpoints.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a handler for `path`.
    pub fn route<F, Fut>(mut self, path: &str, handler: F) -> Result<Self, ServeError>
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        if !path.starts_with('/') {
            return Err(ServeError::BadPath { path: path.into() });
        }
        if BUILTIN_PATHS.contains(&path) {
            return Err(ServeError::ReservedPath { path: path.into() });
        }
        if self.handlers.contains_key(path) {
            return Err(ServeError::DuplicatePath { path: path.into() });
        }
        let handler: Handler = Arc::new(move |req| Box::pin(handler(req)) as HandlerFuture);
        self.handlers.insert(path.to_owned(), handler);
        Ok(self)
    }

    /// The registered paths, sorted.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.handlers.keys().map(String::as_str)
    }
}

impl fmt::Debug for Routes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.handlers.keys()).finish()
    }
}

/// When the agent process started, on both clocks: wall time for
/// `agent_start_time_seconds`, monotonic time for uptime.
#[derive(Debug, Clone, Copy)]
pub struct StartTime {
    /// Wall-clock start.
    pub wall: SystemTime,
    /// Monotonic start.
    pub monotonic: Instant,
}

impl StartTime {
    /// Now.
    pub fn now() -> Self {
        Self {
            wall: SystemTime::now(),
            monotonic: Instant::now(),
        }
    }
}

/// Everything the contract endpoints report, and where to listen.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The `ORCH_*` identity.
    pub identity: Identity,
    /// The GPU variables.
    pub gpu: GpuEnv,
    /// Where to listen.
    pub listen: ListenConfig,
    /// The agent's version, reported by `/info`.
    pub version: String,
    /// When the agent started; capture it early, before any slow loading.
    pub started: StartTime,
    /// How long in-flight requests may run after shutdown is asked for.
    pub shutdown_grace: Duration,
}

impl ServeConfig {
    /// A configuration from explicit parts, started now.
    pub fn new(
        identity: Identity,
        gpu: GpuEnv,
        listen: ListenConfig,
        version: impl Into<String>,
    ) -> Self {
        Self {
            identity,
            gpu,
            listen,
            version: version.into(),
            started: StartTime::now(),
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }

    /// Reads identity, GPU variables and listen settings from the process
    /// environment.
    pub fn from_env(version: impl Into<String>) -> Result<Self, EnvError> {
        Ok(Self::new(
            Identity::from_env()?,
            GpuEnv::from_env(),
            ListenConfig::from_env()?,
            version,
        ))
    }
}

/// How a [`Server::run`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// Connections still busy when the grace period ran out, then cut.
    pub cut_connections: usize,
}

/// The series every agent exposes.
struct ContractMetrics {
    by_endpoint: HashMap<String, Counter>,
    unmatched: Counter,
    errors: Counter,
    up: Gauge,
    healthy: Gauge,
}

impl ContractMetrics {
    fn register(
        registry: &Registry,
        routes: &Routes,
        started: SystemTime,
    ) -> Result<Self, MetricsError> {
        let requests = registry.counter_vec(
            "agent_requests_total",
            "HTTP requests received, by endpoint.",
            &["endpoint"],
        )?;
        let errors = registry.counter(
            "agent_errors_total",
            "Requests to the agent's own endpoints that ended in a 5xx response.",
        )?;
        let up = registry.gauge("agent_up", "1 while the agent is serving requests.")?;
        let healthy = registry.gauge(
            "agent_healthy",
            "1 while /health answers 200, 0 while it answers 503.",
        )?;
        let start = registry.gauge(
            "agent_start_time_seconds",
            "Start time of the agent process since the Unix epoch, in seconds.",
        )?;
        start.set(
            started
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
        );
        // Every known endpoint exists from the first scrape, at zero, so
        // rate() has a starting point.
        let mut by_endpoint = HashMap::new();
        for path in BUILTIN_PATHS.into_iter().chain(routes.paths()) {
            by_endpoint.insert(path.to_owned(), requests.with(&[path])?);
        }
        let unmatched = requests.with(&[UNMATCHED_ENDPOINT])?;
        Ok(Self {
            by_endpoint,
            unmatched,
            errors,
            up,
            healthy,
        })
    }
}

/// Shared by every connection.
struct App {
    config: ServeConfig,
    ports: Vec<u16>,
    health: HealthState,
    registry: Registry,
    routes: Routes,
    metrics: ContractMetrics,
}

/// A bound, not yet running server. Binding first lets the caller learn
/// the real ports (port 0) and log them before serving.
pub struct Server {
    listeners: Vec<TcpListener>,
    app: Arc<App>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("addrs", &self.local_addrs())
            .field("routes", &self.app.routes)
            .finish()
    }
}

impl Server {
    /// Registers the contract metrics in `registry` and binds every listen
    /// address. Nothing is served until [`run`](Self::run).
    pub async fn bind(
        config: ServeConfig,
        health: HealthState,
        registry: Registry,
        routes: Routes,
    ) -> Result<Self, ServeError> {
        let metrics = ContractMetrics::register(&registry, &routes, config.started.wall)?;
        let mut listeners = Vec::new();
        for addr in config.listen.addrs() {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Bind { addr, source })?;
            listeners.push(listener);
        }
        let ports = listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .map(|a| a.port())
            .collect();
        Ok(Self {
            listeners,
            app: Arc::new(App {
                config,
                ports,
                health,
                registry,
                routes,
                metrics,
            }),
        })
    }

    /// The bound addresses, in `ORCH_LISTEN_PORTS` order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// Serves until `shutdown` completes, then stops accepting, lets
    /// in-flight requests finish for the grace period, and cuts the rest.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Stopped {
        let Self { listeners, app } = self;
        let graceful = GracefulShutdown::new();
        let mut connections = JoinSet::new();
        let mut next = 0;
        app.metrics.up.set(1.0);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = accept_any(&listeners, &mut next) => match accepted {
                    Ok(stream) => {
                        let conn = http1::Builder::new()
                            .timer(TokioTimer::new())
                            .serve_connection(TokioIo::new(stream), service_fn({
                                let app = app.clone();
                                move |req| dispatch(app.clone(), req)
                            }));
                        let conn = graceful.watch(conn);
                        // A connection error is the client's problem (reset,
                        // malformed request); nothing to report.
                        connections.spawn(async move { drop(conn.await) });
                    }
                    // Out of file descriptors and the like: pause instead
                    // of spinning on the same error.
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                },
            }
            while connections.try_join_next().is_some() {}
        }
        // INVARIANT: listeners close before waiting, so no connection is
        // accepted (and left unwatched) during the grace period.
        drop(listeners);
        app.metrics.up.set(0.0);
        let finished = tokio::time::timeout(app.config.shutdown_grace, graceful.shutdown())
            .await
            .is_ok();
        while connections.try_join_next().is_some() {}
        let cut_connections = if finished { 0 } else { connections.len() };
        connections.shutdown().await;
        Stopped { cut_connections }
    }
}

/// Binds `config`'s addresses and serves until `shutdown` completes.
pub async fn serve(
    config: ServeConfig,
    health: HealthState,
    registry: Registry,
    routes: Routes,
    shutdown: impl Future<Output = ()>,
) -> Result<Stopped, ServeError> {
    let server = Server::bind(config, health, registry, routes).await?;
    Ok(server.run(shutdown).await)
}

/// Accepts from whichever listener has a connection first, starting the
/// scan one past the last winner so no port starves the others.
async fn accept_any(listeners: &[TcpListener], next: &mut usize) -> std::io::Result<TcpStream> {
    std::future::poll_fn(|cx| {
        let n = listeners.len();
        for offset in 0..n {
            let index = (*next + offset) % n;
            if let Poll::Ready(result) = listeners[index].poll_accept(cx) {
                *next = (index + 1) % n;
                return Poll::Ready(result.map(|(stream, _)| stream));
            }
        }
        Poll::Pending
    })
    .await
}

async fn dispatch(app: Arc<App>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let Some(counter) = app.metrics.by_endpoint.get(&path) else {
        app.metrics.unmatched.inc();
        return Ok(text(StatusCode::NOT_FOUND, format!("no endpoint {path}\n")));
    };
    counter.inc();
    if let Some(handler) = app.routes.handlers.get(&path) {
        let response = handler(req).await;
        if response.status().is_server_error() {
            app.metrics.errors.inc();
        }
        return Ok(response);
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Ok(response);
    }
    Ok(match path.as_str() {
        "/health" => match app.health.health() {
            Health::Healthy => text(StatusCode::OK, "ok\n"),
            Health::Unhealthy(reason) => {
                text(StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n"))
            }
        },
        "/ready" => {
            if app.health.is_ready() {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "starting\n")
            }
        }
        "/info" => json(StatusCode::OK, &info(&app)),
        _ => {
            let healthy = app.health.health().is_healthy();
            app.metrics.healthy.set(if healthy { 1.0 } else { 0.0 });
            let mut response = Response::new(Full::new(Bytes::from(app.registry.render())));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(metrics::CONTENT_TYPE),
            );
            response
        }
    })
}

fn info(app: &App) -> serde_json::Value {
    let config = &app.config;
    let id = &config.identity;
    let gpu = &config.gpu;
    // Millisecond precision: enough for an operator, short to read.
    let uptime = (config.started.monotonic.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
    serde_json::json!({
        "host": id.host,
        "group": id.group,
        "agent": id.agent,
        "replica": id.replica,
        "gpu_slice": id.gpu_slice,
        "nvidia_visible_devices": gpu.nvidia_visible_devices,
        "cuda_mps_pipe_directory": gpu.cuda_mps_pipe_directory,
        "cuda_mps_active_thread_percentage": gpu.cuda_mps_active_thread_percentage,
        "cuda_mps_pinned_device_mem_limit": gpu.cuda_mps_pinned_device_mem_limit,
        "listen_ports": app.ports,
        "healthy": app.health.health().is_healthy(),
        "ready": app.health.is_ready(),
        "pid": std::process::id(),
        "uptime_seconds": uptime,
        "version": config.version,
    })
}

/// A `text/plain` response.
pub fn text(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body.into())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// An `application/json` response.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut body = value.to_string();
    body.push('\n');
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
