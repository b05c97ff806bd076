// SPDX-License-Identifier: GPL-2.0

//! pcieoe_host: the host interface (HI) of PCI Express over Ethernet.
//!
//! Each bound netdev (a *port*: `netdev=` at load time, or
//! `/sys/kernel/config/pcieoe_host/ports/<ifname>`) discovers a device
//! interface, keeps a session with it, and gets a PCI domain whose devices
//! are the functions that DI assigned to this host (see `remote.rs`).

use kernel::prelude::*;

#[path = "../rust/pcieoe/src/lib.rs"]
pub mod pcieoe;

#[path = "../common/port.rs"]
mod port;
#[path = "../common/ports.rs"]
mod ports;
mod remote;
#[path = "../common/stats.rs"]
mod stats;

use kernel::{c_str, configfs, debugfs::Dir, str::CStr, sync::Arc};
use pcieoe::{ethertype::EtherType, session::Role};
use port::{Binding, PortConfig};
use remote::{CfgProbeUnassigned, CfgRtt, Link, MmioRtt, PciInfo, Remote};

module! {
    type: PcieoeHost,
    name: "pcieoe_host",
    author: "pcieoe developers",
    description: "PCI Express over Ethernet: host interface (remote PCIe functions in a virtual PCI domain)",
    license: "GPL",
}

kernel::module_params! {
    /// Ethertype of the PCIeoE frames this host sends and accepts.
    ethertype: u16 = crate::pcieoe::ethertype::DEFAULT,
        "Ethertype of PCIeoE frames (default 0x88b5; 0x88b6 is the other local experimental one)";
    /// Network interface to bind at load time (empty: none).
    netdev: str = kernel::c_str!(""), "Network interface to bind at load time (empty: none; configfs ports/ binds more)";
}

/// A bound host port: its session and its PCI domain.
struct HostPort {
    remote: Arc<Remote>,
    binding: Option<Binding>,
}

impl Drop for HostPort {
    fn drop(&mut self) {
        // The domain goes first (drivers unbound, devices removed) while
        // the session can still carry their last configuration writes;
        // then the session closes in order.
        self.remote.shutdown();
        drop(self.binding.take());
    }
}

struct HostBinder {
    ethertype: EtherType,
    debugfs: Arc<Dir>,
}

impl ports::Binder for HostBinder {
    type Bound = HostPort;

    fn bind(&self, ifname: &CStr) -> Result<HostPort> {
        let remote = Remote::new()?;
        let files = |dir: &mut Dir| -> Result {
            dir.add_file(
                c_str!("pci"),
                Arc::new(PciInfo(remote.clone()), GFP_KERNEL)?,
            )?;
            dir.add_file(
                c_str!("cfg_rtt"),
                Arc::new(CfgRtt(remote.clone()), GFP_KERNEL)?,
            )?;
            dir.add_file(
                c_str!("mmio_rtt"),
                Arc::new(MmioRtt(remote.clone()), GFP_KERNEL)?,
            )?;
            dir.add_file(
                c_str!("cfg_probe_unassigned"),
                Arc::new(CfgProbeUnassigned(remote.clone()), GFP_KERNEL)?,
            )
        };
        let link = Arc::new(Link(remote.clone()), GFP_KERNEL);
        let bound = link.map_err(Error::from).and_then(|link| {
            Binding::new(&PortConfig {
                role: Role::Host,
                ifname,
                ethertype: self.ethertype,
                debugfs: &self.debugfs,
                service: link,
                files: Some(&files),
            })
        });
        match bound {
            Ok(binding) => Ok(HostPort {
                remote,
                binding: Some(binding),
            }),
            Err(e) => {
                remote.shutdown();
                Err(e)
            }
        }
    }
}

struct PcieoeHost {
    ethertype: EtherType,
    // Teardown order: configfs (and with it its ports), then the
    // parameter's port, then what they use.
    _configfs: configfs::Subsystem,
    _port: Option<HostPort>,
    _binder: Arc<HostBinder>,
}

impl kernel::Module for PcieoeHost {
    fn init(module: &'static ThisModule) -> Result<Self> {
        let ethertype = EtherType::new(module_params::ethertype.get()).map_err(|e| {
            pr_err!("invalid ethertype parameter: {}\n", e);
            EINVAL
        })?;
        let debugfs = Dir::new(c_str!("pcieoe_host")).inspect_err(|e| {
            pr_err!("debugfs directory pcieoe_host: error {:?}\n", e);
        })?;
        let binder = Arc::new(
            HostBinder {
                ethertype,
                debugfs: Arc::new(debugfs, GFP_KERNEL)?,
            },
            GFP_KERNEL,
        )?;
        let ifname = module_params::netdev.get();
        let port = if ifname.is_empty() {
            None
        } else {
            Some(ports::Binder::bind(&*binder, ifname)?)
        };
        let mut groups = KVec::with_capacity(1, GFP_KERNEL)?;
        groups.push(ports::group(binder.clone())?, GFP_KERNEL)?;
        let configfs = configfs::Subsystem::register(module, c_str!("pcieoe_host"), groups)?;
        pr_info!(
            "host interface loaded, Ethertype {:#06x}\n",
            ethertype.get()
        );
        Ok(PcieoeHost {
            ethertype,
            _configfs: configfs,
            _port: port,
            _binder: binder,
        })
    }
}

impl Drop for PcieoeHost {
    fn drop(&mut self) {
        // The parameter's port goes before the last line of the log.
        drop(self._port.take());
        pr_info!(
            "host interface unloaded, Ethertype {:#06x}\n",
            self.ethertype.get()
        );
    }
}
