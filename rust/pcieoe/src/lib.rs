// SPDX-License-Identifier: GPL-2.0

//! The PCIe-over-Ethernet protocol engine.
//!
//! Everything here is `no_std`, allocation-free and sans-IO: time,
//! randomness and frame output come in through traits, so the same code runs
//! in the kernel modules (which include these files as a module through
//! `#[path]`, built with `--cfg pcieoe_kernel`) and in `cargo test`, benches
//! and fuzzers. Modules refer to each other with `super::`, never `crate::`,
//! because the crate root differs between the two builds.
//!
//! Nothing here may panic on input: no `unwrap`, no slice indexing, no
//! arithmetic that can overflow on values taken from the wire.

#![cfg_attr(not(pcieoe_kernel), no_std)]
#![deny(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable,
        clippy::todo
    )
)]

pub mod cfgspace;
pub mod clock;
pub mod credit;
pub mod dma;
pub mod ethertype;
pub mod fabric;
pub mod frame;
pub mod function;
pub mod link;
mod model;
pub mod qos;
pub mod session;
pub mod testfn;
pub mod tlp;
pub mod vhba;
pub mod vnic;
// The vNIC's register layout lives with both halves of the vNIC, in
// `vnic/`; the engine's `vnic` module and the host driver include it.
#[path = "../../../vhba/layout.rs"]
pub mod vhba_layout;
#[path = "../../../vnic/layout.rs"]
pub mod vnic_layout;
