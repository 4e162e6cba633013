//! CUDA MPS control: one `nvidia-cuda-mps-control` daemon per GPU that
//! shares its compute through MPS.
//!
//! Each daemon is told its GPU by `CUDA_VISIBLE_DEVICES=<GPU uuid>` and has
//! its own pipe and log directories, so daemons of different GPUs never meet;
//! containers of that GPU mount the pipe directory. [`MpsControlDaemon`]
//! starts a daemon with `nvidia-cuda-mps-control -d` and stops it by writing
//! `quit` on the stdin of a fresh `nvidia-cuda-mps-control` with the same
//! environment, as NVIDIA documents. [`FakeMps`] records the same calls in
//! memory for tests of the crates above.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, DirBuilder, File};
use std::io::{self, ErrorKind, Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// The program NVIDIA ships, found through `PATH` unless configured.
pub const DEFAULT_BINARY: &str = "nvidia-cuda-mps-control";
/// The control daemon's endpoint in the pipe directory.
pub const CONTROL_ENDPOINT: &str = "control";
/// The file in the pipe directory holding the control daemon's pid.
pub const PID_FILE: &str = "nvidia-cuda-mps-control.pid";

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

/// Starting and stopping MPS control daemons.
pub trait MpsControl: Send + Sync + Debug {
    /// Starts the GPU's control daemon unless it already runs.
    fn ensure_running(&self, gpu: &MpsGpu) -> Result<(), MpsError>;
    /// Stops the GPU's control daemon; nothing to do when none runs.
    fn stop(&self, gpu: &MpsGpu) -> Result<(), MpsError>;
    /// Whether the GPU's control daemon runs.
    fn is_running(&self, gpu: &MpsGpu) -> Result<bool, MpsError>;
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
        Ok(Ran {
            command,
            status,
            stdout: read_all(&mut stdout).map_err(io_err("read the program's stdout"))?,
            stderr: read_all(&mut stderr).map_err(io_err("read the program's stderr"))?,
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

fn read_all(file: &mut File) -> io::Result<String> {
    file.rewind()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
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

// ---------------------------------------------------------------------------
// The fake.
// ---------------------------------------------------------------------------

/// One call made on a [`FakeMps`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MpsCall {
    EnsureRunning { uuid: String },
    Stop { uuid: String },
    IsRunning { uuid: String },
}

/// Which kind of call an injected failure applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MpsOp {
    EnsureRunning,
    Stop,
    IsRunning,
}

#[derive(Debug, Default)]
struct FakeMpsState {
    /// Running daemons by pipe directory (one daemon per directory, as the
    /// real program enforces), with the GPU they serve.
    running: BTreeMap<PathBuf, String>,
    calls: Vec<MpsCall>,
    started: Vec<String>,
    stopped: Vec<String>,
    failures: Vec<(MpsOp, MpsError)>,
}

/// An in-memory, recording [`MpsControl`].
#[derive(Debug, Default)]
pub struct FakeMps {
    // Held for the length of one call only.
    state: Mutex<FakeMpsState>,
}

impl FakeMps {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, FakeMpsState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<MpsCall> {
        self.lock().calls.clone()
    }

    /// GPUs whose daemon was actually started, in order (an
    /// `ensure_running` on a running daemon starts nothing).
    pub fn started(&self) -> Vec<String> {
        self.lock().started.clone()
    }

    /// GPUs whose daemon was actually stopped, in order.
    pub fn stopped(&self) -> Vec<String> {
        self.lock().stopped.clone()
    }

    /// GPUs with a running daemon.
    pub fn running(&self) -> Vec<String> {
        self.lock().running.values().cloned().collect()
    }

    /// The daemon of `gpu` dies (as after a fatal client fault).
    pub fn crash(&self, gpu: &MpsGpu) {
        self.lock().running.remove(&gpu.pipe_dir);
    }

    /// The next call of kind `op` fails with `error`.
    pub fn fail_next(&self, op: MpsOp, error: MpsError) {
        self.lock().failures.push((op, error));
    }

    fn begin(&self, call: MpsCall, op: MpsOp) -> Result<MutexGuard<'_, FakeMpsState>, MpsError> {
        let mut state = self.lock();
        state.calls.push(call);
        if let Some(at) = state.failures.iter().position(|(o, _)| *o == op) {
            let (_, error) = state.failures.remove(at);
            return Err(error);
        }
        Ok(state)
    }
}

impl MpsControl for FakeMps {
    fn ensure_running(&self, gpu: &MpsGpu) -> Result<(), MpsError> {
        let call = MpsCall::EnsureRunning {
            uuid: gpu.uuid.clone(),
        };
        let mut state = self.begin(call, MpsOp::EnsureRunning)?;
        if !state.running.contains_key(&gpu.pipe_dir) {
            state.running.insert(gpu.pipe_dir.clone(), gpu.uuid.clone());
            state.started.push(gpu.uuid.clone());
        }
        Ok(())
    }

    fn stop(&self, gpu: &MpsGpu) -> Result<(), MpsError> {
        let call = MpsCall::Stop {
            uuid: gpu.uuid.clone(),
        };
        let mut state = self.begin(call, MpsOp::Stop)?;
        if state.running.remove(&gpu.pipe_dir).is_some() {
            state.stopped.push(gpu.uuid.clone());
        }
        Ok(())
    }

    fn is_running(&self, gpu: &MpsGpu) -> Result<bool, MpsError> {
        let call = MpsCall::IsRunning {
            uuid: gpu.uuid.clone(),
        };
        let state = self.begin(call, MpsOp::IsRunning)?;
        Ok(state.running.contains_key(&gpu.pipe_dir))
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
