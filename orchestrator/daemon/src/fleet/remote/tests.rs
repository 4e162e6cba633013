//! The follower of a peer's events, on a scripted peer and a paused clock.

#![allow(clippy::unwrap_used)]

use std::sync::Mutex;

use orch_api::EventKind;

use super::*;

fn event(seq: u64) -> Event {
    Event {
        host: "pc2".into(),
        seq,
        time_ms: seq,
        kind: EventKind::DockerUp,
    }
}

/// A peer that has events 1..=`last` and records what it was asked.
#[derive(Default)]
struct Peer {
    last: Mutex<u64>,
    asked: Mutex<Vec<u64>>,
}

impl Peer {
    fn has(&self, last: u64) {
        *self.last.lock().unwrap() = last;
    }
}

#[async_trait]
impl Pull for &'static Peer {
    async fn pull(&self, since: u64) -> Result<Vec<Event>, ApiError> {
        self.asked.lock().unwrap().push(since);
        let last = *self.last.lock().unwrap();
        Ok((since..=last).map(event).collect())
    }
}

fn peer(last: u64) -> &'static Peer {
    let p: &'static Peer = Box::leak(Box::default());
    p.has(last);
    p
}

/// Starts a follower from `since` with `backlog`; returns the feed to
/// push on and what comes out.
fn follow(
    p: &'static Peer,
    since: u64,
    backlog: Vec<Event>,
) -> (broadcast::Sender<Event>, mpsc::Receiver<Event>) {
    let (push, feed) = broadcast::channel(4);
    let (out, got) = mpsc::channel(64);
    tokio::spawn(Follower::new(p, since).run(backlog, feed, out));
    (push, got)
}

async fn next_seqs(got: &mut mpsc::Receiver<Event>, n: usize) -> Vec<u64> {
    let mut seqs = Vec::new();
    for _ in 0..n {
        seqs.push(got.recv().await.unwrap().seq);
    }
    seqs
}

#[tokio::test(start_paused = true)]
async fn pushed_events_in_order_pass_once_without_asking_the_peer() {
    let p = peer(2);
    let (push, mut got) = follow(p, 1, vec![event(1), event(2)]);
    push.send(event(2)).unwrap();
    push.send(event(3)).unwrap();
    assert_eq!(next_seqs(&mut got, 3).await, [1, 2, 3]);
    assert!(p.asked.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_gap_is_filled_from_the_peer() {
    let p = peer(6);
    let (push, mut got) = follow(p, 1, vec![event(1)]);
    push.send(event(5)).unwrap();
    assert_eq!(next_seqs(&mut got, 6).await, [1, 2, 3, 4, 5, 6]);
    assert_eq!(p.asked.lock().unwrap().as_slice(), [2]);
    push.send(event(6)).unwrap();
    push.send(event(7)).unwrap();
    assert_eq!(
        next_seqs(&mut got, 1).await,
        [7],
        "6 came from the peer already"
    );
}

#[tokio::test(start_paused = true)]
async fn a_quiet_feed_asks_the_peer_what_it_missed() {
    let p = peer(0);
    let (_push, mut got) = follow(p, 0, vec![]);
    p.has(2);
    assert_eq!(next_seqs(&mut got, 2).await, [1, 2]);
    assert_eq!(p.asked.lock().unwrap()[0], 1, "from the first number");
}

#[tokio::test(start_paused = true)]
async fn a_lagging_feed_asks_the_peer() {
    let p = peer(0);
    let (push, feed) = broadcast::channel(2);
    let (out, mut got) = mpsc::channel(64);
    for s in 1..=5 {
        push.send(event(s)).unwrap();
    }
    p.has(5);
    tokio::spawn(Follower::new(p, 1).run(vec![], feed, out));
    assert_eq!(next_seqs(&mut got, 5).await, [1, 2, 3, 4, 5]);
    assert_eq!(p.asked.lock().unwrap()[0], 1);
}

#[tokio::test(start_paused = true)]
async fn the_follower_ends_with_the_feed() {
    let p = peer(1);
    let (push, mut got) = follow(p, 1, vec![event(1)]);
    assert_eq!(next_seqs(&mut got, 1).await, [1]);
    drop(push);
    assert!(got.recv().await.is_none(), "closed");
}
