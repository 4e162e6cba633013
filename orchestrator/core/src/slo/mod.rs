//! Service-level objectives: per group, three SLIs measured over rolling
//! windows, their error budgets and burn rates.
//!
//! # What is measured
//!
//! A group's `slo:` sets up to three objectives; each is an SLI (a stream
//! of good and bad events) and an error budget (the share of bad events
//! allowed).
//!
//! | SLI | event | bad when | objective | budget |
//! |---|---|---|---|---|
//! | `availability` | one wanted, required replica at one sample | it is not healthy | `availability` (99.5%) | 1 − objective (0.5%) |
//! | `latency` | one request | it took longer than `latency_p99` | 99% of requests at or under it | 1% |
//! | `error_rate` | one request | it failed | 1 − `error_rate` (99.8%) | `error_rate` (0.2%) |
//!
//! The daemon samples availability at a fixed interval
//! ([`SloEngine::record_availability`]: healthy and wanted required
//! replicas), and scrapes each replica's metrics for requests
//! ([`SloEngine::record_scrape`], see [`scrape`] for the series and the
//! reset rule, [`promtext`] for the parser). Latency comes from a request
//! duration histogram, interpolated inside the bucket that holds the
//! threshold as `histogram_quantile` does (see [`histogram`]).
//!
//! # Figures
//!
//! Per SLI and window ([`WINDOWS`]: 5m, 30m, 1h, 6h, 1d, 3d, plus the SLO's
//! own window, 30 days unless configured):
//!
//! - error ratio = bad / (good + bad); no events give no ratio (`None`),
//!   never 0 or NaN;
//! - burn rate = error ratio / budget: 1 spends the budget exactly over the
//!   SLO window, 14.4 spends 2% of a 30-day budget in an hour;
//! - over the SLO window, budget remaining = 1 − error ratio / budget; it
//!   goes negative once the budget is overspent;
//! - good and bad totals since the series began, monotonic, for recording
//!   rules computed from counters.
//!
//! A zero budget (an `error_rate: 0%` objective) burns infinitely fast on
//! the first bad event: burn rate `+Inf`, budget remaining `−Inf`.
//!
//! A [`SliReport`] maps one to one onto the `orchestrator_slo_*` series:
//! `objective.target` is the objective ratio, `totals` the events
//! (good + bad) and errors (bad) counters, each [`WindowReport`] the error
//! ratio and burn rate with `window` printed as its label (`5m` … `30d`),
//! and `budget_remaining` the error budget remaining ratio.
//!
//! # Time, memory and precision
//!
//! Time is an argument, in Unix milliseconds, because the history outlives
//! the daemon. Events are counted in epoch-aligned buckets at three
//! resolutions; [`window`] has the table. Memory per SLI is fixed at most
//! 15.2 KiB of buckets, however long the daemon runs and whatever the SLO
//! window. A window's length is exact to one bucket: 10 s for 5m, 30m and
//! 1h; 5 min for 6h, 1d and 3d; 1 h for a 30-day SLO window.
//!
//! # Restarts and reloads
//!
//! [`SloEngine::snapshot`] gives a versioned, serde state ([`SloState`]);
//! [`SloEngine::restore`] takes it back. A restart after a gap keeps the
//! history older than the gap and counts the gap as no data: no events,
//! neither good nor bad. [`SloEngine::configure`] applies a (re)loaded
//! config: a group whose objectives stay keeps its events; a removed group
//! or SLI loses them; a changed objective keeps the events and changes only
//! the arithmetic; a changed window keeps every event the new window can
//! still see.

pub mod histogram;
pub mod promtext;
pub mod scrape;
mod state;
pub mod window;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::{HostConfig, Slo};
use crate::units::Duration;

pub use histogram::{HistogramCounts, HistogramError};
pub use scrape::{AgentScrape, AgentSeries, ExtractError, RequestDelta, Selector};
pub use state::{STATE_VERSION, SloState, StateError};
pub use window::Counts;

use window::Rings;

/// Milliseconds since the Unix epoch.
pub type UnixMillis = u64;

/// The windows every SLI is reported over, besides its SLO window.
pub const WINDOWS: [Duration; 6] = [
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(3600),
    Duration::from_secs(6 * 3600),
    Duration::from_secs(86_400),
    Duration::from_secs(3 * 86_400),
];

/// The latency objective: this share of requests at or under the threshold.
const LATENCY_TARGET_BP: u32 = 9_900;

/// One of the three service-level indicators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sli {
    Availability,
    Latency,
    ErrorRate,
}

impl Sli {
    pub const ALL: [Sli; 3] = [Sli::Availability, Sli::Latency, Sli::ErrorRate];

    /// The name used in metrics labels and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Sli::Availability => "availability",
            Sli::Latency => "latency",
            Sli::ErrorRate => "error_rate",
        }
    }
}

impl fmt::Display for Sli {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One SLI's objective, as numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Objective {
    pub sli: Sli,
    /// The share of good events aimed for: 0.995, 0.99 for latency, 0.998
    /// for a 0.2% error rate.
    pub target: f64,
    /// The share of bad events allowed: 1 − target.
    pub budget: f64,
    /// The latency threshold (latency only).
    pub threshold: Option<Duration>,
}

impl Objective {
    /// Objectives are kept in hundredths of a percent so that the budget
    /// is computed from integers: 1 − 0.995 in floating point is not 0.005.
    fn from_basis_points(sli: Sli, target_bp: u32, threshold: Option<Duration>) -> Objective {
        let target_bp = target_bp.min(10_000);
        Objective {
            sli,
            target: f64::from(target_bp) / 10_000.0,
            budget: f64::from(10_000 - target_bp) / 10_000.0,
            threshold,
        }
    }

    /// The objectives a group's `slo:` sets, in [`Sli::ALL`] order.
    pub fn of(slo: &Slo) -> Vec<Objective> {
        let mut out = Vec::with_capacity(3);
        if let Some(a) = slo.availability {
            out.push(Self::from_basis_points(
                Sli::Availability,
                a.basis_points(),
                None,
            ));
        }
        if let Some(threshold) = slo.latency_p99 {
            out.push(Self::from_basis_points(
                Sli::Latency,
                LATENCY_TARGET_BP,
                Some(threshold),
            ));
        }
        if let Some(rate) = slo.error_rate {
            let target = 10_000 - rate.basis_points().min(10_000);
            out.push(Self::from_basis_points(Sli::ErrorRate, target, None));
        }
        out
    }

    /// How many times faster than allowed the budget is being spent.
    pub fn burn_rate(&self, error_ratio: f64) -> f64 {
        if self.budget > 0.0 {
            error_ratio / self.budget
        } else if error_ratio > 0.0 {
            f64::INFINITY
        } else {
            0.0
        }
    }

    /// The share of the budget left after an error ratio over the window.
    pub fn budget_remaining(&self, error_ratio: f64) -> f64 {
        1.0 - self.burn_rate(error_ratio)
    }
}

/// Figures over one window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowReport {
    pub window: Duration,
    pub events: Counts,
    /// bad / total; `None` without events.
    pub error_ratio: Option<f64>,
    /// error ratio / budget; `None` without events.
    pub burn_rate: Option<f64>,
}

/// Figures of one SLI of one group.
#[derive(Debug, Clone, PartialEq)]
pub struct SliReport {
    pub objective: Objective,
    pub slo_window: Duration,
    /// [`WINDOWS`] in order, then the SLO window unless it is one of them.
    pub windows: Vec<WindowReport>,
    /// Over the SLO window; `None` without events.
    pub budget_remaining: Option<f64>,
    /// Every event since the series began; monotonic, survives restarts.
    pub totals: Counts,
}

impl SliReport {
    pub fn window(&self, window: Duration) -> Option<&WindowReport> {
        self.windows.iter().find(|w| w.window == window)
    }
}

/// Figures of one group, one entry per SLI its `slo:` sets.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupReport {
    pub group: String,
    pub slis: Vec<SliReport>,
}

impl GroupReport {
    pub fn sli(&self, sli: Sli) -> Option<&SliReport> {
        self.slis.iter().find(|r| r.objective.sli == sli)
    }
}

/// An event could not be recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("group `{group}` has no SLO")]
    NoSlo { group: String },
    #[error("group `{group}` has no {sli} objective")]
    NotMeasured { group: String, sli: Sli },
    #[error("group `{group}` has neither a latency nor an error_rate objective")]
    NoRequestObjective { group: String },
}

/// What a scrape of one replica counted.
#[derive(Debug, Clone, PartialEq)]
pub enum ScrapeOutcome {
    /// The replica's first scrape: kept to compare the next one with.
    Baseline,
    /// The requests since the replica's previous scrape were recorded.
    Counted {
        delta: RequestDelta,
        restarted: bool,
    },
}

/// What a reconfiguration did, per group and SLI.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reconfigured {
    /// New series, starting empty.
    pub added: Vec<(String, Sli)>,
    /// Series that keep their events (their objective may have changed).
    pub kept: Vec<(String, Sli)>,
    /// Series whose events are gone.
    pub dropped: Vec<(String, Sli)>,
    /// Groups whose SLO window changed.
    pub rewindowed: Vec<String>,
}

/// The events of one SLI of one group.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Series {
    rings: Rings,
    totals: Counts,
    /// The fraction of a good request the latency interpolation has
    /// estimated but not yet counted, in `[0, 1)`.
    carry: f64,
}

impl Series {
    fn new(slo_window: Duration) -> Series {
        Series {
            rings: Rings::new(window_ms(slo_window)),
            totals: Counts::default(),
            carry: 0.0,
        }
    }

    fn add(&mut self, now: UnixMillis, good: u64, bad: u64) {
        if good == 0 && bad == 0 {
            return;
        }
        self.totals.good = self.totals.good.saturating_add(good);
        self.totals.bad = self.totals.bad.saturating_add(bad);
        self.rings.add(now, good, bad);
    }

    fn report(&self, now: UnixMillis, objective: Objective, slo_window: Duration) -> SliReport {
        let figures = |window: Duration| {
            let events = self.rings.sum(now, window_ms(window));
            let error_ratio =
                (events.total() > 0).then(|| events.bad as f64 / events.total() as f64);
            WindowReport {
                window,
                events,
                error_ratio,
                burn_rate: error_ratio.map(|r| objective.burn_rate(r)),
            }
        };
        let mut windows: Vec<WindowReport> = WINDOWS.iter().map(|&w| figures(w)).collect();
        let slo = figures(slo_window);
        if !WINDOWS.contains(&slo_window) {
            windows.push(slo);
        }
        SliReport {
            objective,
            slo_window,
            windows,
            budget_remaining: slo.error_ratio.map(|r| objective.budget_remaining(r)),
            totals: self.totals,
        }
    }
}

fn window_ms(window: Duration) -> u64 {
    u64::try_from(window.as_millis()).unwrap_or(u64::MAX)
}

#[derive(Debug, Clone, PartialEq)]
struct GroupSeries {
    /// `None` for a group restored from state and not configured yet.
    slo: Option<Slo>,
    series: BTreeMap<Sli, Series>,
    /// The last scrape of each replica, by the caller's replica id.
    replicas: BTreeMap<String, AgentScrape>,
}

impl GroupSeries {
    fn objective(&self, sli: Sli) -> Option<Objective> {
        Objective::of(self.slo.as_ref()?)
            .into_iter()
            .find(|o| o.sli == sli)
    }
}

/// The SLO figures of every group of one host.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SloEngine {
    groups: BTreeMap<String, GroupSeries>,
}

impl SloEngine {
    /// An engine measuring the SLOs of these groups, with no history.
    pub fn new<'a>(groups: impl IntoIterator<Item = (&'a str, &'a Slo)>) -> SloEngine {
        let mut engine = SloEngine::default();
        engine.configure(groups);
        engine
    }

    /// The groups of a host config that carry an `slo:`, as
    /// [`SloEngine::new`] and [`SloEngine::configure`] take them.
    pub fn slos_of(config: &HostConfig) -> impl Iterator<Item = (&str, &Slo)> {
        config
            .groups
            .iter()
            .filter_map(|g| g.slo.as_ref().map(|slo| (g.name.as_str(), slo)))
    }

    /// Measures exactly these groups from now on; see the module doc for
    /// what is kept. Group names are unique in a loaded config.
    pub fn configure<'a>(
        &mut self,
        groups: impl IntoIterator<Item = (&'a str, &'a Slo)>,
    ) -> Reconfigured {
        let mut out = Reconfigured::default();
        let mut next = BTreeMap::new();
        for (name, slo) in groups {
            let mut old = self.groups.remove(name);
            if let Some(old_slo) = old.as_ref().and_then(|g| g.slo.as_ref())
                && old_slo.window != slo.window
            {
                out.rewindowed.push(name.to_owned());
            }
            let mut series = BTreeMap::new();
            for objective in Objective::of(slo) {
                let sli = objective.sli;
                match old.as_mut().and_then(|g| g.series.remove(&sli)) {
                    Some(mut kept) => {
                        kept.rings.set_slo_window(window_ms(slo.window));
                        series.insert(sli, kept);
                        out.kept.push((name.to_owned(), sli));
                    }
                    None => {
                        series.insert(sli, Series::new(slo.window));
                        out.added.push((name.to_owned(), sli));
                    }
                }
            }
            let mut replicas = BTreeMap::new();
            if let Some(old) = old {
                out.dropped
                    .extend(old.series.into_keys().map(|sli| (name.to_owned(), sli)));
                replicas = old.replicas;
            }
            if !series.contains_key(&Sli::Latency) && !series.contains_key(&Sli::ErrorRate) {
                replicas.clear();
            }
            next.insert(
                name.to_owned(),
                GroupSeries {
                    slo: Some(slo.clone()),
                    series,
                    replicas,
                },
            );
        }
        for (name, gone) in std::mem::replace(&mut self.groups, next) {
            out.dropped
                .extend(gone.series.into_keys().map(|sli| (name.clone(), sli)));
        }
        out.dropped.sort();
        out
    }

    fn series(&mut self, group: &str, sli: Sli) -> Result<&mut Series, RecordError> {
        let g = self
            .groups
            .get_mut(group)
            .filter(|g| g.slo.is_some())
            .ok_or_else(|| RecordError::NoSlo {
                group: group.to_owned(),
            })?;
        g.series
            .get_mut(&sli)
            .ok_or_else(|| RecordError::NotMeasured {
                group: group.to_owned(),
                sli,
            })
    }

    /// One availability sample: `healthy` of the group's `wanted` required
    /// replicas were healthy. A group with nothing wanted (stopped) gives
    /// no events; healthy replicas beyond the wanted count are not counted.
    pub fn record_availability(
        &mut self,
        now: UnixMillis,
        group: &str,
        healthy: u64,
        wanted: u64,
    ) -> Result<(), RecordError> {
        let series = self.series(group, Sli::Availability)?;
        let good = healthy.min(wanted);
        series.add(now, good, wanted - good);
        Ok(())
    }

    /// New requests of one replica of a group: they count for its latency
    /// and error-rate objectives, whichever it has and the delta carries.
    pub fn record_requests(
        &mut self,
        now: UnixMillis,
        group: &str,
        delta: &RequestDelta,
    ) -> Result<(), RecordError> {
        let g = self
            .groups
            .get_mut(group)
            .filter(|g| g.slo.is_some())
            .ok_or_else(|| RecordError::NoSlo {
                group: group.to_owned(),
            })?;
        let threshold = g.slo.as_ref().and_then(|s| s.latency_p99);
        let mut measured = false;
        if let (Some(series), Some(threshold)) = (g.series.get_mut(&Sli::Latency), threshold) {
            measured = true;
            if let Some(durations) = &delta.durations {
                let total = durations.count();
                let estimate = durations.at_or_below(threshold.std().as_secs_f64()) + series.carry;
                // INVARIANT: good ≤ total, since the estimate is at most
                // `total` and the carry under 1.
                let good = (estimate.floor() as u64).min(total);
                series.carry = (estimate - good as f64).clamp(0.0, 1.0 - f64::EPSILON);
                series.add(now, good, total - good);
            }
        }
        if let Some(series) = g.series.get_mut(&Sli::ErrorRate) {
            measured = true;
            if let (Some(requests), Some(errors)) = (delta.requests, delta.errors) {
                let bad = errors.min(requests);
                series.add(now, requests - bad, bad);
            }
        }
        if measured {
            Ok(())
        } else {
            Err(RecordError::NoRequestObjective {
                group: group.to_owned(),
            })
        }
    }

    /// A scrape of one replica (`replica` is any id stable for the replica,
    /// e.g. `Agent#0`). The first scrape is a baseline; each later one
    /// records the requests since the one before (see [`scrape`]).
    pub fn record_scrape(
        &mut self,
        now: UnixMillis,
        group: &str,
        replica: &str,
        scrape: AgentScrape,
    ) -> Result<ScrapeOutcome, RecordError> {
        let g = self
            .groups
            .get_mut(group)
            .filter(|g| g.slo.is_some())
            .ok_or_else(|| RecordError::NoSlo {
                group: group.to_owned(),
            })?;
        if !g.series.contains_key(&Sli::Latency) && !g.series.contains_key(&Sli::ErrorRate) {
            return Err(RecordError::NoRequestObjective {
                group: group.to_owned(),
            });
        }
        let Some(previous) = g.replicas.insert(replica.to_owned(), scrape) else {
            return Ok(ScrapeOutcome::Baseline);
        };
        let (delta, restarted) = g.replicas[replica].since(&previous);
        self.record_requests(now, group, &delta)?;
        Ok(ScrapeOutcome::Counted { delta, restarted })
    }

    /// Forgets a replica's last scrape (its container is gone); true if
    /// there was one.
    pub fn forget_replica(&mut self, group: &str, replica: &str) -> bool {
        self.groups
            .get_mut(group)
            .is_some_and(|g| g.replicas.remove(replica).is_some())
    }

    /// Keeps the last scrapes of the `(group, replica)` pairs `keep` accepts.
    pub fn retain_replicas(&mut self, mut keep: impl FnMut(&str, &str) -> bool) {
        for (group, g) in &mut self.groups {
            g.replicas.retain(|replica, _| keep(group, replica));
        }
    }

    /// The figures of one configured group at `now`.
    pub fn group_report(&self, now: UnixMillis, group: &str) -> Option<GroupReport> {
        let g = self.groups.get(group)?;
        let slo = g.slo.as_ref()?;
        let slis = Objective::of(slo)
            .into_iter()
            .filter_map(|objective| {
                let series = g.series.get(&objective.sli)?;
                Some(series.report(now, objective, slo.window))
            })
            .collect();
        Some(GroupReport {
            group: group.to_owned(),
            slis,
        })
    }

    /// The figures of every configured group at `now`, by group name.
    pub fn report(&self, now: UnixMillis) -> Vec<GroupReport> {
        self.groups
            .keys()
            .filter_map(|group| self.group_report(now, group))
            .collect()
    }

    /// The objective of one SLI of a configured group.
    pub fn objective(&self, group: &str, sli: Sli) -> Option<Objective> {
        self.groups.get(group)?.objective(sli)
    }

    /// Heap bytes held: buckets, names, and the last scrape of each replica.
    pub fn heap_bytes(&self) -> usize {
        let scrape_bytes = |s: &AgentScrape| {
            size_of::<AgentScrape>()
                + s.durations
                    .as_ref()
                    .map_or(0, |h| size_of_val(h.bounds()) + size_of_val(h.cumulative()))
        };
        self.groups
            .iter()
            .map(|(name, g)| {
                name.capacity()
                    + size_of::<GroupSeries>()
                    + g.series
                        .values()
                        .map(|s| size_of::<Series>() + s.rings.heap_bytes())
                        .sum::<usize>()
                    + g.replicas
                        .iter()
                        .map(|(id, s)| id.capacity() + scrape_bytes(s))
                        .sum::<usize>()
            })
            .sum()
    }
}
