//! `kill -9` of the daemon at random moments while groups start and stop,
//! 20 times: no duplicate container, no agent restarted because of it,
//! desired state intact.

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use e2e::{Daemon, Host, Seen, container_env, derive_config, repo_root, sim_env, sim_instances};
use rand::Rng;

#[test]
fn kill_9_during_starts_and_stops_never_duplicates_or_restarts() {
    let host = Host::new("kill9");
    // mainpc's infra_core, coordination, memory_stack and vision_gpu: 10
    // agents, dependency depth 5.
    let source =
        std::fs::read_to_string(repo_root().join("config/mainpc/startup_config.yaml")).unwrap();
    let text = derive_config(&source, "mainpc", &host.name);
    // On a simulated A100: FaceRecognitionAgent (vision_gpu) holds a MIG slice.
    let env = sim_env(&host, "config/sim/lab-a100.yaml");
    let mut daemon = Daemon::start_with_env(&host, &text, &[], &env);
    let state_file = daemon.state_dir.join(format!("{}.state.json", host.name));
    let mut rng = rand::rng();
    let targets = ["memory_stack", "vision_gpu"];
    for round in 0..20 {
        let starting = round % 2 == 0;
        let group = targets[(round / 2) % targets.len()];
        if starting {
            daemon.ctl_ok(&["group", "start", group]);
        } else {
            daemon.ctl_ok(&["group", "stop", "infra_core", "--with-dependents"]);
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(0..2500)));
        let running_at_kill: BTreeMap<String, Seen> = host
            .containers()
            .into_iter()
            .filter(|c| c.running)
            .map(|c| (c.id.clone(), c))
            .collect();
        daemon.kill9();
        // What survives the kill: the desired state on disk.
        daemon.spawn();
        let started: Vec<String> = daemon
            .groups()
            .iter()
            .filter(|g| g.started)
            .map(|g| g.name.clone())
            .collect();
        if starting {
            assert!(
                started.iter().any(|g| g == group),
                "round {round}: {group} forgotten: {started:?}"
            );
            daemon.wait_all_ready(Duration::from_secs(120));
        } else {
            assert!(
                started.is_empty(),
                "round {round}: stop forgotten: {started:?}"
            );
            daemon.wait_until("every agent stopped", Duration::from_secs(120), |_| {
                host.containers().is_empty()
            });
        }
        host.assert_no_duplicates();
        for c in host.containers() {
            if let Some(before) = running_at_kill.get(&c.id) {
                assert_eq!(
                    c.started_at, before.started_at,
                    "round {round}: {} was restarted after the daemon died",
                    c.agent
                );
            }
        }
        let s = daemon.status();
        assert_eq!(s.agents.running, s.agents.wanted, "round {round}");
        // GPU slices: one MIG instance at most, always recorded as ours, and
        // the running agent holds exactly it.
        let instances = sim_instances(&env, 0);
        assert!(
            instances.len() <= 1,
            "round {round}: instances leaked: {instances:?}"
        );
        let state: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&state_file).unwrap()).unwrap();
        let owned: Vec<u64> = state["owned_mig"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["gi_id"].as_u64().unwrap())
            .collect();
        for (gi, ..) in &instances {
            assert!(
                owned.contains(gi),
                "round {round}: instance {gi} is not recorded as ours ({owned:?})"
            );
        }
        if let Some(face) = host.container_of("FaceRecognitionAgent") {
            let device = container_env(&face.id, "NVIDIA_VISIBLE_DEVICES").unwrap();
            assert_eq!(instances.len(), 1, "round {round}");
            assert_eq!(
                device, instances[0].3,
                "round {round}: the agent holds the instance"
            );
        }
    }
}
