//! The Docker side of each supervisor action, run as a task per action.
//! Each reports back to the owner as `Event::Op`; none touches host state.

use std::sync::Arc;
use std::time::Duration;

use orch_core::container::{ContainerSpec, labels};
use orch_core::gpu::{ReplicaKey, Slice};
use orch_core::supervise::{ContainerFacts, ContainerStatus, OpKind, OpSuccess};
use orch_docker::{ContainerInfo, ContainerRuntime, ContainerState, DockerError};

/// Container facts as the supervisor needs them.
pub fn facts(info: &ContainerInfo) -> ContainerFacts {
    let status = match info.state {
        ContainerState::Created => ContainerStatus::Created,
        ContainerState::Running | ContainerState::Paused | ContainerState::Restarting => {
            ContainerStatus::Running
        }
        ContainerState::Exited | ContainerState::Dead | ContainerState::Removing => {
            ContainerStatus::Exited {
                code: info.exit_code.unwrap_or(-1),
                oom: info.oom_killed,
            }
        }
    };
    ContainerFacts {
        id: info.id.clone(),
        config_hash: info
            .labels
            .get(labels::CONFIG_HASH)
            .cloned()
            .unwrap_or_default(),
        status,
        started_at_ms: info
            .started_at_ms
            .and_then(|t| u64::try_from(t).ok())
            .unwrap_or(0),
    }
}

/// The replica a container belongs to, from its labels.
pub fn replica_of(
    labels_map: &std::collections::BTreeMap<String, String>,
) -> Option<(ReplicaKey, String)> {
    let agent = labels_map.get(labels::AGENT)?;
    let replica = labels_map.get(labels::REPLICA)?.parse().ok()?;
    let group = labels_map.get(labels::GROUP).cloned().unwrap_or_default();
    Some((ReplicaKey::new(agent, replica), group))
}

fn msg(e: DockerError) -> String {
    e.to_string()
}

async fn inspect_facts(rt: &dyn ContainerRuntime, id: &str) -> Result<OpSuccess, String> {
    let info = rt.inspect(id).await.map_err(msg)?;
    Ok(OpSuccess {
        container: Some(facts(&info)),
        slice: None,
    })
}

/// Creates and starts a replica's container. A container already holding
/// the name is adopted when it is this replica at this config hash (an
/// earlier launch got as far as creating it), and replaced otherwise.
pub async fn launch(
    rt: &dyn ContainerRuntime,
    spec: &ContainerSpec,
    replace: Option<&str>,
    stop_timeout: Duration,
    slice: Option<Slice>,
) -> Result<OpSuccess, String> {
    if let Some(old) = replace {
        stop_and_remove(rt, old, stop_timeout).await?;
    }
    let id = match rt.create(spec).await {
        Ok(id) => id,
        Err(DockerError::NameConflict { existing_id, .. }) => {
            let info = rt.inspect(&existing_id).await.map_err(msg)?;
            let same = |k: &str| info.labels.get(k) == spec.labels.get(k);
            if same(labels::HOST)
                && same(labels::AGENT)
                && same(labels::REPLICA)
                && same(labels::CONFIG_HASH)
            {
                existing_id
            } else {
                stop_and_remove(rt, &existing_id, stop_timeout).await?;
                rt.create(spec).await.map_err(msg)?
            }
        }
        Err(e) => return Err(msg(e)),
    };
    rt.start(&id).await.map_err(msg)?;
    let mut done = inspect_facts(rt, &id).await?;
    done.slice = slice;
    Ok(done)
}

pub async fn start(rt: &dyn ContainerRuntime, id: &str) -> Result<OpSuccess, String> {
    rt.start(id).await.map_err(msg)?;
    inspect_facts(rt, id).await
}

pub async fn restart(
    rt: &dyn ContainerRuntime,
    id: &str,
    timeout: Duration,
) -> Result<OpSuccess, String> {
    rt.stop(id, timeout).await.map_err(msg)?;
    rt.start(id).await.map_err(msg)?;
    inspect_facts(rt, id).await
}

pub async fn stop_and_remove(
    rt: &dyn ContainerRuntime,
    id: &str,
    timeout: Duration,
) -> Result<(), String> {
    match rt.stop(id, timeout).await {
        Ok(()) => {}
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(msg(e)),
    }
    rt.remove(id, true).await.map(|_| ()).map_err(msg)
}

pub async fn remove(rt: &dyn ContainerRuntime, id: &str) -> Result<(), String> {
    rt.remove(id, true).await.map(|_| ()).map_err(msg)
}

/// What one action needs to run on its own.
#[derive(Debug, Clone)]
pub enum Job {
    Launch {
        spec: Box<ContainerSpec>,
        replace: Option<String>,
        slice: Option<Slice>,
        stop_timeout: Duration,
    },
    Start {
        id: String,
    },
    Restart {
        id: String,
        stop_timeout: Duration,
    },
    Stop {
        id: String,
        stop_timeout: Duration,
    },
    Remove {
        id: String,
    },
}

impl Job {
    pub fn kind(&self, replace: bool) -> OpKind {
        match self {
            Job::Launch { .. } if replace => OpKind::Recreate,
            Job::Launch { .. } => OpKind::Launch,
            Job::Start { .. } => OpKind::Start,
            Job::Restart { .. } => OpKind::Restart,
            Job::Stop { .. } => OpKind::Stop,
            Job::Remove { .. } => OpKind::Remove,
        }
    }

    pub async fn run(self, rt: Arc<dyn ContainerRuntime>) -> Result<OpSuccess, String> {
        let rt = rt.as_ref();
        match self {
            Job::Launch {
                spec,
                replace,
                slice,
                stop_timeout,
            } => launch(rt, &spec, replace.as_deref(), stop_timeout, slice).await,
            Job::Start { id } => start(rt, &id).await,
            Job::Restart { id, stop_timeout } => restart(rt, &id, stop_timeout).await,
            Job::Stop { id, stop_timeout } => {
                stop_and_remove(rt, &id, stop_timeout)
                    .await
                    .map(|()| OpSuccess {
                        container: None,
                        slice: None,
                    })
            }
            Job::Remove { id } => remove(rt, &id).await.map(|()| OpSuccess {
                container: None,
                slice: None,
            }),
        }
    }
}
