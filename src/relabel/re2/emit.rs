//! Writes a parsed Go expression as Rust regex syntax that matches what Go
//! matches: every node spelled out with no reliance on ambient flags
//! (each literal escaped, each class as explicit ranges, each assertion in
//! its Go meaning), so nothing the two syntaxes read differently survives.

use std::fmt::Write;

use super::ast::{Class, ClassItem, Kind, Node, RepeatOp};
use super::error::MAX_RUNE;

/// Matches no character (an empty class, which the regex crate accepts).
const NOTHING: &str = r"[^\x00-\x{10FFFF}]";
/// Matches any character, `\n` included.
const ANYTHING: &str = r"[\x00-\x{10FFFF}]";

/// The Rust pattern for `node`.
pub(super) fn emit(node: &Node) -> String {
    let mut out = String::new();
    write_node(&mut out, node);
    out
}

fn write_node(out: &mut String, node: &Node) {
    match &node.kind {
        Kind::NoMatch => out.push_str(NOTHING),
        Kind::Empty => out.push_str("(?:)"),
        Kind::Literal { c, fold } => match char::from_u32(*c) {
            // A surrogate (`\x{D800}`) never matches valid UTF-8.
            None => out.push_str(NOTHING),
            Some(c) if *fold => {
                out.push_str("(?i:");
                write_char(out, c);
                out.push(')');
            }
            Some(c) => write_char(out, c),
        },
        Kind::Class(class) => write_class(out, class),
        Kind::AnyNotNl => out.push_str(r"[^\n]"),
        Kind::Any => out.push_str(ANYTHING),
        Kind::BeginLine => out.push_str("(?m:^)"),
        Kind::EndLine => out.push_str("(?m:$)"),
        Kind::BeginText => out.push_str(r"\A"),
        Kind::EndText => out.push_str(r"\z"),
        // Go's word characters are ASCII.
        Kind::WordBoundary => out.push_str(r"(?-u:\b)"),
        Kind::NoWordBoundary => out.push_str(r"(?-u:\B)"),
        Kind::Capture(_, sub) => {
            out.push('(');
            write_node(out, sub);
            out.push(')');
        }
        // The regex crate drops the groups of a final `x{0}`, which Go
        // counts: a branch that cannot match keeps them.
        Kind::Repeat {
            max: Some(0), sub, ..
        } => {
            out.push_str("(?:");
            out.push_str(NOTHING);
            write_node(out, sub);
            out.push_str(")?");
        }
        Kind::Repeat {
            op,
            min,
            max,
            greedy,
            sub,
        } => {
            // Everything else is written as one atom or group already.
            let group = matches!(sub.kind, Kind::Concat(_) | Kind::Repeat { .. });
            if group {
                out.push_str("(?:");
            }
            write_node(out, sub);
            if group {
                out.push(')');
            }
            match (op, max) {
                (RepeatOp::Star, _) => out.push('*'),
                (RepeatOp::Plus, _) => out.push('+'),
                (RepeatOp::Quest, _) => out.push('?'),
                (RepeatOp::Counted, None) => {
                    let _ = write!(out, "{{{min},}}");
                }
                (RepeatOp::Counted, Some(max)) if max == min => {
                    let _ = write!(out, "{{{min}}}");
                }
                (RepeatOp::Counted, Some(max)) => {
                    let _ = write!(out, "{{{min},{max}}}");
                }
            }
            if !greedy {
                out.push('?');
            }
        }
        Kind::Concat(subs) => subs.iter().for_each(|s| write_node(out, s)),
        Kind::Alternate(subs) | Kind::CharAlternate(subs) => {
            out.push_str("(?:");
            for (i, sub) in subs.iter().enumerate() {
                if i > 0 {
                    out.push('|');
                }
                write_node(out, sub);
            }
            out.push(')');
        }
    }
}

/// A literal character: ASCII letters, digits and `_` as themselves,
/// anything else as `\x{..}` (never special in Rust's syntax).
fn write_char(out: &mut String, c: char) {
    if c.is_ascii_alphanumeric() || c == '_' {
        out.push(c);
    } else {
        let _ = write!(out, r"\x{{{:X}}}", c as u32);
    }
}

/// A range of code points, surrogates left out (no `char` is one); false
/// if nothing is left.
fn write_range(out: &mut String, lo: u32, hi: u32) -> bool {
    let lo = if (0xD800..=0xDFFF).contains(&lo) {
        0xE000
    } else {
        lo
    };
    let hi = if (0xD800..=0xDFFF).contains(&hi) {
        0xD7FF
    } else {
        hi.min(MAX_RUNE)
    };
    if lo > hi {
        return false;
    }
    let (Some(lo), Some(hi)) = (char::from_u32(lo), char::from_u32(hi)) else {
        return false;
    };
    write_char(out, lo);
    if hi != lo {
        out.push('-');
        write_char(out, hi);
    }
    true
}

/// Go's classes are the union of their items, case-folded as a whole under
/// `(?i)`, then negated: the same order the regex crate applies.
fn write_class(out: &mut String, class: &Class) {
    let mut body = String::new();
    for item in &class.items {
        write_item(&mut body, item);
    }
    let whole = match (body.is_empty(), class.negated) {
        (true, false) => NOTHING.to_string(),
        (true, true) => ANYTHING.to_string(),
        (false, negated) => format!("[{}{body}]", if negated { "^" } else { "" }),
    };
    if class.fold {
        out.push_str("(?i:");
        out.push_str(&whole);
        out.push(')');
    } else {
        out.push_str(&whole);
    }
}

/// One class item inside brackets; nothing for an item matching nothing.
fn write_item(out: &mut String, item: &ClassItem) {
    match item {
        ClassItem::Range(lo, hi) => {
            write_range(out, *lo, *hi);
        }
        ClassItem::Group { ranges, negated } => {
            let mut inner = String::new();
            for (lo, hi) in ranges.iter() {
                write_range(&mut inner, *lo, *hi);
            }
            match negated {
                true => {
                    let _ = write!(out, "[^{inner}]");
                }
                false => out.push_str(&inner),
            }
        }
        // The regex crate's `C` takes in unassigned code points (Cn), Go's
        // does not; it has no `Cs` (surrogates, never in a str).
        ClassItem::Unicode { name, negated } => match (*name, negated) {
            ("Any", false) | ("Cs", true) => out.push_str(r"\x00-\x{10FFFF}"),
            ("Any", true) | ("Cs", false) => {}
            ("C", false) => out.push_str(r"\p{Cc}\p{Cf}\p{Co}"),
            ("C", true) => out.push_str(r"[^\p{Cc}\p{Cf}\p{Co}]"),
            (name, false) => {
                let _ = write!(out, r"\p{{{name}}}");
            }
            (name, true) => {
                let _ = write!(out, r"\P{{{name}}}");
            }
        },
    }
}
