//! `agent restart GROUP/AGENT|AGENT`, and how a target names an agent.

use anyhow::Result;
use orch_api::Accepted;

use super::daemon::{block_on, fail};
use crate::exit::{self, Exit};
use crate::output::{Format, Out, print_data};

/// Finds the agent a target names: `GROUP/AGENT`, or a bare `AGENT` when
/// exactly one group has an agent of that name (several: an error listing
/// them). An agent the group does not have gets near names; an unknown
/// group is left to the daemon, which names the close ones.
pub fn resolve(client: &orch_api::Client, target: &str) -> Result<(String, String)> {
    // A malformed target is said without asking the daemon.
    if let Err(e @ orch_api::text::AgentTarget::Malformed(_)) =
        orch_api::text::find_agent(target, &[])
    {
        return Err(Exit::with(exit::USAGE, e.to_string()).into());
    }
    let groups = block_on(client.groups())?.map_err(fail)?;
    let all: Vec<(&str, &str)> = groups
        .iter()
        .flat_map(|g| g.agents.iter().map(|a| (g.name.as_str(), a.as_str())))
        .collect();
    match orch_api::text::find_agent(target, &all) {
        Ok((g, a)) => Ok((g.to_string(), a.to_string())),
        Err(e) => {
            let code = match e {
                orch_api::text::AgentTarget::Malformed(_)
                | orch_api::text::AgentTarget::Ambiguous(_) => exit::USAGE,
                orch_api::text::AgentTarget::Unknown(_) => exit::NOT_FOUND,
            };
            Err(Exit::with(code, e.to_string()).into())
        }
    }
}

pub fn restart(client: &orch_api::Client, target: &str, out: &Out) -> Result<()> {
    let (group, agent) = resolve(client, target)?;
    let a: Accepted = block_on(client.agent_restart(&group, &agent))?.map_err(fail)?;
    if out.format != Format::Table {
        return print_data(out.format, &a);
    }
    eprintln!("{}", a.message);
    Ok(())
}
