// SPDX-License-Identifier: GPL-2.0

//! Property tests of the TLP codec: round trips for every kind, and no
//! panic whatever the bytes.

use pcieoe::tlp::{
    AddressType, Attr, Bdf, CfgRequest, CfgType, Completion, CompletionStatus, Kind, MemRequest,
    Message, MessageCode, Packet, Routing, Tag, Tlp, MAX_TLP_LEN,
};
use proptest::prelude::*;

/// A TLP with its payload owned, so that strategies can produce it.
#[derive(Clone, Debug)]
struct Owned {
    tlp: Tlp<'static>,
    payload: Vec<u8>,
}

impl Owned {
    fn tlp(&self) -> Tlp<'_> {
        Tlp {
            payload: &self.payload,
            ..self.tlp
        }
    }
}

fn bdf() -> impl Strategy<Value = Bdf> {
    any::<u16>().prop_map(Bdf::from_raw)
}

fn tag() -> impl Strategy<Value = Tag> {
    (0..=Tag::MAX).prop_map(|t| Tag::new(t).unwrap())
}

/// TC, attributes, EP, AT and digest.
fn common() -> impl Strategy<Value = (u8, Attr, bool, AddressType, Option<u32>)> {
    (
        0..8u8,
        (0..8u8).prop_map(Attr::from_bits),
        any::<bool>(),
        (0..4u8).prop_map(AddressType::from_bits),
        any::<Option<u32>>(),
    )
}

fn with_common(
    kind: Kind,
    payload: Vec<u8>,
    (tc, attr, ep, at, digest): (u8, Attr, bool, AddressType, Option<u32>),
) -> Owned {
    Owned {
        tlp: Tlp {
            tc,
            attr,
            ep,
            at,
            digest,
            kind,
            payload: &[],
        },
        payload,
    }
}

const FIRST_CONTIGUOUS: [u8; 4] = [0b1111, 0b1110, 0b1100, 0b1000];
const LAST_CONTIGUOUS: [u8; 4] = [0b1111, 0b0111, 0b0011, 0b0001];

/// A valid memory request: length, an address that does not cross 4 KiB,
/// byte enables that follow the rules.
fn mem_request() -> impl Strategy<Value = MemRequest> {
    (1..=1024u16, any::<bool>())
        .prop_flat_map(|(length, small)| {
            let page = if small {
                (0..=0xf_ffffu64).boxed()
            } else {
                (0x10_0000..=0xf_ffff_ffff_ffffu64).boxed()
            };
            (
                Just(length),
                page,
                0..=(1024 - length),
                0..16u8,
                0..16u8,
                0..4usize,
                0..4usize,
                bdf(),
                tag(),
                prop::option::of(0..4u8),
            )
        })
        .prop_map(|(length, page, dw, fbe, lbe, fi, li, requester, tag, ph)| {
            let address = (page << 12) | (u64::from(dw) << 2);
            let (first_be, last_be) = if length == 1 {
                (fbe, 0)
            } else if length == 2 && address & 7 == 0 {
                (fbe.max(1), lbe.max(1))
            } else {
                (FIRST_CONTIGUOUS[fi], LAST_CONTIGUOUS[li])
            };
            MemRequest {
                requester,
                tag,
                address,
                length,
                first_be,
                last_be,
                ph,
            }
        })
}

fn mem_read() -> impl Strategy<Value = Owned> {
    (mem_request(), common()).prop_map(|(r, c)| with_common(Kind::MemRead(r), Vec::new(), c))
}

fn mem_write() -> impl Strategy<Value = Owned> {
    (mem_request(), common()).prop_flat_map(|(r, c)| {
        prop::collection::vec(any::<u8>(), usize::from(r.length) * 4)
            .prop_map(move |data| with_common(Kind::MemWrite(r), data, c))
    })
}

fn cfg() -> impl Strategy<Value = Owned> {
    (
        any::<bool>(),
        any::<bool>(),
        bdf(),
        tag(),
        bdf(),
        0..1024u16,
        0..16u8,
        any::<[u8; 4]>(),
        common(),
    )
        .prop_map(
            |(write, type1, requester, tag, target, register, first_be, data, mut c)| {
                // Configuration requests carry TC 0 and no RO/NS.
                c.0 = 0;
                c.1.relaxed_ordering = false;
                c.1.no_snoop = false;
                let req = CfgRequest {
                    cfg_type: if type1 {
                        CfgType::Type1
                    } else {
                        CfgType::Type0
                    },
                    requester,
                    tag,
                    target,
                    register,
                    first_be,
                };
                if write {
                    with_common(Kind::CfgWrite(req), data.to_vec(), c)
                } else {
                    with_common(Kind::CfgRead(req), Vec::new(), c)
                }
            },
        )
}

fn completion() -> impl Strategy<Value = Owned> {
    (
        bdf(),
        0..8u8,
        any::<bool>(),
        1..=4096u16,
        bdf(),
        tag(),
        0..128u8,
        0..=1024usize,
        common(),
    )
        .prop_flat_map(
            |(completer, status, bcm, byte_count, requester, tag, lower_address, dws, c)| {
                let status = CompletionStatus::from(status);
                let dws = if status == CompletionStatus::Success {
                    dws % 40
                } else {
                    0
                };
                let cpl = Completion {
                    completer,
                    status,
                    bcm,
                    byte_count,
                    requester,
                    tag,
                    lower_address,
                };
                prop::collection::vec(any::<u8>(), dws * 4)
                    .prop_map(move |data| with_common(Kind::Completion(cpl), data, c))
            },
        )
}

fn message() -> impl Strategy<Value = Owned> {
    (
        bdf(),
        tag(),
        0..8u8,
        any::<u8>(),
        any::<[u8; 8]>(),
        0..40usize,
        common(),
    )
        .prop_flat_map(|(requester, tag, routing, code, fields, dws, c)| {
            let code = MessageCode::from(code);
            let (routing, dws) = if code.is_intx() {
                (Routing::Local, 0)
            } else {
                (Routing::from(routing), dws)
            };
            let msg = Message {
                requester,
                tag,
                routing,
                code,
                fields,
            };
            prop::collection::vec(any::<u8>(), dws * 4)
                .prop_map(move |data| with_common(Kind::Message(msg), data, c))
        })
}

fn any_valid() -> impl Strategy<Value = Owned> {
    prop_oneof![mem_read(), mem_write(), cfg(), completion(), message()]
}

/// Emits into a buffer pre-filled with 0xa5, checks the length and that
/// nothing past it was touched, and decodes it back.
fn emit_and_decode(owned: &Owned) {
    let tlp = owned.tlp();
    assert_eq!(tlp.check(), Ok(()));
    let mut buf = vec![0xa5u8; MAX_TLP_LEN + 4];
    let n = tlp.emit(&mut buf).unwrap();
    assert_eq!(n, tlp.buffer_len());
    assert!(buf[n..].iter().all(|&b| b == 0xa5));
    assert_eq!(Tlp::decode(&buf[..n]), Ok(tlp));
    // A buffer one byte short is refused, not overrun.
    assert!(tlp.emit(&mut buf[..n - 1]).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn round_trip_mem_read(o in mem_read()) { emit_and_decode(&o); }

    #[test]
    fn round_trip_mem_write(o in mem_write()) { emit_and_decode(&o); }

    #[test]
    fn round_trip_cfg(o in cfg()) { emit_and_decode(&o); }

    #[test]
    fn round_trip_completion(o in completion()) { emit_and_decode(&o); }

    #[test]
    fn round_trip_message(o in message()) { emit_and_decode(&o); }

    /// Whatever emit accepts, decode gives back; emit never panics.
    #[test]
    fn emit_accepts_only_what_decode_accepts(
        o in any_valid(),
        tc in 0..10u8,
        dirt in any::<u64>(),
        shift in 0..64u32,
        extra in 0..12usize,
    ) {
        let mut tlp = o.tlp();
        tlp.tc = tc;
        // Perturb one field of the kind.
        match &mut tlp.kind {
            Kind::MemRead(r) | Kind::MemWrite(r) => match shift % 5 {
                0 => r.address ^= 1 << (dirt % 64),
                1 => r.length = (dirt % 1100) as u16,
                2 => r.first_be = (dirt % 32) as u8,
                3 => r.last_be = (dirt % 32) as u8,
                _ => r.ph = Some((dirt % 6) as u8),
            },
            Kind::CfgRead(c) | Kind::CfgWrite(c) => match shift % 2 {
                0 => c.register = (dirt % 1100) as u16,
                _ => c.first_be = (dirt % 20) as u8,
            },
            Kind::Completion(c) => match shift % 3 {
                0 => c.byte_count = (dirt % 5000) as u16,
                1 => c.lower_address = dirt as u8,
                _ => c.status = CompletionStatus::Reserved((dirt % 10) as u8),
            },
            Kind::Message(m) => match shift % 2 {
                0 => m.routing = Routing::Reserved((dirt % 10) as u8),
                _ => m.code = MessageCode::Unknown(dirt as u8),
            },
        }
        let junk = vec![0x11u8; o.payload.len() + extra];
        if shift % 7 == 0 {
            tlp.payload = &junk;
        }
        let mut buf = vec![0u8; MAX_TLP_LEN + 32];
        if let Ok(n) = tlp.emit(&mut buf) {
            prop_assert_eq!(Tlp::decode(&buf[..n]), Ok(tlp));
        }
    }

    /// Decoding arbitrary bytes never panics, and whatever decodes
    /// re-encodes to bytes that decode the same.
    #[test]
    fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..5000)) {
        let p = Packet::new_unchecked(&bytes[..]);
        let _ = (p.requester_id(), p.tag(), p.payload(), p.digest(), p.needs_completion());
        if let Ok(tlp) = Tlp::decode(&bytes) {
            let mut buf = vec![0u8; MAX_TLP_LEN];
            let n = tlp.emit(&mut buf).unwrap();
            prop_assert_eq!(Tlp::decode(&buf[..n]), Ok(tlp));
        }
    }

    /// Headers with random bits but a consistent length, so that many of
    /// them decode: decode never panics, and a decoded TLP round-trips.
    #[test]
    fn consistent_length_headers(
        header in any::<[u8; 16]>(),
        dws in 0..=64usize,
        fill in any::<u8>(),
    ) {
        let mut h = header;
        h[0] &= 0x7f; // keep Fmt out of the prefix/reserved range half the time
        h[2] = (h[2] & 0xfc) | ((dws >> 8) as u8 & 3);
        h[3] = dws as u8;
        let p = Packet::new_unchecked(&h[..]);
        let mut bytes = h[..p.header_len().unwrap_or(12)].to_vec();
        bytes.resize(bytes.len() + p.data_len() + if p.td() { 4 } else { 0 }, fill);
        if let Ok(tlp) = Tlp::decode(&bytes) {
            let mut buf = vec![0u8; MAX_TLP_LEN];
            let n = tlp.emit(&mut buf).unwrap();
            prop_assert_eq!(n, bytes.len());
            prop_assert_eq!(Tlp::decode(&buf[..n]), Ok(tlp));
        }
    }
}
