//! Scrapes of the agents' own `/metrics`, for the request SLIs (latency,
//! error rate). The owner picks the targets on an interval; one task
//! scrapes them (a few at a time, each bounded in time and size; no
//! process per agent), reduces each answer to an [`AgentScrape`] off the
//! owner, and reports it as [`Scraped`] news. What one fetch does is behind
//! [`MetricsFetcher`], so the daemon runs on a scripted one in tests.

use std::collections::HashMap;
use std::fmt::Debug;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use orch_core::gpu::ReplicaKey;
use orch_core::slo::promtext::{self, Limits};
use orch_core::slo::{AgentScrape, AgentSeries};
use orch_docker::ContainerRuntime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::event::{self, ScrapeError, Scraped};

/// How many agents are scraped at once.
const PARALLEL: usize = 8;

/// One replica to scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrapeTarget {
    pub key: ReplicaKey,
    pub group: String,
    pub container: String,
    pub network: String,
    pub port: u16,
    /// A gauge its autoscaler scales on (`autoscale.metric.name`).
    pub gauge: Option<String>,
}

/// Fetches one replica's metrics text.
#[async_trait]
pub trait MetricsFetcher: Send + Sync + Debug {
    async fn fetch(
        &self,
        target: &ScrapeTarget,
        timeout: Duration,
        max_bytes: usize,
    ) -> Result<Vec<u8>, ScrapeError>;
}

/// `GET /metrics` on the container's address on its network.
#[derive(Debug)]
pub struct HttpFetcher {
    rt: Arc<dyn ContainerRuntime>,
    /// Container addresses, forgotten on a failed fetch (a restarted
    /// container may have a new one). Never held across an await.
    addrs: Mutex<HashMap<String, IpAddr>>,
}

impl HttpFetcher {
    pub fn new(rt: Arc<dyn ContainerRuntime>) -> HttpFetcher {
        HttpFetcher {
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
                Some(ip) => m.insert(id.to_string(), ip),
                None => m.remove(id),
            };
        }
    }
}

#[async_trait]
impl MetricsFetcher for HttpFetcher {
    async fn fetch(
        &self,
        t: &ScrapeTarget,
        timeout: Duration,
        max_bytes: usize,
    ) -> Result<Vec<u8>, ScrapeError> {
        let ip = match self.cached(&t.container) {
            Some(ip) => Some(ip),
            None => self
                .rt
                .inspect(&t.container)
                .await
                .ok()
                .and_then(|i| i.ip_on(&t.network).and_then(|ip| ip.parse().ok())),
        };
        let ip = ip.ok_or_else(|| ScrapeError::NoAddress(t.network.clone()))?;
        let result = http_get(SocketAddr::new(ip, t.port), "/metrics", timeout, max_bytes).await;
        self.remember(&t.container, result.is_ok().then_some(ip));
        result
    }
}

/// A GET with HTTP/1.0 semantics (the body ends with the connection),
/// giving the body of a 200 answer of at most `max_bytes`.
pub async fn http_get(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
    max_bytes: usize,
) -> Result<Vec<u8>, ScrapeError> {
    // Headers are small; room for them on top of the body limit.
    let cap = max_bytes + 16 * 1024;
    let attempt = async {
        let io = |e: std::io::Error| ScrapeError::Io(e.to_string());
        let mut s = TcpStream::connect(addr).await.map_err(io)?;
        let req = format!(
            "GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: orchestratord\r\nAccept: text/plain\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.map_err(io)?;
        let mut buf = Vec::with_capacity(8 * 1024);
        let mut chunk = [0u8; 8 * 1024];
        loop {
            let n = s.read(&mut chunk).await.map_err(io)?;
            if n == 0 {
                break;
            }
            if buf.len() + n > cap {
                return Err(ScrapeError::TooLarge(max_bytes));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let end = buf
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or(ScrapeError::Malformed)?;
        let head = std::str::from_utf8(&buf[..end]).map_err(|_| ScrapeError::Malformed)?;
        let code: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or(ScrapeError::Malformed)?;
        if code != 200 {
            return Err(ScrapeError::Status(code));
        }
        let body = buf.split_off(end + 4);
        if body.len() > max_bytes {
            return Err(ScrapeError::TooLarge(max_bytes));
        }
        Ok(body)
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or(Err(ScrapeError::Timeout(timeout)))
}

/// Reads a fetched text into what the SLOs need, and the autoscaler's
/// gauge when one is named.
pub fn reduce(
    body: &[u8],
    limits: &Limits,
    gauge: Option<&str>,
) -> Result<(AgentScrape, Option<f64>), ScrapeError> {
    let exp = promtext::parse(body, limits)?;
    let value = gauge.and_then(|name| orch_core::autoscale::gauge(&exp, name));
    Ok((AgentScrape::extract(&exp, &AgentSeries::default())?, value))
}

/// Scrapes every target once, reporting each result to the owner.
pub async fn round(
    targets: Vec<ScrapeTarget>,
    fetcher: Arc<dyn MetricsFetcher>,
    timeout: Duration,
    news: event::Sender<Scraped>,
) {
    let limits = Limits::default();
    let mut results = futures_util::stream::iter(targets)
        .map(|t| {
            let fetcher = fetcher.clone();
            async move {
                let result = fetcher
                    .fetch(&t, timeout, limits.max_bytes)
                    .await
                    .and_then(|body| reduce(&body, &limits, t.gauge.as_deref()));
                (t, result)
            }
        })
        .buffer_unordered(PARALLEL);
    while let Some((target, result)) = results.next().await {
        let (result, gauge) = match result {
            Ok((scrape, gauge)) => (Ok(scrape), gauge),
            Err(e) => (Err(e), None),
        };
        let scraped = Scraped {
            key: target.key,
            group: target.group,
            result,
            gauge,
        };
        if news.send(scraped).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tokio::net::TcpListener;

    async fn serve(answer: Vec<u8>) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(&answer).await;
            }
        });
        addr
    }

    const TEXT: &str = "# TYPE agent_requests_total counter\nagent_requests_total{endpoint=\"/work\"} 7\nagent_errors_total 2\n";

    #[tokio::test]
    async fn a_scrape_reads_the_body_and_refuses_what_is_too_large_or_not_ok() {
        let t = Duration::from_secs(2);
        let ok = serve(format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n{TEXT}").into())
            .await;
        let body = http_get(ok, "/metrics", t, 1024).await.unwrap();
        let (scrape, gauge) = reduce(&body, &Limits::default(), None).unwrap();
        assert_eq!((scrape.requests, scrape.errors), (Some(7), Some(2)));
        assert_eq!(gauge, None);

        assert_eq!(
            http_get(ok, "/metrics", t, 10).await,
            Err(ScrapeError::TooLarge(10))
        );
        let big = serve([b"HTTP/1.1 200 OK\r\n\r\n".to_vec(), vec![b'#'; 200_000]].concat()).await;
        assert_eq!(
            http_get(big, "/metrics", t, 1000).await,
            Err(ScrapeError::TooLarge(1000))
        );
        let missing = serve(b"HTTP/1.1 404 Not Found\r\n\r\n".to_vec()).await;
        assert_eq!(
            http_get(missing, "/metrics", t, 1024).await,
            Err(ScrapeError::Status(404))
        );
    }

    #[tokio::test]
    async fn a_silent_agent_times_out() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let _keep = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        let t = Duration::from_millis(200);
        assert_eq!(
            http_get(addr, "/metrics", t, 1024).await,
            Err(ScrapeError::Timeout(t))
        );
    }

    #[test]
    fn the_autoscalers_gauge_is_summed_over_its_labels() {
        let text = b"# TYPE agent_queue_depth gauge\nagent_queue_depth{queue=\"a\"} 3\nagent_queue_depth{queue=\"b\"} 4.5\nagent_requests_total 1\n";
        let (_, gauge) = reduce(text, &Limits::default(), Some("agent_queue_depth")).unwrap();
        assert_eq!(gauge, Some(7.5));
        let (_, missing) = reduce(text, &Limits::default(), Some("agent_busy")).unwrap();
        assert_eq!(missing, None);
        let nan = b"agent_queue_depth NaN\n";
        let (_, refused) = reduce(nan, &Limits::default(), Some("agent_queue_depth")).unwrap();
        assert_eq!(refused, None);
    }

    #[test]
    fn a_malformed_text_is_refused_with_its_reason() {
        let err = reduce(b"agent_requests_total{ 3\n", &Limits::default(), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1"), "{err}");
    }
}
