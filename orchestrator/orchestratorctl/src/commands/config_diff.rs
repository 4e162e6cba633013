//! `config diff [FILE]` and `config diff OLD NEW`: what an apply would
//! change. The daemon compares FILE (or its config file on disk) with what
//! runs, the counts set at run time included; two files are compared
//! here, as is one pair with `--offline`. Exit 0 without changes, 8
//! ([`exit::CHANGES`]) with some.

use std::path::{Path, PathBuf};

use anyhow::Result;
use orch_api::DiffReport;

use super::daemon::{block_on, fail};
use crate::cli::LoadArgs;
use crate::exit::{self, Exit};
use crate::output::{Format, Out, print_data};

pub fn run(
    client: impl FnOnce() -> orch_api::Client,
    files: &[PathBuf],
    offline: bool,
    load: &LoadArgs,
    out: &Out,
) -> Result<()> {
    let report = match (files, offline) {
        ([old, new], _) => two_files(old, new, load, out)?,
        (_, true) => {
            return Err(Exit::with(
                exit::USAGE,
                "config diff --offline compares two files: config diff --offline OLD NEW",
            )
            .into());
        }
        ([file], false) => {
            // Diagnostics here, with their source lines.
            super::load::load(file, load, out)?;
            let text = std::fs::read_to_string(file)?;
            let name = file.display().to_string();
            ask(&client(), Some((&name, &text)))?
        }
        _ => ask(&client(), None)?,
    };
    if out.format != Format::Table {
        print_data(out.format, &report)?;
    } else {
        show(&report, out);
    }
    if report.has_changes() {
        return Err(Exit::code(exit::CHANGES).into());
    }
    Ok(())
}

/// The daemon's answer; one that cannot be reached says how to compare
/// files without it.
fn ask(client: &orch_api::Client, config: Option<(&str, &str)>) -> Result<DiffReport> {
    match block_on(client.config_diff(config))? {
        Ok(r) => Ok(r),
        Err(e) if e.is_unreachable() && client.host().is_none() => Err(Exit::with(
            exit::UNREACHABLE,
            format!("{e}; without a daemon, compare two files: config diff OLD NEW"),
        )
        .into()),
        Err(e) => Err(fail(e)),
    }
}

fn two_files(old: &Path, new: &Path, load: &LoadArgs, out: &Out) -> Result<DiffReport> {
    let o = super::load::load(old, load, out)?;
    let n = super::load::load(new, load, out)?;
    Ok(orch_api::convert::file_diff(
        &old.display().to_string(),
        &o.config,
        &new.display().to_string(),
        &n.config,
    ))
}

fn show(r: &DiffReport, out: &Out) {
    println!(
        "{} {}: {} -> {}",
        out.bold("config diff for host"),
        r.host,
        r.from,
        r.to
    );
    if !r.has_changes() {
        println!("{}", orch_api::text::no_changes(r));
    }
    for line in orch_api::text::diff_lines(r) {
        println!("{line}");
    }
}
