//! The real `reference-agent` binary as a process on loopback ports: every
//! endpoint, every knob, exit codes and signals. Waits are on conditions
//! with deadlines, never fixed sleeps.

// Test helpers outside #[test] functions are test code too; a failed
// unwrap there is a test failure with its location, which is what we want.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(10);

/// A running agent process and its stdout, line by line.
struct Agent {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    spawned: Instant,
}

impl Agent {
    /// Starts the agent on loopback with a free port unless `vars` say
    /// otherwise. The environment is cleared first so no stray `AGENT_*`
    /// of the test runner's reaches the agent.
    fn spawn(vars: &[(&str, &str)]) -> Self {
        Self::spawn_args(vars, &[])
    }

    fn spawn_args(vars: &[(&str, &str)], args: &[&str]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_reference-agent"));
        command
            .env_clear()
            .env("AGENT_LISTEN_HOST", "127.0.0.1")
            .env("ORCH_LISTEN_PORTS", "0")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, value) in vars {
            command.env(name, value);
        }
        let spawned = Instant::now();
        let mut child = command.spawn().expect("spawn reference-agent");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
            spawned,
        }
    }

    /// Waits for a stdout line containing `needle` and returns it.
    fn wait_line(&mut self, needle: &str) -> String {
        if let Some(line) = self.seen.iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "no line with {needle:?} within {DEADLINE:?}; saw {:?}",
                        self.seen
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("stdout closed before {needle:?}; saw {:?}", self.seen)
                }
            }
        }
    }

    /// Waits until the agent listens and returns its addresses.
    fn addrs(&mut self) -> Vec<SocketAddr> {
        let line = self.wait_line("listening on ");
        line["listening on ".len()..]
            .split_whitespace()
            .map(|a| a.parse().unwrap())
            .collect()
    }

    fn addr(&mut self) -> SocketAddr {
        self.addrs()[0]
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args(["-s", name, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -s {name}");
    }

    /// Waits for the process to exit; returns its status and stderr.
    fn wait_exit(&mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "agent still running; saw {:?}",
                self.seen
            );
            thread::sleep(Duration::from_millis(5));
        };
        let mut stderr = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        // Collect what stdout still held.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(1)) {
            self.seen.push(line);
        }
        (status, stderr)
    }

    /// Sends `name` and returns the exit status and how long the exit took.
    fn stop_with(&mut self, name: &str) -> (ExitStatus, Duration) {
        let sent = Instant::now();
        self.signal(name);
        let (status, _) = self.wait_exit();
        (status, sent.elapsed())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    body: String,
}

fn call(addr: SocketAddr, method: &str, path: &str, body: &str) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Reply {
        status,
        body: body.to_owned(),
    }
}

fn get(addr: SocketAddr, path: &str) -> Reply {
    call(addr, "GET", path, "")
}

fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

/// Polls `probe` until it returns true or the deadline passes.
fn eventually(what: &str, mut probe: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !probe() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "reference-agent-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn touch(path: &Path) {
    std::fs::write(path, b"").unwrap();
}

#[test]
fn serves_every_endpoint_on_every_port_and_stops_on_sigterm() {
    let mut agent = Agent::spawn(&[
        ("ORCH_LISTEN_PORTS", "0,0"),
        ("ORCH_HOST", "mainpc"),
        ("ORCH_GROUP", "speech_gpu"),
        ("ORCH_AGENT", "WhisperAgent"),
        ("ORCH_REPLICA", "3"),
        ("ORCH_GPU_SLICE", "mps:GPU-1111:memory=4g,compute=25%"),
        ("NVIDIA_VISIBLE_DEVICES", "GPU-1111"),
        ("CUDA_MPS_PIPE_DIRECTORY", "/run/mps/pipe"),
        ("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", "25"),
        ("AGENT_WORK_LATENCY", "1ms"),
    ]);
    let started = agent.wait_line("starting reference-agent");
    assert!(
        started.contains("agent=WhisperAgent replica=3"),
        "{started}"
    );
    let addrs = agent.addrs();
    assert_eq!(addrs.len(), 2);

    for &addr in &addrs {
        let health = get(addr, "/health");
        assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
        assert_eq!(get(addr, "/ready").status, 200);
        assert_eq!(get(addr, "/nope").status, 404);
        assert_eq!(call(addr, "PUT", "/work", "").status, 405);

        let work = get(addr, "/work");
        assert_eq!(work.status, 200, "{}", work.body);
        let work: serde_json::Value = serde_json::from_str(&work.body).unwrap();
        assert_eq!(work["ok"], true);
        assert_eq!(work["agent"], "WhisperAgent");
        assert_eq!(work["replica"], 3);

        let posted = call(addr, "POST", "/work", "{\"audio\":\"...\"}");
        assert_eq!(posted.status, 200);
        let posted: serde_json::Value = serde_json::from_str(&posted.body).unwrap();
        assert_eq!(posted["input_bytes"], 15);
    }

    let info = get(addrs[1], "/info");
    assert_eq!(info.status, 200);
    let info: serde_json::Value = serde_json::from_str(&info.body).unwrap();
    assert_eq!(info["host"], "mainpc");
    assert_eq!(info["group"], "speech_gpu");
    assert_eq!(info["agent"], "WhisperAgent");
    assert_eq!(info["replica"], 3);
    assert_eq!(info["gpu_slice"], "mps:GPU-1111:memory=4g,compute=25%");
    assert_eq!(info["nvidia_visible_devices"], "GPU-1111");
    assert_eq!(info["cuda_mps_pipe_directory"], "/run/mps/pipe");
    assert_eq!(info["cuda_mps_active_thread_percentage"], "25");
    assert!(info["cuda_mps_pinned_device_mem_limit"].is_null());
    assert_eq!(info["pid"], agent.child.id());
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert!(info["uptime_seconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(
        info["listen_ports"],
        serde_json::json!([addrs[0].port(), addrs[1].port()])
    );

    let metrics = get(addrs[0], "/metrics").body;
    let m = metrics.as_str();
    assert_eq!(
        sample(m, "agent_requests_total{endpoint=\"/work\"}"),
        Some(6.0),
        "{m}"
    );
    assert_eq!(
        sample(m, "agent_requests_total{endpoint=\"/health\"}"),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        sample(m, "agent_requests_total{endpoint=\"unmatched\"}"),
        Some(2.0),
        "{m}"
    );
    assert_eq!(sample(m, "agent_errors_total"), Some(0.0), "{m}");
    assert_eq!(sample(m, "agent_up"), Some(1.0), "{m}");
    assert!(
        sample(m, "agent_start_time_seconds").unwrap() > 1.0e9,
        "{m}"
    );
    assert!(
        m.contains("# TYPE agent_work_duration_seconds histogram\n"),
        "{m}"
    );
    // The two 405s took no work.
    assert_eq!(
        sample(m, "agent_work_duration_seconds_count"),
        Some(4.0),
        "{m}"
    );
    assert_eq!(
        sample(m, "agent_work_duration_seconds_bucket{le=\"+Inf\"}"),
        Some(4.0),
        "{m}"
    );
    assert!(
        sample(m, "agent_work_duration_seconds_sum").unwrap() >= 0.004,
        "{m}"
    );
    // Buckets are cumulative.
    let buckets: Vec<f64> = m
        .lines()
        .filter(|l| l.starts_with("agent_work_duration_seconds_bucket"))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(
        buckets.len() > 5 && buckets.windows(2).all(|w| w[0] <= w[1]),
        "{m}"
    );

    let (status, took) = agent.stop_with("TERM");
    assert_eq!(status.code(), Some(0));
    assert!(took < Duration::from_secs(1), "stopping took {took:?}");
    agent.wait_line("signal received: SIGTERM");
    agent.wait_line("stopped");
}

#[test]
fn sigint_stops_with_code_zero() {
    let mut agent = Agent::spawn(&[]);
    agent.addr();
    let (status, took) = agent.stop_with("INT");
    assert_eq!(status.code(), Some(0));
    assert!(took < Duration::from_secs(1), "stopping took {took:?}");
    agent.wait_line("signal received: SIGINT");
}

#[test]
fn in_flight_work_finishes_on_sigterm() {
    let mut agent = Agent::spawn(&[("AGENT_WORK_LATENCY", "300ms")]);
    let addr = agent.addr();
    let request = thread::spawn(move || get(addr, "/work"));
    // The request is in flight once it is counted.
    eventually("the /work request to arrive", || {
        let m = get(addr, "/metrics").body;
        sample(&m, "agent_requests_total{endpoint=\"/work\"}") == Some(1.0)
    });
    let (status, took) = agent.stop_with("TERM");
    assert_eq!(status.code(), Some(0));
    assert!(took < Duration::from_secs(1), "stopping took {took:?}");
    let reply = request.join().unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
}

#[test]
fn start_delay_keeps_the_port_closed() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut agent = Agent::spawn(&[
        ("ORCH_LISTEN_PORTS", &port.to_string()),
        ("AGENT_START_DELAY", "500ms"),
    ]);
    agent.wait_line("loading: not listening for 500ms (AGENT_START_DELAY)");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let refused = TcpStream::connect(addr).is_err();
    let probed_at = agent.spawned.elapsed();
    assert!(
        refused || probed_at >= Duration::from_millis(500),
        "port open during the start delay"
    );
    assert_eq!(agent.addr(), addr);
    assert!(
        agent.spawned.elapsed() >= Duration::from_millis(500),
        "listened after {:?}",
        agent.spawned.elapsed()
    );
    assert_eq!(get(addr, "/ready").status, 200);
    let info: serde_json::Value = serde_json::from_str(&get(addr, "/info").body).unwrap();
    assert!(info["uptime_seconds"].as_f64().unwrap() >= 0.5, "{info}");
}

#[test]
fn signal_during_start_delay_exits_zero() {
    let mut agent = Agent::spawn(&[("AGENT_START_DELAY", "1m")]);
    agent.wait_line("loading");
    let (status, took) = agent.stop_with("TERM");
    assert_eq!(status.code(), Some(0));
    assert!(took < Duration::from_secs(1), "stopping took {took:?}");
    agent.wait_line("signal received: SIGTERM while loading");
}

#[test]
fn crash_after_exits_with_the_configured_code() {
    let mut agent = Agent::spawn(&[("AGENT_CRASH_AFTER", "300ms"), ("AGENT_EXIT_CODE", "7")]);
    let addr = agent.addr();
    assert_eq!(get(addr, "/health").status, 200);
    let (status, _) = agent.wait_exit();
    assert_eq!(status.code(), Some(7));
    // Spawning precedes listening, so this bound holds however slow the
    // machine is.
    assert!(agent.spawned.elapsed() >= Duration::from_millis(300));
    agent.wait_line("crashing with exit code 7 (AGENT_CRASH_AFTER=300ms)");
}

#[test]
fn crash_exit_code_defaults_to_one() {
    let mut agent = Agent::spawn(&[("AGENT_CRASH_AFTER", "50ms")]);
    let (status, _) = agent.wait_exit();
    assert_eq!(status.code(), Some(1));
}

#[test]
fn unhealthy_after_turns_health_to_503_and_keeps_running() {
    let mut agent = Agent::spawn(&[("AGENT_UNHEALTHY_AFTER", "300ms")]);
    let addr = agent.addr();
    assert_eq!(get(addr, "/health").status, 200);
    eventually("/health to turn 503", || get(addr, "/health").status == 503);
    let reply = get(addr, "/health");
    assert_eq!(reply.body, "AGENT_UNHEALTHY_AFTER=300ms has passed\n");
    assert_eq!(get(addr, "/ready").status, 200, "still ready");
    let m = get(addr, "/metrics").body;
    assert_eq!(sample(&m, "agent_healthy"), Some(0.0), "{m}");
    assert!(agent.child.try_wait().unwrap().is_none(), "still running");
    agent.wait_line("unhealthy: AGENT_UNHEALTHY_AFTER=300ms has passed");
}

#[test]
fn fail_if_exists_crash_loops_until_the_file_is_removed() {
    let dir = TempDir::new();
    let marker = dir.file("fail");
    touch(&marker);
    let marker_text = marker.to_str().unwrap();
    let vars = [
        ("AGENT_FAIL_IF_EXISTS", marker_text),
        ("AGENT_EXIT_CODE", "3"),
        ("AGENT_START_DELAY", "200ms"),
    ];

    for _ in 0..2 {
        let mut agent = Agent::spawn(&vars);
        let (status, _) = agent.wait_exit();
        assert_eq!(status.code(), Some(3));
        assert!(
            agent.spawned.elapsed() >= Duration::from_millis(200),
            "failed only after the start delay"
        );
        let line = agent.wait_line("failing with exit code 3");
        assert!(line.contains(marker_text), "{line}");
        assert!(!agent.seen.iter().any(|l| l.contains("listening on")));
    }

    std::fs::remove_file(&marker).unwrap();
    let mut agent = Agent::spawn(&vars);
    let addr = agent.addr();
    assert_eq!(get(addr, "/health").status, 200);
}

#[test]
fn unhealthy_if_exists_follows_the_file() {
    let dir = TempDir::new();
    let marker = dir.file("sick");
    let mut agent = Agent::spawn(&[("AGENT_UNHEALTHY_IF_EXISTS", marker.to_str().unwrap())]);
    let addr = agent.addr();
    assert_eq!(get(addr, "/health").status, 200);

    touch(&marker);
    let reply = get(addr, "/health");
    assert_eq!(reply.status, 503);
    assert!(
        reply.body.contains("AGENT_UNHEALTHY_IF_EXISTS"),
        "{}",
        reply.body
    );
    assert!(
        reply.body.contains(marker.to_str().unwrap()),
        "{}",
        reply.body
    );
    agent.wait_line("unhealthy: ");

    std::fs::remove_file(&marker).unwrap();
    assert_eq!(get(addr, "/health").status, 200);
    agent.wait_line("healthy again");
}

#[test]
fn work_waits_the_configured_latency() {
    let mut agent = Agent::spawn(&[
        ("AGENT_WORK_LATENCY", "150ms"),
        ("AGENT_WORK_JITTER", "50ms"),
    ]);
    let addr = agent.addr();
    for _ in 0..3 {
        let sent = Instant::now();
        let reply = get(addr, "/work");
        let took = sent.elapsed();
        assert_eq!(reply.status, 200);
        assert!(took >= Duration::from_millis(100), "took {took:?}");
        let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert!(body["latency_ms"].as_f64().unwrap() >= 100.0, "{body}");
    }
    let m = get(addr, "/metrics").body;
    assert!(
        sample(&m, "agent_work_duration_seconds_sum").unwrap() >= 0.3,
        "{m}"
    );
    assert_eq!(
        sample(&m, "agent_work_duration_seconds_bucket{le=\"0.05\"}"),
        Some(0.0),
        "{m}"
    );
}

#[test]
fn work_fails_at_the_configured_error_rate() {
    let mut always = Agent::spawn(&[("AGENT_WORK_ERROR_RATE", "1"), ("AGENT_WORK_LATENCY", "0")]);
    let addr = always.addr();
    for _ in 0..3 {
        let reply = call(addr, "POST", "/work", "x");
        assert_eq!(reply.status, 500);
        assert!(reply.body.contains("simulated failure"), "{}", reply.body);
    }
    let m = get(addr, "/metrics").body;
    assert_eq!(sample(&m, "agent_errors_total"), Some(3.0), "{m}");
    assert_eq!(
        sample(&m, "agent_work_duration_seconds_count"),
        Some(3.0),
        "{m}"
    );

    let mut half = Agent::spawn(&[
        ("AGENT_WORK_ERROR_RATE", "0.5"),
        ("AGENT_WORK_LATENCY", "0"),
    ]);
    let addr = half.addr();
    let failures = (0..100)
        .filter(|_| get(addr, "/work").status == 500)
        .count();
    assert!((20..=80).contains(&failures), "{failures} of 100 failed");
}

#[test]
fn work_burns_the_configured_cpu_and_the_queue_gauge_shows_requests_inside() {
    let mut agent = Agent::spawn(&[("AGENT_WORK_CPU", "200ms"), ("AGENT_WORK_LATENCY", "1s")]);
    let addr = agent.addr();
    let cpu = |pid: u32| -> f64 {
        // utime + stime of the process, in clock ticks (100 a second).
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let after = stat.rsplit_once(") ").unwrap().1;
        let f: Vec<&str> = after.split_whitespace().collect();
        (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
    };
    let pid = agent.child.id();
    let before = cpu(pid);
    // Two requests in flight: both are counted while they wait.
    let calls: Vec<_> = (0..2)
        .map(|_| thread::spawn(move || call(addr, "POST", "/work", "x")))
        .collect();
    let mut seen = 0.0;
    for _ in 0..100 {
        let m = get(addr, "/metrics").body;
        seen = sample(&m, "agent_queue_depth").unwrap_or(0.0);
        if seen == 2.0 {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(seen, 2.0, "both requests counted inside");
    for c in calls {
        assert_eq!(c.join().unwrap().status, 200);
    }
    assert_eq!(
        sample(&get(addr, "/metrics").body, "agent_queue_depth"),
        Some(0.0)
    );
    let used = cpu(pid) - before;
    assert!(used >= 0.35, "two requests burnt {used}s of CPU");
}

#[test]
fn bad_settings_exit_2_naming_the_setting() {
    /// Environment, arguments, and what stderr must mention.
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str], &'a str);
    let cases: &[Case] = &[
        (&[("AGENT_START_DELAY", "5x")], &[], "AGENT_START_DELAY"),
        (&[("AGENT_CRASH_AFTER", "soon")], &[], "AGENT_CRASH_AFTER"),
        (
            &[("AGENT_UNHEALTHY_AFTER", "10")],
            &[],
            "AGENT_UNHEALTHY_AFTER",
        ),
        (&[("AGENT_EXIT_CODE", "256")], &[], "AGENT_EXIT_CODE"),
        (&[("AGENT_WORK_LATENCY", "fast")], &[], "AGENT_WORK_LATENCY"),
        (&[("AGENT_WORK_JITTER", "2d")], &[], "AGENT_WORK_JITTER"),
        (
            &[("AGENT_WORK_ERROR_RATE", "2")],
            &[],
            "AGENT_WORK_ERROR_RATE",
        ),
        (
            &[("AGENT_STRAT_DELAY", "1s")],
            &[],
            "unknown knob AGENT_STRAT_DELAY",
        ),
        (&[("ORCH_REPLICA", "first")], &[], "ORCH_REPLICA"),
        (&[("ORCH_LISTEN_PORTS", "http")], &[], "ORCH_LISTEN_PORTS"),
        (
            &[("ORCH_LISTEN_PORTS", "8080,8080")],
            &[],
            "ORCH_LISTEN_PORTS",
        ),
        (
            &[("AGENT_LISTEN_HOST", "localhost")],
            &[],
            "AGENT_LISTEN_HOST",
        ),
        (&[], &["--port", "80"], "unexpected argument"),
    ];
    for (vars, args, needle) in cases {
        let mut agent = Agent::spawn_args(vars, args);
        let (status, stderr) = agent.wait_exit();
        assert_eq!(status.code(), Some(2), "{vars:?} {args:?}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{vars:?}: {stderr:?} lacks {needle:?}"
        );
        assert!(
            agent.seen.is_empty(),
            "{vars:?}: started anyway: {:?}",
            agent.seen
        );
    }
}

#[test]
fn taken_port_exits_1() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let mut agent = Agent::spawn(&[("ORCH_LISTEN_PORTS", &port)]);
    let (status, stderr) = agent.wait_exit();
    assert_eq!(status.code(), Some(1));
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
}

#[test]
fn version_flag_prints_the_version() {
    let mut agent = Agent::spawn_args(&[], &["--version"]);
    let (status, _) = agent.wait_exit();
    assert_eq!(status.code(), Some(0));
    assert_eq!(
        agent.seen,
        [format!("reference-agent {}", env!("CARGO_PKG_VERSION"))]
    );
}

/// Runs `reference-agent --probe ARGS...` with `vars` and returns its exit
/// code, stdout and stderr.
fn probe(vars: &[(&str, &str)], args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_reference-agent"))
        .env_clear()
        .envs(vars.iter().copied())
        .arg("--probe")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn probe_mode_checks_health_over_http_and_tcp() {
    let mut agent = Agent::spawn(&[("AGENT_UNHEALTHY_AFTER", "2s")]);
    let addr = agent.addr();

    let url = format!("http://{addr}/health");
    let (code, out, _) = probe(&[], &[&url]);
    assert_eq!(code, Some(0));
    assert_eq!(out, format!("healthy: {url} answered 200\n"));
    let (code, out, _) = probe(&[], &[&format!("tcp://{addr}")]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("accepted a connection"), "{out}");

    // A knob that would stop the serving agent does not concern a probe.
    let (code, _, err) = probe(&[("AGENT_START_DELAY", "bogus")], &[&url]);
    assert_eq!(code, Some(0), "{err}");

    let (code, _, err) = probe(&[], &[&format!("http://{addr}/nowhere")]);
    assert_eq!(code, Some(1));
    assert!(err.contains("answered 404"), "{err}");

    eventually("the probe to see /health turn 503", || {
        probe(&[], &[&url]).0 == Some(1)
    });
    let (_, _, err) = probe(&[], &[&url]);
    assert!(
        err.starts_with("unhealthy: ") && err.contains("503"),
        "{err}"
    );
    drop(agent);

    let (code, _, err) = probe(&[], &[&url]);
    assert_eq!(code, Some(1), "a stopped agent is unhealthy");
    assert!(err.contains("cannot connect"), "{err}");
}

#[test]
fn probe_mode_refuses_bad_urls_with_exit_2() {
    for args in [
        &[][..],
        &["http://localhost:8080/health"],
        &["ftp://127.0.0.1:21"],
        &["http://127.0.0.1:8080/health", "extra"],
    ] {
        let (code, out, err) = probe(&[], args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}: {out}");
        assert!(err.contains("--probe"), "{args:?}: {err}");
    }
}
