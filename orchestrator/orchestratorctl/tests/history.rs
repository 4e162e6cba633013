//! `orchestratorctl history` against daemons running in this process on
//! fakes (`orch_daemon::testing`), in real time: the table, `-o json`, and
//! another host's history through `--host`.

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

use orch_daemon::testing::{Harness, World};

const CONFIG: &str = r#"version: 1
host: {name: histcli}
defaults:
  image: orchestrator-agent:latest
  health: {http: {port: 8080}, interval: 200ms, timeout: 1s, retries: 1, start_period: 1s}
groups:
  web:
    agents:
      Front: {replicas: 1}
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

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn history_lists_each_generation_as_a_table_and_as_json() {
    let rt = runtime();
    let h = rt.block_on(async {
        let h = Harness::start(CONFIG).await;
        let two = CONFIG.replace("replicas: 1", "replicas: 2");
        h.client.apply("two.yaml", &two).await.unwrap();
        h
    });

    let out = ctl(&h, &["history"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let lines: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        ["GEN", "APPLIED", "BY", "SOURCE", "OUTCOME", "CHANGES"],
        "{table}"
    );
    assert_eq!(lines.len(), 3, "{table}");
    assert_eq!(
        lines[1][3..],
        ["apply", "completed", "1", "rescaled"],
        "{table}"
    );
    assert_eq!(
        lines[2][2..],
        ["startup", "startup", "completed", "-"],
        "{table}"
    );
    let gen_of = |row: &[&str]| row[0].parse::<u64>().unwrap();
    assert_eq!(gen_of(&lines[1]), gen_of(&lines[2]) + 1, "{table}");

    let out = ctl(&h, &["-o", "json", "history"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["source"]["kind"], "apply");
    assert_eq!(v[0]["outcome"], "completed");
    assert_eq!(
        v[0]["changes"]["rescaled"][0],
        serde_json::json!({"agent": "Front", "from": 1, "to": 2})
    );
    assert_eq!(v[1]["source"]["kind"], "startup");

    // No arguments are taken.
    let out = ctl(&h, &["history", "extra"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    drop(h);
}

fn federated(name: &str, peer: &str) -> String {
    CONFIG.replace("host: {name: histcli}", &format!("host: {{name: {name}}}"))
        + &orch_daemon::testing::federation_section(&[peer])
}

#[test]
fn history_of_another_host_goes_through_the_federation() {
    let rt = runtime();
    let net = orch_federation::MemNetwork::new();
    let (a, b) = rt.block_on(async {
        let a = Harness::start_in(World::new().on(&net), &federated("alpha", "beta")).await;
        let b = Harness::start_in(World::new().on(&net), &federated("beta", "alpha")).await;
        let two = federated("beta", "alpha").replace("replicas: 1", "replicas: 2");
        b.client.apply("two.yaml", &two).await.unwrap();
        (a, b)
    });
    let mut v = serde_json::Value::Null;
    for _ in 0..100 {
        let out = ctl(&a, &["--host", "beta", "-o", "json", "history"]);
        if out.status.success() {
            v = serde_json::from_slice(&out.stdout).unwrap();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let sources: Vec<&str> = v
        .as_array()
        .unwrap_or_else(|| panic!("no answer from beta: {v}"))
        .iter()
        .map(|g| g["source"]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(sources, ["apply", "startup"]);
    // Alpha's own history has its startup only.
    let out = ctl(&a, &["-o", "json", "history"]);
    let own: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(own.as_array().unwrap().len(), 1, "{own}");
    drop((a, b));
}
