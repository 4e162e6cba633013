//! What the SLO engine reads from an agent's metrics: its request count,
//! error count and request-duration histogram, and the new requests
//! between two scrapes of one replica.
//!
//! The series are named by [`AgentSeries`], whose default is the reference
//! agent's (`agents/README.md`, "Metrics"): requests are
//! `agent_requests_total{endpoint="/work"}`, errors `agent_errors_total`,
//! durations the histogram `agent_work_duration_seconds`, and the process
//! start `agent_start_time_seconds`. Every series matching a selector is
//! summed, so an agent that splits a counter by more labels still counts.
//!
//! Between two scrapes ([`AgentScrape::since`]), a replica whose counters
//! went down, whose histogram changed buckets, or whose start time changed
//! was restarted: its counters started again from zero after the earlier
//! scrape, so the later scrape's values are all new. A series missing from
//! the earlier scrape gives no delta (like Prometheus's `increase`, the
//! first sample of a series is its baseline, never new requests).

use super::histogram::{HistogramCounts, HistogramError};
use super::promtext::{Exposition, Sample};

/// A metric name and the labels its samples must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    pub name: String,
    pub labels: Vec<(String, String)>,
}

impl Selector {
    pub fn new(name: &str) -> Selector {
        Selector {
            name: name.to_owned(),
            labels: Vec::new(),
        }
    }

    pub fn with_label(mut self, name: &str, value: &str) -> Selector {
        self.labels.push((name.to_owned(), value.to_owned()));
        self
    }

    fn matches(&self, sample: &Sample, name: &str) -> bool {
        sample.name == name
            && self
                .labels
                .iter()
                .all(|(n, v)| sample.label(n) == Some(v.as_str()))
    }
}

/// Which series of an agent carry its requests, errors and durations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSeries {
    /// A counter of requests.
    pub requests: Selector,
    /// A counter of failed requests among them.
    pub errors: Selector,
    /// The base name of a histogram of request durations in seconds (its
    /// `_bucket` series are read; `le` is not part of the selector).
    pub duration: Selector,
    /// A gauge with the process start time; a change means a restart.
    pub start_time: Option<Selector>,
}

impl Default for AgentSeries {
    fn default() -> Self {
        AgentSeries {
            requests: Selector::new("agent_requests_total").with_label("endpoint", "/work"),
            errors: Selector::new("agent_errors_total"),
            duration: Selector::new("agent_work_duration_seconds"),
            start_time: Some(Selector::new("agent_start_time_seconds")),
        }
    }
}

/// A scrape's series that cannot be read as counts.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExtractError {
    #[error("`{series}` is {value}, not a count")]
    NotACount { series: String, value: f64 },
    #[error("`{series}` has a bucket with le=\"{le}\", not a number")]
    BadBound { series: String, le: String },
    #[error("`{series}` has buckets but no le=\"+Inf\" bucket")]
    NoInfBucket { series: String },
    #[error("`{series}`: {source}")]
    Histogram {
        series: String,
        source: HistogramError,
    },
}

/// One scrape of one replica, reduced to what the SLOs need. A field is
/// `None` when the agent exposes no such series.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AgentScrape {
    pub requests: Option<u64>,
    pub errors: Option<u64>,
    pub durations: Option<HistogramCounts>,
    pub start_time: Option<f64>,
}

/// The requests of one replica between two scrapes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RequestDelta {
    pub requests: Option<u64>,
    pub errors: Option<u64>,
    pub durations: Option<HistogramCounts>,
}

/// Counts above this are refused: past 2^53 an `f64` no longer holds every
/// integer, so the text could not have carried the exact count.
const MAX_EXACT: f64 = 9_007_199_254_740_992.0;

fn count(series: &str, value: f64) -> Result<u64, ExtractError> {
    if value.is_finite() && value >= 0.0 && value.fract() == 0.0 && value <= MAX_EXACT {
        Ok(value as u64)
    } else {
        Err(ExtractError::NotACount {
            series: series.to_owned(),
            value,
        })
    }
}

fn counter(exp: &Exposition, selector: &Selector) -> Result<Option<u64>, ExtractError> {
    let mut total: Option<u64> = None;
    for sample in exp
        .samples
        .iter()
        .filter(|s| selector.matches(s, &selector.name))
    {
        let n = count(&selector.name, sample.value)?;
        total = Some(total.unwrap_or(0).saturating_add(n));
    }
    Ok(total)
}

fn histogram(
    exp: &Exposition,
    selector: &Selector,
) -> Result<Option<HistogramCounts>, ExtractError> {
    let series = format!("{}_bucket", selector.name);
    // (bound, cumulative count), summed over matching series per bound.
    let mut buckets: Vec<(f64, u64)> = Vec::new();
    let mut inf: Option<u64> = None;
    for sample in exp.samples.iter().filter(|s| selector.matches(s, &series)) {
        let n = count(&series, sample.value)?;
        let le = sample.label("le").unwrap_or("");
        let bound: f64 = le.parse().map_err(|_| ExtractError::BadBound {
            series: series.clone(),
            le: le.chars().take(40).collect(),
        })?;
        if bound == f64::INFINITY {
            inf = Some(inf.unwrap_or(0).saturating_add(n));
        } else if let Some(entry) = buckets.iter_mut().find(|(b, _)| *b == bound) {
            entry.1 = entry.1.saturating_add(n);
        } else {
            buckets.push((bound, n));
        }
    }
    if buckets.is_empty() && inf.is_none() {
        return Ok(None);
    }
    let Some(count) = inf else {
        return Err(ExtractError::NoInfBucket { series });
    };
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (bounds, cumulative) = buckets.into_iter().unzip();
    HistogramCounts::new(bounds, cumulative, count)
        .map(Some)
        .map_err(|source| ExtractError::Histogram { series, source })
}

impl AgentScrape {
    /// Reads the series named by `series` out of a parsed scrape.
    pub fn extract(exp: &Exposition, series: &AgentSeries) -> Result<AgentScrape, ExtractError> {
        let start_time = series.start_time.as_ref().and_then(|selector| {
            exp.samples
                .iter()
                .find(|s| selector.matches(s, &selector.name))
                .map(|s| s.value)
        });
        Ok(AgentScrape {
            requests: counter(exp, &series.requests)?,
            errors: counter(exp, &series.errors)?,
            durations: histogram(exp, &series.duration)?,
            start_time,
        })
    }

    /// True when the replica restarted between `earlier` and `self`.
    pub fn restarted_since(&self, earlier: &AgentScrape) -> bool {
        let went_down = |now: Option<u64>, before: Option<u64>| matches!((now, before), (Some(n), Some(b)) if n < b);
        let new_start =
            matches!((self.start_time, earlier.start_time), (Some(n), Some(b)) if n != b);
        let histogram_reset = match (&self.durations, &earlier.durations) {
            (Some(now), Some(before)) => now.since(before).is_none(),
            _ => false,
        };
        new_start
            || went_down(self.requests, earlier.requests)
            || went_down(self.errors, earlier.errors)
            || histogram_reset
    }

    /// The new requests since `earlier` (see the module doc), and whether
    /// the replica restarted in between.
    pub fn since(&self, earlier: &AgentScrape) -> (RequestDelta, bool) {
        let restarted = self.restarted_since(earlier);
        let counter = |now: Option<u64>, before: Option<u64>| match (now, before) {
            (Some(n), Some(_)) if restarted => Some(n),
            (Some(n), Some(b)) => Some(n - b),
            _ => None,
        };
        let durations = match (&self.durations, &earlier.durations) {
            (Some(now), Some(_)) if restarted => Some(now.clone()),
            (Some(now), Some(before)) => now.since(before),
            _ => None,
        };
        let delta = RequestDelta {
            requests: counter(self.requests, earlier.requests),
            errors: counter(self.errors, earlier.errors),
            durations,
        };
        (delta, restarted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slo::promtext::{Limits, parse};

    fn exposition(requests: u64, errors: u64, buckets: [u64; 3], start: f64) -> String {
        format!(
            "agent_requests_total{{endpoint=\"/health\"}} 999\n\
             agent_requests_total{{endpoint=\"/work\"}} {requests}\n\
             agent_errors_total {errors}\n\
             agent_work_duration_seconds_bucket{{le=\"0.5\"}} {}\n\
             agent_work_duration_seconds_bucket{{le=\"2.5\"}} {}\n\
             agent_work_duration_seconds_bucket{{le=\"+Inf\"}} {}\n\
             agent_work_duration_seconds_sum 12.5\n\
             agent_work_duration_seconds_count {}\n\
             agent_start_time_seconds {start}\n",
            buckets[0], buckets[1], buckets[2], buckets[2]
        )
    }

    fn scrape(text: &str) -> Result<AgentScrape, ExtractError> {
        let exp = parse(text.as_bytes(), &Limits::default()).unwrap();
        AgentScrape::extract(&exp, &AgentSeries::default())
    }

    fn hist(bounds: &[f64], cumulative: &[u64], count: u64) -> HistogramCounts {
        HistogramCounts::new(bounds.to_vec(), cumulative.to_vec(), count).unwrap()
    }

    #[test]
    fn reads_the_reference_agent_series() {
        let got = scrape(&exposition(30, 2, [10, 25, 30], 1.7e9)).unwrap();
        assert_eq!(
            got,
            AgentScrape {
                requests: Some(30),
                errors: Some(2),
                durations: Some(hist(&[0.5, 2.5], &[10, 25], 30)),
                start_time: Some(1.7e9),
            }
        );
    }

    #[test]
    fn sums_matching_series_and_takes_other_names() {
        let text = "\
svc_calls_total{path=\"/a\",code=\"200\"} 5
svc_calls_total{path=\"/a\",code=\"500\"} 2
svc_calls_total{path=\"/b\",code=\"200\"} 100
svc_failures_total{path=\"/a\"} 2
svc_latency_seconds_bucket{path=\"/a\",le=\"1\"} 3
svc_latency_seconds_bucket{path=\"/a\",le=\"+Inf\"} 7
svc_latency_seconds_bucket{path=\"/b\",le=\"1\"} 50
svc_latency_seconds_bucket{path=\"/b\",le=\"+Inf\"} 100
";
        let series = AgentSeries {
            requests: Selector::new("svc_calls_total").with_label("path", "/a"),
            errors: Selector::new("svc_failures_total"),
            duration: Selector::new("svc_latency_seconds").with_label("path", "/a"),
            start_time: None,
        };
        let exp = parse(text.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(
            AgentScrape::extract(&exp, &series),
            Ok(AgentScrape {
                requests: Some(7),
                errors: Some(2),
                durations: Some(hist(&[1.0], &[3], 7)),
                start_time: None,
            })
        );
        // Nothing matches the default names: every field is absent.
        assert_eq!(
            AgentScrape::extract(&exp, &AgentSeries::default()),
            Ok(AgentScrape::default())
        );
    }

    #[test]
    fn refuses_series_that_are_not_counts() {
        let table: [(&str, ExtractError); 6] = [
            (
                "agent_errors_total 1.5",
                ExtractError::NotACount {
                    series: "agent_errors_total".into(),
                    value: 1.5,
                },
            ),
            (
                "agent_errors_total -1",
                ExtractError::NotACount {
                    series: "agent_errors_total".into(),
                    value: -1.0,
                },
            ),
            (
                "agent_errors_total 1e300",
                ExtractError::NotACount {
                    series: "agent_errors_total".into(),
                    value: 1e300,
                },
            ),
            (
                "agent_work_duration_seconds_bucket{le=\"fast\"} 1",
                ExtractError::BadBound {
                    series: "agent_work_duration_seconds_bucket".into(),
                    le: "fast".into(),
                },
            ),
            (
                "agent_work_duration_seconds_bucket{le=\"1\"} 1",
                ExtractError::NoInfBucket {
                    series: "agent_work_duration_seconds_bucket".into(),
                },
            ),
            (
                "agent_work_duration_seconds_bucket{le=\"1\"} 5\nagent_work_duration_seconds_bucket{le=\"+Inf\"} 4",
                ExtractError::Histogram {
                    series: "agent_work_duration_seconds_bucket".into(),
                    source: HistogramError::Counts,
                },
            ),
        ];
        for (text, want) in table {
            assert_eq!(scrape(text), Err(want), "{text}");
        }
    }

    /// `(requests, errors, (histogram cumulative counts, count), restarted)`
    type Want<'a> = (Option<u64>, Option<u64>, Option<(&'a [u64], u64)>, bool);

    /// `(earlier, later) -> want`
    fn check(earlier: &AgentScrape, later: &AgentScrape, want: Want<'_>) {
        let (delta, restarted) = later.since(earlier);
        let durations = delta
            .durations
            .as_ref()
            .map(|h| (h.cumulative(), h.count()));
        assert_eq!(
            (delta.requests, delta.errors, durations, restarted),
            want,
            "{earlier:?} -> {later:?}"
        );
    }

    #[test]
    fn deltas_between_scrapes_and_resets() {
        let s = |r, e, b, t| scrape(&exposition(r, e, b, t)).unwrap();
        let base = s(30, 2, [10, 25, 30], 100.0);
        // Steady growth.
        check(
            &base,
            &s(40, 3, [15, 33, 40], 100.0),
            (Some(10), Some(1), Some((&[5, 8], 10)), false),
        );
        // Nothing new.
        check(&base, &base, (Some(0), Some(0), Some((&[0, 0], 0)), false));
        // A counter went down: restarted, the later values are all new.
        check(
            &base,
            &s(4, 0, [4, 4, 4], 100.0),
            (Some(4), Some(0), Some((&[4, 4], 4)), true),
        );
        // Only the histogram went down.
        check(
            &base,
            &s(40, 3, [9, 33, 40], 100.0),
            (Some(40), Some(3), Some((&[9, 33], 40)), true),
        );
        // Counters grew past their old values, but the process is new.
        check(
            &base,
            &s(50, 9, [20, 45, 50], 200.0),
            (Some(50), Some(9), Some((&[20, 45], 50)), true),
        );
        // A series that appears is a baseline, not new requests.
        let no_errors = AgentScrape {
            errors: None,
            ..base.clone()
        };
        check(
            &no_errors,
            &s(40, 3, [15, 33, 40], 100.0),
            (Some(10), None, Some((&[5, 8], 10)), false),
        );
        // Without start times, only the counters tell.
        let anon = |r, e| AgentScrape {
            requests: Some(r),
            errors: Some(e),
            ..AgentScrape::default()
        };
        check(&anon(5, 1), &anon(7, 1), (Some(2), Some(0), None, false));
        check(&anon(5, 1), &anon(7, 0), (Some(7), Some(0), None, true));
    }
}
