// SPDX-License-Identifier: GPL-2.0

//! Throughput of the engine's hot paths (criterion). Numbers only: these
//! benches never assert a speed.
//!
//!   cargo bench -p pcieoe --bench engine            # all, ~1 min
//!   cargo bench -p pcieoe --bench engine -- qos     # one group

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pcieoe::clock::Instant;
use pcieoe::qos::{Config, FlowConfig, FlowId, RateLimit, Scheduler};
use pcieoe::tlp::{Bdf, Tag, Tlp, MAX_TLP_LEN};
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

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20);
    targets = qos_next, tlp_codec
}
criterion_main!(benches);
