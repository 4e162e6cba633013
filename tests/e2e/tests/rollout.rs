//! Rollouts on the real Docker Engine: a bad version rolls itself back
//! (the running containers carry the previous generation's env), a version
//! whose image is missing rolls back with the old containers untouched,
//! `rollout undo` returns to the previous generation, and `apply
//! --all-hosts` stops at the first host whose rollout fails.

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use e2e::{Daemon, Host, IMAGE, Keys, agent_events, docker, free_port, keys, kind_name};

/// One group `web` with a 2-replica `Pool` whose env carries `VERSION`;
/// short watches so a test takes seconds.
fn config(host: &str, version: &str, extra_env: &str, image: &str) -> String {
    format!(
        r#"version: 1
host: {{name: {host}}}
defaults:
  image: {IMAGE}
  restart: {{policy: on-failure, backoff: {{initial: 200ms, max: 2s}}, crashloop: {{restarts: 3, window: 1m}}}}
  health: {{http: {{port: 8080}}, interval: 500ms, timeout: 1s, retries: 2, start_period: 5s}}
  stop_timeout: 2s
groups:
  web:
    min_healthy: 1s
    rollout: {{watch: 6s, healthy_deadline: 30s}}
    agents:
      Pool:
        image: {image}
        replicas: 2
        env: {{VERSION: "{version}"{extra_env}}}
"#
    )
}

/// Pool's two replicas (a rollout's surge replica, Pool#2, comes and
/// goes).
fn pool(host: &Host) -> Vec<e2e::Seen> {
    let mut c: Vec<e2e::Seen> = host
        .containers()
        .into_iter()
        .filter(|c| c.agent == "Pool" && c.replica != "2")
        .collect();
    c.sort_by(|a, b| a.replica.cmp(&b.replica));
    c
}

/// Each replica's `VERSION`; a container removed since it was listed
/// (being replaced) reads as "gone".
fn versions(host: &Host) -> Vec<String> {
    pool(host)
        .iter()
        .map(|c| {
            let out = docker(&[
                "inspect",
                "--format",
                "{{range .Config.Env}}{{println .}}{{end}}",
                &c.id,
            ]);
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .find_map(|l| l.strip_prefix("VERSION=").map(str::to_string))
                .unwrap_or_else(|| "gone".into())
        })
        .collect()
}

fn apply(
    daemon: &Daemon,
    host: &Host,
    name: &str,
    text: &str,
    args: &[&str],
) -> std::process::Output {
    let file = host.path(name);
    std::fs::write(&file, text).unwrap();
    let mut all = vec!["apply"];
    all.extend_from_slice(args);
    all.push(file.to_str().unwrap());
    daemon.ctl(&all)
}

/// What a command printed, stdout then stderr.
fn printed(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn rollout_events(d: &Daemon) -> Vec<String> {
    d.events()
        .iter()
        .filter(|e| kind_name(e).starts_with("rollout-"))
        .map(|e| format!("{}: {}", kind_name(e), e.kind))
        .collect()
}

#[test]
fn a_bad_env_rolls_back_by_itself_and_undo_returns_to_the_previous_generation() {
    let host = Host::new("rollback");
    let daemon = Daemon::start(&host, &config(&host.name, "1", "", IMAGE), &[]);
    daemon.ctl_ok(&["group", "start", "web", "--wait", "--timeout", "60"]);
    assert_eq!(versions(&host), ["1", "1"]);

    // A good version: rolled out replica by replica, exit 0.
    let out = apply(
        &daemon,
        &host,
        "v2.yaml",
        &config(&host.name, "2", "", IMAGE),
        &["--wait", "--timeout", "120"],
    );
    let said = printed(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{said}\n{}",
        daemon.log_tail(40)
    );
    assert!(said.contains("rolled out"), "{said}");
    assert_eq!(versions(&host), ["2", "2"]);
    let good = pool(&host);

    // A bad version: its replicas crash 2 s after they start, inside the
    // watch. The first step fails, and the rollout goes back by itself.
    let bad = config(&host.name, "3", ", AGENT_CRASH_AFTER: 2s", IMAGE);
    let out = apply(
        &daemon,
        &host,
        "v3.yaml",
        &bad,
        &["--wait", "--timeout", "120"],
    );
    let said = printed(&out);
    assert_eq!(
        out.status.code(),
        Some(9),
        "{said}\n{}",
        daemon.log_tail(40)
    );
    assert!(said.contains("rolled back"), "{said}");
    let events = rollout_events(&daemon);
    assert!(
        events.iter().any(|e| e.starts_with("rollout-failed")
            && e.contains("exited with code")
            && e.contains("rolling back to generation 1")),
        "{events:#?}"
    );
    // The running containers carry the previous generation's env; the
    // replica the bad step never reached was never touched.
    daemon.wait_until(
        "both replicas back at version 2",
        Duration::from_secs(60),
        |_| versions(&host) == ["2", "2"] && pool(&host).iter().all(|c| c.running),
    );
    assert_eq!(pool(&host)[1].id, good[1].id, "Pool#1 was replaced");
    host.assert_no_duplicates();
    // The config file holds the good version again.
    let status: serde_json::Value =
        serde_json::from_str(&daemon.ctl_ok(&["rollout", "status", "-o", "json"])).unwrap();
    assert_eq!(status["rollout"]["kind"]["type"], "rollback", "{status}");
    assert_eq!(status["rollout"]["phase"], "completed", "{status}");

    // History: startup, the good apply, the bad one, its rollback.
    let history: Vec<serde_json::Value> =
        serde_json::from_str(&daemon.ctl_ok(&["history", "-o", "json"])).unwrap();
    let sources: Vec<String> = history
        .iter()
        .map(|g| g["source"]["kind"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        sources,
        ["rollback", "apply", "apply", "startup"],
        "{history:#?}"
    );

    // `rollout undo`: back to the generation before the running one that
    // completed (generation 0, version 1), as a rollout of its own.
    let out = daemon.ctl(&["rollout", "undo", "--wait", "--timeout", "120"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(versions(&host), ["1", "1"]);
    let history: Vec<serde_json::Value> =
        serde_json::from_str(&daemon.ctl_ok(&["history", "-o", "json"])).unwrap();
    assert_eq!(history[0]["source"]["kind"], "undo", "{history:#?}");
    host.assert_no_duplicates();
}

#[test]
fn a_missing_image_rolls_back_with_the_old_containers_untouched() {
    let host = Host::new("rbimage");
    let daemon = Daemon::start(&host, &config(&host.name, "1", "", IMAGE), &[]);
    daemon.ctl_ok(&["group", "start", "web", "--wait", "--timeout", "60"]);
    let before = pool(&host);
    let missing = "orchestrator-agent:not-built-here";
    let out = apply(
        &daemon,
        &host,
        "missing.yaml",
        &config(&host.name, "2", "", missing),
        &["--force", "--wait", "--timeout", "120"],
    );
    let said = printed(&out);
    assert_eq!(
        out.status.code(),
        Some(9),
        "{said}\n{}",
        daemon.log_tail(40)
    );
    assert!(said.contains(missing), "{said}");
    let events = rollout_events(&daemon);
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("rollout-failed") && e.contains("could not be created")),
        "{events:#?}"
    );
    // The same containers, running, the whole time.
    let after = pool(&host);
    assert_eq!(
        after
            .iter()
            .map(|c| (&c.id, c.running, &c.started_at))
            .collect::<Vec<_>>(),
        before
            .iter()
            .map(|c| (&c.id, true, &c.started_at))
            .collect::<Vec<_>>()
    );
    let failed = agent_events(&daemon.events(), "Pool")
        .into_iter()
        .filter(|e| kind_name(e) == "agent-failed")
        .count();
    assert_eq!(failed, 1, "one try, then the rollback");
    host.assert_no_duplicates();
}

#[test]
fn apply_all_hosts_stops_at_the_first_host_whose_rollout_fails() {
    let hosts = [Host::new("allh1"), Host::new("allh2")];
    let k: Vec<Keys> = hosts.iter().map(keys).collect();
    let fed = [free_port(), free_port()];
    let text = |i: usize, version: &str, extra: &str| {
        let j = 1 - i;
        format!(
            "{}federation:\n  listen: \"tcp://127.0.0.1:{}\"\n  remote_commands: admin\n  peers:\n    - {{name: {}, endpoint: \"tcp://127.0.0.1:{}\", public_key: \"{}\"}}\n  keys: {{secret_key_file: {}}}\n",
            config(&hosts[i].name, version, extra, IMAGE),
            fed[i],
            hosts[j].name,
            fed[j],
            k[j].public,
            k[i].secret.display(),
        )
    };
    let d0 = Daemon::start(&hosts[0], &text(0, "1", ""), &[]);
    let d1 = Daemon::start(&hosts[1], &text(1, "1", ""), &[]);
    d0.wait_until("the peer alive", Duration::from_secs(60), |d| {
        d.ctl_ok(&["peers", "-o", "json"]).contains("\"alive\"")
    });
    d0.ctl_ok(&["group", "start", "web", "--wait", "--timeout", "60"]);
    d1.ctl_ok(&["group", "start", "web", "--wait", "--timeout", "60"]);
    let second_before = pool(&hosts[1]);

    // A directory of configs: this host's is bad (its replicas crash while
    // watched), the peer's is good. The first host fails and is rolled
    // back; the peer is never changed.
    let dir = hosts[0].path("fleet");
    for (i, (version, extra)) in [("2", ", AGENT_CRASH_AFTER: 2s"), ("2", "")]
        .iter()
        .enumerate()
    {
        let d = dir.join(&hosts[i].name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("startup_config.yaml"), text(i, version, extra)).unwrap();
    }
    let out = d0.ctl(&[
        "apply",
        "--all-hosts",
        dir.to_str().unwrap(),
        "--timeout",
        "120",
    ]);
    let said = printed(&out);
    assert_eq!(out.status.code(), Some(9), "{said}\n{}", d0.log_tail(40));
    assert!(said.contains("no other host was changed"), "{said}");
    assert_eq!(versions(&hosts[0]), ["1", "1"]);
    assert_eq!(
        pool(&hosts[1]),
        second_before,
        "the second host was touched"
    );
    assert_eq!(versions(&hosts[1]), ["1", "1"]);

    // Both good: each host rolled out in turn.
    std::fs::write(
        dir.join(&hosts[0].name).join("startup_config.yaml"),
        text(0, "2", ""),
    )
    .unwrap();
    let out = d0.ctl(&[
        "apply",
        "--all-hosts",
        dir.to_str().unwrap(),
        "--timeout",
        "120",
    ]);
    let said = printed(&out);
    assert_eq!(out.status.code(), Some(0), "{said}\n{}", d1.log_tail(40));
    assert_eq!(versions(&hosts[0]), ["2", "2"]);
    assert_eq!(versions(&hosts[1]), ["2", "2"]);
}
