//! Human units used in configuration: durations (`500ms`, `1m30s`), byte
//! sizes (`2g`, `512m`) and percentages (`25%`, `99.9%`).
//!
//! Parsing is strict: a bare number is refused for every unit, because a
//! bare `30` in a config is the commonest source of "seconds or
//! milliseconds?" bugs. Sizes follow Docker's convention: `k`, `m`, `g`, `t`
//! (with or without `b`, `i`, `ib`) are powers of 1024.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a unit string could not be read; the message says how to write it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("`{0}` is not a duration; write a number with a unit, e.g. `500ms`, `5s`, `1m30s`")]
    Duration(String),
    #[error("`{0}` has no unit; write e.g. `{0}s` or `{0}ms`")]
    DurationNoUnit(String),
    #[error("`{0}` is not a size; write a number with a unit, e.g. `512m`, `2g`")]
    Size(String),
    #[error("`{0}` has no unit; write e.g. `{0}m` or `{0}g` (powers of 1024)")]
    SizeNoUnit(String),
    #[error("`{0}` is not a percentage; write e.g. `25%` or `99.9%`")]
    Percent(String),
    #[error("`{0}` is out of range; a percentage is between 0% and 100%")]
    PercentRange(String),
    #[error("`{0}` is too large")]
    Overflow(String),
}

/// A non-negative duration with millisecond-or-finer precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(std::time::Duration);

impl Duration {
    pub const ZERO: Duration = Duration(std::time::Duration::ZERO);

    pub const fn from_millis(ms: u64) -> Self {
        Duration(std::time::Duration::from_millis(ms))
    }

    pub const fn from_secs(s: u64) -> Self {
        Duration(std::time::Duration::from_secs(s))
    }

    pub const fn std(self) -> std::time::Duration {
        self.0
    }

    pub fn as_millis(self) -> u128 {
        self.0.as_millis()
    }

    pub fn as_nanos(self) -> u128 {
        self.0.as_nanos()
    }

    /// Parses `500ms`, `5s`, `1.5s`, `1m30s`, `2h`, `30d`; also `0`.
    pub fn parse(text: &str) -> Result<Self, UnitError> {
        let s = text.trim();
        if s == "0" {
            return Ok(Duration::ZERO);
        }
        if s.is_empty() {
            return Err(UnitError::Duration(text.to_string()));
        }
        if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Err(UnitError::DurationNoUnit(s.to_string()));
        }
        let mut total: f64 = 0.0;
        let mut rest = s;
        while !rest.is_empty() {
            let num_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(|| UnitError::Duration(text.to_string()))?;
            if num_len == 0 {
                return Err(UnitError::Duration(text.to_string()));
            }
            let value: f64 = rest[..num_len]
                .parse()
                .map_err(|_| UnitError::Duration(text.to_string()))?;
            rest = &rest[num_len..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let nanos_per = match &rest[..unit_len] {
                "ns" => 1.0,
                "us" | "µs" => 1e3,
                "ms" => 1e6,
                "s" => 1e9,
                "m" => 60e9,
                "h" => 3600e9,
                "d" => 86400e9,
                _ => return Err(UnitError::Duration(text.to_string())),
            };
            rest = &rest[unit_len..];
            total += value * nanos_per;
        }
        if !total.is_finite() || total > u64::MAX as f64 {
            return Err(UnitError::Overflow(text.to_string()));
        }
        Ok(Duration(std::time::Duration::from_nanos(
            total.round() as u64
        )))
    }
}

impl From<std::time::Duration> for Duration {
    fn from(d: std::time::Duration) -> Self {
        Duration(d)
    }
}

impl fmt::Display for Duration {
    /// The shortest exact form: `500ms`, `2s`, `1m30s`, `30d`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut nanos = self.0.as_nanos();
        if nanos == 0 {
            return f.write_str("0s");
        }
        const UNITS: [(&str, u128); 7] = [
            ("d", 86_400_000_000_000),
            ("h", 3_600_000_000_000),
            ("m", 60_000_000_000),
            ("s", 1_000_000_000),
            ("ms", 1_000_000),
            ("us", 1_000),
            ("ns", 1),
        ];
        for (name, per) in UNITS {
            if nanos >= per {
                let n = nanos / per;
                nanos %= per;
                write!(f, "{n}{name}")?;
            }
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Duration::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A size in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const KIB: u64 = 1024;
    pub const MIB: u64 = 1024 * 1024;
    pub const GIB: u64 = 1024 * 1024 * 1024;

    pub const fn mib(n: u64) -> Self {
        ByteSize(n * Self::MIB)
    }

    pub const fn gib(n: u64) -> Self {
        ByteSize(n * Self::GIB)
    }

    pub const fn bytes(self) -> u64 {
        self.0
    }

    pub const fn as_mib(self) -> u64 {
        self.0 / Self::MIB
    }

    /// Parses `512m`, `2g`, `1.5g`, `2GiB`, `100k`, `1024b`; also `0`.
    pub fn parse(text: &str) -> Result<Self, UnitError> {
        let s = text.trim();
        if s == "0" {
            return Ok(ByteSize(0));
        }
        if s.is_empty() {
            return Err(UnitError::Size(text.to_string()));
        }
        if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Err(UnitError::SizeNoUnit(s.to_string()));
        }
        let num_len = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        if num_len == 0 {
            return Err(UnitError::Size(text.to_string()));
        }
        let value: f64 = s[..num_len]
            .parse()
            .map_err(|_| UnitError::Size(text.to_string()))?;
        let unit = s[num_len..].trim().to_ascii_lowercase();
        let mult = match unit.as_str() {
            "b" => 1u64,
            "k" | "kb" | "ki" | "kib" => Self::KIB,
            "m" | "mb" | "mi" | "mib" => Self::MIB,
            "g" | "gb" | "gi" | "gib" => Self::GIB,
            "t" | "tb" | "ti" | "tib" => Self::GIB * 1024,
            _ => return Err(UnitError::Size(text.to_string())),
        };
        let bytes = value * mult as f64;
        if !bytes.is_finite() || bytes > u64::MAX as f64 {
            return Err(UnitError::Overflow(text.to_string()));
        }
        Ok(ByteSize(bytes.round() as u64))
    }
}

impl fmt::Display for ByteSize {
    /// The largest unit that states the size exactly: `2g`, `1536m`, `100b`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        for (name, per) in [
            ("t", Self::GIB * 1024),
            ("g", Self::GIB),
            ("m", Self::MIB),
            ("k", Self::KIB),
        ] {
            if b >= per && b % per == 0 {
                return write!(f, "{}{name}", b / per);
            }
        }
        if b == 0 {
            f.write_str("0")
        } else {
            write!(f, "{b}b")
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ByteSize::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A percentage between 0 and 100, kept in hundredths of a percent so that
/// `99.95%` is exact and the type can be compared and hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Percent(u32);

impl Percent {
    pub const HUNDRED: Percent = Percent(10_000);

    /// From whole percent (clamped to 100).
    pub const fn whole(p: u32) -> Self {
        Percent(if p > 100 { 10_000 } else { p * 100 })
    }

    pub const fn from_basis_points(bp: u32) -> Self {
        Percent(if bp > 10_000 { 10_000 } else { bp })
    }

    /// Hundredths of a percent (`25%` is 2500).
    pub const fn basis_points(self) -> u32 {
        self.0
    }

    pub fn as_f64(self) -> f64 {
        f64::from(self.0) / 100.0
    }

    /// As a fraction between 0 and 1.
    pub fn fraction(self) -> f64 {
        f64::from(self.0) / 10_000.0
    }

    /// Whole percent, rounded up (MPS takes an integer percentage; rounding
    /// up never gives a client less than it asked for).
    pub fn ceil_whole(self) -> u32 {
        self.0.div_ceil(100)
    }

    pub fn parse(text: &str) -> Result<Self, UnitError> {
        let s = text.trim();
        let Some(num) = s.strip_suffix('%') else {
            return Err(UnitError::Percent(text.to_string()));
        };
        let num = num.trim();
        if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Err(UnitError::Percent(text.to_string()));
        }
        let value: f64 = num
            .parse()
            .map_err(|_| UnitError::Percent(text.to_string()))?;
        if !(0.0..=100.0).contains(&value) {
            return Err(UnitError::PercentRange(text.to_string()));
        }
        Ok(Percent((value * 100.0).round() as u32))
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / 100;
        let frac = self.0 % 100;
        if frac == 0 {
            write!(f, "{whole}%")
        } else if frac % 10 == 0 {
            write!(f, "{whole}.{}%", frac / 10)
        } else {
            write!(f, "{whole}.{frac:02}%")
        }
    }
}

impl Serialize for Percent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Percent::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print_back() {
        let cases = [
            ("500ms", 500_000_000u128, "500ms"),
            ("5s", 5_000_000_000, "5s"),
            ("1.5s", 1_500_000_000, "1s500ms"),
            ("1m30s", 90_000_000_000, "1m30s"),
            ("2h", 7_200_000_000_000, "2h"),
            ("30d", 2_592_000_000_000_000, "30d"),
            ("0", 0, "0s"),
            ("250us", 250_000, "250us"),
        ];
        for (text, nanos, shown) in cases {
            let d = Duration::parse(text).unwrap();
            assert_eq!(d.as_nanos(), nanos, "{text}");
            assert_eq!(d.to_string(), shown, "{text}");
            assert_eq!(Duration::parse(shown).unwrap(), d);
        }
    }

    #[test]
    fn durations_refuse_bad_input() {
        assert_eq!(
            Duration::parse("30"),
            Err(UnitError::DurationNoUnit("30".into()))
        );
        for bad in ["", "s", "5x", "ms5", "5 s", "-1s", "1..2s"] {
            assert!(Duration::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn sizes_are_binary_like_docker() {
        assert_eq!(ByteSize::parse("2g").unwrap().bytes(), 2 << 30);
        assert_eq!(ByteSize::parse("2GiB").unwrap().bytes(), 2 << 30);
        assert_eq!(ByteSize::parse("512m").unwrap().bytes(), 512 << 20);
        assert_eq!(ByteSize::parse("1.5g").unwrap().bytes(), 3 << 29);
        assert_eq!(ByteSize::parse("100b").unwrap().bytes(), 100);
        assert_eq!(ByteSize::parse("1.5g").unwrap().to_string(), "1536m");
        assert_eq!(ByteSize::gib(24).to_string(), "24g");
        assert_eq!(
            ByteSize::parse("2048"),
            Err(UnitError::SizeNoUnit("2048".into()))
        );
        assert!(ByteSize::parse("2q").is_err());
        assert!(ByteSize::parse("g").is_err());
    }

    #[test]
    fn percents_keep_two_decimals() {
        assert_eq!(Percent::parse("25%").unwrap().basis_points(), 2500);
        assert_eq!(Percent::parse("99.9%").unwrap().to_string(), "99.9%");
        assert_eq!(Percent::parse("99.95%").unwrap().to_string(), "99.95%");
        assert_eq!(Percent::parse("0.2%").unwrap().to_string(), "0.2%");
        assert_eq!(Percent::parse("12.5%").unwrap().ceil_whole(), 13);
        assert_eq!(
            Percent::parse("101%"),
            Err(UnitError::PercentRange("101%".into()))
        );
        assert!(Percent::parse("25").is_err());
        assert!(Percent::parse("%").is_err());
        assert!(Percent::parse("-5%").is_err());
    }
}
