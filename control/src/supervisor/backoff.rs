//! When a `daemon: true` app that exited is started again: after a delay that doubles at each
//! exit up to a ceiling, and falls back to the first delay once the app has stayed up long enough.

use std::time::Duration;

/// A restart delay that doubles, up to a ceiling.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    reset_after: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `initial`, doubles up to `max`, and starts over after an app stayed up for
    /// `reset_after`.
    pub fn new(initial: Duration, max: Duration, reset_after: Duration) -> Backoff {
        Backoff {
            initial,
            max: max.max(initial),
            reset_after,
            next: initial,
        }
    }

    /// The delay before restarting an app that exited after running for `uptime`.
    pub fn delay(&mut self, uptime: Duration) -> Duration {
        if uptime >= self.reset_after {
            self.next = self.initial;
        }
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// The delay after a start that failed outright.
    pub fn failed_start(&mut self) -> Duration {
        self.delay(Duration::ZERO)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_ceiling_and_resets() {
        let second = Duration::from_secs(1);
        let mut backoff = Backoff::new(second, 60 * second, 60 * second);
        let delays: Vec<u64> = (0..8)
            .map(|_| backoff.delay(Duration::ZERO).as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(backoff.delay(61 * second), second);
        assert_eq!(backoff.failed_start(), 2 * second);
    }
}
