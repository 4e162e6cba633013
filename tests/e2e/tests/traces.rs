//! Traces across hosts, as an OTLP collector sees them: two real daemons
//! federated on loopback, each exporting its spans over OTLP/HTTP to a
//! real receiver (`tests/traces/otlp_receiver.py`, decoding the protobuf
//! export with `opentelemetry-proto`), real agents in Docker. A
//! `group restart --with-dependents --wait` sent through one host to the
//! other is one trace from the caller's `remote_call` down to every
//! container stopped and started on the other host, and each host's spans
//! name it (`host.name`, `service.instance.id`). And the receiver itself,
//! against its bounds (`tests/traces/check_receiver.py`).

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e::{Daemon, Host, IMAGE, keys, repo_root};
use serde_json::Value;

fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| held[i].local_addr().unwrap().port())
}

/// The receiver process; killed when dropped.
struct Receiver {
    child: Child,
    port: u16,
    out: PathBuf,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The venv's python, with `opentelemetry-proto` (made on first use).
fn python() -> String {
    let setup = Command::new(repo_root().join("tests/traces/setup-venv.sh"))
        .output()
        .expect("tests/traces/setup-venv.sh");
    assert!(
        setup.status.success(),
        "{}",
        String::from_utf8_lossy(&setup.stderr)
    );
    String::from_utf8_lossy(&setup.stdout)
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_string()
}

impl Receiver {
    fn start(out: &Path) -> Receiver {
        let mut child = Command::new(python())
            .arg(repo_root().join("tests/traces/otlp_receiver.py"))
            .arg("--out")
            .arg(out)
            .stdout(Stdio::piped())
            .spawn()
            .expect("the OTLP receiver");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the receiver said {line:?}"));
        Receiver {
            child,
            port,
            out: out.to_path_buf(),
        }
    }

    fn spans(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn config(
    host: &Host,
    listen: u16,
    secret: &Path,
    peer: (&str, u16, &str),
    groups: &str,
) -> String {
    let (name, port, key) = peer;
    format!(
        r#"version: 1
host: {{name: {host}}}
defaults:
  image: {IMAGE}
  health: {{exec: ["/reference-agent", "--probe", "http://127.0.0.1:8080/health"], interval: 1s, timeout: 3s, retries: 2, start_period: 10s}}
  stop_timeout: 2s
groups:
{groups}
federation:
  listen: "tcp://127.0.0.1:{listen}"
  keys: {{secret_key_file: {secret}}}
  peers:
    - {{name: {name}, endpoint: "tcp://127.0.0.1:{port}", public_key: "{key}"}}
"#,
        host = host.name,
        secret = secret.display(),
    )
}

fn str_of<'a>(span: &'a Value, field: &str) -> &'a str {
    span[field].as_str().unwrap_or_default()
}

fn resource<'a>(span: &'a Value, key: &str) -> &'a str {
    span["resource"][key].as_str().unwrap_or_default()
}

fn summary(spans: &[Value]) -> Vec<String> {
    spans
        .iter()
        .map(|s| {
            format!(
                "{} {} {} {}",
                resource(s, "host.name"),
                str_of(s, "name"),
                s["attributes"]["replica"].as_str().unwrap_or(""),
                str_of(s, "trace_id"),
            )
        })
        .collect()
}

#[test]
fn the_receiver_decodes_exports_and_refuses_what_exceeds_its_bound() {
    let out = Command::new(python())
        .arg(repo_root().join("tests/traces/check_receiver.py"))
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_remote_restart_is_one_trace_across_hosts_each_naming_its_own() {
    let main = Host::new("trmain");
    let pc2 = Host::new("trpc2");
    let receiver = Receiver::start(&main.path("spans.jsonl"));
    let (km, kp) = (keys(&main), keys(&pc2));
    let [main_port, pc2_port] = free_ports::<2>();
    let env = vec![
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT".to_string(),
            format!("http://127.0.0.1:{}", receiver.port),
        ),
        ("OTEL_BSP_SCHEDULE_DELAY".to_string(), "200".to_string()),
    ];
    let main_text = config(
        &main,
        main_port,
        &km.secret,
        (&pc2.name, pc2_port, &kp.public),
        "  idle:\n    agents:\n      Idle: {}\n",
    );
    let pc2_text = config(
        &pc2,
        pc2_port,
        &kp.secret,
        (&main.name, main_port, &km.public),
        "  base:\n    agents:\n      Base: {}\n  top:\n    depends_on: [base]\n    agents:\n      Top: {}\n",
    );
    let no_metrics = ["--metrics-listen", "off"];
    let dm = Daemon::start_with_env(&main, &main_text, &no_metrics, &env);
    let dp = Daemon::start_with_env(&pc2, &pc2_text, &no_metrics, &env);
    dm.wait_until("pc2 is alive", Duration::from_secs(60), |d| {
        let peers: Vec<Value> = serde_json::from_str(&d.ctl_ok(&["-o", "json", "peers"])).unwrap();
        peers
            .iter()
            .any(|p| p["name"] == pc2.name.as_str() && p["state"] == "alive")
    });
    dp.ctl_ok(&["group", "start", "top", "--wait", "--timeout", "120s"]);

    let out = dm.ctl(&[
        "--host",
        &pc2.name,
        "group",
        "restart",
        "base",
        "--with-dependents",
        "--wait",
        "--timeout",
        "120s",
    ]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        dp.log_tail(40)
    );

    // The caller's span of the restart, on mainpc.
    let started = Instant::now();
    let (spans, trace) = loop {
        let spans = receiver.spans();
        let call = spans.iter().find(|s| {
            str_of(s, "name") == "remote_call" && s["attributes"]["op"] == "group_restart"
        });
        if let Some(call) = call {
            let trace = str_of(call, "trace_id").to_string();
            let starts = spans
                .iter()
                .filter(|s| str_of(s, "trace_id") == trace && str_of(s, "name") == "agent_start")
                .count();
            if starts >= 2 {
                break (spans, trace);
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no complete restart trace: {:#?}\n{}",
            summary(&spans),
            dp.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let in_trace: Vec<&Value> = spans
        .iter()
        .filter(|s| str_of(s, "trace_id") == trace)
        .collect();
    let one = |name: &str| -> &Value {
        let found: Vec<_> = in_trace
            .iter()
            .filter(|s| str_of(s, "name") == name)
            .collect();
        assert_eq!(found.len(), 1, "{name}: {:#?}", summary(&spans));
        found[0]
    };
    let call = one("remote_call");
    let command = one("remote_command");
    let restart = one("group_restart");
    assert_eq!(resource(call, "host.name"), main.name);
    assert_eq!(resource(command, "host.name"), pc2.name);
    assert_eq!(resource(restart, "host.name"), pc2.name);
    assert_eq!(str_of(command, "parent_span_id"), str_of(call, "span_id"));
    assert_eq!(
        str_of(restart, "parent_span_id"),
        str_of(command, "span_id")
    );
    // Both groups' containers stopped and started again on pc2, each
    // operation a child of the restart.
    for op in ["agent_stop", "agent_start"] {
        let mut replicas: Vec<&str> = in_trace
            .iter()
            .filter(|s| str_of(s, "name") == op)
            .map(|s| {
                assert_eq!(resource(s, "host.name"), pc2.name, "{op}");
                assert_eq!(
                    str_of(s, "parent_span_id"),
                    str_of(restart, "span_id"),
                    "{op}: {:#?}",
                    summary(&spans)
                );
                s["attributes"]["replica"].as_str().unwrap()
            })
            .collect();
        replicas.sort();
        replicas.dedup();
        assert_eq!(replicas, ["Base", "Top"], "{op}: {:#?}", summary(&spans));
    }

    // Every span of either host names it, and its process.
    for s in &spans {
        let host = resource(s, "host.name");
        assert!(host == main.name || host == pc2.name, "{:?}", s["resource"]);
        assert_eq!(resource(s, "service.name"), "orchestratord");
        assert!(
            resource(s, "service.instance.id").starts_with(&format!("{host}-")),
            "{:?}",
            s["resource"]
        );
    }
    assert!(spans.iter().any(|s| resource(s, "host.name") == main.name));
    drop(dm);
    drop(dp);
}
