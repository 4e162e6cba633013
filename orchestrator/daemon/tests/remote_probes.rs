//! A host whose agent needs another host's agent, across an outage of
//! that host's daemon: while the peer is down its agent is probed
//! directly on the port the peer published, and the dependent here holds
//! past `federation.peer_grace` while it answers, and stops as soon as it
//! does not. Two daemons on fakes and an in-memory bus, a paused clock.

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use orch_api::{PeerState, RemoteReadiness};
use orch_daemon::testing::{Harness, World, federation_section};
use orch_federation::MemNetwork;

const GRACE: Duration = Duration::from_secs(30);

/// `alpha` runs `Needy`, which needs `beta/Eyes`; `beta` runs `Eyes`,
/// its probe port 8080 published on 18080.
fn hosts() -> (String, String) {
    let alpha = r#"version: 1
host: {name: alpha}
defaults:
  image: orchestrator-agent:latest
  health: {http: {port: 8080}, interval: 500ms, timeout: 1s, retries: 2, start_period: 5s}
  stop_timeout: 2s
groups:
  needs_eyes:
    agents:
      Needy: {depends_on: [beta/Eyes]}
"#
    .to_string()
        + &federation_section(&["beta"])
        + "  peer_grace: 30s\n";
    let beta = r#"version: 1
host: {name: beta}
defaults:
  image: orchestrator-agent:latest
  health: {http: {port: 8080, path: /healthz}, interval: 1s, timeout: 1s, retries: 3, start_period: 5s}
  stop_timeout: 2s
groups:
  vision:
    agents:
      Eyes: {ports: ["18080:8080"]}
"#
    .to_string()
        + &federation_section(&["alpha"]);
    (alpha, beta)
}

async fn settle(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

async fn until_peer(h: &Harness, peer: &str, want: PeerState) {
    for _ in 0..600 {
        let state = h
            .client
            .peers()
            .await
            .unwrap()
            .into_iter()
            .find(|p| p.name == peer)
            .unwrap()
            .state;
        if state == want {
            return;
        }
        settle(50).await;
    }
    panic!("{peer} never became {want:?}");
}

/// Both hosts up, Eyes healthy on beta, Needy healthy on alpha.
async fn running() -> (MemNetwork, Harness, Harness) {
    let net = MemNetwork::new();
    let (alpha, beta) = hosts();
    let a = Harness::start_in(World::new().on(&net), &alpha).await;
    let b = Harness::start_in(World::new().on(&net), &beta).await;
    until_peer(&a, "beta", PeerState::Alive).await;
    b.client.group_start("vision").await.unwrap();
    a.client.group_start("needs_eyes").await.unwrap();
    a.until("Needy runs healthy", |s| s.agents.healthy == 1)
        .await;
    (net, a, b)
}

/// How alpha's `agents` shows what holds Needy up on beta.
async fn needy_holds_on(a: &Harness) -> Vec<RemoteReadiness> {
    a.client
        .agents(None)
        .await
        .unwrap()
        .into_iter()
        .find(|x| x.agent == "Needy")
        .unwrap()
        .remote
        .iter()
        .map(|d| d.state)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_down_peers_agent_that_answers_its_probe_holds_its_dependent_past_the_grace() {
    let (net, a, _b) = running().await;
    let before = a.container_of("Needy").await.unwrap();
    assert!(
        a.world.remote_prober.probes().is_empty(),
        "nothing is probed while beta is heard"
    );
    assert_eq!(needy_holds_on(&a).await, [RemoteReadiness::Ready]);

    net.cut("alpha", "beta");
    until_peer(&a, "beta", PeerState::Down).await;
    let down_at = tokio::time::Instant::now();
    settle(2_000).await;
    assert_eq!(
        needy_holds_on(&a).await,
        [RemoteReadiness::AnswersProbe],
        "status says why Needy runs on"
    );
    settle(2 * GRACE.as_millis() as u64).await;
    assert!(down_at.elapsed() > GRACE);
    let s = a.status().await;
    assert_eq!(s.agents.healthy, 1, "Needy holds past the grace");
    assert_eq!(
        a.container_of("Needy").await.as_deref(),
        Some(before.as_str())
    );
    // Probed where beta published it: the host of its endpoint, the host
    // port, Eyes's own path.
    let probes = a.world.remote_prober.probes();
    assert!(probes.len() > 10, "probed at its interval: {probes:?}");
    assert!(probes.iter().all(|p| p.host == "beta"
        && p.agent == "Eyes"
        && p.addr == "beta:18080"
        && p.path == "/healthz"));

    // Eyes stops answering: Needy stops.
    a.world.remote_prober.set_answers("beta", "Eyes", false);
    a.until("Needy stopped", |s| s.agents.running == 0).await;

    // beta is heard again: its word replaces the probes, and they stop.
    net.heal("alpha", "beta");
    a.until("Needy back", |s| s.agents.healthy == 1).await;
    let probed = a.world.remote_prober.probes().len();
    settle(10_000).await;
    assert_eq!(a.world.remote_prober.probes().len(), probed);
}

#[tokio::test(start_paused = true)]
async fn a_down_peers_agent_that_fails_its_probe_stops_its_dependent_before_the_grace_ends() {
    let (net, a, _b) = running().await;
    a.world.remote_prober.set_answers("beta", "Eyes", false);
    net.cut("alpha", "beta");
    until_peer(&a, "beta", PeerState::Down).await;
    let down_at = tokio::time::Instant::now();
    a.until("Needy stopped", |s| s.agents.running == 0).await;
    assert!(
        down_at.elapsed() < GRACE,
        "stopped after {:?}",
        down_at.elapsed()
    );
    // Three failures (Eyes's retries), at its interval.
    assert_eq!(a.world.remote_prober.probes().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_down_peers_agent_without_a_published_port_keeps_the_grace_alone() {
    let net = MemNetwork::new();
    let (alpha, beta) = hosts();
    let beta = beta.replace(r#"Eyes: {ports: ["18080:8080"]}"#, "Eyes: {}");
    let a = Harness::start_in(World::new().on(&net), &alpha).await;
    let b = Harness::start_in(World::new().on(&net), &beta).await;
    until_peer(&a, "beta", PeerState::Alive).await;
    b.client.group_start("vision").await.unwrap();
    a.client.group_start("needs_eyes").await.unwrap();
    a.until("Needy runs healthy", |s| s.agents.healthy == 1)
        .await;
    net.cut("alpha", "beta");
    until_peer(&a, "beta", PeerState::Down).await;
    settle(2_000).await;
    assert_eq!(needy_holds_on(&a).await, [RemoteReadiness::HeldForGrace]);
    a.until("Needy stopped when the grace ran out", |s| {
        s.agents.running == 0
    })
    .await;
    assert!(a.world.remote_prober.probes().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_peer_heard_again_saying_just_what_its_probes_said_ends_them() {
    // beta's vision group is not ready (Blind exited for good), so what
    // beta says once back (Eyes ready, nothing else) is exactly what
    // alpha believes past the grace from Eyes's probes alone.
    let net = MemNetwork::new();
    let (alpha, beta) = hosts();
    let beta = beta.replace(
        r#"      Eyes: {ports: ["18080:8080"]}"#,
        "      Eyes: {ports: [\"18080:8080\"]}\n      Blind: {restart: {policy: never}}",
    );
    let a = Harness::start_in(World::new().on(&net), &alpha).await;
    let b = Harness::start_in(World::new().on(&net), &beta).await;
    until_peer(&a, "beta", PeerState::Alive).await;
    b.client.group_start("vision").await.unwrap();
    let blind = loop {
        if let Some(id) = b.container_of("Blind").await {
            break id;
        }
        settle(100).await;
    };
    b.world.rt.exit(&blind, 1).unwrap();
    a.client.group_start("needs_eyes").await.unwrap();
    a.until("Needy runs healthy", |s| s.agents.healthy == 1)
        .await;
    settle(2_000).await;
    net.cut("alpha", "beta");
    until_peer(&a, "beta", PeerState::Down).await;
    settle(2 * GRACE.as_millis() as u64).await;
    assert_eq!(needy_holds_on(&a).await, [RemoteReadiness::AnswersProbe]);
    net.heal("alpha", "beta");
    until_peer(&a, "beta", PeerState::Alive).await;
    settle(5_000).await;
    assert_eq!(needy_holds_on(&a).await, [RemoteReadiness::Ready]);
    let probed = a.world.remote_prober.probes().len();
    settle(10_000).await;
    assert_eq!(
        a.world.remote_prober.probes().len(),
        probed,
        "beta's word replaced the probes"
    );
    assert_eq!(a.status().await.agents.healthy, 1);
}
