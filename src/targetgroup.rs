//! Target groups as Prometheus reads them (`discovery/targetgroup`) and as
//! HTTP SD serves them: `{"targets": [...], "labels": {...}}`.

use std::collections::BTreeMap;
use std::fmt;

use bytes::{Bytes, BytesMut};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

/// The label every served group carries so consumers of the merged
/// `/http_sd` can tell jobs apart.
pub const JOB_LABEL: &str = "__meta_sdbridge_job";

/// Whether `name` is a valid Prometheus 2.x label name
/// (`[a-zA-Z_][a-zA-Z0-9_]*`); one invalid name makes Prometheus reject a
/// whole HTTP SD answer.
pub fn is_valid_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphabetic() || b == b'_' => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Labels keyed by name. Sorted, so serialization is deterministic and
/// matches Go's `encoding/json` map order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSet(pub BTreeMap<String, String>);

impl LabelSet {
    /// Number of labels.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no labels.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<const N: usize> From<[(&str, &str); N]> for LabelSet {
    fn from(pairs: [(&str, &str); N]) -> Self {
        LabelSet(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }
}

/// Parses like `model.LabelSet`: names must be valid, a `null` value is the
/// empty string; a repeated name is an error in YAML (`yaml.UnmarshalStrict`,
/// refused by [`crate::yaml`]) and the last value in JSON (`json.Unmarshal`).
impl<'de> Deserialize<'de> for LabelSet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LabelSetVisitor;

        impl<'de> Visitor<'de> for LabelSetVisitor {
            type Value = LabelSet;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of label names to values")
            }

            fn visit_unit<E: de::Error>(self) -> Result<LabelSet, E> {
                Ok(LabelSet::default())
            }

            fn visit_none<E: de::Error>(self) -> Result<LabelSet, E> {
                Ok(LabelSet::default())
            }

            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<LabelSet, D::Error> {
                d.deserialize_map(self)
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<LabelSet, A::Error> {
                let mut labels = BTreeMap::new();
                while let Some(name) = map.next_key::<String>()? {
                    if !is_valid_label_name(&name) {
                        return Err(de::Error::custom(format!(
                            "{name:?} is not a valid label name"
                        )));
                    }
                    let value = map.next_value::<Option<String>>()?.unwrap_or_default();
                    // JSON: the last one wins, as in Go's encoding/json
                    // (YAML: the reader refuses the repeat, as yaml.v2's
                    // UnmarshalStrict does).
                    labels.insert(name, value);
                }
                Ok(LabelSet(labels))
            }
        }

        deserializer.deserialize_option(LabelSetVisitor)
    }
}

/// One target group. The same shape is used for `static_configs` entries,
/// file_sd file entries and (as output) HTTP SD entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetGroup {
    /// `__address__` values; a `null` entry is the empty string, as in Go.
    #[serde(default, deserialize_with = "deserialize_targets")]
    pub targets: Vec<String>,
    /// Labels shared by every target of the group.
    #[serde(default)]
    pub labels: LabelSet,
}

/// `targets` as Go reads a `[]string`: `null` is empty, a `null` entry
/// the empty string.
pub fn deserialize_targets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let targets = Option::<Vec<Option<String>>>::deserialize(d)?;
    Ok(targets
        .unwrap_or_default()
        .into_iter()
        .map(Option::unwrap_or_default)
        .collect())
}

impl TargetGroup {
    /// A group from targets and labels, for tests and static inputs.
    pub fn new<T: Into<String>>(targets: impl IntoIterator<Item = T>, labels: LabelSet) -> Self {
        TargetGroup {
            targets: targets.into_iter().map(Into::into).collect(),
            labels,
        }
    }
}

/// Target groups serialized once, for any job: comma-separated JSON
/// objects (no brackets) whose `__meta_sdbridge_job` value is left empty,
/// with the offsets where a job's name goes. Sources build it; the merger
/// keeps the same bytes (shared, not copied) and serves them under a job by
/// copying with the name spliced in, so it never does JSON work and never
/// holds the parsed groups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fragment {
    /// The JSON, with every job value empty (`"__meta_sdbridge_job":""`).
    json: Bytes,
    /// Offsets into `json` where the JSON-escaped job name goes, ascending:
    /// one per group, or none when the job name is already in `json`.
    holes: Vec<usize>,
    /// Groups in `json`.
    groups: usize,
    /// Targets in `json`, for metrics and the status page.
    targets: usize,
}

impl Fragment {
    /// Serializes `groups`; each group's `__meta_sdbridge_job` replaces any
    /// label of that name the input carried.
    pub fn new(groups: &[TargetGroup]) -> Fragment {
        let mut json = Vec::with_capacity(groups.len() * 160);
        let mut holes = Vec::with_capacity(groups.len());
        for (i, group) in groups.iter().enumerate() {
            if i > 0 {
                json.push(b',');
            }
            holes.push(write_group(&mut json, group));
        }
        // Kept for as long as the part is served: give back the growth
        // slack (`Bytes` keeps a `Vec`'s capacity).
        json.shrink_to_fit();
        Fragment {
            json: Bytes::from(json),
            holes,
            groups: groups.len(),
            targets: groups.iter().map(|g| g.targets.len()).sum(),
        }
    }

    /// Groups that are already served under their job (the inside of a
    /// job's body, for the all-jobs body).
    pub fn verbatim(json: Bytes, groups: usize, targets: usize) -> Fragment {
        Fragment {
            json,
            holes: Vec::new(),
            groups,
            targets,
        }
    }

    /// The groups back, parsed (job label empty): for tests.
    #[cfg(test)]
    pub fn parse(&self) -> Vec<TargetGroup> {
        let array = [b"[", &self.json[..], b"]"].concat();
        serde_json::from_slice(&array).expect("a fragment is valid JSON")
    }

    /// Number of groups.
    pub fn groups(&self) -> usize {
        self.groups
    }

    /// Number of targets over all groups.
    pub fn targets(&self) -> usize {
        self.targets
    }

    /// Whether there is no group.
    pub fn is_empty(&self) -> bool {
        self.json.is_empty()
    }

    /// Length of the fragment served under a job whose escaped name is
    /// `job_len` bytes long.
    pub fn len_for(&self, job_len: usize) -> usize {
        self.json.len() + self.holes.len() * job_len
    }

    /// Appends the fragment as served under `job` (as made by
    /// [`EscapedJob::new`]).
    pub fn write_for(&self, out: &mut BytesMut, job: &EscapedJob) {
        let mut at = 0;
        for &hole in &self.holes {
            out.extend_from_slice(&self.json[at..hole]);
            out.extend_from_slice(&job.0);
            at = hole;
        }
        out.extend_from_slice(&self.json[at..]);
    }
}

/// A job name as it appears inside a JSON string (without the quotes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EscapedJob(Vec<u8>);

impl EscapedJob {
    /// Escapes `job` as `serde_json` would.
    pub fn new(job: &str) -> EscapedJob {
        let quoted = serde_json::to_vec(job).unwrap_or_default();
        EscapedJob(
            quoted
                .get(1..quoted.len().saturating_sub(1))
                .unwrap_or_default()
                .to_vec(),
        )
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the name is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Writes one group as `serde_json` writes a map in compact form, labels
/// sorted, with `"__meta_sdbridge_job":""` at its sorted place; returns the
/// offset between that value's quotes.
fn write_group(out: &mut Vec<u8>, group: &TargetGroup) -> usize {
    // Writing strings into a Vec cannot fail.
    out.extend_from_slice(b"{\"targets\":");
    let _ = serde_json::to_writer(&mut *out, &group.targets);
    out.extend_from_slice(b",\"labels\":{");
    let mut hole = None;
    let mut first = true;
    let write_job = |out: &mut Vec<u8>, first: &mut bool| {
        if !*first {
            out.push(b',');
        }
        *first = false;
        out.extend_from_slice(b"\"");
        out.extend_from_slice(JOB_LABEL.as_bytes());
        out.extend_from_slice(b"\":\"");
        let at = out.len();
        out.push(b'"');
        at
    };
    for (name, value) in &group.labels.0 {
        if hole.is_none() && name.as_str() >= JOB_LABEL {
            hole = Some(write_job(out, &mut first));
            if name == JOB_LABEL {
                continue;
            }
        }
        if !first {
            out.push(b',');
        }
        first = false;
        let _ = serde_json::to_writer(&mut *out, name);
        out.push(b':');
        let _ = serde_json::to_writer(&mut *out, value);
    }
    let hole = match hole {
        Some(at) => at,
        None => write_job(out, &mut first),
    };
    out.extend_from_slice(b"}}");
    hole
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `groups` as served under `job`: comma-separated JSON objects.
    fn write_fragment(out: &mut BytesMut, groups: &[TargetGroup], job: &str) {
        Fragment::new(groups).write_for(out, &EscapedJob::new(job));
    }

    #[test]
    fn label_names_follow_prometheus_2() {
        for ok in ["a", "_", "__meta_x", "A9_b", "db_name"] {
            assert!(is_valid_label_name(ok), "{ok}");
        }
        for bad in ["", "9a", "a-b", "a.b", "서비스", "a b"] {
            assert!(!is_valid_label_name(bad), "{bad}");
        }
    }

    #[test]
    fn served_json_is_sorted_unescaped_and_carries_job() {
        let g = TargetGroup::new(
            ["127.0.0.1:9104"],
            LabelSet::from([
                ("service_name", "My서비스"),
                ("dbms", "MySQL"),
                ("__a", "x"),
            ]),
        );
        let mut out = BytesMut::new();
        write_fragment(&mut out, &[g.clone(), g], "mysql");
        let one = r#"{"targets":["127.0.0.1:9104"],"labels":{"__a":"x","__meta_sdbridge_job":"mysql","dbms":"MySQL","service_name":"My서비스"}}"#;
        assert_eq!(
            String::from_utf8(out.to_vec()).unwrap(),
            format!("{one},{one}")
        );
    }

    #[test]
    fn job_label_from_input_is_replaced_and_empty_labels_still_written() {
        let g = TargetGroup::new(["a"], LabelSet::from([(JOB_LABEL, "spoofed"), ("z", "1")]));
        let mut out = BytesMut::new();
        write_fragment(&mut out, &[g, TargetGroup::default()], "j");
        assert_eq!(
            String::from_utf8(out.to_vec()).unwrap(),
            r#"{"targets":["a"],"labels":{"__meta_sdbridge_job":"j","z":"1"}},{"targets":[],"labels":{"__meta_sdbridge_job":"j"}}"#
        );
    }

    #[test]
    fn fragment_splices_any_job_name_at_the_sorted_place() {
        let groups = [
            TargetGroup::new(
                ["127.0.0.1:1", "127.0.0.1:2"],
                LabelSet::from([("__a", "1"), ("zz", "\"q\"")]),
            ),
            TargetGroup::new(
                ["127.0.0.1:3"],
                LabelSet::from([(JOB_LABEL, "spoofed"), ("__meta_z", "2")]),
            ),
            TargetGroup::default(),
        ];
        let fragment = Fragment::new(&groups);
        assert_eq!((fragment.groups(), fragment.targets()), (3, 3));
        for job in ["mysql", "a\"b\\c", "서비스 \u{1F600}\n", ""] {
            let escaped = EscapedJob::new(job);
            let mut out = BytesMut::new();
            fragment.write_for(&mut out, &escaped);
            assert_eq!(out.len(), fragment.len_for(escaped.len()));
            let text = String::from_utf8(out.to_vec()).unwrap();
            let parsed: serde_json::Value = serde_json::from_str(&format!("[{text}]")).unwrap();
            assert_eq!(
                parsed,
                serde_json::json!([
                    {"targets": ["127.0.0.1:1", "127.0.0.1:2"], "labels": {"__a": "1", JOB_LABEL: job, "zz": "\"q\""}},
                    {"targets": ["127.0.0.1:3"], "labels": {JOB_LABEL: job, "__meta_z": "2"}},
                    {"targets": [], "labels": {JOB_LABEL: job}},
                ]),
                "{text}"
            );
            // Sorted as Go's encoding/json sorts map keys.
            let first = &text[..text.find('}').unwrap()];
            assert!(first.find("__a").unwrap() < first.find(JOB_LABEL).unwrap());
            assert!(first.find(JOB_LABEL).unwrap() < first.find("zz").unwrap());
        }
        assert!(Fragment::new(&[]).is_empty());
        let verbatim = Fragment::verbatim(Bytes::from_static(b"{}"), 1, 0);
        let mut out = BytesMut::new();
        verbatim.write_for(&mut out, &EscapedJob::new("ignored"));
        assert_eq!(&out[..], b"{}");
    }

    #[test]
    fn labelset_rejects_invalid_names_and_repeats() {
        let err = serde_json::from_str::<LabelSet>(r#"{"a.b": "1"}"#).unwrap_err();
        assert!(err
            .to_string()
            .contains("\"a.b\" is not a valid label name"));
        let err = crate::yaml::from_str::<LabelSet>("a: 1\na: 2\n").unwrap_err();
        assert_eq!((err.line, err.column), (2, 1));
        assert_eq!(err.message, "key \"a\" already set in map");
        // Go's encoding/json keeps the last value of a repeated key.
        let last: LabelSet = serde_json::from_str(r#"{"a": "1", "a": "2"}"#).unwrap();
        assert_eq!(last, LabelSet::from([("a", "2")]));
        let nulls: LabelSet = serde_json::from_str(r#"{"a": null}"#).unwrap();
        assert_eq!(nulls, LabelSet::from([("a", "")]));
    }
}

/// Properties: whatever groups a source produces, the body sdbridge serves
/// reads back as the same groups, by Prometheus's HTTP SD reader and as a
/// file_sd JSON file.
#[cfg(test)]
mod properties {
    use proptest::collection::{btree_map, vec};
    use proptest::prelude::*;

    use super::*;
    use crate::source::file::parse::parse_file;
    use crate::source::file::FILEPATH_LABEL;
    use crate::source::http_sd::{self, URL_LABEL};

    fn label_name() -> impl Strategy<Value = String> {
        prop_oneof![
            8 => "[a-zA-Z_][a-zA-Z0-9_]{0,12}",
            // Labels the readers and the merger set themselves.
            1 => Just(JOB_LABEL.to_string()),
            1 => Just(FILEPATH_LABEL.to_string()),
            1 => Just(URL_LABEL.to_string()),
        ]
    }

    fn group() -> impl Strategy<Value = TargetGroup> {
        (
            vec(any::<String>(), 0..4),
            btree_map(label_name(), any::<String>(), 0..6),
        )
            .prop_map(|(targets, labels)| TargetGroup {
                targets,
                labels: LabelSet(labels),
            })
    }

    /// `groups` as a reader returns them: the job label, then its own.
    fn read_back(groups: &[TargetGroup], job: &str, label: &str, value: &str) -> Vec<TargetGroup> {
        groups
            .iter()
            .cloned()
            .map(|mut g| {
                g.labels.0.insert(JOB_LABEL.to_string(), job.to_string());
                g.labels.0.insert(label.to_string(), value.to_string());
                g
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn served_groups_parse_back_as_http_sd_and_file_sd(
            parts in vec(vec(group(), 0..4), 0..4),
            job in any::<String>(),
        ) {
            // One fragment per part, as the merger holds them.
            let fragments: Vec<Fragment> = parts.iter().map(|p| Fragment::new(p)).collect();
            let rendered = crate::merge::render(fragments.iter(), &EscapedJob::new(&job), None);
            let groups: Vec<TargetGroup> = parts.concat();
            prop_assert_eq!(rendered.groups, groups.len());
            let url = "http://127.0.0.1:9412/http_sd";
            let back = http_sd::parse(url, &rendered.body);
            prop_assert_eq!(back, Ok(read_back(&groups, &job, URL_LABEL, url)));
            let path = "/sd/served.json";
            let back = parse_file(path, &rendered.body);
            prop_assert_eq!(back, Ok(read_back(&groups, &job, FILEPATH_LABEL, path)));
        }
    }
}
