// SPDX-License-Identifier: GPL-2.0

//! The `net_device` of a vNIC: open and stop, transmission, NAPI, the
//! receive filter, MTU changes, statistics and ethtool.
//!
//! # State and locking
//!
//! Each queue pair keeps its transmit state ([`Tx`]) and its receive state
//! ([`Rx`]) in a [`SpinLockBh`] each, as an `Option`: `Some` while the
//! device is up. `open` builds them and puts them in, `stop` takes them
//! out (and frees their DMA memory, outside the lock, once the device was
//! told to stop and a register read made sure it did). `start_xmit` and
//! the NAPI poll only ever touch them under their lock, so a poll or a
//! transmission that races with a restart (MTU change) finds `None` and
//! does nothing. Transmit state is shared by `start_xmit` and the poll
//! (which flushes a backlogged record and wakes the queue); receive state
//! belongs to the poll.
//!
//! # No register reads on the data path
//!
//! The poll learns everything from host memory: completions (phase bit),
//! the TX done block, the status block (queue 0's poll, which the misc
//! vector schedules). Its only MMIO is posted: buffer reposts and one
//! IRQ_ARM when it completes. A post refused because the link is
//! backlogged (`EAGAIN`) is retried by the same poll, scheduled again by a
//! short timer (the queue pair's [`NapiSlot`] timer).

use crate::{
    hw::{error_name, Hw, Identity},
    layout::*,
    rx::{Geometry, Rx},
    status::Status,
    tx::{Sent, Tx},
};
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::{
    c_str,
    delay::msleep,
    device, fmt,
    hrtimer::{Timer, TimerHandler},
    net_device::{
        self, Device, DrvInfo, Napi, NapiPoll, RxMode, Skb, Stats64, StatsNames, TxResult,
    },
    new_spinlock_bh, new_spinlock_irq,
    prelude::*,
    spinlock_bh::SpinLockBh,
    spinlock_irq::SpinLockIrq,
    str::CString,
    sync::Arc,
    time::Ktime,
    types::ARef,
};

/// Moderation time set at open (microseconds).
const ITR_USECS: u32 = 50;
/// Moderation count set at open (events).
const ITR_FRAMES: u32 = 16;
/// Delay before a post that the link refused is tried again.
const RETRY_NS: i64 = 50_000;
/// How long `open` keeps trying to enable the device (1 ms steps) while
/// the link is backlogged.
const OPEN_TRIES: u32 = 100;
/// How long `ethtool -S` waits for the fresh status block it asked for
/// (1 ms steps).
const STATS_WAIT_MS: u32 = 10;

/// The MSI-X vector of status-block events: the last one, so that it is
/// never shared with a queue pair (which use vectors 0 to 2).
pub(crate) const MISC_VECTOR: u32 = MSIX_VECTORS as u32 - 1;

/// Per queue pair `ethtool -S` counters, in the order of
/// [`QueueStats::values`].
/// Each is `<direction>_q<N>_<what>`.
const QUEUE_STATS: [(&str, &str); 9] = [
    ("tx", "packets"),
    ("tx", "bytes"),
    ("tx", "busy"),
    ("rx", "packets"),
    ("rx", "bytes"),
    ("rx", "bad"),
    ("tx", "post_retry"),
    ("rx", "post_retry"),
    ("rx", "dropped"),
];

/// Device counters of `ethtool -S`: the status block's `STAT_*`, in
/// order, then PROG_ERRORS.
const DEVICE_STATS: [&str; STATS_COUNT + 1] = [
    "dev_rx_frames",
    "dev_rx_bytes",
    "dev_tx_frames",
    "dev_tx_bytes",
    "dev_rx_filtered",
    "dev_rx_no_room",
    "dev_rx_oversize",
    "dev_tx_errors",
    "dev_prog_errors",
];

/// Counters of one queue pair, updated without locks.
#[derive(Default)]
pub(crate) struct QueueStats {
    pub(crate) tx_packets: AtomicU64,
    pub(crate) tx_bytes: AtomicU64,
    pub(crate) tx_busy: AtomicU64,
    pub(crate) tx_dropped: AtomicU64,
    pub(crate) tx_post_retry: AtomicU64,
    pub(crate) rx_packets: AtomicU64,
    pub(crate) rx_bytes: AtomicU64,
    pub(crate) rx_bad: AtomicU64,
    pub(crate) rx_dropped: AtomicU64,
    pub(crate) rx_multicast: AtomicU64,
    pub(crate) rx_post_retry: AtomicU64,
}

impl QueueStats {
    /// The `ethtool -S` values, in the order of [`QUEUE_STATS`].
    fn values(&self) -> [u64; QUEUE_STATS.len()] {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            get(&self.tx_packets),
            get(&self.tx_bytes),
            get(&self.tx_busy),
            get(&self.rx_packets),
            get(&self.rx_bytes),
            get(&self.rx_bad),
            get(&self.tx_post_retry),
            get(&self.rx_post_retry),
            get(&self.rx_dropped),
        ]
    }
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// The NAPI context of a queue pair, for its interrupt handler and its
/// retry timer. Set by `open` (the net_device, hence the context, is
/// created after the handlers are installed: an interrupt must find its
/// context as soon as the device can be opened). Taken with interrupts
/// disabled: the interrupt handler uses it.
#[pin_data]
pub(crate) struct NapiSlot {
    #[pin]
    napi: SpinLockIrq<Option<Arc<Napi>>>,
}

impl NapiSlot {
    /// Schedules the poll, if there is a context. Any context.
    fn schedule(&self) {
        if let Some(napi) = self.napi.lock().as_ref() {
            napi.schedule();
        }
    }
}

/// The retry timer of a queue pair schedules its NAPI poll, which posts
/// again what the link refused.
impl TimerHandler for NapiSlot {
    fn expired(timer: &Timer<Self>) {
        timer.schedule();
    }
}

/// One queue pair: its state while up, its retry timer, its counters.
#[pin_data]
pub(crate) struct QueuePair {
    index: u16,
    #[pin]
    tx: SpinLockBh<Option<Tx>>,
    #[pin]
    rx: SpinLockBh<Option<Rx>>,
    /// The NAPI context, inside the retry timer.
    #[pin]
    retry: Timer<NapiSlot>,
    stats: QueueStats,
}

impl QueuePair {
    fn new(index: u16) -> Result<Arc<Self>> {
        Arc::pin_init(
            try_pin_init!(QueuePair {
                index,
                tx <- new_spinlock_bh!(None, "pcieoe_vnic_tx"),
                rx <- new_spinlock_bh!(None, "pcieoe_vnic_rx"),
                retry <- Timer::new(try_pin_init!(NapiSlot {
                    napi <- new_spinlock_irq!(None, "pcieoe_vnic_napi"),
                }? Error)),
                stats: QueueStats::default(),
            }? Error),
            GFP_KERNEL,
        )
    }

    /// Schedules the queue pair's NAPI poll (its interrupt handler).
    pub(crate) fn schedule(&self) {
        self.retry.schedule();
    }

    /// Polls again soon: a post was refused for backlog.
    fn retry_soon(&self) {
        let at = Ktime::ktime_get().to_ns().saturating_add(RETRY_NS);
        self.retry.start_at(Ktime::from_raw(at));
    }

    /// Takes the state out (the device no longer uses its memory) and
    /// frees it, outside the locks (freeing DMA memory sleeps).
    fn take_state(&self) {
        let tx = self.tx.lock().take();
        let rx = self.rx.lock().take();
        drop(tx);
        drop(rx);
    }
}

/// The receive filter, as the stack last set it.
#[derive(Default)]
struct Filter {
    /// MC_HASH0..7.
    hash: [u32; 8],
    /// `CTRL_PROMISC` and `CTRL_ALLMULTI`.
    control: u32,
    /// The device is up: CONTROL.ENABLE goes with every write.
    running: bool,
    /// Not yet written to the device.
    dirty: bool,
}

/// The driver's object of one vNIC.
#[pin_data]
pub(crate) struct Vnic {
    hw: Hw,
    id: Identity,
    /// VERSION as text, for `ethtool -i`.
    version: CString,
    /// The PCI function, for DMA allocations.
    pdev: ARef<device::Device>,
    /// TX_FIFO_UNITS of each queue pair used.
    fifo_units: [u32; MAX_QUEUES],
    queues: KVec<Arc<QueuePair>>,
    #[pin]
    status: SpinLockBh<Status>,
    #[pin]
    filter: SpinLockBh<Filter>,
}

impl Vnic {
    /// The object of a vNIC with `pairs` queue pairs (at most
    /// `MAX_QUEUES`) whose FIFOs hold `fifo_units`, the status block
    /// `status` already programmed.
    pub(crate) fn new(
        hw: Hw,
        id: Identity,
        pdev: &device::Device,
        fifo_units: [u32; MAX_QUEUES],
        pairs: u16,
        status: Status,
    ) -> Result<Arc<Self>> {
        let mut queues = KVec::with_capacity(usize::from(pairs), GFP_KERNEL)?;
        for q in 0..pairs {
            queues.push(QueuePair::new(q)?, GFP_KERNEL)?;
        }
        let version = CString::try_from_fmt(fmt!("{}.{}", id.version >> 16, id.version & 0xffff))?;
        Arc::pin_init(
            pin_init!(Vnic {
                hw,
                id,
                version,
                pdev: ARef::from(pdev),
                fifo_units,
                queues,
                status <- new_spinlock_bh!(status, "pcieoe_vnic_status"),
                filter <- new_spinlock_bh!(Filter::default(), "pcieoe_vnic_filter"),
            }),
            GFP_KERNEL,
        )
    }

    /// The queue pairs.
    pub(crate) fn pairs(&self) -> u16 {
        u16::try_from(self.queues.len()).unwrap_or(0)
    }

    /// Queue pair `queue`, for its interrupt handler.
    pub(crate) fn queue(&self, queue: u16) -> Option<&Arc<QueuePair>> {
        self.queues.get(usize::from(queue))
    }

    /// Gives the device the status block and its vector (probe).
    pub(crate) fn attach(&self) -> Result {
        let addr = self.status.lock().addr();
        self.hw.write64(REG_STATUS_ADDR_LO, addr)?;
        self.hw.write32(REG_MISC_VECTOR, MISC_VECTOR)
    }

    /// Stops the device for good before its memory goes (`remove`, or a
    /// failed probe): disabled, no status block address. A gone function
    /// fails fast; that is fine.
    pub(crate) fn detach(&self) {
        for qp in self.queues.iter() {
            let napi = qp.retry.napi.lock().take();
            drop(napi);
        }
        let _ = self.hw.write32(REG_CONTROL, 0);
        let _ = self.hw.write64(REG_STATUS_ADDR_LO, 0);
        // Flushes the writes: no status block is written after this.
        let _ = self.hw.read32(REG_STATUS);
    }

    /// Programs, enables and fills every queue pair for frames of `mtu`,
    /// then enables the device. Process context. On error the caller
    /// calls [`Vnic::halt`].
    fn start(&self, dev: &Device<Self>, mtu: u32) -> Result {
        let hw = &self.hw;
        let geometry = Geometry::for_mtu(mtu);
        for qp in self.queues.iter() {
            let napi = dev.napi(qp.index).ok_or(EINVAL)?.clone();
            let old = qp.retry.napi.lock().replace(napi);
            drop(old);
        }
        hw.write32(REG_CONTROL, 0)?;
        hw.write32(REG_MTU, mtu)?;
        for qp in self.queues.iter() {
            let q = u32::from(qp.index);
            let fifo = self.fifo_units.get(q as usize).copied().unwrap_or(0);
            let tx = Tx::new(&self.pdev, q, fifo)?;
            let mut rx = Rx::new(&self.pdev, q, geometry)?;
            if let Err(e) = self.enable_queue(q, &tx, &mut rx) {
                // Disabled (and flushed) before `tx` and `rx` are freed.
                let _ = hw.write32(queue_reg(q, Q_CONTROL), 0);
                let _ = hw.read32(REG_STATUS);
                return Err(e);
            }
            let old_tx = qp.tx.lock().replace(tx);
            let old_rx = qp.rx.lock().replace(rx);
            drop((old_tx, old_rx));
            hw.write32(queue_reg(q, Q_IRQ_ARM), 1)?;
        }
        // CONTROL.ENABLE with the filter, through the one path that writes
        // CONTROL while running (ordered under the filter's lock).
        {
            let mut f = self.filter.lock();
            f.running = true;
            f.dirty = true;
        }
        let mut tries = 0;
        loop {
            match self.flush_filter() {
                Ok(()) => break,
                Err(e) if e == EAGAIN && tries < OPEN_TRIES => {
                    tries += 1;
                    msleep(1);
                }
                Err(e) => return Err(e),
            }
        }
        let status = hw.read32(REG_STATUS)?;
        self.set_link(dev, status & STATUS_LINK_UP != 0);
        // A first status block, with the misc interrupt.
        hw.write32(REG_STATUS_REQUEST, 1)?;
        Ok(())
    }

    /// Programs queue pair `q` with the memory of `tx` and `rx`, enables
    /// it and posts every RX buffer. On error the caller disables it again
    /// before freeing that memory.
    fn enable_queue(&self, q: u32, tx: &Tx, rx: &mut Rx) -> Result {
        let hw = &self.hw;
        hw.write32(queue_reg(q, Q_CONTROL), 0)?;
        hw.write64(queue_reg(q, Q_TX_DONE_ADDR_LO), tx.done_addr())?;
        hw.write64(queue_reg(q, Q_RX_CQ_ADDR_LO), rx.cq_addr())?;
        hw.write32(queue_reg(q, Q_RX_RING_SIZE), rx.geometry().ring)?;
        hw.write32(queue_reg(q, Q_IRQ_VECTOR), q)?;
        hw.write32(queue_reg(q, Q_ITR_USECS), ITR_USECS)?;
        hw.write32(queue_reg(q, Q_ITR_FRAMES), ITR_FRAMES)?;
        hw.write32(queue_reg(q, Q_CONTROL), QCTRL_ENABLE)?;
        // Set-up, not the data path: this read is the check the
        // specification asks for.
        let qstatus = hw.read32(queue_reg(q, Q_STATUS))?;
        if qstatus & QSTATUS_ENABLED == 0 {
            hw.log_refusal(q, qstatus);
            return Err(EIO);
        }
        rx.post_all(hw)
    }

    /// Disables the device and every queue pair, then frees their memory.
    /// Process context. Errors (a gone function) are logged by [`Hw`] and
    /// do not stop the teardown.
    fn halt(&self) {
        self.filter.lock().running = false;
        let hw = &self.hw;
        let _ = hw.write32(REG_CONTROL, 0);
        for qp in self.queues.iter() {
            let _ = hw.write32(queue_reg(u32::from(qp.index), Q_CONTROL), 0);
        }
        // A read completes after the writes before it took effect, and
        // after the device's DMA writes made before them: nothing is
        // written into the memory freed below once it returns.
        let _ = hw.read32(REG_STATUS);
        for qp in self.queues.iter() {
            qp.take_state();
        }
    }

    /// Writes the receive filter and CONTROL if they changed while the
    /// device runs. Never sleeps. `EAGAIN`: the link is backlogged, still
    /// to do.
    fn flush_filter(&self) -> Result {
        let mut f = self.filter.lock();
        if !f.running || !f.dirty {
            return Ok(());
        }
        let mut hash = [0u8; 32];
        for (i, word) in f.hash.iter().enumerate() {
            if let Some(out) = hash.get_mut(4 * i..4 * i + 4) {
                out.copy_from_slice(&word.to_le_bytes());
            }
        }
        self.hw.post(REG_MC_HASH, &hash)?;
        self.hw
            .post(REG_CONTROL, &(CTRL_ENABLE | f.control).to_le_bytes())?;
        f.dirty = false;
        Ok(())
    }

    /// Follows the link state of the device.
    fn set_link(&self, dev: &Device<Self>, up: bool) {
        if up == dev.has_carrier() {
            return;
        }
        if up {
            dev.carrier_on();
            pr_info!("{}: {}: link up\n", self.hw.name(), dev.name());
        } else {
            dev.carrier_off();
            pr_info!("{}: {}: link down\n", self.hw.name(), dev.name());
        }
    }

    /// Takes a new status block if there is one: link, errors. Returns
    /// whether there was.
    fn take_status(&self, dev: &Device<Self>) -> bool {
        // The link is applied under the lock: NAPI and ethtool both take
        // blocks, and two in a row must not reach the carrier swapped.
        let mut status = self.status.lock();
        let Some(block) = status.refresh() else {
            return false;
        };
        if dev.is_up() {
            self.set_link(dev, block.status & STATUS_LINK_UP != 0);
        }
        drop(status);
        if block.causes & CAUSE_ERROR != 0 {
            kernel::pr_warn_ratelimited!(
                "{}: the device refused a write: {} at BAR0+{:#x} ({} so far)\n",
                self.hw.name(),
                error_name(block.last_error & 0xffff),
                block.last_error >> 16,
                block.prog_errors
            );
        }
        true
    }

    /// Transmit completions of `qp`: reads the done block, flushes a
    /// backlogged record, wakes the queue when there is room. Returns
    /// whether a post must be retried.
    fn reclaim(&self, dev: &Device<Self>, qp: &QueuePair) -> bool {
        let mut guard = qp.tx.lock();
        let Some(tx) = guard.as_mut() else {
            return false;
        };
        if let Err((done, tail, records)) = tx.refresh() {
            kernel::pr_warn_ratelimited!(
                "{}: queue pair {}: TX done block (units {}, records {}) ahead of what was sent (units {}, records {}), ignored\n",
                self.hw.name(),
                qp.index,
                done.units,
                done.records,
                tail,
                records
            );
        }
        let mut retry = false;
        if tx.is_pending() {
            if let Err(e) = tx.flush(&self.hw) {
                if e == EAGAIN {
                    bump(&qp.stats.tx_post_retry, 1);
                    retry = true;
                }
            }
        }
        // Under the lock: `start_xmit` stops the queue under it too, so a
        // stop is never missed.
        // Not while closing: the core stopped the queues then.
        if tx.can_wake() && dev.is_up() && dev.tx_queue_stopped(qp.index) == Some(true) {
            tx.want = None;
            dev.wake_tx_queue(qp.index);
        }
        retry
    }

    /// The ethtool values of the device counters, from the last block.
    fn device_values(&self) -> [u64; DEVICE_STATS.len()] {
        let status = self.status.lock();
        let block = status.last();
        let mut out = [0u64; DEVICE_STATS.len()];
        for (o, s) in out.iter_mut().zip(block.stats.iter()) {
            *o = *s;
        }
        if let Some(last) = out.last_mut() {
            *last = u64::from(block.prog_errors);
        }
        out
    }
}

impl net_device::Driver for Vnic {
    const NAME: &'static CStr = c_str!("pcieoe_vnic");

    fn open(&self, dev: &Device<Self>) -> Result {
        let r = self.start(dev, dev.mtu());
        if let Err(e) = r {
            pr_err!("{}: {}: open failed: {:?}\n", self.hw.name(), dev.name(), e);
            self.halt();
        }
        r
    }

    fn stop(&self, dev: &Device<Self>) {
        self.halt();
        dev.carrier_off();
    }

    fn start_xmit(&self, dev: &Device<Self>, skb: Skb, queue: u16) -> TxResult {
        let Some(qp) = self.queues.get(usize::from(queue)) else {
            return TxResult::Ok;
        };
        let len = skb.len() as u64;
        // The largest record of the MTU: the queue stops when the next one
        // might not fit.
        let max_units = 1 + units_for(dev.mtu().saturating_add(FRAME_OVERHEAD));
        let (sent, stopped, pending) = {
            let mut guard = qp.tx.lock();
            match guard.as_mut() {
                None => (Sent::Dropped, false, false),
                Some(tx) => {
                    let sent = tx.send(&self.hw, skb.data());
                    let stop = match sent {
                        Sent::Full | Sent::Backlogged => true,
                        Sent::Posted => tx.stop_if_short(max_units),
                        Sent::Dropped => false,
                    };
                    if stop {
                        // Under the lock, see `reclaim`.
                        dev.stop_tx_queue(queue);
                    }
                    (sent, stop, tx.is_pending())
                }
            }
        };
        if pending {
            bump(&qp.stats.tx_post_retry, 1);
            qp.retry_soon();
        }
        if stopped {
            // The poll wakes the queue; it may have run just before the
            // stop (and found nothing to do), so run it again.
            qp.schedule();
        }
        match sent {
            Sent::Posted | Sent::Backlogged => {
                bump(&qp.stats.tx_packets, 1);
                bump(&qp.stats.tx_bytes, len);
                skb.consume();
                TxResult::Ok
            }
            Sent::Full => {
                bump(&qp.stats.tx_busy, 1);
                TxResult::Busy(skb)
            }
            Sent::Dropped => {
                bump(&qp.stats.tx_dropped, 1);
                TxResult::Ok
            }
        }
    }

    fn poll(&self, dev: &Device<Self>, napi: &NapiPoll<'_>, budget: u32) -> u32 {
        let q = napi.queue();
        let Some(qp) = self.queues.get(usize::from(q)) else {
            return 0;
        };
        let mut retry = self.reclaim(dev, qp);
        if q == 0 {
            self.take_status(dev);
            if self.flush_filter() == Err(EAGAIN) {
                retry = true;
            }
        }
        let mut done = 0;
        let mut running = false;
        if budget > 0 {
            let mut guard = qp.rx.lock();
            if let Some(rx) = guard.as_mut() {
                running = true;
                let (n, backlogged) = rx.poll(&self.hw, napi, budget, &qp.stats);
                done = n;
                retry |= backlogged;
            }
        }
        if running && done < budget && napi.complete_done(done) {
            // Back to interrupts: one posted write; the device moderates.
            let arm = 1u32.to_le_bytes();
            if self.hw.post(queue_reg(u32::from(q), Q_IRQ_ARM), &arm) == Err(EAGAIN) {
                retry = true;
            }
        }
        if retry {
            qp.retry_soon();
        }
        done
    }

    fn change_mtu(&self, dev: &Device<Self>, new_mtu: u32) -> Result {
        if new_mtu > self.id.mtu_max {
            return Err(EINVAL);
        }
        if !dev.is_up() {
            // `open` sizes everything for the MTU it finds.
            return Ok(());
        }
        let current = self
            .queues
            .first()
            .and_then(|qp| qp.rx.lock().as_ref().map(|rx| rx.geometry()));
        if let Some(g) = current {
            if Geometry::for_mtu(new_mtu).buf_len <= g.buf_len {
                // The buffers hold the new frames: only the device's limit
                // changes.
                return self.hw.write32(REG_MTU, new_mtu);
            }
        }
        // Bigger buffers: restart the device with them.
        let old_mtu = dev.mtu();
        dev.stop_all_tx_queues();
        self.halt();
        let r = self.start(dev, new_mtu);
        let mut running = r.is_ok();
        if let Err(e) = r {
            pr_err!(
                "{}: {}: MTU {} failed ({:?}), back to {}\n",
                self.hw.name(),
                dev.name(),
                new_mtu,
                e,
                old_mtu
            );
            self.halt();
            running = self.start(dev, old_mtu).is_ok();
            if !running {
                pr_err!(
                    "{}: {}: restart failed: set the device down and up\n",
                    self.hw.name(),
                    dev.name()
                );
                self.halt();
                dev.carrier_off();
            }
        }
        // Stopped they stay if nothing runs: the stack queues, not drops.
        if running {
            for q in 0..self.pairs() {
                dev.wake_tx_queue(q);
            }
        }
        r
    }

    fn get_stats64(&self, _dev: &Device<Self>, stats: &mut Stats64) {
        let add = |sum: &mut u64, c: &AtomicU64| *sum = sum.wrapping_add(c.load(Ordering::Relaxed));
        for qp in self.queues.iter() {
            let s = &qp.stats;
            add(&mut stats.tx_packets, &s.tx_packets);
            add(&mut stats.tx_bytes, &s.tx_bytes);
            add(&mut stats.tx_dropped, &s.tx_dropped);
            add(&mut stats.rx_packets, &s.rx_packets);
            add(&mut stats.rx_bytes, &s.rx_bytes);
            add(&mut stats.rx_errors, &s.rx_bad);
            add(&mut stats.rx_dropped, &s.rx_dropped);
            add(&mut stats.multicast, &s.rx_multicast);
        }
    }

    fn set_rx_mode(&self, dev: &Device<Self>, mode: &RxMode<'_>) {
        let mut hash = [0u32; 8];
        for mac in mode.multicast() {
            let bit = usize::from(mc_hash(&mac));
            if let Some(word) = hash.get_mut(bit / 32) {
                *word |= 1 << (bit % 32);
            }
        }
        let mut control = 0;
        if mode.promisc() {
            control |= CTRL_PROMISC;
        }
        let no_filter = self.id.features & F_MC_FILTER == 0 && mode.multicast_count() > 0;
        if mode.allmulti() || no_filter {
            control |= CTRL_ALLMULTI;
        }
        {
            let mut f = self.filter.lock();
            f.hash = hash;
            f.control = control;
            f.dirty = true;
        }
        if self.flush_filter() == Err(EAGAIN) {
            // Queue 0's poll writes it (and retries until it can).
            if let Some(napi) = dev.napi(0) {
                napi.schedule();
            }
        }
    }

    fn drvinfo(&self, _dev: &Device<Self>, info: &mut DrvInfo<'_>) {
        let version = self.version.to_str().unwrap_or("?");
        info.set_version(version);
        info.set_fw_version(version);
    }

    fn stats_count(&self) -> usize {
        self.queues.len() * QUEUE_STATS.len() + DEVICE_STATS.len()
    }

    fn stats_strings(&self, _dev: &Device<Self>, names: &mut StatsNames<'_>) {
        for q in 0..self.queues.len() {
            for (dir, what) in QUEUE_STATS {
                names.push(fmt!("{dir}_q{q}_{what}"));
            }
        }
        for name in DEVICE_STATS {
            names.push(fmt!("{name}"));
        }
    }

    fn stats(&self, dev: &Device<Self>, values: &mut [u64]) {
        // A fresh block (without an interrupt), if it comes quickly; the
        // last one otherwise.
        if self.hw.write32(REG_STATUS_REQUEST, 0).is_ok() {
            for _ in 0..STATS_WAIT_MS {
                msleep(1);
                if self.take_status(dev) {
                    break;
                }
            }
        }
        let mut out = values.iter_mut();
        for qp in self.queues.iter() {
            // Values first: `zip` takes from its first iterator first.
            for (v, o) in qp.stats.values().into_iter().zip(out.by_ref()) {
                *o = v;
            }
        }
        for (v, o) in self.device_values().into_iter().zip(out) {
            *o = v;
        }
    }
}
