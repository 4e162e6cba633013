//! A small metrics registry that renders the Prometheus text format 0.0.4.
//!
//! It owns what an agent needs and no more: counters (optionally with
//! labels), gauges, and histograms. Registration enforces the rules
//! `promtool check metrics` lints for (snake_case names, `_total` on counters
//! and only on counters, help text, no reserved suffixes or labels), so a
//! registry that accepted a metric always renders a clean exposition.
//!
//! Handles are cheap clones of shared atomics; recording never allocates.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// The `Content-Type` of a rendered registry.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Buckets (seconds) for request and inference latencies, from 1 ms to 60 s.
pub const LATENCY_BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// A metric could not be registered or addressed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricsError {
    /// The name is not lowercase snake_case (`[a-z_][a-z0-9_]*`).
    #[error(
        "metric name {name:?} must be lowercase snake_case: [a-z_][a-z0-9_]*, not starting with __"
    )]
    BadName {
        /// The rejected name.
        name: String,
    },
    /// A counter without `_total`, or another kind with it.
    #[error("metric name {name:?}: {rule}")]
    Suffix {
        /// The rejected name.
        name: String,
        /// The rule broken.
        rule: &'static str,
    },
    /// No help text.
    #[error("metric {name:?} needs help text")]
    NoHelp {
        /// The metric.
        name: String,
    },
    /// A label name that is not snake_case or is reserved.
    #[error(
        "metric {name:?}: label {label:?} must be lowercase snake_case and not le, quantile or __*"
    )]
    BadLabel {
        /// The metric.
        name: String,
        /// The rejected label name.
        label: String,
    },
    /// The name, or a series name it renders, is taken by another metric.
    #[error("metric {name:?} clashes with the already registered {existing:?}")]
    Duplicate {
        /// The metric being registered.
        name: String,
        /// The metric already registered.
        existing: String,
    },
    /// Bucket bounds are empty, not finite, or not strictly increasing.
    #[error("histogram {name:?}: buckets must be finite, strictly increasing and not empty")]
    BadBuckets {
        /// The histogram.
        name: String,
    },
    /// A labelled metric was given the wrong number of label values.
    #[error("metric {name:?} takes {expected} label values, got {got}")]
    LabelCount {
        /// The metric.
        name: String,
        /// Its label count.
        expected: usize,
        /// The values given.
        got: usize,
    },
}

// The std mutexes below are only held to copy or insert a value, never
// across an await or while rendering user code.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A monotonically increasing count.
#[derive(Debug, Clone, Default)]
pub struct Counter {
    value: Arc<AtomicU64>,
}

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.inc_by(1);
    }

    /// Adds `n`.
    pub fn inc_by(&self, n: u64) {
        self.value.fetch_add(n, Ordering::Relaxed);
    }

    /// The present count.
    pub fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Clone, Default)]
pub struct Gauge {
    // f64 bits: there is no AtomicF64.
    bits: Arc<AtomicU64>,
}

impl Gauge {
    /// Sets the value.
    pub fn set(&self, value: f64) {
        self.bits.store(value.to_bits(), Ordering::Relaxed);
    }

    /// Adds `delta` (negative to subtract).
    pub fn add(&self, delta: f64) {
        // A CAS loop: fetch_add on the bits would add integers, not floats.
        let mut current = self.bits.load(Ordering::Relaxed);
        loop {
            let next = (f64::from_bits(current) + delta).to_bits();
            match self.bits.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    /// The present value.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.bits.load(Ordering::Relaxed))
    }
}

/// A family of counters told apart by label values.
#[derive(Debug, Clone)]
pub struct CounterVec {
    inner: Arc<CounterVecInner>,
}

#[derive(Debug)]
struct CounterVecInner {
    name: String,
    labels: Vec<String>,
    children: Mutex<BTreeMap<Vec<String>, Counter>>,
}

impl CounterVec {
    /// The counter for these label values (in the registered label order),
    /// created at zero on first use. Keep the returned handle on hot paths:
    /// this lookup takes a lock.
    pub fn with(&self, values: &[&str]) -> Result<Counter, MetricsError> {
        if values.len() != self.inner.labels.len() {
            return Err(MetricsError::LabelCount {
                name: self.inner.name.clone(),
                expected: self.inner.labels.len(),
                got: values.len(),
            });
        }
        let key: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
        Ok(lock(&self.inner.children).entry(key).or_default().clone())
    }
}

/// Observations counted into fixed buckets, with their sum and count.
#[derive(Debug, Clone)]
pub struct Histogram {
    inner: Arc<HistogramInner>,
}

#[derive(Debug)]
struct HistogramInner {
    bounds: Vec<f64>,
    // One lock for counts and sum so a scrape never sees a count that
    // disagrees with its buckets.
    data: Mutex<HistogramData>,
}

#[derive(Debug, Default, Clone)]
struct HistogramData {
    // Per bucket, not cumulative; the last slot is the +Inf overflow.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    /// Records one observation. NaN is ignored: it would poison the sum.
    pub fn observe(&self, value: f64) {
        if value.is_nan() {
            return;
        }
        let slot = self
            .inner
            .bounds
            .iter()
            .position(|&bound| value <= bound)
            .unwrap_or(self.inner.bounds.len());
        let mut data = lock(&self.inner.data);
        data.counts[slot] += 1;
        data.sum += value;
        data.count += 1;
    }

    /// Records a duration in seconds.
    pub fn observe_duration(&self, duration: Duration) {
        self.observe(duration.as_secs_f64());
    }

    /// How many observations were recorded.
    pub fn count(&self) -> u64 {
        lock(&self.inner.data).count
    }

    /// The sum of all observations.
    pub fn sum(&self) -> f64 {
        lock(&self.inner.data).sum
    }
}

#[derive(Debug, Clone)]
enum Metric {
    Counter(Counter),
    CounterVec(CounterVec),
    Gauge(Gauge),
    Histogram(Histogram),
}

impl Metric {
    fn type_name(&self) -> &'static str {
        match self {
            Metric::Counter(_) | Metric::CounterVec(_) => "counter",
            Metric::Gauge(_) => "gauge",
            Metric::Histogram(_) => "histogram",
        }
    }
}

#[derive(Debug)]
struct Family {
    name: String,
    help: String,
    metric: Metric,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// The set of metrics one agent exposes, rendered in registration order.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    families: Arc<Mutex<Vec<Family>>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a counter; its name must end in `_total`.
    pub fn counter(&self, name: &str, help: &str) -> Result<Counter, MetricsError> {
        let counter = Counter::default();
        self.register(name, help, Kind::Counter, Metric::Counter(counter.clone()))?;
        Ok(counter)
    }

    /// Registers a counter with labels; its name must end in `_total`.
    pub fn counter_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<CounterVec, MetricsError> {
        for label in labels {
            if !is_snake(label) || matches!(*label, "le" | "quantile") {
                return Err(MetricsError::BadLabel {
                    name: name.to_owned(),
                    label: (*label).to_owned(),
                });
            }
        }
        let vec = CounterVec {
            inner: Arc::new(CounterVecInner {
                name: name.to_owned(),
                labels: labels.iter().map(|l| (*l).to_owned()).collect(),
                children: Mutex::new(BTreeMap::new()),
            }),
        };
        self.register(name, help, Kind::Counter, Metric::CounterVec(vec.clone()))?;
        Ok(vec)
    }

    /// Registers a gauge.
    pub fn gauge(&self, name: &str, help: &str) -> Result<Gauge, MetricsError> {
        let gauge = Gauge::default();
        self.register(name, help, Kind::Gauge, Metric::Gauge(gauge.clone()))?;
        Ok(gauge)
    }

    /// Registers a histogram with these upper bounds (`+Inf` is implied).
    pub fn histogram(
        &self,
        name: &str,
        help: &str,
        buckets: &[f64],
    ) -> Result<Histogram, MetricsError> {
        let increasing = buckets.windows(2).all(|pair| pair[0] < pair[1]);
        if buckets.is_empty() || !increasing || buckets.iter().any(|b| !b.is_finite()) {
            return Err(MetricsError::BadBuckets {
                name: name.to_owned(),
            });
        }
        let histogram = Histogram {
            inner: Arc::new(HistogramInner {
                bounds: buckets.to_vec(),
                data: Mutex::new(HistogramData {
                    counts: vec![0; buckets.len() + 1],
                    ..HistogramData::default()
                }),
            }),
        };
        self.register(
            name,
            help,
            Kind::Histogram,
            Metric::Histogram(histogram.clone()),
        )?;
        Ok(histogram)
    }

    fn register(
        &self,
        name: &str,
        help: &str,
        kind: Kind,
        metric: Metric,
    ) -> Result<(), MetricsError> {
        check_name(name, kind)?;
        if help.trim().is_empty() {
            return Err(MetricsError::NoHelp {
                name: name.to_owned(),
            });
        }
        let mut families = lock(&self.families);
        let new_series = series_names(name, kind);
        for family in families.iter() {
            let existing_kind = match family.metric {
                Metric::Counter(_) | Metric::CounterVec(_) => Kind::Counter,
                Metric::Gauge(_) => Kind::Gauge,
                Metric::Histogram(_) => Kind::Histogram,
            };
            let existing = series_names(&family.name, existing_kind);
            if family.name == name || new_series.iter().any(|s| existing.contains(s)) {
                return Err(MetricsError::Duplicate {
                    name: name.to_owned(),
                    existing: family.name.clone(),
                });
            }
        }
        families.push(Family {
            name: name.to_owned(),
            help: help.to_owned(),
            metric,
        });
        Ok(())
    }

    /// Renders every metric in the text format 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for family in lock(&self.families).iter() {
            // Writing to a String cannot fail.
            let _ = render_family(&mut out, family);
        }
        out
    }
}

fn is_snake(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    first_ok
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.starts_with("__")
}

fn check_name(name: &str, kind: Kind) -> Result<(), MetricsError> {
    if !is_snake(name) {
        return Err(MetricsError::BadName {
            name: name.to_owned(),
        });
    }
    let suffix = |rule| {
        Err(MetricsError::Suffix {
            name: name.to_owned(),
            rule,
        })
    };
    let total = name.ends_with("_total");
    match kind {
        Kind::Counter if !total => return suffix("counter names end in _total"),
        Kind::Gauge | Kind::Histogram if total => {
            return suffix("only counter names end in _total");
        }
        _ => {}
    }
    if ["_bucket", "_count", "_sum"]
        .iter()
        .any(|reserved| name.ends_with(reserved))
    {
        return suffix("_bucket, _count and _sum are reserved for histogram series");
    }
    Ok(())
}

/// The sample names a family puts on the wire.
fn series_names(name: &str, kind: Kind) -> Vec<String> {
    match kind {
        Kind::Histogram => ["_bucket", "_sum", "_count"]
            .iter()
            .map(|suffix| format!("{name}{suffix}"))
            .collect(),
        Kind::Counter | Kind::Gauge => vec![name.to_owned()],
    }
}

/// A sample value as the format spells it: `+Inf`, `-Inf`, `NaN`, or the
/// shortest decimal that round-trips (Rust never uses an exponent here).
fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        value.to_string()
    }
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label_value(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn render_family(out: &mut String, family: &Family) -> fmt::Result {
    let name = &family.name;
    writeln!(out, "# HELP {name} {}", escape_help(&family.help))?;
    writeln!(out, "# TYPE {name} {}", family.metric.type_name())?;
    match &family.metric {
        Metric::Counter(counter) => writeln!(out, "{name} {}", counter.get())?,
        Metric::Gauge(gauge) => writeln!(out, "{name} {}", format_value(gauge.get()))?,
        Metric::CounterVec(vec) => {
            let children = lock(&vec.inner.children).clone();
            for (values, counter) in children {
                let labels: Vec<String> = vec
                    .inner
                    .labels
                    .iter()
                    .zip(&values)
                    .map(|(label, value)| format!("{label}=\"{}\"", escape_label_value(value)))
                    .collect();
                writeln!(out, "{name}{{{}}} {}", labels.join(","), counter.get())?;
            }
        }
        Metric::Histogram(histogram) => {
            let data = lock(&histogram.inner.data).clone();
            let mut cumulative = 0;
            for (bound, count) in histogram.inner.bounds.iter().zip(&data.counts) {
                cumulative += count;
                writeln!(
                    out,
                    "{name}_bucket{{le=\"{}\"}} {cumulative}",
                    format_value(*bound)
                )?;
            }
            writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", data.count)?;
            writeln!(out, "{name}_sum {}", format_value(data.sum))?;
            writeln!(out, "{name}_count {}", data.count)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_kind_exactly() {
        let registry = Registry::new();
        let requests = registry
            .counter_vec(
                "app_requests_total",
                "Requests, by endpoint.",
                &["endpoint"],
            )
            .unwrap();
        let errors = registry
            .counter("app_errors_total", "Failed requests.")
            .unwrap();
        let up = registry.gauge("app_up", "1 while serving.").unwrap();
        let latency = registry
            .histogram("app_latency_seconds", "Latency.", &[0.1, 1.0, 2.5])
            .unwrap();

        requests.with(&["/work"]).unwrap().inc_by(3);
        requests.with(&["/health"]).unwrap().inc();
        errors.inc();
        up.set(1.0);
        for value in [0.05, 0.1, 0.5, 3.0] {
            latency.observe(value);
        }
        latency.observe(f64::NAN);

        let want = "\
# HELP app_requests_total Requests, by endpoint.
# TYPE app_requests_total counter
app_requests_total{endpoint=\"/health\"} 1
app_requests_total{endpoint=\"/work\"} 3
# HELP app_errors_total Failed requests.
# TYPE app_errors_total counter
app_errors_total 1
# HELP app_up 1 while serving.
# TYPE app_up gauge
app_up 1
# HELP app_latency_seconds Latency.
# TYPE app_latency_seconds histogram
app_latency_seconds_bucket{le=\"0.1\"} 2
app_latency_seconds_bucket{le=\"1\"} 3
app_latency_seconds_bucket{le=\"2.5\"} 3
app_latency_seconds_bucket{le=\"+Inf\"} 4
app_latency_seconds_sum 3.65
app_latency_seconds_count 4
";
        assert_eq!(registry.render(), want);
        assert_eq!(latency.count(), 4);
    }

    #[test]
    fn escapes_help_and_label_values() {
        let registry = Registry::new();
        let vec = registry
            .counter_vec("x_total", "a \\ b\nc \"quoted\"", &["path"])
            .unwrap();
        vec.with(&["a\"b\\c\nd"]).unwrap().inc();
        assert_eq!(
            registry.render(),
            "# HELP x_total a \\\\ b\\nc \"quoted\"\n\
             # TYPE x_total counter\n\
             x_total{path=\"a\\\"b\\\\c\\nd\"} 1\n"
        );
    }

    #[test]
    fn formats_special_values() {
        let table = [
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
            (1.0, "1"),
            (0.005, "0.005"),
            (1_763_780_000.25, "1763780000.25"),
            (-2.5, "-2.5"),
        ];
        for (value, want) in table {
            assert_eq!(format_value(value), want);
        }
    }

    #[test]
    fn gauge_adds_and_subtracts() {
        let gauge = Gauge::default();
        gauge.add(2.5);
        gauge.add(-1.0);
        assert_eq!(gauge.get(), 1.5);
    }

    #[test]
    fn labelled_counters_share_children() {
        let registry = Registry::new();
        let vec = registry.counter_vec("y_total", "Y.", &["a", "b"]).unwrap();
        vec.with(&["1", "2"]).unwrap().inc();
        vec.with(&["1", "2"]).unwrap().inc();
        assert_eq!(vec.with(&["1", "2"]).unwrap().get(), 2);
        assert_eq!(
            vec.with(&["1"]).unwrap_err(),
            MetricsError::LabelCount {
                name: "y_total".into(),
                expected: 2,
                got: 1
            }
        );
    }

    #[test]
    fn rejects_what_promtool_would_flag() {
        let registry = Registry::new();
        registry.counter("taken_total", "Taken.").unwrap();
        registry.histogram("lat_seconds", "L.", &[1.0]).unwrap();
        let cases: Vec<(Result<(), MetricsError>, &str)> = vec![
            (
                registry.counter("requests", "R.").map(drop),
                "end in _total",
            ),
            (registry.gauge("up_total", "U.").map(drop), "only counter"),
            (registry.gauge("camelCase", "C.").map(drop), "snake_case"),
            (registry.gauge("has:colon", "C.").map(drop), "snake_case"),
            (registry.gauge("__reserved", "C.").map(drop), "snake_case"),
            (registry.gauge("9lives", "C.").map(drop), "snake_case"),
            (registry.gauge("queue_count", "C.").map(drop), "reserved"),
            (registry.gauge("no_help", " ").map(drop), "help"),
            (
                registry.counter("taken_total", "Again.").map(drop),
                "clashes",
            ),
            (
                registry.gauge("lat_seconds_sum", "S.").map(drop),
                "reserved",
            ),
            (
                registry.counter_vec("l_total", "L.", &["le"]).map(drop),
                "label \"le\"",
            ),
            (
                registry.counter_vec("l_total", "L.", &["Path"]).map(drop),
                "label \"Path\"",
            ),
            (
                registry.histogram("h_seconds", "H.", &[]).map(drop),
                "buckets",
            ),
            (
                registry.histogram("h_seconds", "H.", &[1.0, 1.0]).map(drop),
                "buckets",
            ),
            (
                registry
                    .histogram("h_seconds", "H.", &[1.0, f64::INFINITY])
                    .map(drop),
                "buckets",
            ),
        ];
        for (result, needle) in cases {
            let err = result.unwrap_err().to_string();
            assert!(err.contains(needle), "{err:?} should mention {needle:?}");
        }
        // Nothing rejected was registered.
        let rendered = registry.render();
        assert_eq!(rendered.matches("# TYPE").count(), 2, "{rendered}");
    }

    #[test]
    fn empty_labelled_family_renders_header_only() {
        let registry = Registry::new();
        registry.counter_vec("z_total", "Z.", &["k"]).unwrap();
        assert_eq!(
            registry.render(),
            "# HELP z_total Z.\n# TYPE z_total counter\n"
        );
    }
}
