// SPDX-License-Identifier: GPL-2.0

//! What the driver of a function on a [`RootBus`](super::RootBus) uses
//! instead of CPU loads and stores and the PCI core's MSI-X: [`Mmio`] for
//! its BARs, [`Vectors`] for its interrupts.
//!
//! A CPU load or store to a BAR of such a function reaches nothing: the
//! window is address space that nothing decodes, because the function is
//! not behind a real bridge. The same holds for the PCI core's MSI-X code,
//! which masks and programs the MSI-X table in a BAR with `readl()` and
//! `writel()` on an `ioremap()` of it (`msix_mask_all()`,
//! `pci_msix_write_vector_ctrl()`, `__pci_write_msi_msg()`), so
//! `pci_alloc_irq_vectors()` cannot work on these functions. Both go
//! through the bus's [`ConfigOps`] instead, reached from the device's bus
//! (`sysdata`): a driver in another module needs no symbol of the module
//! that owns the bus.
//!
//! Both handles hold a reference to the `pci_dev`, which keeps the bus
//! data allocated; calls fail with `ENODEV` once the bus is going away.
//! [`Mmio::post`] is the one call that never sleeps.
//! A driver drops them in its `remove` callback.

use super::{ConfigOps, Host, RcuGuard, PCI_OPS};
use crate::{
    alloc::KVec,
    error::{code::*, Result},
    pci_driver::Device,
};
use core::{ptr::NonNull, sync::atomic::Ordering};

/// The memory space (BARs) of a function on a [`RootBus`](super::RootBus).
///
/// All calls but [`Mmio::post`] are process context and may sleep.
///
/// # Invariants
///
/// `pdev` is a `pci_dev` on the root bus of a `RootBus`, with a reference
/// that `Mmio` owns; `host` is the `Host` of that bus (allocated at least
/// as long as the device is); `devfn` is the device's; `gen` is the
/// generation of its slot when the handle was made.
pub struct Mmio {
    pdev: NonNull<bindings::pci_dev>,
    host: NonNull<Host>,
    devfn: u8,
    gen: u32,
}

// SAFETY: The device reference may be put from any thread; `Host` is
// `Sync`, and the calls take no thread-bound state.
unsafe impl Send for Mmio {}

// SAFETY: All methods take `&self` and are safe to call concurrently: they
// go to the `ConfigOps`, which is `Sync`.
unsafe impl Sync for Mmio {}

impl Mmio {
    /// The memory space of `dev`, if it is a function on the root bus of a
    /// [`RootBus`](super::RootBus); `None` for any other PCI device.
    pub fn of(dev: &Device) -> Option<Self> {
        let pdev = dev.as_raw();
        // SAFETY: `dev` is a live `pci_dev`, so is its bus (the device holds
        // a reference); `ops`, `parent` and `sysdata` of a bus are set at
        // its creation and not changed.
        let (bus, devfn) = unsafe { ((*pdev).bus, (*pdev).devfn) };
        // SAFETY: As above.
        let (ops, root, sysdata) = unsafe { ((*bus).ops, (*bus).parent.is_null(), (*bus).sysdata) };
        if !root || !core::ptr::eq(ops.cast_const(), core::ptr::addr_of!(PCI_OPS.0)) {
            return None;
        }
        let devfn = u8::try_from(devfn).ok()?;
        // SAFETY: A root bus with `PCI_OPS` was created by `RootBus::new`
        // with the `sysdata` of a `Host`, which stays allocated until its
        // bridge is released, after every device on the bus.
        let host = unsafe { crate::container_of!(sysdata, Host, sysdata) }.cast_mut();
        let host = NonNull::new(host)?;
        // SAFETY: `host` is allocated (see above).
        let gen = unsafe { host.as_ref() }
            .slot_gen
            .get(usize::from(devfn >> 3))?
            .load(Ordering::Acquire);
        // SAFETY: `pdev` is live; the new reference is ours, put in `drop`.
        let pdev = unsafe { bindings::pci_dev_get(pdev) };
        // INVARIANT: See above; our reference keeps `pdev`, hence its bus
        // and the bridge, hence `host`, allocated.
        Some(Self {
            pdev: NonNull::new(pdev)?,
            host,
            devfn,
            gen,
        })
    }

    fn host(&self) -> &Host {
        // SAFETY: Allocated while we hold the device (type invariants).
        unsafe { self.host.as_ref() }
    }

    /// Calls `f` with the bus's [`ConfigOps`] and the function's `devfn`,
    /// if the bus is live and the function was not removed since the
    /// handle was made; counted in `mem_users` so that dropping the
    /// [`RootBus`](super::RootBus) waits for it.
    fn with_ops<R>(&self, f: impl FnOnce(&dyn ConfigOps, u8) -> Result<R>) -> Result<R> {
        let host = self.host();
        let current = host
            .slot_gen
            .get(usize::from(self.devfn >> 3))
            .map(|g| g.load(Ordering::Acquire));
        if current != Some(self.gen) {
            return Err(ENODEV);
        }
        let ops = {
            let _rcu = RcuGuard::new();
            if !host.live.load(Ordering::Acquire) {
                return Err(ENODEV);
            }
            host.mem_users.fetch_add(1, Ordering::AcqRel);
            // SAFETY: `live` was set inside this RCU read-side critical
            // section, so `ops` is `Some`; it stays so while `mem_users` is
            // not 0, which it is not before our decrement (type invariants
            // of `Host`).
            unsafe { (*host.ops.get()).as_ref() }.map(|o| &**o as *const dyn ConfigOps)
        };
        let r = match ops {
            // SAFETY: See above: the `Arc` behind the pointer is not dropped
            // before the decrement below.
            Some(ops) => f(unsafe { &*ops }, self.devfn),
            None => Err(ENODEV),
        };
        host.mem_users.fetch_sub(1, Ordering::AcqRel);
        r
    }

    /// Reads `buf.len()` bytes at `offset` into BAR `bar`.
    ///
    /// # Errors
    ///
    /// `ENODEV`, `EINVAL` (outside the BAR), `ETIMEDOUT`, `EIO` (the
    /// function refused), as [`ConfigOps::mem_read`].
    pub fn read(&self, bar: u8, offset: u64, buf: &mut [u8]) -> Result {
        self.with_ops(|ops, devfn| ops.mem_read(devfn, bar, offset, buf))
    }

    /// Writes `data` at `offset` into BAR `bar` (posted).
    ///
    /// # Errors
    ///
    /// As [`ConfigOps::mem_write`].
    pub fn write(&self, bar: u8, offset: u64, data: &[u8]) -> Result {
        self.with_ops(|ops, devfn| ops.mem_write(devfn, bar, offset, data))
    }

    /// Reads the little-endian 32-bit register at `offset` of BAR `bar`.
    ///
    /// # Errors
    ///
    /// As [`Mmio::read`].
    pub fn read32(&self, bar: u8, offset: u64) -> Result<u32> {
        let mut b = [0u8; 4];
        self.read(bar, offset, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Writes the little-endian 32-bit register at `offset` of BAR `bar`.
    ///
    /// # Errors
    ///
    /// As [`Mmio::write`].
    pub fn write32(&self, bar: u8, offset: u64, value: u32) -> Result {
        self.write(bar, offset, &value.to_le_bytes())
    }

    /// Writes `data` at `offset` into BAR `bar` (posted) without sleeping:
    /// any context but hard interrupts or interrupts disabled. All of
    /// `data` is sent, or none of it.
    ///
    /// # Errors
    ///
    /// As [`ConfigOps::mem_post`]: `EAGAIN` when the link is backlogged.
    pub fn post(&self, bar: u8, offset: u64, data: &[u8]) -> Result {
        self.with_ops(|ops, devfn| ops.mem_post(devfn, bar, offset, data))
    }
}

impl Clone for Mmio {
    fn clone(&self) -> Self {
        // SAFETY: We hold a reference, so `pdev` is live; the new one is the
        // clone's.
        unsafe { bindings::pci_dev_get(self.pdev.as_ptr()) };
        // INVARIANT: As for `self`, with a reference of its own.
        Self {
            pdev: self.pdev,
            host: self.host,
            devfn: self.devfn,
            gen: self.gen,
        }
    }
}

impl Drop for Mmio {
    fn drop(&mut self) {
        // SAFETY: The reference taken in `of` or `clone`, put once.
        unsafe { bindings::pci_dev_put(self.pdev.as_ptr()) };
    }
}

/// The MSI-X vectors of a function on a [`RootBus`](super::RootBus), set
/// up by the bus's owner ([`ConfigOps::irq_alloc`]) and turned off when
/// dropped. Each is an ordinary Linux interrupt number:
/// [`irq::Registration`](crate::irq::Registration) installs a handler.
/// Handlers must be freed before the `Vectors` are dropped.
pub struct Vectors {
    mmio: Mmio,
    irqs: KVec<u32>,
}

impl Vectors {
    /// Sets up `count` MSI-X vectors of `dev`. May sleep.
    ///
    /// # Errors
    ///
    /// `ENODEV` if `dev` is not on a [`RootBus`](super::RootBus), and as
    /// [`ConfigOps::irq_alloc`].
    pub fn alloc(dev: &Device, count: u32) -> Result<Self> {
        let mmio = Mmio::of(dev).ok_or(ENODEV)?;
        let irqs = mmio.with_ops(|ops, devfn| ops.irq_alloc(devfn, count))?;
        Ok(Self { mmio, irqs })
    }

    /// The Linux interrupt number of vector `index`.
    pub fn irq(&self, index: usize) -> Option<u32> {
        self.irqs.get(index).copied()
    }

    /// How many vectors there are.
    pub fn len(&self) -> usize {
        self.irqs.len()
    }

    /// Whether there are none (never, once allocated).
    pub fn is_empty(&self) -> bool {
        self.irqs.is_empty()
    }
}

impl Drop for Vectors {
    fn drop(&mut self) {
        // Nothing to do when the bus is gone: its owner turned everything
        // off with it.
        let _ = self.mmio.with_ops(|ops, devfn| {
            ops.irq_free(devfn);
            Ok(())
        });
    }
}
