// SPDX-License-Identifier: GPL-2.0

//! The remote functions of one port, in the host's PCI tree.
//!
//! Each bound port owns a PCI domain (a root bus from [`RootBus`]) whose
//! devices are the functions the DI assigned to this host: device `dd` on
//! bus 0 is what the DI calls device `dd` of this host (the DI translates
//! it to its own function).
//!
//! # Why configuration reads come from a shadow
//!
//! Linux calls a bus's configuration accessors in atomic context: reads of
//! `/sys/bus/pci/devices/*/config` (what `lspci` does) hold `pci_lock` with
//! interrupts disabled. An accessor there cannot wait for a completion
//! from across Ethernet: on this CPU the receive softirq cannot even run.
//! So each remote function has a *shadow* of its configuration space:
//! before the function is added to the tree, the worker fetches all 4 KiB
//! with real CfgRd0 TLPs and its write masks with pcieoe messages (see
//! [`Fetch`]). An accessor then reads the shadow. A configuration write is
//! applied to the shadow with the same code the DI runs
//! ([`ConfigSpace::write`]), so a BAR sizing write reads back the size
//! mask at once, and it is sent to the DI as a CfgWr0 TLP (queued here,
//! sent by the worker, since the accessor cannot take the session's
//! bottom-half lock with interrupts disabled). Both copies go through the
//! same writes in the same order and stay identical; the DI's counters and
//! `functions` file show its side. A write the DI refuses (its completion
//! is not successful) is counted and logged. What a device changes on its
//! own (status bits) will travel as messages when functions have
//! behaviour (DMA and interrupts).
//!
//! # Hot-plug
//!
//! The DI sends a Presence message when the session opens and whenever the
//! host's assignment changes. The worker compares it with the devices in
//! the tree: it removes those no longer present (drivers unbound first, by
//! the PCI core) and fetches and adds the new ones. When the session goes
//! down, the devices read as all-ones at once (a surprise removal, as a
//! real master abort would look) and the worker removes them all; when the
//! session returns with a new epoch, the DI's Presence brings them back.
//!
//! # Contexts and locks
//!
//! * `ev` (bottom-half spinlock): the session's receive path (softirq)
//!   and process context (worker, debugfs). Holds what arrives from the DI.
//! * `shadows` (spinlock): the configuration accessors (any process
//!   context, possibly with interrupts disabled) and the worker; never
//!   taken in a softirq or with `ev` held.
//! * `bus`, `port`, `mmio` (mutexes): process context only. Order:
//!   `mmio`, then `port`, then `shadows` or `ev` (one at a time).
//! * `port_tx` (bottom-half spinlock): the non-sleeping memory writes
//!   ([`Remote::post_bar`]); the session lock is taken under it, `ev`
//!   before or after it, never around it.
//! * The IOMMU's tables (interrupt-disabling spinlocks, in the kernel
//!   crate) are taken under `ev` by the receive path; nothing is taken
//!   under them.
//! * Work items (the worker, the interrupt work) are queued with `ev` or
//!   `shadows` held, the locks under which [`Remote::shutdown`] takes
//!   them away: once it has, nothing can queue them, and it waits for
//!   those queued before.
//!
//! The worker is the only one that adds or removes devices.

use core::{
    fmt::{self, Write as _},
    sync::atomic::{AtomicBool, Ordering},
};

use kernel::{
    debugfs::{SeqFile, Show},
    impl_has_work, new_condvar, new_mutex, new_spinlock, new_spinlock_bh, new_work,
    pci_host::{ConfigOps, RootBus},
    pr_warn_ratelimited,
    prelude::*,
    spinlock_bh::SpinLockBh,
    sync::{Arc, CondVar, CondVarTimeoutResult, Mutex, SpinLock},
    time::{msecs_to_jiffies, Ktime},
    work_ext,
    workqueue::{self, Work, WorkItem},
};

use crate::pcieoe::{
    cfgspace::ConfigSpace,
    fabric::{Fetch, FetchState, Msg, DEVICES},
    frame::Mac,
    tlp::{self, Bdf, CompletionStatus, Kind, Tag, Tlp},
};
use crate::port::{first_tlp, queue_tlp, Outbox, PortHandle, Service};

mod dma;
mod irq;
mod mmio;

/// Address space for the BARs of one port's functions.
const WINDOW: u64 = 256 << 20;
/// A fetch that makes no progress for this long fails.
const FETCH_STALL_MS: u32 = 2000;
/// A round-trip probe waits this long for its completion.
const PROBE_WAIT_MS: u32 = 1000;
/// Tags of configuration writes (the fetch uses 0..=127).
const WRITE_TAGS: core::ops::RangeInclusive<u16> = 128..=191;
/// Tags of round-trip probes.
const PROBE_TAG_BASE: u16 = 192;
/// Largest TLP the host emits.
const TLP_BUF: usize = 64;
/// The host's requester ID: its root complex.
const REQUESTER: Bdf = Bdf::from_raw(0);

fn now_ns() -> u64 {
    u64::try_from(Ktime::ktime_get().to_ns()).unwrap_or(0)
}

fn bdf(dev: u8) -> Bdf {
    Bdf::new(0, dev, 0).unwrap_or(REQUESTER)
}

/// Round trips timed one after the other (the `*_rtt` debugfs files).
#[derive(Clone, Copy, Default)]
struct Timings {
    ok: u16,
    failed: u16,
    min: u64,
    sum: u64,
    max: u64,
}

impl Timings {
    /// Counts one attempt: its time in ns if it succeeded.
    fn add(&mut self, ns: Option<u64>) {
        match ns {
            Some(t) => {
                self.min = if self.ok == 0 { t } else { self.min.min(t) };
                self.max = self.max.max(t);
                self.sum = self.sum.saturating_add(t);
                self.ok += 1;
            }
            None => self.failed += 1,
        }
    }

    fn mean(&self) -> u64 {
        self.sum.checked_div(u64::from(self.ok)).unwrap_or(0)
    }

    /// Writes a `*_rtt` file: the counts (the failures under `failed`),
    /// then min, mean and max in ns; `None` means nothing to time.
    fn show(t: Option<Timings>, failed: &str, f: &mut SeqFile<'_>) -> fmt::Result {
        let Some(t) = t else {
            return writeln!(f, "no remote function (or no session)");
        };
        writeln!(f, "reads: {}\n{}: {}", t.ok, failed, t.failed)?;
        writeln!(
            f,
            "min_ns: {}\nmean_ns: {}\nmax_ns: {}",
            t.min,
            t.mean(),
            t.max
        )
    }
}

/// Per device, per BAR: `[bus address, size]`.
type BarCache = [[[u64; 2]; 6]; DEVICES];

/// One remote function's shadow.
struct Shadow {
    cs: KBox<ConfigSpace>,
    /// The session epoch it was fetched in.
    epoch: u32,
}

/// What the configuration accessors and the worker share.
struct Shadows {
    dev: [Option<Shadow>; DEVICES],
    /// CfgWr0 TLPs waiting for the worker ([`queue_tlp`] records: the
    /// shadow's epoch, 4 bytes, then the TLP).
    writes: KVec<u8>,
    next_write_tag: u16,
    /// Writes that could not be queued (no memory).
    writes_lost: u64,
    /// The worker, while the port is up (queued by a write).
    worker: Option<Arc<Remote>>,
}

/// A fetch in progress, filled by the receive path.
struct Fetching {
    fetch: Fetch,
    cs: KBox<ConfigSpace>,
    /// Completions and messages it has consumed.
    progress: u64,
}

/// A round-trip probe in flight.
#[derive(Clone, Copy)]
struct Probe {
    tag: u16,
    answered: Option<CompletionStatus>,
}

/// Counters of the configuration and hot-plug paths.
#[derive(Clone, Copy, Default)]
struct Counters {
    presence_rx: u64,
    fetches: u64,
    fetch_failures: u64,
    added: u64,
    removed: u64,
    surprise_removals: u64,
    cfg_writes_tx: u64,
    /// Writes queued in a session that ended before they were sent.
    cfg_writes_stale: u64,
    cfg_write_errors: u64,
    unexpected_tlps: u64,
}

/// What arrives from the DI.
struct Events {
    open: bool,
    epoch: u32,
    peer: Option<Mac>,
    /// The DI's last Presence (0 while closed).
    desired: u32,
    /// Bumped by every Presence and Down, so the worker knows to look.
    generation: u64,
    fetching: Option<Fetching>,
    probe: Option<Probe>,
    /// Configuration writes sent and not completed: bit `tag - 128` of
    /// [`WRITE_TAGS`].
    writes_out: u64,
    counters: Counters,
    /// The worker, while the port is up (queued by the receive path).
    worker: Option<Arc<Remote>>,
    /// Set by [`Remote::shutdown`]: no fetch starts any more.
    stopping: bool,
    /// The memory read in progress.
    mmio: Option<mmio::MmioRead>,
    mmio_counters: mmio::MmioCounters,
    /// MSI-X vectors set up per device ([`u8::MAX`] while being set up).
    vectors: [u8; DEVICES],
    irq_counters: irq::IrqCounters,
    /// The bus's translation tables, for the functions' DMA.
    dma: Option<kernel::pci_host::DmaHandle>,
    /// Staging for one DMA read ([`dma::READ_MAX`] bytes).
    dma_buf: KVec<u8>,
    /// Each device's Max_Payload_Size (bytes), as its shadow says.
    mps: [u16; DEVICES],
    /// Each device's memory BARs (`[bus address, size]`, size 0 for none),
    /// as its shadow says, for the memory path that cannot take `shadows`
    /// ([`Remote::post_bar`]). Boxed: `Events` is built on the stack.
    bars: KBox<BarCache>,
    dma_counters: dma::DmaCounters,
}

/// One port's remote functions.
#[pin_data]
pub(crate) struct Remote {
    #[pin]
    ev: SpinLockBh<Events>,
    /// Notified when a fetch or a probe progresses, or the session changes.
    #[pin]
    cv: CondVar,
    #[pin]
    shadows: SpinLock<Shadows>,
    /// False from a session's end until the worker has removed its devices:
    /// configuration reads then see all-ones, as after a surprise removal.
    online: AtomicBool,
    #[pin]
    bus: Mutex<Option<RootBus<Remote>>>,
    #[pin]
    port: Mutex<Option<PortHandle>>,
    /// The same port, for [`Remote::post_bar`], which must not sleep.
    #[pin]
    port_tx: SpinLockBh<Option<PortHandle>>,
    /// Serialises memory reads; the next block of their tags.
    #[pin]
    mmio: Mutex<u16>,
    /// The functions' MSI-X vectors as Linux interrupts.
    domain: kernel::irq::Domain,
    /// Interrupts the receive path accepted, for `irq_work` to fire.
    pending: irq::Pending,
    #[pin]
    work: Work<Remote>,
    #[pin]
    irq_work: Work<Remote, 1>,
}

impl_has_work! {
    impl HasWork<Self> for Remote { self.work }
    impl HasWork<Self, 1> for Remote { self.irq_work }
}

impl Remote {
    /// A port's remote functions, with an empty root bus in a new domain.
    pub(crate) fn new() -> Result<Arc<Self>> {
        let domain = kernel::irq::Domain::new(irq::VECTORS)?;
        let dma_buf = KVec::from_elem(0u8, dma::READ_MAX, GFP_KERNEL)?;
        let bars = KBox::init(kernel::init::zeroed(), GFP_KERNEL)?;
        let this = Arc::pin_init(
            pin_init!(Remote {
                ev <- new_spinlock_bh!(Events {
                    open: false,
                    epoch: 0,
                    peer: None,
                    desired: 0,
                    generation: 0,
                    fetching: None,
                    probe: None,
                    writes_out: 0,
                    counters: Counters::default(),
                    worker: None,
                    stopping: false,
                    mmio: None,
                    mmio_counters: mmio::MmioCounters::default(),
                    vectors: [0; DEVICES],
                    irq_counters: irq::IrqCounters::default(),
                    dma: None,
                    dma_buf,
                    mps: [crate::pcieoe::dma::DEFAULT_MAX_PAYLOAD as u16; DEVICES],
                    bars,
                    dma_counters: dma::DmaCounters::default(),
                }, "pcieoe_host_ev"),
                cv <- new_condvar!("pcieoe_host_cv"),
                shadows <- new_spinlock!(Shadows {
                    dev: [const { None }; DEVICES],
                    writes: KVec::new(),
                    next_write_tag: *WRITE_TAGS.start(),
                    writes_lost: 0,
                    worker: None,
                }, "pcieoe_host_shadows"),
                online: AtomicBool::new(false),
                bus <- new_mutex!(None),
                port <- new_mutex!(None),
                port_tx <- new_spinlock_bh!(None, "pcieoe_host_port_tx"),
                mmio <- new_mutex!(0),
                domain,
                pending: irq::Pending::new(),
                work <- new_work!("pcieoe_host_remote"),
                irq_work <- new_work!("pcieoe_host_irq"),
            }),
            GFP_KERNEL,
        )?;
        let bus = RootBus::new(this.clone(), WINDOW)?;
        pr_info!("PCI domain {:04x} created (empty)\n", bus.domain());
        this.ev.lock().dma = Some(bus.dma_handle());
        *this.bus.lock() = Some(bus);
        this.ev.lock().worker = Some(this.clone());
        this.shadows.lock().worker = Some(this.clone());
        Ok(this)
    }

    /// The domain number, while the bus exists.
    pub(crate) fn domain(&self) -> Option<u32> {
        self.bus.lock().as_ref().map(|b| b.domain())
    }

    /// Removes the root bus with its devices, forgets the worker and waits
    /// for it. Called once, in process context, before the port unbinds
    /// (the removal's configuration writes may still go out).
    pub(crate) fn shutdown(&self) {
        self.ev.lock().stopping = true;
        self.cv.notify_all();
        let bus = self.bus.lock().take();
        if let Some(bus) = bus {
            let domain = bus.domain();
            drop(bus);
            pr_info!("PCI domain {:04x} removed\n", domain);
        }
        self.flush_writes();
        let w1 = self.ev.lock().worker.take();
        let w2 = self.shadows.lock().worker.take();
        drop((w1, w2));
        work_ext::flush::<Self, 0>(self);
        work_ext::flush::<Self, 1>(self);
    }

    /// Queues the worker. Callers hold the lock that guards `worker` (`ev`
    /// or `shadows`), so that [`Remote::shutdown`], which takes it under
    /// that lock and then waits for the work, cannot miss a late one.
    fn kick(worker: Option<Arc<Remote>>) {
        if let Some(w) = worker {
            // Already queued: that run will see this change too.
            let _ = workqueue::system().enqueue::<Arc<Remote>, 0>(w);
        }
    }

    /// Sends the queued configuration writes, in order, ahead of anything
    /// sent after this returns (memory requests call it first: a BAR
    /// access must not overtake the write that enabled the BAR). Writes
    /// queued in another session than the open one are dropped: their
    /// device is gone or about to be fetched anew.
    fn flush_writes(&self) {
        // The port first: two flushers send their batches in the order
        // they took them.
        let port = self.port.lock();
        let writes = core::mem::take(&mut self.shadows.lock().writes);
        if writes.is_empty() {
            return;
        }
        // The tags go out before their completions can come back.
        let mut tags = 0u64;
        let mut rest = &writes[..];
        while let Some((record, tail)) = first_tlp(rest) {
            rest = tail;
            let tlp = record.get(4..).unwrap_or(&[]);
            if let Ok(Tlp {
                kind: Kind::CfgWrite(c),
                ..
            }) = Tlp::decode(tlp)
            {
                if let Some(k) = c.tag.get().checked_sub(*WRITE_TAGS.start()) {
                    tags |= 1u64.checked_shl(u32::from(k)).unwrap_or(0);
                }
            }
        }
        let (open, epoch) = {
            let mut ev = self.ev.lock();
            ev.writes_out |= tags;
            (ev.open, ev.epoch)
        };
        let mut rest = &writes[..];
        let (mut sent, mut stale) = (0u64, 0u64);
        while let Some((record, tail)) = first_tlp(rest) {
            rest = tail;
            let Some((e, tlp)) = record.split_first_chunk::<4>() else {
                continue;
            };
            if !open || u32::from_ne_bytes(*e) != epoch {
                stale += 1;
                continue;
            }
            if let Some(port) = port.as_ref() {
                if port.send(tlp).is_ok() {
                    sent += 1;
                }
            }
        }
        drop(port);
        let mut ev = self.ev.lock();
        ev.counters.cfg_writes_tx = ev.counters.cfg_writes_tx.saturating_add(sent);
        ev.counters.cfg_writes_stale = ev.counters.cfg_writes_stale.saturating_add(stale);
    }

    /// Fetches device `dev`'s shadow in session `epoch`; `None` when it is
    /// absent, the fetch failed or the session changed.
    fn fetch(&self, dev: u8, epoch: u32) -> Option<KBox<ConfigSpace>> {
        let cs = KBox::init(kernel::init::zeroed(), GFP_KERNEL).ok()?;
        let mut ev = self.ev.lock();
        ev.counters.fetches += 1;
        ev.fetching = Some(Fetching {
            fetch: Fetch::new(dev, REQUESTER),
            cs,
            progress: 0,
        });
        let mut last_progress = 0;
        let mut stalled_since = now_ns();
        let outcome = loop {
            if ev.stopping || !ev.open || ev.epoch != epoch {
                break Err("session changed");
            }
            let Some(f) = ev.fetching.as_mut() else {
                break Err("fetch lost");
            };
            match f.fetch.state() {
                FetchState::Done => break Ok(()),
                FetchState::Absent => break Err("no such device"),
                FetchState::Failed(_) => break Err("bad completion"),
                FetchState::InProgress => {}
            }
            let mut batch = KVec::new();
            let mut buf = [0u8; TLP_BUF * 4];
            while let Some(n) = f.fetch.next_request(&mut buf) {
                if queue_tlp(&mut batch, buf.get(..n).unwrap_or(&[])).is_err() {
                    break;
                }
            }
            if f.progress != last_progress {
                last_progress = f.progress;
                stalled_since = now_ns();
            } else if now_ns().saturating_sub(stalled_since) > u64::from(FETCH_STALL_MS) * 1_000_000
            {
                break Err("timed out");
            }
            if !batch.is_empty() {
                drop(ev);
                self.send_batch(&batch);
                ev = self.ev.lock();
                continue;
            }
            let _ = self
                .cv
                .wait_interruptible_timeout(&mut ev, msecs_to_jiffies(100));
        };
        let fetched = ev.fetching.take();
        match outcome {
            Ok(()) => fetched.map(|f| f.cs),
            Err(why) => {
                if why != "no such device" {
                    ev.counters.fetch_failures += 1;
                }
                drop(ev);
                pr_warn!(
                    "device 00:{:02x}.0: configuration fetch failed: {}\n",
                    dev,
                    why
                );
                None
            }
        }
    }

    fn send_batch(&self, batch: &[u8]) {
        let port = self.port.lock();
        let Some(port) = port.as_ref() else {
            return;
        };
        let mut rest = batch;
        while let Some((tlp, tail)) = first_tlp(rest) {
            let _ = port.send(tlp);
            rest = tail;
        }
    }

    /// One pass of the worker: writes out, departed devices removed, new
    /// ones fetched and added. Returns whether anything new arrived
    /// meanwhile.
    fn reconcile(&self) -> bool {
        self.flush_writes();
        self.refresh_cache();
        let (generation, open, epoch, desired, stopping) = {
            let ev = self.ev.lock();
            (ev.generation, ev.open, ev.epoch, ev.desired, ev.stopping)
        };
        if stopping {
            return false;
        }
        for dev in 0..DEVICES as u8 {
            let stale = {
                let sh = self.shadows.lock();
                sh.dev
                    .get(usize::from(dev))
                    .and_then(Option::as_ref)
                    .map(|s| !open || s.epoch != epoch || desired & (1 << dev) == 0)
            };
            if stale == Some(true) {
                self.remove(dev, !open);
            }
        }
        if open {
            self.online.store(true, Ordering::Release);
        }
        for dev in 0..DEVICES as u8 {
            let have = self
                .shadows
                .lock()
                .dev
                .get(usize::from(dev))
                .is_some_and(Option::is_some);
            if !open || have || desired & (1 << dev) == 0 {
                continue;
            }
            if let Some(cs) = self.fetch(dev, epoch) {
                self.add(dev, cs, epoch);
            }
        }
        // Not `shadows` under `ev`: a softirq taking `ev` could interrupt a
        // holder of `shadows` on another CPU (see "Contexts and locks").
        let changed = self.ev.lock().generation != generation;
        changed || !self.shadows.lock().writes.is_empty()
    }

    /// Copies each device's Max_Payload_Size and BARs from its shadow to
    /// where the receive path and [`Remote::post_bar`] (which cannot take
    /// `shadows`) find them.
    fn refresh_cache(&self) {
        let mut mps = [crate::pcieoe::dma::DEFAULT_MAX_PAYLOAD as u16; DEVICES];
        let mut bars: KBox<BarCache> = match KBox::init(kernel::init::zeroed(), GFP_KERNEL) {
            Ok(b) => b,
            // Keep the old cache; the next pass tries again.
            Err(_) => return,
        };
        {
            let sh = self.shadows.lock();
            for ((m, b), s) in mps.iter_mut().zip(bars.iter_mut()).zip(sh.dev.iter()) {
                if let Some(s) = s {
                    let cfg = crate::pcieoe::dma::DmaConfig::from_config_space(REQUESTER, &s.cs);
                    *m = u16::try_from(cfg.max_payload).unwrap_or(u16::MAX);
                    for (i, w) in (0u8..).zip(b.iter_mut()) {
                        *w = mmio::bar_window(&s.cs, i).map_or([0, 0], |(a, n)| [a, n]);
                    }
                }
            }
        }
        let mut ev = self.ev.lock();
        ev.mps = mps;
        ev.bars = bars;
    }

    fn remove(&self, dev: u8, surprise: bool) {
        let domain = self.domain().unwrap_or(0);
        if let Some(bus) = self.bus.lock().as_ref() {
            bus.remove_slot(dev << 3);
        }
        if let Some(slot) = self.shadows.lock().dev.get_mut(usize::from(dev)) {
            *slot = None;
        }
        let mut ev = self.ev.lock();
        // Its driver freed its vectors when it was unbound; should it
        // not have, the device's MSIs are refused from now on.
        if let Some(n) = ev.vectors.get_mut(usize::from(dev)) {
            *n = 0;
        }
        ev.counters.removed += 1;
        if surprise {
            ev.counters.surprise_removals += 1;
        }
        drop(ev);
        pr_info!(
            "{:04x}:00:{:02x}.0: removed{}\n",
            domain,
            dev,
            if surprise {
                " (surprise: session down)"
            } else {
                ""
            }
        );
    }

    fn add(&self, dev: u8, cs: KBox<ConfigSpace>, epoch: u32) {
        let ids = cs.read(0, 4).unwrap_or(u32::MAX);
        if let Some(slot) = self.shadows.lock().dev.get_mut(usize::from(dev)) {
            *slot = Some(Shadow { cs, epoch });
        }
        let bus = self.bus.lock();
        let Some(bus) = bus.as_ref() else {
            return;
        };
        // The BAR windows reach the posted-write path before a loaded
        // driver probes the function and posts to it.
        match bus.scan_slot_with(dev << 3, || self.refresh_cache()) {
            Ok(n) if n > 0 => {
                self.ev.lock().counters.added += 1;
                pr_info!(
                    "{:04x}:00:{:02x}.0: added [{:04x}:{:04x}]\n",
                    bus.domain(),
                    dev,
                    ids & 0xffff,
                    ids >> 16
                );
            }
            Ok(_) => pr_warn!(
                "{:04x}:00:{:02x}.0: scan found nothing\n",
                bus.domain(),
                dev
            ),
            Err(e) => pr_warn!(
                "{:04x}:00:{:02x}.0: scan failed: {:?}\n",
                bus.domain(),
                dev,
                e
            ),
        }
    }

    /// The lowest device number with (`present`) or without a shadow.
    fn first_device(&self, present: bool) -> Option<u8> {
        let sh = self.shadows.lock();
        (0..DEVICES as u8)
            .find(|&d| sh.dev.get(usize::from(d)).is_some_and(Option::is_some) == present)
    }

    /// Sends one configuration read of register 0 of device `dev` across
    /// the fabric and waits for its completion: (status, round trip in
    /// ns); `None` status after [`PROBE_WAIT_MS`]. Process context.
    fn probe(&self, dev: u8, tag: u16) -> Option<(Option<CompletionStatus>, u64)> {
        let mut buf = [0u8; TLP_BUF];
        let len = Tlp::cfg_read(REQUESTER, Tag::new(tag)?, bdf(dev), 0, 0xf)
            .emit(&mut buf)
            .ok()?;
        self.ev.lock().probe = Some(Probe {
            tag,
            answered: None,
        });
        let start = now_ns();
        {
            let port = self.port.lock();
            port.as_ref()?.send(buf.get(..len)?).ok()?;
        }
        let mut ev = self.ev.lock();
        let deadline = start + u64::from(PROBE_WAIT_MS) * 1_000_000;
        while ev.probe.is_some_and(|p| p.answered.is_none()) && now_ns() < deadline {
            if let CondVarTimeoutResult::Signal { .. } = self
                .cv
                .wait_interruptible_timeout(&mut ev, msecs_to_jiffies(10))
            {
                // A pending signal ends every wait at once: sleep instead.
                drop(ev);
                kernel::delay::msleep(1);
                ev = self.ev.lock();
            }
        }
        let answered = ev.probe.take().and_then(|p| p.answered);
        drop(ev);
        Some((answered, now_ns().saturating_sub(start)))
    }

    /// Times `n` configuration reads (one at a time) of the first remote
    /// function's register 0.
    fn probe_rtt(&self, n: u16) -> Option<Timings> {
        let dev = self.first_device(true)?;
        let mut t = Timings::default();
        for i in 0..n {
            let (answered, rtt) = self.probe(dev, PROBE_TAG_BASE + (i % 64))?;
            t.add((answered == Some(CompletionStatus::Success)).then_some(rtt));
        }
        Some(t)
    }

    /// The receive path's part (softirq, under the session lock).
    fn receive(&self, bytes: &[u8], out: &mut Outbox) {
        let Ok(tlp) = Tlp::decode(bytes) else {
            self.ev.lock().counters.unexpected_tlps += 1;
            pr_warn_ratelimited!("undecodable TLP from the DI dropped\n");
            return;
        };
        let mut ev = self.ev.lock();
        if Self::mmio_receive(&mut ev, &tlp) {
            self.cv.notify_all();
            return;
        }
        if let Some(f) = ev.fetching.as_mut() {
            let Fetching {
                fetch,
                cs,
                progress,
            } = f;
            if fetch.receive(&tlp, cs) {
                *progress += 1;
                self.cv.notify_all();
                return;
            }
        }
        match tlp.kind {
            Kind::Completion(c) => {
                let tag = c.tag.get();
                if WRITE_TAGS.contains(&tag) {
                    let bit = 1u64 << (tag - WRITE_TAGS.start());
                    if ev.writes_out & bit == 0 {
                        ev.counters.unexpected_tlps += 1;
                        pr_warn_ratelimited!(
                            "completion with tag {} from {}: no configuration write outstanding\n",
                            tag,
                            c.completer
                        );
                        return;
                    }
                    ev.writes_out &= !bit;
                    if c.status != CompletionStatus::Success {
                        ev.counters.cfg_write_errors += 1;
                        pr_warn_ratelimited!(
                            "configuration write to {} refused: {:?}\n",
                            c.completer,
                            c.status
                        );
                    }
                    return;
                }
                if let Some(p) = ev.probe.as_mut() {
                    if p.tag == tag && p.answered.is_none() {
                        p.answered = Some(c.status);
                        self.cv.notify_all();
                        return;
                    }
                }
                ev.counters.unexpected_tlps += 1;
            }
            Kind::Message(_) => match Msg::parse(&tlp) {
                Some(Ok(Msg::Presence { devices })) => {
                    ev.counters.presence_rx += 1;
                    ev.desired = devices;
                    ev.generation += 1;
                    Self::kick(ev.worker.clone());
                }
                Some(Err(e)) => {
                    ev.counters.unexpected_tlps += 1;
                    pr_warn_ratelimited!("malformed pcieoe message: {:?}\n", e);
                }
                _ => ev.counters.unexpected_tlps += 1,
            },
            Kind::MemWrite(r) if r.address == irq::MSI_ADDRESS => {
                let worker = self.msi_receive(&mut ev, &tlp, &r);
                Self::kick_irqs(worker);
            }
            Kind::MemRead(r) => dma::receive(&mut ev, &tlp, &r, false, out),
            Kind::MemWrite(r) => dma::receive(&mut ev, &tlp, &r, true, out),
            _ => {
                ev.counters.unexpected_tlps += 1;
                pr_warn_ratelimited!("{} from the DI dropped: not served\n", tlp.name());
            }
        }
    }
}

impl WorkItem for Remote {
    type Pointer = Arc<Remote>;

    fn run(this: Arc<Remote>) {
        while this.reconcile() {}
    }
}

impl ConfigOps for Remote {
    fn read(&self, bus: u8, devfn: u8, offset: u16, size: usize) -> Option<u32> {
        if bus != 0 || devfn & 7 != 0 || !self.online.load(Ordering::Acquire) {
            return None;
        }
        let sh = self.shadows.lock();
        let shadow = sh.dev.get(usize::from(devfn >> 3))?.as_ref()?;
        shadow.cs.read(offset, size).ok()
    }

    fn write(&self, bus: u8, devfn: u8, offset: u16, size: usize, value: u32) -> bool {
        if bus != 0 || devfn & 7 != 0 || !self.online.load(Ordering::Acquire) {
            return false;
        }
        let dev = devfn >> 3;
        let mut sh = self.shadows.lock();
        let Some(shadow) = sh.dev.get_mut(usize::from(dev)).and_then(Option::as_mut) else {
            return false;
        };
        if shadow.cs.write(offset, size, value).is_err() {
            return true;
        }
        let shadow_epoch = shadow.epoch;
        let Some(be) = tlp::access_byte_enables(u64::from(offset), size) else {
            return true;
        };
        let data = (value << (8 * u32::from(offset & 3))).to_le_bytes();
        let tag = sh.next_write_tag;
        sh.next_write_tag = if tag >= *WRITE_TAGS.end() {
            *WRITE_TAGS.start()
        } else {
            tag + 1
        };
        let mut buf = [0u8; 4 + TLP_BUF];
        let (e, tlp_buf) = buf.split_at_mut(4);
        e.copy_from_slice(&shadow_epoch.to_ne_bytes());
        let emitted = Tag::new(tag).and_then(|t| {
            Tlp::cfg_write(REQUESTER, t, bdf(dev), offset / 4, be, &data)
                .emit(tlp_buf)
                .ok()
        });
        let queued = emitted.and_then(|n| queue_tlp(&mut sh.writes, buf.get(..4 + n)?).ok());
        if queued.is_none() {
            sh.writes_lost += 1;
        }
        Self::kick(sh.worker.clone());
        true
    }

    fn mem_read(&self, devfn: u8, bar: u8, offset: u64, buf: &mut [u8]) -> Result {
        self.read_bar(devfn, bar, offset, buf)
    }

    fn mem_write(&self, devfn: u8, bar: u8, offset: u64, data: &[u8]) -> Result {
        self.write_bar(devfn, bar, offset, data)
    }

    fn mem_post(&self, devfn: u8, bar: u8, offset: u64, data: &[u8]) -> Result {
        self.post_bar(devfn, bar, offset, data)
    }

    fn irq_alloc(&self, devfn: u8, count: u32) -> Result<KVec<u32>> {
        self.alloc_vectors(devfn, count)
    }

    fn irq_free(&self, devfn: u8) {
        self.free_vectors(devfn)
    }
}

/// The session's TLPs and events for this port's functions.
pub(crate) struct Link(pub(crate) Arc<Remote>);

impl Service for Link {
    fn attach(&self, port: PortHandle) {
        *self.0.port_tx.lock() = Some(port.clone());
        *self.0.port.lock() = Some(port);
    }

    fn detach(&self) {
        let port = self.0.port.lock().take();
        let port_tx = self.0.port_tx.lock().take();
        drop((port, port_tx));
    }

    fn opened(&self, peer: Mac, epoch: u32, _out: &mut Outbox) {
        let mut ev = self.0.ev.lock();
        ev.open = true;
        ev.writes_out = 0;
        ev.epoch = epoch;
        ev.peer = Some(peer);
        ev.desired = 0;
        ev.generation += 1;
        self.0.cv.notify_all();
    }

    fn down(&self) {
        // Outstanding configuration requests are lost with the session;
        // the devices read all-ones from now on until they are removed.
        self.0.online.store(false, Ordering::Release);
        let mut ev = self.0.ev.lock();
        ev.open = false;
        ev.desired = 0;
        ev.generation += 1;
        self.0.cv.notify_all();
        Remote::kick(ev.worker.clone());
    }

    fn tlp(&self, _peer: Mac, tlp: &[u8], out: &mut Outbox) {
        self.0.receive(tlp, out);
    }
}

/// `/sys/kernel/debug/pcieoe_host/<ifname>/pci`: the domain, the remote
/// functions and the counters of this port.
pub(crate) struct PciInfo(pub(crate) Arc<Remote>);

impl Show for PciInfo {
    fn show(&self, f: &mut SeqFile<'_>) -> fmt::Result {
        let r = &*self.0;
        match r.domain() {
            Some(d) => writeln!(f, "domain: {:04x}", d)?,
            None => writeln!(f, "domain: none")?,
        }
        let (c, desired, open) = {
            let ev = r.ev.lock();
            (ev.counters, ev.desired, ev.open)
        };
        let (present, writes_lost) = {
            let sh = r.shadows.lock();
            let bits = (0..DEVICES)
                .filter(|&d| sh.dev.get(d).is_some_and(Option::is_some))
                .fold(0u32, |b, d| b | (1 << d));
            (bits, sh.writes_lost)
        };
        writeln!(f, "session_open: {}", u8::from(open))?;
        writeln!(f, "online: {}", u8::from(r.online.load(Ordering::Acquire)))?;
        writeln!(f, "assigned: {:#010x}", desired)?;
        writeln!(f, "present: {:#010x}", present)?;
        writeln!(f, "presence_rx: {}", c.presence_rx)?;
        writeln!(f, "fetches: {}", c.fetches)?;
        writeln!(f, "fetch_failures: {}", c.fetch_failures)?;
        writeln!(f, "added: {}", c.added)?;
        writeln!(f, "removed: {}", c.removed)?;
        writeln!(f, "surprise_removals: {}", c.surprise_removals)?;
        writeln!(f, "cfg_writes_tx: {}", c.cfg_writes_tx)?;
        writeln!(f, "cfg_writes_stale: {}", c.cfg_writes_stale)?;
        writeln!(f, "cfg_write_errors: {}", c.cfg_write_errors)?;
        writeln!(f, "cfg_writes_lost: {}", writes_lost)?;
        writeln!(f, "unexpected_tlps: {}", c.unexpected_tlps)?;
        let (m, i) = {
            let ev = self.0.ev.lock();
            (ev.mmio_counters, ev.irq_counters)
        };
        let d = self.0.ev.lock().dma_counters;
        writeln!(f, "dma_reads: {}", d.reads)?;
        writeln!(f, "dma_read_bytes: {}", d.read_bytes)?;
        writeln!(f, "dma_completions: {}", d.completions)?;
        writeln!(f, "dma_writes: {}", d.writes)?;
        writeln!(f, "dma_write_bytes: {}", d.write_bytes)?;
        writeln!(f, "dma_refused_reads: {}", d.refused_reads)?;
        writeln!(f, "dma_refused_writes: {}", d.refused_writes)?;
        if let Some(bus) = self.0.bus.lock().as_ref() {
            for dev in (0..DEVICES as u8).filter(|&d| present & (1 << d) != 0) {
                let s = bus.dma_stats(dev << 3);
                writeln!(
                    f,
                    "iommu {:02x}.0: live {} maps {} unmaps {} map_failures {} bad_unmaps {} leaked {} \
                     bytes_read {} bytes_written {} faults: no_device {} no_mapping {} direction {} \
                     crosses_end {} unreachable {}",
                    dev,
                    s.live,
                    s.maps,
                    s.unmaps,
                    s.map_failures,
                    s.bad_unmaps,
                    s.leaked,
                    s.bytes_read,
                    s.bytes_written,
                    s.faults_no_device,
                    s.faults_no_mapping,
                    s.faults_direction,
                    s.faults_crosses_end,
                    s.faults_unreachable
                )?;
            }
        }
        writeln!(f, "msi_rx: {}", i.msi_rx)?;
        writeln!(f, "irqs_fired: {}", i.fired)?;
        writeln!(f, "msi_refused: {}", i.msi_refused)?;
        writeln!(f, "mem_reads: {}", m.reads)?;
        writeln!(f, "mem_read_bytes: {}", m.read_bytes)?;
        writeln!(f, "mem_read_errors: {}", m.read_errors)?;
        writeln!(f, "mem_read_timeouts: {}", m.read_timeouts)?;
        writeln!(f, "mem_writes: {}", m.writes)?;
        writeln!(f, "mem_write_bytes: {}", m.write_bytes)?;
        writeln!(f, "mem_write_tlps: {}", m.write_tlps)?;
        writeln!(f, "mem_posts: {}", m.posts)?;
        writeln!(f, "mem_posts_backlogged: {}", m.posts_backlogged)?;
        Ok(())
    }
}

/// `/sys/kernel/debug/pcieoe_host/<ifname>/cfg_rtt`: reading it times 100
/// configuration reads across the fabric, one after the other (real round
/// trips, not the shadow).
pub(crate) struct CfgRtt(pub(crate) Arc<Remote>);

impl Show for CfgRtt {
    fn show(&self, f: &mut SeqFile<'_>) -> fmt::Result {
        Timings::show(self.0.probe_rtt(100), "timeouts", f)
    }
}

/// `/sys/kernel/debug/pcieoe_host/<ifname>/mmio_rtt`: reading it times 100
/// memory reads of BAR 0's first register of the first remote function,
/// one after the other, across the fabric.
pub(crate) struct MmioRtt(pub(crate) Arc<Remote>);

impl Show for MmioRtt {
    fn show(&self, f: &mut SeqFile<'_>) -> fmt::Result {
        Timings::show(self.0.mmio_rtt(100), "failed", f)
    }
}

/// `/sys/kernel/debug/pcieoe_host/<ifname>/cfg_probe_unassigned`: reading
/// it sends one configuration read to the lowest device number this host
/// does not have, across the fabric, and shows how the DI answered (it
/// must refuse: Unsupported Request). For the isolation tests.
pub(crate) struct CfgProbeUnassigned(pub(crate) Arc<Remote>);

impl Show for CfgProbeUnassigned {
    fn show(&self, f: &mut SeqFile<'_>) -> fmt::Result {
        let Some(dev) = self.0.first_device(false) else {
            return writeln!(f, "every device number is in use");
        };
        writeln!(f, "device: {:#04x}", dev)?;
        match self.0.probe(dev, PROBE_TAG_BASE) {
            Some((Some(CompletionStatus::Success), _)) => writeln!(f, "status: SC"),
            Some((Some(CompletionStatus::UnsupportedRequest), _)) => writeln!(f, "status: UR"),
            Some((Some(s), _)) => writeln!(f, "status: {:?}", s),
            Some((None, _)) => writeln!(f, "status: timeout"),
            None => writeln!(f, "status: no session"),
        }
    }
}
