//! The supervision state machine of one host, as pure data.
//!
//! The daemon's owner task feeds a [`Supervisor`] what happened (container
//! seen, died, health result, an operation finished, an operator command)
//! together with the current time, and executes the [`Action`]s it returns.
//! Nothing here does I/O or reads a clock, so every rule below is tested
//! with plain tables.
//!
//! Rules:
//! - A group is ready once every replica of its required agents has been
//!   healthy for the group's `min_healthy`; a replica adopted running is
//!   dated from Docker's `StartedAt`. Once ready, it stays ready while
//!   they stay healthy.
//! - A replica starts only when every agent it depends on is ready (all of
//!   its replicas running and healthy, or running with no probe). An
//!   optional dependency (`required: false`) never holds anyone.
//! - Independent replicas start together; an agent's replicas are
//!   recreated when its config hash changes, as a rollout (`rollout`):
//!   step by step, each step's new replicas watched, a failed step paused
//!   or rolled back; a replacement's old container stops only once its
//!   new one exists.
//! - A container that exits is restarted as its policy says, after an
//!   exponential backoff with jitter; `restarts` restarts within `window`
//!   mark it crash-looping, which stops its (transitive, required)
//!   dependents; they start again, in dependency order, once it is healthy.
//! - A replica whose measured GPU memory goes over its slice's is
//!   reported once per episode (`over_limit`); under
//!   `gpu.over_limit: restart` it is restarted at once, and the restart
//!   counts towards its crash loop as a crash does.
//! - Replicas that are no longer wanted stop in reverse dependency order.
//! - While Docker is unreachable nothing is attempted; when it is back the
//!   observed containers are adopted by their labels, never duplicated.
//! - A peer that is down keeps its last known view for
//!   `federation.peer_grace` (`remote`), and meanwhile its agents whose
//!   health endpoint it published are probed directly: its dependents
//!   here are stopped only when it (or a failed probe) says an agent is
//!   not ready, or the grace runs out with no news (a passing probe is
//!   news of its agent).
//! - A GPU's MPS server seen in `FAULT` restarts the running MPS replicas
//!   of that GPU, once per fault episode, without counting it as their
//!   failure (`mps`).
//! - A daemon that lost its state infers from the running containers
//!   which groups were started (`infer`), and stops nothing that runs.

mod decide;
mod infer;
mod mps;
#[cfg(test)]
mod prop;
mod remote;
mod rollout;
mod state;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_mps;
#[cfg(test)]
mod tests_over_limit;
#[cfg(test)]
mod tests_ready;
#[cfg(test)]
mod tests_remote;
#[cfg(test)]
mod tests_restart;
#[cfg(test)]
mod tests_rollout;
#[cfg(test)]
mod tests_scale;

pub use infer::*;
pub use mps::{FaultingClient, MpsFault, MpsFaultClient, RestartCause};
pub use rollout::{
    AgentProgress, MIN_REQUESTS, PAGE_BURN, PauseCause, RollbackAsk, Rollout, RolloutKind,
    RolloutPhase, RolloutRefusal, Signal, Step, StepFailure,
};
pub use state::*;
