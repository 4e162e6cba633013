//! The owner's side of metrics and SLOs: the counters it keeps, the SLO
//! engine it feeds (availability samples from the supervisor's state,
//! request figures from agent scrapes), the snapshots it publishes for
//! `/metrics`, and the SLO history it saves. Everything here runs on the
//! owner task; fetching agent metrics runs on a task of its own.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use orch_api::{ApiError, Response};
use orch_core::slo::{ScrapeOutcome, SloEngine};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::Owner;
use crate::metrics::{self, Counters, Snapshot};
use crate::observe::{ObserveSettings, Tick};
use crate::slo_scrape::{self, MetricsFetcher, ScrapeTarget};
use crate::slo_store::SloStore;
use crate::views;

/// What the owner keeps for metrics and SLOs.
pub struct Observer {
    pub(super) counters: Counters,
    publish: watch::Sender<Arc<Snapshot>>,
    /// Something changed since the last published snapshot.
    pub(super) dirty: bool,
    pub(super) slo: SloEngine,
    store: Arc<dyn SloStore>,
    fetcher: Arc<dyn MetricsFetcher>,
    scraping: Option<JoinHandle<()>>,
    settings: ObserveSettings,
    /// Open `group_start` spans.
    spans: crate::trace::GroupSpans,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer")
            .field("dirty", &self.dirty)
            .finish_non_exhaustive()
    }
}

impl Observer {
    /// Restores the SLO history from `store` (a history that cannot be
    /// read is reported and started over) and measures `config`'s SLOs.
    pub fn new(
        config: &orch_core::model::HostConfig,
        store: Arc<dyn SloStore>,
        fetcher: Arc<dyn MetricsFetcher>,
        settings: ObserveSettings,
    ) -> Observer {
        let mut slo = match store.load() {
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
        let (publish, _) = watch::channel(Arc::new(Snapshot::empty(
            &config.host.name,
            env!("CARGO_PKG_VERSION"),
        )));
        Observer {
            counters: Counters::default(),
            publish,
            dirty: true,
            slo,
            store,
            fetcher,
            scraping: None,
            settings,
            spans: Default::default(),
        }
    }

    /// The snapshots `/metrics` renders.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.publish.subscribe()
    }

    pub(super) fn save(&self) {
        if let Err(e) = self.store.save(&self.slo.snapshot()) {
            tracing::warn!("SLO history not saved: {e}");
        }
    }

    pub(super) fn reconciled(&mut self, began: Instant) {
        self.counters.reconcile.observe(began.elapsed());
        self.dirty = true;
    }
}

/// The replica id the SLO engine keeps scrapes under.
fn replica_id(key: &orch_core::gpu::ReplicaKey) -> String {
    format!("{}#{}", key.agent, key.replica)
}

impl Owner {
    pub(super) fn on_observe(&mut self, tick: Tick) {
        match tick {
            Tick::Publish => self.publish_metrics(),
            Tick::Sample => self.sample_availability(),
            Tick::Scrape => self.scrape_agents(),
            Tick::Save => self.obs.save(),
            Tick::Scraped { target, result } => self.scraped(*target, *result),
        }
    }

    /// A health result's duration, for the histogram.
    pub(super) fn observe_health(&mut self, key: &orch_core::gpu::ReplicaKey, took: Duration) {
        if let Some(r) = self.sup.replica(key) {
            let group = r.group.clone();
            self.obs.counters.record_health(&group, &key.agent, took);
        }
    }

    /// The snapshot of now, published if anything changed.
    fn publish_metrics(&mut self) {
        // Peers' heartbeat ages move on by themselves.
        if !self.obs.dirty && self.deps.bus.is_none() {
            return;
        }
        self.obs.dirty = false;
        let now = self.deps.clock.unix_ms();
        let slos = metrics::slo_rows(&self.obs.slo.report(now));
        let gpu = views::gpu(&self.sup, &self.facts());
        let mut snap = metrics::snapshot(
            &self.sup,
            &self.obs.counters,
            slos,
            &gpu,
            env!("CARGO_PKG_VERSION"),
        );
        if let Some(bus) = &self.deps.bus {
            snap.peers = bus
                .peers()
                .into_iter()
                .map(|p| metrics::PeerRow {
                    decode_errors: p.decode_errors(),
                    state: p.state.label(),
                    heartbeat_age_seconds: p.last_heartbeat_age.map(|d| d.as_secs_f64()),
                    messages_in: p.messages_in,
                    messages_out: p.messages_out,
                    peer: p.name,
                })
                .collect();
        }
        self.obs.publish.send_replace(Arc::new(snap));
    }

    /// One availability sample per group with an availability objective:
    /// how many of its wanted, required replicas are healthy.
    fn sample_availability(&mut self) {
        let now = self.deps.clock.unix_ms();
        let config = self.sup.config();
        let mut samples = Vec::new();
        for g in &config.groups {
            let Some(slo) = &g.slo else { continue };
            if slo.availability.is_none() || !self.sup.group_wanted(&g.name) {
                continue;
            }
            let (mut wanted, mut healthy) = (0u64, 0u64);
            for a in g.agents.iter().filter(|a| a.required) {
                for i in 0..a.replicas {
                    wanted += 1;
                    let key = orch_core::gpu::ReplicaKey::new(&a.name, i);
                    if self
                        .sup
                        .replica(&key)
                        .is_some_and(|r| self.sup.replica_healthy(r))
                    {
                        healthy += 1;
                    }
                }
            }
            samples.push((g.name.clone(), healthy, wanted));
        }
        for (group, healthy, wanted) in samples {
            if let Err(e) = self
                .obs
                .slo
                .record_availability(now, &group, healthy, wanted)
            {
                tracing::debug!("availability sample not recorded: {e}");
            }
        }
        self.obs.dirty = true;
    }

    /// The running replicas of groups with a request SLO, and the port
    /// their metrics are served on (the HTTP health port, else the first
    /// port they listen on).
    fn scrape_targets(&self) -> Vec<ScrapeTarget> {
        let config = self.sup.config();
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
        self.sup
            .replicas()
            .filter(|r| measured.contains(r.group.as_str()) && r.is_running())
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
                })
            })
            .collect()
    }

    fn scrape_agents(&mut self) {
        if self.obs.scraping.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let targets = self.scrape_targets();
        // Scrapes of replicas that stopped running are baselines no more.
        let running: BTreeSet<(String, String)> = targets
            .iter()
            .map(|t| (t.group.clone(), replica_id(&t.key)))
            .collect();
        self.obs
            .slo
            .retain_replicas(|g, r| running.contains(&(g.to_string(), r.to_string())));
        if targets.is_empty() {
            return;
        }
        self.obs.scraping = Some(tokio::spawn(slo_scrape::round(
            targets,
            self.obs.fetcher.clone(),
            self.obs.settings.scrape_timeout,
            self.tx.clone(),
        )));
    }

    fn scraped(
        &mut self,
        target: ScrapeTarget,
        result: Result<orch_core::slo::AgentScrape, String>,
    ) {
        let scrape = match result {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(replica = %target.key, "agent metrics not read: {e}");
                return;
            }
        };
        let now = self.deps.clock.unix_ms();
        match self
            .obs
            .slo
            .record_scrape(now, &target.group, &replica_id(&target.key), scrape)
        {
            Ok(ScrapeOutcome::Counted {
                restarted: true, ..
            }) => {
                tracing::debug!(replica = %target.key, "agent counters restarted");
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(replica = %target.key, "scrape not recorded: {e}"),
        }
        self.obs.dirty = true;
    }

    /// Keeps a group start's span open until the group is ready or
    /// stopping; a group starting under a `group_start` span (the
    /// request's) gets it.
    pub(super) fn trace_groups(&mut self, events: &[orch_core::supervise::SupervisorEvent]) {
        use orch_core::supervise::SupervisorEvent as EventKind;
        for e in events {
            match e {
                EventKind::GroupStarting { group } => {
                    let current = tracing::Span::current();
                    if current
                        .metadata()
                        .is_some_and(|m| m.name() == "group_start")
                    {
                        self.obs.spans.open(group, current);
                    }
                }
                EventKind::GroupReady { group }
                | EventKind::GroupStopping { group }
                | EventKind::GroupStopped { group } => self.obs.spans.close(group),
                _ => {}
            }
        }
    }

    /// The span of an operation: a launch or start of a replica of a
    /// group being started is an `agent_start` in that group's start.
    pub(super) fn op_span(
        &self,
        key: &orch_core::gpu::ReplicaKey,
        op: orch_core::supervise::OpKind,
    ) -> tracing::Span {
        use orch_core::supervise::OpKind;
        if !matches!(
            op,
            OpKind::Launch | OpKind::Start | OpKind::Create | OpKind::Recreate
        ) {
            return tracing::Span::none();
        }
        let group = self
            .sup
            .replica(key)
            .map(|r| r.group.as_str())
            .unwrap_or("");
        match self.obs.spans.parent_of(group) {
            Some(parent) => {
                tracing::info_span!(parent: parent, "agent_start", replica = %key, group = group, op = ?op)
            }
            None => {
                tracing::info_span!(parent: None, "agent_start", replica = %key, group = group, op = ?op)
            }
        }
    }

    /// A (re)loaded config's SLOs.
    pub(super) fn configure_slos(&mut self) {
        let changed = self
            .obs
            .slo
            .configure(SloEngine::slos_of(self.sup.config()));
        if !changed.dropped.is_empty() {
            tracing::info!(dropped = ?changed.dropped, "SLO series removed by the new config");
        }
        self.obs.dirty = true;
    }

    /// `slo [GROUP]`.
    pub(super) fn slo_report(&self, group: Option<&str>) -> Result<Response, ApiError> {
        let now = self.deps.clock.unix_ms();
        let reports = match group {
            None => self.obs.slo.report(now),
            Some(g) => {
                let Some(cfg) = self.sup.config().group(g) else {
                    return Err(views::unknown_group(&self.sup, g));
                };
                if cfg.slo.is_none() {
                    return Err(ApiError::new(
                        orch_api::ErrorCode::NotFound,
                        format!("group `{g}` has no `slo:` in its config"),
                    ));
                }
                self.obs.slo.group_report(now, g).into_iter().collect()
            }
        };
        Ok(Response::Slo(orch_api::convert::slo_report(
            &self.sup.config().host.name,
            &reports,
        )))
    }
}
