//! Fleet placement advice as tables: a GPU report read back as it was
//! made, hosts that cannot be planned on, and requests placed around what
//! runs (another host) or in place of it (the config's own host).

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use orch_core::gpu::{
    GpuInfo, MigInstance, MigProfileName, MigState, Slice as CoreSlice, SliceRequest, class_by_name,
};
use orch_core::model::{GpuSelector, Sharing};
use orch_core::units::{ByteSize, Percent};

use super::*;
use crate::reply::{FreeCapacity, GpuStatus, SliceOwner};

const RTX4090: &str = "NVIDIA GeForce RTX 4090";
const RTX3060: &str = "NVIDIA GeForce RTX 3060";
const A100: &str = "NVIDIA A100-SXM4-40GB";

fn gpu(index: u32, class: &str, mig: bool) -> GpuInfo {
    GpuInfo::from_class(
        index,
        &format!("GPU-{index}-{}", class.len()),
        class_by_name(class).unwrap(),
        mig,
    )
}

fn mps(gib: u64, pct: u32) -> GpuRequest {
    GpuRequest::new(SliceRequest::Mps {
        memory: ByteSize::gib(gib),
        compute: Percent::whole(pct),
    })
}

fn mig(profile: &str) -> GpuRequest {
    GpuRequest::new(SliceRequest::Mig {
        profile: MigProfileName::parse(profile).unwrap(),
    })
}

fn held_mps(agent: &str, g: &GpuInfo, gib: u64, pct: u32) -> Assignment {
    Assignment {
        replica: ReplicaKey::new(agent, 0),
        slice: CoreSlice::Mps {
            gpu_index: g.index,
            gpu_uuid: g.uuid.clone(),
            memory: ByteSize::gib(gib),
            compute: Percent::whole(pct),
        },
        fallback_depth: 0,
    }
}

fn held_exclusive(agent: &str, g: &GpuInfo) -> Assignment {
    Assignment {
        replica: ReplicaKey::new(agent, 0),
        slice: CoreSlice::Exclusive {
            gpu_index: g.index,
            gpu_uuid: g.uuid.clone(),
        },
        fallback_depth: 0,
    }
}

/// An A100 with MIG on holding `instances` (profile, placement), each
/// held by `Held<n>` when `ours`, and those held slices.
fn a100_with(index: u32, instances: &[(&str, u8, bool)]) -> (GpuInfo, Vec<Assignment>) {
    let mut g = gpu(index, A100, true);
    let mut held = Vec::new();
    if let MigState::Enabled {
        instances: made,
        profiles,
        ..
    } = &mut g.mig
    {
        for (n, (name, start, ours)) in instances.iter().enumerate() {
            let p = profiles.iter().find(|p| p.name == *name).unwrap();
            let gi = n as u32 + 1;
            let device = format!("MIG-{index}-{gi}");
            made.push(MigInstance {
                gi_id: gi,
                profile_id: p.id,
                placement_start: *start,
                placement_size: p.memory_slices,
                ci_id: Some(0),
                device_uuid: Some(device.clone()),
                owned: *ours,
            });
            if *ours {
                held.push(Assignment {
                    replica: ReplicaKey::new(format!("Held{gi}"), 0),
                    slice: CoreSlice::Mig {
                        gpu_index: index,
                        gpu_uuid: g.uuid.clone(),
                        profile: name.to_string(),
                        profile_id: p.id,
                        placement_start: *start,
                        gi_id: Some(gi),
                        ci_id: Some(0),
                        device_uuid: Some(device),
                    },
                    fallback_depth: 0,
                });
            }
        }
    }
    (g, held)
}

/// A GPU report as a daemon publishes it (`views::gpu`), from what it
/// holds and its policies.
fn report(gpus: &[GpuInfo], held: &[Assignment], policies: &[GpuPolicy]) -> GpuReport {
    GpuReport {
        available: true,
        reason: None,
        library: None,
        driver_version: None,
        gpus: gpus
            .iter()
            .map(|g| {
                let mine: Vec<&Assignment> = held
                    .iter()
                    .filter(|a| a.slice.gpu_uuid() == g.uuid)
                    .collect();
                let slices: Vec<&CoreSlice> = mine.iter().map(|a| &a.slice).collect();
                GpuStatus {
                    info: convert::gpu_info(g),
                    telemetry: None,
                    usage: Vec::new(),
                    unowned: Vec::new(),
                    free: crate::report::free_capacity(g, &slices, policies),
                    policy: convert::gpu_policy(g, policies),
                    slices: mine
                        .iter()
                        .map(|a| SliceOwner {
                            replica: convert::replica(&a.replica),
                            group: "g".into(),
                            slice: convert::slice(&a.slice, Some(gpus)),
                        })
                        .collect(),
                }
            })
            .collect(),
    }
}

/// One line per replica: its slice, or the planner's words.
fn lines(placed: &[ReplicaPlacement]) -> Vec<String> {
    placed
        .iter()
        .map(|p| match &p.fit {
            ReplicaFit::Fits { slice, kept, .. } => {
                format!(
                    "{} fits: {slice}{}",
                    p.replica,
                    if *kept { " (kept)" } else { "" }
                )
            }
            ReplicaFit::DoesNotFit { error } => format!("does not fit: {error}"),
        })
        .collect()
}

#[test]
fn a_report_reads_back_as_the_inventory_it_was_made_from() {
    let mut measured = gpu(0, RTX4090, false);
    measured.reserved = Some(ByteSize::mib(600));
    let mut lost = gpu(1, RTX3060, false);
    lost.lost = true;
    let mut pending = gpu(2, A100, false);
    pending.mig = MigState::Disabled {
        pending_enable: true,
    };
    let (layout, _) = a100_with(3, &[("3g.20gb", 4, true), ("1g.5gb", 0, false)]);
    for g in [measured, lost, pending, layout.clone(), gpu(4, A100, true)] {
        let wire = convert::gpu_info(&g);
        assert_eq!(convert::gpu_info_back(&wire), g, "{}", g.name);
        // Through JSON, as a peer's snapshot comes.
        let json: crate::wire::GpuInfo =
            serde_json::from_str(&serde_json::to_string(&wire).unwrap()).unwrap();
        assert_eq!(convert::gpu_info_back(&json), g, "{}", g.name);
    }
    // A daemon too old to send MIG placements: the catalog has them.
    let mut old = serde_json::to_value(convert::gpu_info(&layout)).unwrap();
    for p in old["mig"]["profiles"].as_array_mut().unwrap() {
        p.as_object_mut().unwrap().remove("placements");
    }
    let old: crate::wire::GpuInfo = serde_json::from_value(old).unwrap();
    assert_eq!(convert::gpu_info_back(&old), layout);
}

#[test]
fn held_slices_read_back_against_the_reported_gpus() {
    let (a100, held) = a100_with(0, &[("3g.20gb", 4, true), ("1g.5gb", 0, true)]);
    let g4090 = gpu(1, RTX4090, false);
    let gpus = [a100.clone(), g4090.clone()];
    let planned = CoreSlice::Mig {
        gpu_index: 0,
        gpu_uuid: a100.uuid.clone(),
        profile: "2g.10gb".into(),
        profile_id: 14,
        placement_start: 2,
        gi_id: None,
        ci_id: None,
        device_uuid: None,
    };
    let cases: Vec<(CoreSlice, Option<CoreSlice>)> = vec![
        // A MIG device, found by its device.
        (held[0].slice.clone(), Some(held[0].slice.clone())),
        (held[1].slice.clone(), Some(held[1].slice.clone())),
        // Planned, its instance not made yet.
        (planned.clone(), Some(planned)),
        (
            held_mps("A", &g4090, 4, 25).slice,
            Some(held_mps("A", &g4090, 4, 25).slice),
        ),
        (
            held_exclusive("B", &g4090).slice,
            Some(held_exclusive("B", &g4090).slice),
        ),
        // A GPU the report does not list.
        (held_exclusive("C", &gpu(7, RTX3060, false)).slice, None),
    ];
    for (slice, back) in cases {
        let wire = convert::slice(&slice, Some(&gpus));
        assert_eq!(convert::slice_back(&wire, &gpus), back, "{slice}");
    }
}

#[test]
fn a_host_that_cannot_be_planned_on_says_why() {
    let unavailable = GpuReport {
        available: false,
        reason: Some("NVML: libnvidia-ml.so.1 not found".into()),
        library: None,
        driver_version: None,
        gpus: vec![],
    };
    let not_yet = GpuReport {
        reason: None,
        ..unavailable.clone()
    };
    assert_eq!(
        host_gpus(&unavailable),
        Err(NotPlanned::GpusUnavailable {
            reason: "NVML: libnvidia-ml.so.1 not found".into()
        })
    );
    assert_eq!(host_gpus(&not_yet), Err(NotPlanned::NoInventory));
    let view = |state| HostView {
        host: "pc2".into(),
        state,
        incarnation: None,
        snapshot_age_ms: None,
        snapshot: None,
    };
    assert_eq!(peer_gpus(&view(PeerState::Down)), Err(NotPlanned::HostDown));
    assert_eq!(
        peer_gpus(&view(PeerState::Unknown)),
        Err(NotPlanned::NoSnapshot)
    );
    // In words.
    let words: Vec<String> = [
        NotPlanned::NoSnapshot,
        NotPlanned::HostDown,
        NotPlanned::NoInventory,
        NotPlanned::GpusUnavailable {
            reason: "NVML is not loaded".into(),
        },
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    assert_eq!(
        words,
        [
            "nothing heard from it yet",
            "its daemon is down",
            "its GPU inventory is not taken yet",
            "its GPUs cannot be used: NVML is not loaded",
        ]
    );
}

#[test]
fn each_gpus_policy_travels_with_the_report() {
    let g = gpu(0, RTX4090, false);
    let reserve_4g = GpuPolicy {
        select: GpuSelector::All,
        sharing: Some(Sharing::Mps),
        reserve: ByteSize::gib(4),
        oversubscribe: false,
    };
    let back = host_gpus(&report(
        std::slice::from_ref(&g),
        &[],
        std::slice::from_ref(&reserve_4g),
    ))
    .unwrap();
    assert_eq!(
        back.policies,
        [GpuPolicy {
            select: GpuSelector::Uuid(g.uuid.clone()),
            ..reserve_4g.clone()
        }]
    );
    // 20g fits the 4090 with the default reserve, not with 4g kept free.
    let want = [(ReplicaKey::new("Big", 0), mps(20, 50))];
    let on = |policies: &[GpuPolicy]| {
        let host = host_gpus(&report(std::slice::from_ref(&g), &[], policies)).unwrap();
        lines(&place("pc", &host, &want, Placing::Added))
    };
    assert_eq!(on(&[]), ["Big fits: GPU 0 mps 20g 50%"]);
    assert_eq!(
        on(std::slice::from_ref(&reserve_4g)),
        [
            "does not fit: Big wants mps memory=20g compute=50%; GPU 0 (NVIDIA GeForce RTX 4090): 20g does not fit in the 19742m MPS clients may use (memory less a 4834m reserve)"
        ]
    );
    // A daemon too old to name the policy: its free capacity's sharing.
    let named = |sharing: &str| {
        let free = FreeCapacity {
            sharing: sharing.into(),
            mps_memory_bytes: None,
            mps_compute_basis_points: None,
            mps_clients: None,
            mig_memory_slices: None,
            mig_compute_slices: None,
            whole_gpu_free: true,
        };
        convert::gpu_policy_back("GPU-x", None, &free.sharing).map(|p| (p.sharing, p.reserve))
    };
    assert_eq!(
        named("exclusive"),
        Some((Some(Sharing::Exclusive), planner::DEFAULT_RESERVE))
    );
    assert_eq!(named("mps or exclusive"), None);
}

/// `(what, host's GPUs, held, asked, own config's requests or none for
/// added, expected lines)`.
type Row = (
    &'static str,
    Vec<GpuInfo>,
    Vec<Assignment>,
    Vec<(ReplicaKey, GpuRequest)>,
    Option<Vec<(ReplicaKey, GpuRequest)>>,
    Vec<&'static str>,
);

#[test]
fn requests_are_placed_around_what_runs_or_in_place_of_it() {
    let g4090 = gpu(0, RTX4090, false);
    let g3060 = gpu(0, RTX3060, false);
    let (full_a100, full_held) = a100_with(0, &[("4g.20gb", 0, true), ("3g.20gb", 4, true)]);
    let k = |a: &str| ReplicaKey::new(a, 0);
    let rows: Vec<Row> = vec![
        (
            "a share where memory is held",
            vec![g4090.clone()],
            vec![held_mps("Llm", &g4090, 16, 50)],
            vec![(k("Vision"), mps(8, 25))],
            None,
            vec![
                "does not fit: Vision wants mps memory=8g compute=25%; GPU 0 (NVIDIA GeForce RTX 4090): 16g of 23326m already given to 1 client, 8g more does not fit",
            ],
        ),
        (
            "a share where memory is free",
            vec![g3060.clone()],
            vec![],
            vec![(k("Vision"), mps(8, 25))],
            None,
            vec!["Vision fits: GPU 0 mps 8g 25%"],
        ),
        (
            "the next replica beside the first",
            vec![g3060.clone()],
            vec![held_mps("Vision", &g3060, 4, 25)],
            vec![(ReplicaKey::new("Vision", 1), mps(4, 25))],
            None,
            vec!["Vision#1 fits: GPU 0 mps 4g 25%"],
        ),
        (
            "another host's agent of the same name keeps its GPU",
            vec![g3060.clone()],
            vec![held_exclusive("Vision", &g3060)],
            vec![(k("Vision"), GpuRequest::new(SliceRequest::Exclusive))],
            None,
            vec![
                "does not fit: Vision wants exclusive; GPU 0 (NVIDIA GeForce RTX 3060): held exclusively by pc/Vision",
            ],
        ),
        (
            "a MIG profile on a full A100",
            vec![full_a100.clone()],
            full_held.clone(),
            vec![(k("Face"), mig("1g.5gb"))],
            None,
            vec![
                "does not fit: Face wants mig 1g.5gb; GPU 0 (NVIDIA A100-SXM4-40GB): 7 of 7 compute slices are taken, 1g.5gb needs 1",
            ],
        ),
        (
            "a MIG profile on an empty A100",
            vec![gpu(0, A100, true)],
            vec![],
            vec![(k("Face"), mig("1g.5gb"))],
            None,
            vec!["Face fits: GPU 0 mig 1g.5gb @6"],
        ),
        (
            "a whole config, together: the second share no longer fits",
            vec![g3060.clone()],
            vec![],
            vec![(k("A"), mps(6, 25)), (k("B"), mps(6, 25))],
            None,
            vec![
                "A fits: GPU 0 mps 6g 25%",
                "does not fit: B wants mps memory=6g compute=25%; GPU 0 (NVIDIA GeForce RTX 3060): 6g of 11407m already given to 1 client, 6g more does not fit",
            ],
        ),
        (
            "own host: a running replica keeps its slice",
            vec![g4090.clone()],
            vec![
                held_mps("Llm", &g4090, 16, 50),
                held_mps("Vision", &g4090, 4, 25),
            ],
            vec![(k("Vision"), mps(4, 25))],
            Some(vec![(k("Llm"), mps(16, 50)), (k("Vision"), mps(4, 25))]),
            vec!["Vision fits: GPU 0 mps 4g 25% (kept)"],
        ),
        (
            "own host: a grown request does not fit beside what stays",
            vec![g4090.clone()],
            vec![
                held_mps("Llm", &g4090, 16, 50),
                held_mps("Vision", &g4090, 4, 25),
            ],
            vec![(k("Vision"), mps(8, 25))],
            Some(vec![(k("Llm"), mps(16, 50)), (k("Vision"), mps(8, 25))]),
            vec![
                "does not fit: Vision wants mps memory=8g compute=25%; GPU 0 (NVIDIA GeForce RTX 4090): 16g of 23326m already given to 1 client, 8g more does not fit",
            ],
        ),
        (
            "own host: an agent the config drops leaves its room",
            vec![g4090.clone()],
            vec![
                held_mps("Llm", &g4090, 16, 50),
                held_mps("Vision", &g4090, 4, 25),
            ],
            vec![(k("Vision"), mps(8, 25))],
            Some(vec![(k("Vision"), mps(8, 25))]),
            vec!["Vision fits: GPU 0 mps 8g 25%"],
        ),
        (
            "own host: a fallback slice held still answers",
            vec![full_a100.clone()],
            full_held.clone(),
            vec![(k("Held1"), mig("7g.40gb").with_fallback(mig("4g.20gb")))],
            Some(vec![
                (k("Held1"), mig("7g.40gb").with_fallback(mig("4g.20gb"))),
                (k("Held2"), mig("3g.20gb")),
            ]),
            vec!["Held1 fits: GPU 0 mig 4g.20gb @0 (kept)"],
        ),
    ];
    for (what, gpus, held, asked, own, expect) in rows {
        let host = host_gpus(&report(&gpus, &held, &[])).unwrap();
        let placing = match &own {
            Some(config) => Placing::Replacing { config },
            None => Placing::Added,
        };
        assert_eq!(
            lines(&place("pc", &host, &asked, placing)),
            expect,
            "{what}"
        );
    }
}

const MAINPC: &str = r#"version: 1
host: {name: mainpc}
defaults:
  image: orchestrator-agent:latest
groups:
  llm:
    agents:
      Llm: {gpu: {slice: mps, memory: 16g, compute: 50%}}
  gpu:
    agents:
      Vision: {gpu: {slice: mps, memory: 8g, compute: 25%}}
      Face: {gpu: {slice: mig, profile: 1g.10gb}}
      Plain: {}
"#;

fn mainpc() -> HostConfig {
    orch_config::load_str("mainpc.yaml", MAINPC, &Default::default())
        .unwrap()
        .config
}

#[test]
fn a_config_is_placed_on_every_host_its_own_replaced_the_others_added_to() {
    let config = mainpc();
    let g4090 = gpu(0, RTX4090, false);
    let g3060 = gpu(0, RTX3060, false);
    let mainpc_held = [held_mps("Llm", &g4090, 16, 50)];
    let hosts = [
        HostIn {
            host: "mainpc".into(),
            state: PeerState::Local,
            snapshot_age_ms: Some(0),
            gpus: host_gpus(&report(std::slice::from_ref(&g4090), &mainpc_held, &[])),
        },
        HostIn {
            host: "lab".into(),
            state: PeerState::Alive,
            snapshot_age_ms: Some(1_200),
            gpus: Ok(HostGpus {
                gpus: vec![gpu(0, A100, true)],
                ..HostGpus::default()
            }),
        },
        HostIn {
            host: "pc2".into(),
            state: PeerState::Alive,
            snapshot_age_ms: Some(800),
            gpus: host_gpus(&report(std::slice::from_ref(&g3060), &[], &[])),
        },
        HostIn {
            host: "pc3".into(),
            state: PeerState::Down,
            snapshot_age_ms: Some(90_000),
            gpus: Err(NotPlanned::HostDown),
        },
    ];
    let ask = |agent| FleetAsk {
        planned_by: "mainpc",
        file_name: "mainpc.yaml",
        config: &config,
        agent,
    };
    // (host, fits, replicas in words or why it was not planned)
    let table = |plan: &FleetPlan| -> Vec<(String, bool, Vec<String>)> {
        plan.hosts
            .iter()
            .map(|h| {
                let what = match &h.not_planned {
                    Some(why) => vec![why.to_string()],
                    None => lines(&h.replicas)
                        .into_iter()
                        .map(|l| l.split(';').next().unwrap_or_default().to_string())
                        .collect(),
                };
                (h.host.clone(), h.fits, what)
            })
            .collect()
    };
    let owned = |rows: &[(&str, bool, &[&str])]| -> Vec<(String, bool, Vec<String>)> {
        rows.iter()
            .map(|(h, f, w)| (h.to_string(), *f, w.iter().map(|s| s.to_string()).collect()))
            .collect()
    };

    // One agent: fits on pc2 only (mainpc keeps Llm's 16g; lab is MIG only).
    let vision = fleet_plan(&ask(Some("Vision")), &hosts);
    assert_eq!(vision.agent.as_deref(), Some("gpu/Vision"));
    assert_eq!(vision.config_host, "mainpc");
    let asked: Vec<String> = vision
        .requests
        .iter()
        .map(|r| format!("{}/{} {}", r.group, r.replica, r.request[0]))
        .collect();
    assert_eq!(asked, ["gpu/Vision mps memory=8g compute=25%"]);
    assert_eq!(
        table(&vision),
        owned(&[
            (
                "mainpc",
                false,
                &["does not fit: Vision wants mps memory=8g compute=25%"]
            ),
            (
                "lab",
                false,
                &["does not fit: Vision wants mps memory=8g compute=25%"]
            ),
            ("pc2", true, &["Vision fits: GPU 0 mps 8g 25%"]),
            ("pc3", false, &["its daemon is down"]),
        ])
    );
    let ReplicaFit::DoesNotFit { error } = &vision.hosts[0].replicas[0].fit else {
        panic!("{vision:?}")
    };
    assert_eq!(
        error.to_string(),
        "Vision wants mps memory=8g compute=25%; GPU 0 (NVIDIA GeForce RTX 4090): 16g of 23326m already given to 1 client, 8g more does not fit"
    );
    assert!(vision.hosts[0].own_host && !vision.hosts[2].own_host);

    // A MIG agent fits where MIG is on.
    let face = fleet_plan(&ask(Some("Face")), &hosts);
    let fits: Vec<&str> = face.fits_on().map(|h| h.host.as_str()).collect();
    assert_eq!(fits, ["lab"]);
    assert_eq!(
        table(&face)[1],
        (
            "lab".to_string(),
            true,
            vec!["Face fits: GPU 0 mig 1g.10gb @6".to_string()]
        )
    );

    // Its own host keeps what runs: Llm is kept there, nowhere else fits it.
    let llm = fleet_plan(&ask(Some("Llm")), &hosts);
    assert_eq!(
        llm.fits_on().map(|h| h.host.as_str()).collect::<Vec<_>>(),
        ["mainpc"]
    );
    assert_eq!(table(&llm)[0].2, ["Llm fits: GPU 0 mps 16g 50% (kept)"]);

    // The whole config fits on no single host.
    let all = fleet_plan(&ask(None), &hosts);
    assert_eq!(all.agent, None);
    assert_eq!(all.requests.len(), 3, "Plain asks for no GPU");
    assert_eq!(all.fits_on().count(), 0);
}
