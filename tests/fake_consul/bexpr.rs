//! The filter language: a subset of go-bexpr as Consul uses it.

use super::*;

pub(super) const HEALTH_SELECTORS: &[&str] = &[
    "Node",
    "Node.ID",
    "Node.Node",
    "Node.Address",
    "Node.Datacenter",
    "Node.TaggedAddresses",
    "Node.TaggedAddresses.*",
    "Node.Meta",
    "Node.Meta.*",
    "Service.ID",
    "Service.Service",
    "Service.Kind",
    "Service.Tags",
    "Service.Address",
    "Service.TaggedAddresses",
    "Service.TaggedAddresses.*",
    "Service.TaggedAddresses.*.Address",
    "Service.TaggedAddresses.*.Port",
    "Service.Meta",
    "Service.Meta.*",
    "Service.Port",
    "Service.Weights.Passing",
    "Service.Weights.Warning",
    "Service.EnableTagOverride",
    "Checks",
    "Checks.Node",
    "Checks.CheckID",
    "Checks.Name",
    "Checks.Status",
    "Checks.Notes",
    "Checks.Output",
    "Checks.ServiceID",
    "Checks.ServiceName",
    "Checks.ServiceTags",
    "Checks.Type",
];

pub(super) const CATALOG_SELECTORS: &[&str] = &[
    "ID",
    "Node",
    "Address",
    "Datacenter",
    "TaggedAddresses",
    "TaggedAddresses.*",
    "NodeMeta",
    "NodeMeta.*",
    "ServiceKind",
    "ServiceID",
    "ServiceName",
    "ServiceTags",
    "ServiceAddress",
    "ServiceTaggedAddresses",
    "ServiceTaggedAddresses.*",
    "ServiceTaggedAddresses.*.Address",
    "ServiceTaggedAddresses.*.Port",
    "ServiceWeights.Passing",
    "ServiceWeights.Warning",
    "ServiceMeta",
    "ServiceMeta.*",
    "ServicePort",
    "ServiceEnableTagOverride",
];

pub(super) const CHECK_SELECTORS: &[&str] = &[
    "Node",
    "CheckID",
    "Name",
    "Status",
    "Notes",
    "Output",
    "ServiceID",
    "ServiceName",
    "ServiceTags",
    "Type",
];

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Op {
    Eq,
    Ne,
    In,
    NotIn,
    Contains,
    NotContains,
    Matches,
    NotMatches,
    IsEmpty,
    IsNotEmpty,
}

impl Op {
    pub(super) fn negated(self) -> bool {
        matches!(
            self,
            Op::Ne | Op::NotIn | Op::NotContains | Op::NotMatches | Op::IsEmpty
        )
    }
}

#[derive(Debug)]
pub(super) enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Match {
        sel: Vec<String>,
        op: Op,
        value: String,
        re: Option<regex::Regex>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Tok {
    LParen,
    RParen,
    EqEq,
    NotEq,
    Str(String),
    /// A number, or a (possibly dotted) bare word; keywords included.
    Word(Vec<String>),
}

pub(super) fn tokenize(s: &str) -> Result<Vec<(usize, Tok)>, String> {
    let b: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    let err = |i: usize, m: &str| format!("1:{} ({}): {}", i + 1, i, m);
    while i < b.len() {
        let c = b[i];
        let start = i;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        match c {
            '(' => {
                out.push((start, Tok::LParen));
                i += 1;
            }
            ')' => {
                out.push((start, Tok::RParen));
                i += 1;
            }
            '=' | '!' => {
                if b.get(i + 1) != Some(&'=') {
                    return Err(err(i, &format!("no match found, unexpected {c:?}")));
                }
                out.push((start, if c == '=' { Tok::EqEq } else { Tok::NotEq }));
                i += 2;
            }
            '"' => {
                let (v, n) =
                    quoted(&b[i..]).ok_or_else(|| err(i, "rule \"string\": invalid syntax"))?;
                out.push((start, Tok::Str(v)));
                i += n;
            }
            '`' => {
                let end = b[i + 1..]
                    .iter()
                    .position(|&c| c == '`')
                    .ok_or_else(|| err(i, "unterminated raw string literal"))?;
                // strconv.Unquote drops carriage returns from raw strings.
                let raw = b[i + 1..i + 1 + end].iter().filter(|&&c| c != '\r');
                out.push((start, Tok::Str(raw.collect())));
                i += end + 2;
            }
            c if c.is_ascii_digit() || c == '-' => {
                let mut j = i + 1;
                while j < b.len() && (b[j].is_ascii_digit() || b[j] == '.') {
                    j += 1;
                }
                let n: String = b[i..j].iter().collect();
                if n == "-" {
                    return Err(err(i, "no match found, unexpected '-'"));
                }
                out.push((start, Tok::Word(vec![n])));
                i = j;
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let mut parts = Vec::new();
                loop {
                    let mut j = i;
                    while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == '_') {
                        j += 1;
                    }
                    if j == i {
                        return Err(err(i, "invalid selector"));
                    }
                    parts.push(b[i..j].iter().collect::<String>());
                    i = j;
                    // Map index forms: ["key"] (possibly repeated).
                    while b.get(i) == Some(&'[') {
                        let (key, n) = match b.get(i + 1) {
                            Some('"') => quoted(&b[i + 1..]).ok_or_else(|| err(i, "bad index"))?,
                            _ => return Err(err(i, "expected a quoted key after '['")),
                        };
                        if b.get(i + 1 + n) != Some(&']') {
                            return Err(err(i, "expected ']'"));
                        }
                        parts.push(key);
                        i += n + 2;
                    }
                    if b.get(i) == Some(&'.')
                        && b.get(i + 1)
                            .is_some_and(|c| c.is_ascii_alphabetic() || *c == '_')
                    {
                        i += 1;
                        continue;
                    }
                    break;
                }
                out.push((start, Tok::Word(parts)));
            }
            _ => return Err(err(i, &format!("no match found, unexpected {c:?}"))),
        }
    }
    Ok(out)
}

/// A Go double-quoted string at the start of `b`: (value, chars consumed).
/// A double-quoted literal at the start of `b`: (its value, chars used).
/// As go-bexpr's grammar (`'"' DoubleStringChar* '"'` with
/// `DoubleStringChar <- !'"' .`), the literal ends at the first `"`, even
/// after a backslash, and its text then goes through Go's
/// `strconv.Unquote`: Go escapes, no raw newline, `\'` refused. `None`:
/// unterminated or invalid.
pub(super) fn quoted(b: &[char]) -> Option<(String, usize)> {
    let end = 1 + b.get(1..)?.iter().position(|&c| c == '"')?;
    Some((go_unquote(&b[1..end])?, end + 1))
}

/// The body of a double-quoted Go string literal, unquoted as
/// `strconv.Unquote` does. `\x` and octal escapes above 0x7f (raw bytes
/// in Go, possibly invalid UTF-8) are refused: the fake's strings are text.
pub(super) fn go_unquote(b: &[char]) -> Option<String> {
    let mut v = String::new();
    let mut i = 0;
    let hex = |s: &[char]| -> Option<u32> {
        s.iter()
            .try_fold(0u32, |n, c| Some(n * 16 + c.to_digit(16)?))
    };
    while i < b.len() {
        let c = b[i];
        i += 1;
        if c == '\n' {
            return None;
        }
        if c != '\\' {
            v.push(c);
            continue;
        }
        let e = *b.get(i)?;
        i += 1;
        let ch = match e {
            'a' => '\u{7}',
            'b' => '\u{8}',
            'f' => '\u{c}',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'v' => '\u{b}',
            '\\' => '\\',
            'x' | 'u' | 'U' => {
                let n = match e {
                    'x' => 2,
                    'u' => 4,
                    _ => 8,
                };
                let code = hex(b.get(i..i + n)?)?;
                i += n;
                if e == 'x' && code > 0x7f {
                    return None;
                }
                char::from_u32(code)?
            }
            '0'..='7' => {
                let digits = b.get(i - 1..i + 2)?;
                if !digits.iter().all(|c| ('0'..='7').contains(c)) {
                    return None;
                }
                i += 2;
                let code = digits
                    .iter()
                    .fold(0u32, |n, c| n * 8 + c.to_digit(8).unwrap_or(0));
                if code > 0x7f {
                    return None;
                }
                char::from_u32(code)?
            }
            _ => return None,
        };
        v.push(ch);
    }
    Some(v)
}

pub(super) struct Parser<'a> {
    pub(super) toks: Vec<(usize, Tok)>,
    pub(super) pos: usize,
    pub(super) len: usize,
    pub(super) selectors: &'a [&'a str],
}

pub(super) fn is_kw(t: Option<&Tok>, kw: &str) -> bool {
    matches!(t, Some(Tok::Word(p)) if p.len() == 1 && p[0] == kw)
}

pub(super) const KEYWORDS: &[&str] = &[
    "and", "or", "not", "in", "contains", "matches", "is", "empty",
];

impl Parser<'_> {
    pub(super) fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(_, t)| t)
    }
    pub(super) fn peek_at(&self, n: usize) -> Option<&Tok> {
        self.toks.get(self.pos + n).map(|(_, t)| t)
    }
    pub(super) fn offset(&self) -> usize {
        self.toks.get(self.pos).map_or(self.len, |(o, _)| *o)
    }
    pub(super) fn err(&self, m: &str) -> String {
        let o = self.offset();
        format!("1:{} ({}): {}", o + 1, o, m)
    }
    pub(super) fn eat_kw(&mut self, kw: &str) -> bool {
        if is_kw(self.peek(), kw) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    pub(super) fn or(&mut self) -> Result<Expr, String> {
        let mut e = self.and()?;
        while self.eat_kw("or") {
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }
    pub(super) fn and(&mut self) -> Result<Expr, String> {
        let mut e = self.unary()?;
        while self.eat_kw("and") {
            e = Expr::And(Box::new(e), Box::new(self.unary()?));
        }
        Ok(e)
    }
    pub(super) fn unary(&mut self) -> Result<Expr, String> {
        if self.eat_kw("not") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.peek() == Some(&Tok::LParen) {
            self.pos += 1;
            let e = self.or()?;
            if self.peek() != Some(&Tok::RParen) {
                return Err(self.err("no match found, expected \")\""));
            }
            self.pos += 1;
            return Ok(e);
        }
        self.matcher()
    }

    pub(super) fn selector(&mut self) -> Result<Vec<String>, String> {
        match self.peek().cloned() {
            Some(Tok::Word(p)) if !(p.len() == 1 && KEYWORDS.contains(&p[0].as_str())) => {
                if !p[0].starts_with(|c: char| c.is_ascii_alphabetic()) {
                    return Err(self.err("no match found, expected selector"));
                }
                let ok = self.selectors.iter().any(|pat| {
                    let pat: Vec<&str> = pat.split('.').collect();
                    pat.len() == p.len() && pat.iter().zip(&p).all(|(a, b)| *a == "*" || a == b)
                });
                if !ok {
                    return Err(format!("Selector {:?} is not valid", p.join(".")));
                }
                self.pos += 1;
                Ok(p)
            }
            _ => Err(self.err("no match found, expected selector")),
        }
    }

    pub(super) fn value(&mut self) -> Result<String, String> {
        match self.peek().cloned() {
            Some(Tok::Str(s)) => {
                self.pos += 1;
                Ok(s)
            }
            Some(Tok::Word(p)) if !(p.len() == 1 && KEYWORDS.contains(&p[0].as_str())) => {
                self.pos += 1;
                Ok(p.join("."))
            }
            _ => Err(self.err("no match found, expected value")),
        }
    }

    pub(super) fn matcher(&mut self) -> Result<Expr, String> {
        // `Value in Selector` / `Value not in Selector`.
        let value_first = match self.peek() {
            Some(Tok::Str(_)) => true,
            Some(Tok::Word(_)) => {
                is_kw(self.peek_at(1), "in")
                    || (is_kw(self.peek_at(1), "not") && is_kw(self.peek_at(2), "in"))
            }
            _ => false,
        };
        if value_first {
            let value = self.value()?;
            let op = if self.eat_kw("in") {
                Op::In
            } else if self.eat_kw("not") && self.eat_kw("in") {
                Op::NotIn
            } else {
                return Err(self.err("no match found, expected \"in\" or \"not in\""));
            };
            let sel = self.selector()?;
            return Ok(Expr::Match {
                sel,
                op,
                value,
                re: None,
            });
        }
        let sel = self.selector()?;
        let op = match self.peek().cloned() {
            Some(Tok::EqEq) => {
                self.pos += 1;
                Op::Eq
            }
            Some(Tok::NotEq) => {
                self.pos += 1;
                Op::Ne
            }
            _ if self.eat_kw("contains") => Op::Contains,
            _ if self.eat_kw("matches") => Op::Matches,
            _ if self.eat_kw("is") => {
                let not = self.eat_kw("not");
                if !self.eat_kw("empty") {
                    return Err(self.err("no match found, expected \"empty\""));
                }
                if not {
                    Op::IsNotEmpty
                } else {
                    Op::IsEmpty
                }
            }
            _ if self.eat_kw("not") => {
                if self.eat_kw("contains") {
                    Op::NotContains
                } else if self.eat_kw("matches") {
                    Op::NotMatches
                } else {
                    return Err(self.err("no match found, expected \"contains\" or \"matches\""));
                }
            }
            _ => return Err(self.err("no match found, expected a match operator")),
        };
        let value = if matches!(op, Op::IsEmpty | Op::IsNotEmpty) {
            String::new()
        } else {
            self.value()?
        };
        let re = if matches!(op, Op::Matches | Op::NotMatches) {
            Some(
                regex::Regex::new(&value)
                    .map_err(|e| format!("Failed to compile regular expression {value:?}: {e}"))?,
            )
        } else {
            None
        };
        Ok(Expr::Match { sel, op, value, re })
    }
}

pub(super) fn parse_filter(s: &str, selectors: &[&str]) -> Result<Expr, String> {
    let toks = tokenize(s)?;
    let mut p = Parser {
        toks,
        pos: 0,
        len: s.len(),
        selectors,
    };
    let e = p.or()?;
    if p.pos != p.toks.len() {
        return Err(p.err("no match found, expected \"and\", \"or\" or end of input"));
    }
    Ok(e)
}

impl Expr {
    pub(super) fn eval(&self, v: &Value) -> bool {
        match self {
            Expr::And(a, b) => a.eval(v) && b.eval(v),
            Expr::Or(a, b) => a.eval(v) || b.eval(v),
            Expr::Not(a) => !a.eval(v),
            Expr::Match { sel, op, value, re } => eval_match(v, sel, *op, value, re.as_ref()),
        }
    }
}

pub(super) fn eval_match(
    v: &Value,
    path: &[String],
    op: Op,
    lit: &str,
    re: Option<&regex::Regex>,
) -> bool {
    if path.is_empty() {
        return apply(v, op, lit, re);
    }
    match v {
        Value::Object(m) => match m.get(&path[0]) {
            Some(x) => eval_match(x, &path[1..], op, lit, re),
            None => op.negated(),
        },
        // A selector crossing a list of structs: ANY semantics.
        Value::Array(items) => items.iter().any(|x| eval_match(x, path, op, lit, re)),
        _ => op.negated(),
    }
}

pub(super) fn scalar_eq(v: &Value, lit: &str) -> bool {
    match v {
        Value::String(s) => s == lit,
        Value::Number(n) => match (n.as_f64(), lit.parse::<f64>()) {
            (Some(a), Ok(b)) => a == b,
            _ => false,
        },
        Value::Bool(b) => lit.parse::<bool>().ok() == Some(*b),
        Value::Null => lit.is_empty(),
        _ => false,
    }
}

pub(super) fn apply(v: &Value, op: Op, lit: &str, re: Option<&regex::Regex>) -> bool {
    let contains = |v: &Value| match v {
        Value::Array(a) => a.iter().any(|x| scalar_eq(x, lit)),
        Value::Object(m) => m.contains_key(lit),
        Value::String(s) => s.contains(lit),
        _ => false,
    };
    let empty = match v {
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        Value::String(s) => s.is_empty(),
        Value::Null => true,
        _ => false,
    };
    let matches = |v: &Value| match (v, re) {
        (Value::String(s), Some(re)) => re.is_match(s),
        _ => false,
    };
    match op {
        Op::Eq => scalar_eq(v, lit),
        Op::Ne => !scalar_eq(v, lit),
        Op::In | Op::Contains => contains(v),
        Op::NotIn | Op::NotContains => !contains(v),
        Op::Matches => matches(v),
        Op::NotMatches => !matches(v),
        Op::IsEmpty => empty,
        Op::IsNotEmpty => !empty,
    }
}
