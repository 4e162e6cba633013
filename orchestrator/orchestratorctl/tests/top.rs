//! `orchestratorctl top` against a daemon running in this process on
//! fakes: on a pseudo-terminal (the screen, a read on each event, the
//! keys, the terminal given back) and without one (the plain table, once
//! or every interval, and across the daemon going away and coming back).

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, Read as _, Write as _};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::pty::{Winsize, openpty};
use nix::sys::termios::{LocalFlags, tcgetattr};
use orch_daemon::testing::{CHAIN, Harness};

struct Host {
    rt: tokio::runtime::Runtime,
    h: Harness,
}

impl Host {
    fn start(config: &str) -> Host {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let h = rt.block_on(Harness::start(config));
        Host { rt, h }
    }

    fn ctl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_orchestratorctl"))
            .args(args)
            .env("NO_COLOR", "1")
            .env("ORCHESTRATOR_SOCKET", self.h.socket())
            .output()
            .unwrap()
    }

    fn started(config: &str) -> Host {
        let host = Host::start(config);
        let out = host.ctl(&["group", "start", "base", "--wait"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        host
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// How long a test waits for what must come before it calls it a failure
/// (a bound on a hang, not a measure of speed).
const PATIENCE: Duration = Duration::from_secs(60);

/// Waits until `what` holds of the bytes read so far.
#[track_caller]
fn until(seen: &Mutex<Vec<u8>>, what: &str, cond: impl Fn(&str) -> bool) {
    let start = Instant::now();
    loop {
        let now = text(&seen.lock().unwrap());
        if cond(&now) {
            return;
        }
        assert!(start.elapsed() < PATIENCE, "no {what} in:\n{now:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

const ENTER_ALTERNATE: &str = "\x1b[?1049h";
const LEAVE_ALTERNATE: &str = "\x1b[?1049l";
const SHOW_CURSOR: &str = "\x1b[?25h";

#[test]
fn on_a_terminal_top_shows_the_agents_reads_on_events_quits_on_q_and_gives_the_terminal_back() {
    let host = Host::started(CHAIN);
    let size = Winsize {
        ws_row: 30,
        ws_col: 120,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = openpty(Some(&size), None).unwrap();
    let cooked = |fd: &OwnedFd| {
        let t = tcgetattr(fd).unwrap();
        t.local_flags.contains(LocalFlags::ICANON) && t.local_flags.contains(LocalFlags::ECHO)
    };
    assert!(cooked(&pty.slave), "a new pty starts in cooked mode");
    let slave = std::fs::File::from(pty.slave.try_clone().unwrap());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_orchestratorctl"));
    // An hour between reads: what changes on the screen comes from events.
    cmd.args(["top", "--interval", "3600"])
        .env("ORCHESTRATOR_SOCKET", host.h.socket())
        .env("TERM", "xterm-256color")
        .env_remove("NO_COLOR")
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave);
    // SAFETY: between fork and exec the child calls only setsid and ioctl,
    // both async-signal-safe, and touches no memory of the parent's.
    unsafe {
        cmd.pre_exec(|| {
            // Its own session, with the pty as its controlling terminal,
            // as a shell would start it (and never the terminal the tests
            // were started from).
            nix::unistd::setsid()?;
            if libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop(cmd);

    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut master = std::fs::File::from(pty.master);
    let mut writer = master.try_clone().unwrap();
    let reader = {
        let seen = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends with EIO once no one holds the pty's other side.
            while let Ok(n) = master.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };

    until(&seen, "agent on the screen", |s| {
        s.contains(ENTER_ALTERNATE) && s.contains("base/Flaky") && s.contains("base/Top")
    });
    assert!(!cooked(&pty.slave), "raw mode while it runs");
    // An event is a cue to read again: the group's agents show up.
    assert!(!text(&seen.lock().unwrap()).contains("extra/Side"));
    let out = host.ctl(&["group", "start", "extra", "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    until(&seen, "the started group's agents", |s| {
        s.contains("extra/Side")
    });
    writer.write_all(b"q").unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < PATIENCE, "top did not quit on q");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    assert!(cooked(&pty.slave), "the terminal is back in cooked mode");
    drop(pty.slave);
    drop(writer);
    reader.join().unwrap();
    let screen = text(&seen.lock().unwrap());
    let entered = screen.rfind(ENTER_ALTERNATE).unwrap();
    let left = screen
        .rfind(LEAVE_ALTERNATE)
        .expect("left the alternate screen");
    assert!(left > entered, "{screen:?}");
    assert!(screen[left..].contains(SHOW_CURSOR), "{screen:?}");
    // The grouping: the GPU-less agents under their heading, the keys below.
    assert!(screen.contains("no GPU slice"), "{screen:?}");
    assert!(screen.contains("q quit"), "{screen:?}");
}

#[test]
fn once_prints_the_plain_table_without_escape_codes() {
    let host = Host::started(CHAIN);
    let out = host.ctl(&["top", "--once", "--sort", "name"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(!table.contains('\x1b'), "{table:?}");
    assert!(
        table.starts_with("orchestratorctl top: 3 replica(s), by name"),
        "{table}"
    );
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[1].contains("AGENT") && lines[1].contains("GPU MEM"),
        "{table}"
    );
    assert!(
        lines[2].starts_with("no GPU slice  3 replica(s)"),
        "{table}"
    );
    let pos = |name: &str| {
        table
            .find(name)
            .unwrap_or_else(|| panic!("{name}: {table}"))
    };
    assert!(pos("base/Flaky") < pos("base/Mid") && pos("base/Mid") < pos("base/Top"));
    assert!(lines[3].contains("running"), "{table}");

    // The fleet: each host under its heading, a HOST column.
    let out = host.ctl(&["top", "--once", "--all-hosts"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].contains("1 host(s), 3 replica(s)"), "{table}");
    assert!(lines[1].starts_with("  HOST      AGENT"), "{table}");
    assert_eq!(lines[2], "== testhost (this host)", "{table}");
    assert!(lines[4].starts_with("  testhost  base/"), "{table}");
    let out = host.ctl(&["top", "--once", "--all-hosts", "--host", "testhost"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn top_takes_tables_only_and_a_bounded_interval() {
    let host = Host::start(CHAIN);
    let out = host.ctl(&["top", "--once", "-o", "json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("agents -o json"),
        "{}",
        text(&out.stderr)
    );
    let out = host.ctl(&["top", "--once", "--interval", "0.1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("outside 0.25 to 3600"),
        "{}",
        text(&out.stderr)
    );
    let out = host.ctl(&["top", "--once", "--sort", "bogus"]);
    assert_eq!(out.status.code(), Some(2));
    // CPU is a sort key; the table has its column.
    let out = host.ctl(&["top", "--once", "--sort", "cpu"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.contains("by CPU"), "{shown}");
    assert!(shown.contains(" CPU "), "{shown}");
}

#[test]
fn without_a_terminal_top_prints_every_interval_and_carries_on_across_a_daemon_restart() {
    let mut host = Host::started(CHAIN);
    let mut child = Command::new(env!("CARGO_BIN_EXE_orchestratorctl"))
        .args(["top", "--interval", "0.3"])
        .env("ORCHESTRATOR_SOCKET", host.h.socket())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let collect = |r: Box<dyn std::io::Read + Send>| {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(r).lines() {
                let Ok(line) = line else { break };
                let mut s = s.lock().unwrap();
                s.extend_from_slice(line.as_bytes());
                s.push(b'\n');
            }
        });
        seen
    };
    let out = collect(Box::new(child.stdout.take().unwrap()));
    let err = collect(Box::new(child.stderr.take().unwrap()));
    let tables = |s: &str| s.matches("orchestratorctl top:").count();
    until(&out, "two tables", |s| tables(s) >= 2);
    host.rt.block_on(host.h.stop());
    until(&err, "the daemon's absence", |s| s.contains("trying again"));
    let before = tables(&text(&out.lock().unwrap()));
    host.rt.block_on(host.h.restart());
    until(&out, "a table after the restart", |s| tables(s) > before);
    child.kill().unwrap();
    child.wait().unwrap();
    let out = text(&out.lock().unwrap());
    assert!(!out.contains('\x1b'), "{out:?}");
    assert!(out.ends_with("\n") && out.contains("base/Top"), "{out}");
}
