//! What this host believes of another host's agents, for cross-host
//! dependencies: the peer's word while it is heard from, its last word
//! held for `federation.peer_grace` once it is down, and meanwhile what
//! the agents themselves answer to a direct probe.
//!
//! A peer whose daemon restarts (or whose link drops for a while) still runs
//! its agents; stopping this host's dependents the moment the peer is
//! declared down would turn a supervisor restart there into an outage here.
//! So a peer that goes down keeps its last known view until the grace runs
//! out without news. A peer that says an agent is not ready is believed at
//! once.
//!
//! While a down peer's view is held, the daemon probes directly each of
//! its agents that a wanted replica here needs and whose health endpoint
//! the peer published ([`Supervisor::remote_probes`]). A probe is news
//! of that agent alone: one that passes keeps it ready past the grace, for
//! as long as its probes pass; one that fails (after the agent's
//! `retries`) makes it not ready at once, and it stays so until the peer
//! is heard again. Agents with no endpoint, and groups, keep the grace.
//! The peer's own word, when it comes, replaces every probe.

use std::collections::BTreeSet;

use super::{Millis, RemoteHost, RemoteView, Supervisor};

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

    /// Whether `host` is down and its `agent` answers its direct probe.
    pub fn remote_answers_probe(&self, host: &str, agent: &str) -> bool {
        self.remote_probes
            .get(host)
            .is_some_and(|agents| agents.contains(agent))
    }

    /// Whether `host` is down and something of it is still believed: its
    /// view within the grace, or agents answering probes past it.
    pub fn remote_vouched(&self, host: &str) -> bool {
        self.remote_held.contains_key(host) || self.remote_probes.contains_key(host)
    }

    /// The agents of other hosts the daemon is to probe directly now, as
    /// `(host, agent)`: of each host that is down with something still
    /// believed, every agent a wanted replica here depends on that is not
    /// known to have failed. Empty, at no cost, while every peer is heard.
    pub fn remote_probes(&self) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        if self.remote_held.is_empty() && self.remote_probes.is_empty() {
            return out;
        }
        for a in self.agents.values() {
            if a.replicas == 0 || !self.group_wanted(&a.group) {
                continue;
            }
            for (w, _) in self.remote_dependencies(&a.name) {
                let super::Wait::RemoteAgent { host, agent } = w else {
                    continue;
                };
                let believed = matches!(self.remote(&host), RemoteHost::Up(v)
                    if v.ready_agents.contains(&agent) || v.pending_agents.contains(&agent));
                if believed && self.remote_vouched(&host) {
                    out.insert((host, agent));
                }
            }
        }
        out
    }

    /// Takes what the fleet says of `host` at `now`.
    pub(crate) fn take_remote(&mut self, now: Millis, host: String, state: RemoteHost) {
        match state {
            RemoteHost::Down => {
                if self.remote_vouched(&host) {
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
            RemoteHost::Unknown if self.remote_vouched(&host) => {}
            state => {
                // The peer's word replaces whatever was held or probed.
                self.remote_held.remove(&host);
                self.remote_probes.remove(&host);
                if self.remote.get(&host) != Some(&state) {
                    self.remote.insert(host, state);
                }
            }
        }
    }

    /// Takes a direct probe of `host`'s `agent`. Only a host that is down
    /// with something still believed is probed; a result that comes after
    /// the peer was heard again is stale and ignored.
    pub(crate) fn take_remote_probe(&mut self, host: String, agent: String, healthy: bool) {
        let held = self.remote_held.contains_key(&host);
        if !self.remote_vouched(&host) {
            return;
        }
        let Some(RemoteHost::Up(view)) = self.remote.get_mut(&host) else {
            return;
        };
        if healthy {
            // An agent found failed stays so until the peer says otherwise;
            // past the grace only agents still answering are believed.
            if held && (view.ready_agents.contains(&agent) || view.pending_agents.contains(&agent))
            {
                self.remote_probes.entry(host).or_default().insert(agent);
            }
            return;
        }
        // Known not ready: its dependents stop, as when the peer says so.
        view.ready_agents.remove(&agent);
        view.pending_agents.remove(&agent);
        let answering = self.remote_probes.get_mut(&host).map(|agents| {
            agents.remove(&agent);
            agents.len()
        });
        if !held && answering.is_some_and(|n| n == 0) {
            self.remote_probes.remove(&host);
            self.remote.insert(host, RemoteHost::Down);
        }
    }

    /// Hosts whose grace ran out by `now` are down from now on, but for
    /// their agents that answer their probes.
    pub(crate) fn expire_remote(&mut self, now: Millis) {
        let expired: Vec<String> = self
            .remote_held
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(h, _)| h.clone())
            .collect();
        for host in expired {
            self.remote_held.remove(&host);
            match self.remote_probes.get(&host) {
                Some(answering) if !answering.is_empty() => {
                    let view = RemoteView {
                        ready_agents: answering.clone(),
                        ..RemoteView::default()
                    };
                    self.remote.insert(host, RemoteHost::Up(view));
                }
                _ => {
                    self.remote_probes.remove(&host);
                    self.remote.insert(host, RemoteHost::Down);
                }
            }
        }
    }

    /// The earliest end of a grace, for `next_deadline`.
    pub(crate) fn next_remote_deadline(&self) -> Option<Millis> {
        self.remote_held.values().copied().min()
    }
}
