// SPDX-License-Identifier: GPL-2.0

//! pcieoe_dev: the device interface (DI) of PCI Express over Ethernet.
//!
//! The DI serves PCIe functions (test, vNIC, vHBA and their SR-IOV VFs) to
//! hosts across Ethernet. User space configures it in configfs
//! (`/sys/kernel/config/pcieoe_dev/`, [`config`]); sessions and function
//! models build on this.

use kernel::prelude::*;

#[path = "../rust/pcieoe/src/lib.rs"]
pub mod pcieoe;

mod config;
mod fabric;
#[path = "../common/port.rs"]
mod port;
#[path = "../common/ports.rs"]
mod ports;
#[path = "../common/stats.rs"]
mod stats;
mod testfn;
mod uplink;
mod vhba;
mod vnic;

use fabric::{DiPort, Fabric, FabricStats, Running};
use kernel::{c_str, debugfs::Dir, netdev::NotifierRegistration, str::CStr, sync::Arc};
use pcieoe::{ethertype::EtherType, session::Role};
use port::{Binding, PortConfig};

module! {
    type: PcieoeDev,
    name: "pcieoe_dev",
    author: "pcieoe developers",
    description: "PCI Express over Ethernet: device interface (serves PCIe functions to remote hosts)",
    license: "GPL",
}

kernel::module_params! {
    /// Ethertype of the PCIeoE frames this device interface sends and accepts.
    ethertype: u16 = crate::pcieoe::ethertype::DEFAULT,
        "Ethertype of PCIeoE frames (default 0x88b5; 0x88b6 is the other local experimental one)";
    /// Network interface to bind at load time (empty: none).
    netdev: str = kernel::c_str!(""), "Network interface to bind at load time (empty: none; configfs ports/ binds more)";
}

/// Binds DI ports: a session per netdev, serving the fabric's functions.
struct DevBinder {
    fabric: Arc<Fabric>,
    ethertype: EtherType,
    debugfs: Arc<Dir>,
}

impl ports::Binder for DevBinder {
    type Bound = DiPort;

    fn bind(&self, ifname: &CStr) -> Result<DiPort> {
        DiPort::new(&self.fabric, |link| {
            Binding::new(&PortConfig {
                role: Role::Device,
                ifname,
                ethertype: self.ethertype,
                debugfs: &self.debugfs,
                service: link,
                files: None,
            })
        })
    }
}

struct PcieoeDev {
    ethertype: EtherType,
    // Field order is teardown order: configfs first (user space holds the
    // module while it has directories there, so its ports are unbound by
    // then), then the parameter's port, then what they all use.
    _configfs: kernel::configfs::Subsystem,
    /// Follows the vNICs' uplinks.
    _uplinks: NotifierRegistration<uplink::UplinkWatch>,
    /// The netdev bound by the `netdev` parameter, if any.
    _port: Option<DiPort>,
    _binder: Arc<DevBinder>,
    _config: Arc<config::Config>,
    /// Last: the timeout work stops once no port can start a DMA.
    _running: Running,
}

impl kernel::Module for PcieoeDev {
    fn init(module: &'static ThisModule) -> Result<Self> {
        let ethertype = EtherType::new(module_params::ethertype.get()).map_err(|e| {
            pr_err!("invalid ethertype parameter: {}\n", e);
            EINVAL
        })?;
        let fabric = Fabric::new()?;
        let running = fabric.start();
        let uplinks =
            NotifierRegistration::new(Arc::new(uplink::UplinkWatch(fabric.clone()), GFP_KERNEL)?)?;
        let mut debugfs = Dir::new(c_str!("pcieoe_dev")).inspect_err(|e| {
            pr_err!("debugfs directory pcieoe_dev: error {:?}\n", e);
        })?;
        debugfs.add_file(
            c_str!("functions"),
            Arc::new(FabricStats(fabric.clone()), GFP_KERNEL)?,
        )?;
        let binder = Arc::new(
            DevBinder {
                fabric: fabric.clone(),
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
        let cfg = config::Config::new(fabric)?;
        let configfs = config::register(module, &cfg, ports::group(binder.clone())?)?;
        pr_info!(
            "device interface loaded, Ethertype {:#06x}\n",
            ethertype.get()
        );
        Ok(PcieoeDev {
            ethertype,
            _configfs: configfs,
            _uplinks: uplinks,
            _port: port,
            _binder: binder,
            _config: cfg,
            _running: running,
        })
    }
}

impl Drop for PcieoeDev {
    fn drop(&mut self) {
        // The parameter's port goes before the last line of the log.
        drop(self._port.take());
        pr_info!(
            "device interface unloaded, Ethertype {:#06x}\n",
            self.ethertype.get()
        );
    }
}
