// SPDX-License-Identifier: GPL-2.0

//! The reliable link: in-order, exactly-once delivery of TLPs over a lossy
//! Ethernet, as the PCIe data link layer does it over a lane.
//!
//! * Every Data frame carries a 32-bit sequence number; arithmetic on them
//!   wraps and they are compared as serial numbers (RFC 1982): `a` is before
//!   `b` when `b - a` (mod 2^32) is in `1..2^31`.
//! * Sent frames stay in a bounded replay buffer of `N` slots until
//!   cumulatively acknowledged. The window (frames queued or in flight) is
//!   the smaller of `N` and the negotiated window; TLPs are also held back by
//!   the peer's flow-control credits ([`super::credit`]).
//! * Every frame carries the cumulative ACK (the next sequence number
//!   expected) and the receiver's credit limits. When no reverse data flows,
//!   an ACK-only frame goes out after [`LinkConfig::ack_delay`] or after
//!   [`LinkConfig::ack_every`] frames, whichever is first; at once for a
//!   duplicate or a probe.
//! * The receiver is go-back-N, like the PCIe DLL: a frame after a gap is
//!   dropped and the gap NAKed once (fast retransmit); the sender then
//!   replays from the NAKed frame. A lost NAK or replay is recovered by the
//!   replay timer, whose timeout follows RFC 6298 with exponential backoff.
//! * TLPs given to [`Link::send_tlp`] are batched: until a frame is first
//!   transmitted, further TLPs are appended to it up to the MTU.
//!
//! The link is sans-IO: call [`Link::send_tlp`] to queue, [`Link::poll`] to
//! transmit and run timers, [`Link::receive`] with each received frame, and
//! arm a timer for [`Link::poll_at`].

use core::ops::DerefMut;

use super::clock::{earliest, Duration, FrameSink, Instant};
use super::credit::{Advert, ClassifyError, Cost, RxCredits, TxCredits};
use super::ethertype::EtherType;
use super::frame::{
    self, flags, put_item, BadFrames, EthHeader, Frame, Header, Kind, Mac, Pdu, Vlan, HEADER_LEN,
    ITEM_PREFIX_LEN, L2_OVERHEAD, MAX_ITEMS, MAX_MTU, MIN_MTU, PCP_CONTROL,
};

/// Is sequence number `a` before `b` (RFC 1982 serial-number order)?
pub fn seq_lt(a: u32, b: u32) -> bool {
    let d = b.wrapping_sub(a);
    d != 0 && d < 0x8000_0000
}

/// Is `a` at or before `b`?
pub fn seq_le(a: u32, b: u32) -> bool {
    a == b || seq_lt(a, b)
}

/// Tunables of the link (the same for every session).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkConfig {
    /// Longest time a received frame waits for its ACK.
    pub ack_delay: Duration,
    /// Send an ACK after this many unacknowledged frames.
    pub ack_every: u16,
    /// Replay timeout before the first RTT sample (RFC 6298 2.1 says 1 s
    /// for the Internet; a LAN wants far less).
    pub rto_initial: Duration,
    /// Lower bound of the replay timeout (RFC 6298 2.4; also covers the
    /// peer's ACK delay).
    pub rto_min: Duration,
    /// Upper bound of the replay timeout, backoff included (RFC 6298 2.5).
    pub rto_max: Duration,
    /// Consecutive replay timeouts after which the link is declared failed.
    pub max_retries: u16,
    /// Most frames one [`Link::poll`] transmits (bounded work per call).
    pub tx_budget: u16,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            ack_delay: Duration::from_micros(50),
            ack_every: 8,
            rto_initial: Duration::from_millis(10),
            rto_min: Duration::from_micros(500),
            rto_max: Duration::from_millis(200),
            max_retries: 12,
            tx_budget: 64,
        }
    }
}

/// What a session negotiated for its link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkParams {
    /// Our MAC.
    pub local: Mac,
    /// The peer's MAC.
    pub peer: Mac,
    /// Ethertype of every frame.
    pub ethertype: EtherType,
    /// Tag for Data frames (its PCP from the traffic class, see
    /// [`frame::Pcp::from_tc`]); ACK-only frames use [`PCP_CONTROL`].
    /// `None` sends untagged frames.
    pub vlan: Option<Vlan>,
    /// Session epoch stamped on every frame.
    pub epoch: u32,
    /// Bytes after the Ethertype.
    pub mtu: usize,
    /// Most frames queued or in flight (capped by `N`).
    pub window: u16,
    /// Our first sequence number.
    pub tx_isn: u32,
    /// The peer's first sequence number.
    pub rx_isn: u32,
    /// Credits we advertise (our receive buffers; 0 = infinite).
    pub local_credits: Advert,
    /// Credits the peer advertised.
    pub peer_credits: Advert,
}

/// Why [`Link::open`] refused its parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenError {
    /// MTU outside [`MIN_MTU`]..=[`MAX_MTU`].
    BadMtu,
    /// The storage cannot hold `N` slots of the MTU (see
    /// [`Link::storage_len`]), or `N` is zero.
    StorageTooSmall,
    /// A zero window.
    BadWindow,
    /// Credits above [`super::credit::MAX_CREDITS`].
    BadCredits,
}

/// Why a TLP was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendError {
    /// The link is not open.
    NotOpen,
    /// The link failed (replay retries exhausted); the session must reopen.
    Failed,
    /// Not a TLP the flow-control classifier knows.
    Malformed(ClassifyError),
    /// Larger than a frame can carry at this MTU.
    TooLarge,
    /// The peer has no credits for it now: retry after the next
    /// [`Link::receive`].
    NoCredit,
    /// The replay buffer / window is full: retry after the next
    /// [`Link::receive`].
    WindowFull,
}

/// What the layer above does with a delivered TLP's receive credits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Release {
    /// Consumed: free its credits now.
    Now,
    /// Still buffered: the caller calls [`Link::release`] later with
    /// [`Cost::of_tlp`] of the TLP.
    Later,
}

/// Receives TLPs in order, exactly once.
pub trait Deliver {
    /// One TLP; the bytes are only valid during the call.
    fn deliver(&mut self, tlp: &[u8]) -> Release;
}

impl<F: FnMut(&[u8]) -> Release> Deliver for F {
    fn deliver(&mut self, tlp: &[u8]) -> Release {
        self(tlp)
    }
}

/// Link state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// Not opened (or closed by the session).
    Closed,
    /// Carrying TLPs.
    Open,
    /// Gave up after [`LinkConfig::max_retries`] replay timeouts.
    Failed,
}

/// Link counters (all monotonic, saturating).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Frames sent, all kinds.
    pub frames_tx: u64,
    /// Frames accepted, all kinds.
    pub frames_rx: u64,
    /// Data frames sent for the first time.
    pub data_frames_tx: u64,
    /// Data frames sent again (NAK or timeout).
    pub replays: u64,
    /// Replay timer expiries.
    pub timeouts: u64,
    /// ACK-only frames sent.
    pub acks_tx: u64,
    /// TLPs queued.
    pub tlps_tx: u64,
    /// TLPs delivered.
    pub tlps_rx: u64,
    /// NAKs sent.
    pub naks_tx: u64,
    /// NAKs received and acted on.
    pub naks_rx: u64,
    /// NAKs received but ignored (repeat within one RTT, out of range).
    pub naks_ignored: u64,
    /// Data frames received again (discarded).
    pub duplicates: u64,
    /// Data frames received after a gap (discarded).
    pub out_of_order: u64,
    /// ACKs for sequence numbers never sent (ignored).
    pub bad_acks: u64,
    /// TLPs received beyond the credits we advertised.
    pub credit_overflows: u64,
    /// Delivered TLPs the credit classifier did not know.
    pub unclassified_tlps: u64,
    /// [`SendError::NoCredit`] returned.
    pub credit_stalls: u64,
    /// Credit probes sent.
    pub probes_tx: u64,
    /// Frames rejected, by reason.
    pub bad: BadFrames,
}

fn inc(c: &mut u64) {
    *c = c.saturating_add(1);
}

/// RTT estimator and replay timeout, RFC 6298 in the scaled-integer form of
/// Jacobson and Karels ("Congestion Avoidance and Control", 1988, appendix
/// A; also AoE's `calc_rttavg`): SRTT is kept times 8 and RTTVAR times 4, so
/// that alpha = 1/8 and beta = 1/4 become shifts, and
/// RTO = SRTT + max(G, K * RTTVAR) with K = 4 is `srtt8 / 8 + rttvar4`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RttEstimator {
    srtt8: u64,
    rttvar4: u64,
    has_sample: bool,
    backoff: u32,
    min: Duration,
    max: Duration,
    initial: Duration,
}

impl RttEstimator {
    /// An estimator with no samples (RTO = `initial`).
    pub fn new(initial: Duration, min: Duration, max: Duration) -> Self {
        RttEstimator {
            srtt8: 0,
            rttvar4: 0,
            has_sample: false,
            backoff: 0,
            min,
            max,
            initial,
        }
    }

    /// Takes one RTT measurement (Karn: only from frames sent once).
    pub fn sample(&mut self, r: Duration) {
        let r = r.as_nanos();
        if !self.has_sample {
            // RFC 6298 2.2: SRTT = R, RTTVAR = R/2.
            self.srtt8 = r.saturating_mul(8);
            self.rttvar4 = r.saturating_mul(2);
            self.has_sample = true;
        } else {
            // RFC 6298 2.3, beta = 1/4 then alpha = 1/8.
            let srtt = self.srtt8 / 8;
            let delta = r.abs_diff(srtt);
            // Saturating: samples are caller time differences, and with
            // RTTs near 2^63 ns (`Instant`s far apart, as a fuzzer or a
            // clock jump can give) the plain sum overflowed and panicked.
            self.rttvar4 = (self.rttvar4 - self.rttvar4 / 4).saturating_add(delta);
            self.srtt8 = (self.srtt8 - self.srtt8 / 8).saturating_add(r);
        }
        // RFC 6298 5.7 spirit: a new sample ends the backoff.
        self.backoff = 0;
    }

    /// Doubles the timeout after an expiry (RFC 6298 5.5).
    pub fn back_off(&mut self) {
        self.backoff = self.backoff.saturating_add(1).min(16);
    }

    /// Smoothed RTT (zero before the first sample).
    pub fn srtt(&self) -> Duration {
        Duration::from_nanos(self.srtt8 / 8)
    }

    /// RTT variation (zero before the first sample).
    pub fn rttvar(&self) -> Duration {
        Duration::from_nanos(self.rttvar4 / 4)
    }

    /// The current replay timeout, backoff included, within min..=max.
    pub fn rto(&self) -> Duration {
        let base = if self.has_sample {
            Duration::from_nanos((self.srtt8 / 8).saturating_add(self.rttvar4))
        } else {
            self.initial
        };
        let base = base.max(self.min);
        let factor = 1u64.checked_shl(self.backoff).unwrap_or(u64::MAX);
        base.saturating_mul(factor).min(self.max).max(self.min)
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct SlotMeta {
    seq: u32,
    /// Item bytes (prefixes included).
    len: usize,
    count: u16,
    first_tx: Option<Instant>,
    tx_count: u16,
}

/// A reliable link with a replay buffer of `N` frames held in `B`.
///
/// # Invariants
///
/// `queued <= N`; slots `head .. head + queued` (mod `N`) hold sequence
/// numbers `snd_una .. snd_end`; `snd_una <= snd_nxt <= snd_end` and
/// `snd_una <= snd_max <= snd_end` in serial order.
pub struct Link<B: DerefMut<Target = [u8]>, const N: usize> {
    cfg: LinkConfig,
    p: LinkParams,
    state: LinkState,
    storage: B,
    slot_size: usize,
    window: usize,
    meta: [SlotMeta; N],
    head: usize,
    queued: usize,
    snd_una: u32,
    snd_nxt: u32,
    snd_max: u32,
    snd_end: u32,
    tx_credits: TxCredits,
    rx_credits: RxCredits,
    rcv_nxt: u32,
    ack_pending: bool,
    ack_deadline: Option<Instant>,
    unacked: u16,
    ack_now: bool,
    nak_pending: bool,
    nak_sent: bool,
    credits_dirty: bool,
    /// TLPs released since credits were last advertised.
    released: u16,
    /// `released` count that triggers an immediate update.
    release_urgent: u16,
    rtt: RttEstimator,
    rto_timer: Option<Instant>,
    retries: u16,
    last_nak: Option<(u32, Instant)>,
    credit_blocked: bool,
    probe_at: Option<Instant>,
    sink_blocked: bool,
    now: Instant,
    last_tx: Instant,
    counters: Counters,
}

impl<B: DerefMut<Target = [u8]>, const N: usize> Link<B, N> {
    /// Bytes of storage needed for `N` slots at `mtu`.
    pub const fn storage_len(mtu: usize) -> usize {
        N.saturating_mul(L2_OVERHEAD.saturating_add(mtu))
    }

    /// A closed link over `storage` (at least
    /// [`storage_len`](Self::storage_len) of the largest MTU to be used).
    pub fn new(cfg: LinkConfig, storage: B) -> Self {
        let p = LinkParams {
            local: [0; 6],
            peer: [0; 6],
            ethertype: EtherType::default(),
            vlan: None,
            epoch: 0,
            mtu: MIN_MTU,
            window: 1,
            tx_isn: 0,
            rx_isn: 0,
            local_credits: Advert::default(),
            peer_credits: Advert::default(),
        };
        Link {
            cfg,
            p,
            state: LinkState::Closed,
            storage,
            slot_size: 0,
            window: 0,
            meta: [SlotMeta::default(); N],
            head: 0,
            queued: 0,
            snd_una: 0,
            snd_nxt: 0,
            snd_max: 0,
            snd_end: 0,
            tx_credits: TxCredits::default(),
            rx_credits: RxCredits::default(),
            rcv_nxt: 0,
            ack_pending: false,
            ack_deadline: None,
            unacked: 0,
            ack_now: false,
            nak_pending: false,
            nak_sent: false,
            credits_dirty: false,
            released: 0,
            release_urgent: u16::MAX,
            rtt: RttEstimator::new(cfg.rto_initial, cfg.rto_min, cfg.rto_max),
            rto_timer: None,
            retries: 0,
            last_nak: None,
            credit_blocked: false,
            probe_at: None,
            sink_blocked: false,
            now: Instant::ZERO,
            last_tx: Instant::ZERO,
            counters: Counters::default(),
        }
    }

    /// (Re)opens the link for a session, dropping anything queued.
    /// Counters are kept.
    ///
    /// # Errors
    ///
    /// See [`OpenError`].
    pub fn open(&mut self, now: Instant, p: LinkParams) -> Result<(), OpenError> {
        if !(MIN_MTU..=MAX_MTU).contains(&p.mtu) {
            return Err(OpenError::BadMtu);
        }
        let slot_size = L2_OVERHEAD.saturating_add(p.mtu);
        if N == 0 || self.storage.len() < Self::storage_len(p.mtu) {
            return Err(OpenError::StorageTooSmall);
        }
        if p.window == 0 {
            return Err(OpenError::BadWindow);
        }
        if !p.local_credits.is_valid() || !p.peer_credits.is_valid() {
            return Err(OpenError::BadCredits);
        }
        self.reset();
        self.p = p;
        self.slot_size = slot_size;
        self.window = usize::from(p.window).min(N);
        self.snd_una = p.tx_isn;
        self.snd_nxt = p.tx_isn;
        self.snd_max = p.tx_isn;
        self.snd_end = p.tx_isn;
        self.rcv_nxt = p.rx_isn;
        self.tx_credits = TxCredits::new(&p.peer_credits);
        self.rx_credits = RxCredits::new(&p.local_credits);
        let l = &p.local_credits;
        self.release_urgent = [l.posted.header, l.non_posted.header, l.completion.header]
            .into_iter()
            .filter(|h| *h != 0)
            .min()
            .map_or(u16::MAX, |h| (h / 4).max(1));
        self.now = now;
        self.last_tx = now;
        self.state = LinkState::Open;
        Ok(())
    }

    /// Closes the link, dropping anything queued (counters are kept).
    pub fn close(&mut self) {
        self.reset();
    }

    fn reset(&mut self) {
        self.state = LinkState::Closed;
        self.meta = [SlotMeta::default(); N];
        self.head = 0;
        self.queued = 0;
        self.ack_pending = false;
        self.ack_deadline = None;
        self.unacked = 0;
        self.ack_now = false;
        self.nak_pending = false;
        self.nak_sent = false;
        self.credits_dirty = false;
        self.rtt = RttEstimator::new(self.cfg.rto_initial, self.cfg.rto_min, self.cfg.rto_max);
        self.rto_timer = None;
        self.retries = 0;
        self.last_nak = None;
        self.credit_blocked = false;
        self.probe_at = None;
        self.sink_blocked = false;
    }

    /// The state.
    pub fn state(&self) -> LinkState {
        self.state
    }

    /// The parameters of the current (or last) session.
    pub fn params(&self) -> &LinkParams {
        &self.p
    }

    /// The counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Mutable counters (the session counts frames it rejects here).
    pub fn counters_mut(&mut self) -> &mut Counters {
        &mut self.counters
    }

    /// The RTT estimator (SRTT, RTTVAR, RTO).
    pub fn rtt(&self) -> &RttEstimator {
        &self.rtt
    }

    /// Frames queued or in flight, not yet acknowledged.
    pub fn unacked_frames(&self) -> usize {
        self.queued
    }

    /// When a frame was last sent.
    pub fn last_tx(&self) -> Instant {
        self.last_tx
    }

    /// The peer's credits still available for a class (`None` = infinite).
    pub fn peer_credits(&self, class: super::credit::FcClass) -> (Option<u16>, Option<u16>) {
        self.tx_credits.available(class)
    }

    fn slot_index(&self, k: usize) -> Option<usize> {
        self.head.checked_add(k)?.checked_rem(N)
    }

    fn slot_bytes(&mut self, i: usize) -> Option<&mut [u8]> {
        let start = i.checked_mul(self.slot_size)?;
        let end = start.checked_add(self.slot_size)?;
        self.storage.get_mut(start..end)
    }

    /// Queues one TLP. It is appended to the newest frame if that frame was
    /// never transmitted and has room, else it starts a new frame. Nothing
    /// is sent until [`poll`](Self::poll).
    ///
    /// # Errors
    ///
    /// See [`SendError`]; nothing was queued.
    pub fn send_tlp(&mut self, tlp: &[u8]) -> Result<(), SendError> {
        match self.state {
            LinkState::Open => {}
            LinkState::Closed => return Err(SendError::NotOpen),
            LinkState::Failed => return Err(SendError::Failed),
        }
        let cost = Cost::of_tlp(tlp).map_err(SendError::Malformed)?;
        let area_max = self.p.mtu.saturating_sub(HEADER_LEN);
        let need = tlp.len().saturating_add(ITEM_PREFIX_LEN);
        if need > area_max || tlp.len() > usize::from(u16::MAX) {
            return Err(SendError::TooLarge);
        }
        if !self.tx_credits.can_send(cost) {
            self.credit_blocked = true;
            inc(&mut self.counters.credit_stalls);
            return Err(SendError::NoCredit);
        }
        let item_off = L2_OVERHEAD.saturating_add(HEADER_LEN);
        // Append to the tail frame if it was never sent and has room.
        if let Some(k) = self.queued.checked_sub(1) {
            let i = self.slot_index(k).ok_or(SendError::NotOpen)?;
            let m = self.meta.get(i).copied().unwrap_or_default();
            if m.tx_count == 0 && m.count < MAX_ITEMS && m.len.saturating_add(need) <= area_max {
                let at = item_off.saturating_add(m.len);
                let slot = self.slot_bytes(i).ok_or(SendError::NotOpen)?;
                let end = put_item(slot, at, tlp).map_err(|_| SendError::TooLarge)?;
                if let Some(m) = self.meta.get_mut(i) {
                    m.len = end.saturating_sub(item_off);
                    m.count = m.count.saturating_add(1);
                }
                self.queued_ok(cost);
                return Ok(());
            }
        }
        if self.queued >= self.window {
            return Err(SendError::WindowFull);
        }
        let i = self.slot_index(self.queued).ok_or(SendError::NotOpen)?;
        let slot = self.slot_bytes(i).ok_or(SendError::NotOpen)?;
        let end = put_item(slot, item_off, tlp).map_err(|_| SendError::TooLarge)?;
        if let Some(m) = self.meta.get_mut(i) {
            *m = SlotMeta {
                seq: self.snd_end,
                len: end.saturating_sub(item_off),
                count: 1,
                first_tx: None,
                tx_count: 0,
            };
        }
        self.queued = self.queued.saturating_add(1);
        self.snd_end = self.snd_end.wrapping_add(1);
        self.queued_ok(cost);
        Ok(())
    }

    fn queued_ok(&mut self, cost: Cost) {
        self.tx_credits.consume(cost);
        self.credit_blocked = false;
        self.probe_at = None;
        inc(&mut self.counters.tlps_tx);
    }

    /// Frees receive credits of a TLP delivered with [`Release::Later`].
    ///
    /// The new limit rides on the next frame; once a quarter of the
    /// smallest header allocation has been freed an ACK-only frame carries
    /// it at once, so that a sender stalled on credits does not wait for the
    /// ACK delay (PCIe sends UpdateFC DLLPs promptly for the same reason).
    pub fn release(&mut self, cost: Cost) {
        self.rx_credits.release(cost);
        self.credits_dirty = true;
        self.released = self.released.saturating_add(1);
        if self.released >= self.release_urgent {
            self.ack_now = true;
        }
    }

    /// Fills the piggybacked fields of an outgoing header (epoch, next
    /// sequence number, ACK, NAK, credits) and marks them sent. The session
    /// uses it for Heartbeat and Close frames.
    pub fn fill_header(&mut self, h: &mut Header) {
        h.epoch = self.p.epoch;
        if h.kind != Kind::Data {
            h.seq = self.snd_end;
        }
        if self.state != LinkState::Closed {
            h.flags |= flags::ACK | flags::CREDIT;
            h.ack = self.rcv_nxt;
            h.credits = self.rx_credits.update_to_advertise();
            if self.nak_pending {
                h.flags |= flags::NAK;
                h.nak = self.rcv_nxt;
            }
        }
    }

    /// Records that a frame built with [`fill_header`](Self::fill_header)
    /// was sent.
    pub fn header_sent(&mut self, now: Instant, h: &Header) {
        if h.has(flags::ACK) {
            self.ack_pending = false;
            self.ack_deadline = None;
            self.unacked = 0;
            self.ack_now = false;
            self.credits_dirty = false;
            self.released = 0;
        }
        if h.has(flags::NAK) {
            self.nak_pending = false;
            inc(&mut self.counters.naks_tx);
        }
        inc(&mut self.counters.frames_tx);
        self.last_tx = now;
    }

    /// The Ethernet header for a frame to the peer.
    pub fn eth(&self, control: bool) -> EthHeader {
        let vlan = match (self.p.vlan, control) {
            (Some(v), true) => Some(v.with_pcp(PCP_CONTROL)),
            (v, _) => v,
        };
        EthHeader {
            dst: self.p.peer,
            src: self.p.local,
            vlan,
            ethertype: self.p.ethertype,
        }
    }

    /// Runs timers and transmits: queued and replayed Data frames (at most
    /// [`LinkConfig::tx_budget`]), then an ACK-only frame if one is due.
    /// Stops at the first [`super::clock::SinkFull`]; call again when the
    /// transmit queue has room.
    pub fn poll<S: FrameSink + ?Sized>(&mut self, now: Instant, sink: &mut S) {
        self.now = now;
        self.sink_blocked = false;
        if self.state != LinkState::Open {
            return;
        }
        // Replay timer (RFC 6298 5.4-5.6): go back to the oldest unacked
        // frame and double the timeout.
        if let Some(t) = self.rto_timer {
            if now >= t {
                self.rto_timer = None;
                inc(&mut self.counters.timeouts);
                self.retries = self.retries.saturating_add(1);
                if self.retries > self.cfg.max_retries {
                    self.state = LinkState::Failed;
                    return;
                }
                self.rtt.back_off();
                self.snd_nxt = self.snd_una;
                // Ask for an immediate ACK: the frame may have arrived and
                // only its ACK been lost.
                self.probe_at = Some(now);
            }
        }
        let mut budget = self.cfg.tx_budget;
        while budget > 0 && seq_lt(self.snd_nxt, self.snd_end) {
            if self.transmit_one(now, sink).is_err() {
                self.sink_blocked = true;
                return;
            }
            budget = budget.saturating_sub(1);
        }
        // Credit probe when stalled with nothing in flight (like TCP's
        // persist timer): the peer answers with its current limits.
        let probe = match self.probe_at {
            Some(t) => now >= t && (self.credit_blocked || self.queued > 0),
            None => {
                if self.credit_blocked && self.queued == 0 {
                    self.probe_at = Some(now.saturating_add(self.rtt.rto()));
                }
                false
            }
        };
        if self.credits_dirty && self.ack_deadline.is_none() {
            self.ack_deadline = Some(now.saturating_add(self.cfg.ack_delay));
        }
        let ack_due = self.ack_now
            || self.nak_pending
            || (self.ack_pending && self.unacked >= self.cfg.ack_every)
            || self.ack_deadline.is_some_and(|d| now >= d);
        if ack_due || probe {
            let mut h = Header::new(Kind::Ack);
            self.fill_header(&mut h);
            if probe {
                h.flags |= flags::PROBE;
            }
            let eth = self.eth(true);
            let mut buf = [0u8; 128];
            let sent = frame::emit(&mut buf, &eth, &h, &[])
                .ok()
                .and_then(|len| buf.get(..len))
                .map(|f| sink.send(f));
            match sent {
                Some(Ok(())) => {
                    self.header_sent(now, &h);
                    inc(&mut self.counters.acks_tx);
                    if probe {
                        inc(&mut self.counters.probes_tx);
                        self.probe_at = if self.credit_blocked {
                            Some(now.saturating_add(self.rtt.rto()))
                        } else {
                            None
                        };
                    }
                }
                _ => self.sink_blocked = true,
            }
        }
    }

    fn transmit_one<S: FrameSink + ?Sized>(
        &mut self,
        now: Instant,
        sink: &mut S,
    ) -> Result<(), ()> {
        let k = self.snd_nxt.wrapping_sub(self.snd_una) as usize;
        let i = self.slot_index(k).ok_or(())?;
        let m = self.meta.get(i).copied().ok_or(())?;
        let mut h = Header::new(Kind::Data);
        h.seq = m.seq;
        h.count = m.count;
        self.fill_header(&mut h);
        if m.tx_count > 0 {
            h.flags |= flags::REPLAY;
        }
        let eth = self.eth(false);
        let item_off = L2_OVERHEAD.saturating_add(HEADER_LEN);
        let frame_len = frame::frame_len(m.len);
        let slot_size = self.slot_size;
        let slot = self.slot_bytes(i).ok_or(())?;
        // Rewrite the headers in place (ACK and credits are fresh) and pad.
        h.item_bytes = u16::try_from(m.len).map_err(|_| ())?;
        let off = eth.emit(slot).map_err(|_| ())?;
        // Slots are laid out for a tagged frame; an untagged one starts 4
        // bytes later so that the items stay where they are.
        if off != L2_OVERHEAD {
            return self.transmit_untagged(now, sink, i, &h);
        }
        h.emit(slot.get_mut(off..).ok_or(())?).map_err(|_| ())?;
        let end = item_off.saturating_add(m.len);
        if let Some(pad) = slot.get_mut(end..frame_len.min(slot_size)) {
            pad.fill(0);
        }
        let bytes = slot.get(..frame_len).ok_or(())?;
        sink.send(bytes).map_err(|_| ())?;
        self.after_data_tx(now, i, &h);
        Ok(())
    }

    /// Sends slot `i` as an untagged frame (no VLAN configured): the
    /// Ethernet header is written [`frame::VLAN_TAG_LEN`] bytes into the
    /// slot, so the items need not move and no second buffer is needed.
    fn transmit_untagged<S: FrameSink + ?Sized>(
        &mut self,
        now: Instant,
        sink: &mut S,
        i: usize,
        h: &Header,
    ) -> Result<(), ()> {
        let m = self.meta.get(i).copied().ok_or(())?;
        let eth = self.eth(false);
        let slot = self.slot_bytes(i).ok_or(())?;
        // Build the untagged frame starting 4 bytes into the slot, so that
        // its items land where they already are.
        let base = slot.get_mut(super::frame::VLAN_TAG_LEN..).ok_or(())?;
        let off = eth.emit(base).map_err(|_| ())?;
        h.emit(base.get_mut(off..).ok_or(())?).map_err(|_| ())?;
        let used = off.saturating_add(HEADER_LEN).saturating_add(m.len);
        let len = used.max(frame::ETH_MIN_FRAME);
        if let Some(pad) = base.get_mut(used..len) {
            pad.fill(0);
        }
        sink.send(base.get(..len).ok_or(())?).map_err(|_| ())?;
        self.after_data_tx(now, i, h);
        Ok(())
    }

    fn after_data_tx(&mut self, now: Instant, i: usize, h: &Header) {
        self.header_sent(now, h);
        if let Some(m) = self.meta.get_mut(i) {
            if m.tx_count == 0 {
                m.first_tx = Some(now);
                inc(&mut self.counters.data_frames_tx);
            } else {
                inc(&mut self.counters.replays);
            }
            m.tx_count = m.tx_count.saturating_add(1);
        }
        self.snd_nxt = self.snd_nxt.wrapping_add(1);
        if seq_lt(self.snd_max, self.snd_nxt) {
            self.snd_max = self.snd_nxt;
        }
        if self.rto_timer.is_none() {
            self.rto_timer = Some(now.saturating_add(self.rtt.rto()));
        }
    }

    /// When [`poll`](Self::poll) next has work: a timer, or `now` if frames
    /// are waiting to be sent. `None`: nothing until a frame arrives or a
    /// TLP is queued. (After a [`super::clock::SinkFull`] pending frames do
    /// not count: poll again when the transmit queue has room.)
    pub fn poll_at(&self) -> Option<Instant> {
        if self.state != LinkState::Open {
            return None;
        }
        let immediate = !self.sink_blocked
            && (seq_lt(self.snd_nxt, self.snd_end) || self.ack_now || self.nak_pending);
        let mut t = if immediate { Some(self.now) } else { None };
        t = earliest(t, self.rto_timer);
        if self.ack_pending || self.credits_dirty {
            let d = self.ack_deadline.unwrap_or(self.now);
            t = earliest(t, Some(d));
        }
        if self.credit_blocked || self.queued > 0 {
            t = earliest(t, self.probe_at);
        }
        t
    }

    /// Parses and processes one received Ethernet frame: it must carry our
    /// Ethertype and the session epoch and come from the peer. Rejected
    /// frames are counted in [`Counters::bad`].
    pub fn receive<D: Deliver + ?Sized>(&mut self, now: Instant, bytes: &[u8], deliver: &mut D) {
        match Frame::new_checked(bytes, self.p.ethertype) {
            Ok(f) => {
                if f.eth().src != self.p.peer || f.header().epoch != self.p.epoch {
                    inc(&mut self.counters.bad.unexpected);
                } else {
                    self.receive_pdu(now, f.pdu(), deliver);
                }
            }
            Err(e) => self.counters.bad.count(e),
        }
    }

    /// Processes a validated PDU of this session (the session has checked
    /// the epoch): piggybacked ACK, NAK and credits on any kind, TLPs of a
    /// Data frame.
    pub fn receive_pdu<T: AsRef<[u8]>, D: Deliver + ?Sized>(
        &mut self,
        now: Instant,
        pdu: &Pdu<T>,
        deliver: &mut D,
    ) {
        self.now = now;
        if self.state != LinkState::Open {
            inc(&mut self.counters.bad.unexpected);
            return;
        }
        inc(&mut self.counters.frames_rx);
        let h = *pdu.header();
        if h.has(flags::CREDIT) {
            self.tx_credits.update(&h.credits);
        }
        if h.has(flags::ACK) {
            self.on_ack(now, h.ack);
        }
        if h.has(flags::NAK) {
            self.on_nak(now, h.nak);
        }
        if h.has(flags::PROBE) {
            self.ack_now = true;
        }
        if h.kind == Kind::Data {
            self.on_data(now, &h, pdu, deliver);
        }
    }

    fn on_ack(&mut self, now: Instant, ack: u32) {
        if seq_le(ack, self.snd_una) {
            return;
        }
        if seq_lt(self.snd_max, ack) {
            inc(&mut self.counters.bad_acks);
            return;
        }
        let n = ack.wrapping_sub(self.snd_una) as usize;
        let last = n
            .checked_sub(1)
            .and_then(|k| self.slot_index(k))
            .and_then(|i| self.meta.get(i).copied());
        if let Some(m) = last {
            // Karn's algorithm: only frames sent once give RTT samples.
            if let (1, Some(t)) = (m.tx_count, m.first_tx) {
                self.rtt.sample(now.saturating_duration_since(t));
            }
        }
        self.head = self.slot_index(n).unwrap_or(0);
        self.queued = self.queued.saturating_sub(n);
        self.snd_una = ack;
        if seq_lt(self.snd_nxt, self.snd_una) {
            self.snd_nxt = self.snd_una;
        }
        self.retries = 0;
        self.probe_at = None;
        // RFC 6298 5.3: restart the timer when new data is acknowledged.
        self.rto_timer = if seq_lt(self.snd_una, self.snd_max) {
            Some(now.saturating_add(self.rtt.rto()))
        } else {
            None
        };
    }

    fn on_nak(&mut self, now: Instant, nak: u32) {
        self.on_ack(now, nak);
        if nak != self.snd_una || !seq_lt(nak, self.snd_max) {
            inc(&mut self.counters.naks_ignored);
            return;
        }
        // Act once per gap: a repeat of the same NAK within one RTT is a
        // duplicate or was sent before our replay arrived.
        if let Some((s, t)) = self.last_nak {
            let hold = self.rtt.srtt().max(self.cfg.rto_min);
            if s == nak && now < t.saturating_add(hold) {
                inc(&mut self.counters.naks_ignored);
                return;
            }
        }
        self.last_nak = Some((nak, now));
        inc(&mut self.counters.naks_rx);
        self.snd_nxt = self.snd_una;
        self.rto_timer = Some(now.saturating_add(self.rtt.rto()));
    }

    fn on_data<T: AsRef<[u8]>, D: Deliver + ?Sized>(
        &mut self,
        now: Instant,
        h: &Header,
        pdu: &Pdu<T>,
        deliver: &mut D,
    ) {
        if h.seq == self.rcv_nxt {
            for tlp in pdu.items() {
                let cost = Cost::of_tlp(tlp);
                if let Ok(c) = cost {
                    if !self.rx_credits.receive(c) {
                        inc(&mut self.counters.credit_overflows);
                    }
                } else {
                    inc(&mut self.counters.unclassified_tlps);
                }
                inc(&mut self.counters.tlps_rx);
                if deliver.deliver(tlp) == Release::Now {
                    if let Ok(c) = cost {
                        self.release(c);
                    }
                }
            }
            self.rcv_nxt = self.rcv_nxt.wrapping_add(1);
            self.nak_sent = false;
            self.ack_pending = true;
            self.unacked = self.unacked.saturating_add(1);
            if self.ack_deadline.is_none() {
                self.ack_deadline = Some(now.saturating_add(self.cfg.ack_delay));
            }
        } else if seq_lt(h.seq, self.rcv_nxt) {
            inc(&mut self.counters.duplicates);
            self.ack_now = true;
        } else {
            inc(&mut self.counters.out_of_order);
            if !self.nak_sent {
                self.nak_sent = true;
                self.nak_pending = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::clock::SinkFull;
    use super::super::credit::{Credits, FcClass};
    use super::*;

    const SZ: usize = 4 * (L2_OVERHEAD + 1500);

    /// A queue of up to 32 frames.
    struct Wire {
        frames: [[u8; 1600]; 32],
        lens: [usize; 32],
        n: usize,
        cap: usize,
    }

    impl Wire {
        fn new() -> Self {
            Wire {
                frames: [[0; 1600]; 32],
                lens: [0; 32],
                n: 0,
                cap: 32,
            }
        }
        fn take(&mut self) -> impl Iterator<Item = &[u8]> {
            let n = core::mem::replace(&mut self.n, 0);
            self.frames[..n]
                .iter()
                .zip(&self.lens[..n])
                .map(|(f, l)| &f[..*l])
        }
    }

    impl FrameSink for Wire {
        fn send(&mut self, f: &[u8]) -> Result<(), SinkFull> {
            if self.n == self.cap {
                return Err(SinkFull);
            }
            self.frames[self.n][..f.len()].copy_from_slice(f);
            self.lens[self.n] = f.len();
            self.n += 1;
            Ok(())
        }
    }

    fn params(a: u8, b: u8, isn_a: u32, isn_b: u32, vlan: bool) -> LinkParams {
        let c = Credits {
            header: 8,
            data: 64,
        };
        LinkParams {
            local: [2, 0, 0, 0, 0, a],
            peer: [2, 0, 0, 0, 0, b],
            ethertype: EtherType::default(),
            vlan: if vlan {
                Vlan::new(frame::Pcp::from_tc(0), 5)
            } else {
                None
            },
            epoch: 77,
            mtu: 1500,
            window: 4,
            tx_isn: isn_a,
            rx_isn: isn_b,
            local_credits: Advert {
                posted: c,
                non_posted: c,
                completion: Credits::default(),
            },
            peer_credits: Advert {
                posted: c,
                non_posted: c,
                completion: Credits::default(),
            },
        }
    }

    fn mwr(n: u8) -> [u8; 20] {
        let mut t = [0u8; 20];
        t[0] = 0x40;
        t[3] = 1;
        t[16] = n;
        t
    }

    #[test]
    fn seq_order_wraps() {
        assert!(seq_lt(u32::MAX, 0));
        assert!(seq_lt(0xffff_fff0, 5));
        assert!(!seq_lt(5, 0xffff_fff0));
        assert!(!seq_lt(3, 3));
        assert!(seq_le(3, 3));
    }

    #[test]
    fn rtt_estimator_follows_rfc6298() {
        let mut r = RttEstimator::new(
            Duration::from_millis(10),
            Duration::from_micros(100),
            Duration::from_millis(100),
        );
        assert_eq!(r.rto(), Duration::from_millis(10));
        r.sample(Duration::from_micros(400));
        // SRTT = 400, RTTVAR = 200, RTO = 400 + 4 * 200.
        assert_eq!(r.srtt(), Duration::from_micros(400));
        assert_eq!(r.rto(), Duration::from_micros(1200));
        r.sample(Duration::from_micros(800));
        // RTTVAR = 3/4 * 200 + 1/4 * 400 = 250; SRTT = 7/8 * 400 + 100 = 450.
        assert_eq!(r.rttvar(), Duration::from_micros(250));
        assert_eq!(r.srtt(), Duration::from_micros(450));
        assert_eq!(r.rto(), Duration::from_micros(1450));
        r.back_off();
        assert_eq!(r.rto(), Duration::from_micros(2900));
        for _ in 0..40 {
            r.back_off();
        }
        assert_eq!(r.rto(), Duration::from_millis(100));
    }

    #[test]
    fn rtt_estimator_saturates_on_huge_samples() {
        // Regression: RTTVAR's update overflowed (a panic with overflow
        // checks) for a second sample far from the first, both near 2^63 ns.
        let mut r = RttEstimator::new(
            Duration::from_millis(10),
            Duration::from_micros(100),
            Duration::from_millis(100),
        );
        r.sample(Duration::from_nanos(1 << 63));
        r.sample(Duration::from_nanos((1 << 63) - 1));
        r.sample(Duration::MAX);
        r.sample(Duration::MAX);
        assert_eq!(r.rto(), Duration::from_millis(100));
        r.sample(Duration::ZERO);
        assert_eq!(r.rto(), Duration::from_millis(100));
    }

    fn pair<'a>(
        a: &'a mut [u8],
        b: &'a mut [u8],
        isn_a: u32,
        isn_b: u32,
        vlan: bool,
    ) -> (Link<&'a mut [u8], 4>, Link<&'a mut [u8], 4>) {
        let mut la = Link::new(LinkConfig::default(), a);
        let mut lb = Link::new(LinkConfig::default(), b);
        la.open(Instant::ZERO, params(1, 2, isn_a, isn_b, vlan))
            .unwrap();
        lb.open(Instant::ZERO, params(2, 1, isn_b, isn_a, vlan))
            .unwrap();
        (la, lb)
    }

    #[test]
    fn batches_delivers_and_acks() {
        let (mut sa, mut sb) = ([0u8; SZ], [0u8; SZ]);
        for vlan in [true, false] {
            let (mut a, mut b) = pair(&mut sa, &mut sb, u32::MAX - 1, 10, vlan);
            let (mut wa, mut wb) = (Wire::new(), Wire::new());
            for n in 0..3 {
                a.send_tlp(&mwr(n)).unwrap();
            }
            a.poll(Instant::ZERO, &mut wa);
            assert_eq!(a.counters().data_frames_tx, 1, "three TLPs, one frame");
            let mut got = [0u8; 8];
            let mut k = 0;
            let t1 = Instant::from_micros(10);
            for f in wa.take() {
                b.receive(t1, f, &mut |t: &[u8]| {
                    got[k] = t[16];
                    k += 1;
                    // (Release::Now would free 3 of 8 header credits and
                    // send the update at once.)
                    Release::Later
                });
            }
            assert_eq!(&got[..k], &[0, 1, 2]);
            // The ACK waits for the ACK delay.
            b.poll(t1, &mut wb);
            assert_eq!(wb.n, 0);
            assert_eq!(b.poll_at(), Some(Instant::from_micros(60)));
            b.poll(Instant::from_micros(60), &mut wb);
            assert_eq!(b.counters().acks_tx, 1);
            for f in wb.take() {
                a.receive(Instant::from_micros(70), f, &mut |_: &[u8]| Release::Now);
            }
            assert_eq!(a.unacked_frames(), 0);
            assert_eq!(a.rtt().srtt(), Duration::from_micros(70));
            assert_eq!(a.poll_at(), None);
            assert_eq!(b.counters().bad.total(), 0);
        }
    }

    #[test]
    fn loss_is_repaired_by_nak_and_sequence_wraps() {
        let (mut sa, mut sb) = ([0u8; SZ], [0u8; SZ]);
        let (mut a, mut b) = pair(&mut sa, &mut sb, u32::MAX, 0, true);
        let (mut wa, mut wb) = (Wire::new(), Wire::new());
        // One TLP per frame: poll after each.
        for n in 0..3 {
            a.send_tlp(&mwr(n)).unwrap();
            a.poll(Instant::ZERO, &mut wa);
        }
        let mut got = [0u8; 8];
        let mut k = 0;
        let mut sink = |t: &[u8]| {
            got[k] = t[16];
            k += 1;
            Release::Now
        };
        // Drop the first frame.
        for (i, f) in wa.take().enumerate() {
            if i != 0 {
                b.receive(Instant::from_micros(5), f, &mut sink);
            }
        }
        assert_eq!(b.counters().out_of_order, 2);
        b.poll(Instant::from_micros(5), &mut wb);
        assert_eq!(b.counters().naks_tx, 1, "one NAK per gap");
        for f in wb.take() {
            a.receive(Instant::from_micros(10), f, &mut |_: &[u8]| Release::Now);
        }
        assert_eq!(a.counters().naks_rx, 1);
        a.poll(Instant::from_micros(10), &mut wa);
        assert_eq!(a.counters().replays, 3, "go-back-N replays all three");
        for f in wa.take() {
            b.receive(Instant::from_micros(15), f, &mut sink);
        }
        assert_eq!(&got[..k], &[0, 1, 2]);
    }

    #[test]
    fn lost_ack_is_repaired_by_timeout_and_duplicate_is_discarded() {
        let (mut sa, mut sb) = ([0u8; SZ], [0u8; SZ]);
        let (mut a, mut b) = pair(&mut sa, &mut sb, 1, 2, true);
        let (mut wa, mut wb) = (Wire::new(), Wire::new());
        a.send_tlp(&mwr(9)).unwrap();
        a.poll(Instant::ZERO, &mut wa);
        let mut delivered = 0;
        for f in wa.take() {
            b.receive(Instant::ZERO, f, &mut |_: &[u8]| {
                delivered += 1;
                Release::Now
            });
        }
        b.poll(Instant::from_millis(1), &mut wb);
        let _ = wb.take(); // ACK lost
        let rto = a.poll_at().unwrap();
        assert_eq!(rto, Instant::from_millis(10));
        a.poll(rto, &mut wa);
        assert_eq!(a.counters().timeouts, 1);
        assert_eq!(a.counters().replays, 1);
        for f in wa.take() {
            b.receive(rto, f, &mut |_: &[u8]| {
                delivered += 1;
                Release::Now
            });
        }
        assert_eq!(delivered, 1);
        assert_eq!(b.counters().duplicates, 1);
        b.poll(rto, &mut wb);
        assert_eq!(wb.n, 1, "a duplicate is acknowledged at once");
        for f in wb.take() {
            a.receive(rto, f, &mut |_: &[u8]| Release::Now);
        }
        assert_eq!(a.unacked_frames(), 0);
        assert_eq!(
            a.rtt().srtt(),
            Duration::ZERO,
            "Karn: no sample from a replay"
        );
    }

    #[test]
    fn window_and_credits_bound_sending() {
        let (mut sa, mut sb) = ([0u8; SZ], [0u8; SZ]);
        let (mut a, mut b) = pair(&mut sa, &mut sb, 0, 0, true);
        let (mut wa, mut wb) = (Wire::new(), Wire::new());
        // 8 posted header credits: the 9th TLP waits.
        for n in 0..8 {
            a.send_tlp(&mwr(n)).unwrap();
            a.poll(Instant::ZERO, &mut wa);
            if n == 3 {
                assert_eq!(a.send_tlp(&mwr(n)), Err(SendError::WindowFull));
                // Deliver and ack the first four, holding credits.
                for f in wa.take() {
                    b.receive(Instant::ZERO, f, &mut |_: &[u8]| Release::Later);
                }
                b.poll(Instant::from_millis(1), &mut wb);
                for f in wb.take() {
                    a.receive(Instant::from_millis(1), f, &mut |_: &[u8]| Release::Now);
                }
            }
        }
        assert_eq!(a.send_tlp(&mwr(8)), Err(SendError::NoCredit));
        assert_eq!(a.peer_credits(FcClass::Posted), (Some(0), Some(56)));
        // Completions are infinite, but the window is full.
        assert_eq!(a.peer_credits(FcClass::Completion), (None, None));
        let cpl = [0x4a, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4];
        assert_eq!(a.send_tlp(&cpl), Err(SendError::WindowFull));
        // The receiver releases its credits later; the update rides on an ACK.
        for f in wa.take() {
            b.receive(Instant::from_millis(2), f, &mut |_: &[u8]| Release::Now);
        }
        for _ in 0..4 {
            b.release(Cost::of_tlp(&mwr(0)).unwrap());
        }
        b.poll(Instant::from_millis(3), &mut wb);
        for f in wb.take() {
            a.receive(Instant::from_millis(3), f, &mut |_: &[u8]| Release::Now);
        }
        assert_eq!(a.peer_credits(FcClass::Posted).0, Some(8));
        assert!(a.send_tlp(&mwr(8)).is_ok());
        assert!(a.send_tlp(&cpl).is_ok());
        assert_eq!(b.counters().credit_overflows, 0);
    }

    #[test]
    fn credit_probe_recovers_a_lost_update() {
        let (mut sa, mut sb) = ([0u8; SZ], [0u8; SZ]);
        let (mut a, mut b) = pair(&mut sa, &mut sb, 0, 0, true);
        let (mut wa, mut wb) = (Wire::new(), Wire::new());
        for n in 0..8 {
            a.send_tlp(&mwr(n)).unwrap();
        }
        a.poll(Instant::ZERO, &mut wa);
        for f in wa.take() {
            b.receive(Instant::ZERO, f, &mut |_: &[u8]| Release::Now);
        }
        b.poll(Instant::from_millis(1), &mut wb);
        let _ = wb.take(); // ACK with the fresh credits lost
        assert_eq!(a.send_tlp(&mwr(8)), Err(SendError::NoCredit));
        // The replay timer repairs the lost ACK; the replay is a duplicate.
        let mut now = Instant::from_millis(1);
        for _ in 0..10 {
            now = a.poll_at().unwrap().max(now);
            a.poll(now, &mut wa);
            for f in wa.take() {
                b.receive(now, f, &mut |_: &[u8]| Release::Now);
            }
            b.poll(now, &mut wb);
            for f in wb.take() {
                a.receive(now, f, &mut |_: &[u8]| Release::Now);
            }
            if a.send_tlp(&mwr(8)).is_ok() {
                return;
            }
        }
        panic!("credits never came back");
    }

    #[test]
    fn bad_frames_are_counted_not_delivered() {
        let (mut sa, mut sb) = ([0u8; SZ], [0u8; SZ]);
        let (mut a, mut b) = pair(&mut sa, &mut sb, 0, 0, true);
        let mut wa = Wire::new();
        a.send_tlp(&mwr(1)).unwrap();
        a.poll(Instant::ZERO, &mut wa);
        let mut f = [0u8; 128];
        let len = wa.lens[0];
        f[..len].copy_from_slice(&wa.frames[0][..len]);
        let mut n = 0;
        let mut d = |_: &[u8]| {
            n += 1;
            Release::Now
        };
        b.receive(Instant::ZERO, &f[..30], &mut d);
        let mut g = f;
        g[L2_OVERHEAD + 7] ^= 1; // other epoch
        b.receive(Instant::ZERO, &g[..len], &mut d);
        let mut g = f;
        g[L2_OVERHEAD] = 9; // version
        b.receive(Instant::ZERO, &g[..len], &mut d);
        assert_eq!(n, 0);
        let bad = b.counters().bad;
        assert_eq!((bad.truncated, bad.unexpected, bad.version), (1, 1, 1));
        assert_eq!(
            a.send_tlp(&[0x80, 0, 0, 0]),
            Err(SendError::Malformed(ClassifyError::UnknownType(0x80)))
        );
        assert_eq!(a.send_tlp(&[0x40; 1500]), Err(SendError::TooLarge));
    }
}
