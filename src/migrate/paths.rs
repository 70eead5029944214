//! Path rewriting: Prometheus, vmagent and sdbridge all resolve relative
//! paths against their config file's directory (Go's `filepath.Join`,
//! lexical), so a config written to another directory must name the same
//! files from there.

use crate::yaml::Value;

use super::locate::before_comment;
use crate::gopath;

/// Settings whose value is one path (Prometheus's `SetDirectory` fields
/// that can appear in a scrape config file).
pub const PATH_KEYS: &[&str] = &[
    "password_file",
    "credentials_file",
    "bearer_token_file",
    "ca_file",
    "cert_file",
    "key_file",
    "client_secret_file",
    "kubeconfig_file",
    "query_log_file",
    "scrape_failure_log_file",
];

/// Settings whose value is a list of paths (or globs).
pub const PATH_LIST_KEYS: &[&str] = &["files", "rule_files", "scrape_config_files"];

/// Moves relative paths from one config directory to another.
#[derive(Debug, Clone)]
pub struct Rebase {
    /// The input's directory, absolute and clean.
    pub from: String,
    /// The output directory, absolute and clean.
    pub to: String,
}

impl Rebase {
    /// `path`, as written in a config in `from`, as it must be written in
    /// one in `to`: absolute paths and unchanged directories keep it as
    /// written; otherwise the relative path (`..` is lexical for every
    /// reader, as Go's `filepath.Join` cleans), or the absolute one when
    /// the two directories share nothing but `/`.
    pub fn path(&self, path: &str) -> String {
        if path.is_empty() || path.starts_with('/') || self.from == self.to {
            return path.to_string();
        }
        let target = gopath::join(&self.from, path);
        relative(&self.to, &target).unwrap_or(target)
    }

    /// `path` made absolute against `from`: how Prometheus, run with an
    /// absolute `--config.file`, forms file_sd patterns, and so
    /// `__meta_filepath`.
    pub fn absolute(&self, path: &str) -> String {
        gopath::join_dir(&self.from, path)
    }
}

/// `target` relative to `base`, both absolute and clean; `None` when
/// they have no first component in common.
fn relative(base: &str, target: &str) -> Option<String> {
    let parts = |p: &str| -> Vec<String> {
        p.split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };
    let (base, target) = (parts(base), parts(target));
    let common = base.iter().zip(&target).take_while(|(a, b)| a == b).count();
    if common == 0 && !base.is_empty() {
        return None;
    }
    let mut out: Vec<String> = vec!["..".to_string(); base.len() - common];
    out.extend(target[common..].iter().cloned());
    Some(if out.is_empty() {
        ".".to_string()
    } else {
        out.join("/")
    })
}

/// Writes `value` as a YAML scalar: plain when that reads back as the same
/// string, single-quoted otherwise.
pub fn scalar(value: &str) -> String {
    let plain = !value.is_empty()
        && !value.starts_with(|c: char| "-?:,[]{}#&*!|>'\"%@` ".contains(c))
        && !value.ends_with([' ', ':'])
        && !value.contains(": ")
        && !value.contains(" #")
        && !value.contains(['\n', '\t', ',', '[', ']', '{', '}'])
        && crate::yaml::from_str::<Value>(value).ok() == Some(Value::String(value.to_string()));
    if plain {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\'', "''"))
    }
}

/// Rewrites the paths in one scalar as written (plain or quoted), or
/// `None` when it is not a simple scalar this can edit safely.
fn rewrite_scalar(written: &str, rebase: &Rebase) -> Option<String> {
    let t = written.trim();
    let (value, quote) =
        if let Some(inner) = t.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
            (inner.replace("''", "'"), Some('\''))
        } else if let Some(inner) = t.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
            if inner.contains('\\') {
                return None;
            }
            (inner.to_string(), Some('"'))
        } else {
            (t.to_string(), None)
        };
    let new = rebase.path(&value);
    // The quoting style as written, where it can hold the new value.
    Some(match quote {
        _ if new == value => t.to_string(),
        Some('"') if !new.contains(['"', '\\']) => format!("\"{new}\""),
        Some(_) => format!("'{}'", new.replace('\'', "''")),
        None => scalar(&new),
    })
}

/// Rewrites the path settings of a config's text, line by line (block
/// and one-line flow forms). Lines in `skip` are left alone. What this
/// misses is caught by the parse-back check in [`super::plan`].
pub fn rewrite_text(lines: &mut [String], rebase: &Rebase, skip: &dyn Fn(usize) -> bool) {
    // An open block list of paths: the key's indentation.
    let mut list_at: Option<usize> = None;
    for (i, line) in lines.iter_mut().enumerate() {
        if skip(i) {
            list_at = None;
            continue;
        }
        let code = before_comment(line).trim_end();
        if code.trim().is_empty() {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        if let Some(at) = list_at {
            let rest = code.trim_start();
            if indent >= at && rest.starts_with("- ") && indent + rest.len() == code.len() {
                let dash_col = indent + 2;
                let value = &code[dash_col..];
                if let Some(new) = rewrite_scalar(value, rebase) {
                    let tail = line[code.len()..].to_string();
                    let pad = &value[..value.len() - value.trim_start().len()];
                    *line = format!("{}{pad}{new}{tail}", &line[..dash_col]);
                }
                continue;
            }
            if indent > at {
                continue;
            }
            list_at = None;
        }
        if let Some((new, opens)) = rewrite_line(line, code.len(), rebase) {
            *line = new;
            if opens {
                list_at = Some(indent);
            }
        }
    }
}

/// Rewrites `key: value` and `key: [a, b]` occurrences in one line
/// (`code_len`: the part before any comment). Returns the new line and
/// whether it opens a block list of paths (`files:` with nothing after).
fn rewrite_line(line: &str, code_len: usize, rebase: &Rebase) -> Option<(String, bool)> {
    let code = &line[..code_len];
    let mut out = String::new();
    let mut pos = 0;
    let mut opens = false;
    let mut changed = false;
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < code.len() {
        let boundary = i == 0 || matches!(bytes[i - 1], b' ' | b'{' | b',' | b'-');
        let key = PATH_KEYS
            .iter()
            .map(|k| (k, false))
            .chain(PATH_LIST_KEYS.iter().map(|k| (k, true)))
            .find(|(k, _)| code[i..].starts_with(*k) && code[i + k.len()..].starts_with(':'));
        let Some((key, is_list)) = key.filter(|_| boundary) else {
            i += code[i..].chars().next().map_or(1, char::len_utf8);
            continue;
        };
        let value_start = i + key.len() + 1;
        let rest = &code[value_start..];
        if !rest.is_empty() && !rest.starts_with(' ') {
            i = value_start;
            continue;
        }
        if rest.trim().is_empty() {
            opens = is_list;
            i = code.len();
            continue;
        }
        let value_start = value_start + (rest.len() - rest.trim_start().len());
        let rest = &code[value_start..];
        if is_list {
            let close = rest.strip_prefix('[').and_then(|r| r.find(']'))?;
            let inner = &rest[1..=close];
            let items: Option<Vec<String>> = inner
                .split(',')
                .map(|s| {
                    let pad_l = &s[..s.len() - s.trim_start().len()];
                    let pad_r = &s[s.trim_end().len()..];
                    if s.trim().is_empty() {
                        return Some(s.to_string());
                    }
                    rewrite_scalar(s, rebase).map(|v| format!("{pad_l}{v}{pad_r}"))
                })
                .collect();
            out.push_str(&code[pos..value_start + 1]);
            out.push_str(&items?.join(","));
            pos = value_start + 1 + close;
            i = pos;
        } else {
            // A scalar ends at the end of the line, or at `,`/`}` in flow.
            let end = if rest.starts_with(['\'', '"']) {
                let q = &rest[..1];
                rest[1..].find(q).map(|e| e + 2)?
            } else {
                rest.find([',', '}']).unwrap_or(rest.len())
            };
            let written = &rest[..end];
            out.push_str(&code[pos..value_start]);
            out.push_str(&rewrite_scalar(written, rebase)?);
            pos = value_start + end;
            i = pos;
        }
        changed = true;
    }
    if !changed && !opens {
        return None;
    }
    out.push_str(&line[pos..]);
    Some((out, opens))
}

/// The same rewriting on a parsed tree: what the edited text must parse
/// back to.
pub fn rewrite_tree(value: &mut Value, rebase: &Rebase) {
    match value {
        Value::Mapping(map) => {
            for (key, v) in map.iter_mut() {
                let name = key.as_str().unwrap_or("");
                match v {
                    Value::String(s) if PATH_KEYS.contains(&name) => *s = rebase.path(s),
                    Value::Sequence(items) if PATH_LIST_KEYS.contains(&name) => {
                        for item in items {
                            if let Value::String(s) = item {
                                *s = rebase.path(s);
                            }
                        }
                    }
                    _ => rewrite_tree(v, rebase),
                }
            }
        }
        Value::Sequence(items) => items.iter_mut().for_each(|v| rewrite_tree(v, rebase)),
        Value::Tagged(tagged) => rewrite_tree(&mut tagged.value, rebase),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rebase(from: &str, to: &str) -> Rebase {
        Rebase {
            from: from.into(),
            to: to.into(),
        }
    }

    #[test]
    fn relative_paths_name_the_same_file_from_the_new_directory() {
        let r = rebase("/etc/prometheus", "/etc/prometheus/new");
        assert_eq!(r.path("secrets/pw"), "../secrets/pw");
        assert_eq!(r.path("/abs/pw"), "/abs/pw");
        assert_eq!(r.path("./pw"), "../pw");
        let r = rebase("/etc/prometheus", "/etc/out");
        assert_eq!(r.path("sd/*.json"), "../prometheus/sd/*.json");
        let r = rebase("/etc/prometheus", "/srv/out");
        assert_eq!(r.path("sd/*.json"), "/etc/prometheus/sd/*.json");
        assert_eq!(r.absolute("sd/../sd/*.json"), "/etc/prometheus/sd/*.json");
        assert_eq!(rebase("/a", "/a").path("./x"), "./x");
        assert_eq!(rebase("/a/b", "/a").path(".."), ".");
    }

    #[test]
    fn text_rewriting_keeps_layout_and_comments() {
        let r = rebase("/etc/p", "/etc/p/out");
        let mut lines: Vec<String> = [
            "rule_files:",
            "  - rules/a.yml # a comment",
            "  - '/abs/b.yml'",
            "scrape_config_files: [more/*.yml, \"x.yml\"]",
            "    basic_auth: {username: u, password_file: pw}",
            "      ca_file: 'my ca.pem'  # ca_file: not this",
            "    key_file:",
            "    job_name: files",
            "    bearer_token_file: tok",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        rewrite_text(&mut lines, &r, &|i| i == 8);
        assert_eq!(
            lines,
            [
                "rule_files:",
                "  - ../rules/a.yml # a comment",
                "  - '/abs/b.yml'",
                "scrape_config_files: [../more/*.yml, \"../x.yml\"]",
                "    basic_auth: {username: u, password_file: ../pw}",
                "      ca_file: '../my ca.pem'  # ca_file: not this",
                "    key_file:",
                "    job_name: files",
                "    bearer_token_file: tok",
            ]
        );
    }

    #[test]
    fn scalars_are_quoted_only_when_needed() {
        assert_eq!(
            scalar("http://127.0.0.1:9412/http_sd/a"),
            "http://127.0.0.1:9412/http_sd/a"
        );
        assert_eq!(scalar("it's: x"), "'it''s: x'");
        assert_eq!(scalar("true"), "'true'");
        assert_eq!(scalar("123"), "'123'");
        assert_eq!(scalar("*.json"), "'*.json'");
    }
}
