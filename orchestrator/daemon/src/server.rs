//! The control API over HTTP/1.1 on a unix socket: a thin adapter. It
//! checks who connects, reads each body within the bound of its route's
//! kind (`fleet::trust::BodyKind`), turns each route into an [`Envelope`]
//! (`orch_api::http`), puts the operator's identity on one for another
//! host or one that changes this host's config, hands it to the [`Service`] and writes back what comes out; it
//! holds no state and knows no operation.

use std::convert::Infallible;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full, Limited, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use orch_api::{ApiError, Forbidden, Rejection};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use crate::accept;
use crate::fleet::trust::{self, BodyKind};
use crate::peer::{Peer, Policy};
use crate::service::Service;

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
    pub service: Service,
    pub policy: Policy,
}

/// Serves until `shutdown` fires; a failed accept (out of file
/// descriptors) is waited out, not spun on (`crate::accept`).
pub async fn serve(listener: UnixListener, server: Server, shutdown: CancellationToken) {
    let mut backoff = accept::Backoff::default();
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => return,
            s = accept::next(&listener, &mut backoff, "control socket") => s,
        };
        let peer = stream.peer_cred().ok().map(|c| Peer {
            pid: c.pid(),
            uid: c.uid(),
            gid: c.gid(),
            groups: c
                .pid()
                .map(crate::peer::supplementary_groups)
                .unwrap_or_default(),
        });
        let refusal = match &peer {
            Some(p) if server.policy.allows(p) => None,
            Some(p) => Some(server.policy.refusal(p)),
            None => Some(Forbidden::NoCredentials),
        };
        if refusal.is_some() {
            tracing::warn!(?peer, "refused a control connection");
        }
        let server = server.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let server = server.clone();
                let refusal = refusal.clone();
                let peer = peer.clone();
                async move {
                    if let Some(r) = refusal {
                        return Ok::<_, Infallible>(error(Rejection::Forbidden(r).into()));
                    }
                    Ok(route(&server.service, peer.as_ref(), req)
                        .await
                        .unwrap_or_else(error))
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

/// A reply's data as the HTTP body (`orch_api::http::answer`).
fn reply(r: &orch_api::Response) -> Response<Body> {
    let (status, body) = orch_api::http::answer(r);
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::OK))
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)).boxed_unsync())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed_unsync()))
}

/// The kind of body a route carries: a config text or state document
/// (`POST /v1/apply`, `/v1/plan`, `/v1/plan/fleet`, `/v1/state`), or
/// anything else.
pub fn body_kind(method: &str, path: &str) -> BodyKind {
    let route = path
        .strip_prefix(orch_api::http::PREFIX)
        .unwrap_or(path)
        .trim_end_matches('/');
    match (method, route) {
        ("POST", "/apply" | "/plan" | "/plan/fleet" | "/config/diff" | "/state") => {
            BodyKind::Config
        }
        _ => BodyKind::Request,
    }
}

/// Reads a body up to the bound of its kind: one announced larger is
/// refused before a byte of it is read, and one that turns out larger is
/// refused as soon as it passes the bound.
async fn read_body(kind: BodyKind, req: Request<Incoming>) -> Result<Bytes, ApiError> {
    let limit = kind.limit();
    let announced = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit as u64) {
        return Err(kind.too_large().into());
    }
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(kind.too_large().into()),
        Err(e) => Err(ApiError::from(Rejection::Unreadable {
            error: e.to_string(),
        })),
    }
}

async fn route(
    service: &Service,
    peer: Option<&Peer>,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let body = read_body(body_kind(&method, &path), req).await?;
    let mut env = orch_api::http::from_route(&method, &path, query.as_deref(), &body)?;
    // A request for another host carries who asked: that host holds them
    // to its own rules and audits what they do. So does one that changes
    // what this host is (`apply`, `reload`...): its config history names
    // who applied it.
    let for_another = env.host.as_deref().is_some_and(|h| h != service.host());
    let admin = env.request.class() == orch_api::RequestClass::Admin;
    if let Some(peer) = peer
        && (for_another || admin)
    {
        let peer = peer.clone();
        env.operator = tokio::task::spawn_blocking(move || trust::operator_of(&peer))
            .await
            .ok();
    }
    match &env.request {
        orch_api::Request::Events { since, follow } => {
            let events = service.events(&env, *since, *follow).await?;
            let lines = events.map(|e| {
                let mut v = serde_json::to_vec(&e).unwrap_or_default();
                v.push(b'\n');
                Ok::<_, Infallible>(Frame::data(Bytes::from(v)))
            });
            Ok(Response::new(BodyExt::boxed_unsync(StreamBody::new(lines))))
        }
        orch_api::Request::Logs { .. } => {
            let chunks = service
                .logs(&env)
                .await?
                .map(|b| Ok::<_, Infallible>(Frame::data(b)));
            Ok(Response::new(BodyExt::boxed_unsync(StreamBody::new(
                chunks,
            ))))
        }
        _ => Ok(reply(&service.call(env).await?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_has_the_body_bound_of_its_kind() {
        for (method, path) in [
            ("POST", "/v1/apply"),
            ("POST", "/v1/plan"),
            ("POST", "/v1/plan/fleet"),
            ("POST", "/v1/config/diff"),
            ("POST", "/v1/state"),
            ("POST", "/v1/state/"),
        ] {
            assert_eq!(body_kind(method, path), BodyKind::Config, "{method} {path}");
        }
        for (method, path) in [
            ("GET", "/v1/state"),
            ("POST", "/v1/groups/g/stop"),
            ("POST", "/v1/gpu/0/mig"),
            ("POST", "/v1/reload"),
            ("GET", "/v1/status"),
            ("POST", "/v2/apply"),
        ] {
            assert_eq!(
                body_kind(method, path),
                BodyKind::Request,
                "{method} {path}"
            );
        }
    }
}
