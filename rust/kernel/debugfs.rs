// SPDX-License-Identifier: GPL-2.0

//! Read-only text files in debugfs.
//!
//! C headers: [`include/linux/debugfs.h`](srctree/include/linux/debugfs.h),
//! [`include/linux/seq_file.h`](srctree/include/linux/seq_file.h)
//!
//! A [`Dir`] is a debugfs directory; [`Dir::add_file`] adds a read-only file
//! whose contents a [`Show`] object writes, with `core::fmt`, each time the
//! file is read (`single_open()` seq_file semantics: the whole text is built
//! at once, in process context). Dropping the directory removes it and its
//! files, waiting until no one is reading them; only then are the [`Show`]
//! objects released.
//!
//! The file operations live in the kernel image, not in the module that
//! creates the file, so an open file never points into an unloaded module:
//! after removal, debugfs answers reads of still-open files with `-EIO`
//! without calling them.
//!
//! # Examples
//!
//! ```
//! use core::fmt::Write;
//! use kernel::{c_str, debugfs::{Dir, SeqFile, Show}, sync::Arc};
//!
//! struct Answer;
//!
//! impl Show for Answer {
//!     fn show(&self, f: &mut SeqFile<'_>) -> core::fmt::Result {
//!         writeln!(f, "answer: {}", 42)
//!     }
//! }
//!
//! let mut dir = Dir::new(c_str!("rust_debugfs_doctest"))?;
//! dir.add_file(c_str!("answer"), Arc::new(Answer, GFP_KERNEL)?)?;
//! // Dropping `dir` removes /sys/kernel/debug/rust_debugfs_doctest.
//! # Ok::<(), Error>(())
//! ```

use crate::{
    alloc::{flags::GFP_KERNEL, KBox, KVec},
    error::{from_err_ptr, Result},
    str::CStr,
    sync::Arc,
};
use core::{fmt, marker::PhantomData};

/// The contents of a read-only debugfs file.
pub trait Show: Send + Sync {
    /// Writes the whole contents of the file to `f`.
    ///
    /// Called in process context each time the file is read from the
    /// start; may sleep. Return the error of a failed write: the seq_file
    /// core then retries with a larger buffer.
    fn show(&self, f: &mut SeqFile<'_>) -> fmt::Result;
}

/// The text being built for one read of a debugfs file (a `seq_file`).
///
/// # Invariants
///
/// `raw` is a valid `seq_file` in its `show` callback for `'a`.
pub struct SeqFile<'a> {
    raw: *mut bindings::seq_file,
    _p: PhantomData<&'a mut bindings::seq_file>,
}

impl fmt::Write for SeqFile<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // SAFETY: `raw` is valid (type invariants); `s` is valid for
        // `s.len()` bytes. `seq_write()` copies them or marks the buffer as
        // overflowed and returns -1.
        match unsafe { bindings::seq_write(self.raw, s.as_ptr().cast(), s.len()) } {
            0 => Ok(()),
            _ => Err(fmt::Error),
        }
    }
}

/// The erased [`Show`] object of a file, as `inode->i_private` points to it.
type Entry = Arc<dyn Show>;

/// `file_operations` in a `static` (it holds a raw `owner` pointer).
#[repr(transparent)]
struct Fops(bindings::file_operations);

// SAFETY: The table is never written, and its `owner` is NULL.
unsafe impl Sync for Fops {}

static FOPS: Fops = Fops(bindings::file_operations {
    // Built into the kernel: no module to pin.
    owner: core::ptr::null_mut(),
    open: Some(open),
    read: Some(bindings::seq_read),
    llseek: Some(bindings::seq_lseek),
    release: Some(bindings::single_release),
    // SAFETY: All-zero is a valid `file_operations` (no operations).
    ..unsafe { core::mem::MaybeUninit::zeroed().assume_init() }
});

/// `file_operations.open`.
///
/// # Safety
///
/// Called by the VFS (through the debugfs proxy, which guarantees that the
/// file was not removed yet) with the `inode` and `file` being opened;
/// `inode->i_private` is the [`Entry`] given to `debugfs_create_file()`.
unsafe extern "C" fn open(
    inode: *mut bindings::inode,
    file: *mut bindings::file,
) -> crate::ffi::c_int {
    // SAFETY: `inode` and `file` are valid (safety requirements);
    // `single_open()` stores `i_private` as the seq_file's `private`.
    unsafe { bindings::single_open(file, Some(show), (*inode).i_private) }
}

/// `single_open()`'s show callback.
///
/// # Safety
///
/// Called by `seq_read()` through the debugfs proxy (so the file was not
/// removed and its [`Entry`] is alive) with the seq_file that `open` set up,
/// whose `private` is the [`Entry`].
unsafe extern "C" fn show(
    m: *mut bindings::seq_file,
    _v: *mut crate::ffi::c_void,
) -> crate::ffi::c_int {
    // SAFETY: `m` is valid and its `private` is a live `Entry` (safety
    // requirements); `Dir` frees entries only after removing the files,
    // which waits for readers.
    let entry = unsafe { &*(*m).private.cast::<Entry>() };
    // INVARIANT: `m` is valid during this callback.
    let mut f = SeqFile {
        raw: m,
        _p: PhantomData,
    };
    // A failed write already marked the seq_file as overflowed; seq_read()
    // retries with a larger buffer. Nothing else can fail.
    let _ = entry.show(&mut f);
    0
}

/// A debugfs directory, removed with everything in it when dropped.
///
/// # Invariants
///
/// `dentry` is a directory created by `debugfs_create_dir()` and not yet
/// removed; the files created in it point (`i_private`) to the boxes in
/// `files`; `parent`, if any, is the directory that contains it.
pub struct Dir {
    dentry: *mut bindings::dentry,
    files: KVec<KBox<Entry>>,
    // Dropped last: the parent outlives its subdirectories.
    _parent: Option<Arc<Dir>>,
}

// SAFETY: A `Dir` is only created and removed (in process context, on any
// CPU); debugfs serialises both internally.
unsafe impl Send for Dir {}

// SAFETY: No method on `&Dir` changes it.
unsafe impl Sync for Dir {}

impl Dir {
    /// Creates the directory `name` at the root of debugfs. May sleep.
    ///
    /// # Errors
    ///
    /// `EEXIST` when it exists, `ENODEV`/`ENOENT` without debugfs, `ENOMEM`.
    pub fn new(name: &CStr) -> Result<Self> {
        Self::create(name, None)
    }

    /// Creates the directory `name` in `parent`. May sleep.
    ///
    /// # Errors
    ///
    /// As for [`Dir::new`].
    pub fn subdir(parent: &Arc<Dir>, name: &CStr) -> Result<Self> {
        Self::create(name, Some(parent.clone()))
    }

    fn create(name: &CStr, parent: Option<Arc<Dir>>) -> Result<Self> {
        let p = parent.as_ref().map_or(core::ptr::null_mut(), |p| p.dentry);
        // SAFETY: `name` is NUL-terminated; `p` is NULL (the root) or a live
        // directory (the parent's invariants, kept alive by the `Arc`).
        let dentry = from_err_ptr(unsafe { bindings::debugfs_create_dir(name.as_char_ptr(), p) })?;
        // INVARIANT: Just created; no files yet.
        Ok(Self {
            dentry,
            files: KVec::new(),
            _parent: parent,
        })
    }

    /// Adds the read-only (0444) file `name`, whose contents `data` writes.
    /// May sleep.
    ///
    /// # Errors
    ///
    /// `EEXIST` when `name` exists, `ENOMEM`.
    pub fn add_file(&mut self, name: &CStr, data: Arc<dyn Show>) -> Result {
        // Room first, so that once the file exists nothing can fail.
        self.files.reserve(1, GFP_KERNEL)?;
        let entry = KBox::new(data, GFP_KERNEL)?;
        let private: *const Entry = &*entry;
        // SAFETY: `name` is NUL-terminated; `self.dentry` is a live
        // directory (type invariants); `FOPS` is static; `private` points
        // into a box that lives until the file is removed (it goes into
        // `self.files`, freed after `debugfs_remove()` in `drop`).
        let dentry = from_err_ptr(unsafe {
            bindings::debugfs_create_file(
                name.as_char_ptr(),
                0o444,
                self.dentry,
                private.cast_mut().cast(),
                &FOPS.0,
            )
        })?;
        let _ = dentry;
        // INVARIANT: The file's `i_private` is this box. Cannot fail: the
        // room was reserved above.
        self.files.push(entry, GFP_KERNEL)?;
        Ok(())
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        // SAFETY: `dentry` is live (type invariants). `debugfs_remove()`
        // removes the directory and its files and waits until no file
        // operation is running on them; afterwards none can start, so the
        // entries in `self.files` (freed after this) are unused.
        unsafe { bindings::debugfs_remove(self.dentry) };
    }
}
