//! The process clock, in the core's [`Instant`] units.

use nbecho_core::Instant;

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
        let micros = self.origin.elapsed().as_micros();
        Instant::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
    }

    /// Sleeps until `until`, but at most `cap` (so that signals are noticed).
    pub fn sleep_until(&self, until: Option<Instant>, cap: std::time::Duration) {
        let nap = match until {
            Some(until) => {
                std::time::Duration::from_micros((until - self.now()).total_micros()).min(cap)
            }
            None => cap,
        };
        if !nap.is_zero() {
            std::thread::sleep(nap);
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}
