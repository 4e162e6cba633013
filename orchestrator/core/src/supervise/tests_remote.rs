//! Cross-host dependencies across a peer's outage, as tables: a peer that
//! goes down keeps its last known view for `federation.peer_grace`; its
//! dependents here stop only when it (or a direct probe of the agent)
//! says an agent is not ready, or the grace runs out with no news.

use super::tests::{Harness, config, k, remote_up};
use super::*;
use crate::model::{Federation, RemoteCommands};
use crate::units::Duration;

const GRACE: Millis = 60_000;

/// `Needy` here needs `pc2/Eyes`; it runs with Eyes ready there, at 1s.
fn running_needy(grace: Millis) -> Harness {
    let mut c = config(&[("g", &[], &[("Needy", &["pc2/Eyes"], 1, true)])]);
    c.federation = Some(Federation {
        listen: "tcp://0.0.0.0:7100".into(),
        peers: Vec::new(),
        secret_key_file: None,
        heartbeat: Federation::DEFAULT_HEARTBEAT,
        suspect_after: Federation::DEFAULT_SUSPECT_AFTER,
        down_after: Federation::DEFAULT_DOWN_AFTER,
        remote_commands: RemoteCommands::Operate,
        peer_grace: Duration::from_millis(grace),
    });
    let mut h = Harness::of(c);
    h.cmd(|s| s.start_group(0, "g").expect("g exists"));
    h.finish_ops();
    h.apply(Input::Remote {
        host: "pc2".into(),
        state: remote_up(&["Eyes"], &[]),
    });
    h.settle_healthy();
    h.take_log();
    assert!(h.s.replica(&k("Needy")).is_some_and(|r| r.is_running()));
    h.now = 1_000;
    h
}

fn pending_eyes() -> RemoteHost {
    RemoteHost::Up(RemoteView {
        pending_agents: ["Eyes".to_string()].into(),
        ..RemoteView::default()
    })
}

/// What the fleet says of pc2, in a table row.
#[derive(Debug, Clone, Copy)]
enum Said {
    Down,
    /// Alive, no snapshot yet (a restarted daemon before its first one).
    NoNews,
    EyesReady,
    EyesNotReady,
    /// Eyes runs there, not probed yet (a restarted daemon adopting it).
    EyesPending,
    /// This host's direct probe of Eyes passed.
    EyesAnswers,
    /// This host's direct probe of Eyes failed `retries` times.
    EyesFailsProbe,
}

fn say(h: &mut Harness, at: Millis, said: Said) {
    h.now = at;
    if let Said::EyesAnswers | Said::EyesFailsProbe = said {
        h.apply(Input::RemoteProbe {
            host: "pc2".into(),
            agent: "Eyes".into(),
            healthy: matches!(said, Said::EyesAnswers),
        });
        return;
    }
    let state = match said {
        Said::Down => RemoteHost::Down,
        Said::NoNews => RemoteHost::Unknown,
        Said::EyesReady => remote_up(&["Eyes"], &[]),
        Said::EyesNotReady => remote_up(&[], &[]),
        Said::EyesPending => pending_eyes(),
        Said::EyesAnswers | Said::EyesFailsProbe => unreachable!("a probe, above"),
    };
    h.apply(Input::Remote {
        host: "pc2".into(),
        state,
    });
}

/// A table row: the case, the grace, what pc2 says and when, and the
/// moment Needy is stopped (if it is).
type Row<'a> = (&'a str, Millis, &'a [(Millis, Said)], Option<Millis>);

#[test]
fn when_a_peers_outage_stops_the_agents_that_need_it() {
    use Said::*;
    // (case, grace, what pc2 says and when, the moment Needy is stopped)
    let table: &[Row] = &[
        (
            "down with no news: stopped when the grace runs out",
            GRACE,
            &[(1_000, Down)],
            Some(1_000 + GRACE),
        ),
        (
            "a daemon restart: down, alive without a snapshot, then ready",
            GRACE,
            &[(1_000, Down), (5_000, NoNews), (5_100, EyesReady)],
            None,
        ),
        (
            "alive but silent is no news: the grace still runs out",
            GRACE,
            &[(1_000, Down), (5_000, NoNews)],
            Some(1_000 + GRACE),
        ),
        (
            "repeated down reports do not extend the grace",
            GRACE,
            &[(1_000, Down), (30_000, Down), (59_000, Down)],
            Some(1_000 + GRACE),
        ),
        (
            "back, saying Eyes is not ready: stopped at once",
            GRACE,
            &[(1_000, Down), (9_000, EyesNotReady)],
            Some(9_000),
        ),
        (
            "back and ready, down again later: a new grace from then",
            GRACE,
            &[(1_000, Down), (9_000, EyesReady), (50_000, Down)],
            Some(50_000 + GRACE),
        ),
        (
            "a restarted daemon's first word (Eyes not probed yet), then ready",
            GRACE,
            &[(1_000, Down), (5_000, EyesPending), (5_200, EyesReady)],
            None,
        ),
        (
            "not probed yet, then found unhealthy: stopped then",
            GRACE,
            &[(1_000, Down), (5_000, EyesPending), (5_200, EyesNotReady)],
            Some(5_200),
        ),
        (
            "no grace: stopped as soon as pc2 is down",
            0,
            &[(1_000, Down)],
            Some(1_000),
        ),
        (
            "the peer says Eyes is not ready while up: stopped at once",
            GRACE,
            &[(2_000, EyesNotReady)],
            Some(2_000),
        ),
        (
            "Eyes answers its probe: held past the grace while it answers",
            GRACE,
            &[
                (1_000, Down),
                (2_000, EyesAnswers),
                (2 * GRACE, EyesAnswers),
            ],
            None,
        ),
        (
            "Eyes fails its probe within the grace: stopped then",
            GRACE,
            &[(1_000, Down), (5_000, EyesFailsProbe)],
            Some(5_000),
        ),
        (
            "Eyes answers, then fails past the grace: stopped then",
            GRACE,
            &[
                (1_000, Down),
                (2_000, EyesAnswers),
                (GRACE + 30_000, EyesFailsProbe),
            ],
            Some(GRACE + 30_000),
        ),
        (
            "answering past the grace, pc2 back saying Eyes is not ready: stopped",
            GRACE,
            &[
                (1_000, Down),
                (2_000, EyesAnswers),
                (GRACE + 5_000, NoNews),
                (GRACE + 6_000, EyesNotReady),
            ],
            Some(GRACE + 6_000),
        ),
        (
            "answering past the grace, repeated down reports change nothing",
            GRACE,
            &[
                (1_000, Down),
                (2_000, EyesAnswers),
                (GRACE + 5_000, Down),
                (2 * GRACE + 9_000, Down),
            ],
            None,
        ),
        (
            "a failed probe of a peer that is heard is no news",
            GRACE,
            &[(2_000, EyesFailsProbe)],
            None,
        ),
        (
            "a probe that comes after pc2 is heard again is stale",
            GRACE,
            &[
                (1_000, Down),
                (2_000, EyesAnswers),
                (3_000, EyesReady),
                (4_000, EyesFailsProbe),
            ],
            None,
        ),
        (
            "a pass after a failure does not bring Eyes back before pc2 says so",
            GRACE,
            &[(1_000, Down), (2_000, EyesFailsProbe), (3_000, EyesAnswers)],
            Some(2_000),
        ),
        (
            "no grace: nothing is held, so nothing is probed",
            0,
            &[(1_000, Down), (1_500, EyesAnswers)],
            Some(1_000),
        ),
    ];
    for (case, grace, said, stopped_at) in table {
        let mut h = running_needy(*grace);
        let mut stopped = None;
        let mut events: Vec<(Millis, Option<Said>)> =
            said.iter().map(|(t, s)| (*t, Some(*s))).collect();
        // Ticks when the supervisor asks for one, and well past any grace.
        events.push((1_000 + 3 * GRACE, None));
        for (at, said) in events {
            // Let every deadline before this moment pass first.
            while let Some(d) = h.s.next_deadline().filter(|d| *d <= at) {
                h.at(d);
                if stopped.is_none() && h.take_log().contains(&"stop Needy".to_string()) {
                    stopped = Some(d);
                }
            }
            match said {
                Some(s) => say(&mut h, at, s),
                None => {
                    h.at(at);
                }
            }
            if stopped.is_none() && h.take_log().contains(&"stop Needy".to_string()) {
                stopped = Some(at);
            }
        }
        assert_eq!(stopped, *stopped_at, "{case}");
    }
}

#[test]
fn the_grace_is_a_deadline_the_daemon_wakes_for_and_can_show() {
    let mut h = running_needy(GRACE);
    assert_eq!(h.s.remote_held_until("pc2"), None);
    say(&mut h, 1_000, Said::Down);
    assert!(h.take_log().is_empty(), "nothing stops when pc2 goes down");
    assert_eq!(h.s.remote_held_until("pc2"), Some(1_000 + GRACE));
    assert_eq!(h.s.next_deadline(), Some(1_000 + GRACE));
    // The last view is what dependencies see meanwhile.
    assert_eq!(h.s.remote("pc2"), &remote_up(&["Eyes"], &[]));
    h.at(1_000 + GRACE - 1);
    assert!(h.take_log().is_empty());
    h.at(1_000 + GRACE);
    assert_eq!(h.take_log(), ["stop Needy"]);
    assert_eq!(h.s.remote("pc2"), &RemoteHost::Down);
    assert_eq!(h.s.remote_held_until("pc2"), None);
    h.finish_ops();
    // Held until pc2 is back with Eyes ready.
    assert!(matches!(h.phase(&k("Needy")), Phase::Held { .. }));
    say(&mut h, 2 * GRACE, Said::EyesReady);
    assert_eq!(h.take_log(), ["launch Needy"]);
}

#[test]
fn an_agent_not_probed_yet_there_starts_no_new_dependent() {
    let mut h = Harness::new(&[("g", &[], &[("Needy", &["pc2/Eyes"], 1, true)])]);
    h.apply(Input::Remote {
        host: "pc2".into(),
        state: pending_eyes(),
    });
    h.cmd(|s| s.start_group(0, "g").expect("g exists"));
    h.finish_ops();
    h.take_log();
    assert_eq!(
        h.phase(&k("Needy")),
        Phase::Held {
            waiting_for: vec![Wait::RemoteAgent {
                host: "pc2".into(),
                agent: "Eyes".into()
            }]
        }
    );
    say(&mut h, 1_000, Said::EyesReady);
    assert_eq!(h.take_log(), ["start Needy"]);
}

#[test]
fn a_peer_never_heard_from_has_nothing_to_hold() {
    let mut h = Harness::new(&[("g", &[], &[("Needy", &["pc2/Eyes"], 1, true)])]);
    assert_eq!(h.s.peer_grace(), 0, "no federation, no grace");
    say(&mut h, 1_000, Said::Down);
    assert_eq!(h.s.remote("pc2"), &RemoteHost::Down);
    assert_eq!(h.s.remote_held_until("pc2"), None);
}

#[test]
fn the_daemon_is_asked_to_probe_only_what_a_down_peer_still_vouches_for() {
    let pc2_eyes = || [("pc2".to_string(), "Eyes".to_string())].into();
    let mut h = running_needy(GRACE);
    assert!(h.s.remote_probes().is_empty(), "pc2 is heard: no probes");
    say(&mut h, 1_000, Said::Down);
    assert_eq!(h.s.remote_probes(), pc2_eyes(), "within the grace");
    say(&mut h, 2_000, Said::EyesAnswers);
    assert!(h.s.remote_answers_probe("pc2", "Eyes"));
    h.at(1_000 + GRACE);
    assert!(h.take_log().is_empty(), "Needy holds past the grace");
    assert_eq!(h.s.remote_held_until("pc2"), None);
    assert_eq!(
        h.s.remote_probes(),
        pc2_eyes(),
        "still probed past the grace"
    );
    // The peer's word replaces the probes.
    say(&mut h, GRACE + 5_000, Said::EyesReady);
    assert!(h.s.remote_probes().is_empty());
    assert!(!h.s.remote_answers_probe("pc2", "Eyes"));
    // Down again, Eyes fails its probe: no longer probed, Needy stops.
    say(&mut h, GRACE + 6_000, Said::Down);
    assert_eq!(h.s.remote_probes(), pc2_eyes());
    say(&mut h, GRACE + 7_000, Said::EyesFailsProbe);
    assert_eq!(h.take_log(), ["stop Needy"]);
    assert!(h.s.remote_probes().is_empty());
}

#[test]
fn an_agent_nobody_here_wants_is_not_probed() {
    let mut h = running_needy(GRACE);
    h.cmd(|s| s.stop_group(1_000, "g", false).expect("g exists"));
    h.finish_ops();
    say(&mut h, 2_000, Said::Down);
    assert!(h.s.remote_probes().is_empty(), "g is stopped");
}

#[test]
fn past_the_grace_only_the_agents_that_answer_are_ready() {
    let mut c = config(&[(
        "g",
        &[],
        &[
            ("Needy", &["pc2/Eyes"], 1, true),
            ("Ears", &["pc2/Mic"], 1, true),
        ],
    )]);
    c.federation = running_needy(GRACE).s.config().federation.clone();
    let mut h = Harness::of(c);
    h.cmd(|s| s.start_group(0, "g").expect("g exists"));
    h.finish_ops();
    h.apply(Input::Remote {
        host: "pc2".into(),
        state: remote_up(&["Eyes", "Mic"], &[]),
    });
    h.settle_healthy();
    h.take_log();
    // pc2 goes down; only Eyes published an endpoint, so only it answers.
    say(&mut h, 1_000, Said::Down);
    say(&mut h, 2_000, Said::EyesAnswers);
    h.at(1_000 + GRACE);
    assert_eq!(h.take_log(), ["stop Ears"], "Mic had only the grace");
    assert_eq!(h.s.remote("pc2"), &remote_up(&["Eyes"], &[]));
}
