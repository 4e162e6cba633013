//! The clock of observability: how often the owner publishes a metrics
//! snapshot, samples availability, scrapes the agents, saves the SLO
//! history and asks its autoscalers, and the [`Tick`]s that tell it to. The ticker is its own task
//! so the owner's loop stays one `match` over events; what each tick does
//! is in `owner/observe.rs`.

use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::event::{self, Tick};

/// Intervals and bounds of metrics and SLO work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObserveSettings {
    /// A changed state reaches `/metrics` within this.
    pub publish_interval: Duration,
    /// One availability sample per wanted required replica per interval.
    pub sample_interval: Duration,
    /// Each running agent of a group with a latency or error-rate SLO is
    /// scraped this often.
    pub scrape_interval: Duration,
    /// A scrape that takes longer gives nothing.
    pub scrape_timeout: Duration,
    /// The SLO history is written this often (and at shutdown).
    pub save_interval: Duration,
    /// Autoscalers are asked, and autoscaled replicas' CPU read, this
    /// often.
    pub autoscale_interval: Duration,
}

impl Default for ObserveSettings {
    fn default() -> Self {
        ObserveSettings {
            publish_interval: Duration::from_secs(1),
            sample_interval: Duration::from_secs(1),
            scrape_interval: Duration::from_secs(10),
            scrape_timeout: Duration::from_secs(2),
            save_interval: Duration::from_secs(300),
            autoscale_interval: Duration::from_secs(5),
        }
    }
}

/// Sends the periodic ticks until `stop` fires.
pub async fn ticker(
    settings: ObserveSettings,
    ticks: event::Sender<Tick>,
    stop: CancellationToken,
) {
    let every = |d: Duration| {
        let mut i = tokio::time::interval(d.max(Duration::from_millis(10)));
        i.set_missed_tick_behavior(MissedTickBehavior::Delay);
        i
    };
    let mut publish = every(settings.publish_interval);
    let mut sample = every(settings.sample_interval);
    let mut scrape = every(settings.scrape_interval);
    let mut save = every(settings.save_interval);
    let mut autoscale = every(settings.autoscale_interval);
    // The first save tick fires at once; there is nothing new to save yet.
    save.tick().await;
    loop {
        let tick = tokio::select! {
            () = stop.cancelled() => return,
            _ = publish.tick() => Tick::Publish,
            _ = sample.tick() => Tick::Sample,
            _ = scrape.tick() => Tick::Scrape,
            _ = save.tick() => Tick::Save,
            _ = autoscale.tick() => Tick::Autoscale,
        };
        if ticks.send(tick).await.is_err() {
            return;
        }
    }
}
