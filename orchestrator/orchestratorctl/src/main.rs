//! `orchestratorctl`: the operator's CLI.

mod cli;
mod commands;
mod exit;
mod output;
mod top;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, RolloutCmd};
use crate::output::Out;

fn main() -> ExitCode {
    quiet_on_closed_pipe();
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

/// A reader that goes away (`orchestratorctl agents | head -1`) ends the
/// command with exit 0 and no message, from wherever it printed: streams
/// write through `output::write_out`, and `print!`'s panic is caught here.
fn quiet_on_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if output::is_closed_pipe_panic(message) {
            std::process::exit(i32::from(exit::OK));
        }
        default(info);
    }));
}

fn run(cli: &Cli, out: &Out) -> anyhow::Result<()> {
    let all_hosts = match &cli.command {
        Command::Status { fleet } | Command::Groups { fleet } => fleet.all_hosts,
        Command::Agents { fleet, .. } | Command::Gpu { fleet, .. } => fleet.all_hosts,
        Command::Slo { fleet, .. } => fleet.all_hosts,
        Command::Top { all_hosts, .. } => *all_hosts,
        Command::Events { all_hosts, .. } | Command::Plan { all_hosts, .. } => *all_hosts,
        Command::Apply { all_hosts, .. } => *all_hosts,
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
        Command::Top {
            all_hosts,
            sort,
            interval,
            once,
        } => commands::top::run(
            &client(),
            &commands::top::Ask {
                all_hosts: *all_hosts,
                order: top::model::Order {
                    key: *sort,
                    reverse: false,
                },
                interval: *interval,
                once: *once,
            },
            out,
        ),
        Command::Peers => commands::peers::run(&client(), out),
        Command::History => commands::history::run(&client(), out),
        Command::Keys(cli::KeysCmd::Generate { host, out: dir }) => {
            commands::keys::generate(host, dir, out)
        }
        Command::Keys(cli::KeysCmd::Rotate { host, dir }) => commands::keys::rotate(host, dir, out),
        Command::Agent(cli::AgentCmd::Restart { target }) => {
            commands::agent::restart(&client(), target, out)
        }
        Command::Scale {
            target, replicas, ..
        } => commands::scale::run(&client(), target, *replicas, out),
        Command::Logs {
            target,
            follow,
            tail,
            replica,
            since,
            timestamps,
        } => commands::logs::run(
            &client(),
            &commands::logs::Ask {
                target: target.clone(),
                follow: *follow,
                tail: *tail,
                replica: *replica,
                since: since.clone(),
                timestamps: *timestamps,
            },
            out,
        ),
        Command::Events {
            follow,
            since,
            all_hosts,
            group,
            agent,
            kind,
        } => commands::events::run(
            &client(),
            &commands::events::Ask {
                follow: *follow,
                since: *since,
                all_hosts: *all_hosts,
                filter: orch_api::wire::EventFilter {
                    group: group.clone(),
                    agent: agent.clone(),
                    kinds: kind.clone(),
                },
            },
            out,
        ),
        Command::Apply {
            file,
            load,
            force,
            wait,
            timeout,
            all_hosts,
        } => {
            let waited = (*wait || timeout.is_some() || *all_hosts)
                .then(|| timeout.unwrap_or(commands::rollout::DEFAULT_TIMEOUT));
            match waited {
                Some(t) if *all_hosts => {
                    commands::apply::apply_all_hosts(&client(), file, load, *force, t, out)
                }
                _ => commands::apply::apply(&client(), file, load, *force, waited, out),
            }
        }
        Command::Rollout(cmd) => {
            let waited = |wait: bool, timeout: &Option<std::time::Duration>| {
                (wait || timeout.is_some())
                    .then(|| timeout.unwrap_or(commands::rollout::DEFAULT_TIMEOUT))
            };
            match cmd {
                RolloutCmd::Status { wait, timeout } => {
                    commands::rollout::status(&client(), waited(*wait, timeout), out)
                }
                RolloutCmd::Pause => commands::rollout::pause(&client(), out),
                RolloutCmd::Resume => commands::rollout::resume(&client(), out),
                RolloutCmd::Undo { to, wait, timeout } => {
                    commands::rollout::undo(&client(), *to, waited(*wait, timeout), out)
                }
            }
        }
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
            all_hosts: true,
            agent,
            load,
            ..
        } => commands::plan::fleet(&client(), file.as_deref(), agent.as_deref(), load, out),
        Command::Plan {
            file: Some(file),
            offline,
            load,
            ..
        } => commands::plan::run(&client(), file, load, *offline, out),
        Command::Plan { file: None, .. } => Err(exit::Exit::with(
            exit::USAGE,
            "plan needs a config file (or --all-hosts, to place the running config)",
        )
        .into()),
        Command::Slo { group, fleet } if fleet.all_hosts => {
            commands::fleet::run(&client(), commands::fleet::View::Slo(group.clone()), out)
        }
        Command::Slo { group, .. } => commands::slo::run(&client(), group.as_deref(), out),
        Command::Config(cmd) => commands::config::run(cmd, client, out),
        Command::Export(cmd) => commands::export::run(cmd, out),
        Command::State(cli::StateCmd::Export) => commands::state::export(&client(), out),
        Command::State(cli::StateCmd::Import { file }) => {
            commands::state::import(&client(), file, out)
        }
        Command::Completion(args) => commands::completion::run(args),
        Command::Man(args) => commands::man::run(args),
    }
}
