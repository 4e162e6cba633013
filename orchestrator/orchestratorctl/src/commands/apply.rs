//! `apply FILE` (install a new config on the daemon and apply it) and
//! `reload` (re-read the daemon's config file).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use orch_api::Applied;

use super::daemon::{block_on, fail};
use crate::cli::LoadArgs;
use crate::exit::{self, Exit};
use crate::output::Out;

pub fn apply(
    client: &orch_api::Client,
    file: &Path,
    load: &LoadArgs,
    force: bool,
    wait: Option<Duration>,
    out: &Out,
) -> Result<()> {
    // Checked here first, so mistakes show with their source lines.
    super::load::load(file, load, out)?;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let applied: Applied =
        block_on(client.apply_with(&file.display().to_string(), &text, force))?.map_err(refused)?;
    super::rollout::show_applied(&applied, out)?;
    match wait {
        Some(timeout) => super::rollout::wait_applied(client, &applied, timeout),
        None => Ok(()),
    }
}

/// `apply --all-hosts DIR`: each host's `DIR/<HOST>/startup_config.yaml`,
/// this host first and then its peers by name, each rolled out and waited
/// for before the next; the first host whose rollout does not complete
/// stops the rest (its exit code is the command's).
pub fn apply_all_hosts(
    client: &orch_api::Client,
    dir: &Path,
    load: &LoadArgs,
    force: bool,
    timeout: Duration,
    out: &Out,
) -> Result<()> {
    if !dir.is_dir() {
        return Err(Exit::with(
            exit::USAGE,
            format!(
                "{}: --all-hosts takes a directory holding HOST/startup_config.yaml for each host",
                dir.display()
            ),
        )
        .into());
    }
    let status = block_on(client.status())?.map_err(fail)?;
    let mut peers: Vec<String> = block_on(client.peers())?
        .map_err(fail)?
        .into_iter()
        .map(|p| p.name)
        .collect();
    peers.sort();
    let hosts = std::iter::once(status.host.clone()).chain(peers);
    let mut done = Vec::new();
    for host in hosts {
        let file = dir.join(&host).join("startup_config.yaml");
        if !file.is_file() {
            eprintln!("{host}: no {}; skipped", file.display());
            continue;
        }
        eprintln!("{host}: applying {}", file.display());
        let c = client.clone().for_host(Some(host.clone()));
        if let Err(e) = apply(&c, &file, load, force, Some(timeout), out) {
            let stopped = if done.is_empty() {
                format!("{host}: {e:#}; no other host was changed")
            } else {
                format!(
                    "{host}: {e:#}; stopped there (rolled out: {})",
                    done.join(", ")
                )
            };
            return Err(match e.downcast::<Exit>() {
                Ok(x) => Exit::with(x.code, stopped).into(),
                Err(_) => Exit::with(exit::FAILED, stopped).into(),
            });
        }
        done.push(host);
    }
    println!("rolled out on {}", done.join(", "));
    Ok(())
}

/// An apply's refusal: a GPU request that cannot be placed or an image
/// that is not on the host (the only conflicts an apply meets) is exit
/// code 7, as for `plan`.
fn refused(e: orch_api::ClientError) -> anyhow::Error {
    let unplaceable =
        matches!(&e, orch_api::ClientError::Api(api) if api.code == orch_api::ErrorCode::Conflict);
    let err = fail(e);
    if !unplaceable {
        return err;
    }
    match err.downcast::<Exit>() {
        Ok(mut x) => {
            x.code = exit::UNSATISFIABLE;
            x.into()
        }
        Err(err) => err,
    }
}

pub fn reload(client: &orch_api::Client, out: &Out) -> Result<()> {
    let applied: Applied = block_on(client.reload())?.map_err(fail)?;
    super::rollout::show_applied(&applied, out)
}
