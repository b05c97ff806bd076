// SPDX-License-Identifier: GPL-2.0

//! A spinlock that also disables bottom halves (softirqs) while held.
//!
//! C header: [`include/linux/spinlock.h`](srctree/include/linux/spinlock.h)
//!
//! 6.12's [`SpinLock`](crate::sync::SpinLock) takes `spin_lock()`, which is
//! only correct for data that softirqs never touch. Data shared between
//! process context and a softirq (a network receive handler, a soft
//! hrtimer, a tasklet) needs `spin_lock_bh()` in process context: otherwise
//! a softirq that interrupts the lock holder on the same CPU spins on the
//! lock forever. [`SpinLockBh`] always takes `spin_lock_bh()`, which is also
//! correct (if slightly redundant) when the caller already runs in a
//! softirq. It must not be taken with hard interrupts disabled or from a
//! hard interrupt handler (`spin_unlock_bh()` would re-enable softirqs
//! there).
//!
//! # Examples
//!
//! ```
//! use kernel::{new_spinlock_bh, spinlock_bh::SpinLockBh, sync::Arc};
//!
//! let counter = Arc::pin_init(new_spinlock_bh!(0u64), GFP_KERNEL)?;
//! *counter.lock() += 1;
//! assert_eq!(*counter.lock(), 1);
//! # Ok::<(), Error>(())
//! ```

use crate::sync::lock::{Backend, Lock};

/// Creates a [`SpinLockBh`] initialiser with the given name and a new lock
/// class.
#[macro_export]
macro_rules! new_spinlock_bh {
    ($inner:expr $(, $name:literal)? $(,)?) => {
        $crate::spinlock_bh::SpinLockBh::new(
            $inner, $crate::optional_name!($($name)?), $crate::static_lock_class!())
    };
}
pub use new_spinlock_bh;

/// A spinlock whose holder runs with bottom halves disabled.
///
/// Use it for data that softirq handlers and process context both use.
/// See the [module documentation](self).
pub type SpinLockBh<T> = Lock<T, SpinLockBhBackend>;

/// The [`Backend`] of [`SpinLockBh`]: `spin_lock_bh()`/`spin_unlock_bh()`.
pub struct SpinLockBhBackend;

// SAFETY: `spin_lock_bh()` gives exclusive ownership of the lock until
// `spin_unlock_bh()`, like `spin_lock()` does, and `relock` uses the
// default implementation, which calls `lock` (the same method).
unsafe impl Backend for SpinLockBhBackend {
    type State = bindings::spinlock_t;
    type GuardState = ();

    unsafe fn init(
        ptr: *mut Self::State,
        name: *const crate::ffi::c_char,
        key: *mut bindings::lock_class_key,
    ) {
        // SAFETY: The safety requirements ensure that `ptr` is valid for
        // writes, and `name` and `key` are valid for reads indefinitely.
        unsafe { bindings::__spin_lock_init(ptr, name, key) }
    }

    unsafe fn lock(ptr: *mut Self::State) -> Self::GuardState {
        // SAFETY: The safety requirements of this function ensure that `ptr`
        // points to a valid initialised spinlock.
        unsafe { bindings::spin_lock_bh(ptr) }
    }

    unsafe fn unlock(ptr: *mut Self::State, _guard_state: &Self::GuardState) {
        // SAFETY: The safety requirements of this function ensure that the
        // caller is the owner of the spinlock, taken with `spin_lock_bh()`.
        unsafe { bindings::spin_unlock_bh(ptr) }
    }
}
