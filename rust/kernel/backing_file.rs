// SPDX-License-Identifier: GPL-2.0

//! A file or block device opened by the kernel to store data in: the
//! backing of an emulated disk.
//!
//! C headers: [`include/linux/fs.h`](srctree/include/linux/fs.h),
//! [`include/linux/blkdev.h`](srctree/include/linux/blkdev.h)
//!
//! A [`BackingFile`] is a `struct file` opened with `filp_open()` from a
//! path, a regular file or a block device, and the I/O an emulated disk
//! does on it: reads and writes at a byte position (`kernel_read()`,
//! `kernel_write()`, through the page cache), `vfs_fsync_range()`, and
//! `vfs_fallocate()` to punch holes (discard) and zero ranges. Every call
//! sleeps: process context only, never under a spinlock.
//!
//! Reads and writes pass their position explicitly and never use the
//! file's own position (`f_pos`), so several threads may do I/O on one
//! [`BackingFile`] at once, as on a file shared by `pread`/`pwrite`.
//!
//! # Examples
//!
//! A block copied within a backing, and a path that does not exist:
//!
//! ```
//! use kernel::{backing_file::BackingFile, c_str};
//!
//! fn copy_block(f: &BackingFile, from: u64, to: u64) -> Result {
//!     let mut block = [0u8; 512];
//!     f.read_at(&mut block, from)?;
//!     f.write_at(&block, to)?;
//!     f.sync_range(to, 512)
//! }
//!
//! let r = BackingFile::open(c_str!("/nonexistent/disk.img"), false);
//! assert_eq!(r.err(), Some(ENOENT));
//! # let _ = copy_block;
//! # Ok::<(), Error>(())
//! ```

use crate::{
    bindings,
    error::{code::*, from_err_ptr, to_result, Error, Result},
    str::CStr,
};
use core::ptr::NonNull;

/// An open backing: a regular file or a block device.
///
/// # Invariants
///
/// `file` is a `struct file` returned by `filp_open()`, whose reference
/// this object owns (put when it is dropped); its inode is a regular file
/// or a block device, as `bdev` says.
pub struct BackingFile {
    file: NonNull<bindings::file>,
    bdev: bool,
    writable: bool,
}

// SAFETY: a `struct file` is reference counted and may be used and put
// from any thread; `BackingFile` only passes it to the VFS calls below,
// which take their own locks, and never touches the file's position.
unsafe impl Send for BackingFile {}

// SAFETY: every method takes `&self` and is safe to call from several
// threads at once: reads and writes carry their own position (as pread
// and pwrite do), and fsync and fallocate lock the inode themselves.
unsafe impl Sync for BackingFile {}

/// What `vfs_fallocate()` calls a discard and a zeroing: the size kept.
const PUNCH_HOLE: i32 = (bindings::FALLOC_FL_PUNCH_HOLE | bindings::FALLOC_FL_KEEP_SIZE) as i32;
const ZERO_RANGE: i32 = (bindings::FALLOC_FL_ZERO_RANGE | bindings::FALLOC_FL_KEEP_SIZE) as i32;

/// Largest byte count one `kernel_read()` or `kernel_write()` is given
/// (below `MAX_RW_COUNT`); longer I/O loops.
const CHUNK: usize = 1 << 20;

impl BackingFile {
    /// Opens `path`, read and write or, if `read_only`, read only. A
    /// block device is opened exclusively (`O_EXCL`: not while mounted
    /// or claimed by another user). Process context; sleeps.
    ///
    /// # Errors
    ///
    /// The error of `filp_open()` (`ENOENT`, `EACCES`, `EROFS`, `EBUSY`
    /// for a block device in use...), or `EINVAL` if `path` is neither a
    /// regular file nor a block device.
    pub fn open(path: &CStr, read_only: bool) -> Result<Self> {
        Self::open_flags(path, read_only, true)
    }

    /// Checks that [`BackingFile::open`] would find a backing at `path`
    /// (not that the block device is free: the check's exclusive claim
    /// would outlast it, `fput()` releasing the file only when the task
    /// returns to user space). Process context; sleeps.
    ///
    /// # Errors
    ///
    /// Those of [`BackingFile::open`] but `EBUSY`.
    pub fn check(path: &CStr, read_only: bool) -> Result {
        Self::open_flags(path, read_only, false).map(drop)
    }

    fn open_flags(path: &CStr, read_only: bool, exclusive: bool) -> Result<Self> {
        let mode = if read_only {
            bindings::O_RDONLY
        } else {
            bindings::O_RDWR
        };
        // O_EXCL without O_CREAT means "exclusive" for a block device and
        // nothing for a regular file.
        let excl = if exclusive { bindings::O_EXCL } else { 0 };
        let flags = (mode | bindings::O_LARGEFILE | excl) as i32;
        // SAFETY: `path` is a NUL-terminated string valid for the call;
        // `filp_open()` may sleep, which process context allows (as
        // documented).
        let file = from_err_ptr(unsafe { bindings::filp_open(path.as_char_ptr(), flags, 0) })?;
        let file = NonNull::new(file).ok_or(ENOENT)?;
        // SAFETY: `file` is a valid, referenced file; its inode lives as
        // long as the file.
        let imode = u32::from(unsafe { (*bindings::file_inode(file.as_ptr())).i_mode });
        let kind = imode & bindings::S_IFMT;
        if kind != bindings::S_IFREG && kind != bindings::S_IFBLK {
            // SAFETY: puts the reference `filp_open()` returned, once; the
            // pointer is not used afterwards.
            unsafe { bindings::fput(file.as_ptr()) };
            return Err(EINVAL);
        }
        // INVARIANT: `file` is referenced and of one of the two kinds.
        Ok(BackingFile {
            file,
            bdev: kind == bindings::S_IFBLK,
            writable: !read_only,
        })
    }

    /// Whether it is a block device (else a regular file).
    pub fn is_block_device(&self) -> bool {
        self.bdev
    }

    /// Whether it was opened for writing.
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// Its size in bytes now: the file's size, or the device's capacity.
    pub fn size(&self) -> u64 {
        let bytes = match self.block_device() {
            // SAFETY: `bdev` is the file's block device, alive while the
            // file is open.
            Some(bdev) => unsafe { bindings::bdev_nr_bytes(bdev) },
            // SAFETY: by the type invariant the file is valid; so is its
            // inode.
            None => unsafe { bindings::i_size_read(bindings::file_inode(self.file.as_ptr())) },
        };
        u64::try_from(bytes).unwrap_or(0)
    }

    /// The logical block size: the device's, or 512 for a file.
    pub fn logical_block_size(&self) -> u32 {
        match self.block_device() {
            // SAFETY: as in `size`.
            Some(bdev) => unsafe { bindings::bdev_logical_block_size(bdev) },
            None => 512,
        }
    }

    /// The physical block size: the device's, or 4096 for a file (the
    /// page cache's unit: smaller writes read the page first).
    pub fn physical_block_size(&self) -> u32 {
        match self.block_device() {
            // SAFETY: as in `size`.
            Some(bdev) => unsafe { bindings::bdev_physical_block_size(bdev) },
            None => 4096,
        }
    }

    /// Whether [`BackingFile::punch_hole`] can work: always for a file
    /// (the file system may still refuse, with `EOPNOTSUPP`); for a block
    /// device, whether it can write zeroes without writing them
    /// (`blkdev_fallocate()` punches a hole with
    /// `BLKDEV_ZERO_NOFALLBACK`).
    pub fn can_punch_hole(&self) -> bool {
        match self.block_device() {
            Some(bdev) => {
                // SAFETY: as in `size`.
                let sectors = unsafe { bindings::bdev_write_zeroes_sectors(bdev) };
                sectors != 0
            }
            None => true,
        }
    }

    /// The block device, if it is one.
    fn block_device(&self) -> Option<*mut bindings::block_device> {
        // SAFETY: by the type invariant the file is a valid, open block
        // device file when `bdev` is set, which is what `file_bdev()`
        // needs; the device lives as long as the file.
        self.bdev
            .then(|| unsafe { bindings::file_bdev(self.file.as_ptr()) })
    }

    /// Reads `buf.len()` bytes at byte `pos`. Process context; sleeps.
    ///
    /// # Errors
    ///
    /// The error of `kernel_read()`, `EIO` if the end of the backing
    /// comes first, `EINVAL` for a position out of range.
    pub fn read_at(&self, buf: &mut [u8], pos: u64) -> Result {
        let mut done = 0usize;
        while done < buf.len() {
            let mut at = loff(pos, done)?;
            let rest = buf.get_mut(done..).ok_or(EINVAL)?;
            let len = rest.len().min(CHUNK);
            // SAFETY: the file is valid (type invariant); `rest` is
            // writable for `len` bytes; `at` is a valid `loff_t` for the
            // call. `kernel_read()` sleeps: process context (documented).
            let n = unsafe {
                bindings::kernel_read(self.file.as_ptr(), rest.as_mut_ptr().cast(), len, &mut at)
            };
            done += transferred(n, len)?;
        }
        Ok(())
    }

    /// Writes `buf` at byte `pos` (into the page cache: durable after
    /// [`BackingFile::sync_range`]). Process context; sleeps.
    ///
    /// # Errors
    ///
    /// `EBADF` if opened read only, the error of `kernel_write()`
    /// (`ENOSPC`...), `EIO` if it writes nothing, `EINVAL` for a position
    /// out of range.
    pub fn write_at(&self, buf: &[u8], pos: u64) -> Result {
        // `kernel_write()` warns (WARN_ON_ONCE) before it refuses a file
        // not open for writing: refused here first.
        if !self.writable {
            return Err(EBADF);
        }
        let mut done = 0usize;
        while done < buf.len() {
            let mut at = loff(pos, done)?;
            let rest = buf.get(done..).ok_or(EINVAL)?;
            let len = rest.len().min(CHUNK);
            // SAFETY: the file is valid (type invariant); `rest` is
            // readable for `len` bytes; `at` is a valid `loff_t`.
            // `kernel_write()` sleeps: process context (documented).
            let n = unsafe {
                bindings::kernel_write(self.file.as_ptr(), rest.as_ptr().cast(), len, &mut at)
            };
            done += transferred(n, len)?;
        }
        Ok(())
    }

    /// Makes the `len` bytes at `pos` durable (data and what is needed to
    /// find it: `datasync`); `len` 0 means the whole backing, with its
    /// metadata. Process context; sleeps.
    ///
    /// # Errors
    ///
    /// The error of `vfs_fsync_range()` (`EIO`...).
    pub fn sync_range(&self, pos: u64, len: u64) -> Result {
        let (start, end, datasync) = if len == 0 {
            (0, i64::MAX, 0)
        } else {
            let start = i64::try_from(pos).map_err(|_| EINVAL)?;
            let end = pos
                .checked_add(len - 1)
                .and_then(|e| i64::try_from(e).ok())
                .ok_or(EINVAL)?;
            (start, end, 1)
        };
        // SAFETY: the file is valid (type invariant); the range is in
        // `loff_t`. It sleeps: process context (documented).
        to_result(unsafe { bindings::vfs_fsync_range(self.file.as_ptr(), start, end, datasync) })
    }

    /// Deallocates the `len` bytes at `pos`, which read back as zeros
    /// afterwards; the size does not change. Process context; sleeps.
    ///
    /// # Errors
    ///
    /// `EOPNOTSUPP` ([`is_not_supported`]) if the file system or device
    /// cannot, else the error of `vfs_fallocate()`.
    pub fn punch_hole(&self, pos: u64, len: u64) -> Result {
        self.fallocate(PUNCH_HOLE, pos, len)
    }

    /// Zeroes the `len` bytes at `pos`, keeping them allocated; the size
    /// does not change. Process context; sleeps.
    ///
    /// # Errors
    ///
    /// `EOPNOTSUPP` ([`is_not_supported`]) if the file system cannot (the
    /// caller may write zeros instead), else the error of
    /// `vfs_fallocate()`.
    pub fn zero_range(&self, pos: u64, len: u64) -> Result {
        self.fallocate(ZERO_RANGE, pos, len)
    }

    fn fallocate(&self, mode: i32, pos: u64, len: u64) -> Result {
        let pos = i64::try_from(pos).map_err(|_| EINVAL)?;
        let len = i64::try_from(len).map_err(|_| EINVAL)?;
        if len == 0 {
            return Ok(());
        }
        // SAFETY: the file is valid (type invariant); `vfs_fallocate()`
        // checks the mode, the range and the file's access mode itself.
        // It sleeps: process context (documented).
        to_result(unsafe { bindings::vfs_fallocate(self.file.as_ptr(), mode, pos, len) })
    }
}

/// Whether `e` is `EOPNOTSUPP` (which 6.12's `error::code` lacks): the
/// backing cannot do the operation at all, as opposed to failing it.
pub fn is_not_supported(e: Error) -> bool {
    e.to_errno() == -(bindings::EOPNOTSUPP as i32)
}

/// `pos + done` as a `loff_t`.
fn loff(pos: u64, done: usize) -> Result<i64> {
    pos.checked_add(done as u64)
        .and_then(|p| i64::try_from(p).ok())
        .ok_or(EINVAL)
}

/// The bytes one `kernel_read()`/`kernel_write()` of `len` moved: its
/// error, or `EIO` for none (the end of the backing).
fn transferred(n: isize, len: usize) -> Result<usize> {
    if n < 0 {
        return Err(i32::try_from(n).map_or(EIO, Error::from_errno));
    }
    match n as usize {
        0 => Err(EIO),
        n => Ok(n.min(len)),
    }
}

impl Drop for BackingFile {
    fn drop(&mut self) {
        // SAFETY: by the type invariant this object owns one reference to
        // the file, put here once. `fput()` defers the release (a block
        // device's exclusive claim ends with it) to the task's return to
        // user space or to a work item.
        unsafe { bindings::fput(self.file.as_ptr()) };
    }
}
