//! Accepting connections without spinning. An accept that fails (out of
//! file descriptors, EMFILE or ENFILE, or out of memory) fails again at
//! once until something is freed: retried in a tight loop it takes a core
//! and floods the log. [`next`] waits between failed accepts, from
//! [`Backoff::MIN`] doubling to [`Backoff::MAX`], says so once per run of
//! failures, and starts over at the first success. The control socket
//! (`server`) and `/metrics` (`metrics::serve`) accept through it.

use std::future::Future;
use std::io;
use std::time::Duration;

/// A listener, as the accept loops need it.
pub trait Listener {
    type Conn;
    fn accept(&self) -> impl Future<Output = io::Result<Self::Conn>> + Send;
}

impl Listener for tokio::net::UnixListener {
    type Conn = tokio::net::UnixStream;
    async fn accept(&self) -> io::Result<Self::Conn> {
        tokio::net::UnixListener::accept(self).await.map(|(s, _)| s)
    }
}

impl Listener for tokio::net::TcpListener {
    type Conn = tokio::net::TcpStream;
    async fn accept(&self) -> io::Result<Self::Conn> {
        tokio::net::TcpListener::accept(self).await.map(|(s, _)| s)
    }
}

/// The wait before the next accept after a failed one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    next: Duration,
    /// Failures since the last success.
    failures: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: Self::MIN,
            failures: 0,
        }
    }
}

impl Backoff {
    pub const MIN: Duration = Duration::from_millis(10);
    pub const MAX: Duration = Duration::from_secs(1);

    /// A failure: how long to wait before trying again.
    fn failed(&mut self) -> Duration {
        self.failures += 1;
        let wait = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        wait
    }

    /// A success: the next failure waits the least again. Returns how
    /// many failures came before it.
    fn succeeded(&mut self) -> u64 {
        self.next = Self::MIN;
        std::mem::take(&mut self.failures)
    }
}

/// The next connection of `listener` (`what` names it in the log),
/// waiting after each failed accept as `backoff` says.
pub async fn next<L: Listener>(listener: &L, backoff: &mut Backoff, what: &str) -> L::Conn {
    loop {
        match listener.accept().await {
            Ok(conn) => {
                let failed = backoff.succeeded();
                if failed > 0 {
                    tracing::info!(failed, "{what}: accepting connections again");
                }
                return conn;
            }
            Err(e) => {
                let wait = backoff.failed();
                if backoff.failures == 1 {
                    tracing::error!(
                        "{what}: cannot accept a connection ({e}); trying again in {wait:?}, then less often"
                    );
                }
                tokio::time::sleep(wait).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Mutex;

    use super::*;

    /// Fails `fail` times with EMFILE, then accepts; records when each
    /// accept was tried (virtual time).
    struct Flaky {
        fail: Mutex<u32>,
        tried: Mutex<Vec<tokio::time::Instant>>,
    }

    impl Listener for Flaky {
        type Conn = ();
        fn accept(&self) -> impl Future<Output = io::Result<()>> + Send {
            self.tried.lock().unwrap().push(tokio::time::Instant::now());
            let mut fail = self.fail.lock().unwrap();
            let r = if *fail > 0 {
                *fail -= 1;
                Err(io::Error::from_raw_os_error(libc::EMFILE))
            } else {
                Ok(())
            };
            std::future::ready(r)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failed_accepts_wait_longer_and_longer_then_start_over() {
        let l = Flaky {
            fail: Mutex::new(9),
            tried: Mutex::new(Vec::new()),
        };
        let mut backoff = Backoff::default();
        let start = tokio::time::Instant::now();
        next(&l, &mut backoff, "test").await;
        let gaps: Vec<u64> = l
            .tried
            .lock()
            .unwrap()
            .windows(2)
            .map(|w| (w[1] - w[0]).as_millis() as u64)
            .collect();
        assert_eq!(gaps, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        assert_eq!(start.elapsed(), Duration::from_millis(3270));
        assert_eq!(backoff, Backoff::default(), "a success starts over");
    }
}
