// SPDX-License-Identifier: GPL-2.0

//! The software IOMMU of a [`RootBus`]: the DMA API of its functions, and
//! the check of the functions' memory requests against it.
//!
//! C headers: [`include/linux/dma-map-ops.h`](srctree/include/linux/dma-map-ops.h),
//! [`include/linux/scatterlist.h`](srctree/include/linux/scatterlist.h)
//!
//! The functions on a [`RootBus`] are remote: they read and write host
//! memory with memory request TLPs that carry a bus address, and the owner
//! of the bus serves those requests in software. A driver of such a
//! function uses the ordinary DMA API (`dma_map_page()`, `dma_map_sg()`,
//! `dma_alloc_coherent()`, ...); [`RootBus::scan_slot`] gives every new
//! function this module's `struct dma_map_ops` (`set_dma_ops()`) before any
//! driver can probe it, so each mapping enters a per-function translation
//! table, and the bus address the driver programs into its device is an
//! IOVA of that table. The owner then serves a request with
//! [`RootBus::dma_read`] or [`RootBus::dma_write`] (or the same methods of
//! a [`DmaHandle`], from softirq context), which honour it only inside a
//! live mapping of that function, in the mapping's direction, and count
//! everything else by reason ([`DmaFault`], [`DmaStats`]).
//!
//! # Examples
//!
//! Without a function on the bus every request is refused, and counted:
//!
//! ```
//! use kernel::pci_host::{ConfigOps, DmaFault, RootBus};
//! use kernel::sync::Arc;
//!
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
//! let bus = RootBus::new(Arc::new(Empty, GFP_KERNEL)?, 0x1000)?;
//! let dma = bus.dma_handle();
//! let mut buf = [0u8; 8];
//! assert_eq!(bus.dma_read(0x08, 0x10_0000, &mut buf), Err(DmaFault::NoDevice));
//! assert_eq!(dma.dma_write(0x08, 0x10_0000, &buf), Err(DmaFault::NoDevice));
//! let stats = bus.dma_stats(0x08);
//! assert_eq!(stats.faults_no_device, 2);
//! assert_eq!((stats.live, stats.maps, stats.bytes_read), (0, 0, 0));
//! // The handle outlives the bus.
//! drop(bus);
//! assert_eq!(dma.dma_read(0x08, 0x10_0000, &mut buf), Err(DmaFault::NoDevice));
//! assert_eq!(dma.dma_stats(0x08).faults_no_device, 3);
//! # Ok::<(), Error>(())
//! ```
//!
//! # Design
//!
//! * **Tables.** One table per `devfn` of the root bus (256), each behind
//!   its own [`SpinLockIrq`]: the DMA API may be called in any context,
//!   hard interrupts and interrupts-disabled sections included. The tables
//!   sit in an [`Arc`] that the bus's `Host` block and every [`DmaHandle`]
//!   share, so the receive path reaches them without the bus. A table is
//!   *present* from the scan of its function (when the operations are
//!   installed) to its removal; mapping for an absent function fails, and
//!   requests for it fault with [`DmaFault::NoDevice`]. (The 256 empty
//!   tables take about 40 KiB per bus.)
//! * **Entries** map an IOVA range `[iova, iova + len)` to the physical
//!   range `[phys, phys + len)` with a direction. They are kept in a vector
//!   sorted by IOVA, with disjoint reservations, so a request's lookup is a
//!   binary search. At most [`MAX_MAPPINGS`] entries live per function
//!   (each mapped scatterlist element is one entry); the vector grows with
//!   `GFP_ATOMIC` under the lock (the DMA API may be called in atomic
//!   context), after a first `GFP_KERNEL` reservation at scan time. A
//!   mapping is at most [`MAX_MAPPING_SIZE`] bytes (`dma_max_mapping_size()`
//!   says so).
//! * **IOVAs** come from `[IOVA_START, IOVA_END)`: above the first MiB and
//!   below the bus's memory window ([`WINDOW_BUS_BASE`](super::WINDOW_BUS_BASE)),
//!   so that an IOVA is never a BAR, nor in the MSI address range
//!   (`0xfee0_0000`), nor a small number a device might use by mistake. Every IOVA
//!   thus fits any DMA mask that covers 2 GiB, and the allocator still
//!   honours the mask it is given (`*dev->dma_mask` for streaming
//!   mappings, `coherent_dma_mask` for coherent ones). A mapping keeps the
//!   offset of its physical address within the page and reserves whole
//!   pages plus one unmapped guard page behind, so a request that runs off
//!   the end of a buffer never reaches the next one. Reservations are
//!   placed first-fit from a cursor that only moves forward and wraps at
//!   the end of the space: an IOVA that was just unmapped is handed out
//!   again only after the cursor went round all 2 GiB, so a late request
//!   of the device for a buffer it was done with faults instead of hitting
//!   a new buffer. The cursor is not reset when a function is removed and
//!   scanned again, for the same reason.
//! * **Coherent memory** (`dma_alloc_coherent()`, `dma_alloc_pages()`) is
//!   zeroed pages from `alloc_pages()`, mapped for both directions
//!   (`dma_alloc_pages()`: in the given direction). Its physical address
//!   does not matter (the IOVA is what the device sees), so any zone does.
//! * **Sync** operations are absent: the data move when the owner of the
//!   bus copies them, under the table lock, so memory is coherent and the
//!   DMA core skips syncing (`dma_skip_sync`).
//! * **Access.** [`RootBus::dma_read`] and [`RootBus::dma_write`] copy
//!   while holding the table lock, with `copy_{from,to}_kernel_nofault()`
//!   through the kernel's direct map. An unmap that races with a request
//!   waits for the copy; once the unmap returned, nothing here touches the
//!   memory.
//! * **Removal.** A function's mappings are its driver's to unmap (drivers
//!   do so in their remove callback). Whatever is left when the function is
//!   removed (by [`RootBus::remove_slot`], dropping the bus, or a rescan
//!   that finds a new `pci_dev` at the same `devfn`) is dropped from the
//!   table and counted in [`DmaStats::leaked`]; the memory stays the
//!   driver's.
//! * **Functions behind a bridge** on the bus get the operations too, but
//!   they have no table: their mappings fail (`DMA_MAPPING_ERROR`, `NULL`,
//!   `-EINVAL`), so their drivers learn at once that they cannot do DMA.
//!   Devices that a global rescan adds behind such a bridge keep the
//!   default (direct) operations; their requests find no table and fault.
//!   A device that other code gave these operations (by copying them from
//!   its parent, say) is recognised (it is no `pci_dev` of a [`RootBus`])
//!   and gets no table either.
//! * Counters are per function and cumulative from the creation of the
//!   bus.

use super::{ConfigOps, Host, RootBus, PCI_OPS, WINDOW_BUS_BASE};
use crate::{
    alloc::{flags::GFP_ATOMIC, flags::GFP_KERNEL, KVec},
    error::Result,
    ffi::{c_int, c_uint, c_ulong, c_void},
    init::{pin_init_array_from_fn, InPlaceInit},
    new_spinlock_irq, pin_init,
    spinlock_irq::SpinLockIrq,
    sync::Arc,
};
use macros::pin_data;

/// First IOVA handed out.
pub const IOVA_START: u64 = 0x10_0000;

/// End (exclusive) of the IOVA space: the bus address of the memory
/// window.
pub const IOVA_END: u64 = WINDOW_BUS_BASE;

/// Most live mappings per function (a mapped scatterlist counts one per
/// element).
pub const MAX_MAPPINGS: usize = 16384;

/// Largest single mapping in bytes (what `dma_max_mapping_size()`
/// reports).
pub const MAX_MAPPING_SIZE: usize = 64 << 20;

/// Entries reserved (with `GFP_KERNEL`) when a function is scanned.
const INITIAL_CAPACITY: usize = 64;

/// Functions (`devfn`s) on the root bus.
const FUNCTIONS: usize = 256;

const PAGE_SIZE: u64 = bindings::PAGE_SIZE as u64;

/// `DMA_MAPPING_ERROR`.
const MAPPING_ERROR: bindings::dma_addr_t = !0;

/// Largest coherent allocation: one `alloc_pages()` block.
const MAX_COHERENT: usize = bindings::PAGE_SIZE << bindings::MAX_PAGE_ORDER;

/// Why a memory request of a function was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DmaFault {
    /// No function is present at that `devfn` of the root bus (never
    /// scanned, removed, or the bus is gone).
    NoDevice,
    /// The address is in no live mapping of the function.
    NoMapping,
    /// The mapping does not allow this direction (a read of a
    /// `DMA_FROM_DEVICE` mapping, a write to a `DMA_TO_DEVICE` one).
    Direction,
    /// The request starts inside a mapping and runs past its end.
    CrossesEnd,
    /// The mapped memory could not be accessed through the kernel's direct
    /// map (a driver mapped memory it does not own, or freed it while
    /// mapped).
    Unreachable,
}

/// Counters of one function's translation table, cumulative from the
/// creation of the bus (except [`DmaStats::live`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DmaStats {
    /// Mappings live now.
    pub live: u64,
    /// Mappings made (each scatterlist element counts).
    pub maps: u64,
    /// Mappings removed by their driver.
    pub unmaps: u64,
    /// Mapping attempts refused (no IOVA space, too many mappings, too
    /// large, no memory, memory that is not RAM, function absent).
    pub map_failures: u64,
    /// Unmaps of an address that was not mapped, or with another size or
    /// direction than the mapping's (a driver bug; a mapping at that
    /// address is removed all the same).
    pub bad_unmaps: u64,
    /// Mappings still live when their function was removed, dropped then.
    pub leaked: u64,
    /// Bytes the function read from host memory.
    pub bytes_read: u64,
    /// Bytes the function wrote to host memory.
    pub bytes_written: u64,
    /// Requests refused with [`DmaFault::NoDevice`].
    pub faults_no_device: u64,
    /// Requests refused with [`DmaFault::NoMapping`].
    pub faults_no_mapping: u64,
    /// Requests refused with [`DmaFault::Direction`].
    pub faults_direction: u64,
    /// Requests refused with [`DmaFault::CrossesEnd`].
    pub faults_crosses_end: u64,
    /// Requests refused with [`DmaFault::Unreachable`].
    pub faults_unreachable: u64,
}

impl DmaStats {
    fn count_fault(&mut self, fault: DmaFault) {
        let c = match fault {
            DmaFault::NoDevice => &mut self.faults_no_device,
            DmaFault::NoMapping => &mut self.faults_no_mapping,
            DmaFault::Direction => &mut self.faults_direction,
            DmaFault::CrossesEnd => &mut self.faults_crosses_end,
            DmaFault::Unreachable => &mut self.faults_unreachable,
        };
        *c = c.wrapping_add(1);
    }
}

/// The direction of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    /// `DMA_TO_DEVICE`: the function may read.
    ToDevice,
    /// `DMA_FROM_DEVICE`: the function may write.
    FromDevice,
    /// `DMA_BIDIRECTIONAL`: both.
    Bidirectional,
}

impl Dir {
    fn from_raw(dir: bindings::dma_data_direction) -> Option<Self> {
        match dir {
            bindings::dma_data_direction_DMA_TO_DEVICE => Some(Self::ToDevice),
            bindings::dma_data_direction_DMA_FROM_DEVICE => Some(Self::FromDevice),
            bindings::dma_data_direction_DMA_BIDIRECTIONAL => Some(Self::Bidirectional),
            _ => None,
        }
    }

    /// Whether the function may read (`write == false`) or write
    /// (`write == true`) the mapping.
    fn allows(self, write: bool) -> bool {
        match self {
            Self::ToDevice => !write,
            Self::FromDevice => write,
            Self::Bidirectional => true,
        }
    }
}

/// One mapping: `[iova, iova + len)` to `[phys, phys + len)`.
///
/// Its reservation is `[base(), reservation_end())`: the pages it touches
/// (at least one) and a guard page.
#[derive(Clone, Copy)]
struct Entry {
    iova: u64,
    phys: u64,
    len: u32,
    dir: Dir,
}

impl Entry {
    fn base(&self) -> u64 {
        self.iova & !(PAGE_SIZE - 1)
    }

    fn reservation_end(&self) -> u64 {
        self.base() + reservation(self.iova & (PAGE_SIZE - 1), self.len.into())
    }
}

/// Bytes reserved for a mapping of `len` bytes at offset `offset` in its
/// first page: whole pages (at least one) and a guard page. `offset` is
/// below a page and `len` at most [`MAX_MAPPING_SIZE`]: no overflow.
fn reservation(offset: u64, len: u64) -> u64 {
    (offset + len.max(1)).div_ceil(PAGE_SIZE) * PAGE_SIZE + PAGE_SIZE
}

/// Why a mapping was refused, as `map_sg` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MapError {
    /// Out of IOVA space, entries or memory: may succeed later
    /// (`-ENOMEM`).
    NoSpace,
    /// Too large, bad direction, function absent (`-EINVAL`).
    Invalid,
    /// Not memory that the direct map covers, like a P2P BAR page
    /// (`-EREMOTEIO`).
    NotRam,
}

impl MapError {
    fn to_errno(self) -> c_int {
        let e = match self {
            Self::NoSpace => bindings::ENOMEM,
            Self::Invalid => bindings::EINVAL,
            Self::NotRam => bindings::EREMOTEIO,
        };
        -(e as c_int)
    }
}

/// The translation table of one function.
///
/// # Invariants
///
/// `entries` are sorted by `iova`, their reservations are disjoint and
/// inside `[IOVA_START, IOVA_END)`, and each `iova` lies in its
/// reservation. `entries.len() <= MAX_MAPPINGS`. Each entry is a live
/// mapping whose owner (the function's driver) keeps `[phys, phys + len)`
/// allocated until it unmaps it (the DMA API's contract); nothing else
/// adds entries.
struct Table {
    entries: KVec<Entry>,
    /// Where the next reservation search starts.
    cursor: u64,
    /// Whether the function is on the bus (scanned, not yet removed).
    present: bool,
    stats: DmaStats,
}

impl Table {
    const fn new() -> Self {
        Self {
            entries: KVec::new(),
            cursor: IOVA_START,
            present: false,
            stats: DmaStats {
                live: 0,
                maps: 0,
                unmaps: 0,
                map_failures: 0,
                bad_unmaps: 0,
                leaked: 0,
                bytes_read: 0,
                bytes_written: 0,
                faults_no_device: 0,
                faults_no_mapping: 0,
                faults_direction: 0,
                faults_crosses_end: 0,
                faults_unreachable: 0,
            },
        }
    }

    /// Drops every entry, counting them as leaked.
    fn clear(&mut self) {
        let n = self.entries.len();
        self.stats.leaked = self.stats.leaked.wrapping_add(n as u64);
        // SAFETY: 0 is not above the length, and `Entry` is `Copy` (nothing
        // to drop).
        // INVARIANT: No entries: trivially sorted and disjoint.
        unsafe { self.entries.set_len(0) };
    }

    /// First place at or after `from` for a reservation of `need` bytes
    /// that ends by `to`, searching entries from the first one that ends
    /// after `from`: the address and the index at which to insert.
    fn place(&self, need: u64, from: u64, to: u64) -> Option<(u64, usize)> {
        let mut at = from;
        let mut idx = self.entries.partition_point(|e| e.reservation_end() <= at);
        for e in self.entries.get(idx..)?.iter() {
            let end = at.checked_add(need)?;
            if end > to {
                return None;
            }
            if e.base() >= end {
                return Some((at, idx));
            }
            at = at.max(e.reservation_end());
            idx += 1;
        }
        (at.checked_add(need)? <= to).then_some((at, idx))
    }

    /// Maps `[phys, phys + len)` with an IOVA range whose last byte is at
    /// most `mask`.
    ///
    /// # Safety
    ///
    /// The caller (the function's driver, through the DMA API) keeps
    /// `[phys, phys + len)` allocated until it unmaps the mapping.
    unsafe fn map(&mut self, phys: u64, len: usize, dir: Dir, mask: u64) -> Result<u64, MapError> {
        // SAFETY: As this function requires.
        let r = unsafe { self.map_inner(phys, len, dir, mask) };
        match r {
            Ok(_) => self.stats.maps = self.stats.maps.wrapping_add(1),
            Err(_) => self.stats.map_failures = self.stats.map_failures.wrapping_add(1),
        }
        r
    }

    /// [`Table::map`], uncounted.
    ///
    /// # Safety
    ///
    /// As [`Table::map`].
    unsafe fn map_inner(
        &mut self,
        phys: u64,
        len: usize,
        dir: Dir,
        mask: u64,
    ) -> Result<u64, MapError> {
        if !self.present {
            return Err(MapError::Invalid);
        }
        let len32 = match u32::try_from(len) {
            Ok(l) if len <= MAX_MAPPING_SIZE => l,
            _ => return Err(MapError::Invalid),
        };
        if self.entries.len() >= MAX_MAPPINGS {
            return Err(MapError::NoSpace);
        }
        let offset = phys & (PAGE_SIZE - 1);
        let need = reservation(offset, len32.into());
        let to = mask.saturating_add(1).min(IOVA_END);
        let from = if (IOVA_START..to).contains(&self.cursor) {
            self.cursor
        } else {
            IOVA_START
        };
        let (base, idx) = self
            .place(need, from, to)
            .or_else(|| self.place(need, IOVA_START, to))
            .ok_or(MapError::NoSpace)?;
        if self.entries.len() == self.entries.capacity() {
            self.entries
                .reserve(1, GFP_ATOMIC)
                .map_err(|_| MapError::NoSpace)?;
        }
        let iova = base + offset;
        let entry = Entry {
            iova,
            phys,
            len: len32,
            dir,
        };
        // Cannot fail: capacity was reserved above.
        self.entries
            .push(entry, GFP_ATOMIC)
            .map_err(|_| MapError::NoSpace)?;
        // INVARIANT: `place` found `[base, base + need)` inside
        // `[IOVA_START, to)` after every reservation before `idx` and
        // before every one from `idx` on; the new entry, pushed last, moves
        // to `idx`, so the entries stay sorted and disjoint. The caller
        // keeps the memory allocated (safety requirements).
        if let Some(tail) = self.entries.as_mut_slice().get_mut(idx..) {
            tail.rotate_right(1);
        }
        self.cursor = base + need;
        Ok(iova)
    }

    /// Removes the mapping at `iova`; `len` and `dir` are what the driver
    /// says it mapped (checked, and counted when they differ).
    fn unmap(&mut self, iova: u64, len: usize, dir: Option<Dir>) {
        let Ok(idx) = self.entries.binary_search_by_key(&iova, |e| e.iova) else {
            self.stats.bad_unmaps = self.stats.bad_unmaps.wrapping_add(1);
            return;
        };
        let n = self.entries.len();
        if let Some(tail) = self.entries.as_mut_slice().get_mut(idx..) {
            if let Some(e) = tail.first() {
                if usize::try_from(e.len) != Ok(len) || dir != Some(e.dir) {
                    self.stats.bad_unmaps = self.stats.bad_unmaps.wrapping_add(1);
                }
            }
            tail.rotate_left(1);
        }
        // SAFETY: `idx < n` (found), so `n - 1` is not above the length;
        // `Entry` is `Copy` (nothing to drop). The removed entry was
        // rotated to the end.
        // INVARIANT: Removing an entry keeps the others sorted and
        // disjoint; after this, nothing reaches its memory.
        unsafe { self.entries.set_len(n - 1) };
        self.stats.unmaps = self.stats.unmaps.wrapping_add(1);
    }

    /// Checks a request of the function for `len` bytes at `iova` and
    /// returns the physical address it reaches; `[phys, phys + len)` lies
    /// inside one live entry.
    fn check(&self, iova: u64, len: usize, write: bool) -> Result<u64, DmaFault> {
        if !self.present {
            return Err(DmaFault::NoDevice);
        }
        let idx = self.entries.partition_point(|e| e.iova <= iova);
        let e = idx
            .checked_sub(1)
            .and_then(|i| self.entries.get(i))
            .ok_or(DmaFault::NoMapping)?;
        // `e.iova <= iova` (partition point).
        let off = iova - e.iova;
        if off >= u64::from(e.len) {
            return Err(DmaFault::NoMapping);
        }
        if !e.dir.allows(write) {
            return Err(DmaFault::Direction);
        }
        match u64::try_from(len).ok().and_then(|l| off.checked_add(l)) {
            Some(end) if end <= u64::from(e.len) => Ok(e.phys + off),
            _ => Err(DmaFault::CrossesEnd),
        }
    }

    /// Reads `buf.len()` bytes at `iova` for the function.
    fn read(&mut self, iova: u64, buf: &mut [u8]) -> Result<(), DmaFault> {
        let r = self.check(iova, buf.len(), false).and_then(|phys| {
            // SAFETY: `[phys, phys + len)` is inside a live entry (`check`),
            // whose memory its owner keeps allocated until it unmaps it,
            // which needs this table's lock, held by our caller (type
            // invariants). That memory is RAM (not device memory, not
            // highmem: checked at map time), so the direct map covers it;
            // `copy_from_kernel_nofault()` reads it as raw bytes, without a
            // Rust reference to it (the driver may be using it), and fails
            // instead of faulting should a page not be mapped. `buf` is
            // valid for writes of its length.
            let ret = unsafe {
                let src = bindings::pcieoe_phys_to_virt(phys);
                bindings::copy_from_kernel_nofault(buf.as_mut_ptr().cast(), src, buf.len())
            };
            if ret == 0 {
                Ok(())
            } else {
                Err(DmaFault::Unreachable)
            }
        });
        match r {
            Ok(()) => self.stats.bytes_read = self.stats.bytes_read.wrapping_add(buf.len() as u64),
            Err(f) => self.stats.count_fault(f),
        }
        r
    }

    /// Writes `data` at `iova` for the function.
    fn write(&mut self, iova: u64, data: &[u8]) -> Result<(), DmaFault> {
        let r = self.check(iova, data.len(), true).and_then(|phys| {
            // SAFETY: As in `read`: the destination is inside a live entry
            // that allows writes, whose memory stays allocated while we
            // hold the lock; the direct map covers it, and
            // `copy_to_kernel_nofault()` writes raw bytes (as the device's
            // DMA would) or fails on an unmapped or read-only page. `data`
            // is valid for reads of its length.
            let ret = unsafe {
                let dst = bindings::pcieoe_phys_to_virt(phys);
                bindings::copy_to_kernel_nofault(dst, data.as_ptr().cast(), data.len())
            };
            if ret == 0 {
                Ok(())
            } else {
                Err(DmaFault::Unreachable)
            }
        });
        match r {
            Ok(()) => {
                self.stats.bytes_written = self.stats.bytes_written.wrapping_add(data.len() as u64)
            }
            Err(f) => self.stats.count_fault(f),
        }
        r
    }

    fn stats(&self) -> DmaStats {
        DmaStats {
            live: self.entries.len() as u64,
            ..self.stats
        }
    }
}

/// The translation tables of the functions on a root bus' bus 0, indexed
/// by `devfn`. Shared by the bus's `Host` and its [`DmaHandle`]s.
#[pin_data]
pub(super) struct Iommu {
    #[pin]
    tables: [SpinLockIrq<Table>; FUNCTIONS],
}

impl Iommu {
    /// Allocates the tables, all absent and empty. May sleep.
    pub(super) fn new() -> Result<Arc<Self>> {
        Arc::pin_init(
            pin_init!(Self {
                tables <- pin_init_array_from_fn(|_| new_spinlock_irq!(Table::new(), "pci_host_iommu")),
            }),
            GFP_KERNEL,
        )
    }

    fn table(&self, devfn: u8) -> &SpinLockIrq<Table> {
        // Cannot panic: there are 256 tables, any `u8` indexes one.
        &self.tables[usize::from(devfn)]
    }

    /// Makes the table of `devfn` present, for a new `pci_dev` there;
    /// entries left from an earlier one are dropped and counted as leaked.
    /// May sleep (reserves entries with `GFP_KERNEL`).
    pub(super) fn install(&self, devfn: u8) {
        // A failed reservation is no error: the table grows when mapping.
        let mut spare = KVec::with_capacity(INITIAL_CAPACITY, GFP_KERNEL).ok();
        {
            let mut t = self.table(devfn).lock();
            t.clear();
            if let Some(s) = spare.as_mut() {
                if t.entries.capacity() < s.capacity() {
                    core::mem::swap(&mut t.entries, s);
                }
            }
            t.present = true;
        }
        // The vector we did not keep is freed outside the lock.
        drop(spare);
    }

    /// Makes the table of `devfn` absent: its function was removed. Its
    /// remaining entries are dropped and counted as leaked.
    pub(super) fn remove(&self, devfn: u8) {
        let mut t = self.table(devfn).lock();
        t.present = false;
        t.clear();
    }

    fn dma_read(&self, devfn: u8, iova: u64, buf: &mut [u8]) -> Result<(), DmaFault> {
        self.table(devfn).lock().read(iova, buf)
    }

    fn dma_write(&self, devfn: u8, iova: u64, data: &[u8]) -> Result<(), DmaFault> {
        self.table(devfn).lock().write(iova, data)
    }

    fn dma_stats(&self, devfn: u8) -> DmaStats {
        self.table(devfn).lock().stats()
    }
}

/// A reference to the translation tables of a [`RootBus`] that outlives
/// it, for the owner's receive path (softirq), which cannot take the lock
/// that guards the bus itself. Cheap to clone.
///
/// Once the bus is dropped every function is absent, and every request
/// faults with [`DmaFault::NoDevice`].
#[derive(Clone)]
pub struct DmaHandle {
    iommu: Arc<Iommu>,
}

impl DmaHandle {
    /// Serves a memory read request of function `devfn` (on the root bus)
    /// for `buf.len()` bytes at bus address `iova`, into `buf`.
    ///
    /// The range must be exactly the bytes asked for (after byte enables):
    /// a mapping's bytes are honoured, not the rest of its pages. Any
    /// context; copies with local interrupts disabled, so keep `buf` to a
    /// request's size.
    ///
    /// # Errors
    ///
    /// The [`DmaFault`] that refused the request (also counted in
    /// [`DmaStats`]); `buf` is then left unspecified.
    pub fn dma_read(&self, devfn: u8, iova: u64, buf: &mut [u8]) -> Result<(), DmaFault> {
        self.iommu.dma_read(devfn, iova, buf)
    }

    /// Serves a memory write request of function `devfn` (on the root bus)
    /// of `data` at bus address `iova`. As [`DmaHandle::dma_read`]
    /// otherwise.
    ///
    /// # Errors
    ///
    /// The [`DmaFault`] that refused the request (also counted in
    /// [`DmaStats`]). Nothing was written then, except with
    /// [`DmaFault::Unreachable`], after which a prefix of the range may
    /// have been.
    pub fn dma_write(&self, devfn: u8, iova: u64, data: &[u8]) -> Result<(), DmaFault> {
        self.iommu.dma_write(devfn, iova, data)
    }

    /// The counters of function `devfn`'s table. Any context.
    pub fn dma_stats(&self, devfn: u8) -> DmaStats {
        self.iommu.dma_stats(devfn)
    }
}

impl<T: ConfigOps> RootBus<T> {
    /// A [`DmaHandle`] to this bus's translation tables.
    pub fn dma_handle(&self) -> DmaHandle {
        DmaHandle {
            iommu: self.host().iommu.clone(),
        }
    }

    /// As [`DmaHandle::dma_read`].
    ///
    /// # Errors
    ///
    /// As [`DmaHandle::dma_read`].
    pub fn dma_read(&self, devfn: u8, iova: u64, buf: &mut [u8]) -> Result<(), DmaFault> {
        self.host().iommu.dma_read(devfn, iova, buf)
    }

    /// As [`DmaHandle::dma_write`].
    ///
    /// # Errors
    ///
    /// As [`DmaHandle::dma_write`].
    pub fn dma_write(&self, devfn: u8, iova: u64, data: &[u8]) -> Result<(), DmaFault> {
        self.host().iommu.dma_write(devfn, iova, data)
    }

    /// As [`DmaHandle::dma_stats`].
    pub fn dma_stats(&self, devfn: u8) -> DmaStats {
        self.host().iommu.dma_stats(devfn)
    }
}

/// `dma_map_ops` in a `static` (it contains raw pointers).
///
/// # Examples
///
/// The DMA API of a function on a [`RootBus`] and the requests that the
/// function could make (a test of this module, run at boot):
///
/// ```
/// use kernel::alloc::flags::{GFP_KERNEL, __GFP_ZERO};
/// use kernel::bindings;
/// use kernel::page::Page;
/// use kernel::pci_host::{ConfigOps, DmaFault, RootBus};
/// use kernel::sync::Arc;
///
/// /// One conventional function at 01.0 with no BARs and no driver.
/// struct OneFunction;
///
/// impl ConfigOps for OneFunction {
///     fn read(&self, bus: u8, devfn: u8, offset: u16, _size: usize) -> Option<u32> {
///         if bus != 0 || devfn != 0x08 {
///             return None;
///         }
///         let dword = match offset & !3 {
///             0x00 => 0x00ff_1b36, // Red Hat (QEMU), an ID no driver claims.
///             0x08 => 0xff00_0000, // Class "unassigned".
///             _ => 0,
///         };
///         Some(dword >> ((offset & 3) * 8))
///     }
///
///     fn write(&self, bus: u8, devfn: u8, _offset: u16, _size: usize, _value: u32) -> bool {
///         bus == 0 && devfn == 0x08
///     }
/// }
///
/// let bus = RootBus::new(Arc::new(OneFunction, GFP_KERNEL)?, 0x1000)?;
/// assert_eq!(bus.scan_slot(0x08)?, 1);
/// // SAFETY: Looks up a device: no requirement.
/// let pdev = unsafe { bindings::pci_get_domain_bus_and_slot(bus.domain() as i32, 0, 0x08) };
/// assert!(!pdev.is_null());
/// // SAFETY: `pdev` is live (we hold a reference, put below).
/// let dev = unsafe { core::ptr::addr_of_mut!((*pdev).dev) };
///
/// // A streaming mapping the function may only read: 16 bytes at 100.
/// let page = Page::alloc_page(GFP_KERNEL | __GFP_ZERO)?;
/// let pattern = [0x5au8; 16];
/// // SAFETY: `pattern` is valid for reads of 16 bytes.
/// unsafe { page.write_raw(pattern.as_ptr(), 100, 16)? };
/// let to_dev = bindings::dma_data_direction_DMA_TO_DEVICE;
/// // SAFETY: `dev` is live; `page` stays allocated until after the unmap.
/// let iova = unsafe { bindings::dma_map_page_attrs(dev, page.as_ptr(), 100, 16, to_dev, 0) };
/// assert_ne!(iova, !0);
/// assert!(iova < 0x8000_0000 && iova % 4096 == 100);
/// let mut buf = [0u8; 16];
/// assert_eq!(bus.dma_read(0x08, iova, &mut buf), Ok(()));
/// assert_eq!(buf, pattern);
/// assert_eq!(bus.dma_write(0x08, iova, &buf), Err(DmaFault::Direction));
/// assert_eq!(bus.dma_read(0x08, iova + 8, &mut buf), Err(DmaFault::CrossesEnd));
/// assert_eq!(bus.dma_read(0x08, iova - 1, &mut buf[..1]), Err(DmaFault::NoMapping));
/// assert_eq!(bus.dma_read(0x10, iova, &mut buf), Err(DmaFault::NoDevice));
/// // SAFETY: Mapped above, with these arguments.
/// unsafe { bindings::dma_unmap_page_attrs(dev, iova, 16, to_dev, 0) };
/// assert_eq!(bus.dma_read(0x08, iova, &mut buf), Err(DmaFault::NoMapping));
///
/// // Coherent memory: both directions.
/// let mut handle = 0;
/// // SAFETY: `dev` is live; `handle` is valid for writes.
/// let cpu = unsafe { bindings::dma_alloc_attrs(dev, 4096, &mut handle, bindings::GFP_KERNEL, 0) };
/// assert!(!cpu.is_null());
/// assert_ne!(handle, iova);
/// assert_eq!(bus.dma_write(0x08, handle + 4090, &[1, 2, 3, 4, 5, 6]), Ok(()));
/// // SAFETY: `cpu` is 4096 bytes of allocated memory.
/// assert_eq!(unsafe { *cpu.cast::<u8>().add(4095) }, 6);
/// assert_eq!(bus.dma_write(0x08, handle + 4091, &[0; 6]), Err(DmaFault::CrossesEnd));
///
/// // A scatterlist of one element, which the function may only write.
/// let mut data = KBox::new([0u8; 64], GFP_KERNEL)?;
/// let mut sg = bindings::scatterlist::default();
/// let from_dev = bindings::dma_data_direction_DMA_FROM_DEVICE;
/// // SAFETY: `sg` and `data` are valid and outlive the mapping.
/// let n = unsafe {
///     bindings::sg_init_one(&mut sg, data.as_mut_ptr().cast(), 64);
///     bindings::dma_map_sg_attrs(dev, &mut sg, 1, from_dev, 0)
/// };
/// assert_eq!(n, 1);
/// assert_eq!(bus.dma_write(0x08, sg.dma_address + 60, &[7; 4]), Ok(()));
/// assert_eq!(bus.dma_read(0x08, sg.dma_address, &mut buf), Err(DmaFault::Direction));
/// let stats = bus.dma_stats(0x08);
/// assert_eq!((stats.live, stats.maps, stats.unmaps), (2, 3, 1));
/// // SAFETY: Mapped above, with these arguments; then the coherent
/// // memory is freed, and our device reference put.
/// unsafe {
///     bindings::dma_unmap_sg_attrs(dev, &mut sg, 1, from_dev, 0);
///     bindings::dma_free_attrs(dev, 4096, cpu, handle, 0);
///     bindings::pci_dev_put(pdev);
/// }
/// assert_eq!(data[60..], [7; 4]);
///
/// let stats = bus.dma_stats(0x08);
/// assert_eq!((stats.live, stats.unmaps, stats.leaked, stats.bad_unmaps), (0, 3, 0, 0));
/// assert_eq!((stats.bytes_read, stats.bytes_written), (16, 10));
/// assert_eq!((stats.faults_direction, stats.faults_crosses_end), (2, 2));
/// assert_eq!((stats.faults_no_mapping, stats.faults_no_device), (2, 0));
/// assert_eq!(bus.dma_stats(0x10).faults_no_device, 1);
/// bus.remove_slot(0x08);
/// # Ok::<(), Error>(())
/// ```
#[repr(transparent)]
struct Ops(bindings::dma_map_ops);

// SAFETY: The table is never written.
unsafe impl Sync for Ops {}

static DMA_OPS: Ops = Ops(bindings::dma_map_ops {
    alloc: Some(alloc),
    free: Some(free),
    alloc_pages_op: Some(alloc_pages_op),
    free_pages: Some(free_pages_op),
    mmap: None,
    get_sgtable: None,
    map_page: Some(map_page),
    unmap_page: Some(unmap_page),
    map_sg: Some(map_sg),
    unmap_sg: Some(unmap_sg),
    // `dma_map_resource()` then returns `DMA_MAPPING_ERROR`: no P2P.
    map_resource: None,
    unmap_resource: None,
    // Coherent: see the module documentation.
    sync_single_for_cpu: None,
    sync_single_for_device: None,
    sync_sg_for_cpu: None,
    sync_sg_for_device: None,
    cache_sync: None,
    dma_supported: Some(dma_supported),
    get_required_mask: Some(get_required_mask),
    max_mapping_size: Some(max_mapping_size),
    opt_mapping_size: None,
    // 0: segments are never merged.
    get_merge_boundary: None,
});

/// Gives `pdev` this module's DMA operations, unless it has operations
/// already (it was set up before). Returns whether it did.
///
/// # Safety
///
/// `pdev` is a `pci_dev` of a [`RootBus`] hierarchy (its bus's `sysdata`
/// is a `Host`'s) that no driver is bound to, and no DMA API call for it
/// runs or can start concurrently (it was scanned but not yet added).
pub(super) unsafe fn install_ops(pdev: *mut bindings::pci_dev) -> bool {
    // SAFETY: `pdev` is valid (safety requirements); nothing else uses its
    // DMA operations now. This is what `set_dma_ops()` does (the field
    // exists only with `CONFIG_ARCH_HAS_DMA_OPS`, so this does not build
    // where `set_dma_ops()` would do nothing); the core only reads the
    // table through the pointer.
    unsafe {
        let ops = core::ptr::addr_of_mut!((*pdev).dev.dma_ops);
        if !(*ops).is_null() {
            return false;
        }
        *ops = core::ptr::addr_of!(DMA_OPS.0).cast_mut();
    }
    true
}

/// `pci_walk_bus()` callback: [`install_ops`] for a device behind a bridge
/// (its mappings then fail: it has no table).
///
/// # Safety
///
/// Called by `pci_walk_bus()` on a bus of a [`RootBus`] hierarchy while the
/// rescan mutex is held, before the new devices are added.
pub(super) unsafe extern "C" fn install_ops_walk(
    pdev: *mut bindings::pci_dev,
    _data: *mut c_void,
) -> c_int {
    // SAFETY: `pdev` is a live device of the hierarchy. A device without
    // DMA operations and without a driver was scanned and not yet added
    // (every added device of the hierarchy got operations at its scan, or
    // was added by a global rescan, which the rescan mutex excludes now).
    unsafe {
        if (*pdev).dev.driver.is_null() {
            install_ops(pdev);
        }
    }
    0
}

/// What a DMA API call is for: the table of the function, if it is one on
/// the root bus of a [`RootBus`]; the device's masks.
struct Target<'a> {
    table: Option<&'a SpinLockIrq<Table>>,
    mask: u64,
    coherent_mask: u64,
}

impl<'a> Target<'a> {
    /// The target of a DMA API call for `dev`.
    ///
    /// A device with [`DMA_OPS`] is normally a `pci_dev` of a [`RootBus`]
    /// hierarchy, but code elsewhere may copy a device's DMA operations to
    /// another device (a child of any bus): such a device, and a device
    /// behind a bridge, get no table.
    ///
    /// # Safety
    ///
    /// `dev` is a live device for `'a`.
    unsafe fn of(dev: *mut bindings::device) -> Self {
        // SAFETY: `dev` is live (safety requirements). The masks are the
        // driver's to change at any time: read once, without tearing.
        let (mask, coherent_mask, is_pci) = unsafe {
            let mask_ptr = (*dev).dma_mask;
            let mask = if mask_ptr.is_null() {
                0xffff_ffff
            } else {
                core::ptr::read_volatile(mask_ptr)
            };
            (
                mask,
                core::ptr::read_volatile(core::ptr::addr_of!((*dev).coherent_dma_mask)),
                core::ptr::eq((*dev).bus, core::ptr::addr_of!(bindings::pci_bus_type)),
            )
        };
        let table = if is_pci {
            // SAFETY: A device on the PCI bus type is the `dev` of a live
            // `pci_dev`, whose bus lives at least as long (the device holds
            // a reference). A bus's `ops`, `parent` and `sysdata` do not
            // change; every bus with `PCI_OPS` belongs to a `RootBus`
            // hierarchy and has the `sysdata` of its `Host` (child buses
            // inherit both), which stays allocated, with its `iommu`, until
            // the bridge is released, after every device.
            unsafe {
                let pdev = crate::container_of!(dev, bindings::pci_dev, dev);
                let bus = (*pdev).bus;
                let ours = core::ptr::eq((*bus).ops.cast_const(), core::ptr::addr_of!(PCI_OPS.0));
                if ours && (*bus).parent.is_null() {
                    let host = &*crate::container_of!((*bus).sysdata, Host, sysdata);
                    u8::try_from((*pdev).devfn)
                        .ok()
                        .map(|d| host.iommu.table(d))
                } else {
                    None
                }
            }
        } else {
            None
        };
        Self {
            table,
            mask,
            coherent_mask,
        }
    }

    /// Calls `f` with the function's table, locked; `None` for a device
    /// without one.
    fn with_table<R>(&self, f: impl FnOnce(&mut Table) -> R) -> Option<R> {
        let mut t = self.table?.lock();
        Some(f(&mut t))
    }

    /// Maps `[phys, phys + len)`; `MAPPING_ERROR` on failure.
    ///
    /// # Safety
    ///
    /// As [`Table::map`].
    unsafe fn map(&self, phys: u64, len: usize, dir: Dir, mask: u64) -> bindings::dma_addr_t {
        self.with_table(|t| {
            // SAFETY: As this function requires.
            unsafe { t.map(phys, len, dir, mask) }
        })
        .and_then(|r| r.ok())
        .unwrap_or(MAPPING_ERROR)
    }

    fn unmap(&self, iova: bindings::dma_addr_t, len: usize, dir: Option<Dir>) {
        self.with_table(|t| t.unmap(iova, len, dir));
    }

    /// Counts a mapping refused before it reached the table.
    fn count_failure(&self) {
        self.with_table(|t| t.stats.map_failures = t.stats.map_failures.wrapping_add(1));
    }
}

/// The `alloc_pages()` order for `size` bytes, or `None` above
/// [`MAX_COHERENT`] or for 0.
fn order_of(size: usize) -> Option<c_uint> {
    if size == 0 || size > MAX_COHERENT {
        return None;
    }
    let pages = size.div_ceil(bindings::PAGE_SIZE);
    Some(pages.next_power_of_two().trailing_zeros())
}

/// Allocates zeroed pages for `size` bytes and maps them in direction
/// `dir`: the page and the IOVA.
///
/// # Safety
///
/// `t` is the target of a live device; `gfp` flags valid for
/// `alloc_pages()` in the caller's context.
unsafe fn alloc_mapped(
    t: &Target<'_>,
    size: usize,
    gfp: bindings::gfp_t,
    dir: Dir,
) -> Option<(*mut bindings::page, bindings::dma_addr_t)> {
    t.table?;
    let Some(order) = order_of(size) else {
        t.count_failure();
        return None;
    };
    // SAFETY: `order` is at most `MAX_PAGE_ORDER`; `gfp` is valid for the
    // caller's context (safety requirements).
    let page = unsafe { bindings::alloc_pages(gfp | bindings::__GFP_ZERO, order) };
    if page.is_null() {
        t.count_failure();
        return None;
    }
    // SAFETY: `page` heads a block of `1 << order` pages, at least `size`
    // bytes, of ordinary memory (no `__GFP_HIGHMEM`: the DMA core clears
    // it).
    let phys = unsafe { bindings::pcieoe_page_to_phys(page) };
    // SAFETY: The block stays allocated until `free`/`free_pages_op` frees
    // it, which unmaps first.
    let iova = unsafe { t.map(phys, size, dir, t.coherent_mask) };
    if iova == MAPPING_ERROR {
        // SAFETY: Allocated above, with this order; not mapped.
        unsafe { bindings::__free_pages(page, order) };
        return None;
    }
    Some((page, iova))
}

/// `dma_map_ops.alloc`: `dma_alloc_coherent()` and friends.
///
/// # Safety
///
/// Called by the DMA core for a live device with [`DMA_OPS`];
/// `dma_handle` is valid for writes.
unsafe extern "C" fn alloc(
    dev: *mut bindings::device,
    size: usize,
    dma_handle: *mut bindings::dma_addr_t,
    gfp: bindings::gfp_t,
    _attrs: c_ulong,
) -> *mut c_void {
    // SAFETY: `dev` is live and has `DMA_OPS` (safety requirements).
    let t = unsafe { Target::of(dev) };
    // SAFETY: The DMA core passes the caller's `gfp` (zone modifiers
    // cleared), valid in the caller's context.
    let Some((page, iova)) = (unsafe { alloc_mapped(&t, size, gfp, Dir::Bidirectional) }) else {
        return core::ptr::null_mut();
    };
    // SAFETY: `dma_handle` is valid for writes (safety requirements);
    // `page` is ordinary memory, in the direct map.
    unsafe {
        *dma_handle = iova;
        bindings::pcieoe_phys_to_virt(bindings::pcieoe_page_to_phys(page))
    }
}

/// `dma_map_ops.free`: `dma_free_coherent()`.
///
/// # Safety
///
/// Called by the DMA core for a live device with [`DMA_OPS`], with what
/// [`alloc`] returned for it (`vaddr` not NULL).
unsafe extern "C" fn free(
    dev: *mut bindings::device,
    size: usize,
    vaddr: *mut c_void,
    dma_handle: bindings::dma_addr_t,
    _attrs: c_ulong,
) {
    // SAFETY: `dev` is live and has `DMA_OPS` (safety requirements).
    let t = unsafe { Target::of(dev) };
    // Unmapped first: once the lock is released no request touches the
    // pages.
    t.unmap(dma_handle, size, Some(Dir::Bidirectional));
    if let Some(order) = order_of(size) {
        // SAFETY: `alloc` allocated `vaddr` with this order (safety
        // requirements), and nothing maps it any more.
        unsafe { bindings::free_pages(vaddr as c_ulong, order) };
    }
}

/// `dma_map_ops.alloc_pages_op`: `dma_alloc_pages()`.
///
/// # Safety
///
/// Called by the DMA core for a live device with [`DMA_OPS`];
/// `dma_handle` is valid for writes.
unsafe extern "C" fn alloc_pages_op(
    dev: *mut bindings::device,
    size: usize,
    dma_handle: *mut bindings::dma_addr_t,
    dir: bindings::dma_data_direction,
    gfp: bindings::gfp_t,
) -> *mut bindings::page {
    // SAFETY: `dev` is live and has `DMA_OPS` (safety requirements).
    let t = unsafe { Target::of(dev) };
    let Some(dir) = Dir::from_raw(dir) else {
        t.count_failure();
        return core::ptr::null_mut();
    };
    // SAFETY: The DMA core passes the caller's `gfp` (it refuses zone
    // modifiers), valid in the caller's context.
    let Some((page, iova)) = (unsafe { alloc_mapped(&t, size, gfp, dir) }) else {
        return core::ptr::null_mut();
    };
    // SAFETY: `dma_handle` is valid for writes (safety requirements).
    unsafe { *dma_handle = iova };
    page
}

/// `dma_map_ops.free_pages`: `dma_free_pages()`.
///
/// # Safety
///
/// Called by the DMA core for a live device with [`DMA_OPS`], with what
/// [`alloc_pages_op`] returned for it.
unsafe extern "C" fn free_pages_op(
    dev: *mut bindings::device,
    size: usize,
    page: *mut bindings::page,
    dma_handle: bindings::dma_addr_t,
    dir: bindings::dma_data_direction,
) {
    // SAFETY: `dev` is live and has `DMA_OPS` (safety requirements).
    let t = unsafe { Target::of(dev) };
    t.unmap(dma_handle, size, Dir::from_raw(dir));
    if let Some(order) = order_of(size) {
        if !page.is_null() {
            // SAFETY: `alloc_pages_op` allocated `page` with this order
            // (safety requirements), and nothing maps it any more.
            unsafe { bindings::__free_pages(page, order) };
        }
    }
}

/// The physical address of `offset` bytes into `page`, if it is ordinary
/// memory.
///
/// # Safety
///
/// `page` is a valid `struct page`.
unsafe fn ram_phys(page: *mut bindings::page, offset: u64) -> Result<u64, MapError> {
    // SAFETY: `page` is valid (safety requirements).
    if !unsafe { bindings::pcieoe_page_is_dma_ram(page) } {
        return Err(MapError::NotRam);
    }
    // SAFETY: As above.
    let phys = unsafe { bindings::pcieoe_page_to_phys(page) };
    phys.checked_add(offset).ok_or(MapError::Invalid)
}

/// `dma_map_ops.map_page`: `dma_map_page()`, `dma_map_single()`.
///
/// # Safety
///
/// Called by the DMA core for a live device with [`DMA_OPS`] and memory
/// that the caller keeps allocated until it unmaps it.
unsafe extern "C" fn map_page(
    dev: *mut bindings::device,
    page: *mut bindings::page,
    offset: c_ulong,
    size: usize,
    dir: bindings::dma_data_direction,
    _attrs: c_ulong,
) -> bindings::dma_addr_t {
    // SAFETY: `dev` is live and has `DMA_OPS` (safety requirements).
    let t = unsafe { Target::of(dev) };
    // SAFETY: `page` is a valid page (safety requirements). (`c_ulong` is
    // 64-bit: the cast is lossless.)
    let phys = unsafe { ram_phys(page, offset as u64) };
    match (phys, Dir::from_raw(dir)) {
        // SAFETY: The caller keeps the memory allocated until it unmaps it
        // (safety requirements).
        (Ok(phys), Some(dir)) => unsafe { t.map(phys, size, dir, t.mask) },
        _ => {
            t.count_failure();
            MAPPING_ERROR
        }
    }
}

/// `dma_map_ops.unmap_page`.
///
/// # Safety
///
/// Called by the DMA core for a live device with [`DMA_OPS`].
unsafe extern "C" fn unmap_page(
    dev: *mut bindings::device,
    dma_handle: bindings::dma_addr_t,
    size: usize,
    dir: bindings::dma_data_direction,
    _attrs: c_ulong,
) {
    // SAFETY: `dev` is live and has `DMA_OPS` (safety requirements).
    let t = unsafe { Target::of(dev) };
    t.unmap(dma_handle, size, Dir::from_raw(dir));
}

/// `dma_map_ops.map_sg`: maps each element on its own (no merging), all
/// or nothing, under one hold of the table lock.
///
/// # Safety
///
/// Called by the DMA core for a live device with [`DMA_OPS`] and a valid
/// scatterlist of at least `nents` elements, whose memory the caller keeps
/// allocated until it unmaps it.
unsafe extern "C" fn map_sg(
    dev: *mut bindings::device,
    sg: *mut bindings::scatterlist,
    nents: c_int,
    dir: bindings::dma_data_direction,
    _attrs: c_ulong,
) -> c_int {
    // SAFETY: `dev` is live and has `DMA_OPS` (safety requirements).
    let t = unsafe { Target::of(dev) };
    let Some(dir) = Dir::from_raw(dir) else {
        t.count_failure();
        return MapError::Invalid.to_errno();
    };
    let mask = t.mask;
    let r = t.with_table(|table| {
        let mut s = sg;
        let mut mapped = 0;
        let mut err = None;
        while mapped < nents && !s.is_null() {
            // SAFETY: `s` is one of the first `nents` elements of a valid
            // scatterlist (safety requirements; `sg_next()` follows
            // chains), and its page is valid.
            let (page, offset, length) =
                unsafe { (bindings::pcieoe_sg_page(s), (*s).offset, (*s).length) };
            // SAFETY: As above.
            let r = unsafe { ram_phys(page, offset.into()) }.and_then(|phys| {
                // SAFETY: The caller keeps the memory allocated until it
                // unmaps the list (safety requirements).
                unsafe { table.map(phys, length as usize, dir, mask) }
            });
            match r {
                Ok(iova) => {
                    // SAFETY: `s` is a valid element (see above), ours to
                    // fill in.
                    unsafe {
                        (*s).dma_address = iova;
                        (*s).dma_length = length;
                    }
                }
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
            mapped += 1;
            // SAFETY: As above.
            s = unsafe { bindings::sg_next(s) };
        }
        let Some(e) = err else {
            return mapped;
        };
        // Undo what this call mapped, under the same hold of the lock.
        let mut s = sg;
        for _ in 0..mapped {
            // SAFETY: The first `mapped` elements were filled in above.
            let (iova, len) = unsafe { ((*s).dma_address, (*s).dma_length) };
            table.unmap(iova, len as usize, Some(dir));
            // The failed attempt is the one to count, not these.
            table.stats.maps = table.stats.maps.wrapping_sub(1);
            table.stats.unmaps = table.stats.unmaps.wrapping_sub(1);
            // SAFETY: As above.
            s = unsafe { bindings::sg_next(s) };
        }
        e.to_errno()
    });
    match r {
        Some(n) => n,
        None => MapError::Invalid.to_errno(),
    }
}

/// `dma_map_ops.unmap_sg`.
///
/// # Safety
///
/// Called by the DMA core for a live device with [`DMA_OPS`] and the
/// scatterlist and `nents` that [`map_sg`] mapped.
unsafe extern "C" fn unmap_sg(
    dev: *mut bindings::device,
    sg: *mut bindings::scatterlist,
    nents: c_int,
    dir: bindings::dma_data_direction,
    _attrs: c_ulong,
) {
    // SAFETY: `dev` is live and has `DMA_OPS` (safety requirements).
    let t = unsafe { Target::of(dev) };
    let dir = Dir::from_raw(dir);
    t.with_table(|table| {
        let mut s = sg;
        for _ in 0..nents {
            if s.is_null() {
                break;
            }
            // SAFETY: `s` is one of the first `nents` elements of the
            // scatterlist that `map_sg` filled in (safety requirements).
            let (iova, len) = unsafe { ((*s).dma_address, (*s).dma_length) };
            table.unmap(iova, len as usize, dir);
            // SAFETY: As above.
            s = unsafe { bindings::sg_next(s) };
        }
    });
}

/// `dma_map_ops.dma_supported`: any mask that covers the IOVA space.
extern "C" fn dma_supported(_dev: *mut bindings::device, mask: u64) -> c_int {
    c_int::from(mask >= IOVA_END - 1)
}

/// `dma_map_ops.get_required_mask`: 32 bits (every IOVA is below 2 GiB).
extern "C" fn get_required_mask(_dev: *mut bindings::device) -> u64 {
    0xffff_ffff
}

/// `dma_map_ops.max_mapping_size`.
extern "C" fn max_mapping_size(_dev: *mut bindings::device) -> usize {
    MAX_MAPPING_SIZE
}
