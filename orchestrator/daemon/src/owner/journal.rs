//! The owner's journal: what the supervisor decided happened, numbered
//! and stamped with the wall-clock time of the decision, in the event log (`crate::events`) and in
//! the daemon's log.
//!
//! The latest events outlive a daemon restart: they are read back from
//! the store at start (numbering goes on after them), and written at most
//! once every [`SAVE_EVERY`] while events come, and at shutdown. The
//! owner only copies the latest events (bounded by
//! `events::KEEP_ON_DISK`) into a channel; one writer task writes them,
//! off the owner's path, the newest copy only if several wait.

use std::sync::Arc;
use std::time::Duration;

use orch_core::gpu::GpuInfo;
use orch_core::supervise::SupervisorEvent;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::event::{Feed, Subscribe};
use crate::events::EventLog;
use crate::store::StateStore;

/// The most often the kept events are written.
pub(super) const SAVE_EVERY: Duration = Duration::from_secs(1);

type Latest = Option<Arc<crate::events::Kept>>;

#[derive(Debug)]
pub(super) struct Journal {
    log: EventLog,
    /// When the events not yet written are due to be.
    save_due: Option<Instant>,
    saver: Option<watch::Sender<Latest>>,
    writer: Option<JoinHandle<()>>,
}

impl Journal {
    /// The journal of `host`, going on from the events `store` kept.
    pub(super) fn new(host: &str, store: Arc<dyn StateStore>) -> Self {
        let kept = match store.load_events() {
            Ok(kept) => kept,
            Err(e) => {
                tracing::warn!("{e}; the event history starts empty");
                crate::events::Kept::default()
            }
        };
        let (saver, mut rx) = watch::channel::<Latest>(None);
        let writer = tokio::spawn(async move {
            let mut failing = false;
            while rx.changed().await.is_ok() {
                let Some(events) = rx.borrow_and_update().clone() else {
                    continue;
                };
                let store = store.clone();
                let written = tokio::task::spawn_blocking(move || store.save_events(&events)).await;
                match written {
                    Ok(Ok(())) => failing = false,
                    Ok(Err(e)) if !failing => {
                        failing = true;
                        tracing::warn!("recent events not kept: {e}");
                    }
                    _ => {}
                }
            }
        });
        Journal {
            log: EventLog::resume(host, kept),
            save_due: None,
            saver: Some(saver),
            writer: Some(writer),
        }
    }

    /// When the latest events are to be written, if any are new.
    pub(super) fn save_due(&self) -> Option<Instant> {
        self.save_due
    }

    /// Hands the latest events to the writer.
    pub(super) fn save(&mut self) {
        self.hand_over(false);
    }

    fn hand_over(&mut self, shutdown: bool) {
        self.save_due = None;
        if let Some(saver) = &self.saver {
            let _ = saver.send(Some(Arc::new(self.log.latest(shutdown))));
        }
    }

    /// Writes the latest events as the last ones (the next daemon numbers
    /// on right after them) and waits for the writer to finish.
    pub(super) async fn finish(&mut self) {
        self.hand_over(true);
        // The writer ends once it has written the last copy it was given.
        self.saver = None;
        if let Some(w) = self.writer.take() {
            let _ = w.await;
        }
    }

    fn changed(&mut self) {
        if self.save_due.is_none() {
            self.save_due = Some(Instant::now() + SAVE_EVERY);
        }
    }

    /// Numbers and keeps `events` (GPU names read from `inventory`),
    /// stamped `time` (the decision's); returns them as the API has them.
    pub(super) fn record(
        &mut self,
        events: &[SupervisorEvent],
        inventory: Option<&[GpuInfo]>,
        time: u64,
    ) -> Vec<orch_api::Event> {
        if !events.is_empty() {
            self.changed();
        }
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
    pub(super) fn note(&mut self, kind: orch_api::EventKind, time: u64) -> orch_api::Event {
        tracing::info!(target: "orchestrator::events", kind = kind.name(), "{kind}");
        self.changed();
        self.log.push(kind, time)
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
