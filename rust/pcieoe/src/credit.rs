// SPDX-License-Identifier: GPL-2.0

//! Credit-based flow control, modelled on PCIe (Base spec, "Flow Control").
//!
//! A receiver owns buffers for three classes of TLP: posted requests
//! (memory writes, messages), non-posted requests (memory/IO/config reads,
//! config writes, atomics) and completions. Each class has a *header* credit
//! (one per TLP) and a *data* credit (one per 16 bytes = 4 DW of payload).
//! The receiver advertises a cumulative *credit limit* per counter; the
//! transmitter keeps a cumulative count of *credits consumed* and may send a
//! TLP only if, after it, the consumed count does not pass the limit. Both
//! counters wrap: PCIe uses 8-bit header and 12-bit data fields; PCIeoE
//! carries all six counters as 16-bit fields ([`FIELD_BITS`]) and compares
//! them modulo 2^16, so at most [`MAX_CREDITS`] credits of one counter may
//! be outstanding (half the modulus, as in PCIe).
//!
//! An initial advertisement of 0 means *infinite* (PCIe allows it for
//! completions, which a requester must always be able to sink); such a
//! counter is never checked and later limits for it are ignored.
//!
//! Limits travel piggybacked on every PCIeoE frame (`CREDIT` flag); since
//! they are cumulative a lost update is repaired by the next one.

use core::fmt;

/// Width of every credit counter on the wire.
pub const FIELD_BITS: u32 = 16;

/// The most credits of one counter that a receiver may advertise as its
/// initial allocation (half the counter modulus, so that modular comparison
/// stays unambiguous).
pub const MAX_CREDITS: u16 = (1 << (FIELD_BITS - 1)) - 1;

/// Bytes covered by one data credit (4 DW).
pub const DATA_CREDIT_BYTES: usize = 16;

/// The three PCIe flow-control classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FcClass {
    /// Posted requests: memory writes, messages.
    Posted,
    /// Non-posted requests: reads, config and I/O accesses, atomics.
    NonPosted,
    /// Completions, with or without data.
    Completion,
}

/// The credits one TLP costs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cost {
    /// The flow-control class of the TLP.
    pub class: FcClass,
    /// Data credits (payload length rounded up to 16 bytes); header cost is
    /// always one.
    pub data: u16,
}

/// Why a TLP could not be classified for flow control.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClassifyError {
    /// Shorter than the 4-byte first DW of a TLP header.
    Truncated,
    /// A Fmt/Type combination that is not a TLP this engine carries (TLP
    /// prefixes, reserved encodings). Carries byte 0.
    UnknownType(u8),
}

impl fmt::Display for ClassifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ClassifyError::Truncated => f.write_str("TLP shorter than one DW"),
            ClassifyError::UnknownType(b) => write!(f, "unknown TLP Fmt/Type {b:#04x}"),
        }
    }
}

impl Cost {
    /// The cost of a TLP with `data_bytes` bytes of payload.
    pub fn new(class: FcClass, data_bytes: usize) -> Cost {
        let units = data_bytes.div_ceil(DATA_CREDIT_BYTES);
        Cost {
            class,
            data: u16::try_from(units).unwrap_or(u16::MAX),
        }
    }

    /// Classifies a TLP from the Fmt, Type and Length fields of its first DW
    /// (PCIe Base spec, "Fmt and Type Field Encodings"), without decoding
    /// the rest. Only the first four bytes are read.
    ///
    /// # Errors
    ///
    /// [`ClassifyError::Truncated`] for fewer than four bytes,
    /// [`ClassifyError::UnknownType`] for TLP prefixes and reserved types.
    ///
    /// # Examples
    ///
    /// ```
    /// use pcieoe::credit::{Cost, FcClass};
    /// // MWr32 (Fmt 010, Type 00000) with Length = 8 DW: posted, 2 credits.
    /// let c = Cost::of_tlp(&[0x40, 0, 0, 8]).unwrap();
    /// assert_eq!((c.class, c.data), (FcClass::Posted, 2));
    /// ```
    pub fn of_tlp(tlp: &[u8]) -> Result<Cost, ClassifyError> {
        let (b0, b2, b3) = match tlp {
            [b0, _, b2, b3, ..] => (*b0, *b2, *b3),
            _ => return Err(ClassifyError::Truncated),
        };
        let fmt = b0 >> 5;
        let ty = b0 & 0x1f;
        let with_data = match fmt {
            0b000 | 0b001 => false,
            0b010 | 0b011 => true,
            _ => return Err(ClassifyError::UnknownType(b0)),
        };
        let class = match ty {
            // MRd/MWr: a write is posted, a read is not.
            0b0_0000 => {
                if with_data {
                    FcClass::Posted
                } else {
                    FcClass::NonPosted
                }
            }
            // MRdLk, IORd/IOWr, CfgRd0/CfgWr0, CfgRd1/CfgWr1.
            0b0_0001 | 0b0_0010 | 0b0_0100 | 0b0_0101 => FcClass::NonPosted,
            // FetchAdd, Swap, CAS (AtomicOp requests) carry data but are
            // non-posted.
            0b0_1100..=0b0_1110 if with_data => FcClass::NonPosted,
            // Cpl/CplD, CplLk/CplDLk.
            0b0_1010 | 0b0_1011 => FcClass::Completion,
            // Msg/MsgD with routing sub-field r[2:0].
            0b1_0000..=0b1_0111 => FcClass::Posted,
            _ => return Err(ClassifyError::UnknownType(b0)),
        };
        let data_bytes = if with_data {
            // Length is 10 bits of DW; 0 means 1024 DW.
            let dw = (u16::from(b2 & 0x03) << 8) | u16::from(b3);
            let dw = if dw == 0 { 1024 } else { usize::from(dw) };
            dw.saturating_mul(4)
        } else {
            0
        };
        Ok(Cost::new(class, data_bytes))
    }
}

/// A header and a data credit count (a limit, an allocation or a cost).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Credits {
    /// Header credits.
    pub header: u16,
    /// Data credits (16 bytes each).
    pub data: u16,
}

/// One [`Credits`] pair per flow-control class: what a receiver advertises
/// at open (initial allocation, 0 = infinite) and in every frame
/// (cumulative limits).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Advert {
    /// Posted requests.
    pub posted: Credits,
    /// Non-posted requests.
    pub non_posted: Credits,
    /// Completions.
    pub completion: Credits,
}

impl Advert {
    /// The pair for `class`.
    pub fn get(&self, class: FcClass) -> Credits {
        match class {
            FcClass::Posted => self.posted,
            FcClass::NonPosted => self.non_posted,
            FcClass::Completion => self.completion,
        }
    }

    fn get_mut(&mut self, class: FcClass) -> &mut Credits {
        match class {
            FcClass::Posted => &mut self.posted,
            FcClass::NonPosted => &mut self.non_posted,
            FcClass::Completion => &mut self.completion,
        }
    }

    /// Checks that no counter exceeds [`MAX_CREDITS`].
    pub fn is_valid(&self) -> bool {
        [self.posted, self.non_posted, self.completion]
            .iter()
            .all(|c| c.header <= MAX_CREDITS && c.data <= MAX_CREDITS)
    }
}

const CLASSES: [FcClass; 3] = [FcClass::Posted, FcClass::NonPosted, FcClass::Completion];

/// Is `a` at or before `b` in modulo-2^16 order (within half the modulus)?
fn mod_le(a: u16, b: u16) -> bool {
    b.wrapping_sub(a) <= MAX_CREDITS
}

/// One transmitter-side counter: cumulative consumed vs. the peer's limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct TxCounter {
    infinite: bool,
    consumed: u16,
    limit: u16,
}

impl TxCounter {
    fn new(initial: u16) -> Self {
        TxCounter {
            infinite: initial == 0,
            consumed: 0,
            limit: initial,
        }
    }

    fn allows(&self, n: u16) -> bool {
        self.infinite || mod_le(self.consumed.wrapping_add(n), self.limit)
    }

    fn available(&self) -> Option<u16> {
        if self.infinite {
            None
        } else {
            Some(self.limit.wrapping_sub(self.consumed).min(MAX_CREDITS))
        }
    }

    fn update(&mut self, limit: u16) {
        // Ignore limits that would move backwards (stale or reordered
        // updates): cumulative limits only grow.
        if !self.infinite && mod_le(self.limit, limit) && mod_le(self.consumed, limit) {
            self.limit = limit;
        }
    }
}

/// The transmitter's view of the peer's receive buffers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxCredits {
    c: [(TxCounter, TxCounter); 3],
}

fn idx(class: FcClass) -> usize {
    match class {
        FcClass::Posted => 0,
        FcClass::NonPosted => 1,
        FcClass::Completion => 2,
    }
}

impl TxCredits {
    /// Starts from the peer's initial advertisement (0 = infinite).
    pub fn new(initial: &Advert) -> Self {
        let mut c = [(TxCounter::default(), TxCounter::default()); 3];
        for (slot, class) in c.iter_mut().zip(CLASSES) {
            let a = initial.get(class);
            *slot = (TxCounter::new(a.header), TxCounter::new(a.data));
        }
        TxCredits { c }
    }

    fn pair(&self, class: FcClass) -> (TxCounter, TxCounter) {
        self.c.get(idx(class)).copied().unwrap_or_default()
    }

    /// May a TLP of this class with `data` data credits be sent now?
    pub fn can_send(&self, cost: Cost) -> bool {
        let (h, d) = self.pair(cost.class);
        h.allows(1) && d.allows(cost.data)
    }

    /// Records that a TLP was queued for sending. Call only after
    /// [`can_send`](Self::can_send) returned true.
    pub fn consume(&mut self, cost: Cost) {
        if let Some((h, d)) = self.c.get_mut(idx(cost.class)) {
            h.consumed = h.consumed.wrapping_add(1);
            d.consumed = d.consumed.wrapping_add(cost.data);
        }
    }

    /// Applies cumulative limits received from the peer.
    pub fn update(&mut self, limits: &Advert) {
        for ((h, d), class) in self.c.iter_mut().zip(CLASSES) {
            let l = limits.get(class);
            h.update(l.header);
            d.update(l.data);
        }
    }

    /// Credits still available for a class (`None` = infinite).
    pub fn available(&self, class: FcClass) -> (Option<u16>, Option<u16>) {
        let (h, d) = self.pair(class);
        (h.available(), d.available())
    }
}

/// The receiver's allocation: what it has advertised and what it has
/// received, per counter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxCredits {
    initial: Advert,
    /// Cumulative limit advertised (initial + released), mod 2^16.
    allocated: Advert,
    /// Cumulative credits received, mod 2^16.
    received: Advert,
}

impl RxCredits {
    /// Allocates `initial` credits (0 = infinite for that counter).
    pub fn new(initial: &Advert) -> Self {
        RxCredits {
            initial: *initial,
            allocated: *initial,
            received: Advert::default(),
        }
    }

    /// The initial advertisement (sent in Open / Open-Ack).
    pub fn initial(&self) -> Advert {
        self.initial
    }

    /// Accounts for a received TLP. Returns `false` if it overflowed the
    /// advertised credits (a protocol error by the peer, which the caller
    /// counts; the TLP is still accounted so that a later release matches).
    pub fn receive(&mut self, cost: Cost) -> bool {
        let init = self.initial.get(cost.class);
        let lim = self.allocated.get(cost.class);
        let r = self.received.get_mut(cost.class);
        r.header = r.header.wrapping_add(1);
        r.data = r.data.wrapping_add(cost.data);
        let h_ok = init.header == 0 || mod_le(r.header, lim.header);
        let d_ok = init.data == 0 || mod_le(r.data, lim.data);
        h_ok && d_ok
    }

    /// Frees the buffer a received TLP used, raising the limit to advertise.
    pub fn release(&mut self, cost: Cost) {
        let init = self.initial.get(cost.class);
        let a = self.allocated.get_mut(cost.class);
        if init.header != 0 {
            a.header = a.header.wrapping_add(1);
        }
        if init.data != 0 {
            a.data = a.data.wrapping_add(cost.data);
        }
    }

    /// The cumulative limits to put in the next frame. Infinite counters
    /// are advertised as 0 (the peer ignores them).
    pub fn update_to_advertise(&self) -> Advert {
        self.allocated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adv(h: u16, d: u16) -> Advert {
        let c = Credits { header: h, data: d };
        Advert {
            posted: c,
            non_posted: c,
            completion: Credits::default(),
        }
    }

    #[test]
    fn classify_common_tlps() {
        let cases: [([u8; 4], FcClass, u16); 8] = [
            ([0x00, 0, 0, 1], FcClass::NonPosted, 0),  // MRd32
            ([0x20, 0, 0, 1], FcClass::NonPosted, 0),  // MRd64
            ([0x40, 0, 0, 1], FcClass::Posted, 1),     // MWr32, 1 DW
            ([0x60, 0, 0, 0], FcClass::Posted, 256),   // MWr64, 1024 DW
            ([0x04, 0, 0, 1], FcClass::NonPosted, 0),  // CfgRd0
            ([0x44, 0, 0, 1], FcClass::NonPosted, 1),  // CfgWr0
            ([0x4a, 0, 0, 5], FcClass::Completion, 2), // CplD 5 DW
            ([0x30, 0, 0, 0], FcClass::Posted, 0),     // Msg, routed to RC
        ];
        for (b, class, data) in cases {
            assert_eq!(Cost::of_tlp(&b), Ok(Cost { class, data }), "{b:x?}");
        }
        assert_eq!(Cost::of_tlp(&[0x40]), Err(ClassifyError::Truncated));
        assert_eq!(
            Cost::of_tlp(&[0x80, 0, 0, 0]),
            Err(ClassifyError::UnknownType(0x80))
        );
        assert_eq!(
            Cost::of_tlp(&[0x0c, 0, 0, 0]),
            Err(ClassifyError::UnknownType(0x0c))
        );
    }

    #[test]
    fn transmitter_stops_at_limit_and_resumes_on_update() {
        let mut tx = TxCredits::new(&adv(2, 4));
        let mut rx = RxCredits::new(&adv(2, 4));
        let c = Cost::new(FcClass::Posted, 32); // 2 data credits
        assert!(tx.can_send(c));
        tx.consume(c);
        assert!(rx.receive(c));
        tx.consume(c);
        assert!(rx.receive(c));
        assert!(!tx.can_send(c), "header and data credits are exhausted");
        // Completions are infinite.
        assert!(tx.can_send(Cost::new(FcClass::Completion, 4096)));
        rx.release(c);
        tx.update(&rx.update_to_advertise());
        assert!(tx.can_send(c));
        assert!(!tx.can_send(Cost::new(FcClass::Posted, 48)));
    }

    #[test]
    fn counters_wrap() {
        let mut tx = TxCredits::new(&adv(100, 1000));
        let mut rx = RxCredits::new(&adv(100, 1000));
        let c = Cost::new(FcClass::NonPosted, 64); // 4 data credits
        for _ in 0..100_000u32 {
            assert!(tx.can_send(c));
            tx.consume(c);
            assert!(rx.receive(c));
            rx.release(c);
            tx.update(&rx.update_to_advertise());
        }
        assert_eq!(tx.available(FcClass::NonPosted), (Some(100), Some(1000)));
    }

    #[test]
    fn stale_updates_do_not_shrink_the_limit() {
        let mut tx = TxCredits::new(&adv(4, 4));
        let old = adv(4, 4);
        tx.update(&adv(8, 8));
        tx.update(&old);
        assert_eq!(tx.available(FcClass::Posted), (Some(8), Some(8)));
    }

    #[test]
    fn overflow_is_reported() {
        let mut rx = RxCredits::new(&adv(1, 1));
        let c = Cost::new(FcClass::Posted, 16);
        assert!(rx.receive(c));
        assert!(!rx.receive(c));
    }

    #[test]
    fn advert_validation() {
        assert!(adv(MAX_CREDITS, MAX_CREDITS).is_valid());
        assert!(!adv(MAX_CREDITS + 1, 0).is_valid());
    }
}
