//! Planner benchmark: 1000 agents over 16 mixed GPUs (targets.md: under
//! 10 ms). Plain `Instant` timing, no harness: `cargo bench -p orch-core`.
//!
//! Three runs: a cold plan of 1000 agents (nothing running), a steady-state
//! re-plan where every assignment of the cold plan is passed back as
//! running (what the daemon does on every reconcile), and a cold plan of a
//! 200-agent fleet that fits. 16 GPUs hold at most ~360 shares (48 MPS
//! clients on each of 6 GeForce cards, at most 7 instances on each of 10
//! MIG GPUs), so most of the 1000 agents end as errors, each naming every
//! GPU and why: the worst case for the planner.

use std::hint::black_box;
use std::time::{Duration, Instant};

use orch_core::gpu::{
    Assignment, GpuInfo, GpuRequest, MigProfileName, ReplicaKey, SliceRequest, class_by_name,
};
use orch_core::planner::{Plan, PlanInput, PlannerSettings, plan};
use orch_core::units::{ByteSize, Percent};

const ITERATIONS: usize = 300;
const FITTING: usize = 200;

fn gpus() -> Vec<GpuInfo> {
    let mut out = Vec::new();
    let mut add = |name: &str, n: usize, mig: bool| {
        let class = class_by_name(name).expect("catalog class");
        for _ in 0..n {
            let i = out.len() as u32;
            out.push(GpuInfo::from_class(i, &format!("GPU-{i:04}"), class, mig));
        }
    };
    add("NVIDIA A100-SXM4-40GB", 6, true);
    add("NVIDIA H100 80GB HBM3", 4, true);
    add("NVIDIA GeForce RTX 4090", 4, false);
    add("NVIDIA GeForce RTX 3060", 2, false);
    out
}

/// A fixed pseudo-random mix (xorshift), so every run plans the same fleet:
/// `mig_pct` % MIG with an MPS fallback, `exclusive_pct` % exclusive, the
/// rest MPS.
fn requests(n: usize, mig_pct: u64, exclusive_pct: u64) -> Vec<(ReplicaKey, GpuRequest)> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let profiles = [
        "1g.5gb", "2g.10gb", "3g.20gb", "1g.10gb", "2g.20gb", "3g.40gb", "1g.20gb", "4g.20gb",
    ];
    (0..n)
        .map(|i| {
            let mps = |mem_mib: u64, pct: u32| {
                GpuRequest::new(SliceRequest::Mps {
                    memory: ByteSize::mib(mem_mib),
                    compute: Percent::whole(pct),
                })
            };
            let roll = next() % 100;
            let req = if roll < mig_pct {
                let p = profiles[(next() % profiles.len() as u64) as usize];
                GpuRequest::new(SliceRequest::Mig {
                    profile: MigProfileName::parse(p).expect("profile"),
                })
                .with_fallback(mps(1024, 5))
            } else if roll < 100 - exclusive_pct {
                mps(128 + 128 * (next() % 4), 1 + (next() % 2) as u32)
            } else {
                GpuRequest::new(SliceRequest::Exclusive)
            };
            (ReplicaKey::new(format!("Agent{i:04}"), 0), req)
        })
        .collect()
}

fn measure(name: &str, input: &PlanInput<'_>) -> Plan {
    let mut times: Vec<Duration> = Vec::with_capacity(ITERATIONS);
    let mut last = plan(input);
    for _ in 0..ITERATIONS {
        let start = Instant::now();
        let p = black_box(plan(black_box(input)));
        times.push(start.elapsed());
        // Dropping the previous plan is not planning: keep it off the clock.
        last = p;
    }
    times.sort_unstable();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let median = times[times.len() / 2];
    let p95 = times[times.len() * 95 / 100];
    let fallback = last
        .assignments
        .iter()
        .filter(|a| a.fallback_depth > 0)
        .count();
    println!(
        "{name}: median {:.0} us, p95 {:.0} us, min {:.0} us over {ITERATIONS} runs; \
         assigned {}, fallback {fallback}, errors {}, creates {}",
        us(median),
        us(p95),
        us(times[0]),
        last.assignments.len(),
        last.errors.len(),
        last.create.len(),
    );
    last
}

fn main() {
    let gpus = gpus();
    let thousand = requests(1000, 35, 5);
    let settings = PlannerSettings::default();
    let cold = measure(
        "cold plan, 1000 agents, 16 GPUs",
        &PlanInput {
            gpus: &gpus,
            policies: &[],
            requests: &thousand,
            current: &[],
            settings,
        },
    );
    let current: Vec<Assignment> = cold.assignments.clone();
    let steady = measure(
        "re-plan with every slice running",
        &PlanInput {
            gpus: &gpus,
            policies: &[],
            requests: &thousand,
            current: &current,
            settings,
        },
    );
    // Nothing moves. (The inventory never gains the instances, so kept MIG
    // slices are re-created at their placements, as after a reboot.)
    assert_eq!(steady.assignments, cold.assignments);

    // A fleet that fits: every agent gets a slice or its fallback.
    let fitting = requests(FITTING, 20, 1);
    measure(
        &format!("cold plan, {FITTING} agents that fit, 16 GPUs"),
        &PlanInput {
            gpus: &gpus,
            policies: &[],
            requests: &fitting,
            current: &[],
            settings,
        },
    );
}
