//! The tree Go's parser builds (`syntax.Regexp`, flags resolved into each
//! node), with Go's height and compiled size of every subtree for its
//! limits.

/// Which repetition operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RepeatOp {
    Star,
    Plus,
    Quest,
    /// `{min}`, `{min,}` (max `None`) or `{min,max}`.
    Counted,
}

/// An ASCII class from Go's `perl_groups.go`, as (lo, hi) pairs.
pub(super) type Group = &'static [(u32, u32)];

/// One item of a bracketed class (or a class escape outside brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ClassItem {
    /// `lo-hi` (surrogates included, as Go allows).
    Range(u32, u32),
    /// `\d`, `[:alpha:]` and their negations.
    Group { ranges: Group, negated: bool },
    /// `\pL`, `\p{Greek}` (a name Go 1.19 knows) and their negations.
    Unicode { name: &'static str, negated: bool },
}

/// A character class: the union of its items, negated as a whole if
/// `negated`, case-folded if `fold`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Class {
    pub items: Vec<ClassItem>,
    pub negated: bool,
    pub fold: bool,
}

/// What a node matches (Go's `Op`, flags resolved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Kind {
    /// Matches nothing (`OpNoMatch`).
    NoMatch,
    /// Matches the empty string (`OpEmptyMatch`).
    Empty,
    /// One code point (any `u32` up to `MAX_RUNE`, surrogates included).
    Literal {
        c: u32,
        fold: bool,
    },
    Class(Class),
    /// `.` without `s`.
    AnyNotNl,
    /// `.` with `s`.
    Any,
    BeginLine,
    EndLine,
    BeginText,
    EndText,
    WordBoundary,
    NoWordBoundary,
    /// Group `index` (1-based).
    Capture(usize, Box<Node>),
    Repeat {
        op: RepeatOp,
        min: u32,
        max: Option<u32>,
        greedy: bool,
        sub: Box<Node>,
    },
    Concat(Vec<Node>),
    Alternate(Vec<Node>),
    /// One-character alternatives Go merges into one class
    /// (`swapVerticalBar`): each matches one character.
    CharAlternate(Vec<Node>),
}

/// A node with Go's height and compiled size of its subtree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Node {
    pub kind: Kind,
    pub height: u32,
    pub size: i64,
}

impl Node {
    pub(super) fn new(kind: Kind) -> Node {
        let subs: &[Node] = match &kind {
            Kind::Capture(_, sub) | Kind::Repeat { sub, .. } => std::slice::from_ref(&**sub),
            Kind::Concat(subs) | Kind::Alternate(subs) => subs,
            _ => &[],
        };
        let height = 1 + subs.iter().map(|s| s.height).max().unwrap_or(0);
        let sum: i64 = subs.iter().map(|s| s.size).sum();
        // calcSize.
        let size = match &kind {
            Kind::Capture(..) => 2 + sum,
            Kind::Repeat { op, min, max, .. } => match (op, max) {
                (RepeatOp::Star, _) => 2 + sum,
                (RepeatOp::Plus | RepeatOp::Quest, _) => 1 + sum,
                (RepeatOp::Counted, None) if *min == 0 => 2 + sum,
                (RepeatOp::Counted, None) => 1 + i64::from(*min) * sum,
                (RepeatOp::Counted, Some(max)) => i64::from(*max) * sum + i64::from(max - min),
            },
            Kind::Concat(_) => sum,
            Kind::Alternate(subs) => sum + subs.len() as i64 - 1,
            _ => 1,
        };
        Node {
            kind,
            height,
            size: size.max(1),
        }
    }

    /// Go's `isCharClass`: matches exactly one character.
    pub(super) fn is_char(&self) -> bool {
        matches!(
            self.kind,
            Kind::Literal { .. }
                | Kind::Class(_)
                | Kind::AnyNotNl
                | Kind::Any
                | Kind::CharAlternate(_)
        )
    }
}
