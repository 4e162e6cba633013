//! `peers`: the federation's peers as this host's daemon sees them.

use anyhow::Result;
use orch_api::{PeerState, PeerStatus};

use super::daemon::{block_on, fail};
use crate::output::{Format, Out, Table, print_data};

pub fn run(client: &orch_api::Client, out: &Out) -> Result<()> {
    let peers: Vec<PeerStatus> = block_on(client.peers())?.map_err(fail)?;
    if out.format != Format::Table {
        return print_data(out.format, &peers);
    }
    if peers.is_empty() {
        println!("no peers: this host has no `federation` section");
        return Ok(());
    }
    let age = |ms: Option<u64>| {
        ms.map(|ms| format!("{:.1}s", ms as f64 / 1000.0))
            .unwrap_or_else(|| "-".into())
    };
    let mut t = Table::new([
        "PEER",
        "ENDPOINT",
        "ROLE",
        "STATE",
        "INCARNATION",
        "HEARTBEAT",
        "SNAPSHOT",
        "IN",
        "OUT",
        "DECODE ERRORS",
        "REFUSED CONN",
        "IMPOSTORS",
        "UNEXPECTED",
        "INBOX DROPS",
        "OVER BUDGET",
        "REFUSED CMDS",
    ]);
    // A count of refused input in red when there is any: someone is
    // trying something, or a key or version does not match.
    let alarm = |n: u64| {
        if n == 0 {
            n.to_string()
        } else {
            out.red(&n.to_string())
        }
    };
    for p in &peers {
        t.row([
            p.name.clone(),
            p.endpoint.clone(),
            p.role.clone(),
            match p.state {
                PeerState::Alive => out.green("alive"),
                PeerState::Suspect => out.yellow("suspect"),
                PeerState::Down => out.red("down"),
                PeerState::Unknown | PeerState::Local => out.dim(p.state.as_str()),
            },
            p.incarnation
                .map(|i| i.to_string())
                .unwrap_or_else(|| "-".into()),
            age(p.last_heartbeat_age_ms),
            age(p.snapshot_age_ms),
            p.messages_in.to_string(),
            p.messages_out.to_string(),
            alarm(p.decode_errors),
            alarm(p.refused_connections),
            alarm(p.impostors),
            alarm(p.unexpected),
            alarm(p.inbox_drops),
            alarm(p.over_budget),
            alarm(p.refused_commands),
        ]);
    }
    print!("{}", t.render(out));
    Ok(())
}
