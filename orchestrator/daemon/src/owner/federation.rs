//! The owner's side of the federation: publishing this host's snapshot
//! and events, and taking what peers publish.

use std::time::Duration;

use orch_api::wire::{Health, Phase};
use orch_api::{Fleet, GroupState, HostView, PeerState, Snapshot};
use orch_core::supervise::{Input, RemoteHost, RemoteView};
use tokio::time::Instant;

use super::Owner;
use crate::fleet::PeerNews;
use crate::views;

/// Snapshots go out at most this often (changes in between are coalesced).
const SNAPSHOT_MIN_INTERVAL: Duration = Duration::from_millis(50);
/// ...and at least this often, so a peer's copy is never older than this
/// while the link is up.
const SNAPSHOT_MAX_INTERVAL: Duration = Duration::from_secs(5);

impl Owner {
    /// This host as peers see it.
    pub(super) fn snapshot(&self) -> Snapshot {
        let facts = self.facts();
        let slo = match self.slo_report(None) {
            Ok(orch_api::Response::Slo(r)) => Some(r),
            _ => None,
        };
        let mut status = views::status(&self.sup, &facts);
        status.state = self.state_file.clone();
        Snapshot {
            status,
            agents: views::agents(&self.sup, facts.now, None).unwrap_or_default(),
            gpu: views::gpu(&self.sup, &facts),
            slo,
        }
    }

    /// When the next snapshot is due, if this host has a bus.
    pub(super) fn snapshot_due(&self) -> Option<Instant> {
        self.deps.bus.as_ref()?;
        let Some(last) = self.last_snapshot else {
            return Some(Instant::now());
        };
        Some(if self.snapshot_dirty {
            last + SNAPSHOT_MIN_INTERVAL
        } else {
            last + SNAPSHOT_MAX_INTERVAL
        })
    }

    pub(super) fn publish_snapshot(&mut self) {
        let Some(bus) = self.deps.bus.clone() else {
            return;
        };
        match serde_json::to_vec(&self.snapshot()) {
            Ok(body) => {
                if let Err(e) = bus.publish_snapshot(body.into(), None) {
                    tracing::warn!("cannot publish this host's snapshot: {e}");
                }
            }
            Err(e) => tracing::error!("cannot encode this host's snapshot: {e}"),
        }
        self.snapshot_dirty = false;
        self.last_snapshot = Some(Instant::now());
    }

    /// Sends events to the peers (they keep them for `--host` waits).
    pub(super) fn publish_events(&mut self, events: &[orch_api::Event]) {
        self.snapshot_dirty = true;
        let Some(bus) = &self.deps.bus else { return };
        if events.is_empty() {
            return;
        }
        let batch = serde_json::to_vec(events).unwrap_or_default();
        if let Err(e) = bus.publish_events(batch.into(), None) {
            tracing::warn!("cannot publish events: {e}");
        }
    }

    pub(super) fn on_peer(&mut self, news: PeerNews) {
        let peer = match &news {
            PeerNews::Snapshot { peer, .. }
            | PeerNews::Events { peer, .. }
            | PeerNews::State { peer, .. } => peer.clone(),
        };
        self.fleet.take(news);
        // What the cross-host dependencies see of that host.
        let state = self.remote_state(&peer);
        if self.sup.remote(&peer) != &state {
            let now = self.now();
            let out = self.sup.handle(now, Input::Remote { host: peer, state });
            self.execute(out);
        }
    }

    /// Another host as cross-host dependencies see it: down when the
    /// detector says so, else what its latest snapshot says is ready.
    fn remote_state(&self, peer: &str) -> RemoteHost {
        let Some(p) = self.fleet.get(peer) else {
            return RemoteHost::Unknown;
        };
        match (p.state, &p.snapshot) {
            (PeerState::Down, _) => RemoteHost::Down,
            (PeerState::Alive | PeerState::Suspect, Some((s, _))) => RemoteHost::Up(remote_view(s)),
            _ => RemoteHost::Unknown,
        }
    }

    /// A cross-host dependency's state, for `plan`.
    pub(super) fn remote_dependency_state(&self, on: &orch_api::wire::Wait) -> String {
        use orch_api::wire::Wait;
        let (host, ready) = match on {
            Wait::RemoteAgent { host, agent } => (
                host,
                matches!(self.sup.remote(host), RemoteHost::Up(v) if v.ready_agents.contains(agent)),
            ),
            Wait::RemoteGroup { host, group } => (
                host,
                matches!(self.sup.remote(host), RemoteHost::Up(v) if v.ready_groups.contains(group)),
            ),
            _ => return "unknown".into(),
        };
        match self.sup.remote(host) {
            RemoteHost::Unknown => "not heard from",
            RemoteHost::Down => "host down",
            RemoteHost::Up(_) if ready => "ready",
            RemoteHost::Up(_) => "not ready",
        }
        .into()
    }

    /// This host (live) and every peer (its latest snapshot, with its
    /// age; a host that is down keeps its last known state).
    pub(super) fn fleet_view(&self) -> Fleet {
        let mut hosts = vec![HostView {
            host: self.sup.config().host.name.clone(),
            state: PeerState::Local,
            incarnation: self.deps.bus.as_ref().map(|b| b.incarnation()),
            snapshot_age_ms: Some(0),
            snapshot: Some(self.snapshot()),
        }];
        for (name, p) in self.fleet.peers() {
            hosts.push(HostView {
                host: name.clone(),
                state: p.state,
                incarnation: p.incarnation,
                snapshot_age_ms: p
                    .snapshot
                    .as_ref()
                    .map(|(_, at)| u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX)),
                snapshot: p.snapshot.as_ref().map(|(s, _)| s.clone()),
            });
        }
        Fleet { hosts }
    }
}

/// What is ready on a host, from its snapshot: an agent whose every
/// replica runs healthy and is not crash-looping, a group that is ready.
pub fn remote_view(s: &Snapshot) -> RemoteView {
    let mut ready = std::collections::BTreeMap::<&str, bool>::new();
    for a in &s.agents {
        let ok = a.phase == Phase::Running && a.health == Health::Healthy && !a.crashloop;
        *ready.entry(a.agent.as_str()).or_insert(true) &= ok;
    }
    RemoteView {
        ready_agents: ready
            .into_iter()
            .filter(|(_, ok)| *ok)
            .map(|(a, _)| a.to_string())
            .collect(),
        ready_groups: s
            .status
            .groups
            .iter()
            .filter(|g| g.state == GroupState::Ready)
            .map(|g| g.name.clone())
            .collect(),
    }
}
