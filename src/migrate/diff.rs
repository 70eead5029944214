//! `--dry-run`'s output: unified diffs (the `similar` crate), readable by
//! `patch` and `git apply`.

use similar::TextDiff;

/// A unified diff from `old` (named `old_name`, `None` for a new file) to
/// `new` (named `new_name`), with three lines of context; empty when the
/// texts are equal.
pub fn unified(old: &str, new: &str, old_name: Option<&str>, new_name: &str) -> String {
    if old == new && old_name.is_some() {
        return String::new();
    }
    let old_label = old_name.unwrap_or("/dev/null");
    TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(old_label, new_name)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_files_diff_against_dev_null() {
        let d = unified("", "a\nb\n", None, "out/sdbridge.yml");
        assert_eq!(
            d,
            "--- /dev/null\n+++ out/sdbridge.yml\n@@ -0,0 +1,2 @@\n+a\n+b\n"
        );
        assert_eq!(unified("x\n", "x\n", Some("a"), "b"), "");
        let d = unified("x\ny\n", "x\nz\n", Some("p.yml"), "out/p.yml");
        assert!(
            d.starts_with("--- p.yml\n+++ out/p.yml\n@@ -1,2 +1,2 @@\n x\n-y\n+z\n"),
            "{d}"
        );
    }
}
