//! Alerting end to end: a real Alertmanager (Debian's
//! `prometheus-alertmanager`) on a loopback port, run with the shipped
//! `compose/alertmanager/alertmanager.yml` whose timings are shortened and
//! whose receivers point at a [`Webhook`] of the test: a tiny HTTP server
//! that keeps every notification it is sent.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::repo_root;

/// `N` distinct free ports of 127.0.0.1: all bound at once, so none is
/// handed out twice, then released for their users to bind.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    std::array::from_fn(|i| held[i].local_addr().expect("local addr").port())
}

/// `GET path` on 127.0.0.1:port; the body of a 200 answer.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.split_whitespace()
        .nth(1)
        .is_some_and(|c| c == "200")
        .then(|| body.to_string())
}

/// One notification as the webhook got it.
#[derive(Debug, Clone)]
pub struct Notification {
    /// The receiver's path (`/page`, `/ticket`).
    pub path: String,
    /// Alertmanager's webhook payload (`groupKey`, `alerts`, ...).
    pub body: serde_json::Value,
    pub at: Instant,
}

impl Notification {
    /// The alerts in it with this status (`firing`, `resolved`).
    pub fn alerts(&self, status: &str) -> Vec<&serde_json::Value> {
        self.body["alerts"]
            .as_array()
            .map(|a| a.iter().filter(|x| x["status"] == status).collect())
            .unwrap_or_default()
    }
}

/// The largest notification body kept: Alertmanager's payloads of a few
/// alerts are a few KiB.
const MAX_BODY: usize = 1 << 20;

/// An HTTP server on 127.0.0.1 that answers 200 to every request and keeps
/// each POST body as a [`Notification`].
#[derive(Debug)]
pub struct Webhook {
    pub port: u16,
    got: Arc<Mutex<Vec<Notification>>>,
}

impl Webhook {
    pub fn start() -> Webhook {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind webhook");
        let port = listener.local_addr().expect("webhook addr").port();
        let got: Arc<Mutex<Vec<Notification>>> = Arc::default();
        let keep = got.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let keep = keep.clone();
                std::thread::spawn(move || serve(stream, &keep));
            }
        });
        Webhook { port, got }
    }

    /// Every notification so far, in the order they came.
    pub fn notifications(&self) -> Vec<Notification> {
        self.got.lock().map(|g| g.clone()).unwrap_or_default()
    }

    /// Waits up to `limit` for a notification `pick` accepts; returns its
    /// index.
    pub fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        mut pick: impl FnMut(&Notification) -> bool,
    ) -> usize {
        let start = Instant::now();
        loop {
            let got = self.notifications();
            if let Some(i) = got.iter().position(&mut pick) {
                return i;
            }
            assert!(
                start.elapsed() < limit,
                "no notification {what} within {limit:?}; got:\n{}",
                got.iter()
                    .map(|n| format!("{} {}", n.path, n.body))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// One connection: requests one after the other (Alertmanager keeps the
/// connection alive), each answered 200.
fn serve(stream: TcpStream, keep: &Mutex<Vec<Notification>>) {
    let Ok(clone) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(clone);
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
        if length > MAX_BODY {
            return;
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let mut parts = line.split_whitespace();
        if parts.next() == Some("POST")
            && let (Some(path), Ok(body)) = (
                parts.next(),
                serde_json::from_slice::<serde_json::Value>(&body),
            )
            && let Ok(mut got) = keep.lock()
        {
            got.push(Notification {
                path: path.to_string(),
                body,
                at: Instant::now(),
            });
        }
        if out
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}

/// The shipped Alertmanager configuration with its waits shortened to
/// seconds and both receivers sent to `webhook_port` of 127.0.0.1. Each
/// text replaced must be in the shipped file, so a change there that this
/// copy would silently miss fails the test instead.
pub fn test_config(webhook_port: u16) -> String {
    let path = repo_root().join("compose/alertmanager/alertmanager.yml");
    let mut text = std::fs::read_to_string(&path).expect("compose/alertmanager/alertmanager.yml");
    for (from, to) in [
        ("group_wait: 30s", "group_wait: 1s"),
        ("group_wait: 10s", "group_wait: 1s"),
        ("group_interval: 5m", "group_interval: 2s"),
        (
            "http://127.0.0.1:9095/",
            &format!("http://127.0.0.1:{webhook_port}/"),
        ),
    ] {
        assert!(text.contains(from), "{} has no `{from}`", path.display());
        text = text.replace(from, to);
    }
    text
}

/// A running Alertmanager; killed when dropped.
#[derive(Debug)]
pub struct Alertmanager {
    pub port: u16,
    child: Child,
    pub log: PathBuf,
}

impl Alertmanager {
    /// Starts `prometheus-alertmanager` with `config` on 127.0.0.1:`port`,
    /// its data and log in `dir`, no cluster port; returns once ready.
    pub fn start(dir: &Path, config: &str, port: u16) -> Alertmanager {
        std::fs::create_dir_all(dir).expect("alertmanager dir");
        let file = dir.join("alertmanager.yml");
        std::fs::write(&file, config).expect("write alertmanager.yml");
        let log = dir.join("alertmanager.log");
        let child = Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", file.display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("alertmanager log"))
            .spawn()
            .expect("prometheus-alertmanager (tests/e2e/setup-apt.sh prometheus-alertmanager=prometheus-alertmanager)");
        let am = Alertmanager { port, child, log };
        let start = Instant::now();
        while http_get(port, "/-/ready").is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "alertmanager did not get ready:\n{}",
                std::fs::read_to_string(&am.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        am
    }

    /// The alerts it holds (`/api/v2/alerts`: active, silenced and
    /// inhibited alike).
    pub fn alerts(&self) -> Vec<serde_json::Value> {
        http_get(self.port, "/api/v2/alerts")
            .and_then(|t| serde_json::from_str::<Vec<serde_json::Value>>(&t).ok())
            .unwrap_or_default()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
