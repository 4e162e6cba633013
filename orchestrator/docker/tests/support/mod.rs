//! Shared pieces of the integration tests against the real Docker Engine:
//! the probe image (a static C program in a `FROM scratch` image, built
//! through the adapter's own `build_image`), a per-test scope that names
//! everything uniquely and removes it again even when the test fails, and
//! waits with deadlines.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;
use orch_core::container::{ContainerSpec, GpuDevices};
use orch_core::units::Duration as CoreDuration;
use orch_docker::{ContainerEvent, ContainerRuntime, DockerEngine, Endpoint, EventStream};
use tokio::sync::OnceCell;

/// The probe image; rebuilt once per test process (cached layers make the
/// rebuild cheap) so a fresh machine needs nothing prepared.
pub const PROBE_IMAGE: &str = "orch-docker-test-probe:latest";
/// Label marking everything a test run creates.
pub const TEST_LABEL: &str = "io.orchestrator.test-run";
/// How long any single condition may take to come true.
pub const DEADLINE: Duration = Duration::from_secs(30);

const PROBE_SOURCE: &str = include_str!("probe.c");

pub async fn engine() -> DockerEngine {
    let endpoint = Endpoint::from_env().expect("DOCKER_HOST readable");
    DockerEngine::connect(&endpoint)
        .await
        .expect("the Docker Engine must be running for these tests")
}

/// Compiles the probe with `gcc -static`, once per process.
pub fn probe_binary() -> &'static [u8] {
    static BINARY: OnceLock<Vec<u8>> = OnceLock::new();
    BINARY.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("orch-docker-probe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let source = dir.join("probe.c");
        let binary = dir.join("probe");
        std::fs::write(&source, PROBE_SOURCE).expect("write probe.c");
        let out = Command::new("gcc")
            .args(["-static", "-O2", "-Wall", "-o"])
            .arg(&binary)
            .arg(&source)
            .output()
            .expect("gcc must be installed");
        assert!(
            out.status.success(),
            "gcc failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bytes = std::fs::read(&binary).expect("read probe");
        let _ = std::fs::remove_dir_all(&dir);
        bytes
    })
}

/// A tar build context from `(path, contents, mode)` entries.
pub fn context_tar(files: &[(&str, &[u8], u32)]) -> Bytes {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, contents, mode) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(contents.len() as u64);
        header.set_mode(*mode);
        header.set_mtime(0);
        header.set_cksum();
        builder
            .append_data(&mut header, path, *contents)
            .expect("append to tar");
    }
    Bytes::from(builder.into_inner().expect("finish tar"))
}

/// Builds the probe image through `build_image`, once per process.
pub async fn probe_image(engine: &DockerEngine) -> &'static str {
    static BUILT: OnceCell<String> = OnceCell::const_new();
    BUILT
        .get_or_init(|| async {
            let dockerfile =
                "FROM scratch\nCOPY probe /probe\nENTRYPOINT [\"/probe\"]\nCMD [\"serve\"]\n";
            let context = context_tar(&[
                ("Dockerfile", dockerfile.as_bytes(), 0o644),
                ("probe", probe_binary(), 0o755),
            ]);
            engine
                .build_image(context, PROBE_IMAGE)
                .await
                .expect("build the probe image")
        })
        .await;
    PROBE_IMAGE
}

/// Everything one test creates: unique names, one label, and cleanup on
/// drop (also after a failed assertion) through the docker CLI, which
/// needs no async runtime.
pub struct Scope {
    pub run: String,
    pub network: String,
}

impl Scope {
    pub fn new(test: &str) -> Scope {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let run = format!(
            "orchtest-{test}-{}-{:x}{}",
            std::process::id(),
            nanos,
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        Scope {
            network: format!("{run}-net"),
            run,
        }
    }

    pub fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(TEST_LABEL.to_string(), self.run.clone())])
    }

    pub fn name(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.run)
    }

    /// A plain spec for the probe on this scope's network.
    pub fn spec(&self, suffix: &str, image: &str) -> ContainerSpec {
        let mut labels = self.labels();
        labels.insert("io.orchestrator.agent".into(), suffix.into());
        ContainerSpec {
            name: self.name(suffix),
            image: image.into(),
            command: None,
            env: BTreeMap::new(),
            labels,
            network: self.network.clone(),
            aliases: vec![],
            hostname: None,
            ports: vec![],
            mounts: vec![],
            cpus: None,
            memory: None,
            pids: None,
            cap_add: vec![],
            read_only_rootfs: false,
            gpu: GpuDevices::None,
            ipc_host: false,
            stop_timeout: CoreDuration::from_secs(5),
        }
    }

    /// A host directory for bind mounts, removed with the scope.
    pub fn tempdir(&self) -> PathBuf {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(&self.run);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    pub async fn network(&self, engine: &DockerEngine) -> String {
        engine
            .ensure_network(&self.network, &self.labels())
            .await
            .expect("create the test network")
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        let filter = format!("label={TEST_LABEL}={}", self.run);
        for (kind, list_args) in [
            ("container", vec!["ps", "-aq", "--filter", filter.as_str()]),
            (
                "network",
                vec!["network", "ls", "-q", "--filter", filter.as_str()],
            ),
        ] {
            let Ok(out) = Command::new("docker").args(&list_args).output() else {
                continue;
            };
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect();
            if ids.is_empty() {
                continue;
            }
            let remove: &[&str] = match kind {
                "container" => &["rm", "-f", "-v"],
                _ => &["network", "rm"],
            };
            let _ = Command::new("docker").args(remove).args(&ids).output();
        }
        let _ = std::fs::remove_dir_all(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(&self.run));
        // Named volumes made by mounts carry the run in their name.
        let name_filter = format!("name={}", self.run);
        if let Ok(out) = Command::new("docker")
            .args(["volume", "ls", "-q", "--filter", name_filter.as_str()])
            .output()
        {
            let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect();
            if !names.is_empty() {
                let _ = Command::new("docker")
                    .args(["volume", "rm", "-f"])
                    .args(&names)
                    .output();
            }
        }
    }
}

/// `docker inspect` through the CLI: an independent view of what the
/// adapter asked the engine for.
pub fn docker_inspect(args: &[&str]) -> serde_json::Value {
    let out = Command::new("docker")
        .arg("inspect")
        .args(args)
        .output()
        .expect("docker CLI");
    assert!(
        out.status.success(),
        "docker inspect {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut all: serde_json::Value = serde_json::from_slice(&out.stdout).expect("inspect json");
    all[0].take()
}

/// The next event of container `id` satisfying `pred`, within the deadline.
pub async fn wait_event(
    events: &mut EventStream,
    id: &str,
    what: &str,
    mut pred: impl FnMut(&ContainerEvent) -> bool,
) -> ContainerEvent {
    let found = tokio::time::timeout(DEADLINE, async {
        while let Some(item) = events.next().await {
            let ev = item.expect("event stream error");
            if ev.id == id && pred(&ev) {
                return Some(ev);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(ev)) => ev,
        Ok(None) => panic!("event stream ended before {what}"),
        Err(_) => panic!("no {what} event within {DEADLINE:?}"),
    }
}

/// Polls `check` until it returns `Some`, or fails after the deadline.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let give_up = tokio::time::Instant::now() + DEADLINE;
    let mut pause = Duration::from_millis(20);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "{what}: not true within {DEADLINE:?}"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// All of a container's output so far, stdout and stderr together.
pub async fn all_logs(engine: &DockerEngine, id: &str) -> String {
    let mut stream = engine
        .logs(id, orch_docker::LogsAsk::default())
        .await
        .expect("logs");
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.expect("log chunk").bytes));
    }
    text
}
