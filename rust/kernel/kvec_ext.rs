// SPDX-License-Identifier: GPL-2.0

//! What 6.12's [`KVec`] lacks: removing elements in place.
//!
//! [`KVec`]: crate::alloc::KVec

use crate::alloc::{Allocator, Vec};

/// Removing elements from a vector without allocating.
pub trait VecExt<T> {
    /// Keeps the elements for which `keep` returns true, in order, and drops
    /// the others.
    fn retain(&mut self, keep: impl FnMut(&T) -> bool);

    /// Drops every element, keeping the allocation.
    fn clear(&mut self) {
        self.retain(|_| false);
    }
}

impl<T, A: Allocator> VecExt<T> for Vec<T, A> {
    fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        let len = self.len();
        let mut kept = 0;
        for i in 0..len {
            if keep(&self.as_slice()[i]) {
                self.as_mut_slice().swap(kept, i);
                kept += 1;
            }
        }
        // The dropped elements are now `kept..len`.
        let tail = self.as_mut_ptr().wrapping_add(kept);
        // SAFETY: `kept <= len`: the first `kept` elements stay initialised.
        unsafe { self.set_len(kept) };
        // SAFETY: The `len - kept` elements at `tail` are initialised and,
        // past the new length, no longer owned by the vector; each is
        // dropped once.
        unsafe { core::ptr::drop_in_place(core::ptr::slice_from_raw_parts_mut(tail, len - kept)) };
    }
}
