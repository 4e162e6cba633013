//! A recording stand-in for NVIDIA's `nvidia-cuda-mps-control`, for machines
//! without GPUs.
//!
//! It behaves like the real tool where a supervisor can tell:
//! - `-d` starts a background control daemon and returns once it listens;
//!   `-f` runs it in the foreground. The daemon honours
//!   `CUDA_MPS_PIPE_DIRECTORY` (default `/tmp/nvidia-mps`) and
//!   `CUDA_MPS_LOG_DIRECTORY` (default `/var/log/nvidia-mps`), creates the
//!   `control` socket and `nvidia-cuda-mps-control.pid` in the pipe directory
//!   and writes `control.log` (in the real tool's line format) in the log
//!   directory. A second daemon on the same pipe directory is refused.
//! - Without options it reads commands from stdin, forwards each to the
//!   daemon of that pipe directory and prints the replies; with no daemon it
//!   fails with "Cannot find MPS control daemon process" and exit status 1.
//! - `quit` stops the daemon and removes its `control` socket and pid file.
//!   Settings (`set_default_*`) live in the daemon and are lost on `quit`.
//!
//! Every invocation (argv, `CUDA_*` environment, commands, replies, exit
//! status) is appended as one JSON line to
//! `$CUDA_MPS_LOG_DIRECTORY/invocations.jsonl`, so tests can assert exactly
//! what a supervisor sent.
//!
//! MPS servers and their clients are the simulated GPUs' (see
//! [`crate::process`]): with `NVML_SIM_CONFIG` set, the daemon answers
//! `get_server_list`, `get_server_status`, `get_client_list`,
//! `terminate_client` and `shutdown_server` from the simulator's shared
//! state, for the GPUs `CUDA_VISIBLE_DEVICES` names (every GPU when unset),
//! and `quit` ends those servers. Without a simulator there are no servers.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::process;
use crate::sim::Simulator;

/// Pipe-directory variable.
pub const ENV_PIPE_DIR: &str = "CUDA_MPS_PIPE_DIRECTORY";
/// Log-directory variable.
pub const ENV_LOG_DIR: &str = "CUDA_MPS_LOG_DIRECTORY";
/// The real tool's default pipe directory.
pub const DEFAULT_PIPE_DIR: &str = "/tmp/nvidia-mps";
/// The real tool's default log directory.
pub const DEFAULT_LOG_DIR: &str = "/var/log/nvidia-mps";
/// The control endpoint in the pipe directory.
pub const CONTROL_SOCKET: &str = "control";
/// The pid file in the pipe directory.
pub const PID_FILE: &str = "nvidia-cuda-mps-control.pid";
/// Lock held by the running daemon, so only one runs per pipe directory.
pub const LOCK_FILE: &str = "control_lock";
/// The daemon's log in the log directory.
pub const CONTROL_LOG: &str = "control.log";
/// Where invocations are recorded, in the log directory.
pub const INVOCATIONS: &str = "invocations.jsonl";
/// What the client prints when no daemon listens.
pub const NO_DAEMON: &str = "Cannot find MPS control daemon process";
/// What a second daemon on the same pipe directory reports.
pub const ALREADY_RUNNING: &str = "An instance of this daemon is already running";

/// Pipe and log directories of one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dirs {
    /// `CUDA_MPS_PIPE_DIRECTORY`.
    pub pipe: PathBuf,
    /// `CUDA_MPS_LOG_DIRECTORY`.
    pub log: PathBuf,
}

impl Dirs {
    /// From the environment, with the real tool's defaults.
    pub fn from_env() -> Self {
        let dir = |name: &str, default: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(default))
        };
        Self {
            pipe: dir(ENV_PIPE_DIR, DEFAULT_PIPE_DIR),
            log: dir(ENV_LOG_DIR, DEFAULT_LOG_DIR),
        }
    }

    /// Path of the control socket.
    pub fn control(&self) -> PathBuf {
        self.pipe.join(CONTROL_SOCKET)
    }
}

/// What the daemon remembers until `quit`.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlSettings {
    /// `set_default_active_thread_percentage`.
    pub default_active_thread_percentage: f64,
    /// `set_default_device_pinned_mem_limit`, MiB per device token.
    pub default_pinned_mem_limit_mib: BTreeMap<String, u64>,
    /// `set_default_client_priority`.
    pub default_client_priority: u32,
}

impl Default for ControlSettings {
    fn default() -> Self {
        Self {
            default_active_thread_percentage: 100.0,
            default_pinned_mem_limit_mib: BTreeMap::new(),
            default_client_priority: 0,
        }
    }
}

/// The daemon's answer to one command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// Printed by the client (nothing when empty).
    pub text: String,
    /// Whether the command was accepted.
    pub ok: bool,
    /// Whether the daemon stops after this reply.
    pub quit: bool,
}

impl Reply {
    fn ok(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            ok: true,
            quit: false,
        }
    }

    fn err(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            ok: false,
            quit: false,
        }
    }
}

/// Parses a pinned-memory limit as the real tool takes it: an integer
/// followed by `M` or `G` (MiB or GiB).
pub fn parse_pinned_limit(text: &str) -> Option<u64> {
    let (number, unit) = text.split_at(text.len().checked_sub(1)?);
    let value: u64 = number.parse().ok()?;
    match unit {
        "M" | "m" => Some(value),
        "G" | "g" => value.checked_mul(1024),
        _ => None,
    }
}

/// Formats a limit the way the daemon displays it: whole GiB as `<n>G`
/// (rounded down) from 1 GiB up, else `<n>M`.
pub fn format_pinned_limit(mib: u64) -> String {
    if mib >= 1024 {
        format!("{}G", mib / 1024)
    } else {
        format!("{mib}M")
    }
}

fn parse_percentage(text: &str) -> Option<f64> {
    let value: f64 = text.parse().ok()?;
    (value.is_finite() && value > 0.0 && value <= 100.0).then_some(value)
}

fn parse_pid(text: &str) -> Option<u32> {
    text.parse().ok().filter(|pid| *pid > 0)
}

/// An MPS server as the control daemon sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerView {
    /// Server pid.
    pub pid: u32,
    /// `ACTIVE` or `FAULT`.
    pub status: &'static str,
    /// Client pids, in the order they connected.
    pub clients: Vec<u32>,
}

/// The MPS servers one control daemon manages.
pub trait MpsWorld {
    /// Every server, in GPU order.
    fn servers(&mut self) -> Result<Vec<ServerView>, String>;
    /// Ends a client's work on a server; the client's context is gone.
    fn terminate_client(&mut self, server: u32, client: u32) -> Result<(), String>;
    /// Shuts a server (and so its clients) down.
    fn shutdown_server(&mut self, server: u32) -> Result<(), String>;
}

/// No simulator: no server ever runs.
#[derive(Debug, Default)]
pub struct NoServers;

impl MpsWorld for NoServers {
    fn servers(&mut self) -> Result<Vec<ServerView>, String> {
        Ok(Vec::new())
    }

    fn terminate_client(&mut self, server: u32, _: u32) -> Result<(), String> {
        Err(format!("Server {server} not found"))
    }

    fn shutdown_server(&mut self, server: u32) -> Result<(), String> {
        Err(format!("Server {server} not found"))
    }
}

/// The simulated GPUs' servers, limited to the GPUs this daemon serves.
#[derive(Debug)]
pub struct SimServers {
    sim: Simulator,
    gpus: Vec<u32>,
}

impl SimServers {
    /// The servers of the GPUs `visible` names (`CUDA_VISIBLE_DEVICES`:
    /// indexes or UUIDs, comma separated; every GPU when `None`).
    pub fn new(sim: Simulator, visible: Option<&str>) -> Self {
        let gpus = sim
            .config()
            .gpus
            .iter()
            .filter(|g| {
                visible.is_none_or(|v| {
                    v.split(',')
                        .map(str::trim)
                        .any(|want| want == g.uuid || want == g.index.to_string())
                })
            })
            .map(|g| g.index)
            .collect();
        Self { sim, gpus }
    }

    /// The GPU a server of ours runs on.
    fn gpu_of(&mut self, server: u32) -> Result<u32, String> {
        let (_, state) = self.sim.snapshot().map_err(|e| e.to_string())?;
        self.gpus
            .iter()
            .copied()
            .find(|&g| {
                state.gpus[g as usize]
                    .mps_server
                    .as_ref()
                    .is_some_and(|s| s.pid == server)
            })
            .ok_or_else(|| format!("Server {server} not found"))
    }
}

impl MpsWorld for SimServers {
    fn servers(&mut self) -> Result<Vec<ServerView>, String> {
        let (_, state) = self.sim.snapshot().map_err(|e| e.to_string())?;
        Ok(self
            .gpus
            .iter()
            .filter_map(|&g| {
                let gpu = &state.gpus[g as usize];
                gpu.mps_server.as_ref().map(|s| ServerView {
                    pid: s.pid,
                    status: process::server_status(s),
                    clients: process::mps_clients(gpu),
                })
            })
            .collect())
    }

    fn terminate_client(&mut self, server: u32, client: u32) -> Result<(), String> {
        self.gpu_of(server)?;
        self.sim
            .terminate_mps_client(server, client)
            .map(|_| ())
            .map_err(|e| match e {
                crate::SimError::Process {
                    reason: process::ProcessError::NotClient { .. },
                    ..
                } => format!("Client {client} not found on server {server}"),
                other => other.to_string(),
            })
    }

    fn shutdown_server(&mut self, server: u32) -> Result<(), String> {
        let gpu = self.gpu_of(server)?;
        self.sim
            .remove_process(server, Some(gpu))
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Answers one command line; commands about servers and clients ask `world`.
pub fn handle_command(
    settings: &mut ControlSettings,
    world: &mut dyn MpsWorld,
    line: &str,
) -> Reply {
    let words: Vec<&str> = line.split_whitespace().collect();
    let Some((&command, args)) = words.split_first() else {
        return Reply::ok("");
    };
    let no_server = |pid: &str| Reply::err(format!("Server {pid} not found"));
    let server = |world: &mut dyn MpsWorld, pid: &str| -> Result<ServerView, Reply> {
        let pid: u32 = parse_pid(pid).ok_or_else(|| no_server(pid))?;
        match world.servers() {
            Ok(list) => list
                .into_iter()
                .find(|s| s.pid == pid)
                .ok_or_else(|| no_server(&pid.to_string())),
            Err(e) => Err(Reply::err(e)),
        }
    };
    let lines = |pids: &[u32]| {
        pids.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    };
    match (command, args) {
        ("quit", []) => Reply {
            text: String::new(),
            ok: true,
            quit: true,
        },
        ("quit", ["-t", secs]) if secs.parse::<u32>().is_ok() => Reply {
            text: String::new(),
            ok: true,
            quit: true,
        },
        ("get_server_list", []) => match world.servers() {
            Ok(list) => Reply::ok(lines(&list.iter().map(|s| s.pid).collect::<Vec<_>>())),
            Err(e) => Reply::err(e),
        },
        ("get_server_status", [pid]) if parse_pid(pid).is_some() => match server(world, pid) {
            Ok(s) => Reply::ok(s.status),
            Err(reply) => reply,
        },
        ("get_client_list", [pid]) if parse_pid(pid).is_some() => match server(world, pid) {
            Ok(s) => Reply::ok(lines(&s.clients)),
            Err(reply) => reply,
        },
        ("terminate_client", [pid, client]) if parse_pid(pid).is_some() => {
            match (parse_pid(pid), parse_pid(client)) {
                (Some(s), Some(c)) => match world.terminate_client(s, c) {
                    Ok(()) => Reply::ok(""),
                    Err(e) => Reply::err(e),
                },
                _ => Reply::err(format!("Invalid client PID: {client}")),
            }
        }
        ("shutdown_server", [pid] | [pid, "-f"]) if parse_pid(pid).is_some() => {
            match parse_pid(pid).map(|s| world.shutdown_server(s)) {
                Some(Ok(())) => Reply::ok(""),
                Some(Err(e)) => Reply::err(e),
                None => no_server(pid),
            }
        }
        ("get_device_client_list", [] | [_]) => Reply::ok(""),
        ("ps", []) => Reply::ok("PID\tID\tSERVER\tDEVICE\tNAMESPACE\tCOMMAND"),
        ("set_default_active_thread_percentage", [value]) => match parse_percentage(value) {
            Some(p) => {
                settings.default_active_thread_percentage = p;
                Reply::ok("")
            }
            None => Reply::err(format!("Invalid active thread percentage: {value}")),
        },
        ("get_default_active_thread_percentage", []) => {
            Reply::ok(format!("{:.1}", settings.default_active_thread_percentage))
        }
        ("set_default_device_pinned_mem_limit", [dev, value]) => match parse_pinned_limit(value) {
            Some(mib) => {
                settings
                    .default_pinned_mem_limit_mib
                    .insert((*dev).to_owned(), mib);
                Reply::ok("")
            }
            None => Reply::err(format!(
                "Invalid memory limit {value}: use an integer followed by M or G, e.g. 4096M or 10G"
            )),
        },
        ("get_default_device_pinned_mem_limit", [dev]) => Reply::ok(format_pinned_limit(
            settings
                .default_pinned_mem_limit_mib
                .get(*dev)
                .copied()
                .unwrap_or(0),
        )),
        ("set_default_client_priority", [value]) => match value.parse::<u32>() {
            Ok(p) if p <= 1 => {
                settings.default_client_priority = p;
                Reply::ok("")
            }
            _ => Reply::err(format!("Invalid client priority: {value}")),
        },
        ("get_default_client_priority", []) => {
            Reply::ok(settings.default_client_priority.to_string())
        }
        ("start_server", ["-uid", uid, ..]) => Reply::err(format!(
            "Cannot start a server for uid {uid}: this simulated daemon runs no MPS servers"
        )),
        ("get_active_thread_percentage", [pid])
        | ("set_active_thread_percentage", [pid, _])
        | ("get_device_pinned_mem_limit", [pid, _])
        | ("set_device_pinned_mem_limit", [pid, _, _])
            if parse_pid(pid).is_some() =>
        {
            match server(world, pid) {
                Ok(_) => Reply::err(format!(
                    "{command}: per-server settings are not simulated; use the set_default_* commands"
                )),
                Err(reply) => reply,
            }
        }
        _ => Reply::err(format!("Unrecognized command: {line}")),
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `(date, time-with-millis)` of `now`, UTC.
fn utc_parts(now: SystemTime) -> (String, String) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    (
        format!("{y:04}-{mo:02}-{d:02}"),
        format!(
            "{:02}:{:02}:{:02}.{:03}",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60,
            since.subsec_millis()
        ),
    )
}

/// A `control.log` line as the real daemon writes it:
/// `[2024-04-23 06:04:59.389 Control    72] message`.
pub fn control_log_line(now: SystemTime, pid: u32, message: &str) -> String {
    let (date, time) = utc_parts(now);
    format!("[{date} {time} Control {pid:>5}] {message}\n")
}

/// RFC 3339 UTC timestamp.
fn rfc3339(now: SystemTime) -> String {
    let (date, time) = utc_parts(now);
    format!("{date}T{time}Z")
}

/// One command and its reply, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exchange {
    /// The command line as sent (trimmed).
    pub command: String,
    /// The reply text as printed.
    pub reply: String,
    /// Whether the daemon accepted it.
    pub ok: bool,
}

/// One line of `invocations.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invocation {
    /// RFC 3339 UTC time the invocation finished.
    pub time: String,
    /// Process id of the invocation.
    pub pid: u32,
    /// Full argv.
    pub argv: Vec<String>,
    /// `daemon` (`-d`), `foreground` (`-f`) or `client`.
    pub mode: String,
    /// Every `CUDA_*` environment variable.
    pub env: BTreeMap<String, String>,
    /// Commands sent and replies received (client mode).
    pub commands: Vec<Exchange>,
    /// Exit status of the invocation.
    pub exit_code: i32,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// Pid of the daemon started (`-d`).
    pub daemon_pid: Option<u32>,
}

impl Invocation {
    /// An invocation record for this process, not yet finished.
    pub fn begin(mode: &str) -> Self {
        Self {
            time: String::new(),
            pid: std::process::id(),
            argv: std::env::args().collect(),
            mode: mode.to_owned(),
            env: std::env::vars()
                .filter(|(k, _)| k.starts_with("CUDA_"))
                .collect(),
            commands: Vec::new(),
            exit_code: 0,
            error: None,
            daemon_pid: None,
        }
    }

    /// Appends this record (stamped now) to `<log>/invocations.jsonl`.
    pub fn record(mut self, log_dir: &Path) -> io::Result<()> {
        self.time = rfc3339(SystemTime::now());
        fs::create_dir_all(log_dir)?;
        let mut line = serde_json::to_string(&self).map_err(io::Error::other)?;
        line.push('\n');
        // One write on an O_APPEND file, so concurrent invocations do not
        // interleave within a line.
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_dir.join(INVOCATIONS))?
            .write_all(line.as_bytes())
    }
}

/// Reads every record of `<log>/invocations.jsonl`.
pub fn read_invocations(log_dir: &Path) -> io::Result<Vec<Invocation>> {
    let text = match fs::read_to_string(log_dir.join(INVOCATIONS)) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(io::Error::other))
        .collect()
}

/// A request on the control socket (one JSON object per line).
#[derive(Debug, Serialize, Deserialize)]
struct Request {
    command: String,
}

/// Problems of the daemon or client.
#[derive(Debug, thiserror::Error)]
pub enum MpsError {
    /// Another daemon holds the pipe directory.
    #[error("{ALREADY_RUNNING}")]
    AlreadyRunning,
    /// No daemon listens on the pipe directory.
    #[error("{NO_DAEMON}")]
    NoDaemon,
    /// The background daemon did not come up.
    #[error("the control daemon did not start: {0}")]
    StartFailed(String),
    /// An I/O failure.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Underlying error.
        source: io::Error,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> MpsError {
    let context = context.into();
    move |source| MpsError::Io { context, source }
}

/// The running daemon's log.
struct ControlLog {
    file: File,
    pid: u32,
}

impl ControlLog {
    fn open(dirs: &Dirs) -> Result<Self, MpsError> {
        fs::create_dir_all(&dirs.log).map_err(io_err(format!("create {}", dirs.log.display())))?;
        let path = dirs.log.join(CONTROL_LOG);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(format!("open {}", path.display())))?;
        Ok(Self {
            file,
            pid: std::process::id(),
        })
    }

    fn line(&mut self, message: &str) {
        // The log is diagnostics only: a full disk must not stop the daemon.
        let _ = self
            .file
            .write_all(control_log_line(SystemTime::now(), self.pid, message).as_bytes());
    }
}

fn serve_connection(
    stream: UnixStream,
    settings: &mut ControlSettings,
    world: &mut dyn MpsWorld,
    log: &mut ControlLog,
) -> io::Result<bool> {
    stream.set_nonblocking(false)?;
    // A client that connects and stalls must not wedge the daemon forever.
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut writer = stream.try_clone()?;
    let reader = BufReader::new(stream);
    let mut quit = false;
    for line in reader.lines() {
        let line = line?;
        let Ok(request) = serde_json::from_str::<Request>(&line) else {
            continue;
        };
        log.line(&format!("Cmd:{}", request.command));
        let reply = handle_command(settings, world, &request.command);
        if !reply.ok {
            log.line(&reply.text);
        }
        let mut out = serde_json::to_string(&reply).map_err(io::Error::other)?;
        out.push('\n');
        writer.write_all(out.as_bytes())?;
        if reply.quit {
            quit = true;
            break;
        }
    }
    Ok(quit)
}

/// Runs the control daemon until `quit` (or until its control socket is
/// removed from under it, so a deleted test directory does not leave a
/// daemon behind).
pub fn run_daemon(dirs: &Dirs) -> Result<(), MpsError> {
    fs::create_dir_all(&dirs.pipe).map_err(io_err(format!("create {}", dirs.pipe.display())))?;
    let mut log = ControlLog::open(dirs)?;
    let lock_path = dirs.pipe.join(LOCK_FILE);
    let lock_file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_err(format!("open {}", lock_path.display())))?;
    let _lock = match Flock::lock(lock_file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err(_) => {
            log.line(ALREADY_RUNNING);
            return Err(MpsError::AlreadyRunning);
        }
    };
    let control = dirs.control();
    // A socket file left by a daemon that died is stale: we hold the lock.
    let _ = fs::remove_file(&control);
    let listener =
        UnixListener::bind(&control).map_err(io_err(format!("bind {}", control.display())))?;
    listener
        .set_nonblocking(true)
        .map_err(io_err("set the control socket non-blocking"))?;
    let pid_path = dirs.pipe.join(PID_FILE);
    fs::write(&pid_path, format!("{}\n", std::process::id()))
        .map_err(io_err(format!("write {}", pid_path.display())))?;
    log.line(&format!(
        "Starting control daemon using socket {}",
        control.display()
    ));
    log.line(&format!(
        "To connect CUDA applications to this daemon, set env {ENV_PIPE_DIR}={}",
        dirs.pipe.display()
    ));

    let mut settings = ControlSettings::default();
    let mut world = world_from_env(&mut log);
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                log.line("Accepting connection...");
                log.line("NEW UI");
                let quit = serve_connection(stream, &mut settings, world.as_mut(), &mut log)
                    .unwrap_or(false);
                log.line("UI closed");
                if quit {
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if !control.exists() {
                    log.line("Control socket removed; exiting");
                    let _ = fs::remove_file(&pid_path);
                    return Ok(());
                }
                thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(io_err("accept")(e)),
        }
    }
    // `quit` ends the servers this daemon started, and with them their clients.
    if let Ok(servers) = world.servers() {
        for server in servers {
            if let Err(e) = world.shutdown_server(server.pid) {
                log.line(&format!("Server {} did not shut down: {e}", server.pid));
            }
        }
    }
    let _ = fs::remove_file(&control);
    let _ = fs::remove_file(&pid_path);
    log.line("Exit");
    Ok(())
}

/// The servers this daemon manages: the simulator's when `NVML_SIM_CONFIG`
/// names one, else none. A simulator that cannot be opened is logged and
/// the daemon runs without servers rather than not at all.
fn world_from_env(log: &mut ControlLog) -> Box<dyn MpsWorld> {
    if std::env::var_os(crate::ENV_CONFIG).is_none_or(|v| v.is_empty()) {
        return Box::new(NoServers);
    }
    match Simulator::from_env() {
        Ok(sim) => {
            let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
            Box::new(SimServers::new(sim, visible.as_deref()))
        }
        Err(e) => {
            log.line(&format!("NVML simulator unavailable, no MPS servers: {e}"));
            Box::new(NoServers)
        }
    }
}

/// Starts `exe daemon_arg` as a detached background daemon and waits until
/// it listens; returns its pid.
pub fn start_background(dirs: &Dirs, exe: &Path, daemon_arg: &str) -> Result<u32, MpsError> {
    let pid_path = dirs.pipe.join(PID_FILE);
    let mut child = Command::new(exe)
        .arg(daemon_arg)
        .env(ENV_PIPE_DIR, &dirs.pipe)
        .env(ENV_LOG_DIR, &dirs.log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_err(format!("start {}", exe.display())))?;
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().map_err(io_err("wait for the daemon"))? {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = io::Read::read_to_string(&mut pipe, &mut stderr);
            }
            let message = stderr.trim();
            return Err(if message == ALREADY_RUNNING {
                MpsError::AlreadyRunning
            } else {
                MpsError::StartFailed(format!("{status}: {message}"))
            });
        }
        // The daemon writes its pid file only once the control socket
        // listens; probing the socket instead would log a spurious session.
        let ready = fs::read_to_string(&pid_path)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
            == Some(pid);
        if ready && dirs.control().exists() {
            return Ok(pid);
        }
        if Instant::now() > deadline {
            return Err(MpsError::StartFailed(
                "timed out waiting for the control socket".into(),
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Client mode: forwards each line of `input` to the daemon and prints the
/// replies to `output`. Returns the exchanges; `Err` when no daemon listens.
pub fn run_client(
    dirs: &Dirs,
    input: impl BufRead,
    mut output: impl Write,
) -> Result<Vec<Exchange>, MpsError> {
    let stream = UnixStream::connect(dirs.control()).map_err(|_| MpsError::NoDaemon)?;
    let mut writer = stream
        .try_clone()
        .map_err(io_err("clone the control socket"))?;
    let mut replies = BufReader::new(stream);
    let mut exchanges = Vec::new();
    for line in input.lines() {
        let line = line.map_err(io_err("read stdin"))?;
        let command = line.trim();
        if command.is_empty() {
            continue;
        }
        let mut request = serde_json::to_string(&Request {
            command: command.to_owned(),
        })
        .map_err(|e| io_err("encode")(io::Error::other(e)))?;
        request.push('\n');
        writer
            .write_all(request.as_bytes())
            .map_err(io_err("send to the control daemon"))?;
        let mut answer = String::new();
        replies
            .read_line(&mut answer)
            .map_err(io_err("read from the control daemon"))?;
        let reply: Reply = serde_json::from_str(&answer)
            .map_err(|e| io_err("the control daemon closed the connection")(io::Error::other(e)))?;
        if !reply.text.is_empty() {
            writeln!(output, "{}", reply.text).map_err(io_err("write stdout"))?;
        }
        exchanges.push(Exchange {
            command: command.to_owned(),
            reply: reply.text.clone(),
            ok: reply.ok,
        });
        if reply.quit {
            break;
        }
    }
    Ok(exchanges)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_answer_like_the_control_daemon() {
        let mut s = ControlSettings::default();
        let cases: &[(&str, &str, bool)] = &[
            ("get_default_active_thread_percentage", "100.0", true),
            ("set_default_active_thread_percentage 25", "", true),
            ("get_default_active_thread_percentage", "25.0", true),
            ("set_default_active_thread_percentage 0", "", false),
            ("set_default_active_thread_percentage 101", "", false),
            ("get_default_device_pinned_mem_limit 0", "0M", true),
            ("set_default_device_pinned_mem_limit 0 4096M", "", true),
            ("get_default_device_pinned_mem_limit 0", "4G", true),
            ("set_default_device_pinned_mem_limit 1 500M", "", true),
            ("get_default_device_pinned_mem_limit 1", "500M", true),
            ("set_default_device_pinned_mem_limit 0 4GiB", "", false),
            ("get_server_list", "", true),
            ("get_server_status 1234", "Server 1234 not found", false),
            ("frobnicate", "", false),
        ];
        for (command, want_text, want_ok) in cases {
            let reply = handle_command(&mut s, &mut NoServers, command);
            assert_eq!(reply.ok, *want_ok, "{command}: {reply:?}");
            if *want_ok || !want_text.is_empty() {
                assert_eq!(reply.text, *want_text, "{command}");
            }
            assert!(!reply.quit);
        }
        assert!(handle_command(&mut s, &mut NoServers, "quit").quit);
        assert!(handle_command(&mut s, &mut NoServers, "quit -t 5").quit);
    }

    /// Servers in memory, recording what was asked of them.
    #[derive(Default)]
    struct Servers(Vec<ServerView>, Vec<(u32, u32)>);

    impl MpsWorld for Servers {
        fn servers(&mut self) -> Result<Vec<ServerView>, String> {
            Ok(self.0.clone())
        }

        fn terminate_client(&mut self, server: u32, client: u32) -> Result<(), String> {
            let s = self
                .0
                .iter_mut()
                .find(|s| s.pid == server)
                .ok_or("no server")?;
            let at = s
                .clients
                .iter()
                .position(|c| *c == client)
                .ok_or("no client")?;
            s.clients.remove(at);
            self.1.push((server, client));
            Ok(())
        }

        fn shutdown_server(&mut self, server: u32) -> Result<(), String> {
            self.0.retain(|s| s.pid != server);
            Ok(())
        }
    }

    #[test]
    fn server_commands_answer_from_the_world() {
        let mut s = ControlSettings::default();
        let mut world = Servers(
            vec![
                ServerView {
                    pid: 70,
                    status: "ACTIVE",
                    clients: vec![71, 72],
                },
                ServerView {
                    pid: 80,
                    status: "FAULT",
                    clients: vec![81],
                },
            ],
            Vec::new(),
        );
        let mut ask = |line: &str| {
            let r = handle_command(&mut s, &mut world, line);
            (r.text, r.ok)
        };
        assert_eq!(ask("get_server_list"), ("70\n80".into(), true));
        assert_eq!(ask("get_server_status 80"), ("FAULT".into(), true));
        assert_eq!(ask("get_server_status 70"), ("ACTIVE".into(), true));
        assert_eq!(ask("get_client_list 70"), ("71\n72".into(), true));
        assert_eq!(
            ask("get_client_list 99"),
            ("Server 99 not found".into(), false)
        );
        assert_eq!(ask("terminate_client 70 71"), (String::new(), true));
        assert_eq!(ask("get_client_list 70"), ("72".into(), true));
        assert!(!ask("terminate_client 70 71").1, "already gone");
        assert!(!ask("terminate_client 70 x").1);
        assert_eq!(ask("shutdown_server 80"), (String::new(), true));
        assert_eq!(ask("get_server_list"), ("70".into(), true));
        assert_eq!(world.1, [(70, 71)]);
    }

    #[test]
    fn pinned_limits_parse_and_display() {
        assert_eq!(parse_pinned_limit("10G"), Some(10 * 1024));
        assert_eq!(parse_pinned_limit("4096M"), Some(4096));
        assert_eq!(parse_pinned_limit("4096"), None);
        assert_eq!(parse_pinned_limit("G"), None);
        assert_eq!(format_pinned_limit(1536), "1G");
        assert_eq!(format_pinned_limit(1023), "1023M");
    }

    #[test]
    fn log_lines_have_the_real_shape() {
        let t = UNIX_EPOCH + Duration::from_millis(1_713_852_299_389);
        assert_eq!(
            control_log_line(t, 72, "NEW UI"),
            "[2024-04-23 06:04:59.389 Control    72] NEW UI\n"
        );
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }
}
