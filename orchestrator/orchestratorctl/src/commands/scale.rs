//! `scale GROUP/AGENT N` and `scale GROUP/AGENT --reset`.

use anyhow::Result;
use orch_api::Accepted;

use super::agent::resolve;
use super::daemon::{block_on, fail};
use crate::exit::{self, Exit};
use crate::output::{Format, Out, print_data};

/// Sets the count (`None`: the file's). A refusal for want of GPU room is
/// exit code 7, as for `plan`; any other refusal is 1.
pub fn run(
    client: &orch_api::Client,
    target: &str,
    replicas: Option<u32>,
    out: &Out,
) -> Result<()> {
    let (group, agent) = resolve(client, target)?;
    let a: Accepted = block_on(client.scale(&group, &agent, replicas))?.map_err(|e| {
        let unplaceable = matches!(&e, orch_api::ClientError::Api(api)
            if api.code == orch_api::ErrorCode::Conflict && !api.details.is_empty());
        let err = fail(e);
        match err.downcast::<Exit>() {
            Ok(mut x) if unplaceable => {
                x.code = exit::UNSATISFIABLE;
                x.into()
            }
            Ok(x) => x.into(),
            Err(err) => err,
        }
    })?;
    if out.format != Format::Table {
        return print_data(out.format, &a);
    }
    eprintln!("{}", a.message);
    Ok(())
}
