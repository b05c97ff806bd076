// SPDX-License-Identifier: GPL-2.0

//! The per-port counters file, `/sys/kernel/debug/<module>/<ifname>/stats`.
//!
//! One `key: value` line per counter, for people and for the selftests:
//! the session state and epoch, the peer, frames and TLPs each way,
//! replays, NAKs, drops by reason and the RTT estimate (nanoseconds).
//! The counters are copied under the port's lock and printed after it is
//! released.

use core::fmt::{self, Write};

use kernel::{
    debugfs::{SeqFile, Show},
    prelude::*,
    sync::Arc,
};

use crate::pcieoe::{
    clock::Duration,
    frame::Mac,
    link::{Counters, Link},
    session::{Role, SessionCounters, State},
};
use crate::port::{MacFmt, PortTimer, TxErrors, SLOTS};

/// A copy of the counters, taken under the lock.
struct Snapshot {
    role: Role,
    state: State,
    epoch: u32,
    peer: Option<Mac>,
    local: Option<Mac>,
    session: SessionCounters,
    link: Counters,
    srtt: Duration,
    rttvar: Duration,
    rto: Duration,
    tx: TxErrors,
    tlps_delivered: u64,
}

/// The debugfs `stats` file.
pub(crate) struct Stats(pub(crate) Arc<PortTimer>);

fn state_name(s: State) -> &'static str {
    match s {
        State::Idle => "idle",
        State::Discovering { .. } => "discovering",
        State::Opening { .. } => "opening",
        State::Listening => "listening",
        State::Open { .. } => "open",
        State::Closing { .. } => "closing",
        State::Closed { .. } => "closed",
    }
}

impl Show for Stats {
    fn show(&self, f: &mut SeqFile<'_>) -> fmt::Result {
        let s = {
            let inner = self.0.inner.lock();
            let link: &Link<KVVec<u8>, SLOTS> = inner.session.link();
            let state = inner.session.state();
            let epoch = match state {
                State::Open { epoch } | State::Closing { epoch, .. } => epoch,
                State::Opening { epoch, .. } => epoch,
                _ => 0,
            };
            Snapshot {
                role: inner.role,
                state,
                epoch,
                peer: inner.session.peer(),
                local: self.0.dev.mac(),
                session: *inner.session.counters(),
                link: *link.counters(),
                srtt: link.rtt().srtt(),
                rttvar: link.rtt().rttvar(),
                rto: link.rtt().rto(),
                tx: inner.tx,
                tlps_delivered: inner.upper.tlps,
            }
        };
        let (c, l) = (&s.session, &s.link);
        let role = match s.role {
            Role::Host => "host",
            Role::Device => "device",
        };
        writeln!(f, "role: {role}")?;
        writeln!(f, "state: {}", state_name(s.state))?;
        writeln!(f, "epoch: {:#010x}", s.epoch)?;
        match s.peer {
            Some(p) => writeln!(f, "peer: {}", MacFmt(p))?,
            None => writeln!(f, "peer: none")?,
        }
        if let Some(m) = s.local {
            writeln!(f, "local: {}", MacFmt(m))?;
        }
        writeln!(f, "sessions_opened: {}", c.opened)?;
        writeln!(f, "frames_tx: {}", l.frames_tx)?;
        writeln!(f, "frames_rx: {}", l.frames_rx)?;
        writeln!(f, "data_frames_tx: {}", l.data_frames_tx)?;
        writeln!(f, "acks_tx: {}", l.acks_tx)?;
        writeln!(f, "tlps_tx: {}", l.tlps_tx)?;
        writeln!(f, "tlps_rx: {}", l.tlps_rx)?;
        writeln!(f, "tlps_delivered: {}", s.tlps_delivered)?;
        writeln!(f, "replays: {}", l.replays)?;
        writeln!(f, "replay_timeouts: {}", l.timeouts)?;
        writeln!(f, "naks_tx: {}", l.naks_tx)?;
        writeln!(f, "naks_rx: {}", l.naks_rx)?;
        writeln!(f, "heartbeats_tx: {}", c.heartbeats_tx)?;
        writeln!(f, "heartbeats_rx: {}", c.heartbeats_rx)?;
        writeln!(f, "discoveries_tx: {}", c.discoveries_tx)?;
        writeln!(f, "announces_tx: {}", c.announces_tx)?;
        writeln!(f, "opens_tx: {}", c.opens_tx)?;
        writeln!(f, "open_acks_tx: {}", c.open_acks_tx)?;
        writeln!(f, "closes_tx: {}", c.closes_tx)?;
        writeln!(f, "dead_peers: {}", c.dead_peers)?;
        writeln!(f, "peer_restarts: {}", c.peer_restarts)?;
        writeln!(f, "link_failures: {}", c.link_failures)?;
        writeln!(f, "drop_stale_epoch: {}", c.stale_epoch)?;
        writeln!(f, "drop_wrong_peer: {}", c.wrong_peer)?;
        writeln!(f, "drop_unexpected: {}", c.unexpected)?;
        writeln!(f, "drop_bad_body: {}", c.bad_body)?;
        writeln!(f, "drop_duplicate: {}", l.duplicates)?;
        writeln!(f, "drop_out_of_order: {}", l.out_of_order)?;
        writeln!(f, "drop_bad_ack: {}", l.bad_acks)?;
        writeln!(f, "drop_credit_overflow: {}", l.credit_overflows)?;
        writeln!(f, "drop_truncated: {}", l.bad.truncated)?;
        writeln!(f, "drop_ethertype: {}", l.bad.ethertype)?;
        writeln!(f, "drop_version: {}", l.bad.version)?;
        writeln!(f, "drop_kind: {}", l.bad.kind)?;
        writeln!(f, "drop_length: {}", l.bad.length)?;
        writeln!(f, "drop_link_unexpected: {}", l.bad.unexpected)?;
        writeln!(f, "tx_nomem: {}", s.tx.nomem)?;
        writeln!(f, "tx_dropped: {}", s.tx.dropped)?;
        writeln!(f, "rtt_srtt_ns: {}", s.srtt.as_nanos())?;
        writeln!(f, "rtt_rttvar_ns: {}", s.rttvar.as_nanos())?;
        writeln!(f, "rto_ns: {}", s.rto.as_nanos())
    }
}
