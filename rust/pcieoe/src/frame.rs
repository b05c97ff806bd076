// SPDX-License-Identifier: GPL-2.0

//! The PCIeoE frame: an 802.1Q-tagged Ethernet frame carrying a PCIeoE
//! header and one or more length-prefixed TLPs.
//!
//! The byte layout is documented in `Documentation/frame.rst`. In short
//! (all fields big-endian):
//!
//! ```text
//!  0  dst MAC (6)  src MAC (6)  TPID 0x8100 (2)  TCI (2)  Ethertype (2)
//! 18  PCIeoE header (36): version, kind, flags, epoch, seq, ack, nak,
//!     six credit limits, item count, item bytes
//! 54  items: { length (2), bytes (length) } * count, then padding
//! ```
//!
//! Data frames carry TLPs as items; session frames carry one item, their
//! body. The frame layer never decodes a TLP, so it does not depend on the
//! TLP codec. Frames are padded to the 60-byte Ethernet minimum; the header
//! says how many item bytes follow, so a receiver ignores the padding.
//!
//! Untrusted bytes are only parsed through [`Frame::new_checked`] or
//! [`Pdu::new_checked`], which validate every length once; accessors cannot
//! panic afterwards.

use core::fmt;

use super::credit::{Advert, Credits};
use super::ethertype::EtherType;

/// The PCIeoE protocol version this engine speaks.
pub const VERSION: u8 = 1;

/// Ethernet header length without a tag.
pub const ETH_HEADER_LEN: usize = 14;
/// The 802.1Q tag length.
pub const VLAN_TAG_LEN: usize = 4;
/// The 802.1Q Tag Protocol Identifier.
pub const TPID_8021Q: u16 = 0x8100;
/// Length of the PCIeoE header that follows the Ethertype.
pub const HEADER_LEN: usize = 36;
/// Length of the per-item length prefix.
pub const ITEM_PREFIX_LEN: usize = 2;
/// Minimum Ethernet frame length without FCS; shorter frames are padded.
pub const ETH_MIN_FRAME: usize = 60;
/// The most items (TLPs) one frame may carry.
pub const MAX_ITEMS: u16 = 64;
/// The smallest link MTU accepted (bytes after the Ethertype).
pub const MIN_MTU: usize = 256;
/// The largest link MTU accepted (jumbo frames).
pub const MAX_MTU: usize = 9000;
/// The usual Ethernet MTU.
pub const DEFAULT_MTU: usize = 1500;
/// Room the Ethernet and 802.1Q headers take in front of the MTU.
pub const L2_OVERHEAD: usize = ETH_HEADER_LEN + VLAN_TAG_LEN;
/// The largest frame this engine builds or accepts (bytes, no FCS).
pub const MAX_FRAME: usize = MAX_MTU + L2_OVERHEAD;

/// The 802.1Q priority (PCP) used for session and ACK-only frames, so that
/// heartbeats and acknowledgements are not queued behind bulk data. (PCP 7
/// is left to the network's own control traffic.)
pub const PCP_CONTROL: Pcp = Pcp(6);

/// Byte offsets inside the PCIeoE header.
mod field {
    use core::ops::Range;
    pub(super) const VERSION: usize = 0;
    pub(super) const KIND: usize = 1;
    pub(super) const FLAGS: Range<usize> = 2..4;
    pub(super) const EPOCH: Range<usize> = 4..8;
    pub(super) const SEQ: Range<usize> = 8..12;
    pub(super) const ACK: Range<usize> = 12..16;
    pub(super) const NAK: Range<usize> = 16..20;
    /// Six 16-bit credit limits: PH, PD, NPH, NPD, CPLH, CPLD.
    pub(super) const CREDITS: usize = 20;
    pub(super) const COUNT: Range<usize> = 32..34;
    pub(super) const ITEM_BYTES: Range<usize> = 34..36;
}

/// Header flag bits. Unknown bits must be sent as zero and are ignored.
pub mod flags {
    /// The `ack` field is valid: every sequence number before it was
    /// received.
    pub const ACK: u16 = 0x0001;
    /// The `nak` field is valid: the sender of this frame is missing that
    /// sequence number and asks for a replay from it.
    pub const NAK: u16 = 0x0002;
    /// The six credit fields carry cumulative limits.
    pub const CREDIT: u16 = 0x0004;
    /// Please answer with an ACK now (credit probe, retransmission).
    pub const PROBE: u16 = 0x0008;
    /// This data frame is a retransmission (informational).
    pub const REPLAY: u16 = 0x0010;
    /// On a Close: this is the reply to the peer's Close.
    pub const REPLY: u16 = 0x0020;
}

/// Why bytes are not a valid PCIeoE frame, or why one could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// Shorter than its headers, or the item area runs past the end.
    Truncated,
    /// Not our Ethertype (carries the one found).
    WrongEthertype(u16),
    /// A protocol version this engine does not speak.
    UnknownVersion(u8),
    /// A frame kind this engine does not know.
    UnknownKind(u8),
    /// More items than [`MAX_ITEMS`].
    TooManyItems(u16),
    /// An item length is zero, or the items do not fill exactly the item
    /// bytes the header announces.
    BadItemLength,
    /// A data frame without TLPs.
    EmptyData,
    /// (Building) the output buffer is too small for the frame.
    BufferTooSmall,
    /// (Building) an item larger than the MTU allows, or empty.
    ItemTooLarge,
    /// (Building) the frame is full (MTU or [`MAX_ITEMS`] reached).
    Full,
    /// (Building) an MTU outside [`MIN_MTU`]..=[`MAX_MTU`].
    BadMtu,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::Truncated => f.write_str("frame truncated"),
            Error::WrongEthertype(t) => write!(f, "Ethertype {t:#06x} is not PCIeoE"),
            Error::UnknownVersion(v) => write!(f, "unknown PCIeoE version {v}"),
            Error::UnknownKind(k) => write!(f, "unknown frame kind {k}"),
            Error::TooManyItems(n) => write!(f, "{n} items (max {MAX_ITEMS})"),
            Error::BadItemLength => f.write_str("item lengths do not match the header"),
            Error::EmptyData => f.write_str("data frame without TLPs"),
            Error::BufferTooSmall => f.write_str("output buffer too small"),
            Error::ItemTooLarge => f.write_str("item empty or larger than the MTU"),
            Error::Full => f.write_str("frame full"),
            Error::BadMtu => f.write_str("MTU out of range"),
        }
    }
}

/// The kind of a PCIeoE frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Sequenced TLPs.
    Data,
    /// ACK/NAK and credits only, unsequenced.
    Ack,
    /// Host looking for device interfaces (broadcast).
    Discovery,
    /// A device interface describing itself.
    Announce,
    /// Host asking to open a session.
    Open,
    /// Device interface accepting a session.
    OpenAck,
    /// Keep-alive.
    Heartbeat,
    /// Orderly close (or refusal of an unknown session).
    Close,
    /// Opaque management message for the layers above.
    Management,
    /// A value this engine does not know (never accepted by the parser).
    Unknown(u8),
}

impl From<u8> for Kind {
    fn from(v: u8) -> Kind {
        match v {
            1 => Kind::Data,
            2 => Kind::Ack,
            3 => Kind::Discovery,
            4 => Kind::Announce,
            5 => Kind::Open,
            6 => Kind::OpenAck,
            7 => Kind::Heartbeat,
            8 => Kind::Close,
            9 => Kind::Management,
            other => Kind::Unknown(other),
        }
    }
}

impl From<Kind> for u8 {
    fn from(k: Kind) -> u8 {
        match k {
            Kind::Data => 1,
            Kind::Ack => 2,
            Kind::Discovery => 3,
            Kind::Announce => 4,
            Kind::Open => 5,
            Kind::OpenAck => 6,
            Kind::Heartbeat => 7,
            Kind::Close => 8,
            Kind::Management => 9,
            Kind::Unknown(v) => v,
        }
    }
}

/// An 802.1Q Priority Code Point (0..=7).
///
/// # Invariants
///
/// The value is at most 7.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pcp(u8);

impl Pcp {
    /// A PCP, or `None` above 7.
    pub const fn new(v: u8) -> Option<Pcp> {
        if v <= 7 {
            // INVARIANT: checked.
            Some(Pcp(v))
        } else {
            None
        }
    }

    /// The value.
    pub const fn get(self) -> u8 {
        self.0
    }

    /// The PCP for a TLP traffic class (TC0..TC7; higher bits ignored).
    ///
    /// | TC  | PCP | 802.1Q traffic type |
    /// |-----|-----|---------------------|
    /// | 0   | 0   | best effort         |
    /// | 1   | 2   | excellent effort    |
    /// | 2   | 3   | critical applications |
    /// | 3   | 4   | video               |
    /// | 4-7 | 5   | voice               |
    ///
    /// PCP 1 (background) ranks below 0 in 802.1Q, so no TC maps to it;
    /// PCP 6 is [`PCP_CONTROL`] and 7 stays with network control.
    pub const fn from_tc(tc: u8) -> Pcp {
        // INVARIANT: every value is at most 7.
        Pcp(match tc & 7 {
            0 => 0,
            1 => 2,
            2 => 3,
            3 => 4,
            _ => 5,
        })
    }
}

/// An 802.1Q tag: priority and VLAN ID.
///
/// # Invariants
///
/// `vid` is at most 4094 (4095 is reserved).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Vlan {
    pcp: Pcp,
    vid: u16,
}

impl Vlan {
    /// The largest usable VLAN ID.
    pub const MAX_VID: u16 = 4094;

    /// A tag, or `None` if `vid` is above [`Vlan::MAX_VID`].
    pub const fn new(pcp: Pcp, vid: u16) -> Option<Vlan> {
        if vid <= Self::MAX_VID {
            Some(Vlan { pcp, vid })
        } else {
            None
        }
    }

    /// Priority.
    pub const fn pcp(self) -> Pcp {
        self.pcp
    }

    /// VLAN ID (0 = priority tag only).
    pub const fn vid(self) -> u16 {
        self.vid
    }

    /// The same tag with another priority.
    pub const fn with_pcp(self, pcp: Pcp) -> Vlan {
        Vlan { pcp, vid: self.vid }
    }

    fn tci(self) -> u16 {
        (u16::from(self.pcp.0) << 13) | self.vid
    }

    fn from_tci(tci: u16) -> Vlan {
        // DEI (bit 12) is ignored. VID 4095 is kept as received
        // (reserved, but harmless to report).
        Vlan {
            pcp: Pcp(((tci >> 13) & 7) as u8),
            vid: tci & 0x0fff,
        }
    }
}

/// A MAC address.
pub type Mac = [u8; 6];

/// The broadcast MAC address (used by Discovery).
pub const BROADCAST: Mac = [0xff; 6];

/// The Ethernet part of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EthHeader {
    /// Destination MAC.
    pub dst: Mac,
    /// Source MAC.
    pub src: Mac,
    /// The 802.1Q tag; PCIeoE always sends one, but accepts untagged frames
    /// (a switch or the NIC may strip the tag).
    pub vlan: Option<Vlan>,
    /// The Ethertype.
    pub ethertype: EtherType,
}

impl EthHeader {
    /// Bytes this header takes.
    pub fn len(&self) -> usize {
        if self.vlan.is_some() {
            L2_OVERHEAD
        } else {
            ETH_HEADER_LEN
        }
    }

    /// Always false; present for the `len` convention.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Parses an Ethernet header (with or without one 802.1Q tag). Returns
    /// the header and its length.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`], or [`Error::WrongEthertype`] when the
    /// Ethertype is not a valid [`EtherType`].
    pub fn parse(b: &[u8]) -> Result<(EthHeader, usize), Error> {
        let dst = mac_at(b, 0).ok_or(Error::Truncated)?;
        let src = mac_at(b, 6).ok_or(Error::Truncated)?;
        let t = rd16(b, 12).ok_or(Error::Truncated)?;
        let (vlan, ty, len) = if t == TPID_8021Q {
            let tci = rd16(b, 14).ok_or(Error::Truncated)?;
            let ty = rd16(b, 16).ok_or(Error::Truncated)?;
            (Some(Vlan::from_tci(tci)), ty, L2_OVERHEAD)
        } else {
            (None, t, ETH_HEADER_LEN)
        };
        let ethertype = EtherType::new(ty).map_err(|_| Error::WrongEthertype(ty))?;
        Ok((
            EthHeader {
                dst,
                src,
                vlan,
                ethertype,
            },
            len,
        ))
    }

    /// Writes the header at the start of `b`; returns its length.
    ///
    /// # Errors
    ///
    /// [`Error::BufferTooSmall`].
    pub fn emit(&self, b: &mut [u8]) -> Result<usize, Error> {
        let len = self.len();
        let out = b.get_mut(..len).ok_or(Error::BufferTooSmall)?;
        let (macs, rest) = out.split_at_mut(12);
        let (d, s) = macs.split_at_mut(6);
        d.copy_from_slice(&self.dst);
        s.copy_from_slice(&self.src);
        match self.vlan {
            Some(v) => {
                wr(rest, 0, &TPID_8021Q.to_be_bytes());
                wr(rest, 2, &v.tci().to_be_bytes());
                wr(rest, 4, &self.ethertype.get().to_be_bytes());
            }
            None => wr(rest, 0, &self.ethertype.get().to_be_bytes()),
        }
        Ok(len)
    }
}

/// The PCIeoE header, as values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Frame kind.
    pub kind: Kind,
    /// [`flags`] bits.
    pub flags: u16,
    /// Session epoch (0 outside a session: Discovery, Announce).
    pub epoch: u32,
    /// Sequence number of a Data frame; on other kinds the sender's next
    /// sequence number (informational).
    pub seq: u32,
    /// Cumulative ACK: the next sequence number the sender expects (valid
    /// with [`flags::ACK`]).
    pub ack: u32,
    /// The first missing sequence number (valid with [`flags::NAK`]).
    pub nak: u32,
    /// Cumulative credit limits (valid with [`flags::CREDIT`]).
    pub credits: Advert,
    /// Number of items (TLPs or one session body).
    pub count: u16,
    /// Bytes of items, prefixes included.
    pub item_bytes: u16,
}

impl Header {
    /// A header of `kind` with every other field zero.
    pub fn new(kind: Kind) -> Header {
        Header {
            kind,
            flags: 0,
            epoch: 0,
            seq: 0,
            ack: 0,
            nak: 0,
            credits: Advert::default(),
            count: 0,
            item_bytes: 0,
        }
    }

    /// Is flag `f` set?
    pub fn has(&self, f: u16) -> bool {
        self.flags & f != 0
    }

    /// Parses the header at the start of `b` (fields only; item lengths are
    /// checked by [`Pdu::new_checked`]).
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`], [`Error::UnknownVersion`], [`Error::UnknownKind`].
    pub fn parse(b: &[u8]) -> Result<Header, Error> {
        let h = b.get(..HEADER_LEN).ok_or(Error::Truncated)?;
        let version = h.get(field::VERSION).copied().unwrap_or(0);
        if version != VERSION {
            return Err(Error::UnknownVersion(version));
        }
        let raw_kind = h.get(field::KIND).copied().unwrap_or(0);
        let kind = Kind::from(raw_kind);
        if let Kind::Unknown(k) = kind {
            return Err(Error::UnknownKind(k));
        }
        let c = |i: usize| rd16(h, field::CREDITS + 2 * i).unwrap_or(0);
        Ok(Header {
            kind,
            flags: rd16(h, field::FLAGS.start).unwrap_or(0),
            epoch: rd32(h, field::EPOCH.start).unwrap_or(0),
            seq: rd32(h, field::SEQ.start).unwrap_or(0),
            ack: rd32(h, field::ACK.start).unwrap_or(0),
            nak: rd32(h, field::NAK.start).unwrap_or(0),
            credits: Advert {
                posted: Credits {
                    header: c(0),
                    data: c(1),
                },
                non_posted: Credits {
                    header: c(2),
                    data: c(3),
                },
                completion: Credits {
                    header: c(4),
                    data: c(5),
                },
            },
            count: rd16(h, field::COUNT.start).unwrap_or(0),
            item_bytes: rd16(h, field::ITEM_BYTES.start).unwrap_or(0),
        })
    }

    /// Writes the header (version [`VERSION`]) at the start of `b`.
    ///
    /// # Errors
    ///
    /// [`Error::BufferTooSmall`].
    pub fn emit(&self, b: &mut [u8]) -> Result<(), Error> {
        let h = b.get_mut(..HEADER_LEN).ok_or(Error::BufferTooSmall)?;
        wr(h, field::VERSION, &[VERSION, u8::from(self.kind)]);
        wr(h, field::FLAGS.start, &self.flags.to_be_bytes());
        wr(h, field::EPOCH.start, &self.epoch.to_be_bytes());
        wr(h, field::SEQ.start, &self.seq.to_be_bytes());
        wr(h, field::ACK.start, &self.ack.to_be_bytes());
        wr(h, field::NAK.start, &self.nak.to_be_bytes());
        let cr = &self.credits;
        let vals = [
            cr.posted.header,
            cr.posted.data,
            cr.non_posted.header,
            cr.non_posted.data,
            cr.completion.header,
            cr.completion.data,
        ];
        for (i, v) in vals.iter().enumerate() {
            wr(h, field::CREDITS + 2 * i, &v.to_be_bytes());
        }
        wr(h, field::COUNT.start, &self.count.to_be_bytes());
        wr(h, field::ITEM_BYTES.start, &self.item_bytes.to_be_bytes());
        Ok(())
    }
}

/// A checked view of a PCIeoE PDU: the bytes after the Ethertype.
///
/// # Invariants
///
/// The buffer holds a valid header (known version and kind) followed by at
/// least `item_bytes` bytes that split into exactly `count` non-empty
/// length-prefixed items, `count <= MAX_ITEMS`; a Data PDU has at least one.
#[derive(Clone, Copy, Debug)]
pub struct Pdu<T: AsRef<[u8]>> {
    buffer: T,
    header: Header,
}

impl<T: AsRef<[u8]>> Pdu<T> {
    /// Validates `buffer` as a PDU (trailing padding is allowed).
    ///
    /// # Errors
    ///
    /// Any of the parse variants of [`Error`].
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let b = buffer.as_ref();
        let header = Header::parse(b)?;
        if header.count > MAX_ITEMS {
            return Err(Error::TooManyItems(header.count));
        }
        let area = b
            .get(HEADER_LEN..)
            .and_then(|r| r.get(..usize::from(header.item_bytes)))
            .ok_or(Error::Truncated)?;
        let mut it = Items { rest: area };
        let mut n: u16 = 0;
        while !it.rest.is_empty() {
            match it.next_item() {
                Some(Ok(_)) => n = n.saturating_add(1),
                _ => return Err(Error::BadItemLength),
            }
        }
        if n != header.count {
            return Err(Error::BadItemLength);
        }
        if header.kind == Kind::Data && n == 0 {
            return Err(Error::EmptyData);
        }
        // INVARIANT: every condition was checked above.
        Ok(Pdu { buffer, header })
    }

    /// The header fields.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The raw item area (prefixes included, padding excluded).
    pub fn item_area(&self) -> &[u8] {
        self.buffer
            .as_ref()
            .get(HEADER_LEN..)
            .and_then(|r| r.get(..usize::from(self.header.item_bytes)))
            .unwrap_or(&[])
    }

    /// The items (TLPs, or a session body) in order.
    pub fn items(&self) -> Items<'_> {
        Items {
            rest: self.item_area(),
        }
    }

    /// The first item, if any (the body of a session frame).
    pub fn body(&self) -> Option<&[u8]> {
        self.items().next()
    }
}

/// Iterator over the items of a frame.
#[derive(Clone, Debug)]
pub struct Items<'a> {
    rest: &'a [u8],
}

impl<'a> Items<'a> {
    /// Iterates over a raw item area (as stored in a replay slot). Stops at
    /// the first malformed item.
    pub fn new(area: &'a [u8]) -> Self {
        Items { rest: area }
    }

    fn next_item(&mut self) -> Option<Result<&'a [u8], ()>> {
        if self.rest.is_empty() {
            return None;
        }
        let len = match rd16(self.rest, 0) {
            Some(l) if l > 0 => usize::from(l),
            _ => return Some(Err(())),
        };
        let body = self.rest.get(ITEM_PREFIX_LEN..);
        let item = body.and_then(|b| b.get(..len));
        let after = body.and_then(|b| b.get(len..));
        match (item, after) {
            (Some(i), Some(a)) => {
                self.rest = a;
                Some(Ok(i))
            }
            _ => Some(Err(())),
        }
    }
}

impl<'a> Iterator for Items<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        match self.next_item() {
            Some(Ok(i)) => Some(i),
            _ => {
                self.rest = &[];
                None
            }
        }
    }
}

/// A checked view of a whole Ethernet frame carrying a PCIeoE PDU.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    eth: EthHeader,
    pdu: Pdu<&'a [u8]>,
}

impl<'a> Frame<'a> {
    /// Validates a received frame (destination MAC first, no FCS) against
    /// the configured Ethertype.
    ///
    /// # Errors
    ///
    /// Any of the parse variants of [`Error`].
    ///
    /// # Examples
    ///
    /// ```
    /// use pcieoe::frame::{EthHeader, Frame, FrameBuilder, Header, Kind, DEFAULT_MTU};
    /// use pcieoe::ethertype::EtherType;
    /// let eth = EthHeader { dst: [2; 6], src: [4; 6], vlan: None, ethertype: EtherType::default() };
    /// let mut buf = [0u8; 128];
    /// let mut b = FrameBuilder::new(&mut buf, &eth, &Header::new(Kind::Data), DEFAULT_MTU).unwrap();
    /// b.push(&[1, 2, 3, 4]).unwrap();
    /// let len = b.finish();
    /// let f = Frame::new_checked(&buf[..len], EtherType::default()).unwrap();
    /// assert_eq!(f.pdu().items().next(), Some(&[1u8, 2, 3, 4][..]));
    /// ```
    pub fn new_checked(b: &'a [u8], ethertype: EtherType) -> Result<Self, Error> {
        let (eth, off) = EthHeader::parse(b)?;
        if eth.ethertype != ethertype {
            return Err(Error::WrongEthertype(eth.ethertype.get()));
        }
        let pdu = Pdu::new_checked(b.get(off..).ok_or(Error::Truncated)?)?;
        Ok(Frame { eth, pdu })
    }

    /// The Ethernet header.
    pub fn eth(&self) -> &EthHeader {
        &self.eth
    }

    /// The PCIeoE part.
    pub fn pdu(&self) -> &Pdu<&'a [u8]> {
        &self.pdu
    }

    /// The PCIeoE header.
    pub fn header(&self) -> &Header {
        self.pdu.header()
    }
}

/// Appends one length-prefixed item at `at` in an item area; returns the
/// new end. Used for replay slots and by [`FrameBuilder`].
///
/// # Errors
///
/// [`Error::ItemTooLarge`] for an empty item or one above `u16::MAX`,
/// [`Error::Full`] if it does not fit in `area`.
pub fn put_item(area: &mut [u8], at: usize, item: &[u8]) -> Result<usize, Error> {
    let len = u16::try_from(item.len()).map_err(|_| Error::ItemTooLarge)?;
    if len == 0 {
        return Err(Error::ItemTooLarge);
    }
    let end = at
        .checked_add(ITEM_PREFIX_LEN)
        .and_then(|x| x.checked_add(item.len()))
        .ok_or(Error::Full)?;
    let dst = area.get_mut(at..end).ok_or(Error::Full)?;
    let (p, body) = dst.split_at_mut(ITEM_PREFIX_LEN);
    p.copy_from_slice(&len.to_be_bytes());
    body.copy_from_slice(item);
    Ok(end)
}

/// The bytes a frame takes on the wire for `item_bytes` bytes of items
/// (tagged, padded to the Ethernet minimum).
pub fn frame_len(item_bytes: usize) -> usize {
    L2_OVERHEAD
        .saturating_add(HEADER_LEN)
        .saturating_add(item_bytes)
        .max(ETH_MIN_FRAME)
}

/// Writes a complete frame from a header and a ready item area (the
/// header's `count` must match the area; `item_bytes` is set from it).
/// Returns the frame length, padding included.
///
/// # Errors
///
/// [`Error::BufferTooSmall`], [`Error::ItemTooLarge`] when the area is
/// longer than `u16::MAX`.
pub fn emit(
    buf: &mut [u8],
    eth: &EthHeader,
    header: &Header,
    items: &[u8],
) -> Result<usize, Error> {
    let total = eth
        .len()
        .saturating_add(HEADER_LEN)
        .saturating_add(items.len());
    let padded = total.max(ETH_MIN_FRAME);
    if buf.len() < padded {
        return Err(Error::BufferTooSmall);
    }
    let off = eth.emit(buf)?;
    let mut h = *header;
    h.item_bytes = u16::try_from(items.len()).map_err(|_| Error::ItemTooLarge)?;
    let rest = buf.get_mut(off..).ok_or(Error::BufferTooSmall)?;
    h.emit(rest)?;
    let area = rest.get_mut(HEADER_LEN..).ok_or(Error::BufferTooSmall)?;
    area.get_mut(..items.len())
        .ok_or(Error::BufferTooSmall)?
        .copy_from_slice(items);
    if let Some(pad) = buf.get_mut(total..padded) {
        pad.fill(0);
    }
    Ok(padded)
}

/// Builds one frame in a caller's buffer, appending TLPs until the MTU
/// would be exceeded.
///
/// ```
/// use pcieoe::frame::{EthHeader, Error, FrameBuilder, Header, Kind, MIN_MTU};
/// let eth = EthHeader { dst: [2; 6], src: [4; 6], vlan: None,
///                       ethertype: Default::default() };
/// let mut buf = [0u8; 512];
/// let mut b = FrameBuilder::new(&mut buf, &eth, &Header::new(Kind::Data), MIN_MTU).unwrap();
/// let tlp = [0u8; 100];
/// assert!(b.push(&tlp).is_ok());
/// assert!(b.push(&tlp).is_ok());
/// assert_eq!(b.push(&tlp), Err(Error::Full)); // 36 + 3 * 102 > 256
/// assert_eq!(b.count(), 2);
/// ```
#[derive(Debug)]
pub struct FrameBuilder<'a> {
    buf: &'a mut [u8],
    pdu: usize,
    end: usize,
    limit: usize,
    count: u16,
}

impl<'a> FrameBuilder<'a> {
    /// Starts a frame: writes `eth` and `header` (its `count` and
    /// `item_bytes` are filled in by [`finish`](Self::finish)). `mtu` is the
    /// most bytes after the Ethertype.
    ///
    /// # Errors
    ///
    /// [`Error::BadMtu`], [`Error::BufferTooSmall`] when `buf` cannot hold
    /// the headers and the Ethernet minimum.
    pub fn new(
        buf: &'a mut [u8],
        eth: &EthHeader,
        header: &Header,
        mtu: usize,
    ) -> Result<Self, Error> {
        if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
            return Err(Error::BadMtu);
        }
        let pdu = eth.emit(buf)?;
        let start = pdu.saturating_add(HEADER_LEN);
        if buf.len() < start.max(ETH_MIN_FRAME) {
            return Err(Error::BufferTooSmall);
        }
        let rest = buf.get_mut(pdu..).ok_or(Error::BufferTooSmall)?;
        header.emit(rest)?;
        let limit = buf.len().min(pdu.saturating_add(mtu));
        Ok(FrameBuilder {
            buf,
            pdu,
            end: start,
            limit,
            count: 0,
        })
    }

    /// Would an item of `len` bytes still fit?
    pub fn fits(&self, len: usize) -> bool {
        self.count < MAX_ITEMS
            && len > 0
            && self.end.saturating_add(ITEM_PREFIX_LEN).saturating_add(len) <= self.limit
    }

    /// Appends one TLP (or session body).
    ///
    /// # Errors
    ///
    /// [`Error::Full`] when it does not fit (send this frame and start
    /// another), [`Error::ItemTooLarge`] when it is empty or could never fit.
    pub fn push(&mut self, item: &[u8]) -> Result<(), Error> {
        let empty_frame = self.pdu.saturating_add(HEADER_LEN);
        let max = self
            .limit
            .saturating_sub(empty_frame)
            .saturating_sub(ITEM_PREFIX_LEN);
        if item.is_empty() || item.len() > max {
            return Err(Error::ItemTooLarge);
        }
        if !self.fits(item.len()) {
            return Err(Error::Full);
        }
        let area = self
            .buf
            .get_mut(..self.limit)
            .ok_or(Error::BufferTooSmall)?;
        self.end = put_item(area, self.end, item)?;
        self.count = self.count.saturating_add(1);
        Ok(())
    }

    /// Items appended so far.
    pub fn count(&self) -> u16 {
        self.count
    }

    /// Bytes still free for items (prefixes included).
    pub fn remaining(&self) -> usize {
        self.limit.saturating_sub(self.end)
    }

    /// Completes the frame: fills in the item count and length and pads to
    /// the Ethernet minimum. Returns the frame length.
    pub fn finish(self) -> usize {
        let start = self.pdu.saturating_add(HEADER_LEN);
        let item_bytes = u16::try_from(self.end.saturating_sub(start)).unwrap_or(u16::MAX);
        if let Some(h) = self.buf.get_mut(self.pdu..) {
            wr(h, field::COUNT.start, &self.count.to_be_bytes());
            wr(h, field::ITEM_BYTES.start, &item_bytes.to_be_bytes());
        }
        let padded = self.end.max(ETH_MIN_FRAME);
        if let Some(pad) = self.buf.get_mut(self.end..padded) {
            pad.fill(0);
        }
        padded
    }
}

/// Counters of rejected frames, one per reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BadFrames {
    /// [`Error::Truncated`].
    pub truncated: u64,
    /// [`Error::WrongEthertype`].
    pub ethertype: u64,
    /// [`Error::UnknownVersion`].
    pub version: u64,
    /// [`Error::UnknownKind`].
    pub kind: u64,
    /// [`Error::TooManyItems`], [`Error::BadItemLength`], [`Error::EmptyData`].
    pub length: u64,
    /// Well-formed but unexpected here (wrong session epoch, a kind the
    /// current state does not accept, an impossible ACK).
    pub unexpected: u64,
}

impl BadFrames {
    /// Counts one rejected frame.
    pub fn count(&mut self, e: Error) {
        let c = match e {
            Error::Truncated => &mut self.truncated,
            Error::WrongEthertype(_) => &mut self.ethertype,
            Error::UnknownVersion(_) => &mut self.version,
            Error::UnknownKind(_) => &mut self.kind,
            _ => &mut self.length,
        };
        *c = c.saturating_add(1);
    }

    /// All rejected frames.
    pub fn total(&self) -> u64 {
        self.truncated
            .saturating_add(self.ethertype)
            .saturating_add(self.version)
            .saturating_add(self.kind)
            .saturating_add(self.length)
            .saturating_add(self.unexpected)
    }
}

fn rd16(b: &[u8], off: usize) -> Option<u16> {
    let s = b.get(off..off.checked_add(2)?)?;
    Some(u16::from_be_bytes([*s.first()?, *s.get(1)?]))
}

fn rd32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    let mut a = [0u8; 4];
    a.copy_from_slice(s);
    Some(u32::from_be_bytes(a))
}

fn mac_at(b: &[u8], off: usize) -> Option<Mac> {
    let s = b.get(off..off.checked_add(6)?)?;
    let mut m = [0u8; 6];
    m.copy_from_slice(s);
    Some(m)
}

/// Writes `v` at `off` if it fits (callers size their buffers first).
fn wr(b: &mut [u8], off: usize, v: &[u8]) {
    if let Some(d) = off.checked_add(v.len()).and_then(|end| b.get_mut(off..end)) {
        d.copy_from_slice(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eth() -> EthHeader {
        EthHeader {
            dst: [0x02, 0, 0, 0, 0, 1],
            src: [0x02, 0, 0, 0, 0, 2],
            vlan: Vlan::new(Pcp::from_tc(3), 42),
            ethertype: EtherType::default(),
        }
    }

    fn full_header() -> Header {
        Header {
            kind: Kind::Data,
            flags: flags::ACK | flags::CREDIT,
            epoch: 0xdead_beef,
            seq: 0xffff_fffe,
            ack: 7,
            nak: 9,
            credits: Advert {
                posted: Credits { header: 1, data: 2 },
                non_posted: Credits { header: 3, data: 4 },
                completion: Credits { header: 5, data: 6 },
            },
            count: 0,
            item_bytes: 0,
        }
    }

    #[test]
    fn fixture_bytes() {
        let mut buf = [0xa5u8; 128];
        let mut b = FrameBuilder::new(&mut buf, &eth(), &full_header(), DEFAULT_MTU).unwrap();
        b.push(&[0xaa, 0xbb, 0xcc]).unwrap();
        let len = b.finish();
        assert_eq!(len, ETH_MIN_FRAME);
        #[rustfmt::skip]
        let want: [u8; 59] = [
            2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2,
            0x81, 0x00, 0x80, 42, 0x88, 0xb5,   // TPID, PCP 4 VID 42, Ethertype
            1, 1, 0x00, 0x05,                   // version, kind, flags
            0xde, 0xad, 0xbe, 0xef,             // epoch
            0xff, 0xff, 0xff, 0xfe,             // seq
            0, 0, 0, 7, 0, 0, 0, 9,             // ack, nak
            0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, // credits
            0, 1, 0, 5,                         // count, item bytes
            0, 3, 0xaa, 0xbb, 0xcc,             // item
        ];
        assert_eq!(&buf[..59], &want[..]);
        assert_eq!(buf[59], 0, "padding is zeroed");
        assert_eq!(buf[60], 0xa5, "nothing written past the frame");
    }

    #[test]
    fn round_trip_with_batching() {
        let mut buf = [0u8; MAX_FRAME];
        let mut b = FrameBuilder::new(&mut buf, &eth(), &full_header(), DEFAULT_MTU).unwrap();
        let mut n = 0u8;
        loop {
            let tlp = [n; 60];
            match b.push(&tlp) {
                Ok(()) => n += 1,
                Err(Error::Full) => break,
                Err(e) => panic!("{e}"),
            }
        }
        // (1500 - 36) / 62 = 23 items.
        assert_eq!(n, 23);
        let len = b.finish();
        assert!(len <= DEFAULT_MTU + L2_OVERHEAD);
        let f = Frame::new_checked(&buf[..len], EtherType::default()).unwrap();
        let mut h = full_header();
        h.count = 23;
        h.item_bytes = 23 * 62;
        assert_eq!(*f.header(), h);
        assert_eq!(f.eth(), &eth());
        for (i, t) in f.pdu().items().enumerate() {
            assert_eq!(t, &[i as u8; 60][..]);
        }
        assert_eq!(f.pdu().items().count(), 23);
    }

    #[test]
    fn max_items_limit() {
        let mut buf = [0u8; MAX_FRAME];
        let mut b = FrameBuilder::new(&mut buf, &eth(), &full_header(), MAX_MTU).unwrap();
        for _ in 0..MAX_ITEMS {
            b.push(&[1]).unwrap();
        }
        assert_eq!(b.push(&[1]), Err(Error::Full));
        assert_eq!(b.push(&[]), Err(Error::ItemTooLarge));
        assert_eq!(b.push(&[0; MAX_MTU]), Err(Error::ItemTooLarge));
    }

    #[test]
    fn untagged_frames_are_accepted() {
        let mut e = eth();
        e.vlan = None;
        let mut buf = [0u8; 128];
        let len = emit(&mut buf, &e, &Header::new(Kind::Heartbeat), &[]).unwrap();
        assert_eq!(len, ETH_MIN_FRAME);
        let f = Frame::new_checked(&buf[..len], EtherType::default()).unwrap();
        assert_eq!(f.eth().vlan, None);
        assert_eq!(f.header().kind, Kind::Heartbeat);
        assert_eq!(f.pdu().body(), None);
    }

    fn good() -> ([u8; 128], usize) {
        let mut buf = [0u8; 128];
        let mut b = FrameBuilder::new(&mut buf, &eth(), &full_header(), DEFAULT_MTU).unwrap();
        b.push(&[1, 2, 3, 4]).unwrap();
        b.push(&[5, 6]).unwrap();
        let len = b.finish();
        (buf, len)
    }

    #[test]
    fn malformed_frames_are_rejected() {
        let et = EtherType::default();
        let (buf, len) = good();
        assert!(Frame::new_checked(&buf[..len], et).is_ok());
        // Truncated into the header and into the items.
        assert_eq!(
            Frame::new_checked(&buf[..10], et).err(),
            Some(Error::Truncated)
        );
        assert_eq!(
            Frame::new_checked(&buf[..50], et).err(),
            Some(Error::Truncated)
        );
        assert_eq!(
            Frame::new_checked(&buf[..59], et).err(),
            Some(Error::Truncated)
        );
        let p = L2_OVERHEAD;
        let mut b = buf;
        b[17] = 0xb6;
        assert_eq!(
            Frame::new_checked(&b[..len], et).err(),
            Some(Error::WrongEthertype(0x88b6))
        );
        let mut b = buf;
        b[p] = 2;
        assert_eq!(
            Frame::new_checked(&b[..len], et).err(),
            Some(Error::UnknownVersion(2))
        );
        let mut b = buf;
        b[p + 1] = 0x7f;
        assert_eq!(
            Frame::new_checked(&b[..len], et).err(),
            Some(Error::UnknownKind(0x7f))
        );
        let mut b = buf;
        b[p + 33] = 3; // count 3, items say 2
        assert_eq!(
            Frame::new_checked(&b[..len], et).err(),
            Some(Error::BadItemLength)
        );
        let mut b = buf;
        b[p + 32] = 1; // count 258
        assert_eq!(
            Frame::new_checked(&b[..len], et).err(),
            Some(Error::TooManyItems(258))
        );
        let mut b = buf;
        b[p + HEADER_LEN + 1] = 5; // first item runs into the second
        assert_eq!(
            Frame::new_checked(&b[..len], et).err(),
            Some(Error::BadItemLength)
        );
        let mut b = buf;
        b[p + HEADER_LEN + 1] = 0; // empty item
        assert_eq!(
            Frame::new_checked(&b[..len], et).err(),
            Some(Error::BadItemLength)
        );
        let mut b = buf;
        b[p + 33] = 0; // data frame, zero items, zero bytes
        b[p + 35] = 0;
        assert_eq!(
            Frame::new_checked(&b[..len], et).err(),
            Some(Error::EmptyData)
        );
    }

    #[test]
    fn kinds_and_pcp() {
        for v in 0..=255u8 {
            assert_eq!(u8::from(Kind::from(v)), v);
        }
        assert_eq!(Pcp::from_tc(0).get(), 0);
        assert_eq!(Pcp::from_tc(1).get(), 2);
        assert_eq!(Pcp::from_tc(7).get(), 5);
        assert_eq!(Pcp::new(8), None);
        assert!(Vlan::new(Pcp::default(), 4095).is_none());
        let mut bad = BadFrames::default();
        bad.count(Error::Truncated);
        bad.count(Error::EmptyData);
        assert_eq!(bad.total(), 2);
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
                let _ = Frame::new_checked(&bytes, EtherType::default());
                if let Ok(p) = Pdu::new_checked(&bytes[..]) {
                    prop_assert!(p.items().count() == usize::from(p.header().count));
                }
            }

            #[test]
            fn mutated_frames_never_panic(idx in 0usize..128, val in any::<u8>(), cut in 0usize..128) {
                let (mut buf, len) = good();
                buf[idx] = val;
                let _ = Frame::new_checked(&buf[..len.min(cut.max(1))], EtherType::default())
                    .map(|f| f.pdu().items().count());
            }

            #[test]
            fn round_trip(
                epoch in any::<u32>(), seq in any::<u32>(), ack in any::<u32>(),
                fl in any::<u16>(), vid in 0u16..4095, tc in 0u8..8,
                tlps in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 1..20),
            ) {
                let mut e = eth();
                e.vlan = Vlan::new(Pcp::from_tc(tc), vid);
                let mut h = full_header();
                h.epoch = epoch; h.seq = seq; h.ack = ack; h.flags = fl;
                let mut buf = [0xa5u8; MAX_FRAME];
                let mut b = FrameBuilder::new(&mut buf, &e, &h, MAX_MTU).unwrap();
                let mut pushed = 0;
                for t in &tlps {
                    if b.push(t).is_err() { break; }
                    pushed += 1;
                }
                let len = b.finish();
                let f = Frame::new_checked(&buf[..len], EtherType::default()).unwrap();
                prop_assert_eq!(f.eth(), &e);
                prop_assert_eq!(f.header().epoch, epoch);
                prop_assert_eq!(f.header().seq, seq);
                prop_assert_eq!(f.header().flags, fl);
                prop_assert_eq!(usize::from(f.header().count), pushed);
                for (got, want) in f.pdu().items().zip(&tlps) {
                    prop_assert_eq!(got, &want[..]);
                }
            }
        }
    }
}
