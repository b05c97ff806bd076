// SPDX-License-Identifier: GPL-2.0

//! The behaviour of the `test` function ([`FunctionKind::Test`]), modelled
//! on the kernel's `pci-epf-test` endpoint function and the
//! `pci_endpoint_test` host driver: the host programs addresses and a size
//! in BAR0 registers, writes a command, and the function DMAs to and from
//! host memory, reports a CRC-32 of the data and raises an MSI-X vector.
//! BAR1 to BAR5 are plain memory the host writes patterns into and reads
//! back.
//!
//! The register layout is pcieoe's own (the command and status bits keep
//! `pci-epf-test`'s values); all registers are 32-bit little-endian, any
//! byte enables work:
//!
//! | Offset | Register           | Access | Meaning                                  |
//! |--------|--------------------|--------|------------------------------------------|
//! | 0x00   | MAGIC              | RO     | [`MAGIC_VALUE`]                          |
//! | 0x04   | COMMAND            | RW     | write one `CMD_*` bit to start; reads the running command, 0 when idle |
//! | 0x08   | STATUS             | RW1C   | `STATUS_*` bits; BUSY (bit 31) is RO     |
//! | 0x0c   | SRC_ADDR_LO        | RW     | host source address, bits 31:0           |
//! | 0x10   | SRC_ADDR_HI        | RW     | bits 63:32                               |
//! | 0x14   | DST_ADDR_LO        | RW     | host destination address, bits 31:0      |
//! | 0x18   | DST_ADDR_HI        | RW     | bits 63:32                               |
//! | 0x1c   | SIZE               | RW     | bytes, 1 to 1 MiB (else the command fails) |
//! | 0x20   | CHECKSUM           | RO     | CRC-32 (IEEE) of the data read, written or copied |
//! | 0x24   | IRQ_NUMBER         | RW     | MSI-X vector, 0 to 7                     |
//! | 0x28   | FLAGS              | RW     | bit 0 [`FLAG_IRQ`]: raise IRQ_NUMBER when a command completes |
//! | 0x2c   | SEED               | RW     | seed of the WRITE pattern ([`fill_pattern`]) |
//! | 0x30   | SCRATCH0           | RW     | free for the host                        |
//! | 0x34   | SCRATCH1           | RW     | free for the host                        |
//! | 0x38   | IGNORED            | RO     | COMMAND writes ignored (while BUSY, or not one command) |
//! | 0x3c-0x7f | reserved        | RO 0   |                                          |
//! | 0x80   | MSI-X table        | RW     | 8 entries of 16 bytes                    |
//! | 0x100  | MSI-X PBA          | RO     | 8 bits                                   |
//! | 0x108-0x1ff | reserved      | RO 0   |                                          |
//!
//! # Commands
//!
//! * [`CMD_READ`]: read SIZE bytes at SRC_ADDR into the function, report
//!   their CRC; READ_SUCCESS, or READ_FAIL (with SRC_ADDR_INVALID when the
//!   host refused the reads, for instance its IOMMU answered UR).
//! * [`CMD_WRITE`]: write SIZE bytes of [`fill_pattern`]`(SEED)` at
//!   DST_ADDR, report their CRC; WRITE_SUCCESS or WRITE_FAIL.
//! * [`CMD_COPY`]: read SRC_ADDR, then write the data at DST_ADDR, report
//!   its CRC; COPY_SUCCESS or COPY_FAIL.
//! * [`CMD_RAISE_MSIX`]: raise vector IRQ_NUMBER; IRQ_RAISED when the
//!   message is sent or left pending by a mask, IRQ_FAIL when MSI-X is off,
//!   the vector does not exist or Bus Master Enable is clear.
//!
//! A DMA command fails at once without Bus Master Enable, with a SIZE of 0
//! or above 1 MiB (or above the caller's scratch buffer), or with an
//! address range that wraps the 64-bit space (SRC_/DST_ADDR_INVALID); it
//! fails midway if Bus Master Enable is cleared or a read times out.
//! Posted writes are not acknowledged, so DST_ADDR_INVALID only reports a
//! range that wraps; a host IOMMU drops bad writes silently.
//!
//! # Writes while busy
//!
//! Starting a command clears STATUS and sets BUSY; the command works on
//! the register values of that moment. While BUSY, writes to COMMAND are
//! ignored and counted in IGNORED; writes to the other registers take
//! effect at once but only for the next command; STATUS bits may be
//! cleared. Completion sets the result bits, CHECKSUM, clears BUSY, and
//! then (FLAGS bit 0) raises IRQ_NUMBER, so the host sees the result when
//! the interrupt arrives.
//!
//! # Storage
//!
//! Nothing here allocates: the memory behind BAR1 to BAR5 ([`Bars`]) and
//! the scratch buffer a DMA command stages its data in (up to 1 MiB) belong
//! to the caller, who passes them to each call. A BAR slice shorter than
//! the BAR reads zeros and drops writes past its end.
//!
//! [`FunctionKind::Test`]: super::function::FunctionKind::Test

use core::fmt;

use super::cfgspace::ConfigSpace;
use super::dma::{
    self, DmaConfig, DmaError, DmaRead, DmaState, DmaWrite, MsixMessage, MsixRefusal, MAX_DMA_LEN,
    MSIX_ENTRY_LEN,
};
use super::function::TEST_REG_LEN;
use super::model::{be_mask, decode, read_bar0, unsupported, write_dws, Bar0, MsixTable};
use super::tlp::{self, Bdf, MemRequest, Tlp};

/// What MAGIC reads: "PCOE" in ASCII.
pub const MAGIC_VALUE: u32 = 0x5043_4f45;

/// MAGIC register offset.
pub const REG_MAGIC: u32 = 0x00;
/// COMMAND register offset.
pub const REG_COMMAND: u32 = 0x04;
/// STATUS register offset.
pub const REG_STATUS: u32 = 0x08;
/// SRC_ADDR_LO register offset.
pub const REG_SRC_ADDR_LO: u32 = 0x0c;
/// SRC_ADDR_HI register offset.
pub const REG_SRC_ADDR_HI: u32 = 0x10;
/// DST_ADDR_LO register offset.
pub const REG_DST_ADDR_LO: u32 = 0x14;
/// DST_ADDR_HI register offset.
pub const REG_DST_ADDR_HI: u32 = 0x18;
/// SIZE register offset.
pub const REG_SIZE: u32 = 0x1c;
/// CHECKSUM register offset.
pub const REG_CHECKSUM: u32 = 0x20;
/// IRQ_NUMBER register offset.
pub const REG_IRQ_NUMBER: u32 = 0x24;
/// FLAGS register offset.
pub const REG_FLAGS: u32 = 0x28;
/// SEED register offset.
pub const REG_SEED: u32 = 0x2c;
/// SCRATCH0 register offset.
pub const REG_SCRATCH0: u32 = 0x30;
/// SCRATCH1 register offset.
pub const REG_SCRATCH1: u32 = 0x34;
/// IGNORED register offset.
pub const REG_IGNORED: u32 = 0x38;

/// Offset of the MSI-X table in BAR0 (as [`FunctionKind::msix`] says).
///
/// [`FunctionKind::msix`]: super::function::FunctionKind::msix
pub const MSIX_TABLE: u32 = TEST_REG_LEN;
/// MSI-X vectors.
pub const MSIX_VECTORS: usize = 8;
/// Offset of the MSI-X Pending Bit Array in BAR0.
pub const MSIX_PBA: u32 = MSIX_TABLE + (MSIX_VECTORS * MSIX_ENTRY_LEN) as u32;
/// Size of BAR0.
pub const BAR0_LEN: u32 = 512;

/// COMMAND: raise MSI-X vector IRQ_NUMBER.
pub const CMD_RAISE_MSIX: u32 = 1 << 2;
/// COMMAND: read from the host.
pub const CMD_READ: u32 = 1 << 3;
/// COMMAND: write to the host.
pub const CMD_WRITE: u32 = 1 << 4;
/// COMMAND: copy within the host.
pub const CMD_COPY: u32 = 1 << 5;

/// STATUS: READ succeeded.
pub const STATUS_READ_SUCCESS: u32 = 1 << 0;
/// STATUS: READ failed.
pub const STATUS_READ_FAIL: u32 = 1 << 1;
/// STATUS: WRITE succeeded.
pub const STATUS_WRITE_SUCCESS: u32 = 1 << 2;
/// STATUS: WRITE failed.
pub const STATUS_WRITE_FAIL: u32 = 1 << 3;
/// STATUS: COPY succeeded.
pub const STATUS_COPY_SUCCESS: u32 = 1 << 4;
/// STATUS: COPY failed.
pub const STATUS_COPY_FAIL: u32 = 1 << 5;
/// STATUS: an interrupt was raised (or left pending by a mask).
pub const STATUS_IRQ_RAISED: u32 = 1 << 6;
/// STATUS: the source range was refused.
pub const STATUS_SRC_ADDR_INVALID: u32 = 1 << 7;
/// STATUS: the destination range was refused.
pub const STATUS_DST_ADDR_INVALID: u32 = 1 << 8;
/// STATUS: an interrupt could not be raised.
pub const STATUS_IRQ_FAIL: u32 = 1 << 9;
/// STATUS: a command is running (read-only).
pub const STATUS_BUSY: u32 = 1 << 31;
/// The STATUS bits a write of 1 clears.
pub const STATUS_W1C: u32 = 0x3ff;

/// FLAGS: raise IRQ_NUMBER when a command completes.
pub const FLAG_IRQ: u32 = 1 << 0;

/// The buffer length [`TestFunction::poll`] and
/// [`TestFunction::serve_mmio`] need: the longest TLP.
pub const TLP_BUF_LEN: usize = tlp::MAX_TLP_LEN;

/// The sizes of BAR1 to BAR5.
pub const BAR_SIZES: [usize; 5] = [512, 1024, 16 << 10, 128 << 10, 1 << 20];

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xedb88320), table built at
/// compile time.
#[allow(clippy::indexing_slicing)]
const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

static CRC_TABLE: [u32; 256] = crc_table();

/// Continues a CRC-32 (IEEE) over more data: `crc32_update(0, data)` is
/// the CRC of `data`, and `crc32_update(crc32(a), b)` that of `a` then
/// `b` (zlib's convention, `crc32_le` with pre- and post-inversion).
///
/// # Examples
///
/// ```
/// use pcieoe::testfn::{crc32, crc32_update};
/// assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
/// assert_eq!(crc32_update(crc32(b"1234"), b"56789"), 0xcbf4_3926);
/// ```
pub fn crc32_update(crc: u32, data: &[u8]) -> u32 {
    let mut c = !crc;
    for &b in data {
        let i = ((c ^ u32::from(b)) & 0xff) as usize;
        c = CRC_TABLE.get(i).copied().unwrap_or(0) ^ (c >> 8);
    }
    !c
}

/// The CRC-32 (IEEE) of `data`, as the CHECKSUM register reports it.
pub fn crc32(data: &[u8]) -> u32 {
    crc32_update(0, data)
}

/// Fills `buf` with the WRITE command's pattern for `seed`: xorshift32
/// words from the seed (0 is replaced by 0x9e3779b9, xorshift's one bad
/// seed), little-endian, the last one cut short. The host regenerates it
/// to check what landed in its memory.
pub fn fill_pattern(seed: u32, buf: &mut [u8]) {
    let mut x = if seed == 0 { 0x9e37_79b9 } else { seed };
    for chunk in buf.chunks_mut(4) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let bytes = x.to_le_bytes();
        for (d, s) in chunk.iter_mut().zip(bytes.iter()) {
            *d = *s;
        }
    }
}

/// The memory behind BAR1 to BAR5 (index 0 is BAR1), owned by the caller;
/// each should be [`BAR_SIZES`] long.
#[derive(Debug)]
pub struct Bars<'a> {
    /// BAR1 to BAR5.
    pub mem: [&'a mut [u8]; 5],
}

impl<'a> Bars<'a> {
    /// The five memories.
    pub fn new(mem: [&'a mut [u8]; 5]) -> Bars<'a> {
        Bars { mem }
    }

    fn get(&self, bar: u8) -> Option<&[u8]> {
        let i = usize::from(bar).checked_sub(1)?;
        self.mem.get(i).map(|m| &**m)
    }

    fn get_mut(&mut self, bar: u8) -> Option<&mut [u8]> {
        let i = usize::from(bar).checked_sub(1)?;
        self.mem.get_mut(i).map(|m| &mut **m)
    }
}

/// What [`TestFunction::serve_mmio`] did with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mmio {
    /// A read answered with this many CplD.
    Read {
        /// Completions sent.
        completions: usize,
    },
    /// A read that hit no BAR (or memory decoding is off), answered with
    /// an Unsupported Request completion.
    Unsupported,
    /// A write applied.
    Written,
    /// A write that hit no BAR, memory decoding off, or poisoned data:
    /// dropped, as posted requests are.
    Dropped,
}

/// Why [`TestFunction::serve_mmio`] sent nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MmioError {
    /// Not a memory read or write.
    NotMemory,
    /// A malformed request (no completion, as for a Malformed TLP).
    Malformed(tlp::Error),
    /// `buf` too small for a completion.
    Buffer,
}

impl fmt::Display for MmioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MmioError::NotMemory => f.write_str("not a memory request"),
            MmioError::Malformed(e) => write!(f, "malformed memory request: {e}"),
            MmioError::Buffer => f.write_str("completion buffer too small"),
        }
    }
}

/// A command as latched when COMMAND was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Command {
    op: u32,
    src: u64,
    dst: u64,
    size: u32,
    seed: u32,
    irq: u32,
    flags: u32,
}

impl Command {
    /// The SUCCESS and FAIL bits of the command.
    fn result_bits(&self) -> (u32, u32) {
        match self.op {
            CMD_READ => (STATUS_READ_SUCCESS, STATUS_READ_FAIL),
            CMD_WRITE => (STATUS_WRITE_SUCCESS, STATUS_WRITE_FAIL),
            CMD_COPY => (STATUS_COPY_SUCCESS, STATUS_COPY_FAIL),
            _ => (STATUS_IRQ_RAISED, STATUS_IRQ_FAIL),
        }
    }

    fn size(&self) -> usize {
        usize::try_from(self.size).unwrap_or(usize::MAX)
    }
}

/// What the function is doing.
// No allocation to box the read's tag slots into: the variant sizes differ.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
enum Job {
    Idle,
    /// COMMAND written; starts at the next poll.
    Pending(Command),
    /// Reading the source (READ, COPY).
    Reading(Command, DmaRead),
    /// Writing the destination (WRITE, COPY) of data with this CRC.
    Writing(Command, DmaWrite, u32),
}

/// What one step of the job produced.
enum Step {
    /// A TLP of this length is in the buffer.
    Emit(usize),
    /// Nothing to do until a completion arrives or the host writes.
    Wait,
    /// The state changed; step again.
    Again,
}

/// How a job ends.
enum Outcome {
    /// A TLP to send; the job goes on.
    Emit(usize),
    Wait,
    /// Go on writing `data` with this CRC (COPY after its read).
    Write(Command, u32),
    /// Done with these STATUS bits and this checksum.
    Finish(Command, u32, Option<u32>),
}

/// The test function's registers, MSI-X table and command engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestFunction {
    id: Bdf,
    status: u32,
    src: u64,
    dst: u64,
    size: u32,
    checksum: u32,
    irq_number: u32,
    flags: u32,
    seed: u32,
    scratch: [u32; 2],
    ignored: u32,
    msix: MsixTable<{ MSIX_VECTORS * MSIX_ENTRY_LEN }>,
    job: Job,
    /// An MSI-X message to send at the next poll.
    outbox: Option<MsixMessage>,
    /// Toggles the tag range of each DMA read, so that completions of a
    /// failed read still in flight do not match the next one.
    generation: bool,
}

impl TestFunction {
    /// A test function in its reset state: registers zero, every MSI-X
    /// vector masked. `id` is its routing ID as the host sees it: the
    /// Completer ID of its completions and the Requester ID of its DMA.
    pub fn new(id: Bdf) -> TestFunction {
        TestFunction {
            id,
            status: 0,
            src: 0,
            dst: 0,
            size: 0,
            checksum: 0,
            irq_number: 0,
            flags: 0,
            seed: 0,
            scratch: [0; 2],
            ignored: 0,
            msix: MsixTable::new(MSIX_TABLE, MSIX_PBA),
            job: Job::Idle,
            outbox: None,
            generation: false,
        }
    }

    /// Back to the reset state (a Function Level Reset, or the function
    /// given to another host); a running command is abandoned.
    pub fn reset(&mut self) {
        *self = TestFunction::new(self.id);
    }

    /// The routing ID given to [`TestFunction::new`].
    pub fn id(&self) -> Bdf {
        self.id
    }

    /// Whether a command is running (STATUS.BUSY).
    pub fn is_busy(&self) -> bool {
        self.job != Job::Idle
    }

    /// Whether the function waits for read completions: the caller runs
    /// its completion timer while this holds and calls
    /// [`TestFunction::timeout`] when it runs out.
    pub fn awaiting_completions(&self) -> bool {
        matches!(&self.job, Job::Reading(_, dma) if dma.outstanding() > 0)
    }

    /// The MSI-X table bytes (8 entries of 16 bytes).
    pub fn msix_table(&self) -> &[u8] {
        self.msix.table()
    }

    /// The MSI-X Pending Bit Array.
    pub fn msix_pba(&self) -> &[u8] {
        self.msix.pba()
    }

    fn reg(&self, offset: u32) -> u32 {
        match offset {
            REG_MAGIC => MAGIC_VALUE,
            REG_COMMAND => match &self.job {
                Job::Idle => 0,
                Job::Pending(c) | Job::Reading(c, _) | Job::Writing(c, _, _) => c.op,
            },
            REG_STATUS => self.status | if self.is_busy() { STATUS_BUSY } else { 0 },
            REG_SRC_ADDR_LO => self.src as u32,
            REG_SRC_ADDR_HI => (self.src >> 32) as u32,
            REG_DST_ADDR_LO => self.dst as u32,
            REG_DST_ADDR_HI => (self.dst >> 32) as u32,
            REG_SIZE => self.size,
            REG_CHECKSUM => self.checksum,
            REG_IRQ_NUMBER => self.irq_number,
            REG_FLAGS => self.flags,
            REG_SEED => self.seed,
            REG_SCRATCH0 => self.scratch[0],
            REG_SCRATCH1 => self.scratch[1],
            REG_IGNORED => self.ignored,
            _ => 0,
        }
    }

    /// Applies a register write of `value` to the bytes in `mask`.
    fn write_reg(&mut self, offset: u32, value: u32, mask: u32) {
        let merged = (self.reg(offset) & !mask) | (value & mask);
        let low = |old: u64| (old & !0xffff_ffff) | u64::from(merged);
        let high = |old: u64| (old & 0xffff_ffff) | (u64::from(merged) << 32);
        match offset {
            REG_COMMAND => self.command(merged),
            REG_STATUS => self.status &= !(value & mask & STATUS_W1C),
            REG_SRC_ADDR_LO => self.src = low(self.src),
            REG_SRC_ADDR_HI => self.src = high(self.src),
            REG_DST_ADDR_LO => self.dst = low(self.dst),
            REG_DST_ADDR_HI => self.dst = high(self.dst),
            REG_SIZE => self.size = merged,
            REG_IRQ_NUMBER => self.irq_number = merged,
            REG_FLAGS => self.flags = merged & FLAG_IRQ,
            REG_SEED => self.seed = merged,
            REG_SCRATCH0 => self.scratch[0] = merged,
            REG_SCRATCH1 => self.scratch[1] = merged,
            _ => {}
        }
    }

    /// A write to COMMAND: latch the command unless busy or not exactly
    /// one command bit (0 is a no-op).
    fn command(&mut self, value: u32) {
        if value == 0 {
            return;
        }
        let known = matches!(value, CMD_READ | CMD_WRITE | CMD_COPY | CMD_RAISE_MSIX);
        if self.is_busy() || !known {
            self.ignored = self.ignored.wrapping_add(1);
            return;
        }
        self.status = 0;
        self.job = Job::Pending(Command {
            op: value,
            src: self.src,
            dst: self.dst,
            size: self.size,
            seed: self.seed,
            irq: self.irq_number,
            flags: self.flags,
        });
    }

    /// Reads `out.len()` bytes at `offset` of BAR `bar` (0 to 5) as the
    /// host would: BAR0 registers, MSI-X table and PBA, or the memory of
    /// BAR1 to BAR5 (zeros past the caller's slice, or for a BAR that does
    /// not exist). Reads have no side effects.
    pub fn mmio_read(&self, bar: u8, offset: u64, out: &mut [u8], bars: &Bars<'_>) {
        if bar == 0 {
            return read_bar0(self, offset, out, &());
        }
        out.fill(0);
        let Some(mem) = bars.get(bar) else {
            return;
        };
        let Ok(start) = usize::try_from(offset) else {
            return;
        };
        let src = mem.get(start..).unwrap_or(&[]);
        let n = src.len().min(out.len());
        if let (Some(d), Some(s)) = (out.get_mut(..n), src.get(..n)) {
            d.copy_from_slice(s);
        }
    }

    /// Writes the bytes enabled by `be` of `data` to the double word at
    /// `offset` (rounded down to a double word) of BAR `bar`, as a host
    /// MWr does; BAR0 writes go through the register rules (a COMMAND
    /// write starts a command).
    pub fn mmio_write_dw(
        &mut self,
        bar: u8,
        offset: u64,
        be: u8,
        data: [u8; 4],
        bars: &mut Bars<'_>,
    ) {
        let offset = offset & !3;
        if bar == 0 {
            if let Ok(at) = u32::try_from(offset) {
                if at < BAR0_LEN {
                    self.write_dw(at, be, data, &mut ());
                }
            }
            return;
        }
        let Some(mem) = bars.get_mut(bar) else {
            return;
        };
        for (lane, value) in data.iter().enumerate() {
            if be & (1 << lane) == 0 {
                continue;
            }
            let byte = usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(lane))
                .and_then(|at| mem.get_mut(at));
            if let Some(byte) = byte {
                *byte = *value;
            }
        }
    }

    /// Serves a downstream memory request that the DI received for this
    /// function: an MRd is answered through `send` (each TLP is written in
    /// `buf`, [`TLP_BUF_LEN`] bytes are enough, then passed to `send`), an
    /// MWr applied.
    ///
    /// The BAR is found with [`ConfigSpace::bar_hit`], which requires
    /// Memory Space Enable: a read outside the BARs, or with decoding off,
    /// gets an Unsupported Request completion; such a write, or one with
    /// poisoned data, is dropped. A read is answered with CplDs of at most
    /// the host's Max_Payload_Size (and what `buf` holds), split at 64-byte
    /// boundaries, which the host's Read Completion Boundary allows.
    ///
    /// # Errors
    ///
    /// [`MmioError::NotMemory`], [`MmioError::Malformed`] if
    /// [`Tlp::check`] refuses the request, [`MmioError::Buffer`].
    pub fn serve_mmio(
        &mut self,
        req: &Tlp<'_>,
        cs: &ConfigSpace,
        bars: &mut Bars<'_>,
        buf: &mut [u8],
        send: &mut impl FnMut(&[u8]),
    ) -> Result<Mmio, MmioError> {
        let (r, write) = decode(req)?;
        let bytes = u64::from(r.length) * 4;
        let hit = cs.bar_hit(r.address, bytes);
        match (hit, write) {
            (Some(hit), true) if !req.ep => {
                let payload = req.payload;
                self.apply_write(hit.bar, hit.offset, r, payload, bars);
                Ok(Mmio::Written)
            }
            (_, true) => Ok(Mmio::Dropped),
            (Some(hit), false) => {
                let mps = DmaConfig::from_config_space(self.id, cs).max_payload;
                let completions =
                    self.complete_read(req, r, hit.bar, hit.offset, mps, bars, buf, send)?;
                Ok(Mmio::Read { completions })
            }
            (None, false) => unsupported(req, self.id, buf, send),
        }
    }

    fn apply_write(
        &mut self,
        bar: u8,
        offset: u64,
        r: &MemRequest,
        payload: &[u8],
        bars: &mut Bars<'_>,
    ) {
        write_dws(offset, r, payload, |at, be, data| {
            self.mmio_write_dw(bar, at, be, data, bars);
        });
    }

    /// Answers a read that hit `bar` at `offset` with CplDs.
    #[allow(clippy::too_many_arguments)]
    fn complete_read(
        &mut self,
        req: &Tlp<'_>,
        r: &MemRequest,
        bar: u8,
        offset: u64,
        mps: usize,
        bars: &Bars<'_>,
        buf: &mut [u8],
        send: &mut impl FnMut(&[u8]),
    ) -> Result<usize, MmioError> {
        let fill = |at: u64, out: &mut [u8]| self.mmio_read(bar, offset + at, out, bars);
        dma::complete_read(req, r, self.id, mps, buf, fill, send).ok_or(MmioError::Buffer)
    }

    /// Offers a received TLP to the running command: completions of its
    /// DMA reads go into `scratch` (the same buffer on every call of one
    /// command). Returns whether the TLP was consumed; if not, the caller
    /// drops it (for instance a late completion of a failed read).
    pub fn receive(&mut self, tlp: &Tlp<'_>, scratch: &mut [u8]) -> bool {
        match &mut self.job {
            Job::Reading(_, dma) => dma.receive(tlp, scratch),
            _ => false,
        }
    }

    /// Gives up on the running command's outstanding reads: it fails at
    /// the next [`TestFunction::poll`].
    pub fn timeout(&mut self) {
        if let Job::Reading(_, dma) = &mut self.job {
            dma.timeout();
        }
    }

    /// Advances the running command and delivers MSI-X messages: writes
    /// the next TLP to send (MRd, MWr, or an MSI-X MWr) into `buf`
    /// ([`TLP_BUF_LEN`] bytes) and returns its length; `None` when nothing
    /// is due until a completion arrives or the host writes. Call it until
    /// it returns `None` after every [`TestFunction::serve_mmio`],
    /// [`TestFunction::receive`] and configuration write.
    ///
    /// `cs` is the function's configuration space (Bus Master Enable,
    /// MSI-X Message Control, Device Control); `scratch` stages a DMA
    /// command's data, so it must be at least SIZE bytes (up to 1 MiB) and
    /// the same buffer throughout a command.
    pub fn poll(&mut self, cs: &ConfigSpace, scratch: &mut [u8], buf: &mut [u8]) -> Option<usize> {
        // Each `Again` moves the job forward (Pending, Reading, Writing,
        // Idle), so a few rounds always reach `Emit` or `Wait`.
        for _ in 0..8 {
            match self.step(cs, scratch, buf) {
                Step::Emit(n) => return Some(n),
                Step::Wait => return None,
                Step::Again => {}
            }
        }
        None
    }

    fn step(&mut self, cs: &ConfigSpace, scratch: &mut [u8], buf: &mut [u8]) -> Step {
        if let Some(n) = self.deliver_msix(cs, buf) {
            return Step::Emit(n);
        }
        let master = cs.bus_master_enabled();
        let outcome = match &mut self.job {
            Job::Idle => return Step::Wait,
            Job::Pending(cmd) => {
                let cmd = *cmd;
                self.start(cmd, cs, scratch);
                return Step::Again;
            }
            Job::Reading(cmd, _) if !master => fail(cmd, 0),
            Job::Writing(cmd, _, _) if !master => fail(cmd, 0),
            Job::Reading(cmd, dma) => read_step(cmd, dma, scratch, buf),
            Job::Writing(cmd, dma, crc) => match dma.next_tlp(scratch, buf) {
                Some(Ok(n)) => Outcome::Emit(n),
                Some(Err(_)) => fail(cmd, 0),
                None => Outcome::Finish(*cmd, cmd.result_bits().0, Some(*crc)),
            },
        };
        match outcome {
            Outcome::Emit(n) => Step::Emit(n),
            Outcome::Wait => Step::Wait,
            Outcome::Write(cmd, crc) => {
                self.start_write(cmd, cs, crc);
                Step::Again
            }
            Outcome::Finish(cmd, bits, checksum) => {
                self.finish(cmd, bits, checksum, cs);
                Step::Again
            }
        }
    }

    /// Starts a latched command.
    fn start(&mut self, cmd: Command, cs: &ConfigSpace, scratch: &mut [u8]) {
        if cmd.op == CMD_RAISE_MSIX {
            self.job = Job::Idle;
            self.status |= self.raise(cmd.irq, cs);
            return;
        }
        let size = cmd.size();
        let (_, fail_bit) = cmd.result_bits();
        let Some(data) = scratch
            .get_mut(..size)
            .filter(|_| size > 0 && size <= MAX_DMA_LEN)
        else {
            return self.finish(cmd, fail_bit, None, cs);
        };
        if !cs.bus_master_enabled() {
            return self.finish(cmd, fail_bit, None, cs);
        }
        if cmd.op != CMD_READ && cmd.dst.checked_add(size as u64).is_none() {
            return self.finish(cmd, fail_bit | STATUS_DST_ADDR_INVALID, None, cs);
        }
        if cmd.op == CMD_WRITE {
            fill_pattern(cmd.seed, data);
            let crc = crc32(data);
            return self.start_write(cmd, cs, crc);
        }
        let mut cfg = DmaConfig::from_config_space(self.id, cs);
        self.generation = !self.generation;
        cfg.first_tag = if self.generation { dma::TAGS as u16 } else { 0 };
        match DmaRead::new(&cfg, cmd.src, size) {
            Ok(read) => self.job = Job::Reading(cmd, read),
            Err(_) => self.finish(cmd, fail_bit | STATUS_SRC_ADDR_INVALID, None, cs),
        }
    }

    /// Starts writing the first SIZE bytes of the scratch buffer.
    fn start_write(&mut self, cmd: Command, cs: &ConfigSpace, crc: u32) {
        let cfg = DmaConfig::from_config_space(self.id, cs);
        match DmaWrite::new(&cfg, cmd.dst, cmd.size()) {
            Ok(write) => self.job = Job::Writing(cmd, write, crc),
            Err(_) => {
                let bits = cmd.result_bits().1 | STATUS_DST_ADDR_INVALID;
                self.finish(cmd, bits, None, cs);
            }
        }
    }

    /// Ends the running command with these STATUS bits (and CHECKSUM),
    /// then raises the completion interrupt if FLAGS asks.
    fn finish(&mut self, cmd: Command, bits: u32, checksum: Option<u32>, cs: &ConfigSpace) {
        self.job = Job::Idle;
        if let Some(crc) = checksum {
            self.checksum = crc;
        }
        self.status |= bits;
        if cmd.flags & FLAG_IRQ != 0 {
            self.status |= self.raise(cmd.irq, cs);
        }
    }

    /// Raises vector `irq`: queues its message or leaves it pending, and
    /// returns the STATUS bit to set.
    fn raise(&mut self, irq: u32, cs: &ConfigSpace) -> u32 {
        let control = cs.msix_control().unwrap_or(0);
        let Ok(vector) = u16::try_from(irq) else {
            return STATUS_IRQ_FAIL;
        };
        if !cs.bus_master_enabled() {
            return STATUS_IRQ_FAIL;
        }
        match self.msix.message(control, vector) {
            Ok(msg) => {
                // One message waits at most: a second one before the poll
                // that sends the first is merged, as interrupts are.
                if self.outbox.is_none() {
                    self.outbox = Some(msg);
                }
                STATUS_IRQ_RAISED
            }
            Err(MsixRefusal::Masked) => STATUS_IRQ_RAISED,
            Err(MsixRefusal::Disabled | MsixRefusal::OutOfRange) => STATUS_IRQ_FAIL,
        }
    }

    /// Writes a queued MSI-X message, or one left pending that the host
    /// has since unmasked.
    fn deliver_msix(&mut self, cs: &ConfigSpace, buf: &mut [u8]) -> Option<usize> {
        if !cs.bus_master_enabled() {
            return None;
        }
        let msg = match self.outbox.take() {
            Some(msg) => msg,
            None => {
                let control = cs.msix_control().unwrap_or(0);
                self.msix.take_pending(control)?
            }
        };
        msg.emit(self.id, buf).ok()
    }
}

/// BAR0 a double word at a time, for [`read_bar0`]: the registers here,
/// the MSI-X table and PBA in [`MsixTable`]. BAR0 needs none of the
/// caller's memory (`()`); BAR1 to BAR5 are plain memory, served by
/// [`TestFunction::mmio_read`] and [`TestFunction::mmio_write_dw`].
impl Bar0<()> for TestFunction {
    const LEN: u32 = BAR0_LEN;

    fn read_dw(&self, offset: u32, _mem: &()) -> [u8; 4] {
        if offset < TEST_REG_LEN {
            self.reg(offset).to_le_bytes()
        } else {
            self.msix.read_dw(offset).unwrap_or([0; 4])
        }
    }

    fn write_dw(&mut self, offset: u32, be: u8, data: [u8; 4], _mem: &mut ()) {
        if offset < TEST_REG_LEN {
            self.write_reg(offset, u32::from_le_bytes(data), be_mask(be));
        } else {
            self.msix.write_dw(offset, be, data);
        }
    }
}

fn fail(cmd: &Command, extra: u32) -> Outcome {
    Outcome::Finish(*cmd, cmd.result_bits().1 | extra, None)
}

/// One step of a running read.
fn read_step(cmd: &Command, dma: &mut DmaRead, scratch: &[u8], buf: &mut [u8]) -> Outcome {
    if let Some(n) = dma.next_request(buf) {
        return Outcome::Emit(n);
    }
    match dma.state() {
        DmaState::InProgress => Outcome::Wait,
        DmaState::Done => {
            let crc = crc32(scratch.get(..dma.len()).unwrap_or(&[]));
            if cmd.op == CMD_COPY {
                Outcome::Write(*cmd, crc)
            } else {
                Outcome::Finish(*cmd, cmd.result_bits().0, Some(crc))
            }
        }
        DmaState::Failed(DmaError::Completion { .. }) => fail(cmd, STATUS_SRC_ADDR_INVALID),
        DmaState::Failed(_) => fail(cmd, 0),
    }
}
