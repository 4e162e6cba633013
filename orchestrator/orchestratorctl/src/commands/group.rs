//! `group start|stop|restart NAME [--wait] [--timeout]`.

use std::time::Duration;

use anyhow::Result;
use orch_api::Accepted;

use super::daemon::{block_on, fail};
use super::wait::{Goal, wait};
use crate::cli::{GroupArgs, GroupCmd};
use crate::output::{Format, Out, print_data};

/// How long `--wait` waits when no `--timeout` is given.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

pub fn run(client: &orch_api::Client, cmd: &GroupCmd, out: &Out) -> Result<()> {
    block_on(go(client, cmd, out))?
}

async fn go(client: &orch_api::Client, cmd: &GroupCmd, out: &Out) -> Result<()> {
    let (accepted, args, goal): (Accepted, &GroupArgs, Goal) = match cmd {
        GroupCmd::Start(a) => (
            client.group_start(&a.name).await.map_err(fail)?,
            a,
            Goal::Ready,
        ),
        GroupCmd::Stop {
            args,
            with_dependents,
        } => (
            client
                .group_stop(&args.name, *with_dependents)
                .await
                .map_err(fail)?,
            args,
            Goal::Stopped,
        ),
        GroupCmd::Restart {
            args,
            with_dependents,
        } => (
            client
                .group_restart(&args.name, *with_dependents)
                .await
                .map_err(fail)?,
            args,
            Goal::Ready,
        ),
    };
    if out.format != Format::Table {
        print_data(out.format, &accepted)?;
    } else {
        eprintln!("{}", accepted.message);
    }
    // A timeout means waiting, whether or not --wait was written.
    if !args.wait && args.timeout.is_none() {
        return Ok(());
    }
    wait(
        client,
        &accepted.groups,
        goal,
        accepted.events_from,
        args.timeout.unwrap_or(DEFAULT_TIMEOUT),
        out,
    )
    .await
}
