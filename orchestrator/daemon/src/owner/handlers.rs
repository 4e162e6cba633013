//! The API handlers: one arm per [`Request`], answered from the read
//! models (`crate::views`) or by a supervisor command. Transports never
//! reach past this.

use std::sync::Arc;

use orch_api::{
    Accepted, ApiError, Applied, ConfigChanges, ErrorCode, PlanReport, Request, Response,
};
use orch_config::ConfigError;
use orch_core::gpu::ReplicaKey;
use orch_core::model::HostConfig;
use orch_core::supervise::{CommandError, Commanded};

use super::{Owner, Reply, hashes};
use crate::views::{self, Facts};

pub(super) fn command_error(e: CommandError) -> ApiError {
    let code = match &e {
        CommandError::UnknownGroup(_) | CommandError::UnknownAgent { .. } => ErrorCode::NotFound,
        CommandError::NeededBy { .. } => ErrorCode::Conflict,
        CommandError::WrongHost { .. } => ErrorCode::InvalidConfig,
        CommandError::UnknownGroups(_) => ErrorCode::BadRequest,
    };
    ApiError::new(code, e.to_string())
}

fn config_error(e: ConfigError) -> ApiError {
    let mut details = Vec::new();
    for d in e.diagnostics() {
        details.push(d.headline());
        if let Some(help) = &d.help {
            details.push(format!("  = help: {help}"));
        }
    }
    let code = match e {
        ConfigError::Io { .. } => ErrorCode::NotFound,
        _ => ErrorCode::InvalidConfig,
    };
    ApiError {
        code,
        message: e.to_string(),
        details,
    }
}

impl Owner {
    pub(super) fn facts(&self) -> Facts<'_> {
        Facts {
            version: env!("CARGO_PKG_VERSION"),
            pid: std::process::id(),
            uptime_ms: self.now(),
            config_path: self.settings.config_path.to_str().unwrap_or_default(),
            docker_endpoint: &self.settings.docker_endpoint,
            engine_version: self.engine.as_ref().map(|e| e.engine_version.as_str()),
            api_version: self.engine.as_ref().map(|e| e.api_version.as_str()),
            gpu_injection: match self.injection() {
                orch_core::container::Injection::Nvidia => "nvidia",
                orch_core::container::Injection::Cdi => "cdi",
                orch_core::container::Injection::Env => "env",
            },
            now: self.now(),
            telemetry: Some(&self.telemetry),
            gpu_library: self.deps.gpu.as_ref().and_then(|g| g.library.to_str()),
            driver_version: self
                .deps
                .gpu
                .as_ref()
                .and_then(|g| g.driver_version.as_deref()),
            last_event_seq: self.log.next_seq() - 1,
        }
    }

    pub(super) fn on_request(
        &mut self,
        now: u64,
        request: Request,
        reply: Reply,
        caller: &tracing::Span,
    ) {
        let answer = match request {
            Request::Status => {
                let mut status = views::status(&self.sup, &self.facts());
                status.state = self.state_file.clone();
                Ok(Response::Status(status))
            }
            Request::Groups => Ok(Response::Groups(views::groups(&self.sup))),
            Request::Agents { group } => {
                views::agents(&self.sup, now, group.as_deref()).map(Response::Agents)
            }
            Request::GroupStart { group } => {
                // Open until the groups it starts are ready (`crate::trace`);
                // under the caller's span, which a peer's command continues.
                let span = tracing::info_span!(parent: caller, "group_start", group = %group);
                let _in = span.enter();
                self.group_command(&group, "starting", |s| s.start_group(now, &group))
            }
            Request::GroupStop {
                group,
                with_dependents,
            } => self.group_command(&group, "stopping", |s| {
                s.stop_group(now, &group, with_dependents)
            }),
            Request::GroupRestart {
                group,
                with_dependents,
            } => self.group_command(&group, "restarting", |s| {
                s.restart_group(now, &group, with_dependents)
            }),
            Request::AgentRestart { group, agent } => {
                let events_from = self.log.next_seq();
                self.sup
                    .restart_agent(now, &group, &agent)
                    .map_err(|e| self.agent_error(e))
                    .map(|out| {
                        self.execute(out);
                        Response::Accepted(Accepted {
                            message: format!("restarting {group}/{agent}"),
                            groups: vec![group.clone()],
                            events_from,
                        })
                    })
            }
            Request::Apply {
                file_name,
                config_text,
            } => self
                .reload(now, Some((file_name, config_text)))
                .map(Response::Applied),
            Request::Reload => self.reload(now, None).map(Response::Applied),
            Request::Gpu => Ok(Response::Gpu(views::gpu(&self.sup, &self.facts()))),
            Request::Plan {
                file_name,
                config_text,
            } => self.plan(&file_name, &config_text).map(Response::Plan),
            Request::MigMode { gpu, enable } => {
                // Answered by the GPU worker, later.
                self.mig_mode(gpu, enable, reply);
                return;
            }
            Request::Peers => Ok(Response::Peers(
                self.deps
                    .bus
                    .as_deref()
                    .map(crate::fleet::peer_status)
                    .unwrap_or_default(),
            )),
            Request::Fleet => Ok(Response::Fleet(self.fleet_view())),
            Request::Slo { group } => self.slo_report(group.as_deref()),
            Request::StateExport => Ok(Response::State(orch_api::convert::state_document(
                &self.sup.config().host.name,
                &self.sup.persisted(),
            ))),
            Request::StateImport { state } => self.state_import(now, state),
            Request::Logs { .. } | Request::Events { .. } => Err(ApiError::new(
                ErrorCode::Internal,
                "logs and events are served by the transport, not the owner",
            )),
        };
        let _ = reply.send(answer);
    }

    /// Runs a group command; the answer names every group whose started
    /// state it changed (a start brings the groups it depends on).
    fn group_command(
        &mut self,
        name: &str,
        verb: &str,
        f: impl FnOnce(
            &mut orch_core::supervise::Supervisor,
        ) -> Result<Commanded<Vec<String>>, CommandError>,
    ) -> Result<Response, ApiError> {
        if self.sup.config().group(name).is_none() {
            return Err(views::unknown_group(&self.sup, name));
        }
        let events_from = self.log.next_seq();
        let done = f(&mut self.sup).map_err(command_error)?;
        self.execute(done.outcome);
        let groups = done.changed;
        Ok(Response::Accepted(Accepted {
            message: format!("{verb} {}", groups.join(", ")),
            groups,
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
    ) -> Result<Response, ApiError> {
        state
            .check(&self.sup.config().host.name)
            .map_err(|e| ApiError::new(ErrorCode::BadRequest, e.to_string()))?;
        let events_from = self.log.next_seq();
        let done = self
            .sup
            .restore(now, orch_api::convert::persisted_of(&state))
            .map_err(command_error)?;
        self.execute(done.outcome);
        let groups = done.changed;
        tracing::info!(generation = state.generation, groups = ?groups, "state imported");
        Ok(Response::Accepted(Accepted {
            message: if groups.is_empty() {
                "state imported; no group started".into()
            } else {
                format!("state imported; started {}", groups.join(", "))
            },
            groups,
            events_from,
        }))
    }

    /// An unknown agent, with the group it is really in when the name
    /// exists elsewhere on this host (agent names are unique per host).
    fn agent_error(&self, e: CommandError) -> ApiError {
        if let CommandError::UnknownAgent { group, agent } = &e {
            if self.sup.config().group(group).is_none() {
                return views::unknown_group(&self.sup, group);
            }
            if let Some(a) = self.sup.config().agent(agent) {
                return ApiError::new(
                    ErrorCode::NotFound,
                    format!(
                        "no agent `{agent}` in group `{group}`; did you mean `{}/{agent}`?",
                        a.group
                    ),
                );
            }
        }
        command_error(e)
    }

    pub(super) fn container_of(
        &self,
        group: &str,
        agent: &str,
        replica: u32,
    ) -> Result<String, ApiError> {
        let key = ReplicaKey::new(agent, replica);
        match self.sup.config().agent(agent) {
            Some(a) if a.group == group => {
                let r = self.sup.replica(&key);
                // A container made ahead and never started has no output.
                if let Some(c) = r.and_then(|r| r.container.as_ref())
                    && c.status != orch_core::supervise::ContainerStatus::Created
                {
                    return Ok(c.id.clone());
                }
                // Say why there is none.
                let why = match r.map(|r| &r.phase) {
                    _ if !self.sup.group_wanted(group) => {
                        format!("its group `{group}` is not started")
                    }
                    Some(orch_core::supervise::Phase::Held { waiting_for }) => format!(
                        "it is held, waiting for {}",
                        orch_api::text::waits(
                            &waiting_for
                                .iter()
                                .map(orch_api::convert::wait)
                                .collect::<Vec<_>>()
                        )
                    ),
                    Some(orch_core::supervise::Phase::Failed { reason, .. }) => format!(
                        "its last start failed: {}",
                        orch_api::convert::fail_reason(reason)
                    ),
                    _ => "it is about to start".to_string(),
                };
                Err(ApiError::new(
                    ErrorCode::NotFound,
                    format!("{group}/{key} has no container: {why}"),
                ))
            }
            _ => Err(self.agent_error(CommandError::UnknownAgent {
                group: group.to_string(),
                agent: agent.to_string(),
            })),
        }
    }

    /// Re-reads the config file (`text: None`), or installs a new text
    /// over it and applies that (`apply`).
    pub(super) fn reload(
        &mut self,
        now: u64,
        text: Option<(String, String)>,
    ) -> Result<Applied, ApiError> {
        let loaded = match &text {
            None => orch_config::load_file(&self.settings.config_path, &self.settings.load_options)
                .map_err(config_error)?,
            Some((name, text)) => orch_config::load_str(name, text, &self.settings.load_options)
                .map_err(config_error)?,
        };
        if loaded.config.host.name != self.sup.config().host.name {
            return Err(command_error(CommandError::WrongHost {
                current: self.sup.config().host.name.clone(),
                new: loaded.config.host.name,
            }));
        }
        // `apply`: the new text becomes the config file, then takes effect.
        if let Some((_, text)) = &text {
            orch_config::fsutil::write_atomic(&self.settings.config_path, text.as_bytes())
                .map_err(|e| {
                    ApiError::new(
                        ErrorCode::Internal,
                        format!(
                            "cannot write {}: {e}; nothing was applied",
                            self.settings.config_path.display()
                        ),
                    )
                })?;
        }
        let mut warnings: Vec<String> = loaded.warnings.iter().map(|w| w.headline()).collect();
        for section in restart_only_changes(self.sup.config(), &loaded.config) {
            warnings.push(format!(
                "`{section}` changed: it takes effect when orchestratord restarts (`systemctl restart orchestratord`); the running daemon keeps the old value"
            ));
        }
        let events_from = self.log.next_seq();
        let hashes = hashes(&loaded.config);
        let new_config = Arc::new(loaded.config.clone());
        let done = self
            .sup
            .reload(now, loaded.config, hashes)
            .map_err(command_error)?;
        self.config = new_config;
        self.configure_slos();
        self.execute(done.outcome);
        Ok(Applied {
            generation: done.changed.generation,
            changed: done.changed.changed,
            recreated: done.changed.recreated,
            warnings,
            events_from,
        })
    }

    /// Plans a config on the live inventory, keeping the slices of running
    /// replicas whose request the new config leaves unchanged.
    fn plan(&self, file_name: &str, config_text: &str) -> Result<PlanReport, ApiError> {
        let loaded = orch_config::load_str(file_name, config_text, &self.settings.load_options)
            .map_err(config_error)?;
        let new = &loaded.config;
        if new.host.name != self.sup.config().host.name {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "{file_name} is the config of host `{}`, but this daemon runs host `{}`; plan it on that host, or with --offline",
                    new.host.name,
                    self.sup.config().host.name
                ),
            ));
        }
        let gpus = self.sup.inventory_with_ownership().ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unavailable,
                format!(
                    "no GPU inventory on this host: {}",
                    self.sup.gpu_unavailable().unwrap_or("not taken yet")
                ),
            )
        })?;
        let requests = orch_core::planner::config_requests(new);
        let current: Vec<orch_core::gpu::Assignment> = self
            .sup
            .replicas()
            .filter(|r| {
                r.container.is_some()
                    && new.agent(&r.key.agent).map(|a| &a.gpu)
                        == self.sup.config().agent(&r.key.agent).map(|a| &a.gpu)
            })
            .filter_map(|r| {
                r.slice.clone().map(|slice| orch_core::gpu::Assignment {
                    replica: r.key.clone(),
                    slice,
                    fallback_depth: r.slice_depth,
                })
            })
            .collect();
        let plan = orch_core::planner::plan(&orch_core::planner::PlanInput {
            gpus: &gpus,
            policies: &new.gpus,
            requests: &requests,
            current: &current,
            settings: Default::default(),
        });
        let mut report =
            orch_api::report::plan_report(new, &plan, &requests, &current, &gpus, "daemon");
        let new_hashes = hashes(new);
        let mut changes = ConfigChanges::default();
        for (agent, h) in &new_hashes {
            match self.sup.config_hash(agent) {
                None => changes.added.push(agent.clone()),
                Some(old) if old != h => changes.recreated.push(agent.clone()),
                Some(_) => changes.unchanged += 1,
            }
        }
        for a in self.sup.config().agents() {
            if !new_hashes.contains_key(&a.name) {
                changes.removed.push(a.name.clone());
            }
        }
        report.changes = Some(changes);
        report.remote =
            orch_api::report::remote_dependencies(new, |on| self.remote_dependency_state(on));
        Ok(report)
    }

    /// Whether GPU `index`'s MIG mode may change now: it must exist, have
    /// MIG, and hold no slice.
    fn mig_mode_allowed(
        &self,
        index: u32,
    ) -> Result<(crate::gpu::Gpu, orch_core::gpu::GpuInfo), ApiError> {
        let fail = |code, message: String| Err(ApiError::new(code, message));
        let Some(gpu) = self.deps.gpu.clone() else {
            return fail(
                ErrorCode::Unavailable,
                format!(
                    "no GPUs: {}",
                    self.sup.gpu_unavailable().unwrap_or("NVML is not loaded")
                ),
            );
        };
        let Some(info) = self
            .sup
            .inventory()
            .and_then(|g| g.iter().find(|g| g.index == index))
            .cloned()
        else {
            return fail(ErrorCode::NotFound, format!("no GPU {index} on this host"));
        };
        if info.mig == orch_core::gpu::MigState::Unsupported {
            return fail(
                ErrorCode::Conflict,
                format!(
                    "GPU {index} ({}) does not support MIG; share it with MPS (`sharing: mps`) instead",
                    info.name
                ),
            );
        }
        let holders: Vec<String> = self
            .sup
            .replicas()
            .filter(|r| r.slice.as_ref().is_some_and(|s| s.gpu_uuid() == info.uuid))
            .map(|r| r.key.to_string())
            .collect();
        if !holders.is_empty() {
            return fail(
                ErrorCode::Conflict,
                format!(
                    "GPU {index} has slices held by {}; stop their groups before changing its MIG mode",
                    holders.join(", ")
                ),
            );
        }
        Ok((gpu, info))
    }

    /// MIG mode changes are never made by the daemon on its own: only on
    /// request, refused on a GPU without MIG or while agents hold slices
    /// of it, and pending until the GPU is reset.
    fn mig_mode(&self, index: u32, enable: bool, reply: Reply) {
        let (gpu, info) = match self.mig_mode_allowed(index) {
            Ok(x) => x,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let events_from = self.log.next_seq();
        tokio::spawn(async move {
            let answer = gpu
                .set_mig_mode(index, enable)
                .await
                .map(|c| {
                    Response::Accepted(Accepted {
                        message: orch_api::text::mig_change(
                            index,
                            &info.name,
                            enable,
                            c.reset_required,
                        ),
                        groups: Vec::new(),
                        events_from,
                    })
                })
                .map_err(|e| {
                    let code = match e {
                        orch_gpu::GpuError::NotSupported { .. } => ErrorCode::Conflict,
                        orch_gpu::GpuError::NoSuchGpu { .. } => ErrorCode::NotFound,
                        _ => ErrorCode::Unavailable,
                    };
                    ApiError::new(code, e.to_string())
                });
            let _ = reply.send(answer);
        });
    }
}

/// The settings of `new` that differ from `old` and that the running daemon
/// cannot take over: it opened its sockets, its bus, its Docker connection,
/// its state directory and NVML with the old ones.
fn restart_only_changes(old: &HostConfig, new: &HostConfig) -> Vec<&'static str> {
    let (o, n) = (&old.runtime, &new.runtime);
    [
        ("control", old.control != new.control),
        ("metrics", old.metrics != new.metrics),
        ("federation", old.federation != new.federation),
        ("runtime.state_dir", o.state_dir != n.state_dir),
        ("runtime.docker_host", o.docker_host != n.docker_host),
        ("runtime.nvml_library", o.nvml_library != n.nvml_library),
    ]
    .into_iter()
    .filter_map(|(name, changed)| changed.then_some(name))
    .collect()
}
