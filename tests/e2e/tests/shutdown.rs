//! `runtime.shutdown: stop`: SIGTERM stops every agent in reverse
//! dependency order before the daemon exits 0; the desired state is kept,
//! so the next daemon brings them back. With the default (`leave`) the
//! agents outlive the daemon (checked in the GPU and kill -9 tests).

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use e2e::{Daemon, Host, chain_config, docker_ok};

#[test]
fn shutdown_stop_stops_agents_in_reverse_order_and_the_next_daemon_restores_them() {
    let host = Host::new("shutdown");
    std::fs::create_dir_all(host.path("ctl")).unwrap();
    let text = chain_config(&host.name, &host.path("ctl")) + "runtime: {shutdown: stop}\n";
    let mut daemon = Daemon::start(&host, &text, &[]);
    daemon.ctl_ok(&["group", "start", "base", "--wait", "--timeout", "60"]);
    // Every agent of ours is on the host network under its own name.
    let top = host.container_of("Top").unwrap();
    let aliases = docker_ok(&[
        "inspect",
        "--format",
        &format!(
            "{{{{json (index .NetworkSettings.Networks \"orch-{}\").Aliases}}}}",
            host.name
        ),
        &top.id,
    ]);
    assert!(aliases.contains("\"Top\""), "aliases: {aliases}");

    assert_eq!(daemon.terminate().code(), Some(0));
    assert!(
        host.containers().is_empty(),
        "left running: {:?}",
        host.containers()
    );
    let log = std::fs::read_to_string(&daemon.log).unwrap();
    let order: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("agent-stopped"))
        .filter_map(|l| {
            ["Flaky", "Mid", "Top"]
                .into_iter()
                .find(|a| l.contains(&format!("base/{a}: stopped")))
        })
        .collect();
    assert_eq!(order, ["Top", "Mid", "Flaky"]);

    daemon.spawn();
    daemon.wait_until("the group is back", Duration::from_secs(60), |d| {
        d.status().agents.healthy == 3
    });
}
