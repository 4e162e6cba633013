//! `plan FILE`: which agent would get which GPU slice and which MIG
//! instances would be made, like `nomad plan`. With a daemon running for
//! the file's host, on its live inventory and keeping running agents'
//! slices, plus what applying the file would change; otherwise on the GPUs
//! NVML reports here.

use std::path::Path;

use anyhow::Result;
use orch_api::{ApplyRequest, PlanReport, Status};

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
        match block_on(client.get::<Status>("/v1/status"))? {
            Ok(s) if s.host == config.host.name => {
                let req = ApplyRequest {
                    file_name: file.display().to_string(),
                    config_text: std::fs::read_to_string(file)?,
                };
                report =
                    Some(block_on(client.post::<_, PlanReport>("/v1/plan", &req))?.map_err(fail)?);
            }
            Ok(_) => {}
            Err(e) if e.is_unreachable() => {}
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
        let mut t = Table::new(["AGENT", "GROUP", "WANTS", "GETS", ""]);
        for a in &r.assignments {
            let note = match (a.kept, a.fallback_depth) {
                (true, _) => out.dim("kept"),
                (false, 0) => out.green("new"),
                (false, n) => out.yellow(&format!("new, fallback #{n}")),
            };
            t.row([
                a.replica.clone(),
                a.group.clone(),
                a.request.clone(),
                a.slice.to_string(),
                note,
            ]);
        }
        print!("{}", t.render(out));
    }
    for c in &r.mig_create {
        println!("{} MIG instance: {c}", out.green("+ create"));
    }
    for d in &r.mig_destroy {
        println!("{} our unused MIG instance: {d}", out.red("- destroy"));
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
    for e in &r.errors {
        println!("{} {e}", out.red("cannot place:"));
    }
}
