//! `/metrics` benchmark: `cargo bench -p orch-daemon --bench metrics`.
//! Plain `Instant` timing, no harness.
//!
//! 1. Render time of a snapshot of a 200-agent host (10 groups of 20
//!    agents, 4 GPUs with 40 MPS and MIG slices, every group with three
//!    SLOs over 7 windows, a health histogram per agent): what the HTTP
//!    handler does per scrape, off the owner task. Printed: median, p99,
//!    max of wall time and of the thread's CPU time (on a shared, loaded
//!    machine the wall-time tail is the scheduler's), and the size of the
//!    text.
//! 2. The resident memory of a daemon supervising those 200 agents on the
//!    Docker fake (`orch_daemon::testing`), with metrics published and the
//!    SLO engine sampling and scraping every agent: VmRSS of this process
//!    before the daemon starts and once every agent is healthy and a few
//!    rounds of samples and scrapes have run.

#![allow(clippy::unwrap_used)]

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

use orch_api::GpuTelemetry as Telemetry;
use orch_core::slo::Sli;
use orch_daemon::metrics::{
    self, GpuRow, GroupRow, HEALTH_BUCKETS, Histogram, MetricsSnapshot, ReplicaRow, SliceRow,
    SloRow,
};

const GROUPS: usize = 10;
const AGENTS_PER_GROUP: usize = 20;
const ITERATIONS: usize = 2000;

fn snapshot() -> MetricsSnapshot {
    let mut s = MetricsSnapshot::empty("mainpc", "0.1.0");
    for g in 0..GROUPS {
        let group = format!("group_{g}");
        for a in 0..AGENTS_PER_GROUP {
            let agent = format!("Agent{g}x{a}");
            s.replicas.push(ReplicaRow {
                group: group.clone(),
                agent: agent.clone(),
                replica: 0,
                up: true,
                state: "running",
                crashlooping: false,
                restarts: 3,
            });
            for reason in metrics::BASE_REASONS {
                s.failures.push((group.clone(), agent.clone(), reason, 1));
            }
            let mut h = Histogram::new(HEALTH_BUCKETS);
            for i in 0..50 {
                h.observe(Duration::from_micros(300 + i * 97));
            }
            s.health.push((group.clone(), agent.clone(), h));
            if a < 4 {
                s.slices.push(SliceRow {
                    gpu: (a % 4) as u32,
                    uuid: format!("GPU-0000-{a}"),
                    kind: if a % 2 == 0 { "mps" } else { "mig" },
                    profile: "4g/25%".into(),
                    group: group.clone(),
                    agent: agent.clone(),
                    replica: 0,
                    memory_bytes: Some(4 << 30),
                });
            }
        }
        s.groups.push(GroupRow {
            group: group.clone(),
            started: true,
            ready: true,
            wanted: AGENTS_PER_GROUP,
            running: AGENTS_PER_GROUP,
            healthy: AGENTS_PER_GROUP,
        });
        for sli in Sli::ALL {
            s.slos.push(SloRow {
                group: group.clone(),
                slo: sli,
                objective: 0.995,
                events: 123_456,
                errors: 78,
                windows: ["5m", "30m", "1h", "6h", "1d", "3d", "30d"]
                    .iter()
                    .map(|w| (w.to_string(), 0.0012, 0.24))
                    .collect(),
                budget_remaining: Some(0.76),
            });
        }
    }
    for i in 0..4u32 {
        s.gpus.push(GpuRow {
            index: i,
            uuid: format!("GPU-0000-{i}"),
            name: "NVIDIA A100-SXM4-40GB".into(),
            mig: if i % 2 == 0 { "unsupported" } else { "enabled" },
            memory_total_bytes: 40 << 30,
            telemetry: Some(Telemetry {
                memory_used_bytes: 12 << 30,
                utilization_gpu_basis_points: 4100,
                utilization_memory_basis_points: 2000,
                temperature_celsius: 55,
                power_mw: 180_500,
            }),
            mps_free: (i % 2 == 0).then_some((20 << 30, 0.5)),
            mig_free_slices: (i % 2 == 1).then_some(4),
            unowned_memory_bytes: 0,
        });
    }
    s
}

/// CPU time of this thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn render_time() {
    let snap = snapshot();
    let mut out = String::with_capacity(256 * 1024);
    let mut times = Vec::with_capacity(ITERATIONS);
    let mut cpu = Vec::with_capacity(ITERATIONS);
    for _ in 0..ITERATIONS {
        out.clear();
        let c = thread_cpu();
        let t = Instant::now();
        // What the handler does: an owned String per scrape.
        let text = metrics::render(black_box(&snap));
        times.push(t.elapsed());
        cpu.push(thread_cpu() - c);
        out.push_str(&text);
    }
    times.sort();
    cpu.sort();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    let cpu_at = |q: f64| cpu[((cpu.len() as f64 * q) as usize).min(cpu.len() - 1)];
    let lines = out.lines().filter(|l| !l.starts_with('#')).count();
    println!(
        "render /metrics, 200 agents, 4 GPUs: wall median {:?}, p99 {:?}, max {:?}; thread CPU median {:?}, p99 {:?}; {} samples, {} KiB",
        at(0.5),
        at(0.99),
        times[times.len() - 1],
        cpu_at(0.5),
        cpu_at(0.99),
        lines,
        out.len() / 1024
    );
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn config() -> String {
    let mut c = String::from(
        "version: 1\nhost: {name: benchhost}\ndefaults:\n  image: orchestrator-agent:latest\n  health: {http: {port: 8080}, interval: 1s, timeout: 1s, retries: 1, start_period: 1s}\ngroups:\n",
    );
    for g in 0..GROUPS {
        let _ = writeln!(
            c,
            "  group_{g}:\n    slo: {{availability: 99.5%, latency_p99: 1s, error_rate: 0.5%}}\n    agents:"
        );
        for a in 0..AGENTS_PER_GROUP {
            let _ = writeln!(c, "      Agent{g}x{a}: {{}}");
        }
    }
    c
}

fn daemon_rss() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let before = rss_kib();
    rt.block_on(async {
        let h = orch_daemon::testing::Harness::start(&config()).await;
        for g in 0..GROUPS {
            let agents: Vec<String> = (0..AGENTS_PER_GROUP)
                .map(|a| format!("Agent{g}x{a}"))
                .collect();
            for a in &agents {
                h.world.metrics.serve(a, 0, 0, 0);
            }
            h.client.group_start(&format!("group_{g}")).await.unwrap();
        }
        h.until_ready().await;
        // Rounds of availability samples, agent scrapes and publishes.
        for round in 0..25u64 {
            for g in 0..GROUPS {
                for a in 0..AGENTS_PER_GROUP {
                    h.world
                        .metrics
                        .serve(&format!("Agent{g}x{a}"), 10 + round, round % 2, 0);
                }
            }
            tokio::time::sleep(Duration::from_millis(1000)).await;
        }
        let text = h.metrics().await;
        assert!(text.contains("orchestrator_slo_burn_rate{"));
        let after = rss_kib();
        println!(
            "daemon RSS, 200 agents on the Docker fake, metrics and 30 SLO series: {} KiB before start, {} KiB running (+{} KiB); {} agent scrapes",
            before,
            after,
            after.saturating_sub(before),
            h.world.metrics.fetches()
        );
    });
}

fn main() {
    render_time();
    daemon_rss();
}
