// SPDX-License-Identifier: GPL-2.0

//! pcieoe_vhba: host driver of the pcieoe virtual HBA.
//!
//! The vHBA is a PCIe function served by a device interface; this driver
//! will bind to it and register a disk per LUN. Until the PCI driver
//! abstraction lands it only loads and unloads, binding to nothing.

use kernel::prelude::*;

module! {
    type: PcieoeVhba,
    name: "pcieoe_vhba",
    author: "pcieoe developers",
    description: "PCI Express over Ethernet: virtual HBA host driver",
    license: "GPL",
}

struct PcieoeVhba;

impl kernel::Module for PcieoeVhba {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        pr_info!("vHBA driver loaded (no PCI driver registered yet)\n");
        Ok(PcieoeVhba)
    }
}

impl Drop for PcieoeVhba {
    fn drop(&mut self) {
        pr_info!("vHBA driver unloaded\n");
    }
}
