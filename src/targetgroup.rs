//! Target groups as Prometheus reads them (`discovery/targetgroup`) and as
//! HTTP SD serves them: `{"targets": [...], "labels": {...}}`.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

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
/// empty string, and (as `yaml.UnmarshalStrict` does) a repeated key is an
/// error.
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
                    if labels.insert(name.clone(), value).is_some() {
                        return Err(de::Error::custom(format!(
                            "label {name:?} is set more than once"
                        )));
                    }
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

fn deserialize_targets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
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

/// A group as served: its own labels plus `__meta_sdbridge_job`, which
/// replaces any label of that name the input carried.
pub struct ServedGroup<'a> {
    /// The group to serve.
    pub group: &'a TargetGroup,
    /// The job it is served under.
    pub job: &'a str,
}

impl Serialize for ServedGroup<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("targets", &self.group.targets)?;
        map.serialize_entry(
            "labels",
            &WithJob {
                labels: &self.group.labels,
                job: self.job,
            },
        )?;
        map.end()
    }
}

struct WithJob<'a> {
    labels: &'a LabelSet,
    job: &'a str,
}

impl Serialize for WithJob<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        let mut job_written = false;
        for (name, value) in &self.labels.0 {
            if !job_written && name.as_str() >= JOB_LABEL {
                map.serialize_entry(JOB_LABEL, self.job)?;
                job_written = true;
                if name == JOB_LABEL {
                    continue;
                }
            }
            map.serialize_entry(name, value)?;
        }
        if !job_written {
            map.serialize_entry(JOB_LABEL, self.job)?;
        }
        map.end()
    }
}

/// Appends `groups` to `out` as comma-separated JSON objects (no brackets),
/// the unit the merger concatenates into bodies.
pub fn write_fragment(out: &mut Vec<u8>, groups: &[TargetGroup], job: &str) {
    for (i, group) in groups.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // Serializing strings and maps into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, &ServedGroup { group, job });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut out = Vec::new();
        write_fragment(&mut out, &[g.clone(), g], "mysql");
        let one = r#"{"targets":["127.0.0.1:9104"],"labels":{"__a":"x","__meta_sdbridge_job":"mysql","dbms":"MySQL","service_name":"My서비스"}}"#;
        assert_eq!(String::from_utf8(out).unwrap(), format!("{one},{one}"));
    }

    #[test]
    fn job_label_from_input_is_replaced_and_empty_labels_still_written() {
        let g = TargetGroup::new(["a"], LabelSet::from([(JOB_LABEL, "spoofed"), ("z", "1")]));
        let mut out = Vec::new();
        write_fragment(&mut out, &[g, TargetGroup::default()], "j");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"targets":["a"],"labels":{"__meta_sdbridge_job":"j","z":"1"}},{"targets":[],"labels":{"__meta_sdbridge_job":"j"}}"#
        );
    }

    #[test]
    fn labelset_rejects_invalid_names_and_repeats() {
        let err = serde_json::from_str::<LabelSet>(r#"{"a.b": "1"}"#).unwrap_err();
        assert!(err
            .to_string()
            .contains("\"a.b\" is not a valid label name"));
        let err = crate::yaml::from_str::<LabelSet>("a: 1\na: 2\n").unwrap_err();
        assert!(err.message.contains("more than once"), "{}", err.message);
        let nulls: LabelSet = serde_json::from_str(r#"{"a": null}"#).unwrap();
        assert_eq!(nulls, LabelSet::from([("a", "")]));
    }
}
