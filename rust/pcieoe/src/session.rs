// SPDX-License-Identifier: GPL-2.0

//! The session state machine: discovery, announce, open with negotiation,
//! heartbeat, close, and restart after a peer reboots.
//!
//! ```text
//!  host                                    device interface (DI)
//!  Discovering --Discovery (broadcast)-->  Listening
//!              <--Announce (unicast)----
//!  Opening     --Open (epoch E)-------->   Open(E)   (isn, mtu, window,
//!              <--OpenAck (epoch E)-----              credits negotiated)
//!  Open(E)     <==Data / Ack / Heartbeat==> Open(E)
//!  Closing     --Close----------------->   Listening
//!              <--Close (REPLY)---------
//! ```
//!
//! A *session epoch* (32 bits, never 0) is drawn from the [`Rng`] by the
//! host for every Open and stamped on every frame of the session; frames of
//! any other epoch are dropped and counted, so frames of an old session are
//! never accepted into a new one. A peer that receives frames of a session
//! it does not know (because it rebooted) answers with a Close of reason
//! [`CloseReason::UnknownSession`] for that epoch, so the other side
//! reconnects at once instead of waiting for the dead-peer timeout. A DI that
//! receives an Open with a new epoch from its host treats it as a host
//! restart and replaces the session. This assumes, as the PCIeoE fabric
//! does, that frames live in the network for far less than a session setup
//! takes (Ethernet has no store-and-forward beyond switch queues).
//!
//! Negotiation: version = 1 (the only one); MTU and window = the smaller of
//! the two sides; credits are per direction, so each side advertises its own
//! receive buffers and the other obeys them (PCIe InitFC).
//!
//! Heartbeats go out when no other frame was sent for
//! [`SessionConfig::heartbeat_interval`]; a peer silent for
//! [`SessionConfig::dead_timeout`] is declared dead. Every frame of the
//! session carries the piggybacked ACK and credits of the [`Link`].

use core::ops::DerefMut;

use super::clock::{earliest, Duration, FrameSink, Instant, Rng};
use super::credit::{Advert, Cost, Credits};
use super::ethertype::EtherType;
use super::frame::{
    self, flags, put_item, EthHeader, Frame, Header, Kind, Mac, Pdu, Vlan, BROADCAST, MAX_MTU,
    MIN_MTU, PCP_CONTROL, VERSION,
};
use super::link::{
    Deliver, Link, LinkConfig, LinkParams, LinkState, OpenError, Release, SendError,
};

/// Which end of a session this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The host interface: discovers and opens.
    Host,
    /// The device interface: announces and accepts.
    Device,
}

/// Session tunables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// Host or device interface.
    pub role: Role,
    /// Our MAC.
    pub local: Mac,
    /// The only peer accepted (`None`: the host opens the first DI that
    /// announces; a DI accepts any host).
    pub peer: Option<Mac>,
    /// Ethertype of every frame.
    pub ethertype: EtherType,
    /// 802.1Q tag for Data frames (`None`: untagged).
    pub vlan: Option<Vlan>,
    /// Largest MTU we support (bytes after the Ethertype).
    pub mtu: usize,
    /// Most frames in flight we accept.
    pub window: u16,
    /// Our receive credits (0 = infinite).
    pub credits: Advert,
    /// Our identity (serial number), reported in Discovery / Announce.
    pub id: u64,
    /// DI: number of functions reported in Announce.
    pub functions: u16,
    /// Host: period of Discovery broadcasts.
    pub discovery_interval: Duration,
    /// Host: Open retransmission period; Close retransmission period.
    pub open_retry: Duration,
    /// Host: Open attempts before going back to discovery.
    pub open_attempts: u16,
    /// Send a Heartbeat when nothing was sent for this long.
    pub heartbeat_interval: Duration,
    /// Declare the peer dead after this long without a valid frame.
    pub dead_timeout: Duration,
    /// Longest orderly close (draining plus waiting for the reply).
    pub close_timeout: Duration,
    /// Host: rediscover and reopen after the peer died, restarted or closed.
    pub auto_reconnect: bool,
    /// Link tunables.
    pub link: LinkConfig,
}

impl SessionConfig {
    /// Defaults for `role` at MAC `local`: MTU 1500, window 64, 64 posted
    /// and non-posted headers with 1024 data credits each, infinite
    /// completions, heartbeat every 100 ms, dead after 1 s.
    pub fn new(role: Role, local: Mac) -> Self {
        let c = Credits {
            header: 64,
            data: 1024,
        };
        SessionConfig {
            role,
            local,
            peer: None,
            ethertype: EtherType::default(),
            vlan: Vlan::new(frame::Pcp::from_tc(0), 0),
            mtu: frame::DEFAULT_MTU,
            window: 64,
            credits: Advert {
                posted: c,
                non_posted: c,
                completion: Credits::default(),
            },
            id: 0,
            functions: 0,
            discovery_interval: Duration::from_millis(100),
            open_retry: Duration::from_millis(20),
            open_attempts: 5,
            heartbeat_interval: Duration::from_millis(100),
            dead_timeout: Duration::from_secs(1),
            close_timeout: Duration::from_millis(200),
            auto_reconnect: true,
            link: LinkConfig::default(),
        }
    }
}

/// Why a session ended (also the Close body on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// An orderly close.
    Normal,
    /// The sender does not know the session (it restarted).
    UnknownSession,
    /// The sender is shutting down.
    Shutdown,
    /// A reason this engine does not know.
    Unknown(u8),
}

impl From<u8> for CloseReason {
    fn from(v: u8) -> Self {
        match v {
            1 => CloseReason::Normal,
            2 => CloseReason::UnknownSession,
            3 => CloseReason::Shutdown,
            o => CloseReason::Unknown(o),
        }
    }
}

impl From<CloseReason> for u8 {
    fn from(r: CloseReason) -> u8 {
        match r {
            CloseReason::Normal => 1,
            CloseReason::UnknownSession => 2,
            CloseReason::Shutdown => 3,
            CloseReason::Unknown(o) => o,
        }
    }
}

/// Why a session is not open (the argument of [`Event::Down`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DownReason {
    /// We closed it.
    LocalClose,
    /// The peer closed it.
    PeerClose(CloseReason),
    /// No frame from the peer for the dead-peer timeout.
    PeerDead,
    /// The link gave up replaying.
    LinkFailed,
    /// The peer opened a new session (it restarted).
    PeerRestarted,
    /// The Open was not answered.
    OpenTimeout,
}

/// Session state; timers live in the states that use them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Not started.
    Idle,
    /// Host: broadcasting Discovery.
    Discovering {
        /// Next Discovery.
        next_tx: Instant,
    },
    /// Host: Open sent to a DI.
    Opening {
        /// The epoch proposed.
        epoch: u32,
        /// Next Open retransmission.
        next_tx: Instant,
        /// Opens sent so far.
        attempts: u16,
    },
    /// DI: waiting for a host.
    Listening,
    /// Carrying TLPs.
    Open {
        /// The session epoch.
        epoch: u32,
    },
    /// Draining, then Close sent; waiting for the reply.
    Closing {
        /// The session epoch.
        epoch: u32,
        /// Give up waiting then.
        deadline: Instant,
        /// Next Close (re)transmission (`None` while draining).
        next_tx: Option<Instant>,
    },
    /// Ended (host without auto-reconnect, or after a local close).
    Closed {
        /// Why.
        reason: DownReason,
    },
}

/// Something the layer above should know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// Host: a DI announced itself.
    Discovered {
        /// Its MAC.
        mac: Mac,
        /// Its identity.
        id: u64,
        /// Functions it offers.
        functions: u16,
    },
    /// The session is open.
    Opened {
        /// The epoch.
        epoch: u32,
        /// The peer.
        peer: Mac,
        /// Negotiated MTU.
        mtu: usize,
    },
    /// The session ended: the layer above treats outstanding requests as
    /// failed (surprise removal).
    Down {
        /// The epoch that ended.
        epoch: u32,
        /// Why.
        reason: DownReason,
    },
    /// A Management frame body from the peer.
    Management(&'a [u8]),
}

/// What the session hands upwards.
pub trait Handler {
    /// A TLP, in order, exactly once.
    fn tlp(&mut self, tlp: &[u8]) -> Release;
    /// A session event.
    fn event(&mut self, ev: Event<'_>);
}

struct AsDeliver<'h, H: Handler + ?Sized>(&'h mut H);

impl<H: Handler + ?Sized> Deliver for AsDeliver<'_, H> {
    fn deliver(&mut self, tlp: &[u8]) -> Release {
        self.0.tlp(tlp)
    }
}

/// Session counters (the link has its own, see [`Session::link`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionCounters {
    /// Discovery frames sent.
    pub discoveries_tx: u64,
    /// Announce frames sent.
    pub announces_tx: u64,
    /// Open frames sent.
    pub opens_tx: u64,
    /// Open-Ack frames sent.
    pub open_acks_tx: u64,
    /// Sessions opened.
    pub opened: u64,
    /// Heartbeats sent.
    pub heartbeats_tx: u64,
    /// Heartbeats received.
    pub heartbeats_rx: u64,
    /// Close frames sent.
    pub closes_tx: u64,
    /// Frames of another session epoch dropped.
    pub stale_epoch: u64,
    /// Frames from a MAC that is not our peer, or not for us, dropped.
    pub wrong_peer: u64,
    /// Frames of a kind the current state does not take.
    pub unexpected: u64,
    /// Session bodies too short.
    pub bad_body: u64,
    /// Peers declared dead.
    pub dead_peers: u64,
    /// Peer restarts seen (new Open, or UnknownSession close).
    pub peer_restarts: u64,
    /// Sessions that failed because the link gave up.
    pub link_failures: u64,
}

fn inc(c: &mut u64) {
    *c = c.saturating_add(1);
}

/// The Open / Open-Ack body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct OpenBody {
    version: u8,
    mtu: u16,
    window: u16,
    isn: u32,
    id: u64,
    credits: Advert,
}

const OPEN_BODY_LEN: usize = 32;
const DISCOVERY_BODY_LEN: usize = 16;
const ANNOUNCE_BODY_LEN: usize = 24;

impl OpenBody {
    fn emit(&self) -> [u8; OPEN_BODY_LEN] {
        let mut b = [0u8; OPEN_BODY_LEN];
        let c = &self.credits;
        let mut w = Writer::new(&mut b);
        w.u8(self.version);
        w.u8(0);
        w.u16(self.mtu);
        w.u16(self.window);
        w.u16(0);
        w.u32(self.isn);
        w.u64(self.id);
        for v in [
            c.posted.header,
            c.posted.data,
            c.non_posted.header,
            c.non_posted.data,
            c.completion.header,
            c.completion.data,
        ] {
            w.u16(v);
        }
        b
    }

    fn parse(b: &[u8]) -> Option<OpenBody> {
        let mut r = Reader(b.get(..OPEN_BODY_LEN)?);
        let version = r.u8()?;
        r.u8()?;
        let mtu = r.u16()?;
        let window = r.u16()?;
        r.u16()?;
        let isn = r.u32()?;
        let id = r.u64()?;
        let mut cr = [0u16; 6];
        for v in cr.iter_mut() {
            *v = r.u16()?;
        }
        let [ph, pd, nph, npd, ch, cd] = cr;
        Some(OpenBody {
            version,
            mtu,
            window,
            isn,
            id,
            credits: Advert {
                posted: Credits {
                    header: ph,
                    data: pd,
                },
                non_posted: Credits {
                    header: nph,
                    data: npd,
                },
                completion: Credits {
                    header: ch,
                    data: cd,
                },
            },
        })
    }
}

struct Writer<'a> {
    b: &'a mut [u8],
    at: usize,
}

impl<'a> Writer<'a> {
    fn new(b: &'a mut [u8]) -> Self {
        Writer { b, at: 0 }
    }
    fn put(&mut self, v: &[u8]) {
        let end = self.at.saturating_add(v.len());
        if let Some(d) = self.b.get_mut(self.at..end) {
            d.copy_from_slice(v);
        }
        self.at = end;
    }
    fn u8(&mut self, v: u8) {
        self.put(&[v]);
    }
    fn u16(&mut self, v: u16) {
        self.put(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.put(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.put(&v.to_be_bytes());
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const K: usize>(&mut self) -> Option<[u8; K]> {
        let (h, t) = (self.0.get(..K)?, self.0.get(K..)?);
        let mut a = [0u8; K];
        a.copy_from_slice(h);
        self.0 = t;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|[v]| v)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take().map(u16::from_be_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_be_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_be_bytes)
    }
}

/// A pending control frame to a given MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    Announce { to: Mac, nonce: u32 },
    OpenAck,
    CloseReply { to: Mac, epoch: u32 },
    Refuse { to: Mac, epoch: u32 },
}

/// One PCIe-over-Ethernet session with one peer, driving its [`Link`].
pub struct Session<R: Rng, B: DerefMut<Target = [u8]>, const N: usize> {
    cfg: SessionConfig,
    rng: R,
    link: Link<B, N>,
    state: State,
    peer: Option<Mac>,
    nonce: u32,
    last_epoch: u32,
    local_isn: u32,
    last_rx: Instant,
    now: Instant,
    pending: [Option<Pending>; 4],
    refuse_hold: Instant,
    counters: SessionCounters,
}

/// Why [`Session::new`] refused its configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// MTU outside [`MIN_MTU`]..=[`MAX_MTU`].
    BadMtu,
    /// Window 0.
    BadWindow,
    /// Credits above [`super::credit::MAX_CREDITS`].
    BadCredits,
    /// The link storage cannot hold `N` frames of the MTU.
    StorageTooSmall,
    /// A zero timer or a dead timeout not above the heartbeat interval.
    BadTimers,
}

impl<R: Rng, B: DerefMut<Target = [u8]>, const N: usize> Session<R, B, N> {
    /// A session in [`State::Idle`]; `storage` holds the replay buffer
    /// ([`Link::storage_len`] of `cfg.mtu`).
    ///
    /// # Errors
    ///
    /// See [`ConfigError`].
    pub fn new(cfg: SessionConfig, rng: R, storage: B) -> Result<Self, ConfigError> {
        if !(MIN_MTU..=MAX_MTU).contains(&cfg.mtu) {
            return Err(ConfigError::BadMtu);
        }
        if cfg.window == 0 {
            return Err(ConfigError::BadWindow);
        }
        if !cfg.credits.is_valid() {
            return Err(ConfigError::BadCredits);
        }
        if N == 0 || storage.len() < Link::<B, N>::storage_len(cfg.mtu) {
            return Err(ConfigError::StorageTooSmall);
        }
        if cfg.heartbeat_interval == Duration::ZERO
            || cfg.dead_timeout <= cfg.heartbeat_interval
            || cfg.open_retry == Duration::ZERO
            || cfg.discovery_interval == Duration::ZERO
        {
            return Err(ConfigError::BadTimers);
        }
        Ok(Session {
            cfg,
            rng,
            link: Link::new(cfg.link, storage),
            state: State::Idle,
            peer: cfg.peer,
            nonce: 0,
            last_epoch: 0,
            local_isn: 0,
            last_rx: Instant::ZERO,
            now: Instant::ZERO,
            pending: [None; 4],
            refuse_hold: Instant::ZERO,
            counters: SessionCounters::default(),
        })
    }

    /// Starts discovery (host) or listening (DI).
    pub fn start(&mut self, now: Instant) {
        self.now = now;
        self.state = match self.cfg.role {
            Role::Host => {
                self.peer = self.cfg.peer;
                self.nonce = self.rng.next_u32();
                State::Discovering { next_tx: now }
            }
            Role::Device => State::Listening,
        };
    }

    /// The state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Is the session open?
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open { .. })
    }

    /// The current peer, if known.
    pub fn peer(&self) -> Option<Mac> {
        self.peer
    }

    /// The session counters.
    pub fn counters(&self) -> &SessionCounters {
        &self.counters
    }

    /// The link (counters, RTT, credits).
    pub fn link(&self) -> &Link<B, N> {
        &self.link
    }

    /// Queues a TLP on the open session (sent at the next [`poll`]).
    ///
    /// [`poll`]: Self::poll
    ///
    /// # Errors
    ///
    /// [`SendError::NotOpen`] unless open; otherwise see [`Link::send_tlp`].
    pub fn send_tlp(&mut self, tlp: &[u8]) -> Result<(), SendError> {
        if !self.is_open() {
            return Err(SendError::NotOpen);
        }
        self.link.send_tlp(tlp)
    }

    /// Frees the credits of a TLP delivered with [`Release::Later`].
    pub fn release(&mut self, cost: Cost) {
        self.link.release(cost);
    }

    /// Begins an orderly close: unacknowledged frames are drained first,
    /// then Close is sent until the peer replies or the close timeout.
    pub fn close(&mut self, now: Instant) {
        match self.state {
            State::Open { epoch } => {
                self.state = State::Closing {
                    epoch,
                    deadline: now.saturating_add(self.cfg.close_timeout),
                    next_tx: None,
                };
            }
            State::Closing { .. } | State::Closed { .. } => {}
            _ => {
                self.link.close();
                self.state = State::Closed {
                    reason: DownReason::LocalClose,
                };
            }
        }
    }

    fn push_pending(&mut self, p: Pending) {
        if self.pending.contains(&Some(p)) {
            return;
        }
        if let Some(slot) = self.pending.iter_mut().find(|s| s.is_none()) {
            *slot = Some(p);
        }
    }

    fn new_epoch(&mut self) -> u32 {
        // Never 0 (no session) and never the previous epoch.
        for _ in 0..8 {
            let e = self.rng.next_u32();
            if e != 0 && e != self.last_epoch {
                return e;
            }
        }
        self.last_epoch.wrapping_add(1).max(1)
    }

    /// Ends the current session and moves to the next state.
    fn down<H: Handler + ?Sized>(&mut self, epoch: u32, reason: DownReason, h: &mut H) {
        self.link.close();
        self.pending = [None; 4];
        h.event(Event::Down { epoch, reason });
        // Only our own close ends the host's interest in the DI. A DI that
        // closed in order (unloaded, rebooting, reconfigured) is looked for
        // again, so its functions come back when it returns, exactly as after
        // a dead peer; until then Discovery goes unanswered.
        let reconnect = reason != DownReason::LocalClose;
        self.state = match self.cfg.role {
            Role::Device => {
                self.peer = self.cfg.peer;
                State::Listening
            }
            Role::Host if reconnect && self.cfg.auto_reconnect => {
                self.peer = self.cfg.peer;
                self.nonce = self.rng.next_u32();
                State::Discovering { next_tx: self.now }
            }
            Role::Host => State::Closed { reason },
        };
    }

    fn current_epoch(&self) -> Option<u32> {
        match self.state {
            State::Open { epoch } | State::Closing { epoch, .. } => Some(epoch),
            _ => None,
        }
    }

    fn open_link(
        &mut self,
        now: Instant,
        epoch: u32,
        peer: Mac,
        body: &OpenBody,
    ) -> Result<usize, OpenError> {
        let mtu = usize::from(body.mtu).min(self.cfg.mtu);
        let window = body.window.min(self.cfg.window);
        self.link.open(
            now,
            LinkParams {
                local: self.cfg.local,
                peer,
                ethertype: self.cfg.ethertype,
                vlan: self.cfg.vlan,
                epoch,
                mtu,
                window,
                tx_isn: self.local_isn,
                rx_isn: body.isn,
                local_credits: self.cfg.credits,
                peer_credits: body.credits,
            },
        )?;
        self.last_epoch = epoch;
        self.last_rx = now;
        inc(&mut self.counters.opened);
        Ok(mtu)
    }

    fn our_open_body(&self) -> OpenBody {
        OpenBody {
            version: VERSION,
            mtu: u16::try_from(self.cfg.mtu).unwrap_or(u16::MAX),
            window: self.cfg.window,
            isn: self.local_isn,
            id: self.cfg.id,
            credits: self.cfg.credits,
        }
    }

    /// Processes one received Ethernet frame (destination MAC first, no
    /// FCS). TLPs and events go to `h`; replies are sent by the next
    /// [`poll`](Self::poll), which the caller runs after a batch of frames.
    pub fn receive<H: Handler + ?Sized>(&mut self, now: Instant, bytes: &[u8], h: &mut H) {
        self.now = now;
        let f = match Frame::new_checked(bytes, self.cfg.ethertype) {
            Ok(f) => f,
            Err(e) => {
                self.link.counters_mut().bad.count(e);
                return;
            }
        };
        let src = f.eth().src;
        let dst = f.eth().dst;
        if (dst != self.cfg.local && dst != BROADCAST) || src == self.cfg.local {
            inc(&mut self.counters.wrong_peer);
            return;
        }
        // In a session (or opening one) only its peer is heard; otherwise
        // only the configured peer, if any.
        let filter = match self.state {
            State::Open { .. } | State::Closing { .. } | State::Opening { .. } => self.peer,
            _ => self.cfg.peer,
        };
        if filter.is_some_and(|p| p != src) {
            inc(&mut self.counters.wrong_peer);
            return;
        }
        let hdr = *f.header();
        match hdr.kind {
            Kind::Discovery => self.on_discovery(src, f.pdu()),
            Kind::Announce => self.on_announce(now, src, f.pdu(), h),
            Kind::Open => self.on_open(now, src, f.pdu(), h),
            Kind::OpenAck => self.on_open_ack(now, src, f.pdu(), h),
            Kind::Close => self.on_close(src, f.pdu(), h),
            Kind::Data | Kind::Ack | Kind::Heartbeat | Kind::Management => {
                if Some(hdr.epoch) != self.current_epoch() || Some(src) != self.peer {
                    inc(&mut self.counters.stale_epoch);
                    self.maybe_refuse(now, src, hdr.epoch);
                    return;
                }
                self.last_rx = now;
                if hdr.kind == Kind::Heartbeat {
                    inc(&mut self.counters.heartbeats_rx);
                }
                if hdr.kind == Kind::Management {
                    if let Some(b) = f.pdu().body() {
                        h.event(Event::Management(b));
                    }
                }
                self.link.receive_pdu(now, f.pdu(), &mut AsDeliver(h));
            }
            Kind::Unknown(_) => inc(&mut self.counters.unexpected),
        }
    }

    /// Answers frames of a session we do not know with a Close
    /// (UnknownSession), at most once per heartbeat interval.
    fn maybe_refuse(&mut self, now: Instant, src: Mac, epoch: u32) {
        if epoch == 0 {
            return;
        }
        if let State::Opening { epoch: e, .. } = self.state {
            if e == epoch {
                // The peer accepted our Open and its first frames overtook
                // the Open-Ack: not an unknown session.
                return;
            }
        }
        if self.current_epoch().is_some() && Some(src) == self.peer {
            // An old session of our current peer: its frames are just stale.
            return;
        }
        if now < self.refuse_hold {
            return;
        }
        self.refuse_hold = now.saturating_add(self.cfg.heartbeat_interval);
        self.push_pending(Pending::Refuse { to: src, epoch });
    }

    fn on_discovery(&mut self, src: Mac, pdu: &Pdu<&[u8]>) {
        if self.cfg.role != Role::Device || self.state == State::Idle {
            inc(&mut self.counters.unexpected);
            return;
        }
        if self.cfg.peer.is_some_and(|p| p != src) {
            inc(&mut self.counters.wrong_peer);
            return;
        }
        let Some(mut r) = pdu
            .body()
            .filter(|b| b.len() >= DISCOVERY_BODY_LEN)
            .map(Reader)
        else {
            inc(&mut self.counters.bad_body);
            return;
        };
        let _version = r.u8();
        let _ = r.take::<3>();
        let nonce = r.u32().unwrap_or(0);
        self.push_pending(Pending::Announce { to: src, nonce });
    }

    fn on_announce<H: Handler + ?Sized>(
        &mut self,
        now: Instant,
        src: Mac,
        pdu: &Pdu<&[u8]>,
        h: &mut H,
    ) {
        if self.cfg.role != Role::Host || !matches!(self.state, State::Discovering { .. }) {
            inc(&mut self.counters.unexpected);
            return;
        }
        if self.cfg.peer.is_some_and(|p| p != src) {
            inc(&mut self.counters.wrong_peer);
            return;
        }
        let Some(mut r) = pdu
            .body()
            .filter(|b| b.len() >= ANNOUNCE_BODY_LEN)
            .map(Reader)
        else {
            inc(&mut self.counters.bad_body);
            return;
        };
        let version = r.u8().unwrap_or(0);
        let _ = r.take::<3>();
        let nonce = r.u32().unwrap_or(0);
        let id = r.u64().unwrap_or(0);
        let functions = r.u16().unwrap_or(0);
        if nonce != self.nonce || version != VERSION {
            inc(&mut self.counters.unexpected);
            return;
        }
        h.event(Event::Discovered {
            mac: src,
            id,
            functions,
        });
        self.peer = Some(src);
        self.local_isn = self.rng.next_u32();
        let epoch = self.new_epoch();
        self.state = State::Opening {
            epoch,
            next_tx: now,
            attempts: 0,
        };
    }

    fn on_open<H: Handler + ?Sized>(
        &mut self,
        now: Instant,
        src: Mac,
        pdu: &Pdu<&[u8]>,
        h: &mut H,
    ) {
        let epoch = pdu.header().epoch;
        if self.cfg.role != Role::Device || self.state == State::Idle || epoch == 0 {
            inc(&mut self.counters.unexpected);
            return;
        }
        let Some(body) = pdu.body().and_then(OpenBody::parse) else {
            inc(&mut self.counters.bad_body);
            return;
        };
        if body.version != VERSION
            || usize::from(body.mtu) < MIN_MTU
            || body.window == 0
            || !body.credits.is_valid()
        {
            inc(&mut self.counters.bad_body);
            return;
        }
        if let Some(cur) = self.current_epoch() {
            if cur == epoch && Some(src) == self.peer {
                // Our Open-Ack was lost: send it again.
                self.push_pending(Pending::OpenAck);
                return;
            }
            if Some(src) == self.peer {
                inc(&mut self.counters.peer_restarts);
                self.down(cur, DownReason::PeerRestarted, h);
            } else {
                // Another host while we serve one: one session per object.
                inc(&mut self.counters.wrong_peer);
                return;
            }
        }
        self.local_isn = self.rng.next_u32();
        self.peer = Some(src);
        match self.open_link(now, epoch, src, &body) {
            Ok(mtu) => {
                self.state = State::Open { epoch };
                self.push_pending(Pending::OpenAck);
                h.event(Event::Opened {
                    epoch,
                    peer: src,
                    mtu,
                });
            }
            Err(_) => inc(&mut self.counters.bad_body),
        }
    }

    fn on_open_ack<H: Handler + ?Sized>(
        &mut self,
        now: Instant,
        src: Mac,
        pdu: &Pdu<&[u8]>,
        h: &mut H,
    ) {
        let epoch = pdu.header().epoch;
        let State::Opening { epoch: want, .. } = self.state else {
            if self.current_epoch() != Some(epoch) {
                inc(&mut self.counters.stale_epoch);
            }
            return;
        };
        if epoch != want || Some(src) != self.peer {
            inc(&mut self.counters.stale_epoch);
            return;
        }
        let Some(body) = pdu.body().and_then(OpenBody::parse) else {
            inc(&mut self.counters.bad_body);
            return;
        };
        if body.version != VERSION || !body.credits.is_valid() || body.window == 0 {
            inc(&mut self.counters.bad_body);
            return;
        }
        match self.open_link(now, epoch, src, &body) {
            Ok(mtu) => {
                self.state = State::Open { epoch };
                h.event(Event::Opened {
                    epoch,
                    peer: src,
                    mtu,
                });
            }
            Err(_) => inc(&mut self.counters.bad_body),
        }
    }

    fn on_close<H: Handler + ?Sized>(&mut self, src: Mac, pdu: &Pdu<&[u8]>, h: &mut H) {
        let hdr = pdu.header();
        let reason = pdu
            .body()
            .and_then(|b| b.first().copied())
            .map_or(CloseReason::Unknown(0), CloseReason::from);
        let opening = match self.state {
            State::Opening { epoch, .. } => Some(epoch),
            _ => None,
        };
        let cur = self.current_epoch().or(opening);
        if cur != Some(hdr.epoch) || Some(src) != self.peer {
            inc(&mut self.counters.stale_epoch);
            return;
        }
        let epoch = hdr.epoch;
        if hdr.has(flags::REPLY) {
            if let State::Closing { .. } = self.state {
                self.down(epoch, DownReason::LocalClose, h);
            } else {
                inc(&mut self.counters.unexpected);
            }
            return;
        }
        if reason == CloseReason::UnknownSession {
            inc(&mut self.counters.peer_restarts);
        } else {
            self.push_pending(Pending::CloseReply { to: src, epoch });
        }
        // Keep the reply across the state change.
        let reply = self.pending;
        self.down(epoch, DownReason::PeerClose(reason), h);
        self.pending = reply;
    }

    /// Runs timers and sends what is due: session frames, the link's Data
    /// and ACK frames, heartbeats. Call after every batch of received
    /// frames, after queueing TLPs, and when [`poll_at`](Self::poll_at)
    /// arrives.
    pub fn poll<S: FrameSink + ?Sized, H: Handler + ?Sized>(
        &mut self,
        now: Instant,
        sink: &mut S,
        h: &mut H,
    ) {
        self.now = now;
        self.send_pending(sink);
        match self.state {
            State::Idle | State::Closed { .. } | State::Listening => {}
            State::Discovering { next_tx } => {
                if now >= next_tx {
                    let mut b = [0u8; DISCOVERY_BODY_LEN];
                    let mut w = Writer::new(&mut b);
                    w.u8(VERSION);
                    w.put(&[0; 3]);
                    w.u32(self.nonce);
                    w.u64(self.cfg.id);
                    if self.send_control(sink, BROADCAST, Kind::Discovery, 0, 0, &b) {
                        inc(&mut self.counters.discoveries_tx);
                    }
                    self.state = State::Discovering {
                        next_tx: now.saturating_add(self.cfg.discovery_interval),
                    };
                }
            }
            State::Opening {
                epoch,
                next_tx,
                attempts,
            } => {
                if now >= next_tx {
                    if attempts >= self.cfg.open_attempts {
                        self.down(epoch, DownReason::OpenTimeout, h);
                        return;
                    }
                    let body = self.our_open_body().emit();
                    let peer = self.peer.unwrap_or(BROADCAST);
                    if self.send_control(sink, peer, Kind::Open, epoch, 0, &body) {
                        inc(&mut self.counters.opens_tx);
                    }
                    self.state = State::Opening {
                        epoch,
                        next_tx: now.saturating_add(self.cfg.open_retry),
                        attempts: attempts.saturating_add(1),
                    };
                }
            }
            State::Open { epoch } => {
                if self.check_link(now, epoch, h) {
                    self.link.poll(now, sink);
                    if now
                        >= self
                            .link
                            .last_tx()
                            .saturating_add(self.cfg.heartbeat_interval)
                        && self.send_session(sink, Kind::Heartbeat, 0, &[])
                    {
                        inc(&mut self.counters.heartbeats_tx);
                    }
                }
            }
            State::Closing {
                epoch,
                deadline,
                next_tx,
            } => {
                if now >= deadline {
                    self.down(epoch, DownReason::LocalClose, h);
                    return;
                }
                self.link.poll(now, sink);
                let drained =
                    self.link.unacked_frames() == 0 || self.link.state() != LinkState::Open;
                let due = match next_tx {
                    Some(t) => now >= t,
                    None => drained,
                };
                if due {
                    let body = [u8::from(CloseReason::Normal)];
                    if self.send_session(sink, Kind::Close, 0, &body) {
                        inc(&mut self.counters.closes_tx);
                    }
                    self.state = State::Closing {
                        epoch,
                        deadline,
                        next_tx: Some(now.saturating_add(self.cfg.open_retry)),
                    };
                }
            }
        }
    }

    /// Dead peer and link failure; returns whether the session is still open.
    fn check_link<H: Handler + ?Sized>(&mut self, now: Instant, epoch: u32, h: &mut H) -> bool {
        if now >= self.last_rx.saturating_add(self.cfg.dead_timeout) {
            inc(&mut self.counters.dead_peers);
            self.down(epoch, DownReason::PeerDead, h);
            return false;
        }
        if self.link.state() == LinkState::Failed {
            inc(&mut self.counters.link_failures);
            self.down(epoch, DownReason::LinkFailed, h);
            return false;
        }
        true
    }

    fn send_pending<S: FrameSink + ?Sized>(&mut self, sink: &mut S) {
        for i in 0..self.pending.len() {
            let Some(p) = self.pending.get(i).copied().flatten() else {
                continue;
            };
            let sent = match p {
                Pending::Announce { to, nonce } => {
                    let mut b = [0u8; ANNOUNCE_BODY_LEN];
                    let mut w = Writer::new(&mut b);
                    w.u8(VERSION);
                    w.put(&[0; 3]);
                    w.u32(nonce);
                    w.u64(self.cfg.id);
                    w.u16(self.cfg.functions);
                    w.u16(u16::try_from(self.cfg.mtu).unwrap_or(u16::MAX));
                    w.u16(self.cfg.window);
                    let ok = self.send_control(sink, to, Kind::Announce, 0, 0, &b);
                    if ok {
                        inc(&mut self.counters.announces_tx);
                    }
                    ok
                }
                Pending::OpenAck => match (self.current_epoch(), self.peer) {
                    (Some(_), Some(_)) => {
                        let body = self.our_open_body().emit();
                        let ok = self.send_session(sink, Kind::OpenAck, 0, &body);
                        if ok {
                            inc(&mut self.counters.open_acks_tx);
                        }
                        ok
                    }
                    _ => true,
                },
                Pending::CloseReply { to: peer, epoch } => {
                    let body = [u8::from(CloseReason::Normal)];
                    let ok = self.send_control(sink, peer, Kind::Close, epoch, flags::REPLY, &body);
                    if ok {
                        inc(&mut self.counters.closes_tx);
                    }
                    ok
                }
                Pending::Refuse { to, epoch } => {
                    let body = [u8::from(CloseReason::UnknownSession)];
                    let ok = self.send_control(sink, to, Kind::Close, epoch, 0, &body);
                    if ok {
                        inc(&mut self.counters.closes_tx);
                    }
                    ok
                }
            };
            if !sent {
                return;
            }
            if let Some(s) = self.pending.get_mut(i) {
                *s = None;
            }
        }
    }

    /// Sends a frame of the open session with the link's piggybacked fields.
    fn send_session<S: FrameSink + ?Sized>(
        &mut self,
        sink: &mut S,
        kind: Kind,
        fl: u16,
        body: &[u8],
    ) -> bool {
        let mut hdr = Header::new(kind);
        hdr.flags = fl;
        self.link.fill_header(&mut hdr);
        let eth = self.link.eth(true);
        if emit_control(sink, &eth, &mut hdr, body) {
            self.link.header_sent(self.now, &hdr);
            true
        } else {
            false
        }
    }

    /// Sends a frame outside the link (discovery, announce, open, refusal).
    fn send_control<S: FrameSink + ?Sized>(
        &mut self,
        sink: &mut S,
        to: Mac,
        kind: Kind,
        epoch: u32,
        fl: u16,
        body: &[u8],
    ) -> bool {
        let mut hdr = Header::new(kind);
        hdr.epoch = epoch;
        hdr.flags = fl;
        let eth = EthHeader {
            dst: to,
            src: self.cfg.local,
            vlan: self.cfg.vlan.map(|v| v.with_pcp(PCP_CONTROL)),
            ethertype: self.cfg.ethertype,
        };
        emit_control(sink, &eth, &mut hdr, body)
    }

    /// Sends a Management frame to the open peer (best effort, not
    /// sequenced: the layer above retries if it needs to).
    ///
    /// # Errors
    ///
    /// [`SendError::NotOpen`], [`SendError::TooLarge`] above 256 bytes,
    /// [`SendError::WindowFull`] when the sink is full.
    pub fn send_management<S: FrameSink + ?Sized>(
        &mut self,
        now: Instant,
        body: &[u8],
        sink: &mut S,
    ) -> Result<(), SendError> {
        if !self.is_open() {
            return Err(SendError::NotOpen);
        }
        if body.is_empty() || body.len() > MAX_CONTROL_BODY {
            return Err(SendError::TooLarge);
        }
        self.now = now;
        if self.send_session(sink, Kind::Management, 0, body) {
            Ok(())
        } else {
            Err(SendError::WindowFull)
        }
    }

    /// When [`poll`](Self::poll) next has work (`None`: only on input).
    pub fn poll_at(&self) -> Option<Instant> {
        let pending = self.pending.iter().any(Option::is_some).then_some(self.now);
        let t = match self.state {
            State::Idle | State::Closed { .. } | State::Listening => None,
            State::Discovering { next_tx } | State::Opening { next_tx, .. } => Some(next_tx),
            State::Open { .. } => {
                let hb = self
                    .link
                    .last_tx()
                    .saturating_add(self.cfg.heartbeat_interval);
                let dead = self.last_rx.saturating_add(self.cfg.dead_timeout);
                let failed = (self.link.state() == LinkState::Failed).then_some(self.now);
                earliest(
                    earliest(Some(hb), Some(dead)),
                    earliest(failed, self.link.poll_at()),
                )
            }
            State::Closing {
                deadline, next_tx, ..
            } => {
                let drain = if next_tx.is_none() && self.link.unacked_frames() == 0 {
                    Some(self.now)
                } else {
                    None
                };
                earliest(
                    earliest(Some(deadline), next_tx),
                    earliest(drain, self.link.poll_at()),
                )
            }
        };
        earliest(pending, t)
    }
}

/// The largest session frame body (Management included).
pub const MAX_CONTROL_BODY: usize = 256;

fn emit_control<S: FrameSink + ?Sized>(
    sink: &mut S,
    eth: &EthHeader,
    hdr: &mut Header,
    body: &[u8],
) -> bool {
    let mut items = [0u8; MAX_CONTROL_BODY + 2];
    let len = if body.is_empty() {
        hdr.count = 0;
        0
    } else {
        hdr.count = 1;
        match put_item(&mut items, 0, body) {
            Ok(l) => l,
            Err(_) => return false,
        }
    };
    let mut buf = [0u8; MAX_CONTROL_BODY + 2 + frame::HEADER_LEN + frame::L2_OVERHEAD];
    let Some(area) = items.get(..len) else {
        return false;
    };
    match frame::emit(&mut buf, eth, hdr, area) {
        Ok(n) => buf.get(..n).is_some_and(|f| sink.send(f).is_ok()),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::super::clock::SinkFull;
    use super::*;

    struct Lcg(u32);
    impl Rng for Lcg {
        fn next_u32(&mut self) -> u32 {
            self.0 = self.0.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            self.0
        }
    }

    /// Up to 16 queued frames.
    struct Q {
        f: [([u8; 1600], usize); 16],
        n: usize,
    }
    impl Q {
        fn new() -> Self {
            Q {
                f: [([0; 1600], 0); 16],
                n: 0,
            }
        }
    }
    impl FrameSink for Q {
        fn send(&mut self, b: &[u8]) -> Result<(), SinkFull> {
            let s = self.f.get_mut(self.n).ok_or(SinkFull)?;
            s.0[..b.len()].copy_from_slice(b);
            s.1 = b.len();
            self.n += 1;
            Ok(())
        }
    }

    #[derive(Default)]
    struct Up {
        tlps: u32,
        opened: u32,
        down: Option<DownReason>,
        discovered: u32,
    }
    impl Handler for Up {
        fn tlp(&mut self, _: &[u8]) -> Release {
            self.tlps += 1;
            Release::Now
        }
        fn event(&mut self, ev: Event<'_>) {
            match ev {
                Event::Opened { .. } => self.opened += 1,
                Event::Down { reason, .. } => self.down = Some(reason),
                Event::Discovered { .. } => self.discovered += 1,
                Event::Management(_) => {}
            }
        }
    }

    const SZ: usize = 4 * (frame::L2_OVERHEAD + 1500);
    type S<'a> = Session<Lcg, &'a mut [u8], 4>;

    fn exchange(a: &mut S<'_>, ua: &mut Up, b: &mut S<'_>, ub: &mut Up, now: Instant) {
        for _ in 0..4 {
            let (mut qa, mut qb) = (Q::new(), Q::new());
            a.poll(now, &mut qa, ua);
            b.poll(now, &mut qb, ub);
            for (f, l) in &qa.f[..qa.n] {
                b.receive(now, &f[..*l], ub);
            }
            for (f, l) in &qb.f[..qb.n] {
                a.receive(now, &f[..*l], ua);
            }
        }
    }

    #[test]
    fn discover_open_transfer_close() {
        let (mut sa, mut sb) = ([0u8; SZ], [0u8; SZ]);
        let mut hc = SessionConfig::new(Role::Host, [2, 0, 0, 0, 0, 1]);
        hc.mtu = 1500;
        let mut dc = SessionConfig::new(Role::Device, [2, 0, 0, 0, 0, 2]);
        dc.mtu = 1000;
        dc.window = 2;
        dc.functions = 3;
        let mut host: S<'_> = Session::new(hc, Lcg(1), &mut sa[..]).unwrap();
        let mut dev: S<'_> = Session::new(dc, Lcg(2), &mut sb[..]).unwrap();
        let (mut uh, mut ud) = (Up::default(), Up::default());
        host.start(Instant::ZERO);
        dev.start(Instant::ZERO);
        exchange(&mut host, &mut uh, &mut dev, &mut ud, Instant::ZERO);
        assert!(host.is_open() && dev.is_open());
        assert_eq!((uh.discovered, uh.opened, ud.opened), (1, 1, 1));
        assert_eq!(host.link().params().mtu, 1000);
        assert_eq!(host.link().params().window, 2);
        let (State::Open { epoch: e1 }, State::Open { epoch: e2 }) = (host.state(), dev.state())
        else {
            panic!()
        };
        assert_eq!(e1, e2);
        assert_ne!(e1, 0);
        host.send_tlp(&[0x40, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 9, 9, 9, 9])
            .unwrap();
        exchange(
            &mut host,
            &mut uh,
            &mut dev,
            &mut ud,
            Instant::from_millis(1),
        );
        assert_eq!(ud.tlps, 1);
        exchange(
            &mut host,
            &mut uh,
            &mut dev,
            &mut ud,
            Instant::from_millis(2),
        );
        assert_eq!(host.link().unacked_frames(), 0);
        // Heartbeats when idle.
        exchange(
            &mut host,
            &mut uh,
            &mut dev,
            &mut ud,
            Instant::from_millis(150),
        );
        assert!(host.counters().heartbeats_tx >= 1 && dev.counters().heartbeats_rx >= 1);
        host.close(Instant::from_millis(160));
        exchange(
            &mut host,
            &mut uh,
            &mut dev,
            &mut ud,
            Instant::from_millis(160),
        );
        assert_eq!(
            host.state(),
            State::Closed {
                reason: DownReason::LocalClose
            }
        );
        assert_eq!(dev.state(), State::Listening);
        assert_eq!(ud.down, Some(DownReason::PeerClose(CloseReason::Normal)));
    }

    #[test]
    fn dead_peer_and_restart() {
        let (mut sa, mut sb, mut sc) = ([0u8; SZ], [0u8; SZ], [0u8; SZ]);
        let hc = SessionConfig::new(Role::Host, [2, 0, 0, 0, 0, 1]);
        let dc = SessionConfig::new(Role::Device, [2, 0, 0, 0, 0, 2]);
        let mut host: S<'_> = Session::new(hc, Lcg(1), &mut sa[..]).unwrap();
        let mut dev: S<'_> = Session::new(dc, Lcg(2), &mut sb[..]).unwrap();
        let (mut uh, mut ud) = (Up::default(), Up::default());
        host.start(Instant::ZERO);
        dev.start(Instant::ZERO);
        exchange(&mut host, &mut uh, &mut dev, &mut ud, Instant::ZERO);
        assert!(host.is_open());
        // Silence past the dead timeout.
        let mut q = Q::new();
        host.poll(Instant::from_secs_for_test(2), &mut q, &mut uh);
        assert_eq!(uh.down, Some(DownReason::PeerDead));
        assert!(matches!(host.state(), State::Discovering { .. }));
        // The DI restarts (new object, new Rng); the host reconnects with a
        // new epoch and the DI refuses frames of the old one.
        let mut dev2: S<'_> = Session::new(dc, Lcg(99), &mut sc[..]).unwrap();
        let mut ud2 = Up::default();
        dev2.start(Instant::ZERO);
        let t = Instant::from_secs_for_test(2);
        exchange(&mut host, &mut uh, &mut dev2, &mut ud2, t);
        assert!(host.is_open() && dev2.is_open());
        assert_eq!(uh.opened, 2);
        let _ = dev;
    }

    #[test]
    fn host_looks_for_the_device_again_after_its_orderly_close() {
        let (mut sa, mut sb, mut sc) = ([0u8; SZ], [0u8; SZ], [0u8; SZ]);
        let hc = SessionConfig::new(Role::Host, [2, 0, 0, 0, 0, 1]);
        let dc = SessionConfig::new(Role::Device, [2, 0, 0, 0, 0, 2]);
        let mut host: S<'_> = Session::new(hc, Lcg(1), &mut sa[..]).unwrap();
        let mut dev: S<'_> = Session::new(dc, Lcg(2), &mut sb[..]).unwrap();
        let (mut uh, mut ud) = (Up::default(), Up::default());
        host.start(Instant::ZERO);
        dev.start(Instant::ZERO);
        exchange(&mut host, &mut uh, &mut dev, &mut ud, Instant::ZERO);
        let State::Open { epoch: e1 } = host.state() else {
            panic!()
        };
        // The DI unloads: its Close is answered and it goes away.
        let t = Instant::from_millis(10);
        dev.close(t);
        let (mut qh, mut qd) = (Q::new(), Q::new());
        dev.poll(t, &mut qd, &mut ud);
        for (f, l) in &qd.f[..qd.n] {
            host.receive(t, &f[..*l], &mut uh);
        }
        host.poll(t, &mut qh, &mut uh);
        assert_eq!(uh.down, Some(DownReason::PeerClose(CloseReason::Normal)));
        assert!(matches!(host.state(), State::Discovering { .. }));
        assert_eq!(host.counters().dead_peers, 0);
        // A new DI comes up: the host opens a new session with it.
        let mut dev2: S<'_> = Session::new(dc, Lcg(7), &mut sc[..]).unwrap();
        let mut ud2 = Up::default();
        dev2.start(t);
        exchange(
            &mut host,
            &mut uh,
            &mut dev2,
            &mut ud2,
            Instant::from_millis(200),
        );
        let State::Open { epoch: e2 } = host.state() else {
            panic!("host is {:?}", host.state())
        };
        assert_ne!(e1, e2);
        assert_eq!(uh.opened, 2);
    }

    impl Instant {
        fn from_secs_for_test(s: u64) -> Instant {
            Instant::from_millis(s * 1000)
        }
    }

    #[test]
    fn bad_configs_are_refused() {
        let mut s = [0u8; SZ];
        let mut c = SessionConfig::new(Role::Host, [2; 6]);
        c.mtu = 100;
        assert!(matches!(
            S::new(c, Lcg(0), &mut s[..]),
            Err(ConfigError::BadMtu)
        ));
        let mut c = SessionConfig::new(Role::Host, [2; 6]);
        c.mtu = 9000;
        assert!(matches!(
            S::new(c, Lcg(0), &mut s[..]),
            Err(ConfigError::StorageTooSmall)
        ));
        let mut c = SessionConfig::new(Role::Host, [2; 6]);
        c.dead_timeout = c.heartbeat_interval;
        assert!(matches!(
            S::new(c, Lcg(0), &mut s[..]),
            Err(ConfigError::BadTimers)
        ));
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]
            /// Mutated and truncated frames of an open session never panic
            /// and never deliver more than the TLPs that were sent.
            #[test]
            fn mutated_frames_are_harmless(
                muts in proptest::collection::vec((0usize..200, any::<u8>()), 1..6),
                cut in 0usize..200,
                noise in proptest::collection::vec(any::<u8>(), 0..200),
            ) {
                let (mut sa, mut sb) = ([0u8; SZ], [0u8; SZ]);
                let hc = SessionConfig::new(Role::Host, [2, 0, 0, 0, 0, 1]);
                let dc = SessionConfig::new(Role::Device, [2, 0, 0, 0, 0, 2]);
                let mut host: S<'_> = Session::new(hc, Lcg(1), &mut sa[..]).unwrap();
                let mut dev: S<'_> = Session::new(dc, Lcg(2), &mut sb[..]).unwrap();
                let (mut uh, mut ud) = (Up::default(), Up::default());
                host.start(Instant::ZERO);
                dev.start(Instant::ZERO);
                exchange(&mut host, &mut uh, &mut dev, &mut ud, Instant::ZERO);
                prop_assert!(host.is_open());
                host.send_tlp(&[0x40, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 7, 7, 7, 7]).unwrap();
                let mut q = Q::new();
                host.poll(Instant::ZERO, &mut q, &mut uh);
                let (f, len) = q.f[0];
                let mut g = f;
                for (i, v) in &muts {
                    g[*i % len] = *v;
                }
                let t = Instant::from_micros(1);
                dev.receive(t, &g[..len.min(cut.max(1))], &mut ud);
                dev.receive(t, &g[..len], &mut ud);
                dev.receive(t, &noise, &mut ud);
                dev.receive(t, &f[..len], &mut ud);
                dev.receive(t, &f[..len], &mut ud);
                let mut q = Q::new();
                dev.poll(t, &mut q, &mut ud);
                prop_assert!(ud.tlps <= 1);
            }
        }
    }

    #[test]
    fn open_body_round_trip() {
        let b = OpenBody {
            version: 1,
            mtu: 1500,
            window: 64,
            isn: 0xdead_beef,
            id: 42,
            credits: SessionConfig::new(Role::Host, [0; 6]).credits,
        };
        assert_eq!(OpenBody::parse(&b.emit()), Some(b));
        assert_eq!(OpenBody::parse(&b.emit()[..31]), None);
        for v in 0..=255u8 {
            assert_eq!(u8::from(CloseReason::from(v)), v);
        }
    }
}
