// SPDX-License-Identifier: GPL-2.0

//! Deterministic network simulator: a host and a device-interface session
//! connected by a simulated Ethernet that loses, duplicates, reorders,
//! delays and corrupts frames, flaps, and whose peers restart.
//!
//! Corruption model: real links protect every frame with the Ethernet FCS
//! (CRC-32), and the NIC drops frames whose FCS fails before the kernel
//! sees them; PCIeoE therefore has no checksum of its own (the PCIe LCRC's
//! job is done by the FCS). The simulator computes a CRC-32 FCS when a frame
//! is sent and checks it on arrival, so bit flips become FCS drops, exactly
//! as on a real wire. To exercise the parser anyway, it also delivers
//! truncated frames and random garbage, which the engine must reject and
//! count.
//!
//! Every TLP carries a per-direction stamp (a 64-bit counter inside an
//! MWr or CplD payload); the receiver checks that stamps arrive in order,
//! exactly once, within each session epoch.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use pcieoe::clock::{Duration, FrameSink, Instant, Rng, SinkFull};
use pcieoe::credit::{Advert, Cost, Credits};
use pcieoe::link::{Release, SendError};
use pcieoe::session::{DownReason, Event, Handler, Role, Session, SessionConfig, State};

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, seedable, good enough.
#[derive(Clone)]
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// True with probability `p` (0..=1).
    fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

impl Rng for SplitMix {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
}

/// CRC-32 (IEEE 802.3), table-driven: the simulated FCS.
fn fcs(b: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0xedb8_8320
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    !b.iter().fold(!0u32, |c, &x| {
        TABLE[((c ^ u32::from(x)) & 0xff) as usize] ^ (c >> 8)
    })
}

const N: usize = 64;
type Sess = Session<SplitMix, Vec<u8>, N>;

const HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const DI_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

#[derive(Clone, Copy)]
struct Impair {
    loss: f64,
    dup: f64,
    reorder: f64,
    corrupt: f64,
    truncate: f64,
    garbage: f64,
}

const CLEAN: Impair = Impair {
    loss: 0.0,
    dup: 0.0,
    reorder: 0.0,
    corrupt: 0.0,
    truncate: 0.0,
    garbage: 0.0,
};

fn config(role: Role) -> SessionConfig {
    let mac = if role == Role::Host { HOST_MAC } else { DI_MAC };
    let mut c = SessionConfig::new(role, mac);
    c.id = 0x5eed;
    c.functions = 4;
    c.window = N as u16;
    c.discovery_interval = Duration::from_millis(5);
    c.open_retry = Duration::from_millis(2);
    c.heartbeat_interval = Duration::from_millis(10);
    c.dead_timeout = Duration::from_millis(100);
    c.close_timeout = Duration::from_millis(50);
    // Small enough that credits, not only the window, hold the sender back.
    let lim = Credits {
        header: 48,
        data: 600,
    };
    c.credits = Advert {
        posted: lim,
        non_posted: lim,
        completion: Credits::default(),
    };
    c
}

/// What one endpoint's upper layer sees and checks.
#[derive(Default)]
struct Upper {
    /// Epoch of the open session (stamps restart with each session).
    epoch: Option<u32>,
    expect: u64,
    delivered: u64,
    delivered_total: u64,
    /// Credits held back ("consumer still busy"), released later.
    held: VecDeque<(Instant, Cost)>,
    hold_every: u64,
    now: Instant,
    opened: u32,
    downs: Vec<DownReason>,
    errors: Vec<String>,
}

impl Handler for Upper {
    fn tlp(&mut self, tlp: &[u8]) -> Release {
        let stamp = tlp
            .get(16..24)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()));
        match stamp {
            Some(s) if s == self.expect => {}
            other => self.errors.push(format!(
                "epoch {:?}: got stamp {other:?}, expected {}",
                self.epoch, self.expect
            )),
        }
        self.expect += 1;
        self.delivered += 1;
        self.delivered_total += 1;
        if self.hold_every != 0 && self.delivered % self.hold_every == 0 {
            self.held.push_back((self.now, Cost::of_tlp(tlp).unwrap()));
            Release::Later
        } else {
            Release::Now
        }
    }

    fn event(&mut self, ev: Event<'_>) {
        match ev {
            Event::Opened { epoch, .. } => {
                if std::env::var("SIM_TRACE").is_ok() {
                    eprintln!("{:?} opened {epoch:#x}", self.now);
                }
                self.epoch = Some(epoch);
                self.expect = 0;
                self.delivered = 0;
                self.held.clear();
                self.opened += 1;
            }
            Event::Down { reason, epoch } => {
                if std::env::var("SIM_TRACE").is_ok() {
                    eprintln!("{:?} down {epoch:#x} {reason:?}", self.now);
                }
                self.epoch = None;
                self.held.clear();
                self.downs.push(reason);
            }
            Event::Discovered { .. } | Event::Management(_) => {}
        }
    }
}

struct Endpoint {
    s: Sess,
    up: Upper,
    /// Next stamp to send in the current session.
    next: u64,
    sent_epoch: Option<u32>,
    rng: SplitMix,
}

impl Endpoint {
    fn new(role: Role, seed: u64) -> Self {
        let cfg = config(role);
        let storage = vec![0u8; pcieoe::link::Link::<Vec<u8>, N>::storage_len(cfg.mtu)];
        let mut s = Session::new(cfg, SplitMix(seed), storage).unwrap();
        s.start(Instant::ZERO);
        Endpoint {
            s,
            up: Upper {
                hold_every: 4,
                ..Default::default()
            },
            next: 0,
            sent_epoch: None,
            rng: SplitMix(seed ^ 0xabcdef),
        }
    }

    /// Queues TLPs until the link refuses or `max` have been sent.
    fn produce(&mut self, max: u64, role: Role) {
        let epoch = match self.s.state() {
            State::Open { epoch } => epoch,
            _ => return,
        };
        if self.sent_epoch != Some(epoch) {
            self.sent_epoch = Some(epoch);
            self.next = 0;
        }
        let mut tlp = [0u8; 16 + 256];
        for _ in 0..64 {
            if self.next >= max {
                return;
            }
            // 2..=64 DW of payload; the stamp in the first two DW.
            let dw = 2 + self.rng.below(63) as usize;
            let len = 16 + dw * 4;
            if role == Role::Host {
                tlp[0] = 0x60; // MWr64
            } else {
                tlp[0] = 0x4a; // CplD
            }
            tlp[2] = (dw >> 8) as u8;
            tlp[3] = dw as u8;
            tlp[16..24].copy_from_slice(&self.next.to_le_bytes());
            match self.s.send_tlp(&tlp[..len]) {
                Ok(()) => self.next += 1,
                Err(SendError::NoCredit | SendError::WindowFull | SendError::NotOpen) => return,
                Err(e) => panic!("send_tlp: {e:?}"),
            }
        }
    }

    /// The consumer finishes TLPs it held for 20 us.
    fn consume(&mut self, now: Instant) {
        self.up.now = now;
        while let Some(&(t, c)) = self.up.held.front() {
            if now < t + Duration::from_micros(20) {
                break;
            }
            self.up.held.pop_front();
            self.s.release(c);
        }
    }

    fn poll_at(&self) -> Option<Instant> {
        let held = self
            .up
            .held
            .front()
            .map(|(t, _)| *t + Duration::from_micros(20));
        match (self.s.poll_at(), held) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Frames queued by one poll.
#[derive(Default)]
struct Out(Vec<Vec<u8>>);

impl FrameSink for Out {
    fn send(&mut self, f: &[u8]) -> Result<(), SinkFull> {
        if self.0.len() >= 256 {
            return Err(SinkFull);
        }
        self.0.push(f.to_vec());
        Ok(())
    }
}

struct InFlight {
    to_host: bool,
    bytes: Vec<u8>,
    /// The FCS sent, for frames the wire corrupted.
    fcs: Option<u32>,
    ghost: bool,
}

#[derive(Default, Debug)]
struct WireStats {
    sent: u64,
    lost: u64,
    duplicated: u64,
    reordered: u64,
    fcs_drops: u64,
    truncated: u64,
    garbage: u64,
    flapped: u64,
}

struct Sim {
    rng: SplitMix,
    now: Instant,
    host: Endpoint,
    di: Endpoint,
    imp: Impair,
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    frames: std::collections::HashMap<u64, InFlight>,
    id: u64,
    /// Frames are dropped while `now` is in this window.
    flap: Option<(Instant, Instant)>,
    /// Stamps each side sends per session.
    produce_max: u64,
    /// When each direction's wire is free again.
    wire_free: [Instant; 2],
    /// Keep copies of some frames to re-inject later (old-epoch ghosts).
    record: Option<Vec<(bool, Vec<u8>)>>,
    w: WireStats,
}

impl Sim {
    fn new(seed: u64, imp: Impair) -> Self {
        Sim {
            rng: SplitMix(seed),
            now: Instant::ZERO,
            host: Endpoint::new(Role::Host, seed.wrapping_mul(31).wrapping_add(1)),
            di: Endpoint::new(Role::Device, seed.wrapping_mul(37).wrapping_add(2)),
            imp,
            heap: BinaryHeap::new(),
            frames: Default::default(),
            id: 0,
            flap: None,
            wire_free: [Instant::ZERO; 2],
            produce_max: u64::MAX,
            record: None,
            w: WireStats::default(),
        }
    }

    fn schedule(&mut self, at: Instant, f: InFlight) {
        self.id += 1;
        self.frames.insert(self.id, f);
        self.heap.push(Reverse((at, self.id)));
    }

    fn transmit(&mut self, to_host: bool, frames: Vec<Vec<u8>>) {
        for bytes in frames {
            self.w.sent += 1;
            if let Some(r) = self.record.as_mut() {
                r.push((to_host, bytes.clone()));
            }
            if self
                .flap
                .is_some_and(|(a, b)| self.now >= a && self.now < b)
            {
                self.w.flapped += 1;
                continue;
            }
            if self.rng.chance(self.imp.loss) {
                self.w.lost += 1;
                continue;
            }
            let copies = if self.rng.chance(self.imp.dup) {
                self.w.duplicated += 1;
                2
            } else {
                1
            };
            for _ in 0..copies {
                // A 10 Gb/s FIFO wire with 5 us of propagation: frames keep
                // their order unless picked for a longer path (reordering).
                let dir = usize::from(to_host);
                let start = self.now.max(self.wire_free[dir]);
                let done = start + Duration::from_nanos(bytes.len() as u64 * 8 / 10 + 2);
                self.wire_free[dir] = done;
                let mut at = done + Duration::from_micros(5);
                if self.rng.chance(self.imp.reorder) {
                    self.w.reordered += 1;
                    at = at + Duration::from_nanos(2_000 + self.rng.below(20_000));
                }
                // The FCS of a frame left intact trivially matches: only
                // corrupted frames need the CRC computed.
                let mut b = bytes.clone();
                let mut fcs_sent = None;
                if self.rng.chance(self.imp.corrupt) {
                    fcs_sent = Some(fcs(&b));
                    let bit = self.rng.below(b.len() as u64 * 8);
                    b[(bit / 8) as usize] ^= 1 << (bit % 8);
                }
                let fcs = fcs_sent;
                self.schedule(
                    at,
                    InFlight {
                        to_host,
                        bytes: b,
                        fcs,
                        ghost: false,
                    },
                );
            }
        }
    }

    fn poll_all(&mut self) {
        for host in [true, false] {
            let ep = if host { &mut self.host } else { &mut self.di };
            let role = if host { Role::Host } else { Role::Device };
            ep.consume(self.now);
            ep.produce(self.produce_max, role);
            let mut out = Out::default();
            ep.s.poll(self.now, &mut out, &mut ep.up);
            // Poll again for what the first poll's budget left.
            ep.produce(self.produce_max, role);
            ep.s.poll(self.now, &mut out, &mut ep.up);
            self.transmit(!host, out.0);
        }
    }

    fn deliver(&mut self, f: InFlight) {
        if f.fcs.is_some_and(|sent| fcs(&f.bytes) != sent) {
            self.w.fcs_drops += 1;
            return;
        }
        let mut bytes = f.bytes;
        if !f.ghost && self.rng.chance(self.imp.truncate) {
            self.w.truncated += 1;
            let keep = self.rng.below(bytes.len() as u64) as usize;
            bytes.truncate(keep);
        }
        let ep = if f.to_host {
            &mut self.host
        } else {
            &mut self.di
        };
        ep.up.now = self.now;
        ep.s.receive(self.now, &bytes, &mut ep.up);
        if self.rng.chance(self.imp.garbage) {
            self.w.garbage += 1;
            let n = self.rng.below(200) as usize;
            let g: Vec<u8> = (0..n).map(|_| self.rng.next_u64() as u8).collect();
            ep.s.receive(self.now, &g, &mut ep.up);
        }
    }

    /// Runs until `done` or the simulated time limit; returns false on the
    /// limit.
    fn run_until(&mut self, limit: Instant, mut done: impl FnMut(&Sim) -> bool) -> bool {
        let mut iterations = 0u64;
        loop {
            if done(self) {
                return true;
            }
            iterations += 1;
            assert!(iterations < 50_000_000, "simulator livelock");
            let next_frame = self.heap.peek().map(|Reverse((t, _))| *t);
            let next = [next_frame, self.host.poll_at(), self.di.poll_at()]
                .into_iter()
                .flatten()
                .min();
            let Some(next) = next else {
                panic!("nothing to do at {:?}", self.now);
            };
            // Timers in the past fire now; never go back.
            self.now = self.now.max(next);
            if self.now > limit {
                return false;
            }
            while let Some(Reverse((t, id))) = self.heap.peek().copied() {
                if t > self.now {
                    break;
                }
                self.heap.pop();
                let f = self.frames.remove(&id).unwrap();
                self.deliver(f);
            }
            self.poll_all();
        }
    }

    fn check(&self) {
        for (name, ep) in [("host", &self.host), ("di", &self.di)] {
            assert!(
                ep.up.errors.is_empty(),
                "{name}: {:?}",
                &ep.up.errors[..ep.up.errors.len().min(5)]
            );
        }
    }
}

const TARGET: u64 = 100_000;

/// 5 % loss, 5 % duplication, 5 % reordering, 0.5 % bit flips (FCS drops),
/// 0.2 % truncations, 0.1 % garbage: 100 000 TLPs host to DI and 100 000
/// back, in order, exactly once.
fn lossy_run(seed: u64) {
    let imp = Impair {
        loss: 0.05,
        dup: 0.05,
        reorder: 0.05,
        corrupt: 0.005,
        truncate: 0.002,
        garbage: 0.001,
    };
    let mut sim = Sim::new(seed, imp);
    sim.produce_max = TARGET;
    let ok = sim.run_until(Instant::from_millis(60_000), |s| {
        s.di.up.delivered >= TARGET && s.host.up.delivered >= TARGET
    });
    sim.check();
    let (h, d) = (sim.host.s.link().counters(), sim.di.s.link().counters());
    assert!(
        ok,
        "seed {seed}: timed out at {:?}: host got {} di got {}; host {:?} di {:?} wire {:?} states {:?} {:?}",
        sim.now, sim.host.up.delivered, sim.di.up.delivered, h, d, sim.w,
        sim.host.s.state(), sim.di.s.state()
    );
    assert_eq!(
        sim.host.up.opened,
        1,
        "seed {seed}: session reopened at {:?}: host {:?} di {:?} {:?} {:?}",
        sim.now,
        sim.host.up.downs,
        sim.di.up.downs,
        sim.di.s.counters(),
        sim.di.s.link().counters()
    );
    assert!(h.replays > 0 && d.duplicates > 0 && d.out_of_order > 0 && d.naks_tx > 0);
    assert!(d.bad.total() + h.bad.total() > 0, "garbage was counted");
    eprintln!(
        "seed {seed:3}: {} + {} TLPs in {:?} simulated; host: {} data frames, {} replays, {} timeouts, \
         {} NAKs rx, srtt {}; di: {} dups, {} ooo, {} bad; wire {:?}",
        sim.di.up.delivered, sim.host.up.delivered, sim.now, h.data_frames_tx, h.replays, h.timeouts,
        h.naks_rx, sim.host.s.link().rtt().srtt(), d.duplicates, d.out_of_order, d.bad.total(), sim.w
    );
}

// 20 seeds, split so that the test harness runs them on both cores.
#[test]
fn lossy_seeds_0_to_4() {
    (0..5).for_each(lossy_run);
}
#[test]
fn lossy_seeds_5_to_9() {
    (5..10).for_each(lossy_run);
}
#[test]
fn lossy_seeds_10_to_14() {
    (10..15).for_each(lossy_run);
}
#[test]
fn lossy_seeds_15_to_19() {
    (15..20).for_each(lossy_run);
}

/// More seeds, for soak runs: `PCIEOE_SIM_SEEDS=200 cargo test -p pcieoe
/// --test sim -- --ignored`.
#[test]
#[ignore]
fn lossy_soak() {
    let n: u64 = std::env::var("PCIEOE_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    (1000..1000 + n).for_each(lossy_run);
}

#[test]
fn clean_link_opens_and_flows() {
    let mut sim = Sim::new(7, CLEAN);
    assert!(sim.run_until(Instant::from_millis(1000), |s| s.di.up.delivered >= 20_000));
    sim.check();
    let h = sim.host.s.link().counters();
    let d = sim.di.s.link().counters();
    assert_eq!((h.replays, h.timeouts, d.replays, d.timeouts), (0, 0, 0, 0));
    assert_eq!(h.bad.total() + d.bad.total(), 0);
    // Completions (infinite credits) fill the window: each slot that frees
    // up is filled with as many TLPs as the MTU allows.
    assert!(
        d.tlps_tx > d.data_frames_tx * 5,
        "TLPs are batched: {} TLPs in {} frames",
        d.tlps_tx,
        d.data_frames_tx
    );
    eprintln!(
        "clean: host {} TLPs in {} frames, di {} TLPs in {} frames",
        h.tlps_tx, h.data_frames_tx, d.tlps_tx, d.data_frames_tx
    );
}

/// The DI reboots mid-stream: the host learns it (UnknownSession close or
/// dead-peer timeout), reopens with a new epoch, and frames of the old
/// epoch, replayed into the new session, are rejected and counted.
#[test]
fn peer_restart_gets_a_new_epoch() {
    for seed in 0..3 {
        let imp = Impair {
            loss: 0.02,
            dup: 0.02,
            reorder: 0.02,
            ..CLEAN
        };
        let mut sim = Sim::new(100 + seed, imp);
        assert!(
            sim.run_until(Instant::from_millis(10_000), |s| s.di.up.delivered
                >= 20_000)
        );
        let State::Open { epoch: old } = sim.host.s.state() else {
            panic!()
        };
        // Record host frames of the old session still being produced.
        sim.record = Some(Vec::new());
        assert!(
            sim.run_until(Instant::from_millis(10_000), |s| s.di.up.delivered
                >= 21_000)
        );
        let ghosts = sim.record.take().unwrap();
        assert!(!ghosts.is_empty());
        // Reboot: a new DI object with another random seed.
        sim.di = Endpoint::new(Role::Device, 0xdead_0000 + seed);
        assert!(
            sim.run_until(Instant::from_millis(20_000), |s| s.di.up.delivered
                >= 20_000)
        );
        sim.check();
        let State::Open { epoch: new } = sim.host.s.state() else {
            panic!()
        };
        assert_ne!(old, new);
        assert_eq!(sim.host.up.opened, 2);
        assert!(
            sim.host.s.counters().peer_restarts + sim.host.s.counters().dead_peers >= 1,
            "{:?}",
            sim.host.s.counters()
        );
        assert!(
            sim.di.s.counters().stale_epoch > 0,
            "in-flight frames of the old epoch were refused"
        );
        // Replay the recorded old-epoch frames into the new session.
        let before = (sim.di.s.counters().stale_epoch, sim.di.up.delivered_total);
        for (to_host, bytes) in ghosts.into_iter().filter(|(h, _)| !h).take(200) {
            sim.schedule(
                sim.now,
                InFlight {
                    to_host,
                    bytes,
                    fcs: None,
                    ghost: true,
                },
            );
        }
        let target = sim.di.up.delivered + 5_000;
        assert!(
            sim.run_until(Instant::from_millis(30_000), |s| s.di.up.delivered
                >= target)
        );
        sim.check();
        let after = sim.di.s.counters().stale_epoch;
        assert!(
            after >= before.0 + 100,
            "ghost frames counted as stale: {} -> {after}",
            before.0
        );
        assert_eq!(
            sim.host.up.opened, 2,
            "ghosts did not disturb the new session"
        );
        eprintln!(
            "restart seed {seed}: epoch {old:#x} -> {new:#x}, host {:?}, di stale {after}",
            sim.host.s.counters()
        );
    }
}

/// A link flap shorter than the dead-peer timeout is ridden out by the
/// replay timer; a longer one gets the peer declared dead on both sides,
/// after which the host reconnects.
#[test]
fn link_flaps() {
    let mut sim = Sim::new(42, CLEAN);
    assert!(sim.run_until(Instant::from_millis(1_000), |s| s.di.up.delivered >= 10_000));
    let t = sim.now;
    sim.flap = Some((t, t + Duration::from_millis(60)));
    let target = sim.di.up.delivered + 10_000;
    assert!(
        sim.run_until(t + Duration::from_millis(2_000), |s| s.di.up.delivered
            >= target)
    );
    sim.check();
    assert_eq!(sim.host.up.opened, 1, "short flap survived");
    assert!(sim.host.s.link().counters().timeouts > 0);

    let t = sim.now;
    sim.flap = Some((t, t + Duration::from_millis(300)));
    assert!(
        sim.run_until(t + Duration::from_millis(2_000), |s| s.host.up.opened == 2
            && s.di.up.delivered >= 10_000)
    );
    sim.check();
    assert!(
        sim.host.up.downs.contains(&DownReason::PeerDead),
        "{:?}",
        sim.host.up.downs
    );
    assert!(
        sim.di.up.downs.contains(&DownReason::PeerDead),
        "{:?}",
        sim.di.up.downs
    );
    assert_eq!(sim.host.s.counters().dead_peers, 1);
}
