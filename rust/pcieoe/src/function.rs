// SPDX-License-Identifier: GPL-2.0

//! The functions a device interface (DI) serves, and how it answers
//! configuration requests and [`Msg::Describe`] for them.
//!
//! A host sees the functions assigned to it as function 0 of device numbers
//! 0 to 31 on bus 0 of its own PCI domain; the DI translates (host, device
//! number) to one of its functions and hands that function's
//! [`ConfigSpace`] to [`serve_config`] and [`describe_chunk`].
//!
//! [`build`] lays out each kind's configuration space: a type-0 header,
//! BARs, a PCI Express capability and an MSI-X capability whose table and
//! Pending Bit Array live in BAR0. There is no INTx (Interrupt Pin 0): the
//! host's virtual root bus has no legacy interrupt routing, MSI-X is all
//! the functions raise.

use core::fmt;

use super::cfgspace::{Bar, BuildError, ConfigSpace, MsixCap, PcieCap, Type0Header, SIZE};
use super::fabric::{Msg, DEVICES, MASK_CHUNK, MASK_CHUNKS};
use super::tlp::{self, Bdf, CfgType, CompletionStatus, Kind, Tlp};

/// What a function is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FunctionKind {
    /// A test function modelled on the kernel's `pci-epf-test` endpoint
    /// function, so that `pci_endpoint_test` and `pcitest` can drive it.
    Test,
    /// A virtual Ethernet controller.
    Vnic,
    /// A virtual SCSI host bus adapter.
    Vhba,
}

/// The identity registers of a function.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Identity {
    /// Vendor ID.
    pub vendor: u16,
    /// Device ID.
    pub device: u16,
    /// Subsystem Vendor ID.
    pub subsystem_vendor: u16,
    /// Subsystem ID.
    pub subsystem: u16,
    /// Revision ID.
    pub revision: u8,
}

/// Size of the `pci-epf-test` register block at the start of the test
/// function's BAR0: `struct pci_epf_test_reg` rounded up to 128 bytes, as
/// `pci-epf-test` does before placing its MSI-X table.
pub const TEST_REG_LEN: u32 = 0x80;

/// Offset in BAR0 of the Vnic's and Vhba's MSI-X table: the top 4 KiB of
/// their 16 KiB BAR0 hold the table (at 0x3000) and the PBA (at 0x3800),
/// the registers live below.
pub const MSIX_TABLE_OFFSET: u32 = 0x3000;

/// Offset in BAR0 of the Vnic's and Vhba's MSI-X Pending Bit Array.
pub const MSIX_PBA_OFFSET: u32 = 0x3800;

const fn mem32(size: u32) -> Bar {
    Bar::Mem32 {
        size,
        prefetchable: false,
    }
}

impl FunctionKind {
    /// The Class Code (base class, sub-class, programming interface).
    ///
    /// The test function has base class 0xff (device does not fit any
    /// defined class), as `pci-epf-test` leaves it. The Vnic is an Ethernet
    /// controller (0x020000). The Vhba is a SCSI storage controller
    /// (0x010000), what it is to the host; no Linux driver binds that class
    /// generically, so only the Vhba driver (by IDs) claims it.
    pub const fn class_code(self) -> u32 {
        match self {
            FunctionKind::Test => 0xff_0000,
            FunctionKind::Vnic => 0x02_0000,
            FunctionKind::Vhba => 0x01_0000,
        }
    }

    /// The BARs.
    ///
    /// The test function has `pci-epf-test`'s six 32-bit memory BARs of
    /// 512 B, 512 B, 1 KiB, 16 KiB, 128 KiB and 1 MiB. Its BAR0 keeps the
    /// 512 bytes: registers (128 B), MSI-X table (8 x 16 B) and PBA fit, as
    /// with `pci-epf-test`. The Vnic and the Vhba have one 64-bit
    /// non-prefetchable BAR0 of 16 KiB.
    pub const fn bars(self) -> [Bar; 6] {
        match self {
            FunctionKind::Test => [
                mem32(512),
                mem32(512),
                mem32(1024),
                mem32(16 << 10),
                mem32(128 << 10),
                mem32(1 << 20),
            ],
            FunctionKind::Vnic | FunctionKind::Vhba => [
                Bar::Mem64 {
                    size: 16 << 10,
                    prefetchable: false,
                },
                Bar::Unused,
                Bar::Unused,
                Bar::Unused,
                Bar::Unused,
                Bar::Unused,
            ],
        }
    }

    /// The MSI-X capability: 8 vectors for the test function, 4 for the
    /// others, table and PBA in BAR0.
    pub const fn msix(self) -> MsixCap {
        match self {
            FunctionKind::Test => MsixCap {
                table_size: 8,
                table_bar: 0,
                table_offset: TEST_REG_LEN,
                pba_bar: 0,
                pba_offset: TEST_REG_LEN + 8 * 16,
            },
            FunctionKind::Vnic | FunctionKind::Vhba => MsixCap {
                table_size: 4,
                table_bar: 0,
                table_offset: MSIX_TABLE_OFFSET,
                pba_bar: 0,
                pba_offset: MSIX_PBA_OFFSET,
            },
        }
    }

    /// The type-0 header for a function of this kind with these IDs.
    pub const fn header(self, id: &Identity) -> Type0Header {
        Type0Header {
            vendor_id: id.vendor,
            device_id: id.device,
            revision: id.revision,
            class_code: self.class_code(),
            subsystem_vendor_id: id.subsystem_vendor,
            subsystem_id: id.subsystem,
            multifunction: false,
            interrupt_pin: 0,
            bars: self.bars(),
        }
    }
}

/// Lays out a function's configuration space from scratch, replacing what
/// `cs` held: the type-0 header of [`FunctionKind::header`], a PCI Express
/// endpoint capability (256-byte Max_Payload_Size supported, x8 at 8 GT/s,
/// see [`PcieCap::default`]) and the MSI-X capability of
/// [`FunctionKind::msix`].
///
/// # Errors
///
/// What [`ConfigSpace::init_type0`], [`ConfigSpace::add_pcie`] and
/// [`ConfigSpace::add_msix`] refuse; none does for the built-in layouts.
pub fn build(kind: FunctionKind, id: &Identity, cs: &mut ConfigSpace) -> Result<(), BuildError> {
    cs.init_type0(&kind.header(id))?;
    cs.add_pcie(&PcieCap::default())?;
    cs.add_msix(&kind.msix())?;
    Ok(())
}

/// Why [`serve_config`] has no completion to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Error {
    /// The TLP is not a configuration request.
    NotConfig,
    /// The request breaks the TLP rules (a Malformed TLP: no completion).
    Malformed(tlp::Error),
    /// The completion could not be written (a buffer too small).
    Emit(tlp::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::NotConfig => f.write_str("not a configuration request"),
            Error::Malformed(e) => write!(f, "malformed configuration request: {e}"),
            Error::Emit(e) => write!(f, "cannot emit completion: {e}"),
        }
    }
}

/// Answers one configuration request for the DI and returns the
/// completion's length in `buf` (16 bytes are enough).
///
/// `cs` is the configuration space of the function the requester has at
/// the request's device number, `None` if it has none there. `completer` is
/// the completion's Completer ID (the DI passes the request's target).
/// Only function 0 of devices 0 to 31 on bus 0 exists: a request for
/// another bus or function, a CfgRd1/CfgWr1 (the DI is no bridge), a
/// missing function, or an access [`ConfigSpace`] refuses gets an
/// Unsupported Request completion. A read returns the double word with
/// CplD; a write is applied with [`ConfigSpace::write_with_be`] and
/// answered with Cpl.
///
/// # Errors
///
/// [`Error::NotConfig`], [`Error::Malformed`] if [`Tlp::check`] refuses the
/// request, [`Error::Emit`] if `buf` is too small.
pub fn serve_config(
    req: &Tlp<'_>,
    completer: Bdf,
    cs: Option<&mut ConfigSpace>,
    buf: &mut [u8],
) -> Result<usize, Error> {
    let (c, write) = match &req.kind {
        Kind::CfgRead(c) => (c, false),
        Kind::CfgWrite(c) => (c, true),
        _ => return Err(Error::NotConfig),
    };
    req.check().map_err(Error::Malformed)?;
    let exists = c.cfg_type == CfgType::Type0 && c.target.bus() == 0 && c.target.function() == 0;
    let cs = cs.filter(|_| exists);
    let mut data = [0u8; 4];
    let status = match cs {
        None => Err(()),
        Some(cs) if write => {
            let bytes = req.payload.try_into().unwrap_or([0; 4]);
            cs.write_with_be(c.offset(), c.first_be, bytes)
                .map(|()| false)
                .map_err(|_| ())
        }
        Some(cs) => cs
            .read_dw_bytes(c.offset())
            .map(|dw| {
                data = dw;
                true
            })
            .map_err(|_| ()),
    };
    let (status, payload): (_, &[u8]) = match status {
        Ok(true) => (CompletionStatus::Success, &data),
        Ok(false) => (CompletionStatus::Success, &[]),
        Err(()) => (CompletionStatus::UnsupportedRequest, &[]),
    };
    let cpl = Tlp::completion_for(req, completer, status, payload).map_err(Error::Emit)?;
    cpl.emit(buf).map_err(Error::Emit)
}

/// Writes chunk `index` (0, 1, ...) of the DI's answer to a
/// [`Msg::Describe`] for device `dev`, whose function's space is `cs`, and
/// returns its length; `None` after the last chunk.
///
/// The answer is [`MASK_CHUNKS`] [`Msg::Masks`] messages of
/// [`MASK_CHUNK`] bytes of each mask, in order, the last one flagged, sent
/// from `requester` (the DI's ID). A device without a function is answered
/// with a single [`Msg::NoDevice`] instead, which the caller emits.
///
/// `buf` needs [`MAX_MSG_LEN`](super::fabric::MAX_MSG_LEN) bytes: with a shorter one, or a
/// device number of 32 or more, there is no chunk (`None`), which would
/// leave the host's fetch waiting.
pub fn describe_chunk(
    dev: u8,
    cs: &ConfigSpace,
    requester: Bdf,
    index: usize,
    buf: &mut [u8],
) -> Option<usize> {
    if usize::from(dev) >= DEVICES || index >= MASK_CHUNKS {
        return None;
    }
    // `index` is below MASK_CHUNKS, so the offset is below 4 KiB.
    let start = index * MASK_CHUNK;
    let (writable, w1c) = cs.raw_masks(start as u16, MASK_CHUNK)?;
    let msg = Msg::Masks {
        dev,
        offset: start as u16,
        writable,
        w1c,
        last: start + MASK_CHUNK == SIZE,
    };
    msg.emit(requester, buf).ok()
}
