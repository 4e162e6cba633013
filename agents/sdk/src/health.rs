//! The health and readiness an agent reports on `/health` and `/ready`.
//!
//! [`HealthState`] is one cloneable handle: the author's code flips it
//! (model loaded, GPU lost) and the server reads it on every probe. Health
//! is the author's verdict plus any registered checks, evaluated on each
//! request so a probe always sees the present state.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// What `/health` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// 200 `ok`.
    Healthy,
    /// 503 with this reason as the body.
    Unhealthy(String),
}

impl Health {
    /// Whether this is [`Health::Healthy`].
    pub fn is_healthy(&self) -> bool {
        matches!(self, Health::Healthy)
    }
}

/// A check run on every health probe: `Err(reason)` makes the agent
/// unhealthy for as long as it keeps failing. It runs on the server's task,
/// so it must be quick (a file stat, an atomic load), never a network call.
pub type Check = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Shared health and readiness of one agent.
///
/// Starts healthy and not ready: an agent turns ready once it can serve
/// (its model is loaded).
#[derive(Clone, Default)]
pub struct HealthState {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    // Std mutexes: held only to copy or replace a value, never across an
    // await, so an async mutex would buy nothing.
    verdict: Mutex<Option<String>>,
    checks: Mutex<Vec<Check>>,
    ready: AtomicBool,
}

/// A poisoned lock only means a check panicked while another thread held
/// it; the data (a reason, a list of closures) is still consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl HealthState {
    /// A healthy, not yet ready state with no checks.
    pub fn new() -> Self {
        Self::default()
    }

    /// Clears the author's unhealthy verdict (checks still apply).
    pub fn set_healthy(&self) {
        *lock(&self.inner.verdict) = None;
    }

    /// Marks the agent unhealthy with `reason` until [`set_healthy`](Self::set_healthy).
    pub fn set_unhealthy(&self, reason: impl Into<String>) {
        *lock(&self.inner.verdict) = Some(reason.into());
    }

    /// Sets whether `/ready` answers 200.
    pub fn set_ready(&self, ready: bool) {
        self.inner.ready.store(ready, Ordering::Release);
    }

    /// Whether `/ready` answers 200.
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
    }

    /// Adds a check evaluated on every health probe.
    pub fn add_check(&self, check: impl Fn() -> Result<(), String> + Send + Sync + 'static) {
        lock(&self.inner.checks).push(Arc::new(check));
    }

    /// The present health: the author's verdict and every failing check,
    /// their reasons joined with `; `.
    pub fn health(&self) -> Health {
        let mut reasons: Vec<String> = lock(&self.inner.verdict).iter().cloned().collect();
        // Copy the checks out so none runs under the lock: a check may
        // itself call set_unhealthy or add_check.
        let checks: Vec<Check> = lock(&self.inner.checks).clone();
        reasons.extend(checks.iter().filter_map(|check| check().err()));
        if reasons.is_empty() {
            Health::Healthy
        } else {
            Health::Unhealthy(reasons.join("; "))
        }
    }
}

impl fmt::Debug for HealthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthState")
            .field("verdict", &*lock(&self.inner.verdict))
            .field("checks", &lock(&self.inner.checks).len())
            .field("ready", &self.is_ready())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_healthy_and_not_ready() {
        let state = HealthState::new();
        assert_eq!(state.health(), Health::Healthy);
        assert!(!state.is_ready());
        state.set_ready(true);
        assert!(state.clone().is_ready(), "clones share state");
    }

    #[test]
    fn verdict_and_checks_combine() {
        let state = HealthState::new();
        let failing = Arc::new(AtomicBool::new(false));
        let flag = failing.clone();
        state.add_check(move || {
            if flag.load(Ordering::Relaxed) {
                Err("disk gone".into())
            } else {
                Ok(())
            }
        });
        assert!(state.health().is_healthy());

        state.set_unhealthy("model lost");
        assert_eq!(state.health(), Health::Unhealthy("model lost".into()));

        failing.store(true, Ordering::Relaxed);
        assert_eq!(
            state.health(),
            Health::Unhealthy("model lost; disk gone".into())
        );

        state.set_healthy();
        assert_eq!(state.health(), Health::Unhealthy("disk gone".into()));

        failing.store(false, Ordering::Relaxed);
        assert_eq!(state.health(), Health::Healthy);
    }

    #[test]
    fn a_check_may_touch_the_state() {
        let state = HealthState::new();
        let inner = state.clone();
        state.add_check(move || {
            inner.set_unhealthy("set from a check");
            Ok(())
        });
        assert!(
            state.health().is_healthy(),
            "verdict read before checks ran"
        );
        assert_eq!(state.health(), Health::Unhealthy("set from a check".into()));
    }
}
