//! Prometheus's target relabelling (`model/relabel`, 2.42), run by the
//! bridge on discovered targets (CONTRACT section 5a).
//!
//! - [`config`]: a rule as Prometheus reads and checks it ([`Rule`]), and
//!   a job's `relabel_configs` list ([`deserialize_rules`]).
//! - [`re2`]: Go's regular expressions on the Rust `regex` crate, with the
//!   table of where the two differ and what is done about it.
//! - [`expand`]: Go's `Regexp.Expand` templates and `ReplaceAllString`.
//! - [`case`]: Go's `strings.ToLower`/`ToUpper`.
//!
//! [`process`] runs rules on one target's [`Labels`]. Regexes are compiled
//! and templates parsed when the config is read; running a rule allocates
//! only what ends up in the labels (a new label's name and value, the
//! names `labelmap` makes), using per-thread scratch buffers otherwise.

pub mod case;
pub mod config;
pub mod expand;
pub mod re2;

use std::cell::RefCell;
use std::fmt::Write;

pub use config::{deserialize_rules, Action, Rule};
pub use expand::Template;
pub use re2::Regexp;

use crate::targetgroup::is_valid_label_name;

/// One target's labels: sorted by name, names unique, values non-empty.
/// As in Prometheus, an empty value is an absent label: setting one to ""
/// removes it, and empty values given to [`Labels::from_pairs`] are left
/// out (Prometheus removes them before relabelling).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels {
    /// Sorted by name: binary search for a few dozen labels beats a map.
    pairs: Vec<(String, String)>,
}

impl Labels {
    /// No labels.
    pub fn new() -> Labels {
        Labels::default()
    }

    /// The labels of `pairs`; for a repeated name the last one counts.
    pub fn from_pairs<N, V>(pairs: impl IntoIterator<Item = (N, V)>) -> Labels
    where
        N: Into<String>,
        V: Into<String>,
    {
        let mut pairs: Vec<(String, String)> = pairs
            .into_iter()
            .map(|(n, v)| (n.into(), v.into()))
            .collect();
        // Stable, so the last of a repeated name is last among equals.
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(String, String)> = Vec::with_capacity(pairs.len());
        for (name, value) in pairs {
            match out.last_mut() {
                Some(last) if last.0 == name => last.1 = value,
                _ => out.push((name, value)),
            }
        }
        out.retain(|(_, v)| !v.is_empty());
        Labels { pairs: out }
    }

    fn find(&self, name: &str) -> Result<usize, usize> {
        self.pairs.binary_search_by(|(n, _)| n.as_str().cmp(name))
    }

    /// The value of `name`, "" if absent.
    pub fn get(&self, name: &str) -> &str {
        match self.find(name) {
            Ok(i) => &self.pairs[i].1,
            Err(_) => "",
        }
    }

    /// Sets `name` to `value`; "" removes it.
    pub fn set(&mut self, name: &str, value: &str) {
        if value.is_empty() {
            return self.remove(name);
        }
        match self.find(name) {
            Ok(i) => {
                let v = &mut self.pairs[i].1;
                v.clear();
                v.push_str(value);
            }
            Err(i) => self.pairs.insert(i, (name.to_string(), value.to_string())),
        }
    }

    /// [`Labels::set`] with owned strings.
    fn set_owned(&mut self, name: String, value: String) {
        if value.is_empty() {
            return self.remove(&name);
        }
        match self.find(&name) {
            Ok(i) => self.pairs[i].1 = value,
            Err(i) => self.pairs.insert(i, (name, value)),
        }
    }

    /// Removes `name` if present.
    pub fn remove(&mut self, name: &str) {
        if let Ok(i) = self.find(name) {
            self.pairs.remove(i);
        }
    }

    /// The labels in name order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// How many labels.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The (name, value) pairs in name order.
    pub fn into_pairs(self) -> Vec<(String, String)> {
        self.pairs
    }

    /// The first label name that is not a valid Prometheus label name.
    /// Rules can make such names as Prometheus 2.42's do (a `labelmap`
    /// expansion, a `lowercase` target written as `${1}`); one of them in
    /// an HTTP SD answer makes Prometheus refuse the whole answer.
    pub fn invalid_name(&self) -> Option<&str> {
        self.pairs
            .iter()
            .map(|(n, _)| n.as_str())
            .find(|n| !is_valid_label_name(n))
    }
}

/// What the rules did with a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It is kept, with the labels the rules left.
    Kept,
    /// Rule `rule` (0-based) dropped it; the labels are as the rules
    /// before it left them.
    Dropped {
        /// Index in the rule list.
        rule: usize,
    },
}

/// Reused between targets on one thread.
#[derive(Default)]
struct Scratch {
    /// The joined source value.
    value: String,
    /// An expanded target label.
    target: String,
    /// An expanded replacement, or a case-mapped or hashed value.
    out: String,
    /// `labelmap`'s new labels, set after reading all the old ones.
    mapped: Vec<(String, String)>,
    /// Capture slots per regex (by [`Regexp::id`]), a few dozen at most.
    locs: Vec<(u64, regex::CaptureLocations)>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Prometheus's `relabel.Process`: runs `rules` in order on `labels`
/// until one drops the target.
pub fn process(labels: &mut Labels, rules: &[Rule]) -> Outcome {
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut scratch) => run(labels, rules, &mut scratch),
        Err(_) => run(labels, rules, &mut Scratch::default()),
    })
}

fn run(labels: &mut Labels, rules: &[Rule], scratch: &mut Scratch) -> Outcome {
    for (i, rule) in rules.iter().enumerate() {
        if !relabel(labels, rule, scratch) {
            return Outcome::Dropped { rule: i };
        }
    }
    Outcome::Kept
}

/// The capture slots for `re`.
fn locations<'s>(
    locs: &'s mut Vec<(u64, regex::CaptureLocations)>,
    re: &Regexp,
) -> &'s mut regex::CaptureLocations {
    let i = match locs.iter().position(|(id, _)| *id == re.id()) {
        Some(i) => i,
        None => {
            if locs.len() >= 64 {
                locs.clear();
            }
            locs.push((re.id(), re.regex().capture_locations()));
            locs.len() - 1
        }
    };
    &mut locs[i].1
}

/// One rule (`relabel.relabel`); false if it drops the target.
fn relabel(labels: &mut Labels, rule: &Rule, scratch: &mut Scratch) -> bool {
    let Scratch {
        value,
        target,
        out,
        mapped,
        locs,
    } = scratch;
    value.clear();
    for (i, name) in rule.source_labels.iter().enumerate() {
        if i > 0 {
            value.push_str(&rule.separator);
        }
        value.push_str(labels.get(name));
    }
    let value = value.as_str();
    let target_label = rule.target_label.as_str();
    match rule.action {
        Action::Drop => return !rule.regex.is_match(value),
        Action::Keep => return rule.regex.is_match(value),
        Action::DropEqual => return labels.get(target_label) != value,
        Action::KeepEqual => return labels.get(target_label) == value,
        Action::Replace => {
            let locs = locations(locs, &rule.regex);
            if rule.regex.regex().captures_read(locs, value).is_none() {
                // No match, no replacement.
                return true;
            }
            target.clear();
            rule.target_label.expand(value, locs, target);
            // 2.42 removes the label named as written, not the expansion.
            if !is_valid_label_name(target) {
                labels.remove(target_label);
                return true;
            }
            out.clear();
            rule.replacement.expand(value, locs, out);
            if out.is_empty() {
                labels.remove(target_label);
                return true;
            }
            labels.set(target, out);
        }
        Action::Lowercase | Action::Uppercase => {
            out.clear();
            match rule.action {
                Action::Lowercase => case::to_lower(value, out),
                _ => case::to_upper(value, out),
            }
            labels.set(target_label, out);
        }
        Action::HashMod => {
            out.clear();
            let _ = write!(out, "{}", crate::shard::hashmod(value, rule.modulus));
            labels.set(target_label, out);
        }
        Action::LabelMap => {
            let locs = locations(locs, &rule.regex);
            mapped.clear();
            for (name, value) in labels.iter() {
                if rule.regex.is_match(name) {
                    let mut new_name = String::new();
                    expand::replace_all(&rule.regex, name, &rule.replacement, locs, &mut new_name);
                    mapped.push((new_name, value.to_string()));
                }
            }
            for (name, value) in mapped.drain(..) {
                labels.set_owned(name, value);
            }
        }
        Action::LabelDrop => labels.pairs.retain(|(n, _)| !rule.regex.is_match(n)),
        Action::LabelKeep => labels.pairs.retain(|(n, _)| rule.regex.is_match(n)),
    }
    true
}

#[cfg(test)]
mod tests;
