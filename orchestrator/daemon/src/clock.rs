//! Wall-clock time, injected: event timestamps and anything kept across
//! restarts use it. (Timers and deadlines use tokio's monotonic clock,
//! which tests pause and advance.)

use std::fmt::Debug;
use std::time::{SystemTime, UNIX_EPOCH};

pub trait Clock: Send + Sync + Debug {
    /// Milliseconds since the Unix epoch.
    fn unix_ms(&self) -> u64;
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn unix_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

/// The fake, compiled for tests and the `testing` feature.
#[cfg(any(test, feature = "testing"))]
pub use manual::ManualClock;

#[cfg(any(test, feature = "testing"))]
mod manual {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::Clock;

    /// A clock that says what it is told (tests).
    #[derive(Debug, Clone, Default)]
    pub struct ManualClock(Arc<AtomicU64>);

    impl ManualClock {
        pub fn new(unix_ms: u64) -> Self {
            ManualClock(Arc::new(AtomicU64::new(unix_ms)))
        }
    }

    impl Clock for ManualClock {
        fn unix_ms(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
    }
}
