//! Data-driven planner tests: `check(fixture, expect)` plans a small host
//! written in a line-oriented fixture language and compares the rendered
//! plan, line for line, with the expectation.
//!
//! Fixture lines (a line starting with `#` is a comment; `Agent#2` is a replica):
//!
//! ```text
//! gpu 0 a100 [mig-off] [pending] [lost] [uuid=GPU-x] [reserved=300m]   # class alias, MIG on by default; the driver's measured reserve
//! inst 0 3g.20gb@4 gi=2 [owned]                         # an existing MIG instance on GPU 0
//! policy index=0|name=GLOB|uuid=U|all [mig|mps|exclusive|time-slice] [reserve=1g] [oversubscribe]
//! max-clients 2
//! want Agent[#n] mig 1g.10gb | mps 8g 25% | exclusive | time-slice   # request, then fallbacks
//! current Agent[#n] gpu=0 mig 3g.20gb@4 [gi=2] [depth=1]             # a running assignment
//! ```
//!
//! Rendered plan: one line per assignment (`A: GPU 0 mig 1g.5gb @6 new`,
//! `gi=N` when an existing instance is used, `[fallback N]`), then
//! `create`, `destroy`, `mps` totals, `error:` and `note:` lines. Errors
//! and notes are rendered as data (the planner has no words of its own;
//! `orch_api::text` has them): `error: B: mig 4g.20gb -> GPU 0 compute-full
//! 7/7 needs 4 | mps 4g 10% -> GPU 0 mig-on`, one `->` per attempt.

use proptest::prelude::*;

use super::*;
use crate::gpu::{GpuClass, class_by_name};
use crate::model::GpuSelector;

// ---------------------------------------------------------------------------
// Fixture language.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Default)]
struct Fixture {
    gpus: Vec<GpuInfo>,
    policies: Vec<GpuPolicy>,
    requests: Vec<(ReplicaKey, GpuRequest)>,
    current: Vec<Assignment>,
    settings: PlannerSettings,
}

fn class(alias: &str) -> &'static GpuClass {
    let name = match alias {
        "a100" => "NVIDIA A100-SXM4-40GB",
        "a100-80" => "NVIDIA A100-SXM4-80GB",
        "h100" => "NVIDIA H100 80GB HBM3",
        "h100nvl" => "NVIDIA H100 NVL",
        "a30" => "NVIDIA A30",
        "4090" => "NVIDIA GeForce RTX 4090",
        "3060" => "NVIDIA GeForce RTX 3060",
        other => panic!("unknown GPU alias {other}"),
    };
    class_by_name(name).expect("catalog class")
}

fn key(text: &str) -> ReplicaKey {
    match text.split_once('#') {
        Some((a, n)) => ReplicaKey::new(a, n.parse().expect("replica number")),
        None => ReplicaKey::new(text, 0),
    }
}

fn profile(text: &str) -> MigProfileName {
    MigProfileName::parse(text).expect("profile name")
}

fn size(text: &str) -> ByteSize {
    ByteSize::parse(text).expect("size")
}

fn percent(text: &str) -> Percent {
    Percent::parse(text).expect("percent")
}

fn slice_request(words: &[&str]) -> SliceRequest {
    match words {
        ["mig", p] => SliceRequest::Mig {
            profile: profile(p),
        },
        ["mps", m, c] => SliceRequest::Mps {
            memory: size(m),
            compute: percent(c),
        },
        ["exclusive"] => SliceRequest::Exclusive,
        ["time-slice"] => SliceRequest::TimeSlice,
        other => panic!("bad request {other:?}"),
    }
}

fn gi_profiles(g: &GpuInfo) -> &[GiProfile] {
    match &g.mig {
        MigState::Enabled { profiles, .. } => profiles,
        _ => &[],
    }
}

impl Fixture {
    fn parse(text: &str) -> Fixture {
        let mut f = Fixture::default();
        for raw in text.lines() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            match words[0] {
                "gpu" => f.gpu(&words[1..]),
                "inst" => f.inst(&words[1..]),
                "policy" => f.policy(&words[1..]),
                "max-clients" => f.settings.max_mps_clients = words[1].parse().expect("number"),
                "want" => {
                    let chain: Vec<SliceRequest> = line["want".len()..]
                        .trim()
                        .split_once(' ')
                        .expect("want NAME REQUEST")
                        .1
                        .split('|')
                        .map(|part| slice_request(&part.split_whitespace().collect::<Vec<_>>()))
                        .collect();
                    let mut req: Option<GpuRequest> = None;
                    for kind in chain.into_iter().rev() {
                        let mut r = GpuRequest::new(kind);
                        r.fallback = req.map(Box::new);
                        req = Some(r);
                    }
                    f.requests
                        .push((key(words[1]), req.expect("at least one request")));
                }
                "current" => f.current(&words[1..]),
                other => panic!("unknown fixture line {other}: {line}"),
            }
        }
        f
    }

    fn gpu(&mut self, words: &[&str]) {
        let index: u32 = words[0].parse().expect("gpu index");
        let class = class(words[1]);
        let flags = &words[2..];
        let mig_on = !flags.contains(&"mig-off");
        let uuid = flags
            .iter()
            .find_map(|w| w.strip_prefix("uuid="))
            .map_or(format!("GPU-{index}"), str::to_string);
        let mut g = GpuInfo::from_class(index, &uuid, class, mig_on);
        g.lost = flags.contains(&"lost");
        g.reserved = flags
            .iter()
            .find_map(|w| w.strip_prefix("reserved="))
            .map(size);
        if flags.contains(&"pending") {
            match &mut g.mig {
                MigState::Disabled { pending_enable } => *pending_enable = true,
                MigState::Enabled {
                    pending_disable, ..
                } => *pending_disable = true,
                MigState::Unsupported => panic!("pending on a GPU without MIG"),
            }
        }
        self.gpus.push(g);
    }

    fn inst(&mut self, words: &[&str]) {
        let index: u32 = words[0].parse().expect("gpu index");
        let (p, start) = words[1].split_once('@').expect("PROFILE@START");
        let gi_id: u32 = words
            .iter()
            .find_map(|w| w.strip_prefix("gi="))
            .expect("gi=")
            .parse()
            .expect("gi number");
        let owned = words.contains(&"owned");
        let g = self
            .gpus
            .iter_mut()
            .find(|g| g.index == index)
            .expect("inst on a declared GPU");
        let gp = gi_profiles(g)
            .iter()
            .find(|gp| gp.name == p)
            .expect("profile of the GPU")
            .clone();
        let MigState::Enabled { instances, .. } = &mut g.mig else {
            panic!("inst on a GPU without MIG on");
        };
        instances.push(MigInstance {
            gi_id,
            profile_id: gp.id,
            placement_start: start.parse().expect("start"),
            placement_size: gp.memory_slices,
            ci_id: Some(0),
            device_uuid: Some(format!("MIG-{index}-{gi_id}")),
            owned,
        });
    }

    fn policy(&mut self, words: &[&str]) {
        let select = match words[0].split_once('=') {
            Some(("index", i)) => GpuSelector::Index(i.parse().expect("index")),
            Some(("name", n)) => GpuSelector::Name(n.to_string()),
            Some(("uuid", u)) => GpuSelector::Uuid(u.to_string()),
            None if words[0] == "all" => GpuSelector::All,
            _ => panic!("bad selector {}", words[0]),
        };
        let mut p = GpuPolicy {
            select,
            sharing: None,
            reserve: DEFAULT_RESERVE,
            oversubscribe: false,
        };
        for w in &words[1..] {
            match *w {
                "mig" => p.sharing = Some(Sharing::Mig),
                "mps" => p.sharing = Some(Sharing::Mps),
                "exclusive" => p.sharing = Some(Sharing::Exclusive),
                "time-slice" => p.sharing = Some(Sharing::TimeSlice),
                "oversubscribe" => p.oversubscribe = true,
                w if w.starts_with("reserve=") => p.reserve = size(&w["reserve=".len()..]),
                other => panic!("bad policy word {other}"),
            }
        }
        self.policies.push(p);
    }

    fn current(&mut self, words: &[&str]) {
        let replica = key(words[0]);
        let index: u32 = words[1]
            .strip_prefix("gpu=")
            .expect("gpu=")
            .parse()
            .expect("gpu index");
        let gpu = self.gpus.iter().find(|g| g.index == index);
        let gpu_uuid = gpu.map_or(format!("GPU-{index}"), |g| g.uuid.clone());
        let opt = |name: &str| {
            words
                .iter()
                .find_map(|w| w.strip_prefix(name))
                .map(|v| v.parse::<u32>().expect("number"))
        };
        let fallback_depth = opt("depth=").map_or(0, |d| d as u8);
        let rest: Vec<&str> = words[2..]
            .iter()
            .copied()
            .filter(|w| !w.contains('='))
            .collect();
        let slice = match rest.as_slice() {
            ["mig", spec] => {
                let (p, start) = spec.split_once('@').expect("PROFILE@START");
                let profile_id = gpu
                    .and_then(|g| gi_profiles(g).iter().find(|gp| gp.name == p))
                    .map_or(0, |gp| gp.id);
                let gi_id = opt("gi=");
                Slice::Mig {
                    gpu_index: index,
                    gpu_uuid,
                    profile: p.to_string(),
                    profile_id,
                    placement_start: start.parse().expect("start"),
                    gi_id,
                    ci_id: gi_id.map(|_| 0),
                    device_uuid: gi_id.map(|gi| format!("MIG-{index}-{gi}")),
                }
            }
            ["mps", m, c] => Slice::Mps {
                gpu_index: index,
                gpu_uuid,
                memory: size(m),
                compute: percent(c),
            },
            ["exclusive"] => Slice::Exclusive {
                gpu_index: index,
                gpu_uuid,
            },
            ["time-slice"] => Slice::TimeSlice {
                gpu_index: index,
                gpu_uuid,
            },
            other => panic!("bad current slice {other:?}"),
        };
        self.current.push(Assignment {
            replica,
            slice,
            fallback_depth,
        });
    }

    fn input(&self) -> PlanInput<'_> {
        PlanInput {
            gpus: &self.gpus,
            policies: &self.policies,
            requests: &self.requests,
            current: &self.current,
            settings: self.settings,
        }
    }

    fn plan(&self) -> Plan {
        plan(&self.input())
    }
}

fn basis_points(bp: u32) -> String {
    if bp % 100 == 0 {
        format!("{}%", bp / 100)
    } else {
        format!("{}.{:02}%", bp / 100, bp % 100)
    }
}

fn render(plan: &Plan) -> String {
    let mut out = Vec::new();
    for a in &plan.assignments {
        let mut line = format!("{}: {}", a.replica, a.slice);
        if let Slice::Mig { gi_id, .. } = &a.slice {
            match gi_id {
                Some(gi) => line.push_str(&format!(" gi={gi}")),
                None => line.push_str(" new"),
            }
        }
        if a.fallback_depth > 0 {
            line.push_str(&format!(" [fallback {}]", a.fallback_depth));
        }
        out.push(line);
    }
    for c in &plan.create {
        out.push(format!(
            "create GPU {} {} @{} for {}",
            c.gpu_index, c.profile, c.placement_start, c.replica
        ));
    }
    for d in &plan.destroy {
        out.push(format!(
            "destroy GPU {} GI {} @{}",
            d.gpu_index, d.gi_id, d.placement_start
        ));
    }
    for m in &plan.mps {
        out.push(format!(
            "mps GPU {}: {} clients, {}, {}",
            m.gpu_index,
            m.clients,
            m.memory,
            basis_points(m.compute_basis_points)
        ));
    }
    for e in &plan.errors {
        out.push(format!("error: {}", error(e)));
    }
    for n in &plan.notes {
        out.push(format!("note: {}", note(n)));
    }
    out.join("\n")
}

/// A plan error as data: each attempt, then why each GPU refused it.
fn error(e: &PlanError) -> String {
    let attempts: Vec<String> = e
        .attempts
        .iter()
        .map(|a| {
            let refusals: Vec<String> = a
                .refusals
                .iter()
                .map(|r| format!("GPU {} {}", r.gpu_index, reason(&r.reason)))
                .collect();
            let refusals = if refusals.is_empty() {
                "no GPU".to_string()
            } else {
                refusals.join("; ")
            };
            format!("{} -> {refusals}", a.wanted)
        })
        .collect();
    format!("{}: {}", e.replica, attempts.join(" | "))
}

fn reason(r: &RefusalReason) -> String {
    use RefusalReason as R;
    match r {
        R::Lost => "lost".into(),
        R::NoMig => "no-mig".into(),
        R::MigOff { pending_enable } => {
            format!(
                "mig-off{}",
                if *pending_enable { " pending-on" } else { "" }
            )
        }
        R::MigOn => "mig-on".into(),
        R::NoSuchProfile { profile, offered } => {
            format!("no-profile {profile} offers {}", offered.join(","))
        }
        R::UnsupportedGeometry { memory_slices } => format!("geometry {memory_slices}"),
        R::Policy { sharing } => format!("policy {}", sharing.as_str()),
        R::TimeSliceNeedsPolicy => "time-slice-needs-policy".into(),
        R::MigMaxInstances { profile, max } => format!("max-instances {profile} {max}"),
        R::MigComputeFull {
            profile,
            used,
            total,
            needed,
        } => format!("compute-full {used}/{total} {profile} needs {needed}"),
        R::MigNoPlacement { profile, occupants } => {
            let occ: Vec<String> = occupants
                .iter()
                .map(|o| {
                    let holder = match (&o.holder, o.gi_id) {
                        (Some(r), _) => r.to_string(),
                        (None, Some(gi)) => format!("other gi={gi}"),
                        (None, None) => "other".into(),
                    };
                    format!("{}@{} {holder}", o.profile, o.placement_start)
                })
                .collect();
            format!("no-placement {profile} beside [{}]", occ.join(", "))
        }
        R::MpsClients { clients, max } => format!("mps-clients {clients}/{max}"),
        R::MpsMemory {
            used,
            capacity,
            reserve,
            clients,
            wanted,
        } => format!(
            "mps-memory {used}/{capacity} reserve {reserve} clients {clients} wants {wanted}"
        ),
        R::MpsCompute {
            used_basis_points,
            clients,
            wanted,
        } => format!(
            "mps-compute {} clients {clients} wants {wanted}",
            basis_points(*used_basis_points)
        ),
        R::HeldExclusive { holder } => format!("held-by {holder}"),
        R::InUse {
            mps_clients,
            time_slice_clients,
        } => format!("in-use mps={mps_clients} time-slice={time_slice_clients}"),
    }
}

/// A plan note as data.
fn note(n: &PlanNote) -> String {
    match n {
        PlanNote::GpuLost {
            gpu_index,
            gpu_uuid,
            ..
        } => format!("GPU {gpu_index} lost {gpu_uuid}"),
        PlanNote::MigModePending {
            gpu_index, enable, ..
        } => format!(
            "GPU {gpu_index} mig pending {}",
            if *enable { "on" } else { "off" }
        ),
        PlanNote::PolicyUnusable {
            gpu_index,
            sharing,
            mig_on,
            mig_capable,
            ..
        } => format!(
            "GPU {gpu_index} policy {} unusable mig-on={mig_on} mig-capable={mig_capable}",
            sharing.as_str()
        ),
        PlanNote::Dropped {
            replica,
            slice,
            reason: why,
        } => {
            let why = match why {
                DropReason::RequestChanged => "request-changed".to_string(),
                DropReason::GpuGone => "gpu-gone".into(),
                DropReason::InstanceGone => "instance-gone".into(),
                DropReason::Refused(r) => reason(r),
            };
            format!("{replica} dropped {slice}: {why}")
        }
        PlanNote::Reapplied {
            replica,
            gpu_index,
            profile,
            placement_start,
        } => format!("GPU {gpu_index} reapply {profile}@{placement_start} for {replica}"),
        PlanNote::SearchCutShort { replica } => format!("search cut short for {replica}"),
    }
}

#[track_caller]
fn check(fixture: &str, expect: &str) {
    let plan = Fixture::parse(fixture).plan();
    let got = render(&plan);
    let want: Vec<&str> = expect
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let got_lines: Vec<&str> = got.lines().collect();
    assert!(
        got_lines == want,
        "plan differs\n--- expected\n{}\n--- got\n{}\n",
        want.join("\n"),
        got
    );
}

// ---------------------------------------------------------------------------
// Cases.
// ---------------------------------------------------------------------------

#[test]
fn small_profile_goes_where_it_blocks_least() {
    // At 6 a 1g.5gb leaves 4g.20gb, 3g.20gb@0 and every 2g.10gb possible.
    check(
        "gpu 0 a100
         want A mig 1g.5gb",
        "A: GPU 0 mig 1g.5gb @6 new
         create GPU 0 1g.5gb @6 for A",
    );
}

#[test]
fn four_g_then_three_g_forces_placements_0_and_4() {
    check(
        "gpu 0 a100
         want A mig 4g.20gb
         want B mig 3g.20gb",
        "A: GPU 0 mig 4g.20gb @0 new
         B: GPU 0 mig 3g.20gb @4 new
         create GPU 0 4g.20gb @0 for A
         create GPU 0 3g.20gb @4 for B",
    );
}

#[test]
fn three_2g_and_one_1g_use_0_2_4_and_6() {
    check(
        "gpu 0 a100
         want A mig 2g.10gb
         want B mig 2g.10gb
         want C mig 2g.10gb
         want D mig 1g.5gb",
        "A: GPU 0 mig 2g.10gb @4 new
         B: GPU 0 mig 2g.10gb @0 new
         C: GPU 0 mig 2g.10gb @2 new
         D: GPU 0 mig 1g.5gb @6 new
         create GPU 0 2g.10gb @0 for B
         create GPU 0 2g.10gb @2 for C
         create GPU 0 2g.10gb @4 for A
         create GPU 0 1g.5gb @6 for D",
    );
}

#[test]
fn a_later_request_moves_an_earlier_new_one_within_the_gpu() {
    // Alone, 2g.10gb goes to 4; 3g.20gb then needs 4 (0 would leave the
    // 2g.10gb no place), so the new 2g.10gb moves to 0. Nothing runs yet.
    check(
        "gpu 0 a100
         want A mig 2g.10gb
         want B mig 3g.20gb
         want C mig 2g.10gb",
        "A: GPU 0 mig 2g.10gb @0 new
         B: GPU 0 mig 3g.20gb @4 new
         C: GPU 0 mig 2g.10gb @2 new
         create GPU 0 2g.10gb @0 for A
         create GPU 0 2g.10gb @2 for C
         create GPU 0 3g.20gb @4 for B",
    );
}

#[test]
fn a_full_gpu_layout_is_rebuilt_as_requests_arrive() {
    // 1g + 1g + 2g + 3g is exactly one A100 (8 memory, 7 compute slices)
    // and fits only with 3g.20gb at 4 and 2g.10gb at 0 or 2. The 1g.5gb
    // instances first sit at 6 and 4, then 6 and 0, then end at 2 and 3.
    check(
        "gpu 0 a100
         want A mig 1g.5gb
         want B mig 1g.5gb
         want C mig 2g.10gb
         want D mig 3g.20gb",
        "A: GPU 0 mig 1g.5gb @2 new
         B: GPU 0 mig 1g.5gb @3 new
         C: GPU 0 mig 2g.10gb @0 new
         D: GPU 0 mig 3g.20gb @4 new
         create GPU 0 2g.10gb @0 for C
         create GPU 0 1g.5gb @2 for A
         create GPU 0 1g.5gb @3 for B
         create GPU 0 3g.20gb @4 for D",
    );
}

#[test]
fn a_set_one_slice_too_big_refuses_the_last_request() {
    // 1g.10gb + 1g.5gb + 2g.10gb + 3g.20gb is 7 compute slices but 9 memory
    // slices: the lowest-priority request that breaks it is refused.
    check(
        "gpu 0 a100
         want A mig 1g.10gb
         want B mig 1g.5gb
         want C mig 2g.10gb
         want D mig 3g.20gb",
        "A: GPU 0 mig 1g.10gb @6 new
         B: GPU 0 mig 1g.5gb @0 new
         C: GPU 0 mig 2g.10gb @4 new
         create GPU 0 1g.5gb @0 for B
         create GPU 0 2g.10gb @4 for C
         create GPU 0 1g.10gb @6 for A
         error: D: mig 3g.20gb -> GPU 0 no-placement 3g.20gb beside [1g.5gb@0 B, 2g.10gb@4 C, 1g.10gb@6 A]",
    );
}

#[test]
fn requests_across_two_gpus_are_rearranged_by_the_full_search() {
    // A and B fill GPU 0, C takes GPU 1; D (a second 4g.20gb) fits only if
    // B moves to GPU 1: 4g + 3g on each.
    check(
        "gpu 0 a100
         gpu 1 a100
         want A mig 3g.20gb
         want B mig 3g.20gb
         want C mig 4g.20gb
         want D mig 4g.20gb",
        "A: GPU 0 mig 3g.20gb @4 new
         B: GPU 1 mig 3g.20gb @4 new
         C: GPU 0 mig 4g.20gb @0 new
         D: GPU 1 mig 4g.20gb @0 new
         create GPU 0 4g.20gb @0 for C
         create GPU 0 3g.20gb @4 for A
         create GPU 1 4g.20gb @0 for D
         create GPU 1 3g.20gb @4 for B",
    );
}

#[test]
fn mixed_mig_classes_use_the_gpu_that_offers_the_profile() {
    check(
        "gpu 0 a100
         gpu 1 h100
         want A mig 2g.20gb
         want B mig 1g.10gb
         want C mig 1g.5gb",
        "A: GPU 1 mig 2g.20gb @4 new
         B: GPU 0 mig 1g.10gb @6 new
         C: GPU 0 mig 1g.5gb @4 new
         create GPU 0 1g.5gb @4 for C
         create GPU 0 1g.10gb @6 for B
         create GPU 1 2g.20gb @4 for A",
    );
}

#[test]
fn mig_on_geforce_without_fallback_is_an_error_naming_the_gpu() {
    check(
        "gpu 0 4090
         want FaceRecognitionAgent mig 1g.10gb",
        "error: FaceRecognitionAgent: mig 1g.10gb -> GPU 0 no-mig",
    );
}

#[test]
fn mig_falls_back_to_mps_on_geforce() {
    check(
        "gpu 0 4090
         want FaceRecognitionAgent mig 1g.10gb | mps 10g 25%",
        "FaceRecognitionAgent: GPU 0 mps 10g 25% [fallback 1]
         mps GPU 0: 1 clients, 10g, 25%",
    );
}

#[test]
fn mps_memory_error_says_what_is_taken() {
    check(
        "gpu 0 3060
         want S1 mps 4g 10%
         want S2 mps 4g 10%
         want S3 mps 2g 10%
         want STTService mps 8g 25%",
        "S1: GPU 0 mps 4g 10%
         S2: GPU 0 mps 4g 10%
         S3: GPU 0 mps 2g 10%
         mps GPU 0: 3 clients, 10g, 30%
         error: STTService: mps memory=8g compute=25% -> GPU 0 mps-memory 10g/11407m reserve 881m clients 3 wants 8g",
    );
}

#[test]
fn mps_request_larger_than_the_gpu() {
    check(
        "gpu 0 3060
         want Big mps 16g 10%",
        "error: Big: mps memory=16g compute=10% -> GPU 0 mps-memory 0/11407m reserve 881m clients 0 wants 16g",
    );
}

#[test]
fn mig_falls_back_to_a_smaller_profile() {
    check(
        "gpu 0 a100
         want A mig 4g.20gb
         want B mig 4g.20gb | mig 3g.20gb",
        "A: GPU 0 mig 4g.20gb @0 new
         B: GPU 0 mig 3g.20gb @4 new [fallback 1]
         create GPU 0 4g.20gb @0 for A
         create GPU 0 3g.20gb @4 for B",
    );
}

#[test]
fn chain_of_two_fallbacks_ends_on_mps() {
    check(
        "gpu 0 a100
         gpu 1 4090
         want A mig 7g.40gb
         want B mig 7g.40gb | mig 4g.20gb | mps 4g 10%",
        "A: GPU 0 mig 7g.40gb @0 new
         B: GPU 1 mps 4g 10% [fallback 2]
         create GPU 0 7g.40gb @0 for A
         mps GPU 1: 1 clients, 4g, 10%",
    );
}

#[test]
fn whole_chain_failing_lists_every_attempt() {
    check(
        "gpu 0 a100
         gpu 1 3060
         want A mig 7g.40gb
         want Filler mps 11g 10%
         want B mig 4g.20gb | mps 4g 10%",
        "A: GPU 0 mig 7g.40gb @0 new
         Filler: GPU 1 mps 11g 10%
         create GPU 0 7g.40gb @0 for A
         mps GPU 1: 1 clients, 11g, 10%
         error: B: mig 4g.20gb -> GPU 0 compute-full 7/7 4g.20gb needs 4; GPU 1 no-mig | mps memory=4g compute=10% -> GPU 0 mig-on; GPU 1 mps-memory 11g/11407m reserve 881m clients 1 wants 4g",
    );
}

#[test]
fn lowest_priority_blocker_moves_to_its_fallback() {
    check(
        "gpu 0 a100
         gpu 1 4090
         want A mig 4g.20gb
         want B mig 3g.20gb
         want C mig 1g.5gb | mps 2g 10%",
        "A: GPU 0 mig 4g.20gb @0 new
         B: GPU 0 mig 3g.20gb @4 new
         C: GPU 1 mps 2g 10% [fallback 1]
         create GPU 0 4g.20gb @0 for A
         create GPU 0 3g.20gb @4 for B
         mps GPU 1: 1 clients, 2g, 10%",
    );
}

#[test]
fn higher_priority_small_request_keeps_mig_and_the_big_one_gives_way() {
    // C is first now: A fits beside it, B (3g.20gb) would need compute 8 of 7.
    check(
        "gpu 0 a100
         gpu 1 4090
         want C mig 1g.5gb | mps 2g 10%
         want A mig 4g.20gb
         want B mig 3g.20gb | mps 6g 30%",
        "C: GPU 0 mig 1g.5gb @6 new
         A: GPU 0 mig 4g.20gb @0 new
         B: GPU 1 mps 6g 30% [fallback 1]
         create GPU 0 4g.20gb @0 for A
         create GPU 0 1g.5gb @6 for C
         mps GPU 1: 1 clients, 6g, 30%",
    );
}

#[test]
fn operator_instance_is_used_as_it_is() {
    check(
        "gpu 0 a100
         inst 0 3g.20gb@0 gi=5
         want A mig 3g.20gb",
        "A: GPU 0 mig 3g.20gb @0 gi=5",
    );
}

#[test]
fn operator_instance_in_the_way_is_never_destroyed() {
    check(
        "gpu 0 a100
         inst 0 1g.5gb@0 gi=7
         want A mig 4g.20gb",
        "error: A: mig 4g.20gb -> GPU 0 no-placement 4g.20gb beside [1g.5gb@0 other gi=7]",
    );
}

#[test]
fn own_unused_instance_is_destroyed_to_make_room() {
    check(
        "gpu 0 a100
         inst 0 1g.5gb@0 gi=7 owned
         want A mig 4g.20gb",
        "A: GPU 0 mig 4g.20gb @0 new
         create GPU 0 4g.20gb @0 for A
         destroy GPU 0 GI 7 @0",
    );
}

#[test]
fn own_unused_instance_is_reused_when_it_matches() {
    check(
        "gpu 0 a100
         inst 0 2g.10gb@2 gi=4 owned
         want A mig 2g.10gb",
        "A: GPU 0 mig 2g.10gb @2 gi=4",
    );
}

#[test]
fn own_unused_instances_go_and_others_stay() {
    check(
        "gpu 0 a100
         inst 0 1g.5gb@3 gi=2 owned
         inst 0 1g.5gb@5 gi=3
         gpu 1 4090
         want A mps 2g 10%",
        "A: GPU 1 mps 2g 10%
         destroy GPU 0 GI 2 @3
         mps GPU 1: 1 clients, 2g, 10%",
    );
}

#[test]
fn running_replicas_keep_their_slices_while_new_ones_are_added() {
    // A sits at 0, where the planner would not have put it: it stays there,
    // and B goes beside it (1 blocks less than 6 once 0 is taken).
    check(
        "gpu 0 a100
         inst 0 1g.5gb@0 gi=1 owned
         gpu 1 3060
         current A gpu=0 mig 1g.5gb@0 gi=1
         current M gpu=1 mps 4g 20%
         want A mig 1g.5gb
         want M mps 4g 20%
         want B mig 1g.5gb
         want N mps 4g 20%",
        "A: GPU 0 mig 1g.5gb @0 gi=1
         M: GPU 1 mps 4g 20%
         B: GPU 0 mig 1g.5gb @1 new
         N: GPU 1 mps 4g 20%
         create GPU 0 1g.5gb @1 for B
         mps GPU 1: 2 clients, 8g, 40%",
    );
}

#[test]
fn no_reshuffle_when_a_better_packing_exists() {
    // Moving A to 6 would let B's 4g.20gb in; running replicas are not moved.
    check(
        "gpu 0 a100
         inst 0 1g.5gb@0 gi=1 owned
         current A gpu=0 mig 1g.5gb@0 gi=1
         want A mig 1g.5gb
         want B mig 4g.20gb",
        "A: GPU 0 mig 1g.5gb @0 gi=1
         error: B: mig 4g.20gb -> GPU 0 no-placement 4g.20gb beside [1g.5gb@0 A]",
    );
}

#[test]
fn a_removed_agent_frees_its_instance_for_reuse() {
    check(
        "gpu 0 a100
         inst 0 4g.20gb@0 gi=1 owned
         inst 0 3g.20gb@4 gi=2 owned
         current A gpu=0 mig 4g.20gb@0 gi=1
         current B gpu=0 mig 3g.20gb@4 gi=2
         want B mig 3g.20gb
         want C mig 4g.20gb",
        "B: GPU 0 mig 3g.20gb @4 gi=2
         C: GPU 0 mig 4g.20gb @0 gi=1",
    );
}

#[test]
fn a_removed_agent_frees_its_instance_for_other_profiles() {
    check(
        "gpu 0 a100
         inst 0 4g.20gb@0 gi=1 owned
         inst 0 3g.20gb@4 gi=2 owned
         current A gpu=0 mig 4g.20gb@0 gi=1
         current B gpu=0 mig 3g.20gb@4 gi=2
         want B mig 3g.20gb
         want C mig 2g.10gb
         want D mig 2g.10gb",
        "B: GPU 0 mig 3g.20gb @4 gi=2
         C: GPU 0 mig 2g.10gb @0 new
         D: GPU 0 mig 2g.10gb @2 new
         create GPU 0 2g.10gb @0 for C
         create GPU 0 2g.10gb @2 for D
         destroy GPU 0 GI 1 @0",
    );
}

#[test]
fn a_removed_agent_frees_its_mps_share() {
    check(
        "gpu 0 3060
         current X gpu=0 mps 8g 50%
         current Y gpu=0 mps 3g 20%
         want Y mps 3g 20%
         want Z mps 8g 50%",
        "Y: GPU 0 mps 3g 20%
         Z: GPU 0 mps 8g 50%
         mps GPU 0: 2 clients, 11g, 70%",
    );
}

#[test]
fn after_a_reboot_the_layout_is_reapplied() {
    check(
        "gpu 0 a100
         current A gpu=0 mig 4g.20gb@0 gi=1
         current B gpu=0 mig 3g.20gb@4 gi=2
         want A mig 4g.20gb
         want B mig 3g.20gb",
        "A: GPU 0 mig 4g.20gb @0 new
         B: GPU 0 mig 3g.20gb @4 new
         create GPU 0 4g.20gb @0 for A
         create GPU 0 3g.20gb @4 for B
         note: GPU 0 reapply 4g.20gb@0 for A
         note: GPU 0 reapply 3g.20gb@4 for B",
    );
}

#[test]
fn after_a_reboot_a_taken_placement_means_planning_again() {
    check(
        "gpu 0 a100
         inst 0 2g.10gb@4 gi=9
         current B gpu=0 mig 3g.20gb@4 gi=2
         want B mig 3g.20gb",
        "B: GPU 0 mig 3g.20gb @0 new
         create GPU 0 3g.20gb @0 for B
         note: B dropped GPU 0 mig 3g.20gb @4: instance-gone",
    );
}

#[test]
fn kept_instance_found_by_placement_when_gi_id_changed() {
    check(
        "gpu 0 a100
         inst 0 3g.20gb@4 gi=8 owned
         current B gpu=0 mig 3g.20gb@4 gi=2
         want B mig 3g.20gb",
        "B: GPU 0 mig 3g.20gb @4 gi=8",
    );
}

#[test]
fn lost_gpu_drops_its_slices_and_takes_nothing() {
    check(
        "gpu 0 a100 lost
         inst 0 1g.5gb@6 gi=1 owned
         gpu 1 4090
         current A gpu=0 mig 1g.5gb@6 gi=1
         want A mig 1g.5gb | mps 2g 10%
         want B mig 1g.5gb",
        "A: GPU 1 mps 2g 10% [fallback 1]
         mps GPU 1: 1 clients, 2g, 10%
         error: B: mig 1g.5gb -> GPU 0 lost; GPU 1 no-mig
         note: GPU 0 lost GPU-0
         note: A dropped GPU 0 mig 1g.5gb @6: lost",
    );
}

#[test]
fn gpu_gone_from_the_inventory() {
    check(
        "gpu 0 4090
         current A gpu=3 mps 2g 10%
         want A mps 2g 10%",
        "A: GPU 0 mps 2g 10%
         mps GPU 0: 1 clients, 2g, 10%
         note: A dropped GPU 3 mps 2g 10%: gpu-gone",
    );
}

#[test]
fn pending_mig_enable_needs_a_reset() {
    check(
        "gpu 0 a100 mig-off pending
         want A mig 1g.5gb
         want B mps 4g 10%",
        "B: GPU 0 mps 4g 10%
         mps GPU 0: 1 clients, 4g, 10%
         error: A: mig 1g.5gb -> GPU 0 mig-off pending-on
         note: GPU 0 mig pending on",
    );
}

#[test]
fn pending_mig_disable_is_noted_and_mig_still_used() {
    check(
        "gpu 0 h100 pending
         want A mig 1g.10gb",
        "A: GPU 0 mig 1g.10gb @6 new
         create GPU 0 1g.10gb @6 for A
         note: GPU 0 mig pending off",
    );
}

#[test]
fn mig_off_gpu_serves_mps_and_refuses_mig() {
    check(
        "gpu 0 a100 mig-off
         want A mig 1g.5gb | mps 4g 10%",
        "A: GPU 0 mps 4g 10% [fallback 1]
         mps GPU 0: 1 clients, 4g, 10%",
    );
}

#[test]
fn mps_only_policy_refuses_mig() {
    check(
        "gpu 0 a100 mig-off
         policy index=0 mps
         want A mig 1g.5gb
         want B mps 4g 10%",
        "B: GPU 0 mps 4g 10%
         mps GPU 0: 1 clients, 4g, 10%
         error: A: mig 1g.5gb -> GPU 0 policy mps",
    );
}

#[test]
fn policy_that_contradicts_the_mig_mode_is_noted() {
    check(
        "gpu 0 a100
         policy name=*A100* mps
         gpu 1 4090
         policy index=1 mig
         want A mps 4g 10%",
        "error: A: mps memory=4g compute=10% -> GPU 0 mig-on; GPU 1 policy mig
         note: GPU 0 policy mps unusable mig-on=true mig-capable=true
         note: GPU 1 policy mig unusable mig-on=false mig-capable=false",
    );
}

#[test]
fn time_slice_is_refused_without_a_policy() {
    check(
        "gpu 0 4090
         want A time-slice",
        "error: A: time-slice -> GPU 0 time-slice-needs-policy",
    );
}

#[test]
fn time_slice_policy_gpu_takes_only_time_slice() {
    check(
        "gpu 0 4090
         gpu 1 4090
         policy index=0 time-slice
         want A time-slice
         want B time-slice
         want C mps 4g 10%",
        "A: GPU 0 time-slice
         B: GPU 0 time-slice
         C: GPU 1 mps 4g 10%
         mps GPU 1: 1 clients, 4g, 10%",
    );
}

#[test]
fn exclusive_takes_a_whole_gpu_and_blocks_mps() {
    check(
        "gpu 0 4090
         want A exclusive
         want B mps 4g 10%",
        "A: GPU 0 exclusive
         error: B: mps memory=4g compute=10% -> GPU 0 held-by A",
    );
}

#[test]
fn exclusive_needs_a_gpu_nobody_uses() {
    check(
        "gpu 0 4090
         want A mps 4g 10%
         want B exclusive",
        "A: GPU 0 mps 4g 10%
         mps GPU 0: 1 clients, 4g, 10%
         error: B: exclusive -> GPU 0 in-use mps=1 time-slice=0",
    );
}

#[test]
fn mps_best_fit_leaves_a_whole_gpu_for_exclusive() {
    check(
        "gpu 0 4090
         gpu 1 3060
         want A mps 2g 10%
         want B exclusive
         want C mps 2g 10%",
        "A: GPU 1 mps 2g 10%
         B: GPU 0 exclusive
         C: GPU 1 mps 2g 10%
         mps GPU 1: 2 clients, 4g, 20%",
    );
}

#[test]
fn exclusive_prefers_a_gpu_whose_policy_says_exclusive() {
    check(
        "gpu 0 4090
         gpu 1 4090
         policy index=1 exclusive
         want A exclusive
         want B exclusive
         want C exclusive",
        "A: GPU 1 exclusive
         B: GPU 0 exclusive
         error: C: exclusive -> GPU 0 held-by B; GPU 1 held-by A",
    );
}

#[test]
fn oversubscribe_lets_shares_exceed_the_gpu() {
    // A: best fit (GPU 0 keeps 11g - 8g). B: GPU 1 fits without
    // oversubscribing, which wins. C: only GPU 0 may oversubscribe.
    check(
        "gpu 0 3060
         policy index=0 oversubscribe reserve=1g
         gpu 1 3060
         want A mps 8g 60%
         want B mps 8g 60%
         want C mps 8g 60%",
        "A: GPU 0 mps 8g 60%
         B: GPU 1 mps 8g 60%
         C: GPU 0 mps 8g 60%
         mps GPU 0: 2 clients, 16g, 120%
         mps GPU 1: 1 clients, 8g, 60%",
    );
}

#[test]
fn reserve_from_the_policy_is_kept_free() {
    check(
        "gpu 0 3060
         policy index=0 reserve=3g
         want A mps 8g 10%
         want B mps 1g 10%",
        "A: GPU 0 mps 8g 10%
         mps GPU 0: 1 clients, 8g, 10%
         error: B: mps memory=1g compute=10% -> GPU 0 mps-memory 8g/8847m reserve 3441m clients 1 wants 1g",
    );
}

#[test]
fn the_drivers_measured_reserve_replaces_the_estimate() {
    // Estimated on a 3060: 3% of 12g is 368.64m, 369m in whole MiB, so
    // 12288m - 512m - 369m = 11407m. Measured at 300m: 11476m.
    check(
        "gpu 0 3060 reserved=300m
         want A mps 11g 10%
         want Big mps 12g 10%",
        "A: GPU 0 mps 11g 10%
         mps GPU 0: 1 clients, 11g, 10%
         error: Big: mps memory=12g compute=10% -> GPU 0 mps-memory 11g/11476m reserve 812m clients 1 wants 12g",
    );
    // 11.2g fits the measured 11476m, not the estimated 11407m.
    check(
        "gpu 0 3060 reserved=300m
         want A mps 11468m 10%",
        "A: GPU 0 mps 11468m 10%
         mps GPU 0: 1 clients, 11468m, 10%",
    );
    check(
        "gpu 0 3060
         want A mps 11468m 10%",
        "error: A: mps memory=11468m compute=10% -> GPU 0 mps-memory 0/11407m reserve 881m clients 0 wants 11468m",
    );
}

#[test]
fn the_estimate_is_three_percent_and_at_least_256m() {
    let cases = [
        ("3060", None, ByteSize::mib(369), false),
        ("4090", None, ByteSize::mib(738), false),
        ("a100", None, ByteSize::mib(1229), false),
        ("3060", Some(ByteSize::mib(300)), ByteSize::mib(300), true),
    ];
    for (alias, measured, want, is_measured) in cases {
        let mut g = GpuInfo::from_class(0, "GPU-0", class(alias), false);
        g.reserved = measured;
        assert_eq!(
            driver_reserve(&g),
            DriverReserve {
                bytes: want,
                measured: is_measured
            },
            "{alias}"
        );
    }
    // A small GPU (4 GiB: 3% is 123m) keeps the 256m floor.
    let mut small = GpuInfo::from_class(0, "GPU-0", class("3060"), false);
    small.memory_total = ByteSize::gib(4);
    assert_eq!(driver_reserve(&small).bytes, MIN_DRIVER_RESERVE);
}

#[test]
fn the_plan_says_what_it_held_back_on_each_whole_gpu() {
    // GPU 0 has MIG on (no reserve needed), GPU 1 is lost, GPUs 2 and 3
    // take whole-GPU kinds: one measured, one estimated under a 1g policy.
    let plan = Fixture::parse(
        "gpu 0 a100
         gpu 1 4090 lost
         gpu 2 4090 reserved=400m
         gpu 3 3060
         policy index=3 reserve=1g",
    )
    .plan();
    assert_eq!(
        plan.reserves,
        [
            ReserveNote {
                gpu_index: 2,
                driver: DriverReserve {
                    bytes: ByteSize::mib(400),
                    measured: true
                },
                policy: DEFAULT_RESERVE,
            },
            ReserveNote {
                gpu_index: 3,
                driver: DriverReserve {
                    bytes: ByteSize::mib(369),
                    measured: false
                },
                policy: ByteSize::gib(1),
            },
        ]
    );
}

#[test]
fn slice_memory_is_what_a_replica_is_held_against() {
    let a100 = GpuInfo::from_class(0, "GPU-a", class("a100"), true);
    let mig = Slice::Mig {
        gpu_index: 0,
        gpu_uuid: "GPU-a".into(),
        profile: "3g.20gb".into(),
        profile_id: 9,
        placement_start: 4,
        gi_id: None,
        ci_id: None,
        device_uuid: None,
    };
    assert_eq!(slice_memory(&mig, &a100), Some(ByteSize::gib(20)));
    let g = GpuInfo::from_class(0, "GPU-g", class("4090"), false);
    let whole = Slice::Exclusive {
        gpu_index: 0,
        gpu_uuid: "GPU-g".into(),
    };
    assert_eq!(
        slice_memory(&whole, &g),
        Some(ByteSize::mib(24 * 1024 - 738))
    );
    let mps = Slice::Mps {
        gpu_index: 0,
        gpu_uuid: "GPU-g".into(),
        memory: ByteSize::gib(4),
        compute: percent("25%"),
    };
    assert_eq!(slice_memory(&mps, &g), Some(ByteSize::gib(4)));
    let shared = Slice::TimeSlice {
        gpu_index: 0,
        gpu_uuid: "GPU-g".into(),
    };
    assert_eq!(slice_memory(&shared, &g), None);
}

#[test]
fn client_limit_from_the_settings() {
    check(
        "gpu 0 4090
         max-clients 2
         want A mps 1g 10%
         want B mps 1g 10%
         want C mps 1g 10%",
        "A: GPU 0 mps 1g 10%
         B: GPU 0 mps 1g 10%
         mps GPU 0: 2 clients, 2g, 20%
         error: C: mps memory=1g compute=10% -> GPU 0 mps-clients 2/2",
    );
}

#[test]
fn forty_eight_mps_clients_at_most_by_default() {
    let mut text = String::from("gpu 0 4090\n");
    for i in 0..49 {
        text.push_str(&format!("want W#{i} mps 256m 1%\n"));
    }
    let plan = Fixture::parse(&text).plan();
    assert_eq!(plan.assignments.len(), 48);
    assert_eq!(plan.mps[0].clients, 48);
    assert_eq!(
        plan.errors.iter().map(error).collect::<Vec<_>>(),
        ["W#48: mps memory=256m compute=1% -> GPU 0 mps-clients 48/48"]
    );
}

#[test]
fn compute_shares_stop_at_100_percent() {
    check(
        "gpu 0 4090
         want A mps 1g 60%
         want B mps 1g 50%
         want C mps 1g 40%",
        "A: GPU 0 mps 1g 60%
         C: GPU 0 mps 1g 40%
         mps GPU 0: 2 clients, 2g, 100%
         error: B: mps memory=1g compute=50% -> GPU 0 mps-compute 60% clients 1 wants 50%",
    );
}

#[test]
fn profile_missing_on_the_gpu_names_what_it_offers() {
    check(
        "gpu 0 h100nvl
         want A mig 1g.10gb",
        "error: A: mig 1g.10gb -> GPU 0 no-profile 1g.10gb offers 1g.12gb,1g.12gb+me,1g.24gb,2g.24gb,3g.47gb,4g.47gb,7g.94gb",
    );
}

#[test]
fn media_profile_has_one_instance_per_gpu() {
    check(
        "gpu 0 a100
         want A mig 1g.5gb+me
         want B mig 1g.5gb+me",
        "A: GPU 0 mig 1g.5gb+me @6 new
         create GPU 0 1g.5gb+me @6 for A
         error: B: mig 1g.5gb+me -> GPU 0 max-instances 1g.5gb+me 1",
    );
}

#[test]
fn changed_request_drops_the_running_slice() {
    check(
        "gpu 0 4090
         current A gpu=0 mps 2g 10%
         want A mps 4g 10%",
        "A: GPU 0 mps 4g 10%
         mps GPU 0: 1 clients, 4g, 10%
         note: A dropped GPU 0 mps 2g 10%: request-changed",
    );
}

#[test]
fn kept_slice_that_the_policy_now_forbids_is_dropped() {
    check(
        "gpu 0 4090
         policy index=0 exclusive
         current A gpu=0 mps 2g 10%
         want A mps 2g 10%",
        "error: A: mps memory=2g compute=10% -> GPU 0 policy exclusive
         note: A dropped GPU 0 mps 2g 10%: policy exclusive",
    );
}

#[test]
fn kept_fallback_is_not_upgraded_when_room_appears() {
    check(
        "gpu 0 a100
         gpu 1 4090
         current A gpu=1 mps 2g 10% depth=1
         want A mig 1g.5gb | mps 2g 10%",
        "A: GPU 1 mps 2g 10% [fallback 1]
         mps GPU 1: 1 clients, 2g, 10%",
    );
}

#[test]
fn no_gpu_at_all() {
    check(
        "want A mps 2g 10%",
        "error: A: mps memory=2g compute=10% -> no GPU",
    );
}

// ---------------------------------------------------------------------------
// Determinism.
// ---------------------------------------------------------------------------

const BUSY_HOST: &str = "
    gpu 0 a100
    inst 0 1g.5gb@0 gi=1 owned
    inst 0 2g.10gb@4 gi=2
    gpu 1 a100
    gpu 2 h100
    gpu 3 4090
    gpu 4 3060
    gpu 5 4090
    current A gpu=0 mig 1g.5gb@0 gi=1
    current M1 gpu=3 mps 4g 20%
    want A mig 1g.5gb
    want M1 mps 4g 20%
    want B mig 3g.20gb | mps 4g 20%
    want C mig 3g.20gb | mps 4g 20%
    want D mig 4g.20gb | mps 4g 20%
    want E mig 2g.10gb
    want F mig 3g.40gb
    want G mig 1g.10gb | mig 1g.5gb
    want X exclusive
    want M2 mps 8g 30%
    want M3 mps 6g 30%
";

#[test]
fn same_input_gives_the_same_plan() {
    let f = Fixture::parse(BUSY_HOST);
    let first = f.plan();
    assert_eq!(first, f.plan());
    assert_eq!(first.assignments.len(), 11, "{}", render(&first));
}

#[test]
fn gpu_order_in_the_inventory_does_not_matter() {
    let f = Fixture::parse(BUSY_HOST);
    let want = f.plan();
    let mut shuffled = f.clone();
    shuffled.gpus.reverse();
    assert_eq!(shuffled.plan(), want);
    shuffled.gpus.swap(0, 2);
    assert_eq!(shuffled.plan(), want);
}

#[test]
fn busy_host_plan() {
    check(
        BUSY_HOST,
        "A: GPU 0 mig 1g.5gb @0 gi=1
         M1: GPU 3 mps 4g 20%
         B: GPU 1 mig 3g.20gb @4 new
         C: GPU 1 mig 3g.20gb @0 new
         D: GPU 4 mps 4g 20% [fallback 1]
         E: GPU 0 mig 2g.10gb @4 gi=2
         F: GPU 2 mig 3g.40gb @4 new
         G: GPU 0 mig 1g.10gb @6 new
         X: GPU 5 exclusive
         M2: GPU 3 mps 8g 30%
         M3: GPU 4 mps 6g 30%
         create GPU 0 1g.10gb @6 for G
         create GPU 1 3g.20gb @0 for C
         create GPU 1 3g.20gb @4 for B
         create GPU 2 3g.40gb @4 for F
         mps GPU 3: 2 clients, 12g, 50%
         mps GPU 4: 2 clients, 10g, 50%",
    );
}

// ---------------------------------------------------------------------------
// Properties: the MIG search is exact.
// ---------------------------------------------------------------------------

/// The MIG profiles and compute slices of a catalog class.
fn class_mig(alias: &str) -> (Vec<GiProfile>, u32) {
    let g = GpuInfo::from_class(0, "GPU-0", class(alias), true);
    match &g.mig {
        MigState::Enabled {
            profiles,
            compute_slices,
            ..
        } => (profiles.clone(), u32::from(*compute_slices)),
        _ => panic!("{alias} has no MIG"),
    }
}

fn profile_names(alias: &str) -> Vec<String> {
    class_mig(alias).0.into_iter().map(|p| p.name).collect()
}

/// Does this multiset of profile names fit on these empty GPUs? Plain
/// enumeration of (GPU, placement) per item; identical consecutive items
/// take strictly increasing slots so that permutations are not enumerated
/// twice.
fn brute_fits(gpus: &[(Vec<GiProfile>, u32)], items: &[String]) -> bool {
    struct Ctx<'a> {
        gpus: &'a [(Vec<GiProfile>, u32)],
        /// Per item (sorted), per GPU: the GPU's profile of that name.
        local: Vec<Vec<Option<usize>>>,
        same_as_prev: Vec<bool>,
    }
    fn go(
        c: &Ctx<'_>,
        i: usize,
        used: &mut Vec<Vec<(usize, u8)>>,
        last: Option<(usize, u8)>,
    ) -> bool {
        if i == c.local.len() {
            return true;
        }
        for (g, (profiles, compute_total)) in c.gpus.iter().enumerate() {
            let Some(pi) = c.local[i][g] else { continue };
            let p = &profiles[pi];
            for &s in &p.placements {
                if c.same_as_prev[i] && last.is_some_and(|l| (g, s) <= l) {
                    continue;
                }
                let on = &used[g];
                let overlaps = on.iter().any(|&(q, t)| {
                    let qm = profiles[q].memory_slices;
                    s < t + qm && t < s + p.memory_slices
                });
                let compute: u32 = on
                    .iter()
                    .map(|&(q, _)| u32::from(profiles[q].compute_slices))
                    .sum::<u32>()
                    + u32::from(p.compute_slices);
                let count = on.iter().filter(|&&(q, _)| q == pi).count() + 1;
                if overlaps || compute > *compute_total || count > usize::from(p.max_instances) {
                    continue;
                }
                used[g].push((pi, s));
                if go(c, i + 1, used, Some((g, s))) {
                    return true;
                }
                used[g].pop();
            }
        }
        false
    }
    let mut items = items.to_vec();
    items.sort_unstable();
    let ctx = Ctx {
        gpus,
        local: items
            .iter()
            .map(|n| {
                gpus.iter()
                    .map(|(ps, _)| ps.iter().position(|p| p.name == *n))
                    .collect()
            })
            .collect(),
        same_as_prev: (0..items.len())
            .map(|i| i > 0 && items[i - 1] == items[i])
            .collect(),
    };
    go(&ctx, 0, &mut vec![Vec::new(); gpus.len()], None)
}

/// Every instance the plan leaves on each GPU is valid and none overlap.
fn assert_layout_valid(f: &Fixture, plan: &Plan) {
    for g in &f.gpus {
        let profiles = gi_profiles(g);
        let MigState::Enabled {
            instances,
            compute_slices,
            ..
        } = &g.mig
        else {
            continue;
        };
        let mut placed: Vec<(u32, u8)> = Vec::new();
        for i in instances {
            let destroyed = plan
                .destroy
                .iter()
                .any(|d| d.gpu_index == g.index && d.gi_id == i.gi_id);
            if !destroyed {
                placed.push((i.profile_id, i.placement_start));
            }
        }
        for c in plan.create.iter().filter(|c| c.gpu_index == g.index) {
            placed.push((c.profile_id, c.placement_start));
        }
        let prof = |id: u32| profiles.iter().find(|p| p.id == id).expect("profile");
        let mut compute = 0u32;
        for (k, &(id, s)) in placed.iter().enumerate() {
            let p = prof(id);
            assert!(
                p.placements.contains(&s),
                "{} at invalid placement {s}",
                p.name
            );
            compute += u32::from(p.compute_slices);
            let count = placed.iter().filter(|x| x.0 == id).count();
            assert!(count <= usize::from(p.max_instances), "too many {}", p.name);
            for &(id2, s2) in &placed[k + 1..] {
                let q = prof(id2);
                assert!(
                    !(s < s2 + q.memory_slices && s2 < s + p.memory_slices),
                    "{}@{s} overlaps {}@{s2}",
                    p.name,
                    q.name
                );
            }
        }
        assert!(compute <= u32::from(*compute_slices), "compute {compute}");
        // Every MIG assignment names its own instance of the layout.
        let mut mine: Vec<(u32, u8)> = plan
            .assignments
            .iter()
            .filter_map(|a| match &a.slice {
                Slice::Mig {
                    gpu_index,
                    profile_id,
                    placement_start,
                    ..
                } if *gpu_index == g.index => Some((*profile_id, *placement_start)),
                _ => None,
            })
            .collect();
        for m in &mine {
            assert!(placed.contains(m), "assignment {m:?} has no instance");
        }
        let n = mine.len();
        mine.sort_unstable();
        mine.dedup();
        assert_eq!(mine.len(), n, "two replicas share an instance");
    }
}

fn mig_fixture(aliases: &[&str], items: &[String], owned: &[(String, u8)]) -> Fixture {
    let mut text = String::new();
    for (g, alias) in aliases.iter().enumerate() {
        text.push_str(&format!("gpu {g} {alias}\n"));
    }
    for (k, (p, s)) in owned.iter().enumerate() {
        text.push_str(&format!("inst 0 {p}@{s} gi={} owned\n", k + 1));
    }
    for (r, p) in items.iter().enumerate() {
        text.push_str(&format!("want R#{} mig {p}\n", r + 1));
    }
    Fixture::parse(&text)
}

/// Non-overlapping owned instances on an A100, from random candidates.
fn owned_layout(candidates: &[(usize, usize)]) -> Vec<(String, u8)> {
    let profiles = class_mig("a100").0;
    let mut taken = 0u16;
    let mut out = Vec::new();
    for &(p, k) in candidates {
        let prof = &profiles[p];
        let s = prof.placements[k % prof.placements.len()];
        let mask = ((1u16 << prof.memory_slices) - 1) << s;
        if taken & mask == 0 {
            taken |= mask;
            out.push((prof.name.clone(), s));
        }
    }
    out
}

fn check_exact(aliases: &[&str], items: &[String], owned: &[(String, u8)]) {
    let gpus: Vec<_> = aliases.iter().map(|a| class_mig(a)).collect();
    let f = mig_fixture(aliases, items, owned);
    let plan = f.plan();
    assert_layout_valid(&f, &plan);
    // The whole set fits exactly when the brute force finds a layout.
    assert_eq!(
        plan.errors.is_empty(),
        brute_fits(&gpus, items),
        "items {items:?}\n{}",
        render(&plan)
    );
    // And the priority rule: a request is refused exactly when it cannot be
    // added to the higher-priority requests that were accepted.
    let mut accepted: Vec<String> = Vec::new();
    for (r, p) in items.iter().enumerate() {
        let k = key(&format!("R#{}", r + 1));
        let mut with = accepted.clone();
        with.push(p.clone());
        let fits = brute_fits(&gpus, &with);
        assert_eq!(
            plan.assignment(&k).is_some(),
            fits,
            "R#{} ({p}) after {accepted:?}\n{}",
            r + 1,
            render(&plan)
        );
        if fits {
            accepted = with;
        }
    }
}

fn pick(pool: &[String], idx: &[usize]) -> Vec<String> {
    idx.iter().map(|&i| pool[i % pool.len()].clone()).collect()
}

/// A100-40GB and H100-80GB profile names; `1g.10gb` is on both (two memory
/// slices on the A100, one on the H100), which couples the two GPUs.
fn mixed_pool() -> Vec<String> {
    let mut pool = profile_names("a100");
    for n in profile_names("h100") {
        if !pool.contains(&n) {
            pool.push(n);
        }
    }
    pool
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn one_a100_layout_found_iff_one_exists(
        items in prop::collection::vec(0usize..7, 1..9),
        owned in prop::collection::vec((0usize..7, 0usize..7), 0..4),
    ) {
        let items = pick(&profile_names("a100"), &items);
        check_exact(&["a100"], &items, &owned_layout(&owned));
    }

    #[test]
    fn two_a100_layout_found_iff_one_exists(
        items in prop::collection::vec(0usize..7, 1..12),
    ) {
        check_exact(&["a100", "a100"], &pick(&profile_names("a100"), &items), &[]);
    }

    #[test]
    fn a100_and_h100_layout_found_iff_one_exists(
        items in prop::collection::vec(0usize..13, 1..9),
    ) {
        check_exact(&["a100", "h100", "a100"], &pick(&mixed_pool(), &items), &[]);
    }
}

#[test]
fn brute_force_agrees_on_known_sets() {
    let a100 = [class_mig("a100")];
    let two = [class_mig("a100"), class_mig("a100")];
    let v = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    assert!(brute_fits(&a100, &v(&["4g.20gb", "3g.20gb"])));
    assert!(!brute_fits(&a100, &v(&["4g.20gb", "4g.20gb"])));
    assert!(brute_fits(
        &a100,
        &v(&["2g.10gb", "2g.10gb", "2g.10gb", "1g.5gb"])
    ));
    assert!(!brute_fits(&a100, &v(&["3g.20gb", "3g.20gb", "1g.5gb"])));
    assert!(brute_fits(&a100, &v(&["1g.10gb"; 4])));
    assert!(!brute_fits(&a100, &v(&["7g.40gb", "1g.5gb"])));
    assert!(brute_fits(&two, &v(&["7g.40gb", "1g.5gb"])));
    check_exact(&["a100"], &v(&["3g.20gb", "3g.20gb", "1g.5gb"]), &[]);
    check_exact(
        &["a100", "a100"],
        &v(&["3g.20gb", "3g.20gb", "4g.20gb", "4g.20gb"]),
        &[],
    );
    // Seven 1g.10gb: four fill the A100's memory, the H100 takes the rest.
    check_exact(&["a100", "h100"], &v(&["1g.10gb"; 7]), &[]);
}
