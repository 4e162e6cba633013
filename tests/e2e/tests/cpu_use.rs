//! Each replica's CPU use on the real engine, read from its container's
//! cgroup: the reference agent burning CPU on `/work` requests shows a
//! CPU figure in `agents -o json`, and an idle one a small figure.

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use e2e::{Daemon, Host, IMAGE, docker_ok};
use orch_api::AgentStatus;

/// The address of `agent`'s first replica on the host's network.
fn address(host: &Host, agent: &str) -> String {
    let c = host.container_of(agent).unwrap();
    let net = format!("orch-{}", host.name);
    docker_ok(&[
        "inspect",
        "--format",
        &format!("{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}}"),
        &c.id,
    ])
    .trim()
    .to_string()
}

/// A thread sending `GET /work` to `ip:8080` until `stop`.
fn load(ip: &str, stop: &Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let (ip, stop) = (ip.to_string(), stop.clone());
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let Ok(mut s) = std::net::TcpStream::connect((ip.as_str(), 8080)) else {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            };
            let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
            let _ = write!(s, "GET /work HTTP/1.0\r\nHost: agent\r\n\r\n");
            let _ = s.read_to_end(&mut Vec::new());
        }
    })
}

fn cpu(d: &Daemon, agent: &str) -> Option<(f64, Option<f64>)> {
    let agents: Vec<AgentStatus> =
        serde_json::from_str(&d.ctl_ok(&["agents", "-o", "json"])).unwrap();
    agents
        .into_iter()
        .find(|a| a.agent == agent)
        .and_then(|a| Some((a.cpu_percent?, a.cpu_limit_percent)))
}

#[test]
fn a_container_burning_cpu_shows_its_cpu_use() {
    let host = Host::new("cpu-use");
    let text = format!(
        r#"version: 1
host: {{name: {host}}}
defaults:
  image: {IMAGE}
  health: {{http: {{port: 8080}}, interval: 500ms, timeout: 2s, retries: 3, start_period: 5s}}
  stop_timeout: 2s
groups:
  g:
    agents:
      Worker:
        env: {{AGENT_WORK_CPU: 200ms, AGENT_WORK_LATENCY: 0ms}}
        resources: {{cpus: 1}}
      Idle: {{}}
"#,
        host = host.name
    );
    let daemon = Daemon::start(&host, &text, &["--gpu-process-interval", "1"]);
    daemon.ctl_ok(&["group", "start", "g", "--wait", "--timeout", "60"]);

    let stop = Arc::new(AtomicBool::new(false));
    let loaders: Vec<_> = (0..2)
        .map(|_| load(&address(&host, "Worker"), &stop))
        .collect();
    // Two threads of CPU work against a limit of one core: well above a
    // third of a core once two readings cover the load.
    daemon.wait_until(
        "a CPU figure for the busy worker",
        Duration::from_secs(60),
        |d| cpu(d, "Worker").is_some_and(|(p, _)| p > 30.0),
    );
    let (busy, of_limit) = cpu(&daemon, "Worker").unwrap();
    stop.store(true, Ordering::Relaxed);
    for l in loaders {
        l.join().unwrap();
    }
    assert!(busy > 0.0);
    // The limit is one core: both figures agree (to a tenth).
    assert!(
        of_limit.is_some_and(|l| (l - busy).abs() <= 0.1),
        "{busy} {of_limit:?}"
    );
    // The idle agent has a figure too, and no limit to measure against.
    daemon.wait_until(
        "a CPU figure for the idle agent",
        Duration::from_secs(30),
        |d| cpu(d, "Idle").is_some(),
    );
    assert_eq!(cpu(&daemon, "Idle").unwrap().1, None);
}
