//! `status`: the daemon, Docker, GPUs and every group at a glance.

use anyhow::Result;
use orch_api::{GroupState, Status};

use super::daemon::{block_on, fail};
use crate::output::{Format, Out, Table, print_data};

/// Where the state file is, how the daemon started from it, and whether
/// it can be written now.
fn state_line(st: &orch_api::StateFileStatus, out: &Out) -> String {
    let origin = orch_api::text::state_origin(&st.origin);
    match &st.write_error {
        Some(e) => out.red(&format!(
            "{}{origin}: NOT SAVED ({} failed writes, retrying): {e}",
            st.location, st.failed_writes
        )),
        None => format!("{}{origin}", st.location),
    }
}

pub fn run(client: &orch_api::Client, out: &Out) -> Result<()> {
    let s: Status = block_on(client.status())?.map_err(fail)?;
    if out.format != Format::Table {
        return print_data(out.format, &s);
    }
    render(&s, out);
    Ok(())
}

/// The status as a table.
pub fn render(s: &Status, out: &Out) {
    let docker = if s.docker.connected {
        out.green(&format!(
            "connected (engine {}, API {}, GPU injection {})",
            s.docker.engine_version.as_deref().unwrap_or("?"),
            s.docker.api_version.as_deref().unwrap_or("?"),
            s.docker.gpu_injection
        ))
    } else {
        out.red(&format!("unreachable at {}", s.docker.endpoint))
    };
    let gpu = if s.gpu.available {
        format!("{} GPU(s), {} slice(s) given", s.gpu.gpus, s.gpu.slices)
    } else {
        out.yellow(&format!(
            "unavailable: {}",
            s.gpu.reason.as_deref().unwrap_or("?")
        ))
    };
    println!(
        "{} {} (orchestratord {}, pid {}, up {})",
        out.bold("host"),
        s.host,
        s.version,
        s.pid,
        human(s.uptime_ms)
    );
    println!(
        "{} {} (generation {})",
        out.bold("config"),
        s.config_path,
        s.generation
    );
    println!("{} {docker}", out.bold("docker"));
    println!("{} {gpu}", out.bold("gpu"));
    println!("{} {}", out.bold("state"), state_line(&s.state, out));
    println!(
        "{} {}/{} healthy, {} running{}",
        out.bold("agents"),
        s.agents.healthy,
        s.agents.wanted,
        s.agents.running,
        if s.agents.crashlooping > 0 {
            out.red(&format!(", {} crash-looping", s.agents.crashlooping))
        } else {
            String::new()
        }
    );
    if !s.scaled.is_empty() {
        let scaled: Vec<String> = s
            .scaled
            .iter()
            .map(|a| {
                format!(
                    "{}/{} {} (file: {}{})",
                    a.group,
                    a.agent,
                    a.replicas,
                    a.file_replicas,
                    if a.by_autoscaler { ", autoscaled" } else { "" }
                )
            })
            .collect();
        println!("{} {}", out.bold("scaled"), scaled.join(", "));
    }
    println!();
    print!("{}", groups_table(&s.groups, out).render(out));
}

pub fn state_text(state: GroupState, out: &Out) -> String {
    match state {
        GroupState::Ready => out.green("ready"),
        GroupState::Starting => out.yellow("starting"),
        GroupState::Degraded => out.red("degraded"),
        GroupState::Stopping => out.yellow("stopping"),
        GroupState::Stopped => out.dim("stopped"),
    }
}

pub fn groups_table(groups: &[orch_api::GroupStatus], out: &Out) -> Table {
    let mut t = Table::new(["GROUP", "STATE", "HEALTHY", "RUNNING", "DEPENDS ON"]);
    for g in groups {
        t.row([
            g.name.clone(),
            state_text(g.state, out),
            format!("{}/{}", g.healthy, g.wanted),
            g.running.to_string(),
            if g.depends_on.is_empty() {
                "-".into()
            } else {
                g.depends_on.join(",")
            },
        ]);
    }
    t
}

pub fn human(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86_400, (s % 86_400) / 3600),
    }
}
