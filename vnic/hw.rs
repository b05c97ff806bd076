// SPDX-License-Identifier: GPL-2.0

//! Access to the vNIC's BAR0: register reads and writes for set-up (they
//! sleep, and a read is a round trip across the fabric), non-sleeping
//! posted writes for the data path, and the identity read at probe.
//!
//! Every access goes through [`Hw`] so that a function that went away
//! (`ENODEV` from every call once the fabric or the DI is gone) is logged
//! once, not once per register, and teardown carries on.

use crate::bar0::Bar0;
use crate::layout::*;
use kernel::{pci_host::Mmio, prelude::*, str::CString};

/// The function's BAR0 (the shared accessors, [`Bar0`]) and the
/// identity read at probe.
pub(crate) struct Hw(Bar0);

impl core::ops::Deref for Hw {
    type Target = Bar0;

    fn deref(&self) -> &Bar0 {
        &self.0
    }
}

/// What the function says about itself at probe.
#[derive(Clone, Copy)]
pub(crate) struct Identity {
    pub(crate) version: u32,
    pub(crate) features: u32,
    pub(crate) mac: [u8; 6],
    pub(crate) mtu_max: u32,
    /// Queue pairs the function has.
    pub(crate) queues: u32,
}

impl Hw {
    pub(crate) fn new(mmio: Mmio, name: CString) -> Self {
        Self(Bar0::new(mmio, name))
    }

    /// Reads and checks the identity registers.
    ///
    /// # Errors
    ///
    /// `ENODEV` when MAGIC or the major version is not ours, `EINVAL` for
    /// values out of the specification's range, and access errors.
    pub(crate) fn identify(&self) -> Result<Identity> {
        let magic = self.read32(REG_MAGIC)?;
        if magic != MAGIC_VALUE {
            pr_err!(
                "{}: MAGIC reads {:#010x}, want {:#010x}: not a vNIC\n",
                self.name(),
                magic,
                MAGIC_VALUE
            );
            return Err(ENODEV);
        }
        let version = self.read32(REG_VERSION)?;
        if version >> 16 != VERSION_VALUE >> 16 {
            pr_err!(
                "{}: vNIC version {}.{} is not supported (want {}.x)\n",
                self.name(),
                version >> 16,
                version & 0xffff,
                VERSION_VALUE >> 16
            );
            return Err(ENODEV);
        }
        let features = self.read32(REG_FEATURES)?;
        let lo = self.read32(REG_MAC_LO)?.to_le_bytes();
        let hi = self.read32(REG_MAC_HI)?.to_le_bytes();
        let mac = [lo[0], lo[1], lo[2], lo[3], hi[0], hi[1]];
        let mtu_max = self.read32(REG_MTU_MAX)?;
        let queues = self.read32(REG_QUEUES)?;
        if mac[0] & 1 != 0 || mac == [0; 6] {
            pr_err!("{}: bad MAC address {:02x?}\n", self.name(), mac);
            return Err(EINVAL);
        }
        if !(MTU_MIN..=MTU_LIMIT).contains(&mtu_max) {
            pr_err!("{}: MTU_MAX {} out of range\n", self.name(), mtu_max);
            return Err(EINVAL);
        }
        if !(1..=MAX_QUEUES as u32).contains(&queues) {
            pr_err!("{}: QUEUES {} out of range\n", self.name(), queues);
            return Err(EINVAL);
        }
        Ok(Identity {
            version,
            features,
            mac,
            mtu_max,
            queues,
        })
    }

    /// Logs why the function refused queue pair `queue`'s enable, from
    /// Q_STATUS and LAST_ERROR.
    pub(crate) fn log_refusal(&self, queue: u32, qstatus: u32) {
        let last = self.read32(REG_LAST_ERROR).unwrap_or(0);
        pr_err!(
            "{}: queue pair {} not enabled (Q_STATUS {:#x}): last error {} at BAR0+{:#x}\n",
            self.name(),
            queue,
            qstatus,
            error_name(last & 0xffff),
            last >> 16
        );
    }
}

/// The name of a programming error code (`ERR_*`).
pub(crate) fn error_name(code: u32) -> &'static str {
    match code {
        ERR_NONE => "none",
        ERR_BUSY => "busy (changed while enabled)",
        ERR_ADDRESS => "bad address",
        ERR_RING_SIZE => "bad ring size",
        ERR_VALUE => "value out of range",
        ERR_POSITION => "window write out of position",
        ERR_OVERRUN => "ring or FIFO overrun",
        ERR_DESCRIPTOR => "bad TX descriptor",
        ERR_QUEUE => "bad queue pair",
        _ => "unknown",
    }
}
