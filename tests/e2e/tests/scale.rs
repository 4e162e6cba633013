//! `scale` on the real engine: replicas appear and go, every replica is
//! known on the host's network under the agent's name and its own, the count
//! survives a daemon restart, and `--reset` goes back to the file's.

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use e2e::{Daemon, Host, IMAGE, docker_ok};

fn running(host: &Host, agent: &str) -> Vec<String> {
    let mut r: Vec<String> = host
        .containers()
        .into_iter()
        .filter(|c| c.agent == agent && c.running)
        .map(|c| c.replica)
        .collect();
    r.sort();
    r
}

/// The names Docker's embedded DNS answers for each running replica of
/// `agent` on the host's network, besides the container's own name (its
/// network `Aliases`), by replica.
fn dns_names(host: &Host, agent: &str) -> Vec<(String, Vec<String>)> {
    let net = format!("orch-{}", host.name);
    let mut out: Vec<(String, Vec<String>)> = host
        .containers()
        .into_iter()
        .filter(|c| c.agent == agent && c.running)
        .map(|c| {
            let names = docker_ok(&[
                "inspect",
                "--format",
                &format!("{{{{json (index .NetworkSettings.Networks \"{net}\").Aliases}}}}"),
                &c.id,
            ]);
            let names: Vec<String> = serde_json::from_str(&names).unwrap_or_default();
            (c.replica, names)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn scale_up_and_down_reachable_by_name_and_kept_across_a_restart() {
    let host = Host::new("scale");
    let text = format!(
        r#"version: 1
host: {{name: {host}}}
defaults:
  image: {IMAGE}
  health: {{http: {{port: 8080}}, interval: 500ms, timeout: 1s, retries: 2, start_period: 5s}}
  stop_timeout: 2s
  min_healthy: 1s
groups:
  g:
    agents:
      Worker:
        autoscale: {{min: 1, max: 4, cpu: 70%}}
"#,
        host = host.name
    );
    let mut daemon = Daemon::start(&host, &text, &[]);
    daemon.ctl_ok(&["group", "start", "g", "--wait", "--timeout", "60"]);
    assert_eq!(running(&host, "Worker"), ["0"]);

    let out = daemon.ctl(&["scale", "Worker", "3"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    daemon.wait_until("three workers healthy", Duration::from_secs(60), |d| {
        d.status().agents.healthy == 3
    });
    assert_eq!(running(&host, "Worker"), ["0", "1", "2"]);
    host.assert_no_duplicates();
    // Each replica by its own name, and the agent's name for any of them.
    let names = dns_names(&host, "Worker");
    assert_eq!(names.len(), 3, "{names:?}");
    for (replica, names) in &names {
        assert!(names.contains(&"Worker".to_string()), "{names:?}");
        assert!(names.contains(&format!("Worker-{replica}")), "{names:?}");
    }
    let agents = daemon.ctl_ok(&["agents"]);
    assert!(agents.contains("(scaled to 3, file: 1)"), "{agents}");
    let status = daemon.ctl_ok(&["status"]);
    assert!(status.contains("g/Worker 3 (file: 1)"), "{status}");

    // Out of its bounds: refused, nothing changed.
    let out = daemon.ctl(&["scale", "g/Worker", "9"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("autoscale bounds are 1 to 4"));

    // A new daemon keeps the count and the containers.
    let ids: Vec<String> = host.containers().into_iter().map(|c| c.id).collect();
    daemon.kill9();
    daemon.spawn();
    daemon.wait_until("the workers are adopted", Duration::from_secs(60), |d| {
        d.status().agents.healthy == 3
    });
    let mut after: Vec<String> = host.containers().into_iter().map(|c| c.id).collect();
    let mut before = ids;
    before.sort();
    after.sort();
    assert_eq!(after, before, "the same containers, none started anew");

    daemon.ctl_ok(&["scale", "Worker", "--reset"]);
    daemon.wait_until("back to one worker", Duration::from_secs(60), |_| {
        running(&host, "Worker") == ["0"]
    });
    host.assert_no_duplicates();
}

#[test]
fn a_gpu_replica_the_card_cannot_hold_is_refused_with_the_planners_reason() {
    let host = Host::new("scale-gpu");
    let env = e2e::sim_env(&host, "config/mainpc/gpus.sim.yaml");
    let text = format!(
        r#"version: 1
host: {{name: {host}}}
defaults:
  image: {IMAGE}
  health: {{http: {{port: 8080}}, interval: 500ms, timeout: 1s, retries: 2, start_period: 5s}}
  stop_timeout: 2s
  min_healthy: 1s
groups:
  vision:
    agents:
      Eyes:
        gpu: {{slice: mps, memory: 10g, compute: 25%}}
"#,
        host = host.name
    );
    let daemon = Daemon::start_with_env(&host, &text, &[], &env);
    daemon.ctl_ok(&["group", "start", "vision", "--wait", "--timeout", "120"]);
    // Three of 10g on a 24 GiB card: the third cannot be placed.
    let out = daemon.ctl(&["scale", "vision/Eyes", "3"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{stderr}");
    assert!(stderr.contains("Eyes#2"), "{stderr}");
    assert!(stderr.contains("nothing was changed"), "{stderr}");
    assert_eq!(running(&host, "Eyes"), ["0"]);
    // Two fit.
    daemon.ctl_ok(&["scale", "vision/Eyes", "2"]);
    daemon.wait_until("two replicas healthy", Duration::from_secs(60), |d| {
        d.status().agents.healthy == 2
    });
    assert_eq!(running(&host, "Eyes"), ["0", "1"]);
}
