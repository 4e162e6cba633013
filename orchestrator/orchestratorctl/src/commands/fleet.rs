//! `status|groups|agents|gpu|slo --all-hosts`: every host of the federation
//! from the local daemon, this host live and each peer from its latest
//! snapshot, each under a heading with its state and the age of what is
//! shown. A host that is down shows its last known state, marked as such.

use anyhow::Result;
use orch_api::{Fleet, HostSnapshot, HostView, PeerState, SloReport};
use serde::Serialize;

use super::daemon::{block_on, fail};
use crate::output::{Format, Out, print_data};

#[derive(Debug, Clone)]
pub enum View {
    Status,
    Groups,
    Agents(Option<String>),
    Gpu,
    Slo(Option<String>),
}

/// One host in machine output: how it is seen, and the part asked for.
#[derive(Serialize)]
struct Section<'a, T: Serialize> {
    host: &'a str,
    state: PeerState,
    incarnation: Option<u64>,
    snapshot_age_ms: Option<u64>,
    data: Option<T>,
}

pub fn run(client: &orch_api::Client, view: View, out: &Out) -> Result<()> {
    let fleet: Fleet = block_on(client.fleet())?.map_err(fail)?;
    if out.format != Format::Table {
        let sections: Vec<_> = fleet
            .hosts
            .iter()
            .map(|h| Section {
                host: &h.host,
                state: h.state,
                incarnation: h.incarnation,
                snapshot_age_ms: h.snapshot_age_ms,
                data: h.snapshot.as_ref().map(|s| part(s, &view)),
            })
            .collect();
        return print_data(out.format, &sections);
    }
    for (i, h) in fleet.hosts.iter().enumerate() {
        if i > 0 {
            println!();
        }
        println!("{}", heading(h, out));
        match &h.snapshot {
            None => println!("{}", out.dim("(no state received from this host yet)")),
            Some(s) => match &view {
                View::Status => super::status::render(&s.status, out),
                View::Groups => {
                    print!(
                        "{}",
                        super::status::groups_table(&s.status.groups, out).render(out)
                    )
                }
                View::Agents(group) => {
                    let agents: Vec<_> = s
                        .agents
                        .iter()
                        .filter(|a| group.as_ref().is_none_or(|g| &a.group == g))
                        .cloned()
                        .collect();
                    super::agents::render(&agents, out);
                }
                View::Gpu => super::gpu::render(&s.gpu, true, out),
                View::Slo(group) => match slo_of(s, group.as_deref()) {
                    Some(r) if !r.groups.is_empty() => print!(
                        "{}",
                        super::slo::slo_table(std::slice::from_ref(&r), out).render(out)
                    ),
                    Some(_) => println!("no group with an `slo:` here"),
                    None => println!("{}", out.dim("(no SLO figures from this host)")),
                },
            },
        }
    }
    Ok(())
}

fn part(s: &HostSnapshot, view: &View) -> serde_json::Value {
    match view {
        View::Status => serde_json::to_value(&s.status),
        View::Groups => serde_json::to_value(&s.status.groups),
        View::Agents(group) => serde_json::to_value(
            s.agents
                .iter()
                .filter(|a| group.as_ref().is_none_or(|g| &a.group == g))
                .collect::<Vec<_>>(),
        ),
        View::Gpu => serde_json::to_value(&s.gpu),
        View::Slo(group) => serde_json::to_value(slo_of(s, group.as_deref())),
    }
    .unwrap_or_default()
}

/// The host's SLO figures, only `group`'s if one is named (a host without
/// that group shows none of its groups).
fn slo_of(s: &HostSnapshot, group: Option<&str>) -> Option<SloReport> {
    let mut report = s.slo.clone()?;
    if let Some(g) = group {
        report.groups.retain(|x| x.group == g);
    }
    Some(report)
}

/// `== pc2 (alive, incarnation 1796..., as of 0.4s ago) ==`
fn heading(h: &HostView, out: &Out) -> String {
    let age = h
        .snapshot_age_ms
        .map(|ms| format!(", as of {:.1}s ago", ms as f64 / 1000.0))
        .unwrap_or_default();
    let state = match h.state {
        PeerState::Local => "this host".to_string(),
        PeerState::Alive => out.green("alive"),
        PeerState::Suspect => out.yellow("suspect (heartbeats missed)"),
        PeerState::Down => out.red("DOWN; last known state"),
        PeerState::Unknown => out.yellow("not heard from"),
    };
    format!("{} {} ({state}{age})", out.bold("=="), out.bold(&h.host))
}
