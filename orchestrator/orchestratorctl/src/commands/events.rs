//! `events [-f] [--since SEQ] [--all-hosts] [--group G] [--agent A] [--kind K]`:
//! what the daemon did, oldest first.
//!
//! A stream, so its machine forms are streams too: `-o json` prints one
//! JSON event per line (NDJSON), `-o yaml` one YAML document per event
//! (`---` between them); both can be read while `-f` keeps them coming.
//! With `--all-hosts` every host of the federation is followed (each
//! through the local daemon, as `--host` does), and each line names its
//! host; without `-f` the hosts' events are merged by time. The filters
//! are applied here ([`orch_api::wire::EventFilter`]).
//!
//! A followed stream never ends by itself: when it does, the daemon went
//! away, and the command says so and exits 4.

use anyhow::Result;
use futures_util::{Stream, StreamExt};
use orch_api::wire::EventFilter;
use orch_api::{Client, ClientError, Event, text};

use super::daemon::{block_on, fail};
use crate::exit::{self, Exit};
use crate::output::{Format, Out};

/// What `events` was asked for.
#[derive(Debug, Clone)]
pub struct Ask {
    pub follow: bool,
    pub since: u64,
    pub all_hosts: bool,
    pub filter: EventFilter,
}

type Events = std::pin::Pin<Box<dyn Stream<Item = Result<Event, ClientError>>>>;

pub fn run(client: &Client, ask: &Ask, out: &Out) -> Result<()> {
    if let Some(k) = ask.filter.unknown_kind() {
        return Err(Exit::with(exit::USAGE, text::unknown_event_kind(k)).into());
    }
    block_on(go(client, ask, out))?
}

/// One host's stream, tagged: its events, then `None` when it ends.
type Tagged = std::pin::Pin<Box<dyn Stream<Item = (usize, Option<Result<Event, ClientError>>)>>>;

fn tagged(i: usize, s: Events) -> Tagged {
    Box::pin(
        s.map(move |e| (i, Some(e)))
            .chain(futures_util::stream::once(async move { (i, None) })),
    )
}

async fn go(client: &Client, ask: &Ask, out: &Out) -> Result<()> {
    if !ask.all_hosts {
        let mut events = Box::pin(client.events(ask.since, ask.follow).await.map_err(fail)?);
        while let Some(e) = events.next().await {
            print(&e.map_err(fail)?, ask, out)?;
        }
        return ended(ask.follow);
    }
    let fleet = client.fleet().await.map_err(fail)?;
    let names: Vec<&str> = fleet.hosts.iter().map(|h| h.host.as_str()).collect();
    let mut streams: Vec<Tagged> = Vec::new();
    for (i, host) in names.iter().enumerate() {
        // The first host is this one.
        let c = client.clone().for_host((i > 0).then(|| host.to_string()));
        match c.events(ask.since, ask.follow).await {
            Ok(s) => streams.push(tagged(i, Box::pin(s))),
            Err(e) if i > 0 => note(host, &e.to_string()),
            Err(e) => return Err(fail(e)),
        }
    }
    let mut all = futures_util::stream::select_all(streams);
    let mut kept = Vec::new();
    while let Some((i, item)) = all.next().await {
        match item {
            Some(Ok(e)) if ask.follow => print(&e, ask, out)?,
            Some(Ok(e)) => kept.push(e),
            // This host's stream decides; a peer's is said and left.
            Some(Err(e)) if i == 0 => return Err(fail(e)),
            Some(Err(e)) => note(names[i], &e.to_string()),
            None if i == 0 && ask.follow => return ended(true),
            None if i > 0 && ask.follow => note(names[i], text::EVENTS_STREAM_ENDED),
            None => {}
        }
    }
    // Without -f: everything there is now, merged by time.
    kept.sort_by(|a, b| (a.time_ms, &a.host, a.seq).cmp(&(b.time_ms, &b.host, b.seq)));
    for e in &kept {
        print(e, ask, out)?;
    }
    ended(ask.follow)
}

/// A followed stream never ends by itself: the daemon went away.
fn ended(follow: bool) -> Result<()> {
    if follow {
        return Err(Exit::with(exit::UNREACHABLE, text::EVENTS_STREAM_ENDED).into());
    }
    Ok(())
}

fn note(host: &str, error: &str) {
    eprintln!(
        "orchestratorctl: {}",
        text::host_events_unavailable(host, error)
    );
}

fn print(e: &Event, ask: &Ask, out: &Out) -> Result<()> {
    if !ask.filter.matches(e) {
        return Ok(());
    }
    let line = match out.format {
        Format::Table if ask.all_hosts => format!(
            "{}  {:>6}  {}  {}\n",
            e.host,
            e.seq,
            timestamp(e.time_ms),
            e.kind
        ),
        Format::Table => format!("{:>6}  {}  {}\n", e.seq, timestamp(e.time_ms), e.kind),
        Format::Json => format!("{}\n", serde_json::to_string(e)?),
        Format::Yaml => format!("---\n{}", serde_yaml::to_string(e)?),
    };
    crate::output::write_out(line.as_bytes())
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC) from Unix milliseconds.
pub fn timestamp(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days since 1970-01-01 to a civil date (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::timestamp;

    #[test]
    fn timestamps_carry_the_date() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
        // `date -u -d @1796193774`: Wed Dec  2 06:42:54 UTC 2026
        assert_eq!(timestamp(1_796_193_774_123), "2026-12-02T06:42:54.123Z");
        // A leap day.
        assert_eq!(timestamp(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
