//! How results are shown: aligned tables and colour for people, JSON (or
//! YAML) for scripts.

use std::io::{IsTerminal, Write as _};

use clap::ValueEnum;

use crate::exit::{self, Exit};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

/// Output settings shared by every verb.
#[derive(Debug, Clone, Copy)]
pub struct Out {
    pub format: Format,
    pub color: bool,
    pub color_stderr: bool,
}

impl Out {
    pub fn new(format: Format, choice: ColorChoice) -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let decide = |tty: bool| match choice {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => tty && !no_color,
        };
        Out {
            format,
            color: decide(std::io::stdout().is_terminal()),
            color_stderr: decide(std::io::stderr().is_terminal()),
        }
    }

    pub fn bold(&self, s: &str) -> String {
        paint(self.color, "1", s)
    }

    pub fn green(&self, s: &str) -> String {
        paint(self.color, "32", s)
    }

    pub fn red(&self, s: &str) -> String {
        paint(self.color, "31", s)
    }

    pub fn yellow(&self, s: &str) -> String {
        paint(self.color, "33", s)
    }

    pub fn dim(&self, s: &str) -> String {
        paint(self.color, "2", s)
    }
}

fn paint(on: bool, code: &str, s: &str) -> String {
    if on {
        format!("\x1b[{code}m{s}\x1b[0m")
    } else {
        s.to_string()
    }
}

/// Visible width of a cell, ignoring ANSI colour sequences.
fn width(s: &str) -> usize {
    let mut w = 0;
    let mut in_escape = false;
    for c in s.chars() {
        match (in_escape, c) {
            (false, '\x1b') => in_escape = true,
            (true, 'm') => in_escape = false,
            (true, _) => {}
            (false, _) => w += 1,
        }
    }
    w
}

/// A left-aligned table with a header row; the last column is not padded.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(header: I) -> Self {
        Table {
            header: header.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row<I: IntoIterator<Item = S>, S: Into<String>>(&mut self, cells: I) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    pub fn render(&self, out: &Out) -> String {
        let cols = self.header.len();
        let mut widths = vec![0usize; cols];
        for row in std::iter::once(&self.header).chain(&self.rows) {
            for (i, cell) in row.iter().enumerate().take(cols) {
                widths[i] = widths[i].max(width(cell));
            }
        }
        let mut s = String::new();
        let line = |row: &[String], bold: bool, s: &mut String| {
            for (i, cell) in row.iter().enumerate().take(cols) {
                let text = if bold { out.bold(cell) } else { cell.clone() };
                s.push_str(&text);
                if i + 1 < cols {
                    s.push_str(&" ".repeat(widths[i] - width(cell) + 2));
                }
            }
            s.push('\n');
        };
        line(&self.header, true, &mut s);
        for row in &self.rows {
            line(row, false, &mut s);
        }
        s
    }
}

/// Prints a serialisable value as JSON or YAML (for `-o json|yaml`).
pub fn print_data<T: serde::Serialize>(format: Format, value: &T) -> anyhow::Result<()> {
    let text = match format {
        Format::Yaml => serde_yaml::to_string(value)?,
        _ => serde_json::to_string_pretty(value)? + "\n",
    };
    write_out(text.as_bytes())
}

/// A YAML file's text (a config, a Compose file, Kubernetes manifests) in
/// the form asked for: as it is for tables and YAML; for JSON, its one
/// document as an object, or its documents as an array.
pub fn yaml_file_as(format: Format, yaml: &str) -> anyhow::Result<String> {
    if format != Format::Json {
        return Ok(yaml.to_string());
    }
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let v = <serde_json::Value as serde::Deserialize>::deserialize(doc)?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    let v = if docs.len() == 1 {
        docs.remove(0)
    } else {
        serde_json::Value::Array(docs)
    };
    Ok(serde_json::to_string_pretty(&v)? + "\n")
}

/// Writes to stdout now (a stream's reader sees each piece as it comes).
/// A reader that went away (`| head -1`) ends the command quietly with
/// exit 0: the error is an [`Exit`] with code 0 and no message.
pub fn write_out(bytes: &[u8]) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(Exit::code(exit::OK).into()),
        Err(e) => Err(e.into()),
    }
}

/// True for the panic `print!` raises when stdout's reader went away:
/// the verbs that print with `print!` end as quietly as [`write_out`].
pub fn is_closed_pipe_panic(message: &str) -> bool {
    message.contains("failed printing to stdout") && message.contains("Broken pipe")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_ignore_colour_codes() {
        let out = Out {
            format: Format::Table,
            color: false,
            color_stderr: false,
        };
        let mut t = Table::new(["GROUP", "STATE", "AGENTS"]);
        t.row(["infra_core", "\x1b[32mrunning\x1b[0m", "2/2"]);
        t.row(["vision_gpu", "stopped", "0/1"]);
        assert_eq!(
            t.render(&out),
            "GROUP       STATE    AGENTS\ninfra_core  \x1b[32mrunning\x1b[0m  2/2\nvision_gpu  stopped  0/1\n"
        );
    }
}
