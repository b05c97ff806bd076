// SPDX-License-Identifier: GPL-2.0

//! Memory requests of remote functions (their DMA), served from host
//! memory through the software IOMMU.
//!
//! A function reads host memory with MRd and writes it with MWr, at bus
//! addresses its driver got from the DMA API. The bus's translation
//! tables ([`kernel::pci_host::DmaHandle`]) decide: a read inside a live
//! mapping that allows the device to read is answered with CplDs from
//! [`dma::complete_read`] (the engine's completer, as the DI's BARs use);
//! a write inside one that allows the device to write is applied. Anything
//! else is refused: an Unsupported Request completion for a read, a
//! dropped write; the IOMMU counts both by reason, per function, and the
//! host logs them (rate-limited).
//!
//! This runs in the receive path (softirq, under the session lock): the
//! tables are reached through the handle, not the bus. A read is copied
//! out of the mapping in one piece, before any completion is sent, so a
//! racing unmap either happens before (Unsupported Request) or after (the
//! data as it was), never in the middle of an answer.

use kernel::pr_warn_ratelimited;

use super::{Events, REQUESTER};
use crate::pcieoe::{
    dma,
    tlp::{self, Bdf, CompletionStatus, MemRequest, Tlp},
};
use crate::port::Outbox;

/// Largest read served (a function's Max_Read_Request_Size is at most
/// 4096 bytes).
pub(super) const READ_MAX: usize = 4096;
/// Largest completion payload sent, whatever the function's
/// Max_Payload_Size: it fits any session MTU, and the buffer the stack
/// of the receive path holds.
const CPL_MAX: usize = 512;
/// Completion buffer: a 3DW header and the largest payload sent.
const CPL_BUF: usize = tlp::HEADER_3DW + CPL_MAX;

/// Counters of the DMA path (the IOMMU keeps the per-function ones).
#[derive(Clone, Copy, Default)]
pub(super) struct DmaCounters {
    pub(super) reads: u64,
    pub(super) read_bytes: u64,
    pub(super) writes: u64,
    pub(super) write_bytes: u64,
    pub(super) completions: u64,
    pub(super) refused_reads: u64,
    pub(super) refused_writes: u64,
}

/// The `devfn` of a requester on the root bus.
fn devfn_of(id: Bdf) -> Option<u8> {
    (id.bus() == 0).then(|| (id.device() << 3) | id.function())
}

/// Bytes a request's byte enables select: `(start offset, count)` within
/// its double words.
fn enabled_span(r: &MemRequest) -> (usize, usize) {
    let lead = usize::from(tlp::lower_address(r.address, r.first_be) & 3);
    let count = usize::from(tlp::byte_count(r.length, r.first_be, r.last_be));
    (lead, count)
}

/// Whether byte `i` of a request of `dws` double words is enabled.
fn enabled(r: &MemRequest, i: usize) -> bool {
    let dw = i / 4;
    let last = usize::from(r.length).saturating_sub(1);
    let be = if dw == 0 {
        r.first_be
    } else if dw == last {
        r.last_be
    } else {
        0xf
    };
    be & (1 << (i % 4)) != 0
}

/// The receive path's part: an MRd or MWr from function `tlp.requester`.
pub(super) fn receive(
    ev: &mut Events,
    tlp: &Tlp<'_>,
    r: &MemRequest,
    write: bool,
    out: &mut Outbox,
) {
    if tlp.check().is_err() {
        ev.counters.unexpected_tlps += 1;
        pr_warn_ratelimited!("malformed memory request from {} dropped\n", r.requester);
        return;
    }
    let Some(handle) = ev.dma.clone() else {
        return;
    };
    let devfn = devfn_of(r.requester);
    if write {
        let ok = !tlp.ep && devfn.is_some_and(|d| write_runs(&handle, d, r, tlp.payload));
        let c = &mut ev.dma_counters;
        if ok {
            c.writes += 1;
            c.write_bytes += enabled_span(r).1 as u64;
        } else {
            c.refused_writes += 1;
            pr_warn_ratelimited!(
                "DMA write of {} bytes at {:#x} by {} refused\n",
                tlp.payload.len(),
                r.address,
                r.requester
            );
        }
        return;
    }
    let (lead, count) = enabled_span(r);
    let mut buf = core::mem::take(&mut ev.dma_buf);
    let served = match (devfn, buf.get_mut(..count)) {
        (Some(d), Some(data)) => handle.dma_read(d, r.address + lead as u64, data).is_ok(),
        _ => false,
    };
    let mut cpl = [0u8; CPL_BUF];
    let mut sent = 0;
    if served {
        let data = buf.get(..count).unwrap_or(&[]);
        let fill = |at: u64, dst: &mut [u8]| {
            for (i, b) in dst.iter_mut().enumerate() {
                let o = at as usize + i;
                *b = o
                    .checked_sub(lead)
                    .and_then(|k| data.get(k))
                    .copied()
                    .unwrap_or(0);
            }
        };
        let mps = ev.mps.get(usize::from(r.requester.device())).copied();
        let mps = mps
            .map_or(dma::DEFAULT_MAX_PAYLOAD, usize::from)
            .min(CPL_MAX);
        sent = dma::complete_read(tlp, r, REQUESTER, mps, &mut cpl, fill, &mut |t| out.push(t))
            .unwrap_or(0);
    }
    ev.dma_buf = buf;
    let c = &mut ev.dma_counters;
    if served && sent > 0 {
        c.reads += 1;
        c.read_bytes += count as u64;
        c.completions += sent as u64;
        return;
    }
    c.refused_reads += 1;
    pr_warn_ratelimited!(
        "DMA read of {} bytes at {:#x} by {} refused\n",
        count,
        r.address,
        r.requester
    );
    if let Ok(ur) = Tlp::completion_for(tlp, REQUESTER, CompletionStatus::UnsupportedRequest, &[]) {
        if let Ok(n) = ur.emit(&mut cpl) {
            out.push(cpl.get(..n).unwrap_or(&[]));
        }
    }
}

/// Applies an MWr's enabled bytes, one IOMMU write per run of enabled
/// bytes (one run unless the byte enables have holes). All or nothing is
/// not possible across runs, but a hole only exists in requests of one or
/// two double words, whose runs lie in the same mapping or none.
fn write_runs(
    handle: &kernel::pci_host::DmaHandle,
    devfn: u8,
    r: &MemRequest,
    payload: &[u8],
) -> bool {
    let n = payload.len();
    if !(0..n).any(|i| enabled(r, i)) {
        // A zero-length write (no byte enabled) changes nothing, but it is
        // still a request: only a function the host has may make it, at an
        // address it may write.
        return handle.dma_write(devfn, r.address, &[]).is_ok();
    }
    let mut i = 0;
    while i < n {
        if !enabled(r, i) {
            i += 1;
            continue;
        }
        let start = i;
        while i < n && enabled(r, i) {
            i += 1;
        }
        let Some(bytes) = payload.get(start..i) else {
            return false;
        };
        if handle
            .dma_write(devfn, r.address + start as u64, bytes)
            .is_err()
        {
            return false;
        }
    }
    true
}
