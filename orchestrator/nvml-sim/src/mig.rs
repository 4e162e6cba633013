//! MIG rules: which GPU instances fit where, which compute instances fit in a
//! GPU instance, how ids are assigned, and how much capacity remains. Pure
//! functions over a card's [`MigSpec`] and a GPU's [`GpuState`]; no I/O.
//!
//! A GPU instance occupies `placement.size` memory slices starting at
//! `placement.start` and `profile.slices` compute slices. Creation fails with
//! [`MigError::InsufficientResources`] when the memory slices overlap an
//! existing instance, when the GPU has too few free compute slices, or when
//! the profile's instance count is exhausted. GPU-instance ids follow the
//! driver's slice tree: the whole GPU is id 0, its halves 1 and 2, quarters 3
//! to 6, eighths 7 to 14, so an id depends only on the placement.

use crate::config::{CiProfileSpec, GiProfileSpec, MigSpec};
use crate::state::{CiState, GiState, GpuState};

/// Why a MIG operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MigError {
    /// The GPU has no MIG (GeForce and other non-MIG boards).
    #[error("the GPU does not support MIG")]
    NotCapable,
    /// MIG mode is not currently enabled.
    #[error("MIG mode is not enabled on the GPU")]
    NotEnabled,
    /// No such profile on this GPU.
    #[error("unknown profile")]
    UnknownProfile,
    /// The requested placement is not one of the profile's placements.
    #[error("invalid placement for the profile")]
    InvalidPlacement,
    /// The instance does not fit.
    #[error("insufficient resources")]
    InsufficientResources,
    /// No instance with that id.
    #[error("no such instance")]
    NotFound,
    /// Processes still run in the compute instance.
    #[error("processes still run in the compute instance")]
    ProcessesRunning,
    /// The GPU instance still has compute instances.
    #[error("the GPU instance still has compute instances")]
    InUse,
}

/// A placement: `size` slices from `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// First slice.
    pub start: u32,
    /// Slice count.
    pub size: u32,
}

impl Placement {
    fn end(self) -> u32 {
        self.start + self.size
    }

    fn overlaps(self, other: Placement) -> bool {
        self.start < other.end() && other.start < self.end()
    }
}

/// Requires MIG support and the current mode enabled.
pub fn require_enabled<'a>(
    spec: Option<&'a MigSpec>,
    gpu: &GpuState,
) -> Result<&'a MigSpec, MigError> {
    let spec = spec.ok_or(MigError::NotCapable)?;
    if gpu.mig_current {
        Ok(spec)
    } else {
        Err(MigError::NotEnabled)
    }
}

/// Every placement the profile allows, whether free or not.
pub fn possible_placements(profile: &GiProfileSpec) -> Vec<Placement> {
    profile
        .placements
        .starts
        .iter()
        .map(|&start| Placement {
            start,
            size: profile.placements.size,
        })
        .collect()
}

fn gi_placement(gi: &GiState) -> Placement {
    Placement {
        start: gi.start,
        size: gi.size,
    }
}

fn used_compute_slices(spec: &MigSpec, gpu: &GpuState) -> u32 {
    gpu.gpu_instances
        .iter()
        .map(|gi| spec.gi_profile_by_id(gi.profile_id).map_or(0, |p| p.slices))
        .sum()
}

fn placement_is_free(gpu: &GpuState, placement: Placement) -> bool {
    gpu.gpu_instances
        .iter()
        .all(|gi| !gi_placement(gi).overlaps(placement))
}

/// The id the driver gives a GPU instance at this placement.
pub fn gi_id_for(spec: &MigSpec, placement: Placement) -> u32 {
    let nodes_at_level = spec.memory_slices / placement.size;
    (nodes_at_level - 1) + placement.start / placement.size
}

/// Whether one more instance of `profile` is allowed by the count and
/// compute-slice limits (placement aside).
fn counts_allow(spec: &MigSpec, gpu: &GpuState, profile: &GiProfileSpec) -> bool {
    let existing = gpu
        .gpu_instances
        .iter()
        .filter(|gi| gi.profile_id == profile.id)
        .count() as u32;
    existing < profile.instances
        && used_compute_slices(spec, gpu) + profile.slices <= spec.compute_slices
}

/// Creates a GPU instance and returns its id. Without `placement`, the highest
/// free placement is used, as the driver does (it keeps low slices free for
/// larger profiles).
pub fn create_gpu_instance(
    spec: &MigSpec,
    gpu: &mut GpuState,
    profile_id: u32,
    placement: Option<Placement>,
) -> Result<u32, MigError> {
    let profile = spec
        .gi_profile_by_id(profile_id)
        .ok_or(MigError::UnknownProfile)?;
    let candidates = possible_placements(profile);
    let chosen = match placement {
        Some(wanted) => {
            if !candidates.contains(&wanted) {
                return Err(MigError::InvalidPlacement);
            }
            if !placement_is_free(gpu, wanted) || !counts_allow(spec, gpu, profile) {
                return Err(MigError::InsufficientResources);
            }
            wanted
        }
        None => {
            if !counts_allow(spec, gpu, profile) {
                return Err(MigError::InsufficientResources);
            }
            candidates
                .iter()
                .rev()
                .copied()
                .find(|&p| placement_is_free(gpu, p))
                .ok_or(MigError::InsufficientResources)?
        }
    };
    let id = gi_id_for(spec, chosen);
    // INVARIANT: ids are unique because placements of equal ids cover the
    // same slices, and overlapping placements were refused above.
    debug_assert!(gpu.gi(id).is_none());
    gpu.gpu_instances.push(GiState {
        id,
        profile_id,
        start: chosen.start,
        size: chosen.size,
        compute_instances: Vec::new(),
    });
    Ok(id)
}

/// How many more instances of the profile could be created now.
pub fn gpu_instance_remaining_capacity(
    spec: &MigSpec,
    gpu: &GpuState,
    profile_id: u32,
) -> Result<u32, MigError> {
    let profile = spec
        .gi_profile_by_id(profile_id)
        .ok_or(MigError::UnknownProfile)?;
    // Placements of one profile never overlap each other (they are aligned to
    // their size), so every free placement can be used at once.
    let free_placements = possible_placements(profile)
        .into_iter()
        .filter(|&p| placement_is_free(gpu, p))
        .count() as u32;
    let existing = gpu
        .gpu_instances
        .iter()
        .filter(|gi| gi.profile_id == profile.id)
        .count() as u32;
    let by_count = profile.instances.saturating_sub(existing);
    let by_compute = (spec
        .compute_slices
        .saturating_sub(used_compute_slices(spec, gpu)))
        / profile.slices;
    Ok(free_placements.min(by_count).min(by_compute))
}

/// Destroys a GPU instance that has no compute instances.
pub fn destroy_gpu_instance(gpu: &mut GpuState, gi_id: u32) -> Result<(), MigError> {
    let pos = gpu
        .gpu_instances
        .iter()
        .position(|gi| gi.id == gi_id)
        .ok_or(MigError::NotFound)?;
    if !gpu.gpu_instances[pos].compute_instances.is_empty() {
        return Err(MigError::InUse);
    }
    gpu.gpu_instances.remove(pos);
    Ok(())
}

/// A compute-instance profile as offered inside one GPU instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CiProfileView {
    /// Profile index.
    pub index: u32,
    /// Profile id.
    pub id: u32,
    /// Compute slices.
    pub slices: u32,
    /// How many fit in the GPU instance.
    pub instances: u32,
    /// SMs of one instance.
    pub sm_count: u32,
    /// Name without the `MIG ` prefix: `3g.20gb` when it spans the whole GPU
    /// instance, else `1c.3g.20gb`.
    pub name: String,
}

/// Placements of a compute instance of `size` slices inside a GPU instance
/// of `gi_slices` slices: starts aligned to the next power of two of `size`,
/// the same alignment rule GPU instances follow.
pub fn ci_possible_placements(gi_slices: u32, size: u32) -> Vec<Placement> {
    let align = size.next_power_of_two();
    (0..gi_slices)
        .step_by(align as usize)
        .filter(|start| start + size <= gi_slices)
        .map(|start| Placement { start, size })
        .collect()
}

fn ci_view(gi_profile: &GiProfileSpec, ci: &CiProfileSpec) -> CiProfileView {
    let placements = ci_possible_placements(gi_profile.slices, ci.slices);
    let sm_count = if ci.slices == gi_profile.slices {
        gi_profile.sm_count
    } else {
        gi_profile.sm_count * ci.slices / gi_profile.slices
    };
    let name = if ci.slices == gi_profile.slices {
        gi_profile.name.clone()
    } else {
        format!("{}c.{}", ci.slices, gi_profile.name)
    };
    CiProfileView {
        index: ci.index,
        id: ci.id,
        slices: ci.slices,
        instances: placements.len() as u32,
        sm_count,
        name,
    }
}

/// The compute-instance profile with this index inside a GPU instance of
/// `gi_profile`, if offered there.
pub fn ci_profile_by_index(
    spec: &MigSpec,
    gi_profile: &GiProfileSpec,
    index: u32,
) -> Option<CiProfileView> {
    spec.compute_instance_profiles
        .iter()
        .find(|c| c.index == index && c.slices <= gi_profile.slices)
        .map(|c| ci_view(gi_profile, c))
}

/// The compute-instance profile with this id inside a GPU instance of
/// `gi_profile`, if offered there.
pub fn ci_profile_by_id(
    spec: &MigSpec,
    gi_profile: &GiProfileSpec,
    id: u32,
) -> Option<CiProfileView> {
    spec.compute_instance_profiles
        .iter()
        .find(|c| c.id == id && c.slices <= gi_profile.slices)
        .map(|c| ci_view(gi_profile, c))
}

/// The compute-instance profile spanning the whole GPU instance (what
/// `nvidia-smi mig -cgi … -C` creates).
pub fn full_ci_profile(spec: &MigSpec, gi_profile: &GiProfileSpec) -> Option<CiProfileView> {
    spec.compute_instance_profiles
        .iter()
        .find(|c| c.slices == gi_profile.slices)
        .map(|c| ci_view(gi_profile, c))
}

fn ci_placement(ci: &CiState) -> Placement {
    Placement {
        start: ci.start,
        size: ci.size,
    }
}

fn gi_with_profile<'a>(
    spec: &'a MigSpec,
    gpu: &'a mut GpuState,
    gi_id: u32,
) -> Result<(&'a GiProfileSpec, &'a mut GiState), MigError> {
    let gi = gpu
        .gpu_instances
        .iter_mut()
        .find(|gi| gi.id == gi_id)
        .ok_or(MigError::NotFound)?;
    let profile = spec
        .gi_profile_by_id(gi.profile_id)
        .ok_or(MigError::NotFound)?;
    Ok((profile, gi))
}

/// Creates a compute instance in a GPU instance and returns its id. Without
/// `placement`, the lowest free placement is used.
pub fn create_compute_instance(
    spec: &MigSpec,
    gpu: &mut GpuState,
    gi_id: u32,
    ci_profile_id: u32,
    placement: Option<Placement>,
) -> Result<u32, MigError> {
    let (gi_profile, gi) = gi_with_profile(spec, gpu, gi_id)?;
    let view = ci_profile_by_id(spec, gi_profile, ci_profile_id).ok_or(MigError::UnknownProfile)?;
    let candidates = ci_possible_placements(gi_profile.slices, view.slices);
    let is_free = |p: Placement| {
        gi.compute_instances
            .iter()
            .all(|ci| !ci_placement(ci).overlaps(p))
    };
    let chosen = match placement {
        Some(wanted) => {
            if !candidates.contains(&wanted) {
                return Err(MigError::InvalidPlacement);
            }
            if !is_free(wanted) {
                return Err(MigError::InsufficientResources);
            }
            wanted
        }
        None => candidates
            .iter()
            .copied()
            .find(|&p| is_free(p))
            .ok_or(MigError::InsufficientResources)?,
    };
    let id = (0..)
        .find(|id| gi.compute_instances.iter().all(|ci| ci.id != *id))
        .unwrap_or(0);
    gi.compute_instances.push(CiState {
        id,
        profile_id: ci_profile_id,
        start: chosen.start,
        size: chosen.size,
    });
    Ok(id)
}

/// How many more compute instances of the profile fit in the GPU instance.
pub fn compute_instance_remaining_capacity(
    spec: &MigSpec,
    gpu: &GpuState,
    gi_id: u32,
    ci_profile_id: u32,
) -> Result<u32, MigError> {
    let gi = gpu.gi(gi_id).ok_or(MigError::NotFound)?;
    let gi_profile = spec
        .gi_profile_by_id(gi.profile_id)
        .ok_or(MigError::NotFound)?;
    let view = ci_profile_by_id(spec, gi_profile, ci_profile_id).ok_or(MigError::UnknownProfile)?;
    // Same-size aligned placements never overlap each other, so every free
    // one can be used at once.
    Ok(ci_possible_placements(gi_profile.slices, view.slices)
        .into_iter()
        .filter(|&p| {
            gi.compute_instances
                .iter()
                .all(|ci| !ci_placement(ci).overlaps(p))
        })
        .count() as u32)
}

/// Destroys a compute instance.
pub fn destroy_compute_instance(
    gpu: &mut GpuState,
    gi_id: u32,
    ci_id: u32,
) -> Result<(), MigError> {
    let gi = gpu
        .gpu_instances
        .iter_mut()
        .find(|gi| gi.id == gi_id)
        .ok_or(MigError::NotFound)?;
    let pos = gi
        .compute_instances
        .iter()
        .position(|ci| ci.id == ci_id)
        .ok_or(MigError::NotFound)?;
    // The driver refuses to take a compute instance from under its processes.
    if gpu
        .processes
        .iter()
        .any(|p| p.gpu_instance == Some(gi_id) && p.compute_instance == Some(ci_id))
    {
        return Err(MigError::ProcessesRunning);
    }
    gi.compute_instances.remove(pos);
    Ok(())
}

/// MIG devices (one per compute instance) in the order NVML indexes them:
/// by GPU-instance id, then compute-instance id.
pub fn mig_devices(gpu: &GpuState) -> Vec<(u32, u32)> {
    let mut devices: Vec<(u32, u32)> = gpu
        .gpu_instances
        .iter()
        .flat_map(|gi| gi.compute_instances.iter().map(move |ci| (gi.id, ci.id)))
        .collect();
    devices.sort_unstable();
    devices
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PlacementSpec, Toggle};
    use crate::units::{ByteSize, MIB};

    fn gi(
        name: &str,
        index: u32,
        id: u32,
        slices: u32,
        instances: u32,
        size: u32,
        starts: &[u32],
    ) -> GiProfileSpec {
        GiProfileSpec {
            name: name.to_owned(),
            index,
            id,
            slices,
            instances,
            memory: ByteSize(4864 * MIB * u64::from(size)),
            sm_count: 14 * slices,
            copy_engines: slices,
            decoders: 0,
            encoders: 0,
            jpeg: 0,
            ofa: 0,
            p2p: false,
            placements: PlacementSpec {
                size,
                starts: starts.to_vec(),
            },
        }
    }

    /// The A100-40GB tables from NVIDIA's MIG user guide.
    fn a100() -> MigSpec {
        MigSpec {
            compute_slices: 7,
            memory_slices: 8,
            mode_survives_reboot: true,
            gpu_instance_profiles: vec![
                gi("1g.5gb", 0, 19, 1, 7, 1, &[0, 1, 2, 3, 4, 5, 6]),
                gi("1g.5gb+me", 7, 20, 1, 1, 1, &[0, 1, 2, 3, 4, 5, 6]),
                gi("1g.10gb", 9, 15, 1, 4, 2, &[0, 2, 4, 6]),
                gi("2g.10gb", 1, 14, 2, 3, 2, &[0, 2, 4]),
                gi("3g.20gb", 2, 9, 3, 2, 4, &[0, 4]),
                gi("4g.20gb", 3, 5, 4, 1, 4, &[0]),
                gi("7g.40gb", 4, 0, 7, 1, 8, &[0]),
            ],
            compute_instance_profiles: [(0, 1), (1, 2), (2, 3), (3, 4), (4, 7)]
                .into_iter()
                .map(|(index, slices)| CiProfileSpec {
                    index,
                    id: index,
                    slices,
                })
                .collect(),
        }
    }

    fn enabled_gpu() -> GpuState {
        GpuState {
            uuid: "GPU-x".into(),
            mig_current: Toggle::Enabled.is_enabled(),
            mig_pending: true,
            lost: false,
            overrides: Default::default(),
            gpu_instances: Vec::new(),
            processes: Vec::new(),
            mps_server: None,
        }
    }

    fn at(start: u32, size: u32) -> Option<Placement> {
        Some(Placement { start, size })
    }

    #[test]
    fn a_4g_at_0_leaves_room_for_a_3g_only_at_4() {
        let spec = a100();
        let mut gpu = enabled_gpu();
        assert_eq!(create_gpu_instance(&spec, &mut gpu, 5, at(0, 4)), Ok(1));
        assert_eq!(
            create_gpu_instance(&spec, &mut gpu, 9, at(0, 4)),
            Err(MigError::InsufficientResources)
        );
        assert_eq!(gpu_instance_remaining_capacity(&spec, &gpu, 9), Ok(1));
        assert_eq!(create_gpu_instance(&spec, &mut gpu, 9, at(4, 4)), Ok(2));
        assert_eq!(
            create_gpu_instance(&spec, &mut gpu, 5, None),
            Err(MigError::InsufficientResources)
        );
        for profile in [19, 20, 15, 14, 9, 5, 0] {
            assert_eq!(
                gpu_instance_remaining_capacity(&spec, &gpu, profile),
                Ok(0),
                "{profile}"
            );
        }
    }

    #[test]
    fn ids_follow_the_slice_tree_and_default_placement_is_highest_free() {
        let spec = a100();
        let mut gpu = enabled_gpu();
        assert_eq!(create_gpu_instance(&spec, &mut gpu, 9, None), Ok(2));
        assert_eq!(create_gpu_instance(&spec, &mut gpu, 9, None), Ok(1));
        let mut gpu = enabled_gpu();
        assert_eq!(create_gpu_instance(&spec, &mut gpu, 19, None), Ok(13));
        assert_eq!(create_gpu_instance(&spec, &mut gpu, 19, at(0, 1)), Ok(7));
        let mut gpu = enabled_gpu();
        assert_eq!(create_gpu_instance(&spec, &mut gpu, 0, None), Ok(0));
    }

    #[test]
    fn seven_1g_fill_the_compute_slices_and_counts_are_capped() {
        let spec = a100();
        let mut gpu = enabled_gpu();
        assert_eq!(gpu_instance_remaining_capacity(&spec, &gpu, 19), Ok(7));
        for _ in 0..7 {
            create_gpu_instance(&spec, &mut gpu, 19, None).expect("fits");
        }
        assert_eq!(
            create_gpu_instance(&spec, &mut gpu, 19, None),
            Err(MigError::InsufficientResources)
        );
        // Every memory slice pair a 1g.10gb could use is taken.
        assert_eq!(gpu_instance_remaining_capacity(&spec, &gpu, 15), Ok(0));

        let mut gpu = enabled_gpu();
        create_gpu_instance(&spec, &mut gpu, 20, None).expect("one +me fits");
        assert_eq!(
            create_gpu_instance(&spec, &mut gpu, 20, None),
            Err(MigError::InsufficientResources),
            "only one 1g.5gb+me per GPU"
        );
    }

    #[test]
    fn placement_must_be_one_of_the_profile() {
        let spec = a100();
        let mut gpu = enabled_gpu();
        assert_eq!(
            create_gpu_instance(&spec, &mut gpu, 9, at(2, 4)),
            Err(MigError::InvalidPlacement)
        );
        assert_eq!(
            create_gpu_instance(&spec, &mut gpu, 9, at(0, 3)),
            Err(MigError::InvalidPlacement)
        );
        assert_eq!(
            create_gpu_instance(&spec, &mut gpu, 77, None),
            Err(MigError::UnknownProfile)
        );
    }

    #[test]
    fn compute_instances_fill_their_gpu_instance() {
        let spec = a100();
        let mut gpu = enabled_gpu();
        let gi = create_gpu_instance(&spec, &mut gpu, 9, None).expect("3g");
        assert_eq!(
            compute_instance_remaining_capacity(&spec, &gpu, gi, 0),
            Ok(3)
        );
        assert_eq!(
            compute_instance_remaining_capacity(&spec, &gpu, gi, 1),
            Ok(1)
        );
        assert_eq!(
            create_compute_instance(&spec, &mut gpu, gi, 3, None),
            Err(MigError::UnknownProfile),
            "a 4-slice CI is not offered in a 3-slice GI"
        );
        assert_eq!(create_compute_instance(&spec, &mut gpu, gi, 1, None), Ok(0));
        assert_eq!(create_compute_instance(&spec, &mut gpu, gi, 0, None), Ok(1));
        assert_eq!(
            create_compute_instance(&spec, &mut gpu, gi, 0, None),
            Err(MigError::InsufficientResources)
        );
        assert_eq!(destroy_gpu_instance(&mut gpu, gi), Err(MigError::InUse));
        assert_eq!(mig_devices(&gpu), vec![(gi, 0), (gi, 1)]);
        destroy_compute_instance(&mut gpu, gi, 0).expect("destroy ci 0");
        destroy_compute_instance(&mut gpu, gi, 1).expect("destroy ci 1");
        assert_eq!(destroy_gpu_instance(&mut gpu, gi), Ok(()));
        assert_eq!(destroy_gpu_instance(&mut gpu, gi), Err(MigError::NotFound));
    }

    #[test]
    fn compute_profiles_inside_a_gi_are_named_and_sized() {
        let spec = a100();
        let g3 = spec.gi_profile_by_id(9).expect("3g");
        let one = ci_profile_by_index(&spec, g3, 0).expect("1c");
        assert_eq!(
            (one.name.as_str(), one.instances, one.sm_count),
            ("1c.3g.20gb", 3, 14)
        );
        let full = full_ci_profile(&spec, g3).expect("3c");
        assert_eq!(
            (full.name.as_str(), full.instances, full.sm_count),
            ("3g.20gb", 1, 42)
        );
        let g7 = spec.gi_profile_by_id(0).expect("7g");
        assert_eq!(
            ci_possible_placements(7, 3),
            vec![
                Placement { start: 0, size: 3 },
                Placement { start: 4, size: 3 }
            ]
        );
        assert_eq!(
            ci_profile_by_index(&spec, g7, 1).map(|v| v.instances),
            Some(3)
        );
        assert_eq!(
            ci_profile_by_index(&spec, g7, 3).map(|v| v.instances),
            Some(1)
        );
    }

    #[test]
    fn require_enabled_distinguishes_capability_from_mode() {
        let spec = a100();
        let mut gpu = enabled_gpu();
        assert!(require_enabled(Some(&spec), &gpu).is_ok());
        gpu.mig_current = false;
        assert_eq!(
            require_enabled(Some(&spec), &gpu).err(),
            Some(MigError::NotEnabled)
        );
        assert_eq!(
            require_enabled(None, &gpu).err(),
            Some(MigError::NotCapable)
        );
    }
}
