//! Where the `scrape_configs` items and their keys sit in the text, so that
//! `migrate` edits lines instead of re-serializing a parsed tree (which
//! would lose comments and formatting). Block-style YAML only: anything
//! else is reported as not editable, and every edit is checked afterwards
//! by parsing the result back.

/// One `scrape_configs` item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The `- ` line (0-based).
    pub start: usize,
    /// One past its last line.
    pub end: usize,
    /// Its keys, in text order; `None` when it is not a plain block
    /// mapping (flow style, anchors, quoted or complex keys).
    pub keys: Option<Vec<Key>>,
}

/// One key of an item and the lines its value takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub name: String,
    /// The key's line (0-based).
    pub start: usize,
    /// One past the value's last line, trailing blank and comment lines
    /// left out (they may belong to what follows).
    pub end: usize,
    /// The key's column.
    pub column: usize,
    /// What precedes the key on its line (spaces, or `  - ` on the item's
    /// first line).
    pub prefix: String,
}

/// What the text holds under `scrape_configs:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Located {
    /// No top-level `scrape_configs:` line.
    Absent,
    /// `scrape_configs: [...]` or another form on one line.
    Flow,
    /// The block sequence's items.
    Items(Vec<Item>),
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// Blank or comment-only.
pub fn is_filler(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#')
}

/// The part of `s` before a comment (`#` at the start or after a space or
/// tab, outside quotes).
pub fn before_comment(s: &str) -> &str {
    let bytes = s.as_bytes();
    let mut quote: Option<u8> = None;
    for (i, &b) in bytes.iter().enumerate() {
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if (b == b'\'' || b == b'"')
                && (i == 0 || matches!(bytes[i - 1], b' ' | b'\t' | b'[' | b'{' | b',' | b':')) =>
            {
                quote = Some(b);
            }
            None if b == b'#' && (i == 0 || matches!(bytes[i - 1], b' ' | b'\t')) => {
                return &s[..i];
            }
            None => {}
        }
    }
    s
}

/// `name:` followed by a space or the end, `name` a plain identifier.
fn key_name(content: &str) -> Option<&str> {
    let end = content
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(content.len());
    let name = &content[..end];
    let rest = &content[end..];
    let starts_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let colon = rest.strip_prefix(':')?;
    (starts_ok && (colon.is_empty() || colon.starts_with([' ', '\t', '\r', '\n']))).then_some(name)
}

/// Locates the items of the top-level `scrape_configs:` in `lines` (each
/// without its line ending).
pub fn scrape_configs(lines: &[&str]) -> Located {
    let Some(head) = lines
        .iter()
        .position(|l| key_name(l) == Some("scrape_configs"))
    else {
        return Located::Absent;
    };
    let after = before_comment(&lines[head]["scrape_configs:".len()..]).trim();
    if !after.is_empty() {
        return Located::Flow;
    }
    // The block ends at the next top-level key or document marker; items
    // may sit at column 0.
    let end = (head + 1..lines.len())
        .find(|&i| {
            let l = lines[i];
            !is_filler(l) && indent(l) == 0 && !(l == "-" || l.starts_with("- "))
        })
        .unwrap_or(lines.len());
    let Some(first) = (head + 1..end).find(|&i| !is_filler(lines[i])) else {
        return Located::Items(Vec::new());
    };
    let column = indent(lines[first]);
    let is_item = |l: &str| {
        indent(l) == column && {
            let rest = &l[column..];
            rest == "-" || rest.starts_with("- ")
        }
    };
    let starts: Vec<usize> = (first..end).filter(|&i| is_item(lines[i])).collect();
    let mut items = Vec::new();
    for (n, &start) in starts.iter().enumerate() {
        let item_end = starts.get(n + 1).copied().unwrap_or(end);
        // Trailing filler belongs to what follows.
        let mut last = item_end;
        while last > start + 1 && is_filler(lines[last - 1]) {
            last -= 1;
        }
        items.push(Item {
            start,
            end: last,
            keys: item_keys(lines, start, last, column),
        });
    }
    Located::Items(items)
}

fn item_keys(lines: &[&str], start: usize, end: usize, dash: usize) -> Option<Vec<Key>> {
    let first = lines[start];
    let after_dash = &first[dash + 1..];
    let content = after_dash.trim_start_matches(' ');
    let (key_column, first_key_line) = if before_comment(content).trim().is_empty() {
        let next = (start + 1..end).find(|&i| !is_filler(lines[i]))?;
        (indent(lines[next]), next)
    } else {
        (dash + 1 + (after_dash.len() - content.len()), start)
    };
    let mut keys: Vec<Key> = Vec::new();
    for (i, &line) in lines.iter().enumerate().take(end).skip(first_key_line) {
        if is_filler(line) {
            continue;
        }
        let col = if i == start { key_column } else { indent(line) };
        if col > key_column {
            continue;
        }
        if col < key_column {
            return None;
        }
        // A block sequence may sit at its key's column.
        let rest = &line[col..];
        if i != start && (rest == "-" || rest.starts_with("- ")) {
            continue;
        }
        let name = key_name(&line[col..])?;
        keys.push(Key {
            name: name.to_string(),
            start: i,
            end: i + 1,
            column: col,
            prefix: line[..col].to_string(),
        });
    }
    for n in 0..keys.len() {
        let mut stop = keys.get(n + 1).map_or(end, |k| k.start);
        while stop > keys[n].start + 1 && is_filler(lines[stop - 1]) {
            stop -= 1;
        }
        keys[n].end = stop;
    }
    Some(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(located: &Located) -> Vec<Option<Vec<(String, usize, usize)>>> {
        let Located::Items(items) = located else {
            panic!("{located:?}");
        };
        items
            .iter()
            .map(|i| {
                i.keys.as_ref().map(|ks| {
                    ks.iter()
                        .map(|k| (k.name.clone(), k.start, k.end))
                        .collect()
                })
            })
            .collect()
    }

    #[test]
    fn finds_items_and_key_spans() {
        let text = "global: {scrape_interval: 1m}\nscrape_configs:\n  # first\n  - job_name: a # x\n    file_sd_configs:\n      - files: [a.json]\n\n    # about b\n  -\n    job_name: b\n    static_configs: [{targets: [x]}]\n  - {job_name: c}\nrule_files: [r.yml]\n";
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            names(&scrape_configs(&lines)),
            vec![
                Some(vec![
                    ("job_name".into(), 3, 4),
                    ("file_sd_configs".into(), 4, 6)
                ]),
                Some(vec![
                    ("job_name".into(), 9, 10),
                    ("static_configs".into(), 10, 11)
                ]),
                None,
            ]
        );
    }

    #[test]
    fn items_at_column_zero_and_other_forms() {
        let lines: Vec<&str> =
            "scrape_configs:\n- job_name: a\n  static_configs:\n  - targets: [x]\nalerting: {}\n"
                .lines()
                .collect();
        assert_eq!(
            names(&scrape_configs(&lines)),
            vec![Some(vec![
                ("job_name".into(), 1, 2),
                ("static_configs".into(), 2, 4)
            ])]
        );
        assert_eq!(scrape_configs(&["scrape_configs: []"]), Located::Flow);
        assert_eq!(scrape_configs(&["global: {}"]), Located::Absent);
        let quoted: Vec<&str> = "scrape_configs:\n  - \"job_name\": a\n".lines().collect();
        assert_eq!(names(&scrape_configs(&quoted)), vec![None]);
    }

    #[test]
    fn comments_are_cut_outside_quotes_only() {
        assert_eq!(before_comment("a: 'x #y' # z"), "a: 'x #y' ");
        assert_eq!(before_comment("a: b#c"), "a: b#c");
        assert_eq!(before_comment("# all"), "");
    }
}
