//! Summaries of measured samples: nearest-rank percentiles, pure.
//!
//! Nearest rank (the smallest sample with at least p% of the samples at or
//! below it) rather than interpolation: every figure quoted is a time that
//! was actually measured.

use serde_json::{Value, json};

/// Percentiles of a set of samples, in the samples' unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

/// `None` for no samples.
pub fn summarize(samples: &[f64]) -> Option<Summary> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    Some(Summary {
        n,
        min: sorted[0],
        p50: nearest_rank(&sorted, 50.0),
        p90: nearest_rank(&sorted, 90.0),
        p99: nearest_rank(&sorted, 99.0),
        max: sorted[n - 1],
        mean: sorted.iter().sum::<f64>() / n as f64,
    })
}

fn nearest_rank(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len();
    // Rounded first: 0.99 * 100 is 99.00000000000001 in f64, whose ceiling
    // would skip a rank.
    let exact = (p / 100.0 * n as f64 * 1e6).round() / 1e6;
    let rank = (exact.ceil() as usize).clamp(1, n);
    sorted[rank - 1]
}

impl Summary {
    pub fn to_json(self) -> Value {
        json!({
            "n": self.n,
            "min": round3(self.min),
            "p50": round3(self.p50),
            "p90": round3(self.p90),
            "p99": round3(self.p99),
            "max": round3(self.max),
            "mean": round3(self.mean),
        })
    }
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// A summary as JSON, `null` when there were no samples.
pub fn json_of(samples: &[f64]) -> Value {
    summarize(samples).map_or(Value::Null, Summary::to_json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_one_to_a_hundred_are_the_ranks_themselves() {
        // Shuffled on purpose: the order samples arrive in must not matter.
        let samples: Vec<f64> = (1..=100).map(|i| f64::from((i * 37) % 100 + 1)).collect();
        let s = summarize(&samples).expect("samples");
        assert_eq!(
            (s.n, s.min, s.p50, s.p90, s.p99, s.max),
            (100, 1.0, 50.0, 90.0, 99.0, 100.0)
        );
        assert_eq!(s.mean, 50.5);
    }

    #[test]
    fn the_p99_of_few_samples_is_the_largest() {
        let s = summarize(&[3.0, 1.0, 2.0]).expect("samples");
        assert_eq!((s.p50, s.p99, s.max), (2.0, 3.0, 3.0));
    }

    #[test]
    fn one_outlier_in_a_thousand_does_not_move_the_p99() {
        let mut samples = vec![1.0; 999];
        samples.push(500.0);
        let s = summarize(&samples).expect("samples");
        assert_eq!((s.p99, s.max), (1.0, 500.0));
        // Eleven outliers do.
        samples.extend([500.0; 10]);
        assert_eq!(summarize(&samples).expect("samples").p99, 500.0);
    }

    #[test]
    fn no_samples_no_summary() {
        assert_eq!(summarize(&[]), None);
        assert_eq!(json_of(&[]), Value::Null);
    }
}
