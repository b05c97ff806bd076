// SPDX-License-Identifier: GPL-2.0

//! pcieoe_vnic: host driver of the pcieoe virtual NIC.
//!
//! The vNIC is a PCIe function served by a device interface; this driver
//! will bind to it and register a `net_device`. Until the PCI driver
//! abstraction lands it only loads and unloads, binding to nothing.

use kernel::prelude::*;

module! {
    type: PcieoeVnic,
    name: "pcieoe_vnic",
    author: "pcieoe developers",
    description: "PCI Express over Ethernet: virtual NIC host driver",
    license: "GPL",
}

struct PcieoeVnic;

impl kernel::Module for PcieoeVnic {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        pr_info!("vNIC driver loaded (no PCI driver registered yet)\n");
        Ok(PcieoeVnic)
    }
}

impl Drop for PcieoeVnic {
    fn drop(&mut self) {
        pr_info!("vNIC driver unloaded\n");
    }
}
