//! `state export` and `state import` as an operator runs them, against
//! daemons running in this process on fakes (`orch_daemon::testing`).

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

use orch_daemon::testing::{CHAIN, Harness};

struct Host {
    rt: tokio::runtime::Runtime,
    h: Harness,
}

impl Host {
    fn start() -> Host {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let h = rt.block_on(Harness::start(CHAIN));
        Host { rt, h }
    }

    fn ctl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_orchestratorctl"))
            .args(args)
            .env("NO_COLOR", "1")
            .env("ORCHESTRATOR_SOCKET", self.h.socket())
            .output()
            .unwrap()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[track_caller]
fn code(out: &Output, expected: i32) {
    assert_eq!(
        out.status.code(),
        Some(expected),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn an_export_imported_on_a_new_state_restores_the_same_desired_state() {
    let old = Host::start();
    code(
        &old.ctl(&["group", "start", "extra", "--wait", "--timeout", "60s"]),
        0,
    );
    code(&old.ctl(&["group", "stop", "extra"]), 0);
    let export = old.ctl(&["state", "export"]);
    code(&export, 0);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state.json");
    std::fs::write(&file, &export.stdout).unwrap();

    // A new host: nothing saved, nothing running.
    let new = Host::start();
    assert!(new.h.world.store.state().is_none());
    let import = new.ctl(&["state", "import", file.to_str().unwrap()]);
    code(&import, 0);
    assert_eq!(text(&import.stdout).trim(), "state imported; started base");

    let saved_old = old.h.world.store.state().unwrap();
    let saved_new = new.h.world.store.state().unwrap();
    assert_eq!(saved_new.started_groups, saved_old.started_groups);
    assert_eq!(saved_new.stopped_groups, saved_old.stopped_groups);
    assert_eq!(saved_new.generation, saved_old.generation);
    assert_eq!(saved_new.owned_mig, saved_old.owned_mig);
    // And it acts on it: base comes up on the new host.
    new.rt.block_on(new.h.until_ready());
    let again = new.ctl(&["state", "export"]);
    assert_eq!(text(&again.stdout), text(&export.stdout));
}

#[test]
fn a_file_that_is_not_a_state_export_is_refused_with_what_is_wrong() {
    let host = Host::start();
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "{\"version\": 1}",
            "(kind ``, expected `orchestrator-state`)",
        ),
        (
            r#"{"kind": "orchestrator-state", "format": 7}"#,
            "state format 7 is not supported; this program reads format 1",
        ),
        (
            r#"{"kind": "orchestrator-state", "format": 1, "host": "elsewhere", "generation": 0, "started_groups": []}"#,
            "the state export is for host `elsewhere`, this is `testhost`",
        ),
        (
            r#"{"kind": "orchestrator-state", "format": 1, "host": "testhost", "generation": 0, "started_groups": ["nope"]}"#,
            "no group `nope` on this host; nothing was changed",
        ),
    ];
    for (body, message) in cases {
        let file = dir.path().join("bad.json");
        std::fs::write(&file, body).unwrap();
        let out = host.ctl(&["state", "import", file.to_str().unwrap()]);
        assert_ne!(out.status.code(), Some(0), "{body}");
        assert!(
            text(&out.stderr).contains(message),
            "{body}: {}",
            text(&out.stderr)
        );
    }
    assert!(host.h.world.store.state().is_none(), "nothing was written");
}

#[test]
fn status_says_when_the_state_cannot_be_saved_and_when_it_is_again() {
    let host = Host::start();
    host.h.world.store.fail_writes(true);
    code(
        &host.ctl(&["group", "start", "base", "--wait", "--timeout", "60s"]),
        0,
    );
    let status = host.ctl(&["status"]);
    code(&status, 0);
    let line = text(&status.stdout)
        .lines()
        .find(|l| l.starts_with("state "))
        .unwrap()
        .to_string();
    assert!(line.contains("NOT SAVED"), "{line}");
    assert!(line.contains("No space left on device"), "{line}");
    host.h.world.store.fail_writes(false);
    // Retried every 5 s without anyone asking.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let status = text(&host.ctl(&["status"]).stdout);
        if !status.contains("NOT SAVED") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{status}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(
        host.h
            .world
            .store
            .state()
            .unwrap()
            .started_groups
            .contains("base")
    );
}

#[test]
fn an_export_as_yaml_is_yaml_and_imports_as_well() {
    let old = Host::start();
    code(
        &old.ctl(&["group", "start", "base", "--wait", "--timeout", "60s"]),
        0,
    );
    let export = old.ctl(&["-o", "yaml", "state", "export"]);
    code(&export, 0);
    let yaml = text(&export.stdout);
    assert!(yaml.starts_with("kind: orchestrator-state\n"), "{yaml}");
    assert!(yaml.contains("started_groups:\n- base\n"), "{yaml}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state.yaml");
    std::fs::write(&file, &export.stdout).unwrap();
    let new = Host::start();
    let import = new.ctl(&["state", "import", file.to_str().unwrap()]);
    code(&import, 0);
    assert_eq!(text(&import.stdout).trim(), "state imported; started base");
}
