//! `group start|stop|restart NAME [--wait] [--timeout]`.

use std::time::Duration;

use anyhow::Result;
use orch_api::{Accepted, GroupAction};

use super::daemon::{block_on, fail};
use super::wait::{Goal, wait};
use crate::cli::{GroupArgs, GroupCmd};
use crate::output::{Format, Out, print_data};

pub fn run(client: &orch_api::Client, cmd: &GroupCmd, out: &Out) -> Result<()> {
    let (verb, args, with_dependents) = match cmd {
        GroupCmd::Start(a) => ("start", a, false),
        GroupCmd::Stop {
            args,
            with_dependents,
        } => ("stop", args, *with_dependents),
        GroupCmd::Restart(a) => ("restart", a, false),
    };
    block_on(go(client, verb, args, with_dependents, out))?
}

async fn go(
    client: &orch_api::Client,
    verb: &str,
    args: &GroupArgs,
    with_dependents: bool,
    out: &Out,
) -> Result<()> {
    let path = format!("/v1/groups/{}/{verb}", args.name);
    let accepted: Accepted = client
        .post(&path, &GroupAction { with_dependents })
        .await
        .map_err(fail)?;
    if out.format != Format::Table {
        print_data(out.format, &accepted)?;
    } else {
        eprintln!("{}", accepted.message);
    }
    if !args.wait {
        return Ok(());
    }
    let goal = if verb == "stop" {
        Goal::Stopped
    } else {
        Goal::Ready
    };
    let groups = if verb == "restart" {
        vec![args.name.clone()]
    } else {
        accepted.groups.clone()
    };
    wait(
        client,
        &groups,
        goal,
        accepted.events_from,
        Duration::from_secs(args.timeout),
        out,
    )
    .await
}
