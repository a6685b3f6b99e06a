//! The process clock, in the core's [`Instant`] units.

use nbecho_core::Instant;

/// Waits shorter than this yield in a loop instead of sleeping (see
/// [`Clock::sleep_until`]).
pub const SPIN_BELOW: std::time::Duration = std::time::Duration::from_micros(100);

/// Monotonic time since the clock was made.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    origin: std::time::Instant,
}

impl Clock {
    /// A clock whose zero is now.
    pub fn new() -> Self {
        Self {
            origin: std::time::Instant::now(),
        }
    }

    /// Now, in microseconds since the origin.
    pub fn now(&self) -> Instant {
        // Seconds and microseconds, not `as_micros`: no 128-bit arithmetic on a hot path
        // (u64 microseconds last 584,000 years).
        let elapsed = self.origin.elapsed();
        Instant::from_micros(
            elapsed
                .as_secs()
                .saturating_mul(1_000_000)
                .saturating_add(u64::from(elapsed.subsec_micros())),
        )
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
