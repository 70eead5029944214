//! A bound on flow nesting (`[[[[...`, `{a: {a: ...`), checked before the
//! YAML parser sees the text: the parser's scanner does work proportional
//! to the flow depth for every token, so 400 KB of `{a: ` took 141 s of CPU
//! (found while fuzzing, issue 10), and the 64 MiB a file may hold would
//! take hours. The deserializer refuses documents nested deeper than 128
//! levels anyway, and nothing sdbridge reads needs more than a handful, so
//! refusing deeper flow nesting up front changes no outcome, only its cost.
//!
//! The scan is approximate where that is safe: it skips comments, quoted
//! and plain scalars (as libyaml delimits them, but ending a plain scalar
//! at a line break in block context, where indentation would decide),
//! counts a `[` or `{` in block context only at the start of a token, and
//! stops where the first document ends (later ones are ignored, as
//! Prometheus ignores them). Brackets inside block scalars are counted;
//! a document would need more than [`MAX_DEPTH`] of them unclosed to be
//! refused.

/// Deepest flow nesting accepted: the deserializer's own recursion limit.
pub const MAX_DEPTH: usize = 128;

/// What [`refused`] finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Flow nesting deeper than [`MAX_DEPTH`].
    TooDeep,
    /// A tag directly followed by `,` in a flow collection (`[!a, b]`):
    /// libyaml-safer 0.3 panics on it (`panic!("TODO")` in `scan_tag`,
    /// found by fuzzing), so it is refused before parsing.
    TagThenComma,
}

impl Refusal {
    /// The error message.
    pub fn message(self) -> String {
        match self {
            Refusal::TooDeep => format!("nested more than {MAX_DEPTH} levels deep"),
            Refusal::TagThenComma => {
                "a tag directly followed by ',' in a flow collection is not supported; put a space or a value after the tag".to_string()
            }
        }
    }
}

/// The 1-based line and column where flow nesting first goes deeper than
/// [`MAX_DEPTH`], if it does (what the depth tests look at).
#[cfg(test)]
fn too_deep(text: &str) -> Option<(usize, usize)> {
    refused(text)
        .filter(|r| r.2 == Refusal::TooDeep)
        .map(|(line, column, _)| (line, column))
}

/// The first place, 1-based line and column, of what the parser must not
/// be given: flow nesting deeper than [`MAX_DEPTH`], or a tag directly
/// followed by `,` in a flow collection.
pub fn refused(text: &str) -> Option<(usize, usize, Refusal)> {
    // libyaml's reader takes a leading byte-order mark off before it
    // counts columns (and it is no token start).
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let bytes = text.as_bytes();
    let (mut depth, mut line, mut line_start) = (0usize, 1usize, 0usize);
    let mut seen_content = false;
    let mut i = 0;
    // The byte before the current one, as far as token starts go (a blank
    // after a token that ends without one: a quoted scalar, `]`, `}`).
    let mut prev = b'\n';
    // Inside a plain scalar, where quotes, `!` and (in block context)
    // brackets are text. It ends where libyaml ends it: at `: `, ` #`, a
    // flow indicator in flow context, and (approximately) at the end of a
    // line in block context, where the indentation would decide.
    let mut plain = false;
    while i < bytes.len() {
        let b = bytes[i];
        let next = bytes.get(i + 1).copied();
        if i == line_start {
            let rest = &bytes[i..];
            let marker = |m: &[u8]| {
                rest.starts_with(m)
                    && rest
                        .get(3)
                        .is_none_or(|c| matches!(c, b' ' | b'\t' | b'\r' | b'\n'))
            };
            if marker(b"...") || (marker(b"---") && seen_content) {
                return None;
            }
        }
        if plain {
            let flow_indicator = |c: u8| matches!(c, b',' | b'[' | b']' | b'{' | b'}');
            let ends = (b == b':'
                && next.is_none_or(|c| blank(c) || (depth > 0 && flow_indicator(c))))
                || (b == b'#' && blank(prev))
                || (b == b'\n' && depth == 0)
                || (depth > 0 && flow_indicator(b));
            plain = !ends;
        }
        let token_start = !plain && starts_token(prev, depth);
        match b {
            b'\n' => {
                line += 1;
                line_start = i + 1;
            }
            _ if plain => {}
            b'#' if blank(prev) => {
                while i + 1 < bytes.len() && bytes[i + 1] != b'\n' {
                    i += 1;
                }
            }
            b'"' | b'\'' if token_start => {
                // A quoted scalar: skip to its closing quote ('' and \"
                // do not close).
                let quote = b;
                i += 1;
                while i < bytes.len() {
                    match bytes[i] {
                        b'\\' if quote == b'"' && bytes.get(i + 1) != Some(&b'\n') => i += 1,
                        b'\'' if quote == b'\'' && bytes.get(i + 1) == Some(&b'\'') => i += 1,
                        c if c == quote => break,
                        b'\n' => {
                            line += 1;
                            line_start = i + 1;
                        }
                        _ => {}
                    }
                    i += 1;
                }
                seen_content = true;
                prev = b' ';
                i += 1;
                continue;
            }
            b'[' | b'{' if depth > 0 || token_start => {
                depth += 1;
                if depth > MAX_DEPTH {
                    let column = text[line_start..i].chars().count() + 1;
                    return Some((line, column, Refusal::TooDeep));
                }
            }
            b'!' if depth > 0 && token_start && tag_then_comma(&bytes[i..]) => {
                let column = text[line_start..i].chars().count() + 1;
                return Some((line, column, Refusal::TagThenComma));
            }
            b']' | b'}' if depth > 0 => {
                depth -= 1;
                prev = b' ';
                i += 1;
                continue;
            }
            _ if token_start && starts_plain(b, next, depth) => plain = true,
            _ => {}
        }
        if !matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b'#') {
            seen_content = true;
        }
        prev = bytes.get(i).copied().unwrap_or(b'\n');
        i += 1;
    }
    None
}

fn blank(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

/// Whether the tag at the start of `rest` (in a flow collection) is
/// directly followed by `,`: where libyaml-safer panics. A verbatim tag
/// (`!<a,b>`) ends at its `>`; any other at a blank or `,`.
fn tag_then_comma(rest: &[u8]) -> bool {
    let end = if rest.get(1) == Some(&b'<') {
        match rest.iter().position(|&c| blank(c) || c == b'>') {
            Some(n) if rest[n] == b'>' => n + 1,
            _ => return false,
        }
    } else {
        rest.iter()
            .position(|&c| blank(c) || c == b',')
            .unwrap_or(rest.len())
    };
    rest.get(end) == Some(&b',')
}

/// Whether `b` (then `next`) at a token start begins a plain scalar, as
/// libyaml's `fetch_next_token` decides.
fn starts_plain(b: u8, next: Option<u8>, depth: usize) -> bool {
    let next_blank = next.is_none_or(blank);
    match b {
        b'-' => !next_blank,
        b'?' | b':' => depth == 0 && !next_blank,
        c if blank(c) => false,
        b',' | b'[' | b']' | b'{' | b'}' | b'#' | b'&' | b'*' | b'!' | b'|' | b'>' | b'\''
        | b'"' | b'%' | b'@' | b'`' => false,
        _ => true,
    }
}

/// Whether a byte after `prev` begins a token (where an indicator counts).
fn starts_token(prev: u8, depth: usize) -> bool {
    matches!(prev, b' ' | b'\t' | b'\r' | b'\n' | b'-' | b'?' | b':')
        || (depth > 0 && matches!(prev, b'[' | b'{' | b','))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 10 (fuzzing): deep flow nesting made the YAML scanner
    /// quadratic; it is refused before parsing, with its place.
    #[test]
    fn deep_flow_nesting_is_refused_before_parsing() {
        assert_eq!(too_deep(&"{a: ".repeat(100_000)), Some((1, 4 * 128 + 1)));
        assert_eq!(too_deep(&"[".repeat(1_000_000)), Some((1, 129)));
        // After a byte-order mark (UTF-16 input arrives decoded, with one).
        let bom = format!("\u{feff}{}", "[".repeat(1_000));
        assert_eq!(too_deep(&bom), Some((1, 129)));
        let nested = format!("- targets: []\n  labels: {}", "[".repeat(200));
        assert_eq!(too_deep(&nested), Some((2, 11 + 128)));
        // At the limit: left to the parser.
        assert_eq!(too_deep(&"[".repeat(MAX_DEPTH)), None);
    }

    #[test]
    fn brackets_that_nest_nothing_are_not_counted() {
        let quoted = "- targets: ['[[[[', \"{{{{\\\"[[\"]\n";
        let many = quoted.repeat(100);
        assert_eq!(too_deep(&many), None);
        let comments = "# [[[[[[[[[[\nx: 1 # {{{{{{{{\n".repeat(100);
        assert_eq!(too_deep(&comments), None);
        let plain = "query: SELECT a[1 FROM t\n".repeat(200);
        assert_eq!(too_deep(&plain), None);
        let closed = "a: [[[[]]]]\n".repeat(1000);
        assert_eq!(too_deep(&closed), None);
        // Later documents are not read.
        assert_eq!(too_deep(&format!("- a\n---\n{}", "[".repeat(500))), None);
    }

    /// libyaml-safer 0.3 panics on a tag directly followed by `,` in a
    /// flow collection (found by the fuzz smoke in CI).
    #[test]
    fn a_tag_directly_before_a_comma_in_flow_is_refused() {
        assert_eq!(refused("a: [!x, b]"), Some((1, 5, Refusal::TagThenComma)));
        assert_eq!(
            refused("a: {k: !!str,}"),
            Some((1, 8, Refusal::TagThenComma))
        );
        assert_eq!(
            refused("\u{feff}[!x, b]"),
            Some((1, 2, Refusal::TagThenComma))
        );
        assert_eq!(refused("a: [!x b, c]"), None);
        assert_eq!(refused("a: !x,b"), None);
        assert_eq!(refused("a: ['!x,']"), None);
        assert_eq!(too_deep(&format!("- a\n...\n{}", "[".repeat(500))), None);
        assert!(too_deep(&format!("---\n{}", "[".repeat(500))).is_some());
    }

    /// Places the first version of the check missed (each panicked in
    /// libyaml-safer): after a quoted scalar or a flow collection's end,
    /// and after a quote inside a plain scalar, which it took for the start
    /// of a quoted scalar and skipped past the tag.
    #[test]
    fn a_tag_before_a_comma_is_found_after_any_token() {
        let cases = [
            (r#"["a"!x, b]"#, (1, 5)),
            ("a: b 'c\nd: [!x, e]\n", (2, 5)),
            ("[a 'b, [!x, c]]", (1, 9)),
            ("[a][!x, b]", (1, 5)),
            ("a:\n  - [x \"y, !z, w]\n", (2, 12)),
            ("[!<a,b>, c]", (1, 2)),
            ("{a: \"x\\\n\", b: !y, c}", (2, 7)),
        ];
        for (text, (line, column)) in cases {
            assert_eq!(
                refused(text),
                Some((line, column, Refusal::TagThenComma)),
                "{text:?}"
            );
        }
    }

    /// A `!` inside a plain scalar is text, and a verbatim tag may hold a
    /// comma: the parser reads these (no refusal, no panic).
    #[test]
    fn text_that_only_looks_like_a_tag_before_a_comma_is_parsed() {
        for text in [
            "[a !x, b]",
            "{a: hello !world, b: c}",
            "[!<a,b> x]",
            "[a\n  !x, b]",
            "a: b !x, c",
        ] {
            assert_eq!(refused(text), None, "{text:?}");
            super::super::tree::compose(text.as_bytes()).unwrap();
        }
    }
}
