//! `plan --all-hosts` with three federated daemons in process: alpha (an
//! RTX 4090, running a 12g and an 8g MPS share), beta (an RTX 3060,
//! running a 2g share) and gamma (no NVML). Agents that fit here, only
//! there, or nowhere, each host with its reasons; and a scale-up refused
//! for want of a GPU that names the host where the replica would fit.

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use orch_api::{ClientError, ErrorCode, FleetPlan, NotPlanned, PeerState, ReplicaFit};
use orch_daemon::testing::{Harness, World, federation_section};
use orch_federation::MemNetwork;

const DEFAULTS: &str = r#"defaults:
  image: orchestrator-agent:latest
  health: {http: {port: 8080}, interval: 500ms, timeout: 1s, retries: 2, start_period: 5s}
  stop_timeout: 2s
  min_healthy: 0s
"#;

fn config(name: &str, peers: &[&str], groups: &str) -> String {
    format!("version: 1\nhost: {{name: {name}}}\n{DEFAULTS}groups:\n{groups}")
        + &federation_section(peers)
}

const ALPHA: &str = r#"  gpu:
    agents:
      Llm: {gpu: {slice: mps, memory: 12g, compute: 50%}}
      Worker: {gpu: {slice: mps, memory: 8g, compute: 25%}, autoscale: {min: 1, max: 3, cpu: 70%}}
"#;

/// alpha's config with three more agents: 2g (room here), 6g (room on
/// beta only), 16g (no room anywhere).
const ALPHA_MORE: &str = r#"  more:
    agents:
      Small: {gpu: {slice: mps, memory: 2g, compute: 10%}}
      Mid: {gpu: {slice: mps, memory: 6g, compute: 10%}}
      Huge: {gpu: {slice: mps, memory: 16g, compute: 10%}}
"#;

const BETA: &str = r#"  cams:
    agents:
      Cam: {gpu: {slice: mps, memory: 2g, compute: 10%}}
"#;

const GAMMA: &str = r#"  g:
    agents:
      A: {}
"#;

fn gpu(class: &str) -> orch_gpu::FakeGpu {
    orch_gpu::FakeGpu::new().with_gpu(orch_core::gpu::class_by_name(class).unwrap(), false)
}

async fn settle(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Until alpha holds beta's and gamma's snapshots with what runs there.
async fn until_seen(a: &Harness) {
    for _ in 0..600 {
        let fleet = a.client.fleet().await.unwrap();
        let seen = |host: &str, check: &dyn Fn(&orch_api::HostSnapshot) -> bool| {
            fleet
                .hosts
                .iter()
                .find(|h| h.host == host)
                .is_some_and(|h| {
                    h.state == PeerState::Alive && h.snapshot.as_ref().is_some_and(check)
                })
        };
        if seen("beta", &|s| {
            s.gpu.gpus.first().is_some_and(|g| g.slices.len() == 1)
        }) && seen("gamma", &|s| s.gpu.reason.is_some())
        {
            return;
        }
        settle(50).await;
    }
    panic!("alpha never saw its peers: {:?}", a.client.fleet().await);
}

/// Per host: whether it fits, and each replica's slice or reason (or why
/// the host was not planned), in words.
fn table(plan: &FleetPlan) -> Vec<(String, bool, Vec<String>)> {
    plan.hosts
        .iter()
        .map(|h| {
            let what = match &h.not_planned {
                Some(why) => vec![why.to_string()],
                None => h
                    .replicas
                    .iter()
                    .map(|r| match &r.fit {
                        ReplicaFit::Fits { slice, kept, .. } => {
                            format!("{slice}{}", if *kept { " (kept)" } else { "" })
                        }
                        ReplicaFit::DoesNotFit { error } => error.to_string(),
                    })
                    .collect(),
            };
            (h.host.clone(), h.fits, what)
        })
        .collect()
}

fn row(host: &str, fits: bool, what: &[&str]) -> (String, bool, Vec<String>) {
    (
        host.to_string(),
        fits,
        what.iter().map(|s| s.to_string()).collect(),
    )
}

/// Why gamma's GPUs cannot be used, as its daemon says it.
const GAMMA_REASON: &str = "cannot load the NVML library libnvidia-ml.so.1: this host has no NVML library. GPU groups cannot start on this host; CPU-only groups can. Install the NVIDIA driver or point ORCH_NVML_LIBRARY at libnvidia-ml.so.1";
const NO_NVML: &str = "its GPUs cannot be used: cannot load the NVML library libnvidia-ml.so.1: this host has no NVML library. GPU groups cannot start on this host; CPU-only groups can. Install the NVIDIA driver or point ORCH_NVML_LIBRARY at libnvidia-ml.so.1";

#[tokio::test(start_paused = true)]
async fn placement_advice_names_where_an_agent_fits_and_why_not_elsewhere() {
    let net = MemNetwork::new();
    let alpha = config("alpha", &["beta", "gamma"], ALPHA);
    let a = Harness::start_in(
        World::new()
            .on(&net)
            .with_gpu(gpu("NVIDIA GeForce RTX 4090")),
        &alpha,
    )
    .await;
    let b = Harness::start_in(
        World::new()
            .on(&net)
            .with_gpu(gpu("NVIDIA GeForce RTX 3060")),
        &config("beta", &["alpha", "gamma"], BETA),
    )
    .await;
    let c = Harness::start_in(
        World::new().on(&net),
        &config("gamma", &["alpha", "beta"], GAMMA),
    )
    .await;
    a.client.group_start("gpu").await.unwrap();
    b.client.group_start("cams").await.unwrap();
    c.client.group_start("g").await.unwrap();
    a.until_ready().await;
    b.until_ready().await;
    until_seen(&a).await;

    let file = alpha.replace("federation:", &format!("{ALPHA_MORE}federation:"));
    let plan = |agent: &'static str| {
        let a = &a;
        let file = &file;
        async move {
            a.client
                .plan_fleet(Some(("more.yaml", file)), Some(agent))
                .await
                .unwrap()
        }
    };

    // Fits here (alpha keeps 12g + 8g of its 22.78g), and on beta.
    let small = plan("more/Small").await;
    assert_eq!(small.planned_by, "alpha");
    assert_eq!(small.config_host, "alpha");
    assert_eq!(small.agent.as_deref(), Some("more/Small"));
    assert_eq!(
        table(&small),
        [
            row("alpha", true, &["GPU 0 mps 2g 10%"]),
            row("beta", true, &["GPU 0 mps 2g 10%"]),
            row("gamma", false, &[NO_NVML]),
        ]
    );
    assert!(small.hosts[0].own_host && !small.hosts[1].own_host);
    assert_eq!(
        small.hosts[2].not_planned,
        Some(NotPlanned::GpusUnavailable {
            reason: GAMMA_REASON.into()
        })
    );

    // Fits only on beta, on top of its Cam.
    let mid = plan("Mid").await;
    assert_eq!(
        table(&mid),
        [
            row(
                "alpha",
                false,
                &[
                    "Mid wants mps memory=6g compute=10%; GPU 0 (NVIDIA GeForce RTX 4090): 22g of 23326m already given to 3 clients, 6g more does not fit"
                ]
            ),
            row("beta", true, &["GPU 0 mps 6g 10%"]),
            row("gamma", false, &[NO_NVML]),
        ]
    );

    // Fits nowhere, each host saying why.
    let huge = plan("more/Huge").await;
    assert_eq!(huge.fits_on().count(), 0);
    assert_eq!(
        table(&huge),
        [
            row(
                "alpha",
                false,
                &[
                    "Huge wants mps memory=16g compute=10%; GPU 0 (NVIDIA GeForce RTX 4090): 22g of 23326m already given to 3 clients, 16g more does not fit"
                ]
            ),
            row(
                "beta",
                false,
                &[
                    "Huge wants mps memory=16g compute=10%; GPU 0 (NVIDIA GeForce RTX 3060): 2g of 11407m already given to 1 client, 16g more does not fit"
                ]
            ),
            row("gamma", false, &[NO_NVML]),
        ]
    );

    // Without a file: the running config. Worker runs here.
    let worker = a.client.plan_fleet(None, Some("gpu/Worker")).await.unwrap();
    assert_eq!(worker.file_name, "the running config");
    assert_eq!(
        table(&worker)[..2],
        [
            row("alpha", true, &["GPU 0 mps 8g 25% (kept)"]),
            row("beta", true, &["GPU 0 mps 8g 25%"]),
        ]
    );

    // The whole file: every replica on one host, which none can hold.
    let whole = a
        .client
        .plan_fleet(Some(("more.yaml", &file)), None)
        .await
        .unwrap();
    assert_eq!(whole.agent, None);
    assert_eq!(whole.requests.len(), 5);
    assert_eq!(whole.fits_on().count(), 0);
    let alpha_fits: Vec<bool> = whole.hosts[0]
        .replicas
        .iter()
        .map(|r| matches!(r.fit, ReplicaFit::Fits { .. }))
        .collect();
    assert_eq!(alpha_fits, [true, true, true, false, false]);

    // An agent the file does not have.
    let e = match a
        .client
        .plan_fleet(Some(("more.yaml", &file)), Some("more/Midd"))
        .await
        .unwrap_err()
    {
        ClientError::Api(e) => e,
        other => panic!("{other}"),
    };
    assert_eq!(e.code, ErrorCode::NotFound);
    assert_eq!(
        e.message,
        "no agent `more/Midd` in more.yaml; did you mean `more/Mid`?"
    );

    // Asked of beta through alpha: beta plans on its own view.
    let from_beta = a
        .client
        .clone()
        .for_host(Some("beta".into()))
        .plan_fleet(None, Some("Cam"))
        .await
        .unwrap();
    assert_eq!(from_beta.planned_by, "beta");
    assert_eq!(from_beta.hosts[0].host, "beta");
    assert!(from_beta.hosts[0].fits);
}

#[tokio::test(start_paused = true)]
async fn a_scale_up_refused_for_want_of_a_gpu_names_the_host_it_would_fit_on() {
    let net = MemNetwork::new();
    let a = Harness::start_in(
        World::new()
            .on(&net)
            .with_gpu(gpu("NVIDIA GeForce RTX 4090")),
        &config("alpha", &["beta", "gamma"], ALPHA),
    )
    .await;
    let b = Harness::start_in(
        World::new()
            .on(&net)
            .with_gpu(gpu("NVIDIA GeForce RTX 3060")),
        &config("beta", &["alpha", "gamma"], BETA),
    )
    .await;
    let _c = Harness::start_in(
        World::new().on(&net),
        &config("gamma", &["alpha", "beta"], GAMMA),
    )
    .await;
    a.client.group_start("gpu").await.unwrap();
    b.client.group_start("cams").await.unwrap();
    a.until_ready().await;
    b.until_ready().await;
    until_seen(&a).await;

    let refused = |r: Result<orch_api::Accepted, ClientError>| match r {
        Err(ClientError::Api(e)) => e,
        other => panic!("{other:?}"),
    };
    // A second 8g Worker: 28g on alpha's 22.78g; beta has 9.14g free.
    let e = refused(a.client.scale("gpu", "Worker", Some(2)).await);
    assert_eq!(e.code, ErrorCode::Conflict);
    assert_eq!(
        e.message,
        "gpu/Worker cannot run 2 replica(s): 1 new replica(s) cannot be placed on this host's GPUs (see `orchestratorctl plan`); they would fit on host beta (`orchestratorctl plan --all-hosts --agent gpu/Worker`); nothing was changed"
    );
    assert_eq!(e.details.len(), 1, "{:?}", e.details);
    assert!(
        e.details[0].starts_with("Worker#1 wants mps"),
        "{:?}",
        e.details
    );
    // Nothing changed.
    assert!(a.client.state_export().await.unwrap().scale.is_empty());

    // Two more do not fit on beta together: no host is named.
    let e = refused(a.client.scale("gpu", "Worker", Some(3)).await);
    assert!(
        e.message.contains("no other host has the room either"),
        "{}",
        e.message
    );

    // Beta's daemon lost: its last report is not planned on.
    net.cut("alpha", "beta");
    for _ in 0..600 {
        let peers = a.client.peers().await.unwrap();
        if peers
            .iter()
            .any(|p| p.name == "beta" && p.state == PeerState::Down)
        {
            break;
        }
        settle(50).await;
    }
    let e = refused(a.client.scale("gpu", "Worker", Some(2)).await);
    assert!(
        e.message.contains("no other host has the room either"),
        "{}",
        e.message
    );
    let plan = a.client.plan_fleet(None, Some("Worker")).await.unwrap();
    assert_eq!(table(&plan)[1], row("beta", false, &["its daemon is down"]));
}
