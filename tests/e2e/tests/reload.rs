//! A reload that changes one agent restarts only that agent; a bad config
//! is refused and the running one stays in charge.

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use e2e::{Daemon, Host, chain_config, write};

#[test]
fn a_reload_changing_one_agent_restarts_only_that_agent() {
    let host = Host::new("reload");
    let ctl = host.path("ctl");
    std::fs::create_dir_all(&ctl).unwrap();
    let text = chain_config(&host.name, &ctl);
    let daemon = Daemon::start(&host, &text, &[]);
    daemon.ctl_ok(&["group", "start", "base", "--wait", "--timeout", "60"]);
    let before = host.containers();

    // A broken config: refused, nothing changes.
    write(
        &daemon.config,
        &text.replace("Mid: {depends_on: [Flaky]}", "Mid: {depends_on: [Flakey]}"),
    );
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    let out = daemon.ctl(&["reload"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("did you mean `Flaky`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(daemon.status().generation, 0);
    assert_eq!(host.containers(), before);

    // Mid gets a new environment variable: only Mid is recreated.
    write(
        &daemon.config,
        &text.replace(
            "Mid: {depends_on: [Flaky]}",
            "Mid: {depends_on: [Flaky], env: {MODE: fast}}",
        ),
    );
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    daemon.wait_until("Mid recreated and healthy", Duration::from_secs(60), |d| {
        d.status().generation == 1
            && d.status().agents.healthy == 3
            && host
                .container_of("Mid")
                .is_some_and(|m| before.iter().all(|b| b.id != m.id))
    });
    for b in &before {
        let now = host.container_of(&b.agent).unwrap();
        if b.agent == "Mid" {
            assert_ne!(now.id, b.id);
        } else {
            assert_eq!(
                (now.id.as_str(), now.started_at.as_str()),
                (b.id.as_str(), b.started_at.as_str()),
                "{} was touched",
                b.agent
            );
        }
    }
    host.assert_no_duplicates();

    // `apply` installs a new file the same way and reports what changed.
    // Made from the config the daemon runs now: only Top differs.
    let newer = host.path("newer.yaml");
    let running = std::fs::read_to_string(&daemon.config).unwrap();
    std::fs::write(
        &newer,
        running.replace(
            "Top: {depends_on: [Mid]}",
            "Top: {depends_on: [Mid], env: {MODE: slow}}",
        ),
    )
    .unwrap();
    let out = daemon.ctl_ok(&["apply", newer.to_str().unwrap()]);
    assert_eq!(
        out.trim(),
        "generation 2 applied; rolling out step by step to: Top"
    );
    assert!(
        std::fs::read_to_string(&daemon.config)
            .unwrap()
            .contains("MODE: slow"),
        "apply installs the file"
    );
}
