//! systemd integration: READY, STATUS and WATCHDOG through sd_notify. All
//! of it is a no-op when the daemon does not run under systemd.

use std::time::Duration;

use orch_api::{Envelope, Request, Response};
use sd_notify::NotifyState;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::event::{self, Ping};
use crate::service::Service;

pub fn ready(status: &str) {
    let _ = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn stopping() {
    let _ = sd_notify::notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// Pets the watchdog at half its period, but only while the owner task
/// answers: a stuck owner is exactly what the watchdog must catch. Also
/// keeps STATUS= current.
pub async fn watchdog(ping: event::Sender<Ping>, service: Service, shutdown: CancellationToken) {
    let period = sd_notify::watchdog_enabled().map(|d| d / 2);
    let tick = period
        .unwrap_or(Duration::from_secs(5))
        .min(Duration::from_secs(5));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(tick) => {}
        }
        let (ptx, prx) = oneshot::channel();
        if ping.send(Ping(ptx)).await.is_err() {
            return;
        }
        let alive = tokio::time::timeout(tick, prx)
            .await
            .is_ok_and(|r| r.is_ok());
        if !alive {
            tracing::error!(
                "the owner task did not answer within {tick:?}; not petting the watchdog"
            );
            continue;
        }
        if let Ok(Response::Status(s)) = service.call(Envelope::new(None, Request::Status)).await {
            let started = s.groups.iter().filter(|g| g.started).count();
            let line = format!(
                "{started} group(s) started, {}/{} agents healthy, docker {}",
                s.agents.healthy,
                s.agents.wanted,
                if s.docker.connected {
                    "connected"
                } else {
                    "unreachable"
                }
            );
            let _ = sd_notify::notify(&[NotifyState::Status(&line)]);
        }
        if period.is_some() {
            let _ = sd_notify::notify(&[NotifyState::Watchdog]);
        }
    }
}
