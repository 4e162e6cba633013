//! The GPU slice planner: who gets which share of which GPU.
//!
//! It owns one decision, as a pure function ([`plan`]): from the GPU
//! inventory, the per-GPU policies, the GPU requests of every replica (in
//! priority order, which is declaration order in the config) and the
//! assignments of replicas already running, it computes a [`Plan`]: one
//! assignment per satisfied replica, the MIG instances to create and to
//! destroy, the totals each MPS control daemon serves, one [`PlanError`] per
//! replica that cannot be served (naming every GPU and why not), and notes
//! for the operator. Applying the plan (NVML calls, MPS daemons, containers)
//! is someone else's job. [`advise`] asks the same question of other hosts
//! of the fleet (where would these requests fit?) by planning each of them
//! with what it holds kept in place (see `advice`).
//!
//! Architecture invariant: no I/O, clock, randomness or hash-order in the
//! output. The same input gives the same plan, whatever the order of the
//! GPUs in the inventory (they are sorted by index first).
//!
//! # Rules
//!
//! - **Running replicas keep their slice** as long as it is still valid: the
//!   GPU is there and not lost, its policy still allows the kind, and for
//!   MIG the instance still exists (matched by GI id, else by profile and
//!   placement) or, when the layout is gone (a reboot), the same placement
//!   is free, in which case the instance is re-created there. Nothing that
//!   is valid is ever moved to make a better packing. An assignment that is
//!   no longer valid is dropped with a note and its replica planned afresh.
//! - **Sharing per GPU**: policy `mig` takes only MIG instances (and MIG
//!   must be on), `mps` only MPS clients, `exclusive` only one whole-GPU
//!   holder, `time-slice` only time-slice clients. Time-slicing has no
//!   isolation, so it happens only where a policy asks for it. Without a
//!   policy, a GPU with MIG on takes only MIG requests and any other GPU
//!   takes MPS clients or one exclusive holder, never both. MIG mode is
//!   taken as it is now; a pending change only earns a note (it needs a
//!   GPU reset).
//! - **MIG** requests are met by an unused existing instance of the profile
//!   (ours or the operator's: a pre-made layout is used as it is), or by a
//!   new instance at a free placement: no overlap of memory-slice ranges,
//!   compute slices and per-profile instance limits respected. Our own
//!   unused instances are free space and are destroyed when nothing reuses
//!   them; an instance we do not own is never destroyed. The placement
//!   search is exact (see `mig`): if a set of MIG requests can be laid out
//!   on the host's GPUs, a layout is found.
//! - **MPS**: per GPU, memory shares add up to at most memory minus the
//!   driver's reserve minus the policy's reserve (512 MiB by default) and
//!   compute shares to at most 100%, unless the policy sets
//!   `oversubscribe`; at most
//!   [`PlannerSettings::max_mps_clients`] clients. Among GPUs that fit, the
//!   one left with the least memory wins (best fit, keeping whole GPUs free
//!   for exclusive holders), ties by index; GPUs that fit only by
//!   oversubscribing come last.
//! - **The driver's reserve** is memory the driver and firmware keep on a
//!   GPU, which no client can have: what NVML measures
//!   ([`GpuInfo::reserved`]) where it reports it, else an estimate of
//!   `max(3% of memory, 256 MiB)`, rounded up to whole MiB
//!   ([`driver_reserve`]). It is held back before any MPS share is
//!   admitted (a refusal's `reserve` is both reserves together), and
//!   [`Plan::reserves`] says, for every GPU that takes whole-GPU kinds, how
//!   much was held back and whether it was measured. MIG instances have
//!   their memory by profile and need no reserve.
//! - **Exclusive** takes a GPU nobody else uses, preferring GPUs whose
//!   policy says `exclusive`, then by index. **Time-slice** goes to the
//!   allowed GPU with the fewest time-slice clients, ties by index.
//!
//! # Priority, fallbacks and who gives way
//!
//! Replicas are planned one by one in priority order. Each tries its
//! request, then its fallbacks in order, and takes the first that can be
//! met; `fallback_depth` records which. A MIG request is accepted only if
//! it can be placed **together with every MIG request of higher priority
//! accepted before it** (found by re-placing those freely: none of them is
//! running yet). So when the MIG requests do not all fit, the ones that
//! give way are the lowest-priority ones whose addition makes the set
//! impossible: such a request moves to its fallback (which may be a smaller
//! profile, tried at once at the same priority), the higher-priority layout
//! stands, and lower-priority requests are tried against it. A
//! higher-priority request never moves to its fallback to make room for a
//! lower-priority one. MIG GPUs and whole GPUs never serve each other's
//! kinds, so a fallback from MIG to MPS cannot disturb the MIG layout.

mod advice;
mod mig;
#[cfg(test)]
mod tests;

pub use advice::{HostAdvice, HostGpus, ReplicaAdvice, advise};

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::gpu::{
    Assignment, GiProfile, GpuInfo, GpuRequest, MigInstance, MigProfileName, MigState, ReplicaKey,
    Slice, SliceRequest,
};
use crate::model::{GpuPolicy, Sharing};
use crate::units::{ByteSize, Percent};

use mig::{EngineGpu, FixedHolder, FixedInst, FreeInst, Holder, MigEngine, Prof, Shortfall};

/// Memory kept free of MPS shares on a GPU no policy speaks for.
pub const DEFAULT_RESERVE: ByteSize = ByteSize::mib(512);
/// MPS clients per GPU from Volta on.
pub const DEFAULT_MAX_MPS_CLIENTS: u32 = 48;
/// The least the driver is assumed to keep on a GPU that does not report it.
pub const MIN_DRIVER_RESERVE: ByteSize = ByteSize::mib(256);
/// The share of a GPU's memory the driver is assumed to keep, in basis
/// points (3%), where NVML does not report it.
pub const DRIVER_RESERVE_BASIS_POINTS: u64 = 300;

/// How much memory the driver keeps on a GPU, and how that is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverReserve {
    pub bytes: ByteSize,
    /// NVML reported it; otherwise it is the estimate.
    pub measured: bool,
}

/// The driver's reserve on `gpu`: measured where NVML reports it, else
/// `max(3% of memory, 256 MiB)`, rounded up to whole MiB.
pub fn driver_reserve(gpu: &GpuInfo) -> DriverReserve {
    match gpu.reserved {
        Some(bytes) => DriverReserve {
            bytes,
            measured: true,
        },
        None => {
            let share = (u128::from(gpu.memory_total.bytes())
                * u128::from(DRIVER_RESERVE_BASIS_POINTS))
            .div_ceil(10_000);
            let mib = u128::from(ByteSize::MIB);
            let rounded = u64::try_from(share.div_ceil(mib) * mib).unwrap_or(u64::MAX);
            DriverReserve {
                bytes: ByteSize(rounded.max(MIN_DRIVER_RESERVE.bytes())),
                measured: false,
            }
        }
    }
}

/// The memory a slice of `gpu` can hold: an MPS share's limit, a MIG
/// profile's memory, a whole GPU less the driver's reserve; `None` for
/// time-slicing, which has no share of its own. This is what a replica's
/// measured memory is held against (`gpu.over_limit`).
pub fn slice_memory(slice: &Slice, gpu: &GpuInfo) -> Option<ByteSize> {
    match slice {
        Slice::Mps { memory, .. } => Some(*memory),
        Slice::Mig { profile_id, .. } => match &gpu.mig {
            MigState::Enabled { profiles, .. } => profiles
                .iter()
                .find(|p| p.id == *profile_id)
                .map(|p| p.memory),
            _ => None,
        },
        Slice::Exclusive { .. } => Some(ByteSize(
            gpu.memory_total
                .bytes()
                .saturating_sub(driver_reserve(gpu).bytes.bytes()),
        )),
        Slice::TimeSlice { .. } => None,
    }
}

/// Planner knobs that are not per GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannerSettings {
    pub max_mps_clients: u32,
}

impl Default for PlannerSettings {
    fn default() -> Self {
        PlannerSettings {
            max_mps_clients: DEFAULT_MAX_MPS_CLIENTS,
        }
    }
}

/// Everything one plan is computed from.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    pub gpus: &'a [GpuInfo],
    /// The first policy whose selector matches a GPU applies to it.
    pub policies: &'a [GpuPolicy],
    /// In priority order. A replica listed twice is planned once.
    pub requests: &'a [(ReplicaKey, GpuRequest)],
    /// Assignments of replicas that are running with an unchanged request.
    pub current: &'a [Assignment],
    pub settings: PlannerSettings,
}

/// What to do, and what cannot be done.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Plan {
    /// One per satisfied replica, in priority order.
    pub assignments: Vec<Assignment>,
    /// MIG instances to create, by GPU index and placement.
    pub create: Vec<MigCreate>,
    /// Our own instances nobody uses any more, by GPU index and placement.
    /// Destroy them before creating, as creations may need their room.
    pub destroy: Vec<MigDestroy>,
    /// GPUs that need an MPS control daemon, by index.
    pub mps: Vec<MpsTotals>,
    /// One per replica that cannot be served, in priority order.
    pub errors: Vec<PlanError>,
    pub notes: Vec<PlanNote>,
    /// The driver's reserve held back on each GPU that takes whole-GPU
    /// kinds (MIG off, not lost), by index.
    #[serde(default)]
    pub reserves: Vec<ReserveNote>,
}

/// Memory held back on one GPU before MPS shares are admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReserveNote {
    pub gpu_index: u32,
    /// The driver's own memory, measured or estimated.
    pub driver: DriverReserve,
    /// The policy's `reserve` on top of it.
    pub policy: ByteSize,
}

impl Plan {
    pub fn assignment(&self, replica: &ReplicaKey) -> Option<&Assignment> {
        self.assignments.iter().find(|a| a.replica == *replica)
    }

    pub fn error(&self, replica: &ReplicaKey) -> Option<&PlanError> {
        self.errors.iter().find(|e| e.replica == *replica)
    }
}

/// A GPU instance (with one compute instance spanning it) to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigCreate {
    pub gpu_index: u32,
    pub gpu_uuid: String,
    pub profile: String,
    pub profile_id: u32,
    pub placement_start: u8,
    pub placement_size: u8,
    pub replica: ReplicaKey,
}

/// One of our GPU instances to destroy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigDestroy {
    pub gpu_index: u32,
    pub gpu_uuid: String,
    pub gi_id: u32,
    pub profile_id: u32,
    pub placement_start: u8,
    pub placement_size: u8,
}

/// What one GPU's MPS control daemon serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MpsTotals {
    pub gpu_index: u32,
    pub gpu_uuid: String,
    pub clients: u32,
    pub memory: ByteSize,
    /// Sum of the clients' active-thread shares, in hundredths of a percent
    /// (over 10000 only with `oversubscribe`).
    pub compute_basis_points: u32,
}

/// A replica that cannot be given any slice it asks for. Typed: its
/// words are `orch_api::text`'s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanError {
    pub replica: ReplicaKey,
    pub request: GpuRequest,
    /// The request and each fallback, in the order tried.
    pub attempts: Vec<Attempt>,
}

/// One entry of a request's chain and why no GPU could take it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub wanted: SliceRequest,
    /// One per GPU of the host, by index.
    pub refusals: Vec<Refusal>,
}

/// Why one GPU could not take one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub gpu_index: u32,
    pub gpu_name: String,
    pub reason: RefusalReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "reason")]
pub enum RefusalReason {
    /// NVML reports the GPU lost.
    Lost,
    /// The GPU has no MIG at all (GeForce, A10, L4, ...).
    NoMig,
    /// MIG-capable but MIG is off; `pending_enable` when a reset turns it on.
    MigOff {
        pending_enable: bool,
    },
    /// MIG is on, so the GPU takes only MIG requests.
    MigOn,
    /// MIG is on but the profile is not one the GPU offers.
    NoSuchProfile {
        profile: String,
        offered: Vec<String>,
    },
    /// MIG geometry beyond what the planner models (more than 64 memory slices).
    UnsupportedGeometry {
        memory_slices: u8,
    },
    /// The GPU's policy allows only another sharing mode.
    Policy {
        sharing: Sharing,
    },
    /// Time-slicing has no isolation; only GPUs whose policy says so do it.
    TimeSliceNeedsPolicy,
    /// The GPU holds (or will hold) as many instances of the profile as it can.
    MigMaxInstances {
        profile: String,
        max: u8,
    },
    /// Not enough compute slices left.
    MigComputeFull {
        profile: String,
        used: u8,
        total: u8,
        needed: u8,
    },
    /// Compute slices would do, but no placement of the profile is free.
    MigNoPlacement {
        profile: String,
        occupants: Vec<Occupant>,
    },
    MpsClients {
        clients: u32,
        max: u32,
    },
    MpsMemory {
        used: ByteSize,
        capacity: ByteSize,
        /// Everything held back: the driver's reserve and the policy's.
        reserve: ByteSize,
        clients: u32,
        wanted: ByteSize,
    },
    MpsCompute {
        used_basis_points: u32,
        clients: u32,
        wanted: Percent,
    },
    HeldExclusive {
        holder: ReplicaKey,
    },
    /// Exclusive needs a GPU nobody uses.
    InUse {
        mps_clients: u32,
        time_slice_clients: u32,
    },
}

/// A MIG instance in the way, as the plan stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Occupant {
    pub profile: String,
    pub placement_start: u8,
    /// The replica using it; `None` for an instance that is not ours.
    pub holder: Option<ReplicaKey>,
    pub gi_id: Option<u32>,
}

/// Something the operator should know about the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "note")]
pub enum PlanNote {
    GpuLost {
        gpu_index: u32,
        gpu_uuid: String,
        name: String,
    },
    /// A MIG mode change waits for a GPU reset; planning uses the current mode.
    MigModePending {
        gpu_index: u32,
        name: String,
        enable: bool,
    },
    /// The GPU's policy cannot be honoured in its current MIG mode, so the
    /// GPU takes nothing.
    PolicyUnusable {
        gpu_index: u32,
        name: String,
        sharing: Sharing,
        mig_on: bool,
        mig_capable: bool,
    },
    /// A running replica's slice is no longer valid; it is planned again.
    Dropped {
        replica: ReplicaKey,
        slice: Slice,
        reason: DropReason,
    },
    /// A running replica's instance is gone (reboot) and is re-created at
    /// the same placement.
    Reapplied {
        replica: ReplicaKey,
        gpu_index: u32,
        profile: String,
        placement_start: u8,
    },
    /// The MIG search gave up (budget) and counted the request as not fitting.
    SearchCutShort { replica: ReplicaKey },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "why")]
pub enum DropReason {
    /// The slice is not what the request (at its fallback depth) asks for.
    RequestChanged,
    /// No GPU with the slice's UUID is in the inventory.
    GpuGone,
    /// The instance is gone and its placement is taken or no longer valid.
    InstanceGone,
    Refused(RefusalReason),
}

/// Plans GPU slices. See the module documentation for the rules.
pub fn plan(input: &PlanInput<'_>) -> Plan {
    Planner::new(input).run()
}

// ---------------------------------------------------------------------------
// Internals.
// ---------------------------------------------------------------------------

/// One GPU with its effective policy.
struct GpuView<'a> {
    info: &'a GpuInfo,
    sharing: Option<Sharing>,
    /// The policy's reserve.
    reserve: ByteSize,
    driver: DriverReserve,
    oversubscribe: bool,
    /// MIG profiles by parsed name, when MIG is on.
    profiles: Vec<(MigProfileName, &'a GiProfile)>,
}

impl<'a> GpuView<'a> {
    fn new(info: &'a GpuInfo, policies: &[GpuPolicy]) -> Self {
        let policy = policies
            .iter()
            .find(|p| p.select.matches(info.index, &info.uuid, &info.name));
        let mut profiles: Vec<(MigProfileName, &GiProfile)> = Vec::new();
        if let MigState::Enabled { profiles: ps, .. } = &info.mig {
            for gp in ps {
                if let Ok(name) = MigProfileName::parse(&gp.name)
                    && !profiles.iter().any(|(n, _)| *n == name)
                {
                    profiles.push((name, gp));
                }
            }
        }
        GpuView {
            info,
            sharing: policy.and_then(|p| p.sharing),
            reserve: policy.map_or(DEFAULT_RESERVE, |p| p.reserve),
            driver: driver_reserve(info),
            oversubscribe: policy.is_some_and(|p| p.oversubscribe),
            profiles,
        }
    }

    fn instances(&self) -> &'a [MigInstance] {
        match &self.info.mig {
            MigState::Enabled { instances, .. } => instances,
            _ => &[],
        }
    }

    fn geometry(&self) -> Option<(u8, u8)> {
        match &self.info.mig {
            MigState::Enabled {
                memory_slices,
                compute_slices,
                ..
            } => Some((*memory_slices, *compute_slices)),
            _ => None,
        }
    }

    fn profile(&self, name: &MigProfileName) -> Option<(usize, &'a GiProfile)> {
        self.profiles
            .iter()
            .position(|(n, _)| n == name)
            .map(|p| (p, self.profiles[p].1))
    }

    fn profile_by_id(&self, id: u32) -> Option<(usize, &'a GiProfile)> {
        self.profiles
            .iter()
            .position(|(_, gp)| gp.id == id)
            .map(|p| (p, self.profiles[p].1))
    }

    /// May the MIG engine place instances here?
    fn mig_eligible(&self) -> bool {
        !self.info.lost
            && matches!(self.sharing, None | Some(Sharing::Mig))
            && self.geometry().is_some_and(|(m, _)| m <= 64)
    }

    /// Both reserves together.
    fn held_back(&self) -> ByteSize {
        ByteSize(
            self.reserve
                .bytes()
                .saturating_add(self.driver.bytes.bytes()),
        )
    }

    fn mps_capacity(&self) -> ByteSize {
        ByteSize(
            self.info
                .memory_total
                .bytes()
                .saturating_sub(self.held_back().bytes()),
        )
    }

    fn refusal(&self, reason: RefusalReason) -> Refusal {
        Refusal {
            gpu_index: self.info.index,
            gpu_name: self.info.name.clone(),
            reason,
        }
    }
}

/// The whole-GPU kinds, which MIG GPUs never serve.
#[derive(Debug, Clone, Copy)]
enum WholeKind {
    Mps { memory: ByteSize, compute: Percent },
    Exclusive,
    TimeSlice,
}

impl WholeKind {
    fn of(kind: &SliceRequest) -> Option<WholeKind> {
        match kind {
            SliceRequest::Mig { .. } => None,
            SliceRequest::Mps { memory, compute } => Some(WholeKind::Mps {
                memory: *memory,
                compute: *compute,
            }),
            SliceRequest::Exclusive => Some(WholeKind::Exclusive),
            SliceRequest::TimeSlice => Some(WholeKind::TimeSlice),
        }
    }

    fn sharing(self) -> Sharing {
        match self {
            WholeKind::Mps { .. } => Sharing::Mps,
            WholeKind::Exclusive => Sharing::Exclusive,
            WholeKind::TimeSlice => Sharing::TimeSlice,
        }
    }

    fn slice(self, info: &GpuInfo) -> Slice {
        let (gpu_index, gpu_uuid) = (info.index, info.uuid.clone());
        match self {
            WholeKind::Mps { memory, compute } => Slice::Mps {
                gpu_index,
                gpu_uuid,
                memory,
                compute,
            },
            WholeKind::Exclusive => Slice::Exclusive {
                gpu_index,
                gpu_uuid,
            },
            WholeKind::TimeSlice => Slice::TimeSlice {
                gpu_index,
                gpu_uuid,
            },
        }
    }
}

/// What a GPU without MIG has given out so far.
#[derive(Debug, Clone, Default)]
struct Whole {
    mps_clients: u32,
    mps_memory: u64,
    mps_compute: u32,
    exclusive: Option<ReplicaKey>,
    time_slice: u32,
}

impl Whole {
    fn take(&mut self, kind: WholeKind, replica: &ReplicaKey) {
        match kind {
            WholeKind::Mps { memory, compute } => {
                self.mps_clients += 1;
                self.mps_memory += memory.bytes();
                self.mps_compute += compute.basis_points();
            }
            WholeKind::Exclusive => self.exclusive = Some(replica.clone()),
            WholeKind::TimeSlice => self.time_slice += 1,
        }
    }
}

/// Refusals that hold whatever else is on the GPU: hardware, mode, policy.
fn kind_refusal(g: &GpuView<'_>, kind: &SliceRequest) -> Option<RefusalReason> {
    if g.info.lost {
        return Some(RefusalReason::Lost);
    }
    let Some(whole) = WholeKind::of(kind) else {
        let SliceRequest::Mig { profile } = kind else {
            return None;
        };
        // Hardware first: "has no MIG" tells more than "the policy says mps".
        if matches!(g.info.mig, MigState::Unsupported) {
            return Some(RefusalReason::NoMig);
        }
        if let Some(s) = g.sharing
            && s != Sharing::Mig
        {
            return Some(RefusalReason::Policy { sharing: s });
        }
        return match &g.info.mig {
            MigState::Unsupported => Some(RefusalReason::NoMig),
            MigState::Disabled { pending_enable } => Some(RefusalReason::MigOff {
                pending_enable: *pending_enable,
            }),
            MigState::Enabled { memory_slices, .. } if *memory_slices > 64 => {
                Some(RefusalReason::UnsupportedGeometry {
                    memory_slices: *memory_slices,
                })
            }
            MigState::Enabled { .. } => match g.profile(profile) {
                Some(_) => None,
                None => Some(RefusalReason::NoSuchProfile {
                    profile: profile.to_string(),
                    offered: g.profiles.iter().map(|(n, _)| n.to_string()).collect(),
                }),
            },
        };
    };
    match g.sharing {
        Some(s) if s != whole.sharing() => return Some(RefusalReason::Policy { sharing: s }),
        None if matches!(whole, WholeKind::TimeSlice) => {
            return Some(RefusalReason::TimeSliceNeedsPolicy);
        }
        _ => {}
    }
    if g.info.mig.is_enabled() {
        return Some(RefusalReason::MigOn);
    }
    None
}

/// Refusals because of what the GPU already serves.
fn whole_refusal(
    g: &GpuView<'_>,
    w: &Whole,
    kind: WholeKind,
    max_clients: u32,
) -> Option<RefusalReason> {
    if let Some(holder) = &w.exclusive {
        return Some(RefusalReason::HeldExclusive {
            holder: holder.clone(),
        });
    }
    match kind {
        WholeKind::Mps { memory, compute } => {
            if w.mps_clients >= max_clients {
                return Some(RefusalReason::MpsClients {
                    clients: w.mps_clients,
                    max: max_clients,
                });
            }
            if g.oversubscribe {
                return None;
            }
            let capacity = g.mps_capacity();
            if w.mps_memory + memory.bytes() > capacity.bytes() {
                return Some(RefusalReason::MpsMemory {
                    used: ByteSize(w.mps_memory),
                    capacity,
                    reserve: g.held_back(),
                    clients: w.mps_clients,
                    wanted: memory,
                });
            }
            if w.mps_compute + compute.basis_points() > Percent::HUNDRED.basis_points() {
                return Some(RefusalReason::MpsCompute {
                    used_basis_points: w.mps_compute,
                    clients: w.mps_clients,
                    wanted: compute,
                });
            }
            None
        }
        WholeKind::Exclusive if w.mps_clients > 0 || w.time_slice > 0 => {
            Some(RefusalReason::InUse {
                mps_clients: w.mps_clients,
                time_slice_clients: w.time_slice,
            })
        }
        WholeKind::Exclusive | WholeKind::TimeSlice => None,
    }
}

/// Whether `slice` is what `kind` asks for.
/// Which entry of `request`'s chain `slice` answers (the first, when
/// several do): the fallback depth a running replica holding it has under
/// that request; `None` when it answers none.
pub fn answering_depth(request: &GpuRequest, slice: &Slice) -> Option<u8> {
    request
        .chain()
        .position(|r| slice_matches(&r.kind, slice))
        .and_then(|d| u8::try_from(d).ok())
}

pub(crate) fn slice_matches(kind: &SliceRequest, slice: &Slice) -> bool {
    match (kind, slice) {
        (SliceRequest::Mig { profile }, Slice::Mig { profile: s, .. }) => {
            MigProfileName::parse(s).is_ok_and(|p| p == *profile)
        }
        (
            SliceRequest::Mps { memory, compute },
            Slice::Mps {
                memory: m,
                compute: c,
                ..
            },
        ) => memory == m && compute == c,
        (SliceRequest::Exclusive, Slice::Exclusive { .. })
        | (SliceRequest::TimeSlice, Slice::TimeSlice { .. }) => true,
        _ => false,
    }
}

fn range_overlaps(a_start: u8, a_size: u8, b_start: u8, b_size: u8) -> bool {
    let (a0, a1) = (u16::from(a_start), u16::from(a_start) + u16::from(a_size));
    let (b0, b1) = (u16::from(b_start), u16::from(b_start) + u16::from(b_size));
    a0 < b1 && b0 < a1
}

enum Outcome {
    Pending,
    Done(Assignment),
    /// Accepted by the MIG engine at this fallback depth; placed at the end.
    Mig(u8),
    Failed(PlanError),
}

/// Kept and re-created MIG instances of one GPU.
#[derive(Default)]
struct MigKeep {
    /// Per inventory instance: used by a kept assignment.
    claimed: Vec<bool>,
    fixed: Vec<FixedInst>,
}

enum Keep {
    Done(Assignment),
    Recreate { pos: usize, profile: usize },
    Drop(DropReason),
}

struct Planner<'a> {
    settings: PlannerSettings,
    gpus: Vec<GpuView<'a>>,
    requests: Vec<(&'a ReplicaKey, &'a GpuRequest)>,
    current: BTreeMap<&'a ReplicaKey, &'a Assignment>,
    whole: Vec<Whole>,
    mig: Vec<MigKeep>,
    outcomes: Vec<Outcome>,
    creates: Vec<MigCreate>,
    notes: Vec<PlanNote>,
    /// MIG refusals per profile, valid while the engine's generation is
    /// unchanged: once the MIG GPUs are full, every further request for a
    /// profile is refused for the same reasons.
    mig_refusal_cache: BTreeMap<MigProfileName, (u64, Vec<Refusal>)>,
}

impl<'a> Planner<'a> {
    fn new(input: &PlanInput<'a>) -> Self {
        let mut gpus: Vec<GpuView<'a>> = input
            .gpus
            .iter()
            .map(|g| GpuView::new(g, input.policies))
            .collect();
        gpus.sort_by(|a, b| (a.info.index, &a.info.uuid).cmp(&(b.info.index, &b.info.uuid)));
        let mut seen = BTreeSet::new();
        let requests: Vec<(&ReplicaKey, &GpuRequest)> = input
            .requests
            .iter()
            .filter(|(k, _)| seen.insert(k))
            .map(|(k, r)| (k, r))
            .collect();
        let mut current = BTreeMap::new();
        for a in input.current {
            current.entry(&a.replica).or_insert(a);
        }
        let mig = gpus
            .iter()
            .map(|g| MigKeep {
                claimed: vec![false; g.instances().len()],
                fixed: Vec::new(),
            })
            .collect();
        let n = requests.len();
        Planner {
            settings: input.settings,
            whole: vec![Whole::default(); gpus.len()],
            gpus,
            requests,
            current,
            mig,
            outcomes: (0..n).map(|_| Outcome::Pending).collect(),
            creates: Vec::new(),
            notes: Vec::new(),
            mig_refusal_cache: BTreeMap::new(),
        }
    }

    fn run(mut self) -> Plan {
        self.gpu_notes();
        self.keep_current();
        let mut engine = MigEngine::new(self.engine_gpus());
        self.plan_pending(&mut engine);
        self.finish(engine)
    }

    fn gpu_notes(&mut self) {
        for g in &self.gpus {
            let (gpu_index, name) = (g.info.index, g.info.name.clone());
            if g.info.lost {
                self.notes.push(PlanNote::GpuLost {
                    gpu_index,
                    gpu_uuid: g.info.uuid.clone(),
                    name,
                });
                continue;
            }
            match &g.info.mig {
                MigState::Disabled {
                    pending_enable: true,
                } => self.notes.push(PlanNote::MigModePending {
                    gpu_index,
                    name: name.clone(),
                    enable: true,
                }),
                MigState::Enabled {
                    pending_disable: true,
                    ..
                } => self.notes.push(PlanNote::MigModePending {
                    gpu_index,
                    name: name.clone(),
                    enable: false,
                }),
                _ => {}
            }
            let mig_on = g.info.mig.is_enabled();
            if let Some(sharing) = g.sharing
                && (sharing == Sharing::Mig) != mig_on
            {
                self.notes.push(PlanNote::PolicyUnusable {
                    gpu_index,
                    name,
                    sharing,
                    mig_on,
                    mig_capable: !matches!(g.info.mig, MigState::Unsupported),
                });
            }
        }
    }

    // -- Running replicas ---------------------------------------------------

    fn keep_current(&mut self) {
        let mut deferred = Vec::new();
        for ri in 0..self.requests.len() {
            let (key, req) = self.requests[ri];
            let Some(&a) = self.current.get(key) else {
                continue;
            };
            match self.keep_one(a, req) {
                Keep::Done(assignment) => self.outcomes[ri] = Outcome::Done(assignment),
                Keep::Recreate { pos, profile } => deferred.push((ri, a, pos, profile)),
                Keep::Drop(reason) => self.notes.push(PlanNote::Dropped {
                    replica: key.clone(),
                    slice: a.slice.clone(),
                    reason,
                }),
            }
        }
        // Re-creations come after every surviving instance is claimed, so a
        // re-created instance can never take the place of one that exists.
        for (ri, a, pos, profile) in deferred {
            match self.recreate(a, pos, profile) {
                Some(assignment) => self.outcomes[ri] = Outcome::Done(assignment),
                None => self.notes.push(PlanNote::Dropped {
                    replica: a.replica.clone(),
                    slice: a.slice.clone(),
                    reason: DropReason::InstanceGone,
                }),
            }
        }
    }

    fn keep_one(&mut self, a: &Assignment, req: &GpuRequest) -> Keep {
        let Some(level) = req.chain().nth(usize::from(a.fallback_depth)) else {
            return Keep::Drop(DropReason::RequestChanged);
        };
        if !slice_matches(&level.kind, &a.slice) {
            return Keep::Drop(DropReason::RequestChanged);
        }
        let Some(pos) = self
            .gpus
            .iter()
            .position(|g| g.info.uuid == a.slice.gpu_uuid())
        else {
            return Keep::Drop(DropReason::GpuGone);
        };
        let g = &self.gpus[pos];
        if let Some(reason) = kind_refusal(g, &level.kind) {
            return Keep::Drop(DropReason::Refused(reason));
        }
        let Some(kind) = WholeKind::of(&level.kind) else {
            return self.keep_mig(a, pos);
        };
        if let Some(reason) =
            whole_refusal(g, &self.whole[pos], kind, self.settings.max_mps_clients)
        {
            return Keep::Drop(DropReason::Refused(reason));
        }
        self.whole[pos].take(kind, &a.replica);
        Keep::Done(Assignment {
            replica: a.replica.clone(),
            slice: kind.slice(g.info),
            fallback_depth: a.fallback_depth,
        })
    }

    fn keep_mig(&mut self, a: &Assignment, pos: usize) -> Keep {
        let Slice::Mig {
            profile,
            placement_start,
            gi_id,
            ..
        } = &a.slice
        else {
            return Keep::Drop(DropReason::RequestChanged);
        };
        let g = &self.gpus[pos];
        let Some((p, gp)) = MigProfileName::parse(profile)
            .ok()
            .and_then(|name| g.profile(&name))
        else {
            return Keep::Drop(DropReason::RequestChanged);
        };
        let keep = &mut self.mig[pos];
        let instances = g.instances();
        let same_place = |k: usize, i: &MigInstance| {
            !keep.claimed[k] && i.profile_id == gp.id && i.placement_start == *placement_start
        };
        let found = instances
            .iter()
            .enumerate()
            .position(|(k, i)| same_place(k, i) && gi_id.is_some_and(|id| id == i.gi_id))
            .or_else(|| {
                instances
                    .iter()
                    .enumerate()
                    .position(|(k, i)| same_place(k, i))
            });
        let Some(k) = found else {
            return Keep::Recreate { pos, profile: p };
        };
        keep.claimed[k] = true;
        keep.fixed.push(FixedInst {
            profile: Some(p),
            start: *placement_start,
            size: gp.memory_slices,
            compute: gp.compute_slices,
            holder: FixedHolder::Replica(a.replica.clone()),
        });
        let inst = &instances[k];
        Keep::Done(Assignment {
            replica: a.replica.clone(),
            slice: Slice::Mig {
                gpu_index: g.info.index,
                gpu_uuid: g.info.uuid.clone(),
                profile: profile.clone(),
                profile_id: gp.id,
                placement_start: *placement_start,
                gi_id: Some(inst.gi_id),
                ci_id: inst.ci_id,
                device_uuid: inst.device_uuid.clone(),
            },
            fallback_depth: a.fallback_depth,
        })
    }

    /// Re-creates a kept replica's vanished instance at its old placement,
    /// if that placement is valid and free.
    fn recreate(&mut self, a: &Assignment, pos: usize, p: usize) -> Option<Assignment> {
        let Slice::Mig {
            profile,
            placement_start: start,
            ..
        } = &a.slice
        else {
            return None;
        };
        let g = &self.gpus[pos];
        let gp = g.profiles[p].1;
        let (memory_slices, compute_slices) = g.geometry()?;
        let start = *start;
        if !gp.placements.contains(&start)
            || u16::from(start) + u16::from(gp.memory_slices) > u16::from(memory_slices)
        {
            return None;
        }
        let keep = &self.mig[pos];
        let size = gp.memory_slices;
        let mut count = 1u32;
        let mut compute = u32::from(gp.compute_slices);
        for f in &keep.fixed {
            if range_overlaps(f.start, f.size, start, size) {
                return None;
            }
            count += u32::from(f.profile == Some(p));
            compute += u32::from(f.compute);
        }
        // Instances that are not ours stay; our unused ones may go.
        for (k, i) in g.instances().iter().enumerate() {
            if keep.claimed[k] || i.owned {
                continue;
            }
            if range_overlaps(i.placement_start, i.placement_size, start, size) {
                return None;
            }
            count += u32::from(i.profile_id == gp.id);
            compute += g
                .profile_by_id(i.profile_id)
                .map_or(0, |(_, q)| u32::from(q.compute_slices));
        }
        if count > u32::from(gp.max_instances) || compute > u32::from(compute_slices) {
            return None;
        }
        self.mig[pos].fixed.push(FixedInst {
            profile: Some(p),
            start,
            size,
            compute: gp.compute_slices,
            holder: FixedHolder::Replica(a.replica.clone()),
        });
        self.creates.push(MigCreate {
            gpu_index: g.info.index,
            gpu_uuid: g.info.uuid.clone(),
            profile: profile.clone(),
            profile_id: gp.id,
            placement_start: start,
            placement_size: size,
            replica: a.replica.clone(),
        });
        self.notes.push(PlanNote::Reapplied {
            replica: a.replica.clone(),
            gpu_index: g.info.index,
            profile: profile.clone(),
            placement_start: start,
        });
        Some(Assignment {
            replica: a.replica.clone(),
            slice: Slice::Mig {
                gpu_index: g.info.index,
                gpu_uuid: g.info.uuid.clone(),
                profile: profile.clone(),
                profile_id: gp.id,
                placement_start: start,
                gi_id: None,
                ci_id: None,
                device_uuid: None,
            },
            fallback_depth: a.fallback_depth,
        })
    }

    // -- New requests -------------------------------------------------------

    fn engine_gpus(&self) -> Vec<EngineGpu> {
        let mut out = Vec::new();
        for (pos, g) in self.gpus.iter().enumerate() {
            if !g.mig_eligible() {
                continue;
            }
            let Some((memory_slices, compute_slices)) = g.geometry() else {
                continue;
            };
            let profiles = g
                .profiles
                .iter()
                .map(|(name, gp)| Prof {
                    name: name.clone(),
                    id: gp.id,
                    compute: gp.compute_slices,
                    mem: gp.memory_slices,
                    max: gp.max_instances,
                    placements: gp
                        .placements
                        .iter()
                        .copied()
                        .filter(|&s| {
                            u16::from(s) + u16::from(gp.memory_slices) <= u16::from(memory_slices)
                        })
                        .collect(),
                })
                .collect();
            let keep = &self.mig[pos];
            let mut fixed = keep.fixed.clone();
            let (mut foreign, mut owned_free) = (Vec::new(), Vec::new());
            for (k, i) in g.instances().iter().enumerate() {
                if keep.claimed[k] {
                    continue;
                }
                let known = g.profile_by_id(i.profile_id);
                match (known, i.owned) {
                    (Some((p, _)), owned) => {
                        let free = FreeInst {
                            profile: p,
                            start: i.placement_start,
                            gi_id: i.gi_id,
                            inventory: k,
                        };
                        if owned {
                            owned_free.push(free);
                        } else {
                            foreign.push(free);
                        }
                    }
                    // Not ours and of a profile we cannot name: it stays
                    // where it is, in the way.
                    (None, false) => fixed.push(FixedInst {
                        profile: None,
                        start: i.placement_start,
                        size: i.placement_size,
                        compute: 0,
                        holder: FixedHolder::Foreign { gi_id: i.gi_id },
                    }),
                    (None, true) => {}
                }
            }
            out.push(EngineGpu {
                pos,
                model: g.info.name.clone(),
                memory_slices,
                compute_slices,
                profiles,
                fixed,
                foreign,
                owned_free,
            });
        }
        out
    }

    fn plan_pending(&mut self, engine: &mut MigEngine) {
        for ri in 0..self.requests.len() {
            if !matches!(self.outcomes[ri], Outcome::Pending) {
                continue;
            }
            let (key, req) = self.requests[ri];
            let mut attempts = Vec::new();
            let mut outcome = None;
            for (depth, level) in req.chain().enumerate() {
                let depth = u8::try_from(depth).unwrap_or(u8::MAX);
                match (&level.kind, WholeKind::of(&level.kind)) {
                    (_, Some(kind)) => match self.choose_whole(kind) {
                        Some(pos) => {
                            self.whole[pos].take(kind, key);
                            outcome = Some(Outcome::Done(Assignment {
                                replica: key.clone(),
                                slice: kind.slice(self.gpus[pos].info),
                                fallback_depth: depth,
                            }));
                            break;
                        }
                        None => attempts.push(Attempt {
                            wanted: level.kind.clone(),
                            refusals: self.whole_refusals(kind, &level.kind),
                        }),
                    },
                    (SliceRequest::Mig { profile }, None) => {
                        if engine.try_add(ri, profile) {
                            outcome = Some(Outcome::Mig(depth));
                            break;
                        }
                        let generation = engine.generation();
                        let refusals = match self.mig_refusal_cache.get(profile) {
                            Some((g, r)) if *g == generation => r.clone(),
                            _ => {
                                let r = self.mig_refusals(engine, profile);
                                self.mig_refusal_cache
                                    .insert(profile.clone(), (generation, r.clone()));
                                r
                            }
                        };
                        attempts.push(Attempt {
                            wanted: level.kind.clone(),
                            refusals,
                        });
                    }
                    (_, None) => {}
                }
            }
            self.outcomes[ri] = outcome.unwrap_or_else(|| {
                Outcome::Failed(PlanError {
                    replica: key.clone(),
                    request: req.clone(),
                    attempts,
                })
            });
        }
    }

    fn choose_whole(&self, kind: WholeKind) -> Option<usize> {
        let max = self.settings.max_mps_clients;
        let mut best: Option<((u8, u64, u32), usize)> = None;
        for (pos, g) in self.gpus.iter().enumerate() {
            let w = &self.whole[pos];
            let request = match kind {
                WholeKind::Mps { memory, compute } => SliceRequest::Mps { memory, compute },
                WholeKind::Exclusive => SliceRequest::Exclusive,
                WholeKind::TimeSlice => SliceRequest::TimeSlice,
            };
            if kind_refusal(g, &request).is_some() || whole_refusal(g, w, kind, max).is_some() {
                continue;
            }
            let rank = match kind {
                WholeKind::Mps { memory, .. } => {
                    let after = w.mps_memory + memory.bytes();
                    let capacity = g.mps_capacity().bytes();
                    if after <= capacity {
                        (0, capacity - after, g.info.index)
                    } else {
                        (1, after - capacity, g.info.index)
                    }
                }
                WholeKind::Exclusive => (
                    u8::from(g.sharing != Some(Sharing::Exclusive)),
                    0,
                    g.info.index,
                ),
                WholeKind::TimeSlice => (0, u64::from(w.time_slice), g.info.index),
            };
            if best.as_ref().is_none_or(|(r, _)| rank < *r) {
                best = Some((rank, pos));
            }
        }
        best.map(|(_, pos)| pos)
    }

    fn whole_refusals(&self, kind: WholeKind, request: &SliceRequest) -> Vec<Refusal> {
        let max = self.settings.max_mps_clients;
        self.gpus
            .iter()
            .zip(&self.whole)
            .filter_map(|(g, w)| {
                kind_refusal(g, request)
                    .or_else(|| whole_refusal(g, w, kind, max))
                    .map(|r| g.refusal(r))
            })
            .collect()
    }

    fn mig_refusals(&self, engine: &mut MigEngine, profile: &MigProfileName) -> Vec<Refusal> {
        let request = SliceRequest::Mig {
            profile: profile.clone(),
        };
        let mut out = Vec::new();
        for (pos, g) in self.gpus.iter().enumerate() {
            if let Some(r) = kind_refusal(g, &request) {
                out.push(g.refusal(r));
                continue;
            }
            let name = profile.to_string();
            let reason = match engine.shortfall(pos, profile) {
                Some(Shortfall::MaxInstances { max }) => {
                    RefusalReason::MigMaxInstances { profile: name, max }
                }
                Some(Shortfall::Compute {
                    used,
                    total,
                    needed,
                }) => RefusalReason::MigComputeFull {
                    profile: name,
                    used,
                    total,
                    needed,
                },
                Some(Shortfall::NoPlacement { occupants }) => RefusalReason::MigNoPlacement {
                    profile: name,
                    occupants: occupants
                        .into_iter()
                        .map(|(profile, placement_start, holder)| {
                            let (holder, gi_id) = match holder {
                                Holder::Replica(r) => (Some(r), None),
                                Holder::New(ri) => {
                                    (self.requests.get(ri).map(|(k, _)| (*k).clone()), None)
                                }
                                Holder::Foreign { gi_id } => (None, Some(gi_id)),
                            };
                            Occupant {
                                profile,
                                placement_start,
                                holder,
                                gi_id,
                            }
                        })
                        .collect(),
                },
                None => RefusalReason::MigNoPlacement {
                    profile: name,
                    occupants: Vec::new(),
                },
            };
            out.push(g.refusal(reason));
        }
        out
    }

    // -- Output ---------------------------------------------------------------

    fn finish(mut self, mut engine: MigEngine) -> Plan {
        let mut reused: Vec<Vec<bool>> = self
            .gpus
            .iter()
            .map(|g| vec![false; g.instances().len()])
            .collect();
        for pl in engine.finish() {
            let Some(Outcome::Mig(depth)) = self.outcomes.get(pl.req) else {
                continue;
            };
            let depth = *depth;
            let g = &self.gpus[pl.pos];
            let (name, gp) = &g.profiles[pl.profile];
            let replica = self.requests[pl.req].0.clone();
            let existing = pl.inventory.and_then(|k| g.instances().get(k));
            if let Some(k) = pl.inventory {
                reused[pl.pos][k] = true;
            } else {
                self.creates.push(MigCreate {
                    gpu_index: g.info.index,
                    gpu_uuid: g.info.uuid.clone(),
                    profile: name.to_string(),
                    profile_id: gp.id,
                    placement_start: pl.start,
                    placement_size: gp.memory_slices,
                    replica: replica.clone(),
                });
            }
            self.outcomes[pl.req] = Outcome::Done(Assignment {
                replica,
                slice: Slice::Mig {
                    gpu_index: g.info.index,
                    gpu_uuid: g.info.uuid.clone(),
                    profile: name.to_string(),
                    profile_id: gp.id,
                    placement_start: pl.start,
                    gi_id: existing.map(|i| i.gi_id),
                    ci_id: existing.and_then(|i| i.ci_id),
                    device_uuid: existing.and_then(|i| i.device_uuid.clone()),
                },
                fallback_depth: depth,
            });
        }

        let mut destroy = Vec::new();
        for (pos, g) in self.gpus.iter().enumerate() {
            if g.info.lost {
                continue;
            }
            for (k, i) in g.instances().iter().enumerate() {
                if i.owned && !self.mig[pos].claimed[k] && !reused[pos][k] {
                    destroy.push(MigDestroy {
                        gpu_index: g.info.index,
                        gpu_uuid: g.info.uuid.clone(),
                        gi_id: i.gi_id,
                        profile_id: i.profile_id,
                        placement_start: i.placement_start,
                        placement_size: i.placement_size,
                    });
                }
            }
        }
        destroy.sort_by_key(|d| (d.gpu_index, d.placement_start, d.gi_id));
        self.creates
            .sort_by_key(|c| (c.gpu_index, c.placement_start));

        let mps = self
            .gpus
            .iter()
            .zip(&self.whole)
            .filter(|(_, w)| w.mps_clients > 0)
            .map(|(g, w)| MpsTotals {
                gpu_index: g.info.index,
                gpu_uuid: g.info.uuid.clone(),
                clients: w.mps_clients,
                memory: ByteSize(w.mps_memory),
                compute_basis_points: w.mps_compute,
            })
            .collect();

        for &ri in engine.cut_short() {
            if let Some((key, _)) = self.requests.get(ri) {
                self.notes.push(PlanNote::SearchCutShort {
                    replica: (*key).clone(),
                });
            }
        }

        let mut assignments = Vec::new();
        let mut errors = Vec::new();
        let outcomes = std::mem::take(&mut self.outcomes);
        for (ri, outcome) in outcomes.into_iter().enumerate() {
            match outcome {
                Outcome::Done(a) => assignments.push(a),
                Outcome::Failed(e) => errors.push(e),
                // INVARIANT: the engine places every request it accepted
                // (and every request has an outcome); should that ever
                // break, the replica is reported, never silently dropped.
                Outcome::Mig(_) | Outcome::Pending => {
                    let (key, req) = self.requests[ri];
                    let attempts = req
                        .chain()
                        .filter_map(|level| match &level.kind {
                            SliceRequest::Mig { profile } => Some(Attempt {
                                wanted: level.kind.clone(),
                                refusals: self.mig_refusals(&mut engine, profile),
                            }),
                            _ => None,
                        })
                        .collect();
                    errors.push(PlanError {
                        replica: key.clone(),
                        request: req.clone(),
                        attempts,
                    });
                }
            }
        }

        let reserves = self
            .gpus
            .iter()
            .filter(|g| !g.info.lost && !g.info.mig.is_enabled())
            .map(|g| ReserveNote {
                gpu_index: g.info.index,
                driver: g.driver,
                policy: g.reserve,
            })
            .collect();

        Plan {
            assignments,
            create: self.creates,
            destroy,
            mps,
            errors,
            notes: self.notes,
            reserves,
        }
    }
}

/// The GPU requests of every replica of a config, in priority order
/// (declaration order: groups, then agents, then replicas).
pub fn config_requests(config: &crate::model::HostConfig) -> Vec<(ReplicaKey, GpuRequest)> {
    config
        .agents()
        .filter_map(|a| a.gpu.as_ref().map(|g| (a, g)))
        .flat_map(|(a, g)| (0..a.replicas).map(move |i| (ReplicaKey::new(&a.name, i), g.clone())))
        .collect()
}
