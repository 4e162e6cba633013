//! Health probes, run by the daemon itself (scratch images have no shell
//! for Docker's own checks). One task per watched container runs the
//! probe loop; what a single probe does is behind [`Prober`], so the
//! daemon runs on a scripted prober in tests. [`NetProber`] is the real
//! one: it finds the container's address on its network once per start
//! and probes it, HTTP over a connection kept open between probes.

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

    /// Drops whatever is held for container `id` (its address, an open
    /// connection): it started anew, or is no longer probed.
    fn forget(&self, _id: &str) {}
}

/// Probes over the network (HTTP, TCP) or by `docker exec`.
#[derive(Debug)]
pub struct NetProber {
    rt: Arc<dyn ContainerRuntime>,
    /// Container addresses, found once per container and forgotten on a
    /// failed probe or a new probe loop (a restarted container may have a
    /// new one). Held only to copy out or in, never across an await.
    addrs: Mutex<HashMap<String, IpAddr>>,
    /// Each container's HTTP connection, kept open between probes: taken
    /// out for a probe and put back after it, never held across an await.
    clients: Mutex<HashMap<String, HttpClient>>,
}

impl NetProber {
    pub fn new(rt: Arc<dyn ContainerRuntime>) -> Self {
        NetProber {
            rt,
            addrs: Mutex::new(HashMap::new()),
            clients: Mutex::new(HashMap::new()),
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

    fn take_client(&self, id: &str) -> HttpClient {
        self.clients
            .lock()
            .ok()
            .and_then(|mut m| m.remove(id))
            .unwrap_or_default()
    }

    fn put_client(&self, id: &str, client: HttpClient) {
        if !client.is_open() {
            return;
        }
        if let Ok(mut m) = self.clients.lock() {
            m.insert(id.to_string(), client);
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
                    Probe::Http { path, .. } => {
                        let mut client = self.take_client(&t.id);
                        let outcome = client.probe(sa, path, timeout).await;
                        self.put_client(&t.id, client);
                        outcome
                    }
                    _ if tcp_ok(sa, timeout).await => ProbeOutcome::Healthy,
                    _ => ProbeOutcome::NoAnswer,
                };
                self.remember(&t.id, (outcome == ProbeOutcome::Healthy).then_some(ip));
                outcome
            }
        }
    }

    fn forget(&self, id: &str) {
        self.remember(id, None);
        if let Ok(mut m) = self.clients.lock() {
            m.remove(id);
        }
    }
}

/// Forgets what the prober holds for a container when its probe loop ends,
/// however it ends (the loop's task is aborted when the container stops).
struct ForgetOnDrop<'a> {
    prober: &'a dyn Prober,
    id: &'a str,
}

impl Drop for ForgetOnDrop<'_> {
    fn drop(&mut self) {
        self.prober.forget(self.id);
    }
}

/// Probes `target` until the task is aborted, reporting every result and
/// how long the probe took. A probe that got no answer after the replica
/// has answered once carries the time it stands for (the interval until
/// the next probe); before that the replica is still starting.
pub async fn run(target: ProbeTarget, prober: Arc<dyn Prober>, news: event::Sender<HealthNews>) {
    let interval = target.check.interval.std();
    let mut ever_ok = false;
    // A new loop is a new start of the container: its address and any
    // connection to it are found afresh.
    prober.forget(&target.id);
    let _forget = ForgetOnDrop {
        prober: prober.as_ref(),
        id: &target.id,
    };
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

/// A GET on a connection of its own; healthy on any 2xx or 3xx answer.
pub async fn http_ok(addr: SocketAddr, path: &str, timeout: Duration) -> bool {
    http_probe(addr, path, timeout).await == ProbeOutcome::Healthy
}

/// [`http_ok`], telling an unhealthy answer from none: a refused or timed
/// out connection, or one closed before a byte came back, is no answer.
pub async fn http_probe(addr: SocketAddr, path: &str, timeout: Duration) -> ProbeOutcome {
    HttpClient::default().probe(addr, path, timeout).await
}

/// The most of an answer's status line and headers read; an answer whose
/// head is longer is judged by its status line, and its connection closed.
pub const MAX_HEAD: usize = 4096;
/// The largest body read (and thrown away) to keep a connection for the
/// next probe; a longer one, or one of unknown length, closes it instead.
pub const MAX_BODY: u64 = 64 * 1024;

/// HTTP/1.1 GETs of one endpoint over one connection, kept open between
/// probes (keep-alive) while the server allows it, and made anew when it
/// closed, failed, or answered in a way that leaves the connection unfit
/// for another request. Every read is bounded in size ([`MAX_HEAD`],
/// [`MAX_BODY`]) and in time (the probe's timeout).
#[derive(Debug, Default)]
pub struct HttpClient {
    kept: Option<(SocketAddr, TcpStream)>,
    connects: u64,
}

impl HttpClient {
    /// Connections made so far.
    pub fn connects(&self) -> u64 {
        self.connects
    }

    /// Holds a connection for the next probe.
    pub fn is_open(&self) -> bool {
        self.kept.is_some()
    }

    /// One GET of `path` at `addr`, on the kept connection when there is
    /// one to `addr` still open, else on a new one; all within `timeout`.
    pub async fn probe(&mut self, addr: SocketAddr, path: &str, timeout: Duration) -> ProbeOutcome {
        let deadline = tokio::time::Instant::now() + timeout;
        if let Some((to, s)) = self.kept.take()
            && to == addr
            && still_open(&s)
        {
            // A connection the server closed meanwhile (or broke) gets a
            // new one in the same probe, within what is left of the time.
            if let Some(outcome) = self.exchange(s, addr, path, deadline).await {
                return outcome;
            }
        }
        let connected = tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await;
        let Ok(Ok(s)) = connected else {
            return ProbeOutcome::NoAnswer;
        };
        self.connects += 1;
        self.exchange(s, addr, path, deadline)
            .await
            .unwrap_or(ProbeOutcome::NoAnswer)
    }

    /// The request on `s`; `None` when nothing came back. Keeps `s` when it
    /// may carry the next request.
    async fn exchange(
        &mut self,
        mut s: TcpStream,
        addr: SocketAddr,
        path: &str,
        deadline: tokio::time::Instant,
    ) -> Option<ProbeOutcome> {
        let answer = tokio::time::timeout_at(deadline, head(&mut s, addr, path))
            .await
            .ok()??;
        // The status stands whatever the body does; the body only decides
        // whether the connection is kept.
        if let Some(rest) = answer.body_left
            && tokio::time::timeout_at(deadline, discard(&mut s, rest))
                .await
                .is_ok_and(|drained| drained)
        {
            self.kept = Some((addr, s));
        }
        Some(match answer.status {
            Some(code) if (200..400).contains(&code) => ProbeOutcome::Healthy,
            _ => ProbeOutcome::Unhealthy,
        })
    }
}

/// True when nothing was heard on an idle kept connection since its last
/// answer: neither its end (the server closed it) nor bytes nobody asked
/// for (which would be taken for the next answer).
fn still_open(s: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(s.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// What the head of one answer said.
struct Head {
    /// `None`: something came back that is no HTTP status line.
    status: Option<u16>,
    /// Body bytes still to read before the connection can carry another
    /// request; `None` when it cannot (closing, unknown or too long a
    /// body, a head past [`MAX_HEAD`]).
    body_left: Option<u64>,
}

/// Sends a GET of `path` and reads the answer's head (at most
/// [`MAX_HEAD`] bytes); `None` when nothing came back.
async fn head(s: &mut TcpStream, addr: SocketAddr, path: &str) -> Option<Head> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: orchestratord\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = vec![0u8; MAX_HEAD];
    let mut n = 0;
    let mut end = None;
    while n < buf.len() {
        let m = match s.read(&mut buf[n..]).await {
            Ok(m) => m,
            Err(_) if n > 0 => break,
            Err(_) => return None,
        };
        if m == 0 {
            break;
        }
        n += m;
        end = find(&buf[..n], b"\r\n\r\n").map(|i| i + 4);
        if end.is_some() {
            break;
        }
    }
    if n == 0 {
        return None;
    }
    let status = std::str::from_utf8(first_line(&buf[..n]))
        .ok()
        .and_then(|line| line.split_whitespace().nth(1)?.parse().ok());
    let body_left = end.and_then(|end| {
        let length = reusable_length(&buf[..end])?;
        length.checked_sub(u64::try_from(n - end).ok()?)
    });
    Some(Head { status, body_left })
}

/// The body length of a complete head that leaves its connection fit for
/// another request: HTTP/1.1, not closing, a `Content-Length` of at most
/// [`MAX_BODY`], no other transfer coding.
fn reusable_length(head: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    if !lines.next()?.starts_with("HTTP/1.1 ") {
        return None;
    }
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<u64>().ok()?);
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || (name.eq_ignore_ascii_case("connection")
                && value
                    .split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("close")))
        {
            return None;
        }
    }
    length.filter(|l| *l <= MAX_BODY)
}

/// Reads and drops `left` bytes of body; false when the connection ended
/// or failed first.
async fn discard(s: &mut TcpStream, mut left: u64) -> bool {
    let mut buf = [0u8; 4096];
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(buf.len()));
        match s.read(&mut buf[..want]).await {
            Ok(0) | Err(_) => return false,
            Ok(m) => left = left.saturating_sub(m as u64),
        }
    }
    true
}

fn first_line(buf: &[u8]) -> &[u8] {
    let end = buf.iter().position(|b| *b == b'\n').unwrap_or(buf.len());
    &buf[..end]
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
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

    /// A server answering every request on a connection with `answer`
    /// until `per_conn` requests were served, then closing it (after
    /// reading one more request when `read_before_close`). Counts accepts.
    async fn keep_alive_server(
        answer: &'static str,
        per_conn: usize,
        read_before_close: bool,
    ) -> (SocketAddr, Arc<Mutex<u64>>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let accepts = Arc::new(Mutex::new(0u64));
        let counted = Arc::clone(&accepts);
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                *counted.lock().unwrap() += 1;
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    for _ in 0..per_conn {
                        if !read_request(&mut s, &mut buf).await {
                            return;
                        }
                        if s.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    if read_before_close {
                        read_request(&mut s, &mut buf).await;
                    }
                });
            }
        });
        (addr, accepts)
    }

    /// Reads one request head (ours fit one buffer).
    async fn read_request(s: &mut TcpStream, buf: &mut [u8]) -> bool {
        let mut n = 0;
        while find(&buf[..n], b"\r\n\r\n").is_none() {
            match s.read(&mut buf[n..]).await {
                Ok(0) | Err(_) => return false,
                Ok(m) => n += m,
            }
        }
        true
    }

    const OK_KEEP: &str = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

    #[tokio::test]
    async fn a_kept_connection_carries_the_next_probes() {
        let t = Duration::from_secs(5);
        let (addr, accepts) = keep_alive_server(OK_KEEP, usize::MAX, false).await;
        let mut client = HttpClient::default();
        for _ in 0..3 {
            assert_eq!(
                client.probe(addr, "/health", t).await,
                ProbeOutcome::Healthy
            );
            assert!(client.is_open());
        }
        assert_eq!(client.connects(), 1);
        assert_eq!(*accepts.lock().unwrap(), 1);

        let (sick, _) = keep_alive_server(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nsick",
            usize::MAX,
            false,
        )
        .await;
        let mut client = HttpClient::default();
        for _ in 0..2 {
            assert_eq!(
                client.probe(sick, "/health", t).await,
                ProbeOutcome::Unhealthy
            );
        }
        assert_eq!(client.connects(), 1, "an unhealthy answer keeps it too");
    }

    #[tokio::test]
    async fn a_server_closing_between_probes_gets_a_new_connection() {
        let t = Duration::from_secs(5);
        // Closes after each answer: seen closed before the next request.
        let (addr, accepts) = keep_alive_server(OK_KEEP, 1, false).await;
        let mut client = HttpClient::default();
        for _ in 0..3 {
            assert_eq!(
                client.probe(addr, "/health", t).await,
                ProbeOutcome::Healthy
            );
            // Let its end arrive, as it would in a probe interval.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(client.connects(), 3);
        assert_eq!(*accepts.lock().unwrap(), 3);

        // Takes the next request and closes without answering it: the
        // same probe retries on a new connection.
        let (addr, accepts) = keep_alive_server(OK_KEEP, 1, true).await;
        let mut client = HttpClient::default();
        for _ in 0..3 {
            assert_eq!(
                client.probe(addr, "/health", t).await,
                ProbeOutcome::Healthy
            );
        }
        assert_eq!(client.connects(), 3);
        assert_eq!(*accepts.lock().unwrap(), 3);
    }

    #[tokio::test]
    async fn answers_that_leave_no_reusable_connection_close_it() {
        let t = Duration::from_secs(5);
        let long_head: &'static str = Box::leak(
            format!(
                "HTTP/1.1 200 OK\r\nX-Pad: {}\r\nContent-Length: 0\r\n\r\n",
                "x".repeat(MAX_HEAD)
            )
            .into_boxed_str(),
        );
        let long_body: &'static str = Box::leak(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{}",
                MAX_BODY + 1,
                "x".repeat(usize::try_from(MAX_BODY).unwrap() + 1)
            )
            .into_boxed_str(),
        );
        let cases: [(&'static str, ProbeOutcome); 6] = [
            (long_head, ProbeOutcome::Healthy),
            (long_body, ProbeOutcome::Healthy),
            (
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                ProbeOutcome::Healthy,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                ProbeOutcome::Healthy,
            ),
            (
                "HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n",
                ProbeOutcome::Unhealthy,
            ),
            ("garbage\r\n\r\n", ProbeOutcome::Unhealthy),
        ];
        for (answer, want) in cases {
            let (addr, _) = keep_alive_server(answer, usize::MAX, false).await;
            let mut client = HttpClient::default();
            assert_eq!(client.probe(addr, "/health", t).await, want, "{answer:.60}");
            assert!(!client.is_open(), "{answer:.60}");
        }
    }

    #[tokio::test]
    async fn a_stalled_body_keeps_the_status_and_drops_the_connection() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let _keep = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 1024];
                read_request(&mut s, &mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
                    .await;
                held.push(s);
            }
        });
        let mut client = HttpClient::default();
        assert_eq!(
            client
                .probe(addr, "/health", Duration::from_millis(200))
                .await,
            ProbeOutcome::Healthy
        );
        assert!(!client.is_open());
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
