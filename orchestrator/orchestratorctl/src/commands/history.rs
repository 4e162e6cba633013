//! `history`: the config generations the daemon keeps, newest first:
//! who applied each, how, what it changed and how its rollout ended.

use anyhow::Result;
use orch_api::GenerationView;
use orch_api::text::{HISTORY_HEADER, NO_HISTORY, history_row};

use super::daemon::{block_on, fail};
use super::events::timestamp;
use crate::output::{Format, Out, Table, print_data};

pub fn run(client: &orch_api::Client, out: &Out) -> Result<()> {
    let generations: Vec<GenerationView> = block_on(client.history())?.map_err(fail)?;
    if out.format != Format::Table {
        return print_data(out.format, &generations);
    }
    print!("{}", render(&generations, out));
    Ok(())
}

/// The table, or a line saying nothing is kept yet.
fn render(generations: &[GenerationView], out: &Out) -> String {
    if generations.is_empty() {
        return format!("{NO_HISTORY}\n");
    }
    let mut t = Table::new(HISTORY_HEADER);
    for g in generations {
        t.row(history_row(g, timestamp));
    }
    t.render(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use orch_api::{GenerationChanges, GenerationOutcome, GenerationSource, Rescaled};

    #[test]
    fn the_table_shows_each_generation_newest_first() {
        let out = Out {
            format: Format::Table,
            color: false,
            color_stderr: false,
        };
        let g = |generation, source, applied_by: &str, changes, outcome| GenerationView {
            generation,
            unix_ms: 1_796_193_774_123 + generation * 60_000,
            applied_by: applied_by.into(),
            source,
            changes,
            outcome,
        };
        let rows = [
            g(
                3,
                GenerationSource::Rollback { from: 2, to: 1 },
                "orchestratord",
                GenerationChanges {
                    changed: vec!["Api".into()],
                    recreated: vec!["Api".into()],
                    rescaled: Vec::new(),
                },
                GenerationOutcome::InProgress,
            ),
            g(
                2,
                GenerationSource::Apply,
                "alice",
                GenerationChanges {
                    changed: vec!["Api".into(), "Eyes".into()],
                    recreated: vec!["Api".into(), "Eyes".into()],
                    rescaled: vec![Rescaled {
                        agent: "Worker".into(),
                        from: 1,
                        to: 3,
                    }],
                },
                GenerationOutcome::RolledBack,
            ),
            g(
                1,
                GenerationSource::Startup,
                "startup",
                GenerationChanges::default(),
                GenerationOutcome::Completed,
            ),
        ];
        let table = render(&rows, &out);
        let lines: Vec<&str> = table.lines().map(str::trim_end).collect();
        assert_eq!(
            lines,
            [
                "GEN  APPLIED                   BY             SOURCE           OUTCOME      CHANGES",
                "3    2026-12-02T06:45:54.123Z  orchestratord  rollback 2 -> 1  in_progress  1 recreated",
                "2    2026-12-02T06:44:54.123Z  alice          apply            rolled_back  2 recreated, 1 rescaled",
                "1    2026-12-02T06:43:54.123Z  startup        startup          completed    -",
            ]
        );
        assert_eq!(render(&[], &out), format!("{NO_HISTORY}\n"));
    }
}
