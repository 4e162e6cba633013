//! `NvmlBackend` inventory, telemetry and library resolution on every
//! shipped simulated host, through the real `nvml-wrapper` code path.

mod common;

use std::ffi::OsString;
use std::path::Path;

use common::{Host, cdylib, in_child, in_child_with, nvml_link_dir, simctl};
use orch_core::gpu::{GpuInfo, MigState, class_by_name};
use orch_core::units::ByteSize;
use orch_gpu::{GpuBackend, GpuError, LibrarySource, NvmlBackend, Telemetry};

const MIB: u64 = 1024 * 1024;

fn open() -> NvmlBackend {
    let lib = cdylib();
    NvmlBackend::open(Some(&lib))
        .unwrap_or_else(|e| panic!("open NVML from {}: {e}", lib.display()))
}

/// Every profile NVML reports must be the catalog's (NVIDIA's published
/// geometry) for that GPU class: same id, slices, instance count and
/// placements. Memory is NVML's own figure (4864 MiB for a "5gb" slice).
fn assert_profiles_match_catalog(gpu: &GpuInfo) {
    let MigState::Enabled { profiles, .. } = &gpu.mig else {
        panic!("GPU {} has no MIG profiles: {:?}", gpu.index, gpu.mig);
    };
    let class = class_by_name(&gpu.name).expect("catalog class");
    let catalog = class.mig.expect("catalog MIG geometry");
    let mut seen: Vec<&str> = profiles.iter().map(|p| p.name.as_str()).collect();
    let mut want: Vec<&str> = catalog.profiles.iter().map(|p| p.name).collect();
    seen.sort_unstable();
    want.sort_unstable();
    assert_eq!(seen, want, "GPU {} profile names", gpu.index);
    for p in profiles {
        let c = catalog
            .profiles
            .iter()
            .find(|c| c.name == p.name)
            .expect("catalog profile");
        assert_eq!(
            (
                p.id,
                p.compute_slices,
                p.memory_slices,
                p.max_instances,
                p.placements.as_slice()
            ),
            (
                c.id,
                c.compute_slices,
                c.memory_slices,
                c.max_instances,
                c.placements
            ),
            "{} {}",
            gpu.name,
            p.name
        );
    }
}

fn enabled_parts(gpu: &GpuInfo) -> (bool, u8, u8, usize) {
    match &gpu.mig {
        MigState::Enabled {
            pending_disable,
            memory_slices,
            compute_slices,
            instances,
            ..
        } => (
            *pending_disable,
            *memory_slices,
            *compute_slices,
            instances.len(),
        ),
        other => panic!("GPU {} MIG is not enabled: {other:?}", gpu.index),
    }
}

#[test]
fn mainpc_rtx4090() {
    let host = Host::shipped("config/mainpc/gpus.sim.yaml");
    in_child("mainpc_rtx4090", &host, || {
        let gpu = open();
        let inv = gpu.inventory().expect("inventory");
        assert_eq!(
            inv,
            vec![GpuInfo {
                index: 0,
                uuid: "GPU-4090a1b2-c3d4-4e5f-8a6b-7c8d9e0f1a2b".into(),
                name: "NVIDIA GeForce RTX 4090".into(),
                memory_total: ByteSize(24564 * MIB),
                mig: MigState::Unsupported,
                lost: false,
                reserved: None,
            }]
        );
        assert_eq!(gpu.driver_version().expect("driver"), "570.133.20");
        // The workstation's telemetry swings around its configured bases.
        let t = gpu.telemetry(0).expect("telemetry");
        let used = t.memory_used.expect("memory used").bytes();
        assert!((900 * MIB..=1600 * MIB).contains(&used), "{t:?}");
        assert!(
            t.gpu_utilization.is_some_and(|u| (4..=20).contains(&u)),
            "{t:?}"
        );
        assert!(t.memory_utilization.is_some_and(|u| u <= 10), "{t:?}");
        assert!(
            t.temperature_c.is_some_and(|c| (41..=47).contains(&c)),
            "{t:?}"
        );
        assert!(
            t.power_mw.is_some_and(|p| (45_000..=85_000).contains(&p)),
            "{t:?}"
        );
        // Pinned values come through exactly, power in milliwatts.
        simctl(&[
            "set",
            "--gpu",
            "0",
            "--memory-used",
            "3GiB",
            "--util",
            "77",
            "--memory-util",
            "31",
            "--temperature",
            "66",
            "--power",
            "250",
        ]);
        assert_eq!(
            gpu.telemetry(0).expect("telemetry"),
            Telemetry {
                memory_used: Some(ByteSize::gib(3)),
                gpu_utilization: Some(77),
                memory_utilization: Some(31),
                temperature_c: Some(66),
                power_mw: Some(250_000),
            }
        );
        assert_eq!(
            gpu.telemetry(1),
            Err(GpuError::NoSuchGpu { index: 1, count: 1 })
        );
        assert!(matches!(
            gpu.create_instance(0, 19, 0),
            Err(GpuError::NotSupported { gpu: 0, ref what }) if what == "MIG"
        ));
    });
}

#[test]
fn pc2_rtx3060() {
    let host = Host::shipped("config/pc2/gpus.sim.yaml");
    in_child("pc2_rtx3060", &host, || {
        let gpu = open();
        let inv = gpu.inventory().expect("inventory");
        assert_eq!(
            inv,
            vec![GpuInfo {
                index: 0,
                uuid: "GPU-3060c0de-1a2b-4c3d-9e4f-5a6b7c8d9e0f".into(),
                name: "NVIDIA GeForce RTX 3060".into(),
                memory_total: ByteSize(12288 * MIB),
                mig: MigState::Unsupported,
                lost: false,
                reserved: None,
            }]
        );
        assert!(matches!(
            gpu.set_mig_mode(0, true),
            Err(GpuError::NotSupported { gpu: 0, .. })
        ));
    });
}

#[test]
fn lab_a100() {
    let host = Host::shipped("config/sim/lab-a100.yaml");
    in_child("lab_a100", &host, || {
        let inv = open().inventory().expect("inventory");
        assert_eq!(inv.len(), 1);
        let a100 = &inv[0];
        assert_eq!(
            (a100.uuid.as_str(), a100.name.as_str(), a100.memory_total),
            (
                "GPU-a100a100-0000-4000-8000-00000000a100",
                "NVIDIA A100-SXM4-40GB",
                ByteSize(40960 * MIB)
            )
        );
        assert_eq!(enabled_parts(a100), (false, 8, 7, 0));
        assert_profiles_match_catalog(a100);
        let MigState::Enabled { profiles, .. } = &a100.mig else {
            unreachable!("checked above")
        };
        let one = profiles
            .iter()
            .find(|p| p.name == "1g.5gb")
            .expect("1g.5gb");
        assert_eq!((one.id, one.memory), (19, ByteSize(4864 * MIB)));
        let seven = profiles.iter().find(|p| p.name == "7g.40gb").expect("7g");
        assert_eq!((seven.id, seven.memory), (0, ByteSize(40192 * MIB)));
    });
}

#[test]
fn lab_h100() {
    let host = Host::shipped("config/sim/lab-h100.yaml");
    in_child("lab_h100", &host, || {
        let inv = open().inventory().expect("inventory");
        assert_eq!(inv.len(), 1);
        let h100 = &inv[0];
        assert_eq!(
            (h100.uuid.as_str(), h100.name.as_str(), h100.memory_total),
            (
                "GPU-100c0ffe-8f0d-4a3b-b6e2-5d1e2f3a4b5c",
                "NVIDIA H100 80GB HBM3",
                ByteSize(81559 * MIB)
            )
        );
        assert_eq!(enabled_parts(h100), (false, 8, 7, 0));
        assert_profiles_match_catalog(h100);
    });
}

#[test]
fn lab_mixed() {
    let host = Host::shipped("config/sim/lab-mixed.yaml");
    in_child("lab_mixed", &host, || {
        let gpu = open();
        let inv = gpu.inventory().expect("inventory");
        let names: Vec<&str> = inv.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "NVIDIA A100-SXM4-40GB",
                "NVIDIA A100-SXM4-40GB",
                "NVIDIA H100 80GB HBM3",
                "NVIDIA GeForce RTX 4090"
            ]
        );
        assert_eq!(
            inv.iter().map(|g| g.index).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        assert!(inv.iter().all(|g| g.uuid.starts_with("GPU-") && !g.lost));
        let mut uuids: Vec<&str> = inv.iter().map(|g| g.uuid.as_str()).collect();
        uuids.dedup();
        assert_eq!(uuids.len(), 4, "UUIDs are distinct");
        assert_profiles_match_catalog(&inv[0]);
        assert_eq!(
            inv[1].mig,
            MigState::Disabled {
                pending_enable: false
            }
        );
        assert_profiles_match_catalog(&inv[2]);
        assert_eq!(inv[3].mig, MigState::Unsupported);
        // The 4090's telemetry is constant in this host file.
        assert_eq!(
            gpu.telemetry(3).expect("telemetry"),
            Telemetry {
                memory_used: Some(ByteSize::gib(3)),
                gpu_utilization: Some(40),
                memory_utilization: Some(25),
                temperature_c: Some(58),
                power_mw: Some(210_000),
            }
        );
        // The parent of MIG instances still answers telemetry.
        assert!(gpu.telemetry(0).expect("A100 telemetry").power_mw.is_some());
    });
}

#[test]
fn lost_gpu_is_listed_not_fatal() {
    let host = Host::shipped("config/sim/lab-mixed.yaml");
    in_child("lost_gpu_is_listed_not_fatal", &host, || {
        let gpu = open();
        let before = gpu.inventory().expect("inventory");
        simctl(&["lose", "--gpu", "2"]);
        let inv = gpu.inventory().expect("inventory with a lost GPU");
        assert_eq!(inv.len(), 4);
        assert_eq!(
            inv[2],
            GpuInfo {
                index: 2,
                // Seen before it was lost: reported under its identity.
                uuid: before[2].uuid.clone(),
                name: "NVIDIA H100 80GB HBM3".into(),
                memory_total: ByteSize(0),
                mig: MigState::Unsupported,
                lost: true,
                reserved: None,
            }
        );
        assert_eq!(inv[0], before[0]);
        assert_eq!(inv[3], before[3]);
        assert_eq!(gpu.telemetry(2), Err(GpuError::GpuLost { gpu: 2 }));
        assert_eq!(
            gpu.create_instance(2, 19, 0),
            Err(GpuError::GpuLost { gpu: 2 })
        );
        assert_eq!(
            gpu.set_mig_mode(2, false),
            Err(GpuError::GpuLost { gpu: 2 })
        );
        assert!(
            GpuError::GpuLost { gpu: 2 }
                .to_string()
                .contains("GPU 2 is lost"),
            "the message names the GPU"
        );

        // A backend opened while the GPU is lost has never seen its identity.
        drop(gpu);
        let fresh = open().inventory().expect("inventory");
        assert!(fresh[2].lost);
        assert_eq!(fresh[2].uuid, "");

        simctl(&["restore", "--gpu", "2"]);
        let back = open().inventory().expect("inventory");
        assert_eq!(back, before, "restored, reset: the same as at first");
    });
}

#[test]
fn library_from_environment() {
    let host = Host::shipped("config/mainpc/gpus.sim.yaml");
    let env = [("ORCH_NVML_LIBRARY", OsString::from(cdylib()))];
    in_child_with("library_from_environment", &host, &env, || {
        let gpu = NvmlBackend::open(None).expect("open from ORCH_NVML_LIBRARY");
        assert_eq!(gpu.library_source(), LibrarySource::Environment);
        assert_eq!(gpu.library_path(), cdylib());
        assert_eq!(gpu.inventory().expect("inventory").len(), 1);
    });
}

#[test]
fn system_library_through_the_loader_search_path() {
    let host = Host::shipped("config/pc2/gpus.sim.yaml");
    let scratch = tempfile::tempdir().expect("temp dir");
    let dir = nvml_link_dir(scratch.path());
    let env = [("LD_LIBRARY_PATH", OsString::from(&dir))];
    in_child_with(
        "system_library_through_the_loader_search_path",
        &host,
        &env,
        || {
            let gpu = NvmlBackend::open(None).expect("open libnvidia-ml.so.1");
            assert_eq!(gpu.library_source(), LibrarySource::System);
            // The loader found it in LD_LIBRARY_PATH: the path says where.
            let dir = std::env::var_os("LD_LIBRARY_PATH").expect("set by the parent");
            assert_eq!(
                gpu.library_path(),
                Path::new(&dir).join("libnvidia-ml.so.1")
            );
            let inv = gpu.inventory().expect("inventory");
            assert_eq!(inv[0].name, "NVIDIA GeForce RTX 3060");
        },
    );
}

#[test]
fn explicit_path_wins_over_environment() {
    let host = Host::shipped("config/mainpc/gpus.sim.yaml");
    let env = [(
        "ORCH_NVML_LIBRARY",
        OsString::from("/nonexistent/libnvidia-ml.so.1"),
    )];
    in_child_with("explicit_path_wins_over_environment", &host, &env, || {
        let gpu = open();
        assert_eq!(gpu.library_source(), LibrarySource::Explicit);
        assert_eq!(gpu.library_path(), cdylib());
    });
}
