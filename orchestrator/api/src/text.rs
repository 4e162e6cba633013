//! The wire types in words: what the CLI prints and the daemon logs and
//! answers. Everything else carries typed data (the planner and the
//! supervisor have no words of their own); this is the only place that
//! turns it into English, so a plan reads the same whether the CLI
//! planned alone or the daemon answered.

use std::fmt;

use orch_core::units::{ByteSize, Percent};

use crate::wire::*;

mod diff;
mod history;
pub use diff::{
    diff_lines, effect as diff_effect, field_change, field_name, no_changes, run_time_count,
};
pub use history::{
    HISTORY_HEADER, HISTORY_UNAVAILABLE, NO_HISTORY, generation_changes, generation_source,
    history_row,
};

impl fmt::Display for ReplicaRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.replica == 0 {
            f.write_str(&self.agent)
        } else {
            write!(f, "{}#{}", self.agent, self.replica)
        }
    }
}

fn size(bytes: u64) -> ByteSize {
    ByteSize(bytes)
}

fn share(bp: u32) -> Percent {
    Percent::from_basis_points(bp)
}

/// Sizes as the planner writes them: whole or decimal GiB, else exact.
fn human(bytes: u64) -> String {
    let b = u128::from(bytes);
    let g = u128::from(ByteSize::GIB);
    if b >= g {
        if b % g == 0 {
            return format!("{}g", b / g);
        }
        if (b * 10) % g == 0 {
            let t = b * 10 / g;
            return format!("{}.{}g", t / 10, t % 10);
        }
        if (b * 100) % g == 0 {
            let h = b * 100 / g;
            return format!("{}.{:02}g", h / 100, h % 100);
        }
    }
    size(bytes).to_string()
}

fn plural(n: u32, one: &str, many: &str) -> String {
    if n == 1 {
        format!("{n} {one}")
    } else {
        format!("{n} {many}")
    }
}

fn article(name: &str) -> &'static str {
    let vowel = name
        .chars()
        .next()
        .is_some_and(|c| "AEIOUaeiou".contains(c));
    // "an NVIDIA ...": the acronym is spoken with a vowel sound.
    if vowel || name.starts_with("NVIDIA") {
        "an"
    } else {
        "a"
    }
}

impl fmt::Display for Slice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Slice::Mig {
                gpu_index,
                profile,
                placement_start,
                ..
            } => write!(f, "GPU {gpu_index} mig {profile} @{placement_start}"),
            Slice::Mps {
                gpu_index,
                memory_bytes,
                compute_basis_points,
                ..
            } => write!(
                f,
                "GPU {gpu_index} mps {} {}",
                size(*memory_bytes),
                share(*compute_basis_points)
            ),
            Slice::Exclusive { gpu_index, .. } => write!(f, "GPU {gpu_index} exclusive"),
            Slice::TimeSlice { gpu_index, .. } => write!(f, "GPU {gpu_index} time-slice"),
        }
    }
}

impl fmt::Display for GpuWant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GpuWant::Mig { profile } => write!(f, "mig {profile}"),
            GpuWant::Mps {
                memory_bytes,
                compute_basis_points,
            } => write!(
                f,
                "mps memory={} compute={}",
                size(*memory_bytes),
                share(*compute_basis_points)
            ),
            GpuWant::Exclusive => f.write_str("exclusive"),
            GpuWant::TimeSlice => f.write_str("time-slice"),
        }
    }
}

impl fmt::Display for Occupant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.profile, self.placement_start)?;
        match (&self.holder, self.gi_id) {
            (Some(r), _) => write!(f, " ({r})"),
            (None, Some(gi)) => write!(f, " (not ours, GI {gi})"),
            (None, None) => f.write_str(" (not ours)"),
        }
    }
}

impl RefusalReason {
    /// True when the GPU could take the kind of request, only not now.
    pub fn is_capacity(&self) -> bool {
        matches!(
            self,
            RefusalReason::MigMaxInstances { .. }
                | RefusalReason::MigComputeFull { .. }
                | RefusalReason::MigNoPlacement { .. }
                | RefusalReason::MpsClients { .. }
                | RefusalReason::MpsMemory { .. }
                | RefusalReason::MpsCompute { .. }
                | RefusalReason::HeldExclusive { .. }
                | RefusalReason::InUse { .. }
        )
    }
}

impl fmt::Display for RefusalReason {
    /// The reason on its own, without the GPU it is about.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefusalReason::Lost => f.write_str("the GPU is lost"),
            RefusalReason::NoMig => f.write_str("the GPU has no MIG"),
            RefusalReason::MigOff {
                pending_enable: false,
            } => f.write_str("MIG is off (turn it on with `nvidia-smi -mig 1` and a GPU reset)"),
            RefusalReason::MigOff {
                pending_enable: true,
            } => f.write_str("MIG is off until a GPU reset applies the pending change"),
            RefusalReason::MigOn => f.write_str("MIG is on, so it takes only mig requests"),
            RefusalReason::NoSuchProfile { profile, offered } => write!(
                f,
                "offers no {profile} profile (only {})",
                offered.join(", ")
            ),
            RefusalReason::UnsupportedGeometry { memory_slices } => write!(
                f,
                "its MIG geometry ({memory_slices} memory slices) is beyond what the planner models"
            ),
            RefusalReason::Policy { sharing } => write!(f, "its policy allows only {sharing}"),
            RefusalReason::TimeSliceNeedsPolicy => f.write_str(
                "time-slice shares a GPU without isolation and needs `sharing: time-slice` in the GPU's policy",
            ),
            RefusalReason::MigMaxInstances { profile, max } => write!(
                f,
                "already holds the most {profile} instances it can ({max})"
            ),
            RefusalReason::MigComputeFull {
                profile,
                used,
                total,
                needed,
            } => write!(
                f,
                "{used} of {total} compute slices are taken, {profile} needs {needed}"
            ),
            RefusalReason::MigNoPlacement { profile, occupants } => {
                write!(f, "no free placement for {profile}")?;
                if !occupants.is_empty() {
                    f.write_str(" beside ")?;
                    for (i, o) in occupants.iter().enumerate() {
                        if i > 0 {
                            f.write_str(", ")?;
                        }
                        write!(f, "{o}")?;
                    }
                }
                Ok(())
            }
            RefusalReason::MpsClients { clients, max } => write!(
                f,
                "already serves {} (at most {max})",
                plural(*clients, "MPS client", "MPS clients")
            ),
            RefusalReason::MpsMemory {
                used_bytes,
                capacity_bytes,
                reserve_bytes,
                clients,
                wanted_bytes,
            } => {
                if *clients == 0 {
                    write!(
                        f,
                        "{} does not fit in the {} MPS clients may use (memory less a {} reserve)",
                        human(*wanted_bytes),
                        human(*capacity_bytes),
                        human(*reserve_bytes)
                    )
                } else {
                    write!(
                        f,
                        "{} of {} already given to {}, {} more does not fit",
                        human(*used_bytes),
                        human(*capacity_bytes),
                        plural(*clients, "client", "clients"),
                        human(*wanted_bytes)
                    )
                }
            }
            RefusalReason::MpsCompute {
                used_basis_points,
                clients,
                wanted_basis_points,
            } => write!(
                f,
                "{} of compute already given to {}, {} more goes past 100%",
                share(*used_basis_points),
                plural(*clients, "client", "clients"),
                share(*wanted_basis_points)
            ),
            RefusalReason::HeldExclusive { holder } => write!(f, "held exclusively by {holder}"),
            RefusalReason::InUse {
                mps_clients,
                time_slice_clients,
            } => {
                let users = if *mps_clients > 0 {
                    plural(*mps_clients, "MPS client", "MPS clients")
                } else {
                    plural(*time_slice_clients, "time-slice client", "time-slice clients")
                };
                write!(f, "already used by {users}; exclusive needs a GPU nobody uses")
            }
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (i, name) = (self.gpu_index, &self.gpu_name);
        match &self.why {
            RefusalReason::NoMig => {
                write!(f, "GPU {i} is {} {name}, which has no MIG", article(name))
            }
            RefusalReason::Lost => write!(f, "GPU {i} ({name}) is lost"),
            reason => write!(f, "GPU {i} ({name}): {reason}"),
        }
    }
}

fn write_refusals(f: &mut fmt::Formatter<'_>, refusals: &[Refusal]) -> fmt::Result {
    if refusals.is_empty() {
        return f.write_str("the host has no GPU");
    }
    for (i, r) in refusals.iter().enumerate() {
        if i > 0 {
            f.write_str("; ")?;
        }
        write!(f, "{r}")?;
    }
    Ok(())
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} wants ", self.replica)?;
        match self.attempts.as_slice() {
            [only] => {
                write!(f, "{}; ", only.wanted)?;
                write_refusals(f, &only.refusals)?;
                // Nothing on this host could ever serve it as configured:
                // a fallback is the only way out, so say there is none.
                if !only.refusals.is_empty() && !only.refusals.iter().any(|r| r.why.is_capacity()) {
                    f.write_str(", and no fallback is given")?;
                }
                Ok(())
            }
            attempts => {
                for (i, a) in attempts.iter().enumerate() {
                    match i {
                        0 => write!(f, "{}", a.wanted)?,
                        1 => write!(f, ", falling back to {}", a.wanted)?,
                        _ => write!(f, ", then {}", a.wanted)?,
                    }
                }
                for a in attempts {
                    write!(f, "; for {}: ", a.wanted)?;
                    write_refusals(f, &a.refusals)?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DropReason::RequestChanged => f.write_str("it no longer matches the request"),
            DropReason::GpuGone => f.write_str("the GPU is gone"),
            DropReason::InstanceGone => {
                f.write_str("its MIG instance is gone and its placement is not free")
            }
            DropReason::Refused { refusal } => write!(f, "{refusal}"),
        }
    }
}

impl fmt::Display for PlanNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanNote::GpuLost {
                gpu_index,
                gpu_uuid,
                name,
            } => write!(
                f,
                "GPU {gpu_index} ({name}, {gpu_uuid}) is lost; nothing is placed on it until it is reset or replaced"
            ),
            PlanNote::MigModePending {
                gpu_index,
                name,
                enable,
            } => {
                let (to, now) = if *enable {
                    ("on", "off")
                } else {
                    ("off", "on")
                };
                write!(
                    f,
                    "GPU {gpu_index} ({name}): MIG is set to turn {to} and needs a GPU reset; until then it is planned with MIG {now}"
                )
            }
            PlanNote::PolicyUnusable {
                gpu_index,
                name,
                sharing,
                mig_on,
                mig_capable,
            } => {
                let why = match (mig_on, mig_capable) {
                    (true, _) => "MIG is on; turn MIG off (GPU reset) or change the policy",
                    (false, true) => "MIG is off; turn it on (GPU reset) or change the policy",
                    (false, false) => "the GPU has no MIG; change the policy",
                };
                write!(
                    f,
                    "GPU {gpu_index} ({name}): its policy says {sharing}, but {why}; it takes nothing meanwhile"
                )
            }
            PlanNote::Dropped {
                replica,
                slice,
                why,
            } => write!(f, "{replica} loses {slice}: {why}; planning it again"),
            PlanNote::Reapplied {
                replica,
                gpu_index,
                profile,
                placement_start,
            } => write!(
                f,
                "GPU {gpu_index}: re-creating {profile} @{placement_start} for {replica} (its instance is gone, e.g. after a reboot)"
            ),
            PlanNote::SearchCutShort { replica } => write!(
                f,
                "the MIG layout search for {replica} hit its limit; it was counted as not fitting"
            ),
        }
    }
}

impl fmt::Display for PendingReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PendingReason::DockerDown => "the Docker Engine is unreachable",
            PendingReason::GroupStopped => "its group is not started",
            PendingReason::GpuSlice => "waiting for a GPU slice",
            PendingReason::Starting => "about to start",
        })
    }
}

impl fmt::Display for Wait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Wait::Agent { agent } => f.write_str(agent),
            Wait::Group { group } => write!(f, "group {group}"),
            Wait::GpuInventory => f.write_str("the GPU inventory"),
            Wait::CrashLooping { agent } => write!(f, "{agent}: crash-looping"),
            Wait::RemoteAgent { host, agent } => write!(f, "{host}/{agent}"),
            Wait::RemoteGroup { host, group } => write!(f, "group {group} on {host}"),
        }
    }
}

/// What keeps a replica running while a host it needs is down:
/// `pc2/Eyes answers its probe; host pc2 is down`, or `pc2/Eyes is
/// held for the grace; host pc2 is down`. `None` when nothing is.
pub fn remote_holds(deps: &[crate::reply::RemoteDependency]) -> Option<String> {
    use crate::reply::RemoteReadiness as R;
    let parts: Vec<String> = deps
        .iter()
        .filter_map(|d| {
            let how = match d.state {
                R::AnswersProbe => "answers its probe",
                R::HeldForGrace => "is held for the grace",
                _ => return None,
            };
            let host = match &d.on {
                Wait::RemoteAgent { host, .. } | Wait::RemoteGroup { host, .. } => host,
                _ => return None,
            };
            Some(format!("{} {how}; host {host} is down", d.on))
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// `a, b, group c`.
pub fn waits(w: &[Wait]) -> String {
    w.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailReason::ImageMissing { image } => write!(
                f,
                "image `{image}` is not on this host and is never pulled; build it here (`docker build -t {image} ...`) or load it (`docker load -i FILE`)"
            ),
            FailReason::DockerUnreachable { detail } => {
                write!(f, "the Docker Engine could not be reached: {detail}")
            }
            FailReason::DockerRefused { detail } => write!(f, "Docker refused: {detail}"),
            FailReason::GpuDriverMissing { driver, detail } => write!(
                f,
                "the Docker Engine cannot provide GPU devices through the `{driver}` driver: {detail}; install nvidia-container-toolkit, enable CDI, or set `runtime.gpu_injection: env`"
            ),
            FailReason::InvalidSpec { detail } => {
                write!(f, "the container cannot be created: {detail}")
            }
            FailReason::GpuPrepare { gpu_index, detail } => {
                write!(f, "preparing its slice of GPU {gpu_index} failed: {detail}")
            }
            FailReason::GpuUnavailable { detail } => {
                write!(f, "GPU agents cannot start on this host: {detail}")
            }
            FailReason::NoGpuCapacity { error } => write!(f, "{error}"),
            FailReason::NotConfigured { agent } => {
                write!(f, "agent {agent} is no longer configured")
            }
            FailReason::ContainerGone { id } => write!(
                f,
                "its container {} is no longer on this host; a new one will be created",
                &id[..id.len().min(12)]
            ),
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use EventKind::*;
        match self {
            GroupStarting { group } => write!(f, "group {group}: starting"),
            GroupReady { group } => write!(f, "group {group}: ready"),
            GroupStopping { group } => write!(f, "group {group}: stopping"),
            GroupStopped { group } => write!(f, "group {group}: stopped"),
            AgentStarting { replica, group } => write!(f, "{group}/{replica}: starting"),
            AgentRunning { replica, group } => write!(f, "{group}/{replica}: running"),
            AgentHealthy { replica, group } => write!(f, "{group}/{replica}: healthy"),
            AgentUnhealthy { replica, group } => write!(f, "{group}/{replica}: unhealthy"),
            AgentExited {
                replica,
                group,
                code,
                oom,
            } => write!(
                f,
                "{group}/{replica}: exited with code {code}{}",
                if *oom { " (out of memory)" } else { "" }
            ),
            AgentRestarting {
                replica,
                group,
                in_ms,
                attempt,
                reason,
            } => {
                write!(f, "{group}/{replica}: restart #{attempt} in {in_ms}ms")?;
                match reason {
                    Some(RestartReason::Unhealthy) => f.write_str(" (unhealthy)"),
                    Some(RestartReason::GpuMemoryExceeded) => {
                        f.write_str(" (GPU memory over its limit)")
                    }
                    Some(RestartReason::Exited) | None => Ok(()),
                }
            }
            AgentGpuOverLimit {
                replica,
                group,
                gpu_index,
                used_bytes,
                limit_bytes,
                action,
                ..
            } => {
                write!(
                    f,
                    "{group}/{replica}: GPU memory over its limit on GPU {gpu_index}: {} used of {}",
                    human(*used_bytes),
                    human(*limit_bytes)
                )?;
                match action {
                    OverLimitAction::Warn => f.write_str("; it runs on (over_limit: warn)"),
                    OverLimitAction::Restart => {
                        f.write_str("; restarting it (over_limit: restart)")
                    }
                }
            }
            AgentRestartRequested { replica, group } => {
                write!(f, "{group}/{replica}: restart requested")
            }
            AgentRestarted {
                replica,
                group,
                reason,
            } => write!(f, "{group}/{replica}: restarting: {reason}"),
            MpsServerFault {
                gpu_index,
                gpu_uuid,
                client,
                clients_listed,
                restarting,
            } => {
                match gpu_index {
                    Some(i) => write!(f, "GPU {i} ({gpu_uuid}): MPS server fault")?,
                    None => write!(f, "GPU {gpu_uuid}: MPS server fault")?,
                }
                match client {
                    Some(MpsFaultClient {
                        pid,
                        replica: Some(r),
                    }) => write!(f, "; faulting client: pid {pid} ({r})")?,
                    Some(MpsFaultClient { pid, replica: None }) => write!(
                        f,
                        "; faulting client: pid {pid} (not an agent of this host)"
                    )?,
                    None if *clients_listed == 0 => {
                        f.write_str("; faulting client unknown (the server listed no client)")?
                    }
                    None => write!(
                        f,
                        "; faulting client unknown (the server listed {clients_listed} clients, all hit)"
                    )?,
                }
                if restarting.is_empty() {
                    f.write_str("; no agent of this host to restart")
                } else {
                    let names: Vec<String> = restarting.iter().map(ToString::to_string).collect();
                    write!(f, "; restarting {}", names.join(", "))
                }
            }
            AgentScaled {
                group,
                agent,
                from,
                to,
                reset,
            } => {
                write!(f, "{group}/{agent}: scaled from {from} to {to} replica(s)")?;
                if *reset {
                    f.write_str(" (the config file's count)")?;
                }
                Ok(())
            }
            AgentAutoscaled {
                group,
                agent,
                from,
                to,
                cause,
            } => write!(
                f,
                "{group}/{agent}: autoscaled from {from} to {to} replica(s): {cause}"
            ),
            AgentAutoscaleRefused {
                group,
                agent,
                from,
                to,
                cause,
                reason,
            } => write!(
                f,
                "{group}/{agent}: autoscale from {from} to {to} replica(s) refused ({cause}): {reason}"
            ),
            AgentCrashLoop {
                replica,
                group,
                restarts,
                window_ms,
            } => write!(
                f,
                "{group}/{replica}: crash-looping ({restarts} restarts within {}s); dependents held",
                window_ms / 1000
            ),
            AgentRecovered { replica, group } => write!(f, "{group}/{replica}: recovered"),
            AgentHeld {
                replica,
                group,
                waiting_for,
            } => write!(
                f,
                "{group}/{replica}: held, waiting for {}",
                waits(waiting_for)
            ),
            AgentFailed {
                replica,
                group,
                reason,
            } => write!(f, "{group}/{replica}: failed: {reason}"),
            AgentStopped { replica, group } => write!(f, "{group}/{replica}: stopped"),
            AgentAdopted {
                replica,
                group,
                container,
            } => write!(
                f,
                "{group}/{replica}: adopted container {}",
                &container[..container.len().min(12)]
            ),
            DuplicateRemoved { replica, container } => write!(
                f,
                "{replica}: removed duplicate container {}",
                &container[..container.len().min(12)]
            ),
            ConfigApplied {
                generation,
                changed,
            } => write!(
                f,
                "config generation {generation} applied; changed: {}",
                if changed.is_empty() {
                    "none".into()
                } else {
                    changed.join(", ")
                }
            ),
            RolloutStarted {
                generation,
                rollout,
                previous,
                agents,
            } => write!(
                f,
                "generation {generation} rolling out ({rollout}) to {}; a failed step goes back to generation {previous}",
                agents.join(", ")
            ),
            RolloutStepDone {
                generation,
                replica,
            } => write!(
                f,
                "generation {generation}: {replica} healthy and watched through"
            ),
            RolloutFailed {
                generation,
                failure,
                rollback_to,
            } => match rollback_to {
                Some(to) => write!(
                    f,
                    "generation {generation}: step failed, {failure}; rolling back to generation {to}"
                ),
                None => write!(
                    f,
                    "generation {generation}: step failed, {failure}; rollout paused (`orchestratorctl rollout resume` or `rollout undo`)"
                ),
            },
            RolloutPaused { generation } => write!(f, "generation {generation}: rollout paused"),
            RolloutResumed { generation } => {
                write!(f, "generation {generation}: rollout resumed")
            }
            RolloutCompleted {
                generation,
                rollout,
            } => write!(f, "generation {generation} rolled out ({rollout})"),
            DockerDown => f.write_str("docker engine unreachable"),
            DockerUp => f.write_str("docker engine connected"),
            SliceAssigned {
                replica,
                group,
                slice,
                fallback_depth,
            } => {
                write!(f, "{group}/{replica}: GPU slice {slice}")?;
                if *fallback_depth > 0 {
                    write!(f, " (fallback #{fallback_depth})")?;
                }
                Ok(())
            }
            MigDestroyed { gpu_index, gi_id } => {
                write!(
                    f,
                    "GPU {gpu_index}: destroyed our unused MIG instance {gi_id}"
                )
            }
            GpuNote { note } => write!(f, "gpu: {note}"),
            GpuUnavailable { reason } => write!(f, "GPUs unavailable: {reason}"),
            StateInferred {
                origin,
                adopted,
                groups,
                unconfigured,
            } => {
                let why = match origin.as_str() {
                    "missing" => "state missing",
                    "damaged" => "state damaged",
                    _ => "state incomplete",
                };
                let plural = if *adopted == 1 { "" } else { "s" };
                write!(f, "{why}: adopted {adopted} running agent{plural}; ")?;
                match groups.as_slice() {
                    [] => f.write_str("no group marked started")?,
                    [one] => write!(f, "group {one} marked started")?,
                    many => write!(f, "groups {} marked started", many.join(", "))?,
                }
                if *unconfigured > 0 {
                    let plural = if *unconfigured == 1 { "" } else { "s" };
                    write!(
                        f,
                        "; stopping {unconfigured} container{plural} of agents not in the config"
                    )?;
                }
                Ok(())
            }
            FreshStart { stopping } => {
                let plural = if *stopping == 1 { "" } else { "s" };
                write!(
                    f,
                    "started fresh: no group is started; stopping {stopping} running agent{plural}"
                )
            }
            StateWriteFailed { detail } => write!(
                f,
                "state not saved ({detail}); agents are still supervised, retrying"
            ),
            StateWritten => f.write_str("state saved again"),
            AgentStaysDown {
                replica,
                group,
                code,
            } => write!(
                f,
                "{group}/{replica}: exited with code {code} and stays down (its restart policy does not restart it; `restart: always` would, `agent restart` starts it now)"
            ),
            PeerChanged {
                peer,
                state,
                incarnation,
            } => write!(
                f,
                "host {peer}: {} (incarnation {incarnation})",
                state.as_str()
            ),
        }
    }
}

/// `; did you mean X?` for a close name, else the list of names.
pub fn suggest(name: &str, names: &[&str]) -> String {
    let items: Vec<(&str, &str)> = names.iter().map(|n| (*n, *n)).collect();
    suggest_by(name, &items)
}

/// [`suggest`] over `(key, shown)` pairs: `name` is compared with each key,
/// and the close ones are shown as their `shown`.
pub fn suggest_by(name: &str, items: &[(&str, &str)]) -> String {
    let lower = name.to_ascii_lowercase();
    let mut close: Vec<&str> = items
        .iter()
        .filter(|(k, _)| {
            let kl = k.to_ascii_lowercase();
            strsim::levenshtein(&lower, &kl) <= 2 || kl.starts_with(&lower) || kl.contains(&lower)
        })
        .map(|(_, shown)| *shown)
        .collect();
    close.sort_unstable();
    close.dedup();
    match close.as_slice() {
        [] if items.is_empty() => String::new(),
        [] => format!(
            "; known: {}",
            items.iter().map(|(_, s)| *s).collect::<Vec<_>>().join(", ")
        ),
        [one] => format!("; did you mean `{one}`?"),
        many => format!(
            "; did you mean one of {}?",
            many.iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Why a target (`GROUP/AGENT` or `AGENT`) names no one agent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentTarget {
    #[error("`{0}` is not GROUP/AGENT or AGENT (e.g. speech_gpu/STTService)")]
    Malformed(String),
    /// The message, with near names.
    #[error("{0}")]
    Unknown(String),
    /// The message, with the candidates.
    #[error("{0}")]
    Ambiguous(String),
}

/// The `(group, agent)` a target names among `all` (every group's agents):
/// `GROUP/AGENT` as written when the group is unknown here (the daemon
/// answers for it), checked when it is known; a bare `AGENT` when exactly
/// one group has it.
pub fn find_agent<'a>(
    target: &'a str,
    all: &[(&'a str, &'a str)],
) -> Result<(&'a str, &'a str), AgentTarget> {
    match target.split_once('/') {
        Some((g, a)) if !g.is_empty() && !a.is_empty() && !a.contains('/') => {
            let in_group: Vec<(&str, &str)> = all
                .iter()
                .filter(|(gg, _)| *gg == g)
                .map(|(_, aa)| (*aa, *aa))
                .collect();
            if in_group.is_empty() || in_group.iter().any(|(aa, _)| *aa == a) {
                return Ok((g, a));
            }
            let elsewhere: Vec<String> = all
                .iter()
                .filter(|(_, aa)| *aa == a)
                .map(|(gg, aa)| format!("`{gg}/{aa}`"))
                .collect();
            Err(AgentTarget::Unknown(if elsewhere.is_empty() {
                format!("no agent `{a}` in group `{g}`{}", suggest_by(a, &in_group))
            } else {
                format!(
                    "no agent `{a}` in group `{g}`; did you mean {}?",
                    elsewhere.join(" or ")
                )
            }))
        }
        Some(_) => Err(AgentTarget::Malformed(target.to_string())),
        None => {
            let found: Vec<&(&str, &str)> = all.iter().filter(|(_, a)| *a == target).collect();
            match found.as_slice() {
                [(g, a)] => Ok((g, a)),
                [] => {
                    let shown: Vec<String> = all.iter().map(|(g, a)| format!("{g}/{a}")).collect();
                    let items: Vec<(&str, &str)> = all
                        .iter()
                        .zip(&shown)
                        .map(|((_, a), s)| (*a, s.as_str()))
                        .collect();
                    Err(AgentTarget::Unknown(format!(
                        "no agent `{target}` on this host{}",
                        suggest_by(target, &items)
                    )))
                }
                many => Err(AgentTarget::Ambiguous(format!(
                    "agent `{target}` is in several groups; name one: {}",
                    many.iter()
                        .map(|(g, a)| format!("{g}/{a}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))),
            }
        }
    }
}

fn ticked(names: &[String]) -> String {
    names
        .iter()
        .map(|g| format!("`{g}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for crate::Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::Rejection::*;
        match self {
            UnknownGroup {
                group, host: None, ..
            } => write!(f, "no group `{group}` on this host"),
            UnknownGroup {
                group,
                host: Some(host),
                known,
            } => {
                let known: Vec<&str> = known.iter().map(String::as_str).collect();
                write!(
                    f,
                    "no group `{group}` on host {host}{}",
                    suggest(group, &known)
                )
            }
            UnknownAgent {
                group,
                agent,
                elsewhere: None,
            } => write!(f, "no agent `{agent}` in group `{group}`"),
            UnknownAgent {
                group,
                agent,
                elsewhere: Some(actual),
            } => write!(
                f,
                "no agent `{agent}` in group `{group}`; did you mean `{actual}/{agent}`?"
            ),
            UnknownGroups { groups } => write!(
                f,
                "no group {} on this host; nothing was changed",
                ticked(groups)
            ),
            NeededBy {
                group,
                needed_by,
                restart,
            } => write!(
                f,
                "group `{group}` is needed by started group(s) {}; {}",
                needed_by.join(", "),
                if *restart {
                    "pass --with-dependents to restart them with it"
                } else {
                    "stop them first or pass --with-dependents"
                }
            ),
            WrongHost { current, new } => write!(
                f,
                "the new config is for host `{new}`, this daemon runs `{current}`"
            ),
            InvalidConfig { message, .. } => f.write_str(message),
            ConfigNotWritten { path, error } => {
                write!(f, "cannot write {path}: {error}; nothing was applied")
            }
            Rollout(r) => {
                use crate::error::RolloutRefusal as R;
                match r {
                    R::NoRollout => f.write_str("no rollout has run since the daemon started"),
                    R::Ended { generation, phase } => write!(
                        f,
                        "the rollout of generation {generation} has ended ({})",
                        phase.replace('_', " ")
                    ),
                    R::AlreadyPaused { generation } => {
                        write!(
                            f,
                            "the rollout of generation {generation} is paused already"
                        )
                    }
                    R::NotPaused { generation } => {
                        write!(f, "the rollout of generation {generation} is not paused")
                    }
                    R::NotKept { generation, kept } => {
                        match generation {
                            Some(g) => write!(f, "generation {g} is not kept")?,
                            None => f.write_str("no earlier generation is kept")?,
                        }
                        if kept.is_empty() {
                            f.write_str("; none is")
                        } else {
                            let kept: Vec<String> = kept.iter().map(u64::to_string).collect();
                            write!(f, "; kept: {} (`orchestratorctl history`)", kept.join(", "))
                        }
                    }
                    R::AlreadyRunning { generation } => write!(
                        f,
                        "generation {generation} is the one running; nothing to undo"
                    ),
                }
            }
            Scale {
                group,
                agent,
                asked,
                why,
            } => {
                write!(f, "{group}/{agent} cannot run {asked} replica(s): ")?;
                match why {
                    crate::error::ScaleRefusal::OutOfBounds { min, max } => write!(
                        f,
                        "its autoscale bounds are {min} to {max}; nothing was changed"
                    ),
                    crate::error::ScaleRefusal::TooMany { max } => {
                        write!(f, "an agent has at most {max}; nothing was changed")
                    }
                    crate::error::ScaleRefusal::FixedHostPort { port } => write!(
                        f,
                        "it publishes host port {port}, which one replica only can hold; give it a host port range (e.g. `{port}-{}:...`) or publish only the container port; nothing was changed",
                        u32::from(*port) + asked.saturating_sub(1)
                    ),
                    crate::error::ScaleRefusal::Unplaceable { errors, fits_on } => {
                        write!(
                            f,
                            "{} new replica(s) cannot be placed on this host's GPUs (see `orchestratorctl plan`); ",
                            errors.len()
                        )?;
                        match fits_on.as_slice() {
                            [] => f.write_str("no other host has the room either; "),
                            hosts => write!(
                                f,
                                "they would fit on {} {} (`orchestratorctl plan --all-hosts --agent {group}/{agent}`); ",
                                if hosts.len() == 1 { "host" } else { "hosts" },
                                hosts.join(", ")
                            ),
                        }?;
                        f.write_str("nothing was changed")
                    }
                    crate::error::ScaleRefusal::PortRangeTooSmall { first, last } => write!(
                        f,
                        "its host port range {first}-{last} has {} port(s), one per replica; widen it in the config; nothing was changed",
                        u32::from(*last - *first) + 1
                    ),
                }
            }
            Unplaceable { file_name, errors } => write!(
                f,
                "{file_name} was not applied: {} GPU request(s) cannot be placed on this host's GPUs (see `orchestratorctl plan {file_name}`); apply it anyway with --force",
                errors.len()
            ),
            ImagesMissing { file_name, images } => write!(
                f,
                "{file_name} was not applied: {} image(s) its agents use are not on this host, so their containers could not be made (the running ones would keep running): {}; build or load them here (`docker build -t IMAGE CONTEXT`, `docker load -i FILE`), or apply it anyway with --force",
                images.len(),
                images.join(", ")
            ),
            NotInConfig {
                target,
                file_name,
                known,
            } => {
                // Close agent names, whatever their group.
                let agent = |t: &'_ str| t.rsplit_once('/').map_or(t, |(_, a)| a).to_string();
                let names: Vec<String> = known.iter().map(|k| agent(k)).collect();
                let items: Vec<(&str, &str)> = names
                    .iter()
                    .zip(known)
                    .map(|(n, k)| (n.as_str(), k.as_str()))
                    .collect();
                write!(
                    f,
                    "no agent `{target}` in {file_name}{}",
                    suggest_by(&agent(target), &items)
                )
            }
            PlanOfOtherHost {
                file_name,
                config_host,
                daemon_host,
            } => write!(
                f,
                "{file_name} is the config of host `{config_host}`, but this daemon runs host `{daemon_host}`; plan it on that host, or with --offline"
            ),
            DiffOfOtherHost {
                file_name,
                config_host,
                daemon_host,
            } => write!(
                f,
                "{file_name} is the config of host `{config_host}`, but this daemon runs host `{daemon_host}`; compare it there (`--host {config_host}`), or with another file without a daemon (`config diff OLD NEW`)"
            ),
            NoContainer {
                group,
                replica,
                why,
            } => {
                write!(f, "{group}/{replica} has no container: ")?;
                match why {
                    crate::NoContainer::GroupNotStarted => {
                        write!(f, "its group `{group}` is not started")
                    }
                    crate::NoContainer::Held { waiting_for } => {
                        write!(f, "it is held, waiting for {}", waits(waiting_for))
                    }
                    crate::NoContainer::Failed { reason } => {
                        write!(f, "its last start failed: {reason}")
                    }
                    crate::NoContainer::AboutToStart => f.write_str("it is about to start"),
                }
            }
            NoInventory { reason } => write!(
                f,
                "no GPU inventory on this host: {}",
                reason.as_deref().unwrap_or("not taken yet")
            ),
            NoGpus { reason } => write!(
                f,
                "no GPUs: {}",
                reason.as_deref().unwrap_or("NVML is not loaded")
            ),
            NoSuchGpu { index } => write!(f, "no GPU {index} on this host"),
            NoMig { index, name } => write!(
                f,
                "GPU {index} ({name}) does not support MIG; share it with MPS (`sharing: mps`) instead"
            ),
            GpuHeld { index, holders } => write!(
                f,
                "GPU {index} has slices held by {}; stop their groups before changing its MIG mode",
                holders
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Gpu { detail, .. } => f.write_str(detail),
            NoSlo { group } => write!(f, "group `{group}` has no `slo:` in its config"),
            BadState(e) => write!(f, "{e}"),
            TransportOnly => {
                f.write_str("logs and events are served by the transport, not the owner")
            }
            ShuttingDown => f.write_str("the daemon is shutting down"),
            NoHistory => f.write_str(HISTORY_UNAVAILABLE),
            NoFederation { host, this_host } => write!(
                f,
                "cannot reach host `{host}`: this daemon ({this_host}) has no federation configured"
            ),
            FollowRemoteLogs { host } => write!(
                f,
                "following the logs of another host is not supported; run `logs` without -f, or on {host}"
            ),
            NotLogs => f.write_str("not a logs request"),
            NotARequest { error } => write!(f, "not a request: {error}"),
            NotPassedOn { this_host, host } => write!(
                f,
                "{this_host} does not pass requests on: ask host `{host}` directly"
            ),
            NotAPeer { host } => write!(
                f,
                "no host `{host}` in this host's federation (`federation.peers`)"
            ),
            Unreachable { host, why } => write!(f, "cannot reach host `{host}`: {why}"),
            NotFollowable { host } => write!(
                f,
                "cannot reach host `{host}`: it is not a peer of this host"
            ),
            UnreadableReply { host, error } => {
                write!(f, "host `{host}` answered something unreadable: {error}")
            }
            WrongReply {
                host,
                asked: crate::Asked::Logs,
                got,
            } => write!(f, "host {host} answered logs with {got}"),
            WrongReply {
                host,
                asked: crate::Asked::Events,
                got,
            } => write!(f, "host `{host}` answered events with {got}"),
            NotEncoded { error } | LogsUnavailable { error } | Unreadable { error } => {
                f.write_str(error)
            }
            Forbidden(crate::Forbidden::NoCredentials) => {
                f.write_str("permission denied: peer credentials unavailable")
            }
            Forbidden(crate::Forbidden::Stranger { uid, group, gid }) => write!(
                f,
                "permission denied: uid {uid} is neither root, the daemon's user, nor in group {} (gid {gid})",
                group.as_deref().unwrap_or("?")
            ),
            RemoteRefused {
                host,
                peer,
                op,
                why,
            } => {
                write!(f, "host {host} refuses `{op}` from peer {peer}: ")?;
                match why {
                    crate::RemoteRefusal::Monitor => write!(
                        f,
                        "{peer}'s key has role monitor on {host}, which may only read"
                    ),
                    crate::RemoteRefusal::Limited { allowed } => match allowed {
                        crate::RemoteLevel::None => write!(
                            f,
                            "remote commands are off (`federation.remote_commands: none` on {host}); run it on {host} itself"
                        ),
                        other => write!(
                            f,
                            "remote commands limited to {} (`federation.remote_commands: {}` on {host}); run it on {host} itself",
                            other.label(),
                            other.label()
                        ),
                    },
                    crate::RemoteRefusal::NoOperator => f.write_str(
                        "the request carries no operator identity (the sending daemon is too old, or it is no daemon)",
                    ),
                    crate::RemoteRefusal::Stranger {
                        operator,
                        group,
                        gid,
                    } => write!(
                        f,
                        "operator {operator} is neither root, the daemon's user, nor in group {} (gid {gid}) on {host}",
                        group.as_deref().unwrap_or("?")
                    ),
                    crate::RemoteRefusal::BadOperator => {
                        f.write_str("the operator identity is over its bounds")
                    }
                }
            }
            TooLarge { kind, limit } => {
                let (n, unit) = if limit % (1024 * 1024) == 0 {
                    (limit / (1024 * 1024), "MiB")
                } else {
                    (limit / 1024, "KiB")
                };
                let what = if *kind == "config" {
                    "apply, plan, config diff and state import"
                } else {
                    "a request"
                };
                write!(
                    f,
                    "the request body is over the limit of {what} ({n} {unit}); nothing past it was read"
                )
            }
        }
    }
}

impl fmt::Display for crate::NotPlanned {
    /// Why a host was left out of a fleet plan, after its name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            crate::NotPlanned::NoSnapshot => f.write_str("nothing heard from it yet"),
            crate::NotPlanned::HostDown => f.write_str("its daemon is down"),
            crate::NotPlanned::NoInventory => f.write_str("its GPU inventory is not taken yet"),
            crate::NotPlanned::GpusUnavailable { reason } => {
                write!(f, "its GPUs cannot be used: {reason}")
            }
        }
    }
}

/// A group command, for the words of its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupVerb {
    Start,
    Stop,
    Restart,
}

/// `starting infra_core, vision_gpu`: what a group command set going.
pub fn group_command(verb: GroupVerb, groups: &[String]) -> String {
    let verb = match verb {
        GroupVerb::Start => "starting",
        GroupVerb::Stop => "stopping",
        GroupVerb::Restart => "restarting",
    };
    format!("{verb} {}", groups.join(", "))
}

/// What an `agent restart` set going.
pub fn agent_restart(group: &str, agent: &str) -> String {
    format!("restarting {group}/{agent}")
}

/// What a `scale` did: `to` replicas from `from`; `reset`: the file's count.
pub fn scaled(group: &str, agent: &str, from: u32, to: u32, reset: bool) -> String {
    let whose = if reset {
        " (the config file's count)"
    } else {
        ""
    };
    if from == to {
        format!("{group}/{agent} runs {to} replica(s){whose}: nothing to change")
    } else {
        format!("scaling {group}/{agent} from {from} to {to} replica(s){whose}")
    }
}

/// What a `state import` did.
pub fn state_imported(started: &[String]) -> String {
    if started.is_empty() {
        "state imported; no group started".into()
    } else {
        format!("state imported; started {}", started.join(", "))
    }
}

/// The warning of a reload that changed a setting the running daemon
/// cannot take over (`section` is its config path).
/// The warning of an `apply --force` whose GPU requests cannot all be placed.
pub fn applied_unplaceable(errors: &[String]) -> String {
    format!(
        "applied with --force although {} GPU request(s) cannot be placed on this host's GPUs; those replicas cannot start until their request fits: {}",
        errors.len(),
        errors.join("; ")
    )
}

/// The warning of an `apply --force` whose agents use images this host
/// does not have.
pub fn applied_images_missing(images: &[String]) -> String {
    format!(
        "applied with --force although {} image(s) are not on this host: {}; a replica using one keeps its old container running (or cannot start) until the image is here",
        images.len(),
        images.join(", ")
    )
}

/// A `plan` line for an image of the config that this host does not have.
pub fn plan_image_missing(image: &str) -> String {
    format!(
        "image `{image}` is not on this host: the containers of the agents using it cannot be made, and `apply` refuses the file without --force"
    )
}

pub fn restart_only_change(section: &str) -> String {
    format!(
        "`{section}` changed: it takes effect when orchestratord restarts (`systemctl restart orchestratord`); the running daemon keeps the old value"
    )
}

/// How the daemon started from its state file (`state.origin`), as
/// `status` says it after the file's path.
pub fn state_origin(origin: &str) -> String {
    match origin {
        "saved" => " (started from it)".into(),
        "missing" => " (started without one; groups inferred from running agents)".into(),
        "damaged" => {
            " (started from a damaged one, kept aside; groups inferred from running agents)".into()
        }
        "fresh" => " (started fresh)".into(),
        "" => String::new(),
        other => format!(" (started: {other})"),
    }
}

/// What an operator is told after a MIG mode change was made.
pub fn mig_change(index: u32, name: &str, enable: bool, reset_required: bool) -> String {
    let what = if enable { "enabled" } else { "disabled" };
    if reset_required {
        format!(
            "MIG mode will be {what} on GPU {index} ({name}) after a GPU reset (`nvidia-smi -r -i {index}`) or a reboot; nothing changes until then"
        )
    } else {
        format!("MIG mode is {what} on GPU {index} ({name})")
    }
}

// ---------------------------------------------------------------------------
// Waits
// ---------------------------------------------------------------------------

impl crate::wait::Goal {
    /// `ready`, `stopped`.
    pub fn word(self) -> &'static str {
        match self {
            crate::wait::Goal::Ready => "ready",
            crate::wait::Goal::Stopped => "stopped",
        }
    }
}

impl crate::GroupState {
    /// As on the wire: `stopped`, `starting`, `ready`, `degraded`, `stopping`.
    pub fn word(self) -> &'static str {
        match self {
            crate::GroupState::Stopped => "stopped",
            crate::GroupState::Starting => "starting",
            crate::GroupState::Ready => "ready",
            crate::GroupState::Degraded => "degraded",
            crate::GroupState::Stopping => "stopping",
        }
    }
}

fn ms_text(ms: u64) -> String {
    if ms < 10_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{}s", ms / 1000)
    }
}

/// A replica's phase in a wait's words: `running (unhealthy)`,
/// `held (waiting for Mid)`, `held (waiting for group g on pc2; host pc2 is down)`.
impl fmt::Display for crate::wait::ReplicaPending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", self.replica)?;
        match &self.phase {
            Phase::Pending => f.write_str("pending")?,
            Phase::Held { waiting_for } => write!(f, "held (waiting for {})", waits(waiting_for))?,
            Phase::Starting => f.write_str("starting")?,
            Phase::Running => match self.health {
                Health::Healthy => f.write_str("running")?,
                Health::Unknown => f.write_str("running (not probed healthy yet)")?,
                Health::Unhealthy => f.write_str("running (unhealthy)")?,
            },
            Phase::BackingOff {
                retry_in_ms,
                exit_code: Some(c),
            } => write!(
                f,
                "backing off (exit {c}, retry in {})",
                ms_text(*retry_in_ms)
            )?,
            Phase::BackingOff { retry_in_ms, .. } => {
                write!(f, "backing off (retry in {})", ms_text(*retry_in_ms))?;
            }
            Phase::Exited { code } => write!(f, "exited ({code})")?,
            Phase::Failed { reason, .. } => write!(f, "failed: {reason}")?,
            Phase::Stopping => f.write_str("stopping")?,
            Phase::Stopped => f.write_str("stopped")?,
        }
        for h in &self.hosts_down {
            write!(f, "; host {h} is down")?;
        }
        Ok(())
    }
}

/// `group base (starting): Mid running (unhealthy); Top held (waiting for Mid)`.
impl fmt::Display for crate::wait::GroupPending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "group {} ({})", self.group, self.state.word())?;
        if self.replicas.is_empty()
            && matches!(
                self.state,
                crate::reply::GroupState::Starting | crate::reply::GroupState::Degraded
            )
        {
            // Every required replica is healthy: the group's `min_healthy` runs.
            return f.write_str(": healthy, staying so for its min_healthy");
        }
        for (i, r) in self.replicas.iter().enumerate() {
            f.write_str(if i == 0 { ": " } else { "; " })?;
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// What a wait still waits for, group by group, or `nothing`.
pub fn still_waiting(pending: &[crate::wait::GroupPending]) -> String {
    if pending.is_empty() {
        return "nothing".into();
    }
    pending
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why a wait ended before its goal, or `None` while it waits or when done.
pub fn wait_failed(v: &crate::wait::Verdict) -> Option<String> {
    use crate::wait::Verdict;
    match v {
        Verdict::Waiting | Verdict::Done { .. } => None,
        Verdict::CrashLoop { group, replica } => Some(format!(
            "{group}/{replica} is crash-looping, so {group} cannot become ready; see `orchestratorctl logs {group}/{}`",
            replica.agent
        )),
        Verdict::Unplaceable {
            group,
            replica,
            error,
        } => Some(format!(
            "{group}/{replica} cannot be placed on a GPU of this host, so {group} cannot become ready: {error}"
        )),
    }
}

/// A wait that ran out of time.
pub fn wait_timed_out(
    groups: &[String],
    goal: crate::wait::Goal,
    secs: f64,
    pending: &[crate::wait::GroupPending],
) -> String {
    format!(
        "{} did not become {} within {secs:.1}s; still waiting for: {}",
        groups.join(", "),
        goal.word(),
        still_waiting(pending)
    )
}

/// The summary of a wait that reached its goal: `base ready: 3/3 agents
/// healthy (1.2s)`, naming optional agents still coming.
pub fn wait_done(
    groups: &[String],
    goal: crate::wait::Goal,
    (healthy, wanted): (usize, usize),
    optional: &[&str],
    secs: f64,
) -> String {
    match goal {
        crate::wait::Goal::Ready if optional.is_empty() => format!(
            "{} ready: {healthy}/{wanted} agents healthy ({secs:.1}s)",
            groups.join(", ")
        ),
        crate::wait::Goal::Ready => format!(
            "{} ready: {healthy}/{wanted} agents healthy; optional agents still starting: {} ({secs:.1}s)",
            groups.join(", "),
            optional.join(", ")
        ),
        crate::wait::Goal::Stopped => format!("{} stopped ({secs:.1}s)", groups.join(", ")),
    }
}

/// The progress line of a wait on a terminal.
pub fn wait_progress(
    goal: crate::wait::Goal,
    p: crate::wait::Progress,
    hosts_down: &[&str],
    secs: f64,
) -> String {
    let mut line = match goal {
        crate::wait::Goal::Ready => format!(
            "waiting: {}/{} agents healthy, {} of {} groups ready",
            p.healthy, p.replicas, p.at_goal, p.groups
        ),
        crate::wait::Goal::Stopped => {
            format!("stopping: {} agents still running", p.running)
        }
    };
    for h in hosts_down {
        line.push_str(&format!("; host {h} is down"));
    }
    line.push_str(&format!(" ({secs:.1}s)"));
    line
}

/// `events --kind` names no event kind.
pub fn unknown_event_kind(kind: &str) -> String {
    format!(
        "no event kind `{kind}`{}",
        suggest(kind.trim_end_matches('*'), EventKind::NAMES)
    )
}

/// `events --all-hosts` goes on without a host whose events cannot be had.
pub fn host_events_unavailable(host: &str, error: &str) -> String {
    format!("host {host}: its events cannot be shown: {error}")
}

/// The first line of a `logs` reply from another host whose output was
/// longer than one reply carries.
pub const LOGS_CUT_FOR_ONE_REPLY: &str = "[earlier output left out: a reply from another host carries the last 1 MiB; run `orchestratorctl logs` on that host for all of it]";

/// A wait's event stream ended before the wait was decided.
pub const WAIT_STREAM_ENDED: &str = "the daemon's event stream ended before the wait was decided (did the daemon stop? see `systemctl status orchestratord`)";

/// `events -f`'s stream ended: the daemon went away.
pub const EVENTS_STREAM_ENDED: &str =
    "the daemon's event stream ended (did the daemon stop? see `systemctl status orchestratord`)";

/// `top -o json|yaml`: it only draws tables.
pub const TOP_TABLES_ONLY: &str =
    "top shows tables only; for JSON or YAML use `agents -o json` and `gpu -o json`";

/// `top` while the daemon does not answer: the figures shown are the last
/// ones it gave. The error comes last: a narrow screen cuts its end.
pub fn top_unreachable(error: &str, as_of: Option<&str>) -> String {
    match as_of {
        Some(t) => format!("trying again, showing the figures of {t}: {error}"),
        None => format!("trying again: {error}"),
    }
}

/// A `reload` whose new peer list the federation bus did not take.
pub fn peers_not_taken(error: &str) -> String {
    format!("the new `federation.peers` were not taken, the old ones stay: {error}")
}

impl fmt::Display for RestartCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestartCause::MpsServerFault { gpu_uuid } => write!(
                f,
                "the MPS server of its GPU ({gpu_uuid}) faulted (not counted as its failure)"
            ),
        }
    }
}

impl fmt::Display for AutoscaleCause {
    /// `cpu at 142.0% against a target of 70.0%`, `below autoscale.min (2)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use AutoscaleCause::*;
        match self {
            Signal {
                signal,
                value,
                target,
                recommended,
                bounded,
            } => {
                match signal.as_str() {
                    "cpu" | "gpu-util" => write!(
                        f,
                        "{signal} at {value:.1}% against a target of {target:.1}%"
                    )?,
                    "latency-slo" => write!(
                        f,
                        "latency SLO burning at {value:.2}x (threshold {target:.2}x)"
                    )?,
                    _ => write!(f, "{signal} at {value:.2} against a target of {target:.2}")?,
                }
                if *bounded {
                    write!(f, "; {recommended} recommended, held within min..max")?;
                }
                Ok(())
            }
            BelowMin { min } => write!(f, "below autoscale.min ({min})"),
            AboveMax { max } => write!(f, "above autoscale.max ({max})"),
        }
    }
}

impl fmt::Display for RolloutKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::rollout::RolloutKind as K;
        match self {
            K::Apply => f.write_str("apply"),
            K::Rollback { from, to } => {
                write!(
                    f,
                    "rollback of generation {from} to generation {to}'s config"
                )
            }
            K::Undo { to } => write!(f, "undo to generation {to}'s config"),
        }
    }
}

impl fmt::Display for StepFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::rollout::RolloutSignal as S;
        let who = format!("{}/{}", self.group, self.replica);
        match &self.signal {
            S::NotLaunched { reason } => write!(f, "{who} could not be created: {reason}"),
            S::NotHealthyInTime { deadline_ms } => write!(
                f,
                "{who} was not healthy within {} (rollout.healthy_deadline)",
                ms_text(*deadline_ms)
            ),
            S::Exited { code } => write!(f, "{who} exited with code {code} while watched"),
            S::Unhealthy => write!(f, "{who} failed its health checks while watched"),
            S::CrashLoop {
                restarts,
                window_ms,
            } => write!(
                f,
                "{who} crash-looped ({restarts} restarts in {})",
                ms_text(*window_ms)
            ),
            S::SloBurn {
                sli,
                burn,
                threshold,
                requests,
                bad,
            } => write!(
                f,
                "{who} burned its {sli} objective at {burn:.1}x (threshold {threshold}x): {bad} bad of {requests} requests while watched"
            ),
        }
    }
}

/// `rollout status`.
pub fn rollout_status(s: &crate::rollout::RolloutStatus) -> String {
    use std::fmt::Write as _;
    let Some(ro) = &s.rollout else {
        return format!(
            "generation {}; no rollout since the daemon started\n",
            s.generation
        );
    };
    let mut out = String::new();
    let phase = match (ro.phase, ro.paused_by_operator) {
        (crate::rollout::RolloutPhase::Paused, true) => "paused by an operator".to_string(),
        (p, _) => p.label().replace('_', " "),
    };
    let _ = writeln!(
        out,
        "generation {} ({}): {phase}, {} ago; a failed step goes back to generation {}",
        ro.generation,
        ro.kind,
        ms_text(ro.age_ms),
        ro.previous
    );
    if let Some(f) = &ro.failure {
        let _ = writeln!(out, "failed step: {f}");
    }
    let _ = writeln!(
        out,
        "{:<28} {:<20} {:>8} {:>8} {:>8}",
        "AGENT", "GROUP", "REPLICAS", "DONE", "IN STEP"
    );
    for a in &ro.agents {
        let _ = writeln!(
            out,
            "{:<28} {:<20} {:>8} {:>8} {:>8}",
            a.agent, a.group, a.replicas, a.done, a.in_step
        );
    }
    out
}

/// How a waited-for rollout ended.
pub fn rollout_end(generation: u64, end: &crate::rollout::RolloutEnd) -> String {
    use crate::rollout::RolloutEnd as E;
    match end {
        E::Completed => format!("generation {generation} rolled out"),
        E::RolledBack { failure, to } => {
            format!("generation {generation} rolled back (now generation {to}): {failure}")
        }
        E::Paused { failure } => format!(
            "generation {generation} paused: {failure}; `orchestratorctl rollout resume` goes on, `rollout undo` goes back"
        ),
        E::Superseded { by } => {
            format!("generation {generation} was superseded by generation {by}")
        }
    }
}

#[cfg(test)]
mod tests {
    use orch_core::gpu::{GpuInfo, ReplicaKey, class_by_name};
    use orch_core::planner::{PlanInput, plan};

    use crate::convert;

    /// Plans that fail and note things in many ways, on real card classes.
    fn plans() -> Vec<orch_core::planner::Plan> {
        use orch_core::gpu::{GpuRequest, MigProfileName, SliceRequest};
        use orch_core::units::{ByteSize, Percent};
        let a100 = class_by_name("NVIDIA A100-SXM4-40GB").unwrap();
        let g4090 = class_by_name("NVIDIA GeForce RTX 4090").unwrap();
        let gpu_sets = [
            vec![GpuInfo::from_class(0, "GPU-a", g4090, false)],
            vec![GpuInfo::from_class(0, "GPU-a", a100, true)],
            vec![GpuInfo::from_class(0, "GPU-a", a100, false)],
            vec![
                GpuInfo::from_class(0, "GPU-a", a100, true),
                GpuInfo::from_class(1, "GPU-b", g4090, false),
            ],
            vec![],
        ];
        let mig = |p: &str| SliceRequest::Mig {
            profile: MigProfileName::parse(p).unwrap(),
        };
        let mps = |g: u64, c: u32| SliceRequest::Mps {
            memory: ByteSize::gib(g),
            compute: Percent::whole(c),
        };
        let requests: Vec<(ReplicaKey, GpuRequest)> = vec![
            (ReplicaKey::new("A", 0), GpuRequest::new(mig("3g.20gb"))),
            (ReplicaKey::new("B", 0), GpuRequest::new(mig("3g.20gb"))),
            (
                ReplicaKey::new("C", 1),
                GpuRequest::new(mig("7g.40gb")).with_fallback(GpuRequest::new(mps(30, 90))),
            ),
            (ReplicaKey::new("D", 0), GpuRequest::new(mps(20, 60))),
            (
                ReplicaKey::new("E", 0),
                GpuRequest::new(SliceRequest::Exclusive),
            ),
            (
                ReplicaKey::new("F", 0),
                GpuRequest::new(SliceRequest::TimeSlice),
            ),
            (ReplicaKey::new("G", 0), GpuRequest::new(mig("2g.20gb"))),
        ];
        gpu_sets
            .iter()
            .map(|gpus| {
                plan(&PlanInput {
                    gpus,
                    policies: &[],
                    requests: &requests,
                    current: &[],
                    settings: Default::default(),
                })
            })
            .collect()
    }

    /// The words of real plans, from the planner through `convert`.
    #[test]
    fn plans_read_in_words() {
        let words: Vec<String> = plans()
            .iter()
            .flat_map(|p| {
                let errors = p.errors.iter().map(|e| convert::plan_error(e).to_string());
                let notes = p.notes.iter().map(|n| convert::plan_note(n).to_string());
                errors.chain(notes).collect::<Vec<_>>()
            })
            .collect();
        let want = [
            "A wants mig 3g.20gb; GPU 0 is an NVIDIA GeForce RTX 4090, which has no MIG, and no fallback is given",
            "B wants mig 3g.20gb; GPU 0 is an NVIDIA GeForce RTX 4090, which has no MIG, and no fallback is given",
            "C#1 wants mig 7g.40gb, falling back to mps memory=30g compute=90%; for mig 7g.40gb: GPU 0 is an NVIDIA GeForce RTX 4090, which has no MIG; for mps memory=30g compute=90%: GPU 0 (NVIDIA GeForce RTX 4090): 30g does not fit in the 23326m MPS clients may use (memory less a 1250m reserve)",
            "E wants exclusive; GPU 0 (NVIDIA GeForce RTX 4090): already used by 1 MPS client; exclusive needs a GPU nobody uses",
            "F wants time-slice; GPU 0 (NVIDIA GeForce RTX 4090): time-slice shares a GPU without isolation and needs `sharing: time-slice` in the GPU's policy, and no fallback is given",
            "G wants mig 2g.20gb; GPU 0 is an NVIDIA GeForce RTX 4090, which has no MIG, and no fallback is given",
            "C#1 wants mig 7g.40gb, falling back to mps memory=30g compute=90%; for mig 7g.40gb: GPU 0 (NVIDIA A100-SXM4-40GB): 6 of 7 compute slices are taken, 7g.40gb needs 7; for mps memory=30g compute=90%: GPU 0 (NVIDIA A100-SXM4-40GB): MIG is on, so it takes only mig requests",
            "D wants mps memory=20g compute=60%; GPU 0 (NVIDIA A100-SXM4-40GB): MIG is on, so it takes only mig requests, and no fallback is given",
            "E wants exclusive; GPU 0 (NVIDIA A100-SXM4-40GB): MIG is on, so it takes only mig requests, and no fallback is given",
            "F wants time-slice; GPU 0 (NVIDIA A100-SXM4-40GB): time-slice shares a GPU without isolation and needs `sharing: time-slice` in the GPU's policy, and no fallback is given",
            "G wants mig 2g.20gb; GPU 0 (NVIDIA A100-SXM4-40GB): offers no 2g.20gb profile (only 1g.5gb, 1g.5gb+me, 1g.10gb, 2g.10gb, 3g.20gb, 4g.20gb, 7g.40gb), and no fallback is given",
            "A wants mig 3g.20gb; GPU 0 (NVIDIA A100-SXM4-40GB): MIG is off (turn it on with `nvidia-smi -mig 1` and a GPU reset), and no fallback is given",
            "B wants mig 3g.20gb; GPU 0 (NVIDIA A100-SXM4-40GB): MIG is off (turn it on with `nvidia-smi -mig 1` and a GPU reset), and no fallback is given",
            "D wants mps memory=20g compute=60%; GPU 0 (NVIDIA A100-SXM4-40GB): 30g of 39219m already given to 1 client, 20g more does not fit",
            "E wants exclusive; GPU 0 (NVIDIA A100-SXM4-40GB): already used by 1 MPS client; exclusive needs a GPU nobody uses",
            "F wants time-slice; GPU 0 (NVIDIA A100-SXM4-40GB): time-slice shares a GPU without isolation and needs `sharing: time-slice` in the GPU's policy, and no fallback is given",
            "G wants mig 2g.20gb; GPU 0 (NVIDIA A100-SXM4-40GB): MIG is off (turn it on with `nvidia-smi -mig 1` and a GPU reset), and no fallback is given",
            "C#1 wants mig 7g.40gb, falling back to mps memory=30g compute=90%; for mig 7g.40gb: GPU 0 (NVIDIA A100-SXM4-40GB): 6 of 7 compute slices are taken, 7g.40gb needs 7; GPU 1 is an NVIDIA GeForce RTX 4090, which has no MIG; for mps memory=30g compute=90%: GPU 0 (NVIDIA A100-SXM4-40GB): MIG is on, so it takes only mig requests; GPU 1 (NVIDIA GeForce RTX 4090): 30g does not fit in the 23326m MPS clients may use (memory less a 1250m reserve)",
            "E wants exclusive; GPU 0 (NVIDIA A100-SXM4-40GB): MIG is on, so it takes only mig requests; GPU 1 (NVIDIA GeForce RTX 4090): already used by 1 MPS client; exclusive needs a GPU nobody uses",
            "F wants time-slice; GPU 0 (NVIDIA A100-SXM4-40GB): time-slice shares a GPU without isolation and needs `sharing: time-slice` in the GPU's policy; GPU 1 (NVIDIA GeForce RTX 4090): time-slice shares a GPU without isolation and needs `sharing: time-slice` in the GPU's policy, and no fallback is given",
            "G wants mig 2g.20gb; GPU 0 (NVIDIA A100-SXM4-40GB): offers no 2g.20gb profile (only 1g.5gb, 1g.5gb+me, 1g.10gb, 2g.10gb, 3g.20gb, 4g.20gb, 7g.40gb); GPU 1 is an NVIDIA GeForce RTX 4090, which has no MIG, and no fallback is given",
            "A wants mig 3g.20gb; the host has no GPU",
            "B wants mig 3g.20gb; the host has no GPU",
            "C#1 wants mig 7g.40gb, falling back to mps memory=30g compute=90%; for mig 7g.40gb: the host has no GPU; for mps memory=30g compute=90%: the host has no GPU",
            "D wants mps memory=20g compute=60%; the host has no GPU",
            "E wants exclusive; the host has no GPU",
            "F wants time-slice; the host has no GPU",
            "G wants mig 2g.20gb; the host has no GPU",
        ];
        assert_eq!(words, want);
    }

    /// Every reason a GPU gives, in words: one refusal, one GPU.
    #[test]
    fn every_refusal_reads_in_words() {
        use crate::wire::{Occupant, RefusalReason as R, ReplicaRef};
        let r = |agent: &str| ReplicaRef {
            agent: agent.into(),
            replica: 0,
        };
        const G: u64 = 1 << 30;
        let cases = [
            (R::Lost, "GPU 0 (NVIDIA A100-SXM4-40GB) is lost"),
            (
                R::MigOff {
                    pending_enable: true,
                },
                "GPU 0 (NVIDIA A100-SXM4-40GB): MIG is off until a GPU reset applies the pending change",
            ),
            (
                R::UnsupportedGeometry { memory_slices: 96 },
                "GPU 0 (NVIDIA A100-SXM4-40GB): its MIG geometry (96 memory slices) is beyond what the planner models",
            ),
            (
                R::Policy {
                    sharing: "mps".into(),
                },
                "GPU 0 (NVIDIA A100-SXM4-40GB): its policy allows only mps",
            ),
            (
                R::MigMaxInstances {
                    profile: "1g.5gb+me".into(),
                    max: 1,
                },
                "GPU 0 (NVIDIA A100-SXM4-40GB): already holds the most 1g.5gb+me instances it can (1)",
            ),
            (
                R::MigNoPlacement {
                    profile: "3g.20gb".into(),
                    occupants: vec![
                        Occupant {
                            profile: "1g.5gb".into(),
                            placement_start: 0,
                            holder: Some(r("B")),
                            gi_id: Some(3),
                        },
                        Occupant {
                            profile: "2g.10gb".into(),
                            placement_start: 4,
                            holder: None,
                            gi_id: Some(7),
                        },
                        Occupant {
                            profile: "1g.10gb".into(),
                            placement_start: 6,
                            holder: None,
                            gi_id: None,
                        },
                    ],
                },
                "GPU 0 (NVIDIA A100-SXM4-40GB): no free placement for 3g.20gb beside 1g.5gb@0 (B), 2g.10gb@4 (not ours, GI 7), 1g.10gb@6 (not ours)",
            ),
            (
                R::MpsClients {
                    clients: 48,
                    max: 48,
                },
                "GPU 0 (NVIDIA A100-SXM4-40GB): already serves 48 MPS clients (at most 48)",
            ),
            (
                R::MpsClients { clients: 1, max: 1 },
                "GPU 0 (NVIDIA A100-SXM4-40GB): already serves 1 MPS client (at most 1)",
            ),
            (
                R::MpsMemory {
                    used_bytes: 10 * G,
                    capacity_bytes: 23 * G / 2,
                    reserve_bytes: G / 2,
                    clients: 3,
                    wanted_bytes: 8 * G,
                },
                "GPU 0 (NVIDIA A100-SXM4-40GB): 10g of 11.5g already given to 3 clients, 8g more does not fit",
            ),
            (
                R::MpsCompute {
                    used_basis_points: 6_000,
                    clients: 1,
                    wanted_basis_points: 5_000,
                },
                "GPU 0 (NVIDIA A100-SXM4-40GB): 60% of compute already given to 1 client, 50% more goes past 100%",
            ),
            (
                R::HeldExclusive { holder: r("A") },
                "GPU 0 (NVIDIA A100-SXM4-40GB): held exclusively by A",
            ),
            (
                R::InUse {
                    mps_clients: 0,
                    time_slice_clients: 2,
                },
                "GPU 0 (NVIDIA A100-SXM4-40GB): already used by 2 time-slice clients; exclusive needs a GPU nobody uses",
            ),
        ];
        for (why, words) in cases {
            let refusal = crate::wire::Refusal {
                gpu_index: 0,
                gpu_name: "NVIDIA A100-SXM4-40GB".into(),
                why,
            };
            assert_eq!(refusal.to_string(), words);
        }
    }

    #[test]
    fn every_plan_note_reads_in_words() {
        use crate::wire::{DropReason, PlanNote as N, RefusalReason, ReplicaRef, Slice};
        let a = ReplicaRef {
            agent: "A".into(),
            replica: 0,
        };
        let slice = Slice::Mig {
            gpu_index: 0,
            gpu_uuid: "GPU-0".into(),
            profile: "3g.20gb".into(),
            placement_start: 4,
            device_uuid: None,
            memory_bytes: None,
        };
        let dropped = |why| N::Dropped {
            replica: a.clone(),
            slice: slice.clone(),
            why,
        };
        let name = || "NVIDIA A100-SXM4-40GB".to_string();
        let cases = [
            (
                N::GpuLost {
                    gpu_index: 0,
                    gpu_uuid: "GPU-0".into(),
                    name: name(),
                },
                "GPU 0 (NVIDIA A100-SXM4-40GB, GPU-0) is lost; nothing is placed on it until it is reset or replaced",
            ),
            (
                N::MigModePending {
                    gpu_index: 0,
                    name: name(),
                    enable: true,
                },
                "GPU 0 (NVIDIA A100-SXM4-40GB): MIG is set to turn on and needs a GPU reset; until then it is planned with MIG off",
            ),
            (
                N::MigModePending {
                    gpu_index: 0,
                    name: name(),
                    enable: false,
                },
                "GPU 0 (NVIDIA A100-SXM4-40GB): MIG is set to turn off and needs a GPU reset; until then it is planned with MIG on",
            ),
            (
                N::PolicyUnusable {
                    gpu_index: 0,
                    name: name(),
                    sharing: "mps".into(),
                    mig_on: true,
                    mig_capable: true,
                },
                "GPU 0 (NVIDIA A100-SXM4-40GB): its policy says mps, but MIG is on; turn MIG off (GPU reset) or change the policy; it takes nothing meanwhile",
            ),
            (
                N::PolicyUnusable {
                    gpu_index: 0,
                    name: name(),
                    sharing: "mig".into(),
                    mig_on: false,
                    mig_capable: true,
                },
                "GPU 0 (NVIDIA A100-SXM4-40GB): its policy says mig, but MIG is off; turn it on (GPU reset) or change the policy; it takes nothing meanwhile",
            ),
            (
                N::PolicyUnusable {
                    gpu_index: 1,
                    name: "NVIDIA GeForce RTX 4090".into(),
                    sharing: "mig".into(),
                    mig_on: false,
                    mig_capable: false,
                },
                "GPU 1 (NVIDIA GeForce RTX 4090): its policy says mig, but the GPU has no MIG; change the policy; it takes nothing meanwhile",
            ),
            (
                dropped(DropReason::InstanceGone),
                "A loses GPU 0 mig 3g.20gb @4: its MIG instance is gone and its placement is not free; planning it again",
            ),
            (
                dropped(DropReason::GpuGone),
                "A loses GPU 0 mig 3g.20gb @4: the GPU is gone; planning it again",
            ),
            (
                dropped(DropReason::RequestChanged),
                "A loses GPU 0 mig 3g.20gb @4: it no longer matches the request; planning it again",
            ),
            (
                dropped(DropReason::Refused {
                    refusal: RefusalReason::Policy {
                        sharing: "exclusive".into(),
                    },
                }),
                "A loses GPU 0 mig 3g.20gb @4: its policy allows only exclusive; planning it again",
            ),
            (
                N::Reapplied {
                    replica: a.clone(),
                    gpu_index: 0,
                    profile: "4g.20gb".into(),
                    placement_start: 0,
                },
                "GPU 0: re-creating 4g.20gb @0 for A (its instance is gone, e.g. after a reboot)",
            ),
            (
                N::SearchCutShort { replica: a.clone() },
                "the MIG layout search for A hit its limit; it was counted as not fitting",
            ),
        ];
        for (note, words) in cases {
            assert_eq!(note.to_string(), words);
        }
    }

    #[test]
    fn suggestions_name_the_close_ones_or_list_all() {
        use super::suggest;
        let names = ["speech_gpu", "vision_gpu", "infra_core"];
        assert_eq!(suggest("speech", &names), "; did you mean `speech_gpu`?");
        assert_eq!(
            suggest("vision_gpuu", &names),
            "; did you mean `vision_gpu`?"
        );
        assert_eq!(
            suggest("nosuch", &names),
            "; known: speech_gpu, vision_gpu, infra_core"
        );
        assert_eq!(
            suggest("gpu", &names),
            "; did you mean one of `speech_gpu`, `vision_gpu`?"
        );
    }

    #[test]
    fn a_refusal_has_one_code_and_its_words() {
        use crate::{ApiError, ErrorCode, Rejection};
        let cases = [
            (
                Rejection::Unplaceable {
                    file_name: "c.yaml".into(),
                    errors: vec!["Eyes#0: ...".into()],
                },
                ErrorCode::Conflict,
                "c.yaml was not applied: 1 GPU request(s) cannot be placed on this host's GPUs (see `orchestratorctl plan c.yaml`); apply it anyway with --force",
            ),
            (
                Rejection::ImagesMissing {
                    file_name: "c.yaml".into(),
                    images: vec!["agent:v2".into()],
                },
                ErrorCode::Conflict,
                "c.yaml was not applied: 1 image(s) its agents use are not on this host, so their containers could not be made (the running ones would keep running): agent:v2; build or load them here (`docker build -t IMAGE CONTEXT`, `docker load -i FILE`), or apply it anyway with --force",
            ),
            (
                Rejection::UnknownGroup {
                    group: "vison".into(),
                    host: Some("h".into()),
                    known: vec!["vision".into(), "infra".into()],
                },
                ErrorCode::NotFound,
                "no group `vison` on host h; did you mean `vision`?",
            ),
            (
                Rejection::NeededBy {
                    group: "infra".into(),
                    needed_by: vec!["apps".into()],
                    restart: false,
                },
                ErrorCode::Conflict,
                "group `infra` is needed by started group(s) apps; stop them first or pass --with-dependents",
            ),
            (
                Rejection::UnknownGroups {
                    groups: vec!["a".into(), "b".into()],
                },
                ErrorCode::BadRequest,
                "no group `a`, `b` on this host; nothing was changed",
            ),
            (
                Rejection::NoContainer {
                    group: "g".into(),
                    replica: crate::wire::ReplicaRef {
                        agent: "A".into(),
                        replica: 1,
                    },
                    why: crate::NoContainer::Held {
                        waiting_for: vec![crate::wire::Wait::Group {
                            group: "infra".into(),
                        }],
                    },
                },
                ErrorCode::NotFound,
                "g/A#1 has no container: it is held, waiting for group infra",
            ),
            (
                Rejection::NoGpus { reason: None },
                ErrorCode::Unavailable,
                "no GPUs: NVML is not loaded",
            ),
            (
                Rejection::Scale {
                    group: "g".into(),
                    agent: "Worker".into(),
                    asked: 3,
                    why: crate::ScaleRefusal::Unplaceable {
                        errors: vec!["Worker#2 wants ...".into()],
                        fits_on: vec!["pc2".into()],
                    },
                },
                ErrorCode::Conflict,
                "g/Worker cannot run 3 replica(s): 1 new replica(s) cannot be placed on this host's GPUs (see `orchestratorctl plan`); they would fit on host pc2 (`orchestratorctl plan --all-hosts --agent g/Worker`); nothing was changed",
            ),
            (
                Rejection::Scale {
                    group: "g".into(),
                    agent: "Worker".into(),
                    asked: 4,
                    why: crate::ScaleRefusal::Unplaceable {
                        errors: vec!["Worker#2 wants ...".into(), "Worker#3 wants ...".into()],
                        fits_on: vec![],
                    },
                },
                ErrorCode::Conflict,
                "g/Worker cannot run 4 replica(s): 2 new replica(s) cannot be placed on this host's GPUs (see `orchestratorctl plan`); no other host has the room either; nothing was changed",
            ),
            (
                Rejection::NotInConfig {
                    target: "gpu/Vison".into(),
                    file_name: "pc2.yaml".into(),
                    known: vec!["gpu/Vision".into(), "llm/Llm".into()],
                },
                ErrorCode::NotFound,
                "no agent `gpu/Vison` in pc2.yaml; did you mean `gpu/Vision`?",
            ),
            (
                Rejection::NotPassedOn {
                    this_host: "a".into(),
                    host: "c".into(),
                },
                ErrorCode::HostUnreachable,
                "a does not pass requests on: ask host `c` directly",
            ),
        ];
        for (rejection, code, words) in cases {
            let e = ApiError::from(rejection);
            assert_eq!((e.code, e.message.as_str()), (code, words));
        }
    }

    #[test]
    fn a_target_names_one_agent_or_says_why_not() {
        use super::{AgentTarget, find_agent};
        let all = [
            ("base", "Flaky"),
            ("base", "Top"),
            ("extra", "Side"),
            ("vision", "Eyes"),
            ("speech", "Eyes"),
        ];
        type Found<'a> = Result<(&'a str, &'a str), AgentTarget>;
        let cases: [(&str, Found); 8] = [
            ("base/Top", Ok(("base", "Top"))),
            ("Top", Ok(("base", "Top"))),
            // An unknown group is the daemon's to answer.
            ("nosuch/Top", Ok(("nosuch", "Top"))),
            (
                "Tpo",
                Err(AgentTarget::Unknown(
                    "no agent `Tpo` on this host; did you mean `base/Top`?".into(),
                )),
            ),
            (
                "base/Side",
                Err(AgentTarget::Unknown(
                    "no agent `Side` in group `base`; did you mean `extra/Side`?".into(),
                )),
            ),
            (
                "base/Flakey",
                Err(AgentTarget::Unknown(
                    "no agent `Flakey` in group `base`; did you mean `Flaky`?".into(),
                )),
            ),
            (
                "Eyes",
                Err(AgentTarget::Ambiguous(
                    "agent `Eyes` is in several groups; name one: vision/Eyes, speech/Eyes".into(),
                )),
            ),
            ("base/", Err(AgentTarget::Malformed("base/".into()))),
        ];
        for (target, want) in cases {
            assert_eq!(find_agent(target, &all), want, "{target}");
        }
    }

    #[test]
    fn log_chunks_become_one_json_object_per_line() {
        let out = crate::LogLine::ndjson(1, "stderr", b"one\r\ntwo\npartial");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"replica\":1,\"stream\":\"stderr\",\"line\":\"one\"}\n{\"replica\":1,\"stream\":\"stderr\",\"line\":\"two\"}\n{\"replica\":1,\"stream\":\"stderr\",\"line\":\"partial\"}\n"
        );
    }

    #[test]
    fn what_a_lost_state_inferred_reads_plainly() {
        use crate::wire::EventKind;
        let groups = |g: &[&str]| g.iter().map(|s| s.to_string()).collect();
        let cases = [
            (
                EventKind::StateInferred {
                    origin: "missing".into(),
                    adopted: 7,
                    groups: groups(&["infra_core", "coordination", "vision_gpu"]),
                    unconfigured: 0,
                },
                "state missing: adopted 7 running agents; groups infra_core, coordination, vision_gpu marked started",
            ),
            (
                EventKind::StateInferred {
                    origin: "damaged".into(),
                    adopted: 1,
                    groups: groups(&["util"]),
                    unconfigured: 2,
                },
                "state damaged: adopted 1 running agent; group util marked started; stopping 2 containers of agents not in the config",
            ),
            (
                EventKind::FreshStart { stopping: 3 },
                "started fresh: no group is started; stopping 3 running agents",
            ),
        ];
        for (kind, text) in cases {
            assert_eq!(kind.to_string(), text);
        }
    }

    #[test]
    fn what_keeps_a_replica_running_while_its_host_is_down_reads_in_words() {
        use crate::reply::{RemoteDependency, RemoteReadiness as R};
        use crate::wire::Wait;
        let dep = |state| RemoteDependency {
            agent: "Needy".into(),
            on: Wait::RemoteAgent {
                host: "pc2".into(),
                agent: "Eyes".into(),
            },
            state,
        };
        assert_eq!(
            super::remote_holds(&[dep(R::AnswersProbe)]).as_deref(),
            Some("pc2/Eyes answers its probe; host pc2 is down")
        );
        assert_eq!(
            super::remote_holds(&[dep(R::HeldForGrace)]).as_deref(),
            Some("pc2/Eyes is held for the grace; host pc2 is down")
        );
        assert_eq!(super::remote_holds(&[dep(R::Ready)]), None);
        assert_eq!(super::remote_holds(&[]), None);
    }

    #[test]
    fn an_mps_fault_names_its_gpu_the_faulting_client_as_far_as_known_and_the_restarts() {
        use crate::wire::{EventKind, MpsFaultClient, ReplicaRef, RestartCause};
        let eyes = ReplicaRef {
            agent: "Eyes".into(),
            replica: 0,
        };
        let ears = ReplicaRef {
            agent: "Ears".into(),
            replica: 1,
        };
        let fault = |client, clients_listed, restarting: Vec<ReplicaRef>| {
            EventKind::MpsServerFault {
                gpu_index: Some(0),
                gpu_uuid: "GPU-a".into(),
                client,
                clients_listed,
                restarting,
            }
            .to_string()
        };
        assert_eq!(
            fault(
                Some(MpsFaultClient {
                    pid: 42,
                    replica: Some(eyes.clone())
                }),
                1,
                vec![eyes.clone(), ears.clone()]
            ),
            "GPU 0 (GPU-a): MPS server fault; faulting client: pid 42 (Eyes); restarting Eyes, Ears#1"
        );
        assert_eq!(
            fault(
                Some(MpsFaultClient {
                    pid: 42,
                    replica: None
                }),
                1,
                vec![]
            ),
            "GPU 0 (GPU-a): MPS server fault; faulting client: pid 42 (not an agent of this host); no agent of this host to restart"
        );
        assert_eq!(
            fault(None, 3, vec![eyes.clone()]),
            "GPU 0 (GPU-a): MPS server fault; faulting client unknown (the server listed 3 clients, all hit); restarting Eyes"
        );
        assert_eq!(
            fault(None, 0, vec![eyes.clone()]),
            "GPU 0 (GPU-a): MPS server fault; faulting client unknown (the server listed no client); restarting Eyes"
        );
        let restarted = EventKind::AgentRestarted {
            replica: ears,
            group: "vision".into(),
            reason: RestartCause::MpsServerFault {
                gpu_uuid: "GPU-a".into(),
            },
        };
        assert_eq!(
            restarted.to_string(),
            "vision/Ears#1: restarting: the MPS server of its GPU (GPU-a) faulted (not counted as its failure)"
        );
        let json = serde_json::to_value(&restarted).unwrap();
        assert_eq!(json["kind"], "agent-restarted");
        assert_eq!(json["reason"], "mps_server_fault");
        assert_eq!(
            serde_json::from_value::<EventKind>(json).unwrap(),
            restarted
        );
    }

    #[test]
    fn gpu_memory_over_a_limit_and_the_restart_it_causes_in_words() {
        use orch_core::model::OverLimit;
        use orch_core::supervise::{RestartReason, SupervisorEvent as C};
        const G: u64 = 1 << 30;
        let words = |e: C| convert::event_kind(&e, None).to_string();
        let over = |action| C::AgentGpuOverLimit {
            replica: ReplicaKey::new("Eyes", 1),
            group: "vision".into(),
            gpu_index: 0,
            gpu_uuid: "GPU-a".into(),
            used_bytes: 5 * G + G / 2,
            limit_bytes: 4 * G,
            action,
        };
        assert_eq!(
            words(over(OverLimit::Warn)),
            "vision/Eyes#1: GPU memory over its limit on GPU 0: 5.5g used of 4g; it runs on (over_limit: warn)"
        );
        assert_eq!(
            words(over(OverLimit::Restart)),
            "vision/Eyes#1: GPU memory over its limit on GPU 0: 5.5g used of 4g; restarting it (over_limit: restart)"
        );
        let restarting = |reason| C::AgentRestarting {
            replica: ReplicaKey::new("Eyes", 0),
            group: "vision".into(),
            in_ms: 200,
            attempt: 2,
            reason,
        };
        assert_eq!(
            words(restarting(RestartReason::GpuMemoryExceeded)),
            "vision/Eyes: restart #2 in 200ms (GPU memory over its limit)"
        );
        assert_eq!(
            words(restarting(RestartReason::Unhealthy)),
            "vision/Eyes: restart #2 in 200ms (unhealthy)"
        );
        assert_eq!(
            words(restarting(RestartReason::Exited)),
            "vision/Eyes: restart #2 in 200ms"
        );
        // On the wire, the reason is the metric label's spelling.
        let json = serde_json::to_value(convert::event_kind(
            &restarting(RestartReason::GpuMemoryExceeded),
            None,
        ))
        .unwrap();
        assert_eq!(json["reason"], "gpu_memory_exceeded");
        assert_eq!(json["kind"], "agent-restarting");
        let json =
            serde_json::to_value(convert::event_kind(&over(OverLimit::Restart), None)).unwrap();
        assert_eq!(json["kind"], "agent-gpu-over-limit");
        assert_eq!(json["action"], "restart");
        assert_eq!(json["limit_bytes"], 4 * G);
        // A daemon that did not say why is read as saying nothing.
        let old: crate::EventKind = serde_json::from_value(serde_json::json!({
            "kind": "agent-restarting",
            "replica": {"agent": "Eyes", "replica": 0},
            "group": "vision",
            "in_ms": 200,
            "attempt": 2
        }))
        .unwrap();
        assert!(matches!(
            old,
            crate::EventKind::AgentRestarting { reason: None, .. }
        ));
    }
}
