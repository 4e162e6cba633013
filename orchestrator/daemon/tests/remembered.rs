//! What a daemon restart keeps of the product's own account: restart
//! counts come back exactly (they are state), so `agents` and
//! `orchestrator_agent_restarts_total` go on from where they were; the
//! recent events are shown again and numbering goes on; and `/metrics`
//! says nothing of groups or peers before the new daemon knows them.

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use orch_daemon::testing::{CHAIN, Harness};

async fn restarts_of(h: &Harness, agent: &str) -> u64 {
    h.client
        .agents(Some("base"))
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.agent == agent)
        .map(|a| a.restarts)
        .unwrap()
}

fn metric(text: &str, agent: &str) -> Option<String> {
    text.lines()
        .find(|l| {
            l.starts_with("orchestrator_agent_restarts_total{")
                && l.contains(&format!("agent=\"{agent}\""))
        })
        .and_then(|l| l.rsplit_once(' '))
        .map(|(_, v)| v.to_string())
}

#[tokio::test(start_paused = true)]
async fn restart_counts_survive_a_daemon_restart() {
    let mut h = Harness::start(CHAIN).await;
    h.client.group_start("base").await.unwrap();
    h.until_ready().await;
    for n in 1..=2 {
        let id = h.container_of("Flaky").await.unwrap();
        h.world.rt.exit(&id, 1).unwrap();
        for _ in 0..600 {
            if restarts_of(&h, "Flaky").await == n {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(restarts_of(&h, "Flaky").await, n);
        h.until_ready().await;
    }
    assert_eq!(h.world.store.state().unwrap().restarts["Flaky#0"], 2);

    h.restart().await;
    h.until_ready().await;
    assert_eq!(restarts_of(&h, "Flaky").await, 2);
    assert_eq!(restarts_of(&h, "Mid").await, 0);
    // The first snapshot the new daemon publishes already has the count.
    let first = loop {
        if let Some(v) = metric(&h.metrics().await, "Flaky") {
            break v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(first, "2");
}

#[tokio::test(start_paused = true)]
async fn the_event_history_survives_a_daemon_restart_and_numbering_goes_on() {
    let mut h = Harness::start(CHAIN).await;
    h.client.group_start("base").await.unwrap();
    h.until_ready().await;
    let before = h.events().await;
    let last = before.last().unwrap().seq;
    assert!(before.len() > 5, "{before:?}");

    h.restart().await;
    h.until_ready().await;
    let after = h.events().await;
    assert_eq!(
        &after[..before.len()],
        &before[..],
        "the old events are shown again, as they were"
    );
    let new: Vec<u64> = after[before.len()..].iter().map(|e| e.seq).collect();
    assert!(!new.is_empty(), "the new daemon says something");
    assert!(new.iter().all(|s| *s > last), "{new:?} after {last}");
    assert!(new.windows(2).all(|w| w[1] == w[0] + 1), "{new:?}");
    assert_eq!(new[0], last + 1, "numbering goes on without a gap");
}

#[tokio::test(start_paused = true)]
async fn events_are_kept_while_the_daemon_runs_not_only_at_shutdown() {
    let h = Harness::start(CHAIN).await;
    h.client.group_start("base").await.unwrap();
    h.until_ready().await;
    let seen = h.events().await;
    // Written at most a second after they happened (virtual time).
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let kept = h.world.store.events();
    assert_eq!(
        kept.events.last().map(|e| e.seq),
        seen.last().map(|e| e.seq)
    );
    // Written while running: a daemon killed now would number on past
    // anything it might have said since.
    assert!(kept.next_seq > seen.last().unwrap().seq + 1);
}

#[tokio::test(start_paused = true)]
async fn a_restarted_daemon_publishes_its_groups_only_once_it_knows_them() {
    let mut h = Harness::start(CHAIN).await;
    h.client.group_start("base").await.unwrap();
    h.until_ready().await;
    h.restart().await;
    // Scrape from the first instant: until the group's series appear, only
    // the daemon's own families are there; the first time they appear the
    // group is ready, as it was all along.
    let ready = r#"orchestrator_group_ready{host="testhost",group="base"}"#;
    let mut scrapes = 0;
    let first = loop {
        let text = h.metrics().await;
        scrapes += 1;
        if let Some(line) = text.lines().find(|l| l.starts_with(ready)) {
            break line.to_string();
        }
        assert!(text.contains("orchestrator_build_info"), "{text}");
        assert!(
            !text.contains("orchestrator_agent_up{"),
            "no agent series before they are known: {text}"
        );
        assert!(scrapes < 1000, "never published");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(first, format!("{ready} 1"));
}

/// A host named `name` whose peers are `peers`, with nothing started.
fn federated(name: &str, peers: &[&str]) -> String {
    format!(
        r#"version: 1
host: {{name: {name}}}
defaults:
  image: orchestrator-agent:latest
groups:
  g:
    agents:
      A: {{}}
"#
    ) + &orch_daemon::testing::federation_section(peers)
}

#[tokio::test(start_paused = true)]
async fn peer_series_wait_for_the_first_heartbeat_window_after_a_restart() {
    use orch_daemon::testing::World;
    let net = orch_federation::MemNetwork::new();
    let mut a = Harness::start_in(World::new().on(&net), &federated("alpha", &["beta"])).await;
    let _b = Harness::start_in(World::new().on(&net), &federated("beta", &["alpha"])).await;
    // The first heartbeat window: heartbeat (500ms) × suspect_after (2).
    let window = std::time::Duration::from_secs(1);
    let restarted = tokio::time::Instant::now();
    a.restart().await;
    let up = r#"orchestrator_peer_up{host="alpha",peer="beta"}"#;
    let mut scrapes = 0;
    let first = loop {
        let text = a.metrics().await;
        scrapes += 1;
        let line = text.lines().find(|l| l.starts_with(up));
        if restarted.elapsed() < window {
            assert_eq!(line, None, "no peer series in the first window");
        }
        if let Some(line) = line {
            break line.to_string();
        }
        assert!(scrapes < 1000, "never published");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(first, format!("{up} 1"), "beta was alive all along");
}
