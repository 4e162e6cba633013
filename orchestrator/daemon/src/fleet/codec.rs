//! The bodies daemons send each other over the bus, one encode and one
//! decode per kind: a host's snapshot, an events batch, a request
//! envelope, a reply. Their schema is the control API's (`orch_api`), in
//! JSON; the bus frames them and knows nothing of what is inside.
//!
//! What a peer says about itself is checked here: a snapshot or an event
//! whose `host` is not the name of the peer that sent it is refused (the
//! caller counts refusals per peer), as is an event larger than
//! [`MAX_EVENT_BYTES`], and a snapshot that publishes more than
//! [`MAX_PROBE_ENDPOINTS`] health endpoints or a path this host would not
//! send in a request line (longer than [`MAX_PROBE_PATH`], not starting
//! with `/`, or with a space or control character), or that lists more
//! than [`MAX_GPU_PROCESS_ENTRIES`] users and unowned processes of one GPU.
//! A refused body is never acted on, never a panic.

use orch_api::{Envelope, Event, HostSnapshot, Reply};
use serde::Serialize;

/// The largest event a peer may send. An event is a few hundred bytes; a
/// GPU plan error naming every GPU of a large host a few kilobytes.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;

/// The most health endpoints a peer's snapshot may publish: one per
/// replica whose probe port it publishes.
pub const MAX_PROBE_ENDPOINTS: usize = 1024;

/// The longest health endpoint path a peer may publish, in bytes.
pub const MAX_PROBE_PATH: usize = 256;

/// The most entries (replicas using it and unowned processes) a peer's
/// snapshot may list for one GPU: what its GPU worker takes of one GPU
/// (`gpu::MAX_PROCESSES_PER_GPU`).
pub const MAX_GPU_PROCESS_ENTRIES: usize = crate::gpu::MAX_PROCESSES_PER_GPU;

/// Why a body was refused.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("not a {kind}: {source}")]
    Syntax {
        kind: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot encode a {kind}: {source}")]
    Encode {
        kind: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// A peer spoke for another host.
    #[error("a {kind} of host `{claimed}` sent by peer `{peer}`")]
    NotItsOwn {
        kind: &'static str,
        claimed: String,
        peer: String,
    },
    #[error("an event of {len} bytes, over the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("a snapshot publishing {len} health endpoints, over the limit of {max}")]
    TooManyProbes { len: usize, max: usize },
    #[error("a snapshot listing {len} processes on GPU {gpu}, over the limit of {max}")]
    TooManyGpuProcesses { gpu: u32, len: usize, max: usize },
    #[error("a health endpoint path of {len} bytes for agent `{agent}`, over the limit of {max}")]
    ProbePathTooLong {
        agent: String,
        len: usize,
        max: usize,
    },
    /// A path that would not read as one in a request line.
    #[error("a health endpoint path for agent `{agent}` that is not `/` and printable characters")]
    ProbePathInvalid { agent: String },
}

impl CodecError {
    /// What was wrong, without saying which kind of body it was.
    pub fn detail(&self) -> String {
        match self {
            CodecError::Syntax { source, .. } | CodecError::Encode { source, .. } => {
                source.to_string()
            }
            other => other.to_string(),
        }
    }
}

fn encode<T: Serialize>(kind: &'static str, value: &T) -> Result<Vec<u8>, CodecError> {
    serde_json::to_vec(value).map_err(|source| CodecError::Encode { kind, source })
}

fn decode<'a, T: serde::Deserialize<'a>>(
    kind: &'static str,
    body: &'a [u8],
) -> Result<T, CodecError> {
    serde_json::from_slice(body).map_err(|source| CodecError::Syntax { kind, source })
}

fn its_own(kind: &'static str, claimed: &str, peer: &str) -> Result<(), CodecError> {
    if claimed == peer {
        Ok(())
    } else {
        Err(CodecError::NotItsOwn {
            kind,
            claimed: claimed.to_string(),
            peer: peer.to_string(),
        })
    }
}

pub fn encode_snapshot(s: &HostSnapshot) -> Result<Vec<u8>, CodecError> {
    encode("snapshot", s)
}

/// A snapshot from `peer`, which must be that peer's own, with its
/// health endpoints within their bounds.
pub fn decode_snapshot(peer: &str, body: &[u8]) -> Result<HostSnapshot, CodecError> {
    let s: HostSnapshot = decode("snapshot", body)?;
    its_own("snapshot", &s.status.host, peer)?;
    if s.probes.len() > MAX_PROBE_ENDPOINTS {
        return Err(CodecError::TooManyProbes {
            len: s.probes.len(),
            max: MAX_PROBE_ENDPOINTS,
        });
    }
    for g in &s.gpu.gpus {
        let len = g.usage.len() + g.unowned.len();
        if len > MAX_GPU_PROCESS_ENTRIES {
            return Err(CodecError::TooManyGpuProcesses {
                gpu: g.info.index,
                len,
                max: MAX_GPU_PROCESS_ENTRIES,
            });
        }
    }
    for p in &s.probes {
        if p.path.len() > MAX_PROBE_PATH {
            return Err(CodecError::ProbePathTooLong {
                agent: p.agent.clone(),
                len: p.path.len(),
                max: MAX_PROBE_PATH,
            });
        }
        // INVARIANT: a published path goes into a request line as it is,
        // so it can carry no space, line break or other control byte.
        let printable = p.path.bytes().all(|b| b.is_ascii_graphic());
        if !p.path.starts_with('/') || !printable {
            return Err(CodecError::ProbePathInvalid {
                agent: p.agent.clone(),
            });
        }
    }
    Ok(s)
}

/// An events batch: a JSON array of events, written without building a
/// tree of values.
pub fn encode_events(events: &[Event]) -> Result<Vec<u8>, CodecError> {
    encode("events batch", &events)
}

/// What an events batch from a peer held.
#[derive(Debug, Default)]
pub struct EventsBatch {
    /// Each event with its size on the wire, in batch order.
    pub events: Vec<(Event, usize)>,
    pub refused: Vec<CodecError>,
}

/// An events batch from `peer`: a JSON array whose every event must be
/// the peer's own and at most [`MAX_EVENT_BYTES`]; the others are refused
/// one by one (each element is read from its own bytes, never as a tree
/// of values). A batch that is not an array is refused whole.
pub fn decode_events(peer: &str, batch: &[u8]) -> EventsBatch {
    let mut out = EventsBatch::default();
    let elements: Vec<&serde_json::value::RawValue> = match decode("events batch", batch) {
        Ok(elements) => elements,
        Err(e) => {
            out.refused.push(e);
            return out;
        }
    };
    for raw in elements {
        let body = raw.get().as_bytes();
        let one = if body.len() > MAX_EVENT_BYTES {
            Err(CodecError::TooLarge {
                len: body.len(),
                max: MAX_EVENT_BYTES,
            })
        } else {
            decode::<Event>("event", body).and_then(|e| its_own("event", &e.host, peer).map(|()| e))
        };
        match one {
            Ok(e) => out.events.push((e, body.len())),
            Err(e) => out.refused.push(e),
        }
    }
    out
}

pub fn encode_request(env: &Envelope) -> Result<Vec<u8>, CodecError> {
    encode("request", env)
}

pub fn decode_request(body: &[u8]) -> Result<Envelope, CodecError> {
    decode("request", body)
}

pub fn encode_reply(r: &Reply) -> Result<Vec<u8>, CodecError> {
    encode("reply", r)
}

pub fn decode_reply(body: &[u8]) -> Result<Reply, CodecError> {
    decode("reply", body)
}

#[cfg(test)]
/// pc2's snapshot publishing `probes`, as bytes (the snapshot of a
/// daemon whose own snapshot `fleet` tests build).
pub(crate) fn snapshot_with(probes: Vec<orch_api::ProbeEndpoint>) -> Vec<u8> {
    let mut v = serde_json::json!({
        "status": {
            "host": "pc2", "version": "0", "pid": 1, "uptime_ms": 0,
            "config_path": "", "generation": 1,
            "docker": {"connected": true, "endpoint": "", "engine_version": null,
                       "api_version": null, "gpu_injection": "env"},
            "gpu": {"available": false, "reason": null, "gpus": 0, "slices": 0},
            "groups": [],
            "agents": {"wanted": 0, "running": 0, "healthy": 0, "crashlooping": 0}
        },
        "agents": [],
        "gpu": {"available": false, "reason": null, "library": null,
                "driver_version": null, "gpus": []}
    });
    v["probes"] = serde_json::to_value(probes).unwrap_or_default();
    serde_json::to_vec(&v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use orch_api::{ApiError, ErrorCode, EventKind, Request, Response};

    fn event(host: &str, seq: u64) -> Event {
        Event {
            host: host.into(),
            seq,
            time_ms: 1,
            kind: EventKind::DockerUp,
        }
    }

    #[test]
    fn every_body_kind_round_trips() {
        let env = Envelope::new(
            Some("pc2".into()),
            Request::GroupStart {
                group: "vision".into(),
            },
        );
        assert_eq!(decode_request(&encode_request(&env).unwrap()).unwrap(), env);
        let reply = Reply::from(Err::<Response, _>(ApiError::new(ErrorCode::NotFound, "no")));
        assert_eq!(decode_reply(&encode_reply(&reply).unwrap()).unwrap(), reply);
        let events = [event("pc2", 1), event("pc2", 2)];
        let batch = encode_events(&events).unwrap();
        let back = decode_events("pc2", &batch);
        assert!(back.refused.is_empty());
        let sizes: Vec<usize> = events
            .iter()
            .map(|e| serde_json::to_vec(e).unwrap().len())
            .collect();
        assert_eq!(
            back.events,
            events.iter().cloned().zip(sizes).collect::<Vec<_>>()
        );
    }

    fn endpoint(path: &str) -> orch_api::ProbeEndpoint {
        orch_api::ProbeEndpoint {
            agent: "Eyes".into(),
            replica: 0,
            port: 18080,
            path: path.into(),
            interval_ms: 1_000,
            timeout_ms: 500,
            retries: 2,
        }
    }

    #[test]
    fn a_snapshots_processes_per_gpu_are_bounded() {
        let class = orch_core::gpu::class_by_name("NVIDIA GeForce RTX 4090").unwrap();
        let fake = orch_gpu::FakeGpu::new().with_gpu(class, false);
        let info = orch_gpu::GpuBackend::inventory(&fake).unwrap().remove(0);
        let with = |n: u32| {
            let mut s = decode_snapshot("pc2", &snapshot_with(vec![])).unwrap();
            s.gpu.gpus.push(orch_api::GpuStatus {
                info: orch_api::convert::gpu_info(&info),
                telemetry: None,
                slices: vec![],
                free: orch_api::report::free_capacity(&info, &[], &[]),
                policy: None,
                usage: vec![],
                unowned: (0..n)
                    .map(|pid| orch_api::UnownedProcess {
                        pid,
                        memory_used_bytes: Some(1 << 20),
                        container: None,
                    })
                    .collect(),
            });
            encode_snapshot(&s).unwrap()
        };
        let max = MAX_GPU_PROCESS_ENTRIES as u32;
        let ok = decode_snapshot("pc2", &with(max)).unwrap();
        assert_eq!(ok.gpu.gpus[0].unowned.len(), MAX_GPU_PROCESS_ENTRIES);
        assert!(matches!(
            decode_snapshot("pc2", &with(max + 1)),
            Err(CodecError::TooManyGpuProcesses { gpu: 0, len, .. })
                if len == MAX_GPU_PROCESS_ENTRIES + 1
        ));
    }

    #[test]
    fn a_snapshots_health_endpoints_are_bounded() {
        let ok = decode_snapshot("pc2", &snapshot_with(vec![endpoint("/health")])).unwrap();
        assert_eq!(ok.probes, [endpoint("/health")]);
        let at_limit = format!("/{}", "a".repeat(MAX_PROBE_PATH - 1));
        assert!(decode_snapshot("pc2", &snapshot_with(vec![endpoint(&at_limit)])).is_ok());
        assert!(
            decode_snapshot(
                "pc2",
                &snapshot_with(vec![endpoint("/h"); MAX_PROBE_ENDPOINTS])
            )
            .is_ok()
        );
        assert!(matches!(
            decode_snapshot(
                "pc2",
                &snapshot_with(vec![endpoint("/h"); MAX_PROBE_ENDPOINTS + 1])
            ),
            Err(CodecError::TooManyProbes { len, .. }) if len == MAX_PROBE_ENDPOINTS + 1
        ));
        let over = format!("{at_limit}a");
        assert!(matches!(
            decode_snapshot("pc2", &snapshot_with(vec![endpoint(&over)])),
            Err(CodecError::ProbePathTooLong { len, .. }) if len == MAX_PROBE_PATH + 1
        ));
        for bad in [
            "health",
            "/health HTTP/1.0\r\nX-Evil: 1",
            "/a b",
            "/\u{7f}",
            "/é",
            "",
        ] {
            assert!(
                matches!(
                    decode_snapshot("pc2", &snapshot_with(vec![endpoint(bad)])),
                    Err(CodecError::ProbePathInvalid { .. })
                ),
                "{bad:?}"
            );
        }
        // A snapshot from before health endpoints were published.
        let mut old: serde_json::Value =
            serde_json::from_slice(&snapshot_with(Vec::new())).unwrap();
        old.as_object_mut().unwrap().remove("probes");
        let old = decode_snapshot("pc2", &serde_json::to_vec(&old).unwrap()).unwrap();
        assert!(old.probes.is_empty());
    }

    #[test]
    fn a_peer_speaks_only_for_itself() {
        let batch = encode_events(&[event("pc2", 1), event("mainpc", 2), event("pc2", 3)]).unwrap();
        let back = decode_events("pc2", &batch);
        assert_eq!(
            back.events.iter().map(|(e, _)| e.seq).collect::<Vec<_>>(),
            [1, 3]
        );
        assert!(matches!(
            back.refused.as_slice(),
            [CodecError::NotItsOwn { claimed, peer, .. }] if claimed == "mainpc" && peer == "pc2"
        ));
    }

    #[test]
    fn an_event_over_the_limit_and_garbage_are_refused_one_by_one() {
        let mut big = event("pc2", 1);
        big.kind = EventKind::GpuUnavailable {
            reason: "x".repeat(MAX_EVENT_BYTES),
        };
        let mut batch = b"[".to_vec();
        batch.extend(serde_json::to_vec(&big).unwrap());
        batch.extend(b",[\"not an event\"],");
        batch.extend(serde_json::to_vec(&event("pc2", 2)).unwrap());
        batch.extend(b"]");
        let back = decode_events("pc2", &batch);
        assert_eq!(back.events.len(), 1);
        assert!(matches!(
            back.refused.as_slice(),
            [
                CodecError::TooLarge { .. },
                CodecError::Syntax { kind: "event", .. }
            ]
        ));
        assert!(matches!(
            decode_events("pc2", b"{not a batch").refused.as_slice(),
            [CodecError::Syntax {
                kind: "events batch",
                ..
            }]
        ));
        assert!(matches!(
            decode_request(b"[]"),
            Err(CodecError::Syntax {
                kind: "request",
                ..
            })
        ));
    }
}
