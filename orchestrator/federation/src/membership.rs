//! Membership and failure detection, as pure code: time is an argument
//! (milliseconds on a monotonic clock), nothing here sleeps or reads a clock.
//!
//! The peer list is static (the config's). Each peer is `unknown` until its
//! first heartbeat, then `alive`; more than `suspect_after` heartbeat
//! intervals of silence make it `suspect`, more than `down_after` make it
//! `down`; any fresh heartbeat makes it `alive` again, so a healed
//! partition needs no restart. A heartbeat is fresh when it carries a newer
//! incarnation (the peer restarted), or the same incarnation and a higher
//! sequence; anything else is stale and ignored. A `down` peer accepts any
//! incarnation, so a peer whose clock went back across a restart is still
//! taken back once it has been seen down.
//!
//! [`Leases`] is the other half: who subscribed to this host's stream, and
//! until when.

use std::collections::BTreeMap;

use orch_core::model::Federation;

/// How often heartbeats go out, and how many missed ones make a peer
/// suspect, then down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub heartbeat_ms: u64,
    pub suspect_after: u32,
    pub down_after: u32,
}

impl Timing {
    /// How long a subscription lives without a heartbeat renewing it: as
    /// long as it takes to declare its holder down.
    pub fn lease_ms(&self) -> u64 {
        self.heartbeat_ms * u64::from(self.down_after)
    }
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            heartbeat_ms: 500,
            suspect_after: Federation::DEFAULT_SUSPECT_AFTER,
            down_after: Federation::DEFAULT_DOWN_AFTER,
        }
    }
}

/// What this host believes of a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeerState {
    /// Never heard from since this host started.
    Unknown,
    Alive,
    Suspect,
    Down,
}

impl PeerState {
    pub fn label(self) -> &'static str {
        match self {
            PeerState::Unknown => "unknown",
            PeerState::Alive => "alive",
            PeerState::Suspect => "suspect",
            PeerState::Down => "down",
        }
    }
}

impl std::fmt::Display for PeerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// A peer's state changed, or it restarted (a new incarnation while alive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub peer: String,
    pub state: PeerState,
    pub incarnation: u64,
}

/// What a heartbeat did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// Accepted; with the change it caused, if any.
    Fresh(Option<Change>),
    /// Older than what was already heard; ignored.
    Stale,
    /// Not a configured peer.
    Stranger,
}

#[derive(Debug, Clone)]
struct Member {
    state: PeerState,
    incarnation: Option<u64>,
    sequence: u64,
    last_heard: u64,
}

/// The failure detector over the static peer list.
#[derive(Debug, Clone)]
pub struct Membership {
    timing: Timing,
    members: BTreeMap<String, Member>,
}

impl Membership {
    pub fn new<I, S>(peers: I, timing: Timing) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let members = peers
            .into_iter()
            .map(|p| {
                (
                    p.into(),
                    Member {
                        state: PeerState::Unknown,
                        incarnation: None,
                        sequence: 0,
                        last_heard: 0,
                    },
                )
            })
            .collect();
        Membership { timing, members }
    }

    pub fn timing(&self) -> Timing {
        self.timing
    }

    pub fn heartbeat(&mut self, now: u64, peer: &str, incarnation: u64, sequence: u64) -> Heard {
        let Some(m) = self.members.get_mut(peer) else {
            return Heard::Stranger;
        };
        let restarted = match m.incarnation {
            None => true,
            Some(known) if incarnation > known => true,
            Some(known) if incarnation < known => {
                if m.state != PeerState::Down {
                    return Heard::Stale;
                }
                true
            }
            Some(_) => {
                if sequence <= m.sequence {
                    return Heard::Stale;
                }
                false
            }
        };
        let was = m.state;
        m.incarnation = Some(incarnation);
        m.sequence = sequence;
        m.last_heard = now;
        m.state = PeerState::Alive;
        let change = (restarted || was != PeerState::Alive).then(|| Change {
            peer: peer.to_owned(),
            state: PeerState::Alive,
            incarnation,
        });
        Heard::Fresh(change)
    }

    /// Moves silent peers to `suspect` and `down`.
    pub fn tick(&mut self, now: u64) -> Vec<Change> {
        let t = self.timing;
        let mut changes = Vec::new();
        for (name, m) in &mut self.members {
            let Some(incarnation) = m.incarnation else {
                continue;
            };
            let silent = now.saturating_sub(m.last_heard);
            let state = if silent > t.heartbeat_ms * u64::from(t.down_after) {
                PeerState::Down
            } else if silent > t.heartbeat_ms * u64::from(t.suspect_after) {
                PeerState::Suspect
            } else {
                continue;
            };
            // Only heartbeats move a peer back; silence only moves it on.
            if state > m.state {
                m.state = state;
                changes.push(Change {
                    peer: name.clone(),
                    state,
                    incarnation,
                });
            }
        }
        changes
    }

    /// The earliest time at which [`Membership::tick`] would move a peer
    /// on if nothing is heard from it: its last heartbeat plus just over
    /// `suspect_after` (an alive peer) or `down_after` (a suspect one)
    /// intervals. `None` when no peer can change by silence alone.
    ///
    /// A transport that ticks only on its heartbeat schedule sees a
    /// threshold crossed up to one interval late; ticking at this time as
    /// well gives each verdict when its silence is due.
    pub fn next_change_at(&self) -> Option<u64> {
        let t = self.timing;
        self.members
            .values()
            .filter(|m| m.incarnation.is_some())
            .filter_map(|m| {
                let after = match m.state {
                    PeerState::Alive => t.suspect_after,
                    PeerState::Suspect => t.down_after,
                    PeerState::Unknown | PeerState::Down => return None,
                };
                Some(m.last_heard + t.heartbeat_ms * u64::from(after) + 1)
            })
            .min()
    }

    /// Adds `peer` as `unknown`; a peer already listed keeps its state.
    pub fn add(&mut self, peer: &str) {
        self.members
            .entry(peer.to_owned())
            .or_insert_with(|| Member {
                state: PeerState::Unknown,
                incarnation: None,
                sequence: 0,
                last_heard: 0,
            });
    }

    /// Forgets `peer`.
    pub fn remove(&mut self, peer: &str) {
        self.members.remove(peer);
    }

    pub fn state(&self, peer: &str) -> Option<PeerState> {
        self.members.get(peer).map(|m| m.state)
    }

    pub fn incarnation(&self, peer: &str) -> Option<u64> {
        self.members.get(peer).and_then(|m| m.incarnation)
    }

    /// When the last fresh heartbeat was heard.
    pub fn last_heard(&self, peer: &str) -> Option<u64> {
        self.members
            .get(peer)
            .filter(|m| m.incarnation.is_some())
            .map(|m| m.last_heard)
    }
}

/// Subscriptions to this host's stream: one per peer (one per key, as a
/// key names one peer), each renewed by the peer's heartbeats and held by
/// a route (a ZeroMQ routing id, or nothing in memory).
///
/// Only a heartbeat newer than the last one renews a lease or moves it to
/// another route, so replayed heartbeats on a second connection with one
/// key change nothing. A lease that moves while live is sent the full
/// snapshot again at most once per [`Leases::MOVED_CATCH_UP_MS`] within
/// one incarnation (the daemon republishes within that time anyway), and
/// at most once per lease time for a new incarnation (a restart), so two
/// connections taking turns with fresh heartbeats cannot have a snapshot
/// sent per heartbeat.
#[derive(Debug, Clone)]
pub struct Leases<R> {
    ttl_ms: u64,
    by_peer: BTreeMap<String, Lease<R>>,
}

#[derive(Debug, Clone)]
struct Lease<R> {
    route: R,
    expires: u64,
    /// Incarnation and sequence of the heartbeat that last renewed it.
    beat: (u64, u64),
    /// When it was last answered [`Renewal::New`].
    caught_up: u64,
}

/// What a heartbeat did to its sender's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// A new subscription (none, an expired one, or a newer heartbeat on
    /// another route: the peer reconnected); send it the current snapshot.
    New,
    /// The live subscription, renewed (on another route, when it moved
    /// again sooner than [`Leases::MOVED_CATCH_UP_MS`]).
    Renewed,
    /// Not newer than the heartbeat that last renewed the live lease:
    /// ignored.
    Stale,
}

impl<R: Clone + PartialEq> Leases<R> {
    /// A live lease that moves to another route is sent the snapshot again
    /// at most this often.
    pub const MOVED_CATCH_UP_MS: u64 = 5_000;

    pub fn new(ttl_ms: u64) -> Self {
        Leases {
            ttl_ms,
            by_peer: BTreeMap::new(),
        }
    }

    /// A heartbeat `(incarnation, sequence)` from `peer` on `route`.
    pub fn renew(&mut self, now: u64, peer: &str, route: R, beat: (u64, u64)) -> Renewal {
        let expires = now + self.ttl_ms;
        match self.by_peer.get_mut(peer) {
            Some(l) if l.expires >= now && beat <= l.beat => Renewal::Stale,
            Some(l) if l.expires >= now => {
                let restarted = beat.0 > l.beat.0;
                l.expires = expires;
                l.beat = beat;
                if l.route == route {
                    return Renewal::Renewed;
                }
                l.route = route;
                // A restarted subscriber (a new incarnation) is caught up
                // at once, unless it "restarted" within the lease's time
                // already; a move within one incarnation is a reconnection.
                let wait = if restarted {
                    self.ttl_ms
                } else {
                    Self::MOVED_CATCH_UP_MS
                };
                if now.saturating_sub(l.caught_up) < wait {
                    return Renewal::Renewed;
                }
                l.caught_up = now;
                Renewal::New
            }
            _ => {
                self.by_peer.insert(
                    peer.to_owned(),
                    Lease {
                        route,
                        expires,
                        beat,
                        caught_up: now,
                    },
                );
                Renewal::New
            }
        }
    }

    /// Live subscriptions at `now`: peer and route.
    pub fn live(&self, now: u64) -> Vec<(String, R)> {
        self.by_peer
            .iter()
            .filter(|(_, l)| l.expires >= now)
            .map(|(p, l)| (p.clone(), l.route.clone()))
            .collect()
    }

    pub fn expire(&mut self, now: u64) {
        self.by_peer.retain(|_, l| l.expires >= now);
    }

    pub fn remove(&mut self, peer: &str) {
        self.by_peer.remove(peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use PeerState::*;

    const T: Timing = Timing {
        heartbeat_ms: 100,
        suspect_after: 2,
        down_after: 4,
    };

    /// One step of a scenario: at `now`, either a heartbeat from `b`
    /// (incarnation, sequence) or a tick; then what `b` must be.
    /// After a step: `b`'s state, the change reported for it, and
    /// whether the heartbeat was stale.
    type Seen = (PeerState, Option<(PeerState, u64)>, bool);

    enum Step {
        Beat(u64, u64, u64),
        Tick(u64),
    }
    use Step::*;

    /// Runs steps against a detector of peers `b` and `c`, and returns, per
    /// step, `b`'s state and whether the step reported a change for `b`.
    fn run(steps: &[Step]) -> Vec<Seen> {
        let mut m = Membership::new(["b", "c"], T);
        steps
            .iter()
            .map(|s| {
                let (changes, stale) = match *s {
                    Beat(now, inc, seq) => match m.heartbeat(now, "b", inc, seq) {
                        Heard::Fresh(c) => (c.into_iter().collect(), false),
                        Heard::Stale => (Vec::new(), true),
                        Heard::Stranger => panic!("b is a peer"),
                    },
                    Tick(now) => (m.tick(now), false),
                };
                assert!(changes.iter().all(|c| c.peer == "b"), "only b speaks");
                let change = changes.first().map(|c| (c.state, c.incarnation));
                (m.state("b").expect("b"), change, stale)
            })
            .collect()
    }

    #[test]
    fn detector_tables() {
        let cases: &[(&str, Vec<Step>, Vec<Seen>)] = &[
            (
                "unknown until first heard, then alive",
                vec![Tick(1000), Beat(1000, 7, 1), Tick(1100)],
                vec![
                    (Unknown, None, false),
                    (Alive, Some((Alive, 7)), false),
                    (Alive, None, false),
                ],
            ),
            (
                "suspect after more than 2 intervals, down after more than 4",
                vec![
                    Beat(0, 7, 1),
                    Tick(200),
                    Tick(201),
                    Tick(400),
                    Tick(401),
                    Tick(5000),
                ],
                vec![
                    (Alive, Some((Alive, 7)), false),
                    (Alive, None, false),
                    (Suspect, Some((Suspect, 7)), false),
                    (Suspect, None, false),
                    (Down, Some((Down, 7)), false),
                    (Down, None, false),
                ],
            ),
            (
                "a down peer heard again is alive: the partition healed",
                vec![Beat(0, 7, 1), Tick(1000), Beat(1000, 7, 9), Tick(1100)],
                vec![
                    (Alive, Some((Alive, 7)), false),
                    (Down, Some((Down, 7)), false),
                    (Alive, Some((Alive, 7)), false),
                    (Alive, None, false),
                ],
            ),
            (
                "a restart while alive is a change with the new incarnation",
                vec![Beat(0, 7, 5), Beat(100, 8, 1)],
                vec![
                    (Alive, Some((Alive, 7)), false),
                    (Alive, Some((Alive, 8)), false),
                ],
            ),
            (
                "an old sequence, a repeated one, or an older incarnation is stale",
                vec![
                    Beat(0, 7, 5),
                    Beat(50, 7, 5),
                    Beat(60, 7, 4),
                    Beat(70, 6, 99),
                    Tick(250),
                ],
                vec![
                    (Alive, Some((Alive, 7)), false),
                    (Alive, None, true),
                    (Alive, None, true),
                    (Alive, None, true),
                    // Stale heartbeats do not keep a peer alive.
                    (Suspect, Some((Suspect, 7)), false),
                ],
            ),
            (
                "a suspect peer heard again is alive without a restart",
                vec![Beat(0, 7, 1), Tick(300), Beat(300, 7, 2)],
                vec![
                    (Alive, Some((Alive, 7)), false),
                    (Suspect, Some((Suspect, 7)), false),
                    (Alive, Some((Alive, 7)), false),
                ],
            ),
            (
                "a down peer may come back with a lower incarnation (clock went back)",
                vec![
                    Beat(0, 7, 1),
                    Tick(1000),
                    Beat(1000, 3, 1),
                    Beat(1100, 7, 2),
                ],
                vec![
                    (Alive, Some((Alive, 7)), false),
                    (Down, Some((Down, 7)), false),
                    (Alive, Some((Alive, 3)), false),
                    // The restarted one is now current; the next higher
                    // incarnation counts as a restart again.
                    (Alive, Some((Alive, 7)), false),
                ],
            ),
        ];
        for (name, steps, expected) in cases {
            assert_eq!(&run(steps), expected, "{name}");
        }
    }

    #[test]
    fn the_next_change_is_due_just_past_each_threshold_of_the_quietest_peer() {
        let mut m = Membership::new(["b", "c"], T);
        assert_eq!(m.next_change_at(), None, "nobody heard yet");
        m.heartbeat(1000, "b", 7, 1);
        assert_eq!(m.next_change_at(), Some(1201), "b suspect after 200 ms");
        m.heartbeat(1050, "c", 9, 1);
        assert_eq!(m.next_change_at(), Some(1201), "b is still the quietest");
        m.heartbeat(1100, "b", 7, 2);
        assert_eq!(m.next_change_at(), Some(1251), "now c is");
        // At that time exactly, the tick does make c suspect.
        let changes = m.tick(1251);
        assert_eq!(changes.len(), 1);
        assert_eq!((changes[0].peer.as_str(), changes[0].state), ("c", Suspect));
        // c's next threshold is down; b's suspect one comes first.
        assert_eq!(m.next_change_at(), Some(1301));
        m.tick(1301);
        assert_eq!(m.next_change_at(), Some(1451), "c down after 400 ms");
        m.tick(1451);
        assert_eq!(m.state("c"), Some(Down));
        assert_eq!(m.next_change_at(), Some(1501), "b down after 400 ms");
        m.tick(1501);
        assert_eq!(
            m.next_change_at(),
            None,
            "both down: only a heartbeat moves them"
        );
        m.heartbeat(2000, "c", 9, 2);
        assert_eq!(m.next_change_at(), Some(2201));
    }

    #[test]
    fn one_ms_before_the_next_change_a_tick_changes_nothing() {
        let mut m = Membership::new(["b"], T);
        m.heartbeat(0, "b", 7, 1);
        let due = m.next_change_at().expect("b alive");
        assert!(m.tick(due - 1).is_empty());
        assert_eq!(m.tick(due).len(), 1);
    }

    #[test]
    fn strangers_are_not_members() {
        let mut m = Membership::new(["b"], T);
        assert_eq!(m.heartbeat(0, "x", 1, 1), Heard::Stranger);
        assert_eq!(m.state("x"), None);
        assert_eq!(m.state("b"), Some(Unknown));
        assert_eq!(m.last_heard("b"), None);
        assert!(matches!(m.heartbeat(5, "b", 1, 1), Heard::Fresh(Some(_))));
        assert_eq!(m.last_heard("b"), Some(5));
        assert_eq!(m.incarnation("b"), Some(1));
    }

    #[test]
    fn a_lease_is_new_when_first_taken_expired_or_moved() {
        let mut l: Leases<u8> = Leases::new(400);
        assert_eq!(l.renew(0, "b", 1, (5, 1)), Renewal::New, "first");
        assert_eq!(l.renew(100, "b", 1, (5, 2)), Renewal::Renewed);
        assert_eq!(l.live(500), vec![("b".to_owned(), 1)]);
        assert!(
            l.live(501).is_empty(),
            "expired 400ms after the last renewal"
        );
        assert_eq!(l.renew(600, "b", 1, (5, 3)), Renewal::New, "after expiry");
        assert_eq!(
            l.renew(700, "b", 2, (5, 4)),
            Renewal::Renewed,
            "moved to another route soon after catching up: no second snapshot"
        );
        assert_eq!(l.live(700), vec![("b".to_owned(), 2)]);
        for t in (1000..5600).step_by(300) {
            l.renew(t, "b", 2, (5, t));
        }
        assert_eq!(
            l.renew(5700, "b", 3, (5, 5700)),
            Renewal::New,
            "reconnected on another route, long after"
        );
        l.expire(20_000);
        assert!(l.live(0).is_empty(), "expire removes it");
        l.renew(0, "c", 3, (1, 1));
        l.remove("c");
        assert!(l.live(0).is_empty());
    }

    #[test]
    fn a_second_connection_with_one_key_cannot_take_the_lease_with_old_heartbeats() {
        let mut l: Leases<u8> = Leases::new(400);
        assert_eq!(l.renew(0, "b", 1, (5, 10)), Renewal::New);
        // The same beats replayed, or older ones, on another connection.
        for seq in [10, 9, 1] {
            assert_eq!(l.renew(50, "b", 2, (5, seq)), Renewal::Stale);
        }
        // An older incarnation does not either.
        assert_eq!(l.renew(60, "b", 2, (4, 99)), Renewal::Stale);
        assert_eq!(l.live(100), vec![("b".to_owned(), 1)], "still the first");
        // Two connections taking turns with fresh beats: the lease follows
        // them, but the snapshot goes out once per catch-up period, not
        // once per beat.
        let mut news = 0;
        for seq in 11..111 {
            let route = if seq % 2 == 0 { 1 } else { 2 };
            if l.renew(100 + seq * 50, "b", route, (5, seq)) == Renewal::New {
                news += 1;
            }
        }
        // 100 beats over 5 s: one catch-up.
        assert_eq!(news, 1, "{news}");
        // Taking turns with ever newer incarnations: at most one a lease
        // time (400 ms here), not one a beat (50 ms).
        let mut news = 0;
        for i in 0..100 {
            let route = if i % 2 == 0 { 1 } else { 2 };
            if l.renew(6000 + i * 50, "b", route, (6 + i, 1)) == Renewal::New {
                news += 1;
            }
        }
        assert!((1..=13).contains(&news), "{news}");
    }

    #[test]
    fn a_restarted_subscriber_on_a_new_connection_is_caught_up_at_once() {
        let mut l: Leases<u8> = Leases::new(400);
        assert_eq!(l.renew(0, "b", 1, (5, 1)), Renewal::New);
        assert_eq!(l.renew(300, "b", 1, (5, 2)), Renewal::Renewed);
        // Restarted quickly: a new incarnation, a new connection, the old
        // lease still live.
        assert_eq!(l.renew(600, "b", 2, (6, 1)), Renewal::New);
    }
}
