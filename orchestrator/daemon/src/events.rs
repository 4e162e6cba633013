//! The daemon's event log: numbered events kept in a ring for late readers
//! (`events`), and broadcast to followers (`events -f`, `group start --wait`).

use std::collections::VecDeque;

use orch_api::{Event, EventKind};
use tokio::sync::broadcast;

pub const KEEP: usize = 10_000;

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
}
