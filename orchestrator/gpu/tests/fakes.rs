//! The recording fakes other crates test against: `FakeGpu` applies the
//! MIG rules, keeps mode changes pending until a reset, loses GPUs, fails
//! on demand and records calls; `FakeMps` records starts and stops.

use std::path::PathBuf;

use orch_core::gpu::{GpuClass, GpuInfo, MigState, class_by_name};
use orch_core::units::ByteSize;
use orch_gpu::mps::MpsOp;
use orch_gpu::{
    FakeGpu, FakeMps, GpuBackend, GpuCall, GpuError, GpuOp, MigModeChange, MpsCall, MpsControl,
    MpsError, MpsGpu, Telemetry,
};

fn class(name: &str) -> &'static GpuClass {
    class_by_name(name).expect("catalog class")
}

fn host() -> FakeGpu {
    FakeGpu::new()
        .with_gpu(class("NVIDIA A100-SXM4-40GB"), true)
        .with_gpu(class("NVIDIA H100 80GB HBM3"), false)
        .with_gpu_uuid(
            class("NVIDIA GeForce RTX 4090"),
            "GPU-4090a1b2-c3d4-4e5f-8a6b-7c8d9e0f1a2b",
            true,
        )
}

#[test]
fn inventory_comes_from_the_catalog() {
    let fake = host();
    let inv = fake.inventory().expect("inventory");
    assert_eq!(inv.len(), 3);
    assert_eq!(
        inv[0],
        GpuInfo::from_class(
            0,
            "GPU-fa4e0000-0000-4000-8000-000000000000",
            class("NVIDIA A100-SXM4-40GB"),
            true
        )
    );
    assert_eq!(
        inv[1].mig,
        MigState::Disabled {
            pending_enable: false
        }
    );
    assert_eq!(inv[2].uuid, "GPU-4090a1b2-c3d4-4e5f-8a6b-7c8d9e0f1a2b");
    assert_eq!(inv[2].mig, MigState::Unsupported, "no MIG on GeForce");
    assert_eq!(fake.driver_version().expect("driver"), "570.133.20");
    assert_eq!(fake.library_path(), PathBuf::from("fake:libnvidia-ml.so.1"));
}

#[test]
fn mig_rules() {
    let fake = host();
    // Placements, overlap, instance counts, ids as the driver numbers them.
    let g4 = fake.create_instance(0, 5, 0).expect("4g.20gb at 0");
    assert_eq!((g4.gi_id, g4.ci_id), (1, 0));
    assert!(g4.device_uuid.starts_with("MIG-"));
    assert_eq!(
        fake.create_instance(0, 9, 0),
        Err(GpuError::InsufficientResources {
            gpu: 0,
            profile: "3g.20gb".into(),
            placement: 0
        }),
        "overlaps the 4g"
    );
    assert!(matches!(
        fake.create_instance(0, 9, 2),
        Err(GpuError::NotSupported { ref what, .. }) if what == "placement 2 for 3g.20gb (possible starts: 0, 4)"
    ));
    assert!(matches!(
        fake.create_instance(0, 2, 0),
        Err(GpuError::NotSupported { ref what, .. }) if what == "GPU-instance profile id 2"
    ));
    let me = fake.create_instance(0, 20, 6).expect("1g.5gb+me at 6");
    assert_eq!(me.gi_id, 13);
    assert_eq!(
        fake.create_instance(0, 20, 5),
        Err(GpuError::InsufficientResources {
            gpu: 0,
            profile: "1g.5gb+me".into(),
            placement: 5
        }),
        "one +me instance per GPU"
    );
    let one = fake.create_instance(0, 19, 4).expect("1g.5gb at 4");
    fake.create_instance(0, 19, 5).expect("1g.5gb at 5");
    // Slice 6 is the +me's, and 4 + 1 + 1 + 1 compute slices are all taken.
    assert!(matches!(
        fake.create_instance(0, 19, 6),
        Err(GpuError::InsufficientResources { .. })
    ));
    assert_ne!(one.device_uuid, me.device_uuid);

    let MigState::Enabled { instances, .. } = &fake.inventory().expect("inventory")[0].mig else {
        panic!("MIG on")
    };
    let ids: Vec<(u32, u32, u8, u8)> = instances
        .iter()
        .map(|i| (i.gi_id, i.profile_id, i.placement_start, i.placement_size))
        .collect();
    assert_eq!(
        ids,
        [(1, 5, 0, 4), (11, 19, 4, 1), (12, 19, 5, 1), (13, 20, 6, 1)]
    );
    assert!(instances.iter().all(|i| !i.owned && i.ci_id == Some(0)));

    fake.destroy_instance(0, 11).expect("destroy");
    assert_eq!(
        fake.destroy_instance(0, 11),
        Err(GpuError::NoSuchInstance { gpu: 0, gi_id: 11 })
    );
    let again = fake
        .create_instance(0, 19, 4)
        .expect("the slice is free again");
    assert_eq!(again.gi_id, 11);
    assert_ne!(again.device_uuid, one.device_uuid, "a new MIG device");

    assert_eq!(
        fake.create_instance(9, 19, 0),
        Err(GpuError::NoSuchGpu { index: 9, count: 3 })
    );
    assert!(matches!(
        fake.create_instance(2, 19, 0),
        Err(GpuError::NotSupported { gpu: 2, ref what }) if what == "MIG"
    ));
}

#[test]
fn mode_changes_wait_for_a_reset() {
    let fake = host();
    assert_eq!(
        fake.set_mig_mode(1, true),
        Ok(MigModeChange {
            current: false,
            pending: true,
            reset_required: true
        })
    );
    assert_eq!(
        fake.inventory().expect("inventory")[1].mig,
        MigState::Disabled {
            pending_enable: true
        }
    );
    assert!(matches!(
        fake.create_instance(1, 19, 0),
        Err(GpuError::NotSupported { gpu: 1, ref what }) if what.contains("reset")
    ));
    fake.reset(Some(1));
    assert!(fake.inventory().expect("inventory")[1].mig.is_enabled());
    fake.create_instance(1, 19, 0).expect("1g.10gb on the H100");

    // Disabling keeps the layout until the reset, which drops it.
    fake.create_instance(0, 0, 0).expect("7g.40gb");
    assert_eq!(
        fake.set_mig_mode(0, false),
        Ok(MigModeChange {
            current: true,
            pending: false,
            reset_required: true
        })
    );
    let MigState::Enabled {
        pending_disable,
        instances,
        ..
    } = &fake.inventory().expect("inventory")[0].mig
    else {
        panic!("still on")
    };
    assert!(*pending_disable);
    assert_eq!(instances.len(), 1);
    fake.reset(None);
    let inv = fake.inventory().expect("inventory");
    assert_eq!(
        inv[0].mig,
        MigState::Disabled {
            pending_enable: false
        }
    );
    let MigState::Enabled { instances, .. } = &inv[1].mig else {
        panic!("H100 stays on")
    };
    assert!(instances.is_empty(), "a reset drops every instance");
    assert!(matches!(
        fake.set_mig_mode(2, true),
        Err(GpuError::NotSupported { gpu: 2, .. })
    ));
}

#[test]
fn lost_gpus_telemetry_and_injected_failures() {
    let fake = host();
    fake.create_instance(0, 9, 4).expect("3g.20gb");
    fake.lose(0);
    let inv = fake
        .inventory()
        .expect("a lost GPU does not fail the inventory");
    assert!(inv[0].lost);
    assert_eq!(inv[0].uuid, "GPU-fa4e0000-0000-4000-8000-000000000000");
    assert!(!inv[1].lost);
    assert_eq!(fake.telemetry(0), Err(GpuError::GpuLost { gpu: 0 }));
    assert_eq!(
        fake.create_instance(0, 19, 0),
        Err(GpuError::GpuLost { gpu: 0 })
    );
    assert_eq!(
        fake.destroy_instance(0, 2),
        Err(GpuError::GpuLost { gpu: 0 })
    );
    fake.restore(0);
    let MigState::Enabled { instances, .. } = &fake.inventory().expect("inventory")[0].mig else {
        panic!("MIG on")
    };
    assert!(instances.is_empty(), "back from the bus, reset");

    let pinned = Telemetry {
        memory_used: Some(ByteSize::gib(3)),
        gpu_utilization: Some(40),
        memory_utilization: Some(25),
        temperature_c: Some(58),
        power_mw: Some(210_000),
    };
    fake.set_telemetry(2, pinned);
    assert_eq!(fake.telemetry(2), Ok(pinned));
    assert!(fake.telemetry(1).expect("idle").power_mw.is_some());

    fake.fail_next(
        GpuOp::CreateInstance,
        GpuError::InUse {
            gpu: 0,
            what: "the GPU".into(),
        },
    );
    fake.fail_next(
        GpuOp::Inventory,
        GpuError::Nvml {
            gpu: None,
            call: "nvmlDeviceGetCount",
            code: 999,
            message: "Unknown Error".into(),
        },
    );
    assert!(matches!(
        fake.create_instance(0, 19, 0),
        Err(GpuError::InUse { .. })
    ));
    assert!(matches!(fake.inventory(), Err(GpuError::Nvml { .. })));
    fake.create_instance(0, 19, 0)
        .expect("the failure was used up");
    fake.inventory().expect("so was this one");
    let inv = fake.inventory().expect("inventory");
    let MigState::Enabled { instances, .. } = &inv[0].mig else {
        panic!("MIG on")
    };
    assert_eq!(instances.len(), 1, "the failed create changed nothing");
}

#[test]
fn calls_are_recorded_in_order() {
    let fake = host();
    let _ = fake.inventory();
    let _ = fake.set_mig_mode(1, true);
    let _ = fake.create_instance(0, 9, 4);
    let _ = fake.create_instance(0, 9, 4);
    let _ = fake.destroy_instance(0, 2);
    let _ = fake.telemetry(2);
    let _ = fake.driver_version();
    assert_eq!(
        fake.take_calls(),
        vec![
            GpuCall::Inventory,
            GpuCall::SetMigMode {
                gpu: 1,
                enable: true
            },
            GpuCall::CreateInstance {
                gpu: 0,
                profile_id: 9,
                placement_start: 4
            },
            GpuCall::CreateInstance {
                gpu: 0,
                profile_id: 9,
                placement_start: 4
            },
            GpuCall::DestroyInstance { gpu: 0, gi_id: 2 },
            GpuCall::Telemetry { gpu: 2 },
            GpuCall::DriverVersion,
        ],
        "failed calls are recorded too"
    );
    assert_eq!(fake.calls(), vec![], "take_calls starts the record afresh");
}

fn mps_gpu(uuid: &str) -> MpsGpu {
    MpsGpu {
        uuid: uuid.to_owned(),
        pipe_dir: PathBuf::from(format!("/run/orchestrator/mps/{uuid}/pipe")),
        log_dir: PathBuf::from(format!("/var/log/orchestrator/mps/{uuid}")),
    }
}

#[test]
fn fake_mps_records_and_is_idempotent() {
    let mps = FakeMps::new();
    let a = mps_gpu("GPU-a");
    let b = mps_gpu("GPU-b");
    assert!(!mps.is_running(&a).expect("is_running"));
    mps.ensure_running(&a).expect("start");
    mps.ensure_running(&a).expect("again");
    mps.ensure_running(&b).expect("start b");
    assert_eq!(mps.started(), ["GPU-a", "GPU-b"], "one start per GPU");
    assert_eq!(mps.running(), ["GPU-a", "GPU-b"]);
    mps.stop(&a).expect("stop");
    mps.stop(&a).expect("stop again");
    assert_eq!(mps.stopped(), ["GPU-a"]);
    assert_eq!(mps.running(), ["GPU-b"]);

    mps.crash(&b);
    assert!(!mps.is_running(&b).expect("is_running"));
    mps.fail_next(
        MpsOp::EnsureRunning,
        MpsError::BinaryMissing {
            binary: "nvidia-cuda-mps-control".into(),
        },
    );
    assert!(matches!(
        mps.ensure_running(&b),
        Err(MpsError::BinaryMissing { .. })
    ));
    mps.ensure_running(&b).expect("restarted");
    assert_eq!(mps.started(), ["GPU-a", "GPU-b", "GPU-b"]);

    let uuid = |u: &str| u.to_owned();
    assert_eq!(
        mps.calls(),
        vec![
            MpsCall::IsRunning {
                uuid: uuid("GPU-a")
            },
            MpsCall::EnsureRunning {
                uuid: uuid("GPU-a")
            },
            MpsCall::EnsureRunning {
                uuid: uuid("GPU-a")
            },
            MpsCall::EnsureRunning {
                uuid: uuid("GPU-b")
            },
            MpsCall::Stop {
                uuid: uuid("GPU-a")
            },
            MpsCall::Stop {
                uuid: uuid("GPU-a")
            },
            MpsCall::IsRunning {
                uuid: uuid("GPU-b")
            },
            MpsCall::EnsureRunning {
                uuid: uuid("GPU-b")
            },
            MpsCall::EnsureRunning {
                uuid: uuid("GPU-b")
            },
        ]
    );
}

#[test]
fn fake_gpu_answers_the_processes_and_samples_a_test_sets() {
    use orch_gpu::{GpuProcess, ProcessKind, ProcessSample};
    let fake = host();
    let on_gi = |pid: u32, gi: u32| GpuProcess {
        pid,
        used_memory: Some(ByteSize::mib(512)),
        gpu_instance_id: Some(gi),
        compute_instance_id: Some(0),
        kind: ProcessKind::Compute,
    };
    let g = fake.create_instance(0, 9, 0).expect("3g.20gb at 0");
    fake.set_processes(0, vec![on_gi(5, g.gi_id), on_gi(6, 99)]);
    assert_eq!(fake.processes(0).expect("processes").len(), 2);
    assert_eq!(
        fake.instance_processes(0, g.gi_id, 0).expect("GI"),
        [on_gi(5, g.gi_id)]
    );
    assert_eq!(
        fake.instance_processes(0, 99, 0).expect_err("no GI 99"),
        GpuError::NoSuchInstance { gpu: 0, gi_id: 99 }
    );
    assert!(matches!(
        fake.instance_processes(2, 1, 0),
        Err(GpuError::NotSupported { gpu: 2, .. })
    ));
    let sample = |pid, newest_us| ProcessSample {
        pid,
        sm_percent: 40,
        memory_percent: 20,
        encoder_percent: 0,
        decoder_percent: 0,
        samples: 3,
        newest_us,
    };
    fake.set_process_utilization(1, vec![sample(7, 1_000), sample(8, 2_000)]);
    let read = fake.process_utilization(1, 1_000).expect("since 1000");
    assert_eq!(
        (read.processes, read.newest_us),
        (vec![sample(8, 2_000)], Some(2_000))
    );
    assert!(matches!(
        fake.process_utilization(0, 0),
        Err(GpuError::NotSupported { gpu: 0, .. })
    ));
    fake.fail_next(GpuOp::Processes, GpuError::GpuLost { gpu: 1 });
    assert_eq!(fake.processes(1), Err(GpuError::GpuLost { gpu: 1 }));
    fake.reset(Some(0));
    assert_eq!(fake.processes(0).expect("reset"), []);
    let calls = fake.take_calls();
    assert!(calls.contains(&GpuCall::ProcessUtilization {
        gpu: 1,
        since_us: 1_000
    }));
    assert!(calls.contains(&GpuCall::InstanceProcesses {
        gpu: 0,
        gi_id: 99,
        ci_id: 0
    }));
}

#[test]
fn fake_mps_holds_servers_and_records_terminations() {
    use orch_gpu::{MpsServer, MpsServerStatus};
    let mps = FakeMps::new();
    let g = MpsGpu {
        uuid: "GPU-a".into(),
        pipe_dir: PathBuf::from("/run/mps/a"),
        log_dir: PathBuf::from("/var/log/mps/a"),
    };
    assert!(matches!(
        mps.server_pids(&g),
        Err(MpsError::NotRunning { .. })
    ));
    mps.ensure_running(&g).expect("start");
    mps.add_server(&g, 100, &[101, 102]);
    mps.set_server_status(&g, 100, MpsServerStatus::Fault);
    assert_eq!(
        mps.servers(&g).expect("servers"),
        [MpsServer {
            pid: 100,
            status: MpsServerStatus::Fault,
            clients: vec![101, 102]
        }]
    );
    mps.terminate_client(&g, 100, 101).expect("terminate");
    assert!(matches!(
        mps.terminate_client(&g, 100, 101),
        Err(MpsError::NoSuchClient {
            client_pid: 101,
            ..
        })
    ));
    assert!(matches!(
        mps.client_pids(&g, 7),
        Err(MpsError::NoSuchServer { server_pid: 7, .. })
    ));
    assert_eq!(mps.terminated(), [("GPU-a".to_owned(), 100, 101)]);
    mps.fail_next(
        MpsOp::ServerStatus,
        MpsError::NotRunning {
            gpu: "GPU-a".into(),
        },
    );
    assert!(mps.server_status(&g, 100).is_err());
    mps.stop(&g).expect("stop");
    mps.ensure_running(&g).expect("start again");
    assert_eq!(
        mps.server_pids(&g).expect("quit ended the servers"),
        Vec::<u32>::new()
    );
    assert!(mps.calls().contains(&MpsCall::TerminateClient {
        uuid: "GPU-a".into(),
        server_pid: 100,
        client_pid: 101
    }));
}
