// SPDX-License-Identifier: GPL-2.0

//! Ethernet devices implemented by a driver: registration, the device
//! callbacks, NAPI and ethtool.
//!
//! C headers: [`include/linux/netdevice.h`](srctree/include/linux/netdevice.h),
//! [`include/linux/etherdevice.h`](srctree/include/linux/etherdevice.h),
//! [`include/linux/ethtool.h`](srctree/include/linux/ethtool.h),
//! [`include/linux/skbuff.h`](srctree/include/linux/skbuff.h)
//!
//! A driver implements [`Driver`] and creates a [`Registration`], which
//! allocates an Ethernet `net_device` with the requested number of transmit
//! and receive queues (`alloc_etherdev_mqs()`), gives it a MAC address, an
//! MTU range and a parent device, adds one NAPI context ([`Napi`]) per
//! receive queue and registers it (`register_netdev()`). Dropping the
//! registration unregisters and frees the device.
//!
//! # Features
//!
//! The device advertises no offloads: no scatter-gather, no checksum
//! offload, no TSO. The networking core therefore hands
//! [`Driver::start_xmit`] linear socket buffers with complete checksums and
//! at most MTU-sized frames ([`Skb::data`] is the whole frame). Received
//! frames are handed up with `CHECKSUM_NONE`. GRO is done in software.
//!
//! # NAPI and the lifetime rules
//!
//! * The abstraction, not the driver, enables and disables the NAPI
//!   contexts: they are enabled before [`Driver::open`] is called (and
//!   disabled again if it fails) and disabled, which waits for a running
//!   poll, before [`Driver::stop`] is called. [`Driver::poll`] therefore
//!   only runs while the device is up, and never during or after
//!   [`Driver::stop`].
//! * A [`Napi`] is reference counted ([`Arc<Napi>`], see
//!   [`Device::napi`]) so that an interrupt handler can keep one and call
//!   [`Napi::schedule`] at any time, in any context, even after the device
//!   is gone: a NAPI context that is disabled or deleted ignores the call.
//! * The driver's object ([`Arc<T>`](Arc)) is kept in the device's private
//!   area and released only after the device was unregistered (so no
//!   callback runs or can start) and its NAPI contexts deleted.
//! * Dropping a [`Registration`] takes RTNL and waits for every reference
//!   to the device to go: it must not be dropped with RTNL held, from one of
//!   the [`Driver`] callbacks, or while a
//!   [`PacketRegistration`](crate::netdev::PacketRegistration) or an
//!   [`ARef<NetDevice>`](crate::types::ARef) of the device is alive.
//! * The driver's object must not own its [`Registration`] (the device's
//!   private area owns the object: that would be a cycle, never freed).
//!   Keep the registration beside it, in the PCI driver's data, and drop it
//!   in `remove`, before the parent device goes.
//!
//! # Driver shape
//!
//! A PCI NIC with a vector per queue keeps, in each vector's
//! [`irq::Handler`](crate::irq::Handler), a clone of its queue's
//! [`Arc<Napi>`]; the handler masks the vector and calls
//! [`Napi::schedule`]. [`Driver::poll`] reclaims transmit completions
//! (waking a stopped queue with [`Device::wake_tx_queue`]), hands received
//! frames up with [`NapiPoll::receive`], and on completion unmasks the
//! vector. Link changes are best read in a poll too (the link interrupt
//! schedules queue 0's context), which has the [`Device`] at hand for
//! [`Device::carrier_on`] / [`Device::carrier_off`].
//!
//! # Gaps
//!
//! No offloads (checksum, scatter-gather, TSO, VLAN), no XDP, no page
//! pool (received frames are copied into new buffers), no changing of the
//! MAC address or of the number of queues after registration, no byte
//! queue limits, no `ndo_tx_timeout` watchdog, and of ethtool only
//! `-i`, `-S` and the link state.
//!
//! # Contexts
//!
//! [`Driver::open`], [`Driver::stop`], [`Driver::change_mtu`] and the
//! ethtool callbacks run in process context with RTNL held.
//! [`Driver::start_xmit`] runs with bottom halves disabled, one call at a
//! time per transmit queue. [`Driver::poll`] runs in softirq context (or a
//! NAPI kernel thread), one call at a time per NAPI context.
//! [`Driver::set_rx_mode`] runs in atomic context with the device's address
//! lock held. [`Driver::get_stats64`] may run in any context but hard
//! interrupt context, concurrently with everything else. None of these may
//! sleep except the first group.
//!
//! # Examples
//!
//! A two-queue software loopback: what a queue transmits is stored, the
//! queue's NAPI context is scheduled, and its poll hands the frame back to
//! the stack as received, where a packet handler sees it.
//!
//! ```
//! use core::sync::atomic::{AtomicU64, Ordering};
//! use kernel::{
//!     c_str, delay::msleep,
//!     net_device::{self, Device, NapiPoll, Registration, Skb, Stats64, StatsNames, TxResult},
//!     netdev::{PacketHandler, PacketRegistration},
//!     new_spinlock,
//!     prelude::*,
//!     sync::{Arc, SpinLock},
//!     types::ARef,
//! };
//!
//! #[pin_data]
//! struct Loopback {
//!     #[pin]
//!     pending: SpinLock<[Option<KVec<u8>>; 2]>,
//!     tx: [AtomicU64; 2],
//!     rx: [AtomicU64; 2],
//!     opened: AtomicU64,
//! }
//!
//! impl net_device::Driver for Loopback {
//!     const NAME: &'static CStr = c_str!("doctest-loop");
//!
//!     fn open(&self, _dev: &Device<Self>) -> Result {
//!         self.opened.fetch_add(1, Ordering::Relaxed);
//!         Ok(())
//!     }
//!
//!     fn stop(&self, _dev: &Device<Self>) {}
//!
//!     fn start_xmit(&self, dev: &Device<Self>, skb: Skb, queue: u16) -> TxResult {
//!         let mut frame = KVec::new();
//!         if frame.extend_from_slice(skb.data(), GFP_ATOMIC).is_err() {
//!             return TxResult::Ok; // dropped with `skb`
//!         }
//!         if let Some(slot) = self.pending.lock().get_mut(usize::from(queue)) {
//!             *slot = Some(frame);
//!         }
//!         if let Some(n) = self.tx.get(usize::from(queue)) {
//!             n.fetch_add(1, Ordering::Relaxed);
//!         }
//!         skb.consume();
//!         if let Some(napi) = dev.napi(queue) {
//!             napi.schedule();
//!         }
//!         TxResult::Ok
//!     }
//!
//!     fn poll(&self, _dev: &Device<Self>, napi: &NapiPoll<'_>, budget: u32) -> u32 {
//!         let q = usize::from(napi.queue());
//!         let mut done = 0;
//!         while done < budget {
//!             let Some(frame) = self.pending.lock().get_mut(q).and_then(Option::take) else {
//!                 break;
//!             };
//!             if napi.receive(&frame).is_ok() {
//!                 if let Some(n) = self.rx.get(q) {
//!                     n.fetch_add(1, Ordering::Relaxed);
//!                 }
//!             }
//!             done += 1;
//!         }
//!         if done < budget {
//!             napi.complete_done(done);
//!         }
//!         done
//!     }
//!
//!     fn get_stats64(&self, _dev: &Device<Self>, stats: &mut Stats64) {
//!         for q in 0..2 {
//!             stats.tx_packets += self.tx.get(q).map_or(0, |n| n.load(Ordering::Relaxed));
//!             stats.rx_packets += self.rx.get(q).map_or(0, |n| n.load(Ordering::Relaxed));
//!         }
//!     }
//!
//!     fn stats_count(&self) -> usize {
//!         4
//!     }
//!
//!     fn stats_strings(&self, _dev: &Device<Self>, names: &mut StatsNames<'_>) {
//!         for q in 0..2 {
//!             names.push(format_args!("tx{q}_packets"));
//!             names.push(format_args!("rx{q}_packets"));
//!         }
//!     }
//!
//!     fn stats(&self, _dev: &Device<Self>, values: &mut [u64]) {
//!         for (i, v) in values.iter_mut().enumerate() {
//!             let counters = if i % 2 == 0 { &self.tx } else { &self.rx };
//!             *v = counters.get(i / 2).map_or(0, |n| n.load(Ordering::Relaxed));
//!         }
//!     }
//! }
//!
//! struct Seen(AtomicU64);
//!
//! impl PacketHandler for Seen {
//!     fn receive(&self, frame: &[u8]) {
//!         if frame.get(14..18) == Some(&b"loop"[..]) {
//!             self.0.fetch_add(1, Ordering::Relaxed);
//!         }
//!     }
//! }
//!
//! let driver = Arc::pin_init(
//!     pin_init!(Loopback {
//!         pending <- new_spinlock!([None, None]),
//!         tx: [AtomicU64::new(0), AtomicU64::new(0)],
//!         rx: [AtomicU64::new(0), AtomicU64::new(0)],
//!         opened: AtomicU64::new(0),
//!     }),
//!     GFP_KERNEL,
//! )?;
//! let mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
//! let options = net_device::Options {
//!     tx_queues: 2,
//!     rx_queues: 2,
//!     max_mtu: 9000,
//!     ..net_device::Options::new(mac)
//! };
//! let reg = Registration::new(options, driver.clone())?;
//! let dev = reg.device();
//! assert_eq!(dev.mac(), Some(mac));
//! assert_eq!(dev.mtu(), 1500);
//! assert!(!dev.has_carrier());
//!
//! // MTU: the driver accepts everything within the range.
//! reg.set_mtu(9000)?;
//! assert_eq!(dev.mtu(), 9000);
//! assert_eq!(reg.set_mtu(9001), Err(EINVAL));
//! reg.set_mtu(1500)?;
//!
//! // Carrier first, so that opening attaches the queueing discipline.
//! dev.carrier_on();
//! assert!(dev.has_carrier());
//! reg.open()?;
//! assert!(dev.is_up());
//! assert_eq!(driver.opened.load(Ordering::Relaxed), 1);
//!
//! let seen = Arc::new(Seen(AtomicU64::new(0)), GFP_KERNEL)?;
//! let pkt = PacketRegistration::new(&ARef::from(dev.net_device()), 0x88b5, seen.clone())?;
//! let mut frame = [0u8; 60];
//! frame[..6].copy_from_slice(&mac);
//! frame[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 2]);
//! frame[12..14].copy_from_slice(&[0x88, 0xb5]);
//! frame[14..18].copy_from_slice(b"loop");
//! dev.transmit(&frame)?;
//! let mut waited = 0;
//! while seen.0.load(Ordering::Relaxed) == 0 && waited < 200 {
//!     msleep(10);
//!     waited += 1;
//! }
//! assert_eq!(seen.0.load(Ordering::Relaxed), 1);
//! let total = |c: &[AtomicU64; 2]| c.iter().map(|n| n.load(Ordering::Relaxed)).sum::<u64>();
//! // At least: opening may have made IPv6 send a frame or two as well.
//! assert!(total(&driver.tx) >= 1);
//! assert!(total(&driver.rx) >= 1);
//!
//! // Stopping the transmit queues and waking them again.
//! dev.stop_tx_queue(1);
//! assert_eq!(dev.tx_queue_stopped(1), Some(true));
//! dev.wake_tx_queue(1);
//! assert_eq!(dev.tx_queue_stopped(1), Some(false));
//! assert_eq!(dev.tx_queue_stopped(2), None);
//!
//! // Unregistering while up closes the device (disabling NAPI) first.
//! drop(pkt);
//! drop(reg);
//! # Ok::<(), Error>(())
//! ```

use crate::{
    alloc::{flags::GFP_KERNEL, KVec},
    device,
    error::{code::*, Error, Result},
    netdev::NetDevice,
    str::CStr,
    sync::Arc,
    types::Opaque,
};
use core::{cell::Cell, marker::PhantomData, ops::Deref, ptr::NonNull};

/// Length of an Ethernet address (`ETH_ALEN`).
pub const ETH_ALEN: usize = 6;

/// The smallest MTU an Ethernet device may have (`ETH_MIN_MTU`).
pub const ETH_MIN_MTU: u32 = 68;

/// The largest MTU an Ethernet device may have (`ETH_MAX_MTU`).
pub const ETH_MAX_MTU: u32 = 0xffff;

/// The most transmit or receive queues a [`Registration`] may ask for.
pub const MAX_QUEUES: u16 = 256;

/// Length of an ethtool string, NUL included (`ETH_GSTRING_LEN`).
const ETH_GSTRING_LEN: usize = bindings::ETH_GSTRING_LEN as usize;

/// The callbacks of a driver-implemented Ethernet device.
///
/// See the [module documentation](self) for the contexts each callback runs
/// in and what the abstraction does around them.
pub trait Driver: Send + Sync + Sized + 'static {
    /// The driver's name, as `ethtool -i` shows it (at most 31 bytes are
    /// shown).
    const NAME: &'static CStr;

    /// The device is being brought up (`ndo_open`). The NAPI contexts are
    /// already enabled; all transmit queues are started when this returns
    /// `Ok`.
    ///
    /// Process context, RTNL held.
    fn open(&self, dev: &Device<Self>) -> Result;

    /// The device is being brought down (`ndo_stop`). Transmission has
    /// stopped and the NAPI contexts are disabled (no poll runs) when this
    /// is called: quiesce the hardware (mask interrupts, reclaim buffers).
    ///
    /// Process context, RTNL held.
    fn stop(&self, dev: &Device<Self>);

    /// Sends `skb` on transmit queue `queue` (`ndo_start_xmit`).
    ///
    /// Return [`TxResult::Ok`] when the buffer was taken: queued to the
    /// hardware, or dropped (dropping `skb` frees it). When the queue is
    /// full, stop it with [`Device::stop_tx_queue`] (and wake it when room
    /// appears): returning [`TxResult::Busy`] with the buffer is meant for
    /// the rare case where that was not done in time.
    ///
    /// Bottom halves disabled, one call at a time per queue.
    fn start_xmit(&self, dev: &Device<Self>, skb: Skb, queue: u16) -> TxResult;

    /// Polls receive queue (and NAPI context) [`NapiPoll::queue`]: handle
    /// at most `budget` received frames, hand them up with
    /// [`NapiPoll::receive`], reclaim transmit completions, and return the
    /// number of received frames handled.
    ///
    /// When less than `budget` was done, call [`NapiPoll::complete_done`]
    /// and, if it returns `true`, re-enable the queue's interrupt. A poll
    /// that returns less than `budget` without completing is completed by
    /// the abstraction (so the context does not stay scheduled forever),
    /// but the driver then misses the moment to re-enable its interrupt.
    /// `budget` may be 0 (netpoll): then only reclaim transmit completions.
    ///
    /// Softirq context, one call at a time per NAPI context.
    fn poll(&self, dev: &Device<Self>, napi: &NapiPoll<'_>, budget: u32) -> u32;

    /// The MTU is about to change to `new_mtu`, which is within the range
    /// given at registration (`ndo_change_mtu`). Returning `Ok` accepts it;
    /// the default accepts everything.
    ///
    /// Process context, RTNL held; the device may be up.
    fn change_mtu(&self, _dev: &Device<Self>, _new_mtu: u32) -> Result {
        Ok(())
    }

    /// Fills in the counters the driver keeps (`ndo_get_stats64`); `stats`
    /// starts zeroed. The default reports nothing.
    ///
    /// Any context but hard interrupt context; may run concurrently with
    /// every other callback.
    fn get_stats64(&self, _dev: &Device<Self>, _stats: &mut Stats64) {}

    /// The receive filter changed (`ndo_set_rx_mode`): promiscuous and
    /// all-multicast flags, multicast list. The default does nothing.
    ///
    /// Atomic context with the device's address lock held: must not sleep.
    fn set_rx_mode(&self, _dev: &Device<Self>, _mode: &RxMode<'_>) {}

    /// Completes `ethtool -i` (`get_drvinfo`). Before the call, the driver
    /// name is [`Driver::NAME`] and the bus information the name of the
    /// parent device (for a PCI device, its address); the default keeps
    /// them.
    ///
    /// Process context, RTNL held.
    fn drvinfo(&self, _dev: &Device<Self>, _info: &mut DrvInfo<'_>) {}

    /// The number of counters `ethtool -S` shows. Called once, by
    /// [`Registration::new`]: the number is fixed for the life of the
    /// device. The default is none.
    fn stats_count(&self) -> usize {
        0
    }

    /// Names the [`stats_count`](Driver::stats_count) counters of
    /// `ethtool -S`, in order. Names not pushed are empty.
    ///
    /// Process context, RTNL held.
    fn stats_strings(&self, _dev: &Device<Self>, _names: &mut StatsNames<'_>) {}

    /// Fills in the values of the [`stats_count`](Driver::stats_count)
    /// counters of `ethtool -S`, in the order of their names; `values`
    /// starts zeroed and has exactly that length.
    ///
    /// Process context, RTNL held.
    fn stats(&self, _dev: &Device<Self>, _values: &mut [u64]) {}
}

/// What [`Driver::start_xmit`] did with a socket buffer.
pub enum TxResult {
    /// The buffer was taken (queued to the hardware or dropped):
    /// `NETDEV_TX_OK`.
    Ok,
    /// The queue is full and the buffer, returned here, was not sent: the
    /// core queues it again (`NETDEV_TX_BUSY`). Only the buffer given to
    /// the call may be returned; any other is freed and the call counts as
    /// [`TxResult::Ok`].
    Busy(Skb),
}

/// Counters of a device, as `ip -s link` shows them (a subset of `struct
/// rtnl_link_stats64`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats64 {
    /// Frames received and handed up.
    pub rx_packets: u64,
    /// Frames sent.
    pub tx_packets: u64,
    /// Bytes received (Ethernet header included, no FCS).
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Bad frames received.
    pub rx_errors: u64,
    /// Frames that could not be sent because of an error.
    pub tx_errors: u64,
    /// Frames received and dropped (no buffer, no room).
    pub rx_dropped: u64,
    /// Frames dropped on transmission (no room).
    pub tx_dropped: u64,
    /// Multicast frames received.
    pub multicast: u64,
}

/// The private area of a [`Registration`]'s `net_device`.
///
/// # Invariants
///
/// `napis[q]` was added to the device with `poll::<T>` and queue `q`;
/// `stats_count` is what `driver.stats_count()` returned at registration.
struct Priv<T: Driver> {
    driver: Arc<T>,
    napis: KVec<Arc<Napi>>,
    stats_count: usize,
}

/// An Ethernet device registered by a [`Registration<T>`].
///
/// Only ever used by reference: from [`Registration::device`], or as the
/// argument of a [`Driver`] callback. It dereferences to [`NetDevice`] for
/// the name, MAC address, MTU, state and transmission of frames.
///
/// # Invariants
///
/// The `net_device` was allocated by [`Registration<T>::new`], its private
/// area holds an initialised `Priv<T>`, and both stay valid for the
/// lifetime of the reference.
#[repr(transparent)]
pub struct Device<T: Driver>(Opaque<bindings::net_device>, PhantomData<T>);

// SAFETY: A `Device` is only used by reference (never owned); moving the
// reference to another thread is covered by `Sync`.
unsafe impl<T: Driver> Send for Device<T> {}

// SAFETY: Every method on `&Device` calls a C function that may run on
// several CPUs at once (carrier, queue control: atomic bit operations), or
// reads the private area, which does not change after registration and
// holds `Sync` data (`Arc<T>` with `T: Sync`, `Arc<Napi>`).
unsafe impl<T: Driver> Sync for Device<T> {}

impl<T: Driver> Device<T> {
    /// Turns a `net_device` pointer into a reference.
    ///
    /// # Safety
    ///
    /// `ptr` was allocated by [`Registration<T>::new`] (with the same `T`),
    /// its private area is initialised, and both stay valid for `'a`.
    unsafe fn from_raw<'a>(ptr: *mut bindings::net_device) -> &'a Self {
        // SAFETY: `Device<T>` is `repr(transparent)` over the C struct (the
        // `PhantomData` has size 0); validity is the caller's promise.
        unsafe { &*ptr.cast::<Self>() }
    }

    fn as_raw(&self) -> *mut bindings::net_device {
        self.0.get()
    }

    fn private(&self) -> &Priv<T> {
        // SAFETY: The device is valid and its private area holds an
        // initialised `Priv<T>` (type invariants) that is not written while
        // the device is shared.
        unsafe { &*bindings::netdev_priv(self.as_raw()).cast::<Priv<T>>() }
    }

    /// The driver's object.
    pub fn driver(&self) -> &Arc<T> {
        &self.private().driver
    }

    /// The device as a [`NetDevice`] (also reachable through `Deref`), for
    /// instance to take a reference with `ARef::from`.
    pub fn net_device(&self) -> &NetDevice {
        // SAFETY: `NetDevice` and `Device<T>` are both `repr(transparent)`
        // over `Opaque<net_device>`; the device is valid for the lifetime of
        // `self`, which satisfies `NetDevice`'s invariants.
        unsafe { &*self.as_raw().cast::<NetDevice>() }
    }

    /// The NAPI context of receive queue `queue`, if there is such a queue.
    /// Clone it to schedule the poll from an interrupt handler.
    pub fn napi(&self, queue: u16) -> Option<&Arc<Napi>> {
        self.private().napis.get(usize::from(queue))
    }

    /// Signals that the link is up (`netif_carrier_on()`): the stack
    /// starts transmitting (after the link-watch work ran). Any context.
    pub fn carrier_on(&self) {
        // SAFETY: The device is valid (type invariants); the function only
        // uses atomic bit operations and the link-watch work.
        unsafe { bindings::netif_carrier_on(self.as_raw()) };
    }

    /// Signals that the link is down (`netif_carrier_off()`). Any context.
    pub fn carrier_off(&self) {
        // SAFETY: As for `carrier_on`.
        unsafe { bindings::netif_carrier_off(self.as_raw()) };
    }

    /// The number of transmit queues.
    pub fn tx_queues(&self) -> u16 {
        // SAFETY: The device is valid; the number of queues is fixed at
        // allocation (we never change the real number).
        let n = unsafe { (*self.as_raw()).num_tx_queues };
        u16::try_from(n).unwrap_or(MAX_QUEUES)
    }

    fn tx_queue(&self, queue: u16) -> Option<*mut bindings::netdev_queue> {
        if queue >= self.tx_queues() {
            return None;
        }
        // SAFETY: The device is valid and `queue` is below its number of
        // transmit queues, which live as long as the device.
        Some(unsafe { bindings::netdev_get_tx_queue(self.as_raw(), queue.into()) })
    }

    /// Stops transmit queue `queue` (`netif_tx_stop_queue()`): the stack
    /// calls [`Driver::start_xmit`] for it no more until it is woken.
    /// Out-of-range queues are ignored. Any context.
    pub fn stop_tx_queue(&self, queue: u16) {
        if let Some(txq) = self.tx_queue(queue) {
            // SAFETY: `txq` is a queue of this valid device; the flag is
            // set atomically.
            unsafe { bindings::netif_tx_stop_queue(txq) };
        }
    }

    /// Wakes transmit queue `queue` (`netif_tx_wake_queue()`), scheduling
    /// its queueing discipline if it was stopped. Out-of-range queues are
    /// ignored. Any context.
    pub fn wake_tx_queue(&self, queue: u16) {
        if let Some(txq) = self.tx_queue(queue) {
            // SAFETY: `txq` is a queue of this valid device; the function
            // may be called in any context.
            unsafe { bindings::netif_tx_wake_queue(txq) };
        }
    }

    /// Whether transmit queue `queue` is stopped, or `None` when there is
    /// no such queue.
    pub fn tx_queue_stopped(&self, queue: u16) -> Option<bool> {
        // SAFETY: The queue belongs to this valid device; an atomic read.
        self.tx_queue(queue)
            .map(|txq| unsafe { bindings::netif_tx_queue_stopped(txq) })
    }

    /// Starts every transmit queue without scheduling them
    /// (`netif_tx_start_all_queues()`).
    pub fn start_all_tx_queues(&self) {
        // SAFETY: The device is valid; atomic bit operations.
        unsafe { bindings::netif_tx_start_all_queues(self.as_raw()) };
    }

    /// Stops every transmit queue (`netif_tx_stop_all_queues()`).
    pub fn stop_all_tx_queues(&self) {
        // SAFETY: The device is valid; atomic bit operations.
        unsafe { bindings::netif_tx_stop_all_queues(self.as_raw()) };
    }
}

impl<T: Driver> Deref for Device<T> {
    type Target = NetDevice;

    fn deref(&self) -> &NetDevice {
        self.net_device()
    }
}

/// How to set up the device of a [`Registration`].
pub struct Options<'a> {
    /// The parent device (the PCI function): gives the device its sysfs
    /// `device` link and the bus information of `ethtool -i`
    /// (`SET_NETDEV_DEV()`). It must outlive the registration.
    pub parent: Option<&'a device::Device>,
    /// The MAC address: unicast, not all zeros.
    pub mac: [u8; ETH_ALEN],
    /// The number of transmit queues, 1 to [`MAX_QUEUES`].
    pub tx_queues: u16,
    /// The number of receive queues, each with its NAPI context, 1 to
    /// [`MAX_QUEUES`].
    pub rx_queues: u16,
    /// The initial MTU, within `min_mtu..=max_mtu`.
    pub mtu: u32,
    /// The smallest MTU, at least [`ETH_MIN_MTU`].
    pub min_mtu: u32,
    /// The largest MTU, at most [`ETH_MAX_MTU`].
    pub max_mtu: u32,
}

impl Options<'_> {
    /// One queue each way, MTU 1500 (the range 68 to 1500), no parent.
    pub fn new(mac: [u8; ETH_ALEN]) -> Self {
        Options {
            parent: None,
            mac,
            tx_queues: 1,
            rx_queues: 1,
            mtu: 1500,
            min_mtu: ETH_MIN_MTU,
            max_mtu: 1500,
        }
    }

    fn check(&self) -> Result {
        let queues = 1..=MAX_QUEUES;
        let mac_ok = self.mac.first().is_some_and(|b| b & 1 == 0) && self.mac != [0; ETH_ALEN];
        if !queues.contains(&self.tx_queues)
            || !queues.contains(&self.rx_queues)
            || !mac_ok
            || self.min_mtu < ETH_MIN_MTU
            || self.max_mtu > ETH_MAX_MTU
            || !(self.min_mtu..=self.max_mtu).contains(&self.mtu)
        {
            return Err(EINVAL);
        }
        Ok(())
    }
}

/// The `net_device_ops` and `ethtool_ops` of a [`Driver`].
struct VTable<T: Driver>(PhantomData<T>);

impl<T: Driver> VTable<T> {
    const NETDEV_OPS: bindings::net_device_ops = bindings::net_device_ops {
        ndo_open: Some(ndo_open::<T>),
        ndo_stop: Some(ndo_stop::<T>),
        ndo_start_xmit: Some(ndo_start_xmit::<T>),
        ndo_set_rx_mode: Some(ndo_set_rx_mode::<T>),
        ndo_validate_addr: Some(bindings::eth_validate_addr),
        ndo_change_mtu: Some(ndo_change_mtu::<T>),
        ndo_get_stats64: Some(ndo_get_stats64::<T>),
        // SAFETY: All-zero is a valid `net_device_ops`: no callbacks.
        ..unsafe { core::mem::zeroed() }
    };

    const ETHTOOL_OPS: bindings::ethtool_ops = bindings::ethtool_ops {
        get_drvinfo: Some(get_drvinfo::<T>),
        get_link: Some(bindings::ethtool_op_get_link),
        get_strings: Some(get_strings::<T>),
        get_ethtool_stats: Some(get_ethtool_stats::<T>),
        get_sset_count: Some(get_sset_count::<T>),
        // SAFETY: All-zero is a valid `ethtool_ops`: no callbacks, no
        // capabilities.
        ..unsafe { core::mem::zeroed() }
    };

    fn netdev_ops() -> &'static bindings::net_device_ops {
        &Self::NETDEV_OPS
    }

    fn ethtool_ops() -> &'static bindings::ethtool_ops {
        &Self::ETHTOOL_OPS
    }
}

/// `ndo_open`: enables the NAPI contexts, calls [`Driver::open`], starts
/// the transmit queues.
///
/// # Safety
///
/// Called by the networking core, under RTNL, with a device of a live
/// [`Registration<T>`], once per transition to up.
unsafe extern "C" fn ndo_open<T: Driver>(dev: *mut bindings::net_device) -> crate::ffi::c_int {
    // SAFETY: See the safety requirements.
    let d = unsafe { Device::<T>::from_raw(dev) };
    let napis = &d.private().napis;
    for napi in napis.iter() {
        // SAFETY: The context was added to this device; it is disabled
        // (added disabled, or disabled by `ndo_stop`, or below), and RTNL
        // serialises us with `ndo_stop`.
        unsafe { bindings::napi_enable(napi.as_raw()) };
    }
    match d.driver().open(d) {
        Ok(()) => {
            d.start_all_tx_queues();
            0
        }
        Err(e) => {
            for napi in napis.iter() {
                // SAFETY: Enabled above; `napi_disable()` waits for a poll
                // the driver may have scheduled.
                unsafe { bindings::napi_disable(napi.as_raw()) };
            }
            e.to_errno()
        }
    }
}

/// `ndo_stop`: disables the NAPI contexts, then calls [`Driver::stop`].
///
/// # Safety
///
/// Called by the networking core, under RTNL, with a device of a live
/// [`Registration<T>`] that `ndo_open` brought up.
unsafe extern "C" fn ndo_stop<T: Driver>(dev: *mut bindings::net_device) -> crate::ffi::c_int {
    // SAFETY: See the safety requirements.
    let d = unsafe { Device::<T>::from_raw(dev) };
    for napi in d.private().napis.iter() {
        // SAFETY: `ndo_open` succeeded, so every context is enabled; this
        // waits for a running poll and leaves the context disabled.
        unsafe { bindings::napi_disable(napi.as_raw()) };
    }
    d.driver().stop(d);
    0
}

/// `ndo_start_xmit`.
///
/// # Safety
///
/// Called by the networking core with a device of a live
/// [`Registration<T>`] and a socket buffer the callee owns.
unsafe extern "C" fn ndo_start_xmit<T: Driver>(
    skb: *mut bindings::sk_buff,
    dev: *mut bindings::net_device,
) -> bindings::netdev_tx_t {
    // SAFETY: See the safety requirements.
    let d = unsafe { Device::<T>::from_raw(dev) };
    // SAFETY: We own `skb`. The device has no scatter-gather feature, so
    // the core linearises buffers before handing them to us; should one
    // still have fragments, we linearise it or drop it (we own it).
    let (queue, linear) = unsafe {
        let queue = bindings::skb_get_queue_mapping(skb);
        let linear = !bindings::skb_is_nonlinear(skb) || bindings::skb_linearize(skb) == 0;
        if !linear {
            bindings::dev_kfree_skb_any(skb);
        }
        (queue, linear)
    };
    if !linear {
        return bindings::netdev_tx_NETDEV_TX_OK;
    }
    let Some(ptr) = NonNull::new(skb) else {
        return bindings::netdev_tx_NETDEV_TX_OK;
    };
    // INVARIANT: We own `skb` and it is linear.
    let owned = Skb(ptr);
    match d.driver().start_xmit(d, owned, queue) {
        TxResult::Ok => bindings::netdev_tx_NETDEV_TX_OK,
        TxResult::Busy(back) if back.0 == ptr => {
            // The core keeps the buffer and queues it again.
            core::mem::forget(back);
            bindings::netdev_tx_NETDEV_TX_BUSY
        }
        TxResult::Busy(other) => {
            // Not the buffer we gave: the driver kept ours. Free this one.
            drop(other);
            bindings::netdev_tx_NETDEV_TX_OK
        }
    }
}

/// `ndo_change_mtu`.
///
/// # Safety
///
/// Called by the networking core, under RTNL, with a device of a live
/// [`Registration<T>`] and an MTU within the device's range.
unsafe extern "C" fn ndo_change_mtu<T: Driver>(
    dev: *mut bindings::net_device,
    new_mtu: crate::ffi::c_int,
) -> crate::ffi::c_int {
    // SAFETY: See the safety requirements.
    let d = unsafe { Device::<T>::from_raw(dev) };
    let Ok(mtu) = u32::try_from(new_mtu) else {
        return EINVAL.to_errno();
    };
    match d.driver().change_mtu(d, mtu) {
        Ok(()) => {
            // SAFETY: RTNL is held, under which the MTU is written; readers
            // use `READ_ONCE()` (`WRITE_ONCE()` here).
            unsafe { core::ptr::addr_of_mut!((*dev).mtu).write_volatile(mtu) };
            0
        }
        Err(e) => e.to_errno(),
    }
}

/// `ndo_get_stats64`.
///
/// # Safety
///
/// Called by the networking core with a device of a live
/// [`Registration<T>`] and `storage` valid for writes (zeroed by the core).
unsafe extern "C" fn ndo_get_stats64<T: Driver>(
    dev: *mut bindings::net_device,
    storage: *mut bindings::rtnl_link_stats64,
) {
    // SAFETY: See the safety requirements.
    let d = unsafe { Device::<T>::from_raw(dev) };
    let mut s = Stats64::default();
    d.driver().get_stats64(d, &mut s);
    // SAFETY: `storage` is valid for writes (safety requirements) and only
    // ours for the call.
    let out = unsafe { &mut *storage };
    out.rx_packets = s.rx_packets;
    out.tx_packets = s.tx_packets;
    out.rx_bytes = s.rx_bytes;
    out.tx_bytes = s.tx_bytes;
    out.rx_errors = s.rx_errors;
    out.tx_errors = s.tx_errors;
    out.rx_dropped = s.rx_dropped;
    out.tx_dropped = s.tx_dropped;
    out.multicast = s.multicast;
}

/// `ndo_set_rx_mode`.
///
/// # Safety
///
/// Called by the networking core with a device of a live
/// [`Registration<T>`] and its address lock held.
unsafe extern "C" fn ndo_set_rx_mode<T: Driver>(dev: *mut bindings::net_device) {
    // SAFETY: See the safety requirements.
    let d = unsafe { Device::<T>::from_raw(dev) };
    // INVARIANT: The address lock is held for the call, which the mode
    // does not outlive.
    let mode = RxMode {
        dev,
        _lock: PhantomData,
    };
    d.driver().set_rx_mode(d, &mode);
}

/// The receive filter of a device, given to [`Driver::set_rx_mode`].
///
/// # Invariants
///
/// The device's address lock is held for the lifetime of the value, so its
/// flags and multicast list do not change; `dev` is a live device of a
/// [`Registration`].
pub struct RxMode<'a> {
    dev: *mut bindings::net_device,
    _lock: PhantomData<&'a ()>,
}

impl RxMode<'_> {
    fn flags(&self) -> u32 {
        // SAFETY: The device is valid; the flags are read under the address
        // lock as the C drivers do.
        unsafe { (*self.dev).flags }
    }

    /// Should every frame be received (`IFF_PROMISC`)?
    pub fn promisc(&self) -> bool {
        self.flags() & bindings::net_device_flags_IFF_PROMISC != 0
    }

    /// Should every multicast frame be received (`IFF_ALLMULTI`)?
    pub fn allmulti(&self) -> bool {
        self.flags() & bindings::net_device_flags_IFF_ALLMULTI != 0
    }

    /// The number of multicast addresses (`netdev_mc_count()`).
    pub fn multicast_count(&self) -> usize {
        // SAFETY: The list is stable under the address lock (type
        // invariants).
        let n = unsafe { (*self.dev).mc.count };
        usize::try_from(n).unwrap_or(0)
    }

    /// The multicast addresses to receive (`netdev_for_each_mc_addr()`).
    pub fn multicast(&self) -> MulticastIter<'_> {
        // SAFETY: The device is valid; `mc.list` is its multicast list head.
        let head = unsafe { core::ptr::addr_of_mut!((*self.dev).mc.list) };
        // SAFETY: The list is stable under the address lock (type
        // invariants); an empty list points back at its head.
        let next = unsafe { (*head).next };
        // INVARIANT: `next` is an entry of the list, or its head.
        MulticastIter {
            head,
            next,
            _mode: PhantomData,
        }
    }
}

/// The multicast addresses of an [`RxMode`].
///
/// # Invariants
///
/// `next` is `head` or the `list` field of a `netdev_hw_addr` of the list
/// at `head`, which does not change for `'a`.
pub struct MulticastIter<'a> {
    head: *mut bindings::list_head,
    next: *mut bindings::list_head,
    _mode: PhantomData<&'a RxMode<'a>>,
}

impl Iterator for MulticastIter<'_> {
    type Item = [u8; ETH_ALEN];

    fn next(&mut self) -> Option<[u8; ETH_ALEN]> {
        if self.next == self.head || self.next.is_null() {
            return None;
        }
        // SAFETY: `next` is the `list` field of a live `netdev_hw_addr`
        // (type invariants).
        let ha = unsafe { &*crate::container_of!(self.next, bindings::netdev_hw_addr, list) };
        let mut mac = [0u8; ETH_ALEN];
        for (b, a) in mac.iter_mut().zip(ha.addr.iter()) {
            *b = *a;
        }
        // INVARIANT: The next entry of the stable list, or its head.
        self.next = ha.list.next;
        Some(mac)
    }
}

/// The driver information of `ethtool -i`, given to [`Driver::drvinfo`].
pub struct DrvInfo<'a>(&'a mut bindings::ethtool_drvinfo);

/// Copies `s` into a C string field of 32 bytes, truncated, NUL-terminated.
fn set_field(field: &mut [crate::ffi::c_char; 32], s: &[u8]) {
    let last = field.len() - 1;
    for (i, c) in field.iter_mut().enumerate() {
        let b = if i < last {
            s.get(i).copied().unwrap_or(0)
        } else {
            0
        };
        *c = b as crate::ffi::c_char;
    }
}

impl DrvInfo<'_> {
    /// Sets the driver name (at most 31 bytes are kept).
    pub fn set_driver(&mut self, s: &str) {
        set_field(&mut self.0.driver, s.as_bytes());
    }

    /// Sets the driver version (at most 31 bytes are kept).
    pub fn set_version(&mut self, s: &str) {
        set_field(&mut self.0.version, s.as_bytes());
    }

    /// Sets the firmware version (at most 31 bytes are kept).
    pub fn set_fw_version(&mut self, s: &str) {
        set_field(&mut self.0.fw_version, s.as_bytes());
    }

    /// Sets the bus information (at most 31 bytes are kept).
    pub fn set_bus_info(&mut self, s: &str) {
        set_field(&mut self.0.bus_info, s.as_bytes());
    }
}

/// `ethtool_ops.get_drvinfo`.
///
/// # Safety
///
/// Called by the ethtool core, under RTNL, with a device of a live
/// [`Registration<T>`] and `info` valid for writes.
unsafe extern "C" fn get_drvinfo<T: Driver>(
    dev: *mut bindings::net_device,
    info: *mut bindings::ethtool_drvinfo,
) {
    // SAFETY: See the safety requirements.
    let d = unsafe { Device::<T>::from_raw(dev) };
    // SAFETY: `info` is valid for writes and ours for the call.
    let mut info = DrvInfo(unsafe { &mut *info });
    set_field(&mut info.0.driver, T::NAME.as_bytes());
    // SAFETY: The device is valid; its parent, if set, is a live device
    // (it holds a reference to it while registered), whose name is a
    // NUL-terminated string that lives as long as it.
    let bus = unsafe {
        let parent = (*dev).dev.parent;
        if parent.is_null() {
            None
        } else {
            let name = bindings::dev_name(parent);
            (!name.is_null()).then(|| CStr::from_char_ptr(name))
        }
    };
    if let Some(bus) = bus {
        set_field(&mut info.0.bus_info, bus.as_bytes());
    }
    d.driver().drvinfo(d, &mut info);
}

/// The names of `ethtool -S` counters, given to [`Driver::stats_strings`].
///
/// # Invariants
///
/// `buf` holds `ETH_GSTRING_LEN` bytes per counter; `next` is the index of
/// the next name to write.
pub struct StatsNames<'a> {
    buf: &'a mut [u8],
    next: usize,
}

impl StatsNames<'_> {
    /// Appends the next name (at most 31 bytes are kept); returns `false`,
    /// writing nothing, when every counter already has a name.
    pub fn push(&mut self, name: core::fmt::Arguments<'_>) -> bool {
        let start = self.next * ETH_GSTRING_LEN;
        let Some(slot) = self.buf.get_mut(start..start + ETH_GSTRING_LEN) else {
            return false;
        };
        slot.fill(0);
        let mut w = SlotWriter { slot, len: 0 };
        // A name that does not fit is truncated, not an error.
        let _ = core::fmt::Write::write_fmt(&mut w, name);
        self.next += 1;
        true
    }
}

/// Writes formatted text into one `ETH_GSTRING_LEN` slot, keeping the last
/// byte NUL.
struct SlotWriter<'a> {
    slot: &'a mut [u8],
    len: usize,
}

impl core::fmt::Write for SlotWriter<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = self.slot.len().saturating_sub(1);
        for &b in s.as_bytes() {
            if self.len >= room {
                break;
            }
            if let Some(d) = self.slot.get_mut(self.len) {
                *d = b;
            }
            self.len += 1;
        }
        Ok(())
    }
}

/// `ethtool_ops.get_sset_count`.
///
/// # Safety
///
/// Called by the ethtool core with a device of a live [`Registration<T>`].
unsafe extern "C" fn get_sset_count<T: Driver>(
    dev: *mut bindings::net_device,
    sset: crate::ffi::c_int,
) -> crate::ffi::c_int {
    // SAFETY: See the safety requirements.
    let d = unsafe { Device::<T>::from_raw(dev) };
    if u32::try_from(sset) == Ok(bindings::ethtool_stringset_ETH_SS_STATS) {
        crate::ffi::c_int::try_from(d.private().stats_count).unwrap_or(0)
    } else {
        -(bindings::EOPNOTSUPP as crate::ffi::c_int)
    }
}

/// `ethtool_ops.get_strings`.
///
/// # Safety
///
/// Called by the ethtool core, under RTNL, with a device of a live
/// [`Registration<T>`] and, for `ETH_SS_STATS`, `data` valid for writes of
/// `ETH_GSTRING_LEN` bytes per counter that `get_sset_count` reported.
unsafe extern "C" fn get_strings<T: Driver>(
    dev: *mut bindings::net_device,
    sset: u32,
    data: *mut u8,
) {
    // SAFETY: See the safety requirements.
    let d = unsafe { Device::<T>::from_raw(dev) };
    if sset != bindings::ethtool_stringset_ETH_SS_STATS || data.is_null() {
        return;
    }
    let count = d.private().stats_count;
    let Some(len) = count.checked_mul(ETH_GSTRING_LEN) else {
        return;
    };
    // SAFETY: `data` holds `len` bytes, the count `get_sset_count`
    // reported (it never changes: `Priv` invariants), and is ours for the
    // call.
    let buf = unsafe { core::slice::from_raw_parts_mut(data, len) };
    buf.fill(0);
    // INVARIANT: `len` bytes, one slot per counter; none written yet.
    let mut names = StatsNames { buf, next: 0 };
    d.driver().stats_strings(d, &mut names);
}

/// `ethtool_ops.get_ethtool_stats`.
///
/// # Safety
///
/// Called by the ethtool core, under RTNL, with a device of a live
/// [`Registration<T>`] and `data` valid for writes of as many `u64` as
/// `get_sset_count` reported for `ETH_SS_STATS`.
unsafe extern "C" fn get_ethtool_stats<T: Driver>(
    dev: *mut bindings::net_device,
    _stats: *mut bindings::ethtool_stats,
    data: *mut u64,
) {
    // SAFETY: See the safety requirements.
    let d = unsafe { Device::<T>::from_raw(dev) };
    let count = d.private().stats_count;
    if data.is_null() || count == 0 {
        return;
    }
    // SAFETY: `data` holds `count` values (safety requirements, and the
    // count never changes) and is ours for the call.
    let values = unsafe { core::slice::from_raw_parts_mut(data, count) };
    values.fill(0);
    d.driver().stats(d, values);
}

/// An owned socket buffer (`struct sk_buff`) handed to
/// [`Driver::start_xmit`]. Dropping it frees it as a drop
/// (`dev_kfree_skb_any()`); [`Skb::consume`] frees it as sent.
///
/// # Invariants
///
/// The pointer is a socket buffer that we own (one reference), and it is
/// linear: its whole frame is in the head.
pub struct Skb(NonNull<bindings::sk_buff>);

// SAFETY: An owned socket buffer may be freed or read on any CPU, in any
// context (`dev_kfree_skb_any()` picks the right way).
unsafe impl Send for Skb {}

// SAFETY: Through `&Skb` we only read its length and data, which do not
// change while we own it.
unsafe impl Sync for Skb {}

impl Skb {
    /// The length of the frame, Ethernet header included.
    pub fn len(&self) -> usize {
        // SAFETY: We own the buffer (type invariants).
        unsafe { (*self.0.as_ptr()).len as usize }
    }

    /// Whether the frame is empty (never the case for a frame to send).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The frame, from the destination MAC on (no FCS).
    pub fn data(&self) -> &[u8] {
        let skb = self.0.as_ptr();
        // SAFETY: We own the buffer and it is linear (type invariants):
        // `data` points to `skb_headlen()` (the whole length) readable
        // bytes that live while the buffer does.
        unsafe {
            let len = bindings::skb_headlen(skb) as usize;
            let data = (*skb).data;
            if data.is_null() {
                &[]
            } else {
                core::slice::from_raw_parts(data, len)
            }
        }
    }

    /// The transmit queue the stack chose for the frame.
    pub fn queue_mapping(&self) -> u16 {
        // SAFETY: We own the buffer (type invariants).
        unsafe { bindings::skb_get_queue_mapping(self.0.as_ptr()) }
    }

    /// Frees the buffer as successfully sent (`dev_consume_skb_any()`), as
    /// opposed to dropping it, which counts as a drop for tracing tools.
    pub fn consume(self) {
        let skb = self.0.as_ptr();
        core::mem::forget(self);
        // SAFETY: We owned `skb`; `self` is forgotten, so it is freed once.
        unsafe { bindings::dev_consume_skb_any(skb) };
    }
}

impl Drop for Skb {
    fn drop(&mut self) {
        // SAFETY: We own the buffer (type invariants); freed once.
        unsafe { bindings::dev_kfree_skb_any(self.0.as_ptr()) };
    }
}

/// A NAPI context (`struct napi_struct`): one per receive queue of a
/// [`Registration`], polled by [`Driver::poll`].
///
/// Obtained with [`Device::napi`]; clone the [`Arc`] to schedule the poll
/// from an interrupt handler. Enabling and disabling follow the device's
/// up and down transitions (see the [module documentation](self)).
///
/// # Invariants
///
/// `napi` was zeroed and then added to a device of a [`Registration`] with
/// `netif_napi_add_weight()`. From then on it is, in this order: disabled
/// (as added), enabled and disabled again any number of times under RTNL
/// by `ndo_open`/`ndo_stop`, then deleted (`netif_napi_del()`) while
/// disabled, before the device is freed. In every one of these states
/// `napi_schedule()` may be called on it: when disabled or deleted its
/// `SCHED` bit is set and scheduling does nothing.
#[repr(C)]
pub struct Napi {
    napi: Opaque<bindings::napi_struct>,
    queue: u16,
}

// SAFETY: The only operation on a shared `Napi` outside the abstraction's
// own callbacks is `napi_schedule()`, an atomic operation on the state
// that may run on any CPU; the structure may be freed from any thread once
// deleted.
unsafe impl Send for Napi {}

// SAFETY: As above.
unsafe impl Sync for Napi {}

impl Napi {
    fn as_raw(&self) -> *mut bindings::napi_struct {
        self.napi.get()
    }

    /// The receive queue this context polls.
    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// Schedules the poll (`napi_schedule()`); returns whether this call
    /// scheduled it (`false` when already scheduled, or disabled, or the
    /// device is gone).
    ///
    /// Meant for hard interrupt context (the queue's interrupt handler) and
    /// softirq context. From a task with bottom halves enabled, use
    /// [`Napi::schedule_from_task`]: otherwise the poll may wait for the
    /// next interrupt on this CPU.
    pub fn schedule(&self) -> bool {
        // SAFETY: Scheduling is allowed in every state of the context (type
        // invariants); the context is alive while `self` is.
        unsafe { bindings::napi_schedule(self.as_raw()) }
    }

    /// As [`Napi::schedule`], from a task: bottom halves are disabled around
    /// it so that the poll runs when they are enabled again. Process
    /// context with interrupts enabled.
    pub fn schedule_from_task(&self) -> bool {
        // SAFETY: Process context with interrupts enabled (documented
        // requirement), where bottom halves may be disabled.
        unsafe { bindings::local_bh_disable() };
        let scheduled = self.schedule();
        // SAFETY: Disabled just above on this CPU.
        unsafe { bindings::local_bh_enable() };
        scheduled
    }
}

/// A running poll of a [`Napi`] context, given to [`Driver::poll`].
///
/// # Invariants
///
/// Only exists during a call of `poll::<T>` for `napi`, which owns the
/// context's `SCHED` bit until `completed` is set; `dev` is its device.
pub struct NapiPoll<'a> {
    napi: &'a Napi,
    dev: *mut bindings::net_device,
    budget: u32,
    completed: Cell<bool>,
}

impl NapiPoll<'_> {
    /// The receive queue being polled.
    pub fn queue(&self) -> u16 {
        self.napi.queue
    }

    /// The NAPI context being polled.
    pub fn napi(&self) -> &Napi {
        self.napi
    }

    /// Hands `frame` (a complete Ethernet frame, destination MAC first, no
    /// FCS) to the stack as received on this queue: copies it into a new
    /// socket buffer (`napi_alloc_skb()`), sets its protocol
    /// (`eth_type_trans()`) and passes it to GRO (`napi_gro_receive()`).
    ///
    /// # Errors
    ///
    /// `EINVAL` when `frame` is shorter than an Ethernet header or longer
    /// than 4 GiB, or when the budget is 0 (netpoll: no receiving then);
    /// `ENOMEM` when no buffer could be allocated (count it as an
    /// `rx_dropped`).
    pub fn receive(&self, frame: &[u8]) -> Result {
        if self.budget == 0 || frame.len() < crate::netdev::ETH_HLEN {
            return Err(EINVAL);
        }
        let len = u32::try_from(frame.len()).map_err(|_| EINVAL)?;
        let napi = self.napi.as_raw();
        // SAFETY: We are in this context's poll (type invariants), the
        // softirq context `napi_alloc_skb()` needs.
        let skb = unsafe { bindings::napi_alloc_skb(napi, len) };
        if skb.is_null() {
            return Err(ENOMEM);
        }
        // SAFETY: `skb` is new, ours, with room for `len` bytes; `frame` is
        // valid for `len` bytes and at least an Ethernet header long, which
        // `eth_type_trans()` pulls. `dev` is the context's live device.
        // `napi_gro_receive()` takes ownership of the buffer.
        unsafe {
            bindings::skb_put_data(skb, frame.as_ptr().cast(), len);
            let proto = bindings::eth_type_trans(skb, self.dev);
            bindings::pcieoe_skb_set_protocol(skb, proto);
            bindings::skb_record_rx_queue(skb, self.napi.queue);
            bindings::napi_gro_receive(napi, skb);
        }
        Ok(())
    }

    /// Ends the poll (`napi_complete_done()`) after `work_done` frames,
    /// fewer than the budget; returns whether the driver may re-enable the
    /// queue's interrupt (`false` when the context stays scheduled, or when
    /// `work_done` is not below the budget or this was already called, in
    /// which case nothing is done).
    ///
    /// Return at most `work_done` from [`Driver::poll`] afterwards.
    pub fn complete_done(&self, work_done: u32) -> bool {
        if self.completed.get() || work_done >= self.budget {
            return false;
        }
        self.completed.set(true);
        let work = crate::ffi::c_int::try_from(work_done).unwrap_or(0);
        // SAFETY: We own the context's `SCHED` bit (type invariants), and
        // release it once (`completed`).
        unsafe { bindings::napi_complete_done(self.napi.as_raw(), work) }
    }
}

/// The NAPI poll callback of a [`Registration<T>`]'s contexts.
///
/// # Safety
///
/// Called by the networking core with `napi` the `napi` field of a
/// [`Napi`] added by [`Registration<T>::new`], owning its `SCHED` bit;
/// only while the context is enabled, hence while its device is up and
/// alive.
unsafe extern "C" fn poll<T: Driver>(
    napi: *mut bindings::napi_struct,
    budget: crate::ffi::c_int,
) -> crate::ffi::c_int {
    // SAFETY: `napi` is the first field of a live `Napi` (`repr(C)`,
    // `Opaque` is `repr(transparent)`).
    let this =
        unsafe { &*crate::container_of!(napi.cast::<Opaque<bindings::napi_struct>>(), Napi, napi) };
    // SAFETY: `netif_napi_add_weight()` set `dev` to the device, which is
    // alive and registered by a `Registration<T>` while polls run.
    let dev = unsafe { (*napi).dev };
    // SAFETY: As above.
    let d = unsafe { Device::<T>::from_raw(dev) };
    let budget = u32::try_from(budget).unwrap_or(0);
    // INVARIANT: We are in the poll of `this`, owning its `SCHED` bit.
    let ctx = NapiPoll {
        napi: this,
        dev,
        budget,
        completed: Cell::new(false),
    };
    let work = d.driver().poll(d, &ctx, budget).min(budget);
    let work = if ctx.completed.get() {
        // After completion the core must not see a full budget (it would
        // put the context back on its poll list).
        work.min(budget.saturating_sub(1))
    } else {
        if work < budget {
            // Not completed: complete for the driver, or the context would
            // stay scheduled (and `napi_disable()` wait) forever.
            ctx.complete_done(work);
        }
        work
    };
    crate::ffi::c_int::try_from(work).unwrap_or(0)
}

/// A registered Ethernet device driven by a [`Driver`]; see the [module
/// documentation](self).
///
/// Dropping it unregisters the device (bringing it down first if it is
/// up), deletes its NAPI contexts, releases the driver's object and frees
/// the device. That takes RTNL and waits for every reference to the device
/// to go: do not drop it with RTNL held or from a callback.
///
/// # Invariants
///
/// `dev` was allocated by `alloc_etherdev_mqs()` with a `Priv<T>` private
/// area, set up by [`Registration::new`] and registered with
/// `register_netdev()`; it is unregistered and freed only in `drop`.
pub struct Registration<T: Driver> {
    dev: NonNull<bindings::net_device>,
    _driver: PhantomData<T>,
}

// SAFETY: The registration may be dropped on any thread (in process
// context); what it owns (the driver's `Arc<T>`, `T: Send + Sync`, and
// `Arc<Napi>`s) may be too.
unsafe impl<T: Driver> Send for Registration<T> {}

// SAFETY: `&Registration` gives `&Device<T>`, which is `Sync`, and methods
// that take RTNL, which serialises them.
unsafe impl<T: Driver> Sync for Registration<T> {}

impl<T: Driver> Registration<T> {
    /// The private area must fit `netdev_priv()`'s alignment.
    const PRIV_ALIGN_OK: () = assert!(
        core::mem::align_of::<Priv<T>>() <= bindings::NETDEV_ALIGN as usize,
        "net_device private data over-aligned"
    );

    /// Allocates, sets up and registers an Ethernet device driven by
    /// `driver`, with carrier off: call [`Device::carrier_on`] when the link
    /// is up. The name is the first free `eth%d`. May sleep; takes RTNL.
    ///
    /// # Errors
    ///
    /// `EINVAL` for bad [`Options`], `ENOMEM`, or the error of
    /// `register_netdev()`.
    pub fn new(options: Options<'_>, driver: Arc<T>) -> Result<Self> {
        let _: () = Self::PRIV_ALIGN_OK;
        options.check()?;
        let stats_count = driver.stats_count();
        let mut napis = KVec::with_capacity(usize::from(options.rx_queues), GFP_KERNEL)?;
        for queue in 0..options.rx_queues {
            let napi = Arc::new(
                Napi {
                    napi: Opaque::uninit(),
                    queue,
                },
                GFP_KERNEL,
            )?;
            // SAFETY: The context is not shared yet; all-zero is the state
            // `netif_napi_add_weight()` expects (not listed, no state bits).
            unsafe { core::ptr::write_bytes(napi.as_raw(), 0, 1) };
            napis.push(napi, GFP_KERNEL)?;
        }
        let size =
            crate::ffi::c_int::try_from(core::mem::size_of::<Priv<T>>()).map_err(|_| EINVAL)?;
        // SAFETY: Plain allocation; the queue counts are between 1 and
        // `MAX_QUEUES` (checked above).
        let dev = unsafe {
            bindings::alloc_etherdev_mqs(size, options.tx_queues.into(), options.rx_queues.into())
        };
        let dev = NonNull::new(dev).ok_or(ENOMEM)?;
        let raw = dev.as_ptr();
        let parent = options.parent.map_or(core::ptr::null_mut(), |p| p.as_raw());
        // SAFETY: `raw` is a new device that we alone use, with a private
        // area of `size_of::<Priv<T>>()` bytes aligned to `NETDEV_ALIGN`
        // (checked above), which we initialise before anything can read
        // it. The operation tables are `'static`; the parent outlives the
        // registration (documented requirement of `Options::parent`). Each
        // context is zeroed and lives (through the `Arc`s in the private
        // area, and any clone) until after `netif_napi_del()` in `release`.
        unsafe {
            (*raw).dev.parent = parent;
            (*raw).netdev_ops = VTable::<T>::netdev_ops();
            (*raw).ethtool_ops = VTable::<T>::ethtool_ops();
            (*raw).mtu = options.mtu;
            (*raw).min_mtu = options.min_mtu;
            (*raw).max_mtu = options.max_mtu;
            bindings::eth_hw_addr_set(raw, options.mac.as_ptr());
            let private = bindings::netdev_priv(raw).cast::<Priv<T>>();
            // INVARIANT: Each context is added with its queue number below.
            private.write(Priv {
                driver,
                napis,
                stats_count,
            });
            for napi in (*private).napis.iter() {
                bindings::netif_napi_add_weight(
                    raw,
                    napi.as_raw(),
                    Some(poll::<T>),
                    bindings::NAPI_POLL_WEIGHT as crate::ffi::c_int,
                );
            }
            bindings::netif_carrier_off(raw);
        }
        // SAFETY: The device is fully set up; takes RTNL.
        let ret = unsafe { bindings::register_netdev(raw) };
        if ret != 0 {
            // SAFETY: Set up above and not registered.
            unsafe { Self::release(raw) };
            return Err(Error::from_errno(ret));
        }
        // INVARIANT: Registered above.
        Ok(Self {
            dev,
            _driver: PhantomData,
        })
    }

    /// Deletes the NAPI contexts, drops the private area and frees the
    /// device.
    ///
    /// # Safety
    ///
    /// `dev` was set up by [`Registration::new`] and is not registered (any
    /// more): no callback runs or can start, every NAPI context is
    /// disabled. It is not used afterwards.
    unsafe fn release(dev: *mut bindings::net_device) {
        // SAFETY: The private area holds a `Priv<T>` (safety requirements).
        let private = unsafe { bindings::netdev_priv(dev).cast::<Priv<T>>() };
        // SAFETY: As above; nothing else uses the area now.
        for napi in unsafe { (*private).napis.iter() } {
            // SAFETY: Added to `dev` and disabled (safety requirements).
            // Deleting leaves the `SCHED` bit set, so a `schedule()` through
            // another clone of the `Arc` stays harmless.
            unsafe { bindings::__netif_napi_del(napi.as_raw()) };
        }
        // SAFETY: Waits for RCU readers of the NAPI hash and list (what
        // `netif_napi_del()` does, once for all contexts).
        unsafe { bindings::synchronize_net() };
        // SAFETY: No callback can use the private area any more; it is
        // dropped once, and `free_netdev()` does not look at it.
        unsafe { core::ptr::drop_in_place(private) };
        // SAFETY: Not registered; not used afterwards. The contexts were
        // deleted above, so `free_netdev()` does not touch them.
        unsafe { bindings::free_netdev(dev) };
    }

    /// The device.
    pub fn device(&self) -> &Device<T> {
        // SAFETY: Registered by `new` with a `Priv<T>`, valid until `drop`
        // (type invariants), which the borrow of `self` precedes.
        unsafe { Device::from_raw(self.dev.as_ptr()) }
    }

    /// Brings the device up (`dev_open()`, as `ip link set up` does).
    /// Takes RTNL; may sleep.
    ///
    /// # Errors
    ///
    /// The error of `dev_open()`, [`Driver::open`]'s among them.
    pub fn open(&self) -> Result {
        let dev = self.dev.as_ptr();
        // SAFETY: A registered device (type invariants); `dev_open()` needs
        // RTNL, which we take (and do not hold already: documented).
        let ret = unsafe {
            bindings::rtnl_lock();
            let ret = bindings::dev_open(dev, core::ptr::null_mut());
            bindings::rtnl_unlock();
            ret
        };
        crate::error::to_result(ret)
    }

    /// Brings the device down (`dev_close()`, as `ip link set down` does).
    /// Takes RTNL; may sleep.
    pub fn close(&self) {
        let dev = self.dev.as_ptr();
        // SAFETY: As for `open`.
        unsafe {
            bindings::rtnl_lock();
            bindings::dev_close(dev);
            bindings::rtnl_unlock();
        }
    }

    /// Changes the MTU (`dev_set_mtu()`, as `ip link set mtu` does). Takes
    /// RTNL; may sleep.
    ///
    /// # Errors
    ///
    /// `EINVAL` outside the range given at registration, or the error of
    /// [`Driver::change_mtu`].
    pub fn set_mtu(&self, mtu: u32) -> Result {
        let mtu = crate::ffi::c_int::try_from(mtu).map_err(|_| EINVAL)?;
        let dev = self.dev.as_ptr();
        // SAFETY: As for `open`.
        let ret = unsafe {
            bindings::rtnl_lock();
            let ret = bindings::dev_set_mtu(dev, mtu);
            bindings::rtnl_unlock();
            ret
        };
        crate::error::to_result(ret)
    }
}

impl<T: Driver> Drop for Registration<T> {
    fn drop(&mut self) {
        let dev = self.dev.as_ptr();
        // SAFETY: Registered (type invariants). `unregister_netdev()` takes
        // RTNL, brings the device down if it is up (`ndo_stop` disables the
        // NAPI contexts), unlinks it, waits for RCU readers and for every
        // reference to go: afterwards no callback runs or can start.
        unsafe { bindings::unregister_netdev(dev) };
        // SAFETY: Unregistered just above, contexts disabled (never
        // enabled, or disabled by `ndo_stop`); not used afterwards.
        unsafe { Self::release(dev) };
    }
}
