// SPDX-License-Identifier: GPL-2.0

//! Coherent DMA memory: a buffer that a device and the CPU share.
//!
//! C header: [`include/linux/dma-mapping.h`](srctree/include/linux/dma-mapping.h)
//!
//! A [`CoherentBuffer`] is `dma_alloc_attrs()` memory of one device: the
//! CPU reaches it at a kernel virtual address, the device at its DMA
//! address ([`CoherentBuffer::dma_handle`]), and writes of either side are
//! visible to the other without syncing. The device may read and write the
//! buffer at any time, concurrently with the CPU, so the buffer never hands
//! out a Rust reference (`&[u8]`, `&mut [u8]`) to its memory: the CPU side
//! copies bytes in and out with [`CoherentBuffer::read`] and
//! [`CoherentBuffer::write`], which check the range. Bytes that the device
//! writes while the CPU copies them are some mix of old and new values.
//!
//! The buffer holds a reference to its device (`get_device()`), so the
//! `struct device` stays allocated until the buffer is freed, even after
//! the driver was unbound (an open file may keep it). Its DMA operations
//! must stay callable too: when they belong to a module (the software
//! IOMMU of `pcieoe_host` installs its own with `set_dma_ops()`), free the
//! buffer before that module can be unloaded, that is, in the driver's
//! `remove` at the latest.
//!
//! # Examples
//!
//! A buffer of the first PCI device of the machine, if there is one:
//!
//! ```
//! use kernel::dma_coherent::CoherentBuffer;
//!
//! // SAFETY: `pci_get_device()` may be called in process context; `from`
//! // is NULL (start of the list).
//! let pdev = unsafe { kernel::bindings::pci_get_device(!0, !0, core::ptr::null_mut()) };
//! if !pdev.is_null() {
//!     // SAFETY: `pdev` is a valid device, referenced until the
//!     // `pci_dev_put()` below; the buffer takes its own reference.
//!     let dev = unsafe { kernel::device::Device::as_ref(core::ptr::addr_of_mut!((*pdev).dev)) };
//!     let mut buf = CoherentBuffer::alloc(dev, 100, GFP_KERNEL)?;
//!     // SAFETY: Puts the reference that `pci_get_device()` returned.
//!     unsafe { kernel::bindings::pci_dev_put(pdev) };
//!     assert_eq!(buf.len(), 100);
//!     assert_ne!(buf.dma_handle(), 0);
//!     buf.write(10, b"pcieoe")?;
//!     let mut out = [0u8; 8];
//!     buf.read(9, &mut out)?;
//!     assert_eq!(out.get(1..7), Some(&b"pcieoe"[..]));
//!     // Ranges past the end are refused, whole.
//!     assert_eq!(buf.read(95, &mut out), Err(EINVAL));
//!     assert_eq!(buf.write(usize::MAX, b"x"), Err(EINVAL));
//!     assert_eq!(CoherentBuffer::alloc(buf.device(), 0, GFP_KERNEL).err(), Some(EINVAL));
//! }
//! # Ok::<(), Error>(())
//! ```

use crate::{
    alloc::Flags,
    device::Device,
    error::{code::*, Result},
    types::ARef,
};
use core::ptr::NonNull;

/// Coherent DMA memory of one device (`dma_alloc_attrs()`), freed
/// (`dma_free_attrs()`) when dropped; see the [module documentation](self).
///
/// Allocation and drop sleep: process context only.
///
/// # Invariants
///
/// `cpu` and `handle` are what `dma_alloc_attrs(dev, len, ..., 0)`
/// returned for this buffer: `len` (nonzero) bytes at `cpu`, writable and
/// readable by the CPU, owned by the buffer until `drop` frees them. `dev`
/// is the device they were allocated for, referenced by the buffer.
pub struct CoherentBuffer {
    dev: ARef<Device>,
    cpu: NonNull<u8>,
    handle: bindings::dma_addr_t,
    len: usize,
}

// SAFETY: The buffer owns its memory and a device reference; both may be
// used and released from any thread (`put_device()` and `dma_free_attrs()`
// have no thread affinity).
unsafe impl Send for CoherentBuffer {}

// SAFETY: Methods on `&CoherentBuffer` only read the fields and copy bytes
// out of the memory with raw pointers (no reference to it is created);
// writing it takes `&mut self`. Concurrent reads are not a data race.
unsafe impl Sync for CoherentBuffer {}

impl CoherentBuffer {
    /// Allocates `size` bytes of coherent memory for `dev` with `gfp`
    /// (`GFP_KERNEL` normally; the memory's content is whatever the DMA
    /// operations give, often zeros).
    ///
    /// # Errors
    ///
    /// `EINVAL` if `size` is 0, `ENOMEM` if the allocation failed (also when
    /// the device cannot do DMA, e.g. its DMA operations refuse).
    pub fn alloc(dev: &Device, size: usize, gfp: Flags) -> Result<Self> {
        if size == 0 {
            return Err(EINVAL);
        }
        let mut handle: bindings::dma_addr_t = 0;
        // SAFETY: `dev` is a live device (it is borrowed); `handle` is valid
        // for writes. Process context, as documented.
        let cpu =
            unsafe { bindings::dma_alloc_attrs(dev.as_raw(), size, &mut handle, gfp.as_raw(), 0) };
        let cpu = NonNull::new(cpu.cast::<u8>()).ok_or(ENOMEM)?;
        // INVARIANT: Allocated just above for `dev`, whose reference
        // `ARef::from` takes.
        Ok(Self {
            dev: ARef::from(dev),
            cpu,
            handle,
            len: size,
        })
    }

    /// The address at which the device reaches the buffer.
    pub fn dma_handle(&self) -> u64 {
        self.handle
    }

    /// The size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer is empty (never: allocation refuses size 0).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The device the buffer belongs to.
    pub fn device(&self) -> &Device {
        &self.dev
    }

    /// Checks that `[offset, offset + len)` lies inside the buffer.
    fn check(&self, offset: usize, len: usize) -> Result {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(EINVAL),
        }
    }

    /// Copies `out.len()` bytes at `offset` of the buffer into `out`.
    ///
    /// # Errors
    ///
    /// `EINVAL` if the range is not inside the buffer (nothing is copied).
    pub fn read(&self, offset: usize, out: &mut [u8]) -> Result {
        self.check(offset, out.len())?;
        // SAFETY: `[offset, offset + out.len())` is inside the buffer
        // (checked above), which is valid for reads (type invariants); `out`
        // is a distinct Rust slice, so the ranges do not overlap. The copy is
        // of bytes, for which any value is valid, whatever the device does
        // meanwhile.
        unsafe {
            core::ptr::copy_nonoverlapping(
                self.cpu.as_ptr().add(offset),
                out.as_mut_ptr(),
                out.len(),
            )
        };
        Ok(())
    }

    /// Copies `data` into the buffer at `offset`.
    ///
    /// # Errors
    ///
    /// `EINVAL` if the range is not inside the buffer (nothing is copied).
    pub fn write(&mut self, offset: usize, data: &[u8]) -> Result {
        self.check(offset, data.len())?;
        // SAFETY: `[offset, offset + data.len())` is inside the buffer
        // (checked above), which is valid for writes (type invariants) and
        // not referenced anywhere as a Rust slice; `data` cannot overlap it
        // for the same reason.
        unsafe {
            core::ptr::copy_nonoverlapping(data.as_ptr(), self.cpu.as_ptr().add(offset), data.len())
        };
        Ok(())
    }
}

impl Drop for CoherentBuffer {
    fn drop(&mut self) {
        // SAFETY: `cpu`, `handle` and `len` are an allocation of `dev` with
        // attributes 0, freed once, here (type invariants); `dev` is still
        // referenced. Drop runs in process context (documented).
        unsafe {
            bindings::dma_free_attrs(
                self.dev.as_raw(),
                self.len,
                self.cpu.as_ptr().cast(),
                self.handle,
                0,
            )
        };
    }
}
