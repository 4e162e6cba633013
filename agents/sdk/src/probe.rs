//! A health probe an agent binary can run against itself, for images with
//! no shell and no curl (`FROM scratch`): Docker's `HEALTHCHECK` and
//! Compose's `healthcheck` run a command inside the container, and the
//! agent's own binary is the only command there.
//!
//! `http://IP:PORT/PATH` sends one `GET` and is healthy on a 2xx answer;
//! `tcp://IP:PORT` is healthy when a connection opens. Exit codes of a
//! probe mode ([`ProbeError::exit_code`]): 0 healthy, 1 unhealthy, 2 a bad
//! URL.
//!
//! Blocking std I/O on purpose: a probe is a short-lived process that makes
//! one connection, and needs no async runtime. Host names are refused, not
//! resolved (the SDK never resolves names; see the crate docs), so a probe
//! names an IP address, normally `127.0.0.1`.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// How long a probe waits for its answer, connection included, unless the
/// caller says otherwise. Below Docker's and Compose's default health check
/// timeout (30 s) and above any healthy answer's time.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// Exit code of a probe that found the target healthy.
pub const EXIT_HEALTHY: u8 = 0;
/// Exit code of a probe that found the target unhealthy or unreachable.
pub const EXIT_UNHEALTHY: u8 = 1;
/// Exit code of a probe given a URL it cannot use.
pub const EXIT_BAD_URL: u8 = 2;

/// The most of an answer read while looking for its status line; a status
/// line is a few dozen bytes, so anything longer is not HTTP.
const MAX_STATUS_LINE: usize = 8 * 1024;

/// What a probe checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeTarget {
    /// `GET path` on `addr`; healthy on a 2xx status.
    Http { addr: SocketAddr, path: String },
    /// A TCP connection to `addr`; healthy when it opens.
    Tcp { addr: SocketAddr },
}

impl ProbeTarget {
    /// Reads `http://IP:PORT[/PATH]` or `tcp://IP:PORT`. IPv6 addresses are
    /// written in brackets (`http://[::1]:8080/health`).
    pub fn parse(url: &str) -> Result<ProbeTarget, ProbeError> {
        let bad = |reason: &str| ProbeError::BadUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("it has no scheme"))?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "tcp" {
            return Err(bad(&format!(
                "the scheme `{scheme}` is not supported (only http and tcp)"
            )));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(bad("user information is not supported"));
        }
        let addr = parse_authority(authority).map_err(|reason| bad(&reason))?;
        if scheme == "tcp" {
            if !path.is_empty() && path != "/" {
                return Err(bad("a tcp probe has no path"));
            }
            return Ok(ProbeTarget::Tcp { addr });
        }
        if path.contains('#') {
            return Err(bad("a fragment (`#...`) is not sent to a server"));
        }
        // The path goes verbatim into the request line: whitespace or a
        // control character would end it early or inject a header.
        if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("the path contains whitespace or a control character"));
        }
        let path = if path.is_empty() { "/" } else { path };
        Ok(ProbeTarget::Http {
            addr,
            path: path.to_string(),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        match self {
            ProbeTarget::Http { addr, .. } | ProbeTarget::Tcp { addr } => *addr,
        }
    }
}

impl fmt::Display for ProbeTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeTarget::Http { addr, path } => write!(f, "http://{addr}{path}"),
            ProbeTarget::Tcp { addr } => write!(f, "tcp://{addr}"),
        }
    }
}

fn parse_authority(authority: &str) -> Result<SocketAddr, String> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or("an IPv6 address misses its closing `]`")?;
        let port = after
            .strip_prefix(':')
            .ok_or("the port is missing; write e.g. 127.0.0.1:8080")?;
        (host, port)
    } else {
        authority
            .rsplit_once(':')
            .ok_or("the port is missing; write e.g. 127.0.0.1:8080")?
    };
    let ip: IpAddr = host.parse().map_err(|_| {
        format!("`{host}` is not an IP address (host names are not resolved); use e.g. 127.0.0.1")
    })?;
    let port = match port.parse::<u16>() {
        Ok(0) | Err(_) => return Err(format!("`{port}` is not a port number (1-65535)")),
        Ok(p) => p,
    };
    Ok(SocketAddr::new(ip, port))
}

/// A healthy answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Healthy {
    /// The HTTP status, for an HTTP probe.
    pub status: Option<u16>,
    pub elapsed: Duration,
}

/// Why a probe did not find its target healthy.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "`{url}` is not a probe URL: {reason}; write http://127.0.0.1:PORT/PATH or tcp://127.0.0.1:PORT"
    )]
    BadUrl { url: String, reason: String },
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("{target} gave no answer within {}ms", timeout.as_millis())]
    Timeout { target: String, timeout: Duration },
    #[error("{target}: {source}")]
    Io {
        target: String,
        #[source]
        source: io::Error,
    },
    #[error("{target} did not answer with an HTTP status line (got {got:?})")]
    NotHttp { target: String, got: String },
    #[error("{target} answered {status}")]
    Status { target: String, status: u16 },
}

impl ProbeError {
    /// The exit code a probe mode ends with for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            ProbeError::BadUrl { .. } => EXIT_BAD_URL,
            _ => EXIT_UNHEALTHY,
        }
    }
}

/// Parses `url` and checks it; see [`check`].
pub fn probe(url: &str, timeout: Duration) -> Result<Healthy, ProbeError> {
    check(&ProbeTarget::parse(url)?, timeout)
}

/// Checks `target` once, giving up after `timeout` in all (connection,
/// request and answer together).
pub fn check(target: &ProbeTarget, timeout: Duration) -> Result<Healthy, ProbeError> {
    let started = Instant::now();
    let deadline = started + timeout;
    let addr = target.addr();
    let timed_out = || ProbeError::Timeout {
        target: target.to_string(),
        timeout,
    };
    let io_error = |source: io::Error| {
        if is_timeout(&source) {
            timed_out()
        } else {
            ProbeError::Io {
                target: target.to_string(),
                source,
            }
        }
    };
    let left = remaining(deadline).ok_or_else(timed_out)?;
    let mut stream = TcpStream::connect_timeout(&addr, left).map_err(|source| {
        if is_timeout(&source) {
            timed_out()
        } else {
            ProbeError::Connect { addr, source }
        }
    })?;
    let path = match target {
        ProbeTarget::Tcp { .. } => {
            return Ok(Healthy {
                status: None,
                elapsed: started.elapsed(),
            });
        }
        ProbeTarget::Http { path, .. } => path,
    };

    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: agent-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    let left = remaining(deadline).ok_or_else(timed_out)?;
    stream.set_write_timeout(Some(left)).map_err(io_error)?;
    stream.write_all(request.as_bytes()).map_err(io_error)?;

    let mut answer = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    let line_end = loop {
        if let Some(i) = answer.windows(2).position(|w| w == b"\r\n") {
            break i;
        }
        if answer.len() > MAX_STATUS_LINE {
            break answer.len();
        }
        let left = remaining(deadline).ok_or_else(timed_out)?;
        stream.set_read_timeout(Some(left)).map_err(io_error)?;
        match stream.read(&mut chunk) {
            Ok(0) => break answer.len(),
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_error(e)),
        }
    };
    let line = String::from_utf8_lossy(&answer[..line_end.min(answer.len())]).into_owned();
    let status = parse_status_line(&line).ok_or_else(|| ProbeError::NotHttp {
        target: target.to_string(),
        got: line.chars().take(80).collect(),
    })?;
    if (200..300).contains(&status) {
        Ok(Healthy {
            status: Some(status),
            elapsed: started.elapsed(),
        })
    } else {
        Err(ProbeError::Status {
            target: target.to_string(),
            status,
        })
    }
}

/// Time left before `deadline`, or `None` once it has passed (a zero
/// socket timeout would mean "wait forever" to some calls and an error to
/// others).
fn remaining(deadline: Instant) -> Option<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    (!left.is_zero()).then_some(left)
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

/// `HTTP/1.1 200 OK` -> 200.
fn parse_status_line(line: &str) -> Option<u16> {
    let mut parts = line.splitn(3, ' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok().filter(|c| (100..600).contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line("HTTP/1.1 200 OK"), Some(200));
        assert_eq!(
            parse_status_line("HTTP/1.0 503 Service Unavailable"),
            Some(503)
        );
        assert_eq!(parse_status_line("HTTP/1.1 204"), Some(204));
        for bad in [
            "",
            "SSH-2.0-OpenSSH",
            "HTTP/1.1 20 OK",
            "HTTP/1.1 999 x",
            "HTTP/1.1 abc",
        ] {
            assert_eq!(parse_status_line(bad), None, "{bad:?}");
        }
    }
}
