//! What a host accepts from its peers, between real daemons, each a host
//! in its own network namespace (`e2e::net::Lan`) with real CURVE keys: a
//! monitor's key follows a host and reads, and its commands are refused
//! and audited; a peer with `remote_commands: operate` starts a group and
//! cannot `apply`; a rotated key is taken at `reload` with no peer seen
//! down.

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use e2e::net::Lan;
use e2e::{Daemon, Host, IMAGE, binaries, keys};

/// A peer entry: name, ip, role, its keys.
struct P<'a> {
    name: &'a str,
    ip: String,
    role: &'a str,
    keys: Vec<String>,
}

fn config(host: &Host, ip: &str, secret: &Path, peers: &[P<'_>], groups: &str) -> String {
    let peers: Vec<String> = peers
        .iter()
        .map(|p| {
            let keys: Vec<String> = p.keys.iter().map(|k| format!("\"{k}\"")).collect();
            format!(
                "    - {{name: {}, endpoint: \"tcp://{}:7100\", role: {}, public_keys: [{}]}}",
                p.name,
                p.ip,
                p.role,
                keys.join(", ")
            )
        })
        .collect();
    format!(
        r#"version: 1
host: {{name: {host}}}
defaults:
  image: {IMAGE}
  health: {{exec: ["/reference-agent", "--probe", "http://127.0.0.1:8080/health"], interval: 1s, timeout: 3s, retries: 2, start_period: 10s}}
  stop_timeout: 2s
groups:
{groups}
federation:
  listen: "tcp://{ip}:7100"
  remote_commands: operate
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

fn peer(d: &Daemon, name: &str) -> serde_json::Value {
    peers(d).into_iter().find(|p| p["name"] == name).unwrap()
}

fn until_alive(d: &Daemon, name: &str) {
    d.wait_until(&format!("{name} is alive"), Duration::from_secs(60), |d| {
        peer(d, name)["state"] == "alive"
    });
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The daemon's audit lines (tracing target `audit`).
fn audit(d: &Daemon) -> Vec<String> {
    std::fs::read_to_string(&d.log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("audit=true"))
        .map(str::to_string)
        .collect()
}

#[test]
fn monitors_read_operators_operate_and_keys_rotate_at_reload() {
    if !e2e::net::available() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must be able to make network namespaces"
        );
        eprintln!("skipped: cannot make network namespaces here (needs root and iproute2)");
        return;
    }
    let lan = Lan::new(3);
    let (a, b, m) = (
        Host::new("trusta"),
        Host::new("trustb"),
        Host::new("trustm"),
    );
    let (ka, kb, km) = (keys(&a), keys(&b), keys(&m));
    let group = "  base:\n    agents:\n      A: {}\n";
    let a_peers = |b_keys: Vec<String>| {
        vec![
            P {
                name: &b.name,
                ip: lan.ip(1),
                role: "peer",
                keys: b_keys,
            },
            P {
                name: &m.name,
                ip: lan.ip(2),
                role: "monitor",
                keys: vec![km.public.clone()],
            },
        ]
    };
    let to_a = || {
        vec![P {
            name: &a.name,
            ip: lan.ip(0),
            role: "peer",
            keys: vec![ka.public.clone()],
        }]
    };
    let da = Daemon::start_in_netns(
        &a,
        &config(
            &a,
            &lan.ip(0),
            &ka.secret,
            &a_peers(vec![kb.public.clone()]),
            group,
        ),
        &lan.ns(0),
    );
    let b_text = |secret: &Path| config(&b, &lan.ip(1), secret, &to_a(), group);
    let mut db = Daemon::start_in_netns(&b, &b_text(&kb.secret), &lan.ns(1));
    let dm = Daemon::start_in_netns(
        &m,
        &config(&m, &lan.ip(2), &km.secret, &to_a(), group),
        &lan.ns(2),
    );
    until_alive(&da, &b.name);
    until_alive(&db, &a.name);
    until_alive(&dm, &a.name);
    assert_eq!(peer(&da, &m.name)["role"], "monitor");

    // (a) The monitor follows a and reads its status...
    let status: serde_json::Value =
        serde_json::from_str(&dm.ctl_ok(&["--host", &a.name, "-o", "json", "status"])).unwrap();
    assert_eq!(status["host"], a.name.as_str());
    // ...and is refused a command, clearly, with exit code 4.
    let out = dm.ctl(&["--host", &a.name, "group", "start", "base"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "host {} refuses `group_start` from peer {}: {}'s key has role monitor",
            a.name, m.name, m.name
        )),
        "{}",
        stderr(&out)
    );
    assert!(!da.groups().iter().any(|g| g.started), "nothing started");
    assert_eq!(peer(&da, &m.name)["refused_commands"], 1);
    let lines = audit(&da);
    assert!(
        lines.iter().any(|l| l.contains(&format!("peer {}", m.name))
            && l.contains("group_start base")
            && l.contains("refused")),
        "{lines:?}\n{}",
        da.log_tail(40)
    );

    // (b) A peer with `operate` starts a group on a and cannot apply there.
    db.ctl_ok(&[
        "--host",
        &a.name,
        "group",
        "start",
        "base",
        "--wait",
        "--timeout",
        "120s",
    ]);
    assert!(a.container_of("A").is_some_and(|c| c.running));
    let file = b.path("for-a.yaml");
    std::fs::copy(&da.config, &file).unwrap();
    let out = db.ctl(&["--host", &a.name, "apply", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("remote commands limited to operate"),
        "{}",
        stderr(&out)
    );
    let lines = audit(&da);
    let uid = nix::unistd::getuid().as_raw();
    assert!(
        lines.iter().any(|l| l.contains(&format!("peer {}", b.name))
            && l.contains("group_start base")
            && l.contains(&format!("uid {uid}"))
            && l.contains("done")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("apply") && l.contains("refused")),
        "{lines:?}"
    );

    // (c) b changes keys: a lists both and reloads, no peer is seen down.
    let (_, ctl) = binaries();
    let rotated = Command::new(ctl)
        .args(["keys", "rotate", &b.name, "--dir"])
        .arg(b.path("keys"))
        .output()
        .unwrap();
    assert!(rotated.status.success(), "{}", stderr(&rotated));
    let next_pub = std::fs::read_to_string(b.path(&format!("keys/{}.next.pub", b.name)))
        .unwrap()
        .trim()
        .to_string();
    let before = peer(&da, &b.name);
    let last_seq = da.events().last().map_or(0, |e| e.seq);
    std::fs::write(
        &da.config,
        config(
            &a,
            &lan.ip(0),
            &ka.secret,
            &a_peers(vec![kb.public.clone(), next_pub]),
            group,
        ),
    )
    .unwrap();
    let reloaded = da.ctl_ok(&["reload"]);
    assert!(!reloaded.contains("federation"), "{reloaded}");
    std::thread::sleep(Duration::from_secs(3));
    let after = peer(&da, &b.name);
    assert_eq!(after["state"], "alive");
    assert_eq!(after["incarnation"], before["incarnation"]);
    assert_eq!(peer(&db, &a.name)["state"], "alive");
    let downs: Vec<String> = da
        .events()
        .iter()
        .filter(|e| e.seq > last_seq && e2e::kind_name(e) == "peer-changed")
        .map(|e| format!("{:?}", e.kind))
        .collect();
    assert!(downs.is_empty(), "{downs:?}");
    // b moves to its new secret: a admits it, with b's new incarnation.
    let next_secret = b.path(&format!("keys/{}.next.key", b.name));
    std::fs::write(&db.config, b_text(&next_secret)).unwrap();
    db.terminate();
    db.spawn();
    da.wait_until("b back on its new key", Duration::from_secs(60), |d| {
        let p = peer(d, &b.name);
        p["state"] == "alive" && p["incarnation"].as_u64() > before["incarnation"].as_u64()
    });
    for h in [&a, &b, &m] {
        h.assert_no_duplicates();
    }
    drop((da, db, dm));
    drop(lan);
}
