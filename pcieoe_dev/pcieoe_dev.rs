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
#[path = "../common/port.rs"]
mod port;
#[path = "../common/stats.rs"]
mod stats;

use kernel::{c_str, sync::Arc};
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
    netdev: str = kernel::c_str!(""), "Network interface to bind at load time (empty: none)";
}

struct PcieoeDev {
    ethertype: EtherType,
    /// The bound netdev, if any (and while it exists): dropping it closes
    /// the session in order and unbinds.
    _port: Option<Binding>,
    /// The configuration tree; unregistered first on unload (configfs pins
    /// the module while user space has directories in it).
    _configfs: kernel::configfs::Subsystem,
    /// The configuration the tree edits.
    _config: Arc<config::Config>,
}

impl kernel::Module for PcieoeDev {
    fn init(module: &'static ThisModule) -> Result<Self> {
        let ethertype = EtherType::new(module_params::ethertype.get()).map_err(|e| {
            pr_err!("invalid ethertype parameter: {}\n", e);
            EINVAL
        })?;
        let ifname = module_params::netdev.get();
        let port = if ifname.is_empty() {
            None
        } else {
            Some(Binding::new(&PortConfig {
                role: Role::Device,
                ifname,
                ethertype,
                debugfs: c_str!("pcieoe_dev"),
            })?)
        };
        let cfg = config::Config::new()?;
        let configfs = config::register(module, &cfg)?;
        pr_info!(
            "device interface loaded, Ethertype {:#06x}\n",
            ethertype.get()
        );
        Ok(PcieoeDev {
            ethertype,
            _port: port,
            _configfs: configfs,
            _config: cfg,
        })
    }
}

impl Drop for PcieoeDev {
    fn drop(&mut self) {
        pr_info!(
            "device interface unloaded, Ethertype {:#06x}\n",
            self.ethertype.get()
        );
    }
}
