//! MPS server faults: the running MPS replicas of the faulted GPU restart
//! together, once per fault, without counting it as their failure; nobody
//! on another GPU is touched (`supervise::mps`).

use super::tests::{Harness, class, gpu_harness, k, mps};
use super::*;
use crate::gpu::{GpuInfo, Slice};

fn two_gpus() -> Vec<GpuInfo> {
    let c = class("NVIDIA GeForce RTX 4090");
    vec![
        GpuInfo::from_class(0, "GPU-0", c, false),
        GpuInfo::from_class(1, "GPU-1", c, false),
    ]
}

fn gpu_of(h: &Harness, agent: &str) -> String {
    match &h.s.replica(&k(agent)).unwrap().slice {
        Some(Slice::Mps { gpu_uuid, .. }) => gpu_uuid.clone(),
        other => panic!("{agent} has no MPS slice: {other:?}"),
    }
}

fn container(h: &Harness, agent: &str) -> String {
    h.s.replica(&k(agent))
        .unwrap()
        .container
        .as_ref()
        .unwrap()
        .id
        .clone()
}

/// A and B each take most of a GPU, so they run on different ones.
fn apart() -> Harness {
    let mut h = gpu_harness(&[("A", mps(16, 60)), ("B", mps(16, 60))]);
    h.apply(Input::Inventory { gpus: two_gpus() });
    h.cmd(|s| s.start_group(0, "g").unwrap());
    h.settle_healthy();
    h.take_log();
    assert_ne!(gpu_of(&h, "A"), gpu_of(&h, "B"));
    h
}

fn fault(gpu_uuid: &str, clients: &[(u32, Option<&str>)]) -> Input {
    Input::MpsServerFault(MpsFault {
        gpu_uuid: gpu_uuid.to_string(),
        clients: clients
            .iter()
            .map(|(pid, c)| MpsFaultClient {
                pid: *pid,
                container: c.map(str::to_string),
            })
            .collect(),
    })
}

#[test]
fn a_fault_restarts_the_mps_replicas_of_its_gpu_only() {
    let mut h = apart();
    let gpu = gpu_of(&h, "A");
    let a = container(&h, "A");
    let out = h.apply(fault(&gpu, &[(4242, Some(&a))]));
    assert_eq!(
        h.take_log(),
        ["restart A"],
        "B and Cpu are on no faulted GPU"
    );
    assert!(out.persist, "restart counts are state");
    let index = if gpu == "GPU-0" { 0 } else { 1 };
    assert!(out.events.contains(&SupervisorEvent::MpsServerFault {
        gpu_index: Some(index),
        gpu_uuid: gpu.clone(),
        client: Some(FaultingClient {
            pid: 4242,
            replica: Some(k("A")),
        }),
        clients_listed: 1,
        restarting: vec![k("A")],
    }));
    assert!(out.events.contains(&SupervisorEvent::AgentRestarted {
        replica: k("A"),
        group: "g".into(),
        reason: RestartCause::MpsServerFault { gpu_uuid: gpu },
    }));
    let r = h.s.replica(&k("A")).unwrap();
    assert_eq!(r.restarts_total, 1);
    h.settle_healthy();
    assert!(h.s.replica(&k("A")).unwrap().is_running());
}

#[test]
fn every_co_tenant_restarts_at_once_and_the_culprit_is_unknown_among_several() {
    let mut h = gpu_harness(&[("A", mps(4, 20)), ("B", mps(4, 20))]);
    let c = class("NVIDIA GeForce RTX 4090");
    h.apply(Input::Inventory {
        gpus: vec![GpuInfo::from_class(0, "GPU-0", c, false)],
    });
    h.cmd(|s| s.start_group(0, "g").unwrap());
    h.settle_healthy();
    h.take_log();
    let (a, b) = (container(&h, "A"), container(&h, "B"));
    let out = h.apply(fault("GPU-0", &[(10, Some(&a)), (11, Some(&b))]));
    let mut log = h.take_log();
    log.sort();
    assert_eq!(log, ["restart A", "restart B"]);
    let named = out.events.iter().find_map(|e| match e {
        SupervisorEvent::MpsServerFault {
            client,
            clients_listed,
            ..
        } => Some((client.clone(), *clients_listed)),
        _ => None,
    });
    assert_eq!(named, Some((None, 2)));
}

#[test]
fn fault_restarts_are_not_failures_and_never_make_a_crash_loop() {
    let mut h = apart();
    let gpu = gpu_of(&h, "A");
    // More faults than the crash-loop limit (3 restarts in a minute).
    for i in 0..6 {
        h.now += 1_000;
        h.apply(fault(&gpu, &[(100 + i, None)]));
        assert_eq!(h.take_log(), ["restart A"]);
        h.settle_healthy();
    }
    let r = h.s.replica(&k("A")).unwrap();
    assert_eq!(r.failures, 0);
    assert!(!r.crashloop);
    assert_eq!(r.restarts_total, 6);
}

#[test]
fn a_co_tenant_busy_with_an_operation_is_left_to_it() {
    let mut h = apart();
    let gpu = gpu_of(&h, "A");
    h.cmd(|s| s.restart_agent(0, "g", "A").unwrap());
    assert_eq!(h.take_log(), ["restart A"]);
    let out = h.apply(fault(&gpu, &[]));
    assert!(h.take_log().is_empty());
    assert!(out.events.iter().any(|e| matches!(
        e,
        SupervisorEvent::MpsServerFault { client: None, clients_listed: 0, restarting, .. }
            if restarting.is_empty()
    )));
}
