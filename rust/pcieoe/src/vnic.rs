// SPDX-License-Identifier: GPL-2.0

//! The behaviour of the virtual NIC function ([`FunctionKind::Vnic`]) on
//! the device interface: its BAR0 registers and descriptor windows, its
//! DMA, completions and interrupts toward the host, and its two ends
//! toward the uplink ([`Vnic::tx_frame`], [`Vnic::rx_frame`]).
//!
//! The register layout and every format are defined once, in
//! `vnic/layout.rs` ([`vnic_layout`](super::vnic_layout)), which the host
//! driver includes too; read its module documentation first.
//! `Documentation/vnic.rst` explains the design.
//!
//! # Calling it
//!
//! Like [`TestFunction`](super::testfn::TestFunction): the DI hands
//! downstream memory requests to [`Vnic::serve_mmio`], completions to
//! [`Vnic::receive`], and calls [`Vnic::poll`] until it returns `None`
//! after each of those, after [`Vnic::rx_frame`] and [`Vnic::tx_frame`],
//! after configuration writes, and when [`Vnic::poll_at`] comes (the
//! moderation timers). The uplink side calls [`Vnic::tx_frame`] until it
//! returns `None` and sends each frame; [`Vnic::rx_frame`] offers each
//! frame from the uplink (or from another vNIC on the same uplink).
//!
//! # Storage
//!
//! Nothing here allocates, and [`Vnic`] itself stays small (under 3 KiB,
//! so the kernel may build it by value): the memory that grows with the
//! rings belongs to the caller ([`Storage`]) and is passed to each call,
//! the same buffers throughout:
//!
//! * per queue pair, the TX FIFO (a power of two from [`TX_FIFO_MIN`] to
//!   [`TX_FIFO_MAX`] bytes), which is also the TX record ring: each
//!   record's descriptor, with the device's state for it, followed by its
//!   inline or DMA-read data;
//! * per queue pair, the RX buffer (at least [`RX_STAGE_MIN`] bytes): the
//!   ring of posted RX descriptors, then the frames from the uplink that
//!   wait for their DMA write;
//! * the DMA [`Reader`]s, one [`DmaRead`] each.
//!
//! A queue pair whose buffers are missing or of the wrong size reports
//! TX_FIFO_UNITS 0 and refuses to be enabled.
//!
//! # Robustness
//!
//! Every address, length, index and size the host programs is checked; a
//! refused value is counted in PROG_ERRORS, named in LAST_ERROR and
//! reported in the status block, and never panics. A TX or RX window
//! stream that goes out of step stops that stream until the queue pair is
//! disabled and enabled again.
//!
//! [`FunctionKind::Vnic`]: super::function::FunctionKind::Vnic

use super::cfgspace::ConfigSpace;
use super::clock::Instant;
use super::dma::{self, DmaConfig, DmaRead, DmaState, DmaWrite, MSIX_ENTRY_LEN};
use super::model::{
    be_mask, good_address, read_bar0, serve_bar0, window_at, Bar0, Moderation, MsixTable,
    StatusReport,
};
use super::testfn::{Mmio, MmioError};
use super::tlp::{self, Bdf, Tlp};
use super::vnic_layout::*;

/// The buffer length [`Vnic::poll`] and [`Vnic::serve_mmio`] need: the
/// longest TLP.
pub const TLP_BUF_LEN: usize = tlp::MAX_TLP_LEN;
/// Smallest TX FIFO per queue pair: room for one largest record and a
/// pad.
pub const TX_FIFO_MIN: usize = 16 << 10;
/// Largest TX FIFO per queue pair.
pub const TX_FIFO_MAX: usize = 1 << 20;
/// Bytes at the start of each RX buffer of [`Storage`] that hold the
/// posted RX descriptors ([`RING_MAX`] of 16 bytes).
pub const RX_RING_BYTES: usize = RING_MAX as usize * DESC_LEN;
/// Bytes a staged frame of the largest size takes: a 16-byte header and
/// the frame rounded up to 16 bytes.
const STAGE_MAX_ENTRY: usize = UNIT + units_for(FRAME_MAX) as usize * UNIT;
/// Smallest RX buffer per queue pair: the descriptor ring and room to
/// stage one largest frame.
pub const RX_STAGE_MIN: usize = RX_RING_BYTES + STAGE_MAX_ENTRY;
/// Most DMA readers of TX data in flight at once ([`Storage::readers`]),
/// 32 tags each: 8-bit tags allow eight.
pub const READERS: usize = 8;
/// RX completions written by one memory write at most (256 bytes, the
/// smallest Max_Payload_Size a host programs, need not be split).
pub const CQ_BATCH: usize = 16;

const RING: usize = RING_MAX as usize;

/// What a vNIC is, as the DI's configuration sets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Config {
    /// The MAC address (unicast).
    pub mac: [u8; 6],
    /// Largest MTU the host may set, [`MTU_MIN`] to [`MTU_LIMIT`].
    pub mtu_max: u32,
    /// Queue pairs, 1 to [`MAX_QUEUES`].
    pub queues: u32,
}

impl Config {
    /// Checks the values.
    pub fn is_valid(&self) -> bool {
        (MTU_MIN..=MTU_LIMIT).contains(&self.mtu_max)
            && (1..=MAX_QUEUES as u32).contains(&self.queues)
            && !is_multicast(&self.mac)
            && self.mac != [0; 6]
    }
}

/// The caller's memory: per queue pair, the TX FIFO and the RX buffer,
/// and the DMA readers.
#[derive(Debug)]
pub struct Storage<'a> {
    /// TX FIFOs: a power of two from [`TX_FIFO_MIN`] to [`TX_FIFO_MAX`]
    /// bytes. The device keeps the TX records here: descriptors as the
    /// host wrote them (the cookie replaced by the device's state),
    /// inline data, and the data it reads.
    pub tx: [&'a mut [u8]; MAX_QUEUES],
    /// RX buffers, at least [`RX_STAGE_MIN`] bytes: the posted RX
    /// descriptors ([`RX_RING_BYTES`]), then the frames from the uplink
    /// waiting for their DMA write, each behind a 16-byte header.
    pub rx: [&'a mut [u8]; MAX_QUEUES],
    /// The DMA readers of TX data, up to [`READERS`] (more are not
    /// used); reader `i` uses tags `32 * i` to `32 * i + 31`. Without
    /// any, every DMA segment fails.
    pub readers: &'a mut [Reader],
}

/// A DMA reader of TX data: one [`DmaRead`] and what it is for. The
/// caller allocates them ([`Storage::readers`]); the vNIC uses them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reader {
    read: Option<DmaRead>,
    queue: u8,
    /// Free-running FIFO position of the record's descriptor.
    start: u32,
    /// The queue pair's epoch when the read started.
    epoch: u32,
}

impl Reader {
    /// An idle reader.
    pub const fn new() -> Reader {
        Reader {
            read: None,
            queue: 0,
            start: 0,
            epoch: 0,
        }
    }
}

/// What became of a frame offered to [`Vnic::rx_frame`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RxVerdict {
    /// Staged for queue pair `0`.
    Queued(u8),
    /// Not for this vNIC (or shorter than an Ethernet header).
    Filtered,
    /// Dropped: device or every queue pair disabled, or staging full.
    NoRoom,
    /// Dropped: longer than the MTU allows.
    Oversize,
}

/// A frame [`Vnic::tx_frame`] handed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TxFrame {
    /// Bytes written at the start of the caller's buffer.
    pub len: usize,
    /// The queue pair it came from.
    pub queue: u8,
}

/// Where a TX record's data stands: kept in byte 12 of the device's copy
/// of the record's descriptor (the cookie, which the device does not
/// need), so that the FIFO is the record ring and [`Vnic`] stays small.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seg {
    /// Data complete (or none).
    Ready,
    /// Inline data still being written by the host.
    Filling,
    /// To be read by DMA.
    NeedRead,
    /// Being read.
    Reading,
    /// The read failed: the frame is dropped.
    Failed,
}

impl Seg {
    fn code(self) -> u8 {
        match self {
            Seg::Ready => 0,
            Seg::Filling => 1,
            Seg::NeedRead => 2,
            Seg::Reading => 3,
            Seg::Failed => 4,
        }
    }

    fn from_code(code: u8) -> Seg {
        match code {
            0 => Seg::Ready,
            1 => Seg::Filling,
            2 => Seg::NeedRead,
            3 => Seg::Reading,
            _ => Seg::Failed,
        }
    }
}

/// Byte of a descriptor copy that holds its [`Seg`].
const SEG_BYTE: usize = 12;

/// The descriptor at byte `at` of `fifo`.
fn desc_at(fifo: &[u8], at: usize) -> TxDesc {
    let mut unit = [0u8; DESC_LEN];
    if let Some(s) = fifo.get(at..at + DESC_LEN) {
        unit.copy_from_slice(s);
    }
    TxDesc::decode(&unit)
}

fn seg_at(fifo: &[u8], at: usize) -> Seg {
    Seg::from_code(fifo.get(at + SEG_BYTE).copied().unwrap_or(0xff))
}

fn set_seg(fifo: &mut [u8], at: usize, seg: Seg) {
    if let Some(b) = fifo.get_mut(at + SEG_BYTE) {
        *b = seg.code();
    }
}

/// The units of the record whose descriptor is `desc` at free-running
/// position `start`: a pad runs to the FIFO's end.
fn record_units(desc: &TxDesc, start: u32, fifo_units: u32) -> u32 {
    let units = if desc.flags & TXD_PAD != 0 {
        fifo_units - start % fifo_units.max(1)
    } else {
        desc.record_units()
    };
    // At least one, so that every walk over records moves.
    units.max(1)
}

/// A frame's header in RX staging: length, hash, flags; a length of
/// [`STAGE_WRAP`] says the next header is at the start.
const STAGE_WRAP: u32 = u32::MAX;

/// One queue pair.
#[derive(Clone, Debug)]
struct Queue {
    /// Bumped whenever the queue pair stops: DMA reads of an older epoch
    /// are abandoned.
    epoch: u32,
    enabled: bool,
    tx_error: bool,
    rx_error: bool,
    last_error: u32,
    tx_done_addr: u64,
    cq_addr: u64,
    ring_size: u32,
    vector: u32,
    /// Interrupt moderation: ITR_USECS, the count, IRQ_ARM.
    moderation: Moderation,
    // TX.
    fifo_units: u32,
    /// Next unit position the host writes.
    pos: u32,
    /// Double words of the unit at `pos` written.
    dw: u32,
    /// Inline data units still due for the last record.
    inline_left: u32,
    /// First unit still in use: the oldest record's descriptor.
    tail: u32,
    /// The end of the last record (past its reserved or inline units).
    rec_end: u32,
    /// The last record's descriptor.
    last_start: u32,
    /// Records between `tail` and `rec_end`.
    records: u32,
    /// The first record not yet looked at for a DMA read.
    read_pos: u32,
    done: TxDone,
    done_written: TxDone,
    done_write: Option<DmaWrite>,
    done_bytes: [u8; DESC_LEN],
    // RX.
    post_dw: u32,
    posted: u32,
    used: u32,
    /// Frames staged.
    st_count: u32,
    /// Staging offsets of the oldest frame's header and of the next.
    st_rd: usize,
    st_wr: usize,
    /// Staging bytes in use, wrap waste included.
    st_used: usize,
    writing: Option<(DmaWrite, Staged)>,
    /// Completions not yet written, or being written by `cq_write`.
    batch: [u8; CQ_BATCH * DESC_LEN],
    batch_n: usize,
    cq_write: Option<DmaWrite>,
}

/// A frame in RX staging: its data at `start` (past its header).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Staged {
    start: usize,
    len: usize,
    hash: u32,
    flags: u8,
}

impl Queue {
    fn new(index: u32) -> Queue {
        Queue {
            epoch: 0,
            enabled: false,
            tx_error: false,
            rx_error: false,
            last_error: ERR_NONE,
            tx_done_addr: 0,
            cq_addr: 0,
            ring_size: 0,
            vector: index,
            moderation: Moderation::default(),
            fifo_units: 0,
            pos: 0,
            dw: 0,
            inline_left: 0,
            tail: 0,
            rec_end: 0,
            last_start: 0,
            records: 0,
            read_pos: 0,
            done: TxDone::default(),
            done_written: TxDone::default(),
            done_write: None,
            done_bytes: [0; DESC_LEN],
            post_dw: 0,
            posted: 0,
            used: 0,
            st_count: 0,
            st_rd: 0,
            st_wr: 0,
            st_used: 0,
            writing: None,
            batch: [0; CQ_BATCH * DESC_LEN],
            batch_n: 0,
            cq_write: None,
        }
    }

    /// Back to disabled, keeping the programming.
    fn stop(&mut self) {
        let mut fresh = Queue::new(0);
        fresh.tx_done_addr = self.tx_done_addr;
        fresh.cq_addr = self.cq_addr;
        fresh.ring_size = self.ring_size;
        fresh.vector = self.vector;
        fresh.moderation.usecs = self.moderation.usecs;
        fresh.moderation.count = self.moderation.count;
        fresh.fifo_units = self.fifo_units;
        fresh.last_error = self.last_error;
        fresh.epoch = self.epoch.wrapping_add(1);
        *self = fresh;
    }

    /// Byte offset in the FIFO of free-running unit `pos`.
    fn fifo_offset(&self, pos: u32) -> usize {
        (pos % self.fifo_units.max(1)) as usize * UNIT
    }

    fn status(&self) -> u32 {
        let mut s = self.last_error << 8;
        if self.enabled {
            s |= QSTATUS_ENABLED;
        }
        if self.tx_error {
            s |= QSTATUS_TX_ERROR;
        }
        if self.rx_error {
            s |= QSTATUS_RX_ERROR;
        }
        s
    }
}

/// The TX FIFO units a buffer of `len` bytes gives, 0 if unusable.
fn fifo_units(len: usize) -> u32 {
    if len.is_power_of_two() && (TX_FIFO_MIN..=TX_FIFO_MAX).contains(&len) {
        (len / UNIT) as u32
    } else {
        0
    }
}

/// A flow hash for receive queue selection: FNV-1a over the IPv4 or IPv6
/// addresses and, for TCP and UDP, the ports; over the MAC addresses for
/// anything else. Frames of one flow always hash alike, so they stay in
/// order on one queue pair.
fn flow_hash(frame: &[u8]) -> u32 {
    let fnv = |h: u32, bytes: &[u8]| {
        bytes
            .iter()
            .fold(h, |h, &b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
    };
    let seed = 0x811c_9dc5;
    let ethertype = frame
        .get(12..14)
        .and_then(|b| <[u8; 2]>::try_from(b).ok())
        .map_or(0, u16::from_be_bytes);
    let ip = frame.get(14..).unwrap_or(&[]);
    let (addrs, proto, l4) = match ethertype {
        0x0800 => {
            let ihl = usize::from(ip.first().copied().unwrap_or(0) & 0xf) * 4;
            (ip.get(12..20), ip.get(9).copied(), ip.get(ihl..ihl + 4))
        }
        0x86dd => (ip.get(8..40), ip.get(6).copied(), ip.get(40..44)),
        _ => (None, None, None),
    };
    match addrs {
        Some(a) => {
            let h = fnv(seed, a);
            match (proto, l4) {
                (Some(6 | 17), Some(p)) => fnv(h, p),
                _ => h,
            }
        }
        None => fnv(seed, frame.get(..12).unwrap_or(&[])),
    }
}

/// The vNIC function.
#[derive(Clone, Debug)]
pub struct Vnic {
    id: Bdf,
    cfg: Config,
    link_up: bool,
    control: u32,
    mtu: u32,
    driver_features: u32,
    /// PROG_ERRORS, LAST_ERROR, the status block and MISC_VECTOR.
    status: StatusReport<STATUS_BLOCK_LEN>,
    mc_hash: [u32; 8],
    stats: [u64; STATS_COUNT],
    queues: [Queue; MAX_QUEUES],
    next_tx_queue: usize,
    msix: MsixTable<{ MSIX_VECTORS * MSIX_ENTRY_LEN }>,
    /// Vectors to raise (bit per vector).
    irq_due: u8,
}

/// The features offered.
pub const FEATURES: u32 = F_MULTI_QUEUE
    | F_TX_INLINE
    | F_TX_SG
    | F_RX_HASH
    | F_MC_FILTER
    | F_IRQ_MODERATION
    | F_STATUS_BLOCK
    | F_JUMBO;

impl Vnic {
    /// A vNIC in its reset state, link down. `id` is its routing ID as the
    /// host sees it. A `cfg` out of range is clamped (MTU into range, 1 to
    /// [`MAX_QUEUES`] queue pairs); the DI's configfs refuses such values
    /// before.
    pub fn new(id: Bdf, cfg: &Config) -> Vnic {
        let mut cfg = *cfg;
        cfg.mtu_max = cfg.mtu_max.clamp(MTU_MIN, MTU_LIMIT);
        cfg.queues = cfg.queues.clamp(1, MAX_QUEUES as u32);
        Vnic {
            id,
            cfg,
            link_up: false,
            control: 0,
            mtu: cfg.mtu_max.min(1500),
            driver_features: 0,
            status: StatusReport::new(),
            mc_hash: [0; 8],
            stats: [0; STATS_COUNT],
            queues: [Queue::new(0), Queue::new(1), Queue::new(2), Queue::new(3)],
            next_tx_queue: 0,
            msix: MsixTable::new(MSIX_TABLE, MSIX_PBA),
            irq_due: 0,
        }
    }

    /// Back to the reset state (a Function Level Reset, CONTROL.RESET, or
    /// the function given to another host); the link state stays.
    pub fn reset(&mut self) {
        let link = self.link_up;
        let epochs = self.queues.each_ref().map(|q| q.epoch);
        *self = Vnic::new(self.id, &self.cfg);
        self.link_up = link;
        // DMA reads still in flight belong to the old state.
        for (q, e) in self.queues.iter_mut().zip(epochs) {
            q.epoch = e.wrapping_add(1);
        }
    }

    /// The configuration given to [`Vnic::new`].
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The counters, by `STAT_*` index.
    pub fn stats(&self) -> &[u64; STATS_COUNT] {
        &self.stats
    }

    /// Programming errors refused so far.
    pub fn prog_errors(&self) -> u32 {
        self.status.prog_errors
    }

    /// The MSI-X table bytes.
    pub fn msix_table(&self) -> &[u8] {
        self.msix.table()
    }

    /// Sets the uplink's state; a change is reported to the host (status
    /// block, MISC_VECTOR).
    pub fn set_link(&mut self, up: bool) {
        if up != self.link_up {
            self.link_up = up;
            self.status.report(CAUSE_LINK);
        }
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

    fn stat(&mut self, index: usize, by: u64) {
        if let Some(s) = self.stats.get_mut(index) {
            *s = s.wrapping_add(by);
        }
    }

    fn status_reg(&self) -> u32 {
        let mut s = 0;
        if self.link_up {
            s |= STATUS_LINK_UP;
        }
        if self.enabled() {
            s |= STATUS_ENABLED;
        }
        s
    }

    // ------------------------------------------------------------------
    // Registers.

    fn reg(&self, offset: u32, mem: &Storage<'_>) -> u32 {
        let mac = &self.cfg.mac;
        match offset {
            REG_MAGIC => MAGIC_VALUE,
            REG_VERSION => VERSION_VALUE,
            REG_FEATURES => FEATURES,
            REG_DRIVER_FEATURES => self.driver_features,
            REG_MAC_LO => u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]),
            REG_MAC_HI => u32::from_le_bytes([mac[4], mac[5], 0, 0]),
            REG_MTU_MAX => self.cfg.mtu_max,
            REG_QUEUES => self.cfg.queues,
            REG_CONTROL => self.control,
            REG_STATUS => self.status_reg(),
            REG_MTU => self.mtu,
            REG_MISC_VECTOR => self.status.vector,
            REG_STATUS_ADDR_LO => self.status.addr as u32,
            REG_STATUS_ADDR_HI => (self.status.addr >> 32) as u32,
            REG_PROG_ERRORS => self.status.prog_errors,
            REG_LAST_ERROR => self.status.last_error,
            o if (REG_MC_HASH..REG_MC_HASH + 32).contains(&o) => self
                .mc_hash
                .get(((o - REG_MC_HASH) / 4) as usize)
                .copied()
                .unwrap_or(0),
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
            Q_TX_DONE_ADDR_LO => queue.tx_done_addr as u32,
            Q_TX_DONE_ADDR_HI => (queue.tx_done_addr >> 32) as u32,
            Q_RX_CQ_ADDR_LO => queue.cq_addr as u32,
            Q_RX_CQ_ADDR_HI => (queue.cq_addr >> 32) as u32,
            Q_RX_RING_SIZE => queue.ring_size,
            Q_TX_FIFO_UNITS => mem.tx.get(q as usize).map_or(0, |b| fifo_units(b.len())),
            Q_IRQ_VECTOR => queue.vector,
            Q_ITR_USECS => queue.moderation.usecs,
            Q_ITR_FRAMES => queue.moderation.count,
            _ => 0,
        }
    }

    fn write_reg(&mut self, offset: u32, value: u32, mask: u32, mem: &Storage<'_>) {
        let merged = (self.reg(offset, mem) & !mask) | (value & mask);
        let low = |old: u64| (old & !0xffff_ffff) | u64::from(merged);
        let high = |old: u64| (old & 0xffff_ffff) | (u64::from(merged) << 32);
        match offset {
            REG_DRIVER_FEATURES => self.driver_features = merged & FEATURES,
            REG_CONTROL => self.write_control(merged),
            REG_MTU => {
                if (MTU_MIN..=self.cfg.mtu_max).contains(&merged) {
                    self.mtu = merged;
                } else {
                    self.refuse(offset, ERR_VALUE);
                }
            }
            REG_MISC_VECTOR => {
                if merged < MSIX_VECTORS as u32 {
                    self.status.vector = merged;
                } else {
                    self.refuse(offset, ERR_VALUE);
                }
            }
            REG_STATUS_ADDR_LO | REG_STATUS_ADDR_HI => {
                let addr = if offset == REG_STATUS_ADDR_LO {
                    low(self.status.addr)
                } else {
                    high(self.status.addr)
                };
                // Checked when used: the halves are written one at a time.
                self.status.addr = addr;
            }
            REG_STATUS_REQUEST => self.status.request(CAUSE_REQUEST, value & 1 != 0),
            o if (REG_MC_HASH..REG_MC_HASH + 32).contains(&o) => {
                if let Some(r) = self.mc_hash.get_mut(((o - REG_MC_HASH) / 4) as usize) {
                    *r = merged;
                }
            }
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
        self.control = value & (CTRL_ENABLE | CTRL_PROMISC | CTRL_ALLMULTI);
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
        let low = |old: u64| (old & !0xffff_ffff) | u64::from(value);
        let high = |old: u64| (old & 0xffff_ffff) | (u64::from(value) << 32);
        let programming = matches!(
            reg,
            Q_TX_DONE_ADDR_LO
                | Q_TX_DONE_ADDR_HI
                | Q_RX_CQ_ADDR_LO
                | Q_RX_CQ_ADDR_HI
                | Q_RX_RING_SIZE
        );
        if programming && enabled {
            return self.refuse_queue(qi, offset, ERR_BUSY);
        }
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
            Q_TX_DONE_ADDR_LO => queue.tx_done_addr = low(queue.tx_done_addr),
            Q_TX_DONE_ADDR_HI => queue.tx_done_addr = high(queue.tx_done_addr),
            Q_RX_CQ_ADDR_LO => queue.cq_addr = low(queue.cq_addr),
            Q_RX_CQ_ADDR_HI => queue.cq_addr = high(queue.cq_addr),
            Q_RX_RING_SIZE => {
                if value.is_power_of_two() && (2..=RING_MAX).contains(&value) {
                    queue.ring_size = value;
                } else {
                    self.refuse_queue(qi, offset, ERR_RING_SIZE);
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
            Q_ITR_FRAMES => {
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
        let units = mem.tx.get(qi).map_or(0, |b| fifo_units(b.len()));
        let stage = mem.rx.get(qi).map_or(0, |b| b.len());
        let Some(queue) = self.queues.get_mut(qi) else {
            return;
        };
        let ring = u64::from(queue.ring_size);
        let code = if ring == 0 {
            ERR_RING_SIZE
        } else if !good_address(queue.cq_addr, ring * DESC_LEN as u64, DESC_LEN as u64)
            || !good_address(queue.tx_done_addr, DESC_LEN as u64, DESC_LEN as u64)
        {
            ERR_ADDRESS
        } else if units == 0 || stage < RX_STAGE_MIN {
            ERR_QUEUE
        } else {
            queue.stop();
            queue.fifo_units = units;
            queue.enabled = true;
            queue.last_error = ERR_NONE;
            return;
        };
        self.refuse_queue(qi, offset, code);
    }

    // ------------------------------------------------------------------
    // Windows.

    /// A double word written into queue pair `q`'s TX window at `at`
    /// (bytes into the window).
    fn tx_window_dw(&mut self, qi: usize, at: u32, be: u8, data: [u8; 4], mem: &mut Storage<'_>) {
        let offset = tx_window(qi as u32) + at;
        let Some(queue) = self.queues.get_mut(qi) else {
            return;
        };
        if queue.tx_error {
            // Stopped: the first refusal is the one that matters.
            return;
        }
        if !queue.enabled {
            return self.refuse_queue(qi, offset, ERR_QUEUE);
        }
        let expect = (queue.pos % TX_WINDOW_UNITS) * UNIT as u32 + queue.dw * 4;
        if be != 0xf || at != expect {
            queue.tx_error = true;
            return self.refuse_queue(qi, offset, ERR_POSITION);
        }
        if queue.dw == 0 && queue.pos.wrapping_sub(queue.tail) >= queue.fifo_units {
            queue.tx_error = true;
            return self.refuse_queue(qi, offset, ERR_OVERRUN);
        }
        let at_fifo = queue.fifo_offset(queue.pos) + queue.dw as usize * 4;
        let Some(fifo) = mem.tx.get_mut(qi) else {
            return;
        };
        if let Some(d) = fifo.get_mut(at_fifo..at_fifo + 4) {
            d.copy_from_slice(&data);
        }
        queue.dw += 1;
        if queue.dw < 4 {
            return;
        }
        queue.dw = 0;
        if queue.inline_left > 0 {
            queue.inline_left -= 1;
            queue.pos = queue.pos.wrapping_add(1);
            if queue.inline_left == 0 {
                set_seg(fifo, queue.fifo_offset(queue.last_start), Seg::Ready);
            }
            return;
        }
        if let Err(code) = commit_tx(queue, fifo) {
            if let Some(queue) = self.queues.get_mut(qi) {
                queue.tx_error = true;
            }
            self.refuse_queue(qi, offset, code);
        }
    }

    /// A double word written into queue pair `q`'s RX post window.
    fn rx_window_dw(&mut self, qi: usize, at: u32, be: u8, data: [u8; 4], mem: &mut Storage<'_>) {
        let offset = rx_window(qi as u32) + at;
        let Some(queue) = self.queues.get_mut(qi) else {
            return;
        };
        if queue.rx_error {
            return;
        }
        if !queue.enabled {
            return self.refuse_queue(qi, offset, ERR_QUEUE);
        }
        let expect = (queue.posted % RX_WINDOW_SLOTS) * DESC_LEN as u32 + queue.post_dw * 4;
        if be != 0xf || at != expect {
            queue.rx_error = true;
            return self.refuse_queue(qi, offset, ERR_POSITION);
        }
        // Straight into the descriptor ring; it counts once complete.
        let Some(ring) = mem.rx.get_mut(qi) else {
            return;
        };
        let slot = (queue.posted as usize % RING) * DESC_LEN;
        let at_desc = slot + queue.post_dw as usize * 4;
        if let Some(d) = ring.get_mut(at_desc..at_desc + 4) {
            d.copy_from_slice(&data);
        }
        queue.post_dw += 1;
        if queue.post_dw < 4 {
            return;
        }
        queue.post_dw = 0;
        let desc = rx_desc_at(ring, queue.posted);
        let code = if queue.posted.wrapping_sub(queue.used) >= queue.ring_size {
            ERR_OVERRUN
        } else if desc.len < FRAME_MIN
            || desc.len > 0xffff
            || !good_address(desc.addr, u64::from(desc.len), 1)
        {
            ERR_ADDRESS
        } else {
            let index = queue.posted;
            queue.posted = index.wrapping_add(1);
            return;
        };
        queue.rx_error = true;
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
    // The uplink side.

    /// Whether a frame to `dst` is for this vNIC.
    fn accepts(&self, dst: &[u8; 6]) -> bool {
        if self.control & CTRL_PROMISC != 0 || *dst == self.cfg.mac || *dst == BROADCAST {
            return true;
        }
        if !is_multicast(dst) {
            return false;
        }
        if self.control & CTRL_ALLMULTI != 0 {
            return true;
        }
        let h = mc_hash(dst);
        let word = self.mc_hash.get(usize::from(h / 32)).copied().unwrap_or(0);
        word & (1 << (h % 32)) != 0
    }

    /// Offers a frame from the uplink (destination MAC first, no FCS):
    /// the MAC filter (own address, broadcast, multicast by the hash
    /// filter or ALLMULTI, everything in PROMISC), then a queue pair by
    /// flow hash among the enabled ones, then a copy into that queue
    /// pair's staging buffer, from which [`Vnic::poll`] writes it into the
    /// next buffer the host posted.
    pub fn rx_frame(&mut self, frame: &[u8], mem: &mut Storage<'_>) -> RxVerdict {
        let mut dst = [0u8; 6];
        match frame.get(..6) {
            Some(d) if frame.len() >= FRAME_MIN as usize => dst.copy_from_slice(d),
            _ => {
                self.stat(STAT_RX_FILTERED, 1);
                return RxVerdict::Filtered;
            }
        }
        if !self.accepts(&dst) {
            self.stat(STAT_RX_FILTERED, 1);
            return RxVerdict::Filtered;
        }
        if frame.len() > (self.mtu + FRAME_OVERHEAD) as usize {
            self.stat(STAT_RX_OVERSIZE, 1);
            return RxVerdict::Oversize;
        }
        let hash = flow_hash(frame);
        let live = |q: &&Queue| q.enabled && !q.rx_error;
        let count = self.queues.iter().filter(live).count();
        let chosen = (hash as usize).checked_rem(count).and_then(|k| {
            self.queues
                .iter()
                .enumerate()
                .filter(|(_, q)| live(q))
                .nth(k)
                .map(|(i, _)| i)
        });
        let Some(qi) = chosen.filter(|_| self.enabled()) else {
            self.stat(STAT_RX_NO_ROOM, 1);
            return RxVerdict::NoRoom;
        };
        let mut flags = RXC_HASH;
        if dst == BROADCAST {
            flags |= RXC_BROADCAST;
        } else if is_multicast(&dst) {
            flags |= RXC_MULTICAST;
        }
        let staged = match (self.queues.get_mut(qi), mem.rx.get_mut(qi)) {
            (Some(q), Some(buf)) => stage_frame(q, buf, frame, hash, flags),
            _ => false,
        };
        if staged {
            RxVerdict::Queued(qi as u8)
        } else {
            self.stat(STAT_RX_NO_ROOM, 1);
            RxVerdict::NoRoom
        }
    }

    /// Hands out the next frame the host transmitted, copied into `out`
    /// (which should hold [`FRAME_MAX`] bytes), queue pairs taken in
    /// turn; `None` when no frame is complete. Frames of one queue pair
    /// come in the order the host wrote them. A frame whose length is out
    /// of range (shorter than an Ethernet header, longer than MTU + 18 or
    /// than `out`), or one of whose DMA reads failed, is dropped and
    /// counted (STAT_TX_ERRORS, [`TxDone::errors`]); its records are done
    /// all the same.
    pub fn tx_frame(&mut self, mem: &Storage<'_>, out: &mut [u8]) -> Option<TxFrame> {
        if !self.enabled() {
            return None;
        }
        for k in 0..MAX_QUEUES {
            let qi = (self.next_tx_queue + k) % MAX_QUEUES;
            loop {
                match self.take_frame(qi, mem, out) {
                    Taken::None => break,
                    Taken::Dropped => continue,
                    Taken::Frame(len) => {
                        self.next_tx_queue = (qi + 1) % MAX_QUEUES;
                        return Some(TxFrame {
                            len,
                            queue: qi as u8,
                        });
                    }
                }
            }
        }
        None
    }

    fn take_frame(&mut self, qi: usize, mem: &Storage<'_>, out: &mut [u8]) -> Taken {
        let max = (self.mtu + FRAME_OVERHEAD) as usize;
        let Some(queue) = self.queues.get_mut(qi).filter(|q| q.enabled) else {
            return Taken::None;
        };
        let fifo = mem.tx.get(qi).map_or(&[][..], |b| &**b);
        let units = queue.fifo_units;
        // Find the end of the first frame; all its data must be there.
        // The walk visits at most the records there are (should the
        // caller's FIFO have changed under the vNIC, it just finds none).
        let mut p = queue.tail;
        let mut len = 0usize;
        let mut failed = false;
        let mut end = None;
        let mut pad_only = false;
        let mut count = 0u32;
        while p != queue.rec_end && count < queue.records {
            count += 1;
            let at = queue.fifo_offset(p);
            let desc = desc_at(fifo, at);
            match seg_at(fifo, at) {
                Seg::Ready => {}
                Seg::Failed => failed = true,
                Seg::Filling | Seg::NeedRead | Seg::Reading => return Taken::None,
            }
            let next = p.wrapping_add(record_units(&desc, p, units));
            if desc.flags & TXD_PAD == 0 {
                len = len.saturating_add(usize::from(desc.len));
                if desc.flags & TXD_EOP != 0 {
                    end = Some(next);
                    break;
                }
            } else if p == queue.tail {
                // A pad alone at the head: done at once.
                pad_only = true;
                end = Some(next);
                break;
            }
            p = next;
        }
        let Some(end) = end else {
            return Taken::None;
        };
        let good = !failed && len >= FRAME_MIN as usize && len <= max && len <= out.len();
        let mut copied = 0usize;
        let mut p = queue.tail;
        for _ in 0..count {
            let at = queue.fifo_offset(p);
            let desc = desc_at(fifo, at);
            if good && desc.flags & TXD_PAD == 0 {
                let from = at + UNIT;
                let n = usize::from(desc.len);
                let dst = out.get_mut(copied..copied + n);
                if let (Some(d), Some(s)) = (dst, fifo.get(from..from + n)) {
                    d.copy_from_slice(s);
                }
                copied += n;
            }
            p = p.wrapping_add(record_units(&desc, p, units));
            queue.records = queue.records.saturating_sub(1);
            queue.done.records = queue.done.records.wrapping_add(1);
        }
        queue.tail = end;
        queue.done.units = end;
        if queue.read_pos.wrapping_sub(end) > queue.rec_end.wrapping_sub(end) {
            queue.read_pos = end;
        }
        // Every retirement is an event, a pad's too: the host may be
        // waiting for exactly those units.
        queue.moderation.add(1);
        if pad_only {
            return Taken::Dropped;
        }
        if good {
            queue.done.frames = queue.done.frames.wrapping_add(1);
            self.stat(STAT_TX_FRAMES, 1);
            self.stat(STAT_TX_BYTES, len as u64);
            Taken::Frame(len)
        } else {
            queue.done.errors = queue.done.errors.wrapping_add(1);
            self.stat(STAT_TX_ERRORS, 1);
            Taken::Dropped
        }
    }

    // ------------------------------------------------------------------
    // DMA.

    /// Offers a received TLP to the DMA reads of TX data; returns whether
    /// it was consumed (if not, the caller drops it). Completions of a
    /// read whose queue pair was stopped since are consumed and dropped.
    pub fn receive(&mut self, tlp: &Tlp<'_>, mem: &mut Storage<'_>) -> bool {
        let queues = &self.queues;
        mem.readers
            .iter_mut()
            .take(READERS)
            .any(|reader| offer(queues, reader, tlp, &mut mem.tx))
    }

    /// Whether DMA reads await completions: the caller runs its
    /// completion timer while this holds and calls [`Vnic::timeout`]
    /// when it runs out.
    pub fn awaiting_completions(&self, mem: &Storage<'_>) -> bool {
        mem.readers
            .iter()
            .take(READERS)
            .any(|r| r.read.as_ref().is_some_and(|d| d.outstanding() > 0))
    }

    /// Gives up on every outstanding DMA read: their frames are dropped.
    pub fn timeout(&mut self, mem: &mut Storage<'_>) {
        for reader in mem.readers.iter_mut().take(READERS) {
            if reader.read.is_some() {
                end_read(&self.queues, reader, Seg::Failed, &mut mem.tx);
            }
        }
    }

    /// When [`Vnic::poll`] must be called next for a moderation timer;
    /// `None` if no timer runs. Events counted since the last poll make
    /// it `Instant::ZERO` (poll now).
    pub fn poll_at(&self) -> Option<Instant> {
        self.queues
            .iter()
            .filter(|q| q.enabled)
            .filter_map(|q| q.moderation.poll_at())
            .min()
    }

    /// Moves the function forward: writes the next TLP to send into
    /// `buf` ([`TLP_BUF_LEN`] bytes) and returns its length; `None` when
    /// nothing is due. In order of priority: RX frame data and the
    /// completions behind them, MRd requests for TX data, TX done blocks,
    /// the status block, then MSI-X messages, so that an interrupt always
    /// follows what it announces. `now` drives interrupt moderation.
    pub fn poll(
        &mut self,
        now: Instant,
        cs: &ConfigSpace,
        mem: &mut Storage<'_>,
        buf: &mut [u8],
    ) -> Option<usize> {
        if !cs.bus_master_enabled() {
            return None;
        }
        let cfg = DmaConfig::from_config_space(self.id, cs);
        for qi in 0..MAX_QUEUES {
            if let Some(n) = self.rx_step(qi, &cfg, mem, buf) {
                return Some(n);
            }
        }
        if let Some(n) = self.read_step(&cfg, mem, buf) {
            return Some(n);
        }
        for qi in 0..MAX_QUEUES {
            self.moderate(qi, now, &cfg);
            if let Some(n) = self.done_step(qi, buf) {
                return Some(n);
            }
        }
        if let Some(n) = self.status_step(&cfg, buf) {
            return Some(n);
        }
        // MSI-X last, so that an interrupt follows what it announces.
        self.msix.deliver_due(&mut self.irq_due, cs, self.id, buf)
    }

    /// RX of queue pair `qi`: frame data, then completions.
    fn rx_step(
        &mut self,
        qi: usize,
        cfg: &DmaConfig,
        mem: &mut Storage<'_>,
        buf: &mut [u8],
    ) -> Option<usize> {
        let enabled = self.enabled();
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
        let rx = mem.rx.get(qi).map_or(&[][..], |b| &**b);
        let stage = staging(rx);
        loop {
            if let Some((w, s)) = queue.writing.as_mut() {
                let data = stage.get(s.start..s.start + s.len).unwrap_or(&[]);
                match w.next_tlp(data, buf) {
                    Some(Ok(n)) => return Some(n),
                    Some(Err(_)) => continue,
                    None => {}
                }
                let s = *s;
                queue.writing = None;
                let index = queue.used;
                let ring = queue.ring_size.max(1);
                let c = RxCompletion {
                    len: s.len as u16,
                    flags: s.flags | RxCompletion::phase_of(index, ring),
                    queue: qi as u8,
                    hash: s.hash,
                    index,
                };
                let at = queue.batch_n * DESC_LEN;
                if let Some(d) = queue.batch.get_mut(at..at + DESC_LEN) {
                    d.copy_from_slice(&c.encode());
                }
                queue.batch_n += 1;
                queue.used = index.wrapping_add(1);
                unstage(queue, stage);
                self.stats[STAT_RX_FRAMES] = self.stats[STAT_RX_FRAMES].wrapping_add(1);
                self.stats[STAT_RX_BYTES] = self.stats[STAT_RX_BYTES].wrapping_add(s.len as u64);
            }
            // The batch must stay contiguous in the ring and fit one write.
            let ring = queue.ring_size.max(1);
            let first = queue.used.wrapping_sub(queue.batch_n as u32);
            let batch_full = queue.batch_n >= CQ_BATCH
                || (queue.batch_n > 0 && queue.used % ring == 0 && first % ring != 0);
            let frame = stage_head(queue, stage).map(|(_, _, s)| s);
            let buffer = queue.posted != queue.used;
            match frame {
                Some(s) if enabled && buffer && !batch_full => {
                    let b = rx_desc_at(rx, queue.used);
                    // Each round ends a staged frame or starts its write.
                    if s.len > b.len as usize {
                        unstage(queue, stage);
                        self.stats[STAT_RX_OVERSIZE] = self.stats[STAT_RX_OVERSIZE].wrapping_add(1);
                        continue;
                    }
                    match DmaWrite::new(cfg, b.addr, s.len) {
                        Ok(w) => queue.writing = Some((w, s)),
                        Err(_) => {
                            unstage(queue, stage);
                            self.stats[STAT_RX_NO_ROOM] =
                                self.stats[STAT_RX_NO_ROOM].wrapping_add(1);
                        }
                    }
                }
                _ => break,
            }
        }
        if queue.batch_n == 0 {
            return None;
        }
        let n = queue.batch_n;
        let ring = queue.ring_size.max(1);
        let first = queue.used.wrapping_sub(n as u32);
        let addr = queue.cq_addr + u64::from(first % ring) * DESC_LEN as u64;
        queue.moderation.add(n as u32);
        // `batch` stays as it is until the write is out (`batch_n` is
        // cleared then), and no completion is added meanwhile.
        match DmaWrite::new(cfg, addr, n * DESC_LEN) {
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

    /// TX data: start reads of DMA segments, send their requests.
    fn read_step(
        &mut self,
        cfg: &DmaConfig,
        mem: &mut Storage<'_>,
        buf: &mut [u8],
    ) -> Option<usize> {
        // Queue pairs take turns at the free readers.
        let first = self.next_tx_queue;
        for k in 0..MAX_QUEUES {
            self.start_reads((first + k) % MAX_QUEUES, cfg, mem);
        }
        for reader in mem.readers.iter_mut().take(READERS) {
            let live = self
                .queues
                .get(usize::from(reader.queue))
                .is_some_and(|q| q.epoch == reader.epoch && q.enabled);
            let Some(read) = reader.read.as_mut() else {
                continue;
            };
            if live {
                if let Some(n) = read.next_request(buf) {
                    return Some(n);
                }
            }
            if !live || matches!(read.state(), DmaState::Failed(_)) {
                end_read(&self.queues, reader, Seg::Failed, &mut mem.tx);
            }
        }
        None
    }

    /// Starts DMA reads of queue pair `qi`'s records that need one, while
    /// readers are free.
    fn start_reads(&mut self, qi: usize, cfg: &DmaConfig, mem: &mut Storage<'_>) {
        let Some(queue) = self.queues.get_mut(qi).filter(|q| q.enabled) else {
            return;
        };
        let (Some(fifo), readers) = (mem.tx.get_mut(qi), &mut *mem.readers) else {
            return;
        };
        let units = queue.fifo_units;
        // As in `take_frame`: at most the records there are.
        for _ in 0..queue.records {
            if queue.read_pos == queue.rec_end {
                return;
            }
            let p = queue.read_pos;
            let at = queue.fifo_offset(p);
            let desc = desc_at(fifo, at);
            if seg_at(fifo, at) == Seg::NeedRead {
                let free = readers
                    .iter_mut()
                    .take(READERS)
                    .enumerate()
                    .find(|(_, r)| r.read.is_none());
                let Some((slot, reader)) = free else {
                    return;
                };
                let len = usize::from(desc.len);
                let mut c = *cfg;
                c.first_tag = (slot * dma::TAGS) as u16;
                // The record was checked to fit before the FIFO's end.
                let seg = match DmaRead::new(&c, desc.addr, len) {
                    Ok(read) if at + UNIT + len <= fifo.len() => {
                        *reader = Reader {
                            read: Some(read),
                            queue: qi as u8,
                            start: p,
                            epoch: queue.epoch,
                        };
                        Seg::Reading
                    }
                    _ => Seg::Failed,
                };
                set_seg(fifo, at, seg);
            }
            queue.read_pos = p.wrapping_add(record_units(&desc, p, units));
        }
    }

    /// Interrupt moderation of queue pair `qi`: when the count or the
    /// time is reached, the TX done block is due and the interrupt fires
    /// (or waits for IRQ_ARM).
    fn moderate(&mut self, qi: usize, now: Instant, cfg: &DmaConfig) {
        let Some(queue) = self.queues.get_mut(qi).filter(|q| q.enabled) else {
            return;
        };
        if queue.cq_write.is_some() || queue.writing.is_some() || !queue.moderation.due(now) {
            return;
        }
        if queue.done != queue.done_written && queue.done_write.is_none() {
            queue.done_bytes = queue.done.encode();
            queue.done_written = queue.done;
            queue.done_write = DmaWrite::new(cfg, queue.tx_done_addr, DESC_LEN).ok();
        }
        if queue.moderation.signal() {
            self.irq_due |= 1 << (queue.vector & 7);
        }
    }

    fn done_step(&mut self, qi: usize, buf: &mut [u8]) -> Option<usize> {
        let queue = self.queues.get_mut(qi)?;
        let w = queue.done_write.as_mut()?;
        match w.next_tlp(&queue.done_bytes, buf) {
            Some(Ok(n)) => Some(n),
            _ => {
                queue.done_write = None;
                None
            }
        }
    }

    /// The status block's write, then MISC_VECTOR ([`StatusReport::step`]).
    fn status_step(&mut self, cfg: &DmaConfig, buf: &mut [u8]) -> Option<usize> {
        let status = self.status_reg();
        let mtu = self.mtu;
        let stats = &self.stats;
        let encode = |r: &StatusReport<STATUS_BLOCK_LEN>| {
            StatusBlock {
                generation: r.generation(),
                causes: r.causes,
                status,
                mtu,
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
/// the registers, RX and TX windows here, the MSI-X table and PBA in
/// [`MsixTable`].
impl<'a> Bar0<Storage<'a>> for Vnic {
    const LEN: u32 = BAR0_LEN;

    fn read_dw(&self, offset: u32, mem: &Storage<'a>) -> [u8; 4] {
        if offset < RX_WINDOWS {
            self.reg(offset, mem).to_le_bytes()
        } else {
            self.msix.read_dw(offset).unwrap_or([0; 4])
        }
    }

    fn write_dw(&mut self, offset: u32, be: u8, data: [u8; 4], mem: &mut Storage<'a>) {
        let queues = MAX_QUEUES as u32;
        if offset < RX_WINDOWS {
            self.write_reg(offset, u32::from_le_bytes(data), be_mask(be), mem);
        } else if let Some((q, at)) = window_at(offset, RX_WINDOWS, RX_WINDOW_LEN, queues) {
            if q >= self.cfg.queues {
                return self.refuse(offset, ERR_QUEUE);
            }
            self.rx_window_dw(q as usize, at, be, data, mem);
        } else if let Some((q, at)) = window_at(offset, TX_WINDOWS, TX_WINDOW_LEN, queues) {
            if q >= self.cfg.queues {
                return self.refuse(offset, ERR_QUEUE);
            }
            self.tx_window_dw(q as usize, at, be, data, mem);
        } else {
            self.msix.write_dw(offset, be, data);
        }
    }
}

/// What [`Vnic::take_frame`] found.
enum Taken {
    None,
    Dropped,
    Frame(usize),
}

/// Ends `reader`'s read with `seg` in its record, if the record still
/// belongs to it (same epoch, queue pair enabled).
fn end_read(queues: &[Queue], reader: &mut Reader, seg: Seg, tx: &mut [&mut [u8]]) {
    reader.read = None;
    let qi = usize::from(reader.queue);
    let (Some(queue), Some(fifo)) = (queues.get(qi), tx.get_mut(qi)) else {
        return;
    };
    if queue.epoch == reader.epoch && queue.enabled {
        set_seg(fifo, queue.fifo_offset(reader.start), seg);
    }
}

/// Offers a completion to one reader; whether it took it.
fn offer(queues: &[Queue], reader: &mut Reader, tlp: &Tlp<'_>, tx: &mut [&mut [u8]]) -> bool {
    let qi = usize::from(reader.queue);
    let Some(read) = reader.read.as_mut() else {
        return false;
    };
    let Some(queue) = queues.get(qi) else {
        return false;
    };
    let live = queue.epoch == reader.epoch && queue.enabled;
    let mut none = [0u8; 0];
    let dst = match tx.get_mut(qi) {
        Some(fifo) if live => {
            let from = queue.fifo_offset(reader.start) + UNIT;
            fifo.get_mut(from..).unwrap_or(&mut [])
        }
        // A stale read: the completion is taken, its data not kept (the
        // empty buffer fails the read).
        _ => &mut none[..],
    };
    if !read.receive(tlp, dst) {
        return false;
    }
    let seg = match read.state() {
        DmaState::InProgress => return true,
        DmaState::Done => Seg::Ready,
        DmaState::Failed(_) => Seg::Failed,
    };
    end_read(queues, reader, seg, tx);
    true
}

/// The staging part of an RX buffer (past the descriptor ring), whole
/// 16-byte units.
fn staging(rx: &[u8]) -> &[u8] {
    let stage = rx.get(RX_RING_BYTES..).unwrap_or(&[]);
    stage.get(..stage.len() & !(UNIT - 1)).unwrap_or(&[])
}

fn staging_mut(rx: &mut [u8]) -> &mut [u8] {
    let stage = rx.get_mut(RX_RING_BYTES..).unwrap_or(&mut []);
    let len = stage.len() & !(UNIT - 1);
    stage.get_mut(..len).unwrap_or(&mut [])
}

/// Staging bytes a frame of `len` bytes takes, header included.
fn stage_entry(len: usize) -> usize {
    UNIT + len.div_ceil(UNIT) * UNIT
}

/// Copies `frame` into the queue pair's staging area behind a header;
/// false if there is no room.
fn stage_frame(q: &mut Queue, rx: &mut [u8], frame: &[u8], hash: u32, flags: u8) -> bool {
    let stage = staging_mut(rx);
    let cap = stage.len();
    let need = stage_entry(frame.len());
    if need > cap {
        return false;
    }
    if q.st_count == 0 {
        q.st_rd = 0;
        q.st_wr = 0;
        q.st_used = 0;
    }
    let wr = q.st_wr.min(cap);
    let (start, waste) = if cap - wr < need {
        (0, cap - wr)
    } else {
        (wr, 0)
    };
    if q.st_used + waste + need > cap {
        return false;
    }
    if waste >= UNIT {
        if let Some(h) = stage.get_mut(wr..wr + 4) {
            h.copy_from_slice(&STAGE_WRAP.to_le_bytes());
        }
    }
    let mut header = [0u8; UNIT];
    header[..4].copy_from_slice(&(frame.len() as u32).to_le_bytes());
    header[4..8].copy_from_slice(&hash.to_le_bytes());
    header[8] = flags;
    let Some(entry) = stage.get_mut(start..start + UNIT + frame.len()) else {
        return false;
    };
    if let Some(h) = entry.get_mut(..UNIT) {
        h.copy_from_slice(&header);
    }
    if let Some(d) = entry.get_mut(UNIT..) {
        d.copy_from_slice(frame);
    }
    q.st_wr = start + need;
    q.st_used += waste + need;
    q.st_count += 1;
    true
}

/// The oldest staged frame: its header's offset, the bytes skipped to
/// reach it (a wrap), and the frame.
fn stage_head(q: &Queue, stage: &[u8]) -> Option<(usize, usize, Staged)> {
    if q.st_count == 0 {
        return None;
    }
    let cap = stage.len();
    let word = |at: usize| {
        stage
            .get(at..at + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map_or(0, u32::from_le_bytes)
    };
    let mut rd = q.st_rd.min(cap);
    let mut waste = 0;
    if cap - rd < UNIT || word(rd) == STAGE_WRAP {
        waste = cap - rd;
        rd = 0;
    }
    let s = Staged {
        start: rd + UNIT,
        len: word(rd) as usize,
        hash: word(rd + 4),
        flags: stage.get(rd + 8).copied().unwrap_or(0),
    };
    Some((rd, waste, s))
}

/// Frees the oldest staged frame.
fn unstage(q: &mut Queue, stage: &[u8]) {
    let Some((rd, waste, s)) = stage_head(q, stage) else {
        return;
    };
    let need = stage_entry(s.len);
    q.st_used = q.st_used.saturating_sub(waste + need);
    q.st_rd = rd + need;
    q.st_count -= 1;
}

/// RX descriptor `index` in the ring at the start of an RX buffer.
fn rx_desc_at(rx: &[u8], index: u32) -> RxDesc {
    let at = (index as usize % RING) * DESC_LEN;
    let mut b = [0u8; DESC_LEN];
    if let Some(s) = rx.get(at..at + DESC_LEN) {
        b.copy_from_slice(s);
    }
    RxDesc::decode(&b)
}

/// A descriptor unit is complete at the queue's `pos`: starts its
/// record, or says why not (an `ERR_*` code).
fn commit_tx(queue: &mut Queue, fifo: &mut [u8]) -> Result<(), u32> {
    let units_total = queue.fifo_units;
    let start = queue.pos;
    let at = queue.fifo_offset(start);
    let desc = desc_at(fifo, at);
    let room_to_end = units_total - start % units_total.max(1);
    if desc.flags & !TXD_FLAGS != 0 {
        return Err(ERR_DESCRIPTOR);
    }
    let seg = if desc.flags & TXD_PAD != 0 {
        if desc.flags != TXD_PAD || desc.len != 0 {
            return Err(ERR_DESCRIPTOR);
        }
        Seg::Ready
    } else {
        let len = u32::from(desc.len);
        if !(1..=FRAME_MAX).contains(&len) || desc.record_units() > room_to_end {
            return Err(ERR_DESCRIPTOR);
        }
        if desc.flags & TXD_INLINE != 0 {
            Seg::Filling
        } else if desc.addr == 0 || desc.addr.checked_add(u64::from(len)).is_none() {
            return Err(ERR_ADDRESS);
        } else {
            Seg::NeedRead
        }
    };
    let units = record_units(&desc, start, units_total);
    let end = start.wrapping_add(units);
    if end.wrapping_sub(queue.tail) > units_total || queue.records >= RING_MAX {
        return Err(ERR_OVERRUN);
    }
    set_seg(fifo, at, seg);
    queue.records += 1;
    queue.last_start = start;
    queue.rec_end = end;
    if seg == Seg::Filling {
        queue.pos = start.wrapping_add(1);
        queue.inline_left = units - 1;
    } else {
        queue.pos = end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_enough_for_a_kernel_stack() {
        // The kernel builds a `Vnic` by value (`KBox::new(Vnic::new(..))`)
        // and `reset` replaces it whole: it must stay small, the big
        // state lives in the caller's `Storage`.
        assert!(
            core::mem::size_of::<Vnic>() <= 3072,
            "{}",
            core::mem::size_of::<Vnic>()
        );
        assert!(core::mem::size_of::<Reader>() <= 1200);
    }

    #[test]
    fn seg_codes_round_trip() {
        for seg in [
            Seg::Ready,
            Seg::Filling,
            Seg::NeedRead,
            Seg::Reading,
            Seg::Failed,
        ] {
            assert_eq!(Seg::from_code(seg.code()), seg);
        }
        assert_eq!(Seg::from_code(0xee), Seg::Failed);
    }

    #[test]
    fn staging_wraps() {
        let mut q = Queue::new(0);
        let mut rx = [0u8; RX_RING_BYTES + 200];
        let frame = [7u8; 60];
        // 192 usable bytes hold two 80-byte entries; the third wraps.
        assert!(stage_frame(&mut q, &mut rx, &frame, 1, 0));
        assert!(stage_frame(&mut q, &mut rx, &frame, 2, 0));
        assert!(!stage_frame(&mut q, &mut rx, &frame, 3, 0));
        unstage(&mut q, staging(&rx));
        assert!(stage_frame(&mut q, &mut rx, &frame, 3, 0));
        let (_, _, s) = stage_head(&q, staging(&rx)).unwrap();
        assert_eq!((s.hash, s.len), (2, 60));
        unstage(&mut q, staging(&rx));
        let (rd, waste, s) = stage_head(&q, staging(&rx)).unwrap();
        assert_eq!((rd, waste, s.hash), (0, 192 - 2 * 80, 3));
        unstage(&mut q, staging(&rx));
        assert_eq!((q.st_count, q.st_used), (0, 0));
        assert!(stage_head(&q, staging(&rx)).is_none());
    }

    #[test]
    fn flow_hash_is_per_flow() {
        let mut a = [0u8; 60];
        a[12] = 0x08;
        a[14] = 0x45;
        a[23] = 6;
        a[34] = 1;
        let mut b = a;
        b[0] = 0xff; // another destination MAC, same flow
        assert_eq!(flow_hash(&a), flow_hash(&b));
        b[35] = 9; // another port
        assert_ne!(flow_hash(&a), flow_hash(&b));
        assert_eq!(flow_hash(&[]), flow_hash(&[]));
    }
}
