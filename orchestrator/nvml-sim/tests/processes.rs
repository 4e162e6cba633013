//! Processes on simulated GPUs as NVML reports them, one test per rule of
//! the real library: the count / INSUFFICIENT_SIZE protocol, the v1, v2 and
//! v3 structs, which list shows which kind of context, MIG parents and MIG
//! devices, `NVML_VALUE_NOT_AVAILABLE` for unprivileged callers on a MIG
//! parent, device memory and utilisation following the processes, and
//! `nvmlDeviceGetProcessUtilization`'s samples and `lastSeenTimeStamp`.
//!
//! The `_v3` calls go through `nvml-wrapper` where it wraps them; the
//! older calls (only in `nvml-wrapper-sys`'s legacy feature) and the raw
//! protocol are made through the library's symbols with `libloading`.

mod common;

use std::ffi::c_uint;
use std::ptr;

use common::{Host, in_child, in_child_env, nvml};
use nvml_wrapper::Nvml;
use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper_sys::bindings::{
    nvmlDevice_t, nvmlMemory_v2_t, nvmlProcessInfo_t, nvmlProcessInfo_v1_t,
    nvmlProcessUtilizationSample_t, nvmlReturn_t,
};

const SUCCESS: nvmlReturn_t = 0;
const INVALID_ARGUMENT: nvmlReturn_t = 2;
const NOT_SUPPORTED: nvmlReturn_t = 3;
const NOT_FOUND: nvmlReturn_t = 6;
const INSUFFICIENT_SIZE: nvmlReturn_t = 7;
const GPU_IS_LOST: nvmlReturn_t = 15;
const NO_INSTANCE: u32 = 0xFFFF_FFFF;
const NOT_AVAILABLE: u64 = u64::MAX;
const MIB: u64 = 1024 * 1024;

type ListV1 =
    unsafe extern "C" fn(nvmlDevice_t, *mut c_uint, *mut nvmlProcessInfo_v1_t) -> nvmlReturn_t;
type ListV2 =
    unsafe extern "C" fn(nvmlDevice_t, *mut c_uint, *mut nvmlProcessInfo_t) -> nvmlReturn_t;
type Util = unsafe extern "C" fn(
    nvmlDevice_t,
    *mut nvmlProcessUtilizationSample_t,
    *mut c_uint,
    u64,
) -> nvmlReturn_t;
type MemV2 = unsafe extern "C" fn(nvmlDevice_t, *mut nvmlMemory_v2_t) -> nvmlReturn_t;

/// The library's own symbols, for the calls `nvml-wrapper` does not make.
struct Lib(libloading::Library);

impl Lib {
    fn open() -> Self {
        // SAFETY: the simulator's library; dlopen hands back the instance
        // `nvml-wrapper` already loaded (one per file per process).
        Lib(unsafe { libloading::Library::new(common::cdylib()) }.expect("load the simulator"))
    }

    fn sym<T: Copy>(&self, name: &str) -> T {
        // SAFETY: each caller names the symbol with its nvml.h signature.
        unsafe { *self.0.get::<T>(name.as_bytes()).expect(name) }
    }

    /// The raw protocol: `(code, count)` for an array of `capacity`.
    fn v1(
        &self,
        name: &str,
        dev: nvmlDevice_t,
        capacity: u32,
    ) -> (nvmlReturn_t, u32, Vec<nvmlProcessInfo_v1_t>) {
        let f: ListV1 = self.sym(name);
        let mut buf = vec![
            nvmlProcessInfo_v1_t {
                pid: 0,
                usedGpuMemory: 0
            };
            capacity as usize
        ];
        let mut count = capacity;
        let out = if capacity == 0 {
            ptr::null_mut()
        } else {
            buf.as_mut_ptr()
        };
        // SAFETY: `out` is null or holds `count` v1 structs.
        let code = unsafe { f(dev, &mut count, out) };
        buf.truncate(if code == SUCCESS { count as usize } else { 0 });
        (code, count, buf)
    }

    fn v2(
        &self,
        name: &str,
        dev: nvmlDevice_t,
        capacity: u32,
    ) -> (nvmlReturn_t, u32, Vec<nvmlProcessInfo_t>) {
        let f: ListV2 = self.sym(name);
        let zero = nvmlProcessInfo_t {
            pid: 0,
            usedGpuMemory: 0,
            gpuInstanceId: 0,
            computeInstanceId: 0,
        };
        let mut buf = vec![zero; capacity as usize];
        let mut count = capacity;
        let out = if capacity == 0 {
            ptr::null_mut()
        } else {
            buf.as_mut_ptr()
        };
        // SAFETY: `out` is null or holds `count` v2 structs.
        let code = unsafe { f(dev, &mut count, out) };
        buf.truncate(if code == SUCCESS { count as usize } else { 0 });
        (code, count, buf)
    }

    fn util(
        &self,
        dev: nvmlDevice_t,
        capacity: u32,
        last_seen: u64,
    ) -> (nvmlReturn_t, u32, Vec<nvmlProcessUtilizationSample_t>) {
        let f: Util = self.sym("nvmlDeviceGetProcessUtilization");
        let zero = nvmlProcessUtilizationSample_t {
            pid: 0,
            timeStamp: 0,
            smUtil: 0,
            memUtil: 0,
            encUtil: 0,
            decUtil: 0,
        };
        let mut buf = vec![zero; capacity as usize];
        let mut count = capacity;
        let out = if capacity == 0 {
            ptr::null_mut()
        } else {
            buf.as_mut_ptr()
        };
        // SAFETY: `out` is null or holds `count` samples.
        let code = unsafe { f(dev, out, &mut count, last_seen) };
        buf.truncate(if code == SUCCESS { count as usize } else { 0 });
        (code, count, buf)
    }

    fn memory_used(&self, dev: nvmlDevice_t) -> u64 {
        let f: MemV2 = self.sym("nvmlDeviceGetMemoryInfo_v2");
        let mut m = nvmlMemory_v2_t {
            version: 0x0200_0028,
            total: 0,
            reserved: 0,
            free: 0,
            used: 0,
        };
        // SAFETY: a v2 struct with its version.
        assert_eq!(unsafe { f(dev, &mut m) }, SUCCESS);
        assert_eq!(m.total, m.reserved + m.used + m.free);
        m.used
    }
}

fn handle(nvml: &Nvml, index: u32) -> nvmlDevice_t {
    let dev = nvml.device_by_index(index).expect("device");
    // SAFETY: only passed back to the library it came from, which stays loaded.
    unsafe { dev.handle() }
}

fn pids_v2(list: &[nvmlProcessInfo_t]) -> Vec<u32> {
    list.iter().map(|p| p.pid).collect()
}

const COMPUTE_V1: &str = "nvmlDeviceGetComputeRunningProcesses";
const COMPUTE_V2: &str = "nvmlDeviceGetComputeRunningProcesses_v2";
const COMPUTE_V3: &str = "nvmlDeviceGetComputeRunningProcesses_v3";

#[test]
fn the_count_protocol_is_nvmls() {
    let host = Host::shipped("config/mainpc/gpus.sim.yaml");
    in_child("the_count_protocol_is_nvmls", &host, || {
        let nvml = nvml();
        let lib = Lib::open();
        let dev = handle(&nvml, 0);
        for name in [COMPUTE_V1, COMPUTE_V2, COMPUTE_V3] {
            let (code, count, _) = lib.v2(name, dev, 0);
            assert_eq!((code, count), (SUCCESS, 0), "{name}: none running");
        }
        for pid in [300, 301, 302] {
            host.simctl_ok(&[
                "process",
                "add",
                "--gpu",
                "0",
                "--pid",
                &pid.to_string(),
                "--used",
                "100MiB",
            ]);
        }
        for name in [COMPUTE_V2, COMPUTE_V3] {
            let (code, count, _) = lib.v2(name, dev, 0);
            assert_eq!((code, count), (INSUFFICIENT_SIZE, 3), "{name}: count query");
            let (code, count, _) = lib.v2(name, dev, 2);
            assert_eq!(
                (code, count),
                (INSUFFICIENT_SIZE, 3),
                "{name}: array too small"
            );
            let (code, count, list) = lib.v2(name, dev, 8);
            assert_eq!((code, count), (SUCCESS, 3), "{name}: room to spare");
            assert_eq!(pids_v2(&list), [300, 301, 302]);
        }
        let (code, count, _) = lib.v1(COMPUTE_V1, dev, 1);
        assert_eq!((code, count), (INSUFFICIENT_SIZE, 3));
        let f: ListV2 = lib.sym(COMPUTE_V3);
        // SAFETY: a null count pointer is what is being tested.
        let code = unsafe { f(dev, ptr::null_mut(), ptr::null_mut()) };
        assert_eq!(code, INVALID_ARGUMENT, "null infoCount");
        let mut count: c_uint = 3;
        // SAFETY: a null array with a non-zero count is what is being tested.
        let code = unsafe { f(dev, &mut count, ptr::null_mut()) };
        assert_eq!(code, INVALID_ARGUMENT, "room claimed for a null array");
    });
}

#[test]
fn struct_versions_carry_what_each_version_has() {
    let host = Host::shipped("config/mainpc/gpus.sim.yaml");
    in_child("struct_versions_carry_what_each_version_has", &host, || {
        host.simctl_ok(&[
            "process", "add", "--gpu", "0", "--pid", "41", "--used", "1GiB",
        ]);
        host.simctl_ok(&[
            "process", "add", "--gpu", "0", "--pid", "42", "--used", "2GiB",
        ]);
        let nvml = nvml();
        let lib = Lib::open();
        let dev = handle(&nvml, 0);
        // v1 entries are 16 bytes: a second entry read at the right stride
        // proves the struct's size.
        let (code, _, v1) = lib.v1(COMPUTE_V1, dev, 4);
        assert_eq!(code, SUCCESS);
        let v1: Vec<(u32, u64)> = v1.iter().map(|p| (p.pid, p.usedGpuMemory)).collect();
        assert_eq!(v1, [(41, 1024 * MIB), (42, 2048 * MIB)]);
        for name in [COMPUTE_V2, COMPUTE_V3] {
            let (_, _, v2) = lib.v2(name, dev, 4);
            let got: Vec<(u32, u64, u32, u32)> = v2
                .iter()
                .map(|p| (p.pid, p.usedGpuMemory, p.gpuInstanceId, p.computeInstanceId))
                .collect();
            assert_eq!(
                got,
                [
                    (41, 1024 * MIB, NO_INSTANCE, NO_INSTANCE),
                    (42, 2048 * MIB, NO_INSTANCE, NO_INSTANCE)
                ],
                "{name}: MIG off means 0xFFFFFFFF ids"
            );
        }
        let wrapped = nvml
            .device_by_index(0)
            .expect("dev")
            .running_compute_processes()
            .expect("v3");
        let got: Vec<(u32, UsedGpuMemory, Option<u32>)> = wrapped
            .into_iter()
            .map(|p| (p.pid, p.used_gpu_memory, p.gpu_instance_id))
            .collect();
        assert_eq!(
            got,
            [
                (41, UsedGpuMemory::Used(1024 * MIB), None),
                (42, UsedGpuMemory::Used(2048 * MIB), None)
            ]
        );
    });
}

#[test]
fn each_list_shows_its_kind_of_context() {
    let host = Host::shipped("config/mainpc/gpus.sim.yaml");
    in_child("each_list_shows_its_kind_of_context", &host, || {
        host.simctl_ok(&[
            "process", "add", "--gpu", "0", "--pid", "10", "--used", "1GiB",
        ]);
        host.simctl_ok(&[
            "process", "add", "--gpu", "0", "--pid", "11", "--used", "300MiB", "--kind", "graphics",
        ]);
        host.simctl_ok(&[
            "process",
            "add",
            "--gpu",
            "0",
            "--pid",
            "12",
            "--used",
            "2GiB",
            "--kind",
            "mps",
            "--server-pid",
            "9",
        ]);
        let nvml = nvml();
        let lib = Lib::open();
        let dev = handle(&nvml, 0);
        let listed = |name: &str| pids_v2(&lib.v2(name, dev, 8).2);
        assert_eq!(
            listed(COMPUTE_V3),
            [9, 10, 12],
            "the MPS server and its client are compute contexts"
        );
        assert_eq!(listed("nvmlDeviceGetGraphicsRunningProcesses_v3"), [11]);
        assert_eq!(listed("nvmlDeviceGetMPSComputeRunningProcesses_v3"), [12]);
        let (_, _, v1) = lib.v1("nvmlDeviceGetGraphicsRunningProcesses", dev, 4);
        assert_eq!(v1.iter().map(|p| p.pid).collect::<Vec<_>>(), [11]);
        let device = nvml.device_by_index(0).expect("dev");
        let graphics: Vec<u32> = device
            .running_graphics_processes()
            .expect("graphics")
            .iter()
            .map(|p| p.pid)
            .collect();
        let mps: Vec<u32> = device
            .mps_running_compute_processes()
            .expect("mps")
            .iter()
            .map(|p| p.pid)
            .collect();
        assert_eq!((graphics, mps), (vec![11], vec![12]));
    });
}

#[test]
fn device_memory_and_utilisation_follow_the_processes() {
    let host = Host::shipped("config/mainpc/gpus.sim.yaml");
    in_child(
        "device_memory_and_utilisation_follow_the_processes",
        &host,
        || {
            host.simctl_ok(&[
                "set",
                "--gpu",
                "0",
                "--memory-used",
                "256MiB",
                "--util",
                "5",
            ]);
            let nvml = nvml();
            let lib = Lib::open();
            let dev = handle(&nvml, 0);
            assert_eq!(lib.memory_used(dev), 256 * MIB, "the baseline alone");
            host.simctl_ok(&[
                "process", "add", "--gpu", "0", "--pid", "7", "--used", "3GiB", "--util", "60",
            ]);
            host.simctl_ok(&[
                "process", "add", "--gpu", "0", "--pid", "8", "--used", "1GiB", "--util", "50",
            ]);
            assert_eq!(lib.memory_used(dev), 256 * MIB + 4096 * MIB);
            let util = nvml
                .device_by_index(0)
                .expect("dev")
                .utilization_rates()
                .expect("util");
            assert_eq!(util.gpu, 100, "5 + 60 + 50, capped");
            host.simctl_ok(&["process", "remove", "--pid", "7"]);
            assert_eq!(lib.memory_used(dev), 256 * MIB + 1024 * MIB);
            let util = nvml
                .device_by_index(0)
                .expect("dev")
                .utilization_rates()
                .expect("util");
            assert_eq!(util.gpu, 55);
            let full = host.simctl(&[
                "process", "add", "--gpu", "0", "--pid", "9", "--used", "30GiB",
            ]);
            assert!(!full.status.success(), "a 24 GiB board cannot hold 30 GiB");
            assert!(String::from_utf8_lossy(&full.stderr).contains("out of memory"));
        },
    );
}

/// An A100 with two 3g.20gb instances (GI 1 and 2, CI 0 each) and one
/// process in each.
fn mig_host_with_processes(host: &Host) {
    host.simctl_ok(&[
        "create-gi",
        "--gpu",
        "0",
        "--profile",
        "3g.20gb",
        "--placement",
        "0",
    ]);
    host.simctl_ok(&[
        "create-gi",
        "--gpu",
        "0",
        "--profile",
        "3g.20gb",
        "--placement",
        "4",
    ]);
    host.simctl_ok(&[
        "process", "add", "--gpu", "0", "--gi", "1", "--ci", "0", "--pid", "501", "--used", "5GiB",
        "--util", "30",
    ]);
    // GPU instance 2 has one compute instance: `--ci` may be left out.
    host.simctl_ok(&[
        "process", "add", "--gpu", "0", "--gi", "2", "--pid", "502", "--used", "7GiB", "--util",
        "10",
    ]);
}

/// (pid, used, gi, ci) of a v3 list.
fn entries(lib: &Lib, dev: nvmlDevice_t) -> Vec<(u32, u64, u32, u32)> {
    lib.v2(COMPUTE_V3, dev, 8)
        .2
        .iter()
        .map(|p| (p.pid, p.usedGpuMemory, p.gpuInstanceId, p.computeInstanceId))
        .collect()
}

fn mig_handles(nvml: &Nvml, lib: &Lib) -> Vec<(u32, nvmlDevice_t)> {
    type GiId = unsafe extern "C" fn(nvmlDevice_t, *mut c_uint) -> nvmlReturn_t;
    let gi_id: GiId = lib.sym("nvmlDeviceGetGpuInstanceId");
    let dev = nvml.device_by_index(0).expect("dev");
    (0..dev.mig_device_count().expect("count"))
        .filter_map(|i| dev.mig_device_by_index(i).ok())
        .map(|m| {
            // SAFETY: passed back to the same library only.
            let handle = unsafe { m.handle() };
            let mut gi: c_uint = 0;
            // SAFETY: a MIG device handle and an out-pointer.
            assert_eq!(unsafe { gi_id(handle, &mut gi) }, SUCCESS);
            (gi, handle)
        })
        .collect()
}

#[test]
fn a_mig_parent_lists_every_instance_and_a_mig_device_only_its_own() {
    let host = Host::shipped("config/sim/lab-a100.yaml");
    in_child_env(
        "a_mig_parent_lists_every_instance_and_a_mig_device_only_its_own",
        &host,
        &[("NVML_SIM_CALLER", "root")],
        || {
            mig_host_with_processes(&host);
            let nvml = nvml();
            let lib = Lib::open();
            let parent = handle(&nvml, 0);
            assert_eq!(
                entries(&lib, parent),
                [(501, 5120 * MIB, 1, 0), (502, 7168 * MIB, 2, 0)],
                "a privileged caller sees every process with its memory"
            );
            let devices = mig_handles(&nvml, &lib);
            assert_eq!(devices.len(), 2);
            for (gi, mig) in devices {
                let want = if gi == 1 {
                    (501, 5120 * MIB, 1, 0)
                } else {
                    (502, 7168 * MIB, 2, 0)
                };
                assert_eq!(
                    entries(&lib, mig),
                    [want],
                    "MIG device of GPU instance {gi}"
                );
                assert_eq!(
                    lib.memory_used(mig),
                    want.1,
                    "the instance's memory follows its processes"
                );
            }
            let refused = host.simctl(&[
                "process", "add", "--gpu", "0", "--pid", "9", "--used", "1GiB",
            ]);
            assert!(
                !refused.status.success(),
                "a MIG GPU's process needs an instance"
            );
            let refused = host.simctl(&["destroy-ci", "--gpu", "0", "--gi", "1", "--ci", "0"]);
            assert!(
                !refused.status.success(),
                "a compute instance with processes is in use"
            );
        },
    );
}

#[test]
fn an_unprivileged_caller_gets_not_available_on_a_mig_parent() {
    let host = Host::shipped("config/sim/lab-a100.yaml");
    in_child_env(
        "an_unprivileged_caller_gets_not_available_on_a_mig_parent",
        &host,
        &[("NVML_SIM_CALLER", "user")],
        || {
            mig_host_with_processes(&host);
            let nvml = nvml();
            let lib = Lib::open();
            let parent = handle(&nvml, 0);
            assert_eq!(
                entries(&lib, parent),
                [(501, NOT_AVAILABLE, 1, 0), (502, NOT_AVAILABLE, 2, 0)]
            );
            let (_, _, v1) = lib.v1(COMPUTE_V1, parent, 4);
            assert!(
                v1.iter().all(|p| p.usedGpuMemory == NOT_AVAILABLE),
                "v1 too"
            );
            let wrapped = nvml
                .device_by_index(0)
                .expect("dev")
                .running_compute_processes()
                .expect("v3");
            assert!(
                wrapped
                    .iter()
                    .all(|p| p.used_gpu_memory == UsedGpuMemory::Unavailable)
            );
            for (_, mig) in mig_handles(&nvml, &lib) {
                assert!(
                    entries(&lib, mig).iter().all(|e| e.1 != NOT_AVAILABLE),
                    "per-instance figures come from MIG handles"
                );
            }
        },
    );
}

#[test]
fn process_utilisation_samples_follow_last_seen() {
    let host = Host::shipped("config/mainpc/gpus.sim.yaml");
    in_child(
        "process_utilisation_samples_follow_last_seen",
        &host,
        || {
            let nvml = nvml();
            let lib = Lib::open();
            let dev = handle(&nvml, 0);
            assert_eq!(lib.util(dev, 0, 0).0, NOT_FOUND, "no process, no sample");
            host.simctl_ok(&[
                "process", "add", "--gpu", "0", "--pid", "61", "--used", "1GiB", "--util", "40",
            ]);
            host.simctl_ok(&[
                "process", "add", "--gpu", "0", "--pid", "62", "--used", "1GiB", "--util", "0",
            ]);
            // The first sample is taken at the next whole second.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            let (code, needed) = loop {
                let (code, count, _) = lib.util(dev, 0, 0);
                if code != NOT_FOUND || std::time::Instant::now() > deadline {
                    break (code, count);
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            };
            assert_eq!(code, INSUFFICIENT_SIZE, "a null array asks for the count");
            assert!(needed >= 1);
            let (code, count, samples) = lib.util(dev, needed + 4, 0);
            assert_eq!(code, SUCCESS);
            assert_eq!(count as usize, samples.len());
            assert!(
                samples
                    .iter()
                    .all(|s| s.pid == 61 && s.smUtil == 40 && s.timeStamp % 1_000_000 == 0),
                "only the busy process"
            );
            let newest = samples
                .iter()
                .map(|s| s.timeStamp)
                .max()
                .unwrap_or_default();
            assert_eq!(
                lib.util(dev, 8, newest).0,
                NOT_FOUND,
                "nothing newer than the newest seen"
            );
            let wrapped = nvml
                .device_by_index(0)
                .expect("dev")
                .process_utilization_stats(None)
                .expect("wrapped");
            assert!(wrapped.iter().any(|s| s.pid == 61 && s.sm_util == 40));
        },
    );
}

#[test]
fn process_utilisation_is_not_supported_in_mig_mode() {
    let host = Host::shipped("config/sim/lab-a100.yaml");
    in_child(
        "process_utilisation_is_not_supported_in_mig_mode",
        &host,
        || {
            mig_host_with_processes(&host);
            let nvml = nvml();
            let lib = Lib::open();
            assert_eq!(lib.util(handle(&nvml, 0), 8, 0).0, NOT_SUPPORTED);
            for (_, mig) in mig_handles(&nvml, &lib) {
                assert_eq!(lib.util(mig, 8, 0).0, NOT_SUPPORTED);
            }
        },
    );
}

#[test]
fn a_lost_gpu_answers_gpu_is_lost() {
    let host = Host::shipped("config/mainpc/gpus.sim.yaml");
    in_child("a_lost_gpu_answers_gpu_is_lost", &host, || {
        host.simctl_ok(&[
            "process", "add", "--gpu", "0", "--pid", "5", "--used", "1GiB",
        ]);
        let nvml = nvml();
        let lib = Lib::open();
        let dev = handle(&nvml, 0);
        host.simctl_ok(&["lose", "--gpu", "0"]);
        assert_eq!(lib.v2(COMPUTE_V3, dev, 4).0, GPU_IS_LOST);
        assert_eq!(lib.util(dev, 4, 0).0, GPU_IS_LOST);
        host.simctl_ok(&["restore", "--gpu", "0"]);
        assert_eq!(
            lib.v2(COMPUTE_V3, dev, 4).1,
            0,
            "a GPU that comes back was reset"
        );
    });
}
