// SPDX-License-Identifier: GPL-2.0

//! Behaviour of the QoS scheduler through its public API: strict priority,
//! DRR shares, token-bucket conformance, error handling, and random
//! operation sequences that must keep its invariants.

use pcieoe::clock::Instant;
use pcieoe::qos::{
    Config, Error, FlowConfig, FlowId, FlowState, RateLimit, Scheduler, MAX_BYTES, MAX_RATE,
};
use proptest::prelude::*;

const MTU: u32 = 1500;

fn ns(t: u64) -> Instant {
    Instant::from_nanos(t)
}

fn sched<const N: usize>() -> Scheduler<N> {
    Scheduler::new(Config::new(MTU)).unwrap()
}

fn flow(class: u8, quantum: u32, rate: Option<RateLimit>) -> FlowConfig {
    FlowConfig {
        class,
        quantum,
        rate,
    }
}

/// A deterministic packet-length generator (64..=1500 bytes).
struct Lengths(u64);

impl Lengths {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        64 + ((self.0 >> 33) % u64::from(MTU - 63)) as u32
    }
}

/// Simulates a link of `ns_per_byte` serving always-backlogged flows until
/// `until_ns`; returns the bytes each flow sent. Checks invariants as it
/// goes when `check` is set.
fn run_link<const N: usize>(
    s: &mut Scheduler<N>,
    flows: &[u16],
    len: &mut dyn FnMut(u16) -> u32,
    ns_per_byte: u64,
    until_ns: u64,
) -> [u64; N] {
    let mut bytes = [0u64; N];
    let mut heads = [0u32; N];
    for &f in flows {
        heads[usize::from(f)] = len(f);
        s.set_head(FlowId(f), heads[usize::from(f)]).unwrap();
    }
    let mut t = s.now().as_nanos();
    while t < until_ns {
        match s.next(ns(t)) {
            Some(FlowId(f)) => {
                let l = heads[usize::from(f)];
                bytes[usize::from(f)] += u64::from(l);
                t += u64::from(l) * ns_per_byte;
                heads[usize::from(f)] = len(f);
                s.set_head(FlowId(f), heads[usize::from(f)]).unwrap();
            }
            None => {
                let at = s
                    .next_eligible_at()
                    .map(Instant::as_nanos)
                    .expect("backlogged flows");
                assert!(at > t, "next() refused at {t} but eligible at {at}");
                t = at;
            }
        }
    }
    bytes
}

#[test]
fn strict_priority_starves_lower_classes() {
    let mut s = sched::<3>();
    s.configure(FlowId(0), flow(0, MTU, None)).unwrap();
    s.configure(FlowId(1), flow(3, MTU, None)).unwrap();
    s.configure(FlowId(2), flow(7, MTU, None)).unwrap();
    for f in 0..3 {
        s.set_head(FlowId(f), 1000).unwrap();
    }
    for _ in 0..1000 {
        assert_eq!(s.next(ns(0)), Some(FlowId(2)));
        s.set_head(FlowId(2), 1000).unwrap();
    }
    assert_eq!(s.stats(FlowId(0)).unwrap().packets, 0);
    assert_eq!(s.stats(FlowId(1)).unwrap().packets, 0);
    // Once TC7 is empty, TC3 goes, then TC0.
    s.set_empty(FlowId(2)).unwrap();
    assert_eq!(s.next(ns(0)), Some(FlowId(1)));
    s.set_empty(FlowId(1)).unwrap();
    assert_eq!(s.next(ns(0)), Some(FlowId(0)));
    s.set_empty(FlowId(0)).unwrap();
    assert_eq!(s.next(ns(0)), None);
    assert_eq!(s.next_eligible_at().map(Instant::as_nanos), None);
    s.check_invariants().unwrap();
}

#[test]
fn higher_class_preempts_between_packets() {
    let mut s = sched::<2>();
    s.configure(FlowId(1), flow(5, MTU, None)).unwrap();
    s.set_head(FlowId(0), 500).unwrap();
    assert_eq!(s.next(ns(0)), Some(FlowId(0)));
    s.set_head(FlowId(0), 500).unwrap();
    // TC5 arrives while TC0 still has deficit left: TC5 goes first.
    s.set_head(FlowId(1), 500).unwrap();
    assert_eq!(s.next(ns(0)), Some(FlowId(1)));
    s.set_empty(FlowId(1)).unwrap();
    assert_eq!(s.next(ns(0)), Some(FlowId(0)));
}

#[test]
fn class_order_is_configurable() {
    let mut config = Config::new(MTU);
    config.class_levels = [7, 6, 5, 4, 3, 2, 1, 0]; // TC0 highest
    let mut s: Scheduler<2> = Scheduler::new(config).unwrap();
    s.configure(FlowId(0), flow(0, MTU, None)).unwrap();
    s.configure(FlowId(1), flow(7, MTU, None)).unwrap();
    s.set_head(FlowId(1), 100).unwrap();
    s.set_head(FlowId(0), 100).unwrap();
    assert_eq!(s.next(ns(0)), Some(FlowId(0)));
    assert!(s.level_active(0));
    assert!(!s.level_active(7));

    config.class_levels[3] = 8;
    assert_eq!(Scheduler::<2>::new(config).unwrap_err(), Error::BadLevel(8));
}

#[test]
fn classes_sharing_a_level_share_the_round_robin() {
    let mut config = Config::new(MTU);
    config.class_levels = [0, 0, 0, 0, 1, 1, 1, 1];
    let mut s: Scheduler<2> = Scheduler::new(config).unwrap();
    s.configure(FlowId(0), flow(4, MTU, None)).unwrap();
    s.configure(FlowId(1), flow(7, MTU, None)).unwrap();
    let mut len = |_| MTU;
    let bytes = run_link(&mut s, &[0, 1], &mut len, 1, 3_000_000);
    assert_eq!(bytes[0].abs_diff(bytes[1]), 0);
}

fn assert_shares(bytes: &[u64], weights: &[u64]) {
    let total: u64 = bytes.iter().sum();
    let wsum: u64 = weights.iter().sum();
    for (b, w) in bytes.iter().zip(weights) {
        let share = *b as f64 / total as f64;
        let want = *w as f64 / wsum as f64;
        assert!(
            (share - want).abs() / want < 0.01,
            "share {share:.4} want {want:.4} ({bytes:?})"
        );
    }
}

#[test]
fn drr_weights_1_2_4_give_byte_shares_within_one_percent() {
    let mut s = sched::<3>();
    for (f, q) in [(0u16, 1500u32), (1, 3000), (2, 6000)] {
        s.configure(FlowId(f), flow(2, q, None)).unwrap();
    }
    let mut gen = Lengths(42);
    let mut len = |_| gen.next();
    let bytes = run_link(&mut s, &[0, 1, 2], &mut len, 1, 50_000_000);
    assert_shares(&bytes, &[1, 2, 4]);
    s.check_invariants().unwrap();
}

#[test]
fn drr_is_fair_in_bytes_not_packets() {
    // Equal weights, one flow of 64-byte packets and one of 1500-byte ones.
    let mut s = sched::<2>();
    let mut len = |f: u16| if f == 0 { 64 } else { MTU };
    let bytes = run_link(&mut s, &[0, 1], &mut len, 1, 20_000_000);
    assert_shares(&bytes, &[1, 1]);
}

#[test]
fn drr_quantum_lets_a_flow_send_several_packets_per_turn() {
    let mut s = sched::<2>();
    s.configure(FlowId(0), flow(0, 3 * MTU, None)).unwrap();
    s.set_head(FlowId(0), MTU).unwrap();
    s.set_head(FlowId(1), MTU).unwrap();
    let mut order = Vec::new();
    for _ in 0..8 {
        let FlowId(f) = s.next(ns(0)).unwrap();
        order.push(f);
        s.set_head(FlowId(f), MTU).unwrap();
    }
    assert_eq!(order, [0, 0, 0, 1, 0, 0, 0, 1]);
}

#[test]
fn token_bucket_conforms_to_rate_and_burst() {
    // 100 MB/s, 3000-byte burst, always backlogged with 1500-byte packets,
    // on an infinitely fast link: polled whenever it may send.
    let rate = 100_000_000u64;
    let burst = 3000u32;
    let mut s = sched::<1>();
    s.configure(
        FlowId(0),
        flow(
            0,
            MTU,
            Some(RateLimit {
                bytes_per_sec: rate,
                burst,
            }),
        ),
    )
    .unwrap();
    s.set_head(FlowId(0), MTU).unwrap();
    let until = 100_000_000; // 100 ms
    let mut sent = 0u64;
    let mut t = 0;
    while t < until {
        match s.next(ns(t)) {
            Some(_) => {
                sent += u64::from(MTU);
                // Never more than burst + rate * t.
                let allowed = u64::from(burst) + rate * t / 1_000_000_000;
                assert!(sent <= allowed, "{sent} bytes by {t} ns, allowed {allowed}");
                s.set_head(FlowId(0), MTU).unwrap();
            }
            None => t = s.next_eligible_at().map(Instant::as_nanos).unwrap(),
        }
    }
    let ideal = u64::from(burst) + rate * until / 1_000_000_000;
    assert!(
        sent.abs_diff(ideal) * 100 < ideal,
        "sent {sent}, ideal {ideal}"
    );
    assert!(s.stats(FlowId(0)).unwrap().throttled > 0);
}

#[test]
fn rate_limited_high_class_leaves_the_rest_to_lower_classes() {
    // A 1 B/ns link (8 Gb/s). TC7 limited to 1/4 of it; TC0 takes the rest.
    let mut s = sched::<2>();
    s.configure(
        FlowId(1),
        flow(
            7,
            MTU,
            Some(RateLimit {
                bytes_per_sec: 250_000_000,
                burst: 2 * MTU,
            }),
        ),
    )
    .unwrap();
    let mut gen = Lengths(7);
    let mut len = |_| gen.next();
    let bytes = run_link(&mut s, &[0, 1], &mut len, 1, 40_000_000);
    assert_shares(&bytes, &[3, 1]);
}

#[test]
fn idle_flow_gets_its_burst_back_to_back() {
    let mut s = sched::<1>();
    s.configure(
        FlowId(0),
        flow(
            0,
            MTU,
            Some(RateLimit {
                bytes_per_sec: 1_000_000,
                burst: 4 * MTU,
            }),
        ),
    )
    .unwrap();
    for _ in 0..4 {
        s.set_head(FlowId(0), MTU).unwrap();
        assert_eq!(s.next(ns(10)), Some(FlowId(0)));
    }
    s.set_head(FlowId(0), MTU).unwrap();
    assert_eq!(s.next(ns(10)), None);
    assert_eq!(s.state(FlowId(0)), Ok(FlowState::Throttled));
    // After a long idle period the bucket is full again, not fuller.
    s.set_empty(FlowId(0)).unwrap();
    assert_eq!(s.next(ns(1_000_000_000_000)), None);
    for _ in 0..4 {
        s.set_head(FlowId(0), MTU).unwrap();
        assert_eq!(s.next(ns(1_000_000_000_000)), Some(FlowId(0)));
    }
    s.set_head(FlowId(0), MTU).unwrap();
    assert_eq!(s.next(ns(1_000_000_000_000)), None);
}

#[test]
fn sent_flow_is_not_chosen_again_until_reported() {
    let mut s = sched::<2>();
    s.set_head(FlowId(0), 100).unwrap();
    assert_eq!(s.next(ns(0)), Some(FlowId(0)));
    assert_eq!(s.state(FlowId(0)), Ok(FlowState::Sent));
    assert_eq!(s.next(ns(0)), None);
    assert_eq!(s.next_eligible_at().map(Instant::as_nanos), None);
    s.set_head(FlowId(0), 100).unwrap();
    assert_eq!(s.state(FlowId(0)), Ok(FlowState::Active));
    assert_eq!(s.next(ns(0)), Some(FlowId(0)));
}

#[test]
fn head_changes_and_removal_in_every_state() {
    let mut s = sched::<3>();
    let rl = Some(RateLimit {
        bytes_per_sec: 1_000_000,
        burst: MTU,
    });
    s.configure(FlowId(2), flow(1, MTU, rl)).unwrap();
    s.set_head(FlowId(2), MTU).unwrap();
    assert_eq!(s.next(ns(0)), Some(FlowId(2)));
    s.set_head(FlowId(2), 100).unwrap();
    assert_eq!(s.state(FlowId(2)), Ok(FlowState::Throttled));
    let first = s.next_eligible_at().map(Instant::as_nanos).unwrap();
    // A smaller head packet conforms sooner... and a throttled flow can be
    // emptied.
    s.set_head(FlowId(2), 50).unwrap();
    assert!(s.next_eligible_at().map(Instant::as_nanos).unwrap() <= first);
    s.set_empty(FlowId(2)).unwrap();
    assert_eq!(s.next_eligible_at().map(Instant::as_nanos), None);

    s.set_head(FlowId(0), 100).unwrap();
    s.set_head(FlowId(1), 100).unwrap();
    s.set_head(FlowId(0), 1400).unwrap(); // replace an active head
    s.set_empty(FlowId(1)).unwrap(); // remove an active flow
    assert_eq!(s.next(ns(0)), Some(FlowId(0)));
    assert_eq!(s.stats(FlowId(0)).unwrap().bytes, 1400);
    assert_eq!(s.next(ns(0)), None);
    s.check_invariants().unwrap();
}

#[test]
fn reconfiguring_a_backlogged_flow_moves_it() {
    let mut s = sched::<2>();
    s.set_head(FlowId(0), 100).unwrap();
    s.set_head(FlowId(1), 100).unwrap();
    s.configure(FlowId(1), flow(6, MTU, None)).unwrap();
    assert_eq!(s.next(ns(0)), Some(FlowId(1)));
    assert_eq!(
        s.flow_config(FlowId(1)),
        Ok(flow(6, MTU, None)),
        "config reads back"
    );
    let rl = Some(RateLimit {
        bytes_per_sec: 1000,
        burst: MTU,
    });
    s.configure(FlowId(0), flow(0, 2 * MTU, rl)).unwrap();
    assert_eq!(s.flow_config(FlowId(0)), Ok(flow(0, 2 * MTU, rl)));
    s.check_invariants().unwrap();
}

#[test]
fn time_going_backwards_is_taken_as_now() {
    let mut s = sched::<1>();
    s.configure(
        FlowId(0),
        flow(
            0,
            MTU,
            Some(RateLimit {
                bytes_per_sec: 1_000_000_000,
                burst: MTU,
            }),
        ),
    )
    .unwrap();
    s.set_head(FlowId(0), MTU).unwrap();
    assert_eq!(s.next(ns(1_000_000)), Some(FlowId(0)));
    s.set_head(FlowId(0), MTU).unwrap();
    assert_eq!(s.next(ns(5)), None);
    assert_eq!(s.now().as_nanos(), 1_000_000);
    // It conforms at 1_001_500 ns and is woken at the next 1 µs tick.
    assert_eq!(s.next_eligible_at().map(Instant::as_nanos), Some(1_002_000));
    assert_eq!(s.next(ns(1_002_000)), Some(FlowId(0)));
    // Near the end of time nothing overflows.
    s.set_head(FlowId(0), MTU).unwrap();
    assert_eq!(s.next(ns(u64::MAX)), Some(FlowId(0)));
    s.set_head(FlowId(0), MTU).unwrap();
    assert_eq!(s.next(ns(u64::MAX)), None);
    s.check_invariants().unwrap();
}

#[test]
fn bad_ids_and_values_are_errors() {
    let mut s = sched::<4>();
    for id in [4u16, 5, 1000, u16::MAX] {
        let e = Err(Error::BadFlow(id));
        assert_eq!(s.set_head(FlowId(id), 100), e);
        assert_eq!(s.set_empty(FlowId(id)), e);
        assert_eq!(s.configure(FlowId(id), flow(0, MTU, None)), e);
        assert_eq!(s.state(FlowId(id)).map(|_| ()), e);
        assert_eq!(s.stats(FlowId(id)).map(|_| ()), e);
        assert_eq!(s.flow_config(FlowId(id)).map(|_| ()), e);
    }
    assert_eq!(s.set_head(FlowId(0), 0), Err(Error::BadLength(0)));
    assert_eq!(
        s.set_head(FlowId(0), MTU + 1),
        Err(Error::BadLength(MTU + 1))
    );
    let f = FlowId(0);
    assert_eq!(s.configure(f, flow(8, MTU, None)), Err(Error::BadClass(8)));
    assert_eq!(
        s.configure(f, flow(0, MTU - 1, None)),
        Err(Error::BadQuantum(MTU - 1))
    );
    assert_eq!(
        s.configure(f, flow(0, MAX_BYTES + 1, None)),
        Err(Error::BadQuantum(MAX_BYTES + 1))
    );
    let rl = |bytes_per_sec, burst| {
        Some(RateLimit {
            bytes_per_sec,
            burst,
        })
    };
    assert_eq!(
        s.configure(f, flow(0, MTU, rl(0, MTU))),
        Err(Error::BadRate(0))
    );
    assert_eq!(
        s.configure(f, flow(0, MTU, rl(MAX_RATE + 1, MTU))),
        Err(Error::BadRate(MAX_RATE + 1))
    );
    assert_eq!(
        s.configure(f, flow(0, MTU, rl(1, MTU - 1))),
        Err(Error::BadBurst(MTU - 1))
    );
    // Nothing changed.
    assert_eq!(s.flow_config(f), Ok(flow(0, MTU, None)));
    assert_eq!(s.state(f), Ok(FlowState::Idle));

    assert_eq!(
        Scheduler::<1>::new(Config::new(0)).unwrap_err(),
        Error::BadMaxPacket(0)
    );
    let mut c = Config::new(MTU);
    c.tick_ns = 0;
    assert_eq!(Scheduler::<1>::new(c).unwrap_err(), Error::BadTick);
    assert_eq!(s.reset(c), Err(Error::BadTick));
    assert!(s.reset(Config::new(9000)).is_ok());
    assert_eq!(s.config().max_packet, 9000);
    // Every error has a message.
    assert!(!format!("{}", Error::BadFlow(9)).is_empty());
}

#[test]
fn large_table_with_few_active_flows() {
    // The hot path touches only the flows involved, whatever FLOWS is.
    let mut s: Box<Scheduler<4096>> = Box::new(sched());
    s.configure(FlowId(4095), flow(7, MTU, None)).unwrap();
    s.set_head(FlowId(4095), 100).unwrap();
    s.set_head(FlowId(17), 100).unwrap();
    assert_eq!(s.next(ns(0)), Some(FlowId(4095)));
    assert_eq!(s.next(ns(0)), Some(FlowId(17)));
    assert_eq!(s.next(ns(0)), None);
    s.check_invariants().unwrap();
}

#[derive(Clone, Debug)]
enum Op {
    Head(u16, u32),
    Empty(u16),
    Configure(u16, u8, u32, Option<(u64, u32)>),
    Next(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u16..10, 0u32..1600).prop_map(|(f, l)| Op::Head(f, l)),
        1 => (0u16..10).prop_map(Op::Empty),
        1 => (0u16..10, 0u8..9, 1400u32..5000, proptest::option::of((0u64..2_000_000_000, 1400u32..5000)))
            .prop_map(|(f, c, q, r)| Op::Configure(f, c, q, r)),
        4 => (0u64..200_000).prop_map(Op::Next),
    ]
}

proptest! {
    #[test]
    fn random_operations_keep_invariants(ops in proptest::collection::vec(op(), 1..200)) {
        let mut s = sched::<8>();
        let mut t = 0u64;
        for op in ops {
            match op {
                Op::Head(f, l) => {
                    let r = s.set_head(FlowId(f), l);
                    prop_assert_eq!(r.is_ok(), f < 8 && (1..=MTU).contains(&l));
                }
                Op::Empty(f) => {
                    prop_assert_eq!(s.set_empty(FlowId(f)).is_ok(), f < 8);
                }
                Op::Configure(f, c, q, r) => {
                    let rate = r.map(|(bytes_per_sec, burst)| RateLimit { bytes_per_sec, burst });
                    let _ = s.configure(FlowId(f), flow(c, q, rate));
                }
                Op::Next(dt) => {
                    t += dt;
                    if let Some(f) = s.next(ns(t)) {
                        prop_assert_eq!(s.state(f), Ok(FlowState::Sent));
                    } else if let Some(at) = s.next_eligible_at().map(Instant::as_nanos) {
                        prop_assert!(at > t);
                    }
                }
            }
            if let Err(e) = s.check_invariants() {
                prop_assert!(false, "{}", e);
            }
        }
    }
}
