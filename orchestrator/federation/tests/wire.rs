//! The codec: every message type survives a round trip, and every kind of
//! bad input is refused with its kind, never a panic. Expected frames are
//! written out by hand from docs/federation.md, not produced by `encode`.

use orch_federation::Bytes;
use orch_federation::DropKind;
use orch_federation::wire::{
    DecodeError, EncodeError, Envelope, Events, Heartbeat, MAX_BODY, Malformed, Message, Reply,
    Request, Snapshot, TraceContext, decode, encode,
};
use serde_json::json;

fn j(value: serde_json::Value) -> Bytes {
    serde_json::to_vec(&value).expect("JSON").into()
}

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn int(n: u64) -> Vec<u8> {
    n.to_be_bytes().to_vec()
}

fn header(kind: u8, trace: &str) -> Vec<u8> {
    let mut h = b"OF\x01".to_vec();
    h.push(kind);
    h.extend_from_slice(trace.as_bytes());
    h
}

#[test]
fn a_heartbeat_is_the_documented_frames() {
    let env = Envelope {
        trace: None,
        message: Message::Heartbeat(Heartbeat {
            host: "mainpc".into(),
            incarnation: 1_700_000_000_000,
            sequence: 42,
            sent_at_ms: 1_700_000_000_500,
        }),
    };
    let frames = encode(&env).expect("encode");
    let expected = vec![
        vec![b'O', b'F', 1, 1],
        b"mainpc".to_vec(),
        vec![0, 0, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00],
        vec![0, 0, 0, 0, 0, 0, 0, 42],
        vec![0, 0, 0x01, 0x8b, 0xcf, 0xe5, 0x69, 0xf4],
    ];
    assert_eq!(frames, expected);
    assert_eq!(decode(&frames), Ok(env));
}

#[test]
fn every_message_type_round_trips_with_and_without_trace_context() {
    let traces = [
        None,
        Some(TraceContext::new(TP, None).expect("valid")),
        Some(
            TraceContext::new(TP, Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")).expect("valid"),
        ),
    ];
    let messages = [
        Message::Heartbeat(Heartbeat {
            host: "pc2".into(),
            incarnation: 7,
            sequence: 1,
            sent_at_ms: 9,
        }),
        Message::Snapshot(Snapshot {
            host: "pc2".into(),
            incarnation: 7,
            sequence: 3,
            body: j(json!({"groups": [{"name": "vision_gpu", "running": 2}], "π": 3.5})),
        }),
        Message::Events(Events {
            host: "pc2".into(),
            batch: j(json!([{"seq": 1}, "two", null])),
        }),
        Message::Events(Events {
            host: "pc2".into(),
            batch: j(json!([])),
        }),
        Message::Request(Request {
            id: u64::MAX,
            from: "mainpc".into(),
            body: j(json!({"group_start": "vision_gpu"})),
        }),
        Message::Reply(Reply {
            id: 0,
            body: j(json!({"ok": true})),
        }),
    ];
    for trace in &traces {
        for message in &messages {
            let env = Envelope {
                trace: trace.clone(),
                message: message.clone(),
            };
            let frames = encode(&env).expect("encode");
            assert_eq!(decode(&frames).as_ref(), Ok(&env), "{env:?}");
        }
    }
}

#[test]
fn trace_context_rides_in_the_header_frame() {
    let frames = vec![
        header(5, &format!("{TP}\nvendor=x")),
        int(1),
        b"{}".to_vec(),
    ];
    let env = decode(&frames).expect("decode");
    let trace = env.trace.expect("trace");
    assert_eq!(trace.traceparent(), TP);
    assert_eq!(trace.tracestate(), Some("vendor=x"));
}

#[test]
fn refused_input_and_its_kind() {
    let big = vec![b' '; MAX_BODY + 1];
    let cases: Vec<(&str, Vec<Vec<u8>>, DecodeError)> = vec![
        ("no frames", vec![], Malformed::Empty.into()),
        (
            "short header",
            vec![b"OF\x01".to_vec()],
            Malformed::ShortHeader.into(),
        ),
        (
            "bad magic",
            vec![b"XF\x01\x01".to_vec()],
            Malformed::Magic.into(),
        ),
        (
            "version 2",
            vec![b"OF\x02\x01".to_vec(), b"h".to_vec()],
            DecodeError::UnknownVersion(2),
        ),
        (
            "version 0",
            vec![b"OF\x00\x09".to_vec()],
            DecodeError::UnknownVersion(0),
        ),
        ("type 0", vec![header(0, "")], DecodeError::UnknownType(0)),
        ("type 6", vec![header(6, "")], DecodeError::UnknownType(6)),
        (
            "oversized body",
            vec![header(5, ""), int(1), big.clone()],
            DecodeError::Oversized {
                frame: 2,
                len: MAX_BODY + 1,
                max: MAX_BODY,
            },
        ),
        (
            "oversized header",
            vec![header(5, &"x".repeat(600)), int(1), b"1".to_vec()],
            DecodeError::Oversized {
                frame: 0,
                len: 604,
                max: 572,
            },
        ),
        (
            "missing frame",
            vec![header(1, ""), b"h".to_vec(), int(1), int(1)],
            Malformed::FrameCount {
                what: "heartbeat",
                expected: 4,
                found: 3,
            }
            .into(),
        ),
        (
            "extra frame",
            vec![header(5, ""), int(1), b"1".to_vec(), b"1".to_vec()],
            Malformed::FrameCount {
                what: "reply",
                expected: 2,
                found: 3,
            }
            .into(),
        ),
        (
            "short integer",
            vec![header(5, ""), vec![0, 1], b"1".to_vec()],
            Malformed::Integer { frame: 1, len: 2 }.into(),
        ),
        (
            "host not UTF-8",
            vec![header(1, ""), vec![0xff, 0xfe], int(1), int(1), int(1)],
            Malformed::Host { frame: 1 }.into(),
        ),
        (
            "host not a name",
            vec![header(1, ""), b"../x".to_vec(), int(1), int(1), int(1)],
            Malformed::Host { frame: 1 }.into(),
        ),
        (
            "empty host",
            vec![header(4, ""), int(1), b"".to_vec(), b"{}".to_vec()],
            Malformed::Host { frame: 2 }.into(),
        ),
        (
            "events body not an array",
            vec![header(3, ""), b"h".to_vec(), b"{\"a\":1}".to_vec()],
            Malformed::NotABatch { frame: 2 }.into(),
        ),
        (
            "bad traceparent",
            vec![header(5, "00-xyz"), int(1), b"1".to_vec()],
            Malformed::Traceparent.into(),
        ),
        (
            "all-zero trace id",
            vec![
                header(5, "00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
                int(1),
                b"1".to_vec(),
            ],
            Malformed::Traceparent.into(),
        ),
        (
            "empty tracestate",
            vec![header(5, &format!("{TP}\n")), int(1), b"1".to_vec()],
            Malformed::Tracestate.into(),
        ),
        (
            "three trace lines",
            vec![header(5, &format!("{TP}\na=1\nb=2")), int(1), b"1".to_vec()],
            Malformed::TraceText.into(),
        ),
    ];
    for (name, frames, expected) in cases {
        assert_eq!(decode(&frames), Err(expected), "{name}");
    }
}

#[test]
fn a_body_that_is_not_json_is_malformed() {
    for body in [&b"{"[..], b"", b"nope", b"\xff\xfe", b"{\"a\":1} trailing"] {
        let frames = vec![header(2, ""), b"h".to_vec(), int(1), int(1), body.to_vec()];
        let err = decode(&frames).expect_err("refused");
        assert!(
            matches!(
                err,
                DecodeError::Malformed(Malformed::Json { frame: 4, .. })
            ),
            "{err}"
        );
        assert_eq!(err.kind(), DropKind::Malformed);
    }
}

#[test]
fn error_kinds_are_what_peers_count() {
    assert_eq!(
        DecodeError::UnknownVersion(9).kind(),
        DropKind::UnknownVersion
    );
    assert_eq!(DecodeError::UnknownType(9).kind(), DropKind::UnknownType);
    let oversized = DecodeError::Oversized {
        frame: 1,
        len: 2,
        max: 1,
    };
    assert_eq!(oversized.kind(), DropKind::Oversized);
    assert!(DropKind::Oversized.is_decode_error());
    assert!(!DropKind::Impostor.is_decode_error());
    assert_eq!(DropKind::InboxFull.label(), "inbox_full");
}

#[test]
fn nothing_is_encoded_that_a_peer_would_refuse() {
    let too_big = Envelope {
        trace: None,
        message: Message::Reply(Reply {
            id: 1,
            body: j(json!("x".repeat(MAX_BODY))),
        }),
    };
    assert!(matches!(
        encode(&too_big),
        Err(EncodeError::TooLarge { .. })
    ));
    let bad_host = Envelope {
        trace: None,
        message: Message::Events(Events {
            host: "no spaces".into(),
            batch: j(json!([])),
        }),
    };
    assert_eq!(
        encode(&bad_host),
        Err(EncodeError::Host("no spaces".into()))
    );
    let not_json = Envelope {
        trace: None,
        message: Message::Reply(Reply {
            id: 1,
            body: Bytes::from_static(b"{\"open\": "),
        }),
    };
    assert!(matches!(encode(&not_json), Err(EncodeError::NotJson(_))));
    let not_a_batch = Envelope {
        trace: None,
        message: Message::Events(Events {
            host: "pc2".into(),
            batch: Bytes::from_static(b" {\"seq\": 1}"),
        }),
    };
    assert_eq!(encode(&not_a_batch), Err(EncodeError::NotABatch));
    assert!(TraceContext::new("00-abc", None).is_err());
    assert!(TraceContext::new(TP, Some("a\u{7f}")).is_err());
}

#[test]
fn arbitrary_bytes_never_panic_the_decoder() {
    // A small deterministic sweep; the fuzz target goes much further.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..5000 {
        let n_frames = (next() % 7) as usize;
        let mut frames = Vec::new();
        for i in 0..n_frames {
            let len = (next() % 24) as usize;
            let mut f: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if i == 0 && f.len() >= 4 {
                f[0] = b'O';
                f[1] = b'F';
                f[2] = 1;
                f[3] = (next() % 7) as u8;
            }
            frames.push(f);
        }
        match decode(&frames) {
            // Whatever decodes must encode to something that decodes the same.
            Ok(env) => {
                let again = encode(&env).expect("a decoded message encodes");
                assert_eq!(decode(&again), Ok(env));
            }
            Err(e) if frames.is_empty() => assert_eq!(e, Malformed::Empty.into()),
            Err(_) => {}
        }
    }
}
