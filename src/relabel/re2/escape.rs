//! Go's parser's helpers for escapes, classes and counted repeats
//! (`parseEscape`, `parseUnicodeClass`, `parsePerlClassEscape`,
//! `parseClassChar`, `parseRepeat`, `parseInt`).

use super::ast::ClassItem;
use super::error::{
    err, Error, INVALID_CHAR_RANGE, INVALID_ESCAPE, MAX_RUNE, MISSING_BRACKET, TRAILING_BACKSLASH,
};
use super::names;

/// `parseRepeat` on `{...`: `None` if it is not a repeat (then `{` is a
/// literal); else (min, max, rest) as Go has them: max -1 for `{n,}`,
/// min -1 for a number too big.
pub(super) fn parse_repeat(s: &str) -> Option<(i64, i64, &str)> {
    let s = s.strip_prefix('{')?;
    let (mut min, s) = parse_int(s)?;
    let (max, s) = match s.strip_prefix(',') {
        None => (min, s),
        Some(s) if s.starts_with('}') => (-1, s),
        Some(s) => {
            let (max, s) = parse_int(s)?;
            if max < 0 {
                min = -1;
            }
            (max, s)
        }
    };
    let rest = s.strip_prefix('}')?;
    Some((min, max, rest))
}

/// `parseInt`: decimal digits without a leading zero; -1 past Go's
/// overflow guard (1e8).
pub(super) fn parse_int(s: &str) -> Option<(i64, &str)> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || (digits >= 2 && s.starts_with('0')) {
        return None;
    }
    let mut n: i64 = 0;
    for b in s[..digits].bytes() {
        if n >= 100_000_000 {
            n = -1;
            break;
        }
        n = n * 10 + i64::from(b - b'0');
    }
    Some((n, &s[digits..]))
}

/// `parseUnicodeClass`: `\p`/`\P` (committed: an unknown name is an
/// error); `None` if `s` is not one.
pub(super) fn parse_unicode_class(s: &str) -> Result<Option<(ClassItem, &str)>, Error> {
    let mut negated = match s.as_bytes() {
        [b'\\', b'p', ..] => false,
        [b'\\', b'P', ..] => true,
        _ => return Ok(None),
    };
    let t = &s[2..];
    let (seq, mut name, rest) = match t.chars().next() {
        Some('{') => {
            let Some(end) = s.find('}') else {
                return Err(err(INVALID_CHAR_RANGE, s));
            };
            (&s[..=end], &s[3..end], &s[end + 1..])
        }
        Some(c) => {
            let len = 2 + c.len_utf8();
            (&s[..len], &s[2..len], &s[len..])
        }
        None => (s, "", ""),
    };
    if let Some(n) = name.strip_prefix('^') {
        negated = !negated;
        name = n;
    }
    match names::unicode_name(name) {
        Some(name) => Ok(Some((ClassItem::Unicode { name, negated }, rest))),
        None => Err(err(INVALID_CHAR_RANGE, seq)),
    }
}

/// `parsePerlClassEscape`: `\d \D \s \S \w \W`.
pub(super) fn parse_perl_class(s: &str) -> Option<(ClassItem, &str)> {
    let b = s.as_bytes();
    if b.len() < 2 || b[0] != b'\\' {
        return None;
    }
    let (ranges, negated) = names::perl_group(b[1])?;
    Some((ClassItem::Group { ranges, negated }, &s[2..]))
}

/// `parseClassChar`: one character of a class, escapes allowed.
pub(super) fn parse_class_char<'t>(s: &'t str, whole_class: &str) -> Result<(u32, &'t str), Error> {
    match s.chars().next() {
        None => Err(err(MISSING_BRACKET, whole_class)),
        Some('\\') => parse_escape(s),
        Some(c) => Ok((c as u32, &s[c.len_utf8()..])),
    }
}

/// `parseEscape`: `s` starts with a backslash.
pub(super) fn parse_escape(s: &str) -> Result<(u32, &str), Error> {
    let mut t = &s[1..];
    let Some(c) = t.chars().next() else {
        return Err(err(TRAILING_BACKSLASH, ""));
    };
    t = &t[c.len_utf8()..];
    let invalid = |t: &str| err(INVALID_ESCAPE, &s[..s.len() - t.len()]);
    let octal = |t: &str| {
        t.as_bytes()
            .first()
            .is_some_and(|b| (b'0'..=b'7').contains(b))
    };
    match c {
        c if c.is_ascii() && !c.is_ascii_alphanumeric() => Ok((c as u32, t)),
        // A single non-zero digit would be a backreference: not supported.
        '1'..='7' if !octal(t) => Err(invalid(t)),
        '0'..='7' => {
            let mut r = c as u32 - '0' as u32;
            for _ in 1..3 {
                if !octal(t) {
                    break;
                }
                r = r * 8 + u32::from(t.as_bytes()[0] - b'0');
                t = &t[1..];
            }
            Ok((r, t))
        }
        'x' => {
            let Some(c) = t.chars().next() else {
                return Err(invalid(t));
            };
            t = &t[c.len_utf8()..];
            if c == '{' {
                let mut r: u32 = 0;
                let mut digits = 0;
                loop {
                    let Some(c) = t.chars().next() else {
                        return Err(invalid(t));
                    };
                    t = &t[c.len_utf8()..];
                    if c == '}' {
                        break;
                    }
                    let Some(v) = c.to_digit(16) else {
                        return Err(invalid(t));
                    };
                    r = r * 16 + v;
                    if r > MAX_RUNE {
                        return Err(invalid(t));
                    }
                    digits += 1;
                }
                return match digits {
                    0 => Err(invalid(t)),
                    _ => Ok((r, t)),
                };
            }
            let x = c.to_digit(16);
            let d = t.chars().next();
            if let Some(d) = d {
                t = &t[d.len_utf8()..];
            }
            match (x, d.and_then(|d| d.to_digit(16))) {
                (Some(x), Some(y)) => Ok((x * 16 + y, t)),
                _ => Err(invalid(t)),
            }
        }
        'a' => Ok((7, t)),
        'f' => Ok((12, t)),
        'n' => Ok((10, t)),
        'r' => Ok((13, t)),
        't' => Ok((9, t)),
        'v' => Ok((11, t)),
        _ => Err(invalid(t)),
    }
}
