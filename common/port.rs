// SPDX-License-Identifier: GPL-2.0

//! A *port*: one Ethernet netdev bound to one engine session.
//!
//! Shared by the host interface and the device interface (each module
//! includes this file with `#[path]`; only the session's [`Role`] differs).
//! Frames of the PCIeoE Ethertype received on the netdev go to the session,
//! the frames the session emits go out on the netdev, and an hrtimer polls
//! the session when [`Session::poll_at`] asks.
//!
//! # Contexts and locking
//!
//! Three contexts use the session: the packet handler (`NET_RX` softirq),
//! the timer (hrtimer softirq) and process context (binding, debugfs reads,
//! unbinding). All of them take the session's [`SpinLockBh`], so a softirq
//! can never spin on the lock while the process-context holder it
//! interrupted waits for it. The two softirq paths may run at once on
//! different CPUs; the lock serialises them.
//!
//! Frames are transmitted while the lock is held, so that they leave in the
//! order the engine produced them. That is safe because `dev_queue_xmit()`
//! never calls back into this port's receive path on the same stack: a
//! frame looped back (veth, `lo`) is queued with `netif_rx()` and received
//! later in the `NET_RX` softirq, which cannot run on this CPU while bottom
//! halves are disabled by the lock (the packet handler is not an `ETH_P_ALL`
//! tap, which would see our own transmissions synchronously). The timer
//! runs in soft mode, not in hard interrupt context, because
//! `dev_queue_xmit()` must not be called with hard interrupts disabled.
//!
//! The timer is re-armed under the lock, from whichever path polled last,
//! so a stale deadline computed by one path cannot overwrite a newer one.
//!
//! # Binding, unbinding and the netdev's lifetime
//!
//! A [`Binding`] is what a module keeps: a [`Slot`] holding the [`Port`]
//! (or nothing, once the netdev went away) and a netdevice notifier whose
//! handler is that slot. The port holds a reference to the netdev
//! (`dev_hold()`), which unregistering the netdev waits for, so the port
//! must let go when told:
//!
//! * `NETDEV_UNREGISTER` of the bound netdev (deleted, or moved to another
//!   network namespace): the notifier takes the port out of the slot and
//!   drops it right there, in process context under RTNL. Dropping removes
//!   the packet handler (`dev_remove_pack()` waits for running receive
//!   softirqs), the debugfs directory (waits for readers), then cancels the
//!   timer (waits for a running expiry) and drops the netdev references,
//!   so `netdev_run_todo()` finds none left. No Close is sent: the netdev
//!   is already down (closed before `NETDEV_UNREGISTER`), so nothing could
//!   leave; the peer finds out by its dead-peer timeout. None of this takes
//!   RTNL, which the notifier holds.
//! * Module unload: [`Binding`]'s drop takes the port out of the slot,
//!   releases the slot's mutex, closes the session in order (the engine's
//!   Close, waiting for the peer's reply or the engine's close timeout,
//!   see [`Port::close`]) and drops the port; only then is the notifier
//!   unregistered. Its replayed `NETDEV_UNREGISTER` finds an empty slot.
//! * `NETDEV_UP`, `NETDEV_DOWN`, `NETDEV_CHANGE` (carrier) and
//!   `NETDEV_CHANGEMTU` of the bound netdev are logged; the engine itself
//!   notices a silent peer.
//!
//! Lock order: RTNL, then the slot's mutex, then the session's spinlock.
//! The notifier takes the mutex under RTNL; nothing that holds the mutex
//! takes RTNL (binding does not, the unload path drops the mutex before it
//! unregisters the notifier, and dropping a port does not), so the two
//! cannot deadlock. Whichever of the notifier and the unload path takes
//! the port out of the slot first unbinds; the other finds the slot empty.
//! The notifier is registered *before* the netdev is looked up and the
//! mutex is held across the bind, so an unregistration that races with
//! the bind is seen (its notification waits for the mutex) and not missed.
//! Unregistering the notifier waits for a running notification (it takes
//! RTNL), so the module's code outlives every call.

use core::fmt;

use kernel::{
    c_str,
    debugfs::Dir,
    hrtimer::{Timer, TimerHandler},
    kvec_ext::VecExt,
    netdev::{self, IfName, NetDevice, Notifier, NotifierRegistration},
    netdev::{PacketHandler, PacketRegistration},
    new_condvar, new_mutex, new_spinlock_bh, pr_warn_ratelimited,
    prelude::*,
    spinlock_bh::SpinLockBh,
    str::CStr,
    sync::{Arc, CondVar, CondVarTimeoutResult, Mutex},
    time::{msecs_to_jiffies, Ktime},
    types::ARef,
};

use crate::pcieoe::{
    clock::{Duration, FrameSink, Instant, Rng, SinkFull},
    ethertype::EtherType,
    frame::{Mac, MAX_MTU, MIN_MTU},
    link::{Link, Release, SendError},
    session::{Event, Handler, Role, Session, SessionConfig, State},
};
use crate::stats::Stats;

/// Replay-buffer slots (frames in flight) per session.
pub(crate) const SLOTS: usize = 64;

/// Shortest wait before re-polling: when the engine asks to be polled "now"
/// right after a poll, it is blocked (transmit queue full) and must not make
/// the timer spin.
const MIN_REARM: Duration = Duration::from_micros(100);

/// Longest wait for an orderly close on unload. The engine ends its
/// `Closing` state by its own close timeout (200 ms by default); this is
/// only a backstop in case its timer never fires.
const CLOSE_WAIT_MS: u32 = 1000;

/// The engine's randomness: the kernel's CRNG.
pub(crate) struct KernelRng;

impl Rng for KernelRng {
    fn next_u32(&mut self) -> u32 {
        kernel::random::u32()
    }
}

pub(crate) type Sess = Session<KernelRng, KVVec<u8>, SLOTS>;

/// The current time as the engine counts it (`CLOCK_MONOTONIC`, ns).
fn now() -> Instant {
    Instant::from_nanos(u64::try_from(Ktime::ktime_get().to_ns()).unwrap_or(0))
}

/// A MAC address, printed the usual way.
pub(crate) struct MacFmt(pub(crate) Mac);

impl fmt::Display for MacFmt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// What a module serves over a port's session: the host interface's remote
/// functions or the device interface's functions.
///
/// Every method but [`attach`](Service::attach) and
/// [`detach`](Service::detach) runs under the port's session lock, in the
/// `NET_RX` softirq, the timer's softirq or process context with bottom
/// halves disabled: it must not sleep, nor take the session lock again
/// (through a [`PortHandle`]). Replies go in the [`Outbox`], which the port
/// sends, in order, as soon as the session lets it.
pub(crate) trait Service: Send + Sync {
    /// The port is bound: `port` sends from process context. Called once,
    /// before any other method.
    fn attach(&self, _port: PortHandle) {}
    /// The port is going away: drop the [`PortHandle`] (it holds the port).
    /// No other method is called after this returns.
    fn detach(&self) {}
    /// A session with `peer` opened.
    fn opened(&self, _peer: Mac, _epoch: u32, _out: &mut Outbox) {}
    /// The session ended (surprise removal of what it carried).
    fn down(&self) {}
    /// A TLP from `peer`, in order and exactly once.
    fn tlp(&self, peer: Mac, tlp: &[u8], out: &mut Outbox);
}

/// Appends `tlp` to a queue of TLPs, each after its 2-byte length.
///
/// # Errors
///
/// `ENOMEM`; `EINVAL` for a TLP over 64 KiB (none is).
pub(crate) fn queue_tlp(queue: &mut KVec<u8>, tlp: &[u8]) -> Result {
    let len = u16::try_from(tlp.len()).map_err(|_| EINVAL)?;
    queue.extend_from_slice(&len.to_ne_bytes(), GFP_ATOMIC)?;
    queue.extend_from_slice(tlp, GFP_ATOMIC)?;
    Ok(())
}

/// The first TLP of a queue built by [`queue_tlp`] and the rest.
pub(crate) fn first_tlp(queue: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = (queue.get(..2)?, queue.get(2..)?);
    let len = usize::from(u16::from_ne_bytes([*len.first()?, *len.get(1)?]));
    Some((rest.get(..len)?, rest.get(len..)?))
}

/// Sent bytes at the front of an [`Outbox`] worth moving the rest down for.
const COMPACT_AT: usize = 64 << 10;

/// TLPs waiting for the session: whole TLPs, each after its 2-byte length,
/// sent in the order they were pushed.
#[derive(Default)]
pub(crate) struct Outbox {
    buf: KVec<u8>,
    /// Bytes of `buf` already sent.
    head: usize,
    /// TLPs refused for lack of memory.
    pub(crate) dropped: u64,
}

impl Outbox {
    /// Queues a TLP; counts it as dropped when there is no memory (the
    /// requester's timeout then handles it, as a lost TLP on a real link).
    pub(crate) fn push(&mut self, tlp: &[u8]) {
        if queue_tlp(&mut self.buf, tlp).is_err() {
            self.dropped = self.dropped.saturating_add(1);
        }
    }

    /// Hands queued TLPs to the session until it is full; forgets them all
    /// when the session is not open (the peer is gone with its requests).
    fn flush(&mut self, session: &mut Sess) {
        while let Some(tlp) = self.front() {
            let len = tlp.len();
            match session.send_tlp(tlp) {
                Ok(()) => self.head += 2 + len,
                Err(SendError::WindowFull | SendError::NoCredit) => break,
                Err(SendError::NotOpen | SendError::Failed) => {
                    self.head = self.buf.len();
                    break;
                }
                Err(e) => {
                    pr_warn_ratelimited!("TLP not sent: {:?}\n", e);
                    self.dropped = self.dropped.saturating_add(1);
                    self.head += 2 + len;
                }
            }
        }
        if self.head == self.buf.len() {
            self.buf.clear();
            self.head = 0;
        } else if self.head >= COMPACT_AT && self.head * 2 >= self.buf.len() {
            // A session that stays busy never drains the outbox whole: drop
            // the sent front once it is half the buffer, or the buffer
            // grows with every TLP ever sent (kmalloc refuses past 4 MiB).
            // Each byte moves at most once per halving: linear overall.
            let head = self.head;
            let mut i = 0;
            self.buf.retain(|_| {
                i += 1;
                i > head
            });
            self.head = 0;
        }
    }

    /// Bytes queued and not yet handed to the session.
    fn backlog(&self) -> usize {
        self.buf.len().saturating_sub(self.head)
    }

    fn front(&self) -> Option<&[u8]> {
        first_tlp(self.buf.get(self.head..)?).map(|(tlp, _)| tlp)
    }
}

/// What the upper layer knows of the session (for logs and counters).
pub(crate) struct Upper {
    ifname: IfName,
    /// Epoch of the open session, or of the last one.
    epoch: u32,
    /// Peer of the open session, or of the last one.
    peer: Option<Mac>,
    /// TLPs received.
    pub(crate) tlps: u64,
    service: Arc<dyn Service>,
    pub(crate) out: Outbox,
}

impl Handler for Upper {
    fn tlp(&mut self, tlp: &[u8]) -> Release {
        self.tlps = self.tlps.saturating_add(1);
        if let Some(peer) = self.peer {
            self.service.tlp(peer, tlp, &mut self.out);
        }
        Release::Now
    }

    fn event(&mut self, ev: Event<'_>) {
        match ev {
            Event::Opened { epoch, peer, mtu } => {
                self.epoch = epoch;
                self.peer = Some(peer);
                pr_info!(
                    "{}: session open, epoch {:#010x}, peer {}, mtu {}\n",
                    self.ifname,
                    epoch,
                    MacFmt(peer),
                    mtu
                );
                self.service.opened(peer, epoch, &mut self.out);
            }
            Event::Down { epoch, reason } => {
                let peer = self.peer.unwrap_or([0; 6]);
                pr_info!(
                    "{}: session down, epoch {:#010x}, peer {}: {:?}\n",
                    self.ifname,
                    epoch,
                    MacFmt(peer),
                    reason
                );
                self.service.down();
            }
            Event::Discovered { mac, id, functions } => {
                pr_debug!(
                    "{}: discovered {} (id {:#x}, {} functions)\n",
                    self.ifname,
                    MacFmt(mac),
                    id,
                    functions
                );
            }
            Event::Management(_) => {}
        }
    }
}

/// Transmit errors, by reason.
#[derive(Clone, Copy, Default)]
pub(crate) struct TxErrors {
    /// No socket buffer: the frame was kept and retried.
    pub(crate) nomem: u64,
    /// The device or its queueing discipline dropped the frame.
    pub(crate) dropped: u64,
}

/// The engine's frame output: the bound netdev.
struct Sink<'a> {
    dev: &'a NetDevice,
    errors: &'a mut TxErrors,
}

impl FrameSink for Sink<'_> {
    fn send(&mut self, frame: &[u8]) -> Result<(), SinkFull> {
        match self.dev.transmit(frame) {
            Ok(()) => Ok(()),
            Err(e) if e == ENOMEM => {
                self.errors.nomem = self.errors.nomem.saturating_add(1);
                Err(SinkFull)
            }
            // Lost like a frame on the wire; the reliable link recovers.
            Err(_) => {
                self.errors.dropped = self.errors.dropped.saturating_add(1);
                Ok(())
            }
        }
    }
}

/// Everything under the port's lock.
pub(crate) struct Inner {
    pub(crate) session: Sess,
    pub(crate) upper: Upper,
    pub(crate) tx: TxErrors,
    /// Set when unbinding: the timer is not re-armed any more.
    stopping: bool,
    /// Set by [`Port::close`]: an orderly close was asked for; once the
    /// session has left `Closing`, received frames are ignored (no new
    /// session may open on a port that is going away).
    closing: bool,
    /// Host or device interface.
    pub(crate) role: Role,
}

/// What the packet handler, the timer and debugfs share.
#[pin_data]
pub(crate) struct Shared {
    pub(crate) dev: ARef<NetDevice>,
    #[pin]
    pub(crate) inner: SpinLockBh<Inner>,
    /// Notified (under `inner`'s lock) when a session that [`Port::close`]
    /// closes leaves `Closing`.
    #[pin]
    closed: CondVar,
}

fn is_closing(s: &Sess) -> bool {
    matches!(s.state(), State::Closing { .. })
}

pub(crate) type PortTimer = Timer<Shared>;

/// Polls the session, transmits what it emits, and re-arms the timer for
/// its next deadline. Called with the lock held (`inner`).
fn service(timer: &PortTimer, inner: &mut Inner, now: Instant) {
    let Inner {
        session,
        upper,
        tx,
        stopping,
        closing,
        ..
    } = inner;
    let mut sink = Sink {
        dev: &timer.dev,
        errors: tx,
    };
    upper.out.flush(session);
    session.poll(now, &mut sink, upper);
    if *closing && !is_closing(session) {
        // `Port::close` waits for this under the same lock, so it cannot
        // miss the wake-up between its check and its sleep.
        timer.closed.notify_all();
    }
    if *stopping {
        return;
    }
    if let Some(at) = session.poll_at() {
        let at = at.max(now.saturating_add(MIN_REARM));
        let ns = i64::try_from(at.as_nanos()).unwrap_or(i64::MAX);
        timer.start_at(Ktime::from_raw(ns));
    }
}

impl TimerHandler for Shared {
    fn expired(timer: &PortTimer) {
        let mut inner = timer.inner.lock();
        service(timer, &mut inner, now());
    }
}

/// The packet handler: frames of our Ethertype into the session.
struct Rx(Arc<PortTimer>);

impl PacketHandler for Rx {
    fn receive(&self, frame: &[u8]) {
        let timer = &*self.0;
        let mut inner = timer.inner.lock();
        let now = now();
        if inner.closing && !is_closing(&inner.session) {
            return;
        }
        let Inner { session, upper, .. } = &mut *inner;
        session.receive(now, frame, upper);
        service(timer, &mut inner, now);
    }
}

/// A [`Service`]'s way to send from outside the receive path: process
/// or softirq context, never with the session lock held (it takes it).
#[derive(Clone)]
pub(crate) struct PortHandle(Arc<PortTimer>);

impl PortHandle {
    /// Queues `tlp` on the session and sends what the session allows now.
    /// Process or softirq context (takes the session lock).
    ///
    /// # Errors
    ///
    /// `ENOTCONN` when no session is open.
    pub(crate) fn send(&self, tlp: &[u8]) -> Result {
        let shared = &*self.0;
        let mut inner = shared.inner.lock();
        if !inner.session.is_open() {
            return Err(Error::from_errno(-(kernel::bindings::ENOTCONN as i32)));
        }
        inner.upper.out.push(tlp);
        service(shared, &mut inner, now());
        Ok(())
    }

    /// Lets `fill` queue TLPs for the open session's peer under the
    /// session lock (so in order with what the receive path queues), then
    /// sends what the session allows. Process or softirq context; nothing
    /// happens when no session is open.
    // The device interface's work needs it; the host does not.
    #[allow(dead_code)]
    pub(crate) fn pump(&self, fill: impl FnOnce(Mac, &mut Outbox)) {
        let shared = &*self.0;
        let mut inner = shared.inner.lock();
        let peer = match inner.session.peer() {
            Some(peer) if inner.session.is_open() => peer,
            _ => return,
        };
        fill(peer, &mut inner.upper.out);
        service(shared, &mut inner, now());
    }

    /// Bytes of TLPs queued on the session and not yet sent: a sender of
    /// bulk data waits while this is large, so that queued TLPs stay
    /// bounded and none is dropped for lack of memory.
    // The host's memory writes need it; the device interface does not.
    #[allow(dead_code)]
    pub(crate) fn backlog(&self) -> usize {
        self.0.inner.lock().upper.out.backlog()
    }

    /// The peer of the open session.
    // The device interface's Presence needs it; the host's does not.
    #[allow(dead_code)]
    pub(crate) fn peer(&self) -> Option<Mac> {
        let inner = self.0.inner.lock();
        inner
            .session
            .is_open()
            .then(|| inner.session.peer())
            .flatten()
    }
}

/// A bound netdev: unbinding is dropping it.
pub(crate) struct Port {
    // Field order is teardown order: first no more frames come in
    // (`dev_remove_pack()` waits for running handlers), then debugfs
    // readers are gone, and the last reference to the shared state drops,
    // which cancels the timer (waiting for a running handler) before the
    // session and the device reference go.
    _rx: PacketRegistration<Rx>,
    _dir: Dir,
    shared: Arc<PortTimer>,
    /// Last logged administrative state, carrier and MTU of the netdev
    /// (only the notifier, under the slot's mutex, uses them).
    up: bool,
    carrier: bool,
    mtu: u32,
    /// The session's MTU, fixed at bind time.
    session_mtu: usize,
}

/// How to bind.
pub(crate) struct PortConfig<'a> {
    /// Host or device interface.
    pub(crate) role: Role,
    /// The netdev's name.
    pub(crate) ifname: &'a CStr,
    /// Ethertype of the frames.
    pub(crate) ethertype: EtherType,
    /// The module's debugfs directory (the port adds `<ifname>/`).
    pub(crate) debugfs: &'a Arc<Dir>,
    /// What the session carries.
    pub(crate) service: Arc<dyn Service>,
    /// Adds the module's own files to the port's debugfs directory.
    pub(crate) files: Option<&'a dyn Fn(&mut Dir) -> Result>,
}

impl Port {
    /// Binds the netdev `cfg.ifname` and starts a session on it. May sleep.
    ///
    /// # Errors
    ///
    /// `ENODEV` when there is no such netdev, `EINVAL` when it is not
    /// Ethernet-like or its MTU is below the engine's minimum, `ENOMEM`,
    /// and the errors of debugfs; each logged with the netdev's name.
    pub(crate) fn bind(cfg: &PortConfig<'_>) -> Result<Self> {
        let name = cfg.ifname;
        let dev = NetDevice::get_by_name(name).inspect_err(|_| {
            pr_err!("no network device named '{}'\n", name);
        })?;
        let Some(mac) = dev.mac() else {
            pr_err!("{}: not an Ethernet device (no 6-byte MAC)\n", name);
            return Err(EINVAL);
        };
        let dev_mtu = usize::try_from(dev.mtu()).unwrap_or(usize::MAX);
        if dev_mtu < MIN_MTU {
            pr_err!(
                "{}: MTU {} is below the minimum {}\n",
                name,
                dev_mtu,
                MIN_MTU
            );
            return Err(EINVAL);
        }
        let mut scfg = SessionConfig::new(cfg.role, mac);
        scfg.ethertype = cfg.ethertype;
        scfg.mtu = dev_mtu.min(MAX_MTU);
        let session_mtu = scfg.mtu;
        scfg.window = SLOTS as u16;
        scfg.id = mac.iter().fold(0u64, |a, &b| (a << 8) | u64::from(b));
        let storage = KVVec::from_elem(
            0u8,
            Link::<KVVec<u8>, SLOTS>::storage_len(scfg.mtu),
            GFP_KERNEL,
        )?;
        let mut session = Session::new(scfg, KernelRng, storage).map_err(|e| {
            pr_err!("{}: session configuration refused: {:?}\n", name, e);
            EINVAL
        })?;
        session.start(now());
        let ifname = dev.name();
        let shared_dev = dev.clone();
        let shared = Arc::pin_init(
            Timer::new(try_pin_init!(Shared {
                dev: shared_dev,
                inner <- new_spinlock_bh!(Inner {
                    session,
                    upper: Upper {
                        ifname,
                        epoch: 0,
                        peer: None,
                        tlps: 0,
                        service: cfg.service.clone(),
                        out: Outbox::default(),
                    },
                    tx: TxErrors::default(),
                    stopping: false,
                    closing: false,
                    role: cfg.role,
                }, "pcieoe_port"),
                closed <- new_condvar!("pcieoe_port_closed"),
            }? Error)),
            GFP_KERNEL,
        )?;

        let mut dir = Dir::subdir(cfg.debugfs, name)?;
        dir.add_file(
            c_str!("stats"),
            Arc::new(Stats(shared.clone()), GFP_KERNEL)?,
        )?;
        if let Some(files) = cfg.files {
            files(&mut dir)?;
        }

        let rx = PacketRegistration::new(
            &dev,
            cfg.ethertype.get(),
            Arc::new(Rx(shared.clone()), GFP_KERNEL)?,
        )?;
        cfg.service.attach(PortHandle(shared.clone()));
        // First poll (a host sends its first Discovery now); it arms the
        // timer for the next one.
        {
            let mut inner = shared.inner.lock();
            service(&shared, &mut inner, now());
        }
        let (up, carrier) = (dev.is_up(), dev.has_carrier());
        pr_info!(
            "{}: bound (MAC {}, MTU {}, ifindex {}, {}, {})\n",
            ifname,
            MacFmt(mac),
            dev_mtu,
            dev.ifindex(),
            if up { "up" } else { "down" },
            if carrier { "carrier" } else { "no carrier" }
        );
        Ok(Port {
            _rx: rx,
            _dir: dir,
            shared,
            up,
            carrier,
            mtu: dev.mtu(),
            session_mtu,
        })
    }

    fn dev(&self) -> &NetDevice {
        &self.shared.dev
    }

    /// Closes the session in order before the port goes: the engine drains
    /// what is unacknowledged, sends Close and waits for the peer's reply,
    /// up to its close timeout; this waits until it is done (or for
    /// [`CLOSE_WAIT_MS`], or until a signal), so that the Close has left
    /// (and usually been answered) before the packet handler and the timer
    /// go. The peer then reports the session down at once. Process
    /// context; sleeps. A session that is not open is simply closed.
    fn close(&self) {
        let shared = &*self.shared;
        let start = now();
        let limit = Duration::from_millis(u64::from(CLOSE_WAIT_MS));
        let mut inner = shared.inner.lock();
        inner.closing = true;
        inner.session.close(start);
        // Sends the Close now if nothing is left to drain, and arms the
        // timer for its retransmission and the engine's close deadline.
        service(shared, &mut inner, start);
        while is_closing(&inner.session) {
            let waited = now().saturating_duration_since(start);
            let left = limit.saturating_sub(waited);
            if left == Duration::ZERO {
                pr_warn!(
                    "{}: orderly close did not end within {} ms\n",
                    inner.upper.ifname,
                    CLOSE_WAIT_MS
                );
                break;
            }
            let ms = u32::try_from(left.as_millis())
                .unwrap_or(CLOSE_WAIT_MS)
                .max(1);
            // Releases the spinlock while asleep; the timer and the packet
            // handler run the close meanwhile and notify when it ends.
            if let CondVarTimeoutResult::Signal { .. } = shared
                .closed
                .wait_interruptible_timeout(&mut inner, msecs_to_jiffies(ms))
            {
                break;
            }
        }
    }

    /// Unbinds: an orderly close first when `why` is [`Unbind::Unload`],
    /// then the teardown (see [`Port`]'s fields), then the log line.
    /// Process context; sleeps.
    fn unbind(self, why: Unbind) {
        let ifname = self.shared.inner.lock().upper.ifname;
        match why {
            Unbind::Unload => {
                self.close();
                drop(self);
                pr_info!("{}: unbound\n", ifname);
            }
            Unbind::Unregistered => {
                drop(self);
                pr_info!("{}: unbound: device unregistered\n", ifname);
            }
        }
    }

    /// Logs a change of the netdev's state (notifier, under the slot's
    /// mutex).
    fn netdev_event(&mut self, ev: netdev::Event) {
        let ifname = self.dev().name();
        match ev {
            netdev::Event::Up | netdev::Event::Down | netdev::Event::Change => {
                let (up, carrier) = (self.dev().is_up(), self.dev().has_carrier());
                if up != self.up {
                    pr_info!("{}: link {}\n", ifname, if up { "up" } else { "down" });
                }
                if carrier != self.carrier {
                    pr_info!(
                        "{}: carrier {}\n",
                        ifname,
                        if carrier { "on" } else { "off" }
                    );
                }
                (self.up, self.carrier) = (up, carrier);
            }
            netdev::Event::ChangeMtu => {
                let mtu = self.dev().mtu();
                if mtu != self.mtu {
                    pr_info!(
                        "{}: MTU now {} (the session keeps {})\n",
                        ifname,
                        mtu,
                        self.session_mtu
                    );
                    self.mtu = mtu;
                }
            }
            _ => {}
        }
    }
}

/// Why a port unbinds.
#[derive(Clone, Copy)]
enum Unbind {
    /// The module is unloading: close the session in order.
    Unload,
    /// The netdev is being unregistered: let go of it at once.
    Unregistered,
}

impl Drop for Port {
    fn drop(&mut self) {
        // From now on neither softirq path re-arms the timer; the fields
        // then drop in the order their declaration explains. The service
        // lets go of its handle (which holds the shared state) first.
        let service = self.shared.inner.lock().upper.service.clone();
        service.detach();
        self.shared.inner.lock().stopping = true;
    }
}

/// The port of a [`Binding`], if it still has one.
#[pin_data]
pub(crate) struct Slot {
    #[pin]
    port: Mutex<Option<Port>>,
}

impl Notifier for Slot {
    fn event(&self, ev: netdev::Event, dev: &NetDevice) {
        // Process context under RTNL (see the module documentation for the
        // lock order). Events of other netdevs, and the replays of the
        // notifier's own registration, are ignored here.
        let mut slot = self.port.lock();
        let Some(port) = slot.as_mut() else {
            return;
        };
        if port.dev() != dev {
            return;
        }
        if ev == netdev::Event::Unregister {
            let port = slot.take();
            // The port is ours alone now: unbind without the mutex, so an
            // unload waiting for it is not held up behind the teardown.
            drop(slot);
            if let Some(port) = port {
                port.unbind(Unbind::Unregistered);
            }
            return;
        }
        port.netdev_event(ev);
    }
}

/// A module's binding to a netdev: the port while the netdev exists, and
/// the notifier that unbinds it when the netdev goes away. Dropping it (on
/// unload) closes the session in order and unbinds.
pub(crate) struct Binding {
    slot: Arc<Slot>,
    // Unregistered after `drop` has unbound (fields drop after `drop`).
    _notifier: NotifierRegistration<Slot>,
}

impl Binding {
    /// Binds the netdev `cfg.ifname` (see [`Port::bind`]) and watches it.
    /// May sleep; must not be called with RTNL held.
    ///
    /// # Errors
    ///
    /// Those of [`Port::bind`] and of registering the notifier.
    pub(crate) fn new(cfg: &PortConfig<'_>) -> Result<Self> {
        let slot = Arc::pin_init(pin_init!(Slot { port <- new_mutex!(None) }), GFP_KERNEL)?;
        // Notifier first: an unregistration that races with the bind then
        // waits for the mutex below and finds the port.
        let notifier = NotifierRegistration::new(slot.clone()).inspect_err(|e| {
            pr_err!("{}: netdevice notifier: error {:?}\n", cfg.ifname, e);
        })?;
        {
            let mut port = slot.port.lock();
            *port = Some(Port::bind(cfg)?);
        }
        Ok(Self {
            slot,
            _notifier: notifier,
        })
    }
}

impl Drop for Binding {
    fn drop(&mut self) {
        // Taken out under the mutex, unbound without it (the notifier may
        // be waiting for it under RTNL).
        let port = self.slot.port.lock().take();
        if let Some(port) = port {
            port.unbind(Unbind::Unload);
        }
    }
}
