//! `raw-start`: create and start every replica of one group straight
//! through the Docker adapter, as fast as the engine allows. Prints one
//! JSON line of timings (seconds from the program's start).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use orch_core::container::{self, GpuContext, Injection, labels};
use orch_core::gpu::ReplicaKey;
use orch_daemon::probe::{NetProber, ProbeTarget, Prober, STARTUP_INTERVAL};
use orch_docker::{ContainerRuntime, DockerEngine, Endpoint};

#[derive(Debug, Parser)]
#[command(about = "Start a group's containers with no supervision (the raw Docker baseline)")]
struct Args {
    /// The host config (`startup_config.yaml`).
    #[arg(long)]
    config: PathBuf,
    /// The group whose agents are started.
    #[arg(long)]
    group: String,
    /// Docker operations at once (the daemon's `--parallel`, default 16).
    #[arg(long, default_value_t = 16)]
    parallel: usize,
    /// The Docker Engine (default: the local socket).
    #[arg(long)]
    docker_host: Option<String>,
    /// After starting, probe each container until its first success.
    #[arg(long)]
    probe: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let began = Instant::now();
    let loaded = orch_config::load_file(&args.config, &orch_config::LoadOptions::default())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let config = Arc::new(loaded.config);
    let Some(group) = config.group(&args.group) else {
        bail!("no group `{}` in {}", args.group, args.config.display());
    };
    let endpoint = args
        .docker_host
        .clone()
        .unwrap_or_else(|| format!("unix://{}", Endpoint::DEFAULT_SOCKET));
    let endpoint = Endpoint::parse(&endpoint).map_err(|e| anyhow::anyhow!("{e}"))?;
    let rt: Arc<dyn ContainerRuntime> = Arc::new(
        DockerEngine::connect(&endpoint)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    // What the daemon's watcher does before anything starts.
    let network = config.runtime.network.clone();
    let net_labels = [(labels::NETWORK.to_string(), config.host.name.clone())].into();
    rt.ensure_network(&network, &net_labels)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let connected = began.elapsed();

    let permits = Arc::new(tokio::sync::Semaphore::new(args.parallel.max(1)));
    let prober: Arc<dyn Prober> = Arc::new(NetProber::new(rt.clone()));
    let mut tasks = tokio::task::JoinSet::new();
    for agent in &group.agents {
        let hash = container::config_hash(agent);
        for replica in 0..agent.replicas {
            let spec = container::build_spec(
                &config,
                agent,
                replica,
                &hash,
                0,
                None,
                &GpuContext {
                    injection: Injection::Env,
                    mps_pipe_dir: None,
                },
            );
            let (rt, permits, prober) = (rt.clone(), permits.clone(), prober.clone());
            let target = ProbeTarget {
                key: ReplicaKey::new(&agent.name, replica),
                id: String::new(),
                network: network.clone(),
                check: agent.health.clone(),
            };
            let stop_timeout = agent.stop_timeout.std();
            let probe = args.probe;
            tasks.spawn(async move {
                let launched = {
                    let _permit = permits.acquire_owned().await;
                    orch_daemon::ops::launch(
                        rt.as_ref(),
                        &spec,
                        None,
                        stop_timeout,
                        None,
                        true,
                        std::future::ready(()),
                    )
                    .await
                };
                let done = launched
                    .map_err(|e| format!("{}: {e:?}", spec.name))?
                    .container
                    .ok_or_else(|| format!("{}: no container", spec.name))?;
                let running = began.elapsed();
                let mut healthy = None;
                if probe {
                    let target = ProbeTarget {
                        id: done.id,
                        ..target
                    };
                    let deadline = Instant::now() + Duration::from_secs(120);
                    while Instant::now() < deadline {
                        if prober.probe(&target).await {
                            healthy = Some(began.elapsed());
                            break;
                        }
                        tokio::time::sleep(STARTUP_INTERVAL).await;
                    }
                }
                Ok::<_, String>((running, healthy))
            });
        }
    }
    let mut running = Vec::new();
    let mut healthy = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (r, h) = joined
            .context("a launch task failed")?
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        running.push(r.as_secs_f64());
        if let Some(h) = h {
            healthy.push(h.as_secs_f64());
        }
    }
    if args.probe && healthy.len() != running.len() {
        bail!(
            "{} of {} containers never passed a probe",
            running.len() - healthy.len(),
            running.len()
        );
    }
    let max = |v: &[f64]| v.iter().copied().fold(0.0_f64, f64::max);
    println!(
        "{}",
        serde_json::json!({
            "containers": running.len(),
            "parallel": args.parallel,
            "connected_s": connected.as_secs_f64(),
            "all_running_s": max(&running),
            "all_healthy_s": if args.probe { Some(max(&healthy)) } else { None },
        })
    );
    Ok(())
}
