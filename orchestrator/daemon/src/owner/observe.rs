//! The observer: the counters the owner keeps, the SLO engine it feeds
//! (availability samples from the supervisor's state, request figures
//! from agent scrapes), the snapshots it publishes for `/metrics`, the
//! SLO history it saves, and the operator commands whose work each group
//! is doing (`crate::trace::CommandSpans`), which its operations' spans
//! join. Fetching agent metrics runs on a task of its own.
//!
//! Nothing of the host's state is published before the daemon knows it:
//! until Docker has been listed (adoption finished) and every adopted
//! replica with a probe has had its first result (or [`SETTLE_MAX`] has
//! passed), `/metrics` serves the first snapshot, which holds only the
//! daemon's own families (`build_info`, reconcile time, state writes), and
//! no availability is sampled. So a restarted daemon never exports a
//! ready group as not ready for its first seconds. Peer series wait for
//! the first heartbeat window (`heartbeat × suspect_after`): a peer not
//! heard from yet is not reported down.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use orch_api::{GpuReport, Rejection, SloReport};
use orch_core::gpu::ReplicaKey;
use orch_core::slo::{RequestDelta, ScrapeOutcome, SloEngine};
use orch_core::supervise::{GroupPhase, OpKind, Supervisor, SupervisorEvent};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::event::{self, Scraped};
use crate::metrics::{self, Counters, MetricsSnapshot, PeerRow};
use crate::observe::ObserveSettings;
use crate::slo_scrape::{self, MetricsFetcher, ScrapeTarget};
use crate::slo_store::SloStore;

/// The longest the host's series wait for adopted replicas' first probes.
pub(super) const SETTLE_MAX: Duration = Duration::from_secs(10);

pub(super) struct Observer {
    /// When the observer started (the daemon's start).
    born: tokio::time::Instant,
    /// The host's state is known (see the module's doc): it is published.
    settled: bool,
    /// Peer series are published from this long after the start.
    peers_after: Duration,
    counters: Counters,
    publish: watch::Sender<Arc<MetricsSnapshot>>,
    /// Something changed since the last published snapshot.
    dirty: bool,
    slo: SloEngine,
    store: Arc<dyn SloStore>,
    fetcher: Arc<dyn MetricsFetcher>,
    scraping: Option<JoinHandle<()>>,
    scraped: event::Sender<Scraped>,
    settings: ObserveSettings,
    /// The commands whose work groups are doing.
    spans: crate::trace::CommandSpans,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer")
            .field("dirty", &self.dirty)
            .finish_non_exhaustive()
    }
}

/// What the observer keeps and reads from.
#[derive(Debug)]
pub(super) struct ObserveDeps {
    pub store: Arc<dyn SloStore>,
    pub fetcher: Arc<dyn MetricsFetcher>,
    pub scraped: event::Sender<Scraped>,
    pub settings: ObserveSettings,
}

/// The replica id the SLO engine keeps scrapes under.
fn replica_id(key: &ReplicaKey) -> String {
    format!("{}#{}", key.agent, key.replica)
}

impl Observer {
    /// Restores the SLO history from the store (a history that cannot be
    /// read is reported and started over) and measures `config`'s SLOs.
    pub(super) fn new(config: &orch_core::model::HostConfig, deps: ObserveDeps) -> Observer {
        let mut slo = match deps.store.load() {
            Ok(Some(state)) => SloEngine::restore(state).unwrap_or_else(|e| {
                tracing::warn!("the saved SLO history cannot be used ({e}); the SLOs start over");
                SloEngine::default()
            }),
            Ok(None) => SloEngine::default(),
            Err(e) => {
                tracing::warn!("{e}");
                SloEngine::default()
            }
        };
        slo.configure(SloEngine::slos_of(config));
        let (publish, _) = watch::channel(Arc::new(MetricsSnapshot::empty(
            &config.host.name,
            env!("CARGO_PKG_VERSION"),
        )));
        let peers_after = config
            .federation
            .as_ref()
            .map(|f| f.heartbeat.std() * f.suspect_after)
            .unwrap_or_default();
        Observer {
            born: tokio::time::Instant::now(),
            settled: false,
            peers_after,
            counters: Counters::default(),
            publish,
            dirty: true,
            slo,
            store: deps.store,
            fetcher: deps.fetcher,
            scraping: None,
            scraped: deps.scraped,
            settings: deps.settings,
            spans: Default::default(),
        }
    }

    /// The snapshots `/metrics` renders.
    pub(super) fn subscribe(&self) -> watch::Receiver<Arc<MetricsSnapshot>> {
        self.publish.subscribe()
    }

    pub(super) fn save(&self) {
        if let Err(e) = self.store.save(&self.slo.snapshot()) {
            tracing::warn!("SLO history not saved: {e}");
        }
    }

    /// One input handled, in `began..now`.
    pub(super) fn reconciled(&mut self, began: Instant) {
        self.counters.reconcile.observe(began.elapsed());
        self.dirty = true;
    }

    /// Counts what the supervisor reported.
    pub(super) fn saw(&mut self, events: &[SupervisorEvent]) {
        self.counters.record_events(events);
    }

    /// The work on `groups` from now on is `command`'s (its span).
    pub(super) fn commanded<'a>(
        &mut self,
        command: &tracing::Span,
        groups: impl IntoIterator<Item = &'a str>,
    ) {
        for g in groups {
            self.spans.open(g, command);
        }
    }

    /// Ends the commands' work on groups that settled, once this
    /// decision's actions are under way: ready or stopped, with nothing in
    /// flight, asked for or left to recreate (a group ready between two
    /// steps of a rolling recreate has not settled).
    pub(super) fn settle_commands(&mut self, sup: &Supervisor) {
        if self.spans.is_empty() {
            return;
        }
        let busy: BTreeSet<&str> = sup
            .replicas()
            .filter(|r| {
                r.op.is_some()
                    || r.restart_requested
                    || r.container.as_ref().is_some_and(|c| {
                        sup.config_hash(&r.key.agent)
                            .is_some_and(|h| h != c.config_hash)
                    })
            })
            .map(|r| r.group.as_str())
            .collect();
        let settled: Vec<String> = self
            .spans
            .groups()
            .filter(|g| {
                !busy.contains(g)
                    && matches!(sup.group_phase(g), GroupPhase::Ready | GroupPhase::Stopped)
            })
            .map(str::to_string)
            .collect();
        for g in settled {
            self.spans.close(&g);
        }
    }

    /// A failed state write.
    pub(super) fn state_write_failed(&mut self) {
        self.counters.state_write_failures += 1;
    }

    /// A health result's duration, for the histogram.
    pub(super) fn health(&mut self, sup: &Supervisor, key: &ReplicaKey, took: Duration) {
        if let Some(r) = sup.replica(key) {
            self.counters.record_health(&r.group, &key.agent, took);
        }
    }

    /// A probe that got no answer from a replica that should be serving
    /// (its group started, the replica wanted, its container running): bad
    /// events of the group's request SLIs (`SloEngine::record_unanswered`),
    /// the rate shared among the group's wanted replicas.
    pub(super) fn unanswered(
        &mut self,
        sup: &Supervisor,
        key: &ReplicaKey,
        interval: Duration,
        now_ms: u64,
    ) {
        let Some(r) = sup.replica(key) else { return };
        let wanted = sup
            .config()
            .agent(&key.agent)
            .is_some_and(|a| key.replica < a.replicas);
        if !sup.group_wanted(&r.group) || !wanted || !r.is_running() {
            return;
        }
        let replicas = sup
            .config()
            .group(&r.group)
            .map_or(0, |g| g.agents.iter().map(|a| u64::from(a.replicas)).sum());
        let unanswered = orch_core::slo::Unanswered {
            probes: 1,
            interval: interval.into(),
            replicas,
        };
        match self.slo.record_unanswered(now_ms, &r.group, unanswered) {
            Ok(_) => self.dirty = true,
            Err(e) => tracing::debug!("an unanswered probe not recorded: {e}"),
        }
    }

    /// The span of an operation: a child of the command whose work its
    /// group is doing, if any.
    pub(super) fn op_span(&self, sup: &Supervisor, key: &ReplicaKey, op: OpKind) -> tracing::Span {
        let group = sup.replica(key).map(|r| r.group.as_str()).unwrap_or("");
        crate::trace::op_span(key, group, op, self.spans.parent_of(group))
    }

    /// Publishes the snapshot of now if anything changed (or `always`:
    /// peers' heartbeat ages move on by themselves).
    pub(super) fn publish(
        &mut self,
        sup: &Supervisor,
        gpu: &GpuReport,
        cpu: &crate::cpu_use::CpuUse,
        peers: Option<(Vec<PeerRow>, metrics::StrangerRows)>,
        now_ms: u64,
    ) {
        if !self.settle(sup) {
            return;
        }
        let peers = peers.filter(|_| self.born.elapsed() >= self.peers_after);
        if !self.dirty && peers.is_none() {
            return;
        }
        self.dirty = false;
        let slos = metrics::slo_rows(&self.slo.report(now_ms));
        let mut snap = metrics::snapshot(sup, &self.counters, slos, gpu, env!("CARGO_PKG_VERSION"));
        snap.cpu = metrics::cpu_rows(sup, cpu);
        if let Some((peers, strangers)) = peers {
            snap.peers = peers;
            snap.strangers = strangers;
        }
        self.publish.send_replace(Arc::new(snap));
    }

    /// One availability sample per group with an availability objective:
    /// how many of its wanted, required replicas are healthy.
    pub(super) fn sample(&mut self, sup: &Supervisor, now_ms: u64) {
        if !self.settle(sup) {
            return;
        }
        for (group, healthy, wanted) in availability(sup) {
            let sample = orch_core::slo::AvailabilitySample {
                wanted,
                healthy,
                excused: 0,
            };
            if let Err(e) = self.slo.record_availability(now_ms, &group, sample) {
                tracing::debug!("availability sample not recorded: {e}");
            }
        }
        self.dirty = true;
    }

    /// Whether the host's state is known well enough to tell anyone
    /// (`/metrics`, peers); see `settle`.
    pub(super) fn settled(&mut self, sup: &Supervisor) -> bool {
        self.settle(sup)
    }

    /// Whether the host's state is known well enough to publish: Docker
    /// listed, and every running replica with a probe probed once (or
    /// [`SETTLE_MAX`] passed). Once settled, always settled.
    fn settle(&mut self, sup: &Supervisor) -> bool {
        if !self.settled {
            self.settled =
                self.born.elapsed() >= SETTLE_MAX || (sup.docker_up() && first_probes_done(sup));
        }
        self.settled
    }

    /// Starts a round of agent scrapes, unless one is still running.
    pub(super) fn scrape(&mut self, sup: &Supervisor) {
        if self.scraping.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let targets = scrape_targets(sup);
        // Scrapes of replicas that stopped running are baselines no more.
        let running: BTreeSet<(String, String)> = targets
            .iter()
            .map(|t| (t.group.clone(), replica_id(&t.key)))
            .collect();
        self.slo
            .retain_replicas(|g, r| running.contains(&(g.to_string(), r.to_string())));
        if targets.is_empty() {
            return;
        }
        self.scraping = Some(tokio::spawn(slo_scrape::round(
            targets,
            self.fetcher.clone(),
            self.settings.scrape_timeout,
            self.scraped.clone(),
        )));
    }

    /// One agent's scrape.
    /// One agent's scrape; the requests it counted since the last one.
    pub(super) fn scraped(&mut self, s: Scraped, now_ms: u64) -> Option<RequestDelta> {
        let scrape = match s.result {
            Ok(scrape) => scrape,
            Err(e) => {
                tracing::debug!(replica = %s.key, "agent metrics not read: {e}");
                return None;
            }
        };
        self.dirty = true;
        match self
            .slo
            .record_scrape(now_ms, &s.group, &replica_id(&s.key), scrape)
        {
            Ok(ScrapeOutcome::Counted { restarted, delta }) => {
                if restarted {
                    tracing::debug!(replica = %s.key, "agent counters restarted");
                }
                Some(delta)
            }
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(replica = %s.key, "scrape not recorded: {e}");
                None
            }
        }
    }

    /// A group's latency burn rate over the shortest window, when it has a
    /// latency SLO with events in that window.
    pub(super) fn latency_burn(&self, group: &str, now_ms: u64) -> Option<f64> {
        self.slo
            .group_report(now_ms, group)?
            .sli(orch_core::slo::Sli::Latency)?
            .windows
            .first()?
            .burn_rate
    }

    /// A (re)loaded config's SLOs.
    pub(super) fn configure(&mut self, config: &orch_core::model::HostConfig) {
        let changed = self.slo.configure(SloEngine::slos_of(config));
        if !changed.dropped.is_empty() {
            tracing::info!(dropped = ?changed.dropped, "SLO series removed by the new config");
        }
        self.dirty = true;
    }

    /// `slo [GROUP]`.
    pub(super) fn slo_report(
        &self,
        sup: &Supervisor,
        group: Option<&str>,
        now_ms: u64,
    ) -> Result<SloReport, Rejection> {
        let reports = match group {
            None => self.slo.report(now_ms),
            Some(g) => {
                let Some(cfg) = sup.config().group(g) else {
                    return Err(crate::views::unknown_group(sup, g));
                };
                if cfg.slo.is_none() {
                    return Err(Rejection::NoSlo {
                        group: g.to_string(),
                    });
                }
                self.slo.group_report(now_ms, g).into_iter().collect()
            }
        };
        Ok(orch_api::convert::slo_report(
            &sup.config().host.name,
            &reports,
        ))
    }
}

/// `(group, healthy, wanted)` of every wanted group with an availability
/// objective, counting its required replicas.
fn availability(sup: &Supervisor) -> Vec<(String, u64, u64)> {
    let mut samples = Vec::new();
    for g in &sup.config().groups {
        let Some(slo) = &g.slo else { continue };
        if slo.availability.is_none() || !sup.group_wanted(&g.name) {
            continue;
        }
        let (mut wanted, mut healthy) = (0u64, 0u64);
        for a in g.agents.iter().filter(|a| a.required) {
            for i in 0..a.replicas {
                wanted += 1;
                let key = ReplicaKey::new(&a.name, i);
                if sup.replica(&key).is_some_and(|r| sup.replica_healthy(r)) {
                    healthy += 1;
                }
            }
        }
        samples.push((g.name.clone(), healthy, wanted));
    }
    samples
}

/// The running replicas of groups with a request SLO, and the port
/// their metrics are served on (the HTTP health port, else the first
/// port they listen on).
fn scrape_targets(sup: &Supervisor) -> Vec<ScrapeTarget> {
    let gauges = super::autoscale::Autoscaling::gauges(sup);
    let config = sup.config();
    let network = config.runtime.network.clone();
    let measured: BTreeSet<&str> = config
        .groups
        .iter()
        .filter(|g| {
            g.slo
                .as_ref()
                .is_some_and(|s| s.latency_p99.is_some() || s.error_rate.is_some())
        })
        .map(|g| g.name.as_str())
        .collect();
    sup.replicas()
        .filter(|r| {
            (measured.contains(r.group.as_str()) || gauges.contains_key(&r.key.agent))
                && r.is_running()
        })
        .filter_map(|r| {
            let agent = config.agent(&r.key.agent)?;
            let port = match &agent.health.probe {
                orch_core::model::Probe::Http { port, .. } => Some(*port),
                _ => orch_core::container::listen_ports(agent).first().copied(),
            }?;
            Some(ScrapeTarget {
                key: r.key.clone(),
                group: r.group.clone(),
                container: r.container.as_ref()?.id.clone(),
                network: network.clone(),
                port,
                gauge: gauges.get(&r.key.agent).cloned(),
            })
        })
        .collect()
}

/// Every running replica with a probe has had a first result since the
/// daemon started (an adopted one is `unknown` until then).
fn first_probes_done(sup: &Supervisor) -> bool {
    sup.replicas().all(|r| {
        let probed = sup
            .config()
            .agent(&r.key.agent)
            .is_some_and(|a| a.health.probe != orch_core::model::Probe::None);
        !(r.is_running() && probed && r.health == orch_core::supervise::Health::Unknown)
    })
}
