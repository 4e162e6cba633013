//! Request-duration histograms as counts, and how many requests of one
//! were at or under a latency threshold.
//!
//! A histogram only says how many requests fell into each bucket
//! `(lower, upper]`, not where inside it. When the threshold falls inside
//! a bucket, the requests in that bucket are taken as spread evenly across
//! it, the assumption Prometheus's `histogram_quantile` makes: with
//! cumulative counts `c(lower)` and `c(upper)`,
//!
//! ```text
//! good = c(lower) + (c(upper) − c(lower)) × (threshold − lower) / (upper − lower)
//! ```
//!
//! The first bucket's lower edge is 0 when its upper bound is positive (as
//! `histogram_quantile` takes it); a threshold on a bound counts that whole
//! bucket. Requests above the highest finite bound (the `+Inf` bucket) are
//! always counted slow: nothing says how slow, so a threshold beyond the
//! last bound cannot vouch for them. The estimate is a real number; the
//! engine carries its fraction from one record to the next, so rounding
//! never drifts by more than one request in total.

/// Cumulative bucket counts of one histogram (or the difference of two).
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramCounts {
    /// Finite upper bounds in seconds, strictly increasing.
    bounds: Vec<f64>,
    /// Requests at or under each bound; non-decreasing, at most `count`.
    cumulative: Vec<u64>,
    /// Every request, the `+Inf` bucket's count.
    count: u64,
}

/// Bucket counts that no histogram could have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistogramError {
    #[error("{bounds} bucket bounds for {counts} counts")]
    Lengths { bounds: usize, counts: usize },
    #[error("bucket bounds must be finite and strictly increasing")]
    Bounds,
    #[error("cumulative bucket counts must not decrease, nor exceed the +Inf count")]
    Counts,
}

impl HistogramCounts {
    /// Checks the shape of a histogram: `bounds` and `cumulative` pair up,
    /// bounds increase, counts never decrease up to `count`.
    pub fn new(bounds: Vec<f64>, cumulative: Vec<u64>, count: u64) -> Result<Self, HistogramError> {
        if bounds.len() != cumulative.len() {
            return Err(HistogramError::Lengths {
                bounds: bounds.len(),
                counts: cumulative.len(),
            });
        }
        if bounds.iter().any(|b| !b.is_finite()) || bounds.windows(2).any(|w| w[0] >= w[1]) {
            return Err(HistogramError::Bounds);
        }
        let increasing = cumulative.windows(2).all(|w| w[0] <= w[1]);
        if !increasing || cumulative.last().is_some_and(|&last| last > count) {
            return Err(HistogramError::Counts);
        }
        Ok(HistogramCounts {
            bounds,
            cumulative,
            count,
        })
    }

    pub fn bounds(&self) -> &[f64] {
        &self.bounds
    }

    pub fn cumulative(&self) -> &[u64] {
        &self.cumulative
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// The requests between `earlier` and `self`, or `None` when the two do
    /// not have the same buckets or some count went down (a reset).
    pub fn since(&self, earlier: &HistogramCounts) -> Option<HistogramCounts> {
        if self.bounds != earlier.bounds {
            return None;
        }
        let count = self.count.checked_sub(earlier.count)?;
        let mut cumulative = Vec::with_capacity(self.cumulative.len());
        let mut floor = 0;
        for (now, before) in self.cumulative.iter().zip(&earlier.cumulative) {
            // Each bucket's own count only grows, so differences of
            // cumulative counts stay ordered; the clamp only guards scrapes
            // taken while the agent was mid-update.
            let d = now.checked_sub(*before)?.clamp(floor, count);
            floor = d;
            cumulative.push(d);
        }
        Some(HistogramCounts {
            bounds: self.bounds.clone(),
            cumulative,
            count,
        })
    }

    /// The estimated requests at or under `threshold` seconds (see the
    /// module doc); between 0 and `count`.
    pub fn at_or_below(&self, threshold: f64) -> f64 {
        let Some(i) = self.bounds.iter().position(|&b| b >= threshold) else {
            return self.cumulative.last().map_or(0.0, |&c| c as f64);
        };
        let upper = self.bounds[i];
        let c_upper = self.cumulative[i] as f64;
        if upper == threshold {
            return c_upper;
        }
        let (lower, c_lower) = match i {
            0 if upper > 0.0 => (0.0, 0.0),
            0 => return 0.0,
            _ => (self.bounds[i - 1], self.cumulative[i - 1] as f64),
        };
        if threshold <= lower {
            return c_lower;
        }
        c_lower + (c_upper - c_lower) * (threshold - lower) / (upper - lower)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(bounds: &[f64], cumulative: &[u64], count: u64) -> HistogramCounts {
        HistogramCounts::new(bounds.to_vec(), cumulative.to_vec(), count).unwrap()
    }

    fn check(hist: &HistogramCounts, threshold: f64, want: f64) {
        let got = hist.at_or_below(threshold);
        assert!(
            (got - want).abs() < 1e-9,
            "threshold {threshold}: got {got}, want {want}"
        );
    }

    #[test]
    fn interpolates_inside_the_bucket_holding_the_threshold() {
        // Buckets: (0, 0.5] 10, (0.5, 1] 30, (1, 2.5] 30, (2.5, +Inf) 30.
        let hist = h(&[0.5, 1.0, 2.5], &[10, 40, 70], 100);
        check(&hist, 0.5, 10.0); // on a bound: the whole bucket
        check(&hist, 1.0, 40.0);
        check(&hist, 2.5, 70.0);
        check(&hist, 0.25, 5.0); // half of (0, 0.5]
        check(&hist, 0.75, 25.0); // 10 + half of 30
        check(&hist, 2.0, 60.0); // 40 + 30 × 1/1.5
        check(&hist, 0.0, 0.0);
        // Past the last bound: the +Inf bucket is never vouched for.
        check(&hist, 3.0, 70.0);
        check(&hist, 1e9, 70.0);
        // The reference agent's buckets, 2 s threshold: inside (1, 2.5].
        let agent = h(
            &[
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                60.0,
            ],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 90, 99, 100, 100, 100, 100],
            100,
        );
        check(&agent, 2.0, 96.0); // 90 + 9 × (2 − 1) / 1.5
        check(&agent, 0.2, 0.0);
    }

    #[test]
    fn a_first_bound_at_or_below_zero_has_no_width_to_spread_over() {
        let hist = h(&[0.0, 1.0], &[4, 10], 10);
        check(&hist, 0.0, 4.0);
        check(&hist, 0.5, 7.0); // (0, 1]: 4 + 6 × 0.5
        let negative = h(&[-1.0, 1.0], &[2, 10], 10);
        check(&negative, -2.0, 0.0);
        check(&negative, 0.0, 6.0); // (−1, 1]: 2 + 8 × 0.5
        let empty = h(&[], &[], 5);
        check(&empty, 1.0, 0.0);
    }

    #[test]
    fn refuses_shapes_no_histogram_has() {
        let table: [(&[f64], &[u64], u64, HistogramError); 5] = [
            (
                &[1.0],
                &[],
                0,
                HistogramError::Lengths {
                    bounds: 1,
                    counts: 0,
                },
            ),
            (&[1.0, 1.0], &[0, 0], 0, HistogramError::Bounds),
            (&[1.0, f64::NAN], &[0, 0], 0, HistogramError::Bounds),
            (&[1.0, 2.0], &[3, 2], 3, HistogramError::Counts),
            (&[1.0, 2.0], &[1, 4], 3, HistogramError::Counts),
        ];
        for (bounds, cumulative, count, want) in table {
            assert_eq!(
                HistogramCounts::new(bounds.to_vec(), cumulative.to_vec(), count),
                Err(want)
            );
        }
    }

    #[test]
    fn differences_are_per_bucket_and_resets_are_refused() {
        let before = h(&[0.5, 1.0], &[10, 40], 50);
        let after = h(&[0.5, 1.0], &[12, 45], 58);
        assert_eq!(after.since(&before), Some(h(&[0.5, 1.0], &[2, 5], 8)));
        // A bucket that went down: the agent restarted.
        let reset = h(&[0.5, 1.0], &[1, 45], 58);
        assert_eq!(reset.since(&before), None);
        let fewer = h(&[0.5, 1.0], &[10, 40], 49);
        assert_eq!(fewer.since(&before), None);
        // Other buckets: not the same histogram.
        let other = h(&[0.5, 2.0], &[12, 45], 58);
        assert_eq!(other.since(&before), None);
        // Torn scrape: a lower bucket grew more than a higher one.
        let torn = h(&[0.5, 1.0], &[15, 44], 58);
        assert_eq!(torn.since(&before), Some(h(&[0.5, 1.0], &[5, 5], 8)));
    }
}
