//! Target groups as Prometheus reads them (`discovery/targetgroup`) and as
//! HTTP SD serves them: `{"targets": [...], "labels": {...}}`.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
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

/// Target groups serialized once: each group preceded by a comma
/// (`,{...},{...}`), so a job's body is `[`, its fragments in order (the
/// first without its comma), `]`, and is served as that chain of shared
/// bytes ([`crate::chain::Chain`]) without being copied together. Sources
/// build it; the merger and the snapshots share the same bytes.
///
/// Most sources belong to one job and write its name in. Consul's watcher
/// is shared by every job with the same block, so its fragments leave the
/// `__meta_sdbridge_job` value empty and note where it goes (`holes`); a
/// job's chain then splices its name in as segments of their own.
#[derive(Debug, Clone, Default)]
pub struct Fragment {
    /// The groups as served, each preceded by a comma.
    json: Bytes,
    /// Offsets into `json` where the JSON-escaped job name goes, ascending:
    /// one per group, or none when the job name is already in `json`.
    holes: Vec<usize>,
    /// Groups in `json`.
    groups: usize,
    /// Targets in `json`, for metrics and the status page.
    targets: usize,
    /// xxh3-64 of `json`: where gzip chunks end is decided by content
    /// ([`crate::gzip`]), so every replica cuts the same chunks.
    hash: u64,
}

impl PartialEq for Fragment {
    /// Same groups, as served (the hash follows from the bytes).
    fn eq(&self, other: &Fragment) -> bool {
        self.json == other.json && self.holes == other.holes
    }
}

impl Eq for Fragment {}

impl Fragment {
    /// Serializes `groups` as job `job` serves them; each group's
    /// `__meta_sdbridge_job` replaces any label of that name the input
    /// carried.
    pub fn new(groups: &[TargetGroup], job: &str) -> Fragment {
        // Writing a string into a Vec cannot fail.
        let mut quoted = Vec::with_capacity(job.len() + 2);
        let _ = serde_json::to_writer(&mut quoted, job);
        Fragment::write(groups, Some(&quoted))
    }

    /// Serializes `groups` for any job: the job's name is spliced in where
    /// a job serves them.
    pub fn job_free(groups: &[TargetGroup]) -> Fragment {
        Fragment::write(groups, None)
    }

    fn write(groups: &[TargetGroup], quoted_job: Option<&[u8]>) -> Fragment {
        let mut json = Vec::with_capacity(groups.len() * 160);
        let mut holes = Vec::new();
        for group in groups {
            json.push(b',');
            let hole = write_group(&mut json, group, quoted_job.unwrap_or(b"\"\""));
            if quoted_job.is_none() {
                holes.push(hole);
            }
        }
        // Kept for as long as the part is served: give back the growth
        // slack (`Bytes` keeps a `Vec`'s capacity).
        json.shrink_to_fit();
        Fragment {
            hash: xxhash_rust::xxh3::xxh3_64(&json),
            json: Bytes::from(json),
            holes,
            groups: groups.len(),
            targets: groups.iter().map(|g| g.targets.len()).sum(),
        }
    }

    /// The groups back, parsed (job label as written, empty when
    /// job-free): for tests.
    #[cfg(test)]
    pub fn parse(&self) -> Vec<TargetGroup> {
        let array = [b"[", &self.served_joined(true, &Bytes::new())[..], b"]"].concat();
        serde_json::from_slice(&array).expect("a fragment is valid JSON")
    }

    /// Appends the bytes served under `job` (escaped, as
    /// [`escape_job`] makes it) to `out`: with the leading comma, or
    /// without it when the fragment comes first in a body. Shared, not
    /// copied: one segment, or the job's name spliced in as a segment of
    /// its own before each group's closing quote.
    pub fn served(&self, first: bool, job: &Bytes, out: &mut Vec<Bytes>) {
        let skip = usize::from(first).min(self.json.len());
        let mut at = skip;
        for &hole in &self.holes {
            out.push(self.json.slice(at..hole));
            out.push(job.clone());
            at = hole;
        }
        out.push(self.json.slice(at..));
    }

    /// [`Fragment::served`] in one buffer.
    pub fn served_joined(&self, first: bool, job: &Bytes) -> Bytes {
        let mut segments = Vec::new();
        self.served(first, job, &mut segments);
        crate::chain::Chain::new(segments).to_bytes()
    }

    /// A hash of the content: the bytes, and whether the job's name is
    /// spliced in.
    pub fn content_hash(&self) -> u64 {
        self.hash ^ u64::from(!self.holes.is_empty())
    }

    /// Length of the served bytes (leading comma included, job name not).
    pub fn len(&self) -> usize {
        self.json.len()
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
}

/// `job` as it appears inside a JSON string (without the quotes), to
/// splice into job-free fragments.
pub fn escape_job(job: &str) -> Bytes {
    let quoted = serde_json::to_vec(job).unwrap_or_default();
    let end = quoted.len().saturating_sub(1);
    Bytes::from(quoted).slice(1.min(end)..end)
}

/// Writes one group as `serde_json` writes a map in compact form, labels
/// sorted, with `"__meta_sdbridge_job":<quoted_job>` at its sorted place;
/// returns the offset just after the value's opening quote (where a
/// job-free fragment's name goes).
fn write_group(out: &mut Vec<u8>, group: &TargetGroup, quoted_job: &[u8]) -> usize {
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
        out.extend_from_slice(b"\":");
        let at = out.len() + 1;
        out.extend_from_slice(quoted_job);
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

    /// `groups` as served first in a body of `job`: comma-separated JSON
    /// objects.
    fn served(groups: &[TargetGroup], job: &str) -> String {
        let baked = Fragment::new(groups, job).served_joined(true, &Bytes::new());
        let spliced = Fragment::job_free(groups).served_joined(true, &escape_job(job));
        assert_eq!(baked, spliced, "written in or spliced in, the same bytes");
        String::from_utf8(baked.to_vec()).unwrap()
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
        let one = r#"{"targets":["127.0.0.1:9104"],"labels":{"__a":"x","__meta_sdbridge_job":"mysql","dbms":"MySQL","service_name":"My서비스"}}"#;
        assert_eq!(
            served(&[g.clone(), g.clone()], "mysql"),
            format!("{one},{one}")
        );
        let f = Fragment::new(&[g], "mysql");
        assert_eq!(
            &f.served_joined(false, &Bytes::new())[..],
            format!(",{one}").as_bytes()
        );
    }

    #[test]
    fn job_label_from_input_is_replaced_and_empty_labels_still_written() {
        let g = TargetGroup::new(["a"], LabelSet::from([(JOB_LABEL, "spoofed"), ("z", "1")]));
        assert_eq!(
            served(&[g, TargetGroup::default()], "j"),
            r#"{"targets":["a"],"labels":{"__meta_sdbridge_job":"j","z":"1"}},{"targets":[],"labels":{"__meta_sdbridge_job":"j"}}"#
        );
    }

    #[test]
    fn fragment_writes_any_job_name_at_the_sorted_place() {
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
        for job in ["mysql", "a\"b\\c", "서비스 \u{1F600}\n", ""] {
            let fragment = Fragment::new(&groups, job);
            assert_eq!((fragment.groups(), fragment.targets()), (3, 3));
            let text = served(&groups, job);
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
        assert!(Fragment::new(&[], "j").is_empty());
        assert!(Fragment::job_free(&[])
            .served_joined(true, &escape_job("j"))
            .is_empty());
    }

    #[test]
    fn fragments_compare_and_hash_by_content() {
        let g = [TargetGroup::new(["127.0.0.1:1"], LabelSet::default())];
        let (a, b) = (Fragment::new(&g, "j"), Fragment::new(&g, "j"));
        assert_eq!(a, b);
        assert_eq!(a.content_hash(), b.content_hash());
        assert_ne!(a, Fragment::new(&g, "k"));
        assert_ne!(a.content_hash(), Fragment::new(&g, "k").content_hash());
        // Job "" written in, and job-free: the same bytes, not the same
        // content (one gets a name spliced in).
        let (empty, free) = (Fragment::new(&g, ""), Fragment::job_free(&g));
        assert_ne!(empty, free);
        assert_ne!(empty.content_hash(), free.content_hash());
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
            // Written for the job, or job-free with the name spliced in.
            let fragments: Vec<std::sync::Arc<Fragment>> = parts
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    std::sync::Arc::new(if i % 2 == 0 {
                        Fragment::new(p, &job)
                    } else {
                        Fragment::job_free(p)
                    })
                })
                .collect();
            let rendered = crate::merge::render(fragments.iter(), &escape_job(&job), None);
            let body = rendered.body.to_bytes();
            prop_assert_eq!(crate::gzip::gunzip(&rendered.compress().to_bytes()), body.to_vec());
            let groups: Vec<TargetGroup> = parts.concat();
            prop_assert_eq!(rendered.groups, groups.len());
            let url = "http://127.0.0.1:9412/http_sd";
            let back = http_sd::parse(url, &body);
            prop_assert_eq!(back, Ok(read_back(&groups, &job, URL_LABEL, url)));
            let path = "/sd/served.json";
            let back = parse_file(path, &body);
            prop_assert_eq!(back, Ok(read_back(&groups, &job, FILEPATH_LABEL, path)));
        }
    }
}
