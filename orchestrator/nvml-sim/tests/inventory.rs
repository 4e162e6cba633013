//! Inventory of every shipped host description as `nvml-wrapper` sees it
//! through the simulator library: identity, PCI, memory, model facts,
//! telemetry and the calls that must be NOT_SUPPORTED on each kind of board.

mod common;

use common::{Host, in_child, nvml};
use nvml_wrapper::enum_wrappers::device::{Brand, Clock, ComputeMode, TemperatureSensor};
use nvml_wrapper::enums::device::DeviceArchitecture;
use nvml_wrapper::error::NvmlError;

const MIB: u64 = 1024 * 1024;

/// What `nvmlDeviceGetSerial` must answer.
enum Serial {
    /// Exactly this serial.
    Exact(&'static str),
    /// Some serial (derived from the UUID when the host file gives none).
    Derived,
    /// NOT_SUPPORTED, as on GeForce boards.
    Unsupported,
}

/// What one GPU of a shipped host must look like.
struct Expect {
    uuid: Option<&'static str>,
    name: &'static str,
    bus_id: &'static str,
    total_mib: u64,
    brand: Brand,
    arch: DeviceArchitecture,
    cc: (i32, i32),
    power_limit_mw: u32,
    pci_device_id: u32,
    serial: Serial,
    has_fans: bool,
    mig: Option<(u32, u32)>,
}

/// Checks one GPU against `want` (in a child process).
fn check(index: u32, want: &Expect) {
    let nvml = nvml();
    let dev = nvml.device_by_index(index).expect("device handle");
    assert_eq!(dev.name().expect("name"), want.name);
    let uuid = dev.uuid().expect("uuid");
    assert!(uuid.starts_with("GPU-") && uuid.len() == 40, "{uuid}");
    if let Some(u) = want.uuid {
        assert_eq!(uuid, u);
    }
    assert_eq!(dev.index().expect("index"), index);
    assert_eq!(dev.minor_number().expect("minor"), index);

    let pci = dev.pci_info().expect("pci");
    assert_eq!(pci.bus_id, want.bus_id);
    assert_eq!(pci.pci_device_id, want.pci_device_id);
    let by_bus = nvml.device_by_pci_bus_id(want.bus_id).expect("by bus id");
    assert_eq!(by_bus.uuid().expect("uuid"), uuid);
    let legacy = &want.bus_id[4..];
    let by_legacy = nvml.device_by_pci_bus_id(legacy).expect("by legacy bus id");
    assert_eq!(by_legacy.uuid().expect("uuid"), uuid);
    assert_eq!(
        nvml.device_by_uuid(uuid.as_str())
            .expect("by uuid")
            .index()
            .expect("index"),
        index
    );

    let mem = dev.memory_info().expect("memory_info (v2)");
    assert_eq!(mem.total, want.total_mib * MIB);
    assert!(mem.reserved > 0, "the driver reserve is reported");
    assert_eq!(mem.total, mem.reserved + mem.used + mem.free);

    assert_eq!(dev.brand().expect("brand"), want.brand);
    assert_eq!(dev.architecture().expect("architecture"), want.arch);
    let cc = dev.cuda_compute_capability().expect("cc");
    assert_eq!((cc.major, cc.minor), want.cc);
    assert_eq!(
        dev.enforced_power_limit().expect("enforced limit"),
        want.power_limit_mw
    );
    assert_eq!(
        dev.power_management_limit().expect("pm limit"),
        want.power_limit_mw
    );
    let power = dev.power_usage().expect("power");
    assert!(power > 0 && power <= want.power_limit_mw * 2, "{power} mW");
    let temp = dev
        .temperature(TemperatureSensor::Gpu)
        .expect("temperature");
    assert!((20..100).contains(&temp), "{temp} °C");
    let util = dev.utilization_rates().expect("utilization");
    assert!(util.gpu <= 100 && util.memory <= 100);
    let max_sm = dev.max_clock_info(Clock::SM).expect("max SM clock");
    let sm = dev.clock_info(Clock::SM).expect("SM clock");
    assert!(sm > 0 && sm <= max_sm, "{sm} of {max_sm} MHz");
    assert!(!dev.is_multi_gpu_board().expect("multi-GPU board"));
    assert!(dev.is_in_persistent_mode().expect("persistence"));
    assert!(
        dev.running_compute_processes()
            .expect("compute processes")
            .is_empty()
    );
    assert!(
        dev.running_graphics_processes()
            .expect("graphics processes")
            .is_empty()
    );

    match want.serial {
        Serial::Exact(s) => assert_eq!(dev.serial().expect("serial"), s),
        Serial::Derived => assert_eq!(dev.serial().expect("serial").len(), 13),
        Serial::Unsupported => assert!(matches!(dev.serial(), Err(NvmlError::NotSupported))),
    }
    if want.has_fans {
        assert!(dev.fan_speed(0).expect("fan") <= 100);
    } else {
        assert!(matches!(dev.fan_speed(0), Err(NvmlError::NotSupported)));
    }
    match want.mig {
        Some((current, pending)) => {
            let mode = dev.mig_mode().expect("MIG mode");
            assert_eq!((mode.current, mode.pending), (current, pending));
            let max = dev.mig_device_count().expect("max MIG devices");
            assert_eq!(max, if current == 1 { 7 } else { 0 });
        }
        None => {
            assert!(matches!(dev.mig_mode(), Err(NvmlError::NotSupported)));
            assert_eq!(dev.mig_device_count().expect("max MIG devices"), 0);
            assert!(matches!(
                dev.set_mig_mode(true),
                Err(NvmlError::NotSupported)
            ));
            assert!(matches!(dev.profile_info(0), Err(NvmlError::NotSupported)));
        }
    }
    assert!(!dev.mig_is_mig_device_handle().expect("is MIG handle"));
}

fn rtx4090() -> Expect {
    Expect {
        uuid: Some("GPU-4090a1b2-c3d4-4e5f-8a6b-7c8d9e0f1a2b"),
        name: "NVIDIA GeForce RTX 4090",
        bus_id: "00000000:01:00.0",
        total_mib: 24564,
        brand: Brand::GeForce,
        arch: DeviceArchitecture::Ada,
        cc: (8, 9),
        power_limit_mw: 450_000,
        pci_device_id: 0x2684_10DE,
        serial: Serial::Unsupported,
        has_fans: true,
        mig: None,
    }
}

fn a100(
    uuid: Option<&'static str>,
    bus_id: &'static str,
    serial: Serial,
    mig: (u32, u32),
) -> Expect {
    Expect {
        uuid,
        name: "NVIDIA A100-SXM4-40GB",
        bus_id,
        total_mib: 40960,
        brand: Brand::Nvidia,
        arch: DeviceArchitecture::Ampere,
        cc: (8, 0),
        power_limit_mw: 400_000,
        pci_device_id: 0x20B0_10DE,
        serial,
        has_fans: false,
        mig: Some(mig),
    }
}

fn h100(uuid: Option<&'static str>, bus_id: &'static str, serial: Serial) -> Expect {
    Expect {
        uuid,
        name: "NVIDIA H100 80GB HBM3",
        bus_id,
        total_mib: 81559,
        brand: Brand::Nvidia,
        arch: DeviceArchitecture::Hopper,
        cc: (9, 0),
        power_limit_mw: 700_000,
        pci_device_id: 0x2330_10DE,
        serial,
        has_fans: false,
        mig: Some((1, 1)),
    }
}

#[test]
fn mainpc_rtx4090() {
    let host = Host::shipped("config/mainpc/gpus.sim.yaml");
    in_child("mainpc_rtx4090", &host, || {
        let nvml = nvml();
        assert_eq!(nvml.device_count().expect("count"), 1);
        assert_eq!(nvml.sys_driver_version().expect("driver"), "570.133.20");
        assert_eq!(nvml.sys_cuda_driver_version().expect("cuda"), 12080);
        assert_eq!(
            nvml.sys_nvml_version().expect("nvml version"),
            "12.570.133.20"
        );
        check(0, &rtx4090());
    });
}

#[test]
fn pc2_rtx3060() {
    let host = Host::shipped("config/pc2/gpus.sim.yaml");
    in_child("pc2_rtx3060", &host, || {
        assert_eq!(nvml().device_count().expect("count"), 1);
        check(
            0,
            &Expect {
                uuid: Some("GPU-3060c0de-1a2b-4c3d-9e4f-5a6b7c8d9e0f"),
                name: "NVIDIA GeForce RTX 3060",
                bus_id: "00000000:2B:00.0",
                total_mib: 12288,
                brand: Brand::GeForce,
                arch: DeviceArchitecture::Ampere,
                cc: (8, 6),
                power_limit_mw: 170_000,
                pci_device_id: 0x2503_10DE,
                serial: Serial::Unsupported,
                has_fans: true,
                mig: None,
            },
        );
    });
}

#[test]
fn lab_a100_profiles() {
    let host = Host::shipped("config/sim/lab-a100.yaml");
    in_child("lab_a100_profiles", &host, || {
        check(
            0,
            &a100(
                Some("GPU-a100a100-0000-4000-8000-00000000a100"),
                "00000000:07:00.0",
                Serial::Exact("1562021001122"),
                (1, 1),
            ),
        );
        let nvml = nvml();
        let dev = nvml.device_by_index(0).expect("device");
        // (profile index, id, slices, instances, memory MiB, SMs, decoders, jpeg, ofa)
        let table = [
            (0, 19, 1, 7, 4864, 14, 0, 0, 0),
            (7, 20, 1, 1, 4864, 14, 1, 1, 1),
            (9, 15, 1, 4, 9856, 14, 1, 0, 0),
            (1, 14, 2, 3, 9856, 28, 1, 0, 0),
            (2, 9, 3, 2, 19968, 42, 2, 0, 0),
            (3, 5, 4, 1, 19968, 56, 2, 0, 0),
            (4, 0, 7, 1, 40192, 98, 5, 1, 1),
        ];
        for (index, id, slices, instances, mib, sms, dec, jpeg, ofa) in table {
            let p = dev
                .profile_info(index)
                .unwrap_or_else(|e| panic!("profile index {index}: {e}"));
            assert_eq!(
                (
                    p.id,
                    p.slice_count,
                    p.instance_count,
                    p.memory_size_mb,
                    p.multiprocessor_count
                ),
                (id, slices, instances, mib, sms),
                "profile index {index}"
            );
            assert_eq!(
                (p.decoder_count, p.jpeg_count, p.ofa_count, p.encoder_count),
                (dec, jpeg, ofa, 0)
            );
        }
        // 8_SLICE (5) exists in nvml.h but not on A100; 99 is no index at all.
        assert!(matches!(dev.profile_info(5), Err(NvmlError::NotSupported)));
        assert!(matches!(dev.profile_info(99), Err(NvmlError::InvalidArg)));
    });
}

#[test]
fn lab_h100_profiles() {
    let host = Host::shipped("config/sim/lab-h100.yaml");
    in_child("lab_h100_profiles", &host, || {
        check(
            0,
            &h100(
                Some("GPU-100c0ffe-8f0d-4a3b-b6e2-5d1e2f3a4b5c"),
                "00000000:18:00.0",
                Serial::Exact("1654922007890"),
            ),
        );
        let nvml = nvml();
        let dev = nvml.device_by_index(0).expect("device");
        let table = [
            (0, 19, 9984, 16),
            (7, 20, 9984, 16),
            (9, 15, 20096, 26),
            (1, 14, 20096, 32),
            (2, 9, 40448, 60),
            (3, 5, 40448, 64),
            (4, 0, 81152, 132),
        ];
        for (index, id, mib, sms) in table {
            let p = dev.profile_info(index).expect("profile");
            assert_eq!(
                (p.id, p.memory_size_mb, p.multiprocessor_count),
                (id, mib, sms),
                "index {index}"
            );
        }
    });
}

#[test]
fn lab_mixed_four_gpus_and_fixed_telemetry() {
    let host = Host::shipped("config/sim/lab-mixed.yaml");
    let status = host.status();
    let uuids: Vec<String> = status["gpus"]
        .as_array()
        .expect("gpus")
        .iter()
        .map(|g| g["uuid"].as_str().expect("uuid").to_owned())
        .collect();
    assert_eq!(uuids.len(), 4);
    in_child("lab_mixed_four_gpus_and_fixed_telemetry", &host, || {
        let nvml = nvml();
        assert_eq!(nvml.device_count().expect("count"), 4);
        // UUIDs derived from the host description are the same in every
        // process: here nvml-simctl computed `uuids`.
        for (i, uuid) in uuids.iter().enumerate() {
            assert_eq!(
                &nvml
                    .device_by_index(i as u32)
                    .expect("device")
                    .uuid()
                    .expect("uuid"),
                uuid
            );
        }
        check(0, &a100(None, "00000000:07:00.0", Serial::Derived, (1, 1)));
        check(1, &a100(None, "00000000:0F:00.0", Serial::Derived, (0, 0)));
        check(2, &h100(None, "00000000:47:00.0", Serial::Derived));
        check(
            3,
            &Expect {
                uuid: None,
                bus_id: "00000000:B1:00.0",
                ..rtx4090()
            },
        );
        let gpu = nvml.device_by_index(3).expect("4090");
        assert_eq!(
            gpu.compute_mode().expect("compute mode"),
            ComputeMode::ExclusiveProcess
        );
        // Telemetry without a swing is exact.
        let mem = gpu.memory_info().expect("memory");
        assert_eq!(mem.used, 3 * 1024 * MIB);
        let util = gpu.utilization_rates().expect("utilization");
        assert_eq!((util.gpu, util.memory), (40, 25));
        assert_eq!(
            gpu.temperature(TemperatureSensor::Gpu)
                .expect("temperature"),
            58
        );
        assert_eq!(gpu.power_usage().expect("power"), 210_000);
        assert_eq!(gpu.fan_speed(0).expect("fan"), 45);
    });
}

#[test]
fn telemetry_overrides_from_simctl_are_seen_exactly() {
    let host = Host::shipped("config/mainpc/gpus.sim.yaml");
    host.simctl_ok(&[
        "set",
        "--gpu",
        "0",
        "--memory-used",
        "6GiB",
        "--util",
        "77",
        "--memory-util",
        "33",
        "--temperature",
        "81",
        "--power",
        "312.5",
        "--fan",
        "66",
    ]);
    in_child(
        "telemetry_overrides_from_simctl_are_seen_exactly",
        &host,
        || {
            let nvml = nvml();
            let gpu = nvml.device_by_index(0).expect("device");
            let mem = gpu.memory_info().expect("memory");
            assert_eq!(mem.used, 6 * 1024 * MIB);
            assert_eq!(mem.free, mem.total - mem.reserved - mem.used);
            let util = gpu.utilization_rates().expect("utilization");
            assert_eq!((util.gpu, util.memory), (77, 33));
            assert_eq!(
                gpu.temperature(TemperatureSensor::Gpu)
                    .expect("temperature"),
                81
            );
            assert_eq!(gpu.power_usage().expect("power"), 312_500);
            assert_eq!(gpu.fan_speed(0).expect("fan"), 66);
        },
    );
    // Out-of-range values are refused, not clamped silently.
    assert!(
        !host
            .simctl(&["set", "--gpu", "0", "--util", "101"])
            .status
            .success()
    );
    assert!(
        !host
            .simctl(&["set", "--gpu", "0", "--memory-used", "30GiB"])
            .status
            .success()
    );
    assert!(
        !host
            .simctl(&["set", "--gpu", "5", "--util", "1"])
            .status
            .success()
    );
    host.simctl_ok(&["set", "--gpu", "0", "--clear"]);
    let status = host.status();
    assert_eq!(status["gpus"][0]["overrides"], serde_json::json!({}));
}

#[test]
fn bad_host_description_is_refused_everywhere() {
    let host = Host::custom(
        "gpus:\n  - card: @SIM@/rtx4090.yaml\n    pci_bus_id: \"00000000:01:00.0\"\n    mig_mode: enabled\n",
    );
    let out = host.simctl(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("host.yaml") && err.contains("has no MIG"),
        "{err}"
    );
    in_child("bad_host_description_is_refused_everywhere", &host, || {
        let lib = common::cdylib();
        let result = nvml_wrapper::Nvml::builder()
            .lib_path(lib.as_os_str())
            .init();
        assert!(
            matches!(result, Err(NvmlError::DriverNotLoaded)),
            "{:?}",
            result.err()
        );
    });
}
