//! `apply FILE` (install a new config on the daemon and apply it) and
//! `reload` (re-read the daemon's config file).

use std::path::Path;

use anyhow::{Context, Result};
use orch_api::Applied;

use super::daemon::{block_on, fail};
use crate::cli::LoadArgs;
use crate::exit::{self, Exit};
use crate::output::{Format, Out, print_data};

pub fn apply(
    client: &orch_api::Client,
    file: &Path,
    load: &LoadArgs,
    force: bool,
    out: &Out,
) -> Result<()> {
    // Checked here first, so mistakes show with their source lines.
    super::config::load(file, load, out)?;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let applied: Applied =
        block_on(client.apply_with(&file.display().to_string(), &text, force))?.map_err(refused)?;
    show(&applied, out)
}

/// An apply's refusal: a GPU request that cannot be placed or an image
/// that is not on the host (the only conflicts an apply meets) is exit
/// code 7, as for `plan`.
fn refused(e: orch_api::ClientError) -> anyhow::Error {
    let unplaceable =
        matches!(&e, orch_api::ClientError::Api(api) if api.code == orch_api::ErrorCode::Conflict);
    let err = fail(e);
    if !unplaceable {
        return err;
    }
    match err.downcast::<Exit>() {
        Ok(mut x) => {
            x.code = exit::UNSATISFIABLE;
            x.into()
        }
        Err(err) => err,
    }
}

pub fn reload(client: &orch_api::Client, out: &Out) -> Result<()> {
    let applied: Applied = block_on(client.reload())?.map_err(fail)?;
    show(&applied, out)
}

fn show(a: &Applied, out: &Out) -> Result<()> {
    if out.format != Format::Table {
        return print_data(out.format, a);
    }
    for w in &a.warnings {
        eprintln!("{}", out.yellow(w));
    }
    let idle: Vec<&str> = a
        .changed
        .iter()
        .filter(|c| !a.recreated.contains(c))
        .map(String::as_str)
        .collect();
    match (a.recreated.is_empty(), idle.is_empty()) {
        // Not "no changes": a count the file changes is reached without
        // recreating anything (`config diff` shows it beforehand).
        (true, true) => println!(
            "generation {} applied; no container recreated",
            a.generation
        ),
        (false, _) => println!(
            "generation {} applied; recreating changed agents one replica at a time: {}",
            a.generation,
            a.recreated.join(", ")
        ),
        (true, false) => println!("generation {} applied", a.generation),
    }
    if !idle.is_empty() {
        println!(
            "changed, applied when their group starts: {}",
            idle.join(", ")
        );
    }
    for r in &a.rescaled {
        println!("{}: {} -> {} replica(s)", r.agent, r.from, r.to);
    }
    Ok(())
}
