// SPDX-License-Identifier: GPL-2.0

//! The device interface's DMA engine for one function: upstream memory
//! reads and writes into the host's memory, and MSI-X messages.
//!
//! A function that a host drives through its BARs moves data itself: it
//! reads the host's buffers with MRd requests, whose answers come back as
//! one or more CplD completions, and writes them with posted MWr requests.
//! An interrupt is an MWr too, of the data the host programmed in the
//! function's MSI-X table to the address it programmed there. Everything
//! here is pure logic: the caller sends the TLPs this module writes and
//! hands it the completions the host returns.
//!
//! * [`DmaRead`] reads up to [`MAX_DMA_LEN`] bytes into a caller buffer,
//!   as a state machine like [`Fetch`](super::fabric::Fetch):
//!   [`DmaRead::next_request`] writes MRd requests while tags are free,
//!   [`DmaRead::receive`] places the data of each completion,
//!   [`DmaRead::state`] says when it is over and [`DmaRead::timeout`] lets
//!   the caller, who owns the clock, give up.
//! * [`DmaWrite`] splits a buffer into MWr requests
//!   ([`DmaWrite::next_tlp`], or as an iterator of [`WriteChunk`]s).
//! * [`msix_message`] and [`msix_take_pending`] apply the MSI-X rules to
//!   a function's table and Pending Bit Array.
//!
//! # Request shapes
//!
//! Requests are cut at multiples of their size limit (Max_Read_Request_Size
//! for reads, Max_Payload_Size for writes) counted from address 0: only the
//! first and last requests of a transfer are short, and since both limits
//! are powers of two dividing 4 KiB, no request crosses a 4 KiB boundary,
//! which PCIe forbids. An unaligned start or end is expressed with the
//! First and Last DW Byte Enables, so exactly the bytes asked for are read
//! or written. Addresses of 4 GiB and above go in a 4DW header (the TLP
//! codec chooses).

use core::fmt;

use super::cfgspace::{ConfigSpace, CAP_ID_PCIE, MSIX_ENABLE, MSIX_FUNCTION_MASK, PCIE_DEVCTL};
use super::tlp::{self, Bdf, Completion, CompletionStatus, Kind, MemRequest, Tag, Tlp};

/// The longest transfer one [`DmaRead`] or [`DmaWrite`] moves: 1 MiB, the
/// test function's largest BAR and `pci_endpoint_test`'s largest buffer.
pub const MAX_DMA_LEN: usize = 1 << 20;

/// The Read Completion Boundary the engine assumes of the host: 64 bytes,
/// the smaller of the two PCIe allows. A completer with a 128-byte RCB
/// splits at 64-byte boundaries too, so checking 64 accepts both.
pub const RCB: u64 = 64;

/// How many reads a [`DmaRead`] keeps outstanding at most, one tag each.
pub const TAGS: usize = 32;

/// The default Max_Read_Request_Size: 512 bytes, the PCIe reset value.
pub const DEFAULT_MAX_READ_REQUEST: usize = 512;

/// The default Max_Payload_Size: 256 bytes, what the functions support.
pub const DEFAULT_MAX_PAYLOAD: usize = 256;

/// The buffer length [`DmaRead::next_request`] needs: a 4DW header.
pub const REQUEST_LEN: usize = tlp::HEADER_4DW;

/// The buffer length [`DmaWrite::next_tlp`] needs at most: a 4DW header
/// and the largest payload.
pub const WRITE_TLP_LEN: usize = tlp::HEADER_4DW + tlp::MAX_PAYLOAD;

/// The buffer length [`MsixMessage::emit`] needs: a 4DW header and one
/// double word.
pub const MSIX_TLP_LEN: usize = tlp::HEADER_4DW + 4;

/// Bytes per MSI-X table entry: address low, address high, data, vector
/// control.
pub const MSIX_ENTRY_LEN: usize = 16;

/// The Mask bit of an MSI-X entry's Vector Control.
pub const MSIX_VECTOR_MASKED: u32 = 1;

/// Zeros to emit a TLP's payload from before filling it in place: a
/// payload that does not start on a double word needs padding, so it
/// cannot be borrowed from the caller's data.
pub(super) static ZEROS: [u8; tlp::MAX_PAYLOAD] = [0; tlp::MAX_PAYLOAD];

const PAGE: u64 = 4096;

/// Why a transfer cannot start or did not finish.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DmaError {
    /// A length of 0 or above [`MAX_DMA_LEN`].
    Length {
        /// The length asked for.
        len: usize,
    },
    /// The transfer would run past the top of the 64-bit address space.
    AddressOverflow {
        /// The start address.
        addr: u64,
        /// The length.
        len: usize,
    },
    /// A [`DmaConfig`] with a size that is not a power of two from 128 to
    /// 4096, or a tag range past 255.
    Config,
    /// A buffer too small: the TLP buffer, or the data buffer.
    Buffer {
        /// Bytes needed.
        need: usize,
        /// Bytes there are.
        have: usize,
    },
    /// The host answered a read with this status (an IOMMU fault is UR).
    Completion {
        /// The completion status.
        status: CompletionStatus,
    },
    /// A completion that does not fit the request it answers.
    BadCompletion {
        /// The tag.
        tag: Tag,
        /// What is wrong.
        fault: CplFault,
    },
    /// The caller gave up waiting ([`DmaRead::timeout`]).
    Timeout,
}

impl fmt::Display for DmaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DmaError::Length { len } => write!(f, "DMA length {len} out of range"),
            DmaError::AddressOverflow { addr, len } => {
                write!(f, "DMA of {len} bytes at {addr:#x} wraps the address space")
            }
            DmaError::Config => f.write_str("bad DMA configuration"),
            DmaError::Buffer { need, have } => {
                write!(f, "buffer too small: need {need} bytes, have {have}")
            }
            DmaError::Completion { status } => write!(f, "DMA read completed with {status}"),
            DmaError::BadCompletion { tag, fault } => {
                write!(f, "bad completion for tag {tag}: {fault}")
            }
            DmaError::Timeout => f.write_str("DMA read timed out"),
        }
    }
}

/// What is wrong with a completion ([`DmaError::BadCompletion`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CplFault {
    /// A successful completion without data.
    NoData,
    /// The data is poisoned (EP set).
    Poisoned,
    /// The Byte Count is not the number of bytes still due (or BCM is
    /// set, which only PCI-X completers do).
    ByteCount,
    /// The Lower Address is not that of the next byte due.
    LowerAddress,
    /// The payload is longer than the bytes due, or shorter without
    /// ending at an RCB boundary.
    Length,
}

impl fmt::Display for CplFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CplFault::NoData => "no data",
            CplFault::Poisoned => "poisoned",
            CplFault::ByteCount => "byte count",
            CplFault::LowerAddress => "lower address",
            CplFault::Length => "length",
        })
    }
}

/// How a function issues DMA requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DmaConfig {
    /// The function's routing ID as the host sees it: the Requester ID of
    /// every request.
    pub requester: Bdf,
    /// Max_Read_Request_Size in bytes: a power of two, 128 to 4096.
    pub max_read_request: usize,
    /// Max_Payload_Size in bytes: a power of two, 128 to 4096.
    pub max_payload: usize,
    /// The first of the [`TAGS`] tags a [`DmaRead`] uses; the last must
    /// be at most 255 (8-bit tags, which every requester may use) unless
    /// `ten_bit_tags`.
    pub first_tag: u16,
    /// Whether tags up to [`Tag::MAX`] may be used: the requester and its
    /// completer both support 10-bit tags (the host's own reads across
    /// pcieoe do; a function never assumes it).
    pub ten_bit_tags: bool,
}

/// A size field of Device Control (3 bits: 128 << n), reserved encodings
/// read as 4096.
fn devctl_size(bits: u16) -> usize {
    128 << (bits & 7).min(5)
}

fn valid_size(size: usize) -> bool {
    size.is_power_of_two() && (128..=tlp::MAX_PAYLOAD).contains(&size)
}

impl DmaConfig {
    /// The defaults: [`DEFAULT_MAX_READ_REQUEST`],
    /// [`DEFAULT_MAX_PAYLOAD`], tags 0 to 31.
    pub const fn new(requester: Bdf) -> DmaConfig {
        DmaConfig {
            requester,
            max_read_request: DEFAULT_MAX_READ_REQUEST,
            max_payload: DEFAULT_MAX_PAYLOAD,
            first_tag: 0,
            ten_bit_tags: false,
        }
    }

    /// The sizes the host programmed in the function's PCI Express Device
    /// Control register (the only values a function may use), tags 0 to
    /// 31; the defaults if there is no PCI Express capability.
    pub fn from_config_space(requester: Bdf, cs: &ConfigSpace) -> DmaConfig {
        let mut cfg = DmaConfig::new(requester);
        let devctl = cs
            .find_cap(CAP_ID_PCIE)
            .and_then(|at| cs.read(at.saturating_add(PCIE_DEVCTL), 2).ok());
        if let Some(devctl) = devctl {
            let devctl = devctl as u16;
            cfg.max_payload = devctl_size(devctl >> 5);
            cfg.max_read_request = devctl_size(devctl >> 12);
        }
        cfg
    }

    /// Checks the sizes and the tag range.
    ///
    /// # Errors
    ///
    /// [`DmaError::Config`].
    pub fn check(&self) -> Result<(), DmaError> {
        let last_tag = usize::from(self.first_tag) + TAGS - 1;
        let max_tag = if self.ten_bit_tags {
            usize::from(Tag::MAX)
        } else {
            0xff
        };
        if !valid_size(self.max_read_request) || !valid_size(self.max_payload) || last_tag > max_tag
        {
            return Err(DmaError::Config);
        }
        Ok(())
    }
}

/// Checks a transfer's length and that it stays below the top of the
/// address space.
fn check_transfer(addr: u64, len: usize) -> Result<(), DmaError> {
    if len == 0 || len > MAX_DMA_LEN {
        return Err(DmaError::Length { len });
    }
    // `len` is at most 1 MiB, so it fits in a u64.
    addr.checked_add(len as u64)
        .map(|_| ())
        .ok_or(DmaError::AddressOverflow { addr, len })
}

/// The double words of a request for `len` bytes at `start`, which stay
/// within one 4 KiB page: the DW-aligned address, the Length in double
/// words and the byte enables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    address: u64,
    length: u16,
    first_be: u8,
    last_be: u8,
    /// Bytes of padding before the first byte (0 to 3).
    head: usize,
}

fn span(start: u64, len: usize) -> Span {
    let head = (start & 3) as usize;
    let bytes = head.saturating_add(len);
    let dws = bytes.div_ceil(4);
    let pad = dws.saturating_mul(4).saturating_sub(bytes);
    let first = (0xfu8 << head) & 0xf;
    let last = 0xfu8 >> pad;
    let (first_be, last_be) = if dws == 1 {
        (first & last, 0)
    } else {
        (first, last)
    };
    Span {
        address: start & !3,
        // Within a 4 KiB page: at most 1024.
        length: dws.min(usize::from(tlp::MAX_LENGTH_DW)) as u16,
        first_be,
        last_be,
        head,
    }
}

/// How many bytes the next request may take: up to the next multiple of
/// `limit` (a power of two dividing 4 KiB), at most `left`.
fn chunk_len(at: u64, limit: usize, left: usize) -> usize {
    let limit = (limit as u64).clamp(4, PAGE);
    let room = limit - (at & (limit - 1));
    // `room` is at most 4096.
    (room as usize).min(left)
}

/// Where a [`DmaRead`] stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DmaState {
    /// Requests or completions are still due.
    InProgress,
    /// Every byte is in the buffer.
    Done,
    /// The read failed; the buffer holds part of the data.
    Failed(DmaError),
}

/// One outstanding read request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Slot {
    busy: bool,
    /// Offset in the transfer of the first byte requested.
    offset: usize,
    /// Bytes requested.
    len: usize,
    /// Bytes received so far (completions of a request come in order).
    got: usize,
}

/// An upstream read of `len` bytes at host bus address `addr`.
///
/// # Tags
///
/// Each outstanding MRd has one of the [`TAGS`] tags from
/// [`DmaConfig::first_tag`], which no other outstanding MRd of this read
/// has. Completions are matched by Requester ID and tag: tags of another
/// read of the same requester must not overlap while either is
/// outstanding. Once the read is over ([`DmaState::Done`] or
/// [`DmaState::Failed`]) it consumes nothing; completions still in flight
/// after a failure are the caller's to drop, and the caller should give
/// the next read other tags (see [`DmaConfig::first_tag`]) until they can
/// no longer arrive.
///
/// # Checks
///
/// Completions of one request must come in address order, as PCIe
/// requires; each must carry exactly the bytes due from the next byte
/// expected (Lower Address), say how many are left (Byte Count), and end
/// either at the request's last byte or at an RCB boundary. Anything else,
/// poisoned data, or an unsuccessful status fails the read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DmaRead {
    cfg: DmaConfig,
    addr: u64,
    len: usize,
    /// Bytes requested so far.
    issued: usize,
    /// Bytes received so far.
    received: usize,
    slots: [Slot; TAGS],
    state: DmaState,
}

impl DmaRead {
    /// A read of `len` bytes (1 to [`MAX_DMA_LEN`]) at `addr`.
    ///
    /// # Errors
    ///
    /// [`DmaError::Config`], [`DmaError::Length`],
    /// [`DmaError::AddressOverflow`].
    pub fn new(cfg: &DmaConfig, addr: u64, len: usize) -> Result<DmaRead, DmaError> {
        cfg.check()?;
        check_transfer(addr, len)?;
        Ok(DmaRead {
            cfg: *cfg,
            addr,
            len,
            issued: 0,
            received: 0,
            slots: [Slot::default(); TAGS],
            state: DmaState::InProgress,
        })
    }

    /// Where the read stands.
    pub fn state(&self) -> DmaState {
        self.state
    }

    /// The length of the read: the data buffer given to
    /// [`DmaRead::receive`] must hold at least that.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a read moves at least one byte.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many requests await completions.
    pub fn outstanding(&self) -> usize {
        self.slots.iter().filter(|s| s.busy).count()
    }

    /// Writes the next MRd to send into `buf` (at least [`REQUEST_LEN`]
    /// bytes) and returns its length; `None` when every byte is requested,
    /// all tags are in use, or the read is over. A `buf` too small fails
    /// the read.
    pub fn next_request(&mut self, buf: &mut [u8]) -> Option<usize> {
        if self.state != DmaState::InProgress || self.issued >= self.len {
            return None;
        }
        let index = self.slots.iter().position(|s| !s.busy)?;
        // `issued` is below `len`, and `addr + len` fits (checked by new).
        let start = self.addr + self.issued as u64;
        let len = chunk_len(start, self.cfg.max_read_request, self.len - self.issued);
        let s = span(start, len);
        // The tag range was checked by `new`; `index` is below TAGS.
        let tag = Tag::new(self.cfg.first_tag.saturating_add(index as u16)).unwrap_or_default();
        let tlp = Tlp::mem_read(
            self.cfg.requester,
            tag,
            s.address,
            s.length,
            s.first_be,
            s.last_be,
        );
        let Ok(n) = tlp.emit(buf) else {
            self.state = DmaState::Failed(DmaError::Buffer {
                need: tlp.buffer_len(),
                have: buf.len(),
            });
            return None;
        };
        if let Some(slot) = self.slots.get_mut(index) {
            *slot = Slot {
                busy: true,
                offset: self.issued,
                len,
                got: 0,
            };
        }
        self.issued += len;
        Some(n)
    }

    /// The slot an outstanding request with this tag has.
    fn slot_of(&self, tag: Tag) -> Option<usize> {
        let index = usize::from(tag.get().checked_sub(self.cfg.first_tag)?);
        self.slots.get(index).filter(|s| s.busy).map(|_| index)
    }

    /// Offers a received TLP; returns whether it belonged to this read (a
    /// completion for this requester with one of its outstanding tags) and
    /// was consumed. Its data go to `data`, which holds the whole transfer
    /// ([`DmaRead::len`] bytes). Nothing is consumed once the read is over.
    pub fn receive(&mut self, tlp: &Tlp<'_>, data: &mut [u8]) -> bool {
        if self.state != DmaState::InProgress {
            return false;
        }
        let Kind::Completion(c) = &tlp.kind else {
            return false;
        };
        if c.requester != self.cfg.requester {
            return false;
        }
        let Some(index) = self.slot_of(c.tag) else {
            return false;
        };
        if let Err(e) = self.complete(index, c, tlp, data) {
            self.state = DmaState::Failed(e);
        } else if self.received >= self.len {
            self.state = DmaState::Done;
        }
        true
    }

    fn complete(
        &mut self,
        index: usize,
        c: &Completion,
        tlp: &Tlp<'_>,
        data: &mut [u8],
    ) -> Result<(), DmaError> {
        let fault = |fault| DmaError::BadCompletion { tag: c.tag, fault };
        if c.status != CompletionStatus::Success {
            return Err(DmaError::Completion { status: c.status });
        }
        if tlp.ep {
            return Err(fault(CplFault::Poisoned));
        }
        if tlp.payload.is_empty() {
            return Err(fault(CplFault::NoData));
        }
        let slot = self
            .slots
            .get(index)
            .copied()
            .ok_or(fault(CplFault::NoData))?;
        // A busy slot has `got < len`; its bytes lie within the transfer.
        let due = slot.len - slot.got;
        if c.bcm || usize::from(c.byte_count) != due {
            return Err(fault(CplFault::ByteCount));
        }
        let at_offset = slot.offset + slot.got;
        let at = self.addr + at_offset as u64;
        if c.lower_address != (at & 0x7f) as u8 {
            return Err(fault(CplFault::LowerAddress));
        }
        let head = (at & 3) as usize;
        let carried = tlp
            .payload
            .len()
            .checked_sub(head)
            .ok_or(fault(CplFault::Length))?;
        let n = carried.min(due);
        let exact = if n < due {
            (at + n as u64) % RCB == 0
        } else {
            tlp.payload.len() == (head + n).div_ceil(4) * 4
        };
        if !exact {
            return Err(fault(CplFault::Length));
        }
        let have = data.len();
        let dst = data
            .get_mut(at_offset..at_offset + n)
            .ok_or(DmaError::Buffer {
                need: self.len,
                have,
            })?;
        let src = tlp
            .payload
            .get(head..head + n)
            .ok_or(fault(CplFault::Length))?;
        dst.copy_from_slice(src);
        if let Some(s) = self.slots.get_mut(index) {
            s.got += n;
            if s.got >= s.len {
                s.busy = false;
                self.received += s.len;
            }
        }
        Ok(())
    }

    /// Gives up: a read still in progress fails with
    /// [`DmaError::Timeout`]. The caller calls it when its completion
    /// timer (PCIe suggests 50 µs to 50 ms; over Ethernet, more) runs out
    /// without progress.
    pub fn timeout(&mut self) {
        if self.state == DmaState::InProgress {
            self.state = DmaState::Failed(DmaError::Timeout);
        }
    }
}

/// One MWr of a [`DmaWrite`]: `len` bytes from offset `offset` of the
/// data, to host address `address`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WriteChunk {
    /// The Requester ID.
    pub requester: Bdf,
    /// Offset in the data of the first byte.
    pub offset: usize,
    /// Host bus address of the first byte (any alignment).
    pub address: u64,
    /// Bytes, 1 to the Max_Payload_Size; within one 4 KiB page.
    pub len: usize,
}

impl WriteChunk {
    /// The length [`WriteChunk::emit`] writes.
    pub fn tlp_len(&self) -> usize {
        let s = span(self.address, self.len);
        let header = if s.address > u64::from(u32::MAX) {
            tlp::HEADER_4DW
        } else {
            tlp::HEADER_3DW
        };
        header + usize::from(s.length) * 4
    }

    /// Writes the MWr into `buf` and returns its length. `data` is the
    /// whole transfer; the bytes of padding around an unaligned start or
    /// end are sent as zeros with their byte enables clear.
    ///
    /// # Errors
    ///
    /// [`DmaError::Buffer`] if `data` is shorter than the chunk's end or
    /// `buf` shorter than [`WriteChunk::tlp_len`].
    pub fn emit(&self, data: &[u8], buf: &mut [u8]) -> Result<usize, DmaError> {
        let end = self.offset.saturating_add(self.len);
        let src = data.get(self.offset..end).ok_or(DmaError::Buffer {
            need: end,
            have: data.len(),
        })?;
        let s = span(self.address, self.len);
        let payload_len = usize::from(s.length) * 4;
        let zeros = ZEROS
            .get(..payload_len)
            .ok_or(DmaError::Length { len: self.len })?;
        let tlp = Tlp::mem_write(self.requester, s.address, s.first_be, s.last_be, zeros);
        let have = buf.len();
        let n = tlp.emit(buf).map_err(|_| DmaError::Buffer {
            need: tlp.buffer_len(),
            have,
        })?;
        let at = n - payload_len + s.head;
        let dst = buf
            .get_mut(at..at + self.len)
            .ok_or(DmaError::Buffer { need: n, have })?;
        dst.copy_from_slice(src);
        Ok(n)
    }
}

/// An upstream write of `len` bytes at host bus address `addr`, as MWr
/// requests of at most [`DmaConfig::max_payload`] bytes that never cross a
/// 4 KiB boundary. Writes are posted: nothing comes back, so once the last
/// MWr is sent the write is done.
///
/// Iterate it for the [`WriteChunk`]s, or call [`DmaWrite::next_tlp`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DmaWrite {
    requester: Bdf,
    addr: u64,
    len: usize,
    max_payload: usize,
    done: usize,
}

impl DmaWrite {
    /// A write of `len` bytes (1 to [`MAX_DMA_LEN`]) at `addr`.
    ///
    /// # Errors
    ///
    /// [`DmaError::Config`], [`DmaError::Length`],
    /// [`DmaError::AddressOverflow`].
    pub fn new(cfg: &DmaConfig, addr: u64, len: usize) -> Result<DmaWrite, DmaError> {
        cfg.check()?;
        check_transfer(addr, len)?;
        Ok(DmaWrite {
            requester: cfg.requester,
            addr,
            len,
            max_payload: cfg.max_payload,
            done: 0,
        })
    }

    /// Bytes not yet handed out.
    pub fn remaining(&self) -> usize {
        self.len - self.done
    }

    /// Writes the next MWr for `data` (the whole transfer) into `buf` and
    /// returns its length; `None` when every byte is sent. A chunk that
    /// cannot be emitted is skipped after reporting the error, so the
    /// caller decides whether to go on.
    pub fn next_tlp(&mut self, data: &[u8], buf: &mut [u8]) -> Option<Result<usize, DmaError>> {
        let chunk = self.next()?;
        Some(chunk.emit(data, buf))
    }
}

impl Iterator for DmaWrite {
    type Item = WriteChunk;

    fn next(&mut self) -> Option<WriteChunk> {
        if self.done >= self.len {
            return None;
        }
        // `done` is below `len`, and `addr + len` fits (checked by new).
        let address = self.addr + self.done as u64;
        let len = chunk_len(address, self.max_payload, self.len - self.done);
        let chunk = WriteChunk {
            requester: self.requester,
            offset: self.done,
            address,
            len,
        };
        self.done += len;
        Some(chunk)
    }
}

/// An MSI-X message to send: the MWr of `data` to `address`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MsixMessage {
    /// The vector.
    pub vector: u16,
    /// The Message Address (DW aligned).
    pub address: u64,
    /// The Message Data.
    pub data: u32,
}

impl MsixMessage {
    /// Writes the MWr (one double word, little-endian) from `requester`
    /// into `buf` ([`MSIX_TLP_LEN`] bytes are enough).
    ///
    /// # Errors
    ///
    /// [`tlp::Error::BufferTooSmall`].
    pub fn emit(&self, requester: Bdf, buf: &mut [u8]) -> Result<usize, tlp::Error> {
        let data = self.data.to_le_bytes();
        Tlp::mem_write(requester, self.address, 0xf, 0, &data).emit(buf)
    }
}

/// Why [`msix_message`] sends nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MsixRefusal {
    /// MSI-X Enable is clear: the function may not raise MSI-X at all.
    Disabled,
    /// Function Mask or the vector's Mask bit is set: the vector's pending
    /// bit is now set, and the message goes out once unmasked
    /// ([`msix_take_pending`]).
    Masked,
    /// No such vector in the table.
    OutOfRange,
}

impl fmt::Display for MsixRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MsixRefusal::Disabled => "MSI-X disabled",
            MsixRefusal::Masked => "vector masked, pending",
            MsixRefusal::OutOfRange => "no such MSI-X vector",
        })
    }
}

fn le32(bytes: &[u8], at: usize) -> u32 {
    at.checked_add(4)
        .and_then(|end| bytes.get(at..end))
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .map_or(0, u32::from_le_bytes)
}

/// How many vectors there are: the smaller of the table's entries and the
/// Table Size in MSI-X Message Control.
fn vectors(table: &[u8], control: u16) -> usize {
    (table.len() / MSIX_ENTRY_LEN).min(usize::from(control & 0x7ff) + 1)
}

/// The entry of `vector`: (message, masked).
fn entry(table: &[u8], vector: u16) -> (MsixMessage, bool) {
    let at = usize::from(vector) * MSIX_ENTRY_LEN;
    let low = u64::from(le32(table, at) & !3);
    let high = u64::from(le32(table, at + 4));
    let message = MsixMessage {
        vector,
        address: (high << 32) | low,
        data: le32(table, at + 8),
    };
    (message, le32(table, at + 12) & MSIX_VECTOR_MASKED != 0)
}

fn set_pending(pba: &mut [u8], vector: u16, pending: bool) {
    if let Some(byte) = pba.get_mut(usize::from(vector / 8)) {
        let bit = 1u8 << (vector % 8);
        if pending {
            *byte |= bit;
        } else {
            *byte &= !bit;
        }
    }
}

fn is_pending(pba: &[u8], vector: u16) -> bool {
    pba.get(usize::from(vector / 8))
        .is_some_and(|b| b & (1 << (vector % 8)) != 0)
}

/// Raises MSI-X `vector` of a function whose MSI-X table (16 bytes per
/// entry, little-endian, as the host wrote it) is `table`, whose Pending
/// Bit Array is `pba`, and whose MSI-X Message Control reads `control`:
/// the message to send, or why there is none. A masked vector (Function
/// Mask or its own Mask bit) gets its pending bit set instead.
///
/// The caller checks Bus Master Enable: without it a function sends no
/// memory write, interrupts included.
///
/// # Errors
///
/// [`MsixRefusal`].
pub fn msix_message(
    table: &[u8],
    pba: &mut [u8],
    control: u16,
    vector: u16,
) -> Result<MsixMessage, MsixRefusal> {
    if usize::from(vector) >= vectors(table, control) {
        return Err(MsixRefusal::OutOfRange);
    }
    if control & MSIX_ENABLE == 0 {
        return Err(MsixRefusal::Disabled);
    }
    let (message, masked) = entry(table, vector);
    if masked || control & MSIX_FUNCTION_MASK != 0 {
        set_pending(pba, vector, true);
        return Err(MsixRefusal::Masked);
    }
    Ok(message)
}

/// The message of the lowest pending vector that may now be sent (MSI-X
/// enabled, function and vector unmasked), its pending bit cleared; `None`
/// if there is none. Call it after the host changes the table or Message
/// Control, that is whenever the function polls.
pub fn msix_take_pending(table: &[u8], pba: &mut [u8], control: u16) -> Option<MsixMessage> {
    if control & (MSIX_ENABLE | MSIX_FUNCTION_MASK) != MSIX_ENABLE {
        return None;
    }
    let count = vectors(table, control).min(pba.len().saturating_mul(8));
    let vector = (0..count as u16).find(|&v| is_pending(pba, v) && !entry(table, v).1)?;
    set_pending(pba, vector, false);
    Some(entry(table, vector).0)
}

/// Answers the memory read `req` (whose fields are `r`) with successful
/// CplDs from `completer`, as a completer must: payloads of at most `mps`
/// bytes (and what `buf` holds after a 3DW header) that end on Read
/// Completion Boundaries ([`RCB`]), with the Byte Count and Lower Address
/// each needs, in address order. `fill(offset, out)` writes the bytes of
/// the request at `offset` (from the request's first double word) into
/// `out`; each completion is written in `buf` and passed to `send`.
/// Returns how many were sent; `None` if `buf` cannot hold one (nothing
/// was sent then).
///
/// Both sides use it: a function answering a read of its BARs, and the
/// host answering a function's DMA read of its memory.
pub fn complete_read(
    req: &Tlp<'_>,
    r: &MemRequest,
    completer: Bdf,
    mps: usize,
    buf: &mut [u8],
    mut fill: impl FnMut(u64, &mut [u8]),
    send: &mut impl FnMut(&[u8]),
) -> Option<usize> {
    let room = buf.len().saturating_sub(tlp::HEADER_3DW);
    let limit = (room.min(mps) as u64) & !(RCB - 1);
    if limit == 0 {
        return None;
    }
    let start = r.address;
    let end = start + u64::from(r.length) * 4;
    let first_byte = start + u64::from(tlp::lower_address(r.address, r.first_be) & 3);
    let last_end = first_byte + u64::from(tlp::byte_count(r.length, r.first_be, r.last_be));
    let mut at = start;
    let mut sent = 0;
    while at < end {
        let chunk_end = ((at + limit) & !(RCB - 1)).min(end);
        let from = at.max(first_byte);
        let byte_count = (last_end.saturating_sub(from)).clamp(1, 4096) as u16;
        let lower = (from & 0x7f) as u8;
        let len = (chunk_end - at) as usize;
        let zeros = ZEROS.get(..len)?;
        let mut cpl = Tlp::completion(
            completer,
            CompletionStatus::Success,
            r.requester,
            r.tag,
            byte_count,
            lower,
            zeros,
        );
        cpl.tc = req.tc;
        cpl.attr = req.attr;
        let n = cpl.emit(buf).ok()?;
        let out = buf.get_mut(n.checked_sub(len)?..n)?;
        fill(at - start, out);
        send(buf.get(..n).unwrap_or(&[]));
        sent += 1;
        at = chunk_end;
    }
    Some(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans() {
        let s = span(0x1001, 2);
        assert_eq!(
            (s.address, s.length, s.first_be, s.last_be),
            (0x1000, 1, 0b0110, 0)
        );
        let s = span(0x1003, 2);
        assert_eq!(
            (s.address, s.length, s.first_be, s.last_be),
            (0x1000, 2, 0b1000, 0b0001)
        );
        let s = span(0x1000, 4096);
        assert_eq!((s.length, s.first_be, s.last_be), (1024, 0xf, 0xf));
        assert_eq!(chunk_len(0x1004, 512, 10_000), 508);
        assert_eq!(chunk_len(0xffc, 4096, 10_000), 4);
    }

    #[test]
    fn config_checks() {
        let mut cfg = DmaConfig::new(Bdf::default());
        assert_eq!(cfg.check(), Ok(()));
        cfg.first_tag = 225;
        assert_eq!(cfg.check(), Err(DmaError::Config));
        cfg.ten_bit_tags = true;
        assert_eq!(cfg.check(), Ok(()));
        cfg.first_tag = Tag::MAX - TAGS as u16 + 2;
        assert_eq!(cfg.check(), Err(DmaError::Config));
        cfg.ten_bit_tags = false;
        cfg.first_tag = 224;
        cfg.max_payload = 192;
        assert_eq!(cfg.check(), Err(DmaError::Config));
        assert_eq!(devctl_size(7), 4096);
    }
}
