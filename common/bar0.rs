// SPDX-License-Identifier: GPL-2.0

//! A host driver's access to its function's BAR0 through the pcieoe host
//! interface ([`Mmio`]), shared by the vNIC and vHBA drivers: register
//! reads and writes for set-up (they may sleep), non-sleeping posted
//! writes for the data path, and one rule for failures: a vanished
//! function (`ENODEV` from every call once the fabric or the DI is gone)
//! is logged once, not once per register, and teardown carries on.

use core::sync::atomic::{AtomicBool, Ordering};
use kernel::{
    pci_host::Mmio,
    prelude::*,
    str::{CStr, CString},
};

/// The only BAR of the function.
const BAR: u8 = 0;

/// The function's BAR0 and its PCI name, for the log.
pub(crate) struct Bar0 {
    mmio: Mmio,
    name: CString,
    /// `ENODEV` was seen and logged.
    gone: AtomicBool,
}

impl Bar0 {
    pub(crate) fn new(mmio: Mmio, name: CString) -> Self {
        Self {
            mmio,
            name,
            gone: AtomicBool::new(false),
        }
    }

    /// The PCI name (`DDDD:BB:SS.F`).
    pub(crate) fn name(&self) -> &CStr {
        &self.name
    }

    /// Whether an access failed with `ENODEV` (the function is gone).
    // The vHBA driver asks; the vNIC driver does not.
    #[allow(dead_code)]
    pub(crate) fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Relaxed)
    }

    fn gone_now(&self) {
        if !self.gone.swap(true, Ordering::Relaxed) {
            pr_warn!("{}: the function is gone (ENODEV)\n", self.name());
        }
    }

    /// Logs a failed access: `ENODEV` once, anything else each time
    /// (set-up only: not reachable from the data path).
    fn failed(&self, what: &str, offset: u32, e: Error) -> Error {
        if e == ENODEV {
            self.gone_now();
        } else {
            pr_err!(
                "{}: {} at BAR0+{:#x} failed: {:?}\n",
                self.name(),
                what,
                offset,
                e
            );
        }
        e
    }

    /// Reads a register: process context only, a round trip. Never on the
    /// data path.
    pub(crate) fn read32(&self, offset: u32) -> Result<u32> {
        self.mmio
            .read32(BAR, offset.into())
            .map_err(|e| self.failed("read", offset, e))
    }

    /// Writes a register (posted; may sleep while the link is backlogged).
    pub(crate) fn write32(&self, offset: u32, value: u32) -> Result {
        self.mmio
            .write32(BAR, offset.into(), value)
            .map_err(|e| self.failed("write", offset, e))
    }

    /// Writes a 64-bit address into a LO/HI register pair, low half first.
    pub(crate) fn write64(&self, lo: u32, value: u64) -> Result {
        self.write32(lo, value as u32)?;
        self.write32(lo + 4, (value >> 32) as u32)
    }

    /// Writes `data` at `offset`, sleeping while the link is backlogged
    /// (set-up: the vNIC's initial RX posts in `open`).
    // The vNIC driver uses it; the vHBA driver does not.
    #[allow(dead_code)]
    pub(crate) fn write(&self, offset: u32, data: &[u8]) -> Result {
        self.mmio
            .write(BAR, offset.into(), data)
            .map_err(|e| self.failed("write", offset, e))
    }

    /// Writes `data` at `offset` without sleeping (the data path), all or
    /// nothing. `EAGAIN` (the link is backlogged; nothing was sent) is the
    /// caller's to retry and is not logged.
    pub(crate) fn post(&self, offset: u32, data: &[u8]) -> Result {
        match self.mmio.post(BAR, offset.into(), data) {
            Err(e) if e == ENODEV => {
                self.gone_now();
                Err(e)
            }
            Err(e) if e != EAGAIN => {
                kernel::pr_warn_ratelimited!(
                    "{}: posted write at BAR0+{:#x} ({} bytes) failed: {:?}\n",
                    self.name(),
                    offset,
                    data.len(),
                    e
                );
                Err(e)
            }
            r => r,
        }
    }
}
