// SPDX-License-Identifier: GPL-2.0

//! Waiting for a work item, which 6.12's `workqueue` module cannot do.
//!
//! A module that queues work on a system workqueue must wait, before it
//! unloads (or frees what the work uses), until the last queued instance
//! has finished running: the work function's code is the module's.

use crate::workqueue::{HasWork, Work};

/// Waits until the work of `item` (queued before this call) has finished
/// running; returns whether it had to wait. Process context; sleeps.
///
/// The caller makes sure nothing queues the work again afterwards if it
/// needs it idle for good (this waits only for what was queued before).
pub fn flush<T: HasWork<T, ID>, const ID: u64>(item: &T) -> bool {
    let ptr = core::ptr::from_ref(item).cast_mut();
    // SAFETY: `ptr` comes from a reference, so it points at a valid `T`.
    let work = unsafe { T::raw_get_work(ptr) };
    // SAFETY: `work` points at the initialised `Work` field of `item`
    // (a `Work` is only ever created pinned and initialised by
    // `Work::new`), which stays valid while `item` is borrowed, i.e. for
    // this call. `flush_work()` only waits; it may sleep, which the caller
    // allows (process context, as documented).
    unsafe { bindings::flush_work(Work::raw_get(work)) }
}
