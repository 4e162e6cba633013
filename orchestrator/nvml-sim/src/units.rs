//! Byte sizes as people write them in the simulator's YAML files and on the
//! `nvml-simctl` command line (`24564MiB`, `1.5GiB`, `512M`, `10GB`, `4096`).
//!
//! Binary units (`KiB`, `MiB`, `GiB`, `TiB` and the one-letter `K`, `M`, `G`,
//! `T` in either case) are powers of 1024, as `nvidia-smi` and Docker use them;
//! `KB`, `MB`, `GB`, `TB` are powers of 1000. A bare number is bytes.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// One kibibyte.
pub const KIB: u64 = 1024;
/// One mebibyte: the unit NVML uses for MIG profile memory (`memorySizeMB`).
pub const MIB: u64 = 1024 * KIB;
/// One gibibyte.
pub const GIB: u64 = 1024 * MIB;

/// Parses a size such as `24564MiB`, `1.5GiB`, `8g` or `1000000` into bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    if number.is_empty() {
        return Err(format!(
            "`{text}` is not a size: expected a number such as 512MiB or 8GiB"
        ));
    }
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size: `{number}` is not a number"))?;
    let multiplier: f64 = match unit.trim() {
        "" | "B" | "b" => 1.0,
        "KiB" | "K" | "k" => KIB as f64,
        "MiB" | "M" | "m" => MIB as f64,
        "GiB" | "G" | "g" => GIB as f64,
        "TiB" | "T" | "t" => (GIB * 1024) as f64,
        "KB" | "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        other => {
            return Err(format!(
                "`{text}` has unknown unit `{other}`: use B, KiB, MiB, GiB, TiB (or K, M, G, T), KB, MB, GB, TB"
            ));
        }
    };
    let bytes = value * multiplier;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("`{text}` is out of range"));
    }
    Ok(bytes.round() as u64)
}

/// Formats bytes with the largest binary unit that keeps the number whole,
/// so a value read back through [`parse_size`] is exact.
pub fn format_size(bytes: u64) -> String {
    for (unit, size) in [("GiB", GIB), ("MiB", MIB), ("KiB", KIB)] {
        if bytes >= size && bytes % size == 0 {
            return format!("{}{unit}", bytes / size);
        }
    }
    format!("{bytes}B")
}

/// A byte count that deserializes from either an integer (bytes) or a size
/// string, and serializes as an integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_size(self.0))
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;

        impl Visitor<'_> for SizeVisitor {
            type Value = ByteSize;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte count or a size such as 512MiB or 24GiB")
            }

            fn visit_u64<E: de::Error>(self, value: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(value))
            }

            fn visit_i64<E: de::Error>(self, value: i64) -> Result<ByteSize, E> {
                u64::try_from(value)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }

            fn visit_f64<E: de::Error>(self, value: f64) -> Result<ByteSize, E> {
                if value.is_finite() && value >= 0.0 {
                    Ok(ByteSize(value.round() as u64))
                } else {
                    Err(E::custom("a size must be a finite, non-negative number"))
                }
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<ByteSize, E> {
                parse_size(value).map(ByteSize).map_err(E::custom)
            }
        }

        deserializer.deserialize_any(SizeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_units_people_write() {
        let cases = [
            ("4096", 4096),
            ("24564MiB", 24564 * MIB),
            ("1.5GiB", 3 * GIB / 2),
            ("512M", 512 * MIB),
            ("8g", 8 * GIB),
            ("10GB", 10_000_000_000),
            ("2 KiB", 2048),
            ("1T", 1024 * GIB),
        ];
        for (text, want) in cases {
            assert_eq!(parse_size(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn rejects_what_is_not_a_size() {
        for text in ["", "MiB", "12XB", "-5", "1.2.3G"] {
            assert!(parse_size(text).is_err(), "{text} should be rejected");
        }
    }

    #[test]
    fn formats_exactly_and_round_trips() {
        for bytes in [0, 1, 1023, 4864 * MIB, 40 * GIB, 1536 * KIB + 1] {
            assert_eq!(parse_size(&format_size(bytes)), Ok(bytes));
        }
        assert_eq!(format_size(24 * GIB), "24GiB");
        assert_eq!(format_size(4864 * MIB), "4864MiB");
    }
}
