// SPDX-License-Identifier: GPL-2.0

//! A served vNIC: the engine's [`Vnic`] (registers, descriptor windows,
//! DMA, moderation, MSI-X; `rust/pcieoe/src/vnic.rs`) with the memory it
//! runs in and its uplink.
//!
//! Like [`TestState`](crate::testfn::TestState), a [`VnicState`] is
//! allocated in process context when its function becomes served and
//! lives in the fabric's state, under its bottom-half spinlock: nothing
//! here sleeps or allocates but the frame copies handed to the caller
//! (`GFP_ATOMIC`). The TLPs a step emits go to a `send` callback, in
//! order, for the function's host; the frames it transmits are returned
//! to the fabric, which bridges them (`Fabric` in `fabric.rs`).

use core::fmt;

use kernel::{netdev::NetDevice, prelude::*, types::ARef};

use crate::pcieoe::{
    cfgspace::ConfigSpace,
    clock::Instant,
    testfn::{Mmio, MmioError},
    tlp::{Bdf, Tlp},
    vnic::{Config, Reader, RxVerdict, Storage, Vnic, READERS, RX_STAGE_MIN, TLP_BUF_LEN},
    vnic_layout::{FRAME_MAX, MAX_QUEUES, STATS_COUNT},
};

/// How long a DMA read of TX data may wait for completions without any
/// arriving before its frame is dropped: as for the test function
/// ([`DMA_TIMEOUT_NS`](crate::testfn::DMA_TIMEOUT_NS)), far above the
/// reliable link's worst recovery.
pub(crate) const DMA_TIMEOUT_NS: u64 = crate::testfn::DMA_TIMEOUT_NS;

/// The TX FIFO of each queue pair: 64 KiB holds 40 full-size frames
/// inline, or seven jumbo frames.
const TX_FIFO: usize = 64 << 10;
/// The RX staging of each queue pair: the ring of posted descriptors and
/// 64 KiB of frames waiting for their buffers (and at least one jumbo).
const RX_BUF: usize = RX_STAGE_MIN + (64 << 10);

/// Most TLPs one [`VnicState::run`] sends: a ring's worth of full-size
/// frames cut at 128 bytes, with room to spare. `poll` ends before; the
/// budget only makes the loop visibly finite.
const POLL_BUDGET: usize = 256 * 80;
/// Most frames one drain of the TX side hands out: the FIFO's worth.
const TX_BUDGET: usize = 1024;

fn now_instant(now: u64) -> Instant {
    Instant::from_nanos(now)
}

/// A served vNIC's behaviour and memory.
pub(crate) struct VnicState {
    vnic: KBox<Vnic>,
    tx: [KVVec<u8>; MAX_QUEUES],
    rx: [KVVec<u8>; MAX_QUEUES],
    readers: KVec<Reader>,
    /// One TLP.
    buf: KVVec<u8>,
    /// One frame from the TX side.
    frame: KVVec<u8>,
    /// The uplink, until it is unregistered.
    pub(crate) uplink: Option<ARef<NetDevice>>,
    /// The link state given to the function.
    link: bool,
    /// Bus Master Enable was set at the last run.
    master: bool,
    /// DMA reads waited for completions after the last step, since when
    /// without progress (`CLOCK_MONOTONIC` ns).
    awaiting: bool,
    progress_at: u64,
    /// MRd answered UR / MWr dropped at the MMIO level, and malformed.
    pub(crate) mmio_refused: u64,
    /// DMA reads given up by [`DMA_TIMEOUT_NS`].
    pub(crate) dma_timeouts: u64,
    /// Completions not taken by any DMA read.
    pub(crate) cpl_unmatched: u64,
    /// Frames delivered from another vNIC of the same uplink.
    pub(crate) bridged: u64,
}

/// Builds the engine's view of the memory.
macro_rules! storage {
    ($s:expr) => {{
        let [t0, t1, t2, t3] = &mut $s.tx;
        let [r0, r1, r2, r3] = &mut $s.rx;
        Storage {
            tx: [&mut t0[..], &mut t1[..], &mut t2[..], &mut t3[..]],
            rx: [&mut r0[..], &mut r1[..], &mut r2[..], &mut r3[..]],
            readers: &mut $s.readers[..],
        }
    }};
}

impl VnicState {
    /// A vNIC in its reset state with routing ID `id` (as its host sees
    /// it), on `uplink`, link as the uplink's. Process context; sleeps.
    ///
    /// # Errors
    ///
    /// `ENOMEM`.
    pub(crate) fn new(id: Bdf, cfg: &Config, uplink: ARef<NetDevice>) -> Result<KBox<Self>> {
        let queues = cfg.queues as usize;
        let mem = |q: usize, len: usize| -> Result<KVVec<u8>> {
            if q < queues {
                Ok(KVVec::from_elem(0u8, len, GFP_KERNEL)?)
            } else {
                Ok(KVVec::new())
            }
        };
        let tx = [
            mem(0, TX_FIFO)?,
            mem(1, TX_FIFO)?,
            mem(2, TX_FIFO)?,
            mem(3, TX_FIFO)?,
        ];
        let rx = [
            mem(0, RX_BUF)?,
            mem(1, RX_BUF)?,
            mem(2, RX_BUF)?,
            mem(3, RX_BUF)?,
        ];
        let mut readers = KVec::with_capacity(READERS, GFP_KERNEL)?;
        for _ in 0..READERS {
            readers.push(Reader::new(), GFP_KERNEL)?;
        }
        let mut vnic = KBox::new(Vnic::new(id, cfg), GFP_KERNEL)?;
        let link = link_of(&uplink);
        vnic.set_link(link);
        Ok(KBox::new(
            VnicState {
                vnic,
                tx,
                rx,
                readers,
                buf: KVVec::from_elem(0u8, TLP_BUF_LEN, GFP_KERNEL)?,
                frame: KVVec::from_elem(0u8, FRAME_MAX as usize, GFP_KERNEL)?,
                uplink: Some(uplink),
                link,
                master: false,
                awaiting: false,
                progress_at: 0,
                mmio_refused: 0,
                dma_timeouts: 0,
                cpl_unmatched: 0,
                bridged: 0,
            },
            GFP_KERNEL,
        )?)
    }

    /// The MAC address.
    pub(crate) fn mac(&self) -> [u8; 6] {
        self.vnic.config().mac
    }

    /// Its part of a line of the DI's debugfs `functions` file.
    pub(crate) fn show(&self, f: &mut impl fmt::Write) -> fmt::Result {
        let st: &[u64; STATS_COUNT] = self.vnic.stats();
        let names = [
            "rx_frames",
            "rx_bytes",
            "tx_frames",
            "tx_bytes",
            "rx_filtered",
            "rx_no_room",
            "rx_oversize",
            "tx_errors",
        ];
        write!(f, " link {}", u8::from(self.link))?;
        for (name, value) in names.iter().zip(st.iter()) {
            write!(f, " {} {}", name, value)?;
        }
        write!(
            f,
            " prog_errors {} mmio_refused {} dma_timeouts {} cpl_unmatched {} bridged {}",
            self.vnic.prog_errors(),
            self.mmio_refused,
            self.dma_timeouts,
            self.cpl_unmatched,
            self.bridged
        )
    }

    /// Whether the uplink is `dev`.
    pub(crate) fn is_on(&self, dev: &NetDevice) -> bool {
        self.uplink.as_deref().is_some_and(|u| u == dev)
    }

    /// Follows the uplink's state.
    pub(crate) fn update_link(&mut self) {
        self.link = self.uplink.as_deref().is_some_and(link_of);
        self.vnic.set_link(self.link);
    }

    /// The uplink is going away: link down, reference dropped.
    pub(crate) fn lose_uplink(&mut self) {
        self.uplink = None;
        self.link = false;
        self.vnic.set_link(false);
    }

    /// Serves an MRd or MWr of the host that hit BAR0, then runs the
    /// function.
    ///
    /// # Errors
    ///
    /// Those of [`Vnic::serve_mmio`]; nothing was sent.
    pub(crate) fn mmio(
        &mut self,
        req: &Tlp<'_>,
        cs: &ConfigSpace,
        now: u64,
        send: &mut impl FnMut(&[u8]),
    ) -> Result<Mmio, MmioError> {
        let mut mem = storage!(self);
        let r = self
            .vnic
            .serve_mmio(req, cs, &mut mem, &mut self.buf, send)?;
        if matches!(r, Mmio::Unsupported | Mmio::Dropped) {
            self.mmio_refused += 1;
        }
        self.run(cs, now, send);
        Ok(r)
    }

    /// Offers a completion to the DMA reads, then runs the function.
    /// Returns whether a read took it.
    pub(crate) fn completion(
        &mut self,
        cpl: &Tlp<'_>,
        cs: &ConfigSpace,
        now: u64,
        send: &mut impl FnMut(&[u8]),
    ) -> bool {
        let mut mem = storage!(self);
        let taken = self.vnic.receive(cpl, &mut mem);
        if taken {
            self.progress_at = now;
        } else {
            self.cpl_unmatched += 1;
        }
        self.run(cs, now, send);
        taken
    }

    /// Gives up on the DMA reads if they waited [`DMA_TIMEOUT_NS`]
    /// without progress (their frames are dropped), then runs the
    /// function. Returns whether they timed out.
    pub(crate) fn expire(
        &mut self,
        cs: &ConfigSpace,
        now: u64,
        send: &mut impl FnMut(&[u8]),
    ) -> bool {
        let late = self.dma_deadline().is_some_and(|at| now >= at);
        if late {
            let mut mem = storage!(self);
            self.vnic.timeout(&mut mem);
            self.dma_timeouts += 1;
            self.awaiting = false;
        }
        self.run(cs, now, send);
        late
    }

    /// When [`VnicState::expire`] must run next: the DMA timeout or the
    /// moderation timer, `CLOCK_MONOTONIC` ns; 0 for now.
    pub(crate) fn deadline(&self) -> Option<u64> {
        let dma = self.dma_deadline();
        // Without Bus Master Enable the function cannot send what its
        // moderation timer waits for: no timer then, or it would fire
        // again and again until the host sets it.
        let moderation = self
            .vnic
            .poll_at()
            .filter(|_| self.master)
            .map(|t| t.as_nanos());
        match (dma, moderation) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn dma_deadline(&self) -> Option<u64> {
        self.awaiting
            .then(|| self.progress_at.saturating_add(DMA_TIMEOUT_NS))
    }

    /// Runs the function until it has nothing to send.
    pub(crate) fn run(&mut self, cs: &ConfigSpace, now: u64, send: &mut impl FnMut(&[u8])) {
        self.master = cs.bus_master_enabled();
        let mut mem = storage!(self);
        let mut sent = 0;
        while let Some(n) = self
            .vnic
            .poll(now_instant(now), cs, &mut mem, &mut self.buf)
        {
            let Some(tlp) = self.buf.get(..n) else {
                break;
            };
            send(tlp);
            sent += 1;
            if sent >= POLL_BUDGET {
                // The rest goes out at the next step.
                break;
            }
        }
        let awaiting = self.vnic.awaiting_completions(&mem);
        if awaiting && !self.awaiting {
            self.progress_at = now;
        }
        self.awaiting = awaiting;
    }

    /// Hands out the frames the host transmitted, each to `out`.
    pub(crate) fn drain_tx(&mut self, out: &mut impl FnMut(&[u8])) {
        let mem = storage!(self);
        for _ in 0..TX_BUDGET {
            let Some(f) = self.vnic.tx_frame(&mem, &mut self.frame) else {
                break;
            };
            if let Some(frame) = self.frame.get(..f.len) {
                out(frame);
            }
        }
    }

    /// Offers a frame from the uplink or another vNIC.
    pub(crate) fn rx_frame(&mut self, frame: &[u8]) -> RxVerdict {
        let mut mem = storage!(self);
        self.vnic.rx_frame(frame, &mut mem)
    }
}

/// Whether `dev` can carry frames: up, with carrier.
pub(crate) fn link_of(dev: &NetDevice) -> bool {
    dev.is_up() && dev.has_carrier()
}
