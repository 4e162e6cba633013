//! `completion SHELL`: a completion script on standard output.

use clap::CommandFactory;

use crate::cli::{Cli, CompletionArgs};

pub fn run(args: &CompletionArgs) {
    let mut cmd = Cli::command();
    clap_complete::generate(
        args.shell,
        &mut cmd,
        "orchestratorctl",
        &mut std::io::stdout(),
    );
}
