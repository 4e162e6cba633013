//! The engine's budget against the Prometheus recording rules: the promtool
//! unit test `compose/prometheus/tests/slo_budget.test.yaml` is read here,
//! its counters fed to the engine as the events of each minute, and every
//! expectation it sets on `slo:period_error_budget_remaining:ratio` checked
//! against the engine's own `budget_remaining`, with the same tolerance.
//! So the rules and the engine agree on the same inputs, and a change to
//! either that breaks the agreement fails one test or the other.

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use orch_core::model::Slo;
use orch_core::slo::{AvailabilitySample, Sli, SloEngine};
use orch_core::units::{Duration, Percent};
use serde_yaml::Value;

const MINUTE_MS: u64 = 60_000;
/// Any instant will do; the rules' unit tests start at 0.
const BASE: u64 = 1_700_000_000_000;

fn test_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../compose/prometheus/tests/slo_budget.test.yaml")
}

/// promtool's expanding notation: `a`, `axN` (N + 1 copies of a), `a+bxN`
/// and `a-bxN` (N + 1 values from a, stepping by b).
fn expand(values: &str) -> Vec<f64> {
    let mut out = Vec::new();
    for token in values.split_whitespace() {
        let Some((start, times)) = token.split_once('x') else {
            out.push(token.parse().unwrap());
            continue;
        };
        let times: usize = times.parse().unwrap();
        let (first, step) = match start[1..].find(['+', '-']) {
            Some(i) => {
                let (a, b) = start.split_at(i + 1);
                (a.parse::<f64>().unwrap(), b.parse::<f64>().unwrap())
            }
            None => (start.parse().unwrap(), 0.0),
        };
        out.extend((0..=times).map(|k| first + step * k as f64));
    }
    out
}

/// `name{k="v", ...}` as (name, labels).
fn series(text: &str) -> (String, BTreeMap<String, String>) {
    let (name, rest) = text.split_once('{').unwrap();
    let labels = rest
        .trim_end_matches('}')
        .split(',')
        .map(|kv| {
            let (k, v) = kv.trim().split_once('=').unwrap();
            (k.to_string(), v.trim_matches('"').to_string())
        })
        .collect();
    (name.to_string(), labels)
}

fn minutes(text: &str) -> u64 {
    text.strip_suffix('m').unwrap().parse().unwrap()
}

/// The increases Prometheus reads in a counter: a drop is a reset, after
/// which the whole value is new.
fn increases(values: &[f64]) -> Vec<u64> {
    values
        .windows(2)
        .map(|w| if w[1] >= w[0] { w[1] - w[0] } else { w[1] } as u64)
        .collect()
}

#[test]
fn expand_reads_promtools_notation() {
    assert_eq!(expand("0+16x2 80x1 5"), [0.0, 16.0, 32.0, 80.0, 80.0, 5.0]);
    assert_eq!(expand("10-2x2"), [10.0, 8.0, 6.0]);
    assert_eq!(increases(&[0.0, 5.0, 9.0, 3.0, 4.0]), [5, 4, 3, 1]);
}

#[test]
fn the_engine_spends_the_budget_as_the_recording_rules_do() {
    let doc: Value = serde_yaml::from_str(&std::fs::read_to_string(test_file()).unwrap()).unwrap();
    let mut checked = 0;
    for case in doc["tests"].as_sequence().unwrap() {
        assert_eq!(case["interval"].as_str(), Some("1m"));
        // Per group: objective, events, errors.
        let mut groups: BTreeMap<String, [Vec<f64>; 3]> = BTreeMap::new();
        for s in case["input_series"].as_sequence().unwrap() {
            let (name, labels) = series(s["series"].as_str().unwrap());
            let slot = match name.as_str() {
                "orchestrator_slo_objective_ratio" => 0,
                "orchestrator_slo_events_total" => 1,
                "orchestrator_slo_errors_total" => 2,
                other => panic!("unexpected series {other}"),
            };
            groups.entry(labels["group"].clone()).or_default()[slot] =
                expand(s["values"].as_str().unwrap());
        }
        for t in case["promql_expr_test"].as_sequence().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            let Some(rest) =
                expr.strip_prefix("abs(slo:period_error_budget_remaining:ratio{group=\"")
            else {
                continue;
            };
            let (group, rest) = rest.split_once("\"} - ").unwrap();
            let (want, tolerance) = rest.split_once(") < bool ").unwrap();
            let (want, tolerance): (f64, f64) = (want.parse().unwrap(), tolerance.parse().unwrap());
            assert_eq!(t["exp_samples"][0]["value"].as_f64(), Some(1.0), "{expr}");
            let at = minutes(t["eval_time"].as_str().unwrap());

            let [objective, events, errors] = &groups[group];
            let slo = Slo {
                availability: Some(Percent::from_basis_points(
                    (objective[0] * 10_000.0).round() as u32,
                )),
                latency_p99: None,
                error_rate: None,
                window: Duration::from_secs(30 * 86_400),
            };
            let mut engine = SloEngine::new([(group, &slo)]);
            let (events, errors) = (increases(events), increases(errors));
            for minute in 1..=at {
                let i = minute as usize - 1;
                let sample = AvailabilitySample {
                    wanted: events[i],
                    healthy: events[i] - errors[i],
                    excused: 0,
                };
                engine
                    .record_availability(BASE + minute * MINUTE_MS, group, sample)
                    .unwrap();
            }
            let got = engine
                .group_report(BASE + at * MINUTE_MS, group)
                .and_then(|g| g.sli(Sli::Availability)?.budget_remaining)
                .unwrap();
            assert!(
                (got - want).abs() < tolerance,
                "{group} at {at}m: the engine leaves {got}, the rules {want}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 5, "only {checked} expectations read");
}
