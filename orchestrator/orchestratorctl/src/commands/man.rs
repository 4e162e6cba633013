//! `man --dir DIR`: one roff page for the program and one per verb.

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::cli::{Cli, ManArgs};

pub fn run(args: &ManArgs) -> Result<()> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let cmd = Cli::command();
    let mut written = 0;
    write_pages(&cmd, "orchestratorctl", args, &mut written)?;
    eprintln!("wrote {written} man pages to {}", args.dir.display());
    Ok(())
}

fn write_pages(cmd: &clap::Command, name: &str, args: &ManArgs, written: &mut usize) -> Result<()> {
    let cmd = cmd.clone().name(name.to_string());
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut buf)?;
    let path = args.dir.join(format!("{name}.1"));
    std::fs::write(&path, buf).with_context(|| format!("cannot write {}", path.display()))?;
    *written += 1;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        write_pages(sub, &format!("{name}-{}", sub.get_name()), args, written)?;
    }
    Ok(())
}
