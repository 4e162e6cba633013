//! The Docker side of each supervisor action, run as a task per action.
//! The executor reports each back to the owner as an `OpDone`, with a
//! typed [`LaunchError`] when it fails ([`JobFailure`] says whether a
//! replacement left its old container untouched); none touches host
//! state. A replacement creates its new container before it stops the old
//! one ([`launch`]). A
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

use crate::event::{self, JobFailure, SliceReady};
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

/// The name a replacement is created under until the container it
/// replaces is gone.
pub fn staging_name(name: &str) -> String {
    format!("{name}.next")
}

/// Creates a replica's container and, unless `start` is false, starts it.
/// With `replace`, the new container is made before the old one is
/// touched (see [`replace`]); `before_stop` runs just before the old one
/// is stopped.
pub async fn launch(
    rt: &dyn ContainerRuntime,
    spec: &ContainerSpec,
    replace: Option<&str>,
    stop_timeout: Duration,
    slice: Option<Slice>,
    start: bool,
    before_stop: impl Future<Output = ()> + Send,
) -> Result<OpSuccess, JobFailure> {
    let id = match replace {
        Some(old) => self::replace(rt, spec, old, stop_timeout, before_stop).await?,
        None => create(rt, spec, stop_timeout).await?,
    };
    if start {
        rt.start(&id).await.map_err(launch_error)?;
    }
    let mut done = inspect_facts(rt, &id).await?;
    done.slice = slice;
    Ok(done)
}

/// Creates a replica's container. A container already holding the name is
/// adopted when it is this replica at this config hash (an earlier launch
/// got as far as creating it), and replaced otherwise.
async fn create(
    rt: &dyn ContainerRuntime,
    spec: &ContainerSpec,
    stop_timeout: Duration,
) -> Result<String, LaunchError> {
    match rt.create(spec).await {
        Ok(id) => Ok(id),
        Err(DockerError::NameConflict { existing_id, .. }) => {
            let info = rt.inspect(&existing_id).await.map_err(launch_error)?;
            let same = |k: &str| info.labels.get(k) == spec.labels.get(k);
            if same(labels::HOST)
                && same(labels::AGENT)
                && same(labels::REPLICA)
                && same(labels::CONFIG_HASH)
            {
                Ok(existing_id)
            } else {
                stop_and_remove(rt, &existing_id, stop_timeout).await?;
                rt.create(spec).await.map_err(launch_error)
            }
        }
        Err(e) => Err(launch_error(e)),
    }
}

/// Create before destroy: the new container is created under the staging
/// name (a stale one, left by an earlier run, removed first), and only
/// then is `old` stopped and removed and the new one given the replica's
/// name. Until the create succeeds nothing of `old` is touched, so a
/// replacement that cannot be made (a missing image) leaves the replica
/// running: [`JobFailure::ReplacementNotMade`]. Returns the new id,
/// created, not started.
async fn replace(
    rt: &dyn ContainerRuntime,
    spec: &ContainerSpec,
    old: &str,
    stop_timeout: Duration,
    before_stop: impl Future<Output = ()> + Send,
) -> Result<String, JobFailure> {
    let not_made = JobFailure::ReplacementNotMade;
    let staging = staging_name(&spec.name);
    // A stale staging container is removed, unless it is `old` itself (an
    // earlier run stopped before its rename and the replica was adopted
    // under the staging name): the new one then takes the free name.
    let staged_name = match rt.inspect(&staging).await {
        Ok(info) if info.name != staging => staging,
        Ok(info) if info.id.starts_with(old) || old.starts_with(&info.id) => spec.name.clone(),
        Ok(info) => {
            rt.remove(&info.id, true)
                .await
                .map_err(|e| not_made(launch_error(e)))?;
            staging
        }
        Err(e) if e.is_not_found() => staging,
        Err(e) => return Err(not_made(launch_error(e))),
    };
    let staged_spec = ContainerSpec {
        name: staged_name.clone(),
        ..spec.clone()
    };
    let id = rt
        .create(&staged_spec)
        .await
        .map_err(|e| not_made(launch_error(e)))?;
    before_stop.await;
    let swapped = async {
        stop_and_remove(rt, old, stop_timeout).await?;
        if staged_name != spec.name {
            rt.rename(&id, &spec.name).await.map_err(launch_error)?;
        }
        Ok::<_, LaunchError>(())
    };
    if let Err(e) = swapped.await {
        // Nothing is left under the staging name with the replica's labels.
        if let Err(gone) = rt.remove(&id, true).await {
            tracing::warn!(container = %id, "cannot remove the replacement that was not put in place: {gone}");
        }
        return Err(JobFailure::Failed(e));
    }
    Ok(id)
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
    pub async fn run(self, ctx: JobCtx) -> Result<OpSuccess, JobFailure> {
        let rt = ctx.rt.as_ref();
        match self {
            Job::Launch {
                spec,
                replace,
                slice,
                stop_timeout,
                start,
            } => {
                // Until the new container exists the old one is not touched.
                let not_made = |e: LaunchError| match &replace {
                    Some(_) => JobFailure::ReplacementNotMade(e),
                    None => JobFailure::Failed(e),
                };
                let gpu_span = match &slice {
                    Some(s) => tracing::info_span!(
                        "gpu_prepare",
                        gpu = s.gpu_index(),
                        kind = s.kind_name()
                    ),
                    None => tracing::Span::none(),
                };
                let (slice, pipe) =
                    tracing::Instrument::instrument(prepare_gpu(&ctx, slice), gpu_span)
                        .await
                        .map_err(not_made)?;
                let agent = spec.config.agent(&spec.agent).ok_or_else(|| {
                    not_made(LaunchError::NotConfigured {
                        agent: spec.agent.clone(),
                    })
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
                // The old container's MPS clients are let go only once its
                // replacement exists, just before it is stopped.
                let release = async {
                    if let Some(old) = &replace {
                        release_mps(&ctx, old).await;
                    }
                };
                launch(
                    rt,
                    &built,
                    replace.as_deref(),
                    stop_timeout,
                    slice,
                    start,
                    release,
                )
                .await
            }
            Job::Start { id } => Ok(start(rt, &id).await?),
            Job::Restart { id, stop_timeout } => {
                release_mps(&ctx, &id).await;
                Ok(restart(rt, &id, stop_timeout).await?)
            }
            Job::Stop { id, stop_timeout } => {
                release_mps(&ctx, &id).await;
                stop_and_remove(rt, &id, stop_timeout).await?;
                Ok(OpSuccess {
                    container: None,
                    slice: None,
                })
            }
            Job::Remove { id } => {
                remove(rt, &id).await?;
                Ok(OpSuccess {
                    container: None,
                    slice: None,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, Ordering};

    use orch_core::container::GpuDevices;
    use orch_core::units::Duration as CoreDuration;
    use orch_docker::fake::{Call, FakeRuntime, Op};

    use super::*;

    const STOP: Duration = Duration::from_secs(5);
    const IMAGE_V1: &str = "agent:v1";
    const IMAGE_V2: &str = "agent:v2";

    fn spec(image: &str, hash: &str) -> ContainerSpec {
        ContainerSpec {
            name: "orch-main-a-0".into(),
            image: image.into(),
            command: None,
            env: BTreeMap::new(),
            labels: BTreeMap::from([
                (labels::HOST.into(), "main".into()),
                (labels::AGENT.into(), "a".into()),
                (labels::REPLICA.into(), "0".into()),
                (labels::CONFIG_HASH.into(), hash.into()),
            ]),
            network: "orch-main".into(),
            aliases: vec![],
            hostname: None,
            ports: vec![],
            mounts: vec![],
            cpus: None,
            memory: None,
            pids: None,
            cap_add: vec![],
            read_only_rootfs: false,
            gpu: GpuDevices::None,
            ipc_host: false,
            stop_timeout: CoreDuration::from_secs(5),
        }
    }

    /// A host with `agent:v1` only, and replica a/0 running on it.
    async fn running_v1() -> (FakeRuntime, String) {
        let rt = FakeRuntime::new();
        rt.strict_images();
        rt.add_image(IMAGE_V1);
        rt.ensure_network("orch-main", &BTreeMap::new())
            .await
            .expect("network");
        let done = launch(&rt, &spec(IMAGE_V1, "h1"), None, STOP, None, true, async {})
            .await
            .expect("first launch");
        let id = done.container.expect("a container").id;
        rt.take_calls();
        (rt, id)
    }

    fn only(rt: &FakeRuntime, ops: &[Op]) -> Vec<Op> {
        rt.ops().into_iter().filter(|o| ops.contains(o)).collect()
    }

    #[tokio::test]
    async fn a_replacement_is_created_before_the_old_container_is_stopped() {
        let (rt, old) = running_v1().await;
        rt.add_image(IMAGE_V2);
        let stopped_late = AtomicBool::new(false);
        let before_stop = async {
            // The MPS release sees the new container made, the old one up.
            let names: Vec<_> = rt.containers().into_iter().map(|c| c.name).collect();
            stopped_late.store(
                names.contains(&"orch-main-a-0.next".to_string())
                    && rt
                        .containers()
                        .iter()
                        .any(|c| c.id == old && c.state.is_alive()),
                Ordering::SeqCst,
            );
        };
        let done = launch(
            &rt,
            &spec(IMAGE_V2, "h2"),
            Some(&old),
            STOP,
            None,
            true,
            before_stop,
        )
        .await
        .expect("replaced");
        assert!(stopped_late.load(Ordering::SeqCst));
        assert_eq!(
            only(
                &rt,
                &[Op::Create, Op::Stop, Op::Remove, Op::Rename, Op::Start]
            ),
            [Op::Create, Op::Stop, Op::Remove, Op::Rename, Op::Start]
        );
        let new = done.container.expect("the new container");
        assert_ne!(new.id, old);
        assert_eq!(new.status, ContainerStatus::Running);
        assert_eq!(new.config_hash, "h2");
        let left = rt.containers();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].name, "orch-main-a-0");
        assert_eq!(left[0].id, new.id);
        assert!(rt.calls().contains(&Call::Rename {
            id: new.id.clone(),
            new_name: "orch-main-a-0".into()
        }));
    }

    #[tokio::test]
    async fn a_replacement_whose_image_is_missing_leaves_the_old_container_running() {
        let (rt, old) = running_v1().await;
        let released = AtomicBool::new(false);
        let failed = launch(
            &rt,
            &spec(IMAGE_V2, "h2"),
            Some(&old),
            STOP,
            None,
            true,
            async { released.store(true, Ordering::SeqCst) },
        )
        .await;
        assert_eq!(
            failed,
            Err(JobFailure::ReplacementNotMade(LaunchError::ImageMissing {
                image: IMAGE_V2.into()
            }))
        );
        assert!(!released.load(Ordering::SeqCst), "MPS clients let go");
        assert!(only(&rt, &[Op::Stop, Op::Remove, Op::Rename, Op::Start]).is_empty());
        let left = rt.containers();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].id, old);
        assert_eq!(left[0].name, "orch-main-a-0");
        assert_eq!(left[0].state, ContainerState::Running);
    }

    #[tokio::test]
    async fn a_stale_staging_container_is_removed_first() {
        let (rt, old) = running_v1().await;
        rt.add_image(IMAGE_V2);
        let mut stale = spec(IMAGE_V2, "h0");
        stale.name = staging_name(&stale.name);
        let stale_id = rt.create(&stale).await.expect("stale");
        rt.take_calls();
        let done = launch(
            &rt,
            &spec(IMAGE_V2, "h2"),
            Some(&old),
            STOP,
            None,
            true,
            async {},
        )
        .await
        .expect("replaced");
        let calls = rt.calls();
        let removed_stale = calls.iter().position(|c| {
            *c == Call::Remove {
                id: stale_id.clone(),
                force: true,
            }
        });
        let created = calls.iter().position(|c| matches!(c, Call::Create(_)));
        assert!(
            removed_stale.is_some() && removed_stale < created,
            "{calls:?}"
        );
        let left = rt.containers();
        assert_eq!(left.len(), 1);
        assert_eq!(Some(&left[0].id), done.container.map(|c| c.id).as_ref());
    }

    /// A replacement of a running v1 whose `op` fails once the old
    /// container is gone: an operation failure, not "not made". Returns
    /// the runtime and the old container's id.
    async fn replace_failing_at(op: Op) -> (FakeRuntime, String) {
        let (rt, old) = running_v1().await;
        rt.add_image(IMAGE_V2);
        rt.fail_next(
            op,
            DockerError::Api {
                status: 500,
                message: "went wrong".into(),
            },
        );
        let failed = launch(
            &rt,
            &spec(IMAGE_V2, "h2"),
            Some(&old),
            STOP,
            None,
            true,
            async {},
        )
        .await;
        assert!(
            matches!(
                failed,
                Err(JobFailure::Failed(LaunchError::DockerRefused { .. }))
            ),
            "{failed:?}"
        );
        (rt, old)
    }

    #[tokio::test]
    async fn a_failed_rename_after_the_old_is_gone_is_an_operation_failure() {
        let (rt, _old) = replace_failing_at(Op::Rename).await;
        // Nothing is left under the staging name with the replica's labels.
        assert!(rt.containers().is_empty());
    }

    #[tokio::test]
    async fn a_failed_start_after_the_old_is_gone_is_an_operation_failure() {
        let (rt, old) = replace_failing_at(Op::Start).await;
        // The new one is in place, created: the retry adopts it.
        let left = rt.containers();
        assert_eq!(left.len(), 1);
        assert_ne!(left[0].id, old);
        assert_eq!(left[0].name, "orch-main-a-0");
        assert_eq!(left[0].state, ContainerState::Created);
    }

    #[tokio::test]
    async fn a_replica_left_under_the_staging_name_is_replaced_under_its_own() {
        let rt = FakeRuntime::new();
        rt.ensure_network("orch-main", &BTreeMap::new())
            .await
            .expect("network");
        let mut adopted = spec(IMAGE_V1, "h1");
        adopted.name = staging_name(&adopted.name);
        let old = rt.create(&adopted).await.expect("create");
        rt.start(&old).await.expect("start");
        let done = launch(
            &rt,
            &spec(IMAGE_V2, "h2"),
            Some(&old),
            STOP,
            None,
            true,
            async {},
        )
        .await
        .expect("replaced");
        let left = rt.containers();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].name, "orch-main-a-0");
        assert_eq!(Some(&left[0].id), done.container.map(|c| c.id).as_ref());
        assert!(!rt.ops().contains(&Op::Rename));
    }
}
