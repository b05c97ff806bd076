// SPDX-License-Identifier: GPL-2.0

//! Sleeping for a while, which 6.12's kernel crate cannot do.
//!
//! C header: [`include/linux/delay.h`](srctree/include/linux/delay.h)

/// Sleeps at least `ms` milliseconds, uninterruptibly (signals do not end
/// it). Process context only.
pub fn msleep(ms: u32) {
    // SAFETY: `msleep()` may be called from any process context; the
    // caller is in one (documented requirement, as for every sleeping
    // call; the kernel's might_sleep() check catches violations).
    unsafe { bindings::msleep(ms) };
}
