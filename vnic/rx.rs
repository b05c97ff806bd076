// SPDX-License-Identifier: GPL-2.0

//! The receive side of one queue pair: buffers, the completion ring, and
//! the posting of buffers through the RX window.
//!
//! Buffer `n` (the `n`th posted since enable) is slot `n % ring` of the
//! buffer memory, and its descriptor goes at RX window slot
//! `n % RX_WINDOW_SLOTS`. The device fills buffers in the order posted
//! and writes completion `n` at ring entry `n % ring` with a phase bit, so
//! the poll finds new completions without reading a register. A consumed
//! buffer is reposted at once (its slot is the one just freed: buffer
//! `consumed + ring` has the same slot), sixteen descriptors per 256-byte
//! write when possible; a post the link refuses (`EAGAIN`) leaves the
//! buffers free, to be posted by the next poll.
//!
//! Everything the device wrote is checked before use: the completion's
//! index and queue, and its length against the buffer's.

use crate::{hw::Hw, layout::*, nic::QueueStats};
use core::sync::atomic::Ordering;
use kernel::{device, dma_coherent::CoherentBuffer, net_device::NapiPoll, prelude::*};

/// Smallest RX buffer: a standard frame fits, whatever the MTU.
const BUF_MIN: u32 = 2048;
/// RX buffers are a multiple of this (a cache line).
const BUF_ALIGN: u32 = 64;
/// Buffer memory per queue pair to stay under (jumbo frames get a smaller
/// ring).
const RX_MEMORY: u32 = 1 << 20;
/// Smallest ring (four full window posts).
const RING_MIN: u32 = 64;
/// Size of one coherent allocation of buffers (order 4), so that no large
/// contiguous allocation is needed.
const CHUNK: u32 = 64 << 10;

/// Ring size and buffer length for an MTU.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub(crate) ring: u32,
    pub(crate) buf_len: u32,
}

impl Geometry {
    /// The geometry for frames of `mtu` (plus header and a VLAN tag).
    pub(crate) fn for_mtu(mtu: u32) -> Self {
        let frame = mtu.saturating_add(FRAME_OVERHEAD);
        let buf_len = frame
            .div_ceil(BUF_ALIGN)
            .saturating_mul(BUF_ALIGN)
            .max(BUF_MIN);
        let mut ring = RING_MAX;
        while ring > RING_MIN && ring.saturating_mul(buf_len) > RX_MEMORY {
            ring /= 2;
        }
        Self { ring, buf_len }
    }
}

/// The receive state of a queue pair while the device is up.
pub(crate) struct Rx {
    queue: u32,
    geometry: Geometry,
    /// The completion ring, `ring` entries.
    cq: CoherentBuffer,
    /// The buffers, `per_chunk` per allocation.
    chunks: KVec<CoherentBuffer>,
    per_chunk: u32,
    /// Completions consumed (and buffers freed) since enable.
    consumed: u32,
    /// Buffers posted since enable.
    posted: u32,
    /// A frame copied out of its buffer on its way into an skb (coherent
    /// memory is only reachable by copy).
    scratch: KVec<u8>,
}

/// Copies `out.len()` bytes of buffer `slot` into `out`.
fn read_buffer(
    chunks: &[CoherentBuffer],
    per_chunk: u32,
    buf_len: u32,
    slot: u32,
    out: &mut [u8],
) -> Result {
    let (chunk, index) = locate(per_chunk, slot);
    let chunk = chunks.get(chunk).ok_or(EINVAL)?;
    chunk.read(index as usize * buf_len as usize, out)
}

/// The chunk of buffer `slot` and its index there (divisions checked: the
/// kernel's objtool does not know Rust's division panics, and there is no
/// need for one).
fn locate(per_chunk: u32, slot: u32) -> (usize, u32) {
    let chunk = slot.checked_div(per_chunk).unwrap_or(0);
    (chunk as usize, slot.checked_rem(per_chunk).unwrap_or(0))
}

impl Rx {
    /// Allocates the ring and buffers of queue pair `queue`.
    pub(crate) fn new(dev: &device::Device, queue: u32, geometry: Geometry) -> Result<Self> {
        let Geometry { ring, buf_len } = geometry;
        let cq_len = ring as usize * DESC_LEN;
        let mut cq = CoherentBuffer::alloc(dev, cq_len, GFP_KERNEL)?;
        // Phase 0 everywhere: the first pass is phase 1, so nothing stale
        // can look new.
        let zeros = [0u8; DESC_LEN];
        for entry in 0..ring as usize {
            cq.write(entry * DESC_LEN, &zeros)?;
        }
        let per_chunk = CHUNK.checked_div(buf_len).unwrap_or(1).max(1).min(ring);
        let count = ring.checked_div(per_chunk).unwrap_or(ring)
            + u32::from(ring.checked_rem(per_chunk).unwrap_or(0) != 0);
        let mut chunks = KVec::with_capacity(count as usize, GFP_KERNEL)?;
        for i in 0..count {
            let bufs = per_chunk.min(ring - i * per_chunk);
            chunks.push(
                CoherentBuffer::alloc(dev, (bufs * buf_len) as usize, GFP_KERNEL)?,
                GFP_KERNEL,
            )?;
        }
        Ok(Self {
            queue,
            geometry,
            cq,
            chunks,
            per_chunk,
            consumed: 0,
            posted: 0,
            scratch: KVec::from_elem(0u8, buf_len as usize, GFP_KERNEL)?,
        })
    }

    /// Where the device writes completions.
    pub(crate) fn cq_addr(&self) -> u64 {
        self.cq.dma_handle()
    }

    pub(crate) fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// Buffers consumed and not posted again.
    fn free(&self) -> u32 {
        self.consumed
            .wrapping_add(self.geometry.ring)
            .wrapping_sub(self.posted)
    }

    /// The descriptors of the next buffers to post: at most `max`, not
    /// past the window's end. Returns the bytes to write and their count.
    fn batch(&self, max: u32) -> ([u8; RX_WINDOW_LEN as usize], u32) {
        let mut bytes = [0u8; RX_WINDOW_LEN as usize];
        let in_window = RX_WINDOW_SLOTS - self.posted % RX_WINDOW_SLOTS;
        let n = max.min(self.free()).min(in_window);
        for k in 0..n {
            let slot = self.slot(self.posted.wrapping_add(k));
            let (chunk, index) = locate(self.per_chunk, slot);
            let addr = self.chunks.get(chunk).map_or(0, |c| {
                c.dma_handle()
                    .wrapping_add(u64::from(index) * u64::from(self.geometry.buf_len))
            });
            let desc = RxDesc {
                addr,
                len: self.geometry.buf_len,
            };
            let at = k as usize * DESC_LEN;
            if let Some(out) = bytes.get_mut(at..at + DESC_LEN) {
                out.copy_from_slice(&desc.encode());
            }
        }
        (bytes, n)
    }

    /// The ring slot (buffer and completion) of post index `n`: the ring
    /// is a power of two.
    fn slot(&self, n: u32) -> u32 {
        n & self.geometry.ring.wrapping_sub(1)
    }

    /// The window offset of the next post.
    fn window_offset(&self) -> u32 {
        rx_window(self.queue) + (self.posted % RX_WINDOW_SLOTS) * DESC_LEN as u32
    }

    /// Posts every free buffer, from `open` (process context: may sleep
    /// while the link is backlogged).
    pub(crate) fn post_all(&mut self, hw: &Hw) -> Result {
        while self.free() > 0 {
            let (bytes, n) = self.batch(RX_WINDOW_SLOTS);
            let len = n as usize * DESC_LEN;
            hw.write(self.window_offset(), bytes.get(..len).ok_or(EINVAL)?)?;
            self.posted = self.posted.wrapping_add(n);
        }
        Ok(())
    }

    /// Posts free buffers in batches of at least `min` (up to a window's
    /// worth each) without sleeping. `EAGAIN`: the link is backlogged,
    /// some stay free for the next call.
    fn refill(&mut self, hw: &Hw, min: u32) -> Result {
        while self.free() >= min.max(1) {
            let (bytes, n) = self.batch(RX_WINDOW_SLOTS);
            let len = n as usize * DESC_LEN;
            hw.post(self.window_offset(), bytes.get(..len).ok_or(EINVAL)?)?;
            self.posted = self.posted.wrapping_add(n);
        }
        Ok(())
    }

    /// Hands up to `budget` received frames to the stack and reposts their
    /// buffers. Returns the completions handled and whether reposting must
    /// be retried (the link was backlogged).
    pub(crate) fn poll(
        &mut self,
        hw: &Hw,
        napi: &NapiPoll<'_>,
        budget: u32,
        stats: &QueueStats,
    ) -> (u32, bool) {
        let ring = self.geometry.ring;
        let mut done = 0;
        let mut backlogged = false;
        while done < budget {
            let slot = self.slot(self.consumed);
            let mut b = [0u8; DESC_LEN];
            if self.cq.read(slot as usize * DESC_LEN, &mut b).is_err() {
                break;
            }
            let c = RxCompletion::decode(&b);
            if c.flags & RXC_PHASE != RxCompletion::phase_of(self.consumed, ring) {
                break;
            }
            self.deliver(&c, slot, hw, napi, stats);
            self.consumed = self.consumed.wrapping_add(1);
            done += 1;
            if !backlogged && self.free() >= RX_WINDOW_SLOTS {
                backlogged = self.repost(hw, RX_WINDOW_SLOTS, stats);
            }
        }
        // Leftovers: fewer than a window's worth.
        if !backlogged {
            backlogged = self.repost(hw, 1, stats);
        }
        (done, backlogged)
    }

    /// [`Rx::refill`]; returns whether to retry (only for `EAGAIN`: a gone
    /// function is not retried).
    fn repost(&mut self, hw: &Hw, min: u32, stats: &QueueStats) -> bool {
        match self.refill(hw, min) {
            Err(e) if e == EAGAIN => {
                stats.rx_post_retry.fetch_add(1, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }

    /// Checks completion `c` (found in ring slot `slot`) and hands its frame
    /// up; a bad completion is counted and dropped (its buffer is reposted
    /// all the same).
    fn deliver(
        &mut self,
        c: &RxCompletion,
        slot: u32,
        hw: &Hw,
        napi: &NapiPoll<'_>,
        stats: &QueueStats,
    ) {
        let len = u32::from(c.len);
        if c.index != self.consumed
            || u32::from(c.queue) != self.queue
            || !(FRAME_MIN..=self.geometry.buf_len).contains(&len)
        {
            stats.rx_bad.fetch_add(1, Ordering::Relaxed);
            kernel::pr_warn_ratelimited!(
                "{}: queue pair {}: bad RX completion (index {}, want {}; queue {}; length {}, buffer {})\n",
                hw.name(),
                self.queue,
                c.index,
                self.consumed,
                c.queue,
                len,
                self.geometry.buf_len
            );
            return;
        }
        // The buffer of completion `consumed` is slot `consumed % ring`,
        // the ring slot of the completion itself.
        let Some(frame) = self.scratch.get_mut(..len as usize) else {
            stats.rx_bad.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let copied = read_buffer(
            &self.chunks,
            self.per_chunk,
            self.geometry.buf_len,
            slot,
            frame,
        );
        if copied.is_err() || napi.receive(frame).is_err() {
            stats.rx_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        stats.rx_packets.fetch_add(1, Ordering::Relaxed);
        stats.rx_bytes.fetch_add(u64::from(len), Ordering::Relaxed);
        if c.flags & RXC_MULTICAST != 0 {
            stats.rx_multicast.fetch_add(1, Ordering::Relaxed);
        }
    }
}
