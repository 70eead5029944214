//! A port of Go 1.19's `regexp/syntax` parser (`parse.go`), with the
//! `Perl` flags `regexp.Compile` uses: the same accepted syntax, the same
//! errors with the same text, and a tree of Go's shape (flags resolved
//! into each node) for [`super::emit`] to write as Rust syntax.
//!
//! Go's limits are kept: repeat counts up to 1000 and nested repeats whose
//! product exceeds 1000 (`repeatIsValid`), a tree more than 1000 deep
//! (`maxHeight`) and a program larger than 128 MiB of instructions
//! (`maxSize`). The last two are computed on this tree, which merges
//! literals and one-character alternatives as Go's does but does not
//! factor common prefixes out of alternations: near those limits a
//! verdict can differ from Go's.

use super::ast::{Class, ClassItem, Kind, Node, RepeatOp};
use super::error::*;
use super::escape::{
    parse_class_char, parse_escape, parse_perl_class, parse_repeat, parse_unicode_class,
};
use super::names;

/// `maxHeight`.
const MAX_HEIGHT: u32 = 1000;
/// `maxSize`: 128 MiB of 40-byte instructions.
const MAX_SIZE: i64 = (128 << 20) / 40;
/// The parser flags that vary (`ClassNL`, `PerlX` and `UnicodeGroups`
/// are always on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Flags {
    fold: bool,
    dot_nl: bool,
    one_line: bool,
    non_greedy: bool,
}

/// The parse stack: nodes and Go's pseudo-operators.
enum Item {
    Node(Node),
    LeftParen {
        /// Group index, `None` for `(?:` and `(?flags:`.
        cap: Option<usize>,
        /// Flags before the paren, restored at `)`.
        flags: Flags,
    },
    VerticalBar,
}

/// The parsed expression.
pub(super) struct Parsed {
    pub root: Node,
    /// Go's `SubexpNames`: index 0 is the whole match.
    pub names: Vec<Option<String>>,
}

struct Parser<'s> {
    whole: &'s str,
    flags: Flags,
    stack: Vec<Item>,
    names: Vec<Option<String>>,
    /// Regexps allocated (`numRegexp`), less those put back.
    allocated: usize,
    free: usize,
    /// Product of repeat counts seen (`repeats`), 0 until the first.
    repeats: i64,
    tracking_size: bool,
}

/// Parses `s` as Go's `regexp.Compile` does.
pub(super) fn parse(s: &str) -> Result<Parsed, Error> {
    let mut p = Parser {
        whole: s,
        flags: Flags {
            fold: false,
            dot_nl: false,
            one_line: true,
            non_greedy: false,
        },
        stack: Vec::new(),
        names: vec![None],
        allocated: 0,
        free: 0,
        repeats: 0,
        tracking_size: false,
    };
    let mut t = s;
    let mut last_repeat: Option<&str> = None;
    while let Some(c) = t.chars().next() {
        let mut repeat = None;
        match c {
            '(' if t[1..].starts_with('?') => t = p.parse_perl_flags(t)?,
            '(' => {
                p.names.push(None);
                p.open(Some(p.names.len() - 1));
                t = &t[1..];
            }
            '|' => {
                p.concat()?;
                if !p.swap_vertical_bar() {
                    p.alloc();
                    p.stack.push(Item::VerticalBar);
                }
                t = &t[1..];
            }
            ')' => {
                p.right_paren()?;
                t = &t[1..];
            }
            '^' | '$' | '.' => {
                let kind = match (c, p.flags.one_line, p.flags.dot_nl) {
                    ('^', true, _) => Kind::BeginText,
                    ('^', false, _) => Kind::BeginLine,
                    ('$', true, _) => Kind::EndText,
                    ('$', false, _) => Kind::EndLine,
                    (_, _, true) => Kind::Any,
                    (_, _, false) => Kind::AnyNotNl,
                };
                p.push_new(kind)?;
                t = &t[1..];
            }
            '[' => t = p.parse_class(t)?,
            '*' | '+' | '?' => {
                let op = match c {
                    '*' => RepeatOp::Star,
                    '+' => RepeatOp::Plus,
                    _ => RepeatOp::Quest,
                };
                let max = (op == RepeatOp::Quest).then_some(1);
                let min = u32::from(op == RepeatOp::Plus);
                let after = p.repeat(op, min, max, t, &t[1..], last_repeat)?;
                repeat = Some(t);
                t = after;
            }
            '{' => match parse_repeat(t) {
                None => {
                    // If the repeat cannot be parsed, { is a literal.
                    p.literal('{' as u32)?;
                    t = &t[1..];
                }
                Some((min, max, after)) => {
                    let before = t;
                    // Numbers too big, or max present and min > max.
                    if !(0..=1000).contains(&min) || max > 1000 || (max >= 0 && min > max) {
                        let text = &before[..before.len() - after.len()];
                        return Err(err(INVALID_REPEAT_SIZE, text));
                    }
                    let (min, max) = (min as u32, u32::try_from(max).ok());
                    let after =
                        p.repeat(RepeatOp::Counted, min, max, before, after, last_repeat)?;
                    repeat = Some(before);
                    t = after;
                }
            },
            '\\' => t = p.parse_backslash(t)?,
            _ => {
                p.literal(c as u32)?;
                t = &t[c.len_utf8()..];
            }
        }
        last_repeat = repeat;
    }
    p.concat()?;
    if p.swap_vertical_bar() {
        p.stack.pop();
    }
    p.alternate()?;
    match (p.stack.pop(), p.stack.is_empty()) {
        (Some(Item::Node(root)), true) => Ok(Parsed {
            root,
            names: p.names,
        }),
        _ => Err(err(MISSING_PAREN, s)),
    }
}

impl<'s> Parser<'s> {
    /// `newRegexp`'s count.
    fn alloc(&mut self) {
        match self.free {
            0 => self.allocated += 1,
            _ => self.free -= 1,
        }
    }

    fn open(&mut self, cap: Option<usize>) {
        self.alloc();
        self.stack.push(Item::LeftParen {
            cap,
            flags: self.flags,
        });
    }

    fn push_new(&mut self, kind: Kind) -> Result<(), Error> {
        self.alloc();
        self.push(Node::new(kind))
    }

    /// `push`, with `maybeConcat`'s merge of two literals (one regexp
    /// reused) and `checkLimits`.
    fn push(&mut self, node: Node) -> Result<(), Error> {
        let n = self.stack.len();
        if n >= 2 {
            if let (Item::Node(a), Item::Node(b)) = (&self.stack[n - 2], &self.stack[n - 1]) {
                if let (Kind::Literal { fold: fa, .. }, Kind::Literal { fold: fb, .. }) =
                    (&a.kind, &b.kind)
                {
                    if fa == fb {
                        self.free += 1;
                    }
                }
            }
        }
        self.check_limits(&node)?;
        self.stack.push(Item::Node(node));
        Ok(())
    }

    /// `checkSize` and `checkHeight` for a node just made.
    fn check_limits(&mut self, node: &Node) -> Result<(), Error> {
        if !self.tracking_size {
            if self.repeats == 0 {
                self.repeats = 1;
            }
            if let Kind::Repeat {
                op: RepeatOp::Counted,
                min,
                max,
                ..
            } = node.kind
            {
                let n = i64::from(max.unwrap_or(min)).max(1);
                self.repeats = match n > MAX_SIZE / self.repeats {
                    true => MAX_SIZE,
                    false => self.repeats * n,
                };
            }
            if (self.allocated as i64) >= MAX_SIZE / self.repeats {
                self.tracking_size = true;
                let stacked = self.stack.iter().filter_map(|i| match i {
                    Item::Node(n) => Some(n.size),
                    _ => None,
                });
                if stacked.max().unwrap_or(0) > MAX_SIZE {
                    return Err(err(INTERNAL, self.whole));
                }
            }
        }
        if self.tracking_size && node.size > MAX_SIZE {
            return Err(err(INTERNAL, self.whole));
        }
        if node.height > MAX_HEIGHT {
            return Err(err(NESTING_DEPTH, self.whole));
        }
        Ok(())
    }

    /// `literal`.
    fn literal(&mut self, c: u32) -> Result<(), Error> {
        self.push_new(Kind::Literal {
            c,
            fold: self.flags.fold,
        })
    }

    /// `repeat`: replaces the top node with itself repeated. `before`
    /// starts at the operator, `after` follows it.
    fn repeat(
        &mut self,
        op: RepeatOp,
        min: u32,
        max: Option<u32>,
        before: &'s str,
        mut after: &'s str,
        last_repeat: Option<&'s str>,
    ) -> Result<&'s str, Error> {
        let mut greedy = !self.flags.non_greedy;
        if let Some(rest) = after.strip_prefix('?') {
            after = rest;
            greedy = !greedy;
        }
        if let Some(last) = last_repeat {
            // a** is a syntax error, not a doubled star.
            return Err(err(INVALID_REPEAT_OP, &last[..last.len() - after.len()]));
        }
        let text = &before[..before.len() - after.len()];
        let Some(Item::Node(_)) = self.stack.last() else {
            return Err(err(MISSING_REPEAT_ARGUMENT, text));
        };
        let Some(Item::Node(sub)) = self.stack.pop() else {
            return Err(err(MISSING_REPEAT_ARGUMENT, text));
        };
        self.alloc();
        let node = Node::new(Kind::Repeat {
            op,
            min,
            max,
            greedy,
            sub: Box::new(sub),
        });
        self.check_limits(&node)?;
        let counted = op == RepeatOp::Counted && (min >= 2 || max.is_some_and(|m| m >= 2));
        if counted && !repeat_is_valid(&node, 1000) {
            return Err(err(INVALID_REPEAT_SIZE, text));
        }
        self.stack.push(Item::Node(node));
        Ok(after)
    }

    /// The nodes above the topmost pseudo-operator.
    fn pop_run(&mut self) -> Vec<Node> {
        let start = self
            .stack
            .iter()
            .rposition(|i| !matches!(i, Item::Node(_)))
            .map_or(0, |i| i + 1);
        self.stack
            .drain(start..)
            .filter_map(|i| match i {
                Item::Node(n) => Some(n),
                _ => None,
            })
            .collect()
    }

    /// `concat`.
    fn concat(&mut self) -> Result<(), Error> {
        let subs = self.pop_run();
        let node = match subs.len() {
            0 => {
                self.alloc();
                Node::new(Kind::Empty)
            }
            _ => self.collapse(subs, false),
        };
        self.push(node)
    }

    /// `alternate`.
    fn alternate(&mut self) -> Result<(), Error> {
        let subs = self.pop_run();
        let node = match subs.len() {
            0 => {
                self.alloc();
                Node::new(Kind::NoMatch)
            }
            _ => self.collapse(subs, true),
        };
        self.push(node)
    }

    /// `collapse`: one node, or a concatenation or alternation of them
    /// with nested ones of the same kind flattened.
    fn collapse(&mut self, mut subs: Vec<Node>, alternate: bool) -> Node {
        if subs.len() == 1 {
            return subs.remove(0);
        }
        self.alloc();
        let mut flat = Vec::with_capacity(subs.len());
        for sub in subs {
            match sub.kind {
                Kind::Alternate(inner) if alternate => {
                    self.free += 1;
                    flat.extend(inner);
                }
                Kind::Concat(inner) if !alternate => {
                    self.free += 1;
                    flat.extend(inner);
                }
                kind => flat.push(Node { kind, ..sub }),
            }
        }
        Node::new(match alternate {
            true => Kind::Alternate(flat),
            false => Kind::Concat(flat),
        })
    }

    /// `swapVerticalBar`: with `[.., A, |, B]` on the stack, merges B into
    /// A if both match one character, else swaps B below the bar.
    fn swap_vertical_bar(&mut self) -> bool {
        let n = self.stack.len();
        if n >= 3 {
            if let (Item::Node(a), Item::VerticalBar, Item::Node(b)) =
                (&self.stack[n - 3], &self.stack[n - 2], &self.stack[n - 1])
            {
                if a.is_char() && b.is_char() {
                    let Some(Item::Node(b)) = self.stack.pop() else {
                        return false;
                    };
                    let Item::Node(a) = &mut self.stack[n - 3] else {
                        return false;
                    };
                    let mut chars = match std::mem::replace(&mut a.kind, Kind::Empty) {
                        Kind::CharAlternate(chars) => chars,
                        kind => vec![Node::new(kind)],
                    };
                    match b.kind {
                        Kind::CharAlternate(more) => chars.extend(more),
                        kind => chars.push(Node::new(kind)),
                    }
                    *a = Node::new(Kind::CharAlternate(chars));
                    self.free += 1;
                    return true;
                }
            }
        }
        if n >= 2 && matches!(self.stack[n - 2], Item::VerticalBar) {
            self.stack.swap(n - 2, n - 1);
            return true;
        }
        false
    }

    /// `parseRightParen`.
    fn right_paren(&mut self) -> Result<(), Error> {
        self.concat()?;
        if self.swap_vertical_bar() {
            self.stack.pop();
        }
        self.alternate()?;
        let (Some(Item::Node(sub)), Some(Item::LeftParen { cap, flags })) =
            (self.stack.pop(), self.stack.pop())
        else {
            return Err(err(UNEXPECTED_PAREN, self.whole));
        };
        self.flags = flags;
        match cap {
            None => self.push(sub),
            Some(i) => self.push(Node::new(Kind::Capture(i, Box::new(sub)))),
        }
    }

    /// `parsePerlFlags`: `(?P<name>`, `(?:`, `(?flags)`, `(?flags:`.
    /// `s` starts with `(?`.
    fn parse_perl_flags(&mut self, s: &'s str) -> Result<&'s str, Error> {
        if s.len() > 4 && s[2..].starts_with("P<") {
            let Some(end) = s.find('>') else {
                return Err(err(INVALID_NAMED_CAPTURE, s));
            };
            let name = &s[4..end];
            if name.is_empty() || !name.bytes().all(|b| b == b'_' || b.is_ascii_alphanumeric()) {
                return Err(err(INVALID_NAMED_CAPTURE, &s[..=end]));
            }
            self.names.push(Some(name.to_string()));
            self.open(Some(self.names.len() - 1));
            return Ok(&s[end + 1..]);
        }
        let mut flags = self.flags;
        let mut negated = false;
        let mut saw_flag = false;
        let mut t = &s[2..];
        while let Some(c) = t.chars().next() {
            t = &t[c.len_utf8()..];
            match c {
                'i' => flags.fold = !negated,
                'm' => flags.one_line = negated,
                's' => flags.dot_nl = !negated,
                'U' => flags.non_greedy = !negated,
                '-' if !negated => {
                    negated = true;
                    saw_flag = false;
                    continue;
                }
                ':' | ')' if !negated || saw_flag => {
                    if c == ':' {
                        self.open(None);
                    }
                    self.flags = flags;
                    return Ok(t);
                }
                _ => break,
            }
            saw_flag = true;
        }
        Err(err(INVALID_PERL_OP, &s[..s.len() - t.len()]))
    }

    /// A backslash outside a class: assertions, `\Q...\E`, class
    /// escapes, then single-character escapes.
    fn parse_backslash(&mut self, t: &'s str) -> Result<&'s str, Error> {
        let kind = match t.as_bytes().get(1) {
            Some(b'A') => Some(Kind::BeginText),
            Some(b'b') => Some(Kind::WordBoundary),
            Some(b'B') => Some(Kind::NoWordBoundary),
            Some(b'z') => Some(Kind::EndText),
            Some(b'C') => return Err(err(INVALID_ESCAPE, &t[..2])),
            Some(b'Q') => {
                let (lit, rest) = t[2..].split_once("\\E").unwrap_or((&t[2..], ""));
                for c in lit.chars() {
                    self.literal(c as u32)?;
                }
                return Ok(rest);
            }
            _ => None,
        };
        if let Some(kind) = kind {
            self.push_new(kind)?;
            return Ok(&t[2..]);
        }
        self.alloc();
        let fold = self.flags.fold;
        if let Some((item, rest)) = parse_unicode_class(t)? {
            return self.push_class(item, rest, fold);
        }
        if let Some((item, rest)) = parse_perl_class(t) {
            return self.push_class(item, rest, fold);
        }
        self.free += 1;
        let (c, rest) = parse_escape(t)?;
        self.literal(c)?;
        Ok(rest)
    }

    fn push_class(&mut self, item: ClassItem, rest: &'s str, fold: bool) -> Result<&'s str, Error> {
        let class = Class {
            items: vec![item],
            negated: false,
            fold,
        };
        self.push(Node::new(Kind::Class(class)))?;
        Ok(rest)
    }

    /// `parseClass`: `s` starts with `[`.
    fn parse_class(&mut self, s: &'s str) -> Result<&'s str, Error> {
        self.alloc();
        let mut t = &s[1..];
        let negated = t.starts_with('^');
        if negated {
            t = &t[1..];
        }
        let mut items = Vec::new();
        let mut first = true;
        while !t.starts_with(']') || first {
            first = false;
            // POSIX [:alnum:] etc.
            if t.len() > 2 && t.starts_with("[:") {
                if let Some(i) = t[2..].find(":]") {
                    let name = &t[..i + 4];
                    let Some((ranges, negated)) = names::posix_group(name) else {
                        return Err(err(INVALID_CHAR_RANGE, name));
                    };
                    items.push(ClassItem::Group { ranges, negated });
                    t = &t[i + 4..];
                    continue;
                }
            }
            if let Some((item, rest)) = parse_unicode_class(t)? {
                items.push(item);
                t = rest;
                continue;
            }
            if let Some((item, rest)) = parse_perl_class(t) {
                items.push(item);
                t = rest;
                continue;
            }
            let range = t;
            let (lo, rest) = parse_class_char(t, s)?;
            t = rest;
            let mut hi = lo;
            // [a-] means (a|-), so check for the final ].
            if t.len() >= 2 && t.starts_with('-') && !t[1..].starts_with(']') {
                let (h, rest) = parse_class_char(&t[1..], s)?;
                t = rest;
                hi = h;
                if hi < lo {
                    return Err(err(INVALID_CHAR_RANGE, &range[..range.len() - t.len()]));
                }
            }
            items.push(ClassItem::Range(lo, hi));
        }
        let class = Class {
            items,
            negated,
            fold: self.flags.fold,
        };
        self.push(Node::new(Kind::Class(class)))?;
        Ok(&t[1..])
    }
}

/// `repeatIsValid`: the product of nested counted repeats is at most `n`.
fn repeat_is_valid(node: &Node, mut n: u32) -> bool {
    match &node.kind {
        Kind::Repeat {
            op: RepeatOp::Counted,
            min,
            max,
            sub,
            ..
        } => {
            let m = max.unwrap_or(*min);
            if max == &Some(0) {
                return true;
            }
            if m > n {
                return false;
            }
            if let Some(q) = n.checked_div(m) {
                n = q;
            }
            repeat_is_valid(sub, n)
        }
        Kind::Repeat { sub, .. } | Kind::Capture(_, sub) => repeat_is_valid(sub, n),
        Kind::Concat(subs) | Kind::Alternate(subs) => subs.iter().all(|s| repeat_is_valid(s, n)),
        _ => true,
    }
}
