//! Real NVML clients against the simulator: nvidia-ml-py (through
//! `tests/nvml/pynvml_dump.py`) and gpustat, both loading
//! `libnvidia-ml.so.1` via `LD_LIBRARY_PATH` from a directory where that name
//! is a symlink to `libnvml_sim.so`.
//!
//! Needs `python3` with the `venv` module; the clients are installed into
//! `target/py-venv` by `tests/nvml/setup-venv.sh` (idempotent), which these
//! tests run first. A missing `python3` fails the tests with a clear message.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::ptr;
use std::sync::OnceLock;

use common::{Host, in_child, nvml, workspace_root};
use nvml_wrapper_sys::bindings::{
    nvmlComputeInstance_t, nvmlGpuInstance_t, nvmlGpuInstancePlacement_t,
};
use serde_json::Value;

/// The venv's python, set up once per test process.
fn venv_python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let probe = Command::new("python3").arg("--version").output();
            assert!(
                probe.as_ref().is_ok_and(|o| o.status.success()),
                "python3 is required for the NVML client checks (Debian: apt-get install python3 python3-venv): {probe:?}"
            );
            let root = workspace_root();
            let out = Command::new("bash")
                .arg(root.join("tests/nvml/setup-venv.sh"))
                .arg(root.join("target/py-venv"))
                .output()
                .expect("run tests/nvml/setup-venv.sh");
            assert!(
                out.status.success(),
                "tests/nvml/setup-venv.sh failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let stdout = String::from_utf8(out.stdout).expect("utf-8");
            let python = PathBuf::from(stdout.lines().last().expect("the script prints the python path").trim());
            assert!(python.exists(), "{} missing", python.display());
            python
        })
        .clone()
}

/// A directory where `libnvidia-ml.so.1` is the simulator.
fn nvml_dir(scratch: &Path) -> PathBuf {
    let dir = scratch.join("nvml-lib");
    std::fs::create_dir_all(&dir).expect("lib dir");
    let link = dir.join("libnvidia-ml.so.1");
    if !link.exists() {
        std::os::unix::fs::symlink(common::cdylib(), &link).expect("symlink libnvidia-ml.so.1");
    }
    dir
}

/// Runs a program of the venv with NVML pointed at the simulator of `host`.
fn run_client(host: &Host, program: &Path, args: &[&str]) -> Output {
    run_client_as(host, program, args, "root")
}

/// [`run_client`] as a simulated `root` or `user` caller.
fn run_client_as(host: &Host, program: &Path, args: &[&str], caller: &str) -> Output {
    let out = Command::new(program)
        .args(args)
        .env("LD_LIBRARY_PATH", nvml_dir(host.dir.path()))
        .env("NVML_SIM_CONFIG", &host.config)
        .env("NVML_SIM_STATE", &host.state)
        .env("NVML_SIM_CALLER", caller)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
    assert!(
        out.status.success(),
        "{} {args:?} failed:\n{}{}",
        program.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `pynvml_dump.py` output.
fn pynvml_dump(host: &Host) -> Value {
    pynvml_dump_as(host, "root")
}

fn pynvml_dump_as(host: &Host, caller: &str) -> Value {
    let script = workspace_root().join("tests/nvml/pynvml_dump.py");
    let out = run_client_as(
        host,
        &venv_python(),
        &[script.to_str().expect("utf-8 path")],
        caller,
    );
    serde_json::from_slice(&out.stdout).expect("pynvml_dump prints JSON")
}

fn gpustat(host: &Host, args: &[&str]) -> Output {
    let python = venv_python();
    let gpustat = python.with_file_name("gpustat");
    run_client(host, &gpustat, args)
}

fn mode_number(text: &Value) -> u64 {
    match text.as_str() {
        Some("enabled") => 1,
        Some("disabled") => 0,
        other => panic!("unexpected MIG mode {other:?}"),
    }
}

/// Every fact pynvml reports must match what `nvml-simctl status` says.
fn assert_matches_status(dump: &Value, status: &Value) {
    let gpus = status["gpus"].as_array().expect("status gpus");
    assert_eq!(dump["device_count"], gpus.len());
    assert_eq!(dump["driver_version"], status["driver_version"]);
    assert_eq!(dump["cuda_driver_version"], status["cuda_driver_version"]);
    for (seen, want) in dump["gpus"].as_array().expect("dump gpus").iter().zip(gpus) {
        let at = &want["index"];
        assert_eq!(seen["index"], *at);
        assert_eq!(seen["lost"], want["lost"], "GPU {at}");
        if want["lost"] == true {
            continue;
        }
        for key in ["uuid", "name", "pci_bus_id"] {
            assert_eq!(seen[key], want[key], "GPU {at} {key}");
        }
        for key in ["total", "reserved"] {
            assert_eq!(
                seen["memory"][key], want["memory"][key],
                "GPU {at} memory.{key}"
            );
        }
        let mig = &want["mig"];
        if mig.is_null() {
            assert!(seen["mig_mode"].is_null(), "GPU {at} has no MIG");
            continue;
        }
        assert_eq!(
            seen["mig_mode"]["current"],
            mode_number(&mig["current"]),
            "GPU {at}"
        );
        assert_eq!(
            seen["mig_mode"]["pending"],
            mode_number(&mig["pending"]),
            "GPU {at}"
        );
        let mut expected: Vec<(u64, String, u64, u64, u64)> = Vec::new();
        for gi in mig["gpu_instances"].as_array().expect("GIs") {
            for ci in gi["compute_instances"].as_array().expect("CIs") {
                expected.push((
                    ci["mig_index"].as_u64().expect("index"),
                    ci["mig_uuid"].as_str().expect("uuid").to_owned(),
                    gi["id"].as_u64().expect("gi"),
                    ci["id"].as_u64().expect("ci"),
                    gi["memory"].as_u64().expect("memory"),
                ));
            }
        }
        expected.sort();
        let got: Vec<(u64, String, u64, u64, u64)> = seen["mig_devices"]
            .as_array()
            .expect("MIG devices")
            .iter()
            .map(|d| {
                (
                    d["index"].as_u64().expect("index"),
                    d["uuid"].as_str().expect("uuid").to_owned(),
                    d["gpu_instance_id"].as_u64().expect("gi"),
                    d["compute_instance_id"].as_u64().expect("ci"),
                    d["memory"]["total"].as_u64().expect("memory"),
                )
            })
            .collect();
        assert_eq!(got, expected, "GPU {at} MIG devices");
    }
}

#[test]
fn pynvml_and_gpustat_see_the_simulated_gpus() {
    let host = Host::shipped("config/sim/lab-mixed.yaml");
    host.simctl_ok(&["create-gi", "--gpu", "0", "--profile", "3g.20gb"]);
    let created: Value = serde_json::from_str(&host.simctl_ok(&[
        "create-gi",
        "--gpu",
        "0",
        "--profile",
        "2g.10gb",
        "--no-ci",
    ]))
    .expect("create-gi prints JSON");
    let gi = created["gpu_instance"].to_string();
    host.simctl_ok(&[
        "create-ci",
        "--gpu",
        "0",
        "--gi",
        &gi,
        "--profile",
        "1c.2g.10gb",
    ]);
    host.simctl_ok(&[
        "create-ci",
        "--gpu",
        "0",
        "--gi",
        &gi,
        "--profile",
        "1c.2g.10gb",
    ]);
    host.simctl_ok(&["create-gi", "--gpu", "2", "--profile", "1g.10gb+me"]);

    let dump = pynvml_dump(&host);
    let status = host.status();
    assert_matches_status(&dump, &status);
    let a100 = &dump["gpus"][0];
    assert_eq!(a100["mig_devices"].as_array().map(Vec::len), Some(3));
    // Indexed by GPU-instance id: the 3g.20gb (id 2, placed at 4) first, then
    // the two compute instances of the 2g.10gb (id 4, placed at 2).
    assert_eq!(
        a100["mig_devices"][0]["name"],
        "NVIDIA A100-SXM4-40GB MIG 3g.20gb"
    );
    assert_eq!(
        a100["mig_devices"][2]["name"],
        "NVIDIA A100-SXM4-40GB MIG 1c.2g.10gb"
    );
    assert_eq!(
        dump["gpus"][2]["mig_devices"][0]["name"],
        "NVIDIA H100 80GB HBM3 MIG 1g.10gb+me"
    );
    assert!(dump["gpus"][3]["mig_mode"].is_null(), "GeForce has no MIG");

    let out = gpustat(&host, &["--json"]);
    let report: Value = serde_json::from_slice(&out.stdout).expect("gpustat --json");
    assert_eq!(report["driver_version"], "570.133.20");
    let seen = report["gpus"].as_array().expect("gpustat gpus");
    assert_eq!(seen.len(), 4);
    for (g, want) in seen
        .iter()
        .zip(status["gpus"].as_array().expect("status gpus"))
    {
        assert_eq!(g["index"], want["index"]);
        assert_eq!(g["uuid"], want["uuid"]);
        assert_eq!(g["name"], want["name"]);
        let total_mib = want["memory"]["total"].as_u64().expect("total") / (1024 * 1024);
        assert_eq!(g["memory.total"], total_mib);
    }
    let rtx = &seen[3];
    assert_eq!(rtx["utilization.gpu"], 40);
    assert_eq!(rtx["temperature.gpu"], 58);
    assert_eq!(rtx["memory.used"], 3072);
    assert_eq!(rtx["power.draw"], 210);
    assert_eq!(rtx["enforced.power.limit"], 450);
    assert_eq!(rtx["fan.speed"], 45);
    assert!(seen[0]["fan.speed"].is_null(), "A100 has no fans");

    // A lost GPU: pynvml gets GPU_IS_LOST, gpustat shows it as lost.
    host.simctl_ok(&["lose", "--gpu", "1"]);
    let dump = pynvml_dump(&host);
    assert_eq!(dump["gpus"][1]["lost"], true);
    assert_matches_status(&dump, &host.status());
    let text = String::from_utf8(gpustat(&host, &["--no-color"]).stdout).expect("utf-8");
    assert!(text.contains("GPU is lost"), "{text}");
    assert!(text.contains("NVIDIA GeForce RTX 4090"), "{text}");
}

#[test]
fn pynvml_sees_instances_created_through_the_api() {
    let host = Host::shipped("config/sim/lab-a100.yaml");
    // Set up the venv in the parent so the child only reuses it.
    venv_python();
    in_child(
        "pynvml_sees_instances_created_through_the_api",
        &host,
        || {
            let nvml = nvml();
            let lib = nvml.lib();
            let gpu = nvml.device_by_index(0).expect("A100");
            let create = lib
                .nvmlDeviceCreateGpuInstanceWithPlacement
                .as_ref()
                .expect("exported");
            let create_ci = lib
                .nvmlGpuInstanceCreateComputeInstance
                .as_ref()
                .expect("exported");
            let mut gi: nvmlGpuInstance_t = ptr::null_mut();
            let mut ci: nvmlComputeInstance_t = ptr::null_mut();
            let placement = nvmlGpuInstancePlacement_t { start: 0, size: 4 };
            // SAFETY: valid handles, placement and out-pointers.
            unsafe {
                assert_eq!(
                    create(gpu.handle(), 5, &placement, &mut gi),
                    0,
                    "4g.20gb at 0"
                );
                assert_eq!(create_ci(gi, 3, &mut ci), 0, "4-slice compute instance");
            }
            let mig_uuid = gpu
                .mig_device_by_index(0)
                .expect("MIG device")
                .uuid()
                .expect("uuid");

            // Another process, another client library, same layout.
            let dump = pynvml_dump(&host);
            let devices = dump["gpus"][0]["mig_devices"]
                .as_array()
                .expect("MIG devices")
                .clone();
            assert_eq!(devices.len(), 1);
            assert_eq!(devices[0]["uuid"], mig_uuid.as_str());
            assert_eq!(devices[0]["gpu_instance_id"], 1);
            assert_eq!(devices[0]["compute_instance_id"], 0);
            assert_eq!(devices[0]["name"], "NVIDIA A100-SXM4-40GB MIG 4g.20gb");
            assert_eq!(devices[0]["memory"]["total"], 19968u64 * 1024 * 1024);
        },
    );
}

/// Real processes for gpustat, which shows only pids that exist; killed
/// when dropped.
struct Sleepers(Vec<std::process::Child>);

impl Sleepers {
    fn start(n: usize) -> Self {
        Sleepers(
            (0..n)
                .map(|_| {
                    Command::new("sleep")
                        .arg("300")
                        .spawn()
                        .expect("spawn sleep")
                })
                .collect(),
        )
    }

    fn pid(&self, i: usize) -> String {
        self.0[i].id().to_string()
    }
}

impl Drop for Sleepers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            // Best effort: the test is over either way.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn pids_of(list: &Value) -> Vec<u64> {
    list.as_array()
        .expect("a process list")
        .iter()
        .map(|p| p["pid"].as_u64().expect("pid"))
        .collect()
}

#[test]
fn pynvml_and_gpustat_see_the_processes() {
    let host = Host::shipped("config/mainpc/gpus.sim.yaml");
    let procs = Sleepers::start(4);
    host.simctl_ok(&["set", "--gpu", "0", "--memory-used", "0"]);
    let (compute, graphics, client, server) =
        (procs.pid(0), procs.pid(1), procs.pid(2), procs.pid(3));
    host.simctl_ok(&[
        "process", "add", "--gpu", "0", "--pid", &compute, "--used", "3GiB", "--util", "35",
    ]);
    host.simctl_ok(&[
        "process", "add", "--gpu", "0", "--pid", &graphics, "--used", "512MiB", "--kind",
        "graphics",
    ]);
    host.simctl_ok(&[
        "process",
        "add",
        "--gpu",
        "0",
        "--pid",
        &client,
        "--used",
        "2GiB",
        "--kind",
        "mps",
        "--server-pid",
        &server,
    ]);
    let num = |s: &str| s.parse::<u64>().expect("pid");
    let dump = pynvml_dump(&host);
    let gpu = &dump["gpus"][0];
    assert_eq!(
        pids_of(&gpu["processes"]["compute"]),
        [num(&server), num(&compute), num(&client)]
    );
    assert_eq!(pids_of(&gpu["processes"]["graphics"]), [num(&graphics)]);
    assert_eq!(pids_of(&gpu["processes"]["mps"]), [num(&client)]);
    let first = &gpu["processes"]["compute"][1];
    assert_eq!(first["used"], 3u64 << 30);
    assert_eq!(first["gpu_instance_id"], 0xFFFF_FFFFu64, "MIG off");
    assert_eq!(
        gpu["memory"]["used"],
        (3u64 << 30) + (512u64 << 20) + (2u64 << 30) + (32u64 << 20),
        "the processes and the MPS server on a pinned zero baseline"
    );

    let out = gpustat(&host, &["--show-pid", "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout).expect("gpustat --json");
    let seen = &report["gpus"][0]["processes"];
    let mut got: Vec<(u64, Value, Value)> = seen
        .as_array()
        .expect("gpustat processes")
        .iter()
        .map(|p| {
            (
                p["pid"].as_u64().expect("pid"),
                p["gpu_memory_usage"].clone(),
                p["command"].clone(),
            )
        })
        .collect();
    got.sort_by_key(|g| g.0);
    let mut want: Vec<(u64, Value, Value)> = vec![
        (num(&compute), 3072.into(), "sleep".into()),
        (num(&graphics), 512.into(), "sleep".into()),
        (num(&client), 2048.into(), "sleep".into()),
        (num(&server), 32.into(), "sleep".into()),
    ];
    want.sort_by_key(|w| w.0);
    assert_eq!(
        got, want,
        "gpustat lists each pid once, with its memory in MiB"
    );
}

#[test]
fn pynvml_gets_none_for_mig_parent_memory_as_an_unprivileged_caller() {
    let host = Host::shipped("config/sim/lab-a100.yaml");
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
        "process", "add", "--gpu", "0", "--gi", "1", "--ci", "0", "--pid", "4711", "--used", "6GiB",
    ]);
    let parent_entry = |dump: &Value| dump["gpus"][0]["processes"]["compute"][0].clone();

    let root = pynvml_dump_as(&host, "root");
    let entry = parent_entry(&root);
    assert_eq!(
        (entry["pid"].clone(), entry["used"].clone()),
        (4711.into(), (6u64 << 30).into())
    );
    assert_eq!(
        (
            entry["gpu_instance_id"].clone(),
            entry["compute_instance_id"].clone()
        ),
        (1.into(), 0.into())
    );

    let user = pynvml_dump_as(&host, "user");
    let entry = parent_entry(&user);
    assert_eq!(entry["pid"], 4711);
    assert!(
        entry["used"].is_null(),
        "pynvml turns NVML_VALUE_NOT_AVAILABLE into None: {entry}"
    );
    let mig = &user["gpus"][0]["mig_devices"][0];
    assert_eq!(
        mig["processes"]["compute"][0]["used"],
        6u64 << 30,
        "the MIG device still tells"
    );
    assert_eq!(mig["memory"]["used"], 6u64 << 30);
    assert!(
        user["gpus"][0]["process_utilization"].is_null(),
        "NOT_SUPPORTED in MIG mode"
    );
}

#[test]
fn pynvml_reads_process_utilisation_samples() {
    let host = Host::shipped("config/mainpc/gpus.sim.yaml");
    host.simctl_ok(&[
        "process", "add", "--gpu", "0", "--pid", "5150", "--used", "1GiB", "--util", "65",
    ]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let samples = loop {
        let dump = pynvml_dump(&host);
        let samples = dump["gpus"][0]["process_utilization"].clone();
        if samples.as_array().is_some_and(|s| !s.is_empty()) || std::time::Instant::now() > deadline
        {
            break samples;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let samples = samples.as_array().expect("samples, not NOT_SUPPORTED");
    assert!(!samples.is_empty(), "a sample within a second or two");
    for s in samples {
        assert_eq!(
            (s["pid"].clone(), s["sm"].clone(), s["mem"].clone()),
            (5150.into(), 65.into(), 32.into())
        );
        assert_eq!(s["timestamp"].as_u64().map(|t| t % 1_000_000), Some(0));
    }
}
