//! The process clock, in the core's [`Instant`] units.

use nbecho_core::Instant;

/// Waits shorter than this yield in a loop instead of sleeping (see
/// [`Clock::sleep_until`]).
pub const SPIN_BELOW: std::time::Duration = std::time::Duration::from_micros(100);

/// Deadlines nearer than this are timed from a fresh reading (see [`Clock::left`]).
pub const NEAR: nbecho_core::Duration = nbecho_core::Duration::from_millis(100);

/// Monotonic time since the clock was made.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// The monotonic clock's reading at the origin, in microseconds.
    origin: u64,
}

impl Clock {
    /// A clock whose zero is now.
    pub fn new() -> Self {
        Self {
            origin: crate::sys::monotonic_micros(),
        }
    }

    /// Now, in microseconds since the origin.
    pub fn now(&self) -> Instant {
        // The monotonic clock never goes back; u64 microseconds last 584,000 years.
        Instant::from_micros(crate::sys::monotonic_micros().saturating_sub(self.origin))
    }

    /// The time left until `until`, for a wait's timeout. `now` is the caller's last
    /// reading, which a driver loop takes once per wake-up and every few dozen steps, so
    /// at most a few hundred µs old: a deadline [`NEAR`] or farther (an idle timeout,
    /// after every message at default flags) is timed from it, which saves a clock read
    /// per wake-up and errs by a fraction of a percent (within epoll's own rounding up
    /// to whole milliseconds); a nearer one (an accept back-off, a probe round, a hold)
    /// reads the clock.
    #[inline]
    pub fn left(&self, now: Instant, until: Instant) -> std::time::Duration {
        let left = until - now;
        let left = if left < NEAR {
            until - self.now()
        } else {
            left
        };
        std::time::Duration::from_micros(left.total_micros())
    }

    /// Waits until `until`, but at most `cap` (so that signals are noticed).
    ///
    /// Waits shorter than [`SPIN_BELOW`] yield the CPU in a loop instead of sleeping:
    /// Linux lets a sleeping thread oversleep by its timer slack (50 µs by default), which
    /// would turn the core's first, shortest back-off steps into far longer ones and add
    /// that to the latency of a connection that is only briefly idle. Longer waits sleep.
    pub fn sleep_until(&self, until: Option<Instant>, cap: std::time::Duration) {
        let nap = match until {
            Some(until) => {
                std::time::Duration::from_micros((until - self.now()).total_micros()).min(cap)
            }
            None => cap,
        };
        if nap < SPIN_BELOW {
            let end = std::time::Instant::now() + nap;
            while std::time::Instant::now() < end {
                std::thread::yield_now();
            }
        } else {
            std::thread::sleep(nap);
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nbecho_core::Duration;

    #[test]
    fn left_times_a_far_deadline_from_the_reading_given_and_a_near_one_afresh() {
        let clock = Clock::new();
        let then = clock.now();
        std::thread::sleep(std::time::Duration::from_millis(20));
        // Far: from `then`, the reading given, although 20 ms have passed.
        let far = then + NEAR + Duration::from_millis(100);
        assert_eq!(clock.left(then, far), std::time::Duration::from_millis(200));
        // Near: from a fresh reading, so at least the 20 ms slept are gone.
        let near = then + Duration::from_millis(60);
        assert!(clock.left(then, near) <= std::time::Duration::from_millis(40));
        // Passed: nothing left.
        assert!(clock.left(then, then).is_zero());
    }
}
