//! Secrets: the host's `secrets:` map (name -> file on the host) and each
//! agent's `secrets: [NAME]`. Decoding and references are pure; the file
//! checks ([`check_files`]) stat the files named, and never read them: a
//! secret's value is read by the agent alone, from its mount.

use std::collections::BTreeMap;

use orch_core::model::{HostConfig, SecretMount, valid_secret_name};

use crate::decode::{self as de, MapReader};
use crate::diag::{Diagnostics, closest};
use crate::source::{SecretSource, SourceIndex};
use crate::yaml::Node;

/// `secrets: {HF_TOKEN: /etc/orchestrator/secrets/hf_token}`.
pub(crate) fn decode_host(
    node: &Node,
    index: &mut SourceIndex,
    d: &mut Diagnostics,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(mut m) = MapReader::new(node, "`secrets`", d) else {
        return out;
    };
    for (k, v) in m.rest() {
        let name = k.as_str().unwrap_or("~").to_string();
        if !valid_secret_name(&name) {
            d.error_help(
                "secret-name",
                k.span,
                format!("`{name}` is not a valid secret name"),
                "use letters, digits and `_`, not starting with a digit or `ORCH_`: the agent finds it as `<NAME>_FILE`",
            );
            continue;
        }
        let Some(path) = de::name(v, &format!("the file of secret `{name}`"), d) else {
            continue;
        };
        if !path.starts_with('/') {
            d.error_help(
                "path",
                v.span,
                format!("the file of secret `{name}` must be an absolute path, found `{path}`"),
                "start it with `/`",
            );
            continue;
        }
        index.secrets.push(SecretSource {
            name: name.clone(),
            key: k.span,
            path: v.span,
        });
        out.insert(name, path);
    }
    m.finish(d);
    out
}

/// Gives each agent the files of the secrets it names; reports names the
/// host does not define, names given twice, and `<NAME>_FILE` variables
/// the agent's own `env` already sets.
pub(crate) fn resolve(config: &mut HostConfig, index: &SourceIndex, d: &mut Diagnostics) {
    let defined = config.secrets.clone();
    for group in &mut config.groups {
        for agent in &mut group.agents {
            let Some(src) = index.agent(&agent.name) else {
                continue;
            };
            let mut mounts: Vec<SecretMount> = Vec::new();
            for (name, span) in &src.secrets {
                let Some(source) = defined.get(name) else {
                    let hint = match closest(name, defined.keys().map(String::as_str)) {
                        Some(c) => format!("did you mean `{c}`?"),
                        None => format!(
                            "define it in the top-level `secrets:` map, e.g. `{name}: /etc/orchestrator/secrets/{}`",
                            name.to_lowercase()
                        ),
                    };
                    d.error_help(
                        "unknown-secret",
                        *span,
                        format!(
                            "agent `{}` uses secret `{name}`, which this host does not define",
                            agent.name
                        ),
                        hint,
                    );
                    continue;
                };
                if mounts.iter().any(|m| &m.name == name) {
                    d.error_help(
                        "duplicate-secret",
                        *span,
                        format!("agent `{}` names secret `{name}` twice", agent.name),
                        "remove one",
                    );
                    continue;
                }
                let mount = SecretMount {
                    name: name.clone(),
                    source: source.clone(),
                };
                if agent.env.contains_key(&mount.env_name()) {
                    d.error_help(
                        "secret-env",
                        *span,
                        format!(
                            "agent `{}` sets `{}` in `env`, which secret `{name}` provides",
                            agent.name,
                            mount.env_name()
                        ),
                        "remove the variable from `env`",
                    );
                    continue;
                }
                mounts.push(mount);
            }
            agent.secrets = mounts;
        }
    }
}

/// Checks the secret files on this machine: each must exist, be a regular
/// file, and be readable by its owner only (no group or world bits), as a
/// key file should. Only metadata is read.
pub fn check_files(config: &HostConfig, index: &SourceIndex, d: &mut Diagnostics) {
    use std::os::unix::fs::PermissionsExt;
    for (name, path) in &config.secrets {
        let Some(span) = index
            .secrets
            .iter()
            .find(|s| &s.name == name)
            .map(|s| s.path)
        else {
            continue;
        };
        match std::fs::metadata(path) {
            Err(e) => d.error_help(
                "secret-file",
                span,
                format!("secret `{name}`: cannot use {path}: {e}"),
                format!("create it readable by its owner only: `install -m 600 /dev/null {path}`, then write the value"),
            ),
            Ok(meta) if !meta.is_file() => d.error_help(
                "secret-file",
                span,
                format!("secret `{name}`: {path} is not a regular file"),
                "name the file that holds the value",
            ),
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    d.error_help(
                        "secret-mode",
                        span,
                        format!(
                            "secret `{name}`: {path} is readable or writable by its group or others (mode {mode:03o})"
                        ),
                        format!("`chmod 600 {path}`"),
                    );
                }
            }
        }
    }
}
