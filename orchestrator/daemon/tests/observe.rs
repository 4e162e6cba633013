//! `/metrics` and the SLOs of a live daemon in process: the series follow
//! the supervisor's state, availability samples and agent scrapes feed
//! the SLO engine, the history outlives a restart, a reload reconfigures
//! it, and the text passes `promtool check metrics` where promtool is
//! installed.

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use orch_api::ErrorCode;
use orch_daemon::testing::{Harness, World};

const SLO_HOST: &str = r#"version: 1
host: {name: slohost}
defaults:
  image: orchestrator-agent:latest
  restart: {policy: on-failure, backoff: {initial: 200ms, max: 1s}, crashloop: {restarts: 50, window: 1m}}
  health: {http: {port: 8080}, interval: 500ms, timeout: 1s, retries: 1, start_period: 1s}
  stop_timeout: 1s
groups:
  web:
    slo: {availability: 99.5%, latency_p99: 1s, error_rate: 1%}
    agents:
      Front: {replicas: 2}
      Helper: {required: false}
  batch:
    agents:
      Worker: {}
"#;

/// The value of the one sample whose line starts with `prefix`.
fn value(text: &str, prefix: &str) -> f64 {
    let found: Vec<&str> = text.lines().filter(|l| l.starts_with(prefix)).collect();
    assert_eq!(found.len(), 1, "`{prefix}` in:\n{text}");
    found[0].rsplit(' ').next().unwrap().parse().unwrap()
}

async fn metrics_until(h: &Harness, what: &str, cond: impl Fn(&str) -> bool) -> String {
    for _ in 0..600 {
        let text = h.metrics().await;
        if cond(&text) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never: {what}\n{}", h.metrics().await);
}

#[tokio::test(start_paused = true)]
async fn the_series_follow_the_supervisors_state() {
    let h = Harness::start(SLO_HOST).await;
    let text = metrics_until(&h, "groups are listed", |t| {
        t.contains("orchestrator_group_started{")
    })
    .await;
    assert_eq!(
        value(
            &text,
            r#"orchestrator_group_started{host="slohost",group="web"}"#
        ),
        0.0
    );
    // Replicas of a stopped group with no container are not exported.
    assert!(!text.contains("orchestrator_agent_up{"), "{text}");
    // Nothing measured yet: an objective, no events.
    assert_eq!(
        value(
            &text,
            r#"orchestrator_slo_objective_ratio{host="slohost",group="web",slo="availability"}"#
        ),
        0.995
    );

    h.client.group_start("web").await.unwrap();
    h.until_ready().await;
    // The group is ready once its replicas have been healthy for its
    // min_healthy; the published series follow within their interval.
    let text = metrics_until(&h, "every replica is up and the group ready", |t| {
        t.lines()
            .filter(|l| l.starts_with("orchestrator_agent_up{"))
            .filter(|l| l.ends_with(" 1"))
            .count()
            == 3
            && t.contains(r#"orchestrator_group_ready{host="slohost",group="web"} 1"#)
    })
    .await;
    let front1 = r#"host="slohost",group="web",agent="Front",replica="1""#;
    assert_eq!(
        value(
            &text,
            &format!(r#"orchestrator_agent_state{{{front1},state="running"}}"#)
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            r#"orchestrator_group_agents{host="slohost",group="web",state="healthy"}"#
        ),
        3.0
    );
    assert_eq!(
        value(
            &text,
            r#"orchestrator_group_ready{host="slohost",group="web"}"#
        ),
        1.0
    );
    // Health checks were timed, per agent.
    assert!(
        value(
            &text,
            r#"orchestrator_agent_health_check_duration_seconds_count{host="slohost",group="web",agent="Front"}"#
        ) >= 2.0
    );
    assert!(
        value(
            &text,
            r#"orchestrator_reconcile_duration_seconds_count{host="slohost"}"#
        ) > 0.0
    );
    // No container id anywhere.
    let id = h.container_of("Front").await.unwrap();
    assert!(!text.contains(&id[..12]));

    // A crash: counted as a failure and a restart.
    h.world.prober.set_healthy("Front", false);
    let text = metrics_until(&h, "Front's unhealthy replicas are counted", |t| {
        t.contains(r#"orchestrator_agent_failures_total{host="slohost",group="web",agent="Front",reason="unhealthy"} 2"#)
            || t.contains(r#"orchestrator_agent_failures_total{host="slohost",group="web",agent="Front",reason="unhealthy"} 3"#)
    })
    .await;
    assert_eq!(
        value(
            &text,
            r#"orchestrator_group_ready{host="slohost",group="web"}"#
        ),
        0.0
    );
    h.world.prober.set_healthy("Front", true);
    let text = metrics_until(&h, "Front is restarted", |t| {
        t.lines()
            .filter(|l| l.starts_with("orchestrator_agent_restarts_total{") && l.contains("Front"))
            .all(|l| !l.ends_with(" 0"))
    })
    .await;
    assert!(
        value(
            &text,
            &format!("orchestrator_agent_restarts_total{{{front1}}}")
        ) >= 1.0
    );
}

#[tokio::test(start_paused = true)]
async fn availability_and_request_slis_reach_the_report_and_the_series() {
    let h = Harness::start(SLO_HOST).await;
    h.client.group_start("web").await.unwrap();
    h.until_ready().await;
    // Every running Front is scraped; the first scrape is a baseline.
    h.world.metrics.serve("Front", 0, 0, 0);
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // 200 requests after the baseline: 4 failed (2% > the 1% allowed), 1 slow.
    h.world.metrics.serve("Front", 200, 4, 1);
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let report = h.client.slo(Some("web")).await.unwrap();
    assert_eq!(report.host, "slohost");
    let sli = |name: &str| {
        report.groups[0]
            .slis
            .iter()
            .find(|s| s.slo == name)
            .unwrap()
            .clone()
    };
    let avail = sli("availability");
    // Two required replicas (Helper is optional), healthy in every sample.
    assert!(avail.events >= 2 * 50, "{avail:?}");
    assert_eq!(avail.events % 2, 0, "{avail:?}");
    assert_eq!(avail.errors, 0);
    assert_eq!(avail.budget_remaining, Some(1.0));
    // Two replicas each counted their own 200 requests.
    let errors = sli("error_rate");
    assert_eq!((errors.events, errors.errors), (400, 8));
    let five = errors.windows.iter().find(|w| w.window == "5m").unwrap();
    assert!((five.error_ratio.unwrap() - 0.02).abs() < 1e-12);
    assert!((five.burn_rate.unwrap() - 2.0).abs() < 1e-9);
    let latency = sli("latency");
    assert_eq!((latency.events, latency.errors), (400, 2));
    assert_eq!(latency.latency_threshold_ms, Some(1000));
    assert_eq!(errors.slo_window, "30d");
    assert_eq!(
        errors
            .windows
            .iter()
            .map(|w| w.window.as_str())
            .collect::<Vec<_>>(),
        ["5m", "30m", "1h", "6h", "1d", "3d", "30d"]
    );

    let text = metrics_until(&h, "the error rate is exported", |t| {
        t.contains(
            r#"orchestrator_slo_errors_total{host="slohost",group="web",slo="error_rate"} 8"#,
        )
    })
    .await;
    assert_eq!(
        value(
            &text,
            r#"orchestrator_slo_events_total{host="slohost",group="web",slo="error_rate"}"#
        ),
        400.0
    );
    assert!(
        (value(
            &text,
            r#"orchestrator_slo_burn_rate{host="slohost",group="web",slo="error_rate",window="1h"}"#
        ) - 2.0)
            .abs()
            < 1e-9
    );
    assert!(
        (value(
            &text,
            r#"orchestrator_slo_objective_ratio{host="slohost",group="web",slo="error_rate"}"#
        ) - 0.99)
            .abs()
            < 1e-12
    );

    // Unhealthy replicas count against availability.
    h.world.prober.set_healthy("Front", false);
    let text = metrics_until(&h, "availability errors", |t| {
        !t.contains(
            r#"orchestrator_slo_errors_total{host="slohost",group="web",slo="availability"} 0"#,
        )
    })
    .await;
    assert!(
        value(
            &text,
            r#"orchestrator_slo_burn_rate{host="slohost",group="web",slo="availability",window="5m"}"#
        ) > 0.0
    );

    // A group without an SLO, and no such group, are refused by name.
    let e = h.client.slo(Some("batch")).await.unwrap_err();
    assert!(e.to_string().contains("no `slo:`"), "{e}");
    match h.client.slo(Some("webb")).await.unwrap_err() {
        orch_api::ClientError::Api(a) => {
            assert_eq!(a.code, ErrorCode::NotFound);
            assert!(a.message.contains("did you mean `web`"), "{}", a.message);
        }
        other => panic!("{other}"),
    }
    // All groups with an SLO: only `web`.
    let all = h.client.slo(None).await.unwrap();
    assert_eq!(
        all.groups
            .iter()
            .map(|g| g.group.as_str())
            .collect::<Vec<_>>(),
        ["web"]
    );
}

#[tokio::test(start_paused = true)]
async fn probes_nobody_answered_are_errors_of_the_request_slis() {
    let h = Harness::start(SLO_HOST).await;
    h.client.group_start("web").await.unwrap();
    h.until_ready().await;
    h.world.metrics.serve("Front", 0, 0, 0);
    tokio::time::sleep(Duration::from_secs(30)).await;
    // 200 requests, all answered well.
    h.world.metrics.serve("Front", 200, 0, 0);
    tokio::time::sleep(Duration::from_secs(30)).await;
    let sli = |report: orch_api::SloReport, name: &str| {
        report.groups[0]
            .slis
            .iter()
            .find(|s| s.slo == name)
            .unwrap()
            .clone()
    };
    let before = sli(h.client.slo(Some("web")).await.unwrap(), "error_rate");
    assert_eq!((before.events, before.errors), (400, 0));
    // Front stops answering: its own counters show nothing more, but the
    // probes that got no answer are bad events of both request SLIs.
    h.world.prober.set_healthy("Front", false);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let report = h.client.slo(Some("web")).await.unwrap();
    let errors = sli(report.clone(), "error_rate");
    assert!(errors.errors > 0, "{errors:?}");
    assert_eq!(errors.events, 400 + errors.errors, "{errors:?}");
    let latency = sli(report, "latency");
    assert!(latency.errors > 0, "{latency:?}");
}

#[tokio::test(start_paused = true)]
async fn the_slo_history_outlives_a_restart_and_follows_a_reload() {
    let mut h = Harness::start_in(World::new(), SLO_HOST).await;
    h.client.group_start("web").await.unwrap();
    h.until_ready().await;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let before = h.client.slo(Some("web")).await.unwrap().groups[0].slis[0].clone();
    assert_eq!(before.slo, "availability");
    assert!(before.events > 0);

    // Written at shutdown, read back by the next daemon: the windows keep
    // the history; the exported counters start over from zero.
    let period = |s: &orch_api::SloSli| s.windows.last().map_or(0, |w| w.events);
    h.restart().await;
    assert!(h.world.slo_store.saved().is_some());
    let after = h.client.slo(Some("web")).await.unwrap().groups[0].slis[0].clone();
    assert!(period(&after) >= period(&before), "{after:?} < {before:?}");
    assert!(after.events < before.events, "{after:?} vs {before:?}");

    // A reload that drops the error-rate objective keeps the others.
    let text = SLO_HOST.replace(
        "slo: {availability: 99.5%, latency_p99: 1s, error_rate: 1%}",
        "slo: {availability: 99.9%, latency_p99: 1s}",
    );
    h.client.apply("startup_config.yaml", &text).await.unwrap();
    let report = h.client.slo(Some("web")).await.unwrap();
    let slos: Vec<&str> = report.groups[0]
        .slis
        .iter()
        .map(|s| s.slo.as_str())
        .collect();
    assert_eq!(slos, ["availability", "latency"]);
    let avail = &report.groups[0].slis[0];
    assert!((avail.objective - 0.999).abs() < 1e-12);
    assert!(avail.events >= after.events);
    assert!(period(avail) >= period(&after));
}

/// `promtool check metrics` on the live text, when promtool is installed
/// (tests/observability/setup.sh installs it). Skipped without it only
/// outside CI: in CI (`CI` set) a missing promtool fails the test.
#[tokio::test(start_paused = true)]
async fn the_live_text_passes_promtool() {
    let Ok(out) = std::process::Command::new("promtool")
        .arg("--version")
        .output()
    else {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is not installed; run tests/observability/setup.sh"
        );
        eprintln!("promtool is not installed; skipping the promtool check");
        return;
    };
    assert!(out.status.success());
    let h = Harness::start(SLO_HOST).await;
    h.client.group_start("web").await.unwrap();
    h.until_ready().await;
    h.world.metrics.serve("Front", 0, 0, 0);
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    h.world.metrics.serve("Front", 10, 1, 0);
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let text = h.metrics().await;
    assert!(text.contains("orchestrator_slo_burn_rate{"), "{text}");
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
