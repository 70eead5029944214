//! Threads whose death is fatal: the merger, its gzip thread and the
//! state writer.
//!
//! They own state that nothing else can rebuild in place (the merger holds
//! every source's parts; sources send only what changes), so a panic in
//! one of them is not restarted: the process logs which thread died and
//! why, and exits with [`EXIT_CODE`]. systemd (`Restart=on-failure` in
//! `examples/sdbridge.service`) or Kubernetes then starts a fresh process,
//! which serves `state_dir`'s last good bodies until its sources sync.
//! Left alone, a dead merger would freeze the snapshot while `/-/healthy`
//! kept answering `200`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

/// The exit code after a fatal thread died (`EX_SOFTWARE`).
pub const EXIT_CODE: i32 = 70;

/// The variable that makes a named thread panic, for the tests that prove
/// the process then exits (`SDBRIDGE_TEST_PANIC=merger`, `gzip`, `state`).
pub const TEST_PANIC_VAR: &str = "SDBRIDGE_TEST_PANIC";

/// Runs `body` on a thread named `sdbridge-{name}`; if it panics, or the
/// thread cannot be started, the process exits.
pub fn spawn(name: &'static str, body: impl FnOnce() + Send + 'static) {
    let started = std::thread::Builder::new()
        .name(format!("sdbridge-{name}"))
        .spawn(move || {
            if let Err(panic) = catch_unwind(AssertUnwindSafe(body)) {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".to_string());
                tracing::error!(
                    thread = name,
                    panic = %message,
                    exit_code = EXIT_CODE,
                    "a thread sdbridge cannot run without died; exiting so the service manager restarts it"
                );
                std::process::exit(EXIT_CODE);
            }
        });
    if let Err(e) = started {
        tracing::error!(thread = name, error = %e, exit_code = EXIT_CODE, "cannot start a thread sdbridge cannot run without");
        std::process::exit(EXIT_CODE);
    }
}

/// Panics if [`TEST_PANIC_VAR`] names `thread` (read once per process).
pub fn test_panic(thread: &str) {
    static NAMED: OnceLock<Option<String>> = OnceLock::new();
    let named = NAMED.get_or_init(|| std::env::var(TEST_PANIC_VAR).ok());
    if named.as_deref() == Some(thread) {
        panic!("{TEST_PANIC_VAR}={thread}");
    }
}
