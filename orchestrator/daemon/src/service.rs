//! The control API as a transport sees it: an [`Envelope`] in, a reply or
//! a stream out. The HTTP server on the control socket calls this; so does
//! the federation bus for requests from peers. A new transport is one more
//! caller of [`Service`]; it never talks to the owner itself.
//!
//! Requests for another host are handed to a [`Remote`] (the federation),
//! or refused with `host_unreachable` when there is none.
//!
//! The config text of an `apply` or `plan` is parsed and validated here,
//! on a blocking thread, before the owner sees the request: the owner
//! task only receives the parsed config, so a large or slow config never
//! holds up supervision.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use orch_api::{ApiError, Asked as AskedKind, Envelope, LogText, Rejection, Request, Response};
use orch_docker::ContainerRuntime;
use tokio::sync::{mpsc, oneshot};

use crate::event::{Asked, ContainerOf, Feed, OwnerEvent, Subscribe};

/// A config that does not load, in the words of its diagnostics.
pub(crate) fn config_rejection(e: orch_config::ConfigError) -> Rejection {
    let mut details = Vec::new();
    for d in e.diagnostics() {
        details.push(d.headline());
        if let Some(help) = &d.help {
            details.push(format!("  = help: {help}"));
        }
    }
    Rejection::InvalidConfig {
        missing: matches!(e, orch_config::ConfigError::Io { .. }),
        message: e.to_string(),
        details,
    }
}

/// What a `logs` answered in one reply (over the bus, which cannot
/// stream) may carry: the last this many bytes of the output. Kept well
/// under the bus's reply limit, as JSON escaping may grow the text; the
/// daemon never holds more than twice this while reading.
const LOG_REPLY_BYTES: usize = 1024 * 1024;

/// The last `cap` bytes of a stream, in memory bounded by `2 * cap`.
#[derive(Debug)]
struct LastBytes {
    cap: usize,
    bytes: Vec<u8>,
    cut: bool,
}

impl LastBytes {
    fn new(cap: usize) -> Self {
        LastBytes {
            cap,
            bytes: Vec::new(),
            cut: false,
        }
    }

    fn push(&mut self, chunk: &[u8]) {
        let chunk = if chunk.len() > self.cap {
            self.cut = true;
            self.bytes.clear();
            &chunk[chunk.len() - self.cap..]
        } else {
            chunk
        };
        self.bytes.extend_from_slice(chunk);
        if self.bytes.len() > 2 * self.cap {
            self.trim();
        }
    }

    fn trim(&mut self) {
        if self.bytes.len() > self.cap {
            let drop = self.bytes.len() - self.cap;
            self.bytes.drain(..drop);
            self.cut = true;
        }
    }

    /// Whether output was left out.
    fn cut(&mut self) -> bool {
        self.trim();
        self.cut
    }

    fn into_bytes(mut self) -> Vec<u8> {
        self.trim();
        self.bytes
    }
}

/// Reaches other hosts.
#[async_trait]
pub trait Remote: Send + Sync + Debug {
    /// Carries a request to `host` and brings back its reply.
    async fn call(&self, host: &str, envelope: Envelope) -> Result<Response, ApiError>;
    /// The events of `host` from `since` on, as its daemon numbered them.
    async fn events(
        &self,
        host: &str,
        since: u64,
        follow: bool,
    ) -> Result<futures_util::stream::BoxStream<'static, orch_api::Event>, ApiError>;
}

#[derive(Debug, Clone)]
pub struct Service {
    tx: mpsc::Sender<OwnerEvent>,
    rt: Arc<dyn ContainerRuntime>,
    host: String,
    remote: Option<Arc<dyn Remote>>,
    /// How config texts are loaded (`apply`, `plan`).
    load_options: orch_config::LoadOptions,
}

fn gone() -> ApiError {
    Rejection::ShuttingDown.into()
}

/// Where an envelope goes.
enum Target<'a> {
    Local,
    Remote(&'a str),
}

impl Service {
    pub fn new(
        tx: mpsc::Sender<OwnerEvent>,
        rt: Arc<dyn ContainerRuntime>,
        host: String,
        remote: Option<Arc<dyn Remote>>,
        load_options: orch_config::LoadOptions,
    ) -> Self {
        Service {
            tx,
            rt,
            host,
            remote,
            load_options,
        }
    }

    /// Parses and validates the config text of an `apply`, a `plan`, a
    /// `plan_fleet` or a `config_diff` on a blocking thread; `None` for any other request.
    async fn parse(
        &self,
        request: Request,
    ) -> Result<(Request, Option<Box<orch_config::Loaded>>), ApiError> {
        /// What to make of the text once parsed.
        enum Kind {
            Apply { force: bool },
            Plan,
            PlanFleet { agent: Option<String> },
            ConfigDiff,
        }
        let (file_name, config_text, kind) = match request {
            Request::Apply {
                file_name,
                config_text,
                force,
            } => (file_name, config_text, Kind::Apply { force }),
            Request::Plan {
                file_name,
                config_text,
            } => (file_name, config_text, Kind::Plan),
            Request::PlanFleet {
                config: Some(c),
                agent,
            } => (c.file_name, c.config_text, Kind::PlanFleet { agent }),
            Request::ConfigDiff { config: Some(c) } => {
                (c.file_name, c.config_text, Kind::ConfigDiff)
            }
            other => return Ok((other, None)),
        };
        let options = self.load_options.clone();
        let (loaded, file_name, config_text) = tokio::task::spawn_blocking(move || {
            let loaded = orch_config::load_str(&file_name, &config_text, &options);
            (loaded, file_name, config_text)
        })
        .await
        .map_err(|_| gone())?;
        let loaded = loaded.map_err(|e| ApiError::from(config_rejection(e)))?;
        let request = match kind {
            Kind::Apply { force } => Request::Apply {
                file_name,
                config_text,
                force,
            },
            Kind::Plan => Request::Plan {
                file_name,
                config_text,
            },
            Kind::PlanFleet { agent } => Request::PlanFleet {
                config: Some(orch_api::ConfigFile {
                    file_name,
                    config_text,
                }),
                agent,
            },
            Kind::ConfigDiff => Request::ConfigDiff {
                config: Some(orch_api::ConfigFile {
                    file_name,
                    config_text,
                }),
            },
        };
        Ok((request, Some(Box::new(loaded))))
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    fn target<'e>(&self, env: &'e Envelope) -> Result<Target<'e>, ApiError> {
        env.check_version()?;
        match env.host.as_deref() {
            None => Ok(Target::Local),
            Some(h) if h == self.host => Ok(Target::Local),
            Some(h) => Ok(Target::Remote(h)),
        }
    }

    fn remote(&self, host: &str) -> Result<&Arc<dyn Remote>, ApiError> {
        self.remote.as_ref().ok_or_else(|| {
            Rejection::NoFederation {
                host: host.to_string(),
                this_host: self.host.clone(),
            }
            .into()
        })
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> OwnerEvent,
    ) -> Result<T, ApiError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())
    }

    /// Answers a request in one reply. Event and log requests get what
    /// there is now (a stream's `follow` needs [`Service::events`] or
    /// [`Service::logs`]).
    pub async fn call(&self, env: Envelope) -> Result<Response, ApiError> {
        if let Target::Remote(host) = self.target(&env)? {
            return self.remote(host)?.call(host, env.clone()).await;
        }
        match env.request {
            Request::Events { since, .. } => {
                let (backlog, _) = self.subscribe(since).await?;
                Ok(Response::Events(backlog))
            }
            Request::Logs {
                group,
                agent,
                replica,
                tail,
                since,
                timestamps,
                json,
                ..
            } => {
                let ask = orch_docker::LogsAsk {
                    follow: false,
                    tail,
                    since,
                    timestamps,
                };
                let mut stream =
                    Box::pin(self.local_logs(&group, &agent, replica, ask, json).await?);
                let mut kept = LastBytes::new(LOG_REPLY_BYTES);
                while let Some(chunk) = stream.next().await {
                    kept.push(&chunk);
                }
                let cut = kept.cut();
                let mut text = String::new();
                if cut {
                    text.push_str(orch_api::text::LOGS_CUT_FOR_ONE_REPLY);
                    text.push('\n');
                }
                text.push_str(&String::from_utf8_lossy(&kept.into_bytes()));
                Ok(Response::Logs(LogText { text }))
            }
            request => {
                let (request, config) = self.parse(request).await?;
                // The images a new config needs, asked of Docker here: the
                // owner's handlers do no I/O.
                let missing = match (&request, &config) {
                    (Request::Apply { .. } | Request::Plan { .. }, Some(loaded)) => {
                        let images = crate::images::of_config(&loaded.config);
                        crate::images::missing(
                            self.rt.as_ref(),
                            &images,
                            crate::images::CHECK_LIMIT,
                        )
                        .await
                    }
                    _ => Vec::new(),
                };
                if let Request::Apply {
                    file_name,
                    force: false,
                    ..
                } = &request
                    && !missing.is_empty()
                {
                    return Err(Rejection::ImagesMissing {
                        file_name: file_name.clone(),
                        images: missing,
                    }
                    .into());
                }
                let span = tracing::Span::current();
                let reply = self
                    .ask(|responder| {
                        OwnerEvent::Request(Asked {
                            request,
                            config,
                            responder,
                            span,
                            operator: env.operator,
                        })
                    })
                    .await?;
                Ok(match reply? {
                    Response::Plan(mut report) => {
                        report.missing_images = missing;
                        Response::Plan(report)
                    }
                    Response::Applied(mut applied) if !missing.is_empty() => {
                        let warning = orch_api::text::applied_images_missing(&missing);
                        tracing::warn!("{warning}");
                        applied.warnings.push(warning);
                        Response::Applied(applied)
                    }
                    other => other,
                })
            }
        }
    }

    async fn subscribe(&self, since: u64) -> Result<Feed, ApiError> {
        self.ask(|reply| OwnerEvent::Subscribe(Subscribe { since, reply }))
            .await
    }

    /// Events from `since` on; with `follow`, new ones as they happen. A
    /// follower that falls far behind is cut off rather than slowing the
    /// owner.
    pub async fn events(
        &self,
        env: &Envelope,
        since: u64,
        follow: bool,
    ) -> Result<futures_util::stream::BoxStream<'static, orch_api::Event>, ApiError> {
        if let Target::Remote(host) = self.target(env)? {
            return self.remote(host)?.events(host, since, follow).await;
        }
        let (backlog, rx) = self.subscribe(since).await?;
        let last = backlog
            .last()
            .map(|e| e.seq)
            .unwrap_or(since.saturating_sub(1));
        let head = futures_util::stream::iter(backlog);
        if !follow {
            return Ok(head.boxed());
        }
        let live = futures_util::stream::unfold(rx, |mut rx| async move {
            match rx.recv().await {
                Ok(e) => Some((e, rx)),
                Err(_) => None,
            }
        })
        .filter(move |e| std::future::ready(e.seq > last));
        Ok(head.chain(live).boxed())
    }

    /// A replica's container output, streamed.
    pub async fn logs(
        &self,
        env: &Envelope,
    ) -> Result<futures_util::stream::BoxStream<'static, Bytes>, ApiError> {
        let Request::Logs {
            group,
            agent,
            replica,
            follow,
            tail,
            since,
            timestamps,
            json,
        } = &env.request
        else {
            return Err(Rejection::NotLogs.into());
        };
        if let Target::Remote(host) = self.target(env)? {
            if *follow {
                return Err(Rejection::FollowRemoteLogs {
                    host: host.to_string(),
                }
                .into());
            }
            return match self.remote(host)?.call(host, env.clone()).await? {
                Response::Logs(t) => Ok(futures_util::stream::iter([Bytes::from(t.text)]).boxed()),
                other => Err(Rejection::WrongReply {
                    host: host.to_string(),
                    asked: AskedKind::Logs,
                    got: other.name().to_string(),
                }
                .into()),
            };
        }
        let ask = orch_docker::LogsAsk {
            follow: *follow,
            tail: *tail,
            since: *since,
            timestamps: *timestamps,
        };
        Ok(self
            .local_logs(group, agent, *replica, ask, *json)
            .await?
            .boxed())
    }

    async fn local_logs(
        &self,
        group: &str,
        agent: &str,
        replica: u32,
        ask: orch_docker::LogsAsk,
        json: bool,
    ) -> Result<impl Stream<Item = Bytes> + use<>, ApiError> {
        let (group, agent) = (group.to_string(), agent.to_string());
        let id = self
            .ask(|reply| {
                OwnerEvent::ContainerOf(ContainerOf {
                    group,
                    agent,
                    replica,
                    reply,
                })
            })
            .await??;
        let logs = self.rt.logs(&id, ask).await.map_err(|e| {
            ApiError::from(Rejection::LogsUnavailable {
                error: e.to_string(),
            })
        })?;
        Ok(logs.filter_map(move |c| async move {
            let c = c.ok()?;
            if !json {
                return Some(c.bytes);
            }
            let stream = match c.stream {
                orch_docker::OutputStream::Stdout => "stdout",
                orch_docker::OutputStream::Stderr => "stderr",
            };
            Some(Bytes::from(orch_api::LogLine::ndjson(
                replica, stream, &c.bytes,
            )))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::LastBytes;

    #[test]
    fn a_reply_keeps_the_last_bytes_of_a_log_past_its_bound_in_bounded_memory() {
        let mut kept = LastBytes::new(10);
        kept.push(b"0123");
        kept.push(b"4567");
        assert!(!kept.cut());
        for i in 0..1000u32 {
            kept.push(format!("{:04}", i % 10_000).as_bytes());
            assert!(kept.bytes.len() <= 20, "held {}", kept.bytes.len());
        }
        // One chunk larger than the bound keeps only its end.
        kept.push(b"abcdefghijklmnopqrstuvwxyz");
        assert!(kept.cut());
        assert_eq!(kept.into_bytes(), b"qrstuvwxyz");

        let mut small = LastBytes::new(10);
        small.push(b"hello\n");
        assert!(!small.cut());
        assert_eq!(small.into_bytes(), b"hello\n");
    }
}
