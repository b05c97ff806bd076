// SPDX-License-Identifier: GPL-2.0

//! Read-only module parameters.
//!
//! C header: [`include/linux/moduleparam.h`](srctree/include/linux/moduleparam.h)
//!
//! Linux 6.12's `module!` macro has no parameters. This adds the subset that
//! a driver needs to be configured at load time: parameters of the kernel's
//! standard types that are set on the `insmod`/`modprobe` command line and
//! shown read-only (mode 0444) under `/sys/module/<name>/parameters/`.
//!
//! Because the mode has no write bits, the kernel writes a parameter only
//! while it parses the load command line, before the module's `init` runs;
//! afterwards the value never changes, which is what lets [`ReadOnlyParam::get`]
//! read it without a lock.
//!
//! # Examples
//!
//! ```ignore
//! kernel::module_params! {
//!     /// Ethertype of the frames (read at load time).
//!     ethertype: u16 = 0x88b5, "Ethertype of PCIeoE frames";
//!     /// Name of the network interface to bind to.
//!     netdev: str = c_str!(""), "Network interface to bind at load time";
//! }
//!
//! fn init() {
//!     let ethertype: u16 = module_params::ethertype.get();
//!     let netdev: &CStr = module_params::netdev.get();
//! }
//! ```

use crate::ffi::{c_char, c_void};
use crate::{bindings, str::CStr};
use core::cell::UnsafeCell;

/// A type that can be a module parameter: a kernel `param_ops_*` parses it.
///
/// # Safety
///
/// `OPS` must point to the kernel's `kernel_param_ops` whose `set` stores a
/// valid value of `Self::Raw` through `kernel_param::arg` and whose `get`
/// reads one.
pub unsafe trait ParamType {
    /// The C representation the kernel's parser writes.
    type Raw: 'static;
    /// The kernel's parser and printer for this type.
    const OPS: *const bindings::kernel_param_ops;
    /// The type's name in `modinfo` (`parmtype=NAME:TYPE`).
    const TYPE_NAME: &'static str;
}

macro_rules! impl_param_type {
    ($($t:ty => $ops:ident, $name:literal;)*) => {$(
        // SAFETY: `$ops` parses into the C type of the same size and
        // signedness as `$t` (checked by the kernel's `param_check_*` in C).
        unsafe impl ParamType for $t {
            type Raw = $t;
            const OPS: *const bindings::kernel_param_ops =
                core::ptr::addr_of!(bindings::$ops);
            const TYPE_NAME: &'static str = $name;
        }
    )*};
}

impl_param_type! {
    bool => param_ops_bool, "bool";
    u8 => param_ops_byte, "byte";
    i16 => param_ops_short, "short";
    u16 => param_ops_ushort, "ushort";
    i32 => param_ops_int, "int";
    u32 => param_ops_uint, "uint";
    i64 => param_ops_long, "long";
    u64 => param_ops_ulong, "ulong";
}

/// A string parameter (`charp` in C).
pub struct Str;

// SAFETY: `param_ops_charp` stores a pointer to a NUL-terminated string in
// the `char *` that `arg` points to, and never stores NULL.
unsafe impl ParamType for Str {
    type Raw = *mut c_char;
    const OPS: *const bindings::kernel_param_ops = core::ptr::addr_of!(bindings::param_ops_charp);
    const TYPE_NAME: &'static str = "charp";
}

/// The storage of a read-only module parameter.
///
/// # Invariants
///
/// The value is written only by the kernel's parameter parser while the module
/// is being loaded, before its `init` runs (the parameter's mode, 0444, lets
/// no one write it later). For [`Str`], it always points to a NUL-terminated
/// string that lives until the module is unloaded.
#[repr(transparent)]
pub struct ReadOnlyParam<T: ParamType> {
    value: UnsafeCell<T::Raw>,
}

// SAFETY: After the module's `init` starts, the value is never written (see
// the type invariants), so shared reads from any thread are not data races.
unsafe impl<T: ParamType> Sync for ReadOnlyParam<T> {}

impl<T: ParamType> ReadOnlyParam<T> {
    /// Creates the storage with the value used when the command line has none.
    #[doc(hidden)]
    pub const fn new(default: T::Raw) -> Self {
        Self {
            value: UnsafeCell::new(default),
        }
    }
}

impl<T: ParamType<Raw = T> + Copy> ReadOnlyParam<T> {
    /// Returns the parameter's value.
    pub fn get(&self) -> T {
        // SAFETY: No write can happen concurrently (see the type invariants).
        unsafe { *self.value.get() }
    }
}

impl ReadOnlyParam<Str> {
    /// Returns the parameter's value.
    pub fn get(&self) -> &CStr {
        // SAFETY: No write can happen concurrently, and the pointer is to a
        // NUL-terminated string that outlives `self`'s use by the module (see
        // the type invariants).
        unsafe { CStr::from_char_ptr(*self.value.get()) }
    }
}

/// A `struct kernel_param` in the `__param` section of a module.
#[doc(hidden)]
#[repr(transparent)]
pub struct KernelParam(bindings::kernel_param);

// SAFETY: The kernel only reads the descriptor; its pointers are to statics.
unsafe impl Sync for KernelParam {}

impl KernelParam {
    /// Describes parameter `name` stored at `arg` for the module `module`.
    ///
    /// # Safety
    ///
    /// `name` must be NUL-terminated and `arg` must point to a
    /// [`ReadOnlyParam<T>`], both `'static`; `module` must be the module's
    /// `__this_module`.
    #[doc(hidden)]
    pub const unsafe fn new<T: ParamType>(
        name: &'static str,
        module: *mut bindings::module,
        arg: *const ReadOnlyParam<T>,
    ) -> Self {
        Self(bindings::kernel_param {
            name: name.as_ptr().cast::<c_char>(),
            mod_: module,
            ops: T::OPS,
            perm: 0o444,
            level: -1,
            flags: 0,
            __bindgen_anon_1: bindings::kernel_param__bindgen_ty_1 {
                arg: arg.cast::<c_void>().cast_mut(),
            },
        })
    }
}

/// Builds a `.modinfo` entry, `KEY=PARAM:VALUE\0`, at compile time.
#[doc(hidden)]
pub const fn modinfo<const N: usize>(parts: [&str; 4]) -> [u8; N] {
    let mut out = [0u8; N];
    let mut o = 0;
    let mut p = 0;
    while p < parts.len() {
        let bytes = parts[p].as_bytes();
        let mut i = 0;
        while i < bytes.len() && o + 1 < N {
            out[o] = bytes[i];
            o += 1;
            i += 1;
        }
        p += 1;
    }
    out
}

/// Length of the `.modinfo` entry built by [`modinfo`], NUL included.
#[doc(hidden)]
pub const fn modinfo_len(parts: [&str; 4]) -> usize {
    parts[0].len() + parts[1].len() + parts[2].len() + parts[3].len() + 1
}

/// Declares read-only module parameters in a module named `module_params`.
///
/// Each parameter is `NAME: TYPE = DEFAULT, "description";` where TYPE is
/// `bool`, `u8`, `i16`, `u16`, `i32`, `u32`, `i64`, `u64` or `str` (DEFAULT
/// then being a C string literal). See the [module documentation](self).
#[macro_export]
macro_rules! module_params {
    (@type str) => { $crate::module_param::Str };
    (@type $ty:ty) => { $ty };
    (@raw str, $default:expr) => {
        {
            let s: &'static $crate::str::CStr = $default;
            s.as_char_ptr().cast_mut()
        }
    };
    (@raw $ty:ty, $default:expr) => { $default };
    ($($(#[$meta:meta])* $name:ident : $ty:tt = $default:expr, $desc:literal;)*) => {
        /// The module's parameters, set at load time.
        #[allow(non_upper_case_globals)]
        pub(crate) mod module_params {
            $(
                $(#[$meta])*
                pub(crate) static $name: $crate::module_param::ReadOnlyParam<
                    $crate::module_params!(@type $ty)
                > = $crate::module_param::ReadOnlyParam::new(
                    $crate::module_params!(@raw $ty, $default)
                );

                #[cfg(not(MODULE))]
                compile_error!("module_params! supports loadable modules only");

                #[cfg(MODULE)]
                const _: () = {
                    use $crate::module_param::{modinfo, modinfo_len, KernelParam, ParamType};
                    type T = $crate::module_params!(@type $ty);
                    const NAME: &str = stringify!($name);
                    const TYPE: [&str; 4] = ["parmtype=", NAME, ":", <T as ParamType>::TYPE_NAME];
                    const DESC: [&str; 4] = ["parm=", NAME, ":", $desc];

                    #[link_section = ".modinfo"]
                    #[used(compiler)]
                    static PARMTYPE: [u8; modinfo_len(TYPE)] = modinfo(TYPE);
                    #[link_section = ".modinfo"]
                    #[used(compiler)]
                    static PARM: [u8; modinfo_len(DESC)] = modinfo(DESC);

                    extern "C" {
                        static __this_module: $crate::types::Opaque<$crate::bindings::module>;
                    }
                    #[link_section = "__param"]
                    #[used(compiler)]
                    static PARAM: KernelParam = {
                        // SAFETY: The name is NUL-terminated, the storage is the
                        // static declared above and `__this_module` is this module.
                        unsafe {
                            KernelParam::new::<T>(
                                concat!(stringify!($name), "\0"),
                                __this_module.get(),
                                core::ptr::addr_of!($name),
                            )
                        }
                    };
                };
            )*
        }
    };
}
