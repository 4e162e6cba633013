//! The legacy configs of the two-host system load unedited, with every
//! mapping they cannot express reported as a warning at its line.

use std::path::{Path, PathBuf};

use orch_config::{Format, LoadOptions, load_file, load_str};
use orch_core::model::Probe;

fn fixture(host: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/data/legacy/{host}/startup_config.yaml"))
}

fn warnings(loaded: &orch_config::Loaded) -> Vec<String> {
    loaded
        .warnings
        .iter()
        .map(|w| format!("{}:{}: {}", w.line, w.column, w.message))
        .collect()
}

#[test]
fn mainpc_imports_54_agents_in_11_groups() {
    let l = load_file(&fixture("mainpc"), &LoadOptions::default()).unwrap();
    assert_eq!(l.format, Format::Legacy);
    assert_eq!(l.config.host.name, "mainpc");
    assert_eq!(l.config.groups.len(), 11);
    assert_eq!(l.config.agent_count(), 54);
    let groups: Vec<(&str, usize)> = l
        .config
        .groups
        .iter()
        .map(|g| (g.name.as_str(), g.agents.len()))
        .collect();
    assert_eq!(
        groups,
        [
            ("infra_core", 2),
            ("coordination", 4),
            ("observability", 1),
            ("memory_stack", 3),
            ("vision_gpu", 1),
            ("speech_gpu", 9),
            ("learning_gpu", 7),
            ("reasoning_gpu", 3),
            ("language_stack", 11),
            ("utility_cpu", 7),
            ("emotion_system", 6),
        ]
    );
    assert_eq!(
        warnings(&l),
        [
            "13:18: `cpu_percent: 80` read as a limit of 0.8 CPUs (80% of one CPU)",
            "15:5: `global_settings.resource_limits.max_threads` has no meaning here; ignored",
            "20:3: `global_settings.performance_tuning` has no meaning here; ignored",
            "27:1: `hybrid_inference_policy` has no meaning here; ignored",
            "128:5: agent `UnifiedSystemAgent` is in no docker group; placed in `coordination` with the other agents of `foundation_services`",
            "192:5: agent `TinyLlamaServiceEnhanced` is in no docker group; placed in `utility_cpu` with the other agents of `utility_services`",
            "208:3: agent group `gpu_infrastructure` defines no agents",
        ]
    );
    let twin = l.config.agent("SystemDigitalTwin").unwrap();
    assert_eq!(twin.ports[0].to_string(), "7220:7220");
    assert_eq!(
        twin.health.probe,
        Probe::Http {
            port: 8220,
            path: "/health".into()
        }
    );
    assert_eq!(twin.depends_on, ["ServiceRegistry"]);
    assert_eq!(twin.config.as_ref().unwrap()["redis"]["port"], 6379);
    assert_eq!(twin.env["LOG_LEVEL"], "INFO");
    assert_eq!(twin.health.interval.to_string(), "30s");
    assert!(!l.config.agent("TinyLlamaServiceEnhanced").unwrap().required);
    assert_eq!(
        l.config.agent("RequestCoordinator").unwrap().ports[0].to_string(),
        "26002:26002"
    );
    assert_eq!(twin.image, "orchestrator-agent:latest");
}

#[test]
fn pc2_imports_23_agents_in_7_groups() {
    let l = load_file(&fixture("pc2"), &LoadOptions::default()).unwrap();
    assert_eq!(l.config.host.name, "pc2");
    assert_eq!(l.config.groups.len(), 7);
    assert_eq!(l.config.agent_count(), 23);
    assert_eq!(
        warnings(&l),
        [
            "6:17: `PYTHONPATH` uses shell expansion (`${PYTHONPATH}:${PWD}/..`), which containers do not perform; kept as written",
            "10:18: `cpu_percent: 80` read as a limit of 0.8 CPUs (80% of one CPU)",
            "12:5: `global_settings.resource_limits.max_threads` has no meaning here; ignored",
            "283:30: `${MAINPC_OBS_HUB}` refers to a variable the orchestrator does not expand; kept as written",
            "295:1: `pc2_network` has no meaning here; ignored",
            "307:1: `error_bus_port` has no meaning here; ignored",
        ]
    );
    let hub = l.config.agent("ObservabilityHub").unwrap();
    assert_eq!(hub.health.start_period.to_string(), "5m");
    assert_eq!(hub.config.as_ref().unwrap()["prometheus_port"], 9100);
}

#[test]
fn port_offset_shifts_every_expression() {
    let opts = LoadOptions {
        port_offset: 1000,
        ..LoadOptions::default()
    };
    let l = load_file(&fixture("mainpc"), &opts).unwrap();
    let reg = l.config.agent("ServiceRegistry").unwrap();
    assert_eq!(reg.ports[0].to_string(), "8200:8200");
    assert_eq!(reg.health.probe.port(), Some(9200));
    // A plain integer is not an expression: it does not move.
    assert_eq!(
        l.config.agent("RequestCoordinator").unwrap().ports[0].to_string(),
        "26002:26002"
    );
}

#[test]
fn image_template_names_images_per_agent() {
    let opts = LoadOptions {
        image_template: "registry.lan/{script_stem}:{group}".into(),
        ..LoadOptions::default()
    };
    let l = load_file(&fixture("pc2"), &opts).unwrap();
    assert_eq!(
        l.config.agent("TutorAgent").unwrap().image,
        "registry.lan/tutor_agent:tutoring_cpu"
    );
    assert_eq!(l.config.defaults.image, None);
    let bad = LoadOptions {
        image_template: "x/{nope}".into(),
        ..LoadOptions::default()
    };
    assert!(
        load_file(&fixture("pc2"), &bad)
            .unwrap_err()
            .to_string()
            .contains("unknown placeholder")
    );
}

#[test]
fn converting_then_loading_gives_the_imported_model() {
    for host in ["mainpc", "pc2"] {
        let imported = load_file(&fixture(host), &LoadOptions::default()).unwrap();
        let text = orch_config::convert::to_v1_yaml(&imported.config);
        let reloaded = load_str("converted.yaml", &text, &LoadOptions::default())
            .unwrap_or_else(|e| panic!("{host}: {:#?}", e.diagnostics()));
        assert_eq!(reloaded.format, Format::V1);
        assert!(reloaded.warnings.is_empty(), "{:?}", reloaded.warnings);
        assert_eq!(reloaded.config, imported.config, "{host}");
    }
}

#[test]
fn legacy_problems_are_warnings_or_errors_never_silence() {
    let text = "\
agent_groups:
  core:
    A: {script_path: a.py, port: 7000, retries_on_boot: 3}
docker_groups:
  g:
    description: d
    agents: [A, Ghost]
    replicas: 2
";
    let l = load_str(
        "l.yaml",
        text,
        &LoadOptions {
            host_name: Some("h".into()),
            ..LoadOptions::default()
        },
    )
    .unwrap();
    assert_eq!(
        warnings(&l),
        [
            "3:40: `retries_on_boot` of agent `A` has no meaning here; ignored",
            "7:17: docker group `g` lists `Ghost`, which no agent definition declares; skipped",
            "8:5: `docker_groups.g.replicas` has no meaning here; ignored",
        ]
    );
}
