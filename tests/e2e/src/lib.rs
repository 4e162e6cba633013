//! End-to-end test support: real `orchestratord` processes against the real
//! Docker Engine, with the reference agent as the in-container probe.
//!
//! Hosts of a federation each run in their own network namespace on a
//! private link layer ([`net::Lan`]), so a link can be cut and restored.
//!
//! Every test gets its own host name (so its containers, network and state
//! are its own) and publishes no fixed host ports, so tests can run side by
//! side. Whatever a test leaves is removed by label when its [`Host`] drops.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use orch_api::{Client, Event, GroupStatus, Status};

pub mod alerting;
pub mod net;

pub const IMAGE: &str = "orchestrator-agent:latest";

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
}

/// Runs `f` once across every test process, under a file lock.
fn once_across_processes(name: &str, f: impl FnOnce()) {
    let dir = target_dir().join("e2e-locks");
    std::fs::create_dir_all(&dir).expect("lock dir");
    let file = std::fs::File::create(dir.join(name)).expect("lock file");
    let _lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).expect("flock");
    f();
}

/// The daemon and CLI binaries, built for this profile on first use.
pub fn binaries() -> (PathBuf, PathBuf) {
    static BINS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BINS.get_or_init(|| {
        once_across_processes("build-binaries", || {
            let status = Command::new(env!("CARGO"))
                .args([
                    "build",
                    "-q",
                    "-p",
                    "orchestratord",
                    "-p",
                    "orchestratorctl",
                ])
                .current_dir(repo_root())
                .status()
                .expect("cargo build");
            assert!(
                status.success(),
                "building orchestratord/orchestratorctl failed"
            );
        });
        let dir = target_dir().join("debug");
        (dir.join("orchestratord"), dir.join("orchestratorctl"))
    })
    .clone()
}

/// The reference agent image, built once if this host lacks it.
pub fn agent_image() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        once_across_processes("agent-image", || {
            let present = Command::new("docker")
                .args(["image", "inspect", IMAGE])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !present {
                let status = Command::new(repo_root().join("scripts/build-agent-image.sh"))
                    .status()
                    .expect("build-agent-image.sh");
                assert!(status.success(), "building the agent image failed");
            }
        });
    });
}

pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI")
}

pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A container of ours, as Docker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub id: String,
    pub agent: String,
    pub replica: String,
    pub running: bool,
    pub started_at: String,
}

/// A unique host: its name, temp dir, and cleanup.
#[derive(Debug)]
pub struct Host {
    pub name: String,
    pub dir: tempfile::TempDir,
}

impl Host {
    pub fn new(test: &str) -> Host {
        let suffix: u32 = rand::random::<u32>() % 1_000_000;
        let name = format!("e2e-{test}-{suffix}");
        let dir = tempfile::Builder::new()
            .prefix(&format!("{name}-"))
            .tempdir()
            .expect("tempdir");
        Host { name, dir }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// Every container labelled with this host, running or not.
    pub fn containers(&self) -> Vec<Seen> {
        let ids = docker_ok(&[
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            &format!("label=io.orchestrator.host={}", self.name),
        ]);
        if ids.is_empty() {
            return Vec::new();
        }
        let mut args = vec![
            "inspect",
            "--format",
            "{{.Id}}|{{index .Config.Labels \"io.orchestrator.agent\"}}|{{index .Config.Labels \"io.orchestrator.replica\"}}|{{.State.Running}}|{{.State.StartedAt}}",
        ];
        let ids: Vec<&str> = ids.lines().collect();
        args.extend(ids.iter().copied());
        // A container removed since `ps` is simply gone: inspect still
        // prints the others (and fails for the missing one).
        let out = docker(&args);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains('|'))
            .map(|l| {
                let f: Vec<&str> = l.split('|').collect();
                Seen {
                    id: f[0].to_string(),
                    agent: f[1].to_string(),
                    replica: f[2].to_string(),
                    running: f[3] == "true",
                    started_at: f[4].to_string(),
                }
            })
            .collect()
    }

    /// Asserts no (agent, replica) has more than one container.
    pub fn assert_no_duplicates(&self) {
        let mut seen = std::collections::BTreeMap::new();
        for c in self.containers() {
            if let Some(other) = seen.insert((c.agent.clone(), c.replica.clone()), c.id.clone()) {
                panic!(
                    "duplicate containers for {}#{}: {other} and {}",
                    c.agent, c.replica, c.id
                );
            }
        }
    }

    pub fn container_of(&self, agent: &str) -> Option<Seen> {
        self.containers()
            .into_iter()
            .find(|c| c.agent == agent && c.replica == "0")
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let ids = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=io.orchestrator.host={}", self.name),
        ]);
        let ids = String::from_utf8_lossy(&ids.stdout).to_string();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids);
            let _ = docker(&args);
        }
        let _ = docker(&["network", "rm", &format!("orch-{}", self.name)]);
    }
}

/// A host config made from a shipped one: renamed to `host`, with
/// published ports reduced to container ports, so tests never collide on
/// host ports, and without its federation section (a test host has no
/// peers).
pub fn derive_config(source: &str, from_host: &str, host: &str) -> String {
    let mut out = String::new();
    let mut in_federation = false;
    for line in source.lines() {
        let top_level = line
            .chars()
            .next()
            .is_some_and(|c| !c.is_whitespace() && c != '#');
        if top_level {
            in_federation = line.starts_with("federation:");
        }
        if in_federation {
            continue;
        }
        let line = line.replace(
            &format!("{{name: {from_host},"),
            &format!("{{name: {host},"),
        );
        let line = match line.find("ports: [") {
            Some(i) => {
                let (head, tail) = line.split_at(i);
                let end = tail.find(']').map(|e| e + 1).unwrap_or(tail.len());
                let list = &tail["ports: [".len()..end - 1];
                let ports: Vec<String> = list
                    .split(',')
                    .map(|p| {
                        let p = p.trim().trim_matches('"');
                        format!("\"{}\"", p.rsplit(':').next().unwrap_or(p))
                    })
                    .collect();
                format!("{head}ports: [{}]{}", ports.join(", "), &tail[end..])
            }
            None => line,
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// One `orchestratord` process.
#[derive(Debug)]
pub struct Daemon {
    pub child: Option<Child>,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub log: PathBuf,
    pub extra: Vec<String>,
    pub env: Vec<(String, String)>,
    /// The network namespace the daemon runs in (its own "host"), if any.
    pub netns: Option<String>,
    starts: u32,
}

impl Daemon {
    pub fn start(host: &Host, config_text: &str, extra: &[&str]) -> Daemon {
        Daemon::start_with_env(host, config_text, extra, &[])
    }

    /// Like `start`, with extra environment (e.g. the NVML simulator's).
    pub fn start_with_env(
        host: &Host,
        config_text: &str,
        extra: &[&str],
        env: &[(String, String)],
    ) -> Daemon {
        binaries();
        agent_image();
        let config = host.path("startup_config.yaml");
        std::fs::write(&config, config_text).expect("write config");
        let mut d = Daemon {
            child: None,
            config,
            socket: host.path("orchestrator.sock"),
            state_dir: host.path("state"),
            log: host.path("daemon.log"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: env.to_vec(),
            netns: None,
            starts: 0,
        };
        d.spawn();
        d
    }

    /// Like `start`, inside network namespace `netns` (see [`net::Lan`]).
    pub fn start_in_netns(host: &Host, config_text: &str, netns: &str) -> Daemon {
        binaries();
        agent_image();
        let config = host.path("startup_config.yaml");
        std::fs::write(&config, config_text).expect("write config");
        let mut d = Daemon {
            child: None,
            config,
            socket: host.path("orchestrator.sock"),
            state_dir: host.path("state"),
            log: host.path("daemon.log"),
            extra: Vec::new(),
            env: Vec::new(),
            netns: Some(netns.to_string()),
            starts: 0,
        };
        d.spawn();
        d
    }

    /// Like `start_in_netns`, with extra environment (e.g. systemd's
    /// `NOTIFY_SOCKET` and `WATCHDOG_USEC`).
    pub fn start_in_netns_with_env(
        host: &Host,
        config_text: &str,
        netns: &str,
        env: &[(String, String)],
    ) -> Daemon {
        binaries();
        agent_image();
        let config = host.path("startup_config.yaml");
        std::fs::write(&config, config_text).expect("write config");
        let mut d = Daemon {
            child: None,
            config,
            socket: host.path("orchestrator.sock"),
            state_dir: host.path("state"),
            log: host.path("daemon.log"),
            extra: Vec::new(),
            env: env.to_vec(),
            netns: Some(netns.to_string()),
            starts: 0,
        };
        d.spawn();
        d
    }

    /// The daemon's process id (`ip netns exec` execs it: the child is it).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    pub fn spawn(&mut self) {
        let (bin, _) = binaries();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        self.starts += 1;
        let mut header = log.try_clone().expect("log clone");
        let _ = writeln!(header, "==== daemon start #{} ====", self.starts);
        // `ip netns exec` execs the daemon itself: the child is the daemon.
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        let child = cmd
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--socket")
            .arg(&self.socket)
            .args(&self.extra)
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn orchestratord");
        self.child = Some(child);
        self.wait_until("the control socket answers", Duration::from_secs(30), |d| {
            std::os::unix::net::UnixStream::connect(&d.socket).is_ok()
        });
    }

    /// `kill -9`: no cleanup of any kind.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("daemon running");
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        c.wait().expect("wait")
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let c = self.child.as_ref().expect("daemon running");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), sig).expect("signal");
    }

    pub fn client(&self) -> Client {
        Client::new(&self.socket)
    }

    /// Runs `orchestratorctl --socket … ARGS`.
    pub fn ctl(&self, args: &[&str]) -> Output {
        let (_, ctl) = binaries();
        Command::new(ctl)
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .env("NO_COLOR", "1")
            .output()
            .expect("orchestratorctl")
    }

    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "orchestratorctl {args:?} exited {:?}\nstdout: {}\nstderr: {}\ndaemon log: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_tail(40)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    pub fn status(&self) -> Status {
        serde_json::from_str(&self.ctl_ok(&["-o", "json", "status"])).expect("status json")
    }

    pub fn groups(&self) -> Vec<GroupStatus> {
        serde_json::from_str(&self.ctl_ok(&["-o", "json", "groups"])).expect("groups json")
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<Event> {
        self.ctl_ok(&["-o", "json", "events"])
            .lines()
            .map(|l| serde_json::from_str(l).expect("event json"))
            .collect()
    }

    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Polls `cond` until it holds; panics with the daemon log after `limit`.
    pub fn wait_until(&self, what: &str, limit: Duration, mut cond: impl FnMut(&Daemon) -> bool) {
        let start = Instant::now();
        while start.elapsed() < limit {
            if cond(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "timed out after {limit:?} waiting until {what}\ndaemon log:\n{}",
            self.log_tail(60)
        );
    }

    pub fn wait_all_ready(&self, limit: Duration) {
        self.wait_until("every started group is ready", limit, |d| {
            let s = d.status();
            s.groups
                .iter()
                .filter(|g| g.started)
                .all(|g| g.state == orch_api::GroupState::Ready)
                && s.agents.healthy == s.agents.wanted
        });
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A host's federation keys, made by `orchestratorctl keys generate`.
#[derive(Debug, Clone)]
pub struct Keys {
    /// The secret key file (mode 0600).
    pub secret: PathBuf,
    /// The Z85 public key, as peers list it.
    pub public: String,
}

/// Makes `host`'s CURVE key pair under its directory, with the CLI.
pub fn keys(host: &Host) -> Keys {
    let (_, ctl) = binaries();
    let dir = host.path("keys");
    let out = Command::new(ctl)
        .args(["keys", "generate", &host.name, "--out"])
        .arg(&dir)
        .output()
        .expect("orchestratorctl keys generate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = std::fs::read_to_string(dir.join(format!("{}.pub", host.name)))
        .expect("the public key file");
    Keys {
        secret: dir.join(format!("{}.key", host.name)),
        public: public.trim().to_string(),
    }
}

/// The simulator's library, `nvml-simctl` and MPS stand-in, built on first use.
pub fn sim_binaries() -> (PathBuf, PathBuf, PathBuf) {
    static BINS: OnceLock<(PathBuf, PathBuf, PathBuf)> = OnceLock::new();
    BINS.get_or_init(|| {
        once_across_processes("build-sim", || {
            let status = Command::new(env!("CARGO"))
                .args(["build", "-q", "-p", "nvml-sim"])
                .current_dir(repo_root())
                .status()
                .expect("cargo build");
            assert!(status.success(), "building the NVML simulator failed");
        });
        let dir = target_dir().join("debug");
        (
            dir.join("libnvml_sim.so"),
            dir.join("nvml-simctl"),
            dir.join("nvidia-cuda-mps-control-sim"),
        )
    })
    .clone()
}

/// Environment that makes a daemon see the simulated GPUs of `sim_host`
/// (a file under the repository) with its own state, and use the MPS
/// stand-in.
pub fn sim_env(host: &Host, sim_host: &str) -> Vec<(String, String)> {
    let (lib, _, mps) = sim_binaries();
    vec![
        ("ORCH_NVML_LIBRARY".into(), lib.display().to_string()),
        (
            "NVML_SIM_CONFIG".into(),
            repo_root().join(sim_host).display().to_string(),
        ),
        (
            "NVML_SIM_STATE".into(),
            host.path("nvml-state.json").display().to_string(),
        ),
        ("ORCH_MPS_CONTROL".into(), mps.display().to_string()),
    ]
}

/// `nvml-simctl ARGS` against the daemon's simulated GPUs; stdout.
pub fn simctl(env: &[(String, String)], args: &[&str]) -> String {
    let (_, simctl, _) = sim_binaries();
    let out = Command::new(simctl)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("nvml-simctl");
    assert!(
        out.status.success(),
        "nvml-simctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// MIG GPU instances on a simulated GPU: (gi id, profile, placement start, MIG uuid).
pub fn sim_instances(env: &[(String, String)], gpu: usize) -> Vec<(u64, String, u64, String)> {
    let v: serde_json::Value =
        serde_json::from_str(&simctl(env, &["status"])).expect("status json");
    let mut out: Vec<(u64, String, u64, String)> = v["gpus"][gpu]["mig"]["gpu_instances"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|gi| {
                    (
                        gi["id"].as_u64().unwrap_or(0),
                        gi["profile"].as_str().unwrap_or("").to_string(),
                        gi["placement"]["start"].as_u64().unwrap_or(0),
                        gi["compute_instances"][0]["mig_uuid"]
                            .as_str()
                            .unwrap_or("")
                            .to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort_by_key(|i| i.2);
    out
}

/// An environment variable of a container.
pub fn container_env(id: &str, name: &str) -> Option<String> {
    let env = docker_ok(&[
        "inspect",
        "--format",
        "{{range .Config.Env}}{{println .}}{{end}}",
        id,
    ]);
    env.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")).map(str::to_string))
}

/// Writes a file atomically (tests rewrite configs the daemon may read).
pub fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// A small host: group `base` holds a chain Flaky <- Mid <- Top (each
/// needs the one before), group `extra` holds Side (needs nothing).
/// Flaky exits with code 3 at start while `<ctl>/fail` exists, which makes
/// it crash-loop on demand. Backoff and probing are fast so tests are short.
pub fn chain_config(host: &str, ctl: &Path) -> String {
    format!(
        r#"version: 1
host: {{name: {host}}}
defaults:
  image: {IMAGE}
  restart: {{policy: on-failure, backoff: {{initial: 200ms, max: 2s}}, crashloop: {{restarts: 3, window: 1m}}}}
  health: {{http: {{port: 8080}}, interval: 500ms, timeout: 1s, retries: 2, start_period: 5s}}
  stop_timeout: 2s
groups:
  base:
    agents:
      Flaky:
        env: {{AGENT_FAIL_IF_EXISTS: /ctl/fail, AGENT_EXIT_CODE: "3"}}
        volumes: ["{ctl}:/ctl"]
      Mid: {{depends_on: [Flaky]}}
      Top: {{depends_on: [Mid]}}
  extra:
    agents:
      Side: {{}}
"#,
        ctl = ctl.display()
    )
}

/// Events about one agent, in order.
pub fn agent_events<'a>(events: &'a [Event], agent: &str) -> Vec<&'a Event> {
    events
        .iter()
        .filter(|e| e.kind.replica().is_some_and(|r| r.agent == agent))
        .collect()
}

pub fn kind_name(e: &Event) -> String {
    e.kind.name().to_string()
}

/// `GET path` on 127.0.0.1:port; the body of a 200 answer.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.split_whitespace()
        .nth(1)
        .is_some_and(|c| c == "200")
        .then(|| body.to_string())
}

/// A free port of 127.0.0.1 (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
