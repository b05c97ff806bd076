// SPDX-License-Identifier: GPL-2.0

//! `ports/<ifname>` in a module's configfs tree: the netdevs it binds.
//!
//! `mkdir ports/eth1` names a netdev; `echo 1 > ports/eth1/enable` binds it
//! (a session, and whatever the module serves over it), `echo 0` or `rmdir`
//! unbinds it, closing the session in order. A netdev that does not exist
//! fails the `enable` write with `ENODEV` and a log line naming it; so does
//! one that is not Ethernet-like (`EINVAL`). Both modules use this group;
//! what a binding is belongs to the module ([`Binder`]).

use core::{any::Any, fmt::Write};

use kernel::{
    c_str,
    configfs::{self, Attr, ChildSpec, GroupSpec, Item, Page},
    fmt as kfmt, new_mutex,
    prelude::*,
    str::{CStr, CString},
    sync::{Arc, Mutex},
};

/// How a module binds a netdev.
pub(crate) trait Binder: Send + Sync + 'static {
    /// What a bound port is; dropping it unbinds (process context).
    type Bound: Send + 'static;

    /// Binds netdev `ifname`. Process context, without RTNL.
    fn bind(&self, ifname: &CStr) -> Result<Self::Bound>;
}

static PORT_ATTRS: [Attr; 1] = [Attr {
    name: c_str!("enable"),
    writable: true,
}];

/// `ports/<ifname>`.
struct PortItem<B: Binder> {
    binder: Arc<B>,
    name: CString,
    bound: Pin<KBox<Mutex<Option<B::Bound>>>>,
}

impl<B: Binder> Item for PortItem<B> {
    fn show(&self, _attr: usize, page: &mut Page<'_>) -> Result {
        let on = self.bound.lock().is_some();
        writeln!(page, "{}", u8::from(on)).map_err(|_| EFBIG)
    }

    fn store(&self, _attr: usize, value: &[u8]) -> Result {
        let value = value.strip_suffix(b"\n").unwrap_or(value);
        let enable = match value {
            b"0" => false,
            b"1" => true,
            _ => {
                pr_warn!("port {}: invalid enable value (want 0 or 1)\n", &*self.name);
                return Err(EINVAL);
            }
        };
        let mut bound = self.bound.lock();
        match (enable, bound.is_some()) {
            (true, false) => *bound = Some(self.binder.bind(&self.name)?),
            (false, true) => {
                // Unbinding sleeps (orderly close); nothing else waits for
                // this mutex but another write to the same attribute.
                let port = bound.take();
                drop(port);
            }
            _ => {}
        }
        Ok(())
    }
}

/// `ports/`.
struct PortsDir<B: Binder> {
    binder: Arc<B>,
}

impl<B: Binder> configfs::Group for PortsDir<B> {
    fn make(&self, name: &CStr) -> Result<KBox<dyn Item>> {
        configfs::new_item(PortItem {
            binder: self.binder.clone(),
            name: CString::try_from_fmt(kfmt!("{}", name))?,
            bound: KBox::pin_init(new_mutex!(None), GFP_KERNEL)?,
        })
    }

    fn drop_item(&self, item: &dyn Item) {
        let item: &dyn Any = item;
        if let Some(item) = item.downcast_ref::<PortItem<B>>() {
            let port = item.bound.lock().take();
            drop(port);
        }
    }
}

/// The `ports` group for a module's configfs subsystem.
///
/// # Errors
///
/// `ENOMEM`.
pub(crate) fn group<B: Binder>(binder: Arc<B>) -> Result<GroupSpec> {
    GroupSpec::new(
        c_str!("ports"),
        PortsDir { binder },
        ChildSpec {
            attrs: &PORT_ATTRS,
            links: None,
        },
    )
}
