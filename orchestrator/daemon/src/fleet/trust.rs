//! Who may ask what of this host over the bus: the role of the sender's
//! key, `federation.remote_commands`, and the operator identity the
//! sending daemon saw on its control socket, checked against this host's
//! own control socket rules ([`Policy`]). Pure: a request in, a verdict
//! out. Also the bounds on a request's size by kind, and the audit line
//! of every remote command.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use orch_api::{Envelope, Operator, Rejection, RemoteLevel, RemoteRefusal, Request, RequestClass};
use orch_core::model::RemoteCommands;
use orch_federation::Role;

use crate::peer::{Peer, Policy};

/// A request body that carries a config text or a state document
/// (`apply`, `plan`, `plan_fleet`, `state import`) may be this large.
pub const CONFIG_BODY_LIMIT: usize = 4 * 1024 * 1024;
/// Every other request body may be this large.
pub const REQUEST_BODY_LIMIT: usize = 64 * 1024;

/// The two kinds of request body, by the bound each has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// `apply`, `plan`, `plan_fleet`, `config_diff`, `state import`:
    /// [`CONFIG_BODY_LIMIT`].
    Config,
    /// Everything else: [`REQUEST_BODY_LIMIT`].
    Request,
}

impl BodyKind {
    pub fn of(request: &Request) -> BodyKind {
        match request {
            Request::Apply { .. }
            | Request::Plan { .. }
            | Request::PlanFleet { .. }
            | Request::ConfigDiff { .. }
            | Request::StateImport { .. } => BodyKind::Config,
            _ => BodyKind::Request,
        }
    }

    pub fn limit(self) -> usize {
        match self {
            BodyKind::Config => CONFIG_BODY_LIMIT,
            BodyKind::Request => REQUEST_BODY_LIMIT,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            BodyKind::Config => "config",
            BodyKind::Request => "request",
        }
    }

    /// The refusal of a body over this kind's bound.
    pub fn too_large(self) -> Rejection {
        Rejection::TooLarge {
            kind: self.label(),
            limit: self.limit() as u64,
        }
    }
}

/// What this host accepts from its peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trust {
    pub remote_commands: RemoteCommands,
    /// The control socket's rules, which a remote operator is held to.
    pub policy: Policy,
}

fn level(r: RemoteCommands) -> RemoteLevel {
    match r {
        RemoteCommands::None => RemoteLevel::None,
        RemoteCommands::Operate => RemoteLevel::Operate,
        RemoteCommands::Admin => RemoteLevel::Admin,
    }
}

fn allows(r: RemoteCommands, class: RequestClass) -> bool {
    match class {
        RequestClass::ReadOnly => true,
        RequestClass::Operate => matches!(r, RemoteCommands::Operate | RemoteCommands::Admin),
        RequestClass::Admin => matches!(r, RemoteCommands::Admin),
    }
}

impl Trust {
    /// Whether `env`, sent by the key of peer `from` with `role`, may be
    /// answered by this host (`host`). Reading is open to every key;
    /// anything else needs role `peer`, a class `remote_commands` allows,
    /// and an operator this host's control socket would let in.
    pub fn check(
        &self,
        host: &str,
        from: &str,
        role: Role,
        env: &Envelope,
    ) -> Result<(), Rejection> {
        let class = env.request.class();
        if class == RequestClass::ReadOnly {
            return Ok(());
        }
        let refuse = |why| Rejection::RemoteRefused {
            host: host.to_string(),
            peer: from.to_string(),
            op: env.request.name(),
            why,
        };
        if role == Role::Monitor {
            return Err(refuse(RemoteRefusal::Monitor));
        }
        if !allows(self.remote_commands, class) {
            return Err(refuse(RemoteRefusal::Limited {
                allowed: level(self.remote_commands),
            }));
        }
        let Some(op) = &env.operator else {
            return Err(refuse(RemoteRefusal::NoOperator));
        };
        if !op.within_bounds() {
            return Err(refuse(RemoteRefusal::BadOperator));
        }
        let peer = Peer {
            pid: None,
            uid: op.uid,
            gid: op.gid,
            groups: op.groups.clone(),
        };
        if !self.policy.allows(&peer) {
            return Err(refuse(RemoteRefusal::Stranger {
                operator: op.to_string(),
                group: crate::peer::group_name(self.policy.group),
                gid: self.policy.group,
            }));
        }
        Ok(())
    }
}

/// The operator of a control socket connection, with the names this host
/// has for them (blocking lookups: run off the async threads).
pub fn operator_of(peer: &Peer) -> Operator {
    Operator {
        uid: peer.uid,
        gid: peer.gid,
        groups: peer.groups.clone(),
        user: nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(peer.uid))
            .ok()
            .flatten()
            .map(|u| u.name),
        group: crate::peer::group_name(peer.gid),
    }
}

/// The audit line of a request from a peer that would change something
/// (tracing target `audit`, field `audit=true` for a grep of the text
/// log): who, through which peer, what, and how it ended. Reads are not
/// audited.
#[derive(Debug, Clone)]
pub struct Audit {
    peer: String,
    role: Role,
    operator: String,
    op: &'static str,
    class: RequestClass,
    what: String,
}

impl Audit {
    /// `None` for a read.
    pub fn of(from: &str, role: Role, env: &Envelope) -> Option<Audit> {
        let class = env.request.class();
        if class == RequestClass::ReadOnly {
            return None;
        }
        Some(Audit {
            peer: from.to_string(),
            role,
            operator: env
                .operator
                .as_ref()
                .map_or_else(|| "unknown".to_string(), ToString::to_string),
            op: env.request.name(),
            class,
            what: what(&env.request),
        })
    }

    /// The command was refused by this host's rules for peers; `held`
    /// refusals of the same peer were not written since the last line
    /// ([`RateLimitedLog`]).
    pub fn refused(&self, error: &str, held: u64) {
        self.line("refused", Some(error), held);
    }

    /// The command was carried out, or failed with `error`.
    pub fn answered(&self, error: Option<&str>) {
        match error {
            None => self.line("done", None, 0),
            Some(e) => self.line("failed", Some(e), 0),
        }
    }

    fn line(&self, result: &'static str, error: Option<&str>, held_back: u64) {
        let Audit {
            peer,
            role,
            operator,
            op,
            class,
            what,
        } = self;
        let error = error.unwrap_or("");
        tracing::info!(
            target: "audit",
            audit = true,
            peer = %peer,
            role = role.label(),
            operator = %operator,
            op = *op,
            class = class.label(),
            result,
            error,
            held_back,
            "remote command from peer {peer} by operator {operator}: {what}: {result}"
        );
    }
}

/// A request in a few words, for the audit line (never a config text).
fn what(r: &Request) -> String {
    match r {
        Request::GroupStart { group } => format!("group_start {group}"),
        Request::GroupStop {
            group,
            with_dependents,
        } => format!("group_stop {group} with_dependents={with_dependents}"),
        Request::GroupRestart {
            group,
            with_dependents,
        } => format!("group_restart {group} with_dependents={with_dependents}"),
        Request::AgentRestart { group, agent } => format!("agent_restart {group}/{agent}"),
        Request::Apply {
            file_name,
            config_text,
            force,
        } => format!(
            "apply {file_name} ({} bytes) force={force}",
            config_text.len()
        ),
        Request::MigMode { gpu, enable } => format!("mig_mode gpu {gpu} enable={enable}"),
        Request::StateImport { state } => format!(
            "state_import generation {} ({} started groups)",
            state.generation,
            state.started_groups.len()
        ),
        other => other.name().to_string(),
    }
}

/// Refusals logged at most once per [`RateLimitedLog::EVERY`] per peer
/// and reason, with the number held back since the last line: a flood
/// cannot fill the journal, and a refusal that goes on is never silenced
/// for good.
#[derive(Debug, Default)]
pub struct RateLimitedLog {
    last: BTreeMap<(String, &'static str), (Instant, u64)>,
}

impl RateLimitedLog {
    pub const EVERY: Duration = Duration::from_secs(60);
    /// At most this many peer and reason pairs are tracked (peers are
    /// configured, reasons few; this only bounds a mistake).
    const MAX_KEYS: usize = 4096;

    /// Whether to log a refusal of `peer` for `reason` at `now`; `Some(n)`
    /// says to, with `n` refusals held back since the last line.
    pub fn admit(&mut self, peer: &str, reason: &'static str, now: Instant) -> Option<u64> {
        let key = (peer.to_string(), reason);
        match self.last.get_mut(&key) {
            Some((at, held)) if now.duration_since(*at) < Self::EVERY => {
                *held += 1;
                None
            }
            Some((at, held)) => {
                let n = *held;
                *at = now;
                *held = 0;
                Some(n)
            }
            None => {
                if self.last.len() >= Self::MAX_KEYS {
                    self.last.clear();
                }
                self.last.insert(key, (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const POLICY: Policy = Policy {
        daemon_uid: 998,
        group: 995,
    };

    fn trust(r: RemoteCommands) -> Trust {
        Trust {
            remote_commands: r,
            policy: POLICY,
        }
    }

    fn op(uid: u32, gid: u32) -> Operator {
        Operator {
            uid,
            gid,
            groups: Vec::new(),
            user: None,
            group: None,
        }
    }

    fn env(request: Request, operator: Option<Operator>) -> Envelope {
        let mut e = Envelope::new(None, request);
        e.operator = operator;
        e
    }

    fn start() -> Request {
        Request::GroupStart { group: "g".into() }
    }

    fn apply() -> Request {
        Request::Apply {
            file_name: "c.yaml".into(),
            config_text: String::new(),
            force: false,
        }
    }

    fn why(r: Result<(), Rejection>) -> RemoteRefusal {
        match r.unwrap_err() {
            Rejection::RemoteRefused { why, .. } => why,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reading_is_open_to_every_key_and_level() {
        for r in [
            RemoteCommands::None,
            RemoteCommands::Operate,
            RemoteCommands::Admin,
        ] {
            for role in [Role::Peer, Role::Monitor] {
                let t = trust(r);
                assert!(
                    t.check("pc2", "m", role, &env(Request::Status, None))
                        .is_ok()
                );
                let plan = Request::Plan {
                    file_name: "c.yaml".into(),
                    config_text: String::new(),
                };
                assert!(t.check("pc2", "m", role, &env(plan, None)).is_ok());
                let diff = Request::ConfigDiff { config: None };
                assert!(t.check("pc2", "m", role, &env(diff, None)).is_ok());
            }
        }
    }

    #[test]
    fn a_monitor_changes_nothing_whatever_the_level() {
        let t = trust(RemoteCommands::Admin);
        let e = env(start(), Some(op(0, 0)));
        assert_eq!(
            why(t.check("pc2", "dash", Role::Monitor, &e)),
            RemoteRefusal::Monitor
        );
    }

    #[test]
    fn the_level_decides_which_classes_a_peer_may_send() {
        let root = || Some(op(0, 0));
        let operate = trust(RemoteCommands::Operate);
        assert!(
            operate
                .check("pc2", "main", Role::Peer, &env(start(), root()))
                .is_ok()
        );
        let refused = operate
            .check("pc2", "main", Role::Peer, &env(apply(), root()))
            .unwrap_err();
        assert_eq!(
            orch_api::ApiError::from(refused.clone()).message,
            "host pc2 refuses `apply` from peer main: remote commands limited to operate (`federation.remote_commands: operate` on pc2); run it on pc2 itself"
        );
        assert_eq!(refused.code(), orch_api::ErrorCode::Forbidden);
        let none = trust(RemoteCommands::None);
        assert_eq!(
            why(none.check("pc2", "main", Role::Peer, &env(start(), root()))),
            RemoteRefusal::Limited {
                allowed: RemoteLevel::None
            }
        );
        let admin = trust(RemoteCommands::Admin);
        for r in [apply(), Request::Reload, start()] {
            assert!(
                admin
                    .check("pc2", "main", Role::Peer, &env(r, root()))
                    .is_ok()
            );
        }
    }

    #[test]
    fn the_operator_is_held_to_the_control_socket_rules() {
        let t = trust(RemoteCommands::Operate);
        let check = |o| t.check("pc2", "main", Role::Peer, &env(start(), o));
        assert_eq!(why(check(None)), RemoteRefusal::NoOperator);
        assert!(check(Some(op(0, 0))).is_ok(), "root");
        assert!(check(Some(op(998, 998))).is_ok(), "the daemon's user");
        assert!(check(Some(op(1000, 995))).is_ok(), "the socket's group");
        let mut member = op(1000, 1000);
        member.groups = vec![27, 995];
        assert!(check(Some(member)).is_ok(), "a supplementary group");
        assert!(matches!(
            why(check(Some(op(1000, 1000)))),
            RemoteRefusal::Stranger { gid: 995, .. }
        ));
        let mut flood = op(0, 0);
        flood.groups = vec![995; Operator::MAX_GROUPS + 1];
        assert_eq!(why(check(Some(flood))), RemoteRefusal::BadOperator);
    }

    #[test]
    fn body_kinds_and_their_bounds() {
        assert_eq!(BodyKind::of(&apply()), BodyKind::Config);
        let diff = Request::ConfigDiff { config: None };
        assert_eq!(BodyKind::of(&diff), BodyKind::Config);
        assert_eq!(BodyKind::of(&start()), BodyKind::Request);
        assert_eq!(BodyKind::Config.limit(), 4 * 1024 * 1024);
        assert_eq!(BodyKind::Request.limit(), 64 * 1024);
    }

    #[test]
    fn refusal_logging_is_limited_but_never_silenced() {
        let mut log = RateLimitedLog::default();
        let t0 = Instant::now();
        assert_eq!(log.admit("p", "impostor", t0), Some(0));
        for i in 1..100 {
            assert_eq!(
                log.admit("p", "impostor", t0 + Duration::from_millis(i)),
                None
            );
        }
        // Another peer or reason has its own allowance.
        assert_eq!(log.admit("q", "impostor", t0), Some(0));
        assert_eq!(log.admit("p", "command", t0), Some(0));
        // After the interval, one line says how many were held back.
        assert_eq!(
            log.admit("p", "impostor", t0 + RateLimitedLog::EVERY),
            Some(99)
        );
    }
}
