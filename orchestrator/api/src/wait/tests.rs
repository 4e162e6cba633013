//! Event sequences in, verdicts out.

use super::*;
use crate::wire::{GpuWant, PlanAttempt};

fn r(agent: &str) -> ReplicaRef {
    ReplicaRef {
        agent: agent.into(),
        replica: 0,
    }
}

fn group(name: &str, state: GroupState) -> GroupStatus {
    GroupStatus {
        name: name.into(),
        description: None,
        started: state != GroupState::Stopped,
        state,
        wanted: 0,
        running: 0,
        healthy: 0,
        depends_on: vec![],
        agents: vec![],
        optional_not_ready: vec![],
    }
}

fn agent(group: &str, name: &str, phase: Phase, required: bool) -> AgentStatus {
    AgentStatus {
        group: group.into(),
        agent: name.into(),
        replica: 0,
        phase,
        pending: None,
        health: Health::Unknown,
        container: None,
        image: "img".into(),
        restarts: 0,
        crashloop: false,
        required,
        slice: None,
        ports: vec![],
        config_hash: None,
        scaled: None,
        autoscale: None,
        remote: vec![],
        gpu_use: None,
        cpu_percent: None,
        cpu_limit_percent: None,
    }
}

fn peer(name: &str, state: PeerState) -> PeerStatus {
    PeerStatus {
        name: name.into(),
        endpoint: "tcp://x:1".into(),
        state,
        incarnation: None,
        last_heartbeat_age_ms: None,
        snapshot_age_ms: None,
        messages_in: 0,
        messages_out: 0,
        decode_errors: 0,
        role: "peer".into(),
        refused_connections: 0,
        impostors: 0,
        unexpected: 0,
        inbox_drops: 0,
        over_budget: 0,
        refused_commands: 0,
    }
}

fn ev(seq: u64, kind: EventKind) -> Event {
    Event {
        host: "h".into(),
        seq,
        time_ms: 0,
        kind,
    }
}

fn no_gpu(agent: &str) -> FailReason {
    FailReason::NoGpuCapacity {
        error: Box::new(PlanError {
            replica: r(agent),
            attempts: vec![PlanAttempt {
                wanted: GpuWant::Exclusive,
                refusals: vec![],
            }],
        }),
    }
}

use EventKind as K;

fn g(s: &str) -> String {
    s.into()
}

/// `base` (Flaky, Mid; optional Opt) starting from seq 10, nothing healthy.
fn starting() -> (Vec<GroupStatus>, Vec<AgentStatus>) {
    (
        vec![
            group("base", GroupState::Starting),
            group("other", GroupState::Stopped),
        ],
        vec![
            agent("base", "Flaky", Phase::Starting, true),
            agent("base", "Mid", Phase::Pending, true),
            agent("base", "Opt", Phase::Pending, false),
            agent("other", "X", Phase::Stopped, true),
        ],
    )
}

fn run(
    goal: Goal,
    start: (Vec<GroupStatus>, Vec<AgentStatus>),
    peers: &[PeerStatus],
    events: &[Event],
) -> Waiter {
    let (groups, agents) = start;
    let mut w = Waiter::new(
        goal,
        &[g("base")],
        Start {
            seq: 10,
            groups: &groups,
            agents: &agents,
            peers,
        },
    );
    for e in events {
        w.take(e);
    }
    w
}

#[test]
fn verdicts_from_event_sequences() {
    let ready = |s| ev(s, K::GroupReady { group: g("base") });
    let crash = |s, a: &str| {
        ev(
            s,
            K::AgentCrashLoop {
                replica: r(a),
                group: g("base"),
                restarts: 3,
                window_ms: 60_000,
            },
        )
    };
    let failed = |s, a: &str| {
        ev(
            s,
            K::AgentFailed {
                replica: r(a),
                group: g("base"),
                reason: no_gpu(a),
            },
        )
    };
    let cases: Vec<(&str, Vec<Event>, Verdict)> = vec![
        ("no events", vec![], Verdict::Waiting),
        (
            "the group becomes ready",
            vec![ready(11)],
            Verdict::Done { at: 11 },
        ),
        (
            "a ready at or before the start is already counted",
            vec![ready(9), ready(10)],
            Verdict::Waiting,
        ),
        (
            "a required agent crash-loops",
            vec![crash(11, "Mid"), ready(12)],
            Verdict::CrashLoop {
                group: g("base"),
                replica: r("Mid"),
            },
        ),
        (
            "an optional agent's crash loop does not end the wait",
            vec![crash(11, "Opt"), ready(12)],
            Verdict::Done { at: 12 },
        ),
        (
            "a required agent's GPU request cannot be placed",
            vec![failed(11, "Flaky")],
            Verdict::Unplaceable {
                group: g("base"),
                replica: r("Flaky"),
                error: match no_gpu("Flaky") {
                    FailReason::NoGpuCapacity { error } => error,
                    _ => unreachable!(),
                },
            },
        ),
        (
            "an optional agent's unplaceable request does not end the wait",
            vec![failed(11, "Opt")],
            Verdict::Waiting,
        ),
        (
            "another group's crash loop is not ours",
            vec![ev(
                11,
                K::AgentCrashLoop {
                    replica: r("X"),
                    group: g("other"),
                    restarts: 3,
                    window_ms: 1,
                },
            )],
            Verdict::Waiting,
        ),
        (
            "a verdict is final",
            vec![ready(11), crash(12, "Mid")],
            Verdict::Done { at: 11 },
        ),
        (
            "a crash loop at or before the start that the start shows over",
            vec![crash(9, "Mid")],
            Verdict::Waiting,
        ),
    ];
    for (name, events, verdict) in cases {
        let w = run(Goal::Ready, starting(), &[], &events);
        assert_eq!(w.verdict(), &verdict, "{name}");
    }
}

#[test]
fn a_stop_wait_is_done_when_every_group_is_stopped_and_ignores_crash_loops() {
    let events = [
        ev(
            11,
            K::AgentCrashLoop {
                replica: r("Mid"),
                group: g("base"),
                restarts: 3,
                window_ms: 1,
            },
        ),
        ev(12, K::GroupStopping { group: g("base") }),
        ev(
            13,
            K::AgentStopped {
                replica: r("Flaky"),
                group: g("base"),
            },
        ),
    ];
    let mut w = run(Goal::Stopped, starting(), &[], &events);
    assert_eq!(w.verdict(), &Verdict::Waiting);
    assert_eq!(w.progress().running, 0, "Mid never started, Flaky stopped");
    w.take(&ev(14, K::GroupStopped { group: g("base") }));
    assert_eq!(w.verdict(), &Verdict::Done { at: 14 });
    assert!(w.finished());
}

#[test]
fn the_start_decides_when_it_already_shows_the_goal_or_a_failure() {
    let (mut groups, agents) = starting();
    groups[0].state = GroupState::Ready;
    let w = run(Goal::Ready, (groups, agents), &[], &[]);
    assert_eq!(w.verdict(), &Verdict::Done { at: 10 });
    // Done, but the events up to the start are still to be shown.
    assert!(!w.finished());

    // A replica marked crash-looping at the start, backing off: the
    // operator may have fixed the cause, so the wait goes on...
    let (groups, mut agents) = starting();
    agents[1].crashloop = true;
    agents[1].phase = Phase::BackingOff {
        retry_in_ms: 800,
        exit_code: Some(3),
    };
    let w = run(Goal::Ready, (groups.clone(), agents.clone()), &[], &[]);
    assert_eq!(w.verdict(), &Verdict::Waiting);
    // ...until it exits again, still marked: decided then.
    let exit = ev(
        11,
        K::AgentExited {
            replica: r("Mid"),
            group: g("base"),
            code: 3,
            oom: false,
        },
    );
    let w = run(Goal::Ready, (groups, agents), &[], &[exit]);
    assert!(matches!(w.verdict(), Verdict::CrashLoop { replica, .. } if replica.agent == "Mid"));
    assert!(w.finished());
    // The mark left from before a stop on a replica starting again is not.
    let (groups, mut agents) = starting();
    agents[1].crashloop = true;
    let w = run(Goal::Ready, (groups.clone(), agents.clone()), &[], &[]);
    assert_eq!(w.verdict(), &Verdict::Waiting);
    // ...but its crash loop event since the command, still so at the start, is.
    let crash = ev(
        9,
        K::AgentCrashLoop {
            replica: r("Mid"),
            group: g("base"),
            restarts: 3,
            window_ms: 1,
        },
    );
    let w = run(Goal::Ready, (groups, agents), &[], &[crash]);
    assert!(matches!(w.verdict(), Verdict::CrashLoop { replica, .. } if replica.agent == "Mid"));

    let (groups, mut agents) = starting();
    agents[0].phase = Phase::Failed {
        reason: no_gpu("Flaky"),
        retry_in_ms: 5000,
    };
    let w = run(Goal::Ready, (groups, agents), &[], &[]);
    assert!(
        matches!(w.verdict(), Verdict::Unplaceable { replica, .. } if replica.agent == "Flaky")
    );
}

#[test]
fn what_it_still_waits_for_follows_the_events_and_names_a_host_that_is_down() {
    let held = K::AgentHeld {
        replica: r("Mid"),
        group: g("base"),
        waiting_for: vec![Wait::RemoteGroup {
            host: g("pc2"),
            group: g("models"),
        }],
    };
    let events = [
        ev(
            11,
            K::AgentRunning {
                replica: r("Flaky"),
                group: g("base"),
            },
        ),
        ev(
            12,
            K::AgentUnhealthy {
                replica: r("Flaky"),
                group: g("base"),
            },
        ),
        ev(13, held),
        ev(
            14,
            K::PeerChanged {
                peer: g("pc2"),
                state: PeerState::Down,
                incarnation: 1,
            },
        ),
    ];
    let w = run(Goal::Ready, starting(), &[], &events);
    assert_eq!(w.verdict(), &Verdict::Waiting);
    assert_eq!(
        crate::text::still_waiting(&w.pending()),
        "group base (starting): Flaky running (unhealthy); Mid held (waiting for group models on pc2); host pc2 is down"
    );
    assert_eq!(w.hosts_down().collect::<Vec<_>>(), ["pc2"]);

    // The host comes back: no longer named.
    let mut w = w;
    w.take(&ev(
        15,
        K::PeerChanged {
            peer: g("pc2"),
            state: PeerState::Alive,
            incarnation: 2,
        },
    ));
    assert!(!crate::text::still_waiting(&w.pending()).contains("down"));

    // A host already down at the start is known too.
    let w = run(
        Goal::Ready,
        starting(),
        &[peer("pc2", PeerState::Down)],
        &events[..3],
    );
    assert!(crate::text::still_waiting(&w.pending()).contains("host pc2 is down"));
}

#[test]
fn events_are_taken_once_and_sorted_into_ours_and_others() {
    let mut w = run(Goal::Ready, starting(), &[], &[]);
    let e = ev(
        11,
        K::AgentHealthy {
            replica: r("Flaky"),
            group: g("base"),
        },
    );
    assert_eq!(w.take(&e), Seen::Ours);
    assert_eq!(w.take(&e), Seen::Again);
    assert_eq!(w.take(&ev(12, K::DockerUp)), Seen::Other);
    assert_eq!(
        w.take(&ev(13, K::GroupStarting { group: g("other") })),
        Seen::Other
    );
    assert_eq!(w.last(), 13);
    let p = w.progress();
    assert_eq!((p.healthy, p.replicas, p.at_goal, p.groups), (1, 3, 0, 1));
}

#[test]
fn a_goal_the_start_shows_needs_no_event_from_before_the_stream() {
    let (mut groups, agents) = starting();
    groups[0].state = GroupState::Ready;
    // The stream was opened at the start's own event: nothing older comes.
    let w = Waiter::new(
        Goal::Ready,
        &[g("base")],
        Start {
            seq: 10,
            groups: &groups,
            agents: &agents,
            peers: &[],
        },
    )
    .following_since(10);
    assert_eq!(w.verdict(), &Verdict::Done { at: 10 });
    assert!(w.finished());
}
