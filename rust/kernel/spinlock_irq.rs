// SPDX-License-Identifier: GPL-2.0

//! A spinlock that also disables local hard interrupts while held.
//!
//! C header: [`include/linux/spinlock.h`](srctree/include/linux/spinlock.h)
//!
//! Data that a hard interrupt handler, or code that runs with interrupts
//! disabled, may touch needs `spin_lock_irqsave()` everywhere: otherwise an
//! interrupt that arrives while the lock is held on the same CPU spins on
//! it forever. [`SpinLockIrq`] always takes `spin_lock_irqsave()` and
//! releases with `spin_unlock_irqrestore()`, restoring the interrupt state
//! the guard saved, so it is correct in every context: process, softirq,
//! hard interrupt, or with interrupts already disabled. The guard is not
//! [`Send`], so the saved flags are restored on the CPU that saved them.
//!
//! # Examples
//!
//! ```
//! use kernel::{new_spinlock_irq, spinlock_irq::SpinLockIrq, sync::Arc};
//!
//! let counter: Arc<SpinLockIrq<u64>> = Arc::pin_init(new_spinlock_irq!(0u64), GFP_KERNEL)?;
//! *counter.lock() += 1;
//! assert_eq!(*counter.lock(), 1);
//! # Ok::<(), Error>(())
//! ```

use crate::sync::lock::{Backend, Lock};

/// Creates a [`SpinLockIrq`] initialiser with the given name and a new lock
/// class.
#[macro_export]
macro_rules! new_spinlock_irq {
    ($inner:expr $(, $name:literal)? $(,)?) => {
        $crate::spinlock_irq::SpinLockIrq::new(
            $inner, $crate::optional_name!($($name)?), $crate::static_lock_class!())
    };
}
pub use new_spinlock_irq;

/// A spinlock whose holder runs with local interrupts disabled.
///
/// Use it for data that may be used with interrupts disabled or from a
/// hard interrupt handler. See the [module documentation](self).
pub type SpinLockIrq<T> = Lock<T, SpinLockIrqBackend>;

/// The [`Backend`] of [`SpinLockIrq`]:
/// `spin_lock_irqsave()`/`spin_unlock_irqrestore()`.
pub struct SpinLockIrqBackend;

// SAFETY: `spin_lock_irqsave()` gives exclusive ownership of the lock until
// `spin_unlock_irqrestore()`, like `spin_lock()` does. `unlock` restores
// the flags that the matching `lock` saved (the guard state), and `relock`
// uses the default implementation, which calls `lock` and stores the newly
// saved flags in the guard state.
unsafe impl Backend for SpinLockIrqBackend {
    type State = bindings::spinlock_t;
    type GuardState = crate::ffi::c_ulong;

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
        unsafe { bindings::spin_lock_irqsave(ptr) }
    }

    unsafe fn unlock(ptr: *mut Self::State, guard_state: &Self::GuardState) {
        // SAFETY: The safety requirements of this function ensure that the
        // caller is the owner of the spinlock, taken with
        // `spin_lock_irqsave()`, which returned `guard_state` on this CPU
        // (the guard is not `Send`).
        unsafe { bindings::spin_unlock_irqrestore(ptr, *guard_state) }
    }
}
