//! `nvidia-cuda-mps-control-sim`: a simulated, recording stand-in for
//! `nvidia-cuda-mps-control` (see `nvml_sim::mps` for what it models).
//!
//! Usage, as the real tool:
//! - `nvidia-cuda-mps-control-sim -d`: start the control daemon in the background.
//! - `nvidia-cuda-mps-control-sim -f`: run the control daemon in the foreground.
//! - `echo CMD | nvidia-cuda-mps-control-sim`: send commands to the running daemon.
//!
//! Exit status: 0 success; 1 no daemon, daemon already running, or a
//! command the daemon rejected.

use std::io::{self, Write};
use std::process::ExitCode;

use nvml_sim::mps::{self, Dirs, Invocation, MpsError};

/// Internal: how `-d` re-executes this program as the detached daemon.
const DAEMON_CHILD: &str = "--internal-daemon-child";

fn usage() -> &'static str {
    "usage: nvidia-cuda-mps-control-sim [-d | -f]\n  \
     -d  start the control daemon in the background\n  \
     -f  run the control daemon in the foreground\n  \
     (no option) read commands from stdin and send them to the running daemon"
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dirs = Dirs::from_env();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => client(&dirs),
        ["-d"] => background(&dirs),
        ["-f"] => foreground(&dirs),
        [DAEMON_CHILD] => daemon_child(&dirs),
        ["-h" | "--help"] => {
            println!("{}", usage());
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{}", usage());
            let mut record = Invocation::begin("invalid");
            record.exit_code = 1;
            record.error = Some("invalid arguments".into());
            let _ = record.record(&dirs.log);
            ExitCode::from(1)
        }
    }
}

fn finish(mut record: Invocation, dirs: &Dirs, result: Result<(), MpsError>) -> ExitCode {
    let code = match &result {
        Ok(()) => record.exit_code,
        Err(e) => {
            eprintln!("{e}");
            record.error = Some(e.to_string());
            1
        }
    };
    record.exit_code = code;
    if let Err(e) = record.record(&dirs.log) {
        eprintln!(
            "nvidia-cuda-mps-control-sim: cannot record the invocation in {}: {e}",
            dirs.log.display()
        );
    }
    ExitCode::from(code as u8)
}

fn client(dirs: &Dirs) -> ExitCode {
    let mut record = Invocation::begin("client");
    let stdin = io::stdin();
    let result = mps::run_client(dirs, stdin.lock(), io::stdout().lock()).map(|exchanges| {
        if exchanges.iter().any(|e| !e.ok) {
            record.exit_code = 1;
        }
        record.commands = exchanges;
    });
    let _ = io::stdout().flush();
    finish(record, dirs, result)
}

fn background(dirs: &Dirs) -> ExitCode {
    let mut record = Invocation::begin("daemon");
    let result = std::env::current_exe()
        .map_err(|source| MpsError::Io {
            context: "locate this program".into(),
            source,
        })
        .and_then(|exe| mps::start_background(dirs, &exe, DAEMON_CHILD))
        .map(|pid| record.daemon_pid = Some(pid));
    finish(record, dirs, result)
}

fn foreground(dirs: &Dirs) -> ExitCode {
    let mut record = Invocation::begin("foreground");
    record.daemon_pid = Some(std::process::id());
    // Recorded before serving: a foreground daemon runs until `quit`.
    if let Err(e) = record.clone().record(&dirs.log) {
        eprintln!("nvidia-cuda-mps-control-sim: cannot record the invocation: {e}");
    }
    match mps::run_daemon(dirs) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}

fn daemon_child(dirs: &Dirs) -> ExitCode {
    // Detach from the starter's session, as a daemon does, so signals meant
    // for the starter's process group do not reach it.
    let _ = nix::unistd::setsid();
    match mps::run_daemon(dirs) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Not eprintln!: once the starter has exited, stderr is a closed
            // pipe and a failed write must not panic.
            let _ = writeln!(io::stderr(), "{e}");
            ExitCode::from(1)
        }
    }
}
