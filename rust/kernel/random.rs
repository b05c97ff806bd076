// SPDX-License-Identifier: GPL-2.0

//! Random numbers from the kernel's random number generator.
//!
//! C header: [`include/linux/random.h`](srctree/include/linux/random.h)

/// Returns a random 32-bit value from the kernel's CRNG.
///
/// Cryptographically secure once the CRNG is initialised (early in boot);
/// never blocks and may be called from any context, hard interrupts
/// included.
///
/// # Examples
///
/// ```
/// let a = kernel::random::u32();
/// let b = kernel::random::u32();
/// // Almost surely different; nothing else can be said.
/// let _ = (a, b);
/// ```
pub fn u32() -> u32 {
    // SAFETY: `get_random_u32()` has no preconditions and may be called from
    // any context.
    unsafe { bindings::get_random_u32() }
}
