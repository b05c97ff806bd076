// SPDX-License-Identifier: GPL-2.0

//! pcieoe-rogue: a malicious PCIeoE device interface (DI) in user space.
//!
//! It opens a session with the host on one interface, like `pcieoe_dev`
//! would: a Presence with device 0 only, then it serves the host's fetch of
//! device 0's configuration space (a test function built by the engine), so
//! that the host adds `00:00.0` and owns device 0 but no other. Then it
//! sends what a broken or hostile DI could: memory reads and writes of host
//! memory as devices the host does not have (00:05.0, 00:00.1, 01:00.0)
//! and as 00:00.0 where nothing is mapped, MSI writes for vectors that are
//! not the requester's or not set up, and malformed TLPs. Each attack is
//! printed with what was observed:
//!
//! * reads must come back as a Completion with status Unsupported Request
//!   and no data, within 3 s;
//! * with `--host-pci FILE` (the host's debugfs `pci` file, when the rogue
//!   runs beside the host), each attack is followed by a fence (a read the
//!   host must refuse, so its answer proves the attack was processed) and
//!   the host's counters must have moved exactly as expected: refusals and
//!   `unexpected_tlps` counted, nothing accepted, no interrupt fired.
//!
//! With `--hold` it keeps serving the host after the attacks until its
//! standard input ends, then closes the session (so that a test can look
//! at the host while device 0 is still there). Exit status: 0 if every
//! expectation held, 1 if one did not, 2 for usage or setup errors.

mod net;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant as StdInstant};

use pcieoe::cfgspace::ConfigSpace;
use pcieoe::ethertype::EtherType;
use pcieoe::fabric::{Msg, MAX_MSG_LEN, VENDOR_ID};
use pcieoe::function::{self, FunctionKind, Identity};
use pcieoe::tlp::{Bdf, CompletionStatus, Kind, Routing, Tag, Tlp, VendorType};

use net::Rig;

const USAGE: &str = "\
usage: pcieoe-rogue [--ethertype N] [--host-pci FILE] [--hold] IFNAME

Plays a malicious PCIeoE device interface on IFNAME against a host.

  --ethertype N    the PCIeoE Ethertype (default 0x88b5)
  --host-pci FILE  the host's /sys/kernel/debug/pcieoe_host/<if>/pci: check
                   its counters after each attack
  --hold           after the attacks, serve the host until standard input
                   ends, then close the session
  -h, --help       this text";

/// The host's own ID (its root complex), as requests' completer.
const HOST: Bdf = Bdf::from_raw(0);
/// Device 0: the one the host owns.
const OWNED: Bdf = Bdf::from_raw(0);
/// Device 5 function 0: a device the host does not have.
const STRANGER: Bdf = Bdf::from_raw(5 << 3);
/// Device 0 function 1: not a function the host has either.
const OWNED_FN1: Bdf = Bdf::from_raw(1);
/// Bus 1: the host's root bus is bus 0.
const OTHER_BUS: Bdf = Bdf::from_raw(1 << 8);
/// The host's MSI address.
const MSI: u64 = 0xfee0_0000;
/// The device ID device 0 has: the project's vendor ID, a device ID no
/// driver claims, so that nothing maps DMA or sets up vectors.
const IDENTITY: Identity = Identity {
    vendor: VENDOR_ID,
    device: 0xbad0,
    subsystem_vendor: VENDOR_ID,
    subsystem: 0xbad0,
    revision: 1,
};
/// The host's counters each attack is checked against.
const WATCHED: [&str; 8] = [
    "dma_reads",
    "dma_writes",
    "dma_refused_reads",
    "dma_refused_writes",
    "msi_rx",
    "msi_refused",
    "irqs_fired",
    "unexpected_tlps",
];

struct Opts {
    ifname: String,
    ethertype: EtherType,
    host_pci: Option<String>,
    hold: bool,
}

fn parse_args() -> Result<Opts, String> {
    let mut args = std::env::args().skip(1);
    let mut ifname = None;
    let mut ethertype = EtherType::default();
    let mut host_pci = None;
    let mut hold = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "-h" | "--help" => return Err(String::new()),
            "--hold" => hold = true,
            "--host-pci" => host_pci = Some(args.next().ok_or("--host-pci needs a file")?),
            "--ethertype" => {
                let v = args.next().ok_or("--ethertype needs a value")?;
                let n = match v.strip_prefix("0x") {
                    Some(hex) => u16::from_str_radix(hex, 16),
                    None => v.parse(),
                }
                .map_err(|_| format!("bad Ethertype {v}"))?;
                ethertype = EtherType::new(n).map_err(|e| format!("Ethertype {v}: {e:?}"))?;
            }
            _ if a.starts_with('-') => return Err(format!("unknown option {a}")),
            _ if ifname.is_none() => ifname = Some(a),
            _ => return Err(format!("unexpected argument {a}")),
        }
    }
    Ok(Opts {
        ifname: ifname.ok_or("no interface given")?,
        ethertype,
        host_pci,
        hold,
    })
}

/// Emits a TLP the engine accepts into bytes.
fn emit(t: &Tlp<'_>) -> Vec<u8> {
    let mut buf = [0u8; 4200];
    match t.emit(&mut buf) {
        Ok(n) => buf.get(..n).unwrap_or(&[]).to_vec(),
        Err(e) => {
            println!("# cannot emit {}: {e:?}", t.name());
            Vec::new()
        }
    }
}

fn tag(n: u16) -> Tag {
    Tag::new(n).unwrap_or_default()
}

/// A memory read of `bytes` (a multiple of 4, at most 4096) at `addr`.
fn mrd(req: Bdf, t: u16, addr: u64, bytes: u16) -> Vec<u8> {
    let dws = bytes / 4;
    let last_be = if dws > 1 { 0xf } else { 0 };
    emit(&Tlp::mem_read(req, tag(t), addr, dws, 0xf, last_be))
}

/// An MRd of 1 DW at `addr` with its Length field patched to `length`
/// (0 meaning 1024 DW), Last BE 0xf: a read the encoder would refuse.
fn mrd_length(req: Bdf, t: u16, addr: u64, length: u16) -> Vec<u8> {
    let mut b = mrd(req, t, addr, 4);
    if let [_, _, b2, b3, _, _, _, be, ..] = &mut b[..] {
        *b2 = (*b2 & !3) | ((length >> 8) & 3) as u8;
        *b3 = length as u8;
        *be = 0xff;
    }
    b
}

fn mwr(req: Bdf, addr: u64, first_be: u8, data: &[u8]) -> Vec<u8> {
    let last_be = if data.len() > 4 { 0xf } else { 0 };
    emit(&Tlp::mem_write(req, addr, first_be, last_be, data))
}

/// What an attack must bring about.
struct Attack {
    name: String,
    tlp: Vec<u8>,
    /// A read: its tag and requester; the answer must be UR without data.
    read: Option<(u16, Bdf)>,
    /// The host's counters that must grow, and by how much.
    deltas: &'static [(&'static str, u64)],
}

fn attack(
    name: &str,
    tlp: Vec<u8>,
    read: Option<(u16, Bdf)>,
    deltas: &'static [(&'static str, u64)],
) -> Attack {
    Attack {
        name: name.to_string(),
        tlp,
        read,
        deltas,
    }
}

const REFUSED_READ: &[(&str, u64)] = &[("dma_refused_reads", 1)];
const REFUSED_WRITE: &[(&str, u64)] = &[("dma_refused_writes", 1)];
const REFUSED_MSI: &[(&str, u64)] = &[("msi_refused", 1)];
const UNEXPECTED: &[(&str, u64)] = &[("unexpected_tlps", 1)];
/// What the fence after each attack adds.
const FENCE: &[(&str, u64)] = REFUSED_READ;

/// The attacks, one a line.
#[rustfmt::skip]
fn attacks() -> Vec<Attack> {
    let data64: Vec<u8> = (0..64u8).map(|i| i ^ 0xa5).collect();
    let msi = |req: Bdf, v: u32| mwr(req, MSI, 0xf, &v.to_le_bytes());
    let unknown_msg = Tlp::vendor_defined(
        HOST,
        VendorType::Type1,
        Routing::ById,
        OWNED,
        VENDOR_ID,
        9 << 24,
        &[],
    );
    let mut poisoned = Tlp::mem_write(OWNED, 0x10_0000, 0xf, 0, &[1, 2, 3, 4]);
    poisoned.ep = true;
    let mut truncated_mrd = mrd(OWNED, 40, 0x10_0000, 4);
    truncated_mrd.truncate(8);
    let mut headless_mwr = mwr(OWNED, 0x10_0000, 0xf, &[1, 2, 3, 4]);
    headless_mwr.truncate(12);
    let stray = |status, t, data: &'static [u8]| {
        let bc = if data.is_empty() {
            4
        } else {
            data.len() as u16
        };
        emit(&Tlp::completion(OWNED, status, HOST, tag(t), bc, 0, data))
    };
    vec![
        attack("a1: MRd 64 B at 0x100000 by 00:05.0 (no such device)", mrd(STRANGER, 1, 0x10_0000, 64), Some((1, STRANGER)), REFUSED_READ),
        attack("a2: MRd 64 B at 0x1000 by 00:05.0", mrd(STRANGER, 2, 0x1000, 64), Some((2, STRANGER)), REFUSED_READ),
        attack("a3: MRd 64 B at 0x100000 by 00:00.1 (no such function)", mrd(OWNED_FN1, 3, 0x10_0000, 64), Some((3, OWNED_FN1)), REFUSED_READ),
        attack("a4: MRd 64 B at 0x100000 by 01:00.0 (not the root bus)", mrd(OTHER_BUS, 4, 0x10_0000, 64), Some((4, OTHER_BUS)), REFUSED_READ),
        attack("b1: MRd 64 B at 0x100000 by 00:00.0 (nothing mapped)", mrd(OWNED, 5, 0x10_0000, 64), Some((5, OWNED)), REFUSED_READ),
        attack("b2: MRd 4 KiB (Length 0) at 0x200000 by 00:00.0", mrd_length(OWNED, 6, 0x20_0000, 0), Some((6, OWNED)), REFUSED_READ),
        attack("b3: MRd 4 B of the MSI window 0xfee00000 by 00:00.0", mrd(OWNED, 7, MSI, 4), Some((7, OWNED)), REFUSED_READ),
        attack("c1: MWr 64 B at 0x100000 by 00:05.0", mwr(STRANGER, 0x10_0000, 0xf, &data64), None, REFUSED_WRITE),
        attack("c2: MWr 64 B at 0x100000 by 00:00.0 (nothing mapped)", mwr(OWNED, 0x10_0000, 0xf, &data64), None, REFUSED_WRITE),
        attack("c3: MWr 64 B at 0x1000 by 01:00.0", mwr(OTHER_BUS, 0x1000, 0xf, &data64), None, REFUSED_WRITE),
        attack("c4: poisoned MWr 4 B at 0x100000 by 00:00.0", emit(&poisoned), None, REFUSED_WRITE),
        attack("c5: zero-length MWr (First BE 0) at 0x100000 by 00:05.0", mwr(STRANGER, 0x10_0000, 0, &[0; 4]), None, REFUSED_WRITE),
        attack("d1: MSI data 0x28 (device 5 vector 0) by 00:05.0", msi(STRANGER, 0x28), None, REFUSED_MSI),
        attack("d2: MSI data 0x08 (device 1's vector) by 00:00.0", msi(OWNED, 0x08), None, REFUSED_MSI),
        attack("d3: MSI data 0 (device 0 vector 0, not set up) by 00:00.0", msi(OWNED, 0), None, REFUSED_MSI),
        attack("d4: MSI data 0 by 01:00.0", msi(OTHER_BUS, 0), None, REFUSED_MSI),
        attack("d5: MSI of 2 DW by 00:00.0", mwr(OWNED, MSI, 0xf, &[0; 8]), None, REFUSED_MSI),
        attack("e1: truncated MRd (8 of 12 header bytes)", truncated_mrd, None, UNEXPECTED),
        attack("e2: MWr header without its data", headless_mwr, None, UNEXPECTED),
        attack("e3: MRd of 4 KiB (Length 0) at 0x100800, crossing 4 KiB", mrd_length(OWNED, 41, 0x10_0800, 0), None, UNEXPECTED),
        attack("e4: MRd of 2 KiB at 0x100c00, crossing 4 KiB", mrd_length(OWNED, 42, 0x10_0c00, 512), None, UNEXPECTED),
        attack("e5: CplD for the host, tag 77, nothing outstanding", stray(CompletionStatus::Success, 77, &[1, 2, 3, 4]), None, UNEXPECTED),
        attack("e6: Cpl SC for the host, tag 150 (its config-write tags), nothing outstanding", stray(CompletionStatus::Success, 150, &[]), None, UNEXPECTED),
        attack("e7: pcieoe message of unknown kind 9", emit(&unknown_msg), None, UNEXPECTED),
    ]
}

/// The rogue's state: the session, device 0's configuration space, what
/// the host sent.
struct Rogue {
    rig: Rig,
    cs: Box<ConfigSpace>,
    cpls: Vec<Vec<u8>>,
    cfg_reads: u64,
    cfg_writes: u64,
    describes: u64,
    last_cfg: StdInstant,
    /// TLPs from the host a DI would not expect (MRd/MWr, undecodable).
    strays: u64,
}

impl Rogue {
    /// Pumps the session once and answers what the host sent.
    fn step(&mut self, wait_ms: i32, stdin: bool) -> bool {
        let eof = self.rig.pump(wait_ms, stdin);
        while let Some(bytes) = self.rig.next_tlp() {
            self.serve(&bytes);
        }
        eof
    }

    fn serve(&mut self, bytes: &[u8]) {
        let Ok(tlp) = Tlp::decode(bytes) else {
            println!("# the host sent an undecodable TLP ({} bytes)", bytes.len());
            self.strays += 1;
            return;
        };
        let mut buf = [0u8; MAX_MSG_LEN];
        match tlp.kind {
            Kind::CfgRead(req) | Kind::CfgWrite(req) => {
                if matches!(tlp.kind, Kind::CfgRead(_)) {
                    self.cfg_reads += 1;
                } else {
                    self.cfg_writes += 1;
                }
                self.last_cfg = StdInstant::now();
                let cs = (req.target.device() == 0).then_some(&mut *self.cs);
                match function::serve_config(&tlp, req.target, cs, &mut buf) {
                    Ok(n) => self.reply(buf.get(..n).unwrap_or(&[])),
                    Err(e) => println!("# bad config request from the host: {e}"),
                }
            }
            Kind::Message(_) => {
                if let Some(Ok(Msg::Describe { dev })) = Msg::parse(&tlp) {
                    self.describes += 1;
                    self.last_cfg = StdInstant::now();
                    if dev == 0 {
                        let mut i = 0;
                        while let Some(n) = function::describe_chunk(0, &self.cs, HOST, i, &mut buf)
                        {
                            self.reply(buf.get(..n).unwrap_or(&[]));
                            i += 1;
                        }
                    } else if let Ok(n) = (Msg::NoDevice { dev }).emit(HOST, &mut buf) {
                        self.reply(buf.get(..n).unwrap_or(&[]));
                    }
                }
            }
            Kind::Completion(_) => self.cpls.push(bytes.to_vec()),
            Kind::MemRead(_) | Kind::MemWrite(_) => {
                println!(
                    "# the host sent {} to device 0's BARs, none are served",
                    tlp.name()
                );
                self.strays += 1;
                if let Ok(c) =
                    Tlp::completion_for(&tlp, OWNED, CompletionStatus::UnsupportedRequest, &[])
                {
                    let b = emit(&c);
                    self.reply(&b);
                }
            }
        }
    }

    fn reply(&mut self, tlp: &[u8]) {
        if let Err(e) = self.rig.send(tlp) {
            println!("# answer to the host lost: {e}");
        }
    }

    /// Pumps until `done` or `ms` have passed.
    fn until(&mut self, ms: u64, mut done: impl FnMut(&mut Rogue) -> bool) -> bool {
        let end = StdInstant::now() + Duration::from_millis(ms);
        while StdInstant::now() < end {
            self.step(1, false);
            if done(self) {
                return true;
            }
        }
        false
    }

    /// Waits for the completion of tag `t` to `req` and describes it;
    /// `Ok` only for UR without data.
    fn expect_ur(&mut self, t: u16, req: Bdf) -> Result<String, String> {
        let mut got = None;
        self.until(3000, |r| {
            let pos = r.cpls.iter().position(|c| {
                matches!(Tlp::decode(c).map(|t| t.kind),
                    Ok(Kind::Completion(cc)) if cc.tag.get() == t && cc.requester == req)
            });
            got = pos.map(|i| r.cpls.remove(i));
            got.is_some()
        });
        let Some(bytes) = got else {
            return Err("no completion within 3 s".to_string());
        };
        let Ok(tlp) = Tlp::decode(&bytes) else {
            return Err("undecodable completion".to_string());
        };
        let Kind::Completion(c) = tlp.kind else {
            return Err("not a completion".to_string());
        };
        let what = format!(
            "{} {} from {} ({} data bytes)",
            tlp.name(),
            c.status,
            c.completer,
            tlp.payload.len()
        );
        if c.status == CompletionStatus::UnsupportedRequest && tlp.payload.is_empty() {
            Ok(what)
        } else {
            Err(what)
        }
    }
}

/// The host's watched counters, from its debugfs `pci` file.
fn counters(path: &str) -> Result<BTreeMap<&'static str, u64>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let mut m = BTreeMap::new();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(": ") else {
            continue;
        };
        if let Some(key) = WATCHED.iter().find(|w| **w == k) {
            m.insert(*key, v.trim().parse().unwrap_or(0));
        }
    }
    match WATCHED.iter().find(|w| !m.contains_key(*w)) {
        Some(w) => Err(format!("{path} has no {w}")),
        None => Ok(m),
    }
}

/// Compares the counters' growth with `want` (all others must stay).
/// `fence` is what the fence adds, left out of what is printed.
fn check_deltas(
    before: &BTreeMap<&str, u64>,
    after: &BTreeMap<&str, u64>,
    want: &[(&str, u64)],
    fence: &[(&str, u64)],
) -> Result<String, String> {
    let mut seen = Vec::new();
    let mut bad = Vec::new();
    let sum = |list: &[(&str, u64)], k: &str| -> i128 {
        list.iter()
            .filter(|(n, _)| *n == k)
            .map(|(_, v)| i128::from(*v))
            .sum()
    };
    for k in WATCHED {
        let d = i128::from(after.get(k).copied().unwrap_or(0))
            - i128::from(before.get(k).copied().unwrap_or(0))
            - sum(fence, k);
        let w = sum(want, k);
        if d != 0 {
            seen.push(format!("{k} {d:+}"));
        }
        if d != w {
            bad.push(format!("{k} {d:+} (want {w:+})"));
        }
    }
    let seen = if seen.is_empty() {
        "no counter moved".to_string()
    } else {
        seen.join(", ")
    };
    if bad.is_empty() {
        Ok(seen)
    } else {
        Err(format!("host counters: {}", bad.join(", ")))
    }
}

fn run(o: &Opts) -> Result<bool, String> {
    let mut cs = Box::new(ConfigSpace::new());
    function::build(FunctionKind::Test, &IDENTITY, &mut cs)
        .map_err(|e| format!("config space: {e:?}"))?;
    let rig = Rig::open(&o.ifname, o.ethertype)?;
    let mut r = Rogue {
        rig,
        cs,
        cpls: Vec::new(),
        cfg_reads: 0,
        cfg_writes: 0,
        describes: 0,
        last_cfg: StdInstant::now(),
        strays: 0,
    };
    println!(
        "# {}: waiting for a host (Ethertype {:#06x})",
        o.ifname,
        o.ethertype.get()
    );
    if !r.until(15_000, |r| r.rig.is_open()) {
        return Err("no host opened a session within 15 s".to_string());
    }
    let mut buf = [0u8; MAX_MSG_LEN];
    let n = (Msg::Presence { devices: 1 })
        .emit(HOST, &mut buf)
        .map_err(|e| format!("{e:?}"))?;
    r.rig.send(buf.get(..n).unwrap_or(&[]))?;
    println!("# Presence sent: device 0");
    // The host fetches the whole space (1024 reads) and its masks, adds the
    // device and the PCI core writes it: wait until that has been quiet
    // for 1 s, and with the host's file until it shows device 0.
    let t0 = StdInstant::now();
    let host_has = |path: &Option<String>| {
        path.as_ref().is_none_or(|p| {
            std::fs::read_to_string(p).is_ok_and(|t| t.lines().any(|l| l == "present: 0x00000001"))
        })
    };
    let fetched = r.until(20_000, |r| {
        r.describes > 0
            && r.cfg_reads >= 1024
            && r.last_cfg.elapsed() > Duration::from_secs(1)
            && host_has(&o.host_pci)
    });
    println!(
        "# host fetched device 0 ({} config reads, {} writes, {} describes) in {} ms",
        r.cfg_reads,
        r.cfg_writes,
        r.describes,
        t0.elapsed().as_millis()
    );
    if !fetched {
        return Err("the host did not fetch and add device 0 within 20 s".to_string());
    }

    let mut all = true;
    let mut fence_tag = 200u16;
    for a in attacks() {
        let before = match &o.host_pci {
            Some(p) => Some(counters(p)?),
            None => None,
        };
        let mut verdict = match r.rig.send(&a.tlp) {
            Ok(()) => Ok(String::new()),
            Err(e) => Err(e),
        };
        if let (Ok(_), Some((t, req))) = (&verdict, a.read) {
            verdict = r.expect_ur(t, req);
        }
        if let (Ok(seen), Some(before), Some(p)) = (&verdict, &before, &o.host_pci) {
            // The fence: once its UR is back, the host has handled the
            // attack (a session delivers in order).
            fence_tag = if fence_tag >= 250 { 200 } else { fence_tag + 1 };
            let fence = mrd(STRANGER, fence_tag, 0x1000, 4);
            verdict = r
                .rig
                .send(&fence)
                .and_then(|()| {
                    r.expect_ur(fence_tag, STRANGER)
                        .map_err(|e| format!("fence: {e}"))
                })
                .and_then(|_| counters(p))
                .and_then(|after| check_deltas(before, &after, a.deltas, FENCE))
                .map(|c| match seen.is_empty() {
                    true => format!("host: {c}"),
                    false => format!("{seen}; host: {c}"),
                });
        }
        match verdict {
            Ok(what) => println!(
                "ok   {}: {}",
                a.name,
                if what.is_empty() { "sent" } else { &what }
            ),
            Err(why) => {
                println!("FAIL {}: {}", a.name, why);
                all = false;
            }
        }
    }
    // The host must still be there and still refuse.
    let tail = mrd(STRANGER, 251, 0x10_0000, 64);
    let alive = r.rig.send(&tail).and_then(|()| r.expect_ur(251, STRANGER));
    match &alive {
        Ok(w) => println!("ok   f1: the host still answers (MRd by 00:05.0: {w})"),
        Err(e) => println!("FAIL f1: the host still answers: {e}"),
    }
    all &= alive.is_ok();
    let clean = r.rig.is_open() && r.rig.downs() == 0 && r.cpls.is_empty() && r.strays == 0;
    println!(
        "{} f2: session stayed open, no completion or request from the host unasked (open {}, downs {}, stray completions {}, stray requests {})",
        if clean { "ok  " } else { "FAIL" },
        r.rig.is_open(),
        r.rig.downs(),
        r.cpls.len(),
        r.strays
    );
    all &= clean;
    if o.hold {
        println!("# attacks done; serving the host until standard input ends");
        while !r.step(50, true) {}
    }
    r.rig.close();
    println!(
        "# {}",
        if all {
            "every expectation held"
        } else {
            "some expectations failed"
        }
    );
    Ok(all)
}

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("pcieoe-rogue: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&opts) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("pcieoe-rogue: {e}");
            ExitCode::from(2)
        }
    }
}
