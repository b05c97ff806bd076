// SPDX-License-Identifier: GPL-2.0

//! The register layout of the pcieoe virtual HBA: BAR0 registers, the LUN
//! information area, the submission windows, the submission and
//! completion entry formats, status codes and programming errors. This
//! file is the specification; the device-interface model
//! (`rust/pcieoe/src/vhba.rs`, compiled into `pcieoe_dev.ko`) and the host
//! driver (`pcieoe_vhba.ko`) both include it and nothing else defines
//! these values. `Documentation/vhba.rst` says why the layout is what it
//! is.
//!
//! Pure `core`, no `unsafe`, no allocation, no reference to any other
//! module, so that every build can include it with `#[path]`. All
//! multi-byte fields are little-endian. Decoding takes fixed-size arrays
//! and cannot panic; unknown opcodes and statuses keep their raw value.
//!
//! # The cost model behind it
//!
//! As for the vNIC (`vnic/layout.rs`): a host MMIO read is a round trip
//! (tens of microseconds) and never on the data path; a host MMIO write is
//! posted. The device's DMA reads are round trips, its DMA writes and
//! MSI-X messages posted. So the host *pushes* each command with a 64-byte
//! write into a submission window (the write is the doorbell: no
//! doorbell-then-fetch round trip), the device *pushes* read data and
//! completions into host memory. The only round trips left are the
//! device's reads of write data (and of a segment list, if the host
//! chose [`SQF_SEG_LIST`] over pushing the segments with
//! [`SQF_SEG_FOLLOW`]).
//!
//! # BAR0 map (16 KiB)
//!
//! | Offset          | What                                                |
//! |-----------------|-----------------------------------------------------|
//! | 0x0000-0x00ff   | global registers (`REG_*`)                          |
//! | 0x0100-0x01ff   | queue registers, [`QUEUE_REGS_STRIDE`] each (`Q_*`) |
//! | 0x0200-0x03ff   | LUN information, [`LUN_REGS_STRIDE`] each (`LUN_*`) |
//! | 0x1000-0x2fff   | submission windows, [`SQ_WINDOW_LEN`] per queue     |
//! | 0x3000-0x303f   | MSI-X table (4 vectors)                             |
//! | 0x3800-0x3807   | MSI-X Pending Bit Array                             |
//!
//! Registers are 32-bit; reads of reserved offsets return 0, writes to
//! them and to read-only registers are ignored. Windows are write-only
//! (they read 0).
//!
//! # Global registers
//!
//! | Offset | Register        | Access | Meaning                                   |
//! |--------|-----------------|--------|-------------------------------------------|
//! | 0x00   | MAGIC           | RO     | [`MAGIC_VALUE`] ("vHBA")                  |
//! | 0x04   | VERSION         | RO     | [`VERSION_VALUE`]: major << 16 \| minor    |
//! | 0x08   | FEATURES        | RO     | `F_*` bits the device offers              |
//! | 0x0c   | LUN_COUNT       | RO     | LUNs, 0 to [`MAX_LUNS`]; LUN `n` is at `lun_reg(n, ..)` |
//! | 0x10   | MAX_TRANSFER    | RO     | largest transfer of one command in bytes ([`MAX_TRANSFER`]) |
//! | 0x14   | MAX_SEGMENTS    | RO     | most data segments of one command ([`MAX_SEGMENTS`]) |
//! | 0x18   | QUEUES          | RO     | queues, 1 to [`MAX_QUEUES`]               |
//! | 0x1c   | SLOTS           | RO     | commands the device executes at once (0: unusable) |
//! | 0x20   | CONTROL         | RW     | `CTRL_*`; [`CTRL_RESET`] self-clears      |
//! | 0x24   | STATUS          | RO     | `STATUS_*`                                |
//! | 0x28   | MISC_VECTOR     | RW     | MSI-X vector of status-block events       |
//! | 0x30   | STATUS_ADDR_LO  | RW     | host address of the [`StatusBlock`], 64-byte aligned |
//! | 0x34   | STATUS_ADDR_HI  | RW     |                                           |
//! | 0x38   | STATUS_REQUEST  | WO     | any write: write the status block now; bit 0 also raises MISC_VECTOR |
//! | 0x3c   | PROG_ERRORS     | RO     | programming errors refused so far         |
//! | 0x40   | LAST_ERROR      | RO     | the last refusal: offset << 16 \| `ERR_*` |
//! | 0x80   | STATS           | RO     | [`STATS_COUNT`] 64-bit counters (`STAT_*`), low word first |
//!
//! # Queue registers (at `0x100 + q * QUEUE_REGS_STRIDE`)
//!
//! | Offset | Register     | Access | Meaning                                       |
//! |--------|--------------|--------|-----------------------------------------------|
//! | 0x00   | Q_CONTROL    | RW     | bit 0 [`QCTRL_ENABLE`]: checks the programming, starts the queue; 0 stops and resets it |
//! | 0x04   | Q_STATUS     | RO     | bit 0 enabled, bit 1 stream error, bits 15:8 last `ERR_*` |
//! | 0x08   | CQ_ADDR_LO   | RW     | host address of the completion ring, 16-byte aligned |
//! | 0x0c   | CQ_ADDR_HI   | RW     |                                               |
//! | 0x10   | CQ_SIZE      | RW     | completion entries, a power of two, 2 to [`RING_MAX`] |
//! | 0x14   | SQ_SIZE      | RW     | submission units, a power of two, 2 to CQ_SIZE and SQ_MAX |
//! | 0x18   | SQ_MAX       | RO     | largest SQ_SIZE the DI has memory for (0: queue unusable) |
//! | 0x1c   | IRQ_VECTOR   | RW     | MSI-X vector of the queue                     |
//! | 0x20   | ITR_USECS    | RW     | moderation time, 0 to [`ITR_USECS_MAX`]       |
//! | 0x24   | ITR_COUNT    | RW     | moderation count, 0 to [`RING_MAX`] (0 and 1: every completion) |
//! | 0x28   | IRQ_ARM      | WO     | any write arms the interrupt (one interrupt, then disarmed) |
//!
//! Programming registers (CQ_ADDR, CQ_SIZE, SQ_SIZE) may only change while
//! the queue is disabled ([`ERR_BUSY`]). Q_CONTROL's enable is refused
//! ([`ERR_RING_SIZE`], [`ERR_ADDRESS`], [`ERR_QUEUE`]) unless the ring is
//! aligned, nonzero and does not wrap, and SQ_SIZE is at most CQ_SIZE and
//! SQ_MAX.
//!
//! # LUN information (at `0x200 + n * LUN_REGS_STRIDE`, read-only)
//!
//! | Offset | Register          | Meaning                                      |
//! |--------|-------------------|----------------------------------------------|
//! | 0x00   | LUN_BLOCKS_LO     | capacity in logical blocks                   |
//! | 0x04   | LUN_BLOCKS_HI     |                                              |
//! | 0x08   | LUN_BLOCK_SIZE    | logical block size: a power of two, 512 to 4096 |
//! | 0x0c   | LUN_PHYS_BLOCK    | physical block size: a power of two, block size to 64 KiB |
//! | 0x10   | LUN_FLAGS         | `LUNF_*`                                     |
//! | 0x14   | LUN_MAX_DISCARD   | most blocks of one DISCARD or WRITE_ZEROES   |
//!
//! A LUN at or beyond LUN_COUNT reads 0 (no [`LUNF_PRESENT`]).
//!
//! # Submission: the submission window
//!
//! The host writes a stream of 64-byte *units* into the queue's window:
//! unit `n` (counted from 0 since the queue was enabled, wrapping at 2^32)
//! at window offset `(n % SQ_WINDOW_SLOTS) * 64`, in whole double words,
//! in order. A command is a [`SubmissionEntry`] unit, followed, with
//! [`SQF_SEG_FOLLOW`], by units of further segments
//! ([`SubmissionEntry::units`]); the write of its last double word submits
//! it. A 256-byte MWr carries four units. The device copies each unit
//! into its own submission ring of SQ_SIZE units; at most SQ_SIZE units
//! may be written and not yet *taken* (taken units are counted by
//! `sq_head` in every completion). A write out of position, not of a
//! whole double word, beyond SQ_SIZE, or a command longer than SQ_SIZE
//! units stops the queue's stream (Q_STATUS bit 1): that first error is
//! counted, later writes to the window are dropped uncounted until the
//! queue is disabled and enabled again. A bad *command* is not a stream
//! error: it completes with a status.
//!
//! The host keeps at most CQ_SIZE commands outstanding (submitted, and
//! their completion not yet consumed): then the completion ring cannot
//! overflow, and no completion-head register is needed.
//!
//! # Completions
//!
//! The device writes [`Completion`] `n` at `CQ_ADDR + (n % CQ_SIZE) * 16`.
//! Its phase bit is 1 on the first pass over the ring, 0 on the second,
//! and so on: the host knows a new entry by its phase. Completions come in
//! any order (the command id says which); completions that are ready
//! together are written with one memory write, up to [`CQ_BATCH`]. A
//! READ's data is written before its completion.
//!
//! # Interrupts and moderation
//!
//! Each queue counts completions written. When ITR_COUNT are pending, or
//! ITR_USECS have passed since the first of them, the interrupt fires if
//! armed, and disarms. A host polling keeps it disarmed and writes IRQ_ARM
//! when it goes back to interrupts: if completions were written meanwhile,
//! the interrupt comes at once. The [`StatusBlock`] is written as the
//! vNIC's is: on a programming error and on STATUS_REQUEST, with
//! MISC_VECTOR.

/// What MAGIC reads: "vHBA" in ASCII, first letter in the low byte.
pub const MAGIC_VALUE: u32 = u32::from_le_bytes(*b"vHBA");
/// What VERSION reads: 1.0.
pub const VERSION_VALUE: u32 = 0x0001_0000;

/// Size of BAR0.
pub const BAR0_LEN: u32 = 16 << 10;
/// Queues at most.
pub const MAX_QUEUES: usize = 4;
/// MSI-X vectors.
pub const MSIX_VECTORS: usize = 4;
/// LUNs at most.
pub const MAX_LUNS: usize = 16;
/// Largest CQ_SIZE and SQ_SIZE.
pub const RING_MAX: u32 = 256;
/// Largest ITR_USECS (1 s).
pub const ITR_USECS_MAX: u32 = 1_000_000;
/// Largest transfer of one command: 128 KiB.
pub const MAX_TRANSFER: u32 = 128 << 10;
/// Most data segments of one command (a 128 KiB transfer at any
/// alignment in 4 KiB pages needs 33).
pub const MAX_SEGMENTS: u32 = 64;
/// Data segments carried in the submission entry itself.
pub const INLINE_SEGMENTS: usize = 2;
/// Smallest logical block size.
pub const BLOCK_SIZE_MIN: u32 = 512;
/// Largest logical block size.
pub const BLOCK_SIZE_MAX: u32 = 4096;
/// Largest physical block size.
pub const PHYS_BLOCK_MAX: u32 = 64 << 10;
/// Completions written by one memory write at most (256 bytes, the
/// smallest Max_Payload_Size a host programs).
pub const CQ_BATCH: usize = 16;

/// MAGIC register offset.
pub const REG_MAGIC: u32 = 0x00;
/// VERSION register offset.
pub const REG_VERSION: u32 = 0x04;
/// FEATURES register offset.
pub const REG_FEATURES: u32 = 0x08;
/// LUN_COUNT register offset.
pub const REG_LUN_COUNT: u32 = 0x0c;
/// MAX_TRANSFER register offset.
pub const REG_MAX_TRANSFER: u32 = 0x10;
/// MAX_SEGMENTS register offset.
pub const REG_MAX_SEGMENTS: u32 = 0x14;
/// QUEUES register offset.
pub const REG_QUEUES: u32 = 0x18;
/// SLOTS register offset.
pub const REG_SLOTS: u32 = 0x1c;
/// CONTROL register offset.
pub const REG_CONTROL: u32 = 0x20;
/// STATUS register offset.
pub const REG_STATUS: u32 = 0x24;
/// MISC_VECTOR register offset.
pub const REG_MISC_VECTOR: u32 = 0x28;
/// STATUS_ADDR_LO register offset.
pub const REG_STATUS_ADDR_LO: u32 = 0x30;
/// STATUS_ADDR_HI register offset.
pub const REG_STATUS_ADDR_HI: u32 = 0x34;
/// STATUS_REQUEST register offset.
pub const REG_STATUS_REQUEST: u32 = 0x38;
/// PROG_ERRORS register offset.
pub const REG_PROG_ERRORS: u32 = 0x3c;
/// LAST_ERROR register offset.
pub const REG_LAST_ERROR: u32 = 0x40;
/// First STATS register offset.
pub const REG_STATS: u32 = 0x80;

/// CONTROL: the device is enabled (commands are taken from enabled
/// queues); clearing it stops every queue, as Q_CONTROL 0 does.
pub const CTRL_ENABLE: u32 = 1 << 0;
/// CONTROL: reset the whole device (self-clearing).
pub const CTRL_RESET: u32 = 1 << 31;

/// STATUS: CONTROL.ENABLE is set.
pub const STATUS_ENABLED: u32 = 1 << 0;

/// Where queue 0's registers start.
pub const QUEUE_REGS: u32 = 0x100;
/// Bytes of registers per queue.
pub const QUEUE_REGS_STRIDE: u32 = 0x40;
/// Q_CONTROL offset in a queue's registers.
pub const Q_CONTROL: u32 = 0x00;
/// Q_STATUS offset.
pub const Q_STATUS: u32 = 0x04;
/// CQ_ADDR_LO offset.
pub const Q_CQ_ADDR_LO: u32 = 0x08;
/// CQ_ADDR_HI offset.
pub const Q_CQ_ADDR_HI: u32 = 0x0c;
/// CQ_SIZE offset.
pub const Q_CQ_SIZE: u32 = 0x10;
/// SQ_SIZE offset.
pub const Q_SQ_SIZE: u32 = 0x14;
/// SQ_MAX offset.
pub const Q_SQ_MAX: u32 = 0x18;
/// IRQ_VECTOR offset.
pub const Q_IRQ_VECTOR: u32 = 0x1c;
/// ITR_USECS offset.
pub const Q_ITR_USECS: u32 = 0x20;
/// ITR_COUNT offset.
pub const Q_ITR_COUNT: u32 = 0x24;
/// IRQ_ARM offset.
pub const Q_IRQ_ARM: u32 = 0x28;

/// Q_CONTROL: the queue is enabled.
pub const QCTRL_ENABLE: u32 = 1 << 0;
/// Q_STATUS: the queue is enabled.
pub const QSTATUS_ENABLED: u32 = 1 << 0;
/// Q_STATUS: the submission stream stopped on an error.
pub const QSTATUS_STREAM_ERROR: u32 = 1 << 1;

/// Offset of queue `queue`'s register `reg`.
pub const fn queue_reg(queue: u32, reg: u32) -> u32 {
    QUEUE_REGS + queue * QUEUE_REGS_STRIDE + reg
}

/// Where LUN 0's information starts.
pub const LUN_REGS: u32 = 0x200;
/// Bytes of information per LUN.
pub const LUN_REGS_STRIDE: u32 = 0x20;
/// LUN_BLOCKS_LO offset in a LUN's information.
pub const LUN_BLOCKS_LO: u32 = 0x00;
/// LUN_BLOCKS_HI offset.
pub const LUN_BLOCKS_HI: u32 = 0x04;
/// LUN_BLOCK_SIZE offset.
pub const LUN_BLOCK_SIZE: u32 = 0x08;
/// LUN_PHYS_BLOCK offset.
pub const LUN_PHYS_BLOCK: u32 = 0x0c;
/// LUN_FLAGS offset.
pub const LUN_FLAGS: u32 = 0x10;
/// LUN_MAX_DISCARD offset.
pub const LUN_MAX_DISCARD: u32 = 0x14;

/// Offset of LUN `lun`'s register `reg`.
pub const fn lun_reg(lun: u32, reg: u32) -> u32 {
    LUN_REGS + lun * LUN_REGS_STRIDE + reg
}

/// LUN_FLAGS: the LUN exists.
pub const LUNF_PRESENT: u32 = 1 << 0;
/// LUN_FLAGS: writes, discards and write-zeroes are refused
/// ([`STATUS_READ_ONLY`]).
pub const LUNF_READ_ONLY: u32 = 1 << 1;
/// LUN_FLAGS: DISCARD is supported.
pub const LUNF_DISCARD: u32 = 1 << 2;
/// LUN_FLAGS: WRITE_ZEROES is supported.
pub const LUNF_WRITE_ZEROES: u32 = 1 << 3;
/// LUN_FLAGS: the backing has a volatile write cache: the host should
/// send FLUSH and honour FUA (both are always accepted).
pub const LUNF_WRITE_CACHE: u32 = 1 << 4;

/// Where the submission windows start.
pub const SQ_WINDOWS: u32 = 0x1000;
/// Bytes of one submission window.
pub const SQ_WINDOW_LEN: u32 = 0x800;
/// Entry slots in a submission window.
pub const SQ_WINDOW_SLOTS: u32 = SQ_WINDOW_LEN / SQE_LEN as u32;

/// Offset of queue `queue`'s submission window.
pub const fn sq_window(queue: u32) -> u32 {
    SQ_WINDOWS + queue * SQ_WINDOW_LEN
}

/// Offset of the MSI-X table (as the configuration space says).
pub const MSIX_TABLE: u32 = 0x3000;
/// Offset of the MSI-X Pending Bit Array.
pub const MSIX_PBA: u32 = 0x3800;

/// Feature: several queues.
pub const F_MULTI_QUEUE: u32 = 1 << 0;
/// Feature: segment lists in host memory ([`SQF_SEG_LIST`]).
pub const F_SEG_LIST: u32 = 1 << 1;
/// Feature: segments pushed after the entry ([`SQF_SEG_FOLLOW`]).
pub const F_SEG_FOLLOW: u32 = 1 << 7;
/// Feature: FLUSH and FUA.
pub const F_FLUSH_FUA: u32 = 1 << 2;
/// Feature: DISCARD (where a LUN says so).
pub const F_DISCARD: u32 = 1 << 3;
/// Feature: WRITE_ZEROES (where a LUN says so).
pub const F_WRITE_ZEROES: u32 = 1 << 4;
/// Feature: interrupt moderation (ITR_USECS, ITR_COUNT, IRQ_ARM).
pub const F_IRQ_MODERATION: u32 = 1 << 5;
/// Feature: the status block.
pub const F_STATUS_BLOCK: u32 = 1 << 6;

/// Programming error: no error. The codes are the vNIC's (7, its
/// descriptor error, has no use here), so both drivers can share a
/// decoder.
pub const ERR_NONE: u32 = 0;
/// A register changed while its queue (or the device) is enabled.
pub const ERR_BUSY: u32 = 1;
/// A bad or unaligned address, or one where the ring would wrap.
pub const ERR_ADDRESS: u32 = 2;
/// A ring size that is not a power of two in range, or an SQ_SIZE above
/// CQ_SIZE or SQ_MAX.
pub const ERR_RING_SIZE: u32 = 3;
/// A value out of range (vector, moderation).
pub const ERR_VALUE: u32 = 4;
/// A window write out of position or not of whole double words.
pub const ERR_POSITION: u32 = 5;
/// More units than the submission ring holds, or a command longer than
/// the ring.
pub const ERR_OVERRUN: u32 = 6;
/// A queue the device does not have, the window of one not enabled, or
/// one the DI has no memory for (SQ_MAX 0, SLOTS 0).
pub const ERR_QUEUE: u32 = 8;

/// STATS index: READ commands completed successfully.
pub const STAT_READS: usize = 0;
/// STATS index: bytes read.
pub const STAT_READ_BYTES: usize = 1;
/// STATS index: WRITE commands completed successfully.
pub const STAT_WRITES: usize = 2;
/// STATS index: bytes written.
pub const STAT_WRITE_BYTES: usize = 3;
/// STATS index: FLUSH commands and FUA writes completed.
pub const STAT_FLUSHES: usize = 4;
/// STATS index: DISCARD and WRITE_ZEROES commands completed.
pub const STAT_DISCARDS: usize = 5;
/// STATS index: commands completed with a status other than OK.
pub const STAT_ERRORS: usize = 6;
/// STATS index: DMA reads refused by the host or timed out.
pub const STAT_DMA_ERRORS: usize = 7;
/// Number of STATS counters.
pub const STATS_COUNT: usize = 8;

/// Status block cause: a programming error was counted.
pub const CAUSE_ERROR: u32 = 1 << 1;
/// Status block cause: the host asked (STATUS_REQUEST).
pub const CAUSE_REQUEST: u32 = 1 << 2;
/// Status block cause: a LUN's information changed (capacity, read-only);
/// the host reads the LUN registers again.
pub const CAUSE_LUN: u32 = 1 << 3;

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

fn byte(b: &[u8], at: usize) -> u8 {
    b.get(at).copied().unwrap_or(0)
}

fn put(b: &mut [u8], at: usize, v: &[u8]) {
    if let Some(d) = b.get_mut(at..at + v.len()) {
        d.copy_from_slice(v);
    }
}

/// A command's operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Opcode {
    /// Read `blocks` blocks at `lba` into the data segments.
    Read,
    /// Write `blocks` blocks at `lba` from the data segments (with
    /// [`SQF_FUA`]: durable when completed).
    Write,
    /// Make every completed write durable. No LBA, no data.
    Flush,
    /// The blocks' contents are no longer needed. No data.
    Discard,
    /// Set the blocks to zero. No data.
    WriteZeroes,
    /// Any other value: completes with [`STATUS_INVALID_OPCODE`].
    Unknown(u8),
}

impl From<u8> for Opcode {
    fn from(v: u8) -> Opcode {
        match v {
            1 => Opcode::Read,
            2 => Opcode::Write,
            3 => Opcode::Flush,
            4 => Opcode::Discard,
            5 => Opcode::WriteZeroes,
            v => Opcode::Unknown(v),
        }
    }
}

impl From<Opcode> for u8 {
    fn from(o: Opcode) -> u8 {
        match o {
            Opcode::Read => 1,
            Opcode::Write => 2,
            Opcode::Flush => 3,
            Opcode::Discard => 4,
            Opcode::WriteZeroes => 5,
            Opcode::Unknown(v) => v,
        }
    }
}

/// Submission flag: Force Unit Access (WRITE and WRITE_ZEROES): the data
/// is durable when the command completes.
pub const SQF_FUA: u8 = 1 << 0;
/// Submission flag: the segments are in a list in host memory; segment
/// field 0 holds its address (16-byte aligned) and `nsegs` its entries.
pub const SQF_SEG_LIST: u8 = 1 << 1;
/// Submission flag: segments 0 and 1 are in the entry, the other
/// `nsegs - 2` follow it in the stream, four per 64-byte unit
/// ([`SubmissionEntry::units`]): no round trip for the list.
pub const SQF_SEG_FOLLOW: u8 = 1 << 2;
/// The submission flags defined.
pub const SQF_FLAGS: u8 = SQF_FUA | SQF_SEG_LIST | SQF_SEG_FOLLOW;
/// Segments in one unit that follows an entry.
pub const SEGS_PER_UNIT: usize = SQE_LEN / SEG_LEN;

/// Bytes of a submission entry.
pub const SQE_LEN: usize = 64;
/// Bytes of a data segment descriptor (inline or in a list).
pub const SEG_LEN: usize = 16;

/// A data segment: `len` bytes of host memory at `addr`.
///
/// | Bytes | Field | Meaning                                     |
/// |-------|-------|---------------------------------------------|
/// | 0-7   | addr  | host bus address, nonzero, any alignment    |
/// | 8-11  | len   | bytes, 1 to [`MAX_TRANSFER`]                 |
/// | 12-15 | -     | reserved, 0                                 |
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Segment {
    /// Host bus address.
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
}

impl Segment {
    /// The 16 bytes of the descriptor.
    pub fn encode(&self) -> [u8; SEG_LEN] {
        let mut b = [0u8; SEG_LEN];
        put(&mut b, 0, &self.addr.to_le_bytes());
        put(&mut b, 8, &self.len.to_le_bytes());
        b
    }

    /// The descriptor in `b`.
    pub fn decode(b: &[u8; SEG_LEN]) -> Segment {
        Segment {
            addr: le64(b, 0),
            len: le32(b, 8),
        }
    }

    /// Whether the segment is usable: nonzero address and length, at most
    /// [`MAX_TRANSFER`] bytes, not wrapping the address space.
    pub fn is_valid(&self) -> bool {
        self.addr != 0
            && (1..=MAX_TRANSFER).contains(&self.len)
            && self.addr.checked_add(u64::from(self.len)).is_some()
    }
}

/// A submission entry, written by the host into a submission window:
///
/// | Bytes | Field  | Meaning                                           |
/// |-------|--------|---------------------------------------------------|
/// | 0     | opcode | [`Opcode`]                                        |
/// | 1     | flags  | `SQF_*`                                           |
/// | 2-3   | cid    | the host's command id, returned in the completion |
/// | 4     | lun    | LUN, below LUN_COUNT                              |
/// | 5     | -      | reserved, 0                                       |
/// | 6-7   | nsegs  | data segments: 1 to 2 inline, 3 to [`MAX_SEGMENTS`] with [`SQF_SEG_FOLLOW`], 1 to [`MAX_SEGMENTS`] with [`SQF_SEG_LIST`]; 0 without data |
/// | 8-15  | lba    | first logical block                               |
/// | 16-19 | blocks | logical blocks, at least 1 (0 for FLUSH)          |
/// | 20-23 | -      | reserved, 0                                       |
/// | 24-39 | seg0   | [`Segment`] 0, or the segment list (addr; len = nsegs * 16) |
/// | 40-55 | seg1   | [`Segment`] 1 (zero if unused)                    |
/// | 56-63 | -      | reserved, 0                                       |
///
/// READ and WRITE carry data: `blocks * block size` bytes, at most
/// MAX_TRANSFER, which the segments' lengths must add up to exactly.
/// FLUSH, DISCARD and WRITE_ZEROES carry none (nsegs 0, segments zero);
/// FLUSH has lba and blocks 0.
///
/// With [`SQF_SEG_FOLLOW`] the entry is the first of
/// [`SubmissionEntry::units`] 64-byte units in the submission stream:
/// segments 2, 3, ... follow, four per unit, the last unit padded with
/// zeros. The device takes the command once its last unit is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SubmissionEntry {
    /// The operation.
    pub opcode: Opcode,
    /// `SQF_*` flags.
    pub flags: u8,
    /// Command id.
    pub cid: u16,
    /// LUN.
    pub lun: u8,
    /// Segments.
    pub nsegs: u16,
    /// First block.
    pub lba: u64,
    /// Blocks.
    pub blocks: u32,
    /// The inline segments (segment 0 is the list with [`SQF_SEG_LIST`]).
    pub segs: [Segment; INLINE_SEGMENTS],
}

impl Default for SubmissionEntry {
    fn default() -> SubmissionEntry {
        SubmissionEntry {
            opcode: Opcode::Unknown(0),
            flags: 0,
            cid: 0,
            lun: 0,
            nsegs: 0,
            lba: 0,
            blocks: 0,
            segs: [Segment::default(); INLINE_SEGMENTS],
        }
    }
}

impl SubmissionEntry {
    /// The 64 bytes of the entry.
    pub fn encode(&self) -> [u8; SQE_LEN] {
        let mut b = [0u8; SQE_LEN];
        put(&mut b, 0, &[u8::from(self.opcode), self.flags]);
        put(&mut b, 2, &self.cid.to_le_bytes());
        put(&mut b, 4, &[self.lun, 0]);
        put(&mut b, 6, &self.nsegs.to_le_bytes());
        put(&mut b, 8, &self.lba.to_le_bytes());
        put(&mut b, 16, &self.blocks.to_le_bytes());
        for (i, s) in self.segs.iter().enumerate() {
            put(&mut b, 24 + SEG_LEN * i, &s.encode());
        }
        b
    }

    /// The 64-byte units of the stream this entry starts, itself
    /// included: 1, or with [`SQF_SEG_FOLLOW`] 1 + ⌈(nsegs − 2) / 4⌉,
    /// whatever else is wrong with the entry (the stream stays in step).
    pub fn units(&self) -> u32 {
        if self.flags & SQF_SEG_FOLLOW == 0 {
            return 1;
        }
        let follow = usize::from(self.nsegs).saturating_sub(INLINE_SEGMENTS);
        1 + follow.div_ceil(SEGS_PER_UNIT) as u32
    }

    /// The entry in `b`, and whether its reserved bytes are zero (an
    /// entry with reserved bits set completes with
    /// [`STATUS_INVALID_FIELD`]).
    pub fn decode(b: &[u8; SQE_LEN]) -> (SubmissionEntry, bool) {
        let mut segs = [Segment::default(); INLINE_SEGMENTS];
        let mut reserved_zero = byte(b, 5) == 0 && le32(b, 20) == 0 && le64(b, 56) == 0;
        for (i, s) in segs.iter_mut().enumerate() {
            let at = 24 + SEG_LEN * i;
            *s = Segment {
                addr: le64(b, at),
                len: le32(b, at + 8),
            };
            reserved_zero &= le32(b, at + 12) == 0;
        }
        let e = SubmissionEntry {
            opcode: Opcode::from(byte(b, 0)),
            flags: byte(b, 1),
            cid: le16(b, 2),
            lun: byte(b, 4),
            nsegs: le16(b, 6),
            lba: le64(b, 8),
            blocks: le32(b, 16),
            segs,
        };
        (e, reserved_zero)
    }
}

/// Completion status: success.
pub const STATUS_OK: u8 = 0;
/// The opcode is unknown.
pub const STATUS_INVALID_OPCODE: u8 = 1;
/// The LUN is at or beyond LUN_COUNT.
pub const STATUS_INVALID_LUN: u8 = 2;
/// The blocks run past the LUN's capacity (or the LBA arithmetic
/// overflows).
pub const STATUS_LBA_OUT_OF_RANGE: u8 = 3;
/// A WRITE, DISCARD or WRITE_ZEROES to a read-only LUN.
pub const STATUS_READ_ONLY: u8 = 4;
/// The backing returned an error.
pub const STATUS_IO_ERROR: u8 = 5;
/// A DMA read of write data or of the segment list was refused by the
/// host (IOMMU) or timed out.
pub const STATUS_DMA_ERROR: u8 = 6;
/// Reserved for an abort command (a later version); not produced by 1.0.
pub const STATUS_ABORTED: u8 = 7;
/// A field is invalid: unknown flags, reserved bits set, a segment count,
/// address or length that does not fit the command, a transfer above
/// MAX_TRANSFER, zero blocks.
pub const STATUS_INVALID_FIELD: u8 = 8;
/// The LUN does not support the operation (DISCARD, WRITE_ZEROES).
pub const STATUS_NOT_SUPPORTED: u8 = 9;

/// Completion flag: the phase bit (1 on the ring's first pass).
pub const CQF_PHASE: u8 = 1 << 0;

/// Bytes of a completion entry.
pub const CQE_LEN: usize = 16;

/// A completion, written by the device into the completion ring:
///
/// | Bytes | Field   | Meaning                                            |
/// |-------|---------|----------------------------------------------------|
/// | 0-1   | cid     | the command id of the submission entry             |
/// | 2     | status  | `STATUS_*`                                         |
/// | 3     | flags   | `CQF_*`, [`CQF_PHASE`] in bit 0                     |
/// | 4-7   | sq_head | submission units taken since enable (free-running): the host may write units up to `sq_head + SQ_SIZE` |
/// | 8     | queue   | the queue                                          |
/// | 9-11  | -       | reserved, 0                                        |
/// | 12-15 | -       | reserved, 0                                        |
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Completion {
    /// Command id.
    pub cid: u16,
    /// `STATUS_*`.
    pub status: u8,
    /// `CQF_*`.
    pub flags: u8,
    /// Units taken from the submission ring.
    pub sq_head: u32,
    /// Queue.
    pub queue: u8,
}

impl Completion {
    /// The 16 bytes of the completion.
    pub fn encode(&self) -> [u8; CQE_LEN] {
        let mut b = [0u8; CQE_LEN];
        put(&mut b, 0, &self.cid.to_le_bytes());
        put(&mut b, 2, &[self.status, self.flags]);
        put(&mut b, 4, &self.sq_head.to_le_bytes());
        put(&mut b, 8, &[self.queue]);
        b
    }

    /// The completion in `b`.
    pub fn decode(b: &[u8; CQE_LEN]) -> Completion {
        Completion {
            cid: le16(b, 0),
            status: byte(b, 2),
            flags: byte(b, 3),
            sq_head: le32(b, 4),
            queue: byte(b, 8),
        }
    }

    /// The phase completion `index` carries in a ring of `ring_size`
    /// entries (a power of two): [`CQF_PHASE`] on the first pass.
    pub fn phase_of(index: u32, ring_size: u32) -> u8 {
        let pass = index.checked_div(ring_size).unwrap_or(0);
        if pass & 1 == 0 {
            CQF_PHASE
        } else {
            0
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
/// | 12-15  | prog_errors | PROG_ERRORS                                 |
/// | 16-19  | last_error  | LAST_ERROR                                  |
/// | 20-31  | -           | reserved, 0                                 |
/// | 32-95  | stats       | the [`STATS_COUNT`] counters, 64-bit each   |
/// | 96-127 | -           | reserved, 0                                 |
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct StatusBlock {
    /// Write counter.
    pub generation: u32,
    /// `CAUSE_*` bits.
    pub causes: u32,
    /// The STATUS register.
    pub status: u32,
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
        put(&mut b, 12, &self.prog_errors.to_le_bytes());
        put(&mut b, 16, &self.last_error.to_le_bytes());
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
            prog_errors: le32(b, 12),
            last_error: le32(b, 16),
            stats,
        }
    }
}
