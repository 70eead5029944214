//! Exponential backoff with jitter, and the clamp every server-given delay
//! goes through, so no input can make a task sleep for ages or overflow an
//! `Instant`.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::Duration;

/// Longest delay a server may impose (`Retry-After`, a backoff cap).
pub const MAX_SERVER_DELAY: Duration = Duration::from_secs(300);

/// `delay`, at most [`MAX_SERVER_DELAY`].
pub fn clamp(delay: Duration) -> Duration {
    delay.min(MAX_SERVER_DELAY)
}

/// A random number, for jitter (no RNG dependency needed for this).
fn random() -> u64 {
    RandomState::new().hash_one(std::time::SystemTime::now())
}

/// Exponential backoff: `base` doubling per failure up to `cap`, each delay
/// jittered to 50-100% so retries of many clients spread out.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
}

impl Backoff {
    /// Backoff from `base` up to `cap` (itself at most
    /// [`MAX_SERVER_DELAY`]).
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff {
            base,
            cap: clamp(cap),
            failures: 0,
        }
    }

    /// The delay before the next try after one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.base.saturating_mul(1u32 << self.failures.min(16));
        self.failures = self.failures.saturating_add(1);
        let cap = exp.min(self.cap);
        let half = cap / 2;
        half + Duration::from_millis(random() % (half.as_millis() as u64).max(1))
    }

    /// After a success.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_with_jitter_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(500) && first <= Duration::from_secs(1));
        for _ in 0..40 {
            assert!(b.next_delay() <= Duration::from_secs(30));
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(1));
        let mut huge = Backoff::new(Duration::from_secs(1), Duration::MAX);
        for _ in 0..40 {
            assert!(huge.next_delay() <= MAX_SERVER_DELAY);
        }
    }

    #[test]
    fn server_delays_are_clamped() {
        assert_eq!(clamp(Duration::from_secs(u64::MAX)), MAX_SERVER_DELAY);
        assert_eq!(clamp(Duration::from_secs(3)), Duration::from_secs(3));
    }
}
