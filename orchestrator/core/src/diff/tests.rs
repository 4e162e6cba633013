//! Table tests of the config diff: one base config, one edit per case, the
//! expected entries as data.

use std::collections::BTreeMap;

use super::*;
use crate::gpu::SliceRequest;
use crate::model::{
    AgentDefaults, Amount, Autoscale, ControlSettings, HostInfo, MetricsSettings, RuntimeSettings,
};
use crate::units::{ByteSize, Percent};

fn agent(name: &str, group: &str) -> Agent {
    Agent {
        name: name.into(),
        group: group.into(),
        image: "img:1".into(),
        command: None,
        env: [("LOG".to_string(), "info".to_string())].into(),
        ports: vec![],
        volumes: vec![],
        depends_on: vec![],
        gpu: None,
        restart: RestartPolicy::default(),
        health: HealthCheck::default(),
        resources: Resources::default(),
        security: Security::default(),
        replicas: 3,
        required: true,
        labels: BTreeMap::new(),
        stop_timeout: Duration::from_secs(10),
        config: None,
        script_path: None,
        secrets: vec![],
        autoscale: None,
        gpu_over_limit: OverLimit::Warn,
    }
}

fn group(name: &str, agents: Vec<Agent>) -> Group {
    Group {
        name: name.into(),
        description: None,
        depends_on: vec![],
        slo: None,
        rollout: Rollout::default(),
        min_healthy: crate::model::DEFAULT_MIN_HEALTHY,
        agents,
    }
}

fn base() -> HostConfig {
    HostConfig {
        host: HostInfo {
            name: "h".into(),
            labels: BTreeMap::new(),
        },
        defaults: AgentDefaults::default(),
        gpus: vec![],
        groups: vec![
            group(
                "core",
                vec![agent("Registry", "core"), agent("Twin", "core")],
            ),
            group("vision", vec![agent("Face", "vision")]),
        ],
        runtime: RuntimeSettings::defaults_for("h"),
        federation: None,
        metrics: MetricsSettings::default(),
        control: ControlSettings::default(),
        secrets: BTreeMap::new(),
    }
}

fn edit_agent(c: &mut HostConfig, name: &str, f: impl FnOnce(&mut Agent)) {
    let a = c
        .groups
        .iter_mut()
        .flat_map(|g| g.agents.iter_mut())
        .find(|a| a.name == name)
        .expect("agent of the base config");
    f(a);
}

fn changed(agent: &str, group: &str, changes: Vec<AgentChange>, effect: Effect) -> AgentDiff {
    AgentDiff::Changed {
        agent: agent.into(),
        group: group.into(),
        changes,
        effect,
    }
}

#[track_caller]
fn check(edit: impl FnOnce(&mut HostConfig), groups: Vec<GroupDiff>, agents: Vec<AgentDiff>) {
    let old = base();
    let mut new = base();
    edit(&mut new);
    let got = diff(&old, &new);
    assert_eq!(got.groups, groups, "groups");
    assert_eq!(got.agents, agents, "agents");
}

#[test]
fn the_same_config_has_no_difference() {
    let d = diff(&base(), &base());
    assert!(d.is_empty(), "{d:?}");
}

#[test]
fn a_replica_count_change_is_a_scale_and_recreates_nothing() {
    check(
        |c| edit_agent(c, "Twin", |a| a.replicas = 2),
        vec![],
        vec![changed(
            "Twin",
            "core",
            vec![AgentChange::Replicas { old: 3, new: 2 }],
            Effect::Scale { old: 3, new: 2 },
        )],
    );
}

#[test]
fn a_new_image_recreates_and_carries_a_count_change_along() {
    check(
        |c| {
            edit_agent(c, "Face", |a| {
                a.image = "img:2".into();
                a.replicas = 5;
            })
        },
        vec![],
        vec![changed(
            "Face",
            "vision",
            vec![
                AgentChange::Image {
                    old: "img:1".into(),
                    new: "img:2".into(),
                },
                AgentChange::Replicas { old: 3, new: 5 },
            ],
            Effect::Recreate {
                old_replicas: 3,
                new_replicas: 5,
            },
        )],
    );
}

#[test]
fn env_changes_name_each_variable_with_its_values() {
    check(
        |c| {
            edit_agent(c, "Registry", |a| {
                a.env.insert("LOG".into(), "debug".into());
                a.env.insert("NEW".into(), "1".into());
            })
        },
        vec![],
        vec![changed(
            "Registry",
            "core",
            vec![AgentChange::Env(vec![
                MapChange {
                    key: "LOG".into(),
                    old: Some("info".into()),
                    new: Some("debug".into()),
                },
                MapChange {
                    key: "NEW".into(),
                    old: None,
                    new: Some("1".into()),
                },
            ])],
            Effect::Recreate {
                old_replicas: 3,
                new_replicas: 3,
            },
        )],
    );
    check(
        |c| edit_agent(c, "Registry", |a| a.env.clear()),
        vec![],
        vec![changed(
            "Registry",
            "core",
            vec![AgentChange::Env(vec![MapChange {
                key: "LOG".into(),
                old: Some("info".into()),
                new: None,
            }])],
            Effect::Recreate {
                old_replicas: 3,
                new_replicas: 3,
            },
        )],
    );
}

#[test]
fn supervision_settings_change_in_place() {
    let scale = Autoscale {
        min: 1,
        max: 4,
        cpu: Some(Percent::whole(70)),
        gpu_util: None,
        metric: None,
        latency_slo: false,
        up_after: Duration::from_secs(15),
        down_after: Duration::from_secs(300),
        reverse_after: Duration::from_secs(300),
    };
    let health = HealthCheck {
        interval: Duration::from_secs(9),
        ..HealthCheck::default()
    };
    check(
        |c| {
            edit_agent(c, "Twin", |a| {
                a.health.interval = Duration::from_secs(9);
                a.depends_on = vec!["Registry".into()];
                a.autoscale = Some(scale.clone());
                a.gpu_over_limit = OverLimit::Restart;
            })
        },
        vec![],
        vec![changed(
            "Twin",
            "core",
            vec![
                AgentChange::DependsOn {
                    old: vec![],
                    new: vec!["Registry".into()],
                },
                AgentChange::GpuOverLimit {
                    old: OverLimit::Warn,
                    new: OverLimit::Restart,
                },
                AgentChange::Health {
                    old: HealthCheck::default(),
                    new: health,
                },
                AgentChange::Autoscale {
                    old: None,
                    new: Some(scale.clone()),
                },
            ],
            Effect::InPlace,
        )],
    );
}

#[test]
fn agents_and_groups_come_and_go() {
    check(
        |c| {
            c.groups.remove(1);
            c.groups.push(group("speech", vec![agent("Stt", "speech")]));
            c.groups[0].agents.remove(1);
        },
        vec![
            GroupDiff::Added {
                group: "speech".into(),
            },
            GroupDiff::Removed {
                group: "vision".into(),
            },
        ],
        vec![
            AgentDiff::Added {
                agent: "Stt".into(),
                group: "speech".into(),
                replicas: 3,
            },
            AgentDiff::Removed {
                agent: "Twin".into(),
                group: "core".into(),
                replicas: 3,
            },
            AgentDiff::Removed {
                agent: "Face".into(),
                group: "vision".into(),
                replicas: 3,
            },
        ],
    );
}

#[test]
fn an_agent_that_moves_group_is_one_change() {
    check(
        |c| {
            let mut twin = c.groups[0].agents.remove(1);
            twin.group = "vision".into();
            c.groups[1].agents.push(twin);
        },
        vec![],
        vec![changed(
            "Twin",
            "vision",
            vec![AgentChange::Group {
                old: "core".into(),
                new: "vision".into(),
            }],
            Effect::InPlace,
        )],
    );
}

#[test]
fn group_settings_are_diffed_apart_from_their_agents() {
    let slo = Slo {
        availability: Some(Percent::parse("99.5%").unwrap()),
        latency_p99: None,
        error_rate: None,
        window: Duration::from_secs(30 * 86400),
    };
    let rollout = Rollout {
        max_surge: Amount::Share(Percent::whole(25)),
        ..Rollout::default()
    };
    check(
        |c| {
            let g = &mut c.groups[1];
            g.description = Some("faces".into());
            g.depends_on = vec!["core".into()];
            g.slo = Some(slo.clone());
            g.rollout = rollout;
            g.min_healthy = Duration::from_secs(10);
        },
        vec![GroupDiff::Changed {
            group: "vision".into(),
            changes: vec![
                GroupChange::Description {
                    old: None,
                    new: Some("faces".into()),
                },
                GroupChange::DependsOn {
                    old: vec![],
                    new: vec!["core".into()],
                },
                GroupChange::Slo {
                    old: None,
                    new: Some(slo.clone()),
                },
                GroupChange::Rollout {
                    old: Rollout::default(),
                    new: rollout,
                },
                GroupChange::MinHealthy {
                    old: crate::model::DEFAULT_MIN_HEALTHY,
                    new: Duration::from_secs(10),
                },
            ],
        }],
        vec![],
    );
}

/// The kebab-case tag of a change, as it serialises.
fn tag(c: &AgentChange) -> String {
    serde_json::to_value(c)
        .ok()
        .and_then(|v| v.get("field").and_then(|f| f.as_str()).map(str::to_string))
        .unwrap_or_else(|| match c {
            AgentChange::Env(_) => "env".into(),
            AgentChange::Labels(_) => "labels".into(),
            other => format!("{other:?}"),
        })
}

#[test]
fn every_field_of_an_agent_is_compared() {
    type Edit = fn(&mut Agent);
    let cases: &[(&str, Edit, bool)] = &[
        ("image", |a| a.image = "x:2".into(), true),
        ("command", |a| a.command = Some(vec!["run".into()]), true),
        (
            "env",
            |a| {
                a.env.insert("K".into(), "v".into());
            },
            true,
        ),
        (
            "ports",
            |a| a.ports = vec![PortMapping::parse("8080").unwrap()],
            true,
        ),
        (
            "volumes",
            |a| a.volumes = vec![VolumeMount::parse("m:/m").unwrap()],
            true,
        ),
        (
            "depends-on",
            |a| a.depends_on = vec!["Registry".into()],
            false,
        ),
        (
            "gpu",
            |a| {
                a.gpu = Some(GpuRequest::new(SliceRequest::Mps {
                    memory: ByteSize::gib(2),
                    compute: Percent::whole(10),
                }))
            },
            true,
        ),
        (
            "gpu-over-limit",
            |a| a.gpu_over_limit = OverLimit::Restart,
            false,
        ),
        ("restart", |a| a.restart.crashloop.restarts = 9, false),
        ("health", |a| a.health.retries = 9, false),
        ("resources", |a| a.resources.cpus = Some(2.0), true),
        ("security", |a| a.security.read_only = true, true),
        ("replicas", |a| a.replicas = 1, false),
        ("required", |a| a.required = false, false),
        (
            "labels",
            |a| {
                a.labels.insert("team".into(), "ml".into());
            },
            true,
        ),
        (
            "stop-timeout",
            |a| a.stop_timeout = Duration::from_secs(3),
            true,
        ),
        (
            "config",
            |a| a.config = Some(serde_json::json!({"k": 1})),
            true,
        ),
        ("script-path", |a| a.script_path = Some("a.py".into()), true),
        (
            "secrets",
            |a| {
                a.secrets = vec![SecretMount {
                    name: "TOKEN".into(),
                    source: "/s/t".into(),
                }]
            },
            true,
        ),
        (
            "autoscale",
            |a| {
                a.autoscale = Some(Autoscale {
                    min: 1,
                    max: 3,
                    cpu: Some(Percent::whole(50)),
                    gpu_util: None,
                    metric: None,
                    latency_slo: false,
                    up_after: Duration::from_secs(15),
                    down_after: Duration::from_secs(300),
                    reverse_after: Duration::from_secs(300),
                })
            },
            false,
        ),
    ];
    for (name, edit, recreates) in cases {
        let old = agent("A", "g");
        let mut new = old.clone();
        edit(&mut new);
        let changes = agent_changes(&old, &new);
        let tags: Vec<String> = changes.iter().map(tag).collect();
        assert_eq!(tags, [*name], "{name}");
        let e = effect(&old, &new);
        assert_eq!(
            matches!(e, Effect::Recreate { .. }),
            *recreates,
            "{name}: {e:?}"
        );
    }
}
