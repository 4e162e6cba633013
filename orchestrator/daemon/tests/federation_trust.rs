//! What a host accepts from its peers, in process (daemons on fakes, an
//! in-memory bus, a paused clock): a monitor's key reads and changes
//! nothing, `federation.remote_commands` limits what a peer may send,
//! every remote command is audited, request bodies are bounded by kind,
//! and `reload` takes new peers, keys and limits without a peer going
//! down.

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orch_api::{ApiError, ClientError, Envelope, ErrorCode, Operator, PeerState, Reply, Request};
use orch_daemon::testing::{Harness, World};
use orch_federation::{Bus as _, MemBus, MemNetwork, SecretKey};

fn key() -> String {
    SecretKey::generate().unwrap().public().to_z85()
}

/// A peer entry: name, role, and its keys.
struct P<'a> {
    name: &'a str,
    role: &'a str,
    keys: Vec<String>,
}

fn peer<'a>(name: &'a str, role: &'a str, key: &str) -> P<'a> {
    P {
        name,
        role,
        keys: vec![key.to_string()],
    }
}

/// Host `name` with one group `g`, these peers and `remote_commands`.
fn config(name: &str, peers: &[P<'_>], remote_commands: &str) -> String {
    let list: Vec<String> = peers
        .iter()
        .map(|p| {
            let keys = if p.keys.len() == 1 {
                format!("public_key: \"{}\"", p.keys[0])
            } else {
                format!(
                    "public_keys: [{}]",
                    p.keys
                        .iter()
                        .map(|k| format!("\"{k}\""))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            format!(
                "{{name: {n}, endpoint: \"tcp://{n}:7100\", role: {r}, {keys}}}",
                n = p.name,
                r = p.role
            )
        })
        .collect();
    format!(
        r#"version: 1
host: {{name: {name}}}
defaults:
  image: orchestrator-agent:latest
  health: {{http: {{port: 8080}}, interval: 500ms, timeout: 1s, retries: 2, start_period: 5s}}
  stop_timeout: 2s
groups:
  g:
    agents:
      A: {{}}
federation:
  listen: "tcp://0.0.0.0:7100"
  remote_commands: {remote_commands}
  peers: [{}]
"#,
        list.join(", ")
    )
}

async fn settle(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

async fn peer_status(h: &Harness, peer: &str) -> orch_api::PeerStatus {
    h.client
        .peers()
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.name == peer)
        .unwrap()
}

async fn until_peer(h: &Harness, peer: &str, want: PeerState) {
    for _ in 0..600 {
        if peer_status(h, peer).await.state == want {
            return;
        }
        settle(50).await;
    }
    panic!("{peer} never became {want:?}");
}

/// A bus of our own on `net` for host `name` (not a daemon): a monitor,
/// or a peer that says what it likes.
fn raw_bus(net: &MemNetwork, name: &str, peers: &[P<'_>]) -> MemBus {
    let c = orch_config::load_str(
        "raw.yaml",
        &config(name, peers, "operate"),
        &Default::default(),
    )
    .unwrap()
    .config;
    let bus =
        orch_federation::BusConfig::from_model(name, c.federation.as_ref().unwrap(), 1).unwrap();
    let (bus, inbox) = net.join(bus);
    // Nobody reads what comes in; the bus bounds it.
    std::mem::forget(inbox);
    bus
}

async fn ask(bus: &MemBus, host: &str, body: Vec<u8>) -> Result<orch_api::Response, ApiError> {
    // Not reached yet: said as the daemon would.
    let reply = bus
        .request(host, body.into(), None, Duration::from_secs(5))
        .await
        .map_err(|e| ApiError::new(ErrorCode::HostUnreachable, e.to_string()))?;
    let reply: Reply = serde_json::from_slice(&reply).unwrap();
    reply.into()
}

fn envelope(request: Request, operator: Option<Operator>) -> Vec<u8> {
    let mut e = Envelope::new(None, request);
    e.operator = operator;
    serde_json::to_vec(&e).unwrap()
}

fn root() -> Option<Operator> {
    Some(Operator {
        uid: 0,
        gid: 0,
        groups: Vec::new(),
        user: Some("root".into()),
        group: Some("root".into()),
    })
}

/// The log lines of target `audit`, captured while the returned guard
/// lives (every task of a test runs on its thread).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn lines(&self) -> Vec<String> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_audit() -> (Captured, tracing::subscriber::DefaultGuard) {
    let out = Captured::default();
    let writer = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("audit=info"))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    (out, guard)
}

#[tokio::test(start_paused = true)]
async fn a_monitor_reads_but_its_commands_are_refused_counted_and_audited() {
    let (audit, _guard) = capture_audit();
    let net = MemNetwork::new();
    let (k_alpha, k_mon) = (key(), key());
    let a = Harness::start_in(
        World::new().on(&net),
        &config("alpha", &[peer("mon", "monitor", &k_mon)], "admin"),
    )
    .await;
    let mon = raw_bus(&net, "mon", &[peer("alpha", "peer", &k_alpha)]);

    // It reads: status, answered by alpha.
    let mut status = None;
    for _ in 0..100 {
        if let Ok(orch_api::Response::Status(s)) =
            ask(&mon, "alpha", envelope(Request::Status, None)).await
        {
            status = Some(s);
            break;
        }
        settle(100).await;
    }
    assert_eq!(status.expect("the monitor reads status").host, "alpha");

    // It changes nothing, even as root and with `remote_commands: admin`.
    let e = ask(
        &mon,
        "alpha",
        envelope(Request::GroupStart { group: "g".into() }, root()),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::Forbidden);
    assert_eq!(
        e.message,
        "host alpha refuses `group_start` from peer mon: mon's key has role monitor on alpha, which may only read"
    );
    settle(200).await;
    assert!(!a.status().await.groups[0].started, "nothing was started");
    let seen = peer_status(&a, "mon").await;
    assert_eq!(seen.role, "monitor");
    assert_eq!(seen.refused_commands, 1);
    // In /metrics (published on its interval) as the alert reads it.
    settle(1500).await;
    let text = a.metrics().await;
    assert!(
        text.lines().any(|l| l
            == r#"orchestrator_federation_refused_total{host="alpha",peer="mon",reason="command"} 1"#),
        "{}",
        text.lines()
            .filter(|l| l.contains("refused"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The federation families pass `promtool check metrics` too, when it
    // is installed (tests/observability/setup.sh; CI has it).
    if let Ok(mut child) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
            "promtool: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        eprintln!("promtool is not installed; skipping the promtool check");
    }

    let lines = audit.lines();
    let line = lines
        .iter()
        .find(|l| l.contains("group_start g"))
        .unwrap_or_else(|| panic!("no audit line: {lines:?}"));
    assert!(line.contains("peer mon"), "{line}");
    assert!(line.contains("uid 0 (root)"), "{line}");
    assert!(line.contains("refused"), "{line}");
    assert!(line.contains("role=\"monitor\""), "{line}");
    // Reads are not audited.
    assert!(!lines.iter().any(|l| l.contains("status")), "{lines:?}");

    // A flood of refused commands is counted whole and logged at a
    // limited rate: the next line, a minute on, says how many it held back.
    let stop = || {
        envelope(
            Request::GroupStop {
                group: "g".into(),
                with_dependents: false,
            },
            root(),
        )
    };
    for _ in 0..5 {
        assert!(ask(&mon, "alpha", stop()).await.is_err());
    }
    assert_eq!(peer_status(&a, "mon").await.refused_commands, 6);
    let stops = |lines: Vec<String>| {
        lines
            .into_iter()
            .filter(|l| l.contains("group_stop g"))
            .count()
    };
    assert_eq!(stops(audit.lines()), 0, "held back within the minute");
    settle(61_000).await;
    assert!(ask(&mon, "alpha", stop()).await.is_err());
    let lines = audit.lines();
    assert_eq!(stops(lines.clone()), 1);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("group_stop g") && l.contains("held_back=5")),
        "{lines:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_peer_with_operate_starts_a_group_and_cannot_apply() {
    let (audit, _guard) = capture_audit();
    let net = MemNetwork::new();
    let (k_alpha, k_beta) = (key(), key());
    let a = Harness::start_in(
        World::new().on(&net),
        &config("alpha", &[peer("beta", "peer", &k_beta)], "operate"),
    )
    .await;
    let beta_text = config("beta", &[peer("alpha", "peer", &k_alpha)], "operate");
    let b = Harness::start_in(World::new().on(&net), &beta_text).await;
    until_peer(&a, "beta", PeerState::Alive).await;
    until_peer(&b, "alpha", PeerState::Alive).await;

    let remote = a.client.clone().for_host(Some("beta".into()));
    let accepted = remote.group_start("g").await.unwrap();
    assert_eq!(accepted.groups, ["g"]);
    let refused = remote.apply("beta.yaml", &beta_text).await.unwrap_err();
    let ClientError::Api(e) = refused else {
        panic!("{refused:?}")
    };
    assert_eq!(e.code, ErrorCode::Forbidden);
    assert_eq!(
        e.message,
        "host beta refuses `apply` from peer alpha: remote commands limited to operate (`federation.remote_commands: operate` on beta); run it on beta itself"
    );
    let refused = remote.reload().await.unwrap_err();
    assert!(matches!(&refused, ClientError::Api(e) if e.code == ErrorCode::Forbidden));
    assert_eq!(peer_status(&b, "alpha").await.refused_commands, 2);

    // Both audited on beta, with the operator alpha saw on its socket.
    let uid = nix::unistd::getuid().as_raw();
    let lines = audit.lines();
    let start = lines
        .iter()
        .find(|l| l.contains("group_start g") && l.contains(": done"))
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert!(start.contains(&format!("uid {uid}")), "{start}");
    assert!(start.contains("peer alpha"), "{start}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("apply beta.yaml") && l.contains("refused")),
        "{lines:?}"
    );
}

/// Sends raw HTTP on the control socket and returns the status line and
/// body of the answer.
async fn raw_http(socket: &std::path::Path, head: &str, body: &[u8]) -> (String, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::UnixStream::connect(socket).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    // The daemon may answer and close before the body is all sent: that
    // is the refusal this module tests.
    let _ = s.write_all(body).await;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // The answer is read up to its end; the connection may stay open.
    loop {
        let n = s.read(&mut chunk).await.unwrap();
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some((h, b)) = text.split_once("\r\n\r\n") {
            let len = h
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_string)
                })
                .and_then(|v| v.trim().parse::<usize>().ok());
            if len.is_some_and(|n| b.len() >= n) {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

#[tokio::test(start_paused = true)]
async fn request_bodies_over_their_kinds_bound_are_refused() {
    let net = MemNetwork::new();
    let (k_alpha, k_beta) = (key(), key());
    let a = Harness::start_in(
        World::new().on(&net),
        &config("alpha", &[peer("beta", "peer", &k_beta)], "operate"),
    )
    .await;
    let socket = a.socket();

    // A plan announcing more than 4 MiB is refused before its body is
    // sent at all: the answer comes with nothing read.
    let over = 4 * 1024 * 1024 + 1;
    let (status, body) = raw_http(
        &socket,
        &format!(
            "POST /v1/plan HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {over}\r\n\r\n"
        ),
        b"",
    )
    .await;
    assert!(status.contains(" 400 "), "{status}");
    let e: ApiError = serde_json::from_str(&body).unwrap();
    assert_eq!(e.code, ErrorCode::BadRequest);
    assert_eq!(
        e.message,
        "the request body is over the limit of apply, plan, config diff and state import (4 MiB); nothing past it was read"
    );

    // A config text that is not announced (chunked) is cut at the bound.
    let mut chunked = Vec::new();
    let piece = vec![b' '; 1024 * 1024];
    for _ in 0..5 {
        write!(chunked, "{:x}\r\n", piece.len()).unwrap();
        chunked.extend_from_slice(&piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let (status, body) = raw_http(
        &socket,
        "POST /v1/apply HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        &chunked,
    )
    .await;
    assert!(status.contains(" 400 "), "{status}");
    assert!(
        body.contains("limit of apply, plan, config diff and state import (4 MiB)"),
        "{body}"
    );

    // Any other request: 64 KiB.
    let big = vec![b' '; 64 * 1024 + 1];
    let (status, body) = raw_http(
        &socket,
        &format!(
            "POST /v1/groups/g/stop HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            big.len()
        ),
        &big,
    )
    .await;
    assert!(status.contains(" 400 "), "{status}");
    assert!(body.contains("limit of a request (64 KiB)"), "{body}");
    // At the bound it is read (and is an empty body to the route).
    let fits = vec![b' '; 64 * 1024];
    let (status, _) = raw_http(
        &socket,
        &format!(
            "POST /v1/groups/g/stop HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            fits.len()
        ),
        &fits,
    )
    .await;
    assert!(status.contains(" 202 "), "{status}");

    // Over the bus: a request other than a config one over 64 KiB.
    let beta = raw_bus(&net, "beta", &[peer("alpha", "peer", &k_alpha)]);
    until_peer(&a, "beta", PeerState::Alive).await;
    let mut padded = serde_json::to_value(Envelope::new(None, Request::Status)).unwrap();
    padded["pad"] = serde_json::Value::String("x".repeat(64 * 1024));
    let e = ask(&beta, "alpha", serde_json::to_vec(&padded).unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::BadRequest);
    assert!(
        e.message.contains("limit of a request (64 KiB)"),
        "{}",
        e.message
    );
    // Counted against the peer as over its budget.
    let seen = peer_status(&a, "beta").await;
    assert_eq!(seen.over_budget, 1);
    // The same request, small, is answered.
    assert!(
        ask(&beta, "alpha", envelope(Request::Status, None))
            .await
            .is_ok()
    );
}

#[tokio::test(start_paused = true)]
async fn reload_takes_new_keys_peers_and_limits_with_no_peer_seen_down() {
    let net = MemNetwork::new();
    let (k_alpha, k_beta, k_beta_new, k_gamma) = (key(), key(), key(), key());
    let a = Harness::start_in(
        World::new().on(&net),
        &config("alpha", &[peer("beta", "peer", &k_beta)], "operate"),
    )
    .await;
    let b = Harness::start_in(
        World::new().on(&net),
        &config("beta", &[peer("alpha", "peer", &k_alpha)], "operate"),
    )
    .await;
    until_peer(&a, "beta", PeerState::Alive).await;
    until_peer(&b, "alpha", PeerState::Alive).await;
    let before = peer_status(&a, "beta").await;

    // beta changes keys (old and new both admitted), gamma joins as a
    // monitor, and alpha takes no more commands from peers.
    let rotated = config(
        "alpha",
        &[
            P {
                name: "beta",
                role: "peer",
                keys: vec![k_beta.clone(), k_beta_new.clone()],
            },
            peer("gamma", "monitor", &k_gamma),
        ],
        "none",
    );
    std::fs::write(a.config_path(), &rotated).unwrap();
    let applied = a.client.reload().await.unwrap();
    assert!(
        !applied.warnings.iter().any(|w| w.contains("federation")),
        "no restart asked: {:?}",
        applied.warnings
    );
    let peers = a.client.peers().await.unwrap();
    let names: Vec<&str> = peers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["beta", "gamma"]);
    assert_eq!(peers[1].role, "monitor");

    // remote_commands: none, taken at once.
    let remote = b.client.clone().for_host(Some("alpha".into()));
    let e = remote.group_start("g").await.unwrap_err();
    let ClientError::Api(e) = e else {
        panic!("{e:?}")
    };
    assert_eq!(e.code, ErrorCode::Forbidden);
    assert!(
        e.message.contains("remote commands are off"),
        "{}",
        e.message
    );

    // Neither side saw the other go: the same incarnation, never down,
    // and no peer change in either history.
    settle(3000).await;
    let after = peer_status(&a, "beta").await;
    assert_eq!(after.state, PeerState::Alive);
    assert_eq!(after.incarnation, before.incarnation);
    assert!(after.messages_in > before.messages_in, "still heard from");
    assert_eq!(peer_status(&b, "alpha").await.state, PeerState::Alive);
    for h in [&a, &b] {
        let changes: Vec<String> = h
            .events()
            .await
            .iter()
            .filter(|e| e.kind.name() == "peer-changed")
            .map(|e| format!("{:?}", e.kind))
            .collect();
        assert!(
            changes
                .iter()
                .all(|c| !c.contains("Down") && !c.contains("Suspect")),
            "{changes:?}"
        );
    }

    // A key list the bus cannot take (one key for two peers) is refused
    // whole: the running config and peers stay.
    let shared = config(
        "alpha",
        &[
            peer("beta", "peer", &k_beta),
            peer("gamma", "monitor", &k_beta),
        ],
        "operate",
    );
    std::fs::write(a.config_path(), &shared).unwrap();
    let e = a.client.reload().await.unwrap_err();
    assert!(
        matches!(&e, ClientError::Api(e) if e.code == ErrorCode::InvalidConfig),
        "{e:?}"
    );
    assert_eq!(a.client.peers().await.unwrap().len(), 2);
    let e = remote.group_start("g").await.unwrap_err();
    assert!(e.to_string().contains("remote commands are off"), "{e}");
}
