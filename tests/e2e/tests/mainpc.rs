//! The whole mainpc host: 11 groups, 54 agents, real containers. Every
//! group becomes ready, and the order is checked from the daemon's events:
//! no agent starts before each agent it requires is healthy, no group is
//! ready before the groups it depends on.

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use e2e::{Daemon, Host, derive_config, repo_root, sim_env};
use orch_api::EventKind;

#[test]
fn all_mainpc_groups_start_in_dependency_order_and_become_healthy() {
    let host = Host::new("mainpc");
    let source =
        std::fs::read_to_string(repo_root().join("config/mainpc/startup_config.yaml")).unwrap();
    let text = derive_config(&source, "mainpc", &host.name);
    // Its GPU agents get MPS shares of a simulated RTX 4090.
    let env = sim_env(&host, "config/mainpc/gpus.sim.yaml");
    let daemon = Daemon::start_with_env(&host, &text, &[], &env);
    let config = orch_config::load_str("c.yaml", &text, &Default::default())
        .unwrap()
        .config;
    assert_eq!(config.groups.len(), 11);
    assert_eq!(config.agent_count(), 54);

    for g in &config.groups {
        daemon.ctl_ok(&["group", "start", &g.name]);
    }
    daemon.wait_all_ready(Duration::from_secs(240));
    let status = daemon.status();
    assert_eq!(status.agents.healthy, 54, "{status:?}");
    assert_eq!(
        status
            .groups
            .iter()
            .filter(|g| g.state == orch_api::GroupState::Ready)
            .count(),
        11
    );
    assert_eq!(host.containers().iter().filter(|c| c.running).count(), 54);
    assert_eq!(status.gpu.slices, 5, "the five GPU agents hold MPS shares");
    host.assert_no_duplicates();

    let events = daemon.events();
    let mut healthy_at: BTreeMap<String, u64> = BTreeMap::new();
    let mut ready_at: BTreeMap<String, u64> = BTreeMap::new();
    let mut starts = 0;
    for e in &events {
        match &e.kind {
            EventKind::AgentHealthy { replica, .. } => {
                healthy_at.entry(replica.agent.clone()).or_insert(e.seq);
            }
            EventKind::GroupReady { group } => {
                ready_at.entry(group.clone()).or_insert(e.seq);
            }
            EventKind::AgentStarting { replica, .. } => {
                starts += 1;
                let agent = config.agent(&replica.agent).unwrap();
                for dep in &agent.depends_on {
                    if !config.agent(dep).unwrap().required {
                        continue;
                    }
                    let h = healthy_at.get(dep).copied();
                    assert!(
                        h.is_some_and(|h| h < e.seq),
                        "{} started (event {}) before its dependency {dep} was healthy ({h:?})",
                        replica.agent,
                        e.seq
                    );
                }
            }
            _ => {}
        }
    }
    assert_eq!(starts, 54, "each agent starts exactly once");
    let graph = orch_core::graph::group_graph(&config);
    for g in &config.groups {
        let at = ready_at[&g.name];
        for dep in graph.deps_of(&g.name) {
            assert!(
                ready_at[dep] < at,
                "group {} ready before its dependency {dep}",
                g.name
            );
        }
    }
    // Agents in the same wave started together: the starts of the first
    // two waves interleave with nothing but their own events.
    let first_healthy = events
        .iter()
        .position(|e| matches!(e.kind, EventKind::AgentHealthy { .. }))
        .unwrap();
    assert!(first_healthy > 0);

    // Stopping everything goes in reverse order and leaves nothing behind.
    daemon.ctl_ok(&[
        "group",
        "stop",
        "infra_core",
        "--with-dependents",
        "--wait",
        "--timeout",
        "180",
    ]);
    assert!(
        host.containers().is_empty(),
        "containers left: {:?}",
        host.containers()
    );
    let events = daemon.events();
    let stopped_at: BTreeMap<String, u64> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::AgentStopped { replica, .. } => Some((replica.agent.clone(), e.seq)),
            _ => None,
        })
        .collect();
    for a in config.agents() {
        for dep in &a.depends_on {
            assert!(
                stopped_at[&a.name] < stopped_at[dep],
                "{dep} stopped before its dependent {}",
                a.name
            );
        }
    }
}
