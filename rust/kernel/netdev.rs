// SPDX-License-Identifier: GPL-2.0

//! Network devices: references, frame transmission and reception of one
//! Ethertype.
//!
//! C headers: [`include/linux/netdevice.h`](srctree/include/linux/netdevice.h),
//! [`include/linux/skbuff.h`](srctree/include/linux/skbuff.h)
//!
//! This is what a protocol that lives directly on Ethernet (like AoE or
//! PCIe over Ethernet) needs from the networking core:
//!
//! * [`NetDevice`], a reference-counted `struct net_device` looked up by
//!   name ([`NetDevice::get_by_name`]), with its name, MAC address, MTU,
//!   index and state;
//! * [`NetDevice::transmit`], which sends one complete Ethernet frame given
//!   as bytes;
//! * [`PacketRegistration`], a `struct packet_type` that hands every frame
//!   of one Ethertype received on one device to a [`PacketHandler`], as the
//!   bytes of the whole frame, Ethernet header included;
//! * [`NotifierRegistration`], a netdevice notifier (`struct
//!   notifier_block` on the netdev chain) that tells a [`Notifier`] about
//!   every device's [`Event`]s: up, down, carrier, MTU, unregistration.
//!
//! # Contexts
//!
//! [`PacketHandler::receive`] runs in softirq context (`NET_RX`), under
//! `rcu_read_lock()`: it must not sleep. [`Notifier::event`] runs in
//! process context with the RTNL mutex held: it may sleep, but must not
//! take RTNL (directly, or by dropping a [`NotifierRegistration`]). [`NetDevice::transmit`] may be
//! called in process or softirq context, with or without bottom halves
//! disabled, but not with hard interrupts disabled (the transmit path
//! enables bottom halves on its way out).

use crate::{
    alloc::{flags::GFP_KERNEL, KBox},
    error::{code::*, Result},
    str::CStr,
    sync::Arc,
    types::{ARef, AlwaysRefCounted, Opaque},
};
use core::{pin::Pin, ptr::NonNull};

/// Length of an Ethernet header without VLAN tags (`ETH_HLEN`).
pub const ETH_HLEN: usize = 14;

/// A network device (`struct net_device`).
///
/// Only ever used through a reference: [`ARef<NetDevice>`] holds a
/// reference (`dev_hold()`), which keeps the structure allocated but does
/// not stop the device from being brought down or unregistered. While
/// someone holds such a reference, unregistering the device waits (and
/// logs "waiting for ... to become free"): drop it when you are done.
///
/// Two `&NetDevice` are equal when they are the same device (identity, as
/// C compares `struct net_device *`).
///
/// # Invariants
///
/// The inner `net_device` is valid: a `&NetDevice` is only handed out while
/// a reference to the device is held, or, in [`Notifier::event`], while
/// RTNL is held across a notification about it (the core frees a device
/// only after its unregistration notifiers returned and RTNL was dropped).
#[repr(transparent)]
pub struct NetDevice(Opaque<bindings::net_device>);

impl PartialEq for NetDevice {
    fn eq(&self, other: &Self) -> bool {
        core::ptr::eq(self, other)
    }
}

impl Eq for NetDevice {}

// SAFETY: `dev_hold()` and `dev_put()` may be called from any thread, and a
// reference keeps the `net_device` allocated.
unsafe impl AlwaysRefCounted for NetDevice {
    fn inc_ref(&self) {
        // SAFETY: The existence of a shared reference means that the
        // refcount is nonzero (type invariants).
        unsafe { bindings::dev_hold(self.0.get()) };
    }

    unsafe fn dec_ref(obj: NonNull<Self>) {
        // SAFETY: The safety requirements guarantee that the refcount is
        // nonzero; `NetDevice` is `repr(transparent)` over the C struct.
        unsafe { bindings::dev_put(obj.cast::<bindings::net_device>().as_ptr()) };
    }
}

// SAFETY: A `net_device` reference may be dropped on any thread
// (`dev_put()` has no thread affinity).
unsafe impl Send for NetDevice {}

// SAFETY: Every method on `&NetDevice` either reads a field the way the C
// code reads it without locks (`READ_ONCE` semantics), or calls a C
// function that may run on several CPUs at once (`dev_queue_xmit()`).
unsafe impl Sync for NetDevice {}

/// An interface name, copied out of a [`NetDevice`] (`IFNAMSIZ` bytes).
///
/// # Invariants
///
/// The last byte is NUL.
#[derive(Clone, Copy)]
pub struct IfName([u8; bindings::IFNAMSIZ as usize]);

impl IfName {
    /// The name as a C string.
    pub fn as_cstr(&self) -> &CStr {
        let len = self.0.iter().position(|&b| b == 0).unwrap_or(0);
        // SAFETY: `len` is the index of the first NUL (the type invariants
        // guarantee one), so `self.0[..=len]` is NUL-terminated with no
        // interior NUL.
        unsafe { CStr::from_bytes_with_nul_unchecked(self.0.get(..=len).unwrap_or(&[0])) }
    }
}

impl core::fmt::Display for IfName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Display::fmt(self.as_cstr(), f)
    }
}

/// `HH_DATA_MOD`: link-layer headroom is reserved in multiples of this.
const HH_DATA_MOD: usize = 16;

impl NetDevice {
    /// Looks up the device called `name` in the initial network namespace
    /// and takes a reference to it.
    ///
    /// # Errors
    ///
    /// `ENODEV` when there is no such device.
    pub fn get_by_name(name: &CStr) -> Result<ARef<Self>> {
        // SAFETY: `init_net` is always valid; `name` is NUL-terminated.
        // `dev_get_by_name()` takes a reference (`dev_hold()`) on success.
        let ptr = unsafe {
            bindings::dev_get_by_name(
                core::ptr::addr_of_mut!(bindings::init_net),
                name.as_char_ptr(),
            )
        };
        let ptr = NonNull::new(ptr.cast::<Self>()).ok_or(ENODEV)?;
        // SAFETY: `dev_get_by_name()` returned a device with a reference
        // that we now own; `NetDevice` is `repr(transparent)`.
        Ok(unsafe { ARef::from_raw(ptr) })
    }

    pub(crate) fn as_raw(&self) -> *mut bindings::net_device {
        self.0.get()
    }

    /// The interface name (a copy: a device can be renamed while down).
    pub fn name(&self) -> IfName {
        let mut out = [0u8; bindings::IFNAMSIZ as usize];
        // SAFETY: The device is valid (type invariants); `name` is an array
        // of `IFNAMSIZ` bytes inside it. A rename races only with these
        // byte reads (the C code reads it likewise without `RTNL`).
        let name = unsafe { core::ptr::addr_of!((*self.as_raw()).name) };
        let last = out.len() - 1;
        for (i, b) in out.iter_mut().enumerate().take(last) {
            // SAFETY: `i < IFNAMSIZ - 1`, inside the array.
            *b = unsafe { name.cast::<u8>().add(i).read_volatile() };
        }
        // INVARIANT: The last byte of `out` was never written: it is NUL.
        IfName(out)
    }

    /// The device's MAC address, or `None` when its hardware address is
    /// not 6 bytes long (not an Ethernet-like device).
    pub fn mac(&self) -> Option<[u8; 6]> {
        let dev = self.as_raw();
        // SAFETY: The device is valid (type invariants). `addr_len` is set
        // when the device is set up and does not change afterwards.
        let len = unsafe { (*dev).addr_len };
        if usize::from(len) != 6 {
            return None;
        }
        // SAFETY: As above; `dev_addr` points to `addr_len` (6) bytes that
        // live as long as the device. A concurrent address change races
        // with these byte reads as it does for the C readers.
        let addr = unsafe { (*dev).dev_addr };
        if addr.is_null() {
            return None;
        }
        let mut mac = [0u8; 6];
        for (i, b) in mac.iter_mut().enumerate() {
            // SAFETY: `i < 6 == addr_len`.
            *b = unsafe { addr.add(i).read_volatile() };
        }
        Some(mac)
    }

    /// The MTU (bytes after the Ethernet header).
    pub fn mtu(&self) -> u32 {
        // SAFETY: The device is valid (type invariants); `READ_ONCE`.
        unsafe { core::ptr::addr_of!((*self.as_raw()).mtu).read_volatile() }
    }

    /// The interface index.
    pub fn ifindex(&self) -> i32 {
        // SAFETY: The device is valid (type invariants); the index is set
        // at registration and never changes.
        unsafe { (*self.as_raw()).ifindex }
    }

    /// Is the device administratively up (`netif_running()`)?
    pub fn is_up(&self) -> bool {
        // SAFETY: The device is valid (type invariants).
        unsafe { bindings::netif_running(self.as_raw()) }
    }

    /// Does the device have carrier (`netif_carrier_ok()`)?
    pub fn has_carrier(&self) -> bool {
        // SAFETY: The device is valid (type invariants).
        unsafe { bindings::netif_carrier_ok(self.as_raw()) }
    }

    /// Sends `frame`, a complete Ethernet frame (destination MAC first, no
    /// FCS), on this device. The frame is copied; `skb->protocol` is its
    /// Ethertype field (the TPID for a VLAN-tagged frame).
    ///
    /// Must not be called with hard interrupts disabled (see the [module
    /// documentation](self)).
    ///
    /// # Errors
    ///
    /// * `EINVAL`: `frame` is shorter than an Ethernet header or longer than
    ///   4 GiB;
    /// * `ENOMEM`: no socket buffer (nothing was sent; try again later);
    /// * `ENOBUFS`: the queueing discipline dropped the frame;
    /// * any error of `dev_queue_xmit()` (`ENETDOWN`, ...).
    pub fn transmit(&self, frame: &[u8]) -> Result {
        let proto = match frame.get(12..ETH_HLEN) {
            Some(&[a, b]) => u16::from_be_bytes([a, b]),
            _ => return Err(EINVAL),
        };
        let len = u32::try_from(frame.len()).map_err(|_| EINVAL)?;
        let dev = self.as_raw();
        // SAFETY: The device is valid (type invariants); these fields are
        // set up at registration.
        let (hh_len, headroom, tailroom) = unsafe {
            (
                usize::from((*dev).hard_header_len),
                usize::from((*dev).needed_headroom),
                usize::from((*dev).needed_tailroom),
            )
        };
        // `LL_RESERVED_SPACE(dev)`.
        let reserve = ((hh_len + headroom) & !(HH_DATA_MOD - 1)) + HH_DATA_MOD;
        let size = u32::try_from(reserve + tailroom)
            .ok()
            .and_then(|extra| extra.checked_add(len))
            .ok_or(EINVAL)?;
        // SAFETY: `alloc_skb()` may be called in atomic context with
        // `GFP_ATOMIC`.
        let skb = unsafe { bindings::alloc_skb(size, bindings::GFP_ATOMIC) };
        if skb.is_null() {
            return Err(ENOMEM);
        }
        // SAFETY: `skb` is a new, empty, linear socket buffer that we own,
        // with room for `reserve` bytes of headroom plus `len` bytes of data
        // (`size`); `frame` is valid for `len` bytes. `__dev_queue_xmit()`
        // takes ownership of the buffer whatever it returns, and holds its
        // own reference to `dev` (through `skb->dev`) only while we hold
        // ours.
        let ret = unsafe {
            bindings::skb_reserve(skb, reserve as i32);
            bindings::skb_put_data(skb, frame.as_ptr().cast(), len);
            bindings::skb_reset_mac_header(skb);
            bindings::skb_set_network_header(skb, ETH_HLEN as i32);
            bindings::pcieoe_skb_set_dev(skb, dev);
            bindings::pcieoe_skb_set_protocol(skb, proto.to_be());
            bindings::__dev_queue_xmit(skb, core::ptr::null_mut())
        };
        match ret {
            r if r < 0 => Err(crate::error::Error::from_errno(r)),
            // NET_XMIT_DROP: dropped by the qdisc. NET_XMIT_CN (congestion
            // notification) means the frame may have been queued.
            r if r as u32 == bindings::NET_XMIT_DROP => Err(crate::error::Error::from_errno(
                -(bindings::ENOBUFS as crate::ffi::c_int),
            )),
            _ => Ok(()),
        }
    }
}

/// Receives the frames of a [`PacketRegistration`].
pub trait PacketHandler: Send + Sync {
    /// A frame arrived: `frame` holds it from the destination MAC on (no
    /// FCS). The networking core has already removed a VLAN tag with VID 0
    /// (or any tag, when a VLAN device takes it), so the frame may be
    /// untagged even if the sender tagged it.
    ///
    /// Runs in softirq context under `rcu_read_lock()`: it must not sleep.
    /// May run on several CPUs at once.
    fn receive(&self, frame: &[u8]);
}

/// The `packet_type` of a registration with what its callback needs.
///
/// # Invariants
///
/// `pt.type_`, `pt.dev` and `pt.func` are set (`pt.dev` is `dev`), the rest
/// of `pt` is zero, and while `pt` is on the networking core's lists the
/// structure does not move and is not freed.
#[repr(C)]
struct PacketType<T: PacketHandler> {
    pt: Opaque<bindings::packet_type>,
    handler: Arc<T>,
    dev: ARef<NetDevice>,
}

/// Frames of one Ethertype on one device, delivered to a [`PacketHandler`]
/// until this is dropped (`dev_add_pack()` / `dev_remove_pack()`).
///
/// Dropping waits until no CPU runs the handler any more
/// (`synchronize_net()`); it may sleep.
///
/// # Invariants
///
/// `inner.pt` is registered with `dev_add_pack()` until `drop`.
pub struct PacketRegistration<T: PacketHandler> {
    inner: Pin<KBox<PacketType<T>>>,
}

// SAFETY: The registration may be dropped (`dev_remove_pack()`, which may
// sleep) on any thread; the handler it owns is `Send + Sync` and the device
// reference is `Send`.
unsafe impl<T: PacketHandler> Send for PacketRegistration<T> {}

// SAFETY: No method takes `&PacketRegistration`; the networking core reaches
// the `packet_type` (and the `Sync` handler) through its own pointer.
unsafe impl<T: PacketHandler> Sync for PacketRegistration<T> {}

impl<T: PacketHandler> PacketRegistration<T> {
    /// Delivers the frames of `ethertype` received on `dev` to `handler`
    /// from now on. Frames the device sends are not delivered.
    ///
    /// # Errors
    ///
    /// `ENOMEM`.
    pub fn new(dev: &ARef<NetDevice>, ethertype: u16, handler: Arc<T>) -> Result<Self> {
        let inner = KBox::pin(
            PacketType {
                pt: Opaque::uninit(),
                handler,
                dev: dev.clone(),
            },
            GFP_KERNEL,
        )?;
        let pt = inner.pt.get();
        // INVARIANT: Zeroed, then the three fields set, before registration;
        // the box is pinned and only freed after `dev_remove_pack()`.
        // SAFETY: `pt` points to the `packet_type` inside the pinned box,
        // valid for writes; all-zero is a valid `packet_type` (no callbacks,
        // no device, empty list head that `dev_add_pack()` overwrites). The
        // box outlives the registration (see `drop`), and `dev` is kept
        // alive by the reference the box holds.
        unsafe {
            core::ptr::write_bytes(pt, 0, 1);
            (*pt).type_ = ethertype.to_be();
            (*pt).dev = inner.dev.as_raw();
            (*pt).func = Some(Self::rcv);
            bindings::dev_add_pack(pt);
        }
        // INVARIANT: Registered just above.
        Ok(Self { inner })
    }

    /// The `packet_type.func` callback.
    ///
    /// # Safety
    ///
    /// Called by the networking core with a socket buffer that the callee
    /// owns (one reference), and `pt` the `packet_type` of a live
    /// [`PacketRegistration<T>`] (guaranteed until `dev_remove_pack()`
    /// returns).
    unsafe extern "C" fn rcv(
        skb: *mut bindings::sk_buff,
        _dev: *mut bindings::net_device,
        pt: *mut bindings::packet_type,
        _orig_dev: *mut bindings::net_device,
    ) -> crate::ffi::c_int {
        // SAFETY: We own one reference to `skb`. If it is shared,
        // `skb_share_check()` replaces it with a private clone (dropping our
        // reference to the original); NULL if that fails, in which case our
        // reference is gone too.
        let skb = unsafe { bindings::skb_share_check(skb, bindings::GFP_ATOMIC) };
        if skb.is_null() {
            return bindings::NET_RX_DROP as crate::ffi::c_int;
        }
        // SAFETY: `skb` is ours alone, so we may linearise it (which copies
        // shared data first) and read its header pointers.
        let frame = unsafe {
            if bindings::skb_linearize(skb) != 0 || !bindings::skb_mac_header_was_set(skb) {
                None
            } else {
                let mac = bindings::skb_mac_header(skb);
                let tail = bindings::skb_tail_pointer(skb);
                usize::try_from(tail.offset_from(mac))
                    .ok()
                    .map(|len| core::slice::from_raw_parts(mac.cast_const(), len))
            }
        };
        let Some(frame) = frame else {
            // SAFETY: We own `skb`; it is not used afterwards.
            unsafe { bindings::kfree_skb(skb) };
            return bindings::NET_RX_DROP as crate::ffi::c_int;
        };
        // SAFETY: By the safety requirements `pt` is the `pt` field of a live
        // `PacketType<T>` (`repr(C)`, `Opaque` is `repr(transparent)`).
        let this = unsafe {
            &*crate::container_of!(
                pt.cast::<Opaque<bindings::packet_type>>(),
                PacketType<T>,
                pt
            )
        };
        this.handler.receive(frame);
        // SAFETY: We own `skb`; `frame`, which borrows its data, is dead.
        unsafe { bindings::consume_skb(skb) };
        bindings::NET_RX_SUCCESS as crate::ffi::c_int
    }
}

impl<T: PacketHandler> Drop for PacketRegistration<T> {
    fn drop(&mut self) {
        // SAFETY: Registered with `dev_add_pack()` (type invariants).
        // `dev_remove_pack()` unlinks it and waits (`synchronize_net()`)
        // until no CPU runs `rcv` for it, after which the box may be freed.
        unsafe { bindings::dev_remove_pack(self.inner.pt.get()) };
    }
}

/// A netdevice notifier event (`enum netdev_cmd`, `NETDEV_*`).
///
/// The events this crate's users act on have their own variants; every
/// other value is kept as [`Event::Other`], so no value is lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// `NETDEV_UP`: the device was brought up (administratively).
    Up,
    /// `NETDEV_GOING_DOWN`: the device is about to go down.
    GoingDown,
    /// `NETDEV_DOWN`: the device was brought down.
    Down,
    /// `NETDEV_CHANGE`: a state change, such as carrier on or off.
    Change,
    /// `NETDEV_REGISTER`: the device was registered.
    Register,
    /// `NETDEV_UNREGISTER`: the device is being unregistered (or moved to
    /// another network namespace). References to it must be dropped now:
    /// unregistration waits for them.
    Unregister,
    /// `NETDEV_CHANGEMTU`: the MTU changed.
    ChangeMtu,
    /// `NETDEV_CHANGENAME`: the device was renamed.
    ChangeName,
    /// Any other `NETDEV_*` value.
    Other(u64),
}

impl From<u64> for Event {
    fn from(v: u64) -> Self {
        match u32::try_from(v) {
            Ok(bindings::netdev_cmd_NETDEV_UP) => Event::Up,
            Ok(bindings::netdev_cmd_NETDEV_GOING_DOWN) => Event::GoingDown,
            Ok(bindings::netdev_cmd_NETDEV_DOWN) => Event::Down,
            Ok(bindings::netdev_cmd_NETDEV_CHANGE) => Event::Change,
            Ok(bindings::netdev_cmd_NETDEV_REGISTER) => Event::Register,
            Ok(bindings::netdev_cmd_NETDEV_UNREGISTER) => Event::Unregister,
            Ok(bindings::netdev_cmd_NETDEV_CHANGEMTU) => Event::ChangeMtu,
            Ok(bindings::netdev_cmd_NETDEV_CHANGENAME) => Event::ChangeName,
            _ => Event::Other(v),
        }
    }
}

impl From<Event> for u64 {
    fn from(e: Event) -> u64 {
        let v = match e {
            Event::Up => bindings::netdev_cmd_NETDEV_UP,
            Event::GoingDown => bindings::netdev_cmd_NETDEV_GOING_DOWN,
            Event::Down => bindings::netdev_cmd_NETDEV_DOWN,
            Event::Change => bindings::netdev_cmd_NETDEV_CHANGE,
            Event::Register => bindings::netdev_cmd_NETDEV_REGISTER,
            Event::Unregister => bindings::netdev_cmd_NETDEV_UNREGISTER,
            Event::ChangeMtu => bindings::netdev_cmd_NETDEV_CHANGEMTU,
            Event::ChangeName => bindings::netdev_cmd_NETDEV_CHANGENAME,
            Event::Other(v) => return v,
        };
        u64::from(v)
    }
}

/// Receives the events of a [`NotifierRegistration`].
pub trait Notifier: Send + Sync {
    /// `event` happened to `dev`, which may be any device of any network
    /// namespace: compare it with the device you care about
    /// (`NetDevice: Eq` compares identity).
    ///
    /// Runs in process context with RTNL held, one call at a time for all
    /// notifiers: it may sleep, but must not take RTNL (which includes
    /// dropping a [`NotifierRegistration`]). `dev` is valid for the call
    /// only; take a reference (`ARef::from(dev)`) to keep it.
    ///
    /// Registering replays [`Event::Register`] and [`Event::Up`] for every
    /// existing device, and unregistering replays [`Event::GoingDown`],
    /// [`Event::Down`] and [`Event::Unregister`], so a handler also sees
    /// events that describe its own registration, not the devices.
    fn event(&self, event: Event, dev: &NetDevice);
}

/// The `notifier_block` of a registration with its handler.
///
/// # Invariants
///
/// `nb.notifier_call` is [`NotifierRegistration::call`], the rest of `nb`
/// is zero until registration, and while `nb` is on the netdev chain the
/// structure does not move and is not freed.
#[repr(C)]
struct NotifierBlock<T: Notifier> {
    nb: Opaque<bindings::notifier_block>,
    handler: Arc<T>,
}

/// A netdevice notifier: the events of every network device go to a
/// [`Notifier`] until this is dropped (`register_netdevice_notifier()` /
/// `unregister_netdevice_notifier()`).
///
/// Creating and dropping take RTNL: both may sleep, and neither may happen
/// with RTNL held, from [`Notifier::event`] in particular. Once the drop
/// returns, no call of the handler runs or will run (calls are made under
/// RTNL, which the drop takes), so the module that owns the handler may go.
///
/// # Invariants
///
/// `inner.nb` is registered with `register_netdevice_notifier()` until
/// `drop`.
pub struct NotifierRegistration<T: Notifier> {
    inner: Pin<KBox<NotifierBlock<T>>>,
}

// SAFETY: The registration may be dropped (unregistering, which sleeps) on
// any thread; the handler it owns is `Send + Sync`.
unsafe impl<T: Notifier> Send for NotifierRegistration<T> {}

// SAFETY: No method takes `&NotifierRegistration`; the networking core
// reaches the `notifier_block` (and the `Sync` handler) through its own
// pointer.
unsafe impl<T: Notifier> Sync for NotifierRegistration<T> {}

impl<T: Notifier> NotifierRegistration<T> {
    /// Sends the events of every network device to `handler` from now on,
    /// starting with the replay of [`Event::Register`] and [`Event::Up`] for
    /// the devices that exist. May sleep; takes RTNL.
    ///
    /// # Errors
    ///
    /// `ENOMEM`, or the error of `register_netdevice_notifier()`.
    pub fn new(handler: Arc<T>) -> Result<Self> {
        let inner = KBox::pin(
            NotifierBlock {
                nb: Opaque::uninit(),
                handler,
            },
            GFP_KERNEL,
        )?;
        let nb = inner.nb.get();
        // INVARIANT: Zeroed and the callback set before registration; the
        // box is pinned and only freed after unregistration (`drop`, or
        // below when registering fails).
        // SAFETY: `nb` points to the `notifier_block` inside the pinned box,
        // valid for writes; all-zero is a valid, unlinked `notifier_block`
        // (priority 0, no next). `register_netdevice_notifier()` links it
        // and replays events through `call`, which the handler in the box
        // serves; the box outlives the registration.
        let ret = unsafe {
            core::ptr::write_bytes(nb, 0, 1);
            (*nb).notifier_call = Some(Self::call);
            bindings::register_netdevice_notifier(nb)
        };
        crate::error::to_result(ret)?;
        // INVARIANT: Registered just above (on failure the chain does not
        // hold `nb`: the C function unlinks it before returning an error).
        Ok(Self { inner })
    }

    /// The `notifier_block.notifier_call` callback.
    ///
    /// # Safety
    ///
    /// Called by the netdev notifier chain, under RTNL, with `nb` the
    /// `notifier_block` of a live [`NotifierRegistration<T>`] (guaranteed
    /// until `unregister_netdevice_notifier()` returns) and `data` a valid
    /// `struct netdev_notifier_info` (every notification of the netdev
    /// chain passes one, or a structure that starts with one) whose `dev`
    /// stays valid for the call.
    unsafe extern "C" fn call(
        nb: *mut bindings::notifier_block,
        action: crate::ffi::c_ulong,
        data: *mut crate::ffi::c_void,
    ) -> crate::ffi::c_int {
        // SAFETY: By the safety requirements `data` points to a valid
        // `netdev_notifier_info` (`netdev_notifier_info_to_dev()` reads
        // the same field).
        let dev = unsafe { (*data.cast::<bindings::netdev_notifier_info>()).dev };
        if dev.is_null() {
            return bindings::NOTIFY_DONE as crate::ffi::c_int;
        }
        // SAFETY: `dev` is valid for the call and RTNL is held (safety
        // requirements), which is the second case of `NetDevice`'s
        // invariants; `NetDevice` is `repr(transparent)`.
        let dev = unsafe { &*dev.cast::<NetDevice>() };
        // SAFETY: By the safety requirements `nb` is the `nb` field of a
        // live `NotifierBlock<T>` (`repr(C)`, `Opaque` is
        // `repr(transparent)`).
        let this = unsafe {
            &*crate::container_of!(
                nb.cast::<Opaque<bindings::notifier_block>>(),
                NotifierBlock<T>,
                nb
            )
        };
        // `unsigned long` is at most 64 bits wide on every Linux target.
        let action = u64::try_from(action).unwrap_or(u64::MAX);
        this.handler.event(Event::from(action), dev);
        bindings::NOTIFY_DONE as crate::ffi::c_int
    }
}

impl<T: Notifier> Drop for NotifierRegistration<T> {
    fn drop(&mut self) {
        // SAFETY: Registered with `register_netdevice_notifier()` (type
        // invariants). `unregister_netdevice_notifier()` takes RTNL, under
        // which every call of `call` runs, replays the down and unregister
        // events (through `call`, the box still being live) and unlinks the
        // block; when it returns no call runs or can start, so the box may
        // be freed.
        unsafe { bindings::unregister_netdevice_notifier(self.inner.nb.get()) };
    }
}
