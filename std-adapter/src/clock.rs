//! The process clock, in the core's [`Instant`] units.

use nbecho_core::Instant;

/// Waits shorter than this yield in a loop instead of sleeping (see
/// [`Clock::sleep_until`]).
pub const SPIN_BELOW: std::time::Duration = std::time::Duration::from_micros(100);

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
