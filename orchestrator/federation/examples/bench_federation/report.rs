//! The machine the run was made on, and the Markdown section made from the
//! results (the same JSON that is written next to it, so the two agree).

use std::fmt::Write as _;

use serde_json::{Value, json};

/// CPU, cores, memory, kernel and load average, from `/proc`.
pub fn machine() -> Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned());
    let mem_kib: Option<u64> = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok());
    let load: Vec<f64> = read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .filter_map(|x| x.parse().ok())
        .collect();
    json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "memory_gib": mem_kib.map(|k| (k as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0),
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "load_average": load,
    })
}

/// Published loss-detection times of other systems (docs/targets), in s.
const OTHERS: [(&str, f64, f64); 3] = [
    ("Serf/Consul (memberlist defaults, 3 nodes)", 6.0, 6.0),
    ("Nomad (10 s TTL + 10 s grace)", 20.0, 30.0),
    ("Kubernetes (node grace period)", 50.0, 50.0),
];

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

/// A time in ms with as many digits as it deserves.
fn ms(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0} ms")
    } else if x >= 10.0 {
        format!("{x:.1} ms")
    } else {
        format!("{x:.2} ms")
    }
}

/// "p50 …, p99 …, max … (n)" of a summary, or a dash.
fn summary(v: &Value) -> String {
    let (Some(p50), Some(p99), Some(max), Some(n)) = (
        num(&v["p50"]),
        num(&v["p99"]),
        num(&v["max"]),
        v["n"].as_u64(),
    ) else {
        return "no samples".into();
    };
    format!(
        "p50 {}, **p99 {}**, max {} (n = {n})",
        ms(p50),
        ms(p99),
        ms(max)
    )
}

fn others_against(p99_ms: Option<f64>) -> String {
    OTHERS
        .iter()
        .map(|(who, lo, hi)| {
            let figure = if lo == hi {
                format!("{lo} s")
            } else {
                format!("{lo}–{hi} s")
            };
            match p99_ms {
                Some(p) if p > 0.0 => {
                    let (rlo, rhi) = (lo * 1000.0 / p, hi * 1000.0 / p);
                    let ratio = if lo == hi {
                        format!("{rlo:.1}×")
                    } else {
                        format!("{rlo:.1}–{rhi:.1}×")
                    };
                    format!("{who}: {figure} ({ratio} our p99)")
                }
                _ => format!("{who}: {figure}"),
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The Markdown section for docs/BENCHMARKS.md.
pub fn markdown(all: &Value) -> String {
    let r = &all["results"];
    let s = &all["settings"];
    let m = &all["machine"];
    let mut out = String::new();
    let _ = writeln!(out, "## Federation bus\n");
    let when = match (all["date"].as_str(), all["commit"].as_str()) {
        (Some(d), Some(c)) => format!(" on {d} at commit `{c}`"),
        (Some(d), None) => format!(" on {d}"),
        _ => String::new(),
    };
    let _ = writeln!(
        out,
        "Command: `{}`{when}. Real `ZmqBus`es over TCP on 127.0.0.1 with CURVE on \
         (libzmq {}), heartbeat {} ms, suspect after {} and down after {} missed \
         heartbeats{}.\n",
        all["command"].as_str().unwrap_or("?"),
        s["libzmq"].as_str().unwrap_or("?"),
        s["heartbeat_ms"],
        s["suspect_after"],
        s["down_after"],
        if s["defaults"] == json!(false) {
            " (**not** the defaults)"
        } else {
            " (the defaults)"
        },
    );
    let load = |v: &Value| {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_f64)
                    .map(|x| format!("{x:.2}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
    };
    let _ = writeln!(
        out,
        "Machine: {}, {} cores, {} GiB, Linux {}. Load average {} at the start and {} at \
         the end: the machine was shared with other builds during the run, so every time \
         here is what the bus got, not what it needs alone.\n",
        m["cpu"].as_str().unwrap_or("unknown CPU"),
        m["cores"],
        m["memory_gib"],
        m["kernel"].as_str().unwrap_or("?"),
        load(&m["load_average"]),
        load(&all["load_average_after"]),
    );
    let _ = writeln!(
        out,
        "| what | measured | target | published figures of others |"
    );
    let _ = writeln!(out, "|---|---|---|---|");

    let cuts = &r["link_cuts"];
    if !cuts.is_null() {
        let n = cuts["down_ms"]["n"].as_u64().unwrap_or(0);
        let _ = writeln!(
            out,
            "| lost peer, link cut (both TCP proxies stopped): cut → `down`, both sides of {} cuts | {} | p99 < 2 s | {} |",
            n / 2,
            summary(&cuts["down_ms"]),
            others_against(num(&cuts["down_ms"]["p99"])),
        );
        let _ = writeln!(
            out,
            "| same, cut → `suspect` | {} | | |",
            summary(&cuts["suspect_ms"])
        );
        let _ = writeln!(
            out,
            "| link restored → seen `alive` again (same processes, ZeroMQ reconnects) | {} | heals by itself | |",
            summary(&cuts["alive_again_ms"])
        );
    }
    let kills = &r["process_kills"];
    if !kills.is_null() {
        let _ = writeln!(
            out,
            "| lost peer, bus process killed (`SIGKILL`): kill → `down` | {} | p99 < 2 s | {} |",
            summary(&kills["down_ms"]),
            others_against(num(&kills["down_ms"]["p99"])),
        );
        let _ = writeln!(
            out,
            "| killed bus started again → seen `alive` with its new incarnation (includes process start) | {} | | |",
            summary(&kills["restarted_alive_ms"])
        );
    }
    let soak = &r["soak"];
    if !soak.is_null() {
        let v = &soak["verdicts"];
        let _ = writeln!(
            out,
            "| false verdicts: {:.0} s, {} CPU burners, {} snapshots/s each way (1 in 100 large) | **{} down**, {} suspect; machine CPU {:.0}% busy; oldest heartbeat seen {} | 0 down | |",
            num(&soak["seconds"]).unwrap_or(0.0),
            soak["burners"],
            soak["rate_each_way_per_s"],
            v["down"],
            v["suspect"],
            num(&soak["machine_cpu_busy_percent"]).unwrap_or(0.0),
            ms(num(&soak["worst_heartbeat_age_ms"]).unwrap_or(0.0)),
        );
    }
    if let Some(runs) = r["latency"].as_array() {
        for run in runs {
            let bytes = run["body_bytes"].as_u64().unwrap_or(0);
            let size = if bytes >= 1024 {
                format!("{:.0} KB of JSON, 54 agents", bytes as f64 / 1024.0)
            } else {
                format!("{bytes} B of JSON")
            };
            let _ = writeln!(
                out,
                "| snapshot publish → receipt on the peer, {} ({size}) at {}/s for {:.0} s | {}; {} of {} received; CPU per message: bus threads {}, ZeroMQ I/O {}, whole process {}; bus threads runnable but waiting for a CPU {:.0}% of the time | p99 < 20 ms | libzmq alone ~25 µs (no CURVE, no JSON) |",
                run["body"].as_str().unwrap_or("?"),
                run["rate_per_s"],
                num(&run["seconds"]).unwrap_or(0.0),
                summary(&run["latency_ms"]),
                run["received"],
                run["published"],
                ms(num(&run["cpu_ms_per_message"]["bus_threads"]).unwrap_or(0.0)),
                ms(num(&run["cpu_ms_per_message"]["zeromq_io_threads"]).unwrap_or(0.0)),
                ms(num(&run["cpu_ms_per_message"]["whole_process"]).unwrap_or(0.0)),
                num(&run["bus_threads_waiting_for_cpu_percent"]).unwrap_or(0.0),
            );
        }
    }
    if !soak.is_null() {
        let received: u64 = soak["received"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_u64).sum())
            .unwrap_or(0);
        let published: u64 = soak["published"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_u64).sum())
            .unwrap_or(0);
        let _ = writeln!(
            out,
            "| same, during the false-verdict run (both directions, burners on) | {}; {received} of {published} received | | |",
            summary(&soak["latency_ms"]),
        );
    }
    let idle = &r["idle"];
    if !idle.is_null() {
        let mib = |k: &Value| k.as_u64().map_or(0.0, |k| k as f64 / 1024.0);
        let last = &idle["last"];
        let _ = writeln!(
            out,
            "| one bus with two peers, idle, {:.0} s: CPU of its process | {:.2}% of one core | daemon idle < 1% | |",
            num(&idle["seconds"]).unwrap_or(0.0),
            num(&idle["cpu_percent_of_one_core"]).unwrap_or(0.0),
        );
        let _ = writeln!(
            out,
            "| same: resident memory | {:.1} MiB at the end (max {:.1}; {:.1} MiB private, {:.1} MiB mapped files), {} threads | daemon idle < 30 MiB | |",
            mib(&last["rss_kib"]),
            mib(&idle["max_rss_kib"]),
            mib(&last["rss_anon_kib"]),
            mib(&last["rss_file_kib"]),
            last["threads"],
        );
    }
    let notes = notes(all);
    if !notes.is_empty() {
        let _ = writeln!(out);
        for note in notes {
            let _ = writeln!(out, "- {note}");
        }
    }
    let _ = writeln!(
        out,
        "\nRaw samples: `federation.json` next to this file. Published figures are quoted \
         from docs/targets (their own documentation and defaults), not measured here."
    );
    out
}

/// What the figures mean, where the data says something a table cannot.
fn notes(all: &Value) -> Vec<String> {
    let r = &all["results"];
    let s = &all["settings"];
    let mut notes = Vec::new();
    let (Some(hb), Some(down)) = (s["heartbeat_ms"].as_u64(), s["down_after"].as_u64()) else {
        return notes;
    };
    let bound = (hb * down) as f64;
    let worst = [&r["link_cuts"], &r["process_kills"]]
        .iter()
        .filter_map(|m| num(&m["down_ms"]["max"]))
        .fold(None, |acc: Option<f64>, x| {
            Some(acc.map_or(x, |a| a.max(x)))
        });
    if let Some(worst) = worst {
        notes.push(format!(
            "A peer is declared down once it has been silent for more than {down} × {hb} ms \
             = {bound:.0} ms, so a cut just after a heartbeat arrived is seen down {bound:.0} ms \
             later and one just before the next heartbeat about {:.0} ms later. The cuts are \
             spread over the heartbeat interval, so the slowest of them (here {}) sits at that \
             bound: only a lower threshold (fewer missed heartbeats, or a shorter interval) \
             brings it lower.",
            bound - hb as f64,
            ms(worst),
        ));
    }
    for run in r["latency"].as_array().into_iter().flatten() {
        let (Some(p99), Some(wait)) = (
            num(&run["latency_ms"]["p99"]),
            num(&run["bus_threads_waiting_for_cpu_percent"]),
        ) else {
            continue;
        };
        // A stream over its target while its threads queued for a CPU a
        // good part of the time: say so, with what it needed.
        if p99 > 20.0 && wait > 20.0 {
            let per = num(&run["cpu_ms_per_message"]["bus_threads"]).unwrap_or(0.0)
                + num(&run["cpu_ms_per_message"]["zeromq_io_threads"]).unwrap_or(0.0);
            let rate = num(&run["rate_per_s"]).unwrap_or(0.0);
            let mut note = format!(
                "The {} stream's p99 of {} is queueing: its bus threads were runnable but \
                 waiting for a CPU {wait:.0}% of the time (the machine's other load). The bus \
                 needs {} of CPU per message at both ends together, {:.0}% of one core at \
                 {rate:.0}/s; what it did not get, the queue between the two hosts absorbed.",
                run["body"].as_str().unwrap_or("?"),
                ms(p99),
                ms(per),
                per * rate / 10.0,
            );
            let (sent, got) = (run["published"].as_u64(), run["received"].as_u64());
            if let (Some(sent), Some(got)) = (sent, got)
                && got < sent
            {
                let _ = write!(
                    note,
                    " Messages that found that queue full (ZeroMQ's high-water mark, 1000 \
                     messages) were dropped: {got} of {sent} arrived."
                );
            }
            notes.push(note);
        }
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ratio_to_others_is_their_figure_over_our_p99() {
        let text = others_against(Some(2000.0));
        assert!(text.contains("6 s (3.0× our p99)"), "{text}");
        assert!(text.contains("20–30 s (10.0–15.0× our p99)"), "{text}");
        assert!(text.contains("50 s (25.0× our p99)"), "{text}");
        assert!(!others_against(None).contains('×'));
    }

    #[test]
    fn a_slow_stream_starved_of_cpu_is_explained_and_a_fast_one_is_not() {
        let run = |p99: f64, wait: f64| {
            json!({"body": "large", "rate_per_s": 1000, "latency_ms": {"p99": p99},
                   "published": 1000, "received": 900,
                   "bus_threads_waiting_for_cpu_percent": wait,
                   "cpu_ms_per_message": {"bus_threads": 0.4, "zeromq_io_threads": 0.1}})
        };
        let all = |runs: Vec<Value>| {
            json!({"settings": {"heartbeat_ms": 500, "down_after": 4},
                   "results": {"latency": runs}})
        };
        let slow = notes(&all(vec![run(700.0, 70.0)]));
        assert_eq!(slow.len(), 1, "{slow:?}");
        assert!(slow[0].contains("waiting for a CPU 70%"), "{slow:?}");
        assert!(slow[0].contains("0.50 ms of CPU per message"), "{slow:?}");
        assert!(slow[0].contains("50% of one core"), "{slow:?}");
        assert!(notes(&all(vec![run(5.0, 70.0), run(700.0, 10.0)])).is_empty());
        assert!(slow[0].contains("900 of 1000 arrived"), "{slow:?}");
        let mut complete = run(700.0, 70.0);
        complete["received"] = json!(1000);
        let n = notes(&all(vec![complete]));
        assert!(n.len() == 1 && !n[0].contains("dropped"), "{n:?}");
    }

    #[test]
    fn the_detection_bound_is_the_silence_threshold() {
        let all = json!({"settings": {"heartbeat_ms": 500, "down_after": 4},
                         "results": {"link_cuts": {"down_ms": {"max": 1999.0}},
                                     "process_kills": {"down_ms": {"max": 2001.5}}}});
        let n = notes(&all);
        assert_eq!(n.len(), 1, "{n:?}");
        assert!(n[0].contains("4 × 500 ms = 2000 ms"), "{n:?}");
        assert!(n[0].contains("about 1500 ms later"), "{n:?}");
        assert!(n[0].contains("(here 2002 ms)"), "{n:?}");
    }

    #[test]
    fn the_section_has_a_row_per_measurement_that_ran() {
        let summary = json!({"n": 4, "min": 1.0, "p50": 1.5, "p90": 2.0, "p99": 2.5, "max": 2.5, "mean": 1.7});
        let all = json!({
            "command": "scripts/bench_federation.sh",
            "machine": {"cpu": "Test CPU", "cores": 2, "memory_gib": 24.0, "kernel": "6.1", "load_average": [1.0, 2.0, 3.0]},
            "load_average_after": [4.0, 5.0, 6.0],
            "settings": {"libzmq": "4.3.4", "heartbeat_ms": 500, "suspect_after": 2, "down_after": 4},
            "results": {"latency": [{"body": "small", "body_bytes": 300, "rate_per_s": 1000,
                                     "seconds": 30.0, "published": 30000, "received": 29999,
                                     "latency_ms": summary}]}
        });
        let md = markdown(&all);
        assert!(
            md.contains("p50 1.50 ms, **p99 2.50 ms**, max 2.50 ms (n = 4)"),
            "{md}"
        );
        assert!(md.contains("29999 of 30000 received"), "{md}");
        assert!(
            md.contains("1.00 2.00 3.00 at the start and 4.00 5.00 6.00"),
            "{md}"
        );
        assert!(
            !md.contains("`down`"),
            "no detection row without its results: {md}"
        );
    }
}
