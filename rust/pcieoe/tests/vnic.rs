// SPDX-License-Identifier: GPL-2.0

//! The vNIC function against a model host: host memory behind an
//! IOMMU-like window that answers MRd with CplDs split at a 64-byte RCB
//! (in random order across tags), applies MWr and collects MSI-X
//! messages; and a model of the host driver that programs the rings,
//! pushes TX records and RX buffers through the BAR0 windows and reads
//! completions from its memory only (it never reads a register on the
//! data path: the tests check that too).

use std::collections::VecDeque;

use pcieoe::cfgspace::{
    ConfigSpace, BAR0, CAP_ID_MSIX, CAP_ID_PCIE, CMD_BUS_MASTER, CMD_MEMORY, COMMAND, MSIX_CONTROL,
    MSIX_ENABLE, PCIE_DEVCTL,
};
use pcieoe::clock::{Duration, Instant};
use pcieoe::function::{build, FunctionKind, Identity};
use pcieoe::testfn::Mmio;
use pcieoe::tlp::{self, byte_count, lower_address, Bdf, CompletionStatus, Kind, Tag, Tlp};
use pcieoe::vnic::*;
use pcieoe::vnic_layout::*;

const FN_ID: Bdf = Bdf::from_raw(0x0018);
const HOST_ID: Bdf = Bdf::from_raw(0x0000);
const BAR_ADDR: u64 = 0xe000_0000;
const MEM_BASE: u64 = 0x1_0000_0000;
const MEM_LEN: usize = 16 << 20;
const MSI_ADDR: u64 = 0xfee0_0000;
const MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0x20, 0x30];
const TX_FIFO: usize = 64 << 10;
const RX_STAGE: usize = RX_RING_BYTES + (60 << 10);

// Host memory map.
const fn cq_addr(q: usize) -> u64 {
    MEM_BASE + (q as u64) * 0x1_0000
}
const fn done_addr(q: usize) -> u64 {
    MEM_BASE + 0x8000 + (q as u64) * 0x1_0000
}
const STATUS_ADDR: u64 = MEM_BASE + 0xf000;
const RX_BUF_STRIDE: u64 = 0x2400;
const fn rx_buf(q: usize, slot: u32) -> u64 {
    MEM_BASE + 0x10_0000 + (q as u64) * 0x28_0000 + slot as u64 * RX_BUF_STRIDE
}
const TX_DATA: u64 = MEM_BASE + (12 << 20);
const TX_DATA_LEN: u64 = 4 << 20;

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
    cplds: usize,
    refused: usize,
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
            cplds: 0,
            refused: 0,
        }
    }

    fn mapped(&self, addr: u64, len: u64) -> bool {
        addr >= MEM_BASE && addr + len <= MEM_BASE + MEM_LEN as u64
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
        device: 0x0002,
        ..Identity::default()
    };
    build(FunctionKind::Vnic, &id, &mut cs).unwrap();
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
    tx: &'a mut [Vec<u8>],
    rx: &'a mut [Vec<u8>],
    readers: &'a mut [Reader],
) -> Storage<'a> {
    let [t0, t1, t2, t3] = tx else { panic!() };
    let [r0, r1, r2, r3] = rx else { panic!() };
    Storage {
        tx: [t0, t1, t2, t3],
        rx: [r0, r1, r2, r3],
        readers,
    }
}

/// How a frame is handed to the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Pushed whole through the TX window.
    Inline,
    /// One descriptor; the device reads the frame.
    Dma,
    /// The first 64 bytes inline, the rest read in two segments.
    Split,
}

/// The host driver's view of a queue pair.
#[derive(Clone, Debug, Default)]
struct DrvQueue {
    pos: u32,
    fifo_units: u32,
    records: u32,
    posted: u32,
    consumed: u32,
    ring: u32,
    buf_len: u32,
}

struct Rig {
    vnic: Box<Vnic>,
    cs: Box<ConfigSpace>,
    tx: Vec<Vec<u8>>,
    rx: Vec<Vec<u8>>,
    readers: Vec<Reader>,
    host: Host,
    buf: Vec<u8>,
    now: Instant,
    drv: Vec<DrvQueue>,
    tx_data_next: u64,
    /// Frames out of tx_frame: (queue, bytes).
    sent: Vec<(u8, Vec<u8>)>,
    /// MMIO reads the host made (must stay 0 on the data path).
    reads: usize,
    /// MWr TLPs the host sent.
    host_mwrs: usize,
}

impl Rig {
    fn new(seed: u64, queues: u32, mtu_max: u32) -> Rig {
        let cfg = Config {
            mac: MAC,
            mtu_max,
            queues,
        };
        Rig {
            vnic: Box::new(Vnic::new(FN_ID, &cfg)),
            cs: config_space(),
            tx: (0..4).map(|_| vec![0u8; TX_FIFO]).collect(),
            rx: (0..4).map(|_| vec![0u8; RX_STAGE]).collect(),
            readers: vec![Reader::new(); READERS],
            host: Host::new(seed),
            buf: vec![0u8; TLP_BUF_LEN],
            now: Instant::from_millis(1),
            drv: vec![DrvQueue::default(); 4],
            tx_data_next: 0,
            sent: Vec::new(),
            reads: 0,
            host_mwrs: 0,
        }
    }

    fn serve(&mut self, req: &Tlp<'_>) -> (Mmio, Vec<Vec<u8>>) {
        let mut out = Vec::new();
        let mut mem = storage(&mut self.tx, &mut self.rx, &mut self.readers);
        let r = self
            .vnic
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

    /// Polls and feeds completions back until neither side has work.
    fn run(&mut self) {
        for _ in 0..1_000_000 {
            let mut progress = false;
            loop {
                let mut mem = storage(&mut self.tx, &mut self.rx, &mut self.readers);
                let Some(n) = self.vnic.poll(self.now, &self.cs, &mut mem, &mut self.buf) else {
                    break;
                };
                self.host.handle(&self.buf[..n]);
                progress = true;
            }
            for _ in 0..=self.host.rng.below(6) {
                if let Some(cpl) = self.host.next_completion() {
                    let t = Tlp::decode(&cpl).unwrap();
                    let mut mem = storage(&mut self.tx, &mut self.rx, &mut self.readers);
                    let _ = self.vnic.receive(&t, &mut mem);
                    progress = true;
                }
            }
            if !progress {
                return;
            }
        }
        panic!("no quiescence");
    }

    /// Lets time pass (moderation timers) and runs.
    fn advance(&mut self, d: Duration) {
        self.now = self.now + d;
        self.run();
    }

    /// Sends every complete frame to "the uplink" (self.sent).
    fn drain_tx(&mut self) -> usize {
        let mut out = vec![0u8; FRAME_MAX as usize];
        let mut n = 0;
        loop {
            let mem = storage(&mut self.tx, &mut self.rx, &mut self.readers);
            let Some(f) = self.vnic.tx_frame(&mem, &mut out) else {
                break;
            };
            self.sent.push((f.queue, out[..f.len].to_vec()));
            n += 1;
        }
        n
    }

    fn rx_frame(&mut self, frame: &[u8]) -> RxVerdict {
        let mut mem = storage(&mut self.tx, &mut self.rx, &mut self.readers);
        self.vnic.rx_frame(frame, &mut mem)
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

    /// Programs and enables `queues` queue pairs with RX rings of `ring`
    /// buffers of `buf_len` bytes, posts them all, arms the interrupts.
    fn setup(&mut self, queues: usize, ring: u32, buf_len: u32, itr_usecs: u32, itr_frames: u32) {
        self.program_msix();
        self.write32(REG_STATUS_ADDR_LO, STATUS_ADDR as u32);
        self.write32(REG_STATUS_ADDR_HI, (STATUS_ADDR >> 32) as u32);
        self.write32(REG_MISC_VECTOR, 3);
        for q in 0..queues {
            let qq = q as u32;
            self.write32(queue_reg(qq, Q_TX_DONE_ADDR_LO), done_addr(q) as u32);
            self.write32(
                queue_reg(qq, Q_TX_DONE_ADDR_HI),
                (done_addr(q) >> 32) as u32,
            );
            self.write32(queue_reg(qq, Q_RX_CQ_ADDR_LO), cq_addr(q) as u32);
            self.write32(queue_reg(qq, Q_RX_CQ_ADDR_HI), (cq_addr(q) >> 32) as u32);
            self.write32(queue_reg(qq, Q_RX_RING_SIZE), ring);
            self.write32(queue_reg(qq, Q_IRQ_VECTOR), qq);
            self.write32(queue_reg(qq, Q_ITR_USECS), itr_usecs);
            self.write32(queue_reg(qq, Q_ITR_FRAMES), itr_frames);
            self.write32(queue_reg(qq, Q_CONTROL), QCTRL_ENABLE);
            // Probe time, not the data path: reading registers is fine.
            assert_eq!(self.read32(queue_reg(qq, Q_STATUS)) & QSTATUS_ENABLED, 1);
            let units = self.read32(queue_reg(qq, Q_TX_FIFO_UNITS));
            assert_eq!(units as usize, TX_FIFO / 16);
            self.drv[q] = DrvQueue {
                fifo_units: units,
                ring,
                buf_len,
                ..DrvQueue::default()
            };
            self.post(q, ring);
            self.write32(queue_reg(qq, Q_IRQ_ARM), 1);
        }
        self.write32(REG_CONTROL, CTRL_ENABLE);
        let max = self.read32(REG_MTU_MAX);
        self.write32(REG_MTU, max);
        self.reads = 0;
        self.run();
    }

    fn post(&mut self, q: usize, n: u32) {
        for _ in 0..n {
            let d = &self.drv[q];
            let slot = d.posted % d.ring;
            let desc = RxDesc {
                addr: rx_buf(q, slot),
                len: d.buf_len,
            };
            let at = rx_window(q as u32) + (d.posted % RX_WINDOW_SLOTS) * 16;
            self.drv[q].posted += 1;
            self.write(at, &desc.encode());
        }
    }

    fn done(&self, q: usize) -> TxDone {
        TxDone::decode(self.host.slice(done_addr(q), 16).try_into().unwrap())
    }

    /// Writes stream units at the driver's position, wrapping in the
    /// window.
    fn write_units(&mut self, q: usize, bytes: &[u8]) {
        let mut at = 0;
        while at < bytes.len() {
            let pos = self.drv[q].pos;
            let unit = pos % TX_WINDOW_UNITS;
            let n = ((TX_WINDOW_UNITS - unit) as usize * 16).min(bytes.len() - at);
            self.write(tx_window(q as u32) + unit * 16, &bytes[at..at + n]);
            self.drv[q].pos = pos.wrapping_add((n / 16) as u32);
            at += n;
        }
    }

    /// Waits for room for `units` units (and one record) before the
    /// FIFO's end or after a pad, driving the device and the uplink.
    fn room(&mut self, q: usize, units: u32) {
        for _ in 0..1000 {
            let done = self.done(q);
            let d = &self.drv[q];
            let used = d.pos.wrapping_sub(done.units);
            let recs = d.records.wrapping_sub(done.records);
            if used + units <= d.fifo_units && recs < RING_MAX {
                return;
            }
            self.run();
            self.drain_tx();
            self.advance(Duration::from_micros(200));
            self.write32(queue_reg(q as u32, Q_IRQ_ARM), 1);
        }
        panic!("TX FIFO never drained");
    }

    /// One record: a descriptor, and inline data if any.
    fn record(&mut self, q: usize, desc: TxDesc, inline: &[u8]) {
        let units = desc.record_units();
        let fifo = self.drv[q].fifo_units;
        let to_end = fifo - self.drv[q].pos % fifo;
        if units > to_end {
            self.room(q, to_end);
            let pad = TxDesc {
                flags: TXD_PAD,
                ..TxDesc::default()
            };
            self.write_units(q, &pad.encode());
            self.drv[q].pos = self.drv[q].pos.wrapping_add(to_end - 1);
            self.drv[q].records += 1;
        }
        self.room(q, units);
        let mut bytes = desc.encode().to_vec();
        if desc.flags & TXD_INLINE != 0 {
            bytes.extend_from_slice(inline);
            bytes.resize(16 * units as usize, 0);
            self.write_units(q, &bytes);
        } else {
            self.write_units(q, &bytes);
            self.drv[q].pos = self.drv[q].pos.wrapping_add(units - 1);
        }
        self.drv[q].records += 1;
    }

    /// Host memory for a DMA segment.
    fn tx_buffer(&mut self, data: &[u8]) -> u64 {
        if self.tx_data_next + data.len() as u64 + 64 > TX_DATA_LEN {
            self.tx_data_next = 0;
        }
        // Any alignment: start at an odd offset now and then.
        let addr = TX_DATA + self.tx_data_next + (self.tx_data_next / 64) % 4;
        self.host.slice_mut(addr, data.len()).copy_from_slice(data);
        self.tx_data_next += data.len() as u64 + 64;
        addr
    }

    fn transmit(&mut self, q: usize, frame: &[u8], mode: Mode) {
        match mode {
            Mode::Inline => {
                let desc = TxDesc {
                    len: frame.len() as u16,
                    flags: TXD_INLINE | TXD_EOP,
                    ..TxDesc::default()
                };
                self.record(q, desc, frame);
            }
            Mode::Dma => {
                let addr = self.tx_buffer(frame);
                let desc = TxDesc {
                    addr,
                    len: frame.len() as u16,
                    flags: TXD_EOP,
                    cookie: 7,
                };
                self.record(q, desc, &[]);
            }
            Mode::Split => {
                let head = frame.len().min(64);
                let desc = TxDesc {
                    len: head as u16,
                    flags: TXD_INLINE | if head == frame.len() { TXD_EOP } else { 0 },
                    ..TxDesc::default()
                };
                self.record(q, desc, &frame[..head]);
                let rest = &frame[head..];
                if rest.is_empty() {
                    return;
                }
                let mid = rest.len() / 2;
                for (i, part) in [&rest[..mid], &rest[mid..]].into_iter().enumerate() {
                    if part.is_empty() {
                        continue;
                    }
                    let addr = self.tx_buffer(part);
                    let desc = TxDesc {
                        addr,
                        len: part.len() as u16,
                        flags: if i == 1 { TXD_EOP } else { 0 },
                        cookie: 0,
                    };
                    self.record(q, desc, &[]);
                }
            }
        }
    }

    /// New completions of queue pair `q` (by phase), their frames, and
    /// the buffers reposted.
    fn receive_all(&mut self, q: usize) -> Vec<(RxCompletion, Vec<u8>)> {
        let mut got = Vec::new();
        loop {
            let d = self.drv[q].clone();
            let slot = d.consumed % d.ring;
            let at = cq_addr(q) + u64::from(slot) * 16;
            let c = RxCompletion::decode(self.host.slice(at, 16).try_into().unwrap());
            if c.flags & RXC_PHASE != RxCompletion::phase_of(d.consumed, d.ring) {
                break;
            }
            assert_eq!(c.index, d.consumed);
            assert_eq!(usize::from(c.queue), q);
            let data = self
                .host
                .slice(rx_buf(q, slot), usize::from(c.len))
                .to_vec();
            got.push((c, data));
            self.drv[q].consumed += 1;
            self.post(q, 1);
        }
        got
    }
}

fn frame(rng: &mut Rng, len: usize, dst: [u8; 6]) -> Vec<u8> {
    let mut f = vec![0u8; len];
    rng.bytes(&mut f);
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
    f[12] = 0x88;
    f[13] = 0xb6;
    f
}

/// An IPv4/UDP frame of flow `flow` carrying sequence number `seq`.
fn udp_frame(flow: u16, seq: u32, dst: [u8; 6]) -> Vec<u8> {
    let mut f = vec![0u8; 80];
    f[..6].copy_from_slice(&dst);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[23] = 17;
    f[26..30].copy_from_slice(&[10, 0, 0, 1]);
    f[30..34].copy_from_slice(&[10, 0, 0, 2]);
    f[34..36].copy_from_slice(&flow.to_be_bytes());
    f[36..38].copy_from_slice(&53u16.to_be_bytes());
    f[42..46].copy_from_slice(&seq.to_be_bytes());
    f
}

#[test]
fn layout_formats_round_trip() {
    let d = TxDesc {
        addr: 0x1122_3344_5566_7788,
        len: 9018,
        flags: TXD_EOP | TXD_INLINE,
        cookie: 0xdead_beef,
    };
    let b = d.encode();
    assert_eq!(
        b,
        [
            0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0x3a, 0x23, 0x03, 0x00, 0xef, 0xbe,
            0xad, 0xde
        ]
    );
    assert_eq!(TxDesc::decode(&b), d);
    assert_eq!(d.record_units(), 1 + 564);
    let r = RxDesc {
        addr: 0xffff_ffff_0000_0010,
        len: 2048,
    };
    assert_eq!(RxDesc::decode(&r.encode()), r);
    let c = RxCompletion {
        len: 1514,
        flags: RXC_PHASE | RXC_HASH,
        queue: 3,
        hash: 0x0102_0304,
        index: 77,
    };
    assert_eq!(RxCompletion::decode(&c.encode()), c);
    assert_eq!(c.encode()[2], RXC_PHASE | RXC_HASH);
    let t = TxDone {
        units: 1,
        records: 2,
        frames: 3,
        errors: 4,
    };
    assert_eq!(TxDone::decode(&t.encode()), t);
    let mut s = StatusBlock {
        generation: 9,
        causes: CAUSE_LINK,
        status: STATUS_LINK_UP,
        mtu: 1500,
        prog_errors: 2,
        last_error: 0x20_0003,
        stats: [0; STATS_COUNT],
    };
    s.stats[STAT_TX_ERRORS] = u64::MAX - 1;
    assert_eq!(StatusBlock::decode(&s.encode()), s);
    assert_eq!(RxCompletion::phase_of(0, 8), RXC_PHASE);
    assert_eq!(RxCompletion::phase_of(8, 8), 0);
    assert_eq!(RxCompletion::phase_of(16, 8), RXC_PHASE);
    assert_eq!(RxCompletion::phase_of(5, 0), RXC_PHASE);
    // The BAR0 map fits the function's 16 KiB BAR0 and its MSI-X layout.
    assert_eq!(
        u64::from(BAR0_LEN),
        FunctionKind::Vnic.bars()[0].size(),
        "BAR0 size"
    );
    assert_eq!(MSIX_TABLE, pcieoe::function::MSIX_TABLE_OFFSET);
    assert_eq!(MSIX_PBA, pcieoe::function::MSIX_PBA_OFFSET);
    assert_eq!(
        usize::from(FunctionKind::Vnic.msix().table_size),
        MSIX_VECTORS
    );
    assert!(queue_reg(MAX_QUEUES as u32, 0) <= RX_WINDOWS);
    assert!(rx_window(MAX_QUEUES as u32) <= TX_WINDOWS);
    assert_eq!(tx_window(MAX_QUEUES as u32), MSIX_TABLE);
    assert_eq!(MAGIC_VALUE.to_le_bytes(), *b"vNIC");
    // The multicast hash of the all-hosts group 01:00:5e:00:00:01 is
    // the top byte of its CRC-32.
    assert_eq!(
        mc_hash(&[1, 0, 0x5e, 0, 0, 1]),
        (pcieoe::testfn::crc32(&[1, 0, 0x5e, 0, 0, 1]) >> 24) as u8
    );
}

#[test]
fn identity_registers() {
    let mut rig = Rig::new(1, 2, 9000);
    assert_eq!(rig.read32(REG_MAGIC), MAGIC_VALUE);
    assert_eq!(rig.read32(REG_VERSION), VERSION_VALUE);
    assert_eq!(rig.read32(REG_FEATURES), FEATURES);
    assert_eq!(rig.read32(REG_MAC_LO), 0x105e_0002);
    assert_eq!(rig.read32(REG_MAC_HI), 0x3020);
    assert_eq!(rig.read32(REG_MTU_MAX), 9000);
    assert_eq!(rig.read32(REG_MTU), 1500);
    assert_eq!(rig.read32(REG_QUEUES), 2);
    assert_eq!(rig.read32(REG_STATUS), 0);
    rig.write32(REG_MAGIC, 0);
    assert_eq!(rig.read32(REG_MAGIC), MAGIC_VALUE);
    // Queue 2 does not exist: reads 0, writes refused.
    assert_eq!(rig.read32(queue_reg(2, Q_TX_FIFO_UNITS)), 0);
    rig.write32(queue_reg(2, Q_RX_RING_SIZE), 16);
    assert_eq!(rig.read32(REG_PROG_ERRORS), 1);
    assert_eq!(
        rig.read32(REG_LAST_ERROR),
        (queue_reg(2, Q_RX_RING_SIZE) << 16) | ERR_QUEUE
    );
}

#[test]
fn tx_every_mode_and_size_arrives_intact_in_order() {
    let mut rig = Rig::new(2, 1, 9000);
    rig.setup(1, 64, 9216, 0, 0);
    let mut rng = Rng(42);
    let mut expect = Vec::new();
    let sizes = [
        60usize, 61, 62, 63, 64, 65, 100, 127, 128, 129, 255, 256, 257, 511, 512, 1000, 1500, 1514,
        1518, 2048, 4000, 4097, 8000, 9000, 9018,
    ];
    for mode in [Mode::Inline, Mode::Dma, Mode::Split] {
        for &len in &sizes {
            let f = frame(&mut rng, len, [2, 0, 0, 0, 0, 1]);
            rig.transmit(0, &f, mode);
            expect.push(f);
        }
    }
    for _ in 0..10 {
        rig.run();
        rig.drain_tx();
        rig.advance(Duration::from_micros(10));
    }
    assert_eq!(rig.sent.len(), expect.len());
    for (i, ((q, got), want)) in rig.sent.iter().zip(&expect).enumerate() {
        assert_eq!(*q, 0);
        assert!(got == want, "frame {i} of {} bytes differs", want.len());
    }
    assert_eq!(rig.vnic.stats()[STAT_TX_FRAMES], expect.len() as u64);
    let done = rig.done(0);
    assert_eq!(done.frames, expect.len() as u32);
    assert_eq!(done.errors, 0);
    assert_eq!(done.records, rig.drv[0].records);
    assert_eq!(done.units, rig.drv[0].pos);
    assert_eq!(rig.reads, 0, "the data path read a register");
    assert_eq!(rig.vnic.prog_errors(), 0);
}

#[test]
fn tx_tlp_counts() {
    // A 1514-byte frame: pushed inline it is 96 units = 1536 bytes, 6
    // MWr of the host and nothing upstream; by DMA it is one MWr of the
    // host, 3 or 4 MRd (512-byte MRRS, cut at 512-byte boundaries) and
    // their CplDs, a round trip later.
    let mut rig = Rig::new(3, 1, 1500);
    rig.setup(1, 16, 2048, 0, 0);
    let mut rng = Rng(3);
    let f = frame(&mut rng, 1514, [2, 0, 0, 0, 0, 1]);
    let (m0, r0) = (rig.host_mwrs, rig.host.mrds);
    rig.transmit(0, &f, Mode::Inline);
    rig.run();
    assert_eq!(rig.host_mwrs - m0, 6);
    assert_eq!(rig.host.mrds - r0, 0);
    rig.drain_tx();
    let (m0, r0) = (rig.host_mwrs, rig.host.mrds);
    rig.transmit(0, &f, Mode::Dma);
    rig.run();
    rig.drain_tx();
    assert_eq!(rig.host_mwrs - m0, 1);
    let addr_mod = rig.sent.len();
    assert_eq!(addr_mod, 2);
    assert!((3..=4).contains(&(rig.host.mrds - r0)));
    assert_eq!(rig.sent[0].1, f);
    assert_eq!(rig.sent[1].1, f);
}

#[test]
fn tx_fifo_and_window_wrap_with_flow_control() {
    let mut rig = Rig::new(4, 2, 9000);
    rig.setup(2, 32, 9216, 20, 16);
    let mut rng = Rng(4);
    let mut expect: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
    for i in 0..3000 {
        let q = rng.below(2);
        let len = match rng.below(10) {
            0 => 9000,
            1..=3 => 60 + rng.below(1500),
            _ => 60 + rng.below(200),
        };
        let mode = [Mode::Inline, Mode::Dma, Mode::Split][rng.below(3)];
        let f = frame(&mut rng, len, [2, 0, 0, 0, 0, i as u8]);
        rig.transmit(q, &f, mode);
        expect[q].push(f);
        if rng.below(8) == 0 {
            rig.run();
            rig.drain_tx();
        }
    }
    for _ in 0..20 {
        rig.run();
        rig.drain_tx();
        rig.advance(Duration::from_micros(50));
    }
    for (q, expect) in expect.iter().enumerate() {
        let got: Vec<&Vec<u8>> = rig
            .sent
            .iter()
            .filter(|(sq, _)| usize::from(*sq) == q)
            .map(|(_, f)| f)
            .collect();
        assert_eq!(got.len(), expect.len());
        assert!(got.iter().zip(expect).all(|(a, b)| *a == b));
        // The stream went round the 4096-unit FIFO many times.
        assert!(rig.drv[q].pos > 20 * 4096, "{}", rig.drv[q].pos);
        assert_eq!(rig.done(q).units, rig.drv[q].pos);
    }
    assert_eq!(rig.vnic.prog_errors(), 0);
    assert_eq!(rig.reads, 0);
}

#[test]
fn rx_frames_land_in_posted_buffers() {
    let mut rig = Rig::new(5, 1, 9000);
    rig.setup(1, 16, 9216, 0, 0);
    let mut rng = Rng(5);
    let mut expect = Vec::new();
    for len in [14usize, 60, 61, 64, 1514, 4000, 9018] {
        let f = frame(&mut rng, len, MAC);
        assert_eq!(rig.rx_frame(&f), RxVerdict::Queued(0));
        expect.push(f);
    }
    rig.run();
    let got = rig.receive_all(0);
    assert_eq!(got.len(), expect.len());
    for ((c, data), want) in got.iter().zip(&expect) {
        assert_eq!(usize::from(c.len), want.len());
        assert_eq!(data, want);
        assert_eq!(c.flags & (RXC_BROADCAST | RXC_MULTICAST), 0);
        assert_ne!(c.flags & RXC_HASH, 0);
    }
    assert_eq!(rig.vnic.stats()[STAT_RX_FRAMES], expect.len() as u64);
    // Bytes after a frame in its buffer are untouched.
    assert_eq!(rig.host.slice(rx_buf(0, 0) + 14, 4), [0; 4]);
    // Too big for the MTU.
    let f = frame(&mut rng, 9019, MAC);
    assert_eq!(rig.rx_frame(&f), RxVerdict::Oversize);
    assert_eq!(rig.reads, 0);
}

#[test]
fn rx_ring_wraps_and_waits_for_buffers() {
    let mut rig = Rig::new(6, 1, 1500);
    rig.setup(1, 8, 2048, 0, 0);
    let mut rng = Rng(6);
    let mut expect = VecDeque::new();
    let mut seen = 0;
    for round in 0..200 {
        for _ in 0..rng.below(12) {
            let len = 60 + rng.below(1455);
            let f = frame(&mut rng, len, MAC);
            if rig.rx_frame(&f) == RxVerdict::Queued(0) {
                expect.push_back(f);
            }
        }
        rig.run();
        // Consume only now and then: frames wait in staging meanwhile.
        if round % 3 == 0 {
            for (_, data) in rig.receive_all(0) {
                assert_eq!(data, expect.pop_front().unwrap());
                seen += 1;
            }
        }
    }
    for _ in 0..20 {
        rig.run();
        for (_, data) in rig.receive_all(0) {
            assert_eq!(data, expect.pop_front().unwrap());
            seen += 1;
        }
    }
    assert!(expect.is_empty());
    assert!(seen > 500);
    assert!(rig.drv[0].consumed > 8 * 50);
}

#[test]
fn rx_buffer_too_small_drops_the_frame_not_the_buffer() {
    let mut rig = Rig::new(7, 1, 9000);
    rig.setup(1, 4, 1600, 0, 0);
    let mut rng = Rng(7);
    let big = frame(&mut rng, 4000, MAC);
    let small = frame(&mut rng, 100, MAC);
    assert_eq!(rig.rx_frame(&big), RxVerdict::Queued(0));
    assert_eq!(rig.rx_frame(&small), RxVerdict::Queued(0));
    rig.run();
    let got = rig.receive_all(0);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, small);
    assert_eq!(got[0].0.index, 0);
    assert_eq!(rig.vnic.stats()[STAT_RX_OVERSIZE], 1);
}

#[test]
fn completions_of_a_burst_share_one_write() {
    let mut rig = Rig::new(8, 1, 1500);
    rig.setup(1, 64, 2048, 0, 0);
    let mut rng = Rng(8);
    for _ in 0..10 {
        let f = frame(&mut rng, 60, MAC);
        rig.rx_frame(&f);
    }
    let before = rig.host.mwrs;
    rig.run();
    // 10 frame MWr, 1 completion MWr (160 bytes), 1 TX done? no: no TX;
    // 1 MSI-X.
    assert_eq!(rig.host.mwrs - before, 10 + 1 + 1);
    assert_eq!(rig.receive_all(0).len(), 10);
}

#[test]
fn one_interrupt_per_moderation_window() {
    let mut rig = Rig::new(9, 1, 1500);
    rig.setup(1, 64, 2048, 100, 8);
    let mut rng = Rng(9);
    // 8 frames: the count threshold fires at once.
    for _ in 0..8 {
        let f = frame(&mut rng, 100, MAC);
        rig.rx_frame(&f);
        rig.run();
    }
    assert_eq!(rig.host.interrupts, vec![0]);
    // Disarmed: more events make no interrupt ...
    for _ in 0..8 {
        let f = frame(&mut rng, 100, MAC);
        rig.rx_frame(&f);
        rig.run();
    }
    rig.advance(Duration::from_millis(1));
    assert_eq!(rig.host.interrupts, vec![0]);
    assert_eq!(rig.receive_all(0).len(), 16);
    // ... until the host arms it: events were flushed meanwhile, so it
    // comes at once.
    rig.write32(queue_reg(0, Q_IRQ_ARM), 1);
    rig.run();
    assert_eq!(rig.host.interrupts, vec![0, 0]);
    // Armed again; 3 frames stay below the count: the time threshold.
    rig.write32(queue_reg(0, Q_IRQ_ARM), 1);
    for _ in 0..3 {
        let f = frame(&mut rng, 100, MAC);
        rig.rx_frame(&f);
        rig.advance(Duration::from_micros(20));
    }
    assert_eq!(rig.host.interrupts.len(), 2);
    assert_eq!(
        rig.receive_all(0).len(),
        3,
        "data lands before the interrupt"
    );
    let at = rig.vnic.poll_at().unwrap();
    assert!(at > rig.now);
    rig.now = at;
    rig.run();
    assert_eq!(rig.host.interrupts.len(), 3);
    assert_eq!(rig.vnic.poll_at(), None);
    // TX completions count as events too, and the TX done block comes
    // before the interrupt.
    rig.write32(queue_reg(0, Q_IRQ_ARM), 1);
    for _ in 0..8 {
        let f = frame(&mut rng, 100, [2, 0, 0, 0, 0, 1]);
        rig.transmit(0, &f, Mode::Inline);
    }
    rig.run();
    rig.drain_tx();
    rig.run();
    assert_eq!(rig.host.interrupts.len(), 4);
    assert_eq!(rig.done(0).frames, 8);
    assert_eq!(rig.reads, 0);
}

#[test]
fn masked_vector_is_delivered_when_unmasked() {
    let mut rig = Rig::new(10, 1, 1500);
    rig.setup(1, 16, 2048, 0, 0);
    rig.write32(MSIX_TABLE + 12, 1);
    let mut rng = Rng(10);
    let f = frame(&mut rng, 100, MAC);
    rig.rx_frame(&f);
    rig.run();
    assert!(rig.host.interrupts.is_empty());
    assert_eq!(rig.read32(MSIX_PBA), 1);
    rig.write32(MSIX_TABLE + 12, 0);
    rig.run();
    assert_eq!(rig.host.interrupts, vec![0]);
}

#[test]
fn mac_filter() {
    let mut rig = Rig::new(11, 1, 1500);
    rig.setup(1, 64, 2048, 0, 0);
    let mut rng = Rng(11);
    let group = [0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb];
    let other_group = [0x33, 0x33, 0x00, 0x00, 0x00, 0x01];
    let h = mc_hash(&group);
    assert_ne!(h, mc_hash(&other_group), "pick groups that do not collide");
    let other = [0x02, 0, 0, 0, 0, 0x77];
    let verdict = |rig: &mut Rig, rng: &mut Rng, dst| {
        let f = frame(rng, 64, dst);
        rig.rx_frame(&f)
    };
    assert_eq!(verdict(&mut rig, &mut rng, MAC), RxVerdict::Queued(0));
    assert_eq!(verdict(&mut rig, &mut rng, BROADCAST), RxVerdict::Queued(0));
    assert_eq!(verdict(&mut rig, &mut rng, other), RxVerdict::Filtered);
    assert_eq!(verdict(&mut rig, &mut rng, group), RxVerdict::Filtered);
    rig.write32(REG_MC_HASH + u32::from(h / 32) * 4, 1 << (h % 32));
    assert_eq!(verdict(&mut rig, &mut rng, group), RxVerdict::Queued(0));
    assert_eq!(
        verdict(&mut rig, &mut rng, other_group),
        RxVerdict::Filtered
    );
    rig.write32(REG_CONTROL, CTRL_ENABLE | CTRL_ALLMULTI);
    assert_eq!(
        verdict(&mut rig, &mut rng, other_group),
        RxVerdict::Queued(0)
    );
    assert_eq!(verdict(&mut rig, &mut rng, other), RxVerdict::Filtered);
    rig.write32(REG_CONTROL, CTRL_ENABLE | CTRL_PROMISC);
    assert_eq!(verdict(&mut rig, &mut rng, other), RxVerdict::Queued(0));
    assert_eq!(rig.rx_frame(&[0xff; 13]), RxVerdict::Filtered);
    rig.run();
    let got = rig.receive_all(0);
    assert_eq!(got.len(), 5);
    assert_ne!(got[1].0.flags & RXC_BROADCAST, 0);
    assert_ne!(got[2].0.flags & RXC_MULTICAST, 0);
    assert_eq!(rig.vnic.stats()[STAT_RX_FILTERED], 5);
}

#[test]
fn flows_spread_over_queues_in_order() {
    let mut rig = Rig::new(12, 4, 1500);
    rig.setup(4, 256, 2048, 0, 0);
    let mut per_queue = [0usize; 4];
    let mut flow_queue = std::collections::HashMap::new();
    for seq in 0..40u32 {
        for flow in 0..32u16 {
            let f = udp_frame(flow, seq, MAC);
            let RxVerdict::Queued(q) = rig.rx_frame(&f) else {
                panic!("dropped");
            };
            assert_eq!(*flow_queue.entry(flow).or_insert(q), q, "flow moved");
            per_queue[usize::from(q)] += 1;
        }
        rig.run();
        let mut last = std::collections::HashMap::new();
        for q in 0..4 {
            for (c, data) in rig.receive_all(q) {
                let flow = u16::from_be_bytes([data[34], data[35]]);
                let seq = u32::from_be_bytes(data[42..46].try_into().unwrap());
                assert_eq!(flow_queue[&flow], c.queue);
                let prev = last.insert(flow, seq);
                assert!(prev.map_or(true, |s| s < seq), "flow {flow} out of order");
            }
        }
    }
    assert!(per_queue.iter().all(|&n| n > 0), "{per_queue:?}");
}

#[test]
fn two_vnics_on_one_uplink_reach_each_other() {
    let mut a = Rig::new(13, 1, 1500);
    let mut b = Rig::new(14, 1, 1500);
    let mac_b = [0x02, 0, 0, 0, 0, 0xbb];
    *b.vnic = Vnic::new(
        FN_ID,
        &Config {
            mac: mac_b,
            mtu_max: 1500,
            queues: 1,
        },
    );
    a.setup(1, 16, 2048, 0, 0);
    b.setup(1, 16, 2048, 0, 0);
    let mut rng = Rng(13);
    let mut uplink = Vec::new();
    for i in 0..20 {
        let dst = if i % 2 == 0 {
            mac_b
        } else {
            [2, 0, 0, 0, 0, 0xcc]
        };
        let f = frame(&mut rng, 60 + i * 50, dst);
        a.transmit(0, &f, if i % 3 == 0 { Mode::Dma } else { Mode::Inline });
    }
    a.run();
    a.drain_tx();
    // The DI's bridge: each frame of A to the uplink and to B's filter.
    for (_, f) in &a.sent {
        uplink.push(f.clone());
        let _ = b.rx_frame(f);
    }
    b.run();
    let got = b.receive_all(0);
    assert_eq!(got.len(), 10);
    assert_eq!(uplink.len(), 20);
    for (k, (_, data)) in got.iter().enumerate() {
        assert_eq!(*data, a.sent[2 * k].1);
    }
}

#[test]
fn dma_read_refused_by_the_host_drops_the_frame() {
    let mut rig = Rig::new(15, 1, 1500);
    rig.setup(1, 16, 2048, 0, 0);
    let mut rng = Rng(15);
    let good = frame(&mut rng, 300, [2, 0, 0, 0, 0, 1]);
    let desc = TxDesc {
        addr: 0x10,
        len: 300,
        flags: TXD_EOP,
        cookie: 0,
    };
    rig.record(0, desc, &[]);
    rig.transmit(0, &good, Mode::Dma);
    rig.run();
    rig.drain_tx();
    rig.advance(Duration::from_micros(1));
    assert_eq!(rig.sent.len(), 1);
    assert_eq!(rig.sent[0].1, good);
    let done = rig.done(0);
    assert_eq!((done.frames, done.errors, done.records), (1, 1, 2));
    assert_eq!(rig.vnic.stats()[STAT_TX_ERRORS], 1);
    // A read that never completes: the caller's timer gives up.
    let desc = TxDesc {
        addr: TX_DATA,
        len: 300,
        flags: TXD_EOP,
        cookie: 0,
    };
    rig.record(0, desc, &[]);
    let mut mem = storage(&mut rig.tx, &mut rig.rx, &mut rig.readers);
    let n = rig
        .vnic
        .poll(rig.now, &rig.cs, &mut mem, &mut rig.buf)
        .unwrap();
    assert!(matches!(
        Tlp::decode(&rig.buf[..n]).unwrap().kind,
        Kind::MemRead(_)
    ));
    assert!(rig.vnic.awaiting_completions(&mem));
    rig.vnic.timeout(&mut mem);
    assert!(!rig.vnic.awaiting_completions(&mem));
    // Its completions, should they come late, are not taken.
    rig.run();
    rig.drain_tx();
    assert_eq!(rig.vnic.stats()[STAT_TX_ERRORS], 2);
}

fn expect_err(rig: &mut Rig, errors: &mut u32, code: u32) {
    *errors += 1;
    assert_eq!(rig.read32(REG_PROG_ERRORS), *errors);
    assert_eq!(rig.read32(REG_LAST_ERROR) & 0xffff, code);
}

#[test]
fn bad_programming_is_refused_and_counted() {
    let mut rig = Rig::new(16, 2, 1500);
    let mut errors = 0;
    for size in [0u32, 1, 3, 100, 512, u32::MAX] {
        rig.write32(queue_reg(0, Q_RX_RING_SIZE), size);
        expect_err(&mut rig, &mut errors, ERR_RING_SIZE);
    }
    // Enable with nothing programmed.
    rig.write32(queue_reg(0, Q_CONTROL), QCTRL_ENABLE);
    expect_err(&mut rig, &mut errors, ERR_RING_SIZE);
    rig.write32(queue_reg(0, Q_RX_RING_SIZE), 16);
    for (cq, done) in [
        (0u64, done_addr(0)),
        (cq_addr(0) + 8, done_addr(0)),
        (u64::MAX - 0xff, done_addr(0)),
        (cq_addr(0), 0),
        (cq_addr(0), done_addr(0) + 4),
    ] {
        rig.write32(queue_reg(0, Q_RX_CQ_ADDR_LO), cq as u32);
        rig.write32(queue_reg(0, Q_RX_CQ_ADDR_HI), (cq >> 32) as u32);
        rig.write32(queue_reg(0, Q_TX_DONE_ADDR_LO), done as u32);
        rig.write32(queue_reg(0, Q_TX_DONE_ADDR_HI), (done >> 32) as u32);
        rig.write32(queue_reg(0, Q_CONTROL), QCTRL_ENABLE);
        expect_err(&mut rig, &mut errors, ERR_ADDRESS);
        assert_eq!(rig.read32(queue_reg(0, Q_STATUS)), ERR_ADDRESS << 8);
    }
    for (reg, value) in [
        (REG_MTU, 67u32),
        (REG_MTU, 1501),
        (REG_MISC_VECTOR, 4),
        (queue_reg(0, Q_IRQ_VECTOR), 4),
        (queue_reg(0, Q_ITR_USECS), ITR_USECS_MAX + 1),
        (queue_reg(0, Q_ITR_FRAMES), RING_MAX + 1),
    ] {
        rig.write32(reg, value);
        expect_err(&mut rig, &mut errors, ERR_VALUE);
    }
    // Windows of a disabled queue pair, of one that does not exist.
    rig.write32(tx_window(0), 0);
    expect_err(&mut rig, &mut errors, ERR_QUEUE);
    rig.write32(rx_window(3), 0);
    expect_err(&mut rig, &mut errors, ERR_QUEUE);
    // A queue pair whose caller buffers are unusable.
    rig.tx[1] = vec![0; 10_000];
    rig.write32(queue_reg(1, Q_RX_RING_SIZE), 16);
    rig.write32(queue_reg(1, Q_RX_CQ_ADDR_LO), cq_addr(1) as u32);
    rig.write32(queue_reg(1, Q_RX_CQ_ADDR_HI), (cq_addr(1) >> 32) as u32);
    rig.write32(queue_reg(1, Q_TX_DONE_ADDR_LO), done_addr(1) as u32);
    rig.write32(queue_reg(1, Q_TX_DONE_ADDR_HI), (done_addr(1) >> 32) as u32);
    assert_eq!(rig.read32(queue_reg(1, Q_TX_FIFO_UNITS)), 0);
    rig.write32(queue_reg(1, Q_CONTROL), QCTRL_ENABLE);
    expect_err(&mut rig, &mut errors, ERR_QUEUE);
    rig.tx[1] = vec![0; TX_FIFO];
    // Now a good setup; programming while enabled is refused.
    let before = rig.vnic.prog_errors();
    rig.setup(1, 16, 2048, 0, 0);
    assert_eq!(rig.vnic.prog_errors(), before);
    errors = before;
    rig.write32(queue_reg(0, Q_RX_CQ_ADDR_LO), 0);
    expect_err(&mut rig, &mut errors, ERR_BUSY);
    // The status block reports errors, with the misc vector.
    rig.run();
    let block = StatusBlock::decode(rig.host.slice(STATUS_ADDR, 128).try_into().unwrap());
    assert_eq!(block.prog_errors, errors);
    assert_ne!(block.causes & CAUSE_ERROR, 0);
    assert!(rig.host.interrupts.contains(&3));
    // TX stream errors: a descriptor with unknown flags stops the stream.
    let bad = TxDesc {
        len: 60,
        flags: 0x80,
        ..TxDesc::default()
    };
    rig.write_units(0, &bad.encode());
    expect_err(&mut rig, &mut errors, ERR_DESCRIPTOR);
    assert_ne!(rig.read32(queue_reg(0, Q_STATUS)) & QSTATUS_TX_ERROR, 0);
    // Further writes are dropped, not counted again, until the queue
    // pair is restarted.
    rig.write32(tx_window(0) + 16, 0);
    assert_eq!(rig.read32(REG_PROG_ERRORS), errors);
    // RX still works meanwhile.
    let mut rng = Rng(16);
    let f = frame(&mut rng, 70, MAC);
    assert_eq!(rig.rx_frame(&f), RxVerdict::Queued(0));
    rig.run();
    assert_eq!(rig.receive_all(0).len(), 1);
}

/// Restarts queue pair 0 (after a stream error) and checks it works.
fn restart_and_check(rig: &mut Rig) {
    rig.write32(queue_reg(0, Q_CONTROL), 0);
    rig.write32(queue_reg(0, Q_CONTROL), QCTRL_ENABLE);
    assert_eq!(rig.read32(queue_reg(0, Q_STATUS)), QSTATUS_ENABLED);
    let fifo_units = rig.drv[0].fifo_units;
    let ring = rig.drv[0].ring;
    let buf_len = rig.drv[0].buf_len;
    rig.host.slice_mut(cq_addr(0), 16 * ring as usize).fill(0);
    rig.host.slice_mut(done_addr(0), 16).fill(0);
    rig.drv[0] = DrvQueue {
        fifo_units,
        ring,
        buf_len,
        ..DrvQueue::default()
    };
    rig.post(0, ring);
    let mut rng = Rng(99);
    let f = frame(&mut rng, 200, [2, 0, 0, 0, 0, 1]);
    let n = rig.sent.len();
    rig.transmit(0, &f, Mode::Dma);
    rig.run();
    rig.drain_tx();
    assert_eq!(rig.sent.len(), n + 1);
    assert_eq!(rig.sent[n].1, f);
    let g = frame(&mut rng, 200, MAC);
    rig.rx_frame(&g);
    rig.run();
    let got = rig.receive_all(0);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, g);
}

#[test]
fn stream_errors_stop_the_stream_until_restart() {
    type Case = (&'static str, fn(&mut Rig));
    let cases: [Case; 7] = [
        ("out of position", |rig| {
            rig.write32(tx_window(0) + 32, 0);
        }),
        ("partial double word", |rig| {
            let req = Tlp::mem_write(HOST_ID, BAR_ADDR + u64::from(tx_window(0)), 0x3, 0, &[0; 4]);
            rig.serve(&req);
        }),
        ("zero length", |rig| {
            rig.write_units(0, &TxDesc::default().encode());
        }),
        ("too long", |rig| {
            let d = TxDesc {
                len: FRAME_MAX as u16 + 1,
                flags: TXD_INLINE | TXD_EOP,
                ..TxDesc::default()
            };
            rig.write_units(0, &d.encode());
        }),
        ("wraps the FIFO", |rig| {
            rig.drv[0].pos = 0;
            // Skip to 10 units before the FIFO's end with a pad-free
            // stream of inline records, then a 300-byte record.
            let filler = TxDesc {
                len: 16 * 99,
                flags: TXD_INLINE,
                ..TxDesc::default()
            };
            for _ in 0..40 {
                rig.write_units(0, &filler.encode());
                rig.write_units(0, &vec![0u8; 16 * 99]);
                // Nothing is sent (no EOP): the stream only fills.
                if rig.drv[0].pos + 100 > rig.drv[0].fifo_units {
                    break;
                }
            }
            let d = TxDesc {
                len: 16 * 200,
                flags: TXD_INLINE | TXD_EOP,
                ..TxDesc::default()
            };
            rig.write_units(0, &d.encode());
        }),
        ("DMA at address 0", |rig| {
            let d = TxDesc {
                len: 100,
                flags: TXD_EOP,
                ..TxDesc::default()
            };
            rig.write_units(0, &d.encode());
        }),
        ("pad with a length", |rig| {
            let d = TxDesc {
                len: 100,
                flags: TXD_PAD | TXD_EOP,
                ..TxDesc::default()
            };
            rig.write_units(0, &d.encode());
        }),
    ];
    for (name, case) in cases {
        let mut rig = Rig::new(17, 1, 1500);
        rig.setup(1, 16, 2048, 0, 0);
        case(&mut rig);
        assert!(rig.vnic.prog_errors() >= 1, "{name}");
        assert_ne!(
            rig.read32(queue_reg(0, Q_STATUS)) & QSTATUS_TX_ERROR,
            0,
            "{name}"
        );
        rig.run();
        rig.drain_tx();
        assert!(rig.sent.is_empty(), "{name}");
        restart_and_check(&mut rig);
    }
}

#[test]
fn tx_overrun_and_rx_overrun_are_refused() {
    let mut rig = Rig::new(18, 1, 1500);
    rig.setup(1, 16, 2048, 0, 0);
    // 17th buffer of a 16-entry ring.
    let d = RxDesc {
        addr: rx_buf(0, 0),
        len: 2048,
    };
    let at = rx_window(0) + (rig.drv[0].posted % RX_WINDOW_SLOTS) * 16;
    rig.write(at, &d.encode());
    assert_eq!(rig.read32(REG_LAST_ERROR) & 0xffff, ERR_OVERRUN);
    assert_ne!(rig.read32(queue_reg(0, Q_STATUS)) & QSTATUS_RX_ERROR, 0);
    // TX: more units than the FIFO holds without waiting for done.
    let mut rig = Rig::new(19, 1, 1500);
    rig.setup(1, 16, 2048, 0, 0);
    let filler = TxDesc {
        len: 63 * 16,
        flags: TXD_INLINE,
        ..TxDesc::default()
    };
    let mut bytes = filler.encode().to_vec();
    bytes.resize(16 * 64, 0);
    // 64 records of 64 units fill the 4096-unit FIFO.
    for _ in 0..64 {
        rig.write_units(0, &bytes);
    }
    assert_eq!(rig.vnic.prog_errors(), 0);
    rig.write_units(0, &bytes);
    assert_eq!(rig.vnic.prog_errors(), 1);
    assert_eq!(rig.read32(REG_LAST_ERROR) & 0xffff, ERR_OVERRUN);
    // Bad RX buffers.
    let mut rig = Rig::new(20, 1, 1500);
    rig.setup(1, 16, 2048, 0, 0);
    rig.receive_all(0);
    let _ = rig.rx_frame(&frame(&mut Rng(1), 60, MAC));
    rig.run();
    rig.receive_all(0);
    for d in [
        RxDesc { addr: 0, len: 2048 },
        RxDesc {
            addr: u64::MAX - 10,
            len: 2048,
        },
        RxDesc {
            addr: rx_buf(0, 0),
            len: 13,
        },
    ] {
        let mut rig = Rig::new(21, 1, 1500);
        rig.setup(1, 16, 2048, 0, 0);
        rig.write32(queue_reg(0, Q_CONTROL), 0);
        rig.write32(queue_reg(0, Q_CONTROL), QCTRL_ENABLE);
        rig.write(rx_window(0), &d.encode());
        assert_eq!(rig.read32(REG_LAST_ERROR) & 0xffff, ERR_ADDRESS);
    }
}

#[test]
fn status_block_and_link() {
    let mut rig = Rig::new(22, 1, 1500);
    rig.setup(1, 16, 2048, 0, 0);
    rig.vnic.set_link(true);
    rig.run();
    let b = StatusBlock::decode(rig.host.slice(STATUS_ADDR, 128).try_into().unwrap());
    assert_eq!(b.generation, 1);
    assert_eq!(b.causes, CAUSE_LINK);
    assert_eq!(b.status, STATUS_LINK_UP | STATUS_ENABLED);
    assert_eq!(b.mtu, 1500);
    assert_eq!(rig.host.interrupts, vec![3]);
    let f = frame(&mut Rng(2), 100, MAC);
    rig.rx_frame(&f);
    rig.run();
    // Request without interrupt: the block only.
    rig.write32(REG_STATUS_REQUEST, 0);
    rig.run();
    let b = StatusBlock::decode(rig.host.slice(STATUS_ADDR, 128).try_into().unwrap());
    assert_eq!((b.generation, b.causes), (2, CAUSE_REQUEST));
    assert_eq!(b.stats[STAT_RX_FRAMES], 1);
    assert_eq!(b.stats[STAT_RX_BYTES], 100);
    assert_eq!(rig.host.interrupts, vec![3, 0]);
    rig.write32(REG_STATUS_REQUEST, 1);
    rig.run();
    assert_eq!(rig.host.interrupts, vec![3, 0, 3]);
    // The registers say the same (off the data path).
    assert_eq!(rig.read32(REG_STATS + 8 * STAT_RX_FRAMES as u32), 1);
    // A reset keeps the link and forgets the rest.
    rig.write32(REG_CONTROL, CTRL_RESET);
    assert_eq!(rig.read32(REG_STATUS), STATUS_LINK_UP);
    assert_eq!(rig.read32(queue_reg(0, Q_CONTROL)), 0);
    assert_eq!(rig.read32(REG_STATS + 8 * STAT_RX_FRAMES as u32), 0);
}

#[test]
fn nothing_without_bus_master() {
    let mut rig = Rig::new(23, 1, 1500);
    rig.setup(1, 16, 2048, 0, 0);
    rig.cs.write(COMMAND, 2, u32::from(CMD_MEMORY)).unwrap();
    let f = frame(&mut Rng(3), 100, MAC);
    rig.rx_frame(&f);
    rig.transmit(0, &f, Mode::Dma);
    let before = rig.host.mwrs + rig.host.mrds;
    rig.run();
    assert_eq!(rig.host.mwrs + rig.host.mrds, before);
    rig.cs
        .write(COMMAND, 2, u32::from(CMD_MEMORY | CMD_BUS_MASTER))
        .unwrap();
    rig.run();
    rig.drain_tx();
    assert_eq!(rig.sent.len(), 1);
    assert_eq!(rig.receive_all(0).len(), 1);
}

#[test]
fn fuzz_random_programming_never_panics() {
    for seed in 1..=40u64 {
        let mut rig = Rig::new(seed, 1 + (seed % 4) as u32, 9000);
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        if seed % 2 == 0 {
            rig.setup(rig.vnic.config().queues as usize, 16, 2048, 10, 4);
        }
        for _ in 0..3000 {
            match rng.below(10) {
                0..=4 => {
                    // A write somewhere in BAR0, mostly near the windows.
                    let base = [0u32, 0x100, 0x400, 0x1000, 0x1800, 0x3000][rng.below(6)];
                    let offset = (base + rng.below(0x900) as u32) & !3 & (BAR0_LEN - 1);
                    let dws = 1 + rng.below(8);
                    let mut data = vec![0u8; dws * 4];
                    rng.bytes(&mut data);
                    if rng.below(3) == 0 {
                        // Plausible descriptors rather than noise.
                        let d = TxDesc {
                            addr: MEM_BASE + rng.below(MEM_LEN) as u64,
                            len: rng.below(10_000) as u16,
                            flags: rng.below(8) as u16,
                            cookie: 0,
                        };
                        let k = 16.min(data.len());
                        data[..k].copy_from_slice(&d.encode()[..k]);
                    }
                    let n = data.len().min(4096 - (offset as usize & 0xfff));
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
                    let mut f = vec![0u8; rng.below(10_000)];
                    rng.bytes(&mut f);
                    if rng.below(2) == 0 && f.len() >= 6 {
                        f[..6].copy_from_slice(&MAC);
                    }
                    let _ = rig.rx_frame(&f);
                }
                7 => {
                    rig.drain_tx();
                }
                8 => {
                    rig.advance(Duration::from_micros(rng.below(500) as u64));
                }
                _ => {
                    if rng.below(50) == 0 {
                        let mut mem = storage(&mut rig.tx, &mut rig.rx, &mut rig.readers);
                        rig.vnic.timeout(&mut mem);
                    }
                    rig.run();
                }
            }
        }
        rig.run();
        rig.drain_tx();
        // Whatever happened, a reset gives a working vNIC.
        rig.write32(REG_CONTROL, CTRL_RESET);
        rig.host.mem.fill(0);
        rig.drv = vec![DrvQueue::default(); 4];
        rig.sent.clear();
        rig.setup(1, 16, 2048, 0, 0);
        let f = frame(&mut rng, 500, [2, 0, 0, 0, 0, 1]);
        rig.transmit(0, &f, Mode::Split);
        rig.run();
        rig.drain_tx();
        assert_eq!(rig.sent.last().map(|s| &s.1), Some(&f), "seed {seed}");
        let g = frame(&mut rng, 500, MAC);
        assert!(matches!(rig.rx_frame(&g), RxVerdict::Queued(_)));
        rig.run();
        let got: Vec<_> = (0..4)
            .flat_map(|q| {
                if rig.drv[q].ring > 0 {
                    rig.receive_all(q)
                } else {
                    vec![]
                }
            })
            .collect();
        assert_eq!(got.len(), 1, "seed {seed}");
        assert_eq!(got[0].1, g);
    }
}

#[test]
fn sixteen_rx_buffers_post_with_one_write() {
    let mut rig = Rig::new(24, 1, 1500);
    rig.setup(1, 64, 2048, 0, 0);
    // Consume 16 buffers, then repost them as one 256-byte MWr.
    let mut rng = Rng(24);
    for _ in 0..16 {
        let f = frame(&mut rng, 100, MAC);
        rig.rx_frame(&f);
    }
    rig.run();
    let d = rig.drv[0].clone();
    let mut bytes = Vec::new();
    for k in 0..16u32 {
        let slot = (d.posted + k) % d.ring;
        bytes.extend_from_slice(
            &RxDesc {
                addr: rx_buf(0, slot),
                len: d.buf_len,
            }
            .encode(),
        );
    }
    // The stream position is 64 % 16 = 0: the whole window.
    assert_eq!(d.posted % RX_WINDOW_SLOTS, 0);
    let before = rig.host_mwrs;
    rig.write(rx_window(0), &bytes);
    assert_eq!(rig.host_mwrs - before, 1);
    rig.drv[0].posted += 16;
    // Consume what arrived without reposting one by one.
    for _ in 0..16 {
        let slot = rig.drv[0].consumed % d.ring;
        let c = RxCompletion::decode(
            rig.host
                .slice(cq_addr(0) + u64::from(slot) * 16, 16)
                .try_into()
                .unwrap(),
        );
        assert_eq!(c.index, rig.drv[0].consumed);
        rig.drv[0].consumed += 1;
    }
    // 64 more frames: the ring (64) holds them all.
    for _ in 0..64 {
        let f = frame(&mut rng, 100, MAC);
        rig.rx_frame(&f);
    }
    rig.run();
    assert_eq!(rig.receive_all(0).len(), 64);
    assert_eq!(rig.vnic.prog_errors(), 0);
}

#[test]
fn dma_reads_of_several_frames_overlap() {
    let mut rig = Rig::new(25, 1, 1500);
    rig.setup(1, 16, 2048, 0, 0);
    let mut rng = Rng(25);
    let frames: Vec<Vec<u8>> = (0..10)
        .map(|i| frame(&mut rng, 1514, [2, 0, 0, 0, 0, i]))
        .collect();
    for f in &frames {
        rig.transmit(0, f, Mode::Dma);
    }
    // Before any completion comes back, the reads of 8 frames (the
    // readers there are) are all requested: one round trip for all.
    loop {
        let mut mem = storage(&mut rig.tx, &mut rig.rx, &mut rig.readers);
        let Some(n) = rig.vnic.poll(rig.now, &rig.cs, &mut mem, &mut rig.buf) else {
            break;
        };
        rig.host.handle(&rig.buf[..n]);
    }
    // 1514 bytes at any alignment: 3 or 4 MRd of at most 512 bytes.
    let mrds = rig.host.queues.len();
    assert!((8 * 3..=8 * 4).contains(&mrds), "{mrds}");
    rig.run();
    rig.drain_tx();
    rig.run();
    rig.drain_tx();
    let sent: Vec<_> = rig.sent.iter().map(|(_, f)| f.clone()).collect();
    assert_eq!(sent, frames);
}
