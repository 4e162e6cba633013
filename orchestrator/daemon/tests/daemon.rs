//! The daemon in process: owner loop, every API request, reload,
//! adoption after a restart, crash loops and event streaming, on fakes and
//! a paused clock (see `orch_daemon::testing`).

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use futures_util::StreamExt;
use orch_api::wire::{EventKind, FailReason, Phase};
use orch_api::{ClientError, ErrorCode, GroupState};
use orch_daemon::testing::{CHAIN, Harness, World};
use orch_docker::fake::Op;

fn api_error(e: ClientError) -> orch_api::ApiError {
    match e {
        ClientError::Api(a) => a,
        other => panic!("not an API error: {other}"),
    }
}

fn names(events: &[orch_api::Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e.kind.replica() {
            Some(r) => format!("{} {}", e.kind.name(), r),
            None => match e.kind.group() {
                Some(g) => format!("{} {g}", e.kind.name()),
                None => e.kind.name().to_string(),
            },
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_group_starts_in_dependency_order_and_its_dependencies_first() {
    let h = Harness::start(CHAIN).await;
    let s = h.status().await;
    assert_eq!(s.host, "testhost");
    assert!(s.groups.iter().all(|g| g.state == GroupState::Stopped));

    let accepted = h.client.group_start("extra").await.unwrap();
    assert_eq!(accepted.groups, ["base", "extra"]);
    assert_eq!(accepted.message, "starting base, extra");
    let s = h.until_ready().await;
    assert_eq!((s.agents.healthy, s.agents.wanted), (5, 5));

    let events = h.events().await;
    assert!(events.iter().all(|e| e.host == "testhost"));
    let order = names(&events);
    let at = |n: &str| {
        order
            .iter()
            .position(|x| x == n)
            .unwrap_or_else(|| panic!("no `{n}` in {order:#?}"))
    };
    assert!(at("agent-healthy Flaky") < at("agent-starting Mid"));
    assert!(at("agent-healthy Mid") < at("agent-starting Top"));
    assert!(at("group-ready base") < at("agent-starting Side"));
    // Held agents are reported held once, however often they are looked at.
    let held_top = order.iter().filter(|n| *n == "agent-held Top").count();
    assert_eq!(held_top, 1, "{order:#?}");
    // One container per replica, each labelled as ours.
    let containers = h.world.rt.containers();
    assert_eq!(containers.len(), 5);
    assert!(
        containers
            .iter()
            .all(|c| c.labels.get("io.orchestrator.host").map(String::as_str) == Some("testhost"))
    );
}

#[tokio::test(start_paused = true)]
async fn every_request_is_answered() {
    let h = Harness::start(CHAIN).await;
    h.client.group_start("base").await.unwrap();
    h.until_ready().await;

    // groups, agents
    let groups = h.client.groups().await.unwrap();
    assert_eq!(
        groups
            .iter()
            .map(|g| (g.name.as_str(), g.state))
            .collect::<Vec<_>>(),
        [("base", GroupState::Ready), ("extra", GroupState::Stopped)]
    );
    let agents = h.client.agents(Some("base")).await.unwrap();
    assert_eq!(
        agents.iter().map(|a| a.agent.as_str()).collect::<Vec<_>>(),
        ["Flaky", "Mid", "Top"]
    );
    assert!(
        agents
            .iter()
            .all(|a| a.phase == Phase::Running && a.required)
    );
    let e = api_error(h.client.agents(Some("bsae")).await.unwrap_err());
    assert_eq!(e.code, ErrorCode::NotFound);
    assert!(e.message.contains("did you mean `base`?"), "{}", e.message);
    let e = api_error(h.client.group_start("nosuch").await.unwrap_err());
    assert!(e.message.contains("known: base, extra"), "{}", e.message);

    // agent restart: an event says it was asked for.
    let a = h.client.agent_restart("base", "Top").await.unwrap();
    assert_eq!(a.message, "restarting base/Top");
    let e = api_error(h.client.agent_restart("extra", "Top").await.unwrap_err());
    assert!(
        e.message.contains("did you mean `base/Top`?"),
        "{}",
        e.message
    );
    h.until("Top restarted", |s| s.agents.healthy == 3).await;
    let events = h.events().await;
    assert!(
        events
            .iter()
            .any(|e| matches!(&e.kind, EventKind::AgentRestartRequested { replica, .. } if replica.agent == "Top"))
    );

    // logs, through the container's output
    let top = h.container_of("Top").await.unwrap();
    h.world
        .rt
        .push_log(&top, orch_docker::OutputStream::Stdout, "hello from Top\n")
        .unwrap();
    let chunks: Vec<_> = h
        .client
        .logs("base", "Top", 0, false, None)
        .await
        .unwrap()
        .map(|c| c.unwrap())
        .collect()
        .await;
    let text: Vec<u8> = chunks.concat();
    assert!(String::from_utf8_lossy(&text).contains("hello from Top"));
    let e = api_error(
        h.client
            .logs("extra", "Side", 0, false, None)
            .await
            .err()
            .unwrap(),
    );
    assert!(e.message.contains("has no container"), "{}", e.message);

    // stop refuses what others need; restart follows the same rule
    h.client.group_start("extra").await.unwrap();
    h.until_ready().await;
    let e = api_error(h.client.group_stop("base", false).await.unwrap_err());
    assert_eq!(e.code, ErrorCode::Conflict);
    let e = api_error(h.client.group_restart("base", false).await.unwrap_err());
    assert_eq!(e.code, ErrorCode::Conflict);
    assert!(
        e.message.contains("pass --with-dependents"),
        "{}",
        e.message
    );
    let r = h.client.group_restart("base", true).await.unwrap();
    assert_eq!(r.groups, ["base", "extra"]);
    h.until("both back", |s| {
        s.groups.iter().all(|g| g.state == GroupState::Ready)
    })
    .await;
    let s = h.client.group_stop("base", true).await.unwrap();
    assert_eq!(s.groups, ["base", "extra"]);
    h.until("all stopped", |s| {
        s.groups.iter().all(|g| g.state == GroupState::Stopped)
    })
    .await;
    assert!(h.world.rt.containers().is_empty());

    // gpu, plan, MIG mode on a host without NVML
    let g = h.client.gpu().await.unwrap();
    assert!(!g.available);
    assert!(
        g.reason
            .as_deref()
            .is_some_and(|r| r.contains("this host has no NVML library")),
        "{:?}",
        g.reason
    );
    let e = api_error(h.client.mig_mode(0, true).await.unwrap_err());
    assert_eq!(e.code, ErrorCode::Unavailable);
    let text = std::fs::read_to_string(h.config_path()).unwrap();
    let e = api_error(h.client.plan("c.yaml", &text).await.unwrap_err());
    assert_eq!(e.code, ErrorCode::Unavailable);
    let other = text.replace("name: testhost", "name: otherhost");
    let e = api_error(h.client.plan("c.yaml", &other).await.unwrap_err());
    assert!(e.message.contains("host `otherhost`"), "{}", e.message);

    // a request for another host, with no federation
    let remote = h.client.clone().for_host(Some("pc2".into()));
    let e = api_error(remote.status().await.unwrap_err());
    assert_eq!(e.code, ErrorCode::HostUnreachable);
    assert!(e.message.contains("`pc2`"), "{}", e.message);
    // ...and one for this host by name is this host's
    let mine = h.client.clone().for_host(Some("testhost".into()));
    assert_eq!(mine.status().await.unwrap().host, "testhost");
}

#[tokio::test(start_paused = true)]
async fn gpu_requests_on_fake_gpus() {
    let class = orch_core::gpu::class_by_name("NVIDIA GeForce RTX 4090").unwrap();
    let world = World::new().with_gpu(orch_gpu::FakeGpu::new().with_gpu(class, false));
    let config = format!(
        "{CHAIN}  vision:\n    agents:\n      Eyes: {{gpu: {{slice: mps, memory: 4g, compute: 25%}}}}\n"
    );
    let h = Harness::start_in(world, &config).await;
    h.client.group_start("vision").await.unwrap();
    h.until_ready().await;
    let g = h.client.gpu().await.unwrap();
    assert!(g.available);
    assert_eq!(g.gpus.len(), 1);
    let gpu = &g.gpus[0];
    let inventory = orch_gpu::GpuBackend::inventory(h.world.gpu.as_deref().unwrap()).unwrap();
    assert_eq!(
        gpu.info.memory_total_bytes,
        inventory[0].memory_total.bytes()
    );
    assert_eq!(gpu.slices.len(), 1);
    assert_eq!(gpu.slices[0].replica.agent, "Eyes");
    assert_eq!(gpu.slices[0].slice.to_string(), "GPU 0 mps 4g 25%");
    // MIG on a GeForce card: said plainly, whatever holds slices.
    let e = api_error(h.client.mig_mode(0, true).await.unwrap_err());
    assert!(e.message.contains("does not support MIG"), "{}", e.message);
    // A plan on the live inventory keeps the running slice.
    let text = std::fs::read_to_string(h.config_path()).unwrap();
    let plan = h.client.plan("c.yaml", &text).await.unwrap();
    assert_eq!(plan.assignments.len(), 1);
    assert!(plan.assignments[0].kept);
    assert_eq!(plan.changes.unwrap().unchanged, 6);
}

#[tokio::test(start_paused = true)]
async fn apply_refuses_a_gpu_request_that_cannot_be_placed_unless_forced() {
    let class = orch_core::gpu::class_by_name("NVIDIA GeForce RTX 4090").unwrap();
    let world = World::new().with_gpu(orch_gpu::FakeGpu::new().with_gpu(class, false));
    let config = format!(
        "{CHAIN}  vision:\n    agents:\n      Eyes: {{gpu: {{slice: mps, memory: 4g, compute: 25%}}}}\n"
    );
    let h = Harness::start_in(world, &config).await;
    // The first inventory is taken as the daemon starts.
    for _ in 0..100 {
        if h.client.gpu().await.unwrap().available {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(h.client.gpu().await.unwrap().available);
    // 30g fits the largest GPU there is, not this host's 24 GiB card.
    let too_big = config.replace("memory: 4g", "memory: 30g");
    let e = api_error(h.client.apply("big.yaml", &too_big).await.unwrap_err());
    assert_eq!(e.code, ErrorCode::Conflict);
    assert!(e.message.contains("--force"), "{}", e.message);
    assert_eq!(e.details.len(), 1, "{:?}", e.details);
    assert!(e.details[0].contains("Eyes"), "{:?}", e.details);
    assert_eq!(
        std::fs::read_to_string(h.config_path()).unwrap(),
        config,
        "nothing was applied"
    );
    // A placeable change is applied as before.
    let fits = config.replace("memory: 4g", "memory: 8g");
    let applied = h.client.apply("fits.yaml", &fits).await.unwrap();
    assert!(applied.warnings.is_empty(), "{:?}", applied.warnings);
    // --force applies it anyway, and says so.
    let applied = h
        .client
        .apply_with("big.yaml", &too_big, true)
        .await
        .unwrap();
    assert_eq!(applied.changed, ["Eyes"]);
    assert!(
        applied
            .warnings
            .iter()
            .any(|w| w.contains("--force") && w.contains("Eyes")),
        "{:?}",
        applied.warnings
    );
    assert_eq!(std::fs::read_to_string(h.config_path()).unwrap(), too_big);
}

#[tokio::test(start_paused = true)]
async fn apply_and_reload_recreate_only_what_changed() {
    let h = Harness::start(CHAIN).await;
    h.client.group_start("base").await.unwrap();
    h.until_ready().await;
    let mut before = Vec::new();
    for a in ["Flaky", "Mid", "Top"] {
        before.push(h.container_of(a).await.unwrap());
    }
    let changed = CHAIN.replace(
        "Top: {depends_on: [Mid]}",
        "Top: {depends_on: [Mid], env: {MODE: fast}}",
    );
    let applied = h.client.apply("new.yaml", &changed).await.unwrap();
    assert_eq!(applied.changed, ["Top"]);
    assert_eq!(applied.recreated, ["Top"]);
    assert_eq!(applied.generation, 1);
    // apply installs the text over the daemon's config file
    assert_eq!(std::fs::read_to_string(h.config_path()).unwrap(), changed);
    h.until("Top recreated", |s| {
        s.agents.healthy == 3 && s.generation == 1
    })
    .await;
    h.until_ready().await;
    assert_eq!(h.container_of("Flaky").await.unwrap(), before[0]);
    assert_eq!(h.container_of("Mid").await.unwrap(), before[1]);
    assert_ne!(h.container_of("Top").await.unwrap(), before[2]);

    // A bad config is refused whole; the running one stays.
    let e = api_error(
        h.client
            .apply("bad.yaml", "version: 1\nhost: {name: testhost}\ngroups: {g: {agents: {A: {depends_on: [Nope]}}}}\n")
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, ErrorCode::InvalidConfig);
    assert!(!e.details.is_empty());
    assert_eq!(std::fs::read_to_string(h.config_path()).unwrap(), changed);

    // reload re-reads the file (as SIGHUP does)
    std::fs::write(h.config_path(), CHAIN).unwrap();
    let applied = h.client.reload().await.unwrap();
    assert_eq!(applied.changed, ["Top"]);
    assert_eq!(applied.generation, 2);
    // A change to an agent of a stopped group recreates nothing now.
    let side = CHAIN.replace("Side: {}", "Side: {env: {MODE: slow}}");
    std::fs::write(h.config_path(), &side).unwrap();
    let applied = h.client.reload().await.unwrap();
    assert_eq!(applied.changed, ["Side"]);
    assert!(applied.recreated.is_empty(), "{:?}", applied.recreated);
    std::fs::write(h.config_path(), CHAIN).unwrap();
    let applied = h.client.reload().await.unwrap();
    assert!(applied.warnings.is_empty(), "{:?}", applied.warnings);
    h.control.reload().await;
    h.until("generation 5", |s| s.generation == 5).await;

    // What the daemon opened at start is not reopened: the reply says so.
    let listen = format!("{CHAIN}metrics: {{listen: \"127.0.0.1:9999\"}}\n");
    std::fs::write(h.config_path(), &listen).unwrap();
    let applied = h.client.reload().await.unwrap();
    assert!(applied.changed.is_empty(), "{:?}", applied.changed);
    assert_eq!(applied.warnings.len(), 1, "{:?}", applied.warnings);
    assert!(
        applied.warnings[0]
            .starts_with("`metrics` changed: it takes effect when orchestratord restarts"),
        "{:?}",
        applied.warnings
    );
}

#[tokio::test(start_paused = true)]
async fn a_restarted_daemon_adopts_what_runs_and_restarts_nothing() {
    let mut h = Harness::start(CHAIN).await;
    h.client.group_start("extra").await.unwrap();
    h.until_ready().await;
    let ids: Vec<String> = h.world.rt.containers().into_iter().map(|c| c.id).collect();
    assert_eq!(h.world.store.state().unwrap().started_groups.len(), 2);
    h.world.rt.take_calls();

    h.restart().await;
    h.until_ready().await;
    let after: Vec<String> = h.world.rt.containers().into_iter().map(|c| c.id).collect();
    assert_eq!(ids, after, "the same containers, none replaced");
    let ops = h.world.rt.ops();
    assert!(
        !ops.iter()
            .any(|o| matches!(o, Op::Create | Op::Start | Op::Stop | Op::Remove)),
        "{ops:?}"
    );
    let events = h.events().await;
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::AgentAdopted { .. }))
            .count(),
        5
    );
}

#[tokio::test(start_paused = true)]
async fn a_crash_loop_holds_dependents_until_it_recovers() {
    let h = Harness::start(CHAIN).await;
    h.client.group_start("base").await.unwrap();
    h.until_ready().await;
    // Flaky dies every time it is started, for a while.
    let rt = h.world.rt.clone();
    let killer = tokio::spawn(async move {
        for _ in 0..200 {
            for c in rt.containers() {
                if c.labels.get("io.orchestrator.agent").map(String::as_str) == Some("Flaky")
                    && c.state.is_alive()
                {
                    let _ = rt.exit(&c.id, 3);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    h.until("Flaky crash-loops and its dependents are down", |s| {
        s.agents.crashlooping == 1 && s.agents.running == 0
    })
    .await;
    let agents = h.client.agents(Some("base")).await.unwrap();
    let top = agents.iter().find(|a| a.agent == "Top").unwrap();
    assert_ne!(top.phase, Phase::Running);
    let flaky = agents.iter().find(|a| a.agent == "Flaky").unwrap();
    assert!(flaky.crashloop);
    killer.await.unwrap();
    // It stays up now; its dependents come back in order.
    h.until_ready().await;
    let order = names(&h.events().await);
    let loop_at = order
        .iter()
        .position(|n| n == "agent-crash-loop Flaky")
        .unwrap();
    let recovered = order
        .iter()
        .position(|n| n == "agent-recovered Flaky")
        .unwrap();
    let mid_back = order
        .iter()
        .enumerate()
        .skip(loop_at)
        .find(|(_, n)| *n == "agent-starting Mid")
        .map(|(i, _)| i)
        .unwrap();
    assert!(recovered < mid_back, "{order:#?}");
}

#[tokio::test(start_paused = true)]
async fn event_streams_resume_without_gaps_or_repeats() {
    let h = Harness::start(CHAIN).await;
    let mut follow = Box::pin(h.client.events(1, true).await.unwrap());
    h.client.group_start("base").await.unwrap();
    h.until_ready().await;
    let all = h.events().await;
    let mut seen = Vec::new();
    while seen.len() < all.len() {
        seen.push(follow.next().await.unwrap().unwrap());
    }
    assert_eq!(seen, all);
    let seqs: Vec<u64> = all.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=all.len() as u64).collect::<Vec<_>>());
    // Resuming from the middle gives the rest, exactly.
    let mid = all[all.len() / 2].seq;
    let rest: Vec<_> = h
        .client
        .events(mid, false)
        .await
        .unwrap()
        .map(|e| e.unwrap())
        .collect()
        .await;
    assert_eq!(rest, all[all.len() / 2..].to_vec());
}

#[tokio::test(start_paused = true)]
async fn a_missing_image_fails_the_launch_with_a_typed_reason() {
    let h = Harness::start(CHAIN).await;
    h.world.rt.strict_images();
    h.client.group_start("base").await.unwrap();
    h.until("Flaky failed", |s| s.agents.running == 0).await;
    let events = h.events().await;
    let reason = events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::AgentFailed { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        reason,
        FailReason::ImageMissing {
            image: "orchestrator-agent:latest".into()
        }
    );
    assert_eq!(reason.label(), "image_missing");
    let agents = h.client.agents(Some("base")).await.unwrap();
    assert!(matches!(
        &agents[0].phase,
        Phase::Failed {
            reason: FailReason::ImageMissing { .. },
            ..
        }
    ));
    // Top waits for Mid, and its container, made ahead, failed the same way.
    assert_ne!(agents[2].phase, Phase::Running);
    // Once the image is there, the retry brings it all up.
    h.world.rt.add_image("orchestrator-agent:latest");
    h.until_ready().await;
}
