// SPDX-License-Identifier: GPL-2.0

//! Interrupts raised by software: an irq domain whose interrupts a driver
//! fires itself, and handler registration.
//!
//! C headers: [`include/linux/irqdomain.h`](srctree/include/linux/irqdomain.h),
//! [`include/linux/interrupt.h`](srctree/include/linux/interrupt.h)
//!
//! A [`Domain`] is a linear irq domain of `size` hardware interrupt numbers
//! with no interrupt controller behind it: its interrupts use the dummy
//! chip and the simple flow handler, and happen when its owner calls
//! [`Domain::fire`] (for instance when a message that means "interrupt"
//! arrives from a network). Each mapped number is an ordinary Linux
//! interrupt: drivers [`request`](Registration::new) it, `/proc/interrupts`
//! counts it, `irq_set_affinity` and friends accept it.
//!
//! # Examples
//!
//! ```
//! use core::sync::atomic::{AtomicU32, Ordering};
//! use kernel::{c_str, irq, str::CString, sync::Arc};
//!
//! struct Count(AtomicU32);
//!
//! impl irq::Handler for Count {
//!     fn handle(&self) -> irq::Return {
//!         self.0.fetch_add(1, Ordering::Relaxed);
//!         irq::Return::Handled
//!     }
//! }
//!
//! let domain = irq::Domain::new(4)?;
//! let virq = domain.map(2)?;
//! let count = Arc::new(Count(AtomicU32::new(0)), GFP_KERNEL)?;
//! let name = CString::try_from_fmt(kernel::fmt!("doctest-{}", 2))?;
//! let reg = irq::Registration::new(virq, name, count.clone())?;
//! assert!(domain.fire(2));
//! assert!(domain.fire(2));
//! assert!(!domain.fire(3)); // not mapped
//! assert_eq!(count.0.load(Ordering::Relaxed), 2);
//! drop(reg);
//! domain.dispose(2);
//! # Ok::<(), Error>(())
//! ```

use crate::{
    alloc::{flags::GFP_KERNEL, KBox, KVec},
    error::{code::*, from_err_ptr, to_result, Result},
    init::InPlaceInit,
    new_mutex,
    str::CString,
    sync::{Arc, Mutex},
};
use core::{
    pin::Pin,
    ptr::NonNull,
    sync::atomic::{AtomicU32, Ordering},
};

/// `irq_domain_ops` in a `static` (it contains raw pointers).
#[repr(transparent)]
struct DomainOps(bindings::irq_domain_ops);

// SAFETY: The table is never written.
unsafe impl Sync for DomainOps {}

static DOMAIN_OPS: DomainOps = DomainOps(bindings::irq_domain_ops {
    map: Some(domain_map),
    // SAFETY: All-zero is a valid `irq_domain_ops`: no callbacks.
    ..unsafe { core::mem::zeroed() }
});

/// `irq_domain_ops.map`: every interrupt of a [`Domain`] uses the dummy
/// chip (nothing to mask or acknowledge) and the simple flow handler.
///
/// # Safety
///
/// Called by the irq core with a valid `virq` being mapped.
unsafe extern "C" fn domain_map(
    _d: *mut bindings::irq_domain,
    virq: crate::ffi::c_uint,
    _hw: bindings::irq_hw_number_t,
) -> crate::ffi::c_int {
    // SAFETY: `virq` has a descriptor (safety requirements); the chip is a
    // static of the kernel image, never written through this pointer.
    unsafe {
        bindings::irq_set_chip_and_handler_name(
            virq,
            core::ptr::addr_of!(bindings::dummy_irq_chip).cast_mut(),
            Some(bindings::handle_simple_irq),
            core::ptr::null(),
        );
    }
    0
}

/// A linear irq domain whose interrupts software fires; see the
/// [module documentation](self).
///
/// Mapping and disposing sleep (process context); [`Domain::fire`] works
/// in any context. Dropping the domain disposes what is still mapped and
/// removes it: handlers must have been freed (their [`Registration`]s
/// dropped) first, as for any interrupt that goes away.
///
/// # Invariants
///
/// `ptr` is a domain created by `irq_domain_instantiate()` with
/// `DOMAIN_OPS` and `virqs.len()` interrupts, removed only in `drop`.
/// `virqs[hw]` is the Linux interrupt mapped for `hw`, or 0; it changes
/// only under `mapping`, together with the mapping itself.
pub struct Domain {
    ptr: NonNull<bindings::irq_domain>,
    virqs: KVec<AtomicU32>,
    mapping: Pin<KBox<Mutex<()>>>,
}

// SAFETY: The irq core serialises mapping and disposal internally
// (`irq_domain_mutex`), and firing is allowed from any CPU.
unsafe impl Send for Domain {}

// SAFETY: As above; the mapping table is atomics.
unsafe impl Sync for Domain {}

impl Domain {
    /// A domain of `size` interrupt numbers (1 to 4096), none mapped. May
    /// sleep.
    ///
    /// # Errors
    ///
    /// `EINVAL` for a bad size, `ENOMEM`.
    pub fn new(size: u32) -> Result<Self> {
        if !(1..=4096).contains(&size) {
            return Err(EINVAL);
        }
        let mut virqs = KVec::with_capacity(size as usize, GFP_KERNEL)?;
        for _ in 0..size {
            virqs.push(AtomicU32::new(0), GFP_KERNEL)?;
        }
        // SAFETY: All-zero is a valid `irq_domain_info` (no fwnode, parent,
        // generic chip or callbacks); the fields we need are set below.
        let mut info: bindings::irq_domain_info = unsafe { core::mem::zeroed() };
        info.size = size;
        info.hwirq_max = size as bindings::irq_hw_number_t;
        info.ops = &DOMAIN_OPS.0;
        let mapping = KBox::pin_init(new_mutex!(()), GFP_KERNEL)?;
        // SAFETY: `info` is valid for the call; the core copies what it
        // keeps, except `ops`, which is static.
        let ptr = from_err_ptr(unsafe { bindings::irq_domain_instantiate(&info) })?;
        // INVARIANT: Created above with `size` interrupts; none mapped.
        Ok(Self {
            ptr: NonNull::new(ptr).ok_or(ENOMEM)?,
            virqs,
            mapping,
        })
    }

    /// Maps hardware interrupt number `hw` and returns its Linux interrupt
    /// number (the same one if it was already mapped). May sleep.
    ///
    /// # Errors
    ///
    /// `EINVAL` for a number outside the domain, `ENOMEM`.
    pub fn map(&self, hw: u32) -> Result<u32> {
        let slot = self.virqs.get(hw as usize).ok_or(EINVAL)?;
        let _guard = self.mapping.lock();
        // SAFETY: `ptr` is a live domain (type invariants); `hw` is below
        // its size. Process context, as documented.
        let virq = unsafe {
            bindings::irq_create_mapping_affinity(
                self.ptr.as_ptr(),
                hw as bindings::irq_hw_number_t,
                core::ptr::null(),
            )
        };
        if virq == 0 {
            return Err(ENOMEM);
        }
        slot.store(virq, Ordering::Release);
        Ok(virq)
    }

    /// Disposes of the mapping of `hw`, if any. Its handler, if any, must
    /// have been freed. May sleep.
    pub fn dispose(&self, hw: u32) {
        let Some(slot) = self.virqs.get(hw as usize) else {
            return;
        };
        let _guard = self.mapping.lock();
        let virq = slot.swap(0, Ordering::AcqRel);
        if virq != 0 {
            // SAFETY: `virq` was mapped in this domain by `map` and is
            // disposed once (the swap above). Process context.
            unsafe { bindings::irq_dispose_mapping(virq) };
        }
    }

    /// The Linux interrupt mapped for `hw`, if any.
    pub fn virq(&self, hw: u32) -> Option<u32> {
        self.virqs
            .get(hw as usize)
            .map(|v| v.load(Ordering::Acquire))
            .filter(|&v| v != 0)
    }

    /// Runs the handlers of interrupt `hw` now, on this CPU, with local
    /// interrupts disabled; returns whether `hw` is mapped. Any context.
    pub fn fire(&self, hw: u32) -> bool {
        if self.virq(hw).is_none() {
            return false;
        }
        // SAFETY: `ptr` is a live domain; the function saves and restores
        // the interrupt state itself, so it may be called in any context.
        unsafe { bindings::generic_handle_domain_irq_safe(self.ptr.as_ptr(), hw) == 0 }
    }

    /// As [`Domain::fire`], from a task (a work item, a kernel thread):
    /// bottom halves are disabled around the handlers, as on return from
    /// a hardware interrupt, so that a softirq a handler raises (NAPI, a
    /// tasklet) runs when they are enabled again instead of waiting for
    /// the next interrupt. Process context with interrupts enabled.
    pub fn fire_from_task(&self, hw: u32) -> bool {
        // SAFETY: Process context with interrupts enabled (documented
        // requirement), where bottom halves may be disabled and enabled.
        unsafe { bindings::local_bh_disable() };
        let fired = self.fire(hw);
        // SAFETY: Disabled just above, on this CPU (preemption is off
        // meanwhile, so we did not move).
        unsafe { bindings::local_bh_enable() };
        fired
    }
}

impl Drop for Domain {
    fn drop(&mut self) {
        for hw in 0..self.virqs.len() {
            self.dispose(hw as u32);
        }
        // SAFETY: No mapping is left (above); the domain is removed once.
        unsafe { bindings::irq_domain_remove(self.ptr.as_ptr()) };
    }
}

/// What a [`Handler`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Return {
    /// The interrupt was not for this handler.
    None,
    /// The interrupt was handled.
    Handled,
}

/// An interrupt handler. It runs in hard interrupt context: it must not
/// sleep, and should do little (wake a thread, schedule NAPI or work).
pub trait Handler: Send + Sync + 'static {
    /// Handles one interrupt.
    fn handle(&self) -> Return;
}

/// The C handler: calls the [`Handler`] behind `dev_id`.
///
/// # Safety
///
/// `dev_id` is the pointer a [`Registration<H>`] passed to
/// `request_threaded_irq()`, valid until `free_irq()` returns.
unsafe extern "C" fn handle_irq<H: Handler>(
    _irq: crate::ffi::c_int,
    dev_id: *mut crate::ffi::c_void,
) -> bindings::irqreturn_t {
    // SAFETY: See the safety requirements; the registration keeps the
    // handler alive until `free_irq()` has waited for this call.
    let handler = unsafe { &*dev_id.cast::<H>() };
    match handler.handle() {
        Return::None => bindings::irqreturn_IRQ_NONE,
        Return::Handled => bindings::irqreturn_IRQ_HANDLED,
    }
}

/// A handler installed on an interrupt (`request_irq()`), removed when
/// dropped (`free_irq()`, which waits for a running handler).
///
/// # Invariants
///
/// `handler` is registered on `irq` with the address of its contents as
/// `dev_id` and `name` as its name, until `drop`.
pub struct Registration<H: Handler> {
    irq: u32,
    handler: Arc<H>,
    name: CString,
}

impl<H: Handler> Registration<H> {
    /// Installs `handler` on interrupt `irq` under `name` (what
    /// `/proc/interrupts` shows). May sleep.
    ///
    /// # Errors
    ///
    /// What `request_irq()` returns: `EINVAL` for an interrupt that does
    /// not exist, `EBUSY` if it is taken and not shared, `ENOMEM`.
    pub fn new(irq: u32, name: CString, handler: Arc<H>) -> Result<Self> {
        let dev_id = core::ptr::from_ref::<H>(&handler).cast_mut().cast();
        // SAFETY: `handle_irq::<H>` matches `dev_id`; `name` and the
        // handler outlive the registration (both are owned by `Self`, the
        // string's buffer does not move), which ends with `free_irq()`.
        to_result(unsafe {
            bindings::request_threaded_irq(
                irq,
                Some(handle_irq::<H>),
                None,
                0,
                name.as_char_ptr(),
                dev_id,
            )
        })?;
        // INVARIANT: Registered above.
        Ok(Self { irq, handler, name })
    }

    /// The interrupt number.
    pub fn irq(&self) -> u32 {
        self.irq
    }

    /// The handler.
    pub fn handler(&self) -> &Arc<H> {
        &self.handler
    }
}

impl<H: Handler> Drop for Registration<H> {
    fn drop(&mut self) {
        let _ = &self.name;
        // SAFETY: Registered with this `dev_id` (type invariants); after
        // `free_irq()` no handler call is running or will start.
        unsafe {
            bindings::free_irq(
                self.irq,
                core::ptr::from_ref::<H>(&self.handler).cast_mut().cast(),
            )
        };
    }
}
