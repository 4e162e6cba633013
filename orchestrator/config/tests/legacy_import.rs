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

fn diags(text: &str) -> Result<Vec<String>, Vec<String>> {
    let show = |d: &orch_config::Diagnostic| {
        format!(
            "{}:{}: {}[{}]: {}",
            d.line,
            d.column,
            match d.severity {
                orch_config::Severity::Error => "error",
                orch_config::Severity::Warning => "warning",
            },
            d.code,
            d.message
        )
    };
    let opts = LoadOptions {
        host_name: Some("h".into()),
        ..LoadOptions::default()
    };
    match load_str("l.yaml", text, &opts) {
        Ok(l) => Ok(l.warnings.iter().map(show).collect()),
        Err(e) => Err(e.diagnostics().iter().map(show).collect()),
    }
}

#[test]
fn version_1_files_stay_strict_about_repeated_keys() {
    let text = "version: 1\nhost: {name: h}\ngroups: {}\ngroups: {}\n";
    assert_eq!(
        diags(text),
        Err(vec![
            "4:1: error[syntax]: duplicate key `groups` (first defined on line 3)".to_string()
        ])
    );
}

#[test]
fn an_agent_key_repeated_in_one_group_is_read_once_its_last_definition() {
    let text = "\
agent_groups:
  core:
    A: {script_path: a.py, port: 7000}
    A: {script_path: a2.py, port: 7001}
";
    assert_eq!(
        diags(text),
        Ok(vec![
            "4:5: warning[legacy-duplicate-key]: duplicate key `A` (lines 3 and 4): the last one is used, as the legacy launcher read it".to_string()
        ])
    );
    let l = load_str("l.yaml", text, &LoadOptions::default()).unwrap();
    assert_eq!(
        l.config.agent("A").unwrap().ports[0].to_string(),
        "7001:7001"
    );
}

#[test]
fn an_agent_listed_twice_in_one_section_is_defined_twice() {
    let text = "\
services:
  - {name: A, script_path: a.py, port: 7000}
  - {name: A, script_path: a.py, port: 7001}
";
    assert_eq!(
        diags(text),
        Err(vec![
            "3:12: error[duplicate-agent]: agent `A` is defined twice: on line 2 (in `services`) and here (in `services`); the legacy launcher read both".to_string()
        ])
    );
}

#[test]
fn a_repeated_agent_group_names_the_agents_it_hid() {
    let text = "\
agent_groups:
  core:
    A: {script_path: a.py}
    B: {script_path: b.py}
  core:
    A: {script_path: a.py}
";
    assert_eq!(
        diags(text),
        Ok(vec![
            "5:3: warning[legacy-duplicate-key]: duplicate key `core` (lines 2 and 5): the last one is used, as the legacy launcher read it; not imported, as only the earlier one defines them: B".to_string()
        ])
    );
}

#[test]
fn entries_the_launcher_read_differently_are_reported() {
    let text = "\
agent_groups:
  core:
    A: {script_path: a.py, name: Alpha, params: {x: 1}, config: {y: 2}, host: db.lan, port: 7000}
  Stray: {script_path: s.py}
services:
  - {script_path: nameless.py}
";
    assert_eq!(
        diags(text),
        Err(vec![
            "3:34: warning[legacy-name]: agent `A` also says `name: Alpha`; it is imported as `A`, its key".to_string(),
            "3:41: warning[legacy-unmapped]: `params` of agent `A` is ignored: its `config` is used".to_string(),
            "3:79: warning[legacy-interpreted]: `host: db.lan` is not an IP address; the port is published on all addresses".to_string(),
            "4:3: warning[legacy-misplaced]: agent `Stray` is written directly under `agent_groups`, not in an agent group; imported from section `agent_groups`".to_string(),
            "6:5: error[missing]: an agent entry of `services` has no `name`".to_string(),
        ])
    );
}

#[test]
fn a_required_that_is_not_a_boolean_is_read_with_python_truthiness() {
    let text = "\
agent_groups:
  core:
    A: {script_path: a.py, required: \"${REQ:-false}\"}
    B: {script_path: b.py, required: \"false\"}
    C: {script_path: c.py, required: 0}
    D: {script_path: d.py, required: \"\"}
    F: {script_path: f.py, required: no}
    G: {script_path: g.py, required: yes}
    E:
      script_path: e.py
      required: ${REQ:-true}
";
    assert_eq!(
        diags(text),
        Ok(vec![
            "3:38: warning[legacy-interpreted]: `required` is the string \"${REQ:-false}\", not true or false; read as true, as the legacy launcher did (Python truthiness)".to_string(),
            "4:38: warning[legacy-interpreted]: `required` is the string \"false\", not true or false; read as true, as the legacy launcher did (Python truthiness)".to_string(),
            "5:38: warning[legacy-interpreted]: `required` is the number `0`, not true or false; read as false, as the legacy launcher did (Python truthiness)".to_string(),
            "6:38: warning[legacy-interpreted]: `required` is the string \"\", not true or false; read as false, as the legacy launcher did (Python truthiness)".to_string(),
            "11:17: warning[legacy-interpreted]: `required` is `${REQ:-true}`, not true or false; read as true, as the legacy launcher did (Python truthiness)".to_string(),
        ])
    );
    let l = load_str("l.yaml", text, &LoadOptions::default()).unwrap();
    let required = |a: &str| l.config.agent(a).unwrap().required;
    assert_eq!(
        ["A", "B", "C", "D", "E", "F", "G"].map(required),
        [true, true, false, false, true, false, true]
    );
}
