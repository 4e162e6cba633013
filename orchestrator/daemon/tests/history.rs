//! `history` through the real client: the config the daemon started with,
//! each `apply` and `reload` kept as a numbered generation with who took
//! it, how, what it changed and how its rollout ended; only the newest
//! `generations_kept`; kept across a restart without a second `startup`.

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use orch_api::{GenerationOutcome, GenerationSource, GenerationView, Rescaled};
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
      Api: {replicas: 2, env: {LOG: info}}
      Worker: {replicas: 1}
"#;

/// CONFIG with Api's env and Worker's count changed.
fn second() -> String {
    CONFIG
        .replace("LOG: info", "LOG: debug")
        .replace("Worker: {replicas: 1}", "Worker: {replicas: 3}")
}

/// Who the test runs as, as the daemon names an operator.
fn me() -> String {
    let uid = nix::unistd::getuid();
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| format!("uid {uid}"))
}

/// Polls `history` until `cond` holds (virtual time).
async fn history_until(
    h: &Harness,
    what: &str,
    cond: impl Fn(&[GenerationView]) -> bool,
) -> Vec<GenerationView> {
    let mut last = Vec::new();
    // Each step of a rollout is watched for 30 s.
    for _ in 0..3000 {
        last = h.client.history().await.unwrap();
        if cond(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never: {what}\nhistory: {last:#?}");
}

#[tokio::test(start_paused = true)]
async fn startup_apply_and_reload_are_three_generations_with_their_changes() {
    let mut h = Harness::start(CONFIG).await;
    h.client.group_start("g").await.unwrap();
    h.until_ready().await;

    let started = h.client.history().await.unwrap();
    assert_eq!(started.len(), 1, "{started:#?}");
    let first = started[0].generation;
    assert_eq!(started[0].source, GenerationSource::Startup);
    assert_eq!(started[0].applied_by, "startup");
    assert_eq!(started[0].outcome, GenerationOutcome::Completed);

    // An apply: Api recreated, Worker rescaled.
    let applied = h.client.apply("new.yaml", &second()).await.unwrap();
    assert_eq!(applied.generation, first + 1);
    h.until_ready().await;
    let after_apply = history_until(&h, "the apply's rollout completes", |g| {
        g.first()
            .is_some_and(|g| g.outcome == GenerationOutcome::Completed)
    })
    .await;
    let newest = &after_apply[0];
    assert_eq!(newest.generation, first + 1);
    assert_eq!(newest.source, GenerationSource::Apply);
    assert_eq!(newest.applied_by, me());
    assert_eq!(newest.changes.recreated, ["Api"]);
    assert_eq!(
        newest.changes.rescaled,
        [Rescaled {
            agent: "Worker".into(),
            from: 1,
            to: 3
        }]
    );
    assert_eq!(
        orch_api::text::generation_changes(&newest.changes),
        "1 recreated, 1 rescaled"
    );

    // A reload of the file as it was: back to the first text.
    std::fs::write(h.config_path(), CONFIG).unwrap();
    h.client.reload().await.unwrap();
    h.until_ready().await;
    let all = h.client.history().await.unwrap();
    let sources: Vec<(u64, GenerationSource)> =
        all.iter().map(|g| (g.generation, g.source)).collect();
    assert_eq!(
        sources,
        [
            (first + 2, GenerationSource::Reload),
            (first + 1, GenerationSource::Apply),
            (first, GenerationSource::Startup),
        ]
    );
    assert_eq!(all[0].changes.recreated, ["Api"]);
    assert_eq!(
        all[0].changes.rescaled,
        [Rescaled {
            agent: "Worker".into(),
            from: 3,
            to: 1
        }]
    );
    // The texts are kept whole.
    let dir = h.generations_dir();
    let text = |n: u64| std::fs::read_to_string(dir.join(format!("gen-{n}.config"))).unwrap();
    assert_eq!(text(first), CONFIG);
    assert_eq!(text(first + 1), second());
    assert_eq!(text(first + 2), CONFIG);

    // A restart on the same config and state adds no generation.
    h.restart().await;
    let again = h.client.history().await.unwrap();
    assert_eq!(again.len(), 3, "{again:#?}");
    assert_eq!(again[0].generation, first + 2);
}

#[tokio::test(start_paused = true)]
async fn only_the_newest_kept_generations_stay() {
    let world = World {
        generations_kept: 2,
        ..World::new()
    };
    let h = Harness::start_in(world, CONFIG).await;
    for n in 2..=4 {
        let text = CONFIG.replace(
            "Worker: {replicas: 1}",
            &format!("Worker: {{replicas: {n}}}"),
        );
        h.client.apply("new.yaml", &text).await.unwrap();
    }
    let kept = h.client.history().await.unwrap();
    let numbers: Vec<u64> = kept.iter().map(|g| g.generation).collect();
    let newest = numbers[0];
    assert_eq!(numbers, [newest, newest - 1]);
    // Nothing started: nothing recreated, each generation completed.
    assert!(
        kept.iter()
            .all(|g| g.outcome == GenerationOutcome::Completed),
        "{kept:#?}"
    );
    let mut files: Vec<String> = std::fs::read_dir(h.generations_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    let want = |n: u64| [format!("gen-{n}.config"), format!("gen-{n}.json")];
    let mut expected: Vec<String> = [want(newest - 1), want(newest)].concat();
    expected.sort();
    assert_eq!(files, expected);
}

#[tokio::test(start_paused = true)]
async fn a_rollout_left_in_progress_by_the_last_daemon_completes_under_the_next() {
    let mut h = Harness::start(CONFIG).await;
    h.client.group_start("g").await.unwrap();
    h.until_ready().await;
    let applied = h.client.apply("new.yaml", &second()).await.unwrap();
    assert_eq!(applied.recreated, ["Api"]);
    h.until_ready().await;
    history_until(&h, "the rollout completes", |g| {
        g.first()
            .is_some_and(|g| g.outcome == GenerationOutcome::Completed)
    })
    .await;
    // The last daemon stopped before the rollout was done.
    h.stop().await;
    let meta = h
        .generations_dir()
        .join(format!("gen-{}.json", applied.generation));
    let text = std::fs::read_to_string(&meta).unwrap();
    let left = text.replace("\"completed\"", "\"in_progress\"");
    assert_ne!(left, text);
    std::fs::write(&meta, left).unwrap();

    h.restart().await;
    let after = history_until(&h, "the rollout completes", |g| {
        g.first()
            .is_some_and(|g| g.outcome == GenerationOutcome::Completed)
    })
    .await;
    assert_eq!(after.len(), 2, "no second startup: {after:#?}");
    assert_eq!(after[0].generation, applied.generation);
}
