// SPDX-License-Identifier: GPL-2.0

//! The behaviour of a served `test` function: the engine's
//! [`TestFunction`] (registers, command engine, MSI-X) with the memory
//! behind its BAR1 to BAR5, the buffer its DMA commands stage data in, and
//! its counters. The register layout is in `rust/pcieoe/src/testfn.rs`.
//!
//! [`TestState`] is allocated in process context when its function becomes
//! served ([`TestState::new`], from `Fabric::sync`) and lives inside the
//! fabric's state, under its bottom-half spinlock: everything else here
//! runs under that lock (softirq, or process context with bottom halves
//! disabled), so nothing here sleeps or allocates. The TLPs a step emits
//! go to a `send` callback, in order; they are upstream TLPs to the
//! function's host (DMA MRd, DMA MWr, MSI-X MWr) or completions of its
//! MMIO reads.
//!
//! # How much one step emits
//!
//! [`TestState::run`] calls [`TestFunction::poll`] until it has nothing
//! more to send. A read emits at most [`dma::TAGS`] MRd before it waits for
//! completions. A 1 MiB WRITE (or the write half of a COPY) emits all its
//! MWr at once: 8192 of 128 bytes at the reset Max_Payload_Size (4096 of
//! 256 bytes once the host raises it), about 1.2 MiB queued in the port's
//! outbox (`GFP_ATOMIC`), which the session drains as its window and
//! credits allow. That is transient memory of the same order as the
//! function's own buffers (2.2 MiB), bounded by the number of test
//! functions. The alternative, pacing the write, needs to know how much
//! the outbox still holds and to be called when it drains, which the port
//! does not offer its service. Should the outbox fail to grow, the TLPs
//! are counted (`upstream_dropped`) and logged; the loop itself is bounded
//! by [`POLL_BUDGET`].

use kernel::{pr_warn_ratelimited, prelude::*};

use crate::pcieoe::{
    cfgspace::ConfigSpace,
    dma::{self, MAX_DMA_LEN, MSIX_ENTRY_LEN},
    testfn::{
        Bars, Mmio, MmioError, TestFunction, BAR_SIZES, CMD_COPY, CMD_READ, CMD_WRITE, REG_COMMAND,
        REG_STATUS, STATUS_COPY_FAIL, STATUS_IRQ_FAIL, STATUS_READ_FAIL, STATUS_WRITE_FAIL,
        TLP_BUF_LEN,
    },
    tlp::{self, Bdf, Kind, Tlp},
};

/// How long a DMA read may wait for completions without any arriving
/// before the command fails (READ_FAIL / COPY_FAIL). PCIe's default
/// Completion Timeout range is 50 µs to 50 ms, but here a lost frame costs
/// the reliable link's recovery: a NAK or the replay timer, then a
/// go-back-N replay of up to a window of frames, possibly more than once
/// under netem's 2 % loss with 1 ms delay, and a host whose IOMMU answers
/// in a work item. Two seconds is far above that, and still short enough
/// that a host driver polling STATUS sees the failure.
pub(crate) const DMA_TIMEOUT_NS: u64 = 2_000_000_000;

/// Most TLPs one [`TestState::run`] sends: the largest write cut at the
/// smallest Max_Payload_Size (128 bytes), the reads' tags and the MSI-X
/// message, with room to spare. `poll` always ends well before this; the
/// budget only makes the loop visibly finite.
const POLL_BUDGET: usize = MAX_DMA_LEN / 128 + dma::TAGS + 64;

/// A test function's counters (debugfs).
#[derive(Clone, Copy, Default)]
pub(crate) struct TestCounters {
    /// MRd to its BARs answered.
    pub(crate) mmio_reads: u64,
    /// MWr to its BARs applied.
    pub(crate) mmio_writes: u64,
    /// MWr to its BARs dropped (poisoned data).
    pub(crate) mmio_dropped: u64,
    /// READ, WRITE and COPY commands that succeeded.
    pub(crate) dma_ok: u64,
    /// READ, WRITE and COPY commands that failed.
    pub(crate) dma_failed: u64,
    /// DMA reads given up by [`DMA_TIMEOUT_NS`].
    pub(crate) dma_timeouts: u64,
    /// MSI-X messages sent.
    pub(crate) msix: u64,
    /// RAISE_MSIX commands, or completion interrupts, that failed
    /// (MSI-X off, no such vector, Bus Master Enable clear).
    pub(crate) irq_failed: u64,
    /// Completions with this function's requester ID that it did not take
    /// (no read running, late, or refused by the DMA engine).
    pub(crate) cpl_unmatched: u64,
    /// Upstream TLPs sent (DMA and MSI-X).
    pub(crate) tlps_out: u64,
}

/// One test function's behaviour and memory.
pub(crate) struct TestState {
    tf: TestFunction,
    /// BAR1 to BAR5, [`BAR_SIZES`] long, zeroed at allocation.
    bars: [KVVec<u8>; 5],
    /// Where a DMA command stages its data: [`MAX_DMA_LEN`] bytes.
    scratch: KVVec<u8>,
    /// One TLP: [`TLP_BUF_LEN`] bytes.
    buf: KVVec<u8>,
    pub(crate) counters: TestCounters,
    /// Whether the running read waited for completions after the last
    /// step, and since when without progress (`CLOCK_MONOTONIC` ns).
    awaiting: bool,
    progress_at: u64,
}

/// A register of BAR0, read without side effects.
fn reg(tf: &TestFunction, offset: u32) -> u32 {
    let mut none: [[u8; 0]; 5] = [[]; 5];
    let [a, b, c, d, e] = &mut none;
    let bars = Bars::new([&mut a[..], &mut b[..], &mut c[..], &mut d[..], &mut e[..]]);
    let mut dw = [0u8; 4];
    tf.mmio_read(0, u64::from(offset), &mut dw, &bars);
    u32::from_le_bytes(dw)
}

/// Whether `bytes`, a TLP the function emits, is one of its MSI-X
/// messages: an MWr of one double word whose address and data are those
/// of an entry of its MSI-X table. (A DMA write of the same four bytes to
/// the same address would count too; no test does that.)
fn is_msix(tf: &TestFunction, bytes: &[u8]) -> bool {
    if bytes.len() > tlp::HEADER_4DW + 4 {
        return false;
    }
    let Ok(t) = Tlp::decode(bytes) else {
        return false;
    };
    let Kind::MemWrite(w) = t.kind else {
        return false;
    };
    let Ok(data) = <[u8; 4]>::try_from(t.payload) else {
        return false;
    };
    tf.msix_table().chunks_exact(MSIX_ENTRY_LEN).any(|e| {
        let dw = |at: usize| {
            e.get(at..at + 4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map_or(0, u32::from_le_bytes)
        };
        let addr = u64::from(dw(0)) | (u64::from(dw(4)) << 32);
        addr == w.address && e.get(8..12) == Some(&data[..])
    })
}

impl TestState {
    /// A test function in its reset state whose requester ID (as its host
    /// sees it) is `id`, with zeroed BARs. Process context; sleeps.
    ///
    /// # Errors
    ///
    /// `ENOMEM`.
    pub(crate) fn new(id: Bdf) -> Result<KBox<Self>> {
        let [s1, s2, s3, s4, s5] = BAR_SIZES;
        let bar = |size: usize| KVVec::from_elem(0u8, size, GFP_KERNEL);
        let bars = [bar(s1)?, bar(s2)?, bar(s3)?, bar(s4)?, bar(s5)?];
        Ok(KBox::new(
            TestState {
                tf: TestFunction::new(id),
                bars,
                scratch: KVVec::from_elem(0u8, MAX_DMA_LEN, GFP_KERNEL)?,
                buf: KVVec::from_elem(0u8, TLP_BUF_LEN, GFP_KERNEL)?,
                counters: TestCounters::default(),
                awaiting: false,
                progress_at: 0,
            },
            GFP_KERNEL,
        )?)
    }

    /// Whether a command is running.
    pub(crate) fn busy(&self) -> bool {
        self.tf.is_busy()
    }

    /// When the running read times out, if it waits for completions.
    pub(crate) fn deadline(&self) -> Option<u64> {
        self.awaiting
            .then(|| self.progress_at.saturating_add(DMA_TIMEOUT_NS))
    }

    /// Serves an MRd or MWr of the host that hit one of the function's
    /// BARs in `cs`, then runs the command engine.
    ///
    /// # Errors
    ///
    /// Those of [`TestFunction::serve_mmio`]; nothing was sent.
    pub(crate) fn mmio(
        &mut self,
        req: &Tlp<'_>,
        cs: &ConfigSpace,
        now: u64,
        send: &mut impl FnMut(&[u8]),
    ) -> Result<Mmio, MmioError> {
        let [b1, b2, b3, b4, b5] = &mut self.bars;
        let mut bars = Bars::new([
            &mut b1[..],
            &mut b2[..],
            &mut b3[..],
            &mut b4[..],
            &mut b5[..],
        ]);
        let r = self
            .tf
            .serve_mmio(req, cs, &mut bars, &mut self.buf, send)?;
        let c = &mut self.counters;
        match r {
            Mmio::Read { .. } | Mmio::Unsupported => c.mmio_reads += 1,
            Mmio::Written => c.mmio_writes += 1,
            Mmio::Dropped => c.mmio_dropped += 1,
        }
        if matches!(r, Mmio::Written) {
            self.run(cs, now, send);
        }
        Ok(r)
    }

    /// Offers a completion addressed to the function to its running read,
    /// then runs the command engine. Returns whether the read took it.
    pub(crate) fn completion(
        &mut self,
        cpl: &Tlp<'_>,
        cs: &ConfigSpace,
        now: u64,
        send: &mut impl FnMut(&[u8]),
    ) -> bool {
        let taken = self.tf.receive(cpl, &mut self.scratch);
        if taken {
            self.progress_at = now;
        } else {
            self.counters.cpl_unmatched += 1;
        }
        self.run(cs, now, send);
        taken
    }

    /// Gives up on the running read if it waited [`DMA_TIMEOUT_NS`]
    /// without progress, then runs the command engine (the command fails,
    /// and its interrupt goes out if FLAGS asks). Returns whether it timed
    /// out.
    pub(crate) fn expire(
        &mut self,
        cs: &ConfigSpace,
        now: u64,
        send: &mut impl FnMut(&[u8]),
    ) -> bool {
        match self.deadline() {
            Some(at) if now >= at => {
                self.tf.timeout();
                self.counters.dma_timeouts += 1;
                self.run(cs, now, send);
                true
            }
            _ => false,
        }
    }

    /// Runs the command engine until it waits, sending what it emits:
    /// after every MMIO write, completion, configuration write and timeout.
    pub(crate) fn run(&mut self, cs: &ConfigSpace, now: u64, send: &mut impl FnMut(&[u8])) {
        let busy = self.tf.is_busy();
        let command = if busy { reg(&self.tf, REG_COMMAND) } else { 0 };
        let mut sent = 0;
        while let Some(n) = self.tf.poll(cs, &mut self.scratch, &mut self.buf) {
            let Some(tlp) = self.buf.get(..n) else {
                break;
            };
            if is_msix(&self.tf, tlp) {
                self.counters.msix += 1;
            }
            send(tlp);
            sent += 1;
            if sent >= POLL_BUDGET {
                // Cannot happen (see POLL_BUDGET); the rest goes out at
                // the next step.
                pr_warn_ratelimited!(
                    "test function {:02x}: poll budget of {} TLPs reached\n",
                    self.tf.id().device(),
                    POLL_BUDGET
                );
                break;
            }
        }
        self.counters.tlps_out += sent as u64;
        if busy && !self.tf.is_busy() {
            self.finished(command);
        }
        let awaiting = self.tf.awaiting_completions();
        if awaiting && !self.awaiting {
            self.progress_at = now;
        }
        self.awaiting = awaiting;
    }

    /// Counts a command that ended.
    fn finished(&mut self, command: u32) {
        let status = reg(&self.tf, REG_STATUS);
        let c = &mut self.counters;
        match command {
            CMD_READ | CMD_WRITE | CMD_COPY => {
                if status & (STATUS_READ_FAIL | STATUS_WRITE_FAIL | STATUS_COPY_FAIL) != 0 {
                    c.dma_failed += 1;
                } else {
                    c.dma_ok += 1;
                }
            }
            _ => {}
        }
        if status & STATUS_IRQ_FAIL != 0 {
            c.irq_failed += 1;
        }
    }
}
