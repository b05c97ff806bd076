// SPDX-License-Identifier: GPL-2.0

//! pcieoe_vnic: host driver of the pcieoe virtual NIC
//! (`Documentation/vnic.rst`).
//!
//! It binds the vNIC functions (vendor 0xe0e0, device 0x0002) that a
//! device interface assigned to this host and registers an Ethernet
//! `net_device` (`eth%d`) for each. The register layout is the shared
//! specification `layout.rs`, the same file the device model includes.
//!
//! Files, along the data flow: [`hw`] (BAR0 access, identity), [`nic`]
//! (the net_device: open/stop, NAPI, filter, MTU, ethtool), [`tx`] (the
//! record writer of a queue pair), [`rx`] (buffers and completions of a
//! queue pair), [`status`] (the status block).
//!
//! # Vectors
//!
//! The function has [`MSIX_VECTORS`](layout::MSIX_VECTORS) (4) vectors.
//! Queue pair `q` uses vector `q`; status-block events (link, errors) use
//! the last vector, which no queue pair shares: a vNIC with four queue
//! pairs is driven with three. Every handler only schedules a NAPI poll
//! (the misc vector queue 0's, whose poll reads the status block): the
//! device disarms a queue's interrupt when it raises it, and the poll
//! re-arms it, so nothing needs masking. The handlers are installed before
//! the net_device is registered (it may be opened at once); they reach
//! the NAPI contexts, which only exist from then on, through their queue
//! pair, where `open` puts them.
//!
//! # Lifetimes
//!
//! `remove` unregisters the net_device first (bringing it down: the
//! device is disabled and the queue pairs' memory freed), then frees the
//! interrupt handlers and vectors, disables the device and its status
//! block, clears Bus Master Enable and frees the status block. A function that went away
//! makes every register access fail with `ENODEV` at once: logged once,
//! and the teardown goes on.

use kernel::prelude::*;

// The shared specification, public (as pcieoe_test includes the engine)
// so that what this driver does not use is not dead code.
#[path = "layout.rs"]
pub mod layout;

#[path = "../common/bar0.rs"]
mod bar0;
mod hw;
mod nic;
mod rx;
mod status;
mod tx;

use kernel::{
    c_str, fmt, irq,
    net_device::{self, Registration},
    pci_driver::{self, Device, DeviceId},
    pci_host::{Mmio, Vectors},
    str::{CStr, CString},
    sync::Arc,
};
use layout::*;

module! {
    type: PcieoeVnic,
    name: "pcieoe_vnic",
    author: "pcieoe developers",
    description: "PCI Express over Ethernet: virtual NIC host driver",
    license: "GPL",
}

/// The pcieoe vendor ID (`pcieoe::fabric::VENDOR_ID`).
const VENDOR_ID: u16 = 0xe0e0;
/// Device ID of the vNIC function (`pcieoe_dev/config.rs`).
const VNIC_DEVICE_ID: u16 = 0x0002;

/// The MTU a new interface starts with (clamped to MTU_MAX).
const DEFAULT_MTU: u32 = 1500;

/// The features this driver uses (DRIVER_FEATURES is informative).
const DRIVER_FEATURES: u32 =
    F_MULTI_QUEUE | F_TX_INLINE | F_MC_FILTER | F_IRQ_MODERATION | F_STATUS_BLOCK | F_JUMBO;

/// A vector's handler: schedules a queue pair's NAPI poll.
struct VectorHandler {
    queue: Arc<nic::QueuePair>,
}

impl irq::Handler for VectorHandler {
    fn handle(&self) -> irq::Return {
        self.queue.schedule();
        irq::Return::Handled
    }
}

/// What `probe` leaves with a bound function.
struct Bound {
    /// Boxed: `Registration<Vnic>` is not `Unpin` (the driver's object is
    /// pinned), and `remove` takes `Bound` apart.
    netdev: KBox<Registration<nic::Vnic>>,
    handlers: KVec<irq::Registration<VectorHandler>>,
    vectors: Vectors,
    vnic: Arc<nic::Vnic>,
}

struct VnicDriver;

impl pci_driver::Driver for VnicDriver {
    type Data = Bound;
    const NAME: &'static CStr = c_str!("pcieoe_vnic");
    const ID_TABLE: &'static [DeviceId] = &[DeviceId::new(VENDOR_ID, VNIC_DEVICE_ID)];

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
        let bound = bind(dev, mmio);
        if bound.is_err() {
            dev.clear_master();
            dev.disable_device();
        }
        bound
    }

    fn remove(dev: &Device, data: Pin<KBox<Bound>>) {
        let Bound {
            netdev,
            handlers,
            vectors,
            vnic,
        } = KBox::into_inner(Pin::into_inner(data));
        // Brings the interface down (the queue pairs' memory goes) and
        // waits until no callback runs.
        drop(netdev);
        drop(handlers);
        drop(vectors);
        vnic.detach();
        dev.clear_master();
        // The last reference (the net_device's went with it): frees the
        // status block.
        drop(vnic);
        dev.disable_device();
        pr_info!("{}: unbound\n", dev.name());
    }
}

/// Queue pairs to drive: as many as the function has, but for the last
/// vector (the misc vector's), and only those with a TX FIFO.
fn usable_pairs(hw: &hw::Hw, queues: u32, fifo_units: &mut [u32; MAX_QUEUES]) -> Result<u16> {
    let most = queues.min(MISC_VECTOR_INDEX);
    let mut pairs = 0u16;
    for (q, units) in fifo_units.iter_mut().enumerate().take(most as usize) {
        let q = q as u32;
        *units = hw.read32(queue_reg(q, Q_TX_FIFO_UNITS))?;
        if *units == 0 {
            pr_warn!(
                "{}: queue pair {} has no TX FIFO: {} queue pairs used\n",
                hw.name(),
                q,
                pairs
            );
            break;
        }
        pairs += 1;
    }
    if pairs == 0 {
        pr_err!("{}: no usable queue pair\n", hw.name());
        return Err(ENODEV);
    }
    Ok(pairs)
}

/// The vector of status-block events (`nic::MISC_VECTOR`).
const MISC_VECTOR_INDEX: u32 = nic::MISC_VECTOR;

/// The rest of `probe`, once the device is enabled.
fn bind(dev: &Device, mmio: Mmio) -> Result<Pin<KBox<Bound>>> {
    let hw = hw::Hw::new(mmio, CString::try_from_fmt(fmt!("{}", dev.name()))?);
    let id = hw.identify()?;
    let mut fifo_units = [0u32; MAX_QUEUES];
    let pairs = usable_pairs(&hw, id.queues, &mut fifo_units)?;
    // A previous driver may have left it enabled.
    hw.write32(REG_CONTROL, 0)?;
    hw.write32(REG_DRIVER_FEATURES, DRIVER_FEATURES & id.features)?;
    let status = status::Status::new(dev.as_dev()).inspect_err(|e| {
        pr_err!(
            "{}: cannot allocate the status block: {:?}\n",
            dev.name(),
            e
        );
    })?;
    let vectors = Vectors::alloc(dev, MSIX_VECTORS as u32).inspect_err(|e| {
        pr_err!("{}: cannot set up MSI-X vectors: {:?}\n", dev.name(), e);
    })?;
    let vnic = nic::Vnic::new(hw, id, dev.as_dev(), fifo_units, pairs, status)?;
    let bound = vnic
        .attach()
        .and_then(|()| register(dev, &vnic, vectors, id.mac, id.mtu_max));
    if bound.is_err() {
        vnic.detach();
    }
    bound
}

/// Installs the interrupt handlers, then registers the net_device (which
/// may be opened at once: the handlers must be there).
fn register(
    dev: &Device,
    vnic: &Arc<nic::Vnic>,
    vectors: Vectors,
    mac: [u8; 6],
    mtu_max: u32,
) -> Result<Pin<KBox<Bound>>> {
    let pairs = vnic.pairs();
    let mut handlers = KVec::with_capacity(usize::from(pairs) + 1, GFP_KERNEL)?;
    // Queue pair q on vector q, then the misc vector on queue 0's poll.
    let queues = (0..pairs).map(|q| (u32::from(q), q));
    let wiring = Iterator::chain(queues, core::iter::once((MISC_VECTOR_INDEX, 0u16)));
    for (vector, queue) in wiring {
        let queue_pair = vnic.queue(queue).ok_or(EINVAL)?.clone();
        let virq = vectors.irq(vector as usize).ok_or(EINVAL)?;
        let name = if vector == MISC_VECTOR_INDEX {
            CString::try_from_fmt(fmt!("pcieoe_vnic-misc@{}", dev.name()))?
        } else {
            CString::try_from_fmt(fmt!("pcieoe_vnic-q{}@{}", queue, dev.name()))?
        };
        let handler = Arc::new(VectorHandler { queue: queue_pair }, GFP_KERNEL)?;
        let reg = irq::Registration::new(virq, name, handler).inspect_err(|e| {
            pr_err!("{}: request_irq({}) failed: {:?}\n", dev.name(), virq, e);
        })?;
        handlers.push(reg, GFP_KERNEL)?;
    }
    let options = net_device::Options {
        parent: Some(dev.as_dev()),
        tx_queues: pairs,
        rx_queues: pairs,
        mtu: DEFAULT_MTU.min(mtu_max),
        min_mtu: MTU_MIN,
        max_mtu: mtu_max,
        ..net_device::Options::new(mac)
    };
    let netdev = Registration::new(options, vnic.clone()).inspect_err(|e| {
        pr_err!("{}: cannot register the net_device: {:?}\n", dev.name(), e);
    })?;
    pr_info!(
        "{}: bound: {}, {} queue pairs, MTU max {}, MAC {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}\n",
        dev.name(),
        netdev.device().name(),
        pairs,
        mtu_max,
        mac[0],
        mac[1],
        mac[2],
        mac[3],
        mac[4],
        mac[5]
    );
    Ok(KBox::pin(
        Bound {
            netdev: KBox::new(netdev, GFP_KERNEL)?,
            handlers,
            vectors,
            vnic: vnic.clone(),
        },
        GFP_KERNEL,
    )?)
}

struct PcieoeVnic {
    _driver: pci_driver::Registration<VnicDriver>,
}

impl kernel::Module for PcieoeVnic {
    fn init(module: &'static ThisModule) -> Result<Self> {
        let driver = pci_driver::Registration::new(module)?;
        pr_info!("vNIC driver loaded\n");
        Ok(PcieoeVnic { _driver: driver })
    }
}

impl Drop for PcieoeVnic {
    fn drop(&mut self) {
        pr_info!("vNIC driver unloaded\n");
    }
}
