//! Cost of reading who uses the GPUs, through the real code path:
//! `cargo bench -p orch-gpu --bench processes`. Plain `Instant` timing, no
//! harness.
//!
//! A simulated host of 4 RTX 4090s with 50 processes each (the simulator
//! library loaded through `nvml-wrapper`, as the daemon loads NVML). One
//! read is `processes(gpu)` for all four GPUs, as a sampling pass of the
//! daemon's GPU worker would make it; printed are the median, p99 and max
//! of wall time over many reads, and the same for one GPU's
//! `process_utilization` (50 busy processes, every sample of the buffer).
//! The figure is the simulator's cost plus the adapter's: a real driver's
//! calls cost what they cost, and are measured on hardware.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use orch_gpu::{GpuBackend, NvmlBackend};

const GPUS: usize = 4;
const PROCESSES: usize = 50;
const READS: usize = 2000;

fn host_file(dir: &std::path::Path) -> std::path::PathBuf {
    let card = common::shipped("config/sim/rtx4090.yaml");
    let mut yaml = String::from("name: bench4x4090\ngpus:\n");
    for i in 0..GPUS {
        yaml.push_str(&format!(
            "  - card: {}\n    pci_bus_id: \"00000000:{:02x}:00.0\"\n",
            card.display(),
            i + 1
        ));
    }
    let path = dir.join("bench4x4090.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

fn summary(name: &str, mut times: Vec<Duration>) {
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    println!(
        "{name}: median {:?}, p99 {:?}, max {:?} over {} reads",
        at(0.5),
        at(0.99),
        times[times.len() - 1],
        times.len()
    );
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let config = host_file(dir.path());
    let state = dir.path().join("state.json");
    let simctl = common::sim_dir().join("nvml-simctl");
    let run = |args: &[String]| {
        let out = std::process::Command::new(&simctl)
            .args(args)
            .env("NVML_SIM_CONFIG", &config)
            .env("NVML_SIM_STATE", &state)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    for gpu in 0..GPUS {
        for p in 0..PROCESSES {
            let pid = 10_000 + gpu * 1000 + p;
            run(&[
                "process".into(),
                "add".into(),
                "--gpu".into(),
                gpu.to_string(),
                "--pid".into(),
                pid.to_string(),
                "--used".into(),
                "256MiB".into(),
                "--util".into(),
                "1".into(),
            ]);
        }
    }
    // SAFETY: nothing else runs yet: this is the only thread of the
    // process, and the variables are set before NVML is loaded.
    unsafe {
        std::env::set_var("NVML_SIM_CONFIG", &config);
        std::env::set_var("NVML_SIM_STATE", &state);
    }
    let backend = NvmlBackend::open(Some(&common::cdylib())).unwrap();
    for gpu in 0..GPUS as u32 {
        assert_eq!(backend.processes(gpu).unwrap().len(), PROCESSES);
    }

    let mut times = Vec::with_capacity(READS);
    for _ in 0..READS {
        let start = Instant::now();
        for gpu in 0..GPUS as u32 {
            black_box(backend.processes(gpu).unwrap());
        }
        times.push(start.elapsed());
    }
    summary(
        &format!("processes of {GPUS} GPUs x {PROCESSES} processes"),
        times,
    );

    // Wait until the driver's buffer holds a few samples.
    std::thread::sleep(Duration::from_secs(3));
    let mut times = Vec::with_capacity(READS);
    for _ in 0..READS {
        let start = Instant::now();
        black_box(backend.process_utilization(0, 0).unwrap());
        times.push(start.elapsed());
    }
    summary(
        &format!("process_utilization of 1 GPU x {PROCESSES} processes, whole buffer"),
        times,
    );
}
