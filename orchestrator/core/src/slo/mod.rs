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
//! | `availability` | one wanted, required replica at one sample, unless excused | it is not healthy | `availability` (99.5%) | 1 − objective (0.5%) |
//! | `latency` | one request | it took longer than `latency_p99`, or got no answer | 99% of requests at or under it | 1% |
//! | `error_rate` | one request | it failed, or got no answer | 1 − `error_rate` (99.8%) | `error_rate` (0.2%) |
//!
//! The daemon samples availability at a fixed interval
//! ([`SloEngine::record_availability`] with an [`AvailabilitySample`]:
//! wanted, healthy and excused required replicas), and scrapes each
//! replica's metrics for requests ([`SloEngine::record_scrape`], see
//! [`scrape`] for the series and the reset rule, [`promtext`] for the
//! parser). Latency comes from a request duration histogram, interpolated
//! inside the bucket that holds the threshold as `histogram_quantile` does
//! (see [`histogram`]).
//!
//! **Planned transitions are excused.** An unhealthy replica the caller
//! counts as excused (a group's start until it is first ready, a rollout
//! step's replaced replica within its start period, an operator's stop) is
//! no event at all: neither good nor bad, and not part of the wanted
//! replica time the budget is a share of. A crash, a failed probe or an
//! unplanned restart is not excused.
//!
//! **Requests nobody answered.** A replica's own metrics count only the
//! requests it answered, so a replica that refuses connections would look
//! clean. [`SloEngine::record_unanswered`] takes the health probes that got
//! no answer (connection refused, timeout) from replicas that should be
//! serving: each stands for the requests that replica would have had during
//! one probe interval, at the group's observed request rate (see
//! [`Unanswered`]), all bad, in both request SLIs.
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
//! - budget remaining = 1 − consumed / allowance over the SLO window (the
//!   period), where the allowance is the budget's share of the events the
//!   whole period is expected to hold (see below); it goes negative once
//!   the budget is overspent;
//! - good and bad totals counted by this engine since the series was
//!   created or restored, monotonic, for recording rules computed from
//!   counters (see *Restarts and reloads*).
//!
//! **The allowance.** A 99.5% objective over 30 days allows 0.5% of the
//! events of the whole 30 days: for availability, 0.5% of the period's
//! wanted replica time; for requests, 0.5% of the period's requests. Until
//! the period has been seen whole, its events are extrapolated from the
//! rate seen so far: the period is expected to hold `events × period /
//! observed`, where `observed` runs from the series' first event in the
//! period to now (at most the period). So
//!
//! `budget remaining = 1 − (bad / events) / budget × observed / period`
//!
//! and five minutes of total failure on a fresh host consume
//! `5 min / (0.005 × 30 d)` = 2.3% of a 99.5% budget, not all of it. Once
//! the series is a whole period old, `observed` is the period and this is
//! `1 − period burn rate`. The Prometheus rules compute the same figure
//! from the exported counters (`slo:period_error_budget_remaining:ratio`).
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
//! neither good nor bad.
//!
//! **Counters start from zero at a restore.** The windows use the restored
//! history, but the totals (the exported counters) do not: a snapshot is up
//! to one save interval old, so restoring its totals after a `kill -9`
//! would move a counter Prometheus has already seen backwards (2052 to
//! 1862), and Prometheus would take the whole restored value for new
//! events. A counter that restarts from zero is a reset Prometheus
//! understands: `rate()` and `increase()` count only what came after it.
//! The state therefore keeps no totals. [`SloEngine::configure`] applies a (re)loaded
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

    /// The share of the period's budget left after `error_ratio` over the
    /// part of the period seen so far, `observed_share` of it (1 once the
    /// whole period has been seen): `1 − burn rate × observed share`.
    pub fn budget_remaining(&self, error_ratio: f64, observed_share: f64) -> f64 {
        let burn = self.burn_rate(error_ratio);
        // INVARIANT: a zero budget burns +Inf on any error; +Inf × 0 (the
        // first instant) would be NaN, so nothing observed spends nothing.
        if observed_share <= 0.0 {
            return 1.0;
        }
        1.0 - burn * observed_share.min(1.0)
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
    /// 1 − consumed / allowance over the SLO window (see the module doc);
    /// `None` without events in it.
    pub budget_remaining: Option<f64>,
    /// How the allowance was worked out; `None` without events in the SLO
    /// window.
    pub allowance: Option<Allowance>,
    /// Every event counted since the series was created or restored in
    /// this process: monotonic; the exported counters.
    pub totals: Counts,
}

/// The share of the period's events the budget allows, and what is spent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Allowance {
    /// From the series' first event in the period to now, at most the
    /// period.
    pub observed: Duration,
    /// The events the whole period is expected to hold: the events seen,
    /// extrapolated from `observed` to the period. `None` while nothing
    /// has been observed for any time (the first instant).
    pub expected_events: Option<f64>,
    /// Bad events allowed over the period: budget × expected events.
    pub allowed_bad: Option<f64>,
    /// Bad events in the period so far.
    pub consumed: u64,
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

/// One availability sample of one group's required replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AvailabilitySample {
    /// Replicas the group should have running: every replica of its
    /// required agents while it is started; 0 when it is stopped.
    pub wanted: u64,
    /// Wanted replicas that are running and healthy.
    pub healthy: u64,
    /// Wanted replicas that are not healthy because of a planned
    /// transition: the group's start until it is first ready, a rollout
    /// step's replaced replica within its start period, an operator's stop.
    /// They count neither as good nor as bad. A crash, a failed probe or an
    /// unplanned restart is never excused.
    pub excused: u64,
}

impl AvailabilitySample {
    /// `(good, bad)` events: healthy replicas beyond the wanted count are
    /// not counted, and no more replicas are excused than are unhealthy.
    pub fn events(self) -> (u64, u64) {
        let good = self.healthy.min(self.wanted);
        let unhealthy = self.wanted - good;
        (good, unhealthy - self.excused.min(unhealthy))
    }
}

/// Health probes of one group's replicas that got no answer at all
/// (connection refused, timeout) while the replicas should have been
/// serving. The agent's own metrics never see these requests.
///
/// Each failed probe stands for the requests its replica would have had
/// during one probe `interval`: the group's request rate over the SLO
/// period (the same observed rate the allowance extrapolates), divided by
/// the `replicas` that share it, rounded, and at least one. All of them
/// are bad, in the error-rate and the latency SLI alike. A replica that
/// does not answer for a time `D` therefore consumes about
/// `D / (budget × period × replicas)` of the budget, whatever its traffic,
/// as an unhealthy replica does for availability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unanswered {
    /// Failed probes, across the group's replicas.
    pub probes: u64,
    /// The probe interval: the time each failed probe stands for.
    pub interval: Duration,
    /// Replicas of the group that should be serving requests (the group's
    /// rate is shared among them); 0 is taken as 1.
    pub replicas: u64,
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
    /// When the series had its first event (kept across restarts); the
    /// start of the observed span while it lies inside the period.
    first_event: Option<UnixMillis>,
    /// The fraction of a good request the latency interpolation has
    /// estimated but not yet counted, in `[0, 1)`.
    carry: f64,
}

impl Series {
    fn new(slo_window: Duration) -> Series {
        Series {
            rings: Rings::new(window_ms(slo_window)),
            totals: Counts::default(),
            first_event: None,
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
        if self.first_event.is_none_or(|first| now < first) {
            self.first_event = Some(now);
        }
    }

    /// From the first event of the period to `now`, at most the period;
    /// `None` without events in the period. The exact first event when it
    /// lies in the period (a young series), else the start of the oldest
    /// bucket in the period that holds events.
    fn observed_ms(&self, now: UnixMillis, period_ms: u64) -> Option<u64> {
        let since = match self.first_event {
            Some(first) if first <= now && now - first < period_ms => first,
            _ => self.rings.first_bucket_start(now, period_ms)?,
        };
        Some(now.saturating_sub(since).min(period_ms))
    }

    /// The events per millisecond the period is expected to see; `None`
    /// without events or before any time has passed.
    fn rate_per_ms(&self, now: UnixMillis, period_ms: u64) -> Option<f64> {
        let observed = self.observed_ms(now, period_ms).filter(|&o| o > 0)?;
        let events = self.rings.sum(now, period_ms).total();
        (events > 0).then(|| events as f64 / observed as f64)
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
        let period_ms = window_ms(slo_window);
        let allowance = slo
            .error_ratio
            .and(self.observed_ms(now, period_ms))
            .map(|observed| {
                let expected_events = (observed > 0)
                    .then(|| slo.events.total() as f64 * period_ms as f64 / observed as f64);
                Allowance {
                    observed: Duration::from_millis(observed),
                    expected_events,
                    allowed_bad: expected_events.map(|e| e * objective.budget),
                    consumed: slo.events.bad,
                }
            });
        let budget_remaining = slo.error_ratio.zip(allowance).map(|(ratio, a)| {
            let share = window_ms(a.observed) as f64 / period_ms.max(1) as f64;
            objective.budget_remaining(ratio, share)
        });
        SliReport {
            objective,
            slo_window,
            windows,
            budget_remaining,
            allowance,
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

    /// One availability sample of a group's required replicas (see
    /// [`AvailabilitySample::events`]). A group with nothing wanted
    /// (stopped) gives no events; excused replicas give none either.
    pub fn record_availability(
        &mut self,
        now: UnixMillis,
        group: &str,
        sample: AvailabilitySample,
    ) -> Result<(), RecordError> {
        let series = self.series(group, Sli::Availability)?;
        let (good, bad) = sample.events();
        series.add(now, good, bad);
        Ok(())
    }

    /// Health probes that got no answer from replicas that should have been
    /// serving (see [`Unanswered`]): bad events in the group's error-rate
    /// and latency SLIs, whichever it has. Returns the bad events recorded
    /// in each.
    pub fn record_unanswered(
        &mut self,
        now: UnixMillis,
        group: &str,
        unanswered: Unanswered,
    ) -> Result<u64, RecordError> {
        let g = self
            .groups
            .get_mut(group)
            .filter(|g| g.slo.is_some())
            .ok_or_else(|| RecordError::NoSlo {
                group: group.to_owned(),
            })?;
        let period_ms = g.slo.as_ref().map_or(0, |s| window_ms(s.window));
        let measured: Vec<Sli> = [Sli::ErrorRate, Sli::Latency]
            .into_iter()
            .filter(|sli| g.series.contains_key(sli))
            .collect();
        if measured.is_empty() {
            return Err(RecordError::NoRequestObjective {
                group: group.to_owned(),
            });
        }
        // One rate for both SLIs: requests are requests. The error-rate
        // series counts every answered request; latency only those with a
        // duration, so it is the fallback.
        let rate = measured
            .iter()
            .find_map(|sli| g.series.get(sli)?.rate_per_ms(now, period_ms))
            .unwrap_or(0.0);
        let interval_ms = window_ms(unanswered.interval) as f64;
        let per_probe = (rate * interval_ms / unanswered.replicas.max(1) as f64).round();
        // Saturating float-to-int conversion; at least one per probe.
        let per_probe = (per_probe as u64).max(1);
        let bad = unanswered.probes.saturating_mul(per_probe);
        for sli in measured {
            if let Some(series) = g.series.get_mut(&sli) {
                series.add(now, 0, bad);
            }
        }
        Ok(bad)
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
