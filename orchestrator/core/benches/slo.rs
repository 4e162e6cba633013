//! SLO engine benchmark: 20 groups × 3 SLIs with 10 replicas each (a
//! 200-agent host), 30 days of history. Plain `Instant` timing, no harness:
//! `cargo bench -p orch-core --bench slo`.
//!
//! Measured: one availability sample of every group; one scrape of every
//! replica (parse the text, extract the series, record the delta); the
//! report of every group; the state's snapshot as JSON. Printed: medians,
//! p95, the engine's heap bytes and the JSON size.

use std::hint::black_box;
use std::time::{Duration, Instant};

use orch_core::model::Slo;
use orch_core::slo::promtext::{self, Limits};
use orch_core::slo::{AgentScrape, AgentSeries, AvailabilitySample, SloEngine, SloState};
use orch_core::units::{Duration as Span, Percent};

const GROUPS: usize = 20;
const REPLICAS: usize = 10;
const ITERATIONS: usize = 300;
const MINUTE: u64 = 60_000;
/// 2023-11-14 00:00 UTC.
const START: u64 = 1_699_920_000_000;
const BUCKETS: [&str; 15] = [
    "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5",
    "10", "30", "60",
];

/// What the reference agent writes after `n` `/work` requests.
fn exposition(n: u64) -> String {
    let mut out = String::from(
        "# HELP agent_requests_total Requests received, by endpoint.\n\
         # TYPE agent_requests_total counter\n",
    );
    for endpoint in ["/health", "/ready", "/info", "/metrics", "unmatched"] {
        out.push_str(&format!(
            "agent_requests_total{{endpoint=\"{endpoint}\"}} {}\n",
            n / 3
        ));
    }
    out.push_str(&format!(
        "agent_requests_total{{endpoint=\"/work\"}} {n}\n\
         # HELP agent_errors_total Failed requests.\n\
         # TYPE agent_errors_total counter\n\
         agent_errors_total {}\n\
         # HELP agent_work_duration_seconds Time of each /work request.\n\
         # TYPE agent_work_duration_seconds histogram\n",
        n / 500
    ));
    for (i, le) in BUCKETS.iter().enumerate() {
        // Roughly log-spread durations: most requests well under a second.
        let share = ((i + 1) as u64 * 100 / BUCKETS.len() as u64).min(100);
        out.push_str(&format!(
            "agent_work_duration_seconds_bucket{{le=\"{le}\"}} {}\n",
            n * share / 100
        ));
    }
    out.push_str(&format!(
        "agent_work_duration_seconds_bucket{{le=\"+Inf\"}} {n}\n\
         agent_work_duration_seconds_sum {}\n\
         agent_work_duration_seconds_count {n}\n\
         # HELP agent_up 1 while serving.\n# TYPE agent_up gauge\nagent_up 1\n\
         # HELP agent_healthy 1 while healthy.\n# TYPE agent_healthy gauge\nagent_healthy 1\n\
         # HELP agent_start_time_seconds Process start.\n# TYPE agent_start_time_seconds gauge\n\
         agent_start_time_seconds 1699920000\n",
        n as f64 * 0.2
    ));
    out
}

fn stats(name: &str, mut times: Vec<Duration>, per: &str) {
    times.sort_unstable();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{name}: median {:.1} us, p95 {:.1} us, min {:.1} us over {} runs{per}",
        us(times[times.len() / 2]),
        us(times[times.len() * 95 / 100]),
        us(times[0]),
        times.len(),
    );
}

fn main() {
    let slo = Slo {
        availability: Some(Percent::parse("99.5%").expect("percent")),
        latency_p99: Some(Span::from_secs(2)),
        error_rate: Some(Percent::parse("0.2%").expect("percent")),
        window: Span::from_secs(30 * 86_400),
    };
    let names: Vec<String> = (0..GROUPS).map(|g| format!("group_{g:02}")).collect();
    let mut engine = SloEngine::new(names.iter().map(|n| (n.as_str(), &slo)));
    let series = AgentSeries::default();
    let limits = Limits::default();
    let replica_ids: Vec<String> = (0..REPLICAS).map(|r| format!("Agent{r}#0")).collect();

    // 30 days of history, one record a minute per group and SLI, so every
    // ring is full when reporting is measured.
    let fill = Instant::now();
    let days = 30 * 24 * 60;
    let mut requests = 0u64;
    for m in 0..days {
        let now = START + m * MINUTE;
        requests += 120;
        let scrape = {
            let text = exposition(requests);
            let exp = promtext::parse(text.as_bytes(), &limits).expect("exposition parses");
            AgentScrape::extract(&exp, &series).expect("series extract")
        };
        for name in &names {
            engine
                .record_availability(
                    now,
                    name,
                    AvailabilitySample {
                        wanted: REPLICAS as u64,
                        healthy: REPLICAS as u64,
                        excused: 0,
                    },
                )
                .expect("availability");
            engine
                .record_scrape(now, name, &replica_ids[0], scrape.clone())
                .expect("scrape");
        }
    }
    println!(
        "history: 30 days × {GROUPS} groups filled in {:.0} ms",
        fill.elapsed().as_secs_f64() * 1e3
    );
    let mut now = START + days * MINUTE;

    // One availability sample of every group.
    let mut times = Vec::with_capacity(ITERATIONS);
    for _ in 0..ITERATIONS {
        now += 10_000;
        let start = Instant::now();
        for name in &names {
            black_box(engine.record_availability(
                now,
                name,
                AvailabilitySample {
                    wanted: 10,
                    healthy: 9,
                    excused: 0,
                },
            ))
            .expect("availability");
        }
        times.push(start.elapsed());
    }
    stats(&format!("availability sample, {GROUPS} groups"), times, "");

    // One scrape of every replica: parse, extract, record.
    let texts: Vec<String> = (0..ITERATIONS + 1)
        .map(|i| exposition(requests + 50 * i as u64))
        .collect();
    let text_len = texts[0].len();
    let mut times = Vec::with_capacity(ITERATIONS);
    for text in &texts {
        now += 10_000;
        let start = Instant::now();
        for name in &names {
            for id in &replica_ids {
                let exp = promtext::parse(text.as_bytes(), &limits).expect("parses");
                let scrape = AgentScrape::extract(&exp, &series).expect("extracts");
                black_box(engine.record_scrape(now, name, id, scrape)).expect("records");
            }
        }
        times.push(start.elapsed());
    }
    stats(
        &format!(
            "scrape of {} replicas ({text_len}-byte expositions)",
            GROUPS * REPLICAS
        ),
        times,
        "",
    );

    // The report of every group: 60 SLIs × 7 windows.
    let mut times = Vec::with_capacity(ITERATIONS);
    let mut figures = 0;
    for _ in 0..ITERATIONS {
        let start = Instant::now();
        let report = black_box(engine.report(black_box(now)));
        times.push(start.elapsed());
        figures = report
            .iter()
            .flat_map(|g| &g.slis)
            .map(|s| s.windows.len())
            .sum::<usize>();
    }
    stats(
        &format!("report, {GROUPS} groups × 3 SLIs"),
        times,
        &format!("; {figures} windows"),
    );

    // The state as written to disk, and read back.
    let mut times = Vec::with_capacity(ITERATIONS / 10);
    let mut json = String::new();
    for _ in 0..ITERATIONS / 10 {
        let start = Instant::now();
        json = black_box(engine.snapshot().to_json());
        times.push(start.elapsed());
    }
    stats("snapshot as JSON", times, "");
    let mut times = Vec::with_capacity(ITERATIONS / 10);
    for _ in 0..ITERATIONS / 10 {
        let start = Instant::now();
        let state = SloState::from_json(&json).expect("reads back");
        black_box(SloEngine::restore(state).expect("restores"));
        times.push(start.elapsed());
    }
    stats("restore from JSON", times, "");

    let heap = engine.heap_bytes();
    println!(
        "memory: {heap} heap bytes ({:.1} KiB per SLI, {:.2} MiB in all) with {} replica baselines; \
         state {} bytes as JSON",
        heap as f64 / (GROUPS * 3) as f64 / 1024.0,
        heap as f64 / (1024.0 * 1024.0),
        GROUPS * REPLICAS,
        json.len(),
    );
}
