//! MIG through the C ABI: the calls `nvml-wrapper` wraps, and the GPU- and
//! compute-instance calls it does not (made raw through `nvml-wrapper-sys`
//! with `device.handle()`), plus pending vs current mode, resets, reboots,
//! lost GPUs and visibility of changes across processes.

mod common;

use std::ffi::{CStr, c_uint};
use std::ptr;

use common::{Host, in_child, nvml};
use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper_sys::bindings::{
    NvmlLib, nvmlComputeInstance_t, nvmlComputeInstanceInfo_t, nvmlComputeInstanceProfileInfo_v2_t,
    nvmlDevice_t, nvmlGpuInstance_t, nvmlGpuInstanceInfo_t, nvmlGpuInstancePlacement_t,
    nvmlGpuInstanceProfileInfo_v3_t,
};

const SUCCESS: u32 = 0;
const INVALID_ARGUMENT: u32 = 2;
const NOT_SUPPORTED: u32 = 3;
const NOT_FOUND: u32 = 6;
const INSUFFICIENT_SIZE: u32 = 7;
const GPU_IS_LOST: u32 = 15;
const RESET_REQUIRED: u32 = 16;
const IN_USE: u32 = 19;
const INSUFFICIENT_RESOURCES: u32 = 23;

/// A100-40GB profile ids (what create calls take).
const P_1G5: u32 = 19;
const P_3G20: u32 = 9;
const P_4G20: u32 = 5;
/// Compute-instance profile ids.
const CI_1: u32 = 0;
const CI_3: u32 = 2;
const CI_4: u32 = 3;

const MIB: u64 = 1024 * 1024;

/// The MIG calls `nvml-wrapper` does not wrap, made raw. Every method
/// returns the NVML code alongside the value.
struct Raw<'a> {
    lib: &'a NvmlLib,
}

impl<'a> Raw<'a> {
    fn new(nvml: &'a Nvml) -> Self {
        Self { lib: nvml.lib() }
    }

    fn handle(nvml: &Nvml, index: u32) -> nvmlDevice_t {
        let dev = nvml.device_by_index(index).expect("device");
        // SAFETY: the handle is only passed back to the library it came from.
        unsafe { dev.handle() }
    }

    fn remaining(&self, dev: nvmlDevice_t, profile: u32) -> (u32, u32) {
        let f = self
            .lib
            .nvmlDeviceGetGpuInstanceRemainingCapacity
            .as_ref()
            .expect("exported");
        let mut n = 0;
        // SAFETY: valid handle and out-pointer.
        (unsafe { f(dev, profile, &mut n) }, n)
    }

    fn placements(&self, dev: nvmlDevice_t, profile: u32) -> (u32, Vec<(u32, u32)>) {
        let f = self
            .lib
            .nvmlDeviceGetGpuInstancePossiblePlacements_v2
            .as_ref()
            .expect("exported");
        let mut count = 0;
        // SAFETY: a null array asks for the count only.
        let code = unsafe { f(dev, profile, ptr::null_mut(), &mut count) };
        if code != SUCCESS {
            return (code, Vec::new());
        }
        let mut buf = vec![nvmlGpuInstancePlacement_t { start: 0, size: 0 }; count as usize];
        // SAFETY: the buffer holds `count` placements.
        let code = unsafe { f(dev, profile, buf.as_mut_ptr(), &mut count) };
        (
            code,
            buf.iter()
                .take(count as usize)
                .map(|p| (p.start, p.size))
                .collect(),
        )
    }

    fn create_gi(
        &self,
        dev: nvmlDevice_t,
        profile: u32,
        start: Option<u32>,
    ) -> (u32, nvmlGpuInstance_t) {
        let mut gi: nvmlGpuInstance_t = ptr::null_mut();
        let code = match start {
            None => {
                let f = self
                    .lib
                    .nvmlDeviceCreateGpuInstance
                    .as_ref()
                    .expect("exported");
                // SAFETY: valid handle and out-pointer.
                unsafe { f(dev, profile, &mut gi) }
            }
            Some(start) => {
                let f = self
                    .lib
                    .nvmlDeviceCreateGpuInstanceWithPlacement
                    .as_ref()
                    .expect("exported");
                let (_, placements) = self.placements(dev, profile);
                let size = placements.first().map_or(1, |p| p.1);
                let placement = nvmlGpuInstancePlacement_t { start, size };
                // SAFETY: valid handle, placement and out-pointer.
                unsafe { f(dev, profile, &placement, &mut gi) }
            }
        };
        (code, gi)
    }

    fn gi_info(&self, gi: nvmlGpuInstance_t) -> (u32, nvmlGpuInstanceInfo_t) {
        let f = self.lib.nvmlGpuInstanceGetInfo.as_ref().expect("exported");
        let mut info = nvmlGpuInstanceInfo_t {
            device: ptr::null_mut(),
            id: 0,
            profileId: 0,
            placement: nvmlGpuInstancePlacement_t { start: 0, size: 0 },
        };
        // SAFETY: out-pointer to a properly sized struct.
        (unsafe { f(gi, &mut info) }, info)
    }

    fn gi_by_id(&self, dev: nvmlDevice_t, id: u32) -> (u32, nvmlGpuInstance_t) {
        let f = self
            .lib
            .nvmlDeviceGetGpuInstanceById
            .as_ref()
            .expect("exported");
        let mut gi: nvmlGpuInstance_t = ptr::null_mut();
        // SAFETY: valid handle and out-pointer.
        (unsafe { f(dev, id, &mut gi) }, gi)
    }

    fn gis(&self, dev: nvmlDevice_t, profile: u32) -> (u32, Vec<nvmlGpuInstance_t>) {
        let f = self
            .lib
            .nvmlDeviceGetGpuInstances
            .as_ref()
            .expect("exported");
        let mut buf: Vec<nvmlGpuInstance_t> = vec![ptr::null_mut(); 8];
        let mut count = 0;
        // SAFETY: the buffer holds more than any profile's instance count.
        let code = unsafe { f(dev, profile, buf.as_mut_ptr(), &mut count) };
        buf.truncate(count as usize);
        (code, buf)
    }

    fn destroy_gi(&self, gi: nvmlGpuInstance_t) -> u32 {
        let f = self.lib.nvmlGpuInstanceDestroy.as_ref().expect("exported");
        // SAFETY: the handle came from this library.
        unsafe { f(gi) }
    }

    fn ci_profile(
        &self,
        gi: nvmlGpuInstance_t,
        index: u32,
        version: u32,
    ) -> (u32, nvmlComputeInstanceProfileInfo_v2_t) {
        let f = self
            .lib
            .nvmlGpuInstanceGetComputeInstanceProfileInfoV
            .as_ref()
            .expect("exported");
        let mut info = nvmlComputeInstanceProfileInfo_v2_t {
            version,
            id: 0,
            sliceCount: 0,
            instanceCount: 0,
            multiprocessorCount: 0,
            sharedCopyEngineCount: 0,
            sharedDecoderCount: 0,
            sharedEncoderCount: 0,
            sharedJpegCount: 0,
            sharedOfaCount: 0,
            name: [0; 96],
        };
        // SAFETY: out-pointer to a v2 struct with its version set.
        (unsafe { f(gi, index, 0, &mut info) }, info)
    }

    fn create_ci(&self, gi: nvmlGpuInstance_t, profile: u32) -> (u32, nvmlComputeInstance_t) {
        let f = self
            .lib
            .nvmlGpuInstanceCreateComputeInstance
            .as_ref()
            .expect("exported");
        let mut ci: nvmlComputeInstance_t = ptr::null_mut();
        // SAFETY: valid handle and out-pointer.
        (unsafe { f(gi, profile, &mut ci) }, ci)
    }

    fn ci_remaining(&self, gi: nvmlGpuInstance_t, profile: u32) -> (u32, u32) {
        let f = self
            .lib
            .nvmlGpuInstanceGetComputeInstanceRemainingCapacity
            .as_ref()
            .expect("exported");
        let mut n = 0;
        // SAFETY: valid handle and out-pointer.
        (unsafe { f(gi, profile, &mut n) }, n)
    }

    fn cis(&self, gi: nvmlGpuInstance_t, profile: u32) -> (u32, Vec<nvmlComputeInstance_t>) {
        let f = self
            .lib
            .nvmlGpuInstanceGetComputeInstances
            .as_ref()
            .expect("exported");
        let mut buf: Vec<nvmlComputeInstance_t> = vec![ptr::null_mut(); 8];
        let mut count = 0;
        // SAFETY: the buffer holds more than any profile's instance count.
        let code = unsafe { f(gi, profile, buf.as_mut_ptr(), &mut count) };
        buf.truncate(count as usize);
        (code, buf)
    }

    fn ci_info(&self, ci: nvmlComputeInstance_t) -> (u32, nvmlComputeInstanceInfo_t) {
        let f = self
            .lib
            .nvmlComputeInstanceGetInfo_v2
            .as_ref()
            .expect("exported");
        let mut info = nvmlComputeInstanceInfo_t {
            device: ptr::null_mut(),
            gpuInstance: ptr::null_mut(),
            id: 0,
            profileId: 0,
            placement: nvml_wrapper_sys::bindings::nvmlComputeInstancePlacement_t {
                start: 0,
                size: 0,
            },
        };
        // SAFETY: out-pointer to a properly sized struct.
        (unsafe { f(ci, &mut info) }, info)
    }

    fn destroy_ci(&self, ci: nvmlComputeInstance_t) -> u32 {
        let f = self
            .lib
            .nvmlComputeInstanceDestroy
            .as_ref()
            .expect("exported");
        // SAFETY: the handle came from this library.
        unsafe { f(ci) }
    }
}

fn name_of(raw: &[std::ffi::c_char]) -> String {
    // SAFETY: the library NUL-terminates names within the array.
    unsafe { CStr::from_ptr(raw.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// Runs `nvml-simctl` from inside a child (the environment is inherited).
fn simctl(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_nvml-simctl"))
        .args(args)
        .output()
        .expect("run nvml-simctl")
}

fn simctl_ok(args: &[&str]) -> String {
    let out = simctl(args);
    assert!(
        out.status.success(),
        "nvml-simctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn status() -> serde_json::Value {
    serde_json::from_str(&simctl_ok(&["status"])).expect("JSON")
}

#[test]
fn a100_instances_capacity_placements_and_mig_devices() {
    let host = Host::shipped("config/sim/lab-a100.yaml");
    in_child(
        "a100_instances_capacity_placements_and_mig_devices",
        &host,
        || {
            let nvml = nvml();
            let raw = Raw::new(&nvml);
            let dev = Raw::handle(&nvml, 0);

            assert_eq!(raw.remaining(dev, P_1G5), (SUCCESS, 7));
            assert_eq!(raw.placements(dev, P_3G20), (SUCCESS, vec![(0, 4), (4, 4)]));
            assert_eq!(
                raw.placements(dev, 15),
                (SUCCESS, vec![(0, 2), (2, 2), (4, 2), (6, 2)])
            );
            // A too-small array is INSUFFICIENT_SIZE and reports the count needed.
            let f = raw
                .lib
                .nvmlDeviceGetGpuInstancePossiblePlacements_v2
                .as_ref()
                .expect("exported");
            let mut one = [nvmlGpuInstancePlacement_t { start: 0, size: 0 }];
            let mut count = 1;
            // SAFETY: the array holds `count` entries.
            let code = unsafe { f(dev, P_3G20, one.as_mut_ptr(), &mut count) };
            assert_eq!(code, INSUFFICIENT_SIZE);
            assert_eq!(count, 2);
            // Profile *index* 2 is 3g.20gb, but create calls take the *id*: 2 is no id.
            assert_eq!(raw.create_gi(dev, 2, None).0, INVALID_ARGUMENT);

            // 4g.20gb at placement 0: a 3g.20gb then fits only at 4, a second 4g nowhere.
            let (code, g4) = raw.create_gi(dev, P_4G20, Some(0));
            assert_eq!(code, SUCCESS);
            assert_eq!(
                raw.create_gi(dev, P_3G20, Some(0)).0,
                INSUFFICIENT_RESOURCES
            );
            assert_eq!(
                raw.create_gi(dev, P_3G20, Some(2)).0,
                INVALID_ARGUMENT,
                "2 is not a 3g placement"
            );
            assert_eq!(raw.remaining(dev, P_3G20), (SUCCESS, 1));
            let (code, g3) = raw.create_gi(dev, P_3G20, Some(4));
            assert_eq!(code, SUCCESS);
            assert_eq!(raw.create_gi(dev, P_4G20, None).0, INSUFFICIENT_RESOURCES);
            assert_eq!(raw.create_gi(dev, P_1G5, None).0, INSUFFICIENT_RESOURCES);
            for profile in [P_1G5, 20, 15, 14, P_3G20, P_4G20, 0] {
                assert_eq!(
                    raw.remaining(dev, profile),
                    (SUCCESS, 0),
                    "profile {profile}"
                );
            }

            let (code, info) = raw.gi_info(g4);
            assert_eq!(code, SUCCESS);
            assert_eq!(
                (
                    info.id,
                    info.profileId,
                    info.placement.start,
                    info.placement.size
                ),
                (1, P_4G20, 0, 4)
            );
            assert_eq!(
                info.device, dev,
                "GPU-instance info names the parent device handle"
            );
            let (code, info) = raw.gi_info(g3);
            assert_eq!(code, SUCCESS);
            assert_eq!(
                (
                    info.id,
                    info.profileId,
                    info.placement.start,
                    info.placement.size
                ),
                (2, P_3G20, 4, 4)
            );
            assert_eq!(raw.gi_by_id(dev, 2), (SUCCESS, g3), "handles are stable");
            assert_eq!(raw.gi_by_id(dev, 9).0, NOT_FOUND);
            assert_eq!(raw.gis(dev, P_3G20), (SUCCESS, vec![g3]));
            assert_eq!(raw.gis(dev, P_1G5), (SUCCESS, vec![]));

            // Compute-instance profiles inside the 3g.20gb.
            let (code, p) = raw.ci_profile(g3, 0, 0x0200_0088);
            assert_eq!(code, SUCCESS);
            assert_eq!(
                (p.id, p.sliceCount, p.instanceCount, p.multiprocessorCount),
                (CI_1, 1, 3, 14)
            );
            assert_eq!(name_of(&p.name), "MIG 1c.3g.20gb");
            let (code, p) = raw.ci_profile(g3, 2, 0x0200_0088);
            assert_eq!(code, SUCCESS);
            assert_eq!(
                (p.id, p.instanceCount, p.multiprocessorCount),
                (CI_3, 1, 42)
            );
            assert_eq!(name_of(&p.name), "MIG 3g.20gb");
            assert_eq!(
                raw.ci_profile(g3, 3, 0x0200_0088).0,
                NOT_SUPPORTED,
                "no 4-slice CI in a 3-slice GI"
            );
            assert_eq!(
                raw.ci_profile(g3, 0, 0x0100_0088).0,
                25,
                "wrong struct version"
            );

            // One full-size CI in each GI.
            assert_eq!(raw.ci_remaining(g3, CI_1), (SUCCESS, 3));
            let (code, c3) = raw.create_ci(g3, CI_3);
            assert_eq!(code, SUCCESS);
            assert_eq!(raw.ci_remaining(g3, CI_1), (SUCCESS, 0));
            assert_eq!(raw.create_ci(g3, CI_1).0, INSUFFICIENT_RESOURCES);
            assert_eq!(
                raw.create_ci(g3, CI_4).0,
                INVALID_ARGUMENT,
                "CI profile not offered in a 3g"
            );
            let (code, c4) = raw.create_ci(g4, CI_4);
            assert_eq!(code, SUCCESS);
            assert_eq!(raw.cis(g3, CI_3), (SUCCESS, vec![c3]));
            let (code, info) = raw.ci_info(c3);
            assert_eq!(code, SUCCESS);
            assert_eq!(
                (
                    info.id,
                    info.profileId,
                    info.placement.start,
                    info.placement.size
                ),
                (0, CI_3, 0, 3)
            );
            assert_eq!((info.gpuInstance, info.device), (g3, dev));
            assert_eq!(
                raw.destroy_gi(g3),
                IN_USE,
                "a GI with compute instances cannot be destroyed"
            );

            // MIG devices: one per compute instance, by GI id then CI id.
            let parent = nvml.device_by_index(0).expect("device");
            assert_eq!(parent.mig_device_count().expect("max"), 7);
            let m0 = parent.mig_device_by_index(0).expect("MIG device 0");
            let m1 = parent.mig_device_by_index(1).expect("MIG device 1");
            assert!(matches!(
                parent.mig_device_by_index(2),
                Err(NvmlError::NotFound)
            ));
            assert!(matches!(
                parent.mig_device_by_index(7),
                Err(NvmlError::InvalidArg)
            ));
            assert_eq!(
                m0.name().expect("name"),
                "NVIDIA A100-SXM4-40GB MIG 4g.20gb"
            );
            assert_eq!(
                m1.name().expect("name"),
                "NVIDIA A100-SXM4-40GB MIG 3g.20gb"
            );
            let uuid = m1.uuid().expect("MIG uuid");
            assert!(uuid.starts_with("MIG-") && uuid.len() == 40, "{uuid}");
            assert_ne!(uuid, m0.uuid().expect("uuid"));
            assert_eq!(m1.memory_info().expect("memory").total, 19968 * MIB);
            assert!(m1.mig_is_mig_device_handle().expect("is MIG"));
            assert_eq!(
                m1.mig_parent_device()
                    .expect("parent")
                    .uuid()
                    .expect("uuid"),
                parent.uuid().expect("uuid")
            );
            assert!(matches!(
                m1.utilization_rates(),
                Err(NvmlError::NotSupported)
            ));
            assert!(matches!(
                m1.temperature(TemperatureSensor::Gpu),
                Err(NvmlError::NotSupported)
            ));
            assert!(matches!(m1.power_usage(), Err(NvmlError::NotSupported)));
            let by_uuid = nvml
                .device_by_uuid(uuid.as_str())
                .expect("MIG device by UUID");
            assert_eq!(
                by_uuid.name().expect("name"),
                "NVIDIA A100-SXM4-40GB MIG 3g.20gb"
            );
            let ids = |d: &nvml_wrapper::Device<'_>| {
                let f = raw
                    .lib
                    .nvmlDeviceGetGpuInstanceId
                    .as_ref()
                    .expect("exported");
                let g = raw
                    .lib
                    .nvmlDeviceGetComputeInstanceId
                    .as_ref()
                    .expect("exported");
                let (mut gi, mut ci) = (0, 0);
                // SAFETY: valid handles and out-pointers.
                let codes = unsafe { (f(d.handle(), &mut gi), g(d.handle(), &mut ci)) };
                (codes, gi, ci)
            };
            assert_eq!(ids(&m1), ((SUCCESS, SUCCESS), 2, 0));
            assert_eq!(ids(&parent).0, (NOT_SUPPORTED, NOT_SUPPORTED));

            // Another process (nvml-simctl) sees the same layout and MIG UUIDs.
            let s = status();
            let gis = s["gpus"][0]["mig"]["gpu_instances"]
                .as_array()
                .expect("GIs")
                .clone();
            let summary: Vec<(u64, &str, u64)> = gis
                .iter()
                .map(|g| {
                    (
                        g["id"].as_u64().expect("id"),
                        g["profile"].as_str().expect("profile"),
                        g["placement"]["start"].as_u64().expect("start"),
                    )
                })
                .collect();
            assert_eq!(summary, vec![(1, "4g.20gb", 0), (2, "3g.20gb", 4)]);
            assert_eq!(gis[1]["compute_instances"][0]["mig_uuid"], uuid.as_str());

            // ... and this process sees what another one changes.
            simctl_ok(&["destroy-gi", "--gpu", "0", "--gi", "2", "--with-cis"]);
            assert_eq!(raw.gi_by_id(dev, 2).0, NOT_FOUND);
            assert_eq!(raw.gi_info(g3).0, INVALID_ARGUMENT, "stale GI handle");
            assert!(
                matches!(m1.name(), Err(NvmlError::InvalidArg)),
                "stale MIG handle"
            );
            assert_eq!(raw.remaining(dev, P_3G20), (SUCCESS, 1));
            let out = simctl_ok(&["create-gi", "--gpu", "0", "--profile", "3g.20gb"]);
            assert!(out.contains("\"gpu_instance\":2"), "{out}");
            let (code, again) = raw.gi_by_id(dev, 2);
            assert_eq!((code, again), (SUCCESS, g3), "same id, same handle");
            assert_eq!(
                parent
                    .mig_device_by_index(1)
                    .expect("MIG device")
                    .name()
                    .expect("name"),
                m1.name().expect("name")
            );

            // Tear down through the API; nvml-simctl sees the GPU empty.
            assert_eq!(raw.destroy_ci(c4), SUCCESS);
            assert_eq!(raw.destroy_ci(c4), INVALID_ARGUMENT, "already destroyed");
            assert_eq!(raw.destroy_gi(g4), SUCCESS);
            let (_, cis) = raw.cis(g3, CI_3);
            for ci in cis {
                assert_eq!(raw.destroy_ci(ci), SUCCESS);
            }
            assert_eq!(raw.destroy_gi(g3), SUCCESS);
            assert_eq!(
                status()["gpus"][0]["mig"]["gpu_instances"],
                serde_json::json!([])
            );
            assert_eq!(raw.remaining(dev, P_1G5), (SUCCESS, 7));
        },
    );
}

#[test]
fn one_plus_me_instance_and_default_placements() {
    let host = Host::shipped("config/sim/lab-h100.yaml");
    in_child("one_plus_me_instance_and_default_placements", &host, || {
        let nvml = nvml();
        let raw = Raw::new(&nvml);
        let dev = Raw::handle(&nvml, 0);
        let (code, me) = raw.create_gi(dev, 20, None);
        assert_eq!(code, SUCCESS);
        assert_eq!(
            raw.create_gi(dev, 20, None).0,
            INSUFFICIENT_RESOURCES,
            "one +me per GPU"
        );
        assert_eq!(raw.remaining(dev, 19), (SUCCESS, 6));
        // The driver places from the top: the +me went to slice 6 (id 13).
        assert_eq!(raw.gi_info(me).1.id, 13);
        // Profile info V with a v3 struct carries the name and capabilities.
        let f = raw
            .lib
            .nvmlDeviceGetGpuInstanceProfileInfoV
            .as_ref()
            .expect("exported");
        // SAFETY: all-zero is a valid value for this plain C struct.
        let mut info: nvmlGpuInstanceProfileInfo_v3_t = unsafe { std::mem::zeroed() };
        info.version = 0x0300_0098;
        // SAFETY: out-pointer to a v3 struct with its version set.
        assert_eq!(unsafe { f(dev, 9, (&raw mut info).cast()) }, SUCCESS);
        assert_eq!(
            (info.id, info.memorySizeMB, info.multiprocessorCount),
            (15, 20096, 26)
        );
        assert_eq!(name_of(&info.name), "MIG 1g.20gb");
        info.version = 0x0400_0098;
        // SAFETY: as above.
        let code = unsafe { f(dev, 9, (&raw mut info).cast()) };
        assert_eq!(code, 25, "unknown version");
    });
}

#[test]
fn mig_mode_is_pending_until_reset() {
    let host = Host::shipped("config/sim/lab-mixed.yaml");
    in_child("mig_mode_is_pending_until_reset", &host, || {
        let nvml = nvml();
        let raw = Raw::new(&nvml);
        let gpu = nvml.device_by_index(1).expect("second A100");
        let dev = Raw::handle(&nvml, 1);
        let mode = |d: &nvml_wrapper::Device<'_>| {
            let m = d.mig_mode().expect("MIG mode");
            (m.current, m.pending)
        };
        assert_eq!(mode(&gpu), (0, 0));
        assert_eq!(gpu.mig_device_count().expect("max"), 0);
        assert_eq!(
            raw.create_gi(dev, P_1G5, None).0,
            NOT_SUPPORTED,
            "MIG not enabled"
        );
        assert_eq!(raw.remaining(dev, P_1G5).0, NOT_SUPPORTED);
        // Profile facts are readable before MIG is enabled.
        assert_eq!(gpu.profile_info(0).expect("profile").id, P_1G5);

        assert_eq!(gpu.set_mig_mode(true).expect("set"), RESET_REQUIRED);
        assert_eq!(mode(&gpu), (0, 1));
        assert_eq!(
            raw.create_gi(dev, P_1G5, None).0,
            NOT_SUPPORTED,
            "still pending"
        );
        assert_eq!(
            status()["gpus"][1]["mig"]["pending"],
            "enabled",
            "visible to other processes"
        );

        simctl_ok(&["reset", "--gpu", "1"]);
        assert_eq!(mode(&gpu), (1, 1));
        assert_eq!(gpu.mig_device_count().expect("max"), 7);
        assert_eq!(
            gpu.set_mig_mode(true).expect("set"),
            SUCCESS,
            "already current"
        );
        let (code, gi) = raw.create_gi(dev, P_1G5, None);
        assert_eq!(code, SUCCESS);

        // Disabling is pending too; the layout stays until the reset.
        assert_eq!(gpu.set_mig_mode(false).expect("set"), RESET_REQUIRED);
        assert_eq!(mode(&gpu), (1, 0));
        assert_eq!(raw.gi_info(gi).0, SUCCESS);
        simctl_ok(&["reset", "--gpu", "1"]);
        assert_eq!(mode(&gpu), (0, 0));
        assert_eq!(raw.gi_info(gi).0, INVALID_ARGUMENT, "the layout is gone");
        assert_eq!(raw.gis(dev, P_1G5).0, NOT_SUPPORTED);

        // A reset keeps the mode and drops the layout.
        let a100 = Raw::handle(&nvml, 0);
        assert_eq!(raw.create_gi(a100, P_3G20, None).0, SUCCESS);
        simctl_ok(&["reset", "--gpu", "0"]);
        assert_eq!(raw.remaining(a100, P_3G20), (SUCCESS, 2));
        assert_eq!(mode(&nvml.device_by_index(0).expect("A100")), (1, 1));
    });
}

#[test]
fn reboot_keeps_ampere_mig_mode_and_loses_hopper_mode() {
    let host = Host::shipped("config/sim/lab-mixed.yaml");
    in_child(
        "reboot_keeps_ampere_mig_mode_and_loses_hopper_mode",
        &host,
        || {
            let nvml = nvml();
            let raw = Raw::new(&nvml);
            let a100 = Raw::handle(&nvml, 0);
            let h100 = Raw::handle(&nvml, 2);
            assert_eq!(raw.create_gi(a100, P_3G20, None).0, SUCCESS);
            assert_eq!(raw.create_gi(h100, P_3G20, None).0, SUCCESS);
            nvml.device_by_index(1)
                .expect("A100 #2")
                .set_mig_mode(true)
                .expect("set pending");
            simctl_ok(&["reboot"]);
            let mode = |i: u32| {
                let m = nvml
                    .device_by_index(i)
                    .expect("device")
                    .mig_mode()
                    .expect("mode");
                (m.current, m.pending)
            };
            assert_eq!(mode(0), (1, 1), "Ampere keeps MIG mode");
            assert_eq!(mode(1), (1, 1), "pending mode applied at boot");
            assert_eq!(mode(2), (0, 0), "Hopper loses MIG mode");
            assert_eq!(raw.remaining(a100, P_3G20), (SUCCESS, 2), "layout lost");
            assert_eq!(raw.create_gi(h100, P_3G20, None).0, NOT_SUPPORTED);
        },
    );
}

#[test]
fn lost_gpu_returns_gpu_is_lost() {
    let host = Host::shipped("config/sim/lab-mixed.yaml");
    in_child("lost_gpu_returns_gpu_is_lost", &host, || {
        let nvml = nvml();
        let raw = Raw::new(&nvml);
        let dev = Raw::handle(&nvml, 0);
        let (_, gi) = raw.create_gi(dev, P_3G20, None);
        assert_eq!(raw.create_ci(gi, CI_3).0, SUCCESS);
        let gpu = nvml.device_by_index(0).expect("A100");
        let mig = gpu.mig_device_by_index(0).expect("MIG device");

        simctl_ok(&["lose", "--gpu", "0"]);
        assert_eq!(
            nvml.device_count().expect("count"),
            4,
            "a lost GPU still counts"
        );
        assert!(matches!(nvml.device_by_index(0), Err(NvmlError::GpuLost)));
        assert!(matches!(gpu.name(), Err(NvmlError::GpuLost)));
        assert!(matches!(gpu.memory_info(), Err(NvmlError::GpuLost)));
        assert!(matches!(mig.uuid(), Err(NvmlError::GpuLost)));
        assert_eq!(raw.gi_info(gi).0, GPU_IS_LOST);
        assert_eq!(raw.create_gi(dev, P_1G5, None).0, GPU_IS_LOST);
        assert!(nvml.device_by_index(1).expect("other GPU").name().is_ok());
        assert_eq!(status()["gpus"][0]["lost"], true);

        simctl_ok(&["restore", "--gpu", "0"]);
        assert_eq!(gpu.name().expect("name"), "NVIDIA A100-SXM4-40GB");
        assert_eq!(
            raw.gi_info(gi).0,
            INVALID_ARGUMENT,
            "a GPU comes back reset"
        );
        assert_eq!(raw.remaining(dev, P_3G20), (SUCCESS, 2));
    });
}

#[test]
fn errors_follow_nvml_conventions() {
    let host = Host::shipped("config/sim/lab-a100.yaml");
    in_child("errors_follow_nvml_conventions", &host, || {
        let path = common::cdylib();
        // SAFETY: loads the simulator; no initialisation routine has side effects.
        let lib = unsafe { NvmlLib::new(path.as_os_str()) }.expect("load the library");
        let count_fn = lib.nvmlDeviceGetCount_v2.as_ref().expect("exported");
        let init = lib.nvmlInit_v2.as_ref().expect("exported");
        let shutdown = lib.nvmlShutdown.as_ref().expect("exported");
        let mut n: c_uint = 0;
        // SAFETY: plain C calls with valid out-pointers (or null on purpose).
        unsafe {
            assert_eq!(count_fn(&mut n), 1, "UNINITIALIZED before nvmlInit");
            assert_eq!(shutdown(), 1, "shutdown without init");
            assert_eq!(init(), SUCCESS);
            assert_eq!(init(), SUCCESS, "init is reference counted");
            assert_eq!(count_fn(&mut n), SUCCESS);
            assert_eq!(n, 1);
            assert_eq!(count_fn(ptr::null_mut()), INVALID_ARGUMENT);
            assert_eq!(shutdown(), SUCCESS);
            assert_eq!(count_fn(&mut n), SUCCESS, "still one reference");

            let mut dev: nvmlDevice_t = ptr::null_mut();
            let by_index = lib
                .nvmlDeviceGetHandleByIndex_v2
                .as_ref()
                .expect("exported");
            assert_eq!(by_index(0, &mut dev), SUCCESS);
            let mut other: nvmlDevice_t = ptr::null_mut();
            assert_eq!(by_index(1, &mut other), INVALID_ARGUMENT, "only one GPU");
            assert_eq!(by_index(0, ptr::null_mut()), INVALID_ARGUMENT);

            let name = lib.nvmlDeviceGetName.as_ref().expect("exported");
            let mut buf = [0 as std::ffi::c_char; 96];
            assert_eq!(name(dev, buf.as_mut_ptr(), 96), SUCCESS);
            assert_eq!(name_of(&buf), "NVIDIA A100-SXM4-40GB");
            assert_eq!(name(dev, buf.as_mut_ptr(), 5), INSUFFICIENT_SIZE);
            assert_eq!(name(dev, ptr::null_mut(), 96), INVALID_ARGUMENT);
            let garbage = 0x1000 as nvmlDevice_t;
            assert_eq!(
                name(garbage, buf.as_mut_ptr(), 96),
                INVALID_ARGUMENT,
                "unknown handle"
            );
            assert_eq!(
                name(ptr::null_mut(), buf.as_mut_ptr(), 96),
                INVALID_ARGUMENT
            );

            // nvmlDeviceGetMemoryInfo_v2 checks the struct version.
            let mem_v2 = lib.nvmlDeviceGetMemoryInfo_v2.as_ref().expect("exported");
            let mut mem: nvml_wrapper_sys::bindings::nvmlMemory_v2_t = std::mem::zeroed();
            mem.version = 40 | (1 << 24);
            assert_eq!(mem_v2(dev, &mut mem), 25, "ARGUMENT_VERSION_MISMATCH");
            mem.version = 40 | (2 << 24);
            assert_eq!(mem_v2(dev, &mut mem), SUCCESS);
            assert_eq!(mem.total, 40960 * MIB);

            let error_string = lib.nvmlErrorString.as_ref().expect("exported");
            assert_eq!(
                CStr::from_ptr(error_string(25)).to_str(),
                Ok("Argument version mismatch")
            );
            assert_eq!(CStr::from_ptr(error_string(15)).to_str(), Ok("GPU is lost"));
            assert_eq!(
                CStr::from_ptr(error_string(12345)).to_str(),
                Ok("Unknown Error")
            );

            assert_eq!(shutdown(), SUCCESS);
            assert_eq!(count_fn(&mut n), 1, "UNINITIALIZED after the last shutdown");
            assert_eq!(name(dev, buf.as_mut_ptr(), 96), 1);
            // Handles stay valid across a new init.
            assert_eq!(init(), SUCCESS);
            assert_eq!(name(dev, buf.as_mut_ptr(), 96), SUCCESS);
            assert_eq!(shutdown(), SUCCESS);
        }
    });
}

#[test]
fn missing_host_description_fails_init() {
    let host = Host::missing();
    in_child("missing_host_description_fails_init", &host, || {
        let lib = common::cdylib();
        let result = Nvml::builder().lib_path(lib.as_os_str()).init();
        assert!(
            matches!(result, Err(NvmlError::DriverNotLoaded)),
            "{:?}",
            result.err()
        );
    });
}
