// SPDX-License-Identifier: GPL-2.0

//! Taking over a device's received frames: the receive handler
//! (`rx_handler`) of a network device.
//!
//! C headers: [`include/linux/netdevice.h`](srctree/include/linux/netdevice.h),
//! [`include/linux/skbuff.h`](srctree/include/linux/skbuff.h)
//!
//! This is the hook that macvlan and the bridge use on their lower devices
//! (`netdev_rx_handler_register()`): every frame the device receives, of
//! any Ethertype and any destination, goes to one handler first, before the
//! protocols of the device's own stack (IPv4, IPv6, ARP, a
//! [`PacketRegistration`](crate::netdev::PacketRegistration)) see it. The
//! handler takes the frame ([`RxAction::Consume`]: the stack never sees it)
//! or leaves it to the stack ([`RxAction::Pass`]).
//!
//! A device has at most one receive handler: a device that is a bridge
//! port, a bond or team member, the lower device of a macvlan or ipvlan, or
//! that already has an [`RxHandlerRegistration`] cannot have another one
//! (`EBUSY`). So several users of one uplink (several virtual NICs) share
//! one registration, whose handler dispatches on the destination MAC.
//!
//! The device's own receive filter still applies: it delivers frames for
//! its own MAC address, broadcast, and the multicast groups it joined. To
//! receive frames for other MAC addresses, make it promiscuous
//! ([`RxHandlerRegistration::set_promiscuous`]), and to receive every
//! multicast frame, make it join all groups
//! ([`RxHandlerRegistration::set_allmulti`]); both are undone when the
//! registration is dropped.
//!
//! What the handler sees, and what it does not:
//!
//! * Frames the device receives, after the taps (`tcpdump`) and the ingress
//!   `tc` filters saw them and after a VLAN device took the frames of its
//!   VLAN; not frames the device sends.
//! * Multicast frames that the host's own stack looped back
//!   (`PACKET_LOOPBACK`, which have no link-layer header) are passed to the
//!   stack without calling the handler, as the bridge and macvlan do.
//! * The frame as it was on the wire, VLAN tag included. The core takes
//!   the outer VLAN tag out of the bytes before the handler runs (or the
//!   hardware did, with `rxvlan` offload) and keeps it beside them
//!   (`skb->vlan_tci`); for such a frame the abstraction hands the handler
//!   a copy with the tag put back after the source MAC, so a tagged frame
//!   costs an allocation and a copy. A VLAN device on the uplink
//!   (`ip link add link eth0 type vlan id 5`) takes the frames of its VLAN
//!   before the handler sees them.
//! * The bytes as the wire would carry them: a frame whose checksum a local
//!   sender left to offload (`CHECKSUM_PARTIAL`, as a veth peer or a tap
//!   sends TCP and UDP) gets it computed first (`skb_checksum_help()`), and
//!   a frame of several segments (a veth peer's TSO, GRO on the device)
//!   is cut into them (`__skb_gso_segment()`, checksums computed): the
//!   handler is called once a segment, and the first segment's verdict is
//!   the frame's. A fraglist GRO frame (`rx-gro-list`) is passed to the
//!   stack and counted as unreadable.
//! * [`RxHandler::wants`] sees the destination MAC first: frames the
//!   handler does not want reach the device's stack before any of that
//!   work.
//! * A frame that cannot be made linear or copied (no memory) is passed to
//!   the stack and counted ([`RxHandlerRegistration::unreadable`]); a frame that is
//!   shared (a tap holds it) and cannot be copied is dropped and counted
//!   ([`RxHandlerRegistration::dropped`]).
//!
//! # Contexts and teardown
//!
//! [`RxHandler::receive`] runs in softirq context (`NET_RX`, or a threaded
//! NAPI poll with bottom halves disabled) under `rcu_read_lock()`: it must
//! not sleep, and it may run on several CPUs at once (one per receive
//! queue).
//!
//! Creating, dropping and the `set_*` methods take RTNL: they may sleep and
//! must not be called with RTNL held, which includes
//! [`Notifier::event`](crate::netdev::Notifier::event). Once the drop
//! returns, no call of the handler runs or can start (the drop waits with
//! `synchronize_net()`), and the registration's reference to the handler has
//! been released.
//!
//! The registration holds a reference to the device. When the device is
//! unregistered (the uplink's driver is removed, `ip link del`), the core
//! waits for that reference ("waiting for ... to become free" in the log)
//! before it frees the device: watch for
//! [`Event::Unregister`](crate::netdev::Event::Unregister) with a
//! [`NotifierRegistration`](crate::netdev::NotifierRegistration) and drop
//! the registration from a work item (not from the notifier, which holds
//! RTNL). The core waits outside RTNL, so the work item can take it; while
//! it waits it repeats the event every second, so schedule the work item
//! idempotently. Once the device is being unregistered, dropping the
//! registration leaves its promiscuity and allmulti counts alone (they die
//! with the device), and [`RxHandlerRegistration::new`] fails.
//!
//! # Gaps
//!
//! No way to redirect a frame to another device (`RX_HANDLER_ANOTHER`), no
//! unicast address filter entries (`dev_uc_add()`) in place of
//! promiscuous mode, no unregistering with RTNL already held.
//!
//! # Examples
//!
//! A software device whose transmitted frames come back as received
//! frames (as in [`net_device`](crate::net_device)): the receive handler
//! takes the frames that say so, and a packet handler for the same
//! Ethertype sees only the others.
//!
//! ```
//! use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
//! use kernel::{
//!     c_str,
//!     delay::msleep,
//!     net_device::{self, Device, NapiPoll, Registration, RxMode, Skb, TxResult},
//!     netdev::{PacketHandler, PacketRegistration},
//!     new_spinlock,
//!     prelude::*,
//!     rx_handler::{RxAction, RxHandler, RxHandlerRegistration},
//!     sync::{Arc, SpinLock},
//!     types::ARef,
//! };
//!
//! #[pin_data]
//! struct Loop {
//!     #[pin]
//!     pending: SpinLock<Option<KVec<u8>>>,
//!     promisc: AtomicBool,
//! }
//!
//! impl net_device::Driver for Loop {
//!     const NAME: &'static CStr = c_str!("doctest-rxh");
//!
//!     fn open(&self, _dev: &Device<Self>) -> Result {
//!         Ok(())
//!     }
//!
//!     fn stop(&self, _dev: &Device<Self>) {}
//!
//!     fn start_xmit(&self, dev: &Device<Self>, skb: Skb, _queue: u16) -> TxResult {
//!         let mut frame = KVec::new();
//!         if frame.extend_from_slice(skb.data(), GFP_ATOMIC).is_ok() {
//!             *self.pending.lock() = Some(frame);
//!         }
//!         skb.consume();
//!         if let Some(napi) = dev.napi(0) {
//!             napi.schedule();
//!         }
//!         TxResult::Ok
//!     }
//!
//!     fn poll(&self, _dev: &Device<Self>, napi: &NapiPoll<'_>, budget: u32) -> u32 {
//!         let mut done = 0;
//!         while done < budget {
//!             let Some(frame) = self.pending.lock().take() else {
//!                 break;
//!             };
//!             let _ = napi.receive(&frame);
//!             done += 1;
//!         }
//!         if done < budget {
//!             napi.complete_done(done);
//!         }
//!         done
//!     }
//!
//!     fn set_rx_mode(&self, _dev: &Device<Self>, mode: &RxMode<'_>) {
//!         self.promisc.store(mode.promisc(), Ordering::Relaxed);
//!     }
//! }
//!
//! /// Counts the test frames (Ethertype 0x88b5, payload "rxh" and a verdict
//! /// byte) and takes those whose verdict is `C`; takes and counts the
//! /// test frames tagged with VLAN 5.
//! struct Taker {
//!     seen: AtomicU64,
//!     tagged: AtomicU64,
//! }
//!
//! impl RxHandler for Taker {
//!     fn receive(&self, frame: &[u8]) -> RxAction {
//!         let vlan5 = [0x81, 0x00, 0x00, 0x05, 0x88, 0xb5, b'r', b'x', b'h'];
//!         if frame.get(12..21) == Some(&vlan5[..]) {
//!             self.tagged.fetch_add(1, Ordering::Relaxed);
//!             return RxAction::Consume;
//!         }
//!         if frame.get(12..17) != Some(&[0x88, 0xb5, b'r', b'x', b'h'][..]) {
//!             return RxAction::Pass;
//!         }
//!         self.seen.fetch_add(1, Ordering::Relaxed);
//!         match frame.get(17) {
//!             Some(b'C') => RxAction::Consume,
//!             _ => RxAction::Pass,
//!         }
//!     }
//! }
//!
//! struct Delivered(AtomicU64);
//!
//! impl PacketHandler for Delivered {
//!     fn receive(&self, frame: &[u8]) {
//!         if frame.get(14..17) == Some(&b"rxh"[..]) {
//!             self.0.fetch_add(1, Ordering::Relaxed);
//!         }
//!     }
//! }
//!
//! let wait_for = |counter: &AtomicU64, value: u64| {
//!     let mut waited = 0;
//!     while counter.load(Ordering::Relaxed) < value && waited < 200 {
//!         msleep(10);
//!         waited += 1;
//!     }
//!     counter.load(Ordering::Relaxed)
//! };
//!
//! let driver = Arc::pin_init(
//!     pin_init!(Loop {
//!         pending <- new_spinlock!(None),
//!         promisc: AtomicBool::new(false),
//!     }),
//!     GFP_KERNEL,
//! )?;
//! let mac = [0x02, 0x00, 0x00, 0x00, 0x00, 0x11];
//! let reg = Registration::new(net_device::Options::new(mac), driver.clone())?;
//! let dev = ARef::from(reg.device().net_device());
//! reg.device().carrier_on();
//! reg.open()?;
//!
//! let delivered = Arc::new(Delivered(AtomicU64::new(0)), GFP_KERNEL)?;
//! let pkt = PacketRegistration::new(&dev, 0x88b5, delivered.clone())?;
//! let taker = Arc::new(
//!     Taker {
//!         seen: AtomicU64::new(0),
//!         tagged: AtomicU64::new(0),
//!     },
//!     GFP_KERNEL,
//! )?;
//! let rxh = RxHandlerRegistration::new(&dev, taker.clone())?;
//!
//! // One receive handler per device.
//! assert!(matches!(
//!     RxHandlerRegistration::new(&dev, taker.clone()),
//!     Err(e) if e == EBUSY
//! ));
//!
//! let mut frame = [0u8; 60];
//! frame[..6].copy_from_slice(&mac);
//! frame[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x12]);
//! frame[12..14].copy_from_slice(&[0x88, 0xb5]);
//! frame[14..17].copy_from_slice(b"rxh");
//!
//! // Consumed: the handler sees it, the stack does not.
//! frame[17] = b'C';
//! dev.transmit(&frame)?;
//! assert_eq!(wait_for(&taker.seen, 1), 1);
//! // Passed: the handler sees it, then the stack delivers it. Frames are
//! // received in order, so had the first one reached the stack, it would
//! // have been counted before this one.
//! frame[17] = b'P';
//! dev.transmit(&frame)?;
//! assert_eq!(wait_for(&delivered.0, 1), 1);
//! assert_eq!(taker.seen.load(Ordering::Relaxed), 2);
//!
//! // A tagged frame: the core moves the tag out of the bytes, the handler
//! // gets them back with the tag where it was.
//! let mut tagged = [0u8; 64];
//! tagged[..12].copy_from_slice(&frame[..12]);
//! tagged[12..16].copy_from_slice(&[0x81, 0x00, 0x00, 0x05]);
//! tagged[16..].copy_from_slice(&frame[12..]);
//! dev.transmit(&tagged)?;
//! assert_eq!(wait_for(&taker.tagged, 1), 1);
//!
//! // Promiscuous mode while registered, undone when dropped.
//! rxh.set_promiscuous(true)?;
//! assert!(driver.promisc.load(Ordering::Relaxed));
//! rxh.set_promiscuous(true)?;
//! rxh.set_allmulti(true)?;
//! assert_eq!(rxh.unreadable(), 0);
//! assert_eq!(rxh.dropped(), 0);
//! drop(rxh);
//! assert!(!driver.promisc.load(Ordering::Relaxed));
//!
//! // Without a receive handler the stack gets every frame.
//! frame[17] = b'C';
//! dev.transmit(&frame)?;
//! assert_eq!(wait_for(&delivered.0, 2), 2);
//! assert_eq!(taker.seen.load(Ordering::Relaxed), 2);
//!
//! // And the slot is free again.
//! drop(RxHandlerRegistration::new(&dev, taker.clone())?);
//!
//! drop(pkt);
//! drop(dev);
//! drop(reg);
//! # Ok::<(), Error>(())
//! ```

use crate::{
    alloc::{
        flags::{GFP_ATOMIC, GFP_KERNEL},
        KBox, KVec,
    },
    error::{code::*, to_result, Result},
    netdev::NetDevice,
    sync::Arc,
    types::ARef,
};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// What to do with a received frame: the verdict of [`RxHandler::receive`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxAction {
    /// The handler took the frame (it copied what it needs): the socket
    /// buffer is freed and the device's own stack never sees it
    /// (`RX_HANDLER_CONSUMED`).
    Consume,
    /// The device's stack gets the frame as if there were no handler
    /// (`RX_HANDLER_PASS`).
    Pass,
}

/// Receives the frames of an [`RxHandlerRegistration`].
pub trait RxHandler: Send + Sync {
    /// The device received `frame`: the bytes from the destination MAC on
    /// (Ethernet header included, no FCS). Returns whether the handler
    /// took it or the device's own stack should have it.
    ///
    /// Runs in softirq context under `rcu_read_lock()`: it must not sleep.
    /// May run on several CPUs at once. `frame` is valid for the call only.
    fn receive(&self, frame: &[u8]) -> RxAction;

    /// Whether frames for destination MAC `dst` may be taken: a frame for
    /// which this says `false` goes to the device's stack untouched, before
    /// any copy, linearisation or segmentation (the device's own traffic
    /// costs nothing more). Same context as [`RxHandler::receive`]. The
    /// default takes every frame.
    fn wants(&self, _dst: &[u8; 6]) -> bool {
        true
    }
}

/// What the `rx_handler_data` of the device points to.
struct RxData<T: RxHandler> {
    handler: Arc<T>,
    /// Frames passed because they could not be made linear or copied.
    unreadable: AtomicU64,
    /// Shared frames dropped because they could not be copied.
    dropped: AtomicU64,
}

/// Holds RTNL (`rtnl_lock()`) until dropped.
struct Rtnl(());

impl Rtnl {
    /// Takes RTNL; may sleep. Must not be called with RTNL held.
    fn lock() -> Self {
        // SAFETY: Process context (callers may sleep); RTNL is not held by
        // this thread (callers' requirement, documented on every public
        // method that gets here).
        unsafe { bindings::rtnl_lock() };
        Rtnl(())
    }
}

impl Drop for Rtnl {
    fn drop(&mut self) {
        // SAFETY: Taken in `lock`, by this thread.
        unsafe { bindings::rtnl_unlock() };
    }
}

/// The receive handler of a device: every frame it receives goes to an
/// [`RxHandler`] first, until this is dropped
/// (`netdev_rx_handler_register()` / `netdev_rx_handler_unregister()`).
///
/// See the [module documentation](self) for what the handler sees and the
/// teardown rules. Creating, dropping and the `set_*` methods take RTNL and
/// may sleep.
///
/// # Invariants
///
/// * `data` is the `rx_handler_data` of `dev`, whose `rx_handler` is
///   `Self::handle`, from `new` until `netdev_rx_handler_unregister()`
///   in `drop`; the box is freed only after that.
/// * `promisc` (`allmulti`) is true exactly when this registration has
///   added one to the device's promiscuity (allmulti) count that it has not
///   taken back; both are changed only with RTNL held.
pub struct RxHandlerRegistration<T: RxHandler> {
    data: KBox<RxData<T>>,
    dev: ARef<NetDevice>,
    promisc: AtomicBool,
    allmulti: AtomicBool,
}

// SAFETY: The registration may be dropped (which takes RTNL and sleeps) on
// any thread; it owns a `Send + Sync` handler (through `Arc`), a device
// reference (`Send`) and atomics.
unsafe impl<T: RxHandler> Send for RxHandlerRegistration<T> {}

// SAFETY: The methods on `&RxHandlerRegistration` read atomic counters or
// change the device's flags under RTNL, which serialises them across
// threads; the networking core reaches the `Sync` handler through its own
// pointer.
unsafe impl<T: RxHandler> Sync for RxHandlerRegistration<T> {}

impl<T: RxHandler> RxHandlerRegistration<T> {
    /// Sends every frame that `dev` receives to `handler` from now on.
    /// Takes RTNL: may sleep, and must not be called with RTNL held.
    ///
    /// # Errors
    ///
    /// * `EBUSY`: the device already has a receive handler (it is a bridge
    ///   port, a bond member, a macvlan's lower device, or registered here
    ///   already);
    /// * `EINVAL`: the device does not allow one (`IFF_NO_RX_HANDLER`);
    /// * `ENODEV`: the device is not registered (any more);
    /// * `ENOMEM`.
    pub fn new(dev: &ARef<NetDevice>, handler: Arc<T>) -> Result<Self> {
        let data = KBox::new(
            RxData {
                handler,
                unreadable: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
            },
            GFP_KERNEL,
        )?;
        let ptr = core::ptr::from_ref::<RxData<T>>(&data)
            .cast_mut()
            .cast::<crate::ffi::c_void>();
        let ret = {
            let _rtnl = Rtnl::lock();
            // SAFETY: The device is valid (we hold a reference); RTNL is
            // held. A device on its way out would wait for our reference.
            if !unsafe { bindings::pcieoe_netdev_is_registered(dev.as_raw()) } {
                return Err(ENODEV);
            }
            // SAFETY: The device is valid (we hold a reference) and RTNL is
            // held, as `netdev_rx_handler_register()` requires. `ptr` points
            // into a heap allocation that does not move when the box does
            // and that is freed only after the handler was unregistered
            // (`drop`); `handle` expects exactly an `RxData<T>` there.
            unsafe { bindings::netdev_rx_handler_register(dev.as_raw(), Some(Self::handle), ptr) }
        };
        to_result(ret)?;
        // INVARIANT: Registered above with `data` and `handle`; no flag
        // count taken yet.
        Ok(Self {
            data,
            dev: dev.clone(),
            promisc: AtomicBool::new(false),
            allmulti: AtomicBool::new(false),
        })
    }

    /// Makes the device promiscuous (`on`), receiving frames for every
    /// destination MAC, or takes back this registration's request (`!on`).
    /// Other users of the device (`tcpdump`, a bridge) have their own
    /// requests: the device stays promiscuous while any is left. Does
    /// nothing when the request is already in that state; dropping the
    /// registration takes it back. Takes RTNL: may sleep, and must not be
    /// called with RTNL held.
    ///
    /// # Errors
    ///
    /// * `ENODEV`: the device is being unregistered;
    /// * `EOVERFLOW`: the device's promiscuity count would overflow.
    pub fn set_promiscuous(&self, on: bool) -> Result {
        self.set_flag(&self.promisc, on, bindings::dev_set_promiscuity)
    }

    /// Makes the device receive every multicast frame (`on`), or takes back
    /// this registration's request (`!on`), like
    /// [`set_promiscuous`](Self::set_promiscuous) (`dev_set_allmulti()`).
    ///
    /// # Errors
    ///
    /// As [`set_promiscuous`](Self::set_promiscuous).
    pub fn set_allmulti(&self, on: bool) -> Result {
        self.set_flag(&self.allmulti, on, bindings::dev_set_allmulti)
    }

    /// The number of frames passed to the stack without calling the handler
    /// because they could not be made linear, their checksum could not be
    /// computed, or a tagged frame could not be copied (no memory).
    pub fn unreadable(&self) -> u64 {
        self.data.unreadable.load(Ordering::Relaxed)
    }

    /// The number of frames dropped without calling the handler because
    /// they were shared (a tap held them) and could not be copied (no
    /// memory).
    pub fn dropped(&self) -> u64 {
        self.data.dropped.load(Ordering::Relaxed)
    }

    /// Adds one to or takes one from a device flag count with `set`
    /// (`dev_set_promiscuity()` or `dev_set_allmulti()`), tracked in `held`.
    fn set_flag(
        &self,
        held: &AtomicBool,
        on: bool,
        set: unsafe extern "C" fn(
            *mut bindings::net_device,
            crate::ffi::c_int,
        ) -> crate::ffi::c_int,
    ) -> Result {
        let dev = self.dev.as_raw();
        // The check and the update under one RTNL section.
        let _rtnl = Rtnl::lock();
        if held.load(Ordering::Relaxed) == on {
            return Ok(());
        }
        // SAFETY: The device is valid (we hold a reference); RTNL is held.
        if !unsafe { bindings::pcieoe_netdev_is_registered(dev) } {
            return Err(ENODEV);
        }
        // SAFETY: The device is valid and registered; RTNL is held, as both
        // `dev_set_promiscuity()` and `dev_set_allmulti()` require.
        to_result(unsafe { set(dev, if on { 1 } else { -1 }) })?;
        // INVARIANT: The count was changed, under RTNL, to match `on`.
        held.store(on, Ordering::Relaxed);
        Ok(())
    }

    /// The `rx_handler` callback.
    ///
    /// # Safety
    ///
    /// Called by `__netif_receive_skb_core()` under `rcu_read_lock()`, with
    /// `pskb` pointing to a socket buffer of which the callee owns one
    /// reference, received on a device whose `rx_handler_data` is the
    /// `RxData<T>` of a live registration (guaranteed until
    /// `netdev_rx_handler_unregister()` returns). Its MAC header is set and
    /// `skb->data` is past it.
    unsafe extern "C" fn handle(
        pskb: *mut *mut bindings::sk_buff,
    ) -> bindings::rx_handler_result_t {
        const PASS: bindings::rx_handler_result_t = bindings::rx_handler_result_RX_HANDLER_PASS;
        const CONSUMED: bindings::rx_handler_result_t =
            bindings::rx_handler_result_RX_HANDLER_CONSUMED;

        // SAFETY: `pskb` is valid (safety requirements).
        let mut skb = unsafe { *pskb };
        // SAFETY: `skb` is valid; looped-back frames have no link-layer
        // header to show.
        if unsafe { bindings::pcieoe_skb_is_looped_back(skb) } {
            return PASS;
        }
        // SAFETY: `skb->dev` is the receiving device and we run under
        // `rcu_read_lock()`; its `rx_handler_data` is the `RxData<T>` of a
        // live registration (safety requirements), which outlives this call.
        let data = unsafe { &*bindings::pcieoe_skb_rx_handler_data(skb).cast::<RxData<T>>() };
        // SAFETY: `skb` is valid; the MAC header, when set, is in the
        // linear part (safety requirements), at least `ETH_HLEN` long
        // before the tail on a received Ethernet frame, which is checked.
        let dst = unsafe {
            if bindings::skb_mac_header_was_set(skb) {
                let mac = bindings::skb_mac_header(skb);
                let tail = bindings::skb_tail_pointer(skb);
                (tail.offset_from(mac) >= 6).then(|| {
                    let mut d = [0u8; 6];
                    core::ptr::copy_nonoverlapping(mac.cast_const(), d.as_mut_ptr(), 6);
                    d
                })
            } else {
                None
            }
        };
        if dst.is_some_and(|d| !data.handler.wants(&d)) {
            return PASS;
        }

        // SAFETY: `skb` is valid; `data_len` is a plain field.
        let nonlinear = unsafe { (*skb).data_len } != 0;
        // SAFETY: `skb` is valid.
        let partial = unsafe { bindings::pcieoe_skb_csum_partial(skb) };
        // SAFETY: `skb` is valid.
        let gso = unsafe { bindings::pcieoe_skb_is_gso(skb) };
        if nonlinear || partial || gso {
            // Linearising, computing a checksum and segmenting write to the
            // buffer, which must then be ours alone: a tap may hold a
            // reference too.
            // SAFETY: We own one reference (safety requirements).
            // `skb_share_check()` either returns it, or a private clone
            // (dropping our reference to the original), or NULL with our
            // reference dropped.
            skb = unsafe { bindings::skb_share_check(skb, bindings::GFP_ATOMIC) };
            if skb.is_null() {
                data.dropped.fetch_add(1, Ordering::Relaxed);
                return CONSUMED;
            }
            // SAFETY: `pskb` is valid; the core continues with the buffer
            // we now own.
            unsafe { *pskb = skb };
        }
        let action = if gso {
            // A frame of several segments (a veth peer's TSO, the
            // uplink's GRO): the handler sees the segments as the wire
            // would carry them, each with its checksum computed. The first
            // one's verdict (they share their headers) is the frame's.
            // SAFETY: `skb` is ours alone, with `skb->data` past its MAC
            // header (safety requirements); on success the segments are a
            // new list that we own, and `skb` keeps its data and its
            // `skb->data`.
            let mut seg = unsafe { bindings::pcieoe_skb_gso_split(skb) };
            if seg.is_null() {
                data.unreadable.fetch_add(1, Ordering::Relaxed);
                return PASS;
            }
            let mut action = None;
            while !seg.is_null() {
                // SAFETY: `seg` is a segment of our list, not yet freed.
                let next = unsafe { bindings::pcieoe_skb_next(seg) };
                // SAFETY: `seg` is a linear socket buffer that we own, with
                // its MAC header set at `seg->data`.
                let a = unsafe { Self::deliver(data, seg) };
                action = action.or(a);
                // SAFETY: We own `seg`, unlinked from `next` by reading it
                // first; nothing borrows it any more.
                unsafe { bindings::consume_skb(seg) };
                seg = next;
            }
            match action {
                Some(a) => a,
                None => return PASS,
            }
        } else {
            // SAFETY: `skb` is ours alone (checked above when it matters);
            // on failure it is left as it was.
            if nonlinear && unsafe { bindings::skb_linearize(skb) } != 0 {
                data.unreadable.fetch_add(1, Ordering::Relaxed);
                return PASS;
            }
            // SAFETY: `skb` is ours alone and linear; `skb_checksum_help()`
            // writes the checksum at `csum_offset` and marks it done.
            if partial && unsafe { bindings::pcieoe_skb_csum_resolve(skb) } != 0 {
                data.unreadable.fetch_add(1, Ordering::Relaxed);
                return PASS;
            }
            // SAFETY: `skb` is valid and linear, its MAC header set.
            match unsafe { Self::deliver(data, skb) } {
                Some(a) => a,
                None => return PASS,
            }
        };
        match action {
            RxAction::Pass => PASS,
            RxAction::Consume => {
                // SAFETY: We own one reference to `skb`, which we give up;
                // no frame borrowing its data is alive.
                unsafe { bindings::consume_skb(skb) };
                CONSUMED
            }
        }
    }

    /// Hands the frame of `skb` to the handler; `None` (counted as
    /// unreadable) when it has no MAC header or its tagged copy failed.
    ///
    /// # Safety
    ///
    /// `skb` is a valid, linear socket buffer, not freed during the call.
    unsafe fn deliver(data: &RxData<T>, skb: *mut bindings::sk_buff) -> Option<RxAction> {
        // SAFETY: `skb` is valid and linear (safety requirements); the MAC
        // header, when set, lies in the linear part before the tail, so
        // the bytes from it to the tail are the frame.
        let frame = unsafe {
            if bindings::skb_mac_header_was_set(skb) {
                let mac = bindings::skb_mac_header(skb);
                let tail = bindings::skb_tail_pointer(skb);
                usize::try_from(tail.offset_from(mac))
                    .ok()
                    .map(|len| core::slice::from_raw_parts(mac.cast_const(), len))
            } else {
                None
            }
        };
        let Some(frame) = frame else {
            data.unreadable.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let (mut proto, mut tci) = (0u16, 0u16);
        // SAFETY: `skb` is valid; the pointers are to locals.
        if unsafe { bindings::pcieoe_skb_vlan_tag(skb, &mut proto, &mut tci) } {
            match Self::with_tag(frame, proto, tci) {
                Some(tagged) => Some(data.handler.receive(&tagged)),
                None => {
                    data.unreadable.fetch_add(1, Ordering::Relaxed);
                    None
                }
            }
        } else {
            Some(data.handler.receive(frame))
        }
    }
}

impl<T: RxHandler> RxHandlerRegistration<T> {
    /// A copy of `frame` with the VLAN tag `proto`, `tci` inserted after the
    /// source MAC (where it was on the wire); `None` when there is no
    /// memory or `frame` has no room for two MAC addresses.
    fn with_tag(frame: &[u8], proto: u16, tci: u16) -> Option<KVec<u8>> {
        let (macs, rest) = (frame.get(..12)?, frame.get(12..)?);
        let mut tagged = KVec::with_capacity(frame.len().checked_add(4)?, GFP_ATOMIC).ok()?;
        tagged.extend_from_slice(macs, GFP_ATOMIC).ok()?;
        tagged
            .extend_from_slice(&proto.to_be_bytes(), GFP_ATOMIC)
            .ok()?;
        tagged
            .extend_from_slice(&tci.to_be_bytes(), GFP_ATOMIC)
            .ok()?;
        tagged.extend_from_slice(rest, GFP_ATOMIC).ok()?;
        Some(tagged)
    }
}

impl<T: RxHandler> Drop for RxHandlerRegistration<T> {
    fn drop(&mut self) {
        let dev = self.dev.as_raw();
        {
            let _rtnl = Rtnl::lock();
            // SAFETY: The device is valid (we hold a reference); RTNL is
            // held. While the device is registered the counts we added are
            // still there (type invariants); once it is being unregistered
            // they no longer matter, and its driver may be torn down.
            if unsafe { bindings::pcieoe_netdev_is_registered(dev) } {
                if self.promisc.load(Ordering::Relaxed) {
                    // SAFETY: As above; taking back what we added cannot
                    // overflow.
                    unsafe { bindings::dev_set_promiscuity(dev, -1) };
                }
                if self.allmulti.load(Ordering::Relaxed) {
                    // SAFETY: As above.
                    unsafe { bindings::dev_set_allmulti(dev, -1) };
                }
            }
            // SAFETY: Our handler is the device's (type invariants); RTNL is
            // held. `netdev_rx_handler_unregister()` clears it and waits
            // (`synchronize_net()`) until no CPU runs `handle` for it.
            unsafe { bindings::netdev_rx_handler_unregister(dev) };
        }
        // The fields drop now: `data` (with the handler's `Arc`), no longer
        // reachable by the core, then the device reference.
    }
}
