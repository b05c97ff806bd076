// SPDX-License-Identifier: GPL-2.0

//! pcieoe_vhba: host driver of the pcieoe virtual HBA
//! (`Documentation/vhba.rst`).
//!
//! It binds the vHBA functions (vendor 0xe0e0, device 0x0003) that a
//! device interface assigned to this host and registers one blk-mq disk
//! per present LUN, `vhd<n>` (`n` counts disks registered since the module
//! loaded, never reused; partitions are `vhd<n>p<m>`). The register
//! layout is the shared specification `layout.rs`.
//!
//! Files: [`hw`] (BAR0 access, identity, LUN information), [`queue`]
//! (a queue: submission, flow control, completions, restart),
//! [`status`] (the status block, read with the LUN changes it reports
//! by a work item on the misc vector). The blk-mq side is
//! `kernel::blk_device`.
//!
//! # Queues and vectors
//!
//! One blk-mq hardware context per function queue, sharing one tag set
//! (the tag, below [`queue::CQ_SIZE`], is the low byte of the command id).
//! Queue `q` uses MSI-X vector `q`; status-block events the last vector,
//! which no queue shares: a function with four queues is driven with
//! three. A queue's handler only queues its completion work (the posted
//! write that re-arms it cannot be made in a hard interrupt); the work
//! ends the requests and re-arms.
//!
//! # Lifetimes
//!
//! `remove` first checks whether the function is still there (one
//! register read); if not, every queue is marked dead and its requests
//! fail at once. Then the disks are deleted (waiting for what is in
//! flight), whatever is left fails, the device is disabled, the handlers,
//! works and vectors go, Bus Master Enable is cleared, and the memory is
//! freed.

use kernel::prelude::*;

// The shared specification, public (as pcieoe_test includes the engine)
// so that what this driver does not use is not dead code.
#[path = "layout.rs"]
pub mod layout;

#[path = "../common/bar0.rs"]
mod bar0;
mod hw;
mod queue;
mod status;

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use hw::{Hw, LunInfo};
use kernel::{
    blk_device::{
        Disk, DiskOptions, Op, Operations, QueueRqError, Request, Status, TagSet, TimeoutAction,
    },
    c_str, fmt, impl_has_work, irq, new_mutex, new_work,
    pci_driver::{self, Device, DeviceId},
    pci_host::{Mmio, Vectors},
    str::{CStr, CString},
    sync::{Arc, Mutex},
    workqueue::{self, Work, WorkItem},
};
use layout::*;
use queue::{Queue, CQ_SIZE, MAX_RECORD, SQ_SIZE_MAX};

module! {
    type: PcieoeVhba,
    name: "pcieoe_vhba",
    author: "pcieoe developers",
    description: "PCI Express over Ethernet: virtual HBA host driver",
    license: "GPL",
}

/// The pcieoe vendor ID (`pcieoe::fabric::VENDOR_ID`).
const VENDOR_ID: u16 = 0xe0e0;
/// Device ID of the vHBA function (`pcieoe_dev/config.rs`).
const VHBA_DEVICE_ID: u16 = 0x0003;
/// The vector of status-block events; queues use the ones below it.
const MISC_VECTOR_INDEX: u32 = MSIX_VECTORS as u32 - 1;

/// The number of the next disk (`vhd<n>`).
static NEXT_DISK: AtomicU32 = AtomicU32::new(0);

/// The driver's object: what the blk-mq callbacks reach.
pub(crate) struct Vhba {
    hw: Arc<Hw>,
    queues: KVec<Arc<Queue>>,
    /// Every LUN below LUN_COUNT, by number (invalid ones get no disk).
    luns: KVec<LunInfo>,
    features: u32,
    max_transfer: u32,
    /// Segments per command this driver sends at most.
    max_segments: u32,
    /// The function is gone or being removed: requests fail.
    dead: AtomicBool,
}

impl Vhba {
    /// The block range of a request, in the LUN's blocks: `(lba, blocks)`.
    fn range(rq: &Request, info: &LunInfo) -> Result<(u64, u32), QueueRqError> {
        let shift = info.block_shift();
        let per_block = shift.checked_sub(9).ok_or(QueueRqError::IoError)?;
        let sector = rq.sector();
        let bytes = rq.bytes();
        let mask = info.block_size - 1;
        if bytes == 0 || bytes & mask != 0 || sector & ((1u64 << per_block) - 1) != 0 {
            return Err(QueueRqError::IoError);
        }
        Ok((sector >> per_block, bytes >> shift))
    }

    /// Builds the command for `rq` into `record`; returns its units.
    fn build(
        &self,
        set: &TagSet<Vhba>,
        rq: &Request,
        lun: u8,
        info: &LunInfo,
        record: &mut [u8; MAX_RECORD],
    ) -> Result<u32, QueueRqError> {
        let mut e = SubmissionEntry {
            lun,
            ..SubmissionEntry::default()
        };
        match rq.op() {
            op @ (Op::Read | Op::Write) => {
                let (lba, blocks) = Self::range(rq, info)?;
                if rq.bytes() > self.max_transfer {
                    return Err(QueueRqError::IoError);
                }
                e.opcode = if op == Op::Read {
                    Opcode::Read
                } else {
                    Opcode::Write
                };
                if op == Op::Write && rq.fua() {
                    e.flags |= SQF_FUA;
                }
                e.lba = lba;
                e.blocks = blocks;
                let segs = rq.map_data(set).map_err(|_| QueueRqError::IoError)?;
                let count = segs.segments();
                if count > self.max_segments {
                    return Err(QueueRqError::IoError);
                }
                let mut total = 0u64;
                for (i, (addr, len)) in segs.enumerate() {
                    let seg = Segment { addr, len };
                    total += u64::from(len);
                    if let Some(s) = e.segs.get_mut(i) {
                        *s = seg;
                    } else {
                        let at = SQE_LEN + (i - INLINE_SEGMENTS) * SEG_LEN;
                        let dst = record
                            .get_mut(at..at + SEG_LEN)
                            .ok_or(QueueRqError::IoError)?;
                        dst.copy_from_slice(&seg.encode());
                    }
                }
                if total != u64::from(rq.bytes()) {
                    return Err(QueueRqError::IoError);
                }
                e.nsegs = count as u16;
                if count as usize > INLINE_SEGMENTS {
                    e.flags |= SQF_SEG_FOLLOW;
                }
            }
            Op::Flush => e.opcode = Opcode::Flush,
            op @ (Op::Discard | Op::WriteZeroes) => {
                let (lba, blocks) = Self::range(rq, info)?;
                e.lba = lba;
                e.blocks = blocks;
                e.opcode = if op == Op::Discard {
                    Opcode::Discard
                } else {
                    Opcode::WriteZeroes
                };
            }
            Op::Other(_) => return Err(QueueRqError::NotSupported),
        }
        record[..SQE_LEN].copy_from_slice(&e.encode());
        Ok(e.units())
    }
}

impl Operations for Vhba {
    fn queue_rq(
        &self,
        set: &TagSet<Self>,
        hctx: u32,
        rq: &Request,
        is_last: bool,
    ) -> Result<(), QueueRqError> {
        if self.dead.load(Ordering::Relaxed) {
            return Err(QueueRqError::IoError);
        }
        let queue = self
            .queues
            .get(hctx as usize)
            .ok_or(QueueRqError::IoError)?;
        let lun = rq.disk_data();
        let info = self.luns.get(lun).ok_or(QueueRqError::IoError)?;
        let mut record = [0u8; MAX_RECORD];
        let units = match self.build(set, rq, lun as u8, info, &mut record) {
            Ok(units) => units,
            Err(e) => {
                // The dispatch may end here: post what is batched.
                queue.commit();
                return Err(e);
            }
        };
        queue.submit(&mut record, units, rq.tag(), is_last)
    }

    fn commit_rqs(&self, _set: &TagSet<Self>, hctx: u32) {
        if let Some(queue) = self.queues.get(hctx as usize) {
            queue.commit();
        }
    }

    fn timeout(&self, set: &TagSet<Self>, rq: &Request) -> TimeoutAction {
        if !rq.is_issued() {
            // Ending already.
            return TimeoutAction::Done;
        }
        if let Some(queue) = self.queues.get(rq.hctx() as usize) {
            queue.restart(set, rq.tag());
        }
        // Ended by the restart, or (dead queue, or not on the device) here:
        // a timeout is an error, never a hang.
        set.end_request(rq, Status::Timeout);
        TimeoutAction::Done
    }
}

/// A queue's interrupt handler: queues its completion work.
struct QueueIrq {
    queue: Arc<Queue>,
}

impl irq::Handler for QueueIrq {
    fn handle(&self) -> irq::Return {
        self.queue.schedule();
        irq::Return::Handled
    }
}

/// A LUN's disk and the LUN information it was last set up with.
struct LunDisk {
    lun: u32,
    info: LunInfo,
    disk: Disk<Vhba>,
}

/// The status block, the work that reads it, and the disks (whose
/// capacity and read-only state follow CAUSE_LUN).
#[pin_data]
struct Misc {
    hw: Arc<Hw>,
    #[pin]
    status: Mutex<status::Status>,
    #[pin]
    disks: Mutex<KVec<LunDisk>>,
    #[pin]
    work: Work<Misc>,
}

impl_has_work! {
    impl HasWork<Self> for Misc { self.work }
}

impl WorkItem for Misc {
    type Pointer = Arc<Misc>;

    fn run(this: Arc<Misc>) {
        let Some(block) = this.status.lock().refresh() else {
            return;
        };
        if block.causes & CAUSE_ERROR != 0 {
            kernel::pr_warn_ratelimited!(
                "{}: programming errors: {}, last: {} at BAR0+{:#x}\n",
                this.hw.name(),
                block.prog_errors,
                hw::error_name(block.last_error & 0xffff),
                block.last_error >> 16
            );
        }
        if block.causes & CAUSE_LUN != 0 {
            this.update_luns();
        }
    }
}

impl Misc {
    /// Reads the LUN information again and applies what can change under
    /// a disk: its capacity and read-only state. Other changes (block
    /// size, a LUN gone) are logged; the device refuses what no longer
    /// fits, as errors.
    fn update_luns(&self) {
        let hw = &*self.hw;
        for d in self.disks.lock().iter_mut() {
            let Ok(info) = hw.lun(d.lun) else {
                return;
            };
            if !info.is_valid()
                || info.block_size != d.info.block_size
                || info.phys_block != d.info.phys_block
            {
                pr_warn!(
                    "{}: LUN {}: now flags {:#x}, block size {} / {}: not applied (rebind)\n",
                    hw.name(),
                    d.lun,
                    info.flags,
                    info.block_size,
                    info.phys_block
                );
                continue;
            }
            if info.blocks != d.info.blocks {
                let per_block = u64::from(info.block_size >> 9).max(1);
                let sectors = info.blocks.checked_mul(per_block).unwrap_or(0);
                pr_info!(
                    "{}: LUN {}: capacity {} -> {} blocks\n",
                    hw.name(),
                    d.lun,
                    d.info.blocks,
                    info.blocks
                );
                d.disk.set_capacity(sectors);
            }
            let ro = info.flags & LUNF_READ_ONLY != 0;
            if ro != (d.info.flags & LUNF_READ_ONLY != 0) {
                pr_info!(
                    "{}: LUN {}: now {}\n",
                    hw.name(),
                    d.lun,
                    if ro { "read-only" } else { "writable" }
                );
                d.disk.set_read_only(ro);
            }
            d.info = info;
        }
    }
}

/// The misc vector's handler: queues the status work.
struct MiscIrq {
    misc: Arc<Misc>,
}

impl irq::Handler for MiscIrq {
    fn handle(&self) -> irq::Return {
        let _ = workqueue::system().enqueue(self.misc.clone());
        irq::Return::Handled
    }
}

/// What `probe` leaves with a bound function (every part optional so that
/// a failed probe tears down what it made with the same code).
struct Bound {
    set: Option<Arc<TagSet<Vhba>>>,
    handlers: KVec<irq::Registration<QueueIrq>>,
    misc_handler: Option<irq::Registration<MiscIrq>>,
    vectors: Option<Vectors>,
    misc: Arc<Misc>,
    vhba: Arc<Vhba>,
}

impl Bound {
    /// Takes everything down, in order (see the module documentation).
    fn teardown(mut self, dev: &Device) {
        let hw = self.vhba.hw.clone();
        let present = !hw.is_gone() && hw.read32(REG_MAGIC).is_ok_and(|m| m == MAGIC_VALUE);
        if !present {
            self.kill();
        }
        // Waits for the requests in flight (they complete, or fail above).
        let disks = core::mem::take(&mut *self.misc.disks.lock());
        drop(disks);
        self.kill();
        let _ = hw.write32(REG_CONTROL, 0);
        drop(core::mem::take(&mut self.handlers));
        drop(self.misc_handler.take());
        for q in self.vhba.queues.iter() {
            q.flush();
            q.set_tag_set(None);
        }
        kernel::work_ext::flush(&*self.misc);
        drop(self.vectors.take());
        dev.clear_master();
        // The last references: the tag set, then the queues' memory.
        drop(self.set.take());
    }

    /// Fails every request and refuses new ones.
    fn kill(&self) {
        self.vhba.dead.store(true, Ordering::Relaxed);
        if let Some(set) = self.set.as_ref() {
            for q in self.vhba.queues.iter() {
                q.kill(set);
            }
        }
    }
}

struct VhbaDriver;

impl pci_driver::Driver for VhbaDriver {
    type Data = Bound;
    const NAME: &'static CStr = c_str!("pcieoe_vhba");
    const ID_TABLE: &'static [DeviceId] = &[DeviceId::new(VENDOR_ID, VHBA_DEVICE_ID)];

    fn probe(dev: &Device, _id: &DeviceId) -> Result<Pin<KBox<Bound>>> {
        let Some(mmio) = Mmio::of(dev) else {
            pr_err!(
                "{}: not a pcieoe function (not on a pcieoe_host bus)\n",
                dev.name()
            );
            return Err(ENODEV);
        };
        dev.enable_device().inspect_err(|e| {
            pr_err!("{}: cannot enable the device: {:?}\n", dev.name(), e);
        })?;
        dev.set_master();
        let bound = bind(dev, mmio);
        if bound.is_err() {
            dev.clear_master();
            dev.disable_device();
        }
        bound
    }

    fn remove(dev: &Device, data: Pin<KBox<Bound>>) {
        KBox::into_inner(Pin::into_inner(data)).teardown(dev);
        dev.disable_device();
        pr_info!("{}: unbound\n", dev.name());
    }
}

/// The queues to drive, with their SQ_SIZE: as many as the function has,
/// but for the misc vector, and only those the DI has memory for.
fn queue_sizes(hw: &Hw, queues: u32) -> Result<KVec<u32>> {
    let mut sizes = KVec::new();
    for q in 0..queues.min(MISC_VECTOR_INDEX) {
        let sq_max = hw.read32(queue_reg(q, Q_SQ_MAX))?;
        let most = sq_max.min(SQ_SIZE_MAX).min(CQ_SIZE);
        if most < 2 {
            pr_warn!(
                "{}: queue {} has no submission ring (SQ_MAX {}): {} queues used\n",
                hw.name(),
                q,
                sq_max,
                sizes.len()
            );
            break;
        }
        // The largest power of two at most `most`.
        sizes.push(1u32 << (31 - most.leading_zeros()), GFP_KERNEL)?;
    }
    if sizes.is_empty() {
        pr_err!("{}: no usable queue\n", hw.name());
        return Err(ENODEV);
    }
    Ok(sizes)
}

/// The rest of `probe`, once the device is enabled.
fn bind(dev: &Device, mmio: Mmio) -> Result<Pin<KBox<Bound>>> {
    let hw = Arc::new(
        Hw::new(mmio, CString::try_from_fmt(fmt!("{}", dev.name()))?),
        GFP_KERNEL,
    )?;
    let id = hw.identify()?;
    // A previous driver may have left it enabled.
    hw.write32(REG_CONTROL, CTRL_RESET)?;
    let sizes = queue_sizes(&hw, id.queues)?;
    let mut luns = KVec::with_capacity(id.luns as usize, GFP_KERNEL)?;
    for l in 0..id.luns {
        luns.push(hw.lun(l)?, GFP_KERNEL)?;
    }
    // The longest command must fit the smallest submission ring.
    let smallest = sizes.iter().copied().min().unwrap_or(2);
    let ring_segments = INLINE_SEGMENTS as u32 + (smallest - 1) * SEGS_PER_UNIT as u32;
    let max_segments = id
        .max_segments
        .min(MAX_SEGMENTS)
        .min(ring_segments)
        .min(kernel::blk_device::MAX_SEGMENTS);
    let max_transfer = id.max_transfer.min(MAX_TRANSFER);
    let status = status::Status::new(dev.as_dev())?;
    let misc_hw = hw.clone();
    let misc = Arc::pin_init(
        pin_init!(Misc {
            hw: misc_hw,
            status <- new_mutex!(status, "pcieoe_vhba::Misc::status"),
            disks <- new_mutex!(KVec::new(), "pcieoe_vhba::Misc::disks"),
            work <- new_work!("pcieoe_vhba::Misc::work"),
        }),
        GFP_KERNEL,
    )?;
    let status_addr = misc.status.lock().addr();
    let mut queues = KVec::with_capacity(sizes.len(), GFP_KERNEL)?;
    for (q, &sq_size) in sizes.iter().enumerate() {
        let q = q as u32;
        queues.push(
            Queue::new(dev.as_dev(), hw.clone(), q, q, sq_size)?,
            GFP_KERNEL,
        )?;
    }
    let vhba = Arc::new(
        Vhba {
            hw: hw.clone(),
            queues,
            luns,
            features: id.features,
            max_transfer,
            max_segments,
            dead: AtomicBool::new(false),
        },
        GFP_KERNEL,
    )?;
    let mut bound = Bound {
        set: None,
        handlers: KVec::new(),
        misc_handler: None,
        vectors: None,
        misc,
        vhba,
    };
    match start(dev, &mut bound, status_addr) {
        Ok(()) => {
            pr_info!(
                "{}: bound: version {}.{}, {} queues, {} disks, {} segments, {} KiB per command\n",
                dev.name(),
                id.version >> 16,
                id.version & 0xffff,
                bound.vhba.queues.len(),
                bound.misc.disks.lock().len(),
                max_segments,
                max_transfer >> 10
            );
            Ok(KBox::pin(bound, GFP_KERNEL)?)
        }
        Err(e) => {
            bound.teardown(dev);
            Err(e)
        }
    }
}

/// Vectors and handlers, programming, the tag set and the disks.
fn start(dev: &Device, b: &mut Bound, status_addr: u64) -> Result {
    let hw = b.vhba.hw.clone();
    let vectors = Vectors::alloc(dev, MSIX_VECTORS as u32).inspect_err(|e| {
        pr_err!("{}: cannot set up MSI-X vectors: {:?}\n", dev.name(), e);
    })?;
    let vectors = b.vectors.insert(vectors);
    for (q, queue) in b.vhba.queues.iter().enumerate() {
        let virq = vectors.irq(q).ok_or(EINVAL)?;
        let name = CString::try_from_fmt(fmt!("pcieoe_vhba-q{}@{}", q, dev.name()))?;
        let handler = Arc::new(
            QueueIrq {
                queue: queue.clone(),
            },
            GFP_KERNEL,
        )?;
        b.handlers
            .push(irq::Registration::new(virq, name, handler)?, GFP_KERNEL)?;
    }
    let virq = vectors.irq(MISC_VECTOR_INDEX as usize).ok_or(EINVAL)?;
    let name = CString::try_from_fmt(fmt!("pcieoe_vhba-misc@{}", dev.name()))?;
    let handler = Arc::new(
        MiscIrq {
            misc: b.misc.clone(),
        },
        GFP_KERNEL,
    )?;
    b.misc_handler = Some(irq::Registration::new(virq, name, handler)?);

    hw.write64(REG_STATUS_ADDR_LO, status_addr)?;
    hw.write32(REG_MISC_VECTOR, MISC_VECTOR_INDEX)?;
    for queue in b.vhba.queues.iter() {
        queue.program()?;
    }
    hw.write32(REG_CONTROL, CTRL_ENABLE)?;

    let set = TagSet::new(
        dev.as_dev(),
        b.vhba.queues.len() as u32,
        CQ_SIZE,
        b.vhba.max_segments,
        0,
        b.vhba.clone(),
    )?;
    for queue in b.vhba.queues.iter() {
        queue.set_tag_set(Some(set.clone()));
    }
    let set = b.set.insert(set).clone();
    let vhba = b.vhba.clone();
    for (lun, info) in vhba.luns.iter().enumerate() {
        if !info.is_valid() {
            if info.flags & LUNF_PRESENT != 0 {
                pr_warn!(
                    "{}: LUN {}: block size {} / {} unusable: no disk\n",
                    dev.name(),
                    lun,
                    info.block_size,
                    info.phys_block
                );
            }
            continue;
        }
        add_disk(dev, b, &set, lun, info)?;
    }
    Ok(())
}

/// Registers LUN `lun`'s disk.
fn add_disk(
    dev: &Device,
    b: &mut Bound,
    set: &Arc<TagSet<Vhba>>,
    lun: usize,
    info: &LunInfo,
) -> Result {
    let v = &b.vhba;
    // Sectors per block (the block size is 512 to 4096: `is_valid`).
    let per_block = u64::from(info.block_size >> 9).max(1);
    let to_sectors = |blocks: u32| -> u32 {
        let sectors = u64::from(blocks).saturating_mul(per_block);
        // A request's bytes are 32-bit: stay below 4 GiB, in whole blocks.
        let most = u64::from(u32::MAX >> 9) & !(per_block - 1);
        sectors.min(most) as u32
    };
    let discard = v.features & F_DISCARD != 0 && info.flags & LUNF_DISCARD != 0;
    let zeroes = v.features & F_WRITE_ZEROES != 0 && info.flags & LUNF_WRITE_ZEROES != 0;
    let cache = v.features & F_FLUSH_FUA != 0 && info.flags & LUNF_WRITE_CACHE != 0;
    let read_only = info.flags & LUNF_READ_ONLY != 0;
    let n = NEXT_DISK.fetch_add(1, Ordering::Relaxed);
    let cname = CString::try_from_fmt(fmt!("vhd{}", n))?;
    let name = cname.to_str().map_err(|_| EINVAL)?;
    let opts = DiskOptions {
        name,
        capacity_sectors: info.blocks.checked_mul(per_block).unwrap_or(0),
        logical_block_size: info.block_size,
        physical_block_size: info.phys_block,
        max_hw_sectors: v.max_transfer >> 9,
        max_segments: v.max_segments as u16,
        max_discard_sectors: if discard {
            to_sectors(info.max_discard)
        } else {
            0
        },
        max_write_zeroes_sectors: if zeroes {
            to_sectors(info.max_discard)
        } else {
            0
        },
        write_cache: cache,
        fua: cache,
        read_only,
        data: lun,
    };
    let disk = Disk::new(set, &opts, dev.as_dev(), &THIS_MODULE).inspect_err(|e| {
        pr_err!(
            "{}: LUN {}: cannot add disk {}: {:?}\n",
            dev.name(),
            lun,
            name,
            e
        );
    })?;
    pr_info!(
        "{}: LUN {}: {}: {} blocks of {} bytes{}{}{}{}\n",
        dev.name(),
        lun,
        name,
        info.blocks,
        info.block_size,
        if read_only { ", read-only" } else { "" },
        if cache { ", write cache" } else { "" },
        if discard { ", discard" } else { "" },
        if zeroes { ", write zeroes" } else { "" }
    );
    b.misc.disks.lock().push(
        LunDisk {
            lun: lun as u32,
            info: *info,
            disk,
        },
        GFP_KERNEL,
    )?;
    Ok(())
}

struct PcieoeVhba {
    _driver: pci_driver::Registration<VhbaDriver>,
}

impl kernel::Module for PcieoeVhba {
    fn init(module: &'static ThisModule) -> Result<Self> {
        let driver = pci_driver::Registration::new(module)?;
        pr_info!("vHBA driver loaded\n");
        Ok(PcieoeVhba { _driver: driver })
    }
}

impl Drop for PcieoeVhba {
    fn drop(&mut self) {
        pr_info!("vHBA driver unloaded\n");
    }
}
