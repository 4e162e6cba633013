//! `gpu`: GPUs, their slices and owners, and what is free; and
//! `gpu mig enable|disable`. Asks the daemon when one runs; otherwise reads
//! NVML directly (owners are then unknown).

use std::io::{IsTerminal, Write as _};

use anyhow::Result;
use orch_api::wire::{Mig, Slice};
use orch_api::{Accepted, GpuReport, GpuStatus};
use orch_core::units::ByteSize;

use super::daemon::{block_on, fail};
use crate::exit::{self, Exit};
use crate::output::{Format, Out, Table, print_data};

/// The daemon's report, or a local one read from NVML when no daemon answers.
fn report(client: &orch_api::Client, nvml: Option<&std::path::Path>) -> Result<(GpuReport, bool)> {
    match block_on(client.gpu())? {
        Ok(r) => Ok((r, true)),
        Err(e) if e.is_unreachable() => Ok((local_report(nvml), false)),
        Err(e) => Err(fail(e)),
    }
}

fn local_report(nvml: Option<&std::path::Path>) -> GpuReport {
    use orch_gpu::GpuBackend as _;
    match orch_gpu::NvmlBackend::open(nvml) {
        Err(e) => GpuReport {
            available: false,
            reason: Some(e.to_string()),
            library: None,
            driver_version: None,
            gpus: Vec::new(),
        },
        Ok(b) => match b.inventory() {
            Err(e) => GpuReport {
                available: false,
                reason: Some(e.to_string()),
                library: Some(b.library_path().display().to_string()),
                driver_version: b.driver_version().ok(),
                gpus: Vec::new(),
            },
            Ok(gpus) => GpuReport {
                available: true,
                reason: None,
                library: Some(b.library_path().display().to_string()),
                driver_version: b.driver_version().ok(),
                gpus: gpus
                    .into_iter()
                    .map(|info| {
                        let telemetry = b
                            .telemetry(info.index)
                            .ok()
                            .map(|t| orch_api::convert::gpu_telemetry(&t));
                        // No daemon: no owners known, and no policies applied.
                        let free = orch_api::report::free_capacity(&info, &[], &[]);
                        GpuStatus {
                            info: orch_api::convert::gpu_info(&info),
                            telemetry,
                            slices: Vec::new(),
                            free,
                            policy: None,
                            usage: Vec::new(),
                            unowned: Vec::new(),
                        }
                    })
                    .collect(),
            },
        },
    }
}

fn mig_text(m: &Mig) -> String {
    match m {
        Mig::Unsupported => "no MIG".into(),
        Mig::Disabled {
            pending_enable: false,
        } => "off".into(),
        Mig::Disabled {
            pending_enable: true,
        } => "off (on after reset)".into(),
        Mig::Enabled {
            pending_disable: false,
            instances,
            ..
        } => format!("on, {} instance(s)", instances.len()),
        Mig::Enabled {
            pending_disable: true,
            ..
        } => "on (off after reset)".into(),
    }
}

fn free_text(f: &orch_api::FreeCapacity) -> String {
    let mut parts = Vec::new();
    if let Some(m) = f.mps_memory_bytes {
        parts.push(format!("mps {} memory", human_size(m)));
    }
    if let Some(c) = f.mps_compute_basis_points {
        parts.push(format!("{}% compute", c / 100));
    }
    if let Some(n) = f.mps_clients {
        parts.push(format!("{n} clients"));
    }
    if let (Some(m), Some(c)) = (f.mig_memory_slices, f.mig_compute_slices) {
        parts.push(format!("{m} memory / {c} compute slices"));
    }
    if f.whole_gpu_free {
        parts.push("whole GPU free".into());
    }
    parts.join(", ")
}

/// Memory used against a limit: `1.5g/4.0g (37%)`, or `1.5g` with none.
pub fn used_of(used: u64, limit: Option<u64>) -> String {
    match limit {
        Some(l) if l > 0 => format!(
            "{}/{} ({}%)",
            human_size(used),
            human_size(l),
            used.saturating_mul(100) / l
        ),
        _ => human_size(used),
    }
}

/// Sizes rounded to one decimal in GiB/MiB, for people.
pub fn human_size(bytes: u64) -> String {
    let b = bytes as f64;
    if bytes >= ByteSize::GIB {
        format!("{:.1}g", b / ByteSize::GIB as f64)
    } else {
        format!("{:.0}m", b / ByteSize::MIB as f64)
    }
}

pub fn show(client: &orch_api::Client, nvml: Option<&std::path::Path>, out: &Out) -> Result<()> {
    let (r, from_daemon) = report(client, nvml)?;
    if out.format != Format::Table {
        return print_data(out.format, &r);
    }
    render(&r, from_daemon, out);
    Ok(())
}

/// A GPU report as tables; `from_daemon: false` when read from NVML here.
pub fn render(r: &GpuReport, from_daemon: bool, out: &Out) {
    if !r.available {
        println!(
            "{} {}",
            out.yellow("no GPUs usable:"),
            r.reason.as_deref().unwrap_or("?")
        );
        println!("CPU-only groups run normally; groups with GPU agents cannot start on this host.");
        return;
    }
    println!(
        "{} {} (driver {}){}",
        out.bold("nvml"),
        r.library.as_deref().unwrap_or("?"),
        r.driver_version.as_deref().unwrap_or("?"),
        if from_daemon {
            String::new()
        } else {
            out.dim("  [no daemon: slices and owners unknown]")
        }
    );
    let mut t = Table::new([
        "GPU", "NAME", "MEMORY", "USED", "UTIL", "TEMP", "POWER", "MIG", "SHARING", "FREE",
    ]);
    for g in &r.gpus {
        let (used, util, temp, power) = match &g.telemetry {
            Some(t) => (
                human_size(t.memory_used_bytes),
                format!("{}%", t.utilization_gpu_basis_points / 100),
                format!("{}C", t.temperature_celsius),
                format!("{}W", t.power_mw / 1000),
            ),
            None => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        t.row([
            if g.info.lost {
                out.red(&format!("{} LOST", g.info.index))
            } else {
                g.info.index.to_string()
            },
            g.info.name.clone(),
            human_size(g.info.memory_total_bytes),
            used,
            util,
            temp,
            power,
            mig_text(&g.info.mig),
            g.free.sharing.clone(),
            free_text(&g.free),
        ]);
    }
    print!("{}", t.render(out));
    let slices: Vec<_> = r.gpus.iter().flat_map(|g| g.slices.iter()).collect();
    if from_daemon {
        println!();
        if slices.is_empty() {
            println!("no slices given out");
        } else {
            let mut t = Table::new(["OWNER", "GROUP", "SLICE", "DEVICE", "USED", "UTIL"]);
            for s in slices {
                let used = r
                    .gpus
                    .iter()
                    .flat_map(|g| g.usage.iter())
                    .find(|u| u.replica == s.replica);
                let device = match &s.slice {
                    Slice::Mig {
                        device_uuid: Some(u),
                        ..
                    } => u.clone(),
                    other => other.gpu_uuid().to_string(),
                };
                t.row([
                    s.replica.to_string(),
                    s.group.clone(),
                    s.slice.to_string(),
                    device,
                    used.map(|u| used_of(u.memory_used_bytes, u.memory_limit_bytes))
                        .unwrap_or_else(|| "-".into()),
                    used.and_then(|u| u.utilization_basis_points)
                        .map(|bp| format!("{}%", bp / 100))
                        .unwrap_or_else(|| "-".into()),
                ]);
            }
            print!("{}", t.render(out));
        }
        let unowned: Vec<_> = r
            .gpus
            .iter()
            .flat_map(|g| g.unowned.iter().map(move |p| (g.info.index, p)))
            .collect();
        if !unowned.is_empty() {
            println!();
            let mut t = Table::new(["GPU", "PID", "MEMORY", "NOT AN AGENT OF THIS HOST"]);
            for (gpu, p) in unowned {
                t.row([
                    gpu.to_string(),
                    p.pid.to_string(),
                    p.memory_used_bytes
                        .map(human_size)
                        .unwrap_or_else(|| "?".into()),
                    match &p.container {
                        Some(c) => format!("container {c}"),
                        None => "host process".into(),
                    },
                ]);
            }
            print!("{}", t.render(out));
        }
    }
}

/// `gpu mig enable|disable --gpu N [--yes]`.
pub fn mig(
    client: &orch_api::Client,
    nvml: Option<&std::path::Path>,
    gpu: u32,
    enable: bool,
    yes: bool,
    out: &Out,
) -> Result<()> {
    let what = if enable { "Enable" } else { "Disable" };
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(Exit::with(
                exit::USAGE,
                "changing MIG mode needs confirmation: pass --yes",
            )
            .into());
        }
        eprint!(
            "{what} MIG on GPU {gpu}? The change takes effect only after a GPU reset or reboot, and every agent on that GPU must be stopped first. [y/N] "
        );
        let _ = std::io::stderr().flush();
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        if !matches!(line.trim(), "y" | "Y" | "yes") {
            return Err(Exit::with(exit::FAILED, "not changed").into());
        }
    }
    let message = match block_on(client.mig_mode(gpu, enable))? {
        Ok(Accepted { message, .. }) => message,
        Err(e) if e.is_unreachable() => local_mig(nvml, gpu, enable)?,
        Err(e) => return Err(fail(e)),
    };
    if out.format != Format::Table {
        return print_data(out.format, &serde_json::json!({ "message": message }));
    }
    println!("{message}");
    Ok(())
}

fn local_mig(nvml: Option<&std::path::Path>, gpu: u32, enable: bool) -> Result<String> {
    use orch_gpu::GpuBackend as _;
    let b =
        orch_gpu::NvmlBackend::open(nvml).map_err(|e| Exit::with(exit::FAILED, e.to_string()))?;
    let name = b
        .inventory()
        .ok()
        .and_then(|g| g.into_iter().find(|x| x.index == gpu).map(|x| x.name))
        .unwrap_or_else(|| "?".into());
    let change = b.set_mig_mode(gpu, enable).map_err(|e| {
        let code = match e {
            orch_gpu::GpuError::NoSuchGpu { .. } => exit::NOT_FOUND,
            _ => exit::FAILED,
        };
        Exit::with(code, e.to_string())
    })?;
    Ok(orch_api::text::mig_change(
        gpu,
        &name,
        enable,
        change.reset_required,
    ))
}
