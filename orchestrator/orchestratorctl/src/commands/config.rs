//! `config validate|show|convert` (`config diff` is in `config_diff.rs`;
//! the loading every verb that reads a config file shares, in `load.rs`).

use std::path::Path;

use anyhow::Result;
use orch_config::{ConfigError, Diagnostic, Format as FileFormat, Severity};
use orch_core::gpu::GpuRequest;
use orch_core::model::HostConfig;
use serde::Serialize;

use crate::cli::{ConfigCmd, LoadArgs};
use crate::exit::{self, Exit};
use crate::output::{Format, Out, Table, print_data};

pub fn run(cmd: &ConfigCmd, client: impl FnOnce() -> orch_api::Client, out: &Out) -> Result<()> {
    match cmd {
        ConfigCmd::Validate {
            files,
            load,
            strict,
        } => validate(files, load, *strict, out),
        ConfigCmd::Show { file, load } => show(file, load, out),
        ConfigCmd::Diff {
            files,
            offline,
            load,
        } => super::config_diff::run(client, files, *offline, load, out),
        ConfigCmd::Convert { file, write, load } => convert(file, write.as_deref(), load, out),
    }
}

#[derive(Serialize)]
struct ValidateReport<'a> {
    file: String,
    valid: bool,
    format: Option<FileFormat>,
    groups: usize,
    agents: usize,
    diagnostics: &'a [Diagnostic],
}

fn validate(files: &[std::path::PathBuf], load: &LoadArgs, strict: bool, out: &Out) -> Result<()> {
    let mut reports = Vec::new();
    let mut all_diags = Vec::new();
    let mut worst = exit::OK;
    for file in files {
        let label = file.display().to_string();
        match orch_config::load_file(file, &load.options()) {
            Ok(l) => {
                let failed = strict && !l.warnings.is_empty();
                if failed {
                    worst = worst.max(exit::INVALID_CONFIG);
                }
                if out.format == Format::Table {
                    let text = std::fs::read_to_string(file).unwrap_or_default();
                    eprint!(
                        "{}",
                        orch_config::diag::render(&l.warnings, &text, out.color_stderr)
                    );
                    let verdict = if failed {
                        out.red("invalid (warnings with --strict)")
                    } else {
                        out.green("valid")
                    };
                    println!(
                        "{label}: {verdict} ({}, {} groups, {} agents, {} warning(s))",
                        match l.format {
                            FileFormat::V1 => "version 1",
                            FileFormat::Legacy => "legacy format",
                        },
                        l.config.groups.len(),
                        l.config.agent_count(),
                        l.warnings.len()
                    );
                }
                reports.push((
                    label,
                    !failed,
                    Some(l.format),
                    l.config.groups.len(),
                    l.config.agent_count(),
                ));
                all_diags.push(l.warnings);
            }
            Err(ConfigError::Invalid {
                diagnostics,
                source_text,
                ..
            }) => {
                worst = worst.max(exit::INVALID_CONFIG);
                let n = diagnostics
                    .iter()
                    .filter(|d| d.severity == Severity::Error)
                    .count();
                if out.format == Format::Table {
                    eprint!(
                        "{}",
                        orch_config::diag::render(&diagnostics, &source_text, out.color_stderr)
                    );
                    println!("{label}: {} ({n} error(s))", out.red("invalid"));
                }
                reports.push((label, false, None, 0, 0));
                all_diags.push(diagnostics);
            }
            Err(e @ ConfigError::Io { .. }) => {
                worst = worst.max(exit::NOT_FOUND);
                if out.format == Format::Table {
                    eprintln!("orchestratorctl: {e}");
                }
                reports.push((label, false, None, 0, 0));
                all_diags.push(Vec::new());
            }
            Err(e) => return Err(super::load::config_error(e, out)),
        }
    }
    if out.format != Format::Table {
        let data: Vec<ValidateReport> = reports
            .into_iter()
            .zip(&all_diags)
            .map(
                |((file, valid, format, groups, agents), diagnostics)| ValidateReport {
                    file,
                    valid,
                    format,
                    groups,
                    agents,
                    diagnostics,
                },
            )
            .collect();
        print_data(out.format, &data)?;
    }
    if worst != exit::OK {
        return Err(Exit::code(worst).into());
    }
    Ok(())
}

/// One line per GPU request chain: `mig 1g.10gb -> mps 4g 20%`.
pub fn describe_gpu(r: &GpuRequest) -> String {
    r.chain()
        .map(|x| x.kind.to_string())
        .collect::<Vec<_>>()
        .join(" -> ")
}

fn show(file: &Path, load_args: &LoadArgs, out: &Out) -> Result<()> {
    let l = super::load::load(file, load_args, out)?;
    let c: &HostConfig = &l.config;
    match out.format {
        Format::Json => print_data(Format::Json, c)?,
        Format::Yaml => print!("{}", orch_config::convert::to_v1_yaml(c)),
        Format::Table => {
            println!(
                "{} {} ({} groups, {} agents)",
                out.bold("host"),
                c.host.name,
                c.groups.len(),
                c.agent_count()
            );
            let mut t = Table::new([
                "GROUP",
                "AGENT",
                "IMAGE",
                "PORTS",
                "HEALTH",
                "GPU",
                "DEPENDS ON",
            ]);
            for g in &c.groups {
                for a in &g.agents {
                    let health = match &a.health.probe {
                        orch_core::model::Probe::None => "-".to_string(),
                        orch_core::model::Probe::Http { port, path } => {
                            format!("http :{port}{path}")
                        }
                        orch_core::model::Probe::Tcp { port } => format!("tcp :{port}"),
                        orch_core::model::Probe::Exec { .. } => "exec".to_string(),
                    };
                    let mut name = a.name.clone();
                    if a.replicas > 1 {
                        name.push_str(&format!(" x{}", a.replicas));
                    }
                    if !a.required {
                        name.push_str(" (optional)");
                    }
                    t.row([
                        g.name.clone(),
                        name,
                        a.image.clone(),
                        a.ports
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(","),
                        health,
                        a.gpu
                            .as_ref()
                            .map(describe_gpu)
                            .unwrap_or_else(|| "-".into()),
                        if a.depends_on.is_empty() {
                            "-".into()
                        } else {
                            a.depends_on.join(",")
                        },
                    ]);
                }
            }
            print!("{}", t.render(out));
        }
    }
    Ok(())
}

fn convert(file: &Path, write: Option<&Path>, load_args: &LoadArgs, out: &Out) -> Result<()> {
    let l = super::load::load(file, load_args, out)?;
    let text =
        crate::output::yaml_file_as(out.format, &orch_config::convert::to_v1_yaml(&l.config))?;
    match write {
        Some(path) => {
            super::write_atomic(path, &text)?;
            eprintln!(
                "wrote {} ({} groups, {} agents, {} warning(s) above)",
                path.display(),
                l.config.groups.len(),
                l.config.agent_count(),
                l.warnings.len()
            );
        }
        None => crate::output::write_out(text.as_bytes())?,
    }
    Ok(())
}
