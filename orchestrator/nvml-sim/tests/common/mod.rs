//! Helpers shared by the simulator's integration tests: locating (and
//! building) the `libnvml_sim.so` cdylib, running a test body in a fresh
//! child process with its own `NVML_SIM_CONFIG` / `NVML_SIM_STATE`, and
//! driving the `nvml-simctl` binary.
//!
//! Why a child process: the library reads its environment at `nvmlInit` and
//! `dlopen` shares one instance per file per process, so tests running in
//! parallel threads of one process would share one simulated host. Each test
//! therefore re-runs itself (`<test-binary> <name> --exact`) with its own
//! environment and checks the child passed.
//!
//! `cargo test` links the tests against the rlib and does not produce the
//! cdylib, so [`cdylib`] runs `cargo build -p nvml-sim --lib` for the test's
//! own profile once per test process (cheap when up to date). Running
//! `cargo build -p nvml-sim` beforehand works as well.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use nvml_wrapper::Nvml;

/// Set in a child process: the name of the test it runs.
const CHILD_MARKER: &str = "NVML_SIM_TEST_CHILD";
/// Set in a child process: the cdylib the parent located.
const LIB_ENV: &str = "NVML_SIM_TEST_LIB";

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

/// Path of `libnvml_sim.so` for this profile, built if needed.
pub fn cdylib() -> PathBuf {
    if let Some(lib) = std::env::var_os(LIB_ENV) {
        return PathBuf::from(lib);
    }
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let dir = profile_dir();
        let profile = dir
            .file_name()
            .and_then(|n| n.to_str())
            .expect("profile name")
            .to_owned();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build
            .args(["build", "-p", "nvml-sim", "--lib"])
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
        let out = build.output().expect("run cargo build for the cdylib");
        assert!(
            out.status.success(),
            "building libnvml_sim.so failed (run `cargo build -p nvml-sim` to see why):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lib = dir.join("libnvml_sim.so");
        assert!(
            lib.exists(),
            "{} missing after the build; run `cargo build -p nvml-sim`",
            lib.display()
        );
        lib
    })
    .clone()
}

/// The environment of one simulated host: a host file and a private state file.
#[derive(Debug)]
pub struct Host {
    /// Host description.
    pub config: PathBuf,
    /// State file.
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

    /// A host using a shipped description, with a fresh state file.
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

    /// A host whose description file does not exist (`nvmlInit` must fail).
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

    /// A host described by `yaml`; `@SIM@` stands for the shipped
    /// `config/sim` directory (where the card files are).
    pub fn custom(yaml: &str) -> Self {
        if let Some(host) = Self::inherited() {
            return host;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let sim = shipped("config/sim");
        let text = yaml.replace("@SIM@", &sim.display().to_string());
        let config = dir.path().join("host.yaml");
        std::fs::write(&config, text).expect("write host file");
        Self {
            config,
            state: dir.path().join("state.json"),
            dir,
        }
    }

    /// `nvml-simctl` with this host's environment.
    pub fn simctl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_nvml-simctl"))
            .args(args)
            .env("NVML_SIM_CONFIG", &self.config)
            .env("NVML_SIM_STATE", &self.state)
            .output()
            .expect("run nvml-simctl")
    }

    /// `nvml-simctl`, which must succeed; returns stdout.
    pub fn simctl_ok(&self, args: &[&str]) -> String {
        let out = self.simctl(args);
        assert!(
            out.status.success(),
            "nvml-simctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// `nvml-simctl status` parsed.
    pub fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.simctl_ok(&["status"])).expect("status is JSON")
    }
}

/// Whether this process is the child running `name`.
fn is_child(name: &str) -> bool {
    std::env::var(CHILD_MARKER).is_ok_and(|v| v == name)
}

/// Runs `body` in a child process of this test binary whose environment
/// points the library at `host`. `name` must be the test function's name.
pub fn in_child(name: &str, host: &Host, body: impl FnOnce()) {
    in_child_env(name, host, &[], body);
}

/// [`in_child`] with extra environment for the child.
pub fn in_child_env(name: &str, host: &Host, env: &[(&str, &str)], body: impl FnOnce()) {
    if is_child(name) {
        body();
        return;
    }
    let lib = cdylib();
    let mut cmd = Command::new(std::env::current_exe().expect("test executable"));
    cmd.args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_MARKER, name)
        .env(LIB_ENV, &lib)
        .env("NVML_SIM_CONFIG", &host.config)
        .env("NVML_SIM_STATE", &host.state)
        .env_remove("NVML_SIM_CALLER");
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

/// NVML loaded from the simulator through `nvml-wrapper` (in a child).
pub fn nvml() -> Nvml {
    let lib = cdylib();
    Nvml::builder()
        .lib_path(lib.as_os_str())
        .init()
        .unwrap_or_else(|e| panic!("nvmlInit through {} failed: {e}", lib.display()))
}
