// SPDX-License-Identifier: GPL-2.0

//! The mechanics the function models share: the test function
//! ([`testfn`](super::testfn)), the vNIC ([`vnic`](super::vnic)) and the
//! vHBA ([`vhba`](super::vhba)).
//!
//! Each model has its own registers, but the way a host reaches them is
//! the same PCIe everywhere, so it is written once here:
//!
//! * [`MsixTable`]: the MSI-X table and Pending Bit Array in BAR0, their
//!   double-word reads and writes (with the writable bits of an entry)
//!   and the delivery of messages;
//! * [`Bar0`], [`serve_bar0`] and [`read_bar0`]: a downstream memory
//!   request to BAR0 turned into double-word reads and writes with byte
//!   enables, and the completions of a read;
//! * [`decode`], [`write_dws`] and [`unsupported`]: the pieces of that the
//!   test function, which has more BARs than BAR0, uses on its own;
//! * [`Moderation`]: the interrupt moderation of a vNIC queue pair or a
//!   vHBA queue (a count of events or a time, and IRQ_ARM);
//! * [`StatusReport`]: the vNIC's and vHBA's programming-error
//!   bookkeeping (PROG_ERRORS, LAST_ERROR), status block and
//!   MISC_VECTOR interrupt;
//! * [`be_mask`], [`good_address`] and [`window_at`]: small checks and
//!   decoding every model does.
//!
//! Like the rest of the engine, nothing here allocates or panics on what
//! the host sends.

use super::cfgspace::ConfigSpace;
use super::clock::{Duration, Instant};
use super::dma::{
    self, msix_message, msix_take_pending, DmaConfig, DmaWrite, MsixMessage, MsixRefusal,
    MSIX_ENTRY_LEN, MSIX_VECTOR_MASKED,
};
use super::testfn::{Mmio, MmioError};
use super::tlp::{Bdf, CompletionStatus, Kind, MemRequest, Tlp};

/// The bit mask of the bytes a byte-enable nibble (`be`, bit `i` for byte
/// `i` of a little-endian double word) selects.
pub(super) fn be_mask(be: u8) -> u32 {
    (0..4).fold(0, |m, i| {
        if be & (1 << i) != 0 {
            m | (0xff << (8 * i))
        } else {
            m
        }
    })
}

/// Whether `addr` can hold `len` bytes aligned to `align` (not zero, which
/// a host leaves in an address it has not programmed, and not wrapping).
pub(super) fn good_address(addr: u64, len: u64, align: u64) -> bool {
    addr != 0 && addr % align == 0 && addr.checked_add(len).is_some()
}

/// Which of `count` windows of `len` bytes each, laid out in BAR0 from
/// `base` (the vNIC's RX and TX windows, the vHBA's submission windows),
/// holds BAR0 `offset`, and where in it: `(window, offset into it)`.
pub(super) fn window_at(offset: u32, base: u32, len: u32, count: u32) -> Option<(u32, u32)> {
    let rel = offset.checked_sub(base)?;
    let window = rel.checked_div(len)?;
    (window < count).then_some((window, rel.checked_rem(len)?))
}

/// The writable bits of byte `i` (0 to 15) of an MSI-X entry: Message
/// Address bits 1:0 read zero, Vector Control has only its Mask bit.
fn table_byte_mask(i: usize) -> u8 {
    match i {
        0 => 0xfc,
        12 => 0x01,
        13..=15 => 0,
        _ => 0xff,
    }
}

/// The 4 bytes of `src` at `at`, zeros past its end.
fn bytes_at(src: &[u8], at: u32) -> [u8; 4] {
    let at = at as usize;
    let mut dw = [0u8; 4];
    for (i, b) in dw.iter_mut().enumerate() {
        *b = src.get(at.saturating_add(i)).copied().unwrap_or(0);
    }
    dw
}

/// A function's MSI-X table (`TABLE_LEN` bytes, 16 per vector, up to 8
/// vectors) and Pending Bit Array, as they sit in BAR0: the table at
/// `table_at`, the PBA at `pba_at` (8 bytes of BAR0, of which the first
/// holds the pending bits of all 8 vectors).
///
/// The delivery rules themselves are [`msix_message`] and
/// [`msix_take_pending`]; this keeps their state and the BAR0 view of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct MsixTable<const TABLE_LEN: usize> {
    table: [u8; TABLE_LEN],
    pba: [u8; 1],
    table_at: u32,
    pba_at: u32,
}

impl<const TABLE_LEN: usize> MsixTable<TABLE_LEN> {
    /// The reset state: every vector masked, nothing pending.
    pub(super) fn new(table_at: u32, pba_at: u32) -> Self {
        let mut table = [0u8; TABLE_LEN];
        for entry in table.chunks_mut(MSIX_ENTRY_LEN) {
            if let Some(control) = entry.get_mut(12) {
                *control = MSIX_VECTOR_MASKED as u8;
            }
        }
        MsixTable {
            table,
            pba: [0],
            table_at,
            pba_at,
        }
    }

    /// The table bytes, as the host wrote them.
    pub(super) fn table(&self) -> &[u8] {
        &self.table
    }

    /// The Pending Bit Array.
    pub(super) fn pba(&self) -> &[u8] {
        &self.pba
    }

    /// Where the table ends in BAR0.
    fn table_end(&self) -> u32 {
        self.table_at.saturating_add(TABLE_LEN as u32)
    }

    /// The double word at BAR0 `offset` (DW aligned) if it is in the table
    /// or the PBA; `None` elsewhere, for the model's own registers.
    pub(super) fn read_dw(&self, offset: u32) -> Option<[u8; 4]> {
        if (self.table_at..self.table_end()).contains(&offset) {
            Some(bytes_at(&self.table, offset - self.table_at))
        } else if (self.pba_at..self.pba_at.saturating_add(8)).contains(&offset) {
            Some(bytes_at(&self.pba, offset - self.pba_at))
        } else {
            None
        }
    }

    /// Writes the bytes enabled by `be` of the double word at BAR0
    /// `offset` (DW aligned) if it is in the table, keeping the bits an
    /// entry does not let the host write. Elsewhere, the PBA included
    /// (read-only), nothing happens.
    pub(super) fn write_dw(&mut self, offset: u32, be: u8, data: [u8; 4]) {
        if !(self.table_at..self.table_end()).contains(&offset) {
            return;
        }
        let base = (offset - self.table_at) as usize;
        for (lane, value) in data.iter().enumerate() {
            if be & (1 << lane) == 0 {
                continue;
            }
            let at = base + lane;
            let mask = table_byte_mask(at % MSIX_ENTRY_LEN);
            if let Some(byte) = self.table.get_mut(at) {
                *byte = (*byte & !mask) | (value & mask);
            }
        }
    }

    /// Raises `vector` under MSI-X Message Control `control`: its message,
    /// or why there is none ([`msix_message`]; a masked vector is left
    /// pending).
    pub(super) fn message(
        &mut self,
        control: u16,
        vector: u16,
    ) -> Result<MsixMessage, MsixRefusal> {
        msix_message(&self.table, &mut self.pba, control, vector)
    }

    /// The message of a pending vector the host has since unmasked, if any
    /// ([`msix_take_pending`]).
    pub(super) fn take_pending(&mut self, control: u16) -> Option<MsixMessage> {
        msix_take_pending(&self.table, &mut self.pba, control)
    }

    /// Sends the next MSI-X message of function `id`, written in `buf`
    /// (its length returned): for the vectors set in `due` (one bit per
    /// vector, lowest first, each cleared as it is taken) or, when none of
    /// them can be sent now, for one left pending that the host has since
    /// unmasked. A vector masked on the way is left pending; one refused
    /// otherwise (MSI-X disabled, out of range) is dropped, as
    /// [`msix_message`] decides. `cs` gives MSI-X Message Control.
    pub(super) fn deliver_due(
        &mut self,
        due: &mut u8,
        cs: &ConfigSpace,
        id: Bdf,
        buf: &mut [u8],
    ) -> Option<usize> {
        let control = cs.msix_control().unwrap_or(0);
        while *due != 0 {
            let vector = due.trailing_zeros() as u16;
            *due &= !(1 << vector);
            if let Ok(msg) = self.message(control, vector) {
                return msg.emit(id, buf).ok();
            }
        }
        self.take_pending(control)?.emit(id, buf).ok()
    }
}

/// A function's BAR0 as the host sees it, a double word at a time; `M` is
/// the caller's memory the model needs for that (its `Storage`).
///
/// Offsets are below [`Bar0::LEN`] and DW aligned.
pub(super) trait Bar0<M: ?Sized> {
    /// BAR0's size in bytes: what lies past it is not the function's.
    const LEN: u32;
    /// Reads the double word at `offset`, without side effects.
    fn read_dw(&self, offset: u32, mem: &M) -> [u8; 4];
    /// Writes the bytes enabled by `be` of `data` to the double word at
    /// `offset`, with the side effects of the model's registers.
    fn write_dw(&mut self, offset: u32, be: u8, data: [u8; 4], mem: &mut M);
}

/// Reads `out.len()` bytes at `offset` of BAR0 of `f` as the host would:
/// zeros past BAR0. No side effects.
pub(super) fn read_bar0<M: ?Sized, F: Bar0<M> + ?Sized>(
    f: &F,
    offset: u64,
    out: &mut [u8],
    mem: &M,
) {
    for (i, byte) in out.iter_mut().enumerate() {
        let at = offset.saturating_add(i as u64);
        *byte = match u32::try_from(at) {
            Ok(at) if at < F::LEN => {
                let dw = f.read_dw(at & !3, mem);
                dw.get((at & 3) as usize).copied().unwrap_or(0)
            }
            _ => 0,
        };
    }
}

/// The request of a memory read or write (`true` for a write), once
/// [`Tlp::check`] has accepted it.
///
/// # Errors
///
/// [`MmioError::NotMemory`], [`MmioError::Malformed`].
pub(super) fn decode<'t>(req: &'t Tlp<'_>) -> Result<(&'t MemRequest, bool), MmioError> {
    let (r, write) = match &req.kind {
        Kind::MemRead(r) => (r, false),
        Kind::MemWrite(r) => (r, true),
        _ => return Err(MmioError::NotMemory),
    };
    req.check().map_err(MmioError::Malformed)?;
    Ok((r, write))
}

/// Splits the payload of an MWr at `offset` into double words, in address
/// order: `apply(offset, be, data)` for each, `be` the first or last
/// byte enables for the first and last double word, all four bytes
/// between (0 where the request disables a double word: the caller
/// decides whether that is a write).
pub(super) fn write_dws(
    offset: u64,
    r: &MemRequest,
    payload: &[u8],
    mut apply: impl FnMut(u64, u8, [u8; 4]),
) {
    let last = usize::from(r.length).saturating_sub(1);
    for (i, dw) in payload.chunks_exact(4).enumerate() {
        let be = match i {
            0 => r.first_be,
            i if i == last => r.last_be,
            _ => 0xf,
        };
        let data = <[u8; 4]>::try_from(dw).unwrap_or([0; 4]);
        apply(offset.saturating_add(i as u64 * 4), be, data);
    }
}

/// Answers a read that hit no BAR of function `id` (or came with memory
/// decoding off) with an Unsupported Request completion, written in `buf`
/// and passed to `send`.
///
/// # Errors
///
/// [`MmioError::Malformed`], [`MmioError::Buffer`].
pub(super) fn unsupported(
    req: &Tlp<'_>,
    id: Bdf,
    buf: &mut [u8],
    send: &mut impl FnMut(&[u8]),
) -> Result<Mmio, MmioError> {
    let cpl = Tlp::completion_for(req, id, CompletionStatus::UnsupportedRequest, &[])
        .map_err(MmioError::Malformed)?;
    let n = cpl.emit(buf).map_err(|_| MmioError::Buffer)?;
    send(buf.get(..n).unwrap_or(&[]));
    Ok(Mmio::Unsupported)
}

/// Serves a downstream memory request for function `id`, whose only BAR is
/// BAR0 (`f`): an MRd of BAR0 is answered through `send` (each CplD written
/// in `buf`, of at most the host's Max_Payload_Size), an MWr applied
/// double word by double word, in address order, skipping those with no
/// byte enabled. Outside BAR0 or with decoding off a read gets Unsupported
/// Request and a write is dropped; so is a poisoned write.
///
/// # Errors
///
/// [`MmioError::NotMemory`], [`MmioError::Malformed`],
/// [`MmioError::Buffer`].
pub(super) fn serve_bar0<M: ?Sized, F: Bar0<M>>(
    f: &mut F,
    id: Bdf,
    req: &Tlp<'_>,
    cs: &ConfigSpace,
    mem: &mut M,
    buf: &mut [u8],
    send: &mut impl FnMut(&[u8]),
) -> Result<Mmio, MmioError> {
    let (r, write) = decode(req)?;
    let bytes = u64::from(r.length) * 4;
    let hit = cs.bar_hit(r.address, bytes).filter(|h| h.bar == 0);
    match (hit, write) {
        (Some(hit), true) if !req.ep => {
            write_dws(hit.offset, r, req.payload, |at, be, data| {
                if be == 0 {
                    return;
                }
                if let Ok(at) = u32::try_from(at) {
                    if at < F::LEN {
                        f.write_dw(at & !3, be, data, mem);
                    }
                }
            });
            Ok(Mmio::Written)
        }
        (_, true) => Ok(Mmio::Dropped),
        (Some(hit), false) => {
            let mps = DmaConfig::from_config_space(id, cs).max_payload;
            let f = &*f;
            let mem = &*mem;
            let fill = |at: u64, out: &mut [u8]| read_bar0(f, hit.offset + at, out, mem);
            let n =
                dma::complete_read(req, r, id, mps, buf, fill, send).ok_or(MmioError::Buffer)?;
            Ok(Mmio::Read { completions: n })
        }
        (None, false) => unsupported(req, id, buf, send),
    }
}

/// What a function reports to its driver outside its queues, as the vNIC
/// and the vHBA do alike: the programming errors it refused (PROG_ERRORS,
/// LAST_ERROR), and the status block (`LEN` bytes, written by DMA to
/// STATUS_ADDR) followed by an interrupt on MISC_VECTOR, for the causes
/// gathered since the last one. The block's contents are the model's
/// ([`StatusReport::step`]); the bookkeeping and its order are here.
#[derive(Clone, Debug)]
pub(super) struct StatusReport<const LEN: usize> {
    /// STATUS_ADDR, as the host wrote it: checked when used, since the
    /// halves are written one at a time.
    pub(super) addr: u64,
    /// MISC_VECTOR, the vector raised after a block.
    pub(super) vector: u32,
    /// PROG_ERRORS: values refused so far.
    pub(super) prog_errors: u32,
    /// LAST_ERROR: the offset (bits 31:16) and code of the last refusal.
    pub(super) last_error: u32,
    /// Causes to report in the next block (CAUSE_* bits of the layout).
    pub(super) causes: u32,
    /// Raise MISC_VECTOR after the next block.
    irq: bool,
    /// The last block's generation, never 0 once one was written.
    generation: u32,
    write: Option<DmaWrite>,
    bytes: [u8; LEN],
}

impl<const LEN: usize> StatusReport<LEN> {
    /// The reset state: nothing refused, nothing to report.
    pub(super) fn new() -> Self {
        StatusReport {
            addr: 0,
            vector: 0,
            prog_errors: 0,
            last_error: 0,
            causes: 0,
            irq: false,
            generation: 0,
            write: None,
            bytes: [0; LEN],
        }
    }

    /// Reports `cause` in a status block and raises MISC_VECTOR after it.
    pub(super) fn report(&mut self, cause: u32) {
        self.request(cause, true);
    }

    /// Reports `cause` in a status block, and raises MISC_VECTOR after it
    /// if `irq` (the driver's STATUS_REQUEST may ask for the block alone).
    pub(super) fn request(&mut self, cause: u32, irq: bool) {
        self.causes |= cause;
        if irq {
            self.irq = true;
        }
    }

    /// Counts a value the host programmed at register `offset` and refused
    /// with error `code`, and reports it as `cause` (the layout's
    /// CAUSE_ERROR).
    pub(super) fn refuse(&mut self, offset: u32, code: u32, cause: u32) {
        self.prog_errors = self.prog_errors.wrapping_add(1);
        self.last_error = (offset << 16) | code;
        self.report(cause);
    }

    /// The generation of the block [`StatusReport::step`] encodes.
    pub(super) fn generation(&self) -> u32 {
        self.generation
    }

    /// The next TLP of the status block's write into `buf`, its length; or
    /// `None` when there is none to send. Pending causes start a block,
    /// encoded by `encode` from this report (its generation, causes and
    /// errors) and the model's own fields; when the block is written, or
    /// cannot be for want of a good STATUS_ADDR, the MISC_VECTOR interrupt
    /// (if asked for) is set in `irq_due`, so that it follows the block.
    pub(super) fn step(
        &mut self,
        cfg: &DmaConfig,
        buf: &mut [u8],
        irq_due: &mut u8,
        encode: impl FnOnce(&Self) -> [u8; LEN],
    ) -> Option<usize> {
        if self.write.is_none() && self.causes != 0 {
            let ok = good_address(self.addr, LEN as u64, 64);
            if ok {
                self.generation = self.generation.wrapping_add(1).max(1);
                self.bytes = encode(self);
                self.write = DmaWrite::new(cfg, self.addr, LEN).ok();
            }
            self.causes = 0;
            if !ok && core::mem::take(&mut self.irq) {
                // No block to write: the interrupt alone.
                *irq_due |= 1 << (self.vector & 7);
            }
        }
        if let Some(w) = self.write.as_mut() {
            if let Some(Ok(n)) = w.next_tlp(&self.bytes, buf) {
                return Some(n);
            }
            self.write = None;
            if core::mem::take(&mut self.irq) {
                *irq_due |= 1 << (self.vector & 7);
            }
        }
        None
    }
}

/// Interrupt moderation of one queue (a vNIC queue pair, a vHBA queue):
/// events (completions) are counted, and the queue's interrupt is due when
/// `count` of them have come or `usecs` have passed since the first. A due
/// interrupt fires only if the driver armed it (IRQ_ARM); otherwise it is
/// remembered and fires when the driver arms next.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Moderation {
    /// Most microseconds from the first event to the interrupt (ITR_USECS).
    pub(super) usecs: u32,
    /// Events that make the interrupt due at once (ITR_FRAMES,
    /// ITR_COUNT); 0 counts as 1.
    pub(super) count: u32,
    /// The driver armed the interrupt and has not had it since.
    armed: bool,
    /// Events since the last interrupt was due.
    pending: u32,
    /// When the first of them was seen by [`Moderation::due`].
    since: Option<Instant>,
    /// An interrupt was due while not armed.
    unsignalled: bool,
}

impl Moderation {
    /// Counts `n` events.
    pub(super) fn add(&mut self, n: u32) {
        self.pending = self.pending.saturating_add(n);
    }

    /// When [`Moderation::due`] must be asked next: `None` without events,
    /// `Instant::ZERO` (now) for events it has not seen yet.
    pub(super) fn poll_at(&self) -> Option<Instant> {
        if self.pending == 0 {
            return None;
        }
        Some(match self.since {
            Some(t) => t + Duration::from_micros(u64::from(self.usecs)),
            None => Instant::ZERO,
        })
    }

    /// Whether, at `now`, the events counted make the interrupt due; if so
    /// the count starts again. The caller then writes what the interrupt
    /// announces and calls [`Moderation::signal`].
    pub(super) fn due(&mut self, now: Instant) -> bool {
        if self.pending == 0 {
            return false;
        }
        let since = *self.since.get_or_insert(now);
        let due = since + Duration::from_micros(u64::from(self.usecs));
        if self.pending < self.count.max(1) && now < due {
            return false;
        }
        self.pending = 0;
        self.since = None;
        true
    }

    /// A due interrupt: whether it fires now (it was armed, and is no
    /// longer); if not, it waits for [`Moderation::arm`].
    pub(super) fn signal(&mut self) -> bool {
        if self.armed {
            self.armed = false;
            true
        } else {
            self.unsignalled = true;
            false
        }
    }

    /// The driver arms the interrupt (IRQ_ARM): whether one that came due
    /// meanwhile fires now; if not, the next one will.
    pub(super) fn arm(&mut self) -> bool {
        if self.unsignalled {
            self.unsignalled = false;
            true
        } else {
            self.armed = true;
            false
        }
    }
}
