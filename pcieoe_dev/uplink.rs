// SPDX-License-Identifier: GPL-2.0

//! The vNICs' uplinks: the netdevs that carry their frames to the
//! Ethernet behind the device interface.
//!
//! The DI is a bridge with one port per vNIC and one per uplink. Each
//! uplink that some served vNIC names gets one receive handler
//! ([`RxHandlerRegistration`]), shared by all the vNICs on it, and is made
//! promiscuous so that frames for the vNICs' MAC addresses reach it. Its
//! frames are offered to every vNIC on it (the engine's MAC filter
//! decides); a unicast frame that a vNIC owns is consumed, the rest
//! (broadcast, multicast, frames for the DI's own stack) also go on to the
//! uplink's own stack, as macvlan does, so the uplink keeps working for
//! the DI host.
//!
//! A netdevice notifier ([`UplinkWatch`]) follows the uplinks' state into
//! the vNICs' link (status block and interrupt to the host) and, when an
//! uplink is unregistered, takes it from its vNICs; the fabric's work then
//! drops the registration (which takes RTNL, so not from the notifier).
//!
//! Frames a vNIC transmits go to the other vNICs on the same uplink (a
//! unicast frame only to the one that owns its address, and then not to
//! the uplink) and out through the uplink otherwise.

use kernel::{
    netdev::{Event, NetDevice, Notifier},
    prelude::*,
    rx_handler::{RxAction, RxHandler, RxHandlerRegistration},
    sync::Arc,
    types::ARef,
};

use crate::fabric::Fabric;

/// The receive handler of one uplink.
pub(crate) struct UplinkRx {
    pub(crate) fabric: Arc<Fabric>,
    pub(crate) dev: ARef<NetDevice>,
}

impl RxHandler for UplinkRx {
    fn receive(&self, frame: &[u8]) -> RxAction {
        self.fabric.uplink_frame(&self.dev, frame)
    }

    fn wants(&self, dst: &[u8; 6]) -> bool {
        self.fabric.uplink_wants(&self.dev, dst)
    }
}

/// One uplink in use.
pub(crate) struct Uplink {
    pub(crate) dev: ARef<NetDevice>,
    _reg: RxHandlerRegistration<UplinkRx>,
}

impl Uplink {
    /// Takes over `dev`'s received frames for the vNICs of `fabric` and
    /// makes it promiscuous. Process context; takes RTNL.
    ///
    /// # Errors
    ///
    /// Those of [`RxHandlerRegistration::new`] (`EBUSY`: the device is a
    /// bridge port, a bond member, a macvlan's lower device...) and of
    /// [`RxHandlerRegistration::set_promiscuous`].
    pub(crate) fn new(fabric: &Arc<Fabric>, dev: &ARef<NetDevice>) -> Result<Self> {
        let handler = Arc::new(
            UplinkRx {
                fabric: fabric.clone(),
                dev: dev.clone(),
            },
            GFP_KERNEL,
        )?;
        let reg = RxHandlerRegistration::new(dev, handler).inspect_err(|e| {
            pr_err!(
                "uplink {}: cannot take its frames: {:?} (a bridge port, bond member or macvlan lower device cannot be an uplink)\n",
                dev.name(),
                e
            );
        })?;
        reg.set_promiscuous(true).inspect_err(|e| {
            pr_err!(
                "uplink {}: cannot make it promiscuous: {:?}\n",
                dev.name(),
                e
            );
        })?;
        pr_info!("uplink {}: carries vNIC frames\n", dev.name());
        Ok(Uplink {
            dev: dev.clone(),
            _reg: reg,
        })
    }
}

impl Drop for Uplink {
    fn drop(&mut self) {
        pr_info!("uplink {}: released\n", self.dev.name());
    }
}

/// Follows the uplinks' state (netdevice notifier).
pub(crate) struct UplinkWatch(pub(crate) Arc<Fabric>);

impl Notifier for UplinkWatch {
    fn event(&self, event: Event, dev: &NetDevice) {
        match event {
            Event::Up | Event::Down | Event::Change => self.0.uplink_changed(dev, false),
            // The core repeats this every second while a reference to the
            // device is left: a vNIC served just after the first one
            // still lets go of it.
            Event::Unregister => self.0.uplink_changed(dev, true),
            _ => {}
        }
    }
}
