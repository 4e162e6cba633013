//! Fleet placement advice: for GPU requests (one agent's, or a whole
//! config's), where in the fleet they would fit.
//!
//! There is no second placement algorithm here: each host is planned by
//! [`plan`] as if the requests were added to it. What a host holds now (the
//! slices of its running replicas, as its peer snapshot reports them) is
//! given to the planner as running assignments with a request matching each
//! slice, so the planner keeps every one of them where it is, exactly as on
//! that host, and only the new requests are placed around them. A request
//! that fits is answered with the slice it would get (a MIG profile and
//! placement, an MPS share or a whole GPU); one that does not, with the
//! planner's own [`PlanError`], naming every GPU of the host and why.
//!
//! The caller converts what it knows of a host (its GPU inventory, its
//! GPU policies if known, the slices held) into core types; an empty
//! policy list plans the host with the planner's defaults. A request whose
//! replica key equals a held slice's is that running replica: it keeps its
//! slice. Ask with keys of new replicas (the next replica numbers of the
//! agent) to ask where more would fit.

use serde::{Deserialize, Serialize};

use super::{PlanError, PlanInput, PlannerSettings, plan};
use crate::gpu::{
    Assignment, GpuInfo, GpuRequest, MigProfileName, ReplicaKey, Slice, SliceRequest,
};
use crate::model::GpuPolicy;

/// What one host of the fleet has, as its snapshot says.
#[derive(Debug, Clone, Copy)]
pub struct HostGpus<'a> {
    pub host: &'a str,
    pub gpus: &'a [GpuInfo],
    /// The host's GPU policies, if known; empty plans with the defaults.
    pub policies: &'a [GpuPolicy],
    /// The slices its replicas hold now.
    pub held: &'a [Assignment],
    pub settings: PlannerSettings,
}

/// The answer for one host, in the order the hosts were given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostAdvice {
    pub host: String,
    /// One per request, in the order given.
    pub replicas: Vec<ReplicaAdvice>,
}

impl HostAdvice {
    /// Whether every request fits on this host (together).
    pub fn fits_all(&self) -> bool {
        self.replicas
            .iter()
            .all(|r| matches!(r, ReplicaAdvice::Fits { .. }))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "fit")]
pub enum ReplicaAdvice {
    /// The slice the replica would get; `fallback_depth` says which entry
    /// of its request's chain.
    Fits {
        replica: ReplicaKey,
        slice: Slice,
        fallback_depth: u8,
    },
    /// Why not, GPU by GPU.
    DoesNotFit(PlanError),
}

/// Where `requests` would fit on each of `hosts` (each host on its own:
/// all the requests added to it together, in priority order).
pub fn advise(requests: &[(ReplicaKey, GpuRequest)], hosts: &[HostGpus<'_>]) -> Vec<HostAdvice> {
    hosts.iter().map(|h| advise_host(requests, h)).collect()
}

/// The request a held slice answers, so that the planner keeps it.
fn held_request(slice: &Slice) -> Option<GpuRequest> {
    let kind = match slice {
        Slice::Mig { profile, .. } => SliceRequest::Mig {
            profile: MigProfileName::parse(profile).ok()?,
        },
        Slice::Mps {
            memory, compute, ..
        } => SliceRequest::Mps {
            memory: *memory,
            compute: *compute,
        },
        Slice::Exclusive { .. } => SliceRequest::Exclusive,
        Slice::TimeSlice { .. } => SliceRequest::TimeSlice,
    };
    Some(GpuRequest::new(kind))
}

fn advise_host(requests: &[(ReplicaKey, GpuRequest)], h: &HostGpus<'_>) -> HostAdvice {
    let mut all: Vec<(ReplicaKey, GpuRequest)> = Vec::new();
    let mut current: Vec<Assignment> = Vec::new();
    for a in h.held {
        // A slice named by a profile nobody knows stays on the host as an
        // instance of the inventory; the planner leaves it in place.
        if let Some(req) = held_request(&a.slice) {
            all.push((a.replica.clone(), req));
            current.push(Assignment {
                fallback_depth: 0,
                ..a.clone()
            });
        }
    }
    // Held replicas come first: a replica listed twice is planned once.
    all.extend(requests.iter().cloned());
    let p = plan(&PlanInput {
        gpus: h.gpus,
        policies: h.policies,
        requests: &all,
        current: &current,
        settings: h.settings,
    });
    let replicas = requests
        .iter()
        .filter_map(|(key, _)| {
            if let Some(a) = p.assignment(key) {
                return Some(ReplicaAdvice::Fits {
                    replica: key.clone(),
                    slice: a.slice.clone(),
                    fallback_depth: a.fallback_depth,
                });
            }
            p.error(key).cloned().map(ReplicaAdvice::DoesNotFit)
        })
        .collect();
    HostAdvice {
        host: h.host.to_string(),
        replicas,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{MigInstance, MigState, class_by_name};
    use crate::planner::RefusalReason;
    use crate::units::{ByteSize, Percent};

    fn gpu(index: u32, class: &str, mig: bool) -> GpuInfo {
        GpuInfo::from_class(
            index,
            &format!("GPU-{class}-{index}"),
            class_by_name(class).expect("catalog class"),
            mig,
        )
    }

    const RTX4090: &str = "NVIDIA GeForce RTX 4090";
    const RTX3060: &str = "NVIDIA GeForce RTX 3060";
    const A100: &str = "NVIDIA A100-SXM4-40GB";

    fn mps(gib: u64, pct: u32) -> GpuRequest {
        GpuRequest::new(SliceRequest::Mps {
            memory: ByteSize::gib(gib),
            compute: Percent::whole(pct),
        })
    }

    fn mig(profile: &str) -> GpuRequest {
        GpuRequest::new(SliceRequest::Mig {
            profile: MigProfileName::parse(profile).expect("profile"),
        })
    }

    fn held_mps(agent: &str, g: &GpuInfo, gib: u64, pct: u32) -> Assignment {
        Assignment {
            replica: ReplicaKey::new(agent, 0),
            slice: Slice::Mps {
                gpu_index: g.index,
                gpu_uuid: g.uuid.clone(),
                memory: ByteSize::gib(gib),
                compute: Percent::whole(pct),
            },
            fallback_depth: 1,
        }
    }

    fn host<'a>(name: &'a str, gpus: &'a [GpuInfo], held: &'a [Assignment]) -> HostGpus<'a> {
        HostGpus {
            host: name,
            gpus,
            policies: &[],
            held,
            settings: PlannerSettings::default(),
        }
    }

    /// (host, fits, slice kind and GPU index or refusal reasons).
    fn summary(advice: &[HostAdvice]) -> Vec<(String, Vec<String>)> {
        advice
            .iter()
            .map(|h| {
                let replicas = h
                    .replicas
                    .iter()
                    .map(|r| match r {
                        ReplicaAdvice::Fits { replica, slice, .. } => {
                            format!("{replica} fits: {}", slice.describe())
                        }
                        ReplicaAdvice::DoesNotFit(e) => {
                            let reasons: Vec<String> = e
                                .attempts
                                .iter()
                                .flat_map(|a| a.refusals.iter())
                                .map(|r| format!("{}:{:?}", r.gpu_index, kind(&r.reason)))
                                .collect();
                            format!("{} does not fit: {}", e.replica, reasons.join(" "))
                        }
                    })
                    .collect();
                (h.host.clone(), replicas)
            })
            .collect()
    }

    fn kind(r: &RefusalReason) -> &'static str {
        match r {
            RefusalReason::NoMig => "no-mig",
            RefusalReason::MigOn => "mig-on",
            RefusalReason::MpsMemory { .. } => "mps-memory",
            RefusalReason::MigNoPlacement { .. } => "mig-no-placement",
            RefusalReason::MigComputeFull { .. } => "mig-compute-full",
            RefusalReason::MigMaxInstances { .. } => "mig-max-instances",
            _ => "other",
        }
    }

    fn owned(s: &[(&str, &str)]) -> Vec<(String, Vec<String>)> {
        s.iter()
            .map(|(h, r)| (h.to_string(), vec![r.to_string()]))
            .collect()
    }

    #[test]
    fn a_share_fits_where_memory_is_left_and_not_where_it_is_held() {
        let mainpc = [gpu(0, RTX4090, false)];
        let pc2 = [gpu(0, RTX3060, false)];
        // mainpc's 4090 holds 20g of its 22.8g; pc2's 3060 is free.
        let held = [held_mps("Llm", &mainpc[0], 20, 50)];
        let want = [(ReplicaKey::new("Vision", 1), mps(8, 25))];
        let advice = advise(
            &want,
            &[host("mainpc", &mainpc, &held), host("pc2", &pc2, &[])],
        );
        assert_eq!(
            summary(&advice),
            owned(&[
                ("mainpc", "Vision#1 does not fit: 0:\"mps-memory\""),
                (
                    "pc2",
                    "Vision#1 fits: mps:GPU-NVIDIA GeForce RTX 3060-0:memory=8g,compute=25%"
                ),
            ])
        );
        assert!(!advice[0].fits_all() && advice[1].fits_all());
        // The held replica keeps its slice and is not in the answer.
        assert_eq!(advice[0].replicas.len(), 1);
    }

    #[test]
    fn a_mig_profile_fits_beside_held_instances_on_the_host_that_has_room() {
        let mut a100 = gpu(0, A100, true);
        // Held: a 4g.20gb at 0 (ours) and a 3g.20gb at 4: the GPU is full.
        let mut held = Vec::new();
        if let MigState::Enabled {
            instances,
            profiles,
            ..
        } = &mut a100.mig
        {
            for (gi, (name, start)) in [("4g.20gb", 0u8), ("3g.20gb", 4)].into_iter().enumerate() {
                let p = profiles.iter().find(|p| p.name == name).expect("profile");
                let gi = gi as u32 + 1;
                instances.push(MigInstance {
                    gi_id: gi,
                    profile_id: p.id,
                    placement_start: start,
                    placement_size: p.memory_slices,
                    ci_id: Some(0),
                    device_uuid: Some(format!("MIG-{gi}")),
                    owned: true,
                });
                held.push(Assignment {
                    replica: ReplicaKey::new(format!("Held{gi}"), 0),
                    slice: Slice::Mig {
                        gpu_index: 0,
                        gpu_uuid: a100.uuid.clone(),
                        profile: name.into(),
                        profile_id: p.id,
                        placement_start: start,
                        gi_id: Some(gi),
                        ci_id: Some(0),
                        device_uuid: Some(format!("MIG-{gi}")),
                    },
                    fallback_depth: 0,
                });
            }
        }
        let full = [a100];
        let empty = [gpu(0, A100, true)];
        let want = [(ReplicaKey::new("Face", 0), mig("1g.5gb"))];
        let advice = advise(
            &want,
            &[host("lab1", &full, &held), host("lab2", &empty, &[])],
        );
        let s = summary(&advice);
        assert_eq!(s[0].1, ["Face does not fit: 0:\"mig-compute-full\""]);
        assert!(matches!(
            &advice[1].replicas[0],
            ReplicaAdvice::Fits {
                slice: Slice::Mig {
                    placement_start: 6,
                    ..
                },
                ..
            }
        ));
        assert_eq!(
            s[1].1,
            ["Face fits: mig:GPU-NVIDIA A100-SXM4-40GB-0:1g.5gb"]
        );
    }

    #[test]
    fn a_request_that_fits_nowhere_says_why_on_every_host() {
        let mainpc = [gpu(0, RTX4090, false)];
        let pc2 = [gpu(0, RTX3060, false)];
        let want = [(ReplicaKey::new("Face", 0), mig("1g.10gb"))];
        let advice = advise(
            &want,
            &[host("mainpc", &mainpc, &[]), host("pc2", &pc2, &[])],
        );
        assert_eq!(
            summary(&advice),
            owned(&[
                ("mainpc", "Face does not fit: 0:\"no-mig\""),
                ("pc2", "Face does not fit: 0:\"no-mig\""),
            ])
        );
    }

    #[test]
    fn a_whole_config_is_placed_together() {
        // Two 8g shares fit a 4090 together, not a 3060: the second of them
        // is the one refused there.
        let mainpc = [gpu(0, RTX4090, false)];
        let pc2 = [gpu(0, RTX3060, false)];
        let want = [
            (ReplicaKey::new("A", 0), mps(8, 25)),
            (ReplicaKey::new("B", 0), mps(8, 25)),
        ];
        let advice = advise(
            &want,
            &[host("mainpc", &mainpc, &[]), host("pc2", &pc2, &[])],
        );
        assert!(advice[0].fits_all());
        let s = summary(&advice);
        assert!(s[1].1[0].starts_with("A fits"), "{s:?}");
        assert_eq!(s[1].1[1], "B does not fit: 0:\"mps-memory\"");
    }
}
