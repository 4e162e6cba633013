//! `orchestratorctl`: the operator's CLI.

mod cli;
mod commands;
mod exit;
mod output;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::output::Out;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    let out = Out::new(cli.output, cli.color);
    match run(&cli, &out) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(err) => match err.downcast_ref::<exit::Exit>() {
            Some(e) => {
                if let Some(m) = &e.message {
                    eprintln!("orchestratorctl: {m}");
                }
                exit::to_exit_code(e.code)
            }
            None => {
                eprintln!("orchestratorctl: {err:#}");
                ExitCode::from(exit::FAILED)
            }
        },
    }
}

fn run(cli: &Cli, out: &Out) -> anyhow::Result<()> {
    let all_hosts = match &cli.command {
        Command::Status { fleet } | Command::Groups { fleet } => fleet.all_hosts,
        Command::Agents { fleet, .. } | Command::Gpu { fleet, .. } => fleet.all_hosts,
        Command::Slo { fleet, .. } => fleet.all_hosts,
        _ => false,
    };
    if all_hosts && cli.host.is_some() {
        return Err(exit::Exit::with(
            exit::USAGE,
            "--all-hosts shows every host already; it does not go with --host",
        )
        .into());
    }
    let client = || {
        commands::daemon::client(
            cli.socket.as_ref(),
            cli.config.as_ref(),
            cli.host.as_deref(),
        )
    };
    match &cli.command {
        Command::Status { fleet } if fleet.all_hosts => {
            commands::fleet::run(&client(), commands::fleet::View::Status, out)
        }
        Command::Status { .. } => commands::status::run(&client(), out),
        Command::Groups { fleet } if fleet.all_hosts => {
            commands::fleet::run(&client(), commands::fleet::View::Groups, out)
        }
        Command::Groups { .. } => commands::groups::run(&client(), out),
        Command::Group(cmd) => commands::group::run(&client(), cmd, out),
        Command::Agents { group, fleet } if fleet.all_hosts => {
            commands::fleet::run(&client(), commands::fleet::View::Agents(group.clone()), out)
        }
        Command::Agents { group, .. } => commands::agents::run(&client(), group.as_deref(), out),
        Command::Peers => commands::peers::run(&client(), out),
        Command::Keys(cli::KeysCmd::Generate { host, out: dir }) => {
            commands::keys::generate(host, dir, out)
        }
        Command::Keys(cli::KeysCmd::Rotate { host, dir }) => commands::keys::rotate(host, dir, out),
        Command::Agent(cli::AgentCmd::Restart { target }) => {
            commands::agent::restart(&client(), target, out)
        }
        Command::Logs {
            target,
            follow,
            tail,
            replica,
        } => commands::logs::run(&client(), target, *follow, *tail, *replica),
        Command::Events { follow, since } => commands::events::run(&client(), *follow, *since, out),
        Command::Apply { file, load } => commands::apply::apply(&client(), file, load, out),
        Command::Reload => commands::apply::reload(&client(), out),
        Command::Gpu {
            command: None,
            fleet,
            ..
        } if fleet.all_hosts => commands::fleet::run(&client(), commands::fleet::View::Gpu, out),
        Command::Gpu {
            command: None,
            nvml,
            ..
        } => commands::gpu::show(&client(), nvml.as_deref(), out),
        Command::Gpu {
            command: Some(cli::GpuCmd::Mig { action }),
            nvml,
            ..
        } => {
            let (args, enable) = match action {
                cli::MigAction::Enable(a) => (a, true),
                cli::MigAction::Disable(a) => (a, false),
            };
            commands::gpu::mig(&client(), nvml.as_deref(), args.gpu, enable, args.yes, out)
        }
        Command::Plan {
            file,
            offline,
            load,
        } => commands::plan::run(&client(), file, load, *offline, out),
        Command::Slo { group, fleet } if fleet.all_hosts => {
            commands::fleet::run(&client(), commands::fleet::View::Slo(group.clone()), out)
        }
        Command::Slo { group, .. } => commands::slo::run(&client(), group.as_deref(), out),
        Command::Config(cmd) => commands::config::run(cmd, out),
        Command::Export(cmd) => commands::export::run(cmd, out),
        Command::State(cli::StateCmd::Export) => commands::state::export(&client()),
        Command::State(cli::StateCmd::Import { file }) => {
            commands::state::import(&client(), file, out)
        }
        Command::Completion(args) => {
            commands::completion::run(args);
            Ok(())
        }
        Command::Man(args) => commands::man::run(args),
    }
}
