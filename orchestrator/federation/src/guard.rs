//! What one connection may cost: the bound libzmq does not give.
//!
//! libzmq's `ZMQ_MAXMSGSIZE` bounds one frame, but a multipart message is
//! held in the connection's pipe until its last frame arrives, and nothing
//! bounds the number of frames: a listed key sending frame after frame
//! without ever ending the message grows the process without limit (256
//! frames of 8 MiB: 2 GB). The pipe's high-water mark counts whole
//! messages only, so it never applies.
//!
//! The bound here is kept per TCP connection, from outside libzmq:
//!
//! - The socket monitor reports each connection's file descriptor when it
//!   is accepted or connected, and when it is closed.
//! - Every frame the bus receives carries the descriptor it came from
//!   (`ZMQ_SRCFD`), so the bus knows how many bytes each connection has
//!   delivered as frames.
//! - The kernel knows how many bytes each connection has received
//!   (`TCP_INFO`'s `tcpi_bytes_received`).
//!
//! The difference is what libzmq (and the kernel's receive buffer) holds
//! for that connection: frames of an unfinished message, or bytes not yet
//! decoded. Past [`Limits::connection_budget`] the connection is shut down
//! (`shutdown(2)`; libzmq then closes it and frees its pipe) and counted
//! against its peer. Each frame is credited with its payload plus
//! [`FRAME_CREDIT`] bytes, more than CURVE and ZMTP add per frame, so a
//! legitimate connection is never charged its own framing; a frame that
//! costs libzmq more memory than its wire size (tiny frames) is bounded by
//! the same byte count within a small factor.
//!
//! A descriptor is only ever shut while the ledger holds it, and the
//! ledger is brought up to date from the monitor first: libzmq reports a
//! connection's end before it closes the descriptor, so a number reused by
//! another file of the process is never shut in its place.
//!
//! The same ledger holds connections that have not finished their CURVE
//! handshake: at most [`Limits::pending_connections`] of them, the oldest
//! shut down first, and all of them when the listener fails to accept for
//! want of descriptors (libzmq would otherwise retry the accept at once,
//! forever).
//!
//! [`Limits::connection_budget`]: crate::Limits::connection_budget
//! [`Limits::pending_connections`]: crate::Limits::pending_connections

use std::collections::BTreeMap;
use std::os::fd::RawFd;
use std::time::Instant;

use bytes::Bytes;

/// What each received frame is credited beyond its payload: ZMTP's frame
/// header (at most 9 bytes) and CURVE's MESSAGE command (8 bytes of name,
/// 8 of nonce, 16 of MAC, 1 of flags) come to 42.
pub(crate) const FRAME_CREDIT: u64 = 64;

/// Bytes a connection receives before its first message: the ZMTP
/// greeting, CURVE's HELLO and INITIATE and the ZMTP heartbeats in between
/// (about 600 on the wire), with room to spare.
const HANDSHAKE_ALLOWANCE: u64 = 4096;

/// What the monitor says of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SocketEvent {
    /// Accepted by the listener, or connected by a dealer.
    Opened(RawFd),
    /// Closed or disconnected.
    Closed(RawFd),
    /// The listener could not accept (`errno`).
    AcceptFailed(i32),
    /// A dealer's handshake completed (libzmq gives no descriptor).
    HandshakeSucceeded,
    Other,
}

const EVENT_CONNECTED: u16 = 0x0001;
const EVENT_ACCEPTED: u16 = 0x0020;
const EVENT_ACCEPT_FAILED: u16 = 0x0040;
const EVENT_CLOSED: u16 = 0x0080;
const EVENT_DISCONNECTED: u16 = 0x0200;
const EVENT_HANDSHAKE_SUCCEEDED: u16 = 0x1000;
/// The events the ledger needs.
pub(crate) const EVENTS: i32 = (EVENT_CONNECTED
    | EVENT_ACCEPTED
    | EVENT_ACCEPT_FAILED
    | EVENT_CLOSED
    | EVENT_DISCONNECTED
    | EVENT_HANDSHAKE_SUCCEEDED) as i32;

/// Reads a monitor event's first frame (libzmq 4.x: a 16-bit event and a
/// 32-bit value, native byte order).
pub(crate) fn parse_event(frame: &[u8]) -> SocketEvent {
    let (Some(event), Some(value)) = (frame.get(0..2), frame.get(2..6)) else {
        return SocketEvent::Other;
    };
    let event = u16::from_ne_bytes([event[0], event[1]]);
    let value = i32::from_ne_bytes([value[0], value[1], value[2], value[3]]);
    match event {
        EVENT_CONNECTED | EVENT_ACCEPTED => SocketEvent::Opened(value),
        EVENT_CLOSED | EVENT_DISCONNECTED => SocketEvent::Closed(value),
        EVENT_ACCEPT_FAILED => SocketEvent::AcceptFailed(value),
        EVENT_HANDSHAKE_SUCCEEDED => SocketEvent::HandshakeSucceeded,
        _ => SocketEvent::Other,
    }
}

/// One connection in the ledger.
#[derive(Debug)]
struct Conn {
    opened: Instant,
    /// Bytes credited for the frames it delivered.
    delivered: u64,
    /// The peer its first message came from; `None` while its handshake
    /// may still be pending.
    peer: Option<String>,
}

/// Why the ledger shut a connection down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// It held more than the budget undelivered.
    OverBudget { peer: Option<String>, held: u64 },
    /// One connection too many for its key.
    TooManyForKey { peer: String },
    /// Its handshake was pending while too many were.
    Evicted,
}

/// The connections of one socket, by descriptor.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    conns: BTreeMap<RawFd, Conn>,
    /// The most a connection held at the last check.
    max_held: u64,
}

impl Ledger {
    /// The most a connection held (and kept) at the last check.
    pub(crate) fn max_held(&self) -> u64 {
        self.max_held
    }

    pub(crate) fn contains(&self, fd: RawFd) -> bool {
        self.conns.contains_key(&fd)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.conns.len()
    }

    pub(crate) fn event(&mut self, event: SocketEvent) {
        match event {
            SocketEvent::Opened(fd) => {
                self.conns.insert(
                    fd,
                    Conn {
                        opened: Instant::now(),
                        delivered: 0,
                        peer: None,
                    },
                );
            }
            SocketEvent::Closed(fd) => {
                self.conns.remove(&fd);
            }
            SocketEvent::AcceptFailed(_) | SocketEvent::HandshakeSucceeded | SocketEvent::Other => {
            }
        }
    }

    /// Credits a frame from `fd` (from `peer`, the name its key was
    /// admitted under). Returns the peer's connection to shut when it is
    /// one too many for the key.
    pub(crate) fn delivered(
        &mut self,
        fd: RawFd,
        peer: Option<&str>,
        len: usize,
        per_key: usize,
    ) -> Option<(RawFd, Verdict)> {
        let conn = self.conns.get_mut(&fd)?;
        conn.delivered += len as u64 + FRAME_CREDIT;
        let peer = peer?;
        if conn.peer.is_some() {
            return None;
        }
        conn.peer = Some(peer.to_owned());
        let same: Vec<RawFd> = self
            .conns
            .iter()
            .filter(|(_, c)| c.peer.as_deref() == Some(peer))
            .map(|(fd, _)| *fd)
            .collect();
        (same.len() > per_key).then(|| {
            (
                fd,
                Verdict::TooManyForKey {
                    peer: peer.to_owned(),
                },
            )
        })
    }

    /// Connections to shut: over budget, or pending beyond `max_pending`
    /// (oldest first). `received` says how many bytes the kernel received
    /// on a descriptor.
    pub(crate) fn check(
        &mut self,
        budget: u64,
        max_pending: usize,
        received: impl Fn(RawFd) -> Option<u64>,
    ) -> Vec<(RawFd, Verdict)> {
        let mut out = Vec::new();
        self.max_held = 0;
        for (fd, conn) in &self.conns {
            let Some(got) = received(*fd) else { continue };
            let held = got.saturating_sub(conn.delivered + HANDSHAKE_ALLOWANCE);
            if held <= budget {
                self.max_held = self.max_held.max(held);
            } else {
                out.push((
                    *fd,
                    Verdict::OverBudget {
                        peer: conn.peer.clone(),
                        held,
                    },
                ));
            }
        }
        out.extend(
            self.evict(max_pending)
                .into_iter()
                .map(|fd| (fd, Verdict::Evicted)),
        );
        for (fd, _) in &out {
            self.conns.remove(fd);
        }
        out
    }

    /// The oldest connections without a message yet, beyond `keep` of them.
    pub(crate) fn evict(&mut self, keep: usize) -> Vec<RawFd> {
        let mut pending: Vec<(Instant, RawFd)> = self
            .conns
            .iter()
            .filter(|(_, c)| c.peer.is_none())
            .map(|(fd, c)| (c.opened, *fd))
            .collect();
        if pending.len() <= keep {
            return Vec::new();
        }
        pending.sort();
        let n = pending.len() - keep;
        let out: Vec<RawFd> = pending.into_iter().take(n).map(|(_, fd)| fd).collect();
        for fd in &out {
            self.conns.remove(fd);
        }
        out
    }
}

/// Bytes the kernel has received on TCP socket `fd`.
pub(crate) fn bytes_received(fd: RawFd) -> Option<u64> {
    let mut info = std::mem::MaybeUninit::<libc::tcp_info>::zeroed();
    let mut len = libc::socklen_t::try_from(size_of::<libc::tcp_info>()).ok()?;
    // SAFETY: `info` is a writable tcp_info and `len` its size; the kernel
    // writes at most `len` bytes. A descriptor that is not a TCP socket
    // (closed meanwhile, or reused) makes the call fail, and is skipped.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return None;
    }
    // SAFETY: the call succeeded, so the kernel filled the struct (and
    // zeroed() covered any tail an older kernel did not write).
    let info = unsafe { info.assume_init() };
    Some(info.tcpi_bytes_received)
}

/// Tells the bus thread that bytes arrived on a connection of a ledger,
/// so it checks what the connections hold when something arrives instead
/// of on a timer: an edge-triggered epoll set of their descriptors (the
/// kernel reports each arrival once; libzmq's own reads are unaffected).
/// A descriptor leaves the set by itself when libzmq closes it.
#[derive(Debug)]
pub(crate) struct Arrivals {
    epoll: std::os::fd::OwnedFd,
}

impl Arrivals {
    pub(crate) fn new() -> std::io::Result<Self> {
        // SAFETY: epoll_create1 takes flags only and returns a new
        // descriptor, or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created here and is owned by nothing else.
        let epoll = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        Ok(Arrivals { epoll })
    }

    /// The descriptor to poll: readable once something arrived.
    pub(crate) fn fd(&self) -> RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.epoll)
    }

    /// Watches connection `fd` (a number reused by a new connection is
    /// watched anew).
    pub(crate) fn watch(&self, fd: RawFd) {
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: u64::try_from(fd).unwrap_or(0),
        };
        // SAFETY: epoll_ctl reads one epoll_event; a descriptor that is
        // already gone makes it fail, which leaves the set as it was.
        unsafe {
            if libc::epoll_ctl(self.fd(), libc::EPOLL_CTL_ADD, fd, &mut event) != 0 {
                libc::epoll_ctl(self.fd(), libc::EPOLL_CTL_MOD, fd, &mut event);
            }
        }
    }

    /// Stops watching `fd` (reported closed; libzmq closes it next).
    pub(crate) fn unwatch(&self, fd: RawFd) {
        // SAFETY: as in `watch`; DEL ignores its event argument.
        unsafe {
            libc::epoll_ctl(self.fd(), libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut());
        }
    }

    /// Takes every arrival reported so far; true when there was one.
    pub(crate) fn drain(&self) -> bool {
        const BATCH: usize = 64;
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; BATCH];
        let mut any = false;
        loop {
            // SAFETY: the kernel writes at most BATCH events into
            // `events`; a zero timeout never blocks.
            let n = unsafe { libc::epoll_wait(self.fd(), events.as_mut_ptr(), BATCH as i32, 0) };
            if n <= 0 {
                return any;
            }
            any = true;
            if (n as usize) < BATCH {
                return any;
            }
        }
    }
}

/// Shuts connection `fd` down both ways; libzmq sees it end and closes it,
/// freeing whatever it held for it.
pub(crate) fn shut(fd: RawFd) {
    // SAFETY: shutdown(2) on a descriptor only ends a connection; it
    // neither closes nor frees the descriptor, which libzmq still owns.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}

/// `zmq_msg_get`'s property for the descriptor a frame came from
/// (`ZMQ_SRCFD` in zmq.h; deprecated there, still served by libzmq 4.3).
const ZMQ_SRCFD: i32 = 2;

/// One frame received with what the ledger needs: the descriptor it came
/// from and the peer name its connection was admitted under.
#[derive(Debug)]
pub(crate) struct Frame {
    pub(crate) data: Bytes,
    pub(crate) more: bool,
    pub(crate) fd: Option<RawFd>,
    pub(crate) user: Option<String>,
}

/// Receives one frame from `socket`. The `zmq` crate does not expose
/// `ZMQ_SRCFD`, hence the direct calls.
pub(crate) fn recv_frame(socket: &mut zmq::Socket, flags: i32) -> Result<Frame, zmq::Error> {
    let mut msg = zmq_sys::zmq_msg_t { __: [0; 64] };
    let raw = socket.as_mut_ptr();
    // SAFETY: `msg` is initialised before use and closed on every path;
    // `raw` is a live socket owned by the caller, used from this thread
    // only. Data is copied out before the message is closed.
    unsafe {
        zmq_sys::zmq_msg_init(&mut msg);
        if zmq_sys::zmq_msg_recv(&mut msg, raw, flags) < 0 {
            let error = zmq::Error::from_raw(zmq_sys::zmq_errno());
            zmq_sys::zmq_msg_close(&mut msg);
            return Err(error);
        }
        let size = zmq_sys::zmq_msg_size(&msg);
        let data = zmq_sys::zmq_msg_data(&mut msg);
        let data = if size == 0 || data.is_null() {
            Bytes::new()
        } else {
            Bytes::copy_from_slice(std::slice::from_raw_parts(data.cast::<u8>(), size))
        };
        let more = zmq_sys::zmq_msg_more(&msg) != 0;
        let fd = zmq_sys::zmq_msg_get(&msg, ZMQ_SRCFD);
        let user = zmq_sys::zmq_msg_gets(&msg, c"User-Id".as_ptr());
        let user = (!user.is_null()).then(|| {
            std::ffi::CStr::from_ptr(user)
                .to_string_lossy()
                .into_owned()
        });
        zmq_sys::zmq_msg_close(&mut msg);
        Ok(Frame {
            data,
            more,
            fd: (fd >= 0).then_some(fd),
            user,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitor_events_are_read_as_libzmq_writes_them() {
        let frame = |event: u16, value: i32| {
            let mut f = event.to_ne_bytes().to_vec();
            f.extend_from_slice(&value.to_ne_bytes());
            f
        };
        assert_eq!(parse_event(&frame(0x20, 17)), SocketEvent::Opened(17));
        assert_eq!(parse_event(&frame(0x01, 9)), SocketEvent::Opened(9));
        assert_eq!(parse_event(&frame(0x200, 17)), SocketEvent::Closed(17));
        assert_eq!(parse_event(&frame(0x40, 24)), SocketEvent::AcceptFailed(24));
        assert_eq!(
            parse_event(&frame(0x1000, 0)),
            SocketEvent::HandshakeSucceeded
        );
        assert_eq!(parse_event(&frame(0x4, 0)), SocketEvent::Other);
        assert_eq!(parse_event(b"\x20"), SocketEvent::Other, "short");
    }

    #[test]
    fn a_connection_holding_more_than_its_budget_is_shut() {
        let mut l = Ledger::default();
        l.event(SocketEvent::Opened(5));
        l.event(SocketEvent::Opened(6));
        assert_eq!(l.delivered(5, Some("b"), 1000, 4), None);
        assert_eq!(l.delivered(6, Some("c"), 10, 4), None);
        let received = |fd: RawFd| match fd {
            // Its 1000 bytes plus the handshake: nothing held.
            5 => Some(1000 + FRAME_CREDIT + HANDSHAKE_ALLOWANCE),
            // 1 MiB + 1 byte past what it delivered.
            6 => Some(10 + FRAME_CREDIT + HANDSHAKE_ALLOWANCE + (1 << 20) + 1),
            _ => None,
        };
        let shut = l.check(1 << 20, 64, received);
        assert_eq!(
            shut,
            vec![(
                6,
                Verdict::OverBudget {
                    peer: Some("c".into()),
                    held: (1 << 20) + 1
                }
            )]
        );
        assert_eq!(l.len(), 1, "a shut connection leaves the ledger");
        assert_eq!(l.max_held(), 0, "the one kept holds nothing");
        assert!(l.check(1 << 20, 64, received).is_empty());
    }

    #[test]
    fn pending_handshakes_beyond_the_cap_are_shut_oldest_first() {
        let mut l = Ledger::default();
        for fd in 10..20 {
            l.event(SocketEvent::Opened(fd));
        }
        // Two have sent a message: they are no longer pending.
        l.delivered(10, Some("b"), 1, 4);
        l.delivered(11, Some("c"), 1, 4);
        let shut = l.check(u64::MAX, 3, |_| Some(0));
        let fds: Vec<RawFd> = shut.iter().map(|(fd, _)| *fd).collect();
        assert_eq!(
            fds,
            (12..17).collect::<Vec<_>>(),
            "the oldest five of eight"
        );
        assert!(shut.iter().all(|(_, v)| *v == Verdict::Evicted));
        assert_eq!(l.len(), 5);
        l.event(SocketEvent::Closed(19));
        assert_eq!(l.len(), 4);
    }

    #[test]
    fn one_connection_too_many_for_a_key_is_named() {
        let mut l = Ledger::default();
        for fd in 1..=3 {
            l.event(SocketEvent::Opened(fd));
        }
        assert_eq!(l.delivered(1, Some("b"), 1, 2), None);
        assert_eq!(l.delivered(2, Some("b"), 1, 2), None);
        assert_eq!(
            l.delivered(3, Some("b"), 1, 2),
            Some((3, Verdict::TooManyForKey { peer: "b".into() }))
        );
        assert_eq!(l.delivered(1, Some("b"), 1, 2), None, "known already");
    }
}
