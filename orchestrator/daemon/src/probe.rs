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

/// Makes one health probe of a container.
#[async_trait]
pub trait Prober: Send + Sync + Debug {
    async fn probe(&self, target: &ProbeTarget) -> bool;
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
        let timeout = t.check.timeout.std();
        match &t.check.probe {
            // Nothing to probe: running is healthy.
            Probe::None => true,
            Probe::Exec { command } => self
                .rt
                .exec(&t.id, command, timeout)
                .await
                .is_ok_and(|o| o.exit_code == 0),
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
                let Some(ip) = ip else { return false };
                let sa = SocketAddr::new(ip, *port);
                let ok = match &t.check.probe {
                    Probe::Http { path, .. } => http_ok(sa, path, timeout).await,
                    _ => tcp_ok(sa, timeout).await,
                };
                self.remember(&t.id, ok.then_some(ip));
                ok
            }
        }
    }
}

/// Probes `target` until the task is aborted, reporting every result and
/// how long the probe took.
pub async fn run(target: ProbeTarget, prober: Arc<dyn Prober>, news: event::Sender<HealthNews>) {
    let interval = target.check.interval.std();
    let mut ever_ok = false;
    loop {
        let began = tokio::time::Instant::now();
        let ok = prober.probe(&target).await;
        let took = began.elapsed();
        ever_ok |= ok;
        let report = HealthNews {
            key: target.key.clone(),
            id: target.id.clone(),
            ok,
            took,
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
    let attempt = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
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
        let line = std::str::from_utf8(&buf[..n]).ok()?;
        let code: u16 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some((200..400).contains(&code))
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)))
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
        assert!(tcp_ok(addr, Duration::from_millis(200)).await);
    }
}
