// SPDX-License-Identifier: GPL-2.0

//! Arbitrary operation sequences on the QoS scheduler: no call may panic,
//! every invariant must hold after every call, errors must come exactly for
//! bad arguments, and no rate-limited flow may exceed its token bucket.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use pcieoe::clock::Instant;
use pcieoe::qos::{Config, FlowConfig, FlowId, FlowState, RateLimit, Scheduler};

const FLOWS: usize = 16;

#[derive(Arbitrary, Debug)]
enum Op {
    Head {
        flow: u16,
        len: u32,
    },
    Empty {
        flow: u16,
    },
    Configure {
        flow: u16,
        class: u8,
        quantum: u32,
        rate: Option<(u64, u32)>,
    },
    Next {
        dt: u32,
    },
    Jump {
        dt: u64,
    },
    Reset {
        max_packet: u32,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    max_packet: u16,
    tick_ns: u16,
    class_levels: [u8; 8],
    ops: Vec<Op>,
}

/// What the fuzzer checks a rate-limited flow against: bytes granted since
/// the bucket was (re)filled by `configure` may not exceed
/// `burst + rate * elapsed`.
#[derive(Clone, Copy, Default)]
struct Model {
    rate: u64,
    burst: u64,
    since_ns: u64,
    /// The flow's byte counter when the bucket was filled.
    base_bytes: u64,
}

fuzz_target!(|input: Input| {
    let mut config = Config::new(u32::from(input.max_packet));
    config.tick_ns = u64::from(input.tick_ns);
    config.class_levels = input.class_levels;
    let Ok(mut s) = Scheduler::<FLOWS>::new(config) else {
        return;
    };
    let mut model = [Model::default(); FLOWS];
    let mut t = 0u64;
    for op in input.ops {
        let max = s.config().max_packet;
        match op {
            Op::Head { flow, len } => {
                let r = s.set_head(FlowId(flow), len);
                assert_eq!(
                    r.is_ok(),
                    usize::from(flow) < FLOWS && len >= 1 && len <= max
                );
            }
            Op::Empty { flow } => {
                assert_eq!(s.set_empty(FlowId(flow)).is_ok(), usize::from(flow) < FLOWS);
            }
            Op::Configure {
                flow,
                class,
                quantum,
                rate,
            } => {
                let rate = rate.map(|(bytes_per_sec, burst)| RateLimit {
                    bytes_per_sec,
                    burst,
                });
                let cfg = FlowConfig {
                    class,
                    quantum,
                    rate,
                };
                let before = s.flow_config(FlowId(flow));
                match s.configure(FlowId(flow), cfg) {
                    Ok(()) => {
                        assert_eq!(s.flow_config(FlowId(flow)), Ok(cfg));
                        let base_bytes = s.stats(FlowId(flow)).unwrap().bytes;
                        model[usize::from(flow)] = Model {
                            rate: rate.map_or(0, |r| r.bytes_per_sec),
                            burst: rate.map_or(0, |r| u64::from(r.burst)),
                            since_ns: s.now().as_nanos(),
                            base_bytes,
                        };
                    }
                    Err(_) => assert_eq!(s.flow_config(FlowId(flow)), before),
                }
            }
            Op::Next { dt } => t = t.saturating_add(u64::from(dt)),
            Op::Jump { dt } => t = t.saturating_add(dt),
            Op::Reset { max_packet } => {
                let mut c = *s.config();
                c.max_packet = max_packet;
                if s.reset(c).is_ok() {
                    model = [Model::default(); FLOWS];
                    t = 0;
                }
            }
        }
        if matches!(op, Op::Next { .. } | Op::Jump { .. }) {
            match s.next(Instant::from_nanos(t)) {
                Some(f) => assert_eq!(s.state(f), Ok(FlowState::Sent)),
                None => {
                    if let Some(at) = s.next_eligible_at().map(Instant::as_nanos) {
                        // Only at the end of time may nothing ever conform.
                        assert!(
                            at > s.now().as_nanos() || at == u64::MAX,
                            "nothing to send at {} yet eligible at {at}",
                            s.now().as_nanos()
                        );
                    }
                }
            }
        }
        if let Err(e) = s.check_invariants() {
            panic!("invariant broken: {e}");
        }
        for (i, m) in model.iter().enumerate() {
            if m.rate == 0 {
                continue;
            }
            let sent = s.stats(FlowId(i as u16)).unwrap().bytes - m.base_bytes;
            let elapsed = u128::from(s.now().as_nanos().saturating_sub(m.since_ns));
            let allowed = u128::from(m.burst) + u128::from(m.rate) * elapsed / 1_000_000_000;
            assert!(
                u128::from(sent) <= allowed,
                "flow {i} sent {sent} > {allowed}"
            );
        }
    }
});
