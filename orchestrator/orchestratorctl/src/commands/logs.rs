//! `logs GROUP/AGENT [-f] [--tail N] [--replica N]`: the container's output.

use std::io::Write as _;

use anyhow::Result;
use futures_util::StreamExt;

use super::agent::split;
use super::daemon::{block_on, fail};

pub fn run(
    client: &orch_api::Client,
    target: &str,
    follow: bool,
    tail: Option<u64>,
    replica: u32,
) -> Result<()> {
    let (group, agent) = split(client, target)?;
    block_on(async {
        let mut stream = Box::pin(
            client
                .logs(group, agent, replica, follow, tail)
                .await
                .map_err(fail)?,
        );
        let mut stdout = std::io::stdout().lock();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(fail)?;
            if stdout
                .write_all(&chunk)
                .and_then(|()| stdout.flush())
                .is_err()
            {
                // The reader went away (e.g. `| head`): stop quietly.
                break;
            }
        }
        Ok(())
    })?
}
