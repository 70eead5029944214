//! The first YAML document as a tree of nodes with positions, composed from
//! libyaml's events as yaml.v2's `parser` composes them.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use libyaml_safer::{EventData, Parser, ScalarStyle};

use super::{depth, eof, YamlError};

/// Deeper nesting is refused: deserializing recurses once per level.
pub(crate) const MAX_DEPTH: usize = 128;

/// A 1-based position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mark {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (characters, as libyaml counts them).
    pub column: usize,
}

impl Mark {
    fn of(m: libyaml_safer::Mark) -> Mark {
        Mark {
            line: m.line as usize + 1,
            column: m.column as usize + 1,
        }
    }
}

/// A scalar as written: its text, its tag, and whether it was plain
/// (unquoted, untagged plain scalars are resolved by content).
#[derive(Debug)]
pub(crate) struct Scalar {
    pub value: String,
    /// The resolved tag (`tag:yaml.org,2002:str`, `!foo`), if written.
    pub tag: Option<String>,
    /// yaml.v2's `implicit`: plain style, so `resolve` looks at the text.
    pub plain: bool,
}

#[derive(Debug)]
pub(crate) enum Kind {
    Scalar(Scalar),
    Seq(Vec<Rc<Node>>),
    Map(Vec<(Rc<Node>, Rc<Node>)>),
    /// `*name`: the anchored node, shared.
    Alias(Rc<Node>),
}

/// One node and where it starts.
#[derive(Debug)]
pub(crate) struct Node {
    pub kind: Kind,
    pub mark: Mark,
}

impl Node {
    pub(crate) fn null(mark: Mark) -> Node {
        Node {
            kind: Kind::Scalar(Scalar {
                value: String::new(),
                tag: None,
                plain: true,
            }),
            mark,
        }
    }

    /// The node an alias stands for (itself otherwise).
    pub(crate) fn target(&self) -> &Node {
        match &self.kind {
            Kind::Alias(target) => target,
            _ => self,
        }
    }
}

/// A collection being composed.
enum Open {
    Seq(Vec<Rc<Node>>),
    Map(Vec<(Rc<Node>, Rc<Node>)>, Option<Rc<Node>>),
}

struct Frame {
    open: Open,
    mark: Mark,
    anchor: Option<String>,
}

/// Composes the first document of `input` (UTF-8 with or without a BOM,
/// or UTF-16 with one, as libyaml reads them); later documents are never
/// read, as in yaml.v2. An empty stream is a null document.
pub(crate) fn compose(input: &[u8]) -> Result<Node, YamlError> {
    // Defence in depth: a libyaml-safer panic the checks below miss is an
    // error, not a crashed task. (A fuzz build aborts in its panic hook
    // before unwinding gets here, so fuzzing still reports it.)
    std::panic::catch_unwind(|| compose_checked(input)).unwrap_or_else(|_| {
        Err(YamlError::at(
            Mark::default(),
            "the YAML parser failed on this input (a libyaml-safer bug)".into(),
        ))
    })
}

fn compose_checked(input: &[u8]) -> Result<Node, YamlError> {
    let decoded = from_utf16(input)?;
    let input = decoded.as_deref().map_or(input, str::as_bytes);
    let text = check_utf8(input)?;
    // The scanner's work per token grows with the flow depth, and
    // libyaml-safer panics on a tag before a flow comma: refuse both
    // before scanning (found by fuzzing), on the decoded text (UTF-16
    // input once slipped past the check).
    if let Some((line, column, refusal)) = depth::refused(text) {
        return Err(YamlError::at(Mark { line, column }, refusal.message()));
    }
    let (text, ending) = eof::terminate(text);
    let mut bytes = text.as_bytes();
    let mut parser = Parser::new();
    parser.set_input_string(&mut bytes);
    let mut anchors: HashMap<String, Rc<Node>> = HashMap::new();
    let mut open_anchors: HashSet<String> = HashSet::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Node> = None;
    loop {
        let event = parser.parse().map_err(syntax_error)?;
        let mark = Mark::of(event.start_mark);
        let (node, anchor) = match event.data {
            EventData::StreamStart { .. } | EventData::DocumentStart { .. } => continue,
            EventData::StreamEnd => return Ok(root.unwrap_or_else(|| Node::null(mark))),
            EventData::DocumentEnd { .. } => {
                return Ok(root.unwrap_or_else(|| Node::null(mark)));
            }
            EventData::Alias { anchor } => {
                if open_anchors.contains(&anchor) {
                    return Err(YamlError::at(
                        mark,
                        format!("anchor '{anchor}' value contains itself"),
                    ));
                }
                let Some(target) = anchors.get(&anchor) else {
                    return Err(YamlError::at(
                        mark,
                        format!("unknown anchor '{anchor}' referenced"),
                    ));
                };
                let node = Node {
                    kind: Kind::Alias(target.clone()),
                    mark,
                };
                (node, None)
            }
            EventData::Scalar {
                anchor,
                tag,
                mut value,
                style,
                ..
            } => {
                if matches!(style, ScalarStyle::Literal | ScalarStyle::Folded) {
                    ending.trim(event.end_mark.index, &mut value);
                }
                let node = Node {
                    kind: Kind::Scalar(Scalar {
                        value,
                        plain: style == ScalarStyle::Plain && tag.is_none(),
                        tag,
                    }),
                    mark,
                };
                (node, anchor)
            }
            data @ (EventData::SequenceStart { .. } | EventData::MappingStart { .. }) => {
                let (anchor, open) = match data {
                    EventData::SequenceStart { anchor, .. } => (anchor, Open::Seq(Vec::new())),
                    EventData::MappingStart { anchor, .. } => (anchor, Open::Map(Vec::new(), None)),
                    _ => continue,
                };
                if stack.len() >= MAX_DEPTH {
                    return Err(YamlError::at(
                        mark,
                        format!("nested more than {MAX_DEPTH} levels deep"),
                    ));
                }
                if let Some(a) = &anchor {
                    open_anchors.insert(a.clone());
                }
                stack.push(Frame { open, mark, anchor });
                continue;
            }
            EventData::SequenceEnd | EventData::MappingEnd => {
                let Some(frame) = stack.pop() else {
                    return Err(YamlError::at(mark, "unbalanced collection end".into()));
                };
                if let Some(a) = &frame.anchor {
                    open_anchors.remove(a);
                }
                let kind = match frame.open {
                    Open::Seq(items) => Kind::Seq(items),
                    Open::Map(entries, _) => Kind::Map(entries),
                };
                (
                    Node {
                        kind,
                        mark: frame.mark,
                    },
                    frame.anchor,
                )
            }
        };
        let node = Rc::new(node);
        if let Some(a) = anchor {
            anchors.insert(a, node.clone());
        }
        match stack.last_mut() {
            None => root = Some(Rc::try_unwrap(node).unwrap_or_else(|n| share(&n))),
            Some(Frame {
                open: Open::Seq(items),
                ..
            }) => items.push(node),
            Some(Frame {
                open: Open::Map(entries, key),
                ..
            }) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
    }
}

/// The root is also anchored: keep it as an alias of the shared node.
fn share(node: &Rc<Node>) -> Node {
    Node {
        kind: Kind::Alias(node.clone()),
        mark: node.mark,
    }
}

/// UTF-16 with a byte-order mark, decoded here (libyaml-safer 0.3's own
/// UTF-16 reader loses its place after the first buffer); the BOM stays,
/// so libyaml sees the same characters.
fn from_utf16(input: &[u8]) -> Result<Option<String>, YamlError> {
    let big_endian = match input {
        [0xfe, 0xff, ..] => true,
        [0xff, 0xfe, ..] => false,
        _ => return Ok(None),
    };
    let units = input.chunks(2).map(|c| match (c, big_endian) {
        ([a, b], true) => Ok(u16::from_be_bytes([*a, *b])),
        ([a, b], false) => Ok(u16::from_le_bytes([*a, *b])),
        _ => Err(()),
    });
    let mut text = String::with_capacity(input.len());
    let mut mark = Mark { line: 1, column: 1 };
    let mut units_ok = Vec::with_capacity(input.len() / 2);
    for unit in units {
        match unit {
            Ok(u) => units_ok.push(u),
            Err(()) => {
                return Err(YamlError::at(mark, "incomplete UTF-16 character".into()));
            }
        }
    }
    for c in char::decode_utf16(units_ok) {
        let Ok(c) = c else {
            return Err(YamlError::at(
                mark,
                "invalid UTF-16 (unpaired surrogate)".into(),
            ));
        };
        if c == '\n' {
            mark = Mark {
                line: mark.line + 1,
                column: 1,
            };
        } else {
            mark.column += 1;
        }
        text.push(c);
    }
    Ok(Some(text))
}

/// libyaml's reader refuses invalid UTF-8 (as yaml.v2's does) but names
/// only a byte offset; this names the line and column.
fn check_utf8(input: &[u8]) -> Result<&str, YamlError> {
    match std::str::from_utf8(input) {
        Ok(text) => Ok(text),
        Err(e) => {
            let valid = &input[..e.valid_up_to()];
            let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
            let line_start = valid.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            let column = String::from_utf8_lossy(&valid[line_start..])
                .chars()
                .count()
                + 1;
            Err(YamlError::at(
                Mark { line, column },
                "invalid UTF-8 (YAML files must be UTF-8 or UTF-16 with a byte-order mark)".into(),
            ))
        }
    }
}

fn syntax_error(e: libyaml_safer::Error) -> YamlError {
    let mark = e.problem_mark().map(Mark::of).unwrap_or_default();
    let message = match (e.context(), e.context_mark()) {
        (Some(context), Some(at)) => format!(
            "{}, {context} at line {} column {}",
            e.problem(),
            at.line + 1,
            at.column + 1
        ),
        _ => e.problem().to_string(),
    };
    YamlError::at(mark, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CI fuzz smoke found a libyaml-safer panic (`panic!("TODO")` in
    /// `scan_tag`) that the checks before parsing miss: a tag before a
    /// flow comma, after a multi-line plain scalar holding a quote. It is
    /// an error for that input, not a crashed task.
    #[test]
    fn a_parser_panic_is_an_error() {
        let input = b"jobs:\n bo- j Yname: a b 'c\n   ' . \nc  sgets: [!x, b]}]\n";
        let e = compose(input).unwrap_err();
        assert!(e.message.contains("libyaml-safer"), "{}", e.message);
    }

    #[test]
    fn aliases_share_the_anchored_node() {
        let root = compose(b"a: &x [1]\nb: *x\n").unwrap();
        let Kind::Map(entries) = &root.kind else {
            panic!("not a map")
        };
        let Kind::Alias(target) = &entries[1].1.kind else {
            panic!("not an alias")
        };
        assert!(Rc::ptr_eq(target, &entries[0].1));
    }

    #[test]
    fn anchor_errors_as_yaml_v2_words_them() {
        let e = compose(b"a: *nope\n").unwrap_err();
        assert_eq!((e.line, e.column), (1, 4));
        assert_eq!(e.message, "unknown anchor 'nope' referenced");
        let e = compose(b"a: &x [*x]\n").unwrap_err();
        assert_eq!(e.message, "anchor 'x' value contains itself");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let text = "[".repeat(MAX_DEPTH + 1);
        let e = compose(text.as_bytes()).unwrap_err();
        assert!(e.message.contains("levels deep"), "{}", e.message);
    }

    #[test]
    fn invalid_utf8_is_located() {
        let e = compose(b"a: x\nb: \xe9t\xe9\n").unwrap_err();
        assert_eq!((e.line, e.column), (2, 4));
    }
}
