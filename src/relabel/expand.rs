//! Go's `Regexp.Expand` templates (`replacement`, and `target_label` for
//! `replace`) and `Regexp.ReplaceAllString` (for `labelmap`), ported from
//! Go 1.19's `regexp.go`.
//!
//! A template is parsed once, at config load, against its rule's groups:
//! `$1` and `${1}` are group 1, `${name}` and `$name` the first group so
//! named that took part in the match, `$$` is `$`. A name is the longest
//! run of letters, digits and `_`, so `$1x` is the group *named* `1x`
//! (nothing unless the regex has one) and `${1}x` is group 1 then `x`; a
//! number with a leading zero (`$01`) is a name too. A `$` not followed by
//! a name (`$-`, `${`, `${x`) is literal. Groups that did not take part
//! expand to nothing.

use std::sync::OnceLock;

use regex::CaptureLocations;

use super::re2::Regexp;

/// One part of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    /// Text of the template, by byte range.
    Text(usize, usize),
    /// The first of these groups that took part in the match.
    Groups(Vec<usize>),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    text: String,
    pieces: Vec<Piece>,
}

/// Go's `unicode.IsLetter(c) || unicode.IsDigit(c) || c == '_'`.
fn is_name_char(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphanumeric() || c == '_';
    }
    static CLASS: OnceLock<Option<regex::Regex>> = OnceLock::new();
    let class = CLASS.get_or_init(|| regex::Regex::new(r"\A[\p{L}\p{Nd}]\z").ok());
    let mut buf = [0u8; 4];
    class
        .as_ref()
        .is_some_and(|re| re.is_match(c.encode_utf8(&mut buf)))
}

/// Go's `extract`: the name after a `$` (`name` or `{name}`), whether it
/// is a number, and the bytes it takes.
fn extract(s: &str) -> Option<(&str, Option<usize>, usize)> {
    let brace = s.starts_with('{');
    let body = if brace { &s[1..] } else { s };
    let len: usize = body
        .chars()
        .take_while(|&c| is_name_char(c))
        .map(char::len_utf8)
        .sum();
    if len == 0 {
        return None;
    }
    let name = &body[..len];
    let mut used = len + usize::from(brace);
    if brace {
        if !body[len..].starts_with('}') {
            return None;
        }
        used += 1;
    }
    let mut num: Option<usize> = Some(0);
    for b in name.bytes() {
        num = match num {
            Some(n) if b.is_ascii_digit() && n < 100_000_000 => {
                Some(n * 10 + usize::from(b - b'0'))
            }
            _ => None,
        };
    }
    // Leading zeros make it a name.
    if name.len() > 1 && name.starts_with('0') {
        num = None;
    }
    Some((name, num, used))
}

impl Template {
    /// Parses `text` for the groups of `regex`.
    pub fn new(text: &str, regex: &Regexp) -> Template {
        let names = regex.names();
        let mut pieces = Vec::new();
        let mut at = 0;
        while let Some(i) = text[at..].find('$') {
            let dollar = at + i;
            if dollar > at {
                pieces.push(Piece::Text(at, dollar));
            }
            let rest = &text[dollar + 1..];
            if rest.starts_with('$') {
                pieces.push(Piece::Text(dollar, dollar + 1));
                at = dollar + 2;
                continue;
            }
            let Some((name, num, used)) = extract(rest) else {
                // Malformed: the `$` is text.
                pieces.push(Piece::Text(dollar, dollar + 1));
                at = dollar + 1;
                continue;
            };
            let groups: Vec<usize> = match num {
                Some(n) if n < names.len() => vec![n],
                Some(_) => Vec::new(),
                None => (0..names.len())
                    .filter(|&i| names[i].as_deref() == Some(name))
                    .collect(),
            };
            if !groups.is_empty() {
                pieces.push(Piece::Groups(groups));
            }
            at = dollar + 1 + used;
        }
        if at < text.len() {
            pieces.push(Piece::Text(at, text.len()));
        }
        // Adjacent text pieces as one.
        let mut merged: Vec<Piece> = Vec::with_capacity(pieces.len());
        for piece in pieces {
            match (merged.last_mut(), &piece) {
                (Some(Piece::Text(_, end)), Piece::Text(start, e)) if *end == *start => *end = *e,
                _ => merged.push(piece),
            }
        }
        Template {
            text: text.to_string(),
            pieces: merged,
        }
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The expansion if it does not depend on the match (no group).
    pub fn constant(&self) -> Option<&str> {
        match self.pieces.as_slice() {
            [] => Some(""),
            [Piece::Text(a, b)] => Some(&self.text[*a..*b]),
            _ => None,
        }
    }

    /// Appends the expansion for the match in `locs` of `src` to `out`.
    pub fn expand(&self, src: &str, locs: &CaptureLocations, out: &mut String) {
        for piece in &self.pieces {
            match piece {
                Piece::Text(a, b) => out.push_str(&self.text[*a..*b]),
                Piece::Groups(groups) => {
                    if let Some((a, b)) = groups.iter().find_map(|&g| locs.get(g)) {
                        out.push_str(&src[a..b]);
                    }
                }
            }
        }
    }
}

/// Go's `re.ReplaceAllString(src, template)`, appended to `out`; `locs`
/// are `re`'s.
pub fn replace_all(
    re: &Regexp,
    src: &str,
    template: &Template,
    locs: &mut CaptureLocations,
    out: &mut String,
) {
    let mut last_match_end = 0;
    let mut search = 0;
    while search <= src.len() {
        let Some(m) = re.regex().captures_read_at(locs, src, search) else {
            break;
        };
        out.push_str(&src[last_match_end..m.start()]);
        // Not for an empty match right after another match.
        if m.end() > last_match_end || m.start() == 0 {
            template.expand(src, locs, out);
        }
        last_match_end = m.end();
        // Advance past this match, always by at least one character.
        let width = src[search..].chars().next().map_or(0, char::len_utf8);
        search = if search + width > m.end() {
            search + width
        } else if search + 1 > m.end() {
            search + 1
        } else {
            m.end()
        };
    }
    out.push_str(&src[last_match_end..]);
}
