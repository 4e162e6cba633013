//! GPU requests, the facts of known GPU classes, and the inventory and
//! assignment types the slice planner works on.
//!
//! The catalog holds NVIDIA's published MIG geometry (profiles, memory
//! slices, placements) for validating configs without hardware. At run time
//! the planner trusts the inventory NVML reports, never the catalog.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::units::{ByteSize, Percent};

/// What an agent asks for, with an optional fallback tried when the
/// request cannot be met on any GPU of the host.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GpuRequest {
    pub kind: SliceRequest,
    pub fallback: Option<Box<GpuRequest>>,
}

impl GpuRequest {
    pub fn new(kind: SliceRequest) -> Self {
        GpuRequest {
            kind,
            fallback: None,
        }
    }

    pub fn with_fallback(mut self, fallback: GpuRequest) -> Self {
        self.fallback = Some(Box::new(fallback));
        self
    }

    /// The request followed by its fallbacks, in the order they are tried.
    pub fn chain(&self) -> impl Iterator<Item = &GpuRequest> {
        std::iter::successors(Some(self), |r| r.fallback.as_deref())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SliceRequest {
    /// A MIG GPU instance of this profile (one compute instance spanning it).
    Mig { profile: MigProfileName },
    /// An MPS client with a pinned-memory limit and an active-thread share.
    Mps { memory: ByteSize, compute: Percent },
    /// A whole GPU, shared with nobody.
    Exclusive,
    /// A whole GPU shared by time slicing, without isolation.
    TimeSlice,
}

impl SliceRequest {
    pub fn kind_name(&self) -> &'static str {
        match self {
            SliceRequest::Mig { .. } => "mig",
            SliceRequest::Mps { .. } => "mps",
            SliceRequest::Exclusive => "exclusive",
            SliceRequest::TimeSlice => "time-slice",
        }
    }
}

impl fmt::Display for SliceRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SliceRequest::Mig { profile } => write!(f, "mig {profile}"),
            SliceRequest::Mps { memory, compute } => {
                write!(f, "mps memory={memory} compute={compute}")
            }
            SliceRequest::Exclusive => f.write_str("exclusive"),
            SliceRequest::TimeSlice => f.write_str("time-slice"),
        }
    }
}

/// A GPU-instance profile name such as `1g.10gb` or `1g.5gb+me`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MigProfileName {
    pub compute_slices: u8,
    pub memory_gb: u32,
    /// Media extensions (`+me`): the instance also gets the decoders.
    pub media: bool,
    /// Graphics extensions (`+gfx`) on RTX PRO Blackwell.
    pub graphics: bool,
}

/// Text that is not a MIG profile name (its words are the config
/// diagnostics').
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotAProfile {
    pub text: String,
}

impl MigProfileName {
    /// Parses `<N>g.<M>gb[+me|+gfx]`, with an optional `MIG ` prefix.
    pub fn parse(text: &str) -> Result<Self, NotAProfile> {
        let s = text.trim();
        let s = s.strip_prefix("MIG ").unwrap_or(s);
        let bad = || NotAProfile {
            text: text.to_string(),
        };
        let (body, media, graphics) = if let Some(b) = s.strip_suffix("+me") {
            (b, true, false)
        } else if let Some(b) = s.strip_suffix("+gfx") {
            (b, false, true)
        } else {
            (s, false, false)
        };
        let (c, m) = body.split_once('.').ok_or_else(bad)?;
        let c = c.strip_suffix('g').ok_or_else(bad)?;
        let m = m.strip_suffix("gb").ok_or_else(bad)?;
        let compute_slices: u8 = c.parse().map_err(|_| bad())?;
        let memory_gb: u32 = m.parse().map_err(|_| bad())?;
        if compute_slices == 0 || memory_gb == 0 {
            return Err(bad());
        }
        Ok(MigProfileName {
            compute_slices,
            memory_gb,
            media,
            graphics,
        })
    }
}

impl fmt::Display for MigProfileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}g.{}gb", self.compute_slices, self.memory_gb)?;
        if self.media {
            f.write_str("+me")?;
        }
        if self.graphics {
            f.write_str("+gfx")?;
        }
        Ok(())
    }
}

impl Serialize for MigProfileName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MigProfileName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        MigProfileName::parse(&s).map_err(|_| {
            serde::de::Error::invalid_value(
                serde::de::Unexpected::Str(&s),
                &"a MIG profile name such as 1g.10gb",
            )
        })
    }
}

/// One GPU-instance profile of a GPU class (NVIDIA's published geometry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogProfile {
    pub name: &'static str,
    /// The profile id NVML reports and creation calls take.
    pub id: u32,
    pub compute_slices: u8,
    pub memory_slices: u8,
    pub memory_mib: u64,
    pub max_instances: u8,
    /// Possible placement starts, in memory-slice units; size is `memory_slices`.
    pub placements: &'static [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogMig {
    pub memory_slices: u8,
    pub compute_slices: u8,
    pub profiles: &'static [CatalogProfile],
}

/// A GPU product the orchestrator knows by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuClass {
    /// The product name as NVML reports it.
    pub name: &'static str,
    pub memory_mib: u64,
    pub mig: Option<CatalogMig>,
}

impl GpuClass {
    pub fn profile(&self, name: &MigProfileName) -> Option<&'static CatalogProfile> {
        let wanted = name.to_string();
        self.mig
            .as_ref()
            .and_then(|m| m.profiles.iter().find(|p| p.name == wanted))
    }
}

const fn prof(
    name: &'static str,
    id: u32,
    compute_slices: u8,
    memory_slices: u8,
    memory_mib: u64,
    max_instances: u8,
    placements: &'static [u8],
) -> CatalogProfile {
    CatalogProfile {
        name,
        id,
        compute_slices,
        memory_slices,
        memory_mib,
        max_instances,
        placements,
    }
}

/// The seven-compute-slice, eight-memory-slice geometry shared by A100,
/// H100, H200 and B200; only the memory per slice differs.
macro_rules! seven_slice {
    ($one:expr, $one_me:expr, $one_double:expr, $two:expr, $three:expr, $four:expr, $seven:expr, $slice_mib:expr) => {
        CatalogMig {
            memory_slices: 8,
            compute_slices: 7,
            profiles: &[
                prof($one, 19, 1, 1, $slice_mib, 7, &[0, 1, 2, 3, 4, 5, 6]),
                prof($one_me, 20, 1, 1, $slice_mib, 1, &[0, 1, 2, 3, 4, 5, 6]),
                prof($one_double, 15, 1, 2, 2 * $slice_mib, 4, &[0, 2, 4, 6]),
                prof($two, 14, 2, 2, 2 * $slice_mib, 3, &[0, 2, 4]),
                prof($three, 9, 3, 4, 4 * $slice_mib, 2, &[0, 4]),
                prof($four, 5, 4, 4, 4 * $slice_mib, 1, &[0]),
                prof($seven, 0, 7, 8, 8 * $slice_mib, 1, &[0]),
            ],
        }
    };
}

/// GPU classes, by NVML product name. MIG geometry from NVIDIA's MIG user
/// guide; the memory of a profile is its memory slices times the slice size.
pub static CATALOG: &[GpuClass] = &[
    GpuClass {
        name: "NVIDIA GeForce RTX 3060",
        memory_mib: 12 * 1024,
        mig: None,
    },
    GpuClass {
        name: "NVIDIA GeForce RTX 4090",
        memory_mib: 24 * 1024,
        mig: None,
    },
    GpuClass {
        name: "NVIDIA GeForce RTX 5090",
        memory_mib: 32 * 1024,
        mig: None,
    },
    GpuClass {
        name: "NVIDIA A10",
        memory_mib: 24 * 1024,
        mig: None,
    },
    GpuClass {
        name: "NVIDIA L4",
        memory_mib: 24 * 1024,
        mig: None,
    },
    GpuClass {
        name: "NVIDIA A40",
        memory_mib: 48 * 1024,
        mig: None,
    },
    GpuClass {
        name: "NVIDIA L40S",
        memory_mib: 48 * 1024,
        mig: None,
    },
    GpuClass {
        name: "NVIDIA A30",
        memory_mib: 24 * 1024,
        mig: Some(CatalogMig {
            memory_slices: 4,
            compute_slices: 4,
            profiles: &[
                prof("1g.6gb", 14, 1, 1, 6 * 1024, 4, &[0, 1, 2, 3]),
                prof("1g.6gb+me", 21, 1, 1, 6 * 1024, 1, &[0, 1, 2, 3]),
                prof("2g.12gb", 5, 2, 2, 12 * 1024, 2, &[0, 2]),
                prof("2g.12gb+me", 6, 2, 2, 12 * 1024, 1, &[0, 2]),
                prof("4g.24gb", 0, 4, 4, 24 * 1024, 1, &[0]),
            ],
        }),
    },
    GpuClass {
        name: "NVIDIA A100-SXM4-40GB",
        memory_mib: 40 * 1024,
        mig: Some(seven_slice!(
            "1g.5gb",
            "1g.5gb+me",
            "1g.10gb",
            "2g.10gb",
            "3g.20gb",
            "4g.20gb",
            "7g.40gb",
            5 * 1024
        )),
    },
    GpuClass {
        name: "NVIDIA A100-SXM4-80GB",
        memory_mib: 80 * 1024,
        mig: Some(seven_slice!(
            "1g.10gb",
            "1g.10gb+me",
            "1g.20gb",
            "2g.20gb",
            "3g.40gb",
            "4g.40gb",
            "7g.80gb",
            10 * 1024
        )),
    },
    GpuClass {
        name: "NVIDIA H100 80GB HBM3",
        memory_mib: 80 * 1024,
        mig: Some(seven_slice!(
            "1g.10gb",
            "1g.10gb+me",
            "1g.20gb",
            "2g.20gb",
            "3g.40gb",
            "4g.40gb",
            "7g.80gb",
            10 * 1024
        )),
    },
    GpuClass {
        name: "NVIDIA H100 NVL",
        memory_mib: 94 * 1024,
        mig: Some(seven_slice!(
            "1g.12gb",
            "1g.12gb+me",
            "1g.24gb",
            "2g.24gb",
            "3g.47gb",
            "4g.47gb",
            "7g.94gb",
            12 * 1024
        )),
    },
    GpuClass {
        name: "NVIDIA H200",
        memory_mib: 141 * 1024,
        mig: Some(seven_slice!(
            "1g.18gb",
            "1g.18gb+me",
            "1g.35gb",
            "2g.35gb",
            "3g.71gb",
            "4g.71gb",
            "7g.141gb",
            18 * 1024
        )),
    },
    GpuClass {
        name: "NVIDIA B200",
        memory_mib: 180 * 1024,
        mig: Some(seven_slice!(
            "1g.23gb",
            "1g.23gb+me",
            "1g.45gb",
            "2g.45gb",
            "3g.90gb",
            "4g.90gb",
            "7g.180gb",
            23 * 1024
        )),
    },
    GpuClass {
        name: "NVIDIA RTX PRO 6000 Blackwell Server Edition",
        memory_mib: 96 * 1024,
        mig: Some(CatalogMig {
            memory_slices: 4,
            compute_slices: 4,
            profiles: &[
                prof("1g.24gb", 14, 1, 1, 24 * 1024, 4, &[0, 1, 2, 3]),
                prof("2g.48gb", 5, 2, 2, 48 * 1024, 2, &[0, 2]),
                prof("4g.96gb", 0, 4, 4, 96 * 1024, 1, &[0]),
            ],
        }),
    },
];

/// The class with this NVML product name, if known.
pub fn class_by_name(name: &str) -> Option<&'static GpuClass> {
    CATALOG.iter().find(|c| c.name.eq_ignore_ascii_case(name))
}

/// Classes that offer this MIG profile.
pub fn classes_with_profile(p: &MigProfileName) -> Vec<&'static GpuClass> {
    CATALOG.iter().filter(|c| c.profile(p).is_some()).collect()
}

/// Every MIG profile name known to the catalog, sorted and deduplicated.
pub fn known_profile_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = CATALOG
        .iter()
        .filter_map(|c| c.mig.as_ref())
        .flat_map(|m| m.profiles.iter().map(|p| p.name))
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// The most memory any known GPU class has.
pub fn largest_memory() -> ByteSize {
    ByteSize::mib(CATALOG.iter().map(|c| c.memory_mib).max().unwrap_or(0))
}

// ---------------------------------------------------------------------------
// Inventory: what NVML reports, as plain data.
// ---------------------------------------------------------------------------

/// One physical GPU as the GPU adapter saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuInfo {
    pub index: u32,
    pub uuid: String,
    pub name: String,
    pub memory_total: ByteSize,
    pub mig: MigState,
    /// True when NVML reports the GPU lost; nothing is placed on it.
    pub lost: bool,
    /// Memory the driver and firmware keep for themselves, where NVML
    /// reports it (`nvmlMemory_v2_t.reserved`); `None` where it does not,
    /// and the planner estimates it.
    #[serde(default)]
    pub reserved: Option<ByteSize>,
}

/// MIG mode and layout of one GPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "mode")]
pub enum MigState {
    /// The GPU has no MIG (every GeForce card, A10, L4, ...).
    Unsupported,
    /// MIG capable, currently off; `pending_enable` when a reset will turn it on.
    Disabled { pending_enable: bool },
    /// MIG on: the profiles the GPU offers and the instances that exist.
    Enabled {
        pending_disable: bool,
        memory_slices: u8,
        compute_slices: u8,
        profiles: Vec<GiProfile>,
        instances: Vec<MigInstance>,
    },
}

impl MigState {
    pub fn is_enabled(&self) -> bool {
        matches!(self, MigState::Enabled { .. })
    }
}

/// A GPU-instance profile as NVML reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GiProfile {
    pub id: u32,
    pub name: String,
    pub compute_slices: u8,
    pub memory_slices: u8,
    pub memory: ByteSize,
    pub max_instances: u8,
    /// Possible placement starts (size is `memory_slices`).
    pub placements: Vec<u8>,
}

/// An existing GPU instance (with its compute instance, if any).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigInstance {
    pub gi_id: u32,
    pub profile_id: u32,
    pub placement_start: u8,
    pub placement_size: u8,
    /// The compute instance id, when one exists in the GPU instance.
    pub ci_id: Option<u32>,
    /// `MIG-<uuid>` of the MIG device, when a compute instance exists.
    pub device_uuid: Option<String>,
    /// Created by this orchestrator (from its state): only these may be destroyed.
    pub owned: bool,
}

impl GpuInfo {
    /// An inventory entry for a catalog class, with MIG enabled and no
    /// instances when the class has MIG. For tests and `plan` dry runs.
    pub fn from_class(index: u32, uuid: &str, class: &GpuClass, mig_enabled: bool) -> Self {
        let mig = match (&class.mig, mig_enabled) {
            (None, _) => MigState::Unsupported,
            (Some(_), false) => MigState::Disabled {
                pending_enable: false,
            },
            (Some(m), true) => MigState::Enabled {
                pending_disable: false,
                memory_slices: m.memory_slices,
                compute_slices: m.compute_slices,
                profiles: m
                    .profiles
                    .iter()
                    .map(|p| GiProfile {
                        id: p.id,
                        name: p.name.to_string(),
                        compute_slices: p.compute_slices,
                        memory_slices: p.memory_slices,
                        memory: ByteSize::mib(p.memory_mib),
                        max_instances: p.max_instances,
                        placements: p.placements.to_vec(),
                    })
                    .collect(),
                instances: Vec::new(),
            },
        };
        GpuInfo {
            index,
            uuid: uuid.to_string(),
            name: class.name.to_string(),
            memory_total: ByteSize::mib(class.memory_mib),
            mig,
            lost: false,
            reserved: None,
        }
    }
}

// ---------------------------------------------------------------------------
// Assignments: what the planner decides, as data for the container layer.
// ---------------------------------------------------------------------------

/// Identifies one replica of one agent on a host.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ReplicaKey {
    pub agent: String,
    pub replica: u32,
}

impl ReplicaKey {
    pub fn new(agent: impl Into<String>, replica: u32) -> Self {
        ReplicaKey {
            agent: agent.into(),
            replica,
        }
    }
}

impl fmt::Display for ReplicaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.replica == 0 {
            f.write_str(&self.agent)
        } else {
            write!(f, "{}#{}", self.agent, self.replica)
        }
    }
}

/// A slice of a GPU given to one replica.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Slice {
    Mig {
        gpu_index: u32,
        gpu_uuid: String,
        profile: String,
        profile_id: u32,
        placement_start: u8,
        /// Known once the instance exists.
        gi_id: Option<u32>,
        ci_id: Option<u32>,
        device_uuid: Option<String>,
    },
    Mps {
        gpu_index: u32,
        gpu_uuid: String,
        memory: ByteSize,
        compute: Percent,
    },
    Exclusive {
        gpu_index: u32,
        gpu_uuid: String,
    },
    TimeSlice {
        gpu_index: u32,
        gpu_uuid: String,
    },
}

impl Slice {
    pub fn gpu_uuid(&self) -> &str {
        match self {
            Slice::Mig { gpu_uuid, .. }
            | Slice::Mps { gpu_uuid, .. }
            | Slice::Exclusive { gpu_uuid, .. }
            | Slice::TimeSlice { gpu_uuid, .. } => gpu_uuid,
        }
    }

    pub fn gpu_index(&self) -> u32 {
        match self {
            Slice::Mig { gpu_index, .. }
            | Slice::Mps { gpu_index, .. }
            | Slice::Exclusive { gpu_index, .. }
            | Slice::TimeSlice { gpu_index, .. } => *gpu_index,
        }
    }

    pub fn kind_name(&self) -> &'static str {
        match self {
            Slice::Mig { .. } => "mig",
            Slice::Mps { .. } => "mps",
            Slice::Exclusive { .. } => "exclusive",
            Slice::TimeSlice { .. } => "time-slice",
        }
    }

    /// The value of `ORCH_GPU_SLICE` for a container holding this slice.
    pub fn describe(&self) -> String {
        match self {
            Slice::Mig {
                profile,
                device_uuid,
                gpu_uuid,
                ..
            } => match device_uuid {
                Some(u) => format!("mig:{u}:{profile}"),
                None => format!("mig:{gpu_uuid}:{profile}"),
            },
            Slice::Mps {
                gpu_uuid,
                memory,
                compute,
                ..
            } => format!("mps:{gpu_uuid}:memory={memory},compute={compute}"),
            Slice::Exclusive { gpu_uuid, .. } => format!("exclusive:{gpu_uuid}"),
            Slice::TimeSlice { gpu_uuid, .. } => format!("time-slice:{gpu_uuid}"),
        }
    }

    /// The slice a container holds, read back from its [`describe`](Self::describe)
    /// text (the `io.orchestrator.gpu-slice` label) against the inventory:
    /// how a daemon that lost its state learns what running agents use.
    /// `None` when the text or the GPU it names is not recognised, or a MIG
    /// device is not (or no longer) in the inventory; such a replica is
    /// planned as if new.
    pub fn from_description(text: &str, gpus: &[GpuInfo]) -> Option<Slice> {
        let (kind, rest) = text.split_once(':')?;
        let gpu_by_uuid = |uuid: &str| gpus.iter().find(|g| g.uuid == uuid && !g.lost);
        match kind {
            "mig" => {
                let (device, profile) = rest.split_once(':')?;
                gpus.iter().filter(|g| !g.lost).find_map(|g| {
                    let MigState::Enabled { instances, .. } = &g.mig else {
                        return None;
                    };
                    let i = instances
                        .iter()
                        .find(|i| i.device_uuid.as_deref() == Some(device))?;
                    Some(Slice::Mig {
                        gpu_index: g.index,
                        gpu_uuid: g.uuid.clone(),
                        profile: profile.to_string(),
                        profile_id: i.profile_id,
                        placement_start: i.placement_start,
                        gi_id: Some(i.gi_id),
                        ci_id: i.ci_id,
                        device_uuid: i.device_uuid.clone(),
                    })
                })
            }
            "mps" => {
                let (uuid, shares) = rest.split_once(':')?;
                let (memory, compute) = shares.split_once(',')?;
                let g = gpu_by_uuid(uuid)?;
                Some(Slice::Mps {
                    gpu_index: g.index,
                    gpu_uuid: g.uuid.clone(),
                    memory: ByteSize::parse(memory.strip_prefix("memory=")?).ok()?,
                    compute: Percent::parse(compute.strip_prefix("compute=")?).ok()?,
                })
            }
            "exclusive" => gpu_by_uuid(rest).map(|g| Slice::Exclusive {
                gpu_index: g.index,
                gpu_uuid: g.uuid.clone(),
            }),
            "time-slice" => gpu_by_uuid(rest).map(|g| Slice::TimeSlice {
                gpu_index: g.index,
                gpu_uuid: g.uuid.clone(),
            }),
            _ => None,
        }
    }
}

impl fmt::Display for Slice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Slice::Mig {
                gpu_index,
                profile,
                placement_start,
                ..
            } => write!(f, "GPU {gpu_index} mig {profile} @{placement_start}"),
            Slice::Mps {
                gpu_index,
                memory,
                compute,
                ..
            } => write!(f, "GPU {gpu_index} mps {memory} {compute}"),
            Slice::Exclusive { gpu_index, .. } => write!(f, "GPU {gpu_index} exclusive"),
            Slice::TimeSlice { gpu_index, .. } => write!(f, "GPU {gpu_index} time-slice"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub replica: ReplicaKey,
    pub slice: Slice,
    /// 0 when the primary request was met, n when the n-th fallback was.
    pub fallback_depth: u8,
}

/// Readings of one GPU at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Telemetry {
    /// Device memory in use.
    pub memory_used: Option<ByteSize>,
    /// Percent of time a kernel ran in the last sample period.
    pub gpu_utilization: Option<u32>,
    /// Percent of time device memory was read or written.
    pub memory_utilization: Option<u32>,
    /// Core temperature, degrees Celsius.
    pub temperature_c: Option<u32>,
    /// Board power draw, milliwatts.
    pub power_mw: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slice_is_read_back_from_its_description_and_the_inventory() {
        let a100 = class_by_name("NVIDIA A100-SXM4-40GB").unwrap();
        let rtx = class_by_name("NVIDIA GeForce RTX 4090").unwrap();
        let mut mig_gpu = GpuInfo::from_class(0, "GPU-a100", a100, true);
        if let MigState::Enabled { instances, .. } = &mut mig_gpu.mig {
            instances.push(MigInstance {
                gi_id: 5,
                profile_id: 19,
                placement_start: 6,
                placement_size: 1,
                ci_id: Some(0),
                device_uuid: Some("MIG-dev-5".into()),
                owned: false,
            });
        }
        let gpus = vec![mig_gpu, GpuInfo::from_class(1, "GPU-4090", rtx, false)];
        let slices = [
            Slice::Mig {
                gpu_index: 0,
                gpu_uuid: "GPU-a100".into(),
                profile: "1g.5gb".into(),
                profile_id: 19,
                placement_start: 6,
                gi_id: Some(5),
                ci_id: Some(0),
                device_uuid: Some("MIG-dev-5".into()),
            },
            Slice::Mps {
                gpu_index: 1,
                gpu_uuid: "GPU-4090".into(),
                memory: ByteSize::mib(1536),
                compute: Percent::parse("12.5%").unwrap(),
            },
            Slice::Exclusive {
                gpu_index: 1,
                gpu_uuid: "GPU-4090".into(),
            },
            Slice::TimeSlice {
                gpu_index: 0,
                gpu_uuid: "GPU-a100".into(),
            },
        ];
        for slice in slices {
            assert_eq!(
                Slice::from_description(&slice.describe(), &gpus),
                Some(slice.clone()),
                "{}",
                slice.describe()
            );
        }
        // What cannot be placed on this inventory is not guessed.
        for text in [
            "mig:MIG-gone:1g.5gb",
            "mig:GPU-a100:1g.5gb",
            "mps:GPU-other:memory=1g,compute=10%",
            "mps:GPU-4090:memory=lots,compute=10%",
            "exclusive:GPU-other",
            "whole:GPU-4090",
            "",
        ] {
            assert_eq!(Slice::from_description(text, &gpus), None, "{text}");
        }
    }

    #[test]
    fn profile_names_round_trip() {
        for s in ["1g.10gb", "1g.5gb+me", "7g.80gb", "4g.96gb", "1g.24gb+gfx"] {
            assert_eq!(MigProfileName::parse(s).unwrap().to_string(), s);
        }
        assert_eq!(
            MigProfileName::parse("MIG 3g.40gb").unwrap().to_string(),
            "3g.40gb"
        );
        for bad in [
            "",
            "1g",
            "1g.10",
            "g.10gb",
            "0g.10gb",
            "1x.10gb",
            "1g.10gb+xx",
            "1g.0gb",
        ] {
            assert!(MigProfileName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn catalog_geometry_is_consistent() {
        for class in CATALOG {
            let Some(mig) = &class.mig else { continue };
            for p in mig.profiles {
                let parsed = MigProfileName::parse(p.name).unwrap();
                assert_eq!(parsed.compute_slices, p.compute_slices, "{}", p.name);
                assert!(p.compute_slices <= mig.compute_slices);
                for &start in p.placements {
                    assert!(
                        start + p.memory_slices <= mig.memory_slices,
                        "{} {} placement {start} overflows",
                        class.name,
                        p.name
                    );
                }
                assert!(usize::from(p.max_instances) <= p.placements.len());
            }
        }
        let a100 = class_by_name("NVIDIA A100-SXM4-40GB").unwrap();
        let p = a100
            .profile(&MigProfileName::parse("1g.10gb").unwrap())
            .unwrap();
        assert_eq!(
            (p.id, p.memory_slices, p.placements),
            (15, 2, &[0u8, 2, 4, 6][..])
        );
        assert!(
            class_by_name("NVIDIA GeForce RTX 4090")
                .unwrap()
                .mig
                .is_none()
        );
        assert_eq!(
            classes_with_profile(&MigProfileName::parse("1g.10gb").unwrap())
                .iter()
                .map(|c| c.name)
                .collect::<Vec<_>>(),
            [
                "NVIDIA A100-SXM4-40GB",
                "NVIDIA A100-SXM4-80GB",
                "NVIDIA H100 80GB HBM3"
            ]
        );
    }

    #[test]
    fn request_chain_lists_fallbacks_in_order() {
        let r = GpuRequest::new(SliceRequest::Mig {
            profile: MigProfileName::parse("1g.10gb").unwrap(),
        })
        .with_fallback(GpuRequest::new(SliceRequest::Mps {
            memory: ByteSize::gib(4),
            compute: Percent::whole(25),
        }));
        let kinds: Vec<_> = r.chain().map(|r| r.kind.kind_name()).collect();
        assert_eq!(kinds, ["mig", "mps"]);
    }
}
