//! Diagnostics: every problem found in a config, with file, line, column,
//! the offending source line and a hint on how to fix it.

use std::fmt::Write as _;

use serde::Serialize;

use crate::yaml::{Pos, Span};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// A stable identifier of the kind of problem (`unknown-key`, `cycle`…).
    pub code: &'static str,
    pub file: String,
    pub line: u32,
    pub column: u32,
    /// Where the offending text ends, for underlining.
    #[serde(skip)]
    pub end: Pos,
    pub message: String,
    /// How to fix it, when there is something to say.
    pub help: Option<String>,
}

impl Diagnostic {
    /// `file:line:column: severity: message`, the form tests and editors read.
    pub fn headline(&self) -> String {
        format!(
            "{}:{}:{}: {}: {}",
            self.file,
            self.line,
            self.column,
            match self.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            },
            self.message
        )
    }
}

/// Collects diagnostics for one file.
#[derive(Debug, Clone)]
pub struct Diagnostics {
    file: String,
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn new(file: impl Into<String>) -> Self {
        Diagnostics {
            file: file.into(),
            items: Vec::new(),
        }
    }

    pub fn file(&self) -> &str {
        &self.file
    }

    fn push(
        &mut self,
        severity: Severity,
        code: &'static str,
        span: Span,
        message: String,
        help: Option<String>,
    ) {
        self.items.push(Diagnostic {
            severity,
            code,
            file: self.file.clone(),
            line: span.start.line,
            column: span.start.col,
            end: span.end,
            message,
            help,
        });
    }

    pub fn error(&mut self, code: &'static str, span: Span, message: impl Into<String>) {
        self.push(Severity::Error, code, span, message.into(), None);
    }

    pub fn error_help(
        &mut self,
        code: &'static str,
        span: Span,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        self.push(
            Severity::Error,
            code,
            span,
            message.into(),
            Some(help.into()),
        );
    }

    pub fn warning(&mut self, code: &'static str, span: Span, message: impl Into<String>) {
        self.push(Severity::Warning, code, span, message.into(), None);
    }

    pub fn warning_help(
        &mut self,
        code: &'static str,
        span: Span,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        self.push(
            Severity::Warning,
            code,
            span,
            message.into(),
            Some(help.into()),
        );
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }

    /// Sorted by position, errors before warnings at the same place.
    pub fn into_sorted(mut self) -> Vec<Diagnostic> {
        self.items.sort_by_key(|d| (d.line, d.column, d.severity));
        self.items.dedup();
        self.items
    }
}

/// Renders diagnostics for people: headline, source line, underline, help.
pub fn render(diags: &[Diagnostic], source: &str, color: bool) -> String {
    let lines = source_lines(source);
    let (red, yellow, blue, bold, reset) = if color {
        ("\x1b[31m", "\x1b[33m", "\x1b[34m", "\x1b[1m", "\x1b[0m")
    } else {
        ("", "", "", "", "")
    };
    let mut out = String::new();
    for d in diags {
        let (sev_color, sev) = match d.severity {
            Severity::Error => (red, "error"),
            Severity::Warning => (yellow, "warning"),
        };
        let _ = writeln!(
            out,
            "{bold}{sev_color}{sev}[{}]{reset}{bold}: {}{reset}",
            d.code, d.message
        );
        let _ = writeln!(out, "  {blue}-->{reset} {}:{}:{}", d.file, d.line, d.column);
        if let Some(text) = lines.get((d.line as usize).wrapping_sub(1)) {
            let num = d.line.to_string();
            let pad = " ".repeat(num.len());
            let width = if d.end.line == d.line && d.end.col > d.column {
                (d.end.col - d.column) as usize
            } else {
                text.chars()
                    .count()
                    .saturating_sub(d.column as usize - 1)
                    .max(1)
            };
            let _ = writeln!(out, "{pad} {blue}|{reset}");
            let _ = writeln!(out, "{blue}{num} |{reset} {text}");
            let _ = writeln!(
                out,
                "{pad} {blue}|{reset} {}{sev_color}{}{reset}",
                " ".repeat(d.column.saturating_sub(1) as usize),
                "^".repeat(width.min(80))
            );
        }
        if let Some(help) = &d.help {
            let _ = writeln!(out, "  {blue}={reset} help: {help}");
        }
        out.push('\n');
    }
    out
}

/// The lines of a source as YAML counts them: `\r\n`, `\n` and a lone
/// `\r` each end a line, so line numbers in diagnostics match.
pub fn source_lines(source: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = source.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => {
                out.push(&source[start..i]);
                start = i + 1;
            }
            b'\r' => {
                out.push(&source[start..i]);
                if bytes.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if start < source.len() {
        out.push(&source[start..]);
    }
    out
}

/// The closest of `candidates` to `word`, if it is close enough to be the
/// likely intent (a typo, a case slip, a missing underscore).
pub fn closest<'a, I>(word: &str, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    let lw = word.to_lowercase();
    candidates
        .into_iter()
        .map(|c| {
            (
                c,
                strsim::normalized_damerau_levenshtein(&lw, &c.to_lowercase()),
            )
        })
        .filter(|(_, score)| *score >= 0.6)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(c, _)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_like_yaml() {
        assert_eq!(source_lines("a\r\nb\rc\nd"), ["a", "b", "c", "d"]);
        assert_eq!(source_lines("a\n"), ["a"]);
        assert!(source_lines("").is_empty());
    }

    #[test]
    fn closest_finds_typos_only() {
        let keys = ["retries", "interval", "timeout", "start_period"];
        assert_eq!(closest("retires", keys), Some("retries"));
        assert_eq!(closest("intervall", keys), Some("interval"));
        assert_eq!(closest("startperiod", keys), Some("start_period"));
        assert_eq!(closest("banana", keys), None);
    }

    #[test]
    fn render_underlines_the_span() {
        let mut d = Diagnostics::new("c.yaml");
        d.error_help(
            "unknown-key",
            Span {
                start: Pos { line: 2, col: 3 },
                end: Pos { line: 2, col: 10 },
            },
            "unknown key `retires`",
            "did you mean `retries`?",
        );
        let text = render(&d.into_sorted(), "health:\n  retires: 3\n", false);
        assert_eq!(
            text,
            "error[unknown-key]: unknown key `retires`\n  --> c.yaml:2:3\n  |\n2 |   retires: 3\n  |   ^^^^^^^\n  = help: did you mean `retries`?\n\n"
        );
    }
}
