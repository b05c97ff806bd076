// SPDX-License-Identifier: GPL-2.0

//! pcieoe_test: the host driver of the pcieoe `test` function, modelled on
//! the kernel's `pci_endpoint_test`.
//!
//! It binds the test functions (vendor 0xe0e0, device 0x0001) that a
//! device interface assigned to this host, which `pcieoe_host` puts in its
//! PCI domains, and gives each a misc device `/dev/pcieoe-test-<PCI name>`
//! (e.g. `/dev/pcieoe-test-10000:00:00.0`): the PCI name is in the device
//! name, so user space finds the node of a function from `lspci -D`
//! alone, and the same function gets the same node back after a
//! hot-removal and return. The `INFO` ioctl returns the name too, and the
//! misc device's sysfs parent is the PCI function
//! (`/sys/bus/pci/devices/<PCI name>/misc/`).
//!
//! The ioctls ([`abi`]) run the tests: BAR patterns, DMA read, write and
//! copy of host buffers checked byte for byte and by CRC-32, MSI-X
//! vectors with their latency, and a DMA read outside any mapping that
//! the host's software IOMMU must refuse. The register layout and the
//! pattern and checksum functions are the engine's (`testfn.rs`), the same
//! code that the DI's model of the function runs.
//!
//! # Lifetimes
//!
//! One ioctl runs at a time per device, holding the device's mutex for its
//! whole operation; DMA buffers live only inside an operation. `remove`
//! deregisters the misc device, clears Bus Master Enable (the function
//! abandons its command), marks the device gone (a waiting operation wakes
//! up, waits, bounded, for the function to leave BUSY, and fails with
//! `ENODEV`), then takes the mutex (waiting for a running operation, whose
//! BAR accesses fail fast with `ENODEV` once the bus goes away) and tears
//! down the handlers and vectors. A file still open after that gets
//! `ENODEV`.

use kernel::prelude::*;

#[path = "../rust/pcieoe/src/lib.rs"]
pub mod pcieoe;

mod abi;
mod ops;

use kernel::{
    c_str, device, fmt, irq, miscdev,
    pci_driver::{self, Device, DeviceId},
    pci_host::{Mmio, Vectors},
    str::{CStr, CString},
    sync::Arc,
    types::ARef,
};
use ops::{Hw, Irqs, TestDev, VectorHandler};
use pcieoe::{fabric::VENDOR_ID, testfn};

module! {
    type: PcieoeTest,
    name: "pcieoe_test",
    author: "pcieoe developers",
    description: "PCI Express over Ethernet: host driver of the test function",
    license: "GPL",
}

/// Device ID of the test function (`pcieoe_dev/config.rs`).
const TEST_DEVICE_ID: u16 = 0x0001;

/// What `probe` leaves with a bound device.
struct Bound {
    misc: miscdev::Registration<TestDev>,
    test: Arc<TestDev>,
}

struct TestDriver;

impl pci_driver::Driver for TestDriver {
    type Data = Bound;
    const NAME: &'static CStr = c_str!("pcieoe_test");
    const ID_TABLE: &'static [DeviceId] = &[DeviceId::new(VENDOR_ID, TEST_DEVICE_ID)];

    fn probe(dev: &Device, _id: &DeviceId) -> Result<Pin<KBox<Bound>>> {
        let Some(mmio) = Mmio::of(dev) else {
            pr_err!(
                "{}: not a pcieoe function (not on a pcieoe_host bus)\n",
                dev.name()
            );
            return Err(ENODEV);
        };
        dev.enable_device().inspect_err(|e| {
            pr_err!("{}: cannot enable the device: {:?}\n", dev.name(), e);
        })?;
        dev.set_master();
        let bound = setup(dev, mmio);
        if bound.is_err() {
            dev.clear_master();
            dev.disable_device();
        }
        bound
    }

    fn remove(dev: &Device, data: Pin<KBox<Bound>>) {
        let Bound { misc, test } = KBox::into_inner(Pin::into_inner(data));
        // No new opens; open files still reach `test`, which is about to
        // say ENODEV.
        drop(misc);
        // The function abandons a running command at its next step...
        dev.clear_master();
        // ... and a waiting operation wakes up, waits for that, and fails
        // with ENODEV; then the hardware side goes.
        test.irqs.set_gone();
        test.shutdown();
        dev.disable_device();
        pr_info!("{}: unbound\n", dev.name());
    }
}

/// The rest of `probe`, once the device is enabled.
fn setup(dev: &Device, mmio: Mmio) -> Result<Pin<KBox<Bound>>> {
    let magic = mmio.read32(0, testfn::REG_MAGIC.into()).inspect_err(|e| {
        pr_err!("{}: reading MAGIC failed: {:?}\n", dev.name(), e);
    })?;
    if magic != testfn::MAGIC_VALUE {
        pr_err!(
            "{}: MAGIC reads {:#010x}, want {:#010x}: not a test function\n",
            dev.name(),
            magic,
            testfn::MAGIC_VALUE
        );
        return Err(ENODEV);
    }
    let vectors = Vectors::alloc(dev, testfn::MSIX_VECTORS as u32).inspect_err(|e| {
        pr_err!("{}: cannot set up MSI-X vectors: {:?}\n", dev.name(), e);
    })?;
    let irqs = Irqs::new()?;
    let mut handlers = KVec::with_capacity(vectors.len(), GFP_KERNEL)?;
    for index in 0..vectors.len() {
        let virq = vectors.irq(index).ok_or(EINVAL)?;
        let name = CString::try_from_fmt(fmt!("pcieoe_test{}@{}", index, dev.name()))?;
        let handler = Arc::new(
            VectorHandler {
                irqs: irqs.clone(),
                index,
            },
            GFP_KERNEL,
        )?;
        let reg = irq::Registration::new(virq, name, handler).inspect_err(|e| {
            pr_err!("{}: request_irq({}) failed: {:?}\n", dev.name(), virq, e);
        })?;
        handlers.push(reg, GFP_KERNEL)?;
    }
    let mut bar_len = [0u64; 6];
    for (i, len) in bar_len.iter_mut().enumerate() {
        *len = dev.resource_len(i);
    }
    let hw = Hw {
        _handlers: handlers,
        vectors,
        mmio,
        dev: ARef::<device::Device>::from(dev.as_dev()),
        bar_len,
        magic,
    };
    let test = TestDev::new(hw, irqs, dev.name())?;
    let misc = miscdev::Registration::register_with_parent(
        fmt!("pcieoe-test-{}", dev.name()),
        Some(dev.as_dev()),
        test.clone(),
    )
    .inspect_err(|e| {
        pr_err!("{}: cannot register the misc device: {:?}\n", dev.name(), e);
    })?;
    pr_info!(
        "{}: bound: /dev/{}, {} MSI-X vectors\n",
        dev.name(),
        misc.name(),
        test.vectors()
    );
    Ok(KBox::pin(Bound { misc, test }, GFP_KERNEL)?)
}

struct PcieoeTest {
    _driver: pci_driver::Registration<TestDriver>,
}

impl kernel::Module for PcieoeTest {
    fn init(module: &'static ThisModule) -> Result<Self> {
        let driver = pci_driver::Registration::new(module)?;
        pr_info!("test function driver loaded\n");
        Ok(PcieoeTest { _driver: driver })
    }
}

impl Drop for PcieoeTest {
    fn drop(&mut self) {
        pr_info!("test function driver unloaded\n");
    }
}
