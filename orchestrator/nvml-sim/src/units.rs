//! Byte sizes as people write them in the simulator's YAML files and on the
//! `nvml-simctl` command line (`24564MiB`, `1.5GiB`, `512M`, `10GB`, `4096`).
//!
//! Every unit is a power of 1024 (`k`/`KiB`/`KB`, `m`/`MiB`/`MB`, `g`/`GiB`/`GB`,
//! `t`/`TiB`/`TB`, in any case), as `nvidia-smi` and Docker use them and as the
//! orchestrator's config reads them: one convention across the workspace. A
//! bare number is bytes.

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
/// Units are read by the orchestrator's own parser
/// (`orch_core::units::ByteSize`), so a size means the same in a simulator
/// file as in a host config; a bare number is bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return trimmed
            .parse()
            .map_err(|_| format!("`{text}` is out of range"));
    }
    orch_core::units::ByteSize::parse(trimmed)
        .map(orch_core::units::ByteSize::bytes)
        .map_err(|e| format!("`{text}` is not a size ({e}): write e.g. 512MiB or 8GiB"))
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
            // One convention with the host configs: GB is GiB.
            ("10GB", 10 * GIB),
            ("2 KiB", 2048),
            ("1T", 1024 * GIB),
        ];
        for (text, want) in cases {
            assert_eq!(parse_size(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn rejects_what_is_not_a_size() {
        for text in ["", "MiB", "12XB", "-5", "1.2.3G", "99999999999999999999"] {
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
