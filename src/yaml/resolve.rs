//! yaml.v2's `resolve` (YAML 1.1 scalars: `yes`/`on` are booleans, `0x1F`
//! and `0o17` integers) and its `!!binary` decoding, ported from
//! gopkg.in/yaml.v2 resolve.go and decode.go.

use base64::Engine;

use super::tree::Scalar;

const PREFIX: &str = "tag:yaml.org,2002:";

/// What a scalar resolves to.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Resolved<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    /// Text (also timestamps, which yaml.v2 hands to strings as written).
    Str(&'a str),
    /// `!!binary`, decoded.
    Binary(Vec<u8>),
}

/// Resolves a scalar as yaml.v2's `decoder.scalar` does before storing it.
pub(crate) fn resolve(s: &Scalar) -> Result<Resolved<'_>, String> {
    let tag = match &s.tag {
        None if !s.plain => return Ok(Resolved::Str(&s.value)),
        None => "",
        Some(tag) => tag.strip_prefix(PREFIX).unwrap_or(tag.as_str()),
    };
    let long = |t: &str| {
        s.tag
            .as_deref()
            .is_some_and(|full| full == format!("{PREFIX}{t}"))
    };
    if tag == "binary" && long("binary") {
        return go_base64(&s.value)
            .map(Resolved::Binary)
            .ok_or_else(|| "!!binary value contains invalid base64 data".to_string());
    }
    let resolvable = tag.is_empty()
        || ["str", "bool", "int", "float", "null", "timestamp"]
            .iter()
            .any(|t| tag == *t && long(t));
    if !resolvable {
        return Ok(Resolved::Str(&s.value));
    }
    if tag == "str" {
        return Ok(Resolved::Str(&s.value));
    }
    let found = by_content(&s.value, tag == "timestamp" || tag.is_empty());
    let found_tag = match &found {
        Resolved::Null => "null",
        Resolved::Bool(_) => "bool",
        Resolved::Int(_) | Resolved::Uint(_) => "int",
        Resolved::Float(_) => "float",
        Resolved::Str(_) | Resolved::Binary(_) => "str",
    };
    if tag.is_empty() || tag == found_tag || (tag == "timestamp" && is_timestamp(&s.value)) {
        return Ok(found);
    }
    if tag == "float" {
        if let Resolved::Int(i) = found {
            return Ok(Resolved::Float(i as f64));
        }
    }
    Err(format!(
        "cannot decode !!{found_tag} `{}` as a !!{tag}",
        s.value
    ))
}

/// Whether a plain scalar's text is yaml.v2's null.
pub(crate) fn is_null_text(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

/// yaml.v2's resolution by content (the plain-scalar path).
fn by_content(text: &str, timestamps: bool) -> Resolved<'_> {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Resolved::Null,
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return Resolved::Bool(true)
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return Resolved::Bool(false)
        }
        ".nan" | ".NaN" | ".NAN" => return Resolved::Float(f64::NAN),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Resolved::Float(f64::INFINITY)
        }
        "-.inf" | "-.Inf" | "-.INF" => return Resolved::Float(f64::NEG_INFINITY),
        _ => {}
    }
    match text.as_bytes()[0] {
        b'.' => {
            if let Some(f) = go_parse_float(text) {
                return Resolved::Float(f);
            }
        }
        b'+' | b'-' | b'0'..=b'9' => {
            if timestamps && is_timestamp(text) {
                return Resolved::Str(text);
            }
            let plain = text.replace('_', "");
            if let Some(i) = go_parse_int(&plain) {
                return i;
            }
            if is_yaml_float(&plain) {
                if let Some(f) = go_parse_float(&plain) {
                    return Resolved::Float(f);
                }
            }
            if let Some(bits) = plain.strip_prefix("0b") {
                if let Some(i) = parse_radix(bits, 2, false) {
                    return i;
                }
            } else if let Some(bits) = plain.strip_prefix("-0b") {
                if let Some(i) = parse_radix(bits, 2, true) {
                    return i;
                }
            }
        }
        _ => {}
    }
    Resolved::Str(text)
}

/// Go's `strconv.ParseInt(s, 0, 64)`, then `ParseUint(s, 0, 64)`
/// (underscores already removed): sign, then `0x`, `0o`, `0b` or a bare
/// leading `0` (octal) prefix.
fn go_parse_int(s: &str) -> Option<Resolved<'static>> {
    let (negative, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = body.to_ascii_lowercase();
    let (radix, digits) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..])
    } else {
        (10, lower.as_str())
    };
    parse_radix(digits, radix, negative)
}

fn parse_radix(digits: &str, radix: u32, negative: bool) -> Option<Resolved<'static>> {
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u64::from_str_radix(digits, radix).ok()?;
    if negative {
        if magnitude <= i64::MAX as u64 + 1 {
            return Some(Resolved::Int((magnitude as i64).wrapping_neg()));
        }
        return None;
    }
    Some(match i64::try_from(magnitude) {
        Ok(i) => Resolved::Int(i),
        Err(_) => Resolved::Uint(magnitude),
    })
}

/// yaml.v2's `yamlStyleFloat`:
/// `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`.
fn is_yaml_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'-' | b'+')));
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    } else {
        if digits(&mut i) == 0 {
            return false;
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            digits(&mut i);
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'-' | b'+')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// Go's `strconv.ParseFloat(s, 64)` for the inputs yaml.v2 hands it
/// (Rust's parser takes the same decimal forms plus `inf`/`nan` words,
/// which the `.`-led and regex-checked inputs never are).
fn go_parse_float(s: &str) -> Option<f64> {
    if s.bytes()
        .any(|b| b.is_ascii_alphabetic() && !matches!(b, b'e' | b'E'))
    {
        return None;
    }
    s.parse().ok()
}

/// yaml.v2's `parseTimestamp`: `YYYY-` then one of Go's layouts; only
/// the shape matters here (a timestamp reaches a string field as written).
fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 5 || !b[..4].iter().all(u8::is_ascii_digit) || b[4] != b'-' {
        return false;
    }
    let num = |s: &str, min: usize, max: usize| {
        (min..=max).contains(&s.len()) && s.bytes().all(|c| c.is_ascii_digit())
    };
    let (date, time) = match s.find(['T', 't', ' ']) {
        Some(i) => (&s[..i], Some((&s[i..i + 1], &s[i + 1..]))),
        None => (s, None),
    };
    let parts: Vec<&str> = date.split('-').collect();
    let date_ok = parts.len() == 3
        && num(parts[0], 4, 4)
        && num(parts[1], 1, 2)
        && num(parts[2], 1, 2)
        && (1..=12).contains(&parts[1].parse::<u32>().unwrap_or(0))
        && (1..=31).contains(&parts[2].parse::<u32>().unwrap_or(0));
    let Some((sep, time)) = time else {
        return date_ok;
    };
    // "T"/"t" layouts need a zone (Z or ±hh:mm); " " has none.
    let (clock, zone_ok) = if sep == " " {
        (time, true)
    } else if let Some(c) = time.strip_suffix('Z') {
        (c, true)
    } else {
        match time.rfind(['+', '-']) {
            Some(i) => {
                let z = &time[i + 1..];
                (
                    &time[..i],
                    z.len() == 5
                        && z.as_bytes()[2] == b':'
                        && num(&z[..2], 2, 2)
                        && num(&z[3..], 2, 2),
                )
            }
            None => (time, false),
        }
    };
    let (hms, frac) = match clock.split_once('.') {
        Some((h, f)) => (h, Some(f)),
        None => (clock, None),
    };
    let t: Vec<&str> = hms.split(':').collect();
    date_ok
        && zone_ok
        && t.len() == 3
        && t.iter().all(|p| num(p, 1, 2))
        && frac.is_none_or(|f| num(f, 1, 9))
}

/// Go's `base64.StdEncoding.DecodeString`: padding required, `\r` and
/// `\n` skipped anywhere, non-zero trailing bits accepted.
fn go_base64(text: &str) -> Option<Vec<u8>> {
    let cleaned: String = text.chars().filter(|c| !matches!(c, '\r' | '\n')).collect();
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireCanonical),
    );
    engine.decode(cleaned).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(v: &str) -> Resolved<'_> {
        by_content(v, true)
    }

    fn scalar(value: &str, tag: Option<&str>, plain: bool) -> Scalar {
        Scalar {
            value: value.into(),
            tag: tag.map(|t| format!("{PREFIX}{t}")),
            plain,
        }
    }

    #[test]
    fn yaml_1_1_scalars_as_yaml_v2_resolves_them() {
        for t in ["yes", "Yes", "on", "ON", "y", "true", "True"] {
            assert_eq!(plain(t), Resolved::Bool(true), "{t}");
        }
        for f in ["no", "off", "n", "N", "FALSE"] {
            assert_eq!(plain(f), Resolved::Bool(false), "{f}");
        }
        for n in ["", "~", "null", "Null", "NULL"] {
            assert_eq!(plain(n), Resolved::Null, "{n:?}");
        }
        assert_eq!(plain("nULL"), Resolved::Str("nULL"));
        assert_eq!(plain("0x1F"), Resolved::Int(31));
        assert_eq!(plain("0o17"), Resolved::Int(15));
        assert_eq!(plain("017"), Resolved::Int(15));
        assert_eq!(plain("0b101"), Resolved::Int(5));
        assert_eq!(plain("-0b101"), Resolved::Int(-5));
        assert_eq!(plain("1_000"), Resolved::Int(1000));
        assert_eq!(plain("018"), Resolved::Float(18.0));
        assert_eq!(plain("18446744073709551615"), Resolved::Uint(u64::MAX));
        assert_eq!(plain("1e3"), Resolved::Float(1000.0));
        assert_eq!(plain(".5"), Resolved::Float(0.5));
        assert_eq!(plain("+.inf"), Resolved::Float(f64::INFINITY));
        assert_eq!(plain("2001-12-14"), Resolved::Str("2001-12-14"));
        assert_eq!(plain("127.0.0.1:9100"), Resolved::Str("127.0.0.1:9100"));
        assert_eq!(plain("1.2.3"), Resolved::Str("1.2.3"));
        assert_eq!(plain("0x"), Resolved::Str("0x"));
        assert_eq!(plain("-"), Resolved::Str("-"));
    }

    #[test]
    fn quoted_and_tagged_scalars() {
        assert_eq!(
            resolve(&scalar("yes", None, false)),
            Ok(Resolved::Str("yes"))
        );
        assert_eq!(
            resolve(&scalar("5", Some("int"), false)),
            Ok(Resolved::Int(5))
        );
        assert_eq!(
            resolve(&scalar("5", Some("float"), false)),
            Ok(Resolved::Float(5.0))
        );
        assert_eq!(
            resolve(&scalar("yes", Some("str"), false)),
            Ok(Resolved::Str("yes"))
        );
        assert_eq!(
            resolve(&scalar("x", Some("int"), false)),
            Err("cannot decode !!str `x` as a !!int".into())
        );
        let mut custom = scalar("yes", None, false);
        custom.tag = Some("!foo".into());
        assert_eq!(resolve(&custom), Ok(Resolved::Str("yes")));
    }

    #[test]
    fn binary_decodes_as_go_base64_does() {
        let bin = |v: &str| match resolve(&scalar(v, Some("binary"), false)) {
            Ok(Resolved::Binary(b)) => Ok(Resolved::Binary(b)),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e),
        };
        assert_eq!(bin("aGVsbG8="), Ok(Resolved::Binary(b"hello".to_vec())));
        assert_eq!(bin("aGVs\nbG8=\n"), Ok(Resolved::Binary(b"hello".to_vec())));
        // Trailing bits are ignored by Go's StdEncoding (not Strict).
        assert_eq!(bin("aGVsbG9="), Ok(Resolved::Binary(b"hello".to_vec())));
        for bad in ["aGVsbG8", "aGVs bG8=", "a===", "!!!!"] {
            assert_eq!(
                bin(bad),
                Err("!!binary value contains invalid base64 data".into()),
                "{bad}"
            );
        }
        assert_eq!(bin(""), Ok(Resolved::Binary(vec![])));
    }
}
