//! `gpu.over_limit`, end to end on the NVML simulator: the pid of a real
//! agent container, registered on a simulated RTX 4090 holding more than
//! its 4g MPS share, is reported once under `warn`; after an apply to
//! `restart`, going over again restarts the container with the reason
//! `gpu_memory_exceeded`.

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use e2e::{Daemon, Host, IMAGE, docker_ok, sim_env, simctl};
use orch_api::EventKind;
use orch_api::wire::{OverLimitAction, RestartReason};

fn config(name: &str, over_limit: &str) -> String {
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
        gpu: {{slice: mps, memory: 4g, compute: 25%, over_limit: {over_limit}}}
"#
    )
}

fn overs(d: &Daemon) -> Vec<OverLimitAction> {
    d.events()
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::AgentGpuOverLimit { action, .. } => Some(*action),
            _ => None,
        })
        .collect()
}

fn restart_reasons(d: &Daemon) -> Vec<Option<RestartReason>> {
    d.events()
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::AgentRestarting { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect()
}

fn pid_of(host: &Host) -> String {
    let id = host.container_of("FaceRecognitionAgent").unwrap().id;
    docker_ok(&["inspect", "-f", "{{.State.Pid}}", &id])
        .trim()
        .to_string()
}

#[test]
fn over_its_share_warns_once_then_restarts_after_an_apply() {
    let host = Host::new("overlimit");
    let env = sim_env(&host, "config/mainpc/gpus.sim.yaml");
    let daemon = Daemon::start_with_env(
        &host,
        &config(&host.name, "warn"),
        &["--gpu-process-interval", "1"],
        &env,
    );
    daemon.ctl_ok(&["group", "start", "vision_gpu", "--wait", "--timeout", "120"]);
    let pid = pid_of(&host);
    simctl(
        &env,
        &[
            "process", "add", "--gpu", "0", "--pid", &pid, "--used", "5g",
        ],
    );
    daemon.wait_until("an over-limit warning", Duration::from_secs(30), |d| {
        !overs(d).is_empty()
    });
    // Still over at a later sample (one that sees a stray process added
    // since), and still the one warning.
    let stray = std::process::id().to_string();
    simctl(
        &env,
        &[
            "process", "add", "--gpu", "0", "--pid", &stray, "--used", "256m",
        ],
    );
    daemon.wait_until("a later sample", Duration::from_secs(30), |d| {
        let report: serde_json::Value =
            serde_json::from_str(&d.ctl_ok(&["-o", "json", "gpu"])).unwrap();
        report["gpus"][0]["unowned"]
            .as_array()
            .is_some_and(|u| !u.is_empty())
    });
    simctl(&env, &["process", "remove", "--pid", &stray]);
    assert_eq!(overs(&daemon), [OverLimitAction::Warn]);
    assert!(restart_reasons(&daemon).is_empty());
    let text = daemon.ctl_ok(&["events"]);
    assert!(
        text.contains(
            "GPU memory over its limit on GPU 0: 5g used of 4g; it runs on (over_limit: warn)"
        ),
        "{text}"
    );

    // Back under; the policy becomes `restart` (no container is recreated).
    simctl(&env, &["process", "remove", "--pid", &pid]);
    let file = host.path("restart.yaml");
    std::fs::write(&file, config(&host.name, "restart")).unwrap();
    daemon.ctl_ok(&["apply", file.to_str().unwrap()]);
    daemon.wait_until(
        "the agent's GPU use is gone",
        Duration::from_secs(30),
        |d| {
            let agents: serde_json::Value =
                serde_json::from_str(&d.ctl_ok(&["-o", "json", "agents"])).unwrap();
            agents[0]["gpu_use"].is_null()
        },
    );
    assert_eq!(pid_of(&host), pid, "the apply recreated the container");

    simctl(
        &env,
        &[
            "process", "add", "--gpu", "0", "--pid", &pid, "--used", "5g",
        ],
    );
    daemon.wait_until("a restart for GPU memory", Duration::from_secs(30), |d| {
        restart_reasons(d).contains(&Some(RestartReason::GpuMemoryExceeded))
    });
    assert_eq!(
        overs(&daemon),
        [OverLimitAction::Warn, OverLimitAction::Restart]
    );
    daemon.wait_all_ready(Duration::from_secs(60));
    assert_ne!(pid_of(&host), pid, "the container was not restarted");
    simctl(&env, &["process", "remove", "--pid", &pid]);
}
