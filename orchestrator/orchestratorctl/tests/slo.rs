//! `orchestratorctl slo` against a daemon running in this process on
//! fakes (`orch_daemon::testing`), in real time.

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};
use std::time::Duration;

use orch_daemon::testing::Harness;

const CONFIG: &str = r#"version: 1
host: {name: slocli}
defaults:
  image: orchestrator-agent:latest
  health: {http: {port: 8080}, interval: 200ms, timeout: 1s, retries: 1, start_period: 1s}
groups:
  web:
    slo: {availability: 99.5%, error_rate: 0.2%}
    agents:
      Front: {}
  plain:
    agents:
      Other: {}
"#;

fn ctl(h: &Harness, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_orchestratorctl"))
        .args(args)
        .env("NO_COLOR", "1")
        .env("ORCHESTRATOR_SOCKET", h.socket())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn slo_shows_each_objective_as_a_table_and_as_json() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let h = rt.block_on(async {
        let h = Harness::start(CONFIG).await;
        h.client.group_start("web").await.unwrap();
        h.until_ready().await;
        // A few availability samples (one a second).
        tokio::time::sleep(Duration::from_millis(2500)).await;
        h
    });

    let out = ctl(&h, &["slo"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("GROUP") && lines[0].contains("BURN 1h"),
        "{table}"
    );
    let avail = lines.iter().find(|l| l.contains("availability")).unwrap();
    assert!(avail.starts_with("web"), "{table}");
    assert!(
        // (A sample taken while Front was still starting counts against it.)
        avail.contains("99.5%") && avail.contains("% of 30d"),
        "{table}"
    );
    let errors = lines.iter().find(|l| l.contains("error_rate")).unwrap();
    assert!(errors.contains("99.8%"), "{table}");

    let out = ctl(&h, &["-o", "json", "slo", "web"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["host"], "slocli");
    assert_eq!(v["groups"][0]["group"], "web");
    assert_eq!(v["groups"][0]["slis"][0]["slo"], "availability");
    assert!(v["groups"][0]["slis"][0]["events"].as_u64().unwrap() >= 2);

    // A group without an SLO: refused with the reason, not-found's exit code.
    let out = ctl(&h, &["slo", "plain"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no `slo:`"),
        "{}",
        text(&out.stderr)
    );
    drop(h);
}
