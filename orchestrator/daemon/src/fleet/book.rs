//! What this host knows of its peers: each one's state as the failure
//! detector sees it, its latest snapshot and when it came, its recent
//! events, and how many of its bodies were refused. Pure: news in, views
//! out, the time passed in; the owner's fleet part holds it.
//!
//! A peer's kept events are bounded twice: at most [`KEEP_EVENTS`], and at
//! most [`KEEP_BYTES`] of their encoded size. The oldest go first; a
//! follower that wants older ones asks the peer (`remote::Follower`).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use orch_api::{Event, HostSnapshot, HostView, PeerState, PeerStatus};
use orch_core::supervise::RemoteHost;
use orch_federation::PeerView;
use tokio::time::Instant;

use crate::event::PeerNews;

/// How many of a peer's events are kept for late followers.
pub const KEEP_EVENTS: usize = 5_000;
/// How many bytes (encoded) of a peer's events are kept: at the size
/// limit of one event (`codec::MAX_EVENT_BYTES`, 64 KiB) that is 64
/// events; at a typical few hundred bytes the count bounds first.
pub const KEEP_BYTES: usize = 4 * 1024 * 1024;

pub use crate::event::Refused;

impl Refused {
    /// Why a codec refused a body.
    pub fn of(e: &super::codec::CodecError) -> Refused {
        use super::codec::CodecError;
        match e {
            CodecError::NotItsOwn { .. } => Refused::Impostor,
            CodecError::TooLarge { .. }
            | CodecError::TooManyProbes { .. }
            | CodecError::TooManyGpuProcesses { .. }
            | CodecError::ProbePathTooLong { .. } => Refused::Oversized,
            CodecError::Syntax { .. }
            | CodecError::Encode { .. }
            | CodecError::ProbePathInvalid { .. } => Refused::Undecodable,
        }
    }
}

/// One peer as this host knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerRecord {
    pub state: PeerState,
    pub incarnation: Option<u64>,
    /// The latest snapshot and when it arrived.
    pub snapshot: Option<(HostSnapshot, Instant)>,
    /// Recent events with their encoded sizes, oldest first.
    events: VecDeque<(Event, usize)>,
    /// The sum of the sizes in `events`.
    bytes: usize,
    /// Bodies refused from this peer (`codec`, `trust`), in all.
    pub refused: u64,
    /// The same, by reason.
    pub refused_by: BTreeMap<Refused, u64>,
}

impl PeerRecord {
    fn new() -> Self {
        PeerRecord {
            state: PeerState::Unknown,
            incarnation: None,
            snapshot: None,
            events: VecDeque::new(),
            bytes: 0,
            refused: 0,
            refused_by: BTreeMap::new(),
        }
    }

    /// A restarted peer (a new incarnation) numbers its events from 1 again.
    fn incarnation_seen(&mut self, incarnation: u64) {
        if self.incarnation.is_some_and(|i| i != incarnation) {
            self.events.clear();
            self.bytes = 0;
        }
        self.incarnation = Some(incarnation);
    }

    fn keep(&mut self, event: Event, size: usize) {
        self.events.push_back((event, size));
        self.bytes += size;
        // INVARIANT: a peer's history stays within both bounds.
        while self.events.len() > KEEP_EVENTS || self.bytes > KEEP_BYTES {
            match self.events.pop_front() {
                Some((_, n)) => self.bytes -= n,
                None => break,
            }
        }
    }

    /// The encoded size of the kept events.
    pub fn kept_bytes(&self) -> usize {
        self.bytes
    }
}

/// Every configured peer, by name.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct FleetBook {
    peers: BTreeMap<String, PeerRecord>,
}

impl FleetBook {
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        FleetBook {
            peers: names
                .into_iter()
                .map(|n| (n.to_string(), PeerRecord::new()))
                .collect(),
        }
    }

    /// Takes a new peer list: new peers start unknown, peers no longer
    /// listed are forgotten, the others keep what is known of them.
    pub fn reconfigure<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) {
        let names: std::collections::BTreeSet<&str> = names.into_iter().collect();
        self.peers.retain(|n, _| names.contains(n.as_str()));
        for n in names {
            self.peers
                .entry(n.to_string())
                .or_insert_with(PeerRecord::new);
        }
    }

    pub fn get(&self, name: &str) -> Option<&PeerRecord> {
        self.peers.get(name)
    }

    /// Takes news from the bus, arrived at `now`; returns the events that
    /// are new, for live followers. News of an unknown peer is ignored.
    pub fn take(&mut self, news: PeerNews, now: Instant) -> Vec<Event> {
        let mut fresh = Vec::new();
        match news {
            PeerNews::Snapshot {
                peer,
                incarnation,
                snapshot,
            } => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.incarnation_seen(incarnation);
                    p.snapshot = Some((*snapshot, now));
                }
            }
            PeerNews::Events { peer, events } => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    for (e, size) in events {
                        fresh.push(e.clone());
                        p.keep(e, size);
                    }
                }
            }
            PeerNews::State {
                peer,
                state,
                incarnation,
            } => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.incarnation_seen(incarnation);
                    p.state = state;
                }
            }
            PeerNews::Refused {
                peer,
                reason,
                bodies,
            } => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.refused += bodies;
                    *p.refused_by.entry(reason).or_default() += bodies;
                }
            }
        }
        fresh
    }

    /// A peer's kept events from `since` on; `None` when it is no peer.
    pub fn events_since(&self, peer: &str, since: u64) -> Option<Vec<Event>> {
        let p = self.peers.get(peer)?;
        Some(
            p.events
                .iter()
                .filter(|(e, _)| e.seq >= since)
                .map(|(e, _)| e.clone())
                .collect(),
        )
    }

    /// Another host as cross-host dependencies see it: down when the
    /// detector says so, else what its latest snapshot says is ready.
    pub fn remote_state(&self, peer: &str) -> RemoteHost {
        let Some(p) = self.peers.get(peer) else {
            return RemoteHost::Unknown;
        };
        match (p.state, &p.snapshot) {
            (PeerState::Down, _) => RemoteHost::Down,
            (PeerState::Alive | PeerState::Suspect, Some((s, _))) => {
                RemoteHost::Up(orch_api::convert::remote_view(s))
            }
            _ => RemoteHost::Unknown,
        }
    }

    /// Every peer as `fleet` shows it at `now` (a host that is down keeps
    /// its last known state).
    pub fn hosts(&self, now: Instant) -> Vec<HostView> {
        self.peers
            .iter()
            .map(|(name, p)| HostView {
                host: name.clone(),
                state: p.state,
                incarnation: p.incarnation,
                snapshot_age_ms: p.snapshot.as_ref().map(|(_, at)| millis(now - *at)),
                snapshot: p.snapshot.as_ref().map(|(s, _)| s.clone()),
            })
            .collect()
    }

    /// Bodies refused from `peer` by the daemon, on top of the frames the
    /// bus itself could not read.
    pub fn refused(&self, peer: &str) -> u64 {
        self.peers.get(peer).map_or(0, |p| p.refused)
    }

    /// Bodies of `peer` the daemon could not take as what they claimed
    /// to be (unreadable, another host's, too large): its decode errors,
    /// beside the requests it may not make.
    pub fn bad_bodies(&self, peer: &str) -> u64 {
        self.refused(peer)
            .saturating_sub(self.refused_for(peer, Refused::Command))
    }

    /// Bodies refused from `peer` by the daemon for `reason`.
    pub fn refused_for(&self, peer: &str, reason: Refused) -> u64 {
        self.peers
            .get(peer)
            .and_then(|p| p.refused_by.get(&reason))
            .copied()
            .unwrap_or(0)
    }

    /// `peers` as the API shows it: the bus's view of each peer, with what
    /// this daemon refused from it counted as decode errors.
    pub fn status(&self, views: Vec<PeerView>) -> Vec<PeerStatus> {
        let ms = |d: Option<Duration>| d.map(millis);
        views
            .into_iter()
            .map(|p| {
                let impostors = p.impostors() + self.refused_for(&p.name, Refused::Impostor);
                let over_budget = p.over_budget() + self.refused_for(&p.name, Refused::Oversized);
                let refused_commands = self.refused_for(&p.name, Refused::Command);
                let (unexpected, inbox_drops) = (p.unexpected(), p.inbox_drops());
                PeerStatus {
                    decode_errors: p.decode_errors() + self.bad_bodies(&p.name),
                    endpoint: p.endpoint,
                    state: peer_state(p.state),
                    incarnation: p.incarnation,
                    last_heartbeat_age_ms: ms(p.last_heartbeat_age),
                    snapshot_age_ms: ms(p.snapshot_age),
                    messages_in: p.messages_in,
                    messages_out: p.messages_out,
                    role: p.role.label().to_string(),
                    refused_connections: p.refused_connections,
                    impostors,
                    unexpected,
                    inbox_drops,
                    over_budget,
                    refused_commands,
                    name: p.name,
                }
            })
            .collect()
    }
}

/// How the failure detector's word for a peer reads on the wire.
pub fn peer_state(s: orch_federation::PeerState) -> PeerState {
    use orch_federation::PeerState as B;
    match s {
        B::Unknown => PeerState::Unknown,
        B::Alive => PeerState::Alive,
        B::Suspect => PeerState::Suspect,
        B::Down => PeerState::Down,
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
