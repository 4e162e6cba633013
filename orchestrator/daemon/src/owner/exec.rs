//! The executor: records what the supervisor decided happened (events)
//! and carries out its actions by spawning tasks that report back.

use std::collections::BTreeSet;
use std::time::Duration;

use orch_core::gpu::{ReplicaKey, Slice};
use orch_core::supervise::{Action, OpKind, Outcome};

use super::{Event, Owner};

/// How long after a failed state write it is tried again.
pub(super) const PERSIST_RETRY: Duration = Duration::from_secs(5);
use crate::ops::{Job, JobCtx, SpecInputs};
use crate::probe::{self, ProbeTarget};

impl Owner {
    /// Records events and runs actions.
    pub(super) fn execute(&mut self, out: Outcome) {
        let time = self.deps.clock.unix_ms();
        let mut published = Vec::with_capacity(out.events.len());
        self.obs.counters.record_events(&out.events);
        self.trace_groups(&out.events);
        let span = if out.actions.is_empty() {
            tracing::Span::none()
        } else {
            tracing::info_span!("reconcile", actions = out.actions.len())
        };
        let _in = span.enter();
        for e in out.events {
            let kind = orch_api::convert::event_kind(&e, self.sup.inventory());
            tracing::info!(target: "orchestrator::events", kind = kind.name(), "{kind}");
            published.push(self.log.push(kind, time));
        }
        self.publish_events(&published);
        // INVARIANT: desired state is written before any action runs.
        if out.persist {
            self.persist();
        }
        for action in out.actions {
            self.act(action);
        }
        self.stop_idle_mps();
    }

    /// Stops MPS control daemons whose GPU has no client left.
    fn stop_idle_mps(&mut self) {
        let Some(gpu) = &self.deps.gpu else { return };
        let needed: BTreeSet<String> = self
            .sup
            .replicas()
            .filter(|r| r.container.is_some() || r.op.is_some() || self.sup.group_wanted(&r.group))
            .filter_map(|r| match &r.slice {
                Some(Slice::Mps { gpu_uuid, .. }) => Some(gpu_uuid.clone()),
                _ => None,
            })
            .collect();
        let idle: Vec<String> = self.mps_running.difference(&needed).cloned().collect();
        for uuid in idle {
            tracing::info!(gpu = %uuid, "no MPS client left; stopping its control daemon");
            gpu.mps_stop(crate::gpu::mps_gpu(&self.settings.mps_base, &uuid));
            self.mps_running.remove(&uuid);
        }
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::WatchHealth { key, id } => {
                let Some(agent) = self.sup.config().agent(&key.agent) else {
                    return;
                };
                let target = ProbeTarget {
                    key: key.clone(),
                    id,
                    network: self.sup.config().runtime.network.clone(),
                    check: agent.health.clone(),
                };
                let handle = tokio::spawn(probe::run(
                    target,
                    self.deps.prober.clone(),
                    self.tx.clone(),
                ));
                if let Some(old) = self.probes.insert(key, handle.abort_handle()) {
                    old.abort();
                }
            }
            Action::UnwatchHealth { key } => {
                if let Some(p) = self.probes.remove(&key) {
                    p.abort();
                }
            }
            Action::Launch {
                key,
                replace,
                slice,
                generation,
                start,
                ..
            } => {
                let Some(agent) = self.config.agent(&key.agent) else {
                    return;
                };
                let stop_timeout = agent.stop_timeout.std();
                if let Some(Slice::Mps { gpu_uuid, .. }) = &slice {
                    self.mps_running.insert(gpu_uuid.clone());
                }
                let spec = SpecInputs {
                    config: self.config.clone(),
                    agent: key.agent.clone(),
                    replica: key.replica,
                    hash: self
                        .sup
                        .config_hash(&key.agent)
                        .unwrap_or_default()
                        .to_string(),
                    generation,
                    injection: self.injection(),
                };
                let op = match (&replace, start) {
                    (Some(_), _) => OpKind::Recreate,
                    (None, true) => OpKind::Launch,
                    (None, false) => OpKind::Create,
                };
                let job = Job::Launch {
                    spec: Box::new(spec),
                    replace,
                    slice,
                    stop_timeout,
                    start,
                };
                self.spawn_op(key, op, job);
            }
            Action::DestroyMig {
                gpu_index, gi_id, ..
            } => {
                if let Some(gpu) = &self.deps.gpu {
                    gpu.destroy(gpu_index, gi_id);
                }
            }
            Action::Start { key, id } => self.spawn_op(key, OpKind::Start, Job::Start { id }),
            Action::Restart { key, id } => {
                let stop_timeout = self.stop_timeout(&key);
                self.spawn_op(key, OpKind::Restart, Job::Restart { id, stop_timeout });
            }
            Action::Stop { key, id } => {
                let stop_timeout = self.stop_timeout(&key);
                self.spawn_op(key, OpKind::Stop, Job::Stop { id, stop_timeout });
            }
            Action::Remove { key, id } => self.spawn_op(key, OpKind::Remove, Job::Remove { id }),
        }
    }

    /// Writes the desired state. The file is a few kilobytes and written
    /// only when desired state changes (an operator command, a slice
    /// given), not per event; its cost is measured in the benchmarks.
    ///
    /// A failed write (a full or read-only disk) stops nothing: the state
    /// stays in memory, supervision goes on, the failure is an event and
    /// a `status` field, and the write is tried again every
    /// [`PERSIST_RETRY`] until it succeeds.
    pub(super) fn persist(&mut self) {
        match self.deps.store.save(&self.sup.persisted()) {
            Ok(()) => {
                self.persist_retry = None;
                if self.state_file.write_error.take().is_some() {
                    tracing::info!("state saved again");
                    self.record(orch_core::supervise::SupervisorEvent::StateWritten);
                }
            }
            Err(e) => {
                let detail = e.to_string();
                self.state_file.failed_writes += 1;
                self.obs.counters.state_write_failures += 1;
                self.persist_retry = Some(tokio::time::Instant::now() + PERSIST_RETRY);
                if self.state_file.write_error.as_deref() != Some(detail.as_str()) {
                    tracing::error!("{detail}; agents are still supervised, retrying");
                    self.state_file.write_error = Some(detail.clone());
                    self.record(orch_core::supervise::SupervisorEvent::StateWriteFailed { detail });
                }
            }
        }
    }

    /// Records one event the owner itself observed.
    fn record(&mut self, e: orch_core::supervise::SupervisorEvent) {
        let time = self.deps.clock.unix_ms();
        let kind = orch_api::convert::event_kind(&e, self.sup.inventory());
        tracing::info!(target: "orchestrator::events", kind = kind.name(), "{kind}");
        self.log.push(kind, time);
    }

    fn stop_timeout(&self, key: &ReplicaKey) -> Duration {
        self.sup
            .config()
            .agent(&key.agent)
            .map(|a| a.stop_timeout.std())
            .unwrap_or(Duration::from_secs(10))
    }

    fn spawn_op(&mut self, key: ReplicaKey, op: OpKind, job: Job) {
        let ctx = JobCtx {
            rt: self.deps.rt.clone(),
            gpu: self.deps.gpu.clone(),
            mps_base: self.settings.mps_base.clone(),
            tx: self.tx.clone(),
            key: key.clone(),
        };
        let tx = self.tx.clone();
        let permits = self.permits.clone();
        let span = self.op_span(&key, op);
        self.ops.spawn(tracing::Instrument::instrument(
            async move {
                let _permit = permits.acquire_owned().await;
                let result = job.run(ctx).await;
                let _ = tx.send(Event::Op { key, op, result }).await;
            },
            span,
        ));
        // Reap finished tasks so the set does not grow.
        while self.ops.try_join_next().is_some() {}
    }
}
