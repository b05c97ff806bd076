// SPDX-License-Identifier: GPL-2.0

//! Memory reads and writes to the BARs of remote functions, for their
//! drivers ([`kernel::pci_host::Mmio`]).
//!
//! A CPU load from a remote BAR cannot work (nothing decodes the window's
//! addresses, and a load could not wait for Ethernet anyway), so a driver
//! asks: a read becomes MRd TLPs to the BAR address the host assigned, and
//! the call sleeps until their CplDs have brought every byte, or fails
//! after [`READ_WAIT_MS`]; a write becomes posted MWr TLPs. Addresses are
//! the bus addresses in the shadow's BAR registers, which the DI decodes
//! exactly as a device would.
//!
//! # Reads
//!
//! One read runs at a time per port (`Remote::mmio`). It is an engine
//! [`DmaRead`] on the host's side: requests of up to 4 KiB (the DI answers
//! each with CplDs of at most the function's Max_Payload_Size), up to
//! [`dma::TAGS`] outstanding. Its tags are 10-bit (both ends of pcieoe
//! support them), from 256 up, a block of [`dma::TAGS`] per read in turn:
//! the 8-bit tags belong to configuration requests, and a completion of a
//! read that timed out can only be mistaken for part of a later one after
//! [`TAG_BLOCKS`] more reads.
//!
//! # Writes
//!
//! MWr TLPs of at most [`WRITE_PAYLOAD`] bytes, never crossing 4 KiB. A
//! long write waits while more than [`BACKLOG`] bytes of TLPs are queued
//! on the session, so a 1 MiB write neither grows the queue without bound
//! nor loses TLPs to a failed allocation.

use kernel::{
    error::code::{EAGAIN, EINVAL, EIO, ENODEV},
    pr_warn_ratelimited,
    prelude::*,
    sync::CondVarTimeoutResult,
    time::msecs_to_jiffies,
};

use super::{now_ns, Events, Remote, Timings, REQUESTER};
use crate::pcieoe::{
    cfgspace::ConfigSpace,
    dma::{self, DmaConfig, DmaRead, DmaState, DmaWrite},
    tlp::{self, Tlp},
};
use crate::port::{queue_tlp, PortHandle};

/// A read waits this long for its completions. Under loss, go-back-N
/// replays take tens of milliseconds; a lost DI takes the session's
/// dead-peer timeout, after which the read fails with `ENODEV` anyway.
pub(super) const READ_WAIT_MS: u32 = 2000;
/// Largest MRd the host sends (the DI splits the answer).
const READ_REQUEST: usize = 4096;
/// Largest read staged at once; longer reads run in pieces.
const READ_CHUNK: usize = 64 << 10;
/// First 10-bit tag of MMIO reads.
const TAG_FIRST: u16 = 256;
/// Blocks of [`dma::TAGS`] tags above [`TAG_FIRST`].
pub(super) const TAG_BLOCKS: u16 = (tlp::Tag::MAX + 1 - TAG_FIRST) / dma::TAGS as u16;
/// Largest MWr payload the host sends: fits any session MTU.
const WRITE_PAYLOAD: usize = 256;
/// A write waits while the session has more than this queued.
const BACKLOG: usize = 64 << 10;

/// `ETIMEDOUT`, which 6.12's `error::code` lacks.
fn etimedout() -> Error {
    Error::from_errno(-(kernel::bindings::ETIMEDOUT as i32))
}

/// The read in progress, filled by the receive path.
pub(super) struct MmioRead {
    read: DmaRead,
    data: KVec<u8>,
}

/// Counters of the memory path.
#[derive(Clone, Copy, Default)]
pub(super) struct MmioCounters {
    pub(super) reads: u64,
    pub(super) read_bytes: u64,
    pub(super) read_errors: u64,
    pub(super) read_timeouts: u64,
    pub(super) writes: u64,
    pub(super) write_bytes: u64,
    pub(super) write_tlps: u64,
    /// Writes made by [`Remote::post_bar`] (their bytes and TLPs count
    /// with the others).
    pub(super) posts: u64,
    /// Posts refused with `EAGAIN`: the link was backlogged.
    pub(super) posts_backlogged: u64,
}

/// Bus address and size of memory BAR `bar` as the shadow holds it: the
/// register and its write mask (the size, as the PCI core found it).
/// `None` for an I/O or unused BAR, or the upper half of a 64-bit one.
pub(super) fn bar_window(cs: &ConfigSpace, bar: u8) -> Option<(u64, u64)> {
    if bar > 5 {
        return None;
    }
    let reg = 0x10 + 4 * u16::from(bar);
    // The upper half of a 64-bit BAR is not a BAR of its own.
    if bar > 0 && cs.read(reg - 4, 4).ok()? & 0x7 == 0x4 {
        return None;
    }
    let mask_of = |reg: u16| -> Option<u64> {
        let (rw, _) = cs.raw_masks(reg, 4)?;
        Some(u64::from(u32::from_le_bytes(rw.try_into().ok()?)))
    };
    let low = u64::from(cs.read(reg, 4).ok()?);
    let low_mask = mask_of(reg)? & !0xf;
    if low & 1 != 0 || low_mask == 0 {
        return None;
    }
    let (base, mask) = if (low >> 1) & 3 == 2 && bar < 5 {
        let high = u64::from(cs.read(reg + 4, 4).ok()?);
        (
            (high << 32) | (low & !0xf),
            (mask_of(reg + 4)? << 32) | low_mask,
        )
    } else {
        (low & !0xf, 0xffff_ffff_0000_0000 | low_mask)
    };
    Some((base, (!mask).wrapping_add(1)))
}

/// Sends `data` to bus address `addr` as MWr TLPs of at most
/// [`WRITE_PAYLOAD`] bytes, never across 4 KiB, calling `after_each` after
/// each (the sleeping path waits there); returns the outcome and how many
/// TLPs went out.
fn send_writes(
    port: &PortHandle,
    addr: u64,
    data: &[u8],
    mut after_each: impl FnMut(&PortHandle),
) -> (Result, u64) {
    let cfg = DmaConfig {
        requester: REQUESTER,
        max_payload: WRITE_PAYLOAD,
        ..DmaConfig::new(REQUESTER)
    };
    let Ok(mut write) = DmaWrite::new(&cfg, addr, data.len()) else {
        return (Err(EINVAL), 0);
    };
    let mut buf = [0u8; tlp::HEADER_4DW + WRITE_PAYLOAD];
    let mut tlps = 0u64;
    loop {
        let n = match write.next_tlp(data, &mut buf) {
            None => return (Ok(()), tlps),
            Some(Ok(n)) => n,
            Some(Err(_)) => return (Err(EINVAL), tlps),
        };
        if port.send(buf.get(..n).unwrap_or(&[])).is_err() {
            return (Err(ENODEV), tlps);
        }
        tlps += 1;
        after_each(port);
    }
}

impl Remote {
    /// The bus address of `len` bytes at `offset` in BAR `bar` of `devfn`.
    fn bar_address(&self, devfn: u8, bar: u8, offset: u64, len: usize) -> Result<u64> {
        if devfn & 7 != 0 {
            return Err(ENODEV);
        }
        let sh = self.shadows.lock();
        let shadow = sh
            .dev
            .get(usize::from(devfn >> 3))
            .and_then(Option::as_ref)
            .ok_or(ENODEV)?;
        let (base, size) = bar_window(&shadow.cs, bar).ok_or(EINVAL)?;
        let end = offset.checked_add(len as u64).ok_or(EINVAL)?;
        if len == 0 || end > size {
            return Err(EINVAL);
        }
        base.checked_add(offset).ok_or(EINVAL)
    }

    /// [`kernel::pci_host::ConfigOps::mem_read`].
    pub(super) fn read_bar(&self, devfn: u8, bar: u8, offset: u64, buf: &mut [u8]) -> Result {
        let addr = self.bar_address(devfn, bar, offset, buf.len())?;
        self.flush_writes();
        let mut block = self.mmio.lock();
        let mut done = 0usize;
        while done < buf.len() {
            let at = addr + done as u64;
            let len = (buf.len() - done).min(READ_CHUNK);
            let cfg = DmaConfig {
                requester: REQUESTER,
                max_read_request: READ_REQUEST,
                max_payload: dma::DEFAULT_MAX_PAYLOAD,
                first_tag: TAG_FIRST + *block * dma::TAGS as u16,
                ten_bit_tags: true,
            };
            *block = (*block + 1) % TAG_BLOCKS;
            let read = DmaRead::new(&cfg, at, len).map_err(|_| EINVAL)?;
            let data = KVec::from_elem(0u8, len, GFP_KERNEL)?;
            let data = self.run_read(MmioRead { read, data })?;
            buf.get_mut(done..done + len)
                .ok_or(EINVAL)?
                .copy_from_slice(data.get(..len).ok_or(EIO)?);
            done += len;
        }
        Ok(())
    }

    /// Sends a read's requests and waits for its completions.
    fn run_read(&self, m: MmioRead) -> Result<KVec<u8>> {
        let mut ev = self.ev.lock();
        if ev.stopping || !ev.open {
            return Err(ENODEV);
        }
        let epoch = ev.epoch;
        let len = m.read.len() as u64;
        ev.mmio = Some(m);
        let deadline = now_ns() + u64::from(READ_WAIT_MS) * 1_000_000;
        let outcome = loop {
            if ev.stopping || !ev.open || ev.epoch != epoch {
                break Err(ENODEV);
            }
            let Some(m) = ev.mmio.as_mut() else {
                break Err(EIO);
            };
            match m.read.state() {
                DmaState::Done => break Ok(()),
                DmaState::Failed(e) => {
                    pr_warn_ratelimited!("memory read refused by the function: {}\n", e);
                    break Err(EIO);
                }
                DmaState::InProgress => {}
            }
            let mut batch = KVec::new();
            let mut buf = [0u8; dma::REQUEST_LEN];
            while let Some(n) = m.read.next_request(&mut buf) {
                queue_tlp(&mut batch, buf.get(..n).unwrap_or(&[]))?;
            }
            if !batch.is_empty() {
                drop(ev);
                self.send_batch(&batch);
                ev = self.ev.lock();
                continue;
            }
            if now_ns() >= deadline {
                break Err(etimedout());
            }
            if let CondVarTimeoutResult::Signal { .. } = self
                .cv
                .wait_interruptible_timeout(&mut ev, msecs_to_jiffies(10))
            {
                // A register read is not interruptible (its MRd is out):
                // with a signal pending every wait ends at once, so sleep.
                drop(ev);
                kernel::delay::msleep(1);
                ev = self.ev.lock();
            }
        };
        let m = ev.mmio.take();
        let c = &mut ev.mmio_counters;
        c.reads += 1;
        match outcome {
            Ok(()) => c.read_bytes += len,
            Err(e) if e == etimedout() => c.read_timeouts += 1,
            Err(_) => c.read_errors += 1,
        }
        drop(ev);
        if outcome == Err(etimedout()) {
            pr_warn_ratelimited!("memory read of {} bytes timed out\n", len);
        }
        outcome.and(m.map(|m| m.data).ok_or(EIO))
    }

    /// The receive path's part: a completion of the read in progress.
    pub(super) fn mmio_receive(ev: &mut Events, tlp: &Tlp<'_>) -> bool {
        match ev.mmio.as_mut() {
            Some(m) => m.read.receive(tlp, &mut m.data),
            None => false,
        }
    }

    /// [`kernel::pci_host::ConfigOps::mem_write`].
    pub(super) fn write_bar(&self, devfn: u8, bar: u8, offset: u64, data: &[u8]) -> Result {
        let addr = self.bar_address(devfn, bar, offset, data.len())?;
        self.flush_writes();
        let port = self.port.lock();
        let port = port.as_ref().ok_or(ENODEV)?;
        let (outcome, tlps) = send_writes(port, addr, data, |port| {
            while port.backlog() > BACKLOG {
                let mut ev = self.ev.lock();
                if ev.stopping || !ev.open {
                    break;
                }
                if let CondVarTimeoutResult::Signal { .. } = self
                    .cv
                    .wait_interruptible_timeout(&mut ev, msecs_to_jiffies(1))
                {
                    drop(ev);
                    kernel::delay::msleep(1);
                }
            }
        });
        self.count_write(tlps, outcome.is_ok().then_some(data.len()), false);
        outcome
    }

    /// Counts a write of `tlps` TLPs that moved `bytes` (`None`: failed).
    fn count_write(&self, tlps: u64, bytes: Option<usize>, posted: bool) {
        let mut ev = self.ev.lock();
        let c = &mut ev.mmio_counters;
        c.write_tlps += tlps;
        if let Some(n) = bytes {
            if posted {
                c.posts += 1;
            } else {
                c.writes += 1;
            }
            c.write_bytes += n as u64;
        }
    }

    /// [`kernel::pci_host::ConfigOps::mem_post`]: as [`Remote::write_bar`],
    /// without sleeping. The BAR comes from the cache the worker keeps
    /// (`Events::bars`), since `shadows` cannot be taken here; writes of
    /// the configuration space still queued for the worker are not sent
    /// first (a driver posts on its data path, long after set-up).
    pub(super) fn post_bar(&self, devfn: u8, bar: u8, offset: u64, data: &[u8]) -> Result {
        let dev = usize::from(devfn >> 3);
        if devfn & 7 != 0 {
            return Err(ENODEV);
        }
        let addr = {
            let ev = self.ev.lock();
            if ev.stopping || !ev.open {
                return Err(ENODEV);
            }
            let [base, size] = *ev
                .bars
                .get(dev)
                .ok_or(ENODEV)?
                .get(usize::from(bar))
                .ok_or(EINVAL)?;
            if size == 0 {
                return Err(EINVAL);
            }
            let end = offset.checked_add(data.len() as u64).ok_or(EINVAL)?;
            if data.is_empty() || end > size {
                return Err(EINVAL);
            }
            base.checked_add(offset).ok_or(EINVAL)?
        };
        let guard = self.port_tx.lock();
        let port = guard.as_ref().ok_or(ENODEV)?;
        if port.backlog() > BACKLOG {
            drop(guard);
            self.ev.lock().mmio_counters.posts_backlogged += 1;
            return Err(EAGAIN);
        }
        let (outcome, tlps) = send_writes(port, addr, data, |_| {});
        drop(guard);
        self.count_write(tlps, outcome.is_ok().then_some(data.len()), true);
        outcome
    }

    /// Times `n` reads of register 0 of BAR 0 of the first remote function,
    /// one after the other.
    pub(super) fn mmio_rtt(&self, n: u16) -> Option<Timings> {
        let dev = self.first_device(true)?;
        let mut t = Timings::default();
        let mut b = [0u8; 4];
        for _ in 0..n {
            let start = now_ns();
            let ok = self.read_bar(dev << 3, 0, 0, &mut b).is_ok();
            t.add(ok.then(|| now_ns().saturating_sub(start)));
        }
        Some(t)
    }
}
