// SPDX-License-Identifier: GPL-2.0

//! The DMA engine and the test function against an in-memory host: a
//! memory at a bus address behind an IOMMU-like window, which answers MRd
//! with CplDs split at a 64-byte RCB, in random order across tags (in
//! order within one), applies MWr and collects MSI-X messages.

use std::collections::VecDeque;

use pcieoe::cfgspace::{
    ConfigSpace, BAR0, CAP_ID_MSIX, CAP_ID_PCIE, CMD_BUS_MASTER, CMD_MEMORY, COMMAND, MSIX_CONTROL,
    MSIX_ENABLE, MSIX_FUNCTION_MASK, PCIE_DEVCTL,
};
use pcieoe::dma::{
    msix_message, msix_take_pending, CplFault, DmaConfig, DmaError, DmaRead, DmaState, DmaWrite,
    MsixRefusal, MAX_DMA_LEN, REQUEST_LEN, TAGS, WRITE_TLP_LEN,
};
use pcieoe::function::{build, FunctionKind, Identity};
use pcieoe::testfn::*;
use pcieoe::tlp::{self, byte_count, lower_address, Bdf, CompletionStatus, Kind, Tag, Tlp};
use proptest::prelude::*;

const FN_ID: Bdf = Bdf::from_raw(0x0018); // 00:03.0
const HOST_ID: Bdf = Bdf::from_raw(0x0000);
const MEM_BASE: u64 = 0x1_0000_0000;
const MEM_LEN: usize = 4 << 20;
const MSI_ADDR: u64 = 0xfee0_1000;
const BAR_ADDRS: [u32; 6] = [
    0xe000_0000,
    0xe000_1000,
    0xe000_2000,
    0xe001_0000,
    0xe002_0000,
    0xe010_0000,
];

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The bitwise CRC-32 the table version must match.
fn crc_reference(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xedb8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// The in-memory host.
struct Host {
    base: u64,
    mem: Vec<u8>,
    /// The IOMMU window: only these bus addresses are reachable.
    window: std::ops::Range<u64>,
    /// Completions still to send, per outstanding tag.
    queues: Vec<(Tag, VecDeque<Vec<u8>>)>,
    rng: Rng,
    max_read_request: usize,
    max_payload: usize,
    mrds: usize,
    mwrs: usize,
    dropped_writes: usize,
    interrupts: Vec<(u64, u32)>,
    /// Split completions at every RCB (else at random multiples of it).
    split_every_rcb: bool,
}

impl Host {
    fn new(base: u64, seed: u64) -> Host {
        Host {
            base,
            mem: vec![0; MEM_LEN],
            window: base..base + MEM_LEN as u64,
            queues: Vec::new(),
            rng: Rng(seed | 1),
            max_read_request: 512,
            max_payload: 256,
            mrds: 0,
            mwrs: 0,
            dropped_writes: 0,
            interrupts: Vec::new(),
            split_every_rcb: false,
        }
    }

    fn mapped(&self, addr: u64, len: u64) -> bool {
        addr >= self.window.start && addr + len <= self.window.end
    }

    fn slice(&self, addr: u64, len: usize) -> &[u8] {
        let at = (addr - self.base) as usize;
        &self.mem[at..at + len]
    }

    fn slice_mut(&mut self, addr: u64, len: usize) -> &mut [u8] {
        let at = (addr - self.base) as usize;
        &mut self.mem[at..at + len]
    }

    /// Takes one TLP from the function.
    fn handle(&mut self, bytes: &[u8]) {
        let t = Tlp::decode(bytes).expect("function sent a bad TLP");
        match t.kind {
            Kind::MemRead(r) => {
                self.mrds += 1;
                assert_eq!(r.requester, FN_ID);
                let bytes = usize::from(r.length) * 4;
                assert!(bytes <= self.max_read_request, "MRd of {bytes} bytes");
                assert!(
                    (r.address & 0xfff) as usize + bytes <= 4096,
                    "MRd crosses 4K"
                );
                assert_eq!(r.address >= 1 << 32, t.header_len() == 16);
                assert!(
                    self.queues.iter().all(|(tag, _)| *tag != r.tag),
                    "tag {} reused while outstanding",
                    r.tag
                );
                let q = self.completions(&t, &r);
                self.queues.push((r.tag, q));
            }
            Kind::MemWrite(w) => {
                self.mwrs += 1;
                assert_eq!(w.requester, FN_ID);
                let bytes = t.payload.len();
                assert!(bytes <= self.max_payload, "MWr of {bytes} bytes");
                assert!(
                    (w.address & 0xfff) as usize + bytes <= 4096,
                    "MWr crosses 4K"
                );
                if w.address == MSI_ADDR || w.address == MSI_ADDR + 0x10_0000_0000 {
                    assert_eq!(bytes, 4);
                    let data = u32::from_le_bytes(t.payload.try_into().unwrap());
                    self.interrupts.push((w.address, data));
                    return;
                }
                if !self.mapped(w.address, bytes as u64) {
                    self.dropped_writes += 1;
                    return;
                }
                let len = usize::from(w.length);
                for (i, dw) in t.payload.chunks(4).enumerate() {
                    let be = if i == 0 {
                        w.first_be
                    } else if i == len - 1 {
                        w.last_be
                    } else {
                        0xf
                    };
                    for (lane, b) in dw.iter().enumerate() {
                        if be & (1 << lane) != 0 {
                            let a = w.address + (i * 4 + lane) as u64;
                            self.slice_mut(a, 1)[0] = *b;
                        }
                    }
                }
            }
            other => panic!("unexpected TLP from the function: {other:?}"),
        }
    }

    /// The CplDs that answer an MRd: split at the RCB (64 bytes) at
    /// random multiples of it, or UR outside the window.
    fn completions(&mut self, t: &Tlp<'_>, r: &tlp::MemRequest) -> VecDeque<Vec<u8>> {
        let mut q = VecDeque::new();
        let len = u64::from(r.length) * 4;
        let mut buf = [0u8; tlp::MAX_TLP_LEN];
        if !self.mapped(r.address, len) {
            let cpl =
                Tlp::completion_for(t, HOST_ID, CompletionStatus::UnsupportedRequest, &[]).unwrap();
            let n = cpl.emit(&mut buf).unwrap();
            q.push_back(buf[..n].to_vec());
            return q;
        }
        let end = r.address + len;
        let first = r.address + u64::from(lower_address(r.address, r.first_be) & 3);
        let last_end = first + u64::from(byte_count(r.length, r.first_be, r.last_be));
        let mut at = r.address;
        while at < end {
            let rcbs = if self.split_every_rcb {
                1
            } else {
                1 + self.rng.below(4) as u64
            };
            let chunk_end = ((at + 64 * rcbs) & !63).min(end);
            let from = at.max(first);
            let data = self.slice(at, (chunk_end - at) as usize).to_vec();
            let cpl = Tlp::completion(
                HOST_ID,
                CompletionStatus::Success,
                r.requester,
                r.tag,
                (last_end - from) as u16,
                (from & 0x7f) as u8,
                &data,
            );
            let n = cpl.emit(&mut buf).unwrap();
            q.push_back(buf[..n].to_vec());
            at = chunk_end;
        }
        q
    }

    /// The next completion: from a random outstanding tag, in order
    /// within it.
    fn next_completion(&mut self) -> Option<Vec<u8>> {
        if self.queues.is_empty() {
            return None;
        }
        let i = self.rng.below(self.queues.len());
        let cpl = self.queues[i].1.pop_front().unwrap();
        if self.queues[i].1.is_empty() {
            self.queues.swap_remove(i);
        }
        Some(cpl)
    }
}

/// Runs a DmaRead against the host to its end.
fn run_read(host: &mut Host, read: &mut DmaRead, data: &mut [u8]) -> DmaState {
    let mut buf = [0u8; REQUEST_LEN];
    loop {
        while let Some(n) = read.next_request(&mut buf) {
            host.handle(&buf[..n]);
        }
        // Answer a random number of completions before asking for more
        // requests, so requests and completions interleave.
        let mut any = false;
        for _ in 0..=host.rng.below(8) {
            let Some(cpl) = host.next_completion() else {
                break;
            };
            any = true;
            let t = Tlp::decode(&cpl).unwrap();
            let consumed = read.receive(&t, data);
            assert!(consumed || read.state() != DmaState::InProgress);
        }
        if !any {
            return read.state();
        }
    }
}

fn cfg() -> DmaConfig {
    DmaConfig::new(FN_ID)
}

#[test]
fn crc32_matches_reference() {
    assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    assert_eq!(crc32(b""), 0);
    let mut data = vec![0u8; 10_000];
    fill_pattern(7, &mut data);
    assert_eq!(crc32(&data), crc_reference(&data));
    assert_eq!(
        crc32_update(crc32(&data[..333]), &data[333..]),
        crc32(&data)
    );
}

#[test]
fn dma_read_every_small_size() {
    let mut host = Host::new(MEM_BASE, 1);
    fill_pattern(1, &mut host.mem);
    for offset in [0u64, 1, 2, 3, 0xffd] {
        for len in 1..=4097usize {
            let addr = MEM_BASE + 0x1000 + offset;
            let mut read = DmaRead::new(&cfg(), addr, len).unwrap();
            let mut data = vec![0u8; len];
            assert_eq!(run_read(&mut host, &mut read, &mut data), DmaState::Done);
            assert_eq!(data, host.slice(addr, len), "offset {offset} len {len}");
        }
    }
}

#[test]
fn dma_read_large_sizes_and_mrrs() {
    let mut host = Host::new(MEM_BASE, 2);
    fill_pattern(2, &mut host.mem);
    for (mrrs, len, offset) in [
        (512, 65536, 0u64),
        (512, 65536, 5),
        (128, 4096, 3),
        (4096, 1 << 20, 0),
        (4096, 1 << 20, 0x7fe),
        (1024, (1 << 20) - 1, 1),
    ] {
        let mut c = cfg();
        c.max_read_request = mrrs;
        host.max_read_request = mrrs;
        let addr = MEM_BASE + 0x10_0000 + offset;
        let mut read = DmaRead::new(&c, addr, len).unwrap();
        let mut data = vec![0u8; len];
        assert_eq!(run_read(&mut host, &mut read, &mut data), DmaState::Done);
        assert!(data == host.slice(addr, len), "mrrs {mrrs} len {len}");
        assert_eq!(read.outstanding(), 0);
    }
}

#[test]
fn dma_read_below_4g_uses_3dw() {
    let mut host = Host::new(0x8000_0000, 3);
    fill_pattern(3, &mut host.mem);
    let addr = 0x8000_0003;
    let mut read = DmaRead::new(&cfg(), addr, 5000).unwrap();
    let mut data = vec![0u8; 5000];
    assert_eq!(run_read(&mut host, &mut read, &mut data), DmaState::Done);
    assert_eq!(data, host.slice(addr, 5000));
}

#[test]
fn dma_read_tags_stay_in_range() {
    let mut c = cfg();
    c.first_tag = 200;
    let mut read = DmaRead::new(&c, MEM_BASE, 1 << 20).unwrap();
    let mut buf = [0u8; REQUEST_LEN];
    let mut tags = Vec::new();
    while let Some(n) = read.next_request(&mut buf) {
        let Kind::MemRead(r) = Tlp::decode(&buf[..n]).unwrap().kind else {
            panic!()
        };
        tags.push(r.tag.get());
    }
    assert_eq!(tags.len(), TAGS);
    assert_eq!(tags, (200..232).collect::<Vec<_>>());
}

#[test]
fn dma_read_failures() {
    let mut host = Host::new(MEM_BASE, 4);
    // Outside the IOMMU window: UR.
    let mut read = DmaRead::new(&cfg(), MEM_BASE - 8, 100).unwrap();
    let mut data = vec![0u8; 100];
    assert_eq!(
        run_read(&mut host, &mut read, &mut data),
        DmaState::Failed(DmaError::Completion {
            status: CompletionStatus::UnsupportedRequest
        })
    );
    // Timeout.
    let mut read = DmaRead::new(&cfg(), MEM_BASE, 100).unwrap();
    let mut buf = [0u8; REQUEST_LEN];
    assert!(read.next_request(&mut buf).is_some());
    read.timeout();
    assert_eq!(read.state(), DmaState::Failed(DmaError::Timeout));
    assert!(read.next_request(&mut buf).is_none());
    // Parameters.
    assert_eq!(
        DmaRead::new(&cfg(), 0, 0).unwrap_err(),
        DmaError::Length { len: 0 }
    );
    assert_eq!(
        DmaRead::new(&cfg(), 0, MAX_DMA_LEN + 1).unwrap_err(),
        DmaError::Length {
            len: MAX_DMA_LEN + 1
        }
    );
    assert!(matches!(
        DmaRead::new(&cfg(), u64::MAX - 10, 100),
        Err(DmaError::AddressOverflow { .. })
    ));
    // Small buffer.
    let mut read = DmaRead::new(&cfg(), MEM_BASE, 100).unwrap();
    assert!(read.next_request(&mut [0u8; 8]).is_none());
    assert!(matches!(
        read.state(),
        DmaState::Failed(DmaError::Buffer { .. })
    ));
}

/// Sends the MRd of a fresh 100-byte read at an unaligned address and
/// returns the read and its request.
fn one_request() -> (DmaRead, tlp::MemRequest) {
    let mut read = DmaRead::new(&cfg(), MEM_BASE + 0x3e, 100).unwrap();
    let mut buf = [0u8; REQUEST_LEN];
    let n = read.next_request(&mut buf).unwrap();
    let Kind::MemRead(r) = Tlp::decode(&buf[..n]).unwrap().kind else {
        panic!()
    };
    (read, r)
}

#[test]
fn dma_read_checks_completions() {
    let payload = [0u8; 128];
    let cpl = |bc: u16, la: u8, len: usize| {
        Tlp::completion(
            HOST_ID,
            CompletionStatus::Success,
            FN_ID,
            Tag::from(0),
            bc,
            la,
            &payload[..len],
        )
    };
    let mut data = [0u8; 100];
    // 100 bytes at 0x3e: DWs 0x3c..0xa4, 104 bytes; good: 100, 0x3e.
    let cases = [
        (cpl(99, 0x3e, 104), CplFault::ByteCount),
        (cpl(100, 0x3c, 104), CplFault::LowerAddress),
        (cpl(100, 0x3e, 108), CplFault::Length),
        // Partial not ending on the RCB: 0x3c + 8 = 0x44.
        (cpl(100, 0x3e, 8), CplFault::Length),
    ];
    for (tlp, fault) in cases {
        let (mut read, _) = one_request();
        assert!(read.receive(&tlp, &mut data));
        assert_eq!(
            read.state(),
            DmaState::Failed(DmaError::BadCompletion {
                tag: Tag::from(0),
                fault
            })
        );
    }
    // Good split: 0x3c..0x40, then 0x40..0xa4.
    let (mut read, _) = one_request();
    assert!(read.receive(&cpl(100, 0x3e, 4), &mut data));
    assert!(read.receive(&cpl(98, 0x40, 100), &mut data));
    assert_eq!(read.state(), DmaState::Done);
    // Wrong requester, unknown tag: not consumed.
    let (mut read, _) = one_request();
    let mut other = cpl(100, 0x3e, 104);
    if let Kind::Completion(c) = &mut other.kind {
        c.requester = HOST_ID;
    }
    assert!(!read.receive(&other, &mut data));
    let mut other = cpl(100, 0x3e, 104);
    if let Kind::Completion(c) = &mut other.kind {
        c.tag = Tag::from(1);
    }
    assert!(!read.receive(&other, &mut data));
    // Poisoned, no data, data buffer too short.
    let (mut read, _) = one_request();
    let mut poisoned = cpl(100, 0x3e, 104);
    poisoned.ep = true;
    assert!(read.receive(&poisoned, &mut data));
    assert!(matches!(
        read.state(),
        DmaState::Failed(DmaError::BadCompletion {
            fault: CplFault::Poisoned,
            ..
        })
    ));
    let (mut read, _) = one_request();
    assert!(read.receive(&cpl(100, 0x3e, 0), &mut data));
    assert!(matches!(
        read.state(),
        DmaState::Failed(DmaError::BadCompletion {
            fault: CplFault::NoData,
            ..
        })
    ));
    let (mut read, _) = one_request();
    assert!(read.receive(&cpl(100, 0x3e, 104), &mut [0u8; 10]));
    assert!(matches!(
        read.state(),
        DmaState::Failed(DmaError::Buffer { .. })
    ));
    // Completer Abort.
    let (mut read, r) = one_request();
    let req = Tlp::mem_read(
        r.requester,
        r.tag,
        r.address,
        r.length,
        r.first_be,
        r.last_be,
    );
    let ca = Tlp::completion_for(&req, HOST_ID, CompletionStatus::CompleterAbort, &[]).unwrap();
    assert!(read.receive(&ca, &mut data));
    assert_eq!(
        read.state(),
        DmaState::Failed(DmaError::Completion {
            status: CompletionStatus::CompleterAbort
        })
    );
    assert!(!read.receive(&ca, &mut data));
}

/// Applies every MWr of a DmaWrite to the host.
fn run_write(host: &mut Host, c: &DmaConfig, addr: u64, data: &[u8]) -> usize {
    let mut w = DmaWrite::new(c, addr, data.len()).unwrap();
    let mut buf = [0u8; WRITE_TLP_LEN];
    let mut tlps = 0;
    while let Some(r) = w.next_tlp(data, &mut buf) {
        host.handle(&buf[..r.unwrap()]);
        tlps += 1;
    }
    assert_eq!(w.remaining(), 0);
    tlps
}

#[test]
fn dma_write_every_small_size() {
    let mut host = Host::new(MEM_BASE, 5);
    let mut src = vec![0u8; 8192];
    for (i, mps) in [128usize, 256, 512, 4096].into_iter().enumerate() {
        let mut c = cfg();
        c.max_payload = mps;
        host.max_payload = mps;
        for offset in [0u64, 1, 2, 3, 0xffe] {
            for len in (1..=4097usize).step_by(1 + i) {
                fill_pattern(len as u32, &mut src[..len]);
                let addr = MEM_BASE + 0x2000 + offset;
                // Guard bytes around the destination must stay.
                host.slice_mut(addr - 4, len + 8).fill(0xee);
                run_write(&mut host, &c, addr, &src[..len]);
                assert_eq!(
                    host.slice(addr, len),
                    &src[..len],
                    "mps {mps} off {offset} len {len}"
                );
                assert_eq!(host.slice(addr - 4, 4), [0xee; 4]);
                assert_eq!(host.slice(addr + len as u64, 4), [0xee; 4]);
            }
        }
    }
}

#[test]
fn dma_write_chunks() {
    let mut c = cfg();
    c.max_payload = 256;
    let w = DmaWrite::new(&c, 0x1_0000_0ffd, 1000).unwrap();
    let chunks: Vec<_> = w.collect();
    assert_eq!(chunks[0].len, 3);
    assert_eq!(chunks[1].address, 0x1_0000_1000);
    assert!(chunks.iter().all(|ch| ch.len <= 256));
    assert_eq!(chunks.iter().map(|ch| ch.len).sum::<usize>(), 1000);
    let mut buf = [0u8; WRITE_TLP_LEN];
    let n = chunks[0].emit(&[1, 2, 3], &mut buf).unwrap();
    assert_eq!(n, chunks[0].tlp_len());
    let t = Tlp::decode(&buf[..n]).unwrap();
    let Kind::MemWrite(r) = t.kind else { panic!() };
    assert_eq!(
        (r.address, r.first_be, r.last_be),
        (0x1_0000_0ffc, 0b1110, 0)
    );
    assert_eq!(t.payload, [0, 1, 2, 3]);
    assert!(matches!(
        chunks[1].emit(&[1, 2, 3], &mut buf),
        Err(DmaError::Buffer { .. })
    ));
    let mut bad = cfg();
    bad.max_payload = 100;
    assert_eq!(DmaWrite::new(&bad, 0, 1).unwrap_err(), DmaError::Config);
}

#[test]
fn dma_write_large() {
    let mut host = Host::new(MEM_BASE, 6);
    let mut src = vec![0u8; 1 << 20];
    fill_pattern(99, &mut src);
    let n = run_write(&mut host, &cfg(), MEM_BASE + 0x1_0001, &src);
    assert_eq!(host.slice(MEM_BASE + 0x1_0001, 1 << 20), &src[..]);
    assert_eq!(n, (1 << 20) / 256 + 1);
}

// ---------------------------------------------------------------------
// The test function.

fn id() -> Identity {
    Identity {
        vendor: 0x104c,
        device: 0xb500,
        subsystem_vendor: 0,
        subsystem: 0,
        revision: 0,
    }
}

/// A test function's configuration space as the host leaves it: BARs
/// assigned, memory and bus mastering on, MSI-X enabled, MPS 256.
fn config_space() -> Box<ConfigSpace> {
    let mut cs = Box::new(ConfigSpace::new());
    build(FunctionKind::Test, &id(), &mut cs).unwrap();
    for (i, a) in BAR_ADDRS.iter().enumerate() {
        cs.write(BAR0 + 4 * i as u16, 4, *a).unwrap();
    }
    cs.write(COMMAND, 2, u32::from(CMD_MEMORY | CMD_BUS_MASTER))
        .unwrap();
    let pcie = cs.find_cap(CAP_ID_PCIE).unwrap();
    cs.write(pcie + PCIE_DEVCTL, 2, 0x2810 | (1 << 5)).unwrap();
    set_msix_control(&mut cs, MSIX_ENABLE);
    cs
}

fn set_msix_control(cs: &mut ConfigSpace, value: u16) {
    let msix = cs.find_cap(CAP_ID_MSIX).unwrap();
    cs.write(msix + MSIX_CONTROL, 2, u32::from(value)).unwrap();
}

/// Everything around one test function.
struct Rig {
    tf: TestFunction,
    cs: Box<ConfigSpace>,
    mem: Vec<Vec<u8>>,
    scratch: Vec<u8>,
    host: Host,
    buf: Vec<u8>,
}

impl Rig {
    fn new(seed: u64) -> Rig {
        Rig {
            tf: TestFunction::new(FN_ID),
            cs: config_space(),
            mem: BAR_SIZES.iter().map(|&s| vec![0u8; s]).collect(),
            scratch: vec![0u8; MAX_DMA_LEN],
            host: Host::new(MEM_BASE, seed),
            buf: vec![0u8; TLP_BUF_LEN],
        }
    }

    /// Serves one host request TLP and returns the TLPs sent back.
    fn mmio(&mut self, req: &Tlp<'_>) -> (Result<Mmio, MmioError>, Vec<Vec<u8>>) {
        let mut out = Vec::new();
        let [a, b, c, d, e] = &mut self.mem[..] else {
            panic!()
        };
        let mut bars = Bars::new([a, b, c, d, e]);
        let r = self.tf.serve_mmio(
            req,
            &self.cs,
            &mut bars,
            &mut self.buf,
            &mut |t: &[u8]| out.push(t.to_vec()),
        );
        (r, out)
    }

    fn write32(&mut self, bar: usize, offset: u32, value: u32) {
        let data = value.to_le_bytes();
        let addr = u64::from(BAR_ADDRS[bar] + offset);
        let req = Tlp::mem_write(HOST_ID, addr, 0xf, 0, &data);
        assert_eq!(self.mmio(&req).0, Ok(Mmio::Written));
    }

    fn read32(&mut self, bar: usize, offset: u32) -> u32 {
        let addr = u64::from(BAR_ADDRS[bar] + offset);
        let req = Tlp::mem_read(HOST_ID, Tag::from(7), addr, 1, 0xf, 0);
        let (r, out) = self.mmio(&req);
        assert_eq!(r, Ok(Mmio::Read { completions: 1 }));
        let t = Tlp::decode(&out[0]).unwrap();
        u32::from_le_bytes(t.payload.try_into().unwrap())
    }

    /// Polls the function and feeds the host's completions back until
    /// neither has anything left.
    fn run(&mut self) {
        loop {
            let mut progress = false;
            while let Some(n) = self.tf.poll(&self.cs, &mut self.scratch, &mut self.buf) {
                self.host.handle(&self.buf[..n]);
                progress = true;
            }
            for _ in 0..=self.host.rng.below(6) {
                if let Some(cpl) = self.host.next_completion() {
                    let t = Tlp::decode(&cpl).unwrap();
                    let _ = self.tf.receive(&t, &mut self.scratch);
                    progress = true;
                }
            }
            if !progress {
                return;
            }
        }
    }

    fn command(&mut self, cmd: u32, src: u64, dst: u64, size: u32) -> u32 {
        self.write32(0, REG_SRC_ADDR_LO, src as u32);
        self.write32(0, REG_SRC_ADDR_HI, (src >> 32) as u32);
        self.write32(0, REG_DST_ADDR_LO, dst as u32);
        self.write32(0, REG_DST_ADDR_HI, (dst >> 32) as u32);
        self.write32(0, REG_SIZE, size);
        self.write32(0, REG_COMMAND, cmd);
        self.run();
        assert!(!self.tf.is_busy());
        self.read32(0, REG_STATUS)
    }

    fn program_vector(&mut self, v: u32, addr: u64, data: u32, masked: bool) {
        let e = MSIX_TABLE + 16 * v;
        self.write32(0, e, addr as u32);
        self.write32(0, e + 4, (addr >> 32) as u32);
        self.write32(0, e + 8, data);
        self.write32(0, e + 12, u32::from(masked));
    }
}

const SIZES: [usize; 12] = [1, 2, 3, 4, 5, 63, 64, 65, 4095, 4096, 4097, 65536];

#[test]
fn registers_basics() {
    let mut rig = Rig::new(10);
    assert_eq!(rig.read32(0, REG_MAGIC), MAGIC_VALUE);
    rig.write32(0, REG_MAGIC, 0);
    assert_eq!(rig.read32(0, REG_MAGIC), MAGIC_VALUE);
    rig.write32(0, REG_SCRATCH0, 0xdead_beef);
    rig.write32(0, REG_SCRATCH1, 0x1234_5678);
    assert_eq!(rig.read32(0, REG_SCRATCH0), 0xdead_beef);
    assert_eq!(rig.read32(0, REG_SCRATCH1), 0x1234_5678);
    // Byte writes merge.
    let req = Tlp::mem_write(
        HOST_ID,
        u64::from(BAR_ADDRS[0] + REG_SCRATCH0),
        0b0100,
        0,
        &[9, 9, 0xaa, 9],
    );
    assert_eq!(rig.mmio(&req).0, Ok(Mmio::Written));
    assert_eq!(rig.read32(0, REG_SCRATCH0), 0xdeaa_beef);
    // Reserved reads zero, writes ignored.
    rig.write32(0, 0x40, 5);
    assert_eq!(rig.read32(0, 0x40), 0);
    assert_eq!(rig.read32(0, 0x1fc), 0);
    // The PBA is read-only; Vector Control has only the mask bit.
    rig.write32(0, MSIX_PBA, 0xff);
    assert_eq!(rig.read32(0, MSIX_PBA), 0);
    assert_eq!(rig.read32(0, MSIX_TABLE + 12), 1, "vectors start masked");
    rig.write32(0, MSIX_TABLE + 12, 0xffff_fffe);
    assert_eq!(rig.read32(0, MSIX_TABLE + 12), 0);
    rig.write32(0, MSIX_TABLE, 0xfee0_1003);
    assert_eq!(rig.read32(0, MSIX_TABLE), 0xfee0_1000);
    // Bad commands are counted.
    rig.write32(0, REG_COMMAND, CMD_READ | CMD_WRITE);
    rig.write32(0, REG_COMMAND, 0x100);
    assert_eq!(rig.read32(0, REG_IGNORED), 2);
    assert!(!rig.tf.is_busy());
}

#[test]
fn read_write_copy_commands() {
    let mut rig = Rig::new(11);
    fill_pattern(0x55, &mut rig.host.mem);
    for (k, &size) in SIZES.iter().chain([1usize << 20].iter()).enumerate() {
        for offset in [0u64, 1, 3, 0x802] {
            let src = MEM_BASE + 0x1000 + offset;
            let dst = MEM_BASE + 0x20_0000 + 3 * offset;
            let expect = crc_reference(rig.host.slice(src, size));
            let st = rig.command(CMD_READ, src, 0, size as u32);
            assert_eq!(st, STATUS_READ_SUCCESS, "read {size} at +{offset}");
            assert_eq!(rig.read32(0, REG_CHECKSUM), expect);

            rig.write32(0, REG_SEED, k as u32 * 7 + offset as u32);
            let st = rig.command(CMD_WRITE, 0, dst, size as u32);
            assert_eq!(st, STATUS_WRITE_SUCCESS, "write {size} at +{offset}");
            let mut pattern = vec![0u8; size];
            fill_pattern(k as u32 * 7 + offset as u32, &mut pattern);
            assert!(rig.host.slice(dst, size) == &pattern[..]);
            assert_eq!(rig.read32(0, REG_CHECKSUM), crc_reference(&pattern));

            let st = rig.command(CMD_COPY, src, dst, size as u32);
            assert_eq!(st, STATUS_COPY_SUCCESS, "copy {size} at +{offset}");
            assert!(rig.host.slice(dst, size) == rig.host.slice(src, size));
            assert_eq!(rig.read32(0, REG_CHECKSUM), expect);
        }
    }
    assert_eq!(rig.host.dropped_writes, 0);
    assert!(rig.host.interrupts.is_empty());
}

#[test]
fn commands_every_small_size() {
    let mut rig = Rig::new(12);
    fill_pattern(0x66, &mut rig.host.mem);
    rig.host.split_every_rcb = true;
    for size in 1..=300usize {
        let src = MEM_BASE + 0x3f00 + (size as u64 % 7);
        let dst = MEM_BASE + 0x9000 + (size as u64 % 5);
        assert_eq!(
            rig.command(CMD_COPY, src, dst, size as u32),
            STATUS_COPY_SUCCESS
        );
        assert!(rig.host.slice(dst, size) == rig.host.slice(src, size));
        assert_eq!(
            rig.read32(0, REG_CHECKSUM),
            crc_reference(rig.host.slice(src, size))
        );
    }
}

#[test]
fn command_failures() {
    let mut rig = Rig::new(13);
    // Outside the IOMMU window.
    let st = rig.command(CMD_READ, MEM_BASE - 0x1000, 0, 0x2000);
    assert_eq!(st, STATUS_READ_FAIL | STATUS_SRC_ADDR_INVALID);
    let st = rig.command(CMD_COPY, 0x1000, MEM_BASE, 64);
    assert_eq!(st, STATUS_COPY_FAIL | STATUS_SRC_ADDR_INVALID);
    // Posted writes outside are dropped by the host, unseen.
    let st = rig.command(CMD_WRITE, 0, 0x1000, 64);
    assert_eq!(st, STATUS_WRITE_SUCCESS);
    assert_eq!(rig.host.dropped_writes, 1);
    // Sizes.
    assert_eq!(rig.command(CMD_READ, MEM_BASE, 0, 0), STATUS_READ_FAIL);
    assert_eq!(
        rig.command(CMD_WRITE, 0, MEM_BASE, (1 << 20) + 1),
        STATUS_WRITE_FAIL
    );
    // Address ranges that wrap.
    assert_eq!(
        rig.command(CMD_READ, u64::MAX - 10, 0, 100),
        STATUS_READ_FAIL | STATUS_SRC_ADDR_INVALID
    );
    assert_eq!(
        rig.command(CMD_COPY, MEM_BASE, u64::MAX - 10, 100),
        STATUS_COPY_FAIL | STATUS_DST_ADDR_INVALID
    );
    // No bus mastering.
    rig.cs.write(COMMAND, 2, u32::from(CMD_MEMORY)).unwrap();
    let mrds = rig.host.mrds;
    assert_eq!(rig.command(CMD_READ, MEM_BASE, 0, 16), STATUS_READ_FAIL);
    assert_eq!(rig.host.mrds, mrds);
    // A scratch buffer smaller than SIZE.
    let mut rig = Rig::new(14);
    rig.scratch.truncate(100);
    assert_eq!(rig.command(CMD_READ, MEM_BASE, 0, 101), STATUS_READ_FAIL);
    assert_eq!(rig.command(CMD_READ, MEM_BASE, 0, 100), STATUS_READ_SUCCESS);
}

#[test]
fn timeout_and_writes_while_busy() {
    let mut rig = Rig::new(15);
    rig.write32(0, REG_SRC_ADDR_LO, MEM_BASE as u32);
    rig.write32(0, REG_SRC_ADDR_HI, (MEM_BASE >> 32) as u32);
    rig.write32(0, REG_SIZE, 8192);
    rig.write32(0, REG_COMMAND, CMD_READ);
    assert_eq!(rig.read32(0, REG_STATUS), STATUS_BUSY);
    assert_eq!(rig.read32(0, REG_COMMAND), CMD_READ);
    // Send the requests, answer none.
    while let Some(n) = rig.tf.poll(&rig.cs, &mut rig.scratch, &mut rig.buf) {
        rig.host.handle(&rig.buf[..n]);
    }
    assert!(rig.tf.awaiting_completions());
    rig.write32(0, REG_COMMAND, CMD_WRITE);
    rig.write32(0, REG_SIZE, 0);
    rig.write32(0, REG_STATUS, 0xffff_ffff);
    assert_eq!(rig.read32(0, REG_IGNORED), 1);
    assert_eq!(rig.read32(0, REG_STATUS), STATUS_BUSY);
    // The latched size still holds: the command completes.
    rig.run();
    assert_eq!(rig.read32(0, REG_STATUS), STATUS_READ_SUCCESS);
    assert_eq!(rig.read32(0, REG_COMMAND), 0);
    // RW1C.
    rig.write32(0, REG_STATUS, STATUS_READ_SUCCESS);
    assert_eq!(rig.read32(0, REG_STATUS), 0);

    // Timeout: requests sent, no answer.
    rig.write32(0, REG_SIZE, 4096);
    rig.write32(0, REG_COMMAND, CMD_READ);
    while let Some(n) = rig.tf.poll(&rig.cs, &mut rig.scratch, &mut rig.buf) {
        rig.host.handle(&rig.buf[..n]);
    }
    rig.tf.timeout();
    assert!(rig
        .tf
        .poll(&rig.cs, &mut rig.scratch, &mut rig.buf)
        .is_none());
    assert_eq!(rig.read32(0, REG_STATUS), STATUS_READ_FAIL);
    // The late completions are not taken by the next read (other tags).
    let late: Vec<_> = std::iter::from_fn(|| rig.host.next_completion()).collect();
    rig.write32(0, REG_COMMAND, CMD_READ);
    assert!(rig
        .tf
        .poll(&rig.cs, &mut rig.scratch, &mut rig.buf)
        .is_some());
    for cpl in &late {
        assert!(!rig.tf.receive(&Tlp::decode(cpl).unwrap(), &mut rig.scratch));
    }
    rig.host.queues.clear();
    rig.tf.timeout();
    rig.run();

    // Bus mastering turned off midway fails the command.
    rig.write32(0, REG_SIZE, 65536);
    rig.write32(0, REG_COMMAND, CMD_READ);
    assert!(rig
        .tf
        .poll(&rig.cs, &mut rig.scratch, &mut rig.buf)
        .is_some());
    rig.cs.write(COMMAND, 2, u32::from(CMD_MEMORY)).unwrap();
    assert!(rig
        .tf
        .poll(&rig.cs, &mut rig.scratch, &mut rig.buf)
        .is_none());
    assert_eq!(rig.read32(0, REG_STATUS), STATUS_READ_FAIL);
}

#[test]
fn msix_raise_and_mask() {
    let mut rig = Rig::new(16);
    rig.program_vector(3, MSI_ADDR, 0x4023, false);
    rig.program_vector(5, MSI_ADDR + 0x10_0000_0000, 0x4025, true);
    rig.write32(0, REG_IRQ_NUMBER, 3);
    assert_eq!(rig.command(CMD_RAISE_MSIX, 0, 0, 0), STATUS_IRQ_RAISED);
    assert_eq!(rig.host.interrupts, [(MSI_ADDR, 0x4023)]);
    // Masked: pending bit, no message; unmasking sends it.
    rig.write32(0, REG_IRQ_NUMBER, 5);
    assert_eq!(rig.command(CMD_RAISE_MSIX, 0, 0, 0), STATUS_IRQ_RAISED);
    assert_eq!(rig.host.interrupts.len(), 1);
    assert_eq!(rig.read32(0, MSIX_PBA), 1 << 5);
    rig.write32(0, MSIX_TABLE + 16 * 5 + 12, 0);
    rig.run();
    assert_eq!(rig.read32(0, MSIX_PBA), 0);
    assert_eq!(rig.host.interrupts[1], (MSI_ADDR + 0x10_0000_0000, 0x4025));
    // Function mask.
    set_msix_control(&mut rig.cs, MSIX_ENABLE | MSIX_FUNCTION_MASK);
    rig.write32(0, REG_IRQ_NUMBER, 3);
    assert_eq!(rig.command(CMD_RAISE_MSIX, 0, 0, 0), STATUS_IRQ_RAISED);
    assert_eq!(rig.read32(0, MSIX_PBA), 1 << 3);
    assert_eq!(rig.host.interrupts.len(), 2);
    set_msix_control(&mut rig.cs, MSIX_ENABLE);
    rig.run();
    assert_eq!(rig.host.interrupts.len(), 3);
    // Out of range, disabled.
    rig.write32(0, REG_IRQ_NUMBER, 8);
    assert_eq!(rig.command(CMD_RAISE_MSIX, 0, 0, 0), STATUS_IRQ_FAIL);
    rig.write32(0, REG_IRQ_NUMBER, 3);
    set_msix_control(&mut rig.cs, 0);
    assert_eq!(rig.command(CMD_RAISE_MSIX, 0, 0, 0), STATUS_IRQ_FAIL);
    assert_eq!(rig.host.interrupts.len(), 3);
    // Completion interrupt after a DMA command, status set first.
    set_msix_control(&mut rig.cs, MSIX_ENABLE);
    rig.write32(0, REG_FLAGS, FLAG_IRQ);
    let st = rig.command(CMD_WRITE, 0, MEM_BASE, 100);
    assert_eq!(st, STATUS_WRITE_SUCCESS | STATUS_IRQ_RAISED);
    assert_eq!(rig.host.interrupts.len(), 4);
}

#[test]
fn msix_helpers() {
    let mut table = [0u8; 32];
    table[..4].copy_from_slice(&0xfee0_0003u32.to_le_bytes());
    table[8..12].copy_from_slice(&7u32.to_le_bytes());
    table[28] = 1;
    let mut pba = [0u8; 1];
    let ctl = MSIX_ENABLE | 1; // 2 vectors
    let m = msix_message(&table, &mut pba, ctl, 0).unwrap();
    assert_eq!((m.address, m.data), (0xfee0_0000, 7));
    let mut buf = [0u8; 16];
    let n = m.emit(FN_ID, &mut buf).unwrap();
    let t = Tlp::decode(&buf[..n]).unwrap();
    assert_eq!(t.payload, 7u32.to_le_bytes());
    assert_eq!(
        msix_message(&table, &mut pba, ctl, 1),
        Err(MsixRefusal::Masked)
    );
    assert_eq!(pba[0], 2);
    assert_eq!(
        msix_message(&table, &mut pba, ctl, 2),
        Err(MsixRefusal::OutOfRange)
    );
    assert_eq!(
        msix_message(&table, &mut pba, 1, 0),
        Err(MsixRefusal::Disabled)
    );
    assert_eq!(msix_take_pending(&table, &mut pba, ctl), None);
    table[28] = 0;
    assert_eq!(msix_take_pending(&table, &mut pba, ctl).unwrap().vector, 1);
    assert_eq!(pba[0], 0);
    // Short table or PBA: no panic.
    assert_eq!(
        msix_message(&[], &mut [], ctl, 0),
        Err(MsixRefusal::OutOfRange)
    );
    assert_eq!(msix_take_pending(&table, &mut [], ctl), None);
}

#[test]
fn bar_memory_patterns() {
    let mut rig = Rig::new(17);
    let mut rng = Rng(17);
    for bar in 1..6usize {
        let size = BAR_SIZES[bar - 1];
        let mut pattern = vec![0u8; size];
        fill_pattern(bar as u32, &mut pattern);
        // Write it in MWrs of random DW lengths, within 4 KiB pages.
        let mut at = 0usize;
        while at < size {
            let room = (4096 - at % 4096).min(size - at);
            let len = (4 * (1 + rng.below(64))).min(room);
            let addr = u64::from(BAR_ADDRS[bar]) + at as u64;
            let req = Tlp::mem_write(
                HOST_ID,
                addr,
                0xf,
                if len > 4 { 0xf } else { 0 },
                &pattern[at..at + len],
            );
            assert_eq!(rig.mmio(&req).0, Ok(Mmio::Written));
            at += len;
        }
        assert_eq!(rig.mem[bar - 1], pattern);
        // Read it back in MRds of up to 4 KiB, unaligned byte enables.
        let mut at = 0usize;
        while at < size {
            let room = (4096 - at % 4096).min(size - at);
            let dws = (1 + rng.below(1024)).min(room / 4);
            let (fbe, lbe) = if dws == 1 {
                (0b1110, 0)
            } else {
                (0b1100, 0b0011)
            };
            let addr = u64::from(BAR_ADDRS[bar]) + at as u64;
            let req = Tlp::mem_read(HOST_ID, Tag::from(9), addr, dws as u16, fbe, lbe);
            let (r, out) = rig.mmio(&req);
            let Ok(Mmio::Read { completions }) = r else {
                panic!("{r:?}")
            };
            assert_eq!(completions, out.len());
            let mut got = Vec::new();
            let mut left = u32::from(byte_count(dws as u16, fbe, lbe));
            for (i, bytes) in out.iter().enumerate() {
                let t = Tlp::decode(bytes).unwrap();
                let Kind::Completion(c) = t.kind else {
                    panic!()
                };
                assert_eq!(
                    (c.requester, c.tag, c.completer),
                    (HOST_ID, Tag::from(9), FN_ID)
                );
                assert!(t.payload.len() <= 256, "CplD above MPS");
                assert_eq!(u32::from(c.byte_count), left);
                if i == 0 {
                    assert_eq!(c.lower_address, lower_address(addr, fbe));
                    left = left
                        .saturating_sub((t.payload.len() - (c.lower_address & 3) as usize) as u32);
                } else {
                    assert_eq!(u64::from(c.lower_address), (addr + got.len() as u64) & 0x7f);
                    assert_eq!((addr + got.len() as u64) % 64, 0, "split off the RCB");
                    left = left.saturating_sub(t.payload.len() as u32);
                }
                got.extend_from_slice(t.payload);
            }
            assert_eq!(got, pattern[at..at + dws * 4]);
            at += dws * 4;
        }
    }
}

#[test]
fn mmio_misses_and_decoding_off() {
    let mut rig = Rig::new(18);
    // Past BAR1's end (512 bytes): UR.
    let req = Tlp::mem_read(
        HOST_ID,
        Tag::from(1),
        u64::from(BAR_ADDRS[1]) + 508,
        2,
        0xf,
        0xf,
    );
    let (r, out) = rig.mmio(&req);
    assert_eq!(r, Ok(Mmio::Unsupported));
    let Kind::Completion(c) = Tlp::decode(&out[0]).unwrap().kind else {
        panic!()
    };
    assert_eq!(c.status, CompletionStatus::UnsupportedRequest);
    let w = Tlp::mem_write(HOST_ID, 0x1000, 0xf, 0, &[1, 2, 3, 4]);
    assert_eq!(rig.mmio(&w).0, Ok(Mmio::Dropped));
    // Poisoned write dropped.
    let mut w = Tlp::mem_write(HOST_ID, u64::from(BAR_ADDRS[1]), 0xf, 0, &[1, 2, 3, 4]);
    w.ep = true;
    assert_eq!(rig.mmio(&w).0, Ok(Mmio::Dropped));
    assert_eq!(rig.mem[0][..4], [0; 4]);
    // Memory decoding off.
    rig.cs.write(COMMAND, 2, u32::from(CMD_BUS_MASTER)).unwrap();
    let req = Tlp::mem_read(HOST_ID, Tag::from(1), u64::from(BAR_ADDRS[0]), 1, 0xf, 0);
    assert_eq!(rig.mmio(&req).0, Ok(Mmio::Unsupported));
    let w = Tlp::mem_write(
        HOST_ID,
        u64::from(BAR_ADDRS[0] + REG_SCRATCH0),
        0xf,
        0,
        &[1, 2, 3, 4],
    );
    assert_eq!(rig.mmio(&w).0, Ok(Mmio::Dropped));
    // Not memory, malformed.
    let msg = Tlp::intx(HOST_ID, tlp::IntxPin::A, true);
    assert_eq!(rig.mmio(&msg).0, Err(MmioError::NotMemory));
    let bad = Tlp::mem_read(
        HOST_ID,
        Tag::from(1),
        u64::from(BAR_ADDRS[0]) + 2,
        1,
        0xf,
        0,
    );
    assert!(matches!(rig.mmio(&bad).0, Err(MmioError::Malformed(_))));
    // A tiny buffer.
    rig.cs.write(COMMAND, 2, u32::from(CMD_MEMORY)).unwrap();
    rig.buf.truncate(40);
    let req = Tlp::mem_read(HOST_ID, Tag::from(1), u64::from(BAR_ADDRS[0]), 1, 0xf, 0);
    assert_eq!(rig.mmio(&req).0, Err(MmioError::Buffer));
}

// ---------------------------------------------------------------------
// Robustness.

fn arb_mem_tlp() -> impl Strategy<Value = (bool, u64, u16, u8, u8, Vec<u8>, u8)> {
    (
        any::<bool>(),
        prop_oneof![
            (0usize..6, 0u64..0x2000).prop_map(|(b, o)| u64::from(BAR_ADDRS[b]) + o),
            any::<u64>(),
        ],
        1u16..=1024,
        0u8..16,
        0u8..16,
        proptest::collection::vec(any::<u8>(), 0..64),
        any::<u8>(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn serve_mmio_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
        let mut rig = Rig::new(20);
        if let Ok(t) = Tlp::decode(&bytes) {
            let _ = rig.mmio(&t);
        }
        rig.run();
    }

    #[test]
    fn serve_mmio_never_panics_on_requests((write, addr, len, fbe, lbe, seed, tag) in arb_mem_tlp()) {
        let mut rig = Rig::new(21);
        let addr = addr & !3;
        let mut payload = vec![0u8; usize::from(len) * 4];
        for (i, b) in payload.iter_mut().enumerate() {
            *b = seed.get(i % seed.len().max(1)).copied().unwrap_or(0);
        }
        let t = if write {
            Tlp::mem_write(HOST_ID, addr, fbe, lbe, &payload)
        } else {
            Tlp::mem_read(HOST_ID, Tag::from(tag), addr, len, fbe, lbe)
        };
        let (r, out) = rig.mmio(&t);
        for bytes in out {
            prop_assert!(Tlp::decode(&bytes).is_ok());
        }
        if t.check().is_err() {
            prop_assert!(matches!(r, Err(MmioError::Malformed(_))));
        }
        // Whatever was written (maybe a command), the function keeps going.
        rig.run();
    }

    #[test]
    fn dma_read_receive_never_panics(
        cpls in proptest::collection::vec(
            (0u8..40, 0u16..=4096, 0u8..128, 0usize..40, 0u8..8, any::<bool>()),
            1..20,
        ),
        len in 1usize..3000,
        offset in 0u64..8,
    ) {
        let mut read = DmaRead::new(&cfg(), MEM_BASE + offset, len).unwrap();
        let mut buf = [0u8; REQUEST_LEN];
        while read.next_request(&mut buf).is_some() {}
        let mut data = vec![0u8; len];
        let payload = [0x5au8; 160];
        for (tag, bc, la, dws, status, ep) in cpls {
            let status = CompletionStatus::from(status);
            let p = if status == CompletionStatus::Success { &payload[..dws * 4] } else { &[][..] };
            let mut t = Tlp::completion(HOST_ID, status, FN_ID, Tag::from(tag), bc, la, p);
            t.ep = ep;
            let _ = read.receive(&t, &mut data);
            let _ = read.next_request(&mut buf);
        }
        // A truncated data buffer too.
        let _ = read.receive(&Tlp::completion(HOST_ID, CompletionStatus::Success, FN_ID, Tag::from(0), 4, 0, &payload[..4]), &mut []);
    }
}
