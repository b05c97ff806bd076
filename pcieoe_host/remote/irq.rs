// SPDX-License-Identifier: GPL-2.0

//! MSI-X interrupts of remote functions, as Linux interrupts.
//!
//! Each port has an irq domain ([`kernel::irq::Domain`]) with
//! [`VECTORS_PER_DEVICE`] numbers per device number: device `d`'s vector
//! `i` is hardware number `d * VECTORS_PER_DEVICE + i`. When a driver asks
//! for vectors ([`kernel::pci_host::Vectors`]), the host maps those
//! numbers, writes each MSI-X table entry of the function (in its BAR,
//! through memory writes across the fabric) with address [`MSI_ADDRESS`]
//! and the hardware number as data, and sets MSI-X Enable. When the
//! function raises a vector, its MWr to [`MSI_ADDRESS`] arrives here; if
//! the requester is the device that owns that number and the vector is
//! set up, the interrupt fires: its handler runs as for any interrupt.
//! Anything else is refused and counted.
//!
//! The PCI core's own MSI-X code cannot be used: it programs and masks the
//! table with CPU loads and stores to the BAR, which reach nothing here
//! (see [`kernel::pci_host`]).
//!
//! # Context
//!
//! The receive path runs under the session's lock, where a handler must
//! not run (a handler could send, which takes that lock). It marks the
//! number pending; a high-priority work item fires the pending interrupts
//! with [`kernel::irq::Domain::fire`], which runs the handlers with local
//! interrupts disabled, as hardware interrupts would.

use core::sync::atomic::{AtomicU64, Ordering};

use kernel::{
    error::code::{EBUSY, EINVAL, ENODEV},
    pr_warn_ratelimited,
    prelude::*,
    sync::Arc,
    workqueue::{self, WorkItem},
};

use super::{Events, Remote};
use crate::pcieoe::{
    cfgspace::{CAP_ID_MSIX, MSIX_CONTROL, MSIX_ENABLE, MSIX_FUNCTION_MASK, MSIX_TABLE},
    fabric::DEVICES,
    tlp::{MemRequest, Tlp},
};

/// Vectors a device can have.
pub(super) const VECTORS_PER_DEVICE: u32 = 8;
/// Size of a port's irq domain.
pub(super) const VECTORS: u32 = DEVICES as u32 * VECTORS_PER_DEVICE;
/// The address the host programs in MSI-X entries: x86's interrupt
/// window, which no DMA mapping uses.
pub(super) const MSI_ADDRESS: u64 = 0xfee0_0000;
/// Bytes per MSI-X table entry.
const ENTRY: u64 = 16;

/// Interrupt numbers waiting to fire, one bit each.
pub(super) struct Pending([AtomicU64; VECTORS.div_ceil(64) as usize]);

impl Pending {
    pub(super) const fn new() -> Self {
        Self([const { AtomicU64::new(0) }; VECTORS.div_ceil(64) as usize])
    }

    fn set(&self, hw: u32) {
        if let Some(w) = self.0.get((hw / 64) as usize) {
            w.fetch_or(1 << (hw % 64), Ordering::AcqRel);
        }
    }
}

/// Counters of the interrupt path.
#[derive(Clone, Copy, Default)]
pub(super) struct IrqCounters {
    /// MSI writes accepted.
    pub(super) msi_rx: u64,
    /// Interrupts fired (handlers run).
    pub(super) fired: u64,
    /// MSI writes refused: bad length, a number that is not the
    /// requester's, or a vector not set up.
    pub(super) msi_refused: u64,
}

impl Remote {
    /// [`kernel::pci_host::ConfigOps::irq_alloc`].
    pub(super) fn alloc_vectors(&self, devfn: u8, count: u32) -> Result<KVec<u32>> {
        let dev = devfn >> 3;
        if devfn & 7 != 0 || usize::from(dev) >= DEVICES {
            return Err(ENODEV);
        }
        if count == 0 || count > VECTORS_PER_DEVICE {
            return Err(EINVAL);
        }
        // The MSI-X capability as the shadow holds it.
        let (cap, control, table) = {
            let sh = self.shadows.lock();
            let cs = &sh
                .dev
                .get(usize::from(dev))
                .and_then(Option::as_ref)
                .ok_or(ENODEV)?
                .cs;
            let cap = cs.find_cap(CAP_ID_MSIX).ok_or(EINVAL)?;
            let control = cs.read(cap + MSIX_CONTROL, 2).map_err(|_| EINVAL)? as u16;
            let table = cs.read(cap + MSIX_TABLE, 4).map_err(|_| EINVAL)?;
            (cap, control, table)
        };
        if u32::from(control & 0x7ff) + 1 < count {
            return Err(EINVAL);
        }
        {
            let mut ev = self.ev.lock();
            let n = ev.vectors.get_mut(usize::from(dev)).ok_or(ENODEV)?;
            if *n != 0 {
                return Err(EBUSY);
            }
            // Claimed now; set to the real count below, or back to 0.
            *n = u8::MAX;
        }
        let r = self.program_vectors(devfn, cap, control, table, count);
        let mut ev = self.ev.lock();
        if let Some(n) = ev.vectors.get_mut(usize::from(dev)) {
            *n = if r.is_ok() { count as u8 } else { 0 };
        }
        drop(ev);
        if r.is_err() {
            self.dispose_vectors(dev);
        }
        r
    }

    fn program_vectors(
        &self,
        devfn: u8,
        cap: u16,
        control: u16,
        table: u32,
        count: u32,
    ) -> Result<KVec<u32>> {
        let dev = u32::from(devfn >> 3);
        let bar = (table & 7) as u8;
        let base = u64::from(table & !7);
        let mut irqs = KVec::with_capacity(count as usize, GFP_KERNEL)?;
        for i in 0..count {
            let hw = dev * VECTORS_PER_DEVICE + i;
            irqs.push(self.domain.map(hw)?, GFP_KERNEL)?;
            let mut entry = [0u8; ENTRY as usize];
            let words = [MSI_ADDRESS as u32, (MSI_ADDRESS >> 32) as u32, hw, 0];
            for (b, w) in entry.chunks_exact_mut(4).zip(words) {
                b.copy_from_slice(&w.to_le_bytes());
            }
            self.write_bar(devfn, bar, base + u64::from(i) * ENTRY, &entry)?;
        }
        let on = (control | MSIX_ENABLE) & !MSIX_FUNCTION_MASK;
        if !kernel::pci_host::ConfigOps::write(self, 0, devfn, cap + MSIX_CONTROL, 2, on.into()) {
            return Err(ENODEV);
        }
        Ok(irqs)
    }

    /// [`kernel::pci_host::ConfigOps::irq_free`].
    pub(super) fn free_vectors(&self, devfn: u8) {
        let dev = devfn >> 3;
        if devfn & 7 != 0 {
            return;
        }
        let had = {
            let mut ev = self.ev.lock();
            match ev.vectors.get_mut(usize::from(dev)) {
                // Being set up by `alloc_vectors`, which cleans up itself.
                Some(n) if *n == u8::MAX => return,
                Some(n) => core::mem::take(n),
                None => 0,
            }
        };
        if had == 0 {
            return;
        }
        // MSI-X off in the function, so it sends no more; the device may
        // already be gone, which is fine.
        let cap = {
            let sh = self.shadows.lock();
            sh.dev
                .get(usize::from(dev))
                .and_then(Option::as_ref)
                .and_then(|s| {
                    let cap = s.cs.find_cap(CAP_ID_MSIX)?;
                    let control = s.cs.read(cap + MSIX_CONTROL, 2).ok()? as u16;
                    Some((cap, control))
                })
        };
        if let Some((cap, control)) = cap {
            let off = control & !MSIX_ENABLE;
            let _ = kernel::pci_host::ConfigOps::write(
                self,
                0,
                devfn,
                cap + MSIX_CONTROL,
                2,
                off.into(),
            );
        }
        self.dispose_vectors(dev);
    }

    fn dispose_vectors(&self, dev: u8) {
        let first = u32::from(dev) * VECTORS_PER_DEVICE;
        for hw in first..first + VECTORS_PER_DEVICE {
            self.domain.dispose(hw);
        }
    }

    /// The receive path's part: an MWr to [`MSI_ADDRESS`] (the caller
    /// checked the address). Marks the interrupt pending; returns the
    /// worker to kick.
    pub(super) fn msi_receive(
        &self,
        ev: &mut Events,
        tlp: &Tlp<'_>,
        r: &MemRequest,
    ) -> Option<Arc<Remote>> {
        let refuse = |ev: &mut Events, why: &str| {
            ev.irq_counters.msi_refused += 1;
            pr_warn_ratelimited!("MSI from {} refused: {}\n", r.requester, why);
            None
        };
        if r.length != 1 || r.first_be != 0xf || tlp.ep {
            return refuse(ev, "not one whole double word");
        }
        let Some(Ok(data)) = tlp.payload.get(..4).map(<[u8; 4]>::try_from) else {
            return refuse(ev, "no data");
        };
        let hw = u32::from_le_bytes(data);
        let dev = r.requester.device();
        if r.requester.bus() != 0
            || r.requester.function() != 0
            || hw / VECTORS_PER_DEVICE != u32::from(dev)
        {
            return refuse(ev, "not the requester's vector");
        }
        let set_up = ev.vectors.get(usize::from(dev)).copied().unwrap_or(0);
        if set_up == 0 || set_up == u8::MAX || hw % VECTORS_PER_DEVICE >= u32::from(set_up) {
            return refuse(ev, "vector not set up");
        }
        ev.irq_counters.msi_rx += 1;
        self.pending.set(hw);
        ev.worker.clone()
    }

    /// Fires the pending interrupts (the work item).
    fn fire_pending(&self) {
        let mut fired = 0u64;
        for (i, w) in self.pending.0.iter().enumerate() {
            let mut bits = w.swap(0, Ordering::AcqRel);
            while bits != 0 {
                let b = bits.trailing_zeros();
                bits &= bits - 1;
                if self.domain.fire_from_task(i as u32 * 64 + b) {
                    fired += 1;
                }
            }
        }
        self.ev.lock().irq_counters.fired += fired;
    }

    /// Queues the work item that fires pending interrupts. The caller holds
    /// `ev` (see [`Remote::kick`]).
    pub(super) fn kick_irqs(worker: Option<Arc<Remote>>) {
        if let Some(w) = worker {
            // Already queued: that run fires this one too.
            let _ = workqueue::system_highpri().enqueue::<Arc<Remote>, 1>(w);
        }
    }
}

impl WorkItem<1> for Remote {
    type Pointer = Arc<Remote>;

    fn run(this: Arc<Remote>) {
        this.fire_pending();
    }
}
