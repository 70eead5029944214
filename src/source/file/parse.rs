//! Reading one file_sd file as Prometheus's `discovery/file` `readFile`
//! does.

use std::borrow::Cow;
use std::fmt;

use crate::gopath;
use crate::targetgroup::TargetGroup;
use crate::yaml;

use super::FILEPATH_LABEL;

/// A file_sd file that could not be used; its previous groups stay served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct FileError {
    /// The file, as `__meta_filepath` would name it.
    pub path: String,
    /// 1-based line, 0 if not tied to a place.
    pub line: usize,
    /// 1-based column, 0 if not tied to a place.
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// `read` or `parse`, for metrics.
    pub kind: &'static str,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.line > 0 {
            write!(
                f,
                "{}:{}:{}: {}",
                self.path, self.line, self.column, self.message
            )
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// One group of a file; a `null` fails inside the parser, so the error
/// names the item's line and column. `JSON`: read as Go's encoding/json
/// reads Prometheus's group ([`GoJsonGroup`]).
struct Item<const JSON: bool>(TargetGroup);

impl<'de, const JSON: bool> serde::Deserialize<'de> for Item<JSON> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ItemVisitor<const JSON: bool>;

        impl<'de, const JSON: bool> serde::de::Visitor<'de> for ItemVisitor<JSON> {
            type Value = Item<JSON>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a target group")
            }

            fn visit_none<E: serde::de::Error>(self) -> Result<Item<JSON>, E> {
                Err(E::custom("nil target group item found"))
            }

            fn visit_unit<E: serde::de::Error>(self) -> Result<Item<JSON>, E> {
                Err(E::custom("nil target group item found"))
            }

            fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Item<JSON>, D::Error> {
                if JSON {
                    d.deserialize_map(GoJsonGroup).map(Item)
                } else {
                    serde::Deserialize::deserialize(d).map(Item)
                }
            }
        }

        d.deserialize_option(ItemVisitor::<JSON>)
    }
}

/// A group as Prometheus's `Group.UnmarshalJSON` reads it with Go's
/// encoding/json: keys match the field names case-insensitively (Go's
/// folding, in which `ſ` is an `s` and the Kelvin sign a `k`), a repeated
/// key replaces the earlier value, an unknown key is an error
/// (`DisallowUnknownFields`).
struct GoJsonGroup;

impl<'de> serde::de::Visitor<'de> for GoJsonGroup {
    type Value = TargetGroup;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a target group")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<TargetGroup, A::Error> {
        const FIELDS: &[&str] = &["targets", "labels"];
        let mut group = TargetGroup::default();
        while let Some(key) = map.next_key::<String>()? {
            match go_json_field(&key, FIELDS) {
                Some("targets") => {
                    let targets = map.next_value::<Option<Vec<Option<String>>>>()?;
                    group.targets = targets
                        .unwrap_or_default()
                        .into_iter()
                        .map(Option::unwrap_or_default)
                        .collect();
                }
                Some(_) => group.labels = map.next_value()?,
                None => return Err(serde::de::Error::unknown_field(&key, FIELDS)),
            }
        }
        Ok(group)
    }
}

/// The field a JSON key names under encoding/json's rules: an exact match,
/// else a case-insensitive one (ASCII letters, `ſ` for `s`, `K` for `k`).
fn go_json_field(key: &str, fields: &[&'static str]) -> Option<&'static str> {
    if let Some(exact) = fields.iter().find(|f| **f == key) {
        return Some(exact);
    }
    let folded: Option<String> = key
        .chars()
        .map(|c| match c {
            '\u{17f}' => Some('s'),
            '\u{212a}' => Some('k'),
            c if c.is_ascii() => Some(c.to_ascii_lowercase()),
            _ => None,
        })
        .collect();
    let folded = folded?;
    fields.iter().find(|f| **f == folded).copied()
}

/// Parses one file_sd file the way Prometheus's `readFile` does: `.json`
/// with JSON (unknown keys rejected), `.yml`/`.yaml` with strict YAML; a
/// `null` item rejects the whole file; every group gets `__meta_filepath`.
/// An empty YAML file is an empty list; an empty JSON file is an error.
pub fn parse_file(path: &str, content: &[u8]) -> Result<Vec<TargetGroup>, FileError> {
    let error = |line, column, message: String| FileError {
        path: path.to_string(),
        line,
        column,
        message,
        kind: "parse",
    };
    let ext = gopath::split(path)
        .1
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .unwrap_or_default();
    let parsed: Option<Vec<TargetGroup>> = match ext.as_str() {
        "json" => serde_json::from_slice::<Option<Vec<Item<true>>>>(&go_json_text(content))
            .map(|items| items.map(|v| v.into_iter().map(|i| i.0).collect()))
            .map_err(|e| {
            let full = e.to_string();
            let suffix = format!(" at line {} column {}", e.line(), e.column());
            let mut message = full.strip_suffix(&suffix).unwrap_or(&full).to_string();
            if content.starts_with(b"\xef\xbb\xbf") {
                message.push_str(
                    " (the file starts with a byte-order mark, which Go's encoding/json, and so Prometheus, refuses too)",
                );
            }
            error(e.line(), e.column(), message)
        })?,
        "yml" | "yaml" => yaml::from_slice::<Option<Vec<Item<false>>>>(content)
            .map(|items| items.map(|v| v.into_iter().map(|i| i.0).collect()))
            .map_err(|e| error(e.line, e.column, e.message))?,
        _ => return Err(error(0, 0, "not a .json, .yml or .yaml file".to_string())),
    };
    let mut groups = Vec::new();
    for mut group in parsed.unwrap_or_default() {
        group
            .labels
            .0
            .insert(FILEPATH_LABEL.to_string(), path.to_string());
        groups.push(group);
    }
    Ok(groups)
}

/// The JSON text as Go's `encoding/json` reads it, which Prometheus uses
/// for `.json` files: inside strings, each byte that does not start a
/// valid UTF-8 sequence (as `utf8.DecodeRune` sees it) becomes one U+FFFD,
/// and a `\uXXXX` surrogate escape that is not half of a valid pair
/// becomes `\ufffd` (`unquoteBytes`). serde_json would refuse both.
/// Outside strings nothing changes, so what Go refuses is still refused.
fn go_json_text(content: &[u8]) -> Cow<'_, [u8]> {
    let surrogate_escape = content.windows(4).any(|w| {
        w[0] == b'\\'
            && w[1] == b'u'
            && matches!(w[2], b'd' | b'D')
            && matches!(w[3], b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F')
    });
    if !surrogate_escape && std::str::from_utf8(content).is_ok() {
        return Cow::Borrowed(content);
    }
    let hex4 = |at: usize| -> Option<u32> {
        let digits = content.get(at..at + 4)?;
        u32::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
    };
    let mut out = Vec::with_capacity(content.len() + 16);
    let mut in_string = false;
    let mut i = 0;
    while i < content.len() {
        let b = content[i];
        if !in_string {
            in_string = b == b'"';
            out.push(b);
            i += 1;
            continue;
        }
        match b {
            b'"' => {
                in_string = false;
                out.push(b);
                i += 1;
            }
            b'\\' if content.get(i + 1) == Some(&b'u') => match hex4(i + 2) {
                Some(0xd800..=0xdbff)
                    if content.get(i + 6..i + 8) == Some(b"\\u")
                        && hex4(i + 8).is_some_and(|low| (0xdc00..=0xdfff).contains(&low)) =>
                {
                    out.extend_from_slice(&content[i..i + 12]);
                    i += 12;
                }
                Some(0xd800..=0xdfff) => {
                    out.extend_from_slice(b"\\ufffd");
                    i += 6;
                }
                _ => {
                    out.extend_from_slice(&content[i..(i + 2).min(content.len())]);
                    i += 2;
                }
            },
            b'\\' => {
                out.extend_from_slice(&content[i..(i + 2).min(content.len())]);
                i += 2;
            }
            0x80.. => {
                let width = match b {
                    0xc2..=0xdf => 2,
                    0xe0..=0xef => 3,
                    0xf0..=0xf4 => 4,
                    _ => 0,
                };
                let valid = width > 0
                    && content
                        .get(i..i + width)
                        .is_some_and(|seq| std::str::from_utf8(seq).is_ok());
                if valid {
                    out.extend_from_slice(&content[i..i + width]);
                    i += width;
                } else {
                    out.extend_from_slice("\u{fffd}".as_bytes());
                    i += 1;
                }
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targetgroup::LabelSet;

    #[test]
    fn json_file_gets_filepath_and_keeps_order() {
        let groups = parse_file(
            "/sd/a.json",
            r#"[{"targets": ["127.0.0.1:9100"], "labels": {"db_name": "프라이머리"}}, {"targets": []}]"#.as_bytes(),
        )
        .unwrap();
        assert_eq!(groups.len(), 2);
        assert_eq!(
            groups[0].labels,
            LabelSet::from([("db_name", "프라이머리"), (FILEPATH_LABEL, "/sd/a.json")])
        );
        assert_eq!(
            groups[1].labels,
            LabelSet::from([(FILEPATH_LABEL, "/sd/a.json")])
        );
    }

    #[test]
    fn filepath_label_in_file_is_overwritten() {
        let groups = parse_file(
            "/sd/a.yml",
            b"- targets: [x]\n  labels: {__meta_filepath: fake}\n",
        )
        .unwrap();
        assert_eq!(groups[0].labels.0[FILEPATH_LABEL], "/sd/a.yml");
    }

    #[test]
    fn what_rejects_a_whole_file_like_prometheus() {
        let cases: [(&str, &[u8], &str); 14] = [
            // Both mappings of a merge list set `env` in the same map.
            (
                "/sd/a.yml",
                b"- &a {labels: {env: x}}\n- &b {labels: {env: y}}\n- <<: [*a, *b]\n",
                "/sd/a.yml:1:16: [2].labels: key \"env\" already set in map",
            ),
            // Go's json.Unmarshal refuses a byte-order mark.
            (
                "/sd/a.json",
                b"\xef\xbb\xbf[]",
                "/sd/a.json:1:1: expected value",
            ),
            // yaml.v2 (strict): a key set both by a merge and explicitly
            // in a map (labels) is "already set".
            (
                "/sd/a.yml",
                b"- targets: [a]\n  labels: {<<: {env: x}, env: y}\n",
                "/sd/a.yml:2:26: [0].labels: key \"env\" already set in map",
            ),
            (
                "/sd/a.yml",
                b"- targets: [a]\n  labels: {v: !!binary 'aGVsbG8'}\n",
                "/sd/a.yml:2:15: [0].labels.v: !!binary value contains invalid base64 data",
            ),
            (
                "/sd/a.yml",
                b"- targets: [a]\n  labels: {v: !!binary /w==}\n",
                "/sd/a.yml:2:15: [0].labels.v: !!binary value is not valid UTF-8",
            ),
            (
                "/sd/a.yml",
                b"- targets: [a]\n  labels: {v: \xff}\n",
                "/sd/a.yml:2:15: invalid UTF-8",
            ),
            (
                "/sd/a.yml",
                b"- <<: [x]\n",
                "/sd/a.yml:1:7: [0]: map merge requires map or sequence of maps as the value",
            ),
            ("/sd/a.json", b"", "/sd/a.json:1:0: EOF while parsing"),
            (
                "/sd/a.json",
                b"[{\"targets\": []},\n null]",
                "/sd/a.json:2:6: nil target group item found",
            ),
            (
                "/sd/a.yml",
                b"- targets: []\n- null\n",
                "/sd/a.yml:2:3: [1]: nil target group item found",
            ),
            (
                "/sd/a.json",
                b"[{\"targets\": [\"x\"],\n \"extra\": 1}]",
                "/sd/a.json:2:8: unknown field `extra`",
            ),
            (
                "/sd/a.yml",
                b"- targets: [x]\n  labels:\n    bad-name: 1\n",
                "/sd/a.yml:3:5: [0].labels: \"bad-name\" is not a valid label name",
            ),
            (
                "/sd/a.json",
                b"[{\"targets\": [9104]}]",
                "/sd/a.json:1:18: invalid type: integer",
            ),
            (
                "/sd/a.yml",
                b"- targets: [x]\n  targets: [y]\n",
                "/sd/a.yml:2:3: [0]: duplicate field `targets`",
            ),
        ];
        for (path, content, want) in cases {
            let err = parse_file(path, content).unwrap_err().to_string();
            assert!(
                err.starts_with(want),
                "{path} {:?}\nwant: {want}\ngot:  {err}",
                String::from_utf8_lossy(content)
            );
        }
    }

    #[test]
    fn what_prometheus_accepts() {
        assert_eq!(parse_file("/a.yml", b"").unwrap(), vec![]);
        assert_eq!(parse_file("/a.json", b"null").unwrap(), vec![]);
        assert_eq!(parse_file("/a.json", b"[]").unwrap(), vec![]);
        let g = parse_file(
            "/a.YAML",
            b"- targets: [127.0.0.1:9104, ~]\n  labels: {port: 9104, n: null}\n",
        )
        .unwrap();
        assert_eq!(g[0].targets, ["127.0.0.1:9104", ""]);
        assert_eq!(g[0].labels.0["port"], "9104");
        assert_eq!(g[0].labels.0["n"], "");
        // yaml.v2 reads the first document only (issue 10).
        let g = parse_file("/a.yml", b"- targets: [a]\n---\n- targets: [b]\n").unwrap();
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].targets, ["a"]);
        let g = parse_file("/a.json", br#"[{"targets": null, "labels": null}]"#).unwrap();
        assert!(g[0].targets.is_empty());
    }

    /// Issue 10: what Prometheus 2.42 (yaml.v2) reads, read the same way.
    #[test]
    fn yaml_as_yaml_v2_reads_it() {
        let labels = |content: &[u8]| {
            let g = parse_file("/a.yml", content).unwrap();
            let mut l = g[0].labels.0.clone();
            l.remove(FILEPATH_LABEL);
            (g[0].targets.clone(), l.into_iter().collect::<Vec<_>>())
        };
        let kv = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        // A byte-order mark, UTF-8 and UTF-16.
        assert_eq!(labels(b"\xef\xbb\xbf- targets: [a]\n").0, ["a"]);
        let utf16: Vec<u8> = "\u{feff}- targets: [\u{c11c}]\n"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        assert_eq!(labels(&utf16).0, ["서"]);
        // Merge keys into a group (a struct): explicit keys after `<<`
        // override, earlier mappings of a merge list take precedence.
        let g = parse_file(
            "/a.yml",
            b"- &base {targets: [a], labels: {env: prod}}\n- <<: *base\n  targets: [b]\n",
        )
        .unwrap();
        assert_eq!(g[1].targets, ["b"]);
        assert_eq!(g[1].labels.0["env"], "prod");
        let g = parse_file(
            "/a.yml",
            b"- &a {targets: [a]}\n- &b {targets: [b], labels: {x: b}}\n- <<: [*a, *b]\n- {<<: *a, targets: [c]}\n- {targets: [c], <<: *a}\n",
        )
        .unwrap();
        assert_eq!(g[2].targets, ["a"]);
        assert_eq!(g[2].labels.0["x"], "b");
        assert_eq!(g[3].targets, ["c"]);
        // yaml.v2 applies a merge where it stands: after an explicit key,
        // the merged value replaces it.
        assert_eq!(g[4].targets, ["a"]);
        // A label map after a merged one adds to it (yaml.v2 decodes into
        // the map already there); a list replaces.
        let g = parse_file(
            "/a.yml",
            b"- &a {targets: [a], labels: {x: 1}}\n- <<: *a\n  targets: [b]\n  labels: {y: 2}\n",
        )
        .unwrap();
        assert_eq!(g[1].targets, ["b"]);
        assert_eq!(
            (g[1].labels.0["x"].as_str(), g[1].labels.0["y"].as_str()),
            ("1", "2")
        );
        // Merged label maps combine.
        let (_, l) = labels(b"- targets: [a]\n  labels: {<<: [{a: 1}, {b: 2}], c: 3}\n");
        assert_eq!(l, kv(&[("a", "1"), ("b", "2"), ("c", "3")]));
        // YAML 1.1 scalars reach strings as written; null is "".
        let (targets, l) = labels(
            b"- targets: [yes, 0x1F, 017, 1_000, 2001-12-14, ~, '~', .inf]\n  labels: {on: off, n: null, q: \"yes\", t: !!str 5}\n",
        );
        assert_eq!(
            targets,
            ["yes", "0x1F", "017", "1_000", "2001-12-14", "", "~", ".inf"]
        );
        assert_eq!(l, kv(&[("n", ""), ("on", "off"), ("q", "yes"), ("t", "5")]));
        // !!binary: the base64 decoded (Go's rules: newlines skipped).
        let (_, l) = labels(b"- labels:\n    v: !!binary |\n      aGVs\n      bG8=\n");
        assert_eq!(l, kv(&[("v", "hello")]));
        // Anchors and aliases on values and keys.
        let (targets, _) = labels(b"- targets: [&t '127.0.0.1:9100', *t]\n");
        assert_eq!(targets, ["127.0.0.1:9100", "127.0.0.1:9100"]);
    }

    /// Issue 10: Go's encoding/json turns each invalid UTF-8 byte in a
    /// string into one U+FFFD (not Rust's maximal-subpart rule), and a lone
    /// surrogate escape into U+FFFD; a valid pair decodes.
    #[test]
    fn json_strings_as_go_decodes_them() {
        let value = |raw: &[u8]| {
            let content = [br#"[{"labels": {"v": ""#.as_slice(), raw, br#""}}]"#].concat();
            let g = parse_file("/a.json", &content).unwrap();
            g[0].labels.0["v"].clone()
        };
        assert_eq!(value(b"a\xffb"), "a\u{fffd}b");
        // A truncated three-byte sequence: two bytes, two U+FFFD (Rust's
        // from_utf8_lossy would give one).
        assert_eq!(value(b"\xe2\x82"), "\u{fffd}\u{fffd}");
        assert_eq!(String::from_utf8_lossy(b"\xe2\x82"), "\u{fffd}");
        // An encoded surrogate and an overlong form: one U+FFFD a byte.
        assert_eq!(value(b"\xed\xa0\x80"), "\u{fffd}\u{fffd}\u{fffd}");
        assert_eq!(value(b"\xc0\xaf"), "\u{fffd}\u{fffd}");
        assert_eq!(value("서\u{fffd}".as_bytes()), "서\u{fffd}");
        assert_eq!(value(br"\ud800"), "\u{fffd}");
        assert_eq!(value(br"\udc00x"), "\u{fffd}x");
        assert_eq!(value(br"\ud800\u0041"), "\u{fffd}A");
        assert_eq!(value(br"\ud800\ud800\udc00"), "\u{fffd}\u{10000}");
        assert_eq!(value(br"\ud83d\ude00"), "\u{1f600}");
        assert_eq!(value(br"\\ud800"), "\\ud800");
        // Keys as Go matches them to fields; a repeat replaces.
        let g = parse_file(
            "/a.json",
            "[{\"TARGETS\": [\"a\"], \"Labels\": {\"x\": \"1\"}, \"targets\": [\"b\"], \"labelſ\": {\"y\": \"2\"}}]".as_bytes(),
        )
        .unwrap();
        assert_eq!(g[0].targets, ["b"]);
        assert_eq!(g[0].labels.0.get("x"), None);
        assert_eq!(g[0].labels.0["y"], "2");
        let err = parse_file("/a.json", "[{\"tärgets\": []}]".as_bytes()).unwrap_err();
        assert!(err.message.contains("unknown field `tärgets`"), "{err}");
        // Outside strings an invalid byte is still a syntax error.
        assert!(parse_file("/a.json", b"[\xff]").is_err());
        // Keys too: an invalid byte in a key makes it an unknown field.
        let err = parse_file("/a.json", b"[{\"t\xffrgets\": []}]").unwrap_err();
        assert!(err.message.contains("unknown field"), "{err}");
    }
}
