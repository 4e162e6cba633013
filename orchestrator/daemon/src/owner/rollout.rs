//! Rollouts from the owner's side: `rollout status|pause|resume|undo`,
//! the rollback a failed step asks for, and the requests of a watched
//! replica handed to the supervisor's judgement.

use orch_api::rollout::RolloutAction;
use orch_api::{Rejection, Response, RolloutRefusal};
use orch_core::gpu::ReplicaKey;
use orch_core::slo::RequestDelta;
use orch_core::supervise::{RollbackAsk, RolloutKind};

use super::Owner;

impl Owner {
    /// `rollout ACTION`.
    pub(super) fn rollout_request(
        &mut self,
        now: u64,
        action: RolloutAction,
        caller: &tracing::Span,
        by: &str,
    ) -> Result<Response, Rejection> {
        let events_from = self.journal.next_seq();
        match action {
            RolloutAction::Status => {}
            RolloutAction::Pause => {
                let out = self
                    .sup
                    .pause_rollout()
                    .map_err(|r| Rejection::Rollout(orch_api::convert::rollout_refusal(r)))?;
                self.carry_out(out);
            }
            RolloutAction::Resume => {
                let out = self
                    .sup
                    .resume_rollout(now)
                    .map_err(|r| Rejection::Rollout(orch_api::convert::rollout_refusal(r)))?;
                self.carry_out(out);
            }
            RolloutAction::Undo { to } => {
                return self.undo(now, to, caller, by).map(Response::Applied);
            }
        }
        Ok(Response::Rollout(orch_api::convert::rollout_status(
            &self.sup,
            now,
            events_from,
        )))
    }

    /// A failed step asked to go back: generation `to`'s config rolls out
    /// again (as a rollback, not watched). Without that config the
    /// rollout stays paused.
    pub(super) fn roll_back(&mut self, ask: RollbackAsk) {
        let now = self.clocks.now();
        let span = tracing::info_span!("rollback", from = ask.from, to = ask.to);
        let done = self.roll_back_to(now, ask, &span);
        match done {
            Ok(a) => tracing::warn!(
                from = ask.from,
                to = ask.to,
                generation = a.generation,
                "rolling back"
            ),
            Err(e) => {
                tracing::error!(
                    from = ask.from,
                    to = ask.to,
                    "cannot roll back, the rollout stays paused: {e}"
                );
                let out = self.sup.rollback_not_made();
                self.carry_out(out);
            }
        }
    }

    fn roll_back_to(
        &mut self,
        now: u64,
        ask: RollbackAsk,
        span: &tracing::Span,
    ) -> Result<orch_api::Applied, Rejection> {
        let text: String = self.generation_text(ask.to).ok_or_else(|| {
            Rejection::Rollout(RolloutRefusal::NotKept {
                generation: Some(ask.to),
                kept: self.kept_generations(),
            })
        })?;
        let name = format!("generation {}", ask.to);
        let loaded = self.source.load(Some((&name, &text)))?;
        self.take_config(
            now,
            loaded,
            Some(&text),
            span,
            "rollback",
            RolloutKind::Rollback {
                from: ask.from,
                to: ask.to,
            },
        )
    }

    /// A watched replica's requests since its last scrape.
    pub(super) fn watched_requests(&mut self, key: &ReplicaKey, delta: &RequestDelta) {
        let out = self.sup.rollout_requests(self.clocks.now(), key, delta);
        if !out.events.is_empty() || out.rollback.is_some() {
            self.carry_out(out);
        }
    }
}

impl Owner {
    /// A kept generation's config text.
    fn generation_text(&self, generation: u64) -> Option<String> {
        self.history.text(generation)
    }

    fn kept_generations(&self) -> Vec<u64> {
        self.history.kept()
    }

    /// `rollout undo [--to G]`: generation G's config (by default the last
    /// good generation before the running one) rolls out again, as a
    /// rollout of its own that pauses, not rolls back, when a step fails.
    fn undo(
        &mut self,
        now: u64,
        to: Option<u64>,
        caller: &tracing::Span,
        by: &str,
    ) -> Result<orch_api::Applied, Rejection> {
        if !self.history.available() {
            return Err(Rejection::NoHistory);
        }
        let running = self.sup.generation();
        let target = match to {
            Some(g) if g == running => {
                return Err(Rejection::Rollout(RolloutRefusal::AlreadyRunning {
                    generation: g,
                }));
            }
            Some(g) => g,
            None => self.history.last_good_before(running).ok_or_else(|| {
                Rejection::Rollout(RolloutRefusal::NotKept {
                    generation: None,
                    kept: self.kept_generations(),
                })
            })?,
        };
        let text = self.generation_text(target).ok_or_else(|| {
            Rejection::Rollout(RolloutRefusal::NotKept {
                generation: Some(target),
                kept: self.kept_generations(),
            })
        })?;
        let name = format!("generation {target}");
        let loaded = self.source.load(Some((&name, &text)))?;
        self.take_config(
            now,
            loaded,
            Some(&text),
            caller,
            by,
            RolloutKind::Undo { to: target },
        )
    }
}
