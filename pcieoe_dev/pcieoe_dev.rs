// SPDX-License-Identifier: GPL-2.0

//! pcieoe_dev: the device interface (DI) of PCI Express over Ethernet.
//!
//! The DI serves PCIe functions (test, vNIC, vHBA and their SR-IOV VFs) to
//! hosts across Ethernet. For now it validates its configuration and holds
//! it; the configfs tree, sessions and function models build on this.

use kernel::prelude::*;

#[path = "../rust/pcieoe/src/lib.rs"]
pub mod pcieoe;

use pcieoe::ethertype::EtherType;

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
}

struct PcieoeDev {
    ethertype: EtherType,
}

impl kernel::Module for PcieoeDev {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let ethertype = EtherType::new(module_params::ethertype.get()).map_err(|e| {
            pr_err!("invalid ethertype parameter: {}\n", e);
            EINVAL
        })?;
        pr_info!(
            "device interface loaded, Ethertype {:#06x}\n",
            ethertype.get()
        );
        Ok(PcieoeDev { ethertype })
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
