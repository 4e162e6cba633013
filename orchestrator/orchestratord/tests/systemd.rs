//! The systemd integration of `orchestratord`, from the outside.
//!
//! - The shipped unit, installed into a staging root by `scripts/install.sh`,
//!   passes `systemd-analyze verify` with nothing to say about it.
//! - The daemon speaks the sd_notify protocol as systemd sees it: the test
//!   binds the notify socket itself and runs the real binary with
//!   `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` set, and checks
//!   READY / STATUS / WATCHDOG / STOPPING, the documented exit codes and
//!   SIGHUP reloads.
//!
//! No Docker is needed: the daemon is pointed at a socket that does not
//! exist and must come up all the same. `systemd-analyze` is installed via
//! `tests/e2e/setup-apt.sh` when missing (CI runs as root, so apt works).
//! Every wait is a deadline on a condition.

use std::ffi::OsStr;
use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const DAEMON: &str = env!("CARGO_BIN_EXE_orchestratord");
/// Generous: the machines running this are shared and busy.
const DEADLINE: Duration = Duration::from_secs(30);
/// The watchdog period given to the daemon: it must pet every second.
const WATCHDOG_USEC: &str = "2000000";
const NO_DOCKER: &str = "unix:///nonexistent/docker.sock";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root")
}

// --- helpers: tools --------------------------------------------------------

/// `systemd-analyze`, and the `/bin/kill` the unit's ExecReload= names
/// (verify checks it exists), installed through the apt helper when missing:
/// the test does not skip without them. The helper does nothing when both
/// are there.
fn systemd_analyze() -> &'static str {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        let script = repo_root().join("tests/e2e/setup-apt.sh");
        let out = Command::new("bash")
            .arg(&script)
            .args(["systemd-analyze=systemd", "/bin/kill=procps"])
            .output()
            .expect("run tests/e2e/setup-apt.sh");
        assert!(
            out.status.success(),
            "installing systemd-analyze failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
    "systemd-analyze"
}

/// The `orchestratorctl` binary of this build: built with cargo (a no-op
/// when it is fresh), its path taken from cargo's own report.
fn ctl() -> &'static Path {
    static CTL: OnceLock<PathBuf> = OnceLock::new();
    CTL.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
        let out = Command::new(cargo)
            .current_dir(repo_root())
            .args([
                "build",
                "--quiet",
                "-p",
                "orchestratorctl",
                "--bin",
                "orchestratorctl",
                "--message-format=json",
            ])
            .stderr(Stdio::inherit())
            .output()
            .expect("run cargo build -p orchestratorctl");
        assert!(
            out.status.success(),
            "cargo build -p orchestratorctl failed"
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|m| {
                m["reason"] == "compiler-artifact" && m["target"]["name"] == "orchestratorctl"
            })
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .expect("cargo reported no orchestratorctl executable")
    })
}

/// The daemon's status through the control API, as an operator sees it.
fn status(socket: &Path) -> serde_json::Value {
    let out = Command::new(ctl())
        .arg("--socket")
        .arg(socket)
        .args(["status", "-o", "json"])
        .env_remove("ORCH_CONFIG")
        .output()
        .expect("run orchestratorctl");
    assert!(
        out.status.success(),
        "orchestratorctl status failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status is JSON")
}

fn generation(socket: &Path) -> u64 {
    status(socket)["generation"]
        .as_u64()
        .expect("status has a generation")
}

/// Polls `cond` until it holds or the deadline passes.
fn eventually(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < end, "timed out after {timeout:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

// --- helpers: the notify socket ---------------------------------------------

/// The service manager's end of sd_notify: a unix datagram socket.
struct Notify {
    sock: UnixDatagram,
    path: PathBuf,
    /// Every line received so far, in order.
    lines: Vec<String>,
}

impl Notify {
    fn bind(path: PathBuf) -> Self {
        let sock = UnixDatagram::bind(&path).expect("bind the notify socket");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        Notify {
            sock,
            path,
            lines: Vec::new(),
        }
    }

    /// Receives for at most `timeout`; false when nothing came.
    fn receive(&mut self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            match self.sock.recv(&mut buf) {
                Ok(n) => {
                    let text = String::from_utf8_lossy(&buf[..n]);
                    self.lines
                        .extend(text.lines().filter(|l| !l.is_empty()).map(String::from));
                    return true;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if Instant::now() >= end {
                        return false;
                    }
                }
                Err(e) => panic!("notify socket: {e}"),
            }
        }
    }

    /// Takes whatever is already queued (waiting at most one read timeout).
    fn drain(&mut self) {
        while self.receive(Duration::ZERO) {}
    }

    fn count(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.lines.iter().filter(|l| pred(l)).count()
    }

    fn position(&self, line: &str) -> Option<usize> {
        self.lines.iter().position(|l| l == line)
    }

    /// Waits until `n` lines satisfy `pred`.
    fn wait_count(&mut self, what: &str, n: usize, pred: impl Fn(&str) -> bool) {
        let end = Instant::now() + DEADLINE;
        while self.count(&pred) < n {
            assert!(
                Instant::now() < end,
                "timed out waiting for {what} (x{n}); received: {:?}",
                self.lines
            );
            self.receive(Duration::from_millis(200));
        }
    }

    fn wait_line(&mut self, line: &str) {
        self.wait_count(line, 1, |l| l == line);
    }
}

// --- helpers: the daemon --------------------------------------------------------

/// A host's files in a temporary directory: config, state, control socket.
struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    fn new() -> Self {
        // A unix socket path holds at most 107 bytes: stay short.
        let base = std::env::temp_dir();
        let base = if base.as_os_str().len() > 60 {
            PathBuf::from("/tmp")
        } else {
            base
        };
        let dir = tempfile::Builder::new()
            .prefix("orch-sd")
            .tempdir_in(base)
            .expect("temp dir");
        let host = Host { dir };
        host.write_config(&config(&["Echo"]));
        host
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn config_path(&self) -> PathBuf {
        self.path("startup_config.yaml")
    }

    fn socket(&self) -> PathBuf {
        self.path("ctl.sock")
    }

    /// Replaces the config atomically, as an editor or `apply` would, so a
    /// reload never reads half a file.
    fn write_config(&self, text: &str) {
        let tmp = self.path(".startup_config.yaml.tmp");
        std::fs::write(&tmp, text).expect("write config");
        std::fs::rename(&tmp, self.config_path()).expect("rename config");
    }

    /// Starts `orchestratord run` on this host's files, notifying `notify`.
    fn start(&self, notify: &Notify) -> Daemon {
        let (config, state, socket) = (self.config_path(), self.path("state"), self.socket());
        let args: [&OsStr; 9] = [
            "run".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
            "--state-dir".as_ref(),
            state.as_os_str(),
            "--socket".as_ref(),
            socket.as_os_str(),
            "--docker-host".as_ref(),
            NO_DOCKER.as_ref(),
        ];
        Daemon::spawn(&args, notify)
    }
}

/// A tiny v1 config: one group, the given agents on the reference image.
/// No metrics listener, so daemons of parallel tests never compete for a port.
fn config(agents: &[&str]) -> String {
    let mut s = String::from(
        "version: 1\n\
         host: {name: sdtest}\n\
         metrics: {listen: none}\n\
         groups:\n  core:\n    description: systemd test group\n    agents:\n",
    );
    for a in agents {
        s.push_str(&format!(
            "      {a}: {{image: \"orchestrator-agent:latest\"}}\n"
        ));
    }
    s
}

/// A running daemon; killed if a test fails before it stops.
struct Daemon {
    child: Child,
    stderr: Arc<Mutex<String>>,
    status: Option<ExitStatus>,
}

impl Daemon {
    /// Spawns the daemon the way systemd does: `NOTIFY_SOCKET`,
    /// `WATCHDOG_USEC`, and `WATCHDOG_PID` equal to the daemon's own pid.
    /// That pid is unknown before the spawn, so a shell exports its own
    /// `$$` and then `exec`s the daemon, which keeps that pid.
    fn spawn(args: &[&OsStr], notify: &Notify) -> Self {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#"export WATCHDOG_PID=$$; exec "$0" "$@""#)
            .arg(DAEMON)
            .args(args)
            .env("NOTIFY_SOCKET", &notify.path)
            .env("WATCHDOG_USEC", WATCHDOG_USEC)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove("ORCH_CONFIG")
            .env_remove("DOCKER_HOST")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn orchestratord");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().expect("stderr pipe");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().expect("log lock");
                s.push_str(&line);
                s.push('\n');
            }
        });
        Daemon {
            child,
            stderr,
            status: None,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid() as i32), sig).expect("signal the daemon");
    }

    fn log(&self) -> String {
        self.stderr.lock().expect("log lock").clone()
    }

    fn running(&mut self) -> bool {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status.is_none()
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let end = Instant::now() + DEADLINE;
        while self.running() {
            assert!(
                Instant::now() < end,
                "the daemon did not exit within {DEADLINE:?}; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.status.expect("exited")
    }

    fn wait_log(&self, needle: &str) {
        eventually(&format!("`{needle}` in the daemon's log"), DEADLINE, || {
            self.log().contains(needle)
        });
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// --- the unit file ------------------------------------------------------------------

/// Runs `scripts/install.sh --root ROOT` with the binaries of this build.
fn stage(root: &Path, extra: &[&str]) -> Output {
    // install.sh verifies the unit itself when systemd-analyze is there.
    systemd_analyze();
    // install.sh takes both binaries from one directory.
    let bin = root.with_extension("bin");
    std::fs::create_dir_all(&bin).expect("bin dir");
    for (name, src) in [
        ("orchestratord", Path::new(DAEMON)),
        ("orchestratorctl", ctl()),
    ] {
        let link = bin.join(name);
        if !link.exists() {
            std::os::unix::fs::symlink(src, &link).expect("link binary");
        }
    }
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/install.sh"))
        .arg("--root")
        .arg(root)
        .arg("--bin-dir")
        .arg(&bin)
        .args(extra)
        .output()
        .expect("run scripts/install.sh");
    assert!(
        out.status.success(),
        "install.sh {extra:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `systemd-analyze verify` on a copy of `unit` whose binaries point into
/// the staging root; returns its exit status and everything it printed.
fn verify(unit: &str, root: &Path, scratch: &Path) -> (bool, String) {
    let dir = tempfile::tempdir_in(scratch).expect("verify dir");
    let copy = dir.path().join("orchestratord.service");
    let staged = format!("{}/usr/local/bin/", root.display());
    std::fs::write(&copy, unit.replace("/usr/local/bin/", &staged)).expect("write unit copy");
    let out = Command::new(systemd_analyze())
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("run systemd-analyze verify");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `Key=value` lines of a unit, comments skipped.
fn directives(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn directive<'a>(all: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    all.iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// install.sh installs a man page per verb and the shell completions; the
/// bash one completes group and agent names from `groups -o json` (here a
/// stand-in `orchestratorctl` on PATH) and leaves the rest to the
/// generated completion.
#[test]
fn install_sh_installs_man_pages_and_completions_that_name_groups() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let root = scratch.path().join("root");
    stage(&root, &["--host", "mainpc"]);
    let share = root.join("usr/local/share");
    for page in ["orchestratorctl.1", "orchestratorctl-group-start.1"] {
        let text = std::fs::read_to_string(share.join("man/man1").join(page)).expect(page);
        assert!(text.contains(".TH"), "{page} is not a man page");
    }
    assert!(share.join("zsh/site-functions/_orchestratorctl").is_file());
    assert!(
        share
            .join("fish/vendor_completions.d/orchestratorctl.fish")
            .is_file()
    );
    let bash = share.join("bash-completion/completions/orchestratorctl");
    assert!(bash.is_file());

    let stub_dir = scratch.path().join("stub");
    std::fs::create_dir_all(&stub_dir).expect("stub dir");
    let stub = stub_dir.join("orchestratorctl");
    std::fs::write(
        &stub,
        "#!/bin/sh\necho '[{\"name\":\"core\",\"agents\":[\"A\",\"B\"]},{\"name\":\"web\",\"agents\":[\"Front\"]}]'\n",
    )
    .expect("stub");
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let script = format!(
        r#". '{}'
t() {{ COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"; COMP_POINT=${{#COMP_LINE}}; COMPREPLY=(); _orchestratorctl_with_names orchestratorctl "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"; echo "${{COMPREPLY[*]}}"; }}
t orchestratorctl group start ""
t orchestratorctl logs c
t orchestratorctl gro
"#,
        bash.display()
    );
    let path = format!(
        "{}:{}",
        stub_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env("PATH", path)
        .output()
        .expect("run bash");
    let said = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = said.lines().collect();
    assert_eq!(
        lines.get(..2),
        Some(&["core web", "core/A core/B"][..]),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        lines
            .get(2)
            .is_some_and(|l| l.split(' ').any(|w| w == "group")),
        "the generated completion did not answer: {said}"
    );
}

#[test]
fn the_staged_unit_passes_systemd_analyze_verify() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let root = scratch.path().join("root");
    let out = stage(&root, &["--host", "mainpc"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("systemd-analyze verify:") && said.contains("is clean"),
        "install.sh did not verify the unit: {said}"
    );

    let unit_path = root.join("etc/systemd/system/orchestratord.service");
    let unit = std::fs::read_to_string(&unit_path).expect("installed unit");
    let (ok, text) = verify(&unit, &root, scratch.path());
    assert!(ok && text.trim().is_empty(), "verify complained:\n{text}");

    // The check has teeth: a misspelt directive and a missing binary are
    // both reported.
    let (_, text) = verify(
        &unit.replace("KillMode=process", "KillMode=procss"),
        &root,
        scratch.path(),
    );
    assert!(
        text.contains("KillMode") || text.contains("kill mode"),
        "{text}"
    );
    let (ok, text) = verify(
        &unit.replace(
            "/usr/local/bin/orchestratord run",
            "/usr/local/bin/nowhere run",
        ),
        &root,
        scratch.path(),
    );
    assert!(!ok && text.contains("nowhere"), "{text}");

    let d = directives(&unit);
    let one = |k: &str| -> &str {
        let v = directive(&d, k);
        assert_eq!(v.len(), 1, "{k}= should appear once: {v:?}");
        v[0]
    };
    assert_eq!(one("Type"), "notify");
    assert_eq!(one("NotifyAccess"), "main");
    assert_eq!(one("WatchdogSec"), "30s");
    assert_eq!(one("Restart"), "on-failure");
    assert_eq!(one("KillMode"), "process");
    assert_eq!(one("ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(one("RuntimeDirectory"), "orchestrator");
    assert_eq!(one("RuntimeDirectoryMode"), "0755");
    assert_eq!(one("StateDirectory"), "orchestrator");
    assert_eq!(one("ProtectSystem"), "strict");
    assert_eq!(one("DevicePolicy"), "closed");
    assert_eq!(
        one("ExecStart"),
        "/usr/local/bin/orchestratord run --config /etc/orchestrator/startup_config.yaml"
    );
    assert_eq!(
        one("ExecStartPre"),
        "/usr/local/bin/orchestratord check --config /etc/orchestrator/startup_config.yaml"
    );
    let devices = directive(&d, "DeviceAllow").join(" | ");
    for dev in [
        "/dev/nvidiactl",
        "/dev/nvidia-uvm",
        "char-nvidia ",
        "char-nvidia-caps",
    ] {
        assert!(devices.contains(dev), "no DeviceAllow for {dev}: {devices}");
    }
    for w in ["docker.service", "network-online.target"] {
        assert!(one("Wants").contains(w) && one("After").contains(w), "{w}");
    }

    // What was staged is what was built, with the host's config.
    let staged = std::fs::read(root.join("usr/local/bin/orchestratord")).expect("staged daemon");
    assert!(staged == std::fs::read(DAEMON).expect("built daemon"));
    let config = std::fs::read_to_string(root.join("etc/orchestrator/startup_config.yaml"))
        .expect("staged config");
    assert!(config.contains("name: mainpc"), "{config}");
}

/// Every directive says why, in a comment right above it; only repeats of
/// one key (DeviceAllow=) and a directory's `…Mode=` share their comment.
#[test]
fn every_directive_of_the_unit_has_a_comment() {
    let path = repo_root().join("packaging/systemd/orchestratord.service");
    let unit = std::fs::read_to_string(&path).expect("the unit file");
    let mut previous: Option<&str> = None;
    let mut checked = 0;
    for (n, line) in unit.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('[') {
            previous = None;
            continue;
        }
        if line.starts_with('#') {
            previous = Some("#");
            continue;
        }
        let key = line.split_once('=').map_or(line, |(k, _)| k);
        let explained = match previous {
            Some("#") => true,
            Some(prev) => key.starts_with(prev),
            None => false,
        };
        assert!(
            explained,
            "line {}: `{line}` has no comment saying why",
            n + 1
        );
        previous = Some(key);
        checked += 1;
    }
    assert!(checked > 40, "only {checked} directives found");
}

#[test]
fn install_script_is_idempotent_and_dry_run_changes_nothing() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let root = scratch.path().join("root");

    let out = stage(
        &root,
        &["--host", "mainpc", "--prefix", "/opt/orch", "--dry-run"],
    );
    assert!(!root.exists(), "--dry-run created {}", root.display());
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("would install"), "{said}");

    stage(&root, &["--host", "mainpc", "--prefix", "/opt/orch"]);
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/orchestratord.service"))
        .expect("unit");
    let d = directives(&unit);
    assert_eq!(
        directive(&d, "ExecStart"),
        ["/opt/orch/bin/orchestratord run --config /etc/orchestrator/startup_config.yaml"]
    );
    let mode = std::fs::metadata(root.join("opt/orch/bin/orchestratorctl"))
        .expect("ctl")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);

    // Again, with another host: nothing changes, the config is kept.
    let out = stage(&root, &["--host", "pc2", "--prefix", "/opt/orch"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        !said.contains(": installed"),
        "second run installed again:\n{said}"
    );
    assert!(said.contains("keeping the existing config"), "{said}");
    assert!(said.matches("up to date").count() >= 3, "{said}");
    let config =
        std::fs::read_to_string(root.join("etc/orchestrator/startup_config.yaml")).expect("config");
    assert!(config.contains("name: mainpc"), "the config was replaced");
}

// --- the sd_notify protocol ---------------------------------------------------------

#[test]
fn ready_status_watchdog_then_stopping_on_sigterm() {
    let host = Host::new();
    let mut notify = Notify::bind(host.path("notify.sock"));
    let mut daemon = host.start(&notify);

    notify.wait_line("READY=1");
    assert!(
        host.socket().exists(),
        "READY=1 before the control socket exists"
    );
    let mode = std::fs::metadata(host.socket())
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660, "control socket mode");

    // Docker is unreachable, and the daemon says so instead of failing.
    notify.wait_count("STATUS= with docker unreachable", 1, |l| {
        l.starts_with("STATUS=") && l.contains("docker unreachable")
    });
    // Petted repeatedly: a period of 2 s means once a second.
    notify.wait_count("WATCHDOG=1", 3, |l| l == "WATCHDOG=1");
    let ready = notify.position("READY=1").expect("READY");
    let first_pet = notify.position("WATCHDOG=1").expect("WATCHDOG");
    assert!(
        ready < first_pet,
        "WATCHDOG=1 before READY=1: {:?}",
        notify.lines
    );

    // The pid systemd would watch is the daemon's (WATCHDOG_PID was right).
    let s = status(&host.socket());
    assert_eq!(s["pid"].as_u64(), Some(u64::from(daemon.pid())));
    assert_eq!(s["docker"]["connected"], false);
    assert!(daemon.running());

    daemon.signal(Signal::SIGTERM);
    notify.wait_line("STOPPING=1");
    let exit = daemon.wait_exit();
    assert_eq!(exit.code(), Some(0), "log:\n{}", daemon.log());
    assert!(
        !host.socket().exists(),
        "the control socket was left behind"
    );
    notify.drain();
    assert_eq!(notify.count(|l| l == "READY=1"), 1, "{:?}", notify.lines);
}

#[test]
fn an_invalid_config_exits_3_before_ready() {
    let host = Host::new();
    host.write_config(&format!("{}colour: red\n", config(&["Echo"])));
    let mut notify = Notify::bind(host.path("notify.sock"));
    let mut daemon = host.start(&notify);

    let exit = daemon.wait_exit();
    assert_eq!(exit.code(), Some(3), "log:\n{}", daemon.log());
    notify.drain();
    assert_eq!(notify.count(|l| l == "READY=1"), 0, "{:?}", notify.lines);
    assert!(!host.socket().exists());
    let log = daemon.log();
    assert!(
        log.contains("startup_config.yaml:") && log.contains("colour"),
        "the error should name file, line and key:\n{log}"
    );
}

#[test]
fn a_second_daemon_on_the_same_socket_exits_4_and_the_first_keeps_running() {
    let host = Host::new();
    let mut first_notify = Notify::bind(host.path("notify1.sock"));
    let mut first = host.start(&first_notify);
    first_notify.wait_line("READY=1");

    let mut second_notify = Notify::bind(host.path("notify2.sock"));
    let mut second = host.start(&second_notify);
    let exit = second.wait_exit();
    assert_eq!(exit.code(), Some(4), "log:\n{}", second.log());
    assert!(
        second.log().contains("already listening"),
        "{}",
        second.log()
    );
    second_notify.drain();
    assert_eq!(
        second_notify.count(|l| l == "READY=1"),
        0,
        "{:?}",
        second_notify.lines
    );

    // The first is untouched: alive, its socket answers, its watchdog goes on.
    assert!(first.running(), "log:\n{}", first.log());
    assert!(host.socket().exists());
    assert_eq!(
        status(&host.socket())["pid"].as_u64(),
        Some(u64::from(first.pid()))
    );
    first_notify.drain();
    let pets = first_notify.count(|l| l == "WATCHDOG=1");
    first_notify.wait_count("WATCHDOG=1 after the second daemon", pets + 2, |l| {
        l == "WATCHDOG=1"
    });

    first.signal(Signal::SIGTERM);
    assert_eq!(first.wait_exit().code(), Some(0), "log:\n{}", first.log());
}

#[test]
fn sighup_keeps_the_running_config_when_the_new_one_is_broken() {
    let host = Host::new();
    let mut notify = Notify::bind(host.path("notify.sock"));
    let mut daemon = host.start(&notify);
    notify.wait_line("READY=1");
    let before = generation(&host.socket());

    // Broken on disk: the reload is refused and nothing changes.
    host.write_config("version: 1\nhost: {name: sdtest}\ngroups: [not, a, map]\n");
    daemon.signal(Signal::SIGHUP);
    daemon.wait_log("reload refused");
    assert!(daemon.running(), "log:\n{}", daemon.log());
    assert_eq!(generation(&host.socket()), before);
    notify.drain();
    let pets = notify.count(|l| l == "WATCHDOG=1");
    notify.wait_count("WATCHDOG=1 after the refused reload", pets + 1, |l| {
        l == "WATCHDOG=1"
    });

    // Fixed: the next SIGHUP applies it.
    host.write_config(&config(&["Echo", "Echo2"]));
    daemon.signal(Signal::SIGHUP);
    eventually("the generation to move on", DEADLINE, || {
        generation(&host.socket()) == before + 1
    });
    daemon.wait_log("config reloaded");
    assert!(daemon.running());

    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0), "log:\n{}", daemon.log());
}
