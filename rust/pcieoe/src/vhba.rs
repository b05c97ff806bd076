// SPDX-License-Identifier: GPL-2.0

//! The behaviour of the virtual HBA function ([`FunctionKind::Vhba`]) on
//! the device interface: its BAR0 registers and submission windows, its
//! DMA of data, segment lists and completions, its interrupts, and its
//! end toward the backing store ([`Vhba::next_backend`],
//! [`Vhba::backend_done`]).
//!
//! The register layout and every format are defined once, in
//! `vhba/layout.rs` ([`vhba_layout`](super::vhba_layout)), which the host
//! driver includes too; read its module documentation first.
//! `Documentation/vhba.rst` explains the design.
//!
//! # Calling it
//!
//! As the vNIC: the DI hands downstream memory requests to
//! [`Vhba::serve_mmio`], completions to [`Vhba::receive`], and calls
//! [`Vhba::poll`] until it returns `None` after each of those, after
//! [`Vhba::backend_done`], after configuration writes, and when
//! [`Vhba::poll_at`] comes (the moderation timers). The backing is not
//! here: the caller takes each I/O with [`Vhba::next_backend`] (call it
//! after `poll`, until `None`), executes it on the LUN's block device or
//! file, with the data in [`Storage::buffer`] of the request's slot, and
//! reports the result with [`Vhba::backend_done`].
//!
//! # A command's way
//!
//! 1. The host writes the 64-byte entry (and the units of segments pushed
//!    after it) into the submission window; the device copies them into
//!    its submission ring ([`Storage::sq`]).
//! 2. [`Vhba::poll`] takes entries into free command slots
//!    ([`Storage::slots`]) and checks them; a bad one completes at once
//!    with its status.
//! 3. A segment list in host memory is read (one round trip); a WRITE's
//!    data is read from the host segments into the slot's buffer
//!    ([`Storage::data`]), several segments in parallel.
//! 4. The command goes to the backing ([`BackendRequest`]).
//! 5. A READ's data is written from the slot's buffer to the host
//!    segments, Max_Payload_Size per MWr.
//! 6. The completion is written to the completion ring with the others
//!    that are ready (one MWr for up to [`CQ_BATCH`]), and the interrupt
//!    moderated as the vNIC's.
//!
//! # Robustness
//!
//! Every address, length, index and size the host programs is checked; a
//! refused value is counted in PROG_ERRORS, named in LAST_ERROR and
//! reported in the status block. A bad command completes with a status
//! and never stops anything else. A queue stopped (or the device reset)
//! while the backing executes one of its commands keeps that slot until
//! [`Vhba::backend_done`] gives it back, so the caller's buffer is never
//! reused under it. Nothing here panics, allocates or loops unboundedly.
//!
//! [`FunctionKind::Vhba`]: super::function::FunctionKind::Vhba

use super::cfgspace::ConfigSpace;
use super::clock::Instant;
use super::dma::{self, DmaConfig, DmaRead, DmaState, DmaWrite, MSIX_ENTRY_LEN};
use super::model::{
    be_mask, good_address, read_bar0, serve_bar0, window_at, Bar0, Moderation, MsixTable,
    StatusReport,
};
use super::testfn::{Mmio, MmioError};
use super::tlp::{self, Bdf, Kind, Tlp};
use super::vhba_layout::*;

/// The buffer length [`Vhba::poll`] and [`Vhba::serve_mmio`] need: the
/// longest TLP.
pub const TLP_BUF_LEN: usize = tlp::MAX_TLP_LEN;
/// Most command slots used ([`Storage::slots`]).
pub const MAX_SLOTS: usize = 64;
/// Bytes of data buffer per slot ([`Storage::data`]).
pub const SLOT_DATA_LEN: usize = MAX_TRANSFER as usize;
/// Most DMA readers in flight at once ([`Storage::readers`]), 32 tags
/// each: 8-bit tags allow eight.
pub const READERS: usize = 8;
/// Largest DISCARD or WRITE_ZEROES, in blocks (LUN_MAX_DISCARD).
pub const DISCARD_MAX_BLOCKS: u32 = u32::MAX;

/// The segment table of a slot: [`MAX_SEGMENTS`], and room for the
/// padding of the last pushed unit.
const SEG_TABLE_LEN: usize = MAX_SEGMENTS as usize * SEG_LEN + SQE_LEN;

/// One LUN, as the DI's configuration sets it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LunInfo {
    /// Capacity in logical blocks.
    pub blocks: u64,
    /// Logical block size: a power of two, [`BLOCK_SIZE_MIN`] to
    /// [`BLOCK_SIZE_MAX`].
    pub block_size: u32,
    /// Physical block size: a power of two, `block_size` to
    /// [`PHYS_BLOCK_MAX`].
    pub physical_block_size: u32,
    /// Writes, discards and write-zeroes refused.
    pub read_only: bool,
    /// DISCARD supported by the backing.
    pub discard: bool,
    /// WRITE_ZEROES supported by the backing.
    pub write_zeroes: bool,
    /// The backing has a volatile write cache (FLUSH and FUA matter).
    pub write_cache: bool,
}

impl LunInfo {
    /// An absent LUN (0 blocks of 512 bytes).
    pub const EMPTY: LunInfo = LunInfo {
        blocks: 0,
        block_size: BLOCK_SIZE_MIN,
        physical_block_size: BLOCK_SIZE_MIN,
        read_only: false,
        discard: false,
        write_zeroes: false,
        write_cache: false,
    };

    /// Checks the block sizes.
    pub fn is_valid(&self) -> bool {
        let bs = self.block_size;
        let pbs = self.physical_block_size;
        bs.is_power_of_two()
            && (BLOCK_SIZE_MIN..=BLOCK_SIZE_MAX).contains(&bs)
            && pbs.is_power_of_two()
            && (bs..=PHYS_BLOCK_MAX).contains(&pbs)
    }

    fn flags(&self) -> u32 {
        let mut f = LUNF_PRESENT;
        if self.read_only {
            f |= LUNF_READ_ONLY;
        }
        if self.discard {
            f |= LUNF_DISCARD;
        }
        if self.write_zeroes {
            f |= LUNF_WRITE_ZEROES;
        }
        if self.write_cache {
            f |= LUNF_WRITE_CACHE;
        }
        f
    }
}

/// What a vHBA is, as the DI's configuration sets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Config {
    /// The LUNs; the first `lun_count` are served.
    pub luns: [LunInfo; MAX_LUNS],
    /// LUNs served, 0 to [`MAX_LUNS`].
    pub lun_count: u32,
    /// Queues, 1 to [`MAX_QUEUES`].
    pub queues: u32,
}

impl Config {
    /// Checks the values.
    pub fn is_valid(&self) -> bool {
        (1..=MAX_QUEUES as u32).contains(&self.queues)
            && self.lun_count <= MAX_LUNS as u32
            && self
                .luns
                .iter()
                .take(self.lun_count as usize)
                .all(LunInfo::is_valid)
    }
}

/// The caller's memory: the submission rings, the command slots with
/// their data buffers, and the DMA readers. The same buffers are passed
/// to every call.
#[derive(Debug)]
pub struct Storage<'a> {
    /// Per queue, the submission ring: SQ_SIZE units of 64 bytes (at
    /// most [`RING_MAX`], 16 KiB). SQ_MAX reports what fits.
    pub sq: [&'a mut [u8]; MAX_QUEUES],
    /// The command slots, up to [`MAX_SLOTS`] (more are not used).
    pub slots: &'a mut [Slot],
    /// The slots' data buffers, [`SLOT_DATA_LEN`] bytes each: slot `i`'s
    /// at `i * SLOT_DATA_LEN`. Slots without a whole buffer are not used.
    pub data: &'a mut [u8],
    /// The DMA readers, up to [`READERS`] (more are not used); reader
    /// `i` uses tags `32 * i` to `32 * i + 31`. Without any, every
    /// command that needs a DMA read fails with DMA_ERROR.
    pub readers: &'a mut [Reader],
}

impl Storage<'_> {
    /// The slots usable: as many as there are slots and whole data
    /// buffers, at most [`MAX_SLOTS`] (what SLOTS reads).
    pub fn slot_count(&self) -> usize {
        self.slots
            .len()
            .min(self.data.len() / SLOT_DATA_LEN)
            .min(MAX_SLOTS)
    }

    /// The data buffer of `slot` ([`SLOT_DATA_LEN`] bytes): where the
    /// backing reads a WRITE's data from and puts a READ's, the first
    /// [`BackendRequest::bytes`] bytes. `None` for a slot not usable.
    pub fn buffer(&mut self, slot: u16) -> Option<&mut [u8]> {
        let at = usize::from(slot).checked_mul(SLOT_DATA_LEN)?;
        self.data.get_mut(at..at.checked_add(SLOT_DATA_LEN)?)
    }

    fn sq_max(&self, q: usize) -> u32 {
        let entries = self.sq.get(q).map_or(0, |b| b.len() / SQE_LEN);
        let entries = entries.min(RING_MAX as usize) as u32;
        if entries < 2 {
            0
        } else {
            // The largest power of two that fits.
            1 << (31 - entries.leading_zeros())
        }
    }
}

/// Where a command slot stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Free,
    /// The segment list is to be read (`reads` 1: being read).
    List,
    /// A WRITE's data is being read, segment by segment.
    Data,
    /// Ready for the backing.
    Backend,
    /// With the backing.
    Handed,
    /// With the backing, but its queue stopped: freed by `backend_done`.
    Orphan,
    /// A READ's data waits to be written to the host.
    Send,
    /// A READ's data is being written (the queue's writer has it).
    Sending,
    /// Done with this status: the completion is due.
    Done(u8),
}

/// A command slot: one command being executed, with its segments. The
/// caller allocates them ([`Storage::slots`]); the vHBA uses them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    state: State,
    /// Bumped whenever the slot is freed: readers of an older generation
    /// are stale.
    gen: u32,
    queue: u8,
    epoch: u32,
    cmd: SubmissionEntry,
    /// Data bytes (READ, WRITE).
    bytes: u32,
    /// Segments in `segs`.
    nsegs: u16,
    /// The next segment whose read is to start.
    next_seg: u16,
    /// Reads in flight.
    reads: u16,
    failed: bool,
    segs: [u8; SEG_TABLE_LEN],
}

impl Slot {
    /// A free slot.
    pub const fn new() -> Slot {
        Slot {
            state: State::Free,
            gen: 0,
            queue: 0,
            epoch: 0,
            cmd: SubmissionEntry {
                opcode: Opcode::Unknown(0),
                flags: 0,
                cid: 0,
                lun: 0,
                nsegs: 0,
                lba: 0,
                blocks: 0,
                segs: [Segment { addr: 0, len: 0 }; INLINE_SEGMENTS],
            },
            bytes: 0,
            nsegs: 0,
            next_seg: 0,
            reads: 0,
            failed: false,
            segs: [0; SEG_TABLE_LEN],
        }
    }

    /// Whether the slot is free (tests, debugfs).
    pub fn is_free(&self) -> bool {
        self.state == State::Free
    }

    fn free(&mut self) {
        self.state = State::Free;
        self.gen = self.gen.wrapping_add(1);
        self.reads = 0;
    }

    fn seg(&self, i: u16) -> Segment {
        let at = usize::from(i) * SEG_LEN;
        let mut b = [0u8; SEG_LEN];
        if let Some(s) = self.segs.get(at..at + SEG_LEN) {
            b.copy_from_slice(s);
        }
        Segment::decode(&b)
    }

    /// The data offset of segment `i`.
    fn seg_offset(&self, i: u16) -> usize {
        (0..i).map(|k| self.seg(k).len as usize).sum()
    }

    /// Checks the segments against the transfer length.
    fn segments_fit(&self) -> bool {
        let mut sum = 0u64;
        for i in 0..self.nsegs {
            let s = self.seg(i);
            if !s.is_valid() {
                return false;
            }
            sum += u64::from(s.len);
        }
        self.nsegs > 0 && sum == u64::from(self.bytes)
    }
}

impl Default for Slot {
    fn default() -> Slot {
        Slot::new()
    }
}

/// The marker of a reader of a segment list.
const LIST_SEG: u16 = u16::MAX;

/// A DMA reader: one [`DmaRead`] and what it is for. The caller
/// allocates them ([`Storage::readers`]); the vHBA uses them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reader {
    read: Option<DmaRead>,
    slot: u16,
    gen: u32,
    /// The segment, or [`LIST_SEG`].
    seg: u16,
    /// Where the data goes in the slot's buffer.
    offset: u32,
    /// The read ended with requests unanswered: completions for this
    /// reader's tags may still come and are taken and dropped, and the
    /// tags are not used again, until [`Vhba::timeout`].
    quarantine: bool,
}

impl Reader {
    /// An idle reader.
    pub const fn new() -> Reader {
        Reader {
            read: None,
            slot: 0,
            gen: 0,
            seg: 0,
            offset: 0,
            quarantine: false,
        }
    }

    /// Drops the read; quarantines the reader if it leaves requests
    /// unanswered.
    fn retire(&mut self) {
        let unanswered = self
            .read
            .take()
            .is_some_and(|r| r.state() != DmaState::Done && r.outstanding() > 0);
        self.quarantine |= unanswered;
    }
}

/// Whether `tlp` is a completion for `id` with one of reader `ri`'s tags.
fn for_reader(tlp: &Tlp<'_>, id: Bdf, ri: usize) -> bool {
    let Kind::Completion(c) = &tlp.kind else {
        return false;
    };
    let first = ri * dma::TAGS;
    c.requester == id && (first..first + dma::TAGS).contains(&usize::from(c.tag.get()))
}

/// An operation on the backing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendOp {
    /// Read `blocks` blocks at `lba` into the slot's buffer.
    Read {
        /// First block.
        lba: u64,
        /// Blocks.
        blocks: u32,
    },
    /// Write `blocks` blocks at `lba` from the slot's buffer.
    Write {
        /// First block.
        lba: u64,
        /// Blocks.
        blocks: u32,
    },
    /// Flush the backing's volatile cache.
    Flush,
    /// Discard the blocks.
    Discard {
        /// First block.
        lba: u64,
        /// Blocks.
        blocks: u32,
    },
    /// Zero the blocks.
    WriteZeroes {
        /// First block.
        lba: u64,
        /// Blocks.
        blocks: u32,
    },
}

/// An I/O for the caller to execute on a LUN's backing
/// ([`Vhba::next_backend`]); its result goes to [`Vhba::backend_done`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BackendRequest {
    /// The command slot: the data is in [`Storage::buffer`] of it.
    pub slot: u16,
    /// The LUN (below LUN_COUNT; its block size is the configuration's).
    pub lun: u8,
    /// What to do.
    pub op: BackendOp,
    /// Force Unit Access: durable before done (REQ_FUA).
    pub fua: bool,
    /// Data bytes in the slot's buffer (READ, WRITE), else 0.
    pub bytes: usize,
}

/// Why the backing failed an I/O.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IoError {
    /// Any error of the backing: the command completes with IO_ERROR.
    Io,
    /// The backing cannot do this (a discard it turned out not to
    /// support): the command completes with NOT_SUPPORTED.
    NotSupported,
}

/// A READ's data being written: segment `seg` of `slot`.
#[derive(Clone, Debug)]
struct Writing {
    slot: u16,
    seg: u16,
    write: DmaWrite,
}

/// One queue.
#[derive(Clone, Debug)]
struct Queue {
    /// Bumped whenever the queue stops: its slots become stale.
    epoch: u32,
    enabled: bool,
    stream_error: bool,
    last_error: u32,
    cq_addr: u64,
    cq_size: u32,
    sq_size: u32,
    vector: u32,
    /// Interrupt moderation: ITR_USECS, the count, IRQ_ARM.
    moderation: Moderation,
    /// Units of whole commands in the ring: the end of the last one.
    submitted: u32,
    /// The next unit the host writes.
    pos: u32,
    /// Double words of the unit at `pos` written.
    dw: u32,
    /// Units of the command being written still due after `pos`.
    rec_left: u32,
    /// Units taken from the ring (sq_head).
    taken: u32,
    /// Completions written (or in `batch`).
    cq_tail: u32,
    writing: Option<Writing>,
    /// Completions not yet written, or being written by `cq_write`.
    batch: [u8; CQ_BATCH * CQE_LEN],
    batch_n: usize,
    cq_write: Option<DmaWrite>,
}

impl Queue {
    fn new(index: u32) -> Queue {
        Queue {
            epoch: 0,
            enabled: false,
            stream_error: false,
            last_error: ERR_NONE,
            cq_addr: 0,
            cq_size: 0,
            sq_size: 0,
            vector: index,
            moderation: Moderation::default(),
            submitted: 0,
            pos: 0,
            dw: 0,
            rec_left: 0,
            taken: 0,
            cq_tail: 0,
            writing: None,
            batch: [0; CQ_BATCH * CQE_LEN],
            batch_n: 0,
            cq_write: None,
        }
    }

    /// Back to disabled, keeping the programming.
    fn stop(&mut self) {
        let mut fresh = Queue::new(0);
        fresh.cq_addr = self.cq_addr;
        fresh.cq_size = self.cq_size;
        fresh.sq_size = self.sq_size;
        fresh.vector = self.vector;
        fresh.moderation.usecs = self.moderation.usecs;
        fresh.moderation.count = self.moderation.count;
        fresh.last_error = self.last_error;
        fresh.epoch = self.epoch.wrapping_add(1);
        *self = fresh;
    }

    fn status(&self) -> u32 {
        let mut s = self.last_error << 8;
        if self.enabled {
            s |= QSTATUS_ENABLED;
        }
        if self.stream_error {
            s |= QSTATUS_STREAM_ERROR;
        }
        s
    }
}

/// The features offered.
pub const FEATURES: u32 = F_MULTI_QUEUE
    | F_SEG_LIST
    | F_SEG_FOLLOW
    | F_FLUSH_FUA
    | F_DISCARD
    | F_WRITE_ZEROES
    | F_IRQ_MODERATION
    | F_STATUS_BLOCK;

/// What a checked command does next.
enum Next {
    /// Read the segment list first.
    List,
    /// Read the WRITE data.
    Data,
    /// Straight to the backing.
    Backend,
}

/// The vHBA function.
#[derive(Clone, Debug)]
pub struct Vhba {
    id: Bdf,
    cfg: Config,
    control: u32,
    /// PROG_ERRORS, LAST_ERROR, the status block and MISC_VECTOR.
    status: StatusReport<STATUS_BLOCK_LEN>,
    stats: [u64; STATS_COUNT],
    queues: [Queue; MAX_QUEUES],
    /// Queue to take commands from first (round robin).
    next_queue: usize,
    /// Slot to look at first in `next_backend`.
    next_backend_slot: usize,
    msix: MsixTable<{ MSIX_VECTORS * MSIX_ENTRY_LEN }>,
    /// Vectors to raise (bit per vector).
    irq_due: u8,
}

impl Vhba {
    /// A vHBA in its reset state. `id` is its routing ID as the host sees
    /// it. A `cfg` out of range is clamped (1 to [`MAX_QUEUES`] queues, at
    /// most [`MAX_LUNS`] LUNs, a LUN with bad block sizes served with 0
    /// blocks of 512 bytes); the DI's configfs refuses such values before.
    pub fn new(id: Bdf, cfg: &Config) -> Vhba {
        let mut cfg = *cfg;
        cfg.queues = cfg.queues.clamp(1, MAX_QUEUES as u32);
        cfg.lun_count = cfg.lun_count.min(MAX_LUNS as u32);
        for lun in cfg.luns.iter_mut() {
            if !lun.is_valid() {
                *lun = LunInfo::EMPTY;
            }
        }
        Vhba {
            id,
            cfg,
            control: 0,
            status: StatusReport::new(),
            stats: [0; STATS_COUNT],
            queues: [Queue::new(0), Queue::new(1), Queue::new(2), Queue::new(3)],
            next_queue: 0,
            next_backend_slot: 0,
            msix: MsixTable::new(MSIX_TABLE, MSIX_PBA),
            irq_due: 0,
        }
    }

    /// Back to the reset state (a Function Level Reset, CONTROL.RESET, or
    /// the function given to another host). Commands in the slots are
    /// dropped without completion; those with the backing are freed when
    /// it gives them back.
    pub fn reset(&mut self) {
        let epochs = self.queues.each_ref().map(|q| q.epoch);
        *self = Vhba::new(self.id, &self.cfg);
        for (q, e) in self.queues.iter_mut().zip(epochs) {
            q.epoch = e.wrapping_add(1);
        }
    }

    /// The configuration given to [`Vhba::new`].
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Changes a LUN's information (a backing resized, made read-only):
    /// the host is told with [`CAUSE_LUN`] in the status block and
    /// MISC_VECTOR. Commands already checked are not checked again.
    /// Returns false for a LUN out of range or invalid information.
    pub fn set_lun(&mut self, lun: u8, info: &LunInfo) -> bool {
        if u32::from(lun) >= self.cfg.lun_count || !info.is_valid() {
            return false;
        }
        if let Some(l) = self.cfg.luns.get_mut(usize::from(lun)) {
            if l != info {
                *l = *info;
                self.status.report(CAUSE_LUN);
            }
        }
        true
    }

    /// The counters, by `STAT_*` index.
    pub fn stats(&self) -> &[u64; STATS_COUNT] {
        &self.stats
    }

    /// Programming errors refused so far.
    pub fn prog_errors(&self) -> u32 {
        self.status.prog_errors
    }

    fn enabled(&self) -> bool {
        self.control & CTRL_ENABLE != 0
    }

    fn refuse(&mut self, offset: u32, code: u32) {
        self.status.refuse(offset, code, CAUSE_ERROR);
    }

    fn refuse_queue(&mut self, q: usize, offset: u32, code: u32) {
        if let Some(queue) = self.queues.get_mut(q) {
            queue.last_error = code;
        }
        self.refuse(offset, code);
    }

    fn status_reg(&self) -> u32 {
        if self.enabled() {
            STATUS_ENABLED
        } else {
            0
        }
    }

    /// Whether `slot` belongs to a queue still running the epoch it was
    /// taken in.
    fn live(&self, slot: &Slot) -> bool {
        self.queues
            .get(usize::from(slot.queue))
            .is_some_and(|q| q.enabled && q.epoch == slot.epoch)
    }

    /// Frees the slots of stopped queues; those with the backing become
    /// orphans.
    fn reap(&self, mem: &mut Storage<'_>) {
        let n = mem.slot_count();
        for slot in mem.slots.iter_mut().take(n) {
            match slot.state {
                State::Free | State::Orphan => {}
                _ if self.live(slot) => {}
                State::Handed => slot.state = State::Orphan,
                _ => slot.free(),
            }
        }
    }

    // ------------------------------------------------------------------
    // Registers.

    fn reg(&self, offset: u32, mem: &Storage<'_>) -> u32 {
        match offset {
            REG_MAGIC => MAGIC_VALUE,
            REG_VERSION => VERSION_VALUE,
            REG_FEATURES => FEATURES,
            REG_LUN_COUNT => self.cfg.lun_count,
            REG_MAX_TRANSFER => MAX_TRANSFER,
            REG_MAX_SEGMENTS => MAX_SEGMENTS,
            REG_QUEUES => self.cfg.queues,
            REG_SLOTS => mem.slot_count() as u32,
            REG_CONTROL => self.control,
            REG_STATUS => self.status_reg(),
            REG_MISC_VECTOR => self.status.vector,
            REG_STATUS_ADDR_LO => self.status.addr as u32,
            REG_STATUS_ADDR_HI => (self.status.addr >> 32) as u32,
            REG_PROG_ERRORS => self.status.prog_errors,
            REG_LAST_ERROR => self.status.last_error,
            o if (REG_STATS..REG_STATS + STATS_COUNT as u32 * 8).contains(&o) => {
                let i = ((o - REG_STATS) / 8) as usize;
                let v = self.stats.get(i).copied().unwrap_or(0);
                if o % 8 == 0 {
                    v as u32
                } else {
                    (v >> 32) as u32
                }
            }
            o if (QUEUE_REGS..QUEUE_REGS + MAX_QUEUES as u32 * QUEUE_REGS_STRIDE).contains(&o) => {
                let q = (o - QUEUE_REGS) / QUEUE_REGS_STRIDE;
                self.queue_reg(q, (o - QUEUE_REGS) % QUEUE_REGS_STRIDE, mem)
            }
            o if (LUN_REGS..LUN_REGS + MAX_LUNS as u32 * LUN_REGS_STRIDE).contains(&o) => {
                let lun = (o - LUN_REGS) / LUN_REGS_STRIDE;
                self.lun_reg(lun, (o - LUN_REGS) % LUN_REGS_STRIDE)
            }
            _ => 0,
        }
    }

    fn lun_reg(&self, lun: u32, reg: u32) -> u32 {
        let Some(info) = self
            .cfg
            .luns
            .get(lun as usize)
            .filter(|_| lun < self.cfg.lun_count)
        else {
            return 0;
        };
        match reg {
            LUN_BLOCKS_LO => info.blocks as u32,
            LUN_BLOCKS_HI => (info.blocks >> 32) as u32,
            LUN_BLOCK_SIZE => info.block_size,
            LUN_PHYS_BLOCK => info.physical_block_size,
            LUN_FLAGS => info.flags(),
            LUN_MAX_DISCARD if info.discard || info.write_zeroes => DISCARD_MAX_BLOCKS,
            _ => 0,
        }
    }

    fn queue_reg(&self, q: u32, reg: u32, mem: &Storage<'_>) -> u32 {
        let Some(queue) = self.queues.get(q as usize).filter(|_| q < self.cfg.queues) else {
            return 0;
        };
        match reg {
            Q_CONTROL => u32::from(queue.enabled),
            Q_STATUS => queue.status(),
            Q_CQ_ADDR_LO => queue.cq_addr as u32,
            Q_CQ_ADDR_HI => (queue.cq_addr >> 32) as u32,
            Q_CQ_SIZE => queue.cq_size,
            Q_SQ_SIZE => queue.sq_size,
            Q_SQ_MAX => mem.sq_max(q as usize),
            Q_IRQ_VECTOR => queue.vector,
            Q_ITR_USECS => queue.moderation.usecs,
            Q_ITR_COUNT => queue.moderation.count,
            _ => 0,
        }
    }

    fn write_reg(&mut self, offset: u32, value: u32, mask: u32, mem: &Storage<'_>) {
        let merged = (self.reg(offset, mem) & !mask) | (value & mask);
        match offset {
            REG_CONTROL => self.write_control(merged),
            REG_MISC_VECTOR => {
                if merged < MSIX_VECTORS as u32 {
                    self.status.vector = merged;
                } else {
                    self.refuse(offset, ERR_VALUE);
                }
            }
            REG_STATUS_ADDR_LO => {
                // Checked when used: the halves are written one at a time.
                self.status.addr = (self.status.addr & !0xffff_ffff) | u64::from(merged);
            }
            REG_STATUS_ADDR_HI => {
                self.status.addr = (self.status.addr & 0xffff_ffff) | (u64::from(merged) << 32);
            }
            REG_STATUS_REQUEST => self.status.request(CAUSE_REQUEST, value & 1 != 0),
            o if (QUEUE_REGS..QUEUE_REGS + MAX_QUEUES as u32 * QUEUE_REGS_STRIDE).contains(&o) => {
                let q = (o - QUEUE_REGS) / QUEUE_REGS_STRIDE;
                let reg = (o - QUEUE_REGS) % QUEUE_REGS_STRIDE;
                self.write_queue_reg(q, reg, merged, mem);
            }
            _ => {}
        }
    }

    fn write_control(&mut self, value: u32) {
        if value & CTRL_RESET != 0 {
            self.reset();
            return;
        }
        let was = self.enabled();
        self.control = value & CTRL_ENABLE;
        if was && !self.enabled() {
            for q in self.queues.iter_mut() {
                q.stop();
            }
        }
    }

    fn write_queue_reg(&mut self, q: u32, reg: u32, value: u32, mem: &Storage<'_>) {
        let offset = queue_reg(q, reg);
        let qi = q as usize;
        if q >= self.cfg.queues {
            return self.refuse(offset, ERR_QUEUE);
        }
        let Some(queue) = self.queues.get_mut(qi) else {
            return;
        };
        let enabled = queue.enabled;
        let programming = matches!(reg, Q_CQ_ADDR_LO | Q_CQ_ADDR_HI | Q_CQ_SIZE | Q_SQ_SIZE);
        if programming && enabled {
            return self.refuse_queue(qi, offset, ERR_BUSY);
        }
        let ring_size = |v: u32| v.is_power_of_two() && (2..=RING_MAX).contains(&v);
        match reg {
            Q_CONTROL => {
                if value & QCTRL_ENABLE == 0 {
                    if enabled {
                        queue.stop();
                    }
                } else if !enabled {
                    self.enable_queue(qi, mem);
                }
            }
            Q_CQ_ADDR_LO => queue.cq_addr = (queue.cq_addr & !0xffff_ffff) | u64::from(value),
            Q_CQ_ADDR_HI => {
                queue.cq_addr = (queue.cq_addr & 0xffff_ffff) | (u64::from(value) << 32);
            }
            Q_CQ_SIZE | Q_SQ_SIZE => {
                if !ring_size(value) {
                    self.refuse_queue(qi, offset, ERR_RING_SIZE);
                } else if reg == Q_CQ_SIZE {
                    queue.cq_size = value;
                } else {
                    queue.sq_size = value;
                }
            }
            Q_IRQ_VECTOR => {
                if value < MSIX_VECTORS as u32 {
                    queue.vector = value;
                } else {
                    self.refuse_queue(qi, offset, ERR_VALUE);
                }
            }
            Q_ITR_USECS => {
                if value <= ITR_USECS_MAX {
                    queue.moderation.usecs = value;
                } else {
                    self.refuse_queue(qi, offset, ERR_VALUE);
                }
            }
            Q_ITR_COUNT => {
                if value <= RING_MAX {
                    queue.moderation.count = value;
                } else {
                    self.refuse_queue(qi, offset, ERR_VALUE);
                }
            }
            Q_IRQ_ARM => {
                // An interrupt that came due unarmed fires now.
                let fire = queue.moderation.arm();
                if fire {
                    self.irq_due |= 1 << (queue.vector & 7);
                }
            }
            _ => {}
        }
    }

    fn enable_queue(&mut self, qi: usize, mem: &Storage<'_>) {
        let offset = queue_reg(qi as u32, Q_CONTROL);
        let sq_max = mem.sq_max(qi);
        let slots = mem.slot_count();
        let Some(queue) = self.queues.get_mut(qi) else {
            return;
        };
        let cq = u64::from(queue.cq_size);
        let code = if cq == 0 || queue.sq_size == 0 || queue.sq_size > queue.cq_size {
            ERR_RING_SIZE
        } else if !good_address(queue.cq_addr, cq * CQE_LEN as u64, CQE_LEN as u64) {
            ERR_ADDRESS
        } else if queue.sq_size > sq_max || slots == 0 {
            ERR_QUEUE
        } else {
            queue.stop();
            queue.enabled = true;
            queue.last_error = ERR_NONE;
            return;
        };
        self.refuse_queue(qi, offset, code);
    }

    // ------------------------------------------------------------------
    // The submission window.

    /// A double word written into queue `qi`'s submission window at `at`
    /// (bytes into the window).
    fn sq_window_dw(&mut self, qi: usize, at: u32, be: u8, data: [u8; 4], mem: &mut Storage<'_>) {
        let offset = sq_window(qi as u32) + at;
        let Some(queue) = self.queues.get_mut(qi) else {
            return;
        };
        if queue.stream_error {
            // Stopped: the first refusal is the one that matters.
            return;
        }
        if !queue.enabled {
            return self.refuse_queue(qi, offset, ERR_QUEUE);
        }
        let expect = (queue.pos % SQ_WINDOW_SLOTS) * SQE_LEN as u32 + queue.dw * 4;
        let size = queue.sq_size.max(1);
        let ring = mem.sq.get_mut(qi).map_or(&mut [][..], |r| &mut **r);
        let code = if be != 0xf || at != expect {
            ERR_POSITION
        } else if queue.dw == 0 && queue.pos.wrapping_sub(queue.taken) >= queue.sq_size {
            ERR_OVERRUN
        } else {
            let unit = (queue.pos % size) as usize * SQE_LEN;
            let to = unit + queue.dw as usize * 4;
            if let Some(d) = ring.get_mut(to..to + 4) {
                d.copy_from_slice(&data);
            }
            queue.dw += 1;
            if queue.dw as usize != SQE_LEN / 4 {
                return;
            }
            queue.dw = 0;
            queue.pos = queue.pos.wrapping_add(1);
            if queue.rec_left > 0 {
                queue.rec_left -= 1;
            } else {
                // A command's first unit: how many follow.
                let mut raw = [0u8; SQE_LEN];
                if let Some(u) = ring.get(unit..unit + SQE_LEN) {
                    raw.copy_from_slice(u);
                }
                let units = SubmissionEntry::decode(&raw).0.units();
                if units > queue.sq_size {
                    queue.stream_error = true;
                    return self.refuse_queue(qi, offset, ERR_OVERRUN);
                }
                queue.rec_left = units - 1;
            }
            if queue.rec_left == 0 {
                queue.submitted = queue.pos;
            }
            return;
        };
        queue.stream_error = true;
        self.refuse_queue(qi, offset, code);
    }

    // ------------------------------------------------------------------
    // MMIO.

    /// Reads `out.len()` bytes at `offset` of BAR0 as the host would
    /// (zeros outside the registers, table and PBA). No side effects.
    pub fn mmio_read(&self, offset: u64, out: &mut [u8], mem: &Storage<'_>) {
        read_bar0(self, offset, out, mem);
    }

    /// Serves a downstream memory request for this function, as
    /// [`TestFunction::serve_mmio`](super::testfn::TestFunction::serve_mmio)
    /// does: an MRd of BAR0 is answered through `send` (each CplD written
    /// in `buf`, [`TLP_BUF_LEN`] bytes), an MWr applied double word by
    /// double word, in address order. Outside BAR0 or with decoding off a
    /// read gets Unsupported Request and a write is dropped; so is a
    /// poisoned write.
    ///
    /// # Errors
    ///
    /// [`MmioError::NotMemory`], [`MmioError::Malformed`],
    /// [`MmioError::Buffer`].
    pub fn serve_mmio(
        &mut self,
        req: &Tlp<'_>,
        cs: &ConfigSpace,
        mem: &mut Storage<'_>,
        buf: &mut [u8],
        send: &mut impl FnMut(&[u8]),
    ) -> Result<Mmio, MmioError> {
        let id = self.id;
        serve_bar0(self, id, req, cs, mem, buf, send)
    }

    // ------------------------------------------------------------------
    // Commands.

    /// Checks a submission entry: what comes next, or the status it
    /// completes with. In order: opcode, LUN, fields, support, range,
    /// read-only.
    fn check(&self, e: &SubmissionEntry, reserved_zero: bool) -> Result<Next, u8> {
        if let Opcode::Unknown(_) = e.opcode {
            return Err(STATUS_INVALID_OPCODE);
        }
        let lun = self
            .cfg
            .luns
            .get(usize::from(e.lun))
            .filter(|_| u32::from(e.lun) < self.cfg.lun_count)
            .ok_or(STATUS_INVALID_LUN)?;
        if !reserved_zero || e.flags & !SQF_FLAGS != 0 {
            return Err(STATUS_INVALID_FIELD);
        }
        let list = e.flags & SQF_SEG_LIST != 0;
        let fua = e.flags & SQF_FUA != 0;
        let no_segs = e.nsegs == 0
            && e.flags & (SQF_SEG_LIST | SQF_SEG_FOLLOW) == 0
            && e.segs.iter().all(|s| *s == Segment::default());
        let range = |lba: u64, blocks: u32| {
            lba.checked_add(u64::from(blocks))
                .is_some_and(|end| end <= lun.blocks)
        };
        match e.opcode {
            Opcode::Flush => {
                if !no_segs || fua || e.lba != 0 || e.blocks != 0 {
                    return Err(STATUS_INVALID_FIELD);
                }
                Ok(Next::Backend)
            }
            Opcode::Discard | Opcode::WriteZeroes => {
                let discard = e.opcode == Opcode::Discard;
                if !no_segs || e.blocks == 0 || (fua && discard) {
                    return Err(STATUS_INVALID_FIELD);
                }
                if (discard && !lun.discard) || (!discard && !lun.write_zeroes) {
                    return Err(STATUS_NOT_SUPPORTED);
                }
                if !range(e.lba, e.blocks) {
                    return Err(STATUS_LBA_OUT_OF_RANGE);
                }
                if lun.read_only {
                    return Err(STATUS_READ_ONLY);
                }
                Ok(Next::Backend)
            }
            Opcode::Read | Opcode::Write => {
                let write = e.opcode == Opcode::Write;
                let bytes = u64::from(e.blocks) * u64::from(lun.block_size);
                if e.blocks == 0 || bytes > u64::from(MAX_TRANSFER) || (fua && !write) {
                    return Err(STATUS_INVALID_FIELD);
                }
                let follow = e.flags & SQF_SEG_FOLLOW != 0;
                let segs_ok = if list && follow {
                    false
                } else if follow {
                    (INLINE_SEGMENTS as u16 + 1..=MAX_SEGMENTS as u16).contains(&e.nsegs)
                } else if list {
                    let l = e.segs[0];
                    (1..=MAX_SEGMENTS as u16).contains(&e.nsegs)
                        && l.len == u32::from(e.nsegs) * SEG_LEN as u32
                        && good_address(l.addr, u64::from(l.len), SEG_LEN as u64)
                        && e.segs[1] == Segment::default()
                } else {
                    (1..=INLINE_SEGMENTS as u16).contains(&e.nsegs)
                        && e.segs
                            .iter()
                            .skip(usize::from(e.nsegs))
                            .all(|s| *s == Segment::default())
                };
                if !segs_ok {
                    return Err(STATUS_INVALID_FIELD);
                }
                if !range(e.lba, e.blocks) {
                    return Err(STATUS_LBA_OUT_OF_RANGE);
                }
                if write && lun.read_only {
                    return Err(STATUS_READ_ONLY);
                }
                Ok(if list {
                    Next::List
                } else if write {
                    Next::Data
                } else {
                    Next::Backend
                })
            }
            Opcode::Unknown(_) => Err(STATUS_INVALID_OPCODE),
        }
    }

    /// Takes submitted entries into free slots, queues in turn.
    fn take_commands(&mut self, mem: &mut Storage<'_>) {
        if !self.enabled() {
            return;
        }
        let n = mem.slot_count();
        // Each round takes at most one entry per queue; at most as many
        // rounds as there are slots.
        for _ in 0..n {
            let mut took = false;
            for k in 0..MAX_QUEUES {
                let qi = (self.next_queue + k) % MAX_QUEUES;
                let Some(si) = mem.slots.iter().take(n).position(Slot::is_free) else {
                    return;
                };
                if self.take_one(qi, si, mem) {
                    took = true;
                }
            }
            self.next_queue = (self.next_queue + 1) % MAX_QUEUES;
            if !took {
                return;
            }
        }
    }

    /// Takes queue `qi`'s next entry into slot `si`; whether there was one.
    fn take_one(&mut self, qi: usize, si: usize, mem: &mut Storage<'_>) -> bool {
        let Some(queue) = self.queues.get_mut(qi) else {
            return false;
        };
        if !queue.enabled || queue.taken == queue.submitted {
            return false;
        }
        let size = queue.sq_size.max(1);
        let first = queue.taken;
        let ring = mem.sq.get(qi).map_or(&[][..], |r| &**r);
        let unit = |n: u32| {
            let at = (n % size) as usize * SQE_LEN;
            let mut raw = [0u8; SQE_LEN];
            if let Some(s) = ring.get(at..at + SQE_LEN) {
                raw.copy_from_slice(s);
            }
            raw
        };
        let (e, reserved_zero) = SubmissionEntry::decode(&unit(first));
        // The stream accepted the command whole: its units are all there.
        queue.taken = first.wrapping_add(e.units());
        let (queue_u8, epoch) = (qi as u8, queue.epoch);
        let checked = self.check(&e, reserved_zero);
        let bs = self
            .cfg
            .luns
            .get(usize::from(e.lun))
            .map_or(0, |l| l.block_size);
        let Some(slot) = mem.slots.get_mut(si) else {
            return false;
        };
        slot.queue = queue_u8;
        slot.epoch = epoch;
        slot.cmd = e;
        slot.bytes = e.blocks.saturating_mul(bs);
        slot.next_seg = 0;
        slot.reads = 0;
        slot.failed = false;
        slot.nsegs = 0;
        slot.state = match checked {
            Err(status) => State::Done(status),
            Ok(Next::List) => {
                slot.nsegs = e.nsegs;
                State::List
            }
            Ok(next) => {
                slot.nsegs = e.nsegs;
                for (i, s) in e.segs.iter().enumerate() {
                    let at = i * SEG_LEN;
                    if let Some(d) = slot.segs.get_mut(at..at + SEG_LEN) {
                        d.copy_from_slice(&s.encode());
                    }
                }
                // Pushed segments: whole units after the inline two (the
                // check bounded nsegs, so they fit the table).
                for k in 1..e.units() {
                    let at = INLINE_SEGMENTS * SEG_LEN + (k as usize - 1) * SQE_LEN;
                    if let Some(d) = slot.segs.get_mut(at..at + SQE_LEN) {
                        d.copy_from_slice(&unit(first.wrapping_add(k)));
                    }
                }
                let with_data = e.opcode == Opcode::Read || e.opcode == Opcode::Write;
                if with_data && !slot.segments_fit() {
                    State::Done(STATUS_INVALID_FIELD)
                } else if let Next::Data = next {
                    State::Data
                } else {
                    State::Backend
                }
            }
        };
        true
    }

    // ------------------------------------------------------------------
    // The backing.

    /// The next I/O for the backing, `None` if none is ready. Its slot is
    /// the caller's until [`Vhba::backend_done`]: for a WRITE its
    /// [`Storage::buffer`] holds the data, for a READ the caller fills it.
    pub fn next_backend(&mut self, mem: &mut Storage<'_>) -> Option<BackendRequest> {
        self.reap(mem);
        let n = mem.slot_count();
        for k in 0..n {
            let si = (self.next_backend_slot + k) % n;
            let Some(slot) = mem.slots.get_mut(si) else {
                continue;
            };
            if slot.state != State::Backend {
                continue;
            }
            slot.state = State::Handed;
            self.next_backend_slot = (si + 1) % n;
            let e = &slot.cmd;
            let (lba, blocks) = (e.lba, e.blocks);
            let op = match e.opcode {
                Opcode::Read => BackendOp::Read { lba, blocks },
                Opcode::Write => BackendOp::Write { lba, blocks },
                Opcode::Discard => BackendOp::Discard { lba, blocks },
                Opcode::WriteZeroes => BackendOp::WriteZeroes { lba, blocks },
                _ => BackendOp::Flush,
            };
            let data = matches!(op, BackendOp::Read { .. } | BackendOp::Write { .. });
            return Some(BackendRequest {
                slot: si as u16,
                lun: e.lun,
                op,
                fua: e.flags & SQF_FUA != 0,
                bytes: if data { slot.bytes as usize } else { 0 },
            });
        }
        None
    }

    /// The backing finished the I/O of `slot`; returns false if the slot
    /// was not with the backing (the call is ignored). The command
    /// completes (a READ after its data is written); one whose queue
    /// stopped meanwhile is dropped and its slot freed.
    pub fn backend_done(
        &mut self,
        slot: u16,
        result: Result<(), IoError>,
        mem: &mut Storage<'_>,
    ) -> bool {
        let n = mem.slot_count();
        let live = match mem
            .slots
            .get(usize::from(slot))
            .filter(|_| usize::from(slot) < n)
        {
            Some(s) => self.live(s),
            None => return false,
        };
        let Some(s) = mem.slots.get_mut(usize::from(slot)) else {
            return false;
        };
        match s.state {
            State::Handed if live => {
                s.state = match result {
                    Ok(()) if s.cmd.opcode == Opcode::Read => State::Send,
                    Ok(()) => State::Done(STATUS_OK),
                    Err(IoError::Io) => State::Done(STATUS_IO_ERROR),
                    Err(IoError::NotSupported) => State::Done(STATUS_NOT_SUPPORTED),
                };
                true
            }
            State::Handed | State::Orphan => {
                s.free();
                true
            }
            _ => false,
        }
    }

    // ------------------------------------------------------------------
    // DMA.

    /// Offers a received TLP to the DMA reads; returns whether it was
    /// consumed (if not, the caller drops it). Completions of a read whose
    /// command was dropped since are consumed and dropped.
    pub fn receive(&mut self, tlp: &Tlp<'_>, mem: &mut Storage<'_>) -> bool {
        let n = mem.slot_count();
        for (ri, reader) in mem.readers.iter_mut().take(READERS).enumerate() {
            let mine = for_reader(tlp, self.id, ri);
            if reader.quarantine {
                if mine {
                    return true;
                }
                continue;
            }
            let Some(read) = reader.read.as_mut() else {
                continue;
            };
            let si = usize::from(reader.slot);
            let slot = mem.slots.get_mut(si).filter(|s| {
                si < n && s.gen == reader.gen && matches!(s.state, State::List | State::Data)
            });
            let dst: &mut [u8] = match slot {
                Some(s) if reader.seg == LIST_SEG => s.segs.as_mut_slice(),
                Some(_) => {
                    let at = si * SLOT_DATA_LEN + reader.offset as usize;
                    mem.data.get_mut(at..at + read.len()).unwrap_or(&mut [])
                }
                None => {
                    // The command is gone: its read's completions are
                    // taken and dropped from now on.
                    if !mine {
                        continue;
                    }
                    reader.retire();
                    return true;
                }
            };
            if !read.receive(tlp, dst) {
                continue;
            }
            let ok = match read.state() {
                DmaState::InProgress => return true,
                DmaState::Done => true,
                DmaState::Failed(_) => false,
            };
            end_read(&mut self.stats, reader, ok, mem.slots);
            return true;
        }
        false
    }

    /// Whether DMA reads await completions: the caller runs its
    /// completion timer while this holds and calls [`Vhba::timeout`]
    /// when it runs out.
    pub fn awaiting_completions(&self, mem: &Storage<'_>) -> bool {
        mem.readers
            .iter()
            .take(READERS)
            .any(|r| r.quarantine || r.read.as_ref().is_some_and(|d| d.outstanding() > 0))
    }

    /// Gives up on every outstanding DMA read: their commands complete
    /// with DMA_ERROR, and quarantined readers are free again (the caller
    /// calls it once no completion can still arrive: its completion
    /// timer ran out).
    pub fn timeout(&mut self, mem: &mut Storage<'_>) {
        for reader in mem.readers.iter_mut().take(READERS) {
            if reader.read.is_some() {
                end_read(&mut self.stats, reader, false, mem.slots);
            }
            reader.quarantine = false;
        }
    }

    /// When [`Vhba::poll`] must be called next for a moderation timer;
    /// `None` if no timer runs.
    pub fn poll_at(&self) -> Option<Instant> {
        self.queues
            .iter()
            .filter(|q| q.enabled)
            .filter_map(|q| q.moderation.poll_at())
            .min()
    }

    /// Moves the function forward: writes the next TLP to send into
    /// `buf` ([`TLP_BUF_LEN`] bytes) and returns its length; `None` when
    /// nothing is due. It takes submitted commands into slots, then in
    /// order of priority: READ data and the completions behind it, MRd
    /// requests for segment lists and WRITE data, the status block, then
    /// MSI-X messages, so that an interrupt always follows what it
    /// announces. `now` drives interrupt moderation. After it returns
    /// `None`, [`Vhba::next_backend`] may have work.
    pub fn poll(
        &mut self,
        now: Instant,
        cs: &ConfigSpace,
        mem: &mut Storage<'_>,
        buf: &mut [u8],
    ) -> Option<usize> {
        self.reap(mem);
        if !cs.bus_master_enabled() {
            return None;
        }
        self.take_commands(mem);
        let cfg = DmaConfig::from_config_space(self.id, cs);
        for qi in 0..MAX_QUEUES {
            if let Some(n) = self.cq_step(qi, &cfg, mem, buf) {
                return Some(n);
            }
        }
        if let Some(n) = self.read_step(&cfg, mem, buf) {
            return Some(n);
        }
        for qi in 0..MAX_QUEUES {
            self.moderate(qi, now);
        }
        if let Some(n) = self.status_step(&cfg, buf) {
            return Some(n);
        }
        // MSI-X last, so that an interrupt follows what it announces.
        self.msix.deliver_due(&mut self.irq_due, cs, self.id, buf)
    }

    /// Queue `qi`: READ data, then completions.
    fn cq_step(
        &mut self,
        qi: usize,
        cfg: &DmaConfig,
        mem: &mut Storage<'_>,
        buf: &mut [u8],
    ) -> Option<usize> {
        let n_slots = mem.slot_count();
        let queue = self.queues.get_mut(qi)?;
        if !queue.enabled {
            return None;
        }
        if let Some(w) = queue.cq_write.as_mut() {
            if let Some(Ok(n)) = w.next_tlp(&queue.batch, buf) {
                return Some(n);
            }
            queue.cq_write = None;
            queue.batch_n = 0;
        }
        let epoch = queue.epoch;
        let mine = |s: &Slot| s.queue == qi as u8 && s.epoch == epoch;
        // Each round emits a TLP, ends a write, or moves a slot on; a
        // slot moves at most three times (Send, Sending, Done).
        for _ in 0..(3 * n_slots + 2) {
            if let Some(w) = queue.writing.as_mut() {
                let si = usize::from(w.slot);
                let slot = mem.slots.get(si);
                let seg = slot.map(|s| s.seg(w.seg)).unwrap_or_default();
                let from = si * SLOT_DATA_LEN + slot.map_or(0, |s| s.seg_offset(w.seg));
                let data = mem.data.get(from..from + seg.len as usize).unwrap_or(&[]);
                match w.write.next_tlp(data, buf) {
                    Some(Ok(n)) => return Some(n),
                    Some(Err(_)) => continue,
                    None => {}
                }
                let next = w.seg + 1;
                let nsegs = slot.map_or(0, |s| s.nsegs);
                if next < nsegs {
                    let seg = slot.map(|s| s.seg(next)).unwrap_or_default();
                    match DmaWrite::new(cfg, seg.addr, seg.len as usize) {
                        Ok(write) => {
                            w.seg = next;
                            w.write = write;
                            continue;
                        }
                        Err(_) => {
                            if let Some(s) = mem.slots.get_mut(si) {
                                s.state = State::Done(STATUS_DMA_ERROR);
                            }
                        }
                    }
                } else if let Some(s) = mem.slots.get_mut(si) {
                    s.state = State::Done(STATUS_OK);
                }
                queue.writing = None;
            }
            // The batch must stay contiguous in the ring and fit one write.
            let ring = queue.cq_size.max(1);
            let first = queue.cq_tail.wrapping_sub(queue.batch_n as u32);
            let batch_full = queue.batch_n >= CQ_BATCH
                || (queue.batch_n > 0 && queue.cq_tail % ring == 0 && first % ring != 0);
            if batch_full {
                // Out with it before more data: completions wait for no
                // one else's READ data once a write's worth is ready.
                break;
            }
            let done = mem
                .slots
                .iter()
                .take(n_slots)
                .position(|s| mine(s) && matches!(s.state, State::Done(_)));
            if let Some(si) = done {
                let Some(s) = mem.slots.get_mut(si) else {
                    break;
                };
                let State::Done(status) = s.state else {
                    break;
                };
                let index = queue.cq_tail;
                let c = Completion {
                    cid: s.cmd.cid,
                    status,
                    flags: Completion::phase_of(index, ring),
                    sq_head: queue.taken,
                    queue: qi as u8,
                };
                let at = queue.batch_n * CQE_LEN;
                if let Some(d) = queue.batch.get_mut(at..at + CQE_LEN) {
                    d.copy_from_slice(&c.encode());
                }
                queue.batch_n += 1;
                queue.cq_tail = index.wrapping_add(1);
                count(&mut self.stats, s, status);
                s.free();
                continue;
            }
            if queue.writing.is_some() {
                continue;
            }
            let send = mem
                .slots
                .iter()
                .take(n_slots)
                .position(|s| mine(s) && s.state == State::Send);
            let Some(s) = send.and_then(|si| mem.slots.get_mut(si)) else {
                break;
            };
            let seg = s.seg(0);
            match DmaWrite::new(cfg, seg.addr, seg.len as usize) {
                Ok(write) => {
                    s.state = State::Sending;
                    queue.writing = Some(Writing {
                        slot: send.unwrap_or(0) as u16,
                        seg: 0,
                        write,
                    });
                }
                Err(_) => s.state = State::Done(STATUS_DMA_ERROR),
            }
        }
        if queue.batch_n == 0 || queue.cq_write.is_some() {
            return None;
        }
        let n = queue.batch_n;
        let ring = queue.cq_size.max(1);
        let first = queue.cq_tail.wrapping_sub(n as u32);
        let addr = queue.cq_addr + u64::from(first % ring) * CQE_LEN as u64;
        queue.moderation.add(n as u32);
        match DmaWrite::new(cfg, addr, n * CQE_LEN) {
            Ok(mut w) => {
                let r = w.next_tlp(&queue.batch, buf);
                queue.cq_write = Some(w);
                match r {
                    Some(Ok(n)) => Some(n),
                    _ => None,
                }
            }
            Err(_) => {
                queue.batch_n = 0;
                None
            }
        }
    }

    /// Segment lists and WRITE data: start reads, send their requests.
    fn read_step(
        &mut self,
        cfg: &DmaConfig,
        mem: &mut Storage<'_>,
        buf: &mut [u8],
    ) -> Option<usize> {
        self.start_reads(cfg, mem);
        let n = mem.slot_count();
        for reader in mem.readers.iter_mut().take(READERS) {
            let si = usize::from(reader.slot);
            let live = mem.slots.get(si).is_some_and(|s| {
                si < n && s.gen == reader.gen && matches!(s.state, State::List | State::Data)
            });
            let Some(read) = reader.read.as_mut() else {
                continue;
            };
            if live {
                if let Some(n) = read.next_request(buf) {
                    return Some(n);
                }
            }
            if !live {
                reader.retire();
            } else if matches!(read.state(), DmaState::Failed(_)) {
                end_read(&mut self.stats, reader, false, mem.slots);
            }
        }
        None
    }

    /// Gives free readers to slots whose list or data is to be read.
    fn start_reads(&mut self, cfg: &DmaConfig, mem: &mut Storage<'_>) {
        let n = mem.slot_count();
        for si in 0..n {
            loop {
                let Some(slot) = mem.slots.get_mut(si) else {
                    return;
                };
                let job = match slot.state {
                    State::List if slot.reads == 0 => {
                        let l = slot.cmd.segs[0];
                        Some((LIST_SEG, l.addr, l.len as usize, 0))
                    }
                    State::Data if !slot.failed && slot.next_seg < slot.nsegs => {
                        let s = slot.seg(slot.next_seg);
                        let off = slot.seg_offset(slot.next_seg);
                        Some((slot.next_seg, s.addr, s.len as usize, off))
                    }
                    _ => None,
                };
                let Some((seg, addr, len, offset)) = job else {
                    break;
                };
                if mem.readers.is_empty() {
                    slot.failed = true;
                    slot.state = State::Done(STATUS_DMA_ERROR);
                    break;
                }
                let free = mem
                    .readers
                    .iter_mut()
                    .take(READERS)
                    .enumerate()
                    .find(|(_, r)| r.read.is_none() && !r.quarantine);
                let Some((ri, reader)) = free else {
                    return;
                };
                let mut c = *cfg;
                c.first_tag = (ri * dma::TAGS) as u16;
                let fits = if seg == LIST_SEG {
                    len <= MAX_SEGMENTS as usize * SEG_LEN
                } else {
                    offset + len <= SLOT_DATA_LEN
                };
                match DmaRead::new(&c, addr, len) {
                    Ok(read) if fits => {
                        *reader = Reader {
                            read: Some(read),
                            slot: si as u16,
                            gen: slot.gen,
                            seg,
                            offset: offset as u32,
                            quarantine: false,
                        };
                        slot.reads += 1;
                        if seg != LIST_SEG {
                            slot.next_seg += 1;
                        }
                    }
                    _ => {
                        slot.failed = true;
                        if slot.reads == 0 {
                            slot.state = State::Done(STATUS_DMA_ERROR);
                        }
                        break;
                    }
                }
            }
        }
    }

    /// Interrupt moderation of queue `qi`: when the count or the time is
    /// reached, the interrupt fires (or waits for IRQ_ARM).
    fn moderate(&mut self, qi: usize, now: Instant) {
        let Some(queue) = self.queues.get_mut(qi).filter(|q| q.enabled) else {
            return;
        };
        if queue.cq_write.is_some() || !queue.moderation.due(now) {
            return;
        }
        if queue.moderation.signal() {
            self.irq_due |= 1 << (queue.vector & 7);
        }
    }

    /// The status block's write, then MISC_VECTOR ([`StatusReport::step`]).
    fn status_step(&mut self, cfg: &DmaConfig, buf: &mut [u8]) -> Option<usize> {
        let status = self.status_reg();
        let stats = &self.stats;
        let encode = |r: &StatusReport<STATUS_BLOCK_LEN>| {
            StatusBlock {
                generation: r.generation(),
                causes: r.causes,
                status,
                prog_errors: r.prog_errors,
                last_error: r.last_error,
                stats: *stats,
            }
            .encode()
        };
        self.status.step(cfg, buf, &mut self.irq_due, encode)
    }
}

/// BAR0 a double word at a time, for [`serve_bar0`] and [`read_bar0`]:
/// the registers and SQ windows here, the MSI-X table and PBA in
/// [`MsixTable`].
impl<'a> Bar0<Storage<'a>> for Vhba {
    const LEN: u32 = BAR0_LEN;

    fn read_dw(&self, offset: u32, mem: &Storage<'a>) -> [u8; 4] {
        if offset < SQ_WINDOWS {
            self.reg(offset, mem).to_le_bytes()
        } else {
            self.msix.read_dw(offset).unwrap_or([0; 4])
        }
    }

    fn write_dw(&mut self, offset: u32, be: u8, data: [u8; 4], mem: &mut Storage<'a>) {
        let queues = MAX_QUEUES as u32;
        if offset < SQ_WINDOWS {
            self.write_reg(offset, u32::from_le_bytes(data), be_mask(be), mem);
        } else if let Some((q, at)) = window_at(offset, SQ_WINDOWS, SQ_WINDOW_LEN, queues) {
            if q >= self.cfg.queues {
                return self.refuse(offset, ERR_QUEUE);
            }
            self.sq_window_dw(q as usize, at, be, data, mem);
        } else {
            self.msix.write_dw(offset, be, data);
        }
    }
}

/// Counts a command completed with `status`.
fn count(stats: &mut [u64; STATS_COUNT], s: &Slot, status: u8) {
    let mut add = |i: usize, by: u64| {
        if let Some(v) = stats.get_mut(i) {
            *v = v.wrapping_add(by);
        }
    };
    if status != STATUS_OK {
        add(STAT_ERRORS, 1);
        return;
    }
    let bytes = u64::from(s.bytes);
    match s.cmd.opcode {
        Opcode::Read => {
            add(STAT_READS, 1);
            add(STAT_READ_BYTES, bytes);
        }
        Opcode::Write => {
            add(STAT_WRITES, 1);
            add(STAT_WRITE_BYTES, bytes);
            if s.cmd.flags & SQF_FUA != 0 {
                add(STAT_FLUSHES, 1);
            }
        }
        Opcode::Flush => add(STAT_FLUSHES, 1),
        Opcode::Discard | Opcode::WriteZeroes => add(STAT_DISCARDS, 1),
        Opcode::Unknown(_) => {}
    }
}

/// Ends `reader`'s read, successful or not, and moves its slot on if the
/// slot still belongs to it.
fn end_read(stats: &mut [u64; STATS_COUNT], reader: &mut Reader, ok: bool, slots: &mut [Slot]) {
    reader.retire();
    let Some(slot) = slots
        .get_mut(usize::from(reader.slot))
        .filter(|s| s.gen == reader.gen && matches!(s.state, State::List | State::Data))
    else {
        return;
    };
    if !ok {
        if let Some(v) = stats.get_mut(STAT_DMA_ERRORS) {
            *v = v.wrapping_add(1);
        }
    }
    slot.reads = slot.reads.saturating_sub(1);
    if reader.seg == LIST_SEG {
        slot.state = if !ok {
            State::Done(STATUS_DMA_ERROR)
        } else if !slot.segments_fit() {
            State::Done(STATUS_INVALID_FIELD)
        } else if slot.cmd.opcode == Opcode::Write {
            State::Data
        } else {
            State::Backend
        };
        return;
    }
    if !ok {
        slot.failed = true;
    }
    if slot.reads == 0 && (slot.failed || slot.next_seg >= slot.nsegs) {
        slot.state = if slot.failed {
            State::Done(STATUS_DMA_ERROR)
        } else {
            State::Backend
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_enough_for_a_kernel_stack() {
        assert!(
            core::mem::size_of::<Vhba>() <= 3072,
            "{}",
            core::mem::size_of::<Vhba>()
        );
        assert!(core::mem::size_of::<Slot>() <= 1200);
    }

    #[test]
    fn sq_max_is_a_power_of_two() {
        let mut a = [0u8; 64 * 100];
        let mut b = [0u8; 64];
        let mut c = [0u8; 64 * 1000];
        let mut d = [0u8; 0];
        let mut slots = [];
        let mut data = [];
        let mut readers = [];
        let mem = Storage {
            sq: [&mut a, &mut b, &mut c, &mut d],
            slots: &mut slots,
            data: &mut data,
            readers: &mut readers,
        };
        assert_eq!(mem.sq_max(0), 64);
        assert_eq!(mem.sq_max(1), 0);
        assert_eq!(mem.sq_max(2), RING_MAX);
        assert_eq!(mem.sq_max(3), 0);
        assert_eq!(mem.slot_count(), 0);
    }
}
