//! Go's RE2 regular expressions (Go 1.19, which Debian built Prometheus
//! 2.42 with) on the Rust `regex` crate.
//!
//! The two engines share RE2's design (linear time, leftmost-first
//! submatches) but not their syntax. [`parse`] ports Go's parser, so a
//! pattern is accepted or refused exactly as Go does, with Go's message;
//! [`emit`] writes the parsed tree as Rust syntax spelling out Go's
//! meaning. Where they differ:
//!
//! | Go 1.19 | `regex` crate | here |
//! |---|---|---|
//! | `\d \w \s \b \B` ASCII; `\s` is `[\t\n\f\r ]` | Unicode by default; ASCII `\s` has `\v` | Go's ASCII ranges; `(?-u:\b)` |
//! | `(?P<name>re)` only; `(?<name>` refused | both | `(?<` refused |
//! | names `[A-Za-z0-9_]+`, a leading digit and repeats allowed | no leading digit, no repeats | names kept aside, groups unnamed |
//! | `\pL`, `\p{Greek}`, `\p{^Greek}`: Unicode 13 categories and scripts, exact names, `Any` | loose names (`\p{greek}`, `\p{Letter}`), more properties, newer Unicode | Go's names only |
//! | `\p{C}` without unassigned code points; `\p{Cs}` | `\p{C}` with them; no `Cs` | `Cc Cf Co`; `Cs` matches nothing |
//! | `\Q...\E` | refused | literal text |
//! | `a**`, `a*+`, `\Z`, `\e`, `\C`, lookaround, backreferences refused | `a**`, `a*+` accepted | refused |
//! | `\<`, `\>`, `\_` are literals; `\b{start}` is `\b` then `{start}` | `\<` `\>` `\b{start}` are word assertions | Go's reading |
//! | `a{,5}`, `a{01}`, a lone `{` are literal text | errors | literal |
//! | repeat counts at most 1000, nested products too | only a size limit | Go's limits |
//! | octal `\0`, `\12`, `\123`; `\1`…`\9` refused | no octal | the code point |
//! | `\x{D800}` (a surrogate): accepted, never matches | refused | never matches |
//! | flags `i m s U` only; `(?)`, `(?ii)`, `(?i-i)` accepted | `x u R` too; `(?)` and repeats refused | resolved per node; only local `(?i:…)`, `(?m:^)`, `(?-u:\b)` emitted |
//! | `[a&&b]`, `[a--b]`, `[a~~b]`, `[[]`: literal characters | set operations, nested classes | literal |
//! | nesting over 1000 levels refused | nest limit 250, deeper recursion can overflow the stack | Go's limit; deep patterns compiled on a thread with a large stack |
//! | programs over 128 MiB refused (`maxSize`) | compiled size 10 MiB by default | Go's check (approximate: Go also factors alternations); the Rust limit raised to 64 MiB, and a pattern past it (such as `\pL{1000}`, which Go takes) refused with a message saying so |
//!
//! Matching is the same otherwise: `.` is any character but `\n`, `$`
//! without `m` is the end of the text, `(?i)` is simple case folding and
//! submatches are leftmost-first in both. Unicode tables differ by version
//! (Go 1.19 has Unicode 13.0, the `regex` crate a later one), so
//! characters assigned since 2020 can be classed differently. Checked:
//! `fixtures/relabel/re2_go1.19.json` holds Go 1.19.8's verdict, its
//! submatches and its `ReplaceAllString` for 280 patterns on 42 inputs,
//! and the tests require the same from this translation.

mod ast;
mod emit;
mod error;
mod escape;
mod names;
mod parse;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Compiled size allowed to the Rust engine (its default is 10 MiB).
const SIZE_LIMIT: usize = 64 << 20;
/// Rust nesting allowed: Go's 1000 levels as emitted, with room.
const NEST_LIMIT: u32 = 4000;
/// Go trees deeper than this are compiled on a thread of their own with a
/// large stack: the regex crate's compiler recurses (about 500 levels fit
/// in a 2 MiB stack in a release build).
const DEEP: u32 = 100;

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A compiled Go regular expression.
#[derive(Clone, Debug)]
pub struct Regexp {
    /// The expression as given (for [`Regexp::new`], before anchoring).
    source: Arc<str>,
    /// The translation, anchored as given.
    regex: regex::Regex,
    /// Go's `SubexpNames` (index 0 is the whole match).
    names: Arc<[Option<String>]>,
    /// Shared by clones: identifies the group layout for scratch space.
    id: u64,
}

impl PartialEq for Regexp {
    fn eq(&self, other: &Regexp) -> bool {
        self.source == other.source
    }
}

impl Eq for Regexp {}

impl Regexp {
    /// Prometheus's `relabel.NewRegexp`: `^(?:` + `source` + `)$`, as Go
    /// compiles it.
    pub fn new(source: &str) -> Result<Regexp, String> {
        let mut re = Regexp::compile(&format!("^(?:{source})$"))?;
        re.source = Arc::from(source);
        Ok(re)
    }

    /// Go's `regexp.Compile(expr)`: unanchored.
    pub fn compile(expr: &str) -> Result<Regexp, String> {
        let parsed = parse::parse(expr).map_err(|e| e.to_string())?;
        let pattern = emit::emit(&parsed.root);
        let build = move || {
            regex::RegexBuilder::new(&pattern)
                .size_limit(SIZE_LIMIT)
                .nest_limit(NEST_LIMIT)
                .build()
        };
        let built = match parsed.root.height > DEEP {
            false => build(),
            true => std::thread::Builder::new()
                .name("regex-compile".into())
                .stack_size(256 << 20)
                .spawn(build)
                .map_err(|e| format!("regexp {}: no thread to compile it on: {e}", shorten(expr)))?
                .join()
                .map_err(|_| format!("regexp {}: compiling it failed", shorten(expr)))?,
        };
        let regex = built.map_err(|e| match e {
            regex::Error::CompiledTooBig(limit) => format!(
                "regexp {} compiles to more than sdbridge's limit of {} MiB \
                 (Prometheus would accept it): simplify it",
                shorten(expr),
                limit >> 20
            ),
            e => format!("regexp {}: {e}", shorten(expr)),
        })?;
        Ok(Regexp {
            source: Arc::from(expr),
            regex,
            names: parsed.names.into(),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Go's `MatchString`.
    pub fn is_match(&self, text: &str) -> bool {
        self.regex.is_match(text)
    }

    /// The Rust regex, whose groups are Go's groups (unnamed).
    pub fn regex(&self) -> &regex::Regex {
        &self.regex
    }

    /// Go's `SubexpNames`.
    pub fn names(&self) -> &[Option<String>] {
        &self.names
    }

    /// Same for clones of one compiled expression.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }
}

/// `expr` quoted, its first 60 characters if longer.
fn shorten(expr: &str) -> String {
    match expr.char_indices().nth(60) {
        Some((i, _)) => format!("{:?}...", &expr[..i]),
        None => format!("{expr:?}"),
    }
}

#[cfg(test)]
mod tests;
