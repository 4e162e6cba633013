//! `top [--all-hosts] [--sort KEY] [--interval SECS] [--once]`: a live view
//! of the agents' GPU use and health, grouped per GPU.
//!
//! On a terminal it takes the screen over (`crate::top::terminal`) and
//! reads the figures again on each event of the followed event stream and
//! at least every interval, never more often than every [`MIN_GAP`]. When
//! the daemon goes away the last figures stay, the status line says why,
//! and the stream is followed again once the daemon answers. Without a
//! terminal (or with `--once`) it prints the plain table every interval
//! (or once), with no escape codes.

use std::io::IsTerminal;
use std::pin::Pin;
use std::time::Duration;

use anyhow::Result;
use futures_util::{Stream, StreamExt};
use orch_api::{Client, ClientError, Event, text};
use ratatui::crossterm::event::{
    Event as TermEvent, EventStream, KeyCode, KeyEventKind, KeyModifiers,
};
use tokio::time::{Instant, MissedTickBehavior};

use super::daemon::{block_on, fail};
use crate::exit::{self, Exit};
use crate::output::{Format, Out, write_out};
use crate::top::model::{self, Figures, HostFigures, Keyed, Order, Screen};
use crate::top::{terminal, view};

/// What `top` was asked for.
#[derive(Debug, Clone)]
pub struct Ask {
    pub all_hosts: bool,
    pub order: Order,
    pub interval: Duration,
    pub once: bool,
}

/// Reads are never closer together than this (at most 4 a second,
/// however many events come).
pub const MIN_GAP: Duration = Duration::from_millis(250);

/// A read the daemon does not answer within this is an error, so the
/// screen says so instead of freezing.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

pub fn run(client: &Client, ask: &Ask, out: &Out) -> Result<()> {
    if out.format != Format::Table {
        return Err(Exit::with(exit::USAGE, text::TOP_TABLES_ONLY).into());
    }
    let live = std::io::stdout().is_terminal() && std::io::stdin().is_terminal();
    if ask.once {
        let figures = block_on(read(client, ask.all_hosts))?.map_err(fail)?;
        let screen = Screen {
            figures,
            as_of: Some(clock()),
            ..Screen::default()
        };
        return write_out(model::plain(&screen, ask.order).as_bytes());
    }
    if live {
        block_on(live_loop(client, ask))?
    } else {
        block_on(plain_loop(client, ask))?
    }
}

/// The figures of this host (or `--host`'s), or of every host.
async fn read(client: &Client, all_hosts: bool) -> Result<Figures, ClientError> {
    if all_hosts {
        let fleet = client.fleet().await?;
        return Ok(Figures {
            fleet: true,
            hosts: fleet
                .hosts
                .into_iter()
                .map(|h| {
                    let (agents, gpu) = match h.snapshot {
                        Some(s) => (Some(s.agents), Some(s.gpu)),
                        None => (None, None),
                    };
                    HostFigures {
                        host: h.host,
                        state: Some(h.state),
                        age_ms: h.snapshot_age_ms,
                        agents,
                        gpu,
                    }
                })
                .collect(),
        });
    }
    let agents = client.agents(None).await?;
    let gpu = client.gpu().await?;
    Ok(Figures {
        fleet: false,
        hosts: vec![HostFigures {
            host: client.host().unwrap_or_default().to_string(),
            state: None,
            age_ms: None,
            agents: Some(agents),
            gpu: Some(gpu),
        }],
    })
}

/// A read bounded in time, its error in words.
async fn read_bounded(client: &Client, all_hosts: bool) -> Result<Figures, String> {
    match tokio::time::timeout(READ_TIMEOUT, read(client, all_hosts)).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!(
            "the daemon did not answer within {}s",
            READ_TIMEOUT.as_secs()
        )),
    }
}

/// `HH:MM:SS` (UTC) now.
fn clock() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let stamp = super::events::timestamp(ms);
    stamp.get(11..19).unwrap_or(&stamp).to_string()
}

/// Takes a read into the screen: new figures, or the error beside the
/// last ones.
fn take(screen: &mut Screen, read: Result<Figures, String>) {
    match read {
        Ok(f) => {
            screen.figures = f;
            screen.as_of = Some(clock());
            screen.error = None;
        }
        Err(e) => screen.error = Some(text::top_unreachable(&e, screen.as_of.as_deref())),
    }
}

/// No terminal: the plain table every interval, a blank line between two;
/// the daemon's errors on standard error, and the next read tries again.
async fn plain_loop(client: &Client, ask: &Ask) -> Result<()> {
    let mut tick = tokio::time::interval(ask.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut screen = Screen::default();
    let mut first = true;
    loop {
        tick.tick().await;
        take(&mut screen, read_bounded(client, ask.all_hosts).await);
        if let Some(e) = &screen.error {
            eprintln!("orchestratorctl: {e}");
            continue;
        }
        let mut page = if first { String::new() } else { "\n".into() };
        first = false;
        page.push_str(&model::plain(&screen, ask.order));
        write_out(page.as_bytes())?;
    }
}

type Events = Pin<Box<dyn Stream<Item = Result<Event, ClientError>>>>;

/// The daemon's events from `since` on, followed; `None` when it cannot
/// be reached (the next read tries again). The first time, `since` is 0
/// and the daemon's backlog comes first: a burst of cues that the reads'
/// spacing turns into one or two reads.
async fn follow(client: &Client, since: u64) -> Option<Events> {
    match tokio::time::timeout(READ_TIMEOUT, client.events(since, true)).await {
        Ok(Ok(s)) => Some(Box::pin(s)),
        _ => None,
    }
}

/// The next event, or never without a stream.
async fn next_event(events: &mut Option<Events>) -> Option<Result<Event, ClientError>> {
    match events {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

/// On a terminal: the screen, redrawn after each read and key.
async fn live_loop(client: &Client, ask: &Ask) -> Result<()> {
    let mut session = terminal::Session::start()?;
    let mut keys = EventStream::new();
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut order = ask.order;
    let mut screen = Screen::default();
    let mut events: Option<Events> = None;
    // Where a followed stream starts again: after the last event seen.
    let mut since = 0u64;
    let mut tick = tokio::time::interval(ask.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut due = true;
    let mut last_read: Option<Instant> = None;
    let mut redraw = true;
    loop {
        if redraw {
            session.terminal.draw(|f| view::draw(f, &screen, order))?;
            redraw = false;
        }
        let earliest = last_read.map_or_else(Instant::now, |t| t + MIN_GAP);
        tokio::select! {
            k = keys.next() => match k {
                Some(Ok(TermEvent::Key(k))) if k.kind != KeyEventKind::Release => {
                    let KeyCode::Char(c) = k.code else { continue };
                    let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
                    match model::key(c, ctrl, &mut order) {
                        Keyed::Quit => return Ok(()),
                        Keyed::Sorted => screen.note = None,
                        Keyed::Ignored => continue,
                    }
                    redraw = true;
                }
                // A resize (or a paste, a focus change): draw again.
                Some(Ok(_)) => redraw = true,
                Some(Err(e)) => return Err(e.into()),
                // No more input: the terminal went away.
                None => return Ok(()),
            },
            e = next_event(&mut events) => match e {
                Some(Ok(ev)) => {
                    since = ev.seq.saturating_add(1);
                    due = true;
                }
                // The daemon went away: the read says so.
                Some(Err(_)) | None => {
                    events = None;
                    due = true;
                }
            },
            _ = tick.tick() => due = true,
            () = tokio::time::sleep_until(earliest), if due => {
                due = false;
                last_read = Some(Instant::now());
                if events.is_none() {
                    events = follow(client, since).await;
                }
                take(&mut screen, read_bounded(client, ask.all_hosts).await);
                redraw = true;
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = sigterm.recv() => return Ok(()),
        }
    }
}
