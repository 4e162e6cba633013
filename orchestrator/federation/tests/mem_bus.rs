//! `MemBus` as a daemon test would use it: on tokio's paused clock, so
//! seconds of heartbeats pass in no real time.

use std::time::Duration;

use orch_federation::{
    Bus, BusConfig, Inbound, Inbox, MemBus, MemNetwork, PeerConfig, PeerState, PublicKey,
    RequestError, Timing,
};
use serde_json::{Value, json};

fn j(value: Value) -> orch_federation::Bytes {
    serde_json::to_vec(&value).expect("JSON").into()
}

fn v(body: &[u8]) -> Value {
    serde_json::from_slice(body).expect("a JSON body")
}

const TIMING: Timing = Timing {
    heartbeat_ms: 100,
    suspect_after: 2,
    down_after: 4,
};

fn config(host: &str, incarnation: u64, peers: &[&str]) -> BusConfig {
    BusConfig {
        host: host.into(),
        incarnation,
        listen: "tcp://127.0.0.1:0".into(),
        peers: peers
            .iter()
            .map(|p| {
                PeerConfig::new(
                    *p,
                    format!("tcp://{p}:7100"),
                    PublicKey::from_bytes([p.len() as u8; 32]),
                )
            })
            .collect(),
        timing: TIMING,
        limits: orch_federation::Limits::default(),
    }
}

/// The first inbound item `pick` accepts; others are skipped. Virtual time
/// runs on while waiting.
async fn wait_for<T>(inbox: &mut Inbox, mut pick: impl FnMut(Inbound) -> Option<T>) -> T {
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let item = inbox.recv().await.expect("the bus is alive");
            if let Some(t) = pick(item) {
                return t;
            }
        }
    })
    .await;
    found.expect("the awaited item arrived")
}

async fn state_change(inbox: &mut Inbox, peer: &str, state: PeerState) -> u64 {
    wait_for(inbox, |item| match item {
        Inbound::PeerChanged(c) if c.peer == peer && c.state == state => Some(c.incarnation),
        _ => None,
    })
    .await
}

fn pair(net: &MemNetwork) -> ((MemBus, Inbox), (MemBus, Inbox)) {
    (
        net.join(config("a", 10, &["b"])),
        net.join(config("b", 20, &["a"])),
    )
}

#[tokio::test(start_paused = true)]
async fn peers_see_each_other_and_snapshots_and_events_flow() {
    let net = MemNetwork::new();
    let ((a, mut a_in), (b, mut b_in)) = pair(&net);
    assert_eq!(state_change(&mut a_in, "b", PeerState::Alive).await, 20);
    assert_eq!(state_change(&mut b_in, "a", PeerState::Alive).await, 10);

    a.publish_snapshot(j(json!({"groups": ["infra_core"]})), None)
        .expect("publish");
    let (incarnation, sequence, body) = wait_for(&mut b_in, |item| match item {
        Inbound::Snapshot {
            peer,
            incarnation,
            sequence,
            body,
            ..
        } if peer == "a" => Some((incarnation, sequence, body)),
        _ => None,
    })
    .await;
    assert_eq!((incarnation, sequence), (10, 1));
    assert_eq!(v(&body), json!({"groups": ["infra_core"]}));

    b.publish_events(j(json!([json!({"event": 1}), json!({"event": 2})])), None)
        .expect("publish");
    let batch = wait_for(&mut a_in, |item| match item {
        Inbound::Events { peer, batch, .. } if peer == "b" => Some(batch),
        _ => None,
    })
    .await;
    assert_eq!(v(&batch), json!([json!({"event": 1}), json!({"event": 2})]));

    let view = &b.peers()[0];
    assert_eq!((view.name.as_str(), view.state), ("a", PeerState::Alive));
    assert_eq!(view.incarnation, Some(10));
    assert!(view.messages_in > 0 && view.messages_out > 0, "{view:?}");
    assert!(view.snapshot_age.is_some() && view.last_heartbeat_age.is_some());
    assert_eq!(view.decode_errors(), 0);
    assert_eq!(view.endpoint, "tcp://a:7100");
}

#[tokio::test(start_paused = true)]
async fn a_request_gets_its_reply() {
    let net = MemNetwork::new();
    let ((a, mut a_in), (_b, mut b_in)) = pair(&net);
    state_change(&mut a_in, "b", PeerState::Alive).await;
    let server = tokio::spawn(async move {
        let request = wait_for(&mut b_in, |item| match item {
            Inbound::Request(r) => Some(r),
            _ => None,
        })
        .await;
        assert_eq!(request.from, "a");
        let answer = json!({"echo": v(&request.body)});
        request.reply(j(answer)).expect("reply");
        b_in
    });
    let reply = a
        .request(
            "b",
            j(json!({"op": "status"})),
            None,
            Duration::from_secs(5),
        )
        .await
        .expect("reply");
    assert_eq!(v(&reply), json!({"echo": {"op": "status"}}));
    server.await.expect("server");
}

#[tokio::test(start_paused = true)]
async fn requests_to_unknown_unheard_down_and_silent_peers_fail_naming_them() {
    let net = MemNetwork::new();
    let (a, mut a_in) = net.join(config("a", 10, &["b", "c"]));
    let t = Duration::from_secs(1);
    assert_eq!(
        a.request("zz", j(Value::Null), None, t).await,
        Err(RequestError::UnknownPeer { peer: "zz".into() })
    );
    assert_eq!(
        a.request("c", j(Value::Null), None, t).await,
        Err(RequestError::Unreachable { peer: "c".into() })
    );

    let (b, _b_in_never_read) = net.join(config("b", 20, &["a"]));
    state_change(&mut a_in, "b", PeerState::Alive).await;
    assert_eq!(
        a.request("b", j(Value::Null), None, t).await,
        Err(RequestError::Timeout {
            peer: "b".into(),
            after: t
        })
    );
    drop(b);
    state_change(&mut a_in, "b", PeerState::Down).await;
    assert_eq!(
        a.request("b", j(Value::Null), None, t).await,
        Err(RequestError::PeerDown { peer: "b".into() })
    );
}

#[tokio::test(start_paused = true)]
async fn a_cut_link_makes_peers_suspect_then_down_and_heals_without_a_restart() {
    let net = MemNetwork::new();
    let ((a, mut a_in), (b, mut b_in)) = pair(&net);
    state_change(&mut a_in, "b", PeerState::Alive).await;
    state_change(&mut b_in, "a", PeerState::Alive).await;

    net.cut("a", "b");
    state_change(&mut a_in, "b", PeerState::Suspect).await;
    assert_eq!(state_change(&mut a_in, "b", PeerState::Down).await, 20);
    state_change(&mut b_in, "a", PeerState::Down).await;
    assert_eq!(a.peers()[0].state, PeerState::Down);

    // Published during the partition: it must reach b after the heal.
    a.publish_snapshot(j(json!({"during": "partition"})), None)
        .expect("publish");
    net.heal("a", "b");
    assert_eq!(state_change(&mut a_in, "b", PeerState::Alive).await, 20);
    let body = wait_for(&mut b_in, |item| match item {
        Inbound::Snapshot { peer, body, .. } if peer == "a" => Some(body),
        _ => None,
    })
    .await;
    assert_eq!(v(&body), json!({"during": "partition"}));
    assert_eq!(b.peers()[0].state, PeerState::Alive);
}

#[tokio::test(start_paused = true)]
async fn a_restarted_peer_is_seen_down_then_alive_with_a_new_incarnation() {
    let net = MemNetwork::new();
    let ((a, mut a_in), (b, mut b_in)) = pair(&net);
    state_change(&mut a_in, "b", PeerState::Alive).await;
    a.publish_snapshot(j(json!({"v": 1})), None)
        .expect("publish");
    wait_for(&mut b_in, |item| {
        matches!(item, Inbound::Snapshot { .. }).then_some(())
    })
    .await;

    drop((b, b_in));
    state_change(&mut a_in, "b", PeerState::Down).await;
    let (_b2, mut b2_in) = net.join(config("b", 21, &["a"]));
    assert_eq!(state_change(&mut a_in, "b", PeerState::Alive).await, 21);
    assert_eq!(a.peers()[0].incarnation, Some(21));
    // The restarted peer subscribes anew and gets the current snapshot.
    let body = wait_for(&mut b2_in, |item| match item {
        Inbound::Snapshot { body, .. } => Some(body),
        _ => None,
    })
    .await;
    assert_eq!(v(&body), json!({"v": 1}));
}

#[tokio::test(start_paused = true)]
async fn a_quick_restart_is_recognised_by_its_incarnation_alone() {
    let net = MemNetwork::new();
    let ((_a, mut a_in), (b, b_in)) = pair(&net);
    state_change(&mut a_in, "b", PeerState::Alive).await;
    // Replaced before it could be missed: still a restart.
    let replacement = net.join(config("b", 22, &["a"]));
    drop((b, b_in));
    assert_eq!(state_change(&mut a_in, "b", PeerState::Alive).await, 22);
    drop(replacement);
}

#[tokio::test(start_paused = true)]
async fn a_bus_not_listed_by_its_peer_hears_nothing() {
    let net = MemNetwork::new();
    let (a, mut a_in) = net.join(config("a", 10, &["b"]));
    // `x` lists `a`, but `a` does not list `x`.
    let (x, mut x_in) = net.join(config("x", 30, &["a"]));
    a.publish_snapshot(j(json!(1)), None).expect("publish");
    x.publish_snapshot(j(json!(2)), None).expect("publish");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(a_in.try_recv().is_none(), "a heard something");
    assert!(x_in.try_recv().is_none(), "x heard something");
    assert_eq!(x.peers()[0].state, PeerState::Unknown);
    assert_eq!(a.peers()[0].messages_in, 0);
}

#[test]
fn the_bus_config_comes_from_the_config_model() {
    use orch_core::model::{Federation, Peer, PeerRole, RemoteCommands};
    use orch_core::units::Duration as ConfigDuration;
    let key = PublicKey::from_bytes([7; 32]);
    let mut federation = Federation {
        listen: "tcp://0.0.0.0:7100".into(),
        peers: vec![Peer {
            name: "pc2".into(),
            endpoint: "tcp://pc2.lan:7100".into(),
            public_key: key.to_z85(),
            next_public_key: None,
            role: PeerRole::Peer,
            probe_address: None,
        }],
        secret_key_file: None,
        heartbeat: ConfigDuration::from_millis(250),
        suspect_after: 3,
        down_after: 6,
        remote_commands: RemoteCommands::Operate,
        peer_grace: Federation::DEFAULT_PEER_GRACE,
    };
    let config = BusConfig::from_model("mainpc", &federation, 99).expect("valid");
    assert_eq!(config.host, "mainpc");
    assert_eq!(config.incarnation, 99);
    assert_eq!(config.listen, "tcp://0.0.0.0:7100");
    assert_eq!(
        config.timing,
        Timing {
            heartbeat_ms: 250,
            suspect_after: 3,
            down_after: 6
        }
    );
    assert_eq!(config.peers[0].public_keys, [key]);
    assert_eq!(config.peers[0].role, orch_federation::Role::Peer);
    assert_eq!(config.peers[0].endpoint, "tcp://pc2.lan:7100");

    federation.peers[0].public_key = "short".into();
    let err = BusConfig::from_model("mainpc", &federation, 99).expect_err("bad key");
    assert!(err.to_string().contains("pc2"), "{err}");
}
