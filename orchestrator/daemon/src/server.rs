//! The control API server: HTTP/1.1 over a unix socket. It only turns
//! requests into [`ApiCall`]s for the owner and answers with what comes
//! back; it holds no state of its own.

use std::convert::Infallible;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use orch_api::{ApiError, ApplyRequest, ErrorCode, GroupAction};
use orch_docker::ContainerRuntime;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::owner::{ApiCall, Event, GroupVerb};
use crate::peer::{Peer, Policy};

type Body = UnsyncBoxBody<Bytes, Infallible>;

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("another orchestratord is already listening on {0}")]
    InUse(PathBuf),
    #[error("cannot create the control socket {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the control socket group `{0}` does not exist; create it (groupadd {0}) or change `control.group`"
    )]
    NoGroup(String),
}

/// Binds the control socket: mode 0660, owned by the daemon's user and the
/// configured group. A stale socket file (nobody listening) is replaced; a
/// live one means another daemon runs, and is left alone.
pub async fn bind(path: &Path, group: Option<&str>) -> Result<(UnixListener, Policy), BindError> {
    let io = |source| BindError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(BindError::InUse(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(io)?;
    }
    let gid = match group {
        Some(name) => {
            nix::unistd::Group::from_name(name)
                .ok()
                .flatten()
                .ok_or_else(|| BindError::NoGroup(name.to_string()))?
                .gid
        }
        None => nix::unistd::getegid(),
    };
    let listener = UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io)?;
    nix::unistd::chown(path, None, Some(gid)).map_err(|e| io(std::io::Error::from(e)))?;
    Ok((listener, Policy::current(gid)))
}

#[derive(Debug, Clone)]
pub struct Server {
    pub tx: mpsc::Sender<Event>,
    pub rt: Arc<dyn ContainerRuntime>,
    pub policy: Policy,
}

pub async fn serve(listener: UnixListener, server: Server, shutdown: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((stream, _)) = accepted else { continue };
        let peer = stream.peer_cred().ok().map(|c| Peer {
            pid: c.pid(),
            uid: c.uid(),
            gid: c.gid(),
            groups: c
                .pid()
                .map(crate::peer::supplementary_groups)
                .unwrap_or_default(),
        });
        let allowed = peer.as_ref().is_some_and(|p| server.policy.allows(p));
        let refusal = match &peer {
            Some(p) if !allowed => server.policy.refusal(p),
            _ => "permission denied: peer credentials unavailable".into(),
        };
        if !allowed {
            tracing::warn!(?peer, "refused a control connection");
        }
        let server = server.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let server = server.clone();
                let refusal = refusal.clone();
                async move {
                    if !allowed {
                        return Ok::<_, Infallible>(error(ApiError::new(
                            ErrorCode::Forbidden,
                            refusal,
                        )));
                    }
                    Ok(route(&server, req).await.unwrap_or_else(error))
                }
            });
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
}

fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(bytes)).boxed_unsync())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed_unsync()))
}

fn error(e: ApiError) -> Response<Body> {
    json(
        StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &e,
    )
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::BadRequest, msg)
}

fn gone() -> ApiError {
    ApiError::new(ErrorCode::Unavailable, "the daemon is shutting down")
}

async fn ask<T>(
    server: &Server,
    make: impl FnOnce(oneshot::Sender<T>) -> ApiCall,
) -> Result<T, ApiError> {
    ask_event(server, |tx| Event::Api(make(tx))).await
}

async fn ask_event<T>(
    server: &Server,
    make: impl FnOnce(oneshot::Sender<T>) -> Event,
) -> Result<T, ApiError> {
    let (tx, rx) = oneshot::channel();
    server.tx.send(make(tx)).await.map_err(|_| gone())?;
    rx.await.map_err(|_| gone())
}

async fn body_json<T: serde::de::DeserializeOwned + Default>(
    req: Request<Incoming>,
) -> Result<T, ApiError> {
    let bytes = req
        .into_body()
        .collect()
        .await
        .map_err(|e| bad(e.to_string()))?
        .to_bytes();
    if bytes.is_empty() {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes).map_err(|e| bad(format!("bad request body: {e}")))
}

fn query(req: &Request<Incoming>, key: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then(|| v.to_string())
    })
}

fn flag(req: &Request<Incoming>, key: &str) -> bool {
    query(req, key).is_some_and(|v| v.is_empty() || v == "1" || v == "true")
}

async fn route(server: &Server, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path().to_string();
    let Some(rest) = path.strip_prefix(orch_api::PREFIX) else {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!(
                "no such API path {path}; this daemon speaks {}",
                orch_api::PREFIX
            ),
        ));
    };
    let parts: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let method = req.method().clone();
    match (method, parts.as_slice()) {
        (Method::GET, ["status"]) => Ok(json(StatusCode::OK, &ask(server, ApiCall::Status).await?)),
        (Method::GET, ["groups"]) => Ok(json(StatusCode::OK, &ask(server, ApiCall::Groups).await?)),
        (Method::GET, ["agents"]) => Ok(json(StatusCode::OK, &ask(server, ApiCall::Agents).await?)),
        (Method::POST, ["groups", name, verb]) => {
            let verb = match *verb {
                "start" => GroupVerb::Start,
                "stop" => GroupVerb::Stop,
                "restart" => GroupVerb::Restart,
                other => {
                    return Err(bad(format!(
                        "unknown group action `{other}`; use start, stop or restart"
                    )));
                }
            };
            let name = name.to_string();
            let action: GroupAction = body_json(req).await?;
            let r = ask(server, |reply| ApiCall::Group {
                name,
                verb,
                with_dependents: action.with_dependents,
                reply,
            })
            .await??;
            Ok(json(StatusCode::ACCEPTED, &r))
        }
        (Method::POST, ["agents", group, agent, "restart"]) => {
            let (group, agent) = (group.to_string(), agent.to_string());
            let r = ask(server, |reply| ApiCall::AgentRestart {
                group,
                agent,
                reply,
            })
            .await??;
            Ok(json(StatusCode::ACCEPTED, &r))
        }
        (Method::GET, ["agents", group, agent, "logs"]) => {
            let replica = query(&req, "replica")
                .and_then(|r| r.parse().ok())
                .unwrap_or(0);
            let tail = query(&req, "tail").and_then(|t| t.parse().ok());
            let follow = flag(&req, "follow");
            let (group, agent) = (group.to_string(), agent.to_string());
            let id = ask(server, |reply| ApiCall::Container {
                group,
                agent,
                replica,
                reply,
            })
            .await??;
            let logs = server
                .rt
                .logs(&id, follow, tail)
                .await
                .map_err(|e| ApiError::new(ErrorCode::Unavailable, e.to_string()))?;
            let body = logs.filter_map(|c| async move {
                c.ok().map(|c| Ok::<_, Infallible>(Frame::data(c.bytes)))
            });
            Ok(Response::new(BodyExt::boxed_unsync(StreamBody::new(body))))
        }
        (Method::GET, ["events"]) => {
            let since = query(&req, "since")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let follow = flag(&req, "follow");
            let (backlog, rx) = ask(server, |reply| ApiCall::Subscribe { since, reply }).await?;
            let last = backlog
                .last()
                .map(|e| e.seq)
                .unwrap_or(since.saturating_sub(1));
            let line = |e: &orch_api::Event| {
                let mut v = serde_json::to_vec(e).unwrap_or_default();
                v.push(b'\n');
                Ok::<_, Infallible>(Frame::data(Bytes::from(v)))
            };
            let head: Vec<_> = backlog.iter().map(line).collect();
            if !follow {
                return Ok(Response::new(BodyExt::boxed_unsync(StreamBody::new(
                    futures_util::stream::iter(head),
                ))));
            }
            let live = tokio_stream_from(rx)
                .filter(move |e| std::future::ready(e.seq > last))
                .map(move |e| line(&e));
            let body = futures_util::stream::iter(head).chain(live);
            Ok(Response::new(BodyExt::boxed_unsync(StreamBody::new(body))))
        }
        (Method::GET, ["gpu"]) => Ok(json(StatusCode::OK, &ask(server, ApiCall::Gpu).await?)),
        (Method::POST, ["plan"]) => {
            let body: ApplyBody = body_json(req).await?;
            let Some(request) = body.0 else {
                return Err(bad("`plan` needs a body: {file_name, config_text}"));
            };
            let r = ask(server, |reply| ApiCall::Plan { request, reply }).await??;
            Ok(json(StatusCode::OK, &r))
        }
        (Method::POST, ["gpu", index, "mig"]) => {
            let gpu: u32 = index
                .parse()
                .map_err(|_| bad(format!("`{index}` is not a GPU index")))?;
            let body: MigBody = body_json(req).await?;
            let Some(orch_api::MigModeRequest { enable }) = body.0 else {
                return Err(bad("`mig` needs a body: {enable: true|false}"));
            };
            let r = ask(server, |reply| ApiCall::MigMode { gpu, enable, reply }).await??;
            Ok(json(StatusCode::ACCEPTED, &r))
        }
        (Method::POST, ["reload"]) => {
            let r = ask_event(server, |reply| Event::Reload {
                text: None,
                reply: Some(reply),
            })
            .await??;
            Ok(json(StatusCode::OK, &r))
        }
        (Method::POST, ["apply"]) => {
            let body: ApplyBody = body_json(req).await?;
            let Some(ApplyRequest {
                file_name,
                config_text,
            }) = body.0
            else {
                return Err(bad("`apply` needs a body: {file_name, config_text}"));
            };
            let r = ask_event(server, |reply| Event::Reload {
                text: Some((file_name, config_text)),
                reply: Some(reply),
            })
            .await??;
            Ok(json(StatusCode::OK, &r))
        }
        (_, parts) => Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no such API path /{}", parts.join("/")),
        )),
    }
}

#[derive(Default, serde::Deserialize)]
#[serde(transparent)]
struct ApplyBody(Option<ApplyRequest>);

#[derive(Default, serde::Deserialize)]
#[serde(transparent)]
struct MigBody(Option<orch_api::MigModeRequest>);

/// A broadcast receiver as a stream; a follower that falls too far behind
/// is cut off rather than slowing the owner.
fn tokio_stream_from(
    rx: tokio::sync::broadcast::Receiver<orch_api::Event>,
) -> impl futures_util::Stream<Item = orch_api::Event> {
    futures_util::stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            Ok(e) => Some((e, rx)),
            Err(_) => None,
        }
    })
}
