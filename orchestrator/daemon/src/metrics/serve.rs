//! The `/metrics` listener: HTTP/1.1 over TCP on `metrics.listen`. It
//! renders the latest snapshot the owner published and never asks the
//! owner anything, so a scrape is answered while the owner is busy.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{CONTENT_TYPE, MetricsSnapshot, render};

/// The latest snapshot, as the owner publishes it.
pub type Published = watch::Receiver<Arc<MetricsSnapshot>>;

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

/// The text of the last snapshot rendered, shared by every connection:
/// scrapes of a snapshot the owner has not replaced since (a second
/// scraper, or scrapes faster than the owner publishes) reuse one render.
#[derive(Debug, Default, Clone)]
pub struct Rendered(Arc<Mutex<Option<Text>>>);

/// A snapshot and its text.
type Text = (Arc<MetricsSnapshot>, Bytes);

impl Rendered {
    /// The text of `snapshot`, rendered only if it is not the last one.
    /// The lock is held to compare and to store, never while rendering.
    pub fn text(&self, snapshot: Arc<MetricsSnapshot>) -> Bytes {
        if let Ok(last) = self.0.lock()
            && let Some((s, text)) = last.as_ref()
            && Arc::ptr_eq(s, &snapshot)
        {
            return text.clone();
        }
        let text = Bytes::from(render(&snapshot));
        if let Ok(mut last) = self.0.lock() {
            *last = Some((snapshot, text.clone()));
        }
        text
    }
}

fn answer(
    snapshots: &Published,
    rendered: &Rendered,
    req: &Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
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
    let mut r = Response::new(Full::new(rendered.text(snapshot)));
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
    let rendered = Rendered::default();
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => return,
            s = crate::accept::next(&listener, &mut backoff, "/metrics") => s,
        };
        let snapshots = snapshots.clone();
        let rendered = rendered.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let r = answer(&snapshots, &rendered, &req);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unchanged_snapshot_is_rendered_once_and_a_new_one_again() {
        let rendered = Rendered::default();
        let first = Arc::new(MetricsSnapshot::empty("h", "1"));
        let a = rendered.text(first.clone());
        let b = rendered.text(first);
        assert_eq!(a.as_ptr(), b.as_ptr(), "the second scrape reused the text");
        let second = Arc::new(MetricsSnapshot::empty("h", "2"));
        let c = rendered.text(second);
        assert_ne!(a.as_ptr(), c.as_ptr());
        assert!(String::from_utf8_lossy(&c).contains("version=\"2\""));
    }
}
