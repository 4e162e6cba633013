//! The `/metrics` read model: what the daemon exports to Prometheus.
//!
//! Three parts, so that a scrape never waits on the owner, Docker, NVML
//! or a peer:
//!
//! - [`Counters`], kept by the owner task: what the supervisor's state
//!   does not hold (failures by reason, health-check and reconcile
//!   durations, state-file write failures). Plain numbers, no I/O.
//! - [`snapshot`], a pure function of the supervisor's state, the
//!   counters, the SLO figures and a few facts, giving a [`MetricsSnapshot`]: the
//!   exported values, already in the shape of the series. The owner
//!   publishes a fresh one when something changed, at most once per
//!   publish interval (`crate::observe`).
//! - [`render`], the text format 0.0.4 of a snapshot, run by the HTTP
//!   handler ([`serve`]) on the latest published snapshot, on the
//!   handler's own task.
//!
//! The names, labels and types are the metrics contract of
//! `docs/observability.md`. No label is unbounded: replicas are numbered,
//! failure reasons are [`FailReason::label`](orch_core::supervise::FailReason::label)'s
//! closed set, and container ids appear nowhere. Peer series come from
//! [`MetricsSnapshot::peers`], empty until the daemon federates.

mod render;
pub mod serve;

use std::collections::BTreeMap;
use std::time::Duration;

use orch_api::{GpuReport, GpuTelemetry as Telemetry, wire};
use orch_core::slo::{GroupReport, Sli};
use orch_core::supervise::{Phase, Supervisor, SupervisorEvent as EventKind};

pub use render::{CONTENT_TYPE, render, render_into};

/// Bucket bounds (seconds) of the health-check duration histogram.
pub const HEALTH_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0];
/// Bucket bounds (seconds) of the reconcile duration histogram: the owner
/// handles one input in microseconds; a millisecond is already slow.
pub const RECONCILE_BUCKETS: &[f64] = &[0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1];

/// Failure reasons every agent exports from the start (at 0), so that a
/// rate over them has a series before the first failure.
pub const BASE_REASONS: [&str; 3] = ["exited", "oom_killed", "unhealthy"];

/// The states of `orchestrator_agent_state`, in the contract's order.
pub const AGENT_STATES: [&str; 8] = [
    "pending",
    "held",
    "starting",
    "running",
    "backing_off",
    "exited",
    "failed",
    "stopping",
];

/// A Prometheus histogram with fixed bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket, not cumulative; one more than `bounds` (the `+Inf` one).
    counts: Vec<u64>,
    sum: f64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    pub fn observe(&mut self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self
            .bounds
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(self.bounds.len());
        self.counts[i] += 1;
        self.sum += secs;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn sum(&self) -> f64 {
        self.sum
    }

    pub fn bounds(&self) -> &'static [f64] {
        self.bounds
    }

    /// (upper bound, cumulative count) per finite bucket.
    pub fn cumulative(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        self.bounds
            .iter()
            .zip(self.counts.iter())
            .scan(0, |acc, (b, c)| {
                *acc += c;
                Some((*b, *acc))
            })
    }
}

/// What the owner counts besides the supervisor's state.
#[derive(Debug, Clone)]
pub struct Counters {
    /// By (group, agent, reason).
    pub failures: BTreeMap<(String, String, &'static str), u64>,
    /// Autoscaler decisions by (group, agent, direction, signal).
    pub autoscale: BTreeMap<AutoscaleKey, u64>,
    /// By (group, agent).
    pub health: BTreeMap<(String, String), Histogram>,
    pub reconcile: Histogram,
    pub state_write_failures: u64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            failures: BTreeMap::new(),
            autoscale: BTreeMap::new(),
            health: BTreeMap::new(),
            reconcile: Histogram::new(RECONCILE_BUCKETS),
            state_write_failures: 0,
        }
    }
}

impl Counters {
    /// Counts the failures among the supervisor's events.
    pub fn record_events<'a>(&mut self, events: impl IntoIterator<Item = &'a EventKind>) {
        for e in events {
            if let EventKind::AgentAutoscaled {
                agent,
                group,
                from,
                to,
                cause,
            } = e
            {
                let direction = if to > from { "up" } else { "down" };
                let signal = match cause {
                    orch_core::autoscale::Cause::Signal { signal, .. } => match signal {
                        orch_core::autoscale::Signal::Cpu => "cpu",
                        orch_core::autoscale::Signal::GpuUtil => "gpu_util",
                        orch_core::autoscale::Signal::Metric => "metric",
                        orch_core::autoscale::Signal::LatencySlo => "latency_slo",
                    },
                    _ => "bounds",
                };
                *self
                    .autoscale
                    .entry((group.clone(), agent.clone(), direction, signal))
                    .or_default() += 1;
                continue;
            }
            let (replica, group, reason) = match e {
                EventKind::AgentExited {
                    replica,
                    group,
                    oom,
                    ..
                } => (replica, group, if *oom { "oom_killed" } else { "exited" }),
                EventKind::AgentUnhealthy { replica, group } => (replica, group, "unhealthy"),
                // The other reasons are counted by the event that caused them.
                EventKind::AgentRestarting {
                    replica,
                    group,
                    reason: reason @ orch_core::supervise::RestartReason::GpuMemoryExceeded,
                    ..
                } => (replica, group, reason.label()),
                EventKind::AgentFailed {
                    replica,
                    group,
                    reason,
                } => (replica, group, reason.label()),
                _ => continue,
            };
            *self
                .failures
                .entry((group.clone(), replica.agent.clone(), reason))
                .or_default() += 1;
        }
    }

    pub fn record_health(&mut self, group: &str, agent: &str, took: Duration) {
        self.health
            .entry((group.to_string(), agent.to_string()))
            .or_insert_with(|| Histogram::new(HEALTH_BUCKETS))
            .observe(took);
    }
}

/// (group, agent, direction, signal) of autoscaler decisions.
pub type AutoscaleKey = (String, String, &'static str, &'static str);

/// One agent's replica counts.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRow {
    pub group: String,
    pub agent: String,
    /// After `scale` and autoscaling.
    pub wanted: u32,
    pub running: u32,
    /// The config file's count.
    pub file: u32,
}

/// One replica's series.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaRow {
    pub group: String,
    pub agent: String,
    pub replica: u32,
    pub up: bool,
    /// One of [`AGENT_STATES`].
    pub state: &'static str,
    pub crashlooping: bool,
    pub restarts: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GroupRow {
    pub group: String,
    pub started: bool,
    pub ready: bool,
    pub wanted: usize,
    pub running: usize,
    pub healthy: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GpuRow {
    pub index: u32,
    pub uuid: String,
    pub name: String,
    /// `enabled`, `disabled` or `unsupported`.
    pub mig: &'static str,
    pub memory_total_bytes: u64,
    pub telemetry: Option<Telemetry>,
    /// Free MPS memory and compute share, for GPUs used with MPS.
    pub mps_free: Option<(u64, f64)>,
    /// Free MIG memory slices, for MIG GPUs.
    pub mig_free_slices: Option<u8>,
    /// Memory held by processes that are none of this host's agents.
    pub unowned_memory_bytes: u64,
}

/// One replica's use of one GPU.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuUseRow {
    pub gpu: u32,
    pub group: String,
    pub agent: String,
    pub replica: u32,
    pub memory_used_bytes: u64,
    pub memory_limit_bytes: Option<u64>,
    pub utilization_basis_points: Option<u32>,
}

/// One replica's CPU time, from its container's cgroup.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuRow {
    pub group: String,
    pub agent: String,
    pub replica: u32,
    pub used_seconds: f64,
}

/// The CPU time of every replica whose container's cgroup was read.
pub fn cpu_rows(sup: &Supervisor, cpu: &crate::cpu_use::CpuUse) -> Vec<CpuRow> {
    sup.replicas()
        .filter_map(|r| {
            let point = cpu.get(&r.container.as_ref()?.id)?;
            Some(CpuRow {
                group: r.group.to_string(),
                agent: r.key.agent.clone(),
                replica: r.key.replica,
                used_seconds: point.used_ns as f64 / 1e9,
            })
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq)]
pub struct SliceRow {
    pub gpu: u32,
    pub uuid: String,
    /// `mig`, `mps`, `exclusive` or `time-slice`.
    pub kind: &'static str,
    /// The MIG profile, `<memory>/<compute>%` for MPS, `whole` otherwise.
    pub profile: String,
    pub group: String,
    pub agent: String,
    pub replica: u32,
    /// `None` where nothing is promised (time slicing).
    pub memory_bytes: Option<u64>,
}

/// The figures of one SLI of one group.
#[derive(Debug, Clone, PartialEq)]
pub struct SloRow {
    pub group: String,
    pub slo: Sli,
    pub objective: f64,
    pub events: u64,
    pub errors: u64,
    /// (window label, error ratio, burn rate), windows with events only.
    pub windows: Vec<(String, f64, f64)>,
    pub budget_remaining: Option<f64>,
}

/// One federation peer as this host sees it (filled once the daemon
/// federates; empty until then).
#[derive(Debug, Clone, PartialEq)]
pub struct PeerRow {
    pub peer: String,
    /// `unknown`, `alive`, `suspect` or `down`.
    pub state: &'static str,
    pub heartbeat_age_seconds: Option<f64>,
    pub messages_in: u64,
    pub messages_out: u64,
    pub decode_errors: u64,
    /// `orchestrator_federation_refused_total{peer, reason}`: what was
    /// refused from this peer's key, by reason (every reason, zeros too).
    pub refused: Vec<(&'static str, u64)>,
}

/// Refused connections no configured peer can be blamed for
/// (`orchestrator_federation_refused_total{peer="", reason}`).
pub type StrangerRows = Vec<(&'static str, u64)>;

/// Everything `/metrics` shows, as of one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSnapshot {
    pub host: String,
    pub version: String,
    pub reconcile: Histogram,
    pub state_write_failures: u64,
    /// The running config's generation.
    pub generation: u64,
    /// The last rollout's generation and phase.
    pub rollout: Option<(u64, orch_api::rollout::RolloutPhase)>,
    pub replicas: Vec<ReplicaRow>,
    pub agents: Vec<AgentRow>,
    /// Autoscaler decisions so far.
    pub autoscale: Vec<(AutoscaleKey, u64)>,
    /// (group, agent, reason, count).
    pub failures: Vec<(String, String, &'static str, u64)>,
    /// (group, agent, durations).
    pub health: Vec<(String, String, Histogram)>,
    pub groups: Vec<GroupRow>,
    pub gpus: Vec<GpuRow>,
    pub slices: Vec<SliceRow>,
    pub gpu_use: Vec<GpuUseRow>,
    /// Filled by the observer from the cgroup readings.
    pub cpu: Vec<CpuRow>,
    pub slos: Vec<SloRow>,
    pub peers: Vec<PeerRow>,
    pub strangers: StrangerRows,
}

impl MetricsSnapshot {
    /// A daemon that has seen nothing yet.
    pub fn empty(host: &str, version: &str) -> MetricsSnapshot {
        MetricsSnapshot {
            host: host.to_string(),
            version: version.to_string(),
            reconcile: Histogram::new(RECONCILE_BUCKETS),
            state_write_failures: 0,
            generation: 0,
            rollout: None,
            replicas: Vec::new(),
            agents: Vec::new(),
            autoscale: Vec::new(),
            failures: Vec::new(),
            health: Vec::new(),
            groups: Vec::new(),
            gpus: Vec::new(),
            slices: Vec::new(),
            gpu_use: Vec::new(),
            cpu: Vec::new(),
            slos: Vec::new(),
            peers: Vec::new(),
            strangers: Vec::new(),
        }
    }
}

/// The contract's name for a replica's phase.
pub fn state_label(p: &Phase) -> &'static str {
    match p {
        Phase::Pending => "pending",
        Phase::Held { .. } => "held",
        Phase::Starting => "starting",
        Phase::Running => "running",
        Phase::BackingOff { .. } => "backing_off",
        Phase::Exited { .. } | Phase::Stopped => "exited",
        Phase::Failed { .. } => "failed",
        Phase::Stopping => "stopping",
    }
}

/// `4g/25%`: an MPS share as the `profile` label writes it.
pub fn mps_profile(memory_bytes: u64, compute_basis_points: u32) -> String {
    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;
    let memory = if memory_bytes % GIB == 0 {
        format!("{}g", memory_bytes / GIB)
    } else {
        format!("{}m", memory_bytes / MIB)
    };
    format!(
        "{memory}/{}",
        orch_core::units::Percent::from_basis_points(compute_basis_points)
    )
}

fn gpu_rows(report: &GpuReport) -> (Vec<GpuRow>, Vec<SliceRow>, Vec<GpuUseRow>) {
    let mut gpus = Vec::new();
    let mut slices = Vec::new();
    let mut gpu_use = Vec::new();
    for g in &report.gpus {
        let mig = match g.info.mig {
            wire::Mig::Unsupported => "unsupported",
            wire::Mig::Disabled { .. } => "disabled",
            wire::Mig::Enabled { .. } => "enabled",
        };
        let has_mps = g
            .slices
            .iter()
            .any(|s| matches!(s.slice, wire::Slice::Mps { .. }));
        let mps_free = if has_mps || g.free.sharing == "mps" {
            g.free
                .mps_memory_bytes
                .zip(g.free.mps_compute_basis_points)
                .map(|(m, bp)| (m, f64::from(bp) / 10_000.0))
        } else {
            None
        };
        gpus.push(GpuRow {
            index: g.info.index,
            uuid: g.info.uuid.clone(),
            name: g.info.name.clone(),
            mig,
            memory_total_bytes: g.info.memory_total_bytes,
            telemetry: g.telemetry,
            mps_free,
            mig_free_slices: g.free.mig_memory_slices,
            unowned_memory_bytes: g.unowned.iter().filter_map(|p| p.memory_used_bytes).sum(),
        });
        gpu_use.extend(g.usage.iter().map(|u| GpuUseRow {
            gpu: g.info.index,
            group: u.group.clone(),
            agent: u.replica.agent.clone(),
            replica: u.replica.replica,
            memory_used_bytes: u.memory_used_bytes,
            memory_limit_bytes: u.memory_limit_bytes,
            utilization_basis_points: u.utilization_basis_points,
        }));
        for owner in &g.slices {
            let (kind, profile, memory_bytes) = match &owner.slice {
                wire::Slice::Mig {
                    profile,
                    memory_bytes,
                    ..
                } => ("mig", profile.clone(), *memory_bytes),
                wire::Slice::Mps {
                    memory_bytes,
                    compute_basis_points,
                    ..
                } => (
                    "mps",
                    mps_profile(*memory_bytes, *compute_basis_points),
                    Some(*memory_bytes),
                ),
                wire::Slice::Exclusive { .. } => (
                    "exclusive",
                    "whole".to_string(),
                    Some(g.info.memory_total_bytes),
                ),
                wire::Slice::TimeSlice { .. } => ("time-slice", "whole".to_string(), None),
            };
            slices.push(SliceRow {
                gpu: g.info.index,
                uuid: g.info.uuid.clone(),
                kind,
                profile,
                group: owner.group.clone(),
                agent: owner.replica.agent.clone(),
                replica: owner.replica.replica,
                memory_bytes,
            });
        }
    }
    (gpus, slices, gpu_use)
}

/// The SLO figures as series.
pub fn slo_rows(reports: &[GroupReport]) -> Vec<SloRow> {
    let mut out = Vec::new();
    for g in reports {
        for s in &g.slis {
            out.push(SloRow {
                group: g.group.clone(),
                slo: s.objective.sli,
                objective: s.objective.target,
                events: s.totals.total(),
                errors: s.totals.bad,
                windows: s
                    .windows
                    .iter()
                    .filter_map(|w| Some((w.window.to_string(), w.error_ratio?, w.burn_rate?)))
                    .collect(),
                budget_remaining: s.budget_remaining,
            });
        }
    }
    out
}

/// The exported values: a pure function of the supervisor's state, the
/// owner's counters, the SLO rows and the GPU read model.
pub fn snapshot(
    sup: &Supervisor,
    counters: &Counters,
    slos: Vec<SloRow>,
    gpu: &GpuReport,
    version: &str,
) -> MetricsSnapshot {
    let config = sup.config();
    let mut replicas = Vec::new();
    for agent in config.agents() {
        for i in 0..agent.replicas.max(1) {
            let key = orch_core::gpu::ReplicaKey::new(&agent.name, i);
            let Some(r) = sup.replica(&key) else { continue };
            if !sup.group_wanted(&r.group) && r.container.is_none() {
                continue;
            }
            replicas.push(ReplicaRow {
                group: r.group.clone(),
                agent: r.key.agent.clone(),
                replica: r.key.replica,
                up: sup.replica_healthy(r),
                state: state_label(&r.phase),
                crashlooping: r.crashloop,
                restarts: r.restarts_total,
            });
        }
    }
    let mut running_by_agent: BTreeMap<&str, u32> = BTreeMap::new();
    for r in sup.replicas().filter(|r| r.is_running()) {
        *running_by_agent.entry(r.key.agent.as_str()).or_default() += 1;
    }
    let agents = config
        .agents()
        .map(|a| {
            let wanted = sup.replica_count(&a.name);
            let running = running_by_agent.get(a.name.as_str()).copied().unwrap_or(0);
            AgentRow {
                group: a.group.clone(),
                agent: a.name.clone(),
                wanted: if sup.group_wanted(&a.group) {
                    wanted
                } else {
                    0
                },
                running,
                file: a.replicas,
            }
        })
        .collect();
    let mut failures: BTreeMap<(&str, &str, &'static str), u64> = BTreeMap::new();
    for agent in config.agents() {
        for reason in BASE_REASONS {
            failures.insert((&agent.group, &agent.name, reason), 0);
        }
    }
    for ((group, agent, reason), n) in &counters.failures {
        failures.insert((group, agent, reason), *n);
    }
    let groups = config
        .groups
        .iter()
        .map(|g| {
            let (wanted, running, healthy) = sup.group_counts(&g.name);
            GroupRow {
                group: g.name.clone(),
                started: sup.started_groups().contains(&g.name),
                ready: sup.group_phase(&g.name) == orch_core::supervise::GroupPhase::Ready,
                wanted,
                running,
                healthy,
            }
        })
        .collect();
    let (gpus, slices, gpu_use) = gpu_rows(gpu);
    MetricsSnapshot {
        host: config.host.name.clone(),
        version: version.to_string(),
        reconcile: counters.reconcile.clone(),
        state_write_failures: counters.state_write_failures,
        generation: sup.generation(),
        rollout: sup
            .rollout()
            .map(|ro| (ro.generation, orch_api::convert::rollout_phase(&ro.phase))),
        replicas,
        agents,
        autoscale: counters
            .autoscale
            .iter()
            .map(|(k, n)| (k.clone(), *n))
            .collect(),
        failures: failures
            .into_iter()
            .map(|((g, a, r), n)| (g.to_string(), a.to_string(), r, n))
            .collect(),
        health: counters
            .health
            .iter()
            .map(|((g, a), h)| (g.clone(), a.clone(), h.clone()))
            .collect(),
        groups,
        gpus,
        slices,
        gpu_use,
        cpu: Vec::new(),
        slos,
        peers: Vec::new(),
        strangers: Vec::new(),
    }
}

#[cfg(test)]
mod tests;
