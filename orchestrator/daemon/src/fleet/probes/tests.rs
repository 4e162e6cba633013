//! What a host publishes for its agents' health, where a peer's agent is
//! probed, and the probe loop, on a recording prober and a paused clock.

#![allow(clippy::unwrap_used)]

use std::sync::Mutex;

use orch_api::ProbeEndpoint;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::*;
use crate::event::{OwnerEvent, PeerNews};

const KEY: &str = "rq+TC5Kj0ZvUq=FX5d*[bYUKsMWnj7dGo![k3-Ne";

fn config(agents: &str, peers: &str) -> HostConfig {
    let text = format!(
        "version: 1\nhost: {{name: h1}}\ndefaults: {{image: img, health: {{http: {{port: 8080, path: /health}}, interval: 2s, timeout: 500ms, retries: 3}}}}\ngroups:\n  g:\n    agents:\n{agents}federation:\n  listen: tcp://0.0.0.0:7100\n  peers:\n{peers}"
    );
    orch_config::load_str("f.yaml", &text, &Default::default())
        .unwrap_or_else(|e| panic!("{e:?}\n{text}"))
        .config
}

fn endpoint(agent: &str, replica: u32, port: u16) -> ProbeEndpoint {
    ProbeEndpoint {
        agent: agent.into(),
        replica,
        port,
        path: "/health".into(),
        interval_ms: 2_000,
        timeout_ms: 500,
        retries: 3,
    }
}

#[test]
fn a_host_publishes_the_http_probes_its_ports_reach() {
    let c = config(
        "      Eyes: {ports: [\"18080:8080\", \"9000:9000\"]}\n      \
         Pair: {replicas: 2, ports: [\"19000-19001:8080\"]}\n      \
         Local: {ports: [\"127.0.0.1:18081:8080\"]}\n      \
         Unpublished: {}\n      \
         OtherPort: {ports: [\"18082:9090\"]}\n      \
         Udp: {ports: [\"18083:8080/udp\"]}\n      \
         Tcp: {health: {tcp: {port: 8080}}, ports: [\"18084:8080\"]}\n",
        "",
    );
    assert_eq!(
        published(&c),
        [
            endpoint("Eyes", 0, 18080),
            endpoint("Pair", 0, 19000),
            endpoint("Pair", 1, 19001),
        ]
    );
}

/// pc2's snapshot publishing `probes`, decoded as the bridge decodes it.
fn snapshot(probes: Vec<ProbeEndpoint>) -> orch_api::HostSnapshot {
    let bytes = crate::fleet::codec::snapshot_with(probes);
    crate::fleet::codec::decode_snapshot("pc2", &bytes).unwrap()
}

fn book_with(probes: Vec<ProbeEndpoint>) -> FleetBook {
    let mut book = FleetBook::new(["pc2"]);
    book.take(
        PeerNews::Snapshot {
            peer: "pc2".into(),
            incarnation: 1,
            snapshot: Box::new(snapshot(probes)),
        },
        Instant::now(),
    );
    book
}

fn wanted(pairs: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    pairs
        .iter()
        .map(|(h, a)| (h.to_string(), a.to_string()))
        .collect()
}

#[test]
fn a_peers_agent_is_probed_at_its_probe_address_or_its_endpoints_host() {
    let book = book_with(vec![
        endpoint("Eyes", 0, 18080),
        endpoint("Pair", 0, 19000),
        endpoint("Pair", 1, 19001),
    ]);
    let agents = "      A: {depends_on: [pc2/Eyes]}\n";
    let addrs = |c: &HostConfig, agent: &str| -> Vec<String> {
        targets(&wanted(&[("pc2", agent)]), c, &book)
            .get(&("pc2".to_string(), agent.to_string()))
            .map(|t| t.endpoints.iter().map(|e| e.addr.clone()).collect())
            .unwrap_or_default()
    };
    let by_endpoint = config(
        agents,
        &format!("    - {{name: pc2, endpoint: tcp://pc2.lan:7100, public_key: \"{KEY}\"}}\n"),
    );
    assert_eq!(addrs(&by_endpoint, "Eyes"), ["pc2.lan:18080"]);
    assert_eq!(
        addrs(&by_endpoint, "Pair"),
        ["pc2.lan:19000", "pc2.lan:19001"]
    );
    assert!(addrs(&by_endpoint, "Ears").is_empty(), "no endpoint");
    let by_address = config(
        agents,
        &format!(
            "    - {{name: pc2, endpoint: tcp://pc2.lan:7100, public_key: \"{KEY}\", probe_address: \"fd00::2\"}}\n"
        ),
    );
    assert_eq!(addrs(&by_address, "Eyes"), ["[fd00::2]:18080"]);
    let t = targets(&wanted(&[("pc2", "Eyes")]), &by_address, &book);
    let t = t.values().next().unwrap();
    assert_eq!(
        (
            t.interval,
            t.timeout,
            t.retries,
            t.endpoints[0].path.as_str()
        ),
        (
            Duration::from_secs(2),
            Duration::from_millis(500),
            3,
            "/health"
        )
    );
    // A host that is no peer, or a peer never heard from: nothing.
    assert!(targets(&wanted(&[("pc3", "Eyes")]), &by_endpoint, &book).is_empty());
    assert!(
        targets(
            &wanted(&[("pc2", "Eyes")]),
            &by_endpoint,
            &FleetBook::new(["pc2"])
        )
        .is_empty()
    );
}

#[test]
fn a_peers_probe_timing_is_clamped() {
    let mut fast = endpoint("Eyes", 0, 18080);
    fast.interval_ms = 1;
    fast.timeout_ms = u64::MAX;
    fast.retries = 0;
    let book = book_with(vec![fast]);
    let c = config(
        "      A: {}\n",
        &format!("    - {{name: pc2, endpoint: tcp://pc2.lan:7100, public_key: \"{KEY}\"}}\n"),
    );
    let t = targets(&wanted(&[("pc2", "Eyes")]), &c, &book);
    let t = t.values().next().unwrap();
    assert_eq!(
        (t.interval, t.timeout, t.retries),
        (MIN_INTERVAL, MAX_TIMEOUT, 1)
    );
}

/// Answers as scripted, one answer per probe (the last one repeats).
#[derive(Debug)]
struct Script(Mutex<Vec<bool>>);

#[async_trait]
impl RemoteProber for Script {
    async fn probe(&self, _: &str, _: &str, _: &RemoteEndpoint, _: Duration) -> bool {
        let mut s = self.0.lock().unwrap();
        if s.len() > 1 { s.remove(0) } else { s[0] }
    }
}

fn target(retries: u32) -> RemoteTarget {
    RemoteTarget {
        host: "pc2".into(),
        agent: "Eyes".into(),
        endpoints: vec![RemoteEndpoint {
            replica: 0,
            addr: "pc2:18080".into(),
            path: "/health".into(),
        }],
        interval: Duration::from_secs(1),
        timeout: Duration::from_millis(500),
        retries,
    }
}

#[tokio::test(start_paused = true)]
async fn the_loop_says_healthy_at_once_and_unhealthy_only_after_its_retries() {
    let answers = vec![true, true, false, false, true, false, false, false];
    let (tx, mut rx) = mpsc::channel(16);
    let task = tokio::spawn(run(
        target(3),
        Arc::new(Script(Mutex::new(answers))),
        event::Sender::new(tx),
    ));
    let mut said = Vec::new();
    while said.len() < 2 {
        match rx.recv().await {
            Some(OwnerEvent::RemoteProbe(n)) => said.push((n.host, n.agent, n.healthy)),
            other => panic!("{other:?}"),
        }
    }
    task.abort();
    // Two failures in a row are within the retries; three are not. Passes
    // after the first are no news.
    assert_eq!(
        said,
        [
            ("pc2".to_string(), "Eyes".to_string(), true),
            ("pc2".to_string(), "Eyes".to_string(), false),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn only_the_asked_for_targets_are_probed() {
    let (tx, _rx) = mpsc::channel(16);
    let prober = Arc::new(Script(Mutex::new(vec![true])));
    let mut probes = RemoteProbes::new(prober, event::Sender::new(tx));
    let key = ("pc2".to_string(), "Eyes".to_string());
    probes.set([(key.clone(), target(3))].into());
    assert_eq!(probes.probing().collect::<Vec<_>>(), [&key]);
    let (_, handle) = probes.running.get(&key).unwrap();
    let first = handle.clone();
    // The same target: the loop runs on.
    probes.set([(key.clone(), target(3))].into());
    assert!(!first.is_finished());
    // A changed one: restarted.
    probes.set([(key.clone(), target(5))].into());
    tokio::task::yield_now().await;
    assert!(first.is_finished());
    assert_eq!(probes.running.get(&key).unwrap().0.retries, 5);
    probes.set(BTreeMap::new());
    assert_eq!(probes.probing().count(), 0);
}
