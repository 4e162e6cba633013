//! The wire format: a closed, versioned set of messages, each one ZeroMQ
//! multipart message. `docs/federation.md` is its specification, frame by
//! frame; this module is the one implementation of it, pure (bytes in,
//! values out) so it can be fuzzed and tested as data.
//!
//! Every message starts with a header frame:
//!
//! | bytes | content |
//! |---|---|
//! | 0–1 | magic `OF` |
//! | 2 | version, `1` |
//! | 3 | type: 1 heartbeat, 2 snapshot, 3 events, 4 request, 5 reply |
//! | 4… | W3C trace context, UTF-8: empty, or `traceparent`, optionally `\n` and `tracestate` |
//!
//! then the frames of its type, each exactly as many as listed in
//! [`Message`]'s variants. Integers are 8-byte big-endian unsigned; host
//! names UTF-8; bodies JSON. Anything else is refused with a
//! [`DecodeError`] whose [`DecodeError::kind`] is what gets counted.
//!
//! Bodies stay bytes here: the daemon encodes and decodes its own typed
//! bodies. The codec only checks that a body is well-formed JSON (an events
//! body, a JSON array), walking it without building a tree, so malformed
//! input is refused and counted at the bus.

use std::fmt;

use bytes::Bytes;
use serde::de::IgnoredAny;

/// The only version this build speaks.
pub const VERSION: u8 = 1;
/// The first two bytes of every header frame.
pub const MAGIC: [u8; 2] = *b"OF";
/// The largest body frame (JSON) accepted or sent.
pub const MAX_BODY: usize = 4 * 1024 * 1024;
/// The largest header frame: 4 bytes, a traceparent, a newline and a
/// tracestate of at most [`MAX_TRACESTATE`] characters.
pub const MAX_HEADER: usize = 4 + TRACEPARENT_LEN + 1 + MAX_TRACESTATE;
/// Host names are at most 63 bytes, like DNS labels.
pub const MAX_HOST: usize = 63;
pub const TRACEPARENT_LEN: usize = 55;
/// The W3C limit for `tracestate` (32 members of up to 256 bytes would be
/// more; vendors are told to truncate at 512).
pub const MAX_TRACESTATE: usize = 512;

/// Message type codes, byte 3 of the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MessageType {
    Heartbeat = 1,
    Snapshot = 2,
    Events = 3,
    Request = 4,
    Reply = 5,
}

impl MessageType {
    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => MessageType::Heartbeat,
            2 => MessageType::Snapshot,
            3 => MessageType::Events,
            4 => MessageType::Request,
            5 => MessageType::Reply,
            _ => return None,
        })
    }

    /// Frames after the header.
    fn body_frames(self) -> usize {
        match self {
            MessageType::Heartbeat => 4,
            MessageType::Snapshot => 4,
            MessageType::Events => 2,
            MessageType::Request => 3,
            MessageType::Reply => 2,
        }
    }
}

/// W3C trace context carried in the header frame. Both values are checked
/// on construction, so one that exists is valid on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    traceparent: String,
    tracestate: Option<String>,
}

impl TraceContext {
    pub fn new(traceparent: &str, tracestate: Option<&str>) -> Result<Self, Malformed> {
        if !valid_traceparent(traceparent) {
            return Err(Malformed::Traceparent);
        }
        if let Some(state) = tracestate
            && (state.is_empty()
                || state.len() > MAX_TRACESTATE
                || !state.bytes().all(|b| (0x20..=0x7e).contains(&b)))
        {
            return Err(Malformed::Tracestate);
        }
        Ok(TraceContext {
            traceparent: traceparent.to_owned(),
            tracestate: tracestate.map(str::to_owned),
        })
    }

    pub fn traceparent(&self) -> &str {
        &self.traceparent
    }

    pub fn tracestate(&self) -> Option<&str> {
        self.tracestate.as_deref()
    }
}

/// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, lowercase, ids
/// not all zero, version not `ff` (W3C Trace Context, level 1).
fn valid_traceparent(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != TRACEPARENT_LEN || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return false;
    }
    let hex = |r: &[u8]| r.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    let zero = |r: &[u8]| r.iter().all(|&c| c == b'0');
    let (version, trace, parent, flags) = (&b[0..2], &b[3..35], &b[36..52], &b[53..55]);
    hex(version)
        && version != b"ff"
        && hex(trace)
        && !zero(trace)
        && hex(parent)
        && !zero(parent)
        && hex(flags)
}

/// A host name as the config allows it: letters, digits, `_`, `-`, `.`,
/// starting with a letter or digit, at most 63 bytes.
pub fn valid_host(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_HOST
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
}

/// "I am alive": sent every heartbeat interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    pub host: String,
    /// Chosen once per daemon start, larger after every restart.
    pub incarnation: u64,
    /// Counts up from 1 within an incarnation.
    pub sequence: u64,
    /// Unix time in milliseconds when it was sent (for display only).
    pub sent_at_ms: u64,
}

/// The sender's state; each replaces the previous one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub host: String,
    pub incarnation: u64,
    pub sequence: u64,
    /// JSON.
    pub body: Bytes,
}

/// A batch of the sender's events, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Events {
    pub host: String,
    /// A JSON array.
    pub batch: Bytes,
}

/// A command for the receiving host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Chosen by the caller; the reply carries it back.
    pub id: u64,
    pub from: String,
    /// JSON.
    pub body: Bytes,
}

/// The answer to the request with the same `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub id: u64,
    /// JSON.
    pub body: Bytes,
}

/// The closed set of messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Frames: host, incarnation, sequence, sent_at_ms.
    Heartbeat(Heartbeat),
    /// Frames: host, incarnation, sequence, body.
    Snapshot(Snapshot),
    /// Frames: host, body (a JSON array).
    Events(Events),
    /// Frames: id, from, body.
    Request(Request),
    /// Frames: id, body.
    Reply(Reply),
}

impl Message {
    pub fn message_type(&self) -> MessageType {
        match self {
            Message::Heartbeat(_) => MessageType::Heartbeat,
            Message::Snapshot(_) => MessageType::Snapshot,
            Message::Events(_) => MessageType::Events,
            Message::Request(_) => MessageType::Request,
            Message::Reply(_) => MessageType::Reply,
        }
    }

    /// The host the message says it comes from, where it says one.
    pub fn claimed_host(&self) -> Option<&str> {
        match self {
            Message::Heartbeat(m) => Some(&m.host),
            Message::Snapshot(m) => Some(&m.host),
            Message::Events(m) => Some(&m.host),
            Message::Request(m) => Some(&m.from),
            Message::Reply(_) => None,
        }
    }
}

/// A message and its trace context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub trace: Option<TraceContext>,
    pub message: Message,
}

/// The kinds of refused input, as counted per peer. The first four come
/// from [`decode`]; the rest from the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropKind {
    UnknownVersion,
    UnknownType,
    Oversized,
    Malformed,
    /// A well-formed message claiming another host than its key's.
    Impostor,
    /// A well-formed message on a channel it does not belong to (a request
    /// from the side that serves subscriptions, for example).
    Unexpected,
    /// The daemon did not take this peer's messages fast enough and its
    /// share of the inbox was full.
    InboxFull,
    /// A request beyond the peer's requests in flight, answered at once
    /// with an `unavailable` error.
    Busy,
    /// A connection that sent more than its budget without completing a
    /// message (a multipart flood), shut down.
    OverBudget,
}

impl DropKind {
    pub const ALL: [DropKind; 9] = [
        DropKind::UnknownVersion,
        DropKind::UnknownType,
        DropKind::Oversized,
        DropKind::Malformed,
        DropKind::Impostor,
        DropKind::Unexpected,
        DropKind::InboxFull,
        DropKind::Busy,
        DropKind::OverBudget,
    ];

    /// A stable label, e.g. for a metric's `reason`.
    pub fn label(self) -> &'static str {
        match self {
            DropKind::UnknownVersion => "unknown_version",
            DropKind::UnknownType => "unknown_type",
            DropKind::Oversized => "oversized",
            DropKind::Malformed => "malformed",
            DropKind::Impostor => "impostor",
            DropKind::Unexpected => "unexpected",
            DropKind::InboxFull => "inbox_full",
            DropKind::Busy => "busy",
            DropKind::OverBudget => "over_budget",
        }
    }

    /// Whether the input could not be decoded at all.
    pub fn is_decode_error(self) -> bool {
        matches!(
            self,
            DropKind::UnknownVersion
                | DropKind::UnknownType
                | DropKind::Oversized
                | DropKind::Malformed
        )
    }
}

impl fmt::Display for DropKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// What exactly is wrong with a malformed message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("no frames")]
    Empty,
    #[error("the header frame is shorter than 4 bytes")]
    ShortHeader,
    #[error("the header frame does not start with `OF`")]
    Magic,
    #[error("the trace context is not UTF-8 or has more than two lines")]
    TraceText,
    #[error("invalid traceparent")]
    Traceparent,
    #[error("invalid tracestate")]
    Tracestate,
    #[error("{found} frames where a {what} has {expected}")]
    FrameCount {
        what: &'static str,
        expected: usize,
        found: usize,
    },
    #[error("frame {frame}: an integer frame is 8 bytes, found {len}")]
    Integer { frame: usize, len: usize },
    #[error("frame {frame}: not a host name")]
    Host { frame: usize },
    #[error("frame {frame}: not JSON: {reason}")]
    Json { frame: usize, reason: String },
    #[error("frame {frame}: an events body is a JSON array")]
    NotABatch { frame: usize },
}

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown protocol version {0} (this build speaks version {VERSION})")]
    UnknownVersion(u8),
    #[error("unknown message type {0}")]
    UnknownType(u8),
    #[error("frame {frame} is {len} bytes, more than the {max} allowed")]
    Oversized {
        frame: usize,
        len: usize,
        max: usize,
    },
    #[error("malformed message: {0}")]
    Malformed(#[from] Malformed),
}

impl DecodeError {
    pub fn kind(&self) -> DropKind {
        match self {
            DecodeError::UnknownVersion(_) => DropKind::UnknownVersion,
            DecodeError::UnknownType(_) => DropKind::UnknownType,
            DecodeError::Oversized { .. } => DropKind::Oversized,
            DecodeError::Malformed(_) => DropKind::Malformed,
        }
    }
}

/// Why a message cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("the body is {len} bytes, more than the {MAX_BODY} a peer accepts")]
    TooLarge { len: usize },
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("an events body is a JSON array")]
    NotABatch,
    #[error("`{0}` is not a host name")]
    Host(String),
}

/// The frames of one message, header first.
pub fn encode(envelope: &Envelope) -> Result<Vec<Bytes>, EncodeError> {
    let message = &envelope.message;
    let mut header = Vec::with_capacity(4 + TRACEPARENT_LEN);
    header.extend_from_slice(&MAGIC);
    header.push(VERSION);
    header.push(message.message_type() as u8);
    if let Some(trace) = &envelope.trace {
        header.extend_from_slice(trace.traceparent.as_bytes());
        if let Some(state) = &trace.tracestate {
            header.push(b'\n');
            header.extend_from_slice(state.as_bytes());
        }
    }
    if let Some(host) = message.claimed_host()
        && !valid_host(host)
    {
        return Err(EncodeError::Host(host.to_owned()));
    }
    let int = |n: u64| Bytes::copy_from_slice(&n.to_be_bytes());
    let text = |s: &str| Bytes::copy_from_slice(s.as_bytes());
    let mut frames = vec![Bytes::from(header)];
    match message {
        Message::Heartbeat(m) => frames.extend([
            text(&m.host),
            int(m.incarnation),
            int(m.sequence),
            int(m.sent_at_ms),
        ]),
        Message::Snapshot(m) => frames.extend([
            text(&m.host),
            int(m.incarnation),
            int(m.sequence),
            body(&m.body, false)?,
        ]),
        Message::Events(m) => frames.extend([text(&m.host), body(&m.batch, true)?]),
        Message::Request(m) => frames.extend([int(m.id), text(&m.from), body(&m.body, false)?]),
        Message::Reply(m) => frames.extend([int(m.id), body(&m.body, false)?]),
    }
    Ok(frames)
}

/// A body as it goes out: checked as a peer will check it, so a mistake
/// is this host's error rather than a peer's drop counter. The bytes are
/// shared, not copied.
fn body(bytes: &Bytes, batch: bool) -> Result<Bytes, EncodeError> {
    if bytes.len() > MAX_BODY {
        return Err(EncodeError::TooLarge { len: bytes.len() });
    }
    match check_json(bytes, batch) {
        Ok(()) => Ok(bytes.clone()),
        Err(JsonError::Syntax(reason)) => Err(EncodeError::NotJson(reason)),
        Err(JsonError::NotArray) => Err(EncodeError::NotABatch),
    }
}

enum JsonError {
    Syntax(String),
    NotArray,
}

/// Whether `bytes` are one JSON value (an array when `batch`), walked
/// without building it.
fn check_json(bytes: &[u8], batch: bool) -> Result<(), JsonError> {
    serde_json::from_slice::<IgnoredAny>(bytes).map_err(|e| JsonError::Syntax(e.to_string()))?;
    // Valid JSON, so its first non-blank byte says what it is.
    let first = bytes.iter().find(|b| !b" \t\r\n".contains(b));
    if batch && first != Some(&b'[') {
        return Err(JsonError::NotArray);
    }
    Ok(())
}

/// Reads one message. Never panics, whatever the frames hold.
pub fn decode<F: AsRef<[u8]>>(frames: &[F]) -> Result<Envelope, DecodeError> {
    let header = frames.first().ok_or(Malformed::Empty)?.as_ref();
    if header.len() < 4 {
        return Err(Malformed::ShortHeader.into());
    }
    if header[..2] != MAGIC {
        return Err(Malformed::Magic.into());
    }
    if header[2] != VERSION {
        return Err(DecodeError::UnknownVersion(header[2]));
    }
    let kind = MessageType::from_code(header[3]).ok_or(DecodeError::UnknownType(header[3]))?;
    for (i, frame) in frames.iter().enumerate() {
        let max = if i == 0 { MAX_HEADER } else { MAX_BODY };
        let len = frame.as_ref().len();
        if len > max {
            return Err(DecodeError::Oversized { frame: i, len, max });
        }
    }
    let trace = trace_context(&header[4..])?;
    let body = &frames[1..];
    if body.len() != kind.body_frames() {
        return Err(Malformed::FrameCount {
            what: type_name(kind),
            expected: kind.body_frames(),
            found: body.len(),
        }
        .into());
    }
    // Frame numbers in errors count the header as frame 0.
    let f = |i: usize| body[i - 1].as_ref();
    let message = match kind {
        MessageType::Heartbeat => Message::Heartbeat(Heartbeat {
            host: host(f(1), 1)?,
            incarnation: int(f(2), 2)?,
            sequence: int(f(3), 3)?,
            sent_at_ms: int(f(4), 4)?,
        }),
        MessageType::Snapshot => Message::Snapshot(Snapshot {
            host: host(f(1), 1)?,
            incarnation: int(f(2), 2)?,
            sequence: int(f(3), 3)?,
            body: json(f(4), 4, false)?,
        }),
        MessageType::Events => Message::Events(Events {
            host: host(f(1), 1)?,
            batch: json(f(2), 2, true)?,
        }),
        MessageType::Request => Message::Request(Request {
            id: int(f(1), 1)?,
            from: host(f(2), 2)?,
            body: json(f(3), 3, false)?,
        }),
        MessageType::Reply => Message::Reply(Reply {
            id: int(f(1), 1)?,
            body: json(f(2), 2, false)?,
        }),
    };
    Ok(Envelope { trace, message })
}

fn type_name(kind: MessageType) -> &'static str {
    match kind {
        MessageType::Heartbeat => "heartbeat",
        MessageType::Snapshot => "snapshot",
        MessageType::Events => "events message",
        MessageType::Request => "request",
        MessageType::Reply => "reply",
    }
}

fn trace_context(bytes: &[u8]) -> Result<Option<TraceContext>, Malformed> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| Malformed::TraceText)?;
    let mut lines = text.split('\n');
    let parent = lines.next().unwrap_or_default();
    let state = lines.next();
    if lines.next().is_some() {
        return Err(Malformed::TraceText);
    }
    TraceContext::new(parent, state).map(Some)
}

fn int(bytes: &[u8], frame: usize) -> Result<u64, Malformed> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| Malformed::Integer {
        frame,
        len: bytes.len(),
    })?;
    Ok(u64::from_be_bytes(array))
}

fn host(bytes: &[u8], frame: usize) -> Result<String, Malformed> {
    match std::str::from_utf8(bytes) {
        Ok(s) if valid_host(s) => Ok(s.to_owned()),
        _ => Err(Malformed::Host { frame }),
    }
}

/// A body frame, checked and copied out of the transport's buffer.
fn json(bytes: &[u8], frame: usize, batch: bool) -> Result<Bytes, Malformed> {
    match check_json(bytes, batch) {
        Ok(()) => Ok(Bytes::copy_from_slice(bytes)),
        Err(JsonError::Syntax(reason)) => Err(Malformed::Json { frame, reason }),
        Err(JsonError::NotArray) => Err(Malformed::NotABatch { frame }),
    }
}
