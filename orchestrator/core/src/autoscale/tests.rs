//! Autoscaler tables: a spec, a load over time, the decisions expected (at
//! which second, to which count, on which signal), and a property: a
//! constant load never changes direction twice within 5 minutes.

use proptest::prelude::*;

use super::*;
use crate::model::MetricTarget;
use crate::units::{Duration, Percent};

const T0: Millis = 10_000_000;

fn spec(min: u32, max: u32) -> Autoscale {
    Autoscale {
        min,
        max,
        cpu: Some(Percent::whole(50)),
        gpu_util: None,
        metric: None,
        latency_slo: false,
        up_after: Duration::from_secs(15),
        down_after: Duration::from_secs(60),
        reverse_after: Duration::from_secs(300),
    }
}

/// What the replicas report at one tick.
#[derive(Debug, Clone, Default)]
struct Tick {
    cpu: Vec<ReplicaSample>,
    gpu: Vec<ReplicaSample>,
    metric: Vec<ReplicaSample>,
    burn: Option<Sample>,
    rollout: bool,
}

fn each(current: u32, now: Millis, value: f64) -> Vec<ReplicaSample> {
    (0..current)
        .map(|replica| ReplicaSample {
            replica,
            at: now,
            value,
        })
        .collect()
}

/// Runs `seconds` of 5-second ticks from `start` replicas; returns each
/// decision as (second, from, to, cause).
fn run(
    spec: &Autoscale,
    start: u32,
    seconds: u64,
    load: impl Fn(u64, u32, Millis) -> Tick,
) -> Vec<(u64, u32, u32, Cause)> {
    let mut a = Autoscaler::new(AutoscaleSettings::default());
    let mut current = start;
    let mut out = Vec::new();
    for s in (0..=seconds).step_by(5) {
        let now = T0 + s * 1000;
        let t = load(s, current, now);
        let obs = Observation {
            now,
            current,
            rollout_running: t.rollout,
            cpu: &t.cpu,
            gpu_util: &t.gpu,
            metric: &t.metric,
            latency_burn: t.burn,
        };
        if let Some(d) = a.observe(spec, &obs) {
            assert_eq!(d.from, current);
            out.push((s, d.from, d.to, d.cause));
            current = d.to;
        }
    }
    out
}

fn cpu(signal_value: f64, recommended: u32) -> Cause {
    Cause::Signal {
        signal: Signal::Cpu,
        value: signal_value,
        target: 50.0,
        recommended,
        bounded: false,
    }
}

/// A constant total CPU load (in percent of one replica's limit), spread
/// over the replicas there are.
fn total_cpu(total: f64) -> impl Fn(u64, u32, Millis) -> Tick {
    move |_, current, now| Tick {
        cpu: each(current, now, total / f64::from(current)),
        ..Tick::default()
    }
}

#[test]
fn a_load_step_scales_up_once_it_has_held_for_up_after() {
    // 2 replicas at 100% against 50%: 4 wanted, decided 15s after the step.
    let got = run(&spec(1, 10), 2, 60, |s, current, now| {
        let load = if s >= 10 { 200.0 } else { 80.0 };
        total_cpu(load)(s, current, now)
    });
    assert_eq!(got, [(25, 2, 4, cpu(100.0, 4))]);
}

#[test]
fn a_ratio_within_the_tolerance_changes_nothing() {
    // 54% and 46% against 50% are within 10%.
    for per in [54.0, 46.0] {
        let got = run(&spec(1, 10), 3, 600, |_, current, now| Tick {
            cpu: each(current, now, per),
            ..Tick::default()
        });
        assert_eq!(got, [], "{per}%");
    }
}

#[test]
fn a_scale_down_waits_for_down_after_and_takes_the_highest_recommendation() {
    // 4 replicas at 20%: 2 wanted. A short burst (30%, which recommends
    // 3) 20s in is the highest of the first 60s window: down to 3 only;
    // the next window, all at 20%, takes it to 2.
    let got = run(&spec(1, 10), 4, 150, |s, current, now| {
        let per = if s == 20 { 30.0 } else { 20.0 };
        Tick {
            cpu: each(current, now, per),
            ..Tick::default()
        }
    });
    assert_eq!(got, [(60, 4, 3, cpu(30.0, 3)), (125, 3, 2, cpu(20.0, 2))]);
}

#[test]
fn one_step_per_window_under_a_growing_load() {
    // A load that keeps growing: each scale-up needs a fresh 15s.
    let got = run(&spec(1, 20), 1, 60, |s, current, now| {
        total_cpu(100.0 + 20.0 * s as f64)(s, current, now)
    });
    let seconds: Vec<u64> = got.iter().map(|d| d.0).collect();
    assert_eq!(seconds, [15, 35, 55]);
    assert!(got.windows(2).all(|w| w[1].2 > w[0].2), "{got:?}");
}

#[test]
fn missing_replicas_never_scale_down_and_count_as_idle_going_up() {
    // Replica 2 of 3 is never scraped: 10% on the others holds.
    let two_of_three = |per: f64| {
        move |_: u64, _: u32, now: Millis| Tick {
            cpu: each(2, now, per),
            ..Tick::default()
        }
    };
    assert_eq!(run(&spec(1, 10), 3, 600, two_of_three(10.0)), []);
    // 2 of 3 at 60% against 50%: 1.2, but with the third idle 0.8: hold.
    assert_eq!(run(&spec(1, 10), 3, 600, two_of_three(60.0)), []);
    // 2 of 3 at 150%: 300 / (3 x 50) = 2, so 6 wanted.
    assert_eq!(
        run(&spec(1, 10), 3, 20, two_of_three(150.0)),
        [(15, 3, 6, cpu(150.0, 6))]
    );
}

#[test]
fn stale_samples_are_missing() {
    // Every sample is 2 minutes old: nothing is known, nothing changes.
    let got = run(&spec(1, 10), 4, 600, |_, current, now| Tick {
        cpu: each(current, now - 120_000, 5.0),
        ..Tick::default()
    });
    assert_eq!(got, []);
}

#[test]
fn an_absent_signal_holds_off_a_scale_down() {
    let mut s = spec(1, 10);
    s.metric = Some(MetricTarget {
        name: "agent_queue_depth".into(),
        per_replica: 10.0,
        shared: false,
    });
    // CPU says 1 replica; the metric has no data at all.
    assert_eq!(run(&s, 4, 600, total_cpu(40.0)), []);
    // With the metric reported low too, the agent scales down.
    let got = run(&s, 4, 120, |_, current, now| Tick {
        cpu: each(current, now, 10.0),
        metric: each(current, now, 1.0),
        ..Tick::default()
    });
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0].0, got[0].2), (60, 1));
}

#[test]
fn the_highest_recommendation_wins_and_names_its_signal() {
    let mut s = spec(1, 10);
    s.metric = Some(MetricTarget {
        name: "agent_queue_depth".into(),
        per_replica: 10.0,
        shared: false,
    });
    // CPU wants 3 (2 at 75%); the queues (2 x 25 = 50, 10 each) want 5.
    let got = run(&s, 2, 20, |_, current, now| Tick {
        cpu: each(current, now, 75.0),
        metric: each(current, now, 25.0),
        ..Tick::default()
    });
    assert_eq!(
        got,
        [(
            15,
            2,
            5,
            Cause::Signal {
                signal: Signal::Metric,
                value: 50.0,
                target: 20.0,
                recommended: 5,
                bounded: false
            }
        )]
    );
}

#[test]
fn a_shared_gauge_is_read_once() {
    let mut s = spec(1, 10);
    s.cpu = None;
    s.metric = Some(MetricTarget {
        name: "queue_depth".into(),
        per_replica: 100.0,
        shared: true,
    });
    // Both replicas see the one queue of 250: 3 replicas, not 5.
    let got = run(&s, 2, 20, |_, current, now| Tick {
        metric: each(current, now, 250.0),
        ..Tick::default()
    });
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].2, 3);
}

#[test]
fn bounds_cut_recommendations_and_bring_the_count_inside_at_once() {
    let got = run(&spec(1, 6), 2, 20, total_cpu(1000.0));
    assert_eq!(
        got,
        [(
            15,
            2,
            6,
            Cause::Signal {
                signal: Signal::Cpu,
                value: 500.0,
                target: 50.0,
                recommended: 20,
                bounded: true
            }
        )]
    );
    // A reload raised `min` to 3: no window, no signal needed.
    let got = run(&spec(3, 6), 1, 0, total_cpu(50.0));
    assert_eq!(got, [(0, 1, 3, Cause::BelowMin { min: 3 })]);
    let got = run(&spec(1, 4), 9, 0, total_cpu(50.0));
    assert_eq!(got, [(0, 9, 4, Cause::AboveMax { max: 4 })]);
}

#[test]
fn a_rollout_pauses_autoscaling_and_its_windows_start_again_after() {
    // High load all along; a rollout runs from 5s to 30s.
    let got = run(&spec(1, 10), 2, 60, |s, current, now| Tick {
        rollout: (5..=30).contains(&s),
        ..total_cpu(200.0)(s, current, now)
    });
    assert_eq!(got, [(50, 2, 4, cpu(100.0, 4))]);
}

#[test]
fn a_change_of_direction_waits_five_minutes() {
    let mut s = spec(1, 10);
    s.down_after = Duration::from_secs(20);
    // A burst for 20s, then idle: up at 15s, and down only 5 minutes later.
    let got = run(&s, 2, 600, |t, current, now| {
        total_cpu(if t < 20 { 200.0 } else { 40.0 })(t, current, now)
    });
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!((got[0].0, got[0].2), (15, 4));
    assert_eq!((got[1].0, got[1].2), (315, 1));
}

#[test]
fn a_scale_up_soon_after_a_scale_down_waits_too() {
    let mut s = spec(1, 10);
    s.down_after = Duration::from_secs(20);
    s.up_after = Duration::from_secs(10);
    // Down from 4 to 2 at 20s; the load then grows to want 8 at 40s: up
    // only once 5 minutes have passed since the scale-down.
    let got = run(&s, 4, 400, |t, current, now| {
        total_cpu(if t < 40 { 80.0 } else { 400.0 })(t, current, now)
    });
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!((got[0].0, got[0].1, got[0].2), (20, 4, 2));
    assert_eq!((got[1].0, got[1].1, got[1].2), (320, 2, 8));
}

#[test]
fn latency_burn_adds_a_replica_and_its_absence_holds() {
    let mut s = spec(1, 10);
    s.cpu = Some(Percent::whole(50));
    s.latency_slo = true;
    let burn = |value: f64, now: Millis| Some(Sample { at: now, value });
    // CPU is fine (50%); the SLO burns at 3x: one more replica per window.
    let got = run(&s, 2, 35, |_, current, now| Tick {
        cpu: each(current, now, 50.0),
        burn: burn(3.0, now),
        ..Tick::default()
    });
    assert_eq!(
        got.iter().map(|d| (d.0, d.2)).collect::<Vec<_>>(),
        [(15, 3), (35, 4)]
    );
    assert!(matches!(
        got[0].3,
        Cause::Signal {
            signal: Signal::LatencySlo,
            ..
        }
    ));
    // Not burning: CPU alone decides, and scales down.
    let got = run(&s, 4, 60, |_, current, now| Tick {
        cpu: each(current, now, 10.0),
        burn: burn(0.5, now),
        ..Tick::default()
    });
    assert_eq!(got.iter().map(|d| d.2).collect::<Vec<_>>(), [1]);
    // No burn rate known: no scale-down.
    let got = run(&s, 4, 600, |_, current, now| Tick {
        cpu: each(current, now, 10.0),
        ..Tick::default()
    });
    assert_eq!(got, []);
}

#[test]
fn a_gap_in_observations_starts_the_record_again() {
    let s = spec(1, 10);
    let mut a = Autoscaler::new(AutoscaleSettings::default());
    let observe = |a: &mut Autoscaler, now: Millis| {
        let cpu = each(2, now, 100.0);
        a.observe(
            &s,
            &Observation {
                now,
                current: 2,
                rollout_running: false,
                cpu: &cpu,
                gpu_util: &[],
                metric: &[],
                latency_burn: None,
            },
        )
    };
    assert_eq!(observe(&mut a, T0), None);
    // 2 minutes of silence: the high reading at T0 no longer counts.
    assert_eq!(observe(&mut a, T0 + 120_000), None);
    assert_eq!(observe(&mut a, T0 + 130_000), None);
    assert!(observe(&mut a, T0 + 135_000).is_some());
}

#[test]
fn the_record_is_bounded() {
    let mut s = spec(1, 10);
    s.down_after = Duration::from_secs(3600);
    let mut a = Autoscaler::new(AutoscaleSettings::default());
    // One observation per millisecond for 10 seconds, within tolerance.
    for ms in 0..10_000u64 {
        let now = T0 + ms;
        let cpu = each(2, now, 50.0);
        let obs = Observation {
            now,
            current: 2,
            rollout_running: false,
            cpu: &cpu,
            gpu_util: &[],
            metric: &[],
            latency_burn: None,
        };
        assert_eq!(a.observe(&s, &obs), None);
    }
    assert_eq!(a.history.len(), MAX_HISTORY);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A constant load (readings spread randomly around their mean share by
    /// up to `noise_pct`, some replicas now and then unscraped) never
    /// changes direction twice within 5 minutes, over 3 simulated hours.
    #[test]
    fn constant_load_never_flaps(
        min in 1u32..4,
        span in 0u32..16,
        start_pick in 0u32..100,
        worth in 0.5f64..14.0,
        target in 20u32..95,
        up_s in 0u64..30,
        // Short windows flap most readily: half the cases have one.
        down_s in prop_oneof![0u64..30, 0u64..400],
        step in 1u64..20,
        noise_pct in 0u64..40,
        seed in any::<u64>(),
        miss_rate in 0u64..20,
    ) {
        let max = (min + span).min(MAX);
        let mut s = spec(min, max);
        s.cpu = Some(Percent::whole(target));
        s.up_after = Duration::from_secs(up_s);
        s.down_after = Duration::from_secs(down_s);
        // The load is `worth` replicas' worth at the target.
        let total = worth * f64::from(target);
        let mut a = Autoscaler::new(AutoscaleSettings::default());
        let mut current = min + start_pick % (max - min + 1);
        let mut rng = seed | 1;
        let mut next = move || {
            // xorshift64*: deterministic noise from the seed.
            rng ^= rng >> 12;
            rng ^= rng << 25;
            rng ^= rng >> 27;
            rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        let mut changes: Vec<(Millis, Direction)> = Vec::new();
        let mut t = 0;
        while t <= 3 * 3600 {
            let now = T0 + t * 1000;
            let share = total / f64::from(current);
            let mut cpu = Vec::new();
            for replica in 0..current {
                let r = next();
                if (r % 100) < miss_rate {
                    continue;
                }
                let spread = 2 * noise_pct * 100 + 1;
                let noise = ((r >> 8) % spread) as f64 / 10_000.0 - noise_pct as f64 / 100.0;
                cpu.push(ReplicaSample { replica, at: now, value: share * (1.0 + noise) });
            }
            let obs = Observation {
                now,
                current,
                rollout_running: false,
                cpu: &cpu,
                gpu_util: &[],
                metric: &[],
                latency_burn: None,
            };
            if let Some(d) = a.observe(&s, &obs) {
                prop_assert!((min..=max).contains(&d.to));
                changes.push((now, d.direction()));
                current = d.to;
            }
            t += step;
        }
        let reversals: Vec<Millis> = changes
            .windows(2)
            .filter(|w| w[0].1 != w[1].1)
            .map(|w| w[1].0)
            .collect();
        for w in reversals.windows(2) {
            prop_assert!(
                w[1] - w[0] >= 5 * 60_000,
                "direction changed at {} and {} ms: {:?}",
                w[0] - T0,
                w[1] - T0,
                changes
            );
        }
    }
}

const MAX: u32 = crate::model::MAX_REPLICAS;
