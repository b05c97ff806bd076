// SPDX-License-Identifier: GPL-2.0

//! The functions the DI serves, as the hosts see them.
//!
//! The configuration ([`Model`]) says which functions exist, which are
//! enabled and which host each is assigned to. [`Fabric::sync`] turns that
//! into *served* functions: one emulated configuration space per enabled,
//! assigned function, and the device number (0 to 31, function 0, bus 0)
//! under which its host sees it. That number is the requester-ID
//! translation: a host addresses `00:<dev>.0` of its own domain, and the
//! DI finds the function by (host MAC, device number). A host reaches only
//! what is assigned to it; any other configuration request gets an
//! Unsupported Request completion and is counted.
//!
//! After each change every open session gets a Presence message with its
//! host's device numbers, so hosts hot-add and hot-remove without any
//! action of their own.
//!
//! # Memory requests and the test function
//!
//! A host's MRd and MWr address a BAR, not a device: the DI looks for the
//! served function of that host whose BAR (in its configuration space, with
//! Memory Space Enable) holds the whole request. None: an MRd gets an
//! Unsupported Request completion and an MWr is dropped, both counted
//! (`mem_no_bar`); so a host reaches only its own functions. The function
//! serves it with its behaviour: [`TestState`], [`VnicState`] or
//! [`VhbaState`]. A vHBA's I/O on its backings sleeps: its workers do it
//! outside `state` and hand the result back under it
//! ([`Fabric::vhba_take`], [`Fabric::vhba_done`]); what the vHBA emits
//! then goes to its host through the work, as a timeout's TLPs do.
//!
//! What a test function emits (completions of MMIO reads, DMA MRd/MWr,
//! MSI-X) goes to its host in the same session's outbox. Completions from
//! the host are routed by their Requester ID, which is the function's ID
//! as the host sees it (bus 0, its device number, function 0); those no
//! function takes are counted (`cpl_unmatched`) and dropped.
//!
//! DMA reads that wait too long for completions
//! ([`DMA_TIMEOUT_NS`](crate::testfn::DMA_TIMEOUT_NS)) are given up by a
//! work item, woken by an hrtimer armed for the earliest deadline; what the
//! function emits then (its completion interrupt) is sent through the
//! host's port from that work item.
//!
//! # Locking
//!
//! `state` (a bottom-half spinlock) is taken by the sessions' receive path
//! (softirq, under a session lock), by [`Fabric::sync`] and the timeout
//! work (process context) and by debugfs. It is never held while a session
//! lock is taken: `sync` and the work release it before they send through
//! the ports. `links` (a mutex) is taken after the configuration's mutex
//! and before a port's. The timer's handler (softirq) takes only its own
//! spinlock, to queue the work; the timer is armed under `state`. A
//! vHBA's workers take `state` after their own buffer's mutex, never while
//! they do I/O; `sync` waits for them (after taking their vHBA out of
//! `state`, without holding it) under the configuration's mutex, which
//! they never take.
//!
//! Which functions are served changes only in `sync`, which the
//! configuration's mutex serialises: `sync` may look under one acquisition
//! of `state` and change under the next.

use core::{
    fmt::{self, Write as _},
    sync::atomic::{AtomicBool, Ordering},
};

use kernel::{
    debugfs::{SeqFile, Show},
    fmt as kfmt,
    hrtimer::{Timer, TimerHandler},
    impl_has_work,
    kvec_ext::VecExt,
    netdev::NetDevice,
    new_mutex, new_spinlock_bh, new_work, pr_warn_ratelimited,
    prelude::*,
    rx_handler::RxAction,
    spinlock_bh::SpinLockBh,
    str::CString,
    sync::{Arc, Mutex},
    time::Ktime,
    types::ARef,
    work_ext,
    workqueue::{self, Work, WorkItem},
};

use crate::config::{FunctionType, Model};
use crate::pcieoe::{
    cfgspace::ConfigSpace,
    fabric::{Msg, DEVICES},
    frame::Mac,
    function::{self, FunctionKind, Identity},
    tlp::{Bdf, CompletionStatus, Kind, MemRequest, Tlp},
    vhba::{BackendRequest, IoError},
    vnic::{self, RxVerdict},
};
use crate::port::{first_tlp, queue_tlp, MacFmt, Outbox, PortHandle, Service};
use crate::testfn::TestState;
use crate::uplink::Uplink;
use crate::vhba::{Backings, VhbaState};
use crate::vnic::VnicState;

/// Largest TLP the DI emits (a completion with one DW, or a Masks chunk).
const TLP_BUF: usize = 512;

/// One function as its host sees it.
struct Served {
    name: CString,
    host: Mac,
    dev: u8,
    cs: KBox<ConfigSpace>,
    /// The behaviour of a `test` function.
    test: Option<KBox<TestState>>,
    /// The behaviour of a `vnic` function.
    vnic: Option<KBox<VnicState>>,
    /// The behaviour of a `vhba` function.
    vhba: Option<KBox<VhbaState>>,
    /// TLPs it emitted outside its host's receive path (the work), in
    /// order, waiting for that session's lock: [`flush_upstream`].
    upstream: KVec<u8>,
}

/// Moves `host`'s queued TLPs into its outbox. Under `state`.
fn flush_upstream(served: &mut [Served], host: Mac, out: &mut Outbox) {
    for s in served.iter_mut().filter(|s| s.host == host) {
        let mut rest = &s.upstream[..];
        while let Some((tlp, tail)) = first_tlp(rest) {
            out.push(tlp);
            rest = tail;
        }
        s.upstream.clear();
    }
}

/// Counters of the configuration path.
#[derive(Clone, Copy, Default)]
struct Counters {
    cfg_reads: u64,
    cfg_writes: u64,
    /// Configuration requests for a device the host does not have.
    ur_unassigned: u64,
    /// Memory requests for a function without a behaviour yet (vNIC,
    /// vHBA): MRd answered UR, MWr dropped.
    ur_unsupported: u64,
    /// Memory requests that hit no BAR of the host's functions: MRd
    /// answered UR, MWr dropped.
    mem_no_bar: u64,
    /// Completions from a host that no function of it was waiting for.
    cpl_unmatched: u64,
    /// Upstream TLPs lost: no memory to queue them, or no open session
    /// to the host when a timeout's TLPs were sent.
    upstream_dropped: u64,
    /// TLPs that did not decode, or pcieoe messages that were malformed.
    malformed: u64,
    /// Describe requests answered.
    describes: u64,
    /// vNIC frames the uplink refused or that had no uplink.
    uplink_dropped: u64,
}

struct State {
    served: KVec<Served>,
    counters: Counters,
    /// When the timer is armed for, if it is.
    timer_at: Option<u64>,
}

/// Frames for the uplinks, sent once the state lock is released, and
/// whether other vNICs received frames (their host must be sent them).
#[derive(Default)]
struct Bridged {
    frames: KVec<(ARef<NetDevice>, KVec<u8>)>,
    lost: u64,
    kick: bool,
}

impl Bridged {
    /// Sends the frames; returns how many were lost on the way.
    fn send(self) -> u64 {
        let mut lost = self.lost;
        for (dev, frame) in self.frames.iter() {
            if dev.transmit(frame).is_err() {
                lost += 1;
            }
        }
        lost
    }
}

/// Hands the frames vNIC `i` transmitted to the other vNICs on its uplink
/// and to the uplink. Under `state`.
fn bridge(served: &mut [Served], i: usize, out: &mut Bridged) {
    let mut queue = KVec::new();
    let Some(v) = served.get_mut(i).and_then(|s| s.vnic.as_mut()) else {
        return;
    };
    let mut lost = 0;
    v.drain_tx(&mut |f: &[u8]| {
        if queue_tlp(&mut queue, f).is_err() {
            lost += 1;
        }
    });
    out.lost += lost;
    let uplink = v.uplink.clone();
    let mut rest = &queue[..];
    while let Some((frame, tail)) = first_tlp(rest) {
        rest = tail;
        let mut dst = [0u8; 6];
        if let Some(d) = frame.get(..6) {
            dst.copy_from_slice(d);
        }
        let unicast = dst[0] & 1 == 0;
        let mut local = false;
        for (j, s) in served.iter_mut().enumerate() {
            let Some(other) = s.vnic.as_mut() else {
                continue;
            };
            let same = uplink.as_deref().is_some_and(|u| other.is_on(u));
            if j == i || !same || (unicast && other.mac() != dst) {
                continue;
            }
            local |= unicast;
            if matches!(other.rx_frame(frame), RxVerdict::Queued(_)) {
                other.bridged += 1;
                out.kick = true;
            }
        }
        if local {
            continue;
        }
        let copy = uplink.as_ref().and_then(|u| {
            let mut f = KVec::new();
            f.extend_from_slice(frame, GFP_ATOMIC).ok()?;
            out.frames.push((u.clone(), f), GFP_ATOMIC).ok()
        });
        if copy.is_none() {
            out.lost += 1;
        }
    }
}

/// The function `host` sees as device `dev`.
fn find(served: &mut [Served], host: Mac, dev: u8) -> Option<&mut Served> {
    served.iter_mut().find(|s| s.host == host && s.dev == dev)
}

/// The current time, `CLOCK_MONOTONIC` ns.
fn now_ns() -> u64 {
    u64::try_from(Ktime::ktime_get().to_ns()).unwrap_or(0)
}

impl State {
    fn find(&mut self, host: Mac, dev: u8) -> Option<&mut Served> {
        find(&mut self.served, host, dev)
    }

    /// The Presence bitmap of `host`.
    fn presence(&self, host: Mac) -> u32 {
        self.served
            .iter()
            .filter(|s| s.host == host)
            .fold(0, |bits, s| bits | (1u32 << s.dev))
    }
}

/// What the DI serves, shared by its ports.
#[pin_data]
pub(crate) struct Fabric {
    #[pin]
    state: SpinLockBh<State>,
    /// The bound ports, for Presence messages and the timeout work's TLPs.
    #[pin]
    links: Mutex<KVec<Arc<DiLink>>>,
    /// Wakes the timeout work at the earliest DMA read deadline.
    watch: Arc<Timer<Watch>>,
    /// The vNICs' uplinks in use (taken after the configuration's mutex;
    /// never under `state`).
    #[pin]
    uplinks: Mutex<KVec<Uplink>>,
    /// `sync` is running (under the configuration's mutex).
    syncing: AtomicBool,
    /// Gives up on DMA reads past their deadline ([`Fabric::expire`]).
    #[pin]
    work: Work<Fabric>,
}

impl_has_work! {
    impl HasWork<Self> for Fabric { self.work }
}

/// The timeout timer's data: the fabric whose work it queues, from
/// [`Fabric::start`] until [`Running`] is dropped (a reference cycle
/// between the fabric and its timer that only that drop breaks).
#[pin_data]
pub(crate) struct Watch {
    #[pin]
    fabric: SpinLockBh<Option<Arc<Fabric>>>,
}

impl TimerHandler for Watch {
    fn expired(timer: &Timer<Self>) {
        // Queued under the lock: once `Running`'s drop has taken the
        // fabric out, nothing queues the work any more, so its flush
        // waits for the last run.
        let fabric = timer.fabric.lock();
        if let Some(f) = fabric.as_ref() {
            // Already queued: that run sees this deadline too. The clone
            // given back is not the last reference (the lock holds one).
            let _ = workqueue::system().enqueue(f.clone());
        }
    }
}

impl WorkItem for Fabric {
    type Pointer = Arc<Fabric>;

    fn run(this: Arc<Fabric>) {
        this.expire();
    }
}

/// The fabric with its timeout timer running; dropping it (process
/// context, after the ports are gone) stops the timer's work and waits for
/// it.
pub(crate) struct Running(Arc<Fabric>);

impl Drop for Running {
    fn drop(&mut self) {
        let fabric = self.0.watch.fabric.lock().take();
        drop(fabric);
        work_ext::flush(&*self.0);
        // The timer may still fire; it finds nothing to do. It is
        // cancelled when the fabric goes.
    }
}

fn kind_of(ty: FunctionType) -> FunctionKind {
    match ty {
        FunctionType::Test => FunctionKind::Test,
        FunctionType::Vnic => FunctionKind::Vnic,
        FunctionType::Vhba => FunctionKind::Vhba,
    }
}

impl Fabric {
    pub(crate) fn new() -> Result<Arc<Self>> {
        let watch = Arc::pin_init(
            Timer::new(try_pin_init!(Watch {
                fabric <- new_spinlock_bh!(None, "pcieoe_dev_watch"),
            }? Error)),
            GFP_KERNEL,
        )?;
        Arc::pin_init(
            pin_init!(Fabric {
                state <- new_spinlock_bh!(State {
                    served: KVec::new(),
                    counters: Counters::default(),
                    timer_at: None,
                }, "pcieoe_dev_fabric"),
                links <- new_mutex!(KVec::new()),
                uplinks <- new_mutex!(KVec::new()),
                syncing: AtomicBool::new(false),
                watch,
                work <- new_work!("pcieoe_dev_timeouts"),
            }),
            GFP_KERNEL,
        )
    }

    /// Lets the timeout timer queue the work, until [`Running`] is
    /// dropped.
    pub(crate) fn start(self: &Arc<Self>) -> Running {
        *self.watch.fabric.lock() = Some(self.clone());
        Running(self.clone())
    }

    /// Arms the timer for `deadline` unless it is armed for an earlier
    /// or equal one. Under `state`.
    fn arm(&self, timer_at: &mut Option<u64>, deadline: Option<u64>) {
        let Some(at) = deadline else {
            return;
        };
        if timer_at.is_some_and(|t| t <= at) {
            return;
        }
        self.watch
            .start_at(Ktime::from_raw(i64::try_from(at).unwrap_or(i64::MAX)));
        *timer_at = Some(at);
    }

    /// Runs the work now: vNICs have something to send to their hosts.
    fn kick(&self) {
        let fabric = self.watch.fabric.lock();
        if let Some(f) = fabric.as_ref() {
            // Already queued: that run sees this too.
            let _ = workqueue::system().enqueue(f.clone());
        }
    }

    /// Whether a frame for `dst` on uplink `dev` may be for a vNIC: a
    /// broadcast or multicast, or a vNIC's address (softirq). The DI's own
    /// traffic on the uplink is left alone before any copy.
    pub(crate) fn uplink_wants(&self, dev: &NetDevice, dst: &[u8; 6]) -> bool {
        if dst[0] & 1 != 0 {
            return true;
        }
        let st = self.state.lock();
        st.served
            .iter()
            .filter_map(|s| s.vnic.as_ref())
            .any(|v| v.is_on(dev) && v.mac() == *dst)
    }

    /// A frame arrived on uplink `dev` (softirq): offered to its vNICs.
    pub(crate) fn uplink_frame(&self, dev: &NetDevice, frame: &[u8]) -> RxAction {
        let mut dst = [0u8; 6];
        match frame.get(..6) {
            Some(d) => dst.copy_from_slice(d),
            None => return RxAction::Pass,
        }
        let unicast = dst[0] & 1 == 0;
        let (mut mine, mut queued) = (false, false);
        {
            let mut st = self.state.lock();
            for s in st.served.iter_mut() {
                let Some(v) = s.vnic.as_mut().filter(|v| v.is_on(dev)) else {
                    continue;
                };
                if unicast && v.mac() != dst {
                    continue;
                }
                mine |= unicast;
                queued |= matches!(v.rx_frame(frame), RxVerdict::Queued(_));
            }
        }
        if queued {
            self.kick();
        }
        if mine {
            RxAction::Consume
        } else {
            RxAction::Pass
        }
    }

    /// Uplink `dev` changed state, or is going away (`gone`): its vNICs'
    /// link follows. Process context, RTNL held (the notifier).
    pub(crate) fn uplink_changed(&self, dev: &NetDevice, gone: bool) {
        let mut any = false;
        {
            let mut st = self.state.lock();
            for v in st.served.iter_mut().filter_map(|s| s.vnic.as_mut()) {
                if !v.is_on(dev) {
                    continue;
                }
                any = true;
                if gone {
                    v.lose_uplink();
                } else {
                    v.update_link();
                }
            }
        }
        if any && gone {
            pr_warn!(
                "uplink {} unregistered: its vNICs lose their link\n",
                dev.name()
            );
        }
        // On any unregistration too: the work drops an uplink nothing uses.
        if any || gone {
            self.kick();
        }
    }

    /// The registration of uplink `dev`, made if no vNIC uses it yet.
    /// Process context.
    fn use_uplink(self: &Arc<Self>, dev: &ARef<NetDevice>) -> Result {
        let mut uplinks = self.uplinks.lock();
        if uplinks.iter().any(|u| *u.dev == **dev) {
            return Ok(());
        }
        let u = Uplink::new(self, dev)?;
        uplinks.push(u, GFP_KERNEL)?;
        Ok(())
    }

    /// Drops the uplinks no served vNIC uses any more (their last vNIC
    /// went, or they were unregistered). Process context. Not while `sync`
    /// runs: it registers an uplink before its vNIC is in the list, and
    /// prunes itself when done.
    fn prune_uplinks(&self) {
        if self.syncing.load(Ordering::Acquire) {
            return;
        }
        self.prune_uplinks_now();
    }

    fn prune_uplinks_now(&self) {
        // Dropping one takes RTNL; nothing takes this mutex under RTNL
        // (the notifier does not), so that is safe here.
        self.uplinks.lock().retain(|u| {
            let st = self.state.lock();
            st.served
                .iter()
                .filter_map(|s| s.vnic.as_ref())
                .any(|v| v.is_on(&u.dev))
        });
    }

    /// Gives up on the DMA reads past their deadline, sends what the
    /// functions emit then through their hosts' ports, and re-arms the
    /// timer for the next deadline. The timer's work (process context).
    fn expire(&self) {
        let now = now_ns();
        let mut bridged = Bridged::default();
        let any;
        {
            let mut guard = self.state.lock();
            let State {
                served,
                counters,
                timer_at,
            } = &mut *guard;
            *timer_at = None;
            let mut next: Option<u64> = None;
            let mut lost = 0u64;
            // vNICs first: a frame bridged to a vNIC already passed is
            // sent in another round (a few at most: each round sends
            // only what the previous one staged).
            for round in 0..4 {
                if round > 0 && !core::mem::take(&mut bridged.kick) {
                    break;
                }
                for i in 0..served.len() {
                    let Some(s) = served.get_mut(i) else {
                        break;
                    };
                    let Some(v) = s.vnic.as_mut() else {
                        continue;
                    };
                    let up = &mut s.upstream;
                    let mut send = |tlp: &[u8]| {
                        if queue_tlp(up, tlp).is_err() {
                            lost += 1;
                        }
                    };
                    if v.expire(&s.cs, now, &mut send) {
                        pr_warn_ratelimited!(
                            "function {}: host {} did not complete a DMA read of TX data within {} ms: frame dropped\n",
                            &*s.name,
                            MacFmt(s.host),
                            crate::vnic::DMA_TIMEOUT_NS / 1_000_000
                        );
                    }
                    bridge(served, i, &mut bridged);
                }
            }
            for v in served.iter().filter_map(|s| s.vnic.as_ref()) {
                next = match (next, v.deadline()) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            for s in served.iter_mut() {
                let Some(v) = s.vhba.as_mut() else {
                    continue;
                };
                let up = &mut s.upstream;
                let mut send = |tlp: &[u8]| {
                    if queue_tlp(up, tlp).is_err() {
                        lost += 1;
                    }
                };
                if v.expire(&s.cs, now, &mut send) {
                    pr_warn_ratelimited!(
                        "function {}: host {} did not complete a DMA read of WRITE data or a segment list within {} ms: commands failed\n",
                        &*s.name,
                        MacFmt(s.host),
                        crate::vhba::DMA_TIMEOUT_NS / 1_000_000
                    );
                }
                next = match (next, v.deadline()) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            for s in served.iter_mut() {
                let Some(t) = s.test.as_mut() else {
                    continue;
                };
                let up = &mut s.upstream;
                let mut send = |tlp: &[u8]| {
                    if queue_tlp(up, tlp).is_err() {
                        lost += 1;
                    }
                };
                if t.expire(&s.cs, now, &mut send) {
                    pr_warn_ratelimited!(
                        "function {}: host {} did not complete its DMA read within {} ms: command failed\n",
                        &*s.name,
                        MacFmt(s.host),
                        crate::testfn::DMA_TIMEOUT_NS / 1_000_000
                    );
                }
                next = match (next, t.deadline()) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            any = served.iter().any(|s| !s.upstream.is_empty());
            counters.upstream_dropped += lost;
            self.arm(timer_at, next);
        }
        // Frames bridged in the last round are sent by the next run.
        let more = bridged.kick;
        let uplink_lost = bridged.send();
        if uplink_lost > 0 {
            self.state.lock().counters.uplink_dropped += uplink_lost;
        }
        if more {
            self.kick();
        }
        if any {
            // Each open session takes its host's queued TLPs; those of
            // hosts without one are dropped when a session opens
            // (`opened`).
            let links = self.links.lock();
            for link in links.iter() {
                let port = link.port.lock();
                if let Some(p) = port.as_ref() {
                    p.pump(|peer, out| self.flush_upstream(peer, out));
                }
            }
        }
        // Last: it may wait for RTNL.
        self.prune_uplinks();
    }

    /// The next request for the backings of a vHBA, with a WRITE's data
    /// copied into `buf`; `None` if none waits or the vHBA is no longer
    /// served. A vHBA's worker (process context).
    pub(crate) fn vhba_take(
        &self,
        backings: &Arc<Backings>,
        buf: &mut [u8],
    ) -> Option<BackendRequest> {
        let mut st = self.state.lock();
        st.served
            .iter_mut()
            .find_map(|s| s.vhba.as_mut().filter(|v| v.owns(backings)))?
            .take(buf)
    }

    /// A vHBA's worker executed `req` (READ data in `buf`): the command
    /// completes, and what the vHBA emits then goes to its host through
    /// the work. Dropped if the vHBA is no longer served (it was given
    /// to another host, or disabled, meanwhile). Process context.
    pub(crate) fn vhba_done(
        &self,
        backings: &Arc<Backings>,
        req: &BackendRequest,
        result: Result<(), IoError>,
        buf: &[u8],
    ) {
        let now = now_ns();
        let kick = {
            let mut guard = self.state.lock();
            let State {
                served,
                counters,
                timer_at,
            } = &mut *guard;
            let Some(s) = served
                .iter_mut()
                .find(|s| s.vhba.as_ref().is_some_and(|v| v.owns(backings)))
            else {
                return;
            };
            let Some(v) = s.vhba.as_mut() else {
                return;
            };
            let up = &mut s.upstream;
            let mut lost = 0u64;
            v.done(req, result, buf, &s.cs, now, &mut |tlp: &[u8]| {
                if queue_tlp(up, tlp).is_err() {
                    lost += 1;
                }
            });
            counters.upstream_dropped += lost;
            self.arm(timer_at, v.deadline());
            !s.upstream.is_empty()
        };
        if kick {
            self.kick();
        }
    }

    /// Moves the TLPs queued for `host` by the work into its session's
    /// outbox, in the order they were emitted. Under the session's lock:
    /// the receive path calls it before it answers anything, so what a
    /// function emits reaches its host in order whichever context emitted
    /// it (a completion never overtakes an earlier memory write, which
    /// PCIe ordering and the host's drivers rely on).
    fn flush_upstream(&self, host: Mac, out: &mut Outbox) {
        let mut st = self.state.lock();
        flush_upstream(&mut st.served, host, out);
    }

    /// Makes the served functions match `model` (called with the
    /// configuration's mutex held, after every change), then tells every
    /// open session what its host has now.
    pub(crate) fn sync(self: &Arc<Self>, model: &Model) -> Result {
        self.syncing.store(true, Ordering::Release);
        let r = self.sync_locked(model);
        self.syncing.store(false, Ordering::Release);
        // Drops what this sync left unused (a vNIC that failed after its
        // uplink was registered).
        self.prune_uplinks_now();
        r
    }

    fn sync_locked(self: &Arc<Self>, model: &Model) -> Result {
        // Drop what is no longer enabled and assigned to the same host.
        let keep = |s: &Served| {
            model.hosts.iter().any(|h| {
                h.mac.0 == s.host
                    && h.functions
                        .iter()
                        .any(|n| n.as_bytes() == s.name.as_bytes())
            }) && model
                .functions
                .iter()
                .any(|f| f.enabled && f.name.as_bytes() == s.name.as_bytes())
        };
        // The test functions' memory (2.2 MiB each, vmalloc) is freed
        // after the lock, not with bottom halves disabled.
        let count = self.state.lock().served.len();
        let mut gone: KVec<KBox<TestState>> = KVec::with_capacity(count, GFP_KERNEL)?;
        let mut gone_vnics: KVec<KBox<VnicState>> = KVec::with_capacity(count, GFP_KERNEL)?;
        let mut gone_vhbas: KVec<KBox<VhbaState>> = KVec::with_capacity(count, GFP_KERNEL)?;
        {
            let mut st = self.state.lock();
            for s in st.served.iter_mut() {
                if !keep(s) {
                    // Within the capacity (the list did not grow): no
                    // allocation, cannot fail.
                    if let Some(t) = s.test.take() {
                        let _ = gone.push(t, GFP_ATOMIC);
                    }
                    if let Some(v) = s.vnic.take() {
                        let _ = gone_vnics.push(v, GFP_ATOMIC);
                    }
                    if let Some(v) = s.vhba.take() {
                        let _ = gone_vhbas.push(v, GFP_ATOMIC);
                    }
                }
            }
            st.served.retain(|s| {
                let kept = keep(s);
                if !kept {
                    pr_info!(
                        "function {}: no longer served to host {} (device {:02x})\n",
                        &*s.name,
                        MacFmt(s.host),
                        s.dev
                    );
                }
                kept
            });
        }
        drop(gone);
        drop(gone_vnics);
        // Out of the state: no new I/O reaches their workers. Their I/O
        // in progress ends first, then the backings are closed.
        for v in gone_vhbas.iter() {
            v.shutdown();
        }
        drop(gone_vhbas);
        self.prune_uplinks();
        // Add what is new.
        for host in model.hosts.iter() {
            for name in host.functions.iter() {
                let Some(f) = model
                    .functions
                    .iter()
                    .find(|f| f.enabled && f.name.as_bytes() == name.as_bytes())
                else {
                    continue;
                };
                let served = |st: &State| {
                    st.served
                        .iter()
                        .any(|s| s.host == host.mac.0 && s.name.as_bytes() == name.as_bytes())
                };
                let used = {
                    let st = self.state.lock();
                    if served(&st) {
                        continue;
                    }
                    st.presence(host.mac.0)
                };
                let Some(dev) = (0..DEVICES as u8).find(|d| used & (1 << d) == 0) else {
                    pr_warn!(
                        "host {}: all {} device numbers in use, function {} not served\n",
                        host.mac,
                        DEVICES,
                        &**name
                    );
                    continue;
                };
                let mut cs: KBox<ConfigSpace> = KBox::init(kernel::init::zeroed(), GFP_KERNEL)?;
                let id = Identity {
                    vendor: f.vendor_id,
                    device: f.device_id,
                    subsystem_vendor: f.vendor_id,
                    subsystem: f.device_id,
                    revision: 1,
                };
                function::build(kind_of(f.ty), &id, &mut cs).map_err(|e| {
                    pr_err!("function {}: config space: {:?}\n", &**name, e);
                    EINVAL
                })?;
                // Allocated anew for each assignment: a function given to
                // a host (again) starts from its reset state, with zeroed
                // BARs. Its ID is the one that host sees: 00:<dev>.0.
                let id = Bdf::new(0, dev, 0).ok_or(EINVAL)?;
                let test = match f.ty {
                    FunctionType::Test => Some(TestState::new(id)?),
                    FunctionType::Vnic | FunctionType::Vhba => None,
                };
                let vnic = match f.ty {
                    // Its uplink may be gone or taken: that vNIC is not
                    // served (the log says why), the others still are, and
                    // the next change tries again.
                    FunctionType::Vnic => match self.new_vnic(name, id, &f.vnic) {
                        Ok(v) => Some(v),
                        Err(e) => {
                            pr_err!(
                                "function {}: not served to host {}: {:?}\n",
                                &**name,
                                host.mac,
                                e
                            );
                            continue;
                        }
                    },
                    FunctionType::Test | FunctionType::Vhba => None,
                };
                let vhba = match f.ty {
                    FunctionType::Vhba => Some(VhbaState::new(
                        self.clone(),
                        name,
                        id,
                        f.vnic.queues,
                        &f.vhba.luns,
                    )?),
                    FunctionType::Test | FunctionType::Vnic => None,
                };
                let name = CString::try_from_fmt(kfmt!("{}", &**name))?;
                let mut st = self.state.lock();
                // Only `sync` changes the list, under the configuration's
                // mutex: `dev` is still free.
                if st.presence(host.mac.0) & (1 << dev) != 0 {
                    drop(st);
                    pr_err!("host {}: device {:02x} taken meanwhile\n", host.mac, dev);
                    return Err(EBUSY);
                }
                pr_info!(
                    "function {}: served to host {} as device {:02x}\n",
                    &*name,
                    host.mac,
                    dev
                );
                st.served.push(
                    Served {
                        name,
                        host: host.mac.0,
                        dev,
                        cs,
                        test,
                        vnic,
                        vhba,
                        upstream: KVec::new(),
                    },
                    GFP_ATOMIC,
                )?;
                // The uplink may have changed since it was read, with no
                // served vNIC for the notifier to tell.
                if let Some(v) = st.served.last_mut().and_then(|s| s.vnic.as_mut()) {
                    v.update_link();
                }
            }
        }
        self.announce();
        Ok(())
    }

    /// A vNIC's state, on its uplink (registered if new). Process context.
    fn new_vnic(
        self: &Arc<Self>,
        name: &CStr,
        id: Bdf,
        p: &crate::config::VnicParams,
    ) -> Result<KBox<VnicState>> {
        let ifname = CString::try_from_fmt(kfmt!("{}", p.uplink().unwrap_or("")))?;
        let dev = NetDevice::get_by_name(&ifname).inspect_err(|_| {
            pr_err!("function {}: uplink {} not found\n", name, &*ifname);
        })?;
        self.use_uplink(&dev)?;
        let cfg = vnic::Config {
            mac: p.mac.0,
            mtu_max: p.mtu,
            queues: p.queues,
        };
        VnicState::new(id, &cfg, dev)
    }

    /// Sends each open session its host's Presence.
    fn announce(&self) {
        let links = self.links.lock();
        for link in links.iter() {
            let port = link.port.lock();
            let Some(port) = port.as_ref() else {
                continue;
            };
            let Some(peer) = port.peer() else {
                continue;
            };
            let devices = self.state.lock().presence(peer);
            let mut buf = [0u8; TLP_BUF];
            if let Ok(n) = (Msg::Presence { devices }).emit(Bdf::default(), &mut buf) {
                let _ = port.send(buf.get(..n).unwrap_or(&[]));
            }
        }
    }

    /// A new port's service; registered until [`Fabric::unlink`].
    pub(crate) fn link(self: &Arc<Self>) -> Result<Arc<DiLink>> {
        let link = Arc::pin_init(
            pin_init!(DiLink {
                fabric: self.clone(),
                port <- new_mutex!(None),
            }),
            GFP_KERNEL,
        )?;
        self.links.lock().push(link.clone(), GFP_KERNEL)?;
        Ok(link)
    }

    pub(crate) fn unlink(&self, link: &Arc<DiLink>) {
        self.links.lock().retain(|l| !Arc::ptr_eq(l, link));
    }

    /// Answers one TLP from `host` (softirq, under its session's lock),
    /// then sends what its vNICs transmitted to the uplinks (outside the
    /// state lock) and has the work send what other vNICs received.
    fn serve(&self, host: Mac, bytes: &[u8], out: &mut Outbox) {
        let mut bridged = Bridged::default();
        self.serve_locked(host, bytes, out, &mut bridged);
        let kick = bridged.kick;
        let lost = bridged.send();
        if lost > 0 {
            self.state.lock().counters.uplink_dropped += lost;
        }
        if kick {
            self.kick();
        }
    }

    fn serve_locked(&self, host: Mac, bytes: &[u8], out: &mut Outbox, bridged: &mut Bridged) {
        let mut st = self.state.lock();
        // What the work emitted goes first.
        flush_upstream(&mut st.served, host, out);
        let dropped = out.dropped;
        let Ok(tlp) = Tlp::decode(bytes) else {
            st.counters.malformed += 1;
            pr_warn_ratelimited!("host {}: undecodable TLP dropped\n", MacFmt(host));
            return;
        };
        let mut buf = [0u8; TLP_BUF];
        match tlp.kind {
            Kind::CfgRead(req) | Kind::CfgWrite(req) => {
                let is_read = matches!(tlp.kind, Kind::CfgRead(_));
                let c = &mut st.counters;
                if is_read {
                    c.cfg_reads += 1;
                } else {
                    c.cfg_writes += 1;
                }
                let dev = req.target.device();
                let completer = req.target;
                let cs = st.find(host, dev).map(|s| &mut *s.cs);
                let assigned = cs.is_some();
                let r = function::serve_config(&tlp, completer, cs, &mut buf);
                if !assigned {
                    st.counters.ur_unassigned += 1;
                    pr_warn_ratelimited!(
                        "host {}: config request for device {:02x}, not assigned: UR\n",
                        MacFmt(host),
                        dev
                    );
                }
                match r {
                    Ok(n) => out.push(buf.get(..n).unwrap_or(&[])),
                    Err(e) => {
                        st.counters.malformed += 1;
                        pr_warn_ratelimited!(
                            "host {}: bad config request: {:?}\n",
                            MacFmt(host),
                            e
                        );
                    }
                }
                // A write may have set Bus Master Enable, unmasked MSI-X
                // (a pending message goes out) or cleared them (the
                // running command fails).
                if !is_read {
                    let State {
                        served, timer_at, ..
                    } = &mut *st;
                    if let Some(s) = find(served, host, dev) {
                        if let Some(t) = s.test.as_mut() {
                            t.run(&s.cs, now_ns(), &mut |b: &[u8]| out.push(b));
                            self.arm(timer_at, t.deadline());
                        }
                        if let Some(v) = s.vnic.as_mut() {
                            v.run(&s.cs, now_ns(), &mut |b: &[u8]| out.push(b));
                            self.arm(timer_at, v.deadline());
                        }
                        if let Some(v) = s.vhba.as_mut() {
                            v.run(&s.cs, now_ns(), &mut |b: &[u8]| out.push(b));
                            self.arm(timer_at, v.deadline());
                        }
                    }
                }
            }
            Kind::MemRead(r) | Kind::MemWrite(r) => {
                self.memory(&mut st, host, &tlp, &r, out, bridged)
            }
            Kind::Completion(c) => {
                let State {
                    served,
                    counters,
                    timer_at,
                } = &mut *st;
                let id = c.requester;
                let i = if id.bus() == 0 && id.function() == 0 {
                    served
                        .iter()
                        .position(|s| s.host == host && s.dev == id.device())
                } else {
                    None
                };
                if let Some(i) = i.filter(|&i| served.get(i).is_some_and(|s| s.vnic.is_some())) {
                    if let Some(Served {
                        vnic: Some(v),
                        cs,
                        name,
                        ..
                    }) = served.get_mut(i)
                    {
                        if !v.completion(&tlp, cs, now_ns(), &mut |b: &[u8]| out.push(b)) {
                            pr_warn_ratelimited!(
                                "host {}: completion (tag {}, {}) for vNIC {} not expected: dropped\n",
                                MacFmt(host),
                                c.tag,
                                c.status,
                                &**name
                            );
                        }
                        self.arm(timer_at, v.deadline());
                    }
                    bridge(served, i, bridged);
                    return;
                }
                if let Some(Served {
                    vhba: Some(v),
                    cs,
                    name,
                    ..
                }) = i.and_then(|i| served.get_mut(i))
                {
                    if !v.completion(&tlp, cs, now_ns(), &mut |b: &[u8]| out.push(b)) {
                        pr_warn_ratelimited!(
                            "host {}: completion (tag {}, {}) for vHBA {} not expected: dropped\n",
                            MacFmt(host),
                            c.tag,
                            c.status,
                            &**name
                        );
                    }
                    self.arm(timer_at, v.deadline());
                    return;
                }
                let s = i.and_then(|i| served.get_mut(i));
                match s.and_then(|s| Some((s.test.as_mut()?, &s.cs, &s.name))) {
                    Some((t, cs, name)) => {
                        if !t.completion(&tlp, cs, now_ns(), &mut |b: &[u8]| out.push(b)) {
                            pr_warn_ratelimited!(
                                "host {}: completion (tag {}, {}) for function {} not expected: dropped\n",
                                MacFmt(host),
                                c.tag,
                                c.status,
                                &**name
                            );
                        }
                        self.arm(timer_at, t.deadline());
                    }
                    None => {
                        counters.cpl_unmatched += 1;
                        pr_warn_ratelimited!(
                            "host {}: completion for {:02x}:{:02x}.{} (tag {}), no such test function: dropped\n",
                            MacFmt(host),
                            id.bus(),
                            id.device(),
                            id.function(),
                            c.tag
                        );
                    }
                }
            }
            Kind::Message(_) => match Msg::parse(&tlp) {
                Some(Ok(Msg::Describe { dev })) => {
                    st.counters.describes += 1;
                    match st.find(host, dev) {
                        Some(s) => {
                            let mut i = 0;
                            while let Some(n) =
                                function::describe_chunk(dev, &s.cs, Bdf::default(), i, &mut buf)
                            {
                                out.push(buf.get(..n).unwrap_or(&[]));
                                i += 1;
                            }
                        }
                        None => {
                            if let Ok(n) = (Msg::NoDevice { dev }).emit(Bdf::default(), &mut buf) {
                                out.push(buf.get(..n).unwrap_or(&[]));
                            }
                        }
                    }
                }
                Some(Ok(_)) | None => {}
                Some(Err(e)) => {
                    st.counters.malformed += 1;
                    pr_warn_ratelimited!(
                        "host {}: malformed pcieoe message: {:?}\n",
                        MacFmt(host),
                        e
                    );
                }
            },
        }
        let lost = out.dropped.saturating_sub(dropped);
        if lost > 0 {
            st.counters.upstream_dropped += lost;
            pr_warn_ratelimited!(
                "host {}: {} TLPs dropped: no memory to queue them\n",
                MacFmt(host),
                lost
            );
        }
    }

    /// Serves a host's MRd or MWr: the function of `host` whose BAR holds
    /// the request's range, if any. Under `state`, softirq.
    fn memory(
        &self,
        st: &mut State,
        host: Mac,
        tlp: &Tlp<'_>,
        r: &MemRequest,
        out: &mut Outbox,
        bridged: &mut Bridged,
    ) {
        let write = matches!(tlp.kind, Kind::MemWrite(_));
        let mut buf = [0u8; TLP_BUF];
        if let Err(e) = tlp.check() {
            st.counters.malformed += 1;
            pr_warn_ratelimited!(
                "host {}: malformed {} at {:#x}: {}: dropped\n",
                MacFmt(host),
                tlp.name(),
                r.address,
                e
            );
            return;
        }
        let State {
            served,
            counters,
            timer_at,
        } = st;
        let len = u64::from(r.length) * 4;
        let hit = served
            .iter()
            .position(|s| s.host == host && s.cs.bar_hit(r.address, len).is_some());
        let Some((i, s)) = hit.and_then(|i| Some((i, served.get_mut(i)?))) else {
            counters.mem_no_bar += 1;
            pr_warn_ratelimited!(
                "host {}: {} of {} bytes at {:#x} hits none of its functions' BARs: {}\n",
                MacFmt(host),
                tlp.name(),
                len,
                r.address,
                if write { "dropped" } else { "UR" }
            );
            if let Some(n) = unsupported(tlp, &mut buf) {
                out.push(buf.get(..n).unwrap_or(&[]));
            }
            return;
        };
        if let Some(v) = s.vnic.as_mut() {
            if let Err(e) = v.mmio(tlp, &s.cs, now_ns(), &mut |b: &[u8]| out.push(b)) {
                counters.malformed += 1;
                pr_warn_ratelimited!(
                    "host {}: {} at {:#x} for vNIC {}: {}: dropped\n",
                    MacFmt(host),
                    tlp.name(),
                    r.address,
                    &*s.name,
                    e
                );
            }
            self.arm(timer_at, v.deadline());
            bridge(served, i, bridged);
            return;
        }
        if let Some(v) = s.vhba.as_mut() {
            if let Err(e) = v.mmio(tlp, &s.cs, now_ns(), &mut |b: &[u8]| out.push(b)) {
                counters.malformed += 1;
                pr_warn_ratelimited!(
                    "host {}: {} at {:#x} for vHBA {}: {}: dropped\n",
                    MacFmt(host),
                    tlp.name(),
                    r.address,
                    &*s.name,
                    e
                );
            }
            self.arm(timer_at, v.deadline());
            return;
        }
        let Some(t) = s.test.as_mut() else {
            // No behaviour (cannot be: each type has one): a read is
            // answered UR so that the requester does not wait for its
            // timeout.
            counters.ur_unsupported += 1;
            if let Some(n) = unsupported(tlp, &mut buf) {
                out.push(buf.get(..n).unwrap_or(&[]));
            }
            return;
        };
        if let Err(e) = t.mmio(tlp, &s.cs, now_ns(), &mut |b: &[u8]| out.push(b)) {
            counters.malformed += 1;
            pr_warn_ratelimited!(
                "host {}: {} at {:#x} for function {}: {}: dropped\n",
                MacFmt(host),
                tlp.name(),
                r.address,
                &*s.name,
                e
            );
        }
        self.arm(timer_at, t.deadline());
    }
}

/// An Unsupported Request completion for a non-posted request, if it is
/// one.
fn unsupported(tlp: &Tlp<'_>, buf: &mut [u8]) -> Option<usize> {
    if !matches!(tlp.kind, Kind::MemRead(_)) {
        return None;
    }
    Tlp::completion_for(
        tlp,
        Bdf::default(),
        CompletionStatus::UnsupportedRequest,
        &[],
    )
    .ok()?
    .emit(buf)
    .ok()
}

/// One port's service: configuration requests and messages of its host.
#[pin_data]
pub(crate) struct DiLink {
    fabric: Arc<Fabric>,
    #[pin]
    port: Mutex<Option<PortHandle>>,
}

impl Service for DiLink {
    fn attach(&self, port: PortHandle) {
        *self.port.lock() = Some(port);
    }

    fn detach(&self) {
        let port = self.port.lock().take();
        drop(port);
    }

    fn opened(&self, peer: Mac, _epoch: u32, out: &mut Outbox) {
        let devices = {
            let mut st = self.fabric.state.lock();
            // TLPs queued for an earlier session are not for this one.
            for s in st.served.iter_mut().filter(|s| s.host == peer) {
                s.upstream.clear();
            }
            st.presence(peer)
        };
        let mut buf = [0u8; TLP_BUF];
        if let Ok(n) = (Msg::Presence { devices }).emit(Bdf::default(), &mut buf) {
            out.push(buf.get(..n).unwrap_or(&[]));
        }
    }

    fn tlp(&self, peer: Mac, tlp: &[u8], out: &mut Outbox) {
        self.fabric.serve(peer, tlp, out);
    }
}

/// `/sys/kernel/debug/pcieoe_dev/functions`: what is served to whom, with
/// the registers a test compares with the host's view, and the counters
/// (a test function's own at the end of its line, as `key value` pairs).
pub(crate) struct FabricStats(pub(crate) Arc<Fabric>);

impl Show for FabricStats {
    fn show(&self, f: &mut SeqFile<'_>) -> fmt::Result {
        let st = self.0.state.lock();
        let c = st.counters;
        writeln!(f, "cfg_reads: {}", c.cfg_reads)?;
        writeln!(f, "cfg_writes: {}", c.cfg_writes)?;
        writeln!(f, "ur_unassigned: {}", c.ur_unassigned)?;
        writeln!(f, "ur_unsupported: {}", c.ur_unsupported)?;
        writeln!(f, "mem_no_bar: {}", c.mem_no_bar)?;
        writeln!(f, "cpl_unmatched: {}", c.cpl_unmatched)?;
        writeln!(f, "upstream_dropped: {}", c.upstream_dropped)?;
        writeln!(f, "malformed: {}", c.malformed)?;
        writeln!(f, "describes: {}", c.describes)?;
        writeln!(f, "uplink_dropped: {}", c.uplink_dropped)?;
        for s in st.served.iter() {
            let r = |off: u16, size: usize| s.cs.read(off, size).unwrap_or(u32::MAX);
            write!(
                f,
                "function {} host {} dev {:02x} id {:04x}:{:04x} command {:#06x}",
                &*s.name,
                MacFmt(s.host),
                s.dev,
                r(0, 2),
                r(2, 2),
                r(4, 2)
            )?;
            for bar in 0..6u16 {
                write!(f, " bar{} {:#010x}", bar, r(0x10 + 4 * bar, 4))?;
            }
            if let Some(t) = s.test.as_ref() {
                let c = &t.counters;
                write!(
                    f,
                    " busy {} mmio_reads {} mmio_writes {} mmio_dropped {} dma_ok {} dma_failed {} dma_timeouts {} msix {} irq_failed {} cpl_unmatched {} tlps_out {}",
                    u8::from(t.busy()),
                    c.mmio_reads,
                    c.mmio_writes,
                    c.mmio_dropped,
                    c.dma_ok,
                    c.dma_failed,
                    c.dma_timeouts,
                    c.msix,
                    c.irq_failed,
                    c.cpl_unmatched,
                    c.tlps_out
                )?;
            }
            if let Some(v) = s.vnic.as_ref() {
                v.show(f)?;
            }
            if let Some(v) = s.vhba.as_ref() {
                v.show(f)?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// A DI port: the binding and its registration for Presence messages.
pub(crate) struct DiPort {
    fabric: Arc<Fabric>,
    link: Arc<DiLink>,
    _binding: crate::port::Binding,
}

impl DiPort {
    pub(crate) fn new(
        fabric: &Arc<Fabric>,
        bind: impl FnOnce(Arc<DiLink>) -> Result<crate::port::Binding>,
    ) -> Result<Self> {
        let link = fabric.link()?;
        match bind(link.clone()) {
            Ok(binding) => Ok(DiPort {
                fabric: fabric.clone(),
                link,
                _binding: binding,
            }),
            Err(e) => {
                fabric.unlink(&link);
                Err(e)
            }
        }
    }
}

impl Drop for DiPort {
    fn drop(&mut self) {
        self.fabric.unlink(&self.link);
    }
}
