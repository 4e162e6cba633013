//! `config_diff` and `plan` through the real client: the config file on
//! disk (what `reload` would apply) or a text against what runs, field by
//! field, with the counts set at run time; a text over the bound refused.

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use orch_api::{ClientError, ErrorCode};
use orch_daemon::testing::{Harness, World};

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
      Api: {replicas: 3, ports: ["8080"], env: {LOG: info}}
      Worker: {replicas: 1}
      Eyes: {gpu: {slice: mps, memory: 4g, compute: 25%}}
"#;

/// CONFIG with Api's image, env and ports, Worker's count and Eyes's GPU
/// request changed.
fn changed() -> String {
    CONFIG
        .replace(
            r#"Api: {replicas: 3, ports: ["8080"], env: {LOG: info}}"#,
            r#"Api: {replicas: 3, image: "orchestrator-agent:2", ports: ["8081"], env: {LOG: info, FOO: bar}}"#,
        )
        .replace("Worker: {replicas: 1}", "Worker: {replicas: 2}")
        .replace("memory: 4g", "memory: 6g")
}

async fn gpu_host() -> Harness {
    let class = orch_core::gpu::class_by_name("NVIDIA GeForce RTX 4090").unwrap();
    let world = World::new().with_gpu(orch_gpu::FakeGpu::new().with_gpu(class, false));
    let h = Harness::start_in(world, CONFIG).await;
    h.client.group_start("g").await.unwrap();
    h.until_ready().await;
    h
}

#[tokio::test(start_paused = true)]
async fn the_file_on_disk_against_what_runs_with_a_scaled_agent() {
    let h = gpu_host().await;
    h.client.scale("g", "Api", Some(5)).await.unwrap();
    let same = h.client.config_diff(None).await.unwrap();
    assert!(!same.has_changes(), "{same:?}");
    assert_eq!(
        orch_api::text::diff_lines(&same),
        ["Api: runs 5 replicas set by scale (file: 3); the apply keeps it"]
    );

    std::fs::write(h.config_path(), changed()).unwrap();
    let d = h.client.config_diff(None).await.unwrap();
    assert!(d.has_changes());
    assert_eq!(d.to, h.config_path().display().to_string());
    assert_eq!(
        orch_api::text::diff_lines(&d),
        [
            "Api: image orchestrator-agent:latest -> orchestrator-agent:2",
            "Api: env FOO added",
            "Api: ports 8080 -> 8081",
            "Api: recreated, one replica at a time",
            "Worker: replicas 1 -> 2",
            "Worker: 1 replica started",
            "Eyes: GPU request mps memory=4g compute=25% -> mps memory=6g compute=25%",
            "Eyes: recreated, one replica at a time",
            "Api: runs 5 replicas set by scale (file: 3); the apply keeps it",
        ]
    );
    // A text sent says the same as the file on disk.
    let sent = h
        .client
        .config_diff(Some(("new.yaml", &changed())))
        .await
        .unwrap();
    assert_eq!(sent.agents, d.agents);
    assert_eq!(sent.to, "new.yaml");
}

#[tokio::test(start_paused = true)]
async fn plan_reports_a_count_going_from_3_to_2() {
    let h = gpu_host().await;
    for _ in 0..100 {
        if h.client.gpu().await.unwrap().available {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let text = CONFIG.replace("replicas: 3", "replicas: 2");
    let plan = h.client.plan("new.yaml", &text).await.unwrap();
    let changes = plan.changes.unwrap();
    assert_eq!(changes.scaled, ["Api"]);
    assert!(changes.recreated.is_empty() && changes.added.is_empty());
    assert_eq!(
        orch_api::text::diff_lines(&plan.diff.unwrap()),
        ["Api: replicas 3 -> 2", "Api: 1 replica stopped"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_config_text_over_the_bound_is_refused() {
    let h = Harness::start(CONFIG).await;
    let big = format!(
        "{CONFIG}# {}\n",
        "x".repeat(orch_daemon::fleet::trust::CONFIG_BODY_LIMIT)
    );
    let err = h
        .client
        .config_diff(Some(("big.yaml", &big)))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Api(e) if e.code == ErrorCode::BadRequest && e.message.contains("4 MiB")),
        "{err:?}"
    );
    let other = CONFIG.replace("testhost", "elsewhere");
    let err = h
        .client
        .config_diff(Some(("other.yaml", &other)))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Api(e) if e.message.contains("elsewhere")),
        "{err:?}"
    );
}
