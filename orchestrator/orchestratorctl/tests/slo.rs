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

fn federated(name: &str, peer: &str) -> String {
    CONFIG.replace("host: {name: slocli}", &format!("host: {{name: {name}}}"))
        + &orch_daemon::testing::federation_section(&[peer])
}

#[test]
fn slo_all_hosts_shows_each_hosts_objectives_from_its_snapshot() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let net = orch_federation::MemNetwork::new();
    let (a, b) = rt.block_on(async {
        let a = Harness::start_in(
            orch_daemon::testing::World::new().on(&net),
            &federated("alpha", "beta"),
        )
        .await;
        let b = Harness::start_in(
            orch_daemon::testing::World::new().on(&net),
            &federated("beta", "alpha"),
        )
        .await;
        // Only beta runs `web`.
        b.client.group_start("web").await.unwrap();
        b.until_ready().await;
        (a, b)
    });

    // Until beta's snapshot carries an availability sample of `web`.
    let events = |v: &serde_json::Value| v[1]["data"]["groups"][0]["slis"][0]["events"].as_u64();
    let mut v = serde_json::Value::Null;
    for _ in 0..100 {
        let out = ctl(&a, &["-o", "json", "slo", "web", "--all-hosts"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        v = serde_json::from_slice(&out.stdout).unwrap();
        if events(&v).is_some_and(|n| n >= 1) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(events(&v).is_some_and(|n| n >= 1), "{v}");
    assert_eq!(v[0]["host"], "alpha");
    assert_eq!(v[1]["host"], "beta");
    assert_eq!(v[1]["state"], "alive");
    assert_eq!(v[1]["data"]["host"], "beta");
    assert_eq!(v[1]["data"]["groups"][0]["group"], "web");
    assert_eq!(v[1]["data"]["groups"].as_array().unwrap().len(), 1);

    // The table: a section per host, beta's rows from its snapshot.
    let out = ctl(&a, &["slo", "--all-hosts"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(table.contains("== alpha (this host"), "{table}");
    assert!(table.contains("== beta (alive"), "{table}");
    let beta = table.split("== beta").nth(1).unwrap();
    let avail = beta.lines().find(|l| l.contains("availability")).unwrap();
    assert!(
        avail.starts_with("web") && avail.contains("99.5%") && avail.contains("% of 30d"),
        "{table}"
    );

    // One host or all of them, not both.
    let out = ctl(&a, &["--host", "beta", "slo", "--all-hosts"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    drop((a, b));
    drop(rt);
}
