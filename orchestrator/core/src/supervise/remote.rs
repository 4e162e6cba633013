//! What this host believes of another host's agents, for cross-host
//! dependencies: the peer's word while it is heard from, and its last word
//! held for `federation.peer_grace` once it is down.
//!
//! A peer whose daemon restarts (or whose link drops for a while) still runs
//! its agents; stopping this host's dependents the moment the peer is
//! declared down would turn a supervisor restart there into an outage here.
//! So a peer that goes down keeps its last known view until the grace runs
//! out without news; only then are its dependents stopped. A peer that says
//! an agent is not ready is believed at once.

use super::{Millis, RemoteHost, Supervisor};

impl Supervisor {
    /// `federation.peer_grace`, in milliseconds (none without federation).
    pub fn peer_grace(&self) -> Millis {
        self.config
            .federation
            .as_ref()
            .map_or(0, |f| f.peer_grace.as_millis() as Millis)
    }

    /// Until when `host`'s last known view is held although it is down.
    pub fn remote_held_until(&self, host: &str) -> Option<Millis> {
        self.remote_held.get(host).copied()
    }

    /// Takes what the fleet says of `host` at `now`.
    pub(crate) fn take_remote(&mut self, now: Millis, host: String, state: RemoteHost) {
        match state {
            RemoteHost::Down => {
                if self.remote_held.contains_key(&host) {
                    return;
                }
                let grace = self.peer_grace();
                if grace > 0 && matches!(self.remote.get(&host), Some(RemoteHost::Up(_))) {
                    // Keep the last view; it expires at the deadline.
                    self.remote_held.insert(host, now.saturating_add(grace));
                } else {
                    self.remote.insert(host, RemoteHost::Down);
                }
            }
            // Alive again but no snapshot yet: still no news of its agents.
            RemoteHost::Unknown if self.remote_held.contains_key(&host) => {}
            state => {
                self.remote_held.remove(&host);
                if self.remote.get(&host) != Some(&state) {
                    self.remote.insert(host, state);
                }
            }
        }
    }

    /// Hosts whose grace ran out by `now` are down from now on.
    pub(crate) fn expire_remote(&mut self, now: Millis) {
        let expired: Vec<String> = self
            .remote_held
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(h, _)| h.clone())
            .collect();
        for host in expired {
            self.remote_held.remove(&host);
            self.remote.insert(host, RemoteHost::Down);
        }
    }

    /// The earliest end of a grace, for `next_deadline`.
    pub(crate) fn next_remote_deadline(&self) -> Option<Millis> {
        self.remote_held.values().copied().min()
    }
}
