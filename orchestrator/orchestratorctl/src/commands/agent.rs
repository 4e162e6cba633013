//! `agent restart GROUP/AGENT`.

use anyhow::Result;
use orch_api::Accepted;

use super::daemon::{block_on, fail};
use crate::exit::{self, Exit};
use crate::output::{Format, Out, print_data};

/// Splits `GROUP/AGENT`.
pub fn split(target: &str) -> Result<(&str, &str)> {
    match target.split_once('/') {
        Some((g, a)) if !g.is_empty() && !a.is_empty() && !a.contains('/') => Ok((g, a)),
        _ => Err(Exit::with(
            exit::USAGE,
            format!("`{target}` is not GROUP/AGENT (e.g. speech_gpu/STTService)"),
        )
        .into()),
    }
}

pub fn restart(client: &orch_api::Client, target: &str, out: &Out) -> Result<()> {
    let (group, agent) = split(target)?;
    let path = format!("/v1/agents/{group}/{agent}/restart");
    let a: Accepted = block_on(client.post(&path, &serde_json::json!({})))?.map_err(fail)?;
    if out.format != Format::Table {
        return print_data(out.format, &a);
    }
    eprintln!("{}", a.message);
    Ok(())
}
