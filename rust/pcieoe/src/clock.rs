// SPDX-License-Identifier: GPL-2.0

//! Time, randomness and frame output, as the engine sees them.
//!
//! The engine is sans-IO: it never reads a clock, draws random numbers from
//! a global source or sends a frame itself. The caller passes an [`Instant`]
//! to every call, owns an [`Rng`] and a [`FrameSink`], and asks the engine
//! when it next needs to be polled. In the kernel `Instant` comes from
//! `ktime_get_ns()`, the `Rng` from `get_random_u32()` and the sink queues an
//! skb; in tests all three are simulated.
//!
//! All arithmetic here saturates: an `Instant` never wraps and no operation
//! can overflow-panic.

use core::fmt;
use core::ops::{Add, Sub};

/// A point in time, in nanoseconds since an arbitrary epoch (boot, in the
/// kernel). Monotonic: callers must never pass an earlier `Instant` than a
/// previous call did (the engine tolerates it, but timers then fire late).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(u64);

/// A span of time in nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(u64);

impl Instant {
    /// The epoch itself.
    pub const ZERO: Instant = Instant(0);
    /// The latest representable instant ("never").
    pub const MAX: Instant = Instant(u64::MAX);

    /// An instant `ns` nanoseconds after the epoch.
    pub const fn from_nanos(ns: u64) -> Self {
        Instant(ns)
    }

    /// An instant `us` microseconds after the epoch (saturating).
    pub const fn from_micros(us: u64) -> Self {
        Instant(us.saturating_mul(1_000))
    }

    /// An instant `ms` milliseconds after the epoch (saturating).
    pub const fn from_millis(ms: u64) -> Self {
        Instant(ms.saturating_mul(1_000_000))
    }

    /// Nanoseconds since the epoch.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// The time from `earlier` to `self`, or zero if `earlier` is later.
    pub const fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration(self.0.saturating_sub(earlier.0))
    }

    /// `self + d`, or [`Instant::MAX`] on overflow.
    pub const fn saturating_add(self, d: Duration) -> Instant {
        Instant(self.0.saturating_add(d.0))
    }
}

impl Duration {
    /// No time at all.
    pub const ZERO: Duration = Duration(0);
    /// The longest representable duration.
    pub const MAX: Duration = Duration(u64::MAX);

    /// `ns` nanoseconds.
    pub const fn from_nanos(ns: u64) -> Self {
        Duration(ns)
    }

    /// `us` microseconds (saturating).
    pub const fn from_micros(us: u64) -> Self {
        Duration(us.saturating_mul(1_000))
    }

    /// `ms` milliseconds (saturating).
    pub const fn from_millis(ms: u64) -> Self {
        Duration(ms.saturating_mul(1_000_000))
    }

    /// `s` seconds (saturating).
    pub const fn from_secs(s: u64) -> Self {
        Duration(s.saturating_mul(1_000_000_000))
    }

    /// The duration in nanoseconds.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// The duration in whole microseconds.
    pub const fn as_micros(self) -> u64 {
        self.0 / 1_000
    }

    /// The duration in whole milliseconds.
    pub const fn as_millis(self) -> u64 {
        self.0 / 1_000_000
    }

    /// `self * n`, saturating at [`Duration::MAX`].
    pub const fn saturating_mul(self, n: u64) -> Duration {
        Duration(self.0.saturating_mul(n))
    }

    /// `self + other`, saturating at [`Duration::MAX`].
    pub const fn saturating_add(self, other: Duration) -> Duration {
        Duration(self.0.saturating_add(other.0))
    }

    /// `self - other`, or zero.
    pub const fn saturating_sub(self, other: Duration) -> Duration {
        Duration(self.0.saturating_sub(other.0))
    }
}

/// Saturating: `Instant::MAX` rather than an overflow.
impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        self.saturating_add(d)
    }
}

/// Saturating: zero when `rhs` is later than `self`.
impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_duration_since(rhs)
    }
}

/// Saturating: `Duration::MAX` rather than an overflow.
impl Add<Duration> for Duration {
    type Output = Duration;
    fn add(self, d: Duration) -> Duration {
        self.saturating_add(d)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}us", self.0 / 1_000, self.0 % 1_000)
    }
}

/// The earlier of two optional deadlines (`None` means "no deadline").
pub fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// A source of the current time.
pub trait Clock {
    /// The current time.
    fn now(&self) -> Instant;
}

/// A source of random numbers (session epochs, initial sequence numbers,
/// discovery nonces). Need not be cryptographic, but must differ across
/// reboots so that a restarted peer picks a new session epoch.
pub trait Rng {
    /// The next random 32-bit value.
    fn next_u32(&mut self) -> u32;
}

/// The frame could not be queued: the transmit queue is full. The engine
/// keeps the frame (or the state that produces it) and tries again at the
/// next poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SinkFull;

impl fmt::Display for SinkFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("transmit queue full")
    }
}

/// Where the engine puts the frames it wants sent.
pub trait FrameSink {
    /// Queues one complete Ethernet frame (destination MAC first, no FCS).
    /// The bytes are only valid during the call: copy them.
    ///
    /// # Errors
    ///
    /// [`SinkFull`] when the frame cannot be queued now.
    fn send(&mut self, frame: &[u8]) -> Result<(), SinkFull>;
}

impl<S: FrameSink + ?Sized> FrameSink for &mut S {
    fn send(&mut self, frame: &[u8]) -> Result<(), SinkFull> {
        (**self).send(frame)
    }
}

impl<R: Rng + ?Sized> Rng for &mut R {
    fn next_u32(&mut self) -> u32 {
        (**self).next_u32()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_saturate() {
        assert_eq!(Instant::MAX + Duration::from_secs(1), Instant::MAX);
        assert_eq!(Instant::ZERO - Instant::from_millis(1), Duration::ZERO);
        assert_eq!(
            Instant::from_millis(3) - Instant::from_millis(1),
            Duration::from_millis(2)
        );
        assert_eq!(Duration::MAX.saturating_mul(3), Duration::MAX);
        assert_eq!(Duration::from_micros(1500).as_millis(), 1);
    }

    #[test]
    fn earliest_ignores_none() {
        let a = Some(Instant::from_nanos(5));
        let b = Some(Instant::from_nanos(3));
        assert_eq!(earliest(a, b), b);
        assert_eq!(earliest(a, None), a);
        assert_eq!(earliest(None, None), None);
    }
}
