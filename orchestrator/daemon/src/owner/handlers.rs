//! The answer to each request: a read-only query from `crate::views`
//! (pure), a part's own answer (peers, fleet, SLOs), or a supervisor
//! command whose outcome is carried out. Every refusal is a typed
//! [`Rejection`], made an `ApiError` where the answer is sent.

use std::collections::BTreeSet;

use orch_api::text::{self, GroupVerb};
use orch_api::{Accepted, ApiError, Applied, GpuRefusal, Rejection, Request, Response};
use orch_core::supervise::{CommandError, Commanded, RolloutKind, Supervisor};

use super::{ConfigSource, Owner, history};
use crate::event::{Asked, ContainerOf, Responder};
use crate::views::{self, Facts};

impl ConfigSource {
    /// The config file (`text: None`), or a new text for it.
    pub(super) fn load(
        &self,
        text: Option<(&str, &str)>,
    ) -> Result<orch_config::Loaded, Rejection> {
        match text {
            None => orch_config::load_file(&self.path, &self.options),
            Some((name, text)) => orch_config::load_str(name, text, &self.options),
        }
        .map_err(crate::service::config_rejection)
    }

    /// Makes `text` the config file.
    fn install(&self, text: &str) -> Result<(), Rejection> {
        orch_config::fsutil::write_atomic(&self.path, text.as_bytes()).map_err(|e| {
            Rejection::ConfigNotWritten {
                path: self.path.display().to_string(),
                error: e.to_string(),
            }
        })
    }
}

impl Owner {
    pub(super) fn facts(&self) -> Facts<'_> {
        let engine = self.exec.engine();
        let gpu = self.exec.gpu_worker();
        Facts {
            version: env!("CARGO_PKG_VERSION"),
            pid: std::process::id(),
            uptime_ms: self.clocks.now(),
            config_path: self.source.path.to_str().unwrap_or_default(),
            docker_endpoint: self.exec.docker_endpoint(),
            engine_version: engine.map(|e| e.engine_version.as_str()),
            api_version: engine.map(|e| e.api_version.as_str()),
            gpu_injection: orch_api::convert::injection(self.exec.injection(self.sup.config())),
            now: self.clocks.now(),
            telemetry: Some(self.exec.telemetry()),
            cpu: Some(&self.cpu),
            gpu_library: gpu.and_then(|g| g.library.to_str()),
            driver_version: gpu.and_then(|g| g.driver_version.as_deref()),
            last_event_seq: self.journal.next_seq() - 1,
            state_file: Some(self.persister.status()),
        }
    }

    /// This host as peers see it.
    pub(super) fn snapshot(&self) -> orch_api::HostSnapshot {
        let slo = self
            .observer
            .slo_report(&self.sup, None, self.clocks.unix_ms())
            .ok();
        views::snapshot(&self.sup, &self.facts(), slo)
    }

    pub(super) fn request(&mut self, now: u64, asked: Asked) {
        let Asked {
            request,
            config,
            responder,
            span,
            operator,
        } = asked;
        if let Request::MigMode { gpu, enable } = request {
            // Answered by the GPU worker, later.
            return self.mig_mode(gpu, enable, responder);
        }
        let by = history::applied_by(operator.as_ref(), "local");
        let answer = self
            .answer(now, request, config, &span, &by)
            .map_err(ApiError::from);
        let _ = responder.send(answer);
    }

    fn answer(
        &mut self,
        now: u64,
        request: Request,
        config: Option<Box<orch_config::Loaded>>,
        caller: &tracing::Span,
        by: &str,
    ) -> Result<Response, Rejection> {
        if let Some(answer) = views::query(&self.sup, &self.facts(), &request) {
            return answer;
        }
        match request {
            Request::GroupStart { group } => {
                self.group_command(&group, GroupVerb::Start, caller, |s| {
                    s.start_group(now, &group)
                })
            }
            Request::GroupStop {
                group,
                with_dependents,
            } => self.group_command(&group, GroupVerb::Stop, caller, |s| {
                s.stop_group(now, &group, with_dependents)
            }),
            Request::GroupRestart {
                group,
                with_dependents,
            } => self.group_command(&group, GroupVerb::Restart, caller, |s| {
                s.restart_group(now, &group, with_dependents)
            }),
            Request::AgentRestart { group, agent } => {
                let span = tracing::info_span!(parent: caller, "agent_restart", group = %group, agent = %agent);
                let _in = span.enter();
                let events_from = self.journal.next_seq();
                let out = self
                    .sup
                    .restart_agent(now, &group, &agent)
                    .map_err(|e| views::command_error(&self.sup, &e))?;
                self.observer.commanded(&span, [group.as_str()]);
                self.carry_out(out);
                Ok(Response::Accepted(Accepted {
                    message: text::agent_restart(&group, &agent),
                    groups: vec![group],
                    events_from,
                }))
            }
            Request::Scale {
                group,
                agent,
                replicas,
            } => {
                let span =
                    tracing::info_span!(parent: caller, "scale", group = %group, agent = %agent);
                let _in = span.enter();
                let events_from = self.journal.next_seq();
                self.scale_fits(&group, &agent, replicas)?;
                let done = self
                    .sup
                    .scale_agent(now, &group, &agent, replicas)
                    .map_err(|e| views::command_error(&self.sup, &e))?;
                self.observer.commanded(&span, [group.as_str()]);
                let (from, to) = done.changed;
                self.carry_out(done.outcome);
                Ok(Response::Accepted(Accepted {
                    message: text::scaled(&group, &agent, from, to, replicas.is_none()),
                    groups: vec![group],
                    events_from,
                }))
            }
            Request::Apply {
                file_name,
                config_text,
                force,
            } => {
                // Parsed by the service; loaded here only if a caller
                // bypassed it.
                let loaded = match config {
                    Some(l) => *l,
                    None => self.source.load(Some((&file_name, &config_text)))?,
                };
                // What `plan` would call unplaceable refuses the apply,
                // unless forced. (No inventory: nothing can be told.)
                let unplaceable: Vec<String> = views::plan(&self.sup, &file_name, &loaded.config)
                    .map(|p| p.errors.iter().map(ToString::to_string).collect())
                    .unwrap_or_default();
                if !unplaceable.is_empty() && !force {
                    return Err(Rejection::Unplaceable {
                        file_name,
                        errors: unplaceable,
                    });
                }
                let mut applied = self.take_config(
                    now,
                    loaded,
                    Some(&config_text),
                    caller,
                    by,
                    RolloutKind::Apply,
                )?;
                if !unplaceable.is_empty() {
                    let warning = text::applied_unplaceable(&unplaceable);
                    tracing::warn!("{warning}");
                    applied.warnings.push(warning);
                }
                Ok(Response::Applied(applied))
            }
            Request::Reload => self.reload(now, caller, by).map(Response::Applied),
            Request::Plan {
                file_name,
                config_text,
            } => {
                let loaded = match config {
                    Some(l) => *l,
                    None => self.source.load(Some((&file_name, &config_text)))?,
                };
                views::plan(&self.sup, &file_name, &loaded.config).map(Response::Plan)
            }
            Request::PlanFleet {
                config: file,
                agent,
            } => {
                // A text is parsed by the service; loaded here only if a
                // caller bypassed it. No text: the running config.
                let loaded = match (config, &file) {
                    (Some(l), _) => Some(*l),
                    (None, Some(f)) => {
                        Some(self.source.load(Some((&f.file_name, &f.config_text)))?)
                    }
                    (None, None) => None,
                };
                let named = file
                    .as_ref()
                    .map(|f| f.file_name.as_str())
                    .zip(loaded.as_ref().map(|l| &l.config));
                views::plan_fleet(&self.sup, named, agent.as_deref(), &self.fleet.peer_views())
                    .map(Response::FleetPlan)
            }
            Request::ConfigDiff { config: file } => {
                // A text is parsed by the service; without one, the config
                // file as `reload` would read it.
                let (name, loaded) = match (config, file) {
                    (Some(l), Some(f)) => (f.file_name, *l),
                    (None, Some(f)) => {
                        let l = self.source.load(Some((&f.file_name, &f.config_text)))?;
                        (f.file_name, l)
                    }
                    (_, None) => (
                        self.source.path.display().to_string(),
                        self.source.load(None)?,
                    ),
                };
                views::config_diff(&self.sup, &name, &loaded.config).map(Response::ConfigDiff)
            }
            Request::Peers => Ok(Response::Peers(self.fleet.peers())),
            Request::Fleet => {
                let host = self.sup.config().host.name.clone();
                Ok(Response::Fleet(self.fleet.fleet(&host, self.snapshot())))
            }
            Request::Slo { group } => self
                .observer
                .slo_report(&self.sup, group.as_deref(), self.clocks.unix_ms())
                .map(Response::Slo),
            Request::StateImport { state } => self.state_import(now, state),
            Request::History => self.history.views().map(Response::History),
            Request::Rollout { action } => self.rollout_request(now, action, caller, by),
            Request::Logs { .. } | Request::Events { .. } => Err(Rejection::TransportOnly),
            // Answered above.
            Request::Status
            | Request::Groups
            | Request::Agents { .. }
            | Request::Gpu
            | Request::StateExport
            | Request::MigMode { .. } => Err(Rejection::TransportOnly),
        }
    }

    /// Runs a group command; the answer names every group whose started
    /// state it changed (a start brings the groups it depends on). Its
    /// span, under the caller's (which a peer's command continues), is
    /// the parent of the operations on those groups until they settle
    /// (`crate::trace`).
    fn group_command(
        &mut self,
        name: &str,
        verb: GroupVerb,
        caller: &tracing::Span,
        command: impl FnOnce(&mut Supervisor) -> Result<Commanded<Vec<String>>, CommandError>,
    ) -> Result<Response, Rejection> {
        let span = match verb {
            GroupVerb::Start => tracing::info_span!(parent: caller, "group_start", group = %name),
            GroupVerb::Stop => tracing::info_span!(parent: caller, "group_stop", group = %name),
            GroupVerb::Restart => {
                tracing::info_span!(parent: caller, "group_restart", group = %name)
            }
        };
        let _in = span.enter();
        if self.sup.config().group(name).is_none() {
            return Err(views::unknown_group(&self.sup, name));
        }
        let events_from = self.journal.next_seq();
        let done = command(&mut self.sup).map_err(|e| views::command_error(&self.sup, &e))?;
        self.observer
            .commanded(&span, done.changed.iter().map(String::as_str));
        self.carry_out(done.outcome);
        Ok(Response::Accepted(Accepted {
            message: text::group_command(verb, &done.changed),
            groups: done.changed,
            events_from,
        }))
    }

    /// `state import` on the running daemon: checked whole (what it is,
    /// its format, its host, every group it names), then written and acted
    /// on, as `apply` does for a config.
    fn state_import(
        &mut self,
        now: u64,
        state: orch_api::wire::StateDocument,
    ) -> Result<Response, Rejection> {
        state
            .check(&self.sup.config().host.name)
            .map_err(Rejection::BadState)?;
        let events_from = self.journal.next_seq();
        let done = self
            .sup
            .restore(now, orch_api::convert::persisted_of(&state))
            .map_err(|e| views::command_error(&self.sup, &e))?;
        self.carry_out(done.outcome);
        tracing::info!(generation = state.generation, groups = ?done.changed, "state imported");
        Ok(Response::Accepted(Accepted {
            message: text::state_imported(&done.changed),
            groups: done.changed,
            events_from,
        }))
    }

    pub(super) fn container_of(&self, ask: ContainerOf) {
        let answer = views::container_of(&self.sup, &ask.group, &ask.agent, ask.replica)
            .map_err(ApiError::from);
        let _ = ask.reply.send(answer);
    }

    /// SIGHUP: re-reads the config file.
    pub(super) fn reload_signal(&mut self, now: u64) {
        match self.reload(now, &tracing::Span::none(), "sighup") {
            Ok(a) => {
                tracing::info!(generation = a.generation, changed = ?a.changed, "config reloaded")
            }
            Err(e) => tracing::error!("reload refused, the running config stays: {e}"),
        }
    }

    /// Re-reads the config file.
    fn reload(&mut self, now: u64, caller: &tracing::Span, by: &str) -> Result<Applied, Rejection> {
        let loaded = self.source.load(None)?;
        self.take_config(now, loaded, None, caller, by, RolloutKind::Apply)
    }

    /// Takes a loaded config; with `text` (`apply`), that text becomes the
    /// config file first. Its span (`apply` or `reload`) is the parent of
    /// the replacements it causes, until their groups settle. The config
    /// taken is kept as a generation, applied `by` whom.
    pub(super) fn take_config(
        &mut self,
        now: u64,
        loaded: orch_config::Loaded,
        text: Option<&str>,
        caller: &tracing::Span,
        by: &str,
        kind: RolloutKind,
    ) -> Result<Applied, Rejection> {
        let span = match (text, kind) {
            (_, RolloutKind::Rollback { .. }) => tracing::info_span!(parent: caller, "rollback"),
            (_, RolloutKind::Undo { .. }) => tracing::info_span!(parent: caller, "undo"),
            (Some(_), RolloutKind::Apply) => tracing::info_span!(parent: caller, "apply"),
            (None, RolloutKind::Apply) => tracing::info_span!(parent: caller, "reload"),
        };
        let _in = span.enter();
        if loaded.config.host.name != self.sup.config().host.name {
            return Err(Rejection::WrongHost {
                current: self.sup.config().host.name.clone(),
                new: loaded.config.host.name,
            });
        }
        // The new peer list is checked before anything is changed.
        let peers = self.peers_of(&loaded.config)?;
        // `apply`: the new text becomes the config file, then takes effect.
        if let Some(text) = text {
            self.source.install(text)?;
        }
        let mut warnings: Vec<String> = loaded.warnings.iter().map(|w| w.headline()).collect();
        for section in views::restart_only_changes(self.sup.config(), &loaded.config) {
            warnings.push(text::restart_only_change(section));
        }
        let events_from = self.journal.next_seq();
        let hashes = orch_core::container::config_hashes(&loaded.config);
        let done = self
            .sup
            .reload_as(now, loaded.config, hashes, kind)
            .map_err(|e| views::command_error(&self.sup, &e))?;
        let unix_ms = self.clocks.unix_ms();
        let taken = history::taken(&done.changed, text, &self.source.path, by, unix_ms, kind);
        self.history.took(taken);
        self.observer.configure(self.sup.config());
        let groups: BTreeSet<&str> = self
            .sup
            .replicas()
            .filter(|r| done.changed.recreated.contains(&r.key.agent))
            .map(|r| r.group.as_str())
            .collect();
        let groups: Vec<String> = groups.into_iter().map(str::to_string).collect();
        self.observer
            .commanded(&span, groups.iter().map(String::as_str));
        self.carry_out(done.outcome);
        if let Some(f) = &self.sup.config().federation {
            self.fleet.set_remote_commands(f.remote_commands);
        }
        if let Some(peers) = peers
            && let Err(e) = self.fleet.reconfigure(peers)
        {
            tracing::error!("the federation keeps its old peers: {e}");
            warnings.push(text::peers_not_taken(&e.to_string()));
        }
        Ok(Applied {
            generation: done.changed.generation,
            changed: done.changed.changed,
            recreated: done.changed.recreated,
            rescaled: done
                .changed
                .rescaled
                .into_iter()
                .map(|(agent, from, to)| orch_api::Rescaled { agent, from, to })
                .collect(),
            warnings,
            events_from,
        })
    }

    /// The peer list a new config gives the running bus: `None` when this
    /// host has no bus or the new config no `federation` (that change
    /// takes a restart); refused as an invalid config when the bus could
    /// not take it (a bad key, a key shared by two peers).
    fn peers_of(
        &self,
        config: &orch_core::model::HostConfig,
    ) -> Result<Option<Vec<orch_federation::PeerConfig>>, Rejection> {
        let Some(fed) = config
            .federation
            .as_ref()
            .filter(|_| self.fleet.federates())
        else {
            return Ok(None);
        };
        orch_federation::BusConfig::from_model(&config.host.name, fed, 0)
            .map(|c| Some(c.peers))
            .map_err(|e| Rejection::InvalidConfig {
                message: e.to_string(),
                details: Vec::new(),
                missing: false,
            })
    }

    /// MIG mode changes are never made by the daemon on its own: only on
    /// request, refused on a GPU without MIG or while agents hold slices
    /// of it, and pending until the GPU is reset.
    fn mig_mode(&self, index: u32, enable: bool, responder: Responder) {
        let allowed = match self.exec.gpu_worker() {
            None => Err(Rejection::NoGpus {
                reason: self.sup.gpu_unavailable().map(str::to_string),
            }),
            Some(gpu) => views::mig_target(&self.sup, index).map(|info| (gpu.clone(), info)),
        };
        let (gpu, info) = match allowed {
            Ok(x) => x,
            Err(e) => {
                let _ = responder.send(Err(e.into()));
                return;
            }
        };
        let events_from = self.journal.next_seq();
        tokio::spawn(async move {
            let answer = gpu
                .set_mig_mode(index, enable)
                .await
                .map(|c| {
                    Response::Accepted(Accepted {
                        message: text::mig_change(index, &info.name, enable, c.reset_required),
                        groups: Vec::new(),
                        events_from,
                    })
                })
                .map_err(|e| {
                    let refusal = match e {
                        orch_gpu::GpuError::NotSupported { .. } => GpuRefusal::NotSupported,
                        orch_gpu::GpuError::NoSuchGpu { .. } => GpuRefusal::NoSuchGpu,
                        _ => GpuRefusal::Failed,
                    };
                    ApiError::from(Rejection::Gpu {
                        refusal,
                        detail: e.to_string(),
                    })
                });
            let _ = responder.send(answer);
        });
    }

    /// A scale-up of a GPU agent must place every new replica, or nothing
    /// changes: the planner is asked as `plan` would be, with the agent at
    /// its new count, and any request it could place before and cannot now
    /// refuses the scale. The refusal names the peers where the refused
    /// replicas would fit (`orch_api::fleet_plan::peers_with_room`).
    pub(super) fn scale_fits(
        &self,
        group: &str,
        agent: &str,
        replicas: Option<u32>,
    ) -> Result<(), Rejection> {
        let Some(a) = self.sup.config().agent(agent).filter(|a| a.group == group) else {
            return Ok(());
        };
        let to = replicas.unwrap_or(a.replicas);
        if a.gpu.is_none() || to <= self.sup.replica_count(agent) {
            return Ok(());
        }
        let at = |n: Option<u32>| {
            let mut c = self.sup.config().clone();
            for g in &mut c.groups {
                for x in &mut g.agents {
                    x.replicas = match n {
                        Some(n) if x.name == agent => n,
                        _ => self.sup.replica_count(&x.name),
                    };
                }
            }
            c
        };
        let errors = |c| views::plan(&self.sup, views::RUNNING_CONFIG, &c).map(|p| p.errors);
        let before: Vec<String> = errors(at(None))?.iter().map(ToString::to_string).collect();
        let new: Vec<orch_api::wire::PlanError> = errors(at(Some(to)))?
            .into_iter()
            .filter(|e| !before.contains(&e.to_string()))
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        // Where the agent's replicas refused here would all fit, from the
        // peers' latest snapshots (its new replicas, when the refusal is
        // of others they would displace).
        let refused: Vec<u32> = new
            .iter()
            .filter(|e| e.replica.agent == agent)
            .map(|e| e.replica.replica)
            .collect();
        let replicas = if refused.is_empty() {
            (self.sup.replica_count(agent)..to).collect()
        } else {
            refused
        };
        let asked: Vec<_> = a
            .gpu
            .iter()
            .flat_map(|r| {
                replicas
                    .iter()
                    .map(|i| (orch_core::gpu::ReplicaKey::new(agent, *i), r.clone()))
            })
            .collect();
        let fits_on = orch_api::fleet_plan::peers_with_room(&asked, &self.fleet.peer_views());
        Err(Rejection::Scale {
            group: group.to_string(),
            agent: agent.to_string(),
            asked: to,
            why: orch_api::ScaleRefusal::Unplaceable {
                errors: new.iter().map(ToString::to_string).collect(),
                fits_on,
            },
        })
    }
}
