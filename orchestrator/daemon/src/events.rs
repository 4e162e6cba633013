//! The daemon's event log: numbered events kept in a ring for late readers
//! (`events`), and broadcast to followers (`events -f`, `group start --wait`).
//!
//! The last [`KEEP_ON_DISK`] events (at most [`DISK_BUDGET`] bytes of
//! them) are kept in the state directory by the owner's journal, so a
//! restarted daemon shows them and numbers on from the last one: a
//! sequence number never goes back.

use std::collections::VecDeque;

use orch_api::{Event, EventKind};
use tokio::sync::broadcast;

pub const KEEP: usize = 10_000;

/// How many of the latest events outlive a daemon restart.
pub const KEEP_ON_DISK: usize = 1000;

/// The most bytes (as JSON) the kept events take; older ones go first.
/// Below `store::EVENTS_MAX_BYTES`, the bound on reading them back.
pub const DISK_BUDGET: usize = 2 * 1024 * 1024;

/// How far numbering jumps after a daemon that did not write its last
/// events (killed): far more than a daemon says between two writes (one
/// second), so no number is given twice.
pub const UNCLEAN_GAP: u64 = 100_000;

/// The events kept across a daemon restart, and the number the next
/// daemon starts from.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Kept {
    /// The first number the next daemon may give: right after the last
    /// event when written at shutdown, [`UNCLEAN_GAP`] further otherwise.
    pub next_seq: u64,
    pub events: Vec<Event>,
}

/// The latest events within [`KEEP_ON_DISK`] and [`DISK_BUDGET`], in
/// increasing sequence order (anything out of order is dropped).
pub fn bounded(mut events: Vec<Event>) -> Vec<Event> {
    let mut last = 0;
    events.retain(|e| {
        let ok = e.seq > last;
        if ok {
            last = e.seq;
        }
        ok
    });
    let skip = events.len().saturating_sub(KEEP_ON_DISK);
    events.drain(..skip);
    let mut bytes = 0usize;
    let mut keep = 0;
    for e in events.iter().rev() {
        bytes += serde_json::to_vec(e)
            .map(|b| b.len() + 1)
            .unwrap_or(usize::MAX / 2);
        if bytes > DISK_BUDGET {
            break;
        }
        keep += 1;
    }
    let skip = events.len() - keep;
    events.drain(..skip);
    events
}

#[derive(Debug)]
pub struct EventLog {
    host: String,
    next_seq: u64,
    ring: VecDeque<Event>,
    tx: broadcast::Sender<Event>,
}

impl EventLog {
    /// The log of `host`'s events (every event carries its host).
    pub fn new(host: impl Into<String>) -> Self {
        let (tx, _) = broadcast::channel(4096);
        EventLog {
            host: host.into(),
            next_seq: 1,
            ring: VecDeque::with_capacity(1024),
            tx,
        }
    }

    /// A log that goes on from `kept` (what an earlier daemon kept, oldest
    /// first): they are shown again, and numbering continues after them.
    pub fn resume(host: impl Into<String>, kept: Kept) -> Self {
        let mut log = EventLog::new(host);
        let events = bounded(kept.events);
        log.next_seq = kept.next_seq.max(events.last().map_or(1, |e| e.seq + 1));
        log.ring.extend(events);
        log
    }

    /// The latest events, as many as are kept on disk, oldest first; at
    /// `shutdown` no more will come, else numbering after a kill must
    /// skip what may have been said since.
    pub fn latest(&self, shutdown: bool) -> Kept {
        let skip = self.ring.len().saturating_sub(KEEP_ON_DISK);
        Kept {
            next_seq: if shutdown {
                self.next_seq
            } else {
                self.next_seq.saturating_add(UNCLEAN_GAP)
            },
            events: self.ring.iter().skip(skip).cloned().collect(),
        }
    }

    /// The sequence number the next event will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Numbers, keeps and broadcasts an event; returns it as numbered.
    pub fn push(&mut self, kind: EventKind, time_ms: u64) -> Event {
        let event = Event {
            host: self.host.clone(),
            seq: self.next_seq,
            time_ms,
            kind,
        };
        self.next_seq += 1;
        if self.ring.len() == KEEP {
            self.ring.pop_front();
        }
        self.ring.push_back(event.clone());
        // No follower is not an error.
        let _ = self.tx.send(event.clone());
        event
    }

    /// Events with `seq >= since`, and a receiver for the ones after them.
    /// Taken together under the owner's hand, so nothing falls in between.
    pub fn subscribe(&self, since: u64) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let backlog = self
            .ring
            .iter()
            .filter(|e| e.seq >= since)
            .cloned()
            .collect();
        (backlog, self.tx.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backlog_and_live_events_meet_without_a_gap() {
        let mut log = EventLog::new("h");
        log.push(EventKind::DockerUp, 1);
        log.push(EventKind::DockerDown, 2);
        let (backlog, mut rx) = log.subscribe(2);
        assert_eq!(backlog.iter().map(|e| e.seq).collect::<Vec<_>>(), [2]);
        log.push(EventKind::DockerUp, 3);
        assert_eq!(rx.try_recv().unwrap().seq, 3);
    }

    #[test]
    fn a_resumed_log_shows_what_was_kept_and_numbers_on() {
        let mut log = EventLog::new("h");
        for t in 0..1500 {
            log.push(EventKind::DockerUp, t);
        }
        let kept = log.latest(true);
        assert_eq!(kept.events.len(), KEEP_ON_DISK);
        assert_eq!(kept.events[0].seq, 501);
        let mut again = EventLog::resume("h", kept);
        let (backlog, _) = again.subscribe(0);
        assert_eq!(backlog.len(), KEEP_ON_DISK);
        assert_eq!(again.push(EventKind::DockerDown, 9).seq, 1501);
    }

    #[test]
    fn after_a_kill_numbering_skips_what_may_not_have_been_kept() {
        let mut log = EventLog::new("h");
        log.push(EventKind::DockerUp, 1);
        // Written while running; then more events, then a kill -9.
        let kept = log.latest(false);
        log.push(EventKind::DockerDown, 2);
        let mut again = EventLog::resume("h", kept);
        assert_eq!(again.push(EventKind::DockerUp, 3).seq, 2 + UNCLEAN_GAP);
        // A file that says less than its events (damaged) numbers on after them.
        let mut odd = EventLog::resume(
            "h",
            Kept {
                next_seq: 0,
                events: log.latest(true).events,
            },
        );
        assert_eq!(odd.push(EventKind::DockerUp, 4).seq, 3);
    }

    #[test]
    fn kept_events_stay_within_their_count_and_bytes() {
        let event = |seq: u64, detail: usize| Event {
            host: "h".into(),
            seq,
            time_ms: seq,
            kind: EventKind::StateWriteFailed {
                detail: "x".repeat(detail),
            },
        };
        // Past the count: the oldest go.
        let many: Vec<Event> = (1..=KEEP_ON_DISK as u64 + 7).map(|s| event(s, 1)).collect();
        let kept = bounded(many);
        assert_eq!(kept.len(), KEEP_ON_DISK);
        assert_eq!(kept[0].seq, 8);
        // Past the bytes: the oldest go, the newest stays.
        let big: Vec<Event> = (1..=5).map(|s| event(s, DISK_BUDGET / 3)).collect();
        let kept = bounded(big);
        assert_eq!(kept.iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 5]);
        // Out of order (a damaged file): never numbered backwards.
        let kept = bounded(vec![event(5, 1), event(3, 1), event(6, 1)]);
        assert_eq!(kept.iter().map(|e| e.seq).collect::<Vec<_>>(), [5, 6]);
    }
}
