//! MPS-safe stops and MPS server faults, on the recording fakes: a
//! container of an MPS agent has its MPS clients terminated through the
//! control daemon before Docker is asked to stop it (and no other agent's
//! clients are touched); a fault of one GPU's MPS server restarts that
//! GPU's MPS agents, once per fault episode, and nobody on the other GPU.

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use orch_api::{EventKind, GroupState};
use orch_core::container::labels;
use orch_daemon::testing::{Harness, World};
use orch_docker::fake::Call;
use orch_gpu::{FakeGpu, MpsCall, MpsGpu, MpsServerStatus};

/// A terminated client's pid, and the containers Docker was asked to stop
/// by the time it was terminated.
type Terminated = (u32, Vec<String>);

fn two_gpus() -> World {
    let class = orch_core::gpu::class_by_name("NVIDIA GeForce RTX 4090").unwrap();
    World::new().with_gpu(FakeGpu::new().with_gpu(class, false).with_gpu(class, false))
}

const HEAD: &str = r#"version: 1
host: {name: testhost}
defaults:
  image: orchestrator-agent:latest
  restart: {policy: on-failure, backoff: {initial: 200ms, max: 2s}, crashloop: {restarts: 3, window: 1m}}
  health: {http: {port: 8080}, interval: 500ms, timeout: 1s, retries: 2, start_period: 5s}
  stop_timeout: 2s
groups:
"#;

/// The GPU UUID of a container's slice, from its label.
fn gpu_of(h: &Harness, id: &str) -> Option<String> {
    let info = h.world.rt.containers().into_iter().find(|c| c.id == id)?;
    let slice = info.labels.get(labels::GPU_SLICE)?;
    slice
        .split(':')
        .find(|part| part.starts_with("GPU-"))
        .map(str::to_string)
}

fn mps_gpu(h: &Harness, uuid: &str) -> MpsGpu {
    orch_daemon::gpu::mps_gpu(&h.dir.path().join("mps"), uuid)
}

fn in_container(h: &Harness, pid: u32, id: &str) {
    h.world
        .cgroups
        .set(pid, &format!("0::/system.slice/docker-{id}.scope\n"));
}

/// The ids of the containers Docker (the fake) was asked to stop, in order.
fn stops(h: &Harness) -> Vec<String> {
    h.world
        .rt
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::Stop { id, .. } => Some(id),
            _ => None,
        })
        .collect()
}

/// Waits (virtual time) until `cond` holds of the events so far.
async fn until_events(h: &Harness, what: &str, cond: impl Fn(&[EventKind]) -> bool) {
    for _ in 0..1200 {
        let kinds: Vec<EventKind> = h.events().await.into_iter().map(|e| e.kind).collect();
        if cond(&kinds) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never: {what}");
}

/// How many times the status of MPS server `pid` was read.
fn status_reads(h: &Harness, pid: u32) -> usize {
    h.world
        .mps
        .calls()
        .iter()
        .filter(|c| matches!(c, MpsCall::ServerStatus { server_pid, .. } if *server_pid == pid))
        .count()
}

/// Waits (virtual time) until server `pid`'s status was read `n` more
/// times: the news of the first of them has reached the owner's queue
/// once the second begins.
async fn until_read_again(h: &Harness, pid: u32, n: usize) {
    let from = status_reads(h, pid);
    for _ in 0..1200 {
        if status_reads(h, pid) >= from + n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("server {pid} was not read {n} more time(s)");
}

/// Waits (virtual time) until Docker was asked to stop `id` `n` times.
async fn until_stopped(h: &Harness, id: &str, n: usize) {
    for _ in 0..1200 {
        if stops(h).iter().filter(|s| *s == id).count() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{id} was never stopped {n} time(s): {:?}", stops(h));
}

#[tokio::test(start_paused = true)]
async fn an_mps_agents_clients_are_terminated_before_its_container_is_stopped() {
    let config = format!(
        "{HEAD}  vision:\n    agents:\n      Eyes: {{gpu: {{slice: mps, memory: 4g, compute: 25%}}}}\n      Whole: {{gpu: exclusive}}\n      Plain: {{}}\n"
    );
    let h = Harness::start_in(two_gpus(), &config).await;
    h.client.group_start("vision").await.unwrap();
    h.until_ready().await;
    let eyes = h.container_of("Eyes").await.unwrap();
    let whole = h.container_of("Whole").await.unwrap();
    let plain = h.container_of("Plain").await.unwrap();
    let uuid = gpu_of(&h, &eyes).unwrap();
    let g = mps_gpu(&h, &uuid);
    in_container(&h, 100, &eyes);
    in_container(&h, 200, &whole);
    in_container(&h, 300, &plain);
    // The others' processes listed as clients too: only Eyes's may go.
    h.world.mps.add_server(&g, 900, &[100, 200, 300]);

    // At each terminate_client: which containers Docker was asked to stop
    // by then.
    let seen: Arc<Mutex<Vec<Terminated>>> = Arc::default();
    {
        let seen = seen.clone();
        let rt = h.world.rt.clone();
        h.world.mps.on_call(move |call| {
            if let MpsCall::TerminateClient { client_pid, .. } = call {
                let stopped = rt
                    .calls()
                    .into_iter()
                    .filter_map(|c| match c {
                        Call::Stop { id, .. } => Some(id),
                        _ => None,
                    })
                    .collect();
                seen.lock().unwrap().push((*client_pid, stopped));
            }
        });
    }

    // A restart stops the container first.
    h.client.agent_restart("vision", "Eyes").await.unwrap();
    until_stopped(&h, &eyes, 1).await;
    assert_eq!(*seen.lock().unwrap(), [(100, vec![])]);
    h.until_ready().await;

    // The restarted agent is a client again; the group stops.
    h.world.mps.add_server(&g, 901, &[101]);
    in_container(&h, 101, &eyes);
    h.client.group_stop("vision", false).await.unwrap();
    h.until("vision is stopped", |s| {
        s.groups
            .iter()
            .any(|g| g.name == "vision" && g.state == GroupState::Stopped)
    })
    .await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[1].0, 101);
    assert_eq!(
        seen[1].1.iter().filter(|s| **s == eyes).count(),
        1,
        "only the restart's stop came before: {seen:?}"
    );
    let all_stops = stops(&h);
    assert_eq!(all_stops.iter().filter(|s| **s == eyes).count(), 2);
    assert!(all_stops.contains(&whole) && all_stops.contains(&plain));
    assert_eq!(
        h.world.mps.terminated(),
        [(uuid.clone(), 900, 100), (uuid, 901, 101)],
        "the whole-GPU and CPU agents' processes are not terminated"
    );
}

#[tokio::test(start_paused = true)]
async fn a_fault_restarts_the_mps_agents_of_its_gpu_only_once_per_episode() {
    // Big and Other each take most of a GPU: they are on different ones.
    let config = format!(
        "{HEAD}  shared:\n    agents:\n      Big: {{gpu: {{slice: mps, memory: 16g, compute: 60%}}}}\n      Other: {{gpu: {{slice: mps, memory: 16g, compute: 60%}}}}\n      Small: {{gpu: {{slice: mps, memory: 2g, compute: 10%}}}}\n"
    );
    let h = Harness::start_in(two_gpus(), &config).await;
    h.client.group_start("shared").await.unwrap();
    h.until_ready().await;
    let mut on_gpu: Vec<(String, String, String)> = Vec::new();
    for agent in ["Big", "Other", "Small"] {
        let id = h.container_of(agent).await.unwrap();
        let uuid = gpu_of(&h, &id).unwrap();
        on_gpu.push((agent.to_string(), id, uuid));
    }
    let faulted = on_gpu[0].2.clone();
    assert_ne!(faulted, on_gpu[1].2, "Big and Other share no GPU");
    let (tenants, others): (Vec<_>, Vec<_>) =
        on_gpu.iter().cloned().partition(|(_, _, u)| *u == faulted);

    let g = mps_gpu(&h, &faulted);
    in_container(&h, 100, &on_gpu[0].1);
    h.world.mps.add_server(&g, 900, &[100]);
    h.world
        .mps
        .set_server_status(&g, 900, MpsServerStatus::Fault);
    let quiet = mps_gpu(&h, &on_gpu[1].2);
    in_container(&h, 200, &on_gpu[1].1);
    h.world.mps.add_server(&quiet, 950, &[200]);

    let faults = |kinds: &[EventKind]| -> Vec<EventKind> {
        kinds
            .iter()
            .filter(|k| matches!(k, EventKind::MpsServerFault { .. }))
            .cloned()
            .collect()
    };
    until_events(&h, "an MPS server fault", |k| !faults(k).is_empty()).await;
    for (_, id, _) in &tenants {
        until_stopped(&h, id, 1).await;
    }
    h.until_ready().await;
    // More samples while the server stays in FAULT: the same episode.
    until_read_again(&h, 900, 3).await;
    let kinds: Vec<EventKind> = h.events().await.into_iter().map(|e| e.kind).collect();
    let fault_events = faults(&kinds);
    assert_eq!(fault_events.len(), 1, "{fault_events:?}");
    let EventKind::MpsServerFault {
        gpu_uuid,
        client,
        clients_listed,
        restarting,
        ..
    } = &fault_events[0]
    else {
        unreachable!()
    };
    assert_eq!(*gpu_uuid, faulted);
    assert_eq!(*clients_listed, 1);
    let client = client.clone().unwrap();
    assert_eq!(client.pid, 100);
    assert_eq!(client.replica.unwrap().agent, "Big");
    let mut named: Vec<String> = restarting.iter().map(|r| r.agent.clone()).collect();
    named.sort();
    let mut wanted: Vec<String> = tenants.iter().map(|(a, _, _)| a.clone()).collect();
    wanted.sort();
    assert_eq!(named, wanted);
    let mut restarted: Vec<String> = kinds
        .iter()
        .filter_map(|k| match k {
            EventKind::AgentRestarted {
                replica, reason, ..
            } => {
                assert_eq!(reason.label(), "mps_server_fault");
                Some(replica.agent.clone())
            }
            _ => None,
        })
        .collect();
    restarted.sort();
    assert_eq!(restarted, wanted);
    let all_stops = stops(&h);
    for (agent, id, _) in &tenants {
        assert_eq!(all_stops.iter().filter(|s| *s == id).count(), 1, "{agent}");
    }
    for (agent, id, _) in &others {
        assert!(!all_stops.contains(id), "{agent} is on the other GPU");
    }
    assert!(
        h.world
            .mps
            .terminated()
            .iter()
            .all(|(u, _, _)| *u == faulted),
        "the other GPU's clients are untouched"
    );

    // The server recovers; a new fault is a new episode.
    h.world
        .mps
        .set_server_status(&g, 900, MpsServerStatus::Active);
    until_read_again(&h, 900, 2).await;
    h.world
        .mps
        .set_server_status(&g, 900, MpsServerStatus::Fault);
    until_events(&h, "a second fault", |k| faults(k).len() == 2).await;
}
