//! `completion SHELL`: a completion script on standard output.

use clap::CommandFactory;

use crate::cli::{Cli, CompletionArgs};

pub fn run(args: &CompletionArgs) -> anyhow::Result<()> {
    let mut cmd = Cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "orchestratorctl", &mut buf);
    crate::output::write_out(&buf)
}
