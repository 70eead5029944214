//! Go's `regexp/syntax` errors: the `*syntax.Error` type and its codes.

/// Highest code point (`unicode.MaxRune`).
pub(super) const MAX_RUNE: u32 = 0x10_FFFF;

/// Go's `*syntax.Error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// `ErrorCode`'s text.
    pub code: &'static str,
    /// The offending part of the expression.
    pub expr: String,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "error parsing regexp: {}: `{}`", self.code, self.expr)
    }
}

pub(super) const INTERNAL: &str = "regexp/syntax: internal error";
pub(super) const INVALID_CHAR_RANGE: &str = "invalid character class range";
pub(super) const INVALID_ESCAPE: &str = "invalid escape sequence";
pub(super) const INVALID_NAMED_CAPTURE: &str = "invalid named capture";
pub(super) const INVALID_PERL_OP: &str = "invalid or unsupported Perl syntax";
pub(super) const INVALID_REPEAT_OP: &str = "invalid nested repetition operator";
pub(super) const INVALID_REPEAT_SIZE: &str = "invalid repeat count";
pub(super) const MISSING_BRACKET: &str = "missing closing ]";
pub(super) const MISSING_PAREN: &str = "missing closing )";
pub(super) const MISSING_REPEAT_ARGUMENT: &str = "missing argument to repetition operator";
pub(super) const TRAILING_BACKSLASH: &str = "trailing backslash at end of expression";
pub(super) const UNEXPECTED_PAREN: &str = "unexpected )";
pub(super) const NESTING_DEPTH: &str = "expression nests too deeply";

pub(super) fn err(code: &'static str, expr: &str) -> Error {
    Error {
        code,
        expr: expr.to_string(),
    }
}
