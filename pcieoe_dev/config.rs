// SPDX-License-Identifier: GPL-2.0

//! The DI's configuration: the functions it serves and the hosts they are
//! assigned to, as user space builds it in configfs
//! (`/sys/kernel/config/pcieoe_dev/`, see Documentation/configfs.rst).
//!
//! [`Model`] is the configuration itself, behind one mutex in [`Config`]:
//! every configfs callback checks and updates it under that lock, so a
//! write that fails changes nothing. Later code (sessions, function
//! serving) reads the same model.

use core::{any::Any, fmt, fmt::Write};

use crate::fabric::Fabric;
use crate::pcieoe::vnic_layout::{MAX_QUEUES, MTU_LIMIT, MTU_MIN};
use crate::vhba::{LunPath, CONFIG_LUNS};

use kernel::{
    c_str,
    configfs::{self, Attr, ChildSpec, GroupSpec, Item, Page},
    fmt as kfmt,
    kvec_ext::VecExt,
    netdev::NetDevice,
    new_mutex,
    prelude::*,
    str::{CStr, CString},
    sync::{Arc, Mutex},
};

/// What a function emulates.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum FunctionType {
    /// A test function with a plain memory BAR.
    Test,
    /// A virtual network adapter.
    Vnic,
    /// A virtual storage host bus adapter.
    Vhba,
}

impl FunctionType {
    const ALL: [FunctionType; 3] = [Self::Test, Self::Vnic, Self::Vhba];

    /// The name in the `type` attribute.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Test => "test",
            Self::Vnic => "vnic",
            Self::Vhba => "vhba",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == s)
    }

    /// The vendor and device IDs a function of this type starts with: the
    /// project's own (vendor 0xe0e0, not PCI-SIG assigned), so that no
    /// in-kernel driver of some real device binds to a remote function it
    /// would not understand (virtio's IDs would bring virtio-pci).
    pub(crate) fn default_ids(self) -> (u16, u16) {
        match self {
            Self::Test => (0xe0e0, 0x0001),
            Self::Vnic => (0xe0e0, 0x0002),
            Self::Vhba => (0xe0e0, 0x0003),
        }
    }
}

/// One function (`functions/<name>`).
pub(crate) struct Function {
    /// The directory name.
    pub(crate) name: CString,
    /// What it emulates.
    pub(crate) ty: FunctionType,
    /// PCI vendor ID.
    pub(crate) vendor_id: u16,
    /// PCI device ID.
    pub(crate) device_id: u16,
    /// Served to the hosts it is assigned to; its attributes are frozen.
    pub(crate) enabled: bool,
    /// The IDs were written (else they follow the type's defaults).
    vendor_set: bool,
    device_set: bool,
    /// The vNIC settings (kept, but unused, for the other types; a vHBA
    /// uses `queues`).
    pub(crate) vnic: VnicParams,
    /// The vHBA settings (kept, but unused, for the other types).
    pub(crate) vhba: VhbaParams,
}

/// A vHBA's LUNs: `lun0` .. `lun3` (Documentation/vhba.rst).
pub(crate) struct VhbaParams {
    /// Each LUN's backing, if set; served contiguous from `lun0`.
    pub(crate) luns: [Option<LunPath>; CONFIG_LUNS],
}

/// Parses a LUN: empty (no LUN), or an absolute path, then optionally
/// ` ro`. A path has no NUL and is short enough that `<path> ro` and a
/// newline fit the attribute's page when read back; white space inside it
/// is kept.
fn parse_lun(s: &str) -> Option<Option<LunPath>> {
    const PATH_LEN_MAX: usize = 4096 - " ro\n".len() - 1;
    if s.is_empty() {
        return Some(None);
    }
    let (path, read_only) = match s.strip_suffix(" ro") {
        Some(p) => (p.trim_end(), true),
        None => (s, false),
    };
    if !path.starts_with('/') || path.len() > PATH_LEN_MAX || path.contains('\0') {
        return None;
    }
    let path = CString::try_from_fmt(kfmt!("{}", path)).ok()?;
    Some(Some(LunPath { path, read_only }))
}

/// A vNIC's settings: `uplink`, `mac`, `mtu` and `queues`
/// (Documentation/vnic.rst).
#[derive(Clone, Copy)]
pub(crate) struct VnicParams {
    /// The uplink's interface name, NUL-padded; empty until written.
    pub(crate) uplink: [u8; 16],
    /// The vNIC's MAC address.
    pub(crate) mac: Mac,
    /// The largest MTU its host may set.
    pub(crate) mtu: u32,
    /// Queue pairs.
    pub(crate) queues: u32,
}

impl VnicParams {
    /// The defaults: no uplink, a random locally administered MAC, MTU
    /// 1500, one queue pair.
    fn new() -> Self {
        let r = kernel::random::u32().to_le_bytes();
        let s = kernel::random::u32().to_le_bytes();
        VnicParams {
            uplink: [0; 16],
            // Locally administered (bit 1), unicast (bit 0 clear).
            mac: Mac([0x02, r[0], r[1], r[2], r[3], s[0]]),
            mtu: 1500,
            queues: 1,
        }
    }

    /// The uplink's name, if written.
    pub(crate) fn uplink(&self) -> Option<&str> {
        let len = self.uplink.iter().position(|&b| b == 0).unwrap_or(16);
        core::str::from_utf8(self.uplink.get(..len)?)
            .ok()
            .filter(|s| !s.is_empty())
    }
}

/// A valid interface name (as `dev_valid_name()` says): 1 to 15 bytes, not
/// `.` or `..`, without `/`, `:` or white space.
fn parse_ifname(s: &str) -> Option<[u8; 16]> {
    let ok = (1..16).contains(&s.len())
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
    if !ok {
        return None;
    }
    let mut name = [0u8; 16];
    name.get_mut(..s.len())?.copy_from_slice(s.as_bytes());
    Some(name)
}

/// A host's Ethernet address, the name of its directory.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mac(pub(crate) [u8; 6]);

impl Mac {
    /// Parses exactly `xx:xx:xx:xx:xx:xx` (hex digits, either case).
    fn parse(s: &str) -> Option<Self> {
        let mut mac = [0u8; 6];
        let mut parts = s.split(':');
        for byte in mac.iter_mut() {
            let part = parts.next()?;
            if part.len() != 2 {
                return None;
            }
            *byte = u8::from_str_radix(part, 16).ok()?;
        }
        parts.next().is_none().then_some(Mac(mac))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// One host (`hosts/<mac>`) and the functions assigned to it.
pub(crate) struct Host {
    /// Its address.
    pub(crate) mac: Mac,
    /// Names of the functions assigned to it, in assignment order.
    pub(crate) functions: KVec<CString>,
}

/// The whole configuration.
pub(crate) struct Model {
    /// The functions, in creation order.
    pub(crate) functions: KVec<Function>,
    /// The hosts, in creation order.
    pub(crate) hosts: KVec<Host>,
}

impl Model {
    fn function(&mut self, name: &CStr) -> Result<&mut Function> {
        self.functions
            .iter_mut()
            .find(|f| f.name.as_bytes() == name.as_bytes())
            .ok_or(ENOENT)
    }

    fn host(&mut self, mac: Mac) -> Result<&mut Host> {
        self.hosts.iter_mut().find(|h| h.mac == mac).ok_or(ENOENT)
    }
}

/// The configuration behind its lock.
#[pin_data]
pub(crate) struct Config {
    /// Checked and updated under this lock only.
    #[pin]
    pub(crate) model: Mutex<Model>,
    /// What is served, kept in step with the model.
    fabric: Arc<Fabric>,
}

impl Config {
    /// An empty configuration.
    pub(crate) fn new(fabric: Arc<Fabric>) -> Result<Arc<Self>> {
        Arc::pin_init(
            pin_init!(Config {
                model <- new_mutex!(Model {
                    functions: KVec::new(),
                    hosts: KVec::new(),
                }),
                fabric,
            }),
            GFP_KERNEL,
        )
    }
}

/// A written value for the log: without its newline, and marked when it is
/// not text.
struct Shown<'a>(&'a [u8]);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match core::str::from_utf8(self.0) {
            Ok(s) => write!(f, "\"{}\"", s.escape_debug()),
            Err(_) => write!(f, "<{} bytes, not UTF-8>", self.0.len()),
        }
    }
}

/// The written value (its newline already removed) as text.
fn text(value: &[u8]) -> Option<&str> {
    core::str::from_utf8(value).ok()
}

const VNIC_MTU_MIN: u32 = MTU_MIN;
const VNIC_MTU_MAX: u32 = MTU_LIMIT;
const VNIC_QUEUES_MAX: u32 = MAX_QUEUES as u32;

/// Strict hex: an optional `0x`, then one to four hex digits.
fn parse_id(s: &str) -> Option<u16> {
    let digits = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u16::from_str_radix(digits, 16).ok()
}

const ATTR_TYPE: usize = 0;
const ATTR_VENDOR_ID: usize = 1;
const ATTR_DEVICE_ID: usize = 2;
const ATTR_ENABLE: usize = 3;
const ATTR_UPLINK: usize = 4;
const ATTR_MAC: usize = 5;
const ATTR_MTU: usize = 6;
const ATTR_QUEUES: usize = 7;
const ATTR_LUN0: usize = 8;

static FUNCTION_ATTRS: [Attr; 8 + CONFIG_LUNS] = [
    Attr {
        name: c_str!("type"),
        writable: true,
    },
    Attr {
        name: c_str!("vendor_id"),
        writable: true,
    },
    Attr {
        name: c_str!("device_id"),
        writable: true,
    },
    Attr {
        name: c_str!("enable"),
        writable: true,
    },
    Attr {
        name: c_str!("uplink"),
        writable: true,
    },
    Attr {
        name: c_str!("mac"),
        writable: true,
    },
    Attr {
        name: c_str!("mtu"),
        writable: true,
    },
    Attr {
        name: c_str!("queues"),
        writable: true,
    },
    Attr {
        name: c_str!("lun0"),
        writable: true,
    },
    Attr {
        name: c_str!("lun1"),
        writable: true,
    },
    Attr {
        name: c_str!("lun2"),
        writable: true,
    },
    Attr {
        name: c_str!("lun3"),
        writable: true,
    },
];

static HOST_ATTRS: [Attr; 1] = [Attr {
    name: c_str!("assigned"),
    writable: false,
}];

/// `functions/<name>`.
struct FunctionItem {
    cfg: Arc<Config>,
    name: CString,
}

impl FunctionItem {
    /// Applies a write; `true` when what is served must follow.
    fn store_locked(&self, f: &mut Function, attr: usize, value: &[u8]) -> Result<bool> {
        // `echo` appends a newline: not part of the value.
        let value = value.strip_suffix(b"\n").unwrap_or(value);
        let attr_name = FUNCTION_ATTRS
            .get(attr)
            .map_or("?", |a| a.name.to_str().unwrap_or("?"));
        let bad = || {
            pr_warn!(
                "function {}: invalid {} {}\n",
                &*self.name,
                attr_name,
                Shown(value)
            );
            EINVAL
        };
        let s = text(value).ok_or_else(bad)?;
        if attr == ATTR_ENABLE {
            let enable = match s {
                "0" => false,
                "1" => true,
                _ => return Err(bad()),
            };
            if enable && !f.enabled && f.ty == FunctionType::Vnic {
                check_uplink(&self.name, &f.vnic)?;
            }
            if enable && !f.enabled && f.ty == FunctionType::Vhba {
                crate::vhba::check(&self.name, &f.vhba.luns)?;
            }
            if enable != f.enabled {
                f.enabled = enable;
                pr_info!(
                    "function {} {} ({} {:04x}:{:04x})\n",
                    &*self.name,
                    if enable { "enabled" } else { "disabled" },
                    f.ty.name(),
                    f.vendor_id,
                    f.device_id
                );
                return Ok(true);
            }
            return Ok(false);
        }
        if f.enabled {
            pr_warn!(
                "function {}: cannot set {} to {} while enabled\n",
                &*self.name,
                attr_name,
                Shown(value)
            );
            return Err(EBUSY);
        }
        match attr {
            ATTR_TYPE => {
                let ty = FunctionType::parse(s).ok_or_else(bad)?;
                let (vendor, device) = ty.default_ids();
                f.ty = ty;
                if !f.vendor_set {
                    f.vendor_id = vendor;
                }
                if !f.device_set {
                    f.device_id = device;
                }
            }
            ATTR_VENDOR_ID => {
                f.vendor_id = parse_id(s).ok_or_else(bad)?;
                f.vendor_set = true;
            }
            ATTR_DEVICE_ID => {
                f.device_id = parse_id(s).ok_or_else(bad)?;
                f.device_set = true;
            }
            ATTR_UPLINK => f.vnic.uplink = parse_ifname(s).ok_or_else(bad)?,
            ATTR_MAC => {
                let mac = Mac::parse(s).ok_or_else(bad)?;
                // A multicast or all-zero address cannot be a station's.
                if mac.0[0] & 1 != 0 || mac.0 == [0; 6] {
                    return Err(bad());
                }
                f.vnic.mac = mac;
            }
            ATTR_MTU => {
                f.vnic.mtu = s
                    .parse::<u32>()
                    .ok()
                    .filter(|m| (VNIC_MTU_MIN..=VNIC_MTU_MAX).contains(m))
                    .ok_or_else(bad)?;
            }
            ATTR_QUEUES => {
                f.vnic.queues = s
                    .parse::<u32>()
                    .ok()
                    .filter(|q| (1..=VNIC_QUEUES_MAX).contains(q))
                    .ok_or_else(bad)?;
            }
            a if (ATTR_LUN0..ATTR_LUN0 + CONFIG_LUNS).contains(&a) => {
                let lun = parse_lun(s).ok_or_else(bad)?;
                let slot = f.vhba.luns.get_mut(a - ATTR_LUN0).ok_or(EINVAL)?;
                *slot = lun;
            }
            _ => return Err(EINVAL),
        }
        Ok(false)
    }
}

impl Item for FunctionItem {
    fn show(&self, attr: usize, page: &mut Page<'_>) -> Result {
        let mut model = self.cfg.model.lock();
        let f = model.function(&self.name)?;
        let r = match attr {
            ATTR_TYPE => writeln!(page, "{}", f.ty.name()),
            ATTR_VENDOR_ID => writeln!(page, "0x{:04x}", f.vendor_id),
            ATTR_DEVICE_ID => writeln!(page, "0x{:04x}", f.device_id),
            ATTR_ENABLE => writeln!(page, "{}", u8::from(f.enabled)),
            ATTR_UPLINK => writeln!(page, "{}", f.vnic.uplink().unwrap_or("")),
            ATTR_MAC => writeln!(page, "{}", f.vnic.mac),
            ATTR_MTU => writeln!(page, "{}", f.vnic.mtu),
            ATTR_QUEUES => writeln!(page, "{}", f.vnic.queues),
            a if (ATTR_LUN0..ATTR_LUN0 + CONFIG_LUNS).contains(&a) => {
                match f.vhba.luns.get(a - ATTR_LUN0).and_then(Option::as_ref) {
                    Some(l) if l.read_only => writeln!(page, "{} ro", &*l.path),
                    Some(l) => writeln!(page, "{}", &*l.path),
                    None => writeln!(page),
                }
            }
            _ => return Err(EINVAL),
        };
        r.map_err(|_| EFBIG)
    }

    fn store(&self, attr: usize, value: &[u8]) -> Result {
        let mut model = self.cfg.model.lock();
        let f = model.function(&self.name)?;
        if self.store_locked(f, attr, value)? {
            self.cfg.fabric.sync(&model)?;
        }
        Ok(())
    }
}

/// A vNIC may be enabled once its uplink is named and exists.
fn check_uplink(name: &CStr, p: &VnicParams) -> Result {
    let Some(uplink) = p.uplink() else {
        pr_warn!(
            "function {}: a vnic needs its uplink set before enable\n",
            name
        );
        return Err(EINVAL);
    };
    let ifname = CString::try_from_fmt(kfmt!("{}", uplink))?;
    if NetDevice::get_by_name(&ifname).is_err() {
        pr_warn!("function {}: uplink {} does not exist\n", name, uplink);
        return Err(ENODEV);
    }
    Ok(())
}

/// `functions/`: `mkdir` creates a disabled test function.
struct FunctionsDir {
    cfg: Arc<Config>,
}

impl configfs::Group for FunctionsDir {
    fn make(&self, name: &CStr) -> Result<KBox<dyn Item>> {
        let ty = FunctionType::Test;
        let (vendor_id, device_id) = ty.default_ids();
        let item = configfs::new_item(FunctionItem {
            cfg: self.cfg.clone(),
            name: CString::try_from_fmt(kfmt!("{}", name))?,
        })?;
        let function = Function {
            name: CString::try_from_fmt(kfmt!("{}", name))?,
            ty,
            vendor_id,
            device_id,
            enabled: false,
            vendor_set: false,
            device_set: false,
            vnic: VnicParams::new(),
            vhba: VhbaParams {
                luns: [None, None, None, None],
            },
        };
        self.cfg.model.lock().functions.push(function, GFP_KERNEL)?;
        pr_info!("function {} created\n", name);
        Ok(item)
    }

    fn drop_item(&self, item: &dyn Item) {
        let item: &dyn Any = item;
        if let Some(item) = item.downcast_ref::<FunctionItem>() {
            let mut model = self.cfg.model.lock();
            model
                .functions
                .retain(|f| f.name.as_bytes() != item.name.as_bytes());
            pr_info!("function {} removed\n", &*item.name);
            let _ = self.cfg.fabric.sync(&model);
        }
    }
}

/// `hosts/<mac>`, whose `functions/` holds symlinks to assigned functions.
struct HostItem {
    cfg: Arc<Config>,
    mac: Mac,
}

impl Item for HostItem {
    fn show(&self, _attr: usize, page: &mut Page<'_>) -> Result {
        let mut model = self.cfg.model.lock();
        let host = model.host(self.mac)?;
        for f in host.functions.iter() {
            writeln!(page, "{}", &**f).map_err(|_| EFBIG)?;
        }
        Ok(())
    }

    fn allow_link(&self, target: &dyn Any) -> Result {
        let Some(function) = target.downcast_ref::<FunctionItem>() else {
            pr_warn!("host {}: only functions can be assigned\n", self.mac);
            return Err(EINVAL);
        };
        let mut model = self.cfg.model.lock();
        if let Some(other) = model.hosts.iter().find(|h| {
            h.mac != self.mac
                && h.functions
                    .iter()
                    .any(|f| f.as_bytes() == function.name.as_bytes())
        }) {
            pr_warn!(
                "host {}: function {} is assigned to host {}\n",
                self.mac,
                &*function.name,
                other.mac
            );
            return Err(EBUSY);
        }
        let host = model.host(self.mac)?;
        if host
            .functions
            .iter()
            .any(|f| f.as_bytes() == function.name.as_bytes())
        {
            pr_warn!(
                "host {}: function {} is already assigned\n",
                self.mac,
                &*function.name
            );
            return Err(EEXIST);
        }
        let name = CString::try_from_fmt(kfmt!("{}", &*function.name))?;
        host.functions.push(name, GFP_KERNEL)?;
        pr_info!(
            "function {} assigned to host {}\n",
            &*function.name,
            self.mac
        );
        self.cfg.fabric.sync(&model)
    }

    fn drop_link(&self, target: &dyn Any) {
        let Some(function) = target.downcast_ref::<FunctionItem>() else {
            return;
        };
        let mut model = self.cfg.model.lock();
        if let Ok(host) = model.host(self.mac) {
            host.functions
                .retain(|f| f.as_bytes() != function.name.as_bytes());
            pr_info!(
                "function {} unassigned from host {}\n",
                &*function.name,
                self.mac
            );
        }
        let _ = self.cfg.fabric.sync(&model);
    }
}

/// `hosts/`: `mkdir <mac>` adds a host.
struct HostsDir {
    cfg: Arc<Config>,
}

impl configfs::Group for HostsDir {
    fn make(&self, name: &CStr) -> Result<KBox<dyn Item>> {
        let Some(mac) = name.to_str().ok().and_then(Mac::parse) else {
            pr_warn!(
                "invalid host id {}: want a MAC address xx:xx:xx:xx:xx:xx\n",
                Shown(name.as_bytes())
            );
            return Err(EINVAL);
        };
        let item = configfs::new_item(HostItem {
            cfg: self.cfg.clone(),
            mac,
        })?;
        let mut model = self.cfg.model.lock();
        // Another spelling of the same address (upper case).
        if model.host(mac).is_ok() {
            pr_warn!("host {} exists\n", mac);
            return Err(EEXIST);
        }
        model.hosts.push(
            Host {
                mac,
                functions: KVec::new(),
            },
            GFP_KERNEL,
        )?;
        pr_info!("host {} created\n", mac);
        Ok(item)
    }

    fn drop_item(&self, item: &dyn Item) {
        let item: &dyn Any = item;
        if let Some(item) = item.downcast_ref::<HostItem>() {
            let mut model = self.cfg.model.lock();
            model.hosts.retain(|h| h.mac != item.mac);
            pr_info!("host {} removed\n", item.mac);
            let _ = self.cfg.fabric.sync(&model);
        }
    }
}

/// Registers `/sys/kernel/config/pcieoe_dev` over `cfg`.
pub(crate) fn register(
    module: &'static ThisModule,
    cfg: &Arc<Config>,
    ports: GroupSpec,
) -> Result<configfs::Subsystem> {
    let mut groups = KVec::with_capacity(3, GFP_KERNEL)?;
    groups.push(ports, GFP_KERNEL)?;
    groups.push(
        GroupSpec::new(
            c_str!("functions"),
            FunctionsDir { cfg: cfg.clone() },
            ChildSpec {
                attrs: &FUNCTION_ATTRS,
                links: None,
            },
        )?,
        GFP_KERNEL,
    )?;
    groups.push(
        GroupSpec::new(
            c_str!("hosts"),
            HostsDir { cfg: cfg.clone() },
            ChildSpec {
                attrs: &HOST_ATTRS,
                links: Some(c_str!("functions")),
            },
        )?,
        GFP_KERNEL,
    )?;
    configfs::Subsystem::register(module, c_str!("pcieoe_dev"), groups)
}
