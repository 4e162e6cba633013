//! `/work`: a simulated inference. It burns the configured CPU time, waits
//! the configured latency (with jitter), fails at the configured rate, and
//! records its duration in `agent_work_duration_seconds`; the requests in
//! it at any moment are `agent_queue_depth`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agent_sdk::header::{ALLOW, HeaderValue};
use agent_sdk::metrics::LATENCY_BUCKETS;
use agent_sdk::{
    Body, BodyExt, Gauge, Histogram, Identity, Incoming, Limited, Method, MetricsError, Registry,
    Request, Response, StatusCode, json,
};

use crate::knobs::WorkKnobs;

/// Request bodies past this are refused: the endpoint only simulates work.
const MAX_INPUT_BYTES: usize = 1 << 20;

/// A splitmix64 generator shared by all requests. Jitter and error draws
/// need no cryptographic quality, and this keeps a random-number crate out
/// of a binary that is rebuilt often.
#[derive(Debug)]
pub struct Rng {
    state: AtomicU64,
}

impl Rng {
    const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

    pub fn new(seed: u64) -> Self {
        Self {
            state: AtomicU64::new(seed),
        }
    }

    /// Seeded from the clock and pid, so replicas started together differ.
    pub fn from_clock() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self::new(nanos ^ (u64::from(std::process::id()) << 32))
    }

    pub fn next_u64(&self) -> u64 {
        // splitmix64 is a counter through a mixer, so one atomic add makes
        // it safe to share without a lock.
        let mut z = self
            .state
            .fetch_add(Self::GAMMA, Ordering::Relaxed)
            .wrapping_add(Self::GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// How long one request waits: `latency` ± `jitter`, never below zero.
pub fn sample_latency(knobs: &WorkKnobs, rng: &Rng) -> Duration {
    if knobs.jitter.is_zero() {
        return knobs.latency;
    }
    let offset = (rng.unit() * 2.0 - 1.0) * knobs.jitter.as_secs_f64();
    let secs = (knobs.latency.as_secs_f64() + offset).max(0.0);
    Duration::try_from_secs_f64(secs).unwrap_or(knobs.latency)
}

/// The CPU time the calling thread has used (the wall clock where the
/// system cannot say).
fn thread_cpu(wall: Instant) -> Duration {
    use nix::time::{ClockId, clock_gettime};
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_else(|_| wall.elapsed())
}

/// Burns `amount` of this thread's CPU time: the cost of a request that
/// computes (`AGENT_WORK_CPU`), so CPU-based autoscaling has load to see.
pub fn burn_cpu(amount: Duration) {
    let wall = Instant::now();
    let start = thread_cpu(wall);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    while thread_cpu(wall).saturating_sub(start) < amount {
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        std::hint::black_box(x);
    }
}

/// One request in `/work`, counted in the queue gauge while it lives.
struct InQueue(Gauge);

impl InQueue {
    fn enter(gauge: &Gauge) -> Self {
        gauge.add(1.0);
        InQueue(gauge.clone())
    }
}

impl Drop for InQueue {
    fn drop(&mut self) {
        self.0.add(-1.0);
    }
}

/// The `/work` handler and what it needs; cloned into each request.
#[derive(Debug, Clone)]
pub struct Work {
    knobs: WorkKnobs,
    rng: Arc<Rng>,
    duration: Histogram,
    queue: Gauge,
    agent: Option<String>,
    replica: Option<u32>,
}

impl Work {
    pub fn new(
        knobs: WorkKnobs,
        registry: &Registry,
        identity: &Identity,
    ) -> Result<Self, MetricsError> {
        let duration = registry.histogram(
            "agent_work_duration_seconds",
            "Time taken by /work requests, failed ones included, in seconds.",
            &LATENCY_BUCKETS,
        )?;
        let queue = registry.gauge(
            "agent_queue_depth",
            "Requests in /work now: being computed or waiting.",
        )?;
        Ok(Self {
            knobs,
            rng: Arc::new(Rng::from_clock()),
            duration,
            queue,
            agent: identity.agent.clone(),
            replica: identity.replica,
        })
    }

    pub async fn handle(self, req: Request<Incoming>) -> Response<Body> {
        if req.method() != Method::GET && req.method() != Method::POST {
            let mut response = json(
                StatusCode::METHOD_NOT_ALLOWED,
                &serde_json::json!({"ok": false, "error": "use GET or POST"}),
            );
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, POST"));
            return response;
        }
        let started = Instant::now();
        let _queued = InQueue::enter(&self.queue);
        // Reading the body keeps the connection reusable and lets a client
        // see its input was taken.
        let input_bytes = match Limited::new(req.into_body(), MAX_INPUT_BYTES)
            .collect()
            .await
        {
            Ok(collected) => collected.to_bytes().len(),
            Err(_) => {
                return json(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &serde_json::json!({"ok": false, "error": format!("input over {MAX_INPUT_BYTES} bytes or unreadable")}),
                );
            }
        };
        if !self.knobs.cpu.is_zero() {
            let cpu = self.knobs.cpu;
            // Off the async workers: a burning request must not stall the
            // health endpoint.
            let _ = tokio::task::spawn_blocking(move || burn_cpu(cpu)).await;
        }
        tokio::time::sleep(sample_latency(&self.knobs, &self.rng)).await;
        let failed = self.rng.unit() < self.knobs.error_rate;
        let took = started.elapsed();
        self.duration.observe_duration(took);
        let latency_ms = (took.as_secs_f64() * 1e6).round() / 1e3;
        if failed {
            json(
                StatusCode::INTERNAL_SERVER_ERROR,
                &serde_json::json!({
                    "ok": false,
                    "error": "simulated failure (AGENT_WORK_ERROR_RATE)",
                    "agent": self.agent,
                    "replica": self.replica,
                    "latency_ms": latency_ms,
                }),
            )
        } else {
            json(
                StatusCode::OK,
                &serde_json::json!({
                    "ok": true,
                    "agent": self.agent,
                    "replica": self.replica,
                    "latency_ms": latency_ms,
                    "input_bytes": input_bytes,
                }),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burning_uses_the_cpu_time_asked_for() {
        let wall = Instant::now();
        let before = thread_cpu(wall);
        burn_cpu(Duration::from_millis(30));
        let used = thread_cpu(wall) - before;
        assert!(used >= Duration::from_millis(30), "{used:?}");
    }

    #[test]
    fn the_queue_gauge_counts_requests_inside() {
        let gauge = Gauge::default();
        let a = InQueue::enter(&gauge);
        let b = InQueue::enter(&gauge);
        assert_eq!(gauge.get(), 2.0);
        drop(a);
        assert_eq!(gauge.get(), 1.0);
        drop(b);
        assert_eq!(gauge.get(), 0.0);
    }

    #[test]
    fn unit_stays_in_range_and_spreads() {
        let rng = Rng::new(7);
        let draws: Vec<f64> = (0..10_000).map(|_| rng.unit()).collect();
        assert!(draws.iter().all(|d| (0.0..1.0).contains(d)));
        let low = draws.iter().filter(|&&d| d < 0.5).count();
        assert!((4_500..5_500).contains(&low), "{low} of 10000 below 0.5");
    }

    #[test]
    fn latency_without_jitter_is_exact() {
        let knobs = WorkKnobs {
            latency: Duration::from_millis(20),
            ..WorkKnobs::default()
        };
        assert_eq!(
            sample_latency(&knobs, &Rng::new(1)),
            Duration::from_millis(20)
        );
    }

    #[test]
    fn jitter_stays_within_bounds_and_above_zero() {
        let rng = Rng::new(3);
        let knobs = WorkKnobs {
            latency: Duration::from_millis(100),
            jitter: Duration::from_millis(30),
            error_rate: 0.0,
            cpu: Duration::ZERO,
        };
        let samples: Vec<Duration> = (0..1000).map(|_| sample_latency(&knobs, &rng)).collect();
        assert!(
            samples
                .iter()
                .all(|d| (Duration::from_millis(70)..=Duration::from_millis(130)).contains(d))
        );
        assert!(samples.iter().any(|d| *d < Duration::from_millis(90)));
        assert!(samples.iter().any(|d| *d > Duration::from_millis(110)));

        let wide = WorkKnobs {
            latency: Duration::from_millis(5),
            jitter: Duration::from_millis(50),
            error_rate: 0.0,
            cpu: Duration::ZERO,
        };
        assert!((0..1000).any(|_| sample_latency(&wide, &rng).is_zero()));
    }
}
