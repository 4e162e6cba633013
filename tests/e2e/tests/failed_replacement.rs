//! A replacement that cannot be made (its image is not on the host) never
//! takes the agent down: `apply` refuses the file, and `apply --force`
//! leaves the old container running, with the same id the whole time,
//! reported running everywhere an operator looks (`status`, `agents`).
//! With `rollout.auto_rollback: false` the failed step pauses the rollout
//! (nothing is tried again behind the operator's back); once the image is
//! there, `rollout resume` makes the replacement (new container first,
//! then the old one goes), under the replica's own name.

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use e2e::{Daemon, Host, IMAGE, agent_events, chain_config, docker, docker_ok, kind_name};

/// An image tag of this test only, removed when it ends.
struct Tag(String);

impl Drop for Tag {
    fn drop(&mut self) {
        let _ = docker(&["rmi", &self.0]);
    }
}

#[test]
fn a_failed_replacement_for_a_missing_image_keeps_the_old_container_running() {
    let host = Host::new("failrepl");
    let ctl = host.path("ctl");
    std::fs::create_dir_all(&ctl).unwrap();
    let text = chain_config(&host.name, &ctl).replace(
        "  base:\n    agents:",
        "  base:\n    rollout: {auto_rollback: false, watch: 2s}\n    agents:",
    );
    assert!(text.contains("auto_rollback: false"));
    // Not on the host until the test tags it.
    let missing = Tag(format!("orchestrator-agent:{}", host.name));
    let missing = missing.0.as_str();
    let daemon = Daemon::start(&host, &text, &[]);
    daemon.ctl_ok(&["group", "start", "base", "--wait", "--timeout", "60"]);
    let before = host.container_of("Top").unwrap();
    assert!(before.running);
    // Top is the old container, running, with the same id.
    let unchanged = |why: &str| {
        let now = host.container_of("Top");
        assert!(
            now.as_ref().is_some_and(|c| c.id == before.id && c.running),
            "{why}: Top is {now:?}, was {before:?}\ndaemon log: {}",
            daemon.log_tail(30)
        );
    };

    // Top's new image is not on this host.
    let bad = host.path("bad.yaml");
    std::fs::write(
        &bad,
        text.replace(
            "Top: {depends_on: [Mid]}",
            &format!("Top: {{depends_on: [Mid], image: \"{missing}\"}}"),
        ),
    )
    .unwrap();
    let bad = bad.to_str().unwrap();

    // `apply` refuses the file (exit 7). (`plan` names the image too, but
    // it needs a GPU inventory, which this host may not have: the
    // harness test of the CLI covers it.)
    let out = daemon.ctl(&["apply", bad]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{err}");
    assert!(
        err.contains("was not applied") && err.contains(missing),
        "{err}"
    );
    unchanged("after the refused apply");

    // `--force` applies it: the replacement is tried, cannot be made, and
    // the old container runs on.
    let out = daemon.ctl(&["apply", "--force", bad]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("applied with --force"), "{err}");
    let failed = |d: &Daemon| {
        agent_events(&d.events(), "Top")
            .into_iter()
            .filter(|e| kind_name(e) == "agent-failed")
            .count()
    };
    let t = Instant::now();
    let mut tries = 0;
    while t.elapsed() < Duration::from_secs(10) {
        unchanged("while the replacement cannot be made");
        tries = failed(&daemon);
        std::thread::sleep(Duration::from_millis(200));
    }
    // Tried once: the step failed and the rollout is paused.
    assert_eq!(tries, 1, "{tries} tries in 10 s");
    let rollout: serde_json::Value =
        serde_json::from_str(&daemon.ctl_ok(&["rollout", "status", "-o", "json"])).unwrap();
    assert_eq!(rollout["rollout"]["phase"], "paused", "{rollout}");
    assert_eq!(
        rollout["rollout"]["failure"]["signal"], "not_launched",
        "{rollout}"
    );
    let shown = daemon.ctl_ok(&["rollout", "status"]);
    assert!(shown.contains("could not be created"), "{shown}");
    let status = daemon.status();
    assert_eq!(status.agents.running, 3, "{:?}", status.agents);
    let agents = daemon.ctl_ok(&["agents", "-o", "json"]);
    let agents: Vec<orch_api::AgentStatus> = serde_json::from_str(&agents).unwrap();
    let top = agents.iter().find(|a| a.agent == "Top").unwrap();
    assert_eq!(top.phase, orch_api::wire::Phase::Running, "{top:?}");
    let shown_id = top.container.clone().unwrap_or_default();
    assert!(
        !shown_id.is_empty() && before.id.starts_with(&shown_id),
        "{shown_id} is not {}",
        before.id
    );
    host.assert_no_duplicates();

    // Once the image is here, resuming the rollout replaces Top: a new
    // container, under the replica's own name.
    docker_ok(&["tag", IMAGE, missing]);
    daemon.ctl_ok(&["rollout", "resume"]);
    let name_of = |id: &str| docker_ok(&["inspect", "--format", "{{.Name}}", id]);
    let name = name_of(&before.id);
    daemon.wait_until("Top replaced and healthy", Duration::from_secs(60), |d| {
        host.container_of("Top")
            .is_some_and(|c| c.id != before.id && c.running)
            && d.status().agents.healthy == 3
    });
    let replaced = host.container_of("Top").unwrap();
    assert_eq!(name_of(&replaced.id), name);
    host.assert_no_duplicates();

    // The previous good file again: replaced back the same way.
    let good = host.path("good.yaml");
    std::fs::write(&good, &text).unwrap();
    daemon.ctl_ok(&["apply", good.to_str().unwrap()]);
    daemon.wait_until(
        "Top back on the first image",
        Duration::from_secs(60),
        |d| {
            host.container_of("Top")
                .is_some_and(|c| c.id != replaced.id && c.running)
                && d.status().agents.healthy == 3
                && d.groups()
                    .iter()
                    .any(|g| g.name == "base" && g.state == orch_api::GroupState::Ready)
        },
    );
    let back = host.container_of("Top").unwrap();
    assert_eq!(name_of(&back.id), name);
    host.assert_no_duplicates();
}
