//! The owner task: the only holder of host state.
//!
//! Everything that can cause work arrives as one [`OwnerEvent`]
//! (`crate::event`); the loop is a router whose arms are one call each.
//! The owner holds the pure [`Supervisor`] and its parts, each with its
//! own fields and a small API:
//!
//! - `exec`: the executor (Docker operations, probes, the GPU worker,
//!   MPS bookkeeping; Docker and GPU news as supervisor input);
//! - `persist`: the persister (the state store, the state file's health,
//!   retries of failed writes);
//! - `journal`: the event log;
//! - `fleet`: the bus, what is known of each peer, snapshot publishing,
//!   direct probes of a down peer's agents;
//! - `observe`: the observer (counters, SLOs, `/metrics` snapshots, agent
//!   scrapes, trace spans);
//! - `autoscale`: the autoscalers, their readings (CPU from Docker, GPU
//!   utilisation, the agents' gauges, latency burn) and their decisions;
//! - `dcgm`: dcgm-exporter's job mapping files, kept equal to the running
//!   replicas by a writer task;
//! - `history`: the config generations kept on disk and the newest
//!   one's outcome;
//! - `handlers`: the answer to each request, from `crate::views` (pure
//!   queries) or a supervisor command;
//! - `rollout`: `rollout status|pause|resume|undo`, the rollback a failed
//!   step asks for, and a watched replica's requests handed to the
//!   supervisor.
//!
//! Nothing else mutates host state. No lock is held across an await.

mod autoscale;
mod dcgm;
mod exec;
mod fleet;
mod handlers;
mod history;
mod journal;
mod observe;
mod persist;
mod rollout;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use orch_config::{LoadOptions, Loaded};
use orch_core::container;
use orch_core::model::ShutdownMode;
use orch_core::supervise::{Input, Outcome, Supervisor};
use orch_docker::ContainerRuntime;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::event::{
    self, DockerNews, GpuNews, HealthNews, JobFailure, OpDone, OwnerEvent, PeerNews, Tick,
};
use crate::gpu::GpuWorker;
use crate::probe::Prober;
use crate::store::StateStore;
use autoscale::{Autoscaling, Readings};
use dcgm::JobMapping;
use exec::{ExecDeps, Executor};
use fleet::FleetPart;
use journal::Journal;
use observe::{ObserveDeps, Observer};
use persist::{Persister, Written};

/// What the owner needs to know about its surroundings.
#[derive(Debug, Clone)]
pub struct OwnerSettings {
    pub config_path: PathBuf,
    pub load_options: LoadOptions,
    pub docker_endpoint: String,
    /// How many Docker operations may run at once.
    pub max_parallel_ops: usize,
    /// Per-GPU MPS pipe and log directories are made under this one.
    pub mps_base: PathBuf,
    pub observe: crate::observe::ObserveSettings,
    /// Start from no started group, whatever the state says (`run --fresh`).
    pub fresh: bool,
    /// Where dcgm-exporter's job mapping files are kept, if anywhere.
    pub dcgm_job_mapping_dir: Option<PathBuf>,
}

/// The outside systems the owner acts through.
#[derive(Debug, Clone)]
pub struct OwnerDeps {
    pub rt: Arc<dyn ContainerRuntime>,
    pub prober: Arc<dyn Prober>,
    pub store: Arc<dyn StateStore>,
    pub clock: Arc<dyn Clock>,
    pub gpu: Option<GpuWorker>,
    /// The federation bus, when this host has peers.
    pub bus: Option<Arc<dyn orch_federation::Bus>>,
    /// Probes other hosts' agents while their daemon is down.
    pub remote_prober: Arc<dyn crate::fleet::probes::RemoteProber>,
    pub slo_store: Arc<dyn crate::slo_store::SloStore>,
    pub fetcher: Arc<dyn crate::slo_scrape::MetricsFetcher>,
    /// The config generations kept; `None` keeps no history.
    pub generations: Option<crate::generations::GenerationStore>,
}

/// Where the config comes from, for `reload`, `apply` and `plan`.
#[derive(Debug)]
struct ConfigSource {
    path: PathBuf,
    options: LoadOptions,
}

/// The supervisor's clock (milliseconds since the owner started) and the
/// wall clock (events, SLOs).
#[derive(Debug)]
struct Clocks {
    epoch: Instant,
    wall: Arc<dyn Clock>,
    /// The wall clock at `epoch`.
    wall_at_epoch: u64,
    /// The time of the decision being carried out (`now`).
    decided: u64,
}

impl Clocks {
    fn new(wall: Arc<dyn Clock>) -> Clocks {
        Clocks {
            epoch: Instant::now(),
            wall_at_epoch: wall.unix_ms(),
            wall,
            decided: 0,
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Takes the time of a decision: its events are stamped with it.
    fn decide(&mut self) -> u64 {
        self.decided = self.now();
        self.decided
    }

    /// The wall-clock time of the decision being carried out. Events are
    /// stamped with it rather than with the moment they are written, so
    /// that the gap between two events is the gap between the decisions
    /// (a restart scheduled in 200 ms starts at least 200 ms after its
    /// `agent-restarting`, however late the owner got to record it).
    fn decided_unix_ms(&self) -> u64 {
        self.wall_at_epoch.saturating_add(self.decided)
    }

    fn at(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    fn unix_ms(&self) -> u64 {
        self.wall.unix_ms()
    }
}

pub struct Owner {
    sup: Supervisor,
    clocks: Clocks,
    source: ConfigSource,
    journal: Journal,
    persister: Persister,
    exec: Executor,
    fleet: FleetPart,
    observer: Observer,
    scaling: Autoscaling,
    job_mapping: JobMapping,
    /// Every container's CPU time, from its cgroup (`crate::cpu_use`).
    cpu: crate::cpu_use::CpuUse,
    history: history::History,
}

impl std::fmt::Debug for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Owner")
            .field("host", &self.sup.config().host.name)
            .finish()
    }
}

impl Owner {
    pub fn new(
        loaded: Loaded,
        settings: OwnerSettings,
        deps: OwnerDeps,
        tx: mpsc::Sender<OwnerEvent>,
    ) -> Result<Self, crate::store::StoreError> {
        let journal_store = deps.store.clone();
        let stats_rt = deps.rt.clone();
        let (persister, persisted, origin) =
            Persister::open(deps.store, deps.clock.unix_ms(), settings.fresh)?;
        let config = loaded.config;
        let host = config.host.name.clone();
        let exec = Executor::new(
            ExecDeps {
                rt: deps.rt,
                prober: deps.prober,
                gpu: deps.gpu,
                docker_endpoint: settings.docker_endpoint,
                mps_base: settings.mps_base,
                max_parallel_ops: settings.max_parallel_ops,
                health: event::Sender::new(tx.clone()),
                ops_done: event::Sender::new(tx.clone()),
                slice_ready: event::Sender::new(tx.clone()),
            },
            &persisted,
        );
        let peers: Vec<&str> = config
            .federation
            .iter()
            .flat_map(|f| f.peers.iter().map(|p| p.name.as_str()))
            .collect();
        let remote_commands = config
            .federation
            .as_ref()
            .map(|f| f.remote_commands)
            .unwrap_or_default();
        let remote_probes = crate::fleet::probes::RemoteProbes::new(
            deps.remote_prober,
            event::Sender::new(tx.clone()),
        );
        let fleet = FleetPart::new(
            deps.bus,
            peers.iter().copied(),
            remote_commands,
            remote_probes,
        );
        let observer = Observer::new(
            &config,
            ObserveDeps {
                store: deps.slo_store,
                fetcher: deps.fetcher,
                scraped: event::Sender::new(tx.clone()),
                settings: settings.observe,
            },
        );
        let hashes = container::config_hashes(&config);
        let mut sup = Supervisor::new(config, hashes, persisted);
        sup.infer_intent(origin);
        let clocks = Clocks::new(deps.clock.clone());
        sup.set_wall_origin(clocks.wall_at_epoch);
        let scaling = Autoscaling::new(stats_rt, event::Sender::new(tx), clocks.epoch);
        let mut history = history::History::new(deps.generations);
        history.startup(history::Taken {
            generation: sup.generation(),
            unix_ms: clocks.unix_ms(),
            applied_by: "startup".into(),
            source: orch_api::GenerationSource::Startup,
            changes: Default::default(),
            text: crate::generations::read_config_text(&settings.config_path),
        });
        Ok(Owner {
            sup,
            clocks,
            source: ConfigSource {
                path: settings.config_path,
                options: settings.load_options,
            },
            journal: Journal::new(&host, journal_store),
            persister,
            exec,
            fleet,
            observer,
            scaling,
            job_mapping: JobMapping::new(settings.dcgm_job_mapping_dir),
            cpu: Default::default(),
            history,
        })
    }

    /// `federation.remote_commands` as `reload` changes it, for the
    /// checks of peers' requests (`fleet::bridge`).
    pub fn remote_commands(
        &self,
    ) -> tokio::sync::watch::Receiver<orch_core::model::RemoteCommands> {
        self.fleet.remote_commands()
    }

    /// The metrics snapshots the owner publishes.
    pub fn metrics(&self) -> tokio::sync::watch::Receiver<Arc<crate::metrics::MetricsSnapshot>> {
        self.observer.subscribe()
    }

    /// Runs until `shutdown` fires (and, with `shutdown: stop`, until every
    /// agent is stopped) or every sender is gone.
    pub async fn run(mut self, mut rx: mpsc::Receiver<OwnerEvent>, shutdown: CancellationToken) {
        let mut stopping = false;
        let mut stop_deadline: Option<Instant> = None;
        loop {
            if stopping && Executor::drained(&self.sup) {
                break;
            }
            let deadline = earliest(
                self.sup.next_deadline().map(|ms| self.clocks.at(ms)),
                self.persister.retry_at(),
            );
            let snapshot_due = self.fleet.snapshot_due();
            tokio::select! {
                biased;
                () = shutdown.cancelled(), if !stopping => {
                    stopping = true;
                    match self.stop() {
                        Some(limit) => stop_deadline = Some(Instant::now() + limit),
                        None => break,
                    }
                }
                () = sleep_until(stop_deadline) => {
                    tracing::warn!("agents did not all stop in time; exiting anyway");
                    break;
                }
                ev = rx.recv() => match ev {
                    Some(ev) => self.on(ev),
                    None => break,
                },
                () = sleep_until(deadline) => self.tick(),
                () = sleep_until(snapshot_due) => self.publish_snapshot(),
                () = sleep_until(self.journal.save_due()) => self.journal.save(),
            }
        }
        self.exec.finish(Duration::from_secs(30)).await;
        self.observer.save();
        self.journal.finish().await;
        self.job_mapping.finish().await;
    }

    /// Shutdown: `None` to leave at once, or how long to wait for every
    /// agent to stop.
    fn stop(&mut self) -> Option<Duration> {
        match self.sup.config().runtime.shutdown {
            ShutdownMode::Leave => {
                tracing::info!("stopping; agents keep running (shutdown: leave)");
                None
            }
            ShutdownMode::Stop => {
                tracing::info!("stopping every agent before exit (shutdown: stop)");
                let out = self.sup.stop_all(self.clocks.decide());
                self.carry_out(out);
                Some(Duration::from_secs(120))
            }
        }
    }

    fn on(&mut self, ev: OwnerEvent) {
        let now = self.clocks.decide();
        // Reconcile time: every input but observability's own work.
        let began = std::time::Instant::now();
        match ev {
            OwnerEvent::Request(asked) => self.request(now, asked),
            OwnerEvent::Subscribe(ask) => self.journal.subscribe(ask),
            OwnerEvent::ContainerOf(ask) => self.container_of(ask),
            OwnerEvent::Docker(news) => self.docker(now, news),
            OwnerEvent::Health(news) => self.health(now, news),
            OwnerEvent::Op(done) => self.op_done(now, done),
            OwnerEvent::SliceReady(s) => self.decide(
                now,
                Input::SliceReady {
                    key: s.key,
                    slice: s.slice,
                },
            ),
            OwnerEvent::Gpu(news) => self.gpu(now, news),
            OwnerEvent::Peer(news) => self.peer(now, news),
            OwnerEvent::SubscribePeer(ask) => self.fleet.subscribe(ask),
            OwnerEvent::RemoteProbe(news) => self.decide(
                now,
                Input::RemoteProbe {
                    host: news.host,
                    agent: news.agent,
                    healthy: news.healthy,
                },
            ),
            OwnerEvent::Observe(tick) => return self.observe(tick),
            OwnerEvent::Scraped(s) => {
                if let Some(v) = s.gauge {
                    self.scaling.gauge(s.key.clone(), v, self.clocks.now());
                }
                let key = s.key.clone();
                if let Some(delta) = self.observer.scraped(s, self.clocks.unix_ms()) {
                    self.watched_requests(&key, &delta);
                }
                return;
            }
            OwnerEvent::CpuRead(read) => {
                self.scaling.cpu_read(&self.sup, read);
                return self.autoscale();
            }
            OwnerEvent::CpuUse(read) => {
                let at = read.at.saturating_duration_since(self.clocks.epoch);
                let at = u64::try_from(at.as_millis()).unwrap_or(u64::MAX);
                self.cpu.update(at, read.used);
            }
            OwnerEvent::Reload(_) => self.reload_signal(now),
            OwnerEvent::Ping(ping) => {
                let _ = ping.0.send(());
            }
        }
        self.observer.reconciled(began);
    }

    /// Feeds the supervisor one input and carries out what it decides.
    fn decide(&mut self, now: u64, input: Input) {
        let out = self.sup.handle(now, input);
        self.carry_out(out);
    }

    /// Timers: a retry of a failed state write, backoffs, retries, stability.
    fn tick(&mut self) {
        let began = std::time::Instant::now();
        if self.persister.retry_due() {
            self.persist();
        }
        let out = self.sup.tick(self.clocks.decide());
        self.carry_out(out);
        self.observer.reconciled(began);
    }

    fn docker(&mut self, now: u64, news: DockerNews) {
        if let Some(mut input) = self.exec.docker(news) {
            // How long the death took to get here: its backoff counts from it.
            if let Input::ContainerDied {
                at_ms,
                seen_late_ms,
                ..
            } = &mut input
                && *at_ms > 0
            {
                *seen_late_ms = self.clocks.unix_ms().saturating_sub(*at_ms);
            }
            self.decide(now, input);
        }
    }

    fn health(&mut self, now: u64, news: HealthNews) {
        self.observer.health(&self.sup, &news.key, news.took);
        if let Some(interval) = news.unanswered_for {
            let now_ms = self.clocks.unix_ms();
            self.observer
                .unanswered(&self.sup, &news.key, interval, now_ms);
        }
        let input = Input::Health {
            key: news.key,
            id: news.id,
            ok: news.ok,
        };
        self.decide(now, input);
    }

    fn op_done(&mut self, now: u64, done: OpDone) {
        let error = match &done.result {
            Ok(_) => None,
            Err(JobFailure::ReplacementNotMade(e) | JobFailure::Failed(e)) => Some(e),
        };
        if let Some(e) = error {
            let reason = orch_api::convert::fail_reason(&orch_core::supervise::FailReason::Launch(
                e.clone(),
            ));
            tracing::warn!(replica = %done.key, op = ?done.op, reason = reason.label(), "operation failed: {reason}");
        }
        let input = match done.result {
            // The old container runs on: the replica is as it was.
            Err(JobFailure::ReplacementNotMade(error)) => Input::ReplacementNotMade {
                key: done.key,
                error,
            },
            Err(JobFailure::Failed(error)) => Input::OpFinished {
                key: done.key,
                op: done.op,
                result: Err(error),
            },
            Ok(success) => Input::OpFinished {
                key: done.key,
                op: done.op,
                result: Ok(success),
            },
        };
        self.decide(now, input);
    }

    fn gpu(&mut self, now: u64, news: GpuNews) {
        let processes = matches!(news, GpuNews::Processes { .. });
        for input in self.exec.gpu(news, self.sup.gpu_unavailable()) {
            self.decide(now, input);
        }
        if processes {
            // Measured use against the limits (`gpu.over_limit`).
            let gpus = crate::gpu_use::memory(&self.sup, self.exec.telemetry());
            self.decide(now, Input::GpuMemory { gpus });
        }
    }

    /// A peer's news, and what cross-host dependencies see of it now.
    fn peer(&mut self, now: u64, news: PeerNews) {
        // A peer's change of state is an event of this host.
        if let PeerNews::State {
            peer,
            state,
            incarnation,
        } = &news
        {
            self.journal.note(
                orch_api::EventKind::PeerChanged {
                    peer: peer.clone(),
                    state: *state,
                    incarnation: *incarnation,
                },
                self.clocks.decided_unix_ms(),
            );
        }
        let (host, state) = self.fleet.take(news);
        // A held view (the peer is down, within `peer_grace`, or its agents
        // answering probes past it) is released by any news of it, even
        // news equal to what is held.
        if self.sup.remote(&host) != &state || self.sup.remote_vouched(&host) {
            self.decide(now, Input::Remote { host, state });
        }
    }

    fn observe(&mut self, tick: Tick) {
        let now_ms = self.clocks.unix_ms();
        match tick {
            Tick::Publish => {
                let gpu = crate::views::gpu(&self.sup, &self.facts());
                let peers = self.fleet.metric_rows();
                self.observer
                    .publish(&self.sup, &gpu, &self.cpu, peers, now_ms);
            }
            Tick::Sample => self.observer.sample(&self.sup, now_ms),
            Tick::Scrape => self.observer.scrape(&self.sup),
            Tick::Save => self.observer.save(),
            Tick::Autoscale => {
                if Autoscaling::wanted(&self.sup) && !self.scaling.start_round(&self.sup) {
                    self.autoscale();
                }
            }
        }
    }

    /// Asks every autoscaler and carries out its decisions as `scale`
    /// commands. A scale-up the planner cannot place is refused (said once
    /// per count and wanted count) and goes as far as the GPUs hold, if
    /// that is further than now.
    fn autoscale(&mut self) {
        if !Autoscaling::wanted(&self.sup) {
            return;
        }
        let now = self.clocks.decide();
        let unix_ms = self.clocks.unix_ms();
        let observer = &self.observer;
        let burn = |g: &str| observer.latency_burn(g, unix_ms);
        let readings = Readings {
            now,
            gpu: self.exec.telemetry(),
            latency_burn: &burn,
        };
        let decisions = self.scaling.decide(&self.sup, &readings);
        for (group, agent, mut decision) in decisions {
            if let Err(rejection) = self.scale_fits(&group, &agent, Some(decision.to)) {
                // As many as the GPUs hold, if more than now.
                let fits = (decision.from + 1..decision.to)
                    .rev()
                    .find(|n| self.scale_fits(&group, &agent, Some(*n)).is_ok());
                if let Some(r) = self.scaling.refused(&group, &agent, decision) {
                    tracing::warn!(group = %r.group, agent = %r.agent, to = r.decision.to, "autoscale refused: {rejection}");
                    self.journal.note(
                        orch_api::EventKind::AgentAutoscaleRefused {
                            group: r.group,
                            agent: r.agent,
                            from: r.decision.from,
                            to: r.decision.to,
                            cause: orch_api::convert::autoscale_cause(&r.decision.cause),
                            reason: rejection.to_string(),
                        },
                        self.clocks.decided_unix_ms(),
                    );
                }
                match fits {
                    Some(n) => decision.to = n,
                    None => continue,
                }
            }
            match self.sup.autoscale_agent(now, &group, &agent, decision) {
                Ok(done) => self.carry_out(done.outcome),
                Err(e) => {
                    let e = crate::views::command_error(&self.sup, &e);
                    tracing::warn!(%group, %agent, "autoscale not applied: {e}");
                }
            }
        }
    }

    fn publish_snapshot(&mut self) {
        // Until Docker is listed and the running agents probed once, a
        // snapshot would call them not ready, and peers would stop what
        // depends on them: a daemon restart here would be an outage there.
        if !self.observer.settled(&self.sup) {
            self.fleet.postpone_snapshot();
            return;
        }
        let snapshot = self.snapshot();
        self.fleet.publish_snapshot(&snapshot);
    }

    /// Carries out what the supervisor decided: records its events (the
    /// journal, the counters, the peers), writes desired state if it
    /// changed, then runs its actions.
    fn carry_out(&mut self, out: Outcome) {
        let rollback = out.rollback;
        self.observer.saw(&out.events);
        self.history.saw(&out.events);
        let span = if out.actions.is_empty() {
            tracing::Span::none()
        } else {
            tracing::info_span!("reconcile", actions = out.actions.len())
        };
        let _in = span.enter();
        let published = self.journal.record(
            &out.events,
            self.sup.inventory(),
            self.clocks.decided_unix_ms(),
        );
        self.fleet.publish_events(&published);
        // INVARIANT: desired state is written before any action runs.
        if out.persist {
            self.persist();
        }
        let observer = &self.observer;
        let sup = &self.sup;
        self.exec
            .run(sup, out.actions, |key, op| observer.op_span(sup, key, op));
        self.observer.settle_commands(&self.sup);
        self.fleet.probe_remotes(&self.sup);
        self.job_mapping.update(&self.sup);
        self.history.settle(&self.sup);
        // A failed rollout step goes back to the last good generation once
        // what it decided has been carried out.
        if let Some(ask) = rollback {
            self.roll_back(ask);
        }
    }

    /// Writes the desired state; a failure is counted and said once.
    fn persist(&mut self) {
        let event = match self.persister.write(&self.sup.persisted()) {
            Written::Saved => None,
            Written::SavedAgain(e) => Some(e),
            Written::Failed(e) => {
                self.observer.state_write_failed();
                e
            }
        };
        if let Some(e) = event {
            self.journal
                .record(&[e], self.sup.inventory(), self.clocks.decided_unix_ms());
        }
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
