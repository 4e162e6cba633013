//! The time buckets behind every window: three rings of event counts at
//! three resolutions, so that memory is fixed whatever the uptime.
//!
//! | ring   | bucket | buckets | spans | serves |
//! |--------|--------|---------|-------|--------|
//! | fine   | 10 s   | 360     | 1 h   | 5m, 30m, 1h (and an SLO window up to 1h) |
//! | medium | 5 min  | 864     | 3 d   | 6h, 1d, 3d (and an SLO window up to 3d) |
//! | coarse | 1 h or more | at most 720 | the SLO window | an SLO window over 3d |
//!
//! The coarse bucket is one hour for SLO windows up to 30 days and grows by
//! whole hours beyond (`ceil(window / 720)`), so a window of any length costs
//! at most 720 buckets. A bucket holds two `u32` counts (good, bad): 8 bytes.
//! One series (one SLI of one group) therefore holds at most
//! (360 + 864 + 720) × 8 = 15 552 bytes of buckets.
//!
//! Buckets are aligned on the Unix epoch: bucket `i` of a ring with
//! resolution `r` holds the events of `[i·r, (i+1)·r)`. A window of `n`
//! buckets read at `now` is the bucket holding `now` plus the `n − 1`
//! before it, so it covers between `(n − 1)·r` and `n·r` of the past:
//! an event is in the window exactly when its bucket is one of those `n`.
//! The error in a window's length is thus under one bucket: 10 s in 5m
//! (3.3%), 30m and 1h; 5 min in 6h (1.4%), 1d and 3d; one coarse bucket in
//! the SLO window (1 h in 30d: 0.14%). A window that is not a whole number
//! of buckets is rounded up to one.
//!
//! Counts saturate at `u32::MAX` per bucket instead of wrapping; reaching it
//! takes over 1.19 million events per second for an hour in one series.

use super::UnixMillis;

/// The 10-second ring: the three short windows.
pub(crate) const FINE: Shape = Shape {
    resolution_ms: 10_000,
    len: 360,
};

/// The 5-minute ring: the three day-scale windows.
pub(crate) const MEDIUM: Shape = Shape {
    resolution_ms: 300_000,
    len: 864,
};

const HOUR_MS: u64 = 3_600_000;

/// The most buckets the coarse ring ever has, whatever the SLO window.
pub(crate) const COARSE_MAX_LEN: u64 = 720;

/// Good and bad events counted over some span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub good: u64,
    pub bad: u64,
}

impl Counts {
    pub fn total(self) -> u64 {
        self.good.saturating_add(self.bad)
    }
}

/// A ring's resolution and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shape {
    pub resolution_ms: u64,
    pub len: u64,
}

impl Shape {
    pub fn span_ms(self) -> u64 {
        self.resolution_ms * self.len
    }

    /// The coarse ring for an SLO window longer than the medium ring.
    pub fn coarse(window_ms: u64) -> Shape {
        let per_bucket = window_ms.div_ceil(COARSE_MAX_LEN);
        let resolution_ms = per_bucket.div_ceil(HOUR_MS).max(1) * HOUR_MS;
        Shape {
            resolution_ms,
            len: window_ms.div_ceil(resolution_ms).clamp(1, COARSE_MAX_LEN),
        }
    }
}

/// Event counts in epoch-aligned buckets; the newest `len` buckets are kept.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ring {
    shape: Shape,
    /// `[good, bad]`; bucket `i` lives in slot `i % len`.
    slots: Vec<[u32; 2]>,
    /// The newest bucket index written; `None` while empty.
    head: Option<u64>,
}

fn saturating(count: u32, add: u64) -> u32 {
    count.saturating_add(u32::try_from(add).unwrap_or(u32::MAX))
}

impl Ring {
    pub fn new(shape: Shape) -> Ring {
        Ring {
            shape,
            slots: vec![[0, 0]; shape.len as usize],
            head: None,
        }
    }

    pub fn shape(&self) -> Shape {
        self.shape
    }

    pub fn head(&self) -> Option<u64> {
        self.head
    }

    fn slot(&self, index: u64) -> usize {
        (index % self.shape.len) as usize
    }

    /// The oldest bucket index still held, given the newest.
    fn oldest(&self, head: u64) -> u64 {
        (head + 1).saturating_sub(self.shape.len)
    }

    /// Adds events at `at`. Events older than the ring holds are dropped
    /// (returns false). Moving forward clears the buckets skipped over, so
    /// a stretch with no record reads as no data, never as stale data.
    pub fn add(&mut self, at: UnixMillis, good: u64, bad: u64) -> bool {
        let index = at / self.shape.resolution_ms;
        match self.head {
            None => self.head = Some(index),
            Some(head) if index > head => {
                // INVARIANT: at most `len` slots are cleared, however long
                // the jump: the cost of a record never depends on a gap.
                if index - head >= self.shape.len {
                    self.slots.iter_mut().for_each(|s| *s = [0, 0]);
                } else {
                    for i in head + 1..=index {
                        let slot = self.slot(i);
                        self.slots[slot] = [0, 0];
                    }
                }
                self.head = Some(index);
            }
            Some(head) if index < self.oldest(head) => return false,
            Some(_) => {}
        }
        let slot = self.slot(index);
        let s = &mut self.slots[slot];
        s[0] = saturating(s[0], good);
        s[1] = saturating(s[1], bad);
        true
    }

    /// The events of the `buckets` buckets ending with the one holding `now`.
    pub fn sum(&self, now: UnixMillis, buckets: u64) -> Counts {
        let Some(head) = self.head else {
            return Counts::default();
        };
        let last = now / self.shape.resolution_ms;
        let first = (last + 1).saturating_sub(buckets).max(self.oldest(head));
        let last = last.min(head);
        let mut out = Counts::default();
        if first > last {
            return out;
        }
        for index in first..=last {
            let [good, bad] = self.slots[self.slot(index)];
            out.good += u64::from(good);
            out.bad += u64::from(bad);
        }
        out
    }

    /// The index of the oldest non-empty bucket among the `buckets`
    /// buckets ending with the one holding `now`.
    pub fn first_nonempty(&self, now: UnixMillis, buckets: u64) -> Option<u64> {
        let head = self.head?;
        let last = now / self.shape.resolution_ms;
        let first = (last + 1).saturating_sub(buckets).max(self.oldest(head));
        (first..=last.min(head)).find(|&index| self.slots[self.slot(index)] != [0, 0])
    }

    /// The non-empty buckets, oldest first, as `(index, good, bad)`.
    pub fn buckets(&self) -> Vec<(u64, u32, u32)> {
        let Some(head) = self.head else {
            return Vec::new();
        };
        (self.oldest(head)..=head)
            .filter_map(|index| {
                let [good, bad] = self.slots[self.slot(index)];
                (good != 0 || bad != 0).then_some((index, good, bad))
            })
            .collect()
    }

    /// Rebuilds a ring from its non-empty buckets; `None` if a bucket lies
    /// outside what a ring with this head can hold, or appears twice.
    pub fn from_buckets(
        shape: Shape,
        head: Option<u64>,
        buckets: &[(u64, u32, u32)],
    ) -> Option<Ring> {
        let mut ring = Ring::new(shape);
        ring.head = head;
        let Some(head) = head else {
            return buckets.is_empty().then_some(ring);
        };
        // INVARIANT: a head no time could reach is refused, so that
        // `head + 1` and `head × resolution` never overflow.
        if head > u64::MAX / shape.resolution_ms {
            return None;
        }
        let oldest = ring.oldest(head);
        let mut previous = None;
        for &(index, good, bad) in buckets {
            if index < oldest || index > head || previous.is_some_and(|p| index <= p) {
                return None;
            }
            previous = Some(index);
            let slot = ring.slot(index);
            ring.slots[slot] = [good, bad];
        }
        Some(ring)
    }

    /// A ring of another shape holding this one's events: each bucket goes
    /// to the new bucket holding its start. Exact when the new resolution is
    /// a multiple of the old one (1 h from 5 min, 2 h from 1 h); otherwise a
    /// bucket's events move to the start of their old span.
    pub fn reshaped(&self, shape: Shape) -> Ring {
        let mut out = Ring::new(shape);
        let Some(head) = self.head else {
            return out;
        };
        // Writing the newest first fixes the new head, so older buckets are
        // then kept or dropped by the new length alone.
        let newest_start = head * self.shape.resolution_ms;
        out.head = Some(newest_start / shape.resolution_ms);
        for (index, good, bad) in self.buckets() {
            out.add(
                index * self.shape.resolution_ms,
                u64::from(good),
                u64::from(bad),
            );
        }
        out
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.slots.capacity() * size_of::<[u32; 2]>()
    }
}

/// Which ring serves a window, and with how many buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tier {
    Fine,
    Medium,
    Coarse,
}

/// The three rings of one series.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rings {
    pub fine: Ring,
    pub medium: Ring,
    /// Present only when the SLO window is longer than the medium ring.
    pub coarse: Option<Ring>,
}

impl Rings {
    pub fn new(slo_window_ms: u64) -> Rings {
        Rings {
            fine: Ring::new(FINE),
            medium: Ring::new(MEDIUM),
            coarse: needs_coarse(slo_window_ms).then(|| Ring::new(Shape::coarse(slo_window_ms))),
        }
    }

    pub fn add(&mut self, at: UnixMillis, good: u64, bad: u64) {
        self.fine.add(at, good, bad);
        self.medium.add(at, good, bad);
        if let Some(coarse) = &mut self.coarse {
            coarse.add(at, good, bad);
        }
    }

    /// The ring and bucket count that serve a window: the finest ring that
    /// spans it. A window longer than every ring is cut to the longest.
    pub fn plan(&self, window_ms: u64) -> (Tier, Shape, u64) {
        let (tier, shape) = if window_ms <= FINE.span_ms() {
            (Tier::Fine, FINE)
        } else if window_ms <= MEDIUM.span_ms() || self.coarse.is_none() {
            (Tier::Medium, MEDIUM)
        } else {
            (
                Tier::Coarse,
                self.coarse.as_ref().map_or(MEDIUM, Ring::shape),
            )
        };
        let buckets = window_ms.div_ceil(shape.resolution_ms).clamp(1, shape.len);
        (tier, shape, buckets)
    }

    fn ring(&self, tier: Tier) -> &Ring {
        match (tier, &self.coarse) {
            (Tier::Fine, _) => &self.fine,
            (Tier::Medium, _) | (Tier::Coarse, None) => &self.medium,
            (Tier::Coarse, Some(coarse)) => coarse,
        }
    }

    pub fn sum(&self, now: UnixMillis, window_ms: u64) -> Counts {
        let (tier, _, buckets) = self.plan(window_ms);
        self.ring(tier).sum(now, buckets)
    }

    /// The start of the oldest bucket in the window that holds events, to
    /// the resolution of the finest ring that still holds that bucket: the
    /// ring serving the window finds it, a finer ring (if it spans that
    /// far back) places it closer.
    pub fn first_bucket_start(&self, now: UnixMillis, window_ms: u64) -> Option<UnixMillis> {
        let (tier, shape, buckets) = self.plan(window_ms);
        let index = self.ring(tier).first_nonempty(now, buckets)?;
        let mut start = index * shape.resolution_ms;
        let mut resolution = shape.resolution_ms;
        for finer in [&self.medium, &self.fine] {
            let r = finer.shape().resolution_ms;
            if r >= resolution {
                continue;
            }
            // Only a finer ring whose oldest bucket starts no later than
            // the coarse bucket does can tell where in it the events began.
            let Some(head) = finer.head() else { continue };
            let oldest_start = (head + 1).saturating_sub(finer.shape().len) * r;
            if oldest_start > start {
                continue;
            }
            let n = (now / r + 1).saturating_sub(start / r);
            if let Some(i) = finer.first_nonempty(now, n)
                && i * r < start.saturating_add(resolution)
            {
                start = start.max(i * r);
                resolution = r;
            }
        }
        Some(start)
    }

    /// Fits the coarse ring to a new SLO window, keeping every event the new
    /// window can still see. A new coarse ring is filled from the old coarse
    /// ring if there was one (it saw every event the medium ring saw, and
    /// older ones), else from the medium ring (exact: hours are whole
    /// multiples of 5 minutes).
    pub fn set_slo_window(&mut self, slo_window_ms: u64) {
        if !needs_coarse(slo_window_ms) {
            self.coarse = None;
            return;
        }
        let shape = Shape::coarse(slo_window_ms);
        let source = self.coarse.as_ref().unwrap_or(&self.medium);
        if source.shape() != shape {
            self.coarse = Some(source.reshaped(shape));
        }
    }

    pub fn heap_bytes(&self) -> usize {
        self.fine.heap_bytes()
            + self.medium.heap_bytes()
            + self.coarse.as_ref().map_or(0, Ring::heap_bytes)
    }
}

fn needs_coarse(slo_window_ms: u64) -> bool {
    slo_window_ms > MEDIUM.span_ms()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DAY: u64 = 86_400_000;
    const H: u64 = 3_600_000;

    #[test]
    fn coarse_shape_keeps_at_most_720_buckets() {
        // (window, expected resolution, expected buckets)
        let table = [
            (4 * DAY, H, 96),
            (7 * DAY, H, 168),
            (30 * DAY, H, 720),
            (31 * DAY, 2 * H, 372),
            (90 * DAY, 3 * H, 720),
            (365 * DAY, 13 * H, 674),
        ];
        for (window, resolution_ms, len) in table {
            assert_eq!(
                Shape::coarse(window),
                Shape { resolution_ms, len },
                "window {}d",
                window / DAY
            );
        }
    }

    #[test]
    fn plans_pick_the_finest_ring_that_spans_the_window() {
        let rings = Rings::new(30 * DAY);
        let m = 60_000;
        // (window, tier, resolution, buckets)
        let table = [
            (5 * m, Tier::Fine, 10_000, 30),
            (30 * m, Tier::Fine, 10_000, 180),
            (H, Tier::Fine, 10_000, 360),
            (H + 1, Tier::Medium, 300_000, 13),
            (6 * H, Tier::Medium, 300_000, 72),
            (DAY, Tier::Medium, 300_000, 288),
            (3 * DAY, Tier::Medium, 300_000, 864),
            (30 * DAY, Tier::Coarse, H, 720),
            (15_000, Tier::Fine, 10_000, 2),
            (1, Tier::Fine, 10_000, 1),
        ];
        for (window, tier, resolution, buckets) in table {
            let (t, shape, n) = rings.plan(window);
            assert_eq!(
                (t, shape.resolution_ms, n),
                (tier, resolution, buckets),
                "{window} ms"
            );
        }
        // Without a coarse ring, a long window is cut to the medium ring.
        let short = Rings::new(DAY);
        assert!(short.coarse.is_none());
        assert_eq!(short.plan(30 * DAY), (Tier::Medium, MEDIUM, 864));
    }

    #[test]
    fn a_jump_forward_clears_what_it_skips() {
        let shape = Shape {
            resolution_ms: 10,
            len: 4,
        };
        let mut ring = Ring::new(shape);
        for t in [0, 10, 20, 30] {
            assert!(ring.add(t, 1, 0));
        }
        assert_eq!(ring.sum(39, 4), Counts { good: 4, bad: 0 });
        // Two buckets later: buckets 0 and 1 are gone, 4 and 5 are empty.
        assert!(ring.add(50, 0, 1));
        assert_eq!(ring.sum(59, 4), Counts { good: 2, bad: 1 });
        assert_eq!(ring.buckets(), vec![(2, 1, 0), (3, 1, 0), (5, 0, 1)]);
        // Older than the ring: dropped.
        assert!(!ring.add(19, 5, 5));
        // Late but held: counted where it belongs.
        assert!(ring.add(20, 0, 7));
        assert_eq!(ring.sum(29, 1), Counts { good: 1, bad: 7 });
        // A jump longer than the ring leaves only the new bucket.
        assert!(ring.add(10_000, 1, 0));
        assert_eq!(ring.buckets(), vec![(1000, 1, 0)]);
    }

    #[test]
    fn counts_saturate_instead_of_wrapping() {
        let mut ring = Ring::new(FINE);
        ring.add(0, u64::MAX, u64::from(u32::MAX) - 1);
        ring.add(0, 1, 5);
        assert_eq!(
            ring.sum(0, 1),
            Counts {
                good: u64::from(u32::MAX),
                bad: u64::from(u32::MAX)
            }
        );
    }

    #[test]
    fn from_buckets_refuses_what_no_ring_could_hold() {
        let shape = Shape {
            resolution_ms: 10,
            len: 4,
        };
        type Row<'a> = (Option<u64>, &'a [(u64, u32, u32)], bool);
        let table: [Row; 6] = [
            (Some(9), &[(6, 1, 0), (9, 0, 1)], true),
            (Some(9), &[(5, 1, 0)], false),
            (Some(9), &[(10, 1, 0)], false),
            (Some(9), &[(7, 1, 0), (7, 1, 0)], false),
            (Some(9), &[(8, 1, 0), (7, 1, 0)], false),
            (None, &[(1, 1, 0)], false),
        ];
        for (head, buckets, ok) in table {
            let ring = Ring::from_buckets(shape, head, buckets);
            assert_eq!(ring.is_some(), ok, "{head:?} {buckets:?}");
            if let Some(ring) = ring {
                assert_eq!(ring.buckets(), buckets);
            }
        }
    }

    #[test]
    fn reshaping_to_a_multiple_is_exact() {
        let mut medium = Ring::new(MEDIUM);
        // 12 five-minute buckets of one hour, and one of the next.
        for i in 0..13u64 {
            medium.add(10 * DAY + i * 300_000, 1, i % 2);
        }
        let coarse = medium.reshaped(Shape::coarse(30 * DAY));
        assert_eq!(
            coarse.buckets(),
            vec![(10 * 24, 12, 6), (10 * 24 + 1, 1, 0)]
        );
        // A ring cut shorter keeps the newest buckets.
        let short = coarse.reshaped(Shape {
            resolution_ms: H,
            len: 1,
        });
        assert_eq!(short.buckets(), vec![(10 * 24 + 1, 1, 0)]);
    }

    #[test]
    fn the_first_bucket_is_placed_by_the_finest_ring_that_holds_it() {
        let m = 60_000;
        let now = 50 * DAY + 12 * H;
        // (event times before now, window) -> start of the first bucket
        let table: [(&[u64], u64, Option<u64>); 6] = [
            (&[], 30 * DAY, None),
            // Within the hour: the 10 s ring places it (11:34:57 is in the
            // bucket of 11:34:50).
            (&[25 * m + 3_000], 30 * DAY, Some(now - 25 * m - 10_000)),
            // Two days back, with later events: the 10 s ring has moved on,
            // the 5 min ring places it.
            (
                &[2 * DAY + 7 * m, m],
                30 * DAY,
                Some(now - 2 * DAY - 10 * m),
            ),
            // Ten days back (12:30): only the hour ring holds it (12:00).
            (&[10 * DAY - 30 * m, m], 30 * DAY, Some(now - 10 * DAY)),
            // Outside a shorter window: the first event inside it (the
            // 10 s ring still holds it: nothing came after).
            (&[10 * DAY, 2 * H + m], DAY, Some(now - 2 * H - m)),
            // Nothing in the window.
            (&[40 * DAY], 30 * DAY, None),
        ];
        for (ages, window, want) in table {
            let mut rings = Rings::new(30 * DAY);
            let mut times: Vec<u64> = ages.iter().map(|a| now - a).collect();
            times.sort_unstable();
            for at in times {
                rings.add(at, 1, 0);
            }
            assert_eq!(
                rings.first_bucket_start(now, window),
                want,
                "{ages:?} in {window}"
            );
        }
    }

    proptest! {
        /// Against a model that keeps every event: a window holds an event
        /// exactly when its bucket is among the `n` ending at `now` and the
        /// ring still holds that bucket.
        #[test]
        fn sums_match_a_model_that_keeps_everything(
            events in proptest::collection::vec((0u64..400, 0u64..3, 0u64..3), 0..60),
            now in 0u64..450,
            buckets in 1u64..=8,
        ) {
            let shape = Shape { resolution_ms: 7, len: 8 };
            let mut ring = Ring::new(shape);
            // The model's own rule for a late event: kept while its bucket
            // is one of the 8 newest seen so far.
            let mut kept = Vec::new();
            let mut newest: Option<u64> = None;
            for &(at, good, bad) in &events {
                let index = at / 7;
                let head = newest.map_or(index, |n| n.max(index));
                newest = Some(head);
                let held = index + 8 > head;
                prop_assert_eq!(ring.add(at, good, bad), held);
                if held {
                    kept.push((index, good, bad));
                }
            }
            let mut want = Counts::default();
            if let Some(head) = newest {
                let last = (now / 7).min(head);
                let first = (now / 7 + 1).saturating_sub(buckets).max((head + 1).saturating_sub(8));
                for &(index, good, bad) in &kept {
                    if index >= first && index <= last {
                        want.good += good;
                        want.bad += bad;
                    }
                }
            }
            prop_assert_eq!(ring.sum(now, buckets), want);
            // And the ring survives its own persisted form.
            let back = Ring::from_buckets(shape, ring.head(), &ring.buckets());
            prop_assert_eq!(back.as_ref(), Some(&ring));
        }
    }
}
