//! The SLO history as it is written to disk between daemon runs.
//!
//! Only non-empty buckets are written, with their bucket index, so an idle
//! group costs a few bytes. The last scrape of each replica is not kept: after
//! a restart the first scrape is a baseline again, so the requests served
//! while the daemon was down count as no data rather than as one burst at
//! the moment it came back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::window::{COARSE_MAX_LEN, FINE, MEDIUM, Ring, Rings, Shape};
use super::{Counts, GroupSeries, Series, Sli, SloEngine};

/// The state layout this build writes and reads.
pub const STATE_VERSION: u32 = 1;

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
    good_total: u64,
    bad_total: u64,
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
    /// `(bucket index, good, bad)`, oldest first, empty buckets left out.
    buckets: Vec<(u64, u32, u32)>,
}

/// Why a persisted state cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StateError {
    #[error(
        "SLO state version {found} is not readable by this build (it reads version {STATE_VERSION})"
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
        RingState {
            resolution_ms: shape.resolution_ms,
            len: shape.len,
            head: ring.head(),
            buckets: ring.buckets(),
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
        Ring::from_buckets(shape, self.head, &self.buckets).ok_or("buckets outside their ring")
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
        if found != STATE_VERSION {
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
                            good_total: s.totals.good,
                            bad_total: s.totals.bad,
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

    /// An engine holding a persisted history. It measures nothing until
    /// [`SloEngine::configure`] says which groups and SLIs to keep.
    pub fn restore(state: SloState) -> Result<SloEngine, StateError> {
        if state.version != STATE_VERSION {
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
                    totals: Counts {
                        good: s.good_total,
                        bad: s.bad_total,
                    },
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
