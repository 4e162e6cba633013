//! `state export` (the daemon's desired state as a versioned JSON
//! document, on stdout) and `state import FILE` (replace it, whole, on the
//! running daemon, which then acts on it as `apply` does for a config).

use std::path::Path;

use anyhow::{Context, Result};
use orch_api::wire::StateDocument;

use super::daemon::{block_on, fail};
use crate::exit::{self, Exit};
use crate::output::{Format, Out, print_data};

pub fn export(client: &orch_api::Client, out: &Out) -> Result<()> {
    let doc = block_on(client.state_export())?.map_err(fail)?;
    // JSON unless YAML is asked for; `state import` reads either.
    let text = match out.format {
        Format::Yaml => serde_yaml::to_string(&doc).context("cannot write the state")?,
        _ => serde_json::to_string_pretty(&doc).context("cannot write the state")? + "\n",
    };
    crate::output::write_out(text.as_bytes())
}

pub fn import(client: &orch_api::Client, file: &Path, out: &Out) -> Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    // A YAML export is read as the JSON it stands for.
    let text = if text.trim_start().starts_with('{') {
        text
    } else {
        serde_yaml::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| serde_json::to_string(&v).ok())
            .unwrap_or(text)
    };
    // Checked here first, so a wrong file is named before the daemon is asked.
    let doc = StateDocument::parse(&text)
        .map_err(|e| Exit::with(exit::FAILED, format!("{}: {e}", file.display())))?;
    let accepted = block_on(client.state_import(doc))?.map_err(fail)?;
    if out.format != Format::Table {
        return print_data(out.format, &accepted);
    }
    println!("{}", accepted.message);
    Ok(())
}
