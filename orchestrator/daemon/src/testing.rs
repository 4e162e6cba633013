//! The in-process daemon harness (feature `testing`): the real daemon (`orch_daemon::run`) on
//! the Docker and GPU fakes, a scripted prober, an in-memory state store
//! and a manual wall clock, serving a real unix socket in a temporary
//! directory, driven through the real client. Under a paused tokio clock
//! its timers (backoffs, probe intervals) run in virtual time, so a test
//! of minutes of supervision takes milliseconds.

// Test support: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::ManualClock;
use crate::event::ScrapeError;
use crate::fleet::probes::{RemoteEndpoint, RemoteProber};
use crate::probe::{ProbeTarget, Prober};
use crate::slo_scrape::{MetricsFetcher, ScrapeTarget};
use crate::slo_store::MemSloStore;
use crate::store::MemStore;
use crate::{Control, Deps, GpuDeps, Settings};
use async_trait::async_trait;
use orch_api::{Client, Event, Status};
use orch_docker::ContainerRuntime as _;
use orch_docker::fake::FakeRuntime;
use orch_gpu::{FakeGpu, FakeMps};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Health by agent: healthy unless told otherwise.
#[derive(Debug, Default)]
pub struct ScriptedProber {
    sick: Mutex<BTreeMap<String, bool>>,
    probes: Mutex<u64>,
}

impl ScriptedProber {
    pub fn set_healthy(&self, agent: &str, healthy: bool) {
        self.sick
            .lock()
            .unwrap()
            .insert(agent.to_string(), !healthy);
    }

    pub fn probes(&self) -> u64 {
        *self.probes.lock().unwrap()
    }
}

#[async_trait]
impl Prober for ScriptedProber {
    async fn probe(&self, t: &ProbeTarget) -> bool {
        *self.probes.lock().unwrap() += 1;
        !self
            .sick
            .lock()
            .unwrap()
            .get(&t.key.agent)
            .copied()
            .unwrap_or(false)
    }
}

/// Another host's agents as this host's direct probes find them:
/// answering unless told otherwise. Records every probe.
#[derive(Debug, Default)]
pub struct ScriptedRemoteProber {
    silent: Mutex<BTreeMap<(String, String), bool>>,
    probes: Mutex<Vec<ProbedRemote>>,
}

/// One direct probe of another host's agent, as made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbedRemote {
    pub host: String,
    pub agent: String,
    pub addr: String,
    pub path: String,
}

impl ScriptedRemoteProber {
    pub fn set_answers(&self, host: &str, agent: &str, answers: bool) {
        self.silent
            .lock()
            .unwrap()
            .insert((host.to_string(), agent.to_string()), !answers);
    }

    /// Every probe made so far.
    pub fn probes(&self) -> Vec<ProbedRemote> {
        self.probes.lock().unwrap().clone()
    }
}

#[async_trait]
impl RemoteProber for ScriptedRemoteProber {
    async fn probe(
        &self,
        host: &str,
        agent: &str,
        endpoint: &RemoteEndpoint,
        _timeout: Duration,
    ) -> bool {
        self.probes.lock().unwrap().push(ProbedRemote {
            host: host.to_string(),
            agent: agent.to_string(),
            addr: endpoint.addr.clone(),
            path: endpoint.path.clone(),
        });
        !self
            .silent
            .lock()
            .unwrap()
            .get(&(host.to_string(), agent.to_string()))
            .copied()
            .unwrap_or(false)
    }
}

/// Requests, errors, and requests at or under each bound.
type Served = (u64, u64, [u64; 3]);

/// Agents' request counters as their `/metrics` would show them, set by
/// the test: per agent, (requests, errors, requests at or under each of
/// [`ScriptedMetrics::BOUNDS`]). An agent with nothing set has no metrics
/// endpoint (its scrape fails).
#[derive(Debug, Default)]
pub struct ScriptedMetrics {
    agents: Mutex<BTreeMap<String, Served>>,
    /// Gauges by agent: every replica shows the same.
    gauges: Mutex<BTreeMap<String, BTreeMap<String, f64>>>,
    fetches: Mutex<u64>,
}

impl ScriptedMetrics {
    /// The bounds of the request-duration histogram, in seconds.
    pub const BOUNDS: [f64; 3] = [0.1, 1.0, 5.0];

    /// Adds requests to an agent's counters: `errors` of them failed and
    /// `slow` took longer than 5 s (the others 0.1 s or less).
    pub fn serve(&self, agent: &str, requests: u64, errors: u64, slow: u64) {
        let mut m = self.agents.lock().unwrap();
        let e = m.entry(agent.to_string()).or_default();
        e.0 += requests;
        e.1 += errors;
        let fast = requests - slow;
        e.2[0] += fast;
        e.2[1] += fast;
        e.2[2] += fast;
    }

    /// Sets a gauge every replica of `agent` shows.
    pub fn set_gauge(&self, agent: &str, name: &str, value: f64) {
        let mut m = self.gauges.lock().unwrap();
        m.entry(agent.to_string())
            .or_default()
            .insert(name.to_string(), value);
    }

    pub fn fetches(&self) -> u64 {
        *self.fetches.lock().unwrap()
    }

    fn text(&self, agent: &str) -> Option<String> {
        let gauges = self.gauges.lock().unwrap().get(agent).cloned();
        let m = self.agents.lock().unwrap();
        let mut t = String::new();
        for (name, value) in gauges.iter().flatten() {
            t += &format!("# TYPE {name} gauge\n{name} {value}\n");
        }
        let Some((requests, errors, buckets)) = m.get(agent) else {
            return gauges.map(|_| t);
        };
        t += "# TYPE agent_requests_total counter\n";
        t += &format!("agent_requests_total{{endpoint=\"/work\"}} {requests}\n");
        t += "agent_requests_total{endpoint=\"/health\"} 9999\n";
        t += &format!("# TYPE agent_errors_total counter\nagent_errors_total {errors}\n");
        t += "# TYPE agent_work_duration_seconds histogram\n";
        for (b, n) in Self::BOUNDS.iter().zip(buckets) {
            t += &format!("agent_work_duration_seconds_bucket{{le=\"{b}\"}} {n}\n");
        }
        t += &format!("agent_work_duration_seconds_bucket{{le=\"+Inf\"}} {requests}\n");
        t += &format!("agent_work_duration_seconds_count {requests}\n");
        Some(t)
    }
}

#[async_trait]
impl MetricsFetcher for ScriptedMetrics {
    async fn fetch(
        &self,
        t: &ScrapeTarget,
        _timeout: Duration,
        _max_bytes: usize,
    ) -> Result<Vec<u8>, ScrapeError> {
        *self.fetches.lock().unwrap() += 1;
        self.text(&t.key.agent)
            .map(String::into_bytes)
            .ok_or(ScrapeError::Status(404))
    }
}

/// The outside world of one host; it outlives daemon restarts.
#[derive(Debug, Clone)]
pub struct World {
    pub rt: Arc<FakeRuntime>,
    pub gpu: Option<Arc<FakeGpu>>,
    pub mps: Arc<FakeMps>,
    pub prober: Arc<ScriptedProber>,
    /// Probes of other hosts' agents (while their host is down).
    pub remote_prober: Arc<ScriptedRemoteProber>,
    pub store: MemStore,
    pub clock: ManualClock,
    /// The in-memory federation network this host joins, when its config
    /// has a `federation` section.
    pub net: Option<orch_federation::MemNetwork>,
    pub slo_store: MemSloStore,
    pub metrics: Arc<ScriptedMetrics>,
    /// The cgroup files of the processes on the GPUs.
    pub cgroups: Arc<orch_docker::cgroup::FakeProcCgroups>,
    /// The daemon keeps dcgm-exporter's job mapping files
    /// ([`Harness::dcgm_dir`]).
    pub dcgm_job_mapping: bool,
    /// A cgroup tree the containers' CPU time is read from (`None`: none).
    pub cgroup_root: Option<PathBuf>,
    /// How many config generations the daemon keeps
    /// ([`Harness::generations_dir`]).
    pub generations_kept: usize,
}

impl Default for World {
    fn default() -> Self {
        World::new()
    }
}

impl World {
    pub fn new() -> Self {
        World {
            rt: Arc::new(FakeRuntime::new()),
            gpu: None,
            mps: Arc::new(FakeMps::default()),
            prober: Arc::new(ScriptedProber::default()),
            remote_prober: Arc::new(ScriptedRemoteProber::default()),
            store: MemStore::new(),
            clock: ManualClock::new(1_796_000_000_000),
            net: None,
            slo_store: MemSloStore::new(),
            metrics: Arc::new(ScriptedMetrics::default()),
            cgroups: Arc::new(orch_docker::cgroup::FakeProcCgroups::new()),
            dcgm_job_mapping: false,
            cgroup_root: None,
            generations_kept: crate::generations::KEEP,
        }
    }

    /// A host on `net` (its config names its peers).
    pub fn on(mut self, net: &orch_federation::MemNetwork) -> Self {
        self.net = Some(net.clone());
        self
    }

    pub fn with_gpu(mut self, gpu: FakeGpu) -> Self {
        self.gpu = Some(Arc::new(gpu));
        self
    }

    /// The daemon keeps dcgm-exporter's job mapping files in
    /// [`Harness::dcgm_dir`].
    pub fn with_dcgm_job_mapping(mut self) -> Self {
        self.dcgm_job_mapping = true;
        self
    }
}

/// A `federation:` section for a host on a [`World::on`] network: each
/// peer at `tcp://PEER:7100` with a fresh public key (the in-memory bus
/// checks names, not keys).
pub fn federation_section(peers: &[&str]) -> String {
    let list: Vec<String> = peers
        .iter()
        .map(|p| {
            let key = orch_federation::SecretKey::generate()
                .expect("a CURVE key pair")
                .public()
                .to_z85();
            format!("{{name: {p}, endpoint: \"tcp://{p}:7100\", public_key: \"{key}\"}}")
        })
        .collect();
    format!(
        "federation:\n  listen: \"tcp://0.0.0.0:7100\"\n  peers: [{}]\n",
        list.join(", ")
    )
}

pub struct Harness {
    pub world: World,
    pub dir: tempfile::TempDir,
    pub client: Client,
    pub control: Control,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), crate::DaemonError>>>,
}

impl Harness {
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("startup_config.yaml")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("orch.sock")
    }

    /// Where the daemon keeps dcgm-exporter's job mapping files, with
    /// [`World::with_dcgm_job_mapping`].
    pub fn dcgm_dir(&self) -> PathBuf {
        self.dir.path().join(DCGM_DIR)
    }

    /// Where the daemon keeps its config generations
    /// (`crate::generations`).
    pub fn generations_dir(&self) -> PathBuf {
        self.dir.path().join(GENERATIONS_DIR)
    }

    /// A daemon on `config` in a fresh world.
    pub async fn start(config: &str) -> Harness {
        Harness::start_in(World::new(), config).await
    }

    pub async fn start_in(world: World, config: &str) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("startup_config.yaml"), config).unwrap();
        let (control, shutdown, task) = launch(&world, dir.path().to_path_buf(), false).await;
        Harness {
            client: Client::new(dir.path().join("orch.sock")),
            world,
            dir,
            control,
            shutdown,
            task: Some(task),
        }
    }

    /// Stops the daemon (agents keep running, as with `shutdown: leave`).
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }

    /// Stops the daemon and starts a new one in the same world, on the
    /// same config file and state.
    pub async fn restart(&mut self) {
        self.restart_with(false).await;
    }

    /// Restarts as `orchestratord run --fresh` does.
    pub async fn restart_fresh(&mut self) {
        self.restart_with(true).await;
    }

    async fn restart_with(&mut self, fresh: bool) {
        self.stop().await;
        let (control, shutdown, task) =
            launch(&self.world, self.dir.path().to_path_buf(), fresh).await;
        self.control = control;
        self.shutdown = shutdown;
        self.task = Some(task);
    }

    pub async fn status(&self) -> Status {
        self.client.status().await.unwrap()
    }

    /// `GET /metrics`, as a scraper would, with no timeout (the tokio
    /// clock may be paused).
    pub async fn metrics(&self) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.control.metrics_addr().expect("metrics are served");
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: test\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        let text = String::from_utf8(buf).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
            "{head}"
        );
        body.to_string()
    }

    /// Every event so far.
    pub async fn events(&self) -> Vec<Event> {
        use futures_util::StreamExt;
        let s = self.client.events(0, false).await.unwrap();
        s.map(|e| e.unwrap()).collect().await
    }

    /// Polls the status until `cond` holds (virtual time, up to 10 minutes).
    pub async fn until(&self, what: &str, cond: impl Fn(&Status) -> bool) -> Status {
        for _ in 0..6000 {
            let s = self.status().await;
            if cond(&s) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let events: Vec<String> = self
            .events()
            .await
            .iter()
            .map(|e| format!("{} {}", e.seq, e.kind))
            .collect();
        panic!(
            "never: {what}\nstatus: {:#?}\nevents:\n{}",
            self.status().await,
            events.join("\n")
        );
    }

    /// Waits until every started group is ready and every wanted agent healthy.
    pub async fn until_ready(&self) -> Status {
        self.until("every started group is ready", |s| {
            s.groups
                .iter()
                .filter(|g| g.started)
                .all(|g| g.state == orch_api::GroupState::Ready)
                && s.agents.healthy == s.agents.wanted
        })
        .await
    }

    /// The running container of a replica, as Docker (the fake) has it.
    pub async fn container_of(&self, agent: &str) -> Option<String> {
        let filter = orch_docker::LabelFilter::any().label("io.orchestrator.agent", agent);
        self.world
            .rt
            .list(&filter)
            .await
            .unwrap()
            .into_iter()
            .find(|c| c.state.is_alive())
            .map(|c| c.id)
    }
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

const DCGM_DIR: &str = "dcgm-jobs";
const GENERATIONS_DIR: &str = "generations";

async fn launch(
    world: &World,
    dir: PathBuf,
    fresh: bool,
) -> (
    Control,
    CancellationToken,
    JoinHandle<Result<(), crate::DaemonError>>,
) {
    let config_path = dir.join("startup_config.yaml");
    let loaded = orch_config::load_file(&config_path, &Default::default()).unwrap();
    let settings = Settings {
        config_path,
        load_options: Default::default(),
        socket: dir.join("orch.sock"),
        socket_group: None,
        docker_endpoint: orch_docker::fake::FAKE_ENDPOINT.into(),
        max_parallel_ops: 8,
        mps_base: dir.join("mps"),
        metrics_listen: Some("127.0.0.1:0".into()),
        observe: Default::default(),
        fresh,
        gpu_process_interval: crate::gpu::PROCESS_INTERVAL,
        dcgm_job_mapping_dir: world.dcgm_job_mapping.then(|| dir.join(DCGM_DIR)),
        cgroup_root: world.cgroup_root.clone(),
        generations_dir: Some(dir.join(GENERATIONS_DIR)),
        generations_kept: world.generations_kept,
    };
    let deps = Deps {
        runtime: world.rt.clone(),
        gpu: GpuDeps {
            backend: match &world.gpu {
                Some(g) => Ok(g.clone()),
                None => Err(orch_gpu::GpuError::NoLibrary {
                    path: "libnvidia-ml.so.1".into(),
                    reason: "this host has no NVML library".into(),
                }),
            },
            mps: world.mps.clone(),
            cgroups: world.cgroups.clone(),
        },
        prober: world.prober.clone(),
        store: Arc::new(world.store.clone()),
        clock: Arc::new(world.clock.clone()),
        federation: None,
        slo_store: Arc::new(world.slo_store.clone()),
        fetcher: world.metrics.clone(),
        remote_prober: world.remote_prober.clone(),
    };
    let federation = match (&world.net, &loaded.config.federation) {
        (Some(net), Some(fed)) => {
            // Every start is a new incarnation, larger than the last.
            static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
            let incarnation = RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let config =
                orch_federation::BusConfig::from_model(&loaded.config.host.name, fed, incarnation)
                    .unwrap();
            let (bus, inbox) = net.join(config);
            Some(crate::fleet::FederationDeps {
                bus: Arc::new(bus),
                inbox,
            })
        }
        _ => None,
    };
    let deps = Deps { federation, ..deps };
    let shutdown = CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        crate::run(loaded, settings, deps, stop, move |c| {
            let _ = tx.send(c);
        })
        .await
    });
    let control = rx.await.expect("the daemon started");
    (control, shutdown, task)
}

/// A small host: group `base` holds a chain Flaky <- Mid <- Top, group
/// `extra` holds Side and an optional Extra that waits for `base`.
pub const CHAIN: &str = r#"version: 1
host: {name: testhost}
defaults:
  image: orchestrator-agent:latest
  restart: {policy: on-failure, backoff: {initial: 200ms, max: 2s}, crashloop: {restarts: 3, window: 1m}}
  health: {http: {port: 8080}, interval: 500ms, timeout: 1s, retries: 2, start_period: 5s}
  stop_timeout: 2s
groups:
  base:
    agents:
      Flaky: {}
      Mid: {depends_on: [Flaky]}
      Top: {depends_on: [Mid]}
  extra:
    depends_on: [base]
    agents:
      Side: {}
      Extra: {required: false}
"#;
