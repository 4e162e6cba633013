//! The client side: typed methods, one per [`Request`], each one HTTP/1.1
//! connection over the unix socket (requests are rare and short; streams
//! hold their connection). `for_host` sends every request on to another
//! host through the local daemon.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::Response;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

use crate::error::ApiError;
use crate::http::{Method, Route, to_route};
use crate::reply::{
    Accepted, AgentStatus, Applied, Fleet, FleetPlan, GenerationView, GpuReport, GroupStatus,
    PeerStatus, PlanReport, SloReport, Status,
};
use crate::request::{Envelope, Request};
use crate::wire::Event;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach orchestratord at {socket}: no such socket (is the daemon running? see `systemctl status orchestratord`)"
    )]
    NoSocket { socket: PathBuf },
    #[error(
        "cannot reach orchestratord at {socket}: permission denied (is your user in the socket's group?)"
    )]
    PermissionDenied { socket: PathBuf },
    #[error("cannot reach orchestratord at {socket}: {reason}")]
    Unreachable { socket: PathBuf, reason: String },
    #[error("{0}")]
    Api(ApiError),
    #[error("unexpected answer from orchestratord: {0}")]
    Protocol(String),
}

impl ClientError {
    /// True when the daemon could not be reached at all.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            ClientError::NoSocket { .. }
                | ClientError::PermissionDenied { .. }
                | ClientError::Unreachable { .. }
        )
    }
}

/// Which output `logs_with` asks for (the options of [`Request::Logs`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogsWanted {
    pub replica: u32,
    pub follow: bool,
    pub tail: Option<u64>,
    /// Unix seconds.
    pub since: Option<i64>,
    pub timestamps: bool,
    pub json: bool,
}

#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    host: Option<String>,
}

impl Client {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Client {
            socket: socket.into(),
            host: None,
        }
    }

    /// The same client, sending its requests on to `host` (through the
    /// local daemon's federation) when `host` is given.
    pub fn for_host(mut self, host: Option<String>) -> Self {
        self.host = host;
        self
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The host requests are for, when not the local daemon's.
    pub fn host(&self) -> Option<&str> {
        self.host.as_deref()
    }

    fn route(&self, request: Request) -> Route {
        to_route(&Envelope::new(self.host.clone(), request))
    }

    async fn send(&self, route: Route) -> Result<Response<Incoming>, ClientError> {
        let Route { method, path, body } = route;
        let method = match method {
            Method::Get => hyper::Method::GET,
            Method::Post => hyper::Method::POST,
        };
        let path = path.as_str();
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => ClientError::NoSocket {
                    socket: self.socket.clone(),
                },
                std::io::ErrorKind::PermissionDenied => ClientError::PermissionDenied {
                    socket: self.socket.clone(),
                },
                _ => ClientError::Unreachable {
                    socket: self.socket.clone(),
                    reason: e.to_string(),
                },
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Unreachable {
                socket: self.socket.clone(),
                reason: e.to_string(),
            })?;
        // The connection task ends with the response body.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let has_body = body.is_some();
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "orchestratord");
        if has_body {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Unreachable {
                socket: self.socket.clone(),
                reason: e.to_string(),
            })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?
            .to_bytes();
        match serde_json::from_slice::<ApiError>(&bytes) {
            Ok(e) => Err(ClientError::Api(e)),
            Err(_) => Err(ClientError::Protocol(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&bytes)
            ))),
        }
    }

    async fn json<T: DeserializeOwned>(resp: Response<Incoming>) -> Result<T, ClientError> {
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?
            .to_bytes();
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    async fn unary<T: DeserializeOwned>(&self, request: Request) -> Result<T, ClientError> {
        Self::json(self.send(self.route(request)).await?).await
    }

    pub async fn status(&self) -> Result<Status, ClientError> {
        self.unary(Request::Status).await
    }

    pub async fn groups(&self) -> Result<Vec<GroupStatus>, ClientError> {
        self.unary(Request::Groups).await
    }

    pub async fn agents(&self, group: Option<&str>) -> Result<Vec<AgentStatus>, ClientError> {
        self.unary(Request::Agents {
            group: group.map(str::to_string),
        })
        .await
    }

    pub async fn group_start(&self, group: &str) -> Result<Accepted, ClientError> {
        self.unary(Request::GroupStart {
            group: group.to_string(),
        })
        .await
    }

    pub async fn group_stop(
        &self,
        group: &str,
        with_dependents: bool,
    ) -> Result<Accepted, ClientError> {
        self.unary(Request::GroupStop {
            group: group.to_string(),
            with_dependents,
        })
        .await
    }

    pub async fn group_restart(
        &self,
        group: &str,
        with_dependents: bool,
    ) -> Result<Accepted, ClientError> {
        self.unary(Request::GroupRestart {
            group: group.to_string(),
            with_dependents,
        })
        .await
    }

    pub async fn agent_restart(&self, group: &str, agent: &str) -> Result<Accepted, ClientError> {
        self.unary(Request::AgentRestart {
            group: group.to_string(),
            agent: agent.to_string(),
        })
        .await
    }

    /// Sets an agent's replica count (`None`: back to the file's).
    pub async fn scale(
        &self,
        group: &str,
        agent: &str,
        replicas: Option<u32>,
    ) -> Result<Accepted, ClientError> {
        self.unary(Request::Scale {
            group: group.to_string(),
            agent: agent.to_string(),
            replicas,
        })
        .await
    }

    /// `rollout status|pause|resume`.
    pub async fn rollout(
        &self,
        action: crate::rollout::RolloutAction,
    ) -> Result<crate::rollout::RolloutStatus, ClientError> {
        self.unary(Request::Rollout { action }).await
    }

    /// `rollout undo [--to GENERATION]`: an earlier generation's config
    /// rolls out.
    pub async fn rollout_undo(&self, to: Option<u64>) -> Result<Applied, ClientError> {
        self.unary(Request::Rollout {
            action: crate::rollout::RolloutAction::Undo { to },
        })
        .await
    }

    pub async fn apply(&self, file_name: &str, config_text: &str) -> Result<Applied, ClientError> {
        self.apply_with(file_name, config_text, false).await
    }

    /// `apply`; with `force`, also when a GPU request cannot be placed.
    pub async fn apply_with(
        &self,
        file_name: &str,
        config_text: &str,
        force: bool,
    ) -> Result<Applied, ClientError> {
        self.unary(Request::Apply {
            file_name: file_name.to_string(),
            config_text: config_text.to_string(),
            force,
        })
        .await
    }

    /// The desired state of the host, to back up or move.
    pub async fn state_export(&self) -> Result<crate::wire::StateDocument, ClientError> {
        self.unary(Request::StateExport).await
    }

    /// Replaces the host's desired state with `state` and acts on it.
    pub async fn state_import(
        &self,
        state: crate::wire::StateDocument,
    ) -> Result<Accepted, ClientError> {
        self.unary(Request::StateImport { state }).await
    }

    pub async fn reload(&self) -> Result<Applied, ClientError> {
        self.unary(Request::Reload).await
    }

    pub async fn gpu(&self) -> Result<GpuReport, ClientError> {
        self.unary(Request::Gpu).await
    }

    pub async fn plan(
        &self,
        file_name: &str,
        config_text: &str,
    ) -> Result<PlanReport, ClientError> {
        self.unary(Request::Plan {
            file_name: file_name.to_string(),
            config_text: config_text.to_string(),
        })
        .await
    }

    /// Where a config's GPU requests (`None`: the running config's), or
    /// one agent's (`GROUP/AGENT`), would fit on each host of the fleet.
    pub async fn plan_fleet(
        &self,
        config: Option<(&str, &str)>,
        agent: Option<&str>,
    ) -> Result<FleetPlan, ClientError> {
        self.unary(Request::PlanFleet {
            config: config.map(|(file_name, config_text)| crate::request::ConfigFile {
                file_name: file_name.to_string(),
                config_text: config_text.to_string(),
            }),
            agent: agent.map(str::to_string),
        })
        .await
    }

    /// What applying a config (`None`: the daemon's config file on disk)
    /// would change.
    pub async fn config_diff(
        &self,
        config: Option<(&str, &str)>,
    ) -> Result<crate::DiffReport, ClientError> {
        self.unary(Request::ConfigDiff {
            config: config.map(|(file_name, config_text)| crate::request::ConfigFile {
                file_name: file_name.to_string(),
                config_text: config_text.to_string(),
            }),
        })
        .await
    }

    pub async fn mig_mode(&self, gpu: u32, enable: bool) -> Result<Accepted, ClientError> {
        self.unary(Request::MigMode { gpu, enable }).await
    }

    pub async fn peers(&self) -> Result<Vec<PeerStatus>, ClientError> {
        self.unary(Request::Peers).await
    }

    /// The config generations kept, newest first.
    pub async fn history(&self) -> Result<Vec<GenerationView>, ClientError> {
        self.unary(Request::History).await
    }

    pub async fn fleet(&self) -> Result<Fleet, ClientError> {
        self.unary(Request::Fleet).await
    }

    /// SLO figures of every group with an `slo:`, or of one.
    pub async fn slo(&self, group: Option<&str>) -> Result<SloReport, ClientError> {
        self.unary(Request::Slo {
            group: group.map(str::to_string),
        })
        .await
    }

    /// A replica's container output, chunk by chunk.
    pub async fn logs(
        &self,
        group: &str,
        agent: &str,
        replica: u32,
        follow: bool,
        tail: Option<u64>,
    ) -> Result<impl Stream<Item = Result<Bytes, ClientError>> + use<>, ClientError> {
        self.logs_with(
            group,
            agent,
            LogsWanted {
                replica,
                follow,
                tail,
                ..LogsWanted::default()
            },
        )
        .await
    }

    /// A replica's container output as `wanted` says, chunk by chunk (with
    /// `json`, one [`LogLine`](crate::LogLine) per line: see [`ndjson`]).
    pub async fn logs_with(
        &self,
        group: &str,
        agent: &str,
        wanted: LogsWanted,
    ) -> Result<impl Stream<Item = Result<Bytes, ClientError>> + use<>, ClientError> {
        let LogsWanted {
            replica,
            follow,
            tail,
            since,
            timestamps,
            json,
        } = wanted;
        let route = self.route(Request::Logs {
            group: group.to_string(),
            agent: agent.to_string(),
            replica,
            follow,
            tail,
            since,
            timestamps,
            json,
        });
        let body = self.send(route).await?.into_body();
        Ok(body
            .into_data_stream()
            .map(|r| r.map_err(|e| ClientError::Protocol(e.to_string()))))
    }

    /// Events from `since` on; with `follow`, the stream stays open for
    /// new ones.
    pub async fn events(
        &self,
        since: u64,
        follow: bool,
    ) -> Result<impl Stream<Item = Result<Event, ClientError>> + use<>, ClientError> {
        let body = self
            .send(self.route(Request::Events { since, follow }))
            .await?
            .into_body();
        Ok(ndjson(body.into_data_stream().map(|r| {
            r.map_err(|e| ClientError::Protocol(e.to_string()))
        })))
    }
}

/// Why `logs --since` cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`--since {0}` is neither a duration (`10m`, `1h30m`) nor a time (`2026-12-02T06:42:54Z`, `2026-12-02T07:42:54+01:00`, Unix seconds)"
)]
pub struct SinceError(pub String);

/// `logs --since`: a duration back from `now` (Unix seconds), an RFC 3339
/// time, or Unix seconds; the Unix seconds the output starts from.
pub fn logs_since(text: &str, now: u64) -> Result<i64, SinceError> {
    let bad = || SinceError(text.to_string());
    let t = text.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().map_err(|_| bad());
    }
    if let Ok(d) = orch_core::units::Duration::parse(t) {
        let back = i64::try_from(d.std().as_secs()).map_err(|_| bad())?;
        let now = i64::try_from(now).map_err(|_| bad())?;
        return Ok(now.saturating_sub(back));
    }
    rfc3339(t).ok_or_else(bad)
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` to Unix seconds.
fn rfc3339(t: &str) -> Option<i64> {
    let b = t.as_bytes();
    if b.len() < 20 || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = t.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if [b[4], b[7], b[13], b[16]] != [b'-', b'-', b':', b':']
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || min > 59
        || sec > 60
    {
        return None;
    }
    let mut rest = &t[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (h, m) = rest[1..].split_once(':')?;
            if h.len() != 2 || m.len() != 2 {
                return None;
            }
            sign * (h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60)
        }
    };
    // Days from 1970-01-01 to the civil date (proleptic Gregorian).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3600 + min * 60 + sec - offset)
}

/// Splits a byte stream into lines and decodes each one.
pub fn ndjson<T, S>(chunks: S) -> impl Stream<Item = Result<T, ClientError>>
where
    T: DeserializeOwned,
    S: Stream<Item = Result<Bytes, ClientError>>,
{
    futures_util::stream::unfold(
        (Box::pin(chunks), Vec::<u8>::new(), false),
        |(mut chunks, mut buf, done)| async move {
            loop {
                if let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    let line = &line[..line.len() - 1];
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let item = serde_json::from_slice::<T>(line)
                        .map_err(|e| ClientError::Protocol(e.to_string()));
                    return Some((item, (chunks, buf, done)));
                }
                if done {
                    return None;
                }
                match chunks.next().await {
                    Some(Ok(bytes)) => buf.extend_from_slice(&bytes),
                    Some(Err(e)) => return Some((Err(e), (chunks, buf, true))),
                    None => {
                        if buf.iter().all(u8::is_ascii_whitespace) {
                            return None;
                        }
                        buf.push(b'\n');
                        return Some((
                            serde_json::from_slice::<T>(&buf[..buf.len() - 1])
                                .map_err(|e| ClientError::Protocol(e.to_string())),
                            (chunks, Vec::new(), true),
                        ));
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_since_reads_durations_times_and_unix_seconds() {
        let now = 1_796_193_774;
        let cases = [
            ("10m", Ok(now as i64 - 600)),
            ("1h30m", Ok(now as i64 - 5400)),
            ("1796000000", Ok(1_796_000_000)),
            // `date -u -d @1796193774`: 2026-12-02T06:42:54Z
            ("2026-12-02T06:42:54Z", Ok(1_796_193_774)),
            ("2026-12-02T06:42:54.123Z", Ok(1_796_193_774)),
            ("2026-12-02T07:42:54+01:00", Ok(1_796_193_774)),
            ("2000-02-29T00:00:00Z", Ok(951_782_400)),
            ("1970-01-01T00:00:00Z", Ok(0)),
            ("yesterday", Err(SinceError("yesterday".into()))),
            (
                "2026-13-02T06:42:54Z",
                Err(SinceError("2026-13-02T06:42:54Z".into())),
            ),
            (
                "2026-12-02T06:42:54",
                Err(SinceError("2026-12-02T06:42:54".into())),
            ),
            ("", Err(SinceError(String::new()))),
        ];
        for (text, want) in cases {
            assert_eq!(logs_since(text, now), want, "{text}");
        }
    }

    #[tokio::test]
    async fn ndjson_splits_across_chunk_boundaries() {
        let chunks = futures_util::stream::iter(vec![
            Ok(Bytes::from_static(b"{\"a\":1}\n{\"a\"")),
            Ok(Bytes::from_static(b":2}\n\n{\"a\":3}")),
        ]);
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct A {
            a: u32,
        }
        let items: Vec<A> = ndjson(chunks).map(|r| r.unwrap()).collect().await;
        assert_eq!(items, vec![A { a: 1 }, A { a: 2 }, A { a: 3 }]);
    }

    #[tokio::test]
    async fn a_missing_socket_says_so() {
        let c = Client::new("/nonexistent/orchestrator.sock");
        let err = c.status().await.unwrap_err();
        assert!(matches!(err, ClientError::NoSocket { .. }), "{err}");
        assert!(err.is_unreachable());
    }
}
