//! CUDA MPS control: one `nvidia-cuda-mps-control` daemon per GPU that
//! shares its compute through MPS.
//!
//! Each daemon is told its GPU by `CUDA_VISIBLE_DEVICES=<GPU uuid>` and has
//! its own pipe and log directories, so daemons of different GPUs never meet;
//! containers of that GPU mount the pipe directory. [`MpsControlDaemon`]
//! starts a daemon with `nvidia-cuda-mps-control -d` and stops it by writing
//! `quit` on the stdin of a fresh `nvidia-cuda-mps-control` with the same
//! environment, as NVIDIA documents. Questions for the daemon
//! (`get_server_list`, `get_client_list`, `get_server_status`,
//! `terminate_client`) go the same way, one command per run, and their
//! replies are bounded in size. `FakeMps` (feature `fake`) records the same
//! calls in memory for tests of the crates above.

use std::fmt::Debug;
use std::fs::{self, DirBuilder, File};
use std::io::{self, ErrorKind, Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The program NVIDIA ships, found through `PATH` unless configured.
pub const DEFAULT_BINARY: &str = "nvidia-cuda-mps-control";
/// The control daemon's endpoint in the pipe directory.
pub const CONTROL_ENDPOINT: &str = "control";
/// The file in the pipe directory holding the control daemon's pid.
pub const PID_FILE: &str = "nvidia-cuda-mps-control.pid";

/// The most a reply of the control program may hold; a longer one (or a
/// runaway program) is an error, never a reason to hold unbounded memory.
pub const MAX_REPLY_BYTES: u64 = 256 * 1024;

#[cfg(any(test, feature = "fake"))]
mod fake;
#[cfg(any(test, feature = "fake"))]
pub use fake::{FakeMps, MpsCall, MpsOp};

const ENV_PIPE_DIR: &str = "CUDA_MPS_PIPE_DIRECTORY";
const ENV_LOG_DIR: &str = "CUDA_MPS_LOG_DIRECTORY";
const ENV_VISIBLE: &str = "CUDA_VISIBLE_DEVICES";

/// One GPU shared through MPS: which GPU, and the daemon's directories.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MpsGpu {
    /// `GPU-<uuid>` of the physical GPU.
    pub uuid: String,
    /// `CUDA_MPS_PIPE_DIRECTORY`: mounted into the GPU's client containers.
    pub pipe_dir: PathBuf,
    /// `CUDA_MPS_LOG_DIRECTORY`.
    pub log_dir: PathBuf,
}

/// What `get_server_status` says of an MPS server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MpsServerStatus {
    /// Serving its clients.
    Active,
    /// A client hit a fatal fault: every client of the server was hit too,
    /// and new clients get `CUDA_ERROR_MPS_SERVER_NOT_READY` until all the
    /// hit ones have exited.
    Fault,
    /// Any other word the control daemon uses, as it said it.
    Other(String),
}

/// An MPS server with its status and clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpsServer {
    /// Process id of `nvidia-cuda-mps-server`.
    pub pid: u32,
    /// Its status.
    pub status: MpsServerStatus,
    /// Process ids of its clients.
    pub clients: Vec<u32>,
}

/// Starting and stopping MPS control daemons, and talking to their servers.
pub trait MpsControl: Send + Sync + Debug {
    /// Starts the GPU's control daemon unless it already runs.
    fn ensure_running(&self, gpu: &MpsGpu) -> Result<(), MpsError>;
    /// Stops the GPU's control daemon; nothing to do when none runs.
    fn stop(&self, gpu: &MpsGpu) -> Result<(), MpsError>;
    /// Whether the GPU's control daemon runs.
    fn is_running(&self, gpu: &MpsGpu) -> Result<bool, MpsError>;
    /// The pids of the daemon's MPS servers (`get_server_list`).
    fn server_pids(&self, gpu: &MpsGpu) -> Result<Vec<u32>, MpsError>;
    /// The pids of a server's clients (`get_client_list`).
    fn client_pids(&self, gpu: &MpsGpu, server_pid: u32) -> Result<Vec<u32>, MpsError>;
    /// A server's status (`get_server_status`): how a fault is noticed.
    fn server_status(&self, gpu: &MpsGpu, server_pid: u32) -> Result<MpsServerStatus, MpsError>;
    /// Ends a client's outstanding GPU work (`terminate_client`): its next
    /// CUDA call fails with `CUDA_ERROR_MPS_CLIENT_TERMINATED`, the other
    /// clients are untouched. A client the server does not list is
    /// `NoSuchClient`.
    fn terminate_client(
        &self,
        gpu: &MpsGpu,
        server_pid: u32,
        client_pid: u32,
    ) -> Result<(), MpsError>;

    /// Every server of the daemon with its status and clients.
    fn servers(&self, gpu: &MpsGpu) -> Result<Vec<MpsServer>, MpsError> {
        self.server_pids(gpu)?
            .into_iter()
            .map(|pid| {
                Ok(MpsServer {
                    pid,
                    status: self.server_status(gpu, pid)?,
                    clients: self.client_pids(gpu, pid)?,
                })
            })
            .collect()
    }
}

/// What went wrong starting or stopping an MPS control daemon.
#[derive(Debug, thiserror::Error)]
pub enum MpsError {
    #[error(
        "the MPS control program {binary} was not found; install the NVIDIA driver's \
         nvidia-cuda-mps-control or configure its path. Agents asking for MPS shares cannot start"
    )]
    BinaryMissing { binary: PathBuf },

    #[error("cannot run {binary}: {source}")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("cannot create the MPS directory {path}: {source}")]
    Directory {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("GPU {gpu}: `{command}` exited with {status}: {stderr}")]
    CommandFailed {
        gpu: String,
        command: String,
        status: String,
        stderr: String,
    },

    #[error("GPU {gpu}: `{command}` did not finish within {waited:?} and was killed")]
    Timeout {
        gpu: String,
        command: String,
        waited: Duration,
    },

    #[error(
        "GPU {gpu}: the MPS control daemon did not come up within {waited:?} \
         (no live control endpoint in {pipe_dir}); see the logs in its log directory"
    )]
    NotReady {
        gpu: String,
        pipe_dir: PathBuf,
        waited: Duration,
    },

    #[error("GPU {gpu}: the MPS control daemon still runs {waited:?} after `quit`")]
    StillRunning { gpu: String, waited: Duration },

    #[error("GPU {gpu}: no MPS control daemon runs for it, so it has no MPS servers or clients")]
    NotRunning { gpu: String },

    #[error("GPU {gpu}: its MPS control daemon has no server with pid {server_pid}")]
    NoSuchServer { gpu: String, server_pid: u32 },

    #[error("GPU {gpu}: pid {client_pid} is not a client of MPS server {server_pid}")]
    NoSuchClient {
        gpu: String,
        server_pid: u32,
        client_pid: u32,
    },

    #[error("GPU {gpu}: `{command}` answered something unexpected: {reply}")]
    UnexpectedReply {
        gpu: String,
        command: String,
        reply: String,
    },

    #[error("GPU {gpu}: `{command}` printed more than {limit} bytes")]
    ReplyTooLarge {
        gpu: String,
        command: String,
        limit: u64,
    },

    #[error("GPU {gpu}: {what}: {source}")]
    Io {
        gpu: String,
        what: String,
        #[source]
        source: io::Error,
    },
}

/// The real MPS control program, spawned per GPU.
#[derive(Debug, Clone)]
pub struct MpsControlDaemon {
    binary: PathBuf,
    timeout: Duration,
}

impl Default for MpsControlDaemon {
    fn default() -> Self {
        Self::new(DEFAULT_BINARY)
    }
}

impl MpsControlDaemon {
    /// Uses `binary` (a path, or a name looked up in `PATH`).
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        MpsControlDaemon {
            binary: binary.into(),
            timeout: Duration::from_secs(10),
        }
    }

    /// How long to wait for the program to answer, the daemon to come up
    /// or to go away (default 10 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The program with the GPU's environment: inherited `CUDA_*` variables
    /// are dropped so none of the supervisor's own settings leaks into the
    /// daemon (and from there into every MPS server it starts), and so are
    /// systemd's notify variables, which belong to the supervisor alone.
    fn command(&self, gpu: &MpsGpu) -> Command {
        let mut cmd = Command::new(&self.binary);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("CUDA_") {
                cmd.env_remove(key);
            }
        }
        for key in ["NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC"] {
            cmd.env_remove(key);
        }
        cmd.env(ENV_PIPE_DIR, &gpu.pipe_dir)
            .env(ENV_LOG_DIR, &gpu.log_dir)
            .env(ENV_VISIBLE, &gpu.uuid);
        cmd
    }

    /// Runs the program to completion with `input` on stdin.
    ///
    /// Output goes to anonymous files rather than pipes: with `-d` the
    /// program forks the daemon, which may keep inherited descriptors open
    /// for its whole life, and reading a pipe to its end would then block.
    fn run(&self, gpu: &MpsGpu, args: &[&str], input: Option<&str>) -> Result<Ran, MpsError> {
        let command = describe(&self.binary, args, input);
        let io_err = |what: &str| {
            let gpu = gpu.uuid.clone();
            let what = what.to_owned();
            move |source| MpsError::Io { gpu, what, source }
        };
        let mut stdout = tempfile::tempfile().map_err(io_err("create a file for stdout"))?;
        let mut stderr = tempfile::tempfile().map_err(io_err("create a file for stderr"))?;
        let mut cmd = self.command(gpu);
        cmd.args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(stdout.try_clone().map_err(io_err("share stdout"))?)
            .stderr(stderr.try_clone().map_err(io_err("share stderr"))?);
        let mut child = cmd.spawn().map_err(|source| {
            if source.kind() == ErrorKind::NotFound {
                MpsError::BinaryMissing {
                    binary: self.binary.clone(),
                }
            } else {
                MpsError::Spawn {
                    binary: self.binary.clone(),
                    source,
                }
            }
        })?;
        if let (Some(text), Some(mut pipe)) = (input, child.stdin.take()) {
            match pipe.write_all(text.as_bytes()) {
                // The program may exit without reading (no daemon to talk to):
                // its exit status says what happened.
                Err(e) if e.kind() == ErrorKind::BrokenPipe => {}
                other => other.map_err(io_err("write to the program's stdin"))?,
            }
        }
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            if let Some(status) = child.try_wait().map_err(io_err("wait for the program"))? {
                break status;
            }
            if Instant::now() >= deadline {
                // Best effort: the error below is what matters.
                let _ = child.kill();
                let _ = child.wait();
                return Err(MpsError::Timeout {
                    gpu: gpu.uuid.clone(),
                    command,
                    waited: self.timeout,
                });
            }
            thread::sleep(Duration::from_millis(10));
        };
        let too_large = |command: &str| MpsError::ReplyTooLarge {
            gpu: gpu.uuid.clone(),
            command: command.to_owned(),
            limit: MAX_REPLY_BYTES,
        };
        let stdout = read_bounded(&mut stdout).map_err(io_err("read the program's stdout"))?;
        let stderr = read_bounded(&mut stderr).map_err(io_err("read the program's stderr"))?;
        let (Some(stdout), Some(stderr)) = (stdout, stderr) else {
            return Err(too_large(&command));
        };
        Ok(Ran {
            command,
            status,
            stdout,
            stderr,
        })
    }

    fn wait_for(&self, gpu: &MpsGpu, running: bool) -> Result<bool, MpsError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            if self.is_running(gpu)? == running {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A finished run of the program.
struct Ran {
    command: String,
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn check(self, gpu: &MpsGpu) -> Result<Ran, MpsError> {
        if self.status.success() {
            return Ok(self);
        }
        Err(MpsError::CommandFailed {
            gpu: gpu.uuid.clone(),
            command: self.command,
            status: self.status.to_string(),
            stderr: self.stderr.trim().to_owned(),
        })
    }
}

impl MpsControl for MpsControlDaemon {
    fn ensure_running(&self, gpu: &MpsGpu) -> Result<(), MpsError> {
        if self.is_running(gpu)? {
            return Ok(());
        }
        make_dir(&gpu.pipe_dir)?;
        make_dir(&gpu.log_dir)?;
        self.run(gpu, &["-d"], None)?.check(gpu)?;
        if !self.wait_for(gpu, true)? {
            return Err(MpsError::NotReady {
                gpu: gpu.uuid.clone(),
                pipe_dir: gpu.pipe_dir.clone(),
                waited: self.timeout,
            });
        }
        tracing::info!(gpu = %gpu.uuid, pipe_dir = %gpu.pipe_dir.display(), "MPS control daemon started");
        Ok(())
    }

    fn stop(&self, gpu: &MpsGpu) -> Result<(), MpsError> {
        if !self.is_running(gpu)? {
            return Ok(());
        }
        let ran = self.run(gpu, &[], Some("quit\n"))?.check(gpu)?;
        tracing::debug!(gpu = %gpu.uuid, reply = %ran.stdout.trim(), "MPS quit sent");
        if !self.wait_for(gpu, false)? {
            return Err(MpsError::StillRunning {
                gpu: gpu.uuid.clone(),
                waited: self.timeout,
            });
        }
        tracing::info!(gpu = %gpu.uuid, "MPS control daemon stopped");
        Ok(())
    }

    /// Running means: the control endpoint exists in the pipe directory and
    /// the pid file (when there is one) names a live process. A daemon that
    /// died leaves a stale endpoint behind; its pid file gives it away.
    fn is_running(&self, gpu: &MpsGpu) -> Result<bool, MpsError> {
        let control = gpu.pipe_dir.join(CONTROL_ENDPOINT);
        match fs::symlink_metadata(&control) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
            Err(source) => {
                return Err(MpsError::Io {
                    gpu: gpu.uuid.clone(),
                    what: format!("inspect {}", control.display()),
                    source,
                });
            }
        }
        let pid_file = gpu.pipe_dir.join(PID_FILE);
        match fs::read_to_string(&pid_file) {
            Ok(text) => Ok(text.trim().parse::<u32>().is_ok_and(process_alive)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(true),
            Err(source) => Err(MpsError::Io {
                gpu: gpu.uuid.clone(),
                what: format!("read {}", pid_file.display()),
                source,
            }),
        }
    }

    fn server_pids(&self, gpu: &MpsGpu) -> Result<Vec<u32>, MpsError> {
        self.list_servers(gpu)
    }

    fn client_pids(&self, gpu: &MpsGpu, server_pid: u32) -> Result<Vec<u32>, MpsError> {
        self.list_clients(gpu, server_pid)
    }

    fn server_status(&self, gpu: &MpsGpu, server_pid: u32) -> Result<MpsServerStatus, MpsError> {
        self.status_of(gpu, server_pid)
    }

    fn terminate_client(
        &self,
        gpu: &MpsGpu,
        server_pid: u32,
        client_pid: u32,
    ) -> Result<(), MpsError> {
        self.terminate(gpu, server_pid, client_pid)
    }
}

impl MpsControlDaemon {
    fn list_servers(&self, gpu: &MpsGpu) -> Result<Vec<u32>, MpsError> {
        const COMMAND: &str = "get_server_list";
        let reply = self.ask(gpu, COMMAND)?;
        parse_pids(&reply).ok_or_else(|| Self::unexpected(gpu, COMMAND, &reply))
    }

    fn list_clients(&self, gpu: &MpsGpu, server_pid: u32) -> Result<Vec<u32>, MpsError> {
        let command = format!("get_client_list {server_pid}");
        let reply = self.ask(gpu, &command)?;
        parse_pids(&reply).ok_or_else(|| self.refused(gpu, server_pid, &command, &reply))
    }

    fn status_of(&self, gpu: &MpsGpu, server_pid: u32) -> Result<MpsServerStatus, MpsError> {
        let command = format!("get_server_status {server_pid}");
        let reply = self.ask(gpu, &command)?;
        match reply.trim() {
            "ACTIVE" => Ok(MpsServerStatus::Active),
            "FAULT" => Ok(MpsServerStatus::Fault),
            other => match self.server_pids(gpu) {
                Ok(pids) if !pids.contains(&server_pid) => Err(MpsError::NoSuchServer {
                    gpu: gpu.uuid.clone(),
                    server_pid,
                }),
                Ok(_) if !other.is_empty() && !other.contains('\n') => {
                    Ok(MpsServerStatus::Other(other.to_owned()))
                }
                Ok(_) => Err(Self::unexpected(gpu, &command, &reply)),
                Err(e) => Err(e),
            },
        }
    }

    /// Checks the client is the server's first (the control daemon's reply
    /// to `terminate_client` is not documented, so a wrong pid is caught
    /// here, with a clear error), then sends the command; a failed run is
    /// `CommandFailed` or the daemon's words.
    fn terminate(&self, gpu: &MpsGpu, server_pid: u32, client_pid: u32) -> Result<(), MpsError> {
        if !self.list_clients(gpu, server_pid)?.contains(&client_pid) {
            return Err(MpsError::NoSuchClient {
                gpu: gpu.uuid.clone(),
                server_pid,
                client_pid,
            });
        }
        let command = format!("terminate_client {server_pid} {client_pid}");
        let ran = self.run(gpu, &[], Some(&format!("{command}\n")))?;
        if !ran.status.success() {
            let words = ran.stdout.trim();
            return Err(if words.is_empty() {
                MpsError::CommandFailed {
                    gpu: gpu.uuid.clone(),
                    command: ran.command,
                    status: ran.status.to_string(),
                    stderr: ran.stderr.trim().to_owned(),
                }
            } else {
                Self::unexpected(gpu, &command, words)
            });
        }
        tracing::info!(gpu = %gpu.uuid, server_pid, client_pid, reply = %ran.stdout.trim(), "MPS client terminated");
        Ok(())
    }
}

/// Creates a directory (and its parents) with mode 0755, so the clients in
/// containers can reach the pipes; an existing directory is left as it is.
fn make_dir(path: &Path) -> Result<(), MpsError> {
    let fail = |source| MpsError::Directory {
        path: path.to_path_buf(),
        source,
    };
    if path.is_dir() {
        return Ok(());
    }
    DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
        .map_err(fail)?;
    // The umask may have narrowed the mode at creation.
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).map_err(fail)
}

/// Whether `pid` is a live (not zombie) process.
fn process_alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may
    // itself contain them: take the text after the last ')'.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z' | 'X' | 'x') | None)
}

/// The file's text, or `None` when it holds more than [`MAX_REPLY_BYTES`].
fn read_bounded(file: &mut File) -> io::Result<Option<String>> {
    file.rewind()?;
    let mut bytes = Vec::new();
    file.take(MAX_REPLY_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_REPLY_BYTES {
        return Ok(None);
    }
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// A reply of pids, one per line (none for an empty reply); `None` when a
/// line is anything else (the daemon's words for a refusal).
fn parse_pids(reply: &str) -> Option<Vec<u32>> {
    reply
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| l.parse::<u32>().ok())
        .collect()
}

impl MpsControlDaemon {
    /// Sends one command to the GPU's running daemon and returns what it
    /// printed. The real program prints a refusal on stdout and still exits
    /// 0; the simulated one exits 1: both come back as the reply text, for
    /// the caller to judge. A run that printed nothing and failed is
    /// `CommandFailed`.
    fn ask(&self, gpu: &MpsGpu, command: &str) -> Result<String, MpsError> {
        if !self.is_running(gpu)? {
            return Err(MpsError::NotRunning {
                gpu: gpu.uuid.clone(),
            });
        }
        let ran = self.run(gpu, &[], Some(&format!("{command}\n")))?;
        if !ran.status.success() && ran.stdout.trim().is_empty() {
            return Err(MpsError::CommandFailed {
                gpu: gpu.uuid.clone(),
                command: ran.command,
                status: ran.status.to_string(),
                stderr: ran.stderr.trim().to_owned(),
            });
        }
        Ok(ran.stdout)
    }

    fn unexpected(gpu: &MpsGpu, command: &str, reply: &str) -> MpsError {
        MpsError::UnexpectedReply {
            gpu: gpu.uuid.clone(),
            command: command.to_owned(),
            reply: reply.trim().to_owned(),
        }
    }

    /// The error for a refused question about `server_pid`: `NoSuchServer`
    /// when the daemon does not list it, else the daemon's words.
    fn refused(&self, gpu: &MpsGpu, server_pid: u32, command: &str, reply: &str) -> MpsError {
        match self.server_pids(gpu) {
            Ok(pids) if !pids.contains(&server_pid) => MpsError::NoSuchServer {
                gpu: gpu.uuid.clone(),
                server_pid,
            },
            Ok(_) => Self::unexpected(gpu, command, reply),
            Err(e) => e,
        }
    }
}

/// The command as an operator would type it.
fn describe(binary: &Path, args: &[&str], input: Option<&str>) -> String {
    let mut text = binary.display().to_string();
    for arg in args {
        text.push(' ');
        text.push_str(arg);
    }
    match input {
        Some(input) => format!("echo {} | {text}", input.trim()),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_bogus_pid_is_not() {
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(u32::MAX));
    }

    #[test]
    fn pid_replies_parse_and_anything_else_is_refused() {
        assert_eq!(parse_pids(""), Some(vec![]));
        assert_eq!(parse_pids("12\n 34 \n\n"), Some(vec![12, 34]));
        assert_eq!(parse_pids("Server 12 not found"), None);
        assert_eq!(parse_pids("12\nx"), None);
    }

    #[test]
    fn commands_are_described_as_an_operator_would_type_them() {
        let bin = Path::new("/usr/bin/nvidia-cuda-mps-control");
        assert_eq!(
            describe(bin, &["-d"], None),
            "/usr/bin/nvidia-cuda-mps-control -d"
        );
        assert_eq!(
            describe(bin, &[], Some("quit\n")),
            "echo quit | /usr/bin/nvidia-cuda-mps-control"
        );
    }
}
