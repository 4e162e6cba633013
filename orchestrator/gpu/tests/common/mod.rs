//! Helpers shared by the GPU adapter's integration tests: the NVML
//! simulator's library and programs (built for this test profile once per
//! test process), simulated hosts with private state files, running a test
//! body in a child process, and pynvml's view of a simulated host.
//!
//! Why a child process: the simulator reads `NVML_SIM_CONFIG` and
//! `NVML_SIM_STATE` at `nvmlInit`, and a process holds one instance of a
//! shared library, so tests in threads of one process would share one
//! simulated host. Each test that loads NVML re-runs itself
//! (`<test-binary> <name> --exact`) with its own environment and checks the
//! child passed.

#![allow(dead_code)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;

/// Set in a child process: the name of the test it runs.
const CHILD_MARKER: &str = "ORCH_GPU_TEST_CHILD";
/// Set in a child process: the simulator's profile directory.
const SIM_DIR_ENV: &str = "ORCH_GPU_TEST_SIM_DIR";

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// A shipped file, by path relative to the workspace root.
pub fn shipped(relative: &str) -> PathBuf {
    let path = workspace_root().join(relative);
    assert!(path.exists(), "{} is missing", path.display());
    path
}

/// `target/<profile>` of this test executable.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test>-<hash>
    exe.parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps")
        .to_path_buf()
}

/// The directory holding `libnvml_sim.so`, `nvml-simctl` and
/// `nvidia-cuda-mps-control-sim` for this profile. `cargo test -p orch-gpu`
/// does not build another package's cdylib and programs, so this runs
/// `cargo build -p nvml-sim` once per test process (cheap when up to date).
pub fn sim_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(SIM_DIR_ENV) {
        return PathBuf::from(dir);
    }
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = profile_dir();
        let profile = dir
            .file_name()
            .and_then(|n| n.to_str())
            .expect("profile name")
            .to_owned();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build
            .args(["build", "-p", "nvml-sim"])
            .current_dir(workspace_root());
        match profile.as_str() {
            "debug" => {}
            "release" => {
                build.arg("--release");
            }
            other => {
                build.args(["--profile", other]);
            }
        }
        let out = build.output().expect("run cargo build -p nvml-sim");
        assert!(
            out.status.success(),
            "building the NVML simulator failed (run `cargo build -p nvml-sim` to see why):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for name in [
            "libnvml_sim.so",
            "nvml-simctl",
            "nvidia-cuda-mps-control-sim",
        ] {
            assert!(
                dir.join(name).exists(),
                "{} missing after `cargo build -p nvml-sim`",
                dir.join(name).display()
            );
        }
        dir
    })
    .clone()
}

/// The simulator library.
pub fn cdylib() -> PathBuf {
    sim_dir().join("libnvml_sim.so")
}

/// The recording stand-in for `nvidia-cuda-mps-control`.
pub fn mps_sim() -> PathBuf {
    sim_dir().join("nvidia-cuda-mps-control-sim")
}

/// A directory where `libnvidia-ml.so.1` is the simulator, for clients that
/// find NVML through the dynamic loader.
pub fn nvml_link_dir(scratch: &Path) -> PathBuf {
    let dir = scratch.join("nvml-lib");
    std::fs::create_dir_all(&dir).expect("lib dir");
    let link = dir.join("libnvidia-ml.so.1");
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink(cdylib(), &link).expect("symlink libnvidia-ml.so.1");
    }
    dir
}

/// One simulated host: a host description and a private state file.
#[derive(Debug)]
pub struct Host {
    pub config: PathBuf,
    pub state: PathBuf,
    /// Scratch directory (kept alive for the test).
    pub dir: tempfile::TempDir,
}

impl Host {
    /// In a child process: the host the parent set up (same files).
    fn inherited() -> Option<Self> {
        std::env::var_os(CHILD_MARKER)?;
        Some(Self {
            config: std::env::var_os("NVML_SIM_CONFIG")?.into(),
            state: std::env::var_os("NVML_SIM_STATE")?.into(),
            dir: tempfile::tempdir().expect("temp dir"),
        })
    }

    /// A shipped host description with a fresh state file.
    pub fn shipped(relative: &str) -> Self {
        if let Some(host) = Self::inherited() {
            return host;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        Self {
            config: shipped(relative),
            state: dir.path().join("state.json"),
            dir,
        }
    }

    /// A host description that does not exist (`nvmlInit` fails).
    pub fn missing() -> Self {
        if let Some(host) = Self::inherited() {
            return host;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        Self {
            config: dir.path().join("no-such-host.yaml"),
            state: dir.path().join("state.json"),
            dir,
        }
    }

    /// A host described by `yaml`, next to extra files (`name`, `text`)
    /// written into the same directory; `@SIM@` stands for the shipped
    /// `config/sim` directory.
    pub fn custom(yaml: &str, files: &[(&str, String)]) -> Self {
        if let Some(host) = Self::inherited() {
            return host;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let sim = shipped("config/sim").display().to_string();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text.replace("@SIM@", &sim))
                .expect("write extra file");
        }
        let config = dir.path().join("host.yaml");
        std::fs::write(&config, yaml.replace("@SIM@", &sim)).expect("write host file");
        Self {
            config,
            state: dir.path().join("state.json"),
            dir,
        }
    }

    /// `nvml-simctl` on this host, which must succeed; returns stdout.
    pub fn simctl(&self, args: &[&str]) -> String {
        let out = Command::new(sim_dir().join("nvml-simctl"))
            .args(args)
            .env("NVML_SIM_CONFIG", &self.config)
            .env("NVML_SIM_STATE", &self.state)
            .output()
            .expect("run nvml-simctl");
        assert!(
            out.status.success(),
            "nvml-simctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// `nvml-simctl status`, parsed.
    pub fn status(&self) -> Value {
        serde_json::from_str(&self.simctl(&["status"])).expect("status is JSON")
    }
}

/// Whether this process is the child running `name`.
fn is_child(name: &str) -> bool {
    std::env::var(CHILD_MARKER).is_ok_and(|v| v == name)
}

/// Runs `body` in a child process of this test binary whose NVML simulator
/// environment points at `host`. `name` must be the test function's name.
pub fn in_child(name: &str, host: &Host, body: impl FnOnce()) {
    in_child_with(name, host, &[], body);
}

/// [`in_child`] with extra environment for the child. `ORCH_NVML_LIBRARY`
/// and `LD_LIBRARY_PATH` are cleared unless given here, so the caller's
/// environment cannot change which library a test loads.
pub fn in_child_with(name: &str, host: &Host, env: &[(&str, OsString)], body: impl FnOnce()) {
    if is_child(name) {
        body();
        return;
    }
    let mut cmd = Command::new(std::env::current_exe().expect("test executable"));
    cmd.args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_MARKER, name)
        .env(SIM_DIR_ENV, sim_dir())
        .env("NVML_SIM_CONFIG", &host.config)
        .env("NVML_SIM_STATE", &host.state)
        .env_remove("ORCH_NVML_LIBRARY")
        .env_remove("LD_LIBRARY_PATH");
    for (key, value) in env {
        cmd.env(key, value);
    }
    let out = cmd.output().expect("run the test in a child process");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child run of `{name}` failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
}

/// `nvml-simctl` from inside a child (the environment names the host).
pub fn simctl(args: &[&str]) -> String {
    let out = Command::new(sim_dir().join("nvml-simctl"))
        .args(args)
        .output()
        .expect("run nvml-simctl");
    assert!(
        out.status.success(),
        "nvml-simctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// `nvml-simctl status` from inside a child.
pub fn status() -> Value {
    serde_json::from_str(&simctl(&["status"])).expect("status is JSON")
}

/// The venv's python with nvidia-ml-py installed (once per test process).
/// A missing python3 or a failed set-up fails the test: the conformance
/// checks are part of what must pass, never skipped.
pub fn venv_python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let probe = Command::new("python3").arg("--version").output();
            assert!(
                probe.as_ref().is_ok_and(|o| o.status.success()),
                "python3 is required for the pynvml conformance checks \
                 (Debian: apt-get install python3 python3-venv): {probe:?}"
            );
            let root = workspace_root();
            let script = root.join("tests/nvml/setup-venv.sh");
            assert!(script.exists(), "{} is missing", script.display());
            let out = Command::new("bash")
                .arg(&script)
                .arg(root.join("target/py-venv"))
                .output()
                .expect("run tests/nvml/setup-venv.sh");
            assert!(
                out.status.success(),
                "tests/nvml/setup-venv.sh failed (it installs nvidia-ml-py into target/py-venv):\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let stdout = String::from_utf8(out.stdout).expect("utf-8");
            let python = PathBuf::from(
                stdout
                    .lines()
                    .last()
                    .expect("setup-venv.sh prints the python path")
                    .trim(),
            );
            assert!(python.exists(), "{} missing", python.display());
            python
        })
        .clone()
}

/// What pynvml sees, through `tests/nvml/pynvml_dump.py`, on the host named
/// by this process's `NVML_SIM_CONFIG` / `NVML_SIM_STATE`.
pub fn pynvml_dump(scratch: &Path) -> Value {
    let script = shipped("tests/nvml/pynvml_dump.py");
    let python = venv_python();
    let out: Output = Command::new(&python)
        .arg(&script)
        .env("LD_LIBRARY_PATH", nvml_link_dir(scratch))
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", python.display()));
    assert!(
        out.status.success(),
        "pynvml_dump.py failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("pynvml_dump.py prints JSON")
}
