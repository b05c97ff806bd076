// SPDX-License-Identifier: GPL-2.0

//! Misc character devices (`/dev/NAME`, major 10) driven by `ioctl()`.
//!
//! C headers: [`include/linux/miscdevice.h`](srctree/include/linux/miscdevice.h),
//! [`include/linux/fs.h`](srctree/include/linux/fs.h)
//!
//! A [`Registration`] registers a `struct miscdevice` with a dynamic minor
//! whose file operations call a [`MiscDevice`] object: every open file
//! holds a reference ([`Arc`]) to the object, taken at `open()` and
//! dropped at the last `close()`, and `ioctl()` on the file calls
//! [`MiscDevice::ioctl`]. Dropping the [`Registration`] removes the device
//! node; files that are still open keep working on the object until they
//! are closed, and keep the module that implements it loaded
//! ([`MiscDevice::OWNER`]).
//!
//! # Examples
//!
//! ```
//! use core::sync::atomic::{AtomicU32, Ordering};
//! use kernel::ioctl::{_IO, _IOR};
//! use kernel::miscdev::{MiscDevice, Registration};
//! use kernel::prelude::*;
//! use kernel::sync::Arc;
//! use kernel::uaccess::UserSlice;
//! use kernel::fmt;
//!
//! const COUNTER_INC: u32 = _IO(b'C' as u32, 1);
//! const COUNTER_GET: u32 = _IOR::<u32>(b'C' as u32, 2);
//!
//! /// `/dev/counterN`: `COUNTER_INC` counts, `COUNTER_GET` reads the count.
//! struct Counter(AtomicU32);
//!
//! impl MiscDevice for Counter {
//!     // A module says `&THIS_MODULE`.
//!     const OWNER: &'static ThisModule = &BUILT_IN;
//!
//!     fn ioctl(&self, cmd: u32, arg: usize) -> Result<isize> {
//!         match cmd {
//!             COUNTER_INC => Ok(self.0.fetch_add(1, Ordering::Relaxed).wrapping_add(1) as isize),
//!             COUNTER_GET => {
//!                 let count = self.0.load(Ordering::Relaxed);
//!                 UserSlice::new(arg, core::mem::size_of::<u32>())
//!                     .writer()
//!                     .write(&count)?;
//!                 Ok(0)
//!             }
//!             _ => Err(ENOTTY),
//!         }
//!     }
//! }
//!
//! // Built-in code (these tests) has no `struct module`: its
//! // `THIS_MODULE` is NULL.
//! // SAFETY: NULL is the right `THIS_MODULE` of built-in code.
//! static BUILT_IN: ThisModule = unsafe { ThisModule::from_ptr(core::ptr::null_mut()) };
//!
//! let counter = Arc::new(Counter(AtomicU32::new(0)), GFP_KERNEL)?;
//! let a = Registration::register(fmt!("rust_misc_doctest{}", 0), counter.clone())?;
//! let b = Registration::register(fmt!("rust_misc_doctest{}", 1), counter)?;
//! assert_eq!(a.name().as_bytes(), b"rust_misc_doctest0");
//! // Not `MISC_DYNAMIC_MINOR` (255) any more: a real minor.
//! assert!(a.minor() >= 0 && a.minor() != 255);
//! assert_ne!(a.minor(), b.minor());
//! assert_eq!(a.data().ioctl(COUNTER_INC, 0), Ok(1));
//! assert_eq!(b.data().ioctl(COUNTER_INC, 0), Ok(2));
//! assert_eq!(a.data().ioctl(0, 0), Err(ENOTTY));
//!
//! // Dropping deregisters (`misc_deregister()`): the name is free again.
//! drop(a);
//! let c = Registration::register(fmt!("rust_misc_doctest0"), b.data().clone())?;
//! assert_eq!(c.data().ioctl(COUNTER_INC, 0), Ok(3));
//! # Ok::<(), Error>(())
//! ```
//!
//! # Contexts
//!
//! [`MiscDevice::ioctl`] runs in process context (the calling task's), may
//! sleep, and may run on several CPUs at once, also for the same file.
//! [`Registration::register`] and drop sleep.

use crate::{
    alloc::{flags::GFP_KERNEL, KBox},
    device,
    error::{to_result, Result},
    str::{CStr, CString},
    sync::Arc,
    types::{ForeignOwnable, Opaque},
    ThisModule,
};
use core::{fmt, marker::PhantomData, pin::Pin};

/// `MISC_DYNAMIC_MINOR`: ask `misc_register()` for a free minor.
const DYNAMIC_MINOR: i32 = bindings::MISC_DYNAMIC_MINOR as i32;

/// The object behind the files of a misc device.
pub trait MiscDevice: Send + Sync + 'static {
    /// The module that implements the trait: `&THIS_MODULE` (in a module
    /// crate, the `static` that `module!` defines).
    ///
    /// It becomes the owner of the device's file operations, so the module
    /// cannot be unloaded while one of the device's files is open.
    const OWNER: &'static ThisModule;

    /// `ioctl()` (`unlocked_ioctl`, and `compat_ioctl` for 32-bit tasks on
    /// a 64-bit kernel with `CONFIG_COMPAT`, where `arg` is converted with
    /// `compat_ptr()`): command `cmd`, argument `arg`.
    ///
    /// When `arg` is a pointer, reach user memory with
    /// [`UserSlice::new(arg, len)`](crate::uaccess::UserSlice::new), never
    /// by dereferencing it. The [`crate::ioctl`] functions build and
    /// decode command numbers.
    ///
    /// # Errors
    ///
    /// The error is returned to user space (`ENOTTY` for an unknown
    /// command, by convention).
    fn ioctl(&self, cmd: u32, arg: usize) -> Result<isize>;
}

/// What the C side points to.
///
/// # Invariants
///
/// `misc.name` points into `name` and `misc.fops` to `Fops::<T>::FOPS`;
/// while `misc` is registered the structure does not move and is not
/// freed.
struct Inner<T: MiscDevice> {
    misc: Opaque<bindings::miscdevice>,
    name: CString,
    data: Arc<T>,
}

/// A registered misc device; dropping it deregisters it
/// (`misc_register()` / `misc_deregister()`).
///
/// # Invariants
///
/// `inner.misc` is registered until `drop`.
pub struct Registration<T: MiscDevice> {
    inner: Pin<KBox<Inner<T>>>,
}

// SAFETY: The methods on `&Registration` read fields that only `register`
// and `drop` write (`minor`, the name) or the `Arc<T>` (`T: Sync`); the
// misc core reaches the registration only through the file operations,
// which take a reference to `T` (`Send + Sync`).
unsafe impl<T: MiscDevice> Sync for Registration<T> {}

// SAFETY: The registration may be dropped (`misc_deregister()`, which
// sleeps) in any process context, on any thread; `T` is `Send + Sync`.
unsafe impl<T: MiscDevice> Send for Registration<T> {}

impl<T: MiscDevice> Registration<T> {
    /// Registers `/dev/NAME`, with `NAME` formatted from `name` (e.g.
    /// `fmt!("pcieoe_test.{}", n)`), a dynamic minor and mode 0600, whose
    /// files call `data`.
    ///
    /// # Errors
    ///
    /// `ENOMEM`, `EBUSY` if no minor is free, `EEXIST` if a misc device of
    /// the same name exists, or what `device_create()` returns.
    pub fn register(name: fmt::Arguments<'_>, data: Arc<T>) -> Result<Self> {
        Self::register_with_parent(name, None, data)
    }

    /// Like [`register`](Self::register), with `parent` as the parent of
    /// the misc device in sysfs (e.g. the PCI function it stands for; the
    /// misc device holds a reference to its parent).
    ///
    /// # Errors
    ///
    /// As [`register`](Self::register).
    pub fn register_with_parent(
        name: fmt::Arguments<'_>,
        parent: Option<&device::Device>,
        data: Arc<T>,
    ) -> Result<Self> {
        let inner = KBox::pin(
            Inner {
                misc: Opaque::uninit(),
                name: CString::try_from_fmt(name)?,
                data,
            },
            GFP_KERNEL,
        )?;
        let misc = inner.misc.get();
        // INVARIANT: `misc` is set up to point to the name and the file
        // operations before registration; the box is pinned, and only freed
        // after `misc_deregister()` (in `drop`) or if registration failed.
        // SAFETY: `misc` points to the `miscdevice` in the pinned box, valid
        // for writes; all-zero is a valid `miscdevice` (no groups, no node
        // name, default mode) that `misc_register()` initialises the rest
        // of. The name and the `'static` file operations outlive the
        // registration (see `drop`); a parent is kept referenced by the
        // device core while the misc device exists.
        unsafe {
            core::ptr::write_bytes(misc, 0, 1);
            (*misc).minor = DYNAMIC_MINOR;
            (*misc).name = inner.name.as_char_ptr();
            (*misc).fops = Fops::<T>::get();
            (*misc).parent = parent.map_or(core::ptr::null_mut(), |p| p.as_raw());
            to_result(bindings::misc_register(misc))?;
        }
        // INVARIANT: Registered just above.
        Ok(Self { inner })
    }

    /// The minor number (the major is 10, `MISC_MAJOR`).
    pub fn minor(&self) -> i32 {
        // SAFETY: `misc` is registered (type invariants): `misc_register()`
        // wrote the minor, and only `misc_deregister()` writes it again.
        unsafe { (*self.inner.misc.get()).minor }
    }

    /// The device's name (`/dev/NAME`).
    pub fn name(&self) -> &CStr {
        &self.inner.name
    }

    /// The object the device's files call.
    pub fn data(&self) -> &Arc<T> {
        &self.inner.data
    }
}

impl<T: MiscDevice> Drop for Registration<T> {
    fn drop(&mut self) {
        // SAFETY: `misc` is registered (type invariants). Once
        // `misc_deregister()` returned no `open` runs or will run on it
        // (`misc_open()` looks the device up and calls `open` under the
        // `misc_mtx` that deregistration takes), so the box may be freed;
        // open files hold their own reference to `T`.
        unsafe { bindings::misc_deregister(self.inner.misc.get()) };
    }
}

/// The `file_operations` of the misc devices of `T`.
struct Fops<T: MiscDevice>(PhantomData<T>);

impl<T: MiscDevice> Fops<T> {
    /// The table: `open` takes a reference to `T` into the file's
    /// `private_data`, `release` drops it, `unlocked_ioctl` (and, with
    /// `CONFIG_COMPAT`, `compat_ptr_ioctl()` as `compat_ioctl`) call it.
    /// The owner is `T::OWNER`, so `open` pins the module until release.
    const FOPS: bindings::file_operations = {
        // SAFETY: All-zero is a valid `file_operations` (no operations).
        let mut fops: bindings::file_operations =
            unsafe { core::mem::MaybeUninit::zeroed().assume_init() };
        fops.owner = T::OWNER.as_ptr();
        fops.open = Some(open_callback::<T>);
        fops.release = Some(release_callback::<T>);
        fops.unlocked_ioctl = Some(ioctl_callback::<T>);
        #[cfg(CONFIG_COMPAT)]
        {
            fops.compat_ioctl = Some(bindings::compat_ptr_ioctl);
        }
        fops
    };

    /// The table, in static storage (a promoted constant: one per `T`).
    fn get() -> &'static bindings::file_operations {
        &Self::FOPS
    }
}

/// `file_operations.open` of the misc devices of `T`.
///
/// # Safety
///
/// Called by `misc_open()`, with `misc_mtx` held, for a `file` being opened
/// whose `private_data` is the `miscdevice` that was found registered with
/// these file operations; those are `Fops::<T>::FOPS`, which only
/// [`Registration<T>`] uses, inside an `Inner<T>`.
unsafe extern "C" fn open_callback<T: MiscDevice>(
    _inode: *mut bindings::inode,
    file: *mut bindings::file,
) -> crate::ffi::c_int {
    // SAFETY: `file` is valid (safety requirements).
    let misc = unsafe { (*file).private_data }.cast::<Opaque<bindings::miscdevice>>();
    // SAFETY: `misc` is the `misc` field of a live `Inner<T>`: registered,
    // and deregistration (before the `Inner<T>` is freed) waits for
    // `misc_mtx`, which our caller holds (safety requirements).
    let inner = unsafe { &*crate::container_of!(misc, Inner<T>, misc) };
    let data = inner.data.clone();
    // SAFETY: `file` is valid and being opened: its `private_data` is ours
    // from now on. `release_callback::<T>` takes the reference back.
    unsafe { (*file).private_data = data.into_foreign().cast_mut() };
    0
}

/// `file_operations.release` of the misc devices of `T`.
///
/// # Safety
///
/// Called by the VFS once, at the last reference to a `file` for which
/// `open_callback::<T>` succeeded, with no other file operation running.
unsafe extern "C" fn release_callback<T: MiscDevice>(
    _inode: *mut bindings::inode,
    file: *mut bindings::file,
) -> crate::ffi::c_int {
    // SAFETY: `file` is valid and its `private_data` holds the
    // `Arc<T>` that `open_callback::<T>` stored, not taken back yet
    // (safety requirements).
    let data = unsafe { <Arc<T> as ForeignOwnable>::from_foreign((*file).private_data) };
    drop(data);
    0
}

/// `file_operations.unlocked_ioctl` of the misc devices of `T`.
///
/// # Safety
///
/// Called by the VFS for an open `file` for which `open_callback::<T>`
/// succeeded (and whose release has not run: the caller holds a reference
/// to the file).
unsafe extern "C" fn ioctl_callback<T: MiscDevice>(
    file: *mut bindings::file,
    cmd: crate::ffi::c_uint,
    arg: crate::ffi::c_ulong,
) -> crate::ffi::c_long {
    // SAFETY: `file` is valid and its `private_data` holds an `Arc<T>`
    // (safety requirements) that `release_callback::<T>` cannot drop while
    // this runs.
    let data = unsafe { <Arc<T> as ForeignOwnable>::borrow((*file).private_data) };
    // The kernel's `ffi` crate maps `unsigned long` to `usize` and `long`
    // to `isize`.
    match data.ioctl(cmd, arg) {
        Ok(ret) => ret,
        // An errno fits in `long`.
        Err(err) => err.to_errno() as crate::ffi::c_long,
    }
}
