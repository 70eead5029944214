//! Sizes as Prometheus writes them (`64MiB`, `512KB`, `1GB`): a whole
//! number and a unit, every unit a power of 1024 as in Prometheus's
//! `units.Base2Bytes`.

use std::fmt;

use serde::{Deserialize, Deserializer};

use crate::yaml;

/// A number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses `64MiB`, `64MB`, `1024`, `1.5GB` is refused (whole numbers).
    pub fn parse(text: &str) -> Result<ByteSize, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let n: u64 = number
            .parse()
            .map_err(|_| format!("{text:?} is not a size such as 64MiB"))?;
        let shift = match unit {
            "" | "B" => 0,
            "KB" | "KiB" => 10,
            "MB" | "MiB" => 20,
            "GB" | "GiB" => 30,
            "TB" | "TiB" => 40,
            _ => {
                return Err(format!(
                    "{text:?}: unknown unit {unit:?} (B, KB, MB, GB, TB; or KiB, MiB, ...)"
                ))
            }
        };
        n.checked_mul(1u64 << shift)
            .map(ByteSize)
            .ok_or_else(|| format!("{text:?} is too large"))
    }

    /// As a `usize` (saturating).
    pub fn bytes(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} bytes", self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        yaml::parse_str(d, ByteSize::parse)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_sizes() {
        assert_eq!(ByteSize::parse("64MiB"), Ok(ByteSize(64 << 20)));
        assert_eq!(ByteSize::parse("64MB"), Ok(ByteSize(64 << 20)));
        assert_eq!(ByteSize::parse("512"), Ok(ByteSize(512)));
        assert_eq!(ByteSize::parse("1KB"), Ok(ByteSize(1024)));
        assert!(ByteSize::parse("1.5GB").is_err());
        assert!(ByteSize::parse("5XB").unwrap_err().contains("unknown unit"));
        assert!(ByteSize::parse("99999999999TB")
            .unwrap_err()
            .contains("too large"));
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    const UNITS: [(&str, u32); 10] = [
        ("B", 0),
        ("KB", 10),
        ("KiB", 10),
        ("MB", 20),
        ("MiB", 20),
        ("GB", 30),
        ("GiB", 30),
        ("TB", 40),
        ("TiB", 40),
        ("", 0),
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// `N<unit>` is N times the unit, or "too large" past `u64`.
        #[test]
        fn a_number_and_unit_parse_to_their_product(
            n in prop_oneof![0u64..100_000, any::<u64>()],
            unit in 0usize..UNITS.len(),
            space in prop_oneof![Just(""), Just(" "), Just("\t")],
        ) {
            let (name, shift) = UNITS[unit];
            let parsed = ByteSize::parse(&format!("{space}{n}{name}{space}"));
            match n.checked_mul(1u64 << shift) {
                Some(bytes) => prop_assert_eq!(parsed, Ok(ByteSize(bytes))),
                None => prop_assert!(parsed.unwrap_err().contains("too large")),
            }
        }
    }
}
