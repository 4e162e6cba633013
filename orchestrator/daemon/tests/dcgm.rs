//! dcgm-exporter's job mapping files on the fakes: the directory holds one
//! file per GPU (and MIG instance) listing the replicas running there,
//! after start, restart, scale, stop and a daemon restart; CPU agents
//! have none.

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use orch_daemon::testing::{CHAIN, Harness, World};

const MANIFEST: &str = orch_daemon::dcgm::dir::MANIFEST;

/// The directory's files but the manifest, with their lines.
fn files(h: &Harness) -> BTreeMap<String, Vec<String>> {
    let Ok(entries) = std::fs::read_dir(h.dcgm_dir()) else {
        return BTreeMap::new();
    };
    entries
        .map(|e| e.unwrap())
        .map(|e| e.file_name().into_string().unwrap())
        .filter(|n| n != MANIFEST)
        .map(|n| {
            let text = std::fs::read_to_string(h.dcgm_dir().join(&n)).unwrap_or_default();
            (n, text.lines().map(str::to_string).collect())
        })
        .collect()
}

fn expect(rows: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
    rows.iter()
        .map(|(n, lines)| (n.to_string(), lines.iter().map(|l| l.to_string()).collect()))
        .collect()
}

/// Waits until the directory holds `want`. The writer is a task of its
/// own writing on a blocking thread: the paused clock runs ahead while
/// this waits on it.
async fn until_files(h: &Harness, what: &str, want: &BTreeMap<String, Vec<String>>) {
    for _ in 0..600 {
        if &files(h) == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never: {what}\nwanted {want:?}\nfound {:?}", files(h));
}

fn mps_world() -> World {
    let class = orch_core::gpu::class_by_name("NVIDIA GeForce RTX 4090").unwrap();
    World::new()
        .with_gpu(orch_gpu::FakeGpu::new().with_gpu(class, false))
        .with_dcgm_job_mapping()
}

const VISION: &str = "  vision:\n    agents:\n      Eyes: {replicas: 2, gpu: {slice: mps, memory: 4g, compute: 25%}}\n      Solo: {gpu: {slice: mps, memory: 4g, compute: 25%}}\n";

#[tokio::test(start_paused = true)]
async fn the_files_follow_the_running_agents() {
    let mut h = Harness::start_in(mps_world(), &format!("{CHAIN}{VISION}")).await;
    // CPU agents hold no GPU: no file for them.
    h.client.group_start("base").await.unwrap();
    h.until_ready().await;

    h.client.group_start("vision").await.unwrap();
    h.until_ready().await;
    let all = expect(&[(
        "0",
        &[
            "testhost/vision/Eyes#0",
            "testhost/vision/Eyes#1",
            "testhost/vision/Solo",
        ],
    )]);
    until_files(&h, "the started agents listed", &all).await;

    // A restarted agent is listed again once its container runs again.
    h.client.agent_restart("vision", "Solo").await.unwrap();
    for _ in 0..600 {
        let agents = h.client.agents(Some("vision")).await.unwrap();
        if agents.iter().any(|a| a.agent == "Solo" && a.restarts > 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    h.until_ready().await;
    let agents = h.client.agents(Some("vision")).await.unwrap();
    assert!(agents.iter().any(|a| a.agent == "Solo" && a.restarts == 1));
    until_files(&h, "the restarted agent listed", &all).await;

    // One replica left: no longer qualified.
    h.client.scale("vision", "Eyes", Some(1)).await.unwrap();
    let one = expect(&[("0", &["testhost/vision/Eyes", "testhost/vision/Solo"])]);
    until_files(&h, "the scaled-down agent listed once", &one).await;

    // A new daemon adopts the running agents and keeps their files.
    h.restart().await;
    h.until_ready().await;
    until_files(&h, "the adopted agents listed", &one).await;

    h.client.group_stop("vision", false).await.unwrap();
    until_files(&h, "the GPU's file removed", &BTreeMap::new()).await;
    // The manifest is written after the removal.
    let manifest = || std::fs::read_to_string(h.dcgm_dir().join(MANIFEST)).unwrap();
    for _ in 0..600 {
        if manifest().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(manifest(), "");
}

#[tokio::test(start_paused = true)]
async fn a_file_another_program_wrote_is_left_alone() {
    let h = Harness::start_in(mps_world(), &format!("{CHAIN}{VISION}")).await;
    h.until("Docker listed", |s| s.docker.connected).await;
    std::fs::create_dir_all(h.dcgm_dir()).unwrap();
    std::fs::write(h.dcgm_dir().join("0"), "slurm-job-9\n").unwrap();
    h.client.group_start("vision").await.unwrap();
    h.until_ready().await;
    h.client.group_stop("vision", false).await.unwrap();
    h.until("vision stopped", |s| s.agents.wanted == 0).await;
    // Whatever the daemon wanted of GPU 0, the file is the other's.
    until_files(
        &h,
        "the other's file kept",
        &expect(&[("0", &["slurm-job-9"])]),
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_mig_agent_is_in_its_instance_file_and_its_gpus() {
    let class = orch_core::gpu::class_by_name("NVIDIA A100-SXM4-40GB").unwrap();
    let world = World::new()
        .with_gpu(orch_gpu::FakeGpu::new().with_gpu(class, true))
        .with_dcgm_job_mapping();
    let config = format!(
        "{CHAIN}  vision:\n    agents:\n      Eyes: {{gpu: {{slice: mig, profile: 1g.5gb}}}}\n"
    );
    let h = Harness::start_in(world, &config).await;
    h.client.group_start("vision").await.unwrap();
    h.until_ready().await;
    for _ in 0..600 {
        let found = files(&h);
        let names: Vec<&String> = found.keys().collect();
        if names.len() == 2 {
            assert_eq!(names[0], "0");
            let (gpu, gi) = names[1].split_once('.').unwrap();
            assert_eq!(gpu, "0");
            assert!(gi.parse::<u32>().is_ok(), "{gi}");
            for lines in found.values() {
                assert_eq!(lines, &["testhost/vision/Eyes"]);
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never two files: {:?}", files(&h));
}
