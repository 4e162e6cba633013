//! `export compose|k8s FILE [--group G]...`: the config for other tools,
//! as YAML (`-o json`: the same documents as JSON).

use anyhow::Result;
use orch_config::export::{ExportError, compose, k8s};

use crate::cli::{ExportArgs, ExportCmd};
use crate::exit::{self, Exit};
use crate::output::Out;

pub fn run(cmd: &ExportCmd, out: &Out) -> Result<()> {
    let (args, text) = match cmd {
        ExportCmd::Compose(args) => {
            let l = super::load::load(&args.file, &args.load, out)?;
            let opts = compose::ComposeOptions {
                groups: args.groups.clone(),
                source: Some(args.file.display().to_string()),
                ..compose::ComposeOptions::default()
            };
            (
                args,
                compose::render(&l.config, &opts).map_err(export_error)?,
            )
        }
        ExportCmd::K8s(args) => {
            let l = super::load::load(&args.file, &args.load, out)?;
            let opts = k8s::K8sOptions {
                groups: args.groups.clone(),
                source: Some(args.file.display().to_string()),
                ..k8s::K8sOptions::default()
            };
            (args, k8s::render(&l.config, &opts).map_err(export_error)?)
        }
    };
    write(args, &crate::output::yaml_file_as(out.format, &text)?)
}

fn export_error(e: ExportError) -> anyhow::Error {
    let code = match e {
        ExportError::UnknownGroup { .. } => exit::NOT_FOUND,
        _ => exit::FAILED,
    };
    Exit::with(code, e.to_string()).into()
}

fn write(args: &ExportArgs, text: &str) -> Result<()> {
    match &args.write {
        Some(path) => {
            super::write_atomic(path, text)?;
            eprintln!("wrote {}", path.display());
        }
        None => crate::output::write_out(text.as_bytes())?,
    }
    Ok(())
}
