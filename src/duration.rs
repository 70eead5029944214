//! Prometheus's duration format (`model.ParseDuration`): `1h30m`, `5m`,
//! `90s`, `500ms`, units y w d h m s ms in that order, each at most once.

use std::fmt;
use std::time::Duration;

use serde::de::Deserializer;
use serde::Deserialize;

/// A duration written the way Prometheus writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PromDuration(pub Duration);

const UNITS: [(&str, u64); 7] = [
    ("y", 365 * 24 * 3600 * 1000),
    ("w", 7 * 24 * 3600 * 1000),
    ("d", 24 * 3600 * 1000),
    ("h", 3600 * 1000),
    ("m", 60 * 1000),
    ("s", 1000),
    ("ms", 1),
];

impl PromDuration {
    /// Parses `text`, rejecting anything Prometheus rejects.
    pub fn parse(text: &str) -> Result<Self, String> {
        let invalid = || format!("not a valid duration string: {text:?}");
        if text == "0" {
            return Ok(PromDuration(Duration::ZERO));
        }
        if text.is_empty() {
            return Err("empty duration string".to_string());
        }
        let mut rest = text;
        let mut next_unit = 0;
        let mut millis: u64 = 0;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(invalid());
            }
            let number: u64 = rest[..digits].parse().map_err(|_| invalid())?;
            rest = &rest[digits..];
            // "ms" must be tried before "m".
            let unit = UNITS[next_unit..]
                .iter()
                .enumerate()
                .filter(|(_, (u, _))| rest.starts_with(u))
                .max_by_key(|(_, (u, _))| u.len())
                .map(|(i, u)| (i + next_unit, *u));
            let Some((index, (name, factor))) = unit else {
                return Err(invalid());
            };
            rest = &rest[name.len()..];
            next_unit = index + 1;
            millis = number
                .checked_mul(factor)
                .and_then(|m| millis.checked_add(m))
                .ok_or_else(|| format!("duration out of range: {text:?}"))?;
        }
        Ok(PromDuration(Duration::from_millis(millis)))
    }
}

impl fmt::Display for PromDuration {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let mut ms = self.0.as_millis() as u64;
        if ms == 0 {
            return f.write_str("0s");
        }
        for (name, factor) in UNITS {
            if ms >= factor {
                write!(f, "{}{name}", ms / factor)?;
                ms %= factor;
            }
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for PromDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::yaml::parse_str(d, PromDuration::parse)
    }
}

/// A duration that must be above zero, refused where it is written
/// (`refresh_interval: 0s` would poll without pause).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Positive(pub PromDuration);

impl<'de> Deserialize<'de> for Positive {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::yaml::parse_str(d, |s| match PromDuration::parse(s)? {
            PromDuration(Duration::ZERO) => Err("must be greater than 0".to_string()),
            d => Ok(Positive(d)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prometheus_durations() {
        let ms = |s: &str| PromDuration::parse(s).map(|d| d.0.as_millis());
        assert_eq!(ms("5m"), Ok(300_000));
        assert_eq!(ms("1h30m"), Ok(5_400_000));
        assert_eq!(ms("1m500ms"), Ok(60_500));
        assert_eq!(ms("0"), Ok(0));
        assert_eq!(ms("2d"), Ok(172_800_000));
        for bad in ["", "5", "m", "1m1h", "1.5s", "5mm", "-1s", "1s1s"] {
            assert!(ms(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn displays_like_prometheus() {
        assert_eq!(PromDuration::parse("90s").unwrap().to_string(), "1m30s");
        assert_eq!(PromDuration::parse("0").unwrap().to_string(), "0s");
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// What sdbridge prints (status page, logs) parses back to itself.
        #[test]
        fn display_parses_back(ms in prop_oneof![0u64..10_000_000, any::<u64>()]) {
            let d = PromDuration(Duration::from_millis(ms));
            prop_assert_eq!(PromDuration::parse(&d.to_string()), Ok(d));
        }

        /// Units in Prometheus's order, each at most once, sum up; the
        /// canonical form of the sum parses to the same sum.
        #[test]
        fn unit_lists_sum_and_print_canonically(
            parts in proptest::collection::vec(proptest::option::of(0u64..1000), UNITS.len()),
        ) {
            let mut text = String::new();
            let mut millis = 0u64;
            for ((name, factor), n) in UNITS.iter().zip(&parts) {
                if let Some(n) = n {
                    text.push_str(&format!("{n}{name}"));
                    millis += n * factor;
                }
            }
            prop_assume!(!text.is_empty());
            let parsed = PromDuration::parse(&text);
            prop_assert_eq!(parsed.clone(), Ok(PromDuration(Duration::from_millis(millis))));
            let canonical = parsed.unwrap_or(PromDuration(Duration::ZERO)).to_string();
            prop_assert_eq!(PromDuration::parse(&canonical).map(|d| d.0.as_millis() as u64), Ok(millis));
        }
    }
}
