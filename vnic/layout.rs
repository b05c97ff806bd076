// SPDX-License-Identifier: GPL-2.0

//! The register layout of the pcieoe virtual NIC: BAR0 registers, the
//! descriptor windows, the formats the device writes into host memory,
//! feature bits and interrupt causes. This file is the specification; the
//! device-interface model (`rust/pcieoe/src/vnic.rs`, compiled into
//! `pcieoe_dev.ko`) and the host driver (`pcieoe_vnic.ko`) both include it
//! and nothing else defines these values. `Documentation/vnic.rst` says
//! why the layout is what it is.
//!
//! Pure `core`, no `unsafe`, no allocation, no reference to any other
//! module, so that every build can include it with `#[path]`. All
//! multi-byte fields are little-endian. Decoding takes fixed-size arrays
//! (or checks a slice's length first) and cannot panic.
//!
//! # The cost model behind it
//!
//! Every register access crosses Ethernet as a TLP. A host MMIO read is a
//! round trip (tens of microseconds, milliseconds under loss) and is never
//! on the data path; a host MMIO write is posted (cheap). The device's DMA
//! reads are round trips too, its DMA writes and MSI-X messages posted.
//! So the host *pushes* descriptors (and small frames) with writes into
//! BAR0 windows, and the device *pushes* completions, consumer indices and
//! a status block into host memory with writes. The only round trip left
//! on the data path is the device's read of a transmitted frame's data
//! when the host did not push it inline.
//!
//! # BAR0 map (16 KiB)
//!
//! | Offset          | What                                               |
//! |-----------------|----------------------------------------------------|
//! | 0x0000-0x00ff   | global registers (`REG_*`)                         |
//! | 0x0100-0x01ff   | queue-pair registers, [`QUEUE_REGS_STRIDE`] each (`Q_*`) |
//! | 0x0400-0x07ff   | RX post windows, [`RX_WINDOW_LEN`] per queue pair   |
//! | 0x1000-0x2fff   | TX windows, [`TX_WINDOW_LEN`] per queue pair        |
//! | 0x3000-0x303f   | MSI-X table (4 vectors)                            |
//! | 0x3800-0x3807   | MSI-X Pending Bit Array                            |
//!
//! Registers are 32-bit; reads of reserved offsets return 0, writes to
//! them and to read-only registers are ignored. Windows are write-only
//! (they read 0).
//!
//! # Global registers
//!
//! | Offset | Register        | Access | Meaning                                   |
//! |--------|-----------------|--------|-------------------------------------------|
//! | 0x00   | MAGIC           | RO     | [`MAGIC_VALUE`]                            |
//! | 0x04   | VERSION         | RO     | [`VERSION_VALUE`]: major << 16 \| minor    |
//! | 0x08   | FEATURES        | RO     | `F_*` bits the device offers              |
//! | 0x0c   | DRIVER_FEATURES | RW     | `F_*` bits the driver uses (informative)  |
//! | 0x10   | MAC_LO          | RO     | MAC bytes 0-3 (byte 0 in bits 7:0)        |
//! | 0x14   | MAC_HI          | RO     | MAC bytes 4-5 in bits 15:0                |
//! | 0x18   | MTU_MAX         | RO     | largest MTU the DI allows                 |
//! | 0x1c   | QUEUES          | RO     | queue pairs, 1 to [`MAX_QUEUES`]          |
//! | 0x20   | CONTROL         | RW     | `CTRL_*`; [`CTRL_RESET`] self-clears      |
//! | 0x24   | STATUS          | RO     | `STATUS_*`                                |
//! | 0x28   | MTU             | RW     | 68 to MTU_MAX; other values refused       |
//! | 0x2c   | MISC_VECTOR     | RW     | MSI-X vector of status-block events       |
//! | 0x30   | STATUS_ADDR_LO  | RW     | host address of the [`StatusBlock`], 64-byte aligned |
//! | 0x34   | STATUS_ADDR_HI  | RW     |                                           |
//! | 0x38   | STATUS_REQUEST  | WO     | any write: write the status block now; bit 0 also raises MISC_VECTOR |
//! | 0x3c   | PROG_ERRORS     | RO     | programming errors refused so far         |
//! | 0x40   | MC_HASH0..7     | RW     | 256-bit multicast filter ([`mc_hash`])    |
//! | 0x60   | LAST_ERROR      | RO     | the last refusal: offset << 16 \| `ERR_*` |
//! | 0x80   | STATS           | RO     | [`STATS_COUNT`] 64-bit counters (`STAT_*`), low word first |
//!
//! # Queue-pair registers (at `0x100 + q * QUEUE_REGS_STRIDE`)
//!
//! | Offset | Register        | Access | Meaning                                   |
//! |--------|-----------------|--------|-------------------------------------------|
//! | 0x00   | Q_CONTROL       | RW     | bit 0 [`QCTRL_ENABLE`]: checks the programming, starts the queue pair; 0 stops and resets it |
//! | 0x04   | Q_STATUS        | RO     | bit 0 enabled, bit 1 stream error, bits 15:8 last `ERR_*` |
//! | 0x08   | TX_DONE_ADDR_LO | RW     | host address of the [`TxDone`] block, 16-byte aligned |
//! | 0x0c   | TX_DONE_ADDR_HI | RW     |                                           |
//! | 0x10   | RX_CQ_ADDR_LO   | RW     | host address of the RX completion ring, 16-byte aligned |
//! | 0x14   | RX_CQ_ADDR_HI   | RW     |                                           |
//! | 0x18   | RX_RING_SIZE    | RW     | RX buffers and completions, a power of two, 2 to [`RING_MAX`] |
//! | 0x1c   | TX_FIFO_UNITS   | RO     | units of the device's TX FIFO (0: queue unusable) |
//! | 0x20   | IRQ_VECTOR      | RW     | MSI-X vector of the queue pair            |
//! | 0x24   | ITR_USECS       | RW     | moderation time, 0 to [`ITR_USECS_MAX`]   |
//! | 0x28   | ITR_FRAMES      | RW     | moderation count, 0 to [`RING_MAX`] (0 and 1: every event) |
//! | 0x2c   | IRQ_ARM         | WO     | any write arms the interrupt (one interrupt, then disarmed) |
//!
//! Programming registers may only change while the queue pair is disabled;
//! a write while enabled is refused (counted, [`ERR_BUSY`]). Q_CONTROL's
//! enable is refused ([`ERR_RING_SIZE`], [`ERR_ADDRESS`]) unless both
//! addresses are aligned, nonzero and do not wrap, and RX_RING_SIZE is
//! valid.
//!
//! # Transmit: the TX window
//!
//! The host writes a stream of 16-byte *units* into the queue pair's TX
//! window: unit `n` of the stream (`n` counted from 0 since the queue was
//! enabled, wrapping at 2^32) goes at window offset
//! `(n % TX_WINDOW_UNITS) * 16`, in whole double words, in order. The device copies each unit into
//! the same position of its TX FIFO (`n % TX_FIFO_UNITS`) as it arrives. A
//! *record* is a [`TxDesc`] unit followed by `units_for(len)` units of
//! data:
//!
//! * [`TXD_INLINE`]: the host writes the data units itself (the frame
//!   bytes pushed with the descriptor, no round trip);
//! * otherwise the host skips those units (its stream position jumps past
//!   them) and the device DMA-reads `len` bytes at `addr` into them;
//! * [`TXD_PAD`]: the rest of the FIFO up to its end is skipped, so that
//!   the next record starts at FIFO unit 0 (records never wrap the FIFO).
//!
//! A frame is one or more records, the last with [`TXD_EOP`]; it may mix
//! inline and DMA segments (typically headers inline, page fragments by
//! DMA). The device sends frames in order. The host may have at most
//! TX_FIFO_UNITS units and [`RING_MAX`] records outstanding (written but
//! not reported done in [`TxDone`]); a write out of position or not of
//! a whole double word, a bad descriptor, a record that would wrap the
//! FIFO or overrun it, stops the TX stream (Q_STATUS bit 1): that first
//! error is counted, later writes to the window are dropped uncounted,
//! until the queue pair is disabled and enabled again. The device keeps
//! its own state in its copy of the cookie: the host's value is not
//! kept. Frames leave only while CONTROL.ENABLE is set.
//!
//! # Receive: the RX post window and the completion ring
//!
//! The host posts receive buffers by writing [`RxDesc`]s into the RX post
//! window: descriptor `n` (counted from 0 since enable) at offset
//! `(n % RX_WINDOW_SLOTS) * 16`, whole double words, in order; the write
//! of its last double word posts it. At most RX_RING_SIZE buffers may be
//! outstanding; an overrun or a bad buffer (address 0, length below
//! [`FRAME_MIN`], a range that wraps) stops the RX post stream as bad TX
//! writes stop the TX stream. A frame longer than its buffer is dropped
//! (STAT_RX_OVERSIZE) and the buffer kept for the next one. The device fills buffers in the order posted, one frame
//! per buffer, and writes [`RxCompletion`] `n` at `RX_CQ_ADDR + (n %
//! RX_RING_SIZE) * 16`. Its phase bit is 1 on the first pass over the
//! ring, 0 on the second, and so on: the host knows a new entry by its
//! phase without reading any register. Completions of frames delivered
//! together are written with one memory write.
//!
//! # Interrupts and moderation
//!
//! Each queue pair counts *events*: completions written and frames
//! transmitted. When ITR_FRAMES events are pending, or ITR_USECS have
//! passed since the first of them, the device writes [`TxDone`] (if it
//! changed) and, if the interrupt is armed, raises IRQ_VECTOR and disarms
//! it. A host in NAPI polling keeps it disarmed and writes IRQ_ARM when it
//! goes back to interrupts: if events were flushed meanwhile, the
//! interrupt comes at once.
//!
//! The [`StatusBlock`] is written to STATUS_ADDR when the link changes,
//! when a programming error is counted and on STATUS_REQUEST; its
//! `causes` (`CAUSE_*`) say why, and MISC_VECTOR is raised (link and
//! errors always, requests when bit 0 asks). Without a valid STATUS_ADDR
//! (nonzero, 64-byte aligned) only the interrupt is sent.

/// What MAGIC reads: "vNIC" in ASCII, first letter in the low byte.
pub const MAGIC_VALUE: u32 = u32::from_le_bytes(*b"vNIC");
/// What VERSION reads: 1.0.
pub const VERSION_VALUE: u32 = 0x0001_0000;

/// Size of BAR0.
pub const BAR0_LEN: u32 = 16 << 10;
/// Queue pairs at most (one MSI-X vector each).
pub const MAX_QUEUES: usize = 4;
/// MSI-X vectors.
pub const MSIX_VECTORS: usize = 4;
/// Largest RX_RING_SIZE, and most TX records outstanding.
pub const RING_MAX: u32 = 256;
/// Largest ITR_USECS (1 s).
pub const ITR_USECS_MAX: u32 = 1_000_000;
/// Smallest MTU.
pub const MTU_MIN: u32 = 68;
/// Largest MTU a DI may configure (jumbo frames).
pub const MTU_LIMIT: u32 = 9000;
/// Ethernet header plus one VLAN tag: a frame is at most MTU + this.
pub const FRAME_OVERHEAD: u32 = 18;
/// Shortest frame (an Ethernet header).
pub const FRAME_MIN: u32 = 14;
/// Longest frame at [`MTU_LIMIT`].
pub const FRAME_MAX: u32 = MTU_LIMIT + FRAME_OVERHEAD;

/// MAGIC register offset.
pub const REG_MAGIC: u32 = 0x00;
/// VERSION register offset.
pub const REG_VERSION: u32 = 0x04;
/// FEATURES register offset.
pub const REG_FEATURES: u32 = 0x08;
/// DRIVER_FEATURES register offset.
pub const REG_DRIVER_FEATURES: u32 = 0x0c;
/// MAC_LO register offset.
pub const REG_MAC_LO: u32 = 0x10;
/// MAC_HI register offset.
pub const REG_MAC_HI: u32 = 0x14;
/// MTU_MAX register offset.
pub const REG_MTU_MAX: u32 = 0x18;
/// QUEUES register offset.
pub const REG_QUEUES: u32 = 0x1c;
/// CONTROL register offset.
pub const REG_CONTROL: u32 = 0x20;
/// STATUS register offset.
pub const REG_STATUS: u32 = 0x24;
/// MTU register offset.
pub const REG_MTU: u32 = 0x28;
/// MISC_VECTOR register offset.
pub const REG_MISC_VECTOR: u32 = 0x2c;
/// STATUS_ADDR_LO register offset.
pub const REG_STATUS_ADDR_LO: u32 = 0x30;
/// STATUS_ADDR_HI register offset.
pub const REG_STATUS_ADDR_HI: u32 = 0x34;
/// STATUS_REQUEST register offset.
pub const REG_STATUS_REQUEST: u32 = 0x38;
/// PROG_ERRORS register offset.
pub const REG_PROG_ERRORS: u32 = 0x3c;
/// MC_HASH0 register offset (eight registers).
pub const REG_MC_HASH: u32 = 0x40;
/// LAST_ERROR register offset.
pub const REG_LAST_ERROR: u32 = 0x60;
/// First STATS register offset.
pub const REG_STATS: u32 = 0x80;

/// CONTROL: the device is enabled (frames flow on enabled queue pairs);
/// clearing it stops every queue pair, as Q_CONTROL 0 does.
pub const CTRL_ENABLE: u32 = 1 << 0;
/// CONTROL: accept every frame from the uplink.
pub const CTRL_PROMISC: u32 = 1 << 1;
/// CONTROL: accept every multicast frame.
pub const CTRL_ALLMULTI: u32 = 1 << 2;
/// CONTROL: reset the whole device (self-clearing).
pub const CTRL_RESET: u32 = 1 << 31;

/// STATUS: the uplink is up.
pub const STATUS_LINK_UP: u32 = 1 << 0;
/// STATUS: CONTROL.ENABLE is set.
pub const STATUS_ENABLED: u32 = 1 << 1;

/// Where queue pair 0's registers start.
pub const QUEUE_REGS: u32 = 0x100;
/// Bytes of registers per queue pair.
pub const QUEUE_REGS_STRIDE: u32 = 0x40;
/// Q_CONTROL offset in a queue pair's registers.
pub const Q_CONTROL: u32 = 0x00;
/// Q_STATUS offset.
pub const Q_STATUS: u32 = 0x04;
/// TX_DONE_ADDR_LO offset.
pub const Q_TX_DONE_ADDR_LO: u32 = 0x08;
/// TX_DONE_ADDR_HI offset.
pub const Q_TX_DONE_ADDR_HI: u32 = 0x0c;
/// RX_CQ_ADDR_LO offset.
pub const Q_RX_CQ_ADDR_LO: u32 = 0x10;
/// RX_CQ_ADDR_HI offset.
pub const Q_RX_CQ_ADDR_HI: u32 = 0x14;
/// RX_RING_SIZE offset.
pub const Q_RX_RING_SIZE: u32 = 0x18;
/// TX_FIFO_UNITS offset.
pub const Q_TX_FIFO_UNITS: u32 = 0x1c;
/// IRQ_VECTOR offset.
pub const Q_IRQ_VECTOR: u32 = 0x20;
/// ITR_USECS offset.
pub const Q_ITR_USECS: u32 = 0x24;
/// ITR_FRAMES offset.
pub const Q_ITR_FRAMES: u32 = 0x28;
/// IRQ_ARM offset.
pub const Q_IRQ_ARM: u32 = 0x2c;

/// Q_CONTROL: the queue pair is enabled.
pub const QCTRL_ENABLE: u32 = 1 << 0;
/// Q_STATUS: the queue pair is enabled.
pub const QSTATUS_ENABLED: u32 = 1 << 0;
/// Q_STATUS: the TX stream stopped on an error.
pub const QSTATUS_TX_ERROR: u32 = 1 << 1;
/// Q_STATUS: the RX post stream stopped on an error.
pub const QSTATUS_RX_ERROR: u32 = 1 << 2;

/// Offset of a queue pair's register `reg`.
pub const fn queue_reg(queue: u32, reg: u32) -> u32 {
    QUEUE_REGS + queue * QUEUE_REGS_STRIDE + reg
}

/// Where the RX post windows start.
pub const RX_WINDOWS: u32 = 0x400;
/// Bytes of one RX post window.
pub const RX_WINDOW_LEN: u32 = 0x100;
/// Descriptor slots in an RX post window.
pub const RX_WINDOW_SLOTS: u32 = RX_WINDOW_LEN / DESC_LEN as u32;
/// Where the TX windows start.
pub const TX_WINDOWS: u32 = 0x1000;
/// Bytes of one TX window.
pub const TX_WINDOW_LEN: u32 = 0x800;
/// Units in a TX window.
pub const TX_WINDOW_UNITS: u32 = TX_WINDOW_LEN / UNIT as u32;

/// Offset of queue pair `queue`'s RX post window.
pub const fn rx_window(queue: u32) -> u32 {
    RX_WINDOWS + queue * RX_WINDOW_LEN
}

/// Offset of queue pair `queue`'s TX window.
pub const fn tx_window(queue: u32) -> u32 {
    TX_WINDOWS + queue * TX_WINDOW_LEN
}

/// Offset of the MSI-X table (as the configuration space says).
pub const MSIX_TABLE: u32 = 0x3000;
/// Offset of the MSI-X Pending Bit Array.
pub const MSIX_PBA: u32 = 0x3800;

/// Bytes of a TX FIFO unit, and of every descriptor and completion.
pub const UNIT: usize = 16;
/// Bytes of a descriptor or completion.
pub const DESC_LEN: usize = 16;

/// The units `len` data bytes take in the TX FIFO.
pub const fn units_for(len: u32) -> u32 {
    len.div_ceil(UNIT as u32)
}

/// Feature: several queue pairs with receive hashing.
pub const F_MULTI_QUEUE: u32 = 1 << 0;
/// Feature: frames (or segments) pushed inline through the TX window.
pub const F_TX_INLINE: u32 = 1 << 1;
/// Feature: frames of several segments (scatter-gather).
pub const F_TX_SG: u32 = 1 << 2;
/// Feature: RX completions carry a flow hash.
pub const F_RX_HASH: u32 = 1 << 3;
/// Feature: the multicast hash filter.
pub const F_MC_FILTER: u32 = 1 << 4;
/// Feature: interrupt moderation (ITR_USECS, ITR_FRAMES, IRQ_ARM).
pub const F_IRQ_MODERATION: u32 = 1 << 5;
/// Feature: the status block.
pub const F_STATUS_BLOCK: u32 = 1 << 6;
/// Feature: MTU above 1500.
pub const F_JUMBO: u32 = 1 << 7;

/// Programming error: no error.
pub const ERR_NONE: u32 = 0;
/// A register changed while its queue pair (or the device) is enabled.
pub const ERR_BUSY: u32 = 1;
/// A bad or unaligned address, or one where the structure would wrap.
pub const ERR_ADDRESS: u32 = 2;
/// A ring size that is not a power of two in range.
pub const ERR_RING_SIZE: u32 = 3;
/// A value out of range (MTU, vector, moderation).
pub const ERR_VALUE: u32 = 4;
/// A window write out of position or not of whole double words.
pub const ERR_POSITION: u32 = 5;
/// More buffers or units than the ring or FIFO holds.
pub const ERR_OVERRUN: u32 = 6;
/// A bad TX descriptor (flags, length, a record wrapping the FIFO).
pub const ERR_DESCRIPTOR: u32 = 7;
/// A queue pair the device does not have, a window of one not enabled,
/// or one the DI has no memory for (TX_FIFO_UNITS 0).
pub const ERR_QUEUE: u32 = 8;

/// STATS index: frames delivered to the host.
pub const STAT_RX_FRAMES: usize = 0;
/// STATS index: bytes delivered to the host.
pub const STAT_RX_BYTES: usize = 1;
/// STATS index: frames sent to the uplink.
pub const STAT_TX_FRAMES: usize = 2;
/// STATS index: bytes sent to the uplink.
pub const STAT_TX_BYTES: usize = 3;
/// STATS index: uplink frames not for this vNIC (MAC filter).
pub const STAT_RX_FILTERED: usize = 4;
/// STATS index: uplink frames dropped: no queue enabled, or staging full.
pub const STAT_RX_NO_ROOM: usize = 5;
/// STATS index: uplink frames dropped: longer than MTU allows, or than
/// the buffer they were due to go in.
pub const STAT_RX_OVERSIZE: usize = 6;
/// STATS index: transmitted frames dropped: bad length, a DMA read
/// refused by the host or timed out.
pub const STAT_TX_ERRORS: usize = 7;
/// Number of STATS counters.
pub const STATS_COUNT: usize = 8;

/// Interrupt cause (status block): the link changed.
pub const CAUSE_LINK: u32 = 1 << 0;
/// Interrupt cause: a programming error was counted.
pub const CAUSE_ERROR: u32 = 1 << 1;
/// Interrupt cause: the host asked (STATUS_REQUEST).
pub const CAUSE_REQUEST: u32 = 1 << 2;

fn le16(b: &[u8], at: usize) -> u16 {
    let mut v = [0u8; 2];
    if let Some(s) = b.get(at..at + 2) {
        v.copy_from_slice(s);
    }
    u16::from_le_bytes(v)
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        v.copy_from_slice(s);
    }
    u32::from_le_bytes(v)
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from(le32(b, at)) | (u64::from(le32(b, at + 4)) << 32)
}

fn put(b: &mut [u8], at: usize, v: &[u8]) {
    if let Some(d) = b.get_mut(at..at + v.len()) {
        d.copy_from_slice(v);
    }
}

/// TX descriptor flag: last segment of a frame.
pub const TXD_EOP: u16 = 1 << 0;
/// TX descriptor flag: the data follows in the stream (inline).
pub const TXD_INLINE: u16 = 1 << 1;
/// TX descriptor flag: padding to the end of the FIFO; no data, not part
/// of a frame.
pub const TXD_PAD: u16 = 1 << 2;
/// The TX descriptor flags defined.
pub const TXD_FLAGS: u16 = TXD_EOP | TXD_INLINE | TXD_PAD;

/// A TX descriptor (one FIFO unit):
///
/// | Bytes | Field  | Meaning                                            |
/// |-------|--------|----------------------------------------------------|
/// | 0-7   | addr   | host bus address of the data (0 if inline or pad)  |
/// | 8-9   | len    | bytes of this segment, 1 to [`FRAME_MAX`] (0 for pad) |
/// | 10-11 | flags  | `TXD_*`                                            |
/// | 12-15 | cookie | the host's own value, ignored by the device        |
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TxDesc {
    /// Host bus address of a DMA segment.
    pub addr: u64,
    /// Segment length in bytes.
    pub len: u16,
    /// `TXD_*` flags.
    pub flags: u16,
    /// Free for the host.
    pub cookie: u32,
}

impl TxDesc {
    /// The 16 bytes of the descriptor.
    pub fn encode(&self) -> [u8; DESC_LEN] {
        let mut b = [0u8; DESC_LEN];
        put(&mut b, 0, &self.addr.to_le_bytes());
        put(&mut b, 8, &self.len.to_le_bytes());
        put(&mut b, 10, &self.flags.to_le_bytes());
        put(&mut b, 12, &self.cookie.to_le_bytes());
        b
    }

    /// The descriptor in `b`.
    pub fn decode(b: &[u8; DESC_LEN]) -> TxDesc {
        TxDesc {
            addr: le64(b, 0),
            len: le16(b, 8),
            flags: le16(b, 10),
            cookie: le32(b, 12),
        }
    }

    /// The FIFO units of the record this descriptor starts, itself
    /// included (pads excepted: they run to the FIFO's end).
    pub fn record_units(&self) -> u32 {
        1 + units_for(u32::from(self.len))
    }
}

/// An RX buffer descriptor, posted through the RX window:
///
/// | Bytes | Field | Meaning                                       |
/// |-------|-------|-----------------------------------------------|
/// | 0-7   | addr  | host bus address of the buffer                |
/// | 8-11  | len   | its length, [`FRAME_MIN`] to 65535             |
/// | 12-15 | -     | reserved, 0                                   |
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RxDesc {
    /// Host bus address of the buffer.
    pub addr: u64,
    /// Bytes the buffer holds.
    pub len: u32,
}

impl RxDesc {
    /// The 16 bytes of the descriptor.
    pub fn encode(&self) -> [u8; DESC_LEN] {
        let mut b = [0u8; DESC_LEN];
        put(&mut b, 0, &self.addr.to_le_bytes());
        put(&mut b, 8, &self.len.to_le_bytes());
        b
    }

    /// The descriptor in `b`.
    pub fn decode(b: &[u8; DESC_LEN]) -> RxDesc {
        RxDesc {
            addr: le64(b, 0),
            len: le32(b, 8),
        }
    }
}

/// RX completion flag: the phase bit (1 on the ring's first pass).
pub const RXC_PHASE: u8 = 1 << 0;
/// RX completion flag: the frame was a broadcast.
pub const RXC_BROADCAST: u8 = 1 << 1;
/// RX completion flag: the frame was a multicast.
pub const RXC_MULTICAST: u8 = 1 << 2;
/// RX completion flag: `hash` is valid.
pub const RXC_HASH: u8 = 1 << 3;

/// An RX completion, written by the device into the completion ring:
///
/// | Bytes | Field  | Meaning                                          |
/// |-------|--------|--------------------------------------------------|
/// | 0-1   | len    | frame bytes written at the buffer's address      |
/// | 2     | flags  | `RXC_*`, [`RXC_PHASE`] in bit 0                   |
/// | 3     | queue  | the queue pair                                   |
/// | 4-7   | hash   | flow hash the queue was chosen by                |
/// | 8-11  | index  | the buffer's post index (0, 1, ... since enable) |
/// | 12-15 | -      | reserved, 0                                      |
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RxCompletion {
    /// Frame length.
    pub len: u16,
    /// `RXC_*` flags.
    pub flags: u8,
    /// Queue pair.
    pub queue: u8,
    /// Flow hash.
    pub hash: u32,
    /// Post index of the buffer used.
    pub index: u32,
}

impl RxCompletion {
    /// The 16 bytes of the completion.
    pub fn encode(&self) -> [u8; DESC_LEN] {
        let mut b = [0u8; DESC_LEN];
        put(&mut b, 0, &self.len.to_le_bytes());
        put(&mut b, 2, &[self.flags, self.queue]);
        put(&mut b, 4, &self.hash.to_le_bytes());
        put(&mut b, 8, &self.index.to_le_bytes());
        b
    }

    /// The completion in `b`.
    pub fn decode(b: &[u8; DESC_LEN]) -> RxCompletion {
        RxCompletion {
            len: le16(b, 0),
            flags: b[2],
            queue: b[3],
            hash: le32(b, 4),
            index: le32(b, 8),
        }
    }

    /// The phase completion `index` carries in a ring of `ring_size`
    /// entries (a power of two): 1 on the first pass.
    pub fn phase_of(index: u32, ring_size: u32) -> u8 {
        let pass = index.checked_div(ring_size).unwrap_or(0);
        if pass & 1 == 0 {
            RXC_PHASE
        } else {
            0
        }
    }
}

/// The TX done block the device writes at TX_DONE_ADDR:
///
/// | Bytes | Field   | Meaning                                          |
/// |-------|---------|--------------------------------------------------|
/// | 0-3   | units   | the stream position up to which units are free   |
/// | 4-7   | records | records done (sent, or dropped) since enable     |
/// | 8-11  | frames  | frames sent to the uplink since enable           |
/// | 12-15 | errors  | frames dropped since enable                      |
///
/// All four wrap at 2^32. A record is done once its frame has left for
/// the uplink (or was dropped): the host may then free its buffers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TxDone {
    /// Free-running FIFO position of the first unit still in use.
    pub units: u32,
    /// Records done.
    pub records: u32,
    /// Frames sent.
    pub frames: u32,
    /// Frames dropped.
    pub errors: u32,
}

impl TxDone {
    /// The 16 bytes of the block.
    pub fn encode(&self) -> [u8; DESC_LEN] {
        let mut b = [0u8; DESC_LEN];
        put(&mut b, 0, &self.units.to_le_bytes());
        put(&mut b, 4, &self.records.to_le_bytes());
        put(&mut b, 8, &self.frames.to_le_bytes());
        put(&mut b, 12, &self.errors.to_le_bytes());
        b
    }

    /// The block in `b`.
    pub fn decode(b: &[u8; DESC_LEN]) -> TxDone {
        TxDone {
            units: le32(b, 0),
            records: le32(b, 4),
            frames: le32(b, 8),
            errors: le32(b, 12),
        }
    }
}

/// Bytes of the status block.
pub const STATUS_BLOCK_LEN: usize = 128;

/// The status block the device writes at STATUS_ADDR:
///
/// | Bytes  | Field       | Meaning                                     |
/// |--------|-------------|---------------------------------------------|
/// | 0-3    | generation  | incremented at each write (never 0)         |
/// | 4-7    | causes      | `CAUSE_*` since the previous write          |
/// | 8-11   | status      | the STATUS register                         |
/// | 12-15  | mtu         | the MTU register                            |
/// | 16-19  | prog_errors | PROG_ERRORS                                 |
/// | 20-23  | last_error  | LAST_ERROR                                  |
/// | 24-31  | -           | reserved, 0                                 |
/// | 32-95  | stats       | the [`STATS_COUNT`] counters, 64-bit each   |
/// | 96-127 | -           | reserved, 0                                 |
///
/// The host copies the block and then reads the generation again: a
/// block whose generation changed while it was copied is copied again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct StatusBlock {
    /// Write counter.
    pub generation: u32,
    /// `CAUSE_*` bits.
    pub causes: u32,
    /// The STATUS register.
    pub status: u32,
    /// The MTU.
    pub mtu: u32,
    /// Programming errors.
    pub prog_errors: u32,
    /// The last programming error.
    pub last_error: u32,
    /// The counters, by `STAT_*` index.
    pub stats: [u64; STATS_COUNT],
}

impl StatusBlock {
    /// The bytes of the block.
    pub fn encode(&self) -> [u8; STATUS_BLOCK_LEN] {
        let mut b = [0u8; STATUS_BLOCK_LEN];
        put(&mut b, 0, &self.generation.to_le_bytes());
        put(&mut b, 4, &self.causes.to_le_bytes());
        put(&mut b, 8, &self.status.to_le_bytes());
        put(&mut b, 12, &self.mtu.to_le_bytes());
        put(&mut b, 16, &self.prog_errors.to_le_bytes());
        put(&mut b, 20, &self.last_error.to_le_bytes());
        for (i, s) in self.stats.iter().enumerate() {
            put(&mut b, 32 + 8 * i, &s.to_le_bytes());
        }
        b
    }

    /// The block in `b`.
    pub fn decode(b: &[u8; STATUS_BLOCK_LEN]) -> StatusBlock {
        let mut stats = [0u64; STATS_COUNT];
        for (i, s) in stats.iter_mut().enumerate() {
            *s = le64(b, 32 + 8 * i);
        }
        StatusBlock {
            generation: le32(b, 0),
            causes: le32(b, 4),
            status: le32(b, 8),
            mtu: le32(b, 12),
            prog_errors: le32(b, 16),
            last_error: le32(b, 20),
            stats,
        }
    }
}

/// The bit of the 256-bit multicast filter for `mac`: the top 8 bits of
/// the CRC-32 (IEEE, as Ethernet's FCS) of the six address bytes. The
/// filter is MC_HASH0..7, bit `h % 32` of register `h / 32`. The host
/// sets the bits of the groups it joined; a multicast frame whose bit is
/// clear is dropped (hash collisions let a few others through, which the
/// host's stack filters, as with any NIC's hash filter).
pub fn mc_hash(mac: &[u8; 6]) -> u8 {
    let mut c = !0u32;
    for &b in mac {
        c ^= u32::from(b);
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
    }
    ((!c) >> 24) as u8
}

/// Whether `mac` is a multicast (or broadcast) address.
pub fn is_multicast(mac: &[u8; 6]) -> bool {
    mac[0] & 1 != 0
}

/// The broadcast address.
pub const BROADCAST: [u8; 6] = [0xff; 6];
