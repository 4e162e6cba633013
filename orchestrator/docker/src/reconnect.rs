//! A Docker connection that survives the engine going away: it connects on
//! first use, and forgets the connection when a call finds the engine
//! unreachable, so the next call connects afresh (a restarted dockerd, a
//! socket that came back).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use orch_core::container::ContainerSpec;

use crate::{
    ContainerInfo, ContainerRuntime, ContainerSummary, DockerEngine, DockerError, Endpoint,
    EngineInfo, EventStream, ExecOutcome, LabelFilter, LogStream, LogsAsk, Removal,
};

/// A [`ContainerRuntime`] over a [`DockerEngine`] that connects on
/// first use and again after the engine was unreachable.
#[derive(Debug)]
pub struct Reconnecting {
    endpoint: Endpoint,
    // Held only to clone or replace the Arc, never across an await.
    engine: Mutex<Option<Arc<DockerEngine>>>,
}

impl Reconnecting {
    pub fn new(endpoint: Endpoint) -> Self {
        Reconnecting {
            endpoint,
            engine: Mutex::new(None),
        }
    }

    async fn engine(&self) -> Result<Arc<DockerEngine>, DockerError> {
        if let Some(e) = self.engine.lock().ok().and_then(|g| g.clone()) {
            return Ok(e);
        }
        let e = Arc::new(DockerEngine::connect(&self.endpoint).await?);
        if let Ok(mut g) = self.engine.lock() {
            *g = Some(e.clone());
        }
        Ok(e)
    }

    fn seen<T>(&self, r: Result<T, DockerError>) -> Result<T, DockerError> {
        if let Err(e) = &r
            && e.is_unreachable()
            && let Ok(mut g) = self.engine.lock()
        {
            *g = None;
        }
        r
    }
}

#[async_trait]
impl ContainerRuntime for Reconnecting {
    async fn ping(&self) -> Result<(), DockerError> {
        let r = match self.engine().await {
            Ok(e) => e.ping().await,
            Err(e) => Err(e),
        };
        self.seen(r)
    }

    async fn version(&self) -> Result<EngineInfo, DockerError> {
        let r = match self.engine().await {
            Ok(e) => e.version().await,
            Err(e) => Err(e),
        };
        self.seen(r)
    }

    async fn ensure_network(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<String, DockerError> {
        let r = match self.engine().await {
            Ok(e) => e.ensure_network(name, labels).await,
            Err(e) => Err(e),
        };
        self.seen(r)
    }

    async fn remove_network(&self, name: &str) -> Result<(), DockerError> {
        let r = match self.engine().await {
            Ok(e) => e.remove_network(name).await,
            Err(e) => Err(e),
        };
        self.seen(r)
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, DockerError> {
        let r = match self.engine().await {
            Ok(e) => e.create(spec).await,
            Err(e) => Err(e),
        };
        self.seen(r)
    }

    async fn start(&self, id: &str) -> Result<(), DockerError> {
        let r = match self.engine().await {
            Ok(e) => e.start(id).await,
            Err(e) => Err(e),
        };
        self.seen(r)
    }

    async fn stop(&self, id: &str, timeout: Duration) -> Result<(), DockerError> {
        let r = match self.engine().await {
            Ok(e) => e.stop(id, timeout).await,
            Err(e) => Err(e),
        };
        self.seen(r)
    }

    async fn kill(&self, id: &str, signal: &str) -> Result<(), DockerError> {
        let r = match self.engine().await {
            Ok(e) => e.kill(id, signal).await,
            Err(e) => Err(e),
        };
        self.seen(r)
    }

    async fn rename(&self, id: &str, new_name: &str) -> Result<(), DockerError> {
        let r = match self.engine().await {
            Ok(e) => e.rename(id, new_name).await,
            Err(e) => Err(e),
        };
        self.seen(r)
    }

    async fn remove(&self, id: &str, force: bool) -> Result<Removal, DockerError> {
        let r = match self.engine().await {
            Ok(e) => e.remove(id, force).await,
            Err(e) => Err(e),
        };
        self.seen(r)
    }

    async fn inspect(&self, id: &str) -> Result<ContainerInfo, DockerError> {
        let r = match self.engine().await {
            Ok(e) => e.inspect(id).await,
            Err(e) => Err(e),
        };
        self.seen(r)
    }

    async fn list(&self, filter: &LabelFilter) -> Result<Vec<ContainerSummary>, DockerError> {
        let r = match self.engine().await {
            Ok(e) => e.list(filter).await,
            Err(e) => Err(e),
        };
        self.seen(r)
    }

    async fn events(&self, filter: &LabelFilter) -> Result<EventStream, DockerError> {
        let r = match self.engine().await {
            Ok(e) => e.events(filter).await,
            Err(e) => Err(e),
        };
        self.seen(r)
    }

    async fn logs(&self, id: &str, ask: LogsAsk) -> Result<LogStream, DockerError> {
        let r = match self.engine().await {
            Ok(e) => e.logs(id, ask).await,
            Err(e) => Err(e),
        };
        self.seen(r)
    }

    async fn exec(
        &self,
        id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecOutcome, DockerError> {
        let r = match self.engine().await {
            Ok(e) => e.exec(id, cmd, timeout).await,
            Err(e) => Err(e),
        };
        self.seen(r)
    }

    async fn image_exists(&self, image: &str) -> Result<bool, DockerError> {
        let r = match self.engine().await {
            Ok(e) => e.image_exists(image).await,
            Err(e) => Err(e),
        };
        self.seen(r)
    }

    async fn cpu_usage(&self, id: &str) -> Result<u64, DockerError> {
        let r = match self.engine().await {
            Ok(e) => e.cpu_usage(id).await,
            Err(e) => Err(e),
        };
        self.seen(r)
    }

    async fn build_image(&self, context: Bytes, tag: &str) -> Result<String, DockerError> {
        let r = match self.engine().await {
            Ok(e) => e.build_image(context, tag).await,
            Err(e) => Err(e),
        };
        self.seen(r)
    }
}
