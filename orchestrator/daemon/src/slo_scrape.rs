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
use std::time::{Duration, Instant};

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

/// `GET /metrics` on the container's address on its network, over a
/// connection kept open between scrapes (HTTP/1.1 keep-alive) while the
/// agent allows it.
#[derive(Debug)]
pub struct HttpFetcher {
    rt: Arc<dyn ContainerRuntime>,
    /// Per container: its address (forgotten on a failed fetch: a
    /// restarted container may have a new one) and the connection kept
    /// for the next scrape. Entries are taken out for a fetch and put back
    /// after it, never held across an await.
    peers: Mutex<Peers>,
}

#[derive(Debug, Default)]
struct Peers {
    by_container: HashMap<String, Peer>,
    pruned: Option<Instant>,
}

#[derive(Debug)]
struct Peer {
    ip: IpAddr,
    client: KeptGet,
    used: Instant,
}

/// A container not scraped for this long loses its entry (and closes its
/// connection): it was stopped, or its agent's SLO was removed.
const FORGET_AFTER: Duration = Duration::from_secs(120);

impl HttpFetcher {
    pub fn new(rt: Arc<dyn ContainerRuntime>) -> HttpFetcher {
        HttpFetcher {
            rt,
            peers: Mutex::new(Peers::default()),
        }
    }

    fn take(&self, id: &str) -> Option<Peer> {
        self.peers
            .lock()
            .ok()
            .and_then(|mut p| p.by_container.remove(id))
    }

    fn put(&self, id: &str, peer: Peer) {
        if let Ok(mut p) = self.peers.lock() {
            let now = peer.used;
            if p.pruned
                .is_none_or(|t| now.duration_since(t) >= FORGET_AFTER)
            {
                p.by_container
                    .retain(|_, q| now.duration_since(q.used) < FORGET_AFTER);
                p.pruned = Some(now);
            }
            p.by_container.insert(id.to_string(), peer);
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
        let mut peer = match self.take(&t.container) {
            Some(peer) => peer,
            None => {
                let ip = self
                    .rt
                    .inspect(&t.container)
                    .await
                    .ok()
                    .and_then(|i| i.ip_on(&t.network).and_then(|ip| ip.parse().ok()))
                    .ok_or_else(|| ScrapeError::NoAddress(t.network.clone()))?;
                Peer {
                    ip,
                    client: KeptGet::default(),
                    used: Instant::now(),
                }
            }
        };
        let addr = SocketAddr::new(peer.ip, t.port);
        let result = peer.client.get(addr, "/metrics", timeout, max_bytes).await;
        if result.is_ok() {
            peer.used = Instant::now();
            self.put(&t.container, peer);
        }
        result
    }
}

/// One GET with a fresh connection, closed after it: the body of a 200
/// answer of at most `max_bytes`.
pub async fn http_get(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
    max_bytes: usize,
) -> Result<Vec<u8>, ScrapeError> {
    KeptGet::default().get(addr, path, timeout, max_bytes).await
}

/// The most an answer's status line and headers may take.
const MAX_HEAD: usize = 16 * 1024;

/// HTTP/1.1 GETs over one connection, kept for the next GET when the
/// answer's body had a known end (`Content-Length` or chunked) and the
/// server did not close it; every read bounded in size and time.
#[derive(Debug, Default)]
pub struct KeptGet {
    kept: Option<(SocketAddr, TcpStream)>,
    connects: u64,
}

impl KeptGet {
    /// Connections made so far.
    pub fn connects(&self) -> u64 {
        self.connects
    }

    /// The body of a 200 answer to `GET path` of at most `max_bytes`, all
    /// within `timeout`.
    pub async fn get(
        &mut self,
        addr: SocketAddr,
        path: &str,
        timeout: Duration,
        max_bytes: usize,
    ) -> Result<Vec<u8>, ScrapeError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let attempt = async {
            if let Some((to, s)) = self.kept.take()
                && to == addr
                && still_open(&s)
            {
                // A kept connection that fails before an answer (the agent
                // closed it meanwhile) gets one new connection.
                match exchange(s, addr, path, max_bytes).await {
                    Err(Exchange::NoAnswer(_)) => {}
                    other => return self.settle(addr, other),
                }
            }
            let s = TcpStream::connect(addr)
                .await
                .map_err(|e| ScrapeError::Io(e.to_string()))?;
            self.connects += 1;
            let result = exchange(s, addr, path, max_bytes).await;
            self.settle(addr, result)
        };
        tokio::time::timeout_at(deadline, attempt)
            .await
            .unwrap_or(Err(ScrapeError::Timeout(timeout)))
    }

    fn settle(
        &mut self,
        addr: SocketAddr,
        result: Result<(Vec<u8>, Option<TcpStream>), Exchange>,
    ) -> Result<Vec<u8>, ScrapeError> {
        match result {
            Ok((body, kept)) => {
                self.kept = kept.map(|s| (addr, s));
                Ok(body)
            }
            Err(Exchange::NoAnswer(e) | Exchange::Failed(e)) => Err(e),
        }
    }
}

/// How one exchange failed: before any byte of an answer (a kept
/// connection may be retried), or after.
enum Exchange {
    NoAnswer(ScrapeError),
    Failed(ScrapeError),
}

/// True when nothing was heard on an idle kept connection since its last
/// answer (neither its end nor bytes nobody asked for).
fn still_open(s: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(s.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// Sends the GET and reads the answer: the body of a 200 answer, and the
/// connection when it can carry the next request.
async fn exchange(
    mut s: TcpStream,
    addr: SocketAddr,
    path: &str,
    max_bytes: usize,
) -> Result<(Vec<u8>, Option<TcpStream>), Exchange> {
    let io = |e: std::io::Error| ScrapeError::Io(e.to_string());
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: orchestratord\r\nAccept: text/plain\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| Exchange::NoAnswer(io(e)))?;
    let mut buf = Vec::with_capacity(8 * 1024);
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err(Exchange::Failed(ScrapeError::Malformed));
        }
        let before = buf.len();
        let n = read_some(&mut s, &mut buf).await.map_err(|e| {
            let e = io(e);
            if before == 0 {
                Exchange::NoAnswer(e)
            } else {
                Exchange::Failed(e)
            }
        })?;
        if n == 0 {
            return Err(if before == 0 {
                Exchange::NoAnswer(ScrapeError::Io("connection closed".into()))
            } else {
                Exchange::Failed(ScrapeError::Malformed)
            });
        }
    };
    let head = parse_head(&buf[..end]).ok_or(Exchange::Failed(ScrapeError::Malformed))?;
    let mut rest = buf.split_off(end);
    let failed = Exchange::Failed;
    let body = match head.framing {
        Framing::Length(n) => {
            if n > max_bytes as u64 {
                return Err(failed(ScrapeError::TooLarge(max_bytes)));
            }
            let n = n as usize;
            while rest.len() < n {
                if read_some(&mut s, &mut rest)
                    .await
                    .map_err(|e| failed(io(e)))?
                    == 0
                {
                    return Err(failed(ScrapeError::Io("the answer ended early".into())));
                }
            }
            if rest.len() > n {
                // Bytes past the body: the connection is out of step.
                rest.truncate(n);
                return finish(head, rest, None);
            }
            rest
        }
        Framing::Chunked => dechunk(&mut s, rest, max_bytes).await.map_err(failed)?,
        Framing::Close => {
            loop {
                if rest.len() > max_bytes {
                    return Err(failed(ScrapeError::TooLarge(max_bytes)));
                }
                if read_some(&mut s, &mut rest)
                    .await
                    .map_err(|e| failed(io(e)))?
                    == 0
                {
                    break;
                }
            }
            if rest.len() > max_bytes {
                return Err(failed(ScrapeError::TooLarge(max_bytes)));
            }
            return finish(head, rest, None);
        }
    };
    let keep = head.keep_alive.then_some(s);
    finish(head, body, keep)
}

fn finish(
    head: Head,
    body: Vec<u8>,
    keep: Option<TcpStream>,
) -> Result<(Vec<u8>, Option<TcpStream>), Exchange> {
    if head.status != 200 {
        return Err(Exchange::Failed(ScrapeError::Status(head.status)));
    }
    Ok((body, keep))
}

/// Reads what is there (at most 64 KiB) onto the end of `buf`.
async fn read_some(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut chunk = [0u8; 64 * 1024];
    let n = s.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

struct Head {
    status: u16,
    framing: Framing,
    keep_alive: bool,
}

enum Framing {
    Length(u64),
    Chunked,
    Close,
}

fn parse_head(head: &[u8]) -> Option<Head> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let mut words = status_line.split_whitespace();
    let version = words.next()?;
    if !version.starts_with("HTTP/") {
        return None;
    }
    let status = words.next()?.parse().ok()?;
    let mut keep_alive = version == "HTTP/1.1";
    let mut framing = Framing::Close;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            if !matches!(framing, Framing::Chunked) {
                framing = Framing::Length(value.parse().ok()?);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if value.eq_ignore_ascii_case("chunked") {
                framing = Framing::Chunked;
            } else {
                return None;
            }
        } else if name.eq_ignore_ascii_case("connection")
            && value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("close"))
        {
            keep_alive = false;
        }
    }
    if matches!(framing, Framing::Close) {
        keep_alive = false;
    }
    Some(Head {
        status,
        framing,
        keep_alive,
    })
}

/// Decodes a chunked body (`buf` holds what was read past the head), at
/// most `max_bytes` of data; the trailer is read and dropped.
async fn dechunk(
    s: &mut TcpStream,
    mut buf: Vec<u8>,
    max_bytes: usize,
) -> Result<Vec<u8>, ScrapeError> {
    let io = |e: std::io::Error| ScrapeError::Io(e.to_string());
    let mut body = Vec::new();
    let mut at = 0;
    // Reads until `buf[at..]` holds a whole line; its end.
    loop {
        let line_end = loop {
            if let Some(i) = buf[at..].windows(2).position(|w| w == b"\r\n") {
                break at + i;
            }
            if buf.len() - at > 1024 {
                return Err(ScrapeError::Malformed);
            }
            if read_some(s, &mut buf).await.map_err(io)? == 0 {
                return Err(ScrapeError::Io("the answer ended early".into()));
            }
        };
        let size = std::str::from_utf8(&buf[at..line_end])
            .ok()
            .and_then(|l| usize::from_str_radix(l.split(';').next()?.trim(), 16).ok())
            .ok_or(ScrapeError::Malformed)?;
        at = line_end + 2;
        if size == 0 {
            // The trailer: lines up to an empty one.
            loop {
                let end = loop {
                    if let Some(i) = buf[at..].windows(2).position(|w| w == b"\r\n") {
                        break at + i;
                    }
                    if buf.len() - at > MAX_HEAD {
                        return Err(ScrapeError::Malformed);
                    }
                    if read_some(s, &mut buf).await.map_err(io)? == 0 {
                        return Err(ScrapeError::Io("the answer ended early".into()));
                    }
                };
                let empty = end == at;
                at = end + 2;
                if empty {
                    return if at == buf.len() {
                        Ok(body)
                    } else {
                        Err(ScrapeError::Malformed)
                    };
                }
            }
        }
        if body.len() + size > max_bytes {
            return Err(ScrapeError::TooLarge(max_bytes));
        }
        while buf.len() < at + size + 2 {
            if read_some(s, &mut buf).await.map_err(io)? == 0 {
                return Err(ScrapeError::Io("the answer ended early".into()));
            }
        }
        if &buf[at + size..at + size + 2] != b"\r\n" {
            return Err(ScrapeError::Malformed);
        }
        body.extend_from_slice(&buf[at..at + size]);
        at += size + 2;
        // Drop what was consumed so the buffer stays the size of a chunk.
        buf.drain(..at);
        at = 0;
    }
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

    /// Serves `answers` in turn on each connection, reading one request
    /// before each; counts the connections accepted. After the last
    /// answer of a connection it is closed.
    async fn serve_kept(
        answers: Vec<Vec<u8>>,
    ) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let accepts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = accepts.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let answers = answers.clone();
                tokio::spawn(async move {
                    for answer in answers {
                        let mut buf = [0u8; 1024];
                        match s.read(&mut buf).await {
                            Ok(n) if n > 0 => {}
                            _ => return,
                        }
                        if s.write_all(&answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, accepts)
    }

    fn with_length(body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into()
    }

    #[tokio::test]
    async fn scrapes_keep_their_connection_while_the_agent_allows_it() {
        let t = Duration::from_secs(2);
        let (addr, accepts) = serve_kept(vec![with_length(TEXT); 3]).await;
        let mut client = KeptGet::default();
        for _ in 0..3 {
            assert_eq!(
                client.get(addr, "/metrics", t, 1024).await.unwrap(),
                TEXT.as_bytes()
            );
        }
        assert_eq!(client.connects(), 1);
        assert_eq!(accepts.load(std::sync::atomic::Ordering::SeqCst), 1);
        // The server closed the connection after its third answer: the
        // next scrape notices and connects again, in the same call.
        assert_eq!(
            client.get(addr, "/metrics", t, 1024).await.unwrap(),
            TEXT.as_bytes()
        );
        assert_eq!(client.connects(), 2);
    }

    #[tokio::test]
    async fn a_chunked_answer_is_read_and_its_connection_kept() {
        let t = Duration::from_secs(2);
        let (a, b) = TEXT.split_at(20);
        let chunked = format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x};ext=1\r\n{b}\r\n0\r\n\r\n",
            a.len(),
            b.len()
        );
        let (addr, accepts) = serve_kept(vec![chunked.clone().into_bytes(); 2]).await;
        let mut client = KeptGet::default();
        for _ in 0..2 {
            assert_eq!(
                client.get(addr, "/metrics", t, 1024).await.unwrap(),
                TEXT.as_bytes()
            );
        }
        assert_eq!(accepts.load(std::sync::atomic::Ordering::SeqCst), 1);
        // Over the bound in chunks: refused before the rest is read.
        let (big, _) = serve_kept(vec![chunked.into_bytes()]).await;
        assert_eq!(
            KeptGet::default().get(big, "/metrics", t, 30).await,
            Err(ScrapeError::TooLarge(30))
        );
        for bad in [
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabc",
        ] {
            let (addr, _) = serve_kept(vec![bad.as_bytes().to_vec()]).await;
            assert_eq!(
                KeptGet::default().get(addr, "/metrics", t, 1024).await,
                Err(ScrapeError::Malformed),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn closing_answers_and_declared_oversize_bodies_leave_no_connection() {
        let t = Duration::from_secs(2);
        let closing = format!(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{TEXT}",
            TEXT.len()
        );
        let (addr, accepts) = serve_kept(vec![closing.into_bytes(); 2]).await;
        let mut client = KeptGet::default();
        for _ in 0..2 {
            assert_eq!(
                client.get(addr, "/metrics", t, 1024).await.unwrap(),
                TEXT.as_bytes()
            );
        }
        assert_eq!(accepts.load(std::sync::atomic::Ordering::SeqCst), 2);
        // A Content-Length over the bound is refused without reading it.
        let huge = b"HTTP/1.1 200 OK\r\nContent-Length: 999999999999\r\n\r\n".to_vec();
        let (addr, _) = serve_kept(vec![huge]).await;
        assert_eq!(
            KeptGet::default().get(addr, "/metrics", t, 1024).await,
            Err(ScrapeError::TooLarge(1024))
        );
        // A head that never ends is refused at its bound.
        let endless = [b"HTTP/1.1 200 OK\r\n".to_vec(), b"X-A: b\r\n".repeat(4000)].concat();
        let (addr, _) = serve_kept(vec![endless]).await;
        assert_eq!(
            KeptGet::default().get(addr, "/metrics", t, 1024).await,
            Err(ScrapeError::Malformed)
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
