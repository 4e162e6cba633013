//! The SLO arithmetic, checked as data: record events, compare the figures.
//! Every expected figure is worked out by hand from the inputs.

use proptest::prelude::*;

use super::*;
use crate::units::Percent;

const S: u64 = 1_000;
const M: u64 = 60 * S;
const H: u64 = 60 * M;
const DAY: u64 = 24 * H;
/// Midnight UTC, 2023-11-14.
const BASE: u64 = 19_675 * DAY;

/// `day` days after BASE (negative: before), at `h:m:s.ms`.
fn t(day: i64, h: u64, m: u64, s: u64, ms: u64) -> u64 {
    (BASE as i64 + day * DAY as i64) as u64 + h * H + m * M + s * S + ms
}

fn d(text: &str) -> Duration {
    Duration::parse(text).unwrap()
}

fn slo(
    availability: Option<&str>,
    latency: Option<&str>,
    error_rate: Option<&str>,
    window: &str,
) -> Slo {
    Slo {
        availability: availability.map(|p| Percent::parse(p).unwrap()),
        latency_p99: latency.map(d),
        error_rate: error_rate.map(|p| Percent::parse(p).unwrap()),
        window: d(window),
    }
}

fn engine(groups: &[(&str, &Slo)]) -> SloEngine {
    SloEngine::new(groups.iter().map(|(g, s)| (*g, *s)))
}

fn sli_report(e: &SloEngine, now: u64, group: &str, sli: Sli) -> SliReport {
    e.group_report(now, group)
        .and_then(|g| g.sli(sli).cloned())
        .unwrap_or_else(|| panic!("no {sli} report for {group}"))
}

fn close(got: f64, want: f64) -> bool {
    got == want || (got - want).abs() <= 1e-12 * want.abs().max(1.0)
}

fn assert_close(got: Option<f64>, want: Option<f64>, what: &str) {
    let ok = match (got, want) {
        (Some(g), Some(w)) => close(g, w),
        (None, None) => true,
        _ => false,
    };
    assert!(ok, "{what}: got {got:?}, want {want:?}");
}

/// `healthy` of `wanted` replicas healthy, none excused.
fn avail(healthy: u64, wanted: u64) -> AvailabilitySample {
    AvailabilitySample {
        wanted,
        healthy,
        excused: 0,
    }
}

fn hist(bounds: &[f64], cumulative: &[u64], count: u64) -> HistogramCounts {
    HistogramCounts::new(bounds.to_vec(), cumulative.to_vec(), count).unwrap()
}

// ---------------------------------------------------------------- windows

/// Noon plus 7.5 s: inside the 10 s bucket 12:00:00, the 5 min bucket
/// 12:00 and the hour bucket 12:00.
fn noonish() -> u64 {
    t(0, 12, 0, 7, 500)
}

/// One bad availability event at `at`; is it in `window` at `noonish()`?
fn check_window(window: &str, at: u64, inside: bool) {
    let s = slo(Some("99%"), None, None, "30d");
    let mut e = engine(&[("g", &s)]);
    e.record_availability(at, "g", avail(0, 1)).unwrap();
    let r = sli_report(&e, noonish(), "g", Sli::Availability);
    let w = r.window(d(window)).unwrap();
    assert_eq!(
        w.events.bad,
        u64::from(inside),
        "{window}: event at {} ms from noon",
        at as i64 - t(0, 12, 0, 0, 0) as i64
    );
    // The totals never forget.
    assert_eq!(r.totals, Counts { good: 0, bad: 1 });
}

#[test]
fn a_window_is_its_bucket_count_back_from_the_bucket_of_now() {
    // 5m = 30 ten-second buckets: the bucket of 12:00:00 and 29 before it,
    // so from 11:55:10.
    check_window("5m", t(0, 11, 55, 10, 0), true);
    check_window("5m", t(0, 11, 55, 9, 999), false);
    check_window("5m", noonish(), true);
    // Later in the bucket of now: still that bucket. The next bucket: not yet.
    check_window("5m", t(0, 12, 0, 9, 999), true);
    check_window("5m", t(0, 12, 0, 10, 0), false);
    // 30m = 180 buckets of 10 s: from 11:30:10.
    check_window("30m", t(0, 11, 30, 10, 0), true);
    check_window("30m", t(0, 11, 30, 9, 999), false);
    // 1h = 360 buckets of 10 s: from 11:00:10.
    check_window("1h", t(0, 11, 0, 10, 0), true);
    check_window("1h", t(0, 11, 0, 9, 999), false);
    // 6h = 72 buckets of 5 min: the bucket of 12:00 and 71 before, from 06:05.
    check_window("6h", t(0, 6, 5, 0, 0), true);
    check_window("6h", t(0, 6, 4, 59, 999), false);
    // 1d = 288 buckets of 5 min: from 12:05 the day before.
    check_window("1d", t(-1, 12, 5, 0, 0), true);
    check_window("1d", t(-1, 12, 4, 59, 999), false);
    // 3d = 864 buckets of 5 min: from 12:05 three days before.
    check_window("3d", t(-3, 12, 5, 0, 0), true);
    check_window("3d", t(-3, 12, 4, 59, 999), false);
    // 30d = 720 buckets of an hour: from 13:00 thirty days before.
    check_window("30d", t(-30, 13, 0, 0, 0), true);
    check_window("30d", t(-30, 12, 59, 59, 999), false);
}

#[test]
fn the_report_lists_every_window_once() {
    let at = noonish();
    let cases = [
        ("30d", vec!["5m", "30m", "1h", "6h", "1d", "3d", "30d"]),
        ("1d", vec!["5m", "30m", "1h", "6h", "1d", "3d"]),
        ("7d", vec!["5m", "30m", "1h", "6h", "1d", "3d", "7d"]),
    ];
    for (window, want) in cases {
        let s = slo(Some("99%"), None, None, window);
        let e = engine(&[("g", &s)]);
        let r = sli_report(&e, at, "g", Sli::Availability);
        let got: Vec<String> = r.windows.iter().map(|w| w.window.to_string()).collect();
        assert_eq!(got, want, "SLO window {window}");
        assert_eq!(r.slo_window, d(window));
    }
}

#[test]
fn a_short_slo_window_is_read_from_the_finer_rings() {
    // A 2h SLO window: 24 buckets of 5 min, from 10:05 at noonish().
    let s = slo(Some("99%"), None, None, "2h");
    let mut e = engine(&[("g", &s)]);
    e.record_availability(t(0, 10, 5, 0, 0), "g", avail(1, 1))
        .unwrap();
    e.record_availability(t(0, 10, 4, 59, 999), "g", avail(0, 1))
        .unwrap();
    let r = sli_report(&e, noonish(), "g", Sli::Availability);
    assert_eq!(
        r.window(d("2h")).unwrap().events,
        Counts { good: 1, bad: 0 }
    );
    assert_eq!(r.budget_remaining, Some(1.0));
}

#[test]
fn windows_without_events_have_no_ratio() {
    let s = slo(Some("99%"), Some("1s"), Some("1%"), "30d");
    let mut e = engine(&[("g", &s)]);
    // An event 2 hours ago: outside 5m..1h, inside 6h and on.
    e.record_availability(t(0, 10, 0, 0, 0), "g", avail(0, 1))
        .unwrap();
    let r = sli_report(&e, noonish(), "g", Sli::Availability);
    for w in &r.windows {
        let has = w.window >= d("6h");
        assert_eq!(w.error_ratio.is_some(), has, "{}", w.window);
        assert_eq!(w.burn_rate.is_some(), has, "{}", w.window);
    }
    // The other SLIs saw nothing at all.
    for sli in [Sli::Latency, Sli::ErrorRate] {
        let r = sli_report(&e, noonish(), "g", sli);
        assert!(r.windows.iter().all(|w| w.error_ratio.is_none()
            && w.burn_rate.is_none()
            && w.events == Counts::default()));
        assert_eq!(r.budget_remaining, None);
        assert_eq!(r.totals, Counts::default());
    }
}

#[test]
fn a_stopped_group_gives_no_availability_events() {
    let s = slo(Some("99%"), None, None, "30d");
    let mut e = engine(&[("g", &s)]);
    let now = noonish();
    e.record_availability(now, "g", avail(0, 0)).unwrap();
    // Healthy replicas beyond the wanted count are not counted.
    e.record_availability(now, "g", avail(5, 3)).unwrap();
    let r = sli_report(&e, now, "g", Sli::Availability);
    assert_eq!(
        r.window(d("5m")).unwrap().events,
        Counts { good: 3, bad: 0 }
    );
}

// --------------------------------------------------------- budget and burn

/// Records `good` and `bad` events of `sli` at one instant, then compares
/// `(target, budget, 5m error ratio, 5m burn rate, budget remaining after
/// a whole period at that ratio)`.
fn check_figures(
    sli: Sli,
    s: &Slo,
    good: u64,
    bad: u64,
    want: (f64, f64, Option<f64>, Option<f64>, Option<f64>),
) {
    let mut e = engine(&[("g", s)]);
    let now = noonish();
    match sli {
        Sli::Availability => e
            .record_availability(now, "g", avail(good, good + bad))
            .unwrap(),
        Sli::Latency => {
            // Every good request at or under the 2 s threshold (a bucket
            // bound, so nothing is interpolated), every bad one over it.
            let delta = RequestDelta {
                durations: Some(hist(&[2.0, 10.0], &[good, good + bad], good + bad)),
                ..RequestDelta::default()
            };
            e.record_requests(now, "g", &delta).unwrap();
        }
        Sli::ErrorRate => {
            let delta = RequestDelta {
                requests: Some(good + bad),
                errors: Some(bad),
                durations: None,
            };
            e.record_requests(now, "g", &delta).unwrap();
        }
    }
    let r = sli_report(&e, now, "g", sli);
    let w = r.window(d("5m")).unwrap();
    let what = format!("{sli} {s:?} {good}/{bad}");
    assert_close(
        Some(r.objective.target),
        Some(want.0),
        &format!("{what}: target"),
    );
    assert_close(
        Some(r.objective.budget),
        Some(want.1),
        &format!("{what}: budget"),
    );
    assert_close(w.error_ratio, want.2, &format!("{what}: ratio"));
    assert_close(w.burn_rate, want.3, &format!("{what}: burn"));
    assert_close(
        w.error_ratio.map(|x| r.objective.budget_remaining(x, 1.0)),
        want.4,
        &format!("{what}: remaining"),
    );
    // At the first instant nothing has been observed for any time: the
    // period's allowance is unknown and nothing of it is spent yet.
    let first = (good + bad > 0).then_some(1.0);
    assert_close(r.budget_remaining, first, &format!("{what}: at once"));
    assert_eq!(r.totals, Counts { good, bad }, "{what}");
    assert_eq!(w.events, Counts { good, bad }, "{what}");
}

#[test]
fn budgets_burn_rates_and_what_remains() {
    let a995 = slo(Some("99.5%"), None, None, "30d");
    let a999 = slo(Some("99.9%"), None, None, "30d");
    let a9995 = slo(Some("99.95%"), None, None, "30d");
    let lat = slo(None, Some("2s"), None, "30d");
    let e02 = slo(None, None, Some("0.2%"), "30d");
    let e1 = slo(None, None, Some("1%"), "30d");
    let e0 = slo(None, None, Some("0%"), "30d");
    use Sli::*;
    // Spending exactly the budget: burn 1, nothing left.
    check_figures(
        Availability,
        &a995,
        995,
        5,
        (0.995, 0.005, Some(0.005), Some(1.0), Some(0.0)),
    );
    // Twice the budget: overspent by one budget.
    check_figures(
        Availability,
        &a995,
        990,
        10,
        (0.995, 0.005, Some(0.01), Some(2.0), Some(-1.0)),
    );
    check_figures(
        Availability,
        &a995,
        1000,
        0,
        (0.995, 0.005, Some(0.0), Some(0.0), Some(1.0)),
    );
    check_figures(
        Availability,
        &a999,
        999,
        1,
        (0.999, 0.001, Some(0.001), Some(1.0), Some(0.0)),
    );
    // 1 in 20 000 against a 0.05% budget: a tenth of it.
    check_figures(
        Availability,
        &a9995,
        19_999,
        1,
        (0.9995, 0.0005, Some(0.00005), Some(0.1), Some(0.9)),
    );
    check_figures(Availability, &a995, 0, 0, (0.995, 0.005, None, None, None));
    // Latency: 99% under the threshold, so a 1% budget.
    check_figures(
        Latency,
        &lat,
        99,
        1,
        (0.99, 0.01, Some(0.01), Some(1.0), Some(0.0)),
    );
    check_figures(
        Latency,
        &lat,
        50,
        50,
        (0.99, 0.01, Some(0.5), Some(50.0), Some(-49.0)),
    );
    // Error rate: the budget is the rate itself.
    check_figures(
        ErrorRate,
        &e02,
        999,
        1,
        (0.998, 0.002, Some(0.001), Some(0.5), Some(0.5)),
    );
    check_figures(
        ErrorRate,
        &e1,
        90,
        10,
        (0.99, 0.01, Some(0.1), Some(10.0), Some(-9.0)),
    );
    // A zero budget: nothing burns until the first error, then infinitely.
    check_figures(
        ErrorRate,
        &e0,
        10,
        0,
        (1.0, 0.0, Some(0.0), Some(0.0), Some(1.0)),
    );
    check_figures(
        ErrorRate,
        &e0,
        9,
        1,
        (
            1.0,
            0.0,
            Some(0.1),
            Some(f64::INFINITY),
            Some(f64::NEG_INFINITY),
        ),
    );
}

#[test]
fn errors_beyond_the_requests_count_once_each() {
    let s = slo(None, None, Some("1%"), "30d");
    let mut e = engine(&[("g", &s)]);
    let delta = RequestDelta {
        requests: Some(3),
        errors: Some(5),
        durations: None,
    };
    e.record_requests(noonish(), "g", &delta).unwrap();
    let r = sli_report(&e, noonish(), "g", Sli::ErrorRate);
    assert_eq!(r.totals, Counts { good: 0, bad: 3 });
}

// ------------------------------------------------ the SRE workbook's cases

/// The last millisecond before noon: every window then ends on a bucket
/// edge of every ring, so each covers exactly its length.
fn end() -> u64 {
    t(0, 11, 59, 59, 999)
}

/// 30 days of availability samples, one a minute, 10 000 replicas each
/// (the arithmetic needs fine ratios); `bad(minutes_before_end)` of them
/// unhealthy. The series began a day before the period, so the whole
/// period has been observed. Returns the figures at `end()`.
fn thirty_days(bad: impl Fn(u64) -> u64) -> SliReport {
    let s = slo(Some("99.9%"), None, None, "30d");
    let mut e = engine(&[("g", &s)]);
    for k in (0..31 * 24 * 60).rev() {
        let b = bad(k);
        e.record_availability(end() - k * M, "g", avail(10_000 - b, 10_000))
            .unwrap();
    }
    sli_report(&e, end(), "g", Sli::Availability)
}

/// `(window, burn rate)` rows and the budget left over the 30 days.
fn check_workbook(report: &SliReport, burns: &[(&str, f64)], remaining: f64) {
    assert_eq!(
        report.window(d("30d")).unwrap().events.total(),
        432_000_000,
        "30 days × 1440 × 10 000"
    );
    for &(window, want) in burns {
        let got = report.window(d(window)).unwrap().burn_rate;
        assert_close(got, Some(want), window);
    }
    // The period read at `end()` is 720 whole hours less its last
    // millisecond, so `observed` falls short of 30 days by 1 ms.
    let got = report.budget_remaining.unwrap();
    assert!(
        (got - remaining).abs() < 1e-9,
        "budget remaining: got {got}, want {remaining}"
    );
    let a = report.allowance.unwrap();
    assert_eq!(a.observed, Duration::from_millis(30 * DAY - 1));
    assert_eq!(a.consumed, report.window(d("30d")).unwrap().events.bad);
}

#[test]
fn a_fast_burn_of_14_4_for_an_hour_spends_2_percent() {
    // 1.44% unhealthy for the last hour: 144 in 10 000.
    let r = thirty_days(|k| if k < 60 { 144 } else { 0 });
    // 60 × 144 = 8 640 bad. Per window: 8 640 / events / 0.001.
    check_workbook(
        &r,
        &[
            ("5m", 14.4),
            ("1h", 14.4),
            ("6h", 8_640.0 / 3_600_000.0 / 0.001),
            ("1d", 8_640.0 / 14_400_000.0 / 0.001),
            ("3d", 8_640.0 / 43_200_000.0 / 0.001),
            ("30d", 0.02),
        ],
        0.98,
    );
}

#[test]
fn a_burn_of_6_for_six_hours_spends_5_percent() {
    let r = thirty_days(|k| if k < 360 { 60 } else { 0 });
    // 360 × 60 = 21 600 bad.
    check_workbook(
        &r,
        &[
            ("30m", 6.0),
            ("6h", 6.0),
            ("1d", 1.5),
            ("3d", 0.5),
            ("30d", 0.05),
        ],
        0.95,
    );
}

#[test]
fn a_burn_of_1_for_three_days_spends_10_percent() {
    let r = thirty_days(|k| if k < 3 * 1440 { 10 } else { 0 });
    check_workbook(
        &r,
        &[("6h", 1.0), ("1d", 1.0), ("3d", 1.0), ("30d", 0.1)],
        0.9,
    );
}

#[test]
fn five_minutes_of_total_failure_spend_a_ninth_of_a_30_day_budget() {
    let r = thirty_days(|k| if k < 5 { 10_000 } else { 0 });
    // 50 000 bad: 5 minutes of 43 200, i.e. 11.6% of a 0.1% budget.
    check_workbook(
        &r,
        &[
            ("5m", 1_000.0),
            ("30m", 50_000.0 / 300_000.0 / 0.001),
            ("1h", 50_000.0 / 600_000.0 / 0.001),
            ("6h", 50_000.0 / 3_600_000.0 / 0.001),
            ("30d", 5.0 / 43_200.0 / 0.001),
        ],
        1.0 - 5.0 / 43_200.0 / 0.001,
    );
}

#[test]
fn the_short_window_detects_fast_and_resets_fast() {
    // One sample every 10 s, 100 replicas: an hour healthy, then all down.
    let s = slo(Some("99.9%"), None, None, "30d");
    let mut e = engine(&[("g", &s)]);
    let start = t(0, 11, 0, 0, 0);
    let mut now = start;
    while now < t(0, 12, 0, 0, 0) {
        e.record_availability(now, "g", avail(100, 100)).unwrap();
        now += 10 * S;
    }
    let burn = |e: &SloEngine, at: u64, w: &str| {
        sli_report(e, at, "g", Sli::Availability)
            .window(d(w))
            .unwrap()
            .burn_rate
            .unwrap()
    };
    let page = |e: &SloEngine, at: u64| burn(e, at, "1h") > 14.4 && burn(e, at, "5m") > 14.4;
    // The 1h window holds 360 samples of 100: k bad samples burn
    // k × 100 / 36 000 / 0.001 = 2.78 k, so 14.4 is crossed at k = 6
    // (the workbook: 0.864 minutes of total failure, here rounded up to
    // whole 10 s samples).
    let mut fired_at = None;
    for k in 1..=60u64 {
        e.record_availability(now, "g", avail(0, 100)).unwrap();
        if fired_at.is_none() && page(&e, now) {
            fired_at = Some(k);
        }
        now += 10 * S;
    }
    assert_eq!(fired_at, Some(6));
    // Ten minutes down, then healthy again. The 5m window forgets the
    // outage after 30 good samples; the 1h window still burns at
    // 6 000 / 36 000 / 0.001 = 166.7, so the page stops on the short one.
    let mut reset_at = None;
    for k in 1..=40u64 {
        e.record_availability(now, "g", avail(100, 100)).unwrap();
        if reset_at.is_none() && !page(&e, now) {
            reset_at = Some(k);
            assert_close(Some(burn(&e, now, "5m")), Some(0.0), "5m after the outage");
            assert_close(
                Some(burn(&e, now, "1h")),
                Some(6_000.0 / 36_000.0 / 0.001),
                "1h after the outage",
            );
        }
        now += 10 * S;
    }
    assert_eq!(reset_at, Some(30));
}

// -------------------------------------------------------- restarts and gaps

fn through_disk(e: &SloEngine) -> SloEngine {
    let text = e.snapshot().to_json();
    SloEngine::restore(SloState::from_json(&text).unwrap()).unwrap()
}

#[test]
fn a_restart_after_a_gap_keeps_the_history_and_counts_the_gap_as_nothing() {
    let s = slo(Some("99%"), None, None, "30d");
    let mut e = engine(&[("g", &s)]);
    // From 09:00 to 10:00, a sample every 10 s; 6 of the 360 are bad.
    for i in 0..360u64 {
        let healthy = u64::from(i % 60 != 0);
        e.record_availability(t(0, 9, 0, 0, 0) + i * 10 * S, "g", avail(healthy, 1))
            .unwrap();
    }
    let mut back = through_disk(&e);
    // Restored, not configured: nothing measured yet.
    assert_eq!(back.report(noonish()), vec![]);
    assert_eq!(
        back.record_availability(noonish(), "g", avail(1, 1)),
        Err(RecordError::NoSlo { group: "g".into() })
    );
    let changes = back.configure([("g", &s)]);
    assert_eq!(changes.kept, vec![("g".to_string(), Sli::Availability)]);
    assert_eq!(changes.rewindowed, Vec::<String>::new());
    // Down from 10:00 to noon, then one healthy sample.
    back.record_availability(noonish(), "g", avail(1, 1))
        .unwrap();
    let r = sli_report(&back, noonish(), "g", Sli::Availability);
    let events = |w: &str| r.window(d(w)).unwrap().events;
    // The short windows see only the new sample: the gap is no data.
    assert_eq!(events("5m"), Counts { good: 1, bad: 0 });
    assert_eq!(events("1h"), Counts { good: 1, bad: 0 });
    // The long ones see the hour before the gap, and nothing for the gap.
    assert_eq!(events("6h"), Counts { good: 355, bad: 6 });
    assert_eq!(events("30d"), Counts { good: 355, bad: 6 });
    // The exported counters start from zero: only the new sample.
    assert_eq!(r.totals, Counts { good: 1, bad: 0 });
    // The period was observed from its first event, 09:00, kept across
    // the restart: 3 h 0 min 7.5 s of 30 days.
    let observed = noonish() - t(0, 9, 0, 0, 0);
    assert_eq!(
        r.allowance.unwrap().observed,
        Duration::from_millis(observed)
    );
    assert_close(
        r.budget_remaining,
        Some(1.0 - 6.0 / 361.0 / 0.01 * observed as f64 / (30 * DAY) as f64),
        "remaining",
    );
}

#[test]
fn a_gap_longer_than_a_ring_empties_only_that_ring() {
    let s = slo(Some("99%"), None, None, "30d");
    let mut e = engine(&[("g", &s)]);
    e.record_availability(t(-2, 12, 0, 0, 0), "g", avail(0, 1))
        .unwrap();
    let mut back = through_disk(&e);
    back.configure([("g", &s)]);
    back.record_availability(noonish(), "g", avail(1, 1))
        .unwrap();
    let r = sli_report(&back, noonish(), "g", Sli::Availability);
    let events = |w: &str| r.window(d(w)).unwrap().events;
    assert_eq!(events("1h"), Counts { good: 1, bad: 0 });
    assert_eq!(events("1d"), Counts { good: 1, bad: 0 });
    assert_eq!(events("3d"), Counts { good: 1, bad: 1 });
    assert_eq!(events("30d"), Counts { good: 1, bad: 1 });
}

#[test]
fn a_clock_that_stepped_back_records_into_the_buckets_it_still_holds() {
    let s = slo(Some("99%"), None, None, "30d");
    let mut e = engine(&[("g", &s)]);
    e.record_availability(noonish(), "g", avail(1, 1)).unwrap();
    let mut back = through_disk(&e);
    back.configure([("g", &s)]);
    // The clock now reads 4 minutes earlier.
    back.record_availability(noonish() - 4 * M, "g", avail(0, 1))
        .unwrap();
    let r = sli_report(&back, noonish(), "g", Sli::Availability);
    assert_eq!(
        r.window(d("5m")).unwrap().events,
        Counts { good: 1, bad: 1 }
    );
}

#[test]
fn a_state_that_cannot_be_used_is_refused_by_name() {
    let s = slo(Some("99%"), Some("1s"), None, "30d");
    let mut e = engine(&[("g", &s)]);
    e.record_availability(noonish(), "g", avail(0, 1)).unwrap();
    let good = e.snapshot().to_json();
    let version = good.replacen("\"version\":2", "\"version\":7", 1);
    assert_eq!(
        SloState::from_json(&version),
        Err(StateError::Version { found: 7 })
    );
    assert!(matches!(
        SloState::from_json("{\"version\":1,\"groups\":{\"g\":{\"x\":{}}}}"),
        Err(StateError::Format { .. })
    ));
    assert!(matches!(
        SloState::from_json("[]"),
        Err(StateError::Format { .. })
    ));
    assert!(matches!(
        SloState::from_json(""),
        Err(StateError::Format { .. })
    ));
    // A well-formed state whose rings do not fit.
    let shape = good.replacen("\"resolution_ms\":10000", "\"resolution_ms\":20000", 1);
    assert_eq!(
        SloState::from_json(&shape).map(SloEngine::restore),
        Ok(Err(StateError::Corrupt {
            group: "g".into(),
            sli: Sli::Availability,
            what: "a ring of an unknown shape"
        }))
    );
    let head = noonish() / 10_000;
    let outside = good.replacen(
        &format!("\"head\":{head}"),
        &format!("\"head\":{}", head + 400),
        1,
    );
    assert_eq!(
        SloState::from_json(&outside).map(SloEngine::restore),
        Ok(Err(StateError::Corrupt {
            group: "g".into(),
            sli: Sli::Availability,
            what: "buckets outside their ring"
        }))
    );
    let lengths = good.replacen("\"bad\":[1]", "\"bad\":[1,1]", 1);
    assert_eq!(
        SloState::from_json(&lengths).map(SloEngine::restore),
        Ok(Err(StateError::Corrupt {
            group: "g".into(),
            sli: Sli::Availability,
            what: "good and bad counts of different lengths"
        }))
    );
    let carry = good.replacen("\"fine\":", "\"latency_carry\":1.5,\"fine\":", 1);
    assert_eq!(
        SloState::from_json(&carry).map(SloEngine::restore),
        Ok(Err(StateError::Corrupt {
            group: "g".into(),
            sli: Sli::Availability,
            what: "a latency carry outside [0, 1)"
        }))
    );
}

// ----------------------------------------------------------- reconfiguration

#[test]
fn reconfiguring_keeps_what_stays_and_drops_what_goes() {
    let full = slo(Some("99.5%"), Some("2s"), Some("0.2%"), "30d");
    let mut e = engine(&[("a", &full), ("b", &full)]);
    let now = noonish();
    for g in ["a", "b"] {
        e.record_availability(now, g, avail(9, 10)).unwrap();
        let delta = RequestDelta {
            requests: Some(10),
            errors: Some(1),
            durations: Some(hist(&[2.0], &[8], 10)),
        };
        e.record_requests(now, g, &delta).unwrap();
    }
    // `a` loses error_rate and changes its objectives; `b` goes; `c` comes.
    let changed = slo(Some("99%"), Some("1s"), None, "30d");
    let new = slo(Some("90%"), None, None, "30d");
    let out = e.configure([("a", &changed), ("c", &new)]);
    let pairs = |v: &[(&str, Sli)]| {
        v.iter()
            .map(|(g, s)| (g.to_string(), *s))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        out,
        Reconfigured {
            added: pairs(&[("c", Sli::Availability)]),
            kept: pairs(&[("a", Sli::Availability), ("a", Sli::Latency)]),
            dropped: pairs(&[
                ("a", Sli::ErrorRate),
                ("b", Sli::Availability),
                ("b", Sli::Latency),
                ("b", Sli::ErrorRate)
            ]),
            rewindowed: vec![],
        }
    );
    // Same events, new arithmetic: 1 bad in 10 against a 1% budget.
    let r = sli_report(&e, now, "a", Sli::Availability);
    assert_eq!(r.totals, Counts { good: 9, bad: 1 });
    assert_close(
        r.window(d("5m")).unwrap().burn_rate,
        Some(10.0),
        "burn at 99%",
    );
    // The latency events stay as they were measured (8 of 10 under 2 s);
    // new ones use the new threshold.
    let lat = sli_report(&e, now, "a", Sli::Latency);
    assert_eq!(lat.totals, Counts { good: 8, bad: 2 });
    assert_eq!(lat.objective.threshold, Some(d("1s")));
    let report = e.group_report(now, "a").unwrap();
    assert_eq!(
        report
            .slis
            .iter()
            .map(|r| r.objective.sli)
            .collect::<Vec<_>>(),
        [Sli::Availability, Sli::Latency]
    );
    assert_eq!(e.group_report(now, "b"), None);
    assert_eq!(
        sli_report(&e, now, "c", Sli::Availability).totals,
        Counts::default()
    );
    // A dropped SLI that comes back starts from nothing.
    let out = e.configure([("a", &full)]);
    assert_eq!(out.added, pairs(&[("a", Sli::ErrorRate)]));
    assert_eq!(
        sli_report(&e, now, "a", Sli::ErrorRate).totals,
        Counts::default()
    );
    assert_eq!(
        sli_report(&e, now, "a", Sli::Availability).totals,
        Counts { good: 9, bad: 1 }
    );
}

/// One bad event at each of `ages` before noonish(), the SLO window
/// changed from `from` to `to`: the events the new SLO window sees.
fn check_rewindow(from: &str, to: &str, ages: &[u64], want_in_window: u64) {
    let before = slo(Some("99%"), None, None, from);
    let after = slo(Some("99%"), None, None, to);
    let mut e = engine(&[("g", &before)]);
    for &age in ages {
        e.record_availability(noonish() - age, "g", avail(0, 1))
            .unwrap();
    }
    let out = e.configure([("g", &after)]);
    assert_eq!(out.rewindowed, vec!["g".to_string()]);
    let r = sli_report(&e, noonish(), "g", Sli::Availability);
    assert_eq!(
        r.window(d(to)).unwrap().events.bad,
        want_in_window,
        "{from} -> {to}"
    );
    assert_eq!(r.totals.bad, ages.len() as u64, "{from} -> {to}");
}

#[test]
fn a_changed_window_keeps_every_event_it_can_still_see() {
    let ages = [M, 2 * DAY, 5 * DAY, 20 * DAY];
    // Shorter: what is older than the new window leaves it.
    check_rewindow("30d", "7d", &ages, 3);
    check_rewindow("30d", "1d", &ages, 1);
    // Longer, from a ring of another resolution: 1 h buckets to 2 h.
    check_rewindow("30d", "60d", &ages, 4);
    // From a window without a coarse ring: the medium ring's 3 days carry over.
    check_rewindow("1d", "30d", &ages, 2);
}

// ---------------------------------------------- scrapes and counter resets

fn agent_text(requests: u64, errors: u64, fast: u64, start: u64) -> String {
    // `fast` requests under 0.5 s, the rest between 2.5 s and 5 s.
    format!(
        "agent_requests_total{{endpoint=\"/work\"}} {requests}\n\
         agent_errors_total {errors}\n\
         agent_work_duration_seconds_bucket{{le=\"0.5\"}} {fast}\n\
         agent_work_duration_seconds_bucket{{le=\"2.5\"}} {fast}\n\
         agent_work_duration_seconds_bucket{{le=\"5\"}} {requests}\n\
         agent_work_duration_seconds_bucket{{le=\"+Inf\"}} {requests}\n\
         agent_start_time_seconds {start}\n"
    )
}

fn agent_scrape(requests: u64, errors: u64, fast: u64, start: u64) -> AgentScrape {
    let text = agent_text(requests, errors, fast, start);
    let exp = promtext::parse(text.as_bytes(), &promtext::Limits::default()).unwrap();
    AgentScrape::extract(&exp, &AgentSeries::default()).unwrap()
}

#[test]
fn scrapes_count_new_requests_and_survive_restarts() {
    let s = slo(None, Some("2s"), Some("1%"), "30d");
    let mut e = engine(&[("g", &s)]);
    let now = noonish();
    let totals = |e: &SloEngine| {
        (
            sli_report(e, now, "g", Sli::ErrorRate).totals,
            sli_report(e, now, "g", Sli::Latency).totals,
        )
    };
    // (replica, requests, errors, fast, start) -> (restarted or baseline,
    // error-rate totals, latency totals) after it.
    type Row = (
        &'static str,
        u64,
        u64,
        u64,
        u64,
        Option<bool>,
        (u64, u64),
        (u64, u64),
    );
    let rows: [Row; 7] = [
        // First scrape of r0: a baseline, whatever its counters say.
        ("r0", 100, 10, 90, 1, None, (0, 0), (0, 0)),
        // 20 new requests, 2 failed, 15 fast.
        ("r0", 120, 12, 105, 1, Some(false), (18, 2), (15, 5)),
        // Another replica of the group: its own baseline.
        ("r1", 50, 0, 50, 1, None, (18, 2), (15, 5)),
        ("r1", 60, 1, 59, 1, Some(false), (27, 3), (24, 6)),
        // r0 restarted: counters went down; 7 requests since, 1 failed, 6 fast.
        ("r0", 7, 1, 6, 1, Some(true), (33, 4), (30, 7)),
        // r0 restarted again and already served more than before.
        ("r0", 40, 4, 40, 2, Some(true), (69, 8), (70, 7)),
        // Nothing new.
        ("r0", 40, 4, 40, 2, Some(false), (69, 8), (70, 7)),
    ];
    for (replica, requests, errors, fast, start, want_restart, want_err, want_lat) in rows {
        let outcome = e
            .record_scrape(
                now,
                "g",
                replica,
                agent_scrape(requests, errors, fast, start),
            )
            .unwrap();
        let restarted = match outcome {
            ScrapeOutcome::Baseline => None,
            ScrapeOutcome::Counted { restarted, .. } => Some(restarted),
        };
        assert_eq!(restarted, want_restart, "{replica} {requests}");
        let (err, lat) = totals(&e);
        assert_eq!(
            (err.good, err.bad),
            want_err,
            "{replica} {requests}: error rate"
        );
        assert_eq!(
            (lat.good, lat.bad),
            want_lat,
            "{replica} {requests}: latency"
        );
    }
    // A forgotten replica starts from a baseline again.
    assert!(e.forget_replica("g", "r1"));
    assert!(!e.forget_replica("g", "r1"));
    assert_eq!(
        e.record_scrape(now, "g", "r1", agent_scrape(1000, 0, 0, 1)),
        Ok(ScrapeOutcome::Baseline)
    );
    e.retain_replicas(|_, replica| replica != "r1");
    assert_eq!(
        e.record_scrape(now, "g", "r1", agent_scrape(1000, 0, 0, 1)),
        Ok(ScrapeOutcome::Baseline)
    );
    // Scrape baselines are not persisted: after a restart, a baseline again.
    let mut back = through_disk(&e);
    back.configure([("g", &s)]);
    assert_eq!(
        back.record_scrape(now, "g", "r0", agent_scrape(50, 4, 50, 2)),
        Ok(ScrapeOutcome::Baseline)
    );
}

#[test]
fn records_for_what_a_group_does_not_measure_are_refused() {
    let available = slo(Some("99%"), None, None, "30d");
    let lat = slo(None, Some("1s"), None, "30d");
    let mut e = engine(&[("a", &available), ("l", &lat)]);
    let now = noonish();
    assert_eq!(
        e.record_availability(now, "x", avail(1, 1)),
        Err(RecordError::NoSlo { group: "x".into() })
    );
    assert_eq!(
        e.record_availability(now, "l", avail(1, 1)),
        Err(RecordError::NotMeasured {
            group: "l".into(),
            sli: Sli::Availability
        })
    );
    assert_eq!(
        e.record_requests(now, "a", &RequestDelta::default()),
        Err(RecordError::NoRequestObjective { group: "a".into() })
    );
    assert_eq!(
        e.record_scrape(now, "a", "r0", AgentScrape::default()),
        Err(RecordError::NoRequestObjective { group: "a".into() })
    );
    // A latency-only group ignores the error counts it is given.
    let delta = RequestDelta {
        requests: Some(5),
        errors: Some(5),
        durations: None,
    };
    assert_eq!(e.record_requests(now, "l", &delta), Ok(()));
    assert_eq!(
        sli_report(&e, now, "l", Sli::Latency).totals,
        Counts::default()
    );
}

#[test]
fn interpolated_fractions_carry_over_so_nothing_drifts() {
    // Threshold 1.5 s inside (1, 3]: each request there is a quarter good.
    let s = slo(None, Some("1500ms"), None, "30d");
    let mut e = engine(&[("g", &s)]);
    let now = noonish();
    let one_slowish = RequestDelta {
        durations: Some(hist(&[1.0, 3.0], &[0, 1], 1)),
        ..RequestDelta::default()
    };
    // (estimate so far) -> good counted: 0.25 → 0, 0.5 → 0, 0.75 → 0, 1 → 1.
    for (i, want_good) in [0u64, 0, 0, 1, 1, 1].into_iter().enumerate() {
        e.record_requests(now, "g", &one_slowish).unwrap();
        let totals = sli_report(&e, now, "g", Sli::Latency).totals;
        assert_eq!(
            totals,
            Counts {
                good: want_good,
                bad: i as u64 + 1 - want_good
            },
            "after {} requests",
            i + 1
        );
    }
    // The carry (0.5 after six) survives a restart: two more make a
    // whole good request. (The totals restart from zero.)
    let mut back = through_disk(&e);
    back.configure([("g", &s)]);
    for _ in 0..2 {
        back.record_requests(now, "g", &one_slowish).unwrap();
    }
    assert_eq!(
        sli_report(&back, now, "g", Sli::Latency).totals,
        Counts { good: 1, bad: 1 }
    );
}

#[test]
fn latency_counts_the_reference_agents_histogram_at_the_threshold() {
    // 2 s inside (1, 2.5]: 90 under 1 s, 9 in (1, 2.5], 1 in (2.5, 5].
    let s = slo(None, Some("2s"), None, "30d");
    let mut e = engine(&[("g", &s)]);
    let bounds = [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ];
    let cumulative = [0, 0, 0, 0, 0, 0, 0, 0, 0, 90, 99, 100, 100, 100, 100];
    let delta = RequestDelta {
        durations: Some(hist(&bounds, &cumulative, 100)),
        ..RequestDelta::default()
    };
    e.record_requests(noonish(), "g", &delta).unwrap();
    // 90 + 9 × (2 − 1) / (2.5 − 1) = 96 good.
    assert_eq!(
        sli_report(&e, noonish(), "g", Sli::Latency).totals,
        Counts { good: 96, bad: 4 }
    );
}

// ------------------------------------------------------- memory and state

#[test]
fn memory_does_not_grow_with_uptime() {
    let s = slo(Some("99.9%"), Some("1s"), Some("0.1%"), "30d");
    let mut e = engine(&[("g", &s)]);
    let at_start = e.heap_bytes();
    // 100 days, one sample every 5 minutes.
    for i in 0..100 * 288u64 {
        e.record_availability(BASE + i * 5 * M, "g", avail(1, 1))
            .unwrap();
    }
    assert_eq!(e.heap_bytes(), at_start);
    // Three SLIs of (360 + 864 + 720) buckets of 8 bytes, plus bookkeeping.
    let buckets = 3 * (360 + 864 + 720) * 8;
    assert!(
        at_start >= buckets && at_start < buckets + 2_048,
        "{at_start}"
    );
}

#[test]
fn objectives_follow_the_shipped_examples() {
    // config/mainpc: vision_gpu {availability: 99.5%, latency_p99: 2s, error_rate: 0.2%}.
    let s = slo(Some("99.5%"), Some("2s"), Some("0.2%"), "30d");
    let got: Vec<(Sli, f64, f64, Option<Duration>)> = Objective::of(&s)
        .into_iter()
        .map(|o| (o.sli, o.target, o.budget, o.threshold))
        .collect();
    assert_eq!(
        got,
        vec![
            (Sli::Availability, 0.995, 0.005, None),
            (Sli::Latency, 0.99, 0.01, Some(d("2s"))),
            (Sli::ErrorRate, 0.998, 0.002, None),
        ]
    );
    assert_eq!(
        Sli::ALL.map(Sli::as_str),
        ["availability", "latency", "error_rate"]
    );
}

proptest! {
    /// Whatever was recorded, the state read back from disk reports the
    /// same figures, and the totals are the sums of what was recorded.
    #[test]
    fn persisted_state_reports_the_same(
        samples in proptest::collection::vec((0u64..5 * DAY, 0u64..5, 0u64..5), 0..80),
        now_offset in 0u64..6 * DAY,
    ) {
        let s = slo(Some("99%"), Some("1s"), Some("1%"), "7d");
        let mut e = engine(&[("g", &s)]);
        let mut want = Counts::default();
        for &(at, healthy, wanted) in &samples {
            e.record_availability(BASE + at, "g", avail(healthy, wanted)).unwrap();
            want.good += healthy.min(wanted);
            want.bad += wanted - healthy.min(wanted);
        }
        let mut back = through_disk(&e);
        back.configure([("g", &s)]);
        let now = BASE + now_offset;
        // The same figures; only the exported counters start over.
        let without_totals = |mut reports: Vec<GroupReport>| {
            for s in reports.iter_mut().flat_map(|g| g.slis.iter_mut()) {
                s.totals = Counts::default();
            }
            reports
        };
        prop_assert!(back.report(now).iter().flat_map(|g| &g.slis).all(|s| s.totals == Counts::default()));
        prop_assert_eq!(without_totals(back.report(now)), without_totals(e.report(now)));
        prop_assert_eq!(sli_report(&e, now, "g", Sli::Availability).totals, want);
    }

    /// A window never holds more than the totals, and a longer window never
    /// fewer events than a shorter one read from the same ring.
    #[test]
    fn windows_nest(
        samples in proptest::collection::vec((0u64..4 * DAY, 0u64..3, 1u64..3), 1..60),
        now_offset in 0u64..5 * DAY,
    ) {
        let s = slo(Some("99%"), None, None, "30d");
        let mut e = engine(&[("g", &s)]);
        for &(at, healthy, wanted) in &samples {
            e.record_availability(BASE + at, "g", avail(healthy, wanted)).unwrap();
        }
        let r = sli_report(&e, BASE + now_offset, "g", Sli::Availability);
        let total = |w: &str| r.window(d(w)).unwrap().events.total();
        for pair in [("5m", "30m"), ("30m", "1h"), ("6h", "1d"), ("1d", "3d")] {
            prop_assert!(total(pair.0) <= total(pair.1), "{:?}", pair);
        }
        prop_assert!(total("30d") <= r.totals.total());
    }
}

#[derive(Debug, Clone)]
enum Op {
    Configure {
        window_s: u64,
        availability: bool,
        latency: bool,
        error_rate: bool,
    },
    Availability {
        at: u64,
        healthy: u64,
        wanted: u64,
    },
    Requests {
        at: u64,
        requests: u64,
        errors: u64,
        fast: u64,
    },
    Report {
        at: u64,
    },
    Restart,
}

fn arb_time() -> impl Strategy<Value = u64> {
    prop_oneof![
        BASE..BASE + 40 * DAY,
        Just(0u64),
        Just(u64::MAX),
        any::<u64>()
    ]
}

fn arb_op() -> impl Strategy<Value = Op> {
    let window_s = prop_oneof![
        Just(0u64),
        1u64..100_000,
        Just(30 * 86_400),
        86_400u64..400 * 86_400,
        Just(u64::MAX / 1_000_000_000)
    ];
    prop_oneof![
        (window_s, any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
            |(window_s, availability, latency, error_rate)| Op::Configure {
                window_s,
                availability,
                latency,
                error_rate
            }
        ),
        (
            arb_time(),
            prop_oneof![0u64..20, any::<u64>()],
            prop_oneof![0u64..20, any::<u64>()]
        )
            .prop_map(|(at, healthy, wanted)| Op::Availability {
                at,
                healthy,
                wanted
            }),
        (
            arb_time(),
            prop_oneof![0u64..50, any::<u64>()],
            any::<u64>(),
            any::<u64>()
        )
            .prop_map(|(at, requests, errors, fast)| Op::Requests {
                at,
                requests,
                errors,
                fast
            }),
        arb_time().prop_map(|at| Op::Report { at }),
        Just(Op::Restart),
    ]
}

proptest! {
    /// No sequence of calls, at any times, with any window, panics; the
    /// totals never go down while a series lives; ratios stay in [0, 1].
    #[test]
    fn any_sequence_of_calls_is_safe(ops in proptest::collection::vec(arb_op(), 1..40)) {
        let mut e = SloEngine::default();
        let mut last: Option<(Counts, Counts, Counts)> = None;
        for op in ops {
            match op {
                Op::Configure { window_s, availability, latency, error_rate } => {
                    let s = Slo {
                        availability: availability.then(|| Percent::parse("99%").unwrap()),
                        latency_p99: latency.then(|| d("1s")),
                        error_rate: error_rate.then(|| Percent::parse("1%").unwrap()),
                        window: Duration::from_secs(window_s),
                    };
                    e.configure([("g", &s)]);
                    last = None;
                }
                Op::Availability { at, healthy, wanted } => {
                    let _ = e.record_availability(at, "g", avail(healthy, wanted));
                }
                Op::Requests { at, requests, errors, fast } => {
                    let fast = fast % (requests.saturating_add(1));
                    let delta = RequestDelta {
                        requests: Some(requests),
                        errors: Some(errors),
                        durations: Some(hist(&[0.5, 5.0], &[fast, fast], requests)),
                    };
                    let _ = e.record_requests(at, "g", &delta);
                }
                Op::Report { at } => {
                    if let Some(g) = e.group_report(at, "g") {
                        for r in &g.slis {
                            for w in &r.windows {
                                prop_assert!(w.error_ratio.is_none_or(|x| (0.0..=1.0).contains(&x)));
                            }
                        }
                        let totals = |sli| g.sli(sli).map(|r| r.totals).unwrap_or_default();
                        let now = (totals(Sli::Availability), totals(Sli::Latency), totals(Sli::ErrorRate));
                        if let Some(before) = last {
                            for (b, n) in [(before.0, now.0), (before.1, now.1), (before.2, now.2)] {
                                prop_assert!(n.good >= b.good && n.bad >= b.bad);
                            }
                        }
                        last = Some(now);
                    }
                }
                Op::Restart => {
                    // A new process: its counters start from zero.
                    last = None;
                    let state = e.snapshot();
                    let slos: Vec<(String, Slo)> = e.groups.iter().filter_map(|(n, g)| Some((n.clone(), g.slo.clone()?))).collect();
                    e = SloEngine::restore(SloState::from_json(&state.to_json()).unwrap()).unwrap();
                    e.configure(slos.iter().map(|(n, s)| (n.as_str(), s)));
                }
            }
        }
    }
}

// ------------------------------------------- excused replicas, allowance

#[test]
fn excused_replicas_are_no_events() {
    // (wanted, healthy, excused) -> (good, bad)
    let table = [
        ((4, 4, 0), (4, 0)),
        ((4, 1, 0), (1, 3)),
        // A group starting: three replicas not ready yet, all excused.
        ((4, 1, 3), (1, 0)),
        // One of three unhealthy replicas excused (a rollout step).
        ((4, 1, 1), (1, 2)),
        // No more excused than unhealthy.
        ((4, 3, 5), (3, 0)),
        // Healthy beyond wanted are not counted.
        ((3, 5, 2), (3, 0)),
        ((0, 0, 0), (0, 0)),
        ((0, 2, 2), (0, 0)),
    ];
    for ((wanted, healthy, excused), want) in table {
        let sample = AvailabilitySample {
            wanted,
            healthy,
            excused,
        };
        assert_eq!(sample.events(), want, "{sample:?}");
        let s = slo(Some("99.5%"), None, None, "30d");
        let mut e = engine(&[("g", &s)]);
        e.record_availability(noonish(), "g", sample).unwrap();
        let r = sli_report(&e, noonish(), "g", Sli::Availability);
        assert_eq!(
            r.totals,
            Counts {
                good: want.0,
                bad: want.1
            },
            "{sample:?}"
        );
    }
}

/// A group of `replicas` sampled every 10 s from `t(0, 0, 0, 0, 0)`; the
/// samples from `down.0` to `down.1` seconds have every replica unhealthy
/// (`excused` of them excused). Returns the report at `at` seconds.
fn young_group(replicas: u64, down: (u64, u64), excused: u64, at: u64) -> SliReport {
    let s = slo(Some("99.5%"), None, None, "30d");
    let mut e = engine(&[("g", &s)]);
    let start = t(0, 0, 0, 0, 0);
    for sec in (0..=at).step_by(10) {
        let sick = (down.0..down.1).contains(&sec);
        let sample = AvailabilitySample {
            wanted: replicas,
            healthy: if sick { 0 } else { replicas },
            excused: if sick { excused } else { 0 },
        };
        e.record_availability(start + sec * S, "g", sample).unwrap();
    }
    sli_report(&e, start + at * S, "g", Sli::Availability)
}

#[test]
fn the_budget_is_a_share_of_the_whole_periods_allowance() {
    let period = 30.0 * DAY as f64;
    // (replicas, down from..to s, excused while down, read at s,
    //  expected budget remaining)
    type Row = (u64, (u64, u64), u64, u64, f64);
    let table: [Row; 6] = [
        // A fresh host, every replica down for its first 5 minutes, read
        // at 5 minutes: 30 of 31 samples bad over 300 s observed. The
        // allowance is 0.5% of the period's extrapolated samples, so this
        // costs (30/31) / 0.005 × 300 s / 30 d, about 5 min / (0.005 × 30 d).
        (
            4,
            (0, 300),
            0,
            300,
            1.0 - (30.0 / 31.0) / 0.005 * 300_000.0 / period,
        ),
        // The same outage read an hour later: the same share, since the
        // extrapolated allowance does not depend on when it is read.
        (
            4,
            (0, 300),
            0,
            3_600,
            1.0 - (30.0 / 361.0) / 0.005 * 3_600_000.0 / period,
        ),
        // The replica count does not change the share.
        (
            1,
            (0, 300),
            0,
            3_600,
            1.0 - (30.0 / 361.0) / 0.005 * 3_600_000.0 / period,
        ),
        // Half of them excused (a start): half the bad events, and fewer
        // events in all (30 × 2 excused samples are none).
        (4, (0, 300), 2, 3_600, {
            let bad = 30.0 * 2.0;
            let events = 361.0 * 4.0 - 30.0 * 2.0;
            1.0 - (bad / events) / 0.005 * 3_600_000.0 / period
        }),
        // A start wholly excused spends nothing.
        (4, (0, 300), 4, 3_600, 1.0),
        // Never down: the whole budget.
        (4, (0, 0), 0, 3_600, 1.0),
    ];
    for (replicas, down, excused, at, want) in table {
        let r = young_group(replicas, down, excused, at);
        let what = format!("{replicas} replicas down {down:?} ({excused} excused), at {at} s");
        assert_close(r.budget_remaining, Some(want), &what);
        // Observed from the first event: a wholly excused start has none.
        let first = if excused == replicas { down.1 } else { 0 };
        let a = r.allowance.unwrap();
        assert_eq!(a.observed, Duration::from_secs(at - first), "{what}");
        let events = r.window(d("30d")).unwrap().events.total() as f64;
        assert_close(
            a.allowed_bad,
            Some(0.005 * events * period / ((at - first) * S) as f64),
            &what,
        );
    }
    // The operator's case: 5 minutes down on a fresh host leave about
    // 97.7% of a 30-day 99.5% budget, not -485.7%.
    let fresh = young_group(4, (0, 300), 0, 300).budget_remaining.unwrap();
    let expected = 1.0 - 5.0 / (0.005 * 30.0 * 24.0 * 60.0);
    assert!((fresh - expected).abs() < 0.001, "{fresh} vs {expected}");
}

#[test]
fn the_observed_span_starts_at_the_first_event_of_the_period() {
    let s = slo(Some("99%"), None, None, "30d");
    // (first event, then one at noonish, expected observed at noonish)
    let table = [
        // Young: the exact first event.
        (t(0, 11, 0, 0, 1), noonish() - t(0, 11, 0, 0, 1)),
        (t(-2, 7, 3, 0, 0), noonish() - t(-2, 7, 3, 0, 0)),
        // Older than the period, and nothing since: the period begins at
        // its first event in the period, the one of 12:00:07.5 (its 10 s
        // bucket starts at noon).
        (t(-45, 0, 0, 0, 0), noonish() - t(0, 12, 0, 0, 0)),
    ];
    for (first, want) in table {
        let mut e = engine(&[("g", &s)]);
        e.record_availability(first, "g", avail(1, 1)).unwrap();
        e.record_availability(noonish(), "g", avail(1, 1)).unwrap();
        let a = sli_report(&e, noonish(), "g", Sli::Availability)
            .allowance
            .unwrap();
        assert_eq!(a.observed, Duration::from_millis(want), "first {first}");
    }
    // Events all along: the whole period.
    let mut e = engine(&[("g", &s)]);
    for h in 0..40 * 24 {
        e.record_availability(t(-40, h, 0, 0, 0), "g", avail(1, 1))
            .unwrap();
    }
    let a = sli_report(&e, end(), "g", Sli::Availability)
        .allowance
        .unwrap();
    assert_eq!(a.observed, Duration::from_millis(30 * DAY - 1));
    // A series that went quiet for longer than the period and came back:
    // observed from its first event in the period, to the resolution of
    // the finest ring holding it (here the 10 s ring: 11:00:00).
    let mut e = engine(&[("g", &s)]);
    e.record_availability(t(-40, 0, 0, 0, 0), "g", avail(1, 1))
        .unwrap();
    e.record_availability(t(0, 11, 0, 3, 0), "g", avail(1, 1))
        .unwrap();
    let a = sli_report(&e, noonish(), "g", Sli::Availability)
        .allowance
        .unwrap();
    assert_eq!(
        a.observed,
        Duration::from_millis(noonish() - t(0, 11, 0, 0, 0))
    );
    // A state written before first events were kept (version 1) falls
    // back on the buckets too.
    let mut e = engine(&[("g", &s)]);
    e.record_availability(t(-1, 6, 7, 0, 0), "g", avail(1, 1))
        .unwrap();
    let text = e
        .snapshot()
        .to_json()
        .replacen("\"version\":2", "\"version\":1", 1)
        .replace(&format!("\"first_event\":{},", t(-1, 6, 7, 0, 0)), "");
    assert!(!text.contains("first_event"), "{text}");
    let mut back = SloEngine::restore(SloState::from_json(&text).unwrap()).unwrap();
    back.configure([("g", &s)]);
    let a = sli_report(&back, noonish(), "g", Sli::Availability)
        .allowance
        .unwrap();
    // Nothing was recorded after it, so even the 10 s ring still holds
    // its bucket: 06:07:00.
    assert_eq!(
        a.observed,
        Duration::from_millis(noonish() - t(-1, 6, 7, 0, 0))
    );
}

// -------------------------------------------------- unanswered requests

#[test]
fn unanswered_probes_are_bad_requests_weighted_by_the_observed_rate() {
    let both = slo(None, Some("2s"), Some("1%"), "30d");
    let errors_only = slo(None, None, Some("1%"), "30d");
    let start = t(0, 10, 0, 0, 0);
    // An hour of 600 answered requests a minute (10 a second), all good
    // and fast, recorded each minute from 10:00; then at 11:00 failed
    // probes (every 5 s) of one of `replicas`.
    let history = |e: &mut SloEngine, latency: bool| {
        for m in 0..=60u64 {
            let delta = RequestDelta {
                requests: Some(600),
                errors: Some(0),
                durations: latency.then(|| hist(&[2.0], &[600], 600)),
            };
            e.record_requests(start + m * M, "g", &delta).unwrap();
        }
    };
    let now = t(0, 11, 0, 0, 0);
    // (slo, with history, probes, replicas) -> bad events per SLI
    type Row<'a> = (&'a Slo, bool, u64, u64, u64);
    let table: [Row; 5] = [
        // 36 600 requests over 3 600 s observed: 10.17 a second; one of two
        // replicas misses 3 probes of 5 s: 3 × round(10.17 × 5 / 2) = 3 × 25.
        (&both, true, 3, 2, 75),
        (&both, true, 3, 1, 3 * 51),
        (&errors_only, true, 3, 2, 75),
        // No traffic seen yet: one bad event per probe.
        (&both, false, 3, 2, 3),
        // A replica count of 0 is taken as 1.
        (&errors_only, true, 1, 0, 51),
    ];
    for (s, with_history, probes, replicas, want) in table {
        let mut e = engine(&[("g", s)]);
        if with_history {
            history(&mut e, s.latency_p99.is_some());
        }
        let before: Vec<Counts> = [Sli::ErrorRate, Sli::Latency]
            .iter()
            .filter_map(|&sli| e.group_report(now, "g")?.sli(sli).map(|r| r.totals))
            .collect();
        let got = e
            .record_unanswered(
                now,
                "g",
                Unanswered {
                    probes,
                    interval: d("5s"),
                    replicas,
                },
            )
            .unwrap();
        assert_eq!(got, want, "{s:?} {with_history} {probes}/{replicas}");
        let after: Vec<Counts> = [Sli::ErrorRate, Sli::Latency]
            .iter()
            .filter_map(|&sli| e.group_report(now, "g")?.sli(sli).map(|r| r.totals))
            .collect();
        for (b, a) in before.iter().zip(&after) {
            assert_eq!((a.good, a.bad), (b.good, b.bad + want), "{s:?}");
        }
    }
    // A group without a request SLO refuses them.
    let available = slo(Some("99%"), None, None, "30d");
    let mut e = engine(&[("a", &available)]);
    let none = Unanswered {
        probes: 1,
        interval: d("5s"),
        replicas: 1,
    };
    assert_eq!(
        e.record_unanswered(now, "a", none),
        Err(RecordError::NoRequestObjective { group: "a".into() })
    );
    assert_eq!(
        e.record_unanswered(now, "x", none),
        Err(RecordError::NoSlo { group: "x".into() })
    );
}

#[test]
fn a_replica_that_refuses_for_a_while_costs_what_its_time_is_worth() {
    // Two replicas, 10 requests a second between them, an error-rate
    // objective of 0.2%. One replica refuses connections for 5 minutes:
    // its probes (every 5 s) fail; the other answers its half.
    let s = slo(None, None, Some("0.2%"), "30d");
    let mut e = engine(&[("g", &s)]);
    let start = t(0, 0, 0, 0, 0);
    let mut now = start;
    for tick in 0..(2 * 3600 / 5) {
        let down = (360..420).contains(&tick);
        let answered = if down { 25 } else { 50 };
        let delta = RequestDelta {
            requests: Some(answered),
            errors: Some(0),
            durations: None,
        };
        e.record_requests(now, "g", &delta).unwrap();
        if down {
            e.record_unanswered(
                now,
                "g",
                Unanswered {
                    probes: 1,
                    interval: d("5s"),
                    replicas: 2,
                },
            )
            .unwrap();
        }
        now += 5 * S;
    }
    let r = sli_report(&e, now - 5 * S, "g", Sli::ErrorRate);
    // About the half of 5 minutes of traffic that went unanswered: 60
    // probes × 25 requests = 1 500 bad.
    let bad = r.totals.bad;
    assert!((1_450..=1_550).contains(&bad), "{bad}");
    // And it costs about what 5 minutes of one replica in two is worth:
    // 2.5 min / (0.002 × 30 d).
    let spent = 1.0 - r.budget_remaining.unwrap();
    let worth = 2.5 / (0.002 * 30.0 * 24.0 * 60.0);
    assert!((spent - worth).abs() < 0.05 * worth, "{spent} vs {worth}");
}

// ------------------------------------------------ counters and restarts

/// What Prometheus makes of a counter's scraped values: the sum of its
/// increases, a drop being a reset after which the whole value is new.
fn prometheus_increase(values: &[u64]) -> u64 {
    values
        .windows(2)
        .map(|w| if w[1] >= w[0] { w[1] - w[0] } else { w[1] })
        .sum()
}

#[test]
fn a_restore_of_an_older_snapshot_never_counts_events_twice() {
    let s = slo(Some("99%"), None, None, "30d");
    let mut e = engine(&[("g", &s)]);
    let mut now = noonish();
    let mut scraped_events = Vec::new();
    let mut scraped_errors = Vec::new();
    let mut recorded = Counts::default();
    let mut scrape = |e: &SloEngine, now: u64| {
        let r = sli_report(e, now, "g", Sli::Availability);
        scraped_events.push(r.totals.total());
        scraped_errors.push(r.totals.bad);
    };
    // Run 1: 100 samples of 10 replicas, 1 bad; the snapshot is taken
    // after 60 of them; then the process is killed.
    let mut snapshot = None;
    for i in 0..100 {
        e.record_availability(now, "g", avail(9, 10)).unwrap();
        recorded.good += 9;
        recorded.bad += 1;
        if i == 59 {
            snapshot = Some(e.snapshot().to_json());
        }
        scrape(&e, now);
        now += S;
    }
    // Run 2 restores the older snapshot and counts 30 more samples.
    let mut e = SloEngine::restore(SloState::from_json(&snapshot.unwrap()).unwrap()).unwrap();
    e.configure([("g", &s)]);
    scrape(&e, now);
    for _ in 0..30 {
        e.record_availability(now, "g", avail(8, 10)).unwrap();
        recorded.good += 8;
        recorded.bad += 2;
        scrape(&e, now);
        now += S;
    }
    // The exported counters started from zero, not from the snapshot's
    // 600/60: Prometheus sees a reset and counts every event once.
    assert_eq!(scraped_events[100], 0);
    assert_eq!(
        prometheus_increase(&scraped_events) + scraped_events[0],
        recorded.total()
    );
    assert_eq!(
        prometheus_increase(&scraped_errors) + scraped_errors[0],
        recorded.bad
    );
    // The windows still hold the restored history (60 samples) and the
    // new one.
    let r = sli_report(&e, now, "g", Sli::Availability);
    assert_eq!(
        r.window(d("30d")).unwrap().events,
        Counts {
            good: 60 * 9 + 30 * 8,
            bad: 60 + 60
        }
    );
}
