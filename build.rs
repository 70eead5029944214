//! Build facts for `sdbridge --version` and `sdbridge_build_info`: the
//! commit the binary is built from (`git rev-parse`, "unknown" outside a
//! checkout or without git), the compiler and the target, as Prometheus's
//! `--version` prints its revision and Go version. No build date: the same
//! commit gives the same binary.

use std::path::Path;
use std::process::Command;

/// `git ARGS` in the package directory, trimmed; `None` on any failure.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let revision = git(&["rev-parse", "--short=12", "HEAD"]);
    if revision.is_some() {
        // A commit moves the checked-out branch's ref, a checkout or a
        // switch moves HEAD (per worktree). Only those files: the refs
        // directory is shared by every worktree and branch, and only
        // paths that exist (a missing one would rerun this every build).
        let dir = git(&["rev-parse", "--absolute-git-dir"]);
        let common = git(&["rev-parse", "--path-format=absolute", "--git-common-dir"]);
        let branch = git(&["symbolic-ref", "-q", "HEAD"]);
        let mut watched = vec![dir.as_ref().map(|d| Path::new(d).join("HEAD"))];
        if let (Some(common), Some(branch)) = (&common, &branch) {
            let loose = Path::new(common).join(branch);
            // A packed ref gets a loose file at the next commit, which
            // its directory's change shows.
            watched.push(Some(if loose.exists() {
                loose
            } else {
                loose.parent().map_or(loose.clone(), Path::to_path_buf)
            }));
            watched.push(Some(Path::new(common).join("packed-refs")));
        }
        for path in watched.into_iter().flatten().filter(|p| p.exists()) {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!(
        "cargo:rustc-env=SDBRIDGE_REVISION={}",
        revision.as_deref().unwrap_or("unknown")
    );
    println!("cargo:rustc-env=SDBRIDGE_RUSTC_VERSION={rustc_version}");
    println!("cargo:rustc-env=SDBRIDGE_TARGET={target}");
}
