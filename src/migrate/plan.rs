//! Plans a migration: which jobs move, the edited scrape config text and
//! the generated sdbridge config, checked by parsing the edit back.

use std::path::Path;

use crate::yaml::{Mapping, Value};

use super::locate::{self, Key, Located};
use super::paths::{self, scalar, Rebase};
use crate::config::Config;

/// Whether sdbridge takes over blocks under `key` (the source registry
/// says which).
fn movable(key: &str) -> bool {
    crate::source::registry::movable().any(|k| k == key)
}

/// The generated `http_sd_configs` entry, paths as they must be written in
/// the output directory.
#[derive(Debug, Clone, Default)]
pub struct Client {
    pub url: String,
    pub refresh_interval: Option<String>,
    pub basic_auth: Option<(String, String)>,
    pub bearer_token_file: Option<String>,
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
}

/// What happened to one scrape job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Its `moved` blocks went to sdbridge; `kept` SD blocks stay beside
    /// the new `http_sd_configs`.
    Moved {
        job: String,
        moved: Vec<String>,
        kept: Vec<String>,
    },
    /// Left as it was, and why.
    Left { job: String, reason: String },
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Moved { job, moved, kept } => {
                write!(
                    f,
                    "moved: job {job:?}: {} -> http_sd_configs",
                    moved.join(", ")
                )?;
                if !kept.is_empty() {
                    write!(f, " (kept beside it: {})", kept.join(", "))?;
                }
                Ok(())
            }
            Outcome::Left { job, reason } => write!(f, "left in place: job {job:?}: {reason}"),
        }
    }
}

/// The two files and the report.
#[derive(Debug, Clone)]
pub struct Plan {
    pub scrape_config: String,
    pub sdbridge: String,
    pub outcomes: Vec<Outcome>,
    /// Remarks not about one job.
    pub notes: Vec<String>,
}

fn job_label(job: &Value, i: usize) -> String {
    job.get("job_name")
        .and_then(Value::as_str)
        .map_or_else(|| format!("scrape_configs[{i}]"), str::to_string)
}

/// The SD mechanisms of a job (`*_sd_configs` keys) that are not moved.
fn other_sd(job: &Value) -> Vec<String> {
    job.as_mapping()
        .into_iter()
        .flat_map(|m| m.keys())
        .filter_map(Value::as_str)
        .filter(|k| k.ends_with("_sd_configs") && !movable(k))
        .map(str::to_string)
        .collect()
}

fn http_sd_value(client: &Client, job: &str) -> Value {
    let mut m = Mapping::new();
    let s = |v: &str| Value::String(v.to_string());
    m.insert(s("url"), s(&job_url(&client.url, job)));
    if let Some(refresh) = &client.refresh_interval {
        m.insert(s("refresh_interval"), s(refresh));
    }
    if let Some((user, password_file)) = &client.basic_auth {
        let mut b = Mapping::new();
        b.insert(s("username"), s(user));
        b.insert(s("password_file"), s(password_file));
        m.insert(s("basic_auth"), Value::Mapping(b));
    }
    if let Some(file) = &client.bearer_token_file {
        let mut a = Mapping::new();
        a.insert(s("credentials_file"), s(file));
        m.insert(s("authorization"), Value::Mapping(a));
    }
    let mut tls = Mapping::new();
    for (key, v) in [
        ("ca_file", &client.ca_file),
        ("cert_file", &client.cert_file),
        ("key_file", &client.key_file),
    ] {
        if let Some(v) = v {
            tls.insert(s(key), s(v));
        }
    }
    if !tls.is_empty() {
        m.insert(s("tls_config"), Value::Mapping(tls));
    }
    Value::Sequence(vec![Value::Mapping(m)])
}

/// What a job name keeps unencoded in its URL: RFC 3986's unreserved
/// characters (section 2.3: ALPHA, DIGIT, `-`, `.`, `_`, `~`), which
/// must not be percent-encoded.
const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn job_url(base: &str, job: &str) -> String {
    let segment = percent_encoding::utf8_percent_encode(job, UNRESERVED);
    format!("{}/http_sd/{segment}", base.trim_end_matches('/'))
}

/// The `http_sd_configs:` lines replacing the first moved block.
fn http_sd_text(value: &Value, key: &Key, eol: &str) -> Vec<String> {
    let pad = " ".repeat(key.column);
    let mut lines = vec![format!("{}http_sd_configs:{eol}", key.prefix)];
    let Some(entry) = value
        .as_sequence()
        .and_then(|s| s.first())
        .and_then(Value::as_mapping)
    else {
        return lines;
    };
    let mut first = true;
    for (k, v) in entry {
        let k = k.as_str().unwrap_or_default();
        let lead = if first { "  - " } else { "    " };
        first = false;
        match v {
            Value::Mapping(inner) => {
                lines.push(format!("{pad}{lead}{k}:{eol}"));
                for (ik, iv) in inner {
                    let (ik, iv) = (
                        ik.as_str().unwrap_or_default(),
                        iv.as_str().unwrap_or_default(),
                    );
                    lines.push(format!("{pad}      {ik}: {}{eol}", scalar(iv)));
                }
            }
            _ => lines.push(format!(
                "{pad}{lead}{k}: {}{eol}",
                scalar(v.as_str().unwrap_or_default())
            )),
        }
    }
    lines
}

/// Plans the migration of `text` (the input, in `rebase.from`) to
/// `rebase.to`.
pub fn plan(text: &str, input: &Path, rebase: &Rebase, client: &Client) -> Result<Plan, String> {
    // Read as Prometheus reads it: a job that overrides a key it merged
    // (`<<: *base` then `job_name: x`) is valid there.
    let tree: Value = crate::yaml::Document::parse(text.as_bytes())
        .and_then(|doc| doc.deserialize_as_structs())
        .map_err(|e| format!("{}:{}:{}: {}", input.display(), e.line, e.column, e.message))?;
    let sdbridge_path = Path::new(&rebase.to).join("sdbridge.yml");
    let eol = if text.contains("\r\n") { "\r" } else { "" };
    let raw: Vec<&str> = text.split('\n').collect();
    let lines: Vec<&str> = raw
        .iter()
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    let jobs: Vec<Value> = match tree.get("scrape_configs") {
        Some(Value::Sequence(jobs)) => jobs.clone(),
        None | Some(Value::Null) => Vec::new(),
        Some(_) => return Err(format!("{}: scrape_configs is not a list", input.display())),
    };
    let located = locate::scrape_configs(&lines);
    let items = match &located {
        Located::Items(items) if items.len() == jobs.len() => Some(items.as_slice()),
        _ => None,
    };
    let mut notes = Vec::new();
    if tree.get("scrape_config_files").is_some() {
        notes.push(
            "scrape_config_files: the jobs in those files are not migrated (run migrate on each of them); their paths are rewritten".to_string(),
        );
    }
    let mut outcomes = Vec::new();
    let mut moved_jobs: Vec<Value> = Vec::new();
    // (first line, end line, replacement) per moved block, in text order.
    let mut edits: Vec<(usize, usize, Vec<String>)> = Vec::new();
    let mut expected = tree.clone();
    paths::rewrite_tree(&mut expected, rebase);
    for (i, job) in jobs.iter().enumerate() {
        let name = job_label(job, i);
        let left = |reason: &str| Outcome::Left {
            job: name.clone(),
            reason: reason.to_string(),
        };
        let present: Vec<&str> = crate::source::registry::movable()
            .filter(|k| job.get(k).is_some())
            .collect();
        let others = other_sd(job);
        if job.get("http_sd_configs").is_some() {
            outcomes.push(left("already on http_sd_configs"));
            continue;
        }
        if present.is_empty() {
            outcomes.push(left(&if others.is_empty() {
                "nothing to move".to_string()
            } else {
                format!("nothing to move ({})", others.join(", "))
            }));
            continue;
        }
        if job.get("job_name").and_then(Value::as_str).is_none() {
            outcomes.push(left("no job_name"));
            continue;
        }
        if jobs[..i]
            .iter()
            .any(|j| j.get("job_name") == job.get("job_name"))
        {
            outcomes.push(left("an earlier job has the same job_name"));
            continue;
        }
        let keys = items
            .and_then(|items| items[i].keys.as_ref())
            .filter(|keys| {
                let mut text_keys: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
                let mut tree_keys: Vec<&str> = job
                    .as_mapping()
                    .into_iter()
                    .flat_map(|m| m.keys())
                    .filter_map(Value::as_str)
                    .collect();
                text_keys.sort_unstable();
                tree_keys.sort_unstable();
                text_keys == tree_keys
            });
        let Some(keys) = keys else {
            outcomes.push(left(
                "not plain block-style YAML (flow style, anchors or merge keys): move it by hand",
            ));
            continue;
        };
        let moved_keys: Vec<&Key> = keys.iter().filter(|k| movable(&k.name)).collect();
        if let Some(placeholder) = moved_keys
            .iter()
            .find_map(|k| env_placeholder(job.get(&k.name)))
        {
            outcomes.push(left(&format!(
                "its blocks use vmagent's environment placeholder {placeholder}, which sdbridge does not expand: move it by hand with the value written out"
            )));
            continue;
        }
        if moved_keys
            .iter()
            .any(|k| (k.start..k.end).any(|l| has_anchor(lines[l])))
        {
            outcomes.push(left("its blocks define YAML anchors (&name), which other places may use: move it by hand"));
            continue;
        }
        // The sdbridge job: the blocks in text order, paths rewritten.
        let mut bridge_job = Mapping::new();
        bridge_job.insert("job_name".into(), Value::String(name.clone()));
        for key in &moved_keys {
            let mut block = job.get(&key.name).cloned().unwrap_or(Value::Null);
            if key.name == "file_sd_configs" {
                for sd in block.as_sequence_mut().into_iter().flatten() {
                    for file in sd
                        .get_mut("files")
                        .and_then(Value::as_sequence_mut)
                        .into_iter()
                        .flatten()
                    {
                        if let Value::String(f) = file {
                            *f = rebase.absolute(f);
                        }
                    }
                }
            } else {
                paths::rewrite_tree(&mut block, rebase);
            }
            bridge_job.insert(Value::String(key.name.clone()), block);
        }
        let bridge_job = Value::Mapping(bridge_job);
        let single = crate::yaml::to_string(&single_config(vec![bridge_job.clone()]))
            .map_err(|e| format!("writing sdbridge.yml: {e}"))?;
        if let Err(e) = Config::parse(&single, &sdbridge_path) {
            let message = match e {
                crate::config::ConfigError::Invalid { message, .. } => message,
                other => other.to_string(),
            };
            outcomes.push(left(&format!("sdbridge cannot take it: {message}")));
            continue;
        }
        moved_jobs.push(bridge_job);
        let http = http_sd_value(client, &name);
        for (n, key) in moved_keys.iter().enumerate() {
            let replacement = if n == 0 {
                http_sd_text(&http, key, eol)
            } else {
                Vec::new()
            };
            edits.push((key.start, key.end, replacement));
        }
        if let Some(Value::Mapping(m)) = expected
            .get_mut("scrape_configs")
            .and_then(|s| s.get_mut(i))
        {
            for key in &moved_keys {
                m.remove(key.name.as_str());
            }
            m.insert("http_sd_configs".into(), http);
        }
        outcomes.push(Outcome::Moved {
            job: name,
            moved: moved_keys.iter().map(|k| k.name.clone()).collect(),
            kept: others,
        });
    }
    if items.is_none()
        && outcomes
            .iter()
            .any(|o| matches!(o, Outcome::Left { reason, .. } if reason.starts_with("not plain")))
    {
        notes.push(
            "scrape_configs is not a block-style list: nothing in it could be edited".to_string(),
        );
    }

    // Rewrite paths in every kept line, then splice the edits in.
    let mut out: Vec<String> = raw.iter().map(|l| l.to_string()).collect();
    let removed = |i: usize| edits.iter().any(|(s, e, _)| (*s..*e).contains(&i));
    paths::rewrite_text(&mut out, rebase, &removed);
    edits.sort_by_key(|(s, _, _)| std::cmp::Reverse(*s));
    for (start, end, replacement) in edits {
        let replacement: Vec<String> = replacement
            .into_iter()
            .map(|l| l.strip_suffix('\n').unwrap_or(&l).to_string())
            .collect();
        out.splice(start..end, replacement);
    }
    let scrape_config = out.join("\n");

    let reparsed: Value = crate::yaml::Document::parse(scrape_config.as_bytes())
        .and_then(|doc| doc.deserialize_as_structs())
        .map_err(|e| {
        format!("internal error: the migrated config would not parse (its line {}, column {}: {}); nothing written; please report this with the input", e.line, e.column, e.message)
    })?;
    if reparsed != expected {
        return Err("internal error: the migrated config does not read back as intended (anchors, aliases or an unusual layout?); nothing written; please report this with the input".to_string());
    }

    let mut sdbridge = String::from(
        "# Generated by `sdbridge migrate`: the discovery blocks of the scrape\n\
         # jobs, served at /http_sd/<job_name>. `listen` defaults to\n\
         # 127.0.0.1:9412: set it (and `web:` for auth) so that the scrapers\n\
         # reach the URL given to migrate.\n",
    );
    sdbridge.push_str(
        &crate::yaml::to_string(&single_config(moved_jobs))
            .map_err(|e| format!("writing sdbridge.yml: {e}"))?,
    );
    Config::parse(&sdbridge, &sdbridge_path).map_err(|e| format!("internal error: {e}"))?;
    Ok(Plan {
        scrape_config,
        sdbridge,
        outcomes,
        notes,
    })
}

/// Whether `line` defines an anchor (`&name` where a node may start);
/// quoted text that looks like one errs on the safe side.
/// The first vmagent `%{NAME}` placeholder in `value`'s strings (keys
/// included): vmagent expands them from the environment, sdbridge would
/// take them literally (a path matching nothing, a target named
/// `%{HOST}:9100`).
fn env_placeholder(value: Option<&Value>) -> Option<String> {
    fn find(text: &str) -> Option<String> {
        let start = text.find("%{")?;
        let end = text[start..].find('}')? + start;
        let name = &text[start + 2..end];
        (!name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
            .then(|| text[start..=end].to_string())
    }
    match value? {
        Value::String(s) => find(s),
        Value::Sequence(items) => items.iter().find_map(|v| env_placeholder(Some(v))),
        Value::Mapping(m) => m.iter().find_map(|(k, v)| {
            k.as_str()
                .and_then(find)
                .or_else(|| env_placeholder(Some(v)))
        }),
        Value::Tagged(t) => env_placeholder(Some(&t.value)),
        _ => None,
    }
}

fn has_anchor(line: &str) -> bool {
    let code = locate::before_comment(line).as_bytes();
    code.iter().enumerate().any(|(i, &b)| {
        b == b'&'
            && (i == 0 || matches!(code[i - 1], b' ' | b'[' | b'{' | b','))
            && code
                .get(i + 1)
                .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
    })
}

fn single_config(jobs: Vec<Value>) -> Value {
    let mut m = Mapping::new();
    m.insert("jobs".into(), Value::Sequence(jobs));
    Value::Mapping(m)
}
