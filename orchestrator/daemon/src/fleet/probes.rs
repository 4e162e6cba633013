//! Direct probes of another host's agents while that host's daemon is
//! down: what a host publishes for them ([`published`]), what this host
//! probes ([`targets`]), the probe loop ([`run`]) behind a narrow
//! [`RemoteProber`], and the set of running loops ([`RemoteProbes`]).
//!
//! Which agents to probe is the supervisor's decision
//! (`Supervisor::remote_probes`: agents of a down peer that a wanted
//! replica here needs and that are not known failed); this module only
//! finds where each one answers and reports what it finds. An agent is
//! probed at the address of its host (`federation.peers[].probe_address`,
//! or the host of the peer's `endpoint`) on the host port its snapshot
//! published, with the agent's own interval, timeout and retries (clamped
//! to [`MIN_INTERVAL`]..[`MAX_INTERVAL`] and at most [`MAX_TIMEOUT`]: they
//! come from a peer).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use orch_api::ProbeEndpoint;
use orch_core::model::{HostConfig, Probe, Protocol};

use super::FleetBook;
use crate::event::{self, RemoteProbeNews};
use crate::probe::{ProbeOutcome, http_probe};

/// A peer's agent is probed at most this often...
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// ...and at least this often.
pub const MAX_INTERVAL: Duration = Duration::from_secs(60);
/// The longest a probe of a peer's agent may take.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30);

/// The health endpoints this host publishes: for each replica of an
/// agent with an HTTP probe whose container port its `ports:` publish on
/// a host port (not bound to a loopback address), that port and the
/// probe's settings.
pub fn published(config: &HostConfig) -> Vec<ProbeEndpoint> {
    let mut out = Vec::new();
    for a in config.agents() {
        let Probe::Http { port, path } = &a.health.probe else {
            continue;
        };
        let Some(mapping) = a.ports.iter().find(|m| {
            m.container_port == *port
                && m.protocol == Protocol::Tcp
                && m.host_port.is_some()
                && !m
                    .host_ip
                    .as_deref()
                    .and_then(|ip| ip.parse::<IpAddr>().ok())
                    .is_some_and(|ip| ip.is_loopback())
        }) else {
            continue;
        };
        let mut seen = BTreeSet::new();
        for replica in 0..a.replicas {
            let Some(host_port) = mapping.for_replica(replica).and_then(|m| m.host_port) else {
                continue;
            };
            // One port published for several replicas is one endpoint.
            if !seen.insert(host_port) {
                continue;
            }
            out.push(ProbeEndpoint {
                agent: a.name.clone(),
                replica,
                port: host_port,
                path: path.clone(),
                interval_ms: millis(a.health.interval.std()),
                timeout_ms: millis(a.health.timeout.std()),
                retries: a.health.retries,
            });
        }
    }
    out
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One place an agent of another host answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteEndpoint {
    pub replica: u32,
    /// `HOST:PORT`, or `IP:PORT`.
    pub addr: String,
    pub path: String,
}

/// An agent of another host to probe, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteTarget {
    pub host: String,
    pub agent: String,
    /// Each of its replicas' endpoints: it passes when they all pass.
    pub endpoints: Vec<RemoteEndpoint>,
    pub interval: Duration,
    pub timeout: Duration,
    /// Failed probes in a row before it counts as unhealthy.
    pub retries: u32,
}

/// Where each of `wanted` (host, agent) answers, from `config`'s peers
/// and the last snapshot of each in `book`. An agent whose host has no
/// address or whose snapshot published no endpoint for it is left out:
/// it keeps the grace alone.
pub fn targets(
    wanted: &BTreeSet<(String, String)>,
    config: &HostConfig,
    book: &FleetBook,
) -> BTreeMap<(String, String), RemoteTarget> {
    let mut out = BTreeMap::new();
    let Some(fed) = &config.federation else {
        return out;
    };
    for (host, agent) in wanted {
        let Some(address) = fed
            .peers
            .iter()
            .find(|p| &p.name == host)
            .and_then(|p| p.probe_host())
        else {
            continue;
        };
        let Some((snapshot, _)) = book.get(host).and_then(|p| p.snapshot.as_ref()) else {
            continue;
        };
        let published: Vec<&ProbeEndpoint> = snapshot
            .probes
            .iter()
            .filter(|e| &e.agent == agent)
            .collect();
        let Some(first) = published.first() else {
            continue;
        };
        let addr = |port: u16| match address.parse::<IpAddr>() {
            Ok(ip) => std::net::SocketAddr::new(ip, port).to_string(),
            Err(_) => format!("{address}:{port}"),
        };
        out.insert(
            (host.clone(), agent.clone()),
            RemoteTarget {
                host: host.clone(),
                agent: agent.clone(),
                endpoints: published
                    .iter()
                    .map(|e| RemoteEndpoint {
                        replica: e.replica,
                        addr: addr(e.port),
                        path: e.path.clone(),
                    })
                    .collect(),
                interval: Duration::from_millis(first.interval_ms)
                    .clamp(MIN_INTERVAL, MAX_INTERVAL),
                timeout: Duration::from_millis(first.timeout_ms).min(MAX_TIMEOUT),
                retries: first.retries.clamp(1, 100),
            },
        );
    }
    out
}

/// Makes one HTTP probe of another host's agent.
#[async_trait]
pub trait RemoteProber: Send + Sync + Debug {
    /// Whether `endpoint` of `host`'s `agent` answered healthy within
    /// `timeout`.
    async fn probe(
        &self,
        host: &str,
        agent: &str,
        endpoint: &RemoteEndpoint,
        timeout: Duration,
    ) -> bool;
}

/// Probes over the network: the address resolved, then the same GET as
/// a local HTTP probe (`crate::probe::http_probe`).
#[derive(Debug, Default)]
pub struct HttpRemoteProber;

#[async_trait]
impl RemoteProber for HttpRemoteProber {
    async fn probe(
        &self,
        _host: &str,
        _agent: &str,
        endpoint: &RemoteEndpoint,
        timeout: Duration,
    ) -> bool {
        let resolved =
            tokio::time::timeout(timeout, tokio::net::lookup_host(endpoint.addr.as_str())).await;
        let Some(addr) = resolved
            .ok()
            .and_then(Result::ok)
            .and_then(|mut a| a.next())
        else {
            return false;
        };
        http_probe(addr, &endpoint.path, timeout).await == ProbeOutcome::Healthy
    }
}

/// Probes `target` every interval until the task is aborted, and says
/// when what it finds changes: healthy at the first pass (and again
/// after a failure), unhealthy once `retries` probes in a row failed.
pub async fn run(
    target: RemoteTarget,
    prober: Arc<dyn RemoteProber>,
    news: event::Sender<RemoteProbeNews>,
) {
    let mut failed = 0u32;
    let mut said: Option<bool> = None;
    loop {
        let mut ok = true;
        for e in &target.endpoints {
            if !prober
                .probe(&target.host, &target.agent, e, target.timeout)
                .await
            {
                ok = false;
                break;
            }
        }
        failed = if ok { 0 } else { failed.saturating_add(1) };
        let healthy = match (ok, failed >= target.retries) {
            (true, _) => Some(true),
            (false, true) => Some(false),
            (false, false) => None,
        };
        if let Some(healthy) = healthy
            && said != Some(healthy)
        {
            said = Some(healthy);
            let report = RemoteProbeNews {
                host: target.host.clone(),
                agent: target.agent.clone(),
                healthy,
            };
            if news.send(report).await.is_err() {
                return;
            }
        }
        tokio::time::sleep(target.interval).await;
    }
}

/// The probe loops running, one per (host, agent).
#[derive(Debug)]
pub struct RemoteProbes {
    prober: Arc<dyn RemoteProber>,
    news: event::Sender<RemoteProbeNews>,
    running: BTreeMap<(String, String), (RemoteTarget, tokio::task::AbortHandle)>,
}

impl RemoteProbes {
    pub fn new(prober: Arc<dyn RemoteProber>, news: event::Sender<RemoteProbeNews>) -> Self {
        RemoteProbes {
            prober,
            news,
            running: BTreeMap::new(),
        }
    }

    /// Runs exactly the loops of `wanted`: stops the others, and restarts
    /// one whose target changed.
    pub fn set(&mut self, wanted: BTreeMap<(String, String), RemoteTarget>) {
        if wanted.is_empty() && self.running.is_empty() {
            return;
        }
        self.running.retain(|key, (target, handle)| {
            let keep = wanted.get(key) == Some(target);
            if !keep {
                handle.abort();
            }
            keep
        });
        for (key, target) in wanted {
            if self.running.contains_key(&key) {
                continue;
            }
            tracing::info!(host = %target.host, agent = %target.agent, "probing directly while its host is down");
            let task = tokio::spawn(run(target.clone(), self.prober.clone(), self.news.clone()));
            self.running.insert(key, (target, task.abort_handle()));
        }
    }

    /// The (host, agent) pairs being probed.
    pub fn probing(&self) -> impl Iterator<Item = &(String, String)> {
        self.running.keys()
    }
}

impl Drop for RemoteProbes {
    fn drop(&mut self) {
        for (_, (_, handle)) in std::mem::take(&mut self.running) {
            handle.abort();
        }
    }
}

#[cfg(test)]
mod tests;
