//! Nothing lost, on the real engine: a daemon killed with `kill -9` whose
//! state directory is then deleted, or whose state file is truncated,
//! comes back with every container as it was (same id, never restarted)
//! and the groups started; `--fresh` is the one way to stop them, and says
//! so. And a secret's value is found in its agent's mount and nowhere else
//! the daemon or the CLI writes.

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use e2e::{Daemon, Host, Seen, chain_config, docker, docker_ok};
use orch_api::wire::EventKind;

const READY: Duration = Duration::from_secs(120);

/// A host with `base` and `extra` started and ready, and its containers.
fn started(test: &str) -> (Host, Daemon, BTreeMap<String, Seen>) {
    let host = Host::new(test);
    let ctl = host.path("ctl");
    std::fs::create_dir_all(&ctl).unwrap();
    let daemon = Daemon::start(&host, &chain_config(&host.name, &ctl), &[]);
    daemon.ctl_ok(&["group", "start", "extra"]);
    daemon.ctl_ok(&["group", "start", "base"]);
    daemon.wait_all_ready(READY);
    let running = running(&host);
    assert_eq!(running.len(), 4, "{running:?}");
    (host, daemon, running)
}

fn running(host: &Host) -> BTreeMap<String, Seen> {
    host.containers()
        .into_iter()
        .filter(|c| c.running)
        .map(|c| (c.id.clone(), c))
        .collect()
}

fn started_groups(daemon: &Daemon) -> Vec<String> {
    daemon
        .groups()
        .into_iter()
        .filter(|g| g.started)
        .map(|g| g.name)
        .collect()
}

/// Every container that ran before runs now: the same id, started at the
/// same instant (never restarted), and no other.
fn all_survived(host: &Host, before: &BTreeMap<String, Seen>) {
    let now = running(host);
    assert_eq!(
        now.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "the same containers run"
    );
    for (id, c) in &now {
        assert_eq!(
            c.started_at, before[id].started_at,
            "{} was restarted",
            c.agent
        );
    }
    host.assert_no_duplicates();
}

fn inferred(daemon: &Daemon) -> Vec<EventKind> {
    daemon
        .events()
        .into_iter()
        .map(|e| e.kind)
        .filter(|k| matches!(k, EventKind::StateInferred { .. }))
        .collect()
}

#[test]
fn a_deleted_state_directory_stops_no_agent() {
    let (host, mut daemon, before) = started("lost-state");
    daemon.kill9();
    std::fs::remove_dir_all(&daemon.state_dir).unwrap();
    daemon.spawn();
    daemon.wait_until("the state is inferred", READY, |d| !inferred(d).is_empty());
    assert_eq!(started_groups(&daemon), ["base", "extra"]);
    daemon.wait_all_ready(READY);
    all_survived(&host, &before);
    assert_eq!(
        inferred(&daemon),
        [EventKind::StateInferred {
            origin: "missing".into(),
            adopted: 4,
            groups: vec!["base".into(), "extra".into()],
            unconfigured: 0,
        }]
    );
    let log = std::fs::read_to_string(&daemon.log).unwrap();
    assert!(
        log.contains("state missing: adopted 4 running agents; groups base, extra marked started"),
        "{}",
        daemon.log_tail(40)
    );
    // The inference is saved: another kill -9 finds it on disk.
    let state = daemon.state_dir.join(format!("{}.state.json", host.name));
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(
        saved["started_groups"],
        serde_json::json!(["base", "extra"])
    );
    // Stopping them takes an operator.
    daemon.ctl_ok(&["group", "stop", "extra"]);
    daemon.wait_until("extra's agent stopped", READY, |_| {
        host.container_of("Side").is_none()
    });
}

#[test]
fn a_truncated_state_file_is_kept_aside_and_stops_no_agent() {
    let (host, mut daemon, before) = started("damaged-state");
    daemon.kill9();
    let state = daemon.state_dir.join(format!("{}.state.json", host.name));
    let whole = std::fs::read(&state).unwrap();
    let truncated = &whole[..whole.len() / 2];
    std::fs::write(&state, truncated).unwrap();
    daemon.spawn();
    daemon.wait_until("the state is inferred", READY, |d| !inferred(d).is_empty());
    assert_eq!(started_groups(&daemon), ["base", "extra"]);
    daemon.wait_all_ready(READY);
    all_survived(&host, &before);
    assert!(matches!(
        &inferred(&daemon)[..],
        [EventKind::StateInferred { origin, adopted: 4, .. }] if origin == "damaged"
    ));
    // The damaged file is kept whole beside the new one.
    let kept: Vec<_> = std::fs::read_dir(&daemon.state_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".damaged-"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(std::fs::read(&kept[0]).unwrap(), truncated);
    assert!(daemon.status().state.origin == "damaged");
    let log = std::fs::read_to_string(&daemon.log).unwrap();
    assert!(log.contains("kept aside as"), "{}", daemon.log_tail(40));
}

#[test]
fn fresh_stops_the_running_agents_and_says_so() {
    let (host, mut daemon, _) = started("fresh");
    daemon.kill9();
    daemon.extra.push("--fresh".into());
    daemon.spawn();
    daemon.wait_until("every agent stopped", READY, |_| {
        host.containers().is_empty()
    });
    assert!(started_groups(&daemon).is_empty());
    let fresh: Vec<EventKind> = daemon
        .events()
        .into_iter()
        .map(|e| e.kind)
        .filter(|k| matches!(k, EventKind::FreshStart { .. }))
        .collect();
    assert_eq!(fresh, [EventKind::FreshStart { stopping: 4 }]);
    let log = std::fs::read_to_string(&daemon.log).unwrap();
    assert!(
        log.contains("started fresh: no group is started; stopping 4 running agents"),
        "{}",
        daemon.log_tail(40)
    );
    // Without --fresh again, nothing comes back: the fresh state was saved.
    daemon.extra.clear();
    daemon.kill9();
    daemon.spawn();
    assert!(started_groups(&daemon).is_empty());
}

#[test]
fn a_secret_value_is_in_its_agent_mount_and_nowhere_else() {
    let host = Host::new("secret");
    let ctl = host.path("ctl");
    std::fs::create_dir_all(&ctl).unwrap();
    let value = format!("sk-e2e-{:016x}", rand::random::<u64>());
    let secret = host.path("api_key");
    std::fs::write(&secret, &value).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = chain_config(&host.name, &ctl)
        .replacen(
            "defaults:",
            &format!("secrets: {{API_KEY: {}}}\ndefaults:", secret.display()),
            1,
        )
        .replace("      Side: {}", "      Side: {secrets: [API_KEY]}");
    assert!(config.contains("secrets: [API_KEY]"));
    let daemon = Daemon::start(&host, &config, &[]);
    daemon.ctl_ok(&["group", "start", "extra"]);
    daemon.ctl_ok(&["group", "start", "base"]);
    daemon.wait_all_ready(READY);

    // The agent has it: a read-only file, and its path in API_KEY_FILE.
    let side = host.container_of("Side").unwrap();
    let copied = docker(&["cp", &format!("{}:/run/secrets/API_KEY", side.id), "-"]);
    assert!(copied.status.success());
    let tar = String::from_utf8_lossy(&copied.stdout);
    assert!(tar.contains(&value), "the mount holds the value");
    assert_eq!(
        e2e::container_env(&side.id, "API_KEY_FILE").as_deref(),
        Some("/run/secrets/API_KEY")
    );
    let mount = docker_ok(&[
        "inspect",
        "--format",
        "{{range .Mounts}}{{if eq .Destination \"/run/secrets/API_KEY\"}}{{.RW}}{{end}}{{end}}",
        &side.id,
    ]);
    assert_eq!(mount, "false", "mounted read-only");
    // Other agents do not get it.
    let top = host.container_of("Top").unwrap();
    assert_eq!(e2e::container_env(&top.id, "API_KEY_FILE"), None);

    // Everything the daemon and the CLI emit, in every output form.
    let cfg = daemon.config.to_str().unwrap().to_string();
    let mut emitted: Vec<(String, String)> = Vec::new();
    let mut run = |what: &str, args: &[&str]| {
        let out = daemon.ctl(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        emitted.push((what.to_string(), text));
    };
    for form in ["table", "json", "yaml"] {
        run("status", &["-o", form, "status"]);
        run("groups", &["-o", form, "groups"]);
        run("agents", &["-o", form, "agents"]);
        run("gpu", &["-o", form, "gpu"]);
        run("events", &["-o", form, "events"]);
        run("config show", &["-o", form, "config", "show", &cfg]);
        run("config validate", &["-o", form, "config", "validate", &cfg]);
        run("plan", &["-o", form, "plan", &cfg]);
    }
    run("config convert", &["config", "convert", &cfg]);
    run("export compose", &["export", "compose", &cfg]);
    run("export k8s", &["export", "k8s", &cfg]);
    run("state export", &["state", "export"]);
    run("logs", &["logs", "extra/Side"]);
    run("reload", &["-o", "json", "reload"]);
    run("apply", &["-o", "json", "apply", &cfg]);
    run("group start", &["-o", "json", "group", "start", "extra"]);
    run(
        "agent restart",
        &["-o", "json", "agent", "restart", "extra/Side"],
    );
    daemon.wait_all_ready(READY);
    run("events after a restart", &["-o", "json", "events"]);
    // The daemon's own log and the state directory.
    emitted.push((
        "daemon log".into(),
        std::fs::read_to_string(&daemon.log).unwrap(),
    ));
    for entry in std::fs::read_dir(&daemon.state_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            emitted.push((
                path.display().to_string(),
                String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned(),
            ));
        }
    }
    // What Docker keeps of the container's definition.
    let side = host.container_of("Side").unwrap();
    emitted.push(("docker inspect".into(), docker_ok(&["inspect", &side.id])));

    for (what, text) in &emitted {
        assert!(!text.is_empty(), "{what} said nothing");
        assert!(
            !text.contains(&value),
            "the secret's value is in {what}:\n{text}"
        );
    }
    // The check can fail: the value is findable where it is.
    assert!(
        emitted
            .iter()
            .any(|(_, t)| t.contains(secret.to_str().unwrap())),
        "the path (not the value) is shown somewhere"
    );
}

#[test]
fn an_export_restores_the_same_desired_state_on_a_new_state_directory() {
    let (host, mut daemon, _) = started("export-import");
    daemon.ctl_ok(&["group", "stop", "extra"]);
    daemon.wait_until("extra's agent stopped", READY, |_| {
        host.container_of("Side").is_none()
    });
    let exported = daemon.ctl_ok(&["state", "export"]);
    let file = host.path("backup.json");
    std::fs::write(&file, &exported).unwrap();

    // A new state directory, and nothing running: as on a rebuilt host.
    daemon.kill9();
    std::fs::remove_dir_all(&daemon.state_dir).unwrap();
    daemon.extra.push("--fresh".into());
    daemon.spawn();
    daemon.wait_until("every agent stopped", READY, |_| {
        host.containers().is_empty()
    });
    daemon.extra.clear();
    assert!(started_groups(&daemon).is_empty());

    let out = daemon.ctl_ok(&["state", "import", file.to_str().unwrap()]);
    assert_eq!(out.trim(), "state imported; started base");
    daemon.wait_all_ready(READY);
    assert_eq!(started_groups(&daemon), ["base"]);
    assert_eq!(running(&host).len(), 3);
    assert_eq!(daemon.ctl_ok(&["state", "export"]), exported);
    // And it is on disk: a kill -9 keeps it.
    daemon.kill9();
    daemon.spawn();
    assert_eq!(daemon.ctl_ok(&["state", "export"]), exported);
}
