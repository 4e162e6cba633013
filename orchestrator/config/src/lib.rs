//! `startup_config.yaml`: reading (v1 and the legacy format), validation
//! with diagnostics that name file, line and column, conversion to v1, and
//! exports to other tools.
//!
//! Architecture invariant: loading is all or nothing. `load_*` returns a
//! `HostConfig` only when the file has no error at all; otherwise every
//! error found is returned, and the caller keeps whatever config it had.

pub mod convert;
pub mod decode;
pub mod diag;
pub mod export;
pub mod fsutil;
pub mod legacy;
pub mod secrets;
pub mod source;
pub mod v1;
pub mod validate;
pub mod yaml;

use std::path::Path;

use orch_core::model::HostConfig;

pub use diag::{Diagnostic, Severity};
pub use legacy::DEFAULT_IMAGE_TEMPLATE;

/// Which format a file was read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    V1,
    Legacy,
}

/// What loading needs beyond the file itself (for legacy files).
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Host name for a legacy file (it names none); by default the name of
    /// the directory holding the file.
    pub host_name: Option<String>,
    /// Value of `${PORT_OFFSET}` in legacy port expressions.
    pub port_offset: i64,
    /// Image for legacy agents that give only a `script_path`.
    pub image_template: String,
    /// Check the secret files on this machine (exist, owner-only mode).
    /// Off only to read a config meant for another machine.
    pub check_files: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            host_name: None,
            port_offset: 0,
            image_template: DEFAULT_IMAGE_TEMPLATE.to_string(),
            check_files: true,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: HostConfig,
    pub format: Format,
    /// Warnings (never errors), sorted by position.
    pub warnings: Vec<Diagnostic>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid: {} error(s)", count_errors(diagnostics))]
    Invalid {
        path: String,
        /// Errors and warnings, sorted by position.
        diagnostics: Vec<Diagnostic>,
        /// The file's text, for rendering snippets.
        source_text: String,
    },
    #[error("{0}")]
    Options(String),
}

fn count_errors(d: &[Diagnostic]) -> usize {
    d.iter().filter(|x| x.severity == Severity::Error).count()
}

impl ConfigError {
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ConfigError::Invalid { diagnostics, .. } => diagnostics,
            _ => &[],
        }
    }
}

/// Reads and validates a config file.
pub fn load_file(path: &Path, opts: &LoadOptions) -> Result<Loaded, ConfigError> {
    let label = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: label.clone(),
        source,
    })?;
    let mut opts = opts.clone();
    if opts.host_name.is_none() {
        opts.host_name = host_name_from_path(path);
    }
    load_str(&label, &text, &opts)
}

/// The directory name holding the file (`config/mainpc/startup_config.yaml` -> `mainpc`).
pub fn host_name_from_path(path: &Path) -> Option<String> {
    let abs = std::path::absolute(path).ok()?;
    let dir = abs.parent()?.file_name()?.to_str()?.to_string();
    source::valid_name(&dir).then_some(dir)
}

/// Reads and validates config text; `label` names it in diagnostics.
pub fn load_str(label: &str, text: &str, opts: &LoadOptions) -> Result<Loaded, ConfigError> {
    legacy::check_image_template(&opts.image_template).map_err(ConfigError::Options)?;
    let mut d = diag::Diagnostics::new(label);
    let invalid = |d: diag::Diagnostics| ConfigError::Invalid {
        path: label.to_string(),
        diagnostics: d.into_sorted(),
        source_text: text.to_string(),
    };
    // A legacy file is read as its own loader read it (a repeated key keeps
    // its last value); anything else is read strictly, as version 1.
    let legacy_doc = yaml::parse_with(text, yaml::DuplicateKeys::LastWins)
        .ok()
        .filter(|doc| legacy::is_legacy(&doc.root));
    let (decoded, format) = match legacy_doc {
        Some(doc) => {
            let host = opts.host_name.clone().unwrap_or_else(|| "legacy".into());
            let lo = legacy::LegacyOptions {
                host_name: host,
                port_offset: opts.port_offset,
                image_template: opts.image_template.clone(),
            };
            (legacy::import(&doc, &lo, &mut d), Format::Legacy)
        }
        None => {
            let root = match yaml::parse(text) {
                Ok(root) => root,
                Err(e) => {
                    let span = yaml::Span {
                        start: e.pos,
                        end: e.pos,
                    };
                    d.error("syntax", span, e.message);
                    return Err(invalid(d));
                }
            };
            if root.as_map().is_none() {
                d.error_help(
                    "not-a-config",
                    root.span,
                    format!("a startup config is a mapping, found {}", root.kind()),
                    "start with `version: 1` (or use a legacy file with `agent_groups` / `pc2_services`)",
                );
                return Err(invalid(d));
            }
            (v1::decode(&root, &mut d), Format::V1)
        }
    };
    if let Some((config, index)) = &decoded {
        validate::check(config, index, &mut d);
        if opts.check_files {
            secrets::check_files(config, index, &mut d);
        }
    }
    match decoded {
        Some((config, _)) if !d.has_errors() => Ok(Loaded {
            config,
            format,
            warnings: d.into_sorted(),
        }),
        _ => Err(invalid(d)),
    }
}
