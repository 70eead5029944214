//! Value text that must come out the same from every database: numbers,
//! PostgreSQL's `numeric`, calendar dates and RFC 3339 timestamps, decoded
//! from the protocols' binary forms.

use std::fmt::Write;

/// Days from 1970-01-01 to PostgreSQL's epoch, 2000-01-01.
pub(super) const PG_EPOCH_DAYS: i64 = 10_957;

/// Howard Hinnant's `civil_from_days`: (year, month, day) of a day count
/// from 1970-01-01 in the proleptic Gregorian calendar.
pub(super) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `.ffffff` without trailing zeros, or nothing: Go's RFC3339Nano style.
pub(super) fn fraction(micros: u32) -> String {
    if micros == 0 {
        return String::new();
    }
    let digits = format!(".{micros:06}");
    digits.trim_end_matches('0').to_string()
}

/// A MySQL binary DATE/DATETIME/TIMESTAMP (`len, year u16, month, day,
/// [hour, minute, second, [micros u32]]`), the latter taken as UTC. A zero
/// date (`len` 0) or one with a zero month or day (which a permissive
/// `sql_mode` stores) names no day, so no instant: it is written as
/// MariaDB shows it, `0000-00-00` or `0000-00-00 00:00:00`.
pub(super) fn mysql_datetime(bytes: &[u8], date_only: bool) -> Option<String> {
    let (&len, rest) = bytes.split_first()?;
    let rest = rest.get(..usize::from(len))?;
    let field = |i: usize| rest.get(i).copied().unwrap_or(0);
    let year = u16::from_le_bytes([field(0), field(1)]);
    let date = format!("{year:04}-{:02}-{:02}", field(2), field(3));
    if date_only {
        return Some(date);
    }
    let micros = match rest.get(7..11) {
        Some(&[a, b, c, d]) => u32::from_le_bytes([a, b, c, d]),
        _ => 0,
    };
    let time = format!(
        "{:02}:{:02}:{:02}{}",
        field(4),
        field(5),
        field(6),
        fraction(micros)
    );
    if field(2) == 0 || field(3) == 0 {
        return Some(format!("{date} {time}"));
    }
    Some(format!("{date}T{time}Z"))
}

/// A little-endian integer of 1, 2, 4 or 8 bytes in decimal.
pub(super) fn le_integer(bytes: &[u8], unsigned: bool) -> Option<String> {
    if bytes.is_empty() || bytes.len() > 8 {
        return None;
    }
    let mut raw = [0u8; 8];
    raw[..bytes.len()].copy_from_slice(bytes);
    let value = u64::from_le_bytes(raw);
    if unsigned {
        return Some(value.to_string());
    }
    let shift = 64 - 8 * bytes.len() as u32;
    Some(((value << shift) as i64 >> shift).to_string())
}

pub(super) fn le_f64(bytes: &[u8]) -> Option<f64> {
    match *bytes {
        [a, b, c, d] => Some(f64::from(f32::from_le_bytes([a, b, c, d]))),
        [a, b, c, d, e, f, g, h] => Some(f64::from_le_bytes([a, b, c, d, e, f, g, h])),
        _ => None,
    }
}

/// ECMAScript's `Number::toString` of `v`: the shortest digits that read
/// back as the same `f64`, plain from 1e-6 up to 1e21 (`123.456`,
/// `0.000001`), exponent form outside (`1e+21`, `1e-7`,
/// `1.7976931348623157e+308`); `-0` is `0`. NaN and infinities as
/// Prometheus writes them.
pub(super) fn float64(v: f64) -> String {
    match v {
        v if v.is_nan() => "NaN".to_string(),
        f64::INFINITY => "+Inf".to_string(),
        f64::NEG_INFINITY => "-Inf".to_string(),
        v => ryu_js::Buffer::new().format_finite(v).to_string(),
    }
}

/// Like [`float64`] with the shortest digits for the `f32` (a `REAL`
/// `1.1` is `1.1`, as the servers print it, not its `f64` widening
/// `1.100000023841858`), in the same layout.
pub(super) fn float32(v: f32) -> String {
    match v {
        v if v.is_nan() => "NaN".to_string(),
        f32::INFINITY => "+Inf".to_string(),
        f32::NEG_INFINITY => "-Inf".to_string(),
        v => ryu_js::Buffer::new().format_finite(v).to_string(),
    }
}

/// PostgreSQL's binary `numeric` (`ndigits, weight, sign, dscale` then
/// base-10000 digits) as its text form, with `dscale` fraction digits as
/// the server prints it (`1.50` stays `1.50`).
pub(super) fn pg_numeric(bytes: &[u8]) -> Option<String> {
    let word = |i: usize| -> Option<i16> {
        let b = bytes.get(2 * i..2 * i + 2)?;
        Some(i16::from_be_bytes([b[0], b[1]]))
    };
    let ndigits = usize::try_from(word(0)?).ok()?;
    let weight = i64::from(word(1)?);
    let sign = word(2)? as u16;
    let dscale = word(3)? as u16 as usize;
    let digits: Vec<i16> = (0..ndigits).map(|i| word(4 + i)).collect::<Option<_>>()?;
    if bytes.len() != 8 + 2 * ndigits {
        return None;
    }
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Some("NaN".to_string()),
        0xD000 => return Some("Infinity".to_string()),
        0xF000 => return Some("-Infinity".to_string()),
        _ => return None,
    }
    let digit = |i: i64| -> i16 {
        usize::try_from(i)
            .ok()
            .and_then(|i| digits.get(i).copied())
            .unwrap_or(0)
    };
    let mut s = String::new();
    if sign == 0x4000 {
        s.push('-');
    }
    if weight < 0 {
        s.push('0');
    } else {
        for i in 0..=weight {
            let _ = if i == 0 {
                write!(s, "{}", digit(i))
            } else {
                write!(s, "{:04}", digit(i))
            };
        }
    }
    if dscale > 0 {
        let mut frac = String::with_capacity(dscale + 4);
        let mut i = weight + 1;
        while frac.len() < dscale {
            let _ = write!(frac, "{:04}", digit(i));
            i += 1;
        }
        frac.truncate(dscale);
        s.push('.');
        s.push_str(&frac);
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_dates_format_alike_everywhere() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(PG_EPOCH_DAYS), (2000, 1, 1));
        assert_eq!(civil_from_days(20_788), (2026, 12, 1));
        assert_eq!(civil_from_days(-719_528), (0, 1, 1));
        assert_eq!(fraction(500_000), ".5");
        assert_eq!(fraction(1), ".000001");
        assert_eq!(le_integer(&[0xff], false).unwrap(), "-1");
        assert_eq!(le_integer(&[0xff], true).unwrap(), "255");
        assert_eq!(le_integer(&[0, 0x80], false).unwrap(), "-32768");
        assert_eq!(
            mysql_datetime(
                &[11, 0xea, 0x07, 12, 2, 10, 0, 0, 0x20, 0xa1, 0x07, 0],
                false
            )
            .unwrap(),
            "2026-12-02T10:00:00.5Z"
        );
        assert_eq!(
            mysql_datetime(&[4, 0xea, 0x07, 12, 2], false).unwrap(),
            "2026-12-02T00:00:00Z"
        );
        assert_eq!(mysql_datetime(&[0], true).unwrap(), "0000-00-00");
        assert_eq!(mysql_datetime(&[0], false).unwrap(), "0000-00-00 00:00:00");
        assert_eq!(
            mysql_datetime(&[7, 0xea, 0x07, 0, 0, 10, 0, 0], false).unwrap(),
            "2026-00-00 10:00:00"
        );
    }

    /// ECMAScript's Number::toString, as `String(x)` prints them.
    const ES_FLOATS: [(f64, &str); 22] = [
        (1.0, "1"),
        (0.1, "0.1"),
        (123.456, "123.456"),
        (-0.0, "0"),
        (0.0, "0"),
        (-1.5, "-1.5"),
        (1e20, "100000000000000000000"),
        (123456789012345680000.0, "123456789012345680000"),
        (1e21, "1e+21"),
        (1.5e21, "1.5e+21"),
        (1e38, "1e+38"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
        (0.000001, "0.000001"),
        (0.0000015, "0.0000015"),
        (1e-7, "1e-7"),
        (-2.5e-7, "-2.5e-7"),
        (5e-324, "5e-324"),
        (2.2250738585072014e-308, "2.2250738585072014e-308"),
        (9007199254740993.0, "9007199254740992"),
        (0.30000000000000004, "0.30000000000000004"),
        (f64::MAX, "1.7976931348623157e+308"),
        (f64::MIN, "-1.7976931348623157e+308"),
    ];

    #[test]
    fn floats_are_ecmascript_number_to_string() {
        for (v, want) in ES_FLOATS {
            assert_eq!(float64(v), want, "{v:e}");
        }
        assert_eq!(float64(f64::NAN), "NaN");
        assert_eq!(float64(f64::INFINITY), "+Inf");
        assert_eq!(float64(f64::NEG_INFINITY), "-Inf");
        // f32: its own shortest digits, in the same layout.
        for (v, want) in [
            (1.1f32, "1.1"),
            (0.1, "0.1"),
            (-0.0, "0"),
            (1e38, "1e+38"),
            (f32::MAX, "3.4028235e+38"),
            (1e-7, "1e-7"),
            (16777216.0, "16777216"),
            (1e-45, "1e-45"),
        ] {
            assert_eq!(float32(v), want, "{v:e}");
        }
        assert_eq!(float32(f32::NAN), "NaN");
        assert_eq!(float32(f32::NEG_INFINITY), "-Inf");
    }

    proptest::proptest! {
        /// Every finite f64 reads back as itself, in ES's layout: an
        /// exponent exactly outside [1e-6, 1e21), shortest digits.
        #[test]
        fn f64_text_round_trips(bits in proptest::num::u64::ANY) {
            let v = f64::from_bits(bits);
            proptest::prop_assume!(v.is_finite());
            let text = float64(v);
            let back: f64 = text.parse().unwrap();
            proptest::prop_assert_eq!(back, v + 0.0, "{}", text);
            let magnitude = v.abs();
            let exponent = text.contains('e');
            proptest::prop_assert_eq!(exponent, magnitude != 0.0 && !(1e-6..1e21).contains(&magnitude), "{}", text);
            proptest::prop_assert!(!text.contains(".e") && !text.ends_with('.'), "{}", text);
            // Shortest: as many digits as Rust's `{:e}`, which gives the
            // shortest round-trip digits (a tie may round the other way).
            let digits = |s: &str| s.split(['e', 'E']).next().unwrap_or("").chars().filter(char::is_ascii_digit).collect::<String>().trim_start_matches('0').trim_end_matches('0').to_string();
            proptest::prop_assert_eq!(digits(&text).len(), digits(&format!("{v:e}")).len(), "{}", text);
        }

        #[test]
        fn f32_text_round_trips(bits in proptest::num::u32::ANY) {
            let v = f32::from_bits(bits);
            proptest::prop_assume!(v.is_finite());
            let text = float32(v);
            let back: f32 = text.parse().unwrap();
            proptest::prop_assert_eq!(back, v + 0.0, "{}", text);
            let magnitude = v.abs();
            let exponent = text.contains('e');
            proptest::prop_assert_eq!(exponent, magnitude != 0.0 && !(1e-6..1e21).contains(&magnitude), "{}", text);
            let digits = |s: &str| s.split(['e', 'E']).next().unwrap_or("").chars().filter(char::is_ascii_digit).collect::<String>().trim_start_matches('0').trim_end_matches('0').to_string();
            proptest::prop_assert_eq!(digits(&text).len(), digits(&format!("{v:e}")).len(), "{}", text);
        }
    }

    #[test]
    fn pg_numeric_text() {
        // ndigits, weight, sign, dscale, digits...
        let num = |w: &[i16]| w.iter().flat_map(|d| d.to_be_bytes()).collect::<Vec<u8>>();
        let n = |w: &[i16]| pg_numeric(&num(w)).unwrap();
        assert_eq!(n(&[2, 0, 0, 2, 1, 5000]), "1.50");
        assert_eq!(n(&[0, 0, 0, 0]), "0");
        assert_eq!(n(&[0, 0, 0, 2]), "0.00");
        assert_eq!(n(&[2, 1, 0x4000, 0, 12, 3456]), "-123456");
        assert_eq!(n(&[1, -2, 0, 8, 1234]), "0.00001234");
        assert_eq!(n(&[1, 2, 0, 0, 1]), "100000000");
        assert_eq!(n(&[0, 0, 0xC000u16 as i16, 0]), "NaN");
        assert!(pg_numeric(&num(&[3, 0, 0, 0, 1])).is_none());
    }
}
