//! The autoscaling part: one pure [`Autoscaler`] per autoscaled agent, the
//! latest reading of each signal per replica, and the rounds of CPU
//! readings it asks of Docker.
//!
//! On each autoscale tick it starts a round of CPU readings; when they
//! arrive (at once, when there is nothing to read) the owner hands it the
//! supervisor, the GPU readings and each group's latency burn rate; it
//! turns its readings into samples, asks every agent's autoscaler, and
//! returns the decisions,
//! which the owner carries out as `scale` commands (the same checks, the
//! same persisted count). Signals:
//!
//! - `cpu`: two readings of a container's CPU time (Docker's stats API,
//!   one call per running replica per tick, a few at a time, off the
//!   owner), as a share of the agent's `resources.cpus` (one core without
//!   a limit);
//! - `gpu_util`: the replica's own processes' utilisation where NVML gives
//!   it per process (an MPS client's share), else the utilisation of the
//!   GPU holding its slice (NVML gives none per MIG instance);
//! - `metric`: the gauge read by the agent scrape the SLO engine does;
//! - `latency_slo`: the group's latency burn rate over its shortest window.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use orch_core::autoscale::{
    AutoscaleSettings, Autoscaler, Decision, Observation, ReplicaSample, Sample,
};
use orch_core::gpu::ReplicaKey;
use orch_core::supervise::{Millis, Supervisor};
use orch_docker::ContainerRuntime;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::event::{self, CpuRead};

/// A container's last CPU reading and the utilisation made of the two
/// before it.
#[derive(Debug, Clone)]
struct CpuTrack {
    container: String,
    used_ns: u64,
    at: Millis,
    sample: Option<ReplicaSample>,
}

/// An agent whose count the autoscaler wants and the planner refused: said
/// once per count and wanted count.
pub(super) struct Refused {
    pub group: String,
    pub agent: String,
    pub decision: Decision,
}

pub(super) struct Autoscaling {
    settings: AutoscaleSettings,
    scalers: BTreeMap<String, Autoscaler>,
    cpu: BTreeMap<ReplicaKey, CpuTrack>,
    metric: BTreeMap<ReplicaKey, ReplicaSample>,
    /// Scale-ups refused by the planner (from, to), by agent.
    refused: BTreeMap<String, (u32, u32)>,
    reading: Option<JoinHandle<()>>,
    rt: Arc<dyn ContainerRuntime>,
    news: event::Sender<CpuRead>,
    /// The supervisor's time zero, to date readings.
    epoch: Instant,
}

impl std::fmt::Debug for Autoscaling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Autoscaling")
            .field("agents", &self.scalers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// What one autoscale tick reads besides the supervisor.
pub(super) struct Readings<'a> {
    pub now: Millis,
    pub gpu: &'a crate::gpu_use::GpuReadings,
    /// A group's latency burn rate, when it has a latency SLO with events.
    pub latency_burn: &'a dyn Fn(&str) -> Option<f64>,
}

impl Autoscaling {
    pub(super) fn new(
        rt: Arc<dyn ContainerRuntime>,
        news: event::Sender<CpuRead>,
        epoch: Instant,
    ) -> Autoscaling {
        Autoscaling {
            settings: AutoscaleSettings::default(),
            scalers: BTreeMap::new(),
            cpu: BTreeMap::new(),
            metric: BTreeMap::new(),
            refused: BTreeMap::new(),
            reading: None,
            rt,
            news,
            epoch,
        }
    }

    fn millis(&self, at: Instant) -> Millis {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// A gauge read by an agent scrape.
    pub(super) fn gauge(&mut self, key: ReplicaKey, value: f64, now: Millis) {
        self.metric.insert(
            key.clone(),
            ReplicaSample {
                replica: key.replica,
                at: now,
                value,
            },
        );
    }

    /// A round of CPU readings: each second reading of the same container
    /// makes a utilisation sample.
    pub(super) fn cpu_read(&mut self, sup: &Supervisor, read: CpuRead) {
        for r in read.0 {
            let Some(used_ns) = r.used_ns else { continue };
            let at = self.millis(r.at);
            let cores = sup
                .config()
                .agent(&r.key.agent)
                .and_then(|a| a.resources.cpus)
                .filter(|c| *c > 0.0)
                .unwrap_or(1.0);
            let sample = match self.cpu.get(&r.key) {
                Some(t) if t.container == r.container && used_ns >= t.used_ns && at > t.at => {
                    let busy = (used_ns - t.used_ns) as f64 / ((at - t.at) as f64 * 1e6);
                    Some(ReplicaSample {
                        replica: r.key.replica,
                        at,
                        value: busy / cores * 100.0,
                    })
                }
                // A new container (or its counter went back): a new baseline.
                _ => None,
            };
            self.cpu.insert(
                r.key,
                CpuTrack {
                    container: r.container,
                    used_ns,
                    at,
                    sample,
                },
            );
        }
    }

    /// Starts a round of CPU readings of the replicas autoscaled on `cpu`;
    /// `false` when there is none to read (or the last round still runs):
    /// then the autoscalers are asked at once, else when the round's
    /// readings arrive, so a decision never waits a tick for its figures.
    pub(super) fn start_round(&mut self, sup: &Supervisor) -> bool {
        let config = sup.config();
        let autoscaled: BTreeMap<&str, (&str, &orch_core::model::Autoscale)> = config
            .agents()
            .filter_map(|a| Some((a.name.as_str(), (a.group.as_str(), a.autoscale.as_ref()?))))
            .collect();
        self.start_cpu_round(sup, &autoscaled)
    }

    /// Asks every autoscaler of a started group. Returns the decisions.
    pub(super) fn decide(
        &mut self,
        sup: &Supervisor,
        r: &Readings<'_>,
    ) -> Vec<(String, String, Decision)> {
        let config = sup.config();
        let autoscaled: BTreeMap<&str, (&str, &orch_core::model::Autoscale)> = config
            .agents()
            .filter_map(|a| Some((a.name.as_str(), (a.group.as_str(), a.autoscale.as_ref()?))))
            .collect();
        self.scalers
            .retain(|agent, _| autoscaled.contains_key(agent.as_str()));
        self.refused
            .retain(|agent, _| autoscaled.contains_key(agent.as_str()));
        // Readings of replicas no longer running are no one's.
        let running: BTreeSet<&ReplicaKey> = sup
            .replicas()
            .filter(|x| x.is_running())
            .map(|x| &x.key)
            .collect();
        self.cpu.retain(|k, _| running.contains(k));
        self.metric.retain(|k, _| running.contains(k));

        let mut decisions = Vec::new();
        // Who uses the GPUs, worked out once and only when asked.
        let mut usage: Option<crate::gpu_use::Usage> = None;
        for (agent, (group, spec)) in &autoscaled {
            let current = sup.replica_count(agent);
            if !sup.group_wanted(group) {
                // A stopped group keeps its count; its record starts afresh.
                self.scalers.remove(*agent);
                continue;
            }
            let cpu: Vec<ReplicaSample> = self
                .cpu
                .iter()
                .filter(|(k, _)| k.agent == *agent)
                .filter_map(|(_, t)| t.sample)
                .collect();
            let metric: Vec<ReplicaSample> = self
                .metric
                .iter()
                .filter(|(k, _)| k.agent == *agent)
                .map(|(_, s)| *s)
                .collect();
            let gpu_util: Vec<ReplicaSample> = sup
                .replicas()
                .filter(|x| x.key.agent == *agent && x.is_running())
                .filter_map(|x| {
                    // Its own processes' share where NVML gives it (an MPS
                    // client), else its slice's GPU's.
                    let own = usage
                        .get_or_insert_with(|| crate::gpu_use::usage(sup, r.gpu))
                        .replicas
                        .get(&x.key)
                        .and_then(|u| u.utilization_basis_points);
                    let bp = match own {
                        Some(bp) => bp,
                        None => {
                            let gpu = x.slice.as_ref()?.gpu_index();
                            r.gpu.telemetry.get(&gpu)?.utilization_gpu_basis_points
                        }
                    };
                    Some(ReplicaSample {
                        replica: x.key.replica,
                        at: r.now,
                        value: f64::from(bp) / 100.0,
                    })
                })
                .collect();
            let latency_burn = spec
                .latency_slo
                .then(|| (r.latency_burn)(group))
                .flatten()
                .map(|value| Sample { at: r.now, value });
            let obs = Observation {
                now: r.now,
                current,
                rollout_running: rolling_out(sup, agent),
                cpu: &cpu,
                gpu_util: &gpu_util,
                metric: &metric,
                latency_burn,
            };
            let scaler = self
                .scalers
                .entry((*agent).to_string())
                .or_insert_with(|| Autoscaler::new(self.settings));
            if let Some(d) = scaler.observe(spec, &obs) {
                decisions.push(((*group).to_string(), (*agent).to_string(), d));
            }
        }
        decisions
    }

    fn start_cpu_round(
        &mut self,
        sup: &Supervisor,
        autoscaled: &BTreeMap<&str, (&str, &orch_core::model::Autoscale)>,
    ) -> bool {
        if self.reading.as_ref().is_some_and(|t| !t.is_finished()) {
            return false;
        }
        let targets: Vec<(ReplicaKey, String)> = sup
            .replicas()
            .filter(|x| x.is_running())
            .filter(|x| {
                autoscaled
                    .get(x.key.agent.as_str())
                    .is_some_and(|(g, a)| a.cpu.is_some() && sup.group_wanted(g))
            })
            .filter_map(|x| Some((x.key.clone(), x.container.as_ref()?.id.clone())))
            .collect();
        if targets.is_empty() {
            return false;
        }
        self.reading = Some(tokio::spawn(crate::cpu_stats::round(
            targets,
            self.rt.clone(),
            self.news.clone(),
        )));
        true
    }

    /// The planner refused `decision`: `Some` the first time for this
    /// count and wanted count, to be said; `None` when it was said already.
    pub(super) fn refused(
        &mut self,
        group: &str,
        agent: &str,
        decision: Decision,
    ) -> Option<Refused> {
        let key = (decision.from, decision.to);
        if self.refused.insert(agent.to_string(), key) == Some(key) {
            return None;
        }
        Some(Refused {
            group: group.to_string(),
            agent: agent.to_string(),
            decision,
        })
    }

    /// Whether any agent of the config autoscales (the tick does nothing
    /// otherwise).
    pub(super) fn wanted(sup: &Supervisor) -> bool {
        sup.config().agents().any(|a| a.autoscale.is_some())
    }

    /// Agents whose autoscaler scales on a gauge, with its name.
    pub(super) fn gauges(sup: &Supervisor) -> BTreeMap<String, String> {
        sup.config()
            .agents()
            .filter_map(|a| {
                let m = a.autoscale.as_ref()?.metric.as_ref()?;
                Some((a.name.clone(), m.name.clone()))
            })
            .collect()
    }
}

/// An apply is replacing the agent's containers: some replica runs a
/// container of another config than the agent's now. Its autoscaler
/// pauses until every replica runs the new one.
fn rolling_out(sup: &Supervisor, agent: &str) -> bool {
    let Some(hash) = sup.config_hash(agent) else {
        return false;
    };
    sup.replicas()
        .filter(|r| r.key.agent == agent)
        .any(|r| r.container.as_ref().is_some_and(|c| c.config_hash != hash))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use orch_core::gpu::ReplicaKey;
    use orch_core::supervise::{ContainerFacts, ContainerStatus, Input, Persisted, Supervisor};

    use super::rolling_out;

    fn host(hash_of_running: impl Fn(&str) -> String) -> Supervisor {
        let text = "version: 1\nhost: {name: h}\ndefaults: {image: img:1}\ngroups:\n  g:\n    agents:\n      W: {replicas: 2, autoscale: {max: 4, cpu: 50%}}\n      Other: {}\n";
        let c = orch_config::load_str("h.yaml", text, &Default::default())
            .unwrap()
            .config;
        let hashes = orch_core::container::config_hashes(&c);
        let persisted = Persisted {
            started_groups: ["g".to_string()].into(),
            ..Persisted::default()
        };
        let mut sup = Supervisor::new(c, hashes, persisted);
        let containers = [("W", 0), ("W", 1), ("Other", 0)]
            .into_iter()
            .map(|(agent, i)| {
                let hash = if i == 1 {
                    hash_of_running(sup.config_hash(agent).unwrap())
                } else {
                    sup.config_hash(agent).unwrap().to_string()
                };
                (
                    ReplicaKey::new(agent, i),
                    "g".to_string(),
                    ContainerFacts {
                        id: format!("c-{agent}-{i}"),
                        config_hash: hash,
                        status: ContainerStatus::Running,
                        started_at_ms: 0,
                        gpu_slice: None,
                    },
                )
            })
            .collect();
        sup.handle(0, Input::Resync { containers });
        sup
    }

    #[test]
    fn an_agent_whose_replicas_run_an_older_config_is_rolling_out() {
        let done = host(str::to_string);
        assert!(!rolling_out(&done, "W"));
        let rolling = host(|_| "older".to_string());
        assert!(rolling_out(&rolling, "W"));
        assert!(!rolling_out(&rolling, "Other"));
        assert!(!rolling_out(&rolling, "Nobody"));
    }
}
