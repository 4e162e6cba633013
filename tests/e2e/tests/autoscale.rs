//! Autoscaling on the real engine with the reference agent: CPU burnt by
//! `/work` requests (read through Docker's stats API) scales an agent up
//! and, once idle for `down_after`, back down; the agent's own
//! `agent_queue_depth` gauge (read by the agent scrape) scales another.
//! The load comes from threads of this test sending `/work` to the first
//! replica's address on the host's Docker network.

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use e2e::{Daemon, Host, IMAGE, docker_ok};
use orch_api::{AutoscaleCause, EventKind};

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

/// `threads` loops sending `GET /work` to `ip:8080` until `stop`.
fn load(ip: &str, threads: usize, stop: &Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<u64>> {
    (0..threads)
        .map(|_| {
            let (ip, stop) = (ip.to_string(), stop.clone());
            std::thread::spawn(move || {
                let mut done = 0;
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut s) = std::net::TcpStream::connect((ip.as_str(), 8080)) else {
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    };
                    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                    let _ = write!(s, "GET /work HTTP/1.0\r\nHost: agent\r\n\r\n");
                    let mut answer = Vec::new();
                    let ok = s.read_to_end(&mut answer).is_ok()
                        && answer.split(|b| *b == b'\n').next().is_some_and(|l| {
                            String::from_utf8_lossy(l).split_whitespace().nth(1) == Some("200")
                        });
                    if ok {
                        done += 1;
                    }
                }
                done
            })
        })
        .collect()
}

fn autoscaled(d: &Daemon, agent: &str) -> Vec<(u32, u32, AutoscaleCause)> {
    d.events()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::AgentAutoscaled {
                agent: a,
                from,
                to,
                cause,
                ..
            } if a == agent => Some((from, to, cause)),
            _ => None,
        })
        .collect()
}

fn running(host: &Host, agent: &str) -> usize {
    host.containers()
        .into_iter()
        .filter(|c| c.agent == agent && c.running)
        .count()
}

#[test]
fn cpu_load_scales_an_agent_up_and_idleness_back_down() {
    let host = Host::new("autoscale-cpu");
    let text = format!(
        r#"version: 1
host: {{name: {host}}}
defaults:
  image: {IMAGE}
  health: {{http: {{port: 8080}}, interval: 500ms, timeout: 2s, retries: 3, start_period: 5s}}
  stop_timeout: 2s
  min_healthy: 1s
groups:
  g:
    agents:
      Worker:
        env: {{AGENT_WORK_CPU: 200ms, AGENT_WORK_LATENCY: 0ms}}
        resources: {{cpus: 0.5}}
        autoscale: {{min: 1, max: 3, cpu: 40%, up_after: 5s, down_after: 15s, reverse_after: 15s}}
"#,
        host = host.name
    );
    let daemon = Daemon::start(&host, &text, &[]);
    daemon.ctl_ok(&["group", "start", "g", "--wait", "--timeout", "60"]);
    let agents = daemon.ctl_ok(&["agents"]);
    assert!(agents.contains("(autoscale 1..3)"), "{agents}");

    // Two threads of 200 ms CPU requests against half a core: the
    // replica runs at its limit, 100% of it against a 40% target.
    let stop = Arc::new(AtomicBool::new(false));
    let loaders = load(&address(&host, "Worker"), 2, &stop);
    let loaded = Instant::now();
    daemon.wait_until("a scale-up", Duration::from_secs(90), |d| {
        !autoscaled(d, "Worker").is_empty()
    });
    let took = loaded.elapsed();
    let (from, to, cause) = autoscaled(&daemon, "Worker").remove(0);
    assert_eq!(from, 1);
    assert!(to >= 2, "{to}");
    match &cause {
        AutoscaleCause::Signal {
            signal,
            value,
            target,
            ..
        } => {
            assert_eq!(signal, "cpu");
            assert_eq!(*target, 40.0);
            assert!(*value > 60.0, "{cause:?}");
        }
        other => panic!("{other:?}"),
    }
    // The signal held `up_after` before the decision.
    assert!(took >= Duration::from_secs(5), "{took:?}");
    daemon.wait_until("the new replicas healthy", Duration::from_secs(60), |d| {
        d.status().agents.healthy as u32 == to
    });
    assert_eq!(running(&host, "Worker") as u32, to);
    let agents = daemon.ctl_ok(&["agents"]);
    assert!(
        agents.contains(&format!("(autoscaled to {to}: cpu at ")),
        "{agents}"
    );

    stop.store(true, Ordering::Relaxed);
    let served: u64 = loaders.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(served > 0);
    // Idle: back to one after `down_after` (and `reverse_after` since the
    // scale-up).
    daemon.wait_until("a scale-down to one", Duration::from_secs(120), |d| {
        autoscaled(d, "Worker").iter().any(|(_, to, _)| *to == 1)
    });
    daemon.wait_until("one replica left", Duration::from_secs(60), |_| {
        running(&host, "Worker") == 1
    });
    host.assert_no_duplicates();
}

#[test]
fn the_agents_queue_gauge_scales_it() {
    let host = Host::new("autoscale-queue");
    let text = format!(
        r#"version: 1
host: {{name: {host}}}
defaults:
  image: {IMAGE}
  health: {{http: {{port: 8080}}, interval: 500ms, timeout: 2s, retries: 3, start_period: 5s}}
  stop_timeout: 2s
  min_healthy: 1s
groups:
  g:
    agents:
      Queue:
        env: {{AGENT_WORK_LATENCY: 3s}}
        autoscale:
          min: 1
          max: 3
          metric: {{name: agent_queue_depth, per_replica: 4}}
          up_after: 5s
"#,
        host = host.name
    );
    let daemon = Daemon::start(&host, &text, &[]);
    daemon.ctl_ok(&["group", "start", "g", "--wait", "--timeout", "60"]);
    // Ten requests always waiting on the first replica, four per replica
    // wanted: three.
    let stop = Arc::new(AtomicBool::new(false));
    let loaders = load(&address(&host, "Queue"), 10, &stop);
    daemon.wait_until("a scale-up on the gauge", Duration::from_secs(90), |d| {
        !autoscaled(d, "Queue").is_empty()
    });
    stop.store(true, Ordering::Relaxed);
    let (from, to, cause) = autoscaled(&daemon, "Queue").remove(0);
    assert_eq!((from, to), (1, 3), "{cause:?}");
    match &cause {
        AutoscaleCause::Signal {
            signal,
            value,
            target,
            ..
        } => {
            assert_eq!(signal, "metric");
            assert!(*value >= 9.0, "{cause:?}");
            assert_eq!(*target, 4.0);
        }
        other => panic!("{other:?}"),
    }
    daemon.wait_until("three replicas healthy", Duration::from_secs(60), |d| {
        d.status().agents.healthy == 3
    });
    for t in loaders {
        t.join().unwrap();
    }
    host.assert_no_duplicates();
}
