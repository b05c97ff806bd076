// SPDX-License-Identifier: GPL-2.0

//! A served vHBA: the engine's [`Vhba`] (registers, submission windows,
//! DMA, moderation, MSI-X; `rust/pcieoe/src/vhba.rs`) with the memory it
//! runs in, and the I/O workers that execute its commands on the LUNs'
//! backings (files or block devices, [`BackingFile`]).
//!
//! # Two sides, two contexts
//!
//! A [`VhbaState`] lives in the fabric's state, under its bottom-half
//! spinlock, like a [`VnicState`](crate::vnic::VnicState): the fabric
//! hands it memory requests, completions and timer expiries, and it runs
//! the engine, whose TLPs go to a `send` callback for the function's host.
//! Nothing on that side sleeps.
//!
//! The backings sleep, so they are used only by the vHBA's [`Worker`]s
//! (work items on the unbound system workqueue, [`WORKERS`] of them, so
//! that as many commands are in the backing at once). Each command goes:
//!
//! 1. [`VhbaState::run`] drains [`Vhba::next_backend`] into a queue of
//!    requests and queues the workers;
//! 2. a worker takes one under the lock ([`VhbaState::take`]), copying a
//!    WRITE's data from the slot's buffer into its own buffer;
//! 3. it executes it without any lock ([`Backings::execute`]);
//! 4. under the lock again ([`VhbaState::done`]) it copies a READ's data
//!    into the slot's buffer, calls [`Vhba::backend_done`] and runs the
//!    engine; the fabric's work then sends the TLPs to the host.
//!
//! The engine's buffers are never used outside the lock, so a vHBA can be
//! reset or unserved at any time: a worker that comes back and finds its
//! vHBA gone (or another one) drops its result. When a vHBA stops being
//! served, [`VhbaState::shutdown`] waits for its workers, then the
//! backings are closed.

use core::fmt;

use kernel::{
    backing_file::{is_not_supported, BackingFile},
    impl_has_work, new_mutex, new_work,
    prelude::*,
    str::{CStr, CString},
    sync::{Arc, Mutex},
    work_ext,
    workqueue::{self, Work, WorkItem},
};

use crate::fabric::Fabric;
use crate::pcieoe::{
    cfgspace::ConfigSpace,
    clock::Instant,
    testfn::{Mmio, MmioError},
    tlp::{Bdf, Tlp},
    vhba::{
        BackendOp, BackendRequest, Config, IoError, LunInfo, Reader, Slot, Storage, Vhba,
        MAX_SLOTS, READERS, SLOT_DATA_LEN, TLP_BUF_LEN,
    },
    vhba_layout::{MAX_LUNS, MAX_QUEUES, PHYS_BLOCK_MAX, RING_MAX, SQE_LEN, STATS_COUNT},
};

/// How long DMA reads (WRITE data, segment lists) may wait for
/// completions without any arriving before their commands fail with
/// DMA_ERROR: as for the vNIC.
pub(crate) const DMA_TIMEOUT_NS: u64 = crate::testfn::DMA_TIMEOUT_NS;

/// Command slots, each with a [`SLOT_DATA_LEN`] (128 KiB) buffer: 4 MiB
/// of data per vHBA, as `Documentation/vhba.rst` plans.
const SLOTS: usize = 32;
/// The submission ring of each queue: the largest SQ_SIZE (16 KiB).
const SQ_BYTES: usize = RING_MAX as usize * SQE_LEN;
/// Commands in the backings at once: one per worker, each with its own
/// 128 KiB buffer.
pub(crate) const WORKERS: usize = 4;
/// Commands a worker executes before it gives its thread back (it is
/// queued again if more wait).
const WORKER_BUDGET: usize = 64;
/// Most TLPs one [`VhbaState::run`] sends: a slot's READ data cut at 128
/// bytes for every slot, with room to spare. `poll` ends before.
const POLL_BUDGET: usize = SLOTS * (SLOT_DATA_LEN / 128) + 256;

/// The LUNs of a vHBA function (`lun0` .. `lun3` in configfs).
pub(crate) const CONFIG_LUNS: usize = 4;

/// One LUN as configured: a path and whether it is read only.
pub(crate) struct LunPath {
    /// A regular file or a block device of the DI.
    pub(crate) path: CString,
    /// Opened read only; the host sees READ_ONLY.
    pub(crate) read_only: bool,
}

/// An opened LUN.
struct Lun {
    file: BackingFile,
    info: LunInfo,
}

/// The backings of a served vHBA, shared by its workers; and the way back
/// to the fabric, until the vHBA stops being served.
#[pin_data]
pub(crate) struct Backings {
    luns: KVec<Lun>,
    /// Cleared by [`VhbaState::shutdown`]: it is also a reference cycle
    /// (fabric, served vHBA, backings, fabric) that only that breaks.
    #[pin]
    fabric: Mutex<Option<Arc<Fabric>>>,
}

impl Backings {
    /// Opens the LUNs (process context; sleeps).
    ///
    /// # Errors
    ///
    /// The first LUN's open error (named in the log), `EINVAL` for a
    /// backing whose block sizes the vHBA cannot serve, `ENOMEM`.
    fn open(fabric: Arc<Fabric>, name: &CStr, paths: &[Option<LunPath>]) -> Result<Arc<Self>> {
        let mut luns = KVec::with_capacity(paths.len(), GFP_KERNEL)?;
        for (n, p) in paths.iter().enumerate() {
            // configfs makes them contiguous from lun0.
            let Some(p) = p else { break };
            let file = BackingFile::open(&p.path, p.read_only).inspect_err(|e| {
                pr_warn!(
                    "function {}: lun{} {}: cannot open: {:?}\n",
                    name,
                    n,
                    &*p.path,
                    e
                );
            })?;
            let info = lun_info(&file, p.read_only);
            if !info.is_valid() {
                pr_warn!(
                    "function {}: lun{} {}: block sizes {}/{} not served\n",
                    name,
                    n,
                    &*p.path,
                    info.block_size,
                    info.physical_block_size
                );
                return Err(EINVAL);
            }
            luns.push(Lun { file, info }, GFP_KERNEL)?;
        }
        Arc::pin_init(
            pin_init!(Backings {
                luns,
                fabric <- new_mutex!(Some(fabric)),
            }),
            GFP_KERNEL,
        )
    }

    fn fabric(&self) -> Option<Arc<Fabric>> {
        self.fabric.lock().clone()
    }

    /// Executes `req` on its LUN's backing, the data in `buf` (process
    /// context, no lock held; sleeps).
    fn execute(&self, req: &BackendRequest, buf: &mut [u8]) -> Result<(), IoError> {
        let lun = self.luns.get(usize::from(req.lun)).ok_or(IoError::Io)?;
        let f = &lun.file;
        let bs = u64::from(lun.info.block_size);
        // The engine checked the range against the LUN's capacity; the
        // products cannot overflow for a capacity taken from a size in
        // bytes, but are checked all the same.
        let range = |lba: u64, blocks: u32| -> Result<(u64, u64), IoError> {
            let pos = lba.checked_mul(bs).ok_or(IoError::Io)?;
            Ok((pos, u64::from(blocks) * bs))
        };
        let r = match req.op {
            BackendOp::Read { lba, blocks } => {
                let (pos, _) = range(lba, blocks)?;
                let data = buf.get_mut(..req.bytes).ok_or(IoError::Io)?;
                f.read_at(data, pos)
            }
            BackendOp::Write { lba, blocks } => {
                let (pos, len) = range(lba, blocks)?;
                let data = buf.get(..req.bytes).ok_or(IoError::Io)?;
                f.write_at(data, pos).and_then(|()| {
                    // FUA: durable before the completion. Buffered I/O
                    // makes the page cache a volatile write cache.
                    if req.fua {
                        f.sync_range(pos, len)
                    } else {
                        Ok(())
                    }
                })
            }
            BackendOp::Flush => f.sync_range(0, 0),
            BackendOp::Discard { lba, blocks } => {
                let (pos, len) = range(lba, blocks)?;
                f.punch_hole(pos, len)
            }
            BackendOp::WriteZeroes { lba, blocks } => {
                let (pos, len) = range(lba, blocks)?;
                let r = match f.zero_range(pos, len) {
                    // A file system without zero ranges: zeros written.
                    Err(e) if is_not_supported(e) => write_zeros(f, buf, pos, len),
                    r => r,
                };
                r.and_then(|()| {
                    if req.fua {
                        f.sync_range(pos, len)
                    } else {
                        Ok(())
                    }
                })
            }
        };
        r.map_err(|e| {
            if is_not_supported(e) {
                IoError::NotSupported
            } else {
                IoError::Io
            }
        })
    }
}

/// Writes `len` zero bytes at `pos`, `buf` (zeroed here) at a time.
fn write_zeros(f: &BackingFile, buf: &mut [u8], pos: u64, len: u64) -> Result {
    buf.fill(0);
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        let chunk = buf.get(..n).ok_or(EINVAL)?;
        if chunk.is_empty() {
            return Err(EINVAL);
        }
        f.write_at(chunk, pos + done)?;
        done += n as u64;
    }
    Ok(())
}

/// What the host sees of `file`.
fn lun_info(file: &BackingFile, read_only: bool) -> LunInfo {
    let bs = file.logical_block_size();
    // A device may report a physical block above what the layout carries:
    // it is only a hint for alignment.
    let pbs = file.physical_block_size().clamp(bs, PHYS_BLOCK_MAX.max(bs));
    LunInfo {
        blocks: file.size() / u64::from(bs.max(1)),
        block_size: bs,
        physical_block_size: pbs,
        read_only,
        discard: !read_only && file.can_punch_hole(),
        write_zeroes: !read_only,
        // I/O goes through the page cache: a volatile cache that FLUSH
        // and FUA write back.
        write_cache: true,
    }
}

/// Checks that `paths` can be served: at least one LUN, contiguous from
/// lun0, each openable (process context; sleeps). For `enable`.
///
/// # Errors
///
/// `EINVAL` (named in the log), or a LUN's open error.
pub(crate) fn check(name: &CStr, paths: &[Option<LunPath>]) -> Result {
    let count = paths.iter().take_while(|p| p.is_some()).count();
    if count == 0 {
        pr_warn!("function {}: a vhba needs lun0 set before enable\n", name);
        return Err(EINVAL);
    }
    if let Some(n) = paths.iter().skip(count).position(|p| p.is_some()) {
        pr_warn!(
            "function {}: lun{} set but lun{} empty: LUNs are numbered from lun0 without gaps\n",
            name,
            count + n,
            count
        );
        return Err(EINVAL);
    }
    for (n, p) in paths.iter().flatten().enumerate() {
        BackingFile::check(&p.path, p.read_only).inspect_err(|e| {
            pr_warn!(
                "function {}: lun{} {}: cannot open: {:?}\n",
                name,
                n,
                &*p.path,
                e
            );
        })?;
    }
    Ok(())
}

/// One of a vHBA's I/O threads: a work item with a buffer of its own.
#[pin_data]
pub(crate) struct Worker {
    backings: Arc<Backings>,
    /// A command's data while it is in the backing. Only this worker
    /// takes the lock (a work item never runs twice at once).
    #[pin]
    buf: Mutex<KVVec<u8>>,
    #[pin]
    work: Work<Worker>,
}

impl_has_work! {
    impl HasWork<Self> for Worker { self.work }
}

impl WorkItem for Worker {
    type Pointer = Arc<Worker>;

    fn run(this: Arc<Worker>) {
        let Some(fabric) = this.backings.fabric() else {
            return;
        };
        let mut buf = this.buf.lock();
        for _ in 0..WORKER_BUDGET {
            let Some(req) = fabric.vhba_take(&this.backings, &mut buf) else {
                return;
            };
            let result = this.backings.execute(&req, &mut buf);
            fabric.vhba_done(&this.backings, &req, result, &buf);
        }
        drop(buf);
        // More may wait: the rest in another run, so that one busy vHBA
        // does not keep the thread. Already queued: that run takes them.
        let _ = workqueue::system_unbound().enqueue(this.clone());
    }
}

/// The engine's glue counters (besides its STATS).
#[derive(Default)]
struct Counters {
    reads: u64,
    writes: u64,
    flushes: u64,
    discards: u64,
    write_zeroes: u64,
    bytes_read: u64,
    bytes_written: u64,
    io_errors: u64,
    not_supported: u64,
    /// MRd answered UR / MWr dropped at the MMIO level.
    mmio_refused: u64,
    /// DMA reads given up by [`DMA_TIMEOUT_NS`].
    dma_timeouts: u64,
    /// Completions not taken by any DMA read.
    cpl_unmatched: u64,
}

/// A served vHBA's behaviour and memory.
pub(crate) struct VhbaState {
    vhba: KBox<Vhba>,
    sq: [KVVec<u8>; MAX_QUEUES],
    slots: KVVec<Slot>,
    data: KVVec<u8>,
    readers: KVec<Reader>,
    /// One TLP.
    buf: KVVec<u8>,
    /// Requests from `next_backend` not yet taken by a worker, oldest at
    /// `head`: at most one per slot.
    queue: [Option<BackendRequest>; MAX_SLOTS],
    head: usize,
    queued: usize,
    /// Requests with a worker.
    in_backing: usize,
    backings: Arc<Backings>,
    workers: KVec<Arc<Worker>>,
    /// Bus Master Enable was set at the last run.
    master: bool,
    /// DMA reads waited for completions after the last step, since when
    /// without progress (`CLOCK_MONOTONIC` ns).
    awaiting: bool,
    progress_at: u64,
    counters: Counters,
}

/// Builds the engine's view of the memory.
macro_rules! storage {
    ($s:expr) => {{
        let [q0, q1, q2, q3] = &mut $s.sq;
        Storage {
            sq: [&mut q0[..], &mut q1[..], &mut q2[..], &mut q3[..]],
            slots: &mut $s.slots[..],
            data: &mut $s.data[..],
            readers: &mut $s.readers[..],
        }
    }};
}

fn now_instant(now: u64) -> Instant {
    Instant::from_nanos(now)
}

impl VhbaState {
    /// A vHBA in its reset state with routing ID `id` (as its host sees
    /// it), `queues` queues, serving the LUNs at `paths` (opened here).
    /// Process context; sleeps.
    ///
    /// # Errors
    ///
    /// A LUN's open error, `EINVAL`, `ENOMEM`.
    pub(crate) fn new(
        fabric: Arc<Fabric>,
        name: &CStr,
        id: Bdf,
        queues: u32,
        paths: &[Option<LunPath>],
    ) -> Result<KBox<Self>> {
        let backings = Backings::open(fabric, name, paths)?;
        let mut cfg = Config {
            luns: [LunInfo::EMPTY; MAX_LUNS],
            lun_count: 0,
            queues: queues.clamp(1, MAX_QUEUES as u32),
        };
        for (slot, lun) in cfg.luns.iter_mut().zip(backings.luns.iter()) {
            *slot = lun.info;
            cfg.lun_count += 1;
        }
        if !cfg.is_valid() {
            return Err(EINVAL);
        }
        let mem = |q: u32| -> Result<KVVec<u8>> {
            if q < cfg.queues {
                Ok(KVVec::from_elem(0u8, SQ_BYTES, GFP_KERNEL)?)
            } else {
                Ok(KVVec::new())
            }
        };
        let sq = [mem(0)?, mem(1)?, mem(2)?, mem(3)?];
        let mut slots = KVVec::with_capacity(SLOTS, GFP_KERNEL)?;
        for _ in 0..SLOTS {
            slots.push(Slot::new(), GFP_KERNEL)?;
        }
        let mut readers = KVec::with_capacity(READERS, GFP_KERNEL)?;
        for _ in 0..READERS {
            readers.push(Reader::new(), GFP_KERNEL)?;
        }
        let mut workers = KVec::with_capacity(WORKERS, GFP_KERNEL)?;
        for _ in 0..WORKERS {
            let buf = KVVec::from_elem(0u8, SLOT_DATA_LEN, GFP_KERNEL)?;
            let b = backings.clone();
            let w = Arc::pin_init(
                pin_init!(Worker {
                    backings: b,
                    buf <- new_mutex!(buf),
                    work <- new_work!("pcieoe_dev_vhba_io"),
                }),
                GFP_KERNEL,
            )?;
            workers.push(w, GFP_KERNEL)?;
        }
        Ok(KBox::new(
            VhbaState {
                vhba: KBox::new(Vhba::new(id, &cfg), GFP_KERNEL)?,
                sq,
                slots,
                data: KVVec::from_elem(0u8, SLOTS * SLOT_DATA_LEN, GFP_KERNEL)?,
                readers,
                buf: KVVec::from_elem(0u8, TLP_BUF_LEN, GFP_KERNEL)?,
                queue: [None; MAX_SLOTS],
                head: 0,
                queued: 0,
                in_backing: 0,
                backings,
                workers,
                master: false,
                awaiting: false,
                progress_at: 0,
                counters: Counters::default(),
            },
            GFP_KERNEL,
        )?)
    }

    /// Whether `backings` are this vHBA's.
    pub(crate) fn owns(&self, backings: &Arc<Backings>) -> bool {
        Arc::ptr_eq(&self.backings, backings)
    }

    /// No longer served (taken out of the fabric's state): waits for the
    /// workers to finish the I/O in the backings, so that dropping it
    /// afterwards closes them. Process context; sleeps; no lock held.
    pub(crate) fn shutdown(&self) {
        drop(self.backings.fabric.lock().take());
        for w in self.workers.iter() {
            // A run that was inside its budget when the vHBA went may
            // have queued itself once more; that run finds nothing and
            // does not: the second flush waits for it.
            work_ext::flush(&**w);
            work_ext::flush(&**w);
        }
    }

    /// Its part of a line of the DI's debugfs `functions` file.
    pub(crate) fn show(&self, f: &mut impl fmt::Write) -> fmt::Result {
        let st: &[u64; STATS_COUNT] = self.vhba.stats();
        let names = [
            "reads",
            "read_bytes",
            "writes",
            "write_bytes",
            "flushes",
            "discards",
            "errors",
            "dma_errors",
        ];
        write!(f, " luns {}", self.backings.luns.len())?;
        for (name, value) in names.iter().zip(st.iter()) {
            write!(f, " {} {}", name, value)?;
        }
        let c = &self.counters;
        write!(
            f,
            " prog_errors {} mmio_refused {} dma_timeouts {} cpl_unmatched {} io_queued {} io_busy {} io_reads {} io_writes {} io_flushes {} io_discards {} io_write_zeroes {} io_bytes_read {} io_bytes_written {} io_errors {} io_not_supported {}",
            self.vhba.prog_errors(),
            c.mmio_refused,
            c.dma_timeouts,
            c.cpl_unmatched,
            self.queued,
            self.in_backing,
            c.reads,
            c.writes,
            c.flushes,
            c.discards,
            c.write_zeroes,
            c.bytes_read,
            c.bytes_written,
            c.io_errors,
            c.not_supported
        )
    }

    /// Serves an MRd or MWr of the host that hit BAR0, then runs the
    /// function.
    ///
    /// # Errors
    ///
    /// Those of [`Vhba::serve_mmio`]; nothing was sent.
    pub(crate) fn mmio(
        &mut self,
        req: &Tlp<'_>,
        cs: &ConfigSpace,
        now: u64,
        send: &mut impl FnMut(&[u8]),
    ) -> Result<Mmio, MmioError> {
        let mut mem = storage!(self);
        let r = self
            .vhba
            .serve_mmio(req, cs, &mut mem, &mut self.buf, send)?;
        if matches!(r, Mmio::Unsupported | Mmio::Dropped) {
            self.counters.mmio_refused += 1;
        }
        self.run(cs, now, send);
        Ok(r)
    }

    /// Offers a completion to the DMA reads, then runs the function.
    /// Returns whether a read took it.
    pub(crate) fn completion(
        &mut self,
        cpl: &Tlp<'_>,
        cs: &ConfigSpace,
        now: u64,
        send: &mut impl FnMut(&[u8]),
    ) -> bool {
        let mut mem = storage!(self);
        let taken = self.vhba.receive(cpl, &mut mem);
        if taken {
            self.progress_at = now;
        } else {
            self.counters.cpl_unmatched += 1;
        }
        self.run(cs, now, send);
        taken
    }

    /// Gives up on the DMA reads if they waited [`DMA_TIMEOUT_NS`]
    /// without progress (their commands fail with DMA_ERROR), then runs
    /// the function. Returns whether they timed out.
    pub(crate) fn expire(
        &mut self,
        cs: &ConfigSpace,
        now: u64,
        send: &mut impl FnMut(&[u8]),
    ) -> bool {
        let late = self.dma_deadline().is_some_and(|at| now >= at);
        if late {
            let mut mem = storage!(self);
            self.vhba.timeout(&mut mem);
            self.counters.dma_timeouts += 1;
            self.awaiting = false;
        }
        self.run(cs, now, send);
        late
    }

    /// When [`VhbaState::expire`] must run next: the DMA timeout or the
    /// moderation timer, `CLOCK_MONOTONIC` ns.
    pub(crate) fn deadline(&self) -> Option<u64> {
        let dma = self.dma_deadline();
        // Without Bus Master Enable nothing the moderation timer waits
        // for can be sent: no timer then (it would fire again and again).
        let moderation = self
            .vhba
            .poll_at()
            .filter(|_| self.master)
            .map(|t| t.as_nanos());
        match (dma, moderation) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn dma_deadline(&self) -> Option<u64> {
        self.awaiting
            .then(|| self.progress_at.saturating_add(DMA_TIMEOUT_NS))
    }

    /// Runs the function until it has nothing to send, then hands the
    /// commands ready for the backing to the workers.
    pub(crate) fn run(&mut self, cs: &ConfigSpace, now: u64, send: &mut impl FnMut(&[u8])) {
        self.master = cs.bus_master_enabled();
        let mut mem = storage!(self);
        let mut sent = 0;
        while let Some(n) = self
            .vhba
            .poll(now_instant(now), cs, &mut mem, &mut self.buf)
        {
            let Some(tlp) = self.buf.get(..n) else {
                break;
            };
            send(tlp);
            sent += 1;
            if sent >= POLL_BUDGET {
                // The rest goes out at the next step.
                break;
            }
        }
        let awaiting = self.vhba.awaiting_completions(&mem);
        if awaiting && !self.awaiting {
            self.progress_at = now;
        }
        self.awaiting = awaiting;
        let mut more = false;
        // Each request holds a slot until `backend_done`: the queue (one
        // entry per slot) cannot overflow.
        while self.queued < MAX_SLOTS {
            let Some(req) = self.vhba.next_backend(&mut mem) else {
                break;
            };
            let at = (self.head + self.queued) % MAX_SLOTS;
            if let Some(e) = self.queue.get_mut(at) {
                *e = Some(req);
                self.queued += 1;
                more = true;
            }
        }
        if more {
            // All of them: which are busy in a backing is not known, and
            // an idle one that finds nothing left costs one lock.
            for w in self.workers.iter() {
                // Already queued: that run takes requests too. The clone
                // given back is not the last reference.
                let _ = workqueue::system_unbound().enqueue(w.clone());
            }
        }
    }

    /// The oldest request for the backing, with a WRITE's data copied
    /// into `buf`. Under the fabric's lock (a worker).
    pub(crate) fn take(&mut self, buf: &mut [u8]) -> Option<BackendRequest> {
        while self.queued > 0 {
            let req = self.queue.get_mut(self.head).and_then(Option::take);
            self.head = (self.head + 1) % MAX_SLOTS;
            self.queued -= 1;
            let Some(req) = req else { continue };
            let mut mem = storage!(self);
            if matches!(req.op, BackendOp::Write { .. }) {
                let src = mem.buffer(req.slot).and_then(|b| b.get(..req.bytes));
                match (src, buf.get_mut(..req.bytes)) {
                    (Some(src), Some(dst)) => dst.copy_from_slice(src),
                    _ => {
                        // Cannot be (the engine's bytes fit its buffer,
                        // the same size as ours): the command fails.
                        self.counters.io_errors += 1;
                        self.vhba.backend_done(req.slot, Err(IoError::Io), &mut mem);
                        continue;
                    }
                }
            }
            self.in_backing += 1;
            return Some(req);
        }
        None
    }

    /// A worker executed `req`: a READ's data (in `buf`) goes into the
    /// slot's buffer, the command to the engine, which runs. Under the
    /// fabric's lock.
    pub(crate) fn done(
        &mut self,
        req: &BackendRequest,
        result: Result<(), IoError>,
        buf: &[u8],
        cs: &ConfigSpace,
        now: u64,
        send: &mut impl FnMut(&[u8]),
    ) {
        self.in_backing = self.in_backing.saturating_sub(1);
        let mut mem = storage!(self);
        let mut result = result;
        let c = &mut self.counters;
        match req.op {
            BackendOp::Read { .. } => {
                c.reads += 1;
                if result.is_ok() {
                    let dst = mem.buffer(req.slot).and_then(|b| b.get_mut(..req.bytes));
                    match (dst, buf.get(..req.bytes)) {
                        (Some(dst), Some(src)) => {
                            dst.copy_from_slice(src);
                            c.bytes_read += req.bytes as u64;
                        }
                        _ => result = Err(IoError::Io),
                    }
                }
            }
            BackendOp::Write { .. } => {
                c.writes += 1;
                if result.is_ok() {
                    c.bytes_written += req.bytes as u64;
                }
            }
            BackendOp::Flush => c.flushes += 1,
            BackendOp::Discard { .. } => c.discards += 1,
            BackendOp::WriteZeroes { .. } => c.write_zeroes += 1,
        }
        match result {
            Err(IoError::Io) => c.io_errors += 1,
            Err(IoError::NotSupported) => c.not_supported += 1,
            Ok(()) => {}
        }
        // False for a slot the engine no longer hands (cannot be: only
        // this path gives slots back).
        let _ = self.vhba.backend_done(req.slot, result, &mut mem);
        self.run(cs, now, send);
    }
}
