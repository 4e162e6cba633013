//! The spans of operator commands, local and from another host: every
//! Docker operation a command causes, however late it runs, is a child of
//! that command's span, in the trace of whoever asked (the real daemon on
//! fakes, in process, under a paused clock, spans kept in memory).

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use orch_api::PeerState;
use orch_daemon::testing::{Harness, World, federation_section};
use orch_federation::MemNetwork;
use tracing_subscriber::layer::SubscriberExt as _;

/// Host `name`: group `g` (A, then B) and group `h`, which depends on `g`.
fn config(name: &str, peers: &[&str], image: &str) -> String {
    let text = format!(
        r#"version: 1
host: {{name: {name}}}
defaults:
  image: {image}
  health: {{http: {{port: 8080}}, interval: 500ms, timeout: 1s, retries: 2, start_period: 5s}}
  stop_timeout: 2s
groups:
  g:
    agents:
      A: {{}}
      B: {{depends_on: [A]}}
  h:
    depends_on: [g]
    agents:
      C: {{}}
"#
    );
    if peers.is_empty() {
        text
    } else {
        text + &federation_section(peers)
    }
}

async fn settle(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Spans kept in memory; the subscriber is this thread's (every task of a
/// test runs on it).
fn traced() -> (InMemorySpanExporter, tracing::subscriber::DefaultGuard) {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    (exporter, tracing::subscriber::set_default(subscriber))
}

fn names(spans: &[SpanData]) -> Vec<String> {
    spans
        .iter()
        .map(|s| {
            let replica = s
                .attributes
                .iter()
                .find(|kv| kv.key.as_str() == "replica")
                .map(|kv| kv.value.as_str().into_owned())
                .unwrap_or_default();
            format!("{} {replica}", s.name)
        })
        .collect()
}

fn one<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    let found: Vec<_> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "`{name}` in {:?}", names(spans));
    found[0]
}

/// The operation spans (`agent_*`) named `name`, by replica.
fn ops<'a>(spans: &'a [SpanData], name: &str) -> Vec<(String, &'a SpanData)> {
    let mut found: Vec<_> = spans
        .iter()
        .filter(|s| s.name == name)
        .map(|s| {
            let replica = s
                .attributes
                .iter()
                .find(|kv| kv.key.as_str() == "replica")
                .map(|kv| kv.value.as_str().into_owned())
                .unwrap_or_default();
            (replica, s)
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

/// Every span named `name` is a child of `parent`, and there are some for
/// exactly `replicas`.
fn children_of(spans: &[SpanData], name: &str, parent: &SpanData, replicas: &[&str]) {
    let found = ops(spans, name);
    let mut seen: Vec<&str> = found.iter().map(|(r, _)| r.as_str()).collect();
    seen.dedup();
    assert_eq!(seen, replicas, "`{name}` in {:?}", names(spans));
    for (r, s) in &found {
        assert_eq!(
            s.span_context.trace_id(),
            parent.span_context.trace_id(),
            "{name} {r}: {:?}",
            names(spans)
        );
        assert_eq!(
            s.parent_span_id,
            parent.span_context.span_id(),
            "{name} {r} under {}",
            parent.name
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_remote_restart_with_dependents_is_one_trace_down_to_each_container() {
    let (exporter, _guard) = traced();
    let net = MemNetwork::new();
    let image = "orchestrator-agent:latest";
    let a = Harness::start_in(World::new().on(&net), &config("alpha", &["beta"], image)).await;
    let b = Harness::start_in(World::new().on(&net), &config("beta", &["alpha"], image)).await;
    for (h, peer) in [(&a, "beta"), (&b, "alpha")] {
        for _ in 0..600 {
            let peers = h.client.peers().await.unwrap();
            if peers
                .iter()
                .any(|p| p.name == peer && p.state == PeerState::Alive)
            {
                break;
            }
            settle(50).await;
        }
    }
    b.client.group_start("h").await.unwrap();
    b.until_ready().await;
    settle(500).await;
    exporter.reset();

    let remote = a.client.clone().for_host(Some("beta".into()));
    remote.group_restart("g", true).await.unwrap();
    b.until_ready().await;
    settle(500).await;

    let spans = exporter.get_finished_spans().unwrap();
    let call = one(&spans, "remote_call");
    let command = one(&spans, "remote_command");
    let restart = one(&spans, "group_restart");
    let trace: TraceId = call.span_context.trace_id();
    assert_eq!(command.span_context.trace_id(), trace);
    assert_eq!(command.parent_span_id, call.span_context.span_id());
    assert_eq!(restart.parent_span_id, command.span_context.span_id());
    // Both groups' replicas stopped, then started again, all under the
    // restart: g's and its dependent h's.
    children_of(&spans, "agent_stop", restart, &["A", "B", "C"]);
    children_of(&spans, "agent_start", restart, &["A", "B", "C"]);
    // Nothing else of beta's started a trace of its own meanwhile.
    let roots: Vec<_> = spans
        .iter()
        .filter(|s| s.parent_span_id == SpanId::INVALID && s.name != "remote_call")
        .filter(|s| s.name.starts_with("agent_"))
        .collect();
    assert!(roots.is_empty(), "{:?}", names(&spans));
}

#[tokio::test(start_paused = true)]
async fn local_commands_parent_the_operations_they_cause() {
    let (exporter, _guard) = traced();
    let image = "orchestrator-agent:latest";
    let h = Harness::start_in(World::new(), &config("solo", &[], image)).await;
    h.client.group_start("h").await.unwrap();
    h.until_ready().await;
    settle(500).await;

    // group start: g comes with h, every first start under it.
    let spans = exporter.get_finished_spans().unwrap();
    let start = one(&spans, "group_start");
    children_of(&spans, "agent_start", start, &["A", "B", "C"]);

    // agent restart: the agent's stop and start.
    exporter.reset();
    h.client.agent_restart("g", "B").await.unwrap();
    h.until("B restarted", |s| {
        s.groups
            .iter()
            .all(|g| g.state == orch_api::GroupState::Ready)
            && s.agents.healthy == s.agents.wanted
    })
    .await;
    settle(2000).await;
    let spans = exporter.get_finished_spans().unwrap();
    let restart = one(&spans, "agent_restart");
    // B's container restarted in place, and nothing else happened.
    children_of(&spans, "container_restart", restart, &["B"]);
    assert!(ops(&spans, "agent_start").is_empty(), "{:?}", names(&spans));
    assert!(ops(&spans, "agent_stop").is_empty(), "{:?}", names(&spans));

    // The restart is over: the supervisor's own restart of a sick B
    // belongs to no command.
    exporter.reset();
    h.world.prober.set_healthy("B", false);
    h.until("B sick", |s| s.agents.healthy < s.agents.wanted)
        .await;
    h.world.prober.set_healthy("B", true);
    h.until_ready().await;
    settle(2000).await;
    let spans = exporter.get_finished_spans().unwrap();
    let own: Vec<_> = ["agent_start", "agent_stop", "container_restart"]
        .iter()
        .flat_map(|n| ops(&spans, n))
        .collect();
    assert!(!own.is_empty(), "{:?}", names(&spans));
    for (r, s) in own {
        assert_eq!(
            s.parent_span_id,
            SpanId::INVALID,
            "{r}: {:?}",
            names(&spans)
        );
    }

    // apply: a new default image recreates every agent under the apply.
    exporter.reset();
    let changed = config("solo", &[], "orchestrator-agent:v2");
    h.client.apply("new.yaml", &changed).await.unwrap();
    h.until("everything recreated", |s| {
        s.groups
            .iter()
            .all(|g| g.state == orch_api::GroupState::Ready)
            && s.agents.healthy == s.agents.wanted
    })
    .await;
    // Each agent's rollout: a surge replica (#1) first, watched, then the
    // replica itself.
    settle(120_000).await;
    let spans = exporter.get_finished_spans().unwrap();
    let apply = one(&spans, "apply");
    children_of(
        &spans,
        "agent_start",
        apply,
        &["A", "A#1", "B", "B#1", "C", "C#1"],
    );

    // group stop: every replica's stop under it; then, with nothing left
    // to do, a crash restart would be a trace of its own (none here).
    exporter.reset();
    h.client.group_stop("g", true).await.unwrap();
    h.until("stopped", |s| s.agents.running == 0).await;
    settle(500).await;
    let spans = exporter.get_finished_spans().unwrap();
    let stop = one(&spans, "group_stop");
    children_of(&spans, "agent_stop", stop, &["A", "B", "C"]);
}

#[tokio::test(start_paused = true)]
async fn a_command_in_a_group_that_stays_ready_ends_when_its_work_is_done() {
    let (exporter, _guard) = traced();
    let text = r#"version: 1
host: {name: solo}
defaults:
  image: orchestrator-agent:latest
  health: {http: {port: 8080}, interval: 500ms, timeout: 1s, retries: 2, start_period: 5s}
  stop_timeout: 2s
groups:
  g:
    agents:
      A: {}
      Helper: {required: false}
"#;
    let h = Harness::start_in(World::new(), text).await;
    h.client.group_start("g").await.unwrap();
    h.until_ready().await;
    settle(500).await;

    // Restarting the optional Helper never makes g unready: its work is
    // over when Helper runs again, with no ready event to say so.
    exporter.reset();
    h.client.agent_restart("g", "Helper").await.unwrap();
    settle(3000).await;
    h.until_ready().await;
    let spans = exporter.get_finished_spans().unwrap();
    let restart = one(&spans, "agent_restart");
    children_of(&spans, "container_restart", restart, &["Helper"]);

    // So the supervisor's own restart of a sick Helper afterwards is a
    // trace of its own.
    exporter.reset();
    h.world.prober.set_healthy("Helper", false);
    h.until("Helper sick", |s| s.agents.healthy < s.agents.wanted)
        .await;
    h.world.prober.set_healthy("Helper", true);
    h.until_ready().await;
    settle(2000).await;
    let spans = exporter.get_finished_spans().unwrap();
    let own: Vec<_> = ["agent_start", "agent_stop", "container_restart"]
        .iter()
        .flat_map(|n| ops(&spans, n))
        .collect();
    assert!(!own.is_empty(), "{:?}", names(&spans));
    for (r, s) in own {
        assert_eq!(
            s.parent_span_id,
            SpanId::INVALID,
            "{r}: {:?}",
            names(&spans)
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_rolling_recreate_stays_in_its_apply_trace_from_first_replica_to_last() {
    let (exporter, _guard) = traced();
    let text = |image: &str| {
        format!(
            r#"version: 1
host: {{name: solo}}
defaults:
  image: {image}
  health: {{http: {{port: 8080}}, interval: 500ms, timeout: 1s, retries: 2, start_period: 5s}}
  stop_timeout: 2s
groups:
  g:
    agents:
      A: {{replicas: 3}}
"#
        )
    };
    let h = Harness::start_in(World::new(), &text("orchestrator-agent:latest")).await;
    h.client.group_start("g").await.unwrap();
    h.until_ready().await;
    settle(500).await;

    // A surge replica (#3) first, then one replica at a time, each after
    // the one before is healthy and watched (30 s): all under the apply.
    exporter.reset();
    h.client
        .apply("new.yaml", &text("orchestrator-agent:v2"))
        .await
        .unwrap();
    settle(180_000).await;
    h.until_ready().await;
    let spans = exporter.get_finished_spans().unwrap();
    let apply = one(&spans, "apply");
    children_of(&spans, "agent_start", apply, &["A", "A#1", "A#2", "A#3"]);
}
