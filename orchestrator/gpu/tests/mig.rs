//! MIG through `NvmlBackend` on the simulator: mode changes pending until a
//! reset, instances at given placements, conflicts, destroy, MIG device
//! UUIDs, layouts made by other tools (GPU instances without or with several
//! compute instances), and the fake and the simulator agreeing on the rules.

mod common;

use common::{Host, cdylib, in_child, simctl, status};
use orch_core::gpu::{GpuInfo, MigInstance, MigState, class_by_name};
use orch_gpu::{CreatedInstance, FakeGpu, GpuBackend, GpuError, MigModeChange, NvmlBackend};

/// A100-40GB / H100 profile ids (what create calls take).
const P_1G: u32 = 19;
const P_1G_ME: u32 = 20;
const P_1G_DOUBLE: u32 = 15;
const P_2G: u32 = 14;
const P_3G: u32 = 9;
const P_4G: u32 = 5;
const P_7G: u32 = 0;

fn open() -> NvmlBackend {
    NvmlBackend::open(Some(&cdylib())).expect("open the simulator")
}

fn instances(gpu: &GpuInfo) -> Vec<MigInstance> {
    match &gpu.mig {
        MigState::Enabled { instances, .. } => instances.clone(),
        other => panic!("GPU {} MIG not enabled: {other:?}", gpu.index),
    }
}

fn gpu(backend: &NvmlBackend, index: usize) -> GpuInfo {
    backend.inventory().expect("inventory")[index].clone()
}

/// `(gi id, profile, placement start)` of every GPU instance
/// `nvml-simctl status` reports on GPU `index`, with its MIG UUIDs.
fn simctl_layout(index: usize) -> Vec<(u64, String, u64, Vec<String>)> {
    let s = status();
    s["gpus"][index]["mig"]["gpu_instances"]
        .as_array()
        .expect("gpu_instances")
        .iter()
        .map(|g| {
            (
                g["id"].as_u64().expect("id"),
                g["profile"].as_str().expect("profile").to_owned(),
                g["placement"]["start"].as_u64().expect("start"),
                g["compute_instances"]
                    .as_array()
                    .expect("CIs")
                    .iter()
                    .map(|c| c["mig_uuid"].as_str().expect("uuid").to_owned())
                    .collect(),
            )
        })
        .collect()
}

#[test]
fn mig_mode_is_pending_until_reset() {
    let host = Host::shipped("config/sim/lab-mixed.yaml");
    in_child("mig_mode_is_pending_until_reset", &host, || {
        let backend = open();
        // GPU 1 is the A100 with MIG off.
        assert_eq!(
            backend.set_mig_mode(1, true),
            Ok(MigModeChange {
                current: false,
                pending: true,
                reset_required: true
            })
        );
        assert_eq!(
            gpu(&backend, 1).mig,
            MigState::Disabled {
                pending_enable: true
            }
        );
        assert_eq!(status()["gpus"][1]["mig"]["pending"], "enabled");
        let refused = backend.create_instance(1, P_1G, 0);
        assert!(
            matches!(&refused, Err(GpuError::NotSupported { gpu: 1, what }) if what.contains("reset")),
            "{refused:?}"
        );

        simctl(&["reset", "--gpu", "1"]);
        let a100 = gpu(&backend, 1);
        assert!(a100.mig.is_enabled());
        assert_eq!(instances(&a100), vec![]);
        assert_eq!(
            backend.set_mig_mode(1, true),
            Ok(MigModeChange {
                current: true,
                pending: true,
                reset_required: false
            }),
            "already on"
        );
        let made = backend.create_instance(1, P_3G, 0).expect("create");

        // Disabling is pending too; the layout stays until the reset.
        assert_eq!(
            backend.set_mig_mode(1, false),
            Ok(MigModeChange {
                current: true,
                pending: false,
                reset_required: true
            })
        );
        let a100 = gpu(&backend, 1);
        assert!(matches!(
            a100.mig,
            MigState::Enabled {
                pending_disable: true,
                ..
            }
        ));
        assert_eq!(instances(&a100)[0].device_uuid, Some(made.device_uuid));
        simctl(&["reset", "--gpu", "1"]);
        assert_eq!(
            gpu(&backend, 1).mig,
            MigState::Disabled {
                pending_enable: false
            }
        );
        assert!(matches!(
            backend.destroy_instance(1, made.gi_id),
            Err(GpuError::NotSupported { gpu: 1, .. })
        ));

        // No MIG on the GeForce board.
        assert!(matches!(
            backend.set_mig_mode(3, true),
            Err(GpuError::NotSupported { gpu: 3, ref what }) if what == "MIG"
        ));
        assert_eq!(
            backend.set_mig_mode(7, true),
            Err(GpuError::NoSuchGpu { index: 7, count: 4 })
        );
    });
}

#[test]
fn create_at_placements_conflicts_and_destroy() {
    let host = Host::shipped("config/sim/lab-a100.yaml");
    in_child("create_at_placements_conflicts_and_destroy", &host, || {
        let backend = open();
        let g4 = backend.create_instance(0, P_4G, 0).expect("4g.20gb at 0");
        let g3 = backend.create_instance(0, P_3G, 4).expect("3g.20gb at 4");
        // The driver's ids: the first half is GI 1, the second half GI 2.
        assert_eq!((g4.gi_id, g4.ci_id, g3.gi_id, g3.ci_id), (1, 0, 2, 0));
        for made in [&g4, &g3] {
            assert!(
                made.device_uuid.starts_with("MIG-") && made.device_uuid.len() == 40,
                "{made:?}"
            );
        }
        assert_ne!(g4.device_uuid, g3.device_uuid);

        // Conflicts: overlapping memory slices, or used-up compute slices.
        assert_eq!(
            backend.create_instance(0, P_1G, 0),
            Err(GpuError::InsufficientResources {
                gpu: 0,
                profile: "1g.5gb".into(),
                placement: 0
            })
        );
        assert_eq!(
            backend.create_instance(0, P_3G, 0),
            Err(GpuError::InsufficientResources {
                gpu: 0,
                profile: "3g.20gb".into(),
                placement: 0
            })
        );
        // Not a placement of that profile; not a profile id at all.
        assert_eq!(
            backend.create_instance(0, P_3G, 2),
            Err(GpuError::NotSupported {
                gpu: 0,
                what: "placement 2 for 3g.20gb (possible starts: 0, 4)".into()
            })
        );
        assert_eq!(
            backend.create_instance(0, 2, 0),
            Err(GpuError::NotSupported {
                gpu: 0,
                what: "GPU-instance profile id 2".into()
            }),
            "2 is a profile index (3g), not an id"
        );
        assert_eq!(
            backend.create_instance(3, P_1G, 0),
            Err(GpuError::NoSuchGpu { index: 3, count: 1 })
        );

        // Inventory and another process agree on the layout and UUIDs.
        let a100 = gpu(&backend, 0);
        assert_eq!(
            instances(&a100),
            vec![
                MigInstance {
                    gi_id: 1,
                    profile_id: P_4G,
                    placement_start: 0,
                    placement_size: 4,
                    ci_id: Some(0),
                    device_uuid: Some(g4.device_uuid.clone()),
                    owned: false,
                },
                MigInstance {
                    gi_id: 2,
                    profile_id: P_3G,
                    placement_start: 4,
                    placement_size: 4,
                    ci_id: Some(0),
                    device_uuid: Some(g3.device_uuid.clone()),
                    owned: false,
                },
            ]
        );
        assert_eq!(
            simctl_layout(0),
            vec![
                (1, "4g.20gb".into(), 0, vec![g4.device_uuid.clone()]),
                (2, "3g.20gb".into(), 4, vec![g3.device_uuid.clone()]),
            ]
        );

        // Destroy the 3g; its half is free again, for smaller instances too.
        backend.destroy_instance(0, g3.gi_id).expect("destroy");
        assert_eq!(
            backend.destroy_instance(0, g3.gi_id),
            Err(GpuError::NoSuchInstance { gpu: 0, gi_id: 2 })
        );
        assert_eq!(simctl_layout(0).len(), 1);
        let small: Vec<CreatedInstance> = [4, 5, 6]
            .into_iter()
            .map(|at| backend.create_instance(0, P_1G, at).expect("1g.5gb"))
            .collect();
        // Eighths of the GPU are ids 7-14: slice 4 is 11, 6 is 13.
        assert_eq!(
            small.iter().map(|c| c.gi_id).collect::<Vec<_>>(),
            [11, 12, 13]
        );
        // Seven compute slices are now in use (4 + 3): nothing else fits.
        assert!(matches!(
            backend.create_instance(0, P_1G_DOUBLE, 6),
            Err(GpuError::InsufficientResources { .. })
        ));

        // Tear everything down through the backend: the GPU is empty.
        for gi in [1, 11, 12, 13] {
            backend.destroy_instance(0, gi).expect("destroy");
        }
        assert_eq!(instances(&gpu(&backend, 0)), vec![]);
        assert_eq!(simctl_layout(0), vec![]);
        let whole = backend.create_instance(0, P_7G, 0).expect("7g.40gb");
        assert_eq!(whole.gi_id, 0);
    });
}

#[test]
fn one_media_instance_per_gpu_on_h100() {
    let host = Host::shipped("config/sim/lab-h100.yaml");
    in_child("one_media_instance_per_gpu_on_h100", &host, || {
        let backend = open();
        let me = backend.create_instance(0, P_1G_ME, 6).expect("1g.10gb+me");
        assert_eq!(me.gi_id, 13);
        assert_eq!(
            backend.create_instance(0, P_1G_ME, 0),
            Err(GpuError::InsufficientResources {
                gpu: 0,
                profile: "1g.10gb+me".into(),
                placement: 0
            })
        );
        let two = backend.create_instance(0, P_2G, 0).expect("2g.20gb");
        assert_eq!(two.gi_id, 3);
        let layout = simctl_layout(0);
        let seen = layout
            .iter()
            .find(|g| g.0 == 3)
            .expect("GI 3 in nvml-simctl status");
        assert_eq!(seen.1, "2g.20gb");
        assert_eq!(seen.3, vec![two.device_uuid.clone()]);
    });
}

#[test]
fn layouts_made_by_other_tools_are_reported_and_destroyable() {
    let host = Host::shipped("config/sim/lab-a100.yaml");
    in_child(
        "layouts_made_by_other_tools_are_reported_and_destroyable",
        &host,
        || {
            // A GI without a CI, and one split into two compute instances.
            simctl(&[
                "create-gi",
                "--gpu",
                "0",
                "--profile",
                "3g.20gb",
                "--placement",
                "0",
                "--no-ci",
            ]);
            simctl(&[
                "create-gi",
                "--gpu",
                "0",
                "--profile",
                "3g.20gb",
                "--placement",
                "4",
                "--no-ci",
            ]);
            simctl(&[
                "create-ci",
                "--gpu",
                "0",
                "--gi",
                "2",
                "--profile",
                "1c.3g.20gb",
            ]);
            simctl(&[
                "create-ci",
                "--gpu",
                "0",
                "--gi",
                "2",
                "--profile",
                "1c.3g.20gb",
            ]);
            let backend = open();
            let layout = simctl_layout(0);
            let list = instances(&gpu(&backend, 0));
            assert_eq!(
                list,
                vec![
                    MigInstance {
                        gi_id: 1,
                        profile_id: P_3G,
                        placement_start: 0,
                        placement_size: 4,
                        ci_id: None,
                        device_uuid: None,
                        owned: false,
                    },
                    MigInstance {
                        gi_id: 2,
                        profile_id: P_3G,
                        placement_start: 4,
                        placement_size: 4,
                        ci_id: Some(0),
                        device_uuid: Some(layout[1].3[0].clone()),
                        owned: false,
                    },
                ]
            );
            // Destroy removes every compute instance first, then the GI.
            backend
                .destroy_instance(0, 2)
                .expect("destroy the split GI");
            backend.destroy_instance(0, 1).expect("destroy the bare GI");
            assert_eq!(simctl_layout(0), vec![]);
        },
    );
}

/// One step of a MIG script: create `(profile, placement)` or destroy a GI.
#[derive(Debug, Clone, Copy)]
enum Step {
    Create(u32, u8),
    Destroy(u32),
}

/// What a step came to, comparable across backends.
fn outcome(backend: &dyn GpuBackend, step: Step) -> String {
    match step {
        Step::Create(profile, at) => match backend.create_instance(0, profile, at) {
            Ok(c) => format!("created gi {} ci {}", c.gi_id, c.ci_id),
            Err(e) => error_kind(&e),
        },
        Step::Destroy(gi) => match backend.destroy_instance(0, gi) {
            Ok(()) => format!("destroyed gi {gi}"),
            Err(e) => error_kind(&e),
        },
    }
}

fn error_kind(e: &GpuError) -> String {
    match e {
        GpuError::InsufficientResources {
            profile, placement, ..
        } => {
            format!("no room for {profile} at {placement}")
        }
        GpuError::NotSupported { what, .. } => format!("not supported: {what}"),
        GpuError::NoSuchInstance { gi_id, .. } => format!("no instance {gi_id}"),
        other => format!("{other:?}"),
    }
}

fn layout(gpu: &GpuInfo) -> Vec<(u32, u32, u8, u8, Option<u32>)> {
    instances(gpu)
        .iter()
        .map(|i| {
            (
                i.gi_id,
                i.profile_id,
                i.placement_start,
                i.placement_size,
                i.ci_id,
            )
        })
        .collect()
}

#[test]
fn fake_and_simulator_agree_on_mig_rules() {
    let host = Host::shipped("config/sim/lab-a100.yaml");
    in_child("fake_and_simulator_agree_on_mig_rules", &host, || {
        let real = open();
        let class = class_by_name("NVIDIA A100-SXM4-40GB").expect("catalog");
        let fake = FakeGpu::new().with_gpu(class, true);
        let script = [
            Step::Create(P_2G, 0),
            Step::Create(P_2G, 2),
            Step::Create(P_1G, 1),
            Step::Create(P_1G_ME, 4),
            Step::Create(P_1G_ME, 5),
            Step::Create(P_1G_DOUBLE, 6),
            Step::Create(P_1G, 5),
            Step::Create(P_1G, 3),
            Step::Create(P_3G, 1),
            Step::Destroy(4),
            Step::Destroy(4),
            Step::Create(P_4G, 0),
            Step::Create(P_3G, 0),
            Step::Create(P_2G, 4),
            Step::Destroy(3),
            Step::Create(P_7G, 0),
        ];
        for step in script {
            let want = outcome(&real, step);
            assert_eq!(outcome(&fake, step), want, "{step:?}");
            assert_eq!(
                layout(&fake.inventory().expect("fake")[0]),
                layout(&real.inventory().expect("real")[0]),
                "after {step:?}"
            );
        }
    });
}
