// SPDX-License-Identifier: GPL-2.0

//! The vHBA function against a model host and a RAM-disk backing: host
//! memory behind an IOMMU-like window that answers MRd with CplDs split
//! at a 64-byte RCB (in random order across tags), applies MWr and
//! collects MSI-X messages; a model of the host driver that programs the
//! queues, pushes commands through the submission windows and reads
//! completions from its memory only (it never reads a register on the
//! data path: the tests check that too); and a backing that executes the
//! engine's [`BackendRequest`]s on one `Vec` per LUN.

use std::collections::VecDeque;

use pcieoe::cfgspace::{
    ConfigSpace, BAR0, CAP_ID_MSIX, CAP_ID_PCIE, CMD_BUS_MASTER, CMD_MEMORY, COMMAND, MSIX_CONTROL,
    MSIX_ENABLE, PCIE_DEVCTL,
};
use pcieoe::clock::{Duration, Instant};
use pcieoe::function::{build, FunctionKind, Identity};
use pcieoe::testfn::Mmio;
use pcieoe::tlp::{self, byte_count, lower_address, Bdf, CompletionStatus, Kind, Tag, Tlp};
use pcieoe::vhba::*;
use pcieoe::vhba_layout::*;

const FN_ID: Bdf = Bdf::from_raw(0x0020);
const HOST_ID: Bdf = Bdf::from_raw(0x0000);
const BAR_ADDR: u64 = 0xe000_0000;
const MEM_BASE: u64 = 0x1_0000_0000;
const MEM_LEN: usize = 32 << 20;
const MSI_ADDR: u64 = 0xfee0_0000;
const SLOTS: usize = 32;

// Host memory map.
const fn cq_addr(q: usize) -> u64 {
    MEM_BASE + (q as u64) * 0x1000
}
const STATUS_ADDR: u64 = MEM_BASE + 0xf000;
const LISTS: u64 = MEM_BASE + 0x1_0000;
const LISTS_LEN: u64 = 0xf_0000;
const DATA: u64 = MEM_BASE + (1 << 20);
const DATA_LEN: u64 = 30 << 20;

/// xorshift64*.
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

    fn bytes(&mut self, out: &mut [u8]) {
        for b in out {
            *b = self.next() as u8;
        }
    }
}

/// The model host's memory and root complex.
struct Host {
    mem: Vec<u8>,
    queues: Vec<(Tag, VecDeque<Vec<u8>>)>,
    rng: Rng,
    interrupts: Vec<u32>,
    mrds: usize,
    mwrs: usize,
    /// MWr into the completion rings.
    cq_mwrs: usize,
    cplds: usize,
    refused: usize,
    /// A range the IOMMU does not map.
    hole: Option<(u64, u64)>,
}

impl Host {
    fn new(seed: u64) -> Host {
        Host {
            mem: vec![0; MEM_LEN],
            queues: Vec::new(),
            rng: Rng(seed | 1),
            interrupts: Vec::new(),
            mrds: 0,
            mwrs: 0,
            cq_mwrs: 0,
            cplds: 0,
            refused: 0,
            hole: None,
        }
    }

    fn mapped(&self, addr: u64, len: u64) -> bool {
        let in_hole = self
            .hole
            .is_some_and(|(a, l)| addr < a + l && a < addr + len);
        addr >= MEM_BASE && addr + len <= MEM_BASE + MEM_LEN as u64 && !in_hole
    }

    fn slice(&self, addr: u64, len: usize) -> &[u8] {
        let at = (addr - MEM_BASE) as usize;
        &self.mem[at..at + len]
    }

    fn slice_mut(&mut self, addr: u64, len: usize) -> &mut [u8] {
        let at = (addr - MEM_BASE) as usize;
        &mut self.mem[at..at + len]
    }

    fn handle(&mut self, bytes: &[u8]) {
        let t = Tlp::decode(bytes).expect("function sent a bad TLP");
        match t.kind {
            Kind::MemRead(r) => {
                self.mrds += 1;
                assert_eq!(r.requester, FN_ID);
                assert!(self.queues.iter().all(|(tag, _)| *tag != r.tag));
                assert!(u64::from(r.length) * 4 <= 512 + 4, "MRd over MRRS");
                let q = self.completions(&t, &r);
                self.queues.push((r.tag, q));
            }
            Kind::MemWrite(w) => {
                self.mwrs += 1;
                assert_eq!(w.requester, FN_ID);
                let bytes = t.payload.len();
                assert!(bytes <= 256, "MWr of {bytes} bytes");
                assert!((w.address & 0xfff) as usize + bytes <= 4096);
                if w.address == MSI_ADDR {
                    let data = u32::from_le_bytes(t.payload.try_into().unwrap());
                    self.interrupts.push(data);
                    return;
                }
                if w.address >= MEM_BASE && w.address < MEM_BASE + 0x4000 {
                    self.cq_mwrs += 1;
                }
                if !self.mapped(w.address, bytes as u64) {
                    self.refused += 1;
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

    fn completions(&mut self, t: &Tlp<'_>, r: &tlp::MemRequest) -> VecDeque<Vec<u8>> {
        let mut q = VecDeque::new();
        let len = u64::from(r.length) * 4;
        let mut buf = [0u8; tlp::MAX_TLP_LEN];
        if !self.mapped(r.address, len) {
            self.refused += 1;
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
            let rcbs = 1 + self.rng.below(4) as u64;
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

    fn next_completion(&mut self) -> Option<Vec<u8>> {
        if self.queues.is_empty() {
            return None;
        }
        let i = self.rng.below(self.queues.len());
        let cpl = self.queues[i].1.pop_front().unwrap();
        if self.queues[i].1.is_empty() {
            self.queues.swap_remove(i);
        }
        self.cplds += 1;
        Some(cpl)
    }
}

fn config_space() -> Box<ConfigSpace> {
    let mut cs = Box::new(ConfigSpace::new());
    let id = Identity {
        vendor: 0xe0e0,
        device: 0x0003,
        ..Identity::default()
    };
    build(FunctionKind::Vhba, &id, &mut cs).unwrap();
    cs.write(BAR0, 4, BAR_ADDR as u32).unwrap();
    cs.write(BAR0 + 4, 4, (BAR_ADDR >> 32) as u32).unwrap();
    cs.write(COMMAND, 2, u32::from(CMD_MEMORY | CMD_BUS_MASTER))
        .unwrap();
    let pcie = cs.find_cap(CAP_ID_PCIE).unwrap();
    // MPS 256, MRRS 512.
    cs.write(pcie + PCIE_DEVCTL, 2, 0x2810 | (1 << 5)).unwrap();
    let msix = cs.find_cap(CAP_ID_MSIX).unwrap();
    cs.write(msix + MSIX_CONTROL, 2, u32::from(MSIX_ENABLE))
        .unwrap();
    cs
}

fn storage<'a>(
    sq: &'a mut [Vec<u8>],
    slots: &'a mut [Slot],
    data: &'a mut [u8],
    readers: &'a mut [Reader],
) -> Storage<'a> {
    let [s0, s1, s2, s3] = sq else { panic!() };
    Storage {
        sq: [s0, s1, s2, s3],
        slots,
        data,
        readers,
    }
}

/// The LUNs of the tests: 0 a 512-byte disk of 8 MiB, 1 a 4 KiB disk of
/// 4 MiB with discard and write-zeroes, 2 read-only, 3 huge (capacity
/// near 2^64, never touched beyond its start).
fn luns() -> Config {
    let mut luns = [LunInfo::EMPTY; MAX_LUNS];
    luns[0] = LunInfo {
        blocks: (8 << 20) / 512,
        block_size: 512,
        physical_block_size: 4096,
        write_cache: true,
        ..LunInfo::EMPTY
    };
    luns[1] = LunInfo {
        blocks: (4 << 20) / 4096,
        block_size: 4096,
        physical_block_size: 4096,
        discard: true,
        write_zeroes: true,
        ..LunInfo::EMPTY
    };
    luns[2] = LunInfo {
        blocks: 2048,
        block_size: 512,
        physical_block_size: 512,
        read_only: true,
        discard: true,
        ..LunInfo::EMPTY
    };
    luns[3] = LunInfo {
        blocks: u64::MAX - 10,
        block_size: 512,
        physical_block_size: 512,
        ..LunInfo::EMPTY
    };
    Config {
        luns,
        lun_count: 4,
        queues: 4,
    }
}

/// The host driver's view of a queue.
#[derive(Clone, Debug, Default)]
struct DrvQueue {
    submitted: u32,
    sq_head: u32,
    cq_head: u32,
    cq_size: u32,
    sq_size: u32,
    outstanding: u32,
}

struct Rig {
    vhba: Box<Vhba>,
    cs: Box<ConfigSpace>,
    sq: Vec<Vec<u8>>,
    slots: Vec<Slot>,
    data: Vec<u8>,
    readers: Vec<Reader>,
    host: Host,
    buf: Vec<u8>,
    now: Instant,
    drv: Vec<DrvQueue>,
    /// The backing: one RAM disk per LUN (LUN 3 only its first MiB).
    disks: Vec<Vec<u8>>,
    /// Execute backend requests during `run`.
    auto_backend: bool,
    /// Fail every backend request with this.
    fail_io: Option<IoError>,
    /// More than two segments as a list in memory, not pushed.
    seg_list: bool,
    /// Pushed segment units, by the address of segment 0.
    tails: std::collections::HashMap<u64, Vec<u8>>,
    backend_log: Vec<BackendRequest>,
    /// Next free host data address (bump allocator).
    data_next: u64,
    lists_next: u64,
    /// MMIO reads the host made (must stay 0 on the data path).
    reads: usize,
    /// MWr TLPs the host sent.
    host_mwrs: usize,
    rng: Rng,
}

impl Rig {
    fn new(seed: u64, cfg: &Config) -> Rig {
        let disks = cfg
            .luns
            .iter()
            .take(cfg.lun_count as usize)
            .map(|l| {
                vec![
                    0u8;
                    l.blocks
                        .saturating_mul(u64::from(l.block_size))
                        .min(8 << 20) as usize
                ]
            })
            .collect();
        Rig {
            vhba: Box::new(Vhba::new(FN_ID, cfg)),
            cs: config_space(),
            sq: (0..4)
                .map(|_| vec![0u8; RING_MAX as usize * SQE_LEN])
                .collect(),
            slots: vec![Slot::new(); SLOTS],
            data: vec![0u8; SLOTS * SLOT_DATA_LEN],
            readers: vec![Reader::new(); READERS],
            host: Host::new(seed),
            buf: vec![0u8; TLP_BUF_LEN],
            now: Instant::from_millis(1),
            drv: vec![DrvQueue::default(); 4],
            disks,
            auto_backend: true,
            fail_io: None,
            seg_list: false,
            tails: std::collections::HashMap::new(),
            backend_log: Vec::new(),
            data_next: 0,
            lists_next: 0,
            reads: 0,
            host_mwrs: 0,
            rng: Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1),
        }
    }

    fn serve(&mut self, req: &Tlp<'_>) -> (Mmio, Vec<Vec<u8>>) {
        let mut out = Vec::new();
        let mut mem = storage(
            &mut self.sq,
            &mut self.slots,
            &mut self.data,
            &mut self.readers,
        );
        let r = self
            .vhba
            .serve_mmio(req, &self.cs, &mut mem, &mut self.buf, &mut |t: &[u8]| {
                out.push(t.to_vec())
            })
            .unwrap();
        (r, out)
    }

    /// A host MMIO write of whole double words, cut as the HI cuts it:
    /// MWr of at most 256 bytes, never across 4 KiB.
    fn write(&mut self, offset: u32, data: &[u8]) {
        assert_eq!(data.len() % 4, 0);
        let mut at = 0;
        while at < data.len() {
            let addr = BAR_ADDR + u64::from(offset) + at as u64;
            let room = 4096 - (addr & 0xfff) as usize;
            let n = (data.len() - at).min(256).min(room);
            let last_be = if n == 4 { 0 } else { 0xf };
            let req = Tlp::mem_write(HOST_ID, addr, 0xf, last_be, &data[at..at + n]);
            assert_eq!(self.serve(&req).0, Mmio::Written);
            self.host_mwrs += 1;
            at += n;
        }
    }

    fn write32(&mut self, offset: u32, value: u32) {
        self.write(offset, &value.to_le_bytes());
    }

    fn read32(&mut self, offset: u32) -> u32 {
        self.reads += 1;
        let req = Tlp::mem_read(
            HOST_ID,
            Tag::from(7),
            BAR_ADDR + u64::from(offset),
            1,
            0xf,
            0,
        );
        let (r, out) = self.serve(&req);
        assert_eq!(r, Mmio::Read { completions: 1 });
        let t = Tlp::decode(&out[0]).unwrap();
        u32::from_le_bytes(t.payload.try_into().unwrap())
    }

    /// Executes what the vHBA hands the backing.
    fn backend(&mut self) -> bool {
        let mut any = false;
        loop {
            let mut mem = storage(
                &mut self.sq,
                &mut self.slots,
                &mut self.data,
                &mut self.readers,
            );
            let Some(req) = self.vhba.next_backend(&mut mem) else {
                break;
            };
            any = true;
            self.backend_log.push(req);
            let result = match self.fail_io {
                Some(e) => Err(e),
                None => {
                    let bs = self.vhba.config().luns[usize::from(req.lun)].block_size as usize;
                    let disk = &mut self.disks[usize::from(req.lun)];
                    let buffer = mem.buffer(req.slot).unwrap();
                    let (lba, len) = match req.op {
                        BackendOp::Flush => (0, 0),
                        BackendOp::Read { lba, blocks }
                        | BackendOp::Write { lba, blocks }
                        | BackendOp::Discard { lba, blocks }
                        | BackendOp::WriteZeroes { lba, blocks } => (lba, blocks as usize * bs),
                    };
                    // LUN 3's RAM disk is only its first 8 MiB.
                    let ok = (lba as usize).saturating_mul(bs).saturating_add(len) <= disk.len();
                    match req.op {
                        _ if !ok => {}
                        BackendOp::Read { lba, .. } => {
                            let at = lba as usize * bs;
                            buffer[..req.bytes].copy_from_slice(&disk[at..at + req.bytes]);
                        }
                        BackendOp::Write { lba, .. } => {
                            let at = lba as usize * bs;
                            disk[at..at + req.bytes].copy_from_slice(&buffer[..req.bytes]);
                        }
                        BackendOp::Flush => {}
                        BackendOp::Discard { lba, blocks }
                        | BackendOp::WriteZeroes { lba, blocks } => {
                            let at = lba as usize * bs;
                            disk[at..at + blocks as usize * bs].fill(0);
                        }
                    }
                    if ok {
                        Ok(())
                    } else {
                        Err(IoError::Io)
                    }
                }
            };
            assert!(self.vhba.backend_done(req.slot, result, &mut mem));
        }
        any
    }

    /// Polls, executes the backing and feeds completions back until
    /// nothing moves.
    fn run(&mut self) {
        for _ in 0..1_000_000 {
            let mut progress = false;
            loop {
                let mut mem = storage(
                    &mut self.sq,
                    &mut self.slots,
                    &mut self.data,
                    &mut self.readers,
                );
                let Some(n) = self.vhba.poll(self.now, &self.cs, &mut mem, &mut self.buf) else {
                    break;
                };
                self.host.handle(&self.buf[..n]);
                progress = true;
            }
            if self.auto_backend && self.backend() {
                progress = true;
            }
            for _ in 0..=self.host.rng.below(6) {
                if let Some(cpl) = self.host.next_completion() {
                    let t = Tlp::decode(&cpl).unwrap();
                    let mut mem = storage(
                        &mut self.sq,
                        &mut self.slots,
                        &mut self.data,
                        &mut self.readers,
                    );
                    let _ = self.vhba.receive(&t, &mut mem);
                    progress = true;
                }
            }
            if !progress {
                return;
            }
        }
        panic!("no quiescence");
    }

    fn advance(&mut self, d: Duration) {
        self.now = self.now + d;
        self.run();
    }

    fn program_msix(&mut self) {
        for v in 0..MSIX_VECTORS as u32 {
            let e = MSIX_TABLE + v * 16;
            self.write32(e, MSI_ADDR as u32);
            self.write32(e + 4, 0);
            self.write32(e + 8, v);
            self.write32(e + 12, 0);
        }
    }

    /// Programs and enables `queues` queues, arms their interrupts.
    fn setup(&mut self, queues: usize, cq: u32, sq: u32, itr_usecs: u32, itr_count: u32) {
        self.program_msix();
        self.write32(REG_STATUS_ADDR_LO, STATUS_ADDR as u32);
        self.write32(REG_STATUS_ADDR_HI, (STATUS_ADDR >> 32) as u32);
        self.write32(REG_MISC_VECTOR, 3);
        for q in 0..queues {
            let qq = q as u32;
            self.write32(queue_reg(qq, Q_CQ_ADDR_LO), cq_addr(q) as u32);
            self.write32(queue_reg(qq, Q_CQ_ADDR_HI), (cq_addr(q) >> 32) as u32);
            self.write32(queue_reg(qq, Q_CQ_SIZE), cq);
            self.write32(queue_reg(qq, Q_SQ_SIZE), sq);
            self.write32(queue_reg(qq, Q_IRQ_VECTOR), qq);
            self.write32(queue_reg(qq, Q_ITR_USECS), itr_usecs);
            self.write32(queue_reg(qq, Q_ITR_COUNT), itr_count);
            self.write32(queue_reg(qq, Q_CONTROL), QCTRL_ENABLE);
            // Probe time, not the data path: reading registers is fine.
            assert_eq!(self.read32(queue_reg(qq, Q_STATUS)), QSTATUS_ENABLED);
            self.host.slice_mut(cq_addr(q), 16 * cq as usize).fill(0);
            self.drv[q] = DrvQueue {
                cq_size: cq,
                sq_size: sq,
                ..DrvQueue::default()
            };
            self.write32(queue_reg(qq, Q_IRQ_ARM), 1);
        }
        self.write32(REG_CONTROL, CTRL_ENABLE);
        self.reads = 0;
        self.run();
    }

    /// Host memory for `len` bytes of data at an odd offset now and then.
    fn alloc(&mut self, len: usize) -> u64 {
        if self.data_next + len as u64 + 64 > DATA_LEN {
            self.data_next = 0;
        }
        let addr = DATA + self.data_next + (self.data_next / 64) % 4;
        self.data_next += len as u64 + 64;
        addr
    }

    /// Cuts `len` bytes into `n` segments at odd addresses; a list in
    /// host memory if more than two.
    fn segments(&mut self, len: usize, n: usize) -> Vec<Segment> {
        let n = n.clamp(1, len);
        let mut cuts: Vec<usize> = (0..n - 1).map(|_| 1 + self.rng.below(len - 1)).collect();
        cuts.push(0);
        cuts.push(len);
        cuts.sort_unstable();
        cuts.dedup();
        cuts.windows(2)
            .map(|w| {
                let l = w[1] - w[0];
                Segment {
                    addr: self.alloc(l),
                    len: l as u32,
                }
            })
            .collect()
    }

    /// A READ or WRITE entry over `segs`.
    fn rw_entry(
        &mut self,
        opcode: Opcode,
        lun: u8,
        lba: u64,
        blocks: u32,
        segs: &[Segment],
    ) -> SubmissionEntry {
        let mut e = SubmissionEntry {
            opcode,
            lun,
            lba,
            blocks,
            nsegs: segs.len() as u16,
            ..SubmissionEntry::default()
        };
        if segs.len() <= INLINE_SEGMENTS {
            e.segs[..segs.len()].copy_from_slice(segs);
        } else if !self.seg_list {
            // Pushed after the entry.
            e.flags |= SQF_SEG_FOLLOW;
            e.segs.copy_from_slice(&segs[..INLINE_SEGMENTS]);
            let mut tail: Vec<u8> = segs[INLINE_SEGMENTS..]
                .iter()
                .flat_map(|s| s.encode())
                .collect();
            tail.resize(tail.len().div_ceil(SQE_LEN) * SQE_LEN, 0);
            assert_eq!(1 + tail.len() / SQE_LEN, e.units() as usize);
            self.tails.insert(segs[0].addr, tail);
        } else {
            let len = segs.len() * SEG_LEN;
            if self.lists_next + len as u64 > LISTS_LEN {
                self.lists_next = 0;
            }
            let addr = LISTS + self.lists_next;
            self.lists_next += (len as u64 + 15) & !15;
            for (i, s) in segs.iter().enumerate() {
                self.host
                    .slice_mut(addr + (i * SEG_LEN) as u64, SEG_LEN)
                    .copy_from_slice(&s.encode());
            }
            e.flags |= SQF_SEG_LIST;
            e.segs[0] = Segment {
                addr,
                len: len as u32,
            };
        }
        e
    }

    /// Takes the new completions of queue `q`.
    fn reap(&mut self, q: usize) -> Vec<Completion> {
        let mut out = Vec::new();
        loop {
            let d = &self.drv[q];
            let at = cq_addr(q) + u64::from(d.cq_head % d.cq_size) * CQE_LEN as u64;
            let c = Completion::decode(self.host.slice(at, CQE_LEN).try_into().unwrap());
            if c.flags & CQF_PHASE != Completion::phase_of(d.cq_head, d.cq_size) {
                return out;
            }
            assert_eq!(usize::from(c.queue), q);
            let d = &mut self.drv[q];
            d.cq_head = d.cq_head.wrapping_add(1);
            d.outstanding -= 1;
            if c.sq_head.wrapping_sub(d.sq_head) as i32 > 0 {
                d.sq_head = c.sq_head;
            }
            out.push(c);
        }
    }

    /// Writes entries into queue `q`'s window, as many per MWr as fit;
    /// the caller makes sure there is room.
    fn push(&mut self, q: usize, entries: &[SubmissionEntry]) {
        let mut bytes = Vec::new();
        let mut units = 0;
        for e in entries {
            let rec = self.record(e);
            units += (rec.len() / SQE_LEN) as u32;
            let d = &mut self.drv[q];
            assert!(d.submitted.wrapping_sub(d.sq_head) + units <= d.sq_size);
            assert!(d.outstanding < d.cq_size);
            d.outstanding += 1;
            bytes.extend_from_slice(&rec);
        }
        self.stream(q, &bytes);
    }

    /// The units of a command: the entry, and its pushed segments.
    fn record(&self, e: &SubmissionEntry) -> Vec<u8> {
        let mut b = e.encode().to_vec();
        if e.flags & SQF_SEG_FOLLOW != 0 {
            if let Some(t) = self.tails.get(&e.segs[0].addr) {
                b.extend_from_slice(t);
            }
        }
        b
    }

    /// Writes whole units at the driver's stream position, wrapping in
    /// the window (no flow control).
    fn stream(&mut self, q: usize, bytes: &[u8]) {
        let mut at = 0;
        while at < bytes.len() {
            let slot = self.drv[q].submitted % SQ_WINDOW_SLOTS;
            let n = ((SQ_WINDOW_SLOTS - slot) as usize * SQE_LEN).min(bytes.len() - at);
            self.write(
                sq_window(q as u32) + slot * SQE_LEN as u32,
                &bytes[at..at + n],
            );
            self.drv[q].submitted = self.drv[q].submitted.wrapping_add((n / SQE_LEN) as u32);
            at += n;
        }
    }

    /// One command, run to its completion.
    fn exec(&mut self, q: usize, e: SubmissionEntry) -> Completion {
        self.push(q, &[e]);
        self.run();
        let got = self.reap(q);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].cid, e.cid);
        got[0]
    }

    fn write_blocks(&mut self, q: usize, lun: u8, lba: u64, data: &[u8], nsegs: usize) -> u8 {
        let segs = self.segments(data.len(), nsegs);
        let mut at = 0;
        for s in &segs {
            self.host
                .slice_mut(s.addr, s.len as usize)
                .copy_from_slice(&data[at..at + s.len as usize]);
            at += s.len as usize;
        }
        let bs = self.vhba.config().luns[usize::from(lun)].block_size as usize;
        let e = self.rw_entry(Opcode::Write, lun, lba, (data.len() / bs) as u32, &segs);
        self.exec(q, e).status
    }

    fn read_blocks(
        &mut self,
        q: usize,
        lun: u8,
        lba: u64,
        len: usize,
        nsegs: usize,
    ) -> (u8, Vec<u8>) {
        let segs = self.segments(len, nsegs);
        let bs = self.vhba.config().luns[usize::from(lun)].block_size as usize;
        let e = self.rw_entry(Opcode::Read, lun, lba, (len / bs) as u32, &segs);
        let c = self.exec(q, e);
        let mut out = Vec::new();
        for s in &segs {
            out.extend_from_slice(self.host.slice(s.addr, s.len as usize));
        }
        (c.status, out)
    }
}

/// The rig's [`Storage`], borrowing only its memory fields.
macro_rules! mem {
    ($rig:expr) => {
        storage(
            &mut $rig.sq,
            &mut $rig.slots,
            &mut $rig.data,
            &mut $rig.readers,
        )
    };
}

fn expect_err(rig: &mut Rig, errors: &mut u32, code: u32) {
    *errors += 1;
    assert_eq!(rig.read32(REG_PROG_ERRORS), *errors);
    assert_eq!(rig.read32(REG_LAST_ERROR) & 0xffff, code);
}

#[test]
fn layout_formats_round_trip() {
    let e = SubmissionEntry {
        opcode: Opcode::Write,
        flags: SQF_FUA,
        cid: 0xbeef,
        lun: 3,
        nsegs: 2,
        lba: 0x0123_4567_89ab_cdef,
        blocks: 0x8000,
        segs: [
            Segment {
                addr: 0x1_2345_6789,
                len: 4096,
            },
            Segment {
                addr: 0xdead_0000,
                len: 12,
            },
        ],
    };
    let b = e.encode();
    assert_eq!(&b[..8], &[2, 1, 0xef, 0xbe, 3, 0, 2, 0]);
    assert_eq!(SubmissionEntry::decode(&b), (e, true));
    for at in [5usize, 20, 36, 52, 60] {
        let mut bad = b;
        bad[at] = 0xa5;
        assert!(!SubmissionEntry::decode(&bad).1, "reserved byte {at}");
    }
    for v in 0..=255u8 {
        assert_eq!(u8::from(Opcode::from(v)), v);
    }
    // Units of a command: pushed segments four per unit after the two
    // inline ones, whatever else the entry says.
    let mut f = e;
    assert_eq!(f.units(), 1);
    f.flags = SQF_SEG_FOLLOW;
    for (nsegs, units) in [
        (0u16, 1u32),
        (2, 1),
        (3, 2),
        (6, 2),
        (7, 3),
        (64, 17),
        (65535, 16385),
    ] {
        f.nsegs = nsegs;
        assert_eq!(f.units(), units, "{nsegs}");
    }
    assert_eq!(Opcode::from(9), Opcode::Unknown(9));
    let c = Completion {
        cid: 7,
        status: STATUS_READ_ONLY,
        flags: CQF_PHASE,
        sq_head: 0xfedc_ba98,
        queue: 2,
    };
    let b = c.encode();
    assert_eq!(&b[..9], &[7, 0, 4, 1, 0x98, 0xba, 0xdc, 0xfe, 2]);
    assert_eq!(Completion::decode(&b), c);
    assert_eq!(Completion::phase_of(0, 16), CQF_PHASE);
    assert_eq!(Completion::phase_of(16, 16), 0);
    assert_eq!(Completion::phase_of(32, 16), CQF_PHASE);
    assert_eq!(Completion::phase_of(5, 0), CQF_PHASE);
    let s = StatusBlock {
        generation: 3,
        causes: CAUSE_LUN,
        status: 1,
        prog_errors: 9,
        last_error: 0x0100_0003,
        stats: [1, 2, 3, 4, 5, 6, 7, u64::MAX],
    };
    assert_eq!(StatusBlock::decode(&s.encode()), s);
    assert!(Segment { addr: 1, len: 1 }.is_valid());
    assert!(!Segment { addr: 0, len: 1 }.is_valid());
    assert!(!Segment { addr: 1, len: 0 }.is_valid());
    assert!(!Segment {
        addr: u64::MAX,
        len: 2
    }
    .is_valid());
    assert!(!Segment {
        addr: 1,
        len: MAX_TRANSFER + 1
    }
    .is_valid());
    // The map: no region overlaps the next.
    assert!(queue_reg(MAX_QUEUES as u32, 0) <= LUN_REGS);
    assert!(lun_reg(MAX_LUNS as u32, 0) <= SQ_WINDOWS);
    assert!(sq_window(MAX_QUEUES as u32) <= MSIX_TABLE);
    assert_eq!(MSIX_TABLE, pcieoe::function::MSIX_TABLE_OFFSET);
    assert_eq!(MSIX_PBA, pcieoe::function::MSIX_PBA_OFFSET);
    assert_eq!(SQ_WINDOW_SLOTS, 32);
}

#[test]
fn identity_registers() {
    let mut rig = Rig::new(1, &luns());
    assert_eq!(rig.cs.read(0x08, 4).unwrap() >> 8, 0x01_0000);
    assert_eq!(rig.read32(REG_MAGIC), u32::from_le_bytes(*b"vHBA"));
    assert_eq!(rig.read32(REG_VERSION), VERSION_VALUE);
    assert_eq!(rig.read32(REG_FEATURES), FEATURES);
    assert_eq!(rig.read32(REG_LUN_COUNT), 4);
    assert_eq!(rig.read32(REG_MAX_TRANSFER), MAX_TRANSFER);
    assert_eq!(rig.read32(REG_MAX_SEGMENTS), MAX_SEGMENTS);
    assert_eq!(rig.read32(REG_QUEUES), 4);
    assert_eq!(rig.read32(REG_SLOTS), SLOTS as u32);
    assert_eq!(rig.read32(queue_reg(0, Q_SQ_MAX)), RING_MAX);
    assert_eq!(rig.read32(lun_reg(0, LUN_BLOCKS_LO)), 16384);
    assert_eq!(rig.read32(lun_reg(0, LUN_BLOCKS_HI)), 0);
    assert_eq!(rig.read32(lun_reg(0, LUN_BLOCK_SIZE)), 512);
    assert_eq!(rig.read32(lun_reg(0, LUN_PHYS_BLOCK)), 4096);
    assert_eq!(
        rig.read32(lun_reg(0, LUN_FLAGS)),
        LUNF_PRESENT | LUNF_WRITE_CACHE
    );
    assert_eq!(rig.read32(lun_reg(0, LUN_MAX_DISCARD)), 0);
    assert_eq!(
        rig.read32(lun_reg(1, LUN_FLAGS)),
        LUNF_PRESENT | LUNF_DISCARD | LUNF_WRITE_ZEROES
    );
    assert_eq!(rig.read32(lun_reg(1, LUN_MAX_DISCARD)), u32::MAX);
    assert_eq!(
        rig.read32(lun_reg(2, LUN_FLAGS)),
        LUNF_PRESENT | LUNF_READ_ONLY | LUNF_DISCARD
    );
    assert_eq!(rig.read32(lun_reg(3, LUN_BLOCKS_HI)), u32::MAX);
    assert_eq!(rig.read32(lun_reg(4, LUN_FLAGS)), 0);
    assert_eq!(rig.read32(lun_reg(15, LUN_BLOCK_SIZE)), 0);
    // Read-only registers ignore writes; windows read 0.
    rig.write32(REG_MAGIC, 0);
    rig.write32(lun_reg(0, LUN_BLOCKS_LO), 1);
    assert_eq!(rig.read32(REG_MAGIC), MAGIC_VALUE);
    assert_eq!(rig.read32(lun_reg(0, LUN_BLOCKS_LO)), 16384);
    assert_eq!(rig.read32(sq_window(0)), 0);
    assert_eq!(rig.vhba.prog_errors(), 0);
    // A config out of range is clamped.
    let mut cfg = luns();
    cfg.queues = 9;
    cfg.lun_count = 99;
    cfg.luns[5].block_size = 1000;
    assert!(!cfg.is_valid());
    let v = Vhba::new(FN_ID, &cfg);
    assert_eq!(v.config().queues, 4);
    assert_eq!(v.config().lun_count, MAX_LUNS as u32);
    assert_eq!(v.config().luns[5], LunInfo::EMPTY);
    assert!(luns().is_valid());
}

#[test]
fn read_write_round_trip_at_every_size_and_alignment() {
    let mut rig = Rig::new(2, &luns());
    rig.setup(1, 64, 64, 0, 0);
    let mut rng = Rng(2);
    let mut lba = 0u64;
    for (lun, len) in [
        (0u8, 512usize),
        (0, 4096),
        (0, 65536),
        (0, MAX_TRANSFER as usize),
        (1, 4096),
        (1, 65536),
        (1, MAX_TRANSFER as usize),
    ] {
        for (nsegs, list) in [
            (1usize, false),
            (2, false),
            (3, false),
            (3, true),
            (7, false),
            (7, true),
            (33, false),
            (33, true),
            (MAX_SEGMENTS as usize, false),
            (MAX_SEGMENTS as usize, true),
        ] {
            if nsegs > len / 8 {
                continue;
            }
            rig.seg_list = list;
            let bs = if lun == 0 { 512 } else { 4096 };
            let mut data = vec![0u8; len];
            rng.bytes(&mut data);
            let at = lba % ((1 << 20) / bs as u64 - (len / bs) as u64);
            assert_eq!(rig.write_blocks(0, lun, at, &data, nsegs), STATUS_OK);
            let disk = &rig.disks[usize::from(lun)];
            let off = at as usize * bs;
            assert!(disk[off..off + len] == data[..], "{lun} {len} {nsegs}");
            let (status, back) = rig.read_blocks(0, lun, at, len, nsegs);
            assert_eq!(status, STATUS_OK);
            assert!(back == data, "{lun} {len} {nsegs}");
            lba += 37;
        }
    }
    assert_eq!(rig.reads, 0, "no register read on the data path");
    assert_eq!(rig.host.refused, 0);
    let s = rig.vhba.stats();
    assert_eq!(s[STAT_READS], s[STAT_WRITES]);
    assert_eq!(s[STAT_READ_BYTES], s[STAT_WRITE_BYTES]);
    assert_eq!(s[STAT_ERRORS], 0);
    assert!(rig.slots.iter().all(Slot::is_free));
}

#[test]
fn tlp_counts() {
    let mut rig = Rig::new(3, &luns());
    rig.setup(1, 64, 64, 0, 0);
    // A 64 KiB READ into one page-aligned buffer: 256 MWr of data and one
    // completion write; no MRd; one MWr from the host for the command.
    let addr = DATA;
    let seg = [Segment { addr, len: 65536 }];
    let e = rig.rw_entry(Opcode::Read, 0, 0, 128, &seg);
    let (mwrs, mrds, host) = (rig.host.mwrs, rig.host.mrds, rig.host_mwrs);
    assert_eq!(rig.exec(0, e).status, STATUS_OK);
    let msix = 1;
    assert_eq!(rig.host.mwrs - mwrs, 256 + 1 + msix);
    assert_eq!(rig.host.mrds - mrds, 0);
    assert_eq!(rig.host_mwrs - host, 1);
    // A 64 KiB WRITE: 128 MRd of 512 bytes (MRRS), CplDs, one
    // completion write.
    let (mwrs, mrds) = (rig.host.mwrs, rig.host.mrds);
    rig.write32(queue_reg(0, Q_IRQ_ARM), 1);
    let e = rig.rw_entry(Opcode::Write, 0, 0, 128, &seg);
    assert_eq!(rig.exec(0, e).status, STATUS_OK);
    assert_eq!(rig.host.mrds - mrds, 128);
    assert_eq!(rig.host.mwrs - mwrs, 1 + msix);
    // A 4 KiB READ: 16 + 1.
    rig.write32(queue_reg(0, Q_IRQ_ARM), 1);
    let mwrs = rig.host.mwrs;
    let seg = [Segment { addr, len: 4096 }];
    let e = rig.rw_entry(Opcode::Read, 0, 0, 8, &seg);
    assert_eq!(rig.exec(0, e).status, STATUS_OK);
    assert_eq!(rig.host.mwrs - mwrs, 16 + 1 + msix);
    // A 128 KiB READ of 32 pages, segments pushed: 9 units in three
    // host MWr, still no MRd; as a list in memory: one host MWr and one
    // MRd (512 bytes) for the list.
    for (list, host_writes, reads) in [(false, 3, 0), (true, 1, 1)] {
        rig.write32(queue_reg(0, Q_IRQ_ARM), 1);
        rig.seg_list = list;
        let segs: Vec<_> = (0..32u64)
            .map(|i| Segment {
                addr: DATA + (31 - i) * 8192,
                len: 4096,
            })
            .collect();
        let e = rig.rw_entry(Opcode::Read, 0, 0, 256, &segs);
        let (mwrs, mrds, host) = (rig.host.mwrs, rig.host.mrds, rig.host_mwrs);
        assert_eq!(rig.exec(0, e).status, STATUS_OK);
        assert_eq!(rig.host_mwrs - host, host_writes);
        assert_eq!(rig.host.mrds - mrds, reads);
        assert_eq!(rig.host.mwrs - mwrs, 512 + 1 + msix);
    }
    rig.seg_list = false;
    // Four commands pushed together: one host MWr of 256 bytes.
    let host = rig.host_mwrs;
    let cmds: Vec<_> = (0..4)
        .map(|i| SubmissionEntry {
            opcode: Opcode::Flush,
            cid: i,
            ..SubmissionEntry::default()
        })
        .collect();
    rig.push(0, &cmds);
    assert_eq!(rig.host_mwrs - host, 1);
    let cq = rig.host.cq_mwrs;
    rig.run();
    assert_eq!(rig.reap(0).len(), 4);
    assert_eq!(rig.host.cq_mwrs - cq, 1, "four completions, one write");
    assert_eq!(rig.reads, 0);
}

#[test]
fn many_commands_in_flight_on_several_queues() {
    let mut rig = Rig::new(4, &luns());
    rig.setup(4, 64, 64, 0, 0);
    let mut rng = Rng(4);
    // Fill LUN 0 with a pattern; then 4 x 32 reads and writes pushed
    // before the device runs at all.
    rng.bytes(&mut rig.disks[0]);
    let mut expect = rig.disks[0].clone();
    let mut reads = Vec::new();
    for q in 0..4 {
        let mut entries = Vec::new();
        for i in 0..32u16 {
            let lba = u64::from(q as u16 * 32 + i) * 8;
            let segs = rig.segments(4096, 1 + rng.below(4));
            let cid = i;
            if i % 2 == 0 {
                let mut e = rig.rw_entry(Opcode::Read, 0, lba, 8, &segs);
                e.cid = cid;
                reads.push((q, cid, lba, segs));
                entries.push(e);
            } else {
                let mut data = vec![0u8; 4096];
                rng.bytes(&mut data);
                let mut at = 0;
                for s in &segs {
                    rig.host
                        .slice_mut(s.addr, s.len as usize)
                        .copy_from_slice(&data[at..at + s.len as usize]);
                    at += s.len as usize;
                }
                let off = lba as usize * 512;
                expect[off..off + 4096].copy_from_slice(&data);
                let mut e = rig.rw_entry(Opcode::Write, 0, lba, 8, &segs);
                e.cid = cid;
                entries.push(e);
            }
        }
        rig.push(q, &entries);
    }
    let cq = rig.host.cq_mwrs;
    // The backing completes many at once: completions batch.
    rig.auto_backend = false;
    rig.run();
    let mut done = 0;
    for _ in 0..100 {
        rig.backend();
        rig.run();
        for q in 0..4 {
            done += rig.reap(q).iter().filter(|c| c.status == STATUS_OK).count();
        }
        if done == 128 {
            break;
        }
    }
    assert_eq!(done, 128);
    assert!(rig.disks[0] == expect);
    for (_, _, lba, segs) in &reads {
        let mut got = Vec::new();
        for s in segs {
            got.extend_from_slice(rig.host.slice(s.addr, s.len as usize));
        }
        let off = *lba as usize * 512;
        assert!(got[..] == expect[off..off + 4096]);
    }
    let writes = rig.host.cq_mwrs - cq;
    assert!(writes * 4 <= 128, "{writes} completion writes for 128");
    for q in 0..4 {
        assert_eq!(rig.drv[q].sq_head, rig.drv[q].submitted);
        assert_eq!(rig.drv[q].outstanding, 0);
    }
    assert_eq!(rig.reads, 0);
}

#[test]
fn submission_ring_wraps_with_flow_control_from_completions() {
    let mut rig = Rig::new(5, &luns());
    rig.setup(1, 8, 4, 0, 0);
    // 1000 flushes through a ring of 4, waiting only on sq_head and
    // completions the device wrote.
    let mut sent = 0u16;
    let mut got = 0;
    while got < 1000 {
        let d = &rig.drv[0];
        let room = (d.sq_size - d.submitted.wrapping_sub(d.sq_head)).min(d.cq_size - d.outstanding);
        let n = (room as usize).min(1000 - sent as usize);
        let cmds: Vec<_> = (0..n as u16)
            .map(|i| SubmissionEntry {
                opcode: Opcode::Flush,
                cid: sent + i,
                ..SubmissionEntry::default()
            })
            .collect();
        rig.push(0, &cmds);
        sent += n as u16;
        rig.run();
        let c = rig.reap(0);
        assert!(c.iter().all(|c| c.status == STATUS_OK));
        got += c.len();
    }
    assert_eq!(rig.vhba.prog_errors(), 0);
    assert_eq!(rig.vhba.stats()[STAT_FLUSHES], 1000);
}

#[test]
fn one_interrupt_per_moderation_window() {
    let mut rig = Rig::new(6, &luns());
    rig.setup(1, 64, 64, 100, 8);
    let flush = |cid| SubmissionEntry {
        opcode: Opcode::Flush,
        cid,
        ..SubmissionEntry::default()
    };
    // Eight completions: one interrupt at once.
    let n0 = rig.host.interrupts.len();
    rig.push(0, &(0..8).map(flush).collect::<Vec<_>>());
    rig.run();
    assert_eq!(rig.host.interrupts.len(), n0 + 1);
    assert_eq!(rig.reap(0).len(), 8);
    // Disarmed: more completions, no interrupt even after the time.
    rig.push(0, &[flush(8)]);
    rig.run();
    rig.advance(Duration::from_micros(500));
    assert_eq!(rig.host.interrupts.len(), n0 + 1);
    // Arming with completions flushed meanwhile: the interrupt at once.
    rig.write32(queue_reg(0, Q_IRQ_ARM), 1);
    rig.run();
    assert_eq!(rig.host.interrupts.len(), n0 + 2);
    assert_eq!(rig.reap(0).len(), 1);
    // Armed, one completion: only after ITR_USECS.
    rig.write32(queue_reg(0, Q_IRQ_ARM), 1);
    rig.push(0, &[flush(9)]);
    rig.run();
    assert_eq!(rig.host.interrupts.len(), n0 + 2);
    let at = rig.vhba.poll_at().unwrap();
    assert!(at > rig.now);
    rig.now = at;
    rig.run();
    assert_eq!(rig.host.interrupts.len(), n0 + 3);
    assert_eq!(rig.host.interrupts.last(), Some(&0));
    assert!(rig.vhba.poll_at().is_none());
}

#[test]
fn masked_vector_is_delivered_when_unmasked() {
    let mut rig = Rig::new(7, &luns());
    rig.setup(2, 16, 16, 0, 0);
    rig.write32(MSIX_TABLE + 16 + 12, 1);
    let n0 = rig.host.interrupts.len();
    let e = SubmissionEntry {
        opcode: Opcode::Flush,
        ..SubmissionEntry::default()
    };
    rig.exec(1, e);
    assert_eq!(rig.host.interrupts.len(), n0);
    rig.write32(MSIX_TABLE + 16 + 12, 0);
    rig.run();
    assert_eq!(rig.host.interrupts[n0..], [1]);
}

#[test]
fn bad_commands_complete_with_their_status() {
    let mut rig = Rig::new(8, &luns());
    rig.setup(1, 64, 64, 0, 0);
    let seg = |len| [Segment { addr: DATA, len }];
    let rw =
        |rig: &mut Rig, op, lun, lba, blocks, len| rig.rw_entry(op, lun, lba, blocks, &seg(len));
    let cases: Vec<(&str, SubmissionEntry, u8)> = vec![
        (
            "opcode",
            SubmissionEntry {
                opcode: Opcode::Unknown(0x42),
                ..SubmissionEntry::default()
            },
            STATUS_INVALID_OPCODE,
        ),
        (
            "lun",
            rw(&mut rig, Opcode::Read, 4, 0, 1, 512),
            STATUS_INVALID_LUN,
        ),
        (
            "lun 255",
            rw(&mut rig, Opcode::Read, 255, 0, 1, 512),
            STATUS_INVALID_LUN,
        ),
        (
            "past the end",
            rw(&mut rig, Opcode::Read, 0, 16384, 1, 512),
            STATUS_LBA_OUT_OF_RANGE,
        ),
        (
            "straddles the end",
            rw(&mut rig, Opcode::Write, 0, 16383, 2, 1024),
            STATUS_LBA_OUT_OF_RANGE,
        ),
        (
            "lba overflow",
            rw(&mut rig, Opcode::Read, 3, u64::MAX, 2, 1024),
            STATUS_LBA_OUT_OF_RANGE,
        ),
        (
            "read-only write",
            rw(&mut rig, Opcode::Write, 2, 0, 1, 512),
            STATUS_READ_ONLY,
        ),
        (
            "zero blocks",
            rw(&mut rig, Opcode::Read, 0, 0, 0, 512),
            STATUS_INVALID_FIELD,
        ),
        (
            "too long",
            rw(&mut rig, Opcode::Read, 0, 0, 257, 131_584),
            STATUS_INVALID_FIELD,
        ),
        (
            "blocks overflow",
            rw(&mut rig, Opcode::Read, 1, 0, u32::MAX, 4096),
            STATUS_INVALID_FIELD,
        ),
        (
            "length mismatch",
            rw(&mut rig, Opcode::Read, 0, 0, 2, 512),
            STATUS_INVALID_FIELD,
        ),
        (
            "fua read",
            {
                let mut e = rw(&mut rig, Opcode::Read, 0, 0, 1, 512);
                e.flags |= SQF_FUA;
                e
            },
            STATUS_INVALID_FIELD,
        ),
        (
            "unknown flag",
            {
                let mut e = rw(&mut rig, Opcode::Read, 0, 0, 1, 512);
                e.flags |= 0x80;
                e
            },
            STATUS_INVALID_FIELD,
        ),
        (
            "zero address",
            {
                let mut e = rw(&mut rig, Opcode::Read, 0, 0, 1, 512);
                e.segs[0].addr = 0;
                e
            },
            STATUS_INVALID_FIELD,
        ),
        (
            "wrapping segment",
            {
                let mut e = rw(&mut rig, Opcode::Read, 0, 0, 1, 512);
                e.segs[0].addr = u64::MAX - 100;
                e
            },
            STATUS_INVALID_FIELD,
        ),
        (
            "no segments",
            {
                let mut e = rw(&mut rig, Opcode::Read, 0, 0, 1, 512);
                e.nsegs = 0;
                e
            },
            STATUS_INVALID_FIELD,
        ),
        (
            "three inline",
            {
                let mut e = rw(&mut rig, Opcode::Read, 0, 0, 1, 512);
                e.nsegs = 3;
                e
            },
            STATUS_INVALID_FIELD,
        ),
        (
            "stray second segment",
            {
                let mut e = rw(&mut rig, Opcode::Read, 0, 0, 1, 512);
                e.segs[1] = Segment { addr: DATA, len: 1 };
                e
            },
            STATUS_INVALID_FIELD,
        ),
        (
            "list too long",
            {
                let mut e = rw(&mut rig, Opcode::Read, 0, 0, 1, 512);
                e.flags |= SQF_SEG_LIST;
                e.nsegs = MAX_SEGMENTS as u16 + 1;
                e.segs[0] = Segment {
                    addr: LISTS,
                    len: (MAX_SEGMENTS + 1) * 16,
                };
                e
            },
            STATUS_INVALID_FIELD,
        ),
        (
            "list unaligned",
            {
                let mut e = rw(&mut rig, Opcode::Read, 0, 0, 1, 512);
                e.flags |= SQF_SEG_LIST;
                e.nsegs = 1;
                e.segs[0] = Segment {
                    addr: LISTS + 8,
                    len: 16,
                };
                e
            },
            STATUS_INVALID_FIELD,
        ),
        (
            "flush with data",
            {
                let mut e = rw(&mut rig, Opcode::Flush, 0, 0, 0, 512);
                e.lba = 0;
                e
            },
            STATUS_INVALID_FIELD,
        ),
        (
            "discard unsupported",
            SubmissionEntry {
                opcode: Opcode::Discard,
                lun: 0,
                blocks: 1,
                ..SubmissionEntry::default()
            },
            STATUS_NOT_SUPPORTED,
        ),
        (
            "write zeroes unsupported",
            SubmissionEntry {
                opcode: Opcode::WriteZeroes,
                lun: 2,
                blocks: 1,
                ..SubmissionEntry::default()
            },
            STATUS_NOT_SUPPORTED,
        ),
        (
            "discard read-only",
            SubmissionEntry {
                opcode: Opcode::Discard,
                lun: 2,
                blocks: 1,
                ..SubmissionEntry::default()
            },
            STATUS_READ_ONLY,
        ),
        (
            "discard past the end",
            SubmissionEntry {
                opcode: Opcode::Discard,
                lun: 1,
                lba: 1024,
                blocks: 1,
                ..SubmissionEntry::default()
            },
            STATUS_LBA_OUT_OF_RANGE,
        ),
        (
            "discard zero blocks",
            SubmissionEntry {
                opcode: Opcode::Discard,
                lun: 1,
                ..SubmissionEntry::default()
            },
            STATUS_INVALID_FIELD,
        ),
        (
            "discard fua",
            SubmissionEntry {
                opcode: Opcode::Discard,
                lun: 1,
                blocks: 1,
                flags: SQF_FUA,
                ..SubmissionEntry::default()
            },
            STATUS_INVALID_FIELD,
        ),
    ];
    let mut raw_reserved = SubmissionEntry {
        opcode: Opcode::Flush,
        ..SubmissionEntry::default()
    }
    .encode();
    raw_reserved[60] = 1;
    for (i, (name, mut e, status)) in cases.into_iter().enumerate() {
        e.cid = i as u16;
        let c = rig.exec(0, e);
        assert_eq!(c.status, status, "{name}");
    }
    // Reserved bytes set: a raw entry.
    rig.stream(0, &raw_reserved);
    rig.drv[0].outstanding += 1;
    rig.run();
    assert_eq!(rig.reap(0)[0].status, STATUS_INVALID_FIELD);
    // None reached the backing, nothing was read or written, and the
    // queue still works.
    assert!(rig.backend_log.is_empty());
    assert_eq!(rig.host.mrds, 0);
    assert_eq!(rig.vhba.prog_errors(), 0);
    let data = vec![0x5au8; 1024];
    assert_eq!(rig.write_blocks(0, 0, 5, &data, 2), STATUS_OK);
    assert_eq!(rig.read_blocks(0, 2, 5, 512, 1).0, STATUS_OK);
    assert!(rig.vhba.stats()[STAT_ERRORS] >= 27);
}

#[test]
fn backing_errors_and_dma_errors_are_io_statuses() {
    let mut rig = Rig::new(9, &luns());
    rig.setup(1, 64, 64, 0, 0);
    // The backing fails.
    rig.fail_io = Some(IoError::Io);
    assert_eq!(rig.read_blocks(0, 0, 0, 4096, 2).0, STATUS_IO_ERROR);
    assert_eq!(rig.write_blocks(0, 0, 0, &[1; 4096], 3), STATUS_IO_ERROR);
    rig.fail_io = Some(IoError::NotSupported);
    let e = SubmissionEntry {
        opcode: Opcode::Discard,
        lun: 1,
        blocks: 4,
        ..SubmissionEntry::default()
    };
    assert_eq!(rig.exec(0, e).status, STATUS_NOT_SUPPORTED);
    rig.fail_io = None;
    // The host's IOMMU refuses the write data: DMA_ERROR, the backing
    // never sees it.
    let log = rig.backend_log.len();
    let segs = rig.segments(8192, 2);
    rig.host.hole = Some((segs[1].addr, 1));
    let e = rig.rw_entry(Opcode::Write, 0, 0, 16, &segs);
    assert_eq!(rig.exec(0, e).status, STATUS_DMA_ERROR);
    // Or the segment list.
    rig.seg_list = true;
    let segs = rig.segments(8192, 5);
    let e = rig.rw_entry(Opcode::Read, 0, 0, 16, &segs);
    rig.host.hole = Some((e.segs[0].addr, 16));
    assert_eq!(rig.exec(0, e).status, STATUS_DMA_ERROR);
    rig.host.hole = None;
    rig.seg_list = false;
    assert_eq!(rig.backend_log.len(), log);
    assert_eq!(rig.vhba.stats()[STAT_DMA_ERRORS], 2);
    // A segment list whose lengths do not add up.
    let mut segs = rig.segments(4096, 3);
    segs[2].len += 1;
    let e = rig.rw_entry(Opcode::Write, 0, 0, 8, &segs);
    assert_eq!(rig.exec(0, e).status, STATUS_INVALID_FIELD);
    // A read that never completes: the caller's timer gives up.
    let segs = rig.segments(4096, 1);
    let e = rig.rw_entry(Opcode::Write, 0, 0, 8, &segs);
    rig.push(0, &[e]);
    {
        let mut mem = mem!(rig);
        let n = rig.vhba.poll(rig.now, &rig.cs, &mut mem, &mut rig.buf);
        assert!(n.is_some());
    }
    rig.host.queues.clear();
    rig.run();
    assert!(rig.reap(0).is_empty());
    let mut mem = mem!(rig);
    assert!(rig.vhba.awaiting_completions(&mem));
    rig.vhba.timeout(&mut mem);
    assert!(!rig.vhba.awaiting_completions(&mem));
    rig.run();
    let c = rig.reap(0);
    assert_eq!(c[0].status, STATUS_DMA_ERROR);
    // And all is well after.
    let data = vec![7u8; 4096];
    assert_eq!(rig.write_blocks(0, 0, 8, &data, 2), STATUS_OK);
    assert_eq!(rig.read_blocks(0, 0, 8, 4096, 3), (STATUS_OK, data));
}

#[test]
fn flush_fua_discard_and_write_zeroes_reach_the_backing() {
    let mut rig = Rig::new(10, &luns());
    rig.setup(1, 64, 64, 0, 0);
    rig.disks[1].fill(0xee);
    let e = SubmissionEntry {
        opcode: Opcode::Flush,
        lun: 0,
        ..SubmissionEntry::default()
    };
    assert_eq!(rig.exec(0, e).status, STATUS_OK);
    assert_eq!(rig.backend_log.last().unwrap().op, BackendOp::Flush);
    // A FUA write.
    let segs = rig.segments(4096, 1);
    let mut e = rig.rw_entry(Opcode::Write, 1, 3, 1, &segs);
    e.flags |= SQF_FUA;
    assert_eq!(rig.exec(0, e).status, STATUS_OK);
    let r = *rig.backend_log.last().unwrap();
    assert!(r.fua);
    assert_eq!(r.op, BackendOp::Write { lba: 3, blocks: 1 });
    assert_eq!((r.lun, r.bytes), (1, 4096));
    let e = SubmissionEntry {
        opcode: Opcode::Discard,
        lun: 1,
        lba: 10,
        blocks: 2,
        ..SubmissionEntry::default()
    };
    assert_eq!(rig.exec(0, e).status, STATUS_OK);
    assert_eq!(
        rig.backend_log.last().unwrap().op,
        BackendOp::Discard { lba: 10, blocks: 2 }
    );
    let e = SubmissionEntry {
        opcode: Opcode::WriteZeroes,
        flags: SQF_FUA,
        lun: 1,
        lba: 20,
        blocks: 1,
        ..SubmissionEntry::default()
    };
    assert_eq!(rig.exec(0, e).status, STATUS_OK);
    let r = *rig.backend_log.last().unwrap();
    assert_eq!(r.op, BackendOp::WriteZeroes { lba: 20, blocks: 1 });
    assert!(r.fua);
    assert_eq!(r.bytes, 0);
    assert!(rig.disks[1][20 * 4096..21 * 4096].iter().all(|&b| b == 0));
    assert!(rig.disks[1][21 * 4096..22 * 4096]
        .iter()
        .all(|&b| b == 0xee));
    let s = rig.vhba.stats();
    assert_eq!((s[STAT_FLUSHES], s[STAT_DISCARDS]), (2, 2));
}

#[test]
fn bad_programming_is_refused_and_counted() {
    let mut rig = Rig::new(11, &luns());
    let mut errors = 0;
    for size in [0u32, 1, 3, 100, 512, u32::MAX] {
        rig.write32(queue_reg(0, Q_CQ_SIZE), size);
        expect_err(&mut rig, &mut errors, ERR_RING_SIZE);
        rig.write32(queue_reg(0, Q_SQ_SIZE), size);
        expect_err(&mut rig, &mut errors, ERR_RING_SIZE);
    }
    // Enable with nothing programmed.
    rig.write32(queue_reg(0, Q_CONTROL), QCTRL_ENABLE);
    expect_err(&mut rig, &mut errors, ERR_RING_SIZE);
    // SQ bigger than CQ.
    rig.write32(queue_reg(0, Q_CQ_SIZE), 8);
    rig.write32(queue_reg(0, Q_SQ_SIZE), 16);
    rig.write32(queue_reg(0, Q_CONTROL), QCTRL_ENABLE);
    expect_err(&mut rig, &mut errors, ERR_RING_SIZE);
    rig.write32(queue_reg(0, Q_SQ_SIZE), 8);
    for cq in [0u64, cq_addr(0) + 8, u64::MAX - 0x7f] {
        rig.write32(queue_reg(0, Q_CQ_ADDR_LO), cq as u32);
        rig.write32(queue_reg(0, Q_CQ_ADDR_HI), (cq >> 32) as u32);
        rig.write32(queue_reg(0, Q_CONTROL), QCTRL_ENABLE);
        expect_err(&mut rig, &mut errors, ERR_ADDRESS);
        assert_eq!(rig.read32(queue_reg(0, Q_STATUS)), ERR_ADDRESS << 8);
    }
    for (reg, value) in [
        (REG_MISC_VECTOR, 4u32),
        (queue_reg(0, Q_IRQ_VECTOR), 4),
        (queue_reg(0, Q_ITR_USECS), ITR_USECS_MAX + 1),
        (queue_reg(0, Q_ITR_COUNT), RING_MAX + 1),
    ] {
        rig.write32(reg, value);
        expect_err(&mut rig, &mut errors, ERR_VALUE);
    }
    // Windows of a disabled queue, of one that does not exist, registers
    // of one that does not exist.
    let mut cfg = luns();
    cfg.queues = 2;
    let mut rig2 = Rig::new(11, &cfg);
    let mut errors2 = 0;
    rig2.write32(sq_window(0), 0);
    expect_err(&mut rig2, &mut errors2, ERR_QUEUE);
    rig2.write32(sq_window(3), 0);
    expect_err(&mut rig2, &mut errors2, ERR_QUEUE);
    rig2.write32(queue_reg(2, Q_CQ_SIZE), 8);
    expect_err(&mut rig2, &mut errors2, ERR_QUEUE);
    assert_eq!(rig2.read32(queue_reg(2, Q_SQ_MAX)), 0);
    // A queue whose caller memory is too small, or no slots at all.
    rig.sq[1] = vec![0; 64 * 7];
    assert_eq!(rig.read32(queue_reg(1, Q_SQ_MAX)), 4);
    rig.write32(queue_reg(1, Q_CQ_SIZE), 8);
    rig.write32(queue_reg(1, Q_SQ_SIZE), 8);
    rig.write32(queue_reg(1, Q_CQ_ADDR_LO), cq_addr(1) as u32);
    rig.write32(queue_reg(1, Q_CQ_ADDR_HI), (cq_addr(1) >> 32) as u32);
    rig.write32(queue_reg(1, Q_CONTROL), QCTRL_ENABLE);
    expect_err(&mut rig, &mut errors, ERR_QUEUE);
    rig.sq[1] = vec![0; RING_MAX as usize * SQE_LEN];
    let data = std::mem::take(&mut rig.data);
    assert_eq!(rig.read32(REG_SLOTS), 0);
    rig.write32(queue_reg(1, Q_CONTROL), QCTRL_ENABLE);
    expect_err(&mut rig, &mut errors, ERR_QUEUE);
    rig.data = data;
    // Now a good setup; programming while enabled is refused.
    let before = rig.vhba.prog_errors();
    rig.setup(1, 16, 16, 0, 0);
    assert_eq!(rig.vhba.prog_errors(), before);
    errors = before;
    rig.write32(queue_reg(0, Q_CQ_ADDR_LO), 0);
    expect_err(&mut rig, &mut errors, ERR_BUSY);
    rig.write32(queue_reg(0, Q_SQ_SIZE), 4);
    expect_err(&mut rig, &mut errors, ERR_BUSY);
    // The status block reports errors, with the misc vector.
    rig.run();
    let block = StatusBlock::decode(rig.host.slice(STATUS_ADDR, 128).try_into().unwrap());
    assert_eq!(block.prog_errors, errors);
    assert_ne!(block.causes & CAUSE_ERROR, 0);
    assert!(rig.host.interrupts.contains(&3));
}

/// Restarts queue 0 (after a stream error) and checks it works.
fn restart_and_check(rig: &mut Rig) {
    rig.write32(queue_reg(0, Q_CONTROL), 0);
    rig.write32(queue_reg(0, Q_CONTROL), QCTRL_ENABLE);
    assert_eq!(rig.read32(queue_reg(0, Q_STATUS)), QSTATUS_ENABLED);
    let (cq, sq) = (rig.drv[0].cq_size, rig.drv[0].sq_size);
    rig.host.slice_mut(cq_addr(0), 16 * cq as usize).fill(0);
    rig.drv[0] = DrvQueue {
        cq_size: cq,
        sq_size: sq,
        ..DrvQueue::default()
    };
    let data = vec![0x3cu8; 2048];
    assert_eq!(rig.write_blocks(0, 0, 100, &data, 3), STATUS_OK);
    assert_eq!(rig.read_blocks(0, 0, 100, 2048, 2), (STATUS_OK, data));
}

#[test]
fn stream_errors_stop_the_stream_until_restart() {
    let mut rig = Rig::new(12, &luns());
    rig.setup(1, 16, 8, 0, 0);
    let mut errors = rig.vhba.prog_errors();
    // Out of position.
    rig.write32(sq_window(0) + 64, 0);
    expect_err(&mut rig, &mut errors, ERR_POSITION);
    assert_ne!(rig.read32(queue_reg(0, Q_STATUS)) & QSTATUS_STREAM_ERROR, 0);
    // Further writes are dropped, not counted again.
    rig.write32(sq_window(0), 0);
    assert_eq!(rig.read32(REG_PROG_ERRORS), errors);
    restart_and_check(&mut rig);
    // A partial double word.
    let req = Tlp::mem_write(HOST_ID, BAR_ADDR + u64::from(sq_window(0)), 0x3, 0, &[0; 4]);
    rig.serve(&req);
    expect_err(&mut rig, &mut errors, ERR_POSITION);
    restart_and_check(&mut rig);
    // An overrun: nine entries into a ring of eight, the device not
    // running meanwhile.
    let flush = SubmissionEntry {
        opcode: Opcode::Flush,
        ..SubmissionEntry::default()
    };
    let mut bytes = Vec::new();
    for _ in 0..9 {
        bytes.extend_from_slice(&flush.encode());
    }
    rig.stream(0, &bytes);
    expect_err(&mut rig, &mut errors, ERR_OVERRUN);
    // The eight that fit still complete.
    rig.drv[0].submitted -= 1;
    rig.drv[0].outstanding = 8;
    rig.run();
    assert_eq!(rig.reap(0).len(), 8);
    restart_and_check(&mut rig);
    // A command longer than the ring: 64 pushed segments are 17 units.
    let segs: Vec<_> = (0..MAX_SEGMENTS as u64)
        .map(|i| Segment {
            addr: DATA + i * 64,
            len: 8,
        })
        .collect();
    let e = rig.rw_entry(Opcode::Read, 0, 0, 1, &segs);
    assert_eq!(e.units(), 17);
    let rec = rig.record(&e);
    rig.stream(0, &rec[..64]);
    expect_err(&mut rig, &mut errors, ERR_OVERRUN);
    restart_and_check(&mut rig);
}

#[test]
fn a_queue_stopped_under_the_backing_keeps_its_slot_until_done() {
    let mut rig = Rig::new(13, &luns());
    rig.setup(1, 16, 16, 0, 0);
    rig.auto_backend = false;
    let segs = rig.segments(4096, 1);
    let e = rig.rw_entry(Opcode::Read, 0, 0, 8, &segs);
    rig.push(0, &[e]);
    rig.run();
    let mut mem = mem!(rig);
    let req = rig.vhba.next_backend(&mut mem).unwrap();
    assert!(rig.vhba.next_backend(&mut mem).is_none());
    // The queue stops; the slot stays the backing's.
    rig.write32(queue_reg(0, Q_CONTROL), 0);
    rig.run();
    assert!(!rig.slots[usize::from(req.slot)].is_free());
    let mut mem = mem!(rig);
    assert!(rig.vhba.backend_done(req.slot, Ok(()), &mut mem));
    assert!(!rig.vhba.backend_done(req.slot, Ok(()), &mut mem));
    assert!(rig.slots[usize::from(req.slot)].is_free());
    // No completion was written; after a restart all works.
    let cq = rig.host.cq_mwrs;
    rig.run();
    assert_eq!(rig.host.cq_mwrs, cq);
    rig.auto_backend = true;
    restart_and_check(&mut rig);
    // The same through a device reset.
    rig.auto_backend = false;
    let segs = rig.segments(4096, 1);
    let e = rig.rw_entry(Opcode::Write, 0, 0, 8, &segs);
    rig.push(0, &[e]);
    rig.run();
    let mut mem = mem!(rig);
    let req = rig.vhba.next_backend(&mut mem).unwrap();
    rig.write32(REG_CONTROL, CTRL_RESET);
    let mut mem = mem!(rig);
    assert!(rig.vhba.next_backend(&mut mem).is_none());
    assert!(rig.vhba.backend_done(req.slot, Err(IoError::Io), &mut mem));
    assert!(rig.slots.iter().all(Slot::is_free));
    // Unknown slots are refused.
    let mut mem = mem!(rig);
    assert!(!rig.vhba.backend_done(999, Ok(()), &mut mem));
}

#[test]
fn lun_changes_are_reported() {
    let mut rig = Rig::new(14, &luns());
    rig.setup(1, 16, 16, 0, 0);
    let mut info = luns().luns[0];
    info.blocks = 100;
    info.read_only = true;
    assert!(rig.vhba.set_lun(0, &info));
    assert!(!rig.vhba.set_lun(4, &info));
    rig.run();
    let block = StatusBlock::decode(rig.host.slice(STATUS_ADDR, 128).try_into().unwrap());
    assert_ne!(block.causes & CAUSE_LUN, 0);
    assert_eq!(rig.host.interrupts.last(), Some(&3));
    assert_eq!(rig.read32(lun_reg(0, LUN_BLOCKS_LO)), 100);
    assert_eq!(rig.write_blocks(0, 0, 0, &[0; 512], 1), STATUS_READ_ONLY);
    assert_eq!(
        rig.read_blocks(0, 0, 100, 512, 1).0,
        STATUS_LBA_OUT_OF_RANGE
    );
}

#[test]
fn nothing_without_bus_master() {
    let mut rig = Rig::new(15, &luns());
    rig.setup(1, 16, 16, 0, 0);
    rig.cs.write(COMMAND, 2, u32::from(CMD_MEMORY)).unwrap();
    let e = SubmissionEntry {
        opcode: Opcode::Flush,
        ..SubmissionEntry::default()
    };
    rig.push(0, &[e]);
    let mwrs = rig.host.mwrs;
    rig.run();
    assert_eq!(rig.host.mwrs, mwrs);
    rig.cs
        .write(COMMAND, 2, u32::from(CMD_MEMORY | CMD_BUS_MASTER))
        .unwrap();
    rig.run();
    assert_eq!(rig.reap(0).len(), 1);
}

#[test]
fn fuzz_random_programming_never_panics() {
    for seed in 1..=40u64 {
        let mut rig = Rig::new(seed, &luns());
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        if seed % 4 != 0 {
            rig.setup(4, 64, 16 << (seed % 3), 10, 4);
        }
        rig.auto_backend = seed % 3 != 0;
        let mut held: Vec<BackendRequest> = Vec::new();
        for _ in 0..3000 {
            match rng.below(12) {
                0..=3 => {
                    // Commands pushed at the driver's position: plausible,
                    // often valid, sometimes not.
                    let q = rng.below(4);
                    let n = 1 + rng.below(4);
                    let mut entries = Vec::new();
                    for _ in 0..n {
                        let lun = rng.below(6) as u8;
                        let op = Opcode::from(rng.below(7) as u8);
                        let bs = if lun == 1 { 4096 } else { 512 };
                        let blocks = 1 + rng.below(if lun == 1 { 33 } else { 260 });
                        let lba = rng.below(3000) as u64;
                        rig.seg_list = rng.below(3) == 0;
                        let mut e = if rng.below(4) != 0 {
                            let segs = rig.segments(blocks * bs, 1 + rng.below(40));
                            rig.rw_entry(op, lun, lba, blocks as u32, &segs)
                        } else {
                            SubmissionEntry {
                                opcode: op,
                                lun,
                                lba,
                                blocks: blocks as u32,
                                ..SubmissionEntry::default()
                            }
                        };
                        e.cid = rng.next() as u16;
                        if rng.below(8) == 0 {
                            e.flags ^= 1 << rng.below(8);
                        }
                        if rng.below(16) == 0 {
                            e.nsegs = rng.below(70) as u16;
                        }
                        entries.push(e);
                    }
                    let bytes: Vec<u8> = entries.iter().flat_map(|e| rig.record(e)).collect();
                    rig.stream(q, &bytes);
                }
                4 => {
                    // Noise somewhere in BAR0, mostly the windows.
                    let base = [0u32, 0x100, 0x200, 0x1000, 0x1800, 0x3000][rng.below(6)];
                    let offset = (base + rng.below(0x900) as u32) & !3 & (BAR0_LEN - 1);
                    let dws = 1 + rng.below(32);
                    let mut data = vec![0u8; dws * 4];
                    rng.bytes(&mut data);
                    if offset == REG_CONTROL && rng.below(4) != 0 {
                        data[..4].copy_from_slice(&CTRL_ENABLE.to_le_bytes());
                    }
                    let n = data.len().min(4096 - (offset as usize & 0xfff)).min(256);
                    let first_be = rng.below(16) as u8;
                    let last_be = if n <= 4 { 0 } else { rng.below(16) as u8 };
                    let req = Tlp::mem_write(
                        HOST_ID,
                        BAR_ADDR + u64::from(offset),
                        first_be.max(1),
                        last_be,
                        &data[..n.max(4) & !3],
                    );
                    if req.check().is_ok() {
                        rig.serve(&req);
                    }
                }
                10 => {
                    // The driver reaps, and now and then restarts a queue
                    // (or the device, or unmaps a range).
                    for q in 0..4 {
                        if rig.drv[q].cq_size > 0 {
                            let d = &rig.drv[q];
                            let at = cq_addr(q) + u64::from(d.cq_head % d.cq_size) * 16;
                            let c = Completion::decode(rig.host.slice(at, 16).try_into().unwrap());
                            if c.flags & CQF_PHASE == Completion::phase_of(d.cq_head, d.cq_size) {
                                rig.drv[q].cq_head += 1;
                            }
                        }
                    }
                    match rng.below(30) {
                        0 => {
                            let q = rng.below(4);
                            rig.write32(queue_reg(q as u32, Q_CONTROL), 0);
                            rig.write32(queue_reg(q as u32, Q_CONTROL), QCTRL_ENABLE);
                            let (cq, sq) = (rig.drv[q].cq_size, rig.drv[q].sq_size);
                            rig.host.slice_mut(cq_addr(q), 16 * cq as usize).fill(0);
                            rig.drv[q] = DrvQueue {
                                cq_size: cq,
                                sq_size: sq,
                                ..DrvQueue::default()
                            };
                        }
                        1 => rig.write32(REG_CONTROL, CTRL_ENABLE),
                        2 => {
                            let a = DATA + rng.below(DATA_LEN as usize) as u64;
                            rig.host.hole = Some((a, rng.below(1 << 20) as u64));
                        }
                        3 => rig.host.hole = None,
                        _ => {}
                    }
                }
                5 => {
                    let offset = rng.below(BAR0_LEN as usize) as u32 & !3;
                    let len = 1 + rng.below(16) as u16;
                    let req = Tlp::mem_read(
                        HOST_ID,
                        Tag::from(1),
                        BAR_ADDR + u64::from(offset),
                        len,
                        0xf,
                        if len == 1 { 0 } else { 0xf },
                    );
                    if req.check().is_ok() {
                        let _ = rig.serve(&req);
                    }
                }
                6 => {
                    // Backend requests held and completed out of order,
                    // some twice, some with bogus slots.
                    let mut mem = mem!(rig);
                    if let Some(r) = rig.vhba.next_backend(&mut mem) {
                        held.push(r);
                    }
                    if !held.is_empty() && rng.below(2) == 0 {
                        let i = rng.below(held.len());
                        let r = held.swap_remove(i);
                        let res = if rng.below(4) == 0 {
                            Err(IoError::Io)
                        } else {
                            Ok(())
                        };
                        rig.vhba.backend_done(r.slot, res, &mut mem);
                        if rng.below(10) == 0 {
                            rig.vhba.backend_done(r.slot, Ok(()), &mut mem);
                        }
                    }
                    let bogus = rng.below(100) as u16;
                    if rng.below(20) == 0 {
                        rig.vhba.backend_done(bogus, Ok(()), &mut mem);
                    }
                }
                7 => {
                    // A stray completion.
                    let mut buf = [0u8; 64];
                    let cpl = Tlp::completion(
                        HOST_ID,
                        CompletionStatus::Success,
                        FN_ID,
                        Tag::from(rng.below(256) as u8),
                        1 + rng.below(4095) as u16,
                        rng.below(128) as u8,
                        &[0xa5; 16],
                    );
                    let n = cpl.emit(&mut buf).unwrap();
                    let t = Tlp::decode(&buf[..n]).unwrap();
                    let mut mem = mem!(rig);
                    let _ = rig.vhba.receive(&t, &mut mem);
                }
                8 => {
                    rig.advance(Duration::from_micros(rng.below(500) as u64));
                }
                _ => {
                    if rng.below(50) == 0 {
                        let mut mem = mem!(rig);
                        rig.vhba.timeout(&mut mem);
                    }
                    rig.run();
                }
            }
        }
        // Give back what the backing holds, then reset: a working vHBA.
        rig.run();
        let mut mem = mem!(rig);
        for r in held.drain(..) {
            rig.vhba.backend_done(r.slot, Ok(()), &mut mem);
        }
        rig.write32(REG_CONTROL, CTRL_RESET);
        rig.auto_backend = true;
        rig.run();
        let mut mem = mem!(rig);
        rig.vhba.timeout(&mut mem);
        rig.host.queues.clear();
        rig.run();
        assert!(rig.slots.iter().all(Slot::is_free), "seed {seed}");
        rig.host.mem[..0x1_0000].fill(0);
        rig.host.hole = None;
        rig.drv = vec![DrvQueue::default(); 4];
        rig.setup(1, 16, 16, 0, 0);
        let mut data = vec![0u8; 8192];
        rng.bytes(&mut data);
        assert_eq!(
            rig.write_blocks(0, 0, 64, &data, 3),
            STATUS_OK,
            "seed {seed}"
        );
        assert_eq!(
            rig.read_blocks(0, 0, 64, 8192, 2),
            (STATUS_OK, data),
            "seed {seed}"
        );
    }
}

#[test]
fn late_completions_of_a_restarted_queue_are_dropped() {
    let mut rig = Rig::new(16, &luns());
    rig.setup(1, 16, 16, 0, 0);
    // A WRITE whose data reads are out; the host holds the answers.
    let mut data = vec![0u8; 16384];
    Rng(16).bytes(&mut data);
    let segs = rig.segments(16384, 2);
    let mut at = 0;
    for s in &segs {
        rig.host
            .slice_mut(s.addr, s.len as usize)
            .copy_from_slice(&data[at..at + s.len as usize]);
        at += s.len as usize;
    }
    let e = rig.rw_entry(Opcode::Write, 0, 0, 32, &segs);
    rig.push(0, &[e]);
    loop {
        let mut mem = mem!(rig);
        let Some(n) = rig.vhba.poll(rig.now, &rig.cs, &mut mem, &mut rig.buf) else {
            break;
        };
        rig.host.handle(&rig.buf[..n]);
    }
    assert!(rig.host.mrds > 0);
    let held: Vec<_> = std::iter::from_fn(|| rig.host.next_completion()).collect();
    // The queue restarts; the answers arrive late: taken and dropped.
    rig.write32(queue_reg(0, Q_CONTROL), 0);
    rig.write32(queue_reg(0, Q_CONTROL), QCTRL_ENABLE);
    rig.run();
    for cpl in &held {
        let t = Tlp::decode(cpl).unwrap();
        let mut mem = mem!(rig);
        assert!(rig.vhba.receive(&t, &mut mem));
    }
    assert!(rig.disks[0][..16384].iter().all(|&b| b == 0));
    assert!(rig.backend_log.is_empty());
    // The readers that had requests out wait for the completion timer;
    // others serve meanwhile, and after it all are free.
    let mut mem = mem!(rig);
    assert!(rig.vhba.awaiting_completions(&mem));
    rig.vhba.timeout(&mut mem);
    assert!(!rig.vhba.awaiting_completions(&mem));
    rig.host.slice_mut(cq_addr(0), 256).fill(0);
    rig.drv[0] = DrvQueue {
        cq_size: 16,
        sq_size: 16,
        ..DrvQueue::default()
    };
    assert_eq!(rig.write_blocks(0, 0, 0, &data, 5), STATUS_OK);
    assert!(rig.disks[0][..16384] == data[..]);
    assert!(rig.slots.iter().all(Slot::is_free));
}
