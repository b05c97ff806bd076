// SPDX-License-Identifier: GPL-2.0

//! High-resolution timers that call a Rust handler in softirq context.
//!
//! C header: [`include/linux/hrtimer.h`](srctree/include/linux/hrtimer.h)
//!
//! A [`Timer`] owns its handler data `T` and calls [`TimerHandler::expired`]
//! when it fires. It runs on `CLOCK_MONOTONIC` (the clock of
//! [`Ktime::ktime_get`]) in *soft* mode (`HRTIMER_MODE_ABS_SOFT`): the
//! handler runs in softirq context, like a network receive handler, so the
//! two can share data under a [`SpinLockBh`](crate::spinlock_bh::SpinLockBh)
//! and the handler may transmit packets (which a hard-interrupt handler may
//! not).
//!
//! A timer is one-shot: the handler re-arms it with [`Timer::start_at`] when
//! it wants to run again. Dropping the timer cancels it and waits for a
//! running handler to return, so the handler never outlives its data.
//!
//! # Examples
//!
//! ```
//! use core::sync::atomic::{AtomicU32, Ordering};
//! use kernel::hrtimer::{Timer, TimerHandler};
//! use kernel::time::Ktime;
//! use kernel::sync::Arc;
//!
//! struct Ticks(AtomicU32);
//!
//! impl TimerHandler for Ticks {
//!     fn expired(timer: &Timer<Self>) {
//!         timer.0.fetch_add(1, Ordering::Relaxed);
//!     }
//! }
//!
//! let t = Arc::pin_init(Timer::new(Ticks(AtomicU32::new(0))), GFP_KERNEL)?;
//! t.start_at(Ktime::ktime_get());
//! // Dropping `t` cancels the timer (and waits for the handler if it runs).
//! # Ok::<(), Error>(())
//! ```

use crate::{error::Error, init::PinInit, time::Ktime, types::Opaque};
use core::{ops::Deref, pin::Pin};
use macros::{pin_data, pinned_drop};

/// What a [`Timer`] does when it expires.
pub trait TimerHandler: Sync + Sized {
    /// Called when `timer` expires, in softirq context: it must not sleep.
    ///
    /// Never runs twice at once for one timer. It may re-arm the timer
    /// with [`Timer::start_at`]; it must not drop the last owner of the
    /// timer (dropping waits for this call to return: a deadlock).
    fn expired(timer: &Timer<Self>);
}

/// A one-shot `CLOCK_MONOTONIC` hrtimer whose handler runs in softirq
/// context, holding the handler's data `T` (reached through [`Deref`]).
///
/// # Invariants
///
/// `raw` was initialised by `hrtimer_init()` for `CLOCK_MONOTONIC` and
/// `HRTIMER_MODE_ABS_SOFT` with [`Timer::run`] as its function, and the
/// timer is neither queued nor running once [`Timer`]'s drop has begun
/// dropping `data`.
#[pin_data(PinnedDrop)]
pub struct Timer<T: TimerHandler> {
    #[pin]
    raw: Opaque<bindings::hrtimer>,
    #[pin]
    data: T,
}

// SAFETY: `Timer` can be sent to another thread if its data can: the C
// timer has no thread affinity, and dropping it (cancelling) is allowed on
// any CPU.
unsafe impl<T: TimerHandler + Send> Send for Timer<T> {}

// SAFETY: The only operation on a shared `Timer` is `start_at`, which the C
// API serialises with the timer base's lock, so it may run on many CPUs at
// once; the data is shared with the handler, which is why
// `TimerHandler: Sync`.
unsafe impl<T: TimerHandler> Sync for Timer<T> {}

impl<T: TimerHandler> Timer<T> {
    /// A timer, not armed, holding the data `data` initialises.
    pub fn new(data: impl PinInit<T, Error>) -> impl PinInit<Self, Error> {
        crate::try_pin_init!(Self {
            // INVARIANT: `hrtimer_init()` for CLOCK_MONOTONIC and soft
            // absolute mode, and the function set to `run` before the timer
            // can be armed (only `start_at` arms it, on a pinned `Timer`).
            // SAFETY: `slot` is valid for writes while the closure runs;
            // `hrtimer_init()` initialises every field of the timer.
            raw <- Opaque::ffi_init(|slot: *mut bindings::hrtimer| unsafe {
                bindings::hrtimer_init(
                    slot,
                    bindings::CLOCK_MONOTONIC as bindings::clockid_t,
                    bindings::hrtimer_mode_HRTIMER_MODE_ABS_SOFT,
                );
                (*slot).function = Some(Self::run);
            }),
            data <- data,
        }? Error)
    }

    /// Arms (or re-arms) the timer to expire at `expires` on
    /// `CLOCK_MONOTONIC`; an instant in the past fires at once.
    ///
    /// May be called from any context, the handler included.
    pub fn start_at(&self, expires: Ktime) {
        // SAFETY: By the type invariants the timer was initialised, and it
        // is pinned (a `Timer` is only reachable pinned once initialised);
        // `hrtimer_start_range_ns()` may be called in any context.
        unsafe {
            bindings::hrtimer_start_range_ns(
                self.raw.get(),
                expires.to_ns(),
                0,
                bindings::hrtimer_mode_HRTIMER_MODE_ABS_SOFT,
            )
        }
    }

    /// The C callback.
    ///
    /// # Safety
    ///
    /// `ptr` must be the `raw` field of a live, pinned [`Timer<T>`]: the
    /// timer core calls it so, and `Timer`'s drop cancels the timer (and
    /// waits for this function) before the `Timer` goes away.
    unsafe extern "C" fn run(ptr: *mut bindings::hrtimer) -> bindings::hrtimer_restart {
        // SAFETY: By the safety requirements `ptr` is the `raw` field of a
        // `Timer<T>`; `Opaque<hrtimer>` is `repr(transparent)` over the
        // `hrtimer`, so the cast gives a pointer to the field.
        let this =
            unsafe { crate::container_of!(ptr.cast::<Opaque<bindings::hrtimer>>(), Self, raw) };
        // SAFETY: The `Timer` is live until its drop has cancelled the
        // timer, which waits for this call to return.
        T::expired(unsafe { &*this });
        bindings::hrtimer_restart_HRTIMER_NORESTART
    }
}

impl<T: TimerHandler> Deref for Timer<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.data
    }
}

#[pinned_drop]
impl<T: TimerHandler> PinnedDrop for Timer<T> {
    fn drop(self: Pin<&mut Self>) {
        // INVARIANT: `hrtimer_cancel()` dequeues the timer and waits for a
        // running handler; a handler that re-arms the timer while it waits
        // is dequeued by its next attempt, so on return the timer is idle,
        // and nothing else can arm it (this is the last reference).
        // SAFETY: By the type invariants the timer was initialised.
        unsafe { bindings::hrtimer_cancel(self.raw.get()) };
    }
}
