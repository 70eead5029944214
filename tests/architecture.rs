//! The crate's shape: no two modules import each other, directly or
//! around a circle (data flows config → sources → merge → snapshot →
//! http; shared vocabulary lives in leaf modules), and source files stay
//! sized to their subject.
//!
//! An edge is a `use crate::...` / `use super::...` line, or a
//! `crate::...` path in code (comments and `#[cfg(test)]` code left out),
//! from one file's module to the module it names. A module using its own
//! ancestor (a submodule using its parent's vocabulary) is no edge: that
//! is how a `mod.rs` and its parts share one subject.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

fn modules(src: &Path) -> BTreeMap<Module, PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read src").flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(src, &mut files);
    files
        .into_iter()
        .map(|path| {
            let rel = path
                .strip_prefix(src)
                .expect("under src")
                .with_extension("");
            let mut parts: Module = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(
                parts.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                parts.pop();
            }
            (parts, path)
        })
        .collect()
}

/// The code of a file without comments and without what follows its first
/// `#[cfg(test)]`.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read source");
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths a `use` tree names: `a::{b, c::{d}}` is `a::b`, `a::c::d`.
fn expand(prefix: &[String], tree: &str) -> Vec<Module> {
    if let Some(inner) = tree.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
        let (mut depth, mut current, mut items) = (0, String::new(), Vec::new());
        for ch in inner.chars() {
            match ch {
                '{' => depth += 1,
                '}' => depth -= 1,
                _ => {}
            }
            if ch == ',' && depth == 0 {
                items.push(std::mem::take(&mut current));
            } else {
                current.push(ch);
            }
        }
        items.push(current);
        return items
            .iter()
            .filter(|i| !i.is_empty())
            .flat_map(|i| expand(prefix, i))
            .collect();
    }
    if let Some(i) = tree.find("::{") {
        let mut p = prefix.to_vec();
        p.extend(tree[..i].split("::").map(str::to_string));
        return expand(&p, &tree[i + 2..]);
    }
    let mut p = prefix.to_vec();
    p.extend(tree.split("::").map(str::to_string));
    vec![p]
}

fn edges(mods: &BTreeMap<Module, PathBuf>) -> BTreeMap<Module, BTreeSet<Module>> {
    let resolve = |path: &[String]| -> Option<Module> {
        let mut p = path.to_vec();
        while !p.is_empty() && !mods.contains_key(&p) {
            p.pop();
        }
        (!p.is_empty()).then_some(p)
    };
    let use_line =
        regex::Regex::new(r"(?m)^\s*(?:pub(?:\([a-z]+\))?\s+)?use\s+([^;]+);").expect("regex");
    let inline = regex::Regex::new(r"(?:^|[^\w:])crate((?:::\w+)+)").expect("regex");
    let mut out: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (module, path) in mods {
        let text = code(path);
        let mut named: Vec<Module> = Vec::new();
        for caps in use_line.captures_iter(&text) {
            let tree: String = caps[1].chars().filter(|c| !c.is_whitespace()).collect();
            for p in expand(&[], &tree) {
                match p.first().map(String::as_str) {
                    Some("crate") => named.push(p[1..].to_vec()),
                    Some("super") => {
                        let mut base = module.clone();
                        base.pop();
                        let mut rest = &p[1..];
                        while rest.first().map(String::as_str) == Some("super") {
                            base.pop();
                            rest = &rest[1..];
                        }
                        base.extend(rest.iter().cloned());
                        named.push(base);
                    }
                    _ => {}
                }
            }
        }
        for caps in inline.captures_iter(&text) {
            named.push(caps[1].split("::").skip(1).map(str::to_string).collect());
        }
        for target in named.iter().filter_map(|p| resolve(p)) {
            let ancestor = module.len() >= target.len() && module[..target.len()] == target[..];
            if !ancestor {
                out.entry(module.clone()).or_default().insert(target);
            }
        }
    }
    out
}

/// The strongly connected components of more than one module.
fn circles(graph: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    // Tarjan's algorithm, iterative enough for a crate's size.
    struct State<'g> {
        graph: &'g BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'g Module, usize>,
        low: BTreeMap<&'g Module, usize>,
        stack: Vec<&'g Module>,
        on: BTreeSet<&'g Module>,
        found: Vec<Vec<Module>>,
    }
    fn visit<'g>(s: &mut State<'g>, v: &'g Module) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let Some((w, _)) = s.graph.get_key_value(w) else {
                continue;
            };
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on.remove(w);
                component.push(w.clone());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                s.found.push(component);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.found
}

#[test]
fn no_two_modules_import_each_other() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mods = modules(&src);
    let graph = edges(&mods);
    assert!(
        graph.values().map(BTreeSet::len).sum::<usize>() > 50,
        "the import graph looks empty: the reader is broken"
    );
    let found: Vec<String> = circles(&graph)
        .iter()
        .map(|c| {
            c.iter()
                .map(|m| m.join("::"))
                .collect::<Vec<_>>()
                .join(" <-> ")
        })
        .collect();
    assert!(found.is_empty(), "import circles:\n{}", found.join("\n"));
}

/// The detector itself: a made-up crate with one circle and one
/// parent-child pair (which is allowed).
#[test]
fn the_circle_detector_finds_a_circle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path();
    std::fs::create_dir_all(src.join("a")).expect("dir");
    std::fs::write(src.join("lib.rs"), "pub mod a;\npub mod b;\n").expect("lib");
    std::fs::write(
        src.join("a/mod.rs"),
        "mod c;\nuse crate::b::X;\nuse c::Y;\n",
    )
    .expect("a");
    std::fs::write(src.join("a/c.rs"), "use super::Z;\n").expect("c");
    std::fs::write(
        src.join("b.rs"),
        "// use crate::nothing;\nfn f() { crate::a::g() }\n",
    )
    .expect("b");
    let mods = modules(src);
    let found = circles(&edges(&mods));
    assert_eq!(found.len(), 1, "{found:?}");
    let mut names: Vec<String> = found[0].iter().map(|m| m.join("::")).collect();
    names.sort();
    assert_eq!(names, ["a", "b"]);
}

/// Files sized to their subject: at most about 650 lines of code before
/// the tests (issue 19), and test files at most 1,500 lines.
#[test]
fn files_stay_within_their_size() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut over = Vec::new();
    for (_, path) in modules(&root.join("src")) {
        let lines = code(&path).lines().filter(|l| !l.trim().is_empty()).count();
        if lines > 650 {
            over.push(format!("{}: {lines} lines of code", path.display()));
        }
    }
    for entry in std::fs::read_dir(root.join("tests"))
        .expect("tests")
        .flatten()
    {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "rs") {
            let lines = std::fs::read_to_string(&path)
                .expect("read")
                .lines()
                .count();
            if lines > 1500 {
                over.push(format!("{}: {lines} lines", path.display()));
            }
        }
    }
    assert!(
        over.is_empty(),
        "files over their size:\n{}",
        over.join("\n")
    );
}
