//! `man`: roff pages. Without `--dir`, the program's page on standard
//! output (`orchestratorctl man | man -l -`); with `--dir DIR`, one page
//! for the program and one per verb, written into DIR.

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::cli::{Cli, ManArgs};

pub fn run(args: &ManArgs) -> Result<()> {
    let cmd = Cli::command();
    let Some(dir) = &args.dir else {
        let mut buf = Vec::new();
        page(&cmd, &["orchestratorctl".to_string()]).render(&mut buf)?;
        return crate::output::write_out(&buf);
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut written = 0;
    write_pages(&cmd, &["orchestratorctl".to_string()], dir, &mut written)?;
    eprintln!("wrote {written} man pages to {}", dir.display());
    Ok(())
}

/// The page of a (sub)command: file and title `orchestratorctl-group-start`,
/// synopsis `orchestratorctl group start`.
fn page(cmd: &clap::Command, words: &[String]) -> clap_mangen::Man {
    let cmd = cmd.clone().name(words.join("-")).bin_name(words.join(" "));
    clap_mangen::Man::new(cmd)
}

fn write_pages(
    cmd: &clap::Command,
    words: &[String],
    dir: &std::path::Path,
    written: &mut usize,
) -> Result<()> {
    let mut buf = Vec::new();
    page(cmd, words).render(&mut buf)?;
    let path = dir.join(format!("{}.1", words.join("-")));
    std::fs::write(&path, buf).with_context(|| format!("cannot write {}", path.display()))?;
    *written += 1;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let mut next = words.to_vec();
        next.push(sub.get_name().to_string());
        write_pages(sub, &next, dir, written)?;
    }
    Ok(())
}
