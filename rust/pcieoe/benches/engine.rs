// SPDX-License-Identifier: GPL-2.0

//! Throughput of the engine's hot paths (criterion). Numbers only: these
//! benches never assert a speed.
//!
//!   cargo bench -p pcieoe --bench engine            # all, ~1 min
//!   cargo bench -p pcieoe --bench engine -- qos     # one group
//!   cargo bench -p pcieoe --bench engine -- link    # reliable-link goodput

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pcieoe::clock::{Duration as SimDuration, FrameSink, Instant, Rng, SinkFull};
use pcieoe::link::{Counters, Link, Release, SendError};
use pcieoe::qos::{Config, FlowConfig, FlowId, RateLimit, Scheduler};
use pcieoe::session::{Event, Handler, Role, Session, SessionConfig};
use pcieoe::tlp::{Bdf, Tag, Tlp, MAX_TLP_LEN};
use std::cell::Cell;
use std::collections::VecDeque;
use std::hint::black_box;
use std::time::Duration;

const MTU: u32 = 1500;

/// A scheduler with `active` always-backlogged flows spread over four
/// classes, weights 1..=4, out of a table of 1024.
fn backlogged(active: u16, rate: Option<RateLimit>) -> Box<Scheduler<1024>> {
    let mut s = Box::new(Scheduler::new(Config::new(MTU)).unwrap());
    for f in 0..active {
        let cfg = FlowConfig {
            class: (f % 4) as u8,
            quantum: MTU * (1 + u32::from(f % 4)),
            rate,
        };
        s.configure(FlowId(f), cfg).unwrap();
        s.set_head(FlowId(f), 64 + u32::from(f) * 97 % (MTU - 64))
            .unwrap();
    }
    s
}

/// One grant: `next` plus the caller's report of the flow's next head.
fn qos_next(c: &mut Criterion) {
    let mut g = c.benchmark_group("qos");
    g.throughput(Throughput::Elements(1));
    for active in [1u16, 16, 1024] {
        g.bench_with_input(
            BenchmarkId::new("next+set_head", active),
            &active,
            |b, &n| {
                let mut s = backlogged(n, None);
                let mut len = 64u32;
                b.iter(|| {
                    let f = s.next(Instant::ZERO).unwrap();
                    len = if len >= MTU { 64 } else { len + 1 };
                    s.set_head(f, len).unwrap();
                    black_box(f)
                })
            },
        );
    }
    // All flows rate-limited and a 100 Gb/s link (0.08 ns per byte): the
    // timer wheel is exercised and some polls find nothing to send.
    for active in [16u16, 1024] {
        let rate = Some(RateLimit {
            bytes_per_sec: 12_500_000_000 / u64::from(active),
            burst: 2 * MTU,
        });
        g.bench_with_input(
            BenchmarkId::new("next+set_head rate-limited", active),
            &active,
            |b, &n| {
                let mut s = backlogged(n, rate);
                let mut t = 0u64;
                b.iter(|| match s.next(Instant::from_nanos(t)) {
                    Some(f) => {
                        t += 120;
                        s.set_head(f, MTU).unwrap();
                    }
                    None => t = s.next_eligible_at().map_or(t + 1, Instant::as_nanos),
                })
            },
        );
    }
    g.finish();
}

/// Encode into a buffer and decode back.
fn tlp_codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("tlp");
    g.throughput(Throughput::Elements(1));
    let rid = Bdf::new(1, 0, 0).unwrap();
    let payload = [0x5au8; 256];
    let cases = [
        (
            "MRd64",
            Tlp::mem_read(rid, Tag::new(7).unwrap(), 0x1_0000_0000, 64, 0xf, 0xf),
        ),
        (
            "MWr64 256B",
            Tlp::mem_write(rid, 0x1_0000_0000, 0xf, 0xf, &payload),
        ),
    ];
    let mut buf = [0u8; MAX_TLP_LEN];
    for (name, tlp) in cases {
        g.bench_function(BenchmarkId::new("emit+decode", name), |b| {
            b.iter(|| {
                let n = black_box(&tlp).emit(&mut buf).unwrap();
                black_box(Tlp::decode(&buf[..n]).unwrap());
            })
        });
    }
    g.finish();
}

// ---------------------------------------------------------------------------
// Reliable-link goodput: a host and a DI session over a simulated wire (the
// approach of tests/sim.rs, reduced to what a goodput measurement needs).

/// SplitMix64 (Steele, Lea, Flood 2014): the wire's losses and the sessions'
/// epochs, seeded so that every run is the same.
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
}

impl Rng for SplitMix {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
}

/// Link window (frames in flight).
const WINDOW: usize = 64;
type Sess = Session<SplitMix, Vec<u8>, WINDOW>;

const HOST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const DI_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// MWr payload per TLP.
const PAYLOAD: usize = 256;
/// TLPs moved host to DI per criterion iteration.
const TLPS_PER_ITER: u64 = 1024;
/// TLPs of the (single) simulated-time run per case.
const SIM_TLPS: u64 = 100_000;

/// Wire model: 10 Gb/s each way (0.8 ns per byte, plus preamble, FCS and
/// inter-frame gap), 5 us one-way propagation, FIFO. Every frame, ACK-only
/// ones included, is lost independently with the case's probability; a
/// lost frame still occupies the wire.
const LINE_BITS_PER_SEC: f64 = 10e9;
const WIRE_OVERHEAD: u64 = 8 + 4 + 12;
const PROPAGATION: SimDuration = SimDuration::from_micros(5);

fn link_config(role: Role) -> SessionConfig {
    let mac = if role == Role::Host { HOST_MAC } else { DI_MAC };
    // Product defaults (MTU 1500, window 64, 64 posted headers / 1024 data
    // credits, link timers), short discovery so the setup is quick.
    let mut c = SessionConfig::new(role, mac);
    c.window = WINDOW as u16;
    c.discovery_interval = SimDuration::from_millis(1);
    c.open_retry = SimDuration::from_millis(1);
    c
}

/// One direction of the wire.
#[derive(Default)]
struct Lane {
    /// Frames in flight, by arrival time (FIFO: arrivals are monotonic).
    q: VecDeque<(Instant, Vec<u8>)>,
    /// When the transmitter is free again.
    free: Instant,
    /// Bytes put on the wire (overhead, lost frames and replays included).
    bytes: u64,
}

/// The sink a session polls into: serialises on the lane, maybe loses.
struct Tx<'a> {
    lane: &'a mut Lane,
    rng: &'a mut SplitMix,
    pool: &'a mut Vec<Vec<u8>>,
    now: Instant,
    loss: f64,
    lost: &'a mut u64,
}

impl FrameSink for Tx<'_> {
    fn send(&mut self, f: &[u8]) -> Result<(), SinkFull> {
        let bytes = f.len() as u64 + WIRE_OVERHEAD;
        let start = self.now.max(self.lane.free);
        let done = start + SimDuration::from_nanos((bytes * 8).div_ceil(10));
        self.lane.free = done;
        self.lane.bytes += bytes;
        if self.rng.chance(self.loss) {
            *self.lost += 1;
            return Ok(());
        }
        let mut b = self.pool.pop().unwrap_or_default();
        b.clear();
        b.extend_from_slice(f);
        self.lane.q.push_back((done + PROPAGATION, b));
        Ok(())
    }
}

/// The layer above a session: checks order, counts payload, frees credits
/// at once.
#[derive(Default)]
struct Upper {
    expect: u64,
    payload: u64,
}

impl Handler for Upper {
    fn tlp(&mut self, tlp: &[u8]) -> Release {
        // MWr64: 16-byte header, the stamp in the first payload bytes.
        let stamp = tlp
            .get(16..24)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()));
        assert_eq!(stamp, Some(self.expect), "TLP out of order");
        self.expect += 1;
        self.payload += (tlp.len() - 16) as u64;
        Release::Now
    }
    fn event(&mut self, ev: Event<'_>) {
        assert!(!matches!(ev, Event::Down { .. }), "session down: {ev:?}");
    }
}

/// Host and DI sessions on a simulated wire; the host writes, the DI
/// receives.
struct LinkSim {
    host: Sess,
    di: Sess,
    host_up: Upper,
    di_up: Upper,
    to_di: Lane,
    to_host: Lane,
    rng: SplitMix,
    pool: Vec<Vec<u8>>,
    loss: f64,
    lost: u64,
    now: Instant,
    /// MWr64 of `PAYLOAD` bytes; the stamp is patched in per TLP.
    tlp: Vec<u8>,
    /// TLPs queued so far, and how many may be.
    sent: u64,
    target: u64,
}

impl LinkSim {
    /// Both sessions, opened.
    fn open(loss: f64, seed: u64) -> Self {
        let session = |role, seed| {
            let cfg = link_config(role);
            let storage = vec![0u8; Link::<Vec<u8>, WINDOW>::storage_len(cfg.mtu)];
            let mut s = Session::new(cfg, SplitMix(seed), storage).unwrap();
            s.start(Instant::ZERO);
            s
        };
        let payload = [0u8; PAYLOAD];
        let mwr = Tlp::mem_write(
            Bdf::new(1, 0, 0).unwrap(),
            0x1_0000_0000,
            0xf,
            0xf,
            &payload,
        );
        let mut tlp = vec![0u8; MAX_TLP_LEN];
        let n = mwr.emit(&mut tlp).unwrap();
        tlp.truncate(n);
        assert_eq!(n, 16 + PAYLOAD);
        let mut sim = LinkSim {
            host: session(Role::Host, seed.wrapping_add(1)),
            di: session(Role::Device, seed.wrapping_add(2)),
            host_up: Upper::default(),
            di_up: Upper::default(),
            to_di: Lane::default(),
            to_host: Lane::default(),
            rng: SplitMix(seed),
            pool: Vec::new(),
            loss,
            lost: 0,
            now: Instant::ZERO,
            tlp,
            sent: 0,
            target: 0,
        };
        sim.run(|s| s.host.is_open() && s.di.is_open());
        sim
    }

    /// Queues TLPs until the link refuses or the target is reached.
    fn produce(&mut self) {
        while self.sent < self.target {
            self.tlp[16..24].copy_from_slice(&self.sent.to_le_bytes());
            match self.host.send_tlp(&self.tlp) {
                Ok(()) => self.sent += 1,
                Err(SendError::NoCredit | SendError::WindowFull) => return,
                Err(e) => panic!("send_tlp: {e:?}"),
            }
        }
    }

    /// Advances simulated time, event by event, until `done`.
    fn run(&mut self, done: impl Fn(&Self) -> bool) {
        let limit = self.now + SimDuration::from_secs(60);
        while !done(self) {
            let next = [
                self.to_di.q.front().map(|f| f.0),
                self.to_host.q.front().map(|f| f.0),
                self.host.poll_at(),
                self.di.poll_at(),
            ]
            .into_iter()
            .flatten()
            .min()
            .expect("an open session always has a timer");
            self.now = self.now.max(next);
            assert!(self.now < limit, "link stalled");
            while self.to_di.q.front().is_some_and(|f| f.0 <= self.now) {
                let (_, b) = self.to_di.q.pop_front().unwrap();
                self.di.receive(self.now, &b, &mut self.di_up);
                self.pool.push(b);
            }
            while self.to_host.q.front().is_some_and(|f| f.0 <= self.now) {
                let (_, b) = self.to_host.q.pop_front().unwrap();
                self.host.receive(self.now, &b, &mut self.host_up);
                self.pool.push(b);
            }
            // As tests/sim.rs: a second poll for what the first one's
            // budget left.
            for _ in 0..2 {
                self.produce();
                let mut tx = Tx {
                    lane: &mut self.to_di,
                    rng: &mut self.rng,
                    pool: &mut self.pool,
                    now: self.now,
                    loss: self.loss,
                    lost: &mut self.lost,
                };
                self.host.poll(self.now, &mut tx, &mut self.host_up);
            }
            let mut tx = Tx {
                lane: &mut self.to_host,
                rng: &mut self.rng,
                pool: &mut self.pool,
                now: self.now,
                loss: self.loss,
                lost: &mut self.lost,
            };
            self.di.poll(self.now, &mut tx, &mut self.di_up);
        }
    }

    /// Moves `n` more TLPs host to DI; returns when the DI has them all.
    fn transfer(&mut self, n: u64) {
        self.target += n;
        let target = self.target;
        // Queue now: the host's next timer may be a heartbeat far ahead.
        self.produce();
        self.run(|s| s.di_up.expect >= target);
    }
}

/// What one simulated-time run measured.
#[derive(Clone, Copy)]
struct SimGoodput {
    payload: u64,
    elapsed: SimDuration,
    /// Bytes on the host-to-DI wire.
    wire: u64,
    host: Counters,
    di: Counters,
    lost: u64,
}

impl SimGoodput {
    fn run(loss: f64) -> Self {
        let mut sim = LinkSim::open(loss, 0x5eed);
        let (t0, p0, l0, w0) = (sim.now, sim.di_up.payload, sim.lost, sim.to_di.bytes);
        sim.transfer(SIM_TLPS);
        SimGoodput {
            payload: sim.di_up.payload - p0,
            elapsed: sim.now - t0,
            wire: sim.to_di.bytes - w0,
            host: *sim.host.link().counters(),
            di: *sim.di.link().counters(),
            lost: sim.lost - l0,
        }
    }
    fn secs(&self) -> f64 {
        self.elapsed.as_nanos() as f64 * 1e-9
    }
    fn bytes_per_sec(&self) -> f64 {
        self.payload as f64 / self.secs()
    }
}

/// Goodput of `TLPS_PER_ITER` MWr of 256 B through open sessions, all ACK,
/// credit and replay processing included (in CPU time), and once per case
/// in simulated time (protocol efficiency).
fn link_goodput(c: &mut Criterion) {
    let cases = [("loss 0%", 0.0), ("loss 1%", 0.01)];
    let simulated: [Cell<Option<SimGoodput>>; 2] = Default::default();
    let mut g = c.benchmark_group("link");
    g.throughput(Throughput::Bytes(TLPS_PER_ITER * PAYLOAD as u64));
    for ((name, loss), sim_out) in cases.iter().zip(&simulated) {
        g.bench_function(BenchmarkId::new("goodput MWr 256B", name), |b| {
            if sim_out.get().is_none() {
                sim_out.set(Some(SimGoodput::run(*loss)));
            }
            let mut sim = LinkSim::open(*loss, 1);
            b.iter(|| sim.transfer(TLPS_PER_ITER));
        });
    }
    g.finish();
    // Only the cases the filter selected ran.
    let simulated = simulated.map(Cell::into_inner);
    if simulated.iter().all(Option::is_none) {
        return;
    }
    println!(
        "link goodput in simulated time: {SIM_TLPS} MWr x {PAYLOAD} B host -> DI, \
         {} Gb/s wire, {PROPAGATION} one way, window {WINDOW}",
        LINE_BITS_PER_SEC / 1e9
    );
    for ((name, _), r) in cases.iter().zip(&simulated) {
        let Some(r) = r else { continue };
        let bps = r.bytes_per_sec();
        println!(
            "  {name}: {:.1} MB/s ({:.2} Gb/s, {:.1}% of line rate) in {:.3} ms \
             (host->DI wire {:.1}% busy); host {} data frames, {} replays, {} timeouts, {} NAKs rx; \
             DI {} ACKs; {} frames lost",
            bps / 1e6,
            bps * 8.0 / 1e9,
            bps * 8.0 / LINE_BITS_PER_SEC * 100.0,
            r.secs() * 1e3,
            r.wire as f64 * 8.0 / LINE_BITS_PER_SEC / r.secs() * 100.0,
            r.host.data_frames_tx,
            r.host.replays,
            r.host.timeouts,
            r.host.naks_rx,
            r.di.acks_tx,
            r.lost,
        );
    }
    if let [Some(clean), Some(lossy)] = simulated {
        println!(
            "  ratio loss 1% / loss 0%: {:.3}",
            lossy.bytes_per_sec() / clean.bytes_per_sec()
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20);
    targets = qos_next, tlp_codec, link_goodput
}
criterion_main!(benches);
