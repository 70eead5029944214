//! The one place that parses YAML, with Prometheus's yaml.v2
//! `UnmarshalStrict` semantics (issue 10): the first document only, YAML
//! 1.1 scalars (`yes`/`on` are booleans), merge keys (`<<`), `!!binary`,
//! a byte-order mark, duplicate keys refused, and every error at the line
//! and column of the node it is about.
//!
//! libyaml-safer (a safe port of libyaml, which yaml.v2 is a Go port of)
//! gives the events; [`tree`] composes them with positions; [`de`] is the
//! serde `Deserializer` over that tree; [`resolve`] ports yaml.v2's scalar
//! resolution.

mod de;
mod eof;
mod resolve;
mod tree;

use serde::de::DeserializeOwned;

/// A YAML tree and its writer, for `sdbridge migrate`, which reads a
/// Prometheus config into a tree (through [`from_str`], so with yaml.v2's
/// rules) to check its text edits, and writes the generated `sdbridge.yml`.
pub use serde_norway::{Mapping, Value};

/// Writes `value` as YAML (block style); the output reads back through
/// [`from_str`] (`migrate` checks that it does).
pub fn to_string<T: serde::Serialize>(value: &T) -> Result<String, String> {
    serde_norway::to_string(value).map_err(|e| e.to_string())
}

pub use tree::Mark;

mod depth;

/// A YAML parse or schema error, with the 1-based position it points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    /// 1-based line, 0 when the parser could not tell.
    pub line: usize,
    /// 1-based column, 0 when the parser could not tell.
    pub column: usize,
    /// What is wrong, after the path of the value it is about
    /// (`jobs[0].static_configs[1]: unknown field `labelz``).
    pub message: String,
}

impl YamlError {
    pub(crate) fn at(mark: Mark, message: String) -> YamlError {
        YamlError {
            line: mark.line,
            column: mark.column,
            message,
        }
    }

    /// Prefixes the message with the path of the node it was raised in.
    fn under(mut self, path: &str) -> YamlError {
        if !path.is_empty() {
            self.message = format!("{path}: {}", self.message);
        }
        self
    }
}

/// Which part of a document to deserialize, so that one bad job does not
/// hide the next: at a mapping, some entries by key (one of them narrowed
/// further by the next step); at a sequence, one item, keeping its index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Keep the entries with these keys, and `into`, whose value the next
    /// step applies to.
    Entries {
        /// Kept whole.
        keep: Vec<String>,
        /// Kept and narrowed further.
        into: String,
    },
    /// Keep only this item.
    Item(usize),
}

/// The first document of a YAML stream, parsed, with positions.
pub struct Document {
    root: tree::Node,
}

impl Document {
    /// Parses the first document of `input` (UTF-8, with or without a
    /// byte-order mark, or UTF-16 with one); later documents are not read,
    /// as in yaml.v2. An empty stream is a null document.
    pub fn parse(input: &[u8]) -> Result<Document, YamlError> {
        tree::compose(input).map(|root| Document { root })
    }

    /// The whole document as a `T`.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, YamlError> {
        self.deserialize_part(&[])
    }

    /// The whole document as a `T` whose maps stand for Prometheus's
    /// config structs (a scrape config read as a tree, as `migrate`
    /// does): yaml.v2 lets an explicit key replace one a merge key (`<<`)
    /// brought into a struct, while in a map that is an error.
    pub fn deserialize_as_structs<T: DeserializeOwned>(&self) -> Result<T, YamlError> {
        let mut budget = de::Budget::default();
        budget.maps_as_structs = true;
        self.deserialize_with(&[], &budget)
    }

    /// The part of the document that `steps` keep, as a `T`; errors name
    /// the same paths and positions as for the whole document.
    pub fn deserialize_part<T: DeserializeOwned>(&self, steps: &[Step]) -> Result<T, YamlError> {
        self.deserialize_with(steps, &de::Budget::default())
    }

    fn deserialize_with<T: DeserializeOwned>(
        &self,
        steps: &[Step],
        budget: &de::Budget,
    ) -> Result<T, YamlError> {
        let de = de::De {
            node: &self.root,
            path: de::Path::Root,
            budget,
            in_alias: false,
            steps,
            earlier: &[],
        };
        T::deserialize(de).map_err(|e| e.0)
    }

    /// The root node, for reading positions.
    pub fn root(&self) -> NodeRef<'_> {
        NodeRef(&self.root)
    }
}

/// A node of a [`Document`], for finding where a value was written.
#[derive(Clone, Copy)]
pub struct NodeRef<'a>(&'a tree::Node);

impl<'a> NodeRef<'a> {
    /// Where the node starts (an alias: where the alias is written).
    pub fn mark(&self) -> Mark {
        self.0.mark
    }

    /// A scalar's text as written.
    pub fn text(&self) -> Option<&'a str> {
        match &self.0.target().kind {
            tree::Kind::Scalar(s) => Some(&s.value),
            _ => None,
        }
    }

    /// A mapping's entries as a struct reads them (merge keys applied,
    /// the last of a repeated key); empty for anything else.
    pub fn entries(&self) -> Vec<(&'a str, NodeRef<'a>)> {
        de::struct_entries(&[self.0.target()])
            .unwrap_or_default()
            .into_iter()
            .filter_map(|e| Some((de::key_text(e.key)?, NodeRef(e.value))))
            .collect()
    }

    /// The value under `key`, as a struct reads it.
    pub fn get(&self, key: &str) -> Option<NodeRef<'a>> {
        self.entries()
            .into_iter()
            .find_map(|(k, v)| (k == key).then_some(v))
    }

    /// A sequence's items; `None` for anything else.
    pub fn items(&self) -> Option<Vec<NodeRef<'a>>> {
        match &self.0.target().kind {
            tree::Kind::Seq(items) => Some(items.iter().map(|n| NodeRef(n)).collect()),
            _ => None,
        }
    }
}

/// Parses the first YAML document of `text` into `T`, as Prometheus's
/// `yaml.UnmarshalStrict` does.
///
/// Plain scalars are handed to string fields as written (`9104` stays
/// `"9104"`, `yes` stays `"yes"`), which is what yaml.v2 does.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, YamlError> {
    from_slice(text.as_bytes())
}

/// [`from_str`] for bytes (a BOM or UTF-16 is read as libyaml reads it).
pub fn from_slice<T: DeserializeOwned>(input: &[u8]) -> Result<T, YamlError> {
    Document::parse(input)?.deserialize()
}

/// "unknown field `x`", with the closest valid key when one is close (a
/// typo), or the valid keys when there are few.
pub(crate) fn unknown_key(field: &str, expected: &[&str]) -> String {
    let closest = expected
        .iter()
        .map(|k| (strsim::damerau_levenshtein(field, k), *k))
        .filter(|(d, k)| *d <= (k.len().max(field.len()) / 4).clamp(1, 3))
        .min_by_key(|(d, _)| *d);
    match closest {
        Some((_, k)) => format!("unknown field `{field}`, did you mean `{k}`?"),
        None if expected.is_empty() => format!("unknown field `{field}`, there are no fields"),
        None if expected.len() <= 6 => {
            let list: Vec<String> = expected.iter().map(|k| format!("`{k}`")).collect();
            format!(
                "unknown field `{field}`, expected one of {}",
                list.join(", ")
            )
        }
        None => format!("unknown field `{field}`"),
    }
}

/// Deserializes a string through `parse`, failing inside the deserializer
/// so the error carries the position of the string itself (an error
/// returned after `String::deserialize` only gets the enclosing mapping's).
pub fn parse_str<'de, D, T>(d: D, parse: fn(&str) -> Result<T, String>) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct ParseVisitor<T>(fn(&str) -> Result<T, String>);

    impl<T> serde::de::Visitor<'_> for ParseVisitor<T> {
        type Value = T;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a string")
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
            (self.0)(v).map_err(E::custom)
        }
    }

    d.deserialize_str(ParseVisitor(parse))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_is_split_from_message() {
        let err = from_str::<Vec<u32>>("- 1\n- x\n").unwrap_err();
        assert_eq!((err.line, err.column), (2, 3));
        assert!(!err.message.contains("line 2"), "{}", err.message);
        assert!(err.message.contains("invalid"), "{}", err.message);
    }

    #[test]
    fn plain_scalars_keep_their_text_in_strings() {
        let v: Vec<String> = from_str("[9104, true, 1.0, 0x10]").unwrap();
        assert_eq!(v, ["9104", "true", "1.0", "0x10"]);
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Job {
        job_name: String,
        #[serde(default)]
        honor: bool,
        #[serde(default)]
        port: u16,
        #[serde(default)]
        targets: Vec<String>,
        #[serde(default)]
        labels: std::collections::BTreeMap<String, String>,
    }

    #[test]
    fn yaml_1_1_scalars_reach_typed_fields_as_in_yaml_v2() {
        let j: Job = from_str("{job_name: yes, honor: on, port: 0x10, targets: ~}").unwrap();
        assert_eq!((j.job_name.as_str(), j.honor, j.port), ("yes", true, 16));
        assert!(j.targets.is_empty());
        let j: Job = from_str("{job_name: ~, honor: ~, port: ~}").unwrap();
        assert_eq!((j.job_name.as_str(), j.honor, j.port), ("", false, 0));
        let e = from_str::<Job>("job_name: a\nhonor: 'yes'\n").unwrap_err();
        assert_eq!((e.line, e.column), (2, 8));
        assert!(
            e.message.starts_with("honor: invalid type: string \"yes\""),
            "{}",
            e.message
        );
    }

    #[test]
    fn merge_keys_as_yaml_v2_applies_them() {
        // Structs: explicit keys after `<<` override, no duplicate error.
        let jobs: Vec<Job> =
            from_str("- &b {job_name: a, port: 1}\n- {<<: *b, port: 2}\n- {port: 2, <<: *b}\n")
                .unwrap();
        assert_eq!((jobs[1].job_name.as_str(), jobs[1].port), ("a", 2));
        // Applied where it stands: after the explicit key, it replaces it.
        assert_eq!(jobs[2].port, 1);
        // Maps (strict): a key both merged and explicit is already set.
        let j: Job = from_str("job_name: a\nlabels: {<<: [{x: 1}, {y: 2}], z: 3}\n").unwrap();
        assert_eq!(j.labels.len(), 3);
        let e = from_str::<Job>("job_name: a\nlabels: {<<: {x: 1}, x: 2}\n").unwrap_err();
        assert_eq!(e.message, "labels: key \"x\" already set in map");
        assert_eq!((e.line, e.column), (2, 22));
        let e = from_str::<Job>("job_name: a\njob_name: b\n").unwrap_err();
        assert_eq!(
            (e.line, e.column, e.message.as_str()),
            (2, 1, "duplicate field `job_name`")
        );
        // A quoted "<<" is an ordinary key.
        let e = from_str::<Job>("job_name: a\n'<<': {port: 1}\n").unwrap_err();
        assert!(e.message.starts_with("unknown field `<<`"), "{}", e.message);
    }

    #[test]
    fn unknown_keys_get_the_closest_valid_key() {
        let e = from_str::<Job>("job_name: a\nlables: {}\n").unwrap_err();
        assert_eq!(e.message, "unknown field `lables`, did you mean `labels`?");
        let e = from_str::<Job>("job_name: a\nbogus: 1\n").unwrap_err();
        assert_eq!(
            e.message,
            "unknown field `bogus`, expected one of `job_name`, `honor`, `port`, `targets`, `labels`"
        );
        let many: Vec<&str> = vec!["a_sd_configs"; 7];
        assert_eq!(unknown_key("zzz", &many), "unknown field `zzz`");
    }

    #[test]
    fn utf16_with_a_byte_order_mark() {
        for big_endian in [false, true] {
            let bytes: Vec<u8> = "\u{feff}job_name: 서비스\nport: 1\n"
                .encode_utf16()
                .flat_map(|u| {
                    if big_endian {
                        u.to_be_bytes()
                    } else {
                        u.to_le_bytes()
                    }
                })
                .collect();
            let j: Job = from_slice(&bytes).unwrap();
            assert_eq!((j.job_name.as_str(), j.port), ("서비스", 1));
        }
        let j: Job = from_slice(b"\xef\xbb\xbfjob_name: a\n").unwrap();
        assert_eq!(j.job_name, "a");
    }

    /// The pre-parse checks once ran on the raw bytes, so UTF-16 input
    /// reached libyaml-safer's `panic!` on a tag before a flow comma.
    #[test]
    fn utf16_gets_the_pre_parse_checks_too() {
        let utf16 =
            |text: &str| -> Vec<u8> { text.encode_utf16().flat_map(u16::to_le_bytes).collect() };
        let e = from_slice::<serde_json::Value>(&utf16("\u{feff}a:\n  [!x, b]\n")).unwrap_err();
        assert_eq!((e.line, e.column), (2, 4));
        assert!(e.message.contains("tag"), "{}", e.message);
        let deep = format!("\u{feff}{}", "[".repeat(200));
        let e = from_slice::<serde_json::Value>(&utf16(&deep)).unwrap_err();
        assert_eq!((e.line, e.column), (1, 129));
        assert!(e.message.contains("levels deep"), "{}", e.message);
        let v: std::collections::BTreeMap<String, String> =
            from_slice(&utf16("\u{feff}a: |\n  x")).unwrap();
        assert_eq!(v["a"], "x");
    }

    #[test]
    fn alias_bombs_are_refused_as_yaml_v2_refuses_them() {
        let mut text = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let prev = (b'a' + i - 1) as char;
            let name = (b'a' + i) as char;
            text.push_str(&format!("{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
        }
        let e = from_str::<serde_json::Value>(&text).unwrap_err();
        assert!(e.message.contains("excessive aliasing"), "{}", e.message);
    }

    #[test]
    fn a_part_keeps_its_paths_and_positions() {
        let doc =
            Document::parse(b"- {job_name: a, port: x}\n- {job_name: b, port: y, honor: z}\n")
                .unwrap();
        let e = doc
            .deserialize_part::<Vec<Job>>(&[
                Step::Item(1),
                Step::Entries {
                    keep: vec!["job_name".into()],
                    into: "honor".into(),
                },
            ])
            .unwrap_err();
        assert_eq!((e.line, e.column), (2, 33));
        assert!(
            e.message.starts_with("[1].honor: invalid type"),
            "{}",
            e.message
        );
        let items = doc.root().items().unwrap();
        let name = items[1].get("job_name").unwrap();
        assert_eq!(
            (name.text(), name.mark().line, name.mark().column),
            (Some("b"), 2, 14)
        );
    }

    /// Issue 10: Prometheus's yaml.v2 reads the first document and ignores
    /// the rest; a file_sd file with more than one is accepted.
    #[test]
    fn only_the_first_document_counts() {
        let v: Vec<String> = from_str("- a\n---\n- b\n").unwrap();
        assert_eq!(v, ["a"]);
        let v: Vec<String> = from_str("---\n- a\n...\n---\n[unclosed\n").unwrap();
        assert_eq!(v, ["a"]);
        let v: Option<Vec<String>> = from_str("").unwrap();
        assert_eq!(v, None);
    }
}
