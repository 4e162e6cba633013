//! The owner's journal: what the supervisor decided happened, numbered
//! and timed on the wall clock, in the event log (`crate::events`) and in
//! the daemon's log.

use std::sync::Arc;

use orch_core::gpu::GpuInfo;
use orch_core::supervise::SupervisorEvent;

use crate::clock::Clock;
use crate::event::{Feed, Subscribe};
use crate::events::EventLog;

#[derive(Debug)]
pub(super) struct Journal {
    log: EventLog,
    clock: Arc<dyn Clock>,
}

impl Journal {
    pub(super) fn new(host: &str, clock: Arc<dyn Clock>) -> Self {
        Journal {
            log: EventLog::new(host),
            clock,
        }
    }

    /// Numbers and keeps `events` (GPU names read from `inventory`);
    /// returns them as the API has them.
    pub(super) fn record(
        &mut self,
        events: &[SupervisorEvent],
        inventory: Option<&[GpuInfo]>,
    ) -> Vec<orch_api::Event> {
        let time = self.clock.unix_ms();
        events
            .iter()
            .map(|e| {
                let kind = orch_api::convert::event_kind(e, inventory);
                tracing::info!(target: "orchestrator::events", kind = kind.name(), "{kind}");
                self.log.push(kind, time)
            })
            .collect()
    }

    /// Numbers and keeps an event that is not the supervisor's (a peer's
    /// change of state).
    pub(super) fn note(&mut self, kind: orch_api::EventKind) -> orch_api::Event {
        tracing::info!(target: "orchestrator::events", kind = kind.name(), "{kind}");
        self.log.push(kind, self.clock.unix_ms())
    }

    /// The number the next event will get.
    pub(super) fn next_seq(&self) -> u64 {
        self.log.next_seq()
    }

    /// The events from `since` on, and a receiver for the ones after them.
    pub(super) fn subscribe(&self, ask: Subscribe) {
        let feed: Feed = self.log.subscribe(ask.since);
        let _ = ask.reply.send(feed);
    }
}
