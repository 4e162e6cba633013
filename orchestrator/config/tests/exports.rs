//! The Compose and Kubernetes exports, checked two ways: exact fields for a
//! small config that exercises every mapping, and the real tools on the
//! shipped host configs and the legacy fixtures (`docker-compose config`,
//! `kubernetes-validate --strict`), plus one group of mainpc brought up
//! with `docker-compose up` until every container is healthy, which proves
//! the health checks work inside the `FROM scratch` agent image.
//!
//! A missing tool fails the test with a message saying how to get it.

// Test helpers outside #[test] functions are test code too; a failed
// unwrap there is a test failure with its location, which is what we want.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use orch_config::export::compose::{self, ComposeOptions};
use orch_config::export::k8s::{self, K8sOptions};
use orch_config::export::{ExportError, dns_label};
use orch_config::{LoadOptions, load_file, load_str};
use orch_core::model::HostConfig;
use serde::Deserialize;
use serde_yaml::Value;

/// The Kubernetes version the manifests are validated against.
const K8S_VERSION: &str = "1.33.0";
const AGENT_IMAGE: &str = "orchestrator-agent:latest";

// ---------------------------------------------------------------------------
// helpers

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The shipped configs and legacy fixtures: (label, path, services).
fn shipped() -> Vec<(&'static str, PathBuf, usize)> {
    let root = root();
    let legacy = root.join("orchestrator/config/tests/data/legacy");
    vec![
        ("mainpc", root.join("config/mainpc/startup_config.yaml"), 54),
        ("pc2", root.join("config/pc2/startup_config.yaml"), 23),
        (
            "legacy-mainpc",
            legacy.join("mainpc/startup_config.yaml"),
            54,
        ),
        ("legacy-pc2", legacy.join("pc2/startup_config.yaml"), 23),
    ]
}

fn load(path: &Path) -> HostConfig {
    load_file(path, &LoadOptions::default()).unwrap().config
}

fn small(text: &str) -> HostConfig {
    match load_str("small.yaml", text, &LoadOptions::default()) {
        Ok(l) => l.config,
        Err(e) => panic!("{e}: {:#?}", e.diagnostics()),
    }
}

fn compose_doc(config: &HostConfig, opts: &ComposeOptions) -> Value {
    let text = compose::render(config, opts).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

fn k8s_docs(config: &HostConfig, opts: &K8sOptions) -> Vec<Value> {
    let text = k8s::render(config, opts).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn yaml(text: &str) -> Value {
    serde_yaml::from_str(text).unwrap()
}

fn keys(v: &Value) -> Vec<String> {
    v.as_mapping()
        .unwrap_or_else(|| panic!("not a mapping: {v:?}"))
        .keys()
        .map(|k| k.as_str().unwrap().to_string())
        .collect()
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("orch-export-{tag}-{}", unique()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Unique per call and per process: a name for temp dirs and projects.
fn unique() -> String {
    static NEXT: Mutex<u32> = Mutex::new(0);
    let mut next = NEXT.lock().unwrap();
    *next += 1;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{}{:x}{}", std::process::id(), nanos, *next)
}

/// Runs `cmd` to its end, failing the test if it takes longer than `limit`.
fn run(cmd: &mut Command, limit: Duration) -> Output {
    let shown = format!("{cmd:?}");
    let child = match cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => panic!("cannot run {shown}: {e}"),
    };
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{shown} did not finish within {limit:?}");
        }
    }
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// docker-compose, which must be installed: the export is checked against
/// the real tool.
fn docker_compose() -> Command {
    let probe = Command::new("docker-compose")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match probe {
        Ok(status) if status.success() => Command::new("docker-compose"),
        other => panic!(
            "docker-compose is needed to check the Compose export and does not run ({other:?}); \
             install it (Debian: `apt-get install docker-compose`, version 1.29)"
        ),
    }
}

/// The kubernetes-validate program of the project's venv, set up by
/// `tests/exports/setup-venv.sh` when missing.
fn kubernetes_validate() -> PathBuf {
    static SETUP: Mutex<()> = Mutex::new(());
    let _one_at_a_time = SETUP.lock().unwrap_or_else(|e| e.into_inner());
    let root = root();
    let tool = root.join("target/py-venv/bin/kubernetes-validate");
    if !tool.exists() {
        let script = root.join("tests/exports/setup-venv.sh");
        let out = run(Command::new("bash").arg(&script), Duration::from_secs(600));
        assert!(
            out.status.success(),
            "kubernetes-validate is missing and {} could not install it (it needs python3 with venv and PyPI):\n{}",
            script.display(),
            text(&out)
        );
    }
    assert!(
        tool.exists(),
        "kubernetes-validate is still missing at {} after setup",
        tool.display()
    );
    tool
}

// ---------------------------------------------------------------------------
// a small config that exercises every mapping

const SMALL: &str = r#"
version: 1
host: {name: Lab_Host}
defaults:
  image: orchestrator-agent:latest
  health: {http: {port: 8080}, interval: 5s, timeout: 2s, retries: 3, start_period: 30s}
  resources: {cpus: 0.8, memory: 2g}
runtime: {network: lab-net}
groups:
  base:
    agents:
      Registry:
        ports: ["7200:7200"]
        config: {backend: memory, nested: {a: 1, b: [true, "x"]}}
        script_path: agents/registry.py
      Store:
        health: none
        volumes: ["models:/models:ro", "/srv/data:/data"]
      Plugin:
        required: false
  gpu:
    depends_on: [base]
    agents:
      FaceRecognitionAgent:
        depends_on: [Registry]
        ports: ["5610:5610", "127.0.0.1:9000:9000/udp"]
        gpu: {slice: mig, profile: 1g.10gb, fallback: {slice: mps, memory: 4g, compute: 20%}}
        health: {tcp: {port: 5610}}
      Whisper:
        depends_on: [FaceRecognitionAgent]
        gpu: {slice: mps, memory: 4g, compute: 25%}
        health: {exec: [/bin/check, --quick]}
      Trainer:
        gpu: exclusive
        replicas: 2
        restart: {policy: never}
        security: {cap_add: [SYS_NICE], read_only: true}
        resources: {pids: 256}
        env: {GREETING: "costs $5 in ${HOME}"}
        command: [serve, "--port=$(PORT)"]
        health: none
        stop_timeout: 1m30s
  other:
    agents:
      Lonely: {}
"#;

// ---------------------------------------------------------------------------
// Compose: exact fields

#[test]
fn compose_services_carry_the_agent_contract() {
    let doc = compose_doc(&small(SMALL), &ComposeOptions::default());
    assert_eq!(
        keys(&doc["services"]),
        [
            "registry",
            "store",
            "plugin",
            "face-recognition-agent",
            "whisper",
            "trainer",
            "lonely"
        ]
    );
    let reg = &doc["services"]["registry"];
    assert_eq!(reg["image"], "orchestrator-agent:latest");
    let env = &reg["environment"];
    assert_eq!(env["ORCH_HOST"], "Lab_Host");
    assert_eq!(env["ORCH_GROUP"], "base");
    assert_eq!(env["ORCH_AGENT"], "Registry");
    assert_eq!(env["ORCH_REPLICA"], "0");
    assert_eq!(env["ORCH_GPU_SLICE"], "none");
    assert_eq!(env["ORCH_LISTEN_PORTS"], "7200,8080");
    assert_eq!(
        env["ORCH_AGENT_CONFIG"],
        r#"{"backend":"memory","nested":{"a":1,"b":[true,"x"]}}"#
    );
    assert_eq!(env["ORCH_SCRIPT_PATH"], "agents/registry.py");
    assert_eq!(
        reg["labels"],
        yaml(
            "{io.orchestrator.agent: Registry, io.orchestrator.group: base, io.orchestrator.host: Lab_Host}"
        )
    );
    assert_eq!(reg["networks"], yaml("{lab-net: {aliases: [Registry]}}"));
    assert_eq!(reg["ports"], yaml(r#"["7200:7200"]"#));
    assert_eq!(reg["restart"], "on-failure");
    assert_eq!(reg["stop_grace_period"], "10s");
    assert_eq!(reg["cpus"], yaml("0.8"));
    assert_eq!(reg["mem_limit"], yaml("2147483648"));
    assert_eq!(reg["cap_drop"], yaml("[ALL]"));
    assert_eq!(reg["security_opt"], yaml(r#"["no-new-privileges:true"]"#));
    assert_eq!(reg["deploy"], yaml("{replicas: 1}"));
    assert!(reg.get("container_name").is_none(), "services must scale");

    let trainer = &doc["services"]["trainer"];
    assert_eq!(trainer["deploy"]["replicas"], yaml("2"));
    let env = &trainer["environment"];
    assert!(env.get("ORCH_REPLICA").is_none(), "{env:?}");
    assert_eq!(env["ORCH_HOST"], "Lab_Host");
    // No ports and no probe: the agent's default port applies.
    assert!(env.get("ORCH_LISTEN_PORTS").is_none(), "{env:?}");
    // Compose would interpolate `$`; the supervisor passes it on.
    assert_eq!(env["GREETING"], "costs $$5 in $${HOME}");
    assert_eq!(trainer["command"], yaml(r#"[serve, "--port=$$(PORT)"]"#));
    assert_eq!(trainer["restart"], "no");
    assert_eq!(trainer["stop_grace_period"], "90s");
    assert_eq!(trainer["pids_limit"], yaml("256"));
    assert_eq!(trainer["cap_add"], yaml("[SYS_NICE]"));
    assert_eq!(trainer["read_only"], yaml("true"));

    let store = &doc["services"]["store"];
    assert_eq!(
        store["volumes"],
        yaml(r#"["models:/models:ro", "/srv/data:/data"]"#)
    );
    assert_eq!(doc["volumes"], yaml("{models: {}}"));
    assert_eq!(doc["networks"], yaml("{lab-net: {driver: bridge}}"));
    assert_eq!(doc["x-orchestrator"]["host"], "Lab_Host");
    assert_eq!(doc["x-orchestrator"]["project"], "lab-host");
}

#[test]
fn compose_depends_on_waits_for_health_only_where_there_is_a_probe() {
    let doc = compose_doc(&small(SMALL), &ComposeOptions::default());
    let deps = |svc: &str| doc["services"][svc]["depends_on"].clone();
    // Registry has a probe; Store has none; Plugin is optional, so its
    // health never holds anyone. Face starts its group, so it also waits
    // for the group `gpu` depends on.
    assert_eq!(
        deps("face-recognition-agent"),
        yaml(
            "{registry: {condition: service_healthy}, store: {condition: service_started}, plugin: {condition: service_started}}"
        )
    );
    // Whisper waits through Face, which has a TCP probe.
    assert_eq!(
        deps("whisper"),
        yaml("{face-recognition-agent: {condition: service_healthy}}")
    );
    assert_eq!(
        keys(&deps("trainer")),
        ["registry", "store", "plugin"],
        "starts its group"
    );
    assert!(doc["services"]["registry"].get("depends_on").is_none());
    assert!(doc["services"]["lonely"].get("depends_on").is_none());
}

#[test]
fn compose_healthchecks_run_the_probe_command_or_the_exec_command() {
    let config = small(SMALL);
    let doc = compose_doc(&config, &ComposeOptions::default());
    let hc = |svc: &str| doc["services"][svc]["healthcheck"].clone();
    assert_eq!(
        hc("registry"),
        yaml(
            r#"{test: [CMD, /reference-agent, --probe, "http://127.0.0.1:8080/health"], interval: 5s, timeout: 2s, retries: 3, start_period: 30s}"#
        )
    );
    assert_eq!(
        hc("face-recognition-agent")["test"],
        yaml(r#"[CMD, /reference-agent, --probe, "tcp://127.0.0.1:5610"]"#)
    );
    assert_eq!(hc("whisper")["test"], yaml("[CMD, /bin/check, --quick]"));
    assert!(doc["services"]["store"].get("healthcheck").is_none());
    assert!(doc["services"]["trainer"].get("healthcheck").is_none());

    let opts = ComposeOptions {
        probe_command: vec!["/my-agent".into(), "health".into()],
        ..ComposeOptions::default()
    };
    let doc = compose_doc(&config, &opts);
    assert_eq!(
        doc["services"]["registry"]["healthcheck"]["test"],
        yaml(r#"[CMD, /my-agent, health, "http://127.0.0.1:8080/health"]"#)
    );
    let opts = ComposeOptions {
        probe_command: vec![],
        ..ComposeOptions::default()
    };
    assert_eq!(
        compose::render(&config, &opts),
        Err(ExportError::EmptyProbeCommand)
    );
}

#[test]
fn compose_gpu_requests_reserve_one_nvidia_gpu_and_say_what_compose_cannot() {
    let config = small(SMALL);
    let doc = compose_doc(&config, &ComposeOptions::default());
    let one_gpu =
        yaml("{reservations: {devices: [{driver: nvidia, count: 1, capabilities: [gpu]}]}}");

    let face = &doc["services"]["face-recognition-agent"];
    assert_eq!(face["deploy"]["resources"], one_gpu);
    assert_eq!(face["labels"]["io.orchestrator.gpu-mig-profile"], "1g.10gb");
    assert_eq!(face["labels"]["io.orchestrator.gpu-request"], "mig:1g.10gb");
    assert_eq!(
        face["labels"]["io.orchestrator.gpu-fallback"],
        "mig:1g.10gb -> mps:memory=4g,compute=20%"
    );
    assert_eq!(face["environment"]["ORCH_GPU_SLICE"], "mig:1g.10gb");
    assert!(
        face.get("ipc").is_none(),
        "the first choice is MIG, not MPS"
    );
    // Published ports as written, UDP included; ORCH_LISTEN_PORTS only TCP.
    assert_eq!(
        face["ports"],
        yaml(r#"["5610:5610", "127.0.0.1:9000:9000/udp"]"#)
    );
    assert_eq!(face["environment"]["ORCH_LISTEN_PORTS"], "5610");

    let whisper = &doc["services"]["whisper"];
    assert_eq!(whisper["deploy"]["resources"], one_gpu);
    assert_eq!(whisper["ipc"], "host");
    let env = &whisper["environment"];
    assert_eq!(env["ORCH_GPU_SLICE"], "mps:memory=4g,compute=25%");
    assert_eq!(env["CUDA_MPS_PIPE_DIRECTORY"], "/tmp/nvidia-mps");
    assert_eq!(env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"], "25");
    assert_eq!(env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"], "0=4G");
    assert_eq!(
        whisper["volumes"],
        yaml(r#"["/tmp/nvidia-mps:/tmp/nvidia-mps"]"#)
    );

    let trainer = &doc["services"]["trainer"];
    assert_eq!(trainer["deploy"]["resources"], one_gpu);
    assert!(
        !serde_yaml::to_string(&doc).unwrap().contains("device_ids"),
        "a config knows no GPU UUIDs"
    );

    // Off, or on a host that injects GPUs by environment only: no device
    // requests, the rest stays.
    let off = ComposeOptions {
        reserve_gpus: false,
        ..ComposeOptions::default()
    };
    let env_only = small(&SMALL.replace(
        "runtime: {network: lab-net}",
        "runtime: {network: lab-net, gpu_injection: env}",
    ));
    for doc in [
        compose_doc(&config, &off),
        compose_doc(&env_only, &ComposeOptions::default()),
    ] {
        for svc in ["face-recognition-agent", "whisper", "trainer"] {
            let s = &doc["services"][svc];
            assert!(s["deploy"].get("resources").is_none(), "{svc}: {s:?}");
            assert!(s["labels"].get("io.orchestrator.gpu-request").is_some());
        }
    }
}

#[test]
fn compose_can_declare_ports_without_publishing_them() {
    let opts = ComposeOptions {
        publish_ports: false,
        ..ComposeOptions::default()
    };
    let doc = compose_doc(&small(SMALL), &opts);
    let face = &doc["services"]["face-recognition-agent"];
    assert!(face.get("ports").is_none());
    assert_eq!(face["expose"], yaml(r#"["5610", "9000/udp"]"#));
}

/// An agent whose replicas each publish a port of a host port range.
const RANGED: &str = "version: 1
host: {name: h1}
defaults: {image: orchestrator-agent:latest}
groups:
  web:
    agents:
      Front:
        ports: [\"127.0.0.1:8300-8303:8080\"]
        replicas: 2
        autoscale: {max: 4, cpu: 70%}
";

#[test]
fn a_host_port_range_is_published_as_compose_writes_it() {
    let config = small(RANGED);
    let doc = compose_doc(&config, &ComposeOptions::default());
    let front = &doc["services"]["front"];
    assert_eq!(front["ports"], yaml(r#"["127.0.0.1:8300-8303:8080"]"#));
    assert_eq!(front["deploy"]["replicas"], yaml("2"));
    // docker-compose reads the range as one published range.
    let dir = TempDir::new("compose-range");
    let file = dir.write(
        "ranged.yaml",
        &compose::render(&config, &ComposeOptions::default()).unwrap(),
    );
    let out = run(
        docker_compose().arg("-f").arg(&file).arg("config"),
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "{}", text(&out));
    let normalized: Value = serde_yaml::from_slice(&out.stdout).unwrap();
    assert_eq!(
        normalized["services"]["front"]["ports"],
        yaml(r#"["127.0.0.1:8300-8303:8080/tcp"]"#)
    );
}

#[test]
fn k8s_has_no_host_ports_so_a_range_is_the_service_port() {
    let docs = k8s_docs(&small(RANGED), &K8sOptions::default());
    let svc = find(&docs, "Service", "front");
    assert_eq!(
        svc["spec"]["ports"],
        yaml("[{name: tcp-8080, protocol: TCP, port: 8080, targetPort: tcp-8080}]")
    );
    let deployment = find(&docs, "Deployment", "front");
    assert_eq!(deployment["spec"]["replicas"], yaml("2"));
    assert!(!format!("{deployment:?}").contains("8300"));
}

#[test]
fn a_group_filter_pulls_in_what_the_group_depends_on() {
    let config = small(SMALL);
    let opts = ComposeOptions {
        groups: vec!["gpu".into()],
        ..ComposeOptions::default()
    };
    let doc = compose_doc(&config, &opts);
    assert_eq!(
        keys(&doc["services"]),
        [
            "registry",
            "store",
            "plugin",
            "face-recognition-agent",
            "whisper",
            "trainer"
        ]
    );
    assert_eq!(doc["x-orchestrator"]["groups"], yaml("[base, gpu]"));
    let k = K8sOptions {
        groups: vec!["other".into()],
        ..K8sOptions::default()
    };
    let docs = k8s_docs(&config, &k);
    let kinds: Vec<String> = docs
        .iter()
        .map(|d| {
            format!(
                "{}/{}",
                d["kind"].as_str().unwrap(),
                d["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(kinds, ["Namespace/lab-host", "Deployment/lonely"]);

    let err = compose::render(
        &config,
        &ComposeOptions {
            groups: vec!["gpus".into()],
            ..ComposeOptions::default()
        },
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "host `Lab_Host` has no group `gpus`; its groups are: base, gpu, other"
    );
}

#[test]
fn names_are_dns_labels_stable_and_collision_free() {
    assert_eq!(dns_label("FaceRecognitionAgent"), "face-recognition-agent");
    assert_eq!(dns_label("STTService"), "stt-service");
    assert_eq!(dns_label("NLLBAdapter"), "nllb-adapter");
    let config = small(
        "version: 1\nhost: {name: h}\ngroups:\n  g:\n    agents:\n      FooBar: {image: x}\n      foo_bar: {image: x}\n",
    );
    let doc = compose_doc(&config, &ComposeOptions::default());
    let names = keys(&doc["services"]);
    assert_eq!(names.len(), 2);
    assert_ne!(names[0], names[1]);
    for name in &names {
        assert!(
            name.starts_with("foo-bar-") && name.len() == "foo-bar-".len() + 8,
            "{name}"
        );
    }
    // Every name of the shipped configs is a DNS-1035 label.
    for (label, path, _) in shipped() {
        for agent in load(&path).agents() {
            let n = dns_label(&agent.name);
            assert!(
                n.len() <= 63
                    && n.starts_with(|c: char| c.is_ascii_lowercase())
                    && n.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !n.ends_with('-'),
                "{label}: {} -> {n}",
                agent.name
            );
        }
    }
}

#[test]
fn compose_rejects_a_bad_project_name() {
    let opts = ComposeOptions {
        project_name: Some("My Project".into()),
        ..ComposeOptions::default()
    };
    let err = compose::render(&small(SMALL), &opts).unwrap_err();
    assert!(matches!(err, ExportError::InvalidName { .. }), "{err}");
}

// ---------------------------------------------------------------------------
// Kubernetes: exact fields

#[test]
fn k8s_deployments_carry_resources_probes_and_gpu_requests() {
    let docs = k8s_docs(&small(SMALL), &K8sOptions::default());
    let ns = find(&docs, "Namespace", "lab-host");
    assert_eq!(ns["apiVersion"], "v1");
    assert_eq!(
        ns["metadata"]["annotations"]["io.orchestrator.host"],
        "Lab_Host"
    );

    let face = find(&docs, "Deployment", "face-recognition-agent");
    assert_eq!(face["apiVersion"], "apps/v1");
    assert_eq!(face["metadata"]["namespace"], "lab-host");
    assert_eq!(
        face["metadata"]["labels"],
        yaml(
            "{app.kubernetes.io/name: face-recognition-agent, app.kubernetes.io/part-of: gpu, app.kubernetes.io/managed-by: orchestratorctl}"
        )
    );
    assert_eq!(
        face["spec"]["selector"],
        yaml("{matchLabels: {app.kubernetes.io/name: face-recognition-agent}}")
    );
    assert_eq!(face["spec"]["strategy"], yaml("{type: Recreate}"));
    let ann = &face["metadata"]["annotations"];
    assert_eq!(ann["io.orchestrator.agent"], "FaceRecognitionAgent");
    assert_eq!(ann["io.orchestrator.group"], "gpu");
    assert_eq!(ann["io.orchestrator.depends-on"], "registry,store,plugin");
    assert_eq!(ann["io.orchestrator.gpu-sharing"], "mig");
    assert_eq!(ann["io.orchestrator.mig-profile"], "1g.10gb");
    assert_eq!(
        ann["io.orchestrator.gpu-fallback"],
        "mig:1g.10gb -> mps:memory=4g,compute=20%"
    );
    assert_eq!(face["spec"]["template"]["metadata"]["annotations"], *ann);
    let pod = &face["spec"]["template"]["spec"];
    assert_eq!(pod["enableServiceLinks"], yaml("false"));
    assert_eq!(pod["terminationGracePeriodSeconds"], yaml("10"));
    let c = &pod["containers"][0];
    assert_eq!(c["name"], "face-recognition-agent");
    assert_eq!(c["image"], "orchestrator-agent:latest");
    assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    assert_eq!(
        c["resources"],
        yaml(
            "{requests: {cpu: 800m, memory: 2Gi}, limits: {cpu: 800m, memory: 2Gi, nvidia.com/mig-1g.10gb: 1}}"
        )
    );
    assert_eq!(
        c["livenessProbe"],
        yaml("{tcpSocket: {port: 5610}, periodSeconds: 5, timeoutSeconds: 2, failureThreshold: 3}")
    );
    assert_eq!(c["readinessProbe"], c["livenessProbe"]);
    // 30s of start period at 5s, then the 3 retries.
    assert_eq!(
        c["startupProbe"],
        yaml("{tcpSocket: {port: 5610}, periodSeconds: 5, timeoutSeconds: 2, failureThreshold: 9}")
    );
    assert_eq!(
        c["ports"],
        yaml(
            "[{name: tcp-5610, containerPort: 5610, protocol: TCP}, {name: udp-9000, containerPort: 9000, protocol: UDP}]"
        )
    );
    assert_eq!(
        c["securityContext"],
        yaml(
            "{allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}, readOnlyRootFilesystem: false}"
        )
    );
    let env: Vec<(String, String)> = c["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["value"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        env.contains(&("ORCH_GPU_SLICE".into(), "mig:1g.10gb".into())),
        "{env:?}"
    );
    assert!(
        env.contains(&("ORCH_AGENT".into(), "FaceRecognitionAgent".into())),
        "{env:?}"
    );

    let reg = &find(&docs, "Deployment", "registry")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        reg["livenessProbe"]["httpGet"],
        yaml("{path: /health, port: 8080}")
    );
    assert_eq!(
        reg["ports"],
        yaml(
            "[{name: tcp-7200, containerPort: 7200, protocol: TCP}, {name: health, containerPort: 8080, protocol: TCP}]"
        )
    );

    let whisper = find(&docs, "Deployment", "whisper");
    let c = &whisper["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        c["livenessProbe"]["exec"],
        yaml("{command: [/bin/check, --quick]}")
    );
    assert_eq!(c["resources"]["limits"]["nvidia.com/gpu"], yaml("1"));
    let ann = &whisper["metadata"]["annotations"];
    assert_eq!(ann["io.orchestrator.gpu-sharing"], "mps");
    assert_eq!(ann["io.orchestrator.mps-memory"], "4g");
    assert_eq!(ann["io.orchestrator.mps-compute"], "25%");
    assert_eq!(ann["io.orchestrator.depends-on"], "face-recognition-agent");

    let trainer = find(&docs, "Deployment", "trainer");
    assert_eq!(trainer["spec"]["replicas"], yaml("2"));
    assert_eq!(
        trainer["metadata"]["annotations"]["io.orchestrator.restart"],
        "never"
    );
    let pod = &trainer["spec"]["template"]["spec"];
    assert_eq!(pod["terminationGracePeriodSeconds"], yaml("90"));
    let c = &pod["containers"][0];
    assert!(c.get("livenessProbe").is_none() && c.get("startupProbe").is_none());
    assert_eq!(c["args"], yaml(r#"[serve, "--port=$$(PORT)"]"#));
    assert_eq!(c["resources"]["limits"]["nvidia.com/gpu"], yaml("1"));
    assert_eq!(
        c["securityContext"],
        yaml(
            "{allowPrivilegeEscalation: false, capabilities: {drop: [ALL], add: [SYS_NICE]}, readOnlyRootFilesystem: true}"
        )
    );
    let greeting = c["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "GREETING")
        .unwrap();
    assert_eq!(greeting["value"], "costs $$5 in $${HOME}");
    assert!(
        !c["env"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "ORCH_REPLICA"),
        "two replicas share one environment"
    );

    let store = find(&docs, "Deployment", "store");
    let pod = &store["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"],
        yaml(
            "[{name: volume-0, persistentVolumeClaim: {claimName: models, readOnly: true}}, {name: volume-1, hostPath: {path: /srv/data}}]"
        )
    );
    assert_eq!(
        pod["containers"][0]["volumeMounts"],
        yaml(
            "[{name: volume-0, mountPath: /models, readOnly: true}, {name: volume-1, mountPath: /data}]"
        )
    );
}

#[test]
fn k8s_services_exist_for_agents_with_ports() {
    let docs = k8s_docs(&small(SMALL), &K8sOptions::default());
    let services: Vec<&str> = docs
        .iter()
        .filter(|d| d["kind"] == "Service")
        .map(|d| d["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(services, ["registry", "face-recognition-agent"]);
    let face = find(&docs, "Service", "face-recognition-agent");
    assert_eq!(
        face["spec"],
        yaml(
            "{type: ClusterIP, selector: {app.kubernetes.io/name: face-recognition-agent}, ports: [{name: tcp-5610, protocol: TCP, port: 5610, targetPort: tcp-5610}, {name: udp-9000, protocol: UDP, port: 9000, targetPort: udp-9000}]}"
        )
    );
}

#[test]
fn k8s_namespace_option_and_refusals() {
    let config = small(SMALL);
    let opts = K8sOptions {
        namespace: Some("agents-lab".into()),
        ..K8sOptions::default()
    };
    let docs = k8s_docs(&config, &opts);
    assert_eq!(docs[0]["metadata"]["name"], "agents-lab");
    assert!(
        docs[1..]
            .iter()
            .all(|d| d["metadata"]["namespace"] == "agents-lab")
    );

    let bad = K8sOptions {
        namespace: Some("Agents_Lab".into()),
        ..K8sOptions::default()
    };
    let err = k8s::render(&config, &bad).unwrap_err();
    assert!(matches!(err, ExportError::InvalidName { .. }), "{err}");

    let relative = small(&SMALL.replace("/srv/data:/data", "./data:/data"));
    let err = k8s::render(&relative, &K8sOptions::default()).unwrap_err();
    assert!(
        matches!(&err, ExportError::Unsupported { agent, .. } if agent == "Store"),
        "{err}"
    );
    // Compose resolves it against the file, as the supervisor does not
    // need to: it is written as it is.
    let doc = compose_doc(&relative, &ComposeOptions::default());
    assert_eq!(doc["services"]["store"]["volumes"][1], "./data:/data");
}

// ---------------------------------------------------------------------------
// the real tools

/// What the real tools check: the shipped configs, the legacy fixtures,
/// and the small config with every mapping. (label, config, source).
fn tool_inputs() -> Vec<(&'static str, HostConfig, Option<PathBuf>)> {
    let mut inputs: Vec<_> = shipped()
        .into_iter()
        .map(|(label, path, agents)| {
            let config = load(&path);
            assert_eq!(config.agent_count(), agents, "{label}");
            (label, config, Some(path))
        })
        .collect();
    inputs.push(("small", small(SMALL), None));
    inputs
}

#[test]
fn docker_compose_accepts_every_shipped_config() {
    let dir = TempDir::new("compose");
    for (label, config, path) in tool_inputs() {
        let services = config.agent_count();
        let opts = ComposeOptions {
            source: path.map(|p| p.display().to_string()),
            ..ComposeOptions::default()
        };
        let file = dir.write(
            &format!("{label}.yaml"),
            &compose::render(&config, &opts).unwrap(),
        );
        let out = run(
            docker_compose().arg("-f").arg(&file).arg("config"),
            Duration::from_secs(120),
        );
        assert!(out.status.success(), "{label}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("WARNING"),
            "{label}: docker-compose warned:\n{stderr}"
        );
        let normalized: Value = serde_yaml::from_slice(&out.stdout).unwrap();
        let got = normalized["services"].as_mapping().unwrap();
        assert_eq!(got.len(), services, "{label}");
        // What docker-compose made of one service: nothing dropped.
        let first = dns_label(&config.groups[0].agents[0].name);
        let svc = &normalized["services"][first.as_str()];
        for key in [
            "healthcheck",
            "deploy",
            "environment",
            "labels",
            "cpus",
            "mem_limit",
            "cap_drop",
            "security_opt",
            "restart",
            "stop_grace_period",
        ] {
            assert!(
                svc.get(key).is_some(),
                "{label}: {first} lost `{key}`: {svc:?}"
            );
        }
    }
}

#[test]
fn docker_compose_accepts_a_group_with_its_dependencies() {
    let dir = TempDir::new("compose-group");
    let root = root();
    let config = load(&root.join("config/mainpc/startup_config.yaml"));
    let opts = ComposeOptions {
        groups: vec!["vision_gpu".into()],
        ..ComposeOptions::default()
    };
    let file = dir.write("vision.yaml", &compose::render(&config, &opts).unwrap());
    let out = run(
        docker_compose().arg("-f").arg(&file).arg("config"),
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "{}", text(&out));
    let normalized: Value = serde_yaml::from_slice(&out.stdout).unwrap();
    // vision_gpu's one agent, and infra_core (2) and coordination (4).
    assert_eq!(normalized["services"].as_mapping().unwrap().len(), 7);
    let face = &normalized["services"]["face-recognition-agent"];
    assert_eq!(
        face["deploy"]["resources"]["reservations"]["devices"][0]["driver"],
        "nvidia"
    );
}

#[test]
fn kubernetes_validate_accepts_every_shipped_config() {
    let tool = kubernetes_validate();
    let version = run(
        Command::new(&tool).arg("--version"),
        Duration::from_secs(60),
    );
    assert!(version.status.success(), "{}", text(&version));
    let dir = TempDir::new("k8s");
    for (label, config, path) in tool_inputs() {
        let agents = config.agent_count();
        let opts = K8sOptions {
            source: path.map(|p| p.display().to_string()),
            ..K8sOptions::default()
        };
        let file = dir.write(
            &format!("{label}.yaml"),
            &k8s::render(&config, &opts).unwrap(),
        );
        let out = run(
            Command::new(&tool)
                .args(["--kubernetes-version", K8S_VERSION, "--strict"])
                .arg(&file),
            Duration::from_secs(300),
        );
        assert!(out.status.success(), "{label}: {}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let passed = stdout
            .lines()
            .filter(|l| l.contains(" passed for resource "))
            .count();
        let services = config.agents().filter(|a| !a.ports.is_empty()).count();
        assert_eq!(
            passed,
            1 + agents + services,
            "{label}: every object must be validated:\n{}",
            text(&out)
        );
    }
}

/// Brings a compose project down, whatever happened to the test.
struct ComposeProject {
    file: PathBuf,
    project: String,
}

impl ComposeProject {
    fn command(&self) -> Command {
        let mut c = docker_compose();
        c.arg("-p").arg(&self.project).arg("-f").arg(&self.file);
        c
    }
}

impl Drop for ComposeProject {
    fn drop(&mut self) {
        let _ = self
            .command()
            .args(["down", "-v", "--timeout", "5"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The agent image, built when it is missing or older than the probe mode
/// (such an image refuses `--probe` with exit code 2).
fn ensure_agent_image() {
    let probe_exit = || {
        Command::new("docker")
            .args(["run", "--rm", "--pull", "never", "--network", "none"])
            .args([AGENT_IMAGE, "--probe", "tcp://127.0.0.1:1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.code())
    };
    match probe_exit() {
        Ok(Some(1)) => return,
        Err(e) => panic!("docker is needed to run the exported compose file: {e}"),
        Ok(_) => {}
    }
    let script = root().join("scripts/build-agent-image.sh");
    let out = run(Command::new("bash").arg(&script), Duration::from_secs(1800));
    assert!(
        out.status.success(),
        "building the agent image: {}",
        text(&out)
    );
    assert_eq!(
        probe_exit().unwrap(),
        Some(1),
        "{AGENT_IMAGE} has no working --probe mode after a rebuild"
    );
}

#[test]
fn an_exported_group_comes_up_healthy_with_docker_compose() {
    ensure_agent_image();
    let config = load(&root().join("config/mainpc/startup_config.yaml"));
    let project = format!("orchexport{}", unique());
    let opts = ComposeOptions {
        groups: vec!["vision_gpu".into()],
        project_name: Some(project.clone()),
        // Other agents on this host may hold the published ports, and this
        // host may have no GPU toolkit: neither is what this test is about.
        publish_ports: false,
        reserve_gpus: false,
        ..ComposeOptions::default()
    };
    let dir = TempDir::new("up");
    let up = ComposeProject {
        file: dir.write(
            "docker-compose.yaml",
            &compose::render(&config, &opts).unwrap(),
        ),
        project,
    };

    // `up` waits for every `service_healthy` dependency, so it returning 0
    // already means all but the last agent passed their probes.
    let out = run(up.command().args(["up", "-d"]), Duration::from_secs(420));
    assert!(out.status.success(), "docker-compose up: {}", text(&out));

    let ids = run(up.command().args(["ps", "-q"]), Duration::from_secs(60));
    let ids: Vec<String> = String::from_utf8_lossy(&ids.stdout)
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(ids.len(), 7, "{ids:?}");

    let deadline = Instant::now() + Duration::from_secs(180);
    let statuses = loop {
        let out = run(
            Command::new("docker")
                .args(["inspect", "--format", "{{.Name}} {{.State.Health.Status}}"])
                .args(&ids),
            Duration::from_secs(60),
        );
        assert!(out.status.success(), "{}", text(&out));
        let statuses = String::from_utf8_lossy(&out.stdout).into_owned();
        let healthy = statuses.lines().filter(|l| l.ends_with(" healthy")).count();
        if healthy == ids.len() {
            break statuses;
        }
        if Instant::now() > deadline {
            let logs = run(
                up.command().args(["logs", "--tail", "20"]),
                Duration::from_secs(60),
            );
            panic!(
                "not all healthy within the deadline:\n{statuses}\n{}",
                text(&logs)
            );
        }
        thread::sleep(Duration::from_secs(2));
    };
    assert!(statuses.contains("face-recognition-agent"), "{statuses}");

    // The probe's own report, as Docker kept it.
    let registry = run(
        up.command().args(["ps", "-q", "service-registry"]),
        Duration::from_secs(60),
    );
    let registry = String::from_utf8_lossy(&registry.stdout).trim().to_string();
    let log = run(
        Command::new("docker").args([
            "inspect",
            "--format",
            "{{range .State.Health.Log}}{{.Output}}{{end}}",
            &registry,
        ]),
        Duration::from_secs(60),
    );
    assert!(
        String::from_utf8_lossy(&log.stdout)
            .contains("healthy: http://127.0.0.1:8200/health answered 200"),
        "{}",
        text(&log)
    );
    // Peers reach an agent by its own name too.
    let nets = run(
        Command::new("docker").args([
            "inspect",
            "--format",
            "{{json .NetworkSettings.Networks}}",
            &registry,
        ]),
        Duration::from_secs(60),
    );
    assert!(
        String::from_utf8_lossy(&nets.stdout).contains("\"ServiceRegistry\""),
        "{}",
        text(&nets)
    );
}
