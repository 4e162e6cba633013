//! Who uses the GPUs: processes the fake NVML lists, mapped to containers
//! through fake cgroup files, shown as agents' use in `agents`, `gpu` and
//! `/metrics`, and the rest as unowned.

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use orch_core::units::ByteSize;
use orch_daemon::testing::{CHAIN, Harness, World};
use orch_gpu::{GpuProcess, ProcessKind, ProcessSample};

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

#[tokio::test(start_paused = true)]
async fn an_agents_processes_are_its_gpu_use_and_the_others_unowned() {
    let class = orch_core::gpu::class_by_name("NVIDIA GeForce RTX 4090").unwrap();
    let world = World::new().with_gpu(orch_gpu::FakeGpu::new().with_gpu(class, false));
    let config = format!(
        "{CHAIN}  vision:\n    agents:\n      Eyes: {{gpu: {{slice: mps, memory: 4g, compute: 25%}}}}\n"
    );
    let h = Harness::start_in(world, &config).await;
    h.client.group_start("vision").await.unwrap();
    h.until_ready().await;
    let eyes = h.container_of("Eyes").await.unwrap();
    let stray = "b".repeat(64);

    let gpu = h.world.gpu.as_deref().unwrap();
    gpu.set_processes(
        0,
        vec![
            process(100, 1024),
            process(101, 512),
            process(200, 256),
            process(300, 128),
        ],
    );
    gpu.set_process_utilization(
        0,
        vec![ProcessSample {
            pid: 100,
            sm_percent: 40,
            memory_percent: 10,
            encoder_percent: 0,
            decoder_percent: 0,
            samples: 6,
            newest_us: 1_000,
        }],
    );
    let cg = &h.world.cgroups;
    // Docker's systemd driver on cgroup v2, and cgroupfs on v1.
    cg.set(100, &format!("0::/system.slice/docker-{eyes}.scope\n"));
    cg.set(
        101,
        &format!("12:memory:/docker/{eyes}\n1:name=systemd:/docker/{eyes}\n"),
    );
    cg.set(200, &format!("0::/docker/{stray}\n"));
    cg.set(300, "0::/user.slice/user-1000.slice/session-2.scope\n");
    // The GPU worker is a thread of its own: wait for its sample (the
    // paused clock runs ahead while the owner waits on it).
    let mut agents = Vec::new();
    for _ in 0..600 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        agents = h.client.agents(Some("vision")).await.unwrap();
        if agents[0].gpu_use.is_some() {
            break;
        }
    }
    let used = agents[0].gpu_use.unwrap();
    assert_eq!(used.memory_used_bytes, 1536 * MIB);
    assert_eq!(used.memory_limit_bytes, Some(4096 * MIB));
    assert_eq!(used.share_basis_points, Some(3750));
    assert_eq!(used.utilization_basis_points, Some(4000));
    assert!(used.per_process);
    let base = h.client.agents(Some("base")).await.unwrap();
    assert!(base.iter().all(|a| a.gpu_use.is_none()));

    let report = h.client.gpu().await.unwrap();
    let g = &report.gpus[0];
    assert_eq!(g.usage.len(), 1);
    assert_eq!(g.usage[0].replica.agent, "Eyes");
    assert_eq!(g.usage[0].processes, 2);
    let unowned: Vec<_> = g
        .unowned
        .iter()
        .map(|p| (p.pid, p.memory_used_bytes, p.container.clone()))
        .collect();
    assert_eq!(
        unowned,
        [
            (200, Some(256 * MIB), Some("b".repeat(12))),
            (300, Some(128 * MIB), None),
        ]
    );

    let mut text = String::new();
    for _ in 0..600 {
        text = h.metrics().await;
        if text.contains("orchestrator_agent_gpu_memory_used_bytes{") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for line in [
        format!(
            "orchestrator_agent_gpu_memory_used_bytes{{host=\"testhost\",group=\"vision\",agent=\"Eyes\",replica=\"0\",gpu=\"0\"}} {}",
            1536 * MIB
        ),
        format!(
            "orchestrator_agent_gpu_memory_limit_bytes{{host=\"testhost\",group=\"vision\",agent=\"Eyes\",replica=\"0\",gpu=\"0\"}} {}",
            4096 * MIB
        ),
        "orchestrator_agent_gpu_utilization_ratio{host=\"testhost\",group=\"vision\",agent=\"Eyes\",replica=\"0\",gpu=\"0\"} 0.4".to_string(),
        format!("orchestrator_gpu_unowned_memory_bytes{{host=\"testhost\",gpu=\"0\",uuid=\"{}\"}} {}", g.info.uuid, 384 * MIB),
    ] {
        assert!(text.contains(&line), "no {line} in\n{text}");
    }

    // The agent's processes exit: its use is gone at the next sample.
    gpu.set_processes(0, vec![process(300, 128)]);
    for _ in 0..600 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let agents = h.client.agents(Some("vision")).await.unwrap();
        if agents[0].gpu_use.is_none() {
            return;
        }
    }
    panic!("the agent's GPU use outlives its processes");
}

#[tokio::test(start_paused = true)]
async fn a_peers_snapshot_carries_who_uses_its_gpus() {
    use orch_daemon::testing::federation_section;
    let config = |name: &str, peer: &str, gpu: bool| {
        let agent = if gpu {
            "Eyes: {gpu: {slice: mps, memory: 4g, compute: 25%}}"
        } else {
            "Ears: {}"
        };
        format!(
            "version: 1\nhost: {{name: {name}}}\ndefaults:\n  image: orchestrator-agent:latest\n  health: {{http: {{port: 8080}}, interval: 500ms, timeout: 1s, retries: 2, start_period: 5s}}\n  stop_timeout: 2s\ngroups:\n  vision:\n    agents:\n      {agent}\n"
        ) + &federation_section(&[peer])
    };
    let net = orch_federation::MemNetwork::new();
    let class = orch_core::gpu::class_by_name("NVIDIA GeForce RTX 4090").unwrap();
    let a = Harness::start_in(World::new().on(&net), &config("alpha", "beta", false)).await;
    let b = Harness::start_in(
        World::new()
            .on(&net)
            .with_gpu(orch_gpu::FakeGpu::new().with_gpu(class, false)),
        &config("beta", "alpha", true),
    )
    .await;
    b.client.group_start("vision").await.unwrap();
    b.until_ready().await;
    let eyes = b.container_of("Eyes").await.unwrap();
    let gpu = b.world.gpu.as_deref().unwrap();
    gpu.set_processes(0, vec![process(100, 2048), process(300, 64)]);
    b.world
        .cgroups
        .set(100, &format!("0::/system.slice/docker-{eyes}.scope\n"));

    // alpha's view of beta, from beta's latest snapshot.
    for _ in 0..600 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let fleet = a.client.fleet().await.unwrap();
        let Some(snap) = fleet
            .hosts
            .iter()
            .find(|h| h.host == "beta")
            .and_then(|h| h.snapshot.as_ref())
        else {
            continue;
        };
        let Some(g) = snap.gpu.gpus.first() else {
            continue;
        };
        if g.usage.is_empty() {
            continue;
        }
        assert_eq!(g.usage[0].replica.agent, "Eyes");
        assert_eq!(g.usage[0].memory_used_bytes, 2048 * MIB);
        assert_eq!(g.unowned.len(), 1);
        assert_eq!(g.unowned[0].pid, 300);
        let eyes = snap.agents.iter().find(|x| x.agent == "Eyes").unwrap();
        assert_eq!(eyes.gpu_use.unwrap().memory_used_bytes, 2048 * MIB);
        return;
    }
    panic!("alpha never saw beta's GPU use");
}

#[tokio::test(start_paused = true)]
async fn on_a_mig_gpu_the_limit_is_the_profiles_memory_and_utilisation_the_gpus() {
    let class = orch_core::gpu::class_by_name("NVIDIA A100-SXM4-40GB").unwrap();
    let world = World::new().with_gpu(orch_gpu::FakeGpu::new().with_gpu(class, true));
    let config = format!(
        "{CHAIN}  vision:\n    agents:\n      Eyes: {{gpu: {{slice: mig, profile: 1g.5gb}}}}\n"
    );
    let h = Harness::start_in(world, &config).await;
    h.client.group_start("vision").await.unwrap();
    h.until_ready().await;
    let eyes = h.container_of("Eyes").await.unwrap();
    let gpu = h.world.gpu.as_deref().unwrap();
    gpu.set_telemetry(
        0,
        orch_core::gpu::Telemetry {
            memory_used: Some(ByteSize(1024 * MIB)),
            gpu_utilization: Some(35),
            memory_utilization: Some(10),
            temperature_c: Some(50),
            power_mw: Some(100_000),
        },
    );
    let mut p = process(100, 1024);
    p.gpu_instance_id = Some(7);
    p.compute_instance_id = Some(0);
    gpu.set_processes(0, vec![p]);
    h.world
        .cgroups
        .set(100, &format!("0::/system.slice/docker-{eyes}.scope\n"));
    for _ in 0..600 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let agents = h.client.agents(Some("vision")).await.unwrap();
        let Some(used) = agents[0].gpu_use else {
            continue;
        };
        let Some(orch_api::wire::Slice::Mig { memory_bytes, .. }) = &agents[0].slice else {
            panic!("{:?}", agents[0].slice);
        };
        assert_eq!(used.memory_used_bytes, 1024 * MIB);
        assert!(memory_bytes.is_some());
        assert_eq!(used.memory_limit_bytes, *memory_bytes);
        // NVML gives no per-process utilisation in MIG mode.
        assert!(!used.per_process);
        if used.utilization_basis_points == Some(3500) {
            return;
        }
    }
    panic!("the agent's GPU use never showed the GPU's utilisation");
}
