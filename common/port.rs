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

use core::fmt;

use kernel::{
    c_str,
    debugfs::Dir,
    hrtimer::{Timer, TimerHandler},
    netdev::{IfName, NetDevice, PacketHandler, PacketRegistration},
    new_spinlock_bh,
    prelude::*,
    spinlock_bh::SpinLockBh,
    str::CStr,
    sync::Arc,
    time::Ktime,
    types::ARef,
};

use crate::pcieoe::{
    clock::{Duration, FrameSink, Instant, Rng, SinkFull},
    ethertype::EtherType,
    frame::{Mac, MAX_MTU, MIN_MTU},
    link::{Link, Release},
    session::{Event, Handler, Role, Session, SessionConfig},
};
use crate::stats::Stats;

/// Replay-buffer slots (frames in flight) per session.
pub(crate) const SLOTS: usize = 64;

/// Shortest wait before re-polling: when the engine asks to be polled "now"
/// right after a poll, it is blocked (transmit queue full) and must not make
/// the timer spin.
const MIN_REARM: Duration = Duration::from_micros(100);

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

/// What the upper layer knows of the session (for logs and counters).
pub(crate) struct Upper {
    ifname: IfName,
    /// Epoch of the open session, or of the last one.
    epoch: u32,
    /// Peer of the open session, or of the last one.
    peer: Option<Mac>,
    /// TLPs received (nothing consumes them yet).
    pub(crate) tlps: u64,
}

impl Handler for Upper {
    fn tlp(&mut self, _tlp: &[u8]) -> Release {
        self.tlps = self.tlps.saturating_add(1);
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
    /// Host or device interface.
    pub(crate) role: Role,
}

/// What the packet handler, the timer and debugfs share.
#[pin_data]
pub(crate) struct Shared {
    pub(crate) dev: ARef<NetDevice>,
    #[pin]
    pub(crate) inner: SpinLockBh<Inner>,
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
        ..
    } = inner;
    let mut sink = Sink {
        dev: &timer.dev,
        errors: tx,
    };
    session.poll(now, &mut sink, upper);
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
        let Inner { session, upper, .. } = &mut *inner;
        session.receive(now, frame, upper);
        service(timer, &mut inner, now);
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
}

/// How to bind.
pub(crate) struct PortConfig<'a> {
    /// Host or device interface.
    pub(crate) role: Role,
    /// The netdev's name.
    pub(crate) ifname: &'a CStr,
    /// Ethertype of the frames.
    pub(crate) ethertype: EtherType,
    /// Name of the module's debugfs directory.
    pub(crate) debugfs: &'a CStr,
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
                    upper: Upper { ifname, epoch: 0, peer: None, tlps: 0 },
                    tx: TxErrors::default(),
                    stopping: false,
                    role: cfg.role,
                }, "pcieoe_port"),
            }? Error)),
            GFP_KERNEL,
        )?;

        let root = Arc::new(
            Dir::new(cfg.debugfs).inspect_err(|e| {
                pr_err!("debugfs directory {}: error {:?}\n", cfg.debugfs, e);
            })?,
            GFP_KERNEL,
        )?;
        let mut dir = Dir::subdir(&root, name)?;
        dir.add_file(
            c_str!("stats"),
            Arc::new(Stats(shared.clone()), GFP_KERNEL)?,
        )?;

        let rx = PacketRegistration::new(
            &dev,
            cfg.ethertype.get(),
            Arc::new(Rx(shared.clone()), GFP_KERNEL)?,
        )?;
        // First poll (a host sends its first Discovery now); it arms the
        // timer for the next one.
        {
            let mut inner = shared.inner.lock();
            service(&shared, &mut inner, now());
        }
        pr_info!(
            "{}: bound (MAC {}, MTU {}, ifindex {}, {}, {})\n",
            ifname,
            MacFmt(mac),
            dev_mtu,
            dev.ifindex(),
            if dev.is_up() { "up" } else { "down" },
            if dev.has_carrier() {
                "carrier"
            } else {
                "no carrier"
            }
        );
        Ok(Port {
            _rx: rx,
            _dir: dir,
            shared,
        })
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        let ifname = {
            let mut inner = self.shared.inner.lock();
            inner.stopping = true;
            inner.upper.ifname
        };
        pr_info!("{}: unbound\n", ifname);
    }
}
