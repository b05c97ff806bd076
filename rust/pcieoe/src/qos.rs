// SPDX-License-Identifier: GPL-2.0

//! QoS scheduler: strict priority between traffic classes, deficit round
//! robin between the flows of a class, and a token-bucket rate limit per flow.
//!
//! A *flow* is whatever the caller queues separately — on the device
//! interface, one PCIe function (a vNIC, a vHBA, an SR-IOV VF) towards one
//! host. Each flow belongs to one of eight traffic classes (TC0..TC7). The
//! scheduler decides which flow sends next:
//!
//! 1. **Strict priority.** Each class maps to a priority level (by default
//!    TC*n* has level *n*, so TC7 is served first). A backlogged flow of a
//!    higher level is always served before any flow of a lower level: lower
//!    levels can starve, which is what strict priority means. Classes that
//!    share a level share one round robin.
//! 2. **Deficit round robin** (Shreedhar and Varghese, "Efficient fair
//!    queueing using deficit round robin", SIGCOMM 1995) between the flows of
//!    a level: each flow gets `quantum` bytes of credit per round, so
//!    backlogged flows share the level's bandwidth in proportion to their
//!    quanta.
//! 3. **Token bucket** per flow (optional): a flow may send a packet of `len`
//!    bytes only when its bucket holds `len` tokens; tokens accrue at `rate`
//!    bytes per second up to `burst`. A flow without tokens waits on a timer
//!    wheel and leaves the round robin until it conforms again, so the
//!    scheduler stays work-conserving for everyone else.
//!
//! The scheduler does not own packets. The caller reports each flow's head
//! packet with [`Scheduler::set_head`] (or [`Scheduler::set_empty`]) and asks
//! [`Scheduler::next`] which flow to send from. `next` charges the head packet
//! to that flow and moves it to [`FlowState::Sent`]; the caller sends the
//! packet and then reports the flow's new head (or that it is empty). When
//! `next` returns `None` while flows are backlogged, they are all
//! rate-limited: [`Scheduler::next_eligible_at`] says when to poll again.
//! Time is an [`Instant`] passed in (nanoseconds internally); the scheduler
//! never reads a clock.
//!
//! # Cost
//!
//! Every operation is O(1) in the number of flows, except that `next` also
//! moves the flows whose rate-limit timer expired back into the round robin,
//! O(1) for each such flow (so O(1) amortised per packet). No hot-path
//! operation walks the flow table:
//!
//! * the backlogged flows of each level are an intrusive doubly linked list
//!   threaded through the flow table by index, so joining, leaving and
//!   rotating are O(1);
//! * a bitmap of non-empty levels gives the highest one with one
//!   `leading_zeros`;
//! * a flow stays on its level's list only while it can send its head packet
//!   at once: its deficit covers the packet (quanta are at least
//!   `max_packet`, so one top-up always suffices) and its bucket holds the
//!   tokens. `next` therefore just takes the head of the highest list, never
//!   skipping anything;
//! * rate-limited flows wait on a 64-slot timer wheel of `tick_ns` slots with
//!   a bitmap of non-empty slots; a flow further away than the wheel's
//!   horizon waits in the last slot and is checked again when it expires.
//!
//! [`Scheduler::check_invariants`] walks everything and is for tests and
//! fuzzers only.
//!
//! # Examples
//!
//! ```
//! use pcieoe::clock::Instant;
//! use pcieoe::qos::{Config, FlowConfig, FlowId, RateLimit, Scheduler};
//!
//! let mut s: Scheduler<4> = Scheduler::new(Config::new(1500))?;
//! // Flow 0: bulk, TC1. Flow 1: latency-sensitive, TC5, limited to
//! // 125 MB/s (1 Gb/s) with a 3000-byte burst.
//! s.configure(FlowId(0), FlowConfig { class: 1, quantum: 1500, rate: None })?;
//! s.configure(
//!     FlowId(1),
//!     FlowConfig {
//!         class: 5,
//!         quantum: 1500,
//!         rate: Some(RateLimit { bytes_per_sec: 125_000_000, burst: 3000 }),
//!     },
//! )?;
//! s.set_head(FlowId(0), 1500)?;
//! s.set_head(FlowId(1), 1500)?;
//!
//! // TC5 goes first while it has tokens.
//! assert_eq!(s.next(Instant::ZERO), Some(FlowId(1)));
//! s.set_head(FlowId(1), 1500)?;
//! assert_eq!(s.next(Instant::ZERO), Some(FlowId(1)));
//! s.set_head(FlowId(1), 1500)?;
//! // Its burst is spent: TC1 gets the link meanwhile.
//! assert_eq!(s.next(Instant::ZERO), Some(FlowId(0)));
//! s.set_empty(FlowId(0))?;
//! assert_eq!(s.next(Instant::ZERO), None);
//! // 1500 bytes at 125 MB/s take 12 µs.
//! assert_eq!(s.next_eligible_at(), Some(Instant::from_micros(12)));
//! assert_eq!(s.next(Instant::from_micros(12)), Some(FlowId(1)));
//! # Ok::<(), pcieoe::qos::Error>(())
//! ```

use core::fmt;

use super::clock::Instant;

/// The number of traffic classes (TC0..TC7) and of priority levels.
pub const CLASSES: usize = 8;

/// The largest number of flows a [`Scheduler`] can have.
///
/// Flow indices are 16-bit and one value marks the end of a list.
pub const MAX_FLOWS: usize = 0xFFFF;

/// The largest quantum, burst and packet length, in bytes (1 GiB).
pub const MAX_BYTES: u32 = 1 << 30;

/// The largest rate limit, in bytes per second (2^40, about 8.8 Tb/s).
pub const MAX_RATE: u64 = 1 << 40;

/// The default timer-wheel slot length: 1 µs, about one 1500-byte frame at
/// 10 Gb/s.
pub const DEFAULT_TICK_NS: u64 = 1_000;

const NANOS_PER_SEC: u64 = 1_000_000_000;
const WHEEL_SLOTS: u64 = 64;
const NIL: u16 = u16::MAX;
const NO_LIST: u8 = u8::MAX;
// Lists 0..CLASSES are the active lists of the priority levels, then come the
// wheel slots, then a scratch list used while expiring the wheel.
const FIRST_SLOT: u8 = CLASSES as u8;
const EXPIRED_LIST: u8 = FIRST_SLOT + WHEEL_SLOTS as u8;
const LISTS: usize = CLASSES + WHEEL_SLOTS as usize + 1;

/// Names one flow of a [`Scheduler`]: an index below its `FLOWS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowId(pub u16);

/// Why the scheduler refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The flow index is not below the scheduler's `FLOWS`.
    BadFlow(u16),
    /// A traffic class above 7.
    BadClass(u8),
    /// A priority level above 7.
    BadLevel(u8),
    /// `FLOWS` is above [`MAX_FLOWS`].
    TooManyFlows(usize),
    /// `max_packet` is 0 or above [`MAX_BYTES`].
    BadMaxPacket(u32),
    /// `tick_ns` is 0.
    BadTick,
    /// A quantum below `max_packet` or above [`MAX_BYTES`].
    BadQuantum(u32),
    /// A rate of 0 or above [`MAX_RATE`] bytes per second.
    BadRate(u64),
    /// A burst below `max_packet` (the flow could never send a full packet)
    /// or above [`MAX_BYTES`].
    BadBurst(u32),
    /// A packet length of 0 or above `max_packet`.
    BadLength(u32),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::BadFlow(v) => write!(f, "flow {v} does not exist"),
            Error::BadClass(v) => write!(f, "traffic class {v} is not in 0..=7"),
            Error::BadLevel(v) => write!(f, "priority level {v} is not in 0..=7"),
            Error::TooManyFlows(v) => write!(f, "{v} flows is more than {MAX_FLOWS}"),
            Error::BadMaxPacket(v) => {
                write!(f, "maximum packet size {v} is not in 1..={MAX_BYTES}")
            }
            Error::BadTick => write!(f, "timer tick of 0 ns"),
            Error::BadQuantum(v) => {
                write!(
                    f,
                    "quantum {v} is below the maximum packet size or above {MAX_BYTES}"
                )
            }
            Error::BadRate(v) => write!(f, "rate {v} B/s is not in 1..={MAX_RATE}"),
            Error::BadBurst(v) => {
                write!(
                    f,
                    "burst {v} is below the maximum packet size or above {MAX_BYTES}"
                )
            }
            Error::BadLength(v) => write!(f, "packet length {v} is 0 or above the maximum"),
        }
    }
}

/// Settings of a whole scheduler, fixed when it is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// The largest packet any flow will report, in bytes. Quanta and bursts
    /// must be at least this large; longer packets are refused.
    pub max_packet: u32,
    /// Length of a timer-wheel slot in nanoseconds. A rate-limited flow is
    /// woken at the first slot boundary at or after the moment it conforms,
    /// so at most this much late; the wheel sees 63 slots ahead.
    pub tick_ns: u64,
    /// The priority level of each traffic class, indexed by class; 7 is
    /// served first. Classes sharing a level share its round robin.
    pub class_levels: [u8; CLASSES],
}

impl Config {
    /// A configuration with TC7 highest, TC0 lowest and a 1 µs tick.
    pub const fn new(max_packet: u32) -> Self {
        Config {
            max_packet,
            tick_ns: DEFAULT_TICK_NS,
            class_levels: [0, 1, 2, 3, 4, 5, 6, 7],
        }
    }

    fn validate(&self) -> Result<(), Error> {
        if self.max_packet == 0 || self.max_packet > MAX_BYTES {
            return Err(Error::BadMaxPacket(self.max_packet));
        }
        if self.tick_ns == 0 {
            return Err(Error::BadTick);
        }
        for &level in &self.class_levels {
            if usize::from(level) >= CLASSES {
                return Err(Error::BadLevel(level));
            }
        }
        Ok(())
    }
}

/// A token-bucket rate limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Long-term rate in bytes per second (frame bytes, as reported to
    /// [`Scheduler::set_head`]).
    pub bytes_per_sec: u64,
    /// Bucket depth in bytes: how much the flow may send back to back after
    /// being idle. At least `max_packet`; for an exact long-term rate, at
    /// least `max_packet + bytes_per_sec * tick_ns / 1e9`.
    pub burst: u32,
}

/// Settings of one flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowConfig {
    /// The flow's traffic class, 0..=7.
    pub class: u8,
    /// Bytes of credit per round robin round; the flow's weight. At least
    /// `max_packet`, which keeps [`Scheduler::next`] O(1).
    pub quantum: u32,
    /// The flow's rate limit, if any.
    pub rate: Option<RateLimit>,
}

/// Where a flow stands with the scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowState {
    /// No head packet reported.
    Idle,
    /// In its level's round robin, able to send its head packet.
    Active,
    /// Has a head packet but waits for tokens.
    Throttled,
    /// Was just returned by [`Scheduler::next`]; waits for the caller to
    /// report its next head packet or that it is empty.
    Sent,
}

/// Counters of one flow. They wrap around.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    /// Packets granted by [`Scheduler::next`].
    pub packets: u64,
    /// Bytes granted by [`Scheduler::next`].
    pub bytes: u64,
    /// Times the flow had to wait for tokens.
    pub throttled: u64,
}

/// One flow's entry in the table.
#[derive(Clone, Copy, Debug)]
struct Flow {
    state: FlowState,
    class: u8,
    /// Cached `class_levels[class]`.
    level: u8,
    /// The list the flow is on, or `NO_LIST`.
    list: u8,
    prev: u16,
    next: u16,
    /// Length of the head packet; 0 when `Idle` or `Sent`.
    head_len: u32,
    deficit: u32,
    quantum: u32,
    /// Bytes per second; 0 means unlimited.
    rate: u64,
    /// Bucket depth and content in nanobytes (bytes × 10^9), so that
    /// `elapsed_ns × rate` adds exactly.
    burst_nb: u64,
    tokens_nb: u64,
    /// When `tokens_nb` was last brought up to date.
    last_ns: u64,
    stats: FlowStats,
}

impl Flow {
    const fn new(quantum: u32) -> Self {
        Flow {
            state: FlowState::Idle,
            class: 0,
            level: 0,
            list: NO_LIST,
            prev: NIL,
            next: NIL,
            head_len: 0,
            deficit: 0,
            quantum,
            rate: 0,
            burst_nb: 0,
            tokens_nb: 0,
            last_ns: 0,
            stats: FlowStats {
                packets: 0,
                bytes: 0,
                throttled: 0,
            },
        }
    }

    /// Adds the tokens earned since `last_ns`, up to the burst.
    fn refill(&mut self, now: u64) {
        if self.rate == 0 || now <= self.last_ns {
            return;
        }
        let elapsed = now.wrapping_sub(self.last_ns);
        self.last_ns = now;
        let room = self.burst_nb.saturating_sub(self.tokens_nb);
        // `elapsed * rate < room <= burst_nb` when it fits, so the sum
        // cannot overflow; anything larger fills the bucket.
        self.tokens_nb = match elapsed.checked_mul(self.rate) {
            Some(earned) if earned < room => self.tokens_nb.saturating_add(earned),
            _ => self.burst_nb,
        };
    }

    fn conforms(&self) -> bool {
        self.rate == 0 || self.tokens_nb >= nanobytes(self.head_len)
    }

    /// When the bucket will hold the head packet's tokens (tokens are
    /// counted as of `last_ns`).
    fn conforms_at(&self) -> u64 {
        let missing = nanobytes(self.head_len).saturating_sub(self.tokens_nb);
        let whole = missing.checked_div(self.rate).unwrap_or(0);
        let part = missing
            .checked_rem(self.rate)
            .map_or(0, |r| u64::from(r != 0));
        self.last_ns.saturating_add(whole).saturating_add(part)
    }
}

fn nanobytes(bytes: u32) -> u64 {
    u64::from(bytes).saturating_mul(NANOS_PER_SEC)
}

/// Head and tail of one intrusive list.
#[derive(Clone, Copy, Debug)]
struct List {
    head: u16,
    tail: u16,
}

const EMPTY_LIST: List = List {
    head: NIL,
    tail: NIL,
};

/// The scheduler of up to `FLOWS` flows.
///
/// It is about 80 × `FLOWS` bytes and never allocates: the kernel side keeps
/// it in memory it allocated (a large one must not live on the stack).
///
/// # Invariants
///
/// * A flow is on exactly the list its `list` field names, and that list's
///   links are consistent; the scratch list is empty between calls.
/// * `Active` flows are on the list of their level and can send their head
///   packet at once: `deficit >= head_len` and the bucket holds `head_len`
///   tokens. `Throttled` flows are on a wheel slot. `Idle` and `Sent` flows
///   are on no list. `Active` and `Throttled` flows have
///   `1 <= head_len <= max_packet`.
/// * Bit *l* of `levels` is set exactly when level *l*'s list is non-empty;
///   bit *s* of `wheel` exactly when slot *s* is. The wheel holds flows for
///   ticks `wheel_tick + 1 ..= wheel_tick + 63`, slot = tick mod 64.
/// * `quantum >= max_packet` for every flow, and `burst >= max_packet` for
///   every rate-limited flow.
#[derive(Clone, Debug)]
pub struct Scheduler<const FLOWS: usize> {
    config: Config,
    flows: [Flow; FLOWS],
    lists: [List; LISTS],
    levels: u32,
    wheel: u64,
    wheel_tick: u64,
    now: u64,
}

impl<const FLOWS: usize> Scheduler<FLOWS> {
    /// Creates a scheduler with every flow idle, in TC0, with a quantum of
    /// `config.max_packet` and no rate limit.
    ///
    /// # Errors
    ///
    /// [`Error::TooManyFlows`] if `FLOWS` exceeds [`MAX_FLOWS`], or the
    /// error for the first bad field of `config`.
    pub fn new(config: Config) -> Result<Self, Error> {
        if FLOWS > MAX_FLOWS {
            return Err(Error::TooManyFlows(FLOWS));
        }
        config.validate()?;
        let mut flow = Flow::new(config.max_packet);
        flow.level = config.class_levels.first().copied().unwrap_or(0);
        Ok(Scheduler {
            config,
            flows: [flow; FLOWS],
            lists: [EMPTY_LIST; LISTS],
            levels: 0,
            wheel: 0,
            wheel_tick: 0,
            now: 0,
        })
    }

    /// Returns the scheduler to the state [`Scheduler::new`] gives it, in
    /// place, with a new configuration. On error nothing changes.
    ///
    /// # Errors
    ///
    /// As for [`Scheduler::new`].
    pub fn reset(&mut self, config: Config) -> Result<(), Error> {
        config.validate()?;
        let mut flow = Flow::new(config.max_packet);
        flow.level = config.class_levels.first().copied().unwrap_or(0);
        self.config = config;
        self.flows.fill(flow);
        self.lists.fill(EMPTY_LIST);
        self.levels = 0;
        self.wheel = 0;
        self.wheel_tick = 0;
        self.now = 0;
        Ok(())
    }

    /// The configuration the scheduler was created with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The latest time passed to [`Scheduler::next`] (time never goes back:
    /// an earlier time is taken as this one).
    pub fn now(&self) -> Instant {
        Instant::from_nanos(self.now)
    }

    /// Sets a flow's class, quantum and rate limit.
    ///
    /// A flow may be reconfigured at any time. Its bucket starts full; its
    /// deficit is kept, up to the new quantum; a backlogged flow moves to
    /// the tail of its (possibly new) level's round robin.
    ///
    /// # Errors
    ///
    /// [`Error::BadFlow`], [`Error::BadClass`], [`Error::BadQuantum`],
    /// [`Error::BadRate`] or [`Error::BadBurst`]; nothing changes then.
    pub fn configure(&mut self, id: FlowId, config: FlowConfig) -> Result<(), Error> {
        let max_packet = self.config.max_packet;
        let level = *self
            .config
            .class_levels
            .get(usize::from(config.class))
            .ok_or(Error::BadClass(config.class))?;
        if config.quantum < max_packet || config.quantum > MAX_BYTES {
            return Err(Error::BadQuantum(config.quantum));
        }
        if let Some(rate) = config.rate {
            if rate.bytes_per_sec == 0 || rate.bytes_per_sec > MAX_RATE {
                return Err(Error::BadRate(rate.bytes_per_sec));
            }
            if rate.burst < max_packet || rate.burst > MAX_BYTES {
                return Err(Error::BadBurst(rate.burst));
            }
        }
        let i = self.index(id)?;
        let now = self.now;
        let Some(flow) = self.flows.get_mut(usize::from(i)) else {
            return Err(Error::BadFlow(id.0));
        };
        let requeue = matches!(flow.state, FlowState::Active | FlowState::Throttled);
        flow.class = config.class;
        flow.level = level;
        flow.quantum = config.quantum;
        flow.deficit = flow.deficit.min(config.quantum);
        let (rate, burst) = config.rate.map_or((0, 0), |r| (r.bytes_per_sec, r.burst));
        flow.rate = rate;
        flow.burst_nb = nanobytes(burst);
        flow.tokens_nb = flow.burst_nb;
        flow.last_ns = now;
        if requeue {
            self.unlink(i);
            self.admit(i, false);
        }
        Ok(())
    }

    /// A flow's current settings.
    ///
    /// # Errors
    ///
    /// [`Error::BadFlow`].
    pub fn flow_config(&self, id: FlowId) -> Result<FlowConfig, Error> {
        let flow = self.flow(id)?;
        let rate = (flow.rate != 0).then(|| RateLimit {
            bytes_per_sec: flow.rate,
            // Whole bytes: `burst_nb` was made from a `u32`.
            burst: u32::try_from(flow.burst_nb / NANOS_PER_SEC).unwrap_or(u32::MAX),
        });
        Ok(FlowConfig {
            class: flow.class,
            quantum: flow.quantum,
            rate,
        })
    }

    /// Reports that flow `id` has a head packet of `len` bytes.
    ///
    /// Call it when an idle flow gets a packet, after sending the packet
    /// [`Scheduler::next`] granted if the flow has another, and whenever the
    /// head packet changes. A flow that was granted a packet and still has
    /// deficit left keeps its turn in the round robin; otherwise it goes to
    /// the tail with a new quantum, or to the timer wheel if its bucket
    /// lacks tokens.
    ///
    /// # Errors
    ///
    /// [`Error::BadFlow`], or [`Error::BadLength`] if `len` is 0 or above
    /// `max_packet`; nothing changes then.
    pub fn set_head(&mut self, id: FlowId, len: u32) -> Result<(), Error> {
        let i = self.index(id)?;
        if len == 0 || len > self.config.max_packet {
            return Err(Error::BadLength(len));
        }
        let now = self.now;
        let Some(flow) = self.flows.get_mut(usize::from(i)) else {
            return Err(Error::BadFlow(id.0));
        };
        match flow.state {
            FlowState::Idle => {
                // A newly backlogged flow joins the tail with a fresh
                // quantum, as in DRR.
                flow.head_len = len;
                flow.deficit = flow.quantum;
                self.admit(i, false);
            }
            FlowState::Sent => {
                // It was at the head of its list when granted: it keeps its
                // place if its deficit covers the next packet.
                flow.head_len = len;
                self.admit(i, true);
            }
            FlowState::Active => {
                flow.head_len = len;
                flow.refill(now);
                if flow.deficit < len || !flow.conforms() {
                    self.unlink(i);
                    self.admit(i, false);
                }
            }
            FlowState::Throttled => {
                flow.head_len = len;
                self.unlink(i);
                self.admit(i, false);
            }
        }
        Ok(())
    }

    /// Reports that flow `id` has nothing to send. Its deficit is forfeited,
    /// as in DRR.
    ///
    /// # Errors
    ///
    /// [`Error::BadFlow`].
    pub fn set_empty(&mut self, id: FlowId) -> Result<(), Error> {
        let i = self.index(id)?;
        self.unlink(i);
        if let Some(flow) = self.flows.get_mut(usize::from(i)) {
            flow.state = FlowState::Idle;
            flow.head_len = 0;
            flow.deficit = 0;
        }
        Ok(())
    }

    /// Chooses the flow whose head packet to send at `now`.
    ///
    /// The packet is charged to the flow (deficit and tokens) and the flow
    /// becomes [`FlowState::Sent`]: report its next head packet with
    /// [`Scheduler::set_head`] or that it is empty with
    /// [`Scheduler::set_empty`] before it can be chosen again. Returns
    /// `None` when no flow can send now; see
    /// [`Scheduler::next_eligible_at`].
    pub fn next(&mut self, now: Instant) -> Option<FlowId> {
        self.advance(now.as_nanos());
        // Strict priority: the highest non-empty level.
        let level = 31u32.checked_sub(self.levels.leading_zeros())?;
        let level = u8::try_from(level).ok()?;
        // DRR: its head flow can send (see the invariants), no skipping.
        let i = self.pop_front(level)?;
        let now = self.now;
        let flow = self.flows.get_mut(usize::from(i))?;
        let len = flow.head_len;
        flow.refill(now);
        flow.deficit = flow.deficit.saturating_sub(len);
        if flow.rate != 0 {
            flow.tokens_nb = flow.tokens_nb.saturating_sub(nanobytes(len));
        }
        flow.head_len = 0;
        flow.state = FlowState::Sent;
        flow.stats.packets = flow.stats.packets.wrapping_add(1);
        flow.stats.bytes = flow.stats.bytes.wrapping_add(u64::from(len));
        Some(FlowId(i))
    }

    /// When to call [`Scheduler::next`] again.
    ///
    /// `None` if no flow has a head packet. [`Scheduler::now`] if one can
    /// send at once. Otherwise all backlogged flows wait for tokens, and
    /// this is the end of the first timer-wheel slot that holds one: a flow
    /// conforms then, unless it was further away than the wheel's horizon
    /// (63 ticks), in which case `next` returns `None` once more and this
    /// gives a later time. The result saturates at [`Instant::MAX`]: a flow
    /// that runs out of tokens when time has almost reached it (after 584
    /// years of nanoseconds) stays throttled for good.
    pub fn next_eligible_at(&self) -> Option<Instant> {
        if self.levels != 0 {
            return Some(Instant::from_nanos(self.now));
        }
        if self.wheel == 0 {
            return None;
        }
        let start = self.wheel_tick.wrapping_add(1);
        let ahead = self.wheel.rotate_right(slot_of(start)).trailing_zeros();
        Some(Instant::from_nanos(
            start
                .saturating_add(u64::from(ahead))
                .saturating_mul(self.config.tick_ns),
        ))
    }

    /// A flow's state.
    ///
    /// # Errors
    ///
    /// [`Error::BadFlow`].
    pub fn state(&self, id: FlowId) -> Result<FlowState, Error> {
        Ok(self.flow(id)?.state)
    }

    /// A flow's counters.
    ///
    /// # Errors
    ///
    /// [`Error::BadFlow`].
    pub fn stats(&self, id: FlowId) -> Result<FlowStats, Error> {
        Ok(self.flow(id)?.stats)
    }

    /// Whether any flow of a priority level can send now (levels above 7
    /// have none).
    pub fn level_active(&self, level: u8) -> bool {
        level < 32 && self.levels & (1 << level) != 0
    }

    /// Checks every invariant of the scheduler, walking all of it.
    ///
    /// O(`FLOWS`): for tests and fuzzers, not for the data path.
    ///
    /// # Errors
    ///
    /// A description of the first broken invariant.
    pub fn check_invariants(&self) -> Result<(), &'static str> {
        let mut listed = 0usize;
        for (l, list) in self.lists.iter().enumerate() {
            let l = u8::try_from(l).map_err(|_| "list index")?;
            let mut prev = NIL;
            let mut cur = list.head;
            let mut steps = 0usize;
            while cur != NIL {
                steps = steps.checked_add(1).ok_or("list length")?;
                if steps > FLOWS {
                    return Err("list has a cycle");
                }
                let f = self
                    .flows
                    .get(usize::from(cur))
                    .ok_or("link out of range")?;
                if f.list != l {
                    return Err("flow on a list it does not name");
                }
                if f.prev != prev {
                    return Err("back link broken");
                }
                prev = cur;
                cur = f.next;
            }
            if list.tail != prev {
                return Err("tail is not the last flow");
            }
            let nonempty = list.head != NIL;
            if l < FIRST_SLOT {
                if self.level_active(l) != nonempty {
                    return Err("level bitmap out of step");
                }
            } else if l < EXPIRED_LIST {
                let bit = 1u64 << (l - FIRST_SLOT);
                if (self.wheel & bit != 0) != nonempty {
                    return Err("wheel bitmap out of step");
                }
            } else if nonempty {
                return Err("scratch list not empty");
            }
            listed = listed.checked_add(steps).ok_or("count")?;
        }
        if self.levels >> CLASSES != 0 {
            return Err("level bitmap has bits above 7");
        }
        let current = slot_of(self.wheel_tick);
        if self.wheel & (1 << current) != 0 {
            return Err("flow waiting on the current tick's slot");
        }
        let mut on_lists = 0usize;
        for f in &self.flows {
            if self.config.class_levels.get(usize::from(f.class)) != Some(&f.level) {
                return Err("cached level wrong");
            }
            if f.quantum < self.config.max_packet || f.quantum > MAX_BYTES {
                return Err("quantum out of range");
            }
            if f.rate != 0
                && (f.burst_nb < nanobytes(self.config.max_packet) || f.tokens_nb > f.burst_nb)
            {
                return Err("bucket out of range");
            }
            let backlogged = f.head_len >= 1 && f.head_len <= self.config.max_packet;
            match f.state {
                FlowState::Idle | FlowState::Sent => {
                    if f.list != NO_LIST || f.head_len != 0 {
                        return Err("idle or sent flow on a list or with a head");
                    }
                }
                FlowState::Active => {
                    if f.list != f.level || !backlogged {
                        return Err("active flow off its level's list");
                    }
                    if f.deficit < f.head_len || !f.conforms() {
                        return Err("active flow cannot send its head packet");
                    }
                }
                FlowState::Throttled => {
                    if f.list < FIRST_SLOT || f.list >= EXPIRED_LIST || !backlogged {
                        return Err("throttled flow off the wheel");
                    }
                    if f.rate == 0 {
                        return Err("throttled flow without a rate limit");
                    }
                }
            }
            if f.list != NO_LIST {
                on_lists = on_lists.checked_add(1).ok_or("count")?;
            }
        }
        if on_lists != listed {
            return Err("flows claim lists they are not on");
        }
        Ok(())
    }

    fn index(&self, id: FlowId) -> Result<u16, Error> {
        if usize::from(id.0) < FLOWS {
            Ok(id.0)
        } else {
            Err(Error::BadFlow(id.0))
        }
    }

    fn flow(&self, id: FlowId) -> Result<&Flow, Error> {
        self.flows
            .get(usize::from(id.0))
            .ok_or(Error::BadFlow(id.0))
    }

    /// Moves time forward and brings the flows whose wheel slots expired
    /// back into the round robin (or further along the wheel). The work is
    /// at most 64 bitmap steps plus O(1) per expired flow.
    fn advance(&mut self, now_ns: u64) {
        if now_ns > self.now {
            self.now = now_ns;
        }
        let tick = self.now.checked_div(self.config.tick_ns).unwrap_or(0);
        let Some(count) = tick.checked_sub(self.wheel_tick).filter(|&c| c > 0) else {
            return;
        };
        let start = self.wheel_tick.wrapping_add(1);
        let window = if count >= WHEEL_SLOTS {
            u64::MAX
        } else {
            (1u64 << count).wrapping_sub(1)
        };
        // Bit k of `due` is the slot of tick `start + k`.
        let mut due = self.wheel.rotate_right(slot_of(start)) & window;
        self.wheel_tick = tick;
        // Move the due flows aside first: re-admitting them may put them
        // on slots that are still to be expired.
        while due != 0 {
            let k = due.trailing_zeros();
            due &= due.wrapping_sub(1);
            let slot = slot_of(start.wrapping_add(u64::from(k)));
            let list = FIRST_SLOT.wrapping_add(slot as u8);
            while let Some(i) = self.pop_front(list) {
                self.push_back(EXPIRED_LIST, i);
            }
        }
        while let Some(i) = self.pop_front(EXPIRED_LIST) {
            self.admit(i, false);
        }
    }

    /// Puts a backlogged flow that is on no list where it belongs: on its
    /// level's list if it can send (at the front if `front` and its deficit
    /// still covers the head packet), else on the wheel.
    fn admit(&mut self, i: u16, front: bool) {
        let now = self.now;
        let tick_ns = self.config.tick_ns;
        let wheel_tick = self.wheel_tick;
        let Some(flow) = self.flows.get_mut(usize::from(i)) else {
            return;
        };
        flow.refill(now);
        if flow.conforms() {
            let mut front = front;
            if flow.deficit < flow.head_len {
                // Its turn is over: the next round's quantum, at the tail.
                // One quantum always suffices since quantum >= max_packet.
                flow.deficit = flow.deficit.saturating_add(flow.quantum);
                front = false;
            }
            flow.state = FlowState::Active;
            let level = flow.level;
            if front {
                self.push_front(level, i);
            } else {
                self.push_back(level, i);
            }
        } else {
            if flow.state != FlowState::Throttled {
                flow.stats.throttled = flow.stats.throttled.wrapping_add(1);
            }
            flow.state = FlowState::Throttled;
            let at = flow.conforms_at();
            // The first slot boundary at or after `at`, within the horizon.
            let whole = at.checked_div(tick_ns).unwrap_or(0);
            let part = at.checked_rem(tick_ns).map_or(0, |r| u64::from(r != 0));
            let ahead = whole
                .saturating_add(part)
                .saturating_sub(wheel_tick)
                .clamp(1, WHEEL_SLOTS - 1);
            let slot = slot_of(wheel_tick.wrapping_add(ahead));
            self.push_back(FIRST_SLOT.wrapping_add(slot as u8), i);
        }
    }

    fn list_mut(&mut self, l: u8) -> Option<&mut List> {
        self.lists.get_mut(usize::from(l))
    }

    /// Keeps the bitmaps in step with whether list `l` is empty.
    fn mark(&mut self, l: u8, nonempty: bool) {
        if l < FIRST_SLOT {
            let bit = 1u32 << l;
            if nonempty {
                self.levels |= bit;
            } else {
                self.levels &= !bit;
            }
        } else if l < EXPIRED_LIST {
            let bit = 1u64 << (l - FIRST_SLOT);
            if nonempty {
                self.wheel |= bit;
            } else {
                self.wheel &= !bit;
            }
        }
    }

    fn push_back(&mut self, l: u8, i: u16) {
        let Some(list) = self.list_mut(l) else {
            return;
        };
        let old_tail = list.tail;
        list.tail = i;
        if old_tail == NIL {
            list.head = i;
        }
        if let Some(t) = self.flows.get_mut(usize::from(old_tail)) {
            t.next = i;
        }
        if let Some(f) = self.flows.get_mut(usize::from(i)) {
            f.list = l;
            f.prev = old_tail;
            f.next = NIL;
        }
        self.mark(l, true);
    }

    fn push_front(&mut self, l: u8, i: u16) {
        let Some(list) = self.list_mut(l) else {
            return;
        };
        let old_head = list.head;
        list.head = i;
        if old_head == NIL {
            list.tail = i;
        }
        if let Some(h) = self.flows.get_mut(usize::from(old_head)) {
            h.prev = i;
        }
        if let Some(f) = self.flows.get_mut(usize::from(i)) {
            f.list = l;
            f.prev = NIL;
            f.next = old_head;
        }
        self.mark(l, true);
    }

    fn pop_front(&mut self, l: u8) -> Option<u16> {
        let head = self.lists.get(usize::from(l))?.head;
        if head == NIL {
            return None;
        }
        self.unlink(head);
        Some(head)
    }

    /// Takes flow `i` off whatever list it is on (nothing if none).
    fn unlink(&mut self, i: u16) {
        let Some(f) = self.flows.get_mut(usize::from(i)) else {
            return;
        };
        let (l, prev, next) = (f.list, f.prev, f.next);
        if l == NO_LIST {
            return;
        }
        f.list = NO_LIST;
        f.prev = NIL;
        f.next = NIL;
        match self.flows.get_mut(usize::from(prev)) {
            Some(p) => p.next = next,
            None => {
                if let Some(list) = self.list_mut(l) {
                    list.head = next;
                }
            }
        }
        match self.flows.get_mut(usize::from(next)) {
            Some(n) => n.prev = prev,
            None => {
                if let Some(list) = self.list_mut(l) {
                    list.tail = prev;
                }
            }
        }
        if next == NIL && prev == NIL {
            self.mark(l, false);
        }
    }
}

/// The wheel slot of a tick.
fn slot_of(tick: u64) -> u32 {
    // The remainder is below 64.
    (tick % WHEEL_SLOTS) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched<const N: usize>() -> Scheduler<N> {
        Scheduler::new(Config::new(1500)).unwrap()
    }

    #[test]
    fn bitmap_tracks_lists() {
        let mut s = sched::<4>();
        s.set_head(FlowId(1), 100).unwrap();
        assert_eq!(s.levels, 1);
        s.configure(
            FlowId(1),
            FlowConfig {
                class: 6,
                quantum: 1500,
                rate: None,
            },
        )
        .unwrap();
        assert_eq!(s.levels, 1 << 6);
        s.set_empty(FlowId(1)).unwrap();
        assert_eq!(s.levels, 0);
        s.check_invariants().unwrap();
    }

    #[test]
    fn wheel_slot_and_expiry() {
        let mut s = sched::<2>();
        let rl = RateLimit {
            bytes_per_sec: 1_000_000_000, // 1 byte per ns
            burst: 1500,
        };
        s.configure(
            FlowId(0),
            FlowConfig {
                class: 0,
                quantum: 1500,
                rate: Some(rl),
            },
        )
        .unwrap();
        s.set_head(FlowId(0), 1500).unwrap();
        assert_eq!(s.next(Instant::from_nanos(0)), Some(FlowId(0)));
        s.set_head(FlowId(0), 1000).unwrap();
        // 1000 bytes at 1 B/ns: conforms at 1000 ns = tick 1.
        assert_eq!(s.state(FlowId(0)), Ok(FlowState::Throttled));
        assert_eq!(s.wheel, 1 << 1);
        assert_eq!(s.next_eligible_at().map(Instant::as_nanos), Some(1000));
        assert_eq!(s.next(Instant::from_nanos(999)), None);
        assert_eq!(s.next(Instant::from_nanos(1000)), Some(FlowId(0)));
        s.check_invariants().unwrap();
    }

    #[test]
    fn horizon_recheck() {
        let mut s = sched::<1>();
        s.configure(
            FlowId(0),
            FlowConfig {
                class: 0,
                quantum: 1500,
                rate: Some(RateLimit {
                    bytes_per_sec: 1_000_000, // 1 byte per µs
                    burst: 1500,
                }),
            },
        )
        .unwrap();
        s.set_head(FlowId(0), 1500).unwrap();
        assert_eq!(s.next(Instant::from_nanos(0)), Some(FlowId(0)));
        s.set_head(FlowId(0), 1500).unwrap();
        // Conforms at 1.5 ms, far past the 63 µs horizon.
        assert_eq!(s.next_eligible_at().map(Instant::as_nanos), Some(63_000));
        let mut polls = 0;
        let t = loop {
            let t = s.next_eligible_at().map(Instant::as_nanos).unwrap();
            polls += 1;
            if s.next(Instant::from_nanos(t)).is_some() {
                break t;
            }
            s.check_invariants().unwrap();
        };
        assert_eq!(t, 1_500_000);
        assert!(polls <= 1_500 / 63 + 2, "{polls} polls");
    }
}
