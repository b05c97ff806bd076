// SPDX-License-Identifier: GPL-2.0

//! The status block: programming errors, LUN changes and the device's
//! counters, written by the device into host memory (on LUN changes,
//! errors and STATUS_REQUEST) so that the host never reads them from
//! registers.

use crate::layout::*;
use kernel::{device, dma_coherent::CoherentBuffer, prelude::*};

/// Alignment STATUS_ADDR needs.
const STATUS_ALIGN: u64 = 64;

/// The block's memory and the last good copy of it.
pub(crate) struct Status {
    mem: CoherentBuffer,
    /// Generation of `last` (0: none seen; the device never writes 0).
    seen: u32,
    last: StatusBlock,
}

impl Status {
    /// Allocates the block (zeroed: generation 0 means "never written").
    pub(crate) fn new(dev: &device::Device) -> Result<Self> {
        let mut mem = CoherentBuffer::alloc(dev, STATUS_BLOCK_LEN, GFP_KERNEL)?;
        if mem.dma_handle() % STATUS_ALIGN != 0 {
            return Err(EINVAL);
        }
        mem.write(0, &[0u8; STATUS_BLOCK_LEN])?;
        Ok(Self {
            mem,
            seen: 0,
            last: StatusBlock::default(),
        })
    }

    /// Where the device writes the block.
    pub(crate) fn addr(&self) -> u64 {
        self.mem.dma_handle()
    }

    /// A block newer than the last one seen, if the device wrote one. The
    /// copy is taken again when the generation changed while it was being
    /// copied (the device wrote meanwhile); a few tries, then the next call
    /// gets it.
    pub(crate) fn refresh(&mut self) -> Option<StatusBlock> {
        // The generation alone first: the common case is "nothing new".
        if self.generation()? == self.seen {
            return None;
        }
        for _ in 0..4 {
            let mut b = [0u8; STATUS_BLOCK_LEN];
            self.mem.read(0, &mut b).ok()?;
            let block = StatusBlock::decode(&b);
            if self.generation()? == block.generation {
                self.seen = block.generation;
                self.last = block;
                return Some(block);
            }
        }
        None
    }

    /// The generation the device last wrote.
    fn generation(&self) -> Option<u32> {
        let mut g = [0u8; 4];
        self.mem.read(0, &mut g).ok()?;
        Some(u32::from_le_bytes(g))
    }
}
