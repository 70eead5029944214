/// Returns early from a test (after printing why) when an external binary
/// is missing, unless `SDBRIDGE_REQUIRE_E2E=1` makes that a failure.
macro_rules! require_binary {
    ($name:expr) => {
        match crate::util::require_binary($name) {
            Some(path) => path,
            None => return,
        }
    };
}

/// Creates a database fixture (`MariaDb`, `Postgres`, in scope), or returns
/// from the test when its server is missing (see `tests/sql_util.rs`).
macro_rules! fixture {
    ($kind:ident) => {
        match $kind::create() {
            Some(f) => f,
            None => return,
        }
    };
}
