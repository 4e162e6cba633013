//! The environment half of the agent contract: who this replica is
//! (`ORCH_*`), which GPU share it was handed, and where it must listen.
//!
//! Every reader has a `from_env()` for real use and a `from_lookup()` that
//! takes the variables from a closure, so parsing is tested without touching
//! the process environment (mutating it is `unsafe` and races other test
//! threads). An empty value counts as unset everywhere: compose files and
//! `docker run -e NAME=` produce empty values that mean "not given".

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Name of the host the supervisor runs on.
pub const ORCH_HOST: &str = "ORCH_HOST";
/// Name of the group the agent belongs to.
pub const ORCH_GROUP: &str = "ORCH_GROUP";
/// Name of the agent inside its group.
pub const ORCH_AGENT: &str = "ORCH_AGENT";
/// Replica number, a non-negative integer.
pub const ORCH_REPLICA: &str = "ORCH_REPLICA";
/// The GPU slice handed to the agent (`none`, `mps:…`, `mig:…`, `exclusive:…`).
pub const ORCH_GPU_SLICE: &str = "ORCH_GPU_SLICE";
/// Comma-separated container ports to listen on.
pub const ORCH_LISTEN_PORTS: &str = "ORCH_LISTEN_PORTS";
/// Address to listen on; not part of the supervisor's contract, it lets an
/// agent run on a host network or under test on loopback only.
pub const AGENT_LISTEN_HOST: &str = "AGENT_LISTEN_HOST";
/// GPU (or MIG device) identifiers visible to the container.
pub const NVIDIA_VISIBLE_DEVICES: &str = "NVIDIA_VISIBLE_DEVICES";
/// Directory holding the MPS control pipes.
pub const CUDA_MPS_PIPE_DIRECTORY: &str = "CUDA_MPS_PIPE_DIRECTORY";
/// Share of the GPU's SMs an MPS client may use, in percent.
pub const CUDA_MPS_ACTIVE_THREAD_PERCENTAGE: &str = "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE";
/// Pinned device memory limit of an MPS client, such as `0=4G`.
pub const CUDA_MPS_PINNED_DEVICE_MEM_LIMIT: &str = "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT";

/// Port listened on when `ORCH_LISTEN_PORTS` is unset.
pub const DEFAULT_PORT: u16 = 8080;

/// A contract variable holds a value the agent cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// The value is not UTF-8.
    #[error("{var} is not valid UTF-8")]
    NotUnicode {
        /// The variable's name.
        var: &'static str,
    },
    /// `ORCH_REPLICA` is not a non-negative integer.
    #[error(
        "{var}={value:?} is not a replica number: expected a non-negative integer such as 0 or 3"
    )]
    BadReplica {
        /// The variable's name.
        var: &'static str,
        /// The value found.
        value: String,
    },
    /// One entry of `ORCH_LISTEN_PORTS` is not a port number.
    #[error("{var}={value:?}: {entry:?} is not a port number (0-65535; 0 picks a free port)")]
    BadPort {
        /// The variable's name.
        var: &'static str,
        /// The whole value.
        value: String,
        /// The offending entry.
        entry: String,
    },
    /// `ORCH_LISTEN_PORTS` names a port twice.
    #[error("{var}={value:?} lists port {port} twice")]
    DuplicatePort {
        /// The variable's name.
        var: &'static str,
        /// The whole value.
        value: String,
        /// The repeated port.
        port: u16,
    },
    /// `ORCH_LISTEN_PORTS` is made of separators only.
    #[error("{var}={value:?} lists no port; leave it unset to listen on {DEFAULT_PORT}")]
    NoPorts {
        /// The variable's name.
        var: &'static str,
        /// The whole value.
        value: String,
    },
    /// `AGENT_LISTEN_HOST` is not an IP address.
    #[error(
        "{var}={value:?} is not an IP address such as 0.0.0.0 or 127.0.0.1 (host names are not resolved)"
    )]
    BadListenHost {
        /// The variable's name.
        var: &'static str,
        /// The value found.
        value: String,
    },
}

/// Reads one variable through `lookup`, mapping empty to unset.
fn text(
    lookup: &impl Fn(&str) -> Option<OsString>,
    var: &'static str,
) -> Result<Option<String>, EnvError> {
    match lookup(var) {
        None => Ok(None),
        Some(raw) => {
            let value = raw
                .into_string()
                .map_err(|_| EnvError::NotUnicode { var })?;
            Ok((!value.is_empty()).then_some(value))
        }
    }
}

/// Who this replica is, as the supervisor told it. Every field is optional
/// so the agent also runs by hand (`docker run` with no `ORCH_*` at all);
/// under the supervisor all of them are set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// `ORCH_HOST`.
    pub host: Option<String>,
    /// `ORCH_GROUP`.
    pub group: Option<String>,
    /// `ORCH_AGENT`.
    pub agent: Option<String>,
    /// `ORCH_REPLICA`.
    pub replica: Option<u32>,
    /// `ORCH_GPU_SLICE`, kept opaque: its grammar belongs to the supervisor.
    pub gpu_slice: Option<String>,
}

impl Identity {
    /// Reads the identity from the process environment.
    pub fn from_env() -> Result<Self, EnvError> {
        Self::from_lookup(|name| std::env::var_os(name))
    }

    /// Reads the identity from `lookup` (a variable name to its value).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<OsString>) -> Result<Self, EnvError> {
        let replica = match text(&lookup, ORCH_REPLICA)? {
            None => None,
            Some(value) => Some(
                value
                    .trim()
                    .parse::<u32>()
                    .map_err(|_| EnvError::BadReplica {
                        var: ORCH_REPLICA,
                        value: value.clone(),
                    })?,
            ),
        };
        Ok(Self {
            host: text(&lookup, ORCH_HOST)?,
            group: text(&lookup, ORCH_GROUP)?,
            agent: text(&lookup, ORCH_AGENT)?,
            replica,
            gpu_slice: text(&lookup, ORCH_GPU_SLICE)?,
        })
    }
}

/// The GPU variables the container was started with. Values are reported as
/// given, never interpreted: the CUDA runtime, not the agent, applies them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GpuEnv {
    /// `NVIDIA_VISIBLE_DEVICES`.
    pub nvidia_visible_devices: Option<String>,
    /// `CUDA_MPS_PIPE_DIRECTORY`.
    pub cuda_mps_pipe_directory: Option<String>,
    /// `CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`.
    pub cuda_mps_active_thread_percentage: Option<String>,
    /// `CUDA_MPS_PINNED_DEVICE_MEM_LIMIT`.
    pub cuda_mps_pinned_device_mem_limit: Option<String>,
}

impl GpuEnv {
    /// Reads the GPU variables from the process environment.
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var_os(name))
    }

    /// Reads the GPU variables from `lookup`. A value that is not UTF-8 is
    /// kept lossily: it is only ever displayed.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<OsString>) -> Self {
        let get = |var: &str| {
            lookup(var)
                .map(|raw| raw.to_string_lossy().into_owned())
                .filter(|value| !value.is_empty())
        };
        Self {
            nvidia_visible_devices: get(NVIDIA_VISIBLE_DEVICES),
            cuda_mps_pipe_directory: get(CUDA_MPS_PIPE_DIRECTORY),
            cuda_mps_active_thread_percentage: get(CUDA_MPS_ACTIVE_THREAD_PERCENTAGE),
            cuda_mps_pinned_device_mem_limit: get(CUDA_MPS_PINNED_DEVICE_MEM_LIMIT),
        }
    }
}

/// Where the agent listens: one address, several ports, the same endpoints
/// on each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenConfig {
    /// `AGENT_LISTEN_HOST`, default `0.0.0.0`.
    pub host: IpAddr,
    /// `ORCH_LISTEN_PORTS`, default `[8080]`; 0 asks the kernel for a free port.
    pub ports: Vec<u16>,
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self {
            host: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            ports: vec![DEFAULT_PORT],
        }
    }
}

impl ListenConfig {
    /// Reads the listen settings from the process environment.
    pub fn from_env() -> Result<Self, EnvError> {
        Self::from_lookup(|name| std::env::var_os(name))
    }

    /// Reads the listen settings from `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<OsString>) -> Result<Self, EnvError> {
        let mut config = Self::default();
        if let Some(value) = text(&lookup, AGENT_LISTEN_HOST)? {
            // INVARIANT: only literal addresses are accepted, so the agent
            // never resolves a name (statically linked glibc cannot load NSS).
            config.host = value.trim().parse().map_err(|_| EnvError::BadListenHost {
                var: AGENT_LISTEN_HOST,
                value: value.clone(),
            })?;
        }
        if let Some(value) = text(&lookup, ORCH_LISTEN_PORTS)? {
            config.ports = parse_ports(&value)?;
        }
        Ok(config)
    }

    /// The socket addresses to bind, one per port.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.ports
            .iter()
            .map(|&port| SocketAddr::new(self.host, port))
            .collect()
    }
}

fn parse_ports(value: &str) -> Result<Vec<u16>, EnvError> {
    let mut ports = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let port: u16 = entry.parse().map_err(|_| EnvError::BadPort {
            var: ORCH_LISTEN_PORTS,
            value: value.to_owned(),
            entry: entry.to_owned(),
        })?;
        // Port 0 may repeat: each asks for a distinct free port.
        if port != 0 && ports.contains(&port) {
            return Err(EnvError::DuplicatePort {
                var: ORCH_LISTEN_PORTS,
                value: value.to_owned(),
                port,
            });
        }
        ports.push(port);
    }
    if ports.is_empty() {
        return Err(EnvError::NoPorts {
            var: ORCH_LISTEN_PORTS,
            value: value.to_owned(),
        });
    }
    Ok(ports)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(*v)))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn identity_reads_every_variable() {
        let id = Identity::from_lookup(env(&[
            (ORCH_HOST, "mainpc"),
            (ORCH_GROUP, "vision_gpu"),
            (ORCH_AGENT, "FaceRecognitionAgent"),
            (ORCH_REPLICA, "2"),
            (ORCH_GPU_SLICE, "mps:GPU-1234:memory=4g,compute=25%"),
        ]))
        .unwrap();
        assert_eq!(
            id,
            Identity {
                host: Some("mainpc".into()),
                group: Some("vision_gpu".into()),
                agent: Some("FaceRecognitionAgent".into()),
                replica: Some(2),
                gpu_slice: Some("mps:GPU-1234:memory=4g,compute=25%".into()),
            }
        );
    }

    #[test]
    fn identity_absent_and_empty_are_unset() {
        let id = Identity::from_lookup(env(&[(ORCH_HOST, ""), (ORCH_REPLICA, "")])).unwrap();
        assert_eq!(id, Identity::default());
    }

    #[test]
    fn identity_rejects_bad_replicas() {
        for bad in ["-1", "one", "1.5", "4294967296", "0x1"] {
            let err = Identity::from_lookup(env(&[(ORCH_REPLICA, bad)])).unwrap_err();
            assert_eq!(
                err,
                EnvError::BadReplica {
                    var: ORCH_REPLICA,
                    value: bad.into()
                },
                "{bad}"
            );
            assert!(err.to_string().contains("ORCH_REPLICA"), "{err}");
        }
    }

    #[test]
    fn identity_rejects_non_unicode() {
        use std::os::unix::ffi::OsStringExt;
        let lookup = |name: &str| (name == ORCH_AGENT).then(|| OsString::from_vec(vec![0xff]));
        assert_eq!(
            Identity::from_lookup(lookup).unwrap_err(),
            EnvError::NotUnicode { var: ORCH_AGENT }
        );
    }

    #[test]
    fn gpu_env_reports_values_as_given() {
        let gpu = GpuEnv::from_lookup(env(&[
            (NVIDIA_VISIBLE_DEVICES, "MIG-abc"),
            (CUDA_MPS_ACTIVE_THREAD_PERCENTAGE, "25"),
            (CUDA_MPS_PINNED_DEVICE_MEM_LIMIT, "0=4G"),
            (CUDA_MPS_PIPE_DIRECTORY, ""),
        ]));
        assert_eq!(
            gpu,
            GpuEnv {
                nvidia_visible_devices: Some("MIG-abc".into()),
                cuda_mps_pipe_directory: None,
                cuda_mps_active_thread_percentage: Some("25".into()),
                cuda_mps_pinned_device_mem_limit: Some("0=4G".into()),
            }
        );
        assert_eq!(GpuEnv::from_lookup(env(&[])), GpuEnv::default());
    }

    #[test]
    fn listen_ports_table() {
        let ok: &[(&str, &[u16])] = &[
            ("8080", &[8080]),
            ("8080,9090", &[8080, 9090]),
            (" 8080 , 9090 ,", &[8080, 9090]),
            ("0,0", &[0, 0]),
            ("65535", &[65535]),
        ];
        for (value, want) in ok {
            let got = ListenConfig::from_lookup(env(&[(ORCH_LISTEN_PORTS, value)])).unwrap();
            assert_eq!(got.ports, *want, "{value:?}");
        }
        let bad: &[(&str, EnvError)] = &[
            (
                "80a",
                EnvError::BadPort {
                    var: ORCH_LISTEN_PORTS,
                    value: "80a".into(),
                    entry: "80a".into(),
                },
            ),
            (
                "8080,65536",
                EnvError::BadPort {
                    var: ORCH_LISTEN_PORTS,
                    value: "8080,65536".into(),
                    entry: "65536".into(),
                },
            ),
            (
                "8080,8080",
                EnvError::DuplicatePort {
                    var: ORCH_LISTEN_PORTS,
                    value: "8080,8080".into(),
                    port: 8080,
                },
            ),
            (
                " , ",
                EnvError::NoPorts {
                    var: ORCH_LISTEN_PORTS,
                    value: " , ".into(),
                },
            ),
        ];
        for (value, want) in bad {
            let got = ListenConfig::from_lookup(env(&[(ORCH_LISTEN_PORTS, value)])).unwrap_err();
            assert_eq!(got, *want, "{value:?}");
        }
    }

    #[test]
    fn listen_defaults_to_all_interfaces_on_8080() {
        let config = ListenConfig::from_lookup(env(&[])).unwrap();
        assert_eq!(config.addrs(), vec!["0.0.0.0:8080".parse().unwrap()]);
    }

    #[test]
    fn listen_host_accepts_addresses_only() {
        let config = ListenConfig::from_lookup(env(&[
            (AGENT_LISTEN_HOST, "127.0.0.1"),
            (ORCH_LISTEN_PORTS, "1,2"),
        ]))
        .unwrap();
        assert_eq!(
            config.addrs(),
            vec![
                "127.0.0.1:1".parse().unwrap(),
                "127.0.0.1:2".parse().unwrap()
            ]
        );
        let v6 = ListenConfig::from_lookup(env(&[(AGENT_LISTEN_HOST, "::1")])).unwrap();
        assert_eq!(v6.host, "::1".parse::<IpAddr>().unwrap());
        let err = ListenConfig::from_lookup(env(&[(AGENT_LISTEN_HOST, "localhost")])).unwrap_err();
        assert!(err.to_string().contains("not resolved"), "{err}");
    }
}
