//! The `nvidia-cuda-mps-control` stand-in as a supervisor drives it: start
//! with `-d`, send commands on stdin of fresh invocations, `quit`; and what it
//! records in `invocations.jsonl` and `control.log`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::kill;
use nix::unistd::Pid;
use nvml_sim::mps::{self, Invocation};

const MPS: &str = env!("CARGO_BIN_EXE_nvidia-cuda-mps-control-sim");
const VISIBLE: &str = "GPU-4090a1b2-c3d4-4e5f-8a6b-7c8d9e0f1a2b";

/// Pipe and log directories in a scratch directory, and a guard that stops a
/// daemon left running by a failed assertion.
struct Mps {
    dir: tempfile::TempDir,
}

impl Mps {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn pipe(&self) -> PathBuf {
        self.dir.path().join("pipe")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    fn run(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(MPS)
            .args(args)
            .env("CUDA_MPS_PIPE_DIRECTORY", self.pipe())
            .env("CUDA_MPS_LOG_DIRECTORY", self.log())
            .env("CUDA_VISIBLE_DEVICES", VISIBLE)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the MPS control stand-in");
        let mut input = child.stdin.take().expect("stdin");
        // The program may exit without reading stdin (no daemon, `-d`): a
        // broken pipe here is not a failure of the test.
        let _ = input.write_all(stdin.as_bytes());
        drop(input);
        child.wait_with_output().expect("wait")
    }

    fn send(&self, commands: &str) -> (i32, String, String) {
        let out = self.run(&[], commands);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn daemon_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.pipe().join(mps::PID_FILE))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Mps {
    fn drop(&mut self) {
        if self.pipe().join(mps::CONTROL_SOCKET).exists() {
            let _ = self.send("quit\n");
        }
    }
}

fn alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

#[test]
fn background_daemon_commands_quit_and_records() {
    let m = Mps::new();

    // No daemon yet: the client fails clearly.
    let (code, out, err) = m.send("get_server_list\n");
    assert_eq!(code, 1);
    assert_eq!(out, "");
    assert!(
        err.contains("Cannot find MPS control daemon process"),
        "{err}"
    );

    // -d returns once the daemon listens.
    let started = m.run(&["-d"], "");
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    let control = m.pipe().join("control");
    assert!(
        is_socket(&control),
        "control endpoint in the pipe directory"
    );
    let pid = m.daemon_pid().expect("pid file");
    assert!(alive(pid));
    assert_ne!(pid as u32, std::process::id());
    let log = std::fs::read_to_string(m.log().join("control.log")).expect("control.log");
    assert!(
        log.contains(&format!(
            "Starting control daemon using socket {}",
            control.display()
        )),
        "{log}"
    );

    // A second daemon on the same pipe directory is refused.
    let second = m.run(&["-d"], "");
    assert_eq!(second.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&second.stderr)
            .contains("An instance of this daemon is already running")
    );
    assert_eq!(m.daemon_pid(), Some(pid), "the first daemon keeps running");

    // Settings, as the supervisor sends them.
    let commands = "set_default_active_thread_percentage 25\n\
                    set_default_device_pinned_mem_limit 0 8192M\n\
                    get_default_active_thread_percentage\n\
                    get_default_device_pinned_mem_limit 0\n\
                    get_server_list";
    let (code, out, err) = m.send(commands);
    assert_eq!((code, out.as_str()), (0, "25.0\n8G\n"), "stderr: {err}");

    // A malformed limit is rejected (and the exit status says so).
    let (code, out, _) = m.send("set_default_device_pinned_mem_limit 0 8GiB\n");
    assert_eq!(code, 1);
    assert!(out.contains("Invalid memory limit"), "{out}");
    let (_, out, _) = m.send("get_default_device_pinned_mem_limit 0\n");
    assert_eq!(out, "8G\n", "the rejected command changed nothing");

    // quit stops the daemon and removes its endpoint.
    let (code, out, _) = m.send("quit\n");
    assert_eq!((code, out.as_str()), (0, ""));
    wait_until("the daemon exits", || !alive(pid));
    assert!(!control.exists(), "control endpoint removed");
    assert!(m.daemon_pid().is_none(), "pid file removed");
    let (code, _, err) = m.send("get_server_list\n");
    assert_eq!(code, 1);
    assert!(err.contains("Cannot find MPS control daemon process"));

    // A restarted daemon starts from the defaults (settings die with quit).
    assert!(m.run(&["-d"], "").status.success());
    let (_, out, _) =
        m.send("get_default_active_thread_percentage\nget_default_device_pinned_mem_limit 0\n");
    assert_eq!(out, "100.0\n0M\n");
    let restarted = m.daemon_pid().expect("pid");
    assert_eq!(
        m.send("quit").0,
        0,
        "a last line without newline is still a command"
    );
    wait_until("the restarted daemon exits", || !alive(restarted));

    // Every invocation is on record, in order, with argv, env and replies.
    let records = mps::read_invocations(&m.log()).expect("invocations.jsonl");
    let summary: Vec<(&str, i32)> = records
        .iter()
        .map(|r| (r.mode.as_str(), r.exit_code))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("client", 1),
            ("daemon", 0),
            ("daemon", 1),
            ("client", 0),
            ("client", 1),
            ("client", 0),
            ("client", 0),
            ("client", 1),
            ("daemon", 0),
            ("client", 0),
            ("client", 0),
        ]
    );
    let settings: &Invocation = &records[3];
    let sent: Vec<(&str, &str, bool)> = settings
        .commands
        .iter()
        .map(|e| (e.command.as_str(), e.reply.as_str(), e.ok))
        .collect();
    assert_eq!(
        sent,
        vec![
            ("set_default_active_thread_percentage 25", "", true),
            ("set_default_device_pinned_mem_limit 0 8192M", "", true),
            ("get_default_active_thread_percentage", "25.0", true),
            ("get_default_device_pinned_mem_limit 0", "8G", true),
            ("get_server_list", "", true),
        ]
    );
    let daemon = &records[1];
    assert_eq!(daemon.argv.get(1).map(String::as_str), Some("-d"));
    assert_eq!(daemon.daemon_pid, Some(pid as u32));
    for r in &records {
        assert_eq!(
            r.env.get("CUDA_MPS_PIPE_DIRECTORY").map(PathBuf::from),
            Some(m.pipe())
        );
        assert_eq!(
            r.env.get("CUDA_MPS_LOG_DIRECTORY").map(PathBuf::from),
            Some(m.log())
        );
        assert_eq!(
            r.env.get("CUDA_VISIBLE_DEVICES").map(String::as_str),
            Some(VISIBLE)
        );
    }
    assert_eq!(
        records[0].error.as_deref(),
        Some("Cannot find MPS control daemon process")
    );
    assert_eq!(
        records[2].error.as_deref(),
        Some("An instance of this daemon is already running")
    );

    // control.log has the real tool's per-command lines.
    let log = std::fs::read_to_string(m.log().join("control.log")).expect("control.log");
    for line in [
        "Cmd:set_default_active_thread_percentage 25",
        "Cmd:set_default_device_pinned_mem_limit 0 8192M",
        "NEW UI",
        "UI closed",
        "Cmd:quit",
    ] {
        assert!(log.contains(line), "control.log lacks `{line}`:\n{log}");
    }
}

#[test]
fn foreground_daemon_serves_until_quit() {
    let m = Mps::new();
    let mut daemon = Command::new(MPS)
        .arg("-f")
        .env("CUDA_MPS_PIPE_DIRECTORY", m.pipe())
        .env("CUDA_MPS_LOG_DIRECTORY", m.log())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start -f");
    let control = m.pipe().join("control");
    wait_until("the foreground daemon listens", || is_socket(&control));
    assert_eq!(m.daemon_pid(), Some(daemon.id() as i32));
    let (code, out, _) = m.send("get_default_active_thread_percentage\nquit\n");
    assert_eq!((code, out.as_str()), (0, "100.0\n"));
    let status = daemon.wait().expect("wait for -f");
    assert!(status.success());
    assert!(!control.exists());
    let records = mps::read_invocations(&m.log()).expect("records");
    assert_eq!(records.first().map(|r| r.mode.as_str()), Some("foreground"));
}

#[test]
fn bad_arguments_are_refused_and_recorded() {
    let m = Mps::new();
    let out = m.run(&["--bogus"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage"));
    let records = mps::read_invocations(&m.log()).expect("records");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].argv.get(1).map(String::as_str), Some("--bogus"));
    assert_eq!(records[0].exit_code, 1);
}
