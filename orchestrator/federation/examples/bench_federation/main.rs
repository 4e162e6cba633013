//! Benchmarks of the federation bus: real `ZmqBus`es on loopback with CURVE
//! on and the detector's default timing (500 ms heartbeats, suspect after 2
//! missed, down after 3).
//!
//! 1. Detection of a lost peer (link cut by a stopped proxy, and a killed
//!    bus process), and its return.
//! 2. False verdicts during a long run with every core busy and snapshots
//!    flowing both ways.
//! 3. Snapshot latency, publish to receipt on the peer, small and large
//!    bodies.
//! 4. One bus with two peers at idle: CPU and resident memory of its
//!    process.
//!
//! Writes `federation.json` (every figure and the raw samples) and
//! `federation.md` (a section for docs/BENCHMARKS.md) into `--out`.
//! `scripts/bench_federation.sh` builds and runs it; run it with `--help`
//! for the knobs. The `burn` and `peer` modes are its own child processes.

mod body;
mod detect;
mod idle;
mod load;
mod net;
mod procs;
mod report;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use orch_federation::{BusConfig, Inbound, Timing, ZmqBus, keys};
use serde_json::{Map, Value, json};

const USAGE: &str = "\
usage: bench_federation [OPTIONS]
       bench_federation render DIR/federation.json   (the Markdown again)

  --only LIST         comma-separated subset of: idle,latency,detect,kill,soak
  --cuts N            link cuts to time (default 30; two verdicts each)
  --kills N           bus process kills to time (default 20)
  --latency-secs S    seconds per latency scenario (default 30)
  --soak-secs S       length of the false-verdict run (default 600)
  --idle-secs S       idle sampling window (default 60)
  --rate R            snapshots per second (default 1000; each way in the soak)
  --bodies LIST       latency bodies: small,large,mixed (default small,large)
  --burners N         CPU burners during the soak (default: one per core)
  --heartbeat-ms MS   detector settings, to try others than the defaults
  --suspect-after N   (500, 2, 4)
  --down-after N
  --out DIR           where federation.json and federation.md go
                      (default target/bench)
";

#[derive(Debug)]
struct Opts {
    only: Vec<String>,
    cuts: usize,
    kills: usize,
    latency_secs: f64,
    soak_secs: f64,
    idle_secs: f64,
    rate: u32,
    burners: usize,
    timing: Timing,
    bodies: Vec<body::Kind>,
    out: PathBuf,
}

const PARTS: [&str; 5] = ["idle", "latency", "detect", "kill", "soak"];

fn parse(args: &[String]) -> Result<Opts> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut o = Opts {
        only: PARTS.iter().map(|s| (*s).to_owned()).collect(),
        cuts: 30,
        kills: 20,
        latency_secs: 30.0,
        soak_secs: 600.0,
        idle_secs: 60.0,
        rate: 1000,
        burners: cores,
        timing: Timing::default(),
        bodies: vec![body::Kind::Small, body::Kind::Large],
        out: PathBuf::from("target/bench"),
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            print!("{USAGE}");
            std::process::exit(0);
        }
        let value = it
            .next()
            .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        let bad = || format!("{flag}: `{value}` is not a valid value");
        match flag.as_str() {
            "--only" => {
                o.only = value.split(',').map(str::to_owned).collect();
                if let Some(p) = o.only.iter().find(|p| !PARTS.contains(&p.as_str())) {
                    bail!("--only: unknown part `{p}` (known: {})", PARTS.join(","));
                }
            }
            "--cuts" => o.cuts = value.parse().with_context(bad)?,
            "--kills" => o.kills = value.parse().with_context(bad)?,
            "--latency-secs" => o.latency_secs = value.parse().with_context(bad)?,
            "--soak-secs" => o.soak_secs = value.parse().with_context(bad)?,
            "--idle-secs" => o.idle_secs = value.parse().with_context(bad)?,
            "--rate" => o.rate = value.parse().with_context(bad)?,
            "--burners" => o.burners = value.parse().with_context(bad)?,
            "--heartbeat-ms" => o.timing.heartbeat_ms = value.parse().with_context(bad)?,
            "--suspect-after" => o.timing.suspect_after = value.parse().with_context(bad)?,
            "--down-after" => o.timing.down_after = value.parse().with_context(bad)?,
            "--bodies" => {
                o.bodies = value
                    .split(',')
                    .map(|b| body::Kind::parse(b).with_context(bad))
                    .collect::<Result<_>>()?;
            }
            "--out" => o.out = value.into(),
            _ => bail!("unknown option {flag}\n{USAGE}"),
        }
    }
    for (name, secs) in [
        ("--latency-secs", o.latency_secs),
        ("--soak-secs", o.soak_secs),
        ("--idle-secs", o.idle_secs),
    ] {
        if !(secs.is_finite() && secs > 0.0) {
            bail!("{name} must be a positive number of seconds");
        }
    }
    let t = o.timing;
    if t.heartbeat_ms == 0 || t.suspect_after == 0 || t.down_after <= t.suspect_after {
        bail!("the detector needs a heartbeat of at least 1 ms and 0 < suspect-after < down-after");
    }
    if o.rate == 0 {
        bail!("--rate must be at least 1");
    }
    Ok(o)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("burn") => match procs::bind_to_parent() {
            Ok(()) => procs::burn(),
            Err(e) => Err(e),
        },
        Some("peer") => run_peer(),
        Some("render") => render(args.get(1)),
        _ => run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_federation: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The `render` mode: writes `federation.md` again next to the
/// `federation.json` of an earlier run.
fn render(json_path: Option<&String>) -> Result<()> {
    let path = PathBuf::from(json_path.context("usage: bench_federation render FEDERATION.JSON")?);
    let all: Value = serde_json::from_str(
        &std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?,
    )?;
    let md_path = path.with_file_name("federation.md");
    std::fs::write(&md_path, report::markdown(&all))?;
    eprintln!("wrote {}", md_path.display());
    Ok(())
}

/// The `peer` mode: one bus, configured from the environment, reporting
/// every state change on stdout, until killed.
fn run_peer() -> Result<()> {
    procs::bind_to_parent()?;
    let args = procs::PeerArgs::from_env()?;
    net::set_timing(args.timing);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let secret = keys::load_secret(&args.key)?;
        let config = BusConfig {
            host: args.name,
            incarnation: args.incarnation,
            listen: args.listen,
            peers: args.peers,
            timing: net::timing(),
            limits: orch_federation::Limits::default(),
        };
        let (bus, mut inbox) = ZmqBus::start(config, &secret)?;
        while let Some(item) = inbox.recv().await {
            match item {
                Inbound::PeerChanged(c) => {
                    println!("changed {} {} {}", c.peer, c.state, c.incarnation);
                }
                Inbound::Request(r) => {
                    let _ = r.reply(orch_federation::Bytes::from_static(b"null"));
                }
                Inbound::Snapshot { .. } | Inbound::Events { .. } => {}
            }
        }
        drop(bus);
        Ok(())
    })
}

fn run(args: &[String]) -> Result<()> {
    let o = parse(args)?;
    net::set_timing(o.timing);
    let keys_dir = tempfile::tempdir().context("a directory for key files")?;
    let dir = keys_dir.path();
    let machine_before = report::machine();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let wants = |part: &str| o.only.iter().any(|p| p == part);
    let mut results = Map::new();
    // Everything below runs inside `block_on` on the main thread, where
    // child processes are started: they die with this thread.
    runtime.block_on(async {
        if wants("idle") {
            eprintln!("==> idle: one bus, two peers, {} s", o.idle_secs);
            let r = idle::idle(dir, Duration::from_secs_f64(o.idle_secs)).await?;
            results.insert("idle".into(), idle::idle_json(&r));
        }
        if wants("latency") {
            let mut runs = Vec::new();
            for &kind in &o.bodies {
                eprintln!(
                    "==> latency: {} snapshots ({} bytes) at {}/s for {} s",
                    kind.label(),
                    body::size_of(kind),
                    o.rate,
                    o.latency_secs
                );
                let r = load::latency(dir, kind, o.rate, Duration::from_secs_f64(o.latency_secs))
                    .await?;
                let j = load::latency_json(&r);
                eprintln!("  {}", j["latency_ms"]);
                runs.push(j);
            }
            results.insert("latency".into(), Value::Array(runs));
        }
        if wants("detect") {
            eprintln!("==> detection: {} link cuts", o.cuts);
            let r = detect::link_cuts(dir, o.cuts).await?;
            results.insert("link_cuts".into(), detect::cuts_json(&r));
        }
        if wants("kill") {
            eprintln!("==> detection: {} bus process kills", o.kills);
            let r = detect::process_kills(dir, o.kills).await?;
            results.insert("process_kills".into(), detect::kills_json(&r));
        }
        if wants("soak") {
            eprintln!(
                "==> false verdicts: {} s, {} burners, {}/s each way",
                o.soak_secs, o.burners, o.rate
            );
            let r =
                load::soak(dir, o.rate, Duration::from_secs_f64(o.soak_secs), o.burners).await?;
            results.insert("soak".into(), load::soak_json(&r));
        }
        anyhow::Ok(())
    })?;
    let machine_after = report::machine();
    let timing = net::timing();
    let all = json!({
        "command": std::env::var("FEDBENCH_COMMAND").unwrap_or_else(|_| {
            std::iter::once("bench_federation".to_owned()).chain(args.iter().cloned()).collect::<Vec<_>>().join(" ")
        }),
        "date": std::env::var("FEDBENCH_DATE").ok(),
        "commit": std::env::var("FEDBENCH_COMMIT").ok(),
        "machine": machine_before,
        "load_average_after": machine_after["load_average"],
        "settings": {
            "defaults": timing == Timing::default(),
            "heartbeat_ms": timing.heartbeat_ms,
            "suspect_after": timing.suspect_after,
            "down_after": timing.down_after,
            "curve": true,
            "transport": "tcp on 127.0.0.1",
            "libzmq": format!("{}.{}.{}", zmq::version().0, zmq::version().1, zmq::version().2),
        },
        "results": Value::Object(results),
    });
    std::fs::create_dir_all(&o.out).with_context(|| format!("create {}", o.out.display()))?;
    let json_path = o.out.join("federation.json");
    let md_path = o.out.join("federation.md");
    std::fs::write(&json_path, serde_json::to_string_pretty(&all)? + "\n")?;
    std::fs::write(&md_path, report::markdown(&all))?;
    eprintln!("wrote {} and {}", md_path.display(), json_path.display());
    Ok(())
}
