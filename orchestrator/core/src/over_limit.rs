//! Which replicas hold more GPU memory than their slice gives them
//! (`gpu.over_limit`), from measured use only, once per episode.
//!
//! A reading is one GPU's sample: the replicas whose processes hold memory
//! on it, with what each holds and what its slice holds there
//! (`planner::slice_memory`). [`OverLimits::observe`] says which replicas
//! went over their limit on a GPU since the last reading of that GPU: an
//! episode starts when a replica is seen over and ends when a reading of
//! the same GPU shows it at or under its limit, or not at all (its
//! processes are gone). Only then can it start again, so a replica that
//! stays over is reported once, however many samples see it.
//!
//! Only what is measured decides: a GPU absent from a reading (NVML gave
//! no process list for it) leaves its episodes as they were; a replica
//! with no limit (time slicing) is never over.
//!
//! Replicas are keyed by whatever the caller says one is (`K`): the
//! supervisor keys them by replica and the start of its container's run,
//! so a restarted container starts afresh even when no sample saw it
//! between its runs.

use std::collections::BTreeSet;

use crate::gpu::ReplicaKey;

/// One replica's measured memory on one GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryUse<K = ReplicaKey> {
    pub replica: K,
    pub used_bytes: u64,
    /// What its slice holds on this GPU; `None`: no share of its own.
    pub limit_bytes: Option<u64>,
}

/// One GPU's reading: every replica with memory on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuMemory<K = ReplicaKey> {
    pub gpu_index: u32,
    pub gpu_uuid: String,
    pub replicas: Vec<MemoryUse<K>>,
}

/// The start of an episode: a replica seen over its limit on a GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Over<K = ReplicaKey> {
    pub replica: K,
    pub gpu_index: u32,
    pub gpu_uuid: String,
    pub used_bytes: u64,
    pub limit_bytes: u64,
}

/// The episodes in progress, by replica and GPU index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverLimits<K = ReplicaKey> {
    over: BTreeSet<(K, u32)>,
}

impl<K> Default for OverLimits<K> {
    fn default() -> Self {
        OverLimits {
            over: BTreeSet::new(),
        }
    }
}

impl<K: Ord + Clone> OverLimits<K> {
    /// Takes the readings of some GPUs; returns the episodes they start,
    /// in the readings' order.
    pub fn observe(&mut self, gpus: &[GpuMemory<K>]) -> Vec<Over<K>> {
        let mut started = Vec::new();
        for gpu in gpus {
            let now_over: BTreeSet<&K> = gpu
                .replicas
                .iter()
                .filter(|u| u.limit_bytes.is_some_and(|l| u.used_bytes > l))
                .map(|u| &u.replica)
                .collect();
            // Back under, or gone from this GPU: the episode ends.
            self.over
                .retain(|(r, index)| *index != gpu.gpu_index || now_over.contains(r));
            for u in &gpu.replicas {
                let Some(limit) = u.limit_bytes.filter(|l| u.used_bytes > *l) else {
                    continue;
                };
                if self.over.insert((u.replica.clone(), gpu.gpu_index)) {
                    started.push(Over {
                        replica: u.replica.clone(),
                        gpu_index: gpu.gpu_index,
                        gpu_uuid: gpu.gpu_uuid.clone(),
                        used_bytes: u.used_bytes,
                        limit_bytes: limit,
                    });
                }
            }
        }
        started
    }

    /// Whether `replica` is in an episode on any GPU.
    pub fn is_over(&self, replica: &K) -> bool {
        self.over.iter().any(|(r, _)| r == replica)
    }

    /// Ends every episode of replicas `keep` says no to (replicas gone).
    pub fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        self.over.retain(|(r, _)| keep(r));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: u64 = 1 << 30;

    fn use_(agent: &str, used: u64, limit: Option<u64>) -> MemoryUse {
        MemoryUse {
            replica: ReplicaKey::new(agent, 0),
            used_bytes: used,
            limit_bytes: limit,
        }
    }

    fn gpu(index: u32, replicas: Vec<MemoryUse>) -> GpuMemory {
        GpuMemory {
            gpu_index: index,
            gpu_uuid: format!("GPU-{index}"),
            replicas,
        }
    }

    /// Feeds the readings in turn; each step's episodes started, as
    /// `agent@gpu`.
    fn check(steps: Vec<Vec<GpuMemory>>, expect: &[&[&str]]) {
        let mut limits = OverLimits::default();
        let got: Vec<Vec<String>> = steps
            .iter()
            .map(|s| {
                limits
                    .observe(s)
                    .iter()
                    .map(|o| format!("{}@{}", o.replica.agent, o.gpu_index))
                    .collect()
            })
            .collect();
        let expect: Vec<Vec<String>> = expect
            .iter()
            .map(|s| s.iter().map(|x| x.to_string()).collect())
            .collect();
        assert_eq!(got, expect);
    }

    #[test]
    fn under_its_limit_is_nothing() {
        check(
            vec![
                vec![gpu(0, vec![use_("a", 2 * G, Some(4 * G))])],
                vec![gpu(0, vec![use_("a", 4 * G, Some(4 * G))])],
            ],
            &[&[], &[]],
        );
    }

    #[test]
    fn over_is_said_once_per_episode() {
        check(
            vec![
                vec![gpu(0, vec![use_("a", 5 * G, Some(4 * G))])],
                vec![gpu(0, vec![use_("a", 6 * G, Some(4 * G))])],
                vec![gpu(0, vec![use_("a", 5 * G, Some(4 * G))])],
            ],
            &[&["a@0"], &[], &[]],
        );
    }

    #[test]
    fn back_under_then_over_again_is_a_new_episode() {
        check(
            vec![
                vec![gpu(0, vec![use_("a", 5 * G, Some(4 * G))])],
                vec![gpu(0, vec![use_("a", 3 * G, Some(4 * G))])],
                vec![gpu(0, vec![use_("a", 5 * G, Some(4 * G))])],
            ],
            &[&["a@0"], &[], &["a@0"]],
        );
    }

    #[test]
    fn gone_from_the_gpu_ends_the_episode() {
        check(
            vec![
                vec![gpu(0, vec![use_("a", 5 * G, Some(4 * G))])],
                vec![gpu(0, vec![])],
                vec![gpu(0, vec![use_("a", 5 * G, Some(4 * G))])],
            ],
            &[&["a@0"], &[], &["a@0"]],
        );
    }

    #[test]
    fn no_reading_of_a_gpu_decides_nothing() {
        check(
            vec![
                vec![gpu(0, vec![use_("a", 5 * G, Some(4 * G))])],
                // GPU 0 not read: neither back under nor over again.
                vec![gpu(1, vec![])],
                vec![],
                vec![gpu(0, vec![use_("a", 5 * G, Some(4 * G))])],
            ],
            &[&["a@0"], &[], &[], &[]],
        );
    }

    #[test]
    fn no_limit_is_never_over() {
        check(vec![vec![gpu(0, vec![use_("a", 80 * G, None)])]], &[&[]]);
    }

    #[test]
    fn each_gpu_has_its_own_episodes() {
        check(
            vec![
                vec![
                    gpu(
                        0,
                        vec![use_("a", 5 * G, Some(4 * G)), use_("b", G, Some(4 * G))],
                    ),
                    gpu(
                        1,
                        vec![use_("a", G, Some(4 * G)), use_("b", 5 * G, Some(4 * G))],
                    ),
                ],
                // a over on GPU 1 too: a new episode there.
                vec![gpu(1, vec![use_("a", 5 * G, Some(4 * G))])],
                // b back under on GPU 1 only; a still over on GPU 0 (unread).
                vec![gpu(
                    1,
                    vec![use_("a", 5 * G, Some(4 * G)), use_("b", G, Some(4 * G))],
                )],
                vec![gpu(1, vec![use_("b", 5 * G, Some(4 * G))])],
            ],
            &[&["a@0", "b@1"], &["a@1"], &[], &["b@1"]],
        );
    }

    #[test]
    fn an_episode_names_the_gpu_and_the_bytes() {
        let mut limits = OverLimits::default();
        let over = limits.observe(&[gpu(3, vec![use_("a", 5 * G, Some(4 * G))])]);
        assert_eq!(
            over,
            vec![Over {
                replica: ReplicaKey::new("a", 0),
                gpu_index: 3,
                gpu_uuid: "GPU-3".into(),
                used_bytes: 5 * G,
                limit_bytes: 4 * G,
            }]
        );
        assert!(limits.is_over(&ReplicaKey::new("a", 0)));
        limits.retain(|_| false);
        assert!(!limits.is_over(&ReplicaKey::new("a", 0)));
    }
}
