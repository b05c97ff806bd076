// SPDX-License-Identifier: GPL-2.0

//! Access to the vHBA's BAR0: register reads and writes for set-up (they
//! sleep, and a read is a round trip across the fabric), non-sleeping
//! posted writes for the data path, and the identity and LUN reads at
//! probe.
//!
//! Every access goes through [`Hw`] so that a function that went away
//! (`ENODEV` from every call) is logged once and teardown carries on.

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
    pub(crate) luns: u32,
    pub(crate) max_transfer: u32,
    pub(crate) max_segments: u32,
    pub(crate) queues: u32,
    pub(crate) slots: u32,
}

/// A LUN's information registers.
#[derive(Clone, Copy, Default)]
pub(crate) struct LunInfo {
    pub(crate) blocks: u64,
    pub(crate) block_size: u32,
    pub(crate) phys_block: u32,
    pub(crate) flags: u32,
    pub(crate) max_discard: u32,
}

impl LunInfo {
    /// Whether the LUN is usable: present, with block sizes in range.
    pub(crate) fn is_valid(&self) -> bool {
        self.flags & LUNF_PRESENT != 0
            && self.block_size.is_power_of_two()
            && (BLOCK_SIZE_MIN..=BLOCK_SIZE_MAX).contains(&self.block_size)
            && self.phys_block.is_power_of_two()
            && (self.block_size..=PHYS_BLOCK_MAX).contains(&self.phys_block)
    }

    /// log2 of the block size (a valid LUN's).
    pub(crate) fn block_shift(&self) -> u32 {
        self.block_size.trailing_zeros()
    }
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
                "{}: MAGIC reads {:#010x}, want {:#010x}: not a vHBA\n",
                self.name(),
                magic,
                MAGIC_VALUE
            );
            return Err(ENODEV);
        }
        let version = self.read32(REG_VERSION)?;
        if version >> 16 != VERSION_VALUE >> 16 {
            pr_err!(
                "{}: vHBA version {}.{} is not supported (want {}.x)\n",
                self.name(),
                version >> 16,
                version & 0xffff,
                VERSION_VALUE >> 16
            );
            return Err(ENODEV);
        }
        let id = Identity {
            version,
            features: self.read32(REG_FEATURES)?,
            luns: self.read32(REG_LUN_COUNT)?,
            max_transfer: self.read32(REG_MAX_TRANSFER)?,
            max_segments: self.read32(REG_MAX_SEGMENTS)?,
            queues: self.read32(REG_QUEUES)?,
            slots: self.read32(REG_SLOTS)?,
        };
        if id.luns > MAX_LUNS as u32 {
            pr_err!("{}: LUN_COUNT {} out of range\n", self.name(), id.luns);
            return Err(EINVAL);
        }
        if !(1..=MAX_QUEUES as u32).contains(&id.queues) {
            pr_err!("{}: QUEUES {} out of range\n", self.name(), id.queues);
            return Err(EINVAL);
        }
        if id.max_transfer < BLOCK_SIZE_MAX || id.max_segments == 0 || id.slots == 0 {
            pr_err!(
                "{}: unusable: MAX_TRANSFER {}, MAX_SEGMENTS {}, SLOTS {}\n",
                self.name(),
                id.max_transfer,
                id.max_segments,
                id.slots
            );
            return Err(EINVAL);
        }
        Ok(id)
    }

    /// Reads LUN `lun`'s information.
    pub(crate) fn lun(&self, lun: u32) -> Result<LunInfo> {
        let lo = self.read32(lun_reg(lun, LUN_BLOCKS_LO))?;
        let hi = self.read32(lun_reg(lun, LUN_BLOCKS_HI))?;
        Ok(LunInfo {
            blocks: u64::from(lo) | (u64::from(hi) << 32),
            block_size: self.read32(lun_reg(lun, LUN_BLOCK_SIZE))?,
            phys_block: self.read32(lun_reg(lun, LUN_PHYS_BLOCK))?,
            flags: self.read32(lun_reg(lun, LUN_FLAGS))?,
            max_discard: self.read32(lun_reg(lun, LUN_MAX_DISCARD))?,
        })
    }

    /// Logs why the function refused queue `queue`'s enable.
    pub(crate) fn log_refusal(&self, queue: u32, qstatus: u32) {
        let last = self.read32(REG_LAST_ERROR).unwrap_or(0);
        pr_err!(
            "{}: queue {} not enabled (Q_STATUS {:#x}): last error {} at BAR0+{:#x}\n",
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
        ERR_OVERRUN => "submission ring overrun",
        ERR_QUEUE => "bad queue",
        _ => "unknown",
    }
}
