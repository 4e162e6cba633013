//! Federated daemons in process: two or three hosts on an in-memory bus
//! (`MemNetwork`), each the real daemon on fakes, under a paused clock.
//! Fleet views, remote commands and their event streams, failure
//! detection, partitions that heal, restarts seen by their incarnation.

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use futures_util::StreamExt;
use orch_api::wire::{Phase, Wait};
use orch_api::{ClientError, ErrorCode, GroupState, PeerState};
use orch_daemon::testing::{Harness, World, federation_section};
use orch_federation::MemNetwork;

/// A host named `name` whose peers are `peers`, with one group `g`.
fn config(name: &str, peers: &[&str]) -> String {
    format!(
        r#"version: 1
host: {{name: {name}}}
defaults:
  image: orchestrator-agent:latest
  health: {{http: {{port: 8080}}, interval: 500ms, timeout: 1s, retries: 2, start_period: 5s}}
  stop_timeout: 2s
groups:
  g:
    agents:
      A: {{}}
      B: {{depends_on: [A]}}
"#
    ) + &federation_section(peers)
}

async fn settle(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

async fn peer_state(h: &Harness, peer: &str) -> PeerState {
    h.client
        .peers()
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.name == peer)
        .unwrap()
        .state
}

async fn until_peer(h: &Harness, peer: &str, want: PeerState) {
    for _ in 0..600 {
        if peer_state(h, peer).await == want {
            return;
        }
        settle(50).await;
    }
    panic!("{peer} never became {want:?}: {:?}", h.client.peers().await);
}

#[tokio::test(start_paused = true)]
async fn hosts_see_each_other_and_take_commands_for_each_other() {
    let net = MemNetwork::new();
    let a = Harness::start_in(World::new().on(&net), &config("alpha", &["beta"])).await;
    let b = Harness::start_in(World::new().on(&net), &config("beta", &["alpha"])).await;
    until_peer(&a, "beta", PeerState::Alive).await;
    until_peer(&b, "alpha", PeerState::Alive).await;

    // A command for beta, sent to alpha's socket, runs on beta.
    let remote = a.client.clone().for_host(Some("beta".into()));
    let mut follow = Box::pin(remote.events(1, true).await.unwrap());
    let accepted = remote.group_start("g").await.unwrap();
    // Followed live, as a `--host beta ... --wait` does.
    loop {
        let e = follow.next().await.unwrap().unwrap();
        assert_eq!(e.host, "beta");
        if e.kind.name() == "group-ready" {
            break;
        }
    }
    assert_eq!(accepted.groups, ["g"]);
    b.until_ready().await;
    assert!(a.world.rt.containers().is_empty(), "nothing ran on alpha");
    assert_eq!(b.world.rt.containers().len(), 2);
    // Its replies are beta's own.
    assert_eq!(remote.status().await.unwrap().host, "beta");
    let agents = remote.agents(Some("g")).await.unwrap();
    assert_eq!(agents.len(), 2);
    // beta's events, relayed by alpha from the accepted command on.
    let events: Vec<_> = remote
        .events(accepted.events_from, false)
        .await
        .unwrap()
        .map(|e| e.unwrap())
        .collect()
        .await;
    assert!(events.iter().all(|e| e.host == "beta"));
    assert!(
        events
            .iter()
            .any(|e| e.kind.name() == "group-ready" && e.kind.group() == Some("g")),
        "{events:?}"
    );
    assert_eq!(events[0].seq, accepted.events_from);

    // The fleet from alpha: itself live, beta from its latest snapshot.
    settle(200).await;
    let fleet = a.client.fleet().await.unwrap();
    let hosts: Vec<(&str, PeerState)> = fleet
        .hosts
        .iter()
        .map(|h| (h.host.as_str(), h.state))
        .collect();
    assert_eq!(
        hosts,
        [("alpha", PeerState::Local), ("beta", PeerState::Alive)]
    );
    let beta = &fleet.hosts[1];
    let snap = beta.snapshot.as_ref().unwrap();
    assert_eq!(snap.status.host, "beta");
    // The whole status, as beta would answer it, its state file included.
    assert_eq!(snap.status.state, remote.status().await.unwrap().state);
    assert!(!snap.status.state.location.is_empty());
    assert_eq!(snap.status.agents.healthy, 2);
    assert!(beta.snapshot_age_ms.unwrap() < 1_000);

    // Errors come back as the remote host's own, with their codes.
    let e = match remote.group_start("nosuch").await.unwrap_err() {
        ClientError::Api(e) => e,
        other => panic!("{other}"),
    };
    assert_eq!(e.code, ErrorCode::NotFound);
    assert!(
        e.message.contains("no group `nosuch` on host beta"),
        "{}",
        e.message
    );
    // A host nobody knows is unreachable, by name.
    let e = match a
        .client
        .clone()
        .for_host(Some("gamma".into()))
        .status()
        .await
        .unwrap_err()
    {
        ClientError::Api(e) => e,
        other => panic!("{other}"),
    };
    assert_eq!(e.code, ErrorCode::HostUnreachable);
    assert!(e.message.contains("gamma"), "{}", e.message);
}

#[tokio::test(start_paused = true)]
async fn a_cut_host_is_seen_down_keeps_its_last_state_and_comes_back_by_itself() {
    let net = MemNetwork::new();
    let a = Harness::start_in(World::new().on(&net), &config("alpha", &["beta", "gamma"])).await;
    let mut b =
        Harness::start_in(World::new().on(&net), &config("beta", &["alpha", "gamma"])).await;
    let c = Harness::start_in(World::new().on(&net), &config("gamma", &["alpha", "beta"])).await;
    for (h, peers) in [
        (&a, ["beta", "gamma"]),
        (&b, ["alpha", "gamma"]),
        (&c, ["alpha", "beta"]),
    ] {
        for p in peers {
            until_peer(h, p, PeerState::Alive).await;
        }
    }
    b.client.group_start("g").await.unwrap();
    b.until_ready().await;
    settle(200).await;

    // Cut beta off from everyone.
    net.cut("alpha", "beta");
    net.cut("gamma", "beta");
    let cut_at = tokio::time::Instant::now();
    until_peer(&a, "beta", PeerState::Down).await;
    until_peer(&c, "beta", PeerState::Down).await;
    // 500 ms heartbeats, down after 4 misses.
    assert!(
        cut_at.elapsed() <= Duration::from_millis(2_600),
        "{:?}",
        cut_at.elapsed()
    );
    assert_eq!(
        peer_state(&a, "gamma").await,
        PeerState::Alive,
        "only beta is cut"
    );
    let fleet = a.client.fleet().await.unwrap();
    let beta = fleet.hosts.iter().find(|h| h.host == "beta").unwrap();
    assert_eq!(beta.state, PeerState::Down);
    assert_eq!(
        beta.snapshot.as_ref().unwrap().status.agents.healthy,
        2,
        "a down host keeps its last known state"
    );
    let e = match a
        .client
        .clone()
        .for_host(Some("beta".into()))
        .status()
        .await
        .unwrap_err()
    {
        ClientError::Api(e) => e,
        other => panic!("{other}"),
    };
    assert_eq!(e.code, ErrorCode::HostUnreachable);

    // The link comes back: no restart needed.
    net.heal("alpha", "beta");
    net.heal("gamma", "beta");
    until_peer(&a, "beta", PeerState::Alive).await;
    until_peer(&c, "beta", PeerState::Alive).await;

    // A restarted daemon is seen with a new incarnation.
    let before = a
        .client
        .peers()
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.name == "beta")
        .unwrap()
        .incarnation
        .unwrap();
    b.restart().await;
    for _ in 0..200 {
        let now = a
            .client
            .peers()
            .await
            .unwrap()
            .into_iter()
            .find(|p| p.name == "beta")
            .unwrap();
        if now.incarnation.is_some_and(|i| i > before) && now.state == PeerState::Alive {
            let fleet = a.client.fleet().await.unwrap();
            let beta = fleet.hosts.iter().find(|h| h.host == "beta").unwrap();
            assert_eq!(beta.incarnation, now.incarnation);
            let groups = &beta.snapshot.as_ref().unwrap().status.groups;
            assert!(
                groups
                    .iter()
                    .any(|g| g.name == "g" && g.state != GroupState::Stopped)
            );
            return;
        }
        settle(50).await;
    }
    panic!("beta's restart was not seen");
}

#[tokio::test(start_paused = true)]
async fn an_agent_that_needs_another_hosts_agent_waits_for_it_and_is_held_again() {
    let net = MemNetwork::new();
    let alpha = config("alpha", &["beta"]).replace(
        "      B: {depends_on: [A]}",
        "      B: {depends_on: [A]}\n  needs_eyes:\n    agents:\n      Needy: {depends_on: [beta/Eyes]}",
    ) + "  peer_grace: 30s\n";
    let beta = config("beta", &["alpha"]).replace(
        "      B: {depends_on: [A]}",
        "      B: {depends_on: [A]}\n  vision:\n    agents:\n      Eyes: {}",
    );
    let gpu = orch_gpu::FakeGpu::new().with_gpu(
        orch_core::gpu::class_by_name("NVIDIA GeForce RTX 4090").unwrap(),
        false,
    );
    let a = Harness::start_in(World::new().on(&net).with_gpu(gpu), &alpha).await;
    let mut b = Harness::start_in(World::new().on(&net), &beta).await;
    until_peer(&a, "beta", PeerState::Alive).await;
    a.client.group_start("needs_eyes").await.unwrap();
    settle(2_000).await;
    let needy = |agents: Vec<orch_api::AgentStatus>| {
        agents.into_iter().find(|x| x.agent == "Needy").unwrap()
    };
    let n = needy(a.client.agents(None).await.unwrap());
    assert_eq!(
        n.phase,
        Phase::Held {
            waiting_for: vec![Wait::RemoteAgent {
                host: "beta".into(),
                agent: "Eyes".into()
            }]
        }
    );
    // plan shows the wait and its state.
    let text = std::fs::read_to_string(a.config_path()).unwrap();
    let plan = a.client.plan("c.yaml", &text).await.unwrap();
    assert_eq!(plan.remote.len(), 1);
    assert_eq!(plan.remote[0].agent, "Needy");
    assert_eq!(plan.remote[0].state, orch_api::RemoteReadiness::NotReady);

    // Eyes comes up on beta: Needy starts.
    b.client.group_start("vision").await.unwrap();
    a.until("Needy runs", |s| s.agents.healthy == 1).await;
    // Eyes turns unhealthy there: Needy is stopped and held again.
    b.world.prober.set_healthy("Eyes", false);
    a.until("Needy held again", |s| s.agents.running == 0).await;
    assert!(matches!(
        needy(a.client.agents(None).await.unwrap()).phase,
        Phase::Held { .. }
    ));
    b.world.prober.set_healthy("Eyes", true);
    a.until("Needy back", |s| s.agents.healthy == 1).await;
    settle(1_000).await;
    let needy_events = |events: Vec<orch_api::Event>| {
        events
            .into_iter()
            .filter(|e| format!("{:?}", e.kind).contains("Needy"))
            .count()
    };
    let before = needy_events(a.events().await);
    // beta's daemon is lost and restarted while its agents run: Needy,
    // which needs beta's Eyes, runs through it untouched.
    net.cut("alpha", "beta");
    until_peer(&a, "beta", PeerState::Down).await;
    b.restart().await;
    net.heal("alpha", "beta");
    until_peer(&a, "beta", PeerState::Alive).await;
    settle(5_000).await;
    assert_eq!(a.status().await.agents.healthy, 1);
    assert_eq!(
        needy_events(a.events().await),
        before,
        "Needy was not stopped: {:?}",
        a.events().await
    );
    // beta goes down for good: Needy is held once the grace (30s) runs out
    // with no news, not before; back: started again.
    net.cut("alpha", "beta");
    until_peer(&a, "beta", PeerState::Down).await;
    let down_at = tokio::time::Instant::now();
    settle(25_000).await;
    assert_eq!(
        a.status().await.agents.healthy,
        1,
        "within the grace: {:#?}",
        a.events().await
    );
    a.until("Needy held after the grace", |s| s.agents.running == 0)
        .await;
    assert!(down_at.elapsed() >= Duration::from_secs(30));
    net.heal("alpha", "beta");
    a.until("Needy back after the partition", |s| s.agents.healthy == 1)
        .await;
}

#[tokio::test(start_paused = true)]
async fn a_peer_restarting_before_it_reaches_docker_says_nothing_of_its_agents_yet() {
    // beta's daemon restarts while its Docker Engine does not answer for a
    // while: until it has listed its containers and probed them, it must
    // not tell alpha that Eyes is not ready, or alpha would stop Needy.
    let net = MemNetwork::new();
    let alpha = config("alpha", &["beta"]).replace(
        "      B: {depends_on: [A]}",
        "      B: {depends_on: [A]}\n  needs_eyes:\n    agents:\n      Needy: {depends_on: [beta/Eyes]}",
    );
    let beta = config("beta", &["alpha"]).replace(
        "      B: {depends_on: [A]}",
        "      B: {depends_on: [A]}\n  vision:\n    agents:\n      Eyes: {}",
    );
    let a = Harness::start_in(World::new().on(&net), &alpha).await;
    let mut b = Harness::start_in(World::new().on(&net), &beta).await;
    until_peer(&a, "beta", PeerState::Alive).await;
    b.client.group_start("vision").await.unwrap();
    a.client.group_start("needs_eyes").await.unwrap();
    a.until("Needy runs", |s| s.agents.healthy == 1).await;
    let needy = a.container_of("Needy").await.unwrap();
    let events_before = a.events().await.len();

    b.world.rt.set_unreachable(true);
    b.restart().await;
    settle(3_000).await;
    b.world.rt.set_unreachable(false);
    b.until("Eyes adopted and healthy", |s| s.agents.healthy == 1)
        .await;
    settle(3_000).await;
    assert_eq!(
        a.container_of("Needy").await.as_deref(),
        Some(needy.as_str())
    );
    let after = a.events().await;
    let about_needy: Vec<_> = after[events_before..]
        .iter()
        .filter(|e| e.kind.replica().is_some_and(|r| r.agent == "Needy"))
        .collect();
    assert!(about_needy.is_empty(), "Needy was touched: {about_needy:?}");
}

#[tokio::test(start_paused = true)]
async fn a_command_for_another_host_continues_the_callers_trace_there() {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
    use tracing_subscriber::layer::SubscriberExt as _;

    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    // Every task of this test runs on this thread.
    let _guard = tracing::subscriber::set_default(subscriber);

    let net = MemNetwork::new();
    let a = Harness::start_in(World::new().on(&net), &config("alpha", &["beta"])).await;
    let b = Harness::start_in(World::new().on(&net), &config("beta", &["alpha"])).await;
    until_peer(&a, "beta", PeerState::Alive).await;
    until_peer(&b, "alpha", PeerState::Alive).await;

    let remote = a.client.clone().for_host(Some("beta".into()));
    remote.group_start("g").await.unwrap();
    b.until_ready().await;
    settle(500).await;

    let spans = exporter.get_finished_spans().unwrap();
    let named = |name: &str| {
        spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no `{name}` span in {:?}", names(&spans)))
    };
    fn names(spans: &[opentelemetry_sdk::trace::SpanData]) -> Vec<&str> {
        spans.iter().map(|s| s.name.as_ref()).collect()
    }
    // alpha's call, beta's handling of it, and the group start it made,
    // one trace, each the parent of the next.
    let call = named("remote_call");
    let command = named("remote_command");
    let start = named("group_start");
    let trace = call.span_context.trace_id();
    assert_eq!(command.span_context.trace_id(), trace);
    assert_eq!(start.span_context.trace_id(), trace);
    assert_eq!(command.parent_span_id, call.span_context.span_id());
    assert!(
        command.parent_span_is_remote,
        "the parent came over the bus"
    );
    assert_eq!(start.parent_span_id, command.span_context.span_id());
    // beta's agents started under that group start (B twice: its
    // container is created while it is held, and started once A is up).
    let agent_starts: Vec<_> = spans.iter().filter(|s| s.name == "agent_start").collect();
    assert!(agent_starts.len() >= 2, "{:?}", names(&spans));
    assert!(
        agent_starts
            .iter()
            .all(|s| s.span_context.trace_id() == trace)
    );
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_speaks_for_another_host_is_refused_and_counted() {
    use orch_federation::Bus as _;
    let net = MemNetwork::new();
    let a = Harness::start_in(World::new().on(&net), &config("alpha", &["beta"])).await;
    // beta: a bus of our own on the network, not a daemon.
    let beta_config = orch_config::load_str(
        "beta.yaml",
        &config("beta", &["alpha"]),
        &Default::default(),
    )
    .unwrap()
    .config;
    let bus_config =
        orch_federation::BusConfig::from_model("beta", beta_config.federation.as_ref().unwrap(), 1)
            .unwrap();
    let (beta, _inbox) = net.join(bus_config);
    until_peer(&a, "beta", PeerState::Alive).await;
    let decode_errors = |peers: Vec<orch_api::PeerStatus>| {
        peers
            .into_iter()
            .find(|p| p.name == "beta")
            .unwrap()
            .decode_errors
    };
    assert_eq!(decode_errors(a.client.peers().await.unwrap()), 0);

    // alpha's own snapshot and event, sent back by beta as its own.
    let alpha = a.client.fleet().await.unwrap().hosts.remove(0);
    let snapshot = serde_json::to_vec(&alpha.snapshot.unwrap()).unwrap();
    beta.publish_snapshot(snapshot.into(), None).unwrap();
    let event = a.events().await.remove(0);
    let batch = serde_json::to_vec(&[event.clone(), event]).unwrap();
    beta.publish_events(batch.into(), None).unwrap();
    settle(500).await;

    assert_eq!(
        decode_errors(a.client.peers().await.unwrap()),
        3,
        "a snapshot and two events of another host"
    );
    let fleet = a.client.fleet().await.unwrap();
    let seen = fleet.hosts.iter().find(|h| h.host == "beta").unwrap();
    assert!(seen.snapshot.is_none(), "the lie was not kept");
    // /metrics is published on its interval.
    settle(1500).await;
    let text = a.metrics().await;
    assert!(
        text.contains(
            "orchestrator_federation_decode_errors_total{host=\"alpha\",peer=\"beta\"} 3"
        ),
        "counted in /metrics too:\n{}",
        text.lines()
            .filter(|l| l.contains("decode"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
