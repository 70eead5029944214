//! Go's lexical path functions (`path/filepath` on Unix), ported so that
//! paths we produce, `__meta_filepath` above all, are byte-for-byte the ones
//! Prometheus produces.

/// `filepath.Clean`: the shortest lexically equivalent path.
pub fn clean(path: &str) -> String {
    if path.is_empty() {
        return ".".to_string();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                _ if rooted => {}
                _ => parts.push(".."),
            },
            _ => parts.push(part),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// `filepath.Join(a, b)`: joins non-empty elements with `/` and cleans.
pub fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => String::new(),
        (true, false) => clean(b),
        (false, true) => clean(a),
        (false, false) => clean(&format!("{a}/{b}")),
    }
}

/// `filepath.Dir`: everything but the last element, cleaned.
pub fn dir(path: &str) -> String {
    match path.rfind('/') {
        Some(i) => clean(&path[..=i]),
        None => ".".to_string(),
    }
}

/// `filepath.Split`: (directory with trailing slash, last element).
pub fn split(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..=i], &path[i + 1..]),
        None => ("", path),
    }
}

/// Prometheus's `config.JoinDir`: absolute (or empty) paths are kept as
/// written, relative ones are joined to the config file's directory.
pub fn join_dir(base: &str, path: &str) -> String {
    if path.is_empty() || path.starts_with('/') {
        path.to_string()
    } else {
        join(base, path)
    }
}

/// Whether `s` has glob metacharacters (Go's `hasMeta`).
pub fn has_meta(s: &str) -> bool {
    s.contains(['*', '?', '[', '\\'])
}

/// Go's `filepath.Match` for a pattern without separators: `*`, `?`,
/// `[...]`/`[^...]` classes with ranges, `\` escapes. `Err` is
/// `ErrBadPattern`.
pub fn glob_match(pattern: &str, name: &str) -> Result<bool, BadPattern> {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    validate(&p)?;
    Ok(match_from(&p, &n))
}

/// A malformed glob pattern (`filepath.ErrBadPattern`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadPattern;

fn validate(p: &[char]) -> Result<(), BadPattern> {
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            '\\' => {
                if i + 1 >= p.len() {
                    return Err(BadPattern);
                }
                i += 2;
            }
            '[' => i = class_end(p, i)?,
            _ => i += 1,
        }
    }
    Ok(())
}

/// Index just past the class starting at `p[start] == '['`.
fn class_end(p: &[char], start: usize) -> Result<usize, BadPattern> {
    let mut i = start + 1;
    if p.get(i) == Some(&'^') {
        i += 1;
    }
    let mut first = true;
    loop {
        match p.get(i) {
            None => return Err(BadPattern),
            Some(']') if !first => return Ok(i + 1),
            Some(_) => {
                let (_, next) = class_char(p, i)?;
                i = next;
                if p.get(i) == Some(&'-') {
                    let (_, next) = class_char(p, i + 1)?;
                    i = next;
                }
            }
        }
        first = false;
    }
}

fn class_char(p: &[char], i: usize) -> Result<(char, usize), BadPattern> {
    match p.get(i) {
        None | Some('-') | Some(']') => Err(BadPattern),
        Some('\\') => p.get(i + 1).map(|&c| (c, i + 2)).ok_or(BadPattern),
        Some(&c) => Ok((c, i + 1)),
    }
}

fn class_matches(p: &[char], start: usize, c: char) -> bool {
    let mut i = start + 1;
    let negated = p.get(i) == Some(&'^');
    if negated {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while let Some(&pc) = p.get(i) {
        if pc == ']' && !first {
            break;
        }
        first = false;
        let Ok((lo, next)) = class_char(p, i) else {
            return false;
        };
        i = next;
        let mut hi = lo;
        if p.get(i) == Some(&'-') {
            if let Ok((h, next)) = class_char(p, i + 1) {
                hi = h;
                i = next;
            }
        }
        if lo <= c && c <= hi {
            matched = true;
        }
    }
    matched != negated
}

fn match_from(p: &[char], n: &[char]) -> bool {
    let Some(&first) = p.first() else {
        return n.is_empty();
    };
    match first {
        '*' => (0..=n.len()).any(|skip| match_from(&p[1..], &n[skip..])),
        '?' => !n.is_empty() && match_from(&p[1..], &n[1..]),
        '[' => {
            let Ok(end) = class_end(p, 0) else {
                return false;
            };
            !n.is_empty() && class_matches(p, 0, n[0]) && match_from(&p[end..], &n[1..])
        }
        '\\' => p.len() > 1 && n.first() == Some(&p[1]) && match_from(&p[2..], &n[1..]),
        c => n.first() == Some(&c) && match_from(&p[1..], &n[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_matches_go() {
        for (input, want) in [
            ("", "."),
            ("a/b/../c", "a/c"),
            ("/../a", "/a"),
            ("../../a", "../../a"),
            ("a//b/./c/", "a/b/c"),
            ("/", "/"),
            ("./", "."),
            ("a/..", "."),
        ] {
            assert_eq!(clean(input), want, "{input}");
        }
    }

    #[test]
    fn join_dir_keeps_absolute_and_joins_relative() {
        assert_eq!(join_dir("/etc/p", "sd/*.json"), "/etc/p/sd/*.json");
        assert_eq!(join_dir(".", "./sd/*.json"), "sd/*.json");
        assert_eq!(join_dir("/etc/p", "/abs//x.json"), "/abs//x.json");
        assert_eq!(dir("examples/seed.yml"), "examples");
        assert_eq!(dir("seed.yml"), ".");
    }

    #[test]
    fn glob_matches_like_go() {
        let m = |p: &str, n: &str| glob_match(p, n).unwrap();
        assert!(m("*.json", "a.json"));
        assert!(m("*.json", ".hidden.json"));
        assert!(!m("*.json", "a.yml"));
        assert!(m("node-?.yml", "node-1.yml"));
        assert!(m("[a-c]*.json", "b1.json"));
        assert!(!m("[^a-c]*.json", "b1.json"));
        assert!(m("\\*.json", "*.json"));
        assert!(!m("\\*.json", "a.json"));
        assert_eq!(glob_match("[a.json", "a"), Err(BadPattern));
        assert_eq!(glob_match("a\\", "a"), Err(BadPattern));
    }
}
