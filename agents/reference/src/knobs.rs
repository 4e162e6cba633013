//! The failure-injection knobs: `AGENT_*` environment variables that make
//! the reference agent slow, flaky, unhealthy or crashing on purpose, read
//! and checked in one place before anything starts.
//!
//! Unknown `AGENT_*` names are rejected like bad values: a misspelt knob
//! silently ignored would make a test pass for the wrong reason.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use agent_sdk::{format_duration, parse_duration};
use anyhow::{Context, anyhow, bail};

pub const START_DELAY: &str = "AGENT_START_DELAY";
pub const CRASH_AFTER: &str = "AGENT_CRASH_AFTER";
pub const EXIT_CODE: &str = "AGENT_EXIT_CODE";
pub const UNHEALTHY_AFTER: &str = "AGENT_UNHEALTHY_AFTER";
pub const FAIL_IF_EXISTS: &str = "AGENT_FAIL_IF_EXISTS";
pub const UNHEALTHY_IF_EXISTS: &str = "AGENT_UNHEALTHY_IF_EXISTS";
pub const WORK_LATENCY: &str = "AGENT_WORK_LATENCY";
pub const WORK_JITTER: &str = "AGENT_WORK_JITTER";
pub const WORK_ERROR_RATE: &str = "AGENT_WORK_ERROR_RATE";
pub const WORK_CPU: &str = "AGENT_WORK_CPU";

/// The most CPU time one `/work` request may be told to burn.
pub const MAX_WORK_CPU: Duration = Duration::from_secs(10);

/// Every `AGENT_*` variable the agent reads, the SDK's listen host included.
pub const KNOWN: [&str; 11] = [
    START_DELAY,
    CRASH_AFTER,
    EXIT_CODE,
    UNHEALTHY_AFTER,
    FAIL_IF_EXISTS,
    UNHEALTHY_IF_EXISTS,
    WORK_LATENCY,
    WORK_JITTER,
    WORK_ERROR_RATE,
    WORK_CPU,
    agent_sdk::env::AGENT_LISTEN_HOST,
];

/// How `/work` behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WorkKnobs {
    /// Mean time one request takes.
    pub latency: Duration,
    /// Each request takes `latency` ± up to this much, uniformly.
    pub jitter: Duration,
    /// Share of requests that fail with 500, from 0.0 to 1.0.
    pub error_rate: f64,
    /// CPU time each request burns (on a blocking thread) before its
    /// latency, at most [`MAX_WORK_CPU`].
    pub cpu: Duration,
}

impl Default for WorkKnobs {
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(20),
            jitter: Duration::ZERO,
            error_rate: 0.0,
            cpu: Duration::ZERO,
        }
    }
}

/// All knobs, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Knobs {
    pub start_delay: Option<Duration>,
    pub crash_after: Option<Duration>,
    pub exit_code: u8,
    pub unhealthy_after: Option<Duration>,
    pub fail_if_exists: Option<PathBuf>,
    pub unhealthy_if_exists: Option<PathBuf>,
    pub work: WorkKnobs,
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            start_delay: None,
            crash_after: None,
            exit_code: 1,
            unhealthy_after: None,
            fail_if_exists: None,
            unhealthy_if_exists: None,
            work: WorkKnobs::default(),
        }
    }
}

impl Knobs {
    /// Reads the knobs from `vars` (every environment variable) through
    /// `lookup`; `vars` is only used to catch unknown `AGENT_*` names.
    pub fn from_env(
        vars: impl IntoIterator<Item = OsString>,
        lookup: impl Fn(&str) -> Option<OsString>,
    ) -> anyhow::Result<Self> {
        for name in vars {
            let name = name.to_string_lossy();
            if name.starts_with("AGENT_") && !KNOWN.contains(&name.as_ref()) {
                bail!("unknown knob {name}; the knobs are {}", KNOWN.join(", "));
            }
        }
        let text = |var: &str| -> anyhow::Result<Option<String>> {
            match lookup(var) {
                None => Ok(None),
                Some(raw) => {
                    let value = raw
                        .into_string()
                        .map_err(|_| anyhow!("{var} is not valid UTF-8"))?;
                    Ok((!value.is_empty()).then_some(value))
                }
            }
        };
        let duration = |var: &str| -> anyhow::Result<Option<Duration>> {
            text(var)?
                .map(|value| parse_duration(&value).with_context(|| format!("invalid {var}")))
                .transpose()
        };
        let path = |var: &str| lookup(var).filter(|v| !v.is_empty()).map(PathBuf::from);

        let mut knobs = Self {
            start_delay: duration(START_DELAY)?,
            crash_after: duration(CRASH_AFTER)?,
            unhealthy_after: duration(UNHEALTHY_AFTER)?,
            fail_if_exists: path(FAIL_IF_EXISTS),
            unhealthy_if_exists: path(UNHEALTHY_IF_EXISTS),
            ..Self::default()
        };
        if let Some(value) = text(EXIT_CODE)? {
            knobs.exit_code = value.trim().parse().map_err(|_| {
                anyhow!("invalid {EXIT_CODE}: {value:?} is not an exit code: expected an integer from 0 to 255")
            })?;
        }
        if let Some(latency) = duration(WORK_LATENCY)? {
            knobs.work.latency = latency;
        }
        if let Some(jitter) = duration(WORK_JITTER)? {
            knobs.work.jitter = jitter;
        }
        if let Some(cpu) = duration(WORK_CPU)? {
            if cpu > MAX_WORK_CPU {
                bail!(
                    "invalid {WORK_CPU}: {} is more CPU than one request may burn (at most {})",
                    format_duration(cpu),
                    format_duration(MAX_WORK_CPU)
                );
            }
            knobs.work.cpu = cpu;
        }
        if let Some(value) = text(WORK_ERROR_RATE)? {
            let rate: f64 = value.trim().parse().unwrap_or(f64::NAN);
            // NaN fails both comparisons, so it lands here too.
            if !(0.0..=1.0).contains(&rate) {
                bail!(
                    "invalid {WORK_ERROR_RATE}: {value:?} is not a rate: expected a number from 0.0 to 1.0, such as 0.05"
                );
            }
            knobs.work.error_rate = rate;
        }
        Ok(knobs)
    }

    /// The knobs that differ from their defaults, as `NAME=value` pairs,
    /// for the start-up log line.
    pub fn summary(&self) -> String {
        let defaults = Self::default();
        let mut out = String::new();
        let mut add = |name: &str, value: String| {
            let _ = write!(out, " {name}={value}");
        };
        let mut duration = |name: &str, value: Option<Duration>| {
            if let Some(d) = value {
                add(name, format_duration(d));
            }
        };
        duration(START_DELAY, self.start_delay);
        duration(CRASH_AFTER, self.crash_after);
        duration(UNHEALTHY_AFTER, self.unhealthy_after);
        if self.exit_code != defaults.exit_code {
            add(EXIT_CODE, self.exit_code.to_string());
        }
        if let Some(p) = &self.fail_if_exists {
            add(FAIL_IF_EXISTS, p.display().to_string());
        }
        if let Some(p) = &self.unhealthy_if_exists {
            add(UNHEALTHY_IF_EXISTS, p.display().to_string());
        }
        add(WORK_LATENCY, format_duration(self.work.latency));
        if self.work.jitter != defaults.work.jitter {
            add(WORK_JITTER, format_duration(self.work.jitter));
        }
        if self.work.cpu != defaults.work.cpu {
            add(WORK_CPU, format_duration(self.work.cpu));
        }
        if self.work.error_rate != defaults.work.error_rate {
            add(WORK_ERROR_RATE, self.work.error_rate.to_string());
        }
        out.trim_start().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(pairs: &[(&str, &str)]) -> anyhow::Result<Knobs> {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(*v)))
            .collect();
        let names: Vec<OsString> = map.keys().map(OsString::from).collect();
        Knobs::from_env(names, move |name| map.get(name).cloned())
    }

    #[test]
    fn defaults() {
        let knobs = parse(&[("PATH", "/bin"), ("ORCH_AGENT", "x")]).unwrap();
        assert_eq!(knobs, Knobs::default());
        assert_eq!(knobs.exit_code, 1);
        assert_eq!(knobs.work.latency, Duration::from_millis(20));
        assert_eq!(knobs.summary(), "AGENT_WORK_LATENCY=20ms");
    }

    #[test]
    fn every_knob_is_read() {
        let knobs = parse(&[
            (START_DELAY, "2s"),
            (CRASH_AFTER, "1m"),
            (EXIT_CODE, "42"),
            (UNHEALTHY_AFTER, "500ms"),
            (FAIL_IF_EXISTS, "/data/fail"),
            (UNHEALTHY_IF_EXISTS, "/data/sick"),
            (WORK_LATENCY, "100ms"),
            (WORK_JITTER, "10ms"),
            (WORK_ERROR_RATE, "0.25"),
            (WORK_CPU, "50ms"),
            ("AGENT_LISTEN_HOST", "127.0.0.1"),
        ])
        .unwrap();
        assert_eq!(
            knobs,
            Knobs {
                start_delay: Some(Duration::from_secs(2)),
                crash_after: Some(Duration::from_secs(60)),
                exit_code: 42,
                unhealthy_after: Some(Duration::from_millis(500)),
                fail_if_exists: Some("/data/fail".into()),
                unhealthy_if_exists: Some("/data/sick".into()),
                work: WorkKnobs {
                    latency: Duration::from_millis(100),
                    jitter: Duration::from_millis(10),
                    error_rate: 0.25,
                    cpu: Duration::from_millis(50),
                },
            }
        );
        assert_eq!(
            knobs.summary(),
            "AGENT_START_DELAY=2s AGENT_CRASH_AFTER=1m AGENT_UNHEALTHY_AFTER=500ms \
             AGENT_EXIT_CODE=42 AGENT_FAIL_IF_EXISTS=/data/fail \
             AGENT_UNHEALTHY_IF_EXISTS=/data/sick AGENT_WORK_LATENCY=100ms \
             AGENT_WORK_JITTER=10ms AGENT_WORK_CPU=50ms AGENT_WORK_ERROR_RATE=0.25"
        );
    }

    #[test]
    fn empty_values_mean_unset() {
        let knobs = parse(&[(START_DELAY, ""), (FAIL_IF_EXISTS, ""), (EXIT_CODE, "")]).unwrap();
        assert_eq!(knobs, Knobs::default());
    }

    #[test]
    fn bad_values_name_the_knob() {
        let table = [
            (START_DELAY, "5"),
            (CRASH_AFTER, "soon"),
            (UNHEALTHY_AFTER, "-1s"),
            (WORK_LATENCY, "20 ms"),
            (WORK_JITTER, "1d"),
            (EXIT_CODE, "256"),
            (EXIT_CODE, "-1"),
            (EXIT_CODE, "one"),
            (WORK_CPU, "11s"),
            (WORK_CPU, "lots"),
            (WORK_ERROR_RATE, "1.5"),
            (WORK_ERROR_RATE, "-0.1"),
            (WORK_ERROR_RATE, "NaN"),
            (WORK_ERROR_RATE, "half"),
        ];
        for (name, value) in table {
            let err = format!("{:#}", parse(&[(name, value)]).unwrap_err());
            assert!(err.contains(name), "{name}={value}: {err}");
        }
    }

    #[test]
    fn unknown_knobs_are_rejected() {
        let err = parse(&[("AGENT_START_DELAYS", "1s")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown knob AGENT_START_DELAYS"), "{err}");
        assert!(err.contains(START_DELAY), "lists the real ones: {err}");
    }

    #[test]
    fn error_rate_bounds_are_inclusive() {
        assert_eq!(
            parse(&[(WORK_ERROR_RATE, "0")]).unwrap().work.error_rate,
            0.0
        );
        assert_eq!(
            parse(&[(WORK_ERROR_RATE, "1.0")]).unwrap().work.error_rate,
            1.0
        );
    }
}
