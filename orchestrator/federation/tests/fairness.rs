//! One peer cannot take another's share, and nothing a peer waits for is
//! lost silently (on `MemBus`, which runs the same inbox and node as
//! `ZmqBus`, on tokio's paused clock):
//!
//! - requests beyond a peer's in-flight limit are answered at once with
//!   `unavailable`; a request dropped unanswered is answered too;
//! - a peer over its inbox share loses its own items, never another's, and
//!   never a peer state change;
//! - a reply too large for one message reaches the caller as an error at
//!   once;
//! - a monitor is never a member, never reported down, and its requests
//!   carry its role;
//! - the peer list changes at run time without an unchanged peer being
//!   seen down.

use std::time::Duration;

use orch_federation::wire::MAX_BODY;
use orch_federation::{
    Bus, BusConfig, Bytes, DropKind, Inbound, Inbox, Limits, MemBus, MemNetwork, PeerConfig,
    PeerState, PublicKey, Role, Timing,
};

const TIMING: Timing = Timing {
    heartbeat_ms: 100,
    suspect_after: 2,
    down_after: 4,
};

fn peer(name: &str) -> PeerConfig {
    PeerConfig::new(
        name,
        format!("tcp://{name}:7300"),
        PublicKey::from_bytes([name.len() as u8 + name.as_bytes()[0]; 32]),
    )
}

fn join(net: &MemNetwork, host: &str, peers: Vec<PeerConfig>, limits: Limits) -> (MemBus, Inbox) {
    let mut config = BusConfig::new(host, 1, "tcp://127.0.0.1:0", peers, TIMING);
    config.limits = limits;
    net.join(config)
}

/// Lets virtual time run so heartbeats flow.
async fn beats(n: u64) {
    tokio::time::sleep(Duration::from_millis(TIMING.heartbeat_ms * n)).await;
}

fn error_code(reply: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(reply).expect("JSON");
    v["err"]["code"].as_str().unwrap_or_default().to_owned()
}

fn view(bus: &MemBus, name: &str) -> orch_federation::PeerView {
    bus.peers()
        .into_iter()
        .find(|p| p.name == name)
        .expect("listed")
}

#[tokio::test(start_paused = true)]
async fn requests_beyond_the_limit_in_flight_are_answered_unavailable_at_once() {
    let net = MemNetwork::new();
    let limits = Limits {
        requests_in_flight: 2,
        ..Limits::default()
    };
    let (a, mut a_in) = join(&net, "a", vec![peer("x")], limits);
    let (x, _x_in) = join(&net, "x", vec![peer("a")], Limits::default());
    let x = std::sync::Arc::new(x);
    beats(3).await;
    // `a` does not read its inbox: x's first two requests wait in it.
    let long = Duration::from_secs(3600);
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let x = std::sync::Arc::clone(&x);
            tokio::spawn(async move { x.request("a", Bytes::from_static(b"{}"), None, long).await })
        })
        .collect();
    beats(1).await;
    assert!(
        waiting.iter().all(|w| !w.is_finished()),
        "nothing answered them yet"
    );
    let started = tokio::time::Instant::now();
    for _ in 0..5 {
        let reply = x
            .request("a", Bytes::from_static(b"{}"), None, long)
            .await
            .expect("a reply, not a timeout");
        assert_eq!(error_code(&reply), "unavailable");
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "answered at once, not at a timeout"
    );
    assert_eq!(view(&a, "x").dropped(DropKind::Busy), 5);

    // Dropping the waiting requests unanswered answers them, and frees
    // the slots.
    let mut dropped = 0;
    while let Some(item) = a_in.try_recv() {
        if let Inbound::Request(r) = item {
            assert_eq!(r.role, Role::Peer);
            drop(r);
            dropped += 1;
        }
    }
    assert_eq!(dropped, 2);
    for w in waiting {
        let reply = w.await.expect("task").expect("a reply");
        assert_eq!(error_code(&reply), "unavailable");
    }
    let served = tokio::spawn(async move {
        loop {
            if let Some(Inbound::Request(r)) = a_in.recv().await {
                r.reply(Bytes::from_static(b"{\"ok\": 1}")).expect("reply");
                return;
            }
        }
    });
    let reply = x
        .request("a", Bytes::from_static(b"{}"), None, long)
        .await
        .expect("reply");
    assert_eq!(&reply[..], b"{\"ok\": 1}");
    served.await.expect("served");
}

#[tokio::test(start_paused = true)]
async fn a_peer_over_its_share_loses_its_own_items_never_a_state_change() {
    let net = MemNetwork::new();
    let limits = Limits {
        inbox_bytes_per_peer: 4 * 1024 * 1024,
        ..Limits::default()
    };
    let (a, mut a_in) = join(&net, "a", vec![peer("x"), peer("y")], limits);
    let (x, _x_in) = join(&net, "x", vec![peer("a")], Limits::default());
    let (y, _y_in) = join(&net, "y", vec![peer("a")], Limits::default());
    beats(3).await;
    // x floods a with 1 MiB snapshots; a does not read meanwhile.
    let big = Bytes::from(format!("\"{}\"", "x".repeat(1024 * 1024)));
    for _ in 0..10 {
        x.publish_snapshot(big.clone(), None).expect("publish");
    }
    y.publish_snapshot(Bytes::from_static(b"{\"y\": 1}"), None)
        .expect("publish");
    // y goes silent: its change must come through x's flood.
    net.cut("a", "y");
    beats(6).await;
    let drops = view(&a, "x").inbox_drops();
    assert!(drops >= 6, "x lost its own items past 4 MiB: {drops}");
    assert_eq!(view(&a, "y").inbox_drops(), 0);
    let mut x_snapshots = 0;
    let (mut y_snapshot, mut y_down) = (false, false);
    while let Some(item) = a_in.try_recv() {
        match item {
            Inbound::Snapshot { peer, .. } if peer == "x" => x_snapshots += 1,
            Inbound::Snapshot { peer, .. } if peer == "y" => y_snapshot = true,
            Inbound::PeerChanged(c) if c.peer == "y" && c.state == PeerState::Down => {
                y_down = true;
            }
            _ => {}
        }
    }
    assert!((1..=4).contains(&x_snapshots), "{x_snapshots}");
    assert!(y_snapshot, "y's share was its own");
    assert!(y_down, "a state change is never dropped");
}

#[tokio::test(start_paused = true)]
async fn a_reply_too_large_for_one_message_reaches_the_caller_as_an_error_at_once() {
    let net = MemNetwork::new();
    let (_a, mut a_in) = join(&net, "a", vec![peer("b")], Limits::default());
    let (b, _b_in) = join(&net, "b", vec![peer("a")], Limits::default());
    beats(3).await;
    let server = tokio::spawn(async move {
        loop {
            if let Some(Inbound::Request(r)) = a_in.recv().await {
                let huge = Bytes::from(format!("\"{}\"", "x".repeat(MAX_BODY)));
                return r.reply(huge);
            }
        }
    });
    let started = tokio::time::Instant::now();
    let reply = b
        .request(
            "a",
            Bytes::from_static(b"{}"),
            None,
            Duration::from_secs(30),
        )
        .await
        .expect("a reply");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(error_code(&reply), "internal");
    let text = String::from_utf8_lossy(&reply).into_owned();
    assert!(text.contains("more than the 4194304"), "{text}");
    let refused = server.await.expect("served");
    assert!(refused.is_err(), "the responder hears it too");
}

#[tokio::test(start_paused = true)]
async fn a_monitor_reads_but_is_never_a_member_nor_reported_down() {
    let net = MemNetwork::new();
    let (a, mut a_in) = join(
        &net,
        "a",
        vec![peer("b"), peer("grafana").monitor()],
        Limits::default(),
    );
    let (_b, _b_in) = join(&net, "b", vec![peer("a")], Limits::default());
    let (g, mut g_in) = join(&net, "grafana", vec![peer("a")], Limits::default());
    a.publish_snapshot(Bytes::from_static(b"{\"a\": 1}"), None)
        .expect("publish");
    beats(3).await;
    // The monitor subscribed and got a's snapshot.
    let mut got = false;
    while let Some(item) = g_in.try_recv() {
        got |= matches!(item, Inbound::Snapshot { ref peer, .. } if peer == "a");
    }
    assert!(got, "the monitor reads a's stream");
    let seen = view(&a, "grafana");
    assert_eq!((seen.role, seen.state), (Role::Monitor, PeerState::Unknown));
    assert_eq!(view(&a, "b").role, Role::Peer);

    let asked = tokio::spawn(async move {
        g.request("a", Bytes::from_static(b"{}"), None, Duration::from_secs(5))
            .await
    });
    let mut role = None;
    for _ in 0..10 {
        beats(1).await;
        while let Some(item) = a_in.try_recv() {
            match item {
                Inbound::Request(r) => {
                    role = Some(r.role);
                    r.reply(Bytes::from_static(b"{}")).expect("reply");
                }
                Inbound::PeerChanged(c) => {
                    assert_ne!(c.peer, "grafana", "a monitor is no member: {c:?}")
                }
                _ => {}
            }
        }
    }
    assert_eq!(role, Some(Role::Monitor));
    asked.await.expect("task").expect("answered");
    // Gone for good: never reported down.
    net.cut("a", "grafana");
    beats(10).await;
    while let Some(item) = a_in.try_recv() {
        if let Inbound::PeerChanged(c) = item {
            assert_ne!(c.peer, "grafana", "{c:?}");
        }
    }
    assert_eq!(view(&a, "grafana").state, PeerState::Unknown);
}

#[tokio::test(start_paused = true)]
async fn peers_change_at_run_time_and_an_unchanged_one_is_never_seen_down() {
    let net = MemNetwork::new();
    let (a, mut a_in) = join(&net, "a", vec![peer("b")], Limits::default());
    let (_b, _b_in) = join(&net, "b", vec![peer("a"), peer("c")], Limits::default());
    let (_c, _c_in) = join(&net, "c", vec![peer("a"), peer("b")], Limits::default());
    beats(3).await;
    assert_eq!(view(&a, "b").state, PeerState::Alive);
    let b_in_before = view(&a, "b").messages_in;

    a.reconfigure(vec![peer("b"), peer("c")]).expect("taken");
    beats(6).await;
    assert_eq!(view(&a, "c").state, PeerState::Alive, "added");
    let b = view(&a, "b");
    assert_eq!(b.state, PeerState::Alive);
    assert!(b.messages_in > b_in_before, "b's counters were kept");
    while let Some(item) = a_in.try_recv() {
        if let Inbound::PeerChanged(c) = item {
            assert!(
                c.peer != "b" || c.state == PeerState::Alive,
                "b was never seen down or suspect: {c:?}"
            );
        }
    }

    // Removed: gone from the views, and requests to it fail at once.
    a.reconfigure(vec![peer("b")]).expect("taken");
    assert!(a.peers().iter().all(|p| p.name != "c"));
    let err = a
        .request("c", Bytes::from_static(b"{}"), None, Duration::from_secs(5))
        .await
        .expect_err("not a peer any more");
    assert!(err.to_string().contains("not a configured peer"), "{err}");

    // A list that cannot be taken changes nothing.
    let mut twin = peer("d");
    twin.public_keys = peer("b").public_keys;
    assert!(a.reconfigure(vec![peer("b"), twin]).is_err());
    assert_eq!(a.peers().len(), 1);
}
