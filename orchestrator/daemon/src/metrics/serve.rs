//! The `/metrics` listener: HTTP/1.1 over TCP on `metrics.listen`. It
//! renders the latest snapshot the owner published and never asks the
//! owner anything, so a scrape is answered while the owner is busy.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{CONTENT_TYPE, Snapshot, render};

/// The latest snapshot, as the owner publishes it.
pub type Published = watch::Receiver<Arc<Snapshot>>;

#[derive(Debug, thiserror::Error)]
#[error("cannot listen for metrics on {addr}: {source}")]
pub struct MetricsBindError {
    pub addr: String,
    #[source]
    pub source: std::io::Error,
}

/// Binds `addr` (`host:port`; port 0 picks a free one).
pub async fn bind(addr: &str) -> Result<TcpListener, MetricsBindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsBindError {
            addr: addr.to_string(),
            source,
        })
}

fn answer(snapshots: &Published, req: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let plain = |status: StatusCode, text: &'static str| {
        let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
        *r.status_mut() = status;
        r
    };
    if req.uri().path() != "/metrics" {
        return plain(StatusCode::NOT_FOUND, "only /metrics is served here\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "GET /metrics\n");
    }
    // The clone of an Arc: the lock of the watch channel is held for no
    // longer than that, and rendering happens outside it.
    let snapshot = snapshots.borrow().clone();
    let text = render(&snapshot);
    let mut r = Response::new(Full::new(Bytes::from(text)));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(CONTENT_TYPE),
    );
    r
}

/// Serves until `shutdown` fires; a failed accept (out of file
/// descriptors) is waited out, not spun on (`crate::accept`).
pub async fn serve(listener: TcpListener, snapshots: Published, shutdown: CancellationToken) {
    let mut backoff = crate::accept::Backoff::default();
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => return,
            s = crate::accept::next(&listener, &mut backoff, "/metrics") => s,
        };
        let snapshots = snapshots.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let r = answer(&snapshots, &req);
                async move { Ok::<_, Infallible>(r) }
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

/// The address a listener got (for port 0).
pub fn local_addr(listener: &TcpListener) -> Option<SocketAddr> {
    listener.local_addr().ok()
}
