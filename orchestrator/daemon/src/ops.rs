//! The Docker side of each supervisor action, run as a task per action.
//! The executor reports each back to the owner as an `OpDone`, with a
//! typed [`LaunchError`] when it fails; none touches host state. A
//! container of an MPS replica has its MPS clients terminated before it is
//! stopped (`release_mps`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use orch_core::container::{self, ContainerSpec, GpuContext, Injection, labels};
use orch_core::gpu::{ReplicaKey, Slice};
use orch_core::model::HostConfig;
use orch_core::supervise::{ContainerFacts, ContainerStatus, LaunchError, OpSuccess};
use orch_docker::{ContainerInfo, ContainerRuntime, ContainerState, DockerError};

use orch_gpu::MpsGpu;

use crate::event::{self, SliceReady};
use crate::gpu::GpuWorker;

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
        gpu_slice: info.labels.get(labels::GPU_SLICE).cloned(),
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

/// What a Docker failure means for a launch.
pub fn launch_error(e: DockerError) -> LaunchError {
    match e {
        DockerError::ImageMissing { image } => LaunchError::ImageMissing { image },
        DockerError::GpuDriverMissing { driver, message } => LaunchError::GpuDriverMissing {
            driver,
            detail: message,
        },
        DockerError::InvalidSpec { reason, .. } => LaunchError::InvalidSpec { detail: reason },
        e if e.is_unreachable() => LaunchError::DockerUnreachable {
            detail: e.to_string(),
        },
        e => LaunchError::DockerRefused {
            detail: e.to_string(),
        },
    }
}

async fn inspect_facts(rt: &dyn ContainerRuntime, id: &str) -> Result<OpSuccess, LaunchError> {
    let info = rt.inspect(id).await.map_err(|e| on_container(id, e))?;
    Ok(OpSuccess {
        container: Some(facts(&info)),
        slice: None,
    })
}

/// Creates a replica's container and, unless `start` is false, starts it. A container already holding
/// the name is adopted when it is this replica at this config hash (an
/// earlier launch got as far as creating it), and replaced otherwise.
pub async fn launch(
    rt: &dyn ContainerRuntime,
    spec: &ContainerSpec,
    replace: Option<&str>,
    stop_timeout: Duration,
    slice: Option<Slice>,
    start: bool,
) -> Result<OpSuccess, LaunchError> {
    if let Some(old) = replace {
        stop_and_remove(rt, old, stop_timeout).await?;
    }
    let id = match rt.create(spec).await {
        Ok(id) => id,
        Err(DockerError::NameConflict { existing_id, .. }) => {
            let info = rt.inspect(&existing_id).await.map_err(launch_error)?;
            let same = |k: &str| info.labels.get(k) == spec.labels.get(k);
            if same(labels::HOST)
                && same(labels::AGENT)
                && same(labels::REPLICA)
                && same(labels::CONFIG_HASH)
            {
                existing_id
            } else {
                stop_and_remove(rt, &existing_id, stop_timeout).await?;
                rt.create(spec).await.map_err(launch_error)?
            }
        }
        Err(e) => return Err(launch_error(e)),
    };
    if start {
        rt.start(&id).await.map_err(launch_error)?;
    }
    let mut done = inspect_facts(rt, &id).await?;
    done.slice = slice;
    Ok(done)
}

pub async fn start(rt: &dyn ContainerRuntime, id: &str) -> Result<OpSuccess, LaunchError> {
    rt.start(id).await.map_err(|e| on_container(id, e))?;
    inspect_facts(rt, id).await
}

/// A failure of an operation on an existing container: one Docker no
/// longer knows is gone (the supervisor then creates a new one).
fn on_container(id: &str, e: DockerError) -> LaunchError {
    if e.is_not_found() {
        LaunchError::ContainerGone { id: id.to_string() }
    } else {
        launch_error(e)
    }
}

pub async fn restart(
    rt: &dyn ContainerRuntime,
    id: &str,
    timeout: Duration,
) -> Result<OpSuccess, LaunchError> {
    rt.stop(id, timeout)
        .await
        .map_err(|e| on_container(id, e))?;
    rt.start(id).await.map_err(|e| on_container(id, e))?;
    inspect_facts(rt, id).await
}

pub async fn stop_and_remove(
    rt: &dyn ContainerRuntime,
    id: &str,
    timeout: Duration,
) -> Result<(), LaunchError> {
    match rt.stop(id, timeout).await {
        Ok(()) => {}
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(launch_error(e)),
    }
    rt.remove(id, true).await.map(|_| ()).map_err(launch_error)
}

pub async fn remove(rt: &dyn ContainerRuntime, id: &str) -> Result<(), LaunchError> {
    rt.remove(id, true).await.map(|_| ()).map_err(launch_error)
}

/// The inputs of a container spec, built only once the GPU side of the
/// slice is ready (a MIG device's UUID is known after it is made).
#[derive(Debug, Clone)]
pub struct SpecInputs {
    pub config: Arc<HostConfig>,
    pub agent: String,
    pub replica: u32,
    pub hash: String,
    pub generation: u64,
    pub injection: Injection,
}

/// What one action needs to run on its own.
#[derive(Debug, Clone)]
pub enum Job {
    Launch {
        spec: Box<SpecInputs>,
        replace: Option<String>,
        slice: Option<Slice>,
        stop_timeout: Duration,
        /// False: create only; the container is started later.
        start: bool,
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

/// The surroundings a job runs in.
#[derive(Debug, Clone)]
pub struct JobCtx {
    pub rt: Arc<dyn ContainerRuntime>,
    pub gpu: Option<GpuWorker>,
    /// Where per-GPU MPS pipe and log directories live.
    pub mps_base: PathBuf,
    /// A MIG instance made for the replica is reported at once.
    pub slice_ready: event::Sender<SliceReady>,
    pub key: ReplicaKey,
    /// The replica's GPU when its slice is an MPS share: its clients there
    /// are terminated before its container is stopped.
    pub mps: Option<MpsGpu>,
}

/// Before a container of an MPS replica is stopped (a stop, a restart, a
/// replacement), its MPS clients are terminated through the GPU's control
/// daemon, as NVIDIA asks (`crate::mps`). Bounded by
/// [`crate::mps::RELEASE_LIMIT`]; a failure is logged and the stop goes on.
async fn release_mps(ctx: &JobCtx, id: &str) {
    let (Some(gpu), Some(mps)) = (&ctx.gpu, &ctx.mps) else {
        return;
    };
    let uuid = mps.uuid.clone();
    match gpu
        .mps_release(mps.clone(), id, crate::mps::RELEASE_LIMIT)
        .await
    {
        Ok(done) => {
            for (server, client) in &done.terminated {
                tracing::info!(replica = %ctx.key, gpu = %uuid, server, client, "MPS client terminated before the stop");
            }
            for (server, client, why) in &done.failed {
                tracing::warn!(replica = %ctx.key, gpu = %uuid, server, client, "cannot terminate the MPS client before the stop: {why}; stopping it anyway");
            }
        }
        Err(e) => {
            tracing::warn!(replica = %ctx.key, gpu = %uuid, "cannot terminate the MPS clients before the stop: {e}; stopping it anyway");
        }
    }
}

/// Makes the GPU side of a slice real: the MIG instance (reported to the
/// owner at once, so it is never left unrecorded) or the MPS daemon.
/// Returns the completed slice and the MPS pipe directory, if any.
async fn prepare_gpu(
    ctx: &JobCtx,
    slice: Option<Slice>,
) -> Result<(Option<Slice>, Option<PathBuf>), LaunchError> {
    let Some(mut slice) = slice else {
        return Ok((None, None));
    };
    let gpu = || ctx.gpu.clone().ok_or(LaunchError::NoGpuAccess);
    let gpu_index = slice.gpu_index();
    let prepare = |detail: String| LaunchError::GpuPrepare { gpu_index, detail };
    let mut pipe = None;
    match &mut slice {
        Slice::Mig {
            gpu_index,
            profile_id,
            placement_start,
            gi_id,
            ci_id,
            device_uuid,
            ..
        } if gi_id.is_none() => {
            let made = gpu()?
                .create(*gpu_index, *profile_id, *placement_start)
                .await
                .map_err(|e| prepare(e.to_string()))?;
            *gi_id = Some(made.gi_id);
            *ci_id = Some(made.ci_id);
            *device_uuid = Some(made.device_uuid);
            let _ = ctx
                .slice_ready
                .send(SliceReady {
                    key: ctx.key.clone(),
                    slice: slice.clone(),
                })
                .await;
        }
        Slice::Mps { gpu_uuid, .. } => {
            let m = crate::gpu::mps_gpu(&ctx.mps_base, gpu_uuid);
            gpu()?
                .mps_ensure(m.clone())
                .await
                .map_err(|e| prepare(e.to_string()))?;
            pipe = Some(m.pipe_dir);
        }
        _ => {}
    }
    Ok((Some(slice), pipe))
}

impl Job {
    pub async fn run(self, ctx: JobCtx) -> Result<OpSuccess, LaunchError> {
        let rt = ctx.rt.as_ref();
        match self {
            Job::Launch {
                spec,
                replace,
                slice,
                stop_timeout,
                start,
            } => {
                if let Some(old) = &replace {
                    release_mps(&ctx, old).await;
                }
                let gpu_span = match &slice {
                    Some(s) => tracing::info_span!(
                        "gpu_prepare",
                        gpu = s.gpu_index(),
                        kind = s.kind_name()
                    ),
                    None => tracing::Span::none(),
                };
                let (slice, pipe) =
                    tracing::Instrument::instrument(prepare_gpu(&ctx, slice), gpu_span).await?;
                let agent =
                    spec.config
                        .agent(&spec.agent)
                        .ok_or_else(|| LaunchError::NotConfigured {
                            agent: spec.agent.clone(),
                        })?;
                let pipe_text = pipe.as_ref().map(|p| p.display().to_string());
                let built = container::build_spec(
                    &spec.config,
                    agent,
                    spec.replica,
                    &spec.hash,
                    spec.generation,
                    slice.as_ref(),
                    &GpuContext {
                        injection: spec.injection,
                        mps_pipe_dir: pipe_text.as_deref(),
                    },
                );
                launch(rt, &built, replace.as_deref(), stop_timeout, slice, start).await
            }
            Job::Start { id } => start(rt, &id).await,
            Job::Restart { id, stop_timeout } => {
                release_mps(&ctx, &id).await;
                restart(rt, &id, stop_timeout).await
            }
            Job::Stop { id, stop_timeout } => {
                release_mps(&ctx, &id).await;
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
