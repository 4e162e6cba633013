//! The peer book as tables: news in, what it keeps and shows out.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use orch_api::wire::{Health, Phase};
use orch_api::{
    AgentCounts, AgentStatus, DockerStatus, Event, EventKind, GpuReport, GpuSummary, GroupState,
    GroupStatus, HostSnapshot, PeerState, Status,
};
use orch_core::supervise::{RemoteHost, RemoteView};
use tokio::time::Instant;

use super::*;

fn event(seq: u64) -> Event {
    Event {
        host: "pc2".into(),
        seq,
        time_ms: seq,
        kind: EventKind::DockerUp,
    }
}

/// `pc2` with `ready` groups and agents `(name, running healthy, crashloop)`.
fn snapshot(ready: &[&str], agents: &[(&str, bool, bool)]) -> HostSnapshot {
    let group = |name: &str, state| GroupStatus {
        name: name.into(),
        description: None,
        started: true,
        state,
        wanted: 1,
        running: 1,
        healthy: 1,
        depends_on: vec![],
        agents: vec![],
        optional_not_ready: vec![],
    };
    HostSnapshot {
        status: Status {
            host: "pc2".into(),
            last_event_seq: 0,
            version: "0".into(),
            pid: 1,
            uptime_ms: 0,
            config_path: String::new(),
            generation: 1,
            docker: DockerStatus {
                connected: true,
                endpoint: String::new(),
                engine_version: None,
                api_version: None,
                gpu_injection: "env".into(),
            },
            gpu: GpuSummary {
                available: false,
                reason: None,
                gpus: 0,
                slices: 0,
            },
            groups: ready
                .iter()
                .map(|g| group(g, GroupState::Ready))
                .chain([group("starting", GroupState::Starting)])
                .collect(),
            agents: AgentCounts::default(),
            state: Default::default(),
            scaled: Vec::new(),
        },
        agents: agents
            .iter()
            .map(|(name, ok, crashloop)| AgentStatus {
                group: "g".into(),
                agent: name.to_string(),
                replica: 0,
                phase: if *ok { Phase::Running } else { Phase::Starting },
                pending: None,
                health: if *ok {
                    Health::Healthy
                } else {
                    Health::Unknown
                },
                container: None,
                image: String::new(),
                restarts: 0,
                crashloop: *crashloop,
                required: true,
                slice: None,
                ports: vec![],
                config_hash: None,
                scaled: None,
                autoscale: None,
                remote: vec![],
                gpu_use: None,
                cpu_percent: None,
                cpu_limit_percent: None,
            })
            .collect(),
        gpu: GpuReport {
            available: false,
            reason: None,
            library: None,
            driver_version: None,
            gpus: vec![],
        },
        slo: None,
        probes: vec![],
    }
}

fn events(seqs: std::ops::RangeInclusive<u64>, size: usize) -> PeerNews {
    PeerNews::Events {
        peer: "pc2".into(),
        events: seqs.map(|s| (event(s), size)).collect(),
    }
}

fn state(state: PeerState, incarnation: u64) -> PeerNews {
    PeerNews::State {
        peer: "pc2".into(),
        state,
        incarnation,
    }
}

/// What the book holds of `pc2`, in a line: state, incarnation, kept
/// event numbers, kept bytes, refused bodies.
fn line(book: &FleetBook) -> String {
    let p = book.get("pc2").unwrap();
    let seqs: Vec<String> = book
        .events_since("pc2", 0)
        .unwrap()
        .iter()
        .map(|e| e.seq.to_string())
        .collect();
    format!(
        "{} inc={:?} events=[{}] bytes={} refused={}",
        p.state.as_str(),
        p.incarnation,
        seqs.join(","),
        p.kept_bytes(),
        p.refused
    )
}

#[track_caller]
fn check(news: Vec<PeerNews>, expect: &str) {
    let mut book = FleetBook::new(["pc2"]);
    let now = Instant::now();
    for n in news {
        book.take(n, now);
    }
    assert_eq!(line(&book), expect);
}

#[test]
fn what_the_book_keeps_of_a_peer() {
    check(vec![], "unknown inc=None events=[] bytes=0 refused=0");
    check(
        vec![state(PeerState::Alive, 7), events(1..=3, 100)],
        "alive inc=Some(7) events=[1,2,3] bytes=300 refused=0",
    );
    // A restarted peer numbers its events anew: the old ones go.
    check(
        vec![
            state(PeerState::Alive, 7),
            events(1..=3, 100),
            state(PeerState::Alive, 8),
            events(1..=1, 50),
        ],
        "alive inc=Some(8) events=[1] bytes=50 refused=0",
    );
    check(
        vec![
            PeerNews::Refused {
                peer: "pc2".into(),
                reason: Refused::Impostor,
                bodies: 2,
            },
            PeerNews::Refused {
                peer: "pc2".into(),
                reason: Refused::Command,
                bodies: 1,
            },
        ],
        "unknown inc=None events=[] bytes=0 refused=3",
    );
    // News of a host that is no peer changes nothing.
    check(
        vec![PeerNews::Refused {
            peer: "stranger".into(),
            reason: Refused::Undecodable,
            bodies: 1,
        }],
        "unknown inc=None events=[] bytes=0 refused=0",
    );
}

#[test]
fn a_peer_history_past_its_byte_budget_loses_its_oldest_events() {
    let size = KEEP_BYTES / 4;
    check(
        vec![events(1..=4, size)],
        &format!("unknown inc=None events=[1,2,3,4] bytes={KEEP_BYTES} refused=0"),
    );
    check(
        vec![events(1..=6, size)],
        &format!("unknown inc=None events=[3,4,5,6] bytes={KEEP_BYTES} refused=0"),
    );
    // One byte over drops one more event.
    check(
        vec![events(1..=3, size), events(4..=4, size + 1)],
        &format!(
            "unknown inc=None events=[2,3,4] bytes={} refused=0",
            3 * size + 1
        ),
    );
}

#[test]
fn a_peer_history_past_its_count_loses_its_oldest_events() {
    let mut book = FleetBook::new(["pc2"]);
    let n = KEEP_EVENTS as u64 + 10;
    let fresh = book.take(events(1..=n, 1), Instant::now());
    assert_eq!(fresh.len() as u64, n, "followers see every event");
    let kept = book.events_since("pc2", 0).unwrap();
    assert_eq!(kept.len(), KEEP_EVENTS);
    assert_eq!(kept[0].seq, 11);
    assert_eq!(
        book.events_since("pc2", n - 1).unwrap().len(),
        2,
        "from a number on"
    );
    assert_eq!(book.events_since("stranger", 0), None);
}

#[test]
fn what_cross_host_dependencies_see_of_a_peer() {
    let ready = snapshot(
        &["infra"],
        &[
            ("Reg", true, false),
            ("Loop", true, true),
            ("New", false, false),
        ],
    );
    let up = RemoteHost::Up(RemoteView {
        ready_agents: ["Reg".to_string()].into(),
        ready_groups: ["infra".to_string()].into(),
        ..RemoteView::default()
    });
    let cases: Vec<(&str, Vec<PeerNews>, RemoteHost)> = vec![
        ("never heard from", vec![], RemoteHost::Unknown),
        (
            "alive without a snapshot",
            vec![state(PeerState::Alive, 1)],
            RemoteHost::Unknown,
        ),
        (
            "alive with a snapshot",
            vec![
                state(PeerState::Alive, 1),
                PeerNews::Snapshot {
                    peer: "pc2".into(),
                    incarnation: 1,
                    snapshot: Box::new(ready.clone()),
                },
            ],
            up.clone(),
        ),
        (
            "suspect keeps what it knew",
            vec![
                PeerNews::Snapshot {
                    peer: "pc2".into(),
                    incarnation: 1,
                    snapshot: Box::new(ready.clone()),
                },
                state(PeerState::Suspect, 1),
            ],
            up,
        ),
        (
            "down, whatever its snapshot said",
            vec![
                PeerNews::Snapshot {
                    peer: "pc2".into(),
                    incarnation: 1,
                    snapshot: Box::new(ready),
                },
                state(PeerState::Down, 1),
            ],
            RemoteHost::Down,
        ),
    ];
    for (what, news, want) in cases {
        let mut book = FleetBook::new(["pc2"]);
        for n in news {
            book.take(n, Instant::now());
        }
        assert_eq!(book.remote_state("pc2"), want, "{what}");
    }
    assert_eq!(
        FleetBook::new(["pc2"]).remote_state("other"),
        RemoteHost::Unknown
    );
}

#[test]
fn a_host_view_carries_the_snapshot_age() {
    let mut book = FleetBook::new(["pc2"]);
    let at = Instant::now();
    book.take(
        PeerNews::Snapshot {
            peer: "pc2".into(),
            incarnation: 3,
            snapshot: Box::new(snapshot(&[], &[])),
        },
        at,
    );
    let hosts = book.hosts(at + Duration::from_millis(1500));
    assert_eq!(hosts.len(), 1);
    assert_eq!(
        (
            hosts[0].host.as_str(),
            hosts[0].incarnation,
            hosts[0].snapshot_age_ms
        ),
        ("pc2", Some(3), Some(1500))
    );
    assert!(hosts[0].snapshot.is_some());
}

#[test]
fn the_detector_words_read_on_the_wire() {
    use orch_federation::PeerState as B;
    for (bus, wire) in [
        (B::Unknown, PeerState::Unknown),
        (B::Alive, PeerState::Alive),
        (B::Suspect, PeerState::Suspect),
        (B::Down, PeerState::Down),
    ] {
        assert_eq!(peer_state(bus), wire);
        assert_eq!(bus.label(), wire.as_str());
    }
}

#[test]
fn an_agent_running_unprobed_on_a_restarted_peer_is_pending_not_failed() {
    let mut s = snapshot(&[], &[("Eyes", true, false), ("Sick", true, false)]);
    // Adopted by a restarted daemon: running, not probed yet.
    s.agents[0].health = Health::Unknown;
    s.agents[1].health = Health::Unhealthy;
    let view = orch_api::convert::remote_view(&s);
    assert!(view.ready_agents.is_empty(), "{view:?}");
    assert_eq!(
        view.pending_agents,
        ["Eyes".to_string()].into(),
        "an unhealthy agent is not pending"
    );
}
