//! Health probes, run by the daemon itself (scratch images have no shell
//! for Docker's own checks). One task per watched container runs the
//! probe loop; what a single probe does is behind [`Prober`], so the
//! daemon runs on a scripted prober in tests. [`NetProber`] is the real
//! one: it finds the container's address on its network and probes it.

use std::collections::HashMap;
use std::fmt::Debug;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use orch_core::gpu::ReplicaKey;
use orch_core::model::{HealthCheck, Probe};
use orch_docker::ContainerRuntime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::event::{self, HealthNews};

/// Until the first success probes run this often, so a dependency chain is
/// not held back by a long `interval` between its first probes.
pub const STARTUP_INTERVAL: Duration = Duration::from_millis(200);

/// One container to probe.
#[derive(Debug, Clone)]
pub struct ProbeTarget {
    pub key: ReplicaKey,
    pub id: String,
    pub network: String,
    pub check: HealthCheck,
}

/// What one probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeOutcome {
    Healthy,
    /// The agent answered, unhealthy (an HTTP status outside 2xx/3xx, a
    /// failed `exec`).
    Unhealthy,
    /// Nothing answered: no address, connection refused, or timed out.
    /// Requests sent to it now would get no answer either.
    NoAnswer,
}

/// Makes one health probe of a container.
#[async_trait]
pub trait Prober: Send + Sync + Debug {
    async fn probe(&self, target: &ProbeTarget) -> bool;

    /// The probe with what a failure was; by default every failure is
    /// taken as no answer (a prober that cannot tell says nothing more).
    async fn probe_outcome(&self, target: &ProbeTarget) -> ProbeOutcome {
        if self.probe(target).await {
            ProbeOutcome::Healthy
        } else {
            ProbeOutcome::NoAnswer
        }
    }
}

/// Probes over the network (HTTP, TCP) or by `docker exec`.
#[derive(Debug)]
pub struct NetProber {
    rt: Arc<dyn ContainerRuntime>,
    /// Container addresses, found once and forgotten on a failed probe
    /// (a restarted container may have a new one). Held only to copy out
    /// or in, never across an await.
    addrs: Mutex<HashMap<String, IpAddr>>,
}

impl NetProber {
    pub fn new(rt: Arc<dyn ContainerRuntime>) -> Self {
        NetProber {
            rt,
            addrs: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, id: &str) -> Option<IpAddr> {
        self.addrs.lock().ok().and_then(|m| m.get(id).copied())
    }

    fn remember(&self, id: &str, ip: Option<IpAddr>) {
        if let Ok(mut m) = self.addrs.lock() {
            match ip {
                Some(ip) => {
                    m.insert(id.to_string(), ip);
                }
                None => {
                    m.remove(id);
                }
            }
        }
    }
}

#[async_trait]
impl Prober for NetProber {
    async fn probe(&self, t: &ProbeTarget) -> bool {
        self.probe_outcome(t).await == ProbeOutcome::Healthy
    }

    async fn probe_outcome(&self, t: &ProbeTarget) -> ProbeOutcome {
        let timeout = t.check.timeout.std();
        match &t.check.probe {
            // Nothing to probe: running is healthy.
            Probe::None => ProbeOutcome::Healthy,
            Probe::Exec { command } => {
                let ok = self
                    .rt
                    .exec(&t.id, command, timeout)
                    .await
                    .is_ok_and(|o| o.exit_code == 0);
                if ok {
                    ProbeOutcome::Healthy
                } else {
                    ProbeOutcome::Unhealthy
                }
            }
            Probe::Http { port, .. } | Probe::Tcp { port } => {
                let ip = match self.cached(&t.id) {
                    Some(ip) => Some(ip),
                    None => self
                        .rt
                        .inspect(&t.id)
                        .await
                        .ok()
                        .and_then(|i| i.ip_on(&t.network).and_then(|ip| ip.parse().ok())),
                };
                let Some(ip) = ip else {
                    return ProbeOutcome::NoAnswer;
                };
                let sa = SocketAddr::new(ip, *port);
                let outcome = match &t.check.probe {
                    Probe::Http { path, .. } => http_probe(sa, path, timeout).await,
                    _ if tcp_ok(sa, timeout).await => ProbeOutcome::Healthy,
                    _ => ProbeOutcome::NoAnswer,
                };
                self.remember(&t.id, (outcome == ProbeOutcome::Healthy).then_some(ip));
                outcome
            }
        }
    }
}

/// Probes `target` until the task is aborted, reporting every result and
/// how long the probe took. A probe that got no answer after the replica
/// has answered once carries the time it stands for (the interval until
/// the next probe); before that the replica is still starting.
pub async fn run(target: ProbeTarget, prober: Arc<dyn Prober>, news: event::Sender<HealthNews>) {
    let interval = target.check.interval.std();
    let mut ever_ok = false;
    loop {
        let began = tokio::time::Instant::now();
        let outcome = prober.probe_outcome(&target).await;
        let ok = outcome == ProbeOutcome::Healthy;
        let took = began.elapsed();
        let unanswered_for = (ever_ok && outcome == ProbeOutcome::NoAnswer).then_some(interval);
        ever_ok |= ok;
        let report = HealthNews {
            key: target.key.clone(),
            id: target.id.clone(),
            ok,
            took,
            unanswered_for,
        };
        if news.send(report).await.is_err() {
            return;
        }
        if target.check.probe == Probe::None {
            return;
        }
        tokio::time::sleep(if ever_ok {
            interval
        } else {
            interval.min(STARTUP_INTERVAL)
        })
        .await;
    }
}

pub async fn tcp_ok(addr: SocketAddr, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// A GET with HTTP/1.0 semantics; healthy on any 2xx or 3xx answer.
pub async fn http_ok(addr: SocketAddr, path: &str, timeout: Duration) -> bool {
    http_probe(addr, path, timeout).await == ProbeOutcome::Healthy
}

/// [`http_ok`], telling an unhealthy answer from none: a refused or timed
/// out connection, or one closed before a byte came back, is no answer.
pub async fn http_probe(addr: SocketAddr, path: &str, timeout: Duration) -> ProbeOutcome {
    let attempt = async {
        let Ok(mut s) = TcpStream::connect(addr).await else {
            return ProbeOutcome::NoAnswer;
        };
        let status = status_code(&mut s, addr, path).await;
        match status {
            Some(Some(code)) if (200..400).contains(&code) => ProbeOutcome::Healthy,
            Some(_) => ProbeOutcome::Unhealthy,
            None => ProbeOutcome::NoAnswer,
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or(ProbeOutcome::NoAnswer)
}

/// The answer to a GET of `path`: `None` when nothing came back, else
/// its status code (`None` inside when it is no HTTP status line).
async fn status_code(s: &mut TcpStream, addr: SocketAddr, path: &str) -> Option<Option<u16>> {
    let req = format!(
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: orchestratord\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = [0u8; 64];
    let mut n = 0;
    // The status line is all we need.
    while n < buf.len() {
        let m = s.read(&mut buf[n..]).await.ok()?;
        if m == 0 {
            break;
        }
        n += m;
        if buf[..n].contains(&b'\n') {
            break;
        }
    }
    if n == 0 {
        return None;
    }
    Some(
        std::str::from_utf8(&buf[..n])
            .ok()
            .and_then(|line| line.split_whitespace().nth(1)?.parse().ok()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn serve_once(status: &'static str) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 256];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn http_probes_read_the_status_line() {
        let t = Duration::from_secs(2);
        assert!(http_ok(serve_once("200 OK").await, "/health", t).await);
        assert!(!http_ok(serve_once("503 Service Unavailable").await, "/health", t).await);
        let closed = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        assert!(!http_ok(closed, "/health", t).await);
        assert!(!tcp_ok(closed, t).await);
    }

    #[tokio::test]
    async fn an_unhealthy_answer_is_told_from_no_answer() {
        let t = Duration::from_secs(2);
        assert_eq!(
            http_probe(serve_once("200 OK").await, "/health", t).await,
            ProbeOutcome::Healthy
        );
        assert_eq!(
            http_probe(serve_once("503 Service Unavailable").await, "/health", t).await,
            ProbeOutcome::Unhealthy
        );
        let closed = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        assert_eq!(
            http_probe(closed, "/health", t).await,
            ProbeOutcome::NoAnswer,
            "connection refused"
        );
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let _keep = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        assert!(!http_ok(addr, "/health", Duration::from_millis(200)).await);
        assert_eq!(
            http_probe(addr, "/health", Duration::from_millis(200)).await,
            ProbeOutcome::NoAnswer,
            "a timeout"
        );
        assert!(tcp_ok(addr, Duration::from_millis(200)).await);
    }
}
