//! The CLI as a program: exit codes, JSON output, and the GPU verbs on the
//! NVML simulator without a daemon.

// Test code: a failed unwrap is the failure report.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The simulator library, built for this profile on first use.
fn sim_lib() -> PathBuf {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let st = Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", "nvml-sim", "--lib"])
            .current_dir(root())
            .status()
            .unwrap();
        assert!(st.success(), "building the NVML simulator failed");
        let exe = PathBuf::from(env!("CARGO_BIN_EXE_orchestratorctl"));
        exe.parent().unwrap().join("libnvml_sim.so")
    })
    .clone()
}

fn ctl(args: &[&str], sim_host: Option<&str>) -> Output {
    let state = tempfile::NamedTempFile::new().unwrap().into_temp_path();
    let mut c = Command::new(env!("CARGO_BIN_EXE_orchestratorctl"));
    c.args(args)
        .current_dir(root())
        .env("NO_COLOR", "1")
        .env("ORCHESTRATOR_SOCKET", "/nonexistent/orchestrator.sock")
        .env_remove("PORT_OFFSET");
    if let Some(host) = sim_host {
        c.env("ORCH_NVML_LIBRARY", sim_lib())
            .env("NVML_SIM_CONFIG", root().join(host))
            .env("NVML_SIM_STATE", &state);
    }
    let out = c.output().unwrap();
    drop(state);
    out
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn validate_reports_and_exits_by_the_documented_codes() {
    let out = ctl(
        &[
            "config",
            "validate",
            "config/mainpc/startup_config.yaml",
            "config/pc2/startup_config.yaml",
        ],
        None,
    );
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("config/mainpc/startup_config.yaml: valid (version 1, 11 groups, 54 agents, 0 warning(s))"), "{text}");
    assert!(
        text.contains(
            "config/pc2/startup_config.yaml: valid (version 1, 7 groups, 23 agents, 0 warning(s))"
        ),
        "{text}"
    );

    let out = ctl(
        &[
            "config",
            "validate",
            "orchestrator/config/tests/data/invalid/04-unknown-dependency.yaml",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("04-unknown-dependency.yaml:9:22"), "{err}");
    assert!(
        err.contains("help: did you mean `ServiceRegistry`?"),
        "{err}"
    );

    let out = ctl(&["config", "validate", "/nonexistent.yaml"], None);
    assert_eq!(out.status.code(), Some(5));
    let out = ctl(&["config", "validate"], None);
    assert_eq!(out.status.code(), Some(2));

    let v = json(&ctl(
        &[
            "-o",
            "json",
            "config",
            "validate",
            "orchestrator/config/tests/data/legacy/pc2/startup_config.yaml",
        ],
        None,
    ));
    assert_eq!(v[0]["format"], "legacy");
    assert_eq!(v[0]["agents"], 23);
    assert_eq!(v[0]["diagnostics"].as_array().unwrap().len(), 6);
    assert_eq!(v[0]["diagnostics"][0]["line"], 6);
}

#[test]
fn convert_writes_v1_that_validates_and_legacy_reads_the_port_offset() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("mainpc.v1.yaml");
    let out = ctl(
        &[
            "config",
            "convert",
            "orchestrator/config/tests/data/legacy/mainpc/startup_config.yaml",
            "--write",
            target.to_str().unwrap(),
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&ctl(
        &["-o", "json", "config", "validate", target.to_str().unwrap()],
        None,
    ));
    assert_eq!(
        (
            v[0]["format"].as_str(),
            v[0]["agents"].as_u64(),
            v[0]["groups"].as_u64()
        ),
        (Some("v1"), Some(54), Some(11))
    );
    let shown = json(&ctl(
        &[
            "-o",
            "json",
            "config",
            "show",
            "orchestrator/config/tests/data/legacy/mainpc/startup_config.yaml",
            "--port-offset",
            "100",
        ],
        None,
    ));
    let twin = shown["groups"][0]["agents"][1].clone();
    assert_eq!(twin["name"], "SystemDigitalTwin");
    assert_eq!(twin["ports"][0]["host_port"], 7320);
}

#[test]
fn completion_and_man_pages_are_generated() {
    let out = ctl(&["completion", "bash"], None);
    assert!(out.status.success());
    let script = String::from_utf8_lossy(&out.stdout);
    assert!(
        script.contains("_orchestratorctl()")
            && script.contains("validate")
            && script.contains("orchestratorctl__subcmd__top"),
        "not a bash completion"
    );
    let dir = tempfile::tempdir().unwrap();
    let out = ctl(&["man", "--dir", dir.path().to_str().unwrap()], None);
    assert!(out.status.success());
    for page in [
        "orchestratorctl.1",
        "orchestratorctl-group-start.1",
        "orchestratorctl-config-validate.1",
        "orchestratorctl-plan.1",
        "orchestratorctl-top.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(page))
            .unwrap_or_else(|_| panic!("{page} missing"));
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page} is not roff"
        );
    }
    // The synopsis names the verb as it is typed.
    let start = std::fs::read_to_string(dir.path().join("orchestratorctl-group-start.1")).unwrap();
    assert!(
        start.contains("\\fBorchestratorctl group start\\fR"),
        "{start}"
    );
    // Without --dir: the program's page on standard output, no files.
    let cwd = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_orchestratorctl"))
        .arg("man")
        .current_dir(cwd.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(".TH orchestratorctl 1"));
    assert_eq!(std::fs::read_dir(cwd.path()).unwrap().count(), 0);
}

#[test]
fn daemon_verbs_without_a_daemon_exit_4_and_say_why() {
    let out = ctl(&["status"], None);
    assert_eq!(out.status.code(), Some(4));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no such socket (is the daemon running?")
    );
    // A malformed target is refused before the daemon is asked...
    let out = ctl(&["logs", "not/a/target"], None);
    assert_eq!(out.status.code(), Some(2));
    // ...a bare agent name needs the daemon to find its group.
    let out = ctl(&["logs", "not-a-target"], None);
    assert_eq!(out.status.code(), Some(4));
}

/// `plan` output as (agent, slice kind, profile or memory) triples.
fn planned(host_file: &str, sim: &str) -> Vec<(String, String, String)> {
    let v = json(&ctl(&["-o", "json", "plan", host_file], Some(sim)));
    assert!(v["errors"].as_array().unwrap().is_empty(), "{v}");
    v["assignments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let s = &a["slice"];
            let detail = match s.get("profile") {
                Some(p) => p.as_str().unwrap().to_string(),
                // MPS memory is in bytes: shown here in whole GiB.
                None => format!("{}g", s["memory_bytes"].as_u64().unwrap() >> 30),
            };
            (
                a["replica"]["agent"].as_str().unwrap().to_string(),
                s["kind"].as_str().unwrap().to_string(),
                detail,
            )
        })
        .collect()
}

fn t(a: &str, k: &str, d: &str) -> (String, String, String) {
    (a.into(), k.into(), d.into())
}

#[test]
fn plan_places_every_gpu_agent_of_both_hosts_on_their_own_cards() {
    assert_eq!(
        planned(
            "config/mainpc/startup_config.yaml",
            "config/mainpc/gpus.sim.yaml"
        ),
        [
            t("FaceRecognitionAgent", "mps", "4g"),
            t("STTService", "mps", "4g"),
            t("TTSService", "mps", "3g"),
            t("LocalFineTunerAgent", "mps", "5g"),
            t("ChainOfThoughtAgent", "mps", "6g"),
        ]
    );
    assert_eq!(
        planned("config/pc2/startup_config.yaml", "config/pc2/gpus.sim.yaml"),
        [
            t("VisionProcessingAgent", "mps", "4g"),
            t("DreamWorldAgent", "mps", "3g"),
            t("DreamingModeAgent", "mps", "2g")
        ]
    );
}

#[test]
fn the_same_configs_get_mig_slices_on_a100_and_h100() {
    assert_eq!(
        planned(
            "config/mainpc/startup_config.yaml",
            "config/sim/lab-h100.yaml"
        ),
        [
            t("FaceRecognitionAgent", "mig", "1g.10gb"),
            t("STTService", "mig", "1g.10gb"),
            t("TTSService", "mig", "1g.10gb"),
            t("LocalFineTunerAgent", "mig", "1g.10gb"),
            t("ChainOfThoughtAgent", "mig", "2g.20gb"),
        ]
    );
    // A100-40GBs have no 2g.20gb: the first fallback, 2g.10gb, goes on the
    // second card once four 1g.10gb fill the first one's memory slices.
    assert_eq!(
        planned(
            "config/mainpc/startup_config.yaml",
            "config/sim/lab-2xa100.yaml"
        ),
        [
            t("FaceRecognitionAgent", "mig", "1g.10gb"),
            t("STTService", "mig", "1g.10gb"),
            t("TTSService", "mig", "1g.10gb"),
            t("LocalFineTunerAgent", "mig", "1g.10gb"),
            t("ChainOfThoughtAgent", "mig", "2g.10gb"),
        ]
    );
    assert!(
        planned("config/pc2/startup_config.yaml", "config/sim/lab-a100.yaml")
            .iter()
            .all(|(_, k, p)| k == "mig" && p == "1g.10gb")
    );
    let v = json(&ctl(
        &["-o", "json", "plan", "config/mainpc/startup_config.yaml"],
        Some("config/sim/lab-h100.yaml"),
    ));
    assert_eq!(v["mig_create"].as_array().unwrap().len(), 5);
    // One A100-40GB holds 8 memory slices: the fifth MIG agent does not
    // fit, and MPS is not allowed on a MIG card.
    let out = ctl(
        &["plan", "config/mainpc/startup_config.yaml"],
        Some("config/sim/lab-a100.yaml"),
    );
    assert_eq!(out.status.code(), Some(7));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("cannot place: ChainOfThoughtAgent wants mig 2g.20gb, falling back to mig 2g.10gb, then mps memory=6g compute=25%"), "{text}");
    assert!(
        text.contains("no free placement for 2g.10gb beside 1g.10gb@0"),
        "{text}"
    );
    assert!(text.contains("its policy allows only mig"), "{text}");
}

#[test]
fn an_unplaceable_request_exits_7_and_names_the_gpu_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.yaml");
    std::fs::write(
        &cfg,
        "version: 1\nhost: {name: h}\ndefaults: {image: i}\ngroups:\n  vision_gpu:\n    agents:\n      FaceRecognitionAgent: {gpu: {slice: mig, profile: 1g.10gb}}\n",
    )
    .unwrap();
    let out = ctl(
        &["plan", cfg.to_str().unwrap()],
        Some("config/mainpc/gpus.sim.yaml"),
    );
    assert_eq!(out.status.code(), Some(7));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("FaceRecognitionAgent wants mig 1g.10gb; GPU 0 is an NVIDIA GeForce RTX 4090, which has no MIG, and no fallback is given"),
        "{text}"
    );
}

#[test]
fn gpu_reads_the_simulator_without_a_daemon_and_mig_mode_waits_for_a_reset() {
    let v = json(&ctl(
        &["-o", "json", "gpu"],
        Some("config/sim/lab-mixed.yaml"),
    ));
    let names: Vec<&str> = v["gpus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["info"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "NVIDIA A100-SXM4-40GB",
            "NVIDIA A100-SXM4-40GB",
            "NVIDIA H100 80GB HBM3",
            "NVIDIA GeForce RTX 4090"
        ]
    );
    assert_eq!(v["gpus"][1]["info"]["mig"]["mode"], "disabled");
    // Confirmation is required when nobody can answer a prompt.
    let out = ctl(
        &["gpu", "mig", "enable", "--gpu", "1"],
        Some("config/sim/lab-mixed.yaml"),
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ctl(
        &["gpu", "mig", "enable", "--gpu", "1", "--yes"],
        Some("config/sim/lab-mixed.yaml"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "MIG mode will be enabled on GPU 1 (NVIDIA A100-SXM4-40GB) after a GPU reset (`nvidia-smi -r -i 1`) or a reboot; nothing changes until then"
    );
    let out = ctl(
        &["gpu", "mig", "enable", "--gpu", "3", "--yes"],
        Some("config/sim/lab-mixed.yaml"),
    );
    assert_eq!(out.status.code(), Some(1), "a GeForce card has no MIG");
    // Without NVML at all: a clear reason, and the rest still works.
    let mut c = Command::new(env!("CARGO_BIN_EXE_orchestratorctl"));
    let out = c
        .args(["gpu", "--nvml", "/nonexistent/libnvidia-ml.so.1"])
        .env("ORCHESTRATOR_SOCKET", "/nonexistent/orchestrator.sock")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("no GPUs usable") && text.contains("CPU-only groups run normally"),
        "{text}"
    );
}

#[test]
fn the_shipped_compose_files_are_the_current_exports() {
    for host in ["mainpc", "pc2"] {
        let out = ctl(
            &[
                "export",
                "compose",
                &format!("config/{host}/startup_config.yaml"),
            ],
            None,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let shipped =
            std::fs::read_to_string(root().join(format!("compose/{host}.compose.yaml"))).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            shipped,
            "compose/{host}.compose.yaml is stale: regenerate it with `orchestratorctl export compose config/{host}/startup_config.yaml --write compose/{host}.compose.yaml`"
        );
    }
}

#[test]
fn file_verbs_print_json_with_o_json() {
    let out = ctl(
        &[
            "-o",
            "json",
            "export",
            "compose",
            "config/pc2/startup_config.yaml",
        ],
        None,
    );
    let v = json(&out);
    assert!(v["services"].is_object(), "{v}");
    let out = ctl(
        &[
            "-o",
            "json",
            "export",
            "k8s",
            "config/pc2/startup_config.yaml",
        ],
        None,
    );
    let v = json(&out);
    let kinds: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"Deployment") && kinds.contains(&"Service"),
        "{kinds:?}"
    );
    let out = ctl(
        &[
            "-o",
            "json",
            "config",
            "convert",
            "config/pc2/startup_config.yaml",
        ],
        None,
    );
    assert_eq!(json(&out)["version"], 1);
}
