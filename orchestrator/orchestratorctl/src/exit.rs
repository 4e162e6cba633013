//! Exit codes of `orchestratorctl`, documented in `docs/cli.md` and the
//! man page. Scripts rely on them; change one only with a release note.

use std::process::ExitCode;

/// The command did what was asked.
pub const OK: u8 = 0;
/// The command failed (an operation was refused or went wrong).
pub const FAILED: u8 = 1;
/// The command line is wrong (unknown flag, missing argument).
pub const USAGE: u8 = 2;
/// A config file is invalid; diagnostics were printed.
pub const INVALID_CONFIG: u8 = 3;
/// The daemon cannot be reached (socket missing, refused, permission).
pub const UNREACHABLE: u8 = 4;
/// A named group, agent or GPU does not exist.
pub const NOT_FOUND: u8 = 5;
/// Waiting (`--wait`) ran out of time before the goal was reached.
pub const TIMEOUT: u8 = 6;
/// A GPU plan cannot place every request, or (`plan`, `apply`) an image
/// the config needs is not on the host.
pub const UNSATISFIABLE: u8 = 7;
/// `config diff`: applying would change something (as `diff` exits 1,
/// and `terraform plan -detailed-exitcode` 2, but apart from failures).
pub const CHANGES: u8 = 8;
/// `--wait` on a rollout: a step failed and the previous generation was
/// put back.
pub const ROLLED_BACK: u8 = 9;
/// `--wait` on a rollout: a step failed and the rollout is paused (or a
/// newer config took over before it ended).
pub const PAUSED: u8 = 10;

/// An error carrying the exit code it should end the process with.
#[derive(Debug)]
pub struct Exit {
    pub code: u8,
    pub message: Option<String>,
}

impl Exit {
    pub fn code(code: u8) -> Self {
        Exit {
            code,
            message: None,
        }
    }

    pub fn with(code: u8, message: impl Into<String>) -> Self {
        Exit {
            code,
            message: Some(message.into()),
        }
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.message {
            Some(m) => f.write_str(m),
            None => write!(f, "exit code {}", self.code),
        }
    }
}

impl std::error::Error for Exit {}

pub fn to_exit_code(code: u8) -> ExitCode {
    ExitCode::from(code)
}
