//! Reaching the daemon: which socket, which host, and what its errors
//! mean as exit codes.

use std::path::PathBuf;

use orch_api::{Client, ClientError, ErrorCode};

use crate::exit::{self, Exit};

/// The socket to use: `--socket`/`ORCHESTRATOR_SOCKET`, else the config's
/// `control.socket` (`--config`/`ORCH_CONFIG`), else the default path.
/// With `--host`, every request is carried to that host by the local
/// daemon.
pub fn client(socket: Option<&PathBuf>, config: Option<&PathBuf>, host: Option<&str>) -> Client {
    let c = if let Some(s) = socket {
        Client::new(s.clone())
    } else if let Some(path) = config
        && let Ok(l) = orch_config::load_file(path, &Default::default())
    {
        Client::new(l.config.control.socket)
    } else {
        Client::new(orch_core::model::ControlSettings::default().socket)
    };
    c.for_host(host.map(str::to_string))
}

/// Turns a client error into the documented exit code.
pub fn fail(e: ClientError) -> anyhow::Error {
    let code = match &e {
        ClientError::NoSocket { .. }
        | ClientError::PermissionDenied { .. }
        | ClientError::Unreachable { .. } => exit::UNREACHABLE,
        ClientError::Api(api) => match api.code {
            ErrorCode::NotFound => exit::NOT_FOUND,
            ErrorCode::InvalidConfig => exit::INVALID_CONFIG,
            ErrorCode::BadRequest => exit::USAGE,
            ErrorCode::Forbidden | ErrorCode::HostUnreachable => exit::UNREACHABLE,
            _ => exit::FAILED,
        },
        ClientError::Protocol(_) => exit::FAILED,
    };
    let mut message = e.to_string();
    if let ClientError::Api(api) = &e {
        for d in &api.details {
            message.push_str("\n  ");
            message.push_str(d);
        }
    }
    Exit::with(code, message).into()
}

/// A runtime for one command.
pub fn block_on<F: Future>(f: F) -> anyhow::Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(rt.block_on(f))
}
