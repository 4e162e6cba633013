//! `logs GROUP/AGENT|AGENT [-f] [--tail N] [--replica N] [--since DURATION|TIME]
//! [--timestamps]`: the container's output. `-o json` (or `yaml`) prints
//! one JSON object per line: `{"replica":0,"stream":"stdout","line":"..."}`.

use anyhow::Result;
use futures_util::StreamExt;
use orch_api::LogsWanted;

use super::agent::resolve;
use super::daemon::{block_on, fail};
use crate::exit::{self, Exit};
use crate::output::{Format, Out, write_out};

/// What `logs` was asked for.
#[derive(Debug, Clone)]
pub struct Ask {
    pub target: String,
    pub follow: bool,
    pub tail: Option<u64>,
    pub replica: u32,
    pub since: Option<String>,
    pub timestamps: bool,
}

pub fn run(client: &orch_api::Client, ask: &Ask, out: &Out) -> Result<()> {
    let since = match &ask.since {
        None => None,
        Some(s) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            Some(orch_api::logs_since(s, now).map_err(|e| Exit::with(exit::USAGE, e.to_string()))?)
        }
    };
    let (group, agent) = resolve(client, &ask.target)?;
    let wanted = LogsWanted {
        replica: ask.replica,
        follow: ask.follow,
        tail: ask.tail,
        since,
        timestamps: ask.timestamps,
        json: out.format != Format::Table,
    };
    block_on(async {
        let mut stream = Box::pin(
            client
                .logs_with(&group, &agent, wanted)
                .await
                .map_err(fail)?,
        );
        if out.format == Format::Yaml {
            // One YAML document per line, as `events -o yaml` does.
            let mut lines = Box::pin(orch_api::ndjson::<orch_api::LogLine, _>(stream));
            while let Some(l) = lines.next().await {
                let l = l.map_err(fail)?;
                write_out(format!("---\n{}", serde_yaml::to_string(&l)?).as_bytes())?;
            }
            return Ok(());
        }
        while let Some(chunk) = stream.next().await {
            write_out(&chunk.map_err(fail)?)?;
        }
        Ok(())
    })?
}
