// SPDX-License-Identifier: GPL-2.0

//! Transaction Layer Packets in the formats of the PCI Express Base
//! Specification.
//!
//! The codec follows smoltcp's wire style: [`Packet`] is a checked view
//! over the bytes of one TLP (header, data payload and optional digest);
//! [`Tlp`] is the high-level representation (smoltcp's `Repr`) with
//! [`Tlp::parse`], [`Tlp::emit`] and [`Tlp::buffer_len`]. A parsed [`Tlp`]
//! borrows its data payload from the packet, nothing is copied.
//!
//! # Supported TLPs
//!
//! | Kind            | Fmt         | Type        |
//! |-----------------|-------------|-------------|
//! | MRd             | 000 / 001   | 0 0000      |
//! | MWr             | 010 / 011   | 0 0000      |
//! | CfgRd0 / CfgRd1 | 000         | 0 0100 / 0 0101 |
//! | CfgWr0 / CfgWr1 | 010         | 0 0100 / 0 0101 |
//! | Cpl / CplD      | 000 / 010   | 0 1010      |
//! | Msg / MsgD      | 001 / 011   | 1 0rrr      |
//!
//! I/O requests, locked reads and completions, AtomicOps and TLP prefixes
//! are recognised and refused with [`Error::Unsupported`]; every other
//! Fmt/Type combination is [`Error::ReservedType`].
//!
//! # Validation
//!
//! [`Tlp::parse`] and [`Tlp::emit`] share one set of rules
//! ([`Tlp::check`]), so whatever decoding rejects, encoding refuses too and
//! every TLP that [`Tlp::emit`] writes parses back to the same [`Tlp`].
//! Rules that only concern the wire (buffer length, reserved Fmt/Type
//! values, a 4DW header with an address below 4 GiB, a configuration
//! request whose Length is not 1) are checked by [`Packet::new_checked`] and
//! [`Tlp::parse`] alone, since a [`Tlp`] cannot express them.
//!
//! Two choices the specification leaves open:
//!
//! * A 64-bit (4DW) memory request whose upper 32 address bits are zero is
//!   refused with [`Error::Address64Below4G`]. The specification requires
//!   the 32-bit format below 4 GiB and leaves the receiver's behaviour
//!   unspecified; refusing keeps encoding and decoding exact inverses.
//! * The TLP digest (ECRC, present when TD is set) is carried, not computed:
//!   [`Tlp::parse`] returns it in [`Tlp::digest`] and [`Tlp::emit`] writes
//!   the value given. The Ethernet FCS and the PCIeoE link protect TLPs end
//!   to end, so the engine does not check ECRC.
//!
//! Reserved bits are written as zero and ignored on receipt, as the
//! specification asks; the one exception is the two low address bits of a
//! memory request without TLP processing hints, which must be zero
//! ([`Error::Misaligned`]).

use core::fmt;

/// Length of a header with three double words (32-bit addresses,
/// configuration requests, completions).
pub const HEADER_3DW: usize = 12;

/// Length of a header with four double words (64-bit addresses, messages).
pub const HEADER_4DW: usize = 16;

/// Length of the TLP digest (ECRC) that follows the data when TD is set.
pub const DIGEST_LEN: usize = 4;

/// The largest data payload a TLP can carry: 1024 double words.
pub const MAX_PAYLOAD: usize = 4096;

/// The largest Length value, in double words (encoded as 0 on the wire).
pub const MAX_LENGTH_DW: u16 = 1024;

/// The longest TLP this codec handles: 4DW header, 4 KiB data, digest.
pub const MAX_TLP_LEN: usize = HEADER_4DW + MAX_PAYLOAD + DIGEST_LEN;

/// Byte positions inside a TLP header.
mod field {
    /// Fmt[2:0] in bits 7:5, Type[4:0] in bits 4:0.
    pub(super) const FMT_TYPE: usize = 0;
    /// T9, TC[2:0], T8, Attr[2], LN, TH.
    pub(super) const FLAGS1: usize = 1;
    /// TD, EP, Attr[1:0], AT[1:0], Length[9:8].
    pub(super) const FLAGS2: usize = 2;
    /// Requester ID of a request, completer ID of a completion (2 bytes).
    pub(super) const ID1: usize = 4;
    /// Tag[7:0] of a request.
    pub(super) const REQ_TAG: usize = 6;
    /// Last DW BE in bits 7:4, First DW BE in bits 3:0; message code.
    pub(super) const BE_CODE: usize = 7;
    /// Requester ID of a completion (2 bytes).
    pub(super) const CPL_REQUESTER: usize = 8;
    /// Tag[7:0] of a completion.
    pub(super) const CPL_TAG: usize = 10;
}

/// A PCI routing ID: bus, device and function numbers.
///
/// Every 16-bit value is a valid routing ID: bus in bits 15:8, device in
/// bits 7:3, function in bits 2:0. Displays as `bb:dd.f`, the way `lspci`
/// prints functions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bdf(u16);

impl Bdf {
    /// Makes a routing ID from its parts; `None` if the device is above 31
    /// or the function above 7.
    ///
    /// # Examples
    ///
    /// ```
    /// use pcieoe::tlp::Bdf;
    /// let bdf = Bdf::new(1, 0, 0).unwrap();
    /// assert_eq!(bdf.raw(), 0x0100);
    /// assert!(Bdf::new(0, 32, 0).is_none());
    /// ```
    pub const fn new(bus: u8, device: u8, function: u8) -> Option<Bdf> {
        if device > 31 || function > 7 {
            return None;
        }
        Some(Bdf(((bus as u16) << 8)
            | ((device as u16) << 3)
            | function as u16))
    }

    /// Makes a routing ID from its 16-bit wire form.
    pub const fn from_raw(raw: u16) -> Bdf {
        Bdf(raw)
    }

    /// The 16-bit wire form.
    pub const fn raw(self) -> u16 {
        self.0
    }

    /// The bus number.
    pub const fn bus(self) -> u8 {
        (self.0 >> 8) as u8
    }

    /// The device number, 0 to 31.
    pub const fn device(self) -> u8 {
        ((self.0 >> 3) & 0x1f) as u8
    }

    /// The function number, 0 to 7.
    pub const fn function(self) -> u8 {
        (self.0 & 0x7) as u8
    }
}

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02x}:{:02x}.{:x}",
            self.bus(),
            self.device(),
            self.function()
        )
    }
}

/// A transaction tag: 8 bits, or 10 bits with PCIe 4.0's T9 and T8.
///
/// # Invariants
///
/// The value is at most [`Tag::MAX`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tag(u16);

impl Tag {
    /// The largest 10-bit tag.
    pub const MAX: u16 = 1023;

    /// Makes a tag; `None` above [`Tag::MAX`].
    pub const fn new(value: u16) -> Option<Tag> {
        if value > Tag::MAX {
            return None;
        }
        // INVARIANT: checked just above.
        Some(Tag(value))
    }

    /// The tag value, 0 to 1023.
    pub const fn get(self) -> u16 {
        self.0
    }

    /// Whether the tag needs T9 or T8, that is 10-bit tag support.
    pub const fn is_10bit(self) -> bool {
        self.0 > 0xff
    }

    /// Puts Tag[7:0] and the T9/T8 bits of header byte 1 together.
    const fn from_wire(low: u8, flags1: u8) -> Tag {
        let t9 = ((flags1 >> 7) & 1) as u16;
        let t8 = ((flags1 >> 3) & 1) as u16;
        // INVARIANT: at most 10 bits are set.
        Tag((t9 << 9) | (t8 << 8) | low as u16)
    }
}

impl From<u8> for Tag {
    fn from(value: u8) -> Tag {
        Tag(value as u16)
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The ordering and snoop attributes of a TLP (Attr[2:0]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Attr {
    /// Relaxed Ordering, Attr[1].
    pub relaxed_ordering: bool,
    /// No Snoop, Attr[0].
    pub no_snoop: bool,
    /// ID-Based Ordering, Attr[2] (header byte 1).
    pub id_based_ordering: bool,
}

impl Attr {
    /// The three attribute bits as the specification numbers them:
    /// IDO in bit 2, RO in bit 1, NS in bit 0.
    pub const fn bits(self) -> u8 {
        ((self.id_based_ordering as u8) << 2)
            | ((self.relaxed_ordering as u8) << 1)
            | self.no_snoop as u8
    }

    /// The attributes from their three bits (higher bits are ignored).
    pub const fn from_bits(bits: u8) -> Attr {
        Attr {
            relaxed_ordering: bits & 2 != 0,
            no_snoop: bits & 1 != 0,
            id_based_ordering: bits & 4 != 0,
        }
    }
}

/// The Address Type field (AT) of a memory request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AddressType {
    /// 00b: the address is untranslated (the default).
    #[default]
    Untranslated,
    /// 01b: an ATS translation request.
    TranslationRequest,
    /// 10b: the address was translated by ATS.
    Translated,
    /// 11b: reserved.
    Reserved,
}

impl AddressType {
    /// The two-bit field value.
    pub const fn bits(self) -> u8 {
        match self {
            AddressType::Untranslated => 0,
            AddressType::TranslationRequest => 1,
            AddressType::Translated => 2,
            AddressType::Reserved => 3,
        }
    }

    /// The address type from its field (higher bits are ignored).
    pub const fn from_bits(bits: u8) -> AddressType {
        match bits & 3 {
            0 => AddressType::Untranslated,
            1 => AddressType::TranslationRequest,
            2 => AddressType::Translated,
            _ => AddressType::Reserved,
        }
    }
}

/// The status a completer reports in a completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CompletionStatus {
    /// 000b: Successful Completion (SC).
    Success,
    /// 001b: Unsupported Request (UR).
    UnsupportedRequest,
    /// 010b: Configuration Request Retry Status (CRS).
    ConfigRetry,
    /// 100b: Completer Abort (CA).
    CompleterAbort,
    /// Any other three-bit value; requesters treat it as UR.
    Reserved(u8),
}

impl From<u8> for CompletionStatus {
    fn from(raw: u8) -> Self {
        match raw {
            0 => CompletionStatus::Success,
            1 => CompletionStatus::UnsupportedRequest,
            2 => CompletionStatus::ConfigRetry,
            4 => CompletionStatus::CompleterAbort,
            other => CompletionStatus::Reserved(other),
        }
    }
}

impl From<CompletionStatus> for u8 {
    fn from(status: CompletionStatus) -> u8 {
        match status {
            CompletionStatus::Success => 0,
            CompletionStatus::UnsupportedRequest => 1,
            CompletionStatus::ConfigRetry => 2,
            CompletionStatus::CompleterAbort => 4,
            CompletionStatus::Reserved(raw) => raw,
        }
    }
}

impl fmt::Display for CompletionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            CompletionStatus::Success => f.write_str("SC"),
            CompletionStatus::UnsupportedRequest => f.write_str("UR"),
            CompletionStatus::ConfigRetry => f.write_str("CRS"),
            CompletionStatus::CompleterAbort => f.write_str("CA"),
            CompletionStatus::Reserved(raw) => write!(f, "reserved({raw:#05b})"),
        }
    }
}

/// The routing subfield r[2:0] of a message's Type field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Routing {
    /// 000b: routed to the Root Complex.
    ToRootComplex,
    /// 001b: routed by the address in header DW 2 and 3.
    ByAddress,
    /// 010b: routed by the ID in header bytes 8 and 9.
    ById,
    /// 011b: broadcast from the Root Complex.
    Broadcast,
    /// 100b: local, terminated at the receiver.
    Local,
    /// 101b: gathered and routed to the Root Complex.
    Gathered,
    /// 110b and 111b: reserved (receivers terminate them as local).
    Reserved(u8),
}

impl From<u8> for Routing {
    fn from(raw: u8) -> Self {
        match raw {
            0 => Routing::ToRootComplex,
            1 => Routing::ByAddress,
            2 => Routing::ById,
            3 => Routing::Broadcast,
            4 => Routing::Local,
            5 => Routing::Gathered,
            other => Routing::Reserved(other),
        }
    }
}

impl From<Routing> for u8 {
    fn from(routing: Routing) -> u8 {
        match routing {
            Routing::ToRootComplex => 0,
            Routing::ByAddress => 1,
            Routing::ById => 2,
            Routing::Broadcast => 3,
            Routing::Local => 4,
            Routing::Gathered => 5,
            Routing::Reserved(raw) => raw,
        }
    }
}

/// One of the four legacy interrupt pins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IntxPin {
    /// INTA#.
    A,
    /// INTB#.
    B,
    /// INTC#.
    C,
    /// INTD#.
    D,
}

impl IntxPin {
    /// The pin from the two low bits of an INTx message code.
    const fn from_bits(bits: u8) -> IntxPin {
        match bits & 3 {
            0 => IntxPin::A,
            1 => IntxPin::B,
            2 => IntxPin::C,
            _ => IntxPin::D,
        }
    }

    /// The pin's offset from INTA in message codes (0 to 3).
    const fn bits(self) -> u8 {
        match self {
            IntxPin::A => 0,
            IntxPin::B => 1,
            IntxPin::C => 2,
            IntxPin::D => 3,
        }
    }
}

/// The Message Code of a Msg or MsgD.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageCode {
    /// 0x00: Unlock.
    Unlock,
    /// 0x10: Latency Tolerance Reporting.
    Ltr,
    /// 0x12: Optimized Buffer Flush/Fill.
    Obff,
    /// 0x14: PM_Active_State_Nak.
    PmActiveStateNak,
    /// 0x18: PM_PME.
    PmPme,
    /// 0x19: PME_Turn_Off.
    PmeTurnOff,
    /// 0x1B: PME_TO_Ack.
    PmeToAck,
    /// 0x20 to 0x23: Assert_INTA to Assert_INTD.
    AssertIntx(IntxPin),
    /// 0x24 to 0x27: Deassert_INTA to Deassert_INTD.
    DeassertIntx(IntxPin),
    /// 0x30: ERR_COR.
    ErrCor,
    /// 0x31: ERR_NONFATAL.
    ErrNonFatal,
    /// 0x33: ERR_FATAL.
    ErrFatal,
    /// 0x50: Set_Slot_Power_Limit.
    SetSlotPowerLimit,
    /// 0x52: PTM Request.
    PtmRequest,
    /// 0x53: PTM Response.
    PtmResponse,
    /// 0x7E: Vendor_Defined Type 0 (unsupported by receivers: UR).
    VendorDefinedType0,
    /// 0x7F: Vendor_Defined Type 1 (silently discarded if unsupported).
    VendorDefinedType1,
    /// Any other code.
    Unknown(u8),
}

impl From<u8> for MessageCode {
    fn from(raw: u8) -> Self {
        match raw {
            0x00 => MessageCode::Unlock,
            0x10 => MessageCode::Ltr,
            0x12 => MessageCode::Obff,
            0x14 => MessageCode::PmActiveStateNak,
            0x18 => MessageCode::PmPme,
            0x19 => MessageCode::PmeTurnOff,
            0x1b => MessageCode::PmeToAck,
            0x20..=0x23 => MessageCode::AssertIntx(IntxPin::from_bits(raw)),
            0x24..=0x27 => MessageCode::DeassertIntx(IntxPin::from_bits(raw)),
            0x30 => MessageCode::ErrCor,
            0x31 => MessageCode::ErrNonFatal,
            0x33 => MessageCode::ErrFatal,
            0x50 => MessageCode::SetSlotPowerLimit,
            0x52 => MessageCode::PtmRequest,
            0x53 => MessageCode::PtmResponse,
            0x7e => MessageCode::VendorDefinedType0,
            0x7f => MessageCode::VendorDefinedType1,
            other => MessageCode::Unknown(other),
        }
    }
}

impl From<MessageCode> for u8 {
    fn from(code: MessageCode) -> u8 {
        match code {
            MessageCode::Unlock => 0x00,
            MessageCode::Ltr => 0x10,
            MessageCode::Obff => 0x12,
            MessageCode::PmActiveStateNak => 0x14,
            MessageCode::PmPme => 0x18,
            MessageCode::PmeTurnOff => 0x19,
            MessageCode::PmeToAck => 0x1b,
            MessageCode::AssertIntx(pin) => 0x20 | pin.bits(),
            MessageCode::DeassertIntx(pin) => 0x24 | pin.bits(),
            MessageCode::ErrCor => 0x30,
            MessageCode::ErrNonFatal => 0x31,
            MessageCode::ErrFatal => 0x33,
            MessageCode::SetSlotPowerLimit => 0x50,
            MessageCode::PtmRequest => 0x52,
            MessageCode::PtmResponse => 0x53,
            MessageCode::VendorDefinedType0 => 0x7e,
            MessageCode::VendorDefinedType1 => 0x7f,
            MessageCode::Unknown(raw) => raw,
        }
    }
}

impl MessageCode {
    /// Whether this is an INTx Assert or Deassert message.
    pub const fn is_intx(self) -> bool {
        matches!(
            self,
            MessageCode::AssertIntx(_) | MessageCode::DeassertIntx(_)
        )
    }

    /// Whether this is a Vendor_Defined message, Type 0 or Type 1.
    pub const fn is_vendor_defined(self) -> bool {
        matches!(
            self,
            MessageCode::VendorDefinedType0 | MessageCode::VendorDefinedType1
        )
    }
}

/// Which configuration request type: 0 for the target bus, 1 to be
/// forwarded by bridges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CfgType {
    /// CfgRd0 / CfgWr0.
    #[default]
    Type0,
    /// CfgRd1 / CfgWr1.
    Type1,
}

/// The fields of a memory read or write request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MemRequest {
    /// Who sends the request.
    pub requester: Bdf,
    /// The tag (for a write with TLP hints, the Steering Tag ST[7:0]).
    pub tag: Tag,
    /// The byte address, double-word aligned. Addresses below 4 GiB are
    /// sent in a 3DW header, others in a 4DW header.
    pub address: u64,
    /// Length in double words, 1 to 1024; for a write it must match the
    /// payload.
    pub length: u16,
    /// First DW Byte Enables (4 bits).
    pub first_be: u8,
    /// Last DW Byte Enables (4 bits); 0 when the length is 1.
    pub last_be: u8,
    /// The Processing Hint (2 bits) when TLP Processing Hints are present
    /// (TH set); `None` when TH is clear.
    pub ph: Option<u8>,
}

/// The fields of a configuration read or write request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CfgRequest {
    /// Type 0 or type 1.
    pub cfg_type: CfgType,
    /// Who sends the request.
    pub requester: Bdf,
    /// The tag.
    pub tag: Tag,
    /// The function addressed.
    pub target: Bdf,
    /// The double-word register number, 0 to 1023: Extended Register
    /// Number in bits 9:6, Register Number in bits 5:0.
    pub register: u16,
    /// First DW Byte Enables (4 bits); the Length is always 1 and the
    /// Last DW BE always 0.
    pub first_be: u8,
}

impl CfgRequest {
    /// The byte offset in configuration space of the register addressed.
    pub const fn offset(&self) -> u16 {
        self.register.wrapping_mul(4)
    }
}

/// The fields of a completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Completion {
    /// Who completes the request.
    pub completer: Bdf,
    /// The completion status.
    pub status: CompletionStatus,
    /// Byte Count Modified (set only by PCI-X completers).
    pub bcm: bool,
    /// Bytes left to complete the request including this completion's,
    /// 1 to 4096 (4096 is encoded as 0).
    pub byte_count: u16,
    /// Who sent the request.
    pub requester: Bdf,
    /// The request's tag.
    pub tag: Tag,
    /// Lower Address: bits 6:0 of the address of the first byte returned
    /// by a memory read completion, 0 for other completions.
    pub lower_address: u8,
}

/// The fields of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Message {
    /// Who sends the message.
    pub requester: Bdf,
    /// The tag (not used by messages; sent as given).
    pub tag: Tag,
    /// How the message is routed.
    pub routing: Routing,
    /// What the message says.
    pub code: MessageCode,
    /// Header bytes 8 to 15, whose meaning depends on routing and code; see
    /// [`Message::address`], [`Message::target`], [`Message::vendor_id`].
    pub fields: [u8; 8],
}

impl Message {
    /// The address of a message routed by address (header DW 2 and 3).
    pub const fn address(&self) -> u64 {
        u64::from_be_bytes(self.fields)
    }

    /// The destination ID of a message routed by ID (header bytes 8, 9).
    pub const fn target(&self) -> Bdf {
        Bdf((u64::from_be_bytes(self.fields) >> 48) as u16)
    }

    /// The vendor ID of a Vendor_Defined message (header bytes 10, 11).
    pub const fn vendor_id(&self) -> u16 {
        (u64::from_be_bytes(self.fields) >> 32) as u16
    }

    /// The vendor-defined header bytes 12 to 15 of a Vendor_Defined message.
    pub const fn vendor_data(&self) -> u32 {
        u64::from_be_bytes(self.fields) as u32
    }
}

/// Which Vendor_Defined message type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VendorType {
    /// Type 0: receivers that do not support it report UR.
    Type0,
    /// Type 1: receivers that do not support it discard it silently.
    Type1,
}

/// What a TLP is, with the fields specific to its kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// MRd: memory read request.
    MemRead(MemRequest),
    /// MWr: memory write request.
    MemWrite(MemRequest),
    /// CfgRd0 / CfgRd1: configuration read request.
    CfgRead(CfgRequest),
    /// CfgWr0 / CfgWr1: configuration write request.
    CfgWrite(CfgRequest),
    /// Cpl (no payload) or CplD (with payload).
    Completion(Completion),
    /// Msg (no payload) or MsgD (with payload).
    Message(Message),
}

/// TLP kinds this codec recognises but does not handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Unsupported {
    /// IORd / IOWr.
    IoRequest,
    /// MRdLk.
    LockedRead,
    /// CplLk / CplDLk.
    LockedCompletion,
    /// FetchAdd, Swap, CAS.
    AtomicOp,
    /// A TLP prefix (Fmt 100b).
    TlpPrefix,
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unsupported::IoRequest => "I/O request",
            Unsupported::LockedRead => "locked memory read",
            Unsupported::LockedCompletion => "locked completion",
            Unsupported::AtomicOp => "AtomicOp request",
            Unsupported::TlpPrefix => "TLP prefix",
        })
    }
}

/// Why bytes are not a TLP this codec accepts, or a [`Tlp`] cannot be
/// encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Error {
    /// The bytes end before the header or the data the header announces.
    Truncated {
        /// Bytes the TLP needs.
        need: usize,
        /// Bytes there are.
        have: usize,
    },
    /// The bytes go on after the data (and digest) the header announces.
    TrailingBytes {
        /// Bytes the TLP needs.
        need: usize,
        /// Bytes there are.
        have: usize,
    },
    /// The buffer given to [`Tlp::emit`] is too small.
    BufferTooSmall {
        /// Bytes the TLP needs.
        need: usize,
        /// Bytes there are.
        have: usize,
    },
    /// The Fmt/Type combination is reserved (malformed TLP).
    ReservedType {
        /// Fmt[2:0].
        fmt: u8,
        /// Type[4:0].
        ty: u8,
    },
    /// A TLP kind that is recognised but not handled.
    Unsupported(Unsupported),
    /// A field holds a value its width cannot carry or the specification
    /// does not allow (emit only).
    FieldRange {
        /// The field, as the specification names it.
        field: &'static str,
        /// The value refused.
        value: u32,
    },
    /// The data payload is not 1 to 1024 whole double words.
    PayloadLength {
        /// Payload length in bytes.
        bytes: usize,
    },
    /// A memory write whose Length does not match its payload.
    LengthMismatch {
        /// The Length field, in double words.
        length: u16,
        /// The payload, in bytes.
        payload: usize,
    },
    /// A TLP kind without data was given a payload.
    UnexpectedPayload {
        /// The payload, in bytes.
        payload: usize,
    },
    /// A configuration request whose Length is not 1 double word.
    ConfigLength {
        /// The Length, in double words.
        length: u16,
    },
    /// A configuration request with a traffic class or ordering attributes
    /// other than 0.
    ConfigAttributes {
        /// The traffic class.
        tc: u8,
        /// Attr[2:0].
        attr: u8,
    },
    /// The byte enables break the rules for the request's length.
    ByteEnables {
        /// Length in double words.
        length: u16,
        /// First DW BE.
        first_be: u8,
        /// Last DW BE.
        last_be: u8,
    },
    /// A memory address whose two low bits are not zero.
    Misaligned {
        /// The address.
        address: u64,
    },
    /// A 4DW memory request for an address below 4 GiB.
    Address64Below4G {
        /// The address.
        address: u64,
    },
    /// A memory request that crosses a 4 KiB boundary.
    Crosses4K {
        /// The address.
        address: u64,
        /// Length in double words.
        length: u16,
    },
    /// A completion with data whose status is not Successful Completion.
    CompletionData {
        /// The completion status.
        status: CompletionStatus,
    },
    /// An INTx message not routed as local.
    MessageRouting {
        /// The message code.
        code: u8,
        /// The routing subfield.
        routing: u8,
    },
    /// A completion was asked for a TLP that does not take one.
    NoCompletionExpected,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::Truncated { need, have } => {
                write!(f, "truncated TLP: need {need} bytes, have {have}")
            }
            Error::TrailingBytes { need, have } => {
                write!(f, "trailing bytes: TLP is {need} bytes, have {have}")
            }
            Error::BufferTooSmall { need, have } => {
                write!(f, "buffer too small: need {need} bytes, have {have}")
            }
            Error::ReservedType { fmt, ty } => {
                write!(f, "reserved Fmt/Type: fmt {fmt:03b} type {ty:05b}")
            }
            Error::Unsupported(what) => write!(f, "unsupported: {what}"),
            Error::FieldRange { field, value } => {
                write!(f, "field {field} out of range: {value:#x}")
            }
            Error::PayloadLength { bytes } => {
                write!(f, "payload of {bytes} bytes is not 1 to 1024 double words")
            }
            Error::LengthMismatch { length, payload } => {
                write!(f, "length {length} DW does not match payload of {payload} bytes")
            }
            Error::UnexpectedPayload { payload } => {
                write!(f, "TLP without data given a payload of {payload} bytes")
            }
            Error::ConfigLength { length } => {
                write!(f, "configuration request length {length} DW, must be 1")
            }
            Error::ConfigAttributes { tc, attr } => write!(
                f,
                "configuration request with TC {tc} and attributes {attr:#05b}, must be 0"
            ),
            Error::ByteEnables {
                length,
                first_be,
                last_be,
            } => write!(
                f,
                "invalid byte enables: first {first_be:#06b} last {last_be:#06b} for length {length} DW"
            ),
            Error::Misaligned { address } => {
                write!(f, "address {address:#x} is not double-word aligned")
            }
            Error::Address64Below4G { address } => {
                write!(f, "64-bit header for address {address:#x} below 4 GiB")
            }
            Error::Crosses4K { address, length } => {
                write!(f, "request at {address:#x} of {length} DW crosses a 4 KiB boundary")
            }
            Error::CompletionData { status } => {
                write!(f, "completion with data and status {status}")
            }
            Error::MessageRouting { code, routing } => {
                write!(f, "message code {code:#04x} with routing {routing:03b}")
            }
            Error::NoCompletionExpected => f.write_str("TLP does not take a completion"),
        }
    }
}

/// Reads `N` bytes at `at`, or zeros if the buffer is too short.
fn read_array<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    at.checked_add(N)
        .and_then(|end| buf.get(at..end))
        .and_then(|s| <[u8; N]>::try_from(s).ok())
        .unwrap_or([0; N])
}

/// A checked view over the bytes of one TLP.
///
/// # Invariants
///
/// After [`Packet::new_checked`] the buffer holds exactly one TLP: its Fmt
/// is not reserved and its length is header + data + digest as the header
/// says. The accessors never panic whatever the buffer holds; on a buffer
/// that was not checked they read zeros past its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer that must hold exactly one TLP.
    ///
    /// # Errors
    ///
    /// [`Error::Truncated`] if the buffer ends before the header, data or
    /// digest; [`Error::TrailingBytes`] if it goes on after them;
    /// [`Error::Unsupported`] for a TLP prefix and [`Error::ReservedType`]
    /// for a reserved Fmt.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let packet = Packet::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds exactly the TLP its header describes.
    ///
    /// # Errors
    ///
    /// As [`Packet::new_checked`].
    pub fn check_len(&self) -> Result<(), Error> {
        let have = self.buffer.as_ref().len();
        let header = match self.header_len() {
            Some(len) => len,
            None if have == 0 => {
                return Err(Error::Truncated {
                    need: HEADER_3DW,
                    have,
                })
            }
            None if self.fmt() == 0b100 => return Err(Error::Unsupported(Unsupported::TlpPrefix)),
            None => {
                return Err(Error::ReservedType {
                    fmt: self.fmt(),
                    ty: self.ty(),
                })
            }
        };
        if have < header {
            return Err(Error::Truncated { need: header, have });
        }
        let need = self.total_len();
        if have < need {
            Err(Error::Truncated { need, have })
        } else if have > need {
            Err(Error::TrailingBytes { need, have })
        } else {
            Ok(())
        }
    }

    /// Gives back the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn byte(&self, at: usize) -> u8 {
        self.buffer.as_ref().get(at).copied().unwrap_or(0)
    }

    fn be16(&self, at: usize) -> u16 {
        u16::from_be_bytes(read_array(self.buffer.as_ref(), at))
    }

    fn be32(&self, at: usize) -> u32 {
        u32::from_be_bytes(read_array(self.buffer.as_ref(), at))
    }

    /// Fmt[2:0]: header size and whether there is data.
    pub fn fmt(&self) -> u8 {
        self.byte(field::FMT_TYPE) >> 5
    }

    /// Type[4:0].
    pub fn ty(&self) -> u8 {
        self.byte(field::FMT_TYPE) & 0x1f
    }

    /// The header length in bytes, or `None` for a prefix or reserved Fmt.
    pub fn header_len(&self) -> Option<usize> {
        match self.fmt() {
            0b000 | 0b010 => Some(HEADER_3DW),
            0b001 | 0b011 => Some(HEADER_4DW),
            _ => None,
        }
    }

    /// Whether Fmt says the TLP carries data.
    pub fn has_data(&self) -> bool {
        self.fmt() & 0b010 != 0
    }

    /// The traffic class, TC[2:0].
    pub fn tc(&self) -> u8 {
        (self.byte(field::FLAGS1) >> 4) & 7
    }

    /// The attributes Attr[2:0].
    pub fn attr(&self) -> Attr {
        let ido = (self.byte(field::FLAGS1) >> 2) & 1;
        let ro_ns = (self.byte(field::FLAGS2) >> 4) & 3;
        Attr::from_bits((ido << 2) | ro_ns)
    }

    /// TH: TLP Processing Hints present.
    pub fn th(&self) -> bool {
        self.byte(field::FLAGS1) & 1 != 0
    }

    /// TD: a TLP digest follows the data.
    pub fn td(&self) -> bool {
        self.byte(field::FLAGS2) & 0x80 != 0
    }

    /// EP: the data is poisoned.
    pub fn ep(&self) -> bool {
        self.byte(field::FLAGS2) & 0x40 != 0
    }

    /// AT: the address type.
    pub fn at(&self) -> AddressType {
        AddressType::from_bits(self.byte(field::FLAGS2) >> 2)
    }

    /// The raw ten-bit Length field.
    pub fn length_field(&self) -> u16 {
        self.be16(field::FLAGS2) & 0x3ff
    }

    /// The Length in double words, 1 to 1024 (0 on the wire is 1024).
    pub fn length_dw(&self) -> u16 {
        match self.length_field() {
            0 => MAX_LENGTH_DW,
            n => n,
        }
    }

    /// The data payload length in bytes that Fmt and Length announce.
    pub fn data_len(&self) -> usize {
        if self.has_data() {
            usize::from(self.length_dw()) * 4
        } else {
            0
        }
    }

    /// The whole TLP length the header announces, digest included.
    pub fn total_len(&self) -> usize {
        let digest = if self.td() { DIGEST_LEN } else { 0 };
        self.header_len().unwrap_or(0) + self.data_len() + digest
    }

    fn is_completion(&self) -> bool {
        self.ty() & 0b11110 == 0b01010
    }

    /// The requester ID (header bytes 4-5 of a request, 8-9 of a completion).
    pub fn requester_id(&self) -> Bdf {
        if self.is_completion() {
            Bdf(self.be16(field::CPL_REQUESTER))
        } else {
            Bdf(self.be16(field::ID1))
        }
    }

    /// The tag, with T9 and T8 (byte 6 of a request, 10 of a completion).
    pub fn tag(&self) -> Tag {
        let at = if self.is_completion() {
            field::CPL_TAG
        } else {
            field::REQ_TAG
        };
        Tag::from_wire(self.byte(at), self.byte(field::FLAGS1))
    }

    /// First DW Byte Enables of a request.
    pub fn first_be(&self) -> u8 {
        self.byte(field::BE_CODE) & 0xf
    }

    /// Last DW Byte Enables of a request.
    pub fn last_be(&self) -> u8 {
        self.byte(field::BE_CODE) >> 4
    }

    /// Whether the TLP is a non-posted request, which its completer must
    /// answer with a completion (MRd, MRdLk, IORd/IOWr, CfgRd/CfgWr,
    /// AtomicOps) — even when it is unsupported or malformed otherwise.
    pub fn needs_completion(&self) -> bool {
        matches!(
            (self.fmt(), self.ty()),
            (0b000 | 0b001, 0b00000 | 0b00001)
                | (0b000 | 0b010, 0b00010 | 0b00100 | 0b00101)
                | (0b010 | 0b011, 0b01100..=0b01110)
        )
    }

    /// Header double word `n` (0 to 3), big-endian.
    pub fn header_dw(&self, n: usize) -> u32 {
        self.be32(n.saturating_mul(4))
    }

    /// The TLP digest (ECRC), if TD is set.
    pub fn digest(&self) -> Option<u32> {
        if !self.td() {
            return None;
        }
        let at = self.header_len().unwrap_or(0) + self.data_len();
        Some(self.be32(at))
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The data payload, borrowed from the buffer (empty when the header
    /// and buffer disagree; [`Packet::new_checked`] rules that out).
    pub fn payload(&self) -> &'a [u8] {
        let buf: &'a [u8] = self.buffer.as_ref();
        let start = self.header_len().unwrap_or(0);
        start
            .checked_add(self.data_len())
            .and_then(|end| buf.get(start..end))
            .unwrap_or(&[])
    }
}

/// What the Fmt/Type fields say, for the kinds that [`Tlp`] represents.
#[derive(Clone, Copy)]
enum Class {
    MemRead,
    MemWrite,
    CfgRead(CfgType),
    CfgWrite(CfgType),
    Completion,
    Message(u8),
}

fn classify(fmt: u8, ty: u8) -> Result<Class, Error> {
    let class = match (fmt, ty) {
        (0b000 | 0b001, 0b00000) => Class::MemRead,
        (0b010 | 0b011, 0b00000) => Class::MemWrite,
        (0b000 | 0b001, 0b00001) => return Err(Error::Unsupported(Unsupported::LockedRead)),
        (0b000 | 0b010, 0b00010) => return Err(Error::Unsupported(Unsupported::IoRequest)),
        (0b000, 0b00100) => Class::CfgRead(CfgType::Type0),
        (0b000, 0b00101) => Class::CfgRead(CfgType::Type1),
        (0b010, 0b00100) => Class::CfgWrite(CfgType::Type0),
        (0b010, 0b00101) => Class::CfgWrite(CfgType::Type1),
        (0b000 | 0b010, 0b01010) => Class::Completion,
        (0b000 | 0b010, 0b01011) => return Err(Error::Unsupported(Unsupported::LockedCompletion)),
        (0b010 | 0b011, 0b01100..=0b01110) => {
            return Err(Error::Unsupported(Unsupported::AtomicOp))
        }
        (0b001 | 0b011, 0b10000..=0b10111) => Class::Message(ty & 7),
        (0b100, _) => return Err(Error::Unsupported(Unsupported::TlpPrefix)),
        _ => return Err(Error::ReservedType { fmt, ty }),
    };
    Ok(class)
}

/// The number of bytes a request of `length` double words with these byte
/// enables reads or writes (the specification's "Calculating Byte Count
/// from Length and Byte Enables"): the Byte Count of the first completion
/// of a memory read.
///
/// A length of 1 with no byte enabled (a zero-length read) counts 1 byte.
///
/// # Examples
///
/// ```
/// use pcieoe::tlp::byte_count;
/// assert_eq!(byte_count(1, 0b1111, 0), 4);
/// assert_eq!(byte_count(1, 0b0110, 0), 2);
/// assert_eq!(byte_count(2, 0b1100, 0b0011), 4);
/// assert_eq!(byte_count(1024, 0b1111, 0b1111), 4096);
/// ```
pub fn byte_count(length: u16, first_be: u8, last_be: u8) -> u16 {
    let first = first_be & 0xf;
    let last = last_be & 0xf;
    // Index of the highest enabled byte in a nibble, as "disabled bytes
    // above it".
    let above = |be: u8| -> u32 { be.leading_zeros().saturating_sub(4).min(4) };
    let below = |be: u8| -> u32 { be.trailing_zeros().min(4) };
    if length <= 1 {
        if first == 0 {
            return 1;
        }
        return 4u32.saturating_sub(above(first) + below(first)) as u16;
    }
    let total = u32::from(length.min(MAX_LENGTH_DW)) * 4;
    total.saturating_sub(below(first) + above(last)) as u16
}

/// The Lower Address of the first completion of a memory read at
/// `address` with these First DW Byte Enables: the low seven bits of the
/// address of the first enabled byte.
///
/// # Examples
///
/// ```
/// use pcieoe::tlp::lower_address;
/// assert_eq!(lower_address(0x1234_5678, 0b1111), 0x78);
/// assert_eq!(lower_address(0x1234_5678, 0b1000), 0x7b);
/// ```
pub fn lower_address(address: u64, first_be: u8) -> u8 {
    let first = first_be & 0xf;
    let skip = if first == 0 {
        0
    } else {
        first.trailing_zeros() as u64
    };
    ((address & 0x7c) | skip) as u8
}

/// The byte enables of a `size`-byte access at byte `offset`, for a
/// configuration or single-DW memory request; `None` unless `size` is 1, 2
/// or 4 and the access is naturally aligned.
///
/// # Examples
///
/// ```
/// use pcieoe::tlp::access_byte_enables;
/// assert_eq!(access_byte_enables(0x04, 4), Some(0b1111));
/// assert_eq!(access_byte_enables(0x06, 2), Some(0b1100));
/// assert_eq!(access_byte_enables(0x3d, 1), Some(0b0010));
/// assert_eq!(access_byte_enables(0x3d, 2), None);
/// ```
pub fn access_byte_enables(offset: u64, size: usize) -> Option<u8> {
    let lane = (offset & 3) as u8;
    let mask = match size {
        1 => 0b0001,
        2 if lane & 1 == 0 => 0b0011,
        4 if lane == 0 => 0b1111,
        _ => return None,
    };
    Some(mask << lane)
}

/// Whether the enabled bytes in a nibble are contiguous and reach `edge`
/// (bit 3 for First DW BE, bit 0 for Last DW BE).
fn contiguous_to(be: u8, toward_high: bool) -> bool {
    if toward_high {
        matches!(be, 0b1111 | 0b1110 | 0b1100 | 0b1000)
    } else {
        matches!(be, 0b1111 | 0b0111 | 0b0011 | 0b0001)
    }
}

/// The byte enable rules of PCIe Base Specification section 2.2.5.
fn check_byte_enables(length: u16, first_be: u8, last_be: u8, address: u64) -> Result<(), Error> {
    let bad = Error::ByteEnables {
        length,
        first_be,
        last_be,
    };
    if first_be > 0xf || last_be > 0xf {
        return Err(bad);
    }
    if length == 1 {
        // Any First DW BE, including none (a zero-length read).
        return if last_be == 0 { Ok(()) } else { Err(bad) };
    }
    if first_be == 0 || last_be == 0 {
        return Err(bad);
    }
    let qw_aligned = address & 7 == 0;
    if length == 2 && qw_aligned {
        // Non-contiguous enables are allowed in a QW-aligned QW.
        return Ok(());
    }
    if contiguous_to(first_be, true) && contiguous_to(last_be, false) {
        Ok(())
    } else {
        Err(bad)
    }
}

fn check_payload(payload: &[u8]) -> Result<(), Error> {
    let bytes = payload.len();
    if bytes % 4 != 0 || bytes > MAX_PAYLOAD {
        return Err(Error::PayloadLength { bytes });
    }
    Ok(())
}

fn check_range(field: &'static str, value: u32, max: u32) -> Result<(), Error> {
    if value > max {
        return Err(Error::FieldRange { field, value });
    }
    Ok(())
}

fn check_mem(tlp: &Tlp<'_>, r: &MemRequest, write: bool) -> Result<(), Error> {
    if write {
        check_payload(tlp.payload)?;
    }
    check_range("length", u32::from(r.length), u32::from(MAX_LENGTH_DW))?;
    if r.length == 0 {
        return Err(Error::FieldRange {
            field: "length",
            value: 0,
        });
    }
    check_range("ph", u32::from(r.ph.unwrap_or(0)), 3)?;
    if write {
        if tlp.payload.len() != usize::from(r.length) * 4 {
            return Err(Error::LengthMismatch {
                length: r.length,
                payload: tlp.payload.len(),
            });
        }
    } else if !tlp.payload.is_empty() {
        return Err(Error::UnexpectedPayload {
            payload: tlp.payload.len(),
        });
    }
    if r.address & 3 != 0 {
        return Err(Error::Misaligned { address: r.address });
    }
    check_byte_enables(r.length, r.first_be, r.last_be, r.address)?;
    let end = (r.address & 0xfff) + u64::from(r.length) * 4;
    if end > 0x1000 {
        return Err(Error::Crosses4K {
            address: r.address,
            length: r.length,
        });
    }
    Ok(())
}

fn check_cfg(tlp: &Tlp<'_>, c: &CfgRequest, write: bool) -> Result<(), Error> {
    check_range("register", u32::from(c.register), 1023)?;
    if c.first_be > 0xf {
        return Err(Error::ByteEnables {
            length: 1,
            first_be: c.first_be,
            last_be: 0,
        });
    }
    if tlp.tc != 0 || tlp.attr.relaxed_ordering || tlp.attr.no_snoop {
        return Err(Error::ConfigAttributes {
            tc: tlp.tc,
            attr: tlp.attr.bits(),
        });
    }
    let payload = tlp.payload.len();
    match (write, payload) {
        (false, 0) | (true, 4) => Ok(()),
        (false, _) => Err(Error::UnexpectedPayload { payload }),
        (true, _) => {
            check_payload(tlp.payload)?;
            Err(Error::ConfigLength {
                length: (payload / 4) as u16,
            })
        }
    }
}

fn check_cpl(tlp: &Tlp<'_>, c: &Completion) -> Result<(), Error> {
    let status = u8::from(c.status);
    if status > 7 || CompletionStatus::from(status) != c.status {
        return Err(Error::FieldRange {
            field: "status",
            value: u32::from(status),
        });
    }
    if c.byte_count == 0 || c.byte_count > 4096 {
        return Err(Error::FieldRange {
            field: "byte_count",
            value: u32::from(c.byte_count),
        });
    }
    check_range("lower_address", u32::from(c.lower_address), 0x7f)?;
    check_payload(tlp.payload)?;
    if !tlp.payload.is_empty() && c.status != CompletionStatus::Success {
        return Err(Error::CompletionData { status: c.status });
    }
    Ok(())
}

fn check_msg(tlp: &Tlp<'_>, m: &Message) -> Result<(), Error> {
    let routing = u8::from(m.routing);
    if routing > 7 || Routing::from(routing) != m.routing {
        return Err(Error::FieldRange {
            field: "routing",
            value: u32::from(routing),
        });
    }
    let code = u8::from(m.code);
    if MessageCode::from(code) != m.code {
        return Err(Error::FieldRange {
            field: "message_code",
            value: u32::from(code),
        });
    }
    check_payload(tlp.payload)?;
    if m.code.is_intx() {
        if m.routing != Routing::Local {
            return Err(Error::MessageRouting { code, routing });
        }
        if !tlp.payload.is_empty() {
            return Err(Error::UnexpectedPayload {
                payload: tlp.payload.len(),
            });
        }
    }
    Ok(())
}

/// One TLP: the fields common to all kinds, the kind with its own fields,
/// and the data payload (smoltcp's `Repr`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tlp<'a> {
    /// Traffic class, 0 to 7.
    pub tc: u8,
    /// Ordering and snoop attributes.
    pub attr: Attr,
    /// EP: the data is poisoned.
    pub ep: bool,
    /// AT: address type (meaningful in memory requests only).
    pub at: AddressType,
    /// The TLP digest (ECRC); `Some` sets TD. Carried, not checked.
    pub digest: Option<u32>,
    /// The kind of TLP and its fields.
    pub kind: Kind,
    /// The data payload, whole double words; empty for kinds without data.
    pub payload: &'a [u8],
}

impl<'a> Tlp<'a> {
    /// A TLP of this kind with TC 0, no attributes, no digest.
    pub const fn new(kind: Kind, payload: &'a [u8]) -> Tlp<'a> {
        Tlp {
            tc: 0,
            attr: Attr {
                relaxed_ordering: false,
                no_snoop: false,
                id_based_ordering: false,
            },
            ep: false,
            at: AddressType::Untranslated,
            digest: None,
            kind,
            payload,
        }
    }

    /// A memory read of `length` double words at `address`.
    pub const fn mem_read(
        requester: Bdf,
        tag: Tag,
        address: u64,
        length: u16,
        first_be: u8,
        last_be: u8,
    ) -> Tlp<'a> {
        Tlp::new(
            Kind::MemRead(MemRequest {
                requester,
                tag,
                address,
                length,
                first_be,
                last_be,
                ph: None,
            }),
            &[],
        )
    }

    /// A memory write of `payload` (whole double words) at `address`.
    pub fn mem_write(
        requester: Bdf,
        address: u64,
        first_be: u8,
        last_be: u8,
        payload: &'a [u8],
    ) -> Tlp<'a> {
        let length = u16::try_from(payload.len() / 4).unwrap_or(u16::MAX);
        Tlp::new(
            Kind::MemWrite(MemRequest {
                requester,
                tag: Tag(0),
                address,
                length,
                first_be,
                last_be,
                ph: None,
            }),
            payload,
        )
    }

    /// A type 0 configuration read of double-word register `register`
    /// (byte offset / 4) of function `target`.
    pub const fn cfg_read(
        requester: Bdf,
        tag: Tag,
        target: Bdf,
        register: u16,
        first_be: u8,
    ) -> Tlp<'a> {
        Tlp::new(
            Kind::CfgRead(CfgRequest {
                cfg_type: CfgType::Type0,
                requester,
                tag,
                target,
                register,
                first_be,
            }),
            &[],
        )
    }

    /// A type 0 configuration write of `data` (the whole register double
    /// word, little-endian as in configuration space; only the bytes
    /// enabled by `first_be` are written).
    pub const fn cfg_write(
        requester: Bdf,
        tag: Tag,
        target: Bdf,
        register: u16,
        first_be: u8,
        data: &'a [u8; 4],
    ) -> Tlp<'a> {
        Tlp::new(
            Kind::CfgWrite(CfgRequest {
                cfg_type: CfgType::Type0,
                requester,
                tag,
                target,
                register,
                first_be,
            }),
            data,
        )
    }

    /// A completion: Cpl if `payload` is empty, CplD otherwise.
    pub const fn completion(
        completer: Bdf,
        status: CompletionStatus,
        requester: Bdf,
        tag: Tag,
        byte_count: u16,
        lower_address: u8,
        payload: &'a [u8],
    ) -> Tlp<'a> {
        Tlp::new(
            Kind::Completion(Completion {
                completer,
                status,
                bcm: false,
                byte_count,
                requester,
                tag,
                lower_address,
            }),
            payload,
        )
    }

    /// The single completion that answers `request` in full: requester,
    /// tag, traffic class and attributes from the request, Byte Count and
    /// Lower Address computed from its length, address and byte enables
    /// (4 and 0 for configuration requests).
    ///
    /// `payload` is the data of a successful read; give an empty one for
    /// a write or an unsuccessful status.
    ///
    /// # Errors
    ///
    /// [`Error::NoCompletionExpected`] if `request` is not a memory read or
    /// a configuration request. The completion is not checked; its
    /// [`Tlp::emit`] is.
    pub fn completion_for(
        request: &Tlp<'_>,
        completer: Bdf,
        status: CompletionStatus,
        payload: &'a [u8],
    ) -> Result<Tlp<'a>, Error> {
        let (requester, tag, byte_count, lower) = match &request.kind {
            Kind::MemRead(r) => (
                r.requester,
                r.tag,
                byte_count(r.length, r.first_be, r.last_be),
                lower_address(r.address, r.first_be),
            ),
            Kind::CfgRead(c) | Kind::CfgWrite(c) => (c.requester, c.tag, 4, 0),
            _ => return Err(Error::NoCompletionExpected),
        };
        let mut cpl = Tlp::completion(
            completer, status, requester, tag, byte_count, lower, payload,
        );
        cpl.tc = request.tc;
        cpl.attr = request.attr;
        Ok(cpl)
    }

    /// An Assert_INTx (`assert`) or Deassert_INTx message for `pin`.
    pub const fn intx(requester: Bdf, pin: IntxPin, assert: bool) -> Tlp<'a> {
        let code = if assert {
            MessageCode::AssertIntx(pin)
        } else {
            MessageCode::DeassertIntx(pin)
        };
        Tlp::new(
            Kind::Message(Message {
                requester,
                tag: Tag(0),
                routing: Routing::Local,
                code,
                fields: [0; 8],
            }),
            &[],
        )
    }

    /// A Vendor_Defined message for `vendor_id`, routed by `routing` (to
    /// `target` when routed by ID), with four vendor-defined header bytes
    /// and an optional payload (MsgD).
    pub fn vendor_defined(
        requester: Bdf,
        vendor_type: VendorType,
        routing: Routing,
        target: Bdf,
        vendor_id: u16,
        data: u32,
        payload: &'a [u8],
    ) -> Tlp<'a> {
        let code = match vendor_type {
            VendorType::Type0 => MessageCode::VendorDefinedType0,
            VendorType::Type1 => MessageCode::VendorDefinedType1,
        };
        let fields =
            ((u64::from(target.raw()) << 48) | (u64::from(vendor_id) << 32) | u64::from(data))
                .to_be_bytes();
        Tlp::new(
            Kind::Message(Message {
                requester,
                tag: Tag(0),
                routing,
                code,
                fields,
            }),
            payload,
        )
    }

    /// Parses a checked packet, borrowing its payload.
    ///
    /// # Errors
    ///
    /// [`Error::ReservedType`], [`Error::Unsupported`], and the wire-only
    /// rules ([`Error::Address64Below4G`], [`Error::ConfigLength`],
    /// [`Error::ByteEnables`] for a configuration request's Last DW BE);
    /// then whatever [`Tlp::check`] refuses.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&'a T>) -> Result<Tlp<'a>, Error> {
        packet.check_len()?;
        let class = classify(packet.fmt(), packet.ty())?;
        let requester = Bdf(packet.be16(field::ID1));
        let tag = packet.tag();
        let kind = match class {
            Class::MemRead | Class::MemWrite => {
                let raw = if packet.header_len() == Some(HEADER_4DW) {
                    let high = u64::from(packet.header_dw(2));
                    let address = (high << 32) | u64::from(packet.header_dw(3));
                    if high == 0 {
                        return Err(Error::Address64Below4G { address });
                    }
                    address
                } else {
                    u64::from(packet.header_dw(2))
                };
                let (address, ph) = if packet.th() {
                    (raw & !3, Some((raw & 3) as u8))
                } else {
                    (raw, None)
                };
                let req = MemRequest {
                    requester,
                    tag,
                    address,
                    length: packet.length_dw(),
                    first_be: packet.first_be(),
                    last_be: packet.last_be(),
                    ph,
                };
                if matches!(class, Class::MemRead) {
                    Kind::MemRead(req)
                } else {
                    Kind::MemWrite(req)
                }
            }
            Class::CfgRead(cfg_type) | Class::CfgWrite(cfg_type) => {
                let length = packet.length_dw();
                if length != 1 {
                    return Err(Error::ConfigLength { length });
                }
                if packet.last_be() != 0 {
                    return Err(Error::ByteEnables {
                        length,
                        first_be: packet.first_be(),
                        last_be: packet.last_be(),
                    });
                }
                let dw2 = packet.header_dw(2);
                let ext = ((dw2 >> 8) & 0xf) as u16;
                let reg = ((dw2 >> 2) & 0x3f) as u16;
                let req = CfgRequest {
                    cfg_type,
                    requester,
                    tag,
                    target: Bdf((dw2 >> 16) as u16),
                    register: (ext << 6) | reg,
                    first_be: packet.first_be(),
                };
                if matches!(class, Class::CfgRead(_)) {
                    Kind::CfgRead(req)
                } else {
                    Kind::CfgWrite(req)
                }
            }
            Class::Completion => {
                let dw1 = packet.header_dw(1);
                let byte_count = match (dw1 & 0xfff) as u16 {
                    0 => 4096,
                    n => n,
                };
                Kind::Completion(Completion {
                    completer: Bdf((dw1 >> 16) as u16),
                    status: CompletionStatus::from(((dw1 >> 13) & 7) as u8),
                    bcm: dw1 & 0x1000 != 0,
                    byte_count,
                    requester: packet.requester_id(),
                    tag,
                    lower_address: (packet.header_dw(2) & 0x7f) as u8,
                })
            }
            Class::Message(routing) => Kind::Message(Message {
                requester,
                tag,
                routing: Routing::from(routing),
                code: MessageCode::from(packet.byte(field::BE_CODE)),
                fields: read_array(packet.buffer.as_ref(), 8),
            }),
        };
        let tlp = Tlp {
            tc: packet.tc(),
            attr: packet.attr(),
            ep: packet.ep(),
            at: packet.at(),
            digest: packet.digest(),
            kind,
            payload: packet.payload(),
        };
        tlp.check()?;
        Ok(tlp)
    }

    /// Checks `bytes` as exactly one TLP and parses it.
    ///
    /// # Errors
    ///
    /// As [`Packet::new_checked`] and [`Tlp::parse`].
    ///
    /// # Examples
    ///
    /// ```
    /// use pcieoe::tlp::{Bdf, Kind, Tlp};
    /// // CfgRd0 from 00:00.0, tag 1, to 01:00.0 register 0, all bytes.
    /// let bytes = [0x04, 0, 0, 1, 0, 0, 1, 0x0f, 1, 0, 0, 0];
    /// let tlp = Tlp::decode(&bytes).unwrap();
    /// let Kind::CfgRead(cfg) = tlp.kind else { panic!() };
    /// assert_eq!(cfg.target.to_string(), "01:00.0");
    /// ```
    pub fn decode(bytes: &'a [u8]) -> Result<Tlp<'a>, Error> {
        Tlp::parse(&Packet::new_checked(bytes)?)
    }

    /// Checks every rule that does not depend on the wire form; both
    /// [`Tlp::parse`] and [`Tlp::emit`] apply it.
    ///
    /// # Errors
    ///
    /// [`Error::FieldRange`] for a field too wide or a non-canonical enum
    /// value, [`Error::PayloadLength`], [`Error::LengthMismatch`],
    /// [`Error::UnexpectedPayload`], [`Error::ConfigLength`],
    /// [`Error::ConfigAttributes`], [`Error::ByteEnables`],
    /// [`Error::Misaligned`], [`Error::Crosses4K`],
    /// [`Error::CompletionData`], [`Error::MessageRouting`].
    pub fn check(&self) -> Result<(), Error> {
        check_range("tc", u32::from(self.tc), 7)?;
        match &self.kind {
            Kind::MemRead(r) => check_mem(self, r, false),
            Kind::MemWrite(r) => check_mem(self, r, true),
            Kind::CfgRead(c) => check_cfg(self, c, false),
            Kind::CfgWrite(c) => check_cfg(self, c, true),
            Kind::Completion(c) => check_cpl(self, c),
            Kind::Message(m) => check_msg(self, m),
        }
    }

    /// The Fmt and Type fields this TLP is sent with.
    pub fn fmt_type(&self) -> (u8, u8) {
        let data = if self.payload.is_empty() { 0 } else { 0b010 };
        match &self.kind {
            Kind::MemRead(r) => (u8::from(r.address > 0xffff_ffff), 0),
            Kind::MemWrite(r) => (0b010 | u8::from(r.address > 0xffff_ffff), 0),
            Kind::CfgRead(c) => (0, 0b00100 | c.cfg_type as u8),
            Kind::CfgWrite(c) => (0b010, 0b00100 | c.cfg_type as u8),
            Kind::Completion(_) => (data, 0b01010),
            Kind::Message(m) => (0b001 | data, 0b10000 | (u8::from(m.routing) & 7)),
        }
    }

    /// The mnemonic the specification uses for this TLP (`MRd`, `CplD`...).
    pub fn name(&self) -> &'static str {
        let data = !self.payload.is_empty();
        match &self.kind {
            Kind::MemRead(_) => "MRd",
            Kind::MemWrite(_) => "MWr",
            Kind::CfgRead(c) if c.cfg_type == CfgType::Type0 => "CfgRd0",
            Kind::CfgRead(_) => "CfgRd1",
            Kind::CfgWrite(c) if c.cfg_type == CfgType::Type0 => "CfgWr0",
            Kind::CfgWrite(_) => "CfgWr1",
            Kind::Completion(_) if data => "CplD",
            Kind::Completion(_) => "Cpl",
            Kind::Message(_) if data => "MsgD",
            Kind::Message(_) => "Msg",
        }
    }

    /// The header length in bytes: 12 or 16.
    pub fn header_len(&self) -> usize {
        if self.fmt_type().0 & 1 != 0 {
            HEADER_4DW
        } else {
            HEADER_3DW
        }
    }

    /// The Length field value in double words (0 for Cpl and Msg; the
    /// requested length for MRd).
    pub fn length_dw(&self) -> u16 {
        match &self.kind {
            Kind::MemRead(r) | Kind::MemWrite(r) => r.length,
            Kind::CfgRead(_) | Kind::CfgWrite(_) => 1,
            Kind::Completion(_) | Kind::Message(_) => (self.payload.len() / 4) as u16,
        }
    }

    /// The number of bytes [`Tlp::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        let digest = if self.digest.is_some() { DIGEST_LEN } else { 0 };
        self.header_len() + self.payload.len() + digest
    }

    /// The header double words after DW 0.
    fn header_tail(&self) -> [u32; 3] {
        let be = |first: u8, last: u8| u32::from(((last & 0xf) << 4) | (first & 0xf));
        let request =
            |id: Bdf, tag: Tag| (u32::from(id.raw()) << 16) | (u32::from(tag.0 & 0xff) << 8);
        match &self.kind {
            Kind::MemRead(r) | Kind::MemWrite(r) => {
                let dw1 = request(r.requester, r.tag) | be(r.first_be, r.last_be);
                let low = (r.address as u32) | u32::from(r.ph.unwrap_or(0) & 3);
                if r.address > 0xffff_ffff {
                    [dw1, (r.address >> 32) as u32, low]
                } else {
                    [dw1, low, 0]
                }
            }
            Kind::CfgRead(c) | Kind::CfgWrite(c) => {
                let dw1 = request(c.requester, c.tag) | be(c.first_be, 0);
                let reg = u32::from(c.register);
                let dw2 = (u32::from(c.target.raw()) << 16)
                    | (((reg >> 6) & 0xf) << 8)
                    | ((reg & 0x3f) << 2);
                [dw1, dw2, 0]
            }
            Kind::Completion(c) => {
                let dw1 = (u32::from(c.completer.raw()) << 16)
                    | (u32::from(u8::from(c.status) & 7) << 13)
                    | (u32::from(c.bcm) << 12)
                    | u32::from(c.byte_count & 0xfff);
                let dw2 = (u32::from(c.requester.raw()) << 16)
                    | (u32::from(c.tag.0 & 0xff) << 8)
                    | u32::from(c.lower_address & 0x7f);
                [dw1, dw2, 0]
            }
            Kind::Message(m) => {
                let dw1 = request(m.requester, m.tag) | u32::from(u8::from(m.code));
                let f = u64::from_be_bytes(m.fields);
                [dw1, (f >> 32) as u32, f as u32]
            }
        }
    }

    /// Writes the TLP at the start of `buf` and returns its length.
    ///
    /// Every byte of the header is written, reserved bits as zero.
    ///
    /// # Errors
    ///
    /// Whatever [`Tlp::check`] refuses, and [`Error::BufferTooSmall`].
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, Error> {
        self.check()?;
        let len = self.buffer_len();
        let have = buf.len();
        let out = buf
            .get_mut(..len)
            .ok_or(Error::BufferTooSmall { need: len, have })?;
        let (fmt, ty) = self.fmt_type();
        let tag = match &self.kind {
            Kind::MemRead(r) | Kind::MemWrite(r) => r.tag,
            Kind::CfgRead(c) | Kind::CfgWrite(c) => c.tag,
            Kind::Completion(c) => c.tag,
            Kind::Message(m) => m.tag,
        };
        let th = matches!(&self.kind, Kind::MemRead(r) | Kind::MemWrite(r) if r.ph.is_some());
        let dw0 = (u32::from(fmt) << 29)
            | (u32::from(ty) << 24)
            | (u32::from((tag.0 >> 9) & 1) << 23)
            | (u32::from(self.tc & 7) << 20)
            | (u32::from((tag.0 >> 8) & 1) << 19)
            | (u32::from(self.attr.id_based_ordering) << 18)
            | (u32::from(th) << 16)
            | (u32::from(self.digest.is_some()) << 15)
            | (u32::from(self.ep) << 14)
            | (u32::from(self.attr.relaxed_ordering) << 13)
            | (u32::from(self.attr.no_snoop) << 12)
            | (u32::from(self.at.bits()) << 10)
            | u32::from(self.length_dw() & 0x3ff);
        let [dw1, dw2, dw3] = self.header_tail();
        let (header, rest) = out.split_at_mut(self.header_len());
        for (chunk, dw) in header.chunks_exact_mut(4).zip([dw0, dw1, dw2, dw3]) {
            chunk.copy_from_slice(&dw.to_be_bytes());
        }
        let (data, digest) = rest.split_at_mut(self.payload.len());
        data.copy_from_slice(self.payload);
        if let Some(ecrc) = self.digest {
            digest.copy_from_slice(&ecrc.to_be_bytes());
        }
        Ok(len)
    }
}

impl fmt::Display for Tlp<'_> {
    /// One line, e.g. `MRd 01:00.0 tag 5 addr 0x1000 len 1 be 0xf/0x0`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())?;
        match &self.kind {
            Kind::MemRead(r) | Kind::MemWrite(r) => write!(
                f,
                " {} tag {} addr {:#x} len {} be {:#x}/{:#x}",
                r.requester, r.tag, r.address, r.length, r.first_be, r.last_be
            )?,
            Kind::CfgRead(c) | Kind::CfgWrite(c) => write!(
                f,
                " {} tag {} to {} reg {:#05x} be {:#x}",
                c.requester,
                c.tag,
                c.target,
                c.offset(),
                c.first_be
            )?,
            Kind::Completion(c) => write!(
                f,
                " {} {} to {} tag {} bc {} la {:#04x}",
                c.completer, c.status, c.requester, c.tag, c.byte_count, c.lower_address
            )?,
            Kind::Message(m) => write!(
                f,
                " {} code {:#04x} routing {:03b}",
                m.requester,
                u8::from(m.code),
                u8::from(m.routing)
            )?,
        }
        if !self.payload.is_empty() {
            write!(f, " data {} bytes", self.payload.len())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use std::string::ToString;
    use std::vec::Vec;

    fn bdf(bus: u8, dev: u8, func: u8) -> Bdf {
        Bdf::new(bus, dev, func).unwrap()
    }

    fn tag(v: u16) -> Tag {
        Tag::new(v).unwrap()
    }

    /// Decodes `bytes`, emits the result into a buffer pre-filled with
    /// 0xa5 and checks that exactly the same bytes come out.
    fn round_trip(bytes: &[u8]) -> Tlp<'_> {
        let tlp = Tlp::decode(bytes).unwrap();
        assert_eq!(tlp.buffer_len(), bytes.len());
        let mut buf = [0xa5u8; MAX_TLP_LEN + 8];
        let n = tlp.emit(&mut buf).unwrap();
        assert_eq!(&buf[..n], bytes, "{tlp:?}");
        assert!(buf[n..].iter().all(|&b| b == 0xa5));
        tlp
    }

    #[test]
    fn bdf_display_and_parts() {
        let b = bdf(0x3a, 0x1f, 7);
        assert_eq!(b.raw(), 0x3aff);
        assert_eq!((b.bus(), b.device(), b.function()), (0x3a, 0x1f, 7));
        assert_eq!(b.to_string(), "3a:1f.7");
        assert_eq!(bdf(1, 0, 0).to_string(), "01:00.0");
        assert_eq!(Bdf::new(0, 0, 8), None);
        assert_eq!(Bdf::from_raw(0x0108), bdf(1, 1, 0));
    }

    #[test]
    fn tag_limits() {
        assert_eq!(Tag::new(1023).map(Tag::get), Some(1023));
        assert_eq!(Tag::new(1024), None);
        assert!(tag(256).is_10bit());
        assert!(!Tag::from(255u8).is_10bit());
    }

    // Fixtures below are written by hand from the header figures of the
    // PCIe Base Specification (section 2.2): byte 0 = Fmt[7:5] Type[4:0];
    // byte 1 = T9 TC[2:0] T8 Attr[2] LN TH; byte 2 = TD EP Attr[1:0]
    // AT[1:0] Length[9:8]; byte 3 = Length[7:0].

    #[test]
    fn mrd32_fixture() {
        let bytes = [
            0x00, 0x00, 0x00, 0x10, // MRd 3DW, length 16
            0x01, 0x00, 0x12, 0xff, // requester 01:00.0, tag 0x12, LBE f FBE f
            0x10, 0x00, 0x00, 0x00, // address 0x1000_0000
        ];
        let tlp = round_trip(&bytes);
        assert_eq!(tlp.name(), "MRd");
        assert_eq!(
            tlp.kind,
            Kind::MemRead(MemRequest {
                requester: bdf(1, 0, 0),
                tag: tag(0x12),
                address: 0x1000_0000,
                length: 16,
                first_be: 0xf,
                last_be: 0xf,
                ph: None,
            })
        );
        assert_eq!(
            tlp,
            Tlp::mem_read(bdf(1, 0, 0), tag(0x12), 0x1000_0000, 16, 0xf, 0xf)
        );
        let p = Packet::new_checked(&bytes[..]).unwrap();
        assert!(p.needs_completion());
        assert_eq!(p.requester_id(), bdf(1, 0, 0));
    }

    #[test]
    fn mrd64_fixture_with_10bit_tag() {
        let bytes = [
            0x20, 0x88, 0x00, 0x01, // MRd 4DW, T9 and T8 set, length 1
            0x01, 0x00, 0xff, 0x0f, // requester 01:00.0, tag[7:0] 0xff, FBE f
            0x00, 0x00, 0x00, 0x01, // address[63:32]
            0x23, 0x45, 0x67, 0x80, // address[31:2]
        ];
        let tlp = round_trip(&bytes);
        let Kind::MemRead(r) = tlp.kind else {
            panic!("{tlp:?}")
        };
        assert_eq!(r.tag.get(), 0x3ff);
        assert_eq!(r.address, 0x1_2345_6780);
        assert_eq!(tlp.header_len(), 16);
    }

    #[test]
    fn mwr32_fixture_with_attributes() {
        let bytes = [
            0x40, 0x24, 0x70, 0x01, // MWr 3DW, TC 2, IDO, EP RO NS, length 1
            0x02, 0x01, 0x00, 0x0f, // requester 02:00.1, tag 0, FBE f
            0xfe, 0xe0, 0x00, 0x00, // address 0xfee0_0000
            0x41, 0x00, 0x00, 0x00, // data
        ];
        let tlp = round_trip(&bytes);
        assert_eq!(tlp.tc, 2);
        assert!(tlp.ep);
        assert_eq!(
            tlp.attr,
            Attr {
                relaxed_ordering: true,
                no_snoop: true,
                id_based_ordering: true
            }
        );
        assert_eq!(tlp.attr.bits(), 7);
        assert_eq!(tlp.payload, &[0x41, 0, 0, 0]);
        let mut expect = Tlp::mem_write(bdf(2, 0, 1), 0xfee0_0000, 0xf, 0, &[0x41, 0, 0, 0]);
        expect.tc = 2;
        expect.ep = true;
        expect.attr = Attr::from_bits(7);
        assert_eq!(tlp, expect);
        assert!(!Packet::new_unchecked(&bytes[..]).needs_completion());
    }

    #[test]
    fn mwr64_fixture_with_digest() {
        let bytes = [
            0x60, 0x00, 0x80, 0x02, // MWr 4DW, TD, length 2
            0x00, 0x08, 0x00, 0xff, // requester 00:01.0, LBE f FBE f
            0x00, 0x00, 0x00, 0x08, // address[63:32]
            0x00, 0x00, 0x00, 0x00, // address[31:2]
            0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, // data
            0xde, 0xad, 0xbe, 0xef, // digest
        ];
        let tlp = round_trip(&bytes);
        assert_eq!(tlp.digest, Some(0xdead_beef));
        assert_eq!(tlp.payload.len(), 8);
        assert_eq!(tlp.length_dw(), 2);
    }

    #[test]
    fn mwr_with_processing_hint() {
        let bytes = [
            0x40, 0x01, 0x00, 0x01, // MWr 3DW, TH, length 1
            0x01, 0x00, 0x33, 0x0f, // requester 01:00.0, ST 0x33, FBE f
            0x00, 0x00, 0x20, 0x02, // address 0x2000, PH 10b
            1, 2, 3, 4,
        ];
        let tlp = round_trip(&bytes);
        let Kind::MemWrite(r) = tlp.kind else {
            panic!()
        };
        assert_eq!((r.address, r.ph, r.tag.get()), (0x2000, Some(2), 0x33));
    }

    #[test]
    fn cfgrd0_fixture_with_extended_register() {
        let bytes = [
            0x04, 0x00, 0x00, 0x01, // CfgRd0, length 1
            0x00, 0x00, 0x07, 0x0f, // requester 00:00.0, tag 7, FBE f
            0x03, 0xff, 0x01, 0x08, // target 03:1f.7, ext reg 1, reg 2
        ];
        let tlp = round_trip(&bytes);
        assert_eq!(tlp.name(), "CfgRd0");
        let Kind::CfgRead(c) = tlp.kind else { panic!() };
        assert_eq!(c.target.to_string(), "03:1f.7");
        assert_eq!((c.register, c.offset()), (0x42, 0x108));
        assert_eq!(
            tlp,
            Tlp::cfg_read(Bdf::default(), tag(7), bdf(3, 31, 7), 0x42, 0xf)
        );
    }

    #[test]
    fn cfgwr1_fixture() {
        let bytes = [
            0x45, 0x00, 0x00, 0x01, // CfgWr1, length 1
            0x00, 0x00, 0x08, 0x03, // requester 00:00.0, tag 8, FBE 0011
            0x05, 0x00, 0x00, 0x10, // target 05:00.0, register 4 (offset 0x10)
            0x78, 0x56, 0x00, 0x00, // data
        ];
        let tlp = round_trip(&bytes);
        assert_eq!(tlp.name(), "CfgWr1");
        let mut expect = Tlp::cfg_write(
            Bdf::default(),
            tag(8),
            bdf(5, 0, 0),
            4,
            3,
            &[0x78, 0x56, 0, 0],
        );
        if let Kind::CfgWrite(c) = &mut expect.kind {
            c.cfg_type = CfgType::Type1;
        }
        assert_eq!(tlp, expect);
    }

    #[test]
    fn cpl_ur_fixture() {
        let bytes = [
            0x0a, 0x00, 0x00, 0x00, // Cpl
            0x01, 0x00, 0x20, 0x04, // completer 01:00.0, UR, byte count 4
            0x00, 0x00, 0x07, 0x00, // requester 00:00.0, tag 7, lower address 0
        ];
        let tlp = round_trip(&bytes);
        assert_eq!(tlp.name(), "Cpl");
        let req = Tlp::cfg_read(Bdf::default(), tag(7), bdf(1, 0, 0), 0, 0xf);
        let cpl = Tlp::completion_for(
            &req,
            bdf(1, 0, 0),
            CompletionStatus::UnsupportedRequest,
            &[],
        )
        .unwrap();
        assert_eq!(tlp, cpl);
        let p = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!((p.requester_id(), p.tag()), (Bdf::default(), tag(7)));
    }

    #[test]
    fn cpl_status_values() {
        for (raw, status) in [
            (0u8, CompletionStatus::Success),
            (1, CompletionStatus::UnsupportedRequest),
            (2, CompletionStatus::ConfigRetry),
            (4, CompletionStatus::CompleterAbort),
            (5, CompletionStatus::Reserved(5)),
        ] {
            let bytes = [
                0x0a,
                0,
                0,
                0,
                0x01,
                0x00,
                (raw << 5) | 0x10,
                0x04,
                0,
                0,
                0,
                0,
            ];
            let tlp = round_trip(&bytes);
            let Kind::Completion(c) = tlp.kind else {
                panic!()
            };
            assert_eq!(c.status, status);
            assert!(c.bcm);
            assert_eq!(CompletionStatus::from(raw), status);
            assert_eq!(u8::from(status), raw);
        }
        assert_eq!(CompletionStatus::ConfigRetry.to_string(), "CRS");
    }

    #[test]
    fn cpld_fixture_byte_count_4096() {
        let bytes = [
            0x4a, 0x08, 0x00, 0x02, // CplD, T8, length 2
            0x01, 0x00, 0x00, 0x00, // completer 01:00.0, SC, byte count 0 = 4096
            0x00, 0x00, 0x05, 0x40, // requester 00:00.0, tag[7:0] 5, lower address 0x40
            1, 2, 3, 4, 5, 6, 7, 8,
        ];
        let tlp = round_trip(&bytes);
        assert_eq!(tlp.name(), "CplD");
        let Kind::Completion(c) = tlp.kind else {
            panic!()
        };
        assert_eq!(
            (c.byte_count, c.tag.get(), c.lower_address),
            (4096, 0x105, 0x40)
        );
        assert_eq!(c.status, CompletionStatus::Success);
    }

    #[test]
    fn msg_assert_inta_fixture() {
        let bytes = [
            0x34, 0x00, 0x00, 0x00, // Msg, routing 100 (local)
            0x01, 0x00, 0x00, 0x20, // requester 01:00.0, Assert_INTA
            0, 0, 0, 0, 0, 0, 0, 0,
        ];
        let tlp = round_trip(&bytes);
        assert_eq!(tlp, Tlp::intx(bdf(1, 0, 0), IntxPin::A, true));
        let deassert_d = Tlp::intx(bdf(1, 0, 0), IntxPin::D, false);
        let mut buf = [0u8; 16];
        deassert_d.emit(&mut buf).unwrap();
        assert_eq!(buf[7], 0x27);
    }

    #[test]
    fn msgd_vendor_defined_fixture() {
        let bytes = [
            0x72, 0x00, 0x00, 0x01, // MsgD, routing 010 (by ID), length 1
            0x01, 0x00, 0x00, 0x7f, // requester 01:00.0, Vendor_Defined Type 1
            0x00, 0x00, 0x1a, 0xf4, // destination 00:00.0, vendor 0x1af4
            0xca, 0xfe, 0xba, 0xbe, // vendor-defined
            0xaa, 0xbb, 0xcc, 0xdd, // data
        ];
        let tlp = round_trip(&bytes);
        let Kind::Message(m) = tlp.kind else { panic!() };
        assert_eq!(m.code, MessageCode::VendorDefinedType1);
        assert_eq!(m.routing, Routing::ById);
        assert_eq!(
            (m.target(), m.vendor_id(), m.vendor_data()),
            (Bdf::default(), 0x1af4, 0xcafe_babe)
        );
        let built = Tlp::vendor_defined(
            bdf(1, 0, 0),
            VendorType::Type1,
            Routing::ById,
            Bdf::default(),
            0x1af4,
            0xcafe_babe,
            &[0xaa, 0xbb, 0xcc, 0xdd],
        );
        assert_eq!(tlp, built);
    }

    #[test]
    fn message_codes_convert_both_ways() {
        for raw in 0..=255u8 {
            assert_eq!(u8::from(MessageCode::from(raw)), raw);
        }
        for raw in 0..8u8 {
            assert_eq!(u8::from(Routing::from(raw)), raw);
            assert_eq!(u8::from(CompletionStatus::from(raw)), raw);
        }
    }

    #[test]
    fn io_requests_are_unsupported_but_answerable() {
        let bytes = [0x02, 0, 0, 1, 0x00, 0x08, 0x09, 0x0f, 0, 0, 0x0c, 0xf8];
        assert_eq!(
            Tlp::decode(&bytes),
            Err(Error::Unsupported(Unsupported::IoRequest))
        );
        let p = Packet::new_checked(&bytes[..]).unwrap();
        assert!(p.needs_completion());
        assert_eq!((p.requester_id(), p.tag()), (bdf(0, 1, 0), tag(9)));
        assert_eq!(
            Error::Unsupported(Unsupported::IoRequest).to_string(),
            "unsupported: I/O request"
        );
        let iowr = [0x42, 0, 0, 1, 0, 0, 0, 0x0f, 0, 0, 0, 0, 1, 2, 3, 4];
        assert_eq!(
            Tlp::decode(&iowr),
            Err(Error::Unsupported(Unsupported::IoRequest))
        );
    }

    #[test]
    fn other_unsupported_and_reserved_types() {
        let hdr = |b0: u8| {
            let mut v = Vec::from([b0, 0, 0, 1, 0, 0, 0, 0x0f, 0, 0, 0x10, 0, 0, 0, 0, 0]);
            v.truncate(if b0 & 0x20 != 0 { 16 } else { 12 });
            if b0 & 0x40 != 0 {
                v.extend_from_slice(&[0; 4]);
            }
            v
        };
        let cases = [
            (0x01, Error::Unsupported(Unsupported::LockedRead)),
            (0x0b, Error::Unsupported(Unsupported::LockedCompletion)),
            (0x4c, Error::Unsupported(Unsupported::AtomicOp)),
            (0x6e, Error::Unsupported(Unsupported::AtomicOp)),
            (0x03, Error::ReservedType { fmt: 0, ty: 3 }),
            (0x24, Error::ReservedType { fmt: 1, ty: 4 }),
            (0x2a, Error::ReservedType { fmt: 1, ty: 0x0a }),
            (0x14, Error::ReservedType { fmt: 0, ty: 0x14 }),
            (0x1b, Error::ReservedType { fmt: 0, ty: 0x1b }),
        ];
        for (b0, err) in cases {
            assert_eq!(Tlp::decode(&hdr(b0)), Err(err), "byte0 {b0:#x}");
        }
        assert_eq!(
            Tlp::decode(&[0x80, 0, 0, 0]),
            Err(Error::Unsupported(Unsupported::TlpPrefix))
        );
        assert_eq!(
            Tlp::decode(&[0xa0, 0, 0, 0]),
            Err(Error::ReservedType { fmt: 5, ty: 0 })
        );
    }

    #[test]
    fn truncated_and_trailing() {
        let mrd = [0x00, 0, 0, 1, 1, 0, 0, 0x0f, 0, 0, 0x10, 0];
        let e = Tlp::decode(&mrd[..7]).unwrap_err();
        assert_eq!(e, Error::Truncated { need: 12, have: 7 });
        assert_eq!(e.to_string(), "truncated TLP: need 12 bytes, have 7");
        assert_eq!(
            Tlp::decode(&[]),
            Err(Error::Truncated { need: 12, have: 0 })
        );
        let mut long = Vec::from(mrd);
        long.push(0);
        assert_eq!(
            Tlp::decode(&long),
            Err(Error::TrailingBytes { need: 12, have: 13 })
        );
        // MWr of 2 DW with only one DW of data.
        let mwr = [0x40, 0, 0, 2, 1, 0, 0, 0xff, 0, 0, 0x10, 0, 1, 2, 3, 4];
        assert_eq!(
            Tlp::decode(&mwr),
            Err(Error::Truncated { need: 20, have: 16 })
        );
        // Digest announced but missing.
        let mwr = [0x40, 0, 0x80, 1, 1, 0, 0, 0x0f, 0, 0, 0x10, 0, 1, 2, 3, 4];
        assert_eq!(
            Tlp::decode(&mwr),
            Err(Error::Truncated { need: 20, have: 16 })
        );
    }

    #[test]
    fn length_zero_means_1024() {
        let mut bytes = Vec::from([0x40, 0, 0, 0, 1, 0, 0, 0xff, 0, 0, 0x10, 0]);
        bytes.resize(12 + 4096, 0x5a);
        let tlp = round_trip(&bytes);
        assert_eq!(tlp.length_dw(), 1024);
        let mrd = [0x00, 0, 0, 0, 1, 0, 0, 0xff, 0, 0, 0x10, 0];
        let Kind::MemRead(r) = round_trip(&mrd).kind else {
            panic!()
        };
        assert_eq!(r.length, 1024);
    }

    #[test]
    fn address_rules() {
        // 4DW header with address below 4 GiB.
        let bytes = [0x20, 0, 0, 1, 1, 0, 0, 0x0f, 0, 0, 0, 0, 0x10, 0, 0, 0];
        assert_eq!(
            Tlp::decode(&bytes),
            Err(Error::Address64Below4G {
                address: 0x1000_0000
            })
        );
        // Low address bits set without TH.
        let bytes = [0x00, 0, 0, 1, 1, 0, 0, 0x0f, 0x10, 0, 0, 2];
        assert_eq!(
            Tlp::decode(&bytes),
            Err(Error::Misaligned {
                address: 0x1000_0002
            })
        );
        // Crossing 4 KiB: 2 DW at 0xffc.
        let bytes = [0x00, 0, 0, 2, 1, 0, 0, 0xff, 0, 0, 0x0f, 0xfc];
        assert_eq!(
            Tlp::decode(&bytes),
            Err(Error::Crosses4K {
                address: 0xffc,
                length: 2
            })
        );
        // 1024 DW from a page start is fine, from one DW further is not.
        assert!(
            Tlp::mem_read(Bdf::default(), tag(0), 0x2000, 1024, 0xf, 0xf)
                .check()
                .is_ok()
        );
        assert_eq!(
            Tlp::mem_read(Bdf::default(), tag(0), 0x2004, 1024, 0xf, 0xf).check(),
            Err(Error::Crosses4K {
                address: 0x2004,
                length: 1024
            })
        );
        // Top of the 64-bit space.
        let top = Tlp::mem_read(Bdf::default(), tag(0), u64::MAX - 0xfff, 1024, 0xf, 0xf);
        let mut buf = [0u8; 16];
        assert_eq!(top.emit(&mut buf), Ok(16));
        assert_eq!(Tlp::decode(&buf), Ok(top));
    }

    #[test]
    fn byte_enable_rules() {
        let mrd = |length, first_be, last_be, address| {
            Tlp::mem_read(Bdf::default(), tag(0), address, length, first_be, last_be).check()
        };
        let be_err = |length, first_be, last_be| {
            Err(Error::ByteEnables {
                length,
                first_be,
                last_be,
            })
        };
        assert_eq!(mrd(1, 0b0101, 0, 0x1000), Ok(()));
        assert_eq!(mrd(1, 0, 0, 0x1000), Ok(()));
        assert_eq!(mrd(1, 0xf, 1, 0x1000), be_err(1, 0xf, 1));
        assert_eq!(mrd(2, 0, 0xf, 0x1000), be_err(2, 0, 0xf));
        assert_eq!(mrd(2, 0xf, 0, 0x1000), be_err(2, 0xf, 0));
        assert_eq!(mrd(2, 0b0101, 0b1010, 0x1000), Ok(()));
        assert_eq!(mrd(2, 0b0101, 0b1010, 0x1004), be_err(2, 0b0101, 0b1010));
        assert_eq!(mrd(2, 0b1100, 0b0011, 0x1004), Ok(()));
        assert_eq!(mrd(3, 0b1110, 0b0111, 0x1000), Ok(()));
        assert_eq!(mrd(3, 0b0111, 0b0111, 0x1000), be_err(3, 0b0111, 0b0111));
        assert_eq!(mrd(3, 0b1110, 0b1110, 0x1000), be_err(3, 0b1110, 0b1110));
        assert_eq!(mrd(1, 0x1f, 0, 0x1000), be_err(1, 0x1f, 0));
    }

    #[test]
    fn config_rules() {
        // Length 2.
        let bytes = [
            0x44, 0, 0, 2, 0, 0, 0, 0x0f, 1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8,
        ];
        assert_eq!(Tlp::decode(&bytes), Err(Error::ConfigLength { length: 2 }));
        // Last DW BE set.
        let bytes = [0x04, 0, 0, 1, 0, 0, 0, 0x1f, 1, 0, 0, 0];
        assert_eq!(
            Tlp::decode(&bytes),
            Err(Error::ByteEnables {
                length: 1,
                first_be: 0xf,
                last_be: 1
            })
        );
        // TC 1.
        let bytes = [0x04, 0x10, 0, 1, 0, 0, 0, 0x0f, 1, 0, 0, 0];
        assert_eq!(
            Tlp::decode(&bytes),
            Err(Error::ConfigAttributes { tc: 1, attr: 0 })
        );
        // Reserved bits in the register bytes are ignored.
        let bytes = [0x04, 0, 0, 1, 0, 0, 0, 0x0f, 1, 0, 0xf0, 0x03];
        let Ok(Tlp {
            kind: Kind::CfgRead(c),
            ..
        }) = Tlp::decode(&bytes)
        else {
            panic!()
        };
        assert_eq!(c.register, 0);
        // Emit refuses a register past 4 KiB and a short write.
        let t = Tlp::cfg_read(Bdf::default(), tag(0), Bdf::default(), 1024, 0xf);
        assert_eq!(
            t.emit(&mut [0; 12]),
            Err(Error::FieldRange {
                field: "register",
                value: 1024
            })
        );
        let mut t = Tlp::cfg_write(Bdf::default(), tag(0), Bdf::default(), 1, 0xf, &[0; 4]);
        t.payload = &[0; 8];
        assert_eq!(t.check(), Err(Error::ConfigLength { length: 2 }));
    }

    #[test]
    fn completion_and_message_rules() {
        // CplD with status UR.
        let bytes = [0x4a, 0, 0, 1, 1, 0, 0x20, 4, 0, 0, 0, 0, 1, 2, 3, 4];
        assert_eq!(
            Tlp::decode(&bytes),
            Err(Error::CompletionData {
                status: CompletionStatus::UnsupportedRequest
            })
        );
        // Assert_INTA routed to the root complex.
        let bytes = [0x30, 0, 0, 0, 1, 0, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            Tlp::decode(&bytes),
            Err(Error::MessageRouting {
                code: 0x20,
                routing: 0
            })
        );
        let t = Tlp::completion(
            Bdf::default(),
            CompletionStatus::Success,
            Bdf::default(),
            tag(0),
            0,
            0,
            &[],
        );
        assert_eq!(
            t.check(),
            Err(Error::FieldRange {
                field: "byte_count",
                value: 0
            })
        );
        let t = Tlp::completion(
            Bdf::default(),
            CompletionStatus::Success,
            Bdf::default(),
            tag(0),
            4,
            0x80,
            &[],
        );
        assert_eq!(
            t.check(),
            Err(Error::FieldRange {
                field: "lower_address",
                value: 0x80
            })
        );
        let t = Tlp::completion(
            Bdf::default(),
            CompletionStatus::Reserved(1),
            Bdf::default(),
            tag(0),
            4,
            0,
            &[],
        );
        assert_eq!(
            t.check(),
            Err(Error::FieldRange {
                field: "status",
                value: 1
            })
        );
        let t = Tlp::completion(
            Bdf::default(),
            CompletionStatus::Reserved(9),
            Bdf::default(),
            tag(0),
            4,
            0,
            &[],
        );
        assert_eq!(
            t.check(),
            Err(Error::FieldRange {
                field: "status",
                value: 9
            })
        );
    }

    #[test]
    fn emit_refusals() {
        let mut buf = [0u8; 64];
        let w = Tlp::mem_write(Bdf::default(), 0x1000, 0xf, 0, &[1, 2, 3]);
        assert_eq!(w.emit(&mut buf), Err(Error::PayloadLength { bytes: 3 }));
        let w = Tlp::mem_write(Bdf::default(), 0x1000, 0xf, 0, &[]);
        assert_eq!(
            w.emit(&mut buf),
            Err(Error::FieldRange {
                field: "length",
                value: 0
            })
        );
        let mut w = Tlp::mem_write(Bdf::default(), 0x1000, 0xf, 0xf, &[0; 8]);
        if let Kind::MemWrite(r) = &mut w.kind {
            r.length = 3;
        }
        assert_eq!(
            w.emit(&mut buf),
            Err(Error::LengthMismatch {
                length: 3,
                payload: 8
            })
        );
        let mut r = Tlp::mem_read(Bdf::default(), tag(0), 0x1000, 1, 0xf, 0);
        r.payload = &[0; 4];
        assert_eq!(
            r.emit(&mut buf),
            Err(Error::UnexpectedPayload { payload: 4 })
        );
        let mut r = Tlp::mem_read(Bdf::default(), tag(0), 0x1000, 1, 0xf, 0);
        r.tc = 8;
        assert_eq!(
            r.emit(&mut buf),
            Err(Error::FieldRange {
                field: "tc",
                value: 8
            })
        );
        let r = Tlp::mem_read(Bdf::default(), tag(0), 0x1_0000_0000, 1, 0xf, 0);
        assert_eq!(
            r.emit(&mut buf[..15]),
            Err(Error::BufferTooSmall { need: 16, have: 15 })
        );
        let big = [0u8; 4100];
        let w = Tlp::mem_write(Bdf::default(), 0x1000, 0xf, 0xf, &big);
        assert_eq!(w.check(), Err(Error::PayloadLength { bytes: 4100 }));
    }

    #[test]
    fn byte_count_table() {
        // Length 1 rows of the specification's byte count table.
        for (fbe, count) in [
            (0b1001, 4),
            (0b1111, 4),
            (0b0101, 3),
            (0b0111, 3),
            (0b1010, 3),
            (0b1110, 3),
            (0b0011, 2),
            (0b0110, 2),
            (0b1100, 2),
            (0b0001, 1),
            (0b0010, 1),
            (0b0100, 1),
            (0b1000, 1),
            (0b0000, 1),
        ] {
            assert_eq!(byte_count(1, fbe, 0), count, "fbe {fbe:04b}");
        }
        // Length > 1: first enabled byte through last enabled byte.
        for (fbe, lbe, less) in [
            (0b0001, 0b1000, 0),
            (0b1111, 0b0100, 1),
            (0b0011, 0b0010, 2),
            (0b1111, 0b0001, 3),
            (0b1110, 0b1111, 1),
            (0b0110, 0b0111, 2),
            (0b1100, 0b0011, 4),
            (0b1000, 0b0001, 6),
        ] {
            assert_eq!(byte_count(3, fbe, lbe), 12 - less, "{fbe:04b} {lbe:04b}");
        }
        assert_eq!(lower_address(0x1000, 0), 0);
        assert_eq!(lower_address(0x10fc, 0b0100), 0x7e);
    }

    #[test]
    fn completion_for_memory_read() {
        let mut req = Tlp::mem_read(bdf(0, 0, 0), tag(300), 0x1_0000_0044, 2, 0b1100, 0b0011);
        req.attr.relaxed_ordering = true;
        req.tc = 3;
        let data = [0u8; 8];
        let cpl =
            Tlp::completion_for(&req, bdf(1, 0, 0), CompletionStatus::Success, &data).unwrap();
        let Kind::Completion(c) = cpl.kind else {
            panic!()
        };
        assert_eq!((c.byte_count, c.lower_address, c.tag.get()), (4, 0x46, 300));
        assert_eq!((cpl.tc, cpl.attr.relaxed_ordering), (3, true));
        let mut buf = [0u8; 32];
        let n = cpl.emit(&mut buf).unwrap();
        assert_eq!(Tlp::decode(&buf[..n]), Ok(cpl));
        let msg = Tlp::intx(Bdf::default(), IntxPin::B, true);
        assert_eq!(
            Tlp::completion_for(&msg, Bdf::default(), CompletionStatus::Success, &[]),
            Err(Error::NoCompletionExpected)
        );
    }

    #[test]
    fn display_lines() {
        let t = Tlp::mem_read(bdf(1, 0, 0), tag(5), 0x1000, 1, 0xf, 0);
        assert_eq!(
            t.to_string(),
            "MRd 01:00.0 tag 5 addr 0x1000 len 1 be 0xf/0x0"
        );
        assert_eq!(
            Error::ReservedType { fmt: 5, ty: 1 }.to_string(),
            "reserved Fmt/Type: fmt 101 type 00001"
        );
    }
}
