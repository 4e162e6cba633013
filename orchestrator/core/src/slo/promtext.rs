//! A bounded parser for the Prometheus text exposition format 0.0.4, as
//! much of it as reading an agent's counters and histograms needs.
//!
//! What it reads: `# TYPE name kind` lines (kept per family), `# HELP` and
//! other comments (skipped), and sample lines
//! `name{label="value",...} value [timestamp]` with the format's escapes in
//! label values (`\\`, `\"`, `\n`), `+Inf` / `-Inf` / `NaN` values, an
//! optional trailing comma in the label set, blanks and tabs between tokens,
//! and `\r\n` line ends. What it refuses, with a [`ParseError`] naming the
//! line: input longer than [`Limits::max_bytes`], a line longer than
//! [`Limits::max_line_bytes`], more samples than [`Limits::max_samples`],
//! more labels on a sample than [`Limits::max_labels`], bytes that are not
//! UTF-8, and anything the grammar does not allow. It never panics on any
//! input, and what it allocates is bounded by the input's length.

use std::collections::BTreeMap;

/// The bounds a scrape must stay within.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_bytes: usize,
    pub max_line_bytes: usize,
    pub max_samples: usize,
    pub max_labels: usize,
}

impl Default for Limits {
    /// Generous for an agent (the reference agent writes about 3 KiB and 30
    /// samples) and small beside the daemon's memory budget.
    fn default() -> Self {
        Limits {
            max_bytes: 1024 * 1024,
            max_line_bytes: 16 * 1024,
            max_samples: 10_000,
            max_labels: 32,
        }
    }
}

/// A family's declared type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    /// In the order written.
    pub labels: Vec<(String, String)>,
    pub value: f64,
    pub timestamp_ms: Option<i64>,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A parsed scrape.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Exposition {
    pub samples: Vec<Sample>,
    /// `# TYPE` declarations by family name.
    pub types: BTreeMap<String, MetricType>,
}

/// Why a scrape was refused. Lines count from 1; columns are byte offsets
/// from 1.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    #[error("the exposition is {len} bytes, over the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("line {line} is {len} bytes, over the limit of {max}")]
    LineTooLong { line: usize, len: usize, max: usize },
    #[error("more than {max} samples")]
    TooManySamples { max: usize },
    #[error("line {line}: more than {max} labels on one sample")]
    TooManyLabels { line: usize, max: usize },
    #[error("line {line} is not UTF-8")]
    NotUtf8 { line: usize },
    #[error("line {line}, column {column}: expected {expected}")]
    Syntax {
        line: usize,
        column: usize,
        expected: &'static str,
    },
    #[error("line {line}: `{text}` is not a sample value")]
    BadValue { line: usize, text: String },
    #[error("line {line}: `{text}` is not a timestamp in milliseconds")]
    BadTimestamp { line: usize, text: String },
    #[error("line {line}: `{text}` is not a metric type")]
    UnknownType { line: usize, text: String },
    #[error("line {line}: a second TYPE line for `{name}`")]
    DuplicateType { line: usize, name: String },
    #[error("line {line}: label `{label}` appears twice")]
    DuplicateLabel { line: usize, label: String },
}

/// Error texts quote at most this many characters of the input.
const QUOTE_MAX: usize = 40;

fn quote(text: &str) -> String {
    text.chars().take(QUOTE_MAX).collect()
}

/// Parses one scrape.
pub fn parse(input: &[u8], limits: &Limits) -> Result<Exposition, ParseError> {
    if input.len() > limits.max_bytes {
        return Err(ParseError::TooLarge {
            len: input.len(),
            max: limits.max_bytes,
        });
    }
    let mut out = Exposition::default();
    for (i, raw) in input.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        if raw.len() > limits.max_line_bytes {
            return Err(ParseError::LineTooLong {
                line,
                len: raw.len(),
                max: limits.max_line_bytes,
            });
        }
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let text = std::str::from_utf8(raw).map_err(|_| ParseError::NotUtf8 { line })?;
        let mut cursor = Cursor { text, pos: 0, line };
        cursor.blanks();
        if cursor.done() {
            continue;
        }
        if cursor.eat('#') {
            comment(&mut cursor, &mut out.types)?;
            continue;
        }
        if out.samples.len() == limits.max_samples {
            return Err(ParseError::TooManySamples {
                max: limits.max_samples,
            });
        }
        out.samples.push(sample(&mut cursor, limits)?);
    }
    Ok(out)
}

struct Cursor<'a> {
    text: &'a str,
    pos: usize,
    line: usize,
}

impl<'a> Cursor<'a> {
    fn rest(&self) -> &'a str {
        &self.text[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn done(&self) -> bool {
        self.pos >= self.text.len()
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    /// Skips blanks and tabs; true if there were any.
    fn blanks(&mut self) -> bool {
        let start = self.pos;
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.pos += 1;
        }
        self.pos > start
    }

    /// The run of characters up to the next blank or tab.
    fn token(&mut self) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(|c| c != ' ' && c != '\t') {
            self.pos += self.peek().map_or(1, char::len_utf8);
        }
        &self.text[start..self.pos]
    }

    fn syntax(&self, expected: &'static str) -> ParseError {
        ParseError::Syntax {
            line: self.line,
            column: self.pos + 1,
            expected,
        }
    }

    /// `[a-zA-Z_:][a-zA-Z0-9_:]*`, or without colons for label names.
    fn name(&mut self, colons: bool, what: &'static str) -> Result<&'a str, ParseError> {
        let start = self.pos;
        let ok = |c: char, first: bool| {
            c.is_ascii_alphabetic()
                || c == '_'
                || (colons && c == ':')
                || (!first && c.is_ascii_digit())
        };
        while let Some(c) = self.peek() {
            if !ok(c, self.pos == start) {
                break;
            }
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.syntax(what));
        }
        Ok(&self.text[start..self.pos])
    }
}

fn comment(c: &mut Cursor<'_>, types: &mut BTreeMap<String, MetricType>) -> Result<(), ParseError> {
    c.blanks();
    let keyword = c.token();
    if keyword != "TYPE" && keyword != "HELP" {
        return Ok(());
    }
    let is_type = keyword == "TYPE";
    if !c.blanks() {
        return Err(c.syntax("a metric name after the keyword"));
    }
    let name = c.name(true, "a metric name")?.to_owned();
    if !is_type {
        // The docstring is free text; only its name had to be well formed.
        if !c.done() && !c.blanks() {
            return Err(c.syntax("a blank after the metric name"));
        }
        return Ok(());
    }
    if !c.blanks() {
        return Err(c.syntax("a blank and a metric type"));
    }
    let text = c.token();
    let kind = match text {
        "counter" => MetricType::Counter,
        "gauge" => MetricType::Gauge,
        "histogram" => MetricType::Histogram,
        "summary" => MetricType::Summary,
        "untyped" => MetricType::Untyped,
        other => {
            return Err(ParseError::UnknownType {
                line: c.line,
                text: quote(other),
            });
        }
    };
    c.blanks();
    if !c.done() {
        return Err(c.syntax("the end of the line after the type"));
    }
    if types.contains_key(&name) {
        return Err(ParseError::DuplicateType { line: c.line, name });
    }
    types.insert(name, kind);
    Ok(())
}

fn sample(c: &mut Cursor<'_>, limits: &Limits) -> Result<Sample, ParseError> {
    let name = c.name(true, "a metric name")?.to_owned();
    c.blanks();
    let mut labels: Vec<(String, String)> = Vec::new();
    if c.eat('{') {
        loop {
            c.blanks();
            if c.eat('}') {
                break;
            }
            if labels.len() == limits.max_labels {
                return Err(ParseError::TooManyLabels {
                    line: c.line,
                    max: limits.max_labels,
                });
            }
            let label = c.name(false, "a label name or `}`")?.to_owned();
            c.blanks();
            if !c.eat('=') {
                return Err(c.syntax("`=` after the label name"));
            }
            c.blanks();
            let value = label_value(c)?;
            if labels.iter().any(|(n, _)| *n == label) {
                return Err(ParseError::DuplicateLabel {
                    line: c.line,
                    label,
                });
            }
            labels.push((label, value));
            c.blanks();
            if c.eat(',') {
                continue;
            }
            if c.eat('}') {
                break;
            }
            return Err(c.syntax("`,` or `}` after the label value"));
        }
        c.blanks();
    }
    if c.done() {
        return Err(c.syntax("a sample value"));
    }
    let text = c.token();
    let value = sample_value(text).ok_or_else(|| ParseError::BadValue {
        line: c.line,
        text: quote(text),
    })?;
    c.blanks();
    let mut timestamp_ms = None;
    if !c.done() {
        let text = c.token();
        let parsed = timestamp(text).ok_or_else(|| ParseError::BadTimestamp {
            line: c.line,
            text: quote(text),
        })?;
        timestamp_ms = Some(parsed);
        c.blanks();
        if !c.done() {
            return Err(c.syntax("the end of the line after the timestamp"));
        }
    }
    Ok(Sample {
        name,
        labels,
        value,
        timestamp_ms,
    })
}

fn label_value(c: &mut Cursor<'_>) -> Result<String, ParseError> {
    if !c.eat('"') {
        return Err(c.syntax("a quoted label value"));
    }
    let mut value = String::new();
    loop {
        let Some(ch) = c.peek() else {
            return Err(c.syntax("a closing `\"`"));
        };
        c.pos += ch.len_utf8();
        match ch {
            '"' => return Ok(value),
            '\\' => {
                let escaped = match c.peek() {
                    Some('\\') => '\\',
                    Some('"') => '"',
                    Some('n') => '\n',
                    _ => return Err(c.syntax("`\\\\`, `\\\"` or `\\n` after a backslash")),
                };
                c.pos += 1;
                value.push(escaped);
            }
            other => value.push(other),
        }
    }
}

/// A value as Go's `ParseFloat` reads it, which the format names as its
/// rule: decimals, exponents, and `Inf` / `Infinity` / `NaN` in any case with
/// an optional sign. Rust's float syntax takes the same set.
fn sample_value(text: &str) -> Option<f64> {
    text.parse().ok()
}

fn timestamp(text: &str) -> Option<i64> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(name: &str, labels: &[(&str, &str)], value: f64) -> Sample {
        Sample {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            value,
            timestamp_ms: None,
        }
    }

    fn check_ok(input: &str, want: &[Sample]) {
        let got = parse(input.as_bytes(), &Limits::default())
            .unwrap_or_else(|e| panic!("{input:?}: {e}"));
        assert_eq!(got.samples, want, "{input:?}");
    }

    fn check_err(input: &[u8], limits: Limits, want: ParseError) {
        assert_eq!(
            parse(input, &limits),
            Err(want),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }

    #[test]
    fn reads_the_reference_agent() {
        let text = "\
# HELP agent_requests_total Requests received, by endpoint.
# TYPE agent_requests_total counter
agent_requests_total{endpoint=\"/health\"} 12
agent_requests_total{endpoint=\"/work\"} 30
# HELP agent_errors_total Failed requests.
# TYPE agent_errors_total counter
agent_errors_total 2
# TYPE agent_work_duration_seconds histogram
agent_work_duration_seconds_bucket{le=\"0.5\"} 10
agent_work_duration_seconds_bucket{le=\"+Inf\"} 30
agent_work_duration_seconds_sum 41.5
agent_work_duration_seconds_count 30
";
        let got = parse(text.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(
            got.samples,
            vec![
                s("agent_requests_total", &[("endpoint", "/health")], 12.0),
                s("agent_requests_total", &[("endpoint", "/work")], 30.0),
                s("agent_errors_total", &[], 2.0),
                s("agent_work_duration_seconds_bucket", &[("le", "0.5")], 10.0),
                s(
                    "agent_work_duration_seconds_bucket",
                    &[("le", "+Inf")],
                    30.0
                ),
                s("agent_work_duration_seconds_sum", &[], 41.5),
                s("agent_work_duration_seconds_count", &[], 30.0),
            ]
        );
        assert_eq!(
            got.types.into_iter().collect::<Vec<_>>(),
            vec![
                ("agent_errors_total".to_string(), MetricType::Counter),
                ("agent_requests_total".to_string(), MetricType::Counter),
                (
                    "agent_work_duration_seconds".to_string(),
                    MetricType::Histogram
                ),
            ]
        );
    }

    #[test]
    fn reads_what_the_grammar_allows() {
        check_ok("a 1", &[s("a", &[], 1.0)]);
        check_ok("a{} 1", &[s("a", &[], 1.0)]);
        check_ok("a {x=\"1\",} 2\r\n", &[s("a", &[("x", "1")], 2.0)]);
        check_ok(
            "\t ns:a_b { x = \"1\" , y=\"\" }\t-2.5e3  ",
            &[s("ns:a_b", &[("x", "1"), ("y", "")], -2500.0)],
        );
        check_ok(
            "a{p=\"q\\\"\\\\\\n√\"} 1",
            &[s("a", &[("p", "q\"\\\n√")], 1.0)],
        );
        check_ok("a{p=\"}{ ,=\"} .5", &[s("a", &[("p", "}{ ,=")], 0.5)]);
        check_ok(
            "a +Inf\nb -Inf\nc Inf\nd -infinity",
            &[
                s("a", &[], f64::INFINITY),
                s("b", &[], f64::NEG_INFINITY),
                s("c", &[], f64::INFINITY),
                s("d", &[], f64::NEG_INFINITY),
            ],
        );
        check_ok(
            "\n\n# a comment\n#\n# HELP a free text { \" \\\na 0\n",
            &[s("a", &[], 0.0)],
        );
        let got = parse(b"a NaN 1700000000000\nb 1 -5", &Limits::default()).unwrap();
        assert!(got.samples[0].value.is_nan());
        assert_eq!(got.samples[0].timestamp_ms, Some(1_700_000_000_000));
        assert_eq!(got.samples[1].timestamp_ms, Some(-5));
    }

    #[test]
    fn refuses_with_a_typed_error() {
        let d = Limits::default();
        let syntax = |line, column, expected| ParseError::Syntax {
            line,
            column,
            expected,
        };
        let table: Vec<(&[u8], ParseError)> = vec![
            (b"{a=\"1\"} 1", syntax(1, 1, "a metric name")),
            (b"9a 1", syntax(1, 1, "a metric name")),
            (b"a", syntax(1, 2, "a sample value")),
            (b"a{x=\"1\"}", syntax(1, 9, "a sample value")),
            (b"a{x=1} 1", syntax(1, 5, "a quoted label value")),
            (b"a{x} 1", syntax(1, 4, "`=` after the label name")),
            (
                b"a{x=\"1\" y=\"2\"} 1",
                syntax(1, 9, "`,` or `}` after the label value"),
            ),
            (b"a{x=\"1", syntax(1, 7, "a closing `\"`")),
            (
                b"a{x=\"\\t\"} 1",
                syntax(1, 7, "`\\\\`, `\\\"` or `\\n` after a backslash"),
            ),
            (b"a{:x=\"1\"} 1", syntax(1, 3, "a label name or `}`")),
            (
                b"a 1 2 3",
                syntax(1, 7, "the end of the line after the timestamp"),
            ),
            (b"# TYPE", syntax(1, 7, "a metric name after the keyword")),
            (b"# TYPE a", syntax(1, 9, "a blank and a metric type")),
            (
                b"# TYPE a counter x",
                syntax(1, 18, "the end of the line after the type"),
            ),
            (
                b"# HELP a{ x",
                syntax(1, 9, "a blank after the metric name"),
            ),
            (
                b"ok 1\na one",
                ParseError::BadValue {
                    line: 2,
                    text: "one".into(),
                },
            ),
            (
                b"a 1_000",
                ParseError::BadValue {
                    line: 1,
                    text: "1_000".into(),
                },
            ),
            (
                b"a 1,5",
                ParseError::BadValue {
                    line: 1,
                    text: "1,5".into(),
                },
            ),
            (
                b"a 0x10",
                ParseError::BadValue {
                    line: 1,
                    text: "0x10".into(),
                },
            ),
            (
                b"a 1 1.5",
                ParseError::BadTimestamp {
                    line: 1,
                    text: "1.5".into(),
                },
            ),
            (
                b"a 1 99999999999999999999",
                ParseError::BadTimestamp {
                    line: 1,
                    text: "99999999999999999999".into(),
                },
            ),
            (
                b"# TYPE a timer",
                ParseError::UnknownType {
                    line: 1,
                    text: "timer".into(),
                },
            ),
            (
                b"# TYPE a gauge\n# TYPE a gauge",
                ParseError::DuplicateType {
                    line: 2,
                    name: "a".into(),
                },
            ),
            (
                b"a{x=\"1\",x=\"2\"} 1",
                ParseError::DuplicateLabel {
                    line: 1,
                    label: "x".into(),
                },
            ),
            (b"a 1\n\xff 1", ParseError::NotUtf8 { line: 2 }),
        ];
        for (input, want) in table {
            check_err(input, d, want);
        }
    }

    #[test]
    fn refuses_what_is_over_its_limits() {
        let small = Limits {
            max_bytes: 20,
            max_line_bytes: 8,
            max_samples: 2,
            max_labels: 2,
        };
        check_err(
            &[b'a'; 21],
            small,
            ParseError::TooLarge { len: 21, max: 20 },
        );
        check_err(
            b"a 1\nabcdefg 1",
            small,
            ParseError::LineTooLong {
                line: 2,
                len: 9,
                max: 8,
            },
        );
        check_err(
            b"a 1\nb 2\n#c\nc 3",
            small,
            ParseError::TooManySamples { max: 2 },
        );
        // The limit counts samples, not comments or blank lines.
        assert_eq!(
            parse(b"a 1\n\n#x\nb 2\n", &small).map(|e| e.samples.len()),
            Ok(2)
        );
        let labels = Limits {
            max_line_bytes: 100,
            max_bytes: 100,
            ..small
        };
        check_err(
            b"a{x=\"\",y=\"\",z=\"\"} 1",
            labels,
            ParseError::TooManyLabels { line: 1, max: 2 },
        );
        assert!(parse(b"a{x=\"\",y=\"\"} 1", &labels).is_ok());
        // Exactly at each limit is fine.
        assert!(
            parse(
                &[b'a'; 8],
                &Limits {
                    max_line_bytes: 8,
                    ..Limits::default()
                }
            )
            .is_err_and(|e| matches!(e, ParseError::Syntax { .. }))
        );
        assert!(
            parse(
                &[b'a'; 9],
                &Limits {
                    max_line_bytes: 8,
                    ..Limits::default()
                }
            )
            .is_err_and(|e| matches!(e, ParseError::LineTooLong { .. }))
        );
    }

    /// Writes samples the way a Prometheus client does.
    fn render(samples: &[Sample]) -> String {
        let mut out = String::new();
        for sample in samples {
            out.push_str(&sample.name);
            if !sample.labels.is_empty() {
                let labels: Vec<String> = sample
                    .labels
                    .iter()
                    .map(|(n, v)| {
                        let v = v
                            .replace('\\', "\\\\")
                            .replace('"', "\\\"")
                            .replace('\n', "\\n");
                        format!("{n}=\"{v}\"")
                    })
                    .collect();
                out.push('{');
                out.push_str(&labels.join(","));
                out.push('}');
            }
            out.push(' ');
            if sample.value.is_infinite() {
                out.push_str(if sample.value > 0.0 { "+Inf" } else { "-Inf" });
            } else {
                out.push_str(&sample.value.to_string());
            }
            if let Some(ts) = sample.timestamp_ms {
                out.push_str(&format!(" {ts}"));
            }
            out.push('\n');
        }
        out
    }

    fn arb_sample() -> impl Strategy<Value = Sample> {
        let value = prop_oneof![
            any::<f64>().prop_filter("NaN is never equal", |v| !v.is_nan()),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
        ];
        (
            "[a-zA-Z_:][a-zA-Z0-9_:]{0,12}",
            proptest::collection::btree_map("[a-zA-Z_][a-zA-Z0-9_]{0,8}", "(?s).{0,12}", 0..4),
            value,
            proptest::option::of(any::<i64>()),
        )
            .prop_map(|(name, labels, value, timestamp_ms)| Sample {
                name,
                labels: labels.into_iter().collect(),
                value,
                timestamp_ms,
            })
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(input in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&input, &Limits::default());
        }

        /// Bytes drawn from the format's own alphabet reach deeper into the
        /// grammar than uniform noise does.
        #[test]
        fn never_panics_on_near_misses(input in "[a-z_:{}=\",# \\\\\t\r\n0-9.eE+INfa-]{0,200}") {
            let small = Limits { max_bytes: 150, max_line_bytes: 40, max_samples: 5, max_labels: 3 };
            let _ = parse(input.as_bytes(), &small);
            let _ = parse(input.as_bytes(), &Limits::default());
        }

        #[test]
        fn reads_back_what_a_client_writes(samples in proptest::collection::vec(arb_sample(), 0..20)) {
            let text = render(&samples);
            let got = parse(text.as_bytes(), &Limits::default());
            prop_assert_eq!(got.map(|e| e.samples), Ok(samples));
        }
    }
}
