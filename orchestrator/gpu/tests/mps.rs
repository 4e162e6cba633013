//! `MpsControlDaemon` against the project's recording stand-in for
//! `nvidia-cuda-mps-control`: exactly which commands and environment it
//! sends, idempotent start and stop, one daemon per GPU, a daemon that died,
//! and clear errors when the program is missing, fails or hangs.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::ffi::OsString;

use common::{Host, in_child_with, mps_sim};
use orch_gpu::{MpsControl, MpsControlDaemon, MpsError, MpsGpu};
use serde_json::Value;

const GPU_A: &str = "GPU-4090a1b2-c3d4-4e5f-8a6b-7c8d9e0f1a2b";
const GPU_B: &str = "GPU-3060c0de-1a2b-4c3d-9e4f-5a6b7c8d9e0f";

/// A GPU whose MPS directories live under `root` (and do not exist yet).
fn gpu(root: &Path, uuid: &str) -> MpsGpu {
    MpsGpu {
        uuid: uuid.to_owned(),
        pipe_dir: root.join(uuid).join("pipe"),
        log_dir: root.join(uuid).join("log"),
    }
}

/// Stops the daemon if an assertion failed half way.
struct Cleanup<'a>(&'a MpsControlDaemon, Vec<MpsGpu>);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for gpu in &self.1 {
            // Best effort: the test's own assertions already failed.
            let _ = self.0.stop(gpu);
        }
    }
}

/// Every invocation the stand-in recorded for this GPU, in order.
fn invocations(gpu: &MpsGpu) -> Vec<Value> {
    let path = gpu.log_dir.join("invocations.jsonl");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Vec::new();
    };
    text.lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect()
}

/// `(mode, args after argv[0], commands sent, exit code)` of each invocation.
fn summary(gpu: &MpsGpu) -> Vec<(String, Vec<String>, Vec<String>, i64)> {
    invocations(gpu)
        .iter()
        .map(|r| {
            let argv: Vec<String> = r["argv"]
                .as_array()
                .expect("argv")
                .iter()
                .skip(1)
                .map(|a| a.as_str().expect("arg").to_owned())
                .collect();
            let commands: Vec<String> = r["commands"]
                .as_array()
                .map(|c| {
                    c.iter()
                        .map(|e| e["command"].as_str().expect("command").to_owned())
                        .collect()
                })
                .unwrap_or_default();
            (
                r["mode"].as_str().expect("mode").to_owned(),
                argv,
                commands,
                r["exit_code"].as_i64().expect("exit code"),
            )
        })
        .collect()
}

fn env_of(record: &Value) -> BTreeMap<String, String> {
    serde_json::from_value(record["env"].clone()).expect("env is a string map")
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("exists")
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn start_is_idempotent_stop_sends_quit_with_the_same_environment() {
    let root = tempfile::tempdir().expect("temp dir");
    let mps = MpsControlDaemon::new(mps_sim());
    let a = gpu(root.path(), GPU_A);
    let _cleanup = Cleanup(&mps, vec![a.clone()]);

    assert!(!mps.is_running(&a).expect("is_running"));
    mps.stop(&a)
        .expect("stopping a daemon that does not run is a no-op");
    assert_eq!(summary(&a), vec![], "nothing was run");

    mps.ensure_running(&a).expect("start");
    assert!(mps.is_running(&a).expect("is_running"));
    assert!(a.pipe_dir.join("control").exists(), "control endpoint");
    assert_eq!(mode_of(&a.pipe_dir), 0o755);
    assert_eq!(mode_of(&a.log_dir), 0o755);
    mps.ensure_running(&a).expect("again");
    mps.ensure_running(&a).expect("and again");
    assert_eq!(
        summary(&a),
        vec![("daemon".into(), vec!["-d".into()], vec![], 0)],
        "one daemon started, once"
    );

    mps.stop(&a).expect("stop");
    assert!(!mps.is_running(&a).expect("is_running"));
    assert!(!a.pipe_dir.join("control").exists());
    mps.stop(&a).expect("stop again");
    assert_eq!(
        summary(&a),
        vec![
            ("daemon".into(), vec!["-d".into()], vec![], 0),
            ("client".into(), vec![], vec!["quit".into()], 0),
        ]
    );

    // Exactly the GPU's environment, and no other CUDA variable.
    let want: BTreeMap<String, String> = [
        ("CUDA_MPS_LOG_DIRECTORY", a.log_dir.display().to_string()),
        ("CUDA_MPS_PIPE_DIRECTORY", a.pipe_dir.display().to_string()),
        ("CUDA_VISIBLE_DEVICES", GPU_A.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for record in invocations(&a) {
        assert_eq!(env_of(&record), want);
        assert_eq!(
            record["argv"][0].as_str().map(PathBuf::from),
            Some(mps_sim()),
            "the configured program ran"
        );
    }

    // Started again after a stop: a fresh daemon.
    mps.ensure_running(&a).expect("restart");
    assert_eq!(summary(&a).len(), 3);
    mps.stop(&a).expect("stop");
}

#[test]
fn one_daemon_per_gpu() {
    let root = tempfile::tempdir().expect("temp dir");
    let mps = MpsControlDaemon::new(mps_sim());
    let a = gpu(root.path(), GPU_A);
    let b = gpu(root.path(), GPU_B);
    let _cleanup = Cleanup(&mps, vec![a.clone(), b.clone()]);

    mps.ensure_running(&a).expect("start A");
    mps.ensure_running(&b).expect("start B");
    let pid = |g: &MpsGpu| {
        std::fs::read_to_string(g.pipe_dir.join("nvidia-cuda-mps-control.pid"))
            .expect("pid file")
            .trim()
            .to_owned()
    };
    assert_ne!(pid(&a), pid(&b), "two daemons");
    assert_eq!(
        env_of(&invocations(&b)[0])["CUDA_VISIBLE_DEVICES"],
        GPU_B,
        "each daemon sees only its GPU"
    );

    mps.stop(&a).expect("stop A");
    assert!(!mps.is_running(&a).expect("A"));
    assert!(mps.is_running(&b).expect("B keeps running"));
    mps.stop(&b).expect("stop B");
}

#[test]
fn a_daemon_that_died_is_started_again() {
    let root = tempfile::tempdir().expect("temp dir");
    let mps = MpsControlDaemon::new(mps_sim());
    let a = gpu(root.path(), GPU_A);
    let _cleanup = Cleanup(&mps, vec![a.clone()]);

    mps.ensure_running(&a).expect("start");
    let pid: i32 = std::fs::read_to_string(a.pipe_dir.join("nvidia-cuda-mps-control.pid"))
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    // SAFETY: kill(2) with a pid this test started and a valid signal.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while mps.is_running(&a).expect("is_running") {
        assert!(
            std::time::Instant::now() < deadline,
            "still running after SIGKILL"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        a.pipe_dir.join("control").exists(),
        "the dead daemon left its endpoint behind"
    );
    mps.ensure_running(&a)
        .expect("start again over the stale endpoint");
    assert!(mps.is_running(&a).expect("is_running"));
    let modes: Vec<String> = summary(&a).into_iter().map(|s| s.0).collect();
    assert_eq!(modes, ["daemon", "daemon"]);
    mps.stop(&a).expect("stop");
}

#[test]
fn missing_program_is_a_clear_error() {
    let root = tempfile::tempdir().expect("temp dir");
    let binary = root.path().join("bin/nvidia-cuda-mps-control");
    let mps = MpsControlDaemon::new(&binary);
    let a = gpu(root.path(), GPU_A);
    let e = mps.ensure_running(&a).expect_err("no program");
    assert!(
        matches!(&e, MpsError::BinaryMissing { binary: b } if *b == binary),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(text.contains(&binary.display().to_string()), "{text}");
    assert!(text.contains("MPS shares cannot start"), "{text}");
    assert!(!mps.is_running(&a).expect("is_running"));
}

/// A stand-in program written as a shell script.
fn script(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("fake-mps-control");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

#[test]
fn a_failing_start_reports_the_programs_words() {
    let root = tempfile::tempdir().expect("temp dir");
    let bin = script(root.path(), "echo 'cannot open the GPU' >&2\nexit 3");
    let a = gpu(root.path(), GPU_A);
    let e = MpsControlDaemon::new(&bin)
        .ensure_running(&a)
        .expect_err("start fails");
    let MpsError::CommandFailed {
        gpu,
        command,
        status,
        stderr,
    } = &e
    else {
        panic!("expected CommandFailed, got {e:?}");
    };
    assert_eq!(gpu, GPU_A);
    assert_eq!(*command, format!("{} -d", bin.display()));
    assert!(status.contains('3'), "{status}");
    assert_eq!(stderr, "cannot open the GPU");
}

#[test]
fn a_daemon_that_never_listens_is_not_ready() {
    let root = tempfile::tempdir().expect("temp dir");
    let bin = script(root.path(), "exit 0");
    let a = gpu(root.path(), GPU_A);
    let e = MpsControlDaemon::new(&bin)
        .with_timeout(Duration::from_millis(300))
        .ensure_running(&a)
        .expect_err("never comes up");
    assert!(
        matches!(&e, MpsError::NotReady { pipe_dir, .. } if *pipe_dir == a.pipe_dir),
        "{e:?}"
    );
}

#[test]
fn a_hanging_program_is_killed() {
    let root = tempfile::tempdir().expect("temp dir");
    let bin = script(root.path(), "exec sleep 30");
    let a = gpu(root.path(), GPU_A);
    let started = std::time::Instant::now();
    let e = MpsControlDaemon::new(&bin)
        .with_timeout(Duration::from_millis(300))
        .ensure_running(&a)
        .expect_err("hangs");
    assert!(matches!(e, MpsError::Timeout { .. }), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn inherited_cuda_settings_do_not_leak_into_the_daemon() {
    // The supervisor's own environment carries CUDA settings (as a
    // developer's shell might); the daemon must see only its GPU's.
    let host = Host::shipped("config/mainpc/gpus.sim.yaml");
    let env = [
        ("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", OsString::from("50")),
        ("CUDA_VISIBLE_DEVICES", OsString::from("0")),
        ("CUDA_MPS_PIPE_DIRECTORY", OsString::from("/tmp/elsewhere")),
    ];
    in_child_with(
        "inherited_cuda_settings_do_not_leak_into_the_daemon",
        &host,
        &env,
        || {
            assert_eq!(
                std::env::var("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE").as_deref(),
                Ok("50"),
                "the child runs with the parent's CUDA settings"
            );
            let root = tempfile::tempdir().expect("temp dir");
            let mps = MpsControlDaemon::new(mps_sim());
            let a = gpu(root.path(), GPU_A);
            let _cleanup = Cleanup(&mps, vec![a.clone()]);
            mps.ensure_running(&a).expect("start");
            mps.stop(&a).expect("stop");
            for record in invocations(&a) {
                let env = env_of(&record);
                let keys: Vec<&str> = env.keys().map(String::as_str).collect();
                assert_eq!(
                    keys,
                    [
                        "CUDA_MPS_LOG_DIRECTORY",
                        "CUDA_MPS_PIPE_DIRECTORY",
                        "CUDA_VISIBLE_DEVICES"
                    ]
                );
                assert_eq!(env["CUDA_VISIBLE_DEVICES"], GPU_A);
            }
            assert_eq!(invocations(&a).len(), 2);
        },
    );
}
