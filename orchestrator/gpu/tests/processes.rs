//! `NvmlBackend` reading who uses the GPUs, on simulated hosts through the
//! real `nvml-wrapper` code path: processes of every kind, MIG instances
//! (with the memory a MIG parent withholds from an unprivileged caller read
//! from the MIG devices), per-process utilisation since a timestamp, and
//! the errors for a lost GPU, a missing instance and MIG utilisation.

mod common;

use std::ffi::OsString;
use std::time::{Duration, Instant};

use common::{Host, cdylib, in_child, in_child_with, simctl};
use orch_core::units::ByteSize;
use orch_gpu::{GpuBackend, GpuError, GpuProcess, NvmlBackend, ProcessKind};

const GIB: u64 = 1 << 30;

fn open() -> NvmlBackend {
    NvmlBackend::open(Some(&cdylib())).expect("open the simulator")
}

fn process(pid: u32, gib: u64, kind: ProcessKind) -> GpuProcess {
    GpuProcess {
        pid,
        used_memory: Some(ByteSize(gib * GIB)),
        gpu_instance_id: None,
        compute_instance_id: None,
        kind,
    }
}

#[test]
fn every_kind_of_process_once_per_pid() {
    let host = Host::shipped("config/mainpc/gpus.sim.yaml");
    in_child("every_kind_of_process_once_per_pid", &host, || {
        let backend = open();
        assert_eq!(backend.processes(0).expect("none yet"), []);
        simctl(&[
            "process", "add", "--gpu", "0", "--pid", "11", "--used", "3GiB",
        ]);
        simctl(&[
            "process", "add", "--gpu", "0", "--pid", "12", "--used", "1GiB", "--kind", "graphics",
        ]);
        simctl(&[
            "process",
            "add",
            "--gpu",
            "0",
            "--pid",
            "13",
            "--used",
            "2GiB",
            "--kind",
            "mps",
            "--server-pid",
            "10",
        ]);
        let server = GpuProcess {
            used_memory: Some(ByteSize(32 << 20)),
            ..process(10, 0, ProcessKind::Compute)
        };
        assert_eq!(
            backend.processes(0).expect("processes"),
            [
                server,
                process(11, 3, ProcessKind::Compute),
                process(13, 2, ProcessKind::MpsClient),
                process(12, 1, ProcessKind::Graphics),
            ]
        );
        let e = backend.processes(5).expect_err("no GPU 5");
        assert_eq!(e, GpuError::NoSuchGpu { index: 5, count: 1 });
        simctl(&["lose", "--gpu", "0"]);
        assert_eq!(
            backend.processes(0).expect_err("lost"),
            GpuError::GpuLost { gpu: 0 }
        );
    });
}

fn mig_layout() {
    simctl(&[
        "create-gi",
        "--gpu",
        "0",
        "--profile",
        "3g.20gb",
        "--placement",
        "0",
    ]);
    simctl(&[
        "create-gi",
        "--gpu",
        "0",
        "--profile",
        "3g.20gb",
        "--placement",
        "4",
    ]);
    simctl(&[
        "process", "add", "--gpu", "0", "--gi", "1", "--ci", "0", "--pid", "21", "--used", "5GiB",
        "--util", "30",
    ]);
    simctl(&[
        "process", "add", "--gpu", "0", "--gi", "2", "--ci", "0", "--pid", "22", "--used", "7GiB",
    ]);
}

fn on_instance(pid: u32, gib: u64, gi: u32) -> GpuProcess {
    GpuProcess {
        gpu_instance_id: Some(gi),
        compute_instance_id: Some(0),
        ..process(pid, gib, ProcessKind::Compute)
    }
}

#[test]
fn mig_processes_carry_their_instance_and_memory_even_unprivileged() {
    let host = Host::shipped("config/sim/lab-a100.yaml");
    let user = [("NVML_SIM_CALLER", OsString::from("user"))];
    in_child_with(
        "mig_processes_carry_their_instance_and_memory_even_unprivileged",
        &host,
        &user,
        || {
            mig_layout();
            let backend = open();
            assert_eq!(
                backend.processes(0).expect("processes"),
                [on_instance(21, 5, 1), on_instance(22, 7, 2)],
                "the parent withholds memory; the MIG devices tell"
            );
            assert_eq!(
                backend.instance_processes(0, 2, 0).expect("GI 2"),
                [on_instance(22, 7, 2)]
            );
            let e = backend.instance_processes(0, 5, 0).expect_err("no GI 5");
            assert_eq!(e, GpuError::NoSuchInstance { gpu: 0, gi_id: 5 });
            let e = backend.process_utilization(0, 0).expect_err("MIG");
            assert!(matches!(e, GpuError::NotSupported { gpu: 0, .. }), "{e:?}");
        },
    );
}

#[test]
fn instance_processes_need_mig() {
    let host = Host::shipped("config/mainpc/gpus.sim.yaml");
    in_child("instance_processes_need_mig", &host, || {
        let e = open().instance_processes(0, 1, 0).expect_err("GeForce");
        assert!(matches!(e, GpuError::NotSupported { gpu: 0, .. }), "{e:?}");
    });
}

#[test]
fn utilisation_since_a_timestamp() {
    let host = Host::shipped("config/mainpc/gpus.sim.yaml");
    in_child("utilisation_since_a_timestamp", &host, || {
        let backend = open();
        let none = backend
            .process_utilization(0, 0)
            .expect("no samples is no error");
        assert_eq!((none.processes.len(), none.newest_us), (0, None));
        simctl(&[
            "process", "add", "--gpu", "0", "--pid", "31", "--used", "1GiB", "--util", "45",
        ]);
        simctl(&[
            "process", "add", "--gpu", "0", "--pid", "32", "--used", "1GiB", "--util", "15",
        ]);
        let deadline = Instant::now() + Duration::from_secs(5);
        let first = loop {
            let read = backend.process_utilization(0, 0).expect("read");
            if read.newest_us.is_some() || Instant::now() > deadline {
                break read;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let got: Vec<(u32, u32, u32)> = first
            .processes
            .iter()
            .map(|p| (p.pid, p.sm_percent, p.memory_percent))
            .collect();
        assert_eq!(got, [(31, 45, 22), (32, 15, 7)]);
        let newest = first.newest_us.expect("a sample");
        let again = backend.process_utilization(0, newest).expect("read again");
        assert!(
            again.processes.iter().all(|p| p.newest_us > newest),
            "only samples newer than the last seen: {again:?}"
        );
    });
}
