//! Watches the Docker Engine: on (re)connection, lists our containers and
//! reports them; then forwards container events until the stream breaks,
//! reports the engine down, and tries again with a growing pause.
//!
//! The event stream is opened before the listing, so nothing that happens
//! in between is missed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use orch_core::container::labels;
use orch_docker::{ContainerRuntime, ContainerState, DockerError, LabelFilter};
use tokio_util::sync::CancellationToken;

use crate::event::{self, DockerNews, Observed};

/// Why a connected period ended.
#[derive(Debug, thiserror::Error)]
enum SessionEnd {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error("the event stream ended")]
    StreamEnded,
    /// The owner is gone: nobody to report to.
    #[error("the daemon is stopping")]
    Stopping,
}

/// Watches until `shutdown` fires.
pub async fn run(
    rt: Arc<dyn ContainerRuntime>,
    host: String,
    network: String,
    news: event::Sender<DockerNews>,
    shutdown: CancellationToken,
) {
    let mut pause = Duration::from_millis(200);
    loop {
        let outcome = tokio::select! {
            () = shutdown.cancelled() => return,
            r = session(&rt, &host, &network, &news, &shutdown) => r,
        };
        match outcome {
            Ok(()) => pause = Duration::from_millis(200),
            Err(SessionEnd::Stopping) => return,
            Err(end) => {
                let reason = end.to_string();
                tracing::warn!(%reason, "Docker Engine unreachable; retrying in {pause:?}");
                if news.send(DockerNews::Down { reason }).await.is_err() {
                    return;
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// One connected period: returns when the event stream ends.
async fn session(
    rt: &Arc<dyn ContainerRuntime>,
    host: &str,
    network: &str,
    news: &event::Sender<DockerNews>,
    shutdown: &CancellationToken,
) -> Result<(), SessionEnd> {
    let engine = rt.version().await?;
    let net_labels: BTreeMap<String, String> =
        [(labels::NETWORK.to_string(), host.to_string())].into();
    rt.ensure_network(network, &net_labels).await?;
    let filter = LabelFilter::any().label(labels::HOST, host);
    let mut events = rt.events(&filter).await?;
    let listed = rt.list(&filter).await?;
    let mut containers = Vec::with_capacity(listed.len());
    for c in listed {
        // A listing has no exit codes nor start times: look at each one
        // that ran (a running container is dated from its `StartedAt`).
        let info = if c.state == ContainerState::Created {
            None
        } else {
            rt.inspect(&c.id).await.ok()
        };
        containers.push(Observed { summary: c, info });
    }
    news.send(DockerNews::Up {
        engine: Box::new(engine),
        containers,
    })
    .await
    .map_err(|_| SessionEnd::Stopping)?;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            next = events.next() => match next {
                Some(Ok(ev)) => {
                    if news.send(DockerNews::Event(ev)).await.is_err() {
                        return Err(SessionEnd::Stopping);
                    }
                }
                Some(Err(e)) => return Err(e.into()),
                None => return Err(SessionEnd::StreamEnded),
            }
        }
    }
}
