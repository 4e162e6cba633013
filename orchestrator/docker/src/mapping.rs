//! Pure translation between the product's types and bollard's: a
//! `ContainerSpec` into a create body, and the engine's answers (inspect,
//! list, events, info) into this crate's types. No I/O, so every rule is
//! unit-tested against exact bollard values.
//!
//! The engine's answers are full of optional fields; a missing one becomes
//! a default or a `Protocol` error, never a panic.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum,
    ContainerSummaryStateEnum, DeviceRequest, EndpointSettings, EventMessage, HostConfig, Mount,
    MountType, NetworkingConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum, SystemInfo,
    SystemVersion,
};
use orch_core::container::{ContainerSpec, GpuDevices};
use orch_core::model::Protocol;

use crate::error::DockerError;
use crate::runtime::{
    ContainerEvent, ContainerInfo, ContainerState, ContainerSummary, DockerEventKind, EngineInfo,
};

/// Hardening applied to every agent container (the agent contract).
pub(crate) const CAP_DROP_ALL: &str = "ALL";
pub(crate) const NO_NEW_PRIVILEGES: &str = "no-new-privileges:true";
/// The DeviceRequest driver for NVIDIA GPUs, and its capability set.
pub(crate) const NVIDIA_DRIVER: &str = "nvidia";
pub(crate) const CDI_DRIVER: &str = "cdi";

/// Event attributes Docker mixes into the label map.
const NON_LABEL_ATTRIBUTES: [&str; 5] = ["name", "image", "exitCode", "signal", "execID"];

/// The `/containers/create` body for a spec.
pub(crate) fn create_body(spec: &ContainerSpec) -> Result<ContainerCreateBody, DockerError> {
    let exposed: Vec<String> = spec.ports.iter().map(port_key).collect();
    let mut endpoint = EndpointSettings::default();
    if !spec.aliases.is_empty() {
        endpoint.aliases = Some(spec.aliases.clone());
    }
    Ok(ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: spec.command.clone(),
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        labels: Some(to_hash_map(&spec.labels)),
        hostname: spec.hostname.clone(),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        stop_timeout: Some(ceil_secs(spec.stop_timeout.std())),
        host_config: Some(host_config(spec)?),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(spec.network.clone(), endpoint)])),
        }),
        ..Default::default()
    })
}

/// The `HostConfig` part: limits, hardening, ports, mounts and GPUs.
pub(crate) fn host_config(spec: &ContainerSpec) -> Result<HostConfig, DockerError> {
    let invalid = |reason: String| DockerError::InvalidSpec {
        container: spec.name.clone(),
        reason,
    };

    let nano_cpus = match spec.cpus {
        None => None,
        Some(c) if c.is_finite() && c > 0.0 && c * 1e9 < i64::MAX as f64 => {
            Some((c * 1e9).round() as i64)
        }
        Some(c) => {
            return Err(invalid(format!(
                "{c} is not a CPU count; use e.g. 0.5 or 2"
            )));
        }
    };
    let memory = match spec.memory {
        None => None,
        Some(m) => Some(
            i64::try_from(m.bytes())
                .map_err(|_| invalid(format!("memory limit {m} is too large")))?,
        ),
    };

    let mut port_bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for p in &spec.ports {
        port_bindings
            .entry(port_key(p))
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: p.host_ip.clone(),
                // No host port: Docker picks a free one.
                host_port: p.host_port.map(|h| h.to_string()),
            });
    }

    let mut mounts = Vec::with_capacity(spec.mounts.len());
    for m in &spec.mounts {
        let typ = if m.is_bind() {
            // The Mounts API wants absolute host paths; a relative one must
            // have been resolved against the config directory already.
            if !m.source.starts_with('/') {
                return Err(invalid(format!(
                    "bind mount source `{}` is relative; it must be resolved to an absolute path first",
                    m.source
                )));
            }
            MountType::BIND
        } else {
            MountType::VOLUME
        };
        mounts.push(Mount {
            target: Some(m.target.clone()),
            source: Some(m.source.clone()),
            typ: Some(typ),
            read_only: Some(m.read_only),
            ..Default::default()
        });
    }

    let device_requests = match &spec.gpu {
        GpuDevices::None => None,
        GpuDevices::Nvidia { device_ids } => {
            if device_ids.is_empty() {
                return Err(invalid(
                    "the nvidia GPU device list is empty; use no GPU devices instead".into(),
                ));
            }
            Some(vec![DeviceRequest {
                driver: Some(NVIDIA_DRIVER.into()),
                device_ids: Some(device_ids.clone()),
                capabilities: Some(vec![vec!["gpu".into()]]),
                ..Default::default()
            }])
        }
        GpuDevices::Cdi { devices } => {
            if devices.is_empty() {
                return Err(invalid(
                    "the CDI device list is empty; use no GPU devices instead".into(),
                ));
            }
            Some(vec![DeviceRequest {
                driver: Some(CDI_DRIVER.into()),
                device_ids: Some(devices.clone()),
                ..Default::default()
            }])
        }
    };

    Ok(HostConfig {
        network_mode: Some(spec.network.clone()),
        nano_cpus,
        memory,
        pids_limit: spec.pids.map(i64::from),
        cap_drop: Some(vec![CAP_DROP_ALL.into()]),
        cap_add: (!spec.cap_add.is_empty()).then(|| spec.cap_add.clone()),
        security_opt: Some(vec![NO_NEW_PRIVILEGES.into()]),
        readonly_rootfs: Some(spec.read_only_rootfs),
        port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
        mounts: (!mounts.is_empty()).then_some(mounts),
        device_requests,
        ipc_mode: spec.ipc_host.then(|| "host".to_string()),
        // The daemon restarts agents itself, with backoff and crash-loop
        // detection; Docker restarting them behind its back would race it.
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::NO),
            maximum_retry_count: None,
        }),
        // Agents run as PID 1 and handle SIGTERM themselves.
        init: Some(false),
        ..Default::default()
    })
}

/// `8080/tcp`: Docker's key for a container port.
fn port_key(p: &orch_core::model::PortMapping) -> String {
    let proto = match p.protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    };
    format!("{}/{proto}", p.container_port)
}

/// Docker takes stop timeouts in whole seconds; round up so an agent gets
/// at least the grace period it asked for.
pub(crate) fn ceil_secs(d: std::time::Duration) -> i64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i64::try_from(secs).unwrap_or(i64::MAX)
}

fn to_hash_map(m: &BTreeMap<String, String>) -> HashMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn to_btree_map(m: Option<HashMap<String, String>>) -> BTreeMap<String, String> {
    m.unwrap_or_default().into_iter().collect()
}

/// An RFC 3339 timestamp (as Docker writes them, with up to nanosecond
/// fractions) in Unix milliseconds. Docker's zero time (`0001-01-01…`)
/// means "never" and gives `None`, as does anything unreadable.
pub(crate) fn rfc3339_to_unix_ms(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { text.get(r)?.parse().ok() };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if year <= 1 || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = text.get(19..)?;
    let mut millis = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let ms_digits: String = frac[..digits]
            .chars()
            .chain("000".chars())
            .take(3)
            .collect();
        millis = ms_digits.parse::<i64>().ok()?;
        rest = &frac[digits..];
    }
    let offset_secs = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            if rest.len() != 6 || rest.as_bytes()[3] != b':' {
                return None;
            }
            let h: i64 = rest.get(1..3)?.parse().ok()?;
            let m: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (h * 3600 + m * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    Some(secs * 1000 + millis)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Docker's state, trusting `Status` and falling back to the flags when
/// the status is empty.
fn inspect_state(s: &bollard::models::ContainerState) -> ContainerState {
    use ContainerStateStatusEnum as S;
    match s.status {
        Some(S::CREATED) => ContainerState::Created,
        // "stopping" (newer engines): the process is still there.
        Some(S::RUNNING) | Some(S::STOPPING) => ContainerState::Running,
        Some(S::PAUSED) => ContainerState::Paused,
        Some(S::RESTARTING) => ContainerState::Restarting,
        Some(S::REMOVING) => ContainerState::Removing,
        Some(S::EXITED) => ContainerState::Exited,
        Some(S::DEAD) => ContainerState::Dead,
        Some(S::EMPTY) | None => {
            let flag = |f: Option<bool>| f.unwrap_or(false);
            if flag(s.dead) {
                ContainerState::Dead
            } else if flag(s.restarting) {
                ContainerState::Restarting
            } else if flag(s.paused) {
                ContainerState::Paused
            } else if flag(s.running) {
                ContainerState::Running
            } else if s
                .started_at
                .as_deref()
                .and_then(rfc3339_to_unix_ms)
                .is_some()
            {
                ContainerState::Exited
            } else {
                ContainerState::Created
            }
        }
    }
}

pub(crate) fn container_info(r: ContainerInspectResponse) -> Result<ContainerInfo, DockerError> {
    let id =
        r.id.filter(|i| !i.is_empty())
            .ok_or_else(|| DockerError::Protocol {
                message: "container inspect without an Id".into(),
            })?;
    let config = r.config.unwrap_or_default();
    let state = r.state.unwrap_or_default();
    let started = state.started_at.as_deref().and_then(rfc3339_to_unix_ms);
    let finished = state.finished_at.as_deref().and_then(rfc3339_to_unix_ms);
    let networks = r
        .network_settings
        .and_then(|n| n.networks)
        .unwrap_or_default()
        .into_iter()
        .map(|(name, ep)| (name, ep.ip_address.filter(|ip| !ip.is_empty())))
        .collect();
    Ok(ContainerInfo {
        id,
        name: r
            .name
            .map(|n| n.trim_start_matches('/').to_string())
            .unwrap_or_default(),
        image: config.image.unwrap_or_default(),
        image_id: r.image.unwrap_or_default(),
        labels: to_btree_map(config.labels),
        state: inspect_state(&state),
        // Docker reports 0 for a container that never ran; only a
        // finished container has a meaningful exit code.
        exit_code: finished.and(state.exit_code),
        started_at_ms: started,
        finished_at_ms: finished,
        oom_killed: state.oom_killed.unwrap_or(false),
        error: state.error.filter(|e| !e.is_empty()),
        networks,
    })
}

pub(crate) fn summary(c: bollard::models::ContainerSummary) -> Option<ContainerSummary> {
    use ContainerSummaryStateEnum as S;
    let id = c.id.filter(|i| !i.is_empty())?;
    let status = c.status.unwrap_or_default();
    let state = match c.state {
        Some(S::CREATED) => ContainerState::Created,
        Some(S::RUNNING) | Some(S::STOPPING) => ContainerState::Running,
        Some(S::PAUSED) => ContainerState::Paused,
        Some(S::RESTARTING) => ContainerState::Restarting,
        Some(S::REMOVING) => ContainerState::Removing,
        Some(S::EXITED) => ContainerState::Exited,
        Some(S::DEAD) => ContainerState::Dead,
        // Only the human status is left to go by.
        Some(S::EMPTY) | None => {
            if status.starts_with("Up") {
                ContainerState::Running
            } else if status.starts_with("Created") {
                ContainerState::Created
            } else if status.starts_with("Exited") {
                ContainerState::Exited
            } else {
                ContainerState::Dead
            }
        }
    };
    let name = c
        .names
        .unwrap_or_default()
        .into_iter()
        .next()
        .map(|n| n.trim_start_matches('/').to_string())
        .unwrap_or_default();
    Some(ContainerSummary {
        id,
        name,
        image: c.image.unwrap_or_default(),
        labels: to_btree_map(c.labels),
        state,
        status,
        created: c.created.unwrap_or(0),
    })
}

/// A container event, or `None` for other object types and events
/// without an actor id.
pub(crate) fn event(m: EventMessage) -> Option<ContainerEvent> {
    use bollard::models::EventMessageTypeEnum as T;
    if !matches!(m.typ, Some(T::CONTAINER) | None) {
        return None;
    }
    let actor = m.actor?;
    let id = actor.id.filter(|i| !i.is_empty())?;
    let mut attributes = to_btree_map(actor.attributes);
    let action = m.action.unwrap_or_default();
    let kind = match action.as_str() {
        "create" => DockerEventKind::Create,
        "start" => DockerEventKind::Start,
        "die" => DockerEventKind::Die {
            exit_code: attributes.get("exitCode").and_then(|c| c.parse().ok()),
        },
        "stop" => DockerEventKind::Stop,
        "kill" => DockerEventKind::Kill {
            signal: attributes.get("signal").cloned(),
        },
        "oom" => DockerEventKind::Oom,
        "destroy" => DockerEventKind::Destroy,
        _ => DockerEventKind::Other(action),
    };
    let name = attributes.get("name").cloned();
    let image = attributes.get("image").cloned();
    attributes.retain(|k, _| !NON_LABEL_ATTRIBUTES.contains(&k.as_str()));
    let time_ns = m
        .time_nano
        .or_else(|| m.time.map(|s| s.saturating_mul(1_000_000_000)))
        .unwrap_or(0);
    Some(ContainerEvent {
        id,
        kind,
        name,
        image,
        labels: attributes,
        time_ns,
    })
}

pub(crate) fn engine_info(
    negotiated: String,
    version: SystemVersion,
    info: SystemInfo,
) -> EngineInfo {
    let mut runtimes: Vec<String> = info.runtimes.unwrap_or_default().into_keys().collect();
    runtimes.sort();
    let nvidia_runtime = runtimes.iter().any(|r| r == "nvidia");
    EngineInfo {
        api_version: negotiated,
        engine_api_version: version.api_version.unwrap_or_default(),
        engine_version: version.version.or(info.server_version).unwrap_or_default(),
        os: version.os.unwrap_or_default(),
        arch: version.arch.unwrap_or_default(),
        runtimes,
        nvidia_runtime,
        // Engines before 25 have no CDI and no `CDISpecDirs`; later ones
        // report an empty list while CDI is off.
        cdi_enabled: info.cdi_spec_dirs.is_some_and(|d| !d.is_empty()),
    }
}

/// The existing container's id in Docker's name-conflict message:
/// `… is already in use by container "0123…". You have to remove …`.
pub(crate) fn conflict_id(message: &str) -> Option<String> {
    let (_, rest) = message.split_once("by container \"")?;
    let (id, _) = rest.split_once('"')?;
    (!id.is_empty()).then(|| id.to_string())
}

/// `"1.41"` → `(1, 41)`.
pub(crate) fn parse_api_version(v: &str) -> Option<(u32, u32)> {
    let (major, minor) = v.trim().split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use orch_core::model::{PortMapping, VolumeMount};
    use orch_core::units::{ByteSize, Duration};

    fn spec() -> ContainerSpec {
        ContainerSpec {
            name: "orch-main-vision-face-0".into(),
            image: "orchestrator-agent:latest".into(),
            command: None,
            env: BTreeMap::from([
                ("ORCH_AGENT".into(), "Face".into()),
                ("ORCH_GROUP".into(), "vision".into()),
            ]),
            labels: BTreeMap::from([("io.orchestrator.agent".into(), "Face".into())]),
            network: "orch-main".into(),
            aliases: vec![],
            hostname: None,
            ports: vec![],
            mounts: vec![],
            cpus: None,
            memory: None,
            pids: None,
            cap_add: vec![],
            read_only_rootfs: false,
            gpu: GpuDevices::None,
            ipc_host: false,
            stop_timeout: Duration::from_secs(10),
        }
    }

    /// The HostConfig every agent gets when the spec asks for nothing.
    fn baseline() -> HostConfig {
        HostConfig {
            network_mode: Some("orch-main".into()),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges:true".into()]),
            readonly_rootfs: Some(false),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::NO),
                maximum_retry_count: None,
            }),
            init: Some(false),
            ..Default::default()
        }
    }

    /// One row per rule: how the spec is changed, and how the expected
    /// HostConfig differs from the baseline.
    fn check(edit: impl FnOnce(&mut ContainerSpec), expect: impl FnOnce(&mut HostConfig)) {
        let mut s = spec();
        edit(&mut s);
        let mut want = baseline();
        expect(&mut want);
        assert_eq!(host_config(&s).expect("valid spec"), want);
    }

    #[test]
    fn a_plain_spec_is_hardened_and_not_restarted_by_docker() {
        check(|_| {}, |_| {});
    }

    #[test]
    fn limits_map_to_nano_cpus_memory_and_pids() {
        check(
            |s| {
                s.cpus = Some(1.5);
                s.memory = Some(ByteSize::mib(512));
                s.pids = Some(256);
            },
            |h| {
                h.nano_cpus = Some(1_500_000_000);
                h.memory = Some(512 * 1024 * 1024);
                h.pids_limit = Some(256);
            },
        );
        check(|s| s.cpus = Some(0.25), |h| h.nano_cpus = Some(250_000_000));
    }

    #[test]
    fn capabilities_are_added_back_after_dropping_all() {
        check(
            |s| s.cap_add = vec!["NET_BIND_SERVICE".into(), "SYS_NICE".into()],
            |h| h.cap_add = Some(vec!["NET_BIND_SERVICE".into(), "SYS_NICE".into()]),
        );
    }

    #[test]
    fn read_only_root_and_host_ipc() {
        check(
            |s| {
                s.read_only_rootfs = true;
                s.ipc_host = true;
            },
            |h| {
                h.readonly_rootfs = Some(true);
                h.ipc_mode = Some("host".into());
            },
        );
    }

    #[test]
    fn ports_publish_with_host_ip_port_and_protocol() {
        check(
            |s| {
                s.ports = vec![
                    PortMapping::parse("7200:7200").expect("port"),
                    PortMapping::parse("127.0.0.1:9000:8080/udp").expect("port"),
                    PortMapping::parse("9100").expect("port"),
                    PortMapping::parse("127.0.0.1:7201:7200").expect("port"),
                ];
            },
            |h| {
                h.port_bindings = Some(HashMap::from([
                    (
                        "7200/tcp".to_string(),
                        Some(vec![
                            PortBinding {
                                host_ip: None,
                                host_port: Some("7200".into()),
                            },
                            PortBinding {
                                host_ip: Some("127.0.0.1".into()),
                                host_port: Some("7201".into()),
                            },
                        ]),
                    ),
                    (
                        "8080/udp".to_string(),
                        Some(vec![PortBinding {
                            host_ip: Some("127.0.0.1".into()),
                            host_port: Some("9000".into()),
                        }]),
                    ),
                    (
                        "9100/tcp".to_string(),
                        Some(vec![PortBinding {
                            host_ip: None,
                            host_port: None,
                        }]),
                    ),
                ]));
            },
        );
    }

    #[test]
    fn mounts_are_binds_for_paths_and_volumes_otherwise() {
        check(
            |s| {
                s.mounts = vec![
                    VolumeMount::parse("/run/mps/0:/tmp/nvidia-mps").expect("mount"),
                    VolumeMount::parse("models:/models:ro").expect("mount"),
                ];
            },
            |h| {
                h.mounts = Some(vec![
                    Mount {
                        target: Some("/tmp/nvidia-mps".into()),
                        source: Some("/run/mps/0".into()),
                        typ: Some(MountType::BIND),
                        read_only: Some(false),
                        ..Default::default()
                    },
                    Mount {
                        target: Some("/models".into()),
                        source: Some("models".into()),
                        typ: Some(MountType::VOLUME),
                        read_only: Some(true),
                        ..Default::default()
                    },
                ]);
            },
        );
    }

    #[test]
    fn nvidia_gpus_become_a_device_request_with_the_gpu_capability() {
        check(
            |s| {
                s.gpu = GpuDevices::Nvidia {
                    device_ids: vec!["MIG-1234".into(), "GPU-abcd".into()],
                }
            },
            |h| {
                h.device_requests = Some(vec![DeviceRequest {
                    driver: Some("nvidia".into()),
                    count: None,
                    device_ids: Some(vec!["MIG-1234".into(), "GPU-abcd".into()]),
                    capabilities: Some(vec![vec!["gpu".into()]]),
                    options: None,
                }]);
            },
        );
    }

    #[test]
    fn cdi_devices_become_a_cdi_device_request() {
        check(
            |s| {
                s.gpu = GpuDevices::Cdi {
                    devices: vec!["nvidia.com/gpu=GPU-abcd".into()],
                }
            },
            |h| {
                h.device_requests = Some(vec![DeviceRequest {
                    driver: Some("cdi".into()),
                    count: None,
                    device_ids: Some(vec!["nvidia.com/gpu=GPU-abcd".into()]),
                    capabilities: None,
                    options: None,
                }]);
            },
        );
    }

    #[test]
    fn specs_docker_cannot_express_are_refused_with_the_reason() {
        type Edit = fn(&mut ContainerSpec);
        let cases: Vec<(Edit, &str)> = vec![
            (|s| s.cpus = Some(0.0), "CPU count"),
            (|s| s.cpus = Some(f64::NAN), "CPU count"),
            (|s| s.cpus = Some(-1.0), "CPU count"),
            (|s| s.memory = Some(ByteSize(u64::MAX)), "too large"),
            (
                |s| s.mounts = vec![VolumeMount::parse("./data:/data").expect("mount")],
                "relative",
            ),
            (
                |s| s.gpu = GpuDevices::Nvidia { device_ids: vec![] },
                "empty",
            ),
            (|s| s.gpu = GpuDevices::Cdi { devices: vec![] }, "empty"),
        ];
        for (edit, needle) in cases {
            let mut s = spec();
            edit(&mut s);
            match host_config(&s) {
                Err(DockerError::InvalidSpec { container, reason }) => {
                    assert_eq!(container, "orch-main-vision-face-0");
                    assert!(reason.contains(needle), "{reason:?} lacks {needle:?}");
                }
                other => panic!("expected InvalidSpec containing {needle:?}, got {other:?}"),
            }
        }
    }

    #[test]
    fn the_create_body_carries_identity_network_and_stop_timeout() {
        let mut s = spec();
        s.command = Some(vec!["serve".into(), "--port=8080".into()]);
        s.hostname = Some("face".into());
        s.aliases = vec!["Face".into(), "face".into()];
        s.ports = vec![PortMapping::parse("8080").expect("port")];
        s.stop_timeout = Duration::from_millis(2500);
        let body = create_body(&s).expect("valid spec");
        assert_eq!(body.image.as_deref(), Some("orchestrator-agent:latest"));
        assert_eq!(
            body.cmd,
            Some(vec!["serve".to_string(), "--port=8080".to_string()])
        );
        assert_eq!(
            body.env,
            Some(vec![
                "ORCH_AGENT=Face".to_string(),
                "ORCH_GROUP=vision".to_string()
            ])
        );
        assert_eq!(
            body.labels,
            Some(HashMap::from([(
                "io.orchestrator.agent".to_string(),
                "Face".to_string()
            )]))
        );
        assert_eq!(body.hostname.as_deref(), Some("face"));
        assert_eq!(body.exposed_ports, Some(vec!["8080/tcp".to_string()]));
        assert_eq!(body.stop_timeout, Some(3), "2.5s rounds up to 3s");
        assert_eq!(body.entrypoint, None, "the image's entrypoint is kept");
        let endpoints = body
            .networking_config
            .and_then(|n| n.endpoints_config)
            .expect("endpoints");
        assert_eq!(endpoints.len(), 1);
        assert_eq!(
            endpoints.get("orch-main").and_then(|e| e.aliases.clone()),
            Some(vec!["Face".to_string(), "face".to_string()])
        );
        assert_eq!(
            body.host_config.and_then(|h| h.network_mode).as_deref(),
            Some("orch-main")
        );
    }

    #[test]
    fn the_create_body_serialises_to_docker_field_names() {
        let mut s = spec();
        s.gpu = GpuDevices::Nvidia {
            device_ids: vec!["GPU-1".into()],
        };
        s.pids = Some(64);
        let json = serde_json::to_value(create_body(&s).expect("valid")).expect("json");
        let hc = &json["HostConfig"];
        assert_eq!(hc["CapDrop"], serde_json::json!(["ALL"]));
        assert_eq!(
            hc["SecurityOpt"],
            serde_json::json!(["no-new-privileges:true"])
        );
        assert_eq!(hc["RestartPolicy"]["Name"], "no");
        assert_eq!(hc["PidsLimit"], 64);
        assert_eq!(hc["Init"], false);
        assert_eq!(hc["DeviceRequests"][0]["Driver"], "nvidia");
        assert_eq!(
            hc["DeviceRequests"][0]["DeviceIDs"],
            serde_json::json!(["GPU-1"])
        );
        assert_eq!(
            hc["DeviceRequests"][0]["Capabilities"],
            serde_json::json!([["gpu"]])
        );
        assert_eq!(json["StopTimeout"], 10);
        assert!(json["NetworkingConfig"]["EndpointsConfig"]["orch-main"].is_object());
    }

    #[test]
    fn timestamps_parse_to_unix_milliseconds() {
        let cases = [
            ("1970-01-01T00:00:00Z", Some(0)),
            ("2024-03-01T12:34:56.789123456Z", Some(1_709_296_496_789)),
            ("2024-03-01T12:34:56Z", Some(1_709_296_496_000)),
            ("2024-03-01T12:34:56.7Z", Some(1_709_296_496_700)),
            ("2024-03-01T14:34:56.789+02:00", Some(1_709_296_496_789)),
            ("2000-02-29T00:00:00Z", Some(951_782_400_000)),
            ("0001-01-01T00:00:00Z", None),
            ("", None),
            ("yesterday", None),
            ("2024-13-01T00:00:00Z", None),
            ("2024-03-01T12:34:56.Z", None),
            ("2024-03-01T12:34:56+0200", None),
            ("2024-03-01T12:34:56", None),
            ("2024-03-01T12:34:5é", None),
        ];
        for (text, want) in cases {
            assert_eq!(rfc3339_to_unix_ms(text), want, "{text:?}");
        }
    }

    fn inspect_json(state: serde_json::Value) -> ContainerInspectResponse {
        serde_json::from_value(serde_json::json!({
            "Id": "abc",
            "Name": "/agent",
            "Image": "sha256:1",
            "Config": {"Image": "orchestrator-agent:latest", "Labels": {"io.orchestrator.agent": "A"}},
            "State": state,
            "NetworkSettings": {"Networks": {
                "orch-main": {"IPAddress": "172.18.0.2"},
                "bridge": {"IPAddress": ""}
            }}
        }))
        .expect("inspect json")
    }

    #[test]
    fn inspect_maps_state_times_and_addresses() {
        let info = container_info(inspect_json(serde_json::json!({
            "Status": "exited", "Running": false, "ExitCode": 137, "OOMKilled": true,
            "StartedAt": "2024-03-01T12:34:56.5Z", "FinishedAt": "2024-03-01T12:35:00Z",
            "Error": ""
        })))
        .expect("info");
        assert_eq!(info.id, "abc");
        assert_eq!(info.name, "agent");
        assert_eq!(info.image, "orchestrator-agent:latest");
        assert_eq!(info.image_id, "sha256:1");
        assert_eq!(
            info.labels.get("io.orchestrator.agent").map(String::as_str),
            Some("A")
        );
        assert_eq!(info.state, ContainerState::Exited);
        assert_eq!(info.exit_code, Some(137));
        assert!(info.oom_killed);
        assert_eq!(info.started_at_ms, Some(1_709_296_496_500));
        assert_eq!(info.finished_at_ms, Some(1_709_296_500_000));
        assert_eq!(info.error, None);
        assert_eq!(info.ip_on("orch-main"), Some("172.18.0.2"));
        assert_eq!(info.ip_on("bridge"), None);
        assert_eq!(info.ip_on("elsewhere"), None);
    }

    #[test]
    fn a_never_started_container_has_no_times_and_no_exit_code() {
        let info = container_info(inspect_json(serde_json::json!({
            "Status": "created", "ExitCode": 0,
            "StartedAt": "0001-01-01T00:00:00Z", "FinishedAt": "0001-01-01T00:00:00Z"
        })))
        .expect("info");
        assert_eq!(info.state, ContainerState::Created);
        assert_eq!(
            (info.started_at_ms, info.finished_at_ms, info.exit_code),
            (None, None, None)
        );
    }

    #[test]
    fn missing_fields_never_panic() {
        let info =
            container_info(serde_json::from_value(serde_json::json!({"Id": "x"})).expect("json"))
                .expect("info");
        assert_eq!(info.state, ContainerState::Created);
        assert!(info.labels.is_empty() && info.networks.is_empty() && info.name.is_empty());
        let no_id = container_info(ContainerInspectResponse::default());
        assert!(matches!(no_id, Err(DockerError::Protocol { .. })));
        let empty = bollard::models::ContainerSummary::default();
        assert_eq!(summary(empty), None);
        assert_eq!(event(EventMessage::default()), None);
    }

    #[test]
    fn an_empty_status_falls_back_to_the_flags() {
        let cases = [
            (
                serde_json::json!({"Running": true}),
                ContainerState::Running,
            ),
            (
                serde_json::json!({"Running": true, "Paused": true}),
                ContainerState::Paused,
            ),
            (
                serde_json::json!({"Restarting": true}),
                ContainerState::Restarting,
            ),
            (serde_json::json!({"Dead": true}), ContainerState::Dead),
            (
                serde_json::json!({"StartedAt": "2024-03-01T12:34:56Z"}),
                ContainerState::Exited,
            ),
            (serde_json::json!({}), ContainerState::Created),
        ];
        for (mut state, want) in cases {
            state["Status"] = "".into();
            let info = container_info(inspect_json(state.clone())).expect("info");
            assert_eq!(info.state, want, "{state}");
        }
    }

    #[test]
    fn list_entries_map_names_and_states() {
        let c: bollard::models::ContainerSummary = serde_json::from_value(serde_json::json!({
            "Id": "abc", "Names": ["/agent-0"], "Image": "img", "State": "exited",
            "Status": "Exited (3) 2 seconds ago", "Created": 1700000000,
            "Labels": {"k": "v"}
        }))
        .expect("json");
        let s = summary(c).expect("summary");
        assert_eq!(
            (s.id.as_str(), s.name.as_str(), s.image.as_str()),
            ("abc", "agent-0", "img")
        );
        assert_eq!(s.state, ContainerState::Exited);
        assert_eq!(s.created, 1_700_000_000);
        assert_eq!(s.labels.get("k").map(String::as_str), Some("v"));
        let c = bollard::models::ContainerSummary {
            id: Some("x".into()),
            status: Some("Up 3 minutes".into()),
            ..Default::default()
        };
        assert_eq!(summary(c).map(|s| s.state), Some(ContainerState::Running));
    }

    fn event_json(action: &str, attributes: serde_json::Value) -> EventMessage {
        serde_json::from_value(serde_json::json!({
            "Type": "container", "Action": action,
            "Actor": {"ID": "abc", "Attributes": attributes},
            "time": 1700000000, "timeNano": 1700000000123456789i64
        }))
        .expect("event json")
    }

    #[test]
    fn events_map_actions_and_separate_labels_from_attributes() {
        let ev = event(event_json(
            "die",
            serde_json::json!({"exitCode": "7", "name": "agent", "image": "img", "io.orchestrator.agent": "A"}),
        ))
        .expect("event");
        assert_eq!(ev.kind, DockerEventKind::Die { exit_code: Some(7) });
        assert_eq!(ev.id, "abc");
        assert_eq!(ev.name.as_deref(), Some("agent"));
        assert_eq!(ev.image.as_deref(), Some("img"));
        assert_eq!(
            ev.labels,
            BTreeMap::from([("io.orchestrator.agent".to_string(), "A".to_string())])
        );
        assert_eq!(ev.time_ns, 1_700_000_000_123_456_789);

        let cases = [
            ("create", DockerEventKind::Create),
            ("start", DockerEventKind::Start),
            ("stop", DockerEventKind::Stop),
            ("oom", DockerEventKind::Oom),
            ("destroy", DockerEventKind::Destroy),
            (
                "kill",
                DockerEventKind::Kill {
                    signal: Some("15".into()),
                },
            ),
            ("die", DockerEventKind::Die { exit_code: None }),
            (
                "health_status: healthy",
                DockerEventKind::Other("health_status: healthy".into()),
            ),
        ];
        for (action, want) in cases {
            let attrs = if action == "kill" {
                serde_json::json!({"signal": "15"})
            } else {
                serde_json::json!({})
            };
            assert_eq!(event(event_json(action, attrs)).map(|e| e.kind), Some(want));
        }

        let mut network_event = event_json("connect", serde_json::json!({}));
        network_event.typ = Some(bollard::models::EventMessageTypeEnum::NETWORK);
        assert_eq!(event(network_event), None);
        let mut old = event_json("start", serde_json::json!({}));
        old.time_nano = None;
        assert_eq!(
            event(old).map(|e| e.time_ns),
            Some(1_700_000_000_000_000_000)
        );
    }

    #[test]
    fn engine_info_detects_the_nvidia_runtime_and_cdi() {
        let version: SystemVersion = serde_json::from_value(serde_json::json!({
            "Version": "20.10.24", "ApiVersion": "1.41", "Os": "linux", "Arch": "amd64"
        }))
        .expect("version");
        let info: SystemInfo = serde_json::from_value(serde_json::json!({
            "Runtimes": {"runc": {"path": "runc"}, "nvidia": {"path": "nvidia-container-runtime"}}
        }))
        .expect("info");
        let e = engine_info("1.41".into(), version.clone(), info);
        assert_eq!(e.runtimes, vec!["nvidia".to_string(), "runc".to_string()]);
        assert!(e.nvidia_runtime);
        assert!(!e.cdi_enabled);
        assert_eq!(
            (
                e.engine_version.as_str(),
                e.engine_api_version.as_str(),
                e.api_version.as_str()
            ),
            ("20.10.24", "1.41", "1.41")
        );

        let with_cdi = SystemInfo {
            cdi_spec_dirs: Some(vec!["/etc/cdi".into()]),
            ..Default::default()
        };
        let e = engine_info("1.47".into(), version.clone(), with_cdi);
        assert!(e.cdi_enabled && !e.nvidia_runtime);
        let cdi_off = SystemInfo {
            cdi_spec_dirs: Some(vec![]),
            ..Default::default()
        };
        assert!(!engine_info("1.47".into(), version, cdi_off).cdi_enabled);
    }

    #[test]
    fn conflict_messages_yield_the_existing_id() {
        let msg = "Conflict. The container name \"/agent\" is already in use by container \"0123abcd\". You have to remove (or rename) that container to be able to reuse that name.";
        assert_eq!(conflict_id(msg).as_deref(), Some("0123abcd"));
        assert_eq!(conflict_id("Conflict."), None);
        assert_eq!(conflict_id("by container \"\""), None);
    }

    #[test]
    fn api_versions_parse() {
        assert_eq!(parse_api_version("1.41"), Some((1, 41)));
        assert_eq!(parse_api_version(" 1.5 "), Some((1, 5)));
        assert_eq!(parse_api_version("x"), None);
        assert_eq!(parse_api_version("1."), None);
    }

    #[test]
    fn stop_timeouts_round_up_to_seconds() {
        use std::time::Duration as D;
        assert_eq!(ceil_secs(D::ZERO), 0);
        assert_eq!(ceil_secs(D::from_millis(1)), 1);
        assert_eq!(ceil_secs(D::from_secs(10)), 10);
        assert_eq!(ceil_secs(D::from_millis(10_001)), 11);
    }
}
