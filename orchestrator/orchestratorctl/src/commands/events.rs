//! `events [-f] [--since SEQ]`: what the daemon did, oldest first.
//!
//! A stream, so its machine forms are streams too: `-o json` prints one
//! JSON event per line (NDJSON), `-o yaml` one YAML document per event
//! (`---` between them); both can be read while `-f` keeps them coming.

use anyhow::Result;
use futures_util::StreamExt;

use super::daemon::{block_on, fail};
use crate::output::{Format, Out};

pub fn run(client: &orch_api::Client, follow: bool, since: u64, out: &Out) -> Result<()> {
    block_on(async {
        let mut events = Box::pin(client.events(since, follow).await.map_err(fail)?);
        while let Some(e) = events.next().await {
            let e = e.map_err(fail)?;
            match out.format {
                Format::Table => println!("{:>6}  {}  {}", e.seq, timestamp(e.time_ms), e.kind),
                Format::Json => println!("{}", serde_json::to_string(&e)?),
                Format::Yaml => print!("---\n{}", serde_yaml::to_string(&e)?),
            }
        }
        Ok(())
    })?
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
