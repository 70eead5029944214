//! One `relabel_configs` rule as Prometheus 2.42 reads it
//! (`relabel.Config.UnmarshalYAML`): its fields, defaults and checks, with
//! Prometheus's messages, each at the line and column of the rule (or of
//! the value it is about).
//!
//! Prometheus tells a field left out from one set to its default by
//! comparing values (`separator: ;` counts as not set), except for
//! `regex`, which it compares by pointer (any `regex` written counts as
//! set), and `source_labels`, where a written list counts even if empty
//! (`null` does not). A `null` string field is the empty string, and a
//! `null` regex the empty regex (matching only ""), as in yaml.v2.

use std::fmt;
use std::sync::OnceLock;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::expand::Template;
use super::re2::Regexp;
use crate::targetgroup::is_valid_label_name;

/// The default `regex`.
pub const DEFAULT_REGEX: &str = "(.*)";
/// The default `separator`.
pub const DEFAULT_SEPARATOR: &str = ";";
/// The default `replacement`.
pub const DEFAULT_REPLACEMENT: &str = "$1";

/// `relabel.Action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Writes `replacement`, expanded, to `target_label` if `regex` matches.
    Replace,
    /// Drops the target unless `regex` matches the source value.
    Keep,
    /// Drops the target if `regex` matches the source value.
    Drop,
    /// Drops the target unless the source value equals `target_label`'s.
    KeepEqual,
    /// Drops the target if the source value equals `target_label`'s.
    DropEqual,
    /// Sets `target_label` to the MD5 of the source value mod `modulus`.
    HashMod,
    /// Copies labels whose names `regex` matches to `replacement` names.
    LabelMap,
    /// Removes labels whose names `regex` matches.
    LabelDrop,
    /// Removes labels whose names `regex` does not match.
    LabelKeep,
    /// Sets `target_label` to the source value in lower case.
    Lowercase,
    /// Sets `target_label` to the source value in upper case.
    Uppercase,
}

impl Action {
    /// Prometheus's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Replace => "replace",
            Action::Keep => "keep",
            Action::Drop => "drop",
            Action::KeepEqual => "keepequal",
            Action::DropEqual => "dropequal",
            Action::HashMod => "hashmod",
            Action::LabelMap => "labelmap",
            Action::LabelDrop => "labeldrop",
            Action::LabelKeep => "labelkeep",
            Action::Lowercase => "lowercase",
            Action::Uppercase => "uppercase",
        }
    }

    /// `Action.UnmarshalYAML`: case-insensitive (Go's `strings.ToLower`).
    fn parse(s: &str) -> Result<Action, String> {
        let mut lower = String::new();
        super::case::to_lower(s, &mut lower);
        let all = [
            Action::Replace,
            Action::Keep,
            Action::Drop,
            Action::KeepEqual,
            Action::DropEqual,
            Action::HashMod,
            Action::LabelMap,
            Action::LabelDrop,
            Action::LabelKeep,
            Action::Lowercase,
            Action::Uppercase,
        ];
        all.into_iter()
            .find(|a| a.as_str() == lower)
            .ok_or_else(|| format!("unknown relabel action {s:?}"))
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One validated rule (Prometheus's `relabel.Config`), its regex compiled
/// and its templates parsed.
#[doc(alias = "RelabelConfig")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Labels whose values, joined by `separator`, are the source value.
    pub source_labels: Vec<String>,
    /// Between the source labels' values.
    pub separator: String,
    /// Anchored as Prometheus anchors it.
    pub regex: Regexp,
    /// For `hashmod`.
    pub modulus: u64,
    /// As written; a template for `replace`.
    pub target_label: Template,
    /// As written; a template for `replace` and `labelmap`.
    pub replacement: Template,
    /// What the rule does.
    pub action: Action,
}

/// The fields as written, before Prometheus's checks.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    /// `None` if left out or `null` (Go's nil slice).
    #[serde(default, deserialize_with = "label_names")]
    source_labels: Option<Vec<String>>,
    /// `null` is "" (then not the default: a field set).
    #[serde(default = "default_separator")]
    separator: String,
    /// `None` if left out; compiled where written, so an error points
    /// at it.
    #[serde(default, deserialize_with = "regex")]
    regex: Option<Regexp>,
    /// 0 if left out, as in Go.
    #[serde(default, deserialize_with = "modulus")]
    modulus: u64,
    /// "" if left out or `null`.
    #[serde(default)]
    target_label: String,
    /// `null` is "" (then not the default: a field set).
    #[serde(default = "default_replacement")]
    replacement: String,
    /// `None` if `null` (left out is `replace`).
    #[serde(default = "default_action", deserialize_with = "action")]
    action: Option<Action>,
}

fn default_separator() -> String {
    DEFAULT_SEPARATOR.to_string()
}

fn default_replacement() -> String {
    DEFAULT_REPLACEMENT.to_string()
}

fn default_action() -> Option<Action> {
    Some(Action::Replace)
}

/// `model.LabelNames`: each a valid label name; a `null` item is "".
fn label_names<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    struct Name(String);

    impl<'de> Deserialize<'de> for Name {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct NameVisitor;

            impl Visitor<'_> for NameVisitor {
                type Value = Name;

                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a label name")
                }

                fn visit_str<E: de::Error>(self, v: &str) -> Result<Name, E> {
                    // yaml.v2 skips `UnmarshalYAML` for null: "" is kept.
                    if v.is_empty() || is_valid_label_name(v) {
                        return Ok(Name(v.to_string()));
                    }
                    Err(E::custom(format!("{v:?} is not a valid label name")))
                }
            }

            d.deserialize_str(NameVisitor)
        }
    }

    let names = Option::<Vec<Name>>::deserialize(d)?;
    Ok(names.map(|n| n.into_iter().map(|n| n.0).collect()))
}

/// `regex`: a `null` value is the empty regex.
fn regex<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Regexp>, D::Error> {
    crate::yaml::parse_str(d, |s| Regexp::new(s).map(Some))
}

/// `action`: `null` is `None` (then "relabel action cannot be empty").
fn action<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Action>, D::Error> {
    struct ActionVisitor;

    impl<'de> Visitor<'de> for ActionVisitor {
        type Value = Option<Action>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a relabel action")
        }

        fn visit_none<E: de::Error>(self) -> Result<Option<Action>, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Option<Action>, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<Action>, D::Error> {
            crate::yaml::parse_str(d, |s| Action::parse(s).map(Some))
        }
    }

    d.deserialize_option(ActionVisitor)
}

/// `modulus` as yaml.v2 decodes a `uint64`: a non-negative integer, or a
/// float up to 2^64 converted as Go on amd64 converts it (truncated;
/// `-1.5` wraps to 2^64-1, values Go cannot convert give 2^63); `null`
/// is 0.
fn modulus<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    struct ModulusVisitor;

    impl Visitor<'_> for ModulusVisitor {
        type Value = u64;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an unsigned integer")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
            // `resolved <= math.MaxUint64` (2^64 as a float); NaN fails.
            if v.is_nan() || v > 18_446_744_073_709_551_616.0 {
                return Err(E::invalid_value(de::Unexpected::Float(v), &self));
            }
            Ok(go_amd64_f64_to_u64(v))
        }
    }

    d.deserialize_u64(ModulusVisitor)
}

/// Go's `uint64(f)` on amd64: CVTTSD2SQ, whose out-of-range result is
/// 2^63, below 2^63, and of `f - 2^63` with the top bit set above.
fn go_amd64_f64_to_u64(f: f64) -> u64 {
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    let cvt = |x: f64| -> u64 {
        if x.is_nan() || !(-TWO_63..TWO_63).contains(&x) {
            1 << 63
        } else {
            x.trunc() as i64 as u64
        }
    };
    if f < TWO_63 {
        cvt(f)
    } else {
        cvt(f - TWO_63) | (1 << 63)
    }
}

/// `(.*)`, compiled once.
fn default_regex() -> Result<Regexp, String> {
    static DEFAULT: OnceLock<Result<Regexp, String>> = OnceLock::new();
    DEFAULT.get_or_init(|| Regexp::new(DEFAULT_REGEX)).clone()
}

/// Prometheus's `relabelTarget`: a label name or `$` templates.
fn is_relabel_target(s: &str) -> bool {
    static TARGET: OnceLock<Option<Regexp>> = OnceLock::new();
    TARGET
        .get_or_init(|| Regexp::compile(r"^(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+$").ok())
        .as_ref()
        .is_some_and(|re| re.is_match(s))
}

impl Raw {
    /// The checks of `relabel.Config.UnmarshalYAML`, in its order.
    fn validate(self) -> Result<Rule, String> {
        use Action::*;
        let Some(action) = self.action else {
            return Err("relabel action cannot be empty".into());
        };
        let regex_set = self.regex.is_some();
        let regex = match self.regex {
            Some(re) => re,
            None => default_regex()?,
        };
        let target = self.target_label.as_str();
        let replacement = self.replacement.as_str();
        if self.modulus == 0 && action == HashMod {
            return Err("relabel configuration for hashmod requires non-zero modulus".into());
        }
        let with_target = [Replace, HashMod, Lowercase, Uppercase, KeepEqual, DropEqual];
        if with_target.contains(&action) && target.is_empty() {
            return Err(format!(
                "relabel configuration for {action} action requires 'target_label' value"
            ));
        }
        let templated = [Replace, Lowercase, Uppercase, KeepEqual, DropEqual];
        if templated.contains(&action) && !is_relabel_target(target) {
            return Err(format!(
                "{target:?} is invalid 'target_label' for {action} action"
            ));
        }
        let no_replacement = [Lowercase, Uppercase, KeepEqual, DropEqual];
        if no_replacement.contains(&action) && replacement != DEFAULT_REPLACEMENT {
            return Err(format!("'replacement' can not be set for {action} action"));
        }
        if action == LabelMap && !is_relabel_target(replacement) {
            return Err(format!(
                "{replacement:?} is invalid 'replacement' for {action} action"
            ));
        }
        if action == HashMod && !is_valid_label_name(target) {
            return Err(format!(
                "{target:?} is invalid 'target_label' for {action} action"
            ));
        }
        if [DropEqual, KeepEqual].contains(&action)
            && (regex_set
                || self.modulus != 0
                || self.separator != DEFAULT_SEPARATOR
                || replacement != DEFAULT_REPLACEMENT)
        {
            return Err(format!(
                "{action} action requires only 'source_labels' and `target_label`, and no other fields"
            ));
        }
        if [LabelDrop, LabelKeep].contains(&action)
            && (self.source_labels.is_some()
                || !target.is_empty()
                || self.modulus != 0
                || self.separator != DEFAULT_SEPARATOR
                || replacement != DEFAULT_REPLACEMENT)
        {
            return Err(format!(
                "{action} action requires only 'regex', and no other fields"
            ));
        }
        Ok(Rule {
            target_label: Template::new(target, &regex),
            replacement: Template::new(replacement, &regex),
            source_labels: self.source_labels.unwrap_or_default(),
            separator: self.separator,
            regex,
            modulus: self.modulus,
            action,
        })
    }
}

/// The field names, for messages.
const FIELDS: &[&str] = &[
    "source_labels",
    "separator",
    "regex",
    "modulus",
    "target_label",
    "replacement",
    "action",
];

impl<'de> Deserialize<'de> for Rule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RuleVisitor;

        impl<'de> Visitor<'de> for RuleVisitor {
            type Value = Rule;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a relabel rule")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Rule, A::Error> {
                let raw = Raw::deserialize(de::value::MapAccessDeserializer::new(map))?;
                // Raised here, the error gets the rule's position.
                raw.validate().map_err(de::Error::custom)
            }
        }

        d.deserialize_struct("RelabelConfig", FIELDS, RuleVisitor)
    }
}

/// `relabel_configs`: a list of rules; `null` is none, a `null` rule is
/// Prometheus's "empty or null target relabeling rule" error.
pub fn deserialize_rules<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Rule>, D::Error> {
    struct Item(Rule);

    impl<'de> Deserialize<'de> for Item {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct ItemVisitor;

            impl<'de> Visitor<'de> for ItemVisitor {
                type Value = Item;

                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a relabel rule")
                }

                fn visit_none<E: de::Error>(self) -> Result<Item, E> {
                    Err(E::custom(
                        "empty or null target relabeling rule in scrape config",
                    ))
                }

                fn visit_unit<E: de::Error>(self) -> Result<Item, E> {
                    self.visit_none()
                }

                fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Item, D::Error> {
                    Rule::deserialize(d).map(Item)
                }
            }

            d.deserialize_option(ItemVisitor)
        }
    }

    let items = Option::<Vec<Item>>::deserialize(d)?;
    Ok(items.unwrap_or_default().into_iter().map(|i| i.0).collect())
}

#[cfg(test)]
mod tests;
