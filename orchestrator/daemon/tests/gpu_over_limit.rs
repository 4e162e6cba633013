//! `gpu.over_limit`: a replica whose processes (the fake NVML's, mapped to
//! its container through fake cgroup files) hold more memory than its MPS
//! share gets one event per episode; under `restart` it is restarted with
//! the reason `gpu_memory_exceeded` until it crash-loops.

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use orch_api::wire::{OverLimitAction, RestartReason};
use orch_api::{Event, EventKind};
use orch_core::units::ByteSize;
use orch_daemon::testing::{CHAIN, Harness, World};
use orch_gpu::{GpuProcess, ProcessKind};

const MIB: u64 = 1 << 20;

fn process(pid: u32, mib: u64) -> GpuProcess {
    GpuProcess {
        pid,
        used_memory: Some(ByteSize(mib * MIB)),
        gpu_instance_id: None,
        compute_instance_id: None,
        kind: ProcessKind::Compute,
    }
}

/// A daemon running `Eyes` on a 4g MPS share with `over_limit`, and a
/// process of its container holding `mib` on GPU 0.
async fn eyes_using(over_limit: &str, mib: u64) -> Harness {
    let class = orch_core::gpu::class_by_name("NVIDIA GeForce RTX 4090").unwrap();
    let world = World::new().with_gpu(orch_gpu::FakeGpu::new().with_gpu(class, false));
    let config = format!(
        "{CHAIN}  vision:\n    agents:\n      Eyes: {{gpu: {{slice: mps, memory: 4g, compute: 25%, over_limit: {over_limit}}}}}\n"
    );
    let h = Harness::start_in(world, &config).await;
    h.client.group_start("vision").await.unwrap();
    h.until_ready().await;
    let eyes = h.container_of("Eyes").await.unwrap();
    h.world
        .gpu
        .as_deref()
        .unwrap()
        .set_processes(0, vec![process(100, mib)]);
    h.world
        .cgroups
        .set(100, &format!("0::/system.slice/docker-{eyes}.scope\n"));
    h
}

fn overs(events: &[Event]) -> Vec<(u64, u64, OverLimitAction)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::AgentGpuOverLimit {
                replica,
                used_bytes,
                limit_bytes,
                action,
                gpu_index: 0,
                ..
            } if replica.agent == "Eyes" => Some((*used_bytes, *limit_bytes, *action)),
            _ => None,
        })
        .collect()
}

fn restarts(events: &[Event]) -> Vec<Option<RestartReason>> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::AgentRestarting {
                replica, reason, ..
            } if replica.agent == "Eyes" => Some(*reason),
            _ => None,
        })
        .collect()
}

/// Waits (virtual time) until the events satisfy `cond`.
async fn until_events(h: &Harness, what: &str, cond: impl Fn(&[Event]) -> bool) -> Vec<Event> {
    for _ in 0..6000 {
        let events = h.events().await;
        if cond(&events) {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let events: Vec<String> = h
        .events()
        .await
        .iter()
        .map(|e| e.kind.to_string())
        .collect();
    panic!("never: {what}\n{}", events.join("\n"));
}

#[tokio::test(start_paused = true)]
async fn warn_reports_an_episode_once_and_restarts_nothing() {
    let h = eyes_using("warn", 5 * 1024).await;
    let events = until_events(&h, "an over-limit event", |e| !overs(e).is_empty()).await;
    assert_eq!(
        overs(&events),
        [(5 * 1024 * MIB, 4 * 1024 * MIB, OverLimitAction::Warn)]
    );
    // Many samples later (one every 5 s), still the one episode.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let events = h.events().await;
    assert_eq!(overs(&events).len(), 1);
    assert!(restarts(&events).is_empty());
    let text = events
        .iter()
        .find(|e| matches!(e.kind, EventKind::AgentGpuOverLimit { .. }))
        .unwrap()
        .kind
        .to_string();
    assert_eq!(
        text,
        "vision/Eyes: GPU memory over its limit on GPU 0: 5g used of 4g; it runs on (over_limit: warn)"
    );

    // Back under, then over again: a second episode.
    let gpu = h.world.gpu.as_deref().unwrap();
    gpu.set_processes(0, vec![process(100, 1024)]);
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(overs(&h.events().await).len(), 1);
    gpu.set_processes(0, vec![process(100, 6 * 1024)]);
    let events = until_events(&h, "a second episode", |e| overs(e).len() == 2).await;
    assert!(restarts(&events).is_empty());
}

#[tokio::test(start_paused = true)]
async fn restart_restarts_with_its_reason_until_it_crash_loops() {
    let h = eyes_using("restart", 5 * 1024).await;
    // The fake GPU keeps listing the process for the restarted container:
    // each run goes over again, and is restarted again.
    let events = until_events(&h, "Eyes crash-looping", |e| {
        e.iter().any(|e| {
            matches!(&e.kind, EventKind::AgentCrashLoop { replica, .. } if replica.agent == "Eyes")
        })
    })
    .await;
    let reasons = restarts(&events);
    assert!(reasons.len() >= 3, "{reasons:?}");
    assert!(
        reasons
            .iter()
            .all(|r| *r == Some(RestartReason::GpuMemoryExceeded)),
        "{reasons:?}"
    );
    assert!(overs(&events).len() >= 3);
    assert!(
        overs(&events)
            .iter()
            .all(|o| o.2 == OverLimitAction::Restart)
    );
    let text = h.metrics().await;
    assert!(
        text.contains(
            r#"orchestrator_agent_failures_total{host="testhost",group="vision",agent="Eyes",reason="gpu_memory_exceeded"}"#
        ),
        "{text}"
    );
    let eyes = h.client.agents(Some("vision")).await.unwrap();
    assert!(eyes[0].crashloop);
    assert!(eyes[0].restarts >= 3);
}
