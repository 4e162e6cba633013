//! Durations as operators write them in environment variables: `500ms`,
//! `2s`, `1m`, `1.5s`, `1m30s`, and a bare `0`.
//!
//! Parsing is exact integer arithmetic on nanoseconds, so `0.1s` is exactly
//! 100 ms rather than the nearest binary float.

use std::time::Duration;

/// A duration string could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Nothing but whitespace.
    #[error("empty duration: write a number with a unit, such as 500ms, 2s or 1m")]
    Empty,
    /// A number without a unit (other than `0`).
    #[error("{input:?} has no unit: write it as 500ms, 2s, 1m or 1h")]
    MissingUnit {
        /// The whole input.
        input: String,
    },
    /// A unit that is not `ms`, `s`, `m` or `h`.
    #[error("{input:?} has unknown unit {unit:?}: use ms, s, m or h (such as 500ms, 2s, 1m)")]
    UnknownUnit {
        /// The whole input.
        input: String,
        /// The unit found.
        unit: String,
    },
    /// Something where a number should be.
    #[error("{input:?} is not a duration: write a number with a unit, such as 500ms, 2s or 1m")]
    BadNumber {
        /// The whole input.
        input: String,
    },
    /// More than `u64::MAX` nanoseconds' worth of seconds.
    #[error("{input:?} is too long a duration")]
    TooLarge {
        /// The whole input.
        input: String,
    },
}

const NANOS_PER_SEC: u128 = 1_000_000_000;

fn unit_nanos(unit: &str) -> Option<u128> {
    match unit {
        "ms" => Some(1_000_000),
        "s" => Some(NANOS_PER_SEC),
        "m" => Some(60 * NANOS_PER_SEC),
        "h" => Some(3600 * NANOS_PER_SEC),
        _ => None,
    }
}

/// Parses a duration such as `500ms`, `2s`, `1m`, `1.5h` or `1m30s`.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let bad_number = || DurationError::BadNumber {
        input: input.to_owned(),
    };
    let too_large = || DurationError::TooLarge {
        input: input.to_owned(),
    };
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        if number.is_empty() {
            return Err(bad_number());
        }
        if unit.is_empty() {
            return Err(DurationError::MissingUnit {
                input: input.to_owned(),
            });
        }
        let per_unit = unit_nanos(unit).ok_or_else(|| DurationError::UnknownUnit {
            input: input.to_owned(),
            unit: unit.to_owned(),
        })?;
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
            return Err(bad_number());
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| too_large())?
        };
        let mut nanos = whole.checked_mul(per_unit).ok_or_else(too_large)?;
        // Digits past nanosecond precision cannot change the result of any
        // unit we accept by more than a nanosecond; ignore them.
        let digits = &fraction[..fraction.len().min(18)];
        if !digits.is_empty() {
            let numerator: u128 = digits.parse().map_err(|_| bad_number())?;
            let denominator = 10u128.pow(u32::try_from(digits.len()).map_err(|_| bad_number())?);
            nanos = nanos
                .checked_add(numerator * per_unit / denominator)
                .ok_or_else(too_large)?;
        }
        total = total.checked_add(nanos).ok_or_else(too_large)?;
        rest = after;
    }
    let secs = u64::try_from(total / NANOS_PER_SEC).map_err(|_| too_large())?;
    let sub = u32::try_from(total % NANOS_PER_SEC).map_err(|_| too_large())?;
    Ok(Duration::new(secs, sub))
}

/// Formats a duration the way [`parse_duration`] reads it (`1.5s`, `20ms`),
/// for log lines that echo a setting back.
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0".to_owned();
    }
    let nanos = d.as_nanos();
    if nanos % NANOS_PER_SEC == 0 {
        let secs = nanos / NANOS_PER_SEC;
        if secs % 3600 == 0 {
            format!("{}h", secs / 3600)
        } else if secs % 60 == 0 {
            format!("{}m", secs / 60)
        } else {
            format!("{secs}s")
        }
    } else if nanos < NANOS_PER_SEC && nanos % 1_000_000 == 0 {
        format!("{}ms", nanos / 1_000_000)
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_forms() {
        let table: &[(&str, Duration)] = &[
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("500ms", Duration::from_millis(500)),
            ("2s", Duration::from_secs(2)),
            ("1m", Duration::from_secs(60)),
            ("1h", Duration::from_secs(3600)),
            (" 2s ", Duration::from_secs(2)),
            ("1.5s", Duration::from_millis(1500)),
            ("0.1s", Duration::from_millis(100)),
            (".5s", Duration::from_millis(500)),
            ("1.s", Duration::from_secs(1)),
            ("1m30s", Duration::from_secs(90)),
            ("1h2m3s4ms", Duration::from_millis(3_723_004)),
            ("0.0000000001s", Duration::ZERO),
            ("1.5ms", Duration::from_micros(1500)),
        ];
        for (input, want) in table {
            assert_eq!(parse_duration(input), Ok(*want), "{input:?}");
        }
    }

    #[test]
    fn rejected_forms() {
        let table: &[(&str, DurationError)] = &[
            ("", DurationError::Empty),
            ("   ", DurationError::Empty),
            ("5", DurationError::MissingUnit { input: "5".into() }),
            (
                "5x",
                DurationError::UnknownUnit {
                    input: "5x".into(),
                    unit: "x".into(),
                },
            ),
            (
                "5sec",
                DurationError::UnknownUnit {
                    input: "5sec".into(),
                    unit: "sec".into(),
                },
            ),
            (
                "1 s",
                DurationError::UnknownUnit {
                    input: "1 s".into(),
                    unit: " s".into(),
                },
            ),
            (
                "-1s",
                DurationError::BadNumber {
                    input: "-1s".into(),
                },
            ),
            ("s", DurationError::BadNumber { input: "s".into() }),
            (".s", DurationError::BadNumber { input: ".s".into() }),
            (
                "1.2.3s",
                DurationError::BadNumber {
                    input: "1.2.3s".into(),
                },
            ),
            (
                "99999999999999999999999h",
                DurationError::TooLarge {
                    input: "99999999999999999999999h".into(),
                },
            ),
        ];
        for (input, want) in table {
            assert_eq!(parse_duration(input).as_ref(), Err(want), "{input:?}");
        }
    }

    #[test]
    fn errors_show_examples() {
        let err = parse_duration("10 minutes").unwrap_err();
        assert!(err.to_string().contains("500ms"), "{err}");
    }

    #[test]
    fn format_round_trips() {
        for input in ["0", "20ms", "2s", "1m", "1h", "1.5s", "90s"] {
            let d = parse_duration(input).unwrap();
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{input}");
        }
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
    }
}
