// SPDX-License-Identifier: GPL-2.0

//! Rate-limited printing, which 6.12's kernel crate lacks.
//!
//! [`pr_warn_ratelimited!`] is for messages a peer on the wire can trigger
//! at will (a malformed frame, a request for a function it was not
//! given): like the C macro, at most [`RateLimit::BURST`] messages per
//! call site every [`RateLimit::INTERVAL_NS`], then one line saying how
//! many were suppressed. The state is a few atomics per call site, so the
//! macro works in any context, interrupts included.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::time::Ktime;

/// The state of one call site.
pub struct RateLimit {
    /// Start of the current interval (ns, `CLOCK_MONOTONIC`); 0 before
    /// the first message.
    begin_ns: AtomicU64,
    printed: AtomicU32,
    missed: AtomicU32,
}

impl RateLimit {
    /// Length of an interval: `DEFAULT_RATELIMIT_INTERVAL`, 5 s.
    pub const INTERVAL_NS: u64 = 5_000_000_000;
    /// Messages per interval: `DEFAULT_RATELIMIT_BURST`.
    pub const BURST: u32 = 10;

    /// A call site's state, for a `static`.
    pub const fn new() -> Self {
        Self {
            begin_ns: AtomicU64::new(0),
            printed: AtomicU32::new(0),
            missed: AtomicU32::new(0),
        }
    }

    /// Whether the message may be printed now. Starting a new interval
    /// reports how many were suppressed in the last one. Racing callers
    /// may let a message or two more through; never fewer.
    pub fn allow(&self) -> bool {
        let now = u64::try_from(Ktime::ktime_get().to_ns())
            .unwrap_or(0)
            .max(1);
        let begin = self.begin_ns.load(Ordering::Relaxed);
        if (begin == 0 || now.saturating_sub(begin) >= Self::INTERVAL_NS)
            && self
                .begin_ns
                .compare_exchange(begin, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.printed.store(0, Ordering::Relaxed);
            let missed = self.missed.swap(0, Ordering::Relaxed);
            if missed > 0 {
                crate::pr_warn!("{} messages suppressed\n", missed);
            }
        }
        if self.printed.fetch_add(1, Ordering::Relaxed) < Self::BURST {
            true
        } else {
            self.missed.fetch_add(1, Ordering::Relaxed);
            false
        }
    }
}

impl Default for RateLimit {
    fn default() -> Self {
        Self::new()
    }
}

/// [`pr_warn!`](crate::pr_warn) at most [`RateLimit::BURST`] times per
/// [`RateLimit::INTERVAL_NS`] from this call site.
#[macro_export]
macro_rules! pr_warn_ratelimited (
    ($($arg:tt)*) => {{
        static RATELIMIT: $crate::ratelimit::RateLimit = $crate::ratelimit::RateLimit::new();
        if RATELIMIT.allow() {
            $crate::pr_warn!($($arg)*);
        }
    }}
);
