//! `agent restart GROUP/AGENT`.

use anyhow::Result;
use orch_api::Accepted;

use super::daemon::{block_on, fail};
use crate::exit::{self, Exit};
use crate::output::{Format, Out, print_data};

/// Splits `GROUP/AGENT`. A bare agent name is refused with the group it
/// is in (agent names are unique on a host), when the daemon can say.
pub fn split<'t>(client: &orch_api::Client, target: &'t str) -> Result<(&'t str, &'t str)> {
    match target.split_once('/') {
        Some((g, a)) if !g.is_empty() && !a.is_empty() && !a.contains('/') => Ok((g, a)),
        _ => {
            let hint = if target.contains('/') {
                None
            } else {
                block_on(client.groups())?
                    .ok()
                    .and_then(|all| {
                        all.into_iter()
                            .find(|g| g.agents.iter().any(|a| a == target))
                    })
                    .map(|g| format!("; did you mean `{}/{target}`?", g.name))
            };
            Err(Exit::with(
                exit::USAGE,
                format!(
                    "`{target}` is not GROUP/AGENT{}",
                    hint.unwrap_or_else(|| " (e.g. speech_gpu/STTService)".into())
                ),
            )
            .into())
        }
    }
}

pub fn restart(client: &orch_api::Client, target: &str, out: &Out) -> Result<()> {
    let (group, agent) = split(client, target)?;
    let a: Accepted = block_on(client.agent_restart(group, agent))?.map_err(fail)?;
    if out.format != Format::Table {
        return print_data(out.format, &a);
    }
    eprintln!("{}", a.message);
    Ok(())
}
