//! The read models as tables: a host in some state, a request, the answer
//! in a line or a few (`check(host, request, expect)`).

#![allow(clippy::unwrap_used)]

use orch_api::{ApiError, Request, Response};
use orch_core::gpu::{GpuInfo, class_by_name};
use orch_core::supervise::{
    Action, ContainerFacts, ContainerStatus, Input, OpKind, OpSuccess, Persisted, Supervisor,
};

use super::*;

const CONFIG: &str = r#"version: 1
host: {name: h}
defaults:
  image: img:1
  health: {http: {port: 8080}}
groups:
  base:
    agents:
      Flaky: {}
      Mid: {depends_on: [Flaky]}
  extra:
    depends_on: [base]
    agents:
      Side: {}
      Extra: {required: false}
  gpu:
    agents:
      Vision: {gpu: {slice: mps, memory: 4g, compute: 20%}}
"#;

fn config(text: &str) -> HostConfig {
    orch_config::load_str("h.yaml", text, &Default::default())
        .unwrap()
        .config
}

/// The supervisor of host `h`, Docker up, playing the executor: every
/// launch and start succeeds, every probe passes.
struct Host {
    sup: Supervisor,
    ids: u32,
}

impl Host {
    fn new() -> Host {
        let c = config(CONFIG);
        let hashes = orch_core::container::config_hashes(&c);
        let mut sup = Supervisor::new(c, hashes, Persisted::default());
        sup.handle(0, Input::Resync { containers: vec![] });
        Host { sup, ids: 0 }
    }

    fn with_gpu(mut self) -> Host {
        let g4090 = class_by_name("NVIDIA GeForce RTX 4090").unwrap();
        let a100 = class_by_name("NVIDIA A100-SXM4-40GB").unwrap();
        let gpus = vec![
            GpuInfo::from_class(0, "GPU-a", g4090, false),
            GpuInfo::from_class(1, "GPU-b", a100, false),
        ];
        let out = self.sup.handle(0, Input::Inventory { gpus });
        self.run(out.actions);
        self
    }

    /// Starts `group`; with `healthy`, everything that launches passes its
    /// probes (so what waits for it starts too).
    fn start(mut self, group: &str, healthy: bool) -> Host {
        let out = self.sup.start_group(0, group).unwrap().outcome;
        self.ops(out.actions, healthy);
        self
    }

    /// Starts `group` and leaves its launches in flight.
    fn begin(mut self, group: &str) -> Host {
        self.sup.start_group(0, group).unwrap();
        self
    }

    fn ops(&mut self, actions: Vec<Action>, healthy: bool) {
        let mut todo = actions;
        while !todo.is_empty() {
            let mut next = Vec::new();
            for a in todo {
                let out = match a {
                    Action::Launch { key, start, .. } => {
                        self.ids += 1;
                        let container = ContainerFacts {
                            id: format!("c{}", self.ids),
                            config_hash: self.sup.config_hash(&key.agent).unwrap().into(),
                            status: if start {
                                ContainerStatus::Running
                            } else {
                                ContainerStatus::Created
                            },
                            started_at_ms: 0,
                            gpu_slice: None,
                        };
                        let op = if start {
                            OpKind::Launch
                        } else {
                            OpKind::Create
                        };
                        self.finished(key, op, Some(container))
                    }
                    Action::Start { key, id } => {
                        let mut c = self.sup.replica(&key).unwrap().container.clone().unwrap();
                        c.id = id;
                        c.status = ContainerStatus::Running;
                        self.finished(key, OpKind::Start, Some(c))
                    }
                    Action::WatchHealth { key, id } if healthy => {
                        self.sup.handle(0, Input::Health { key, id, ok: true })
                    }
                    _ => continue,
                };
                next.extend(out.actions);
            }
            todo = next;
        }
    }

    fn run(&mut self, actions: Vec<Action>) {
        self.ops(actions, true);
    }

    fn finished(
        &mut self,
        key: ReplicaKey,
        op: OpKind,
        container: Option<ContainerFacts>,
    ) -> orch_core::supervise::Outcome {
        self.sup.handle(
            0,
            Input::OpFinished {
                key,
                op,
                result: Ok(OpSuccess {
                    container,
                    slice: None,
                }),
            },
        )
    }
}

fn facts() -> Facts<'static> {
    Facts {
        version: "1.0",
        pid: 7,
        docker_endpoint: "unix:///d.sock",
        gpu_injection: "env",
        last_event_seq: 4,
        ..Facts::default()
    }
}

/// An answer in a few lines: what the CLI would show, minus the layout.
fn render(answer: Result<Response, Rejection>) -> String {
    let lines: Vec<String> = match answer {
        Err(e) => {
            let e = ApiError::from(e);
            vec![format!("{:?}: {}", e.code, e.message)]
        }
        Ok(Response::Status(s)) => vec![format!(
            "{} gen={} docker={} gpus={} agents={}/{}/{} state={} last_event={}",
            s.host,
            s.generation,
            s.docker.connected,
            s.gpu.available,
            s.agents.wanted,
            s.agents.running,
            s.agents.healthy,
            s.state.origin,
            s.last_event_seq
        )],
        Ok(Response::Groups(groups)) => groups
            .iter()
            .map(|g| {
                format!(
                    "{} {:?} {}/{}/{} deps={:?} optional_not_ready={:?}",
                    g.name,
                    g.state,
                    g.wanted,
                    g.running,
                    g.healthy,
                    g.depends_on,
                    g.optional_not_ready
                )
            })
            .collect(),
        Ok(Response::Agents(agents)) => agents
            .iter()
            .map(|a| {
                let pending = a.pending.map(|p| format!(" ({p})")).unwrap_or_default();
                format!(
                    "{}/{} {:?}{pending} {:?} slice={}",
                    a.group,
                    a.agent,
                    a.phase,
                    a.health,
                    a.slice
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default()
                )
            })
            .collect(),
        Ok(Response::Gpu(g)) => {
            std::iter::once(format!("available={} reason={:?}", g.available, g.reason))
                .chain(g.gpus.iter().map(|s| {
                    format!(
                        "GPU {} {} slices={:?}",
                        s.info.index,
                        s.info.name,
                        s.slices
                            .iter()
                            .map(|o| format!("{} {}", o.replica, o.slice))
                            .collect::<Vec<_>>()
                    )
                }))
                .collect()
        }
        Ok(Response::State(d)) => vec![format!(
            "{} gen={} started={:?}",
            d.host, d.generation, d.started_groups
        )],
        Ok(other) => vec![format!("{}", other.name())],
    };
    lines.join("\n")
}

#[track_caller]
fn check(host: &Host, request: Request, expect: &str) {
    let got = render(query(&host.sup, &facts(), &request).expect("a query"));
    let want: Vec<&str> = expect
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(got, want.join("\n"), "{request:?}");
}

#[test]
fn status() {
    check(
        &Host::new(),
        Request::Status,
        "h gen=0 docker=true gpus=false agents=0/0/0 state= last_event=4",
    );
    check(
        &Host::new().start("base", true),
        Request::Status,
        "h gen=0 docker=true gpus=false agents=2/2/2 state= last_event=4",
    );
}

#[test]
fn groups() {
    check(
        &Host::new(),
        Request::Groups,
        r#"base Stopped 0/0/0 deps=[] optional_not_ready=[]
           extra Stopped 0/0/0 deps=["base"] optional_not_ready=[]
           gpu Stopped 0/0/0 deps=[] optional_not_ready=[]"#,
    );
    check(
        &Host::new().start("extra", false),
        Request::Groups,
        r#"base Starting 2/1/0 deps=[] optional_not_ready=[]
           extra Starting 2/0/0 deps=["base"] optional_not_ready=["Extra"]
           gpu Stopped 0/0/0 deps=[] optional_not_ready=[]"#,
    );
}

#[test]
fn agents() {
    check(
        &Host::new().start("extra", false),
        Request::Agents {
            group: Some("extra".into()),
        },
        r#"extra/Side Held { waiting_for: [Group { group: "base" }] } Unknown slice=
           extra/Extra Held { waiting_for: [Group { group: "base" }] } Unknown slice="#,
    );
    check(
        &Host::new().start("gpu", true),
        Request::Agents { group: None },
        "gpu/Vision Held { waiting_for: [GpuInventory] } Unknown slice=",
    );
    check(
        &Host::new().with_gpu().start("gpu", true),
        Request::Agents { group: None },
        "gpu/Vision Running Healthy slice=GPU 0 mps 4g 20%",
    );
    check(
        &Host::new(),
        Request::Agents {
            group: Some("bse".into()),
        },
        "NotFound: no group `bse` on host h; did you mean `base`?",
    );
}

#[test]
fn gpu() {
    check(&Host::new(), Request::Gpu, "available=false reason=None");
    check(
        &Host::new().with_gpu().start("gpu", true),
        Request::Gpu,
        r#"available=true reason=None
           GPU 0 NVIDIA GeForce RTX 4090 slices=["Vision GPU 0 mps 4g 20%"]
           GPU 1 NVIDIA A100-SXM4-40GB slices=[]"#,
    );
}

#[test]
fn state_export() {
    check(
        &Host::new().start("extra", false),
        Request::StateExport,
        r#"h gen=0 started=["base", "extra"]"#,
    );
}

#[test]
fn only_reads_are_queries() {
    let host = Host::new();
    for r in [
        Request::Reload,
        Request::Peers,
        Request::Fleet,
        Request::GroupStart {
            group: "base".into(),
        },
    ] {
        assert!(query(&host.sup, &facts(), &r).is_none(), "{r:?}");
    }
}

#[test]
fn the_container_of_a_replica_or_why_there_is_none() {
    let cases: &[(&Host, (&str, &str, u32), &str)] = &[
        (&Host::new().start("base", true), ("base", "Flaky", 0), "c1"),
        (
            &Host::new(),
            ("base", "Flaky", 0),
            "NotFound: base/Flaky has no container: its group `base` is not started",
        ),
        (
            &Host::new().start("extra", false),
            ("extra", "Side", 0),
            "NotFound: extra/Side has no container: it is held, waiting for group base",
        ),
        (
            &Host::new().start("gpu", true),
            ("gpu", "Vision", 0),
            "NotFound: gpu/Vision has no container: it is held, waiting for the GPU inventory",
        ),
        (
            &Host::new().begin("base"),
            ("base", "Flaky", 0),
            "NotFound: base/Flaky has no container: it is about to start",
        ),
        (
            &Host::new(),
            ("extra", "Flaky", 0),
            "NotFound: no agent `Flaky` in group `extra`; did you mean `base/Flaky`?",
        ),
        (
            &Host::new(),
            ("extra", "Nobody", 0),
            "NotFound: no agent `Nobody` in group `extra`",
        ),
        (
            &Host::new(),
            ("nogroup", "Flaky", 0),
            "NotFound: no group `nogroup` on host h; known: base, extra, gpu",
        ),
    ];
    for (host, (group, agent, replica), want) in cases {
        let got = match container_of(&host.sup, group, agent, *replica) {
            Ok(id) => id,
            Err(e) => render(Err(e)),
        };
        assert_eq!(&got, want, "{group}/{agent}");
    }
}

#[test]
fn a_plan_says_what_would_change_or_why_it_cannot() {
    let host = Host::new().with_gpu();
    let other = CONFIG.replace("{name: h}", "{name: pc2}");
    let err = plan(&host.sup, "pc2.yaml", &config(&other)).unwrap_err();
    assert_eq!(
        render(Err(err)),
        "Conflict: pc2.yaml is the config of host `pc2`, but this daemon runs host `h`; plan it on that host, or with --offline"
    );
    let err = plan(&Host::new().sup, "h.yaml", &config(CONFIG)).unwrap_err();
    assert_eq!(
        render(Err(err)),
        "Unavailable: no GPU inventory on this host: not taken yet"
    );
    let changed = CONFIG
        .replace("      Side: {}\n", "      Side: {image: img:2}\n")
        .replace("      Extra: {required: false}\n", "      Added: {}\n");
    let report = plan(&host.sup, "h.yaml", &config(&changed)).unwrap();
    let c = report.changes.unwrap();
    assert_eq!(
        (c.added, c.recreated, c.removed, c.unchanged),
        (
            vec!["Added".into()],
            vec!["Side".into()],
            vec!["Extra".into()],
            3
        )
    );
    assert_eq!(report.assignments.len(), 1, "Vision's MPS share");
    assert!(report.errors.is_empty());
}

#[test]
fn which_gpu_may_change_its_mig_mode() {
    let host = Host::new().with_gpu().start("gpu", true);
    let cases = [
        (9, "NotFound: no GPU 9 on this host"),
        (
            0,
            "Conflict: GPU 0 (NVIDIA GeForce RTX 4090) does not support MIG; share it with MPS (`sharing: mps`) instead",
        ),
        (1, "NVIDIA A100-SXM4-40GB"),
    ];
    for (index, want) in cases {
        let got = match mig_target(&host.sup, index) {
            Ok(info) => info.name,
            Err(e) => render(Err(e)),
        };
        assert_eq!(got, want, "GPU {index}");
    }
}

#[test]
fn which_settings_wait_for_a_restart() {
    let old = config(CONFIG);
    let cases = [
        ("", vec![]),
        ("metrics: {listen: \"127.0.0.1:9999\"}\n", vec!["metrics"]),
        (
            "runtime: {state_dir: /elsewhere, docker_host: \"unix:///x.sock\"}\n",
            vec!["runtime.state_dir", "runtime.docker_host"],
        ),
    ];
    for (extra, want) in cases {
        let new = config(&format!("{CONFIG}{extra}"));
        assert_eq!(restart_only_changes(&old, &new), want, "{extra}");
    }
}

#[test]
fn a_fleet_plan_places_on_this_host_live_and_says_why_a_peer_is_not_planned() {
    let view = |host: &str, state| orch_api::HostView {
        host: host.into(),
        state,
        incarnation: None,
        snapshot_age_ms: None,
        snapshot: None,
    };
    let peers = [
        view("pc2", orch_api::PeerState::Down),
        view("pc3", orch_api::PeerState::Unknown),
    ];
    // (host, fits, its replicas or why it was not planned)
    let rows = |p: &orch_api::FleetPlan| -> Vec<String> {
        p.hosts
            .iter()
            .map(|h| {
                let what: Vec<String> = match &h.not_planned {
                    Some(why) => vec![why.to_string()],
                    None => h
                        .replicas
                        .iter()
                        .map(|r| match &r.fit {
                            orch_api::ReplicaFit::Fits { slice, kept, .. } => {
                                format!("{slice} kept={kept}")
                            }
                            orch_api::ReplicaFit::DoesNotFit { error } => error.to_string(),
                        })
                        .collect(),
                };
                format!("{} fits={}: {}", h.host, h.fits, what.join("; "))
            })
            .collect()
    };
    let running = Host::new().with_gpu().start("gpu", true);
    let vision = plan_fleet(&running.sup, None, Some("gpu/Vision"), &peers).unwrap();
    assert_eq!(vision.file_name, "the running config");
    assert_eq!(
        rows(&vision),
        [
            "h fits=true: GPU 0 mps 4g 20% kept=true",
            "pc2 fits=false: its daemon is down",
            "pc3 fits=false: nothing heard from it yet",
        ]
    );
    // A file of another host: added to what runs here.
    let other = config(&CONFIG.replace("{name: h}", "{name: pc2}"));
    let added = plan_fleet(
        &running.sup,
        Some(("pc2.yaml", &other)),
        Some("Vision"),
        &[],
    )
    .unwrap();
    assert_eq!(added.config_host, "pc2");
    assert_eq!(rows(&added), ["h fits=true: GPU 0 mps 4g 20% kept=false"]);
    assert!(!added.hosts[0].own_host);
    // No inventory yet here.
    let bare = plan_fleet(&Host::new().sup, None, None, &[]).unwrap();
    assert_eq!(
        rows(&bare),
        ["h fits=false: its GPU inventory is not taken yet"]
    );
    let e = plan_fleet(&running.sup, None, Some("base/Vision"), &[]).unwrap_err();
    assert_eq!(
        render(Err(e)),
        "NotFound: no agent `base/Vision` in the running config; did you mean `gpu/Vision`?"
    );
}

/// A process of `mib` MiB in container `id` (nested in `outer`,
/// outermost first), busy `sm` percent.
fn seen(
    pid: u32,
    mib: u64,
    ids: Option<(&str, &[&str])>,
    sm: Option<u32>,
) -> crate::event::SeenProcess {
    crate::event::SeenProcess {
        pid,
        memory_bytes: Some(mib << 20),
        gpu_instance_id: None,
        container: ids.map(|(id, outer)| orch_docker::cgroup::DockerCgroup {
            id: id.into(),
            outer: outer.iter().map(|s| s.to_string()).collect(),
        }),
        sm_percent: sm,
    }
}

#[test]
fn gpu_use_attributes_processes_by_container_and_lists_the_rest() {
    let h = Host::new().with_gpu().start("gpu", true);
    let vision = h.sup.replica(&ReplicaKey::new("Vision", 0)).unwrap();
    let id = vision.container.as_ref().unwrap().id.clone();
    let mut readings = GpuReadings::default();
    readings.telemetry.insert(
        1,
        orch_api::GpuTelemetry {
            memory_used_bytes: 0,
            utilization_gpu_basis_points: 5_500,
            utilization_memory_basis_points: 0,
            temperature_celsius: 0,
            power_mw: 0,
        },
    );
    readings.processes.insert(
        0,
        crate::event::GpuProcesses {
            processes: vec![
                seen(1, 100, Some((&id, &[])), Some(70)),
                // Nested: a container inside the agent's.
                seen(2, 200, Some(("inner", &[&id])), Some(60)),
                seen(3, 50, Some(("other", &[])), Some(5)),
                seen(4, 25, None, Some(0)),
            ],
            dropped: 0,
            per_process: true,
        },
    );
    // GPU 1 is not the agent's slice's: no limit, and the GPU's utilisation.
    readings.processes.insert(
        1,
        crate::event::GpuProcesses {
            processes: vec![seen(5, 10, Some((&id, &[])), None)],
            dropped: 0,
            per_process: false,
        },
    );
    let used = gpu_use::usage(&h.sup, &readings);
    let line = |u: &orch_api::GpuUse| {
        format!(
            "{} {} {:?} {:?} {} {}",
            u.replica,
            u.memory_used_bytes >> 20,
            u.memory_limit_bytes.map(|l| l >> 20),
            u.utilization_basis_points,
            u.per_process,
            u.processes
        )
    };
    let gpu0 = &used.gpus[&0];
    assert_eq!(
        gpu0.replicas.iter().map(line).collect::<Vec<_>>(),
        ["Vision 300 Some(4096) Some(10000) true 2"]
    );
    let unowned: Vec<(u32, Option<String>)> = gpu0
        .unowned
        .iter()
        .map(|p| (p.pid, p.container.clone()))
        .collect();
    assert_eq!(unowned, [(3, Some("other".into())), (4, None)]);
    assert_eq!(
        used.gpus[&1].replicas.iter().map(line).collect::<Vec<_>>(),
        ["Vision 10 None Some(5500) false 1"]
    );
    assert!(used.gpus[&1].unowned.is_empty());
    // Summed over GPUs: the busiest GPU's utilisation.
    let total = used.replicas[&ReplicaKey::new("Vision", 0)];
    assert_eq!(total.memory_used_bytes, 310 << 20);
    assert_eq!(total.memory_limit_bytes, Some(4096 << 20));
    // 310 MiB of 4 GiB.
    assert_eq!(total.share_basis_points, Some(756));
    assert_eq!(total.utilization_basis_points, Some(10_000));
    assert!(!total.per_process);
}
