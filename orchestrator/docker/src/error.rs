//! What can go wrong when talking to the Docker Engine, in terms an operator
//! (or the reconcile loop) can act on. Every variant carries the object it
//! is about; none holds a bollard type, so callers never depend on bollard.

use std::fmt;
use std::time::Duration;

/// The kind of Docker object an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    Container,
    Network,
    Image,
    Exec,
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ObjectKind::Container => "container",
            ObjectKind::Network => "network",
            ObjectKind::Image => "image",
            ObjectKind::Exec => "exec instance",
        })
    }
}

/// An error from the container runtime.
///
/// `Clone` because the recording fake queues errors to inject, and because
/// one failure may need to be reported to several waiters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DockerError {
    /// The engine is down, the socket is missing or unreadable, or the
    /// connection dropped (also mid-stream: an event or log stream that
    /// fails with this should be re-opened once the engine is back).
    #[error(
        "cannot reach the Docker Engine at {endpoint}: {reason}; check that dockerd is running and that this user may open its socket"
    )]
    Unreachable { endpoint: String, reason: String },

    /// The engine is too old for the API features this adapter uses.
    #[error(
        "the Docker Engine at {endpoint} speaks API {api_version}, but at least {minimum} (Docker 19.03) is needed for GPU device requests; upgrade Docker"
    )]
    UnsupportedEngine {
        endpoint: String,
        api_version: String,
        minimum: String,
    },

    /// The endpoint string could not be understood.
    #[error(
        "`{endpoint}` is not a Docker endpoint: {reason}; write `unix:///var/run/docker.sock`, a socket path, or `tcp://HOST:PORT`"
    )]
    InvalidEndpoint { endpoint: String, reason: String },

    /// No such container / network / image / exec instance. For a removal
    /// this is usually good news; see [`DockerError::is_not_found`].
    #[error("no such {kind}: {id}")]
    NotFound { kind: ObjectKind, id: String },

    /// A container with this name already exists. Names are unique per
    /// engine; the caller can adopt `existing_id` instead of duplicating.
    #[error(
        "a container named `{name}` already exists ({existing_id}); adopt it or remove it before creating another"
    )]
    NameConflict { name: String, existing_id: String },

    /// The image is not present on this host. Images are never pulled:
    /// hosts of this product may have no registry at all.
    #[error(
        "image `{image}` is not on this host and is never pulled (hosts may have no registry); build it here with `docker build -t {image} <context>` or load it with `docker load -i <file>`"
    )]
    ImageMissing { image: String },

    /// The operation needs a running container and this one is not.
    #[error("container {id} is not running")]
    NotRunning { id: String },

    /// The engine cannot hand out the requested GPU devices: the NVIDIA
    /// container toolkit is not installed, or CDI is not enabled.
    #[error(
        "the Docker Engine cannot provide GPU devices through the `{driver}` driver: {message}; install nvidia-container-toolkit (driver `nvidia`), enable CDI in Docker 25 or later (driver `cdi`), or set `runtime.gpu_injection: env`"
    )]
    GpuDriverMissing { driver: String, message: String },

    /// The container spec cannot be expressed as a Docker request.
    #[error("container `{container}` cannot be created: {reason}")]
    InvalidSpec { container: String, reason: String },

    /// `docker build` failed; `message` is the builder's own error.
    #[error("building image `{tag}` failed: {message}")]
    Build { tag: String, message: String },

    /// Any other error status from the engine, with its message.
    #[error("the Docker Engine refused the request (HTTP {status}): {message}")]
    Api { status: u16, message: String },

    /// The operation did not finish in time.
    #[error("{operation} did not finish within {after:?}")]
    Timeout { operation: String, after: Duration },

    /// The engine answered with something this adapter cannot read.
    #[error("the Docker Engine sent a response that cannot be read: {message}")]
    Protocol { message: String },
}

impl DockerError {
    /// True for a missing container, network, image or exec instance.
    pub fn is_not_found(&self) -> bool {
        matches!(self, DockerError::NotFound { .. })
    }

    /// True when the engine could not be reached at all; the caller should
    /// retry the connection (and re-open event streams) later.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, DockerError::Unreachable { .. })
    }

    pub(crate) fn not_found(kind: ObjectKind, id: &str) -> Self {
        DockerError::NotFound {
            kind,
            id: id.to_string(),
        }
    }
}

/// What `remove` did. Removing a container that is already gone is a
/// normal outcome of a reconcile, not a failure, so it is not an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// The container existed and is now removed.
    Removed,
    /// There was no such container, or another request is already
    /// removing it.
    AlreadyGone,
}
