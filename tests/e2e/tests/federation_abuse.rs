//! The federation listener of a real daemon under abuse, each host in its
//! own network namespace on a private link layer (`e2e::net::Lan`), with
//! real CURVE keys. The bus's own tests (orchestrator/federation/tests/
//! abuse.rs, fairness.rs) prove the bounds on a bare bus; these prove that
//! a whole daemon holds behind them:
//!
//! - 1000 half-open TCP connections to its federation port: the control
//!   socket keeps answering, the systemd watchdog keeps being fed, its
//!   real peer stays alive.
//! - A listed key flooding multipart messages of many 4 MiB frames: the
//!   daemon's peak RSS stays within a stated bound, it keeps answering,
//!   its real peer stays alive.
//! - A listed key flooding requests without waiting for replies: it is
//!   answered `unavailable` past its in-flight limit, while a third host's
//!   state changes (down, then alive again) still reach the daemon's
//!   `peers` and `status --all-hosts` alike.
//!
//! The attackers are Python scripts in tests/federation/ run inside their
//! own namespace; the flooders use pyzmq (tests/federation/setup-venv.sh).

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::net::Lan;
use e2e::{Daemon, Host, IMAGE, Keys, keys, repo_root};

/// A liveness bound on one `status` call over the control socket during a
/// flood, generous because the machine may be busy: the daemon must answer,
/// not answer fast. Never a measure of speed (that is scripts/bench.sh).
const ANSWERS_WITHIN: Duration = Duration::from_secs(2);

/// The watchdog interval the daemon is given (`WATCHDOG_USEC`). The daemon
/// pets at half of it; systemd kills a service that goes a whole interval
/// without `WATCHDOG=1`.
const WATCHDOG: Duration = Duration::from_secs(2);

/// What the multipart flood may add to the daemon's peak resident memory:
/// the same figure as the bus's own test (tests/abuse.rs FLOOD_BOUND_MIB):
/// a connection's budget (16 MiB), one frame being decoded (4 MiB), what
/// arrives between two checks of the budget, libzmq's and the allocator's
/// slack. Without the budget one such message takes a process past 1 GiB.
const FLOOD_BOUND_MIB: u64 = 160;

/// How long each flood lasts.
const FLOOD_FOR: Duration = Duration::from_secs(8);

const GROUP: &str = "  base:\n    agents:\n      A: {}\n";

/// A listed key: name, ip (None for a monitor, which is never dialled),
/// public key.
struct Listed<'a> {
    name: &'a str,
    ip: Option<&'a str>,
    key: &'a str,
}

fn config(host: &Host, ip: &str, secret: &Path, listed: &[Listed<'_>]) -> String {
    let peers: Vec<String> = listed
        .iter()
        .map(|l| match l.ip {
            Some(ip) => format!(
                "    - {{name: {}, endpoint: \"tcp://{ip}:7100\", public_key: \"{}\"}}",
                l.name, l.key
            ),
            None => format!(
                "    - {{name: {}, public_key: \"{}\", role: monitor}}",
                l.name, l.key
            ),
        })
        .collect();
    format!(
        r#"version: 1
host: {{name: {host}}}
defaults:
  image: {IMAGE}
  health: {{exec: ["/reference-agent", "--probe", "http://127.0.0.1:8080/health"], interval: 1s, timeout: 3s, retries: 2, start_period: 10s}}
  stop_timeout: 2s
groups:
{GROUP}
federation:
  listen: "tcp://{ip}:7100"
  peers:
{}
  keys: {{secret_key_file: {}}}
"#,
        peers.join("\n"),
        secret.display(),
        host = host.name,
    )
}

fn peers(d: &Daemon) -> Vec<serde_json::Value> {
    serde_json::from_str(&d.ctl_ok(&["-o", "json", "peers"])).unwrap()
}

fn peer(d: &Daemon, name: &str) -> serde_json::Value {
    peers(d)
        .into_iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{name} is not among the peers"))
}

fn state_of(d: &Daemon, name: &str) -> String {
    peer(d, name)["state"].as_str().unwrap().to_string()
}

fn until_state(d: &Daemon, name: &str, state: &str) {
    d.wait_until(
        &format!("{name} is {state}"),
        Duration::from_secs(60),
        |d| state_of(d, name) == state,
    );
}

/// How `status --all-hosts` on `d` shows host `name`.
fn fleet_state(d: &Daemon, name: &str) -> String {
    let fleet: Vec<serde_json::Value> =
        serde_json::from_str(&d.ctl_ok(&["-o", "json", "status", "--all-hosts"])).unwrap();
    fleet
        .iter()
        .find(|h| h["host"] == name)
        .unwrap_or_else(|| panic!("{name} is not in the fleet"))["state"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Times one `status` call on the control socket.
fn timed_status(d: &Daemon) -> Duration {
    let start = Instant::now();
    let s = d.status();
    let took = start.elapsed();
    assert!(!s.host.is_empty());
    took
}

/// A field of /proc/PID/status, in KiB.
fn proc_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The sum of `orchestrator_federation_refused_total` for `reason`, from
/// the daemon's `/metrics` on `ip:9464`, fetched inside `ns`.
fn refused(ns: &str, ip: &str, reason: &str) -> f64 {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "curl", "-sf"])
        .arg(format!("http://{ip}:9464/metrics"))
        .output()
        .unwrap();
    assert!(out.status.success(), "curl /metrics: {:?}", out.status);
    let label = format!("reason=\"{reason}\"");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("orchestrator_federation_refused_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn netns_available() -> bool {
    if e2e::net::available() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must be able to make network namespaces"
    );
    eprintln!("skipped: cannot make network namespaces here (needs root and iproute2)");
    false
}

/// The venv's python, with pyzmq.
fn pyzmq_python() -> String {
    let setup = Command::new(repo_root().join("tests/federation/setup-venv.sh"))
        .output()
        .unwrap();
    assert!(
        setup.status.success(),
        "{}",
        String::from_utf8_lossy(&setup.stderr)
    );
    String::from_utf8_lossy(&setup.stdout)
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_string()
}

/// Starts tests/federation/pyzmq_flood.py in `ns` against `target`, as the
/// listed key `me`; it stops when its stdin closes (or after `FLOOD_FOR`
/// and some).
fn flooder(
    python: &str,
    ns: &str,
    mode: &str,
    target_ip: &str,
    target: &Keys,
    me: &Keys,
    name: &str,
) -> Child {
    let secret = std::fs::read_to_string(&me.secret).unwrap();
    Command::new("ip")
        .args(["netns", "exec", ns, python])
        .arg(repo_root().join("tests/federation/pyzmq_flood.py"))
        .args([
            mode,
            &format!("tcp://{target_ip}:7100"),
            &target.public,
            secret.trim(),
            &me.public,
            name,
            &(FLOOD_FOR.as_secs() * 4).to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Closes the flooder's stdin, waits for it, returns what it printed.
fn finish(mut child: Child) -> serde_json::Value {
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "flooder exited {:?}: {}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Records when `WATCHDOG=1` arrives on a socket bound as `NOTIFY_SOCKET`.
struct Notifications {
    pets: Arc<Mutex<Vec<Instant>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Notifications {
    fn bind(path: &Path) -> Notifications {
        let sock = UnixDatagram::bind(path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let pets = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (pets.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while !s.load(Ordering::Relaxed) {
                if let Ok(n) = sock.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]);
                    if text.lines().any(|l| l == "WATCHDOG=1") {
                        p.lock().unwrap().push(Instant::now());
                    }
                }
            }
        });
        Notifications {
            pets,
            stop,
            thread: Some(thread),
        }
    }

    fn pets(&self) -> Vec<Instant> {
        self.pets.lock().unwrap().clone()
    }
}

impl Drop for Notifications {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn half_open_connections_leave_the_control_socket_the_watchdog_and_the_peer_alive() {
    if !netns_available() {
        return;
    }
    let lan = Lan::new(3);
    let hosts = [Host::new("hoa1"), Host::new("hoa2")];
    let k: Vec<Keys> = hosts.iter().map(keys).collect();
    let name = |i: usize| hosts[i].name.as_str();
    let (ip0, ip1) = (lan.ip(0), lan.ip(1));
    let c0 = config(
        &hosts[0],
        &ip0,
        &k[0].secret,
        &[Listed {
            name: name(1),
            ip: Some(&ip1),
            key: &k[1].public,
        }],
    );
    let c1 = config(
        &hosts[1],
        &ip1,
        &k[1].secret,
        &[Listed {
            name: name(0),
            ip: Some(&ip0),
            key: &k[0].public,
        }],
    );
    // Its metrics, to see the handshakes it evicted.
    let c0 = format!("{c0}metrics: {{listen: \"{ip0}:9464\"}}\n");
    let notify_path = hosts[0].path("notify.sock");
    let notes = Notifications::bind(&notify_path);
    let env = [
        (
            "NOTIFY_SOCKET".to_string(),
            notify_path.display().to_string(),
        ),
        (
            "WATCHDOG_USEC".to_string(),
            WATCHDOG.as_micros().to_string(),
        ),
    ];
    let d0 = Daemon::start_in_netns_with_env(&hosts[0], &c0, &lan.ns(0), &env);
    let d1 = Daemon::start_in_netns(&hosts[1], &c1, &lan.ns(1));
    until_state(&d0, name(1), "alive");
    until_state(&d1, name(0), "alive");
    d0.wait_until("the watchdog is petted", Duration::from_secs(10), |_| {
        notes.pets().len() >= 2
    });

    // 1000 connections from a third namespace, connected and silent.
    let mut holder = Command::new("ip")
        .args(["netns", "exec", &lan.ns(2), "python3"])
        .arg(repo_root().join("tests/federation/half_open.py"))
        .args([ip0.as_str(), "7100", "1000"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(holder.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(
        line.trim(),
        "1000",
        "the half-open connections were not all made"
    );
    let flood_start = Instant::now();
    let mut latencies = Vec::new();
    while flood_start.elapsed() < FLOOD_FOR {
        latencies.push(timed_status(&d0));
        assert_eq!(state_of(&d0, name(1)), "alive");
        std::thread::sleep(Duration::from_millis(500));
    }
    let flood_end = Instant::now();
    assert_eq!(state_of(&d0, name(1)), "alive");
    assert_eq!(state_of(&d1, name(0)), "alive");
    eprintln!("status latencies with 1000 half-open connections held: {latencies:?}");
    let slowest = latencies.iter().max().unwrap();
    assert!(
        *slowest < ANSWERS_WITHIN,
        "a status call took {slowest:?} (liveness bound {ANSWERS_WITHIN:?})"
    );

    // The watchdog was fed throughout: from the last pet before the flood
    // to the first after it, no gap of a whole interval.
    std::thread::sleep(WATCHDOG);
    let pets = notes.pets();
    let before = pets.iter().rposition(|t| *t <= flood_start).unwrap();
    let after = pets.iter().position(|t| *t >= flood_end).unwrap();
    let window = &pets[before..=after];
    let gaps: Vec<Duration> = window.windows(2).map(|w| w[1] - w[0]).collect();
    eprintln!(
        "watchdog pets during the flood: {}, gaps {gaps:?}",
        window.len()
    );
    let widest = gaps.iter().max().unwrap();
    assert!(
        *widest < WATCHDOG,
        "the watchdog went {widest:?} without WATCHDOG=1 (interval {WATCHDOG:?})\n{}",
        d0.log_tail(40)
    );
    assert!(
        window.len() as u128 >= FLOOD_FOR.as_millis() / WATCHDOG.as_millis(),
        "too few pets: {}",
        window.len()
    );

    // The connections did reach the daemon's bus: past its cap on pending
    // handshakes, it shut the oldest down.
    let evicted = refused(&lan.ns(0), &ip0, "evicted_handshake");
    eprintln!("handshakes evicted: {evicted}");
    assert!(evicted > 0.0, "no handshake was evicted");

    drop(holder.stdin.take());
    let out = holder.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(notes);
    drop((d0, d1));
    drop(lan);
}

#[test]
fn a_listed_key_flooding_huge_multipart_messages_is_cut_at_its_budget() {
    if !netns_available() {
        return;
    }
    let python = pyzmq_python();
    let lan = Lan::new(3);
    let hosts = [Host::new("mpf1"), Host::new("mpf2"), Host::new("mpflood")];
    let k: Vec<Keys> = hosts.iter().map(keys).collect();
    let name = |i: usize| hosts[i].name.as_str();
    let (ip0, ip1) = (lan.ip(0), lan.ip(1));
    let c0 = config(
        &hosts[0],
        &ip0,
        &k[0].secret,
        &[
            Listed {
                name: name(1),
                ip: Some(&ip1),
                key: &k[1].public,
            },
            Listed {
                name: name(2),
                ip: None,
                key: &k[2].public,
            },
        ],
    );
    let c1 = config(
        &hosts[1],
        &ip1,
        &k[1].secret,
        &[Listed {
            name: name(0),
            ip: Some(&ip0),
            key: &k[0].public,
        }],
    );
    let d0 = Daemon::start_in_netns(&hosts[0], &c0, &lan.ns(0));
    let d1 = Daemon::start_in_netns(&hosts[1], &c1, &lan.ns(1));
    until_state(&d0, name(1), "alive");
    until_state(&d1, name(0), "alive");
    let pid = d0.pid();
    let rss_before = proc_kib(pid, "VmRSS:");

    let flood = flooder(&python, &lan.ns(2), "frames", &ip0, &k[0], &k[2], name(2));
    let flood_start = Instant::now();
    let mut latencies = Vec::new();
    let mut rss_max = rss_before;
    let mut next_status = Instant::now();
    while flood_start.elapsed() < FLOOD_FOR {
        rss_max = rss_max.max(proc_kib(pid, "VmRSS:"));
        if Instant::now() >= next_status {
            latencies.push(timed_status(&d0));
            assert_eq!(state_of(&d0, name(1)), "alive");
            next_status = Instant::now() + Duration::from_millis(500);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let sent = finish(flood);
    let hwm = proc_kib(pid, "VmHWM:");
    let grew_mib = (hwm.max(rss_max) - rss_before) / 1024;
    let attacker = peer(&d0, name(2));
    eprintln!(
        "flood {sent}; RSS before {} MiB, sampled max {} MiB, VmHWM {} MiB (+{grew_mib} MiB); \
         status latencies {latencies:?}; the flooder in peers: {attacker}",
        rss_before / 1024,
        rss_max / 1024,
        hwm / 1024
    );
    assert!(sent["messages"].as_u64().unwrap() >= 1, "{sent}");
    assert!(
        attacker["over_budget"].as_u64().unwrap() >= 1
            || attacker["refused_connections"].as_u64().unwrap() >= 1,
        "the flooder's connections were never cut: {attacker}"
    );
    assert!(
        grew_mib < FLOOD_BOUND_MIB,
        "the daemon's peak RSS grew {grew_mib} MiB under the flood (bound {FLOOD_BOUND_MIB} MiB)"
    );
    let slowest = latencies.iter().max().unwrap();
    assert!(
        *slowest < ANSWERS_WITHIN,
        "a status call took {slowest:?} (liveness bound {ANSWERS_WITHIN:?})"
    );
    assert_eq!(state_of(&d0, name(1)), "alive");
    assert_eq!(state_of(&d1, name(0)), "alive");
    drop((d0, d1));
    drop(lan);
}

#[test]
fn a_listed_key_flooding_requests_is_refused_while_another_hosts_changes_arrive() {
    if !netns_available() {
        return;
    }
    let python = pyzmq_python();
    let lan = Lan::new(3);
    let hosts = [Host::new("rqf1"), Host::new("rqf2"), Host::new("rqflood")];
    let k: Vec<Keys> = hosts.iter().map(keys).collect();
    let name = |i: usize| hosts[i].name.as_str();
    let (ip0, ip1) = (lan.ip(0), lan.ip(1));
    let c0 = config(
        &hosts[0],
        &ip0,
        &k[0].secret,
        &[
            Listed {
                name: name(1),
                ip: Some(&ip1),
                key: &k[1].public,
            },
            Listed {
                name: name(2),
                ip: None,
                key: &k[2].public,
            },
        ],
    );
    let c1 = config(
        &hosts[1],
        &ip1,
        &k[1].secret,
        &[Listed {
            name: name(0),
            ip: Some(&ip0),
            key: &k[0].public,
        }],
    );
    let c0 = format!("{c0}metrics: {{listen: \"{ip0}:9464\"}}\n");
    let d0 = Daemon::start_in_netns(&hosts[0], &c0, &lan.ns(0));
    let d1 = Daemon::start_in_netns(&hosts[1], &c1, &lan.ns(1));
    until_state(&d0, name(1), "alive");
    until_state(&d1, name(0), "alive");

    let mut flood = flooder(&python, &lan.ns(2), "requests", &ip0, &k[0], &k[2], name(2));
    // The flood is on: the daemon answers `unavailable` past the limit.
    d0.wait_until(
        "the flood reaches the daemon",
        Duration::from_secs(30),
        |d| {
            let a = peer(d, name(2));
            a["messages_in"].as_u64().unwrap() > 100
        },
    );
    // The third host's state changes arrive through the flood, while the
    // flooder is being refused as busy.
    let busy_before = refused(&lan.ns(0), &ip0, "busy");
    lan.cut_off(1);
    until_state(&d0, name(1), "down");
    assert_eq!(fleet_state(&d0, name(1)), "down");
    lan.reconnect(1);
    until_state(&d0, name(1), "alive");
    assert_eq!(fleet_state(&d0, name(1)), "alive");
    let busy_after = refused(&lan.ns(0), &ip0, "busy");
    eprintln!(
        "requests refused as busy: {busy_before} before the cut, {busy_after} after the heal"
    );
    assert!(
        busy_after > busy_before,
        "the flooder was not refused while the third host went down and came back"
    );
    assert!(
        flood.try_wait().unwrap().is_none(),
        "the flood ended before the link was healed"
    );
    let seen = finish(flood);
    let attacker = peer(&d0, name(2));
    eprintln!("request flood {seen}; the flooder in peers: {attacker}");
    let replies = &seen["replies"];
    assert!(replies["unavailable"].as_u64().unwrap() > 0, "{seen}");
    assert!(replies["ok"].as_u64().unwrap() > 0, "{seen}");
    assert_eq!(replies["other"], 0, "{seen}");
    assert_eq!(state_of(&d1, name(0)), "alive");
    let _ = std::io::stderr().flush();
    drop((d0, d1));
    drop(lan);
}
