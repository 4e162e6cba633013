//! The owner's fleet: this host's side of the bus (publishing its
//! snapshot and events) and what it knows of its peers ([`FleetBook`]),
//! with the live feed of each peer's events for `--host` followers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use orch_api::{Event, Fleet, HostSnapshot, HostView, PeerState, PeerStatus};
use orch_core::model::RemoteCommands;
use orch_core::supervise::{RemoteHost, Supervisor};
use orch_federation::{Bus, DropKind};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use crate::event::{PeerNews, SubscribePeer};
use crate::fleet::probes::{self, RemoteProbes};
use crate::fleet::{FleetBook, Refused, codec};
use crate::metrics::{PeerRow, StrangerRows};

/// Snapshots go out at most this often after a change (an event; changes
/// in between are coalesced)...
const SNAPSHOT_MIN_INTERVAL: Duration = Duration::from_millis(50);
/// ...and at least this often, so a peer's copy is never older than this
/// while the link is up.
const SNAPSHOT_MAX_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub(super) struct FleetPart {
    /// The bus, when this host has peers.
    bus: Option<Arc<dyn Bus>>,
    book: FleetBook,
    /// Each peer's events as they come, for followers.
    feeds: BTreeMap<String, broadcast::Sender<Event>>,
    /// Something changed since the last snapshot was published.
    dirty: bool,
    last_snapshot: Option<Instant>,
    /// `federation.remote_commands`, as the bridge checks peers' requests
    /// against it; changed by `reload`.
    remote_commands: watch::Sender<RemoteCommands>,
    /// Direct probes of down peers' agents.
    probes: RemoteProbes,
}

impl FleetPart {
    pub(super) fn new<'a>(
        bus: Option<Arc<dyn Bus>>,
        peers: impl IntoIterator<Item = &'a str> + Clone,
        remote_commands: RemoteCommands,
        probes: RemoteProbes,
    ) -> Self {
        FleetPart {
            probes,
            remote_commands: watch::channel(remote_commands).0,
            bus,
            book: FleetBook::new(peers.clone()),
            feeds: peers
                .into_iter()
                .map(|p| (p.to_string(), broadcast::channel(1024).0))
                .collect(),
            dirty: true,
            last_snapshot: None,
        }
    }

    /// When the next snapshot is due, if this host has a bus.
    pub(super) fn snapshot_due(&self) -> Option<Instant> {
        self.bus.as_ref()?;
        let Some(last) = self.last_snapshot else {
            return Some(Instant::now());
        };
        Some(if self.dirty {
            last + SNAPSHOT_MIN_INTERVAL
        } else {
            last + SNAPSHOT_MAX_INTERVAL
        })
    }

    /// Puts the next snapshot off by the shortest interval (this host's
    /// state is not known yet).
    pub(super) fn postpone_snapshot(&mut self) {
        self.dirty = true;
        self.last_snapshot = Some(Instant::now());
    }

    pub(super) fn publish_snapshot(&mut self, snapshot: &HostSnapshot) {
        let Some(bus) = &self.bus else { return };
        match codec::encode_snapshot(snapshot) {
            Ok(body) => {
                if let Err(e) = bus.publish_snapshot(body.into(), None) {
                    tracing::warn!("cannot publish this host's snapshot: {e}");
                }
            }
            Err(e) => tracing::error!("{e}"),
        }
        self.dirty = false;
        self.last_snapshot = Some(Instant::now());
    }

    /// Sends events to the peers (they keep them for `--host` waits).
    /// Events are what changes this host's state, so they (and only they)
    /// make the next snapshot due early: an input that changed nothing (a
    /// passing probe of a healthy agent, the steady state) costs no
    /// snapshot, which is built, encoded and sent, and decoded by every
    /// peer. Figures that move without an event (GPU telemetry, SLO burn
    /// rates) go out with the periodic snapshot.
    pub(super) fn publish_events(&mut self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        self.dirty = true;
        let Some(bus) = &self.bus else { return };
        let batch = match codec::encode_events(events) {
            Ok(bodies) => bodies,
            Err(e) => {
                tracing::error!("{e}");
                return;
            }
        };
        if let Err(e) = bus.publish_events(batch.into(), None) {
            tracing::warn!("cannot publish events: {e}");
        }
    }

    /// Takes a peer's news; returns the peer and what cross-host
    /// dependencies now see of it.
    pub(super) fn take(&mut self, news: PeerNews) -> (String, RemoteHost) {
        let peer = match &news {
            PeerNews::Snapshot { peer, .. }
            | PeerNews::Events { peer, .. }
            | PeerNews::State { peer, .. }
            | PeerNews::Refused { peer, .. } => peer.clone(),
        };
        let fresh = self.book.take(news, Instant::now());
        if let Some(feed) = self.feeds.get(&peer) {
            for e in fresh {
                // No follower is not an error.
                let _ = feed.send(e);
            }
        }
        let state = self.book.remote_state(&peer);
        (peer, state)
    }

    /// Probes directly the agents of down peers the supervisor asks for
    /// (`Supervisor::remote_probes`), where their snapshot published an
    /// endpoint; stops the probes it no longer asks for.
    pub(super) fn probe_remotes(&mut self, sup: &Supervisor) {
        let wanted = sup.remote_probes();
        if wanted.is_empty() && self.probes.probing().next().is_none() {
            return;
        }
        self.probes
            .set(probes::targets(&wanted, sup.config(), &self.book));
    }

    /// A peer's kept events from `since` on, and its live feed.
    pub(super) fn subscribe(&self, ask: SubscribePeer) {
        let feed = self
            .book
            .events_since(&ask.peer, ask.since)
            .zip(self.feeds.get(&ask.peer))
            .map(|(backlog, feed)| (backlog, feed.subscribe()));
        let _ = ask.reply.send(feed);
    }

    /// `peers`.
    pub(super) fn peers(&self) -> Vec<PeerStatus> {
        match &self.bus {
            Some(bus) => self.book.status(bus.peers()),
            None => Vec::new(),
        }
    }

    /// `fleet`: this host (live) first, then every peer.
    pub(super) fn fleet(&self, host: &str, snapshot: HostSnapshot) -> Fleet {
        let mut hosts = vec![HostView {
            host: host.to_string(),
            state: PeerState::Local,
            incarnation: self.bus.as_ref().map(|b| b.incarnation()),
            snapshot_age_ms: Some(0),
            snapshot: Some(snapshot),
        }];
        hosts.extend(self.book.hosts(Instant::now()));
        Fleet { hosts }
    }

    /// Every peer as this host knows it now: its state and latest
    /// snapshot (what `plan --all-hosts` plans on).
    pub(super) fn peer_views(&self) -> Vec<HostView> {
        self.book.hosts(Instant::now())
    }

    /// The peers' series of `/metrics`, and the refusals of no peer, when
    /// this host federates.
    pub(super) fn metric_rows(&self) -> Option<(Vec<PeerRow>, StrangerRows)> {
        let bus = self.bus.as_ref()?;
        let peers = bus
            .peers()
            .into_iter()
            .map(|p| {
                let book = |r| self.book.refused_for(&p.name, r);
                let refused = vec![
                    ("connection", p.refused_connections),
                    ("impostor", p.impostors() + book(Refused::Impostor)),
                    ("unexpected", p.unexpected()),
                    ("inbox_full", p.inbox_drops()),
                    ("over_budget", p.over_budget() + book(Refused::Oversized)),
                    (
                        "undecodable",
                        p.decode_errors()
                            .saturating_sub(p.dropped(DropKind::Oversized))
                            + book(Refused::Undecodable),
                    ),
                    ("busy", p.dropped(DropKind::Busy)),
                    ("command", book(Refused::Command)),
                ];
                PeerRow {
                    decode_errors: p.decode_errors() + self.book.bad_bodies(&p.name),
                    state: p.state.label(),
                    heartbeat_age_seconds: p.last_heartbeat_age.map(|d| d.as_secs_f64()),
                    messages_in: p.messages_in,
                    messages_out: p.messages_out,
                    refused,
                    peer: p.name,
                }
            })
            .collect();
        let s = bus.strangers();
        let strangers = vec![
            ("unknown_key", s.unknown_keys),
            ("without_curve", s.without_curve),
            ("evicted_handshake", s.evicted_handshakes),
            ("accept_failure", s.accept_failures),
            ("over_budget", s.over_budget),
        ];
        Some((peers, strangers))
    }

    /// Takes a new peer list (`reload`): the bus first (which changes
    /// nothing if it refuses the list), then the book and the feeds. A
    /// peer whose name, role, endpoint and keys are unchanged keeps its
    /// connection, state and counters.
    pub(super) fn reconfigure(
        &mut self,
        peers: Vec<orch_federation::PeerConfig>,
    ) -> Result<(), orch_federation::ReconfigureError> {
        let Some(bus) = &self.bus else { return Ok(()) };
        let names: Vec<String> = peers.iter().map(|p| p.name.clone()).collect();
        bus.reconfigure(peers)?;
        self.book.reconfigure(names.iter().map(String::as_str));
        self.feeds.retain(|n, _| names.contains(n));
        for n in names {
            self.feeds
                .entry(n)
                .or_insert_with(|| broadcast::channel(1024).0);
        }
        self.dirty = true;
        Ok(())
    }

    /// Whether this host has a bus to reconfigure.
    pub(super) fn federates(&self) -> bool {
        self.bus.is_some()
    }

    /// `federation.remote_commands` from now on.
    pub(super) fn set_remote_commands(&self, r: RemoteCommands) {
        self.remote_commands.send_replace(r);
    }

    /// `federation.remote_commands` as it changes.
    pub(super) fn remote_commands(&self) -> watch::Receiver<RemoteCommands> {
        self.remote_commands.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orch_api::wire::EventKind;
    use orch_federation::{BusConfig, MemNetwork, Timing};

    fn part(net: &MemNetwork) -> FleetPart {
        let (bus, _inbox) = net.join(BusConfig::new("a", 1, "", Vec::new(), Timing::default()));
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        FleetPart::new(
            Some(Arc::new(bus)),
            std::iter::empty::<&str>(),
            RemoteCommands::default(),
            RemoteProbes::new(
                Arc::new(probes::HttpRemoteProber),
                crate::event::Sender::new(tx),
            ),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn only_events_make_the_next_snapshot_due_early() {
        let net = MemNetwork::new();
        let mut p = part(&net);
        // As just after a snapshot went out.
        let sent = Instant::now();
        p.last_snapshot = Some(sent);
        p.dirty = false;
        // An input that changed nothing: the periodic snapshot is next.
        p.publish_events(&[]);
        assert_eq!(p.snapshot_due(), Some(sent + SNAPSHOT_MAX_INTERVAL));
        // A change: soon.
        p.publish_events(&[Event {
            host: "a".into(),
            seq: 1,
            time_ms: 0,
            kind: EventKind::GroupReady { group: "g".into() },
        }]);
        assert_eq!(p.snapshot_due(), Some(sent + SNAPSHOT_MIN_INTERVAL));
    }
}
