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
use orch_docker::{ContainerRuntime, ContainerState, LabelFilter};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::owner::{DockerNews, Event, Observed};

pub async fn run(
    rt: Arc<dyn ContainerRuntime>,
    host: String,
    network: String,
    tx: mpsc::Sender<Event>,
    shutdown: CancellationToken,
) {
    let mut pause = Duration::from_millis(200);
    loop {
        let outcome = tokio::select! {
            () = shutdown.cancelled() => return,
            r = session(&rt, &host, &network, &tx, &shutdown) => r,
        };
        if let Err(reason) = outcome {
            tracing::warn!(%reason, "Docker Engine unreachable; retrying in {pause:?}");
            if tx
                .send(Event::Docker(DockerNews::Down { reason }))
                .await
                .is_err()
            {
                return;
            }
        } else {
            pause = Duration::from_millis(200);
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
    tx: &mpsc::Sender<Event>,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let engine = rt.version().await.map_err(|e| e.to_string())?;
    let net_labels: BTreeMap<String, String> =
        [(labels::NETWORK.to_string(), host.to_string())].into();
    rt.ensure_network(network, &net_labels)
        .await
        .map_err(|e| e.to_string())?;
    let filter = LabelFilter::any().label(labels::HOST, host);
    let mut events = rt.events(&filter).await.map_err(|e| e.to_string())?;
    let listed = rt.list(&filter).await.map_err(|e| e.to_string())?;
    let mut containers = Vec::with_capacity(listed.len());
    for c in listed {
        // A listing has no exit codes; look at the stopped ones.
        let info = if c.state.is_alive() || c.state == ContainerState::Created {
            None
        } else {
            rt.inspect(&c.id).await.ok()
        };
        containers.push(Observed { summary: c, info });
    }
    tx.send(Event::Docker(DockerNews::Up {
        engine: Box::new(engine),
        containers,
    }))
    .await
    .map_err(|_| "the daemon is stopping".to_string())?;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            next = events.next() => match next {
                Some(Ok(ev)) => {
                    if tx.send(Event::Docker(DockerNews::Event(ev))).await.is_err() {
                        return Ok(());
                    }
                }
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("the event stream ended".into()),
            }
        }
    }
}
