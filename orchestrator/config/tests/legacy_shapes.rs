//! Every shape the legacy startup_config took over its life imports: the
//! corpus in `data/legacy/shapes/` holds one synthetic file per shape and
//! one per fault that refuses a file. Each is checked against its groups,
//! agents and exact diagnostics, written here by reading the file, and
//! against the legacy launcher's own rule for finding agents, applied to
//! the file with PyYAML by `tests/legacy/launcher_rule.py` (the oracle).

// Test helpers outside #[test] functions are test code too; a failed
// unwrap there is a test failure with its location, which is what we want.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use orch_config::{ConfigError, Diagnostic, Format, LoadOptions, Loaded, Severity, load_file};
use orch_core::model::Probe;

fn shapes_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/legacy/shapes")
}

fn opts() -> LoadOptions {
    LoadOptions {
        host_name: Some("lab".into()),
        ..LoadOptions::default()
    }
}

fn show(d: &Diagnostic) -> String {
    let sev = match d.severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    };
    format!("{}:{}: {sev}[{}]: {}", d.line, d.column, d.code, d.message)
}

fn load(file: &str) -> Loaded {
    match load_file(&shapes_dir().join(file), &opts()) {
        Ok(l) => l,
        Err(e) => panic!(
            "{file}: {e}\n{}",
            e.diagnostics()
                .iter()
                .map(show)
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

fn refused(file: &str) -> Vec<String> {
    match load_file(&shapes_dir().join(file), &opts()) {
        Ok(l) => panic!("{file} loaded: {:?}", l.config.groups),
        Err(e @ ConfigError::Invalid { .. }) => e.diagnostics().iter().map(show).collect(),
        Err(e) => panic!("{file}: {e}"),
    }
}

/// Groups in order, each with its agents in order.
fn groups(l: &Loaded) -> Vec<(String, Vec<String>)> {
    l.config
        .groups
        .iter()
        .map(|g| {
            (
                g.name.clone(),
                g.agents.iter().map(|a| a.name.clone()).collect(),
            )
        })
        .collect()
}

fn expect_groups(l: &Loaded, want: &[(&str, &[&str])]) {
    let want: Vec<(String, Vec<String>)> = want
        .iter()
        .map(|(g, a)| (g.to_string(), a.iter().map(|s| s.to_string()).collect()))
        .collect();
    assert_eq!(groups(l), want);
}

fn warnings(l: &Loaded) -> Vec<String> {
    l.warnings.iter().map(show).collect()
}

#[test]
fn shape_1_sections_as_lists() {
    let l = load("1_sections_as_lists.yaml");
    assert_eq!(l.format, Format::Legacy);
    expect_groups(
        &l,
        &[
            (
                "core_services",
                &["ModelManagerAgent", "TaskRouter", "SystemDigitalTwin"],
            ),
            (
                "main_pc_gpu_services",
                &["FaceRecognitionAgent", "NLLBAdapter"],
            ),
            ("emotion_system", &["EmotionEngine", "ToneDetector"]),
        ],
    );
    assert_eq!(
        warnings(&l),
        [
            "11:1: warning[legacy-unmapped]: `volumes` has no meaning here; ignored",
            "19:1: warning[legacy-unmapped]: `network` has no meaning here; ignored",
            "37:5: warning[legacy-not-agent]: `MetricsBridge` in `core_services` has no `script_path`, so the legacy launcher never started it; ignored",
        ]
    );
    // Top-level settings sections are read like their `global_settings` counterparts.
    let c = &l.config;
    assert_eq!(c.defaults.env["PYTHONPATH"], "/srv/assistant");
    assert_eq!(c.defaults.env["LOG_LEVEL"], "DEBUG");
    assert_eq!(c.defaults.resources.memory.unwrap().to_string(), "1g");
    assert_eq!(c.defaults.health.interval.to_string(), "15s");
    assert_eq!(c.defaults.health.retries, 5);
    // Flow entries with stray spaces: names and values are trimmed.
    let mma = c.agent("ModelManagerAgent").unwrap();
    assert_eq!(mma.ports[0].to_string(), "5570:5570");
    assert_eq!(
        mma.script_path.as_deref(),
        Some("agents/model_manager_agent.py")
    );
    assert_eq!(
        c.agent("NLLBAdapter").unwrap().depends_on,
        ["ModelManagerAgent"]
    );
    assert!(!c.agent("NLLBAdapter").unwrap().required);
    // YAML 1.1 `yes` is true, as the legacy loader read it.
    assert!(c.agent("FaceRecognitionAgent").unwrap().required);
    assert_eq!(
        c.agent("TaskRouter").unwrap().ports[0].to_string(),
        "8571:8571"
    );
    assert_eq!(
        c.agent("TaskRouter").unwrap().health.probe,
        Probe::Tcp { port: 8571 }
    );
    let twin = c.agent("SystemDigitalTwin").unwrap();
    assert_eq!(
        twin.health.probe,
        Probe::Http {
            port: 8120,
            path: "/health".into()
        }
    );
    // `params`, the older name of `config`.
    let config = twin.config.as_ref().unwrap();
    assert_eq!(config["db_path"], "data/twin.db");
    assert_eq!(config["sync_interval"], 30);
    assert_eq!(
        c.agent("EmotionEngine").unwrap().depends_on,
        ["SystemDigitalTwin"]
    );
    assert_eq!(
        c.agent("ToneDetector").unwrap().ports[0].to_string(),
        "127.0.0.1:5625:5625"
    );
}

#[test]
fn shape_1_the_second_hosts_single_list() {
    let l = load("1_pc2_services.yaml");
    expect_groups(
        &l,
        &[(
            "pc2_services",
            &["MemoryOrchestrator", "TutorAgent", "RemoteConnectorAgent"],
        )],
    );
    assert_eq!(
        warnings(&l),
        ["14:1: warning[legacy-unmapped]: `pc2_network` has no meaning here; ignored"]
    );
    assert_eq!(l.config.defaults.health.start_period.to_string(), "2m");
    assert_eq!(
        l.config.agent("TutorAgent").unwrap().depends_on,
        ["MemoryOrchestrator"]
    );
}

#[test]
fn shape_2_agent_groups_are_the_groups_without_docker_groups() {
    let l = load("2_agent_groups_only.yaml");
    expect_groups(
        &l,
        &[
            ("core_services", &["ServiceRegistry", "SystemDigitalTwin"]),
            ("memory_system", &["MemoryClient", "KnowledgeBase"]),
            ("speech_services", &["STTService", "TTSService"]),
        ],
    );
    assert_eq!(
        warnings(&l),
        [
            "5:18: warning[legacy-interpreted]: `cpu_percent: 50` read as a limit of 0.5 CPUs (50% of one CPU)",
            "44:3: warning[legacy-empty]: agent group `gpu_infrastructure` defines no agents",
            "55:7: warning[legacy-unmapped]: `restart_delay` of agent `TTSService` has no meaning here; ignored",
            "56:5: warning[legacy-not-agent]: `VoiceSettings` in `agent_groups.speech_services` has no `script_path`, so the legacy launcher never started it; ignored",
        ]
    );
    assert!(!l.config.agent("KnowledgeBase").unwrap().required);
    assert_eq!(
        l.config
            .agent("SystemDigitalTwin")
            .unwrap()
            .config
            .as_ref()
            .unwrap()["redis_port"],
        6379
    );
}

#[test]
fn shape_3_agent_groups_and_docker_groups() {
    let l = load("3_agent_and_docker_groups.yaml");
    expect_groups(
        &l,
        &[
            (
                "infra_core",
                &[
                    "ServiceRegistry",
                    "RequestCoordinator",
                    "UnifiedSystemAgent",
                ],
            ),
            ("language_stack", &["NLUAgent", "ChitchatAgent"]),
        ],
    );
    assert_eq!(
        warnings(&l),
        [
            "5:5: warning[legacy-ungrouped]: agent `UnifiedSystemAgent` is in no docker group; placed in `infra_core` with the other agents of `foundation_services`",
            "18:39: warning[legacy-unknown-agent]: docker group `language_stack` lists `ResponderAgent`, which no agent definition declares; skipped",
            "18:55: warning[legacy-regrouped]: `NLUAgent` is already in docker group `language_stack`; it stays there",
        ]
    );
    assert_eq!(
        l.config.group("infra_core").unwrap().description.as_deref(),
        Some("Discovery and routing")
    );
}

#[test]
fn shape_4_docker_groups_written_inside_agent_groups() {
    let l = load("4_docker_groups_inside_agent_groups.yaml");
    expect_groups(
        &l,
        &[
            ("infra_core", &["ServiceRegistry", "SystemDigitalTwin"]),
            ("observability", &["ObservabilityHub"]),
            (
                "reasoning_gpu",
                &["ChainOfThoughtAgent", "CognitiveModelAgent"],
            ),
            ("utility_cpu", &["CodeGenerator", "SmartHomeAgent"]),
            ("memory_system", &["MemoryClient", "KnowledgeBase"]),
        ],
    );
    assert_eq!(
        warnings(&l),
        [
            "18:5: warning[legacy-ungrouped]: agent `MemoryClient` is in no docker group; placed in a group `memory_system` of its own",
            "22:5: warning[legacy-ungrouped]: agent `KnowledgeBase` is in no docker group; placed in a group `memory_system` of its own",
            "40:5: warning[legacy-ungrouped]: agent `SmartHomeAgent` is in no docker group; placed in `utility_cpu` with the other agents of `utility_services`",
            "49:3: warning[legacy-misplaced]: `docker_groups` is written inside `agent_groups`; its groups are read as docker groups",
            "64:3: warning[legacy-misplaced]: `reasoning_gpu` under `agent_groups` is a docker group (`description`, `agents`), not an agent group; read as docker group `reasoning_gpu`",
            "68:9: warning[legacy-unknown-agent]: docker group `reasoning_gpu` lists `GoTToTAgent`, which no agent definition declares; skipped",
            "73:3: warning[legacy-misplaced]: `utility_cpu` under `agent_groups` is a docker group (`description`, `agents`), not an agent group; read as docker group `utility_cpu`",
            "77:9: warning[legacy-unknown-agent]: docker group `utility_cpu` lists `TranslationService`, which no agent definition declares; skipped",
        ]
    );
    assert_eq!(
        l.config.group("infra_core").unwrap().description.as_deref(),
        Some("Service discovery and the digital twin")
    );
}

#[test]
fn shape_5_a_repeated_key_keeps_its_last_value() {
    let l = load("5_duplicate_keys.yaml");
    expect_groups(
        &l,
        &[
            ("core_services", &["ModelManagerAgent", "SystemDigitalTwin"]),
            ("emotion_system", &["EmotionEngine", "EmpathyAgent"]),
            ("language_services", &["NLUAgent"]),
        ],
    );
    assert_eq!(
        warnings(&l),
        [
            "6:5: warning[legacy-duplicate-key]: duplicate key `port` (lines 5 and 6): the last one is used, as the legacy launcher read it",
            "17:1: warning[legacy-duplicate-key]: duplicate key `emotion_system` (lines 9 and 17): the last one is used, as the legacy launcher read it; not imported, as only the earlier one defines them: MoodTrackerAgent",
        ]
    );
    assert_eq!(
        l.config.agent("SystemDigitalTwin").unwrap().ports[0].to_string(),
        "7125:7125"
    );
    // Defined in both `emotion_system` sections, but the launcher read only
    // the last: not an agent defined twice.
    let engine = l.config.agent("EmotionEngine").unwrap();
    assert_eq!(engine.ports[0].to_string(), "5591:5591");
    assert_eq!(engine.depends_on, ["SystemDigitalTwin"]);
}

#[test]
fn a_port_collision_refuses_the_file() {
    assert_eq!(
        refused("fault_port_collision.yaml"),
        [
            "5:75: error[port-collision]: host port 5570 is already published by agent `ModelManagerAgent` (line 2)"
        ]
    );
}

#[test]
fn an_unknown_dependency_refuses_the_file() {
    assert_eq!(
        refused("fault_unknown_dependency.yaml"),
        [
            "10:22: error[unknown-dependency]: agent `MemoryClient` depends on `SystemDigitalTwn`, which is not an agent of this host"
        ]
    );
}

#[test]
fn a_dependency_cycle_refuses_the_file() {
    assert_eq!(
        refused("fault_cycle.yaml"),
        [
            "10:22: error[cycle]: dependency cycle: StreamingSpeechRecognition -> StreamingInterruptHandler -> StreamingSpeechRecognition"
        ]
    );
}

#[test]
fn an_agent_defined_in_two_sections_refuses_the_file() {
    assert_eq!(
        refused("fault_defined_twice.yaml"),
        [
            "8:13: error[duplicate-agent]: agent `TranslationService` is defined twice: on line 5 (in `translation_services`) and here (in `cloud_services`); the legacy launcher read both"
        ]
    );
}

#[test]
fn every_loading_shape_converts_to_an_equal_version_1_config() {
    for file in loading_files() {
        let imported = load(&file);
        let text = orch_config::convert::to_v1_yaml(&imported.config);
        let reloaded = orch_config::load_str("converted.yaml", &text, &LoadOptions::default())
            .unwrap_or_else(|e| panic!("{file}: {:#?}", e.diagnostics()));
        assert_eq!(reloaded.format, Format::V1);
        assert_eq!(reloaded.config, imported.config, "{file}");
    }
}

// ---------------------------------------------------------------------------
// the oracle: the legacy launcher's rule, run with PyYAML

fn corpus_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(shapes_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    files.sort();
    files
}

fn loading_files() -> Vec<String> {
    corpus_files()
        .into_iter()
        .filter(|f| !f.starts_with("fault_"))
        .collect()
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The venv's python with PyYAML, or `None` (with a note) outside CI.
fn oracle_python() -> Option<PathBuf> {
    let root = workspace_root();
    let python = root.join("target/py-venv/bin/python");
    let usable = python.exists()
        && Command::new(&python)
            .args(["-c", "import yaml"])
            .status()
            .is_ok_and(|s| s.success());
    if usable {
        return Some(python);
    }
    let msg = format!(
        "PyYAML is missing from {}; run tests/legacy/setup-venv.sh",
        python.display()
    );
    if std::env::var_os("CI").is_some() {
        panic!("{msg}");
    }
    eprintln!("note: oracle checks skipped: {msg}");
    None
}

/// (agent, section) pairs the launcher's rule finds, sorted.
fn oracle(python: &Path, file: &Path) -> Vec<(String, String)> {
    let script = workspace_root().join("tests/legacy/launcher_rule.py");
    let out = Command::new(python)
        .arg(&script)
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} {}: {}",
        script.display(),
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut pairs: Vec<(String, String)> = text
        .lines()
        .map(|l| {
            let (name, section) = l.split_once('\t').unwrap();
            (name.to_string(), section.to_string())
        })
        .collect();
    pairs.sort();
    pairs
}

#[test]
fn the_importer_finds_exactly_the_agents_the_launcher_found() {
    let Some(python) = oracle_python() else {
        return;
    };
    let legacy = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/legacy");
    let mut files: Vec<PathBuf> = loading_files()
        .iter()
        .map(|f| shapes_dir().join(f))
        .collect();
    files.push(legacy.join("mainpc/startup_config.yaml"));
    files.push(legacy.join("pc2/startup_config.yaml"));
    for file in files {
        let found = oracle(&python, &file);
        assert!(
            !found.is_empty(),
            "{}: the oracle found nothing",
            file.display()
        );
        let l = load_file(&file, &opts()).unwrap();
        let mut imported: Vec<String> = l.config.agents().map(|a| a.name.clone()).collect();
        imported.sort();
        let names: Vec<String> = found.iter().map(|(n, _)| n.clone()).collect();
        assert_eq!(imported, names, "{}", file.display());
        // Without docker groups, the launcher's sections are the groups.
        if !l
            .warnings
            .iter()
            .any(|w| w.code.starts_with("legacy-ungrouped"))
            && std::fs::read_to_string(&file)
                .unwrap()
                .find("docker_groups")
                .is_none()
        {
            let mut by_group: Vec<(String, String)> = l
                .config
                .agents()
                .map(|a| (a.name.clone(), a.group.clone()))
                .collect();
            by_group.sort();
            assert_eq!(by_group, found, "{}", file.display());
        }
    }
}

#[test]
fn a_file_is_refused_for_an_agent_the_launcher_read_twice() {
    let Some(python) = oracle_python() else {
        return;
    };
    for file in corpus_files() {
        let path = shapes_dir().join(&file);
        let found = oracle(&python, &path);
        let mut twice: Vec<String> = found
            .windows(2)
            .filter(|w| w[0].0 == w[1].0)
            .map(|w| w[0].0.clone())
            .collect();
        twice.dedup();
        let reported: Vec<String> = match load_file(&path, &opts()) {
            Ok(_) => Vec::new(),
            Err(e) => e
                .diagnostics()
                .iter()
                .filter(|d| d.code == "duplicate-agent")
                .map(|d| d.message.split('`').nth(1).unwrap_or_default().to_string())
                .collect(),
        };
        assert_eq!(reported, twice, "{file}");
    }
}
