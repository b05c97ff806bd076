// SPDX-License-Identifier: GPL-2.0

//! configfs: configuration trees that user space builds with `mkdir`,
//! attribute writes and `ln -s`.
//!
//! C header: [`include/linux/configfs.h`](srctree/include/linux/configfs.h)
//!
//! A [`Subsystem`] is a directory at the root of configfs
//! (`/sys/kernel/config/<name>`) holding fixed directories ("default
//! groups"), each backed by a [`Group`]. `mkdir` in one of them calls
//! [`Group::make`], which returns the [`Item`] behind the new directory;
//! `rmdir` calls [`Group::drop_item`]. An item's directory holds the
//! attributes of its [`ChildSpec`] (files whose reads and writes call
//! [`Item::show`] and [`Item::store`] with the attribute's index) and,
//! optionally, one subdirectory whose symlinks to other items call
//! [`Item::allow_link`] and [`Item::drop_link`].
//!
//! # Lifetimes
//!
//! configfs counts references to its items (`config_item`): the directory
//! holds one, as do an open attribute file and a symlink to the item. `rmdir`
//! first calls [`Group::drop_item`] and drops the directory's reference; the
//! [`Item`] is dropped in the item's `release`, when the last reference
//! goes, possibly later. Callbacks therefore only ever see live items.
//! configfs refuses `rmdir` of an item that symlinks point to (`EBUSY`) or
//! whose link directory still holds symlinks (`ENOTEMPTY`).
//!
//! Every item type and attribute names the module that registered the
//! subsystem as its owner, so configfs pins the module while any item
//! exists or an attribute file is open: `rmmod` fails with `EBUSY` until user
//! space removed the tree. Dropping the [`Subsystem`] unregisters it; should
//! items still exist then (only possible when it is dropped other than in
//! module exit), it is leaked instead, with an error in the log.
//!
//! Callbacks run in process context and may sleep. configfs does not
//! serialise attribute reads and writes against each other: an [`Item`]
//! protects its state with its own lock.

use crate::{
    alloc::{flags::GFP_KERNEL, KBox, KVec},
    error::{to_result, Error, Result},
    ffi::{c_char, c_int},
    page::PAGE_SIZE,
    prelude::*,
    str::CStr,
    sync::Arc,
    types::Opaque,
    ThisModule,
};
use core::{
    any::Any,
    fmt,
    mem::ManuallyDrop,
    sync::atomic::{AtomicUsize, Ordering},
};

/// The most attributes one item type can have.
pub const MAX_ATTRS: usize = 16;

/// configfs's limit for names kept inline (longer ones are allocated).
const INLINE_NAME_LEN: usize = bindings::CONFIGFS_ITEM_NAME_LEN as usize;

/// One attribute (file) of an item.
pub struct Attr {
    /// The file name.
    pub name: &'static CStr,
    /// Writable by root (mode 0644) or read-only (0444).
    pub writable: bool,
}

/// The shape of the items that `mkdir` creates in a [`Group`].
pub struct ChildSpec {
    /// Their attributes, at most [`MAX_ATTRS`]; [`Item::show`] and
    /// [`Item::store`] get the index into this slice.
    pub attrs: &'static [Attr],
    /// The name of a subdirectory for symlinks to other items of this
    /// subsystem (shorter than 20 bytes), or `None`.
    pub links: Option<&'static CStr>,
}

/// The data behind one directory that `mkdir` created.
pub trait Item: Any + Send + Sync {
    /// Writes attribute `attr` (an index into [`ChildSpec::attrs`]) to `page`.
    fn show(&self, _attr: usize, _page: &mut Page<'_>) -> Result {
        Err(EIO)
    }

    /// Parses and applies a write of `value` (as written, newline included)
    /// to attribute `attr`. On error, the write fails with that errno.
    fn store(&self, _attr: usize, _value: &[u8]) -> Result {
        Err(EPERM)
    }

    /// Allows (or refuses, with the errno `symlink()` returns) a symlink in
    /// this item's link directory to `target`, another item of the same
    /// subsystem: downcast it to see which.
    fn allow_link(&self, _target: &dyn Any) -> Result {
        Err(EPERM)
    }

    /// The symlink to `target` that [`Item::allow_link`] allowed is removed.
    fn drop_link(&self, _target: &dyn Any) {}
}

/// Boxes `item` for [`Group::make`].
///
/// # Errors
///
/// `ENOMEM`.
pub fn new_item<T: Item>(item: T) -> Result<KBox<dyn Item>> {
    let boxed: KBox<T> = KBox::new(item, GFP_KERNEL)?;
    let raw: *mut T = KBox::into_raw(boxed);
    let raw: *mut dyn Item = raw;
    // SAFETY: `raw` comes from `KBox::into_raw` (unsized only in its type).
    Ok(unsafe { KBox::from_raw(raw) })
}

/// A fixed directory of a [`Subsystem`] in which `mkdir` creates items.
pub trait Group: Send + Sync + 'static {
    /// `mkdir name`: returns the new item or the errno `mkdir` fails with.
    fn make(&self, name: &CStr) -> Result<KBox<dyn Item>>;

    /// `rmdir` of an item [`Group::make`] returned. It is dropped once
    /// configfs releases its last reference.
    fn drop_item(&self, item: &dyn Item);
}

/// A fixed directory of a [`Subsystem`].
pub struct GroupSpec {
    /// Its name (shorter than 20 bytes).
    pub name: &'static CStr,
    /// What `mkdir` and `rmdir` in it do.
    pub ops: KBox<dyn Group>,
    /// The shape of the items created in it.
    pub child: ChildSpec,
}

impl GroupSpec {
    /// The fixed directory `name` whose `mkdir`s `ops` handles.
    ///
    /// # Errors
    ///
    /// `ENOMEM`.
    pub fn new<G: Group>(name: &'static CStr, ops: G, child: ChildSpec) -> Result<Self> {
        let boxed: KBox<G> = KBox::new(ops, GFP_KERNEL)?;
        let raw: *mut G = KBox::into_raw(boxed);
        let raw: *mut dyn Group = raw;
        // SAFETY: `raw` comes from `KBox::into_raw` (unsized only in its
        // type).
        let ops = unsafe { KBox::from_raw(raw) };
        Ok(Self { name, ops, child })
    }
}

/// The text of an attribute being read: at most one page.
pub struct Page<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl fmt::Write for Page<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len.checked_add(s.len()).ok_or(fmt::Error)?;
        let dst = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Operation tables in `static`s (they hold raw pointers).
#[repr(transparent)]
struct ItemOps(bindings::configfs_item_operations);
#[repr(transparent)]
struct GroupOps(bindings::configfs_group_operations);

// SAFETY: The tables are never written.
unsafe impl Sync for ItemOps {}
// SAFETY: The tables are never written.
unsafe impl Sync for GroupOps {}

/// The items `mkdir` created ([`Node`]s).
static NODE_OPS: ItemOps = ItemOps(bindings::configfs_item_operations {
    release: Some(node_release),
    allow_link: None,
    drop_link: None,
});

/// The link directories inside [`Node`]s.
static LINK_OPS: ItemOps = ItemOps(bindings::configfs_item_operations {
    release: None,
    allow_link: Some(allow_link),
    drop_link: Some(drop_link),
});

/// The fixed directories ([`RootGroup`]s).
static GROUP_OPS: GroupOps = GroupOps(bindings::configfs_group_operations {
    make_group: Some(make_group),
    drop_item: Some(drop_item),
    // SAFETY: All-zero is a valid `configfs_group_operations` (no operations).
    ..unsafe { core::mem::MaybeUninit::zeroed().assume_init() }
});

fn ops_ptr(ops: &'static ItemOps) -> *mut bindings::configfs_item_operations {
    // configfs only reads the table.
    (&ops.0 as *const bindings::configfs_item_operations).cast_mut()
}

/// The type tables of the items of one [`Group`].
///
/// # Invariants
///
/// `item` and `link` are valid `config_item_type`s: `item` lists `attrs`
/// through `ptrs` (NULL-terminated) and uses [`NODE_OPS`]; `link` has no
/// attributes and uses [`LINK_OPS`]. `links` is shorter than
/// [`INLINE_NAME_LEN`].
struct ChildType {
    item: Opaque<bindings::config_item_type>,
    link: Opaque<bindings::config_item_type>,
    _attrs: KVec<bindings::configfs_attribute>,
    _ptrs: KVec<*mut bindings::configfs_attribute>,
    links: Option<&'static CStr>,
}

// SAFETY: The tables are written only while built; configfs only reads them.
unsafe impl Send for ChildType {}
// SAFETY: As for `Send`.
unsafe impl Sync for ChildType {}

type ShowFn = unsafe extern "C" fn(*mut bindings::config_item, *mut c_char) -> isize;
type StoreFn = unsafe extern "C" fn(*mut bindings::config_item, *const c_char, usize) -> isize;

// configfs does not tell a callback which attribute it serves: one function
// per index.
const SHOW: [ShowFn; MAX_ATTRS] = [
    show::<0>, show::<1>, show::<2>, show::<3>, show::<4>, show::<5>, show::<6>, show::<7>,
    show::<8>, show::<9>, show::<10>, show::<11>, show::<12>, show::<13>, show::<14>, show::<15>,
];
const STORE: [StoreFn; MAX_ATTRS] = [
    store::<0>,
    store::<1>,
    store::<2>,
    store::<3>,
    store::<4>,
    store::<5>,
    store::<6>,
    store::<7>,
    store::<8>,
    store::<9>,
    store::<10>,
    store::<11>,
    store::<12>,
    store::<13>,
    store::<14>,
    store::<15>,
];

fn short_name(name: &CStr) -> Result {
    if name.len() < INLINE_NAME_LEN {
        Ok(())
    } else {
        Err(EINVAL)
    }
}

impl ChildType {
    fn new(module: &'static ThisModule, spec: &ChildSpec) -> Result<Arc<Self>> {
        if spec.attrs.len() > MAX_ATTRS {
            return Err(EINVAL);
        }
        if let Some(links) = spec.links {
            short_name(links)?;
        }
        let mut attrs = KVec::with_capacity(spec.attrs.len(), GFP_KERNEL)?;
        for (i, a) in spec.attrs.iter().enumerate() {
            attrs.push(
                bindings::configfs_attribute {
                    ca_name: a.name.as_char_ptr(),
                    ca_owner: module.as_ptr(),
                    ca_mode: if a.writable { 0o644 } else { 0o444 },
                    show: SHOW.get(i).copied(),
                    store: if a.writable {
                        STORE.get(i).copied()
                    } else {
                        None
                    },
                },
                GFP_KERNEL,
            )?;
        }
        let mut ptrs = KVec::with_capacity(attrs.len() + 1, GFP_KERNEL)?;
        for a in attrs.iter_mut() {
            ptrs.push(a as *mut bindings::configfs_attribute, GFP_KERNEL)?;
        }
        ptrs.push(core::ptr::null_mut(), GFP_KERNEL)?;
        // The vectors' buffers do not move with the vectors.
        let item = bindings::config_item_type {
            ct_owner: module.as_ptr(),
            ct_item_ops: ops_ptr(&NODE_OPS),
            ct_group_ops: core::ptr::null_mut(),
            ct_attrs: ptrs.as_mut_ptr(),
            ct_bin_attrs: core::ptr::null_mut(),
        };
        let link = bindings::config_item_type {
            ct_owner: module.as_ptr(),
            ct_item_ops: ops_ptr(&LINK_OPS),
            ct_group_ops: core::ptr::null_mut(),
            ct_attrs: core::ptr::null_mut(),
            ct_bin_attrs: core::ptr::null_mut(),
        };
        // INVARIANT: Built as described, `links` checked above.
        Ok(Arc::new(
            ChildType {
                item: Opaque::new(item),
                link: Opaque::new(link),
                _attrs: attrs,
                _ptrs: ptrs,
                links: spec.links,
            },
            GFP_KERNEL,
        )?)
    }
}

/// An item `mkdir` created: the directory, its link directory and its data.
///
/// # Invariants
///
/// Allocated by [`RootGroup::make`] as a [`KBox`] and owned by configfs from
/// then on: freed by [`node_release`]. `group` is initialised with
/// `ty.item`; `link`, when `ty.links` is set, with `ty.link` and added to
/// `group` as a default group.
#[repr(C)]
struct Node {
    group: Opaque<bindings::config_group>,
    link: Opaque<bindings::config_group>,
    data: KBox<dyn Item>,
    ty: Arc<ChildType>,
}

/// A fixed directory of a subsystem.
///
/// # Invariants
///
/// `group` is initialised with `ty`, which uses [`GROUP_OPS`]. `live`
/// counts the items made in it and not yet dropped.
#[repr(C)]
struct RootGroup {
    group: Opaque<bindings::config_group>,
    ty: Opaque<bindings::config_item_type>,
    ops: KBox<dyn Group>,
    child: Arc<ChildType>,
    live: AtomicUsize,
}

impl RootGroup {
    fn make(&self, name: &CStr) -> Result<*mut bindings::config_group> {
        let data = self.ops.make(name)?;
        let ty = self.child.clone();
        // The tables live in the `Arc`, which the node keeps.
        let (item_ty, link_ty, links) = (ty.item.get(), ty.link.get(), ty.links);
        let node = KBox::new(
            Node {
                group: Opaque::uninit(),
                link: Opaque::uninit(),
                data,
                ty,
            },
            GFP_KERNEL,
        )?;
        let node = KBox::into_raw(node);
        // SAFETY: `node` was just allocated; its groups are initialised in
        // place (they hold lists that point to themselves) with the type
        // tables, which the node keeps alive; names are NUL-terminated.
        let group = unsafe {
            let group = Opaque::raw_get(core::ptr::addr_of!((*node).group));
            // Zeroed first, as from `kzalloc()`: setting the name frees a
            // previous one unless NULL.
            group.write_bytes(0, 1);
            bindings::config_group_init_type_name(group, name.as_char_ptr(), item_ty);
            if let Some(links) = links {
                let link = Opaque::raw_get(core::ptr::addr_of!((*node).link));
                link.write_bytes(0, 1);
                bindings::config_group_init_type_name(link, links.as_char_ptr(), link_ty);
                bindings::configfs_add_default_group(link, group);
            }
            group
        };
        self.live.fetch_add(1, Ordering::Relaxed);
        // INVARIANT: configfs owns the node from here; its `release` frees
        // it.
        Ok(group)
    }
}

/// The item behind a [`Node`]'s `config_item`.
///
/// # Safety
///
/// `item` is the `group.cg_item` of a live [`Node`].
unsafe fn node_of<'a>(item: *mut bindings::config_item) -> &'a Node {
    // SAFETY: `cg_item` is the first field of `config_group`, which is the
    // first field of the `repr(C)` `Node` (`Opaque` is transparent); the
    // node is live (safety requirements).
    unsafe { &*item.cast::<Node>() }
}

/// `configfs_group_operations.make_group` of a [`RootGroup`].
///
/// # Safety
///
/// Called by configfs with the `group` of a live [`RootGroup`] (the only
/// user of [`GROUP_OPS`]) and a NUL-terminated name.
unsafe extern "C" fn make_group(
    group: *mut bindings::config_group,
    name: *const c_char,
) -> *mut bindings::config_group {
    // SAFETY: `group` is the first field of the `repr(C)` `RootGroup`,
    // which is live (safety requirements).
    let root = unsafe { &*group.cast::<RootGroup>() };
    // SAFETY: `name` is NUL-terminated and lives during the call.
    let name = unsafe { CStr::from_char_ptr(name) };
    root.make(name).unwrap_or_else(Error::to_ptr)
}

/// `configfs_group_operations.drop_item` of a [`RootGroup`].
///
/// # Safety
///
/// Called by configfs with the `group` of a live [`RootGroup`] and one of
/// its items, made by [`make_group`] (only those can be removed).
unsafe extern "C" fn drop_item(
    group: *mut bindings::config_group,
    item: *mut bindings::config_item,
) {
    // SAFETY: As in `make_group`.
    let root = unsafe { &*group.cast::<RootGroup>() };
    // SAFETY: `item` belongs to a live node (safety requirements).
    let node = unsafe { node_of(item) };
    root.ops.drop_item(&*node.data);
    root.live.fetch_sub(1, Ordering::Relaxed);
    // SAFETY: `drop_item` owns the directory's reference to `item` and
    // drops it; `node` is not used after this.
    unsafe { bindings::config_item_put(item) };
}

/// `configfs_item_operations.release` of a [`Node`].
///
/// # Safety
///
/// Called by configfs once, when the last reference to the node's item is
/// dropped.
unsafe extern "C" fn node_release(item: *mut bindings::config_item) {
    // SAFETY: `item` is at the start of a node allocated as a `KBox` (type
    // invariants) that no one references any more.
    drop(unsafe { KBox::from_raw(item.cast::<Node>()) });
}

/// The [`Node`] whose link directory is `link`.
///
/// # Safety
///
/// `link` is the `link.cg_item` of a live [`Node`].
unsafe fn node_of_link<'a>(link: *mut bindings::config_item) -> &'a Node {
    let offset = core::mem::offset_of!(Node, link);
    // SAFETY: `link` is `offset` bytes into a live node (safety
    // requirements; `cg_item` starts `config_group`).
    unsafe { &*link.cast::<u8>().sub(offset).cast::<Node>() }
}

/// The [`Item`] behind `target` if it is a [`Node`].
///
/// # Safety
///
/// `target` is a live `config_item` (configfs holds a reference).
unsafe fn target_of<'a>(target: *mut bindings::config_item) -> Option<&'a dyn Item> {
    // SAFETY: `target` is valid; its type, if any, is a valid table.
    let ours = unsafe {
        let ty = (*target).ci_type;
        !ty.is_null() && (*ty).ct_item_ops == ops_ptr(&NODE_OPS)
    };
    if !ours {
        return None;
    }
    // SAFETY: Only nodes use `NODE_OPS`; `target` is live.
    let node = unsafe { node_of(target) };
    Some(&*node.data)
}

/// `configfs_item_operations.allow_link` of a link directory.
///
/// # Safety
///
/// Called by configfs with a link directory (the only user of
/// [`LINK_OPS`]) and a target it holds a reference to.
unsafe extern "C" fn allow_link(
    src: *mut bindings::config_item,
    target: *mut bindings::config_item,
) -> c_int {
    // SAFETY: Safety requirements.
    let (node, target) = unsafe { (node_of_link(src), target_of(target)) };
    let Some(target) = target else {
        return EINVAL.to_errno();
    };
    let target: &dyn Any = target;
    match node.data.allow_link(target) {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

/// `configfs_item_operations.drop_link` of a link directory.
///
/// # Safety
///
/// As for [`allow_link`]; the link was allowed.
unsafe extern "C" fn drop_link(
    src: *mut bindings::config_item,
    target: *mut bindings::config_item,
) {
    // SAFETY: Safety requirements.
    let (node, target) = unsafe { (node_of_link(src), target_of(target)) };
    if let Some(target) = target {
        let target: &dyn Any = target;
        node.data.drop_link(target);
    }
}

/// `configfs_attribute.show` of attribute `I`.
///
/// # Safety
///
/// Called by configfs with a node's item (attributes are only in
/// [`ChildType`] tables) and a zeroed page.
unsafe extern "C" fn show<const I: usize>(
    item: *mut bindings::config_item,
    page: *mut c_char,
) -> isize {
    // SAFETY: Safety requirements; configfs holds a reference to the item
    // while the file is open.
    let node = unsafe { node_of(item) };
    // SAFETY: `page` is a writable page (safety requirements); one byte is
    // kept for the terminating NUL.
    let buf = unsafe { core::slice::from_raw_parts_mut(page.cast::<u8>(), PAGE_SIZE - 1) };
    let mut page = Page { buf, len: 0 };
    match node.data.show(I, &mut page) {
        Ok(()) => page.len as isize,
        Err(e) => e.to_errno() as isize,
    }
}

/// `configfs_attribute.store` of attribute `I`.
///
/// # Safety
///
/// As for [`show`]; `page` holds `count` bytes.
unsafe extern "C" fn store<const I: usize>(
    item: *mut bindings::config_item,
    page: *const c_char,
    count: usize,
) -> isize {
    // SAFETY: As in `show`.
    let node = unsafe { node_of(item) };
    // SAFETY: `page` holds `count` readable bytes (safety requirements).
    let value = unsafe { core::slice::from_raw_parts(page.cast::<u8>(), count) };
    match node.data.store(I, value) {
        Ok(()) => count as isize,
        Err(e) => e.to_errno() as isize,
    }
}

/// The registered parts of a [`Subsystem`], at a stable address.
///
/// # Invariants
///
/// `raw` is initialised with `ty` and has `groups` as its default groups.
#[repr(C)]
struct Inner {
    raw: Opaque<bindings::configfs_subsystem>,
    ty: Opaque<bindings::config_item_type>,
    groups: KVec<KBox<RootGroup>>,
}

/// A registered configfs subsystem, unregistered when dropped.
///
/// # Invariants
///
/// `inner.raw` is registered.
pub struct Subsystem {
    inner: ManuallyDrop<KBox<Inner>>,
}

// SAFETY: configfs serialises registration and removal internally; the
// groups' operations are `Send + Sync`.
unsafe impl Send for Subsystem {}
// SAFETY: No method on `&Subsystem` does anything.
unsafe impl Sync for Subsystem {}

impl Subsystem {
    /// Registers `/sys/kernel/config/<name>` with the fixed directories
    /// `groups`, owned by `module`. May sleep.
    ///
    /// # Errors
    ///
    /// `EEXIST` when the name is taken, `EINVAL` for a spec beyond the
    /// limits, `ENOMEM`.
    pub fn register(
        module: &'static ThisModule,
        name: &'static CStr,
        groups: KVec<GroupSpec>,
    ) -> Result<Self> {
        short_name(name)?;
        let ty = bindings::config_item_type {
            ct_owner: module.as_ptr(),
            ct_item_ops: core::ptr::null_mut(),
            ct_group_ops: core::ptr::null_mut(),
            ct_attrs: core::ptr::null_mut(),
            ct_bin_attrs: core::ptr::null_mut(),
        };
        let mut roots = KVec::with_capacity(groups.len(), GFP_KERNEL)?;
        for spec in groups {
            short_name(spec.name)?;
            let root = KBox::new(
                RootGroup {
                    group: Opaque::uninit(),
                    ty: Opaque::new(bindings::config_item_type {
                        ct_owner: module.as_ptr(),
                        ct_item_ops: core::ptr::null_mut(),
                        ct_group_ops: (&GROUP_OPS.0 as *const bindings::configfs_group_operations)
                            .cast_mut(),
                        ct_attrs: core::ptr::null_mut(),
                        ct_bin_attrs: core::ptr::null_mut(),
                    }),
                    ops: spec.ops,
                    child: ChildType::new(module, &spec.child)?,
                    live: AtomicUsize::new(0),
                },
                GFP_KERNEL,
            )?;
            // SAFETY: `root` is boxed (stable address); the group is
            // initialised in place with its type, stored beside it; the
            // name is NUL-terminated and short (kept inline). Zeroed first:
            // setting the name frees a previous one unless NULL.
            unsafe {
                root.group.get().write_bytes(0, 1);
                bindings::config_group_init_type_name(
                    root.group.get(),
                    spec.name.as_char_ptr(),
                    root.ty.get(),
                )
            };
            roots.push(root, GFP_KERNEL)?;
        }
        let inner = KBox::new(
            Inner {
                raw: Opaque::uninit(),
                ty: Opaque::new(ty),
                groups: roots,
            },
            GFP_KERNEL,
        )?;
        // SAFETY: `inner` is boxed; the subsystem is initialised in place
        // with the type stored beside it and a short name; the groups are
        // initialised and live as long as `inner`.
        unsafe {
            let raw = inner.raw.get();
            // Zeroed first, as in `RootGroup::make`.
            raw.write_bytes(0, 1);
            bindings::pcieoe_configfs_subsystem_init(raw, name.as_char_ptr(), inner.ty.get());
            for root in inner.groups.iter() {
                bindings::configfs_add_default_group(
                    root.group.get(),
                    core::ptr::addr_of_mut!((*raw).su_group),
                );
            }
        }
        // SAFETY: `inner.raw` is initialised (above) and outlives the
        // registration (dropped only after unregistering).
        to_result(unsafe { bindings::configfs_register_subsystem(inner.raw.get()) })?;
        // INVARIANT: Registered.
        Ok(Self {
            inner: ManuallyDrop::new(inner),
        })
    }
}

impl Drop for Subsystem {
    fn drop(&mut self) {
        let live: usize = self
            .inner
            .groups
            .iter()
            .map(|g| g.live.load(Ordering::Relaxed))
            .sum();
        if live != 0 {
            // Only reachable outside module exit (items pin the module):
            // the items and their callbacks need everything here, so it
            // all stays.
            pr_err!("configfs: {} items left, leaking the subsystem\n", live);
            return;
        }
        // SAFETY: Registered (type invariants) and empty of items.
        unsafe { bindings::configfs_unregister_subsystem(self.inner.raw.get()) };
        // SAFETY: Unregistered, so configfs no longer uses it; not used
        // again.
        unsafe { ManuallyDrop::drop(&mut self.inner) };
    }
}
