//! Conformance: NVIDIA's own Python binding (nvidia-ml-py, through
//! `tests/nvml/pynvml_dump.py`) and `NvmlBackend::inventory()` read the same
//! simulated host and state, and must report exactly the same GPUs, memory
//! totals, MIG modes and MIG devices (UUID, GPU-instance id,
//! compute-instance id, memory), on every shipped host, before and after
//! MIG instances are created, destroyed, modes changed and GPUs lost.
//!
//! pynvml runs in its own process, so this also checks that what the
//! backend changes is what another NVML client sees.
//!
//! Needs `python3` with `venv`; `tests/nvml/setup-venv.sh` installs the
//! pinned nvidia-ml-py into `target/py-venv`. A missing python3 fails.

mod common;

use std::path::Path;

use common::{Host, cdylib, in_child, pynvml_dump, simctl};
use orch_core::gpu::{GpuInfo, MigState};
use orch_gpu::{GpuBackend, NvmlBackend};
use serde_json::{Value, json};

fn open() -> NvmlBackend {
    NvmlBackend::open(Some(&cdylib())).expect("open the simulator")
}

/// pynvml's `{"current": c, "pending": p}` for our MIG state.
fn mig_mode(state: &MigState) -> Value {
    match state {
        MigState::Unsupported => Value::Null,
        MigState::Disabled { pending_enable } => {
            json!({"current": 0, "pending": u8::from(*pending_enable)})
        }
        MigState::Enabled {
            pending_disable, ..
        } => json!({"current": 1, "pending": u8::from(!*pending_disable)}),
    }
}

/// MIG devices as `(uuid, gi id, ci id, memory)`, from our inventory.
fn our_mig_devices(gpu: &GpuInfo) -> Vec<(String, u64, u64, u64)> {
    let MigState::Enabled {
        profiles,
        instances,
        ..
    } = &gpu.mig
    else {
        return Vec::new();
    };
    let mut out: Vec<_> = instances
        .iter()
        .filter_map(|i| {
            let uuid = i.device_uuid.clone()?;
            let ci = i.ci_id?;
            let memory = profiles
                .iter()
                .find(|p| p.id == i.profile_id)
                .expect("every instance's profile is listed")
                .memory
                .bytes();
            Some((uuid, u64::from(i.gi_id), u64::from(ci), memory))
        })
        .collect();
    out.sort();
    out
}

/// MIG devices as pynvml lists them.
fn their_mig_devices(gpu: &Value) -> Vec<(String, u64, u64, u64)> {
    let mut out: Vec<_> = gpu["mig_devices"]
        .as_array()
        .expect("mig_devices")
        .iter()
        .map(|d| {
            (
                d["uuid"].as_str().expect("uuid").to_owned(),
                d["gpu_instance_id"].as_u64().expect("gi"),
                d["compute_instance_id"].as_u64().expect("ci"),
                d["memory"]["total"].as_u64().expect("memory"),
            )
        })
        .collect();
    out.sort();
    out
}

/// Compares both views; returns how many MIG devices they agreed on, so a
/// scenario can check it compared something.
fn assert_conforms(backend: &NvmlBackend, scratch: &Path, when: &str) -> usize {
    let ours = backend.inventory().expect("inventory");
    let theirs = pynvml_dump(scratch);
    assert_eq!(
        theirs["driver_version"].as_str(),
        Some(backend.driver_version().expect("driver").as_str()),
        "{when}: driver version"
    );
    assert_eq!(
        theirs["device_count"],
        json!(ours.len()),
        "{when}: GPU count"
    );
    let gpus = theirs["gpus"].as_array().expect("gpus");
    let mut mig_devices = 0;
    for (seen, gpu) in gpus.iter().zip(&ours) {
        let at = format!("{when}: GPU {}", gpu.index);
        assert_eq!(seen["index"], json!(gpu.index), "{at}");
        assert_eq!(seen["lost"], json!(gpu.lost), "{at}: lost");
        if gpu.lost {
            continue;
        }
        assert_eq!(seen["uuid"], json!(gpu.uuid), "{at}: uuid");
        assert_eq!(seen["name"], json!(gpu.name), "{at}: name");
        assert_eq!(
            seen["memory"]["total"],
            json!(gpu.memory_total.bytes()),
            "{at}: memory total"
        );
        assert_eq!(seen["mig_mode"], mig_mode(&gpu.mig), "{at}: MIG mode");
        let mine = our_mig_devices(gpu);
        assert_eq!(their_mig_devices(seen), mine, "{at}: MIG devices");
        mig_devices += mine.len();
    }
    mig_devices
}

#[test]
fn mainpc() {
    let host = Host::shipped("config/mainpc/gpus.sim.yaml");
    in_child("mainpc", &host, || {
        let scratch = tempfile::tempdir().expect("temp dir");
        assert_eq!(assert_conforms(&open(), scratch.path(), "as shipped"), 0);
    });
}

#[test]
fn pc2() {
    let host = Host::shipped("config/pc2/gpus.sim.yaml");
    in_child("pc2", &host, || {
        let scratch = tempfile::tempdir().expect("temp dir");
        assert_eq!(assert_conforms(&open(), scratch.path(), "as shipped"), 0);
    });
}

#[test]
fn lab_a100() {
    let host = Host::shipped("config/sim/lab-a100.yaml");
    in_child("lab_a100", &host, || {
        let scratch = tempfile::tempdir().expect("temp dir");
        let backend = open();
        assert_eq!(assert_conforms(&backend, scratch.path(), "as shipped"), 0);
        let a = backend.create_instance(0, 9, 4).expect("3g.20gb at 4");
        backend.create_instance(0, 14, 0).expect("2g.10gb at 0");
        backend.create_instance(0, 19, 2).expect("1g.5gb at 2");
        backend.create_instance(0, 20, 3).expect("1g.5gb+me at 3");
        assert_eq!(assert_conforms(&backend, scratch.path(), "after create"), 4);
        backend.destroy_instance(0, a.gi_id).expect("destroy");
        assert_eq!(
            assert_conforms(&backend, scratch.path(), "after destroy"),
            3
        );
        backend.set_mig_mode(0, false).expect("disable");
        assert_eq!(
            assert_conforms(&backend, scratch.path(), "disable pending"),
            3
        );
        simctl(&["reset"]);
        assert_eq!(assert_conforms(&backend, scratch.path(), "after reset"), 0);
    });
}

#[test]
fn lab_h100() {
    let host = Host::shipped("config/sim/lab-h100.yaml");
    in_child("lab_h100", &host, || {
        let scratch = tempfile::tempdir().expect("temp dir");
        let backend = open();
        assert_eq!(assert_conforms(&backend, scratch.path(), "as shipped"), 0);
        for (profile, at) in [(15, 0), (15, 2), (14, 4), (19, 6)] {
            backend
                .create_instance(0, profile, at)
                .unwrap_or_else(|e| panic!("profile {profile} at {at}: {e}"));
        }
        assert_eq!(assert_conforms(&backend, scratch.path(), "after create"), 4);
        // Hopper loses MIG mode on reboot, layout and all.
        simctl(&["reboot"]);
        assert_eq!(assert_conforms(&backend, scratch.path(), "after reboot"), 0);
    });
}

#[test]
fn lab_mixed() {
    let host = Host::shipped("config/sim/lab-mixed.yaml");
    in_child("lab_mixed", &host, || {
        let scratch = tempfile::tempdir().expect("temp dir");
        let backend = open();
        assert_eq!(assert_conforms(&backend, scratch.path(), "as shipped"), 0);
        backend.create_instance(0, 0, 0).expect("7g.40gb on GPU 0");
        backend.create_instance(2, 9, 0).expect("3g.40gb on GPU 2");
        backend
            .create_instance(2, 5, 0)
            .expect_err("4g.40gb overlaps");
        backend
            .create_instance(2, 20, 4)
            .expect("1g.10gb+me on GPU 2");
        backend.set_mig_mode(1, true).expect("enable on GPU 1");
        assert_eq!(
            assert_conforms(&backend, scratch.path(), "enable pending"),
            3
        );
        simctl(&["reset", "--gpu", "1"]);
        backend.create_instance(1, 15, 6).expect("1g.10gb on GPU 1");
        assert_eq!(assert_conforms(&backend, scratch.path(), "after reset"), 4);
        simctl(&["lose", "--gpu", "2"]);
        assert_eq!(
            assert_conforms(&backend, scratch.path(), "GPU 2 lost"),
            2,
            "the lost GPU's MIG devices are not compared"
        );
    });
}
