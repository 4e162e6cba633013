//! `groups`: every group with its state and counts.

use anyhow::Result;
use orch_api::GroupStatus;

use super::daemon::{block_on, fail};
use super::status::groups_table;
use crate::output::{Format, Out, print_data};

pub fn run(client: &orch_api::Client, out: &Out) -> Result<()> {
    let groups: Vec<GroupStatus> = block_on(client.groups())?.map_err(fail)?;
    if out.format != Format::Table {
        return print_data(out.format, &groups);
    }
    print!("{}", groups_table(&groups, out).render(out));
    Ok(())
}
