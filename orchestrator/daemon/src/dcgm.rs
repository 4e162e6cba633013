//! dcgm-exporter's HPC job-mapping files, kept equal to the agents that
//! run on each GPU (`orchestratord --dcgm-job-mapping-dir DIR`).
//!
//! dcgm-exporter run with `--hpc-job-mapping-dir DIR` (or
//! `DCGM_HPC_JOB_MAPPING_DIR`) reads, at every collection, each regular
//! file of DIR whose name is a GPU index (`0`, `1`) or a GPU index and a
//! GPU instance id (`2.0`, `3.10`; it matches `^\d+(\.\d+)?$` and skips
//! every other name). Each line of a file is one job running there: every
//! metric of that GPU (of that MIG GPU instance, for a metric of a MIG
//! instance) is emitted once per line, with the label `hpc_job` set to the
//! line. A missing or empty file adds no label.
//!
//! Here a job is a running replica: the line `HOST/GROUP/AGENT`, or
//! `HOST/GROUP/AGENT#N` (replica N) when several replicas of that agent
//! share the GPU, so that no two lines of a file are alike. A GPU's file
//! lists every replica with a slice of it (MPS, time-slicing, the whole
//! GPU, and its MIG instances' replicas: the GPU's own metrics, power or
//! temperature, are theirs too); a MIG instance's file (`GPU.GI`) lists
//! the replicas of that instance.
//!
//! [`job_files`] is the pure part, a function of the placements;
//! [`dir::MappingDir`] writes them; [`writer`] is the task that does it off
//! the owner.

pub mod dir;
pub mod writer;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use orch_core::gpu::{ReplicaKey, Slice};
use orch_core::supervise::{Phase, Supervisor};

/// File name (`0`, `2.1`) to its lines, in order.
pub type JobFiles = BTreeMap<String, Vec<String>>;

/// A running replica and the GPU slice it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed<'a> {
    pub group: &'a str,
    pub key: &'a ReplicaKey,
    pub slice: &'a Slice,
}

/// The replicas of `sup` whose container runs (from its start's report
/// until its stop's: a stopping container still uses its GPU) and that
/// hold a GPU slice.
pub fn placements(sup: &Supervisor) -> Vec<Placed<'_>> {
    sup.replicas()
        .filter(|r| matches!(r.phase, Phase::Running | Phase::Stopping))
        .filter_map(|r| {
            Some(Placed {
                group: &r.group,
                key: &r.key,
                slice: r.slice.as_ref()?,
            })
        })
        .collect()
}

/// The files `sup` calls for.
pub fn of(sup: &Supervisor) -> JobFiles {
    job_files(&sup.config().host.name, &placements(sup))
}

/// The files for the replicas `placed` of `host`: one per GPU with a
/// replica, one per MIG GPU instance with a replica; lines sorted.
pub fn job_files(host: &str, placed: &[Placed<'_>]) -> JobFiles {
    // Replicas of one agent per GPU: more than one qualifies each line.
    let mut per_gpu: BTreeMap<(u32, &str, &str), BTreeSet<u32>> = BTreeMap::new();
    for p in placed {
        per_gpu
            .entry((p.slice.gpu_index(), p.group, p.key.agent.as_str()))
            .or_default()
            .insert(p.key.replica);
    }
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for p in placed {
        let gpu = p.slice.gpu_index();
        let shared = per_gpu
            .get(&(gpu, p.group, p.key.agent.as_str()))
            .is_some_and(|r| r.len() > 1);
        let line = if shared {
            format!("{host}/{}/{}#{}", p.group, p.key.agent, p.key.replica)
        } else {
            format!("{host}/{}/{}", p.group, p.key.agent)
        };
        if let Slice::Mig {
            gi_id: Some(gi), ..
        } = p.slice
        {
            out.entry(format!("{gpu}.{gi}"))
                .or_default()
                .insert(line.clone());
        }
        out.entry(gpu.to_string()).or_default().insert(line);
    }
    out.into_iter()
        .map(|(name, lines)| (name, lines.into_iter().collect()))
        .collect()
}

/// Whether dcgm-exporter reads a file of this name: `^\d+(\.\d+)?$`.
pub fn is_mapping_name(name: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match name.split_once('.') {
        Some((gpu, gi)) => digits(gpu) && digits(gi),
        None => digits(name),
    }
}

/// A file's content: its lines, each ended by a newline.
pub fn content(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}
