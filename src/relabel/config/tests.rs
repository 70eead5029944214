use super::*;
use crate::config::Config;

fn parse(rules: &str) -> Result<Vec<Rule>, String> {
    let text = format!("jobs:\n  - job_name: a\n    relabel_configs:\n{rules}");
    Config::parse_with_rules(&text, std::path::Path::new("/etc/sdbridge/sdbridge.yml"))
        .map(|c| {
            c.jobs
                .into_iter()
                .next()
                .map(|j| j.relabel_configs)
                .unwrap_or_default()
        })
        .map_err(|e| e.to_string())
}

fn rule(yaml: &str) -> Result<Rule, String> {
    parse(&format!("      - {yaml}\n")).map(|mut r| r.remove(0))
}

/// Prometheus 2.42's `relabel.Config.UnmarshalYAML` messages, each at the
/// rule (line 4, column 9) or at the value it is about.
#[test]
fn prometheus_checks_and_messages_at_their_place() {
    let cases = [
        ("{}", ":4:9: jobs[0].relabel_configs[0]: relabel configuration for replace action requires 'target_label' value"),
        ("{action: hashmod, target_label: h}", ":4:9: jobs[0].relabel_configs[0]: relabel configuration for hashmod requires non-zero modulus"),
        ("{action: hashmod, modulus: 2}", "relabel configuration for hashmod action requires 'target_label' value"),
        ("{action: hashmod, modulus: 2, target_label: '${1}'}", "\"${1}\" is invalid 'target_label' for hashmod action"),
        ("{action: lowercase}", "relabel configuration for lowercase action requires 'target_label' value"),
        ("{action: uppercase, target_label: a, replacement: x}", "'replacement' can not be set for uppercase action"),
        ("{action: keepequal, target_label: a, replacement: ~}", "'replacement' can not be set for keepequal action"),
        ("{target_label: -x}", "\"-x\" is invalid 'target_label' for replace action"),
        ("{target_label: 'a b'}", "\"a b\" is invalid 'target_label' for replace action"),
        ("{action: dropequal, target_label: '$'}", "\"$\" is invalid 'target_label' for dropequal action"),
        ("{action: labelmap, replacement: '${1}-x'}", "\"${1}-x\" is invalid 'replacement' for labelmap action"),
        ("{action: keepequal, target_label: a, regex: (.*)}", "keepequal action requires only 'source_labels' and `target_label`, and no other fields"),
        ("{action: dropequal, target_label: a, separator: ','}", "dropequal action requires only 'source_labels' and `target_label`, and no other fields"),
        ("{action: dropequal, target_label: a, modulus: 1}", "dropequal action requires only"),
        ("{action: labeldrop, source_labels: []}", "labeldrop action requires only 'regex', and no other fields"),
        ("{action: labelkeep, target_label: a}", "labelkeep action requires only 'regex', and no other fields"),
        ("{action: labelkeep, replacement: x}", "labelkeep action requires only 'regex', and no other fields"),
        ("{action: foo}", ":4:18: jobs[0].relabel_configs[0].action: unknown relabel action \"foo\""),
        ("{action: '', target_label: a}", "unknown relabel action \"\""),
        ("{action: ~, target_label: a}", ":4:9: jobs[0].relabel_configs[0]: relabel action cannot be empty"),
        ("{target_label: a, regex: '(a'}", ":4:34: jobs[0].relabel_configs[0].regex: error parsing regexp: missing closing ): `^(?:(a)$`"),
        ("{target_label: a, regex: '(?<n>a)'}", "error parsing regexp: invalid or unsupported Perl syntax: `(?<`"),
        ("{target_label: a, source_labels: [ok, bad-name]}", ":4:47: jobs[0].relabel_configs[0].source_labels[1]: \"bad-name\" is not a valid label name"),
        ("{target_label: a, regexp: x}", "unknown field `regexp`, did you mean `regex`?"),
        ("{target_label: a, modulus: '3'}", "jobs[0].relabel_configs[0].modulus: invalid type: string \"3\""),
        ("{target_label: a, modulus: -1}", "jobs[0].relabel_configs[0].modulus: invalid value: integer `-1`"),
        ("{action: hashmod, target_label: a, modulus: 1e30}", "invalid value: floating point"),
        ("{action: hashmod, target_label: a, modulus: -0.5}", "requires non-zero modulus"),
        ("[x]", "jobs[0].relabel_configs[0]: invalid type: sequence"),
    ];
    for (yaml, want) in cases {
        let err = rule(yaml).unwrap_err();
        assert!(err.contains(want), "{yaml}\nwant: {want}\ngot:  {err}");
    }
    let err = parse("      - {target_label: a}\n      -\n").unwrap_err();
    assert!(
        err.ends_with(":5:8: jobs[0].relabel_configs[1]: empty or null target relabeling rule in scrape config"),
        "{err}"
    );
}

/// What Prometheus 2.42 accepts (each checked with promtool too, see
/// tests/relabel_promtool.rs).
#[test]
fn defaults_and_what_counts_as_set() {
    let r = rule("{target_label: a}").unwrap();
    assert_eq!(r.action, Action::Replace);
    assert_eq!(r.separator, ";");
    assert_eq!(r.regex.as_str(), "(.*)");
    assert_eq!(r.replacement.as_str(), "$1");
    assert!(r.source_labels.is_empty());
    // Written with its default value, a field counts as not set...
    rule("{action: keepequal, target_label: a, separator: ';', replacement: $1, modulus: 0}")
        .unwrap();
    rule("{action: labeldrop, regex: x, source_labels: ~, target_label: ''}").unwrap();
    // ...but regex counts whatever its value, and null is the empty regex.
    let r = rule("{target_label: a, regex: ~}").unwrap();
    assert!(r.regex.is_match("") && !r.regex.is_match("a"));
    // Null strings are empty; null modulus is 0; null label names are "".
    let r = rule("{target_label: a, separator: ~, replacement: ~, source_labels: [a, ~]}").unwrap();
    assert_eq!((r.separator.as_str(), r.replacement.as_str()), ("", ""));
    assert_eq!(r.source_labels, ["a", ""]);
    // Actions in any case.
    assert_eq!(rule("{action: KeEp}").unwrap().action, Action::Keep);
    assert_eq!(
        rule("{action: \"\u{212A}eep\"}").unwrap().action,
        Action::Keep
    );
    // Templates are syntax-checked only for target_label of the actions
    // that use it as is.
    rule("{action: lowercase, target_label: '${1}x'}").unwrap();
    rule("{action: labelmap, replacement: 'x_${1}'}").unwrap();
    rule("{action: drop, target_label: '-', replacement: '-'}").unwrap();
}

/// yaml.v2 decodes a float into `modulus` as Go on amd64 converts it.
#[test]
fn modulus_as_yaml_v2_reads_it() {
    let modulus = |m: &str| {
        rule(&format!(
            "{{action: hashmod, target_label: a, modulus: {m}}}"
        ))
        .map(|r| r.modulus)
    };
    assert_eq!(modulus("2.5"), Ok(2));
    assert_eq!(modulus("0x10"), Ok(16));
    assert_eq!(modulus("1e19"), Ok(10_000_000_000_000_000_000));
    assert_eq!(modulus("-1.5"), Ok(u64::MAX));
    assert_eq!(modulus("18446744073709551616"), Ok(1 << 63));
    assert_eq!(modulus("-.inf"), Ok(1 << 63));
    assert_eq!(modulus("18446744073709551615"), Ok(u64::MAX));
    assert!(modulus(".inf").is_err() && modulus(".nan").is_err());
    assert!(modulus("true")
        .unwrap_err()
        .contains("invalid type: boolean"));
}

/// Prometheus's `TestTargetLabelValidity`.
#[test]
fn relabel_target_syntax() {
    let cases = [
        ("-label", false),
        ("label", true),
        ("label${1}", true),
        ("${1}label", true),
        ("${1}", true),
        ("${", false),
        ("$", false),
        ("${}", false),
        ("foo${", false),
        ("$1", true),
        ("asd$2asd", true),
        ("-foo${1}bar-", false),
        ("_${1}_", true),
        ("foo${bar}foo", true),
        ("1abc", false),
        ("é", false),
    ];
    for (s, valid) in cases {
        assert_eq!(is_relabel_target(s), valid, "{s:?}");
    }
}

/// `Config::check` reports each bad rule of a job, at its place.
#[test]
fn check_reports_every_bad_rule() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yml");
    std::fs::write(
        &path,
        "jobs:\n  - job_name: a\n    static_configs: [{targets: ['127.0.0.1:1']}]\n    relabel_configs:\n      - {action: keep, regex: '[a'}\n      - {source_labels: [x], target_label: y}\n      - {action: hashmod}\n",
    )
    .unwrap();
    let (jobs, errors) = Config::check(&path);
    let errors: Vec<String> = errors
        .iter()
        .map(|e| e.to_string().replace(&path.display().to_string(), "c.yml"))
        .collect();
    assert_eq!(
        errors,
        [
            "c.yml:5:31: jobs[0].relabel_configs[0].regex: error parsing regexp: missing closing ]: `[a)$`",
            "c.yml:7:9: jobs[0].relabel_configs[2]: relabel configuration for hashmod requires non-zero modulus",
        ]
    );
    assert!(jobs.is_empty());
}
