// SPDX-License-Identifier: GPL-2.0

//! One queue of the vHBA: its completion ring in coherent memory, the
//! stream position in its submission window, flow control, the per-tag
//! state that makes completions from the device trustworthy, the
//! completion work and the queue restart after a timeout.
//!
//! # Flow control (no register read on the data path)
//!
//! * submission units: at most `sq_size` written and not taken, counted
//!   from `sq_head`, which only completions report;
//! * commands: at most `cq_size` submitted whose completion is not
//!   consumed (`outstanding`): the device can never overwrite a
//!   completion not yet read. A request ended by a restart still counts
//!   until the restart resets the ring.
//!
//! Both refuse with `Busy`; blk-mq runs the queue again when a request
//! ends (or after 3 ms).
//!
//! # Command ids
//!
//! `cid = tag | generation << 8`, the generation a per-tag counter bumped
//! at each submission. A completion is accepted only if its tag is in
//! flight here with that generation: a stale, duplicated or invented cid
//! ends nothing (counted and logged). The blk-mq tag set checks again
//! (started and issued) before ending anything.
//!
//! # Posting and batching
//!
//! A command's units are built whole and appended to the queue's batch
//! (up to a window's worth, 2 KiB), and the command is committed (counted
//! in flight). The batch is posted with the non-sleeping `Mmio::post`,
//! under the queue's lock so that units go out in stream order, when
//! blk-mq says the request is the last for now (`is_last`) or in
//! `commit_rqs`: the commands of one dispatch share MWrs (four 64-byte
//! units per 256-byte MWr). A batch that wraps the 32-unit window takes
//! two posts. `EAGAIN` (the link is backlogged) keeps what was not sent
//! in the batch; the completion work (queued at once, requeued while
//! backlogged) posts it, and a command that does not fit in the batch is
//! answered `Busy` (nothing of it committed).
//!
//! # Restart
//!
//! After a timeout ([`Queue::restart`]): Q_CONTROL 0, then a read of
//! Q_STATUS, whose completion is ordered behind every write the device
//! sent before, so no completion or READ data of the old commands can
//! land afterwards; every command in flight on the queue ends (the timed
//! out one with `BLK_STS_TIMEOUT`, the others with an I/O error), the
//! ring is cleared and the queue programmed and enabled again. Tags are
//! reused only after that: the device cannot complete an old command
//! under a new request. The completion work and the restart exclude each
//! other with the queue's mutex.

use crate::{hw::Hw, layout::*, Vhba};
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::{
    blk_device::{QueueRqError, Status, TagSet},
    device,
    dma_coherent::CoherentBuffer,
    impl_has_work, new_mutex, new_spinlock, new_spinlock_bh,
    prelude::*,
    spinlock_bh::SpinLockBh,
    sync::{Arc, Mutex, SpinLock},
    workqueue::{self, Work, WorkItem},
};

/// Entries of each completion ring (and tags of each hardware queue).
pub(crate) const CQ_SIZE: u32 = 128;
/// Submission units at most (the window's 32 slots are independent).
pub(crate) const SQ_SIZE_MAX: u32 = 128;
/// Bytes of the batch: a window's worth.
const BATCH_BYTES: usize = SQ_WINDOW_LEN as usize;
/// Units of the longest command: the entry and ⌈(64 − 2) / 4⌉ = 16.
pub(crate) const MAX_UNITS: usize =
    1 + (MAX_SEGMENTS as usize - INLINE_SEGMENTS).div_ceil(SEGS_PER_UNIT);
/// Bytes of the longest command.
pub(crate) const MAX_RECORD: usize = MAX_UNITS * SQE_LEN;
/// Interrupt moderation: 8 completions or 20 µs.
const ITR_COUNT: u32 = 8;
const ITR_USECS: u32 = 20;
/// Completions handled per lock hold in the completion work.
const BATCH: usize = 32;
/// Tags (and so per-tag state) per queue: the cid has 8 bits of tag.
const TAGS: usize = 256;

/// Where a queue is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// Commands go in.
    Running,
    /// Being restarted: `queue_rq` answers `Busy`.
    Restarting,
    /// The function is gone or the queue could not be enabled again:
    /// `queue_rq` fails requests.
    Dead,
}

/// The ring state, under the queue's lock.
struct Ring {
    cq: CoherentBuffer,
    sq_size: u32,
    /// Units written since enable.
    submitted: u32,
    /// Units the device took (from completions).
    sq_head: u32,
    /// Completions consumed since enable.
    cq_head: u32,
    /// Commands submitted and their completion not consumed.
    outstanding: u32,
    /// Tags in flight on the device.
    busy: [bool; TAGS],
    /// The generation of each tag's last submission.
    generation: [u8; TAGS],
    /// Committed units not posted yet: `batch[batch_off..batch_len]`,
    /// the last units before `submitted`.
    batch: [u8; BATCH_BYTES],
    batch_off: usize,
    batch_len: usize,
    state: State,
}

/// Counters of what the device did wrong and the driver worked around.
#[derive(Default)]
pub(crate) struct QueueStats {
    /// Completions with a cid not in flight, or a wrong queue number.
    pub(crate) bad_completions: AtomicU64,
    /// Restarts after timeouts.
    pub(crate) restarts: AtomicU64,
    /// `EAGAIN` from the posted write.
    pub(crate) post_retries: AtomicU64,
}

/// A queue of the function.
#[pin_data]
pub(crate) struct Queue {
    index: u32,
    hw: Arc<Hw>,
    vector: u32,
    #[pin]
    ring: SpinLockBh<Ring>,
    /// Held by the completion work and the restart.
    #[pin]
    serial: Mutex<()>,
    /// The tag set, once made, until `remove` breaks the reference cycle
    /// (the set holds the driver object, which holds the queues).
    #[pin]
    set: SpinLock<Option<Arc<TagSet<Vhba>>>>,
    #[pin]
    work: Work<Queue>,
    pub(crate) stats: QueueStats,
}

impl_has_work! {
    impl HasWork<Self> for Queue { self.work }
}

impl WorkItem for Queue {
    type Pointer = Arc<Queue>;

    fn run(this: Arc<Queue>) {
        this.poll();
    }
}

impl Queue {
    /// A queue with a zeroed completion ring of [`CQ_SIZE`] entries and
    /// `sq_size` submission units; not programmed yet.
    pub(crate) fn new(
        dev: &device::Device,
        hw: Arc<Hw>,
        index: u32,
        vector: u32,
        sq_size: u32,
    ) -> Result<Arc<Self>> {
        let mut cq = CoherentBuffer::alloc(dev, CQ_SIZE as usize * CQE_LEN, GFP_KERNEL)?;
        if cq.dma_handle() % CQE_LEN as u64 != 0 {
            return Err(EINVAL);
        }
        cq.write(0, &[0u8; CQ_SIZE as usize * CQE_LEN])?;
        let ring = Ring {
            cq,
            sq_size,
            submitted: 0,
            sq_head: 0,
            cq_head: 0,
            outstanding: 0,
            busy: [false; TAGS],
            generation: [0; TAGS],
            batch: [0; BATCH_BYTES],
            batch_off: 0,
            batch_len: 0,
            state: State::Running,
        };
        Arc::pin_init(
            pin_init!(Queue {
                index,
                hw,
                vector,
                ring <- new_spinlock_bh!(ring, "pcieoe_vhba::Queue::ring"),
                serial <- new_mutex!((), "pcieoe_vhba::Queue::serial"),
                set <- new_spinlock!(None, "pcieoe_vhba::Queue::set"),
                work <- kernel::new_work!("pcieoe_vhba::Queue::work"),
                stats: QueueStats::default(),
            }),
            GFP_KERNEL,
        )
    }

    /// Gives the queue the tag set it completes requests on, or takes it
    /// back (`None`, in `remove`: breaks the reference cycle).
    pub(crate) fn set_tag_set(&self, set: Option<Arc<TagSet<Vhba>>>) {
        let old = core::mem::replace(&mut *self.set.lock(), set);
        drop(old);
    }

    /// Queues the completion work (any context, hard interrupts
    /// included). The interrupt handler's only job.
    pub(crate) fn schedule(self: &Arc<Self>) {
        // Already queued: that run sees the new completions too.
        let _ = workqueue::system_highpri().enqueue(self.clone());
    }

    /// Waits until the completion work is idle (queued before the call).
    pub(crate) fn flush(&self) {
        kernel::work_ext::flush(self);
    }

    /// Programs the queue's registers and enables it; process context.
    pub(crate) fn program(&self) -> Result {
        let hw = &*self.hw;
        let q = self.index;
        let (addr, sq_size) = {
            let r = self.ring.lock();
            (r.cq.dma_handle(), r.sq_size)
        };
        hw.write64(queue_reg(q, Q_CQ_ADDR_LO), addr)?;
        hw.write32(queue_reg(q, Q_CQ_SIZE), CQ_SIZE)?;
        hw.write32(queue_reg(q, Q_SQ_SIZE), sq_size)?;
        hw.write32(queue_reg(q, Q_IRQ_VECTOR), self.vector)?;
        hw.write32(queue_reg(q, Q_ITR_USECS), ITR_USECS)?;
        hw.write32(queue_reg(q, Q_ITR_COUNT), ITR_COUNT)?;
        hw.write32(queue_reg(q, Q_CONTROL), QCTRL_ENABLE)?;
        // Not the data path: the read tells whether the enable was taken.
        let status = hw.read32(queue_reg(q, Q_STATUS))?;
        if status & QSTATUS_ENABLED == 0 || status & QSTATUS_STREAM_ERROR != 0 {
            hw.log_refusal(q, status);
            return Err(EIO);
        }
        hw.write32(queue_reg(q, Q_IRQ_ARM), 1)
    }

    /// Posts the batch. Ring lock held.
    ///
    /// # Errors
    ///
    /// `EAGAIN`: the rest stays in the batch. Anything else (`ENODEV`
    /// also while the session is down, which may come back): the rest is
    /// dropped; its commands time out and the restart clears the stream,
    /// or finds the function gone and fails the queue.
    fn flush_batch(&self, r: &mut Ring) -> Result {
        let window = sq_window(self.index);
        while r.batch_off < r.batch_len && r.batch_len <= BATCH_BYTES {
            let left = r.batch_len - r.batch_off;
            let start = r.submitted.wrapping_sub((left / SQE_LEN) as u32);
            let slot = start % SQ_WINDOW_SLOTS;
            let chunk = ((SQ_WINDOW_SLOTS - slot) as usize * SQE_LEN).min(left);
            let bytes = &r.batch[r.batch_off..r.batch_off + chunk];
            match self.hw.post(window + slot * SQE_LEN as u32, bytes) {
                Ok(()) => r.batch_off += chunk,
                Err(e) => {
                    if e == EAGAIN {
                        self.stats.post_retries.fetch_add(1, Ordering::Relaxed);
                        return Err(e);
                    }
                    r.batch_off = 0;
                    r.batch_len = 0;
                    return Err(e);
                }
            }
        }
        r.batch_off = 0;
        r.batch_len = 0;
        Ok(())
    }

    /// Posts the batch; if the link is backlogged, the completion work
    /// posts the rest. Ring lock held.
    fn flush_or_defer(self: &Arc<Self>, r: &mut Ring) {
        if r.batch_len != 0 && self.flush_batch(r).err() == Some(EAGAIN) {
            self.schedule();
        }
    }

    /// The end of a dispatch (`commit_rqs`): posts the batch.
    pub(crate) fn commit(self: &Arc<Self>) {
        self.flush_or_defer(&mut self.ring.lock());
    }

    /// Submits the command in `record` (its first `units` units; the cid
    /// field is filled here) for request tag `tag`; posts the batch if
    /// `is_last`.
    pub(crate) fn submit(
        self: &Arc<Self>,
        record: &mut [u8; MAX_RECORD],
        units: u32,
        tag: u32,
        is_last: bool,
    ) -> Result<(), QueueRqError> {
        let len = units as usize * SQE_LEN;
        let t = tag as usize;
        if units == 0 || len > MAX_RECORD || t >= TAGS {
            return Err(QueueRqError::IoError);
        }
        let mut r = self.ring.lock();
        let result = self.submit_locked(&mut r, record, units, t);
        // An error ends the dispatch as well as `is_last` does.
        if is_last || result.is_err() {
            self.flush_or_defer(&mut r);
        }
        result
    }

    fn submit_locked(
        self: &Arc<Self>,
        r: &mut Ring,
        record: &mut [u8; MAX_RECORD],
        units: u32,
        t: usize,
    ) -> Result<(), QueueRqError> {
        match r.state {
            State::Running => {}
            State::Restarting => return Err(QueueRqError::Busy),
            State::Dead => return Err(QueueRqError::IoError),
        }
        if r.busy[t] {
            // blk-mq never reuses a tag before the request ended, and the
            // driver ends one only after clearing `busy`.
            kernel::pr_warn_ratelimited!(
                "{}: queue {}: tag {} submitted while in flight\n",
                self.hw.name(),
                self.index,
                t
            );
            return Err(QueueRqError::IoError);
        }
        let in_ring = r.submitted.wrapping_sub(r.sq_head);
        if r.outstanding >= CQ_SIZE || in_ring.saturating_add(units) > r.sq_size {
            return Err(QueueRqError::Busy);
        }
        let len = units as usize * SQE_LEN;
        if r.batch_len + len > BATCH_BYTES {
            match self.flush_batch(r) {
                Ok(()) => {}
                Err(e) if e == EAGAIN => {
                    self.schedule();
                    return Err(QueueRqError::Busy);
                }
                Err(_) => return Err(QueueRqError::IoError),
            }
        }
        let generation = r.generation[t].wrapping_add(1);
        let cid = (t as u16) | (u16::from(generation) << 8);
        record[2..4].copy_from_slice(&cid.to_le_bytes());
        let at = r.batch_len;
        let (Some(dst), Some(src)) = (r.batch.get_mut(at..at + len), record.get(..len)) else {
            return Err(QueueRqError::IoError);
        };
        dst.copy_from_slice(src);
        // Committed: the units go out with the batch.
        r.batch_len += len;
        r.generation[t] = generation;
        r.busy[t] = true;
        r.outstanding += 1;
        r.submitted = r.submitted.wrapping_add(units);
        Ok(())
    }

    /// The completion work: posts what is left of the batch, consumes completions by
    /// phase, ends their requests, re-arms the interrupt.
    fn poll(self: &Arc<Self>) {
        let Some(set) = self.set.lock().clone() else {
            // Not started yet, or being removed: nothing to end.
            return;
        };
        let guard = self.serial.lock();
        let mut retry = false;
        loop {
            let mut done = [(0u32, Status::Ok); BATCH];
            let mut n = 0;
            {
                let mut r = self.ring.lock();
                if r.state == State::Dead {
                    break;
                }
                if r.batch_len != 0 && self.flush_batch(&mut r).err() == Some(EAGAIN) {
                    retry = true;
                }
                while n < BATCH {
                    let Some((tag, status)) = self.next_completion(&mut r) else {
                        break;
                    };
                    if let Some(tag) = tag {
                        done[n] = (tag, status);
                        n += 1;
                    }
                }
            }
            for &(tag, status) in &done[..n] {
                if set.complete_tag(self.index, tag, status).is_err() {
                    self.stats.bad_completions.fetch_add(1, Ordering::Relaxed);
                    kernel::pr_warn_ratelimited!(
                        "{}: queue {}: completion of tag {} with no request\n",
                        self.hw.name(),
                        self.index,
                        tag
                    );
                }
            }
            if n < BATCH {
                break;
            }
        }
        drop(guard);
        // Process context: the sleeping write is fine (and never fails
        // with EAGAIN).
        let _ = self.hw.write32(queue_reg(self.index, Q_IRQ_ARM), 1);
        if retry && !self.hw.is_gone() {
            self.schedule();
        }
    }

    /// Takes the next completion from the ring, if the device wrote one:
    /// `Some((Some(tag), status))` for a command in flight here,
    /// `Some((None, _))` for a bad one (counted), `None` when the ring is
    /// empty.
    fn next_completion(&self, r: &mut Ring) -> Option<(Option<u32>, Status)> {
        let at = (r.cq_head & (CQ_SIZE - 1)) as usize * CQE_LEN;
        let mut b = [0u8; CQE_LEN];
        r.cq.read(at, &mut b).ok()?;
        let c = Completion::decode(&b);
        if c.flags & CQF_PHASE != Completion::phase_of(r.cq_head, CQ_SIZE) {
            return None;
        }
        r.cq_head = r.cq_head.wrapping_add(1);
        r.outstanding = r.outstanding.saturating_sub(1);
        // sq_head only moves forward, and never past what was written.
        let ahead = c.sq_head.wrapping_sub(r.sq_head);
        if ahead as i32 > 0 && ahead <= r.submitted.wrapping_sub(r.sq_head) {
            r.sq_head = c.sq_head;
        }
        let t = usize::from(c.cid & 0xff);
        let generation = (c.cid >> 8) as u8;
        if u32::from(c.queue) != self.index || !r.busy[t] || r.generation[t] != generation {
            self.stats.bad_completions.fetch_add(1, Ordering::Relaxed);
            kernel::pr_warn_ratelimited!(
                "{}: queue {}: bad completion: cid {:#06x}, queue {}, status {}\n",
                self.hw.name(),
                self.index,
                c.cid,
                c.queue,
                c.status
            );
            return Some((None, Status::IoError));
        }
        r.busy[t] = false;
        let status = match c.status {
            STATUS_OK => Status::Ok,
            STATUS_NOT_SUPPORTED => Status::NotSupported,
            _ => Status::IoError,
        };
        if c.status != STATUS_OK {
            kernel::pr_warn_ratelimited!(
                "{}: queue {}: command {:#06x} failed with status {}\n",
                self.hw.name(),
                self.index,
                c.cid,
                c.status
            );
        }
        Some((Some(t as u32), status))
    }

    /// Takes every in-flight tag out of the ring state and resets it to
    /// an empty, disabled queue with `state`. Ring lock held.
    fn drain(r: &mut Ring, state: State) -> [bool; TAGS] {
        let busy = r.busy;
        r.busy = [false; TAGS];
        r.submitted = 0;
        r.sq_head = 0;
        r.cq_head = 0;
        r.outstanding = 0;
        r.batch_off = 0;
        r.batch_len = 0;
        r.state = state;
        let _ = r.cq.write(0, &[0u8; CQ_SIZE as usize * CQE_LEN]);
        busy
    }

    /// Ends every tag in `busy`: `timed_out` with `BLK_STS_TIMEOUT`, the
    /// others with an I/O error.
    fn fail(&self, set: &TagSet<Vhba>, busy: &[bool; TAGS], timed_out: Option<u32>) {
        for (tag, _) in busy.iter().enumerate().filter(|(_, b)| **b) {
            let tag = tag as u32;
            let status = if Some(tag) == timed_out {
                Status::Timeout
            } else {
                Status::IoError
            };
            let _ = set.complete_tag(self.index, tag, status);
        }
    }

    /// Restarts the queue after request `timed_out` timed out (see the
    /// module documentation). Process context; sleeps.
    pub(crate) fn restart(&self, set: &TagSet<Vhba>, timed_out: u32) {
        let _guard = self.serial.lock();
        {
            let mut r = self.ring.lock();
            if r.state != State::Running {
                return;
            }
            r.state = State::Restarting;
        }
        self.stats.restarts.fetch_add(1, Ordering::Relaxed);
        pr_warn!(
            "{}: queue {}: command timed out (tag {}): restarting the queue\n",
            self.hw.name(),
            self.index,
            timed_out
        );
        let q = self.index;
        // The read's completion comes after every write the device sent
        // before it: nothing of the old commands lands afterwards.
        let stopped = self
            .hw
            .write32(queue_reg(q, Q_CONTROL), 0)
            .and_then(|()| self.hw.read32(queue_reg(q, Q_STATUS)));
        let busy = {
            let mut r = self.ring.lock();
            let state = if stopped.is_ok() {
                State::Restarting
            } else {
                State::Dead
            };
            Self::drain(&mut r, state)
        };
        self.fail(set, &busy, Some(timed_out));
        if stopped.is_err() {
            return;
        }
        let state = match self.program() {
            Ok(()) => State::Running,
            Err(e) => {
                pr_err!(
                    "{}: queue {}: cannot enable it again ({:?}): its requests fail\n",
                    self.hw.name(),
                    q,
                    e
                );
                State::Dead
            }
        };
        self.ring.lock().state = state;
    }

    /// Marks the queue dead and fails every request in flight on it (the
    /// function is gone, or is being removed): nothing waits for a device
    /// that cannot answer.
    pub(crate) fn kill(&self, set: &TagSet<Vhba>) {
        let _guard = self.serial.lock();
        let busy = Self::drain(&mut self.ring.lock(), State::Dead);
        self.fail(set, &busy, None);
    }
}
