//! A daemon that forgets never stops a running agent: a lost or damaged
//! state is inferred from the running containers, `--fresh` is the one way
//! to start from nothing, and a state disk that refuses writes does not
//! stop supervision (see `orch_core::supervise::infer` and `store`).

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use orch_api::GroupState;
use orch_api::wire::EventKind;
use orch_daemon::testing::{CHAIN, Harness};
use orch_docker::fake::Op;

async fn started_and_ready() -> (Harness, Vec<String>) {
    let h = Harness::start(CHAIN).await;
    h.client.group_start("extra").await.unwrap();
    h.until_ready().await;
    let ids = h.world.rt.containers().into_iter().map(|c| c.id).collect();
    h.world.rt.take_calls();
    (h, ids)
}

fn inferred(events: &[orch_api::Event]) -> Vec<EventKind> {
    events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::StateInferred { .. }))
        .map(|e| e.kind.clone())
        .collect()
}

fn nothing_stopped_or_replaced(h: &Harness, ids: &[String]) {
    let after: Vec<String> = h.world.rt.containers().into_iter().map(|c| c.id).collect();
    assert_eq!(ids, after, "the same containers, none replaced");
    let ops = h.world.rt.ops();
    assert!(
        !ops.iter()
            .any(|o| matches!(o, Op::Create | Op::Start | Op::Stop | Op::Remove)),
        "{ops:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_lost_state_is_inferred_from_the_running_agents() {
    let (mut h, ids) = started_and_ready().await;
    h.world.store.lose();
    h.restart().await;
    let s = h.until_ready().await;
    nothing_stopped_or_replaced(&h, &ids);
    let started: Vec<&str> = s
        .groups
        .iter()
        .filter(|g| g.started)
        .map(|g| g.name.as_str())
        .collect();
    assert_eq!(started, ["base", "extra"]);
    assert_eq!(s.state.origin, "missing");
    assert_eq!(
        inferred(&h.events().await),
        [EventKind::StateInferred {
            origin: "missing".into(),
            adopted: 5,
            groups: vec!["base".into(), "extra".into()],
            unconfigured: 0,
        }]
    );
    // The inference is written down, so the next restart reads it.
    let saved = h.world.store.state().unwrap();
    assert_eq!(saved.started_groups.len(), 2);
    // Stopping them takes an operator.
    h.client.group_stop("extra", false).await.unwrap();
    h.until("extra stopped", |s| {
        s.groups
            .iter()
            .any(|g| g.name == "extra" && g.state == GroupState::Stopped)
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_damaged_state_is_kept_aside_and_inferred() {
    let (mut h, ids) = started_and_ready().await;
    let before = h.world.store.state().unwrap();
    h.world.store.damage();
    h.restart().await;
    let s = h.until_ready().await;
    nothing_stopped_or_replaced(&h, &ids);
    assert_eq!(s.state.origin, "damaged");
    assert_eq!(h.world.store.kept_aside(), [before]);
    assert_eq!(
        inferred(&h.events().await),
        [EventKind::StateInferred {
            origin: "damaged".into(),
            adopted: 5,
            groups: vec!["base".into(), "extra".into()],
            unconfigured: 0,
        }]
    );
}

#[tokio::test(start_paused = true)]
async fn a_stopped_group_is_not_brought_back_by_its_leftovers() {
    let (mut h, _) = started_and_ready().await;
    h.client.group_stop("extra", false).await.unwrap();
    h.until("extra stopped", |s| {
        s.groups
            .iter()
            .any(|g| g.name == "extra" && g.state == GroupState::Stopped)
    })
    .await;
    h.restart().await;
    let s = h.until_ready().await;
    assert!(inferred(&h.events().await).is_empty());
    let started: Vec<&str> = s
        .groups
        .iter()
        .filter(|g| g.started)
        .map(|g| g.name.as_str())
        .collect();
    assert_eq!(started, ["base"]);
}

#[tokio::test(start_paused = true)]
async fn fresh_stops_every_agent_and_says_so() {
    let (mut h, _) = started_and_ready().await;
    h.restart_fresh().await;
    let s = h
        .until("every agent stopped", |s| {
            s.agents.running == 0 && s.groups.iter().all(|g| g.state == GroupState::Stopped)
        })
        .await;
    assert_eq!(s.state.origin, "fresh");
    let events = h.events().await;
    assert!(
        events
            .iter()
            .any(|e| e.kind == EventKind::FreshStart { stopping: 5 }),
        "{events:#?}"
    );
    assert!(inferred(&events).is_empty());
    assert!(h.world.rt.containers().is_empty());
    assert!(h.world.store.state().unwrap().started_groups.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_state_disk_that_refuses_writes_does_not_stop_supervision() {
    let h = Harness::start(CHAIN).await;
    h.world.store.fail_writes(true);
    h.client.group_start("base").await.unwrap();
    let s = h.until_ready().await;
    assert!(s.state.write_error.as_deref().unwrap().contains("memory"));
    assert!(s.state.failed_writes >= 1);
    assert_eq!(h.world.store.saves(), 0);

    // A crash is still restarted.
    let flaky = h.container_of("Flaky").await.unwrap();
    h.world.rt.exit(&flaky, 3).unwrap();
    h.until("Flaky restarted", |s| {
        s.agents.running == 3 && s.agents.healthy == 3
    })
    .await;
    let restarted = h
        .events()
        .await
        .iter()
        .any(|e| matches!(&e.kind, EventKind::AgentRestarting { .. }));
    assert!(restarted);

    // The disk comes back: the state is written without anyone asking.
    h.world.store.fail_writes(false);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let s = h.status().await;
    assert_eq!(s.state.write_error, None);
    let saved = h.world.store.state().unwrap();
    assert!(saved.started_groups.contains("base"));
    let kinds: Vec<&str> = h
        .events()
        .await
        .iter()
        .map(|e| e.kind.name())
        .filter(|n| n.starts_with("state-"))
        .collect();
    // One failure reported (not one per retry), then one recovery.
    assert_eq!(kinds, ["state-write-failed", "state-written"]);
}
