use proptest::prelude::*;

use super::*;

#[derive(serde::Deserialize)]
struct Rules {
    #[serde(deserialize_with = "deserialize_rules")]
    rules: Vec<Rule>,
}

/// Rules as a `relabel_configs` list in YAML.
fn rules(yaml: &str) -> Vec<Rule> {
    let text = format!("rules:\n{yaml}");
    match crate::yaml::from_str::<Rules>(&text) {
        Ok(r) => r.rules,
        Err(e) => panic!("{yaml}: {}:{}: {}", e.line, e.column, e.message),
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied())
}

/// Runs `yaml`'s rules on `input`: the labels, or `None` if dropped.
fn run(input: &[(&str, &str)], yaml: &str) -> Option<Labels> {
    let mut l = labels(input);
    match process(&mut l, &rules(yaml)) {
        Outcome::Kept => Some(l),
        Outcome::Dropped { .. } => None,
    }
}

/// Prometheus 2.42's `TestRelabel`, case by case.
#[test]
fn prometheus_relabel_test_cases() {
    let abc = [("a", "foo"), ("b", "bar"), ("c", "baz")];
    type Pairs<'a> = &'a [(&'a str, &'a str)];
    let cases: Vec<(Pairs, &str, Option<Pairs>)> = vec![
        (
            &abc,
            "- {source_labels: [a], regex: f(.*), target_label: d, replacement: 'ch${1}-ch${1}'}",
            Some(&[("a", "foo"), ("b", "bar"), ("c", "baz"), ("d", "choo-choo")]),
        ),
        (
            &abc,
            "- {source_labels: [a, b], regex: f(.*);(.*)r, target_label: a, replacement: 'b${1}${2}m'}\n- {source_labels: [c, a], regex: (b).*b(.*)ba(.*), target_label: d, replacement: $1$2$2$3}",
            Some(&[("a", "boobam"), ("b", "bar"), ("c", "baz"), ("d", "boooom")]),
        ),
        (
            &[("a", "foo")],
            "- {source_labels: [a], regex: .*o.*, action: drop}\n- {source_labels: [a], regex: f(.*), target_label: d, replacement: ch$1-ch$1}",
            None,
        ),
        (&[("a", "foo"), ("b", "bar")], "- {source_labels: [a], regex: .*o.*, action: drop}", None),
        (
            &[("a", "abc")],
            "- {source_labels: [a], regex: .*(b).*, target_label: d, replacement: $1}",
            Some(&[("a", "abc"), ("d", "b")]),
        ),
        (&[("a", "foo")], "- {source_labels: [a], regex: no-match, action: drop}", Some(&[("a", "foo")])),
        (&[("a", "foo")], "- {source_labels: [a], regex: f|o, action: drop}", Some(&[("a", "foo")])),
        (&[("a", "foo")], "- {source_labels: [a], regex: no-match, action: keep}", None),
        (&[("a", "foo")], "- {source_labels: [a], regex: f.*, action: keep}", Some(&[("a", "foo")])),
        // No replacement must be applied if there is no match.
        (
            &[("a", "boo")],
            "- {source_labels: [a], regex: f, target_label: b, replacement: bar}",
            Some(&[("a", "boo")]),
        ),
        (
            &abc,
            "- {source_labels: [c], target_label: d, action: hashmod, modulus: 1000}",
            Some(&[("a", "foo"), ("b", "bar"), ("c", "baz"), ("d", "976")]),
        ),
        (
            &[("a", "foo\nbar")],
            "- {source_labels: [a], target_label: b, action: hashmod, modulus: 1000}",
            Some(&[("a", "foo\nbar"), ("b", "734")]),
        ),
        (
            &[("a", "foo"), ("b1", "bar"), ("b2", "baz")],
            "- {regex: (b.*), replacement: 'bar_${1}', action: labelmap}",
            Some(&[("a", "foo"), ("b1", "bar"), ("b2", "baz"), ("bar_b1", "bar"), ("bar_b2", "baz")]),
        ),
        (
            &[("a", "foo"), ("__meta_my_bar", "aaa"), ("__meta_my_baz", "bbb"), ("__meta_other", "ccc")],
            "- {regex: __meta_(my.*), replacement: '${1}', action: labelmap}",
            Some(&[
                ("a", "foo"),
                ("__meta_my_bar", "aaa"),
                ("__meta_my_baz", "bbb"),
                ("__meta_other", "ccc"),
                ("my_bar", "aaa"),
                ("my_baz", "bbb"),
            ]),
        ),
        // Valid templated target.
        (
            &[("a", "some-name-value")],
            "- {source_labels: [a], regex: 'some-([^-]+)-([^,]+)', replacement: '${2}', target_label: '${1}'}",
            Some(&[("a", "some-name-value"), ("name", "value")]),
        ),
        // Invalid replacement "".
        (
            &[("a", "some-name-value")],
            "- {source_labels: [a], regex: 'some-([^-]+)-([^,]+)', replacement: '${3}', target_label: '${1}'}",
            Some(&[("a", "some-name-value")]),
        ),
        // Invalid target labels (`0${3}` and `-${3}` only below: the
        // config refuses them, the Go test builds its rules directly).
        (
            &[("a", "some-name-value")],
            "- {source_labels: [a], regex: 'some-([^-]+)-([^,]+)', replacement: '${1}', target_label: '${3}'}",
            Some(&[("a", "some-name-value")]),
        ),
        // More complex real-life like usecase.
        (
            &[("__meta_sd_tags", "path:/secret,job:some-job,label:foo=bar")],
            "- {source_labels: [__meta_sd_tags], regex: '(?:.+,|^)path:(/[^,]+).*', replacement: '${1}', target_label: __metrics_path__}\n- {source_labels: [__meta_sd_tags], regex: '(?:.+,|^)job:([^,]+).*', replacement: '${1}', target_label: job}\n- {source_labels: [__meta_sd_tags], regex: '(?:.+,|^)label:([^=]+)=([^,]+).*', replacement: '${2}', target_label: '${1}'}",
            Some(&[
                ("__meta_sd_tags", "path:/secret,job:some-job,label:foo=bar"),
                ("__metrics_path__", "/secret"),
                ("job", "some-job"),
                ("foo", "bar"),
            ]),
        ),
        (
            &[("a", "foo"), ("b1", "bar"), ("b2", "baz")],
            "- {regex: (b.*), action: labelkeep}",
            Some(&[("b1", "bar"), ("b2", "baz")]),
        ),
        (
            &[("a", "foo"), ("b1", "bar"), ("b2", "baz")],
            "- {regex: (b.*), action: labeldrop}",
            Some(&[("a", "foo")]),
        ),
        (
            &[("foo", "bAr123Foo")],
            "- {source_labels: [foo], action: uppercase, target_label: foo_uppercase}\n- {source_labels: [foo], action: lowercase, target_label: foo_lowercase}",
            Some(&[("foo", "bAr123Foo"), ("foo_lowercase", "bar123foo"), ("foo_uppercase", "BAR123FOO")]),
        ),
    ];
    let ports = [
        ("__tmp_port", "1234"),
        ("__port1", "1234"),
        ("__port2", "5678"),
    ];
    let equal: Vec<(&str, bool)> = vec![
        (
            "- {source_labels: [__tmp_port], action: keepequal, target_label: __port1}",
            true,
        ),
        (
            "- {source_labels: [__tmp_port], action: dropequal, target_label: __port1}",
            false,
        ),
        (
            "- {source_labels: [__tmp_port], action: dropequal, target_label: __port2}",
            true,
        ),
        (
            "- {source_labels: [__tmp_port], action: keepequal, target_label: __port2}",
            false,
        ),
    ];
    for (input, yaml, want) in cases {
        assert_eq!(run(input, yaml), want.map(labels), "{yaml}");
    }
    let mut invalid = rules("- {source_labels: [a], regex: 'some-([^-]+)-([^,]+)', replacement: '${1}', target_label: t}");
    for target in ["0${3}", "-${3}"] {
        let mut rule = invalid[0].clone();
        rule.target_label = Template::new(target, &rule.regex);
        invalid.push(rule);
    }
    let mut l = labels(&[("a", "some-name-value")]);
    assert_eq!(process(&mut l, &invalid[1..]), Outcome::Kept);
    assert_eq!(l, labels(&[("a", "some-name-value")]));
    for (yaml, kept) in equal {
        assert_eq!(run(&ports, yaml), kept.then(|| labels(&ports)), "{yaml}");
    }
}

/// 2.42's `replace`: an invalid expanded target, or an empty value,
/// removes the label named as `target_label` is written.
#[test]
fn replace_removes_the_label_named_as_written() {
    let out = run(
        &[("a", "x"), ("${2}", "old"), ("t", "keep")],
        "- {source_labels: [a], regex: '(x)()', target_label: '${2}', replacement: v}",
    );
    assert_eq!(out, Some(labels(&[("a", "x"), ("t", "keep")])));
    let out = run(
        &[("a", "x"), ("t", "old")],
        "- {source_labels: [a], regex: '(x)()', target_label: t, replacement: $2}",
    );
    assert_eq!(out, Some(labels(&[("a", "x")])));
    // Unset source labels are "" and joined all the same.
    let out = run(
        &[("b", "2")],
        "- {source_labels: [a, b, c], separator: '|', target_label: t}",
    );
    assert_eq!(out, Some(labels(&[("b", "2"), ("t", "|2|")])));
    // `$1x` names a group `1x`; `${1}x` is group 1 then x; `$$` is `$`.
    let out = run(
        &[("a", "v")],
        "- {source_labels: [a], regex: '(?P<1x>.)', target_label: t, replacement: '$1x.${1}x.$$1.$0'}",
    );
    assert_eq!(out, Some(labels(&[("a", "v"), ("t", "v.vx.$1.v")])));
}

/// `labelmap` reads every label before it sets any, and replaces every
/// match in the name: a regex that closes Prometheus's anchoring group
/// matches parts of names (Go 1.19 gives `xQ_yQ` here).
#[test]
fn labelmap_is_replace_all_on_names() {
    let out = run(
        &[("a", "1"), ("b", "2")],
        "- {regex: '(a|b)', replacement: 'b', action: labelmap}",
    );
    assert_eq!(out, Some(labels(&[("a", "1"), ("b", "2")])));
    let out = run(
        &[("xa_ya", "1")],
        "- {regex: 'zzz)|(a)|(b', replacement: 'Q', action: labelmap}",
    );
    assert_eq!(out, Some(labels(&[("xQ_yQ", "1"), ("xa_ya", "1")])));
}

#[test]
fn outcome_names_the_dropping_rule() {
    let r = rules("- {target_label: x, replacement: y}\n- {source_labels: [x], regex: y, action: drop}\n- {action: keep, regex: never}");
    let mut l = labels(&[("a", "1")]);
    assert_eq!(process(&mut l, &r), Outcome::Dropped { rule: 1 });
    assert_eq!(l, labels(&[("a", "1"), ("x", "y")]));
    let mut l = labels(&[("a", "1")]);
    assert_eq!(process(&mut l, &[]), Outcome::Kept);
    assert_eq!(l, labels(&[("a", "1")]));
}

/// Go's case mapping, and hashmod as `?shard=` assigns.
#[test]
fn case_and_hash_actions() {
    let out = run(
        &[("a", "Straße İ"), ("__address__", "127.0.0.1:9100")],
        "- {source_labels: [a], target_label: u, action: uppercase}\n- {source_labels: [a], target_label: l, action: lowercase}\n- {source_labels: [__address__], target_label: h, action: hashmod, modulus: 7}",
    )
    .unwrap();
    assert_eq!((out.get("u"), out.get("l")), ("STRAßE İ", "straße i"));
    let shard = crate::shard::hashmod("127.0.0.1:9100", 7).to_string();
    assert_eq!(out.get("h"), shard);
}

/// Names Prometheus 2.42's rules can make and HTTP SD cannot carry.
#[test]
fn rules_can_make_invalid_names() {
    let out = run(
        &[("x", "1"), ("a", "A")],
        "- {regex: 'x(.*)', replacement: '$1', action: labelmap}\n- {source_labels: [a], target_label: '${1}', action: lowercase}",
    )
    .unwrap();
    assert_eq!(out.get(""), "1");
    assert_eq!(out.get("${1}"), "a");
    assert_eq!(out.invalid_name(), Some(""));
    assert_eq!(labels(&[("a", "1")]).invalid_name(), None);
}

#[test]
fn labels_treat_empty_values_as_absent() {
    let mut l = Labels::from_pairs([("b", "2"), ("a", ""), ("c", "3"), ("b", "4")]);
    assert_eq!(l.iter().collect::<Vec<_>>(), [("b", "4"), ("c", "3")]);
    assert_eq!(l.get("a"), "");
    l.set("a", "1");
    l.set("c", "");
    l.set("b", "5");
    assert_eq!(
        l.clone().into_pairs(),
        [("a".into(), "1".into()), ("b".into(), "5".into())]
    );
    l.remove("a");
    assert_eq!((l.len(), l.is_empty()), (1, false));
}

/// Go's `expand`, walked at expansion time as Go does (no parsing ahead),
/// for the property test below.
fn reference_expand(
    template: &str,
    names: &[Option<String>],
    src: &str,
    m: &[Option<(usize, usize)>],
) -> String {
    let mut out = String::new();
    let mut t = template;
    while let Some(i) = t.find('$') {
        out.push_str(&t[..i]);
        t = &t[i + 1..];
        if let Some(rest) = t.strip_prefix('$') {
            out.push('$');
            t = rest;
            continue;
        }
        let (brace, body) = match t.strip_prefix('{') {
            Some(b) => (true, b),
            None => (false, t),
        };
        let name: String = body
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() || (brace && !body[name.len()..].starts_with('}')) {
            out.push('$');
            continue;
        }
        t = &body[name.len() + usize::from(brace)..];
        let mut num = Some(0usize);
        for b in name.bytes() {
            num = match num {
                Some(n) if b.is_ascii_digit() && n < 100_000_000 => {
                    Some(n * 10 + usize::from(b - b'0'))
                }
                _ => None,
            };
        }
        if name.len() > 1 && name.starts_with('0') {
            num = None;
        }
        let group = match num {
            Some(n) => m.get(n).copied().flatten(),
            None => (0..names.len())
                .filter(|&g| names[g].as_deref() == Some(name.as_str()))
                .find_map(|g| m[g]),
        };
        if let Some((a, b)) = group {
            out.push_str(&src[a..b]);
        }
    }
    out.push_str(t);
    out
}

proptest! {
    /// Parsed-ahead templates expand as Go's `expand` does.
    #[test]
    fn templates_expand_as_go(template in "[$${}a1x0_é-]{0,12}", input in "[ab]{0,4}") {
        let re = Regexp::compile("(?P<a>a*)(b)?(?P<x>)(?P<a>b*)").unwrap();
        let mut locs = re.regex().capture_locations();
        prop_assert!(re.regex().captures_read(&mut locs, &input).is_some());
        let m: Vec<Option<(usize, usize)>> = (0..locs.len()).map(|i| locs.get(i)).collect();
        let mut ours = String::new();
        Template::new(&template, &re).expand(&input, &locs, &mut ours);
        prop_assert_eq!(ours, reference_expand(&template, re.names(), &input, &m));
    }

    /// On syntax both engines read alike, the translation matches what
    /// the regex crate itself does with Prometheus's anchoring.
    #[test]
    fn anchored_translation_matches_the_regex_crate(
        pattern in r"([ab.]|\((\?:)?[ab.|]{0,3}\)|\[[ab]{1,2}\])([*+?]|\{[1-3]\})?([ab.]|\([ab]\))?(\|[ab]{0,2})?",
        input in "[abc]{0,5}",
    ) {
        let ours = Regexp::new(&pattern).unwrap();
        let native = regex::Regex::new(&format!("^(?:{pattern})$")).unwrap();
        let mut a = ours.regex().capture_locations();
        let mut b = native.capture_locations();
        let ma = ours.regex().captures_read(&mut a, &input).map(|m| m.range());
        let mb = native.captures_read(&mut b, &input).map(|m| m.range());
        prop_assert_eq!(ma, mb);
        prop_assert_eq!(a.len(), b.len());
        for i in 0..a.len() {
            prop_assert_eq!(a.get(i), b.get(i));
        }
    }
}
