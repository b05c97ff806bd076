// SPDX-License-Identifier: GPL-2.0

//! The functions the DI serves, as the hosts see them.
//!
//! The configuration ([`Model`]) says which functions exist, which are
//! enabled and which host each is assigned to. [`Fabric::sync`] turns that
//! into *served* functions: one emulated configuration space per enabled,
//! assigned function, and the device number (0 to 31, function 0, bus 0)
//! under which its host sees it. That number is the requester-ID
//! translation: a host addresses `00:<dev>.0` of its own domain, and the
//! DI finds the function by (host MAC, device number). A host reaches only
//! what is assigned to it; any other configuration request gets an
//! Unsupported Request completion and is counted.
//!
//! After each change every open session gets a Presence message with its
//! host's device numbers, so hosts hot-add and hot-remove without any
//! action of their own.
//!
//! # Locking
//!
//! `state` (a bottom-half spinlock) is taken by the sessions' receive path
//! (softirq, under a session lock) and by [`Fabric::sync`] (process
//! context). It is never held while a session lock is taken: `sync`
//! releases it before it sends Presence through the ports. `links` (a
//! mutex) is taken after the configuration's mutex and before a port's.

use core::fmt::{self, Write as _};

use kernel::{
    debugfs::{SeqFile, Show},
    fmt as kfmt,
    kvec_ext::VecExt,
    new_mutex, new_spinlock_bh, pr_warn_ratelimited,
    prelude::*,
    spinlock_bh::SpinLockBh,
    str::CString,
    sync::{Arc, Mutex},
};

use crate::config::{FunctionType, Model};
use crate::pcieoe::{
    cfgspace::ConfigSpace,
    fabric::{Msg, DEVICES},
    frame::Mac,
    function::{self, FunctionKind, Identity},
    tlp::{Bdf, CompletionStatus, Kind, Tlp},
};
use crate::port::{MacFmt, Outbox, PortHandle, Service};

/// Largest TLP the DI emits (a completion with one DW, or a Masks chunk).
const TLP_BUF: usize = 512;

/// One function as its host sees it.
struct Served {
    name: CString,
    host: Mac,
    dev: u8,
    cs: KBox<ConfigSpace>,
}

/// Counters of the configuration path.
#[derive(Clone, Copy, Default)]
struct Counters {
    cfg_reads: u64,
    cfg_writes: u64,
    /// Configuration requests for a device the host does not have.
    ur_unassigned: u64,
    /// Requests the DI does not serve yet (memory, I/O), answered UR.
    ur_unsupported: u64,
    /// TLPs that did not decode, or pcieoe messages that were malformed.
    malformed: u64,
    /// Describe requests answered.
    describes: u64,
}

struct State {
    served: KVec<Served>,
    counters: Counters,
}

impl State {
    fn find(&mut self, host: Mac, dev: u8) -> Option<&mut Served> {
        self.served
            .iter_mut()
            .find(|s| s.host == host && s.dev == dev)
    }

    /// The Presence bitmap of `host`.
    fn presence(&self, host: Mac) -> u32 {
        self.served
            .iter()
            .filter(|s| s.host == host)
            .fold(0, |bits, s| bits | (1u32 << s.dev))
    }
}

/// What the DI serves, shared by its ports.
#[pin_data]
pub(crate) struct Fabric {
    #[pin]
    state: SpinLockBh<State>,
    /// The bound ports, for Presence messages.
    #[pin]
    links: Mutex<KVec<Arc<DiLink>>>,
}

fn kind_of(ty: FunctionType) -> FunctionKind {
    match ty {
        FunctionType::Test => FunctionKind::Test,
        FunctionType::Vnic => FunctionKind::Vnic,
        FunctionType::Vhba => FunctionKind::Vhba,
    }
}

impl Fabric {
    pub(crate) fn new() -> Result<Arc<Self>> {
        Arc::pin_init(
            pin_init!(Fabric {
                state <- new_spinlock_bh!(State {
                    served: KVec::new(),
                    counters: Counters::default(),
                }, "pcieoe_dev_fabric"),
                links <- new_mutex!(KVec::new()),
            }),
            GFP_KERNEL,
        )
    }

    /// Makes the served functions match `model` (called with the
    /// configuration's mutex held, after every change), then tells every
    /// open session what its host has now.
    pub(crate) fn sync(&self, model: &Model) -> Result {
        // Drop what is no longer enabled and assigned to the same host.
        {
            let mut st = self.state.lock();
            st.served.retain(|s| {
                let keep = model.hosts.iter().any(|h| {
                    h.mac.0 == s.host
                        && h.functions
                            .iter()
                            .any(|n| n.as_bytes() == s.name.as_bytes())
                }) && model
                    .functions
                    .iter()
                    .any(|f| f.enabled && f.name.as_bytes() == s.name.as_bytes());
                if !keep {
                    pr_info!(
                        "function {}: no longer served to host {} (device {:02x})\n",
                        &*s.name,
                        MacFmt(s.host),
                        s.dev
                    );
                }
                keep
            });
        }
        // Add what is new.
        for host in model.hosts.iter() {
            for name in host.functions.iter() {
                let Some(f) = model
                    .functions
                    .iter()
                    .find(|f| f.enabled && f.name.as_bytes() == name.as_bytes())
                else {
                    continue;
                };
                let served = |st: &State| {
                    st.served
                        .iter()
                        .any(|s| s.host == host.mac.0 && s.name.as_bytes() == name.as_bytes())
                };
                if served(&self.state.lock()) {
                    continue;
                }
                let mut cs: KBox<ConfigSpace> = KBox::init(kernel::init::zeroed(), GFP_KERNEL)?;
                let id = Identity {
                    vendor: f.vendor_id,
                    device: f.device_id,
                    subsystem_vendor: f.vendor_id,
                    subsystem: f.device_id,
                    revision: 1,
                };
                function::build(kind_of(f.ty), &id, &mut cs).map_err(|e| {
                    pr_err!("function {}: config space: {:?}\n", &**name, e);
                    EINVAL
                })?;
                let name = CString::try_from_fmt(kfmt!("{}", &**name))?;
                let mut st = self.state.lock();
                let used = st.presence(host.mac.0);
                let Some(dev) = (0..DEVICES as u8).find(|d| used & (1 << d) == 0) else {
                    pr_warn!(
                        "host {}: all {} device numbers in use, function {} not served\n",
                        host.mac,
                        DEVICES,
                        &*name
                    );
                    continue;
                };
                pr_info!(
                    "function {}: served to host {} as device {:02x}\n",
                    &*name,
                    host.mac,
                    dev
                );
                st.served.push(
                    Served {
                        name,
                        host: host.mac.0,
                        dev,
                        cs,
                    },
                    GFP_ATOMIC,
                )?;
            }
        }
        self.announce();
        Ok(())
    }

    /// Sends each open session its host's Presence.
    fn announce(&self) {
        let links = self.links.lock();
        for link in links.iter() {
            let port = link.port.lock();
            let Some(port) = port.as_ref() else {
                continue;
            };
            let Some(peer) = port.peer() else {
                continue;
            };
            let devices = self.state.lock().presence(peer);
            let mut buf = [0u8; TLP_BUF];
            if let Ok(n) = (Msg::Presence { devices }).emit(Bdf::default(), &mut buf) {
                let _ = port.send(buf.get(..n).unwrap_or(&[]));
            }
        }
    }

    /// A new port's service; registered until [`Fabric::unlink`].
    pub(crate) fn link(self: &Arc<Self>) -> Result<Arc<DiLink>> {
        let link = Arc::pin_init(
            pin_init!(DiLink {
                fabric: self.clone(),
                port <- new_mutex!(None),
            }),
            GFP_KERNEL,
        )?;
        self.links.lock().push(link.clone(), GFP_KERNEL)?;
        Ok(link)
    }

    pub(crate) fn unlink(&self, link: &Arc<DiLink>) {
        self.links.lock().retain(|l| !Arc::ptr_eq(l, link));
    }

    /// Answers one TLP from `host` (softirq, under its session's lock).
    fn serve(&self, host: Mac, bytes: &[u8], out: &mut Outbox) {
        let mut st = self.state.lock();
        let Ok(tlp) = Tlp::decode(bytes) else {
            st.counters.malformed += 1;
            pr_warn_ratelimited!("host {}: undecodable TLP dropped\n", MacFmt(host));
            return;
        };
        let mut buf = [0u8; TLP_BUF];
        match tlp.kind {
            Kind::CfgRead(req) | Kind::CfgWrite(req) => {
                let is_read = matches!(tlp.kind, Kind::CfgRead(_));
                let c = &mut st.counters;
                if is_read {
                    c.cfg_reads += 1;
                } else {
                    c.cfg_writes += 1;
                }
                let dev = req.target.device();
                let completer = req.target;
                let cs = st.find(host, dev).map(|s| &mut *s.cs);
                let assigned = cs.is_some();
                let r = function::serve_config(&tlp, completer, cs, &mut buf);
                if !assigned {
                    st.counters.ur_unassigned += 1;
                    pr_warn_ratelimited!(
                        "host {}: config request for device {:02x}, not assigned: UR\n",
                        MacFmt(host),
                        dev
                    );
                }
                match r {
                    Ok(n) => out.push(buf.get(..n).unwrap_or(&[])),
                    Err(e) => {
                        st.counters.malformed += 1;
                        pr_warn_ratelimited!(
                            "host {}: bad config request: {:?}\n",
                            MacFmt(host),
                            e
                        );
                    }
                }
            }
            Kind::Message(_) => match Msg::parse(&tlp) {
                Some(Ok(Msg::Describe { dev })) => {
                    st.counters.describes += 1;
                    match st.find(host, dev) {
                        Some(s) => {
                            let mut i = 0;
                            while let Some(n) =
                                function::describe_chunk(dev, &s.cs, Bdf::default(), i, &mut buf)
                            {
                                out.push(buf.get(..n).unwrap_or(&[]));
                                i += 1;
                            }
                        }
                        None => {
                            if let Ok(n) = (Msg::NoDevice { dev }).emit(Bdf::default(), &mut buf) {
                                out.push(buf.get(..n).unwrap_or(&[]));
                            }
                        }
                    }
                }
                Some(Ok(_)) | None => {}
                Some(Err(e)) => {
                    st.counters.malformed += 1;
                    pr_warn_ratelimited!(
                        "host {}: malformed pcieoe message: {:?}\n",
                        MacFmt(host),
                        e
                    );
                }
            },
            _ => {
                // Memory requests reach the functions in a later stage;
                // until then a non-posted one is answered UR so that the
                // requester does not wait for its timeout.
                st.counters.ur_unsupported += 1;
                if let Some(n) = unsupported(&tlp, &mut buf) {
                    out.push(buf.get(..n).unwrap_or(&[]));
                }
            }
        }
    }
}

/// An Unsupported Request completion for a non-posted request, if it is
/// one.
fn unsupported(tlp: &Tlp<'_>, buf: &mut [u8]) -> Option<usize> {
    if !matches!(tlp.kind, Kind::MemRead(_)) {
        return None;
    }
    Tlp::completion_for(
        tlp,
        Bdf::default(),
        CompletionStatus::UnsupportedRequest,
        &[],
    )
    .ok()?
    .emit(buf)
    .ok()
}

/// One port's service: configuration requests and messages of its host.
#[pin_data]
pub(crate) struct DiLink {
    fabric: Arc<Fabric>,
    #[pin]
    port: Mutex<Option<PortHandle>>,
}

impl Service for DiLink {
    fn attach(&self, port: PortHandle) {
        *self.port.lock() = Some(port);
    }

    fn detach(&self) {
        let port = self.port.lock().take();
        drop(port);
    }

    fn opened(&self, peer: Mac, _epoch: u32, out: &mut Outbox) {
        let devices = self.fabric.state.lock().presence(peer);
        let mut buf = [0u8; TLP_BUF];
        if let Ok(n) = (Msg::Presence { devices }).emit(Bdf::default(), &mut buf) {
            out.push(buf.get(..n).unwrap_or(&[]));
        }
    }

    fn tlp(&self, peer: Mac, tlp: &[u8], out: &mut Outbox) {
        self.fabric.serve(peer, tlp, out);
    }
}

/// `/sys/kernel/debug/pcieoe_dev/functions`: what is served to whom, with
/// the registers a test compares with the host's view, and the counters.
pub(crate) struct FabricStats(pub(crate) Arc<Fabric>);

impl Show for FabricStats {
    fn show(&self, f: &mut SeqFile<'_>) -> fmt::Result {
        let st = self.0.state.lock();
        let c = st.counters;
        writeln!(f, "cfg_reads: {}", c.cfg_reads)?;
        writeln!(f, "cfg_writes: {}", c.cfg_writes)?;
        writeln!(f, "ur_unassigned: {}", c.ur_unassigned)?;
        writeln!(f, "ur_unsupported: {}", c.ur_unsupported)?;
        writeln!(f, "malformed: {}", c.malformed)?;
        writeln!(f, "describes: {}", c.describes)?;
        for s in st.served.iter() {
            let r = |off: u16, size: usize| s.cs.read(off, size).unwrap_or(u32::MAX);
            write!(
                f,
                "function {} host {} dev {:02x} id {:04x}:{:04x} command {:#06x}",
                &*s.name,
                MacFmt(s.host),
                s.dev,
                r(0, 2),
                r(2, 2),
                r(4, 2)
            )?;
            for bar in 0..6u16 {
                write!(f, " bar{} {:#010x}", bar, r(0x10 + 4 * bar, 4))?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// A DI port: the binding and its registration for Presence messages.
pub(crate) struct DiPort {
    fabric: Arc<Fabric>,
    link: Arc<DiLink>,
    _binding: crate::port::Binding,
}

impl DiPort {
    pub(crate) fn new(
        fabric: &Arc<Fabric>,
        bind: impl FnOnce(Arc<DiLink>) -> Result<crate::port::Binding>,
    ) -> Result<Self> {
        let link = fabric.link()?;
        match bind(link.clone()) {
            Ok(binding) => Ok(DiPort {
                fabric: fabric.clone(),
                link,
                _binding: binding,
            }),
            Err(e) => {
                fabric.unlink(&link);
                Err(e)
            }
        }
    }
}

impl Drop for DiPort {
    fn drop(&mut self) {
        self.fabric.unlink(&self.link);
    }
}
