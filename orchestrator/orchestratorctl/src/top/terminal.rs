//! The terminal while `top` runs: raw mode on the alternate screen, the
//! cursor hidden; and the way back, on every exit path. A [`Session`] puts
//! it back when dropped (a return, an error, an unwinding panic), and the
//! panic hook it installs puts it back before the panic's message is
//! printed, so the message lands on the normal screen and stays readable.

use std::io::{Stdout, Write as _};

use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::cursor::{Hide, Show};
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};

/// The terminal taken over; given back on drop.
pub struct Session {
    pub terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").finish_non_exhaustive()
    }
}

/// Leaves raw mode and the alternate screen and shows the cursor. Safe to
/// run twice (a panic's hook, then the drop while unwinding).
fn restore() {
    let _ = disable_raw_mode();
    let mut out = std::io::stdout();
    let _ = execute!(out, LeaveAlternateScreen, Show);
    let _ = out.flush();
}

impl Session {
    pub fn start() -> std::io::Result<Session> {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
        enable_raw_mode()?;
        let mut out = std::io::stdout();
        if let Err(e) = execute!(out, EnterAlternateScreen, Hide) {
            restore();
            return Err(e);
        }
        match Terminal::new(CrosstermBackend::new(out)) {
            Ok(terminal) => Ok(Session { terminal }),
            Err(e) => {
                restore();
                Err(e)
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        restore();
    }
}
