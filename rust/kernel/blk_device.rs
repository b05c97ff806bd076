// SPDX-License-Identifier: GPL-2.0

//! Block devices driven by a blk-mq tag set: what a storage host driver
//! needs and 6.12's minimal `block::mq` lacks (data access and DMA
//! mapping of requests, timeouts, completion by tag from the driver's own
//! context, queue limits).
//!
//! C headers: [`include/linux/blk-mq.h`](srctree/include/linux/blk-mq.h),
//! [`include/linux/blkdev.h`](srctree/include/linux/blkdev.h)
//!
//! * [`TagSet`] is a `blk_mq_tag_set` with one hardware context per
//!   hardware queue of the device, shared by every [`Disk`] of the driver,
//!   and the driver's object (an [`Operations`] implementation) that its
//!   callbacks reach. It lives in an [`Arc`]; each disk holds a reference,
//!   so the set outlives its request queues.
//! * [`Operations::queue_rq`] receives a started [`Request`]; the driver
//!   reads what it needs (operation, sector, bytes, tag, FUA), maps its
//!   data for DMA ([`Request::map_data`]) and hands it to the device.
//! * The driver ends a request by its tag ([`TagSet::complete_tag`]), in
//!   any context that may end requests (process, softirq). The tag comes
//!   from the device, so it is checked: the hardware context and tag must
//!   exist, the request be started, and *issued*: a per-request flag set
//!   when `queue_rq` accepted it and cleared by the one call that ends
//!   it. A stale, duplicate or invented tag ends nothing and is reported
//!   as [`Stale`]. The request's DMA mapping is undone before it ends.
//! * [`Operations::timeout`] decides what a request that timed out
//!   becomes: the driver may end it (and others) with
//!   [`TagSet::end_request`] and return [`TimeoutAction::Done`].
//! * [`Disk`] is a gendisk on the tag set, with its queue limits, added
//!   under a parent device; dropping it deletes it.
//!
//! A request whose `queue_rq` returned an error is not issued, and its
//! mapping is undone by the abstraction: `Err` means the device was given
//! nothing.
//!
//! # Examples
//!
//! ```
//! use kernel::blk_device::{Operations, QueueRqError, Request, TagSet, TimeoutAction};
//!
//! struct Null;
//!
//! impl Operations for Null {
//!     fn queue_rq(
//!         &self,
//!         _set: &TagSet<Self>,
//!         _hctx: u32,
//!         _rq: &Request,
//!         _is_last: bool,
//!     ) -> Result<(), QueueRqError> {
//!         // A driver would hand the request to its device here, and call
//!         // `TagSet::complete_tag` when the device says it is done.
//!         Err(QueueRqError::NotSupported)
//!     }
//!
//!     fn timeout(&self, _set: &TagSet<Self>, _rq: &Request) -> TimeoutAction {
//!         TimeoutAction::ResetTimer
//!     }
//! }
//! ```

use crate::{
    alloc::{flags::GFP_KERNEL, KBox},
    bindings,
    device::Device,
    error::{code::*, from_err_ptr, to_result, Result},
    ffi::c_void,
    sync::Arc,
    types::{ARef, Opaque},
    ThisModule,
};
use core::{
    ptr::NonNull,
    sync::atomic::{AtomicBool, AtomicU32, Ordering},
};

/// `BLK_STS_OK` and the other `blk_status_t` values this module uses
/// (`include/linux/blk_types.h`; `__force` casts bindgen cannot read).
const BLK_STS_OK: bindings::blk_status_t = 0;
const BLK_STS_NOTSUPP: bindings::blk_status_t = 1;
const BLK_STS_TIMEOUT: bindings::blk_status_t = 2;
const BLK_STS_RESOURCE: bindings::blk_status_t = 9;
const BLK_STS_IOERR: bindings::blk_status_t = 10;

/// `BLK_FEAT_WRITE_CACHE` and `BLK_FEAT_FUA` (`include/linux/blkdev.h`).
const BLK_FEAT_WRITE_CACHE: bindings::blk_features_t = 1 << 0;
const BLK_FEAT_FUA: bindings::blk_features_t = 1 << 1;

/// `REQ_OP_*` (`include/linux/blk_types.h`).
const REQ_OP_READ: u32 = 0;
const REQ_OP_WRITE: u32 = 1;
const REQ_OP_FLUSH: u32 = 2;
const REQ_OP_DISCARD: u32 = 3;
const REQ_OP_WRITE_ZEROES: u32 = 9;

/// The most data segments [`TagSet::new`] accepts per request (the
/// scatterlist of each request is preallocated in its driver data).
pub const MAX_SEGMENTS: u32 = 256;

/// How a request ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Success (`BLK_STS_OK`).
    Ok,
    /// An I/O error (`BLK_STS_IOERR`).
    IoError,
    /// The operation is not supported (`BLK_STS_NOTSUPP`).
    NotSupported,
    /// The request timed out (`BLK_STS_TIMEOUT`).
    Timeout,
}

impl Status {
    fn raw(self) -> bindings::blk_status_t {
        match self {
            Status::Ok => BLK_STS_OK,
            Status::IoError => BLK_STS_IOERR,
            Status::NotSupported => BLK_STS_NOTSUPP,
            Status::Timeout => BLK_STS_TIMEOUT,
        }
    }
}

/// Why [`Operations::queue_rq`] did not issue a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueRqError {
    /// No room now (`BLK_STS_RESOURCE`): blk-mq keeps the request and
    /// runs the queue again when a request ends, or after a short delay.
    Busy,
    /// The request fails with an I/O error.
    IoError,
    /// The request fails as not supported.
    NotSupported,
}

/// What becomes of a request that timed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeoutAction {
    /// Wait another timeout period (`BLK_EH_RESET_TIMER`).
    ResetTimer,
    /// The driver ended it, or will (`BLK_EH_DONE`).
    Done,
}

/// A request's operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `REQ_OP_READ`.
    Read,
    /// `REQ_OP_WRITE`.
    Write,
    /// `REQ_OP_FLUSH`.
    Flush,
    /// `REQ_OP_DISCARD`.
    Discard,
    /// `REQ_OP_WRITE_ZEROES`.
    WriteZeroes,
    /// Anything else (the raw `REQ_OP_*`).
    Other(u32),
}

/// [`TagSet::complete_tag`] found no issued request for the tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stale;

/// A blk-mq driver's callbacks. The implementing type is the driver's
/// object that [`TagSet`] holds.
pub trait Operations: Send + Sync + Sized + 'static {
    /// Issues `rq` (started) on hardware context `hctx`; `is_last` is
    /// whether blk-mq has no more requests for this context now (else
    /// [`Operations::commit_rqs`] follows the batch). Runs in process
    /// context with preemption possibly disabled: must not sleep.
    ///
    /// `Err` means nothing was given to the device; the abstraction
    /// undoes [`Request::map_data`].
    fn queue_rq(
        &self,
        set: &TagSet<Self>,
        hctx: u32,
        rq: &Request,
        is_last: bool,
    ) -> Result<(), QueueRqError>;

    /// The end of a batch whose last `queue_rq` did not have `is_last`.
    fn commit_rqs(&self, _set: &TagSet<Self>, _hctx: u32) {}

    /// `rq` timed out. Process context (a work item): may sleep.
    fn timeout(&self, set: &TagSet<Self>, rq: &Request) -> TimeoutAction;
}

/// The driver data of each request (`cmd_size`): the issued flag, the
/// DMA mapping, then [`TagSet`]'s `max_segments` scatterlist entries.
///
/// `nents` and `mapped` are only changed by the request's owner (its
/// `queue_rq`, or whoever cleared `issued`); atomics keep shared access
/// sound.
#[repr(C)]
struct Pdu {
    issued: AtomicBool,
    /// Entries of the scatterlist filled by `blk_rq_map_sg` (0: not mapped).
    nents: AtomicU32,
    /// Entries `dma_map_sg` returned.
    mapped: AtomicU32,
    /// The `dma_data_direction` of the mapping.
    dir: AtomicU32,
}

// The scatterlist after the `Pdu` stays 8-byte aligned.
const _: () = assert!(core::mem::size_of::<Pdu>() % 8 == 0);

/// A blk-mq request, as the callbacks and [`TagSet::end_request`] see it.
///
/// # Invariants
///
/// The request belongs to a [`TagSet`]'s request pool (its driver data is
/// a [`Pdu`] followed by the set's scatterlist), and is valid for the
/// lifetime of the reference.
#[repr(transparent)]
pub struct Request(Opaque<bindings::request>);

impl Request {
    /// # Safety
    ///
    /// `ptr` is a request of a [`TagSet`]'s pool (see the type
    /// invariants), valid for `'a`.
    unsafe fn from_raw<'a>(ptr: *mut bindings::request) -> &'a Self {
        // SAFETY: `Request` is a transparent wrapper; validity is the
        // caller's.
        unsafe { &*ptr.cast::<Self>() }
    }

    fn as_raw(&self) -> *mut bindings::request {
        self.0.get()
    }

    fn pdu(&self) -> &Pdu {
        // SAFETY: The driver data of a request of a `TagSet` is a `Pdu`
        // (type invariants), initialised by `init_request`, as long as the
        // request is.
        unsafe { &*bindings::blk_mq_rq_to_pdu(self.as_raw()).cast::<Pdu>() }
    }

    /// The scatterlist after the [`Pdu`].
    fn sg(&self) -> *mut bindings::scatterlist {
        // SAFETY: `cmd_size` leaves room for the scatterlist after the
        // `Pdu` (see `TagSet::new`); the offset keeps it 8-byte aligned
        // (the driver data follows the pointer-aligned `struct request`).
        unsafe {
            bindings::blk_mq_rq_to_pdu(self.as_raw())
                .cast::<u8>()
                .add(core::mem::size_of::<Pdu>())
                .cast()
        }
    }

    /// The operation.
    pub fn op(&self) -> Op {
        // SAFETY: The request is valid (type invariants).
        match unsafe { bindings::pcieoe_rq_op(self.as_raw()) } {
            REQ_OP_READ => Op::Read,
            REQ_OP_WRITE => Op::Write,
            REQ_OP_FLUSH => Op::Flush,
            REQ_OP_DISCARD => Op::Discard,
            REQ_OP_WRITE_ZEROES => Op::WriteZeroes,
            v => Op::Other(v),
        }
    }

    /// Whether `REQ_FUA` is set.
    pub fn fua(&self) -> bool {
        // SAFETY: The request is valid (type invariants).
        unsafe { bindings::pcieoe_rq_fua(self.as_raw()) }
    }

    /// The first sector (512 bytes).
    pub fn sector(&self) -> u64 {
        // SAFETY: The request is valid (type invariants).
        unsafe { bindings::blk_rq_pos(self.as_raw()) }
    }

    /// Bytes left to transfer (for DISCARD and WRITE_ZEROES, the range).
    pub fn bytes(&self) -> u32 {
        // SAFETY: The request is valid (type invariants).
        unsafe { bindings::blk_rq_bytes(self.as_raw()) }
    }

    /// The tag: unique among the started requests of its hardware context.
    pub fn tag(&self) -> u32 {
        // SAFETY: The request is valid (type invariants); `tag` is an int.
        let tag = unsafe { (*self.as_raw()).tag };
        u32::try_from(tag).unwrap_or(u32::MAX)
    }

    /// The index of its hardware context.
    pub fn hctx(&self) -> u32 {
        // SAFETY: The request is valid; a request handed to a driver is
        // on a hardware context, which lives as long as its queue.
        unsafe {
            let hctx = (*self.as_raw()).mq_hctx;
            if hctx.is_null() {
                u32::MAX
            } else {
                (*hctx).queue_num
            }
        }
    }

    /// The value the request's [`Disk`] was created with
    /// ([`DiskOptions::data`]).
    pub fn disk_data(&self) -> usize {
        // SAFETY: The request is valid and on its queue, which lives as
        // long as it.
        unsafe { (*(*self.as_raw()).q).queuedata as usize }
    }

    /// Whether the request is one of `set`'s.
    fn belongs_to<T: Operations>(&self, set: &TagSet<T>) -> bool {
        // SAFETY: The request is valid and on its queue, which lives as
        // long as it; the queue's `tag_set` does not change.
        core::ptr::eq(unsafe { (*(*self.as_raw()).q).tag_set }, set.set.get())
    }

    /// Whether the request is issued to the driver (and not yet ended).
    pub fn is_issued(&self) -> bool {
        self.pdu().issued.load(Ordering::Acquire)
    }

    /// Maps the request's data for DMA by the set's device (through its
    /// `dma_map_ops`: the pcieoe IOMMU for a pcieoe function) and returns
    /// the bus segments. Only from [`Operations::queue_rq`]; undone when
    /// the request ends, or when `queue_rq` returns an error.
    ///
    /// # Errors
    ///
    /// `EBUSY` if already mapped, `EINVAL` if the request is not one of
    /// `set`'s, or has more segments than the set's `max_segments` or
    /// none, `ENOMEM` if the mapping failed.
    pub fn map_data<T: Operations>(&self, set: &TagSet<T>) -> Result<DmaSegments<'_>> {
        if !self.belongs_to(set) {
            return Err(EINVAL);
        }
        let pdu = self.pdu();
        if pdu.nents.load(Ordering::Relaxed) != 0 {
            return Err(EBUSY);
        }
        // SAFETY: The request is valid (type invariants).
        let phys = unsafe { bindings::blk_rq_nr_phys_segments(self.as_raw()) };
        if phys == 0 || phys > set.max_segments {
            return Err(EINVAL);
        }
        let sg = self.sg();
        let dir = if self.op() == Op::Write {
            bindings::dma_data_direction_DMA_TO_DEVICE
        } else {
            bindings::dma_data_direction_DMA_FROM_DEVICE
        };
        // SAFETY: `sg` has room for `set.max_segments` entries (see
        // `TagSet::new`), which is at least `phys`; the request and its
        // queue are valid; `blk_rq_map_sg` fills at most
        // `blk_rq_nr_phys_segments` entries.
        let nents = unsafe {
            bindings::sg_init_table(sg, phys);
            bindings::blk_rq_map_sg((*self.as_raw()).q, self.as_raw(), sg)
        };
        let nents = u32::try_from(nents).map_err(|_| EINVAL)?;
        if nents == 0 || nents > phys {
            return Err(EINVAL);
        }
        // SAFETY: `sg` holds `nents` filled entries; the device is the
        // set's (alive as long as the set).
        let mapped =
            unsafe { bindings::dma_map_sg_attrs(set.dev.as_raw(), sg, nents as _, dir, 0) };
        let mapped = u32::try_from(mapped).unwrap_or(0);
        if mapped == 0 || mapped > nents {
            return Err(ENOMEM);
        }
        pdu.dir.store(dir, Ordering::Relaxed);
        pdu.mapped.store(mapped, Ordering::Relaxed);
        pdu.nents.store(nents, Ordering::Relaxed);
        Ok(DmaSegments {
            rq: self,
            next: 0,
            count: mapped,
        })
    }

    /// Undoes [`Request::map_data`], if mapped.
    fn unmap<T: Operations>(&self, set: &TagSet<T>) {
        let pdu = self.pdu();
        let nents = pdu.nents.swap(0, Ordering::Relaxed);
        if nents == 0 {
            return;
        }
        pdu.mapped.store(0, Ordering::Relaxed);
        // SAFETY: The scatterlist was mapped with these `nents` and
        // direction on the set's device (`map_data`), and is unmapped once
        // (`nents` was swapped to 0).
        unsafe {
            bindings::dma_unmap_sg_attrs(
                set.dev.as_raw(),
                self.sg(),
                nents as _,
                pdu.dir.load(Ordering::Relaxed),
                0,
            )
        };
    }
}

/// The DMA segments of a mapped request: `(bus address, bytes)`.
pub struct DmaSegments<'a> {
    rq: &'a Request,
    next: u32,
    count: u32,
}

impl DmaSegments<'_> {
    /// How many segments the mapping has.
    pub fn segments(&self) -> u32 {
        self.count
    }
}

impl Iterator for DmaSegments<'_> {
    type Item = (u64, u32);

    fn next(&mut self) -> Option<(u64, u32)> {
        if self.next >= self.count {
            return None;
        }
        // SAFETY: `next < count`, the entries `dma_map_sg` filled in the
        // request's (unchained) scatterlist, mapped while `rq` is borrowed
        // by its owner.
        let item = unsafe {
            let sg = self.rq.sg().add(self.next as usize);
            (
                bindings::pcieoe_sg_dma_address(sg),
                bindings::pcieoe_sg_dma_len(sg),
            )
        };
        self.next += 1;
        Some(item)
    }
}

/// The callbacks of `blk_mq_ops` for `T`.
struct OperationsVTable<T: Operations>(core::marker::PhantomData<T>);

impl<T: Operations> OperationsVTable<T> {
    const VTABLE: bindings::blk_mq_ops = bindings::blk_mq_ops {
        queue_rq: Some(Self::queue_rq),
        commit_rqs: Some(Self::commit_rqs),
        queue_rqs: None,
        get_budget: None,
        put_budget: None,
        set_rq_budget_token: None,
        get_rq_budget_token: None,
        timeout: Some(Self::timeout),
        poll: None,
        complete: None,
        init_hctx: None,
        exit_hctx: None,
        init_request: Some(Self::init_request),
        exit_request: None,
        cleanup_rq: None,
        busy: None,
        map_queues: None,
        #[cfg(CONFIG_BLK_DEBUG_FS)]
        show_rq: None,
    };

    /// The table, promoted to a static (this does not compile otherwise:
    /// blk-mq keeps the pointer).
    const fn build() -> &'static bindings::blk_mq_ops {
        &Self::VTABLE
    }

    /// # Safety
    ///
    /// `set` is the tag set of a [`TagSet<T>`] whose `driver_data` is set.
    unsafe fn set<'a>(set: *mut bindings::blk_mq_tag_set) -> &'a TagSet<T> {
        // SAFETY: `driver_data` points at the `TagSet<T>` (set in
        // `TagSet::new` before any queue exists), which outlives its
        // queues (each `Disk` holds a reference).
        unsafe { &*(*set).driver_data.cast::<TagSet<T>>() }
    }

    /// # Safety
    ///
    /// Called by blk-mq with a hardware context of a queue of a
    /// [`TagSet<T>`] and a request of its pool.
    unsafe extern "C" fn queue_rq(
        hctx: *mut bindings::blk_mq_hw_ctx,
        bd: *const bindings::blk_mq_queue_data,
    ) -> bindings::blk_status_t {
        // SAFETY: As the function's safety requirements say.
        let (set, rq, last, index) = unsafe {
            (
                Self::set((*(*hctx).queue).tag_set),
                Request::from_raw((*bd).rq),
                (*bd).last,
                (*hctx).queue_num,
            )
        };
        // SAFETY: `rq` is a request blk-mq hands to the driver to start.
        unsafe { bindings::blk_mq_start_request(rq.as_raw()) };
        // Issued before the driver gives it to the device: a completion
        // may come before `queue_rq` returns.
        rq.pdu().issued.store(true, Ordering::Release);
        match set.data.queue_rq(set, index, rq, last) {
            Ok(()) => BLK_STS_OK,
            Err(e) => {
                rq.pdu().issued.store(false, Ordering::Release);
                rq.unmap(set);
                match e {
                    QueueRqError::Busy => BLK_STS_RESOURCE,
                    QueueRqError::IoError => BLK_STS_IOERR,
                    QueueRqError::NotSupported => BLK_STS_NOTSUPP,
                }
            }
        }
    }

    /// # Safety
    ///
    /// Called by blk-mq with a hardware context of a [`TagSet<T>`] queue.
    unsafe extern "C" fn commit_rqs(hctx: *mut bindings::blk_mq_hw_ctx) {
        // SAFETY: As the function's safety requirements say.
        let (set, index) = unsafe { (Self::set((*(*hctx).queue).tag_set), (*hctx).queue_num) };
        set.data.commit_rqs(set, index);
    }

    /// # Safety
    ///
    /// Called by blk-mq with a started request of a [`TagSet<T>`] queue.
    unsafe extern "C" fn timeout(rq: *mut bindings::request) -> bindings::blk_eh_timer_return {
        // SAFETY: As the function's safety requirements say; blk-mq holds
        // a reference on the request during the call.
        let (set, rq) = unsafe { (Self::set((*(*rq).q).tag_set), Request::from_raw(rq)) };
        match set.data.timeout(set, rq) {
            TimeoutAction::ResetTimer => bindings::blk_eh_timer_return_BLK_EH_RESET_TIMER,
            TimeoutAction::Done => bindings::blk_eh_timer_return_BLK_EH_DONE,
        }
    }

    /// # Safety
    ///
    /// Called by blk-mq for each request of the pool, whose driver data
    /// is `cmd_size` bytes.
    unsafe extern "C" fn init_request(
        _set: *mut bindings::blk_mq_tag_set,
        rq: *mut bindings::request,
        _hctx_idx: crate::ffi::c_uint,
        _numa_node: crate::ffi::c_uint,
    ) -> crate::ffi::c_int {
        // SAFETY: The driver data is `cmd_size` bytes, at least a `Pdu`,
        // right after the pointer-aligned `struct request` (so aligned
        // for the `Pdu`'s 4 bytes), and not in use yet.
        unsafe {
            bindings::blk_mq_rq_to_pdu(rq).cast::<Pdu>().write(Pdu {
                issued: AtomicBool::new(false),
                nents: AtomicU32::new(0),
                mapped: AtomicU32::new(0),
                dir: AtomicU32::new(0),
            })
        };
        0
    }
}

/// A blk-mq tag set and the driver's object its callbacks reach.
///
/// # Invariants
///
/// `set` is an allocated `blk_mq_tag_set` (until `drop`) with the
/// [`OperationsVTable<T>`] callbacks, `cmd_size` for a [`Pdu`] and
/// `max_segments` scatterlist entries, and `driver_data` pointing at this
/// `TagSet` (which does not move: it is only handed out in an [`Arc`]).
pub struct TagSet<T: Operations> {
    set: KBox<Opaque<bindings::blk_mq_tag_set>>,
    data: Arc<T>,
    dev: ARef<Device>,
    max_segments: u32,
    hw_queues: u32,
}

// SAFETY: The tag set is shared with blk-mq, which synchronises its own
// use; `T` is `Send + Sync`; the other fields are immutable.
unsafe impl<T: Operations> Send for TagSet<T> {}
// SAFETY: As for `Send`: every method takes `&self` and is safe to call
// concurrently (blk-mq's calls are, and the issued flag is atomic).
unsafe impl<T: Operations> Sync for TagSet<T> {}

impl<T: Operations> TagSet<T> {
    /// Allocates a tag set of `hw_queues` hardware contexts with `depth`
    /// tags each, for requests of at most `max_segments` data segments
    /// mapped for DMA by `dev`; `timeout_ms` (0: blk-mq's 30 s) is the
    /// request timeout. May sleep.
    ///
    /// # Errors
    ///
    /// `EINVAL` for zero or too large values, and `blk_mq_alloc_tag_set`'s.
    pub fn new(
        dev: &Device,
        hw_queues: u32,
        depth: u32,
        max_segments: u32,
        timeout_ms: u32,
        data: Arc<T>,
    ) -> Result<Arc<Self>> {
        if hw_queues == 0 || depth == 0 || max_segments == 0 || max_segments > MAX_SEGMENTS {
            return Err(EINVAL);
        }
        let cmd_size = core::mem::size_of::<Pdu>()
            + max_segments as usize * core::mem::size_of::<bindings::scatterlist>();
        let set = KBox::new(Opaque::<bindings::blk_mq_tag_set>::uninit(), GFP_KERNEL)?;
        // SAFETY: `blk_mq_tag_set` holds integers, pointers and lists, all
        // of which may be zero before `blk_mq_alloc_tag_set`.
        let mut raw: bindings::blk_mq_tag_set = unsafe { core::mem::zeroed() };
        raw.ops = OperationsVTable::<T>::build();
        raw.nr_hw_queues = hw_queues;
        raw.queue_depth = depth;
        raw.cmd_size = cmd_size as u32;
        raw.numa_node = bindings::NUMA_NO_NODE;
        raw.timeout = if timeout_ms == 0 {
            0
        } else {
            // SAFETY: A pure conversion.
            unsafe { bindings::__msecs_to_jiffies(timeout_ms) as u32 }
        };
        raw.flags = bindings::BLK_MQ_F_SHOULD_MERGE;
        raw.nr_maps = 1;
        // SAFETY: `set` is a fresh, exclusively owned allocation.
        unsafe { set.get().write(raw) };
        // SAFETY: `set` is initialised above and does not move (boxed).
        to_result(unsafe { bindings::blk_mq_alloc_tag_set(set.get()) })?;
        let this = Arc::new(
            TagSet {
                set,
                data,
                dev: ARef::from(dev),
                max_segments,
                hw_queues,
            },
            GFP_KERNEL,
        )?;
        let ptr = core::ptr::from_ref::<TagSet<T>>(&this).cast_mut();
        // SAFETY: No queue uses the set yet, so nothing reads
        // `driver_data` concurrently; `ptr` stays valid as long as the
        // `Arc`, which each queue's `Disk` holds (INVARIANT).
        unsafe { (*this.set.get()).driver_data = ptr.cast::<c_void>() };
        Ok(this)
    }

    /// The driver's object.
    pub fn data(&self) -> &T {
        &self.data
    }

    /// The hardware contexts.
    pub fn hw_queues(&self) -> u32 {
        self.hw_queues
    }

    /// Ends the request with tag `tag` on hardware context `hctx` with
    /// `status`, if there is such a request and it is issued: unmaps its
    /// data, then `blk_mq_end_request`. Any context that may end requests
    /// (not hard interrupts).
    ///
    /// # Errors
    ///
    /// [`Stale`] if `hctx` or `tag` does not exist, or the request is
    /// not started or not issued (ended already): nothing happens.
    pub fn complete_tag(&self, hctx: u32, tag: u32, status: Status) -> Result<(), Stale> {
        if hctx >= self.hw_queues {
            return Err(Stale);
        }
        // SAFETY: The set is allocated (type invariants): `tags` has
        // `nr_hw_queues` entries (no shared tags), each allocated while
        // the set is; `blk_mq_tag_to_rq` checks the tag against
        // `nr_tags`, and the requests it returns are of the set's pools,
        // which stay allocated while a queue uses them.
        let rq = unsafe {
            let tags = *(*self.set.get()).tags.add(hctx as usize);
            if tags.is_null() {
                return Err(Stale);
            }
            bindings::blk_mq_tag_to_rq(tags, tag)
        };
        if rq.is_null() {
            return Err(Stale);
        }
        // SAFETY: A request of this set's pool (see above).
        let rq = unsafe { Request::from_raw(rq) };
        if rq.tag() != tag || rq.hctx() != hctx {
            return Err(Stale);
        }
        self.end_request(rq, status).then_some(()).ok_or(Stale)
    }

    /// Ends `rq` with `status` if it is one of this set's, started and
    /// issued; returns whether it did. Exactly one caller ends an issued
    /// request.
    pub fn end_request(&self, rq: &Request, status: Status) -> bool {
        if !rq.belongs_to(self) {
            return false;
        }
        // SAFETY: The request is valid (type invariants).
        if unsafe { bindings::blk_mq_request_started(rq.as_raw()) } == 0 {
            return false;
        }
        if !rq.pdu().issued.swap(false, Ordering::AcqRel) {
            return false;
        }
        rq.unmap(self);
        // SAFETY: The request is started and was issued; this caller
        // cleared `issued`, so it is the only one ending it.
        unsafe { bindings::blk_mq_end_request(rq.as_raw(), status.raw()) };
        true
    }
}

impl<T: Operations> Drop for TagSet<T> {
    fn drop(&mut self) {
        // SAFETY: Allocated (type invariants); no queue is left (each
        // `Disk` held a reference).
        unsafe { bindings::blk_mq_free_tag_set(self.set.get()) };
    }
}

/// What a [`Disk`] is made with.
pub struct DiskOptions<'a> {
    /// The disk's name (`/dev/<name>`), at most 31 bytes.
    pub name: &'a str,
    /// Capacity in 512-byte sectors.
    pub capacity_sectors: u64,
    /// Logical block size (a power of two, 512 to the page size).
    pub logical_block_size: u32,
    /// Physical block size.
    pub physical_block_size: u32,
    /// Largest request in sectors.
    pub max_hw_sectors: u32,
    /// Most segments of a request (at most the set's `max_segments`).
    pub max_segments: u16,
    /// Largest DISCARD in sectors (0: no discard).
    pub max_discard_sectors: u32,
    /// Largest WRITE_ZEROES in sectors (0: none).
    pub max_write_zeroes_sectors: u32,
    /// A volatile write cache: FLUSH requests are sent.
    pub write_cache: bool,
    /// FUA writes are sent (with `write_cache`).
    pub fua: bool,
    /// Read-only.
    pub read_only: bool,
    /// What [`Request::disk_data`] returns for the disk's requests.
    pub data: usize,
}

/// The file operations of every [`Disk`]: blk-mq does the work. Promoted
/// to a static of the kernel image (`&FOPS`), so that a disk still open
/// after its driver went never points at freed module memory. `owner` is
/// null, as upstream's `GenDisk` (no `THIS_MODULE` in a constant before
/// `const_refs_to_static`).
const FOPS: bindings::block_device_operations = bindings::block_device_operations {
    submit_bio: None,
    open: None,
    release: None,
    ioctl: None,
    compat_ioctl: None,
    check_events: None,
    unlock_native_capacity: None,
    getgeo: None,
    set_read_only: None,
    swap_slot_free_notify: None,
    free_disk: None,
    report_zones: None,
    devnode: None,
    alternative_gpt_sector: None,
    get_unique_id: None,
    owner: core::ptr::null_mut(),
    pr_ops: core::ptr::null_mut(),
    poll_bio: None,
};

/// [`FOPS`] as a `'static` reference (compiles only if promoted).
const fn fops() -> &'static bindings::block_device_operations {
    &FOPS
}

/// A gendisk on a [`TagSet`], added under a parent device; deleted when
/// dropped.
///
/// # Invariants
///
/// `disk` was allocated by `blk_mq_alloc_disk` on `set` and added with
/// `device_add_disk`; both are undone in `drop` only.
pub struct Disk<T: Operations> {
    disk: NonNull<bindings::gendisk>,
    _set: Arc<TagSet<T>>,
}

// SAFETY: The gendisk is used through the block core's own locking.
unsafe impl<T: Operations> Send for Disk<T> {}
// SAFETY: As for `Send`.
unsafe impl<T: Operations> Sync for Disk<T> {}

impl<T: Operations> Disk<T> {
    /// Allocates a disk on `set` with `opts` and adds it under `parent`:
    /// it may receive requests at once. `_module` is the driver's (kept
    /// for a later `owner`). Process context; sleeps.
    ///
    /// # Errors
    ///
    /// `EINVAL` for a name too long or limits the block core refuses,
    /// `ENOMEM`, and what `device_add_disk` returns.
    pub fn new(
        set: &Arc<TagSet<T>>,
        opts: &DiskOptions<'_>,
        parent: &Device,
        _module: &'static ThisModule,
    ) -> Result<Self> {
        if opts.name.len() >= 32 || u32::from(opts.max_segments) > set.max_segments {
            return Err(EINVAL);
        }
        // SAFETY: `queue_limits` holds integers; zero means "default".
        let mut lim: bindings::queue_limits = unsafe { core::mem::zeroed() };
        lim.logical_block_size = opts.logical_block_size;
        lim.physical_block_size = opts.physical_block_size;
        lim.io_min = opts.physical_block_size;
        lim.max_hw_sectors = opts.max_hw_sectors;
        lim.max_segments = opts.max_segments;
        lim.max_hw_discard_sectors = opts.max_discard_sectors;
        if opts.max_discard_sectors != 0 {
            lim.discard_granularity = opts.logical_block_size;
        }
        lim.max_write_zeroes_sectors = opts.max_write_zeroes_sectors;
        if opts.write_cache {
            lim.features |= BLK_FEAT_WRITE_CACHE;
            if opts.fua {
                lim.features |= BLK_FEAT_FUA;
            }
        }
        // SAFETY: The set is allocated (type invariants of `TagSet`);
        // `lim` is read during the call only.
        let disk = from_err_ptr(unsafe {
            bindings::blk_mq_alloc_disk(set.set.get(), &mut lim, opts.data as *mut c_void)
        })?;
        let disk = NonNull::new(disk).ok_or(ENOMEM)?;
        let raw = disk.as_ptr();
        // SAFETY: `raw` is a fresh gendisk that only we use until it is
        // added; the name fits (checked) with its NUL (the array is
        // zeroed by the allocation).
        unsafe {
            (*raw).fops = fops();
            (*raw).minors = 0;
            for (d, s) in (*raw).disk_name.iter_mut().zip(opts.name.bytes()) {
                *d = s as _;
            }
            bindings::set_capacity(raw, opts.capacity_sectors);
            bindings::set_disk_ro(raw, opts.read_only);
        }
        // SAFETY: `raw` is allocated, not added; `parent` is a live device.
        let r = to_result(unsafe {
            bindings::device_add_disk(parent.as_raw(), raw, core::ptr::null_mut())
        });
        if let Err(e) = r {
            // SAFETY: Allocated above, not added.
            unsafe { bindings::put_disk(raw) };
            return Err(e);
        }
        // INVARIANT: Allocated and added above.
        Ok(Self {
            disk,
            _set: set.clone(),
        })
    }

    /// Changes the capacity (sectors), and tells user space.
    pub fn set_capacity(&self, sectors: u64) {
        // SAFETY: The disk is added (type invariants); the call locks.
        unsafe { bindings::set_capacity_and_notify(self.disk.as_ptr(), sectors) };
    }

    /// Marks the disk read-only or writable.
    pub fn set_read_only(&self, read_only: bool) {
        // SAFETY: The disk is added (type invariants).
        unsafe { bindings::set_disk_ro(self.disk.as_ptr(), read_only) };
    }
}

impl<T: Operations> Drop for Disk<T> {
    fn drop(&mut self) {
        // SAFETY: Allocated and added (type invariants): deleted (which
        // waits for the requests in flight), then released once.
        unsafe {
            bindings::del_gendisk(self.disk.as_ptr());
            bindings::put_disk(self.disk.as_ptr());
        }
    }
}
