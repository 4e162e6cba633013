//! `scale` through the real client: containers come and go, the count is
//! state (a daemon restart keeps it), `--reset` goes back to the file's,
//! and a count the agent cannot run with is refused with nothing changed.

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use orch_api::{ClientError, ErrorCode, EventKind};
use orch_daemon::testing::Harness;
use orch_docker::ContainerRuntime;

const CONFIG: &str = r#"version: 1
host: {name: testhost}
defaults:
  image: orchestrator-agent:latest
  health: {http: {port: 8080}, interval: 500ms, timeout: 1s, retries: 2, start_period: 5s}
  stop_timeout: 2s
  min_healthy: 0s
groups:
  g:
    agents:
      Worker:
        autoscale: {min: 1, max: 4, cpu: 70%}
      Front:
        ports: ["9000:8080"]
"#;

/// The running containers of `agent`.
async fn running(h: &Harness, agent: &str) -> usize {
    let filter = orch_docker::LabelFilter::any().label("io.orchestrator.agent", agent);
    h.world
        .rt
        .list(&filter)
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.state.is_alive())
        .count()
}

#[tokio::test(start_paused = true)]
async fn scale_up_and_down_kept_across_a_restart_and_reset() {
    let mut h = Harness::start(CONFIG).await;
    h.client.group_start("g").await.unwrap();
    h.until_ready().await;
    assert_eq!(running(&h, "Worker").await, 1);

    let a = h.client.scale("g", "Worker", Some(3)).await.unwrap();
    assert!(a.message.contains("from 1 to 3"), "{}", a.message);
    h.until("three workers healthy", |s| s.agents.healthy == 4)
        .await;
    assert_eq!(running(&h, "Worker").await, 3);
    let events = h.events().await;
    assert!(events.iter().any(|e| matches!(
        &e.kind,
        EventKind::AgentScaled { agent, from: 1, to: 3, reset: false, .. } if agent == "Worker"
    )));
    let agents = h.client.agents(Some("g")).await.unwrap();
    let workers: Vec<_> = agents.iter().filter(|a| a.agent == "Worker").collect();
    assert_eq!(workers.len(), 3);
    assert!(workers.iter().all(|a| a.scaled
        == Some(orch_api::Scaled {
            replicas: 3,
            file_replicas: 1,
            by_autoscaler: false,
            cause: None,
        })));
    assert!(
        agents
            .iter()
            .filter(|a| a.agent == "Front")
            .all(|a| a.scaled.is_none())
    );
    let exported = h.client.state_export().await.unwrap();
    assert_eq!(exported.scale.get("Worker"), Some(&3));
    assert_eq!(
        h.status().await.scaled,
        [orch_api::ScaledAgent {
            group: "g".into(),
            agent: "Worker".into(),
            replicas: 3,
            file_replicas: 1,
            by_autoscaler: false,
        }]
    );

    // The count is state: a new daemon runs three, starting none anew.
    h.restart().await;
    h.until_ready().await;
    assert_eq!(running(&h, "Worker").await, 3);

    h.client.scale("g", "Worker", Some(2)).await.unwrap();
    h.until("two workers", |s| {
        s.agents.wanted == 3 && s.agents.healthy == 3
    })
    .await;
    assert_eq!(running(&h, "Worker").await, 2);

    let a = h.client.scale("g", "Worker", None).await.unwrap();
    assert!(a.message.contains("config file's count"), "{}", a.message);
    h.until("one worker", |s| {
        s.agents.wanted == 2 && s.agents.healthy == 2
    })
    .await;
    assert_eq!(running(&h, "Worker").await, 1);
    assert!(h.client.state_export().await.unwrap().scale.is_empty());
}

#[tokio::test(start_paused = true)]
async fn counts_the_agent_cannot_run_with_are_refused() {
    let h = Harness::start(CONFIG).await;
    h.client.group_start("g").await.unwrap();
    h.until_ready().await;
    let refused = |r: Result<orch_api::Accepted, ClientError>| match r {
        Err(ClientError::Api(e)) => e,
        other => panic!("{other:?}"),
    };
    let e = refused(h.client.scale("g", "Worker", Some(9)).await);
    assert_eq!(e.code, ErrorCode::Conflict);
    assert!(
        e.message.contains("autoscale bounds are 1 to 4"),
        "{}",
        e.message
    );
    let e = refused(h.client.scale("g", "Front", Some(2)).await);
    assert_eq!(e.code, ErrorCode::Conflict);
    assert!(e.message.contains("host port 9000"), "{}", e.message);
    let e = refused(h.client.scale("g", "Nope", Some(2)).await);
    assert_eq!(e.code, ErrorCode::NotFound);
    // Nothing changed.
    assert_eq!(running(&h, "Worker").await, 1);
    assert_eq!(running(&h, "Front").await, 1);
    assert!(h.client.state_export().await.unwrap().scale.is_empty());
}
