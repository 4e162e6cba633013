//! `agents [--group G]`: every replica with its phase, health, restarts,
//! CPU use, GPU slice and the GPU memory and utilisation it uses; optional agents
//! marked, why a replica waits, and what keeps it running while a host it
//! needs is down.

use anyhow::Result;
use orch_api::AgentStatus;
use orch_api::text::{remote_holds, waits};
use orch_api::wire::{Health, Phase};

use super::daemon::{block_on, fail};
use crate::output::{Format, Out, Table, print_data};

pub fn run(client: &orch_api::Client, group: Option<&str>, out: &Out) -> Result<()> {
    let agents: Vec<AgentStatus> = block_on(client.agents(group))?.map_err(fail)?;
    if out.format != Format::Table {
        return print_data(out.format, &agents);
    }
    render(&agents, out);
    Ok(())
}

/// Agents as a table.
pub fn render(agents: &[AgentStatus], out: &Out) {
    let mut t = Table::new([
        "GROUP",
        "AGENT",
        "PHASE",
        "HEALTH",
        "RESTARTS",
        "CONTAINER",
        "CPU",
        "GPU",
        "GPU MEM",
        "GPU UTIL",
        "PORTS",
    ]);
    for a in agents {
        let mut name = if a.replica == 0 {
            a.agent.clone()
        } else {
            format!("{}#{}", a.agent, a.replica)
        };
        match (&a.scaled, a.autoscale) {
            (Some(s), _) if s.by_autoscaler => {
                name.push_str(&format!(" (autoscaled to {}", s.replicas));
                if let Some(c) = &s.cause {
                    name.push_str(&format!(": {c}"));
                }
                name.push(')');
            }
            (Some(s), _) => name.push_str(&format!(
                " (scaled to {}, file: {})",
                s.replicas, s.file_replicas
            )),
            (None, Some(r)) if a.replica == 0 => {
                name.push_str(&format!(" (autoscale {}..{})", r.min, r.max));
            }
            (None, _) => {}
        }
        if !a.required {
            name.push_str(" (optional)");
        }
        t.row([
            a.group.clone(),
            name,
            match (a.pending, remote_holds(&a.remote)) {
                (Some(why), _) => out.dim(&format!("pending ({why})")),
                (None, Some(holds)) if a.phase == Phase::Running => format!(
                    "{} {}",
                    phase_text(&a.phase, a.crashloop, out),
                    out.yellow(&format!("({holds})"))
                ),
                (None, _) => phase_text(&a.phase, a.crashloop, out),
            },
            match a.health {
                Health::Healthy => out.green("healthy"),
                Health::Unhealthy => out.red("unhealthy"),
                Health::Unknown => out.dim("-"),
            },
            a.restarts.to_string(),
            a.container.clone().unwrap_or_else(|| "-".into()),
            cpu_text(a),
            a.slice
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_else(|| "-".into()),
            a.gpu_use
                .map(|u| super::gpu::used_of(u.memory_used_bytes, u.memory_limit_bytes))
                .unwrap_or_else(|| "-".into()),
            a.gpu_use
                .and_then(|u| u.utilization_basis_points)
                .map(|bp| format!("{}%", bp / 100))
                .unwrap_or_else(|| "-".into()),
            if a.ports.is_empty() {
                "-".into()
            } else {
                a.ports.join(",")
            },
        ]);
    }
    print!("{}", t.render(out));
}

/// CPU use as a share of one core, and of the agent's limit where it has
/// one: `52%`, `52% (26% of limit)`; `-` until two readings exist.
fn cpu_text(a: &AgentStatus) -> String {
    match (a.cpu_percent, a.cpu_limit_percent) {
        (Some(p), Some(l)) => format!("{p:.0}% ({l:.0}% of limit)"),
        (Some(p), None) => format!("{p:.0}%"),
        (None, _) => "-".into(),
    }
}

pub fn phase_text(p: &Phase, crashloop: bool, out: &Out) -> String {
    let text = match p {
        Phase::Pending => out.dim("pending"),
        Phase::Held { waiting_for } => {
            out.yellow(&format!("held (waiting for {})", waits(waiting_for)))
        }
        Phase::Starting => out.yellow("starting"),
        Phase::Running => out.green("running"),
        Phase::BackingOff {
            exit_code,
            retry_in_ms,
        } => out.yellow(&match exit_code {
            Some(c) => format!("backing off (exit {c}, retry in {})", secs(*retry_in_ms)),
            None => format!("backing off (retry in {})", secs(*retry_in_ms)),
        }),
        Phase::Exited { code } => out.dim(&format!("exited ({code})")),
        Phase::Failed {
            reason,
            retry_in_ms,
        } => out.red(&format!(
            "failed: {reason} (retry in {})",
            secs(*retry_in_ms)
        )),
        Phase::Stopping => out.yellow("stopping"),
        Phase::Stopped => out.dim("stopped"),
    };
    if crashloop {
        format!("{} {text}", out.red("CRASH-LOOP"))
    } else {
        text
    }
}

fn secs(ms: u64) -> String {
    if ms < 10_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{}s", ms / 1000)
    }
}
