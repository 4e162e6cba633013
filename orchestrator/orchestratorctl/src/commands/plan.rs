//! `plan FILE`: which agent would get which GPU slice and which MIG
//! instances would be made, like `nomad plan`. With a daemon running for
//! the file's host, on its live inventory and keeping running agents'
//! slices, plus what applying the file would change; otherwise on the GPUs
//! NVML reports here.

use std::path::Path;

use anyhow::Result;
use orch_api::{PlanReport, RemoteReadiness};

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
    let loaded = super::config::load(file, load, out)?;
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
    let failed = !report.errors.is_empty();
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
    if let Some(c) = &r.changes {
        let list = |v: &[String]| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.join(", ")
            }
        };
        println!(
            "{} {} unchanged; recreate: {}; add: {}; remove: {}",
            out.bold("applying it:"),
            c.unchanged,
            list(&c.recreated),
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
}
