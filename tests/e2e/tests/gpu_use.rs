//! Who uses the GPUs, end to end: the pid of a real agent container,
//! registered as a process on a simulated RTX 4090, is that agent's GPU
//! use in `agents -o json`, `gpu -o json` and `/metrics` (the daemon maps
//! it through the kernel's `/proc/PID/cgroup` on the real Docker engine);
//! a pid of no container (this test's own) is shown as unowned.

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::net::TcpListener;
use std::time::Duration;

use e2e::{Daemon, Host, IMAGE, docker_ok, http_get, sim_env, simctl};

const MIB: u64 = 1 << 20;

fn config(name: &str, port: u16) -> String {
    format!(
        r#"version: 1
host: {{name: {name}}}
defaults:
  image: {IMAGE}
  restart: {{policy: on-failure, backoff: {{initial: 200ms, max: 1s}}, crashloop: {{restarts: 3, window: 1m}}}}
  health: {{http: {{port: 8080}}, interval: 500ms, timeout: 2s, retries: 3, start_period: 2s}}
  stop_timeout: 1s
gpus:
  - select: {{index: 0}}
    sharing: mps
groups:
  vision_gpu:
    agents:
      FaceRecognitionAgent:
        gpu: {{slice: mps, memory: 4g, compute: 25%}}
metrics: {{listen: "127.0.0.1:{port}"}}
"#
    )
}

#[test]
fn a_containers_gpu_process_is_its_agents_use_and_a_stray_pid_is_unowned() {
    let host = Host::new("gpuuse");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env = sim_env(&host, "config/mainpc/gpus.sim.yaml");
    let daemon = Daemon::start_with_env(
        &host,
        &config(&host.name, port),
        &["--gpu-process-interval", "1"],
        &env,
    );
    daemon.ctl_ok(&["group", "start", "vision_gpu", "--wait", "--timeout", "120"]);
    let id = host.container_of("FaceRecognitionAgent").unwrap().id;
    let pid = docker_ok(&["inspect", "-f", "{{.State.Pid}}", &id])
        .trim()
        .to_string();
    let stray = std::process::id().to_string();
    simctl(
        &env,
        &[
            "process", "add", "--gpu", "0", "--pid", &pid, "--used", "1g", "--util", "30",
        ],
    );
    simctl(
        &env,
        &[
            "process", "add", "--gpu", "0", "--pid", &stray, "--used", "256m",
        ],
    );

    daemon.wait_until(
        "the agent's GPU memory is shown",
        Duration::from_secs(30),
        |d| {
            let agents: serde_json::Value =
                serde_json::from_str(&d.ctl_ok(&["-o", "json", "agents"])).unwrap();
            agents[0]["gpu_use"]["memory_used_bytes"] == 1024 * MIB
        },
    );
    let agents: serde_json::Value =
        serde_json::from_str(&daemon.ctl_ok(&["-o", "json", "agents"])).unwrap();
    let used = &agents[0]["gpu_use"];
    assert_eq!(used["memory_limit_bytes"], 4096 * MIB, "{used}");
    let table = daemon.ctl_ok(&["agents"]);
    assert!(table.contains("1.0g/4.0g (25%)"), "{table}");

    let report: serde_json::Value =
        serde_json::from_str(&daemon.ctl_ok(&["-o", "json", "gpu"])).unwrap();
    let gpu = &report["gpus"][0];
    assert_eq!(gpu["usage"][0]["replica"]["agent"], "FaceRecognitionAgent");
    let unowned = gpu["unowned"].as_array().unwrap();
    assert_eq!(unowned.len(), 1, "{unowned:?}");
    assert_eq!(unowned[0]["pid"].to_string(), stray);
    assert_eq!(unowned[0]["memory_used_bytes"], 256 * MIB);
    assert!(unowned[0]["container"].is_null());

    daemon.wait_until(
        "/metrics shows the agent's GPU memory",
        Duration::from_secs(30),
        |_| {
            http_get(port, "/metrics").is_some_and(|t| {
                t.contains(&format!(
                    "orchestrator_agent_gpu_memory_used_bytes{{host=\"{}\",group=\"vision_gpu\",agent=\"FaceRecognitionAgent\",replica=\"0\",gpu=\"0\"}} {}",
                    host.name,
                    1024 * MIB
                ))
            })
        },
    );
    let text = http_get(port, "/metrics").unwrap();
    assert!(
        text.lines().any(|l| l.starts_with(&format!(
            "orchestrator_gpu_unowned_memory_bytes{{host=\"{}\",gpu=\"0\"",
            host.name
        )) && l.ends_with(&format!(" {}", 256 * MIB))),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "orchestrator_agent_gpu_utilization_ratio{{host=\"{}\",group=\"vision_gpu\",agent=\"FaceRecognitionAgent\"",
            host.name
        )),
        "{text}"
    );
    simctl(&env, &["process", "remove", "--pid", &stray]);
    simctl(&env, &["process", "remove", "--pid", &pid]);
}
