//! Federation between real daemons, each a host in its own network
//! namespace on a private link layer (`e2e::net::Lan`), with real CURVE
//! keys made by `orchestratorctl keys generate`, real agents in Docker.
//! Fleet views agree; cut links mark hosts down and heal by themselves;
//! a `kill -9`ed daemon comes back with a new incarnation; commands reach
//! other hosts; a cross-host dependency holds and releases; strangers and
//! wrong keys are refused; a foreign (pyzmq) peer speaks the protocol;
//! while a peer's daemon is dead, its agent that answers on its published
//! port holds its dependent past the grace, until it stops answering.

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::net::Lan;
use e2e::{Daemon, Host, IMAGE, Keys, binaries, keys, repo_root};

/// A host config on `ip`, with `groups` and these peers (name, ip, public key).
fn config(
    host: &Host,
    ip: &str,
    secret: &Path,
    peers: &[(&str, &str, &str)],
    groups: &str,
) -> String {
    let peers: Vec<String> = peers
        .iter()
        .map(|(name, ip, key)| {
            format!("    - {{name: {name}, endpoint: \"tcp://{ip}:7100\", public_key: \"{key}\"}}")
        })
        .collect();
    format!(
        r#"version: 1
host: {{name: {host}}}
defaults:
  image: {IMAGE}
  # The daemon is in another network namespace than the containers: the
  # agent's own binary probes from inside (exec).
  health: {{exec: ["/reference-agent", "--probe", "http://127.0.0.1:8080/health"], interval: 1s, timeout: 3s, retries: 2, start_period: 10s}}
  stop_timeout: 2s
groups:
{groups}
federation:
  listen: "tcp://{ip}:7100"
  # A down peer's agents hold for this long before its dependents stop
  # (shorter than the 2m default, so the hold is seen within the test).
  peer_grace: 10s
  peers:
{}
  keys: {{secret_key_file: {}}}
"#,
        peers.join("\n"),
        secret.display(),
        host = host.name,
    )
}

fn peers(d: &Daemon) -> Vec<serde_json::Value> {
    serde_json::from_str(&d.ctl_ok(&["-o", "json", "peers"])).unwrap()
}

fn peer<'a>(all: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    all.iter().find(|p| p["name"] == name).unwrap()
}

fn state_of(d: &Daemon, name: &str) -> String {
    peer(&peers(d), name)["state"].as_str().unwrap().to_string()
}

/// Waits until `d` sees `name` in `state`; returns how long it took.
fn until_state(d: &Daemon, name: &str, state: &str) -> Duration {
    let start = Instant::now();
    d.wait_until(
        &format!("{name} is {state}"),
        Duration::from_secs(60),
        |d| state_of(d, name) == state,
    );
    start.elapsed()
}

fn agent_running(d: &Daemon, agent: &str) -> bool {
    let agents: Vec<orch_api::AgentStatus> =
        serde_json::from_str(&d.ctl_ok(&["-o", "json", "agents"])).unwrap();
    agents
        .iter()
        .any(|a| a.agent == agent && a.phase == orch_api::wire::Phase::Running)
}

#[test]
fn three_hosts_see_each_other_survive_cuts_and_restarts_and_act_for_each_other() {
    if !e2e::net::available() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must be able to make network namespaces"
        );
        eprintln!("skipped: cannot make network namespaces here (needs root and iproute2)");
        return;
    }
    let lan = Lan::new(3);
    let hosts = [Host::new("fed1"), Host::new("fed2"), Host::new("fed3")];
    let k: Vec<Keys> = hosts.iter().map(keys).collect();
    let groups = [
        "  base:\n    agents:\n      A: {}\n".to_string(),
        "  vision:\n    agents:\n      Eyes: {}\n".to_string(),
        "  base:\n    agents:\n      A: {}\n".to_string(),
    ];
    // fed1 also has an agent that needs fed2's Eyes.
    let needy = format!(
        "  needs:\n    agents:\n      Needy: {{depends_on: [{}/Eyes]}}\n",
        hosts[1].name
    );
    let mut daemons: Vec<Daemon> = Vec::new();
    for i in 0..3 {
        let others: Vec<(&str, String, &str)> = (0..3)
            .filter(|j| *j != i)
            .map(|j| (hosts[j].name.as_str(), lan.ip(j), k[j].public.as_str()))
            .collect();
        let others: Vec<(&str, &str, &str)> = others
            .iter()
            .map(|(n, ip, key)| (*n, ip.as_str(), *key))
            .collect();
        let g = if i == 0 {
            format!("{}{needy}", groups[i])
        } else {
            groups[i].clone()
        };
        let text = config(&hosts[i], &lan.ip(i), &k[i].secret, &others, &g);
        daemons.push(Daemon::start_in_netns(&hosts[i], &text, &lan.ns(i)));
    }
    let name = |i: usize| hosts[i].name.as_str();
    for (i, d) in daemons.iter().enumerate() {
        for j in (0..3).filter(|j| *j != i) {
            until_state(d, name(j), "alive");
        }
    }

    // The fleet, from every host, agrees on who is there.
    for (i, d) in daemons.iter().enumerate() {
        let fleet: Vec<serde_json::Value> =
            serde_json::from_str(&d.ctl_ok(&["-o", "json", "status", "--all-hosts"])).unwrap();
        let mut seen: Vec<(String, String)> = fleet
            .iter()
            .map(|h| {
                (
                    h["host"].as_str().unwrap().to_string(),
                    h["state"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        seen.sort();
        let mut want: Vec<(String, String)> = (0..3)
            .map(|j| {
                (
                    name(j).to_string(),
                    if i == j { "self" } else { "alive" }.to_string(),
                )
            })
            .collect();
        want.sort();
        assert_eq!(seen, want, "from {}", name(i));
    }

    // A command for fed2, sent to fed1, waits on fed2's events.
    let out = daemons[0].ctl(&[
        "--host",
        name(1),
        "group",
        "start",
        "vision",
        "--wait",
        "--timeout",
        "120s",
    ]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        daemons[1].log_tail(40)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("vision ready: 1/1 agents healthy"));
    assert!(hosts[1].container_of("Eyes").is_some_and(|c| c.running));
    assert!(hosts[0].container_of("Eyes").is_none());

    // The cross-host dependency: Needy starts now that Eyes is healthy.
    daemons[0].ctl_ok(&["group", "start", "needs", "--wait", "--timeout", "120s"]);
    assert!(agent_running(&daemons[0], "Needy"));

    // Cut fed2 off: the others see it down, and once its grace has run out
    // with no news, Needy is held again.
    let eyes = hosts[1].container_of("Eyes").unwrap();
    lan.cut_off(1);
    let took = until_state(&daemons[0], name(1), "down");
    until_state(&daemons[2], name(1), "down");
    eprintln!("fed2 seen down by fed1 {took:?} after the cut");
    daemons[0].wait_until(
        "Needy held while fed2 is down",
        Duration::from_secs(60),
        |d| !agent_running(d, "Needy"),
    );
    // A down host is shown down, with its last known state.
    let fleet: Vec<serde_json::Value> =
        serde_json::from_str(&daemons[0].ctl_ok(&["-o", "json", "status", "--all-hosts"])).unwrap();
    let fed2 = fleet.iter().find(|h| h["host"] == name(1)).unwrap();
    assert_eq!(fed2["state"], "down");
    assert_eq!(fed2["data"]["host"], name(1));
    let out = daemons[0].ctl(&["--host", name(1), "status"]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "an unreachable host is exit code 4"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains(name(1)));

    // The link comes back: no restart, same containers, Needy again.
    lan.reconnect(1);
    until_state(&daemons[0], name(1), "alive");
    until_state(&daemons[2], name(1), "alive");
    assert_eq!(hosts[1].container_of("Eyes").unwrap().id, eyes.id);
    daemons[0].wait_until("Needy back", Duration::from_secs(60), |d| {
        agent_running(d, "Needy")
    });

    // kill -9 of fed2's daemon, its agents still running: Needy, which
    // needs fed2's Eyes, is not stopped while fed2 is down and restarts,
    // nor once it is back and has adopted Eyes again: the same container,
    // started once.
    daemons[0].wait_until("Needy healthy", Duration::from_secs(60), |d| {
        d.status().agents.healthy == d.status().agents.wanted
    });
    let needy = hosts[0].container_of("Needy").unwrap();
    let before = peer(&peers(&daemons[0]), name(1))["incarnation"]
        .as_u64()
        .unwrap();
    daemons[1].kill9();
    until_state(&daemons[0], name(1), "down");
    daemons[1].spawn();
    daemons[0].wait_until(
        "fed2 back with a new incarnation",
        Duration::from_secs(60),
        |d| {
            let all = peers(d);
            let p = peer(&all, name(1));
            p["state"] == "alive" && p["incarnation"].as_u64().unwrap() > before
        },
    );
    // Its first reports (Eyes adopted, not yet probed) must not stop Needy.
    std::thread::sleep(Duration::from_secs(3));
    let after = hosts[0].container_of("Needy").unwrap();
    assert_eq!(
        (after.id.as_str(), after.started_at.as_str()),
        (needy.id.as_str(), needy.started_at.as_str()),
        "Needy was stopped or restarted while its peer's daemon restarted"
    );
    assert_eq!(hosts[1].container_of("Eyes").unwrap().id, eyes.id);

    // Only the link between fed1 and fed3: fed2 still sees both.
    lan.cut(0, 2);
    until_state(&daemons[0], name(2), "down");
    until_state(&daemons[2], name(0), "down");
    assert_eq!(state_of(&daemons[1], name(0)), "alive");
    assert_eq!(state_of(&daemons[1], name(2)), "alive");
    lan.heal(0, 2);
    until_state(&daemons[0], name(2), "alive");

    // kill -9 fed3's daemon: down, then back with a new incarnation.
    let before = peer(&peers(&daemons[0]), name(2))["incarnation"]
        .as_u64()
        .unwrap();
    daemons[2].kill9();
    until_state(&daemons[0], name(2), "down");
    daemons[2].spawn();
    daemons[0].wait_until(
        "fed3 back with a new incarnation",
        Duration::from_secs(60),
        |d| {
            let all = peers(d);
            let p = peer(&all, name(2));
            p["state"] == "alive" && p["incarnation"].as_u64().unwrap() > before
        },
    );
    for h in &hosts {
        h.assert_no_duplicates();
    }
    drop(daemons);
    drop(lan);
}

#[test]
fn strangers_and_wrong_keys_are_refused_and_the_secret_key_must_be_private() {
    if !e2e::net::available() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must be able to make network namespaces"
        );
        eprintln!("skipped: cannot make network namespaces here (needs root and iproute2)");
        return;
    }
    let lan = Lan::new(3);
    let hosts = [Host::new("sec1"), Host::new("sec2"), Host::new("rogue")];
    let k: Vec<Keys> = hosts.iter().map(keys).collect();
    let name = |i: usize| hosts[i].name.as_str();
    let group = "  base:\n    agents:\n      A: {}\n";
    // sec1 lists sec2 correctly; sec2 lists sec1 with the wrong key (the
    // rogue's); the rogue lists sec1 correctly, and nobody lists it.
    let ip = |i: usize| lan.ip(i);
    let c1 = config(
        &hosts[0],
        &ip(0),
        &k[0].secret,
        &[(name(1), &ip(1), &k[1].public)],
        group,
    );
    let c2 = config(
        &hosts[1],
        &ip(1),
        &k[1].secret,
        &[(name(0), &ip(0), &k[2].public)],
        group,
    );
    let c3 = config(
        &hosts[2],
        &ip(2),
        &k[2].secret,
        &[(name(0), &ip(0), &k[0].public)],
        group,
    );

    // A secret key others can read is refused at start, naming it.
    let mode = |p: &Path, m: u32| {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    };
    mode(&k[0].secret, 0o644);
    let (daemon_bin, _) = binaries();
    let cfg_path = hosts[0].path("check.yaml");
    std::fs::write(&cfg_path, &c1).unwrap();
    let out = Command::new(&daemon_bin)
        .arg("check")
        .arg("--config")
        .arg(&cfg_path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&k[0].secret.display().to_string()), "{err}");
    mode(&k[0].secret, 0o600);

    let d1 = Daemon::start_in_netns(&hosts[0], &c1, &lan.ns(0));
    let d2 = Daemon::start_in_netns(&hosts[1], &c2, &lan.ns(1));
    let rogue = Daemon::start_in_netns(&hosts[2], &c3, &lan.ns(2));
    // Long enough for many heartbeats and reconnection attempts.
    std::thread::sleep(Duration::from_secs(6));
    // The rogue: nothing in from sec1 (its key is refused), so sec1 never
    // looks alive to it, and sec1 lists no such peer at all.
    let r = peers(&rogue);
    assert_eq!(peer(&r, name(0))["state"], "unknown");
    assert_eq!(peer(&r, name(0))["messages_in"], 0);
    assert!(peers(&d1).iter().all(|p| p["name"] != name(2)));
    assert!(d1.log_tail(200).contains("refused a federation connection"));
    // The wrong key: the handshake fails both ways, neither is ever alive.
    assert_eq!(state_of(&d1, name(1)), "unknown");
    assert_eq!(state_of(&d2, name(0)), "unknown");
    assert_eq!(peer(&peers(&d1), name(1))["messages_in"], 0);
    drop((d1, d2, rogue));
    drop(lan);
}

#[test]
fn a_foreign_pyzmq_peer_follows_a_daemon_and_asks_it_for_its_status() {
    if !e2e::net::available() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must be able to make network namespaces"
        );
        eprintln!("skipped: cannot make network namespaces here (needs root and iproute2)");
        return;
    }
    let setup = Command::new(repo_root().join("tests/federation/setup-venv.sh"))
        .output()
        .unwrap();
    assert!(
        setup.status.success(),
        "{}",
        String::from_utf8_lossy(&setup.stderr)
    );
    let python = String::from_utf8_lossy(&setup.stdout)
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_string();
    let lan = Lan::new(2);
    let host = Host::new("interop");
    let probe = Host::new("probe");
    let hk = keys(&host);
    let pk = keys(&probe);
    let text = config(
        &host,
        &lan.ip(0),
        &hk.secret,
        &[(probe.name.as_str(), &lan.ip(1), &pk.public)],
        "  base:\n    agents:\n      A: {}\n",
    );
    let d = Daemon::start_in_netns(&host, &text, &lan.ns(0));
    let probe_secret = std::fs::read_to_string(&pk.secret).unwrap();
    let out = Command::new("ip")
        .args(["netns", "exec", &lan.ns(1), &python])
        .arg(repo_root().join("tests/federation/pyzmq_peer.py"))
        .args([
            &format!("tcp://{}:7100", lan.ip(0)),
            &hk.public,
            probe_secret.trim(),
            &pk.public,
            &probe.name,
            r#"{"v": 1, "op": "status"}"#,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log_tail(30)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["heartbeat"]["host"], host.name.as_str());
    // The snapshot body is the control API's HostSnapshot: status, agents, gpu.
    assert_eq!(
        seen["snapshot"]["body"]["status"]["host"],
        host.name.as_str()
    );
    assert!(seen["snapshot"]["body"]["agents"].is_array());
    // The reply to a control API request, as docs/federation.md says.
    assert_eq!(seen["reply"]["ok"]["reply"], "status");
    assert_eq!(seen["reply"]["ok"]["data"]["host"], host.name.as_str());
    // ...and the daemon saw the foreign peer come and go.
    assert!(
        peer(&peers(&d), &probe.name)["messages_in"]
            .as_u64()
            .unwrap()
            > 0
    );
    drop(d);
    drop(lan);
}

/// A port nothing listens on now, on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_dead_peers_agent_that_answers_its_published_port_holds_its_dependent_past_the_grace() {
    // Both daemons on this machine's own network (no namespaces): the
    // dependent host reaches the agent's published port, as it would on
    // a LAN, at the host of the peer's `endpoint` (127.0.0.1).
    let hosts = [Host::new("rprobe1"), Host::new("rprobe2")];
    let k: Vec<Keys> = hosts.iter().map(keys).collect();
    let (fed, eyes_port) = ([free_port(), free_port()], free_port());
    let text = |i: usize, groups: &str| {
        let j = 1 - i;
        format!(
            r#"version: 1
host: {{name: {host}}}
defaults:
  image: {IMAGE}
  health: {{http: {{port: 8080, path: /health}}, interval: 1s, timeout: 2s, retries: 2, start_period: 10s}}
  stop_timeout: 2s
groups:
{groups}
federation:
  listen: "tcp://127.0.0.1:{listen}"
  peer_grace: 10s
  peers:
    - {{name: {peer}, endpoint: "tcp://127.0.0.1:{peer_port}", public_key: "{key}"}}
  keys: {{secret_key_file: {secret}}}
"#,
            host = hosts[i].name,
            listen = fed[i],
            peer = hosts[j].name,
            peer_port = fed[j],
            key = k[j].public,
            secret = k[i].secret.display(),
        )
    };
    let needy = format!(
        "  needs:\n    agents:\n      Needy: {{depends_on: [{}/Eyes]}}\n",
        hosts[1].name
    );
    let eyes = format!("  vision:\n    agents:\n      Eyes: {{ports: [\"{eyes_port}:8080\"]}}\n");
    let main = Daemon::start(&hosts[0], &text(0, &needy), &[]);
    let mut pc2 = Daemon::start(&hosts[1], &text(1, &eyes), &[]);
    let pc2_name = hosts[1].name.as_str();
    until_state(&main, pc2_name, "alive");
    pc2.ctl_ok(&["group", "start", "vision", "--wait", "--timeout", "120s"]);
    main.ctl_ok(&["group", "start", "needs", "--wait", "--timeout", "120s"]);
    let needy_before = hosts[0].container_of("Needy").unwrap();
    let eyes_container = hosts[1].container_of("Eyes").unwrap();

    // pc2's daemon dies; Eyes runs on and answers on its published port.
    pc2.kill9();
    until_state(&main, pc2_name, "down");
    let down_at = Instant::now();
    let holds = |d: &Daemon| -> Vec<String> {
        let agents: Vec<serde_json::Value> =
            serde_json::from_str(&d.ctl_ok(&["-o", "json", "agents"])).unwrap();
        let needy = agents.iter().find(|a| a["agent"] == "Needy").unwrap();
        needy["remote"]
            .as_array()
            .map(|r| r.iter().map(|d| d["state"].to_string()).collect())
            .unwrap_or_default()
    };
    main.wait_until("Eyes answers its probe", Duration::from_secs(30), |d| {
        holds(d) == ["\"answers its probe, host down\""]
    });
    // Well past the 10s grace: Needy still runs, the same container.
    std::thread::sleep(Duration::from_secs(20).saturating_sub(down_at.elapsed()));
    assert!(down_at.elapsed() > Duration::from_secs(15));
    assert_eq!(state_of(&main, pc2_name), "down");
    assert!(agent_running(&main, "Needy"), "{}", main.log_tail(40));
    let needy_after = hosts[0].container_of("Needy").unwrap();
    assert_eq!(
        (needy_after.id.as_str(), needy_after.started_at.as_str()),
        (needy_before.id.as_str(), needy_before.started_at.as_str()),
        "Needy was stopped or restarted while pc2's Eyes answered"
    );
    let table = main.ctl_ok(&["agents"]);
    assert!(
        table.contains("answers its probe"),
        "agents says why Needy runs on:\n{table}"
    );

    // Eyes stops: its probe fails, and Needy stops.
    e2e::docker_ok(&["stop", "-t", "2", &eyes_container.id]);
    main.wait_until("Needy stopped", Duration::from_secs(60), |d| {
        !agent_running(d, "Needy")
    });
    assert_eq!(state_of(&main, pc2_name), "down");
    drop(main);
    drop(pc2);
}
