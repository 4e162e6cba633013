//! The SLO history as it is written to disk between daemon runs.
//!
//! Each ring is written as the counts of its buckets from the oldest
//! non-empty one to the newest non-empty one, so an idle series costs a few
//! bytes and a busy one about five per bucket. The last scrape of each replica is not kept: after
//! a restart the first scrape is a baseline again, so the requests served
//! while the daemon was down count as no data rather than as one burst at
//! the moment it came back.
//!
//! Nor are the totals: the exported counters start from zero in every
//! process (see the module doc of [`super`]), so a snapshot older than
//! what Prometheus last scraped can never move a counter backwards. A
//! version 1 state's totals are read and dropped.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::window::{COARSE_MAX_LEN, FINE, MEDIUM, Ring, Rings, Shape};
use super::{Counts, GroupSeries, Series, Sli, SloEngine};

/// The state layout this build writes; it also reads version 1.
pub const STATE_VERSION: u32 = 2;

/// Older layouts this build still reads.
const READS: [u32; 2] = [1, STATE_VERSION];

const HOUR_MS: u64 = 3_600_000;

/// The persisted SLO history of one host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SloState {
    version: u32,
    groups: BTreeMap<String, BTreeMap<Sli, SeriesState>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeriesState {
    /// Version 1 only: the totals, no longer restored.
    #[serde(default, skip_serializing)]
    good_total: Option<u64>,
    #[serde(default, skip_serializing)]
    bad_total: Option<u64>,
    /// When the series had its first event (version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    first_event: Option<u64>,
    #[serde(default, skip_serializing_if = "is_zero")]
    latency_carry: f64,
    fine: RingState,
    medium: RingState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    coarse: Option<RingState>,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RingState {
    resolution_ms: u64,
    len: u64,
    head: Option<u64>,
    /// The bucket index of `good[0]` and `bad[0]`.
    #[serde(default)]
    first: u64,
    /// Counts of consecutive buckets from `first`, without the empty ones
    /// at either end: dense arrays of small numbers are far shorter in JSON
    /// than a list of (index, good, bad).
    #[serde(default)]
    good: Vec<u32>,
    #[serde(default)]
    bad: Vec<u32>,
}

/// Why a persisted state cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StateError {
    #[error(
        "SLO state version {found} is not readable by this build (it reads versions 1 to {STATE_VERSION})"
    )]
    Version { found: u32 },
    #[error("SLO state is not a version {STATE_VERSION} state: {reason}")]
    Format { reason: String },
    #[error("SLO state of group `{group}`, {sli}: {what}")]
    Corrupt {
        group: String,
        sli: Sli,
        what: &'static str,
    },
}

impl RingState {
    fn of(ring: &Ring) -> RingState {
        let shape = ring.shape();
        let buckets = ring.buckets();
        let first = buckets.first().map_or(0, |b| b.0);
        let span = buckets.last().map_or(0, |b| b.0 - first + 1) as usize;
        let (mut good, mut bad) = (vec![0; span], vec![0; span]);
        for (index, g, b) in buckets {
            let i = (index - first) as usize;
            good[i] = g;
            bad[i] = b;
        }
        RingState {
            resolution_ms: shape.resolution_ms,
            len: shape.len,
            head: ring.head(),
            first,
            good,
            bad,
        }
    }

    fn ring(&self, expected: Option<Shape>) -> Result<Ring, &'static str> {
        let shape = Shape {
            resolution_ms: self.resolution_ms,
            len: self.len,
        };
        let fits = match expected {
            Some(expected) => shape == expected,
            // A coarse ring: whole hours, at most 720 buckets. Its exact
            // shape follows the SLO window, which the next configure sets.
            None => {
                shape.resolution_ms >= HOUR_MS
                    && shape.resolution_ms % HOUR_MS == 0
                    && (1..=COARSE_MAX_LEN).contains(&shape.len)
            }
        };
        if !fits {
            return Err("a ring of an unknown shape");
        }
        if self.good.len() != self.bad.len() {
            return Err("good and bad counts of different lengths");
        }
        if self.first.checked_add(self.good.len() as u64).is_none() {
            return Err("buckets outside their ring");
        }
        // `first + i` cannot overflow: checked just above.
        let buckets: Vec<(u64, u32, u32)> = self
            .good
            .iter()
            .zip(&self.bad)
            .enumerate()
            .filter(|(_, (g, b))| **g != 0 || **b != 0)
            .map(|(i, (g, b))| (self.first + i as u64, *g, *b))
            .collect();
        Ring::from_buckets(shape, self.head, &buckets).ok_or("buckets outside their ring")
    }
}

impl SloState {
    /// Reads a state written by [`SloState::to_json`]; the version is
    /// checked first, so a state from another layout is named as such.
    pub fn from_json(text: &str) -> Result<SloState, StateError> {
        #[derive(Deserialize)]
        struct Version {
            version: u32,
        }
        let found = serde_json::from_str::<Version>(text)
            .map_err(|e| StateError::Format {
                reason: e.to_string(),
            })?
            .version;
        if !READS.contains(&found) {
            return Err(StateError::Version { found });
        }
        serde_json::from_str(text).map_err(|e| StateError::Format {
            reason: e.to_string(),
        })
    }

    pub fn to_json(&self) -> String {
        // Maps keyed by strings and plain numbers: serialising cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl SloEngine {
    /// The history to persist.
    pub fn snapshot(&self) -> SloState {
        let groups = self
            .groups
            .iter()
            .map(|(name, g)| {
                let series = g
                    .series
                    .iter()
                    .map(|(&sli, s)| {
                        let state = SeriesState {
                            good_total: None,
                            bad_total: None,
                            first_event: s.first_event,
                            latency_carry: s.carry,
                            fine: RingState::of(&s.rings.fine),
                            medium: RingState::of(&s.rings.medium),
                            coarse: s.rings.coarse.as_ref().map(RingState::of),
                        };
                        (sli, state)
                    })
                    .collect();
                (name.clone(), series)
            })
            .collect();
        SloState {
            version: STATE_VERSION,
            groups,
        }
    }

    /// An engine holding a persisted history, with every total at zero.
    /// It measures nothing until [`SloEngine::configure`] says which
    /// groups and SLIs to keep.
    pub fn restore(state: SloState) -> Result<SloEngine, StateError> {
        if !READS.contains(&state.version) {
            return Err(StateError::Version {
                found: state.version,
            });
        }
        let mut groups = BTreeMap::new();
        for (name, slis) in state.groups {
            let mut series = BTreeMap::new();
            for (sli, s) in slis {
                let corrupt = |what| StateError::Corrupt {
                    group: name.clone(),
                    sli,
                    what,
                };
                if !(s.latency_carry.is_finite() && (0.0..1.0).contains(&s.latency_carry)) {
                    return Err(corrupt("a latency carry outside [0, 1)"));
                }
                let rings = Rings {
                    fine: s.fine.ring(Some(FINE)).map_err(corrupt)?,
                    medium: s.medium.ring(Some(MEDIUM)).map_err(corrupt)?,
                    coarse: s
                        .coarse
                        .as_ref()
                        .map(|c| c.ring(None))
                        .transpose()
                        .map_err(corrupt)?,
                };
                let restored = Series {
                    rings,
                    // INVARIANT: exported counters restart from zero; see
                    // the module doc.
                    totals: Counts::default(),
                    first_event: s.first_event,
                    carry: s.latency_carry,
                };
                series.insert(sli, restored);
            }
            groups.insert(
                name,
                GroupSeries {
                    slo: None,
                    series,
                    replicas: BTreeMap::new(),
                },
            );
        }
        Ok(SloEngine { groups })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A state file is outside input: no number in it may panic the
        /// daemon, only be refused.
        #[test]
        fn odd_rings_are_refused_not_panicked_on(
            resolution_ms in prop_oneof![Just(10_000u64), Just(HOUR_MS), any::<u64>()],
            len in prop_oneof![Just(360u64), 0u64..800, any::<u64>()],
            head in proptest::option::of(prop_oneof![any::<u64>(), Just(u64::MAX), 0u64..1000]),
            first in prop_oneof![any::<u64>(), Just(u64::MAX - 1), 0u64..1000],
            good in proptest::collection::vec(any::<u32>(), 0..5),
            bad in proptest::collection::vec(any::<u32>(), 0..5),
        ) {
            let state = RingState { resolution_ms, len, head, first, good, bad };
            for expected in [Some(FINE), None] {
                if let Ok(ring) = state.ring(expected) {
                    // What is accepted reads back as written.
                    let again = RingState::of(&ring).ring(expected);
                    prop_assert_eq!(again.as_ref(), Ok(&ring));
                }
            }
        }
    }
}
