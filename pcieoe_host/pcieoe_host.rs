// SPDX-License-Identifier: GPL-2.0

//! pcieoe_host: the host interface (HI) of PCI Express over Ethernet.
//!
//! The HI gives the host a virtual PCI domain whose functions live on a
//! device interface across Ethernet. For now it validates its configuration
//! and holds it; discovery, sessions and the PCI domain build on this.

use kernel::prelude::*;

#[path = "../rust/pcieoe/src/lib.rs"]
pub mod pcieoe;

#[path = "../common/port.rs"]
mod port;
#[path = "../common/stats.rs"]
mod stats;

use kernel::c_str;
use pcieoe::{ethertype::EtherType, session::Role};
use port::{Binding, PortConfig};

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
    netdev: str = kernel::c_str!(""), "Network interface to bind at load time (empty: none)";
}

struct PcieoeHost {
    ethertype: EtherType,
    /// The bound netdev, if any (and while it exists): dropping it closes
    /// the session in order and unbinds.
    _port: Option<Binding>,
}

impl kernel::Module for PcieoeHost {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let ethertype = EtherType::new(module_params::ethertype.get()).map_err(|e| {
            pr_err!("invalid ethertype parameter: {}\n", e);
            EINVAL
        })?;
        let ifname = module_params::netdev.get();
        let port = if ifname.is_empty() {
            None
        } else {
            Some(Binding::new(&PortConfig {
                role: Role::Host,
                ifname,
                ethertype,
                debugfs: c_str!("pcieoe_host"),
            })?)
        };
        pr_info!(
            "host interface loaded, Ethertype {:#06x}\n",
            ethertype.get()
        );
        Ok(PcieoeHost {
            ethertype,
            _port: port,
        })
    }
}

impl Drop for PcieoeHost {
    fn drop(&mut self) {
        pr_info!(
            "host interface unloaded, Ethertype {:#06x}\n",
            self.ethertype.get()
        );
    }
}
