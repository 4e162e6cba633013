//! `history`: the config generations kept, in words.

use crate::reply::{GenerationChanges, GenerationSource, GenerationView};

/// The columns of the `history` table.
pub const HISTORY_HEADER: [&str; 6] = ["GEN", "APPLIED", "BY", "SOURCE", "OUTCOME", "CHANGES"];

/// The answer of a daemon that keeps no history (its generations
/// directory could not be opened).
pub const HISTORY_UNAVAILABLE: &str =
    "no config history: the daemon could not open its generations directory (see its log)";

/// The table's only line when nothing is kept yet.
pub const NO_HISTORY: &str = "no config generation kept yet";

/// `apply`, `rollback 5 -> 4`.
pub fn generation_source(source: &GenerationSource) -> String {
    match source {
        GenerationSource::Startup => "startup".into(),
        GenerationSource::Apply => "apply".into(),
        GenerationSource::Reload => "reload".into(),
        GenerationSource::Rollback { from, to } => format!("rollback {from} -> {to}"),
        GenerationSource::Undo { from, to } => format!("undo {from} -> {to}"),
    }
}

/// `2 recreated, 1 rescaled`; agents changed but not recreated (their
/// group stopped) count as `changed`; `-` for none.
pub fn generation_changes(c: &GenerationChanges) -> String {
    let only_changed = c
        .changed
        .iter()
        .filter(|a| !c.recreated.contains(a))
        .count();
    let parts: Vec<String> = [
        (c.recreated.len(), "recreated"),
        (c.rescaled.len(), "rescaled"),
        (only_changed, "changed"),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

/// One row of the `history` table, its time written by `time` (the
/// caller's choice of clock and format).
pub fn history_row(g: &GenerationView, time: impl Fn(u64) -> String) -> [String; 6] {
    [
        g.generation.to_string(),
        time(g.unix_ms),
        g.applied_by.clone(),
        generation_source(&g.source),
        g.outcome.label().to_string(),
        generation_changes(&g.changes),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reply::{GenerationOutcome, Rescaled};

    fn changes(changed: &[&str], recreated: &[&str], rescaled: usize) -> GenerationChanges {
        GenerationChanges {
            changed: changed.iter().map(|s| s.to_string()).collect(),
            recreated: recreated.iter().map(|s| s.to_string()).collect(),
            rescaled: (0..rescaled)
                .map(|i| Rescaled {
                    agent: format!("A{i}"),
                    from: 1,
                    to: 2,
                })
                .collect(),
        }
    }

    #[test]
    fn changes_in_words() {
        for (c, want) in [
            (changes(&[], &[], 0), "-"),
            (
                changes(&["a", "b"], &["a", "b"], 1),
                "2 recreated, 1 rescaled",
            ),
            (changes(&["a", "b"], &["a"], 0), "1 recreated, 1 changed"),
            (changes(&[], &[], 2), "2 rescaled"),
        ] {
            assert_eq!(generation_changes(&c), want, "{c:?}");
        }
    }

    #[test]
    fn sources_in_words() {
        for (s, want) in [
            (GenerationSource::Startup, "startup"),
            (GenerationSource::Apply, "apply"),
            (GenerationSource::Reload, "reload"),
            (
                GenerationSource::Rollback { from: 5, to: 4 },
                "rollback 5 -> 4",
            ),
            (GenerationSource::Undo { from: 3, to: 1 }, "undo 3 -> 1"),
        ] {
            assert_eq!(generation_source(&s), want);
        }
    }

    #[test]
    fn a_row_has_every_column() {
        let g = GenerationView {
            generation: 7,
            unix_ms: 1000,
            applied_by: "alice".into(),
            source: GenerationSource::Apply,
            changes: changes(&["a"], &["a"], 0),
            outcome: GenerationOutcome::InProgress,
        };
        let row = history_row(&g, |ms| format!("t{ms}"));
        assert_eq!(
            row,
            ["7", "t1000", "alice", "apply", "in_progress", "1 recreated"]
        );
        assert_eq!(row.len(), HISTORY_HEADER.len());
    }
}
