//! The Prometheus text format 0.0.4 of a [`MetricsSnapshot`], through the
//! `prometheus` crate.
//!
//! No live registry: the values are a snapshot the owner published, so
//! [`SnapshotCollector`] is a custom [`Collector`] that builds the metric
//! families from one snapshot at scrape time, and the crate's
//! [`TextEncoder`] writes the format and its escaping. Nothing is updated in
//! place and nothing is locked on the owner's path. Every family is declared
//! once, in [`FAMILIES`] (name, type, help); its samples are added by name.
//! A family with no sample is left out (the encoder refuses an empty one).
//! `promtool check metrics` on a live daemon's output is part of the tests.

use std::sync::LazyLock;

use prometheus::TextEncoder;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram as ProtoHistogram, LabelPair, Metric, MetricFamily,
    MetricType,
};

use super::{AGENT_STATES, GpuRow, Histogram, MetricsSnapshot};

/// The `Content-Type` of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const COUNTER: MetricType = MetricType::COUNTER;
const GAUGE: MetricType = MetricType::GAUGE;
const HISTOGRAM: MetricType = MetricType::HISTOGRAM;

/// Every family `/metrics` can carry, in the order it is written: name,
/// type, help. The names and labels are the contract of
/// `docs/observability.md`.
pub const FAMILIES: &[(&str, MetricType, &str)] = &[
    // Daemon.
    (
        "orchestrator_build_info",
        GAUGE,
        "Build of the running daemon (always 1).",
    ),
    (
        "orchestrator_reconcile_duration_seconds",
        HISTOGRAM,
        "Time the owner task spends handling one input (decide and dispatch).",
    ),
    (
        "orchestrator_state_write_failures_total",
        COUNTER,
        "Failed writes of the desired-state file.",
    ),
    (
        "orchestrator_config_generation",
        GAUGE,
        "The generation of the config the daemon runs (each apply, reload, rollback or undo adds one).",
    ),
    (
        "orchestrator_rollout_phase",
        GAUGE,
        "1 for the phase of the last rollout (progressing, paused, rolling_back, completed, superseded), 0 for the others; absent before the first rollout.",
    ),
    // Agents.
    (
        "orchestrator_agent_up",
        GAUGE,
        "1 when the replica runs and is healthy (or runs with no probe), else 0.",
    ),
    (
        "orchestrator_agent_state",
        GAUGE,
        "1 for the replica's current state, 0 for the others.",
    ),
    (
        "orchestrator_agent_crashlooping",
        GAUGE,
        "1 while the replica is crash-looping.",
    ),
    (
        "orchestrator_agent_restarts_total",
        COUNTER,
        "Restarts of the replica done by the supervisor.",
    ),
    (
        "orchestrator_agent_failures_total",
        COUNTER,
        "Failures of the agent, by reason.",
    ),
    (
        "orchestrator_agent_health_check_duration_seconds",
        HISTOGRAM,
        "Duration of the agent's health checks.",
    ),
    (
        "orchestrator_agent_replicas",
        GAUGE,
        "Replicas of the agent: wanted (after scale and autoscale), running, and the config file's count.",
    ),
    (
        "orchestrator_autoscale_decisions_total",
        COUNTER,
        "Replica count changes made by the agent's autoscaler, by direction and signal.",
    ),
    // Groups.
    (
        "orchestrator_group_started",
        GAUGE,
        "1 when the group is started (desired state).",
    ),
    (
        "orchestrator_group_ready",
        GAUGE,
        "1 when the group is ready (every required agent healthy).",
    ),
    (
        "orchestrator_group_agents",
        GAUGE,
        "Replicas of the group: wanted, running, healthy.",
    ),
    // GPUs.
    (
        "orchestrator_gpu_info",
        GAUGE,
        "One series per GPU (always 1).",
    ),
    (
        "orchestrator_gpu_memory_total_bytes",
        GAUGE,
        "Memory of the GPU.",
    ),
    (
        "orchestrator_gpu_memory_used_bytes",
        GAUGE,
        "Memory in use on the GPU.",
    ),
    (
        "orchestrator_gpu_utilization_ratio",
        GAUGE,
        "GPU utilisation (0..1).",
    ),
    (
        "orchestrator_gpu_temperature_celsius",
        GAUGE,
        "GPU temperature.",
    ),
    ("orchestrator_gpu_power_watts", GAUGE, "GPU power draw."),
    (
        "orchestrator_gpu_slice_info",
        GAUGE,
        "One series per GPU slice held, naming its holder (always 1).",
    ),
    (
        "orchestrator_gpu_slice_memory_bytes",
        GAUGE,
        "Memory promised to each GPU slice held.",
    ),
    (
        "orchestrator_gpu_mps_free_memory_bytes",
        GAUGE,
        "GPU memory not yet promised to MPS clients.",
    ),
    (
        "orchestrator_gpu_mps_free_compute_ratio",
        GAUGE,
        "Compute share not yet promised to MPS clients (0..1).",
    ),
    (
        "orchestrator_gpu_mig_free_memory_slices",
        GAUGE,
        "MIG memory slices not used by any instance.",
    ),
    (
        "orchestrator_gpu_unowned_memory_bytes",
        GAUGE,
        "GPU memory held by processes that are none of this host's agents.",
    ),
    (
        "orchestrator_agent_gpu_memory_used_bytes",
        GAUGE,
        "GPU memory the replica's processes hold on the GPU.",
    ),
    (
        "orchestrator_agent_gpu_memory_limit_bytes",
        GAUGE,
        "GPU memory the replica's slice holds on the GPU (MIG profile, MPS limit, whole GPU).",
    ),
    (
        "orchestrator_agent_gpu_utilization_ratio",
        GAUGE,
        "Share of the GPU the replica kept busy (0..1): per process where NVML gives it, else the GPU's.",
    ),
    (
        "orchestrator_agent_cpu_seconds_total",
        COUNTER,
        "CPU time the replica's container has used, in seconds, from its cgroup (resets with a new container).",
    ),
    // Federation: samples only once the daemon has peers.
    ("orchestrator_peer_up", GAUGE, "1 while the peer is alive."),
    (
        "orchestrator_peer_state",
        GAUGE,
        "1 for the peer's current state, 0 for the others.",
    ),
    (
        "orchestrator_peer_heartbeat_age_seconds",
        GAUGE,
        "Seconds since the peer's last heartbeat.",
    ),
    (
        "orchestrator_federation_messages_total",
        COUNTER,
        "Federation messages, by direction.",
    ),
    (
        "orchestrator_federation_decode_errors_total",
        COUNTER,
        "Federation messages that could not be decoded.",
    ),
    (
        "orchestrator_federation_refused_total",
        COUNTER,
        "Connections, messages and requests this daemon refused, by peer (empty: no configured peer) and reason.",
    ),
    // SLOs.
    (
        "orchestrator_slo_objective_ratio",
        GAUGE,
        "The SLO's objective: the share of good events aimed for.",
    ),
    (
        "orchestrator_slo_events_total",
        COUNTER,
        "Every SLI event (good and bad).",
    ),
    ("orchestrator_slo_errors_total", COUNTER, "Bad SLI events."),
    (
        "orchestrator_slo_sli_error_ratio",
        GAUGE,
        "Bad over all SLI events in each window, as the daemon counts them.",
    ),
    (
        "orchestrator_slo_burn_rate",
        GAUGE,
        "Error ratio over the error budget in each window (1 spends the budget exactly over the SLO window).",
    ),
    (
        "orchestrator_slo_error_budget_remaining_ratio",
        GAUGE,
        "Share of the error budget left over the SLO window (negative once overspent).",
    ),
];

/// The families of [`FAMILIES`], by position.
#[derive(Debug, Clone, Copy)]
enum F {
    BuildInfo,
    ReconcileDurationSeconds,
    StateWriteFailuresTotal,
    ConfigGeneration,
    RolloutPhase,
    AgentUp,
    AgentState,
    AgentCrashlooping,
    AgentRestartsTotal,
    AgentFailuresTotal,
    AgentHealthCheckDurationSeconds,
    AgentReplicas,
    AutoscaleDecisionsTotal,
    GroupStarted,
    GroupReady,
    GroupAgents,
    GpuInfo,
    GpuMemoryTotalBytes,
    GpuMemoryUsedBytes,
    GpuUtilizationRatio,
    GpuTemperatureCelsius,
    GpuPowerWatts,
    GpuSliceInfo,
    GpuSliceMemoryBytes,
    GpuMpsFreeMemoryBytes,
    GpuMpsFreeComputeRatio,
    GpuMigFreeMemorySlices,
    GpuUnownedMemoryBytes,
    AgentGpuMemoryUsedBytes,
    AgentGpuMemoryLimitBytes,
    AgentGpuUtilizationRatio,
    AgentCpuSecondsTotal,
    PeerUp,
    PeerState,
    PeerHeartbeatAgeSeconds,
    FederationMessagesTotal,
    FederationDecodeErrorsTotal,
    FederationRefusedTotal,
    SloObjectiveRatio,
    SloEventsTotal,
    SloErrorsTotal,
    SloSliErrorRatio,
    SloBurnRate,
    SloErrorBudgetRemainingRatio,
}

/// The descriptors of [`FAMILIES`], for [`Collector::desc`]. Variable
/// labels are not declared: the families are built whole at each collect.
static DESCS: LazyLock<Vec<Desc>> = LazyLock::new(|| {
    FAMILIES
        .iter()
        .filter_map(|(name, _, help)| {
            Desc::new(
                (*name).to_string(),
                (*help).to_string(),
                vec![],
                Default::default(),
            )
            .ok()
        })
        .collect()
});

/// The metric families of one snapshot, built when collected.
pub struct SnapshotCollector<'a> {
    snapshot: &'a MetricsSnapshot,
}

impl<'a> SnapshotCollector<'a> {
    pub fn new(snapshot: &'a MetricsSnapshot) -> Self {
        SnapshotCollector { snapshot }
    }
}

impl Collector for SnapshotCollector<'_> {
    fn desc(&self) -> Vec<&Desc> {
        DESCS.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        families(self.snapshot)
    }
}

/// The snapshot as text.
pub fn render(s: &MetricsSnapshot) -> String {
    let mut out = String::with_capacity(64 * 1024);
    render_into(s, &mut out);
    out
}

/// Appends the snapshot's text to `out`.
pub fn render_into(s: &MetricsSnapshot, out: &mut String) {
    let families = SnapshotCollector::new(s).collect();
    // Every family has a name and at least one sample (see `Builder::finish`),
    // the only two things the encoder checks, and writing to a String cannot
    // fail: there is no error to report.
    let _ = TextEncoder::new().encode_utf8(&families, out);
}

/// Families under construction, one per entry of [`FAMILIES`].
struct Builder {
    host: String,
    families: Vec<MetricFamily>,
}

impl Builder {
    fn new(host: &str) -> Builder {
        let families = FAMILIES
            .iter()
            .map(|(name, kind, help)| {
                let mut f = MetricFamily::default();
                f.set_name((*name).to_string());
                f.set_help((*help).to_string());
                f.set_field_type(*kind);
                f
            })
            .collect();
        Builder {
            host: host.to_string(),
            families,
        }
    }

    fn family(&mut self, f: F) -> &mut MetricFamily {
        &mut self.families[f as usize]
    }

    fn metric(&self, labels: &[(&str, &str)]) -> Metric {
        let mut pairs = Vec::with_capacity(labels.len() + 1);
        pairs.push(pair("host", &self.host));
        pairs.extend(labels.iter().map(|(k, v)| pair(k, v)));
        let mut m = Metric::default();
        m.set_label(pairs);
        m
    }

    fn gauge(&mut self, name: F, labels: &[(&str, &str)], v: f64) {
        let mut m = self.metric(labels);
        let mut g = Gauge::default();
        g.set_value(v);
        m.set_gauge(g);
        self.family(name).mut_metric().push(m);
    }

    fn flag(&mut self, name: F, labels: &[(&str, &str)], v: bool) {
        self.gauge(name, labels, if v { 1.0 } else { 0.0 });
    }

    fn counter(&mut self, name: F, labels: &[(&str, &str)], v: u64) {
        let mut m = self.metric(labels);
        let mut c = Counter::default();
        c.set_value(v as f64);
        m.set_counter(c);
        self.family(name).mut_metric().push(m);
    }

    fn counter_f64(&mut self, name: F, labels: &[(&str, &str)], v: f64) {
        let mut m = self.metric(labels);
        let mut c = Counter::default();
        c.set_value(v);
        m.set_counter(c);
        self.family(name).mut_metric().push(m);
    }

    fn histogram(&mut self, name: F, labels: &[(&str, &str)], h: &Histogram) {
        let mut m = self.metric(labels);
        let mut p = ProtoHistogram::default();
        p.set_sample_count(h.count());
        p.set_sample_sum(h.sum());
        p.set_bucket(
            h.cumulative()
                .map(|(bound, n)| {
                    let mut b = Bucket::default();
                    b.set_upper_bound(bound);
                    b.set_cumulative_count(n);
                    b
                })
                .collect(),
        );
        m.set_histogram(p);
        self.family(name).mut_metric().push(m);
    }

    /// The families that have samples, in [`FAMILIES`] order.
    fn finish(self) -> Vec<MetricFamily> {
        self.families
            .into_iter()
            .filter(|f| !f.get_metric().is_empty())
            .collect()
    }
}

fn pair(name: &str, value: &str) -> LabelPair {
    let mut p = LabelPair::default();
    p.set_name(name.to_string());
    p.set_value(value.to_string());
    p
}

/// Every family of the snapshot.
pub fn families(s: &MetricsSnapshot) -> Vec<MetricFamily> {
    let mut b = Builder::new(&s.host);

    // Daemon.
    b.gauge(F::BuildInfo, &[("version", &s.version)], 1.0);
    b.histogram(F::ReconcileDurationSeconds, &[], &s.reconcile);
    b.counter(F::StateWriteFailuresTotal, &[], s.state_write_failures);
    b.gauge(F::ConfigGeneration, &[], s.generation as f64);
    if let Some((generation, phase)) = s.rollout {
        let generation = generation.to_string();
        for p in orch_api::rollout::RolloutPhase::ALL {
            b.flag(
                F::RolloutPhase,
                &[("phase", p.label()), ("generation", &generation)],
                p == phase,
            );
        }
    }

    // Agents.
    for r in &s.replicas {
        let replica = r.replica.to_string();
        let l = [
            ("group", r.group.as_str()),
            ("agent", &r.agent),
            ("replica", &replica),
        ];
        b.flag(F::AgentUp, &l, r.up);
        for state in AGENT_STATES {
            let l = [l[0], l[1], l[2], ("state", state)];
            b.flag(F::AgentState, &l, r.state == state);
        }
        b.flag(F::AgentCrashlooping, &l, r.crashlooping);
        b.counter(F::AgentRestartsTotal, &l, r.restarts);
    }
    for (group, agent, reason, n) in &s.failures {
        let l = [
            ("group", group.as_str()),
            ("agent", agent),
            ("reason", reason),
        ];
        b.counter(F::AgentFailuresTotal, &l, *n);
    }
    for (group, agent, h) in &s.health {
        let l = [("group", group.as_str()), ("agent", agent)];
        b.histogram(F::AgentHealthCheckDurationSeconds, &l, h);
    }
    for a in &s.agents {
        for (state, n) in [
            ("wanted", a.wanted),
            ("running", a.running),
            ("file", a.file),
        ] {
            let l = [
                ("group", a.group.as_str()),
                ("agent", &a.agent),
                ("state", state),
            ];
            b.gauge(F::AgentReplicas, &l, f64::from(n));
        }
    }
    for ((group, agent, direction, signal), n) in &s.autoscale {
        let l = [
            ("group", group.as_str()),
            ("agent", agent),
            ("direction", direction),
            ("signal", signal),
        ];
        b.counter(F::AutoscaleDecisionsTotal, &l, *n);
    }

    // Groups.
    for g in &s.groups {
        let l = [("group", g.group.as_str())];
        b.flag(F::GroupStarted, &l, g.started);
        b.flag(F::GroupReady, &l, g.ready);
        for (state, n) in [
            ("wanted", g.wanted),
            ("running", g.running),
            ("healthy", g.healthy),
        ] {
            let l = [("group", g.group.as_str()), ("state", state)];
            b.gauge(F::GroupAgents, &l, n as f64);
        }
    }

    // GPUs.
    type GpuValue = fn(&GpuRow) -> Option<f64>;
    let per_gpu: [(F, GpuValue); 5] = [
        (F::GpuMemoryTotalBytes, |g| {
            Some(g.memory_total_bytes as f64)
        }),
        (F::GpuMemoryUsedBytes, |g| {
            g.telemetry.map(|t| t.memory_used_bytes as f64)
        }),
        (F::GpuUtilizationRatio, |g| {
            g.telemetry
                .map(|t| f64::from(t.utilization_gpu_basis_points) / 10_000.0)
        }),
        (F::GpuTemperatureCelsius, |g| {
            g.telemetry.map(|t| f64::from(t.temperature_celsius))
        }),
        (F::GpuPowerWatts, |g| {
            g.telemetry.map(|t| f64::from(t.power_mw) / 1000.0)
        }),
    ];
    for g in &s.gpus {
        let index = g.index.to_string();
        let l = [
            ("gpu", index.as_str()),
            ("uuid", &g.uuid),
            ("name", &g.name),
            ("mig", g.mig),
        ];
        b.gauge(F::GpuInfo, &l, 1.0);
        let l = [("gpu", index.as_str()), ("uuid", &g.uuid)];
        for (name, value) in per_gpu {
            if let Some(v) = value(g) {
                b.gauge(name, &l, v);
            }
        }
        if let Some((memory, compute)) = g.mps_free {
            b.gauge(F::GpuMpsFreeMemoryBytes, &l, memory as f64);
            b.gauge(F::GpuMpsFreeComputeRatio, &l, compute);
        }
        if let Some(n) = g.mig_free_slices {
            b.gauge(F::GpuMigFreeMemorySlices, &l, f64::from(n));
        }
        b.gauge(F::GpuUnownedMemoryBytes, &l, g.unowned_memory_bytes as f64);
    }
    for u in &s.gpu_use {
        let gpu = u.gpu.to_string();
        let replica = u.replica.to_string();
        let l = [
            ("group", u.group.as_str()),
            ("agent", &u.agent),
            ("replica", &replica),
            ("gpu", &gpu),
        ];
        b.gauge(F::AgentGpuMemoryUsedBytes, &l, u.memory_used_bytes as f64);
        if let Some(m) = u.memory_limit_bytes {
            b.gauge(F::AgentGpuMemoryLimitBytes, &l, m as f64);
        }
        if let Some(bp) = u.utilization_basis_points {
            b.gauge(F::AgentGpuUtilizationRatio, &l, f64::from(bp) / 10_000.0);
        }
    }
    for c in &s.cpu {
        let replica = c.replica.to_string();
        let l = [
            ("group", c.group.as_str()),
            ("agent", &c.agent),
            ("replica", &replica),
        ];
        b.counter_f64(F::AgentCpuSecondsTotal, &l, c.used_seconds);
    }
    for sl in &s.slices {
        let gpu = sl.gpu.to_string();
        let replica = sl.replica.to_string();
        let l = [
            ("gpu", gpu.as_str()),
            ("uuid", &sl.uuid),
            ("kind", sl.kind),
            ("profile", &sl.profile),
            ("group", &sl.group),
            ("agent", &sl.agent),
            ("replica", &replica),
        ];
        b.gauge(F::GpuSliceInfo, &l, 1.0);
        if let Some(m) = sl.memory_bytes {
            let l = [l[0], l[1], l[2], l[4], l[5], l[6]];
            b.gauge(F::GpuSliceMemoryBytes, &l, m as f64);
        }
    }

    // Federation.
    for p in &s.peers {
        let l = [("peer", p.peer.as_str())];
        b.flag(F::PeerUp, &l, p.state == "alive");
        for state in ["unknown", "alive", "suspect", "down"] {
            let l = [("peer", p.peer.as_str()), ("state", state)];
            b.flag(F::PeerState, &l, p.state == state);
        }
        if let Some(age) = p.heartbeat_age_seconds {
            b.gauge(F::PeerHeartbeatAgeSeconds, &l, age);
        }
        for (direction, n) in [("in", p.messages_in), ("out", p.messages_out)] {
            let l = [("peer", p.peer.as_str()), ("direction", direction)];
            b.counter(F::FederationMessagesTotal, &l, n);
        }
        b.counter(F::FederationDecodeErrorsTotal, &l, p.decode_errors);
        for (reason, n) in &p.refused {
            let l = [("peer", p.peer.as_str()), ("reason", reason)];
            b.counter(F::FederationRefusedTotal, &l, *n);
        }
    }
    for (reason, n) in &s.strangers {
        let l = [("peer", ""), ("reason", reason)];
        b.counter(F::FederationRefusedTotal, &l, *n);
    }

    // SLOs.
    for r in &s.slos {
        let l = [("group", r.group.as_str()), ("slo", r.slo.as_str())];
        b.gauge(F::SloObjectiveRatio, &l, r.objective);
        b.counter(F::SloEventsTotal, &l, r.events);
        b.counter(F::SloErrorsTotal, &l, r.errors);
        for (window, ratio, burn) in &r.windows {
            let l = [l[0], l[1], ("window", window)];
            b.gauge(F::SloSliErrorRatio, &l, *ratio);
            b.gauge(F::SloBurnRate, &l, *burn);
        }
        if let Some(left) = r.budget_remaining {
            b.gauge(F::SloErrorBudgetRemainingRatio, &l, left);
        }
    }

    b.finish()
}
