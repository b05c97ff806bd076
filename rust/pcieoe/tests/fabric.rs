// SPDX-License-Identifier: GPL-2.0

//! pcieoe fabric messages, the host's shadow fetch and the DI's function
//! models and configuration service, end to end in memory.

use std::collections::VecDeque;

use pcieoe::cfgspace::{self, ConfigSpace, BAR0, COMMAND, STATUS, VENDOR_ID};
use pcieoe::fabric::{
    Error, Fetch, FetchError, FetchState, Msg, MASK_CHUNK, MASK_CHUNKS, MAX_MSG_LEN,
    VENDOR_ID as VID,
};
use pcieoe::function::{self, build, describe_chunk, serve_config, FunctionKind, Identity};
use pcieoe::tlp::{
    self, access_byte_enables, Bdf, CfgType, CompletionStatus, Kind, Routing, Tag, Tlp, VendorType,
};
use proptest::prelude::*;

const HOST: Bdf = Bdf::from_raw(0x0000);
const DI: Bdf = Bdf::from_raw(0x0100);

fn bdf(bus: u8, dev: u8, f: u8) -> Bdf {
    Bdf::new(bus, dev, f).unwrap()
}

fn id() -> Identity {
    Identity {
        vendor: 0x104c,
        device: 0xb500,
        subsystem_vendor: 0x1af4,
        subsystem: 0x1100,
        revision: 3,
    }
}

fn function(kind: FunctionKind) -> Box<ConfigSpace> {
    let mut cs = Box::new(ConfigSpace::new());
    build(kind, &id(), &mut cs).unwrap();
    cs
}

fn emit(msg: &Msg<'_>) -> Vec<u8> {
    let mut buf = [0u8; MAX_MSG_LEN];
    let n = msg.emit(DI, &mut buf).unwrap();
    buf[..n].to_vec()
}

fn vdm(vt: VendorType, routing: Routing, vendor: u16, data: u32, payload: &[u8]) -> Vec<u8> {
    let t = Tlp::vendor_defined(HOST, vt, routing, Bdf::default(), vendor, data, payload);
    let mut buf = vec![0u8; t.buffer_len()];
    t.emit(&mut buf).unwrap();
    buf
}

fn parse(bytes: &[u8]) -> Option<Result<Msg<'_>, Error>> {
    Msg::parse(&Tlp::decode(bytes).unwrap())
}

#[test]
fn messages_round_trip() {
    let rw: Vec<u8> = (0..MASK_CHUNK as u8).collect();
    let c: Vec<u8> = (0..MASK_CHUNK as u8).map(|b| !b).collect();
    let msgs = [
        Msg::Presence { devices: 0 },
        Msg::Presence {
            devices: 0x8000_0005,
        },
        Msg::Describe { dev: 0 },
        Msg::Describe { dev: 31 },
        Msg::NoDevice { dev: 7 },
        Msg::Masks {
            dev: 3,
            offset: 0,
            writable: &rw,
            w1c: &c,
            last: false,
        },
        Msg::Masks {
            dev: 31,
            offset: 4096 - 128,
            writable: &rw,
            w1c: &c,
            last: true,
        },
        Msg::Masks {
            dev: 0,
            offset: 0x40,
            writable: &rw[..4],
            w1c: &c[..4],
            last: false,
        },
    ];
    for msg in msgs {
        let bytes = emit(&msg);
        assert!(bytes.len() <= MAX_MSG_LEN);
        let tlp = Tlp::decode(&bytes).unwrap();
        let Kind::Message(m) = tlp.kind else {
            panic!("{msg:?}")
        };
        assert_eq!(m.vendor_id(), VID);
        assert_eq!(m.routing, Routing::ById);
        assert_eq!(m.requester, DI);
        assert_eq!(m.target(), msg.target());
        assert_eq!(Msg::parse(&tlp), Some(Ok(msg)), "{msg:?}");
    }
    // Vendor_Defined Type 1 routed by ID: MsgD 0x72, Msg 0x32, code 0x7f.
    let b = emit(&Msg::Presence { devices: 1 });
    assert_eq!((b[0], b[7], &b[10..12]), (0x72, 0x7f, &[0xe0, 0xe0][..]));
    let b = emit(&Msg::Describe { dev: 9 });
    assert_eq!((b[0], b.len(), b[12], b[13]), (0x32, 16, 2, 9));
    assert_eq!(Msg::Describe { dev: 9 }.target(), bdf(0, 9, 0));
    assert_eq!(MAX_MSG_LEN, 16 + 256);
}

#[test]
fn emit_refuses_bad_messages() {
    let mut buf = [0u8; MAX_MSG_LEN];
    let z = [0u8; 132];
    let masks = |dev, offset, rw: usize, c: usize| Msg::Masks {
        dev,
        offset,
        writable: &z[..rw],
        w1c: &z[..c],
        last: false,
    };
    assert_eq!(
        Msg::Describe { dev: 32 }.emit(HOST, &mut buf),
        Err(Error::Device { dev: 32 })
    );
    assert_eq!(
        Msg::NoDevice { dev: 255 }.emit(HOST, &mut buf),
        Err(Error::Device { dev: 255 })
    );
    assert_eq!(
        masks(32, 0, 4, 4).emit(HOST, &mut buf),
        Err(Error::Device { dev: 32 })
    );
    assert_eq!(
        masks(0, 0, 4, 8).emit(HOST, &mut buf),
        Err(Error::Length { len: 12 })
    );
    assert_eq!(
        masks(0, 0, 0, 0).emit(HOST, &mut buf),
        Err(Error::Length { len: 0 })
    );
    assert_eq!(
        masks(0, 0, 132, 132).emit(HOST, &mut buf),
        Err(Error::Length { len: 264 })
    );
    assert_eq!(
        masks(0, 0, 6, 6).emit(HOST, &mut buf),
        Err(Error::Length { len: 12 })
    );
    assert_eq!(
        masks(0, 2, 4, 4).emit(HOST, &mut buf),
        Err(Error::Range { offset: 2, len: 4 })
    );
    assert_eq!(
        masks(0, 4092, 8, 8).emit(HOST, &mut buf),
        Err(Error::Range {
            offset: 4092,
            len: 8
        })
    );
    assert!(matches!(
        masks(0, 0, 128, 128).emit(HOST, &mut buf[..100]),
        Err(Error::Tlp(tlp::Error::BufferTooSmall { .. }))
    ));
}

#[test]
fn parse_recognises_and_rejects() {
    let t1 = |data, payload: &[u8]| vdm(VendorType::Type1, Routing::ById, VID, data, payload);
    // Not ours: another vendor, another message, not a message.
    let other = vdm(VendorType::Type1, Routing::ById, 0x1af4, 0x0200_0000, &[]);
    assert_eq!(parse(&other), None);
    let intx = Tlp::intx(HOST, tlp::IntxPin::A, true);
    assert_eq!(Msg::parse(&intx), None);
    let rd = Tlp::cfg_read(HOST, Tag::from(1), bdf(0, 1, 0), 0, 0xf);
    assert_eq!(Msg::parse(&rd), None);
    // Ours but not a Type 1 VDM routed by ID.
    let t0 = vdm(VendorType::Type0, Routing::ById, VID, 0x0200_0000, &[]);
    assert_eq!(parse(&t0), Some(Err(Error::Header)));
    let local = vdm(VendorType::Type1, Routing::Local, VID, 0x0200_0000, &[]);
    assert_eq!(parse(&local), Some(Err(Error::Header)));
    // Good ones built by hand.
    assert_eq!(
        parse(&t1(0x021f_0000, &[])),
        Some(Ok(Msg::Describe { dev: 31 }))
    );
    let cases: &[(u32, &[u8], Error)] = &[
        (0x0000_0000, &[], Error::Kind { kind: 0 }),
        (0x0500_0000, &[], Error::Kind { kind: 5 }),
        (0xff00_0000, &[], Error::Kind { kind: 0xff }),
        (0x0220_0000, &[], Error::Device { dev: 32 }),
        (0x04ff_0000, &[], Error::Device { dev: 0xff }),
        (0x0200_0001, &[], Error::Reserved { data: 0x0200_0001 }),
        (0x0400_8000, &[], Error::Reserved { data: 0x0400_8000 }),
        (0x0201_0000, &[0; 4], Error::Length { len: 4 }),
        (0x0100_0000, &[], Error::Length { len: 0 }),
        (0x0100_0000, &[0; 8], Error::Length { len: 8 }),
        (0x0101_0000, &[0; 4], Error::Reserved { data: 0x0101_0000 }),
        (0x0100_0004, &[0; 4], Error::Reserved { data: 0x0100_0004 }),
        (0x0300_0000, &[], Error::Length { len: 0 }),
        (0x0300_0000, &[0; 12], Error::Length { len: 12 }),
        (0x0300_0000, &[0; 264], Error::Length { len: 264 }),
        (0x0320_0000, &[0; 8], Error::Device { dev: 32 }),
        (
            0x0300_0ffc,
            &[0; 16],
            Error::Range {
                offset: 0xffc,
                len: 8,
            },
        ),
        (0x0300_0002, &[0; 8], Error::Range { offset: 2, len: 4 }),
        (0x0300_4000, &[0; 8], Error::Reserved { data: 0x0300_4000 }),
    ];
    for &(data, payload, err) in cases {
        assert_eq!(
            parse(&t1(data, payload)),
            Some(Err(err)),
            "data {data:#x} payload {}",
            payload.len()
        );
    }
    // The last flag is carried as is; masks split in halves.
    let b = t1(0x0305_8ff8, &[1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(
        parse(&b),
        Some(Ok(Msg::Masks {
            dev: 5,
            offset: 0xff8,
            writable: &[1, 2, 3, 4],
            w1c: &[5, 6, 7, 8],
            last: true
        }))
    );
}

/// The DI side of the in-memory fabric: one host, functions by device
/// number.
struct Di {
    functions: Vec<Option<Box<ConfigSpace>>>,
}

impl Di {
    fn new(kinds: &[(u8, FunctionKind)]) -> Di {
        let mut functions: Vec<_> = (0..32).map(|_| None).collect();
        for &(dev, kind) in kinds {
            functions[usize::from(dev)] = Some(function(kind));
        }
        Di { functions }
    }

    /// Answers one TLP from the host with zero or more TLPs.
    fn serve(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        let tlp = Tlp::decode(bytes).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; MAX_MSG_LEN];
        match tlp.kind {
            Kind::CfgRead(c) | Kind::CfgWrite(c) => {
                let cs = self
                    .functions
                    .get_mut(usize::from(c.target.device()))
                    .and_then(|f| f.as_deref_mut());
                let n = serve_config(&tlp, c.target, cs, &mut buf).unwrap();
                out.push(buf[..n].to_vec());
            }
            Kind::Message(_) => {
                if let Some(Ok(Msg::Describe { dev })) = Msg::parse(&tlp) {
                    match &self.functions[usize::from(dev)] {
                        Some(cs) => {
                            let mut i = 0;
                            while let Some(n) = describe_chunk(dev, cs, DI, i, &mut buf) {
                                out.push(buf[..n].to_vec());
                                i += 1;
                            }
                            assert_eq!(i, MASK_CHUNKS);
                        }
                        None => {
                            let n = Msg::NoDevice { dev }.emit(DI, &mut buf).unwrap();
                            out.push(buf[..n].to_vec());
                        }
                    }
                }
            }
            _ => panic!("unexpected {tlp}"),
        }
        out
    }
}

/// SplitMix64, for reproducible shuffles.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Shuffles the completions among `answers`; messages (posted, which
/// neither PCIe nor the pcieoe link reorders among themselves) keep their
/// relative order, interleaved at random with the completions.
fn shuffle_completions(rng: &mut Rng, answers: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let (mut cpls, msgs): (Vec<_>, Vec<_>) = answers.into_iter().partition(|a| a[0] & 0x1f == 0x0a);
    for i in (1..cpls.len()).rev() {
        cpls.swap(i, (rng.next() % (i as u64 + 1)) as usize);
    }
    let mut msgs: VecDeque<_> = msgs.into();
    let mut cpls: VecDeque<_> = cpls.into();
    let mut out = Vec::new();
    while !msgs.is_empty() || !cpls.is_empty() {
        let from_msgs = cpls.is_empty() || (!msgs.is_empty() && rng.next() % 2 == 0);
        let q = if from_msgs { &mut msgs } else { &mut cpls };
        out.extend(q.pop_front());
    }
    out
}

/// Runs a fetch of `dev` against `di` until it ends. With a seed, the
/// answers to each batch of requests are shuffled, and some are held back
/// for a later batch.
fn run_fetch(di: &mut Di, dev: u8, shadow: &mut ConfigSpace, seed: Option<u64>) -> FetchState {
    let mut fetch = Fetch::new(dev, HOST);
    assert_eq!(fetch.dev(), dev);
    let mut rng = seed.map(Rng);
    let mut held: VecDeque<Vec<u8>> = VecDeque::new();
    let mut buf = [0u8; Fetch::REQUEST_LEN];
    for _round in 0..10_000 {
        let mut outstanding = 0;
        let mut answers = Vec::new();
        while let Some(n) = fetch.next_request(&mut buf) {
            let req = Tlp::decode(&buf[..n]).unwrap();
            if let Kind::CfgRead(c) = req.kind {
                assert_eq!(c.tag.get(), c.register % 128);
                assert_eq!(c.target, bdf(0, dev, 0));
                assert_eq!(c.requester, HOST);
                outstanding += 1;
            }
            answers.extend(di.serve(&buf[..n]));
        }
        assert!(outstanding <= Fetch::WINDOW);
        if let Some(rng) = &mut rng {
            answers = shuffle_completions(rng, answers);
            // Hold a few completions back, deliver older held ones first.
            let keep = (rng.next() % 4) as usize;
            for _ in 0..keep {
                match answers.iter().rposition(|a| a[0] & 0x1f == 0x0a) {
                    Some(i) => held.push_back(answers.remove(i)),
                    None => break,
                }
            }
            while held.len() > 3 || (answers.is_empty() && !held.is_empty()) {
                answers.insert(0, held.pop_front().unwrap());
            }
        }
        for a in &answers {
            let tlp = Tlp::decode(a).unwrap();
            assert!(fetch.receive(&tlp, shadow), "not taken: {tlp}");
            if fetch.state() != FetchState::InProgress {
                // The answer that ended the fetch is the last one it takes.
                assert!(!fetch.receive(&tlp, shadow));
                return fetch.state();
            }
        }
    }
    panic!("fetch stalled: {fetch:?}");
}

/// Asserts that the shadow and the DI's copy hold the same bytes.
fn assert_same(shadow: &ConfigSpace, di: &ConfigSpace) {
    for offset in (0..4096).step_by(4) {
        assert_eq!(
            shadow.read(offset, 4),
            di.read(offset, 4),
            "data {offset:#x}"
        );
    }
    assert_eq!(shadow.raw_masks(0, 4096), di.raw_masks(0, 4096));
}

#[test]
fn fetch_in_order_makes_identical_shadow() {
    for kind in [FunctionKind::Test, FunctionKind::Vnic, FunctionKind::Vhba] {
        let mut di = Di::new(&[(4, kind)]);
        // Start from another function's bytes: everything is overwritten.
        let mut shadow = function(FunctionKind::Vnic);
        shadow.write_hw(0xffc, 4, 0xdead_beef).unwrap();
        shadow.set_raw_masks(0xffc, &[0xff; 4], &[0xff; 4]).unwrap();
        assert_eq!(run_fetch(&mut di, 4, &mut shadow, None), FetchState::Done);
        assert_same(&shadow, di.functions[4].as_ref().unwrap());
    }
}

#[test]
fn fetch_with_reordered_completions() {
    for seed in 0..20 {
        let mut di = Di::new(&[(31, FunctionKind::Test)]);
        let mut shadow = Box::new(ConfigSpace::new());
        assert_eq!(
            run_fetch(&mut di, 31, &mut shadow, Some(seed)),
            FetchState::Done,
            "seed {seed}"
        );
        assert_same(&shadow, di.functions[31].as_ref().unwrap());
    }
}

#[test]
fn fetch_of_missing_device_is_absent() {
    let mut di = Di::new(&[(0, FunctionKind::Test)]);
    let mut shadow = Box::new(ConfigSpace::new());
    assert_eq!(run_fetch(&mut di, 1, &mut shadow, None), FetchState::Absent);
    // Without the NoDevice message, the UR for register 0 says it too.
    for status in [
        CompletionStatus::UnsupportedRequest,
        CompletionStatus::ConfigRetry,
    ] {
        let mut fetch = Fetch::new(1, HOST);
        let mut buf = [0u8; 16];
        let _describe = fetch.next_request(&mut buf).unwrap();
        let n = fetch.next_request(&mut buf).unwrap();
        let req = Tlp::decode(&buf[..n]).unwrap();
        let cpl = Tlp::completion_for(&req, bdf(0, 1, 0), status, &[]).unwrap();
        assert!(fetch.receive(&cpl, &mut shadow));
        assert_eq!(fetch.state(), FetchState::Absent);
        assert_eq!(fetch.next_request(&mut buf), None);
        assert!(!fetch.receive(&cpl, &mut shadow));
    }
    assert_eq!(Fetch::new(32, HOST).state(), FetchState::Absent);
}

/// A fetch with its Describe and first `n` reads sent, and those requests.
fn started(n: usize) -> (Fetch, Vec<Vec<u8>>) {
    let mut fetch = Fetch::new(2, HOST);
    let mut buf = [0u8; 16];
    let mut reqs = Vec::new();
    for _ in 0..=n {
        let len = fetch.next_request(&mut buf).unwrap();
        reqs.push(buf[..len].to_vec());
    }
    (fetch, reqs)
}

fn ok_cpl(register: u16, tag: u16, data: &[u8]) -> Tlp<'_> {
    let _ = register;
    Tlp::completion(
        bdf(0, 2, 0),
        CompletionStatus::Success,
        HOST,
        Tag::new(tag).unwrap(),
        4,
        0,
        data,
    )
}

#[test]
fn fetch_window_and_tags() {
    let mut fetch = Fetch::new(2, HOST);
    let mut shadow = Box::new(ConfigSpace::new());
    let mut buf = [0u8; 16];
    let n = fetch.next_request(&mut buf).unwrap();
    assert_eq!(parse(&buf[..n]).unwrap(), Ok(Msg::Describe { dev: 2 }));
    for reg in 0..32u16 {
        let n = fetch.next_request(&mut buf).unwrap();
        let Kind::CfgRead(c) = Tlp::decode(&buf[..n]).unwrap().kind else {
            panic!()
        };
        assert_eq!((c.register, c.tag.get(), c.first_be), (reg, reg, 0xf));
        assert_eq!(c.cfg_type, CfgType::Type0);
    }
    assert_eq!(fetch.next_request(&mut buf), None);
    // Completing a later register does not open the window.
    assert!(fetch.receive(&ok_cpl(5, 5, &[1, 2, 3, 4]), &mut shadow));
    assert_eq!(fetch.next_request(&mut buf), None);
    // A second completion for it is not ours any more.
    assert!(!fetch.receive(&ok_cpl(5, 5, &[1, 2, 3, 4]), &mut shadow));
    assert_eq!(shadow.read(20, 4), Ok(0x0403_0201));
    // Register 0 completes: one more may go.
    assert!(fetch.receive(&ok_cpl(0, 0, &[0; 4]), &mut shadow));
    assert!(fetch.next_request(&mut buf).is_some());
    assert_eq!(fetch.next_request(&mut buf), None);
    // Not ours: other requester, tag 128 and up, tag not outstanding.
    let mut other = ok_cpl(1, 1, &[0; 4]);
    if let Kind::Completion(c) = &mut other.kind {
        c.requester = bdf(0, 0, 1);
    }
    assert!(!fetch.receive(&other, &mut shadow));
    assert!(!fetch.receive(&ok_cpl(1, 129, &[0; 4]), &mut shadow));
    assert!(!fetch.receive(&ok_cpl(1, 300, &[0; 4]), &mut shadow));
    assert!(!fetch.receive(&ok_cpl(100, 100, &[0; 4]), &mut shadow));
    // Messages that are not for this fetch.
    let presence = emit(&Msg::Presence { devices: 4 });
    assert!(!fetch.receive(&Tlp::decode(&presence).unwrap(), &mut shadow));
    let nodev = emit(&Msg::NoDevice { dev: 3 });
    assert!(!fetch.receive(&Tlp::decode(&nodev).unwrap(), &mut shadow));
    let foreign = vdm(VendorType::Type1, Routing::ById, 0x1234, 0x0302_0000, &[]);
    assert!(!fetch.receive(&Tlp::decode(&foreign).unwrap(), &mut shadow));
    let rd = Tlp::cfg_read(HOST, Tag::from(1), bdf(0, 2, 0), 1, 0xf);
    assert!(!fetch.receive(&rd, &mut shadow));
    assert_eq!(fetch.state(), FetchState::InProgress);
}

#[test]
fn fetch_failures() {
    let mut shadow = Box::new(ConfigSpace::new());
    // An error status after register 0.
    let (mut fetch, _) = started(8);
    let ur = Tlp::completion(
        bdf(0, 2, 0),
        CompletionStatus::CompleterAbort,
        HOST,
        Tag::from(7),
        4,
        0,
        &[],
    );
    assert!(fetch.receive(&ur, &mut shadow));
    assert_eq!(
        fetch.state(),
        FetchState::Failed(FetchError::Completion {
            register: 7,
            status: CompletionStatus::CompleterAbort
        })
    );
    // Success without data.
    let (mut fetch, _) = started(8);
    assert!(fetch.receive(&ok_cpl(3, 3, &[]), &mut shadow));
    assert_eq!(
        fetch.state(),
        FetchState::Failed(FetchError::NoData { register: 3 })
    );
    // Masks out of order, or a last chunk short of 4 KiB.
    let z = [0u8; 128];
    for (offset, last) in [(128, false), (0, true)] {
        let (mut fetch, _) = started(1);
        let m = emit(&Msg::Masks {
            dev: 2,
            offset,
            writable: &z,
            w1c: &z,
            last,
        });
        assert!(fetch.receive(&Tlp::decode(&m).unwrap(), &mut shadow));
        assert_eq!(
            fetch.state(),
            FetchState::Failed(FetchError::MaskOrder { offset })
        );
    }
    // Masks for another device are not consumed.
    let (mut fetch, _) = started(1);
    let m = emit(&Msg::Masks {
        dev: 3,
        offset: 0,
        writable: &z,
        w1c: &z,
        last: false,
    });
    assert!(!fetch.receive(&Tlp::decode(&m).unwrap(), &mut shadow));
    // A buffer too small.
    let mut fetch = Fetch::new(2, HOST);
    assert_eq!(fetch.next_request(&mut [0u8; 8]), None);
    assert_eq!(fetch.state(), FetchState::Failed(FetchError::Buffer));
}

/// A host configuration write applied to the shadow and, as a CfgWr0, to
/// the DI; then the two copies are compared.
fn host_write(
    shadow: &mut ConfigSpace,
    di: &mut Di,
    dev: u8,
    offset: u16,
    size: usize,
    value: u32,
) {
    shadow.write(offset, size, value).unwrap();
    let be = access_byte_enables(u64::from(offset), size).unwrap();
    let lane = u32::from(offset & 3) * 8;
    let data = (value << lane).to_le_bytes();
    let req = Tlp::cfg_write(HOST, Tag::from(200), bdf(0, dev, 0), offset / 4, be, &data);
    let mut buf = [0u8; 16];
    req.emit(&mut buf).unwrap();
    let answer = di.serve(&buf[..12 + 4]);
    let cpl = Tlp::decode(&answer[0]).unwrap();
    let Kind::Completion(c) = cpl.kind else {
        panic!()
    };
    assert_eq!(c.status, CompletionStatus::Success);
    assert!(cpl.payload.is_empty());
    assert_same(shadow, di.functions[usize::from(dev)].as_ref().unwrap());
}

/// A host configuration read served by the DI, compared with the shadow.
fn di_read(di: &mut Di, dev: u8, offset: u16) -> u32 {
    let req = Tlp::cfg_read(HOST, Tag::from(201), bdf(0, dev, 0), offset / 4, 0xf);
    let mut buf = [0u8; 12];
    req.emit(&mut buf).unwrap();
    let answer = di.serve(&buf);
    let cpl = Tlp::decode(&answer[0]).unwrap();
    u32::from_le_bytes(cpl.payload.try_into().unwrap())
}

#[test]
fn writes_keep_shadow_and_device_identical() {
    let dev = 6;
    let mut di = Di::new(&[(dev, FunctionKind::Test)]);
    let mut shadow = Box::new(ConfigSpace::new());
    assert_eq!(run_fetch(&mut di, dev, &mut shadow, None), FetchState::Done);
    // BAR sizing, as pci_read_bases does it.
    let sizes: [u32; 6] = [512, 512, 1024, 16 << 10, 128 << 10, 1 << 20];
    for (i, size) in (0u16..).zip(sizes) {
        let bar = BAR0 + 4 * i;
        host_write(&mut shadow, &mut di, dev, bar, 4, 0xffff_ffff);
        assert_eq!(shadow.read(bar, 4), Ok(!(size - 1)), "BAR{i}");
        assert_eq!(di_read(&mut di, dev, bar), !(size - 1));
        host_write(
            &mut shadow,
            &mut di,
            dev,
            bar,
            4,
            0xfe00_0000 + (i as u32) * 0x10_0000,
        );
    }
    assert_eq!(shadow.read(BAR0 + 4, 4), Ok(0xfe10_0000));
    // Command: only the implemented bits stick.
    host_write(&mut shadow, &mut di, dev, COMMAND, 2, 0xffff);
    assert_eq!(shadow.read(COMMAND, 2), Ok(0x0546));
    host_write(&mut shadow, &mut di, dev, COMMAND, 2, 0x0006);
    // Read-only: Vendor ID, Device ID, class code.
    host_write(&mut shadow, &mut di, dev, VENDOR_ID, 4, 0x1234_5678);
    assert_eq!(shadow.read(VENDOR_ID, 4), Ok(0xb500_104c));
    host_write(&mut shadow, &mut di, dev, 8, 4, 0);
    assert_eq!(shadow.read(8, 4), Ok(0xff00_0003));
    // Status: error bits are RW1C. The device raised two; the host had
    // learned of them (a refetch of the DW would do the same).
    let raised = 0x8000 | 0x2000;
    for cs in [
        &mut *shadow,
        di.functions[usize::from(dev)].as_mut().unwrap(),
    ] {
        let status = cs.read(STATUS, 2).unwrap();
        cs.write_hw(STATUS, 2, status | raised).unwrap();
    }
    host_write(&mut shadow, &mut di, dev, STATUS, 2, 0x8000);
    assert_eq!(shadow.read(STATUS, 2).unwrap() & 0xf900, 0x2000);
    host_write(&mut shadow, &mut di, dev, STATUS, 2, 0xffff);
    assert_eq!(shadow.read(STATUS, 2).unwrap() & 0xf900, 0);
    assert_ne!(shadow.read(STATUS, 2).unwrap() & 0x10, 0);
    // Byte and word writes: Interrupt Line, Cache Line Size.
    host_write(&mut shadow, &mut di, dev, cfgspace::INTERRUPT_LINE, 1, 0x0b);
    host_write(
        &mut shadow,
        &mut di,
        dev,
        cfgspace::CACHE_LINE_SIZE,
        1,
        0x10,
    );
    assert_eq!(shadow.read(cfgspace::INTERRUPT_LINE, 2), Ok(0x000b));
    // MSI-X enable and PCIe Device Control.
    let msix = shadow.find_cap(cfgspace::CAP_ID_MSIX).unwrap();
    host_write(&mut shadow, &mut di, dev, msix + 2, 2, 0xc000);
    assert_eq!(shadow.read(msix + 2, 2), Ok(0xc007));
    let pcie = shadow.find_cap(cfgspace::CAP_ID_PCIE).unwrap();
    host_write(
        &mut shadow,
        &mut di,
        dev,
        pcie + cfgspace::PCIE_DEVCTL,
        2,
        0x5030,
    );
    // Unimplemented space reads zero and stays so.
    host_write(&mut shadow, &mut di, dev, 0xffc, 4, 0xffff_ffff);
    assert_eq!(shadow.read(0xffc, 4), Ok(0));
    assert_eq!(di_read(&mut di, dev, 0xffc), 0);
}

#[test]
fn functions_are_laid_out() {
    for (kind, class, vectors, table) in [
        (FunctionKind::Test, 0xff_0000, 8, 0x80),
        (FunctionKind::Vnic, 0x02_0000, 4, 0x3000),
        (FunctionKind::Vhba, 0x01_0000, 4, 0x3000),
    ] {
        let mut cs = function(kind);
        assert_eq!(cs.read(VENDOR_ID, 4), Ok(0xb500_104c));
        assert_eq!(cs.read(8, 4), Ok((class << 8) | 3));
        assert_eq!(cs.read(cfgspace::SUBSYSTEM_VENDOR_ID, 4), Ok(0x1100_1af4));
        assert_eq!(cs.read(cfgspace::INTERRUPT_PIN, 1), Ok(0));
        assert_eq!(cs.read(cfgspace::HEADER_TYPE, 1), Ok(0));
        assert_eq!(cs.bars(), &kind.bars());
        let pcie = cs.find_cap(cfgspace::CAP_ID_PCIE).unwrap();
        // Endpoint, Max_Payload_Size Supported 256 bytes.
        assert_eq!(cs.read(pcie + 2, 2).map(|v| v >> 4 & 0xf), Ok(0));
        assert_eq!(
            cs.read(pcie + cfgspace::PCIE_DEVCAP, 4).map(|v| v & 7),
            Ok(1)
        );
        let msix = cs.find_cap(cfgspace::CAP_ID_MSIX).unwrap();
        assert_eq!(cs.msix_control(), Some(vectors - 1));
        assert_eq!(cs.read(msix + cfgspace::MSIX_TABLE, 4), Ok(table));
        assert_eq!(
            cs.read(msix + cfgspace::MSIX_PBA, 4),
            Ok(kind.msix().pba_offset)
        );
        // BAR0 sizing.
        cs.write(BAR0, 4, 0xffff_ffff).unwrap();
        cs.write(BAR0 + 4, 4, 0xffff_ffff).unwrap();
        let (bar0, bar1) = (cs.read(BAR0, 4).unwrap(), cs.read(BAR0 + 4, 4).unwrap());
        match kind {
            FunctionKind::Test => assert_eq!((bar0, bar1), (0xffff_fe00, 0xffff_fe00)),
            _ => assert_eq!((bar0, bar1), (0xffff_c004, 0xffff_ffff)),
        }
    }
    assert_eq!(FunctionKind::Test.msix().pba_offset, 0x100);
    assert_eq!(function::MSIX_PBA_OFFSET, 0x3800);
}

fn cfg_req(cfg_type: CfgType, target: Bdf, write: bool, first_be: u8) -> (Kind, bool) {
    let c = tlp::CfgRequest {
        cfg_type,
        requester: HOST,
        tag: Tag::from(9),
        target,
        register: 1,
        first_be,
    };
    (
        if write {
            Kind::CfgWrite(c)
        } else {
            Kind::CfgRead(c)
        },
        write,
    )
}

fn served(
    req: &Tlp<'_>,
    cs: Option<&mut ConfigSpace>,
) -> Result<(CompletionStatus, Vec<u8>), function::Error> {
    let mut buf = [0u8; 16];
    let n = serve_config(req, bdf(0, 1, 0), cs, &mut buf)?;
    let cpl = Tlp::decode(&buf[..n]).unwrap();
    let Kind::Completion(c) = cpl.kind else {
        panic!()
    };
    assert_eq!((c.requester, c.tag, c.byte_count), (HOST, Tag::from(9), 4));
    Ok((c.status, cpl.payload.to_vec()))
}

#[test]
fn serve_config_answers() {
    let mut cs = function(FunctionKind::Test);
    let ur = Ok((CompletionStatus::UnsupportedRequest, vec![]));
    let data = [0x06, 0, 0, 0];
    let mk = |(kind, write): (Kind, bool)| Tlp::new(kind, if write { &data[..] } else { &[] });
    // Reads and writes of function 0, bus 0.
    let rd = mk(cfg_req(CfgType::Type0, bdf(0, 1, 0), false, 0xf));
    assert_eq!(
        served(&rd, Some(&mut cs)),
        Ok((CompletionStatus::Success, vec![0, 0, 0x10, 0]))
    );
    let wr = mk(cfg_req(CfgType::Type0, bdf(0, 1, 0), true, 0x3));
    assert_eq!(
        served(&wr, Some(&mut cs)),
        Ok((CompletionStatus::Success, vec![]))
    );
    assert_eq!(cs.command(), 0x6);
    // No byte enabled: nothing written, still a successful completion.
    let wr0 = Tlp::new(
        cfg_req(CfgType::Type0, bdf(0, 1, 0), true, 0).0,
        &[0, 0, 0, 0],
    );
    assert_eq!(
        served(&wr0, Some(&mut cs)),
        Ok((CompletionStatus::Success, vec![]))
    );
    assert_eq!(cs.command(), 0x6);
    // Unsupported Request: no function, type 1, other bus or function.
    assert_eq!(served(&rd, None), ur);
    assert_eq!(served(&wr, None), ur);
    for (ty, target) in [
        (CfgType::Type1, bdf(0, 1, 0)),
        (CfgType::Type0, bdf(1, 1, 0)),
        (CfgType::Type0, bdf(0, 1, 1)),
    ] {
        for write in [false, true] {
            let req = mk(cfg_req(ty, target, write, 0xf));
            assert_eq!(served(&req, Some(&mut cs)), ur, "{req}");
        }
    }
    assert_eq!(cs.command(), 0x6);
    // Malformed: byte enables, write payloads, registers, attributes.
    let bad_be = mk(cfg_req(CfgType::Type0, bdf(0, 1, 0), true, 0x1f));
    assert!(matches!(
        served(&bad_be, Some(&mut cs)),
        Err(function::Error::Malformed(_))
    ));
    let long = Tlp::new(cfg_req(CfgType::Type0, bdf(0, 1, 0), true, 0xf).0, &[0; 8]);
    assert!(matches!(
        served(&long, Some(&mut cs)),
        Err(function::Error::Malformed(_))
    ));
    let mut far = Tlp::cfg_read(HOST, Tag::from(9), bdf(0, 1, 0), 1024, 0xf);
    assert!(matches!(
        served(&far, Some(&mut cs)),
        Err(function::Error::Malformed(_))
    ));
    far.kind = Tlp::cfg_read(HOST, Tag::from(9), bdf(0, 1, 0), 1, 0xf).kind;
    far.tc = 1;
    assert!(matches!(
        served(&far, Some(&mut cs)),
        Err(function::Error::Malformed(_))
    ));
    // Not a configuration request; a buffer too small.
    let mrd = Tlp::mem_read(HOST, Tag::from(9), 0x1000, 1, 0xf, 0);
    assert_eq!(served(&mrd, Some(&mut cs)), Err(function::Error::NotConfig));
    assert!(matches!(
        serve_config(&rd, bdf(0, 1, 0), Some(&mut cs), &mut [0u8; 12]),
        Err(function::Error::Emit(_))
    ));
}

#[test]
fn describe_chunks() {
    let cs = function(FunctionKind::Vnic);
    let mut buf = [0u8; MAX_MSG_LEN];
    let mut next = 0u16;
    let mut i = 0;
    while let Some(n) = describe_chunk(7, &cs, DI, i, &mut buf) {
        let tlp = Tlp::decode(&buf[..n]).unwrap();
        let Some(Ok(Msg::Masks {
            dev,
            offset,
            writable,
            w1c,
            last,
        })) = Msg::parse(&tlp)
        else {
            panic!()
        };
        assert_eq!((dev, offset, last), (7, next, i == MASK_CHUNKS - 1));
        assert_eq!(Some((writable, w1c)), cs.raw_masks(offset, MASK_CHUNK));
        next += MASK_CHUNK as u16;
        i += 1;
    }
    assert_eq!((i, next), (MASK_CHUNKS, 4096));
    assert_eq!(describe_chunk(7, &cs, DI, usize::MAX, &mut buf), None);
    assert_eq!(describe_chunk(32, &cs, DI, 0, &mut buf), None);
    assert_eq!(describe_chunk(7, &cs, DI, 0, &mut buf[..100]), None);
}

proptest! {
    #[test]
    fn random_tlps_do_not_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut cs = function(FunctionKind::Test);
        let mut shadow = Box::new(ConfigSpace::new());
        if let Ok(tlp) = Tlp::decode(&bytes) {
            let _ = Msg::parse(&tlp);
            let mut buf = [0u8; 64];
            let _ = serve_config(&tlp, bdf(0, 1, 0), Some(&mut cs), &mut buf);
            let _ = serve_config(&tlp, bdf(0, 1, 0), None, &mut buf);
            let (mut fetch, _) = started(20);
            let _ = fetch.receive(&tlp, &mut shadow);
        }
    }

    #[test]
    fn random_pcieoe_messages(
        data in any::<u32>(),
        kind in 0..6u32,
        dws in 0..70usize,
        fill in any::<u8>(),
        routing in 0..8u8,
    ) {
        let data = (data & 0x00ff_ffff) | (kind << 24);
        let payload = vec![fill; dws * 4];
        let bytes = vdm(VendorType::Type1, Routing::from(routing), VID, data, &payload);
        let Ok(tlp) = Tlp::decode(&bytes) else { return Ok(()) };
        let parsed = Msg::parse(&tlp);
        prop_assert!(parsed.is_some());
        if let Some(Ok(msg)) = parsed {
            // Whatever parses emits back to the same bytes.
            let mut buf = [0u8; MAX_MSG_LEN];
            let n = msg.emit(HOST, &mut buf).unwrap();
            let again = Tlp::decode(&buf[..n]).unwrap();
            prop_assert_eq!(Msg::parse(&again), Some(Ok(msg)));
            prop_assert_eq!(again.payload, tlp.payload);
        }
        let (mut fetch, _) = started(3);
        let mut shadow = Box::new(ConfigSpace::new());
        let _ = fetch.receive(&tlp, &mut shadow);
    }
}
