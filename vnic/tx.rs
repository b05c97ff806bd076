// SPDX-License-Identifier: GPL-2.0

//! The transmit side of one queue pair: the record writer.
//!
//! Every frame is one inline record (a [`TxDesc`] with `TXD_INLINE |
//! TXD_EOP`, then the frame padded to whole units) written into the
//! queue pair's TX window with [`Hw::post`], which never sleeps. The
//! window is an alias of a stream: unit `n` goes at window offset
//! `(n % TX_WINDOW_UNITS) * 16`, so a record is cut at the window's end.
//! A record never wraps the device's FIFO: a pad record skips to its start
//! first. Credit comes from the TX done block the device writes into host
//! memory; no register is read.
//!
//! # Backlog (`EAGAIN`)
//!
//! `post` sends all of its bytes or none, but a record may take several
//! posts (window end, jumbo frames), and the device stops the stream at
//! the first double word out of position. So a record, once accepted, is
//! owned by the writer: it is built in [`Tx::pending`] and posted piece by
//! piece; what the link refuses stays there, at the stream position where
//! it must go, and is flushed before anything else, by the next
//! transmission or by the queue pair's NAPI poll (scheduled by a short
//! retry timer). While a record is pending the transmit queue is stopped,
//! so the stream stays in order whatever the link does.

use crate::{hw::Hw, layout::*};
use kernel::{device, dma_coherent::CoherentBuffer, prelude::*};

/// Bytes of the TX done block.
const DONE_LEN: usize = DESC_LEN;

/// Bytes of the largest record: a descriptor and a frame at the largest
/// MTU, padded to a unit.
const RECORD_MAX: usize = UNIT * (1 + units_for(FRAME_MAX) as usize);

/// What [`Tx::send`] did with a frame.
pub(crate) enum Sent {
    /// Accepted and fully posted.
    Posted,
    /// Accepted; part of it waits in the pending buffer (the link is
    /// backlogged): stop the queue until it is flushed.
    Backlogged,
    /// Not accepted: no room in the FIFO, or a previous record (or the pad
    /// before this one) is still pending. Stop the queue and hand the frame
    /// back.
    Full,
    /// Not accepted and never will be (too long for the FIFO, or the
    /// function is gone): drop it.
    Dropped,
}

/// The transmit state of a queue pair while the device is up.
pub(crate) struct Tx {
    queue: u32,
    /// The TX done block the device writes.
    done_block: CoherentBuffer,
    /// The last done block that made sense.
    done: TxDone,
    /// TX_FIFO_UNITS.
    fifo_units: u32,
    /// Stream position after every record accepted (pending included).
    tail: u32,
    /// Records accepted since enable (pads included).
    records: u32,
    /// Stream position of the next byte to post (`pending[sent..]`).
    pos: u32,
    /// The record being written; `len` bytes of it are valid.
    pending: KVec<u8>,
    len: usize,
    sent: usize,
    /// Units skipped after the pending record (the rest of a pad).
    skip: u32,
    /// The queue was stopped for room: units it waits for.
    pub(crate) want: Option<u32>,
}

impl Tx {
    /// The state of queue pair `queue` with a FIFO of `fifo_units`.
    pub(crate) fn new(dev: &device::Device, queue: u32, fifo_units: u32) -> Result<Self> {
        let mut done_block = CoherentBuffer::alloc(dev, DONE_LEN, GFP_KERNEL)?;
        done_block.write(0, &[0u8; DONE_LEN])?;
        Ok(Self {
            queue,
            done_block,
            done: TxDone::default(),
            fifo_units,
            tail: 0,
            records: 0,
            pos: 0,
            pending: KVec::from_elem(0u8, RECORD_MAX, GFP_KERNEL)?,
            len: 0,
            sent: 0,
            skip: 0,
            want: None,
        })
    }

    /// Where the device writes the done block.
    pub(crate) fn done_addr(&self) -> u64 {
        self.done_block.dma_handle()
    }

    /// Reads the done block; a block that claims more than was written
    /// (units or records ahead of ours) is ignored and returned, with our
    /// stream position and record count, for the log.
    pub(crate) fn refresh(&mut self) -> Result<(), (TxDone, u32, u32)> {
        let mut b = [0u8; DONE_LEN];
        if self.done_block.read(0, &mut b).is_err() {
            return Ok(());
        }
        let done = TxDone::decode(&b);
        let used = self.tail.wrapping_sub(done.units);
        let outstanding = self.records.wrapping_sub(done.records);
        if used > self.fifo_units || outstanding > RING_MAX {
            return Err((done, self.tail, self.records));
        }
        self.done = done;
        Ok(())
    }

    /// Whether `units` more units and one more record fit.
    fn room(&self, units: u32) -> bool {
        let used = self.tail.wrapping_sub(self.done.units);
        let outstanding = self.records.wrapping_sub(self.done.records);
        used.saturating_add(units) <= self.fifo_units && outstanding < RING_MAX
    }

    /// Whether a record of `units` units can be sent now, a pad before it
    /// included, or nothing at all is outstanding (then waiting longer
    /// would not help: the record is tried, and a pad goes first).
    fn room_for(&self, units: u32) -> bool {
        let used = self.tail.wrapping_sub(self.done.units);
        let outstanding = self.records.wrapping_sub(self.done.records);
        if used == 0 && outstanding == 0 {
            return true;
        }
        let to_end = self.to_end();
        let need = if units > to_end {
            units.saturating_add(to_end)
        } else {
            units
        };
        used.saturating_add(need) <= self.fifo_units && outstanding.saturating_add(2) <= RING_MAX
    }

    /// Units from the stream position to the FIFO's end.
    fn to_end(&self) -> u32 {
        self.fifo_units - self.tail.checked_rem(self.fifo_units).unwrap_or(0)
    }

    /// After a frame was sent: whether the queue must be stopped because a
    /// record of `units` (the largest frame of the MTU) might not fit.
    /// Stopping early makes [`Sent::Full`] the exception.
    pub(crate) fn stop_if_short(&mut self, units: u32) -> bool {
        if self.room_for(units) {
            return false;
        }
        self.want = Some(units);
        true
    }

    /// Whether the queue, stopped for room, may be woken.
    pub(crate) fn can_wake(&self) -> bool {
        self.len == 0 && self.want.map_or(true, |units| self.room_for(units))
    }

    /// Whether part of a record waits to be posted.
    pub(crate) fn is_pending(&self) -> bool {
        self.len != 0
    }

    /// Posts what is pending, cut at the window's end. `Ok` when nothing
    /// is left; `EAGAIN` when the link refused a piece (kept for the next
    /// call). Any other error (the function is gone) abandons the record:
    /// the stream is broken anyway until the queue pair is restarted.
    pub(crate) fn flush(&mut self, hw: &Hw) -> Result {
        while self.sent < self.len {
            let unit = self.pos % TX_WINDOW_UNITS;
            let room = (TX_WINDOW_UNITS - unit) as usize * UNIT;
            let n = (self.len - self.sent).min(room);
            let Some(piece) = self.pending.get(self.sent..self.sent + n) else {
                self.len = 0;
                self.sent = 0;
                return Err(EINVAL);
            };
            if let Err(e) = hw.post(tx_window(self.queue) + unit * UNIT as u32, piece) {
                if e != EAGAIN {
                    self.len = 0;
                    self.sent = 0;
                    self.pos = self.tail;
                    self.skip = 0;
                }
                return Err(e);
            }
            self.sent += n;
            self.pos = self.pos.wrapping_add((n / UNIT) as u32);
        }
        self.pos = self.pos.wrapping_add(self.skip);
        self.skip = 0;
        self.len = 0;
        self.sent = 0;
        Ok(())
    }

    /// Accepts `record_units` units of stream: `bytes` are posted (and
    /// `skip` more are skipped after them).
    fn accept(&mut self, desc: &TxDesc, frame: &[u8], record_units: u32, skip: u32) -> Result {
        let total = record_units.saturating_sub(skip) as usize * UNIT;
        if total < DESC_LEN + frame.len() {
            return Err(EINVAL);
        }
        let buf = self.pending.get_mut(..total).ok_or(EINVAL)?;
        buf.fill(0);
        if let Some(head) = buf.get_mut(..DESC_LEN) {
            head.copy_from_slice(&desc.encode());
        }
        if let Some(data) = buf.get_mut(DESC_LEN..DESC_LEN + frame.len()) {
            data.copy_from_slice(frame);
        }
        self.len = total;
        self.sent = 0;
        self.skip = skip;
        self.tail = self.tail.wrapping_add(record_units);
        self.records = self.records.wrapping_add(1);
        Ok(())
    }

    /// Sends `frame` as one inline record (after a pad if it would not fit
    /// before the FIFO's end). Atomic context.
    pub(crate) fn send(&mut self, hw: &Hw, frame: &[u8]) -> Sent {
        // A record still pending must go first.
        match self.flush(hw) {
            Ok(()) => {}
            Err(e) if e == EAGAIN => return Sent::Full,
            Err(_) => return Sent::Dropped,
        }
        let Ok(len) = u16::try_from(frame.len()) else {
            return Sent::Dropped;
        };
        let units = 1 + units_for(u32::from(len));
        if len == 0 || u32::from(len) > FRAME_MAX || units > self.fifo_units {
            return Sent::Dropped;
        }
        // A bad block is reported by the poll's reclaim.
        let _ = self.refresh();
        let to_end = self.to_end();
        if units > to_end {
            if !self.room(to_end) {
                self.want = Some(units);
                return Sent::Full;
            }
            let pad = TxDesc {
                flags: TXD_PAD,
                ..TxDesc::default()
            };
            if self
                .accept(&pad, &[], to_end, to_end.saturating_sub(1))
                .is_err()
            {
                return Sent::Dropped;
            }
            match self.flush(hw) {
                Ok(()) => {}
                // The pad is ours now; the frame goes back to the stack.
                Err(e) if e == EAGAIN => return Sent::Full,
                Err(_) => return Sent::Dropped,
            }
        }
        if !self.room(units) {
            self.want = Some(units);
            return Sent::Full;
        }
        let desc = TxDesc {
            len,
            flags: TXD_INLINE | TXD_EOP,
            ..TxDesc::default()
        };
        if self.accept(&desc, frame, units, 0).is_err() {
            return Sent::Dropped;
        }
        self.want = None;
        match self.flush(hw) {
            Ok(()) => Sent::Posted,
            Err(e) if e == EAGAIN => Sent::Backlogged,
            // Accepted and lost with the function: counted as sent.
            Err(_) => Sent::Posted,
        }
    }
}
