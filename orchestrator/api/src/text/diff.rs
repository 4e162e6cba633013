//! A [`DiffReport`] in words: one line per changed setting, one per
//! agent saying what happens to its containers, one per count set at run
//! time.

use crate::diff::{
    AgentDiff, CountAfterApply, CountSetBy, DiffReport, Effect, EntryChange, Field, FieldChange,
    GroupDiff, RunTimeCount,
};

use super::plural;

/// A setting's name as an operator reads it.
pub fn field_name(f: Field) -> &'static str {
    match f {
        Field::Description => "description",
        Field::Slo => "slo",
        Field::Rollout => "rollout",
        Field::MinHealthy => "min_healthy",
        Field::Group => "group",
        Field::Image => "image",
        Field::Command => "command",
        Field::Env => "env",
        Field::Ports => "ports",
        Field::Volumes => "volumes",
        Field::DependsOn => "depends_on",
        Field::Gpu => "GPU request",
        Field::GpuOverLimit => "GPU over limit",
        Field::Restart => "restart",
        Field::Health => "health",
        Field::Resources => "resources",
        Field::Security => "security",
        Field::Replicas => "replicas",
        Field::Required => "required",
        Field::Labels => "label",
        Field::StopTimeout => "stop_timeout",
        Field::Config => "config",
        Field::ScriptPath => "script_path",
        Field::Secrets => "secrets",
        Field::Autoscale => "autoscale",
    }
}

/// One changed setting: `image a:1 -> a:2`, `env FOO added`,
/// `label team: a -> b`, `GPU request none -> exclusive`.
pub fn field_change(c: &FieldChange) -> String {
    let name = field_name(c.field);
    let value = |v: &Option<String>| v.clone().unwrap_or_else(|| "none".to_string());
    match (&c.key, c.entry) {
        (Some(key), Some(entry)) => {
            let what = match entry {
                EntryChange::Added => "added",
                EntryChange::Removed => "removed",
                EntryChange::Changed => "changed",
            };
            match (&c.old, &c.new) {
                (Some(old), Some(new)) => format!("{name} {key} {what}: {old} -> {new}"),
                (None, Some(new)) => format!("{name} {key} {what}: {new}"),
                _ => format!("{name} {key} {what}"),
            }
        }
        _ => format!("{name} {} -> {}", value(&c.old), value(&c.new)),
    }
}

/// What a change does to an agent's containers.
pub fn effect(e: Effect) -> String {
    let count = |old: u32, new: u32| match new.cmp(&old) {
        std::cmp::Ordering::Greater => {
            format!("{} started", plural(new - old, "replica", "replicas"))
        }
        std::cmp::Ordering::Less => format!("{} stopped", plural(old - new, "replica", "replicas")),
        std::cmp::Ordering::Equal => format!("stays at {}", plural(new, "replica", "replicas")),
    };
    match e {
        Effect::Recreate {
            old_replicas,
            new_replicas,
        } if old_replicas == new_replicas => "recreated, one replica at a time".to_string(),
        Effect::Recreate {
            old_replicas,
            new_replicas,
        } => format!(
            "recreated, one replica at a time; {}",
            count(old_replicas, new_replicas)
        ),
        Effect::Scale { old, new } => count(old, new),
        Effect::InPlace => "settings applied in place".to_string(),
    }
}

/// A count set at run time and what the apply does to it.
pub fn run_time_count(c: &RunTimeCount) -> String {
    let by = match c.set_by {
        CountSetBy::Scale => "scale",
        CountSetBy::Autoscaler => "its autoscaler",
    };
    let then = match c.after_apply {
        CountAfterApply::Kept => "the apply keeps it".to_string(),
        CountAfterApply::Replaced { replicas } => {
            format!("the apply replaces it with the file's {replicas}")
        }
        CountAfterApply::Removed => "the apply removes the agent".to_string(),
    };
    format!(
        "{}: runs {} set by {by} (file: {}); {then}",
        c.agent,
        plural(c.running, "replica", "replicas"),
        c.file_replicas
    )
}

/// The whole report, one line each: groups, agents (their settings, then
/// what happens to their containers), counts set at run time.
pub fn diff_lines(r: &DiffReport) -> Vec<String> {
    let mut out = Vec::new();
    for g in &r.groups {
        match g {
            GroupDiff::Added { group } => out.push(format!("group {group}: added")),
            GroupDiff::Removed { group } => out.push(format!("group {group}: removed")),
            GroupDiff::Changed { group, changes } => {
                for c in changes {
                    out.push(format!("group {group}: {}", field_change(c)));
                }
            }
        }
    }
    for a in &r.agents {
        match a {
            AgentDiff::Added {
                agent,
                group,
                replicas,
            } => out.push(format!(
                "{agent}: added in group {group}, {} started",
                plural(*replicas, "replica", "replicas")
            )),
            AgentDiff::Removed {
                agent,
                group,
                replicas,
            } => out.push(format!(
                "{agent}: removed from group {group}, {} stopped",
                plural(*replicas, "replica", "replicas")
            )),
            AgentDiff::Changed {
                agent,
                changes,
                effect: e,
                ..
            } => {
                for c in changes {
                    out.push(format!("{agent}: {}", field_change(c)));
                }
                out.push(format!("{agent}: {}", effect(*e)));
            }
        }
    }
    for c in &r.run_time_counts {
        out.push(run_time_count(c));
    }
    out
}

/// The one line a report without changes gets.
pub fn no_changes(r: &DiffReport) -> String {
    format!("no changes: {} matches {}", r.to, r.from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(field: Field, old: Option<&str>, new: Option<&str>) -> FieldChange {
        FieldChange {
            field,
            key: None,
            entry: None,
            old: old.map(str::to_string),
            new: new.map(str::to_string),
        }
    }

    fn entry(
        field: Field,
        key: &str,
        e: EntryChange,
        old: Option<&str>,
        new: Option<&str>,
    ) -> FieldChange {
        FieldChange {
            key: Some(key.to_string()),
            entry: Some(e),
            ..value(field, old, new)
        }
    }

    #[test]
    fn each_change_is_one_line() {
        let table = [
            (
                value(Field::Image, Some("a:1"), Some("a:2")),
                "image a:1 -> a:2",
            ),
            (
                value(Field::Replicas, Some("1"), Some("2")),
                "replicas 1 -> 2",
            ),
            (
                value(Field::Ports, Some("8080:80/tcp"), Some("8081:80/tcp")),
                "ports 8080:80/tcp -> 8081:80/tcp",
            ),
            (
                value(Field::Gpu, None, Some("exclusive")),
                "GPU request none -> exclusive",
            ),
            (
                value(Field::Command, Some("run"), None),
                "command run -> none",
            ),
            (
                entry(Field::Env, "FOO", EntryChange::Added, None, None),
                "env FOO added",
            ),
            (
                entry(Field::Env, "FOO", EntryChange::Changed, None, None),
                "env FOO changed",
            ),
            (
                entry(Field::Env, "FOO", EntryChange::Removed, None, None),
                "env FOO removed",
            ),
            (
                entry(
                    Field::Labels,
                    "team",
                    EntryChange::Changed,
                    Some("a"),
                    Some("b"),
                ),
                "label team changed: a -> b",
            ),
            (
                entry(Field::Labels, "team", EntryChange::Added, None, Some("a")),
                "label team added: a",
            ),
        ];
        for (change, want) in table {
            assert_eq!(field_change(&change), want);
        }
    }

    #[test]
    fn effects_say_what_happens_to_containers() {
        let table = [
            (
                Effect::Recreate {
                    old_replicas: 2,
                    new_replicas: 2,
                },
                "recreated, one replica at a time",
            ),
            (
                Effect::Recreate {
                    old_replicas: 1,
                    new_replicas: 3,
                },
                "recreated, one replica at a time; 2 replicas started",
            ),
            (Effect::Scale { old: 1, new: 3 }, "2 replicas started"),
            (Effect::Scale { old: 3, new: 2 }, "1 replica stopped"),
            (Effect::Scale { old: 5, new: 5 }, "stays at 5 replicas"),
            (Effect::InPlace, "settings applied in place"),
        ];
        for (e, want) in table {
            assert_eq!(effect(e), want);
        }
    }

    #[test]
    fn a_report_reads_group_agent_then_counts() {
        let r = DiffReport {
            host: "h".into(),
            from: "running config".into(),
            to: "c.yaml".into(),
            groups: vec![GroupDiff::Added { group: "g2".into() }],
            agents: vec![
                AgentDiff::Changed {
                    agent: "Worker".into(),
                    group: "g".into(),
                    changes: vec![value(Field::Replicas, Some("3"), Some("2"))],
                    effect: Effect::Scale { old: 3, new: 2 },
                },
                AgentDiff::Added {
                    agent: "New".into(),
                    group: "g2".into(),
                    replicas: 1,
                },
                AgentDiff::Removed {
                    agent: "Old".into(),
                    group: "g".into(),
                    replicas: 2,
                },
            ],
            run_time_counts: vec![
                RunTimeCount {
                    agent: "Api".into(),
                    group: "g".into(),
                    running: 5,
                    file_replicas: 2,
                    set_by: CountSetBy::Autoscaler,
                    after_apply: CountAfterApply::Kept,
                },
                RunTimeCount {
                    agent: "Web".into(),
                    group: "g".into(),
                    running: 4,
                    file_replicas: 1,
                    set_by: CountSetBy::Scale,
                    after_apply: CountAfterApply::Replaced { replicas: 2 },
                },
            ],
        };
        assert_eq!(
            diff_lines(&r),
            [
                "group g2: added",
                "Worker: replicas 3 -> 2",
                "Worker: 1 replica stopped",
                "New: added in group g2, 1 replica started",
                "Old: removed from group g, 2 replicas stopped",
                "Api: runs 5 replicas set by its autoscaler (file: 2); the apply keeps it",
                "Web: runs 4 replicas set by scale (file: 1); the apply replaces it with the file's 2",
            ]
        );
        assert!(r.has_changes());
        let quiet = DiffReport {
            groups: vec![],
            agents: vec![],
            run_time_counts: vec![r.run_time_counts[0].clone()],
            ..r
        };
        assert!(!quiet.has_changes(), "a kept count changes nothing");
        assert_eq!(
            no_changes(&quiet),
            "no changes: c.yaml matches running config"
        );
    }
}
