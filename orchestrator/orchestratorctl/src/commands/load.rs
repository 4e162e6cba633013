//! The loading every verb that reads a config file shares: diagnostics
//! printed for people, failures turned into the documented exit codes.

use std::path::Path;

use anyhow::Result;
use orch_config::{ConfigError, Loaded, Severity};

use crate::cli::LoadArgs;
use crate::exit::{self, Exit};
use crate::output::{Format, Out};

/// Loads a config, printing diagnostics for people on failure (and
/// warnings on success unless `quiet_warnings`). The error carries the
/// documented exit code.
pub fn load(file: &Path, load: &LoadArgs, out: &Out) -> Result<Loaded> {
    match orch_config::load_file(file, &load.options()) {
        Ok(l) => {
            if out.format == Format::Table && !l.warnings.is_empty() {
                let text = std::fs::read_to_string(file).unwrap_or_default();
                eprint!(
                    "{}",
                    orch_config::diag::render(&l.warnings, &text, out.color_stderr)
                );
            }
            Ok(l)
        }
        Err(e) => Err(config_error(e, out)),
    }
}

/// Prints a load failure and turns it into the right exit.
pub fn config_error(e: ConfigError, out: &Out) -> anyhow::Error {
    match e {
        ConfigError::Invalid {
            path,
            diagnostics,
            source_text,
        } => {
            eprint!(
                "{}",
                orch_config::diag::render(&diagnostics, &source_text, out.color_stderr)
            );
            let n = diagnostics
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .count();
            Exit::with(exit::INVALID_CONFIG, format!("{path}: {n} error(s)")).into()
        }
        ConfigError::Io { .. } => Exit::with(exit::NOT_FOUND, e.to_string()).into(),
        ConfigError::Options(m) => Exit::with(exit::USAGE, m).into(),
    }
}
