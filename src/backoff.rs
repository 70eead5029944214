//! Exponential backoff with jitter, and the clamp every server-given delay
//! goes through (a minute), so no input can make a task sleep for ages or
//! overflow an `Instant`.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::Duration;

/// Longest delay a server may impose (`Retry-After`, Consul's or an
/// upstream's): one hostile header costs a source at most about a minute
/// (issue 18: at 5 minutes, a Consul change was served 598 s late).
pub const MAX_SERVER_DELAY: Duration = Duration::from_secs(60);

/// Longest backoff cap: a configured interval of hours still retries a
/// failed round within 5 minutes, and no cap overflows an `Instant`.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// A server-given `delay`, at most [`MAX_SERVER_DELAY`].
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
    /// Backoff from `base` up to `cap` (itself at most [`MAX_BACKOFF`]).
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff {
            base,
            cap: cap.min(MAX_BACKOFF),
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
            assert!(huge.next_delay() <= MAX_BACKOFF);
        }
    }

    /// Issue 18: a server-given delay is at most a minute (it was 5).
    #[test]
    fn server_delays_are_clamped_to_a_minute() {
        let minute = Duration::from_secs(60);
        assert_eq!(clamp(Duration::from_secs(u64::MAX)), minute);
        assert_eq!(clamp(Duration::from_secs(61)), minute);
        assert_eq!(clamp(minute), minute);
        assert_eq!(clamp(Duration::from_secs(3)), Duration::from_secs(3));
    }
}
