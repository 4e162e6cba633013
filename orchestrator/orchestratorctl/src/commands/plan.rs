//! `plan FILE`: which agent would get which GPU slice and which MIG
//! instances would be made, like `nomad plan`. With a daemon running for
//! the file's host, on its live inventory and keeping running agents'
//! slices, plus what applying the file would change (the `config diff`
//! lines, and a summary that names agents only scaled) and the file's
//! images Docker does not have there (exit 7, as for a request that
//! cannot be placed); otherwise on the GPUs NVML reports here.
//!
//! `plan --all-hosts [FILE] [--agent GROUP/AGENT]`: which hosts of the
//! federation it would fit on, the daemon planning each host (itself live,
//! its peers from their latest snapshots); without FILE, the daemon's
//! running config, as `nomad job plan` plans the job that runs.

use std::path::Path;

use anyhow::Result;
use orch_api::{FleetPlan, HostPlacement, PeerState, PlanReport, RemoteReadiness, ReplicaFit};

use super::daemon::{block_on, fail};
use crate::cli::LoadArgs;
use crate::exit::{self, Exit};
use crate::output::{Format, Out, Table, print_data};

pub fn run(
    client: &orch_api::Client,
    file: &Path,
    load: &LoadArgs,
    offline: bool,
    out: &Out,
) -> Result<()> {
    let loaded = super::load::load(file, load, out)?;
    let config = &loaded.config;
    let mut report = None;
    if !offline {
        match block_on(client.status())? {
            Ok(s) if s.host == config.host.name => {
                let text = std::fs::read_to_string(file)?;
                report =
                    Some(block_on(client.plan(&file.display().to_string(), &text))?.map_err(fail)?);
            }
            // A daemon of another host answers here: its GPUs are not
            // that host's, and neither are this machine's.
            Ok(s) => {
                return Err(Exit::with(
                    exit::FAILED,
                    format!(
                        "{} is the config of host `{}`, but the daemon here runs host `{}`; plan it there (`--host {}`), or on this machine's GPUs with --offline",
                        file.display(),
                        config.host.name,
                        s.host,
                        config.host.name
                    ),
                )
                .into());
            }
            Err(e) if e.is_unreachable() && client.host().is_none() => {}
            Err(e) => return Err(fail(e)),
        }
    }
    let report = match report {
        Some(r) => r,
        None => local(config)?,
    };
    let failed = !report.errors.is_empty() || !report.missing_images.is_empty();
    if out.format != Format::Table {
        print_data(out.format, &report)?;
    } else {
        show(&report, out);
    }
    if failed {
        return Err(Exit::code(exit::UNSATISFIABLE).into());
    }
    Ok(())
}

fn local(config: &orch_core::model::HostConfig) -> Result<PlanReport> {
    use orch_gpu::GpuBackend as _;
    let explicit = config
        .runtime
        .nvml_library
        .as_ref()
        .map(std::path::PathBuf::from);
    let backend = orch_gpu::NvmlBackend::open(explicit.as_deref())
        .map_err(|e| Exit::with(exit::FAILED, e.to_string()))?;
    let gpus = backend
        .inventory()
        .map_err(|e| Exit::with(exit::FAILED, e.to_string()))?;
    let requests = orch_core::planner::config_requests(config);
    let plan = orch_core::planner::plan(&orch_core::planner::PlanInput {
        gpus: &gpus,
        policies: &config.gpus,
        requests: &requests,
        current: &[],
        settings: Default::default(),
    });
    Ok(orch_api::report::plan_report(
        config,
        &plan,
        &requests,
        &[],
        &gpus,
        &backend.library_path().display().to_string(),
    ))
}

fn show(r: &PlanReport, out: &Out) {
    println!(
        "{} {} (GPU inventory from {})",
        out.bold("plan for host"),
        r.host,
        r.inventory_source
    );
    if r.assignments.is_empty() && r.errors.is_empty() {
        println!("no agent asks for a GPU");
    }
    if !r.assignments.is_empty() {
        let mut t = Table::new(["AGENT", "GROUP", "WANTS", "GETS", "NOTE"]);
        for a in &r.assignments {
            let note = match (a.kept, a.fallback_depth) {
                (true, _) => out.dim("kept"),
                (false, 0) => out.green("new"),
                (false, n) => out.yellow(&format!("new, fallback #{n}")),
            };
            t.row([
                a.replica.to_string(),
                a.group.clone(),
                a.request
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" -> "),
                a.slice.to_string(),
                note,
            ]);
        }
        print!("{}", t.render(out));
    }
    for c in &r.mig_create {
        println!(
            "{} MIG instance: GPU {} ({}): {} at placement {} for {}",
            out.green("+ create"),
            c.gpu_index,
            c.gpu_uuid,
            c.profile,
            c.placement_start,
            c.replica
        );
    }
    for d in &r.mig_destroy {
        println!(
            "{} our unused MIG instance: GPU {} ({}): GPU instance {} at placement {}",
            out.red("- destroy"),
            d.gpu_index,
            d.gpu_uuid,
            d.gi_id,
            d.placement_start
        );
    }
    for n in &r.notes {
        println!("{} {n}", out.yellow("note:"));
    }
    if let Some(d) = &r.diff {
        for line in orch_api::text::diff_lines(d) {
            println!("{} {line}", out.bold("change:"));
        }
    }
    if let Some(c) = &r.changes {
        let list = |v: &[String]| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.join(", ")
            }
        };
        println!(
            "{} {} unchanged; recreate: {}; scale: {}; add: {}; remove: {}",
            out.bold("applying it:"),
            c.unchanged,
            list(&c.recreated),
            list(&c.scaled),
            list(&c.added),
            list(&c.removed)
        );
    }
    for d in &r.remote {
        let state = match d.state {
            RemoteReadiness::Ready => out.green(d.state.as_str()),
            RemoteReadiness::Unknown => out.dim(d.state.as_str()),
            _ => out.yellow(d.state.as_str()),
        };
        println!(
            "{} {} waits for {} ({state})",
            out.bold("needs:"),
            d.agent,
            d.on
        );
    }
    for e in &r.errors {
        println!("{} {e}", out.red("cannot place:"));
    }
    for image in &r.missing_images {
        println!(
            "{} {}",
            out.red("error:"),
            orch_api::text::plan_image_missing(image)
        );
    }
}

/// `plan --all-hosts`: the daemon places the file's config (`None`: its
/// running config), or one agent's replicas, on every host it knows.
/// Exit 0 when it fits on some host, 7 when on none.
pub fn fleet(
    client: &orch_api::Client,
    file: Option<&Path>,
    agent: Option<&str>,
    load: &LoadArgs,
    out: &Out,
) -> Result<()> {
    let (config, agent) = match file {
        Some(f) => {
            // Diagnostics here, as `plan FILE` gives them.
            let loaded = super::load::load(f, load, out)?;
            let agent = agent.map(|t| in_config(&loaded.config, t)).transpose()?;
            let text = std::fs::read_to_string(f)?;
            (Some((f.display().to_string(), text)), agent)
        }
        None => {
            let agent = agent
                .map(|t| super::agent::resolve(client, t).map(|(g, a)| format!("{g}/{a}")))
                .transpose()?;
            (None, agent)
        }
    };
    let config = config.as_ref().map(|(n, t)| (n.as_str(), t.as_str()));
    let plan = block_on(client.plan_fleet(config, agent.as_deref()))?.map_err(fail)?;
    if out.format != Format::Table {
        print_data(out.format, &plan)?;
    } else {
        show_fleet(&plan, out);
    }
    if !plan.requests.is_empty() && plan.fits_on().next().is_none() {
        return Err(Exit::code(exit::UNSATISFIABLE).into());
    }
    Ok(())
}

/// `GROUP/AGENT` of the file's agent a target names.
fn in_config(config: &orch_core::model::HostConfig, target: &str) -> Result<String> {
    let all: Vec<(&str, &str)> = config
        .agents()
        .map(|a| (a.group.as_str(), a.name.as_str()))
        .collect();
    match orch_api::text::find_agent(target, &all) {
        Ok((g, a)) => Ok(format!("{g}/{a}")),
        Err(e) => {
            let code = match e {
                orch_api::text::AgentTarget::Unknown(_) => exit::NOT_FOUND,
                _ => exit::USAGE,
            };
            Err(Exit::with(code, e.to_string()).into())
        }
    }
}

fn show_fleet(p: &FleetPlan, out: &Out) {
    let what = match &p.agent {
        Some(a) => format!("{a} of {}", p.file_name),
        None => p.file_name.clone(),
    };
    println!(
        "{} {what} (config of host {}), planned by {}",
        out.bold("placement of"),
        p.config_host,
        p.planned_by
    );
    if p.requests.is_empty() {
        println!("it asks for no GPU: any host can run it as far as GPUs go");
        return;
    }
    let state = |h: &HostPlacement| {
        let s = h.state.as_str();
        match h.state {
            PeerState::Local | PeerState::Alive => s.to_string(),
            PeerState::Down => out.red(s),
            _ => out.yellow(s),
        }
    };
    let fits = |yes: bool| if yes { out.green("yes") } else { out.red("no") };
    if p.agent.is_some() {
        // One row per host and replica.
        let mut t = Table::new(["HOST", "STATE", "AGENT", "FITS", "SLICE", "REASON"]);
        for h in &p.hosts {
            if let Some(why) = &h.not_planned {
                t.row([
                    h.host.clone(),
                    state(h),
                    "-".into(),
                    fits(false),
                    "-".into(),
                    why.to_string(),
                ]);
            }
            for r in &h.replicas {
                let (yes, slice, reason) = match &r.fit {
                    ReplicaFit::Fits { slice, kept, .. } => {
                        let kept = if *kept {
                            out.dim(" (runs there)")
                        } else {
                            String::new()
                        };
                        (true, format!("{slice}{kept}"), "-".to_string())
                    }
                    ReplicaFit::DoesNotFit { error } => (false, "-".into(), error.to_string()),
                };
                t.row([
                    h.host.clone(),
                    state(h),
                    r.replica.to_string(),
                    fits(yes),
                    slice,
                    reason,
                ]);
            }
        }
        print!("{}", t.render(out));
    } else {
        // One row per host; the reasons of each replica that does not fit
        // follow the table.
        let mut t = Table::new(["HOST", "STATE", "FITS", "SLICES", "REASON"]);
        for h in &p.hosts {
            let placed = h
                .replicas
                .iter()
                .filter(|r| matches!(r.fit, ReplicaFit::Fits { .. }))
                .count();
            let missing: Vec<String> = h
                .replicas
                .iter()
                .filter(|r| matches!(r.fit, ReplicaFit::DoesNotFit { .. }))
                .map(|r| r.replica.to_string())
                .collect();
            let reason = match (&h.not_planned, missing.as_slice()) {
                (Some(why), _) => why.to_string(),
                (None, []) => "-".into(),
                (None, m) => format!("does not fit: {}", m.join(", ")),
            };
            let slices = if h.not_planned.is_some() {
                "-".into()
            } else {
                format!("{placed} of {} placed", p.requests.len())
            };
            t.row([h.host.clone(), state(h), fits(h.fits), slices, reason]);
        }
        print!("{}", t.render(out));
        for h in &p.hosts {
            for r in &h.replicas {
                if let ReplicaFit::DoesNotFit { error } = &r.fit {
                    println!("{} on {}: {error}", out.red("cannot place"), h.host);
                }
            }
        }
    }
    let hosts: Vec<&str> = p.fits_on().map(|h| h.host.as_str()).collect();
    match hosts.as_slice() {
        [] => println!("{} it fits on no host", out.bold("advice:")),
        _ => println!(
            "{} it fits on {} (moving agents is yours to do: `orchestratorctl --host HOST apply FILE`)",
            out.bold("advice:"),
            hosts.join(", ")
        ),
    }
}
