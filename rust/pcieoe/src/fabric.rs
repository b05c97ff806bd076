// SPDX-License-Identifier: GPL-2.0

//! pcieoe's own fabric messages, and the host-side fetch of a remote
//! function's configuration space.
//!
//! The host interface (HI) shows remote functions on a virtual root bus.
//! Linux calls the bus's configuration accessors in atomic context, where
//! nothing can wait for Ethernet, so the HI answers them from a *shadow*
//! [`ConfigSpace`] per function. A [`Fetch`] fills the shadow: the data with
//! ordinary CfgRd0 requests, the write masks (which no PCIe request can read)
//! with a [`Msg::Describe`] answered by [`Msg::Masks`] chunks. From then on
//! the HI applies each host configuration write to the shadow with
//! [`ConfigSpace::write`] and also sends it as a CfgWr0; the device
//! interface (DI) applies the same write to its copy with the same masks, so
//! the two copies stay identical.
//!
//! # Wire format
//!
//! Every message is a PCIe Vendor_Defined Type 1 message (MsgD or Msg,
//! routed by ID, so receivers that do not know it drop it silently) with
//! Vendor ID [`VENDOR_ID`]. The four vendor-defined header bytes (12 to 15,
//! big-endian) say what it is:
//!
//! | Bits  | Field                                                  |
//! |-------|--------------------------------------------------------|
//! | 31:24 | message kind: 1 Presence, 2 Describe, 3 Masks, 4 NoDevice |
//! | 23:16 | device number, 0 to 31 (0 for Presence)               |
//! | 15    | Masks: last chunk                                      |
//! | 14:12 | reserved, 0                                            |
//! | 11:0  | Masks: byte offset in configuration space (DW aligned) |
//!
//! Presence carries the device bitmap as one little-endian double word;
//! Masks carries its read-write mask bytes followed by as many RW1C mask
//! bytes. Every other bit is reserved and must be zero: [`Msg::parse`]
//! refuses what [`Msg::emit`] would not write.

use core::fmt;

use super::cfgspace::{ConfigSpace, SIZE};
use super::tlp::{self, Bdf, CompletionStatus, Kind, MessageCode, Routing, Tag, Tlp, VendorType};

/// The Vendor ID of pcieoe's Vendor_Defined messages.
///
/// 0xe0e0 (in neither pci.ids nor udev's hwdb) is **not** assigned to pcieoe by the PCI-SIG.
/// It only appears inside a pcieoe fabric, between a host interface and a
/// device interface, where no other vendor's messages travel; a receiver
/// outside it discards Vendor_Defined Type 1 messages it does not know.
pub const VENDOR_ID: u16 = 0xe0e0;

/// How many device numbers a host's virtual root bus has.
pub const DEVICES: usize = 32;

/// How many bytes of each mask one [`Msg::Masks`] carries at most: with the
/// RW1C mask that makes 256 bytes of payload, the smallest Max_Payload_Size
/// above 128 that every pcieoe link carries.
pub const MASK_CHUNK: usize = 128;

/// How many [`Msg::Masks`] messages describe a whole configuration space.
pub const MASK_CHUNKS: usize = SIZE / MASK_CHUNK;

/// The longest TLP [`Msg::emit`] writes: a 4DW header and a full Masks
/// payload.
pub const MAX_MSG_LEN: usize = tlp::HEADER_4DW + 2 * MASK_CHUNK;

const KIND_PRESENCE: u8 = 1;
const KIND_DESCRIBE: u8 = 2;
const KIND_MASKS: u8 = 3;
const KIND_NO_DEVICE: u8 = 4;
const FLAG_LAST: u32 = 1 << 15;
const OFFSET_MASK: u32 = 0xfff;

/// Why a pcieoe message cannot be emitted or parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Error {
    /// A message kind this version does not know.
    Kind {
        /// The kind byte.
        kind: u8,
    },
    /// A Vendor_Defined Type 0 message, or one not routed by ID.
    Header,
    /// A device number of 32 or more.
    Device {
        /// The device number.
        dev: u8,
    },
    /// Masks at an offset that is not DW aligned or that run past 4 KiB.
    Range {
        /// The byte offset.
        offset: u16,
        /// The mask length in bytes.
        len: usize,
    },
    /// A payload of the wrong length for the kind: Presence not 4 bytes,
    /// Masks not two equal masks of 4 to [`MASK_CHUNK`] bytes in whole
    /// double words, Describe or NoDevice not empty.
    Length {
        /// The payload length in bytes.
        len: usize,
    },
    /// Reserved vendor-data bits set, or bits that the kind does not use.
    Reserved {
        /// The vendor-defined data word.
        data: u32,
    },
    /// The TLP codec refused the message (a buffer too small).
    Tlp(tlp::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::Kind { kind } => write!(f, "unknown pcieoe message kind {kind}"),
            Error::Header => f.write_str("pcieoe message not a Type 1 VDM routed by ID"),
            Error::Device { dev } => write!(f, "device number {dev} out of range"),
            Error::Range { offset, len } => {
                write!(f, "masks of {len} bytes at {offset:#x} out of range")
            }
            Error::Length { len } => write!(f, "pcieoe message payload of {len} bytes"),
            Error::Reserved { data } => write!(f, "reserved bits set in {data:#010x}"),
            Error::Tlp(e) => write!(f, "TLP: {e}"),
        }
    }
}

impl From<tlp::Error> for Error {
    fn from(e: tlp::Error) -> Error {
        Error::Tlp(e)
    }
}

/// One pcieoe message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Msg<'a> {
    /// DI to host: which device numbers the host has (bit n: device n).
    /// Sent when the link opens and whenever the set changes.
    Presence {
        /// The device bitmap.
        devices: u32,
    },
    /// Host to DI: send the write masks of device `dev`.
    Describe {
        /// The device number.
        dev: u8,
    },
    /// DI to host: one chunk of device `dev`'s write masks, answering
    /// [`Msg::Describe`]; the chunks come in order from offset 0 and the
    /// one reaching 4 KiB has `last` set.
    Masks {
        /// The device number.
        dev: u8,
        /// The byte offset of the first mask byte.
        offset: u16,
        /// The read-write mask bytes.
        writable: &'a [u8],
        /// The RW1C mask bytes, as many as `writable`.
        w1c: &'a [u8],
        /// The last chunk.
        last: bool,
    },
    /// DI to host: the answer to [`Msg::Describe`] for a device number the
    /// host does not have.
    NoDevice {
        /// The device number.
        dev: u8,
    },
}

fn check_dev(dev: u8) -> Result<(), Error> {
    if usize::from(dev) >= DEVICES {
        return Err(Error::Device { dev });
    }
    Ok(())
}

fn check_masks(offset: u16, len: usize) -> Result<(), Error> {
    if len == 0 || len > MASK_CHUNK || len % 4 != 0 {
        return Err(Error::Length { len: 2 * len });
    }
    let end = usize::from(offset) + len;
    if offset % 4 != 0 || end > SIZE {
        return Err(Error::Range { offset, len });
    }
    Ok(())
}

/// The vendor-data word of a message with this kind and device number.
fn data_word(kind: u8, dev: u8) -> u32 {
    (u32::from(kind) << 24) | (u32::from(dev) << 16)
}

impl<'a> Msg<'a> {
    /// The Destination ID the message is routed to: function 0 of the
    /// device it is about on bus 0, 00:00.0 for Presence. A pcieoe link is
    /// point to point, so receivers go by the message, not by this ID.
    pub fn target(&self) -> Bdf {
        let dev = match *self {
            Msg::Presence { .. } => 0,
            Msg::Describe { dev } | Msg::NoDevice { dev } | Msg::Masks { dev, .. } => dev,
        };
        Bdf::new(0, dev, 0).unwrap_or_default()
    }

    /// Writes the message into `buf` as a Vendor_Defined Type 1 message
    /// from `requester`, routed by ID to [`Msg::target`], and returns its
    /// length (at most [`MAX_MSG_LEN`]).
    ///
    /// # Errors
    ///
    /// [`Error::Device`], [`Error::Length`] (Masks of unequal or bad
    /// lengths), [`Error::Range`], and [`Error::Tlp`] if `buf` is too small.
    pub fn emit(&self, requester: Bdf, buf: &mut [u8]) -> Result<usize, Error> {
        let presence;
        let mut joined = [0u8; 2 * MASK_CHUNK];
        let (data, payload): (u32, &[u8]) = match *self {
            Msg::Presence { devices } => {
                presence = devices.to_le_bytes();
                (data_word(KIND_PRESENCE, 0), &presence)
            }
            Msg::Describe { dev } => {
                check_dev(dev)?;
                (data_word(KIND_DESCRIBE, dev), &[])
            }
            Msg::NoDevice { dev } => {
                check_dev(dev)?;
                (data_word(KIND_NO_DEVICE, dev), &[])
            }
            Msg::Masks {
                dev,
                offset,
                writable,
                w1c,
                last,
            } => {
                check_dev(dev)?;
                let len = writable.len();
                if w1c.len() != len {
                    return Err(Error::Length {
                        len: len + w1c.len(),
                    });
                }
                check_masks(offset, len)?;
                let out = joined.get_mut(..2 * len).ok_or(Error::Length { len })?;
                let (rw, c) = out.split_at_mut(len);
                rw.copy_from_slice(writable);
                c.copy_from_slice(w1c);
                let flags = if last { FLAG_LAST } else { 0 };
                let data = data_word(KIND_MASKS, dev) | flags | u32::from(offset);
                (data, &*out)
            }
        };
        let tlp = Tlp::vendor_defined(
            requester,
            VendorType::Type1,
            Routing::ById,
            self.target(),
            VENDOR_ID,
            data,
            payload,
        );
        Ok(tlp.emit(buf)?)
    }

    /// Recognises and parses a pcieoe message.
    ///
    /// `None` if the TLP is not one (not a Vendor_Defined message, or
    /// another vendor's); `Some(Err(_))` if it carries pcieoe's Vendor ID
    /// but is malformed.
    pub fn parse(tlp: &Tlp<'a>) -> Option<Result<Msg<'a>, Error>> {
        let Kind::Message(m) = &tlp.kind else {
            return None;
        };
        if !m.code.is_vendor_defined() || m.vendor_id() != VENDOR_ID {
            return None;
        }
        if m.code != MessageCode::VendorDefinedType1 || m.routing != Routing::ById {
            return Some(Err(Error::Header));
        }
        Some(Msg::parse_body(m.vendor_data(), tlp.payload))
    }

    fn parse_body(data: u32, payload: &'a [u8]) -> Result<Msg<'a>, Error> {
        let kind = (data >> 24) as u8;
        let dev = (data >> 16) as u8;
        let low = data & 0xffff;
        let len = payload.len();
        let unused = |used: u32| {
            if low & !used != 0 {
                Err(Error::Reserved { data })
            } else {
                Ok(())
            }
        };
        match kind {
            KIND_PRESENCE => {
                unused(0)?;
                if dev != 0 {
                    return Err(Error::Reserved { data });
                }
                let bytes: [u8; 4] = payload.try_into().map_err(|_| Error::Length { len })?;
                Ok(Msg::Presence {
                    devices: u32::from_le_bytes(bytes),
                })
            }
            KIND_DESCRIBE | KIND_NO_DEVICE => {
                unused(0)?;
                check_dev(dev)?;
                if len != 0 {
                    return Err(Error::Length { len });
                }
                Ok(if kind == KIND_DESCRIBE {
                    Msg::Describe { dev }
                } else {
                    Msg::NoDevice { dev }
                })
            }
            KIND_MASKS => {
                unused(FLAG_LAST | OFFSET_MASK)?;
                check_dev(dev)?;
                if len % 8 != 0 {
                    return Err(Error::Length { len });
                }
                let offset = (low & OFFSET_MASK) as u16;
                check_masks(offset, len / 2)?;
                let (writable, w1c) = payload.split_at(len / 2);
                Ok(Msg::Masks {
                    dev,
                    offset,
                    writable,
                    w1c,
                    last: low & FLAG_LAST != 0,
                })
            }
            _ => Err(Error::Kind { kind }),
        }
    }
}

/// Why a [`Fetch`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FetchError {
    /// A configuration read after the first failed with this status.
    Completion {
        /// The register (double-word number).
        register: u16,
        /// The completion status.
        status: CompletionStatus,
    },
    /// A successful completion without its double word of data.
    NoData {
        /// The register (double-word number).
        register: u16,
    },
    /// A Masks chunk out of order, or a last chunk short of 4 KiB.
    MaskOrder {
        /// The chunk's offset.
        offset: u16,
    },
    /// The request buffer was too small for a request.
    Buffer,
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FetchError::Completion { register, status } => {
                write!(f, "config read of register {register} failed: {status}")
            }
            FetchError::NoData { register } => {
                write!(f, "config read of register {register} returned no data")
            }
            FetchError::MaskOrder { offset } => {
                write!(f, "masks chunk at {offset:#x} out of order")
            }
            FetchError::Buffer => f.write_str("request buffer too small"),
        }
    }
}

/// Where a [`Fetch`] stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FetchState {
    /// Requests or answers are still due.
    InProgress,
    /// The shadow holds the whole configuration space and its masks.
    Done,
    /// No function there: register 0 (Vendor/Device ID) completed with an
    /// error status (UR, CRS...), or the DI answered [`Msg::NoDevice`].
    Absent,
    /// The fetch failed; the shadow is incomplete.
    Failed(FetchError),
}

/// Registers in a configuration space.
const REGISTERS: u16 = (SIZE / 4) as u16;
/// Tags the fetch uses: 0 to 127.
const TAGS: u16 = 128;

/// The host-side fetch of one device's configuration space into a shadow.
///
/// First a [`Msg::Describe`] asks for the write masks, then CfgRd0 requests
/// read registers 0 to 1023 of function 0 of device `dev` on bus 0, at most
/// [`Fetch::WINDOW`] at a time. Completions fill the shadow with
/// [`ConfigSpace::write_hw`] and Masks chunks with
/// [`ConfigSpace::set_raw_masks`]; every data and mask byte of the shadow is
/// overwritten, so it need not be reset first. Only the bytes travel: the
/// shadow's layout bookkeeping ([`ConfigSpace::bars`] and the like) stays
/// as it was; [`ConfigSpace::read`], [`ConfigSpace::write`] and the
/// capability walks work.
///
/// # Tags
///
/// Requests use 8-bit tags 0 to 127, register number modulo 128; tags 128
/// to 255 belong to the host's other requests (configuration writes,
/// round-trip probes). Outstanding registers always lie within
/// [`Fetch::WINDOW`] of the oldest one not completed, so a tag names one
/// register. Completions are matched by requester ID and tag only: run one
/// fetch at a time per requester ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetch {
    dev: u8,
    requester: Bdf,
    described: bool,
    /// The next register to request (1024 when all are requested).
    next: u16,
    /// The oldest register not completed (1024 when all are).
    low: u16,
    /// Completed registers, one bit each.
    done: [u32; REGISTERS as usize / 32],
    /// The offset the next Masks chunk must have.
    mask_next: u16,
    masks_done: bool,
    state: FetchState,
}

impl Fetch {
    /// How many configuration reads are outstanding at most.
    pub const WINDOW: usize = 32;

    /// The buffer length [`Fetch::next_request`] needs.
    pub const REQUEST_LEN: usize = tlp::HEADER_4DW;

    /// A fetch of device `dev` (0 to 31) by `requester`, the host's ID.
    /// A device number of 32 or more fails at once.
    pub fn new(dev: u8, requester: Bdf) -> Fetch {
        let state = if usize::from(dev) < DEVICES {
            FetchState::InProgress
        } else {
            FetchState::Absent
        };
        Fetch {
            dev,
            requester,
            described: false,
            next: 0,
            low: 0,
            done: [0; REGISTERS as usize / 32],
            mask_next: 0,
            masks_done: false,
            state,
        }
    }

    /// The device number fetched.
    pub fn dev(&self) -> u8 {
        self.dev
    }

    /// Where the fetch stands.
    pub fn state(&self) -> FetchState {
        self.state
    }

    /// The function the fetch reads: device `dev`, function 0, bus 0.
    fn target(&self) -> Bdf {
        Bdf::new(0, self.dev, 0).unwrap_or_default()
    }

    /// Writes the next TLP to send now into `buf` (at least
    /// [`Fetch::REQUEST_LEN`] bytes) and returns its length: first the
    /// Describe message, then the configuration reads as the window allows.
    /// `None` when nothing is due until an answer arrives, or the fetch is
    /// over.
    pub fn next_request(&mut self, buf: &mut [u8]) -> Option<usize> {
        if self.state != FetchState::InProgress {
            return None;
        }
        let emitted = if !self.described {
            let msg = Msg::Describe { dev: self.dev };
            let n = msg.emit(self.requester, buf).ok();
            self.described = n.is_some();
            n
        } else if self.next < REGISTERS
            && usize::from(self.next.saturating_sub(self.low)) < Fetch::WINDOW
        {
            let reg = self.next;
            let tag = Tag::from((reg % TAGS) as u8);
            let tlp = Tlp::cfg_read(self.requester, tag, self.target(), reg, 0xf);
            let n = tlp.emit(buf).ok();
            if n.is_some() {
                self.next += 1;
            }
            n
        } else {
            return None;
        };
        if emitted.is_none() {
            self.state = FetchState::Failed(FetchError::Buffer);
        }
        emitted
    }

    fn is_done(&self, reg: u16) -> bool {
        let word = self.done.get(usize::from(reg / 32)).copied().unwrap_or(0);
        word & (1 << (reg % 32)) != 0
    }

    fn mark_done(&mut self, reg: u16) {
        if let Some(word) = self.done.get_mut(usize::from(reg / 32)) {
            *word |= 1 << (reg % 32);
        }
        while self.low < self.next && self.is_done(self.low) {
            self.low += 1;
        }
    }

    /// The outstanding register a tag belongs to, if any.
    fn register_for(&self, tag: Tag) -> Option<u16> {
        let tag = tag.get();
        if tag >= TAGS {
            return None;
        }
        // Outstanding registers lie in low..low + WINDOW, and WINDOW is
        // below TAGS, so one of them at most has this tag.
        let reg = self.low + (tag + TAGS - self.low % TAGS) % TAGS;
        (reg < self.next && !self.is_done(reg)).then_some(reg)
    }

    /// Offers a received TLP; returns whether it belonged to this fetch
    /// (and was consumed). Completions for another requester or tag, and
    /// messages about other devices, are not; nor is anything once the
    /// fetch is over (answers still in flight then are the caller's to
    /// drop).
    pub fn receive(&mut self, tlp: &Tlp<'_>, cs: &mut ConfigSpace) -> bool {
        if self.state != FetchState::InProgress {
            return false;
        }
        let taken = match &tlp.kind {
            Kind::Completion(c) if c.requester == self.requester => {
                match self.register_for(c.tag) {
                    Some(reg) => {
                        self.complete(reg, c.status, tlp.payload, cs);
                        true
                    }
                    None => false,
                }
            }
            Kind::Message(_) => match Msg::parse(tlp) {
                Some(Ok(msg)) => self.message(&msg, cs),
                _ => false,
            },
            _ => false,
        };
        if self.state == FetchState::InProgress && self.low == REGISTERS && self.masks_done {
            self.state = FetchState::Done;
        }
        taken
    }

    fn complete(
        &mut self,
        reg: u16,
        status: CompletionStatus,
        payload: &[u8],
        cs: &mut ConfigSpace,
    ) {
        if status != CompletionStatus::Success {
            self.state = if reg == 0 {
                FetchState::Absent
            } else {
                FetchState::Failed(FetchError::Completion {
                    register: reg,
                    status,
                })
            };
            return;
        }
        let Some(bytes) = payload.get(..4).and_then(|b| <[u8; 4]>::try_from(b).ok()) else {
            self.state = FetchState::Failed(FetchError::NoData { register: reg });
            return;
        };
        // `reg` is below 1024, so the access is in range.
        let _ = cs.write_hw(reg * 4, 4, u32::from_le_bytes(bytes));
        self.mark_done(reg);
    }

    fn message(&mut self, msg: &Msg<'_>, cs: &mut ConfigSpace) -> bool {
        match *msg {
            Msg::NoDevice { dev } if dev == self.dev => {
                self.state = FetchState::Absent;
                true
            }
            Msg::Masks {
                dev,
                offset,
                writable,
                w1c,
                last,
            } if dev == self.dev => {
                let end = usize::from(offset) + writable.len();
                if offset != self.mask_next
                    || self.masks_done
                    || last != (end == SIZE)
                    || cs.set_raw_masks(offset, writable, w1c).is_err()
                {
                    self.state = FetchState::Failed(FetchError::MaskOrder { offset });
                    return true;
                }
                // `end` is at most 4096 (checked by the parser).
                self.mask_next = end as u16;
                self.masks_done = last;
                true
            }
            _ => false,
        }
    }
}
