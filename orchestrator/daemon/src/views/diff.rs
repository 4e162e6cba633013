//! `config diff`: what applying a config would change on this host, from
//! the running config and the counts set at run time. Pure: the config to
//! compare comes parsed (from a request's text, or the file on disk as
//! `reload` would read it).

use orch_api::diff::{AgentDiff, CountAfterApply, CountSetBy, DiffReport, Effect, RunTimeCount};
use orch_api::{Rejection, convert};
use orch_core::model::HostConfig;
use orch_core::supervise::Supervisor;

/// What is compared against: the config the daemon runs.
pub const RUNNING: &str = "running config";

/// The difference from the running config to `new` (the text of
/// `file_name`), the counts set at run time included: a count the apply
/// keeps is reported as kept, and the effects of a changed agent count
/// from the replicas that run, not from the file's old count.
pub fn config_diff(
    sup: &Supervisor,
    file_name: &str,
    new: &HostConfig,
) -> Result<DiffReport, Rejection> {
    let running = sup.config();
    if new.host.name != running.host.name {
        return Err(Rejection::DiffOfOtherHost {
            file_name: file_name.to_string(),
            config_host: new.host.name.clone(),
            daemon_host: running.host.name.clone(),
        });
    }
    let (groups, mut agents) = convert::config_diff(&orch_core::diff::diff(running, new));
    let mut run_time_counts = Vec::new();
    for a in running.agents() {
        let Some(count) = sup.scaled(&a.name) else {
            continue;
        };
        let after_apply = match new.agent(&a.name) {
            None => CountAfterApply::Removed,
            // INVARIANT: as `Supervisor::reload` decides: the count set at
            // run time holds while the file's count stays what it was.
            Some(n) if n.replicas == a.replicas => CountAfterApply::Kept,
            Some(n) => CountAfterApply::Replaced {
                replicas: n.replicas,
            },
        };
        if let Some(entry) = agents.iter_mut().find(|d| d.agent() == a.name) {
            from_running(entry, count, after_apply);
        }
        run_time_counts.push(RunTimeCount {
            agent: a.name.clone(),
            group: a.group.clone(),
            running: count,
            file_replicas: a.replicas,
            set_by: if sup.autoscaled(&a.name).is_some() {
                CountSetBy::Autoscaler
            } else {
                CountSetBy::Scale
            },
            after_apply,
        });
    }
    Ok(DiffReport {
        host: running.host.name.clone(),
        from: RUNNING.to_string(),
        to: file_name.to_string(),
        groups,
        agents,
        run_time_counts,
    })
}

/// Counts an agent's entry from the `running` replicas it has.
fn from_running(entry: &mut AgentDiff, running: u32, after: CountAfterApply) {
    match entry {
        AgentDiff::Removed { replicas, .. } => *replicas = running,
        AgentDiff::Changed { effect, .. } => {
            *effect = match (*effect, after) {
                (Effect::Recreate { .. }, CountAfterApply::Kept) => Effect::Recreate {
                    old_replicas: running,
                    new_replicas: running,
                },
                (Effect::Recreate { new_replicas, .. }, _) => Effect::Recreate {
                    old_replicas: running,
                    new_replicas,
                },
                (Effect::Scale { new, .. }, _) => Effect::Scale { old: running, new },
                (e, _) => e,
            };
        }
        AgentDiff::Added { .. } => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use orch_core::supervise::{Input, Persisted};

    use super::*;

    const RUNNING_TEXT: &str = r#"version: 1
host: {name: h}
defaults:
  image: img:1
groups:
  base:
    agents:
      Api: {replicas: 3, ports: ["80"], env: {LOG: info}}
      Worker: {replicas: 1, gpu: {slice: exclusive}}
      Auto: {replicas: 2, autoscale: {min: 1, max: 6, cpu: 50%}}
"#;

    fn config(text: &str) -> HostConfig {
        orch_config::load_str("h.yaml", text, &Default::default())
            .unwrap()
            .config
    }

    /// Host `h` on RUNNING_TEXT; `Worker` scaled to 4 by an operator,
    /// `Auto` to 5 by its autoscaler.
    fn host() -> Supervisor {
        let c = config(RUNNING_TEXT);
        let hashes = orch_core::container::config_hashes(&c);
        let mut sup = Supervisor::new(c, hashes, Persisted::default());
        sup.handle(0, Input::Resync { containers: vec![] });
        sup.scale_agent(0, "base", "Worker", Some(4)).unwrap();
        let decision = orch_core::autoscale::Decision {
            from: 2,
            to: 5,
            cause: orch_core::autoscale::Cause::BelowMin { min: 5 },
        };
        sup.autoscale_agent(0, "base", "Auto", decision).unwrap();
        sup
    }

    /// `check(edit, expect)`: RUNNING_TEXT with `edit` (text replaced)
    /// made, the report's lines in `orch_api::text`'s words.
    #[test]
    fn what_an_apply_would_change_field_by_field_with_run_time_counts() {
        const KEPT: [&str; 2] = [
            "Worker: runs 4 replicas set by scale (file: 1); the apply keeps it",
            "Auto: runs 5 replicas set by its autoscaler (file: 2); the apply keeps it",
        ];
        let table: &[(&str, (&str, &str), &[&str])] = &[
            ("nothing", ("", ""), &KEPT),
            (
                "a count going 3 -> 2 stops one",
                ("replicas: 3", "replicas: 2"),
                &[
                    "Api: replicas 3 -> 2",
                    "Api: 1 replica stopped",
                    KEPT[0],
                    KEPT[1],
                ],
            ),
            (
                "image, env and ports recreate",
                (
                    "Api: {replicas: 3, ports: [\"80\"], env: {LOG: info}}",
                    "Api: {replicas: 3, image: img:2, ports: [\"81\"], env: {LOG: debug, FOO: x}}",
                ),
                &[
                    "Api: image img:1 -> img:2",
                    "Api: env FOO added",
                    "Api: env LOG changed",
                    "Api: ports 80 -> 81",
                    "Api: recreated, one replica at a time",
                    KEPT[0],
                    KEPT[1],
                ],
            ),
            (
                "a scaled agent's file count changes: the file's replaces it",
                ("replicas: 1", "replicas: 2"),
                &[
                    "Worker: replicas 1 -> 2",
                    "Worker: 2 replicas stopped",
                    "Worker: runs 4 replicas set by scale (file: 1); the apply replaces it with the file's 2",
                    KEPT[1],
                ],
            ),
            (
                "a scaled agent's GPU request recreates the replicas that run",
                (
                    "gpu: {slice: exclusive}}",
                    "gpu: {slice: mps, memory: 4g, compute: 20%}}\n      X: {}",
                ),
                &[
                    "Worker: GPU request exclusive -> mps memory=4g compute=20%",
                    "Worker: recreated, one replica at a time",
                    "X: added in group base, 1 replica started",
                    KEPT[0],
                    KEPT[1],
                ],
            ),
        ];
        let sup = host();
        for (case, (from, to), want) in table {
            let text = RUNNING_TEXT.replace(from, to);
            assert!(from.is_empty() || text != RUNNING_TEXT, "{case}: no edit");
            let report = config_diff(&sup, "new.yaml", &config(&text)).unwrap();
            assert_eq!(
                orch_api::text::diff_lines(&report),
                *want,
                "{case}:\n{text}"
            );
        }
    }

    #[test]
    fn an_agent_left_out_stops_the_replicas_that_run_and_a_count_kept_is_no_change() {
        let sup = host();
        let text = RUNNING_TEXT
            .lines()
            .filter(|l| !l.contains("Worker"))
            .collect::<Vec<_>>()
            .join("\n");
        let report = config_diff(&sup, "new.yaml", &config(&text)).unwrap();
        assert_eq!(
            orch_api::text::diff_lines(&report),
            [
                "Worker: removed from group base, 4 replicas stopped",
                "Worker: runs 4 replicas set by scale (file: 1); the apply removes the agent",
                "Auto: runs 5 replicas set by its autoscaler (file: 2); the apply keeps it",
            ]
        );
        assert!(report.has_changes());
        let same = config_diff(&sup, "new.yaml", &config(RUNNING_TEXT)).unwrap();
        assert!(!same.has_changes(), "{same:?}");
        assert_eq!(same.from, RUNNING);
    }

    #[test]
    fn another_hosts_config_is_refused() {
        let other = RUNNING_TEXT.replace("name: h", "name: other");
        let err = config_diff(&host(), "o.yaml", &config(&other)).unwrap_err();
        assert!(
            matches!(err, Rejection::DiffOfOtherHost { ref config_host, .. } if config_host == "other"),
            "{err:?}"
        );
        assert_eq!(
            orch_api::ApiError::from(err).message,
            "o.yaml is the config of host `other`, but this daemon runs host `h`; compare it there (`--host other`), or with another file without a daemon (`config diff OLD NEW`)"
        );
    }
}
