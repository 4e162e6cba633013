//! `events [-f] [--since SEQ]`: what the daemon did, newest last.

use anyhow::Result;
use futures_util::StreamExt;
use orch_api::Event;

use super::daemon::{block_on, fail};
use super::wait::describe;
use crate::output::{Format, Out};

pub fn run(client: &orch_api::Client, follow: bool, since: u64, out: &Out) -> Result<()> {
    let path = format!(
        "/v1/events?since={since}{}",
        if follow { "&follow=1" } else { "" }
    );
    block_on(async {
        let mut events = Box::pin(client.lines::<Event>(&path).await.map_err(fail)?);
        while let Some(e) = events.next().await {
            let e = e.map_err(fail)?;
            match out.format {
                Format::Table => println!("{:>6}  {}  {}", e.seq, clock(e.time_ms), describe(&e)),
                _ => println!("{}", serde_json::to_string(&e)?),
            }
        }
        Ok(())
    })?
}

/// `HH:MM:SS.mmm` in UTC.
fn clock(ms: u64) -> String {
    let s = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60,
        ms % 1000
    )
}
