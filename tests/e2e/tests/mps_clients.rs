//! MPS clients end to end, on the real Docker engine and the simulated
//! GPUs: the pid of a real agent container, registered as an MPS client of
//! a simulated RTX 4090's server, is found through the kernel's
//! `/proc/PID/cgroup` and terminated through the MPS control stand-in
//! before its container is stopped; a fault of the server (`nvml-simctl
//! mps fault`) restarts the agent, names it as the faulting client, and
//! the server is ACTIVE again once the restart terminated its hit client.
//! (That the terminate comes before Docker's stop is checked on the fakes,
//! `orchestrator/daemon/tests/mps.rs`.)

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use e2e::{Daemon, Host, IMAGE, container_env, docker_ok, kind_name, sim_env, simctl};
use orch_api::EventKind;

fn config(name: &str) -> String {
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
"#
    )
}

fn main_pid(id: &str) -> String {
    docker_ok(&["inspect", "-f", "{{.State.Pid}}", id])
        .trim()
        .to_string()
}

fn mps_status(env: &[(String, String)]) -> serde_json::Value {
    serde_json::from_str(&simctl(env, &["mps", "status", "--gpu", "0"])).unwrap()
}

#[test]
fn an_mps_agents_client_is_terminated_at_a_fault_restart_and_at_its_stop() {
    let host = Host::new("mpsclients");
    let env = sim_env(&host, "config/mainpc/gpus.sim.yaml");
    let daemon = Daemon::start_with_env(
        &host,
        &config(&host.name),
        &["--gpu-process-interval", "1"],
        &env,
    );
    daemon.ctl_ok(&["group", "start", "vision_gpu", "--wait", "--timeout", "120"]);
    let id = host.container_of("FaceRecognitionAgent").unwrap().id;
    let pipe = container_env(&id, "CUDA_MPS_PIPE_DIRECTORY").unwrap();
    let log_dir = std::path::Path::new(&pipe).parent().unwrap().join("log");
    let invocations =
        || std::fs::read_to_string(log_dir.join("invocations.jsonl")).unwrap_or_default();
    let pid = main_pid(&id);
    // A pid with no GPU context of its own stands for the MPS server.
    let server = std::process::id().to_string();
    simctl(
        &env,
        &[
            "process",
            "add",
            "--gpu",
            "0",
            "--pid",
            &pid,
            "--used",
            "512m",
            "--kind",
            "mps",
            "--server-pid",
            &server,
        ],
    );

    simctl(&env, &["mps", "fault", "--gpu", "0"]);
    daemon.wait_until(
        "the fault restarts the agent",
        Duration::from_secs(60),
        |d| d.events().iter().any(|e| kind_name(e) == "agent-restarted"),
    );
    let events = daemon.events();
    let faults: Vec<&EventKind> = events
        .iter()
        .filter(|e| kind_name(e) == "mps-server-fault")
        .map(|e| &e.kind)
        .collect();
    assert_eq!(faults.len(), 1, "{faults:?}");
    let EventKind::MpsServerFault {
        gpu_index,
        client,
        clients_listed,
        restarting,
        ..
    } = faults[0]
    else {
        unreachable!()
    };
    assert_eq!(*gpu_index, Some(0));
    assert_eq!(*clients_listed, 1);
    let client = client.clone().unwrap();
    assert_eq!(client.pid.to_string(), pid);
    assert_eq!(client.replica.unwrap().agent, "FaceRecognitionAgent");
    assert_eq!(restarting.len(), 1);
    assert_eq!(restarting[0].agent, "FaceRecognitionAgent");
    // The restart terminated the hit client first: the server recovers.
    daemon.wait_until(
        "the MPS server is ACTIVE again",
        Duration::from_secs(30),
        |_| mps_status(&env)["status"] == "ACTIVE",
    );
    let status = mps_status(&env);
    assert!(
        status["terminated"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["pid"].as_u64() == pid.parse::<u64>().ok()),
        "{status}"
    );
    daemon.wait_all_ready(Duration::from_secs(120));

    // The restarted container's new process is a client; the group stops.
    let pid2 = main_pid(&id);
    assert_ne!(pid2, pid);
    simctl(
        &env,
        &[
            "process", "add", "--gpu", "0", "--pid", &pid2, "--used", "512m", "--kind", "mps",
        ],
    );
    daemon.ctl_ok(&["group", "stop", "vision_gpu", "--wait", "--timeout", "120"]);
    let wanted = format!("terminate_client {server} {pid2}");
    assert!(
        invocations().contains(&wanted),
        "no `{wanted}` in {}",
        invocations()
    );
}
