//! The bodies daemons send each other over the bus, one encode and one
//! decode per kind: a host's snapshot, an events batch, a request
//! envelope, a reply. Their schema is the control API's (`orch_api`), in
//! JSON; the bus frames them and knows nothing of what is inside.
//!
//! What a peer says about itself is checked here: a snapshot or an event
//! whose `host` is not the name of the peer that sent it is refused (the
//! caller counts refusals per peer), as is an event larger than
//! [`MAX_EVENT_BYTES`]. A refused body is never acted on, never a panic.

use orch_api::{Envelope, Event, HostSnapshot, Reply};
use serde::Serialize;

/// The largest event a peer may send. An event is a few hundred bytes; a
/// GPU plan error naming every GPU of a large host a few kilobytes.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;

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

/// A snapshot from `peer`, which must be that peer's own.
pub fn decode_snapshot(peer: &str, body: &[u8]) -> Result<HostSnapshot, CodecError> {
    let s: HostSnapshot = decode("snapshot", body)?;
    its_own("snapshot", &s.status.host, peer)?;
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
