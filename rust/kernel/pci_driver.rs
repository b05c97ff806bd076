// SPDX-License-Identifier: GPL-2.0

//! PCI drivers: a [`Driver`] bound to the PCI devices of an ID table.
//!
//! C headers: [`include/linux/pci.h`](srctree/include/linux/pci.h),
//! [`include/linux/mod_devicetable.h`](srctree/include/linux/mod_devicetable.h)
//!
//! A [`Registration`] registers a `struct pci_driver` whose ID table is
//! built from [`Driver::ID_TABLE`]. For every matching device the PCI core
//! calls [`Driver::probe`], which returns the driver's per-device data; the
//! data lives in the device's driver data (`pci_set_drvdata()`) until
//! [`Driver::remove`] gets it back. Dropping the [`Registration`]
//! unregisters the driver, which first removes it from every device it is
//! bound to.
//!
//! # Examples
//!
//! A driver for a device that no machine has (vendor `0xffff` is what an
//! empty slot reads): registering it binds nothing, dropping it unregisters.
//!
//! ```
//! use kernel::c_str;
//! use kernel::pci_driver::{Device, DeviceId, Driver, Registration};
//! use kernel::prelude::*;
//!
//! /// The per-device data.
//! struct Card {
//!     bar0: u64,
//! }
//!
//! struct NoSuchDriver;
//!
//! impl Driver for NoSuchDriver {
//!     type Data = Card;
//!     const NAME: &'static CStr = c_str!("rust_pci_doctest");
//!     const ID_TABLE: &'static [DeviceId] = &[DeviceId::new(0xffff, 0xfffe)];
//!
//!     fn probe(dev: &Device, _id: &DeviceId) -> Result<Pin<KBox<Card>>> {
//!         dev.enable_device()?;
//!         dev.set_master();
//!         Ok(KBox::pin(Card { bar0: dev.resource_start(0) }, GFP_KERNEL)?)
//!     }
//!
//!     fn remove(dev: &Device, _card: Pin<KBox<Card>>) {
//!         dev.clear_master();
//!         dev.disable_device();
//!     }
//! }
//!
//! // Built-in code (these tests) has no `struct module`: its
//! // `THIS_MODULE` is NULL. A module passes `&THIS_MODULE`.
//! // SAFETY: NULL is the right `THIS_MODULE` of built-in code.
//! static BUILT_IN: ThisModule = unsafe { ThisModule::from_ptr(core::ptr::null_mut()) };
//!
//! let driver = Registration::<NoSuchDriver>::new(&BUILT_IN)?;
//! // Dropping `driver` calls `pci_unregister_driver()`.
//! drop(driver);
//!
//! // A driver needs at least one ID.
//! struct Nothing;
//!
//! impl Driver for Nothing {
//!     type Data = ();
//!     const NAME: &'static CStr = c_str!("rust_pci_doctest_empty");
//!     const ID_TABLE: &'static [DeviceId] = &[];
//!
//!     fn probe(_dev: &Device, _id: &DeviceId) -> Result<Pin<KBox<()>>> {
//!         Ok(KBox::pin((), GFP_KERNEL)?)
//!     }
//! }
//!
//! assert_eq!(Registration::<Nothing>::new(&BUILT_IN).err(), Some(EINVAL));
//! # Ok::<(), Error>(())
//! ```
//!
//! # Contexts
//!
//! [`Driver::probe`] and [`Driver::remove`] run in process context with the
//! device lock held; they may sleep. Probing may happen inside
//! [`Registration::new`] (for devices that are already present), later on
//! hot-add, or on another CPU; removal inside the drop of the
//! [`Registration`], on hot-removal or when user space unbinds the device.
//! [`Registration::new`] and drop sleep.

use crate::{
    alloc::{flags::GFP_KERNEL, KBox, KVec},
    device,
    error::{code::*, from_result, to_result, Result},
    str::CStr,
    types::{ForeignOwnable, Opaque},
    ThisModule,
};
use core::{marker::PhantomData, pin::Pin, ptr::addr_of};

/// `PCI_ANY_ID`: matches any vendor, device, subvendor or subdevice.
const PCI_ANY_ID: u32 = !0;

/// Number of standard BARs of a type-0 function (`PCI_STD_NUM_BARS`).
const NUM_BARS: usize = bindings::PCI_STD_NUM_BARS as usize;

/// A PCI function (`struct pci_dev`).
///
/// Only ever borrowed: the callbacks of a [`Driver`] get a `&Device` that
/// is valid for the duration of the call.
///
/// # Examples
///
/// The accessors on the first PCI device of the machine, if it has one:
///
/// ```
/// use kernel::fmt;
/// use kernel::pci_driver::Device;
/// use kernel::str::CString;
///
/// // SAFETY: `pci_get_device()` may be called in process context; `from`
/// // is NULL (start of the list).
/// let raw = unsafe { kernel::bindings::pci_get_device(!0, !0, core::ptr::null_mut()) };
/// if !raw.is_null() {
///     // SAFETY: `raw` is a valid device, referenced until `pci_dev_put()`
///     // below, after the last use of `dev`.
///     let dev = unsafe { Device::from_raw(raw) };
///     assert_eq!(dev.as_raw(), raw);
///     assert_ne!(dev.vendor_id(), 0xffff);
///     let expected = CString::try_from_fmt(fmt!(
///         "{:04x}:{:02x}:{:02x}.{}",
///         dev.domain(),
///         dev.bus_number(),
///         dev.devfn() >> 3,
///         dev.devfn() & 7
///     ))?;
///     assert_eq!(dev.name().as_bytes(), expected.as_bytes());
///     assert_eq!(dev.resource_start(6), 0);
///     assert_eq!(dev.resource_len(6), 0);
///     // SAFETY: Puts the reference that `pci_get_device()` returned;
///     // `dev` is not used any more.
///     unsafe { kernel::bindings::pci_dev_put(raw) };
/// }
/// # Ok::<(), Error>(())
/// ```
///
/// # Invariants
///
/// The inner `pci_dev` is valid, and its bus, for the lifetime of the
/// reference: the PCI core holds a reference to the device (and the device
/// one to its bus) while a driver callback runs.
#[repr(transparent)]
pub struct Device(Opaque<bindings::pci_dev>);

impl Device {
    /// Borrows a raw `struct pci_dev`.
    ///
    /// # Safety
    ///
    /// `ptr` points to a valid `pci_dev` that stays valid (a reference to
    /// it is held) for the lifetime `'a`.
    pub unsafe fn from_raw<'a>(ptr: *mut bindings::pci_dev) -> &'a Self {
        // SAFETY: `Device` is `repr(transparent)` over the C struct, and the
        // caller guarantees validity for `'a` (this establishes the type
        // invariants).
        unsafe { &*ptr.cast::<Self>() }
    }

    /// The raw `struct pci_dev`, valid as long as `self` is.
    pub fn as_raw(&self) -> *mut bindings::pci_dev {
        self.0.get()
    }

    /// The vendor ID.
    pub fn vendor_id(&self) -> u16 {
        // SAFETY: The device is valid (type invariants); the field is set at
        // enumeration and not changed afterwards.
        unsafe { (*self.as_raw()).vendor }
    }

    /// The device ID.
    pub fn device_id(&self) -> u16 {
        // SAFETY: As in `vendor_id`.
        unsafe { (*self.as_raw()).device }
    }

    /// The device and function number (`PCI_DEVFN(slot, function)`).
    pub fn devfn(&self) -> u8 {
        // SAFETY: As in `vendor_id`.
        let devfn = unsafe { (*self.as_raw()).devfn };
        // `devfn` is below 256 (an 8-bit field in the routing ID).
        (devfn & 0xff) as u8
    }

    /// The number of the bus the device is on.
    pub fn bus_number(&self) -> u8 {
        // SAFETY: The device and its bus are valid (type invariants); the
        // bus number is not changed while devices are on the bus.
        unsafe { (*(*self.as_raw()).bus).number }
    }

    /// The PCI domain (segment) of the device (`pci_domain_nr()`).
    pub fn domain(&self) -> i32 {
        // SAFETY: The device and its bus are valid (type invariants).
        unsafe { bindings::pci_domain_nr((*self.as_raw()).bus) }
    }

    /// The device's name, `DDDD:BB:SS.F` (`pci_name()`).
    pub fn name(&self) -> &CStr {
        // SAFETY: The device is valid (type invariants).
        let name = unsafe { bindings::pci_name(self.as_raw()) };
        // SAFETY: A registered PCI device's name is a NUL-terminated string
        // set at creation and freed with the device, so it lives as long as
        // `self`.
        unsafe { CStr::from_char_ptr(name) }
    }

    /// The generic device (`&pdev->dev`).
    pub fn as_dev(&self) -> &device::Device {
        // SAFETY: The device is valid and referenced for the lifetime of
        // `self` (type invariants), so its embedded `struct device` is too.
        unsafe { device::Device::as_ref(core::ptr::addr_of_mut!((*self.as_raw()).dev)) }
    }

    /// `(start, end)` of standard BAR `bar`, `None` if `bar > 5`.
    fn resource(&self, bar: usize) -> Option<(u64, u64)> {
        if bar >= NUM_BARS {
            return None;
        }
        // SAFETY: The device is valid (type invariants) and `bar` is within
        // `resource[]` (which has `PCI_NUM_RESOURCES > PCI_STD_NUM_BARS`
        // entries); the fields are read as C's `pci_resource_start()` and
        // `pci_resource_end()` read them.
        unsafe {
            let res = addr_of!((*self.as_raw()).resource)
                .cast::<bindings::resource>()
                .add(bar);
            Some(((*res).start, (*res).end))
        }
    }

    /// The CPU address at which BAR `bar` (0 to 5) starts
    /// (`pci_resource_start()`); 0 if the BAR is unassigned or `bar > 5`.
    pub fn resource_start(&self, bar: usize) -> u64 {
        self.resource(bar).map_or(0, |(start, _)| start)
    }

    /// The size of BAR `bar` (0 to 5) in bytes (`pci_resource_len()`); 0 if
    /// the BAR is not implemented or `bar > 5`.
    pub fn resource_len(&self, bar: usize) -> u64 {
        match self.resource(bar) {
            Some((start, end)) if end != 0 => end.wrapping_sub(start).wrapping_add(1),
            _ => 0,
        }
    }

    /// Enables the device's memory and I/O decoding and wakes it up
    /// (`pci_enable_device()`). Balance it with
    /// [`disable_device`](Self::disable_device), in [`Driver::remove`] at
    /// the latest.
    ///
    /// # Errors
    ///
    /// Whatever `pci_enable_device()` returns, e.g. `EINVAL` if a BAR
    /// could not be assigned.
    pub fn enable_device(&self) -> Result {
        // SAFETY: The device is valid (type invariants).
        to_result(unsafe { bindings::pci_enable_device(self.as_raw()) })
    }

    /// Undoes one [`enable_device`](Self::enable_device)
    /// (`pci_disable_device()`). Disabling a device that is not enabled is
    /// harmless but warns once.
    pub fn disable_device(&self) {
        // SAFETY: The device is valid (type invariants).
        unsafe { bindings::pci_disable_device(self.as_raw()) };
    }

    /// Lets the device issue memory requests (DMA, MSI): sets Bus Master
    /// Enable (`pci_set_master()`).
    pub fn set_master(&self) {
        // SAFETY: The device is valid (type invariants).
        unsafe { bindings::pci_set_master(self.as_raw()) };
    }

    /// Clears Bus Master Enable (`pci_clear_master()`).
    pub fn clear_master(&self) {
        // SAFETY: The device is valid (type invariants).
        unsafe { bindings::pci_clear_master(self.as_raw()) };
    }
}

/// One entry of a [`Driver`]'s ID table: a vendor and device ID, any
/// subsystem IDs, any class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceId {
    vendor: u16,
    device: u16,
}

impl DeviceId {
    /// Matches the functions with vendor ID `vendor` and device ID `device`.
    pub const fn new(vendor: u16, device: u16) -> Self {
        Self { vendor, device }
    }

    /// The vendor ID.
    pub const fn vendor(&self) -> u16 {
        self.vendor
    }

    /// The device ID.
    pub const fn device(&self) -> u16 {
        self.device
    }
}

/// A PCI driver.
///
/// The type implementing it is only a name: [`Driver::Data`] is the state
/// of one bound device.
pub trait Driver: Send + Sync + 'static {
    /// What [`Driver::probe`] creates for a device and [`Driver::remove`]
    /// gets back.
    type Data: Send + Sync + 'static;

    /// The driver's name (`/sys/bus/pci/drivers/NAME`).
    const NAME: &'static CStr;

    /// The devices this driver binds to; must not be empty.
    const ID_TABLE: &'static [DeviceId];

    /// Binds to `dev`, which matched `id`, and returns the device's data.
    ///
    /// `id` is the entry of [`Driver::ID_TABLE`] that matched. For a device
    /// bound through a dynamic ID (`new_id` in sysfs) it is the entry whose
    /// index was given as driver data, and for one bound through
    /// `driver_override` (or a dynamic ID without driver data) the first
    /// entry: check [`Device::vendor_id`] and [`Device::device_id`] if that
    /// matters.
    ///
    /// # Errors
    ///
    /// An error leaves the device unbound; the PCI core logs it.
    fn probe(dev: &Device, id: &DeviceId) -> Result<Pin<KBox<Self::Data>>>;

    /// Unbinds from `dev` (driver unregistration, hot-removal, unbinding by
    /// user space); `data` is what [`Driver::probe`] returned for it. The
    /// default drops it.
    fn remove(_dev: &Device, _data: Pin<KBox<Self::Data>>) {}
}

/// A registered PCI driver; dropping it unregisters it
/// (`__pci_register_driver()` / `pci_unregister_driver()`).
///
/// # Invariants
///
/// `drv` is registered until `drop`, with `name = T::NAME`, `probe` and
/// `remove` the trampolines for `T`, `id_table` pointing to `_ids`, and
/// the rest zero before registration. `_ids` holds one entry per
/// [`Driver::ID_TABLE`] entry, in order, with the entry's index as
/// `driver_data`, then a zero terminator; it is not modified while `drv`
/// is registered.
pub struct Registration<T: Driver> {
    drv: Pin<KBox<Opaque<bindings::pci_driver>>>,
    /// The ID table that `drv.id_table` points into; only kept alive.
    _ids: KVec<bindings::pci_device_id>,
    _driver: PhantomData<T>,
}

// SAFETY: No method takes `&Registration`; the PCI core reaches the driver
// through its own pointers, and the callbacks only use `T` (which is
// `Send + Sync`) and the device they are called for.
unsafe impl<T: Driver> Sync for Registration<T> {}

// SAFETY: The registration may be dropped (`pci_unregister_driver()`, which
// may sleep) in any process context, on any thread.
unsafe impl<T: Driver> Send for Registration<T> {}

impl<T: Driver> Registration<T> {
    /// Registers driver `T` on behalf of `module` (`&THIS_MODULE`, which
    /// the driver core ties the driver to). Devices that are present and
    /// match are probed before this returns.
    ///
    /// # Errors
    ///
    /// `EINVAL` if [`Driver::ID_TABLE`] is empty, `ENOMEM`, or what
    /// `driver_register()` returns (`EBUSY` if a PCI driver of the same
    /// name is registered).
    pub fn new(module: &'static ThisModule) -> Result<Self> {
        if T::ID_TABLE.is_empty() {
            return Err(EINVAL);
        }
        let len = T::ID_TABLE.len().checked_add(1).ok_or(ENOMEM)?;
        let mut ids = KVec::with_capacity(len, GFP_KERNEL)?;
        for (index, id) in T::ID_TABLE.iter().enumerate() {
            ids.push(
                bindings::pci_device_id {
                    vendor: id.vendor.into(),
                    device: id.device.into(),
                    subvendor: PCI_ANY_ID,
                    subdevice: PCI_ANY_ID,
                    class: 0,
                    class_mask: 0,
                    driver_data: index,
                    override_only: 0,
                },
                GFP_KERNEL,
            )?;
        }
        ids.push(bindings::pci_device_id::default(), GFP_KERNEL)?;

        let drv = KBox::pin(Opaque::<bindings::pci_driver>::uninit(), GFP_KERNEL)?;
        let raw = drv.get();
        // SAFETY: `raw` points to the `pci_driver` in the pinned box, valid
        // for writes; all-zero is a valid `pci_driver` (no callbacks, empty
        // lists that registration initialises).
        unsafe {
            core::ptr::write_bytes(raw, 0, 1);
            (*raw).name = T::NAME.as_char_ptr();
            (*raw).id_table = ids.as_ptr();
            (*raw).probe = Some(probe_callback::<T>);
            (*raw).remove = Some(remove_callback::<T>);
        }
        // SAFETY: `raw` is an initialised `pci_driver`. It stays valid and
        // does not move until `pci_unregister_driver()` in `drop` (it is
        // pinned and owned by the returned registration), and so do the
        // name (`'static`) and the ID table (the heap buffer of `ids`,
        // which the registration owns and never modifies). The module is
        // the owner of the callbacks' code. No module name is passed: it
        // is only used for built-in drivers' sysfs links.
        to_result(unsafe {
            bindings::__pci_register_driver(raw, module.as_ptr(), core::ptr::null())
        })?;
        // INVARIANT: Initialised as stated, and registered just above.
        Ok(Self {
            drv,
            _ids: ids,
            _driver: PhantomData,
        })
    }
}

impl<T: Driver> Drop for Registration<T> {
    fn drop(&mut self) {
        // SAFETY: `drv` is registered (type invariants); this removes the
        // driver from every device (calling `remove`) and unregisters it,
        // after which the PCI core no longer uses `drv` or `_ids`, which are
        // freed after this.
        unsafe { bindings::pci_unregister_driver(self.drv.get()) };
    }
}

/// The `pci_driver.probe` callback of driver `T`.
///
/// # Safety
///
/// Called by the PCI core, with the device lock held, for a valid `pdev`
/// that is not bound to a driver, and `id` the `pci_device_id` that
/// matched: an entry of the ID table of the [`Registration<T>`] (whose
/// `driver_data` is an index into [`Driver::ID_TABLE`]), a dynamic ID
/// whose `driver_data` is one of those (sysfs `new_id` only accepts those)
/// or 0, or `pci_device_id_any` (`driver_data` 0).
unsafe extern "C" fn probe_callback<T: Driver>(
    pdev: *mut bindings::pci_dev,
    id: *const bindings::pci_device_id,
) -> crate::ffi::c_int {
    // SAFETY: `pdev` is valid, and referenced by the core, for the whole
    // call (safety requirements); the reference does not escape it.
    let dev = unsafe { Device::from_raw(pdev) };
    let index = if id.is_null() {
        0
    } else {
        // SAFETY: A non-null `id` is a valid `pci_device_id` for the call
        // (safety requirements).
        unsafe { (*id).driver_data }
    };
    // `kernel_ulong_t` is `usize` in the kernel's `ffi` mapping.
    let Some(entry) = T::ID_TABLE.get(index) else {
        return EINVAL.to_errno();
    };
    from_result(|| {
        let data = T::probe(dev, entry)?;
        // SAFETY: `pdev` is valid (safety requirements). The pointer stays
        // there, owned by the device, until `remove_callback` takes it back
        // (the driver core clears the driver data only after removal, and
        // nothing else of this abstraction writes it).
        unsafe { bindings::pci_set_drvdata(pdev, data.into_foreign().cast_mut()) };
        Ok(0)
    })
}

/// The `pci_driver.remove` callback of driver `T`.
///
/// # Safety
///
/// Called by the PCI core, with the device lock held, for a valid `pdev`
/// for which [`probe_callback::<T>`] succeeded, once per successful probe.
unsafe extern "C" fn remove_callback<T: Driver>(pdev: *mut bindings::pci_dev) {
    // SAFETY: `pdev` is valid, and referenced by the core, for the whole
    // call (safety requirements); the reference does not escape it.
    let dev = unsafe { Device::from_raw(pdev) };
    // SAFETY: `pdev` is valid (safety requirements).
    let ptr = unsafe { bindings::pci_get_drvdata(pdev) };
    // SAFETY: `ptr` is NULL or what `probe_callback::<T>` stored: the
    // result of `into_foreign()` on a `Pin<KBox<T::Data>>`, which nothing
    // else took back (removal happens once per probe, and the driver data
    // is cleared right below).
    let data = unsafe { <Pin<KBox<T::Data>> as ForeignOwnable>::try_from_foreign(ptr) };
    // SAFETY: `pdev` is valid (safety requirements); the data is ours now.
    unsafe { bindings::pci_set_drvdata(pdev, core::ptr::null_mut()) };
    if let Some(data) = data {
        T::remove(dev, data);
    }
}
