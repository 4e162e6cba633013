//! Observability end to end: two daemons as two hosts (simulated GPUs:
//! MPS on an RTX 4090, MIG on an A100) running real agents, scraped by a
//! real Prometheus (Debian's `prometheus`, started by
//! `tests/observability/run_local.sh` with the shipped rules at time scale
//! 60); every query of every dashboard returns data; an agent made to fail
//! its availability SLO (`AGENT_UNHEALTHY_IF_EXISTS`) drives the burn rate
//! until the page alert fires, and the alert resolves once it is healed;
//! the budget Prometheus computes from the exported counters is the one
//! the daemon reports; and a daemon killed with `kill -9` and restarted
//! exports counters that start again from zero, never a snapshot's older
//! totals, while its windows keep the history.
//! And: the spans of a `group start` reach an OTLP receiver under one
//! trace id.

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::{Daemon, Host, IMAGE, http_get, keys, repo_root, sim_env};
use prost::Message as _;

/// `N` distinct free ports of 127.0.0.1: all bound at once, so none is
/// handed out twice, then released for the daemons to bind.
fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| held[i].local_addr().unwrap().port())
}

/// The `federation:` section of a host on loopback port `listen` with its
/// secret key, and one peer (name, port, public key).
fn federation(listen: u16, secret: &Path, peer: (&str, u16, &str)) -> String {
    let (name, port, key) = peer;
    format!(
        "federation:\n  listen: \"tcp://127.0.0.1:{listen}\"\n  keys: {{secret_key_file: {}}}\n  peers:\n    - {{name: {name}, endpoint: \"tcp://127.0.0.1:{port}\", public_key: \"{key}\"}}\n",
        secret.display()
    )
}

/// A host with an infra group and a GPU group, both with SLOs over 12h:
/// the SLO period of the rules at time scale 60, so the daemon's budget and
/// Prometheus's are shares of the same period. `gpu` is the GPU agent's
/// request; `ctl` is mounted at /ctl in it.
fn config(name: &str, port: u16, gpu: &str, sharing: &str, ctl: &Path) -> String {
    format!(
        r#"version: 1
host: {{name: {name}}}
defaults:
  image: {IMAGE}
  restart: {{policy: on-failure, backoff: {{initial: 200ms, max: 1s}}, crashloop: {{restarts: 3, window: 1m}}}}
  health: {{http: {{port: 8080}}, interval: 500ms, timeout: 2s, retries: 3, start_period: 2s}}
  stop_timeout: 1s
gpus:
  - select: {{index: 0}}
    sharing: {sharing}
groups:
  infra_core:
    slo: {{availability: 99.9%, error_rate: 1%, window: 12h}}
    agents:
      ServiceRegistry: {{}}
  vision_gpu:
    depends_on: [infra_core]
    slo: {{availability: 99.5%, window: 12h}}
    agents:
      FaceRecognitionAgent:
        gpu: {gpu}
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

fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (tests/e2e/setup-apt.sh promtool=prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Sends `/work` requests to an agent from this machine (its address on
/// the host's Docker network).
fn work(host: &Host, agent: &str, n: usize) {
    let seen = host.container_of(agent).unwrap();
    let ip = e2e::docker_ok(&[
        "inspect",
        "--format",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        &seen.id,
    ]);
    for _ in 0..n {
        if let Ok(mut s) = TcpStream::connect((ip.as_str(), 8080)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = write!(s, "GET /work HTTP/1.0\r\nHost: agent\r\n\r\n");
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink);
        }
    }
}

#[test]
fn prometheus_scrapes_two_hosts_dashboards_have_data_and_a_burning_slo_pages() {
    assert!(
        Command::new("prometheus")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "prometheus is not installed: run tests/e2e/setup-apt.sh prometheus=prometheus"
    );
    let a = Host::new("obs-mps");
    let b = Host::new("obs-mig");
    // Metrics and bus ports of both hosts.
    let [port_a, port_b, bus_a, bus_b] = free_ports();
    let (ctl_a, ctl_b) = (a.path("ctl"), b.path("ctl"));
    std::fs::create_dir_all(&ctl_a).unwrap();
    std::fs::create_dir_all(&ctl_b).unwrap();
    // The two hosts federate over loopback, so the peer series have data.
    let (ka, kb) = (keys(&a), keys(&b));
    let da = Daemon::start_with_env(
        &a,
        &(config(
            &a.name,
            port_a,
            "{slice: mps, memory: 2g, compute: 10%}",
            "mps",
            &ctl_a,
        ) + &federation(bus_a, &ka.secret, (&b.name, bus_b, &kb.public))),
        &[],
        &sim_env(&a, "config/mainpc/gpus.sim.yaml"),
    );
    let db = Daemon::start_with_env(
        &b,
        &(config(
            &b.name,
            port_b,
            "{slice: mig, profile: 1g.10gb}",
            "mig",
            &ctl_b,
        ) + &federation(bus_b, &kb.secret, (&a.name, bus_a, &ka.public))),
        &[],
        &sim_env(&b, "config/sim/lab-a100.yaml"),
    );
    for d in [&da, &db] {
        d.ctl_ok(&["group", "start", "vision_gpu", "--wait", "--timeout", "120"]);
    }
    for (d, peer) in [(&da, &b.name), (&db, &a.name)] {
        d.wait_until(&format!("{peer} is alive"), Duration::from_secs(30), |d| {
            let peers: serde_json::Value =
                serde_json::from_str(&d.ctl_ok(&["-o", "json", "peers"])).unwrap();
            peers[0]["name"] == peer.as_str() && peers[0]["state"] == "alive"
        });
    }

    // Each daemon's live text passes promtool, GPU series included (the
    // text is the snapshot published each second: wait for one taken
    // after the start).
    for (d, port, kind) in [(&da, port_a, "mps"), (&db, port_b, "mig")] {
        d.wait_until(
            &format!("/metrics shows the {kind} slice"),
            Duration::from_secs(30),
            |_| http_get(port, "/metrics").is_some_and(|t| t.contains(&format!("kind=\"{kind}\""))),
        );
        let text = http_get(port, "/metrics").expect("/metrics answers");
        promtool_check(&text);
        assert!(
            text.contains(&format!("kind=\"{kind}\"")),
            "no {kind} slice in:\n{text}"
        );
    }

    let dir = a.path("prometheus");
    let dir_s = dir.to_str().unwrap().to_string();
    let _prom = Prometheus { dir: dir.clone() };
    let target_a = format!("127.0.0.1:{port_a}");
    let target_b = format!("127.0.0.1:{port_b}");
    run_local_ok(&[
        "start", "--dir", &dir_s, "--scale", "60", "--target", &target_a, "--target", &target_b,
    ]);

    // Requests for the error-rate SLO, read from the agent's own metrics
    // (the first scrape of a replica is its baseline: requests count from
    // the second on).
    da.wait_until(
        "the error-rate SLO counted requests",
        Duration::from_secs(90),
        |_| {
            work(&a, "ServiceRegistry", 5);
            http_get(port_a, "/metrics").is_some_and(|t| {
                t.lines().any(|l| {
                    l.starts_with("orchestrator_slo_events_total{")
                        && l.contains("slo=\"error_rate\"")
                        && !l.ends_with(" 0")
                })
            })
        },
    );

    // The budget spent so far, as the rules compute it from the exported
    // counters and as the daemon reports it. The daemon has counted the
    // agent's first start as bad (no replica is excused yet), before
    // Prometheus ran: the two are compared by what the burn below spends.
    let url = std::fs::read_to_string(dir.join("prometheus.url")).unwrap();
    let selector = format!(
        "{{host=\"{}\", group=\"vision_gpu\", slo=\"availability\"}}",
        a.name
    );
    let budget_expr = format!("slo:period_error_budget_remaining:ratio{selector}");
    let wait_query = |expr: &str| {
        let out = Command::new("python3")
            .arg(repo_root().join("tests/observability/promwait.py"))
            .args([url.trim(), "--timeout", "60", "query", expr])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    wait_query(&budget_expr);
    let daemon_budget = || {
        metric_value(
            &http_get(port_a, "/metrics").unwrap(),
            &format!(
                "orchestrator_slo_error_budget_remaining_ratio{{host=\"{}\",group=\"vision_gpu\",slo=\"availability\"}}",
                a.name
            ),
        )
    };
    let spent_before = (
        1.0 - prom_value(url.trim(), &budget_expr),
        1.0 - daemon_budget(),
    );

    // FaceRecognitionAgent on host a fails its health checks: it is
    // restarted, crash-loops, and its group's availability burns.
    std::fs::write(ctl_a.join("sick"), "").unwrap();
    let page = [
        "OrchestratorSLOBudgetBurnFast",
        "--label",
        &format!("host={}", a.name),
        "--label",
        "group=vision_gpu",
        "--label",
        "slo=availability",
    ];
    let wait = |state: &str| {
        let mut args = vec!["wait-alert", "--dir", &dir_s, "--timeout", "240"];
        args.extend(page.iter().copied());
        args.extend(["--state", state]);
        run_local_ok(&args);
    };
    wait("firing");
    // Host b's SLOs are healthy: no page for it.
    run_local_ok(&[
        "wait-alert",
        "--dir",
        &dir_s,
        "--timeout",
        "0",
        "OrchestratorSLOBudgetBurnFast",
        "--label",
        &format!("host={}", b.name),
        "--state",
        "resolved",
    ]);
    // Crash-looping by now (it restarts every few seconds).
    da.wait_until(
        "FaceRecognitionAgent crash-loops",
        Duration::from_secs(60),
        |_| {
            http_get(port_a, "/metrics").is_some_and(|t| {
                t.lines().any(|l| {
                    l.starts_with("orchestrator_agent_crashlooping{")
                        && l.contains("FaceRecognitionAgent")
                        && l.ends_with(" 1")
                })
            })
        },
    );

    // ... and Prometheus has scraped it so.
    let seen = Command::new("python3")
        .arg(repo_root().join("tests/observability/promwait.py"))
        .args([
            url.trim(),
            "--timeout",
            "30",
            "query",
            "orchestrator_agent_crashlooping == 1",
        ])
        .output()
        .unwrap();
    assert!(
        seen.status.success(),
        "{}{}",
        String::from_utf8_lossy(&seen.stdout),
        String::from_utf8_lossy(&seen.stderr)
    );

    // Every panel of every dashboard has data, read from the JSON, the
    // federation panels included. But three: no agent of these hosts holds
    // a process on a GPU (the simulator runs none unless told: the
    // per-agent GPU series are checked on the real engine in gpu_use.rs)
    // and none autoscales (the decisions in autoscale.rs).
    let checked = run_local_ok(&[
        "check-dashboards",
        "--dir",
        &dir_s,
        "--allow-empty",
        "^(GPU memory used per agent|GPU memory by holder|Autoscaler decisions)$",
    ]);
    assert!(!checked.contains("FAIL"), "{checked}");

    // Healed: the short window clears and the page resolves.
    std::fs::remove_file(ctl_a.join("sick")).unwrap();
    wait("resolved");
    da.wait_until(
        "FaceRecognitionAgent is healthy again",
        Duration::from_secs(60),
        |d| d.status().agents.healthy == d.status().agents.wanted,
    );

    // The burn spent the same share of the period's allowance in the
    // rules, computed from the exported counters, as in the daemon: both
    // are 1 - consumed / allowance over the same 12h period. (Samples and
    // scrapes a second apart, and an allowance extrapolated from slightly
    // different spans: a tolerance.)
    let spent_rules = 1.0 - prom_value(url.trim(), &budget_expr) - spent_before.0;
    let spent_daemon = 1.0 - daemon_budget() - spent_before.1;
    assert!(
        spent_daemon > 0.01 && spent_rules > 0.01,
        "the burn spent nothing? rules {spent_rules}, daemon {spent_daemon}"
    );
    assert!(
        (spent_rules - spent_daemon).abs() <= 0.15 * spent_daemon,
        "budget spent by the burn: rules {spent_rules}, daemon {spent_daemon} (before: {spent_before:?})"
    );

    // Counters never go backwards: host b stops cleanly (its SLO history
    // is saved), runs on, and is killed; the next daemon restores the
    // older snapshot, and its exported counters start from zero rather than
    // from the snapshot's totals, which Prometheus would take for new
    // events. Its windows still hold the history.
    let events_b = |text: &str| {
        metric_value(
            text,
            &format!(
                "orchestrator_slo_events_total{{host=\"{}\",group=\"vision_gpu\",slo=\"availability\"}}",
                b.name
            ),
        )
    };
    let mut db = db;
    db.terminate();
    db.spawn();
    std::thread::sleep(Duration::from_secs(5));
    let window_events = |d: &Daemon| {
        let report: serde_json::Value =
            serde_json::from_str(&d.ctl_ok(&["-o", "json", "slo", "vision_gpu"])).unwrap();
        let sli = &report["groups"][0]["slis"][0];
        assert_eq!(sli["slo"], "availability", "{report}");
        sli["windows"].as_array().unwrap().last().unwrap()["events"]
            .as_u64()
            .unwrap()
    };
    let before_kill = window_events(&db);
    db.kill9();
    let restarted = Instant::now();
    db.spawn();
    db.wait_until(
        "/metrics shows the SLO counters",
        Duration::from_secs(30),
        |_| {
            http_get(port_b, "/metrics")
                .is_some_and(|t| t.contains("orchestrator_slo_events_total{"))
        },
    );
    let exported = events_b(&http_get(port_b, "/metrics").unwrap());
    // One availability event a second (one wanted replica) since the start.
    let since = restarted.elapsed().as_secs_f64();
    assert!(
        exported <= since + 2.0,
        "events_total is {exported} {since:.1} s after the restart: not from zero"
    );
    assert!(
        window_events(&db) >= before_kill.saturating_sub(5),
        "the windows lost the history: {} < {before_kill}",
        window_events(&db)
    );
}

/// The value of one sample line of a Prometheus text exposition.
fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

/// The value of an instant query that returns one series.
fn prom_value(url: &str, expr: &str) -> f64 {
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let query: String = expr
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b':' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let body = http_get(port, &format!("/api/v1/query?query={query}")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let result = v["data"]["result"].as_array().unwrap();
    assert_eq!(result.len(), 1, "{expr}: {v}");
    result[0]["value"][1].as_str().unwrap().parse().unwrap()
}

/// Spans as the receiver got them: name, trace id, span id, parent id.
type Spans = Arc<Mutex<Vec<(String, Vec<u8>, Vec<u8>, Vec<u8>)>>>;

/// An OTLP/HTTP receiver: takes `POST /v1/traces` (protobuf) and keeps
/// every span.
fn otlp_receiver() -> (u16, Spans) {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let spans: Spans = Arc::default();
    let keep = spans.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let keep = keep.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut out = stream;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut length = 0usize;
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 {
                            return;
                        }
                        let h = h.trim_end();
                        if h.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = h.split_once(':')
                            && k.eq_ignore_ascii_case("content-length")
                        {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0u8; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    if line.starts_with("POST /v1/traces")
                        && let Ok(req) = ExportTraceServiceRequest::decode(body.as_slice())
                    {
                        let mut got = keep.lock().unwrap();
                        for rs in req.resource_spans {
                            for ss in rs.scope_spans {
                                for s in ss.spans {
                                    got.push((s.name, s.trace_id, s.span_id, s.parent_span_id));
                                }
                            }
                        }
                    }
                    let _ = out.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n",
                    );
                }
            });
        }
    });
    (port, spans)
}

#[test]
fn the_spans_of_a_group_start_reach_an_otlp_receiver_under_one_trace() {
    let (port, spans) = otlp_receiver();
    let host = Host::new("otlp");
    let ctl = host.path("ctl");
    std::fs::create_dir_all(&ctl).unwrap();
    let env = {
        let mut env = sim_env(&host, "config/mainpc/gpus.sim.yaml");
        env.push((
            "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
            format!("http://127.0.0.1:{port}"),
        ));
        env.push(("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into()));
        env
    };
    let d = Daemon::start_with_env(
        &host,
        &config(
            &host.name,
            free_ports::<1>()[0],
            "{slice: mps, memory: 2g, compute: 10%}",
            "mps",
            &ctl,
        ),
        &["--log-format", "json"],
        &env,
    );
    // A start that acts at once (Docker and the GPUs known) reconciles
    // under its own span; one that comes first waits for them.
    d.wait_until(
        "Docker and the GPUs are known",
        Duration::from_secs(30),
        |d| {
            let s = d.status();
            s.docker.connected && s.gpu.available
        },
    );
    d.ctl_ok(&["group", "start", "vision_gpu", "--wait", "--timeout", "120"]);

    // group_start ends when its groups are ready; the batch exporter sends
    // it within its schedule delay.
    let start = Instant::now();
    let root = loop {
        let found = spans
            .lock()
            .unwrap()
            .iter()
            .find(|s| s.0 == "group_start")
            .cloned();
        if let Some(r) = found {
            break r;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no group_start span; got {:?}\ndaemon log:\n{}",
            spans
                .lock()
                .unwrap()
                .iter()
                .map(|s| &s.0)
                .collect::<Vec<_>>(),
            d.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(root.3.is_empty(), "group_start is a root span");
    // The group's start span ends when the request is answered; its
    // agents' spans come as they start (the second once the first group
    // is ready).
    let waited = Instant::now();
    let got = loop {
        let got = spans.lock().unwrap().clone();
        let agents = got
            .iter()
            .filter(|s| s.1 == root.1 && s.0 == "agent_start")
            .count();
        if agents >= 2 || waited.elapsed() > Duration::from_secs(60) {
            break got;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let trace: Vec<_> = got.iter().filter(|s| s.1 == root.1).collect();
    let by_id: BTreeMap<&Vec<u8>, &String> = trace.iter().map(|s| (&s.2, &s.0)).collect();
    let parent_name = |s: &(String, Vec<u8>, Vec<u8>, Vec<u8>)| by_id.get(&s.3).copied();
    // Both agents (ServiceRegistry, then FaceRecognitionAgent once
    // infra_core is ready) start as children of the group's start.
    let agents: Vec<_> = trace.iter().filter(|s| s.0 == "agent_start").collect();
    assert!(agents.len() >= 2, "{trace:?}");
    assert!(
        agents
            .iter()
            .all(|s| parent_name(s).is_some_and(|p| p == "group_start")),
        "{trace:?}"
    );
    // The GPU agent's MPS share was prepared inside its start.
    let prep: Vec<_> = trace.iter().filter(|s| s.0 == "gpu_prepare").collect();
    assert_eq!(prep.len(), 1, "{trace:?}");
    assert_eq!(
        parent_name(prep[0]).map(String::as_str),
        Some("agent_start")
    );
    let names: BTreeSet<&str> = trace.iter().map(|s| s.0.as_str()).collect();
    assert!(names.contains("reconcile"), "{names:?}");

    // The logs were JSON lines, without colour codes.
    let log = std::fs::read_to_string(&d.log).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("orchestratord ready"))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["level"], "INFO");
    assert!(!log.contains('\u{1b}'));
}
