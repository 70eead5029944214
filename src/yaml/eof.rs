//! The end of an input whose last line has no line break. C libyaml, and
//! yaml.v2 after it, read NULs past the end; libyaml-safer 0.3 finds its
//! buffer empty and panics in two places (found by fuzzing):
//!
//! - a block scalar whose content runs to the end (`a: |\n  x`): its
//!   `read_line_break` panics with "unexpected end of input";
//! - a backslash ending the input inside a double-quoted scalar (`a: "x\`):
//!   the escape's `unwrap()` panics.
//!
//! Both are avoided by giving the parser a line break after the last line
//! (only when the text could hold either, so other files keep their error
//! positions byte for byte). That break changes nothing yaml.v2 would read
//! except a block scalar that runs to the end: its value gains the break as
//! its last character (unless chomped with `-`), and [`Ending::trim`] takes
//! it off again. A last line of spaces only is dropped instead: those are
//! indentation, unless a block scalar is indented less than they are, where
//! yaml.v2 keeps the spaces beyond its indentation (a README parity gap).

use std::borrow::Cow;

/// What [`terminate`] did to the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// Given to the parser as it was (or with a last line of spaces cut).
    AsIs,
    /// A `\n` was added; a block scalar ending at this mark index (libyaml
    /// counts the bytes after a leading byte-order mark) ran to the end.
    Added { index: u64 },
}

impl Ending {
    /// A block scalar's value as yaml.v2 reads it, given the end index
    /// libyaml reported for it: the added break taken off if it read it.
    pub(crate) fn trim(self, end_index: u64, value: &mut String) {
        if self == (Ending::Added { index: end_index }) && value.ends_with('\n') {
            value.pop();
        }
    }
}

/// `input` as the parser is given it, and what was changed.
pub(crate) fn terminate(input: &str) -> (Cow<'_, str>, Ending) {
    let last_line = input.rfind(is_break).map_or(0, |i| {
        i + input[i..].chars().next().map_or(1, char::len_utf8)
    });
    if last_line == input.len() {
        return (Cow::Borrowed(input), Ending::AsIs);
    }
    if input[last_line..].bytes().all(|b| b == b' ') {
        return (Cow::Borrowed(&input[..last_line]), Ending::AsIs);
    }
    if !input.contains(['|', '>']) && !input.ends_with('\\') {
        return (Cow::Borrowed(input), Ending::AsIs);
    }
    let text = format!("{input}\n");
    let bom = if text.starts_with('\u{feff}') { 3 } else { 0 };
    let index = (text.len() - bom) as u64;
    (Cow::Owned(text), Ending::Added { index })
}

/// A line break as libyaml reads them.
fn is_break(c: char) -> bool {
    matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

#[cfg(test)]
mod tests {
    use super::super::tree::{compose, Kind};
    use super::*;

    /// The value of the last scalar of `text`'s document (a mapping).
    fn last_value(text: &str) -> String {
        let root = compose(text.as_bytes()).unwrap();
        let Kind::Map(entries) = &root.kind else {
            panic!("not a map: {text:?}")
        };
        match &entries.last().unwrap().1.target().kind {
            Kind::Scalar(s) => s.value.clone(),
            _ => panic!("not a scalar: {text:?}"),
        }
    }

    /// What C libyaml (serde_norway's unsafe-libyaml-norway, a line-for-line
    /// port that reads NULs past the end as yaml.v2 does) makes of it.
    fn c_libyaml_value(text: &str) -> String {
        let v: serde_norway::Mapping = serde_norway::from_str(text).unwrap();
        match v.iter().last().unwrap().1 {
            serde_norway::Value::String(s) => s.clone(),
            other => panic!("{other:?}"),
        }
    }

    /// Fuzzing found libyaml-safer panicking on a block scalar that runs
    /// to the end of the input without a line break.
    #[test]
    fn a_block_scalar_at_the_end_without_a_line_break_reads_as_in_yaml_v2() {
        let cases = [
            ("a: |\n  x", "x"),
            ("a: |+\n  x", "x"),
            ("a: |-\n  x", "x"),
            ("a: >\n  x\n  y", "x y"),
            ("a: >+\n  x\n\n  y", "x\ny"),
            ("a: |2\n   x\\", " x\\"),
            ("b: 1\na: |\n  SELECT 1\n  FROM t", "SELECT 1\nFROM t"),
            ("a: |\n  x\n    y", "x\n  y"),
            ("a: |\n  x\n  \ty", "x\n\ty"),
            ("\u{feff}a: |\n  é", "é"),
            ("a: |\r\n  x\r\n  y", "x\ny"),
            // The header is the last line: an empty value.
            ("a: |+", ""),
            ("a: | # c", ""),
            // Ending before the last line: untouched.
            ("a: |\n  x\nb: y", "y"),
            ("a: >\n  x\nb: |\n  y\n", "y\n"),
            // Spaces ending the file are indentation.
            ("a: |+\n  x\n  ", "x\n"),
            ("a: |\n  x\n ", "x\n"),
            ("a: |+\n  x\n\n  ", "x\n\n"),
        ];
        for (text, want) in cases {
            assert_eq!(last_value(text), want, "{text:?}");
            assert_eq!(c_libyaml_value(text), want, "C libyaml on {text:?}");
        }
        let e = compose(b"a: |\n  x\n\t").unwrap_err();
        assert!(e.message.contains("tab"), "{}", e.message);
    }

    /// Fuzzing found libyaml-safer panicking on a backslash that ends the
    /// input inside a double-quoted scalar; yaml.v2 refuses it too.
    #[test]
    fn a_backslash_ending_a_double_quoted_scalar_is_an_error() {
        for text in [r#"a: "x\"#, r#""\"#, r#"- ["a", "b\"] \"#] {
            let e = compose(text.as_bytes()).unwrap_err();
            assert!(
                e.message.contains("end of stream"),
                "{text:?}: {}",
                e.message
            );
        }
        assert_eq!(last_value("a: x\\"), "x\\");
    }

    /// The one difference (README): a last line of spaces only, more than
    /// a block scalar's indentation, is content to yaml.v2.
    #[test]
    fn spaces_ending_the_file_beyond_a_block_scalars_indentation_are_dropped() {
        assert_eq!(last_value("a: |\n  x\n     "), "x\n");
        assert_eq!(c_libyaml_value("a: |\n  x\n     "), "x\n   ");
    }

    #[test]
    fn only_inputs_that_need_a_break_get_one() {
        assert_eq!(terminate("").1, Ending::AsIs);
        assert_eq!(terminate("a: 1").1, Ending::AsIs);
        assert_eq!(terminate("a: |\n x\n").1, Ending::AsIs);
        assert_eq!(terminate("a: |\n x\u{2028}").1, Ending::AsIs);
        assert_eq!(terminate("a: |\n x").1, Ending::Added { index: 8 });
        assert_eq!(terminate("\u{feff}a: |\n x").1, Ending::Added { index: 8 });
        assert_eq!(terminate("a: |\n x\n   ").0, "a: |\n x\n");
        assert_eq!(terminate("a: |\n x\u{2028}  ").0, "a: |\n x\u{2028}");
        assert_eq!(terminate("   ").0, "");
    }
}
