// SPDX-License-Identifier: GPL-2.0

//! A PCI root bus in a private PCI domain whose configuration space is
//! served by Rust code.
//!
//! C headers: [`include/linux/pci.h`](srctree/include/linux/pci.h),
//! [`arch/x86/include/asm/pci.h`](srctree/arch/x86/include/asm/pci.h),
//! [`include/linux/ioport.h`](srctree/include/linux/ioport.h)
//!
//! A [`RootBus`] is a PCI host bridge (`struct pci_host_bridge`, device
//! `pciDDDDD:00`) with root bus 0 of a new PCI domain, numbered from
//! `0x10000` up like Intel VMD's domains so it cannot collide with a
//! firmware domain (those are 16-bit). Configuration reads and writes of
//! the devices on it go to a [`ConfigOps`] object. The bus starts empty;
//! [`RootBus::scan_slot`] hot-adds the functions of one slot (and assigns
//! their BARs), [`RootBus::remove_slot`] hot-removes them, and dropping the
//! [`RootBus`] removes everything. The devices are ordinary `pci_dev`s:
//! drivers bind to them, `lspci` shows them, `setpci` and sysfs reach their
//! configuration space through the [`ConfigOps`].
//!
//! # Examples
//!
//! ```
//! use kernel::pci_host::{ConfigOps, RootBus};
//! use kernel::sync::Arc;
//!
//! /// A bus with nothing on it.
//! struct Empty;
//!
//! impl ConfigOps for Empty {
//!     fn read(&self, _bus: u8, _devfn: u8, _offset: u16, _size: usize) -> Option<u32> {
//!         None
//!     }
//!
//!     fn write(&self, _bus: u8, _devfn: u8, _offset: u16, _size: usize, _value: u32) -> bool {
//!         false
//!     }
//! }
//!
//! let bus = RootBus::new(Arc::new(Empty, GFP_KERNEL)?, 0x10_0000)?;
//! assert!(bus.domain() >= 0x10000);
//! assert_eq!(bus.window().end - bus.window().start, 0x10_0000);
//! assert_eq!(bus.scan_slot(0)?, 0);
//! assert!(!bus.has_device(0));
//! // Dropping `bus` removes the bus and frees the domain number.
//! # Ok::<(), Error>(())
//! ```
//!
//! # Design
//!
//! * **Host data.** One heap block, `Host`, holds what the C side points
//!   to: the x86 `struct pci_sysdata` (`bus->sysdata` points to it; the core
//!   reads the domain number from it with `pci_domain_nr()` for as long as
//!   any `pci_bus` or `pci_dev` of the hierarchy exists; `node` is
//!   `NUMA_NO_NODE`; no ACPI companion, IOMMU or MSI `fwnode`, so MSIs use
//!   the default x86 vector domain), the memory window and bus-number
//!   `struct resource`s, and the type-erased `Arc<dyn ConfigOps>`. The
//!   `struct pci_ops` (one `static`, in the kernel image) has two
//!   non-generic trampolines that find `Host` with `container_of` from
//!   `bus->sysdata` (child buses inherit the root's sysdata).
//! * **Lifetimes.** `Host` must outlive every `pci_bus` and `pci_dev` of
//!   the hierarchy, which other code may keep referenced after removal. It
//!   is freed by the host bridge's `release_fn`
//!   (`pci_set_host_bridge_release()`): the bridge device is released only
//!   after the root bus (which holds a reference to it), which is released
//!   only after every `pci_dev` on it (each holds a bus reference). The
//!   release function is in the kernel image, not in the module, so a late
//!   release after `rmmod` is fine. The [`ConfigOps`] object, on the other
//!   hand, is released at drop: the trampolines call it only inside an RCU
//!   read-side critical section and only while `Host::live` is set; drop
//!   clears `live` after removing the bus, waits for a grace period
//!   (`synchronize_rcu()`) and only then drops the `Arc`. Configuration
//!   accesses through a stale `pci_dev` after that read all-ones, like an
//!   unplugged device.
//! * **Host bridge.** Created by `pci_create_root_bus()` with no parent
//!   device, like x86's firmware root buses (so it appears as
//!   `/sys/devices/pci10000:00` and the devices as
//!   `/sys/bus/pci/devices/10000:00:SS.F`). `pci_create_root_bus()`
//!   allocates the bridge, and on failure frees it (the resource list stays
//!   ours to free if the allocation itself failed, hence an unconditional
//!   `pci_free_resource_list()` on that path). On success the reference
//!   from `pci_alloc_host_bridge()` is the caller's: `pci_remove_root_bus()`
//!   only `device_del()`s the bridge, so drop puts that reference
//!   (`pci_free_host_bridge()`). `pci_scan_root_bus_bridge()` is not used:
//!   it would scan all 32 slots at creation, and the bus starts empty.
//! * **Window.** The memory window is allocated from `iomem_resource`
//!   above 4 GiB (`allocate_resource()`, aligned to its size) so it is
//!   unique address space that nothing else decodes, and given to the
//!   bridge with a CPU-to-bus offset (`pci_add_resource_offset()`): bus
//!   addresses (what the BARs hold, what the device sees) are
//!   `[WINDOW_BUS_BASE, WINDOW_BUS_BASE + size)`, below 4 GiB, so that
//!   32-bit BARs fit too (the window is not flagged `IORESOURCE_MEM_64`,
//!   which lets the core put 32- and 64-bit BARs in it). `pci_resource_start()`
//!   of a BAR is the CPU address; [`RootBus::bus_offset`] converts.
//!   No I/O-port window: I/O BARs stay unassigned.
//! * **Bus numbers** `0..=0xff` (an `IORESOURCE_BUS` resource), so bridges
//!   that a [`ConfigOps`] presents get secondary buses.
//! * **Slots.** Root-bus slots answer only between [`RootBus::scan_slot`]
//!   and [`RootBus::remove_slot`]; outside that the trampolines report "no
//!   device" without calling [`ConfigOps`]. A global rescan
//!   (`/sys/bus/pci/rescan`) thus does not add a slot the owner did not
//!   scan, nor re-add one it removed. Buses behind bridges are not gated.
//! * **Locking.** Creation (domain number search and bus registration),
//!   scan, remove and drop run under `pci_lock_rescan_remove()`, the PCI
//!   core's hot-plug mutex; it also makes the domain search atomic with
//!   the registration of the bus that takes the number. Code outside this
//!   module that creates domains without that mutex (VMD takes max + 1)
//!   could race; `pci_create_root_bus()` then fails with `EEXIST` only if
//!   both use bus 0.
//! * **Domain numbers** are the lowest number `>= 0x10000` that no root
//!   bus uses, searched with `pci_find_next_bus()`: a domain is reused
//!   after its bus is dropped. (The PCI core keeps one small bus-number
//!   resource per domain number ever used; reuse keeps that bounded.)
//!
//! * **DMA.** Every function the bus scans gets a software IOMMU as its
//!   DMA operations before a driver can probe it; the owner of the bus
//!   serves the functions' memory requests through it. See [`iommu`].
//!
//! # Contexts
//!
//! [`RootBus::new`], [`RootBus::scan_slot`], [`RootBus::remove_slot`],
//! [`RootBus::has_device`] and drop sleep: process context only, and not
//! from a driver's probe or remove callback of a device on the same bus
//! (the rescan/remove mutex is held around those). [`ConfigOps`] methods
//! are called in any context, possibly with interrupts disabled.

mod function;
pub use function::{Mmio, Vectors};

pub mod iommu;
pub use iommu::{DmaFault, DmaHandle, DmaStats};

use crate::{
    alloc::{flags::GFP_KERNEL, KBox, KVec},
    error::{code::*, to_result, Result},
    sync::Arc,
    types::Opaque,
};
use core::{
    cell::UnsafeCell,
    marker::PhantomData,
    ptr::{addr_of_mut, NonNull},
    sync::atomic::{AtomicBool, AtomicU32, Ordering},
};

/// Configuration space accessors of the devices on a [`RootBus`].
///
/// Called in any context, possibly with interrupts disabled (sysfs
/// configuration reads take `pci_lock` with `raw_spin_lock_irq()`), and on
/// several CPUs at once (x86 has `CONFIG_PCI_LOCKLESS_CONFIG`): they must
/// not sleep.
pub trait ConfigOps: Send + Sync + 'static {
    /// Reads `size` (1, 2 or 4) bytes at `offset` (aligned to `size`,
    /// below 4096) of function `devfn` on bus number `bus`.
    ///
    /// `None` means that there is no device there: the bus reads all-ones
    /// (`PCIBIOS_DEVICE_NOT_FOUND`, value `!0`).
    fn read(&self, bus: u8, devfn: u8, offset: u16, size: usize) -> Option<u32>;

    /// Writes the low `size` (1, 2 or 4) bytes of `value` at `offset`
    /// (aligned to `size`, below 4096) of function `devfn` on bus number
    /// `bus`. `false` means that there is no device there.
    fn write(&self, bus: u8, devfn: u8, offset: u16, size: usize, value: u32) -> bool;

    /// Reads `buf.len()` bytes at `offset` into BAR `bar` of function
    /// `devfn` on the root bus, for its driver (see [`Mmio`]). Process
    /// context; may sleep until the data arrive or the attempt times out.
    ///
    /// The default has no memory space: `ENODEV`.
    ///
    /// # Errors
    ///
    /// Whatever the implementation reports: `ENODEV` for a device that is
    /// gone, `EINVAL` for a range outside the BAR, `ETIMEDOUT`, `EIO`.
    fn mem_read(&self, _devfn: u8, _bar: u8, _offset: u64, _buf: &mut [u8]) -> Result {
        Err(ENODEV)
    }

    /// Writes `data` at `offset` into BAR `bar` of function `devfn` on the
    /// root bus, for its driver (see [`Mmio`]). Writes are posted: `Ok`
    /// means sent, not applied. Process context; may sleep while the link
    /// is backlogged.
    ///
    /// The default has no memory space: `ENODEV`.
    ///
    /// # Errors
    ///
    /// As [`ConfigOps::mem_read`], without `ETIMEDOUT`.
    fn mem_write(&self, _devfn: u8, _bar: u8, _offset: u64, _data: &[u8]) -> Result {
        Err(ENODEV)
    }

    /// Writes `data` at `offset` into BAR `bar` of function `devfn`, like
    /// [`ConfigOps::mem_write`] but never sleeping: for a driver's data
    /// path (a doorbell from `ndo_start_xmit`, a queue refill from NAPI).
    /// Any context but hard interrupts or interrupts disabled.
    ///
    /// The default has no memory space: `ENODEV`.
    ///
    /// # Errors
    ///
    /// `EAGAIN` when the link is backlogged (nothing was sent: retry
    /// later, e.g. when the device says it made room), `ENODEV`, `EINVAL`.
    fn mem_post(&self, _devfn: u8, _bar: u8, _offset: u64, _data: &[u8]) -> Result {
        Err(ENODEV)
    }

    /// Sets up `count` MSI-X vectors of function `devfn` on the root bus
    /// and returns their Linux interrupt numbers, for its driver (see
    /// [`Vectors`]). Process context; may sleep.
    ///
    /// The default has no interrupts: `ENODEV`.
    ///
    /// # Errors
    ///
    /// `ENODEV`, `EINVAL` (no MSI-X, or fewer vectors), `ENOMEM`, `EBUSY`
    /// (already set up), or what programming the function returns.
    fn irq_alloc(&self, _devfn: u8, _count: u32) -> Result<KVec<u32>> {
        Err(ENODEV)
    }

    /// Turns off the vectors of function `devfn` that
    /// [`ConfigOps::irq_alloc`] set up, once their handlers are freed.
    /// Process context; may sleep.
    fn irq_free(&self, _devfn: u8) {}
}

/// The bus address at which the memory window starts (see
/// [`RootBus::bus_offset`]).
pub const WINDOW_BUS_BASE: u64 = 0x8000_0000;

/// Largest memory window: bus addresses must stay below 4 GiB.
const WINDOW_MAX: u64 = 0x1_0000_0000 - WINDOW_BUS_BASE;

/// Lowest domain number handed out.
const DOMAIN_FIRST: i32 = 0x10000;

/// Domain numbers searched (at most this many buses at once).
const DOMAIN_COUNT: i32 = 0x10000;

/// What the C side points to; see the [module documentation](self).
///
/// # Invariants
///
/// * `sysdata.domain` is this bridge's domain, set before the bus is
///   created and not changed afterwards; `bus->sysdata` of every bus of the
///   hierarchy points to `sysdata`.
/// * `ops` is `Some` while `live` is set. It is only written (taken) after
///   `live` was cleared, an RCU grace period passed and `mem_users` is 0.
/// * `mem_users` counts the [`Mmio`] calls that use `ops` outside an RCU
///   read-side critical section; each was counted inside one that saw
///   `live` set.
/// * `iommu` is not replaced. The `dev.dma_ops` of every device of the
///   hierarchy is NULL until its scan completes, then `iommu`'s (unless a
///   global rescan added it behind a bridge).
/// * Once the bridge is registered, the block is freed only by
///   [`release_host`], the bridge's release function.
#[repr(C)]
struct Host {
    sysdata: Opaque<bindings::pci_sysdata>,
    window: Opaque<bindings::resource>,
    busn: Opaque<bindings::resource>,
    /// Whether configuration accesses reach `ops`.
    live: AtomicBool,
    /// Root-bus slots that are scanned in (bit `devfn >> 3`).
    slots: AtomicU32,
    /// Per root-bus slot, bumped when its functions are removed: an
    /// [`Mmio`] or [`Vectors`] made before fails from then on, instead of
    /// reaching a function that is added there later.
    slot_gen: [AtomicU32; 32],
    /// [`Mmio`] calls in progress (they may sleep, so RCU alone cannot
    /// cover them).
    mem_users: AtomicU32,
    ops: UnsafeCell<Option<Arc<dyn ConfigOps>>>,
    /// The functions' DMA translation tables.
    iommu: Arc<iommu::Iommu>,
}

// SAFETY: `ops` is read only by the trampolines under the RCU protocol of
// the type invariants and written only once no reader can see it; `iommu`
// is `Sync` and never replaced; the other fields are atomics or written by
// the C core under its own locks.
unsafe impl Sync for Host {}

/// `pci_ops` in a `static` (it contains raw pointers).
#[repr(transparent)]
struct Ops(bindings::pci_ops);

// SAFETY: The table is never written.
unsafe impl Sync for Ops {}

static PCI_OPS: Ops = Ops(bindings::pci_ops {
    add_bus: None,
    remove_bus: None,
    map_bus: None,
    read: Some(config_read),
    write: Some(config_write),
});

/// An RCU read-side critical section, ended when dropped.
struct RcuGuard(PhantomData<*mut ()>);

impl RcuGuard {
    fn new() -> Self {
        // SAFETY: Allowed in any context; balanced by `drop`, on the same
        // CPU (the guard is `!Send`).
        unsafe { bindings::rcu_read_lock() };
        Self(PhantomData)
    }
}

impl Drop for RcuGuard {
    fn drop(&mut self) {
        // SAFETY: `new` entered the critical section.
        unsafe { bindings::rcu_read_unlock() };
    }
}

/// Checks a configuration access and finds the [`ConfigOps`] for it;
/// calls `f` with it, the bus number and the offset inside an RCU
/// read-side critical section.
///
/// # Safety
///
/// `bus` is a live `pci_bus` whose `sysdata` points to the `sysdata` of a
/// [`Host`] (all buses with `ops == &PCI_OPS` are of this kind).
unsafe fn with_ops<R>(
    bus: *mut bindings::pci_bus,
    devfn: u32,
    where_: i32,
    size: i32,
    f: impl FnOnce(&dyn ConfigOps, u8, u8, u16, usize) -> Option<R>,
) -> core::result::Result<R, i32> {
    let (Ok(devfn), Ok(offset), Ok(size)) = (
        u8::try_from(devfn),
        u16::try_from(where_),
        usize::try_from(size),
    ) else {
        return Err(bindings::PCIBIOS_BAD_REGISTER_NUMBER as i32);
    };
    if !matches!(size, 1 | 2 | 4) || usize::from(offset) + size > 4096 {
        return Err(bindings::PCIBIOS_BAD_REGISTER_NUMBER as i32);
    }
    // SAFETY: `bus` is live (safety requirements); its number and parent
    // do not change while it is.
    let (nr, root) = unsafe { ((*bus).number, (*bus).parent.is_null()) };
    // SAFETY: `bus->sysdata` points to the `sysdata` of a live `Host`
    // (safety requirements; the type invariants of `Host` keep it
    // allocated while the bus exists), so `container_of` gives the `Host`.
    let host = unsafe { &*crate::container_of!((*bus).sysdata, Host, sysdata) };
    if root && host.slots.load(Ordering::Acquire) & (1 << (devfn >> 3)) == 0 {
        return Err(bindings::PCIBIOS_DEVICE_NOT_FOUND as i32);
    }
    let _rcu = RcuGuard::new();
    if !host.live.load(Ordering::Acquire) {
        return Err(bindings::PCIBIOS_DEVICE_NOT_FOUND as i32);
    }
    // SAFETY: `live` was set inside this RCU read-side critical section, so
    // `ops` is `Some` and is not taken before the critical section ends
    // (type invariants).
    let ops = unsafe { &*host.ops.get() };
    let Some(ops) = ops.as_ref() else {
        return Err(bindings::PCIBIOS_DEVICE_NOT_FOUND as i32);
    };
    f(&**ops, nr, devfn, offset, size).ok_or(bindings::PCIBIOS_DEVICE_NOT_FOUND as i32)
}

/// `pci_ops.read`.
///
/// # Safety
///
/// Called by the PCI core with a live bus of a [`RootBus`] and `val` valid
/// for writes.
unsafe extern "C" fn config_read(
    bus: *mut bindings::pci_bus,
    devfn: crate::ffi::c_uint,
    where_: crate::ffi::c_int,
    size: crate::ffi::c_int,
    val: *mut u32,
) -> crate::ffi::c_int {
    // SAFETY: `bus` is one of ours (safety requirements).
    let r = unsafe {
        with_ops(bus, devfn, where_, size, |ops, nr, devfn, offset, size| {
            ops.read(nr, devfn, offset, size)
        })
    };
    let (ret, v) = match r {
        Ok(v) => {
            let mask = match size {
                1 => 0xff,
                2 => 0xffff,
                _ => u32::MAX,
            };
            (bindings::PCIBIOS_SUCCESSFUL as i32, v & mask)
        }
        Err(e) => (e, u32::MAX),
    };
    // SAFETY: `val` is valid for writes (safety requirements).
    unsafe { *val = v };
    ret
}

/// `pci_ops.write`.
///
/// # Safety
///
/// Called by the PCI core with a live bus of a [`RootBus`].
unsafe extern "C" fn config_write(
    bus: *mut bindings::pci_bus,
    devfn: crate::ffi::c_uint,
    where_: crate::ffi::c_int,
    size: crate::ffi::c_int,
    val: u32,
) -> crate::ffi::c_int {
    // SAFETY: `bus` is one of ours (safety requirements).
    let r = unsafe {
        with_ops(bus, devfn, where_, size, |ops, nr, devfn, offset, size| {
            ops.write(nr, devfn, offset, size, val).then_some(())
        })
    };
    match r {
        Ok(()) => bindings::PCIBIOS_SUCCESSFUL as i32,
        Err(e) => e,
    }
}

/// `pci_host_bridge.release_fn`: frees the [`Host`].
///
/// # Safety
///
/// Called by the driver core once, when the last reference to the bridge is
/// put, with `release_data` the `Host` that [`RootBus::new`] leaked.
unsafe extern "C" fn release_host(bridge: *mut bindings::pci_host_bridge) {
    // SAFETY: `bridge` is valid during its release; `release_data` is the
    // pointer from `KBox::into_raw` (safety requirements). Nothing refers to
    // the `Host` any more: every bus and device of the hierarchy is gone
    // (the bridge outlives them), and `ops` was taken (it is `None`), so no
    // module code runs here.
    drop(unsafe { KBox::from_raw((*bridge).release_data.cast::<Host>()) });
}

/// Takes `pci_lock_rescan_remove()` until dropped.
struct RescanGuard;

impl RescanGuard {
    fn lock() -> Self {
        // SAFETY: A mutex: process context, as all callers are.
        unsafe { bindings::pci_lock_rescan_remove() };
        Self
    }
}

impl Drop for RescanGuard {
    fn drop(&mut self) {
        // SAFETY: Taken by `lock`.
        unsafe { bindings::pci_unlock_rescan_remove() };
    }
}

/// Whether a root bus of `domain` exists. The caller holds the rescan
/// mutex (which every bus creation and removal here takes).
fn domain_in_use(domain: i32) -> bool {
    let mut bus: *mut bindings::pci_bus = core::ptr::null_mut();
    loop {
        // SAFETY: `bus` is NULL or a root bus returned by the previous call.
        // Root buses are removed only under the rescan mutex, which our
        // caller holds (other removers, like VMD's, are not excluded: the
        // same accepted race as VMD's own domain search).
        bus = unsafe { bindings::pci_find_next_bus(bus) };
        if bus.is_null() {
            return false;
        }
        // SAFETY: `bus` is a live root bus (see above); every x86 root bus
        // has a `pci_sysdata`.
        if unsafe { bindings::pci_domain_nr(bus) } == domain {
            return true;
        }
    }
}

/// A PCI host bridge and root bus 0 in a private PCI domain, whose
/// configuration accesses a [`ConfigOps`] serves. See the
/// [module documentation](self).
///
/// Dropping it stops and removes every device (unbinding their drivers),
/// the bus and the bridge, releases the memory window and the domain
/// number, and drops the [`ConfigOps`] once no call to it can be running
/// or start.
///
/// # Invariants
///
/// `bus` is the registered root bus created with `host`'s sysdata and
/// `PCI_OPS`, and `host` is live with `live` set, until `drop`; the bridge
/// of `bus` has [`release_host`] and `host` as release function and data,
/// and the reference from its allocation is ours.
pub struct RootBus<T: ConfigOps> {
    bus: NonNull<bindings::pci_bus>,
    host: NonNull<Host>,
    ops: Arc<T>,
}

// SAFETY: The bus may be dropped (removed) from any thread in process
// context; the `ConfigOps` is `Send + Sync`.
unsafe impl<T: ConfigOps> Send for RootBus<T> {}

// SAFETY: The methods on `&RootBus` serialise with each other and with the
// rest of the PCI core through `pci_lock_rescan_remove()` and
// `pci_bus_sem`; the `ConfigOps` is `Sync`.
unsafe impl<T: ConfigOps> Sync for RootBus<T> {}

impl<T: ConfigOps> RootBus<T> {
    /// Creates the host bridge and root bus 0 of a new PCI domain, with a
    /// memory window of `window` bytes (a power of two, 4 KiB to 2 GiB)
    /// for the devices' BARs. The bus starts empty. May sleep.
    ///
    /// On failure nothing is left behind.
    ///
    /// # Errors
    ///
    /// `EINVAL` for a bad `window`; `EBUSY` when no address space above
    /// 4 GiB is free for the window; `ENOSPC` when no domain number is
    /// free; `ENOMEM`; `ENODEV` when the PCI core refuses the bus.
    pub fn new(ops: Arc<T>, window: u64) -> Result<Self> {
        if !window.is_power_of_two() || !(0x1000..=WINDOW_MAX).contains(&window) {
            return Err(EINVAL);
        }
        let erased: Arc<dyn ConfigOps> = ops.clone();
        let iommu = iommu::Iommu::new()?;
        let host = KBox::new(
            Host {
                sysdata: Opaque::uninit(),
                window: Opaque::uninit(),
                busn: Opaque::uninit(),
                live: AtomicBool::new(true),
                slots: AtomicU32::new(0),
                slot_gen: [const { AtomicU32::new(0) }; 32],
                mem_users: AtomicU32::new(0),
                ops: UnsafeCell::new(Some(erased)),
                iommu,
            },
            GFP_KERNEL,
        )?;
        let sd = host.sysdata.get();
        let win = host.window.get();
        let busn = host.busn.get();
        // SAFETY: The three point into the box, valid for writes; all-zero
        // is a valid `pci_sysdata` (no companion, IOMMU, fwnode) and
        // `resource` (unlinked, no name).
        unsafe {
            core::ptr::write_bytes(sd, 0, 1);
            (*sd).node = bindings::NUMA_NO_NODE;
            core::ptr::write_bytes(win, 0, 1);
            (*win).name = crate::c_str!("Rust PCI host bridge window").as_char_ptr();
            (*win).flags = bindings::IORESOURCE_MEM as _;
            core::ptr::write_bytes(busn, 0, 1);
            (*busn).name = crate::c_str!("Rust PCI host bridge bus numbers").as_char_ptr();
            (*busn).start = 0;
            (*busn).end = 0xff;
            (*busn).flags = bindings::IORESOURCE_BUS as _;
        }

        let _rescan = RescanGuard::lock();
        let domain = (DOMAIN_FIRST..DOMAIN_FIRST + DOMAIN_COUNT)
            .find(|&d| !domain_in_use(d))
            .ok_or(ENOSPC)?;
        // SAFETY: `sd` is valid; the bus that reads it does not exist yet.
        unsafe { (*sd).domain = domain };

        // SAFETY: `win` is a valid, unlinked resource in the box, which
        // stays allocated until it is released (below on failure, in `drop`
        // otherwise). `iomem_resource` is the root of the memory map.
        to_result(unsafe {
            bindings::allocate_resource(
                addr_of_mut!(bindings::iomem_resource),
                win,
                window,
                0x1_0000_0000,
                bindings::iomem_resource.end,
                window,
                None,
                core::ptr::null_mut(),
            )
        })
        .map_err(|_| EBUSY)?;
        // SAFETY: Just allocated: `start` is set.
        let offset = unsafe { (*win).start } - WINDOW_BUS_BASE;

        let mut list = bindings::list_head {
            next: core::ptr::null_mut(),
            prev: core::ptr::null_mut(),
        };
        let head = addr_of_mut!(list);
        // SAFETY: `head` is valid; an empty list points to itself. The two
        // resources outlive the list entries (see `Host`). `list` is not
        // moved from here on.
        let added = unsafe {
            (*head).next = head;
            (*head).prev = head;
            bindings::pci_add_resource(head, busn);
            bindings::pci_add_resource_offset(head, win, offset);
            // Both additions print and give up on ENOMEM: count them.
            (*head).next != head && (*(*head).next).next != head
        };
        let host = KBox::into_raw(host);
        let bus = if added {
            // SAFETY: `PCI_OPS` is never written through the pointer (the
            // core only reads `bus->ops`); `sd` is valid for as long as the
            // bus exists (type invariants of `Host`); `head` is a valid
            // list, which `pci_create_root_bus()` empties (when the bridge
            // could be allocated) by splicing it into the bridge.
            unsafe {
                bindings::pci_create_root_bus(
                    core::ptr::null_mut(),
                    0,
                    core::ptr::addr_of!(PCI_OPS.0).cast_mut(),
                    sd.cast(),
                    head,
                )
            }
        } else {
            core::ptr::null_mut()
        };
        let Some(bus) = NonNull::new(bus) else {
            // SAFETY: Whatever is left on the list is ours; the bridge, if
            // it was allocated, was freed without our release function, and
            // no bus refers to `host` any more. `win` was allocated above.
            unsafe {
                bindings::pci_free_resource_list(head);
                bindings::release_resource(win);
                drop(KBox::from_raw(host));
            }
            return Err(if added { ENODEV } else { ENOMEM });
        };
        // SAFETY: `bus` is a registered root bus: `bus->bridge` is the
        // `dev` of its `pci_host_bridge`, whose allocation reference we own
        // and which is released only when we put it (in `drop`), so the
        // release function is set before it could run.
        unsafe {
            let bridge =
                crate::container_of!((*bus.as_ptr()).bridge, bindings::pci_host_bridge, dev)
                    .cast_mut();
            bindings::pci_set_host_bridge_release(bridge, Some(release_host), host.cast());
        }
        // INVARIANT: See above; `live` was initialised to `true`.
        Ok(Self {
            bus,
            // SAFETY: From `KBox::into_raw`, not NULL.
            host: unsafe { NonNull::new_unchecked(host) },
            ops,
        })
    }

    /// The PCI domain number (`0x10000` or above).
    pub fn domain(&self) -> u32 {
        // SAFETY: `host` is live (type invariants); `domain` is not written
        // after creation.
        let d = unsafe { (*(*self.host.as_ptr()).sysdata.get()).domain };
        d as u32
    }

    /// The memory window in CPU physical addresses (what
    /// `pci_resource_start()` of a BAR is in).
    pub fn window(&self) -> core::ops::Range<u64> {
        let w = self.host().window.get();
        // SAFETY: `host` is live and the window allocated (type
        // invariants); its range does not change (the core only links
        // children to it, in other fields).
        unsafe { (*w).start..(*w).end + 1 }
    }

    /// CPU address minus bus address of the window: a BAR that holds bus
    /// address `b` is at CPU address `b + bus_offset()`.
    pub fn bus_offset(&self) -> u64 {
        self.window().start - WINDOW_BUS_BASE
    }

    /// The [`ConfigOps`] of the bus.
    pub fn ops(&self) -> &Arc<T> {
        &self.ops
    }

    fn host(&self) -> &Host {
        // SAFETY: `host` is live (type invariants); shared access only goes
        // through atomics and C-owned `Opaque` fields.
        unsafe { self.host.as_ref() }
    }

    /// Scans the slot of `devfn` (function 0 first, then the others if it
    /// is a multi-function device) and adds what it finds: BARs are sized
    /// and assigned from the window (`pci_assign_unassigned_bus_resources()`),
    /// then the devices are added (`pci_bus_add_devices()`) and drivers
    /// probe them. From now on the slot's configuration space reaches the
    /// [`ConfigOps`]. May sleep; process context.
    ///
    /// Returns how many functions of the slot were newly added (0 when
    /// the slot is empty or was already scanned); devices behind a bridge
    /// in the slot are added too but not counted.
    ///
    /// # Errors
    ///
    /// `EINVAL` when `devfn` is not function 0 of a slot.
    pub fn scan_slot(&self, devfn: u8) -> Result<usize> {
        self.scan_slot_with(devfn, || {})
    }

    /// [`RootBus::scan_slot`], calling `assigned` once the BARs are
    /// assigned and before any driver probes: the bus's owner updates
    /// what its non-sleeping paths know of the new functions (their BAR
    /// windows), which a driver that is already loaded uses from its
    /// `probe` on.
    ///
    /// # Errors
    ///
    /// As [`RootBus::scan_slot`].
    pub fn scan_slot_with(&self, devfn: u8, assigned: impl FnOnce()) -> Result<usize> {
        if devfn & 7 != 0 {
            return Err(EINVAL);
        }
        let bit = 1u32 << (devfn >> 3);
        let _rescan = RescanGuard::lock();
        self.host().slots.fetch_or(bit, Ordering::AcqRel);
        let bus = self.bus.as_ptr();
        // SAFETY: `bus` is our registered root bus (type invariants); the
        // rescan mutex is held, as this function requires.
        let n = unsafe { bindings::pci_scan_slot(bus, devfn.into()) };
        // Bridges among the new functions get bus numbers and their
        // secondary buses are scanned, as `pciehp` does.
        for f in 0..8u8 {
            // SAFETY: As above; `pci_get_slot()` returns a referenced device
            // or NULL.
            let dev = unsafe { bindings::pci_get_slot(bus, (devfn | f).into()) };
            if dev.is_null() {
                continue;
            }
            // SAFETY: `dev` is a referenced device on our bus; its header
            // type and subordinate bus change only under the rescan mutex,
            // which we hold. `pci_hp_add_bridge()` needs that mutex too. It
            // prints what it cannot do (no bus numbers left), and the
            // bridge then stays without a secondary bus: nothing to undo.
            unsafe {
                let hdr = (*dev).hdr_type;
                if (hdr == bindings::PCI_HEADER_TYPE_BRIDGE as u8
                    || hdr == bindings::PCI_HEADER_TYPE_CARDBUS as u8)
                    && (*dev).subordinate.is_null()
                {
                    bindings::pci_hp_add_bridge(dev);
                }
                bindings::pci_dev_put(dev);
            }
        }
        // SAFETY: As above. Sizes the windows of new bridges and assigns
        // every unassigned BAR and window of the hierarchy.
        unsafe { bindings::pci_assign_unassigned_bus_resources(bus) };
        self.install_dma_ops(devfn);
        assigned();
        // SAFETY: As above. Adds the new devices (drivers probe them).
        unsafe { bindings::pci_bus_add_devices(bus) };
        if !self.has_device_slot(devfn) {
            self.host().slots.fetch_and(!bit, Ordering::AcqRel);
        }
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Gives the new functions of the slot of `devfn`, and new devices
    /// behind bridges, the software IOMMU's DMA operations, and makes the
    /// functions' translation tables present. The caller holds the rescan
    /// mutex and has not added the new devices yet.
    fn install_dma_ops(&self, devfn: u8) {
        let bus = self.bus.as_ptr();
        for f in 0..8u8 {
            // SAFETY: `bus` is our registered root bus (type invariants);
            // `pci_get_slot()` returns a referenced device or NULL.
            let dev = unsafe { bindings::pci_get_slot(bus, (devfn | f).into()) };
            if dev.is_null() {
                continue;
            }
            // SAFETY: `dev` is a referenced device of our hierarchy. One
            // without DMA operations was scanned by our caller and is not
            // added yet (added ones got them at their scan), so no driver
            // and no DMA API call can use it: the rescan mutex is held.
            if unsafe { iommu::install_ops(dev) } {
                self.host().iommu.install(devfn | f);
            }
            // SAFETY: `pci_get_slot()` took a reference, which we put.
            unsafe { bindings::pci_dev_put(dev) };
        }
        // SAFETY: `bus` is our registered root bus; the rescan mutex is
        // held, so the devices without DMA operations and without a driver
        // that the walk finds were scanned by our caller and not added yet.
        unsafe {
            bindings::pci_walk_bus(bus, Some(iommu::install_ops_walk), core::ptr::null_mut())
        };
    }

    /// Whether any function of the slot of `devfn` exists.
    fn has_device_slot(&self, devfn: u8) -> bool {
        (0..8).any(|f| self.has_device((devfn & !7) | f))
    }

    /// Stops and removes the functions of the slot of `devfn`, if present
    /// (drivers are unbound first), from the highest function number down;
    /// afterwards the slot reads as empty until scanned again. May sleep;
    /// process context.
    pub fn remove_slot(&self, devfn: u8) {
        let slot = devfn & !7;
        let _rescan = RescanGuard::lock();
        for f in (0..8u8).rev() {
            // SAFETY: `bus` is our registered root bus (type invariants).
            // `pci_get_slot()` returns a referenced device or NULL.
            let dev = unsafe { bindings::pci_get_slot(self.bus.as_ptr(), (slot | f).into()) };
            if dev.is_null() {
                continue;
            }
            // SAFETY: `dev` is a referenced device on our bus; the rescan
            // mutex is held, as removal requires. Our reference keeps the
            // structure allocated until `pci_dev_put()`.
            unsafe {
                bindings::pci_stop_and_remove_bus_device(dev);
                bindings::pci_dev_put(dev);
            }
        }
        // The drivers are unbound: what is still mapped leaked, and
        // handles they kept are stale.
        for f in 0..8u8 {
            self.host().iommu.remove(slot | f);
        }
        if let Some(g) = self.host().slot_gen.get(usize::from(slot >> 3)) {
            g.fetch_add(1, Ordering::AcqRel);
        }
        self.host()
            .slots
            .fetch_and(!(1u32 << (slot >> 3)), Ordering::AcqRel);
    }

    /// Whether a `pci_dev` exists at `devfn` on the root bus. May sleep.
    pub fn has_device(&self, devfn: u8) -> bool {
        // SAFETY: `bus` is our registered root bus (type invariants).
        let dev = unsafe { bindings::pci_get_slot(self.bus.as_ptr(), devfn.into()) };
        if dev.is_null() {
            return false;
        }
        // SAFETY: `pci_get_slot()` took a reference, which we put.
        unsafe { bindings::pci_dev_put(dev) };
        true
    }
}

impl<T: ConfigOps> Drop for RootBus<T> {
    fn drop(&mut self) {
        let bus = self.bus.as_ptr();
        let host = self.host.as_ptr();
        // SAFETY: `bus` is our registered root bus (type invariants); its
        // bridge is the `pci_host_bridge` whose allocation reference we
        // own.
        let bridge = unsafe {
            crate::container_of!((*bus).bridge, bindings::pci_host_bridge, dev).cast_mut()
        };
        {
            let _rescan = RescanGuard::lock();
            // SAFETY: The rescan mutex is held, as both require. They stop
            // (unbinding drivers) and remove every device and the bus, and
            // `device_del()` the bridge; `bus` is not used afterwards (it
            // may be freed once the last reference to it is put). The
            // domain number is free once the bus left `pci_root_buses`.
            unsafe {
                bindings::pci_stop_root_bus(bus);
                bindings::pci_remove_root_bus(bus);
            }
        }
        // SAFETY: `host` stays allocated until the bridge is released,
        // which needs our reference (put below).
        let h = unsafe { &*host };
        // Every driver is unbound: what is still mapped leaked.
        for devfn in 0..=u8::MAX {
            h.iommu.remove(devfn);
        }
        h.live.store(false, Ordering::Release);
        // SAFETY: Process context. After the grace period, every
        // trampoline call that saw `live` set has returned, and later ones
        // see it cleared and do not touch `ops`.
        unsafe { bindings::synchronize_rcu() };
        // Memory accesses counted before the grace period may still run:
        // the devices are gone, so only a driver that outlived its device
        // (an open file, say) can be in one, and it ends at its timeout.
        while h.mem_users.load(Ordering::Acquire) != 0 {
            // SAFETY: Process context.
            unsafe { bindings::msleep(1) };
        }
        // SAFETY: No reader can access `ops` any more (see above).
        let ops = unsafe { (*h.ops.get()).take() };
        drop(ops);
        // SAFETY: The window was allocated in `new`. Removing a device
        // released its BARs and bridge windows (`pci_free_resources()`),
        // so the window has no children left; should one remain, it still
        // points to the window, which stays allocated (in `host`) until
        // the bridge is released, after every device. Then we put the
        // allocation reference of the bridge; `release_host` frees `host`
        // once the last reference is gone.
        unsafe {
            bindings::release_resource(h.window.get());
            bindings::pci_free_host_bridge(bridge);
        }
    }
}
