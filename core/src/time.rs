//! Time as an input: a microsecond [`Instant`] and [`Duration`] that never read a clock.
//!
//! The core takes `now` as a parameter on every call that needs it (like smoltcp's
//! `time.rs`), so the same inputs always give the same outputs. Arithmetic saturates: an
//! instant never wraps, and `Instant::MAX` stands for "never".

use core::fmt;
use core::ops::{Add, Sub};

/// A point in time, in microseconds since an origin the caller chooses (boot, process
/// start, the simulation's zero).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant {
    micros: u64,
}

/// A span of time in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration {
    micros: u64,
}

impl Instant {
    /// The origin.
    pub const ZERO: Self = Self { micros: 0 };
    /// The far future: a deadline that never comes.
    pub const MAX: Self = Self { micros: u64::MAX };

    /// An instant `micros` microseconds after the origin.
    pub const fn from_micros(micros: u64) -> Self {
        Self { micros }
    }

    /// An instant `millis` milliseconds after the origin (saturating).
    pub const fn from_millis(millis: u64) -> Self {
        Self::from_micros(millis.saturating_mul(1_000))
    }

    /// An instant `secs` seconds after the origin (saturating).
    pub const fn from_secs(secs: u64) -> Self {
        Self::from_micros(secs.saturating_mul(1_000_000))
    }

    /// Microseconds since the origin.
    pub const fn total_micros(self) -> u64 {
        self.micros
    }

    /// The time from `earlier` to `self`, or zero if `earlier` is later.
    pub const fn saturating_duration_since(self, earlier: Self) -> Duration {
        Duration::from_micros(self.micros.saturating_sub(earlier.micros))
    }
}

impl Duration {
    /// No time at all.
    pub const ZERO: Self = Self { micros: 0 };
    /// The longest duration.
    pub const MAX: Self = Self { micros: u64::MAX };

    /// A duration of `micros` microseconds.
    pub const fn from_micros(micros: u64) -> Self {
        Self { micros }
    }

    /// A duration of `millis` milliseconds (saturating).
    pub const fn from_millis(millis: u64) -> Self {
        Self::from_micros(millis.saturating_mul(1_000))
    }

    /// A duration of `secs` seconds (saturating).
    pub const fn from_secs(secs: u64) -> Self {
        Self::from_micros(secs.saturating_mul(1_000_000))
    }

    /// The whole duration in microseconds.
    pub const fn total_micros(self) -> u64 {
        self.micros
    }

    /// The whole duration in milliseconds, rounded down.
    pub const fn total_millis(self) -> u64 {
        self.micros / 1_000
    }

    /// `self * factor`, saturating at [`Duration::MAX`].
    pub const fn saturating_mul(self, factor: u64) -> Self {
        Self::from_micros(self.micros.saturating_mul(factor))
    }

    /// True for the zero duration.
    pub const fn is_zero(self) -> bool {
        self.micros == 0
    }
}

impl Add<Duration> for Instant {
    type Output = Self;
    /// Saturates at [`Instant::MAX`] ("never").
    fn add(self, rhs: Duration) -> Self {
        Self::from_micros(self.micros.saturating_add(rhs.micros))
    }
}

impl Sub for Instant {
    type Output = Duration;
    /// Saturates at zero when `rhs` is later than `self`.
    fn sub(self, rhs: Self) -> Duration {
        self.saturating_duration_since(rhs)
    }
}

impl Add for Duration {
    type Output = Self;
    fn add(self, rhs: Self) -> Self {
        Self::from_micros(self.micros.saturating_add(rhs.micros))
    }
}

impl fmt::Display for Duration {
    /// `1.500000s`, `250ms`, `17us`: the largest unit that shows the value exactly.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = self.micros;
        if us % 1_000_000 == 0 {
            write!(f, "{}s", us / 1_000_000)
        } else if us % 1_000 == 0 {
            write!(f, "{}ms", us / 1_000)
        } else {
            write!(f, "{}us", us)
        }
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:06}s",
            self.micros / 1_000_000,
            self.micros % 1_000_000
        )
    }
}

/// When a driver sets its runtime's timer again for the core's
/// [`Wait`](crate::Action::Wait): only when the core's deadline comes earlier than the one
/// the timer is set to, or none is set (never set, or it rang). The core's deadline moves
/// later with every message (an idle deadline is the last progress plus the timeout);
/// setting a runtime's timer at each wait costs a timer update per message (on tokio,
/// about 500 instructions), where keeping the earlier one costs one wake-up per timeout
/// that finds nothing due, after which the timer is set for the later deadline.
///
/// ```
/// use nbecho_core::{Alarm, Duration, Instant};
///
/// let mut alarm = Alarm::new();
/// let t = Instant::from_secs(1);
/// assert!(alarm.set(t + Duration::from_secs(300), t)); // none set: set it
/// assert!(!alarm.set(t + Duration::from_secs(301), t)); // later: keep the earlier one
/// assert!(alarm.set(t + Duration::from_secs(10), t)); // earlier: set it again
/// alarm.rang(); // the timer went off (or was dropped)
/// assert!(alarm.set(t + Duration::from_secs(301), t + Duration::from_secs(10)));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Alarm {
    /// The deadline the runtime's timer is set to; `None` when none is.
    at: Option<Instant>,
}

impl Alarm {
    /// No timer set.
    pub const fn new() -> Self {
        Self { at: None }
    }

    /// The core asks to be polled again by `until` (it is `now`): whether to set the
    /// runtime's timer for `until`. True when none is set, when the one set is later than
    /// `until`, or when its time has passed (a driver that does not hear it ring); then
    /// `until` is taken as set.
    pub fn set(&mut self, until: Instant, now: Instant) -> bool {
        let again = self.at.is_none_or(|at| until < at || at <= now);
        if again {
            self.at = Some(until);
        }
        again
    }

    /// The runtime's timer rang, or the driver dropped it: none is set.
    pub fn rang(&mut self) {
        self.at = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alarm_is_set_again_only_earlier_or_after_it_is_due() {
        let mut alarm = Alarm::new();
        let now = Instant::from_secs(10);
        let at = |s| Instant::from_secs(s);
        assert!(alarm.set(at(20), now), "none set");
        assert!(!alarm.set(at(20), now), "the same");
        assert!(!alarm.set(at(25), now), "later");
        assert!(alarm.set(at(15), now), "earlier");
        assert!(!alarm.set(at(25), at(14)), "later, before it is due");
        assert!(alarm.set(at(25), at(15)), "its time has come");
        alarm.rang();
        assert!(alarm.set(at(30), at(16)), "it rang: none set");
        assert!(!alarm.set(at(31), at(16)));
    }

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(Instant::MAX + Duration::from_secs(1), Instant::MAX);
        assert_eq!(Instant::ZERO - Instant::from_secs(1), Duration::ZERO);
        assert_eq!(
            Instant::from_secs(3) - Instant::from_millis(500),
            Duration::from_millis(2_500)
        );
        assert_eq!(Duration::MAX.saturating_mul(2), Duration::MAX);
        assert_eq!(Duration::from_secs(u64::MAX), Duration::MAX);
    }

    #[test]
    fn display() {
        assert_eq!(Duration::from_secs(5).to_string(), "5s");
        assert_eq!(Duration::from_millis(250).to_string(), "250ms");
        assert_eq!(Duration::from_micros(17).to_string(), "17us");
        assert_eq!(Instant::from_micros(1_500_000).to_string(), "1.500000s");
    }
}
