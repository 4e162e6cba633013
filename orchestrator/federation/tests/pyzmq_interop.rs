//! Interop: a pyzmq client written from docs/federation.md alone
//! (`tests/federation/pyzmq_peer.py`) follows a `ZmqBus` over CURVE,
//! decodes its heartbeats and snapshot, and gets a reply to a request.
//!
//! Needs python3 with venv; `tests/federation/setup-venv.sh` installs the
//! pinned pyzmq into `target/py-venv`. Without them the test is skipped,
//! except under CI (`CI` set), where it fails.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use orch_federation::{
    Bus, BusConfig, Inbound, PeerConfig, PeerState, PublicKey, SecretKey, Timing, ZmqBus,
};
use serde_json::{Value, json};

fn j(value: Value) -> orch_federation::Bytes {
    serde_json::to_vec(&value).expect("JSON").into()
}

fn v(body: &[u8]) -> Value {
    serde_json::from_slice(body).expect("a JSON body")
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The venv's python, or `None` (outside CI) when it cannot be set up.
fn python() -> Option<PathBuf> {
    let root = repo_root();
    let out = Command::new(root.join("tests/federation/setup-venv.sh"))
        .stderr(Stdio::inherit())
        .output();
    let failure = match out {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout);
            if let Some(line) = text.lines().last() {
                return Some(PathBuf::from(line.trim()));
            }
            "setup-venv.sh printed nothing".to_owned()
        }
        Ok(o) => format!("setup-venv.sh failed: {}", o.status),
        Err(e) => format!("cannot run setup-venv.sh: {e}"),
    };
    assert!(
        std::env::var_os("CI").is_none(),
        "the pyzmq interop check needs Python tools: {failure}"
    );
    eprintln!("skipping the pyzmq interop check: {failure}");
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pyzmq_client_follows_a_bus_and_gets_a_reply() {
    let Some(python) = python() else {
        return;
    };
    let client = zmq::CurveKeyPair::new().expect("CURVE");
    let client_public = PublicKey::from_bytes(client.public_key);
    let client_secret = orch_federation::keys::z85_encode_key(&client.secret_key);
    let key = SecretKey::generate().expect("CURVE");
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let config = BusConfig {
        host: "mainpc".into(),
        incarnation: 1_234_567,
        listen: format!("tcp://127.0.0.1:{port}"),
        peers: vec![PeerConfig::new(
            "monitor",
            "tcp://127.0.0.1:9",
            client_public,
        )],
        timing: Timing {
            heartbeat_ms: 100,
            suspect_after: 2,
            down_after: 4,
        },
        limits: orch_federation::Limits::default(),
    };
    let (bus, mut inbox) = ZmqBus::start(config, &key).expect("start");
    bus.publish_snapshot(j(json!({"groups": {"infra_core": "running"}})), None)
        .expect("publish");

    let script = repo_root().join("tests/federation/pyzmq_peer.py");
    let child = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(bus.local_endpoint())
        .arg(key.public().to_z85())
        .arg(&client_secret)
        .arg(client_public.to_z85())
        .arg("monitor")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python");

    let mut alive = false;
    let mut trace = None;
    let serve = async {
        while let Some(item) = inbox.recv().await {
            match item {
                Inbound::PeerChanged(c) if c.peer == "monitor" => {
                    alive |= c.state == PeerState::Alive;
                }
                Inbound::Request(r) => {
                    assert_eq!(r.from, "monitor");
                    trace = r.trace.clone();
                    let body = v(&r.body);
                    r.reply(j(json!({"pong": body}))).expect("reply");
                    return;
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), serve)
        .await
        .expect("the python client sent a request");
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("python finished")
        .expect("python ran");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python failed: {stderr}");
    assert!(alive, "the bus saw the python client alive");
    assert_eq!(
        trace.map(|t| t.traceparent().to_owned()).as_deref(),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    );

    let seen: Value = serde_json::from_slice(&out.stdout).expect("python printed JSON");
    assert_eq!(seen["heartbeat"]["host"], "mainpc");
    assert_eq!(seen["heartbeat"]["incarnation"], 1_234_567);
    assert_eq!(seen["snapshot"]["host"], "mainpc");
    assert_eq!(seen["snapshot"]["incarnation"], 1_234_567);
    assert_eq!(seen["snapshot"]["sequence"], 1);
    assert_eq!(
        seen["snapshot"]["body"],
        json!({"groups": {"infra_core": "running"}})
    );
    assert_eq!(seen["reply"], json!({"pong": {"v": 1, "op": "status"}}));
    let monitor = &bus.peers()[0];
    assert_eq!(monitor.decode_errors(), 0, "{monitor:?}");
}
