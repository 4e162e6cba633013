//! Each replica's CPU use, read from a recorded cgroup tree (cgroup v2,
//! Docker's systemd driver): shown in `agents` once two readings exist, as
//! a share of one core and of the agent's `resources.cpus`, and in
//! `/metrics` as a counter of seconds.

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use orch_daemon::testing::{CHAIN, Harness, World};

fn set_usage(root: &Path, container: &str, usec: u64) {
    let dir = root.join(format!("system.slice/docker-{container}.scope"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("cpu.stat"),
        format!("usage_usec {usec}\nuser_usec {usec}\nsystem_usec 0\n"),
    )
    .unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_replicas_cgroup_counter_is_its_cpu_use() {
    let tree = tempfile::tempdir().unwrap();
    let mut world = World::new();
    world.cgroup_root = Some(tree.path().to_path_buf());
    // A directory that is no container's is not read as one.
    set_usage(tree.path(), "not-a-container", 1);
    let config = format!("{CHAIN}  vision:\n    agents:\n      Eyes: {{resources: {{cpus: 2}}}}\n");
    let h = Harness::start_in(world, &config).await;
    h.client.group_start("vision").await.unwrap();
    h.until_ready().await;
    let eyes = h.container_of("Eyes").await.unwrap();
    set_usage(tree.path(), &eyes, 1_000_000);

    // The first reading: a counter, and no share yet.
    let series = "orchestrator_agent_cpu_seconds_total{host=\"testhost\",group=\"vision\",agent=\"Eyes\",replica=\"0\"}";
    let mut text = String::new();
    for _ in 0..600 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        text = h.metrics().await;
        if text.contains(series) {
            break;
        }
    }
    assert!(text.contains(&format!("{series} 1\n")), "{text}");
    assert!(text.contains("# TYPE orchestrator_agent_cpu_seconds_total counter"));
    let agents = h.client.agents(Some("vision")).await.unwrap();
    assert_eq!(agents[0].cpu_percent, None);

    // Half a core from now on (in steps of the paused clock), for longer
    // than two intervals: the last figure covers a whole interval of it.
    let mut usec = 1_000_000;
    for _ in 0..110 {
        usec += 50_000;
        set_usage(tree.path(), &eyes, usec);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let agents = h.client.agents(Some("vision")).await.unwrap();
    let percent = agents[0]
        .cpu_percent
        .expect("a CPU figure after two readings");
    assert!((45.0..=55.0).contains(&percent), "{percent}");
    assert_eq!(
        agents[0].cpu_limit_percent,
        Some((percent / 2.0 * 10.0).round() / 10.0)
    );
    let base = h.client.agents(Some("base")).await.unwrap();
    assert!(base.iter().all(|a| a.cpu_percent.is_none()));

    // A new container under the same id (its counter went back): no
    // figure, never a negative one.
    set_usage(tree.path(), &eyes, 10);
    for _ in 0..600 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let agents = h.client.agents(Some("vision")).await.unwrap();
        if agents[0].cpu_percent.is_none() {
            return;
        }
        assert!(agents[0].cpu_percent.unwrap() >= 0.0);
    }
    panic!("a counter that went back still has a figure");
}
