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
    let (group, agent) = split(target)?;
    let mut path = format!("/v1/agents/{group}/{agent}/logs?replica={replica}");
    if follow {
        path.push_str("&follow=1");
    }
    if let Some(t) = tail {
        path.push_str(&format!("&tail={t}"));
    }
    block_on(async {
        let mut stream = Box::pin(client.stream(&path).await.map_err(fail)?);
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
