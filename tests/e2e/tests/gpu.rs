//! GPU slices end to end: a daemon on simulated GPUs gives real containers
//! MIG devices it creates through NVML (or MPS shares with the MPS control
//! stand-in), reuses its instances, re-applies the layout after a reboot,
//! and never hands one slice to two agents.

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use e2e::{Daemon, Host, container_env, derive_config, repo_root, sim_env, sim_instances, simctl};

const GPU_GROUPS: [&str; 3] = ["speech_gpu", "vision_gpu", "reasoning_gpu"];
const GPU_AGENTS: [&str; 4] = [
    "STTService",
    "TTSService",
    "FaceRecognitionAgent",
    "ChainOfThoughtAgent",
];

fn mainpc(host: &Host) -> String {
    let source =
        std::fs::read_to_string(repo_root().join("config/mainpc/startup_config.yaml")).unwrap();
    derive_config(&source, "mainpc", &host.name)
}

/// The MIG uuid each GPU agent's container was given.
fn devices(host: &Host) -> Vec<String> {
    GPU_AGENTS
        .iter()
        .map(|a| {
            container_env(&host.container_of(a).unwrap().id, "NVIDIA_VISIBLE_DEVICES").unwrap()
        })
        .collect()
}

#[test]
fn mig_slices_are_made_reused_and_reapplied_after_a_reboot() {
    let host = Host::new("mig");
    let env = sim_env(&host, "config/sim/lab-a100.yaml");
    let mut daemon = Daemon::start_with_env(&host, &mainpc(&host), &[], &env);
    for g in GPU_GROUPS {
        daemon.ctl_ok(&["group", "start", g, "--wait", "--timeout", "120"]);
    }
    // Four instances on the A100: three 1g.10gb and, since the A100-40GB
    // has no 2g.20gb, ChainOfThoughtAgent's first fallback 2g.10gb.
    let made = sim_instances(&env, 0);
    let profiles: Vec<&str> = made.iter().map(|i| i.1.as_str()).collect();
    assert_eq!(
        profiles.iter().filter(|p| **p == "1g.10gb").count(),
        3,
        "{made:?}"
    );
    assert_eq!(
        profiles.iter().filter(|p| **p == "2g.10gb").count(),
        1,
        "{made:?}"
    );
    let given = devices(&host);
    assert!(given.iter().all(|d| d.starts_with("MIG-")), "{given:?}");
    let sim_uuids: BTreeSet<&str> = made.iter().map(|i| i.3.as_str()).collect();
    let given_set: BTreeSet<&str> = given.iter().map(String::as_str).collect();
    assert_eq!(
        given_set, sim_uuids,
        "each agent has its own instance, and every instance an agent"
    );
    // The daemon re-reads the inventory as soon as it changes the layout.
    daemon.wait_until(
        "the GPU report shows the new layout",
        Duration::from_secs(10),
        |d| {
            let report: serde_json::Value =
                serde_json::from_str(&d.ctl_ok(&["-o", "json", "gpu"])).unwrap();
            report["gpus"][0]["slices"].as_array().unwrap().len() == 4
                && report["gpus"][0]["free"]["mig_memory_slices"] == 0
        },
    );

    // Restarting the groups reuses our instances: nothing is made or destroyed.
    daemon.ctl_ok(&[
        "group",
        "stop",
        "infra_core",
        "--with-dependents",
        "--wait",
        "--timeout",
        "120",
    ]);
    for g in GPU_GROUPS {
        daemon.ctl_ok(&["group", "start", g, "--wait", "--timeout", "120"]);
    }
    assert_eq!(sim_instances(&env, 0), made, "same instances, same ids");

    // A reboot: containers and the MIG layout are gone. The desired state
    // brings everything back, with instances re-made at the same places.
    let placements: Vec<(String, u64)> = made.iter().map(|i| (i.1.clone(), i.2)).collect();
    assert_eq!(daemon.terminate().code(), Some(0));
    for c in host.containers() {
        e2e::docker_ok(&["rm", "-f", &c.id]);
    }
    simctl(&env, &["reboot"]);
    assert!(sim_instances(&env, 0).is_empty());
    daemon.spawn();
    daemon.wait_all_ready(Duration::from_secs(180));
    let again = sim_instances(&env, 0);
    let again_placements: Vec<(String, u64)> = again.iter().map(|i| (i.1.clone(), i.2)).collect();
    assert_eq!(
        again_placements, placements,
        "the layout is re-applied as it was"
    );
    let given: BTreeSet<String> = devices(&host).into_iter().collect();
    assert_eq!(given.len(), 4);
    host.assert_no_duplicates();
}

#[test]
fn mps_shares_start_one_control_daemon_per_gpu_and_stop_it_with_the_last_client() {
    let host = Host::new("mps");
    let env = sim_env(&host, "config/mainpc/gpus.sim.yaml");
    let daemon = Daemon::start_with_env(&host, &mainpc(&host), &[], &env);
    daemon.ctl_ok(&["group", "start", "speech_gpu", "--wait", "--timeout", "120"]);
    daemon.ctl_ok(&["group", "start", "vision_gpu", "--wait", "--timeout", "120"]);
    let stt = host.container_of("STTService").unwrap().id;
    let pipe = container_env(&stt, "CUDA_MPS_PIPE_DIRECTORY").unwrap();
    assert_eq!(
        container_env(&stt, "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE").as_deref(),
        Some("20")
    );
    assert_eq!(
        container_env(&stt, "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT").as_deref(),
        Some("0=4096M")
    );
    assert!(
        std::path::Path::new(&pipe).join("control").exists(),
        "the control daemon listens in {pipe}"
    );
    let log_dir = std::path::Path::new(&pipe).parent().unwrap().join("log");
    let invocations =
        || std::fs::read_to_string(log_dir.join("invocations.jsonl")).unwrap_or_default();
    assert_eq!(
        invocations()
            .lines()
            .filter(|l| l.contains("\"-d\""))
            .count(),
        1,
        "one daemon for the GPU: {}",
        invocations()
    );
    // Three clients share it; slices add up within the card.
    let report: serde_json::Value =
        serde_json::from_str(&daemon.ctl_ok(&["-o", "json", "gpu"])).unwrap();
    let slices = report["gpus"][0]["slices"].as_array().unwrap();
    assert_eq!(slices.len(), 3);
    assert_eq!(report["gpus"][0]["free"]["mps_compute_basis_points"], 4500);

    daemon.ctl_ok(&["group", "stop", "speech_gpu", "--wait", "--timeout", "120"]);
    daemon.ctl_ok(&["group", "stop", "vision_gpu", "--wait", "--timeout", "120"]);
    daemon.wait_until(
        "the MPS control daemon is told to quit",
        Duration::from_secs(20),
        |_| invocations().lines().any(|l| l.contains("quit")),
    );
    daemon.wait_until(
        "its control endpoint is gone",
        Duration::from_secs(20),
        |_| !std::path::Path::new(&pipe).join("control").exists(),
    );
}
