//! What a daemon restart keeps of the product's own account: restart
//! counts come back exactly (they are state), so `agents` and
//! `orchestrator_agent_restarts_total` go on from where they were.

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
    assert_eq!(metric(&h.metrics().await, "Flaky").as_deref(), Some("2"));
}
