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
