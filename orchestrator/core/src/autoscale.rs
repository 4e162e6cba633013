//! Autoscaling decisions for one agent: a pure state machine fed samples,
//! answering with a new replica count (or none) and the signal that
//! decided it.
//!
//! # Arithmetic (as Kubernetes' HPA)
//!
//! Each configured signal recommends a count from the current one:
//!
//! - `cpu`, `gpu_util`: the mean over the replicas of their utilisation (in
//!   percent) against the target: `ratio = mean / target`,
//!   `desired = ceil(current × ratio)`;
//! - `metric`: the replicas' readings summed against `per_replica`
//!   (`desired = ceil(sum / per_replica)`, HPA's `AverageValue`), or, for a
//!   `shared` gauge, its largest reading against `per_replica`
//!   (`desired = ceil(value / per_replica)`);
//! - `latency_slo`: one more replica while the group's latency burn rate is
//!   above the ticket threshold ([`AutoscaleSettings::ticket_burn`]); no
//!   recommendation otherwise (it never scales down).
//!
//! A ratio within [`AutoscaleSettings::tolerance`] (10%) of 1 recommends the
//! current count. The highest recommendation of all signals wins; the
//! result is bounded by `min` and `max`.
//!
//! # Missing data never scales down
//!
//! A sample older than [`AutoscaleSettings::stale_after`] is missing. A
//! signal with no fresh sample at all, or the latency signal without a
//! fresh burn rate, recommends the current count, which holds off every
//! scale-down. A signal missing some replicas recommends no scale-down
//! either; for a scale-up, the missing replicas count as idle (HPA's rule),
//! so they never push the count up.
//!
//! # Time: stabilisation, one step per window, no flapping
//!
//! Every observation records the winning recommendation. A scale-up is
//! made only once recommendations have been recorded for `up_after` and
//! every one of them in that window is above the current count; it goes to
//! the lowest of them. A scale-down likewise needs `down_after` of
//! recommendations all below the current count and goes to the highest of
//! them (HPA's stabilisation window). A change, a changed current count, a
//! running rollout (which pauses autoscaling) or a gap in the observations
//! longer than `stale_after` starts the record afresh: at most one step per
//! window. A change in the other direction than the last one waits until
//! the agent's `reverse_after` (5 minutes unless set) has passed since
//! it, so the count changes direction at most once per 5 minutes, whatever
//! the load does. That includes a scale-up soon after a scale-down: telling a
//! load that grew from one that wobbles takes a window of its own, and
//! readings that wobble by a few tens of percent around a constant load
//! already look like growth past the last count now and then (the
//! property test found such runs).
//!
//! A count outside `min..=max` (bounds changed by a reload) is brought
//! inside at once.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::model::Autoscale;
use crate::supervise::Millis;

/// Knobs that are not in the config.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AutoscaleSettings {
    /// No change while a ratio is within this of 1 (HPA's 0.1).
    pub tolerance: f64,
    /// A sample older than this is missing.
    pub stale_after: Millis,
    /// The latency burn rate above which `latency_slo` scales up (the
    /// multi-window ticket threshold, 1: the budget spent exactly over the
    /// SLO window). The caller gives the burn rate of the window it alerts
    /// on.
    pub ticket_burn: f64,
}

impl Default for AutoscaleSettings {
    fn default() -> Self {
        AutoscaleSettings {
            tolerance: 0.1,
            stale_after: 60_000,
            ticket_burn: 1.0,
        }
    }
}

/// At most this many observations are kept; older ones are dropped first
/// (the window's start is kept apart, so coverage is still known).
pub const MAX_HISTORY: usize = 4096;

/// What a recommendation was computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Signal {
    Cpu,
    GpuUtil,
    Metric,
    LatencySlo,
}

/// One reading of one replica.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReplicaSample {
    pub replica: u32,
    pub at: Millis,
    /// Percent for `cpu` and `gpu_util` (73.5 for 73.5%), the gauge's value
    /// for a metric.
    pub value: f64,
}

/// One reading of a figure of the whole group.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub at: Millis,
    pub value: f64,
}

/// What one call sees. Samples of signals the agent does not scale on are
/// ignored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation<'a> {
    pub now: Millis,
    /// The replica count wanted now (after the last decision or `scale`).
    pub current: u32,
    /// A rollout of the agent is running: autoscaling pauses.
    pub rollout_running: bool,
    /// Replicas `0..current` count; samples of others are ignored.
    pub cpu: &'a [ReplicaSample],
    pub gpu_util: &'a [ReplicaSample],
    pub metric: &'a [ReplicaSample],
    /// The group's latency SLO burn rate.
    pub latency_burn: Option<Sample>,
}

/// What a signal recommends.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    pub signal: Signal,
    pub replicas: u32,
    /// The figure compared with the target (mean percent, summed or shared
    /// gauge, burn rate); `None` when data was missing and the count holds.
    pub value: Option<f64>,
    /// The target in the same unit (for a summed gauge: `per_replica` times
    /// the replicas counted).
    pub target: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    Up,
    Down,
}

/// Why the count changes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "cause")]
pub enum Cause {
    /// A signal held past its window. `bounded` when `min` or `max` cut the
    /// recommended count.
    Signal {
        signal: Signal,
        value: f64,
        target: f64,
        recommended: u32,
        bounded: bool,
    },
    /// The count was below `min`.
    BelowMin { min: u32 },
    /// The count was above `max`.
    AboveMax { max: u32 },
}

/// A new replica count.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub from: u32,
    pub to: u32,
    pub cause: Cause,
}

impl Decision {
    pub fn direction(&self) -> Direction {
        if self.to > self.from {
            Direction::Up
        } else {
            Direction::Down
        }
    }
}

/// The winning recommendation of one observation.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Entry {
    at: Millis,
    replicas: u32,
    top: Option<Recommendation>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Change {
    at: Millis,
    direction: Direction,
}

/// The autoscaler of one agent.
#[derive(Debug, Clone, Default)]
pub struct Autoscaler {
    settings: AutoscaleSettings,
    history: VecDeque<Entry>,
    /// When the record began (kept when old entries are dropped).
    since: Option<Millis>,
    last_current: Option<u32>,
    last_change: Option<Change>,
}

impl Autoscaler {
    pub fn new(settings: AutoscaleSettings) -> Self {
        Autoscaler {
            settings,
            ..Autoscaler::default()
        }
    }

    fn reset(&mut self) {
        self.history.clear();
        self.since = None;
    }

    /// Takes one observation; returns the new count when it changes.
    pub fn observe(&mut self, spec: &Autoscale, obs: &Observation<'_>) -> Option<Decision> {
        let current = obs.current;
        if obs.rollout_running || current == 0 {
            self.reset();
            self.last_current = Some(current);
            return None;
        }
        if self.last_current != Some(current) {
            self.reset();
            self.last_current = Some(current);
        }
        if current < spec.min || current > spec.max {
            let (to, cause) = if current < spec.min {
                (spec.min, Cause::BelowMin { min: spec.min })
            } else {
                (spec.max, Cause::AboveMax { max: spec.max })
            };
            return Some(self.decide(obs.now, current, to, cause));
        }
        if let Some(last) = self.history.back()
            && obs.now.saturating_sub(last.at) > self.settings.stale_after
        {
            self.reset();
        }
        let entry = self.entry(spec, obs);
        self.push(entry, spec);

        let up = self.window(obs.now, spec.up_after.as_millis(), |a, b| {
            a.replicas < b.replicas
        });
        if let Some(low) = up
            && low.replicas > current
        {
            return self.propose(spec, obs.now, current, low, Direction::Up);
        }
        let down = self.window(obs.now, spec.down_after.as_millis(), |a, b| {
            a.replicas > b.replicas
        });
        if let Some(high) = down
            && high.replicas < current
        {
            return self.propose(spec, obs.now, current, high, Direction::Down);
        }
        None
    }

    /// The recommendations of every signal, for an observation (also what
    /// `observe` records).
    pub fn recommendations(&self, spec: &Autoscale, obs: &Observation<'_>) -> Vec<Recommendation> {
        let s = &self.settings;
        let mut out = Vec::new();
        if let Some(t) = spec.cpu {
            out.push(per_replica(
                Signal::Cpu,
                obs.cpu,
                obs,
                Target::Mean(t.as_f64()),
                s,
            ));
        }
        if let Some(t) = spec.gpu_util {
            out.push(per_replica(
                Signal::GpuUtil,
                obs.gpu_util,
                obs,
                Target::Mean(t.as_f64()),
                s,
            ));
        }
        if let Some(m) = &spec.metric {
            let target = if m.shared {
                Target::Shared(m.per_replica)
            } else {
                Target::Sum(m.per_replica)
            };
            out.push(per_replica(Signal::Metric, obs.metric, obs, target, s));
        }
        if spec.latency_slo {
            let fresh = obs
                .latency_burn
                .filter(|b| obs.now.saturating_sub(b.at) <= s.stale_after && b.value.is_finite());
            match fresh {
                None => out.push(Recommendation {
                    signal: Signal::LatencySlo,
                    replicas: obs.current,
                    value: None,
                    target: s.ticket_burn,
                }),
                Some(b) if b.value > s.ticket_burn => out.push(Recommendation {
                    signal: Signal::LatencySlo,
                    replicas: obs.current.saturating_add(1),
                    value: Some(b.value),
                    target: s.ticket_burn,
                }),
                Some(_) => {}
            }
        }
        out
    }

    fn entry(&self, spec: &Autoscale, obs: &Observation<'_>) -> Entry {
        // The highest wins; on a tie, the first signal in declaration order.
        let top = self
            .recommendations(spec, obs)
            .into_iter()
            .reduce(|best, r| if r.replicas > best.replicas { r } else { best });
        Entry {
            at: obs.now,
            replicas: top.map_or(obs.current, |r| r.replicas),
            top,
        }
    }

    fn push(&mut self, entry: Entry, spec: &Autoscale) {
        self.since.get_or_insert(entry.at);
        self.history.push_back(entry);
        let keep = spec.up_after.as_millis().max(spec.down_after.as_millis());
        let keep = u64::try_from(keep).unwrap_or(u64::MAX);
        while let Some(first) = self.history.front() {
            let too_old = entry.at.saturating_sub(first.at) > keep;
            if too_old || self.history.len() > MAX_HISTORY {
                self.history.pop_front();
            } else {
                break;
            }
        }
    }

    /// The entry of the last `window` ms that `better` prefers, once the
    /// record covers the whole window.
    fn window(
        &self,
        now: Millis,
        window: u128,
        better: impl Fn(&Entry, &Entry) -> bool,
    ) -> Option<Entry> {
        let window = u64::try_from(window).unwrap_or(u64::MAX);
        let start = now.checked_sub(window)?;
        if self.since? > start {
            return None;
        }
        self.history
            .iter()
            .filter(|e| e.at >= start)
            .fold(None, |best: Option<&Entry>, e| match best {
                Some(b) if !better(e, b) => Some(b),
                _ => Some(e),
            })
            .copied()
    }

    fn propose(
        &mut self,
        spec: &Autoscale,
        now: Millis,
        current: u32,
        pick: Entry,
        direction: Direction,
    ) -> Option<Decision> {
        let to = pick.replicas.clamp(spec.min, spec.max);
        if to == current {
            return None;
        }
        if let Some(last) = self.last_change
            && last.direction != direction
            && u128::from(now.saturating_sub(last.at)) < spec.reverse_after.as_millis()
        {
            return None;
        }
        let top = pick.top?;
        let cause = Cause::Signal {
            signal: top.signal,
            value: top.value?,
            target: top.target,
            recommended: pick.replicas,
            bounded: to != pick.replicas,
        };
        Some(self.decide(now, current, to, cause))
    }

    fn decide(&mut self, now: Millis, from: u32, to: u32, cause: Cause) -> Decision {
        let decision = Decision { from, to, cause };
        self.last_change = Some(Change {
            at: now,
            direction: decision.direction(),
        });
        self.reset();
        self.last_current = Some(to);
        decision
    }
}

/// How a per-replica signal's readings are compared with its target.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// The mean reading against a target value (utilisation, percent).
    Mean(f64),
    /// The readings summed against this much per replica.
    Sum(f64),
    /// One shared figure (the largest reading) against this much per replica.
    Shared(f64),
}

/// `ceil(x)` that forgives floating-point dust (`3.0000000001` is 3).
fn ceil_count(x: f64) -> u32 {
    let c = (x - 1e-9).ceil();
    if c <= 0.0 {
        0
    } else if c >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        c as u32
    }
}

fn per_replica(
    signal: Signal,
    samples: &[ReplicaSample],
    obs: &Observation<'_>,
    target: Target,
    s: &AutoscaleSettings,
) -> Recommendation {
    let current = obs.current;
    // The latest fresh reading of each current replica.
    let mut latest: Vec<Option<ReplicaSample>> = vec![None; current as usize];
    for x in samples {
        let fresh = obs.now.saturating_sub(x.at) <= s.stale_after && x.at <= obs.now;
        if !fresh || !x.value.is_finite() || x.value < 0.0 {
            continue;
        }
        if let Some(slot) = latest.get_mut(x.replica as usize)
            && slot.is_none_or(|old| old.at <= x.at)
        {
            *slot = Some(*x);
        }
    }
    let values: Vec<f64> = latest.iter().flatten().map(|x| x.value).collect();
    let present = values.len() as f64;
    let missing = values.len() < current as usize;
    let n = f64::from(current);
    let hold = |target: f64| Recommendation {
        signal,
        replicas: current,
        value: None,
        target,
    };
    let sum: f64 = values.iter().sum();
    // (value, target, ratio with missing replicas left out, ratio with them idle)
    let (value, tgt, ratio, idle_ratio) = match target {
        Target::Mean(t) => {
            if values.is_empty() {
                return hold(t);
            }
            let mean = sum / present;
            (mean, t, mean / t, sum / (n * t))
        }
        Target::Sum(per) => {
            if values.is_empty() {
                return hold(per * n);
            }
            let mean = sum / present;
            (sum, per * n, mean / per, sum / (n * per))
        }
        Target::Shared(per) => {
            if values.is_empty() {
                return hold(per * n);
            }
            let value = values.iter().copied().fold(0.0, f64::max);
            let ratio = value / (per * n);
            (value, per * n, ratio, ratio)
        }
    };
    let within = |r: f64| (r - 1.0).abs() <= s.tolerance;
    let replicas = if within(ratio) {
        current
    } else if ratio < 1.0 {
        if missing {
            return hold(tgt);
        }
        ceil_count(n * ratio).max(1)
    } else if missing {
        if within(idle_ratio) || idle_ratio < 1.0 {
            current
        } else {
            ceil_count(n * idle_ratio)
        }
    } else {
        ceil_count(n * ratio)
    };
    Recommendation {
        signal,
        replicas,
        value: Some(value),
        target: tgt,
    }
}

#[cfg(test)]
mod tests;

/// The value of a gauge in a scrape: its samples summed over their label
/// sets (an agent that splits its queue by label reports the whole).
/// `None` when the scrape has no finite sample of that name.
pub fn gauge(exp: &crate::slo::promtext::Exposition, name: &str) -> Option<f64> {
    let mut seen = false;
    let mut sum = 0.0;
    for s in exp.samples.iter().filter(|s| s.name == name) {
        if !s.value.is_finite() {
            return None;
        }
        seen = true;
        sum += s.value;
    }
    seen.then_some(sum)
}
