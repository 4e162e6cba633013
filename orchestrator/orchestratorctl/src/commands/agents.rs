//! `agents`: every replica with its phase, health, restarts and GPU slice.

use anyhow::Result;
use orch_api::AgentStatus;
use orch_core::supervise::{Health, Phase};

use super::daemon::{block_on, fail};
use crate::output::{Format, Out, Table, print_data};

pub fn run(client: &orch_api::Client, group: Option<&str>, out: &Out) -> Result<()> {
    let mut agents: Vec<AgentStatus> = block_on(client.get("/v1/agents"))?.map_err(fail)?;
    if let Some(g) = group {
        agents.retain(|a| a.group == g);
    }
    if out.format != Format::Table {
        return print_data(out.format, &agents);
    }
    let mut t = Table::new([
        "GROUP",
        "AGENT",
        "PHASE",
        "HEALTH",
        "RESTARTS",
        "CONTAINER",
        "GPU",
        "PORTS",
    ]);
    for a in &agents {
        let name = if a.replica == 0 {
            a.agent.clone()
        } else {
            format!("{}#{}", a.agent, a.replica)
        };
        t.row([
            a.group.clone(),
            name,
            phase_text(&a.phase, a.crashloop, out),
            match a.health {
                Health::Healthy => out.green("healthy"),
                Health::Unhealthy => out.red("unhealthy"),
                Health::Unknown => out.dim("-"),
            },
            a.restarts.to_string(),
            a.container.clone().unwrap_or_else(|| "-".into()),
            a.slice
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_else(|| "-".into()),
            if a.ports.is_empty() {
                "-".into()
            } else {
                a.ports.join(",")
            },
        ]);
    }
    print!("{}", t.render(out));
    Ok(())
}

pub fn phase_text(p: &Phase, crashloop: bool, out: &Out) -> String {
    let text = match p {
        Phase::Pending => out.dim("pending"),
        Phase::Held { waiting_for } => {
            out.yellow(&format!("held (waiting for {})", waiting_for.join(", ")))
        }
        Phase::Starting => out.yellow("starting"),
        Phase::Running => out.green("running"),
        Phase::BackingOff { exit_code, .. } => out.yellow(&match exit_code {
            Some(c) => format!("backing off (exit {c})"),
            None => "backing off".into(),
        }),
        Phase::Exited { code } => out.dim(&format!("exited ({code})")),
        Phase::Failed { reason, .. } => out.red(&format!("failed: {reason}")),
        Phase::Stopping => out.yellow("stopping"),
        Phase::Stopped => out.dim("stopped"),
    };
    if crashloop {
        format!("{} {text}", out.red("CRASH-LOOP"))
    } else {
        text
    }
}
