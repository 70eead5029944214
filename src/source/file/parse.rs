//! Reading one file_sd file as Prometheus's `discovery/file` `readFile`
//! does.

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

/// One group of a file; in JSON a `null` fails inside the parser, so the
/// error names the item's line and column.
struct Item(TargetGroup);

impl<'de> serde::Deserialize<'de> for Item {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ItemVisitor;

        impl<'de> serde::de::Visitor<'de> for ItemVisitor {
            type Value = Item;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a target group")
            }

            fn visit_none<E: serde::de::Error>(self) -> Result<Item, E> {
                Err(E::custom("nil target group item found"))
            }

            fn visit_unit<E: serde::de::Error>(self) -> Result<Item, E> {
                Err(E::custom("nil target group item found"))
            }

            fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Item, D::Error> {
                serde::Deserialize::deserialize(d).map(Item)
            }
        }

        d.deserialize_option(ItemVisitor)
    }
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
    let parsed: Option<Vec<Item>> = match ext.as_str() {
        "json" => serde_json::from_slice(content).map_err(|e| {
            let full = e.to_string();
            let suffix = format!(" at line {} column {}", e.line(), e.column());
            let message = full.strip_suffix(&suffix).unwrap_or(&full).to_string();
            error(e.line(), e.column(), message)
        })?,
        "yml" | "yaml" => {
            let text = std::str::from_utf8(content)
                .map_err(|e| error(0, 0, format!("invalid UTF-8: {e}")))?;
            // serde_norway gives no position for an error raised on a
            // `null`, so the YAML case names none (JSON's names the item).
            let items: Option<Vec<Option<TargetGroup>>> =
                yaml::from_str(text).map_err(|e| error(e.line, e.column, e.message))?;
            match items {
                None => None,
                Some(items) => Some(
                    items
                        .into_iter()
                        .map(|g| g.map(Item))
                        .collect::<Option<Vec<Item>>>()
                        .ok_or_else(|| error(0, 0, "nil target group item found".to_string()))?,
                ),
            }
        }
        _ => return Err(error(0, 0, "not a .json, .yml or .yaml file".to_string())),
    };
    let mut groups = Vec::new();
    for Item(mut group) in parsed.unwrap_or_default() {
        group
            .labels
            .0
            .insert(FILEPATH_LABEL.to_string(), path.to_string());
        groups.push(group);
    }
    Ok(groups)
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
        let cases: [(&str, &[u8], &str); 7] = [
            ("/sd/a.json", b"", "/sd/a.json:1:0: EOF while parsing"),
            (
                "/sd/a.json",
                b"[{\"targets\": []},\n null]",
                "/sd/a.json:2:6: nil target group item found",
            ),
            (
                "/sd/a.yml",
                b"- targets: []\n- null\n",
                "/sd/a.yml: nil target group item found",
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
                "/sd/a.yml:1:3: [0]: duplicate field `targets`",
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
}
