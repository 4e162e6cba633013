//! A replacement that cannot be made (its image is not on the host) leaves
//! the agent reported down everywhere an operator looks (`status`,
//! `agents`, `/metrics`), retried with a growing backoff rather than in a
//! tight loop; applying the previous good file brings it back.

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use e2e::{Daemon, Host, agent_events, chain_config, free_port, http_get, kind_name};

#[test]
fn a_failed_replacement_is_reported_down_backs_off_and_a_good_apply_recovers_it() {
    let host = Host::new("failrepl");
    let ctl = host.path("ctl");
    std::fs::create_dir_all(&ctl).unwrap();
    let port = free_port();
    let text = format!(
        "{}metrics: {{listen: \"127.0.0.1:{port}\"}}\n",
        chain_config(&host.name, &ctl)
    );
    let daemon = Daemon::start(&host, &text, &[]);
    daemon.ctl_ok(&["group", "start", "base", "--wait", "--timeout", "60"]);
    let before = host.container_of("Top").unwrap();

    // Top's new image is not on this host.
    let bad = host.path("bad.yaml");
    std::fs::write(
        &bad,
        text.replace(
            "Top: {depends_on: [Mid]}",
            "Top: {depends_on: [Mid], image: \"orchestrator-agent:not-built-here\"}",
        ),
    )
    .unwrap();
    daemon.ctl_ok(&["apply", bad.to_str().unwrap()]);
    daemon.wait_until(
        "Top reported down after its failed replacement",
        Duration::from_secs(30),
        |d| {
            let s = d.status();
            s.agents.healthy == 2 && host.container_of("Top").is_none()
        },
    );
    assert!(
        host.container_of("Top").is_none(),
        "the old container is gone"
    );
    let agents = daemon.ctl_ok(&["agents", "-o", "json"]);
    let agents: serde_json::Value = serde_json::from_str(&agents).unwrap();
    let top = agents
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent"] == "Top")
        .unwrap();
    assert_ne!(top["health"], "healthy", "{top}");
    assert!(top["container"].is_null(), "no container is shown: {top}");
    let groups = daemon.groups();
    let base = groups.iter().find(|g| g.name == "base").unwrap();
    assert_ne!(base.state, orch_api::GroupState::Ready);
    // `/metrics` follows within its publish interval.
    let line = |text: &str, family: &str, label: &str| {
        text.lines()
            .find(|l| l.starts_with(family) && l.contains(label))
            .map(str::to_string)
            .unwrap_or_default()
    };
    daemon.wait_until(
        "/metrics shows Top down and base not ready",
        Duration::from_secs(10),
        |_| {
            let text = http_get(port, "/metrics").unwrap_or_default();
            line(&text, "orchestrator_agent_up{", "agent=\"Top\"").ends_with(" 0")
                && line(&text, "orchestrator_group_ready{", "group=\"base\"").ends_with(" 0")
        },
    );

    // Retried with a growing backoff (200 ms doubling to 2 s here), not
    // every few milliseconds: over 6 s that is a handful of tries.
    let failed = |d: &Daemon| {
        agent_events(&d.events(), "Top")
            .into_iter()
            .filter(|e| kind_name(e) == "agent-failed")
            .count()
    };
    let start = failed(&daemon);
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(6));
    let tries = failed(&daemon) - start;
    assert!(
        (1..=8).contains(&tries),
        "{tries} failed tries in {:?}",
        t.elapsed()
    );

    // The previous good file again: Top comes back in a new container.
    let good = host.path("good.yaml");
    std::fs::write(&good, &text).unwrap();
    daemon.ctl_ok(&["apply", good.to_str().unwrap()]);
    daemon.wait_until("Top healthy again", Duration::from_secs(60), |d| {
        d.status().agents.healthy == 3
            && d.groups()
                .iter()
                .any(|g| g.name == "base" && g.state == orch_api::GroupState::Ready)
    });
    let after = host.container_of("Top").unwrap();
    assert_ne!(after.id, before.id);
    host.assert_no_duplicates();
}
