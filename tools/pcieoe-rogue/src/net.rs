// SPDX-License-Identifier: GPL-2.0

//! The rogue's end of the fabric: an `AF_PACKET` socket on one interface
//! and the engine's [`Session`] in the device-interface role over it.

use std::collections::VecDeque;
use std::ffi::CString;
use std::time::{Duration, Instant as StdInstant};

use pcieoe::clock::{FrameSink, Instant, Rng, SinkFull};
use pcieoe::ethertype::EtherType;
use pcieoe::frame::Mac;
use pcieoe::link::{Link, Release, SendError};
use pcieoe::session::{Event, Handler, Role, Session, SessionConfig, State};

/// Frames in flight (the engine's replay window).
const SLOTS: usize = 64;
/// Largest frame received.
const FRAME_MAX: usize = 9216;

/// xorshift32, seeded from the clock: session epochs need not be secret.
struct XRng(u32);

impl Rng for XRng {
    fn next_u32(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        self.0
    }
}

/// A raw socket bound to one interface and Ethertype.
struct Sock(i32);

impl Drop for Sock {
    fn drop(&mut self) {
        // SAFETY: `self.0` is a descriptor this `Sock` opened and owns; it is
        // closed once, here.
        unsafe { libc::close(self.0) };
    }
}

impl FrameSink for Sock {
    fn send(&mut self, frame: &[u8]) -> Result<(), SinkFull> {
        // SAFETY: `frame` is valid for `frame.len()` bytes during the call;
        // the socket is bound, so no address is needed.
        let n = unsafe { libc::send(self.0, frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 {
            return Err(SinkFull);
        }
        Ok(())
    }
}

/// What the session hands up: TLPs in order, and whether it is open.
#[derive(Default)]
struct Up {
    tlps: VecDeque<Vec<u8>>,
    open: bool,
    downs: u32,
}

impl Handler for Up {
    fn tlp(&mut self, tlp: &[u8]) -> Release {
        self.tlps.push_back(tlp.to_vec());
        Release::Now
    }

    fn event(&mut self, ev: Event<'_>) {
        match ev {
            Event::Opened { epoch, peer, mtu } => {
                println!(
                    "# session open: epoch {epoch:#010x}, host {}, MTU {mtu}",
                    mac_str(&peer)
                );
                self.open = true;
            }
            Event::Down { epoch, reason } => {
                println!("# session {epoch:#010x} down: {reason:?}");
                self.open = false;
                self.downs += 1;
            }
            _ => {}
        }
    }
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_str(mac: &Mac) -> String {
    let parts: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
    parts.join(":")
}

/// A DI session on one interface.
pub struct Rig {
    sess: Session<XRng, Vec<u8>, SLOTS>,
    up: Up,
    sock: Sock,
    mac: Mac,
    t0: StdInstant,
}

impl Rig {
    /// Opens `ifname` for `ethertype` and starts listening for a host.
    pub fn open(ifname: &str, ethertype: EtherType) -> Result<Rig, String> {
        let path = format!("/sys/class/net/{ifname}/address");
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        let mut mac = [0u8; 6];
        let parts: Vec<&str> = text.trim().split(':').collect();
        if parts.len() != 6 {
            return Err(format!("{path}: not a MAC address: {}", text.trim()));
        }
        for (b, p) in mac.iter_mut().zip(parts) {
            *b = u8::from_str_radix(p, 16).map_err(|_| format!("{path}: bad MAC {text}"))?;
        }
        let name = CString::new(ifname).map_err(|_| "bad interface name".to_string())?;
        // SAFETY: `name` is a NUL-terminated string that outlives the call.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(format!("no interface {ifname}"));
        }
        let proto = ethertype.get().to_be();
        // SAFETY: plain system call with constant arguments.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
        if fd < 0 {
            return Err(format!(
                "socket(AF_PACKET): {}",
                std::io::Error::last_os_error()
            ));
        }
        let sock = Sock(fd);
        // SAFETY: `sockaddr_ll` is plain data; all zeros is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = i32::try_from(ifindex).map_err(|_| "ifindex out of range")?;
        let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: `sll` is a valid `sockaddr_ll` of `len` bytes for the call.
        let r = unsafe { libc::bind(sock.0, (&sll as *const libc::sockaddr_ll).cast(), len) };
        if r != 0 {
            return Err(format!(
                "bind to {ifname}: {}",
                std::io::Error::last_os_error()
            ));
        }
        let mut cfg = SessionConfig::new(Role::Device, mac);
        cfg.ethertype = ethertype;
        cfg.vlan = None;
        cfg.functions = 1;
        cfg.id = 0x0bad_0bad;
        let storage = vec![0u8; Link::<Vec<u8>, SLOTS>::storage_len(cfg.mtu)];
        let t0 = StdInstant::now();
        let clock = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        let seed = clock.map_or(0, |d| d.subsec_nanos()) ^ std::process::id() ^ 0x9e37_79b9;
        let mut sess = Session::new(cfg, XRng(seed | 1), storage)
            .map_err(|e| format!("session configuration refused: {e:?}"))?;
        sess.start(Instant::from_nanos(0));
        Ok(Rig {
            sess,
            up: Up::default(),
            sock,
            mac,
            t0,
        })
    }

    fn now(&self) -> Instant {
        Instant::from_nanos(u64::try_from(self.t0.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    /// Whether the session is open.
    pub fn is_open(&self) -> bool {
        self.up.open
    }

    /// How many times the session went down.
    pub fn downs(&self) -> u32 {
        self.up.downs
    }

    /// The next TLP the host sent, in order.
    pub fn next_tlp(&mut self) -> Option<Vec<u8>> {
        self.up.tlps.pop_front()
    }

    /// Runs the session's timers, waits up to `wait_ms` for frames and
    /// takes what arrived. With `stdin`, also reports whether standard
    /// input reached its end (or failed).
    pub fn pump(&mut self, wait_ms: i32, stdin: bool) -> bool {
        let now = self.now();
        self.sess.poll(now, &mut self.sock, &mut self.up);
        let mut fds = [
            libc::pollfd {
                fd: self.sock.0,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: 0,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let nfds: libc::nfds_t = if stdin { 2 } else { 1 };
        // SAFETY: `fds` holds `nfds` valid `pollfd`s for the call.
        unsafe { libc::poll(fds.as_mut_ptr(), nfds, wait_ms) };
        let mut eof = false;
        if stdin && fds[1].revents != 0 {
            let mut b = [0u8; 256];
            // SAFETY: `b` is valid for `b.len()` bytes.
            let n = unsafe { libc::read(0, b.as_mut_ptr().cast(), b.len()) };
            eof = n <= 0;
        }
        let mut buf = vec![0u8; FRAME_MAX];
        loop {
            // SAFETY: `buf` is valid for `buf.len()` bytes.
            let n = unsafe {
                libc::recv(
                    self.sock.0,
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            let Ok(n) = usize::try_from(n) else { break };
            if n == 0 {
                break;
            }
            let frame = buf.get(..n).unwrap_or(&[]);
            // Our own frames come back on a packet socket: skip them.
            if frame.get(6..12) == Some(&self.mac[..]) {
                continue;
            }
            let now = self.now();
            self.sess.receive(now, frame, &mut self.up);
        }
        let now = self.now();
        self.sess.poll(now, &mut self.sock, &mut self.up);
        eof
    }

    /// Queues one TLP, as raw bytes (which need not decode: only the
    /// flow-control class must be known), waiting up to 2 s for credits or
    /// window; TLPs that arrive meanwhile wait in [`Rig::next_tlp`].
    pub fn send(&mut self, tlp: &[u8]) -> Result<(), String> {
        let end = StdInstant::now() + Duration::from_secs(2);
        loop {
            match self.sess.send_tlp(tlp) {
                Ok(()) => {
                    let now = self.now();
                    self.sess.poll(now, &mut self.sock, &mut self.up);
                    return Ok(());
                }
                Err(SendError::NoCredit | SendError::WindowFull) if StdInstant::now() < end => {
                    self.pump(1, false);
                }
                Err(e) => return Err(format!("cannot send: {e:?}")),
            }
        }
    }

    /// Closes the session in order (at most 1 s).
    pub fn close(&mut self) {
        let now = self.now();
        self.sess.close(now);
        let end = StdInstant::now() + Duration::from_secs(1);
        // A DI goes back to listening once closed: stop there, or the host
        // would open a new session.
        while StdInstant::now() < end
            && matches!(
                self.sess.state(),
                State::Open { .. } | State::Closing { .. }
            )
        {
            self.pump(5, false);
        }
    }
}
