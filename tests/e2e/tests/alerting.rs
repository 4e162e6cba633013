//! Alerting end to end: a real daemon running a real agent, scraped by a
//! real Prometheus (Debian's `prometheus`, started by
//! `tests/observability/run_local.sh` with the shipped rules at time scale
//! 60) that sends its alerts to a real Alertmanager (Debian's
//! `prometheus-alertmanager`) running the shipped routes and inhibitions
//! with shortened waits, whose receivers are a webhook of this test.
//!
//! An agent made to fail its health checks (`AGENT_UNHEALTHY_IF_EXISTS`)
//! crash-loops and burns its group's availability SLO: the crash loop (a
//! ticket) and the SLO page each reach the webhook once, naming their host
//! and group (and the crash loop its agent). Then the daemon is killed:
//! the host-down page arrives, and the SLO page, which Prometheus still
//! fires from the minutes before the kill, is inhibited and sends nothing
//! more.

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use e2e::alerting::{Alertmanager, Notification, Webhook, free_ports, test_config};
use e2e::{Daemon, Host, IMAGE, repo_root};

/// One group with an availability SLO whose 12h window is the SLO period
/// of the rules at scale 60; its agent is unhealthy while /ctl/sick exists.
fn config(name: &str, port: u16, ctl: &Path) -> String {
    format!(
        r#"version: 1
host: {{name: {name}}}
defaults:
  image: {IMAGE}
  restart: {{policy: on-failure, backoff: {{initial: 200ms, max: 1s}}, crashloop: {{restarts: 3, window: 1m}}}}
  health: {{http: {{port: 8080}}, interval: 500ms, timeout: 2s, retries: 3, start_period: 2s}}
  stop_timeout: 1s
groups:
  vision_gpu:
    slo: {{availability: 99.5%, window: 12h}}
    agents:
      FaceRecognitionAgent:
        env: {{AGENT_UNHEALTHY_IF_EXISTS: /ctl/sick}}
        volumes: ["{ctl}:/ctl"]
metrics: {{listen: "127.0.0.1:{port}"}}
"#,
        ctl = ctl.display()
    )
}

fn run_local(args: &[&str]) -> Output {
    Command::new("bash")
        .arg(repo_root().join("tests/observability/run_local.sh"))
        .args(args)
        .output()
        .expect("run_local.sh")
}

fn run_local_ok(args: &[&str]) -> String {
    let out = run_local(args);
    assert!(
        out.status.success(),
        "run_local.sh {args:?} failed\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Stops what `run_local.sh start` started, however the test ends.
struct Prometheus {
    dir: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = run_local(&["stop", "--dir", self.dir.to_str().unwrap()]);
    }
}

/// Waits for a PromQL expression to return something (or, `absent`,
/// nothing).
fn promwait(url: &str, expr: &str, absent: bool, timeout: u64) {
    let script = repo_root().join("tests/observability/promwait.py");
    let start = Instant::now();
    loop {
        let out = Command::new("python3")
            .arg(&script)
            .args([url, "--timeout", "0", "query", expr])
            .output()
            .unwrap();
        if out.status.success() != absent {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(timeout),
            "{expr} {} within {timeout} s: {}{}",
            if absent {
                "still returns series"
            } else {
                "returned nothing"
            },
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn label<'a>(alert: &'a serde_json::Value, name: &str) -> &'a str {
    alert["labels"][name].as_str().unwrap_or("")
}

/// The alerts `pick` accepts that each notification brings in firing
/// (not firing in the notification before it of the same group), counted
/// per label set.
fn newly_firing(
    got: &[Notification],
    pick: impl Fn(&serde_json::Value) -> bool,
) -> BTreeMap<String, usize> {
    let mut last: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut count = BTreeMap::new();
    for n in got {
        let group = n.body["groupKey"].as_str().unwrap_or("").to_string();
        let firing: BTreeSet<String> = n
            .alerts("firing")
            .into_iter()
            .map(|a| a["labels"].to_string())
            .collect();
        for a in n.alerts("firing") {
            let key = a["labels"].to_string();
            if pick(a) && !last.get(&group).is_some_and(|s| s.contains(&key)) {
                *count.entry(key).or_insert(0) += 1;
            }
        }
        last.insert(group, firing);
    }
    count
}

#[test]
fn a_crash_loop_and_a_page_reach_someone_once_and_a_down_host_silences_its_own() {
    for (bin, package) in [
        ("prometheus", "prometheus"),
        ("prometheus-alertmanager", "prometheus-alertmanager"),
    ] {
        assert!(
            Command::new(bin)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success()),
            "{bin} is not installed: run tests/e2e/setup-apt.sh {bin}={package}"
        );
    }
    let host = Host::new("alert");
    let [metrics_port, am_port] = free_ports();
    let ctl = host.path("ctl");
    std::fs::create_dir_all(&ctl).unwrap();
    let mut daemon = Daemon::start(&host, &config(&host.name, metrics_port, &ctl), &[]);
    daemon.ctl_ok(&["group", "start", "vision_gpu", "--wait", "--timeout", "120"]);

    let webhook = Webhook::start();
    let am = Alertmanager::start(
        &host.path("alertmanager"),
        &test_config(webhook.port),
        am_port,
    );
    let dir = host.path("prometheus");
    let dir_s = dir.to_str().unwrap().to_string();
    let _prom = Prometheus { dir: dir.clone() };
    run_local_ok(&[
        "start",
        "--dir",
        &dir_s,
        "--scale",
        "60",
        "--target",
        &format!("127.0.0.1:{metrics_port}"),
        "--alertmanager",
        &format!("127.0.0.1:{am_port}"),
    ]);
    let url = std::fs::read_to_string(dir.join("prometheus.url"))
        .unwrap()
        .trim()
        .to_string();
    let ours = |a: &serde_json::Value| label(a, "host") == host.name;

    // The agent fails its health checks: restarted, crash-looping, and its
    // group's availability burns.
    std::fs::write(ctl.join("sick"), "").unwrap();
    let firing = |name: &'static str| {
        move |n: &Notification| {
            n.alerts("firing")
                .iter()
                .any(|a| a["labels"]["alertname"] == name && ours(a))
        }
    };
    let i = webhook.wait_for(
        "paging the SLO burn",
        Duration::from_secs(240),
        firing("OrchestratorSLOBudgetBurnFast"),
    );
    let got = webhook.notifications();
    assert_eq!(got[i].path, "/page");
    let page = got[i]
        .alerts("firing")
        .into_iter()
        .find(|a| a["labels"]["alertname"] == "OrchestratorSLOBudgetBurnFast")
        .cloned()
        .unwrap();
    assert_eq!(
        (
            label(&page, "group"),
            label(&page, "slo"),
            label(&page, "severity")
        ),
        ("vision_gpu", "availability", "page"),
        "{page}"
    );
    let i = webhook.wait_for(
        "ticketing the crash loop",
        Duration::from_secs(120),
        firing("OrchestratorAgentCrashLooping"),
    );
    let got = webhook.notifications();
    assert_eq!(got[i].path, "/ticket");
    let crash = got[i]
        .alerts("firing")
        .into_iter()
        .find(|a| a["labels"]["alertname"] == "OrchestratorAgentCrashLooping")
        .cloned()
        .unwrap();
    assert_eq!(
        (
            label(&crash, "host"),
            label(&crash, "group"),
            label(&crash, "agent"),
            label(&crash, "severity")
        ),
        (
            host.name.as_str(),
            "vision_gpu",
            "FaceRecognitionAgent",
            "ticket"
        ),
        "{crash}"
    );

    // Long enough unhealthy that the 6h/30m page tier holds too: after the
    // daemon is gone, Prometheus keeps the page firing from the 30m
    // window (30 s at this scale) of data it still has.
    promwait(
        &url,
        &format!(
            "slo:sli_error:ratio_rate30m{{host=\"{}\", group=\"vision_gpu\", slo=\"availability\"}} > 0.9",
            host.name
        ),
        false,
        120,
    );

    // The host goes down: its daemon is killed (its agent keeps running).
    daemon.kill9();
    let down = webhook.wait_for(
        "paging the host down",
        Duration::from_secs(60),
        firing("OrchestratorDaemonDown"),
    );
    // While it fires, the page Prometheus still fires for that host (from
    // the data its windows hold) is inhibited.
    let start = Instant::now();
    loop {
        let alerts = am.alerts();
        let held = alerts
            .iter()
            .find(|a| a["labels"]["alertname"] == "OrchestratorSLOBudgetBurnFast" && ours(a));
        if let Some(a) = held
            && a["status"]["state"] == "suppressed"
        {
            let by = a["status"]["inhibitedBy"].as_array().unwrap();
            assert_eq!(by.len(), 1, "{a}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the page was not inhibited while the host was down: {alerts:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let suppressed_at = Instant::now();
    // Prometheus resolves the page once its windows run out of data; the
    // resolution is inhibited too. (The crash loop resolved at the kill,
    // before the host-down page could silence it.)
    promwait(
        &url,
        &format!(
            "ALERTS{{alertname=\"OrchestratorSLOBudgetBurnFast\", host=\"{}\", alertstate=\"firing\"}}",
            host.name
        ),
        true,
        90,
    );
    std::thread::sleep(Duration::from_secs(6));
    let got = webhook.notifications();
    let after: Vec<&Notification> = got.iter().filter(|n| n.at > suppressed_at).collect();
    for n in &after {
        for status in ["firing", "resolved"] {
            for a in n.alerts(status) {
                assert!(
                    !(ours(a) && label(a, "alertname") != "OrchestratorDaemonDown"),
                    "{status} {} reached the webhook while its host was down: {}",
                    label(a, "alertname"),
                    n.body
                );
            }
        }
    }

    // Each alert reached someone once: no repeated notification of it.
    let newly = newly_firing(&got, |a| {
        ours(a)
            && [
                "OrchestratorSLOBudgetBurnFast",
                "OrchestratorAgentCrashLooping",
                "OrchestratorDaemonDown",
            ]
            .contains(&label(a, "alertname"))
    });
    assert_eq!(newly.len(), 3, "{newly:?}");
    assert!(newly.values().all(|&n| n == 1), "{newly:?}");
    // The host-down page names the host.
    let down_alert = got[down]
        .alerts("firing")
        .into_iter()
        .find(|a| a["labels"]["alertname"] == "OrchestratorDaemonDown")
        .cloned()
        .unwrap();
    assert_eq!(
        (label(&down_alert, "host"), label(&down_alert, "severity")),
        (host.name.as_str(), "page")
    );
    assert_eq!(got[down].path, "/page");
}
