use super::*;
use crate::relabel::expand::{replace_all, Template};

#[derive(serde::Deserialize)]
struct GoCase {
    re: String,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    matches: Option<Vec<Option<Vec<i64>>>>,
    #[serde(default)]
    replace: Option<Vec<String>>,
    #[serde(default)]
    names: Option<Vec<String>>,
}

/// Go's `FindStringSubmatchIndex`.
fn submatches(re: &Regexp, input: &str) -> Option<Vec<i64>> {
    let mut locs = re.regex().capture_locations();
    re.regex().captures_read(&mut locs, input)?;
    Some(
        (0..locs.len())
            .flat_map(|i| match locs.get(i) {
                Some((a, b)) => [a as i64, b as i64],
                None => [-1, -1],
            })
            .collect(),
    )
}

/// `fixtures/relabel/re2_go1.19.json`: what Go 1.19.8's `regexp` (the one
/// Debian's Prometheus 2.42 is built with) says of each pattern of
/// `re2_patterns.json` (and of its limits): the same compile error, or
/// the same submatches and `ReplaceAllString(input, "<$1>")` for every
/// input of `re2_inputs.json`.
#[test]
fn agrees_with_go_1_19() {
    let cases: Vec<GoCase> =
        serde_json::from_str(include_str!("../../../fixtures/relabel/re2_go1.19.json")).unwrap();
    let inputs: Vec<String> =
        serde_json::from_str(include_str!("../../../fixtures/relabel/re2_inputs.json")).unwrap();
    assert!(cases.len() > 250);
    let mut failures = Vec::new();
    for case in &cases {
        let shown: String = case.re.chars().take(60).collect();
        let re = match (Regexp::compile(&case.re), &case.error) {
            (Err(ours), Some(go)) => {
                let (ours, go): (String, String) = (
                    ours.chars().take(200).collect(),
                    go.chars().take(200).collect(),
                );
                if ours != go {
                    failures.push(format!("{shown:?}: error {ours:?}, Go's {go:?}"));
                }
                continue;
            }
            (Ok(_), Some(go)) => {
                failures.push(format!("{shown:?}: accepted, Go says {go}"));
                continue;
            }
            // Documented: Go's size limit counts instructions, the regex
            // crate's bytes of compiled automaton.
            (Err(ours), None) if ours.contains("Prometheus would accept it") => continue,
            (Err(ours), None) => {
                failures.push(format!("{shown:?}: refused ({ours}), Go accepts it"));
                continue;
            }
            (Ok(re), None) => re,
        };
        if let Some(names) = &case.names {
            let ours: Vec<String> = re
                .names()
                .iter()
                .map(|n| n.clone().unwrap_or_default())
                .collect();
            if &ours != names {
                failures.push(format!("{shown:?}: names {ours:?}, Go's {names:?}"));
            }
        }
        let template = Template::new("<$1>", &re);
        let mut locs = re.regex().capture_locations();
        let expected = case
            .matches
            .iter()
            .flatten()
            .zip(case.replace.iter().flatten());
        for (input, (go_match, go_replace)) in inputs.iter().zip(expected) {
            let ours = submatches(&re, input);
            if &ours != go_match {
                failures.push(format!(
                    "{shown:?} on {input:?}: {ours:?}, Go's {go_match:?}"
                ));
            }
            let mut replaced = String::new();
            replace_all(&re, input, &template, &mut locs, &mut replaced);
            if &replaced != go_replace {
                failures.push(format!(
                    "{shown:?} on {input:?}: replaced {replaced:?}, Go's {go_replace:?}"
                ));
            }
        }
    }
    let shown: Vec<String> = failures
        .iter()
        .take(40)
        .map(|f| f.chars().take(300).collect())
        .collect();
    assert!(
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        shown.join("\n")
    );
}

/// Prometheus anchors the regex: an error shows the anchored expression
/// where Go's does (checked with promtool 2.42).
#[test]
fn anchored_as_prometheus_anchors() {
    let re = Regexp::new("a|b").unwrap();
    assert!(re.is_match("a") && !re.is_match("ab") && !re.is_match("xa"));
    assert_eq!(re.as_str(), "a|b");
    // Closing Prometheus's group early un-anchors part of it, as in Go.
    let re = Regexp::new("a)|(b").unwrap();
    assert!(re.is_match("ab") && re.is_match("xb") && !re.is_match("ba"));
    assert_eq!(
        Regexp::new("(a").unwrap_err(),
        "error parsing regexp: missing closing ): `^(?:(a)$`"
    );
    assert_eq!(
        Regexp::new(r"\Qa").unwrap_err(),
        "error parsing regexp: missing closing ): `^(?:\\Qa)$`"
    );
    assert_eq!(
        Regexp::new("a)").unwrap_err(),
        "error parsing regexp: unexpected ): `^(?:a))$`"
    );
    assert_eq!(Regexp::new("").unwrap().regex().as_str(), r"\A(?:)\z");
}

/// Long literals are fine (Go's size check counts their characters
/// only past 3.3 million nodes).
#[test]
fn long_literals_are_not_too_large() {
    let long = "a".repeat(10_000);
    let re = Regexp::compile(&long).unwrap();
    assert!(re.is_match(&long));
}

/// Deep patterns compile on a thread with a large stack: nested groups
/// past the regex crate's default nest limit (250), up to Go's 1000.
#[test]
fn deep_nesting_up_to_gos_limit() {
    let deep = format!("{}a{}", "(".repeat(999), ")".repeat(999));
    let re = Regexp::compile(&deep).unwrap();
    assert_eq!(re.names().len(), 1000);
    assert!(re.is_match("a"));
    let too_deep = format!("{}a{}", "(".repeat(1000), ")".repeat(1000));
    assert!(Regexp::compile(&too_deep)
        .unwrap_err()
        .starts_with("error parsing regexp: expression nests too deeply"));
}

/// What Go accepts but compiles past the regex crate's raised limit is
/// refused with a message saying so.
#[test]
fn too_large_for_the_rust_engine() {
    let err = Regexp::new(r"\pL{1000}\pL{1000}").unwrap_err();
    assert!(err.contains("Prometheus would accept it"), "{err}");
}
