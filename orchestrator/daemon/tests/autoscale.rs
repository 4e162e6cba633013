//! Autoscaling through the real daemon on fakes: CPU read from the fake
//! engine's stats, a gauge from the agents' scraped metrics, decisions
//! carried out as `scale` (persisted, shown by `agents`), and a scale-up
//! the GPU planner cannot place refused with its reason, going as far as
//! the GPU holds.

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use orch_api::{AutoscaleCause, EventKind};
use orch_daemon::testing::{Harness, World};
use orch_docker::ContainerRuntime;

const CPU: &str = r#"version: 1
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
        resources: {cpus: 1}
        autoscale: {min: 1, max: 4, cpu: 50%, up_after: 10s, down_after: 20s, reverse_after: 40s}
"#;

/// The running containers of `agent`, by id.
async fn running(h: &Harness, agent: &str) -> Vec<String> {
    let filter = orch_docker::LabelFilter::any().label("io.orchestrator.agent", agent);
    h.world
        .rt
        .list(&filter)
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.state.is_alive())
        .map(|c| c.id)
        .collect()
}

/// Every running replica of `agent` keeps `cores` CPUs busy.
async fn load(h: &Harness, agent: &str, cores: f64) {
    for id in running(h, agent).await {
        h.world.rt.set_cpu_load(&id, cores).unwrap();
    }
}

async fn wait_event(h: &Harness, what: &str, mut f: impl FnMut(&EventKind) -> bool) -> EventKind {
    for _ in 0..600 {
        if let Some(e) = h.events().await.into_iter().find(|e| f(&e.kind)) {
            return e.kind;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("no event: {what}; events: {:#?}", h.events().await);
}

#[tokio::test(start_paused = true)]
async fn cpu_load_scales_up_then_down_and_the_count_is_state() {
    let mut h = Harness::start(CPU).await;
    h.client.group_start("g").await.unwrap();
    h.until_ready().await;
    let started = tokio::time::Instant::now();
    // One and a half cores against 50% of one: three replicas.
    load(&h, "Worker", 1.5).await;
    let up = wait_event(
        &h,
        "scale-up",
        |k| matches!(k, EventKind::AgentAutoscaled { agent, .. } if agent == "Worker"),
    )
    .await;
    let EventKind::AgentAutoscaled {
        from, to, cause, ..
    } = &up
    else {
        unreachable!()
    };
    assert_eq!((*from, *to), (1, 3), "{up:?}");
    match cause {
        AutoscaleCause::Signal {
            signal,
            value,
            target,
            recommended,
            bounded,
        } => {
            assert_eq!(signal, "cpu");
            assert!((value - 150.0).abs() < 5.0, "{value}");
            assert_eq!((*target, *recommended, *bounded), (50.0, 3, false));
        }
        other => panic!("{other:?}"),
    }
    // Not before the signal held for `up_after`.
    assert!(started.elapsed() >= Duration::from_secs(10));
    h.until("three workers healthy", |s| s.agents.healthy == 3)
        .await;
    assert_eq!(running(&h, "Worker").await.len(), 3);
    let agents = h.client.agents(Some("g")).await.unwrap();
    let s = agents[0].scaled.clone().unwrap();
    assert!(s.by_autoscaler && s.replicas == 3, "{s:?}");
    assert!(matches!(s.cause, Some(AutoscaleCause::Signal { .. })));
    assert_eq!(
        agents[0].autoscale,
        Some(orch_api::AutoscaleRange { min: 1, max: 4 })
    );
    assert_eq!(
        h.client.state_export().await.unwrap().scale.get("Worker"),
        Some(&3)
    );

    // The count is state: a new daemon keeps three, said to be the
    // autoscaler's (why is the last run's to know).
    h.restart().await;
    h.until_ready().await;
    assert_eq!(running(&h, "Worker").await.len(), 3);
    let s = h.client.agents(Some("g")).await.unwrap()[0]
        .scaled
        .clone()
        .unwrap();
    assert!(s.by_autoscaler && s.cause.is_none(), "{s:?}");

    // Idle replicas: back to one, once the load has been low for
    // `down_after` and `reverse_after` has passed since the scale-up.
    let idle_from = tokio::time::Instant::now();
    load(&h, "Worker", 0.05).await;
    let down = wait_event(&h, "scale-down", |k| {
        matches!(k, EventKind::AgentAutoscaled { to: 1, .. })
    })
    .await;
    assert!(idle_from.elapsed() >= Duration::from_secs(20), "{down:?}");
    h.until("one worker", |s| {
        s.agents.wanted == 1 && s.agents.healthy == 1
    })
    .await;
    assert_eq!(running(&h, "Worker").await.len(), 1);
    // The CPU came from the engine's stats, one read per replica per round.
    let reads = h
        .world
        .rt
        .calls()
        .iter()
        .filter(|c| matches!(c, orch_docker::fake::Call::CpuUsage { .. }))
        .count();
    assert!(reads >= 4, "{reads}");
}

const QUEUE: &str = r#"version: 1
host: {name: testhost}
defaults:
  image: orchestrator-agent:latest
  health: {http: {port: 8080}, interval: 500ms, timeout: 1s, retries: 2, start_period: 5s}
  stop_timeout: 2s
  min_healthy: 0s
groups:
  g:
    agents:
      Queue:
        autoscale:
          min: 1
          max: 5
          metric: {name: agent_queue_depth, per_replica: 10, shared: true}
          up_after: 5s
"#;

#[tokio::test(start_paused = true)]
async fn a_shared_queue_gauge_sizes_the_agent_to_its_per_replica_target() {
    let h = Harness::start(QUEUE).await;
    h.world.metrics.set_gauge("Queue", "agent_queue_depth", 2.0);
    h.client.group_start("g").await.unwrap();
    h.until_ready().await;
    // Two waiting for one replica: within the target, nothing changes.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(
        !h.events()
            .await
            .iter()
            .any(|e| matches!(e.kind, EventKind::AgentAutoscaled { .. }))
    );
    // 35 waiting, 10 per replica: four.
    h.world
        .metrics
        .set_gauge("Queue", "agent_queue_depth", 35.0);
    let up = wait_event(&h, "scale-up on the gauge", |k| {
        matches!(k, EventKind::AgentAutoscaled { .. })
    })
    .await;
    assert!(
        matches!(
            &up,
            EventKind::AgentAutoscaled {
                from: 1,
                to: 4,
                cause: AutoscaleCause::Signal { signal, value, .. },
                ..
            } if signal == "metric" && *value == 35.0
        ),
        "{up:?}"
    );
    h.until("four replicas", |s| s.agents.healthy == 4).await;
    // The shared gauge reads 35 on every replica: four stay four.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let changes = h
        .events()
        .await
        .iter()
        .filter(|e| matches!(e.kind, EventKind::AgentAutoscaled { .. }))
        .count();
    assert_eq!(changes, 1);
}

#[tokio::test(start_paused = true)]
async fn a_scale_up_the_gpu_cannot_hold_is_refused_once_with_the_planners_reason() {
    let class = orch_core::gpu::class_by_name("NVIDIA GeForce RTX 4090").unwrap();
    let world = World::new().with_gpu(orch_gpu::FakeGpu::new().with_gpu(class, false));
    let config = r#"version: 1
host: {name: testhost}
defaults:
  image: orchestrator-agent:latest
  health: {http: {port: 8080}, interval: 500ms, timeout: 1s, retries: 2, start_period: 5s}
  stop_timeout: 2s
  min_healthy: 0s
groups:
  vision:
    agents:
      Eyes:
        gpu: {slice: mps, memory: 10g, compute: 25%}
        resources: {cpus: 1}
        autoscale: {min: 1, max: 4, cpu: 100%, up_after: 5s}
"#;
    let h = Harness::start_in(world, config).await;
    h.client.group_start("vision").await.unwrap();
    h.until_ready().await;
    // Four cores against one each: four replicas of 10g on a 24 GiB card.
    load(&h, "Eyes", 4.0).await;
    let refused = wait_event(&h, "refusal", |k| {
        matches!(k, EventKind::AgentAutoscaleRefused { .. })
    })
    .await;
    let EventKind::AgentAutoscaleRefused {
        from, to, reason, ..
    } = &refused
    else {
        unreachable!()
    };
    assert_eq!((*from, *to), (1, 4));
    assert!(reason.contains("Eyes"), "{reason}");
    // As many as the card holds: two of 10g on 24 GiB.
    let partial = wait_event(&h, "a partial scale-up", |k| {
        matches!(k, EventKind::AgentAutoscaled { .. })
    })
    .await;
    assert!(
        matches!(partial, EventKind::AgentAutoscaled { from: 1, to: 2, .. }),
        "{partial:?}"
    );
    h.until("two replicas", |s| s.agents.healthy == 2).await;
    // Still wanting four: said once more from two, then not again.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(running(&h, "Eyes").await.len(), 2);
    let said: Vec<(u32, u32)> = h
        .events()
        .await
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::AgentAutoscaleRefused { from, to, .. } => Some((from, to)),
            _ => None,
        })
        .collect();
    assert_eq!(said, [(1, 4), (2, 4)]);
    assert_eq!(
        h.client.state_export().await.unwrap().scale.get("Eyes"),
        Some(&2)
    );
}

const LATENCY: &str = r#"version: 1
host: {name: testhost}
defaults:
  image: orchestrator-agent:latest
  health: {http: {port: 8080}, interval: 500ms, timeout: 1s, retries: 2, start_period: 5s}
  stop_timeout: 2s
  min_healthy: 0s
groups:
  g:
    slo: {latency_p99: 1s}
    agents:
      Slow:
        autoscale: {min: 1, max: 3, latency_slo: true, up_after: 10s}
"#;

#[tokio::test(start_paused = true)]
async fn a_burning_latency_slo_adds_a_replica() {
    let h = Harness::start(LATENCY).await;
    h.client.group_start("g").await.unwrap();
    h.until_ready().await;
    // Half the requests slower than 5 s against 1% allowed over 1 s.
    let metrics = h.world.metrics.clone();
    let feeder = tokio::spawn(async move {
        loop {
            metrics.serve("Slow", 100, 0, 50);
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    });
    let up = wait_event(&h, "a scale-up on the latency SLO", |k| {
        matches!(k, EventKind::AgentAutoscaled { .. })
    })
    .await;
    feeder.abort();
    match &up {
        EventKind::AgentAutoscaled {
            from: 1,
            to: 2,
            cause:
                AutoscaleCause::Signal {
                    signal,
                    value,
                    target,
                    ..
                },
            ..
        } => {
            assert_eq!(signal, "latency-slo");
            assert!(*value > 1.0, "{up:?}");
            assert_eq!(*target, 1.0);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn an_mps_clients_own_gpu_utilisation_scales_it() {
    let class = orch_core::gpu::class_by_name("NVIDIA GeForce RTX 4090").unwrap();
    let world = World::new().with_gpu(orch_gpu::FakeGpu::new().with_gpu(class, false));
    let config = r#"version: 1
host: {name: testhost}
defaults:
  image: orchestrator-agent:latest
  health: {http: {port: 8080}, interval: 500ms, timeout: 1s, retries: 2, start_period: 5s}
  stop_timeout: 2s
  min_healthy: 0s
groups:
  vision:
    agents:
      Eyes:
        gpu: {slice: mps, memory: 4g, compute: 25%}
        autoscale: {min: 1, max: 3, gpu_util: 20%, up_after: 10s}
"#;
    let h = Harness::start_in(world, config).await;
    h.client.group_start("vision").await.unwrap();
    h.until_ready().await;
    let eyes = h.container_of("Eyes").await.unwrap();
    let gpu = h.world.gpu.as_deref().unwrap();
    // Its own process keeps 40% of the GPU busy (NVML per process):
    // against 20%, two replicas.
    gpu.set_processes(
        0,
        vec![orch_gpu::GpuProcess {
            pid: 100,
            used_memory: Some(orch_core::units::ByteSize(1 << 30)),
            gpu_instance_id: None,
            compute_instance_id: None,
            kind: orch_gpu::ProcessKind::Compute,
        }],
    );
    gpu.set_process_utilization(
        0,
        vec![orch_gpu::ProcessSample {
            pid: 100,
            sm_percent: 40,
            memory_percent: 10,
            encoder_percent: 0,
            decoder_percent: 0,
            samples: 6,
            newest_us: 1_000,
        }],
    );
    h.world
        .cgroups
        .set(100, &format!("0::/system.slice/docker-{eyes}.scope\n"));
    let up = wait_event(&h, "a scale-up on the client's own utilisation", |k| {
        matches!(k, EventKind::AgentAutoscaled { .. })
    })
    .await;
    match &up {
        EventKind::AgentAutoscaled {
            from: 1,
            to: 2,
            cause: AutoscaleCause::Signal { signal, value, .. },
            ..
        } => {
            assert_eq!(signal, "gpu-util");
            assert_eq!(*value, 40.0, "{up:?}");
        }
        other => panic!("{other:?}"),
    }
}
