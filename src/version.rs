//! What build this is: the version, and the commit it was built from
//! (`build.rs`), for `--version` and `sdbridge_build_info`.

/// The crate's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The commit built (12 hex digits), or `unknown` outside a git checkout.
pub const REVISION: &str = env!("SDBRIDGE_REVISION");

/// `rustc --version` of the compiler that built it.
pub const RUSTC_VERSION: &str = env!("SDBRIDGE_RUSTC_VERSION");

/// The target triple built for.
pub const TARGET: &str = env!("SDBRIDGE_TARGET");

/// What `sdbridge --version` prints, laid out as Prometheus's
/// `--version` is (so scripts that read one read the other).
pub fn long() -> String {
    format!(
        "sdbridge, version {VERSION} (revision: {REVISION})\n  rustc version:    {RUSTC_VERSION}\n  platform:         {TARGET}\n"
    )
}
